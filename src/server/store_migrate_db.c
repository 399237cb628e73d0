/* store_migrate_db.c - raw table access for store_migrate.c (store_migrate_int.h), on SQLite
 * and PostgreSQL (libpq, binary results and parameters: integers as 8-byte big-endian, text
 * and bytea as their bytes, so nothing is reformatted on the way).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "store_impl.h"
#include "store_migrate_int.h"

/* pg_advisory_xact_lock key of the store's write lock (store_pg.c, STORE_PG_WRITE_LOCK). */
#define MDB_PG_WRITE_LOCK "30518224382733413"
#define MDB_BUSY_MS 5000 /* lock waits (SQLite busy timeout, PostgreSQL lock_timeout) */
#define MDB_SQL_MAX 2048
#define MDB_PG_INT8 20
#define MDB_PG_BYTEA 17
#define MDB_PG_TEXT 25
#define MDB_PG_VARCHAR 1043
#define MDB_PG_NAME 19

struct mdb {
    sqlite3 *db;  /* SQLite, or */
    PGconn *conn; /* PostgreSQL */
    sqlite3_stmt *ins;
    bool pg_ins; /* a prepared "kbmig_ins" exists */
    size_t ins_n;
};

const char *mdb_kind(const mdb *d)
{
    return d->db != NULL ? "sqlite" : "postgresql";
}

static void why_set(char *why, size_t len, const char *msg, const char *detail)
{
    if (why != NULL && len > 0)
        snprintf(why, len, "%s%s%s", msg, detail ? ": " : "", detail ? detail : "");
}

/* Names come from the fixed table list or the catalog; refuse anything but [a-z0-9_]. */
static bool ident_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MDB_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static void notice_quiet(void *arg, const char *msg)
{
    (void)arg, (void)msg;
}

static kb_err sq_err(mdb *d, int rc, const char *what)
{
    kb_log(KB_LOG_ERROR, "migrate_db_error", "backend", "sqlite", "what", what, "error",
           sqlite3_errmsg(d->db), NULL);
    return rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? KB_ERR_TIMEOUT : KB_ERR_DB;
}

/* The SQLSTATE and primary message only: a DETAIL line can quote a row ("Failing row contains
 * ..."), and rows are not logged. */
static kb_err pg_err(mdb *d, const PGresult *r, const char *what)
{
    const char *m = r != NULL ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *code = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (m == NULL)
        m = PQerrorMessage(d->conn); /* connection-level: host and port, never a row */
    kb_log(KB_LOG_ERROR, "migrate_db_error", "backend", "postgresql", "what", what, "sqlstate",
           code != NULL ? code : "", "error", m != NULL ? m : "", NULL);
    return KB_ERR_DB;
}

/* A statement without results (PostgreSQL: simple protocol, several statements allowed). */
kb_err mdb_exec(mdb *d, const char *sql)
{
    if (d->db != NULL) {
        int rc = sqlite3_exec(d->db, sql, NULL, NULL, NULL);
        return rc == SQLITE_OK ? KB_OK : sq_err(d, rc, "exec");
    }
    PGresult *r = PQexec(d->conn, sql);
    ExecStatusType st = PQresultStatus(r);
    kb_err rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? KB_OK : pg_err(d, r, "exec");
    PQclear(r);
    return rc;
}

