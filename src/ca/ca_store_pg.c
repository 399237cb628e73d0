/* ca_store_pg.c - keybridge-ca's state in PostgreSQL (see ca_store.h), for several CA replicas on
 * one database (docs/internals/ca-store.md).
 *
 * Same contract as the SQLite backend, with PostgreSQL's means:
 * - the write guard is a transaction holding the registration's row lock (SELECT ... FOR UPDATE):
 *   a remove (DELETE after SELECT ... FOR UPDATE) runs wholly before or wholly after a renewal's
 *   check-and-write; BIGSERIAL ids come from a sequence and are never reused (a sequence value is
 *   not given back on rollback), so an id is still a registration's generation;
 * - renewal work is claimed by leases: UPDATE ... WHERE rid IN (SELECT ... FOR UPDATE SKIP
 *   LOCKED), so concurrent claims never take the same row and never wait for each other; the
 *   lease's clock is the database's (replicas' clocks may differ), its end lets a dead replica's
 *   claims be retaken;
 * - the issued-certificate log row, the registration's new state and the end of its lease are
 *   written in the guard's transaction (ca_store_reg_done);
 * - the schema is created and migrated under an advisory transaction lock, so replicas starting
 *   together do not race; a database of a newer schema version is refused (KB_ERR_SCHEMA).
 * One connection per process, serialised by a recursive mutex (libpq connections are not
 * thread-safe); a lost connection is re-established at the next call outside a transaction.
 * The password never comes from the URL or the environment (ca_store.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "ca_store_impl.h"
#include "lib/buf.h"
#include "lib/log.h"

#define PG_SCHEMA_VERSION 1
#define PG_SCHEMA_LOCK "7017320801" /* pg_advisory_xact_lock key of the schema migration */
#define PG_CONNECT_TIMEOUT "10"
#define PG_PARAMS_MAX 12
#define PG_NUM_LEN 24
/* The database's clock, whole seconds: leases are judged by one clock for every replica. */
#define PG_NOW "floor(extract(epoch FROM clock_timestamp()))::bigint"

typedef struct {
    ca_store base; /* first: the ops table */
    PGconn *db;
    pthread_mutex_t mu; /* recursive: the write guard spans calls from one thread */
    int in_tx;          /* a guard's transaction is open (no reconnect inside it) */
} pg_store;

/* Query parameters, all in text form. */
typedef struct {
    const char *v[PG_PARAMS_MAX];
    char num[PG_PARAMS_MAX][PG_NUM_LEN];
    int n;
} pgp;

static void p_txt(pgp *p, const char *s)
{
    if (p->n < PG_PARAMS_MAX)
        p->v[p->n++] = s;
}

static void p_i64(pgp *p, int64_t x)
{
    if (p->n < PG_PARAMS_MAX) {
        snprintf(p->num[p->n], PG_NUM_LEN, "%lld", (long long)x);
        p->v[p->n] = p->num[p->n];
        p->n++;
    }
}

static int64_t col_i64(const PGresult *r, int row, int col)
{
    const char *s = PQgetvalue(r, row, col);
    return s != NULL && s[0] != '\0' ? (int64_t)strtoll(s, NULL, 10) : 0;
}

