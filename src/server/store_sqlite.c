/* store_sqlite.c - the SQLite backend of the store (store_impl.h).
 *
 * One connection guarded by one mutex: SQLite serialises writers anyway, and keybridged's reads
 * are short. WAL with synchronous=FULL, so an acknowledged commit survives power loss
 * (https://sqlite.org/wal.html, https://sqlite.org/pragma.html#pragma_synchronous); foreign keys
 * on; secure_delete on, so purged envelopes are overwritten on disk, not just unlinked from the
 * b-tree; AUTOINCREMENT ids, so an id (which every row MAC binds) is never reused.
 *
 * Schema changes are numbered migration steps (migrations[] below) recorded in schema_version,
 * each expand-only or contracting (expand_only[]); a newer binary upgrades an older database in
 * one transaction and records its compat floor (schema_compat); an older binary serves a newer
 * database whose floor admits it and refuses one contracted past it (KB_ERR_SCHEMA).
 *
 * This file holds the schema and migrations, the connections, statements and transactions, the
 * secret and version row loaders, the state commitment, the shared op layer's statement
 * interface (store_sql.h) and the ops table; the secret ops are in store_sqlite_secrets.c,
 * sharing store_sqlite_int.h; the ops both backends share (audit, access rows) are in
 * store_sql*.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "store_sqlite_int.h"

/* ---- schema ---- */

static const char *const migrations[] = {
    /* 1: the model. */
    "CREATE TABLE schema_version(version INTEGER NOT NULL);"
    "INSERT INTO schema_version(version) VALUES (0);"
    "CREATE TABLE groups("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE,"
    " description TEXT NOT NULL DEFAULT '',"
    " created_by TEXT NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE clients("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " spiffe_id TEXT NOT NULL UNIQUE,"
    " enabled INTEGER NOT NULL,"
    " admin INTEGER NOT NULL,"
    " cloud INTEGER NOT NULL,"
    " app_name TEXT NOT NULL DEFAULT '',"
    " description TEXT NOT NULL DEFAULT '',"
    " last_seen INTEGER NOT NULL DEFAULT 0,"
    " last_list_at INTEGER NOT NULL DEFAULT 0,"
    " created_by TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " mac BLOB NOT NULL);"
    "CREATE TABLE secrets("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE,"
    " description TEXT NOT NULL DEFAULT '',"
    " owner_group_id INTEGER REFERENCES groups(id),"
    " cloud_sync INTEGER NOT NULL,"
    " deleted_at INTEGER NOT NULL DEFAULT 0,"
    " latest_version INTEGER NOT NULL DEFAULT 0,"
    " created_by TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " updated_by TEXT NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " mac BLOB NOT NULL);"
    "CREATE TABLE versions("
    " secret_id INTEGER NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,"
    " version INTEGER NOT NULL,"
    " wrapped_key BLOB NOT NULL,"
    " key_id TEXT NOT NULL,"
    " sealed BLOB NOT NULL,"
    " checksum BLOB NOT NULL,"
    " content_len INTEGER NOT NULL,"
    " metadata TEXT NOT NULL,"
    " expires_at INTEGER NOT NULL DEFAULT 0,"
    " created_by TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY (secret_id, version));"
    "CREATE TABLE memberships("
    " client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE,"
    " group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,"
    " mac BLOB NOT NULL,"
    " PRIMARY KEY (client_id, group_id));"
    "CREATE TABLE grants("
    " group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,"
    " secret_id INTEGER NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,"
    " mac BLOB NOT NULL,"
    " PRIMARY KEY (group_id, secret_id));"
    "CREATE TABLE fetch_log("
    " client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE,"
    " secret_id INTEGER NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,"
    " version INTEGER NOT NULL,"
    " fetched_at INTEGER NOT NULL,"
    " PRIMARY KEY (client_id, secret_id));"
    "CREATE TABLE audit_log("
    " seq INTEGER PRIMARY KEY,"
    " time INTEGER NOT NULL,"
    " identity TEXT NOT NULL,"
    " peer TEXT NOT NULL,"
    " action TEXT NOT NULL,"
    " object TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " result TEXT NOT NULL,"
    " mac BLOB NOT NULL);"
    "CREATE TABLE audit_anchors("
    " seq INTEGER PRIMARY KEY,"
    " mac BLOB NOT NULL,"
    " time INTEGER NOT NULL,"
    " sig BLOB NOT NULL);",
    /* 2: indexes for the reverse lookups (grants by secret, memberships by group, fetch log by
     * secret), expiry windows and audit queries. */
    "CREATE INDEX grants_by_secret ON grants(secret_id);"
    "CREATE INDEX memberships_by_group ON memberships(group_id);"
    "CREATE INDEX fetch_log_by_secret ON fetch_log(secret_id);"
    "CREATE INDEX versions_by_expiry ON versions(expires_at) WHERE expires_at > 0;"
    "CREATE INDEX audit_by_object ON audit_log(object, seq);"
    "CREATE INDEX audit_by_identity ON audit_log(identity, seq);",
    /* 3: the state row (docs/internals/rollback.md): counter, digest of every live
     * access-deciding row, MAC of both. Filled by migrate() from the current rows. */
    "CREATE TABLE store_state("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " counter INTEGER NOT NULL,"
    " digest BLOB NOT NULL,"
    " mac BLOB NOT NULL);",
    /* 4: version rows and latest_version get row MACs (rowmac_version, rowmac_latest); the
     * existing rows are MAC'd as they stand by migrate_mac_versions() in the same transaction. */
    ("ALTER TABLE versions ADD COLUMN mac BLOB NOT NULL DEFAULT x'';"
     "ALTER TABLE secrets ADD COLUMN latest_mac BLOB NOT NULL DEFAULT x'';"),
    /* 5: expiry notifications delivered, one row per (secret, version, window) (notify.md);
     * not MAC'd: a forged row suppresses or repeats a notification, it grants nothing. */
    ("CREATE TABLE notify_sent("
     " secret_id INTEGER NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,"
     " version INTEGER NOT NULL,"
     " window_secs INTEGER NOT NULL,"
     " sent_at INTEGER NOT NULL,"
     " PRIMARY KEY (secret_id, version, window_secs));"),
    /* 6 (expand-only): the compat floor (store_schema_gate_newer), and an index on the one
     * foreign key without one: deleting a group looked for secrets it owns, and SQLite then
     * checked the constraint, each by a full scan of secrets. */
    ("CREATE TABLE schema_compat("
     " id INTEGER PRIMARY KEY CHECK (id = 1),"
     " floor_version INTEGER NOT NULL);"
     "CREATE INDEX secrets_by_owner_group ON secrets(owner_group_id)"
     " WHERE owner_group_id IS NOT NULL;"),
};

