/* store_sqlite.c - the SQLite backend of the store (store_impl.h).
 *
 * One connection guarded by one mutex: SQLite serialises writers anyway, and keybridged's reads
 * are short. WAL with synchronous=FULL, so an acknowledged commit survives power loss
 * (https://sqlite.org/wal.html, https://sqlite.org/pragma.html#pragma_synchronous); foreign keys
 * on; secure_delete on, so purged envelopes are overwritten on disk, not just unlinked from the
 * b-tree; AUTOINCREMENT ids, so an id (which every row MAC binds) is never reused.
 *
 * Schema changes are numbered migration steps (migrations[] below) recorded in schema_version;
 * a newer binary upgrades an older database in one transaction; an older binary refuses a newer
 * database (KB_ERR_SCHEMA).
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

#include "lib/log.h"
#include "model.h"
#include "rowmac.h"
#include "store_impl.h"

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
};

/* The migration step that creates store_state. */
#define STATE_SCHEMA_STEP 3
/* The migration step after which migrate_mac_versions() runs. */
#define MIGRATION_VERSION_MACS 4

#define SCHEMA_VERSION ((int)KB_ARRAY_LEN(migrations))

const char *store_sqlite_migration(int version)
{
    if (version < 1 || version > SCHEMA_VERSION)
        return NULL;
    return migrations[version - 1];
}

/* ---- connections and helpers ---- */

/* Prepared statements are kept per connection for its lifetime (SQLITE_PREPARE_PERSISTENT,
 * https://sqlite.org/c3ref/c_prepare_normalize.html): parsing and planning a statement cost more
 * than running keybridged's short queries. They are found by the address of their SQL text,
 * which is always a string literal, so the lookup is a pointer hash, not a string compare. */
#define STMT_SLOTS 128 /* power of two, over twice the number of distinct SQL texts */

typedef struct cx {
    store *st;
    sqlite3 *db;
    rowmac_ctx *mac; /* this connection's keyed HMAC context (one user at a time, like db) */
    bool writer;
    /* Writer only: the change to the state digest made by the open transaction, accumulated by
     * the kb_state() SQL function that the temporary triggers call (see state_triggers). */
    uint8_t delta[ROWMAC_LEN];
    bool dirty;
    struct cx *next_idle;
    size_t nstmts;
    struct {
        const char *sql;
        sqlite3_stmt *s;
    } stmts[STMT_SLOTS];
} cx;

/* One writer connection behind a mutex (SQLite has one writer at a time anyway), and a pool of
 * reader connections: in WAL mode readers never block the writer nor each other
 * (https://sqlite.org/wal.html#concurrency), so the event loops' reads run in parallel. Every
 * reader statement runs in its own snapshot, or in one BEGIN ... COMMIT where several reads must
 * agree (the client row and its listing; a batch get). */
typedef struct {
    cx *writer;
    pthread_mutex_t wmu;
    pthread_mutex_t pmu; /* guards idle */
    pthread_cond_t pcv;  /* signalled when a reader is put back */
    cx *idle;
    cx **readers; /* all of them, for close */
    size_t nreaders;
    pthread_mutex_t smu; /* guards seen */
    struct seen_entry {
        int64_t id, last_seen, last_list_at;
    } * seen; /* SEEN_SLOTS, direct-mapped by client id: see sq_client_seen */
} sq;

#define SEEN_SLOTS 4096 /* power of two */

#define SQ(st) ((sq *)(st)->impl)
#define STORE_SQLITE_READERS_MAX 16

static kb_err db_err(cx *b, int rc, const char *what)
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
static kb_err prep(cx *b, const char *sql, sqlite3_stmt **s)
{
    size_t h = (size_t)(((uintptr_t)sql >> 3) * (uintptr_t)0x9E3779B97F4A7C15u);
    int rc;
    *s = NULL;
    for (size_t i = 0; i < STMT_SLOTS; i++) {
        size_t k = (h + i) & (STMT_SLOTS - 1);
        if (b->stmts[k].sql == sql) {
            *s = b->stmts[k].s;
            return KB_OK;
        }
        if (b->stmts[k].sql != NULL)
            continue;
        /* Keep at least half the table empty so probes stay short. */
        KB_ENSURE(b->nstmts < STMT_SLOTS / 2, KB_ERR_INTERNAL);
        rc = sqlite3_prepare_v3(b->db, sql, -1, SQLITE_PREPARE_PERSISTENT, s, NULL);
        if (rc != SQLITE_OK) {
            *s = NULL;
            return db_err(b, rc, "prepare");
        }
        b->stmts[k].sql = sql;
        b->stmts[k].s = *s;
        b->nstmts++;
        return KB_OK;
    }
    return KB_ERR_INTERNAL;
}

/* Reset a cached statement for its next use: ends its read, drops its bound values. */
static void done(sqlite3_stmt *s)
{
    if (s != NULL) {
        (void)sqlite3_reset(s);
        (void)sqlite3_clear_bindings(s);
    }
}

static kb_err exec(cx *b, const char *sql)
{
    int rc = sqlite3_exec(b->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? KB_OK : db_err(b, rc, "exec");
}

/* Step a statement that returns no rows (or whose rows we ignore). */
static kb_err step_done(cx *b, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        return KB_OK;
    return db_err(b, rc, what);
}

/* SQLITE_ROW -> KB_OK, SQLITE_DONE -> KB_ERR_NOT_FOUND. */
static kb_err step_row(cx *b, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        return KB_OK;
    if (rc == SQLITE_DONE)
        return KB_ERR_NOT_FOUND;
    return db_err(b, rc, what);
}

static kb_err bind_text(sqlite3_stmt *s, int i, const char *v)
{
    return sqlite3_bind_text(s, i, v ? v : "", -1, SQLITE_TRANSIENT) == SQLITE_OK ? KB_OK
                                                                                  : KB_ERR_DB;
}

static kb_err bind_blob(sqlite3_stmt *s, int i, const void *p, size_t n)
{
    if (n > INT32_MAX)
        return KB_ERR_TOO_LARGE;
    return sqlite3_bind_blob(s, i, n ? p : "", (int)n, SQLITE_TRANSIENT) == SQLITE_OK ? KB_OK
                                                                                      : KB_ERR_DB;
}

static kb_err bind_i64(sqlite3_stmt *s, int i, int64_t v)
{
    return sqlite3_bind_int64(s, i, v) == SQLITE_OK ? KB_OK : KB_ERR_DB;
}

static kb_err col_str(sqlite3_stmt *s, int i, char **out)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    *out = strdup(t ? (const char *)t : "");
    return *out ? KB_OK : KB_ERR_NOMEM;
}

static kb_err col_blob(sqlite3_stmt *s, int i, uint8_t **out, size_t *len)
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
static bool col_bool(sqlite3_stmt *s, int i, bool *strict)
{
    int64_t v = sqlite3_column_int64(s, i);
    if (sqlite3_column_type(s, i) != SQLITE_INTEGER || (v != 0 && v != 1))
        *strict = false;
    return v != 0;
}

static bool col_mac_ok(sqlite3_stmt *s, int i, const uint8_t want[ROWMAC_LEN])
{
    const void *p = sqlite3_column_blob(s, i);
    int n = sqlite3_column_bytes(s, i);
    return rowmac_equal(want, p, n > 0 ? (size_t)n : 0);
}

/* Run one cached, parameterless statement (BEGIN, COMMIT). */
static kb_err run(cx *b, const char *sql)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD(prep(b, sql, &s));
    rc = step_done(b, s, sql);
    done(s);
    return rc;
}

static kb_err state_advance_locked(cx *b, int64_t *counter);
static void state_commit_external(store *st, int64_t counter);
static kb_err audit_insert_locked(cx *b, const audit_event *ev, audit_mac_fn macfn, void *ctx,
                                  int64_t *seq_out);

static kb_err tx_begin(cx *b, bool write)
{
    if (b->writer) {
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
static kb_err tx_end(cx *b, kb_err rc, store_audit *au)
{
    int64_t counter = 0, seq = 0;
    bool dirty;
    if (rc == KB_OK && au != NULL)
        rc = audit_insert_locked(b, &au->ev, au->mac, au->mac_ctx, &seq);
    dirty = b->writer && b->dirty;
    if (rc == KB_OK && dirty)
        rc = state_advance_locked(b, &counter);
    if (rc == KB_OK)
        rc = run(b, "COMMIT");
    if (rc != KB_OK && !sqlite3_get_autocommit(b->db))
        (void)sqlite3_exec(b->db, "ROLLBACK", NULL, NULL, NULL);
    if (b->writer) {
        memset(b->delta, 0, sizeof(b->delta));
        b->dirty = false;
    }
    if (rc == KB_OK && au != NULL) {
        au->seq = seq;
        au->written = true;
    }
    if (rc == KB_OK && dirty)
        state_commit_external(b->st, counter);
    return rc;
}

static kb_err grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    void *p;
    size_t nc;
    if (n < *cap)
        return KB_OK;
    nc = *cap ? *cap * 2 : 16;
    KB_ENSURE(nc < SIZE_MAX / elem, KB_ERR_NOMEM);
    p = realloc(*arr, nc * elem);
    KB_ENSURE(p != NULL, KB_ERR_NOMEM);
    memset((char *)p + *cap * elem, 0, (nc - *cap) * elem);
    *arr = p;
    *cap = nc;
    return KB_OK;
}

/* One row of a listing: decode the row at s into item (a zeroed slot of the array being built);
 * set *keep = false to leave it out (the slot must then be left all-zero, e.g. a row failing its
 * MAC, logged, or one a filter drops). prev is the last kept item (NULL for the first). Any error
 * fails the listing; a half-filled slot is freed with the rest. */
typedef kb_err (*row_fn)(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev,
                         bool *keep);
typedef void (*items_free_fn)(void *arr, size_t n);

/* Step s to its end, collecting the kept rows into a malloc'd array of elem-size items (*out
 * NULL when there are none). The one loop behind every multi-row read. */
static kb_err collect(cx *b, sqlite3_stmt *s, size_t elem, row_fn row, void *ctx,
                      items_free_fn free_items, const char *what, void **out, size_t *n)
{
    char *arr = NULL;
    size_t cnt = 0, cap = 0;
    kb_err rc = KB_OK;
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        bool keep = true;
        KB_GUARD_OUT(rc, grow((void **)&arr, &cap, cnt, elem));
        KB_GUARD_OUT(
            rc, row(b, s, ctx, arr + cnt * elem, cnt > 0 ? arr + (cnt - 1) * elem : NULL, &keep));
        if (keep)
            cnt++;
    }
    if (r != SQLITE_DONE)
        rc = db_err(b, r, what);
out:
    if (rc != KB_OK) {
        /* Slots past cnt are all-zero except a half-filled one: free it too. */
        free_items(arr, cnt < cap ? cnt + 1 : cnt);
        return rc;
    }
    *out = arr;
    *n = cnt;
    return KB_OK;
}

/* Take the writer (waits for the other writers of this process). */
static cx *wr_get(sq *q)
{
    pthread_mutex_lock(&q->wmu);
    return q->writer;
}

