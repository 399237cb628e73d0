/* ca_store_sqlite.c - keybridge-ca's state in SQLite (see ca_store.h; one host). */
#include "ca_store_impl.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "lib/buf.h"
#include "lib/log.h"

#define SCHEMA_VERSION 4 /* 2: reg.sans; 3: reg.adopt_spire; 4: leases, issued log */
#define BUSY_TIMEOUT_MS 30000

/* One audit row waiting for a group commit; lives on its caller's stack until committed. */
struct audit_row {
    const char *serial, *spiffe_id, *target, *reason;
    int64_t gen, not_after, at;
    kb_err rc;         /* set by the committing thread */
    int done;          /* committed (or failed): rc is final */
    int lead;          /* asked to commit the queue */
    pthread_cond_t cv; /* its writer waits here: woken once, when done or asked to lead */
    struct audit_row *next;
};

typedef struct {
    ca_store base; /* first: the ops table */
    sqlite3 *db;
    pthread_mutex_t mu; /* recursive: the write guard spans calls from one thread */
    /* Audit group commit: rows queue under amu; one thread at a time (the leader) takes the
     * whole queue and commits it in one transaction - one fsync for the batch - then wakes the
     * writers, each of which returns only once its own row is committed. */
    /* A second, read-only connection for the API's per-request registration look-up: WAL
     * readers never wait for the writer, so a renewal request is not queued behind an audit
     * commit's fsync (https://sqlite.org/wal.html 2.2). NULL: the main connection is used. */
    sqlite3 *rdb;
    sqlite3_stmt *r_renewable;
    pthread_mutex_t rmu;
    pthread_mutex_t amu;
    sqlite3_stmt *a_begin, *a_ins, *a_commit; /* prepared once (main connection, under mu) */
    struct audit_row *aq_head, **aq_tail;
    int a_leader;
} sq_store;

/* The write guard (write_begin .. write_end) held by this thread: audit rows then go straight
 * into its transaction (the leader could not begin another, and must not wait for itself). */