/* Per step: true when binaries of the version before it keep working on the database after it
 * (expand-only), false when it contracts; as store_pg.c's (the same steps). */
static const bool expand_only[] = {false, false, false, false, false, true};

/* The migration step that creates store_state. */
#define STATE_SCHEMA_STEP 3
/* The migration step that creates schema_compat (the floor is recorded from here on). */
#define COMPAT_SCHEMA_STEP 6
/* The migration step after which migrate_mac_versions() runs. */
#define MIGRATION_VERSION_MACS 4

#define SCHEMA_VERSION ((int)KB_ARRAY_LEN(migrations))
_Static_assert(KB_ARRAY_LEN(expand_only) == KB_ARRAY_LEN(migrations),
               "each migration step says whether it is expand-only");

const char *store_sqlite_migration(int version)
{
    if (version < 1 || version > SCHEMA_VERSION)
        return NULL;
    return migrations[version - 1];
}

/* ---- connections and helpers (types and the inline ones: store_sqlite_int.h) ---- */

kb_err sq_db_err(cx *b, int rc, const char *what)
{
    int ext = sqlite3_extended_errcode(b->db);
    if (rc == SQLITE_CONSTRAINT || (rc & 0xff) == SQLITE_CONSTRAINT) {
        if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
            return KB_ERR_EXISTS;
        if (ext == SQLITE_CONSTRAINT_FOREIGNKEY)
            return KB_ERR_NOT_FOUND;
    }
    /* sqlite3_errmsg names tables and columns, never bound values. */
    kb_log(KB_LOG_ERROR, "store_db_error", "op", what, "error", sqlite3_errstr(rc), "detail",
           sqlite3_errmsg(b->db), NULL);
    return KB_ERR_DB;
}

/* The connection's cached statement for sql (a string literal), prepared on first use. The
 * caller hands it back with done() on every path: a statement left mid-step would pin an old
 * snapshot (and, on the writer, a transaction). */
