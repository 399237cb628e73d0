/* test_store.c - the store API over the SQLite backend: model, access decisions, versions,
 * soft delete/purge, fetch log, row-MAC tamper detection (by editing the database file directly),
 * migrations, and concurrency.
 *
 * With KB_CRASH_WRITER=<dbpath> in the environment, this binary instead acts as the writer of
 * tests/integration/test_store_crash.sh: 500 secret creations, printing each id once committed.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kbtest.h"
#include "kbtest_store.h"
#include "lib/err.h"
#include "lib/secbuf.h"
#include "server/model.h"
#include "server/store.h"
#include "server/store_impl.h"

#define T0 1700000000

static const char *const prefixes[] = {"/lambda/", NULL};
static const char *ADMIN = "spiffe://example.org/admin";

typedef struct {
    char *dir;
    char path[512];
    char url[600];
    kb_secret *key;
    store *st;
} fx;

/* A deterministic fake seal: blobs name the (id, version) they were made for, so tests can see
 * that the store passes the right pair. */
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

static kb_err failing_seal(void *ctx, int64_t id, int64_t version, store_envelope *env,
                           uint8_t checksum[STORE_CHECKSUM_LEN])
{
    (void)ctx;
    (void)id;
    (void)version;
    (void)env;
    (void)checksum;
    return KB_ERR_HSM;
}

static kb_err empty_seal(void *ctx, int64_t id, int64_t version, store_envelope *env,
                         uint8_t checksum[STORE_CHECKSUM_LEN])
{
    (void)ctx;
    (void)id;
    (void)version;
    (void)checksum;
    env->key_id = strdup("k");
    return KB_OK;
}

static kb_err make_key(kb_secret **out)
{
    uint8_t k[32];
    for (size_t i = 0; i < sizeof(k); i++)
        k[i] = (uint8_t)(i * 7 + 1);
    return kb_secret_from(k, sizeof(k), out);
}