static void copy_col(const PGresult *r, int row, int col, char *dst, size_t len)
{
    snprintf(dst, len, "%s", PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

static char *dup_col(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : strdup(PQgetvalue(r, row, col));
}

static void lock(pg_store *st)
{
    pthread_mutex_lock(&st->mu);
    /* the database restarted or the network dropped: reconnect (outside a transaction only) */
    if (!st->in_tx && PQstatus(st->db) != CONNECTION_OK) {
        PQreset(st->db);
        if (PQstatus(st->db) == CONNECTION_OK)
            kb_log(KB_LOG_INFO, "ca_db_reconnected", NULL);
    }
}

static void unlock(pg_store *st)
{
    pthread_mutex_unlock(&st->mu);
}

/* Run sql; want: PGRES_COMMAND_OK or PGRES_TUPLES_OK. *out (if not NULL) gets the result. A
 * unique violation (SQLSTATE 23505) is KB_ERR_EXISTS; anything else is logged as KB_ERR_DB. */
static kb_err run(pg_store *st, const char *what, const char *sql, const pgp *p,
                  ExecStatusType want, PGresult **out)
{
    /* without parameters: the simple protocol, which takes several statements (the schema) */
    PGresult *r = p != NULL ? PQexecParams(st->db, sql, p->n, NULL, p->v, NULL, NULL, 0)
                            : PQexec(st->db, sql);
    const char *code;

    if (out != NULL)
        *out = NULL;
    if (PQresultStatus(r) != want) {
        code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (code != NULL && strcmp(code, "23505") == 0) {
            PQclear(r);
            return KB_ERR_EXISTS;
        }
        kb_log(KB_LOG_ERROR, "ca_db_error", "op", what, "msg", PQerrorMessage(st->db), NULL);
        PQclear(r);
        return KB_ERR_DB;
    }
    if (out != NULL)
        *out = r;
    else
        PQclear(r);
    return KB_OK;
}

static kb_err cmd(pg_store *st, const char *what, const char *sql, const pgp *p)
{
    return run(st, what, sql, p, PGRES_COMMAND_OK, NULL);
}

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS ca_gen ("
    " gen BIGSERIAL PRIMARY KEY, state TEXT NOT NULL, key_kind TEXT NOT NULL,"
    " key_ref TEXT NOT NULL, cert_pem TEXT, chain_pem TEXT NOT NULL DEFAULT '',"
    " roots_pem TEXT NOT NULL DEFAULT '', not_after BIGINT NOT NULL DEFAULT 0,"
    " created BIGINT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ca_reg ("
    " rid BIGSERIAL PRIMARY KEY, spiffe_id TEXT NOT NULL, ttl BIGINT NOT NULL,"
    " avail BIGINT NOT NULL, target TEXT NOT NULL, renewable INTEGER NOT NULL,"
    " endpoint TEXT NOT NULL DEFAULT '', region TEXT NOT NULL DEFAULT '',"
    " creds_file TEXT NOT NULL DEFAULT '', not_after BIGINT NOT NULL DEFAULT 0,"
    " next_renew BIGINT NOT NULL DEFAULT 0, failures BIGINT NOT NULL DEFAULT 0,"
    " bundle_seq BIGINT NOT NULL DEFAULT 0, created BIGINT NOT NULL,"
    " sans TEXT NOT NULL DEFAULT '', adopt_spire INTEGER NOT NULL DEFAULT 0,"
    " lease_owner TEXT NOT NULL DEFAULT '', lease_until BIGINT NOT NULL DEFAULT 0,"
    " UNIQUE (spiffe_id, target));"
    "CREATE INDEX IF NOT EXISTS ca_reg_next_renew ON ca_reg (next_renew);"
    "CREATE TABLE IF NOT EXISTS ca_audit ("
    " id BIGSERIAL PRIMARY KEY, serial TEXT NOT NULL, spiffe_id TEXT NOT NULL,"
    " target TEXT NOT NULL, reason TEXT NOT NULL, ca_gen BIGINT NOT NULL,"
    " not_after BIGINT NOT NULL, at BIGINT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS ca_issued ("
    " id BIGSERIAL PRIMARY KEY, rid BIGINT NOT NULL, serial TEXT NOT NULL,"
    " reason TEXT NOT NULL, owner TEXT NOT NULL, not_after BIGINT NOT NULL,"
    " at BIGINT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS ca_issued_rid ON ca_issued (rid);";

/* Create or migrate the schema (one transaction under the advisory lock). Version 1 is the first
 * PostgreSQL schema; later versions add steps here, expand before contract. */
static kb_err migrate(pg_store *st)
{
    PGresult *r = NULL;
    kb_err rc;
    int64_t v = 0;
    pgp p = {0};

    KB_GUARD(cmd(st, "schema", "BEGIN", NULL));
    rc = run(st, "schema", "SELECT pg_advisory_xact_lock(" PG_SCHEMA_LOCK ")", NULL,
             PGRES_TUPLES_OK, &r);
    PQclear(r);
    r = NULL;
    if (rc == KB_OK)
        rc = cmd(st, "schema",
                 "CREATE TABLE IF NOT EXISTS ca_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)", NULL);
    if (rc == KB_OK)
        rc = run(st, "schema", "SELECT v FROM ca_meta WHERE k = 'schema_version'", NULL,
                 PGRES_TUPLES_OK, &r);
    if (rc == KB_OK && PQntuples(r) == 1)
        v = col_i64(r, 0, 0);
    PQclear(r);
    if (rc == KB_OK && v > PG_SCHEMA_VERSION) {
        kb_log(KB_LOG_ERROR, "ca_db_schema_newer", "msg",
               "the database was migrated by a newer keybridge-ca; upgrade this one", NULL);
        rc = KB_ERR_SCHEMA;
    }
    if (rc == KB_OK && v < PG_SCHEMA_VERSION) {
        rc = cmd(st, "schema", SCHEMA, NULL);
        p_i64(&p, PG_SCHEMA_VERSION);
        if (rc == KB_OK)
            rc = cmd(st, "schema",
                     "INSERT INTO ca_meta (k, v) VALUES ('schema_version', $1) "
                     "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                     &p);
    }
    if (rc == KB_OK)
        return cmd(st, "schema", "COMMIT", NULL);
    (void)cmd(st, "schema", "ROLLBACK", NULL);
    return rc;
}

/* A password file must be ours and unreadable to others (libpq's own rule for ~/.pgpass). */
static kb_err check_passfile(const char *path)
{
    struct stat sb;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        kb_log(KB_LOG_ERROR, "ca_db_passfile", "path", path, "msg", strerror(errno), NULL);
        return KB_ERR_CONFIG;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (sb.st_mode & 077) != 0 ||
        sb.st_uid != geteuid()) {
        close(fd);
        kb_log(KB_LOG_ERROR, "ca_db_passfile", "path", path, "msg",
               "must be a regular file of this user, mode 0600 or 0400", NULL);
        return KB_ERR_CONFIG;
    }
    close(fd);
    return KB_OK;
}

/* The URL may name the server, database, user, TLS (sslmode=verify-full, sslrootcert) and a
 * passfile, never a password; PGPASSWORD is refused as well (it would be in /proc/PID/environ). */
static kb_err check_url(const char *url, const char *passfile)
{
    char *err = NULL;
    PQconninfoOption *o = PQconninfoParse(url, &err);
    kb_err rc = KB_OK;

    if (o == NULL) {
        /* libpq's message names the bad part; it never echoes a password value */
        kb_log(KB_LOG_ERROR, "ca_db_url_invalid", "msg", err ? err : "out of memory", NULL);
        PQfreemem(err);
        return KB_ERR_CONFIG;
    }
    for (PQconninfoOption *i = o; rc == KB_OK && i->keyword != NULL; i++) {
        if (i->val == NULL || i->val[0] == '\0')
            continue;
        if (strcmp(i->keyword, "password") == 0) {
            kb_log(KB_LOG_ERROR, "ca_db_url_invalid", "msg",
                   "the URL carries a password: put it in a 0600 passfile instead", NULL);
            rc = KB_ERR_CONFIG;
        } else if (strcmp(i->keyword, "passfile") == 0) {
            rc = check_passfile(i->val);
        }
    }
    PQconninfoFree(o);
    if (rc == KB_OK && getenv("PGPASSWORD") != NULL) {
        kb_log(KB_LOG_ERROR, "ca_db_url_invalid", "msg",
               "PGPASSWORD is set: the database password is taken only from a 0600 passfile", NULL);
        rc = KB_ERR_CONFIG;
    }
    if (rc == KB_OK && passfile != NULL)
        rc = check_passfile(passfile);
    return rc;
}

static const ca_store_ops pg_ops;
static void pg_close(ca_store *b);

/* NOTICEs ("relation ... already exists, skipping") would go to stderr: not errors, dropped. */
static void quiet_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

kb_err ca_store_pg_open(const char *url, const char *passfile, ca_store **out)
{
    const char *kw[5] = {"connect_timeout", "application_name", "dbname", NULL, NULL};
    const char *val[5] = {PG_CONNECT_TIMEOUT, "keybridge-ca", url, NULL, NULL};
    pthread_mutexattr_t a;
    pg_store *st;
    kb_err rc;

    KB_ENSURE_REF(url);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD(check_url(url, passfile));
    if (passfile != NULL) {
        kw[3] = "passfile";
        val[3] = passfile;
    }
    st = calloc(1, sizeof(*st));
    KB_ENSURE(st != NULL, KB_ERR_NOMEM);
    st->base.ops = &pg_ops;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&st->mu, &a);
    pthread_mutexattr_destroy(&a);
    st->db = PQconnectdbParams(kw, val, 1);
    if (st->db == NULL || PQstatus(st->db) != CONNECTION_OK) {
        kb_log(KB_LOG_ERROR, "ca_db_open_failed", "backend", "postgresql", "msg",
               st->db ? PQerrorMessage(st->db) : "out of memory", NULL);
        pg_close(&st->base);
        return KB_ERR_UNAVAILABLE;
    }
    PQsetNoticeProcessor(st->db, quiet_notice, NULL);
    rc = migrate(st);
    if (rc != KB_OK) {
        pg_close(&st->base);
        return rc;
    }
    *out = &st->base;
    return KB_OK;
}

static void pg_close(ca_store *b)
{
    pg_store *st = (pg_store *)b;

    PQfinish(st->db);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

static kb_err pg_meta_get(ca_store *b, const char *k, char *v, size_t vlen)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    pgp p = {0};
    kb_err rc;

    p_txt(&p, k);
    lock(st);
    rc = run(st, "meta_get", "SELECT v FROM ca_meta WHERE k = $1", &p, PGRES_TUPLES_OK, &r);
    if (rc == KB_OK && PQntuples(r) == 1)
        copy_col(r, 0, 0, v, vlen);
    else if (rc == KB_OK)
        rc = KB_ERR_NOT_FOUND;
    PQclear(r);
    unlock(st);
    return rc;
}

static kb_err pg_meta_set(ca_store *b, const char *k, const char *v)
{
    pg_store *st = (pg_store *)b;
    pgp p = {0};
    kb_err rc;

    p_txt(&p, k);
    p_txt(&p, v);
    lock(st);
    rc = cmd(st, "meta_set",
             "INSERT INTO ca_meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = $2", &p);
    unlock(st);
    return rc;
}

static kb_err pg_meta_incr(ca_store *b, const char *k, int64_t *out)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    pgp p = {0};
    kb_err rc;

    p_txt(&p, k);
    lock(st);
    rc = run(st, "meta_incr",
             "INSERT INTO ca_meta (k, v) VALUES ($1, '1') ON CONFLICT (k) DO UPDATE "
             "SET v = (ca_meta.v::bigint + 1)::text RETURNING v::bigint",
             &p, PGRES_TUPLES_OK, &r);
    if (rc == KB_OK && PQntuples(r) == 1)
        *out = col_i64(r, 0, 0);
    else if (rc == KB_OK)
        rc = KB_ERR_DB;
    PQclear(r);
    unlock(st);
    return rc;
}

static kb_err pg_gen_add(ca_store *b, ca_gen *g)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    pgp p = {0};
    kb_err rc;

    p_txt(&p, g->state);
    p_txt(&p, g->key_kind);
    p_txt(&p, g->key_ref);
    p_txt(&p, g->cert_pem); /* NULL while pending */
    p_txt(&p, g->chain_pem ? g->chain_pem : "");
    p_txt(&p, g->roots_pem ? g->roots_pem : "");
    p_i64(&p, g->not_after);
    p_i64(&p, (int64_t)time(NULL));
    lock(st);
    rc = run(st, "gen_add",
             "INSERT INTO ca_gen (state, key_kind, key_ref, cert_pem, chain_pem, roots_pem, "
             "not_after, created) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) RETURNING gen",
             &p, PGRES_TUPLES_OK, &r);
    if (rc == KB_OK)
        g->gen = col_i64(r, 0, 0);
    PQclear(r);
    unlock(st);
    return rc;
}

