/* store_sqlite_int.h - private to the SQLite backend (store_sqlite*.c); nothing else includes it.
 *
 * The backend is split by concern: store_sqlite.c (schema and migrations, connections and the
 * reader pool, transactions, secret and version row loaders, the state commitment, the shared op
 * layer's statement interface, the ops table) and store_sqlite_secrets.c (secrets, versions,
 * client reads, notifications); the audit log, groups, clients, memberships and grants, which
 * both backends share, are in store_sql*.c (store_sql.h). Functions shared between them carry
 * the sq_ prefix.
 */
#ifndef KB_SERVER_STORE_SQLITE_INT_H
#define KB_SERVER_STORE_SQLITE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "lib/err.h"
#include "model.h"
#include "rowmac.h"
#include "store_impl.h"
#include "store_sql.h"

/* Prepared statements are kept per connection for its lifetime (SQLITE_PREPARE_PERSISTENT,
 * https://sqlite.org/c3ref/c_prepare_normalize.html): parsing and planning a statement cost more
 * than running keybridged's short queries. They are found by the address of their SQL text,
 * which is always a string literal, so the lookup is a pointer hash, not a string compare. */
#define STMT_SLOTS 128 /* power of two, over twice the number of distinct SQL texts */

/* A cached statement: the shared op layer's header (store_sql.h) and SQLite's statement. */
typedef struct {
    store_sql_stmt hd;
    sqlite3_stmt *s;
} sq_stmt;

typedef struct cx {
    store_sql_cx sc; /* store, row-MAC context, writer (the shared op layer's view) */
    sqlite3 *db;
    /* Writer only: the change to the state digest made by the open transaction, accumulated by
     * the kb_state() SQL function that the temporary triggers call (see state_triggers). */
    uint8_t delta[ROWMAC_LEN];
    bool dirty;
    struct cx *next_idle;
    size_t nstmts;
    struct {
        const char *sql;
        sq_stmt st;
    } stmts[STMT_SLOTS];
} cx;

/* One writer connection behind a mutex (SQLite has one writer at a time anyway), and a pool of
 * reader connections: in WAL mode readers never block the writer nor each other
 * (https://sqlite.org/wal.html#concurrency), so the event loops' reads run in parallel. Every
 * reader statement runs in its own snapshot, or in one BEGIN ... COMMIT where several reads must
 * agree (the client row and its listing; a batch get). */
typedef struct {
    store_sql_pool sp; /* the shared op layer's driver and client seen cache */
    cx *writer;
    pthread_mutex_t wmu;
    pthread_mutex_t pmu; /* guards idle */
    pthread_cond_t pcv;  /* signalled when a reader is put back */
    cx *idle;
    cx **readers; /* all of them, for close */
    size_t nreaders;
} sq;

#define SQ(st) ((sq *)(st)->impl)
#define STORE_SQLITE_READERS_MAX 16

/* ---- connections, statements, transactions (store_sqlite.c) ---- */

kb_err sq_db_err(cx *b, int rc, const char *what);
kb_err sq_prep(cx *b, const char *sql, sqlite3_stmt **s);
kb_err sq_tx_begin(cx *b, bool write);
kb_err sq_tx_end(cx *b, kb_err rc, store_audit *au);
cx *sq_wr_get(sq *q);
cx *sq_rd_get(sq *q);
void sq_cx_put(sq *q, cx *b);
kb_err sq_state_check(cx *b);

/* Take the writer, take a reader, hand either back. */
#define WR(st) sq_wr_get(SQ(st))
#define RD(st) sq_rd_get(SQ(st))
#define PUT(st, b) sq_cx_put(SQ(st), (b))

/* ---- small statement helpers (inline: called on every row) ---- */

/* Reset a cached statement for its next use: ends its read, drops its bound values. */
static inline void done(sqlite3_stmt *s)
{
    if (s != NULL) {
        (void)sqlite3_reset(s);
        (void)sqlite3_clear_bindings(s);
    }
}

static inline kb_err exec(cx *b, const char *sql)
{
    int rc = sqlite3_exec(b->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? KB_OK : sq_db_err(b, rc, "exec");
}

/* Step a statement that returns no rows (or whose rows we ignore). */
static inline kb_err step_done(cx *b, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        return KB_OK;
    return sq_db_err(b, rc, what);
}

/* SQLITE_ROW -> KB_OK, SQLITE_DONE -> KB_ERR_NOT_FOUND. */
static inline kb_err step_row(cx *b, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        return KB_OK;
    if (rc == SQLITE_DONE)
        return KB_ERR_NOT_FOUND;
    return sq_db_err(b, rc, what);
}

static inline kb_err bind_text(sqlite3_stmt *s, int i, const char *v)
{
    return sqlite3_bind_text(s, i, v ? v : "", -1, SQLITE_TRANSIENT) == SQLITE_OK ? KB_OK
                                                                                  : KB_ERR_DB;
}

static inline kb_err bind_blob(sqlite3_stmt *s, int i, const void *p, size_t n)
{
    if (n > INT32_MAX)
        return KB_ERR_TOO_LARGE;
    return sqlite3_bind_blob(s, i, n ? p : "", (int)n, SQLITE_TRANSIENT) == SQLITE_OK ? KB_OK
                                                                                      : KB_ERR_DB;
}

static inline kb_err bind_i64(sqlite3_stmt *s, int i, int64_t v)
{
    return sqlite3_bind_int64(s, i, v) == SQLITE_OK ? KB_OK : KB_ERR_DB;
}

static inline bool col_mac_ok(sqlite3_stmt *s, int i, const uint8_t want[ROWMAC_LEN])
{
    const void *p = sqlite3_column_blob(s, i);
    int n = sqlite3_column_bytes(s, i);
    return rowmac_equal(want, p, n > 0 ? (size_t)n : 0);
}

/* Run one cached, parameterless statement (BEGIN, COMMIT). */
static inline kb_err run(cx *b, const char *sql)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD(sq_prep(b, sql, &s));
    rc = step_done(b, s, sql);
    done(s);
    return rc;
}

#endif
