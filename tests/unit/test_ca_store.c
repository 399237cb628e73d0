/* test_ca_store.c - the ca_store contract, run against every backend: SQLite always, and
 * PostgreSQL when KB_PG_URL names a database (tests/integration/test_ca_store_pg.py starts a real
 * server and runs this binary with it; the database's ca_* tables are dropped first). Without
 * KB_PG_URL the PostgreSQL cases that need no server still run: URL refusals (a password in the
 * URL, PGPASSWORD, an open passfile) and an unreachable server. */
#include "kbtest.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "ca/ca_store.h"

static char g_dir[] = "/tmp/kbca-store-XXXXXX";
static int g_n;

/* A fresh, empty store location of the backend under test (SQLite: a new file; PostgreSQL: the
 * ca_* tables dropped). */
static void fresh(const char *backend, char *where, size_t len)
{
    if (strcmp(backend, "sqlite") == 0) {
        snprintf(where, len, "%s/ca-%d.db", g_dir, g_n++);
        return;
    }
    snprintf(where, len, "%s", getenv("KB_PG_URL"));
    PGconn *c = PQconnectdb(where);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    PGresult *r =
        PQexec(c, "DROP TABLE IF EXISTS ca_meta, ca_gen, ca_reg, ca_audit, ca_issued CASCADE");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
}

static int have_pg(void)
{
    const char *u = getenv("KB_PG_URL");
    return u != NULL && u[0] != '\0';
}

static ca_store *open_fresh(const char *backend, char *where, size_t len)
{
    ca_store *st = NULL;
    fresh(backend, where, len);
    assert_ok(ca_store_open(where, &st));
    assert_string_equal(ca_store_backend(st), backend);
    return st;
}

static void reg_fill(ca_reg *r, int i)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->spiffe_id, sizeof(r->spiffe_id), "spiffe://example.org/ns/w%d", i);
    snprintf(r->target, sizeof(r->target), "dir:/tmp/none/w%d", i);
    r->ttl = 600;
    r->avail = 60;
    r->renewable = i % 2;
}

static void meta_gen(const char *backend)
{
    char where[512], v[64];
    int64_t x = 0;
    ca_gen g, *gl = NULL;
    size_t n = 0;
    ca_store *st = open_fresh(backend, where, sizeof(where));

    assert_kb(ca_store_meta_get(st, "trust_domain", v, sizeof(v)), KB_ERR_NOT_FOUND);
    assert_ok(ca_store_meta_set(st, "trust_domain", "example.org"));
    assert_ok(ca_store_meta_set(st, "trust_domain", "example.org")); /* upsert */
    assert_ok(ca_store_meta_get(st, "trust_domain", v, sizeof(v)));
    assert_string_equal(v, "example.org");
    assert_ok(ca_store_meta_incr(st, "bundle_sequence", &x));
    assert_int_equal(x, 1);
    assert_ok(ca_store_meta_incr(st, "bundle_sequence", &x));
    assert_int_equal(x, 2);
    assert_kb(ca_store_meta_get(NULL, "k", v, sizeof(v)), KB_ERR_NULL);

    memset(&g, 0, sizeof(g));
    snprintf(g.state, sizeof(g.state), CA_STATE_PENDING);
    snprintf(g.key_kind, sizeof(g.key_kind), "file");
    snprintf(g.key_ref, sizeof(g.key_ref), "/k/1");
    g.created = 1;
    assert_ok(ca_store_gen_add(st, &g)); /* pending: no certificate yet (NULL) */
    assert_true(g.gen > 0);
    assert_kb(ca_store_gen_activate(st, g.gen), KB_ERR_NOT_FOUND); /* no certificate */
    g.cert_pem = "CERT1";
    g.roots_pem = "ROOT";
    g.not_after = 99;
    snprintf(g.state, sizeof(g.state), CA_STATE_PREPARED);
    assert_ok(ca_store_gen_update(st, &g));
    assert_ok(ca_store_gen_activate(st, g.gen));
    int64_t first = g.gen;
    g.cert_pem = "CERT2";
    assert_ok(ca_store_gen_add(st, &g));
    assert_ok(ca_store_gen_activate(st, g.gen));
    g.gen = 424242;
    assert_kb(ca_store_gen_update(st, &g), KB_ERR_NOT_FOUND);
    assert_kb(ca_store_gen_activate(st, 424242), KB_ERR_NOT_FOUND);
    assert_ok(ca_store_gen_list(st, &gl, &n));
    assert_int_equal(n, 2);
    assert_int_equal(gl[0].gen, first);
    /* a failed activation rolled back: the second is still the one active */
    assert_string_equal(gl[0].state, CA_STATE_RETIRED);
    assert_string_equal(gl[1].state, CA_STATE_ACTIVE);
    assert_string_equal(gl[0].cert_pem, "CERT1");
    assert_string_equal(gl[0].chain_pem, "");
    assert_int_equal(gl[1].not_after, 99);
    ca_gen_list_free(gl, n);
    ca_store_close(st);
}