static kb_err pg_gen_list(ca_store *b, ca_gen **out, size_t *n)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    ca_gen *v = NULL;
    size_t cnt = 0;
    kb_err rc;

    *out = NULL;
    *n = 0;
    lock(st);
    rc = run(st, "gen_list",
             "SELECT gen, state, key_kind, key_ref, cert_pem, chain_pem, roots_pem, not_after, "
             "created FROM ca_gen ORDER BY gen",
             NULL, PGRES_TUPLES_OK, &r);
    unlock(st);
    KB_GUARD(rc);
    cnt = (size_t)PQntuples(r);
    if (cnt > 0 && (v = calloc(cnt, sizeof(*v))) == NULL) {
        PQclear(r);
        return KB_ERR_NOMEM;
    }
    for (int i = 0; i < (int)cnt; i++) {
        v[i].gen = col_i64(r, i, 0);
        copy_col(r, i, 1, v[i].state, sizeof(v[i].state));
        copy_col(r, i, 2, v[i].key_kind, sizeof(v[i].key_kind));
        copy_col(r, i, 3, v[i].key_ref, sizeof(v[i].key_ref));
        v[i].cert_pem = dup_col(r, i, 4);
        v[i].chain_pem = dup_col(r, i, 5);
        v[i].roots_pem = dup_col(r, i, 6);
        v[i].not_after = col_i64(r, i, 7);
        v[i].created = col_i64(r, i, 8);
    }
    PQclear(r);
    *out = v;
    *n = cnt;
    return KB_OK;
}

