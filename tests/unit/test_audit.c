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
#include "kbtest_store.h"
#include "lib/err.h"
#include "lib/json.h"
#include "lib/secbuf.h"
#include "server/audit.h"
#include "server/store.h"

#define T0 1700000000
#define ADMIN_ID "spiffe://example.org/ns/ops/sa/admin"

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
    if (kbtest_store_url(url, sizeof(url), f->path) != 0)
        return -1;
    memset(k, 0x33, sizeof(k));
    if (kb_secret_from(k, sizeof(k), &f->rowkey) != KB_OK)
        return -1;
    memset(k, 0x44, sizeof(k));
    if (kb_secret_from(k, sizeof(k), &f->auditkey) != KB_OK)
        return -1;
    so.row_mac_key = f->rowkey;
    so.migrate = true;
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
    if (kbtest_pg()) {
        if (kbtest_pg_sql(sql) != 0)
            fail_msg("raw sql failed");
        return;
    }
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

/* Two handles on one database (two keybridged replicas on one PostgreSQL, or keybridged and
 * `keybridge --local` on one SQLite file), each with writer threads appending reads' rows and
 * making audited changes at once: still one linear chain, every row in it, verifying from
 * either handle; and each handle's listing sees the other's change. */
typedef struct {
    store *st;
    audit_log *a;
    int id;
    kb_err rc;
} replica_worker;

static void *replica_work(void *arg)
{
    replica_worker *w = arg;
    audit_event ev = {.time = T0,
                      .identity = "spiffe://example.org/t",
                      .action = "secret.get",
                      .object = "x",
                      .result = "ok"};
    w->rc = KB_OK;
    for (int i = 0; i < 30 && w->rc == KB_OK; i++) {
        char name[32];
        store_audit au;
        audit_event ch = {
            .time = T0, .identity = ADMIN_ID, .action = "group.create", .result = "ok"};
        int64_t id = 0;
        w->rc = audit_append(w->a, &ev, NULL);
        if (w->rc != KB_OK || i % 3 != 0)
            continue;
        snprintf(name, sizeof(name), "g-%d-%d", w->id, i);
        ch.object = name;
        w->rc = audit_change_begin(w->a, &ch, &au);
        if (w->rc == KB_OK)
            w->rc = store_group_create(w->st, name, "", ADMIN_ID, T0, &id, &au);
    }
    return NULL;
}

