/* test_store_migrate.c - store_migrate (migrate-store) in process: a SQLite store filled through
 * the store and audit APIs is copied to a target (SQLite; PostgreSQL with KB_TEST_STORE=pg, see
 * kbtest_store.h) and back, with the same digest both ways and the target serving the rows; and
 * refusals that leave the target empty: a non-empty target, each kind of tampered source row
 * (named in the message), a forged anchor, a replayed row (state digest), an unknown table,
 * differing columns, bad URLs, the same store twice, a missing source file. */
#include <sqlite3.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "kbtest.h"
#include "kbtest_softhsm.h"
#include "kbtest_store.h"
#include "lib/secbuf.h"
#include "server/audit.h"
#include "server/store.h"
#include "server/store_migrate.h"

#define T0 1700000000
#define ADMIN "spiffe://example.org/ns/ops/sa/admin"
#define READER "spiffe://example.org/ns/app/sa/reader"

typedef struct {
    char *dir;
    char src[512], src_url[600], dst_url[600], back[512], back_url[600];
    kb_secret *rowkey, *auditkey;
    audit_opts ao;
    store_migrate_opts mo;
} fx;

static const uint8_t sign_key[32] = {0x5a, 0x11, 0x22};

static kb_err fake_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t max,
                        size_t *sig_len)
{
    unsigned int n = 0;
    (void)ctx;
    if (max < 32 || HMAC(EVP_sha256(), sign_key, sizeof(sign_key), msg, len, sig, &n) == NULL)
        return KB_ERR_CRYPTO;
    *sig_len = n;
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

static kb_err fake_seal(void *ctx, int64_t id, int64_t version, store_envelope *env,
                        uint8_t checksum[STORE_CHECKSUM_LEN])
{
    char buf[64];
    int n;
    (void)ctx;
    n = snprintf(buf, sizeof(buf), "wk-%lld-%lld", (long long)id, (long long)version);
    env->wrapped_key = malloc((size_t)n);
    memcpy(env->wrapped_key, buf, (size_t)n);
    env->wrapped_key_len = (size_t)n;
    n = snprintf(buf, sizeof(buf), "sealed-%lld-%lld", (long long)id, (long long)version);
    env->sealed = malloc((size_t)n);
    memcpy(env->sealed, buf, (size_t)n);
    env->sealed_len = (size_t)n;
    env->key_id = strdup("master-1");
    memset(checksum, (int)(id * 16 + version), STORE_CHECKSUM_LEN);
    return KB_OK;
}

/* A change with its audit row, as keybridged makes them. */
static void begin(audit_log *a, const char *action, const char *object, store_audit *au)
{
    audit_event ev = {
        .time = T0, .identity = ADMIN, .peer = "local", .action = action, .object = object};
    assert_ok(audit_change_begin(a, &ev, au));
}

/* The source: groups, clients, memberships, grants, secrets with versions (one deleted, one
 * purged), a fetch, a notification marker, audit rows and anchors. */
static void populate(fx *f)
{
    store *st = NULL;
    audit_log *a = NULL;
    store_opts so = {.row_mac_key = f->rowkey, .migrate = true};
    store_audit au;
    int64_t g1, g2, c1, s1, s2, s3, v;
    store_secret_new sn = {.name = "db-password", .description = "db", .cloud_sync = false};
    store_version_new vn = {.content_len = 10, .metadata = "{\"mode\":\"0400\"}"};
    store_client_new cn = {.spiffe_id = READER, .app_name = "reader", .enabled = true};
    audit_opts ao = f->ao;

    ao.anchor_every_rows = 4;
    assert_ok(store_open(f->src_url, &so, &st));
    assert_ok(audit_open(st, &ao, &a));
    begin(a, "group.create", "app", &au);
    assert_ok(store_group_create(st, "app", "the app", ADMIN, T0, &g1, &au));
    audit_change_end(a, &au, KB_OK);
    begin(a, "group.create", "web", &au);
    assert_ok(store_group_create(st, "web", NULL, ADMIN, T0, &g2, &au));
    audit_change_end(a, &au, KB_OK);
    begin(a, "client.create", READER, &au);
    assert_ok(store_client_create(st, &cn, ADMIN, T0, &c1, &au));
    audit_change_end(a, &au, KB_OK);
    begin(a, "membership.add", "app", &au);
    assert_ok(store_membership_add(st, c1, g1, &au));
    audit_change_end(a, &au, KB_OK);
    sn.owner_group_id = g1;
    begin(a, "secret.create", "db-password", &au);
    assert_ok(store_secret_create(st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &s1, &au));
    audit_change_end(a, &au, KB_OK);
    vn.expires_at = T0 + 86400;
    begin(a, "secret.put", "db-password", &au);
    assert_ok(store_version_add(st, s1, &vn, fake_seal, NULL, ADMIN, T0 + 1, &v, &au));
    audit_change_end(a, &au, KB_OK);
    sn.name = "api-key";
    sn.owner_group_id = 0;
    sn.cloud_sync = true;
    assert_ok(store_secret_create(st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &s2, NULL));
    sn.name = "gone";
    assert_ok(store_secret_create(st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &s3, NULL));
    assert_ok(store_secret_delete(st, s3, ADMIN, T0 + 3, NULL));
    sn.name = "purged"; /* the highest id, gone: the copy must not hand it out again */
    assert_ok(store_secret_create(st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &s3, NULL));
    assert_ok(store_secret_delete(st, s3, ADMIN, T0 + 2, NULL));
    assert_ok(store_secret_purge(st, s3, NULL));
    begin(a, "grant.add", "app db-password", &au);
    assert_ok(store_grant_add(st, g1, s1, &au));
    audit_change_end(a, &au, KB_OK);
    assert_ok(store_grant_add(st, g2, s2, NULL));
    assert_ok(store_fetch_record(st, c1, s1, 2, T0 + 5));
    begin(a, "secret.expiry_notify", "db-password", &au);
    assert_ok(store_notify_mark(st, s1, 2, 86400, T0 + 6, &au));
    audit_change_end(a, &au, KB_OK);
    assert_ok(audit_anchor_now(a, T0 + 7));
    audit_close(a);
    store_close(st);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    uint8_t k[32];
    char tgt[512];
    f->dir = kbtest_tmpdir();
    snprintf(f->src, sizeof(f->src), "%s/src.db", f->dir);
    snprintf(f->src_url, sizeof(f->src_url), "sqlite:%s", f->src);
    snprintf(tgt, sizeof(tgt), "%s/target.db", f->dir);
    if (kbtest_store_url(f->dst_url, sizeof(f->dst_url), tgt) != 0)
        return -1;
    snprintf(f->back, sizeof(f->back), "%s/back.db", f->dir);
    snprintf(f->back_url, sizeof(f->back_url), "sqlite:%s", f->back);
    memset(k, 0x33, sizeof(k));
    if (kb_secret_from(k, sizeof(k), &f->rowkey) != KB_OK)
        return -1;
    memset(k, 0x44, sizeof(k));
    if (kb_secret_from(k, sizeof(k), &f->auditkey) != KB_OK)
        return -1;
    f->ao.key = f->auditkey;
    f->ao.sign = fake_sign;
    f->ao.verify = fake_verify;
    f->ao.anchor_every_secs = -1;
    f->mo.from = f->src_url;
    f->mo.to = f->dst_url;
    f->mo.row_mac_key = f->rowkey;
    f->mo.audit = &f->ao;
    populate(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    kb_secret_free(f->rowkey);
    kb_secret_free(f->auditkey);
    kbtest_softhsm_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void sql_file(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("sql: %s: %s", sql, err);
    sqlite3_close(db);
}

static int64_t count_file(const char *path, const char *table)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    char q[128];
    int64_t n = -1;
    if (access(path, F_OK) != 0)
        return 0;
    snprintf(q, sizeof(q), "SELECT count(*) FROM %s", table);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_prepare_v2(db, q, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    else
        n = 0; /* no such table: no rows */
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

/* Rows in the target's copied tables (the state row aside). */
static int64_t target_rows(fx *f)
{
    static const char *const t[] = {"groups",      "clients",      "secrets",   "versions",
                                    "memberships", "grants",       "fetch_log", "notify_sent",
                                    "audit_log",   "audit_anchors"};
    int64_t n = 0;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (kbtest_pg()) {
            char q[128];
            int64_t c;
            snprintf(q, sizeof(q), "SELECT count(*) FROM %s", t[i]);
            c = kbtest_pg_int(q);
            n += c > 0 ? c : 0;
        } else {
            char p[600];
            snprintf(p, sizeof(p), "%s", f->dst_url + 7);
            n += count_file(p, t[i]);
        }
    }
    return n;
}

static void copy_and_back(void **state)
{
    fx *f = *state;
    store_migrate_report r, r2;
    store *st = NULL;
    store_opts so = {.row_mac_key = f->rowkey};
    store_secret sec;
    store_record *recs = NULL;
    size_t n = 0;
    int64_t id = 0;
    store_group g;

    assert_ok(store_migrate(&f->mo, &r));
    assert_string_equal(r.why, "");
    assert_int_equal(r.ntables, STORE_MIGRATE_TABLES);
    assert_int_equal(r.schema_version, store_schema_version_supported());
    assert_true(r.audit_rows >= 6);
    assert_true(r.state_counter > 1);
    for (size_t i = 0; i < r.ntables; i++) {
        if (strcmp(r.counts[i].table, "secrets") == 0)
            assert_int_equal(r.counts[i].rows, 3); /* purged one gone */
        if (strcmp(r.counts[i].table, "versions") == 0)
            assert_int_equal(r.counts[i].rows, 4);
        if (strcmp(r.counts[i].table, "audit_anchors") == 0)
            assert_true(r.counts[i].rows >= 1);
    }

    /* The target serves what was copied, and new ids continue past the purged one. */
    assert_ok(store_open(f->dst_url, &so, &st));
    assert_ok(store_secret_get(st, "db-password", false, &sec));
    assert_int_equal(sec.latest_version, 2);
    assert_true(sec.owner_group_id > 0);
    store_secret_clear(&sec);
    assert_ok(store_secret_list(st, true, &recs, &n));
    assert_int_equal(n, 3);
    store_records_free(recs, n);
    {
        store_secret_new sn = {.name = "after"};
        store_version_new vn = {.content_len = 1};
        assert_ok(store_secret_create(st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL));
        assert_int_equal(id, 5); /* 1..4 used in the source, 4 purged */
        assert_ok(store_group_get(st, "web", &g));
        store_group_clear(&g);
    }
    store_close(st);

    /* And back into a new SQLite file: everything, the new secret too. */
    f->mo.from = f->dst_url;
    f->mo.to = f->back_url;
    assert_ok(store_migrate(&f->mo, &r2));
    assert_int_equal(r2.rows, r.rows + 2); /* the secret and its version */
    assert_ok(store_open(f->back_url, &so, &st));
    assert_ok(store_secret_get(st, "after", false, &sec));
    assert_int_equal(sec.id, 5);
    store_secret_clear(&sec);
    store_close(st);
    /* A second copy into the now non-empty file is refused. */
    assert_kb(store_migrate(&f->mo, &r2), KB_ERR_EXISTS);
    assert_non_null(strstr(r2.why, "not empty"));
}

static void same_rows_same_digest(void **state)
{
    fx *f = *state;
    store_migrate_report r, r2;
    assert_ok(store_migrate(&f->mo, &r));
    f->mo.from = f->dst_url;
    f->mo.to = f->back_url;
    assert_ok(store_migrate(&f->mo, &r2));
    assert_memory_equal(r.digest, r2.digest, sizeof(r.digest));
    assert_int_equal(r.rows, r2.rows);
}

static void nonempty_target_refused_unchanged(void **state)
{
    fx *f = *state;
    store_migrate_report r;
    int64_t before;
    assert_ok(store_migrate(&f->mo, &r));
    before = target_rows(f);
    assert_kb(store_migrate(&f->mo, &r), KB_ERR_EXISTS);
    assert_non_null(strstr(r.why, "target store is not empty"));
    assert_int_equal(target_rows(f), before);
}

/* One tampered source: refused with why containing want, the target left without rows. */
static void tampered(fx *f, const char *sql, kb_err code, const char *want)
{
    store_migrate_report r;
    sql_file(f->src, sql);
    assert_kb(store_migrate(&f->mo, &r), code);
    if (strstr(r.why, want) == NULL)
        fail_msg("why '%s' lacks '%s'", r.why, want);
    assert_int_equal(target_rows(f), 0);
}

static void tampered_secret_name(void **state)
{
    tampered(*state, "UPDATE secrets SET name = 'db-passwore' WHERE name = 'db-password'",
             KB_ERR_INTEGRITY, "source secrets (id=1): row MAC does not verify");
}

static void tampered_client_flag(void **state)
{
    tampered(*state, "UPDATE clients SET admin = 2", KB_ERR_INTEGRITY,
             "source clients (id=1): a flag is neither 0 nor 1");
}

static void tampered_type(void **state)
{
    tampered(*state, "UPDATE clients SET enabled = x'01'", KB_ERR_INTEGRITY,
             "clients (id=1): a value does not have its column's type");
}

static void tampered_version(void **state)
{
    tampered(*state, "UPDATE versions SET expires_at = 0 WHERE version = 2", KB_ERR_INTEGRITY,
             "source versions (secret_id=1 version=2): row MAC does not verify");
}

static void tampered_latest(void **state)
{
    tampered(*state, "UPDATE secrets SET latest_version = 1 WHERE id = 1", KB_ERR_INTEGRITY,
             "latest_version MAC does not verify");
}

static void tampered_grant(void **state)
{
    tampered(*state, "UPDATE grants SET group_id = 2 WHERE secret_id = 1", KB_ERR_INTEGRITY,
             "source grants (group_id=2 secret_id=1): row MAC does not verify");
}

static void replayed_row_breaks_digest(void **state)
{
    /* A removed membership: every remaining row verifies, the state digest does not. */
    tampered(*state, "DELETE FROM memberships", KB_ERR_INTEGRITY,
             "store_state (id=1): the access-deciding rows do not match the state digest");
}

static void tampered_state_row(void **state)
{
    tampered(*state, "UPDATE store_state SET counter = counter + 1", KB_ERR_INTEGRITY,
             "state row MAC does not verify");
}

static void tampered_audit_row(void **state)
{
    tampered(*state, "UPDATE audit_log SET object = 'x' WHERE seq = 2", KB_ERR_INTEGRITY,
             "source audit chain does not verify at seq 2");
}

static void forged_anchor(void **state)
{
    tampered(*state, "UPDATE audit_anchors SET sig = x'00'", KB_ERR_INTEGRITY,
             "anchor signature invalid");
}

static void unknown_table(void **state)
{
    tampered(*state, "CREATE TABLE extra(x INTEGER)", KB_ERR_SCHEMA,
             "a table this migrate-store does not know (extra)");
}

static void other_columns(void **state)
{
    tampered(*state, "ALTER TABLE groups ADD COLUMN colour TEXT", KB_ERR_SCHEMA,
             "table groups has other columns");
}

/* A row no check refuses but the target does (a fetch_log row for a client that does not exist:
 * SQLite's sqlite3 shell enforces no foreign keys): the insert fails after the tables before it
 * were copied, and the whole transaction rolls back. */
static void failure_mid_copy_rolls_back(void **state)
{
    tampered(*state,
             "INSERT INTO fetch_log(client_id, secret_id, version, fetched_at) "
             "VALUES (99, 1, 1, 0)",
             KB_ERR_DB, "copying table fetch_log failed");
}

static void bad_arguments(void **state)
{
    fx *f = *state;
    store_migrate_report r;
    char missing[600];
    assert_kb(store_migrate(NULL, &r), KB_ERR_NULL);
    f->mo.to = "mysql://x";
    assert_kb(store_migrate(&f->mo, &r), KB_ERR_CONFIG);
    assert_non_null(strstr(r.why, "--to: not a store URL"));
    f->mo.to = f->src_url;
    assert_kb(store_migrate(&f->mo, &r), KB_ERR_CONFIG);
    assert_non_null(strstr(r.why, "same store"));
    snprintf(missing, sizeof(missing), "sqlite:%s/missing.db", f->dir);
    f->mo.from = missing;
    f->mo.to = f->dst_url;
    assert_kb(store_migrate(&f->mo, &r), KB_ERR_NOT_FOUND);
    assert_non_null(strstr(r.why, "no SQLite database"));
    assert_int_equal(access(missing + 7, F_OK), -1); /* never created */
    f->mo.from = f->src_url;
    f->mo.to = "postgresql://kb:pw@127.0.0.1:1/kb";
    assert_kb(store_migrate(&f->mo, &r), KB_ERR_CONFIG);
    assert_null(strstr(r.why, "pw@"));
    f->mo.to = "postgresql:host=127.0.0.1 port=1 dbname=kb connect_timeout=1";
    assert_kb(store_migrate(&f->mo, &r), KB_ERR_DB);
    assert_non_null(strstr(r.why, "cannot connect to PostgreSQL"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(copy_and_back, setup, teardown),
        cmocka_unit_test_setup_teardown(same_rows_same_digest, setup, teardown),
        cmocka_unit_test_setup_teardown(nonempty_target_refused_unchanged, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_secret_name, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_client_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_type, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_version, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_latest, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_grant, setup, teardown),
        cmocka_unit_test_setup_teardown(replayed_row_breaks_digest, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_state_row, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_audit_row, setup, teardown),
        cmocka_unit_test_setup_teardown(forged_anchor, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_table, setup, teardown),
        cmocka_unit_test_setup_teardown(other_columns, setup, teardown),
        cmocka_unit_test_setup_teardown(failure_mid_copy_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
