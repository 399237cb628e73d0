/* test_sync.c - keybridge-sync's pure parts: base64, diff, mass-delete guard, schedule,
 * idempotency tokens, UTF-8 routing, client API parsers, dir sink names and modes, and the
 * engine with a fake source and a fake sink (fail-safe rules). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kbtest.h"
#include "lib/json.h"
#include "sync/b64.h"
#include "sync/diff.h"
#include "sync/schedule.h"
#include "sync/sink.h"
#include "sync/sink_dir.h"
#include "sync/sink_secretsmanager.h"
#include "sync/source.h"
#include "sync/source_keybridge.h"

#define CK1 "1111111111111111111111111111111111111111111111111111111111111111"
#define CK2 "2222222222222222222222222222222222222222222222222222222222222222"

static int setup(void **state)
{
    (void)state;
    kb_json_init();
    return 0;
}

static void test_b64(void **state)
{
    kb_secret *s = NULL;
    kb_dbuf b;
    (void)state;
    assert_ok(sync_b64_decode("aGVsbG8=", 8, 100, &s));
    assert_int_equal(kb_secret_len(s), 5);
    assert_memory_equal(kb_secret_cdata(s), "hello", 5);
    kb_secret_free(s);
    assert_ok(sync_b64_decode("", 0, 100, &s));
    assert_int_equal(kb_secret_len(s), 0);
    kb_secret_free(s);
    kb_dbuf_init(&b, 100);
    assert_ok(sync_b64_encode((const uint8_t *)"\xff\x00\x01", 3, &b));
    assert_string_equal(kb_dbuf_str(&b), "/wAB");
    kb_dbuf_free(&b);
    /* malformed: length, alphabet, padding in the middle, non-canonical pad bits, too large */
    assert_kb(sync_b64_decode("aGVsbG8", 7, 100, &s), KB_ERR_INVALID);
    assert_kb(sync_b64_decode("aGV$bG8=", 8, 100, &s), KB_ERR_INVALID);
    assert_kb(sync_b64_decode("aG=sbG8=", 8, 100, &s), KB_ERR_INVALID);
    assert_kb(sync_b64_decode("aGVsbG9=", 8, 100, &s), KB_ERR_INVALID);
    assert_kb(sync_b64_decode("aGVsbG8=", 8, 4, &s), KB_ERR_TOO_LARGE);
    assert_kb(sync_b64_decode("aGVs\nbG8", 8, 100, &s), KB_ERR_INVALID);
    assert_int_equal(kb_secret_live_count(), 0);
}

static sync_meta meta(const char *name, int64_t v, const char *ck)
{
    sync_meta m;
    memset(&m, 0, sizeof(m));
    m.name = (char *)name;
    m.version = v;
    memcpy(m.checksum, ck, SYNC_CHECKSUM_HEX + 1);
    return m;
}

static sync_entry entry(const char *name, int64_t v, const char *ck, int intact, int deleted)
{
    sync_entry e;
    memset(&e, 0, sizeof(e));
    e.name = (char *)name;
    e.version = v;
    snprintf(e.checksum, sizeof(e.checksum), "%s", ck);
    e.intact = intact;
    e.deleted = deleted;
    return e;
}