static kb_err stmt_slot(cx *b, const char *sql, sq_stmt **out)
{
    size_t h = (size_t)(((uintptr_t)sql >> 3) * (uintptr_t)0x9E3779B97F4A7C15u);
    sqlite3_stmt *s = NULL;
    int rc;
    *out = NULL;
    for (size_t i = 0; i < STMT_SLOTS; i++) {
        size_t k = (h + i) & (STMT_SLOTS - 1);
        if (b->stmts[k].sql == sql) {
            *out = &b->stmts[k].st;
            return KB_OK;
        }
        if (b->stmts[k].sql != NULL)
            continue;
        /* Keep at least half the table empty so probes stay short. */
        KB_ENSURE(b->nstmts < STMT_SLOTS / 2, KB_ERR_INTERNAL);
        rc = sqlite3_prepare_v3(b->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
        if (rc != SQLITE_OK)
            return sq_db_err(b, rc, "prepare");
        b->stmts[k].sql = sql;
        b->stmts[k].st.hd.b = &b->sc;
        b->stmts[k].st.s = s;
        b->nstmts++;
        *out = &b->stmts[k].st;
        return KB_OK;
    }
    return KB_ERR_INTERNAL;
}

kb_err sq_prep(cx *b, const char *sql, sqlite3_stmt **s)
{
    sq_stmt *t;
    *s = NULL;
    KB_GUARD(stmt_slot(b, sql, &t));
    *s = t->s;
    return KB_OK;
}

static kb_err state_advance_locked(cx *b, int64_t *counter);
static void state_commit_external(store *st, int64_t counter);

kb_err sq_tx_begin(cx *b, bool write)
{
    if (b->sc.writer) {
        memset(b->delta, 0, sizeof(b->delta));
        b->dirty = false;
    }
    /* IMMEDIATE takes the write lock up front, so a read-then-write transaction never fails
     * half-way with SQLITE_BUSY on lock upgrade. */
    return run(b, write ? "BEGIN IMMEDIATE" : "BEGIN");
}

/* Commit (rc == KB_OK) or roll back. A change's audit row (au, store_impl.h) is appended here,
 * in the change's own transaction, so the change and its row commit together (one fsync) or not
 * at all. On the writer, a transaction that changed access-deciding rows (b->dirty, set by the
 * kb_state triggers) also moves the state row before COMMIT, and the external commitment after
 * it (docs/internals/rollback.md): every write transaction, whatever its code path, keeps the
 * digest right. */
kb_err sq_tx_end(cx *b, kb_err rc, store_audit *au)
{
    int64_t counter = 0, seq = 0;
    bool dirty;
    if (rc == KB_OK && au != NULL)
        rc = store_sql_audit_insert_locked(&b->sc, &au->ev, au->mac, au->mac_ctx, &seq);
    dirty = b->sc.writer && b->dirty;
    if (rc == KB_OK && dirty)
        rc = state_advance_locked(b, &counter);
    if (rc == KB_OK)
        rc = run(b, "COMMIT");
    if (rc != KB_OK && !sqlite3_get_autocommit(b->db))
        (void)sqlite3_exec(b->db, "ROLLBACK", NULL, NULL, NULL);
    if (b->sc.writer) {
        memset(b->delta, 0, sizeof(b->delta));
        b->dirty = false;
    }
    if (rc == KB_OK && au != NULL) {
        au->seq = seq;
        au->written = true;
    }
    if (rc == KB_OK && dirty)
        state_commit_external(b->sc.st, counter);
    return rc;
}

/* Take the writer (waits for the other writers of this process). */
cx *sq_wr_get(sq *q)
{
    pthread_mutex_lock(&q->wmu);
    return q->writer;
}

/* Take an idle reader, waiting for one if all are busy. */
cx *sq_rd_get(sq *q)
{
    cx *b;
    pthread_mutex_lock(&q->pmu);
    while (q->idle == NULL)
        pthread_cond_wait(&q->pcv, &q->pmu);
    b = q->idle;
    q->idle = b->next_idle;
    pthread_mutex_unlock(&q->pmu);
    return b;
}

/* Hand a connection back. Every path resets its statements and ends its transaction, so this
 * is a safety net: a statement still mid-step would pin the next user to an old snapshot. */
void sq_cx_put(sq *q, cx *b)
{
    sqlite3_stmt *s = NULL;
    while ((s = sqlite3_next_stmt(b->db, s)) != NULL) {
        if (sqlite3_stmt_busy(s))
            (void)sqlite3_reset(s);
    }
    if (!sqlite3_get_autocommit(b->db))
        (void)sqlite3_exec(b->db, "ROLLBACK", NULL, NULL, NULL);
    if (b->sc.writer) {
        pthread_mutex_unlock(&q->wmu);
        return;
    }
    pthread_mutex_lock(&q->pmu);
    b->next_idle = q->idle;
    q->idle = b;
    pthread_cond_signal(&q->pcv);
    pthread_mutex_unlock(&q->pmu);
}

/* ---- the shared op layer's statement interface (store_sql.h) on SQLite ---- */

_Static_assert(STORE_SQL_ROW == SQLITE_ROW && STORE_SQL_DONE == SQLITE_DONE, "step codes");

#define SQ_CX(x) ((cx *)(x))           /* sc is cx's first member */
#define SQ_ST(x) (((sq_stmt *)(x))->s) /* hd is sq_stmt's first member */

static store_sql_cx *drv_wr_get(store *st)
{
    return &sq_wr_get(SQ(st))->sc;
}

static store_sql_cx *drv_rd_get(store *st)
{
    return &sq_rd_get(SQ(st))->sc;
}

static void drv_put(store *st, store_sql_cx *b)
{
    sq_cx_put(SQ(st), SQ_CX(b));
}

static kb_err drv_tx_begin(store_sql_cx *b, store_sql_tx mode)
{
    return sq_tx_begin(SQ_CX(b), mode != STORE_SQL_TX_READ);
}

static kb_err drv_tx_end(store_sql_cx *b, kb_err rc, store_audit *au)
{
    return sq_tx_end(SQ_CX(b), rc, au);
}

static bool drv_in_tx(store_sql_cx *b)
{
    return !sqlite3_get_autocommit(SQ_CX(b)->db);
}

static kb_err drv_state_check(store_sql_cx *b)
{
    return sq_state_check(SQ_CX(b));
}

static kb_err drv_prep(store_sql_cx *b, const char *sql, store_sql_stmt **out)
{
    sq_stmt *t;
    *out = NULL;
    KB_GUARD(stmt_slot(SQ_CX(b), sql, &t));
    *out = &t->hd;
    return KB_OK;
}

static int drv_step(store_sql_stmt *s)
{
    return sqlite3_step(SQ_ST(s));
}

static kb_err drv_step_later(store_sql_stmt *s, const char *what)
{
    return step_done(SQ_CX(s->b), SQ_ST(s), what); /* in process: nothing to defer */
}

static void drv_done(store_sql_stmt *s)
{
    done(SQ_ST(s));
}

static kb_err drv_db_err(store_sql_cx *b, int rc, const char *what)
{
    return sq_db_err(SQ_CX(b), rc, what);
}

static int64_t drv_changes(store_sql_cx *b)
{
    return sqlite3_changes64(SQ_CX(b)->db);
}

static kb_err drv_bind_text(store_sql_stmt *s, int i, const char *v)
{
    return bind_text(SQ_ST(s), i, v);
}

static kb_err drv_bind_blob(store_sql_stmt *s, int i, const void *p, size_t n)
{
    return bind_blob(SQ_ST(s), i, p, n);
}

static kb_err drv_bind_i64(store_sql_stmt *s, int i, int64_t v)
{
    return bind_i64(SQ_ST(s), i, v);
}

static kb_err drv_bind_null(store_sql_stmt *s, int i)
{
    return sqlite3_bind_null(SQ_ST(s), i) == SQLITE_OK ? KB_OK : KB_ERR_DB;
}

static int64_t drv_col_i64(store_sql_stmt *s, int i)
{
    return sqlite3_column_int64(SQ_ST(s), i);
}

static bool drv_col_isint(store_sql_stmt *s, int i)
{
    return sqlite3_column_type(SQ_ST(s), i) == SQLITE_INTEGER;
}

static const char *drv_col_text(store_sql_stmt *s, int i)
{
    return (const char *)sqlite3_column_text(SQ_ST(s), i);
}

static const void *drv_col_blob(store_sql_stmt *s, int i)
{
    return sqlite3_column_blob(SQ_ST(s), i);
}

static size_t drv_col_len(store_sql_stmt *s, int i)
{
    int n = sqlite3_column_bytes(SQ_ST(s), i);
    return n > 0 ? (size_t)n : 0;
}

/* The statements whose SQL is SQLite's own (store_sql_q). */
static const char *const sq_sql[STORE_SQL_Q_COUNT] = {
    [STORE_SQL_Q_READABLE] = STORE_SQL_READABLE(
        "(SELECT json_extract(value, '$[0]') AS i, json_extract(value, '$[1]') AS name, "
        "json_extract(value, '$[2]') AS ver FROM json_each(?2)) nm",
        /* Per name, by index: the secret, its version, the secret's grants (grants_by_secret)
         * each probing the client's membership by primary key. */
        "LEFT JOIN secrets s ON s.name = nm.name "
        "LEFT JOIN versions v ON v.secret_id = s.id AND v.version = " STORE_SQL_READABLE_VER " "
        "LEFT JOIN memberships m ON m.client_id = c.id AND m.group_id IN "
        "(SELECT g2.group_id FROM grants g2 WHERE g2.secret_id = s.id) "
        "LEFT JOIN grants gr ON gr.group_id = m.group_id AND gr.secret_id = s.id",
        "m.group_id, m.mac, gr.mac"),
    [STORE_SQL_Q_AUDIT_QUERY] = "SELECT " STORE_SQL_AUDIT_COLS " FROM audit_log WHERE "
                                "(?1 IS NULL OR object = ?1) AND (?2 IS NULL OR identity = ?2) AND "
                                "(?3 = 0 OR time >= ?3) AND (?4 = 0 OR time <= ?4) "
                                "ORDER BY seq DESC LIMIT ?5",
    [STORE_SQL_Q_CLIENT_TOUCH] =
        "UPDATE clients SET "
        " last_seen = CASE WHEN last_seen <= ?1 - ?3 THEN ?1 ELSE last_seen END,"
        " last_list_at = CASE WHEN ?4 AND last_list_at <= ?1 - ?3 THEN ?1 ELSE last_list_at END "
        "WHERE id = ?2 AND (last_seen <= ?1 - ?3 OR (?4 AND last_list_at <= ?1 - ?3))",
};

static const store_sql_driver sq_driver = {
    .wr_get = drv_wr_get,
    .rd_get = drv_rd_get,
    .put = drv_put,
    .tx_begin = drv_tx_begin,
    .tx_end = drv_tx_end,
    .in_tx = drv_in_tx,
    .state_check = drv_state_check,
    .prep = drv_prep,
    .step = drv_step,
    .step_later = drv_step_later,
    .done = drv_done,
    .db_err = drv_db_err,
    .changes = drv_changes,
    .bind_text = drv_bind_text,
    .bind_blob = drv_bind_blob,
    .bind_i64 = drv_bind_i64,
    .bind_null = drv_bind_null,
    .col_i64 = drv_col_i64,
    .col_isint = drv_col_isint,
    .col_text = drv_col_text,
    .col_blob = drv_col_blob,
    .col_len = drv_col_len,
    .sql = sq_sql,
};

/* ---- the state commitment (docs/internals/rollback.md) ---- */

/* The tables whose rows decide access; each has a `mac` column (rowmac.h). The digest is the
 * sum mod 2^256 of rowmac_state_elem(table, stored mac) over all their rows. */
static const char *const state_tables[] = {"clients", "memberships", "grants", "secrets"};
static const char *const state_scan_sql[] = {
    "SELECT mac FROM clients",
    "SELECT mac FROM memberships",
    "SELECT mac FROM grants",
    "SELECT mac FROM secrets",
};

/* Temporary triggers (in the writer connection's temp schema, never in the file: nothing in the
 * database can change or drop them) report every change of a mac column, including rows removed
 * by ON DELETE CASCADE, to kb_state(table, mac, +1|-1). So no write path can forget to move the
 * digest: a row inserted, re-MAC'd or deleted is counted wherever the SQL came from. */
#define STATE_TRIGGER(t)                                                                           \
    "CREATE TEMP TRIGGER kb_state_" t "_i AFTER INSERT ON main." t " BEGIN "                       \
    "SELECT kb_state('" t "', NEW.mac, 1); END;"                                                   \
    "CREATE TEMP TRIGGER kb_state_" t "_d AFTER DELETE ON main." t " BEGIN "                       \
    "SELECT kb_state('" t "', OLD.mac, -1); END;"                                                  \
    "CREATE TEMP TRIGGER kb_state_" t "_u AFTER UPDATE OF mac ON main." t " BEGIN "                \
    "SELECT kb_state('" t "', OLD.mac, -1); SELECT kb_state('" t "', NEW.mac, 1); END;"
static const char state_triggers[] = STATE_TRIGGER("clients") STATE_TRIGGER("memberships")
    STATE_TRIGGER("grants") STATE_TRIGGER("secrets");

static void state_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    cx *b = sqlite3_user_data(ctx);
    uint8_t e[ROWMAC_LEN];
    const unsigned char *t = sqlite3_value_text(argv[0]);
    const void *mac = sqlite3_value_blob(argv[1]);
    int n = sqlite3_value_bytes(argv[1]);
    (void)argc;
    /* An autocommit statement would commit the row without the state row: refuse it, so a
     * write path that forgets its transaction fails at once instead of tripping the next check. */
    if (sqlite3_get_autocommit(b->db)) {
        sqlite3_result_error(ctx, "access-deciding rows change only inside a store transaction",
                             -1);
        return;
    }
    if (t == NULL ||
        rowmac_state_elem(b->sc.mac, (const char *)t, mac, n > 0 ? (size_t)n : 0, e) != KB_OK) {
        sqlite3_result_error(ctx, "kb_state failed", -1);
        return;
    }
    rowmac_digest_add(b->delta, e, sqlite3_value_int(argv[2]) < 0);
    b->dirty = true;
    sqlite3_result_null(ctx);
}

