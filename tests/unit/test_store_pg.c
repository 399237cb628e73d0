/* test_store_pg.c - what only the PostgreSQL backend has (store_pg.c): the URL and password
 * rules, explicit migrations, the refusal of an older or newer schema, and reconnecting after
 * the database dropped the connections. The shared behaviour runs in test_store,
 * test_store_rollback, test_audit and test_store_threads under KB_TEST_STORE=pg (ctest's unit-pg
 * entries); the server restart through keybridged is integration/test_keybridged_pg.
 *
 * Without KB_TEST_STORE=pg only the checks that need no server run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kbtest.h"
#include "lib/log.h"
#include "kbtest_store.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/secbuf.h"
#include "server/audit.h"
#include "server/store.h"
#include "server/store_impl.h"
#include "server/store_sql.h"

#define ADMIN "spiffe://example.org/ns/ops/sa/admin"
#define T0 1700000000

typedef struct {
    char *dir;
    char url[1024];
    kb_secret *key;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    uint8_t k[32];
    memset(k, 0x42, sizeof(k));
    f->dir = kbtest_tmpdir();
    if (kb_secret_from(k, sizeof(k), &f->key) != KB_OK)
        return -1;
    if (kbtest_pg() && kbtest_store_url(f->url, sizeof(f->url), "unused") != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    kb_secret_free(f->key);
    rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static store_opts opts(fx *f, bool migrate)
{
    store_opts o = {.row_mac_key = f->key, .migrate = migrate};
    return o;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    assert_int_equal(chmod(path, mode), 0);
}

/* No server needed: everything here is refused before connecting, or cannot connect. */
static void url_and_password_rules(void **state)
{
    fx *f = *state;
    store *st = NULL;
    store_opts o = opts(f, true);
    char pf[600], url[800];
    time_t t0;

    /* A password in the URL, in either form, and PGPASSWORD, are refused. */
    assert_kb(store_open("postgresql://kb:secret@127.0.0.1:1/kb", &o, &st), KB_ERR_CONFIG);
    assert_kb(store_open("postgresql://kb@127.0.0.1:1/kb?password=secret", &o, &st), KB_ERR_CONFIG);
    assert_int_equal(setenv("PGPASSWORD", "secret", 1), 0);
    assert_kb(store_open("postgresql://kb@127.0.0.1:1/kb", &o, &st), KB_ERR_CONFIG);
    assert_int_equal(unsetenv("PGPASSWORD"), 0);
    /* Not a URI libpq accepts (an unknown parameter). */
    assert_kb(store_open("postgresql://kb@127.0.0.1:1/kb?nosuch=1", &o, &st), KB_ERR_CONFIG);
    assert_kb(store_open("postgresql:", &o, &st), KB_ERR_CONFIG);
    /* A passfile anyone else can read is refused; a missing one too. */
    snprintf(pf, sizeof(pf), "%s/pgpass", f->dir);
    write_file(pf, "127.0.0.1:*:*:kb:secret\n", 0644);
    snprintf(url, sizeof(url), "postgresql://kb@127.0.0.1:1/kb?passfile=%s", pf);
    assert_kb(store_open(url, &o, &st), KB_ERR_CONFIG);
    assert_int_equal(setenv("PGPASSFILE", pf, 1), 0);
    assert_kb(store_open("postgresql://kb@127.0.0.1:1/kb", &o, &st), KB_ERR_CONFIG);
    assert_int_equal(unsetenv("PGPASSFILE"), 0);
    snprintf(url, sizeof(url), "postgresql://kb@127.0.0.1:1/kb?passfile=%s/none", f->dir);
    assert_kb(store_open(url, &o, &st), KB_ERR_CONFIG);
    /* A 0600 one passes the checks; nothing listens on port 1: a database error, quickly. */
    assert_int_equal(chmod(pf, 0600), 0);
    snprintf(url, sizeof(url), "postgresql://kb@127.0.0.1:1/kb?passfile=%s&sslmode=disable", pf);
    t0 = time(NULL);
    assert_kb(store_open(url, &o, &st), KB_ERR_DB);
    assert_true(time(NULL) - t0 < 10);
    /* key=value connection strings work too. */
    snprintf(url, sizeof(url), "postgresql:host=127.0.0.1 port=1 user=kb passfile=%s", pf);
    assert_kb(store_open(url, &o, &st), KB_ERR_DB);
    assert_null(st);
    unlink(pf);
}

