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

int main(void)
{
    kb_json_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_strict),        cmocka_unit_test(parse_depth_limit),
        cmocka_unit_test(dump_and_free_wipes), cmocka_unit_test(log_lines_are_json),
        cmocka_unit_test(log_line_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