static kb_err state_install(cx *b)
{
    int rc = sqlite3_create_function(b->db, "kb_state", 3, SQLITE_UTF8 | SQLITE_DIRECTONLY, b,
                                     state_fn, NULL, NULL);
    if (rc != SQLITE_OK)
        return sq_db_err(b, rc, "state_function");
    return exec(b, state_triggers);
}

static void log_counters(const char *event, const char *msg, int64_t db, const char *other_name,
                         int64_t other)
{
    char a[24], c[24];
    snprintf(a, sizeof(a), "%" PRId64, db);
    snprintf(c, sizeof(c), "%" PRId64, other);
    kb_log(KB_LOG_ERROR, event, "msg", msg, "db_counter", a, other_name, c, NULL);
}

/* The state row, MAC verified: KB_ERR_INTEGRITY (logged) if missing or not verifying. */
static kb_err state_load(cx *b, int64_t *counter, uint8_t digest[ROWMAC_LEN])
{
    sqlite3_stmt *s = NULL;
    uint8_t want[ROWMAC_LEN];
    kb_err rc;
    KB_GUARD(sq_prep(b, "SELECT counter, digest, mac FROM store_state WHERE id = 1", &s));
    rc = step_row(b, s, "state_load");
    if (rc == KB_OK) {
        *counter = sqlite3_column_int64(s, 0);
        if (sqlite3_column_type(s, 0) != SQLITE_INTEGER || *counter < 1 ||
            sqlite3_column_bytes(s, 1) != ROWMAC_LEN) {
            rc = KB_ERR_INTEGRITY;
        } else {
            memcpy(digest, sqlite3_column_blob(s, 1), ROWMAC_LEN);
            rc = rowmac_state(b->sc.mac, *counter, digest, want);
            if (rc == KB_OK && !col_mac_ok(s, 2, want))
                rc = KB_ERR_INTEGRITY;
        }
    } else if (rc == KB_ERR_NOT_FOUND) {
        rc = KB_ERR_INTEGRITY;
    }
    done(s);
    if (rc == KB_ERR_INTEGRITY)
        kb_log(KB_LOG_ERROR, "store_state_invalid", "msg",
               "the state row is missing or its MAC does not verify (database tampered with?)",
               NULL);
    return rc;
}

static kb_err state_store(cx *b, int64_t counter, const uint8_t digest[ROWMAC_LEN])
{
    sqlite3_stmt *s = NULL;
    uint8_t mac[ROWMAC_LEN];
    kb_err rc;
    KB_GUARD(rowmac_state(b->sc.mac, counter, digest, mac));
    KB_GUARD(sq_prep(b,
                     "INSERT INTO store_state(id, counter, digest, mac) VALUES (1, ?1, ?2, ?3) "
                     "ON CONFLICT(id) DO UPDATE SET counter = excluded.counter, "
                     "digest = excluded.digest, mac = excluded.mac",
                     &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, counter));
    KB_GUARD_OUT(rc, bind_blob(s, 2, digest, ROWMAC_LEN));
    KB_GUARD_OUT(rc, bind_blob(s, 3, mac, ROWMAC_LEN));
    rc = step_done(b, s, "state_store");
out:
    done(s);
    return rc;
}