static _Thread_local int tl_guard;

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS gen ("
    " gen INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL, key_kind TEXT NOT NULL,"
    " key_ref TEXT NOT NULL, cert_pem TEXT, chain_pem TEXT NOT NULL DEFAULT '',"
    " roots_pem TEXT NOT NULL DEFAULT '', not_after INTEGER NOT NULL DEFAULT 0,"
    " created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS reg ("
    " rid INTEGER PRIMARY KEY AUTOINCREMENT, spiffe_id TEXT NOT NULL, ttl INTEGER NOT NULL,"
    " avail INTEGER NOT NULL, target TEXT NOT NULL, renewable INTEGER NOT NULL,"
    " endpoint TEXT NOT NULL DEFAULT '', region TEXT NOT NULL DEFAULT '',"
    " creds_file TEXT NOT NULL DEFAULT '', not_after INTEGER NOT NULL DEFAULT 0,"
    " next_renew INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,"
    " bundle_seq INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL,"
    " sans TEXT NOT NULL DEFAULT '', adopt_spire INTEGER NOT NULL DEFAULT 0,"
    " lease_owner TEXT NOT NULL DEFAULT '', lease_until INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE (spiffe_id, target));"
    "CREATE TABLE IF NOT EXISTS audit ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, serial TEXT NOT NULL, spiffe_id TEXT NOT NULL,"
    " target TEXT NOT NULL, reason TEXT NOT NULL, ca_gen INTEGER NOT NULL,"
    " not_after INTEGER NOT NULL, at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS issued ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, rid INTEGER NOT NULL, serial TEXT NOT NULL,"
    " reason TEXT NOT NULL, owner TEXT NOT NULL, not_after INTEGER NOT NULL,"
    " at INTEGER NOT NULL);";

/* The newest renewable registration of an ID (the UNIQUE (spiffe_id, target) index serves it). */
#define RENEWABLE_SQL                                                                              \
    "SELECT ttl, sans FROM reg WHERE spiffe_id = ? AND renewable = 1 ORDER BY rid DESC LIMIT 1"

static void lock(sq_store *st)
{
    pthread_mutex_lock(&st->mu);
}

static void unlock(sq_store *st)
{
    pthread_mutex_unlock(&st->mu);
}

static kb_err db_err(sq_store *st, const char *what)
{
    kb_log(KB_LOG_ERROR, "ca_db_error", "op", what, "msg", sqlite3_errmsg(st->db), NULL);
    return KB_ERR_DB;
}

static kb_err exec(sq_store *st, const char *sql)
{
    char *em = NULL;
    int r = sqlite3_exec(st->db, sql, NULL, NULL, &em);

    if (r != SQLITE_OK) {
        kb_log(KB_LOG_ERROR, "ca_db_error", "op", "exec", "msg", em ? em : "?", NULL);
        sqlite3_free(em);
        return KB_ERR_DB;
    }
    return KB_OK;
}

static const ca_store_ops sq_ops;
static void sq_close(ca_store *b);

kb_err ca_store_sqlite_open(const char *path, ca_store **out)
{
    pthread_mutexattr_t a;
    sq_store *st;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;
    int v = 0;

    KB_ENSURE_REF(path);
    KB_ENSURE_REF(out);
    *out = NULL;
    st = calloc(1, sizeof(*st));
    KB_ENSURE(st != NULL, KB_ERR_NOMEM);
    st->base.ops = &sq_ops;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&st->mu, &a);
    pthread_mutexattr_destroy(&a);
    pthread_mutex_init(&st->amu, NULL);
    pthread_mutex_init(&st->rmu, NULL);
    st->aq_tail = &st->aq_head;
    if (sqlite3_open_v2(path, &st->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        kb_log(KB_LOG_ERROR, "ca_db_open_failed", "path", path, "msg",
               st->db ? sqlite3_errmsg(st->db) : "out of memory", NULL);
        rc = KB_ERR_DB;
        goto out;
    }
    sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
    KB_GUARD_OUT(rc, exec(st, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                              "PRAGMA foreign_keys=ON;"));
    KB_ENSURE_OUT(rc, sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK,
                  db_err(st, "user_version"));
    if (sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    KB_ENSURE_OUT(rc, v <= SCHEMA_VERSION, KB_ERR_SCHEMA);
    KB_GUARD_OUT(rc, exec(st, "BEGIN IMMEDIATE"));
    rc = exec(st, SCHEMA);
    /* version 1 -> 2: registrations gain their DNS/IP SANs (none for existing rows);
     * 2 -> 3: the SPIRE adoption flag (off for existing rows) */
    if (rc == KB_OK && v == 1)
        rc = exec(st, "ALTER TABLE reg ADD COLUMN sans TEXT NOT NULL DEFAULT ''");
    if (rc == KB_OK && v >= 1 && v < 3)
        rc = exec(st, "ALTER TABLE reg ADD COLUMN adopt_spire INTEGER NOT NULL DEFAULT 0");
    /* 3 -> 4: renewal leases (none held) and the issued log (CREATE above) */
    if (rc == KB_OK && v >= 1 && v < 4)
        rc = exec(st, "ALTER TABLE reg ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';"
                      "ALTER TABLE reg ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0");
    if (rc == KB_OK)
        rc = exec(st, "PRAGMA user_version=4; COMMIT");
    if (rc != KB_OK)
        (void)exec(st, "ROLLBACK");
    KB_GUARD_OUT(rc, rc);
    if (sqlite3_open_v2(path, &st->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(st->rdb, RENEWABLE_SQL, -1, &st->r_renewable, NULL) != SQLITE_OK) {
        sqlite3_finalize(st->r_renewable); /* fall back to the main connection */
        st->r_renewable = NULL;
        sqlite3_close(st->rdb);
        st->rdb = NULL;
    } else {
        sqlite3_busy_timeout(st->rdb, BUSY_TIMEOUT_MS);
    }
    *out = &st->base;
    st = NULL;
out:
    if (st != NULL)
        sq_close(&st->base);
    return rc;
}

static void sq_close(ca_store *b)
{
    sq_store *st = (sq_store *)b;
    if (st == NULL)
        return;
    sqlite3_finalize(st->r_renewable);
    sqlite3_finalize(st->a_begin);
    sqlite3_finalize(st->a_ins);
    sqlite3_finalize(st->a_commit);
    sqlite3_close(st->rdb);
    sqlite3_close(st->db);
    pthread_mutex_destroy(&st->mu);
    pthread_mutex_destroy(&st->rmu);
    pthread_mutex_destroy(&st->amu);
    free(st);
}

static kb_err prep(sq_store *st, const char *sql, sqlite3_stmt **q)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, q, NULL) != SQLITE_OK)
        return db_err(st, "prepare");
    return KB_OK;
}

static void copy_col(sqlite3_stmt *q, int i, char *dst, size_t len)
{
    const unsigned char *t = sqlite3_column_text(q, i);

    snprintf(dst, len, "%s", t ? (const char *)t : "");
}

