/* test_sync.c - keybridge-sync's pure parts: diff, mass-delete guard, schedule,
 * idempotency tokens, UTF-8 routing, client API parsers, dir sink names and modes, and the
 * engine with a fake source and a fake sink (fail-safe rules). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "kbtest.h"
#include "lib/json.h"
#include "sync/diff.h"
#include "sync/identity.h"
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
    int fail_list, fail_load, defer_fetch, writes, removes, loads;
    kb_err write_err;              /* what k_write answers */
    int64_t now, op_ms;            /* fake monotonic clock; each sink write/remove takes op_ms */
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
        if (F.defer_fetch) {
            /* over the HSM budget until the deadline (source_keybridge gave up retrying) */
            out[i].name = strdup(names[i]);
            out[i].err = KB_ERR_LIMIT;
            out[i].retry_after_ms = 5000;
            continue;
        }
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
    F.now += F.op_ms;
    if (F.write_err != KB_OK)
        return F.write_err;
    F.writes++;
    return KB_OK;
}

static kb_err k_remove(sync_sink *s, const sync_entry *cur, sync_summary *sum)
{
    (void)s;
    (void)cur;
    (void)sum;
    F.now += F.op_ms;
    F.removes++;
    return KB_OK;
}

static int64_t fake_now(void *ctx)
{
    (void)ctx;
    return F.now;
}

static const sync_sink_ops FSINK = {"fake", k_load,   NULL, NULL, k_write,
                                    NULL,   k_remove, NULL, NULL};

static void test_engine_failsafe(void **state)
{
    sync_source src = {&FSRC, NULL};
    sync_sink sink, sink2;
    sync_sink *sinks[2] = {&sink, &sink2};
    sync_run_opts o = {0.10, 0, 0, NULL};
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
    /* content deferred by the HSM budget: nothing written for it, and no delete at all even with
     * --allow-mass-delete (issue 7 point 4); the 9 deletes are reported as deferred */
    memset(&F, 0, sizeof(F));
    F.defer_fetch = 1;
    sync_summary_init(&sum);
    assert_kb(sync_run(&src, sinks, 1, &o, &sum), KB_ERR_LIMIT);
    assert_int_equal(F.writes, 0);
    assert_int_equal(F.removes, 0);
    assert_int_equal(sum.deleted, 0);
    assert_int_equal(sum.deferred, 1 + 9);
    assert_int_equal(sum.err, KB_ERR_LIMIT);
    assert_false(sync_summary_ok(&sum));
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

/* ---- SVIDStore JSON (identity.c) ---------------------------------------------------------- */

static char *pem_of_cert(X509 *c)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p, *out;
    long n;
    assert_non_null(b);
    assert_int_equal(PEM_write_bio_X509(b, c), 1);
    n = BIO_get_mem_data(b, &p);
    out = strndup(p, (size_t)n);
    BIO_free(b);
    return out;
}

static char *pem_of_key(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p, *out;
    long n;
    assert_non_null(b);
    assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    n = BIO_get_mem_data(b, &p);
    out = strndup(p, (size_t)n);
    BIO_free(b);
    return out;
}

static void add_ext(X509 *c, X509 *issuer, int nid, const char *v)
{
    X509V3_CTX ctx;
    X509_EXTENSION *e;
    X509V3_set_ctx(&ctx, issuer, c, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &ctx, nid, v);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(c, e, -1), 1);
    X509_EXTENSION_free(e);
}

/* A certificate for uri (a SPIFFE ID), signed by ca_key (self-signed if issuer is NULL), valid
 * from now - 60 s for life_s seconds (negative: already expired). */
static long serial;