static void count_audit(void *arg, const char *serial, const char *spiffe_id, const char *target,
                        const char *reason, int64_t gen, int64_t not_after, int64_t at)
{
    (void)serial, (void)spiffe_id, (void)target, (void)reason, (void)gen, (void)not_after, (void)at;
    (*(int *)arg)++;
}

static void regs_guard(const char *backend)
{
    char where[512], sans[CA_REG_SANS_MAX];
    ca_reg r, got, *l = NULL;
    size_t n = 0;
    int64_t ttl = 0, first;
    int rows = 0;
    ca_store *st = open_fresh(backend, where, sizeof(where));

    reg_fill(&r, 1);
    snprintf(r.sans, sizeof(r.sans), "dns:a.example.org");
    r.adopt_spire = 1;
    assert_ok(ca_store_reg_add(st, &r));
    first = r.rid;
    assert_kb(ca_store_reg_add(st, &r), KB_ERR_EXISTS);
    assert_ok(ca_store_reg_get(st, first, &got));
    assert_string_equal(got.spiffe_id, r.spiffe_id);
    assert_string_equal(got.sans, "dns:a.example.org");
    assert_int_equal(got.adopt_spire, 1);
    assert_int_equal(got.renewable, 1);
    assert_string_equal(got.lease_owner, "");
    assert_kb(ca_store_reg_get(st, first + 1000, &got), KB_ERR_NOT_FOUND);
    assert_ok(ca_store_reg_renewable(st, r.spiffe_id, &ttl, sans, sizeof(sans)));
    assert_int_equal(ttl, 600);
    assert_string_equal(sans, "dns:a.example.org");
    assert_kb(ca_store_reg_renewable(st, "spiffe://example.org/none", &ttl, NULL, 0),
              KB_ERR_NOT_FOUND);
    reg_fill(&r, 2);
    assert_ok(ca_store_reg_add(st, &r));
    assert_kb(ca_store_reg_renewable(st, r.spiffe_id, &ttl, NULL, 0), KB_ERR_NOT_FOUND);
    assert_ok(ca_store_reg_list(st, &l, &n));
    assert_int_equal(n, 2);
    assert_int_equal(l[0].rid, first);
    free(l);

    /* the write guard: an audit row written inside it is rolled back with it */
    assert_ok(ca_store_write_begin(st, first));
    assert_ok(ca_store_audit_add(st, "01", "spiffe://example.org/ns/w1", "dir:/x", "t", 1, 2, 3));
    assert_ok(ca_store_write_end(st, 0));
    assert_ok(ca_store_audit_each(st, count_audit, &rows));
    assert_int_equal(rows, 0);
    assert_ok(ca_store_write_begin(st, first));
    assert_ok(ca_store_audit_add(st, "02", "spiffe://example.org/ns/w1", "dir:/x", "t", 1, 2, 3));
    assert_ok(ca_store_write_end(st, 1));
    assert_ok(ca_store_audit_add(st, "03", "spiffe://example.org/ns/w1", "api", "t", 1, 2, 3));
    assert_ok(ca_store_audit_each(st, count_audit, &rows));
    assert_int_equal(rows, 2);

    /* remove: the row is copied out, then gone; the guard then refuses; ids are not reused */
    assert_ok(ca_store_reg_remove(st, first, &got));
    assert_string_equal(got.spiffe_id, "spiffe://example.org/ns/w1");
    assert_kb(ca_store_reg_remove(st, first, &got), KB_ERR_NOT_FOUND);
    assert_kb(ca_store_write_begin(st, first), KB_ERR_CONFLICT);
    reg_fill(&r, 1);
    assert_ok(ca_store_reg_add(st, &r));
    assert_true(r.rid > first);
    assert_kb(ca_store_write_begin(st, first), KB_ERR_CONFLICT);
    ca_store_close(st);
}