static char *dup_col(sqlite3_stmt *q, int i)
{
    const unsigned char *t = sqlite3_column_text(q, i);

    return t ? strdup((const char *)t) : NULL;
}

static kb_err sq_meta_get(ca_store *b, const char *k, char *v, size_t vlen)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_ERR_NOT_FOUND;
    int r;

    lock(st);
    KB_GUARD_OUT(rc, prep(st, "SELECT v FROM meta WHERE k = ?", &q));
    sqlite3_bind_text(q, 1, k, -1, SQLITE_STATIC);
    r = sqlite3_step(q);
    if (r == SQLITE_ROW) {
        copy_col(q, 0, v, vlen);
        rc = KB_OK;
    } else if (r != SQLITE_DONE) {
        rc = db_err(st, "meta_get");
    } else {
        rc = KB_ERR_NOT_FOUND;
    }
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

static kb_err sq_meta_set(ca_store *b, const char *k, const char *v)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;

    lock(st);
    KB_GUARD_OUT(rc, prep(st,
                          "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE "
                          "SET v = excluded.v",
                          &q));
    sqlite3_bind_text(q, 1, k, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, v, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE)
        rc = db_err(st, "meta_set");
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

static kb_err sq_meta_incr(ca_store *b, const char *k, int64_t *out)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;

    lock(st);
    KB_GUARD_OUT(rc, prep(st,
                          "INSERT INTO meta (k, v) VALUES (?, '1') ON CONFLICT (k) DO UPDATE "
                          "SET v = CAST(v AS INTEGER) + 1 RETURNING CAST(v AS INTEGER)",
                          &q));
    sqlite3_bind_text(q, 1, k, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        rc = db_err(st, "meta_incr");
        goto out;
    }
    *out = sqlite3_column_int64(q, 0);
    (void)sqlite3_step(q);
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

static kb_err sq_gen_add(ca_store *b, ca_gen *g)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(g);
    lock(st);
    KB_GUARD_OUT(rc, prep(st,
                          "INSERT INTO gen (state, key_kind, key_ref, cert_pem, chain_pem, "
                          "roots_pem, not_after, created) VALUES (?,?,?,?,?,?,?,?)",
                          &q));
    sqlite3_bind_text(q, 1, g->state, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, g->key_kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, g->key_ref, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, g->cert_pem, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, g->chain_pem ? g->chain_pem : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, g->roots_pem ? g->roots_pem : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 7, g->not_after);
    sqlite3_bind_int64(q, 8, (int64_t)time(NULL));
    if (sqlite3_step(q) != SQLITE_DONE) {
        rc = db_err(st, "gen_add");
        goto out;
    }
    g->gen = sqlite3_last_insert_rowid(st->db);
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

static kb_err sq_gen_list(ca_store *b, ca_gen **out, size_t *n)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    ca_gen *v = NULL;
    size_t cnt = 0, cap = 0;
    kb_err rc = KB_OK;
    int r;

    *out = NULL;
    *n = 0;
    lock(st);
    KB_GUARD_OUT(rc, prep(st,
                          "SELECT gen, state, key_kind, key_ref, cert_pem, chain_pem, roots_pem, "
                          "not_after, created FROM gen ORDER BY gen",
                          &q));
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        KB_GUARD_OUT(rc, kb_grow((void **)&v, &cap, cnt, sizeof(*v)));
        v[cnt].gen = sqlite3_column_int64(q, 0);
        copy_col(q, 1, v[cnt].state, sizeof(v[cnt].state));
        copy_col(q, 2, v[cnt].key_kind, sizeof(v[cnt].key_kind));
        copy_col(q, 3, v[cnt].key_ref, sizeof(v[cnt].key_ref));
        v[cnt].cert_pem = dup_col(q, 4);
        v[cnt].chain_pem = dup_col(q, 5);
        v[cnt].roots_pem = dup_col(q, 6);
        v[cnt].not_after = sqlite3_column_int64(q, 7);
        v[cnt].created = sqlite3_column_int64(q, 8);
        cnt++;
    }
    if (r != SQLITE_DONE)
        rc = db_err(st, "gen_list");
out:
    sqlite3_finalize(q);
    unlock(st);
    if (rc != KB_OK) {
        ca_gen_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return KB_OK;
}

