/* test_json_log.c - strict JSON parsing and JSON log lines. */
#include <string.h>
#include <unistd.h>

#include "kbtest.h"
#include "lib/json.h"
#include "lib/log.h"

static void parse_strict(void **state)
{
    (void)state;
    json_t *v = NULL;
    char err[128];
    const char *bad;
    static const char *const allowed[] = {"name", "content", NULL};

    assert_ok(kb_json_parse("{\"name\":\"a\"}", 12, 64, &v, err, sizeof(err)));
    assert_ok(kb_json_only_keys(v, allowed, &bad));
    json_decref(v);
    assert_ok(kb_json_parse("{\"nam\":1}", 9, 64, &v, err, sizeof(err)));
    assert_kb(kb_json_only_keys(v, allowed, &bad), KB_ERR_INVALID);
    assert_string_equal(bad, "nam");
    json_decref(v);
    /* duplicate key, trailing garbage, truncation, wrong top-level type, size limit, empty */
    assert_kb(kb_json_parse("{\"a\":1,\"a\":2}", 13, 64, &v, err, sizeof(err)), KB_ERR_INVALID);
    assert_kb(kb_json_parse("{\"a\":1} x", 9, 64, &v, err, sizeof(err)), KB_ERR_INVALID);
    assert_kb(kb_json_parse("{\"a\":", 5, 64, &v, err, sizeof(err)), KB_ERR_INVALID);
    assert_kb(kb_json_parse("[1]", 3, 64, &v, err, sizeof(err)), KB_ERR_INVALID);
    assert_kb(kb_json_parse("{\"a\":1}", 7, 6, &v, err, sizeof(err)), KB_ERR_TOO_LARGE);
    assert_ok(kb_json_parse("{\"a\":1}", 7, 7, &v, err, sizeof(err))); /* at the limit */
    json_decref(v);
    assert_kb(kb_json_parse("", 0, 64, &v, err, sizeof(err)), KB_ERR_INVALID);
    /* invalid UTF-8 */
    assert_kb(kb_json_parse("{\"a\":\"\xff\"}", 9, 64, &v, err, sizeof(err)), KB_ERR_INVALID);
    /* the error never quotes input */
    assert_kb(kb_json_parse("{\"sekrit\":", 10, 64, &v, err, sizeof(err)), KB_ERR_INVALID);
    assert_null(strstr(err, "sekrit"));
    assert_null(v);
}

/* A NULL list (a route that takes no fields) crashed on the first key: keybridged's
 * POST /v1/admin/audit/verify with body {"":null} (found by fuzz_api_request). */
static void only_keys_null_list_allows_none(void **state)
{
    (void)state;
    json_t *v = NULL;
    const char *bad = NULL;
    assert_ok(kb_json_parse("{}", 2, 64, &v, NULL, 0));
    assert_ok(kb_json_only_keys(v, NULL, &bad));
    json_decref(v);
    assert_ok(kb_json_parse("{\"\":null}", 9, 64, &v, NULL, 0));
    assert_kb(kb_json_only_keys(v, NULL, &bad), KB_ERR_INVALID);
    assert_string_equal(bad, "");
    json_decref(v);
}

static void parse_depth_limit(void **state)
{
    (void)state;
    char buf[512];
    size_t n = 0;
    json_t *v = NULL;
    char err[128];
    for (int i = 0; i < KB_JSON_DEPTH_MAX + 1; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{\"a\":");
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "1");
    for (int i = 0; i < KB_JSON_DEPTH_MAX + 1; i++)
        buf[n++] = '}';
    assert_kb(kb_json_parse(buf, n, sizeof(buf), &v, err, sizeof(err)), KB_ERR_TOO_LARGE);
    /* one level less is accepted */
    assert_ok(kb_json_parse(buf + 5, n - 6, sizeof(buf), &v, err, sizeof(err)));
    json_decref(v);
}

static void dump_and_free_wipes(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s}", "k", "v");
    char *s = kb_json_dump(o);
    assert_string_equal(s, "{\"k\":\"v\"}");
    kb_json_free_str(s);
    json_decref(o);
}

static void log_lines_are_json(void **state)
{
    (void)state;
    int fds[2];
    char buf[1024];
    ssize_t n;
    json_t *v;
    json_error_t je;

    assert_int_equal(pipe(fds), 0);
    kb_log_set_fd(fds[1]);
    kb_log_set_program("test");
    kb_log(KB_LOG_DEBUG, "hidden", NULL); /* below the default level */
    kb_log(KB_LOG_WARN, "ev\"ent", "key", "va\nl\"ue", "empty", NULL, NULL);
    kb_log_set_fd(2);
    close(fds[1]);
    n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    assert_true(n > 0);
    buf[n] = 0;
    assert_int_equal(strchr(buf, '\n') - buf, n - 1); /* exactly one line */
    v = json_loads(buf, 0, &je);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(v, "event")), "ev\"ent");
    assert_string_equal(json_string_value(json_object_get(v, "key")), "va\nl\"ue");
    assert_string_equal(json_string_value(json_object_get(v, "prog")), "test");
    json_decref(v);
    kb_log_level lvl;
    assert_int_equal(kb_log_level_parse("error", &lvl), 0);
    assert_int_equal(lvl, KB_LOG_ERROR);
    assert_int_equal(kb_log_level_parse("loud", &lvl), -1);
}