static kb_err open_sqlite(const char *path, bool write, mdb *d, char *why, size_t why_len)
{
    struct stat sb;
    int rc;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        why_set(why, why_len, "no SQLite database file at that path",
                stat(path, &sb) != 0 ? strerror(errno) : "not a regular file");
        return KB_ERR_NOT_FOUND;
    }
    rc = sqlite3_open_v2(path, &d->db,
                         write ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                         NULL);
    if (rc != SQLITE_OK) {
        why_set(why, why_len, "cannot open the SQLite database", sqlite3_errstr(rc));
        return KB_ERR_DB;
    }
    sqlite3_busy_timeout(d->db, MDB_BUSY_MS);
    if (write)
        KB_GUARD(mdb_exec(d, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;"));
    return KB_OK;
}

static kb_err open_pg(const char *url, bool write, mdb *d, char *why, size_t why_len)
{
    char *conninfo = NULL;
    kb_err rc = store_pg_conninfo(url, &conninfo);
    if (rc != KB_OK) {
        why_set(why, why_len,
                "refused PostgreSQL URL (not a libpq URI, a password in it or in PGPASSWORD, or a "
                "passfile that is not a 0600 regular file; see the log)",
                NULL);
        return rc;
    }
    d->conn = PQconnectdb(conninfo);
    free(conninfo);
    if (d->conn == NULL)
        return KB_ERR_NOMEM;
    if (PQstatus(d->conn) != CONNECTION_OK) {
        /* libpq's message names host and port, never the password. */
        why_set(why, why_len, "cannot connect to PostgreSQL", PQerrorMessage(d->conn));
        return KB_ERR_DB;
    }
    PQsetNoticeProcessor(d->conn, notice_quiet, NULL);
    KB_GUARD(mdb_exec(d, "SET client_min_messages = warning; SET lock_timeout = 5000"));
    if (write)
        KB_GUARD(mdb_exec(d, "CREATE TEMP TABLE IF NOT EXISTS kb_state_delta(tbl text NOT NULL, "
                             "mac bytea NOT NULL, sign int NOT NULL) ON COMMIT DELETE ROWS"));
    return KB_OK;
}

kb_err mdb_open(const char *url, bool write, mdb **out, char *why, size_t why_len)
{
    mdb *d;
    kb_err rc;
    KB_ENSURE_REF(url);
    KB_ENSURE_REF(out);
    *out = NULL;
    d = calloc(1, sizeof(*d));
    KB_ENSURE(d != NULL, KB_ERR_NOMEM);
    if (strncmp(url, "sqlite:", 7) == 0)
        rc = open_sqlite(url + 7, write, d, why, why_len);
    else if (strncmp(url, "postgresql://", 13) == 0)
        rc = open_pg(url, write, d, why, why_len);
    else if (strncmp(url, "postgresql:", 11) == 0) /* "postgresql:host=... dbname=..." */
        rc = open_pg(url + 11, write, d, why, why_len);
    else {
        why_set(why, why_len, "unknown store URL scheme (sqlite:PATH or postgresql://...)", NULL);
        rc = KB_ERR_CONFIG;
    }
    if (rc != KB_OK) {
        mdb_close(d);
        return rc;
    }
    *out = d;
    return KB_OK;
}

void mdb_close(mdb *d)
{
    if (d == NULL)
        return;
    sqlite3_finalize(d->ins);
    if (d->db != NULL)
        sqlite3_close(d->db);
    if (d->conn != NULL)
        PQfinish(d->conn);
    free(d);
}

kb_err mdb_begin(mdb *d, bool write)
{
    if (d->db != NULL)
        return mdb_exec(d, write ? "BEGIN IMMEDIATE" : "BEGIN");
    if (!write)
        return mdb_exec(d, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    return mdb_exec(d, "BEGIN; SELECT pg_advisory_xact_lock(" MDB_PG_WRITE_LOCK ")");
}

kb_err mdb_commit(mdb *d)
{
    return mdb_exec(d, "COMMIT");
}

void mdb_rollback(mdb *d)
{
    if (d->db != NULL && sqlite3_get_autocommit(d->db))
        return;
    if (mdb_exec(d, "ROLLBACK") != KB_OK)
        kb_log(KB_LOG_WARN, "migrate_rollback_failed", NULL);
}

void mdb_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Rows of a one-text-column query with up to one text parameter. */
static kb_err query_names(mdb *d, const char *sql, const char *param, char ***out, size_t *n)
{
    char **v = NULL;
    size_t cap = 0, k = 0;
    kb_err rc = KB_OK;

    *out = NULL;
    *n = 0;
    if (d->db != NULL) {
        sqlite3_stmt *s = NULL;
        int r = sqlite3_prepare_v2(d->db, sql, -1, &s, NULL);
        if (r != SQLITE_OK)
            return sq_err(d, r, "catalog");
        if (param != NULL)
            sqlite3_bind_text(s, 1, param, -1, SQLITE_STATIC);
        while ((r = sqlite3_step(s)) == SQLITE_ROW && rc == KB_OK) {
            const unsigned char *t = sqlite3_column_text(s, 0);
            rc = kb_grow((void **)&v, &cap, k, sizeof(*v));
            if (rc == KB_OK) {
                v[k] = strdup(t != NULL ? (const char *)t : "");
                rc = v[k] != NULL ? KB_OK : KB_ERR_NOMEM;
                k += rc == KB_OK;
            }
        }
        if (rc == KB_OK && r != SQLITE_DONE)
            rc = sq_err(d, r, "catalog");
        sqlite3_finalize(s);
    } else {
        const char *const pv[1] = {param};
        PGresult *r = PQexecParams(d->conn, sql, param != NULL ? 1 : 0, NULL, pv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = pg_err(d, r, "catalog");
        } else {
            for (int i = 0; i < PQntuples(r) && rc == KB_OK; i++) {
                rc = kb_grow((void **)&v, &cap, k, sizeof(*v));
                if (rc == KB_OK) {
                    v[k] = strdup(PQgetvalue(r, i, 0));
                    rc = v[k] != NULL ? KB_OK : KB_ERR_NOMEM;
                    k += rc == KB_OK;
                }
            }
        }
        PQclear(r);
    }
    if (rc != KB_OK) {
        mdb_names_free(v, k);
        return rc;
    }
    *out = v;
    *n = k;
    return KB_OK;
}

kb_err mdb_tables(mdb *d, char ***out, size_t *n)
{
    if (d->db != NULL)
        return query_names(d,
                           "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                           "'sqlite\\_%' ESCAPE '\\' ORDER BY name",
                           NULL, out, n);
    return query_names(d,
                       "SELECT table_name::text FROM information_schema.tables WHERE table_schema "
                       "= current_schema() AND table_type = 'BASE TABLE' ORDER BY 1",
                       NULL, out, n);
}

kb_err mdb_has_table(mdb *d, const char *table, bool *out)
{
    char **names = NULL;
    size_t n = 0;
    *out = false;
    KB_GUARD(mdb_tables(d, &names, &n));
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], table) == 0)
            *out = true;
    mdb_names_free(names, n);
    return KB_OK;
}

