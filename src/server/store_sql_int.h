/* store_sql_int.h - private to the shared op layer (store_sql*.c): short names for the statement
 * interface of store_sql.h, so the op bodies read like plain SQL client code. The backends never
 * include it (they have helpers of the same names for their own statements).
 */
#ifndef KB_SERVER_STORE_SQL_INT_H
#define KB_SERVER_STORE_SQL_INT_H

#include <stdlib.h>
#include <string.h>

#include "store_sql.h"

typedef store_sql_cx cx;
typedef store_sql_stmt stmt;

#define DRV(st) (((const store_sql_pool *)(st)->impl)->drv)
#define WR(st) DRV(st)->wr_get(st)
#define RD(st) DRV(st)->rd_get(st)
#define PUT(st, b) DRV(st)->put((st), (b))
#define SQL(b, q) ((b)->drv->sql[(q)])
#define POOL(st) ((store_sql_pool *)(st)->impl)

/* Column lists (store_sql.h) and their loaders (store_sql.c) side by side. */
#define SECRET_COLS STORE_SQL_SECRET_COLS
#define SECRET_NCOLS 13
#define VERSION_COLS STORE_SQL_VERSION_COLS
#define VERSION_NCOLS 9
#define ENV_COLS STORE_SQL_ENV_COLS
#define CLIENT_COLS STORE_SQL_CLIENT_COLS
#define CLIENT_NCOLS 12
#define GROUP_COLS "g.id, g.name, g.description, g.created_by, g.created_at"
#define GROUP_NCOLS 5

/* One row of a listing: decode the row at s into item (a zeroed slot of the array being built);
 * set *keep = false to leave it out (the slot must then be left all-zero, e.g. a row failing its
 * MAC, logged, or one a filter drops). prev is the last kept item (NULL for the first). Any error
 * fails the listing; a half-filled slot is freed with the rest. */
typedef kb_err (*row_fn)(cx *b, stmt *s, void *ctx, void *item, const void *prev, bool *keep);
typedef void (*items_free_fn)(void *arr, size_t n);

/* store_sql.c: a client row at column c0 as stored, its MAC checked (KB_ERR_INTEGRITY, logged,
 * on mismatch); a group row at c0. */
kb_err store_sql_load_client(cx *b, stmt *s, int c0, store_client *out);
kb_err store_sql_load_group(stmt *s, int c0, store_group *out);
/* A secret row at c0 (its MAC checked), a version row at c0 (its MAC checked), a secret row at 0
 * with its latest version after it (latest_version's MAC checked too), an envelope at c0. */
kb_err store_sql_load_secret(cx *b, stmt *s, int c0, store_secret *out);
kb_err store_sql_load_version(cx *b, stmt *s, int c0, store_version *out);
kb_err store_sql_load_latest(cx *b, stmt *s, store_record *rec);
/* The latest_version of a secret row at c0 (already loaded into sec) against its own MAC
 * (latest_mac): KB_ERR_INTEGRITY (logged) on mismatch. */
kb_err store_sql_latest_check(cx *b, stmt *s, int c0, const store_secret *sec);
kb_err store_sql_load_env(stmt *s, int c0, store_envelope *out);
/* Fetch one verified secret by name or id. */
kb_err store_sql_secret_fetch(cx *b, const char *name, int64_t id, store_secret *out);

/* store_sql.c: step s to its end, collecting the kept rows into a malloc'd array of elem-size
 * items (*out NULL when there are none). The one loop behind every multi-row read. */
kb_err store_sql_collect(cx *b, stmt *s, size_t elem, row_fn row, void *ctx,
                         items_free_fn free_items, const char *what, void **out, size_t *n);

static inline kb_err tx_begin(cx *b, store_sql_tx mode)
{
    return b->drv->tx_begin(b, mode);
}

static inline kb_err tx_end(cx *b, kb_err rc, store_audit *au)
{
    return b->drv->tx_end(b, rc, au);
}

static inline kb_err prep(cx *b, const char *sql, stmt **s)
{
    return b->drv->prep(b, sql, s);
}