static kb_err sq_gen_update(ca_store *b, const ca_gen *g)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;

    lock(st);
    KB_GUARD_OUT(rc, prep(st,
                          "UPDATE gen SET state = ?, cert_pem = ?, chain_pem = ?, roots_pem = ?, "
                          "not_after = ? WHERE gen = ?",
                          &q));
    sqlite3_bind_text(q, 1, g->state, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, g->cert_pem, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, g->chain_pem ? g->chain_pem : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, g->roots_pem ? g->roots_pem : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 5, g->not_after);
    sqlite3_bind_int64(q, 6, g->gen);
    if (sqlite3_step(q) != SQLITE_DONE)
        rc = db_err(st, "gen_update");
    else if (sqlite3_changes(st->db) != 1)
        rc = KB_ERR_NOT_FOUND;
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

static kb_err sq_gen_activate(ca_store *b, int64_t gen)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;

    lock(st);
    KB_GUARD_OUT(rc, exec(st, "BEGIN IMMEDIATE"));
    KB_GUARD_OUT(rc, prep(st, "UPDATE gen SET state = 'retired' WHERE state = 'active'", &q));
    if (sqlite3_step(q) != SQLITE_DONE)
        rc = db_err(st, "activate");
    sqlite3_finalize(q);
    q = NULL;
    if (rc == KB_OK) {
        rc = prep(st,
                  "UPDATE gen SET state = 'active' WHERE gen = ? AND cert_pem IS NOT NULL AND "
                  "state IN ('prepared', 'pending', 'active', 'retired')",
                  &q);
        if (rc == KB_OK) {
            sqlite3_bind_int64(q, 1, gen);
            if (sqlite3_step(q) != SQLITE_DONE)
                rc = db_err(st, "activate");
            else if (sqlite3_changes(st->db) != 1)
                rc = KB_ERR_NOT_FOUND;
        }
    }
    if (rc == KB_OK)
        rc = exec(st, "COMMIT");
    if (rc != KB_OK)
        (void)exec(st, "ROLLBACK");
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

#define REG_COLS                                                                                   \
    "rid, spiffe_id, ttl, avail, target, renewable, endpoint, region, creds_file, not_after, "     \
    "next_renew, failures, bundle_seq, created, sans, adopt_spire, lease_owner, lease_until"

static void reg_row(sqlite3_stmt *q, ca_reg *r)
{
    memset(r, 0, sizeof(*r));
    r->rid = sqlite3_column_int64(q, 0);
    copy_col(q, 1, r->spiffe_id, sizeof(r->spiffe_id));
    r->ttl = sqlite3_column_int64(q, 2);
    r->avail = sqlite3_column_int64(q, 3);
    copy_col(q, 4, r->target, sizeof(r->target));
    r->renewable = sqlite3_column_int(q, 5);
    copy_col(q, 6, r->endpoint, sizeof(r->endpoint));
    copy_col(q, 7, r->region, sizeof(r->region));
    copy_col(q, 8, r->creds_file, sizeof(r->creds_file));
    r->not_after = sqlite3_column_int64(q, 9);
    r->next_renew = sqlite3_column_int64(q, 10);
    r->failures = sqlite3_column_int64(q, 11);
    r->bundle_seq = sqlite3_column_int64(q, 12);
    r->created = sqlite3_column_int64(q, 13);
    copy_col(q, 14, r->sans, sizeof(r->sans));
    r->adopt_spire = sqlite3_column_int(q, 15);
    copy_col(q, 16, r->lease_owner, sizeof(r->lease_owner));
    r->lease_until = sqlite3_column_int64(q, 17);
}