static void count_issued(void *arg, int64_t rid, const char *serial, const char *reason,
                         const char *owner, int64_t not_after, int64_t at)
{
    (void)rid, (void)serial, (void)reason, (void)not_after, (void)at;
    assert_string_equal(owner, "A");
    (*(int *)arg)++;
}

static void leases(const char *backend)
{
    char where[512];
    ca_reg r, *a = NULL, *b = NULL, got;
    size_t na = 0, nb = 0;
    int64_t now = (int64_t)time(NULL), rids[6];
    int rows = 0;
    ca_store *st = open_fresh(backend, where, sizeof(where));
    ca_claim c = {.owner = "A", .now = now, .lease = 60, .bundle_seq = 0, .max = 4};

    for (int i = 0; i < 6; i++) {
        reg_fill(&r, i);
        assert_ok(ca_store_reg_add(st, &r));
        rids[i] = r.rid;
    }
    /* A takes the first four (all new: due), B the other two, then nothing is left */
    assert_ok(ca_store_reg_claim(st, &c, &a, &na));
    assert_int_equal(na, 4);
    assert_int_equal(a[0].rid, rids[0]);
    assert_int_equal(a[3].rid, rids[3]);
    assert_string_equal(a[0].lease_owner, "A");
    c.owner = "B";
    assert_ok(ca_store_reg_claim(st, &c, &b, &nb));
    assert_int_equal(nb, 2);
    assert_int_equal(b[0].rid, rids[4]);
    free(b);
    c.owner = "C";
    assert_ok(ca_store_reg_claim(st, &c, &b, &nb));
    assert_int_equal(nb, 0);
    assert_null(b);
    /* a holder may take its own again (a pass's cursor keeps it from looping) */
    c.owner = "B";
    assert_ok(ca_store_reg_claim(st, &c, &b, &nb));
    assert_int_equal(nb, 2);
    free(b);
    /* A's cursor: nothing after its last row that A does not hold already */
    c.owner = "A";
    c.after_rid = rids[3];
    assert_ok(ca_store_reg_claim(st, &c, &b, &nb));
    assert_int_equal(nb, 0);
    /* B may not write A's registration; A completes it: state, lease end and the issued row */
    assert_kb(ca_store_write_begin_lease(st, rids[0], "B"), KB_ERR_CONFLICT);
    assert_ok(ca_store_write_begin_lease(st, rids[0], "A"));
    ca_done d = {.rid = rids[0],
                 .serial = "0a",
                 .reason = "new",
                 .owner = "A",
                 .not_after = now + 600,
                 .next_renew = now + 300,
                 .bundle_seq = 1,
                 .at = now};
    assert_ok(ca_store_reg_done(st, &d));
    assert_ok(ca_store_write_end(st, 1));
    /* a completion rolled back leaves neither the log row nor the new state */
    assert_ok(ca_store_write_begin_lease(st, rids[1], "A"));
    d.rid = rids[1];
    assert_ok(ca_store_reg_done(st, &d));
    assert_ok(ca_store_write_end(st, 0));
    assert_ok(ca_store_issued_each(st, count_issued, &rows));
    assert_int_equal(rows, 1);
    assert_ok(ca_store_reg_get(st, rids[0], &got));
    assert_int_equal(got.not_after, now + 600);
    assert_int_equal(got.next_renew, now + 300);
    assert_int_equal(got.bundle_seq, 1);
    assert_string_equal(got.lease_owner, "");
    assert_ok(ca_store_reg_get(st, rids[1], &got));
    assert_int_equal(got.not_after, 0);
    assert_string_equal(got.lease_owner, "A");
    /* not due any more (next_renew later), unless the bundle moved on or forced */
    c.owner = "C";
    c.after_rid = 0;
    c.max = 1;
    assert_ok(ca_store_reg_claim(st, &c, &b, &nb));
    assert_int_equal(nb, 0);
    c.bundle_seq = 2;
    assert_ok(ca_store_reg_claim(st, &c, &b, &nb));
    assert_int_equal(nb, 1);
    assert_int_equal(b[0].rid, rids[0]);
    free(b);
    /* a failure by someone else than the holder changes nothing; the holder's ends its lease */
    assert_ok(ca_store_reg_retry(st, rids[0], "A", now + 2, 1));
    assert_ok(ca_store_reg_get(st, rids[0], &got));
    assert_string_equal(got.lease_owner, "C");
    assert_int_equal(got.failures, 0);
    assert_ok(ca_store_reg_retry(st, rids[0], "C", now + 2, 1));
    assert_ok(ca_store_reg_get(st, rids[0], &got));
    assert_string_equal(got.lease_owner, "");
    assert_int_equal(got.failures, 1);
    assert_int_equal(got.next_renew, now + 2);
    c.bundle_seq = 0;
    c.force = 1; /* forced: due although its next_renew is later */
    assert_ok(ca_store_reg_claim(st, &c, &b, &nb));
    assert_int_equal(nb, 1);
    assert_int_equal(b[0].rid, rids[0]);
    free(b);
    /* every lease is held (A's, B's, C's): a newcomer gets nothing, even forced */
    c.owner = "D";
    c.max = 8;
    assert_ok(ca_store_reg_claim(st, &c, &b, &nb));
    assert_int_equal(nb, 0);
    free(a);
    /* invalid claims */
    c.max = 0;
    assert_kb(ca_store_reg_claim(st, &c, &b, &nb), KB_ERR_INVALID);
    c.max = CA_CLAIM_MAX + 1;
    assert_kb(ca_store_reg_claim(st, &c, &b, &nb), KB_ERR_INVALID);
    c.max = 1;
    c.owner = "";
    assert_kb(ca_store_reg_claim(st, &c, &b, &nb), KB_ERR_INVALID);
    c.owner = NULL;
    assert_kb(ca_store_reg_claim(st, &c, &b, &nb), KB_ERR_NULL);
    ca_store_close(st);
}