static kb_err fake_seal(void *ctx, int64_t id, int64_t version, store_envelope *env,
                        uint8_t checksum[STORE_CHECKSUM_LEN])
{
    (void)ctx;
    (void)id;
    (void)version;
    env->wrapped_key = malloc(4);
    env->sealed = malloc(8);
    env->key_id = strdup("k1");
    if (env->wrapped_key == NULL || env->sealed == NULL || env->key_id == NULL)
        return KB_ERR_NOMEM;
    memset(env->wrapped_key, 1, 4);
    env->wrapped_key_len = 4;
    memset(env->sealed, 2, 8);
    env->sealed_len = 8;
    memset(checksum, 3, STORE_CHECKSUM_LEN);
    return KB_OK;
}

static int64_t mk_secret(store *st, const char *name)
{
    store_secret_new sn = {.name = name};
    store_version_new vn = {.content_len = 4};
    int64_t id = 0;
    assert_ok(store_secret_create(st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL));
    return id;
}

/* serve never migrates: an empty or older database is refused until `keybridged migrate`
 * (store_opts.migrate) ran; a newer one always. */
static void migrations_are_explicit(void **state)
{
    fx *f = *state;
    store *st = NULL;
    store_opts o = opts(f, false);
    store_secret sec;
    int v = 0;

    if (!kbtest_pg())
        skip();
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    assert_null(st);
    o.migrate = true;
    assert_ok(store_open(f->url, &o, &st));
    assert_ok(store_schema_version(st, &v));
    assert_int_equal(v, store_schema_version_supported());
    assert_int_equal(store_pg_ops.schema_version, store_sqlite_ops.schema_version);
    mk_secret(st, "kept");
    store_close(st);
    st = NULL;
    /* Back to step 4 (what an older binary wrote): refused, then migrated, data kept. */
    assert_int_equal(kbtest_pg_sql("DROP TABLE notify_sent; DROP TABLE schema_compat; "
                                   "DROP INDEX secrets_by_owner_group; "
                                   "UPDATE schema_version SET version = 4"),
                     0);
    o.migrate = false;
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    o.migrate = true;
    assert_ok(store_open(f->url, &o, &st));
    assert_ok(store_secret_get(st, "kept", false, &sec));
    store_secret_clear(&sec);
    store_close(st);
    st = NULL;
    assert_int_equal(kbtest_pg_int("SELECT count(*) FROM notify_sent"), 0);
    /* A newer database: refused with or without migrate. */
    assert_int_equal(kbtest_pg_int("SELECT floor_version FROM schema_compat"),
                     store_schema_version_supported() - 1); /* step 6 is expand-only */
    assert_int_equal(kbtest_pg_sql("UPDATE schema_version SET version = 99; "
                                   "UPDATE schema_compat SET floor_version = 99"),
                     0);
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    o.migrate = false;
    assert_kb(store_open(f->url, &o, &st), KB_ERR_SCHEMA);
    assert_null(st);
}

/* The server dropped every connection (a restart, a failover): calls fail with KB_ERR_DB until
 * the connections are back, then everything works on the same data. */
static void reconnects_after_the_database_dropped_us(void **state)
{
    fx *f = *state;
    store *st = NULL;
    store_opts o = opts(f, true);
    store_record *recs = NULL;
    store_secret sec;
    size_t n = 0;
    kb_err rc = KB_ERR_DB;

    if (!kbtest_pg())
        skip();
    assert_ok(store_open(f->url, &o, &st));
    mk_secret(st, "before");
    assert_ok(store_secret_list(st, false, &recs, &n));
    store_records_free(recs, n);
    assert_int_equal(kbtest_pg_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE usename = 'kb' AND pid <> pg_backend_pid()"),
                     0);
    /* The first use of each dropped connection fails; within a few tries (one per connection,
     * retried after STORE_PG_RETRY_MS) all are back. */
    for (int i = 0; i < 60 && rc != KB_OK; i++) {
        rc = store_secret_get(st, "before", false, &sec);
        if (rc == KB_OK)
            store_secret_clear(&sec);
        else
            assert_int_equal(rc, KB_ERR_DB);
        if (rc != KB_OK)
            usleep(100 * 1000);
    }
    assert_ok(rc);
    rc = KB_ERR_DB;
    for (int i = 0; i < 60 && rc != KB_OK; i++) {
        int64_t id = 0;
        store_secret_new sn = {.name = "after"};
        store_version_new vn = {.content_len = 4};
        rc = store_secret_create(st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL);
        if (rc != KB_OK) {
            assert_int_equal(rc, KB_ERR_DB);
            usleep(100 * 1000);
        }
    }
    assert_ok(rc);
    for (int i = 0; i < 40; i++) { /* every reader reconnects in turn */
        rc = store_secret_list(st, false, &recs, &n);
        if (rc == KB_OK) {
            assert_int_equal(n, 2);
            store_records_free(recs, n);
        }
    }
    assert_ok(store_verify(st));
    store_close(st);
}