static kb_err sq_reg_add(ca_store *b, ca_reg *r)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;
    int s;

    KB_ENSURE_REF(r);
    lock(st);
    KB_GUARD_OUT(rc, prep(st,
                          "INSERT INTO reg (spiffe_id, ttl, avail, target, renewable, endpoint, "
                          "region, creds_file, created, sans, adopt_spire) "
                          "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                          &q));
    sqlite3_bind_text(q, 1, r->spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, r->ttl);
    sqlite3_bind_int64(q, 3, r->avail);
    sqlite3_bind_text(q, 4, r->target, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 5, r->renewable ? 1 : 0);
    sqlite3_bind_text(q, 6, r->endpoint, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, r->region, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 8, r->creds_file, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 9, (int64_t)time(NULL));
    sqlite3_bind_text(q, 10, r->sans, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 11, r->adopt_spire ? 1 : 0);
    s = sqlite3_step(q);
    if (s == SQLITE_CONSTRAINT)
        rc = KB_ERR_EXISTS;
    else if (s != SQLITE_DONE)
        rc = db_err(st, "reg_add");
    else
        r->rid = sqlite3_last_insert_rowid(st->db);
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

static kb_err sq_reg_get(ca_store *b, int64_t rid, ca_reg *out)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;
    int s;

    lock(st);
    KB_GUARD_OUT(rc, prep(st, "SELECT " REG_COLS " FROM reg WHERE rid = ?", &q));
    sqlite3_bind_int64(q, 1, rid);
    s = sqlite3_step(q);
    if (s == SQLITE_ROW)
        reg_row(q, out);
    else
        rc = s == SQLITE_DONE ? KB_ERR_NOT_FOUND : db_err(st, "reg_get");
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

static kb_err sq_reg_list(ca_store *b, ca_reg **out, size_t *n)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    ca_reg *v = NULL;
    size_t cnt = 0, cap = 0;
    kb_err rc = KB_OK;
    int s;

    *out = NULL;
    *n = 0;
    lock(st);
    KB_GUARD_OUT(rc, prep(st, "SELECT " REG_COLS " FROM reg ORDER BY rid", &q));
    while ((s = sqlite3_step(q)) == SQLITE_ROW) {
        KB_GUARD_OUT(rc, kb_grow((void **)&v, &cap, cnt, sizeof(*v)));
        reg_row(q, &v[cnt++]);
    }
    if (s != SQLITE_DONE)
        rc = db_err(st, "reg_list");
out:
    sqlite3_finalize(q);
    unlock(st);
    if (rc != KB_OK) {
        free(v);
        return rc;
    }
    *out = v;
    *n = cnt;
    return KB_OK;
}

static kb_err sq_reg_renewable(ca_store *b, const char *spiffe_id, int64_t *ttl, char *sans,
                               size_t sans_len)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_ERR_NOT_FOUND;
    int s;

    KB_ENSURE_REF(st);
    KB_ENSURE_REF(spiffe_id);
    KB_ENSURE_REF(ttl);
    if (st->rdb == NULL) {
        lock(st);
        if (prep(st, RENEWABLE_SQL, &q) != KB_OK) {
            unlock(st);
            return KB_ERR_DB;
        }
    } else {
        pthread_mutex_lock(&st->rmu);
        q = st->r_renewable;
    }
    sqlite3_bind_text(q, 1, spiffe_id, -1, SQLITE_STATIC);
    s = sqlite3_step(q);
    if (s == SQLITE_ROW) {
        *ttl = sqlite3_column_int64(q, 0);
        if (sans != NULL && sans_len > 0)
            copy_col(q, 1, sans, sans_len);
        rc = KB_OK;
    } else if (s != SQLITE_DONE) {
        kb_log(KB_LOG_ERROR, "ca_db_error", "op", "reg_renewable", "msg",
               sqlite3_errmsg(sqlite3_db_handle(q)), NULL);
        rc = KB_ERR_DB;
    }
    if (st->rdb == NULL) {
        sqlite3_finalize(q);
        unlock(st);
    } else {
        sqlite3_reset(q); /* ends the read transaction */
        sqlite3_clear_bindings(q);
        pthread_mutex_unlock(&st->rmu);
    }
    return rc;
}

static kb_err sq_reg_remove(ca_store *b, int64_t rid, ca_reg *removed)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;

    lock(st);
    KB_GUARD_OUT(rc, exec(st, "BEGIN IMMEDIATE"));
    rc = sq_reg_get(b, rid, removed);
    if (rc == KB_OK) {
        rc = prep(st, "DELETE FROM reg WHERE rid = ?", &q);
        if (rc == KB_OK) {
            sqlite3_bind_int64(q, 1, rid);
            if (sqlite3_step(q) != SQLITE_DONE)
                rc = db_err(st, "reg_remove");
        }
    }
    if (rc == KB_OK)
        rc = exec(st, "COMMIT");
    if (rc != KB_OK)
        (void)exec(st, "ROLLBACK");
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

/* Claim due registrations (ca_store.h): SQLite's write lock (BEGIN IMMEDIATE) serialises claims
 * the way SKIP LOCKED does on PostgreSQL; one host, so the caller's clock is the store's. */