static store_opts opts_for(fx *f)
{
    store_opts o = {.row_mac_key = f->key, .cloud_prefixes = prefixes, .migrate = true};
    return o;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    store_opts o;
    f->dir = kbtest_tmpdir();
    snprintf(f->path, sizeof(f->path), "%s/store.db", f->dir);
    if (kbtest_store_url(f->url, sizeof(f->url), f->path) != 0)
        return -1;
    if (make_key(&f->key) != KB_OK)
        return -1;
    o = opts_for(f);
    if (store_open(f->url, &o, &f->st) != KB_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char p[600];
    store_close(f->st);
    kb_secret_free(f->key);
    unlink(f->path);
    snprintf(p, sizeof(p), "%s-wal", f->path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", f->path);
    unlink(p);
    rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Run SQL directly on the database file: the attacker with write access to the DB. */
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

/* A small world: group "payments" with client "api" (DC) and "fn" (cloud), secret "db-pass"
 * (local only) and "api-key" (cloud_sync), both granted to payments. */
typedef struct {
    int64_t g, g2, api, fn, admin, outsider, s_local, s_cloud;
} world;

static int64_t mk_secret(fx *f, const char *name, bool cloud, const char *md)
{
    store_secret_new sn = {.name = name, .description = "test", .cloud_sync = cloud};
    store_version_new vn = {.content_len = 10, .metadata = md, .expires_at = 0};
    int64_t id = 0;
    assert_ok(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL));
    return id;
}

static int64_t mk_client(fx *f, const char *id, bool admin)
{
    store_client_new cn = {.spiffe_id = id, .app_name = "app", .enabled = true, .admin = admin};
    int64_t out = 0;
    assert_ok(store_client_create(f->st, &cn, ADMIN, T0, &out, NULL));
    return out;
}

static void build_world(fx *f, world *w)
{
    assert_ok(store_group_create(f->st, "payments", "payments team", "bootstrap", T0, &w->g, NULL));
    assert_ok(store_group_create(f->st, "other", NULL, "bootstrap", T0, &w->g2, NULL));
    w->api = mk_client(f, "spiffe://example.org/ns/payments/sa/api", false);
    w->fn = mk_client(f, "spiffe://example.org/lambda/acct/1/fn/report", false);
    w->admin = mk_client(f, ADMIN, true);
    w->outsider = mk_client(f, "spiffe://example.org/ns/other/sa/x", false);
    w->s_local = mk_secret(f, "db-pass", false, "{\"mode\":\"0400\"}");
    w->s_cloud = mk_secret(f, "api-key", true, NULL);
    assert_ok(store_membership_add(f->st, w->api, w->g, NULL));
    assert_ok(store_membership_add(f->st, w->fn, w->g, NULL));
    assert_ok(store_membership_add(f->st, w->outsider, w->g2, NULL));
    assert_ok(store_grant_add(f->st, w->g, w->s_local, NULL));
    assert_ok(store_grant_add(f->st, w->g, w->s_cloud, NULL));
}

static void open_refuses_bad_urls_and_options(void **state)
{
    fx *f = *state;
    store *st = NULL;
    store_opts o = opts_for(f);
    kb_secret *short_key = NULL;
    const char *const bad_prefixes[] = {"lambda/", NULL};

    /* PostgreSQL: a password in the URL is refused before connecting (test_store_pg). */
    assert_kb(store_open("postgresql://kb:pw@localhost/kb", &o, &st), KB_ERR_CONFIG);
    assert_kb(store_open("nosuch:/tmp/x", &o, &st), KB_ERR_CONFIG);
    assert_kb(store_open("/tmp/no-scheme.db", &o, &st), KB_ERR_CONFIG);
    assert_kb(store_open("sqlite:", &o, &st), KB_ERR_CONFIG);
    assert_kb(store_open("sqlite:/nonexistent-dir/x/y.db", &o, &st), KB_ERR_IO);
    assert_ok(kb_secret_from("short", 5, &short_key));
    o.row_mac_key = short_key;
    assert_kb(store_open(f->url, &o, &st), KB_ERR_CONFIG);
    kb_secret_free(short_key);
    o = opts_for(f);
    o.row_mac_key = NULL;
    assert_kb(store_open(f->url, &o, &st), KB_ERR_NULL);
    o = opts_for(f);
    o.cloud_prefixes = bad_prefixes;
    assert_kb(store_open(f->url, &o, &st), KB_ERR_CONFIG);
    assert_null(st);
}

static void database_file_is_private_and_wal(void **state)
{
    fx *f = *state;
    struct stat sb;
    int v = 0;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 077, 0);
    assert_ok(store_schema_version(f->st, &v));
    assert_int_equal(v, store_schema_version_supported());
    assert_true(v >= 2);
}

static void client_reads_follow_groups(void **state)
{
    fx *f = *state;
    world w;
    store_record *recs = NULL, r;
    size_t n = 0;

    build_world(f, &w);
    /* DC client: both secrets, sorted by name, metadata only. */
    assert_ok(store_readable_list(f->st, w.api, &recs, &n));
    assert_int_equal(n, 2);
    assert_string_equal(recs[0].secret.name, "api-key");
    assert_string_equal(recs[1].secret.name, "db-pass");
    assert_int_equal(recs[1].version.version, 1);
    assert_string_equal(recs[1].version.metadata, "{\"mode\":\"0400\"}");
    assert_null(recs[1].env.sealed);
    assert_null(recs[1].env.wrapped_key);
    assert_int_equal(recs[1].version.checksum[0], (uint8_t)(w.s_local * 16 + 1));
    store_records_free(recs, n);

    /* Cloud client: only the cloud_sync secret, whatever its groups. */
    assert_ok(store_readable_list(f->st, w.fn, &recs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].secret.name, "api-key");
    store_records_free(recs, n);
    assert_kb(store_readable_get(f->st, w.fn, "db-pass", 0, &r), KB_ERR_NOT_FOUND);

    /* Outsider: nothing; an unknown name looks the same as an unreadable one. */
    assert_ok(store_readable_list(f->st, w.outsider, &recs, &n));
    assert_int_equal(n, 0);
    store_records_free(recs, n);
    assert_kb(store_readable_get(f->st, w.outsider, "db-pass", 0, &r), KB_ERR_NOT_FOUND);
    assert_kb(store_readable_get(f->st, w.outsider, "no-such", 0, &r), KB_ERR_NOT_FOUND);

    /* Get with envelope. */
    assert_ok(store_readable_get(f->st, w.api, "db-pass", 0, &r));
    assert_int_equal(r.secret.id, w.s_local);
    assert_int_equal(r.version.version, 1);
    assert_string_equal(r.env.key_id, "master-1");
    assert_int_equal(r.env.sealed_len, strlen("sealed-1-1"));
    assert_memory_equal(r.env.sealed, "sealed-1-1", r.env.sealed_len);
    store_record_clear(&r);

    /* Disabled client: denied; unknown client id: not found. */
    store_client_patch p = STORE_CLIENT_PATCH_INIT;
    p.enabled = 0;
    assert_ok(store_client_update(f->st, w.api, &p, NULL));
    assert_kb(store_readable_list(f->st, w.api, &recs, &n), KB_ERR_DENIED);
    assert_kb(store_readable_get(f->st, w.api, "db-pass", 0, &r), KB_ERR_DENIED);
    assert_kb(store_readable_list(f->st, 9999, &recs, &n), KB_ERR_NOT_FOUND);
    assert_kb(store_readable_get(f->st, w.api, "../etc", 0, &r), KB_ERR_INVALID);
    assert_kb(store_readable_list(f->st, 0, &recs, &n), KB_ERR_INVALID);

    /* Removing the grant removes access. */
    p.enabled = 1;
    assert_ok(store_client_update(f->st, w.api, &p, NULL));
    assert_ok(store_grant_remove(f->st, w.g, w.s_local, NULL));
    assert_kb(store_grant_remove(f->st, w.g, w.s_local, NULL), KB_ERR_NOT_FOUND);
    assert_kb(store_readable_get(f->st, w.api, "db-pass", 0, &r), KB_ERR_NOT_FOUND);
    assert_ok(store_membership_remove(f->st, w.api, w.g, NULL));
    assert_ok(store_readable_list(f->st, w.api, &recs, &n));
    assert_int_equal(n, 0);
    store_records_free(recs, n);
}

static void batch_get(void **state)
{
    fx *f = *state;
    world w;
    const char *names[] = {"db-pass", "no-such", "api-key", ".bad"};
    store_record out[4];
    kb_err errs[4];

    build_world(f, &w);
    assert_ok(store_readable_get_batch(f->st, w.api, names, 4, out, errs));
    assert_int_equal(errs[0], KB_OK);
    assert_int_equal(errs[1], KB_ERR_NOT_FOUND);
    assert_int_equal(errs[2], KB_OK);
    assert_int_equal(errs[3], KB_ERR_INVALID);
    assert_string_equal(out[0].secret.name, "db-pass");
    assert_string_equal(out[2].secret.name, "api-key");
    assert_non_null(out[2].env.sealed);
    for (int i = 0; i < 4; i++)
        store_record_clear(&out[i]);
    assert_kb(store_readable_get_batch(f->st, w.api, names, 0, out, errs), KB_ERR_INVALID);
    assert_kb(store_readable_get_batch(f->st, w.api, names, STORE_BATCH_MAX + 1, out, errs),
              KB_ERR_TOO_LARGE);
}

/* A read is one statement with a row per (membership, grant) path: the client reads through any
 * verified path, a forged link on one path leaves the others, forged links on all of them make
 * it TAMPERED. And the call-level answers: unknown client, disabled client with no valid name. */
static void reads_through_several_paths(void **state)
{
    fx *f = *state;
    world w;
    store_record r, out[3];
    kb_err errs[3];
    const char *twice[] = {"db-pass", "db-pass", "api-key"};
    const char *bad[] = {".bad", "../x"};
    char sql[512];

    build_world(f, &w);
    assert_ok(store_membership_add(f->st, w.api, w.g2, NULL));
    assert_ok(store_grant_add(f->st, w.g2, w.s_local, NULL));
    assert_ok(store_readable_get(f->st, w.api, "db-pass", 0, &r));
    store_record_clear(&r);
    for (int k = 0; k < 2; k++) {
        int64_t forged = k == 0 ? w.g : w.g2;
        /* Forge (group, db-pass)'s grant with the MAC of payments' grant of api-key. */
        snprintf(sql, sizeof(sql),
                 "UPDATE grants SET mac = (SELECT g3.mac FROM grants g3 WHERE g3.group_id = %lld "
                 "AND g3.secret_id = %lld) WHERE group_id = %lld AND secret_id = %lld",
                 (long long)w.g, (long long)w.s_cloud, (long long)forged, (long long)w.s_local);
        raw_sql(f, sql);
        if (k == 0) {
            /* The other path still verifies: readable, alone and twice in a batch. */
            assert_ok(store_readable_get(f->st, w.api, "db-pass", 0, &r));
            assert_int_equal(r.secret.id, w.s_local);
            assert_non_null(r.env.sealed);
            store_record_clear(&r);
            assert_ok(store_readable_get_batch(f->st, w.api, twice, 3, out, errs));
            for (int i = 0; i < 3; i++) {
                assert_int_equal(errs[i], KB_OK);
                store_record_clear(&out[i]);
            }
        }
    }
    /* Both paths forged. */
    assert_kb(store_readable_get(f->st, w.api, "db-pass", 0, &r), KB_ERR_TAMPERED);
    assert_ok(store_readable_get_batch(f->st, w.api, twice, 3, out, errs));
    assert_int_equal(errs[0], KB_ERR_TAMPERED);
    assert_int_equal(errs[1], KB_ERR_TAMPERED);
    assert_int_equal(errs[2], KB_OK);
    assert_non_null(out[2].env.sealed);
    assert_null(out[0].env.sealed);
    for (int i = 0; i < 3; i++)
        store_record_clear(&out[i]);

    /* No such client: the whole call, one name or several. */
    assert_kb(store_readable_get(f->st, 9999, "api-key", 0, &r), KB_ERR_NOT_FOUND);
    assert_kb(store_readable_get_batch(f->st, 9999, twice, 3, out, errs), KB_ERR_NOT_FOUND);
    /* A disabled client is refused even when no name was valid enough to look up. */
    store_client_patch p = STORE_CLIENT_PATCH_INIT;
    p.enabled = 0;
    assert_ok(store_client_update(f->st, w.api, &p, NULL));
    assert_kb(store_readable_get_batch(f->st, w.api, bad, 2, out, errs), KB_ERR_DENIED);
    assert_kb(store_readable_get_batch(f->st, w.api, twice, 3, out, errs), KB_ERR_DENIED);
    p.enabled = 1;
    assert_ok(store_client_update(f->st, w.api, &p, NULL));
    assert_ok(store_readable_get_batch(f->st, w.api, bad, 2, out, errs));
    assert_int_equal(errs[0], KB_ERR_INVALID);
    assert_int_equal(errs[1], KB_ERR_INVALID);
}

static void versions_only_go_up(void **state)
{
    fx *f = *state;
    world w;
    store_version_new vn = {.content_len = 5, .metadata = "{\"v\":\"2\"}"};
    store_version *vs = NULL;
    size_t n = 0;
    int64_t v = 0;
    store_record r;

    build_world(f, &w);
    assert_ok(store_version_add(f->st, w.s_local, &vn, fake_seal, NULL, ADMIN, T0 + 1, &v, NULL));
    assert_int_equal(v, 2);
    /* "Rollback" = a new version with old content: still goes up. */
    assert_ok(store_version_add(f->st, w.s_local, &vn, fake_seal, NULL, ADMIN, T0 + 2, &v, NULL));
    assert_int_equal(v, 3);
    /* A failing seal (HSM down) writes nothing and uses no version number visibly. */
    assert_kb(store_version_add(f->st, w.s_local, &vn, failing_seal, NULL, ADMIN, T0, &v, NULL),
              KB_ERR_HSM);
    assert_kb(store_version_add(f->st, w.s_local, &vn, empty_seal, NULL, ADMIN, T0, &v, NULL),
              KB_ERR_INVALID);
    assert_ok(store_version_list(f->st, w.s_local, &vs, &n));
    assert_int_equal(n, 3);
    assert_int_equal(vs[0].version, 3);
    assert_int_equal(vs[2].version, 1);
    assert_string_equal(vs[0].metadata, "{\"v\":\"2\"}");
    store_versions_free(vs, n);

    /* Readers get the latest, or an explicit one; envelopes are bound to (id, version). */
    assert_ok(store_readable_get(f->st, w.api, "db-pass", 0, &r));
    assert_int_equal(r.version.version, 3);
    assert_memory_equal(r.env.wrapped_key, "wk-1-3", 6);
    store_record_clear(&r);
    assert_ok(store_readable_get(f->st, w.api, "db-pass", 2, &r));
    assert_int_equal(r.version.version, 2);
    store_record_clear(&r);
    assert_kb(store_readable_get(f->st, w.api, "db-pass", 4, &r), KB_ERR_NOT_FOUND);
    assert_kb(store_readable_get(f->st, w.api, "db-pass", -1, &r), KB_ERR_INVALID);
    assert_ok(store_version_get(f->st, w.s_local, 1, &r));
    assert_memory_equal(r.env.sealed, "sealed-1-1", 10);
    store_record_clear(&r);
    assert_kb(store_version_add(f->st, 999, &vn, fake_seal, NULL, ADMIN, T0, &v, NULL),
              KB_ERR_NOT_FOUND);
    assert_kb(store_version_list(f->st, 999, &vs, &n), KB_ERR_NOT_FOUND);
}

static void validation_and_limits(void **state)
{
    fx *f = *state;
    world w;
    store_secret_new sn = {.name = "big"};
    store_version_new vn = {.content_len = MODEL_CONTENT_MAX_DEFAULT};
    store_secret_patch sp = STORE_SECRET_PATCH_INIT;
    int64_t id = 0, v = 0;
    store_client_new cn = {.spiffe_id = "spiffe://example.org/lambda/admin", .admin = true};

    build_world(f, &w);
    /* Content at the limit: ok; above: refused; for cloud_sync, capped at 65,536. */
    assert_ok(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL));
    vn.content_len = MODEL_CONTENT_MAX_DEFAULT + 1;
    sn.name = "bigger";
    assert_kb(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL),
              KB_ERR_TOO_LARGE);
    assert_kb(store_version_add(f->st, w.s_local, &vn, fake_seal, NULL, ADMIN, T0, &v, NULL),
              KB_ERR_TOO_LARGE);
    vn.content_len = 1;
    sn.name = ".hidden";
    assert_kb(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL),
              KB_ERR_INVALID);
    sn.name = "db-pass";
    assert_kb(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL),
              KB_ERR_EXISTS);
    sn.name = "fine";
    assert_kb(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, "root", T0, &id, NULL),
              KB_ERR_INVALID);
    sn.owner_group_id = 999;
    assert_kb(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL),
              KB_ERR_NOT_FOUND);
    sn.owner_group_id = 0;
    vn.metadata = "{\"a\":1}";
    assert_kb(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL),
              KB_ERR_INVALID);
    vn.metadata = NULL;
    assert_kb(store_secret_create(f->st, &sn, &vn, failing_seal, NULL, ADMIN, T0, &id, NULL),
              KB_ERR_HSM);
    /* The failed creation left nothing behind. */
    store_secret s;
    assert_kb(store_secret_get(f->st, "fine", true, &s), KB_ERR_NOT_FOUND);

    /* A cloud_sync secret refuses > 65,536 even with a larger configured limit. */
    store_close(f->st);
    store_opts o = opts_for(f);
    o.content_max = 200000;
    assert_ok(store_open(f->url, &o, &f->st));
    vn.content_len = MODEL_CLOUD_CONTENT_MAX + 1;
    assert_kb(store_version_add(f->st, w.s_cloud, &vn, fake_seal, NULL, ADMIN, T0, &v, NULL),
              KB_ERR_TOO_LARGE);
    assert_ok(store_version_add(f->st, w.s_local, &vn, fake_seal, NULL, ADMIN, T0, &v, NULL));
    /* ...and a secret holding a large version cannot become cloud_sync. */
    sp.cloud_sync = 1;
    assert_kb(store_secret_update(f->st, w.s_local, &sp, ADMIN, T0, NULL), KB_ERR_TOO_LARGE);
    sp.cloud_sync = 2;
    assert_kb(store_secret_update(f->st, w.s_local, &sp, ADMIN, T0, NULL), KB_ERR_INVALID);

    /* Admin and cloud are mutually exclusive, both at creation and on update. */
    assert_kb(store_client_create(f->st, &cn, ADMIN, T0, &id, NULL), KB_ERR_INVALID);
    store_client_patch cp = STORE_CLIENT_PATCH_INIT;
    cp.admin = 1;
    assert_kb(store_client_update(f->st, w.fn, &cp, NULL), KB_ERR_INVALID);
    cn.admin = false;
    cn.spiffe_id = "not-a-spiffe-id";
    assert_kb(store_client_create(f->st, &cn, ADMIN, T0, &id, NULL), KB_ERR_INVALID);
    cn.spiffe_id = "spiffe://example.org/ns/payments/sa/api";
    assert_kb(store_client_create(f->st, &cn, ADMIN, T0, &id, NULL), KB_ERR_EXISTS);
    assert_kb(store_group_create(f->st, "payments", NULL, ADMIN, T0, &id, NULL), KB_ERR_EXISTS);
    assert_kb(store_membership_add(f->st, w.api, w.g, NULL), KB_ERR_EXISTS);
    assert_kb(store_membership_add(f->st, 999, w.g, NULL), KB_ERR_NOT_FOUND);
    assert_kb(store_grant_add(f->st, w.g, 999, NULL), KB_ERR_NOT_FOUND);
    assert_kb(store_grant_add(f->st, 999, w.s_local, NULL), KB_ERR_NOT_FOUND);
}