/* A replica that outlives a contracting migration: its connections pass the schema gate again
 * when they reconnect, so after the next reconnect every call fails (503) instead of running on a
 * schema it does not know; an expand-only step (floor at its version) lets it reconnect. */
static void reconnect_rechecks_the_schema_floor(void **state)
{
    fx *f = *state;
    store *st = NULL;
    store_opts o = opts(f, true);
    store_secret sec;
    char sql[400];
    int n = store_schema_version_supported();
    kb_err rc = KB_OK;

    if (!kbtest_pg())
        skip();
    assert_ok(store_open(f->url, &o, &st));
    mk_secret(st, "kept");
    snprintf(sql, sizeof(sql),
             "CREATE TABLE IF NOT EXISTS schema_compat(id bigint PRIMARY KEY CHECK (id = 1), "
             "floor_version bigint NOT NULL); ALTER TABLE schema_compat OWNER TO kb; "
             "DELETE FROM schema_compat; INSERT INTO schema_compat VALUES (1, %d); "
             "UPDATE schema_version SET version = %d",
             n + 1, n + 1);
    assert_int_equal(kbtest_pg_sql(sql), 0);
    assert_int_equal(kbtest_pg_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE usename = 'kb' AND pid <> pg_backend_pid()"),
                     0);
    /* Well past every connection's retry (STORE_PG_RETRY_MS): never served again. */
    for (int i = 0; i < 25; i++) {
        rc = store_secret_get(st, "kept", false, &sec);
        if (rc == KB_OK)
            store_secret_clear(&sec);
        assert_int_equal(rc, KB_ERR_DB);
        usleep(100 * 1000);
    }
    snprintf(sql, sizeof(sql), "UPDATE schema_compat SET floor_version = %d", n);
    assert_int_equal(kbtest_pg_sql(sql), 0);
    for (int i = 0; i < 60; i++) {
        rc = store_secret_get(st, "kept", false, &sec);
        if (rc == KB_OK) {
            store_secret_clear(&sec);
            break;
        }
        usleep(100 * 1000);
    }
    assert_ok(rc);
    store_close(st);
}

/* store_round_trips (keybridged_store_round_trips_total) counts every wait for the server: a
 * secret create is at least its INSERTs (BEGIN and the writers' advisory lock ride with the
 * first), the state delta and COMMIT; a read at least one. SQLite makes none. The exact counts
 * are pipeline_round_trips'. */
static void round_trips_are_counted(void **state)
{
    fx *f = *state;
    store *st = NULL;
    store_opts o = opts(f, true);
    store_secret sec;
    char path[600], url[1100];
    uint64_t a;

    if (!kbtest_pg()) {
        snprintf(path, sizeof(path), "%s/rt.db", f->dir);
        snprintf(url, sizeof(url), "sqlite:%s", path);
    } else {
        snprintf(url, sizeof(url), "%s", f->url);
    }
    assert_ok(store_open(url, &o, &st));
    a = store_round_trips(st);
    mk_secret(st, "counted");
    if (!kbtest_pg()) {
        assert_ok(store_secret_get(st, "counted", false, &sec));
        store_secret_clear(&sec);
        assert_int_equal(store_round_trips(st), 0);
        store_close(st);
        unlink(path);
        return;
    }
    assert_true(store_round_trips(st) - a >= 4);
    a = store_round_trips(st);
    assert_ok(store_secret_get(st, "counted", false, &sec));
    store_secret_clear(&sec);
    assert_true(store_round_trips(st) - a >= 1);
    assert_int_equal(store_round_trips(NULL), 0);
    store_close(st);
}

/* Two handles on one database (two replicas): a client row answered from the cache costs no
 * round trip, and a change made through the other handle reaches this one through the
 * notification, well within the state check's 1 s bound. */
static void client_cache_follows_other_replicas(void **state)
{
    fx *f = *state;
    store *a = NULL, *b = NULL;
    store_opts o = opts(f, true);
    store_client_new cn = {.spiffe_id = "spiffe://example.org/ns/cc/sa/one", .enabled = true};
    store_client_patch p = STORE_CLIENT_PATCH_INIT;
    store_client c;
    int64_t id = 0;
    uint64_t rt, gen;
    bool seen = false;

    if (!kbtest_pg())
        skip();
    assert_ok(store_open(f->url, &o, &a));
    assert_ok(store_open(f->url, &o, &b));
    assert_ok(store_client_create(b, &cn, ADMIN, T0, &id, NULL));
    for (int i = 0; i < 2; i++) { /* the first fills the cache */
        assert_ok(store_client_get(a, cn.spiffe_id, &c));
        assert_true(c.enabled);
        store_client_clear(&c);
    }
    rt = store_round_trips(a);
    assert_ok(store_client_get(a, cn.spiffe_id, &c));
    store_client_clear(&c);
    assert_int_equal(store_round_trips(a) - rt, 0);
    gen = store_generation(a);
    p.enabled = 0;
    assert_ok(store_client_update(b, id, &p, NULL));
    for (int i = 0; i < 40 && !seen; i++) { /* 200 ms */
        assert_ok(store_client_get(a, cn.spiffe_id, &c));
        seen = !c.enabled;
        store_client_clear(&c);
        if (!seen)
            usleep(5 * 1000);
    }
    assert_true(seen);
    assert_true(store_generation(a) > gen);
    /* Its own write is seen at once. */
    p.enabled = 1;
    assert_ok(store_client_update(a, id, &p, NULL));
    assert_ok(store_client_get(a, cn.spiffe_id, &c));
    assert_true(c.enabled);
    store_client_clear(&c);
    store_close(b);
    store_close(a);
}