/* The digest of the rows as they are now (inside the caller's transaction). */
static kb_err state_digest_full(cx *b, uint8_t out[ROWMAC_LEN])
{
    memset(out, 0, ROWMAC_LEN);
    for (size_t t = 0; t < KB_ARRAY_LEN(state_tables); t++) {
        sqlite3_stmt *s = NULL;
        kb_err rc = KB_OK;
        int r;
        KB_GUARD(sq_prep(b, state_scan_sql[t], &s));
        while ((r = sqlite3_step(s)) == SQLITE_ROW) {
            uint8_t e[ROWMAC_LEN];
            const void *mac = sqlite3_column_blob(s, 0);
            int n = sqlite3_column_bytes(s, 0);
            rc = rowmac_state_elem(b->sc.mac, state_tables[t], mac, n > 0 ? (size_t)n : 0, e);
            if (rc != KB_OK)
                break;
            rowmac_digest_add(out, e, false);
        }
        if (rc == KB_OK && r != SQLITE_DONE)
            rc = sq_db_err(b, r, "state_digest");
        done(s);
        KB_GUARD(rc);
    }
    return KB_OK;
}

/* Before COMMIT of a write that changed access-deciding rows: counter + 1 and the digest moved
 * by the transaction's delta. The stored counter must not be below what this handle has seen
 * (the file was swapped under us). */
static kb_err state_advance_locked(cx *b, int64_t *counter)
{
    uint8_t digest[ROWMAC_LEN];
    int64_t c = 0, seen = atomic_load(&b->sc.st->state_seen);
    KB_GUARD(state_load(b, &c, digest));
    if (c < seen) {
        log_counters("store_rollback_detected",
                     "the database's state counter went back while running (file replaced?)", c,
                     "seen_counter", seen);
        store_fail(b->sc.st, "state counter went back");
        return KB_ERR_UNAVAILABLE;
    }
    KB_ENSURE(c < INT64_MAX, KB_ERR_CONFLICT);
    rowmac_digest_add(digest, b->delta, false);
    KB_GUARD(state_store(b, c + 1, digest));
    *counter = c + 1;
    return KB_OK;
}

/* Bring the external commitment up to counter (never down). A failure is logged: the data is
 * committed, and the next write or check rolls the commitment forward. */
static void state_commit_external(store *st, int64_t counter)
{
    kb_err rc;
    store_state_saw(st, counter);
    if (st->cfg.commitment.advance == NULL)
        return;
    rc = st->cfg.commitment.advance(st->cfg.commitment.ctx, (uint64_t)counter);
    if (rc != KB_OK)
        kb_log(KB_LOG_ERROR, "store_state_advance_failed", "msg",
               "could not advance the token's state counter; retried at the next write or check",
               "error", kb_err_str(rc), NULL);
}

/* The read-path check, before a read's snapshot (floor is loaded first, so a commit this
 * handle already saw is in the snapshot): the state counter must not be below the highest one
 * seen. A higher one (another process wrote) is accepted once its MAC verifies. */
kb_err sq_state_check(cx *b)
{
    store *st = b->sc.st;
    int64_t floor = atomic_load(&st->state_seen), c;
    uint8_t digest[ROWMAC_LEN];
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD(sq_prep(b, "SELECT counter FROM store_state WHERE id = 1", &s));
    rc = step_row(b, s, "state_check");
    c = rc == KB_OK ? sqlite3_column_int64(s, 0) : 0;
    done(s);
    if (rc == KB_OK && c == floor)
        return KB_OK;
    if (rc == KB_OK || rc == KB_ERR_NOT_FOUND)
        rc = state_load(b, &c, digest);
    if (rc == KB_OK && c < floor) {
        log_counters("store_rollback_detected",
                     "the database's state counter went back while running (file replaced?)", c,
                     "seen_counter", floor);
        rc = KB_ERR_INTEGRITY;
    }
    if (rc == KB_ERR_INTEGRITY) {
        store_fail(st, "state row missing, forged or older than already seen");
        return KB_ERR_UNAVAILABLE;
    }
    KB_GUARD(rc);
    store_state_saw(st, c);
    return KB_OK;
}

/* The full check (store_verify, and store_open with startup): state row MAC, digest recomputed
 * over every row, counter against the highest seen and against the external commitment (rolled
 * forward when the database is ahead). */
static kb_err state_verify(store *st, cx *b, bool startup)
{
    uint8_t digest[ROWMAC_LEN], full[ROWMAC_LEN];
    int64_t c = 0, floor = atomic_load(&st->state_seen);
    uint64_t t = 0;
    kb_err rc;

    KB_GUARD(sq_tx_begin(b, false));
    rc = state_load(b, &c, digest);
    if (rc == KB_OK)
        rc = state_digest_full(b, full);
    rc = sq_tx_end(b, rc, NULL);
    if (rc == KB_OK && !kb_ct_eq(digest, full, ROWMAC_LEN)) {
        kb_log(KB_LOG_ERROR, "store_state_mismatch", "msg",
               "the access-deciding rows do not match the committed state digest: rows were "
               "replayed, removed or forged (database tampered with or restored?)",
               NULL);
        rc = KB_ERR_INTEGRITY;
    }
    if (rc == KB_OK && c < floor) {
        log_counters("store_rollback_detected",
                     "the database's state counter went back while running (file replaced?)", c,
                     "seen_counter", floor);
        rc = KB_ERR_INTEGRITY;
    }
    if (rc == KB_OK && st->cfg.commitment.read != NULL) {
        rc = st->cfg.commitment.read(st->cfg.commitment.ctx, &t);
        if (rc == KB_ERR_NOT_FOUND) {
            kb_log(KB_LOG_INFO, "store_state_commitment_created", NULL);
            t = 0;
            rc = KB_OK;
        } else if (rc != KB_OK) {
            kb_log(KB_LOG_ERROR, "store_state_commitment_unreadable", "error", kb_err_str(rc),
                   NULL);
        } else if (t > (uint64_t)c) {
            log_counters("store_rollback_detected",
                         "database is older than the token's commitment: rollback or restore "
                         "from backup; refusing to serve it",
                         c, "token_counter", t > INT64_MAX ? INT64_MAX : (int64_t)t);
            rc = KB_ERR_INTEGRITY;
        }
        if (rc == KB_OK && t < (uint64_t)c) {
            if (t > 0)
                log_counters("store_state_rolled_forward",
                             "the database is ahead of the token (a crash between commit and "
                             "token update, or another process's write): token advanced",
                             c, "token_counter", (int64_t)t);
            rc = st->cfg.commitment.advance(st->cfg.commitment.ctx, (uint64_t)c);
        }
    }
    if (rc == KB_OK)
        store_state_saw(st, c);
    else if (rc == KB_ERR_INTEGRITY && !startup)
        store_fail(st, "full state check failed");
    return rc;
}

