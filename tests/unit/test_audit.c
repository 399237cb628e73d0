/* test_audit.c - the MAC-chained audit log: appends, queries, anchors (signed through a callback,
 * here an HMAC-based fake of kb_keystore_sign), export, and verification that catches an edited
 * row, a deleted row, a truncated tail, a forged anchor, and a wrong key. */
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "kbtest.h"
#include "lib/err.h"
#include "lib/json.h"
#include "lib/secbuf.h"
#include "server/audit.h"
#include "server/store.h"

#define T0 1700000000

typedef struct {
    char *dir;
    char path[512];
    char anchor[600];
    kb_secret *rowkey;
    kb_secret *auditkey;
    store *st;
    audit_log *a;
    int signs;
} fx;

static const uint8_t sign_key[32] = {0x5a, 0x11, 0x22};

static kb_err fake_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t max,
                        size_t *sig_len)
{
    unsigned int n = 0;
    fx *f = ctx;
    if (max < 32)
        return KB_ERR_TOO_LARGE;
    if (HMAC(EVP_sha256(), sign_key, sizeof(sign_key), msg, len, sig, &n) == NULL)
        return KB_ERR_CRYPTO;
    *sig_len = n;
    f->signs++;
    return KB_OK;
}

static kb_err fake_verify(void *ctx, const uint8_t *msg, size_t len, const uint8_t *sig,
                          size_t sig_len)
{
    uint8_t want[32];
    unsigned int n = 0;
    (void)ctx;
    if (HMAC(EVP_sha256(), sign_key, sizeof(sign_key), msg, len, want, &n) == NULL)
        return KB_ERR_CRYPTO;
    return sig_len == n && kb_ct_eq(want, sig, n) ? KB_OK : KB_ERR_AUTH;
}

static kb_err failing_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t max,
                           size_t *sig_len)
{
    (void)ctx;
    (void)msg;
    (void)len;
    (void)sig;
    (void)max;
    (void)sig_len;
    return KB_ERR_HSM;
}