/* Under `pgserver.py run --ssl` (KB_PG_CA set; the server takes TLS connections only): the
 * verify-full URL opens the store; a CA that did not sign the server's certificate, and no TLS,
 * are refused. */
static void tls_verify_full(void **state)
{
    fx *f = *state;
    store *st = NULL;
    store_opts o = opts(f, true);
    const char *ca = getenv("KB_PG_CA"), *other = "/etc/ssl/certs/ca-certificates.crt";
    char url[1400];
    const char *p;

    if (!kbtest_pg() || ca == NULL) {
        skip();
        return;
    }
    assert_non_null(strstr(f->url, "sslmode=verify-full"));
    assert_ok(store_open(f->url, &o, &st));
    mk_secret(st, "over-tls");
    store_close(st);
    st = NULL;
    /* The same URL with another trust anchor: the server's chain does not verify. */
    p = strstr(f->url, ca);
    assert_non_null(p);
    if (access(other, R_OK) == 0) {
        snprintf(url, sizeof(url), "%.*s%s%s", (int)(p - f->url), f->url, other, p + strlen(ca));
        assert_kb(store_open(url, &o, &st), KB_ERR_DB);
    }
    /* Without TLS the server refuses (hostssl only). */
    p = strstr(f->url, "sslmode=verify-full");
    snprintf(url, sizeof(url), "%.*ssslmode=disable%s", (int)(p - f->url), f->url,
             p + strlen("sslmode=verify-full"));
    assert_kb(store_open(url, &o, &st), KB_ERR_DB);
    assert_null(st);
}

/* ---- the pipeline (store_pg.c: deferred BEGIN, step_later, one sync per flight) ---- */

static kb_err pipe_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t max,
                        size_t *sig_len)
{
    (void)ctx;
    (void)msg;
    (void)len;
    (void)max;
    memset(sig, 7, 8);
    *sig_len = 8;
    return KB_OK;
}

typedef struct {
    store *st;
    audit_log *a;
    kb_secret *akey;
    int64_t client, secret;
} pfx;

static void pipe_open_fx(fx *f, pfx *p)
{
    store_opts o = opts(f, true);
    uint8_t k[32];
    audit_opts ao = {.sign = pipe_sign, .anchor_every_rows = -1, .anchor_every_secs = -1};
    store_client_new cn = {.spiffe_id = "spiffe://example.org/ns/p/sa/reader", .enabled = true};
    memset(p, 0, sizeof(*p));
    memset(k, 0x44, sizeof(k));
    assert_ok(kb_secret_from(k, sizeof(k), &p->akey));
    ao.key = p->akey;
    assert_ok(store_open(f->url, &o, &p->st));
    assert_ok(audit_open(p->st, &ao, &p->a));
    assert_ok(store_client_create(p->st, &cn, ADMIN, T0, &p->client, NULL));
    p->secret = mk_secret(p->st, "piped");
}

static void pipe_close_fx(pfx *p)
{
    audit_close(p->a);
    store_close(p->st);
    kb_secret_free(p->akey);
}

/* The reader's read of "piped" at time t, as its audit row says it. */
static audit_event reader_event(int64_t t)
{
    return (audit_event){.time = t,
                         .identity = "spiffe://example.org/ns/p/sa/reader",
                         .peer = "127.0.0.1:1",
                         .action = "secret.get",
                         .object = "piped",
                         .version = 1,
                         .result = "ok"};
}

static kb_err read_append(pfx *p, int64_t client, int64_t t, int64_t *seq)
{
    audit_event ev = reader_event(t);
    audit_fetch fe = {.client_id = client, .secret_id = p->secret, .version = 1};
    return audit_append_read(p->a, &ev, &fe, seq);
}