static void two_handles_make_one_chain(void **state)
{
    fx *f = *state;
    store *st2 = NULL;
    audit_log *a2 = NULL;
    store_opts so = {0};
    audit_opts ao = aopts(f, 7);
    char url[600];
    pthread_t th[4];
    replica_worker w[4];
    audit_report r;
    store_group *gs = NULL;
    size_t ng = 0;
    uint64_t gen;
    int64_t id = 0;

    if (kbtest_pg())
        snprintf(url, sizeof(url), "%s", getenv("KB_PG_URL"));
    else
        snprintf(url, sizeof(url), "sqlite:%s", f->path);
    so.row_mac_key = f->rowkey;
    assert_ok(store_open(url, &so, &st2));
    assert_ok(audit_open(st2, &ao, &a2));
    for (int i = 0; i < 4; i++) {
        w[i].st = i % 2 ? st2 : f->st;
        w[i].a = i % 2 ? a2 : f->a;
        w[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, replica_work, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_ok(w[i].rc);
    }
    /* 4 x 30 reads and 4 x 10 changes, one chain. */
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_true(r.ok);
    assert_int_equal(r.rows, 160);
    assert_ok(audit_verify(a2, NULL, &r));
    assert_true(r.ok);
    assert_int_equal(r.rows, 160);
    assert_ok(store_group_list(st2, &gs, &ng));
    assert_int_equal(ng, 40);
    store_groups_free(gs, ng);
    assert_ok(store_verify(f->st));
    assert_ok(store_verify(st2));
    if (kbtest_pg()) {
        /* The other replica's change moves this handle's listing generation at its next
         * request (store_client_get), without a change through this handle. */
        store_client_new cn = {.spiffe_id = "spiffe://example.org/c", .enabled = true};
        store_client c;
        assert_ok(store_client_create(st2, &cn, ADMIN_ID, T0, &id, NULL));
        gen = store_generation(f->st);
        assert_ok(store_client_get_by_id(f->st, id, &c));
        store_client_clear(&c);
        assert_true(store_generation(f->st) > gen);
        gen = store_generation(f->st);
        assert_ok(store_client_get_by_id(f->st, id, &c));
        store_client_clear(&c);
        assert_true(store_generation(f->st) == gen); /* reads alone do not move it */
    }
    audit_close(a2);
    store_close(st2);
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

/* ---- a change and its audit row in one transaction (issue 10.3) ---- */

#define APP_ID "spiffe://example.org/ns/pay/sa/app"

static kb_err seal_stub(void *ctx, int64_t id, int64_t version, store_envelope *env,
                        uint8_t checksum[STORE_CHECKSUM_LEN])
{
    (void)ctx;
    env->wrapped_key = malloc(8);
    env->sealed = malloc(32);
    env->key_id = strdup("master-1");
    if (env->wrapped_key == NULL || env->sealed == NULL || env->key_id == NULL)
        return KB_ERR_NOMEM;
    memset(env->wrapped_key, 0x77, 8);
    env->wrapped_key_len = 8;
    memset(env->sealed, (int)(id + version), 32);
    env->sealed_len = 32;
    memset(checksum, 0x11, STORE_CHECKSUM_LEN);
    return KB_OK;
}

/* The injected failure: it runs inside the change's transaction after every data row of the
 * change has been written, where a crash or an I/O error between "data" and "audit" would hit. */
static int mac_calls;
static kb_err mac_fails(void *ctx, const uint8_t prev[AUDIT_MAC_LEN], int64_t seq,
                        const audit_event *ev, uint8_t mac[AUDIT_MAC_LEN])
{
    (void)ctx;
    (void)prev;
    (void)seq;
    (void)ev;
    (void)mac;
    mac_calls++;
    return KB_ERR_IO;
}

static store_audit change(fx *f, const char *action, const char *object)
{
    audit_event ev = {.time = T0,
                      .identity = ADMIN_ID,
                      .peer = "127.0.0.1:4000",
                      .action = action,
                      .object = object,
                      .result = "ignored"};
    store_audit au;
    assert_ok(audit_change_begin(f->a, &ev, &au));
    assert_string_equal(au.ev.result, "ok");
    return au;
}

/* A change whose audit row cannot be written: the change is rolled back with it. */
static store_audit broken(fx *f, const char *action)
{
    store_audit au = change(f, action, "x");
    au.mac = mac_fails;
    return au;
}

/* The ids a change test needs: an admin group, a client in it, a granted secret at version 2. */
typedef struct {
    int64_t g, c, sid;
} world;

static world make_world(fx *f)
{
    world w = {0};
    store_secret_new sn = {.name = "s1"};
    store_version_new vn = {.content_len = 8};
    store_client_new cn = {.spiffe_id = APP_ID, .enabled = true};
    store_audit au;
    int64_t v = 0;
    au = change(f, "group.create", "g");
    assert_ok(store_group_create(f->st, "g", "", ADMIN_ID, T0, &w.g, &au));
    assert_true(au.written && au.seq > 0);
    au = change(f, "client.create", APP_ID);
    assert_ok(store_client_create(f->st, &cn, ADMIN_ID, T0, &w.c, &au));
    assert_true(au.written);
    au = change(f, "membership.add", "g " APP_ID);
    assert_ok(store_membership_add(f->st, w.c, w.g, &au));
    au = change(f, "secret.create", "s1");
    assert_ok(store_secret_create(f->st, &sn, &vn, seal_stub, NULL, ADMIN_ID, T0, &w.sid, &au));
    assert_int_equal(au.ev.version, 1);
    au = change(f, "secret.put", "s1");
    assert_ok(store_version_add(f->st, w.sid, &vn, seal_stub, NULL, ADMIN_ID, T0, &v, &au));
    assert_int_equal(v, 2);
    assert_int_equal(au.ev.version, 2);
    au = change(f, "grant.add", "g s1");
    assert_ok(store_grant_add(f->st, w.g, w.sid, &au));
    return w;
}

/* A batch of content reads: all fetch records and audit rows in one transaction, chained in
 * order; one bad fetch record (a foreign key the database refuses) leaves none of them, and the
 * chain goes on from the same head. */
static void batch_reads_commit_all_or_none(void **state)
{
    fx *f = *state;
    world w = make_world(f);
    audit_event ev[3];
    audit_fetch fr[3];
    audit_report r;
    int64_t head, seq = 0, rows;
    const char *names[3] = {"s1", "s1", "s1"};

    for (int i = 0; i < 3; i++) {
        ev[i] = (audit_event){.time = T0 + i,
                              .identity = APP_ID,
                              .peer = "127.0.0.1:4000",
                              .action = "secret.read",
                              .object = names[i],
                              .version = 2 - (i & 1),
                              .result = "ok"};
        fr[i] = (audit_fetch){w.c, w.sid, 2 - (i & 1)};
    }
    head = kbtest_store_int(f->path, "SELECT COALESCE(MAX(seq), 0) FROM audit_log");
    rows = kbtest_store_int(f->path, "SELECT COUNT(*) FROM audit_log");
    /* The last record refers to a secret that does not exist: nothing is written. */
    fr[2].secret_id = w.sid + 1000;
    assert_true(audit_append_reads(f->a, ev, fr, 3, &seq) != KB_OK);
    assert_int_equal(kbtest_store_int(f->path, "SELECT COUNT(*) FROM audit_log"), rows);
    assert_int_equal(kbtest_store_int(f->path, "SELECT COUNT(*) FROM fetch_log"), 0);
    /* Bad arguments change nothing either. */
    fr[2].secret_id = 0;
    assert_kb(audit_append_reads(f->a, ev, fr, 3, &seq), KB_ERR_INVALID);
    fr[2].secret_id = w.sid;
    assert_kb(audit_append_reads(f->a, ev, fr, 0, &seq), KB_ERR_INVALID);
    assert_kb(audit_append_reads(f->a, ev, fr, AUDIT_READS_MAX + 1, &seq), KB_ERR_TOO_LARGE);
    assert_kb(audit_append_reads(f->a, ev, NULL, 3, &seq), KB_ERR_NULL);
    ev[1].action = "";
    assert_kb(audit_append_reads(f->a, ev, fr, 3, &seq), KB_ERR_INVALID);
    ev[1].action = "secret.read";
    assert_int_equal(kbtest_store_int(f->path, "SELECT COUNT(*) FROM audit_log"), rows);
    /* All three: consecutive seqs after the same head, in order; one fetch row per (client,
     * secret) holding the last read's version and time; the chain verifies. */
    assert_ok(audit_append_reads(f->a, ev, fr, 3, &seq));
    assert_int_equal(seq, head + 3);
    assert_int_equal(kbtest_store_int(f->path, "SELECT COUNT(*) FROM audit_log"), rows + 3);
    assert_int_equal(
        kbtest_store_int(f->path, "SELECT version FROM audit_log WHERE seq = (SELECT MAX(seq) - 1 "
                                  "FROM audit_log)"),
        1);
    assert_int_equal(kbtest_store_int(f->path, "SELECT COUNT(*) FROM fetch_log"), 1);
    assert_int_equal(kbtest_store_int(f->path, "SELECT version FROM fetch_log"), 2);
    assert_int_equal(kbtest_store_int(f->path, "SELECT fetched_at FROM fetch_log"), T0 + 2);
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_true(r.ok);
    assert_int_equal(r.rows, rows + 3);
}

/* Every change op writes its audit row in its own transaction: one row per change, the version
 * a secret op made is in its row, and the chain verifies. */
static void change_ops_write_their_audit_row(void **state)
{
    fx *f = *state;
    world w = make_world(f);
    store_secret_patch sp = STORE_SECRET_PATCH_INIT;
    store_client_patch cp = STORE_CLIENT_PATCH_INIT;
    store_audit au;
    audit_report r;
    int64_t g2 = 0;

    sp.description = "d";
    au = change(f, "secret.update", "s1");
    assert_ok(store_secret_update(f->st, w.sid, &sp, ADMIN_ID, T0, &au));
    cp.enabled = 0;
    au = change(f, "client.update", APP_ID);
    assert_ok(store_client_update(f->st, w.c, &cp, &au));
    au = change(f, "grant.remove", "g s1");
    assert_ok(store_grant_remove(f->st, w.g, w.sid, &au));
    au = change(f, "membership.remove", "g " APP_ID);
    assert_ok(store_membership_remove(f->st, w.c, w.g, &au));
    au = change(f, "secret.delete", "s1");
    assert_ok(store_secret_delete(f->st, w.sid, ADMIN_ID, T0, &au));
    au = change(f, "secret.restore", "s1");
    assert_ok(store_secret_restore(f->st, w.sid, ADMIN_ID, T0, &au));
    assert_ok(store_secret_delete(f->st, w.sid, ADMIN_ID, T0, NULL)); /* NULL: no row */
    au = change(f, "secret.purge", "s1");
    assert_ok(store_secret_purge(f->st, w.sid, &au));
    au = change(f, "client.delete", APP_ID);
    assert_ok(store_client_delete(f->st, w.c, &au));
    au = change(f, "group.create", "g2");
    assert_ok(store_group_create(f->st, "g2", "", ADMIN_ID, T0, &g2, &au));
    au = change(f, "group.delete", "g2");
    assert_ok(store_group_delete(f->st, g2, &au));
    assert_int_equal(au.seq, 16);
    audit_change_end(f->a, &au, KB_OK); /* written: appends nothing */

    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM audit_log"), 16);
    assert_int_equal(
        kbtest_store_int(f->path, "SELECT count(*) FROM audit_log WHERE result <> 'ok'"), 0);
    assert_int_equal(
        kbtest_store_int(f->path, "SELECT version FROM audit_log WHERE action = 'secret.put'"), 2);
    assert_int_equal(
        kbtest_store_int(f->path, "SELECT version FROM audit_log WHERE action = 'secret.create'"),
        1);
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_true(r.ok);
    assert_int_equal(r.rows, 16);
}

/* A failure between a change's data rows and its audit row (injected in the row's MAC, which runs
 * after every data row is written) rolls both back: the store is as before, no row is added, and
 * the chain goes on from the same head. */
static void failed_audit_rolls_the_change_back(void **state)
{
    fx *f = *state;
    world w = make_world(f);
    store_secret_new sn = {.name = "s2"};
    store_version_new vn = {.content_len = 8};
    store_client_new cn = {.spiffe_id = "spiffe://example.org/ns/pay/sa/other", .enabled = true};
    store_secret_patch sp = STORE_SECRET_PATCH_INIT;
    store_client_patch cp = STORE_CLIENT_PATCH_INIT;
    store_secret sec;
    store_client cl;
    store_group grp;
    store_group *gs = NULL;
    size_t n = 0;
    int64_t id = 0, rows;
    store_audit au;
    audit_report r;

    mac_calls = 0;
    au = broken(f, "group.create");
    assert_kb(store_group_create(f->st, "g9", "", ADMIN_ID, T0, &id, &au), KB_ERR_IO);
    assert_false(au.written);
    assert_kb(store_group_get(f->st, "g9", &grp), KB_ERR_NOT_FOUND);
    au = broken(f, "client.create");
    assert_kb(store_client_create(f->st, &cn, ADMIN_ID, T0, &id, &au), KB_ERR_IO);
    assert_kb(store_client_get(f->st, cn.spiffe_id, &cl), KB_ERR_NOT_FOUND);
    au = broken(f, "secret.create");
    assert_kb(store_secret_create(f->st, &sn, &vn, seal_stub, NULL, ADMIN_ID, T0, &id, &au),
              KB_ERR_IO);
    assert_kb(store_secret_get(f->st, "s2", true, &sec), KB_ERR_NOT_FOUND);
    au = broken(f, "secret.put");
    assert_kb(store_version_add(f->st, w.sid, &vn, seal_stub, NULL, ADMIN_ID, T0, &id, &au),
              KB_ERR_IO);
    sp.cloud_sync = 1;
    au = broken(f, "secret.update");
    assert_kb(store_secret_update(f->st, w.sid, &sp, ADMIN_ID, T0 + 5, &au), KB_ERR_IO);
    au = broken(f, "secret.delete");
    assert_kb(store_secret_delete(f->st, w.sid, ADMIN_ID, T0 + 5, &au), KB_ERR_IO);
    assert_ok(store_secret_get(f->st, "s1", false, &sec));
    assert_int_equal(sec.latest_version, 2);
    assert_false(sec.cloud_sync);
    assert_int_equal(sec.deleted_at, 0);
    store_secret_clear(&sec);
    au = broken(f, "grant.remove");
    assert_kb(store_grant_remove(f->st, w.g, w.sid, &au), KB_ERR_IO);
    assert_ok(store_secret_groups(f->st, w.sid, &gs, &n));
    assert_int_equal(n, 1);
    store_groups_free(gs, n);
    au = broken(f, "membership.remove");
    assert_kb(store_membership_remove(f->st, w.c, w.g, &au), KB_ERR_IO);
    cp.enabled = 0;
    au = broken(f, "client.update");
    assert_kb(store_client_update(f->st, w.c, &cp, &au), KB_ERR_IO);
    au = broken(f, "client.delete");
    assert_kb(store_client_delete(f->st, w.c, &au), KB_ERR_IO);
    assert_ok(store_client_get_by_id(f->st, w.c, &cl));
    assert_true(cl.enabled);
    store_client_clear(&cl);
    assert_ok(store_client_groups(f->st, w.c, &gs, &n));
    assert_int_equal(n, 1);
    store_groups_free(gs, n);
    au = broken(f, "group.delete");
    assert_kb(store_grant_remove(f->st, w.g, w.sid, NULL), KB_OK);
    assert_kb(store_membership_remove(f->st, w.c, w.g, NULL), KB_OK);
    rows = kbtest_store_int(f->path, "SELECT count(*) FROM audit_log"); /* NULL au: no rows above */
    assert_kb(store_group_delete(f->st, w.g, &au), KB_ERR_IO);
    assert_ok(store_group_get(f->st, "g", &grp));
    store_group_clear(&grp);
    assert_int_equal(mac_calls, 11);
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM audit_log"), rows);

    /* The failure row is appended on its own (nothing was changed), then the chain goes on. */
    audit_change_end(f->a, &au, KB_ERR_IO);
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM audit_log WHERE action = "
                                               "'group.delete' AND result = 'io'"),
                     1);
    au = change(f, "group.delete", "g");
    assert_ok(store_group_delete(f->st, w.g, &au));
    assert_int_equal(au.seq, rows + 2);
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_true(r.ok);
    assert_int_equal(r.rows, rows + 2);
    /* The store's own rollback check agrees: nothing half-written. */
    assert_ok(store_verify(f->st));
}