/* Take an idle reader, waiting for one if all are busy. */
static cx *rd_get(sq *q)
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
static void cx_put(sq *q, cx *b)
{
    sqlite3_stmt *s = NULL;
    while ((s = sqlite3_next_stmt(b->db, s)) != NULL) {
        if (sqlite3_stmt_busy(s))
            (void)sqlite3_reset(s);
    }
    if (!sqlite3_get_autocommit(b->db))
        (void)sqlite3_exec(b->db, "ROLLBACK", NULL, NULL, NULL);
    if (b->writer) {
        pthread_mutex_unlock(&q->wmu);
        return;
    }
    pthread_mutex_lock(&q->pmu);
    b->next_idle = q->idle;
    q->idle = b;
    pthread_cond_signal(&q->pcv);
    pthread_mutex_unlock(&q->pmu);
}

#define WR(st) wr_get(SQ(st))
#define RD(st) rd_get(SQ(st))
#define PUT(st, b) cx_put(SQ(st), (b))

/* ---- row loaders (column lists and their readers kept side by side) ---- */

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
#define CLIENT_COLS                                                                                \
    "c.id, c.spiffe_id, c.enabled, c.admin, c.cloud, c.app_name, c.description, c.last_seen, "     \
    "c.last_list_at, c.created_by, c.created_at, c.mac"
#define CLIENT_NCOLS 12
#define GROUP_COLS "g.id, g.name, g.description, g.created_by, g.created_at"
#define GROUP_NCOLS 5

/* Load a secret row at column c0 and check its MAC: KB_ERR_INTEGRITY (logged) on mismatch. */
static kb_err load_secret(cx *b, sqlite3_stmt *s, int c0, store_secret *out)
{
    uint8_t want[ROWMAC_LEN];
    kb_err rc = KB_OK;
    bool strict = true;
    memset(out, 0, sizeof(*out));
    out->id = sqlite3_column_int64(s, c0 + 0);
    out->owner_group_id = sqlite3_column_int64(s, c0 + 3);
    out->cloud_sync = col_bool(s, c0 + 4, &strict);
    out->deleted_at = sqlite3_column_int64(s, c0 + 5);
    out->latest_version = sqlite3_column_int64(s, c0 + 6);
    out->created_at = sqlite3_column_int64(s, c0 + 8);
    out->updated_at = sqlite3_column_int64(s, c0 + 10);
    KB_GUARD_OUT(rc, col_str(s, c0 + 1, &out->name));
    KB_GUARD_OUT(rc, col_str(s, c0 + 2, &out->description));
    KB_GUARD_OUT(rc, col_str(s, c0 + 7, &out->created_by));
    KB_GUARD_OUT(rc, col_str(s, c0 + 9, &out->updated_by));
    KB_GUARD_OUT(rc, rowmac_secret(b->mac, out->id, out->name, out->owner_group_id, out->cloud_sync,
                                   out->deleted_at, want));
    if (!strict || !col_mac_ok(s, c0 + 11, want)) {
        store_log_integrity("secrets", out->id, 0);
        rc = KB_ERR_INTEGRITY;
    }
out:
    if (rc != KB_OK)
        store_secret_clear(out);
    return rc;
}

/* Load a version row at c0 and check its MAC: KB_ERR_INTEGRITY (logged) on mismatch. */
static kb_err load_version(cx *b, sqlite3_stmt *s, int c0, store_version *out)
{
    uint8_t want[ROWMAC_LEN];
    kb_err rc = KB_OK;
    const void *ck = sqlite3_column_blob(s, c0 + 2);
    memset(out, 0, sizeof(*out));
    out->secret_id = sqlite3_column_int64(s, c0 + 0);
    out->version = sqlite3_column_int64(s, c0 + 1);
    KB_ENSURE_OUT(rc, ck != NULL && sqlite3_column_bytes(s, c0 + 2) == STORE_CHECKSUM_LEN,
                  KB_ERR_INTEGRITY);
    memcpy(out->checksum, ck, STORE_CHECKSUM_LEN);
    out->content_len = sqlite3_column_int64(s, c0 + 3);
    KB_GUARD_OUT(rc, col_str(s, c0 + 4, &out->metadata));
    out->expires_at = sqlite3_column_int64(s, c0 + 5);
    KB_GUARD_OUT(rc, col_str(s, c0 + 6, &out->created_by));
    out->created_at = sqlite3_column_int64(s, c0 + 7);
    KB_GUARD_OUT(rc, rowmac_version(b->mac, out->secret_id, out->version, out->checksum,
                                    sizeof(out->checksum), out->content_len, out->metadata,
                                    out->expires_at, out->created_by, out->created_at, want));
    if (sqlite3_column_type(s, c0 + 3) != SQLITE_INTEGER ||
        sqlite3_column_type(s, c0 + 5) != SQLITE_INTEGER || !col_mac_ok(s, c0 + 8, want))
        KB_ENSURE_OUT(rc, false, KB_ERR_INTEGRITY);
out:
    if (rc == KB_ERR_INTEGRITY)
        store_log_integrity("versions", out->secret_id, out->version);
    if (rc != KB_OK)
        store_version_clear(out);
    return rc;
}

/* Check the latest_version of a secret row loaded at c0 against its own MAC (latest_mac):
 * KB_ERR_INTEGRITY (logged) on mismatch. */
static kb_err latest_check(cx *b, sqlite3_stmt *s, int c0, const store_secret *sec)
{
    uint8_t want[ROWMAC_LEN];
    KB_GUARD(rowmac_latest(b->mac, sec->id, sec->latest_version, want));
    if (sqlite3_column_type(s, c0 + 6) != SQLITE_INTEGER || !col_mac_ok(s, c0 + 12, want)) {
        store_log_integrity("secrets.latest_version", sec->id, sec->latest_version);
        return KB_ERR_INTEGRITY;
    }
    return KB_OK;
}

/* The version part of a (verified secret, latest version) row: latest_version and the version
 * row both checked; KB_ERR_INTEGRITY (logged) if either fails. */
static kb_err load_latest(cx *b, sqlite3_stmt *s, store_record *rec)
{
    KB_GUARD(latest_check(b, s, 0, &rec->secret));
    return load_version(b, s, SECRET_NCOLS, &rec->version);
}

static kb_err load_env(sqlite3_stmt *s, int c0, store_envelope *out)
{
    kb_err rc = KB_OK;
    memset(out, 0, sizeof(*out));
    KB_GUARD_OUT(rc, col_blob(s, c0 + 0, &out->wrapped_key, &out->wrapped_key_len));
    KB_GUARD_OUT(rc, col_str(s, c0 + 1, &out->key_id));
    KB_GUARD_OUT(rc, col_blob(s, c0 + 2, &out->sealed, &out->sealed_len));
out:
    if (rc != KB_OK)
        store_envelope_clear(out);
    return rc;
}

/* Load a client row at c0 as stored and check its MAC. The effective flags (cloud derived from the
 * prefixes, admin dropped for a cloud client) are store.c's policy: store_client_effective. */
static kb_err load_client(cx *b, sqlite3_stmt *s, int c0, store_client *out)
{
    uint8_t want[ROWMAC_LEN];
    kb_err rc = KB_OK;
    bool strict = true;
    memset(out, 0, sizeof(*out));
    out->id = sqlite3_column_int64(s, c0 + 0);
    out->enabled = col_bool(s, c0 + 2, &strict);
    out->admin = col_bool(s, c0 + 3, &strict);
    out->cloud = col_bool(s, c0 + 4, &strict);
    out->last_seen = sqlite3_column_int64(s, c0 + 7);
    out->last_list_at = sqlite3_column_int64(s, c0 + 8);
    out->created_at = sqlite3_column_int64(s, c0 + 10);
    KB_GUARD_OUT(rc, col_str(s, c0 + 1, &out->spiffe_id));
    KB_GUARD_OUT(rc, col_str(s, c0 + 5, &out->app_name));
    KB_GUARD_OUT(rc, col_str(s, c0 + 6, &out->description));
    KB_GUARD_OUT(rc, col_str(s, c0 + 9, &out->created_by));
    KB_GUARD_OUT(rc, rowmac_client(b->mac, out->id, out->spiffe_id, out->enabled, out->admin,
                                   out->cloud, out->app_name, want));
    if (!strict || !col_mac_ok(s, c0 + 11, want)) {
        store_log_integrity("clients", out->id, 0);
        KB_ENSURE_OUT(rc, false, KB_ERR_INTEGRITY);
    }
out:
    if (rc != KB_OK)
        store_client_clear(out);
    return rc;
}

static kb_err load_group(sqlite3_stmt *s, int c0, store_group *out)
{
    kb_err rc = KB_OK;
    memset(out, 0, sizeof(*out));
    out->id = sqlite3_column_int64(s, c0 + 0);
    KB_GUARD_OUT(rc, col_str(s, c0 + 1, &out->name));
    KB_GUARD_OUT(rc, col_str(s, c0 + 2, &out->description));
    KB_GUARD_OUT(rc, col_str(s, c0 + 3, &out->created_by));
    out->created_at = sqlite3_column_int64(s, c0 + 4);
out:
    if (rc != KB_OK)
        store_group_clear(out);
    return rc;
}

/* Fetch one verified secret by name or id (lock held). */
static kb_err secret_fetch(cx *b, const char *name, int64_t id, store_secret *out)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    if (name != NULL) {
        KB_GUARD(prep(b, "SELECT " SECRET_COLS " FROM secrets s WHERE s.name = ?1", &s));
        rc = bind_text(s, 1, name);
    } else {
        KB_GUARD(prep(b, "SELECT " SECRET_COLS " FROM secrets s WHERE s.id = ?1", &s));
        rc = bind_i64(s, 1, id);
    }
    if (rc == KB_OK)
        rc = step_row(b, s, "secret_fetch");
    if (rc == KB_OK)
        rc = load_secret(b, s, 0, out);
    done(s);
    return rc;
}

static kb_err client_fetch(cx *b, const char *spiffe_id, int64_t id, store_client *out)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    if (spiffe_id != NULL) {
        KB_GUARD(prep(b, "SELECT " CLIENT_COLS " FROM clients c WHERE c.spiffe_id = ?1", &s));
        rc = bind_text(s, 1, spiffe_id);
    } else {
        KB_GUARD(prep(b, "SELECT " CLIENT_COLS " FROM clients c WHERE c.id = ?1", &s));
        rc = bind_i64(s, 1, id);
    }
    if (rc == KB_OK)
        rc = step_row(b, s, "client_fetch");
    if (rc == KB_OK)
        rc = load_client(b, s, 0, out);
    done(s);
    return rc;
}

