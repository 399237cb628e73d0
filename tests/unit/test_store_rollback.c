/* test_store_rollback.c - the store's rollback check (docs/internals/rollback.md): older rows
 * copied back into the database file with their old, valid row MACs (a removed membership or
 * grant, a disabled client, a demoted admin, cloud_sync turned off, a soft-deleted secret), a
 * whole database restored from an older copy, and an older state row written back while running,
 * are all refused; a crash between commit and commitment update, a commitment that does not
 * exist yet, and another handle's (process's) writes are accepted. The attacker is played by
 * plain SQLite connections on the database file; the commitment (the token's counter in
 * keybridged) by a counter in this test.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kbtest.h"
#include "kbtest_store.h"
#include "lib/err.h"
#include "lib/secbuf.h"
#include "server/store.h"

#define T0 1700000000

static const char *const prefixes[] = {"/lambda/", NULL};
static const char *ADMIN = "spiffe://example.org/admin";

/* The external commitment: what the token's counter is to keybridged. */
typedef struct {
    uint64_t v;
    bool exists;
    kb_err fail; /* != KB_OK: every call fails with it (token unreachable) */
    int reads, advances;
} ctr;

static kb_err ctr_read(void *ctx, uint64_t *out)
{
    ctr *c = ctx;
    c->reads++;
    if (c->fail != KB_OK)
        return c->fail;
    if (!c->exists)
        return KB_ERR_NOT_FOUND;
    *out = c->v;
    return KB_OK;
}

static kb_err ctr_advance(void *ctx, uint64_t to)
{
    ctr *c = ctx;
    c->advances++;
    if (c->fail != KB_OK)
        return c->fail;
    if (!c->exists || to > c->v)
        c->v = to;
    c->exists = true;
    return KB_OK;
}

typedef struct {
    char *dir;
    char path[512], url[600], old[600];
    kb_secret *key;
    ctr c;
    store_commitment sc;
    store *st;
    int64_t g, g2, api, fn, admin2, s_local, s_cloud, s_gone;
} fx;

static kb_err fake_seal(void *ctx, int64_t id, int64_t version, store_envelope *env,
                        uint8_t checksum[STORE_CHECKSUM_LEN])
{
    (void)ctx;
    (void)id;
    (void)version;
    env->wrapped_key = (uint8_t *)strdup("wk");
    env->wrapped_key_len = 2;
    env->sealed = (uint8_t *)strdup("sealed");
    env->sealed_len = 6;
    env->key_id = strdup("master-1");
    memset(checksum, 7, STORE_CHECKSUM_LEN);
    return KB_OK;
}

static store_opts opts_for(fx *f)
{
    store_opts o = {
        .row_mac_key = f->key, .cloud_prefixes = prefixes, .commitment = &f->sc, .migrate = true};
    return o;
}

static void reopen(fx *f, kb_err want)
{
    store_opts o = opts_for(f);
    store_close(f->st);
    f->st = NULL;
    assert_kb(store_open(f->url, &o, &f->st), want);
}

static int64_t mk_client(fx *f, const char *id, bool admin)
{
    store_client_new c = {.spiffe_id = id, .enabled = true, .admin = admin};
    int64_t out = 0;
    assert_ok(store_client_create(f->st, &c, "bootstrap", T0, &out, NULL));
    return out;
}