static void test_diff_one(void **state)
{
    sync_meta w = meta("a", 2, CK2);
    sync_entry same = entry("a", 2, CK2, 1, 0), older = entry("a", 1, CK1, 1, 0),
               newer = entry("a", 3, CK1, 1, 0), forged = entry("a", 2, CK1, 1, 0),
               hand = entry("a", 2, CK2, 0, 0), gone = entry("a", 2, CK2, 1, 1),
               untagged = entry("a", 0, "", 0, 0);
    (void)state;
    assert_int_equal(sync_diff_one(&w, NULL, NULL), SYNC_ACT_CREATE);
    assert_int_equal(sync_diff_one(&w, &same, NULL), SYNC_ACT_NONE);
    assert_int_equal(sync_diff_one(&w, &older, NULL), SYNC_ACT_UPDATE);
    assert_int_equal(sync_diff_one(&w, &newer, NULL), SYNC_ACT_DEFER);  /* never go back */
    assert_int_equal(sync_diff_one(&w, &forged, NULL), SYNC_ACT_DEFER); /* same v, other sum */
    assert_int_equal(sync_diff_one(&w, &hand, NULL), SYNC_ACT_UPDATE);  /* changed by hand */
    assert_int_equal(sync_diff_one(&w, &gone, NULL), SYNC_ACT_RESTORE);
    assert_int_equal(sync_diff_one(&w, &untagged, NULL), SYNC_ACT_UPDATE);
    assert_int_equal(sync_diff_one(NULL, &same, NULL), SYNC_ACT_DELETE);
    assert_int_equal(sync_diff_one(NULL, &gone, NULL), SYNC_ACT_SKIP);
}

static void test_diff_all(void **state)
{
    sync_meta items[3];
    sync_entry es[3];
    sync_listing l;
    sync_state st;
    sync_action *a = NULL;
    size_t n = 0;
    (void)state;
    items[0] = meta("keep", 1, CK1);
    items[1] = meta("new", 1, CK1);
    items[2] = meta("upd", 2, CK2);
    es[0] = entry("upd", 1, CK1, 1, 0);
    es[1] = entry("keep", 1, CK1, 1, 0);
    es[2] = entry("old", 1, CK1, 1, 0);
    memset(&l, 0, sizeof(l));
    l.items = items;
    l.n = 3;
    st.e = es;
    st.n = 3;
    assert_ok(sync_diff(&l, &st, &a, &n));
    assert_int_equal(n, 4);
    assert_int_equal(a[0].act, SYNC_ACT_NONE);
    assert_int_equal(a[1].act, SYNC_ACT_CREATE);
    assert_int_equal(a[2].act, SYNC_ACT_UPDATE);
    assert_int_equal(a[2].have, 0);
    assert_int_equal(a[3].act, SYNC_ACT_DELETE);
    assert_string_equal(a[3].name, "old");
    free(a);
    assert_kb(sync_diff(NULL, &st, &a, &n), KB_ERR_NULL);
}

static void test_mass_delete(void **state)
{
    (void)state;
    assert_false(sync_mass_delete(0, 0, 0.1));
    assert_false(sync_mass_delete(1, 10, 0.1)); /* exactly 10 %: allowed */
    assert_true(sync_mass_delete(2, 10, 0.1));
    assert_true(sync_mass_delete(1, 9, 0.1));
    assert_true(sync_mass_delete(1, 0, 0.1));
    assert_false(sync_mass_delete(10, 10, 1.0));
    assert_true(sync_mass_delete(1, 1000, 0.0));
}

static void test_schedule(void **state)
{
    int m;
    char cron[64];
    (void)state;
    assert_ok(sync_schedule_offset("a", 15, &m));
    /* SHA-256("a") = ca978112...: 0xca978112 % 15 */
    assert_int_equal(m, (int)(0xca978112u % 15));
    assert_ok(sync_schedule_offset("a", 60, &m));
    assert_int_equal(m, (int)(0xca978112u % 60));
    assert_int_equal(sync_schedule_second("a"), (int)(0xca1bbdcau % 60)); /* bytes 4..8 */
    assert_kb(sync_schedule_offset("a", 7, &m), KB_ERR_INVALID);
    assert_kb(sync_schedule_offset("a", 0, &m), KB_ERR_INVALID);
    assert_kb(sync_schedule_offset("a", 120, &m), KB_ERR_INVALID);
    assert_kb(sync_schedule_offset("", 15, &m), KB_ERR_INVALID);
    assert_ok(sync_schedule_cron(4, 15, cron, sizeof(cron)));
    assert_string_equal(cron, "cron(4/15 * * * ? *)");
    assert_ok(sync_schedule_cron(4, 60, cron, sizeof(cron)));
    assert_string_equal(cron, "cron(4 * * * ? *)");
    assert_kb(sync_schedule_cron(15, 15, cron, sizeof(cron)), KB_ERR_INVALID);
    assert_kb(sync_schedule_cron(1, 15, cron, 5), KB_ERR_TOO_LARGE);
    assert_int_equal(sync_schedule_next_delay(0, 15, 4, 30), 270);
    assert_int_equal(sync_schedule_next_delay(270, 15, 4, 30), 900);
    assert_int_equal(sync_schedule_next_delay(271, 15, 4, 30), 899);
}