static kb_err exists(cx *b, const char *sql, int64_t id)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD(prep(b, sql, &s));
    rc = bind_i64(s, 1, id);
    if (rc == KB_OK)
        rc = step_row(b, s, "exists");
    done(s);
    return rc;
}

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
        rowmac_state_elem(b->mac, (const char *)t, mac, n > 0 ? (size_t)n : 0, e) != KB_OK) {
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
        return db_err(b, rc, "state_function");
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
    KB_GUARD(prep(b, "SELECT counter, digest, mac FROM store_state WHERE id = 1", &s));
    rc = step_row(b, s, "state_load");
    if (rc == KB_OK) {
        *counter = sqlite3_column_int64(s, 0);
        if (sqlite3_column_type(s, 0) != SQLITE_INTEGER || *counter < 1 ||
            sqlite3_column_bytes(s, 1) != ROWMAC_LEN) {
            rc = KB_ERR_INTEGRITY;
        } else {
            memcpy(digest, sqlite3_column_blob(s, 1), ROWMAC_LEN);
            rc = rowmac_state(b->mac, *counter, digest, want);
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
    KB_GUARD(rowmac_state(b->mac, counter, digest, mac));
    KB_GUARD(prep(b,
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
        KB_GUARD(prep(b, state_scan_sql[t], &s));
        while ((r = sqlite3_step(s)) == SQLITE_ROW) {
            uint8_t e[ROWMAC_LEN];
            const void *mac = sqlite3_column_blob(s, 0);
            int n = sqlite3_column_bytes(s, 0);
            rc = rowmac_state_elem(b->mac, state_tables[t], mac, n > 0 ? (size_t)n : 0, e);
            if (rc != KB_OK)
                break;
            rowmac_digest_add(out, e, false);
        }
        if (rc == KB_OK && r != SQLITE_DONE)
            rc = db_err(b, r, "state_digest");
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
    int64_t c = 0, seen = atomic_load(&b->st->state_seen);
    KB_GUARD(state_load(b, &c, digest));
    if (c < seen) {
        log_counters("store_rollback_detected",
                     "the database's state counter went back while running (file replaced?)", c,
                     "seen_counter", seen);
        store_fail(b->st, "state counter went back");
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
static kb_err state_check(cx *b)
{
    store *st = b->st;
    int64_t floor = atomic_load(&st->state_seen), c;
    uint8_t digest[ROWMAC_LEN];
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD(prep(b, "SELECT counter FROM store_state WHERE id = 1", &s));
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

    KB_GUARD(tx_begin(b, false));
    rc = state_load(b, &c, digest);
    if (rc == KB_OK)
        rc = state_digest_full(b, full);
    rc = tx_end(b, rc, NULL);
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
    KB_GUARD(prep(b,
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
    KB_GUARD(prep(b, "SELECT min(version), max(version), count(*) FROM schema_version", &s));
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

/* Schema step 3: MAC every existing version row and latest_version as they stand (trust on
 * upgrade: the rows were as protected as before until now; from here on an edit is refused). Runs
 * inside migrate()'s transaction. */
static kb_err migrate_mac_versions(cx *b)
{
    sqlite3_stmt *s = NULL, *u = NULL;
    uint8_t mac[ROWMAC_LEN];
    kb_err rc = KB_OK;
    int r;

    KB_GUARD_OUT(rc, prep(b,
                          "SELECT secret_id, version, checksum, content_len, metadata, "
                          "expires_at, created_by, created_at FROM versions",
                          &s));
    KB_GUARD_OUT(rc,
                 prep(b, "UPDATE versions SET mac = ?1 WHERE secret_id = ?2 AND version = ?3", &u));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        const void *ck = sqlite3_column_blob(s, 2);
        int ckn = sqlite3_column_bytes(s, 2);
        KB_GUARD_OUT(
            rc, rowmac_version(b->mac, sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1), ck,
                               ck ? (size_t)ckn : 0, sqlite3_column_int64(s, 3),
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
        KB_ENSURE_OUT(rc, false, db_err(b, r, "migrate_versions"));
    done(s);
    done(u);
    s = u = NULL;
    KB_GUARD_OUT(rc, prep(b, "SELECT id, latest_version FROM secrets", &s));
    KB_GUARD_OUT(rc, prep(b, "UPDATE secrets SET latest_mac = ?1 WHERE id = ?2", &u));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        KB_GUARD_OUT(
            rc, rowmac_latest(b->mac, sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1), mac));
        KB_GUARD_OUT(rc, bind_blob(u, 1, mac, sizeof(mac)));
        KB_GUARD_OUT(rc, bind_i64(u, 2, sqlite3_column_int64(s, 0)));
        KB_GUARD_OUT(rc, step_done(b, u, "migrate_latest_mac"));
        sqlite3_reset(u);
    }
    if (r != SQLITE_DONE)
        KB_ENSURE_OUT(rc, false, db_err(b, r, "migrate_latest"));
out:
    done(s);
    done(u);
    return rc;
}

static kb_err migrate(cx *b)
{
    uint8_t digest[ROWMAC_LEN], full[ROWMAC_LEN];
    int64_t counter = 0;
    int cur = 0;
    char have[16], want[16];
    kb_err rc;

    KB_GUARD(tx_begin(b, true));
    KB_GUARD_OUT(rc, read_schema_version(b, &cur));
    snprintf(have, sizeof(have), "%d", cur);
    snprintf(want, sizeof(want), "%d", SCHEMA_VERSION);
    if (cur > SCHEMA_VERSION) {
        kb_log(KB_LOG_ERROR, "store_schema_too_new", "msg",
               "the database was written by a newer keybridged: upgrade this binary",
               "db_schema_version", have, "supported_schema_version", want, NULL);
        KB_ENSURE_OUT(rc, false, KB_ERR_SCHEMA);
    }
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
    for (int v = cur + 1; v <= SCHEMA_VERSION; v++) {
        KB_GUARD_OUT(rc, exec(b, migrations[v - 1]));
        if (v == MIGRATION_VERSION_MACS)
            KB_GUARD_OUT(rc, migrate_mac_versions(b));
    }
    if (cur < SCHEMA_VERSION) {
        sqlite3_stmt *s = NULL;
        KB_GUARD_OUT(rc, prep(b, "UPDATE schema_version SET version = ?1", &s));
        rc = bind_i64(s, 1, SCHEMA_VERSION);
        if (rc == KB_OK)
            rc = step_done(b, s, "schema_version_set");
        done(s);
        KB_GUARD_OUT(rc, rc);
        /* The state row: first made from the rows as they are (a new database: counter 1,
         * empty digest; an older one: its current rows, each still checked by its row MAC on
         * every read), or moved on by one over rows a migration step rewrote. The start-up
         * check then compares the counter with the token's. */
        KB_GUARD_OUT(rc, state_digest_full(b, full));
        KB_GUARD_OUT(rc, state_store(b, cur >= STATE_SCHEMA_STEP ? counter + 1 : 1, full));
        kb_log(KB_LOG_INFO, "store_schema_migrated", "from", have, "to", want, NULL);
    }
out:
    return tx_end(b, rc, NULL);
}

static void cx_close(cx *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < STMT_SLOTS; i++)
        sqlite3_finalize(b->stmts[i].s);
    sqlite3_close(b->db);
    rowmac_ctx_free(b->mac);
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
    sqlite3_busy_timeout(db, b->st->cfg.busy_timeout_ms); /* back to the configured wait */
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
    b->st = st;
    b->writer = writer;
    KB_GUARD_OUT(e, rowmac_ctx_new(st->cfg.row_mac_key, &b->mac));
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
        KB_GUARD_OUT(e, prep(b, "PRAGMA journal_mode = WAL", &s));
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
    free(q->seen);
    pthread_mutex_destroy(&q->smu);
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
    if (pthread_mutex_init(&q->smu, NULL) != 0) {
        pthread_cond_destroy(&q->pcv);
        pthread_mutex_destroy(&q->pmu);
        pthread_mutex_destroy(&q->wmu);
        free(q);
        return KB_ERR_INTERNAL;
    }
    q->seen = calloc(SEEN_SLOTS, sizeof(*q->seen));
    KB_ENSURE_OUT(e, q->seen != NULL, KB_ERR_NOMEM);
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

static kb_err sq_schema_version(store *st, int *out)
{
    cx *b;
    kb_err rc;
    b = RD(st);
    rc = read_schema_version(b, out);
    PUT(st, b);
    return rc;
}

/* ---- secrets and versions ---- */

/* Insert version `ver` of secret `id` (lock and write transaction held). */
static kb_err insert_version(cx *b, int64_t id, int64_t ver, const store_version_new *v,
                             const char *metadata, store_seal_fn seal, void *seal_ctx,
                             const char *actor, int64_t now)
{
    store_envelope env = {0};
    uint8_t checksum[STORE_CHECKSUM_LEN] = {0};
    uint8_t mac[ROWMAC_LEN];
    sqlite3_stmt *s = NULL;
    kb_err rc;

    KB_GUARD_OUT(rc, seal(seal_ctx, id, ver, &env, checksum));
    KB_ENSURE_OUT(rc, env.wrapped_key != NULL && env.wrapped_key_len > 0 && env.sealed != NULL,
                  KB_ERR_INVALID);
    KB_ENSURE_OUT(rc, env.wrapped_key_len <= STORE_BLOB_MAX && env.sealed_len <= STORE_BLOB_MAX,
                  KB_ERR_TOO_LARGE);
    KB_ENSURE_OUT(rc, env.key_id != NULL && env.key_id[0] != '\0', KB_ERR_INVALID);
    KB_ENSURE_OUT(rc, strnlen(env.key_id, STORE_KEY_ID_MAX + 1) <= STORE_KEY_ID_MAX,
                  KB_ERR_TOO_LARGE);
    KB_GUARD_OUT(rc,
                 rowmac_version(b->mac, id, ver, checksum, sizeof(checksum),
                                (int64_t)v->content_len, metadata, v->expires_at, actor, now, mac));
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO versions(secret_id, version, wrapped_key, key_id, sealed, "
                          "checksum, content_len, metadata, expires_at, created_by, created_at, "
                          "mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, ver));
    KB_GUARD_OUT(rc, bind_blob(s, 3, env.wrapped_key, env.wrapped_key_len));
    KB_GUARD_OUT(rc, bind_text(s, 4, env.key_id));
    KB_GUARD_OUT(rc, bind_blob(s, 5, env.sealed, env.sealed_len));
    KB_GUARD_OUT(rc, bind_blob(s, 6, checksum, sizeof(checksum)));
    KB_GUARD_OUT(rc, bind_i64(s, 7, (int64_t)v->content_len));
    KB_GUARD_OUT(rc, bind_text(s, 8, metadata));
    KB_GUARD_OUT(rc, bind_i64(s, 9, v->expires_at));
    KB_GUARD_OUT(rc, bind_text(s, 10, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 11, now));
    KB_GUARD_OUT(rc, bind_blob(s, 12, mac, sizeof(mac)));
    KB_GUARD_OUT(rc, step_done(b, s, "version_insert"));
    done(s);
    s = NULL;
    KB_GUARD_OUT(rc, rowmac_latest(b->mac, id, ver, mac));
    KB_GUARD_OUT(rc, prep(b,
                          "UPDATE secrets SET latest_version = ?1, updated_by = ?2, "
                          "updated_at = ?3, latest_mac = ?5 WHERE id = ?4",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, ver));
    KB_GUARD_OUT(rc, bind_text(s, 2, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 3, now));
    KB_GUARD_OUT(rc, bind_i64(s, 4, id));
    KB_GUARD_OUT(rc, bind_blob(s, 5, mac, sizeof(mac)));
    KB_GUARD_OUT(rc, step_done(b, s, "secret_latest"));
out:
    done(s);
    store_envelope_clear(&env);
    kb_wipe(checksum, sizeof(checksum));
    return rc;
}

/* Rewrite the MAC'd fields of a secret with a fresh MAC (lock and transaction held). */
static kb_err secret_write_flags(cx *b, const store_secret *sec, const char *actor, int64_t now)
{
    uint8_t mac[ROWMAC_LEN];
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD(rowmac_secret(b->mac, sec->id, sec->name, sec->owner_group_id, sec->cloud_sync,
                           sec->deleted_at, mac));
    KB_GUARD(prep(b,
                  "UPDATE secrets SET description = ?1, owner_group_id = ?2, cloud_sync = ?3, "
                  "deleted_at = ?4, updated_by = ?5, updated_at = ?6, mac = ?7 WHERE id = ?8",
                  &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, sec->description));
    if (sec->owner_group_id > 0)
        KB_GUARD_OUT(rc, bind_i64(s, 2, sec->owner_group_id));
    else
        KB_ENSURE_OUT(rc, sqlite3_bind_null(s, 2) == SQLITE_OK, KB_ERR_DB);
    KB_GUARD_OUT(rc, bind_i64(s, 3, sec->cloud_sync ? 1 : 0));
    KB_GUARD_OUT(rc, bind_i64(s, 4, sec->deleted_at));
    KB_GUARD_OUT(rc, bind_text(s, 5, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 6, now));
    KB_GUARD_OUT(rc, bind_blob(s, 7, mac, sizeof(mac)));
    KB_GUARD_OUT(rc, bind_i64(s, 8, sec->id));
    KB_GUARD_OUT(rc, step_done(b, s, "secret_update"));
out:
    done(s);
    return rc;
}

static kb_err sq_secret_create(store *st, const store_secret_new *sn, const store_version_new *v,
                               const char *metadata, store_seal_fn seal, void *seal_ctx,
                               const char *actor, int64_t now, int64_t *id_out, store_audit *au)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    store_secret sec = {0};
    kb_err rc;

    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    if (sn->owner_group_id > 0)
        KB_GUARD_OUT(rc, exists(b, "SELECT 1 FROM groups WHERE id = ?1", sn->owner_group_id));
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO secrets(name, description, cloud_sync, created_by, "
                          "created_at, updated_by, updated_at, mac) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?5, x'')",
                          &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, sn->name));
    KB_GUARD_OUT(rc, bind_text(s, 2, sn->description));
    KB_GUARD_OUT(rc, bind_i64(s, 3, sn->cloud_sync ? 1 : 0));
    KB_GUARD_OUT(rc, bind_text(s, 4, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 5, now));
    KB_GUARD_OUT(rc, step_done(b, s, "secret_insert"));
    /* The MAC binds the id, which exists only now: write it in the same transaction. */
    sec.id = sqlite3_last_insert_rowid(b->db);
    sec.name = (char *)sn->name;
    sec.description = (char *)(sn->description ? sn->description : "");
    sec.owner_group_id = sn->owner_group_id;
    sec.cloud_sync = sn->cloud_sync;
    KB_GUARD_OUT(rc, secret_write_flags(b, &sec, actor, now));
    KB_GUARD_OUT(rc, insert_version(b, sec.id, 1, v, metadata, seal, seal_ctx, actor, now));
    *id_out = sec.id;
    if (au != NULL)
        au->ev.version = 1;
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err max_content_len(cx *b, int64_t secret_id, int64_t *out)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD(
        prep(b, "SELECT coalesce(max(content_len), 0) FROM versions WHERE secret_id = ?1", &s));
    rc = bind_i64(s, 1, secret_id);
    if (rc == KB_OK)
        rc = step_row(b, s, "max_content_len");
    if (rc == KB_OK)
        *out = sqlite3_column_int64(s, 0);
    done(s);
    return rc;
}

/* The content length of the secret's latest version (0 if it has none). */
static kb_err latest_content_len(cx *b, int64_t secret_id, int64_t version, int64_t *out)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD(prep(b,
                  "SELECT coalesce(max(content_len), 0) FROM versions WHERE secret_id = ?1 "
                  "AND version = ?2",
                  &s));
    rc = bind_i64(s, 1, secret_id);
    if (rc == KB_OK)
        rc = bind_i64(s, 2, version);
    if (rc == KB_OK)
        rc = step_row(b, s, "latest_content_len");
    if (rc == KB_OK)
        *out = sqlite3_column_int64(s, 0);
    done(s);
    return rc;
}

static kb_err sq_version_add(store *st, int64_t secret_id, const store_version_new *v,
                             const char *metadata, store_seal_fn seal, void *seal_ctx,
                             const char *actor, int64_t now, int64_t *version_out, store_audit *au)
{
    cx *b;
    store_secret sec = {0};
    kb_err rc;

    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, secret_fetch(b, NULL, secret_id, &sec));
    KB_ENSURE_OUT(rc, sec.deleted_at == 0, KB_ERR_CONFLICT);
    KB_GUARD_OUT(rc, model_content_len_check(v->content_len, st->cfg.content_max, sec.cloud_sync));
    KB_ENSURE_OUT(rc, sec.latest_version < INT64_MAX, KB_ERR_CONFLICT);
    KB_GUARD_OUT(rc, insert_version(b, sec.id, sec.latest_version + 1, v, metadata, seal, seal_ctx,
                                    actor, now));
    *version_out = sec.latest_version + 1;
    if (au != NULL)
        au->ev.version = sec.latest_version + 1;
out:
    store_secret_clear(&sec);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err sq_secret_update(store *st, int64_t secret_id, const store_secret_patch *p,
                               const char *actor, int64_t now, store_audit *au)
{
    cx *b;
    store_secret sec = {0};
    char *old_desc = NULL;
    kb_err rc;

    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, secret_fetch(b, NULL, secret_id, &sec));
    if (p->cloud_sync == 1 && !sec.cloud_sync) {
        int64_t maxlen = 0;
        KB_GUARD_OUT(rc, max_content_len(b, secret_id, &maxlen));
        KB_ENSURE_OUT(rc, maxlen <= MODEL_CLOUD_CONTENT_MAX, KB_ERR_TOO_LARGE);
        /* What the syncer would write is the latest version: it cannot be empty. */
        KB_GUARD_OUT(rc, latest_content_len(b, secret_id, sec.latest_version, &maxlen));
        KB_ENSURE_OUT(rc, maxlen > 0, KB_ERR_INVALID);
    }
    if (p->cloud_sync >= 0)
        sec.cloud_sync = p->cloud_sync == 1;
    if (p->owner_group_id > 0)
        KB_GUARD_OUT(rc, exists(b, "SELECT 1 FROM groups WHERE id = ?1", p->owner_group_id));
    if (p->owner_group_id >= 0)
        sec.owner_group_id = p->owner_group_id;
    if (p->description != NULL) {
        old_desc = sec.description;
        sec.description = (char *)p->description;
    }
    KB_GUARD_OUT(rc, secret_write_flags(b, &sec, actor, now));
out:
    if (old_desc != NULL) {
        sec.description = old_desc;
    }
    store_secret_clear(&sec);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err sq_secret_set_deleted(store *st, int64_t secret_id, bool deleted, const char *actor,
                                    int64_t now, store_audit *au)
{
    cx *b;
    store_secret sec = {0};
    kb_err rc;

    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, secret_fetch(b, NULL, secret_id, &sec));
    KB_ENSURE_OUT(rc, (sec.deleted_at != 0) != deleted, KB_ERR_CONFLICT);
    sec.deleted_at = deleted ? now : 0;
    KB_GUARD_OUT(rc, secret_write_flags(b, &sec, actor, now));
out:
    store_secret_clear(&sec);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err sq_secret_purge(store *st, int64_t secret_id, store_audit *au)
{
    cx *b;
    store_secret sec = {0};
    sqlite3_stmt *s = NULL;
    kb_err rc;

    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, secret_fetch(b, NULL, secret_id, &sec));
    KB_ENSURE_OUT(rc, sec.deleted_at != 0, KB_ERR_CONFLICT);
    /* ON DELETE CASCADE removes versions (envelopes), grants and the fetch log; secure_delete
     * overwrites the freed pages. */
    KB_GUARD_OUT(rc, prep(b, "DELETE FROM secrets WHERE id = ?1", &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, secret_id));
    KB_GUARD_OUT(rc, step_done(b, s, "secret_purge"));
out:
    done(s);
    store_secret_clear(&sec);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err sq_secret_get(store *st, const char *name, int64_t id, bool include_deleted,
                            store_secret *out)
{
    cx *b;
    kb_err rc;
    b = RD(st);
    rc = secret_fetch(b, name, id, out);
    PUT(st, b);
    if (rc == KB_OK && !include_deleted && out->deleted_at != 0) {
        store_secret_clear(out);
        rc = KB_ERR_NOT_FOUND;
    }
    return rc;
}

/* Collect (secret, version[, envelope]) rows; rows failing their MAC are dropped (logged), and
 * with live_only, deleted secrets are dropped after verification (the SQL filter is only a
 * hint on unverified columns). */
typedef struct {
    bool live_only, cloud_only;
} records_filter;

static void records_free(void *arr, size_t n)
{
    store_records_free(arr, n);
}

/* A secret row and its latest version; rows failing a MAC (logged) or the filter, and repeats
 * of the previous secret, are left out. */
static kb_err record_row(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev,
                         bool *keep)
{
    const records_filter *f = ctx;
    const store_record *last = prev;
    store_record *rec = item;
    kb_err e = load_secret(b, s, 0, &rec->secret);
    *keep = false;
    if (e == KB_ERR_INTEGRITY)
        return KB_OK;
    KB_GUARD(e);
    if ((f->live_only && rec->secret.deleted_at != 0) ||
        (f->cloud_only && !rec->secret.cloud_sync) ||
        (last != NULL && last->secret.id == rec->secret.id)) {
        store_record_clear(rec);
        return KB_OK;
    }
    e = load_latest(b, s, rec);
    if (e != KB_OK) {
        store_record_clear(rec);
        return e == KB_ERR_INTEGRITY ? KB_OK : e;
    }
    *keep = true;
    return KB_OK;
}

static kb_err collect_records(cx *b, sqlite3_stmt *s, bool live_only, bool cloud_only,
                              store_record **out, size_t *n)
{
    records_filter f = {live_only, cloud_only};
    return collect(b, s, sizeof(**out), record_row, &f, records_free, "collect_records",
                   (void **)out, n);
}

static kb_err sq_secret_list(store *st, bool include_deleted, store_record **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    rc = prep(b,
              "SELECT " SECRET_COLS ", " VERSION_COLS " FROM secrets s JOIN versions v ON "
              "v.secret_id = s.id AND v.version = s.latest_version ORDER BY s.name, s.id",
              &s);
    if (rc == KB_OK)
        rc = collect_records(b, s, !include_deleted, false, out, n);
    done(s);
    PUT(st, b);
    return rc;
}

static kb_err sq_secret_list_page(store *st, bool include_deleted, const char *after, size_t limit,
                                  store_record **out, size_t *n, char **next)
{
    cx *b = RD(st);
    sqlite3_stmt *s = NULL;
    store_record *arr = NULL;
    size_t cnt = 0, cap = 0, seen = 0, lastcap = 0;
    char *last = NULL; /* name of the last row examined: the next page's cursor */
    kb_err rc = KB_OK;
    int r;

    /* Names are UNIQUE, so "name > cursor" pages without repeats or gaps. */
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " SECRET_COLS ", " VERSION_COLS " FROM secrets s JOIN versions v "
                          "ON v.secret_id = s.id AND v.version = s.latest_version "
                          "WHERE s.name > ?1 ORDER BY s.name LIMIT ?2",
                          &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, after));
    KB_GUARD_OUT(rc, bind_i64(s, 2, (int64_t)limit));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        store_record rec;
        const unsigned char *nm = sqlite3_column_text(s, 1);
        size_t nl = (size_t)sqlite3_column_bytes(s, 1);
        kb_err e;
        seen++;
        /* A name with a NUL inside (only by tampering) would make a cursor that does not
         * advance: refuse the page rather than loop. */
        if (nm == NULL || memchr(nm, 0, nl) != NULL) {
            store_log_integrity("secrets", sqlite3_column_int64(s, 0), 0);
            KB_ENSURE_OUT(rc, false, KB_ERR_INTEGRITY);
        }
        if (nl + 1 > lastcap) {
            char *p = realloc(last, nl + 1);
            KB_ENSURE_OUT(rc, p != NULL, KB_ERR_NOMEM);
            last = p;
            lastcap = nl + 1;
        }
        if (nl > 0)
            memcpy(last, nm, nl);
        last[nl] = '\0';
        memset(&rec, 0, sizeof(rec));
        e = load_secret(b, s, 0, &rec.secret);
        if (e == KB_ERR_INTEGRITY)
            continue;
        KB_GUARD_OUT(rc, e);
        if (!include_deleted && rec.secret.deleted_at != 0) {
            store_secret_clear(&rec.secret);
            continue;
        }
        e = load_latest(b, s, &rec);
        if (e == KB_ERR_INTEGRITY) {
            store_secret_clear(&rec.secret);
            continue;
        }
        if (e == KB_OK)
            e = grow((void **)&arr, &cap, cnt, sizeof(*arr));
        if (e != KB_OK) {
            store_record_clear(&rec);
            KB_GUARD_OUT(rc, e);
        }
        arr[cnt++] = rec;
    }
    if (r != SQLITE_DONE)
        rc = db_err(b, r, "secret_list_page");
out:
    done(s);
    PUT(st, b);
    if (rc != KB_OK) {
        free(last);
        store_records_free(arr, cnt);
        return rc;
    }
    if (seen < limit) { /* the last page */
        free(last);
        last = NULL;
    }
    *out = arr;
    *n = cnt;
    *next = last;
    return KB_OK;
}

static void versions_free(void *arr, size_t n)
{
    store_versions_free(arr, n);
}

/* A version row; one failing its MAC is left out (logged). */
static kb_err version_row(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev,
                          bool *keep)
{
    kb_err e = load_version(b, s, 0, item);
    (void)ctx;
    (void)prev;
    if (e == KB_ERR_INTEGRITY) {
        *keep = false; /* load_version cleared the slot */
        return KB_OK;
    }
    return e;
}

static kb_err sq_version_list(store *st, int64_t secret_id, store_version **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;

    b = RD(st);
    KB_GUARD_OUT(rc, exists(b, "SELECT 1 FROM secrets WHERE id = ?1", secret_id));
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " VERSION_COLS
                          " FROM versions v WHERE v.secret_id = ?1 ORDER BY v.version DESC",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, secret_id));
    rc = collect(b, s, sizeof(**out), version_row, NULL, versions_free, "version_list",
                 (void **)out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* Version `ver` (0 = latest) of an already verified secret, with its envelope (lock held). */
static kb_err version_fetch(cx *b, const store_secret *sec, int64_t ver, store_record *out)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    memset(&out->version, 0, sizeof(out->version));
    memset(&out->env, 0, sizeof(out->env));
    if (ver == 0) {
        /* The latest version: latest_version must be the one the server wrote (latest_mac,
         * re-read here with the version row so both come from one statement). */
        uint8_t want[ROWMAC_LEN];
        KB_GUARD(prep(b,
                      "SELECT " VERSION_COLS ", " ENV_COLS ", s.latest_version, s.latest_mac "
                      "FROM secrets s JOIN versions v ON v.secret_id = s.id AND "
                      "v.version = s.latest_version WHERE s.id = ?1",
                      &s));
        KB_GUARD_OUT(rc, bind_i64(s, 1, sec->id));
        KB_GUARD_OUT(rc, step_row(b, s, "version_fetch_latest"));
        KB_GUARD_OUT(
            rc, rowmac_latest(b->mac, sec->id, sqlite3_column_int64(s, VERSION_NCOLS + 3), want));
        if (!col_mac_ok(s, VERSION_NCOLS + 4, want)) {
            store_log_integrity("secrets.latest_version", sec->id,
                                sqlite3_column_int64(s, VERSION_NCOLS + 3));
            KB_ENSURE_OUT(rc, false, KB_ERR_INTEGRITY);
        }
    } else {
        KB_GUARD(prep(b,
                      "SELECT " VERSION_COLS ", " ENV_COLS
                      " FROM versions v WHERE v.secret_id = ?1 AND v.version = ?2",
                      &s));
        KB_GUARD_OUT(rc, bind_i64(s, 1, sec->id));
        KB_GUARD_OUT(rc, bind_i64(s, 2, ver));
        KB_GUARD_OUT(rc, step_row(b, s, "version_fetch"));
    }
    KB_GUARD_OUT(rc, load_version(b, s, 0, &out->version));
    rc = load_env(s, VERSION_NCOLS, &out->env);
    if (rc != KB_OK)
        store_version_clear(&out->version);
out:
    done(s);
    return rc;
}

static kb_err sq_version_get(store *st, int64_t secret_id, int64_t version, store_record *out)
{
    cx *b;
    kb_err rc;
    memset(out, 0, sizeof(*out));
    b = RD(st);
    rc = secret_fetch(b, NULL, secret_id, &out->secret);
    if (rc == KB_OK) {
        rc = version_fetch(b, &out->secret, version, out);
        if (rc != KB_OK)
            store_secret_clear(&out->secret);
    }
    PUT(st, b);
    return rc;
}

static kb_err sq_secrets_expiring(store *st, int64_t from, int64_t to, store_record **out,
                                  size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " SECRET_COLS ", " VERSION_COLS
                          " FROM secrets s JOIN versions v ON v.secret_id = s.id AND "
                          "v.version = s.latest_version WHERE s.deleted_at = 0 AND "
                          "v.expires_at > 0 AND v.expires_at BETWEEN ?1 AND ?2 "
                          "ORDER BY v.expires_at, s.name",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, from));
    KB_GUARD_OUT(rc, bind_i64(s, 2, to));
    rc = collect_records(b, s, true, false, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* ---- groups ---- */

static kb_err sq_group_create(store *st, const char *name, const char *description,
                              const char *actor, int64_t now, int64_t *id_out, store_audit *au)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO groups(name, description, created_by, created_at) "
                          "VALUES (?1, ?2, ?3, ?4)",
                          &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, name));
    KB_GUARD_OUT(rc, bind_text(s, 2, description));
    KB_GUARD_OUT(rc, bind_text(s, 3, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 4, now));
    KB_GUARD_OUT(rc, step_done(b, s, "group_insert"));
    *id_out = sqlite3_last_insert_rowid(b->db);
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err sq_group_get(store *st, const char *name, store_group *out)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b, "SELECT " GROUP_COLS " FROM groups g WHERE g.name = ?1", &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, name));
    KB_GUARD_OUT(rc, step_row(b, s, "group_get"));
    rc = load_group(s, 0, out);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* Collect groups; with mac_kind set, column GROUP_NCOLS holds a membership or grant MAC bound to
 * (fixed_id, group id) that must verify, or the row is dropped. */