static X509 *make_cert(EVP_PKEY *key, EVP_PKEY *ca_key, X509 *issuer, const char *uri, int is_ca,
                       long life_s)
{
    X509 *c = X509_new();
    char san[300];
    assert_non_null(c);
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), ++serial);
    X509_gmtime_adj(X509_getm_notBefore(c), life_s < 0 ? life_s - 120 : -60);
    X509_gmtime_adj(X509_getm_notAfter(c), life_s);
    X509_set_pubkey(c, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(c), "O", MBSTRING_ASC,
                               (const unsigned char *)"kbtest", -1, -1, 0);
    X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(c));
    add_ext(c, issuer ? issuer : c, NID_basic_constraints,
            is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext(c, issuer ? issuer : c, NID_key_usage,
            is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    snprintf(san, sizeof(san), "URI:%s", uri);
    add_ext(c, issuer ? issuer : c, NID_subject_alt_name, san);
    assert_true(X509_sign(c, ca_key, EVP_sha256()) > 0);
    return c;
}

typedef struct {
    char *bundle, *cert, *key, *other_key, *expired_cert, *expired_key, *evil_cert, *evil_key,
        *evil_bundle;
} svid_fixture;

static void svid_fixture_make(svid_fixture *f)
{
    EVP_PKEY *ca = EVP_EC_gen("P-256"), *leaf = EVP_EC_gen("P-256"), *other = EVP_EC_gen("P-256");
    EVP_PKEY *eca = EVP_EC_gen("P-256");
    X509 *root, *c, *x, *er, *ec;
    assert_non_null(ca);
    assert_non_null(leaf);
    assert_non_null(other);
    assert_non_null(eca);
    root = make_cert(ca, ca, NULL, "spiffe://example.org", 1, 86400);
    c = make_cert(leaf, ca, root, "spiffe://example.org/ns/a/sa/sync", 0, 3600);
    x = make_cert(leaf, ca, root, "spiffe://example.org/ns/a/sa/sync", 0, -30);
    er = make_cert(eca, eca, NULL, "spiffe://evil.org", 1, 86400);
    ec = make_cert(leaf, eca, er, "spiffe://evil.org/ns/a/sa/sync", 0, 3600);
    f->bundle = pem_of_cert(root);
    f->cert = pem_of_cert(c);
    f->key = pem_of_key(leaf);
    f->other_key = pem_of_key(other);
    f->expired_cert = pem_of_cert(x);
    f->expired_key = pem_of_key(leaf);
    f->evil_cert = pem_of_cert(ec);
    f->evil_key = pem_of_key(leaf);
    f->evil_bundle = pem_of_cert(er);
    X509_free(root);
    X509_free(c);
    X509_free(x);
    X509_free(er);
    X509_free(ec);
    EVP_PKEY_free(ca);
    EVP_PKEY_free(leaf);
    EVP_PKEY_free(other);
    EVP_PKEY_free(eca);
}

static void svid_fixture_free(svid_fixture *f)
{
    char **p[] = {&f->bundle,      &f->cert,      &f->key,      &f->other_key,  &f->expired_cert,
                  &f->expired_key, &f->evil_cert, &f->evil_key, &f->evil_bundle};
    for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
        free(*p[i]);
        *p[i] = NULL;
    }
}

/* Parse doc (a JSON object, consumed) as SVIDStore JSON for server trust domain example.org. */
static kb_err svidstore(json_t *doc, const char **why)
{
    sync_identity id;
    char *s = json_dumps(doc, JSON_COMPACT);
    kb_err rc;
    json_decref(doc);
    assert_non_null(s);
    rc = sync_identity_from_svidstore(s, strlen(s), "example.org", &id, why);
    if (rc == KB_OK) {
        assert_non_null(id.svid);
        assert_true(id.not_after > time(NULL));
        sync_identity_clear(&id);
    }
    free(s);
    return rc;
}

static json_t *good_doc(const svid_fixture *f, const char *id_key)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:{}}", id_key, "spiffe://example.org/ns/a/sa/sync",
                     "x509SVID", f->cert, "x509SVIDKey", f->key, "bundle", f->bundle,
                     "federatedBundles");
}