/* Secrets Manager refuses an empty value: a cloud_sync secret never holds empty content (on
 * create, on a new version, and when the flag is turned on over an empty latest version); the
 * application name fits keybridge/<app>/<name> into 512 characters (246 at most). */
static void cloud_sync_needs_content_and_short_app_names(void **state)
{
    fx *f = *state;
    world w;
    store_secret_new sn = {.name = "empty-cloud", .cloud_sync = true};
    store_version_new vn = {.content_len = 0};
    store_secret_patch sp = STORE_SECRET_PATCH_INIT;
    store_client_new cn = {.spiffe_id = "spiffe://example.org/ns/long/sa/x", .enabled = true};
    store_client_patch cp = STORE_CLIENT_PATCH_INIT;
    char app[MODEL_APP_NAME_MAX + 2];
    int64_t id = 0, v = 0, empty_local = 0;

    build_world(f, &w);
    assert_kb(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL),
              KB_ERR_INVALID);
    assert_kb(store_version_add(f->st, w.s_cloud, &vn, fake_seal, NULL, ADMIN, T0, &v, NULL),
              KB_ERR_INVALID);
    /* local secrets may be empty, but cannot become cloud_sync while their latest is empty */
    sn.cloud_sync = false;
    sn.name = "empty-local";
    assert_ok(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &empty_local, NULL));
    sp.cloud_sync = 1;
    assert_kb(store_secret_update(f->st, empty_local, &sp, ADMIN, T0, NULL), KB_ERR_INVALID);
    vn.content_len = 1;
    assert_ok(store_version_add(f->st, empty_local, &vn, fake_seal, NULL, ADMIN, T0, &v, NULL));
    assert_ok(store_secret_update(f->st, empty_local, &sp, ADMIN, T0, NULL));

    memset(app, 'a', sizeof(app));
    app[MODEL_APP_NAME_MAX + 1] = '\0';
    cn.app_name = app; /* 247: above */
    assert_kb(store_client_create(f->st, &cn, ADMIN, T0, &id, NULL), KB_ERR_TOO_LARGE);
    app[MODEL_APP_NAME_MAX] = '\0'; /* 246: at */
    assert_ok(store_client_create(f->st, &cn, ADMIN, T0, &id, NULL));
    app[MODEL_APP_NAME_MAX - 1] = '\0'; /* 245: below */
    cp.app_name = app;
    assert_ok(store_client_update(f->st, id, &cp, NULL));
    app[MODEL_APP_NAME_MAX - 1] = 'a';
    app[MODEL_APP_NAME_MAX] = 'a'; /* 247 again, on update */
    assert_kb(store_client_update(f->st, id, &cp, NULL), KB_ERR_TOO_LARGE);
}