static void test_token_utf8(void **state)
{
    char t1[37], t2[37], t3[37], t4[37];
    (void)state;
    assert_ok(sync_sm_token("app", "db", 1, CK1, NULL, t1));
    assert_ok(sync_sm_token("app", "db", 1, CK1, NULL, t2));
    assert_string_equal(t1, t2); /* idempotent retries */
    assert_int_equal(strlen(t1), 36);
    assert_int_equal(t1[8], '-');
    assert_ok(sync_sm_token("app", "db", 2, CK1, NULL, t3));
    assert_string_not_equal(t1, t3);
    assert_ok(sync_sm_token("app", "db", 1, CK1, "hand-made-vid", t4));
    assert_string_not_equal(t1, t4);
    assert_ok(sync_sm_token("ap", "pdb", 1, CK1, NULL, t3)); /* field boundaries matter */
    assert_string_not_equal(t1, t3);
    assert_kb(sync_sm_token(NULL, "db", 1, CK1, NULL, t1), KB_ERR_NULL);
    assert_true(sync_utf8_ok((const uint8_t *)"plain", 5));
    assert_true(sync_utf8_ok((const uint8_t *)"\xc3\xbc", 2));
    assert_false(sync_utf8_ok((const uint8_t *)"a\0b", 3));
    assert_false(sync_utf8_ok((const uint8_t *)"\xc0\xaf", 2));     /* overlong */
    assert_false(sync_utf8_ok((const uint8_t *)"\xed\xa0\x80", 3)); /* surrogate */
    assert_false(sync_utf8_ok((const uint8_t *)"\xc3", 1));         /* truncated */
    assert_false(sync_utf8_ok((const uint8_t *)"\xff", 1));
}

static void test_parse_list(void **state)
{
    sync_listing l;
    static const char ok[] =
        "{\"client\":\"spiffe://example.org/x\",\"application\":\"payments\",\"secrets\":["
        "{\"name\":\"a\",\"version\":3,\"checksum\":\"" CK1
        "\",\"expires_at\":null,\"metadata\":{\"mode\":\"0440\"},\"updated_at\":1}]}";
    static const char *const bad[] = {
        "",
        "[]",
        "{\"secrets\":[]}",
        "{\"client\":\"c\",\"application\":\"\",\"secrets\":[]}",
        "{\"client\":\"c\",\"application\":\"a/b\",\"secrets\":[]}",
        "{\"client\":\"c\",\"application\":\"p\",\"secrets\":{}}",
        "{\"client\":\"c\",\"application\":\"p\",\"secrets\":[{\"name\":\"../x\",\"version\":1,"
        "\"checksum\":\"" CK1 "\"}]}",
        "{\"client\":\"c\",\"application\":\"p\",\"secrets\":[{\"name\":\"x\",\"version\":0,"
        "\"checksum\":\"" CK1 "\"}]}",
        "{\"client\":\"c\",\"application\":\"p\",\"secrets\":[{\"name\":\"x\",\"version\":\"1\","
        "\"checksum\":\"" CK1 "\"}]}",
        "{\"client\":\"c\",\"application\":\"p\",\"secrets\":[{\"name\":\"x\",\"version\":1,"
        "\"checksum\":\"ABC\"}]}",
        "{\"client\":\"c\",\"application\":\"p\",\"secrets\":[{\"name\":\"x\",\"version\":1,"
        "\"checksum\":\"" CK1 "\",\"metadata\":{\"mode\":4}}]}",
        "{\"client\":\"c\",\"application\":\"p\",\"secrets\":[]} trailing",
        NULL};
    (void)state;
    assert_ok(sync_kb_parse_list(ok, strlen(ok), &l));
    assert_string_equal(l.application, "payments");
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].name, "a");
    assert_int_equal(l.items[0].version, 3);
    assert_string_equal(json_string_value(json_object_get(l.items[0].metadata, "mode")), "0440");
    sync_listing_clear(&l);
    for (size_t i = 0; bad[i]; i++) {
        kb_err e = sync_kb_parse_list(bad[i], strlen(bad[i]), &l);
        assert_int_not_equal(e, KB_OK);
        assert_null(l.items);
    }
}