/* A lease of 1 s ends (on the store's clock), and the registration is retaken. */
static void lease_expiry(const char *backend)
{
    char where[512];
    ca_reg r, *a = NULL;
    size_t na = 0;
    ca_store *st = open_fresh(backend, where, sizeof(where));
    ca_claim c = {.owner = "dead", .now = (int64_t)time(NULL), .lease = 1, .max = 4};

    reg_fill(&r, 0);
    assert_ok(ca_store_reg_add(st, &r));
    assert_ok(ca_store_reg_claim(st, &c, &a, &na));
    assert_int_equal(na, 1);
    free(a);
    c.owner = "alive";
    assert_ok(ca_store_reg_claim(st, &c, &a, &na));
    assert_int_equal(na, 0);
    sleep(2);
    c.now = (int64_t)time(NULL);
    assert_ok(ca_store_reg_claim(st, &c, &a, &na));
    assert_int_equal(na, 1);
    assert_string_equal(a[0].lease_owner, "alive");
    free(a);
    assert_kb(ca_store_write_begin_lease(st, r.rid, "dead"), KB_ERR_CONFLICT);
    ca_store_close(st);
}

#define RACE_REGS 120
#define RACE_THREADS 3

typedef struct {
    const char *where;
    char owner[16];
    int64_t got[RACE_REGS];
    size_t n;
} racer;