static int64_t mk_secret(fx *f, const char *name, bool cloud)
{
    store_secret_new s = {.name = name, .cloud_sync = cloud};
    store_version_new v = {.content_len = 6};
    int64_t id = 0;
    assert_ok(store_secret_create(f->st, &s, &v, fake_seal, NULL, "bootstrap", T0, &id, NULL));
    return id;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    uint8_t k[32];
    store_opts o;
    f->dir = kbtest_tmpdir();
    snprintf(f->path, sizeof(f->path), "%s/store.db", f->dir);
    if (kbtest_store_url(f->url, sizeof(f->url), f->path) != 0)
        return -1;
    snprintf(f->old, sizeof(f->old), "%s/old.db", f->dir);
    for (size_t i = 0; i < sizeof(k); i++)
        k[i] = (uint8_t)(i * 5 + 3);
    if (kb_secret_from(k, sizeof(k), &f->key) != KB_OK)
        return -1;
    f->sc.read = ctr_read;
    f->sc.advance = ctr_advance;
    f->sc.ctx = &f->c;
    o = opts_for(f);
    if (store_open(f->url, &o, &f->st) != KB_OK)
        return -1;
    /* The world: api and a cloud function in "payments", which may read db-pass and api-key
     * (cloud_sync); a second admin; a secret that will be soft-deleted. */
    assert_ok(store_group_create(f->st, "payments", NULL, "bootstrap", T0, &f->g, NULL));
    assert_ok(store_group_create(f->st, "other", NULL, "bootstrap", T0, &f->g2, NULL));
    f->api = mk_client(f, "spiffe://example.org/ns/payments/sa/api", false);
    f->fn = mk_client(f, "spiffe://example.org/lambda/acct/1/fn/report", false);
    f->admin2 = mk_client(f, ADMIN, true);
    f->s_local = mk_secret(f, "db-pass", false);
    f->s_cloud = mk_secret(f, "api-key", true);
    f->s_gone = mk_secret(f, "old-key", false);
    assert_ok(store_membership_add(f->st, f->api, f->g, NULL));
    assert_ok(store_membership_add(f->st, f->fn, f->g, NULL));
    assert_ok(store_grant_add(f->st, f->g, f->s_local, NULL));
    assert_ok(store_grant_add(f->st, f->g, f->s_cloud, NULL));
    assert_ok(store_grant_add(f->st, f->g, f->s_gone, NULL));
    *state = f;
    return 0;
}

static void unlink_db(const char *path)
{
    char p[700];
    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
}