enum { LINK_NONE, LINK_MEMBERSHIP, LINK_GRANT };

typedef struct {
    int link;
    int64_t fixed_id;
} group_link;

static void groups_free(void *arr, size_t n)
{
    store_groups_free(arr, n);
}

static kb_err group_row(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev, bool *keep)
{
    const group_link *l = ctx;
    int64_t gid = sqlite3_column_int64(s, 0);
    (void)prev;
    if (l->link != LINK_NONE) {
        uint8_t want[ROWMAC_LEN];
        if (l->link == LINK_MEMBERSHIP)
            KB_GUARD(rowmac_membership(b->mac, l->fixed_id, gid, want));
        else
            KB_GUARD(rowmac_grant(b->mac, gid, l->fixed_id, want));
        if (!col_mac_ok(s, GROUP_NCOLS, want)) {
            store_log_integrity(l->link == LINK_MEMBERSHIP ? "memberships" : "grants",
                                l->link == LINK_MEMBERSHIP ? l->fixed_id : gid,
                                l->link == LINK_MEMBERSHIP ? gid : l->fixed_id);
            *keep = false;
            return KB_OK;
        }
    }
    return load_group(s, 0, item);
}

static kb_err collect_groups(cx *b, sqlite3_stmt *s, int link, int64_t fixed_id, store_group **out,
                             size_t *n)
{
    group_link l = {link, fixed_id};
    return collect(b, s, sizeof(**out), group_row, &l, groups_free, "collect_groups", (void **)out,
                   n);
}