static kb_err pg_gen_update(ca_store *b, const ca_gen *g)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    pgp p = {0};
    kb_err rc;

    p_txt(&p, g->state);
    p_txt(&p, g->cert_pem);
    p_txt(&p, g->chain_pem ? g->chain_pem : "");
    p_txt(&p, g->roots_pem ? g->roots_pem : "");
    p_i64(&p, g->not_after);
    p_i64(&p, g->gen);
    lock(st);
    rc = run(st, "gen_update",
             "UPDATE ca_gen SET state = $1, cert_pem = $2, chain_pem = $3, roots_pem = $4, "
             "not_after = $5 WHERE gen = $6",
             &p, PGRES_COMMAND_OK, &r);
    if (rc == KB_OK && strcmp(PQcmdTuples(r), "1") != 0)
        rc = KB_ERR_NOT_FOUND;
    PQclear(r);
    unlock(st);
    return rc;
}

static kb_err pg_gen_activate(ca_store *b, int64_t gen)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    pgp p = {0};
    kb_err rc;

    p_i64(&p, gen);
    lock(st);
    rc = cmd(st, "activate", "BEGIN", NULL);
    if (rc == KB_OK)
        rc =
            cmd(st, "activate", "UPDATE ca_gen SET state = 'retired' WHERE state = 'active'", NULL);
    if (rc == KB_OK)
        rc = run(st, "activate",
                 "UPDATE ca_gen SET state = 'active' WHERE gen = $1 AND cert_pem IS NOT NULL AND "
                 "state IN ('prepared', 'pending', 'active', 'retired')",
                 &p, PGRES_COMMAND_OK, &r);
    if (rc == KB_OK && strcmp(PQcmdTuples(r), "1") != 0)
        rc = KB_ERR_NOT_FOUND;
    PQclear(r);
    if (rc == KB_OK)
        rc = cmd(st, "activate", "COMMIT", NULL);
    else
        (void)cmd(st, "activate", "ROLLBACK", NULL);
    unlock(st);
    return rc;
}

