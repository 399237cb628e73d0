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

/* One row of a listing: decode the row at s into item (a zeroed slot of the array being built);
 * set *keep = false to leave it out (the slot must then be left all-zero, e.g. a row failing its
 * MAC, logged, or one a filter drops). prev is the last kept item (NULL for the first). Any error
 * fails the listing; a half-filled slot is freed with the rest. */
typedef kb_err (*row_fn)(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev,
                         bool *keep);
typedef void (*items_free_fn)(void *arr, size_t n);

kb_err sq_db_err(cx *b, int rc, const char *what);
kb_err sq_prep(cx *b, const char *sql, sqlite3_stmt **s);
kb_err sq_tx_begin(cx *b, bool write);
kb_err sq_tx_end(cx *b, kb_err rc, store_audit *au);
kb_err sq_collect(cx *b, sqlite3_stmt *s, size_t elem, row_fn row, void *ctx,
                  items_free_fn free_items, const char *what, void **out, size_t *n);
cx *sq_wr_get(sq *q);
cx *sq_rd_get(sq *q);
void sq_cx_put(sq *q, cx *b);
kb_err sq_load_secret(cx *b, sqlite3_stmt *s, int c0, store_secret *out);
kb_err sq_load_version(cx *b, sqlite3_stmt *s, int c0, store_version *out);
kb_err sq_load_latest(cx *b, sqlite3_stmt *s, store_record *rec);
kb_err sq_load_env(sqlite3_stmt *s, int c0, store_envelope *out);
kb_err sq_secret_fetch(cx *b, const char *name, int64_t id, store_secret *out);
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

static inline kb_err col_str(sqlite3_stmt *s, int i, char **out)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    *out = strdup(t ? (const char *)t : "");
    return *out ? KB_OK : KB_ERR_NOMEM;
}

static inline kb_err col_blob(sqlite3_stmt *s, int i, uint8_t **out, size_t *len)
{
    const void *p = sqlite3_column_blob(s, i);
    int n = sqlite3_column_bytes(s, i);
    *out = malloc(n > 0 ? (size_t)n : 1);
    KB_ENSURE(*out != NULL, KB_ERR_NOMEM);
    if (n > 0)
        memcpy(*out, p, (size_t)n);
    *len = n > 0 ? (size_t)n : 0;
    return KB_OK;
}

/* Booleans must be stored as exactly 0 or 1: anything else is tampering, not "true". */
static inline bool col_bool(sqlite3_stmt *s, int i, bool *strict)
{
    int64_t v = sqlite3_column_int64(s, i);
    if (sqlite3_column_type(s, i) != SQLITE_INTEGER || (v != 0 && v != 1))
        *strict = false;
    return v != 0;
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

/* ---- row loaders (column lists and their readers kept side by side in store_sqlite.c) ---- */

#define SECRET_COLS                                                                                \
    "s.id, s.name, s.description, s.owner_group_id, s.cloud_sync, s.deleted_at, "                  \
    "s.latest_version, s.created_by, s.created_at, s.updated_by, s.updated_at, s.mac, "            \
    "s.latest_mac"
#define SECRET_NCOLS 13
#define VERSION_COLS                                                                               \
    "v.secret_id, v.version, v.checksum, v.content_len, v.metadata, v.expires_at, "                \
    "v.created_by, v.created_at, v.mac"
#define VERSION_NCOLS 9
#define ENV_COLS "v.wrapped_key, v.key_id, v.sealed"

/* ---- store_sqlite_secrets.c ---- */

kb_err sq_secret_create(store *st, const store_secret_new *sn, const store_version_new *v,
                        const char *metadata, store_seal_fn seal, void *seal_ctx, const char *actor,
                        int64_t now, int64_t *id_out, store_audit *au);
kb_err sq_version_add(store *st, int64_t secret_id, const store_version_new *v,
                      const char *metadata, store_seal_fn seal, void *seal_ctx, const char *actor,
                      int64_t now, int64_t *version_out, store_audit *au);
kb_err sq_secret_update(store *st, int64_t secret_id, const store_secret_patch *p,
                        const char *actor, int64_t now, store_audit *au);
kb_err sq_secret_set_deleted(store *st, int64_t secret_id, bool deleted, const char *actor,
                             int64_t now, store_audit *au);
kb_err sq_secret_purge(store *st, int64_t secret_id, store_audit *au);
kb_err sq_secret_get(store *st, const char *name, int64_t id, bool include_deleted,
                     store_secret *out);
kb_err sq_secret_list(store *st, bool include_deleted, store_record **out, size_t *n);
kb_err sq_secret_list_page(store *st, bool include_deleted, const char *after, size_t limit,
                           store_record **out, size_t *n, char **next);
kb_err sq_version_list(store *st, int64_t secret_id, store_version **out, size_t *n);
kb_err sq_version_get(store *st, int64_t secret_id, int64_t version, store_record *out);
kb_err sq_secrets_expiring(store *st, int64_t from, int64_t to, store_record **out, size_t *n);
kb_err sq_readable_list(store *st, int64_t client_id, store_record **out, size_t *n);
kb_err sq_readable_get_batch(store *st, int64_t client_id, const char *const *names,
                             const int64_t *versions, size_t n, store_record *out, kb_err *errs);
kb_err sq_secret_status(store *st, int64_t secret_id, store_fetch **out, size_t *n);
kb_err sq_notify_sent(store *st, int64_t secret_id, int64_t version, int64_t window, bool *sent);
kb_err sq_notify_mark(store *st, int64_t secret_id, int64_t version, int64_t window, int64_t now,
                      store_audit *au);

#endif