static void *race(void *arg)
{
    racer *x = arg;
    ca_store *st = NULL;
    ca_reg *b = NULL;
    size_t nb = 0;

    int64_t cursor = 0;

    if (ca_store_open(x->where, &st) != KB_OK)
        return NULL;
    for (;;) {
        ca_claim c = {.owner = x->owner,
                      .now = (int64_t)time(NULL),
                      .lease = 60,
                      .after_rid = cursor,
                      .max = 7};
        if (ca_store_reg_claim(st, &c, &b, &nb) != KB_OK || nb == 0)
            break;
        for (size_t i = 0; i < nb && x->n < RACE_REGS; i++)
            x->got[x->n++] = b[i].rid;
        cursor = b[nb - 1].rid;
        free(b);
    }
    ca_store_close(st);
    return NULL;
}

/* Claimers on separate connections: every registration is claimed by exactly one. */
static void claim_race(const char *backend)
{
    char where[512];
    ca_reg r;
    racer x[RACE_THREADS];
    pthread_t t[RACE_THREADS];
    static int seen[RACE_REGS + 1];
    int64_t base = 0;
    ca_store *st = open_fresh(backend, where, sizeof(where));

    for (int i = 0; i < RACE_REGS; i++) {
        reg_fill(&r, i);
        assert_ok(ca_store_reg_add(st, &r));
        if (i == 0)
            base = r.rid;
    }
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < RACE_THREADS; i++) {
        memset(&x[i], 0, sizeof(x[i]));
        x[i].where = where;
        snprintf(x[i].owner, sizeof(x[i].owner), "r%d", i);
        assert_int_equal(pthread_create(&t[i], NULL, race, &x[i]), 0);
    }
    size_t total = 0;
    for (int i = 0; i < RACE_THREADS; i++) {
        pthread_join(t[i], NULL);
        for (size_t k = 0; k < x[i].n; k++) {
            int64_t j = x[i].got[k] - base;
            assert_true(j >= 0 && j < RACE_REGS);
            seen[j]++;
        }
        total += x[i].n;
    }
    assert_int_equal(total, RACE_REGS);
    for (int i = 0; i < RACE_REGS; i++)
        assert_int_equal(seen[i], 1);
    ca_store_close(st);
}

#define BOTH(fn)                                                                                   \
    static void fn##_sqlite(void **s)                                                              \
    {                                                                                              \
        (void)s;                                                                                   \
        fn("sqlite");                                                                              \
    }                                                                                              \
    static void fn##_pg(void **s)                                                                  \
    {                                                                                              \
        (void)s;                                                                                   \
        if (!have_pg())                                                                            \
            skip();                                                                                \
        fn("postgresql");                                                                          \
    }

BOTH(meta_gen)
BOTH(regs_guard)
BOTH(leases)
BOTH(lease_expiry)
BOTH(claim_race)

/* Refused before any connection: a password in the URL, PGPASSWORD, an open passfile, an
 * unparsable URL; an unreachable server is KB_ERR_UNAVAILABLE, an SQLite path with a passfile
 * KB_ERR_CONFIG. */