/* An expiry notification's delivery mark and its audit row commit together: with the row's MAC
 * failing, no mark is left (the notifier resends; before, the mark was committed on its own and
 * the row appended after it, so a failure in between left a delivery with no audit row). */
static void notify_mark_commits_with_its_audit_row(void **state)
{
    fx *f = *state;
    world w = make_world(f);
    store_audit au;
    bool sent = true;
    int64_t rows = kbtest_store_int(f->path, "SELECT count(*) FROM audit_log");
    audit_report r;

    au = broken(f, "secret.expiry_notify");
    au.ev.version = 2;
    assert_kb(store_notify_mark(f->st, w.sid, 2, 604800, T0, &au), KB_ERR_IO);
    assert_false(au.written);
    assert_ok(store_notify_sent(f->st, w.sid, 2, 604800, &sent));
    assert_false(sent);
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM notify_sent"), 0);
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM audit_log"), rows);

    au = change(f, "secret.expiry_notify", "s1");
    au.ev.version = 2;
    assert_ok(store_notify_mark(f->st, w.sid, 2, 604800, T0, &au));
    assert_true(au.written);
    assert_int_equal(au.seq, rows + 1);
    audit_change_end(f->a, &au, KB_OK); /* written: appends nothing */
    assert_ok(store_notify_sent(f->st, w.sid, 2, 604800, &sent));
    assert_true(sent);
    assert_int_equal(kbtest_store_int(f->path,
                                      "SELECT count(*) FROM audit_log WHERE action = "
                                      "'secret.expiry_notify' AND version = 2 AND result = 'ok'"),
                     1);
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM audit_log"), rows + 1);
    /* a bad argument writes neither */
    au = change(f, "secret.expiry_notify", "s1");
    assert_kb(store_notify_mark(f->st, w.sid, 0, 604800, T0, &au), KB_ERR_INVALID);
    assert_false(au.written);
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM audit_log"), rows + 1);
    assert_ok(audit_verify(f->a, NULL, &r));
    assert_true(r.ok);
}