static kb_err sq_verify(store *st)
{
    cx *b = RD(st);
    kb_err rc = state_verify(st, b, false);
    PUT(st, b);
    /* A token that cannot be read right now is not evidence of a rollback: keep serving (logged)
     * and check again later; only a failed check stops service. */
    return rc == KB_ERR_INTEGRITY ? KB_ERR_UNAVAILABLE : rc;
}

/* ---- open / close / migrate ---- */

static kb_err read_schema_version(cx *b, int *out)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    *out = 0;
    KB_GUARD(sq_prep(b,
                     "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                     "name = 'schema_version'",
                     &s));
    rc = step_row(b, s, "schema_probe");
    if (rc == KB_OK && sqlite3_column_int(s, 0) == 0) {
        done(s);
        return KB_OK; /* a new, empty database */
    }
    done(s);
    s = NULL;
    KB_GUARD(rc);
    KB_GUARD(sq_prep(b, "SELECT min(version), max(version), count(*) FROM schema_version", &s));
    rc = step_row(b, s, "schema_version");
    if (rc == KB_OK) {
        if (sqlite3_column_int(s, 2) != 1 || sqlite3_column_int(s, 0) != sqlite3_column_int(s, 1) ||
            sqlite3_column_int(s, 0) < 0)
            rc = KB_ERR_SCHEMA;
        else
            *out = sqlite3_column_int(s, 0);
    }
    done(s);
    return rc;
}

/* The compat floor: schema_compat's one row, or the version itself where there is none yet (a
 * database from before step 6 supports no binary older than itself). */
static kb_err read_schema_floor(cx *b, int version, int *out)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    *out = version;
    KB_GUARD(sq_prep(b,
                     "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                     "name = 'schema_compat'",
                     &s));
    rc = step_row(b, s, "schema_compat_probe");
    if (rc == KB_OK && sqlite3_column_int(s, 0) == 0) {
        done(s);
        return KB_OK;
    }
    done(s);
    s = NULL;
    KB_GUARD(rc);
    KB_GUARD(sq_prep(
        b, "SELECT min(floor_version), max(floor_version), count(*) FROM schema_compat", &s));
    rc = step_row(b, s, "schema_compat");
    if (rc == KB_OK) {
        if (sqlite3_column_int64(s, 2) != 1 ||
            sqlite3_column_int64(s, 0) != sqlite3_column_int64(s, 1) ||
            sqlite3_column_int64(s, 0) < 1 || sqlite3_column_int64(s, 0) > version)
            rc = KB_ERR_SCHEMA;
        else
            *out = (int)sqlite3_column_int64(s, 0);
    }
    done(s);
    if (rc == KB_ERR_SCHEMA)
        kb_log(KB_LOG_ERROR, "store_schema_invalid", "msg",
               "schema_compat must hold one floor between 1 and the schema version", NULL);
    return rc;
}

/* Schema step 3: MAC every existing version row and latest_version as they stand (trust on
 * upgrade: the rows were as protected as before until now; from here on an edit is refused). Runs
 * inside migrate()'s transaction. */
static kb_err migrate_mac_versions(cx *b)
{
    sqlite3_stmt *s = NULL, *u = NULL;
    uint8_t mac[ROWMAC_LEN];
    kb_err rc = KB_OK;
    int r;

    KB_GUARD_OUT(rc, sq_prep(b,
                             "SELECT secret_id, version, checksum, content_len, metadata, "
                             "expires_at, created_by, created_at FROM versions",
                             &s));
    KB_GUARD_OUT(
        rc, sq_prep(b, "UPDATE versions SET mac = ?1 WHERE secret_id = ?2 AND version = ?3", &u));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        const void *ck = sqlite3_column_blob(s, 2);
        int ckn = sqlite3_column_bytes(s, 2);
        KB_GUARD_OUT(
            rc, rowmac_version(b->sc.mac, sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1),
                               ck, ck ? (size_t)ckn : 0, sqlite3_column_int64(s, 3),
                               (const char *)sqlite3_column_text(s, 4), sqlite3_column_int64(s, 5),
                               (const char *)sqlite3_column_text(s, 6), sqlite3_column_int64(s, 7),
                               mac));
        KB_GUARD_OUT(rc, bind_blob(u, 1, mac, sizeof(mac)));
        KB_GUARD_OUT(rc, bind_i64(u, 2, sqlite3_column_int64(s, 0)));
        KB_GUARD_OUT(rc, bind_i64(u, 3, sqlite3_column_int64(s, 1)));
        KB_GUARD_OUT(rc, step_done(b, u, "migrate_version_mac"));
        sqlite3_reset(u);
    }
    if (r != SQLITE_DONE)
        KB_ENSURE_OUT(rc, false, sq_db_err(b, r, "migrate_versions"));
    done(s);
    done(u);
    s = u = NULL;
    KB_GUARD_OUT(rc, sq_prep(b, "SELECT id, latest_version FROM secrets", &s));
    KB_GUARD_OUT(rc, sq_prep(b, "UPDATE secrets SET latest_mac = ?1 WHERE id = ?2", &u));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        KB_GUARD_OUT(rc, rowmac_latest(b->sc.mac, sqlite3_column_int64(s, 0),
                                       sqlite3_column_int64(s, 1), mac));
        KB_GUARD_OUT(rc, bind_blob(u, 1, mac, sizeof(mac)));
        KB_GUARD_OUT(rc, bind_i64(u, 2, sqlite3_column_int64(s, 0)));
        KB_GUARD_OUT(rc, step_done(b, u, "migrate_latest_mac"));
        sqlite3_reset(u);
    }
    if (r != SQLITE_DONE)
        KB_ENSURE_OUT(rc, false, sq_db_err(b, r, "migrate_latest"));
out:
    done(s);
    done(u);
    return rc;
}