#define REG_COLS                                                                                   \
    "rid, spiffe_id, ttl, avail, target, renewable, endpoint, region, creds_file, not_after, "     \
    "next_renew, failures, bundle_seq, created, sans, adopt_spire, lease_owner, lease_until"

static void reg_row(const PGresult *q, int i, ca_reg *r)
{
    memset(r, 0, sizeof(*r));
    r->rid = col_i64(q, i, 0);
    copy_col(q, i, 1, r->spiffe_id, sizeof(r->spiffe_id));
    r->ttl = col_i64(q, i, 2);
    r->avail = col_i64(q, i, 3);
    copy_col(q, i, 4, r->target, sizeof(r->target));
    r->renewable = col_i64(q, i, 5) != 0;
    copy_col(q, i, 6, r->endpoint, sizeof(r->endpoint));
    copy_col(q, i, 7, r->region, sizeof(r->region));
    copy_col(q, i, 8, r->creds_file, sizeof(r->creds_file));
    r->not_after = col_i64(q, i, 9);
    r->next_renew = col_i64(q, i, 10);
    r->failures = col_i64(q, i, 11);
    r->bundle_seq = col_i64(q, i, 12);
    r->created = col_i64(q, i, 13);
    copy_col(q, i, 14, r->sans, sizeof(r->sans));
    r->adopt_spire = col_i64(q, i, 15) != 0;
    copy_col(q, i, 16, r->lease_owner, sizeof(r->lease_owner));
    r->lease_until = col_i64(q, i, 17);
}

/* Rows of r as a malloc'd array, sorted by rid (RETURNING has no order). */
static int by_rid(const void *a, const void *b)
{
    int64_t x = ((const ca_reg *)a)->rid, y = ((const ca_reg *)b)->rid;
    return (x > y) - (x < y);
}