static void cloud_flag_derived_from_spiffe_id(void **state)
{
    fx *f = *state;
    world w;
    store_client c;
    build_world(f, &w);
    assert_ok(store_client_get(f->st, "spiffe://example.org/lambda/acct/1/fn/report", &c));
    assert_true(c.cloud);
    assert_false(c.admin);
    assert_string_equal(c.app_name, "app");
    store_client_clear(&c);
    assert_ok(store_client_get(f->st, "spiffe://example.org/ns/payments/sa/api", &c));
    assert_false(c.cloud);
    store_client_clear(&c);

    /* A prefix added to the configuration later makes an existing client cloud (fails closed)
     * and strips admin from a client that now matches it. */
    store_close(f->st);
    const char *const more[] = {"/lambda/", "/ns/payments", "/admin", NULL};
    store_opts o = opts_for(f);
    o.cloud_prefixes = more;
    assert_ok(store_open(f->url, &o, &f->st));
    assert_ok(store_client_get(f->st, "spiffe://example.org/ns/payments/sa/api", &c));
    assert_true(c.cloud);
    store_client_clear(&c);
    assert_ok(store_client_get(f->st, ADMIN, &c));
    assert_true(c.cloud);
    assert_false(c.admin);
    store_client_clear(&c);
    /* The same policy (store.c) on every path that hands out clients: by id, listings, a group's
     * clients, the stale list (the ex-admin is now an enabled non-admin: it is expected to list),
     * and an update cannot make it admin again. */
    {
        store_client *cs = NULL;
        store_client_patch cp = STORE_CLIENT_PATCH_INIT;
        size_t n = 0, seen = 0;
        int64_t admin_id;
        assert_ok(store_client_get(f->st, ADMIN, &c));
        admin_id = c.id;
        store_client_clear(&c);
        assert_ok(store_client_get_by_id(f->st, admin_id, &c));
        assert_true(c.cloud && !c.admin);
        store_client_clear(&c);
        assert_ok(store_client_list(f->st, &cs, &n));
        for (size_t i = 0; i < n; i++) {
            assert_false(cs[i].admin && cs[i].cloud);
            seen += cs[i].id == admin_id;
        }
        assert_int_equal(seen, 1);
        store_clients_free(cs, n);
        assert_ok(store_clients_stale(f->st, T0 + 1000, &cs, &n));
        seen = 0;
        for (size_t i = 0; i < n; i++) {
            assert_true(cs[i].enabled && !cs[i].admin);
            seen += cs[i].id == admin_id;
        }
        assert_int_equal(seen, 1);
        store_clients_free(cs, n);
        cp.admin = 1;
        assert_kb(store_client_update(f->st, admin_id, &cp, NULL), KB_ERR_INVALID);
        cp.admin = -1;
        cp.description = "still cloud";
        assert_ok(store_client_update(f->st, admin_id, &cp, NULL));
        assert_ok(store_client_get_by_id(f->st, admin_id, &c));
        assert_true(c.cloud && !c.admin);
        assert_string_equal(c.description, "still cloud");
        store_client_clear(&c);
    }
    store_record r;
    assert_kb(store_readable_get(f->st, w.api, "db-pass", 0, &r), KB_ERR_NOT_FOUND);
    assert_ok(store_readable_get(f->st, w.api, "api-key", 0, &r));
    store_record_clear(&r);
}

static void soft_delete_restore_purge(void **state)
{
    fx *f = *state;
    world w;
    store_record *recs = NULL, r;
    size_t n = 0;
    store_secret s;
    int64_t v;
    store_version_new vn = {.content_len = 1};

    build_world(f, &w);
    assert_kb(store_secret_purge(f->st, w.s_local, NULL), KB_ERR_CONFLICT); /* live */
    assert_ok(store_secret_delete(f->st, w.s_local, ADMIN, T0 + 5, NULL));
    assert_kb(store_secret_delete(f->st, w.s_local, ADMIN, T0 + 5, NULL), KB_ERR_CONFLICT);
    assert_kb(store_readable_get(f->st, w.api, "db-pass", 0, &r), KB_ERR_NOT_FOUND);
    assert_ok(store_readable_list(f->st, w.api, &recs, &n));
    assert_int_equal(n, 1);
    store_records_free(recs, n);
    assert_kb(store_secret_get(f->st, "db-pass", false, &s), KB_ERR_NOT_FOUND);
    assert_ok(store_secret_get(f->st, "db-pass", true, &s));
    assert_int_equal(s.deleted_at, T0 + 5);
    store_secret_clear(&s);
    assert_kb(store_version_add(f->st, w.s_local, &vn, fake_seal, NULL, ADMIN, T0, &v, NULL),
              KB_ERR_CONFLICT);
    assert_ok(store_secret_list(f->st, false, &recs, &n));
    assert_int_equal(n, 1);
    store_records_free(recs, n);
    assert_ok(store_secret_list(f->st, true, &recs, &n));
    assert_int_equal(n, 2);
    store_records_free(recs, n);

    assert_ok(store_secret_restore(f->st, w.s_local, ADMIN, T0 + 6, NULL));
    assert_kb(store_secret_restore(f->st, w.s_local, ADMIN, T0 + 6, NULL), KB_ERR_CONFLICT);
    assert_ok(store_readable_get(f->st, w.api, "db-pass", 0, &r));
    store_record_clear(&r);

    assert_ok(store_fetch_record(f->st, w.api, w.s_local, 1, T0));
    assert_ok(store_secret_delete(f->st, w.s_local, ADMIN, T0 + 7, NULL));
    assert_ok(store_secret_purge(f->st, w.s_local, NULL));
    assert_kb(store_secret_get(f->st, "db-pass", true, &s), KB_ERR_NOT_FOUND);
    /* Versions, envelopes, grants and fetch log went with it. */
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM versions WHERE secret_id = 1"),
                     0);
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM grants WHERE secret_id = 1"),
                     0);
    assert_int_equal(
        kbtest_store_int(f->path, "SELECT count(*) FROM fetch_log WHERE secret_id = 1"), 0);
    assert_kb(store_secret_purge(f->st, w.s_local, NULL), KB_ERR_NOT_FOUND);
    /* The name is free again; the new secret gets a new id (ids are never reused). */
    int64_t again = mk_secret(f, "db-pass", false, NULL);
    assert_true(again > w.s_cloud);
}

/* The notifier's delivered windows (schema step 5): durable, idempotent, per version and
 * window, refused for bad arguments, gone with the secret on purge. */
static void notify_sent_rows(void **state)
{
    fx *f = *state;
    world w;
    bool sent = true;

    build_world(f, &w);
    assert_ok(store_notify_sent(f->st, w.s_local, 1, 604800, &sent));
    assert_false(sent);
    assert_ok(store_notify_mark(f->st, w.s_local, 1, 604800, T0, NULL));
    assert_ok(store_notify_mark(f->st, w.s_local, 1, 604800, T0 + 1, NULL)); /* again: no error */
    assert_ok(store_notify_sent(f->st, w.s_local, 1, 604800, &sent));
    assert_true(sent);
    assert_ok(store_notify_sent(f->st, w.s_local, 1, 86400, &sent)); /* another window */
    assert_false(sent);
    assert_ok(store_notify_sent(f->st, w.s_local, 2, 604800, &sent)); /* another version */
    assert_false(sent);
    assert_ok(store_notify_sent(f->st, w.s_cloud, 1, 604800, &sent)); /* another secret */
    assert_false(sent);
    assert_kb(store_notify_mark(f->st, w.s_local, 0, 604800, T0, NULL), KB_ERR_INVALID);
    assert_kb(store_notify_mark(f->st, w.s_local, 1, 0, T0, NULL), KB_ERR_INVALID);
    assert_kb(store_notify_mark(f->st, 0, 1, 60, T0, NULL), KB_ERR_INVALID);
    assert_kb(store_notify_sent(f->st, w.s_local, 1, -1, &sent), KB_ERR_INVALID);
    assert_kb(store_notify_mark(f->st, 9999, 1, 60, T0, NULL), KB_ERR_NOT_FOUND); /* FK */
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM notify_sent"), 1);
    /* survives a reopen */
    store_close(f->st);
    store_opts o = opts_for(f);
    assert_ok(store_open(f->url, &o, &f->st));
    assert_ok(store_notify_sent(f->st, w.s_local, 1, 604800, &sent));
    assert_true(sent);
    assert_ok(store_secret_delete(f->st, w.s_local, ADMIN, T0 + 7, NULL));
    assert_ok(store_secret_purge(f->st, w.s_local, NULL));
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM notify_sent"), 0);
}