static kb_err col_type(const char *decl, mv_type *out)
{
    if (strcasecmp(decl, "INTEGER") == 0 || strcasecmp(decl, "bigint") == 0)
        *out = MV_INT;
    else if (strcasecmp(decl, "TEXT") == 0)
        *out = MV_TEXT;
    else if (strcasecmp(decl, "BLOB") == 0 || strcasecmp(decl, "bytea") == 0)
        *out = MV_BLOB;
    else
        return KB_ERR_SCHEMA;
    return KB_OK;
}

kb_err mdb_columns(mdb *d, const char *table, mcol *cols, size_t *n)
{
    char **names = NULL, **types = NULL;
    size_t nn = 0, nt = 0;
    kb_err rc;

    *n = 0;
    KB_ENSURE(ident_ok(table), KB_ERR_INVALID);
    if (d->db != NULL) {
        rc = query_names(d, "SELECT name FROM pragma_table_info(?1) ORDER BY cid", table, &names,
                         &nn);
        if (rc == KB_OK)
            rc = query_names(d, "SELECT type FROM pragma_table_info(?1) ORDER BY cid", table,
                             &types, &nt);
    } else {
        rc = query_names(d,
                         "SELECT column_name::text FROM information_schema.columns WHERE "
                         "table_schema = current_schema() AND table_name = $1 ORDER BY "
                         "ordinal_position",
                         table, &names, &nn);
        if (rc == KB_OK)
            rc = query_names(d,
                             "SELECT data_type::text FROM information_schema.columns WHERE "
                             "table_schema = current_schema() AND table_name = $1 ORDER BY "
                             "ordinal_position",
                             table, &types, &nt);
    }
    if (rc == KB_OK && (nn != nt || nn > MDB_COLS_MAX))
        rc = KB_ERR_SCHEMA;
    for (size_t i = 0; rc == KB_OK && i < nn; i++) {
        if (!ident_ok(names[i]))
            rc = KB_ERR_SCHEMA;
        else
            rc = col_type(types[i], &cols[i].type);
        if (rc == KB_OK)
            snprintf(cols[i].name, sizeof(cols[i].name), "%s", names[i]);
    }
    if (rc == KB_OK)
        *n = nn;
    mdb_names_free(names, nn);
    mdb_names_free(types, nt);
    return rc;
}

kb_err mdb_count(mdb *d, const char *table, int64_t *out)
{
    char sql[MDB_SQL_MAX];
    KB_ENSURE(ident_ok(table), KB_ERR_INVALID);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM \"%s\"", table);
    *out = 0;
    if (d->db != NULL) {
        sqlite3_stmt *s = NULL;
        int r = sqlite3_prepare_v2(d->db, sql, -1, &s, NULL);
        if (r != SQLITE_OK)
            return sq_err(d, r, "count");
        r = sqlite3_step(s);
        if (r == SQLITE_ROW)
            *out = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return r == SQLITE_ROW ? KB_OK : sq_err(d, r, "count");
    }
    PGresult *r = PQexec(d->conn, sql);
    kb_err rc = KB_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        rc = pg_err(d, r, "count");
    else
        *out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return rc;
}