static kb_err reg_rows(const PGresult *r, ca_reg **out, size_t *n)
{
    size_t cnt = (size_t)PQntuples(r);
    ca_reg *v = NULL;

    *out = NULL;
    *n = 0;
    if (cnt == 0)
        return KB_OK;
    v = calloc(cnt, sizeof(*v));
    KB_ENSURE(v != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < cnt; i++)
        reg_row(r, (int)i, &v[i]);
    qsort(v, cnt, sizeof(*v), by_rid);
    *out = v;
    *n = cnt;
    return KB_OK;
}

static kb_err pg_reg_add(ca_store *b, ca_reg *r)
{
    pg_store *st = (pg_store *)b;
    PGresult *q = NULL;
    pgp p = {0};
    kb_err rc;

    p_txt(&p, r->spiffe_id);
    p_i64(&p, r->ttl);
    p_i64(&p, r->avail);
    p_txt(&p, r->target);
    p_i64(&p, r->renewable ? 1 : 0);
    p_txt(&p, r->endpoint);
    p_txt(&p, r->region);
    p_txt(&p, r->creds_file);
    p_i64(&p, (int64_t)time(NULL));
    p_txt(&p, r->sans);
    p_i64(&p, r->adopt_spire ? 1 : 0);
    lock(st);
    rc = run(st, "reg_add",
             "INSERT INTO ca_reg (spiffe_id, ttl, avail, target, renewable, endpoint, region, "
             "creds_file, created, sans, adopt_spire) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) "
             "RETURNING rid",
             &p, PGRES_TUPLES_OK, &q);
    if (rc == KB_OK)
        r->rid = col_i64(q, 0, 0);
    PQclear(q);
    unlock(st);
    return rc;
}

static kb_err pg_reg_get(ca_store *b, int64_t rid, ca_reg *out)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    pgp p = {0};
    kb_err rc;

    p_i64(&p, rid);
    lock(st);
    rc = run(st, "reg_get", "SELECT " REG_COLS " FROM ca_reg WHERE rid = $1", &p, PGRES_TUPLES_OK,
             &r);
    if (rc == KB_OK && PQntuples(r) == 1)
        reg_row(r, 0, out);
    else if (rc == KB_OK)
        rc = KB_ERR_NOT_FOUND;
    PQclear(r);
    unlock(st);
    return rc;
}

static kb_err pg_reg_list(ca_store *b, ca_reg **out, size_t *n)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    kb_err rc;

    *out = NULL;
    *n = 0;
    lock(st);
    rc = run(st, "reg_list", "SELECT " REG_COLS " FROM ca_reg ORDER BY rid", NULL, PGRES_TUPLES_OK,
             &r);
    unlock(st);
    if (rc == KB_OK)
        rc = reg_rows(r, out, n);
    PQclear(r);
    return rc;
}

static kb_err pg_reg_renewable(ca_store *b, const char *spiffe_id, int64_t *ttl, char *sans,
                               size_t sans_len)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    pgp p = {0};
    kb_err rc;

    p_txt(&p, spiffe_id);
    lock(st);
    rc = run(st, "reg_renewable",
             "SELECT ttl, sans FROM ca_reg WHERE spiffe_id = $1 AND renewable = 1 "
             "ORDER BY rid DESC LIMIT 1",
             &p, PGRES_TUPLES_OK, &r);
    if (rc == KB_OK && PQntuples(r) == 1) {
        *ttl = col_i64(r, 0, 0);
        if (sans != NULL && sans_len > 0)
            copy_col(r, 0, 1, sans, sans_len);
    } else if (rc == KB_OK) {
        rc = KB_ERR_NOT_FOUND;
    }
    PQclear(r);
    unlock(st);
    return rc;
}