static void groups_and_owner(void **state)
{
    fx *f = *state;
    world w;
    store_group *gs = NULL, g;
    store_client *cs = NULL;
    size_t n = 0;
    store_secret_patch sp = STORE_SECRET_PATCH_INIT;
    store_secret s;

    build_world(f, &w);
    assert_ok(store_group_get(f->st, "payments", &g));
    assert_int_equal(g.id, w.g);
    assert_string_equal(g.description, "payments team");
    store_group_clear(&g);
    assert_kb(store_group_get(f->st, "nope", &g), KB_ERR_NOT_FOUND);
    assert_ok(store_group_list(f->st, &gs, &n));
    assert_int_equal(n, 2);
    store_groups_free(gs, n);
    assert_ok(store_client_groups(f->st, w.api, &gs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(gs[0].name, "payments");
    store_groups_free(gs, n);
    assert_ok(store_secret_groups(f->st, w.s_local, &gs, &n));
    assert_int_equal(n, 1);
    store_groups_free(gs, n);
    assert_ok(store_group_clients(f->st, w.g, &cs, &n));
    assert_int_equal(n, 2);
    store_clients_free(cs, n);

    sp.owner_group_id = w.g2;
    sp.description = "new words";
    assert_ok(store_secret_update(f->st, w.s_local, &sp, ADMIN, T0 + 9, NULL));
    assert_ok(store_secret_get_by_id(f->st, w.s_local, false, &s));
    assert_int_equal(s.owner_group_id, w.g2);
    assert_string_equal(s.description, "new words");
    assert_int_equal(s.updated_at, T0 + 9);
    store_secret_clear(&s);
    sp.owner_group_id = 12345;
    assert_kb(store_secret_update(f->st, w.s_local, &sp, ADMIN, T0, NULL), KB_ERR_NOT_FOUND);
    assert_kb(store_group_delete(f->st, w.g2, NULL), KB_ERR_CONFLICT); /* owns db-pass */
    assert_ok(store_group_delete(f->st, w.g, NULL));                   /* memberships/grants go */
    assert_kb(store_group_delete(f->st, w.g, NULL), KB_ERR_NOT_FOUND);
    store_record r;
    assert_kb(store_readable_get(f->st, w.api, "db-pass", 0, &r), KB_ERR_NOT_FOUND);
    assert_ok(store_client_delete(f->st, w.api, NULL));
    assert_kb(store_client_delete(f->st, w.api, NULL), KB_ERR_NOT_FOUND);
}

static void fetch_log_seen_stale_expiring(void **state)
{
    fx *f = *state;
    world w;
    store_fetch *fs = NULL;
    store_client c, *cs = NULL;
    store_record *recs = NULL;
    size_t n = 0;
    int64_t v;
    store_version_new vn = {.content_len = 1, .expires_at = T0 + 86400};

    build_world(f, &w);
    assert_ok(store_fetch_record(f->st, w.api, w.s_local, 1, T0));
    assert_ok(store_fetch_record(f->st, w.fn, w.s_local, 1, T0));
    assert_ok(store_version_add(f->st, w.s_local, &vn, fake_seal, NULL, ADMIN, T0, &v, NULL));
    assert_ok(store_fetch_record(f->st, w.api, w.s_local, 2, T0 + 10));
    assert_ok(store_fetch_record(f->st, w.api, w.s_local, 1, T0 + 5)); /* older: ignored */
    assert_kb(store_fetch_record(f->st, 999, w.s_local, 1, T0), KB_ERR_NOT_FOUND);
    assert_ok(store_secret_status(f->st, w.s_local, &fs, &n));
    assert_int_equal(n, 2);
    /* ordered by SPIFFE ID: lambda/... < ns/... */
    assert_string_equal(fs[0].spiffe_id, "spiffe://example.org/lambda/acct/1/fn/report");
    assert_int_equal(fs[0].version, 1); /* still holds the old version */
    assert_int_equal(fs[1].version, 2);
    assert_int_equal(fs[1].fetched_at, T0 + 10);
    store_fetches_free(fs, n);

    /* last_seen: written at most hourly. */
    assert_ok(store_client_seen(f->st, w.api, T0 + 100, false));
    assert_ok(store_client_seen(f->st, w.api, T0 + 200, true));
    assert_ok(store_client_get_by_id(f->st, w.api, &c));
    assert_int_equal(c.last_seen, T0 + 100);
    assert_int_equal(c.last_list_at, T0 + 200);
    store_client_clear(&c);
    assert_ok(store_client_seen(f->st, w.api, T0 + 100 + STORE_TOUCH_INTERVAL - 1, true));
    assert_ok(store_client_get_by_id(f->st, w.api, &c));
    assert_int_equal(c.last_seen, T0 + 100);
    assert_int_equal(c.last_list_at, T0 + 200);
    store_client_clear(&c);
    assert_ok(store_client_seen(f->st, w.api, T0 + 200 + STORE_TOUCH_INTERVAL, true));
    assert_ok(store_client_get_by_id(f->st, w.api, &c));
    assert_int_equal(c.last_seen, T0 + 200 + STORE_TOUCH_INTERVAL);
    assert_int_equal(c.last_list_at, T0 + 200 + STORE_TOUCH_INTERVAL);
    store_client_clear(&c);
    assert_kb(store_client_seen(f->st, 999, T0, false), KB_ERR_NOT_FOUND);

    /* Stale: enabled non-admin clients that have not listed since; admin excluded. */
    assert_ok(store_clients_stale(f->st, T0 + 1000, &cs, &n));
    assert_int_equal(n, 2); /* fn and outsider never listed; api listed later */
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(cs[i].id, w.api);
    store_clients_free(cs, n);

    /* Expiring: only the latest version's expiry counts. */
    assert_ok(store_secrets_expiring(f->st, T0, T0 + 2 * 86400, &recs, &n));
    assert_int_equal(n, 1);
    assert_int_equal(recs[0].secret.id, w.s_local);
    assert_int_equal(recs[0].version.expires_at, T0 + 86400);
    store_records_free(recs, n);
    assert_ok(store_secrets_expiring(f->st, T0 + 86401, T0 + 2 * 86400, &recs, &n));
    assert_int_equal(n, 0);
    store_records_free(recs, n);
    assert_kb(store_secrets_expiring(f->st, T0 + 1, T0, &recs, &n), KB_ERR_INVALID);
}

/* ---- tampering: edit the database file directly, the access check must fail closed ---- */

static void tamper_flip_admin(void **state)
{
    fx *f = *state;
    world w;
    store_client c;
    build_world(f, &w);
    raw_sql(f, "UPDATE clients SET admin = 1 WHERE spiffe_id LIKE '%sa/api'");
    assert_kb(store_client_get(f->st, "spiffe://example.org/ns/payments/sa/api", &c),
              KB_ERR_INTEGRITY);
    /* Fails closed for reads too, and the admin list leaves it out. */
    store_record r;
    assert_kb(store_readable_get(f->st, w.api, "db-pass", 0, &r), KB_ERR_INTEGRITY);
    store_client *cs;
    size_t n;
    assert_ok(store_client_list(f->st, &cs, &n));
    assert_int_equal(n, 3);
    store_clients_free(cs, n);
    /* An update of a tampered row is refused rather than laundered with a fresh MAC. */
    store_client_patch p = STORE_CLIENT_PATCH_INIT;
    p.description = "x";
    assert_kb(store_client_update(f->st, w.api, &p, NULL), KB_ERR_INTEGRITY);
    /* Enabling a disabled client or un-clouding one is caught the same way. */
    raw_sql(f, "UPDATE clients SET cloud = 0 WHERE spiffe_id LIKE '%fn/report'");
    assert_kb(store_client_get_by_id(f->st, w.fn, &c), KB_ERR_INTEGRITY);
    raw_sql(f, "UPDATE clients SET admin = 2 WHERE id = 3");
    assert_kb(store_client_get_by_id(f->st, w.admin, &c), KB_ERR_INTEGRITY);
}

static void tamper_change_spiffe_id(void **state)
{
    fx *f = *state;
    world w;
    store_client c;
    build_world(f, &w);
    /* Give the outsider's row (its MAC) the api client's identity. */
    raw_sql(f, "DELETE FROM clients WHERE spiffe_id LIKE '%sa/api';"
               "UPDATE clients SET spiffe_id = 'spiffe://example.org/ns/payments/sa/api' "
               "WHERE spiffe_id LIKE '%other/sa/x'");
    assert_kb(store_client_get(f->st, "spiffe://example.org/ns/payments/sa/api", &c),
              KB_ERR_INTEGRITY);
    /* Swapping whole rows (MAC included) to another id fails too: the id is bound. */
    raw_sql(f, "UPDATE clients SET id = 77 WHERE spiffe_id LIKE '%fn/report'");
    assert_kb(store_client_get_by_id(f->st, 77, &c), KB_ERR_INTEGRITY);
}

static void tamper_insert_membership(void **state)
{
    fx *f = *state;
    world w;
    store_record *recs = NULL, r;
    size_t n = 0;
    char sql[256];
    build_world(f, &w);
    /* The outsider joins "payments" with a made-up MAC, then with a MAC copied from a real
     * membership row. */
    snprintf(sql, sizeof(sql),
             "INSERT INTO memberships(client_id, group_id, mac) VALUES (%lld, %lld, "
             "randomblob(32))",
             (long long)w.outsider, (long long)w.g);
    raw_sql(f, sql);
    assert_kb(store_readable_get(f->st, w.outsider, "db-pass", 0, &r), KB_ERR_TAMPERED);
    assert_ok(store_readable_list(f->st, w.outsider, &recs, &n));
    assert_int_equal(n, 0);
    store_records_free(recs, n);
    snprintf(sql, sizeof(sql),
             "UPDATE memberships SET mac = (SELECT mac FROM memberships WHERE client_id = %lld) "
             "WHERE client_id = %lld AND group_id = %lld",
             (long long)w.api, (long long)w.outsider, (long long)w.g);
    raw_sql(f, sql);
    assert_kb(store_readable_get(f->st, w.outsider, "db-pass", 0, &r), KB_ERR_TAMPERED);
    assert_ok(store_readable_list(f->st, w.outsider, &recs, &n));
    assert_int_equal(n, 0);
    store_records_free(recs, n);
    /* The admin view of the group leaves the forged member out. */
    store_client *cs;
    assert_ok(store_group_clients(f->st, w.g, &cs, &n));
    assert_int_equal(n, 2);
    store_clients_free(cs, n);
    /* The legitimate member is unaffected. */
    assert_ok(store_readable_get(f->st, w.api, "db-pass", 0, &r));
    store_record_clear(&r);
}

static void tamper_copy_grant(void **state)
{
    fx *f = *state;
    world w;
    store_record *recs = NULL, r;
    size_t n = 0;
    char sql[256];
    int64_t s3;
    build_world(f, &w);
    s3 = mk_secret(f, "other-secret", false, NULL);
    /* Copy payments' grant of db-pass (MAC and all) onto other-secret. */
    snprintf(sql, sizeof(sql),
             "INSERT INTO grants(group_id, secret_id, mac) SELECT group_id, %lld, mac FROM "
             "grants WHERE secret_id = %lld",
             (long long)s3, (long long)w.s_local);
    raw_sql(f, sql);
    assert_kb(store_readable_get(f->st, w.api, "other-secret", 0, &r), KB_ERR_TAMPERED);
    assert_ok(store_readable_list(f->st, w.api, &recs, &n));
    assert_int_equal(n, 2); /* api-key and db-pass only */
    for (size_t i = 0; i < n; i++)
        assert_string_not_equal(recs[i].secret.name, "other-secret");
    store_records_free(recs, n);
    store_group *gs;
    assert_ok(store_secret_groups(f->st, s3, &gs, &n));
    assert_int_equal(n, 0);
    store_groups_free(gs, n);
}

static void tamper_secret_flags(void **state)
{
    fx *f = *state;
    world w;
    store_record *recs = NULL, r;
    store_secret s;
    size_t n = 0;
    build_world(f, &w);
    /* Opting a local secret into cloud sync behind the server's back. */
    raw_sql(f, "UPDATE secrets SET cloud_sync = 1 WHERE name = 'db-pass'");
    assert_kb(store_readable_get(f->st, w.fn, "db-pass", 0, &r), KB_ERR_TAMPERED);
    assert_ok(store_readable_list(f->st, w.fn, &recs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].secret.name, "api-key");
    store_records_free(recs, n);
    assert_kb(store_secret_get(f->st, "db-pass", true, &s), KB_ERR_INTEGRITY);
    /* Un-deleting a deleted secret. */
    assert_ok(store_secret_delete(f->st, w.s_cloud, ADMIN, T0 + 1, NULL));
    raw_sql(f, "UPDATE secrets SET deleted_at = 0 WHERE name = 'api-key'");
    assert_kb(store_readable_get(f->st, w.fn, "api-key", 0, &r), KB_ERR_TAMPERED);
    assert_ok(store_readable_list(f->st, w.fn, &recs, &n));
    assert_int_equal(n, 0);
    store_records_free(recs, n);
    /* Renaming a secret to take another's place. */
    raw_sql(f, "UPDATE secrets SET name = 'renamed' WHERE name = 'db-pass'");
    assert_kb(store_readable_get(f->st, w.api, "renamed", 0, &r), KB_ERR_TAMPERED);
    /* Tampered secrets cannot be modified (no laundering) nor purged. */
    store_secret_patch sp = STORE_SECRET_PATCH_INIT;
    sp.description = "x";
    assert_kb(store_secret_update(f->st, w.s_local, &sp, ADMIN, T0, NULL), KB_ERR_INTEGRITY);
    assert_kb(store_secret_purge(f->st, w.s_cloud, NULL), KB_ERR_INTEGRITY);
}

/* Secret `name` must be refused on every path that serves its latest version: the single read
 * (KB_ERR_INTEGRITY, as for a bad GCM tag), the client's listing and the admin listing (left
 * out, logged). */
static void assert_version_refused(fx *f, int64_t client, const char *name, size_t list_n)
{
    store_record r, *recs = NULL;
    size_t n = 0;
    assert_kb(store_readable_get(f->st, client, name, 0, &r), KB_ERR_INTEGRITY);
    assert_ok(store_readable_list(f->st, client, &recs, &n));
    assert_int_equal(n, list_n);
    for (size_t i = 0; i < n; i++)
        assert_string_not_equal(recs[i].secret.name, name);
    store_records_free(recs, n);
    assert_ok(store_secret_list(f->st, false, &recs, &n));
    for (size_t i = 0; i < n; i++)
        assert_string_not_equal(recs[i].secret.name, name);
    store_records_free(recs, n);
}

#define LAST "(SELECT max(id) FROM secrets)" /* the secret just made */

static void tamper_version_rows(void **state)
{
    fx *f = *state;
    world w;
    store_record r;
    store_version *vs = NULL;
    size_t n = 0;
    /* Each edit on its own fresh secret granted to payments; the api client otherwise reads
     * db-pass and api-key. */
    static const char *const edits[] = {
        "UPDATE versions SET metadata = '{\"mode\":\"0777\"}' WHERE secret_id = " LAST,
        "UPDATE versions SET metadata = '{\"mode\":\"0400\",\"owner\":\"root\"}' "
        "WHERE secret_id = " LAST,
        "UPDATE versions SET metadata = '{\"filename\":\"../../etc/cron.d/x\",\"mode\":\"0400\"}' "
        "WHERE secret_id = " LAST,
        "UPDATE versions SET checksum = randomblob(32) WHERE secret_id = " LAST,
        "UPDATE versions SET expires_at = 4102444800 WHERE secret_id = " LAST,
        "UPDATE versions SET content_len = 9 WHERE secret_id = " LAST,
        "UPDATE versions SET created_at = 1 WHERE secret_id = " LAST,
        "UPDATE versions SET mac = x'' WHERE secret_id = " LAST,
        /* A whole version row (MAC included) moved under another secret id. */
        "UPDATE versions SET mac = (SELECT mac FROM versions WHERE secret_id = 1) "
        "WHERE secret_id = " LAST,
    };
    build_world(f, &w);
    for (size_t i = 0; i < KB_ARRAY_LEN(edits); i++) {
        char name[32];
        int64_t id;
        snprintf(name, sizeof(name), "v-edit-%zu", i);
        id = mk_secret(f, name, false, "{\"mode\":\"0400\"}");
        assert_ok(store_grant_add(f->st, w.g, id, NULL));
        assert_ok(store_readable_get(f->st, w.api, name, 0, &r));
        store_record_clear(&r);
        raw_sql(f, edits[i]);
        assert_version_refused(f, w.api, name, 2);
        assert_kb(store_version_get(f->st, id, 1, &r), KB_ERR_INTEGRITY);
        assert_ok(store_version_list(f->st, id, &vs, &n));
        assert_int_equal(n, 0);
        store_versions_free(vs, n);
        /* Put it out of the way for the next round's list counts. */
        assert_ok(store_grant_remove(f->st, w.g, id, NULL));
    }
    /* The untouched secrets still read. */
    assert_ok(store_readable_get(f->st, w.api, "db-pass", 0, &r));
    assert_string_equal(r.version.metadata, "{\"mode\":\"0400\"}");
    store_record_clear(&r);
}

static void tamper_latest_version(void **state)
{
    fx *f = *state;
    world w;
    store_record r;
    store_version_new vn = {.content_len = 10, .metadata = "{\"mode\":\"0440\"}"};
    int64_t v = 0;
    build_world(f, &w);
    assert_ok(store_version_add(f->st, w.s_local, &vn, fake_seal, NULL, ADMIN, T0 + 1, &v, NULL));
    assert_int_equal(v, 2);
    /* Rolled back to version 1 (an authentic, older row). */
    raw_sql(f, "UPDATE secrets SET latest_version = 1 WHERE name = 'db-pass'");
    assert_version_refused(f, w.api, "db-pass", 1);
    assert_kb(store_version_get(f->st, w.s_local, 0, &r), KB_ERR_INTEGRITY);
    /* An explicitly named version is still that version (its own row verifies). */
    assert_ok(store_readable_get(f->st, w.api, "db-pass", 2, &r));
    assert_int_equal(r.version.version, 2);
    store_record_clear(&r);
    /* A latest_mac copied from another secret at version 1 does not fit: the id is bound. */
    raw_sql(f, "UPDATE secrets SET latest_mac = (SELECT latest_mac FROM secrets WHERE "
               "name = 'api-key') WHERE name = 'db-pass'");
    assert_version_refused(f, w.api, "db-pass", 1);
    /* Put back: served again. */
    raw_sql(f, "UPDATE secrets SET latest_version = 2 WHERE name = 'db-pass'");
    assert_version_refused(f, w.api, "db-pass", 1); /* latest_mac still the copied one */
}

static void wrong_key_refuses_the_database(void **state)
{
    fx *f = *state;
    world w;
    kb_secret *k2 = NULL;
    uint8_t other[32] = {9};
    build_world(f, &w);
    store_close(f->st);
    assert_ok(kb_secret_from(other, sizeof(other), &k2));
    store_opts o = opts_for(f);
    o.row_mac_key = k2;
    /* The state row does not verify under another key: the database is refused as a whole
     * (docs/internals/rollback.md), so no row is even looked at. */
    assert_kb(store_open(f->url, &o, &f->st), KB_ERR_INTEGRITY);
    assert_null(f->st);
    kb_secret_free(k2); /* the store keeps its own copy */
}

/* ---- migrations ---- */

static void migration_upgrades_v1(void **state)
{
    fx *f = *state;
    sqlite3 *db;
    char path[600], url[620];
    store *st = NULL;
    store_group g;
    int v = 0;
    store_opts o = opts_for(f);

    snprintf(path, sizeof(path), "%s/v1.db", f->dir);
    snprintf(url, sizeof(url), "sqlite:%s", path);
    /* A v1 database by hand, with a row in it. */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, store_sqlite_migration(1), NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE schema_version SET version = 1;"
                                  "INSERT INTO groups(name, description, created_by, created_at) "
                                  "VALUES ('old', 'from v1', 'bootstrap', 1)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_null(store_sqlite_migration(0));
    assert_null(store_sqlite_migration(store_schema_version_supported() + 1));

    assert_ok(store_open(url, &o, &st));
    assert_ok(store_schema_version(st, &v));
    assert_int_equal(v, store_schema_version_supported());
    assert_ok(store_group_get(st, "old", &g));
    assert_string_equal(g.description, "from v1");
    store_group_clear(&g);
    store_close(st);
    /* Step 2's indexes exist now. */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT count(*) FROM sqlite_master WHERE type='index' "
                                        "AND name='grants_by_secret'",
                                        -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 1);
    sqlite3_finalize(s);
    sqlite3_close(db);
    /* Reopening an up-to-date database changes nothing. */
    assert_ok(store_open(url, &o, &st));
    store_close(st);
    unlink(path);
    snprintf(path + strlen(path), sizeof(path) - strlen(path), "-wal");
    unlink(path);
}

/* A version 3 database with secrets in it (built by the current code, then the step 3 columns
 * dropped): opening it MACs the existing version rows and latest_version, which then read, and an
 * edit after the upgrade is refused. */
static void migration_macs_existing_versions(void **state)
{
    fx *f = *state;
    world w;
    store_record r;
    store_opts o = opts_for(f);
    int v = 0;
    build_world(f, &w);
    store_close(f->st);
    f->st = NULL;
    raw_sql(f,
            "ALTER TABLE versions DROP COLUMN mac; ALTER TABLE secrets DROP COLUMN latest_mac;"
            "DROP TABLE notify_sent; DROP TABLE schema_compat; DROP INDEX secrets_by_owner_group; "
            "UPDATE schema_version SET version = 3");
    assert_int_equal(kbtest_store_int(f->path, "SELECT count(*) FROM pragma_table_info('versions') "
                                               "WHERE name = 'mac'"),
                     0);
    assert_ok(store_open(f->url, &o, &f->st));
    assert_ok(store_schema_version(f->st, &v));
    assert_int_equal(v, store_schema_version_supported());
    assert_int_equal(
        kbtest_store_int(f->path, "SELECT count(*) FROM versions WHERE length(mac) = 32"), 2);
    assert_int_equal(
        kbtest_store_int(f->path, "SELECT count(*) FROM secrets WHERE length(latest_mac) = 32"), 2);
    assert_ok(store_readable_get(f->st, w.api, "db-pass", 0, &r));
    assert_string_equal(r.version.metadata, "{\"mode\":\"0400\"}");
    store_record_clear(&r);
    assert_ok(store_readable_get(f->st, w.fn, "api-key", 0, &r));
    store_record_clear(&r);
    raw_sql(f, "UPDATE versions SET metadata = '{\"mode\":\"0644\"}' WHERE secret_id = "
               "(SELECT id FROM secrets WHERE name = 'db-pass')");
    assert_version_refused(f, w.api, "db-pass", 1);
}

static void migration_refuses_newer_db(void **state)
{
    fx *f = *state;
    store *st = NULL;
    store_opts o = opts_for(f);
    store_close(f->st);
    f->st = NULL;
    raw_sql(f,
            "UPDATE schema_version SET version = 99; UPDATE schema_compat SET floor_version = 99");
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    assert_null(st);
    /* A damaged version table is refused too. */
    char sql[128];
    snprintf(sql, sizeof(sql),
             "UPDATE schema_version SET version = 1; INSERT INTO schema_version VALUES (%d)",
             store_schema_version_supported());
    raw_sql(f, sql);
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    /* Repaired (one row, the version reached), it opens again. */
    char fix[128];
    snprintf(fix, sizeof(fix),
             "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d); "
             "UPDATE schema_compat SET floor_version = %d",
             store_schema_version_supported(), store_schema_version_supported());
    raw_sql(f, fix);
    assert_ok(store_open(f->url, &o, &f->st));
}

/* Expand/contract (docs/internals/store.md, "Schema versions"): the floor after a migration is
 * the last contracting step's version; expand-only steps leave it. */
static void schema_floor_follows_contracting_steps(void **state)
{
    static const bool steps[] = {false, false, true, false, true, true};
    (void)state;
    assert_int_equal(store_schema_floor(steps, 6, 0, 0, 6), 4);
    assert_int_equal(store_schema_floor(steps, 6, 0, 0, 3), 2);
    assert_int_equal(store_schema_floor(steps, 6, 4, 4, 6), 4); /* expand-only: kept */
    assert_int_equal(store_schema_floor(steps, 6, 5, 5, 6), 5); /* never lowered */
    assert_int_equal(store_schema_floor(steps, 6, 2, 1, 4), 4);
    assert_int_equal(store_schema_floor(steps, 6, 6, 4, 6), 4); /* nothing to apply */
    assert_int_equal(store_schema_floor(steps, 6, 0, 0, 7), 7); /* out of range: strictest */
    assert_int_equal(store_schema_floor(steps, 6, -1, 0, 6), 6);
    assert_int_equal(store_schema_floor(steps, 6, INT32_MAX, 5, 6), 5);
    assert_kb(store_schema_gate_newer(7, 6, 6), KB_OK);
    assert_kb(store_schema_gate_newer(7, 5, 6), KB_OK);
    assert_kb(store_schema_gate_newer(7, 7, 6), KB_ERR_SCHEMA);
}

/* Step 6 (expand-only): a new database records floor 5 (the last contracting step), and deleting
 * a group finds the secrets it owns through secrets_by_owner_group, not a scan of secrets. */
static void step6_records_the_floor_and_indexes_owners(void **state)
{
    fx *f = *state;
    sqlite3 *db;
    sqlite3_stmt *s;
    bool indexed = false;
    assert_int_equal(kbtest_store_int(f->path, "SELECT version FROM schema_version"), 6);
    assert_int_equal(kbtest_store_int(f->path, "SELECT floor_version FROM schema_compat"), 5);
    if (kbtest_pg()) {
        assert_int_equal(kbtest_store_int(f->path,
                                          "SELECT count(*) FROM pg_indexes WHERE indexname = "
                                          "'secrets_by_owner_group'"),
                         1);
        return;
    }
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "EXPLAIN QUERY PLAN SELECT 1 FROM secrets WHERE "
                                        "owner_group_id = ?1",
                                        -1, &s, NULL),
                     SQLITE_OK);
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *d = (const char *)sqlite3_column_text(s, 3);
        if (d != NULL && strstr(d, "secrets_by_owner_group") != NULL)
            indexed = true;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    assert_true(indexed);
}