/* The chain verifies (a reader dropped with the others fails its first use: retried). */
static void chain_ok(pfx *p)
{
    audit_report r;
    kb_err rc = KB_ERR_DB;
    for (int i = 0; i < 60 && rc == KB_ERR_DB; i++) {
        rc = audit_verify(p->a, NULL, &r);
        if (rc == KB_ERR_DB)
            usleep(100 * 1000);
    }
    assert_ok(rc);
    assert_true(r.ok);
}

/* Round trips per operation, exact: a content read's log write (audit row + fetch row) is 2 —
 * BEGIN, the lock, the fetch upsert and the audit head in one flight; the audit INSERT and
 * COMMIT in the next (was 8 cold, 5 warm) — cold (statements prepared in the same flights) or
 * warm. Admin writes and read transactions save their BEGIN and first-use PREPAREs. */
static void pipeline_round_trips(void **state)
{
    fx *f = *state;
    pfx p;
    uint64_t a, rt[3][2];
    int64_t seq = 0, id = 0;
    store_record *recs = NULL;
    size_t n = 0;

    if (!kbtest_pg())
        skip();
    pipe_open_fx(f, &p);
    for (int i = 0; i < 3; i++) {
        a = store_round_trips(p.st);
        assert_ok(read_append(&p, p.client, T0 + i, &seq));
        printf("log-only append with a fetch row: %llu round trips\n",
               (unsigned long long)(store_round_trips(p.st) - a));
        assert_int_equal(store_round_trips(p.st) - a, 2);
    }
    assert_int_equal(kbtest_pg_int("SELECT fetched_at FROM fetch_log"), T0 + 2);
    for (int i = 0; i < 2; i++) {
        char name[64];
        store_client_new cn = {.spiffe_id = name, .enabled = true};
        snprintf(name, sizeof(name), "g%d", i);
        a = store_round_trips(p.st);
        assert_ok(store_group_create(p.st, name, "", ADMIN, T0, &id, NULL));
        rt[0][i] = store_round_trips(p.st) - a;
        snprintf(name, sizeof(name), "spiffe://example.org/ns/p/sa/c%d", i);
        a = store_round_trips(p.st);
        assert_ok(store_client_create(p.st, &cn, ADMIN, T0, &id, NULL));
        rt[1][i] = store_round_trips(p.st) - a;
        a = store_round_trips(p.st);
        assert_ok(store_readable_list(p.st, p.client, &recs, &n));
        store_records_free(recs, n);
        rt[2][i] = store_round_trips(p.st) - a;
    }
    printf("round trips, first and second time: group create %llu %llu, client create %llu %llu, "
           "readable list %llu %llu\n",
           (unsigned long long)rt[0][0], (unsigned long long)rt[0][1], (unsigned long long)rt[1][0],
           (unsigned long long)rt[1][1], (unsigned long long)rt[2][0],
           (unsigned long long)rt[2][1]);
    /* Before the pipeline: 6 5, 8 8, 8 5. A group create: INSERT (with BEGIN and the lock),
     * state delta, generation bump, COMMIT. A client create adds the state row read, its write
     * going with the bump. A read transaction: its BEGIN rides with the client row. */
    assert_int_equal(rt[0][0], 4);
    assert_int_equal(rt[0][1], 4);
    assert_int_equal(rt[1][0], 6);
    assert_int_equal(rt[1][1], 6);
    assert_int_equal(rt[2][0], 4);
    assert_int_equal(rt[2][1], 4);
    chain_ok(&p);
    pipe_close_fx(&p);
}

static const char *const fail_fetch_sql =
    "CREATE FUNCTION kb_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
    "$f$ BEGIN RAISE EXCEPTION 'refused by test' USING DETAIL = 'row value kb-marker-77'; "
    "END $f$; "
    "CREATE TRIGGER kb_test_refuse BEFORE INSERT OR UPDATE ON fetch_log "
    "FOR EACH ROW EXECUTE FUNCTION kb_test_refuse()";

/* A deferred statement that fails fails the whole append: the fetch upsert (found by the audit
 * head SELECT behind it), the audit INSERT (found by COMMIT), a foreign key (mapped as db_err
 * maps it): nothing of the append is stored, the chain verifies, and the next append works on
 * the same connection. */