static kb_err pg_reg_remove(ca_store *b, int64_t rid, ca_reg *removed)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    pgp p = {0};
    kb_err rc;

    p_i64(&p, rid);
    lock(st);
    rc = cmd(st, "reg_remove", "BEGIN", NULL);
    if (rc == KB_OK) /* waits for a renewal's write guard on this row */
        rc = run(st, "reg_remove", "SELECT " REG_COLS " FROM ca_reg WHERE rid = $1 FOR UPDATE", &p,
                 PGRES_TUPLES_OK, &r);
    if (rc == KB_OK && PQntuples(r) == 1)
        reg_row(r, 0, removed);
    else if (rc == KB_OK)
        rc = KB_ERR_NOT_FOUND;
    PQclear(r);
    if (rc == KB_OK)
        rc = cmd(st, "reg_remove", "DELETE FROM ca_reg WHERE rid = $1", &p);
    if (rc == KB_OK)
        rc = cmd(st, "reg_remove", "COMMIT", NULL);
    else
        (void)cmd(st, "reg_remove", "ROLLBACK", NULL);
    unlock(st);
    return rc;
}

static kb_err pg_reg_claim(ca_store *b, const ca_claim *c, ca_reg **out, size_t *n)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    pgp p = {0};
    kb_err rc;

    p_txt(&p, c->owner);
    p_i64(&p, c->lease);
    p_i64(&p, c->after_rid);
    p_i64(&p, c->force ? 1 : 0);
    p_i64(&p, c->now);
    p_i64(&p, c->bundle_seq);
    p_i64(&p, (int64_t)c->max);
    lock(st);
    /* SKIP LOCKED: rows another replica is claiming or writing (write guard) are passed over,
     * not waited for; the lease keeps them from being claimed again once those locks go. */
    rc = run(st, "reg_claim",
             "UPDATE ca_reg SET lease_owner = $1, lease_until = " PG_NOW " + $2 "
             "WHERE rid IN (SELECT rid FROM ca_reg WHERE rid > $3 AND ($4 = 1 OR not_after = 0 "
             "OR next_renew <= $5 OR bundle_seq < $6) AND (lease_until <= " PG_NOW
             " OR lease_owner = $1) ORDER BY rid LIMIT $7 FOR UPDATE SKIP LOCKED) "
             "RETURNING " REG_COLS,
             &p, PGRES_TUPLES_OK, &r);
    unlock(st);
    if (rc == KB_OK)
        rc = reg_rows(r, out, n);
    PQclear(r);
    return rc;
}

static kb_err pg_reg_retry(ca_store *b, int64_t rid, const char *owner, int64_t next_renew,
                           int64_t failures)
{
    pg_store *st = (pg_store *)b;
    pgp p = {0};
    kb_err rc;

    p_i64(&p, next_renew);
    p_i64(&p, failures);
    p_i64(&p, rid);
    p_txt(&p, owner);
    lock(st);
    rc = cmd(st, "reg_retry",
             "UPDATE ca_reg SET next_renew = $1, failures = $2, lease_owner = '', lease_until = 0 "
             "WHERE rid = $3 AND (lease_owner = $4 OR lease_owner = '')",
             &p);
    unlock(st);
    return rc;
}

static kb_err pg_reg_done(ca_store *b, const ca_done *d)
{
    pg_store *st = (pg_store *)b;
    pgp p = {0}, q = {0};
    kb_err rc;

    p_i64(&p, d->not_after);
    p_i64(&p, d->next_renew);
    p_i64(&p, d->bundle_seq);
    p_i64(&p, d->rid);
    p_i64(&q, d->rid);
    p_txt(&q, d->serial);
    p_txt(&q, d->reason);
    p_txt(&q, d->owner);
    p_i64(&q, d->not_after);
    p_i64(&q, d->at);
    lock(st);
    rc = cmd(st, "reg_done",
             "UPDATE ca_reg SET not_after = $1, next_renew = $2, failures = 0, bundle_seq = $3, "
             "lease_owner = '', lease_until = 0 WHERE rid = $4",
             &p);
    if (rc == KB_OK)
        rc = cmd(st, "reg_done",
                 "INSERT INTO ca_issued (rid, serial, reason, owner, not_after, at) "
                 "VALUES ($1,$2,$3,$4,$5,$6)",
                 &q);
    unlock(st);
    return rc;
}