static void test_identity_svidstore(void **state)
{
    svid_fixture f;
    const char *why = "";
    json_t *d;
    sync_identity id;
    (void)state;
    svid_fixture_make(&f);

    /* good: both spellings of the ID; federatedBundles absent, null, or with a domain */
    assert_ok(svidstore(good_doc(&f, "spiffeID"), &why));
    assert_ok(svidstore(good_doc(&f, "spiffeId"), &why));
    d = good_doc(&f, "spiffeID");
    json_object_del(d, "federatedBundles");
    assert_ok(svidstore(d, &why));
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "federatedBundles", json_null());
    assert_ok(svidstore(d, &why));
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "federatedBundles",
                        json_pack("{s:s}", "spiffe://evil.org", f.evil_bundle));
    assert_ok(svidstore(d, &why));

    /* malformed */
    assert_kb(sync_identity_from_svidstore("[1]", 3, "example.org", &id, &why), KB_ERR_INVALID);
    assert_kb(sync_identity_from_svidstore("{\"spiffeID\":", 12, "example.org", &id, &why),
              KB_ERR_INVALID);
    assert_kb(sync_identity_from_svidstore(NULL, 0, "example.org", &id, &why), KB_ERR_NULL);
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "spiffeId", json_string("spiffe://example.org/ns/a/sa/sync"));
    assert_kb(svidstore(d, &why), KB_ERR_INVALID); /* both spellings */
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "extra", json_true());
    assert_kb(svidstore(d, &why), KB_ERR_INVALID);
    assert_non_null(strstr(why, "unknown member"));
    {
        static const char *const members[] = {"spiffeID", "x509SVID", "x509SVIDKey", "bundle"};
        for (size_t i = 0; i < 4; i++) {
            d = good_doc(&f, "spiffeID");
            json_object_del(d, members[i]);
            assert_kb(svidstore(d, &why), KB_ERR_INVALID); /* missing */
            d = good_doc(&f, "spiffeID");
            json_object_set_new(d, members[i], json_integer(7));
            assert_kb(svidstore(d, &why), KB_ERR_INVALID); /* wrong type */
        }
    }
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "federatedBundles", json_pack("[s]", f.bundle));
    assert_kb(svidstore(d, &why), KB_ERR_INVALID);
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "federatedBundles", json_pack("{s:i}", "evil.org", 1));
    assert_kb(svidstore(d, &why), KB_ERR_INVALID);
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "x509SVID", json_stringn(f.cert, 120)); /* truncated PEM */
    assert_true(svidstore(d, &why) != KB_OK);
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "bundle", json_string("not a PEM"));
    assert_true(svidstore(d, &why) != KB_OK);

    /* mismatches: key, ID, trust domain, expiry */
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "x509SVIDKey", json_string(f.other_key));
    assert_true(svidstore(d, &why) != KB_OK);
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "spiffeID", json_string("spiffe://example.org/ns/a/sa/other"));
    assert_kb(svidstore(d, &why), KB_ERR_INVALID);
    assert_non_null(strstr(why, "URI SAN"));
    d = json_pack("{s:s,s:s,s:s,s:s,s:{s:s}}", "spiffeID", "spiffe://evil.org/ns/a/sa/sync",
                  "x509SVID", f.evil_cert, "x509SVIDKey", f.evil_key, "bundle", f.evil_bundle,
                  "federatedBundles", "example.org", f.bundle);
    assert_kb(svidstore(d, &why), KB_ERR_AUTH);
    assert_non_null(strstr(why, "trust domain"));
    d = good_doc(&f, "spiffeID");
    json_object_set_new(d, "x509SVID", json_string(f.expired_cert));
    assert_kb(svidstore(d, &why), KB_ERR_AUTH);
    assert_non_null(strstr(why, "expired"));
    /* our own trust domain's bundle is not the server's: the server's domain must be present */
    {
        char *s;
        d = good_doc(&f, "spiffeID");
        s = json_dumps(d, JSON_COMPACT);
        json_decref(d);
        assert_true(sync_identity_from_svidstore(s, strlen(s), "other.org", &id, &why) != KB_OK);
        free(s);
    }

    /* the size limit: at the limit it is parsed (then refused for its content), above: too large */
    {
        size_t n = SYNC_SVIDSTORE_MAX + 1;
        char *big = malloc(n);
        assert_non_null(big);
        memset(big, ' ', n);
        big[0] = '{';
        big[SYNC_SVIDSTORE_MAX - 1] = '}';
        assert_kb(sync_identity_from_svidstore(big, SYNC_SVIDSTORE_MAX, "example.org", &id, &why),
                  KB_ERR_INVALID);
        big[SYNC_SVIDSTORE_MAX - 1] = ' ';
        big[n - 1] = '}';
        assert_kb(sync_identity_from_svidstore(big, n, "example.org", &id, &why), KB_ERR_TOO_LARGE);
        free(big);
    }
    svid_fixture_free(&f);
}