static void pipeline_deferred_failure_fails_the_append(void **state)
{
    fx *f = *state;
    pfx p;
    int64_t seq = 0, seq2 = 0, rows;

    if (!kbtest_pg())
        skip();
    pipe_open_fx(f, &p);
    assert_ok(read_append(&p, p.client, T0, &seq));
    rows = kbtest_pg_int("SELECT count(*) FROM audit_log");
    assert_int_equal(kbtest_pg_sql(fail_fetch_sql), 0);
    /* The log line names the failure, never the DETAIL, where PostgreSQL puts row values
     * ("Failing row contains (...)"). */
    char logpath[] = "/tmp/kbtest-pglog.XXXXXX", logbuf[8192];
    int lfd = mkstemp(logpath);
    ssize_t got;
    assert_true(lfd >= 0);
    kb_log_set_fd(lfd);
    assert_kb(read_append(&p, p.client, T0 + 1, &seq2), KB_ERR_DB);
    kb_log_set_fd(2);
    got = pread(lfd, logbuf, sizeof(logbuf) - 1, 0);
    close(lfd);
    unlink(logpath);
    assert_true(got > 0);
    logbuf[got] = '\0';
    assert_non_null(strstr(logbuf, "refused by test"));
    assert_null(strstr(logbuf, "kb-marker-77"));
    assert_int_equal(kbtest_pg_int("SELECT count(*) FROM audit_log"), rows);
    assert_int_equal(kbtest_pg_int("SELECT fetched_at FROM fetch_log"), T0);
    assert_int_equal(kbtest_pg_sql("DROP TRIGGER kb_test_refuse ON fetch_log; "
                                   "CREATE TRIGGER kb_test_refuse BEFORE INSERT ON audit_log "
                                   "FOR EACH ROW EXECUTE FUNCTION kb_test_refuse()"),
                     0);
    assert_kb(read_append(&p, p.client, T0 + 2, &seq2), KB_ERR_DB);
    assert_int_equal(kbtest_pg_int("SELECT count(*) FROM audit_log"), rows);
    assert_int_equal(kbtest_pg_int("SELECT fetched_at FROM fetch_log"), T0);
    assert_int_equal(kbtest_pg_sql("DROP TRIGGER kb_test_refuse ON audit_log"), 0);
    /* No such client: the deferred upsert's foreign key (23503) is KB_ERR_NOT_FOUND. */
    assert_kb(read_append(&p, p.client + 1000, T0 + 3, &seq2), KB_ERR_NOT_FOUND);
    assert_int_equal(kbtest_pg_int("SELECT count(*) FROM audit_log"), rows);
    chain_ok(&p);
    assert_ok(read_append(&p, p.client, T0 + 4, &seq2));
    assert_int_equal(seq2, seq + 1);
    assert_int_equal(kbtest_pg_int("SELECT fetched_at FROM fetch_log"), T0 + 4);
    chain_ok(&p);
    pipe_close_fx(&p);
}

/* The same failure on a fresh connection, where the flight also carries the statements' first
 * PREPAREs: the ones the server skipped after the failure must be prepared again, not taken as
 * prepared (the next append would then fail with "prepared statement does not exist"). */
static void pipeline_failure_before_first_prepare(void **state)
{
    fx *f = *state;
    pfx p;
    int64_t seq = 0;

    if (!kbtest_pg())
        skip();
    pipe_open_fx(f, &p);
    assert_int_equal(kbtest_pg_sql(fail_fetch_sql), 0);
    assert_kb(read_append(&p, p.client, T0, &seq), KB_ERR_DB);
    assert_kb(read_append(&p, p.client, T0 + 1, &seq), KB_ERR_DB);
    assert_int_equal(kbtest_pg_int("SELECT count(*) FROM audit_log"), 0);
    assert_int_equal(kbtest_pg_sql("DROP TRIGGER kb_test_refuse ON fetch_log; "
                                   "DROP FUNCTION kb_test_refuse()"),
                     0);
    assert_ok(read_append(&p, p.client, T0 + 2, &seq));
    assert_int_equal(seq, 1);
    assert_ok(read_append(&p, p.client, T0 + 3, &seq));
    assert_int_equal(seq, 2);
    assert_int_equal(kbtest_pg_int("SELECT fetched_at FROM fetch_log"), T0 + 3);
    chain_ok(&p);
    pipe_close_fx(&p);
}

/* The backend killed under an idle writer: the next append sends its deferred BEGIN, lock and
 * upsert into a dead connection. It fails at once (no hang), and the store reconnects. */
static void pipeline_on_a_dropped_connection(void **state)
{
    fx *f = *state;
    pfx p;
    int64_t seq = 0, seq2 = 0;
    kb_err rc = KB_ERR_DB;
    time_t t0;

    if (!kbtest_pg())
        skip();
    pipe_open_fx(f, &p);
    assert_ok(read_append(&p, p.client, T0, &seq));
    assert_int_equal(kbtest_pg_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE usename = 'kb' AND pid <> pg_backend_pid()"),
                     0);
    usleep(100 * 1000);
    t0 = time(NULL);
    assert_kb(read_append(&p, p.client, T0 + 1, &seq2), KB_ERR_DB);
    assert_true(time(NULL) - t0 < 5);
    for (int i = 0; i < 60 && rc != KB_OK; i++) {
        rc = read_append(&p, p.client, T0 + 2, &seq2);
        if (rc != KB_OK) {
            assert_int_equal(rc, KB_ERR_DB);
            usleep(100 * 1000);
        }
    }
    assert_ok(rc);
    assert_int_equal(seq2, seq + 1);
    chain_ok(&p);
    pipe_close_fx(&p);
}