/* The write guard: a transaction holding the registration's row lock until write_end. */
static kb_err pg_write_begin(ca_store *b, int64_t rid, const char *owner)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    pgp p = {0};
    kb_err rc;

    p_i64(&p, rid);
    lock(st);
    rc = cmd(st, "write_begin", "BEGIN", NULL);
    if (rc != KB_OK) {
        unlock(st);
        return rc;
    }
    st->in_tx = 1;
    rc = run(st, "write_begin", "SELECT lease_owner FROM ca_reg WHERE rid = $1 FOR UPDATE", &p,
             PGRES_TUPLES_OK, &r);
    if (rc == KB_OK && PQntuples(r) != 1)
        rc = KB_ERR_CONFLICT; /* removed while the renewal was under way */
    else if (rc == KB_OK && owner != NULL && strcmp(PQgetvalue(r, 0, 0), owner) != 0)
        rc = KB_ERR_CONFLICT; /* the lease ended and another replica took it */
    PQclear(r);
    if (rc != KB_OK) {
        (void)cmd(st, "write_begin", "ROLLBACK", NULL);
        st->in_tx = 0;
        unlock(st);
    }
    return rc; /* on KB_OK the lock and the transaction are held until write_end */
}

static kb_err pg_write_end(ca_store *b, int commit)
{
    pg_store *st = (pg_store *)b;
    kb_err rc = cmd(st, "write_end", commit ? "COMMIT" : "ROLLBACK", NULL);

    if (rc != KB_OK && commit)
        (void)cmd(st, "write_end", "ROLLBACK", NULL);
    st->in_tx = 0;
    unlock(st);
    return rc;
}

/* One INSERT: committed on return (synchronous_commit is the database's; on), or part of the
 * write guard's transaction when this thread holds it (the recursive mutex keeps other threads
 * off the connection meanwhile). */
static kb_err pg_audit_add(ca_store *b, const char *serial, const char *spiffe_id,
                           const char *target, const char *reason, int64_t gen, int64_t not_after,
                           int64_t at)
{
    pg_store *st = (pg_store *)b;
    pgp p = {0};
    kb_err rc;

    p_txt(&p, serial);
    p_txt(&p, spiffe_id);
    p_txt(&p, target);
    p_txt(&p, reason);
    p_i64(&p, gen);
    p_i64(&p, not_after);
    p_i64(&p, at);
    lock(st);
    rc = cmd(st, "audit_add",
             "INSERT INTO ca_audit (serial, spiffe_id, target, reason, ca_gen, not_after, at) "
             "VALUES ($1,$2,$3,$4,$5,$6,$7)",
             &p);
    unlock(st);
    return rc;
}

static kb_err pg_audit_each(ca_store *b, ca_audit_fn fn, void *arg)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    kb_err rc;

    lock(st);
    rc = run(st, "audit_each",
             "SELECT serial, spiffe_id, target, reason, ca_gen, not_after, at FROM ca_audit "
             "ORDER BY id",
             NULL, PGRES_TUPLES_OK, &r);
    unlock(st);
    KB_GUARD(rc);
    for (int i = 0; i < PQntuples(r); i++)
        fn(arg, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
           col_i64(r, i, 4), col_i64(r, i, 5), col_i64(r, i, 6));
    PQclear(r);
    return KB_OK;
}

static kb_err pg_issued_each(ca_store *b, ca_issued_fn fn, void *arg)
{
    pg_store *st = (pg_store *)b;
    PGresult *r = NULL;
    kb_err rc;

    lock(st);
    rc = run(st, "issued_each",
             "SELECT rid, serial, reason, owner, not_after, at FROM ca_issued ORDER BY id", NULL,
             PGRES_TUPLES_OK, &r);
    unlock(st);
    KB_GUARD(rc);
    for (int i = 0; i < PQntuples(r); i++)
        fn(arg, col_i64(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
           col_i64(r, i, 4), col_i64(r, i, 5));
    PQclear(r);
    return KB_OK;
}

static const ca_store_ops pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .meta_get = pg_meta_get,
    .meta_set = pg_meta_set,
    .meta_incr = pg_meta_incr,
    .gen_add = pg_gen_add,
    .gen_list = pg_gen_list,
    .gen_update = pg_gen_update,
    .gen_activate = pg_gen_activate,
    .reg_add = pg_reg_add,
    .reg_get = pg_reg_get,
    .reg_list = pg_reg_list,
    .reg_renewable = pg_reg_renewable,
    .reg_remove = pg_reg_remove,
    .reg_claim = pg_reg_claim,
    .reg_retry = pg_reg_retry,
    .reg_done = pg_reg_done,
    .write_begin = pg_write_begin,
    .write_end = pg_write_end,
    .audit_add = pg_audit_add,
    .audit_each = pg_audit_each,
    .issued_each = pg_issued_each,
};