/* Set the database's version and its compat floor as a newer binary's migration would have
 * (schema_compat made here where this binary's steps do not have it yet). */
static void set_schema(fx *f, int version, int compat)
{
    char sql[400];
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS schema_compat(id bigint PRIMARY KEY CHECK (id = 1), "
             "floor_version bigint NOT NULL); DELETE FROM schema_compat; "
             "INSERT INTO schema_compat(id, floor_version) VALUES (1, %d); "
             "UPDATE schema_version SET version = %d",
             compat, version);
    raw_sql(f, sql);
    if (kbtest_pg()) /* made by the superuser: the store's role must read it */
        raw_sql(f, "ALTER TABLE schema_compat OWNER TO kb");
}

/* A rolling upgrade: a database one expand-only step ahead (floor at this binary's version) opens
 * and serves, data intact, and is never migrated down; one contracted past this binary (floor
 * above it) is refused, with or without migrate; a damaged floor is refused; a floor raised while
 * the store is open makes store_schema_version (/readyz) fail. */
static void migration_serves_newer_db_within_floor(void **state)
{
    fx *f = *state;
    store *st = NULL;
    store_opts o = opts_for(f);
    store_secret sec;
    int n = store_schema_version_supported(), v = 0;
    char two[300];
    int64_t id = 0;
    store_secret_new sn = {.name = "kept"};
    store_version_new vn = {.content_len = 4};

    assert_ok(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL));
    store_close(f->st);
    f->st = NULL;
    set_schema(f, n + 1, n);
    o.migrate = false;
    assert_ok(store_open(f->url, &o, &st));
    assert_ok(store_schema_version(st, &v));
    assert_int_equal(v, n + 1);
    assert_ok(store_secret_get(st, "kept", false, &sec));
    store_secret_clear(&sec);
    sn.name = "written-by-the-old-binary";
    assert_ok(store_secret_create(st, &sn, &vn, fake_seal, NULL, ADMIN, T0 + 1, &id, NULL));
    /* Contracted while this binary runs: /readyz's check fails from now on. */
    set_schema(f, n + 1, n + 1);
    assert_kb(store_schema_version(st, &v), KB_ERR_SCHEMA);
    set_schema(f, n + 1, n);
    assert_ok(store_schema_version(st, &v));
    store_close(st);
    st = NULL;
    /* migrate by this binary: nothing to do, nothing lowered. */
    o.migrate = true;
    assert_ok(store_open(f->url, &o, &st));
    store_close(st);
    st = NULL;
    assert_int_equal(kbtest_store_int(f->path, "SELECT version FROM schema_version"), n + 1);
    assert_int_equal(kbtest_store_int(f->path, "SELECT floor_version FROM schema_compat"), n);
    /* The largest version a database may hold, floor admitting this binary: served. */
    set_schema(f, INT32_MAX, n);
    assert_ok(store_open(f->url, &o, &st));
    store_close(st);
    st = NULL;
    /* Contracted past this binary: refused, either way. */
    set_schema(f, n + 2, n + 1);
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    assert_null(st);
    o.migrate = false;
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    /* A damaged floor: above the version, zero, or two rows. */
    set_schema(f, n + 1, n + 2);
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    set_schema(f, n + 1, 0);
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    set_schema(f, n + 1, n);
    snprintf(two, sizeof(two),
             "DROP TABLE schema_compat; CREATE TABLE schema_compat(id bigint PRIMARY KEY, "
             "floor_version bigint NOT NULL); INSERT INTO schema_compat VALUES (1, %d), (2, 1)",
             n);
    raw_sql(f, two);
    if (kbtest_pg())
        raw_sql(f, "ALTER TABLE schema_compat OWNER TO kb");
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    assert_null(st);
    /* Repaired, it opens again. */
    raw_sql(f, "DELETE FROM schema_compat WHERE id = 2");
    assert_ok(store_open(f->url, &o, &f->st));
}

