/* test_audit_mac.c - the audit chain's MAC format, pinned against an independent HMAC-SHA256
 * (OpenSSL's one-shot EVP_Q_mac over prev || canonical(row), built here by hand), so that the
 * keyed, re-initialised context audit.c keeps (one HMAC fetch and key setup per log, not per
 * row) computes exactly the MACs that databases written before it hold. Also: appends from
 * several threads while a verify walks the chain (both share that context) give one valid
 * chain; a row edited behind the log's back is reported at its seq.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "kbtest.h"
#include "lib/err.h"
#include "lib/secbuf.h"
#include "server/audit.h"
#include "server/store.h"

typedef struct {
    char *dir;
    char db[512];
    kb_secret *key;
    store *st;
    audit_log *log;
} fx;

static kb_err sign_cb(void *ctx, const uint8_t *msg, size_t msg_len, uint8_t *sig, size_t sig_max,
                      size_t *sig_len)
{
    (void)ctx;
    (void)msg;
    (void)msg_len;
    if (sig_max < 4)
        return KB_ERR_TOO_LARGE;
    memcpy(sig, "sig!", 4);
    *sig_len = 4;
    return KB_OK;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    uint8_t k[32];
    char url[600];
    store_opts so = {0};
    audit_opts ao = {0};
    if (f == NULL)
        return -1;
    f->dir = kbtest_tmpdir();
    snprintf(f->db, sizeof(f->db), "%s/a.db", f->dir);
    snprintf(url, sizeof(url), "sqlite:%s", f->db);
    for (size_t i = 0; i < sizeof(k); i++)
        k[i] = (uint8_t)(3 * i + 1);
    if (kb_secret_from(k, sizeof(k), &f->key) != KB_OK)
        return -1;
    so.row_mac_key = f->key;
    if (store_open(url, &so, &f->st) != KB_OK)
        return -1;
    ao.key = f->key;
    ao.sign = sign_cb;
    ao.anchor_every_rows = -1;
    ao.anchor_every_secs = -1;
    if (audit_open(f->st, &ao, &f->log) != KB_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char p[600];
    audit_close(f->log);
    store_close(f->st);
    kb_secret_free(f->key);
    unlink(f->db);
    snprintf(p, sizeof(p), "%s-wal", f->db);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", f->db);
    unlink(p);
    rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

typedef struct {
    uint8_t b[4096];
    size_t n;
} enc;

static void e_bytes(enc *e, const void *p, size_t n)
{
    assert_true(e->n + 4 + n <= sizeof(e->b));
    e->b[e->n++] = (uint8_t)(n >> 24);
    e->b[e->n++] = (uint8_t)(n >> 16);
    e->b[e->n++] = (uint8_t)(n >> 8);
    e->b[e->n++] = (uint8_t)n;
    memcpy(e->b + e->n, p, n);
    e->n += n;
}

static void e_i64(enc *e, int64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
    e_bytes(e, b, 8);
}

static void e_str(enc *e, const char *s)
{
    e_bytes(e, s ? s : "", s ? strlen(s) : 0);
}

/* HMAC-SHA256(key, prev || canonical(row)), canonical as documented in audit.h. */
static void ref_row_mac(const kb_secret *key, const uint8_t prev[AUDIT_MAC_LEN], const audit_row *r,
                        uint8_t out[AUDIT_MAC_LEN])
{
    enc e = {.n = 0};
    size_t len = 0;
    memcpy(e.b, prev, AUDIT_MAC_LEN);
    e.n = AUDIT_MAC_LEN;
    e_str(&e, "kb.audit.v1");
    e_i64(&e, r->seq);
    e_i64(&e, r->time);
    e_str(&e, r->identity);
    e_str(&e, r->peer);
    e_str(&e, r->action);
    e_str(&e, r->object);
    e_i64(&e, r->version);
    e_str(&e, r->result);
    assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, kb_secret_cdata(key),
                              kb_secret_len(key), e.b, e.n, out, AUDIT_MAC_LEN, &len));
    assert_int_equal(len, AUDIT_MAC_LEN);
}