static kb_err sq_group_list(store *st, store_group **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    rc = prep(b, "SELECT " GROUP_COLS " FROM groups g ORDER BY g.name", &s);
    if (rc == KB_OK)
        rc = collect_groups(b, s, LINK_NONE, 0, out, n);
    done(s);
    PUT(st, b);
    return rc;
}

static kb_err sq_group_delete(store *st, int64_t group_id, store_audit *au)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, exists(b, "SELECT 1 FROM groups WHERE id = ?1", group_id));
    /* An owner group is part of its secrets' MAC'd rows: refuse rather than rewrite them. */
    rc = exists(b, "SELECT 1 FROM secrets WHERE owner_group_id = ?1", group_id);
    KB_ENSURE_OUT(rc, rc == KB_ERR_NOT_FOUND, rc == KB_OK ? KB_ERR_CONFLICT : rc);
    KB_GUARD_OUT(rc, prep(b, "DELETE FROM groups WHERE id = ?1", &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, group_id));
    rc = step_done(b, s, "group_delete");
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

/* ---- clients ---- */

static kb_err client_write_mac(cx *b, const store_client *c, bool stored_cloud)
{
    uint8_t mac[ROWMAC_LEN];
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD(rowmac_client(b->mac, c->id, c->spiffe_id, c->enabled, c->admin, stored_cloud,
                           c->app_name, mac));
    KB_GUARD(prep(b,
                  "UPDATE clients SET enabled = ?1, admin = ?2, cloud = ?3, app_name = ?4, "
                  "description = ?5, mac = ?6 WHERE id = ?7",
                  &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, c->enabled ? 1 : 0));
    KB_GUARD_OUT(rc, bind_i64(s, 2, c->admin ? 1 : 0));
    KB_GUARD_OUT(rc, bind_i64(s, 3, stored_cloud ? 1 : 0));
    KB_GUARD_OUT(rc, bind_text(s, 4, c->app_name));
    KB_GUARD_OUT(rc, bind_text(s, 5, c->description));
    KB_GUARD_OUT(rc, bind_blob(s, 6, mac, sizeof(mac)));
    KB_GUARD_OUT(rc, bind_i64(s, 7, c->id));
    rc = step_done(b, s, "client_update");
out:
    done(s);
    return rc;
}