/* 1,000 fetch upserts at t0.. in one log-only transaction, the one at bad_at (-1: none) for a
 * client that does not exist; tx_end's answer (a failure is found by the sync at the bound,
 * which step_later returns, or at COMMIT). */
static kb_err upsert_flight(pfx *p, int bad_at, int64_t t0)
{
    const store_sql_driver *d = ((const store_sql_pool *)p->st->impl)->drv;
    store_sql_cx *b = d->wr_get(p->st);
    kb_err rc = d->tx_begin(b, STORE_SQL_TX_LOG);
    for (int i = 0; i < 1000 && rc == KB_OK; i++)
        rc = store_sql_fetch_upsert(b, i == bad_at ? p->client + 1000 : p->client, p->secret, 1,
                                    t0 + i);
    rc = d->tx_end(b, rc, NULL);
    d->put(p->st, b);
    return rc;
}

/* 1,000 deferred upserts in one transaction (as a batch read's fetch rows): synced every
 * STORE_PG_PIPE_MAX (256) commands (no blocking-mode deadlock): 3 flights at the bound and the
 * COMMIT's (was 1,003 round trips); the last value wins. One that fails (no such client) in the
 * middle fails the transaction: nothing stored. */
static void pipeline_long_flight(void **state)
{
    fx *f = *state;
    pfx p;
    uint64_t a;

    if (!kbtest_pg())
        skip();
    pipe_open_fx(f, &p);
    a = store_round_trips(p.st);
    assert_ok(upsert_flight(&p, -1, T0));
    printf("1000 deferred upserts in one transaction: %llu round trips\n",
           (unsigned long long)(store_round_trips(p.st) - a));
    assert_int_equal(store_round_trips(p.st) - a, 4);
    assert_int_equal(kbtest_pg_int("SELECT fetched_at FROM fetch_log"), T0 + 999);

    assert_kb(upsert_flight(&p, 600, T0 + 1000), KB_ERR_NOT_FOUND);
    assert_int_equal(kbtest_pg_int("SELECT fetched_at FROM fetch_log"), T0 + 999);

    /* A batch read of the most names (AUDIT_READS_MAX): 1,000 fetch upserts and 1,000 chained
     * audit rows in one transaction: 8 round trips (was over 2,000: one per row). */
    {
        audit_event *ev = calloc(AUDIT_READS_MAX, sizeof(*ev));
        audit_fetch *fe = calloc(AUDIT_READS_MAX, sizeof(*fe));
        int64_t seq = 0, rows = kbtest_pg_int("SELECT count(*) FROM audit_log");
        assert_non_null(ev);
        assert_non_null(fe);
        for (size_t i = 0; i < AUDIT_READS_MAX; i++) {
            ev[i] = reader_event(T0 + 2000 + (int64_t)i);
            fe[i] = (audit_fetch){.client_id = p.client, .secret_id = p.secret, .version = 1};
        }
        a = store_round_trips(p.st);
        assert_ok(audit_append_reads(p.a, ev, fe, AUDIT_READS_MAX, &seq));
        printf("a batch read's log write of %d names: %llu round trips\n", AUDIT_READS_MAX,
               (unsigned long long)(store_round_trips(p.st) - a));
        assert_int_equal(store_round_trips(p.st) - a, 8);
        assert_int_equal(kbtest_pg_int("SELECT count(*) FROM audit_log"), rows + AUDIT_READS_MAX);
        assert_int_equal(seq, rows + AUDIT_READS_MAX);
        assert_int_equal(kbtest_pg_int("SELECT fetched_at FROM fetch_log"), T0 + 2999);
        free(ev);
        free(fe);
    }
    chain_ok(&p);
    pipe_close_fx(&p);
}

/* The content read's plan (STORE_SQL_READABLE) finds a name's rows by index, generic plan or
 * not: PostgreSQL guesses 100 rows for the JSON table of names, and the plain joins were planned
 * as a hash of the whole secrets table (and a subplan per membership of the client), so one
 * name cost a scan of every secret (20,000 secrets: 14 ms a read; 1,000 names, 300 groups:
 * 580 ms). */