static kb_err migrate(cx *b)
{
    uint8_t digest[ROWMAC_LEN], full[ROWMAC_LEN];
    int64_t counter = 0;
    int cur = 0, compat = 0;
    char have[16], want[16];
    kb_err rc;

    KB_GUARD(sq_tx_begin(b, true));
    KB_GUARD_OUT(rc, read_schema_version(b, &cur));
    KB_GUARD_OUT(rc, read_schema_floor(b, cur, &compat));
    snprintf(have, sizeof(have), "%d", cur);
    snprintf(want, sizeof(want), "%d", SCHEMA_VERSION);
    /* Newer: opened as it is when its floor admits this binary (a newer binary ran on this file
     * and this one was put back); never migrated down. */
    if (cur > SCHEMA_VERSION)
        KB_GUARD_OUT(rc, store_schema_gate_newer(cur, compat, SCHEMA_VERSION));
    /* A database that already has a state row must match it before a migration rewrites rows:
     * a migration never launders replayed rows into a new digest. */
    if (cur >= STATE_SCHEMA_STEP && cur < SCHEMA_VERSION) {
        KB_GUARD_OUT(rc, state_load(b, &counter, digest));
        KB_GUARD_OUT(rc, state_digest_full(b, full));
        if (!kb_ct_eq(digest, full, ROWMAC_LEN)) {
            kb_log(KB_LOG_ERROR, "store_state_mismatch", "msg",
                   "the access-deciding rows do not match the committed state digest: not "
                   "migrating",
                   NULL);
            KB_ENSURE_OUT(rc, false, KB_ERR_INTEGRITY);
        }
    }
    /* Only when older: a newer database served as it is may be at any version (up to
     * INT32_MAX), and cur + 1 must not overflow. */
    if (cur < SCHEMA_VERSION) {
        for (int v = cur + 1; v <= SCHEMA_VERSION; v++) {
            KB_GUARD_OUT(rc, exec(b, migrations[v - 1]));
            if (v == MIGRATION_VERSION_MACS)
                KB_GUARD_OUT(rc, migrate_mac_versions(b));
        }
    }
    if (cur < SCHEMA_VERSION) {
        sqlite3_stmt *s = NULL;
        KB_GUARD_OUT(rc, sq_prep(b, "UPDATE schema_version SET version = ?1", &s));
        rc = bind_i64(s, 1, SCHEMA_VERSION);
        if (rc == KB_OK)
            rc = step_done(b, s, "schema_version_set");
        done(s);
        KB_GUARD_OUT(rc, rc);
        if (SCHEMA_VERSION >= COMPAT_SCHEMA_STEP) {
            s = NULL;
            KB_GUARD_OUT(rc, sq_prep(b,
                                     "INSERT OR REPLACE INTO schema_compat(id, floor_version) "
                                     "VALUES (1, ?1)",
                                     &s));
            rc = bind_i64(
                s, 1, store_schema_floor(expand_only, SCHEMA_VERSION, cur, compat, SCHEMA_VERSION));
            if (rc == KB_OK)
                rc = step_done(b, s, "schema_compat_set");
            done(s);
            KB_GUARD_OUT(rc, rc);
        }
        /* The state row: first made from the rows as they are (a new database: counter 1,
         * empty digest; an older one: its current rows, each still checked by its row MAC on
         * every read), or moved on by one over rows a migration step rewrote. The start-up
         * check then compares the counter with the token's. */
        KB_GUARD_OUT(rc, state_digest_full(b, full));
        KB_GUARD_OUT(rc, state_store(b, cur >= STATE_SCHEMA_STEP ? counter + 1 : 1, full));
        kb_log(KB_LOG_INFO, "store_schema_migrated", "from", have, "to", want, NULL);
    }
out:
    return sq_tx_end(b, rc, NULL);
}

static void cx_close(cx *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < STMT_SLOTS; i++)
        sqlite3_finalize(b->stmts[i].st.s);
    sqlite3_close(b->db);
    rowmac_ctx_free(b->sc.mac);
    free(b);
}

/* Checkpoints. SQLite's automatic checkpoint (after a commit that leaves >= 1000 pages in the
 * WAL) is PASSIVE: it copies what it can but never waits for readers, and the WAL file only
 * starts over when no reader is using it. With a pool of readers serving lists all the time
 * there is nearly always one, and the WAL grew without bound (50 MB after 20,000 writes under
 * list load, against 4 MB with the single connection). So the writer's hook runs a RESTART
 * checkpoint instead (https://sqlite.org/c3ref/wal_checkpoint_v2.html): it copies every frame,
 * then waits, briefly, until readers only read the database file, so the next commit starts the
 * WAL from the beginning. Readers are short; the wait is bounded by WAL_CHECKPOINT_WAIT_MS and
 * a checkpoint that could not finish is retried after the next commit. */
#define WAL_CHECKPOINT_PAGES 1000  /* SQLite's default autocheckpoint threshold */
#define WAL_CHECKPOINT_WAIT_MS 100 /* longest a commit waits for readers to move on */

/* Busy handler for the checkpoint: poll every 50 µs (a reader's transaction lasts tens of µs)
 * rather than SQLite's default 1, 2, 5, 10 ... ms sleeps, up to WAL_CHECKPOINT_WAIT_MS. */
static int ckpt_busy(void *arg, int tries)
{
    struct timespec ts = {0, 50 * 1000};
    (void)arg;
    if (tries >= WAL_CHECKPOINT_WAIT_MS * 20)
        return 0;
    nanosleep(&ts, NULL);
    return 1;
}

static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    const cx *b = arg;
    if (pages < WAL_CHECKPOINT_PAGES)
        return SQLITE_OK;
    sqlite3_busy_handler(db, ckpt_busy, NULL);
    (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_RESTART, NULL, NULL);
    sqlite3_busy_timeout(db, b->sc.st->cfg.busy_timeout_ms); /* back to the configured wait */
    return SQLITE_OK;
}

/* Open one connection: the writer sets WAL and migrates; readers are query_only. NOMUTEX:
 * each connection is used by one thread at a time (wr_get/rd_get), so SQLite's own per-call
 * mutex is redundant (https://sqlite.org/threadsafe.html). */
static kb_err cx_open(store *st, const char *path, bool writer, cx **out)
{
    cx *b;
    int rc;
    kb_err e = KB_OK;
    sqlite3_stmt *s = NULL;

    *out = NULL;
    b = calloc(1, sizeof(*b));
    KB_ENSURE(b != NULL, KB_ERR_NOMEM);
    b->sc.drv = &sq_driver;
    b->sc.st = st;
    b->sc.writer = writer;
    KB_GUARD_OUT(e, rowmac_ctx_new(st->cfg.row_mac_key, &b->sc.mac));
    rc = sqlite3_open_v2(path, &b->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK) {
        kb_log(KB_LOG_ERROR, "store_open_failed", "error", sqlite3_errstr(rc), NULL);
        KB_ENSURE_OUT(e, false, KB_ERR_DB);
    }
    sqlite3_extended_result_codes(b->db, 1);
    sqlite3_busy_timeout(b->db, st->cfg.busy_timeout_ms);
    if (writer) {
        /* journal_mode returns the mode in effect: insist on WAL. */
        KB_GUARD_OUT(e, sq_prep(b, "PRAGMA journal_mode = WAL", &s));
        KB_GUARD_OUT(e, step_row(b, s, "journal_mode"));
        KB_ENSURE_OUT(e,
                      sqlite3_column_text(s, 0) != NULL &&
                          strcmp((const char *)sqlite3_column_text(s, 0), "wal") == 0,
                      KB_ERR_DB);
        done(s);
        s = NULL;
        KB_GUARD_OUT(e, exec(b, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; "
                                "PRAGMA secure_delete = ON; PRAGMA trusted_schema = OFF;"));
        KB_GUARD_OUT(e, migrate(b));
        KB_GUARD_OUT(e, state_install(b));
        /* Replaces the PASSIVE autocheckpoint (see wal_hook). */
        sqlite3_wal_hook(b->db, wal_hook, b);
    } else {
        KB_GUARD_OUT(e, exec(b, "PRAGMA query_only = ON; PRAGMA foreign_keys = ON; "
                                "PRAGMA trusted_schema = OFF;"));
    }
    *out = b;
    b = NULL;
out:
    done(s);
    cx_close(b);
    return e;
}

