/* store_migrate_int.h - raw table access for store_migrate.c (store_migrate_db.c): one read
 * snapshot of the source, one write transaction on the target, rows as stored, typed as the
 * schema declares them. Not a store backend: no MACs, no policy; store_migrate.c checks every
 * row it passes on.
 */
#ifndef KB_SERVER_STORE_MIGRATE_INT_H
#define KB_SERVER_STORE_MIGRATE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

#define MDB_NAME_MAX 63 /* table and column names */
#define MDB_COLS_MAX 32 /* columns in one table */

typedef enum { MV_NULL = 0, MV_INT, MV_TEXT, MV_BLOB } mv_type;

/* One stored value; p/len point into the driver's row and are valid during the callback. */
typedef struct {
    mv_type t;
    int64_t i;
    const uint8_t *p;
    size_t len;
} mv;

typedef struct {
    char name[MDB_NAME_MAX + 1];
    mv_type type; /* declared type: MV_INT, MV_TEXT or MV_BLOB */
} mcol;

typedef struct mdb mdb;

/* Called per row with n values in the column order scanned. A non-KB_OK return stops the scan
 * and is returned by mdb_scan. */
typedef kb_err (*mdb_row_fn)(void *ctx, const mv *vals, size_t n);

/* url: "sqlite:PATH" (an existing file) or a PostgreSQL URI/conninfo (passfile checks as the
 * store's). write: the target (PostgreSQL: the store's kb_state_delta table is created so the
 * schema's triggers accept rows). why gets a short reason on failure. */
KB_WUR kb_err mdb_open(const char *url, bool write, mdb **out, char *why, size_t why_len);
void mdb_close(mdb *d);
/* Read: one consistent snapshot. Write: one transaction, PostgreSQL under the store's write
 * lock, SQLite BEGIN IMMEDIATE. */
KB_WUR kb_err mdb_begin(mdb *d, bool write);
KB_WUR kb_err mdb_commit(mdb *d);
void mdb_rollback(mdb *d);
/* Whether a table exists (in the connection's schema). */
KB_WUR kb_err mdb_has_table(mdb *d, const char *table, bool *out);
/* Every table name (malloc'd array of malloc'd strings; mdb_names_free). */
KB_WUR kb_err mdb_tables(mdb *d, char ***out, size_t *n);
void mdb_names_free(char **names, size_t n);
/* Columns of table in declared order (at most MDB_COLS_MAX). KB_ERR_SCHEMA on a type other than
 * integer/bigint, text or blob/bytea. */
KB_WUR kb_err mdb_columns(mdb *d, const char *table, mcol *cols, size_t *n);
KB_WUR kb_err mdb_count(mdb *d, const char *table, int64_t *out);
/* Every row of table, the given columns, ordered by `order` (a column list). */
KB_WUR kb_err mdb_scan(mdb *d, const char *table, const mcol *cols, size_t n, const char *order,
                       mdb_row_fn fn, void *ctx);
/* Insert rows into table (cols as given; mdb_insert_begin prepares once per table). */
KB_WUR kb_err mdb_insert_begin(mdb *d, const char *table, const mcol *cols, size_t n);
KB_WUR kb_err mdb_insert(mdb *d, const mv *vals, size_t n);
KB_WUR kb_err mdb_exec(mdb *d, const char *sql);
/* The id high-water mark of an identity / AUTOINCREMENT table (0: never used) and setting it
 * (never below the ids present). */
KB_WUR kb_err mdb_seq_get(mdb *d, const char *table, int64_t *out);
KB_WUR kb_err mdb_seq_set(mdb *d, const char *table, int64_t v);
/* "sqlite" or "postgresql". */
const char *mdb_kind(const mdb *d);

#endif