static kb_err sq_client_create(store *st, const store_client_new *cn, bool cloud, const char *actor,
                               int64_t now, int64_t *id_out, store_audit *au)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    store_client c = {0};
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO clients(spiffe_id, enabled, admin, cloud, created_by, "
                          "created_at, mac) VALUES (?1, 0, 0, 0, ?2, ?3, x'')",
                          &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, cn->spiffe_id));
    KB_GUARD_OUT(rc, bind_text(s, 2, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 3, now));
    KB_GUARD_OUT(rc, step_done(b, s, "client_insert"));
    c.id = sqlite3_last_insert_rowid(b->db);
    c.spiffe_id = (char *)cn->spiffe_id;
    c.enabled = cn->enabled;
    c.admin = cn->admin;
    c.app_name = (char *)(cn->app_name ? cn->app_name : "");
    c.description = (char *)(cn->description ? cn->description : "");
    KB_GUARD_OUT(rc, client_write_mac(b, &c, cloud));
    *id_out = c.id;
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err sq_client_get(store *st, const char *spiffe_id, int64_t id, store_client *out)
{
    cx *b;
    kb_err rc;
    b = RD(st);
    /* Every request starts here: the cheap half of the rollback check (one indexed row). */
    rc = state_check(b);
    if (rc == KB_OK)
        rc = client_fetch(b, spiffe_id, id, out);
    PUT(st, b);
    return rc;
}

static void clients_free(void *arr, size_t n)
{
    store_clients_free(arr, n);
}

/* A client row (ctx: a group id whose membership MAC, in the column after the client's, must
 * verify, or 0); rows failing a MAC are left out (logged). */
static kb_err client_row(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev,
                         bool *keep)
{
    int64_t group_id = *(const int64_t *)ctx;
    kb_err e;
    (void)prev;
    if (group_id > 0) {
        uint8_t want[ROWMAC_LEN];
        int64_t cid = sqlite3_column_int64(s, 0);
        KB_GUARD(rowmac_membership(b->mac, cid, group_id, want));
        if (!col_mac_ok(s, CLIENT_NCOLS, want)) {
            store_log_integrity("memberships", cid, group_id);
            *keep = false;
            return KB_OK;
        }
    }
    e = load_client(b, s, 0, item);
    if (e == KB_ERR_INTEGRITY) {
        *keep = false;
        return KB_OK;
    }
    return e;
}

static kb_err collect_clients(cx *b, sqlite3_stmt *s, int64_t group_id, store_client **out,
                              size_t *n)
{
    return collect(b, s, sizeof(**out), client_row, &group_id, clients_free, "collect_clients",
                   (void **)out, n);
}

static kb_err sq_client_list(store *st, store_client **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    rc = prep(b, "SELECT " CLIENT_COLS " FROM clients c ORDER BY c.spiffe_id", &s);
    if (rc == KB_OK)
        rc = collect_clients(b, s, 0, out, n);
    done(s);
    PUT(st, b);
    return rc;
}

static kb_err sq_client_update(store *st, int64_t client_id, const store_client_patch *p,
                               store_audit *au)
{
    cx *b;
    store_client c = {0};
    char *keep_app = NULL, *keep_desc = NULL;
    bool stored_cloud;
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, client_fetch(b, NULL, client_id, &c));
    /* The stored cloud flag is what we re-MAC; the patch applies to the effective flags. */
    stored_cloud = c.cloud;
    store_client_effective(st, &c);
    if (p->enabled >= 0)
        c.enabled = p->enabled == 1;
    if (p->admin >= 0)
        c.admin = p->admin == 1;
    KB_GUARD_OUT(rc, model_client_flags_check(c.admin, c.cloud));
    if (p->app_name != NULL) {
        keep_app = c.app_name;
        c.app_name = (char *)p->app_name;
    }
    if (p->description != NULL) {
        keep_desc = c.description;
        c.description = (char *)p->description;
    }
    KB_GUARD_OUT(rc, client_write_mac(b, &c, stored_cloud));
out:
    if (keep_app)
        c.app_name = keep_app;
    if (keep_desc)
        c.description = keep_desc;
    store_client_clear(&c);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err delete_by_id(store *st, const char *sql, int64_t id, store_audit *au)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = WR(st);
    /* A transaction, so the rows it removes (and their cascades) move the state row with it. */
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, prep(b, sql, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, step_done(b, s, "delete"));
    KB_ENSURE_OUT(rc, sqlite3_changes(b->db) > 0, KB_ERR_NOT_FOUND);
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err client_touch(store *st, int64_t client_id, int64_t now, bool listed)
{
    cx *b = WR(st);
    sqlite3_stmt *s = NULL;
    kb_err rc;
    /* Throttled so that a busy client does not turn every read into a write. */
    KB_GUARD_OUT(rc, prep(b,
                          "UPDATE clients SET "
                          " last_seen = CASE WHEN last_seen <= ?1 - ?3 THEN ?1 ELSE last_seen END,"
                          " last_list_at = CASE WHEN ?4 AND last_list_at <= ?1 - ?3 THEN ?1 "
                          "  ELSE last_list_at END "
                          "WHERE id = ?2 AND (last_seen <= ?1 - ?3 OR (?4 AND "
                          " last_list_at <= ?1 - ?3))",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, now));
    KB_GUARD_OUT(rc, bind_i64(s, 2, client_id));
    KB_GUARD_OUT(rc, bind_i64(s, 3, STORE_TOUCH_INTERVAL));
    KB_GUARD_OUT(rc, bind_i64(s, 4, listed ? 1 : 0));
    rc = step_done(b, s, "client_seen");
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* The last_seen / last_list_at values this process last read for a client: lower bounds of the
 * stored ones (they only move forward, and ids are never reused), so when they say nothing is
 * due, nothing is, and the request needs no database access at all for its activity marker. */
static bool seen_get(sq *q, int64_t id, int64_t *ls, int64_t *lla)
{
    struct seen_entry *e = &q->seen[(uint64_t)id & (SEEN_SLOTS - 1)];
    bool hit;
    pthread_mutex_lock(&q->smu);
    hit = e->id == id;
    if (hit) {
        *ls = e->last_seen;
        *lla = e->last_list_at;
    }
    pthread_mutex_unlock(&q->smu);
    return hit;
}

static void seen_put(sq *q, int64_t id, int64_t ls, int64_t lla)
{
    struct seen_entry *e = &q->seen[(uint64_t)id & (SEEN_SLOTS - 1)];
    pthread_mutex_lock(&q->smu);
    e->id = id;
    e->last_seen = ls;
    e->last_list_at = lla;
    pthread_mutex_unlock(&q->smu);
}

static void seen_forget(sq *q, int64_t id)
{
    struct seen_entry *e = &q->seen[(uint64_t)id & (SEEN_SLOTS - 1)];
    pthread_mutex_lock(&q->smu);
    if (e->id == id)
        e->id = 0;
    pthread_mutex_unlock(&q->smu);
}

static bool seen_due(int64_t ls, int64_t lla, int64_t now, bool listed)
{
    return ls <= now - STORE_TOUCH_INTERVAL || (listed && lla <= now - STORE_TOUCH_INTERVAL);
}

/* Called twice on every request (svc_client_auth, svc_client_list). Decided from the values
 * remembered above when possible, else on a reader, so the common case (a client seen within
 * the hour) never touches the database, let alone queues behind the writer. The UPDATE re-checks
 * the same conditions, so a race with another thread only skips a redundant write. A client
 * deleted by another process may still be answered KB_OK here until its entry is evicted:
 * the marker is advisory; access is decided by store_client_get and the reads. */
static kb_err sq_client_seen(store *st, int64_t client_id, int64_t now, bool listed)
{
    sq *q = SQ(st);
    cx *b;
    sqlite3_stmt *s = NULL;
    int64_t ls = 0, lla = 0;
    kb_err rc;
    if (seen_get(q, client_id, &ls, &lla) && !seen_due(ls, lla, now, listed))
        return KB_OK;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b, "SELECT last_seen, last_list_at FROM clients WHERE id = ?1", &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, client_id));
    KB_GUARD_OUT(rc, step_row(b, s, "client_seen_check"));
    ls = sqlite3_column_int64(s, 0);
    lla = sqlite3_column_int64(s, 1);
out:
    done(s);
    PUT(st, b);
    if (rc != KB_OK)
        return rc;
    if (!seen_due(ls, lla, now, listed)) {
        seen_put(q, client_id, ls, lla);
        return KB_OK;
    }
    /* Written values are re-read next time rather than guessed (the UPDATE may lose a race). */
    seen_forget(q, client_id);
    return client_touch(st, client_id, now, listed);
}

static kb_err sq_client_delete(store *st, int64_t client_id, store_audit *au)
{
    seen_forget(SQ(st), client_id);
    return delete_by_id(st, "DELETE FROM clients WHERE id = ?1", client_id, au);
}