/* The deadline stops the writes: what was planned and not done is left (and deferred), the run
 * fails with KB_ERR_TIMEOUT and says how many were left; a throttled write is deferred, another
 * failure is failed, and either way the summary's error names the first secret and why. */
static void test_engine_deadline_and_errors(void **state)
{
    sync_source src = {&FSRC, NULL};
    sync_sink sink;
    sync_sink *sinks[1] = {&sink};
    sync_clock clk = {25, fake_now, NULL, NULL, NULL};
    sync_run_opts o = {0.10, 1, 0, &clk};
    sync_summary sum;
    (void)state;
    memset(&sink, 0, sizeof(sink));
    sink.ops = &FSINK;
    snprintf(sink.label, sizeof(sink.label), "fake");
    /* 1 update + 9 deletes at 10 ms each, deadline at 25 ms: 3 done (t = 0, 10, 20), 7 left */
    memset(&F, 0, sizeof(F));
    F.op_ms = 10;
    sync_summary_init(&sum);
    assert_kb(sync_run(&src, sinks, 1, &o, &sum), KB_ERR_TIMEOUT);
    assert_int_equal(F.writes, 1);
    assert_int_equal(F.removes, 2);
    assert_int_equal(sum.left, 7);
    assert_int_equal(sum.deferred, 7);
    assert_int_equal(sum.failed, 0);
    assert_non_null(strstr(sum.error, "deadline was reached: 7 planned changes left"));
    assert_non_null(strstr(sum.error, "3 applied"));
    /* past the deadline from the start: nothing written at all */
    memset(&F, 0, sizeof(F));
    F.now = 30;
    sync_summary_init(&sum);
    assert_kb(sync_run(&src, sinks, 1, &o, &sum), KB_ERR_TIMEOUT);
    assert_int_equal(F.writes + F.removes, 0);
    assert_int_equal(sum.left, 10);
    /* no deadline: a throttled write is deferred, not failed; the error says which and why */
    clk.deadline_ms = 0;
    memset(&F, 0, sizeof(F));
    F.write_err = KB_ERR_LIMIT;
    sync_summary_init(&sum);
    assert_kb(sync_run(&src, sinks, 1, &o, &sum), KB_ERR_CONFLICT);
    assert_int_equal(sum.deferred, 1);
    assert_int_equal(sum.failed, 0);
    assert_int_equal(sum.deleted, 9);
    assert_string_equal(sum.error,
                        "0 failed, 1 deferred; first: a: fake: write deferred: the sink kept "
                        "throttling");
    assert_int_equal(sum.items, 1);
    /* any other write error: failed */
    memset(&F, 0, sizeof(F));
    F.write_err = KB_ERR_INVALID;
    sync_summary_init(&sum);
    assert_kb(sync_run(&src, sinks, 1, &o, &sum), KB_ERR_CONFLICT);
    assert_int_equal(sum.failed, 1);
    assert_string_equal(sum.error, "1 failed, 0 deferred; first: a: fake: write failed (invalid)");
    {
        json_t *j = sync_summary_json(&sum);
        assert_string_equal(json_string_value(json_object_get(j, "error")), sum.error);
        assert_int_equal(json_integer_value(json_object_get(j, "left")), 0);
        json_decref(j);
    }
    assert_int_equal(kb_secret_live_count(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_diff_one),        cmocka_unit_test(test_diff_all),
        cmocka_unit_test(test_mass_delete),     cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_token_utf8),      cmocka_unit_test(test_parse_list),
        cmocka_unit_test(test_parse_batch),     cmocka_unit_test(test_dir_names_modes),
        cmocka_unit_test(test_engine_failsafe), cmocka_unit_test(test_engine_deadline_and_errors),
        cmocka_unit_test(test_summary_json),    cmocka_unit_test(test_identity_svidstore),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