static void test_parse_batch(void **state)
{
    const char *names[] = {"a", "b", "c"};
    sync_content out[3];
    size_t fetched = 0;
    static const char ok[] = "{\"secrets\":[{\"name\":\"a\",\"version\":1,\"checksum\":\"" CK1
                             "\",\"metadata\":{},\"content\":\"aGk=\"},"
                             "{\"name\":\"b\",\"error\":\"limit\"}]}";
    static const char dup[] = "{\"secrets\":[{\"name\":\"b\",\"error\":\"limit\"},"
                              "{\"name\":\"b\",\"error\":\"limit\"}]}";
    static const char extra[] = "{\"secrets\":[{\"name\":\"z\",\"error\":\"limit\"}]}";
    static const char badb64[] =
        "{\"secrets\":[{\"name\":\"a\",\"version\":1,\"checksum\":\"" CK1 "\",\"content\":\"a\"}]}";
    (void)state;
    memset(out, 0, sizeof(out));
    assert_ok(sync_kb_parse_batch(ok, strlen(ok), names, 3, out, &fetched));
    assert_int_equal(fetched, 1);
    assert_int_equal(out[0].err, KB_OK);
    assert_memory_equal(kb_secret_cdata(out[0].content), "hi", 2);
    assert_int_equal(out[1].err, KB_ERR_LIMIT);
    assert_int_equal(out[2].err, KB_ERR_NOT_FOUND); /* not answered */
    for (int i = 0; i < 3; i++)
        sync_content_clear(&out[i]);
    assert_kb(sync_kb_parse_batch(dup, strlen(dup), names, 3, out, &fetched), KB_ERR_INVALID);
    assert_kb(sync_kb_parse_batch(extra, strlen(extra), names, 3, out, &fetched), KB_ERR_INVALID);
    assert_kb(sync_kb_parse_batch("{}", 2, names, 3, out, &fetched), KB_ERR_INVALID);
    assert_kb(sync_kb_parse_batch("[", 1, names, 3, out, &fetched), KB_ERR_INVALID);
    assert_ok(sync_kb_parse_batch(badb64, strlen(badb64), names, 3, out, &fetched));
    assert_int_equal(out[0].err, KB_ERR_INVALID);
    assert_int_equal(fetched, 0);
    for (int i = 0; i < 3; i++)
        sync_content_clear(&out[i]);
    assert_int_equal(kb_secret_live_count(), 0);
}