static inline int step(stmt *s)
{
    return s->b->drv->step(s);
}

/* Reset a cached statement for its next use: ends its read, drops its bound values. */
static inline void done(stmt *s)
{
    if (s != NULL)
        s->b->drv->done(s);
}

/* Step a statement that returns no rows (or whose rows we ignore). */
static inline kb_err step_done(cx *b, stmt *s, const char *what)
{
    int rc = step(s);
    if (rc == STORE_SQL_DONE || rc == STORE_SQL_ROW)
        return KB_OK;
    return b->drv->db_err(b, rc, what);
}

/* Step a statement whose rows nobody reads, leaving the backend free to send it now and check
 * it with the next statement that needs an answer or at COMMIT (store_sql.h): a failure may
 * then come back from that statement or from tx_end. Not for a statement followed by changes(). */
static inline kb_err step_later(cx *b, stmt *s, const char *what)
{
    return b->drv->step_later(s, what);
}

/* STORE_SQL_ROW -> KB_OK, STORE_SQL_DONE -> KB_ERR_NOT_FOUND. */
static inline kb_err step_row(cx *b, stmt *s, const char *what)
{
    int rc = step(s);
    if (rc == STORE_SQL_ROW)
        return KB_OK;
    if (rc == STORE_SQL_DONE)
        return KB_ERR_NOT_FOUND;
    return b->drv->db_err(b, rc, what);
}

static inline kb_err bind_text(stmt *s, int i, const char *v)
{
    return s->b->drv->bind_text(s, i, v);
}

static inline kb_err bind_blob(stmt *s, int i, const void *p, size_t n)
{
    return s->b->drv->bind_blob(s, i, p, n);
}

static inline kb_err bind_i64(stmt *s, int i, int64_t v)
{
    return s->b->drv->bind_i64(s, i, v);
}

static inline kb_err bind_null(stmt *s, int i)
{
    return s->b->drv->bind_null(s, i);
}

static inline int64_t col_i64(stmt *s, int i)
{
    return s->b->drv->col_i64(s, i);
}

static inline const char *col_text(stmt *s, int i)
{
    return s->b->drv->col_text(s, i);
}

static inline const void *col_ptr(stmt *s, int i)
{
    return s->b->drv->col_blob(s, i);
}

static inline bool col_isint(stmt *s, int i)
{
    return s->b->drv->col_isint(s, i);
}

static inline size_t col_len(stmt *s, int i)
{
    return s->b->drv->col_len(s, i);
}

static inline kb_err col_str(stmt *s, int i, char **out)
{
    const char *t = col_text(s, i);
    *out = strdup(t ? t : "");
    return *out ? KB_OK : KB_ERR_NOMEM;
}

static inline kb_err col_blob(stmt *s, int i, uint8_t **out, size_t *len)
{
    const void *p = col_ptr(s, i);
    size_t n = col_len(s, i);
    *out = malloc(n > 0 ? n : 1);
    KB_ENSURE(*out != NULL, KB_ERR_NOMEM);
    if (n > 0)
        memcpy(*out, p, n);
    *len = n;
    return KB_OK;
}

/* Booleans must be stored as exactly 0 or 1: anything else is tampering, not "true". */
static inline bool col_bool(stmt *s, int i, bool *strict)
{
    int64_t v = col_i64(s, i);
    if (!col_isint(s, i) || (v != 0 && v != 1))
        *strict = false;
    return v != 0;
}

static inline bool col_mac_ok(stmt *s, int i, const uint8_t want[ROWMAC_LEN])
{
    const void *p = col_ptr(s, i);
    return rowmac_equal(want, p, col_len(s, i));
}

/* Copy a fixed-size blob column (a MAC); one of another size leaves out as it was (zeros: it
 * will not verify). */
static inline void col_fixed(stmt *s, int i, uint8_t *out, size_t len)
{
    const void *p = col_ptr(s, i);
    if (p != NULL && col_len(s, i) == len)
        memcpy(out, p, len);
}

#endif