static int teardown(void **state)
{
    fx *f = *state;
    store_close(f->st);
    kb_secret_free(f->key);
    unlink_db(f->path);
    unlink_db(f->old);
    rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* The attacker: plain SQL on the database file (foreign keys off, as sqlite3 opens it). */
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

static int64_t raw_int(fx *f, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    int64_t v;
    if (kbtest_pg())
        return kbtest_pg_int(sql);
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* A copy of the database as it is now (the attacker's backup). */
/* PostgreSQL: the snapshot is a copy of every table in schema "old" of the same database. */
static const char *const pg_tables[] = {
    "schema_version", "groups",           "clients",     "secrets",      "versions",
    "memberships",    "grants",           "fetch_log",   "audit_log",    "audit_anchors",
    "store_state",    "store_generation", "notify_sent", "schema_compat"};

static void snapshot(fx *f)
{
    char sql[800];
    if (kbtest_pg()) {
        raw_sql(f, "DROP SCHEMA IF EXISTS old CASCADE; CREATE SCHEMA old");
        for (size_t i = 0; i < sizeof(pg_tables) / sizeof(pg_tables[0]); i++) {
            snprintf(sql, sizeof(sql), "CREATE TABLE old.%s AS TABLE public.%s", pg_tables[i],
                     pg_tables[i]);
            raw_sql(f, sql);
        }
        return;
    }
    unlink_db(f->old);
    snprintf(sql, sizeof(sql), "VACUUM INTO '%s'", f->old);
    raw_sql(f, sql);
}

/* Copy rows of the snapshot back over the current ones, with their old MACs. */
static void replay(fx *f, const char *table, const char *where)
{
    char sql[1200];
    if (kbtest_pg()) {
        /* INSERT OR REPLACE: the rows the old ones collide with (by primary key) go first. */
        const char *pk = strcmp(table, "memberships") == 0 ? "client_id, group_id"
                         : strcmp(table, "grants") == 0    ? "group_id, secret_id"
                                                           : "id";
        snprintf(sql, sizeof(sql),
                 "DELETE FROM public.%s WHERE (%s) IN (SELECT %s FROM old.%s WHERE %s); "
                 "INSERT INTO public.%s SELECT * FROM old.%s WHERE %s",
                 table, pk, pk, table, where, table, table, where);
        raw_sql(f, sql);
        return;
    }
    snprintf(sql, sizeof(sql),
             "ATTACH '%s' AS old; INSERT OR REPLACE INTO main.%s SELECT * FROM old.%s WHERE %s;",
             f->old, table, table, where);
    raw_sql(f, sql);
}

static bool can_read(fx *f, int64_t client, const char *name)
{
    store_record r;
    kb_err rc = store_readable_get(f->st, client, name, 0, &r);
    if (rc == KB_OK)
        store_record_clear(&r);
    return rc == KB_OK;
}

static bool is_admin(fx *f, int64_t client)
{
    store_client c;
    bool a;
    assert_ok(store_client_get_by_id(f->st, client, &c));
    a = c.admin && c.enabled;
    store_client_clear(&c);
    return a;
}

/* ---- replay of single rows, each revocation in turn ---- */

enum { R_MEMBERSHIP, R_GRANT, R_DISABLED, R_DEMOTED, R_CLOUD_OFF, R_DELETED, R__COUNT };
static const char *const case_names[] = {"membership",    "grant",          "disabled client",
                                         "demoted admin", "cloud_sync off", "soft delete"};

static void revoke_one(fx *f, int which)
{
    store_client_patch cp = STORE_CLIENT_PATCH_INIT;
    store_secret_patch sp = STORE_SECRET_PATCH_INIT;
    switch (which) {
    case R_MEMBERSHIP:
        assert_ok(store_membership_remove(f->st, f->api, f->g, NULL));
        break;
    case R_GRANT:
        assert_ok(store_grant_remove(f->st, f->g, f->s_local, NULL));
        break;
    case R_DISABLED:
        cp.enabled = 0;
        assert_ok(store_client_update(f->st, f->api, &cp, NULL));
        break;
    case R_DEMOTED:
        cp.admin = 0;
        assert_ok(store_client_update(f->st, f->admin2, &cp, NULL));
        break;
    case R_CLOUD_OFF:
        sp.cloud_sync = 0;
        assert_ok(store_secret_update(f->st, f->s_cloud, &sp, ADMIN, T0 + 1, NULL));
        break;
    default:
        assert_ok(store_secret_delete(f->st, f->s_gone, ADMIN, T0 + 1, NULL));
    }
}

/* Access as it was before the revocation: true when the replay brought it back. */
static bool restored(fx *f, int which)
{
    switch (which) {
    case R_MEMBERSHIP:
    case R_GRANT:
        return can_read(f, f->api, "db-pass");
    case R_DISABLED: {
        store_client c;
        bool en;
        assert_ok(store_client_get_by_id(f->st, f->api, &c));
        en = c.enabled;
        store_client_clear(&c);
        return en;
    }
    case R_DEMOTED:
        return is_admin(f, f->admin2);
    case R_CLOUD_OFF:
        return can_read(f, f->fn, "api-key");
    default:
        return can_read(f, f->api, "old-key");
    }
}

static void do_replay(fx *f, int which)
{
    char w[64];
    switch (which) {
    case R_MEMBERSHIP:
        snprintf(w, sizeof(w), "client_id = %lld", (long long)f->api);
        replay(f, "memberships", w);
        break;
    case R_GRANT:
        snprintf(w, sizeof(w), "secret_id = %lld", (long long)f->s_local);
        replay(f, "grants", w);
        break;
    case R_DISABLED:
        snprintf(w, sizeof(w), "id = %lld", (long long)f->api);
        replay(f, "clients", w);
        break;
    case R_DEMOTED:
        snprintf(w, sizeof(w), "id = %lld", (long long)f->admin2);
        replay(f, "clients", w);
        break;
    case R_CLOUD_OFF:
        snprintf(w, sizeof(w), "id = %lld", (long long)f->s_cloud);
        replay(f, "secrets", w);
        break;
    default:
        snprintf(w, sizeof(w), "id = %lld", (long long)f->s_gone);
        replay(f, "secrets", w);
    }
}

/* After a restart: the replayed database is refused as a whole. */
static void replayed_rows_are_refused_at_start(void **state)
{
    fx *f = *state;
    for (int which = 0; which < R__COUNT; which++) {
        print_message("case: %s\n", case_names[which]);
        if (which > 0) {
            teardown(state);
            *state = NULL;
            if (setup(state) != 0 || (f = *state) == NULL) {
                fail_msg("set-up for case %s failed", case_names[which]);
                return;
            }
        }
        assert_true(restored(f, which));
        snapshot(f);
        revoke_one(f, which);
        assert_false(restored(f, which));
        store_close(f->st);
        f->st = NULL;
        do_replay(f, which);
        reopen(f, KB_ERR_INTEGRITY);
        assert_null(f->st);
        /* Removing the state row as well does not help the attacker. */
        raw_sql(f, "DELETE FROM store_state");
        reopen(f, KB_ERR_INTEGRITY);
    }
}

/* While running: the periodic check (store_verify) catches a replayed row and from then on
 * nothing is served. */
static void replayed_rows_are_refused_while_running(void **state)
{
    fx *f = *state;
    for (int which = 0; which < R__COUNT; which++) {
        store_record *recs = NULL;
        size_t n = 0;
        store_client c;
        print_message("case: %s\n", case_names[which]);
        if (which > 0) {
            teardown(state);
            *state = NULL;
            if (setup(state) != 0 || (f = *state) == NULL) {
                fail_msg("set-up for case %s failed", case_names[which]);
                return;
            }
        }
        snapshot(f);
        revoke_one(f, which);
        assert_ok(store_verify(f->st));
        do_replay(f, which);
        assert_kb(store_verify(f->st), KB_ERR_UNAVAILABLE);
        assert_kb(store_health(f->st), KB_ERR_UNAVAILABLE);
        assert_kb(store_client_get_by_id(f->st, f->api, &c), KB_ERR_UNAVAILABLE);
        assert_kb(store_readable_list(f->st, f->api, &recs, &n), KB_ERR_UNAVAILABLE);
        assert_false(can_read(f, f->api, "db-pass"));
        assert_false(can_read(f, f->fn, "api-key"));
        assert_kb(store_membership_add(f->st, f->api, f->g2, NULL), KB_ERR_UNAVAILABLE);
    }
}

/* ---- whole-database restore ---- */

static void older_database_is_refused(void **state)
{
    fx *f = *state;
    uint64_t before;
    snapshot(f);
    assert_ok(store_membership_remove(f->st, f->api, f->g, NULL));
    before = f->c.v;
    assert_true(before >= 2);
    store_close(f->st);
    f->st = NULL;
    /* The older copy replaces the database (the -wal goes with it). */
    if (kbtest_pg()) {
        for (size_t i = 0; i < sizeof(pg_tables) / sizeof(pg_tables[0]); i++) {
            char sql[300];
            snprintf(sql, sizeof(sql), "DELETE FROM public.%s; INSERT INTO public.%s TABLE old.%s",
                     pg_tables[i], pg_tables[i], pg_tables[i]);
            raw_sql(f, sql);
        }
    } else {
        unlink_db(f->path);
        assert_int_equal(rename(f->old, f->path), 0);
    }
    reopen(f, KB_ERR_INTEGRITY);
    assert_true(f->c.v == before); /* never lowered */
    /* With the commitment, the current database still opens (not a false alarm). */
}

/* A state row from earlier written back while running (a whole-file swap looks the same to the
 * reader): the next read sees its counter below the highest seen, and service stops. */
static void older_state_row_while_running(void **state)
{
    fx *f = *state;
    store_client c;
    snapshot(f);
    assert_ok(store_grant_remove(f->st, f->g, f->s_local, NULL));
    assert_ok(store_client_get_by_id(f->st, f->api, &c));
    store_client_clear(&c);
    if (kbtest_pg()) {
        raw_sql(f, "DELETE FROM store_state; INSERT INTO store_state TABLE old.store_state; "
                   "DELETE FROM grants; INSERT INTO grants TABLE old.grants");
    } else {
        char sql[900];
        snprintf(sql, sizeof(sql),
                 "ATTACH '%s' AS old; DELETE FROM main.store_state; "
                 "INSERT INTO main.store_state SELECT * FROM old.store_state; "
                 "INSERT OR REPLACE INTO main.grants SELECT * FROM old.grants;",
                 f->old);
        raw_sql(f, sql);
    }
    assert_kb(store_client_get_by_id(f->st, f->api, &c), KB_ERR_UNAVAILABLE);
    assert_false(can_read(f, f->api, "db-pass"));
    assert_kb(store_health(f->st), KB_ERR_UNAVAILABLE);
}

/* ---- what must keep working ---- */

static void crash_between_commit_and_advance_rolls_forward(void **state)
{
    fx *f = *state;
    int64_t dbc = raw_int(f, "SELECT counter FROM store_state");
    assert_int_equal((int64_t)f->c.v, dbc);
    /* The commit landed, the token update did not (kill -9 between the two). */
    f->c.v = (uint64_t)dbc - 1;
    reopen(f, KB_OK);
    assert_int_equal((int64_t)f->c.v, dbc);
    assert_true(can_read(f, f->api, "db-pass"));
    /* A commitment that does not exist yet (first start after the upgrade) is created. */
    f->c.exists = false;
    f->c.v = 0;
    reopen(f, KB_OK);
    assert_true(f->c.exists);
    assert_int_equal((int64_t)f->c.v, dbc);
}

static void another_handle_writes_are_accepted(void **state)
{
    fx *f = *state;
    store *cli = NULL;
    store_opts o = opts_for(f);
    uint64_t before = f->c.v;
    /* keybridge --local: another process, its own handle on the same file and token. */
    assert_ok(store_open(f->url, &o, &cli));
    assert_ok(store_membership_remove(cli, f->api, f->g, NULL));
    assert_ok(store_secret_delete(cli, f->s_gone, ADMIN, T0 + 2, NULL));
    store_close(cli);
    assert_int_equal(f->c.v, before + 2);
    assert_false(can_read(f, f->api, "db-pass"));
    assert_ok(store_verify(f->st));
    assert_ok(store_membership_add(f->st, f->api, f->g, NULL));
    assert_true(can_read(f, f->api, "db-pass"));
    assert_int_equal(f->c.v, before + 3);
    reopen(f, KB_OK);
}

static void one_advance_per_write_none_per_read(void **state)
{
    fx *f = *state;
    store_record *recs = NULL;
    size_t n = 0;
    int a = f->c.advances, r = f->c.reads;
    int64_t dbc = raw_int(f, "SELECT counter FROM store_state");
    assert_ok(store_grant_remove(f->st, f->g, f->s_cloud, NULL));
    assert_int_equal(f->c.advances, a + 1);
    assert_int_equal(raw_int(f, "SELECT counter FROM store_state"), dbc + 1);
    for (int i = 0; i < 10; i++) {
        assert_ok(store_readable_list(f->st, f->api, &recs, &n));
        store_records_free(recs, n);
        assert_true(can_read(f, f->api, "db-pass"));
    }
    assert_int_equal(f->c.advances, a + 1);
    assert_int_equal(f->c.reads, r);
    /* A failed write moves nothing. */
    assert_kb(store_grant_remove(f->st, f->g, f->s_cloud, NULL), KB_ERR_NOT_FOUND);
    assert_int_equal(f->c.advances, a + 1);
    assert_int_equal(raw_int(f, "SELECT counter FROM store_state"), dbc + 1);
    /* Purge removes grants by cascade: they leave the digest too. */
    assert_ok(store_secret_delete(f->st, f->s_gone, ADMIN, T0 + 1, NULL));
    assert_ok(store_secret_purge(f->st, f->s_gone, NULL));
    assert_ok(store_client_delete(f->st, f->fn, NULL));
    assert_ok(store_group_delete(f->st, f->g2, NULL));
    assert_ok(store_verify(f->st));
    reopen(f, KB_OK);
}

static void token_outage_keeps_serving_and_catches_up(void **state)
{
    fx *f = *state;
    int64_t dbc;
    f->c.fail = KB_ERR_HSM;
    assert_ok(store_membership_remove(f->st, f->fn, f->g, NULL)); /* committed; advance failed */
    assert_kb(store_verify(f->st), KB_ERR_HSM);                   /* cannot check: not a rollback */
    assert_ok(store_health(f->st));
    assert_true(can_read(f, f->api, "db-pass"));
    f->c.fail = KB_OK;
    dbc = raw_int(f, "SELECT counter FROM store_state");
    assert_true((int64_t)f->c.v < dbc);
    assert_ok(store_verify(f->st)); /* rolled forward */
    assert_int_equal((int64_t)f->c.v, dbc);
    /* Start-up with the token unreachable is refused (cannot tell how new the database must
     * be). */
    f->c.fail = KB_ERR_HSM;
    reopen(f, KB_ERR_HSM);
    f->c.fail = KB_OK;
    reopen(f, KB_OK);
}

static void forged_or_deleted_rows_are_refused_at_start(void **state)
{
    fx *f = *state;
    char sql[200];
    /* A membership with a made-up MAC, and a removed grant. */
    snprintf(sql, sizeof(sql),
             "INSERT INTO memberships(client_id, group_id, mac) VALUES (%lld, %lld, zeroblob(32))",
             (long long)f->admin2, (long long)f->g);
    if (kbtest_pg())
        snprintf(sql, sizeof(sql),
                 "INSERT INTO memberships(client_id, group_id, mac) VALUES (%lld, %lld, "
                 "decode(repeat('00', 32), 'hex'))",
                 (long long)f->admin2, (long long)f->g);
    raw_sql(f, sql);
    reopen(f, KB_ERR_INTEGRITY);
    raw_sql(f, kbtest_pg() ? "DELETE FROM memberships WHERE mac = decode(repeat('00', 32), 'hex')"
                           : "DELETE FROM memberships WHERE mac = zeroblob(32)");
    reopen(f, KB_OK);
    raw_sql(f, kbtest_pg() ? "DELETE FROM grants WHERE ctid = (SELECT min(ctid) FROM grants)"
                           : "DELETE FROM grants WHERE rowid = (SELECT min(rowid) FROM grants)");
    reopen(f, KB_ERR_INTEGRITY);
}

/* Back to schema 2: no state row (step 3), no version MACs (step 4), no notify_sent (step 5), no
 * schema_compat nor owner index (step 6). */
#define TO_SCHEMA_2                                                                                \
    "DROP TABLE notify_sent; DROP TABLE store_state; ALTER TABLE versions DROP COLUMN mac; "       \
    "ALTER TABLE secrets DROP COLUMN latest_mac; DROP TABLE schema_compat; "                       \
    "DROP INDEX secrets_by_owner_group; UPDATE schema_version SET version = 2"

static void migration_adds_the_state_row(void **state)
{
    fx *f = *state;
    /* A database from before the state row (schema 2). */
    store_close(f->st);
    f->st = NULL;
    raw_sql(f, TO_SCHEMA_2);
    f->c.exists = false;
    f->c.v = 0;
    reopen(f, KB_OK);
    assert_int_equal(raw_int(f, "SELECT counter FROM store_state"), 1);
    assert_int_equal((int64_t)f->c.v, 1);
    assert_true(can_read(f, f->api, "db-pass"));
    /* The same trick once the token has a commitment: the migration's counter is below it. */
    assert_ok(store_membership_remove(f->st, f->fn, f->g, NULL));
    store_close(f->st);
    f->st = NULL;
    raw_sql(f, TO_SCHEMA_2);
    reopen(f, KB_ERR_INTEGRITY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(replayed_rows_are_refused_at_start, setup, teardown),
        cmocka_unit_test_setup_teardown(replayed_rows_are_refused_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(older_database_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(older_state_row_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(crash_between_commit_and_advance_rolls_forward, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(another_handle_writes_are_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(one_advance_per_write_none_per_read, setup, teardown),
        cmocka_unit_test_setup_teardown(token_outage_keeps_serving_and_catches_up, setup, teardown),
        cmocka_unit_test_setup_teardown(forged_or_deleted_rows_are_refused_at_start, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(migration_adds_the_state_row, setup, teardown),
    };
    /* PostgreSQL (KB_TEST_STORE=pg): all but the SQLite schema-2 migration. */
    const struct CMUnitTest pg_tests[] = {
        cmocka_unit_test_setup_teardown(replayed_rows_are_refused_at_start, setup, teardown),
        cmocka_unit_test_setup_teardown(replayed_rows_are_refused_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(older_database_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(older_state_row_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(crash_between_commit_and_advance_rolls_forward, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(another_handle_writes_are_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(one_advance_per_write_none_per_read, setup, teardown),
        cmocka_unit_test_setup_teardown(token_outage_keeps_serving_and_catches_up, setup, teardown),
        cmocka_unit_test_setup_teardown(forged_or_deleted_rows_are_refused_at_start, setup,
                                        teardown),
    };
    if (kbtest_pg())
        return cmocka_run_group_tests(pg_tests, NULL, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