static void test_dir_names_modes(void **state)
{
    const char *f;
    unsigned m;
    json_t *md = json_object();
    (void)state;
    assert_ok(sync_dir_filename("db", NULL, &f));
    assert_string_equal(f, "db");
    assert_ok(sync_dir_mode(NULL, &m));
    assert_int_equal(m, 0400);
    json_object_set_new(md, "filename", json_string("app.conf"));
    json_object_set_new(md, "mode", json_string("0440"));
    assert_ok(sync_dir_filename("db", md, &f));
    assert_string_equal(f, "app.conf");
    assert_ok(sync_dir_mode(md, &m));
    assert_int_equal(m, 0440);
    static const char *const bad_names[] = {"a/b", "../x", ".hidden", "", "a\nb", NULL};
    for (size_t i = 0; bad_names[i]; i++) {
        json_object_set_new(md, "filename", json_string(bad_names[i]));
        assert_kb(sync_dir_filename("db", md, &f), KB_ERR_INVALID);
    }
    json_object_set_new(md, "filename", json_integer(1));
    assert_kb(sync_dir_filename("db", md, &f), KB_ERR_INVALID);
    static const char *const bad_modes[] = {"0666", "0420", "0402", "4400",   "1400",
                                            "0800", "",     "abc",  "070000", NULL};
    for (size_t i = 0; bad_modes[i]; i++) {
        json_object_set_new(md, "mode", json_string(bad_modes[i]));
        assert_kb(sync_dir_mode(md, &m), KB_ERR_INVALID);
    }
    json_decref(md);
}

/* ---- the engine with a fake source and sink ---------------------------------------------- */

typedef struct {
    int fail_list, fail_load, writes, removes, loads;
    sync_listing listing_template; /* names only */
} fake_t;

static fake_t F;

static kb_err f_list(sync_source *s, sync_listing *out, sync_summary *sum)
{
    (void)s;
    sum->calls[SYNC_OP_KB_LIST]++;
    if (F.fail_list)
        return KB_ERR_UNAVAILABLE;
    memset(out, 0, sizeof(*out));
    out->application = strdup("app");
    out->client = strdup("spiffe://example.org/x");
    out->items = calloc(2, sizeof(*out->items));
    out->items[0].name = strdup("a");
    out->items[0].version = 2;
    memcpy(out->items[0].checksum, CK2, 65);
    out->items[0].metadata = json_object();
    out->n = 1;
    return KB_OK;
}

static kb_err f_fetch(sync_source *s, const char *const *names, size_t n, sync_content *out,
                      sync_summary *sum)
{
    (void)s;
    (void)sum;
    for (size_t i = 0; i < n; i++) {
        out[i].name = strdup(names[i]);
        out[i].version = 2;
        memcpy(out[i].checksum, CK2, 65);
        out[i].metadata = json_object();
        if (kb_secret_from("x", 1, &out[i].content) != KB_OK)
            return KB_ERR_NOMEM;
    }
    return KB_OK;
}

static const sync_source_ops FSRC = {"fake", f_list, f_fetch, NULL};

static kb_err k_load(sync_sink *s, const char *app, sync_state *out, sync_summary *sum)
{
    (void)s;
    (void)app;
    (void)sum;
    F.loads++;
    memset(out, 0, sizeof(*out));
    if (F.fail_load)
        return KB_ERR_AUTH;
    /* holds "a" v1 and 9 others: deleting them all is a mass delete */
    out->e = calloc(10, sizeof(*out->e));
    for (int i = 0; i < 10; i++) {
        char nm[8];
        snprintf(nm, sizeof(nm), i == 0 ? "a" : "o%d", i);
        out->e[i].name = strdup(nm);
        out->e[i].version = 1;
        memcpy(out->e[i].checksum, CK1, 65);
        out->e[i].intact = 1;
    }
    out->n = 10;
    return KB_OK;
}

static kb_err k_write(sync_sink *s, const sync_entry *cur, const sync_content *c, sync_summary *sum)
{
    (void)s;
    (void)cur;
    (void)c;
    (void)sum;
    F.writes++;
    return KB_OK;
}

static kb_err k_remove(sync_sink *s, const sync_entry *cur, sync_summary *sum)
{
    (void)s;
    (void)cur;
    (void)sum;
    F.removes++;
    return KB_OK;
}

static const sync_sink_ops FSINK = {"fake", k_load,   NULL, NULL, k_write,
                                    NULL,   k_remove, NULL, NULL};