static kb_err sq_reg_claim(ca_store *b, const ca_claim *c, ca_reg **out, size_t *n)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL, *u = NULL;
    ca_reg *v = NULL;
    size_t cnt = 0, cap = 0;
    kb_err rc = KB_OK;
    int s;

    lock(st);
    KB_GUARD_OUT(rc, exec(st, "BEGIN IMMEDIATE"));
    rc = prep(st,
              "SELECT " REG_COLS " FROM reg WHERE rid > ?1 AND (?2 OR not_after = 0 OR "
              "next_renew <= ?3 OR bundle_seq < ?4) AND (lease_until <= ?3 OR lease_owner = ?5) "
              "ORDER BY rid LIMIT ?6",
              &q);
    if (rc == KB_OK)
        rc = prep(st, "UPDATE reg SET lease_owner = ?, lease_until = ? WHERE rid = ?", &u);
    if (rc == KB_OK) {
        sqlite3_bind_int64(q, 1, c->after_rid);
        sqlite3_bind_int(q, 2, c->force ? 1 : 0);
        sqlite3_bind_int64(q, 3, c->now);
        sqlite3_bind_int64(q, 4, c->bundle_seq);
        sqlite3_bind_text(q, 5, c->owner, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 6, (int64_t)c->max);
        while (rc == KB_OK && (s = sqlite3_step(q)) == SQLITE_ROW) {
            rc = kb_grow((void **)&v, &cap, cnt, sizeof(*v));
            if (rc != KB_OK)
                break;
            reg_row(q, &v[cnt]);
            snprintf(v[cnt].lease_owner, sizeof(v[cnt].lease_owner), "%s", c->owner);
            v[cnt].lease_until = c->now + c->lease;
            cnt++;
        }
        if (rc == KB_OK && s != SQLITE_DONE)
            rc = db_err(st, "reg_claim");
    }
    for (size_t i = 0; rc == KB_OK && i < cnt; i++) {
        sqlite3_reset(u);
        sqlite3_bind_text(u, 1, c->owner, -1, SQLITE_STATIC);
        sqlite3_bind_int64(u, 2, v[i].lease_until);
        sqlite3_bind_int64(u, 3, v[i].rid);
        if (sqlite3_step(u) != SQLITE_DONE)
            rc = db_err(st, "reg_claim");
    }
    sqlite3_finalize(q);
    sqlite3_finalize(u);
    q = NULL;
    if (rc == KB_OK)
        rc = exec(st, "COMMIT");
    if (rc != KB_OK)
        (void)exec(st, "ROLLBACK");
out:
    unlock(st);
    if (rc != KB_OK) {
        free(v);
        return rc;
    }
    *out = v;
    *n = cnt;
    return KB_OK;
}

/* Run an UPDATE/INSERT with int64 and text parameters, each given by its type letter. */
static kb_err run(sq_store *st, const char *what, const char *sql, const char *types, ...)
{
    sqlite3_stmt *q = NULL;
    kb_err rc;
    va_list ap;

    KB_GUARD(prep(st, sql, &q));
    va_start(ap, types);
    for (int i = 0; types[i] != '\0'; i++) {
        if (types[i] == 'i')
            sqlite3_bind_int64(q, i + 1, va_arg(ap, int64_t));
        else
            sqlite3_bind_text(q, i + 1, va_arg(ap, const char *), -1, SQLITE_STATIC);
    }
    va_end(ap);
    rc = sqlite3_step(q) == SQLITE_DONE ? KB_OK : db_err(st, what);
    sqlite3_finalize(q);
    return rc;
}

static kb_err sq_reg_retry(ca_store *b, int64_t rid, const char *owner, int64_t next_renew,
                           int64_t failures)
{
    sq_store *st = (sq_store *)b;
    kb_err rc;

    lock(st);
    rc = run(st, "reg_retry",
             "UPDATE reg SET next_renew = ?, failures = ?, lease_owner = '', lease_until = 0 "
             "WHERE rid = ? AND (lease_owner = ? OR lease_owner = '')",
             "iiis", next_renew, failures, rid, owner);
    unlock(st);
    return rc;
}

static kb_err sq_reg_done(ca_store *b, const ca_done *d)
{
    sq_store *st = (sq_store *)b;
    kb_err rc;

    lock(st);
    rc = run(st, "reg_done",
             "UPDATE reg SET not_after = ?, next_renew = ?, failures = 0, bundle_seq = ?, "
             "lease_owner = '', lease_until = 0 WHERE rid = ?",
             "iiii", d->not_after, d->next_renew, d->bundle_seq, d->rid);
    if (rc == KB_OK)
        rc = run(st, "reg_done",
                 "INSERT INTO issued (rid, serial, reason, owner, not_after, at) "
                 "VALUES (?,?,?,?,?,?)",
                 "isssii", d->rid, d->serial, d->reason, d->owner, d->not_after, d->at);
    unlock(st);
    return rc;
}