static void content_read_looks_names_up_by_index(void **state)
{
    fx *f = *state;
    pfx p;
    const store_sql_driver *d;
    PGconn *c;
    char sql[8192], q[256];
    size_t n;

    if (!kbtest_pg())
        skip();
    pipe_open_fx(f, &p);
    /* A store of some size (rows as the attacker writes them: only the plan is looked at). */
    assert_int_equal(
        kbtest_pg_sql(
            "INSERT INTO groups(name, created_by, created_at) SELECT 'pg' || g, 'x', 0 "
            "FROM generate_series(1, 40) g; "
            "INSERT INTO clients(spiffe_id, enabled, admin, cloud, created_by, created_at, mac) "
            "SELECT 'spiffe://example.org/ns/p/sa/c' || k, 1, 0, 0, 'x', 0, ''::bytea "
            "FROM generate_series(1, 2000) k; "
            "INSERT INTO memberships(client_id, group_id, mac) SELECT c.id, g.id, ''::bytea "
            "FROM clients c, groups g WHERE g.name LIKE 'pg%' AND (c.spiffe_id LIKE '%/sa/reader' "
            "OR (c.spiffe_id LIKE '%/sa/c%' AND g.id % 20 = c.id % 20)); "
            "INSERT INTO secrets(name, cloud_sync, latest_version, created_by, created_at, "
            "updated_by, updated_at, mac) SELECT 'ps' || k, 0, 1, 'x', 0, 'x', 0, ''::bytea "
            "FROM generate_series(1, 3000) k; "
            "INSERT INTO versions(secret_id, version, wrapped_key, key_id, sealed, checksum, "
            "content_len, metadata, created_by, created_at) SELECT s.id, v, ''::bytea, 'k', "
            "''::bytea, ''::bytea, 0, '', 'x', 0 FROM secrets s, generate_series(1, 3) v "
            "WHERE s.name LIKE 'ps%'; "
            "INSERT INTO grants(group_id, secret_id, mac) SELECT g.id, s.id, ''::bytea "
            "FROM secrets s JOIN groups g ON g.name = 'pg' || (s.id % 40 + 1) "
            "WHERE s.name LIKE 'ps%'; "
            "ANALYZE"),
        0);
    d = ((const store_sql_pool *)p.st->impl)->drv;
    /* The statement as the backend prepares it: ?N -> $N (it has no quoted text). */
    n = (size_t)snprintf(sql, sizeof(sql), "PREPARE kb_plan(bigint, text) AS %s",
                         d->sql[STORE_SQL_Q_READABLE]);
    assert_true(n < sizeof(sql));
    for (char *t = sql; *t; t++)
        if (*t == '?' && t[1] >= '1' && t[1] <= '9')
            *t = '$';
    c = kbtest_pg_admin();
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, sql));
    for (int mode = 0; mode < 2; mode++) {
        PGresult *r;
        kb_dbuf plan;
        kb_dbuf_init(&plan, 1 << 20);
        PQclear(PQexec(c, mode == 0 ? "SET plan_cache_mode = force_generic_plan"
                                    : "SET plan_cache_mode = force_custom_plan"));
        snprintf(q, sizeof(q),
                 "EXPLAIN EXECUTE kb_plan(%lld, '[[0,\"ps7\",0],[1,\"piped\",1],[2,\"none\",0]]')",
                 (long long)p.client);
        r = PQexec(c, q);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        for (int i = 0; i < PQntuples(r); i++) {
            assert_ok(kb_dbuf_addstr(&plan, PQgetvalue(r, i, 0)));
            assert_ok(kb_dbuf_addc(&plan, '\n'));
        }
        PQclear(r);
        if (strstr(kb_dbuf_str(&plan), "Seq Scan on secrets") != NULL ||
            strstr(kb_dbuf_str(&plan), "Seq Scan on versions") != NULL ||
            strstr(kb_dbuf_str(&plan), "Seq Scan on grants") != NULL ||
            strstr(kb_dbuf_str(&plan), "Seq Scan on memberships") != NULL ||
            strstr(kb_dbuf_str(&plan), "Hash") != NULL ||
            strstr(kb_dbuf_str(&plan), "SubPlan") != NULL) {
            printf("%s plan:\n%s", mode == 0 ? "generic" : "custom", kb_dbuf_str(&plan));
            fail_msg("the content read scans or hashes a whole table");
        }
        kb_dbuf_free(&plan);
    }
    PQfinish(c);
    pipe_close_fx(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(url_and_password_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(migrations_are_explicit, setup, teardown),
        cmocka_unit_test_setup_teardown(reconnects_after_the_database_dropped_us, setup, teardown),
        cmocka_unit_test_setup_teardown(reconnect_rechecks_the_schema_floor, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_verify_full, setup, teardown),
        cmocka_unit_test_setup_teardown(round_trips_are_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(client_cache_follows_other_replicas, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_round_trips, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_deferred_failure_fails_the_append, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(pipeline_failure_before_first_prepare, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_on_a_dropped_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(pipeline_long_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(content_read_looks_names_up_by_index, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