static kb_err sq_clients_stale(store *st, int64_t before, store_client **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " CLIENT_COLS " FROM clients c WHERE c.last_list_at < ?1 "
                          "ORDER BY c.last_list_at, c.spiffe_id",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, before));
    rc = collect_clients(b, s, 0, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* ---- memberships and grants ---- */

static kb_err link_set(store *st, bool membership, int64_t a, int64_t g, bool present,
                       store_audit *au)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    uint8_t mac[ROWMAC_LEN];
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    if (!present) {
        KB_GUARD_OUT(rc, prep(b,
                              membership ? "DELETE FROM memberships WHERE client_id = ?1 AND "
                                           "group_id = ?2"
                                         : "DELETE FROM grants WHERE secret_id = ?1 AND "
                                           "group_id = ?2",
                              &s));
        KB_GUARD_OUT(rc, bind_i64(s, 1, a));
        KB_GUARD_OUT(rc, bind_i64(s, 2, g));
        KB_GUARD_OUT(rc, step_done(b, s, "link_delete"));
        KB_ENSURE_OUT(rc, sqlite3_changes(b->db) > 0, KB_ERR_NOT_FOUND);
        goto out;
    }
    KB_GUARD_OUT(rc, exists(b, "SELECT 1 FROM groups WHERE id = ?1", g));
    if (membership) {
        KB_GUARD_OUT(rc, exists(b, "SELECT 1 FROM clients WHERE id = ?1", a));
        KB_GUARD_OUT(rc, rowmac_membership(b->mac, a, g, mac));
        KB_GUARD_OUT(rc, prep(b,
                              "INSERT INTO memberships(client_id, group_id, mac) "
                              "VALUES (?1, ?2, ?3)",
                              &s));
    } else {
        KB_GUARD_OUT(rc, exists(b, "SELECT 1 FROM secrets WHERE id = ?1", a));
        KB_GUARD_OUT(rc, rowmac_grant(b->mac, g, a, mac));
        KB_GUARD_OUT(
            rc, prep(b, "INSERT INTO grants(secret_id, group_id, mac) VALUES (?1, ?2, ?3)", &s));
    }
    KB_GUARD_OUT(rc, bind_i64(s, 1, a));
    KB_GUARD_OUT(rc, bind_i64(s, 2, g));
    KB_GUARD_OUT(rc, bind_blob(s, 3, mac, sizeof(mac)));
    rc = step_done(b, s, "link_insert");
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err sq_membership_set(store *st, int64_t client_id, int64_t group_id, bool present,
                                store_audit *au)
{
    return link_set(st, true, client_id, group_id, present, au);
}

static kb_err sq_grant_set(store *st, int64_t group_id, int64_t secret_id, bool present,
                           store_audit *au)
{
    return link_set(st, false, secret_id, group_id, present, au);
}

/* The groups linked to one row (a client's memberships or a secret's grants), verified by
 * collect_groups; owner_sql checks that the row itself exists. */
static kb_err linked_groups(store *st, const char *owner_sql, const char *sql, int kind, int64_t id,
                            store_group **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, exists(b, owner_sql, id));
    KB_GUARD_OUT(rc, prep(b, sql, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    rc = collect_groups(b, s, kind, id, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

static kb_err sq_client_groups(store *st, int64_t client_id, store_group **out, size_t *n)
{
    return linked_groups(st, "SELECT 1 FROM clients WHERE id = ?1",
                         "SELECT " GROUP_COLS ", m.mac FROM memberships m JOIN groups g ON "
                         "g.id = m.group_id WHERE m.client_id = ?1 ORDER BY g.name",
                         LINK_MEMBERSHIP, client_id, out, n);
}

static kb_err sq_secret_groups(store *st, int64_t secret_id, store_group **out, size_t *n)
{
    return linked_groups(st, "SELECT 1 FROM secrets WHERE id = ?1",
                         "SELECT " GROUP_COLS ", gr.mac FROM grants gr JOIN groups g ON "
                         "g.id = gr.group_id WHERE gr.secret_id = ?1 ORDER BY g.name",
                         LINK_GRANT, secret_id, out, n);
}

static kb_err sq_group_clients(store *st, int64_t group_id, store_client **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, exists(b, "SELECT 1 FROM groups WHERE id = ?1", group_id));
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " CLIENT_COLS ", m.mac FROM memberships m JOIN clients c ON "
                          "c.id = m.client_id WHERE m.group_id = ?1 ORDER BY c.spiffe_id",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, group_id));
    rc = collect_clients(b, s, group_id, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* ---- client reads ---- */

/* The verified, enabled client (lock held). */
static kb_err reader_client(cx *b, int64_t client_id, store_client *c)
{
    KB_GUARD(client_fetch(b, NULL, client_id, c));
    store_client_effective(b->st, c);
    if (!c->enabled) {
        store_client_clear(c);
        return KB_ERR_DENIED;
    }
    return KB_OK;
}

static kb_err sq_readable_list(store *st, int64_t client_id, store_record **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    store_record *arr = NULL;
    size_t cnt = 0, cap = 0;
    store_client c = {0};
    kb_err rc;
    int r;

    b = RD(st);
    rc = tx_begin(b, false); /* one snapshot for the client row and the listing */
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, state_check(b));
    KB_GUARD_OUT(rc, reader_client(b, client_id, &c));
    /* Every (membership, grant) path to every candidate secret, grouped by secret; each link and
     * the secret row are verified below, and the flags re-checked on verified values. */
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " SECRET_COLS ", " VERSION_COLS ", m.group_id, m.mac, gr.mac "
                          "FROM memberships m JOIN grants gr ON gr.group_id = m.group_id "
                          "JOIN secrets s ON s.id = gr.secret_id "
                          "JOIN versions v ON v.secret_id = s.id AND "
                          "v.version = s.latest_version "
                          "WHERE m.client_id = ?1 AND s.deleted_at = 0 "
                          "ORDER BY s.name, s.id",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, client_id));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        const int c0 = SECRET_NCOLS + VERSION_NCOLS;
        int64_t sid = sqlite3_column_int64(s, 0);
        int64_t gid = sqlite3_column_int64(s, c0);
        uint8_t want[ROWMAC_LEN];
        store_record rec;
        kb_err e;

        if (cnt > 0 && arr[cnt - 1].secret.id == sid)
            continue; /* already reachable through a verified path */
        KB_GUARD_OUT(rc, rowmac_membership(b->mac, client_id, gid, want));
        if (!col_mac_ok(s, c0 + 1, want)) {
            store_log_integrity("memberships", client_id, gid);
            continue;
        }
        KB_GUARD_OUT(rc, rowmac_grant(b->mac, gid, sid, want));
        if (!col_mac_ok(s, c0 + 2, want)) {
            store_log_integrity("grants", gid, sid);
            continue;
        }
        memset(&rec, 0, sizeof(rec));
        e = load_secret(b, s, 0, &rec.secret);
        if (e == KB_ERR_INTEGRITY)
            continue;
        KB_GUARD_OUT(rc, e);
        if (rec.secret.deleted_at != 0 || (c.cloud && !rec.secret.cloud_sync)) {
            store_secret_clear(&rec.secret);
            continue;
        }
        e = load_latest(b, s, &rec);
        if (e == KB_ERR_INTEGRITY) {
            store_secret_clear(&rec.secret);
            continue;
        }
        if (e == KB_OK)
            e = grow((void **)&arr, &cap, cnt, sizeof(*arr));
        if (e != KB_OK) {
            store_record_clear(&rec);
            KB_GUARD_OUT(rc, e);
        }
        arr[cnt++] = rec;
    }
    if (r != SQLITE_DONE)
        rc = db_err(b, r, "readable_list");
out:
    done(s);
    store_client_clear(&c);
    rc = tx_end(b, rc, NULL);
    PUT(st, b);
    if (rc != KB_OK) {
        store_records_free(arr, cnt);
        return rc;
    }
    *out = arr;
    *n = cnt;
    return KB_OK;
}

/* One readable secret for a verified client (lock and snapshot held). */
static kb_err readable_one(cx *b, const store_client *c, const char *name, int64_t version,
                           store_record *out)
{
    sqlite3_stmt *s = NULL;
    bool granted = false, tampered = false;
    kb_err rc;
    int r = SQLITE_DONE;

    memset(out, 0, sizeof(*out));
    rc = secret_fetch(b, name, 0, &out->secret);
    KB_ENSURE_OUT(rc, rc != KB_ERR_INTEGRITY, KB_ERR_TAMPERED); /* a forged secret row */
    KB_GUARD_OUT(rc, rc);
    KB_ENSURE_OUT(rc, out->secret.deleted_at == 0, KB_ERR_NOT_FOUND);
    KB_ENSURE_OUT(rc, !c->cloud || out->secret.cloud_sync, KB_ERR_NOT_FOUND);
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT m.group_id, m.mac, gr.mac FROM memberships m JOIN grants gr "
                          "ON gr.group_id = m.group_id WHERE m.client_id = ?1 AND "
                          "gr.secret_id = ?2",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, c->id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, out->secret.id));
    while (!granted && (r = sqlite3_step(s)) == SQLITE_ROW) {
        uint8_t want[ROWMAC_LEN];
        int64_t gid = sqlite3_column_int64(s, 0);
        KB_GUARD_OUT(rc, rowmac_membership(b->mac, c->id, gid, want));
        if (!col_mac_ok(s, 1, want)) {
            store_log_integrity("memberships", c->id, gid);
            tampered = true;
            continue;
        }
        KB_GUARD_OUT(rc, rowmac_grant(b->mac, gid, out->secret.id, want));
        if (!col_mac_ok(s, 2, want)) {
            store_log_integrity("grants", gid, out->secret.id);
            tampered = true;
            continue;
        }
        granted = true;
    }
    if (!granted && r != SQLITE_DONE)
        KB_ENSURE_OUT(rc, false, db_err(b, r, "readable_get"));
    KB_ENSURE_OUT(rc, granted, tampered ? KB_ERR_TAMPERED : KB_ERR_NOT_FOUND);
    rc = version_fetch(b, &out->secret, version, out);
out:
    done(s);
    if (rc != KB_OK)
        store_record_clear(out);
    return rc;
}

static kb_err sq_readable_get_batch(store *st, int64_t client_id, const char *const *names,
                                    const int64_t *versions, size_t n, store_record *out,
                                    kb_err *errs)
{
    cx *b;
    store_client c = {0};
    kb_err rc;
    b = RD(st);
    rc = tx_begin(b, false);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, state_check(b));
    KB_GUARD_OUT(rc, reader_client(b, client_id, &c));
    for (size_t i = 0; i < n; i++) {
        if (errs[i] != KB_OK)
            continue;
        errs[i] = readable_one(b, &c, names[i], versions[i], &out[i]);
        /* A database failure fails the whole batch; per-name outcomes do not. */
        if (errs[i] == KB_ERR_DB || errs[i] == KB_ERR_NOMEM) {
            rc = errs[i];
            for (size_t k = 0; k <= i; k++)
                store_record_clear(&out[k]);
            goto out;
        }
    }
out:
    store_client_clear(&c);
    rc = tx_end(b, rc, NULL);
    PUT(st, b);
    return rc;
}

/* ---- fetch log ---- */

/* Upsert the fetch log row (writer, transaction or autocommit). */
static kb_err fetch_upsert(cx *b, int64_t client_id, int64_t secret_id, int64_t version,
                           int64_t now)
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD(prep(b,
                  "INSERT INTO fetch_log(client_id, secret_id, version, fetched_at) "
                  "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(client_id, secret_id) DO UPDATE "
                  "SET version = excluded.version, fetched_at = excluded.fetched_at "
                  "WHERE excluded.fetched_at >= fetch_log.fetched_at",
                  &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, client_id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, secret_id));
    KB_GUARD_OUT(rc, bind_i64(s, 3, version));
    KB_GUARD_OUT(rc, bind_i64(s, 4, now));
    rc = step_done(b, s, "fetch_record");
out:
    done(s);
    return rc;
}

static kb_err sq_fetch_record(store *st, int64_t client_id, int64_t secret_id, int64_t version,
                              int64_t now)
{
    cx *b = WR(st);
    kb_err rc = fetch_upsert(b, client_id, secret_id, version, now);
    PUT(st, b);
    return rc;
}

static void fetches_free(void *arr, size_t n)
{
    store_fetches_free(arr, n);
}

static kb_err fetch_row(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev, bool *keep)
{
    store_fetch *f = item;
    (void)b;
    (void)ctx;
    (void)prev;
    (void)keep;
    f->client_id = sqlite3_column_int64(s, 0);
    KB_GUARD(col_str(s, 1, &f->spiffe_id));
    f->secret_id = sqlite3_column_int64(s, 2);
    f->version = sqlite3_column_int64(s, 3);
    f->fetched_at = sqlite3_column_int64(s, 4);
    return KB_OK;
}