static void sq_free(sq *q)
{
    if (q == NULL)
        return;
    for (size_t i = 0; i < q->nreaders; i++)
        cx_close(q->readers[i]);
    free(q->readers);
    cx_close(q->writer);
    store_sql_pool_free(&q->sp);
    pthread_cond_destroy(&q->pcv);
    pthread_mutex_destroy(&q->pmu);
    pthread_mutex_destroy(&q->wmu);
    free(q);
}

/* Readers: one per event loop (one per core) plus one for the odd admin or background call. */
static size_t readers_wanted(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n + 1 > STORE_SQLITE_READERS_MAX)
        return STORE_SQLITE_READERS_MAX;
    return n + 1 < 2 ? 2 : (size_t)n + 1;
}

static kb_err sq_open(store *st, const char *path)
{
    sq *q;
    int fd;
    size_t want;
    kb_err e = KB_OK;

    KB_ENSURE(path != NULL && path[0] != '\0', KB_ERR_CONFIG);
    /* Create the file private (0600) before SQLite does (it would use 0644); the -wal and -shm
     * files inherit the database file's mode. */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        kb_log(KB_LOG_ERROR, "store_open_failed", "error", strerror(errno), NULL);
        return KB_ERR_IO;
    }
    close(fd);
    q = calloc(1, sizeof(*q));
    KB_ENSURE(q != NULL, KB_ERR_NOMEM);
    if (pthread_mutex_init(&q->wmu, NULL) != 0) {
        free(q);
        return KB_ERR_INTERNAL;
    }
    if (pthread_mutex_init(&q->pmu, NULL) != 0) {
        pthread_mutex_destroy(&q->wmu);
        free(q);
        return KB_ERR_INTERNAL;
    }
    if (pthread_cond_init(&q->pcv, NULL) != 0) {
        pthread_mutex_destroy(&q->pmu);
        pthread_mutex_destroy(&q->wmu);
        free(q);
        return KB_ERR_INTERNAL;
    }
    KB_GUARD_OUT(e, store_sql_pool_init(&q->sp, &sq_driver));
    /* The writer first: it sets WAL and migrates before any reader looks at the schema. */
    KB_GUARD_OUT(e, cx_open(st, path, true, &q->writer));
    want = readers_wanted();
    q->readers = calloc(want, sizeof(*q->readers));
    KB_ENSURE_OUT(e, q->readers != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < want; i++) {
        KB_GUARD_OUT(e, cx_open(st, path, false, &q->readers[i]));
        q->nreaders++;
        q->readers[i]->next_idle = q->idle;
        q->idle = q->readers[i];
    }
    /* The start-up rollback check: refuse to open a database that is older than the
     * commitment or does not match its own state row. */
    KB_GUARD_OUT(e, state_verify(st, q->readers[0], true));
    st->impl = q;
    q = NULL;
out:
    sq_free(q);
    return e;
}

static void sq_close(store *st)
{
    sq_free(SQ(st));
    st->impl = NULL;
}

/* The database's schema version (/readyz): KB_ERR_SCHEMA once a migration contracted it past
 * this binary while it was running (not logged here: /readyz is polled). */
static kb_err sq_schema_version(store *st, int *out)
{
    cx *b;
    kb_err rc;
    int compat = 0;
    b = RD(st);
    rc = read_schema_version(b, out);
    if (rc == KB_OK && *out > SCHEMA_VERSION)
        rc = read_schema_floor(b, *out, &compat);
    if (rc == KB_OK && compat > SCHEMA_VERSION)
        rc = KB_ERR_SCHEMA;
    PUT(st, b);
    return rc;
}

const struct store_ops store_sqlite_ops = {
    .scheme = "sqlite",
    .schema_version = SCHEMA_VERSION,
    .open = sq_open,
    .verify = sq_verify,
    .close = sq_close,
    .get_schema_version = sq_schema_version,
    .secret_create = store_sql_secret_create,
    .version_add = store_sql_version_add,
    .secret_update = store_sql_secret_update,
    .secret_set_deleted = store_sql_secret_set_deleted,
    .secret_purge = store_sql_secret_purge,
    .secret_get = store_sql_secret_get,
    .secret_list = store_sql_secret_list,
    .secret_list_page = store_sql_secret_list_page,
    .version_list = store_sql_version_list,
    .version_get = store_sql_version_get,
    .secrets_expiring = store_sql_secrets_expiring,
    .group_create = store_sql_group_create,
    .group_get = store_sql_group_get,
    .group_list = store_sql_group_list,
    .group_delete = store_sql_group_delete,
    .client_create = store_sql_client_create,
    .client_get = store_sql_client_get,
    .client_list = store_sql_client_list,
    .client_update = store_sql_client_update,
    .client_delete = store_sql_client_delete,
    .client_seen = store_sql_client_seen,
    .clients_stale = store_sql_clients_stale,
    .membership_set = store_sql_membership_set,
    .client_groups = store_sql_client_groups,
    .group_clients = store_sql_group_clients,
    .grant_set = store_sql_grant_set,
    .secret_groups = store_sql_secret_groups,
    .readable_list = store_sql_readable_list,
    .readable_get_batch = store_sql_readable_get_batch,
    .fetch_record = store_sql_fetch_record,
    .secret_status = store_sql_secret_status,
    .audit_append = store_sql_audit_append,
    .audit_rows = store_sql_audit_rows,
    .audit_query = store_sql_audit_query,
    .audit_head = store_sql_audit_head,
    .anchor_put = store_sql_anchor_put,
    .anchor_list = store_sql_anchor_list,
    .notify_sent = store_sql_notify_sent,
    .notify_mark = store_sql_notify_mark,
};