/* ---- concurrency ---- */

typedef struct {
    store *st;
    int t;
    kb_err rc;
} worker;

static void *work(void *arg)
{
    worker *wk = arg;
    char name[64];
    store_secret_new sn = {0};
    store_version_new vn = {.content_len = 1};
    wk->rc = KB_OK;
    for (int i = 0; i < 25 && wk->rc == KB_OK; i++) {
        int64_t id = 0, v = 0;
        store_record *recs = NULL;
        size_t n = 0;
        snprintf(name, sizeof(name), "t%d-s%d", wk->t, i);
        sn.name = name;
        wk->rc = store_secret_create(wk->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL);
        if (wk->rc == KB_OK)
            wk->rc = store_version_add(wk->st, id, &vn, fake_seal, NULL, ADMIN, T0, &v, NULL);
        if (wk->rc == KB_OK && v != 2)
            wk->rc = KB_ERR_INTERNAL;
        if (wk->rc == KB_OK)
            wk->rc = store_secret_list(wk->st, false, &recs, &n);
        store_records_free(recs, n);
    }
    return NULL;
}

static void threads_share_one_store(void **state)
{
    fx *f = *state;
    pthread_t th[4];
    worker wk[4];
    store_record *recs = NULL;
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        wk[i].st = f->st;
        wk[i].t = i;
        assert_int_equal(pthread_create(&th[i], NULL, work, &wk[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_ok(wk[i].rc);
    }
    assert_ok(store_secret_list(f->st, false, &recs, &n));
    assert_int_equal(n, 100);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(recs[i].secret.latest_version, 2);
    store_records_free(recs, n);
}

/* ---- crash writer mode ---- */

static int crash_writer(const char *path)
{
    char url[1100], name[64];
    kb_secret *key = NULL;
    store *st = NULL;
    store_opts o = {0};
    store_version_new vn = {.content_len = 4, .metadata = "{\"w\":\"1\"}"};
    store_secret_new sn = {0};

    snprintf(url, sizeof(url), "sqlite:%s", path);
    if (make_key(&key) != KB_OK)
        return 2;
    o.row_mac_key = key;
    if (store_open(url, &o, &st) != KB_OK)
        return 2;
    for (int i = 0; i < 500; i++) {
        int64_t id = 0;
        snprintf(name, sizeof(name), "crash-%d-%d", (int)getpid(), i);
        sn.name = name;
        if (store_secret_create(st, &sn, &vn, fake_seal, NULL, "bootstrap", T0, &id, NULL) != KB_OK)
            return 3;
        /* Acknowledge only after the commit returned. */
        printf("%lld\n", (long long)id);
        fflush(stdout);
    }
    store_close(st);
    kb_secret_free(key);
    return 0;
}

int main(void)
{
    const char *cw = getenv("KB_CRASH_WRITER");
    if (cw != NULL && cw[0] != '\0')
        return crash_writer(cw);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(open_refuses_bad_urls_and_options, setup, teardown),
        cmocka_unit_test_setup_teardown(database_file_is_private_and_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(notify_sent_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(client_reads_follow_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(batch_get, setup, teardown),
        cmocka_unit_test_setup_teardown(reads_through_several_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(versions_only_go_up, setup, teardown),
        cmocka_unit_test_setup_teardown(validation_and_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(cloud_sync_needs_content_and_short_app_names, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cloud_flag_derived_from_spiffe_id, setup, teardown),
        cmocka_unit_test_setup_teardown(soft_delete_restore_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(groups_and_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(fetch_log_seen_stale_expiring, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_flip_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_change_spiffe_id, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_insert_membership, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_copy_grant, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_secret_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_version_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_latest_version, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_key_refuses_the_database, setup, teardown),
        cmocka_unit_test_setup_teardown(migration_upgrades_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(migration_macs_existing_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(migration_refuses_newer_db, setup, teardown),
        cmocka_unit_test_setup_teardown(migration_serves_newer_db_within_floor, setup, teardown),
        cmocka_unit_test_setup_teardown(step6_records_the_floor_and_indexes_owners, setup,
                                        teardown),
        cmocka_unit_test(schema_floor_follows_contracting_steps),
        cmocka_unit_test_setup_teardown(threads_share_one_store, setup, teardown),
    };
    /* On PostgreSQL (KB_TEST_STORE=pg): everything but the tests of SQLite's file, its URL
     * forms and its hand-built old databases (test_store_pg covers PostgreSQL's). */
    const struct CMUnitTest pg_tests[] = {
        cmocka_unit_test_setup_teardown(notify_sent_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(client_reads_follow_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(batch_get, setup, teardown),
        cmocka_unit_test_setup_teardown(reads_through_several_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(versions_only_go_up, setup, teardown),
        cmocka_unit_test_setup_teardown(validation_and_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(cloud_sync_needs_content_and_short_app_names, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cloud_flag_derived_from_spiffe_id, setup, teardown),
        cmocka_unit_test_setup_teardown(soft_delete_restore_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(groups_and_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(fetch_log_seen_stale_expiring, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_flip_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_change_spiffe_id, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_insert_membership, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_copy_grant, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_secret_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_version_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(tamper_latest_version, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_key_refuses_the_database, setup, teardown),
        cmocka_unit_test_setup_teardown(migration_refuses_newer_db, setup, teardown),
        cmocka_unit_test_setup_teardown(migration_serves_newer_db_within_floor, setup, teardown),
        cmocka_unit_test_setup_teardown(step6_records_the_floor_and_indexes_owners, setup,
                                        teardown),
        cmocka_unit_test(schema_floor_follows_contracting_steps),
        cmocka_unit_test_setup_teardown(threads_share_one_store, setup, teardown),
    };
    if (kbtest_pg())
        return cmocka_run_group_tests(pg_tests, NULL, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