/* An audit row the store cannot take refuses the change (nothing is changed unaudited). */
static void change_with_bad_audit_is_refused(void **state)
{
    fx *f = *state;
    store_audit au;
    store_group grp;
    int64_t id = 0;
    char big[AUDIT_FIELD_MAX + 2];
    audit_event ev = {.time = T0, .identity = ADMIN_ID, .action = "group.create", .object = big};
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_kb(audit_change_begin(f->a, &ev, &au), KB_ERR_TOO_LARGE);
    au.mac = NULL;
    assert_kb(store_group_create(f->st, "g", "", ADMIN_ID, T0, &id, &au), KB_ERR_NULL);
    ev.object = "g";
    ev.action = "";
    assert_kb(audit_change_begin(f->a, &ev, &au), KB_ERR_INVALID);
    assert_kb(store_group_get(f->st, "g", &grp), KB_ERR_NOT_FOUND);
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM audit_log"), 0);
}

int main(void)
{
    kb_json_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(clean_chain_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(read_commits_fetch_and_audit_together, setup, teardown),
        cmocka_unit_test_setup_teardown(batch_reads_commit_all_or_none, setup, teardown),
        cmocka_unit_test_setup_teardown(change_ops_write_their_audit_row, setup, teardown),
        cmocka_unit_test_setup_teardown(failed_audit_rolls_the_change_back, setup, teardown),
        cmocka_unit_test_setup_teardown(change_with_bad_audit_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(notify_mark_commits_with_its_audit_row, setup, teardown),
        cmocka_unit_test_setup_teardown(edited_row_is_found, setup, teardown),
        cmocka_unit_test_setup_teardown(deleted_row_is_found, setup, teardown),
        cmocka_unit_test_setup_teardown(truncated_tail_is_found, setup, teardown),
        cmocka_unit_test_setup_teardown(forged_or_rewritten_anchor_is_found, setup, teardown),
        cmocka_unit_test_setup_teardown(malformed_anchor_files, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_key_fails_from_the_first_row, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_events_and_options, setup, teardown),
        cmocka_unit_test_setup_teardown(queries_newest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_appends_make_one_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(two_handles_make_one_chain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