/* "c1", "c2", ... into b. */
static kb_err col_list(char *b, size_t len, const mcol *cols, size_t n)
{
    size_t p = 0;
    b[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w;
        KB_ENSURE(ident_ok(cols[i].name), KB_ERR_INVALID);
        w = snprintf(b + p, len - p, "%s\"%s\"", i ? ", " : "", cols[i].name);
        KB_ENSURE(w > 0 && (size_t)w < len - p, KB_ERR_TOO_LARGE);
        p += (size_t)w;
    }
    return KB_OK;
}

static kb_err scan_sqlite(mdb *d, const char *sql, size_t n, mdb_row_fn fn, void *ctx)
{
    sqlite3_stmt *s = NULL;
    mv vals[MDB_COLS_MAX];
    kb_err rc = KB_OK;
    int r = sqlite3_prepare_v2(d->db, sql, -1, &s, NULL);
    if (r != SQLITE_OK)
        return sq_err(d, r, "scan");
    while (rc == KB_OK && (r = sqlite3_step(s)) == SQLITE_ROW) {
        for (size_t i = 0; i < n; i++) {
            int c = (int)i;
            mv *v = &vals[i];
            memset(v, 0, sizeof(*v));
            switch (sqlite3_column_type(s, c)) {
            case SQLITE_INTEGER:
                v->t = MV_INT;
                v->i = sqlite3_column_int64(s, c);
                break;
            case SQLITE_TEXT:
                v->t = MV_TEXT;
                v->p = sqlite3_column_text(s, c);
                v->len = (size_t)sqlite3_column_bytes(s, c);
                break;
            case SQLITE_BLOB:
                v->t = MV_BLOB;
                v->p = sqlite3_column_blob(s, c);
                v->len = (size_t)sqlite3_column_bytes(s, c);
                break;
            case SQLITE_NULL:
                v->t = MV_NULL;
                break;
            default: /* REAL: never in this schema */
                v->t = MV_NULL;
                rc = KB_ERR_INTEGRITY;
            }
        }
        if (rc == KB_OK)
            rc = fn(ctx, vals, n);
    }
    if (rc == KB_OK && r != SQLITE_DONE)
        rc = sq_err(d, r, "scan");
    sqlite3_finalize(s);
    return rc;
}

static kb_err pg_value(const PGresult *r, int c, mv *v)
{
    const uint8_t *p = (const uint8_t *)PQgetvalue(r, 0, c);
    int len = PQgetlength(r, 0, c);
    memset(v, 0, sizeof(*v));
    if (PQgetisnull(r, 0, c)) {
        v->t = MV_NULL;
        return KB_OK;
    }
    switch (PQftype(r, c)) {
    case MDB_PG_INT8: {
        uint64_t u = 0;
        KB_ENSURE(len == 8, KB_ERR_DB);
        for (int i = 0; i < 8; i++)
            u = (u << 8) | p[i];
        v->t = MV_INT;
        v->i = (int64_t)u;
        return KB_OK;
    }
    case MDB_PG_TEXT:
    case MDB_PG_VARCHAR:
    case MDB_PG_NAME:
        v->t = MV_TEXT;
        break;
    case MDB_PG_BYTEA:
        v->t = MV_BLOB;
        break;
    default:
        return KB_ERR_SCHEMA;
    }
    v->p = p;
    v->len = len > 0 ? (size_t)len : 0;
    return KB_OK;
}