static kb_err sq_write_begin(ca_store *b, int64_t rid, const char *owner)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;
    int s;

    lock(st);
    rc = exec(st, "BEGIN IMMEDIATE");
    if (rc != KB_OK) {
        unlock(st);
        return rc;
    }
    rc = prep(st, "SELECT lease_owner FROM reg WHERE rid = ?", &q);
    if (rc == KB_OK) {
        sqlite3_bind_int64(q, 1, rid);
        s = sqlite3_step(q);
        if (s == SQLITE_DONE)
            rc = KB_ERR_CONFLICT; /* removed while the renewal was under way */
        else if (s != SQLITE_ROW)
            rc = db_err(st, "write_begin");
        else if (owner != NULL && strcmp((const char *)sqlite3_column_text(q, 0), owner) != 0)
            rc = KB_ERR_CONFLICT; /* the lease ended and another renewer took it */
    }
    sqlite3_finalize(q);
    if (rc != KB_OK) {
        (void)exec(st, "ROLLBACK");
        unlock(st);
    }
    if (rc == KB_OK)
        tl_guard = 1;
    return rc; /* on KB_OK the lock and the transaction are held until write_end */
}

static kb_err sq_write_end(ca_store *b, int commit)
{
    sq_store *st = (sq_store *)b;
    kb_err rc = exec(st, commit ? "COMMIT" : "ROLLBACK");

    if (rc != KB_OK && commit)
        (void)exec(st, "ROLLBACK");
    tl_guard = 0;
    unlock(st);
    return rc;
}

/* INSERT one row (the caller holds st->mu). */
static kb_err audit_insert(sq_store *st, sqlite3_stmt *q, const struct audit_row *r)
{
    sqlite3_reset(q);
    sqlite3_bind_text(q, 1, r->serial, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, r->spiffe_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, r->target, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, r->reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 5, r->gen);
    sqlite3_bind_int64(q, 6, r->not_after);
    sqlite3_bind_int64(q, 7, r->at);
    return sqlite3_step(q) == SQLITE_DONE ? KB_OK : db_err(st, "audit_add");
}

#define AUDIT_INSERT_SQL                                                                           \
    "INSERT INTO audit (serial, spiffe_id, target, reason, ca_gen, not_after, at) "                \
    "VALUES (?,?,?,?,?,?,?)"

/* Commit a batch of rows in one transaction (synchronous=FULL: one WAL fsync). All or none:
 * on any failure every row of the batch gets the error. */
static kb_err step_done(sq_store *st, sqlite3_stmt *q, const char *what)
{
    int r = sqlite3_step(q);

    sqlite3_reset(q);
    return r == SQLITE_DONE ? KB_OK : db_err(st, what);
}

static void audit_commit(sq_store *st, struct audit_row *batch)
{
    kb_err rc = KB_OK;

    lock(st);
    /* Statements prepared once: parsing BEGIN/INSERT/COMMIT for every batch showed in profiles. */
    if (st->a_begin == NULL)
        rc = prep(st, "BEGIN IMMEDIATE", &st->a_begin);
    if (rc == KB_OK && st->a_ins == NULL)
        rc = prep(st, AUDIT_INSERT_SQL, &st->a_ins);
    if (rc == KB_OK && st->a_commit == NULL)
        rc = prep(st, "COMMIT", &st->a_commit);
    if (rc == KB_OK)
        rc = step_done(st, st->a_begin, "audit_begin");
    if (rc == KB_OK) {
        for (struct audit_row *r = batch; rc == KB_OK && r != NULL; r = r->next)
            rc = audit_insert(st, st->a_ins, r);
        sqlite3_reset(st->a_ins);
        sqlite3_clear_bindings(st->a_ins);
        if (rc == KB_OK)
            rc = step_done(st, st->a_commit, "audit_commit");
        if (rc != KB_OK)
            (void)exec(st, "ROLLBACK");
    }
    unlock(st);
    for (struct audit_row *r = batch; r != NULL; r = r->next)
        r->rc = rc;
}