static void log_line_is_bounded(void **state)
{
    (void)state;
    int fds[2];
    static char big[10000], buf[8192];
    memset(big, 'x', sizeof(big) - 1);
    assert_int_equal(pipe(fds), 0);
    kb_log_set_fd(fds[1]);
    kb_log(KB_LOG_ERROR, "big", "v", big, NULL);
    kb_log_set_fd(2);
    close(fds[1]);
    ssize_t n = read(fds[0], buf, sizeof(buf));
    close(fds[0]);
    assert_true(n > 0 && n <= 4096);
    assert_int_equal(buf[n - 1], '\n');
}

/* Read one log line written by fn into buf and parse it; NULL if it is not valid JSON. */
static json_t *log_one_line(void (*fn)(const void *), const void *arg, char *buf, size_t cap)
{
    int fds[2];
    ssize_t n;
    json_error_t je;
    assert_int_equal(pipe(fds), 0);
    kb_log_set_fd(fds[1]);
    fn(arg);
    kb_log_set_fd(2);
    close(fds[1]);
    n = read(fds[0], buf, cap - 1);
    close(fds[0]);
    assert_true(n > 0 && (size_t)n <= 4096);
    buf[n] = 0;
    assert_int_equal(buf[n - 1], '\n');
    return json_loads(buf, 0, &je);
}

static void log_two_fields(const void *arg)
{
    kb_log(KB_LOG_ERROR, "cut", "first", (const char *)arg, "second", "v2", "third", "v3", NULL);
}

static void log_bad_utf8(const void *arg)
{
    (void)arg;
    kb_log(KB_LOG_ERROR, "utf8", "bad", "a\xff\xc3(b\xed\xa0\x80", "good", "caf\xc3\xa9", "cut",
           "\xe2\x82", NULL);
}

/* Lines that hit the length limit used to end in a dangling ',"' or '"key":' and values with
 * bytes that are not UTF-8 were copied as is: either way the line was not JSON, and a log
 * pipeline drops such lines (a peer-chosen value could hide its own event). Every length of the
 * first value around the limit must still give a valid object. */
static void log_lines_stay_json_when_cut_or_not_utf8(void **state)
{
    (void)state;
    static char big[4200], buf[8192];
    json_t *v;

    for (size_t len = 3900; len < sizeof(big); len++) {
        memset(big, 'x', len);
        big[len] = 0;
        v = log_one_line(log_two_fields, big, buf, sizeof(buf));
        if (v == NULL)
            fail_msg("value of %zu bytes gave a line that is not JSON: ...%s", len,
                     buf + strlen(buf) - (strlen(buf) > 40 ? 40 : strlen(buf)));
        assert_string_equal(json_string_value(json_object_get(v, "event")), "cut");
        assert_non_null(json_object_get(v, "first"));
        json_decref(v);
    }
    /* a cut in the middle of an escape or a multi-byte character never splits it */
    for (size_t len = 3900; len < sizeof(big) - 4; len++) {
        memset(big, '"', len);
        memcpy(big + len, "\xc3\xa9", 3);
        v = log_one_line(log_two_fields, big, buf, sizeof(buf));
        assert_non_null(v);
        json_decref(v);
    }
    v = log_one_line(log_bad_utf8, NULL, buf, sizeof(buf));
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "bad")),
                        "a\xef\xbf\xbd\xef\xbf\xbd(b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(json_string_value(json_object_get(v, "good")), "caf\xc3\xa9");
    assert_string_equal(json_string_value(json_object_get(v, "cut")), "\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(v);
}

/* kb_json_put_str writes what json_dumps writes for the same string, and refuses what
 * json_stringn refuses (invalid UTF-8), appending nothing. */
static void expect_put_like_jansson(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    kb_dbuf b;
    kb_dbuf_init(&b, 1 << 20);
    assert_ok(kb_dbuf_addstr(&b, "x"));
    if (j == NULL) {
        assert_kb(kb_json_put_str(&b, s, n), KB_ERR_INVALID);
        assert_string_equal(kb_dbuf_str(&b), "x");
    } else {
        char *want = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_ok(kb_json_put_str(&b, s, n));
        assert_int_equal(b.len, strlen(want) + 1);
        assert_memory_equal(b.p + 1, want, strlen(want));
        kb_json_free_str(want);
        json_decref(j);
    }
    kb_dbuf_free(&b);
}