static audit_opts aopts(fx *f, int64_t rows)
{
    audit_opts o = {.key = f->auditkey,
                    .sign = fake_sign,
                    .verify = fake_verify,
                    .sign_ctx = f,
                    .anchor_every_rows = rows,
                    .anchor_every_secs = -1};
    return o;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    uint8_t k[32];
    char url[600];
    store_opts so = {0};
    audit_opts ao;

    f->dir = kbtest_tmpdir();
    snprintf(f->path, sizeof(f->path), "%s/audit.db", f->dir);
    snprintf(f->anchor, sizeof(f->anchor), "%s/anchor.json", f->dir);
    snprintf(url, sizeof(url), "sqlite:%s", f->path);
    memset(k, 0x33, sizeof(k));
    if (kb_secret_from(k, sizeof(k), &f->rowkey) != KB_OK)
        return -1;
    memset(k, 0x44, sizeof(k));
    if (kb_secret_from(k, sizeof(k), &f->auditkey) != KB_OK)
        return -1;
    so.row_mac_key = f->rowkey;
    if (store_open(url, &so, &f->st) != KB_OK)
        return -1;
    ao = aopts(f, 5);
    if (audit_open(f->st, &ao, &f->a) != KB_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char p[600];
    audit_close(f->a);
    store_close(f->st);
    kb_secret_free(f->rowkey);
    kb_secret_free(f->auditkey);
    unlink(f->path);
    unlink(f->anchor);
    snprintf(p, sizeof(p), "%s-wal", f->path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", f->path);
    unlink(p);
    rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void raw_sql(fx *f, const char *sql)
{
    sqlite3 *db;
    char *err = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("raw sql failed: %s", err);
    sqlite3_close(db);
}

static void append_n(fx *f, int n, int64_t t0)
{
    char obj[32];
    for (int i = 0; i < n; i++) {
        audit_event ev = {.time = t0 + i,
                          .identity = (i % 2) ? "spiffe://example.org/a" : "spiffe://example.org/b",
                          .peer = "127.0.0.1:4000",
                          .action = "secret.get",
                          .object = obj,
                          .version = i,
                          .result = (i % 3) ? "ok" : "denied"};
        int64_t seq = 0;
        snprintf(obj, sizeof(obj), "s%d", i % 4);
        assert_ok(audit_append(f->a, &ev, &seq));
        assert_true(seq > 0);
    }
}

static void clean_chain_verifies(void **state)
{
    fx *f = *state;
    audit_report r;
    assert_ok(audit_verify(f->a, NULL, &r)); /* empty log */
    assert_true(r.ok);
    assert_int_equal(r.rows, 0);
    append_n(f, 12, T0);
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_true(r.ok);
    assert_int_equal(r.rows, 12);
    assert_int_equal(r.anchor_seq, 10); /* anchored every 5 rows */
    assert_int_equal(f->signs, 2);
    assert_ok(audit_anchor_now(f->a, T0 + 100));
    assert_ok(audit_export_anchor(f->a, f->anchor));
    assert_ok(audit_verify(f->a, f->anchor, &r));
    assert_true(r.ok);
    assert_int_equal(r.anchor_seq, 12);
    assert_string_equal(r.reason, "ok");
}

static void edited_row_is_found(void **state)
{
    fx *f = *state;
    audit_report r;
    append_n(f, 12, T0);
    raw_sql(f, "UPDATE audit_log SET result = 'ok' WHERE seq = 7");
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_false(r.ok);
    assert_int_equal(r.first_bad_seq, 7);
    assert_int_equal(r.rows, 6);
}

static void deleted_row_is_found(void **state)
{
    fx *f = *state;
    audit_report r;
    append_n(f, 12, T0);
    raw_sql(f, "DELETE FROM audit_log WHERE seq = 4");
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_false(r.ok);
    assert_int_equal(r.first_bad_seq, 4);
    /* Renumbering the rest to hide the gap breaks the MAC instead. */
    raw_sql(f, "UPDATE audit_log SET seq = seq - 1 WHERE seq > 4");
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_false(r.ok);
    assert_int_equal(r.first_bad_seq, 4);
}

static void truncated_tail_is_found(void **state)
{
    fx *f = *state;
    audit_report r;
    append_n(f, 12, T0);
    assert_ok(audit_anchor_now(f->a, T0 + 50));
    assert_ok(audit_export_anchor(f->a, f->anchor));
    /* Tail rows gone, stored anchor still there: caught. */
    raw_sql(f, "DELETE FROM audit_log WHERE seq > 10");
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_false(r.ok);
    assert_int_equal(r.first_bad_seq, 11);
    /* Tail rows and the anchors that covered them gone: the chain alone looks fine... */
    raw_sql(f, "DELETE FROM audit_anchors WHERE seq > 10");
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_true(r.ok);
    /* ...but the exported anchor kept elsewhere catches it. */
    assert_ok(audit_verify(f->a, f->anchor, &r));
    assert_false(r.ok);
    assert_int_equal(r.first_bad_seq, 11);
    /* Everything deleted: likewise. */
    raw_sql(f, "DELETE FROM audit_log; DELETE FROM audit_anchors");
    assert_ok(audit_verify(f->a, f->anchor, &r));
    assert_false(r.ok);
    assert_int_equal(r.first_bad_seq, 1);
}

static void forged_or_rewritten_anchor_is_found(void **state)
{
    fx *f = *state;
    audit_report r;
    append_n(f, 6, T0);
    /* A stored anchor whose signature does not verify. */
    raw_sql(f, "UPDATE audit_anchors SET sig = randomblob(32) WHERE seq = 5");
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_false(r.ok);
    assert_int_equal(r.first_bad_seq, 5);
    assert_string_equal(r.reason, "anchor signature invalid");
    raw_sql(f, "DELETE FROM audit_anchors");
    /* An anchor file with the right signature but for a different head. */
    assert_ok(audit_anchor_now(f->a, T0 + 9));
    assert_ok(audit_export_anchor(f->a, f->anchor));
    raw_sql(f, "UPDATE audit_anchors SET mac = randomblob(32)");
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_false(r.ok); /* signature covers the mac: forged */
    raw_sql(f, "DELETE FROM audit_anchors");
    assert_ok(audit_verify(f->a, f->anchor, &r));
    assert_true(r.ok);
}

static void malformed_anchor_files(void **state)
{
    fx *f = *state;
    audit_report r;
    FILE *fp;
    const char *bad[] = {
        "{\"seq\":1,\"mac\":\"00\",\"sig\":\"00\",\"time\":1}",         /* short mac */
        "{\"seq\":1,\"mac\":\"zz\",\"sig\":\"00\",\"time\":1}",         /* not hex */
        "{\"seq\":\"1\",\"mac\":\"00\",\"sig\":\"00\",\"time\":1}",     /* wrong type */
        "{\"seq\":1,\"sig\":\"00\",\"time\":1}",                        /* missing */
        "[1,2]",                                                        /* not an object */
        "{\"seq\":1,\"mac\":\"00\",\"sig\":\"00\",\"time\":1,\"x\":1}", /* unknown key */
        "{\"seq\":1",                                                   /* truncated */
    };
    append_n(f, 2, T0);
    assert_kb(audit_export_anchor(f->a, f->anchor), KB_ERR_NOT_FOUND); /* none yet */
    for (size_t i = 0; i < KB_ARRAY_LEN(bad); i++) {
        fp = fopen(f->anchor, "w");
        assert_non_null(fp);
        fputs(bad[i], fp);
        fclose(fp);
        assert_kb(audit_verify(f->a, f->anchor, &r), KB_ERR_INVALID);
    }
    unlink(f->anchor);
    assert_kb(audit_verify(f->a, f->anchor, &r), KB_ERR_IO);
}

static void wrong_key_fails_from_the_first_row(void **state)
{
    fx *f = *state;
    audit_report r;
    audit_log *other = NULL;
    kb_secret *k = NULL;
    uint8_t kb[32] = {1};
    append_n(f, 3, T0);
    assert_ok(kb_secret_from(kb, sizeof(kb), &k));
    audit_opts o = aopts(f, -1);
    o.key = k;
    assert_ok(audit_open(f->st, &o, &other));
    assert_ok(audit_verify(other, NULL, &r));
    assert_false(r.ok);
    assert_int_equal(r.first_bad_seq, 1);
    audit_close(other);
    kb_secret_free(k);
}

static void bad_events_and_options(void **state)
{
    fx *f = *state;
    audit_event ev = {.time = T0, .action = "x", .result = "ok"};
    char *big = malloc(AUDIT_FIELD_MAX + 2);
    audit_log *a2 = NULL;
    memset(big, 'o', AUDIT_FIELD_MAX + 1);
    big[AUDIT_FIELD_MAX + 1] = '\0';
    ev.object = big;
    assert_kb(audit_append(f->a, &ev, NULL), KB_ERR_TOO_LARGE);
    big[AUDIT_FIELD_MAX] = '\0';
    assert_ok(audit_append(f->a, &ev, NULL)); /* at the limit */
    free(big);
    ev.object = NULL;
    ev.action = "";
    assert_kb(audit_append(f->a, &ev, NULL), KB_ERR_INVALID);
    ev.action = "x";
    ev.result = NULL;
    assert_kb(audit_append(f->a, &ev, NULL), KB_ERR_INVALID);
    audit_opts o = aopts(f, 1);
    o.sign = NULL;
    assert_kb(audit_open(f->st, &o, &a2), KB_ERR_NULL);
    /* A failing signer does not lose the event; the anchor is simply missing. */
    o.sign = failing_sign;
    assert_ok(audit_open(f->st, &o, &a2));
    ev.result = "ok";
    int64_t seq = 0;
    assert_ok(audit_append(a2, &ev, &seq));
    assert_int_equal(seq, 2);
    assert_kb(audit_anchor_now(a2, T0), KB_ERR_HSM);
    audit_close(a2);
}

static void queries_newest_first(void **state)
{
    fx *f = *state;
    audit_row *rows = NULL;
    size_t n = 0;
    audit_filter q = {0};
    append_n(f, 12, T0);
    q.object = "s1";
    assert_ok(audit_query(f->a, &q, &rows, &n));
    assert_int_equal(n, 3); /* i = 1, 5, 9 */
    assert_int_equal(rows[0].seq, 10);
    assert_int_equal(rows[2].seq, 2);
    assert_string_equal(rows[0].object, "s1");
    audit_rows_free(rows, n);
    memset(&q, 0, sizeof(q));
    q.identity = "spiffe://example.org/a";
    q.limit = 2;
    assert_ok(audit_query(f->a, &q, &rows, &n));
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].seq, 12);
    assert_int_equal(rows[1].seq, 10);
    audit_rows_free(rows, n);
    memset(&q, 0, sizeof(q));
    q.since = T0 + 3;
    q.until = T0 + 5;
    assert_ok(audit_query(f->a, &q, &rows, &n));
    assert_int_equal(n, 3);
    assert_int_equal(rows[0].time, T0 + 5);
    audit_rows_free(rows, n);
    q.object = "nothing";
    assert_ok(audit_query(f->a, &q, &rows, &n));
    assert_int_equal(n, 0);
    audit_rows_free(rows, n);
    q.limit = STORE_AUDIT_QUERY_MAX + 1;
    assert_kb(audit_query(f->a, &q, &rows, &n), KB_ERR_TOO_LARGE);
}

typedef struct {
    audit_log *a;
    kb_err rc;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    audit_event ev = {.time = T0,
                      .identity = "spiffe://example.org/t",
                      .action = "secret.get",
                      .object = "x",
                      .result = "ok"};
    w->rc = KB_OK;
    for (int i = 0; i < 50 && w->rc == KB_OK; i++)
        w->rc = audit_append(w->a, &ev, NULL);
    return NULL;
}

static void concurrent_appends_make_one_chain(void **state)
{
    fx *f = *state;
    pthread_t th[4];
    worker w[4];
    audit_report r;
    for (int i = 0; i < 4; i++) {
        w[i].a = f->a;
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_ok(w[i].rc);
    }
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_true(r.ok);
    assert_int_equal(r.rows, 200);
}

/* A content read's fetch record and audit row commit together: a fetch record that cannot be
 * written (no such client or secret: foreign key) leaves no audit row either, and the chain
 * goes on from the same head. */
static void read_commits_fetch_and_audit_together(void **state)
{
    fx *f = *state;
    audit_event ev = {.time = 500,
                      .identity = "spiffe://example.org/a",
                      .peer = "127.0.0.1:4000",
                      .action = "secret.read",
                      .object = "s1",
                      .version = 1,
                      .result = "ok"};
    audit_fetch bad = {99, 99, 1};
    audit_fetch zero = {0, 99, 1};
    audit_report r;
    int64_t seq = 0;
    append_n(f, 2, 100);
    assert_true(audit_append_read(f->a, &ev, &bad, &seq) != KB_OK);
    assert_kb(audit_append_read(f->a, &ev, &zero, &seq), KB_ERR_INVALID);
    assert_kb(audit_append_read(f->a, &ev, NULL, &seq), KB_ERR_NULL);
    assert_ok(audit_append(f->a, &ev, &seq));
    assert_int_equal(seq, 3);
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_true(r.ok);
    assert_int_equal(r.rows, 3);
}

int main(void)
{
    kb_json_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(clean_chain_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(read_commits_fetch_and_audit_together, setup, teardown),
        cmocka_unit_test_setup_teardown(edited_row_is_found, setup, teardown),
        cmocka_unit_test_setup_teardown(deleted_row_is_found, setup, teardown),
        cmocka_unit_test_setup_teardown(truncated_tail_is_found, setup, teardown),
        cmocka_unit_test_setup_teardown(forged_or_rewritten_anchor_is_found, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_anchor_files, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_key_fails_from_the_first_row, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_events_and_options, setup, teardown),
        cmocka_unit_test_setup_teardown(queries_newest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_appends_make_one_chain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