static kb_err sq_audit_add(ca_store *b, const char *serial, const char *spiffe_id,
                           const char *target, const char *reason, int64_t gen, int64_t not_after,
                           int64_t at)
{
    sq_store *st = (sq_store *)b;
    struct audit_row me;
    struct audit_row *batch, *next;

    KB_ENSURE_REF(st);
    memset(&me, 0, sizeof(me));
    me.serial = serial;
    me.spiffe_id = spiffe_id;
    me.target = target;
    me.reason = reason;
    me.gen = gen;
    me.not_after = not_after;
    me.at = at;
    if (tl_guard) { /* inside this thread's write transaction: commits with it */
        sqlite3_stmt *q = NULL;
        kb_err rc;
        lock(st);
        rc = prep(st, AUDIT_INSERT_SQL, &q);
        if (rc == KB_OK)
            rc = audit_insert(st, q, &me);
        sqlite3_finalize(q);
        unlock(st);
        return rc;
    }
    pthread_cond_init(&me.cv, NULL);
    pthread_mutex_lock(&st->amu);
    *st->aq_tail = &me;
    st->aq_tail = &me.next;
    if (!st->a_leader) {
        st->a_leader = 1;
        me.lead = 1;
    }
    while (!me.done) {
        if (!me.lead) {
            pthread_cond_wait(&me.cv, &st->amu);
            continue;
        }
        /* Lead: take everything queued so far (our row included) and commit it. Rows that
         * arrive meanwhile wait for the next batch. Each writer has its own condition variable,
         * so a commit wakes exactly its rows' writers and the next leader - not every waiter
         * (context switches were ~10 % of the renew API's CPU with one shared broadcast). */
        me.lead = 0;
        batch = st->aq_head;
        st->aq_head = NULL;
        st->aq_tail = &st->aq_head;
        pthread_mutex_unlock(&st->amu);
        audit_commit(st, batch);
        pthread_mutex_lock(&st->amu);
        for (struct audit_row *r = batch; r != NULL; r = next) {
            next = r->next; /* r may return (and vanish) once we unlock */
            r->done = 1;
            if (r != &me)
                pthread_cond_signal(&r->cv);
        }
        if (st->aq_head != NULL) { /* hand over: the oldest waiting row's writer leads next */
            st->aq_head->lead = 1;
            pthread_cond_signal(&st->aq_head->cv);
        } else {
            st->a_leader = 0;
        }
    }
    pthread_mutex_unlock(&st->amu);
    pthread_cond_destroy(&me.cv);
    return me.rc;
}

static kb_err sq_audit_each(ca_store *b, ca_audit_fn fn, void *arg)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;
    int s;

    lock(st);
    KB_GUARD_OUT(rc, prep(st,
                          "SELECT serial, spiffe_id, target, reason, ca_gen, not_after, at "
                          "FROM audit ORDER BY id",
                          &q));
    while ((s = sqlite3_step(q)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(q, 0), (const char *)sqlite3_column_text(q, 1),
           (const char *)sqlite3_column_text(q, 2), (const char *)sqlite3_column_text(q, 3),
           sqlite3_column_int64(q, 4), sqlite3_column_int64(q, 5), sqlite3_column_int64(q, 6));
    if (s != SQLITE_DONE)
        rc = db_err(st, "audit_each");
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

static kb_err sq_issued_each(ca_store *b, ca_issued_fn fn, void *arg)
{
    sq_store *st = (sq_store *)b;
    sqlite3_stmt *q = NULL;
    kb_err rc = KB_OK;
    int s;

    lock(st);
    KB_GUARD_OUT(rc, prep(st,
                          "SELECT rid, serial, reason, owner, not_after, at FROM issued "
                          "ORDER BY id",
                          &q));
    while ((s = sqlite3_step(q)) == SQLITE_ROW)
        fn(arg, sqlite3_column_int64(q, 0), (const char *)sqlite3_column_text(q, 1),
           (const char *)sqlite3_column_text(q, 2), (const char *)sqlite3_column_text(q, 3),
           sqlite3_column_int64(q, 4), sqlite3_column_int64(q, 5));
    if (s != SQLITE_DONE)
        rc = db_err(st, "issued_each");
out:
    sqlite3_finalize(q);
    unlock(st);
    return rc;
}

static const ca_store_ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .meta_get = sq_meta_get,
    .meta_set = sq_meta_set,
    .meta_incr = sq_meta_incr,
    .gen_add = sq_gen_add,
    .gen_list = sq_gen_list,
    .gen_update = sq_gen_update,
    .gen_activate = sq_gen_activate,
    .reg_add = sq_reg_add,
    .reg_get = sq_reg_get,
    .reg_list = sq_reg_list,
    .reg_renewable = sq_reg_renewable,
    .reg_remove = sq_reg_remove,
    .reg_claim = sq_reg_claim,
    .reg_retry = sq_reg_retry,
    .reg_done = sq_reg_done,
    .write_begin = sq_write_begin,
    .write_end = sq_write_end,
    .audit_add = sq_audit_add,
    .audit_each = sq_audit_each,
    .issued_each = sq_issued_each,
};