static void test_engine_failsafe(void **state)
{
    sync_source src = {&FSRC, NULL};
    sync_sink sink, sink2;
    sync_sink *sinks[2] = {&sink, &sink2};
    sync_run_opts o = {0.10, 0, 0};
    sync_summary sum;
    (void)state;
    memset(&sink, 0, sizeof(sink));
    sink.ops = &FSINK;
    sink2 = sink;
    /* source down: nothing loaded, nothing written */
    memset(&F, 0, sizeof(F));
    F.fail_list = 1;
    sync_summary_init(&sum);
    assert_kb(sync_run(&src, sinks, 2, &o, &sum), KB_ERR_UNAVAILABLE);
    assert_int_equal(F.writes + F.removes + F.loads, 0);
    assert_false(sync_summary_ok(&sum));
    /* second sink's state unreadable: no write anywhere */
    memset(&F, 0, sizeof(F));
    F.fail_load = 1;
    sync_summary_init(&sum);
    assert_kb(sync_run(&src, sinks, 2, &o, &sum), KB_ERR_AUTH);
    assert_int_equal(F.writes + F.removes, 0);
    /* mass delete (9 of 10): writes apply, no delete, run fails */
    memset(&F, 0, sizeof(F));
    sync_summary_init(&sum);
    assert_int_not_equal(sync_run(&src, sinks, 1, &o, &sum), KB_OK);
    assert_int_equal(F.writes, 1);
    assert_int_equal(F.removes, 0);
    assert_int_equal(sum.err, KB_ERR_LIMIT);
    /* --allow-mass-delete */
    memset(&F, 0, sizeof(F));
    o.allow_mass_delete = 1;
    sync_summary_init(&sum);
    assert_ok(sync_run(&src, sinks, 1, &o, &sum));
    assert_int_equal(F.removes, 9);
    assert_int_equal(sum.deleted, 9);
    assert_int_equal(sum.updated, 1);
    assert_true(sync_summary_ok(&sum));
    /* retain: nothing deleted, counted as retained */
    memset(&F, 0, sizeof(F));
    o.allow_mass_delete = 0;
    o.retain_deletes = 1;
    sync_summary_init(&sum);
    assert_ok(sync_run(&src, sinks, 1, &o, &sum));
    assert_int_equal(F.removes, 0);
    assert_int_equal(sum.retained, 9);
    assert_int_equal(kb_secret_live_count(), 0);
}

static void test_summary_json(void **state)
{
    sync_summary s;
    json_t *j, *e;
    (void)state;
    sync_summary_init(&s);
    snprintf(s.application, sizeof(s.application), "payments");
    s.created = 2;
    s.calls[SYNC_OP_LIST] = 1;
    j = sync_summary_json(&s);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "ok")));
    assert_int_equal(json_integer_value(json_object_get(j, "created")), 2);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(j, "calls"), "ListSecrets")), 1);
    assert_null(json_object_get(j, "error"));
    json_decref(j);
    sync_summary_fail(&s, KB_ERR_AUTH, "first %d", 1);
    sync_summary_fail(&s, KB_ERR_IO, "second");
    assert_string_equal(s.error, "first 1");
    e = sync_summary_emf(&s);
    assert_non_null(json_object_get(e, "_aws"));
    assert_string_equal(json_string_value(json_object_get(e, "Application")), "payments");
    assert_true(json_is_false(json_object_get(e, "ok")));
    json_decref(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64),
        cmocka_unit_test(test_diff_one),
        cmocka_unit_test(test_diff_all),
        cmocka_unit_test(test_mass_delete),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_token_utf8),
        cmocka_unit_test(test_parse_list),
        cmocka_unit_test(test_parse_batch),
        cmocka_unit_test(test_dir_names_modes),
        cmocka_unit_test(test_engine_failsafe),
        cmocka_unit_test(test_summary_json),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