/* Every stored MAC equals the independent one, in chain order. */
static void check_chain(fx *f, size_t want_rows)
{
    audit_row *rows = NULL;
    size_t n = 0;
    audit_filter flt = {.limit = STORE_AUDIT_QUERY_MAX};
    uint8_t prev[AUDIT_MAC_LEN] = {0}, want[AUDIT_MAC_LEN];
    assert_ok(audit_query(f->log, &flt, &rows, &n)); /* newest first */
    assert_int_equal(n, want_rows);
    for (size_t i = n; i-- > 0;) {
        assert_int_equal(rows[i].seq, (int64_t)(n - i));
        ref_row_mac(f->key, prev, &rows[i], want);
        assert_memory_equal(rows[i].mac, want, AUDIT_MAC_LEN);
        memcpy(prev, rows[i].mac, AUDIT_MAC_LEN);
    }
    audit_rows_free(rows, n);
}

static void macs_match_independent_hmac(void **state)
{
    fx *f = *state;
    audit_event ev = {.time = 1700000000,
                      .identity = "spiffe://example.org/ns/a/sa/b",
                      .peer = "127.0.0.1:5000",
                      .action = "secret.read",
                      .object = "db-password",
                      .version = 3,
                      .result = "ok"};
    audit_report rep;
    int64_t seq = 0;
    assert_ok(audit_append(f->log, &ev, &seq));
    assert_int_equal(seq, 1);
    ev.identity = NULL; /* stored as "" */
    ev.peer = NULL;
    ev.object = NULL;
    ev.version = 0;
    ev.result = "denied";
    assert_ok(audit_append(f->log, &ev, &seq));
    assert_int_equal(seq, 2);
    for (int i = 0; i < 20; i++) {
        ev.time++;
        assert_ok(audit_append(f->log, &ev, NULL));
    }
    check_chain(f, 22);
    assert_ok(audit_verify(f->log, NULL, &rep));
    assert_true(rep.ok);
    assert_int_equal(rep.rows, 22);
}

typedef struct {
    fx *f;
    int t;
    kb_err rc;
} appender;

static void *append_main(void *arg)
{
    appender *ap = arg;
    char obj[32];
    for (int i = 0; i < 40 && ap->rc == KB_OK; i++) {
        audit_event ev = {.time = 1700000000 + i,
                          .identity = "spiffe://example.org/x",
                          .peer = "127.0.0.1:1",
                          .action = "secret.read",
                          .object = obj,
                          .version = i,
                          .result = "ok"};
        snprintf(obj, sizeof(obj), "t%d-%d", ap->t, i);
        ap->rc = audit_append(ap->f->log, &ev, NULL);
    }
    return NULL;
}

static void *verify_main(void *arg)
{
    appender *ap = arg;
    for (int i = 0; i < 10 && ap->rc == KB_OK; i++) {
        audit_report rep;
        ap->rc = audit_verify(ap->f->log, NULL, &rep);
        if (ap->rc == KB_OK && !rep.ok)
            ap->rc = KB_ERR_INTEGRITY;
    }
    return NULL;
}

static void concurrent_appends_and_verify(void **state)
{
    fx *f = *state;
    pthread_t th[4];
    appender ap[4];
    audit_report rep;
    for (int i = 0; i < 4; i++) {
        ap[i].f = f;
        ap[i].t = i;
        ap[i].rc = KB_OK;
        assert_int_equal(pthread_create(&th[i], NULL, i == 3 ? verify_main : append_main, &ap[i]),
                         0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_ok(ap[i].rc);
    }
    check_chain(f, 120);
    assert_ok(audit_verify(f->log, NULL, &rep));
    assert_true(rep.ok);
}

/* Negative: a row edited directly in the database breaks the chain at that row. */
static void edited_row_is_found(void **state)
{
    fx *f = *state;
    audit_event ev = {.time = 1700000000, .action = "secret.read", .result = "ok"};
    audit_report rep;
    sqlite3 *db = NULL;
    for (int i = 0; i < 5; i++)
        assert_ok(audit_append(f->log, &ev, NULL));
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "UPDATE audit_log SET result = 'denied' WHERE seq = 3", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    assert_ok(audit_verify(f->log, NULL, &rep));
    assert_false(rep.ok);
    assert_int_equal(rep.first_bad_seq, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(macs_match_independent_hmac, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_appends_and_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(edited_row_is_found, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