static kb_err sq_secret_status(store *st, int64_t secret_id, store_fetch **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, exists(b, "SELECT 1 FROM secrets WHERE id = ?1", secret_id));
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT f.client_id, c.spiffe_id, f.secret_id, f.version, f.fetched_at "
                          "FROM fetch_log f JOIN clients c ON c.id = f.client_id "
                          "WHERE f.secret_id = ?1 ORDER BY c.spiffe_id",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, secret_id));
    rc = collect(b, s, sizeof(**out), fetch_row, NULL, fetches_free, "secret_status", (void **)out,
                 n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* ---- expiry notifications (notify.h) ---- */

static kb_err sq_notify_sent(store *st, int64_t secret_id, int64_t version, int64_t window,
                             bool *sent)
{
    cx *b = RD(st);
    sqlite3_stmt *s = NULL;
    kb_err rc;
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT 1 FROM notify_sent WHERE secret_id = ?1 AND version = ?2 "
                          "AND window_secs = ?3",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, secret_id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, version));
    KB_GUARD_OUT(rc, bind_i64(s, 3, window));
    rc = step_row(b, s, "notify_sent");
    *sent = rc == KB_OK;
    if (rc == KB_ERR_NOT_FOUND)
        rc = KB_OK;
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* The mark and the delivery's audit row in one transaction: a crash can leave neither (the
 * webhook is sent again) but never a mark without its row or a row without its mark. */
static kb_err sq_notify_mark(store *st, int64_t secret_id, int64_t version, int64_t window,
                             int64_t now, store_audit *au)
{
    cx *b = WR(st);
    sqlite3_stmt *s = NULL;
    kb_err rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO notify_sent(secret_id, version, window_secs, sent_at) "
                          "VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, secret_id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, version));
    KB_GUARD_OUT(rc, bind_i64(s, 3, window));
    KB_GUARD_OUT(rc, bind_i64(s, 4, now));
    rc = step_done(b, s, "notify_mark");
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

/* ---- audit ---- */

static kb_err head_locked(cx *b, int64_t *seq, uint8_t mac[AUDIT_MAC_LEN])
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    *seq = 0;
    memset(mac, 0, AUDIT_MAC_LEN);
    KB_GUARD(prep(b, "SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1", &s));
    rc = step_row(b, s, "audit_head");
    if (rc == KB_OK) {
        *seq = sqlite3_column_int64(s, 0);
        if (sqlite3_column_bytes(s, 1) == AUDIT_MAC_LEN)
            memcpy(mac, sqlite3_column_blob(s, 1), AUDIT_MAC_LEN);
    } else if (rc == KB_ERR_NOT_FOUND) {
        rc = KB_OK;
    }
    done(s);
    return rc;
}

static kb_err sq_audit_head(store *st, int64_t *seq, uint8_t mac[AUDIT_MAC_LEN])
{
    cx *b;
    kb_err rc;
    b = RD(st);
    rc = head_locked(b, seq, mac);
    PUT(st, b);
    return rc;
}

/* Append one row to the chain (writer, inside a write transaction: the write lock is taken
 * before the head is read, so two appenders, threads or processes, never extend the same head). */
static kb_err audit_insert_locked(cx *b, const audit_event *ev, audit_mac_fn macfn, void *ctx,
                                  int64_t *seq_out)
{
    sqlite3_stmt *s = NULL;
    uint8_t prev[AUDIT_MAC_LEN], mac[AUDIT_MAC_LEN];
    int64_t seq = 0;
    kb_err rc;
    KB_ENSURE(b->writer && !sqlite3_get_autocommit(b->db), KB_ERR_INTERNAL);
    KB_GUARD_OUT(rc, head_locked(b, &seq, prev));
    seq++;
    KB_GUARD_OUT(rc, macfn(ctx, prev, seq, ev, mac));
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO audit_log(seq, time, identity, peer, action, object, "
                          "version, result, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, seq));
    KB_GUARD_OUT(rc, bind_i64(s, 2, ev->time));
    KB_GUARD_OUT(rc, bind_text(s, 3, ev->identity));
    KB_GUARD_OUT(rc, bind_text(s, 4, ev->peer));
    KB_GUARD_OUT(rc, bind_text(s, 5, ev->action));
    KB_GUARD_OUT(rc, bind_text(s, 6, ev->object));
    KB_GUARD_OUT(rc, bind_i64(s, 7, ev->version));
    KB_GUARD_OUT(rc, bind_text(s, 8, ev->result));
    KB_GUARD_OUT(rc, bind_blob(s, 9, mac, sizeof(mac)));
    KB_GUARD_OUT(rc, step_done(b, s, "audit_insert"));
    *seq_out = seq;
out:
    done(s);
    return rc;
}

static kb_err sq_audit_append(store *st, const audit_event *ev, const audit_fetch *fetch,
                              store_audit_mac_fn macfn, void *ctx, int64_t *seq_out)
{
    cx *b;
    int64_t seq = 0;
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    if (fetch != NULL)
        KB_GUARD_OUT(rc,
                     fetch_upsert(b, fetch->client_id, fetch->secret_id, fetch->version, ev->time));
    KB_GUARD_OUT(rc, audit_insert_locked(b, ev, macfn, ctx, &seq));
    if (seq_out)
        *seq_out = seq;
out:
    rc = tx_end(b, rc, NULL);
    PUT(st, b);
    return rc;
}

static void audit_free(void *arr, size_t n)
{
    audit_rows_free(arr, n);
}

static kb_err audit_row_load(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev,
                             bool *keep)
{
    audit_row *a = item;
    (void)b;
    (void)ctx;
    (void)prev;
    (void)keep;
    a->seq = sqlite3_column_int64(s, 0);
    a->time = sqlite3_column_int64(s, 1);
    KB_GUARD(col_str(s, 2, &a->identity));
    KB_GUARD(col_str(s, 3, &a->peer));
    KB_GUARD(col_str(s, 4, &a->action));
    KB_GUARD(col_str(s, 5, &a->object));
    a->version = sqlite3_column_int64(s, 6);
    KB_GUARD(col_str(s, 7, &a->result));
    /* A MAC of the wrong size stays all-zero: it will not verify. */
    if (sqlite3_column_bytes(s, 8) == AUDIT_MAC_LEN)
        memcpy(a->mac, sqlite3_column_blob(s, 8), AUDIT_MAC_LEN);
    return KB_OK;
}

static kb_err collect_audit(cx *b, sqlite3_stmt *s, audit_row **out, size_t *n)
{
    return collect(b, s, sizeof(**out), audit_row_load, NULL, audit_free, "audit_rows",
                   (void **)out, n);
}

#define AUDIT_COLS "seq, time, identity, peer, action, object, version, result, mac"

static kb_err sq_audit_rows(store *st, int64_t after, size_t limit, audit_row **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(
        rc,
        prep(b, "SELECT " AUDIT_COLS " FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2", &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, after));
    KB_GUARD_OUT(rc, bind_i64(s, 2, (int64_t)limit));
    rc = collect_audit(b, s, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

static kb_err sq_audit_query(store *st, const audit_filter *f, audit_row **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " AUDIT_COLS " FROM audit_log WHERE "
                          "(?1 IS NULL OR object = ?1) AND (?2 IS NULL OR identity = ?2) AND "
                          "(?3 = 0 OR time >= ?3) AND (?4 = 0 OR time <= ?4) "
                          "ORDER BY seq DESC LIMIT ?5",
                          &s));
    if (f->object)
        KB_GUARD_OUT(rc, bind_text(s, 1, f->object));
    if (f->identity)
        KB_GUARD_OUT(rc, bind_text(s, 2, f->identity));
    KB_GUARD_OUT(rc, bind_i64(s, 3, f->since));
    KB_GUARD_OUT(rc, bind_i64(s, 4, f->until));
    KB_GUARD_OUT(rc, bind_i64(s, 5, (int64_t)f->limit));
    rc = collect_audit(b, s, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

static kb_err sq_anchor_put(store *st, const audit_anchor *a)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = WR(st);
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT OR IGNORE INTO audit_anchors(seq, mac, time, sig) "
                          "VALUES (?1, ?2, ?3, ?4)",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, a->seq));
    KB_GUARD_OUT(rc, bind_blob(s, 2, a->mac, AUDIT_MAC_LEN));
    KB_GUARD_OUT(rc, bind_i64(s, 3, a->time));
    KB_GUARD_OUT(rc, bind_blob(s, 4, a->sig, a->sig_len));
    rc = step_done(b, s, "anchor_put");
out:
    done(s);
    PUT(st, b);
    return rc;
}

static void anchors_free(void *arr, size_t n)
{
    (void)n;
    free(arr);
}

static kb_err anchor_row(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev,
                         bool *keep)
{
    audit_anchor *a = item;
    int sl = sqlite3_column_bytes(s, 3);
    (void)b;
    (void)ctx;
    (void)prev;
    (void)keep;
    a->seq = sqlite3_column_int64(s, 0);
    if (sqlite3_column_bytes(s, 1) == AUDIT_MAC_LEN)
        memcpy(a->mac, sqlite3_column_blob(s, 1), AUDIT_MAC_LEN);
    a->time = sqlite3_column_int64(s, 2);
    if (sl > 0 && sl <= AUDIT_SIG_MAX) {
        memcpy(a->sig, sqlite3_column_blob(s, 3), (size_t)sl);
        a->sig_len = (size_t)sl;
    }
    return KB_OK;
}

static kb_err sq_anchor_list(store *st, audit_anchor **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    rc = prep(b, "SELECT seq, mac, time, sig FROM audit_anchors ORDER BY seq", &s);
    if (rc == KB_OK)
        rc = collect(b, s, sizeof(**out), anchor_row, NULL, anchors_free, "anchor_list",
                     (void **)out, n);
    done(s);
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
    .secret_create = sq_secret_create,
    .version_add = sq_version_add,
    .secret_update = sq_secret_update,
    .secret_set_deleted = sq_secret_set_deleted,
    .secret_purge = sq_secret_purge,
    .secret_get = sq_secret_get,
    .secret_list = sq_secret_list,
    .secret_list_page = sq_secret_list_page,
    .version_list = sq_version_list,
    .version_get = sq_version_get,
    .secrets_expiring = sq_secrets_expiring,
    .group_create = sq_group_create,
    .group_get = sq_group_get,
    .group_list = sq_group_list,
    .group_delete = sq_group_delete,
    .client_create = sq_client_create,
    .client_get = sq_client_get,
    .client_list = sq_client_list,
    .client_update = sq_client_update,
    .client_delete = sq_client_delete,
    .client_seen = sq_client_seen,
    .clients_stale = sq_clients_stale,
    .membership_set = sq_membership_set,
    .client_groups = sq_client_groups,
    .group_clients = sq_group_clients,
    .grant_set = sq_grant_set,
    .secret_groups = sq_secret_groups,
    .readable_list = sq_readable_list,
    .readable_get_batch = sq_readable_get_batch,
    .fetch_record = sq_fetch_record,
    .secret_status = sq_secret_status,
    .audit_append = sq_audit_append,
    .audit_rows = sq_audit_rows,
    .audit_query = sq_audit_query,
    .audit_head = sq_audit_head,
    .anchor_put = sq_anchor_put,
    .anchor_list = sq_anchor_list,
    .notify_sent = sq_notify_sent,
    .notify_mark = sq_notify_mark,
};