static void test_pg_url_refusals(void **s)
{
    char pf[512];
    ca_store *st = NULL;
    FILE *f;
    (void)s;

    assert_true(ca_store_is_pg_url("postgresql://h/db"));
    assert_true(ca_store_is_pg_url("postgres://h/db"));
    assert_false(ca_store_is_pg_url("/var/lib/ca.db"));
    assert_false(ca_store_is_pg_url(NULL));
    assert_kb(ca_store_open_at("postgresql://kb:secret@127.0.0.1:1/kb", NULL, &st), KB_ERR_CONFIG);
    assert_null(st);
    assert_kb(ca_store_open_at("postgresql://kb@127.0.0.1:1/kb?password=secret", NULL, &st),
              KB_ERR_CONFIG);
    assert_kb(ca_store_open_at("postgresql://kb@127.0.0.1:1/kb?nosuchparam=1", NULL, &st),
              KB_ERR_CONFIG);
    setenv("PGPASSWORD", "secret", 1);
    assert_kb(ca_store_open_at("postgresql://kb@127.0.0.1:1/kb", NULL, &st), KB_ERR_CONFIG);
    unsetenv("PGPASSWORD");
    snprintf(pf, sizeof(pf), "%s/passfile", g_dir);
    f = fopen(pf, "w");
    assert_non_null(f);
    fputs("127.0.0.1:*:*:kb:secret\n", f);
    fclose(f);
    chmod(pf, 0644);
    assert_kb(ca_store_open_at("postgresql://kb@127.0.0.1:1/kb", pf, &st), KB_ERR_CONFIG);
    char url[700];
    snprintf(url, sizeof(url), "postgresql://kb@127.0.0.1:1/kb?passfile=%s", pf);
    assert_kb(ca_store_open_at(url, NULL, &st), KB_ERR_CONFIG);
    assert_kb(ca_store_open_at("postgresql://kb@127.0.0.1:1/kb", "/nonexistent/pf", &st),
              KB_ERR_CONFIG);
    chmod(pf, 0600);
    /* port 1 on loopback: nothing listens */
    assert_kb(ca_store_open_at("postgresql://kb@127.0.0.1:1/kb?connect_timeout=2", pf, &st),
              KB_ERR_UNAVAILABLE);
    assert_kb(ca_store_open_at("/tmp/x.db", pf, &st), KB_ERR_CONFIG);
    assert_kb(ca_store_open_at(NULL, NULL, &st), KB_ERR_NULL);
    unlink(pf);
}

/* A database migrated by a newer keybridge-ca is refused. */
static void test_pg_newer_schema(void **s)
{
    char where[512];
    ca_store *st = NULL;
    (void)s;

    if (!have_pg())
        skip();
    st = open_fresh("postgresql", where, sizeof(where));
    ca_store_close(st);
    PGconn *c = PQconnectdb(where);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "UPDATE ca_meta SET v = '99' WHERE k = 'schema_version'"));
    assert_kb(ca_store_open(where, &st), KB_ERR_SCHEMA);
    PQclear(PQexec(c, "UPDATE ca_meta SET v = '1' WHERE k = 'schema_version'"));
    PQfinish(c);
    assert_ok(ca_store_open(where, &st)); /* and reopened by its own version */
    ca_store_close(st);
}

static int setup(void **s)
{
    (void)s;
    return mkdtemp(g_dir) == NULL ? -1 : 0;
}

static int teardown(void **s)
{
    char cmd[128];
    (void)s;
    snprintf(cmd, sizeof(cmd), "%s", g_dir);
    for (int i = 0; i < g_n; i++) {
        char p[256];
        static const char *const ext[] = {"", "-wal", "-shm"};
        for (int e = 0; e < 3; e++) {
            snprintf(p, sizeof(p), "%s/ca-%d.db%s", g_dir, i, ext[e]);
            unlink(p);
        }
    }
    rmdir(cmd);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(meta_gen_sqlite),      cmocka_unit_test(meta_gen_pg),
        cmocka_unit_test(regs_guard_sqlite),    cmocka_unit_test(regs_guard_pg),
        cmocka_unit_test(leases_sqlite),        cmocka_unit_test(leases_pg),
        cmocka_unit_test(lease_expiry_sqlite),  cmocka_unit_test(lease_expiry_pg),
        cmocka_unit_test(claim_race_sqlite),    cmocka_unit_test(claim_race_pg),
        cmocka_unit_test(test_pg_url_refusals), cmocka_unit_test(test_pg_newer_schema),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