static void put_str_matches_jansson(void **state)
{
    static const char *const cases[] = {
        "", "plain", "quote\" back\\ slash/", "\b\f\n\r\t",
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "\x7f", "</script>", "\xed\x9f\xbf",
        "\xf4\x8f\xbf\xbf",
        /* invalid: lone continuation, overlong, surrogate, above U+10FFFF, truncated, 0xff */
        "\x80", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "a\xff",
        "\xf0\x80\x80\x80", "\xc3\x28"};
    char all[128];
    kb_dbuf b;
    (void)state;
    for (size_t i = 0; i < KB_ARRAY_LEN(cases); i++)
        expect_put_like_jansson(cases[i], strlen(cases[i]));
    for (size_t i = 0; i < 127; i++)
        all[i] = (char)(i + 1);
    all[127] = '\0';
    expect_put_like_jansson(all, 127);
    for (size_t i = 1; i < 256; i++) { /* every single byte */
        char one = (char)i;
        expect_put_like_jansson(&one, 1);
    }
    /* Strings long enough for the 8-byte steps: every byte at every offset of a plain run, so
     * each lane of the word test meets each byte that needs more than copying. */
    for (size_t pos = 0; pos < 19; pos++) {
        for (size_t i = 1; i < 256; i++) {
            char run[19];
            memset(run, 'a', sizeof(run));
            run[pos] = (char)i;
            expect_put_like_jansson(run, sizeof(run));
        }
    }
    {
        char lng[300];
        for (size_t i = 0; i < sizeof(lng); i++)
            lng[i] = (char)(' ' + i % 95);
        expect_put_like_jansson(lng, sizeof(lng));
        memcpy(lng + 290, "caf\xc3\xa9\n", 6);
        expect_put_like_jansson(lng, sizeof(lng));
    }
    /* A buffer too small: refused, and the buffer as it was. */
    kb_dbuf_init(&b, 8);
    assert_ok(kb_dbuf_addstr(&b, "ab"));
    assert_kb(kb_json_put_str(&b, "0123456789", 10), KB_ERR_TOO_LARGE);
    assert_string_equal(kb_dbuf_str(&b), "ab");
    assert_kb(kb_json_put_str(&b, NULL, 1), KB_ERR_NULL);
    kb_dbuf_free(&b);
}

/* kb_json_put_ms: the shortest form, parsed back to the very double json_real(ms / 1000.0). */
static void put_ms_round_trips(void **state)
{
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {{0, "0.0"},
                 {1, "0.001"},
                 {10, "0.01"},
                 {1700000000000, "1700000000.0"},
                 {1700000000123, "1700000000.123"},
                 {1700000000120, "1700000000.12"},
                 {1700000000500, "1700000000.5"},
                 {1700000000007, "1700000000.007"},
                 {-1500, "-1.5"},
                 {-2000, "-2.0"}};
    kb_dbuf b;
    uint64_t x = 88172645463325252ull;
    (void)state;
    kb_dbuf_init(&b, 64);
    for (size_t i = 0; i < KB_ARRAY_LEN(cases); i++) {
        kb_dbuf_reset(&b);
        assert_ok(kb_json_put_ms(&b, cases[i].ms));
        assert_string_equal(kb_dbuf_str(&b), cases[i].want);
    }
    for (int i = 0; i < 20000; i++) { /* dates from 1970 to ~2500, and beyond 2^53 */
        json_t *j = NULL;
        int64_t ms;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ms = (int64_t)(x % (i < 19000 ? 16725225600000ull : (1ull << 62)));
        kb_dbuf_reset(&b);
        assert_ok(kb_json_put_ms(&b, ms));
        j = json_loads(kb_dbuf_str(&b), JSON_DECODE_ANY, NULL);
        assert_non_null(j);
        assert_true(json_is_real(j));
        if (json_real_value(j) != (double)ms / 1000.0)
            fail_msg("%lld ms written as %s", (long long)ms, kb_dbuf_str(&b));
        json_decref(j);
    }
    kb_dbuf_free(&b);
}

int main(void)
{
    kb_json_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_strict),
        cmocka_unit_test(only_keys_null_list_allows_none),
        cmocka_unit_test(parse_depth_limit),
        cmocka_unit_test(dump_and_free_wipes),
        cmocka_unit_test(put_str_matches_jansson),
        cmocka_unit_test(put_ms_round_trips),
        cmocka_unit_test(log_lines_are_json),
        cmocka_unit_test(log_line_is_bounded),
        cmocka_unit_test(log_lines_stay_json_when_cut_or_not_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