static kb_err scan_pg(mdb *d, const char *sql, size_t n, mdb_row_fn fn, void *ctx)
{
    mv vals[MDB_COLS_MAX];
    PGresult *r;
    kb_err rc = KB_OK;
    bool done = false;

    if (!PQsendQueryParams(d->conn, sql, 0, NULL, NULL, NULL, NULL, 1))
        return pg_err(d, NULL, "scan");
    if (!PQsetSingleRowMode(d->conn))
        rc = pg_err(d, NULL, "scan");
    /* Drain every result even after a failure: the connection must be idle again. */
    while ((r = PQgetResult(d->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (rc == KB_OK && st == PGRES_SINGLE_TUPLE) {
            for (size_t i = 0; rc == KB_OK && i < n; i++)
                rc = pg_value(r, (int)i, &vals[i]);
            if (rc == KB_OK)
                rc = fn(ctx, vals, n);
        } else if (st == PGRES_TUPLES_OK) {
            done = true;
        } else if (rc == KB_OK && st != PGRES_SINGLE_TUPLE) {
            rc = pg_err(d, r, "scan");
        }
        PQclear(r);
    }
    if (rc == KB_OK && !done)
        rc = KB_ERR_DB;
    return rc;
}

kb_err mdb_scan(mdb *d, const char *table, const mcol *cols, size_t n, const char *order,
                mdb_row_fn fn, void *ctx)
{
    char list[MDB_SQL_MAX / 2], sql[MDB_SQL_MAX];
    int w;
    KB_ENSURE(ident_ok(table) && n > 0 && n <= MDB_COLS_MAX, KB_ERR_INVALID);
    KB_GUARD(col_list(list, sizeof(list), cols, n));
    w = snprintf(sql, sizeof(sql), "SELECT %s FROM \"%s\" ORDER BY %s", list, table, order);
    KB_ENSURE(w > 0 && (size_t)w < sizeof(sql), KB_ERR_TOO_LARGE);
    return d->db != NULL ? scan_sqlite(d, sql, n, fn, ctx) : scan_pg(d, sql, n, fn, ctx);
}

kb_err mdb_insert_begin(mdb *d, const char *table, const mcol *cols, size_t n)
{
    char list[MDB_SQL_MAX / 2], params[MDB_COLS_MAX * 6], sql[MDB_SQL_MAX];
    size_t p = 0;
    int w;
    KB_ENSURE(ident_ok(table) && n > 0 && n <= MDB_COLS_MAX, KB_ERR_INVALID);
    KB_GUARD(col_list(list, sizeof(list), cols, n));
    for (size_t i = 0; i < n; i++) {
        w = snprintf(params + p, sizeof(params) - p, "%s%c%zu", i ? ", " : "",
                     d->db != NULL ? '?' : '$', i + 1);
        KB_ENSURE(w > 0 && (size_t)w < sizeof(params) - p, KB_ERR_TOO_LARGE);
        p += (size_t)w;
    }
    w = snprintf(sql, sizeof(sql), "INSERT INTO \"%s\"(%s) VALUES (%s)", table, list, params);
    KB_ENSURE(w > 0 && (size_t)w < sizeof(sql), KB_ERR_TOO_LARGE);
    d->ins_n = n;
    if (d->db != NULL) {
        sqlite3_finalize(d->ins);
        d->ins = NULL;
        int r = sqlite3_prepare_v2(d->db, sql, -1, &d->ins, NULL);
        return r == SQLITE_OK ? KB_OK : sq_err(d, r, "insert_prepare");
    }
    if (d->pg_ins) {
        KB_GUARD(mdb_exec(d, "DEALLOCATE kbmig_ins"));
        d->pg_ins = false;
    }
    PGresult *r = PQprepare(d->conn, "kbmig_ins", sql, (int)n, NULL);
    kb_err rc = PQresultStatus(r) == PGRES_COMMAND_OK ? KB_OK : pg_err(d, r, "insert_prepare");
    PQclear(r);
    d->pg_ins = rc == KB_OK;
    return rc;
}

static kb_err insert_sqlite(mdb *d, const mv *vals, size_t n)
{
    int r = SQLITE_OK;
    for (size_t i = 0; i < n && r == SQLITE_OK; i++) {
        int c = (int)i + 1;
        switch (vals[i].t) {
        case MV_INT:
            r = sqlite3_bind_int64(d->ins, c, vals[i].i);
            break;
        case MV_TEXT:
            r = sqlite3_bind_text64(d->ins, c, (const char *)vals[i].p, vals[i].len, SQLITE_STATIC,
                                    SQLITE_UTF8);
            break;
        case MV_BLOB:
            /* A zero-length blob stays a blob (x''), not NULL. */
            r = sqlite3_bind_blob64(d->ins, c, vals[i].len ? vals[i].p : (const void *)"",
                                    vals[i].len, SQLITE_STATIC);
            break;
        default:
            r = sqlite3_bind_null(d->ins, c);
        }
    }
    if (r == SQLITE_OK)
        r = sqlite3_step(d->ins);
    kb_err rc = r == SQLITE_DONE ? KB_OK : sq_err(d, r, "insert");
    sqlite3_reset(d->ins);
    sqlite3_clear_bindings(d->ins);
    return rc;
}

static kb_err insert_pg(mdb *d, const mv *vals, size_t n)
{
    const char *pv[MDB_COLS_MAX];
    int pl[MDB_COLS_MAX], pf[MDB_COLS_MAX];
    uint8_t ints[MDB_COLS_MAX][8];
    for (size_t i = 0; i < n; i++) {
        pf[i] = 1;
        pl[i] = 0;
        pv[i] = NULL;
        if (vals[i].t == MV_INT) {
            uint64_t u = (uint64_t)vals[i].i;
            for (int k = 7; k >= 0; k--) {
                ints[i][k] = (uint8_t)(u & 0xff);
                u >>= 8;
            }
            pv[i] = (const char *)ints[i];
            pl[i] = 8;
        } else if (vals[i].t == MV_TEXT || vals[i].t == MV_BLOB) {
            KB_ENSURE(vals[i].len <= (size_t)INT32_MAX, KB_ERR_TOO_LARGE);
            pv[i] = vals[i].len ? (const char *)vals[i].p : "";
            pl[i] = (int)vals[i].len;
        }
    }
    PGresult *r = PQexecPrepared(d->conn, "kbmig_ins", (int)n, pv, pl, pf, 0);
    kb_err rc = PQresultStatus(r) == PGRES_COMMAND_OK ? KB_OK : pg_err(d, r, "insert");
    PQclear(r);
    return rc;
}

kb_err mdb_insert(mdb *d, const mv *vals, size_t n)
{
    KB_ENSURE(n == d->ins_n && (d->ins != NULL || d->pg_ins), KB_ERR_INTERNAL);
    return d->db != NULL ? insert_sqlite(d, vals, n) : insert_pg(d, vals, n);
}

kb_err mdb_seq_get(mdb *d, const char *table, int64_t *out)
{
    *out = 0;
    KB_ENSURE(ident_ok(table), KB_ERR_INVALID);
    if (d->db != NULL) {
        sqlite3_stmt *s = NULL;
        int r = sqlite3_prepare_v2(d->db, "SELECT seq FROM sqlite_sequence WHERE name = ?1", -1, &s,
                                   NULL);
        if (r != SQLITE_OK)
            return sq_err(d, r, "seq_get");
        sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
        r = sqlite3_step(s);
        if (r == SQLITE_ROW)
            *out = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return r == SQLITE_ROW || r == SQLITE_DONE ? KB_OK : sq_err(d, r, "seq_get");
    }
    const char *const pv[1] = {table};
    PGresult *r = PQexecParams(
        d->conn, "SELECT pg_sequence_last_value(pg_get_serial_sequence($1, 'id')::regclass)", 1,
        NULL, pv, NULL, NULL, 0);
    kb_err rc = KB_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        rc = pg_err(d, r, "seq_get");
    else if (!PQgetisnull(r, 0, 0))
        *out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return rc;
}

static kb_err sq_seq_write(mdb *d, const char *sql, const char *table, int64_t v)
{
    sqlite3_stmt *s = NULL;
    int r = sqlite3_prepare_v2(d->db, sql, -1, &s, NULL);
    if (r != SQLITE_OK)
        return sq_err(d, r, "seq_set");
    sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, v);
    r = sqlite3_step(s);
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? KB_OK : sq_err(d, r, "seq_set");
}

kb_err mdb_seq_set(mdb *d, const char *table, int64_t v)
{
    char num[24];
    KB_ENSURE(ident_ok(table), KB_ERR_INVALID);
    if (v < 1)
        return KB_OK;
    snprintf(num, sizeof(num), "%" PRId64, v);
    if (d->db != NULL) {
        /* Inserting explicit ids already raised it to the largest id; never lower it. */
        KB_GUARD(sq_seq_write(d, "UPDATE sqlite_sequence SET seq = max(seq, ?2) WHERE name = ?1",
                              table, v));
        if (sqlite3_changes(d->db) > 0)
            return KB_OK;
        return sq_seq_write(d, "INSERT INTO sqlite_sequence(name, seq) VALUES (?1, ?2)", table, v);
    }
    char sql[MDB_SQL_MAX];
    const char *const pv[1] = {num};
    snprintf(sql, sizeof(sql),
             "SELECT setval(pg_get_serial_sequence('%s', 'id'), greatest($1::bigint, (SELECT "
             "coalesce(max(id), 1) FROM \"%s\")))",
             table, table);
    PGresult *r = PQexecParams(d->conn, sql, 1, NULL, pv, NULL, NULL, 0);
    kb_err rc = PQresultStatus(r) == PGRES_TUPLES_OK ? KB_OK : pg_err(d, r, "seq_set");
    PQclear(r);
    return rc;
}
