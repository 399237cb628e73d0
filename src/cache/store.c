/* store.c - SQLite storage for keybridge-cache (see store.h). */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "lib/buf.h"
#include "lib/json.h"
#include "lib/log.h"
#include "seal.h"

/* Schema version 2. Dates are milliseconds since the epoch. Secret values are only ever stored
 * sealed (seal.h). deleted_ms > 0 marks a secret scheduled for deletion until deletion_ms.
 * list_head and list_tail (schema 2) hold the secret's ListSecrets entry rendered as JSON, all
 * of it but the dates (store.h, cache_list_text): list_head is rendered from the row itself by
 * every insert and update, list_tail from the secret's tags and stages when a transaction that
 * changed them commits. A store of schema 1 gains them at open (migrate_1_to_2). */
#define SCHEMA_VERSION "2"
static const char *const SCHEMA =
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);"
    "INSERT OR IGNORE INTO meta(k, v) VALUES('schema', '" SCHEMA_VERSION "');"
    "CREATE TABLE IF NOT EXISTS secrets("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " account TEXT NOT NULL, name TEXT NOT NULL, arn TEXT NOT NULL UNIQUE,"
    " partial_arn TEXT NOT NULL,"
    " description TEXT, kms_key_id TEXT,"
    " created_ms INTEGER NOT NULL, changed_ms INTEGER NOT NULL, accessed_ms INTEGER NOT NULL,"
    " deleted_ms INTEGER NOT NULL, deletion_ms INTEGER NOT NULL,"
    " list_head TEXT NOT NULL DEFAULT '', list_tail TEXT NOT NULL DEFAULT '',"
    " UNIQUE(account, name));"
    "CREATE INDEX IF NOT EXISTS secrets_partial ON secrets(account, partial_arn);"
    /* ListSecrets' orders: pages stream in index order instead of sorting the whole account
     * per page (100,000 secrets: a sort of 100,000 rows for every 100 returned). Added to schema
     * 1 in place: IF NOT EXISTS creates it on an existing store at the next open. */
    "CREATE INDEX IF NOT EXISTS secrets_created ON secrets(account, created_ms, id);"
    "CREATE INDEX IF NOT EXISTS secrets_changed ON secrets(account, changed_ms, id);"
    "CREATE INDEX IF NOT EXISTS secrets_accessed ON secrets(account, accessed_ms, id);"
    "CREATE TABLE IF NOT EXISTS versions("
    " secret_id INTEGER NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,"
    " vid TEXT NOT NULL, created_ms INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " is_binary INTEGER NOT NULL, sealed BLOB NOT NULL,"
    " PRIMARY KEY(secret_id, vid));"
    "CREATE TABLE IF NOT EXISTS stages("
    " secret_id INTEGER NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,"
    " stage TEXT NOT NULL, vid TEXT NOT NULL,"
    " PRIMARY KEY(secret_id, stage));"
    "CREATE TABLE IF NOT EXISTS tags("
    " secret_id INTEGER NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,"
    " k TEXT NOT NULL, v TEXT NOT NULL,"
    " PRIMARY KEY(secret_id, k));"
    /* A secret's stages (by version, then name) and tags (in insertion order), as every
     * ListSecrets entry reads them: index order, no temporary B-tree sort per entry. Added in
     * place like the list indexes. */
    "CREATE INDEX IF NOT EXISTS stages_by_vid ON stages(secret_id, vid, stage);"
    "CREATE INDEX IF NOT EXISTS tags_by_secret ON tags(secret_id);"
    /* Resource policies (PutResourcePolicy): stored and returned, never enforced. Added to
     * schema 1 in place, like the list indexes: an older binary ignores the table. */
    "CREATE TABLE IF NOT EXISTS policies("
    " secret_id INTEGER PRIMARY KEY REFERENCES secrets(id) ON DELETE CASCADE,"
    " policy TEXT NOT NULL);";

enum {
    Q_FIND_NAME,
    Q_FIND_ARN,
    Q_INSERT,
    Q_UPDATE,
    Q_DELETE,
    Q_EXPIRED,
    Q_TAGS,
    Q_BY_ID,
    Q_ALL_IDS,
    Q_SET_LIST,
    Q_TAG_SET,
    Q_TAG_DEL,
    Q_VER_ADD,
    Q_VER_READ,
    Q_VER_EXISTS,
    Q_VER_COUNT,
    Q_VER_PRUNE,
    Q_STAGE_GET,
    Q_STAGE_SET,
    Q_STAGE_DEL,
    Q_STAGES,
    Q_STAGES_VID,
    Q_VERSIONS,
    Q_POLICY_GET,
    Q_POLICY_SET,
    Q_POLICY_DEL,
    Q_BEGIN,
    Q_BEGIN_READ,
    Q_COMMIT,
    Q_ROLLBACK,
    Q__COUNT
};

#define SECRET_COLS                                                                                \
    "id, account, name, arn, description, kms_key_id, created_ms, changed_ms, accessed_ms,"        \
    " deleted_ms, deletion_ms"

static const char *const SQL[Q__COUNT] = {
    [Q_FIND_NAME] = "SELECT " SECRET_COLS " FROM secrets WHERE account = ?1 AND name = ?2",
    [Q_FIND_ARN] = "SELECT " SECRET_COLS " FROM secrets WHERE account = ?1 AND"
                   " (arn = ?2 OR partial_arn = ?2) ORDER BY arn = ?2 DESC LIMIT 1",
    [Q_INSERT] = "INSERT INTO secrets(account, name, arn, partial_arn, description, kms_key_id,"
                 " created_ms, changed_ms, accessed_ms, deleted_ms, deletion_ms, list_head,"
                 " list_tail) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [Q_UPDATE] = "UPDATE secrets SET description = ?2, kms_key_id = ?3, changed_ms = ?4,"
                 " accessed_ms = ?5, deleted_ms = ?6, deletion_ms = ?7, list_head = ?8"
                 " WHERE id = ?1",
    [Q_DELETE] = "DELETE FROM secrets WHERE id = ?1",
    [Q_EXPIRED] = "DELETE FROM secrets WHERE deleted_ms > 0 AND deletion_ms <= ?1",
    [Q_TAGS] = "SELECT k, v FROM tags WHERE secret_id = ?1 ORDER BY rowid",
    [Q_BY_ID] = "SELECT " SECRET_COLS ", list_head, list_tail FROM secrets WHERE id = ?1",
    [Q_ALL_IDS] = "SELECT id FROM secrets ORDER BY id",
    [Q_SET_LIST] = "UPDATE secrets SET list_head = ?2, list_tail = ?3 WHERE id = ?1",
    [Q_TAG_SET] = "INSERT INTO tags(secret_id, k, v) VALUES(?1, ?2, ?3)"
                  " ON CONFLICT(secret_id, k) DO UPDATE SET v = excluded.v",
    [Q_TAG_DEL] = "DELETE FROM tags WHERE secret_id = ?1 AND k = ?2",
    [Q_VER_ADD] = "INSERT INTO versions(secret_id, vid, created_ms, seq, is_binary, sealed)"
                  " VALUES(?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM versions"
                  " WHERE secret_id = ?1), ?4, ?5)",
    [Q_VER_READ] = "SELECT is_binary, sealed, created_ms FROM versions WHERE secret_id = ?1 AND"
                   " vid = ?2",
    [Q_VER_EXISTS] = "SELECT 1 FROM versions WHERE secret_id = ?1 AND vid = ?2",
    [Q_VER_COUNT] = "SELECT COUNT(*) FROM versions WHERE secret_id = ?1",
    [Q_VER_PRUNE] = "DELETE FROM versions WHERE rowid IN (SELECT v.rowid FROM versions v"
                    " WHERE v.secret_id = ?1 AND NOT EXISTS (SELECT 1 FROM stages s WHERE"
                    " s.secret_id = v.secret_id AND s.vid = v.vid) ORDER BY v.seq LIMIT ?2)",
    [Q_STAGE_GET] = "SELECT vid FROM stages WHERE secret_id = ?1 AND stage = ?2",
    [Q_STAGE_SET] = "INSERT INTO stages(secret_id, stage, vid) VALUES(?1, ?2, ?3)"
                    " ON CONFLICT(secret_id, stage) DO UPDATE SET vid = excluded.vid",
    [Q_STAGE_DEL] = "DELETE FROM stages WHERE secret_id = ?1 AND stage = ?2",
    [Q_STAGES] = "SELECT vid, stage FROM stages WHERE secret_id = ?1 ORDER BY vid, stage",
    [Q_STAGES_VID] = "SELECT vid, stage FROM stages WHERE secret_id = ?1 AND vid = ?2"
                     " ORDER BY stage",
    [Q_VERSIONS] = "SELECT vid, created_ms, seq, EXISTS (SELECT 1 FROM stages s WHERE"
                   " s.secret_id = v.secret_id AND s.vid = v.vid) FROM versions v"
                   " WHERE v.secret_id = ?1 AND v.seq < ?2 ORDER BY v.seq DESC",
    [Q_POLICY_GET] = "SELECT policy FROM policies WHERE secret_id = ?1",
    [Q_POLICY_SET] = "INSERT INTO policies(secret_id, policy) VALUES(?1, ?2)"
                     " ON CONFLICT(secret_id) DO UPDATE SET policy = excluded.policy",
    [Q_POLICY_DEL] = "DELETE FROM policies WHERE secret_id = ?1",
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_BEGIN_READ] = "BEGIN DEFERRED",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
};

struct cache_store {
    sqlite3 *db;
    kb_secret *key;
    kb_secret *token_key;
    sqlite3_stmt *q[Q__COUNT];
    /* The list statements, one per (sort, descending, resuming, including deleted, what is
     * read: cache_list_read): prepared on first use, like q. */
    sqlite3_stmt *lq[4][2][2][2][3];
    /* Secrets whose tags or stages the open transaction changed: their list_tail is rendered
     * again before COMMIT (cache_store_commit), once per secret however many rows changed. */
    int64_t *dirty;
    size_t n_dirty, cap_dirty;
    /* Scratch for rendering list_head and list_tail. */
    kb_dbuf render;
    /* Plaintext of the last cache_store_version_peek (locked; grown on demand, wiped after
     * use). One locked mapping for the store's lifetime instead of one per read. */
    kb_secret *scratch;
    size_t scratch_used;
};

static kb_err db_err(cache_store *st, const char *what)
{
    kb_log(KB_LOG_ERROR, "store_error", "op", what, "sqlite", sqlite3_errmsg(st->db), NULL);
    return KB_ERR_DB;
}

/* A cached prepared statement, reset and unbound, ready for binding. */
static kb_err stmt(cache_store *st, int i, sqlite3_stmt **out)
{
    if (st->q[i] == NULL) {
        if (sqlite3_prepare_v3(st->db, SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i], NULL) !=
            SQLITE_OK)
            return db_err(st, "prepare");
    } else {
        sqlite3_reset(st->q[i]);
        sqlite3_clear_bindings(st->q[i]);
    }
    *out = st->q[i];
    return KB_OK;
}

static void done(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

static kb_err bind_text(sqlite3_stmt *s, int i, const char *v)
{
    int r = v ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
    return r == SQLITE_OK ? KB_OK : KB_ERR_DB;
}

static kb_err bind_i64(sqlite3_stmt *s, int i, int64_t v)
{
    return sqlite3_bind_int64(s, i, v) == SQLITE_OK ? KB_OK : KB_ERR_DB;
}

/* Run a statement that returns no rows. */
static kb_err exec_step(cache_store *st, sqlite3_stmt *s, const char *what)
{
    int r = sqlite3_step(s);
    kb_err rc = KB_OK;
    if (r == SQLITE_CONSTRAINT)
        rc = KB_ERR_EXISTS;
    else if (r != SQLITE_DONE && r != SQLITE_ROW)
        rc = db_err(st, what);
    done(s);
    return rc;
}

static kb_err migrate_1_to_2(cache_store *st);
static void copy_col(sqlite3_stmt *s, int col, char *dst, size_t cap, int *present);
static kb_err store_texts(cache_store *st, int64_t id);

kb_err cache_store_open(const char *path, kb_secret *key, cache_store **out)
{
    cache_store *st = NULL;
    kb_err rc = KB_OK;
    char *errmsg = NULL;

    if (out)
        *out = NULL;
    KB_ENSURE_OUT(rc, path && key && out, KB_ERR_NULL);
    st = calloc(1, sizeof(*st));
    KB_ENSURE_OUT(rc, st != NULL, KB_ERR_NOMEM);
    st->key = key;
    key = NULL;
    kb_dbuf_init(&st->render, 2 * CACHE_LIST_TEXT_MAX);
    KB_GUARD_OUT(rc, cache_key_derive(st->key, "keybridge-cache next-token v1", &st->token_key));
    if (sqlite3_open_v2(path, &st->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        kb_log(KB_LOG_ERROR, "store_open_failed", "path", path, NULL);
        rc = KB_ERR_DB;
        goto out;
    }
    sqlite3_busy_timeout(st->db, 5000);
    /* WAL + synchronous=FULL: a COMMIT has reached the disk before we answer the client.
     * locking_mode=EXCLUSIVE, set before the first WAL access: the one connection keeps its lock
     * and SQLite keeps the WAL index in heap memory instead of a -shm file, so a transaction costs
     * no fcntl lock round trips (they were ~12 % of a GetSecretValue in the store), and a second
     * process cannot open the same store while this one runs: it fails at start with "cannot
     * open the store" instead of sharing it
     * (https://www.sqlite.org/pragma.html#pragma_locking_mode,
     * https://www.sqlite.org/wal.html#noshm). Durability is unchanged. */
    if (sqlite3_exec(st->db,
                     "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=WAL;"
                     " PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON;",
                     NULL, NULL, &errmsg) != SQLITE_OK ||
        sqlite3_exec(st->db, SCHEMA, NULL, NULL, &errmsg) != SQLITE_OK) {
        kb_log(KB_LOG_ERROR, "store_schema_failed", "sqlite", errmsg ? errmsg : "?", NULL);
        rc = KB_ERR_DB;
        goto out;
    }
    {
        sqlite3_stmt *s = NULL;
        char version[8] = "";
        if (sqlite3_prepare_v2(st->db, "SELECT v FROM meta WHERE k = 'schema'", -1, &s, NULL) ==
                SQLITE_OK &&
            sqlite3_step(s) == SQLITE_ROW)
            copy_col(s, 0, version, sizeof(version), NULL);
        sqlite3_finalize(s);
        /* 1: before the ListSecrets texts; anything else is a newer binary's (refused, as an
         * older binary refuses schema 2: it would not keep the texts up to date). */
        if (strcmp(version, "1") == 0)
            KB_GUARD_OUT(rc, migrate_1_to_2(st));
        else
            KB_ENSURE_OUT(rc, strcmp(version, SCHEMA_VERSION) == 0, KB_ERR_SCHEMA);
    }
    *out = st;
    st = NULL;
out:
    sqlite3_free(errmsg);
    kb_secret_free(key);
    cache_store_close(st);
    return rc;
}

void cache_store_close(cache_store *st)
{
    if (st == NULL)
        return;
    for (int i = 0; i < Q__COUNT; i++)
        sqlite3_finalize(st->q[i]);
    for (size_t i = 0; i < sizeof(st->lq) / sizeof(st->lq[0][0][0][0][0]); i++)
        sqlite3_finalize((&st->lq[0][0][0][0][0])[i]);
    sqlite3_close(st->db);
    kb_dbuf_free(&st->render);
    free(st->dirty);
    kb_secret_free(st->key);
    kb_secret_free(st->token_key);
    kb_secret_free(st->scratch);
    free(st);
}

const kb_secret *cache_store_token_key(const cache_store *st)
{
    return st->token_key;
}

kb_err cache_store_begin(cache_store *st)
{
    sqlite3_stmt *s;
    KB_GUARD(stmt(st, Q_BEGIN, &s));
    return exec_step(st, s, "begin") == KB_OK ? KB_OK : KB_ERR_DB;
}

kb_err cache_store_begin_read(cache_store *st)
{
    sqlite3_stmt *s;
    KB_GUARD(stmt(st, Q_BEGIN_READ, &s));
    return exec_step(st, s, "begin_read") == KB_OK ? KB_OK : KB_ERR_DB;
}

kb_err cache_store_commit(cache_store *st)
{
    sqlite3_stmt *s;
    kb_err rc;
    /* The ListSecrets texts of the secrets whose tags or stages changed, in the same
     * transaction: committed together with the change or not at all. */
    for (size_t i = 0; i < st->n_dirty; i++) {
        if (store_texts(st, st->dirty[i]) != KB_OK) {
            cache_store_rollback(st);
            return KB_ERR_DB;
        }
    }
    st->n_dirty = 0;
    KB_GUARD(stmt(st, Q_COMMIT, &s));
    rc = exec_step(st, s, "commit");
    if (rc != KB_OK) {
        cache_store_rollback(st);
        return KB_ERR_DB;
    }
    return KB_OK;
}

void cache_store_rollback(cache_store *st)
{
    sqlite3_stmt *s;
    st->n_dirty = 0;
    if (!sqlite3_get_autocommit(st->db) && stmt(st, Q_ROLLBACK, &s) == KB_OK)
        (void)exec_step(st, s, "rollback");
}

static void copy_col(sqlite3_stmt *s, int col, char *dst, size_t cap, int *present)
{
    const unsigned char *v = sqlite3_column_text(s, col);
    size_t n = 0;
    if (present)
        *present = v != NULL;
    /* As snprintf("%s") would (up to a NUL, truncated to cap - 1), without its cost: a
     * ListSecrets page copies ~1,000 columns. */
    if (v != NULL) {
        size_t bytes = (size_t)sqlite3_column_bytes(s, col);
        n = strnlen((const char *)v, bytes < cap - 1 ? bytes : cap - 1);
    }
    if (n)
        memcpy(dst, v, n);
    dst[n] = '\0';
}

static void row_to_secret(sqlite3_stmt *s, cache_secret *o)
{
    /* Every member is set (copy_col terminates each text): no memset of the ~6 KB struct, which
     * a ListSecrets page would pay per row. */
    o->id = sqlite3_column_int64(s, 0);
    copy_col(s, 1, o->account, sizeof(o->account), NULL);
    copy_col(s, 2, o->name, sizeof(o->name), NULL);
    copy_col(s, 3, o->arn, sizeof(o->arn), NULL);
    copy_col(s, 4, o->description, sizeof(o->description), &o->has_description);
    copy_col(s, 5, o->kms_key_id, sizeof(o->kms_key_id), &o->has_kms_key_id);
    o->created_ms = sqlite3_column_int64(s, 6);
    o->changed_ms = sqlite3_column_int64(s, 7);
    o->accessed_ms = sqlite3_column_int64(s, 8);
    o->deleted_ms = sqlite3_column_int64(s, 9);
    o->deletion_ms = sqlite3_column_int64(s, 10);
}

/* ---------------------------------------------------------------- ListSecrets texts */

/* Bytes of a text column as copy_col would keep them (up to a NUL, at most cap - 1). */
static size_t col_text(sqlite3_stmt *s, int col, size_t cap, const char **out)
{
    const char *v = (const char *)sqlite3_column_text(s, col);
    size_t bytes;
    *out = v ? v : "";
    if (v == NULL)
        return 0;
    bytes = (size_t)sqlite3_column_bytes(s, col);
    return strnlen(v, bytes < cap - 1 ? bytes : cap - 1);
}

static kb_err put_text(kb_dbuf *b, const char *s)
{
    return kb_json_put_str(b, s, strlen(s));
}

/* The tail of a secret without tags or stages (a new one), up to CreatedDate. */
#define EMPTY_TAIL "\"Tags\":[],\"SecretVersionsToStages\":{}"

/* {"ARN":…,"Name":…[,"Description":…][,"KmsKeyId":…],"LastChangedDate":…[,"LastAccessedDate":…]
 * [,"DeletedDate":…]: DescribeSecret's members up to its tags, from the row alone; strings
 * escaped as jansson escapes them (kb_json_put_str), dates as kb_json_put_ms writes them. */
static kb_err render_head(const cache_secret *s, kb_dbuf *b)
{
    KB_GUARD(kb_dbuf_addstr(b, "{\"ARN\":"));
    KB_GUARD(put_text(b, s->arn));
    KB_GUARD(kb_dbuf_addstr(b, ",\"Name\":"));
    KB_GUARD(put_text(b, s->name));
    if (s->has_description) {
        KB_GUARD(kb_dbuf_addstr(b, ",\"Description\":"));
        KB_GUARD(put_text(b, s->description));
    }
    if (s->has_kms_key_id) {
        KB_GUARD(kb_dbuf_addstr(b, ",\"KmsKeyId\":"));
        KB_GUARD(put_text(b, s->kms_key_id));
    }
    KB_GUARD(kb_dbuf_addstr(b, ",\"LastChangedDate\":"));
    KB_GUARD(kb_json_put_ms(b, s->changed_ms));
    if (s->accessed_ms) {
        KB_GUARD(kb_dbuf_addstr(b, ",\"LastAccessedDate\":"));
        KB_GUARD(kb_json_put_ms(b, s->accessed_ms));
    }
    if (s->deleted_ms) {
        KB_GUARD(kb_dbuf_addstr(b, ",\"DeletedDate\":"));
        KB_GUARD(kb_json_put_ms(b, s->deleted_ms));
    }
    return KB_OK;
}

/* The end of the tail: ,"CreatedDate":…} */
static kb_err render_created(const cache_secret *s, kb_dbuf *b)
{
    KB_GUARD(kb_dbuf_addstr(b, ",\"CreatedDate\":"));
    KB_GUARD(kb_json_put_ms(b, s->created_ms));
    return kb_dbuf_addc(b, '}');
}

/* "Tags":[{"Key":…,"Value":…},…: in insertion order, texts cut as cache_store_tags_get cuts
 * them, so they equal DescribeSecret's Tags. */
static kb_err render_tags(cache_store *st, int64_t id, kb_dbuf *b)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r, n = 0;
    KB_GUARD(kb_dbuf_addstr(b, "\"Tags\":["));
    KB_GUARD(stmt(st, Q_TAGS, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        const char *k, *v;
        size_t kl = col_text(s, 0, CACHE_TAG_KEY_MAX + 1, &k);
        size_t vl = col_text(s, 1, CACHE_TAG_VALUE_MAX + 1, &v);
        KB_ENSURE_OUT(rc, n < CACHE_TAGS_MAX, KB_ERR_INTERNAL); /* as cache_store_tags_get */
        KB_GUARD_OUT(rc, kb_dbuf_addstr(b, n++ > 0 ? ",{\"Key\":" : "{\"Key\":"));
        KB_GUARD_OUT(rc, kb_json_put_str(b, k, kl));
        KB_GUARD_OUT(rc, kb_dbuf_addstr(b, ",\"Value\":"));
        KB_GUARD_OUT(rc, kb_json_put_str(b, v, vl));
        KB_GUARD_OUT(rc, kb_dbuf_addc(b, '}'));
    }
    if (r != SQLITE_DONE)
        rc = db_err(st, "render_tags");
out:
    done(s);
    return rc;
}

/* ],"SecretVersionsToStages":{"vid":["stage",…],…}: by version, then stage (the order of
 * cache_store_stages, which DescribeSecret's map is built in). */
static kb_err render_stages(cache_store *st, int64_t id, kb_dbuf *b)
{
    char vid[CACHE_VERSION_ID_MAX + 1];
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r, first = 1;
    KB_GUARD(kb_dbuf_addstr(b, "],\"SecretVersionsToStages\":{"));
    KB_GUARD(stmt(st, Q_STAGES, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(s, 0);
        const char *stage = (const char *)sqlite3_column_text(s, 1);
        size_t n;
        v = v ? v : "";
        stage = stage ? stage : "";
        if (!first && strcmp(vid, v) == 0) {
            KB_GUARD_OUT(rc, kb_dbuf_addc(b, ','));
            KB_GUARD_OUT(rc, put_text(b, stage));
            continue;
        }
        n = strlen(v);
        KB_ENSURE_OUT(rc, n < sizeof(vid), KB_ERR_INTERNAL);
        memcpy(vid, v, n + 1);
        KB_GUARD_OUT(rc, kb_dbuf_addstr(b, first ? "" : "],"));
        KB_GUARD_OUT(rc, put_text(b, vid));
        KB_GUARD_OUT(rc, kb_dbuf_addstr(b, ":["));
        KB_GUARD_OUT(rc, put_text(b, stage));
        first = 0;
    }
    if (r != SQLITE_DONE) {
        rc = db_err(st, "render_stages");
        goto out;
    }
    KB_GUARD_OUT(rc, kb_dbuf_addstr(b, first ? "}" : "]}"));
out:
    done(s);
    return rc;
}

static kb_err render_tail(cache_store *st, const cache_secret *sec, kb_dbuf *b)
{
    KB_GUARD(render_tags(st, sec->id, b));
    KB_GUARD(render_stages(st, sec->id, b));
    return render_created(sec, b);
}

static kb_err bind_part(sqlite3_stmt *s, int i, const kb_dbuf *b, size_t at, size_t end)
{
    /* end <= b->len <= CACHE_LIST_TEXT_MAX < INT_MAX */
    return sqlite3_bind_text(s, i, end > at ? (const char *)b->p + at : "", (int)(end - at),
                             SQLITE_STATIC) == SQLITE_OK
               ? KB_OK
               : KB_ERR_DB;
}

/* Render secret id's texts from its row, tags and stages into b: head is b[0, *head_len), tail
 * the rest; sec is scratch for the row. same (if not NULL) tells whether they equal the stored
 * ones. KB_ERR_NOT_FOUND when there is no such secret. */
static kb_err render_texts(cache_store *st, int64_t id, cache_secret *sec, kb_dbuf *b,
                           size_t *head_len, int *same)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r;
    KB_GUARD(stmt(st, Q_BY_ID, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    r = sqlite3_step(s);
    if (r != SQLITE_ROW) {
        rc = r == SQLITE_DONE ? KB_ERR_NOT_FOUND : db_err(st, "render");
        goto out;
    }
    row_to_secret(s, sec);
    kb_dbuf_reset(b);
    KB_GUARD_OUT(rc, render_head(sec, b));
    *head_len = b->len;
    KB_GUARD_OUT(rc, render_tail(st, sec, b));
    if (same) {
        const void *h = sqlite3_column_blob(s, 11), *t = sqlite3_column_blob(s, 12);
        size_t hl = (size_t)sqlite3_column_bytes(s, 11), tl = (size_t)sqlite3_column_bytes(s, 12);
        *same = hl == *head_len && tl == b->len - *head_len &&
                (hl == 0 || memcmp(h, b->p, hl) == 0) && (tl == 0 || memcmp(t, b->p + hl, tl) == 0);
    }
out:
    done(s);
    return rc;
}

/* Render secret id's texts again and store them (no error when the secret is gone). */
static kb_err store_texts(cache_store *st, int64_t id)
{
    sqlite3_stmt *s;
    size_t hl = 0;
    cache_secret *sec = malloc(sizeof(*sec));
    kb_err rc;
    KB_ENSURE(sec != NULL, KB_ERR_NOMEM);
    rc = render_texts(st, id, sec, &st->render, &hl, NULL);
    free(sec);
    if (rc == KB_ERR_NOT_FOUND)
        return KB_OK;
    KB_GUARD(rc);
    KB_GUARD(stmt(st, Q_SET_LIST, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_part(s, 2, &st->render, 0, hl));
    KB_GUARD_OUT(rc, bind_part(s, 3, &st->render, hl, st->render.len));
    return exec_step(st, s, "set_list");
out:
    done(s);
    return rc;
}

/* Secret id's tags or stages changed: inside a transaction, its texts are rendered at COMMIT
 * (once, whatever else the transaction changes); outside one, now. */
static kb_err mark_dirty(cache_store *st, int64_t id)
{
    if (sqlite3_get_autocommit(st->db))
        return store_texts(st, id);
    for (size_t i = 0; i < st->n_dirty; i++) {
        if (st->dirty[i] == id)
            return KB_OK;
    }
    KB_GUARD(kb_grow((void **)&st->dirty, &st->cap_dirty, st->n_dirty, sizeof(*st->dirty)));
    st->dirty[st->n_dirty++] = id;
    return KB_OK;
}

/* Every secret's id, ascending (malloc'd; *n 0 and *out NULL when there is none). */
static kb_err all_ids(cache_store *st, int64_t **out, size_t *n)
{
    sqlite3_stmt *s;
    int64_t *ids = NULL;
    size_t cap = 0, cnt = 0;
    kb_err rc = KB_OK;
    int r;
    *out = NULL;
    *n = 0;
    KB_GUARD(stmt(st, Q_ALL_IDS, &s));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        KB_GUARD_OUT(rc, kb_grow((void **)&ids, &cap, cnt, sizeof(*ids)));
        ids[cnt++] = sqlite3_column_int64(s, 0);
    }
    if (r != SQLITE_DONE) {
        rc = db_err(st, "all_ids");
        goto out;
    }
    *out = ids;
    *n = cnt;
    ids = NULL;
out:
    done(s);
    free(ids);
    return rc;
}

/* Schema 1 -> 2: add the ListSecrets texts and render them for every secret, in one
 * transaction (a failure leaves the store at schema 1, as it was). */
static kb_err migrate_1_to_2(cache_store *st)
{
    int64_t *ids = NULL;
    size_t n = 0;
    char *errmsg = NULL, count[24];
    kb_err rc = KB_OK;

    if (sqlite3_exec(st->db,
                     "BEGIN IMMEDIATE;"
                     " ALTER TABLE secrets ADD COLUMN list_head TEXT NOT NULL DEFAULT '';"
                     " ALTER TABLE secrets ADD COLUMN list_tail TEXT NOT NULL DEFAULT '';",
                     NULL, NULL, &errmsg) != SQLITE_OK) {
        kb_log(KB_LOG_ERROR, "store_migrate_failed", "sqlite", errmsg ? errmsg : "?", NULL);
        rc = KB_ERR_DB;
        goto out;
    }
    KB_GUARD_OUT(rc, all_ids(st, &ids, &n));
    for (size_t i = 0; i < n; i++)
        KB_GUARD_OUT(rc, store_texts(st, ids[i]));
    if (sqlite3_exec(st->db, "UPDATE meta SET v = '" SCHEMA_VERSION "' WHERE k = 'schema'; COMMIT;",
                     NULL, NULL, &errmsg) != SQLITE_OK) {
        kb_log(KB_LOG_ERROR, "store_migrate_failed", "sqlite", errmsg ? errmsg : "?", NULL);
        rc = KB_ERR_DB;
        goto out;
    }
    snprintf(count, sizeof(count), "%zu", n);
    kb_log(KB_LOG_INFO, "store_migrated", "from", "1", "to", SCHEMA_VERSION, "secrets", count,
           NULL);
out:
    if (rc != KB_OK)
        cache_store_rollback(st);
    sqlite3_free(errmsg);
    free(ids);
    return rc;
}

kb_err cache_store_check_lists(cache_store *st, size_t *stale)
{
    int64_t *ids = NULL;
    size_t n = 0;
    kb_dbuf b;
    cache_secret *sec = NULL;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(stale);
    *stale = 0;
    KB_GUARD(all_ids(st, &ids, &n));
    kb_dbuf_init(&b, 2 * CACHE_LIST_TEXT_MAX);
    sec = malloc(sizeof(*sec));
    KB_ENSURE_OUT(rc, sec != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < n; i++) {
        size_t hl = 0;
        int same = 0;
        KB_GUARD_OUT(rc, render_texts(st, ids[i], sec, &b, &hl, &same));
        if (!same)
            (*stale)++;
    }
out:
    free(sec);
    kb_dbuf_free(&b);
    free(ids);
    return rc;
}

static kb_err find_one(cache_store *st, int q, const char *account, const char *key,
                       cache_secret *out)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r;
    KB_ENSURE_REF(account);
    KB_ENSURE_REF(key);
    KB_ENSURE_REF(out);
    KB_GUARD(stmt(st, q, &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, account));
    KB_GUARD_OUT(rc, bind_text(s, 2, key));
    r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        row_to_secret(s, out);
    else if (r == SQLITE_DONE)
        rc = KB_ERR_NOT_FOUND;
    else
        rc = db_err(st, "find");
out:
    done(s);
    return rc;
}

kb_err cache_store_find_name(cache_store *st, const char *account, const char *name,
                             cache_secret *out)
{
    return find_one(st, Q_FIND_NAME, account, name, out);
}

kb_err cache_store_find(cache_store *st, const char *account, const char *secret_id,
                        cache_secret *out)
{
    KB_ENSURE_REF(secret_id);
    /* Names cannot contain ':' (the name pattern), so "arn:" can only be an ARN. */
    if (strncmp(secret_id, "arn:", 4) == 0)
        return find_one(st, Q_FIND_ARN, account, secret_id, out);
    return find_one(st, Q_FIND_NAME, account, secret_id, out);
}

kb_err cache_store_secret_insert(cache_store *st, cache_secret *sec)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    char partial[CACHE_ARN_MAX + 1];
    size_t n = strlen(sec->arn), hl;

    /* The partial ARN is the ARN without "-" and the 6 random characters. */
    KB_ENSURE(n > 7 && sec->arn[n - 7] == '-', KB_ERR_INTERNAL);
    snprintf(partial, sizeof(partial), "%.*s", (int)(n - 7), sec->arn);
    KB_GUARD(stmt(st, Q_INSERT, &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, sec->account));
    KB_GUARD_OUT(rc, bind_text(s, 2, sec->name));
    KB_GUARD_OUT(rc, bind_text(s, 3, sec->arn));
    KB_GUARD_OUT(rc, bind_text(s, 4, partial));
    KB_GUARD_OUT(rc, bind_text(s, 5, sec->has_description ? sec->description : NULL));
    KB_GUARD_OUT(rc, bind_text(s, 6, sec->has_kms_key_id ? sec->kms_key_id : NULL));
    KB_GUARD_OUT(rc, bind_i64(s, 7, sec->created_ms));
    KB_GUARD_OUT(rc, bind_i64(s, 8, sec->changed_ms));
    KB_GUARD_OUT(rc, bind_i64(s, 9, sec->accessed_ms));
    KB_GUARD_OUT(rc, bind_i64(s, 10, sec->deleted_ms));
    KB_GUARD_OUT(rc, bind_i64(s, 11, sec->deletion_ms));
    kb_dbuf_reset(&st->render);
    KB_GUARD_OUT(rc, render_head(sec, &st->render));
    hl = st->render.len;
    KB_GUARD_OUT(rc, kb_dbuf_addstr(&st->render, EMPTY_TAIL));
    KB_GUARD_OUT(rc, render_created(sec, &st->render));
    KB_GUARD_OUT(rc, bind_part(s, 12, &st->render, 0, hl));
    KB_GUARD_OUT(rc, bind_part(s, 13, &st->render, hl, st->render.len));
    rc = exec_step(st, s, "insert");
    if (rc == KB_OK)
        sec->id = sqlite3_last_insert_rowid(st->db);
    return rc;
out:
    done(s);
    return rc;
}

kb_err cache_store_secret_update(cache_store *st, const cache_secret *sec)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    KB_GUARD(stmt(st, Q_UPDATE, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, sec->id));
    KB_GUARD_OUT(rc, bind_text(s, 2, sec->has_description ? sec->description : NULL));
    KB_GUARD_OUT(rc, bind_text(s, 3, sec->has_kms_key_id ? sec->kms_key_id : NULL));
    KB_GUARD_OUT(rc, bind_i64(s, 4, sec->changed_ms));
    KB_GUARD_OUT(rc, bind_i64(s, 5, sec->accessed_ms));
    KB_GUARD_OUT(rc, bind_i64(s, 6, sec->deleted_ms));
    KB_GUARD_OUT(rc, bind_i64(s, 7, sec->deletion_ms));
    kb_dbuf_reset(&st->render);
    KB_GUARD_OUT(rc, render_head(sec, &st->render));
    KB_GUARD_OUT(rc, bind_part(s, 8, &st->render, 0, st->render.len));
    return exec_step(st, s, "update");
out:
    done(s);
    return rc;
}

static kb_err exec_id(cache_store *st, int q, int64_t id, const char *what)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    KB_GUARD(stmt(st, q, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    return exec_step(st, s, what);
out:
    done(s);
    return rc;
}

kb_err cache_store_secret_delete(cache_store *st, int64_t id)
{
    /* foreign_keys=ON: versions, stages and tags go with the secret (ON DELETE CASCADE). */
    return exec_id(st, Q_DELETE, id, "delete");
}

kb_err cache_store_purge_expired(cache_store *st, int64_t now_ms)
{
    return exec_id(st, Q_EXPIRED, now_ms, "purge");
}

/* A listed row with its texts (CACHE_LIST_TEXTS: LIST_COLS; CACHE_LIST_KEYS: id, the sort
 * column, the texts): what ListSecrets uses of the secret. Every member of o is set. */
#define LIST_COLS                                                                                  \
    "id, name, description, created_ms, changed_ms, accessed_ms, deleted_ms, list_head, list_tail"

static void row_to_listed(sqlite3_stmt *s, cache_list_read what, cache_sort sort, cache_secret *o,
                          cache_list_text *t)
{
    int tc = what == CACHE_LIST_TEXTS ? 7 : 2;
    o->id = sqlite3_column_int64(s, 0);
    o->account[0] = o->arn[0] = o->kms_key_id[0] = o->name[0] = o->description[0] = '\0';
    o->has_kms_key_id = o->has_description = 0;
    o->created_ms = o->changed_ms = o->accessed_ms = o->deleted_ms = o->deletion_ms = 0;
    if (what == CACHE_LIST_TEXTS) {
        copy_col(s, 1, o->name, sizeof(o->name), NULL);
        copy_col(s, 2, o->description, sizeof(o->description), &o->has_description);
        o->created_ms = sqlite3_column_int64(s, 3);
        o->changed_ms = sqlite3_column_int64(s, 4);
        o->accessed_ms = sqlite3_column_int64(s, 5);
        o->deleted_ms = sqlite3_column_int64(s, 6);
    } else if (sort == CACHE_SORT_NAME) {
        copy_col(s, 1, o->name, sizeof(o->name), NULL);
    } else {
        int64_t v = sqlite3_column_int64(s, 1);
        if (sort == CACHE_SORT_CREATED)
            o->created_ms = v;
        else if (sort == CACHE_SORT_CHANGED)
            o->changed_ms = v;
        else
            o->accessed_ms = v;
    }
    t->head = (const char *)sqlite3_column_blob(s, tc);
    t->head_len = (size_t)sqlite3_column_bytes(s, tc);
    t->tail = (const char *)sqlite3_column_blob(s, tc + 1);
    t->tail_len = (size_t)sqlite3_column_bytes(s, tc + 1);
}

kb_err cache_store_list(cache_store *st, const char *account, int include_deleted, cache_sort sort,
                        int descending, const cache_list_after *after, cache_list_read what,
                        cache_store_visit_fn fn, void *arg)
{
    static const char *const cols[] = {"created_ms", "changed_ms", "accessed_ms", "name"};
    char sql[512], keys[64];
    sqlite3_stmt *s = NULL;
    kb_err rc = KB_OK;
    int r, resume = after != NULL && after->id != 0;
    cache_secret *sec = NULL;

    KB_ENSURE_REF(account);
    KB_ENSURE_REF(fn);
    KB_ENSURE((unsigned)sort < KB_ARRAY_LEN(cols), KB_ERR_INVALID);
    KB_ENSURE((unsigned)what <= CACHE_LIST_KEYS, KB_ERR_INVALID);
    KB_ENSURE(!resume || sort != CACHE_SORT_NAME || after->text != NULL, KB_ERR_NULL);
    /* Cached per variant: the callback runs other statements (never a list) while it is open. */
    s = st->lq[sort][descending != 0][resume][include_deleted != 0][what];
    if (s == NULL) {
        /* Row-value comparison (SQLite >= 3.15) resumes the index range scan right after the
         * last key returned (https://www.sqlite.org/rowvalue.html#scrolling_window_queries). */
        snprintf(keys, sizeof(keys), "id, %s, list_head, list_tail", cols[sort]);
        snprintf(sql, sizeof(sql),
                 "SELECT %s FROM secrets WHERE account = ?1%s%s%s%s ORDER BY %s %s, id %s",
                 what == CACHE_LIST_SECRETS ? SECRET_COLS
                 : what == CACHE_LIST_TEXTS ? LIST_COLS
                                            : keys,
                 include_deleted ? "" : " AND deleted_ms = 0", resume ? " AND (" : "",
                 resume ? cols[sort] : "",
                 resume ? (descending ? ", id) < (?2, ?3)" : ", id) > (?2, ?3)") : "", cols[sort],
                 descending ? "DESC" : "ASC", descending ? "DESC" : "ASC");
        if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL) != SQLITE_OK)
            return db_err(st, "list");
        st->lq[sort][descending != 0][resume][include_deleted != 0][what] = s;
    }
    sec = malloc(sizeof(*sec)); /* every member is set by row_to_secret and row_to_listed */
    KB_ENSURE_OUT(rc, sec != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, bind_text(s, 1, account));
    if (resume) {
        if (sort == CACHE_SORT_NAME)
            KB_GUARD_OUT(rc, bind_text(s, 2, after->text));
        else
            KB_GUARD_OUT(rc, bind_i64(s, 2, after->num));
        KB_GUARD_OUT(rc, bind_i64(s, 3, after->id));
    }
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        cache_list_text t;
        int v;
        if (what == CACHE_LIST_SECRETS)
            row_to_secret(s, sec);
        else
            row_to_listed(s, what, sort, sec, &t);
        v = fn(arg, sec, what == CACHE_LIST_SECRETS ? NULL : &t);
        KB_ENSURE_OUT(rc, v >= 0, KB_ERR_INTERNAL);
        if (v > 0)
            goto out;
    }
    if (r != SQLITE_DONE)
        rc = db_err(st, "list");
out:
    free(sec);
    done(s);
    return rc;
}

kb_err cache_store_tags_get(cache_store *st, int64_t id, cache_tag_list *out)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r;
    out->n = 0;
    KB_GUARD(stmt(st, Q_TAGS, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        KB_ENSURE_OUT(rc, out->n < CACHE_TAGS_MAX, KB_ERR_INTERNAL);
        copy_col(s, 0, out->t[out->n].key, sizeof(out->t[0].key), NULL);
        copy_col(s, 1, out->t[out->n].value, sizeof(out->t[0].value), NULL);
        out->n++;
    }
    if (r != SQLITE_DONE)
        rc = db_err(st, "tags");
out:
    done(s);
    return rc;
}

kb_err cache_store_tag_set(cache_store *st, int64_t id, const char *key, const char *value)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    KB_GUARD(stmt(st, Q_TAG_SET, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_text(s, 2, key));
    KB_GUARD_OUT(rc, bind_text(s, 3, value));
    KB_GUARD(exec_step(st, s, "tag_set"));
    return mark_dirty(st, id);
out:
    done(s);
    return rc;
}

kb_err cache_store_tag_remove(cache_store *st, int64_t id, const char *key)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    KB_GUARD(stmt(st, Q_TAG_DEL, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_text(s, 2, key));
    KB_GUARD(exec_step(st, s, "tag_remove"));
    return mark_dirty(st, id);
out:
    done(s);
    return rc;
}

kb_err cache_store_version_add(cache_store *st, const cache_secret *sec, const char *vid,
                               int binary, const uint8_t *value, size_t len, int64_t now_ms)
{
    sqlite3_stmt *s = NULL;
    kb_dbuf sealed;
    kb_err rc = KB_OK;

    kb_dbuf_init(&sealed, len + CACHE_SEAL_OVERHEAD);
    KB_GUARD_OUT(rc, cache_seal(st->key, sec->account, sec->arn, vid, value, len, &sealed));
    KB_GUARD_OUT(rc, stmt(st, Q_VER_ADD, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, sec->id));
    KB_GUARD_OUT(rc, bind_text(s, 2, vid));
    KB_GUARD_OUT(rc, bind_i64(s, 3, now_ms));
    KB_GUARD_OUT(rc, bind_i64(s, 4, binary ? 1 : 0));
    KB_ENSURE_OUT(rc,
                  sqlite3_bind_blob(s, 5, sealed.p, (int)sealed.len, SQLITE_STATIC) == SQLITE_OK,
                  KB_ERR_DB);
    rc = exec_step(st, s, "version_add");
    s = NULL;
out:
    if (s)
        done(s);
    kb_dbuf_free(&sealed);
    return rc;
}

kb_err cache_store_version_read(cache_store *st, const cache_secret *sec, const char *vid,
                                int *binary, kb_secret **value, int64_t *created_ms)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r;
    KB_GUARD(stmt(st, Q_VER_READ, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, sec->id));
    KB_GUARD_OUT(rc, bind_text(s, 2, vid));
    r = sqlite3_step(s);
    if (r == SQLITE_DONE) {
        rc = KB_ERR_NOT_FOUND;
    } else if (r != SQLITE_ROW) {
        rc = db_err(st, "version_read");
    } else {
        const uint8_t *blob = sqlite3_column_blob(s, 1);
        size_t n = (size_t)sqlite3_column_bytes(s, 1);
        if (binary)
            *binary = sqlite3_column_int(s, 0) != 0;
        if (created_ms)
            *created_ms = sqlite3_column_int64(s, 2);
        if (value) {
            KB_ENSURE_OUT(rc, blob != NULL, KB_ERR_INTEGRITY);
            rc = cache_unseal(st->key, sec->account, sec->arn, vid, blob, n, value);
        }
    }
out:
    done(s);
    return rc;
}

/* Smallest scratch buffer: the largest SecretString/SecretBinary the API accepts is 64 KiB. */
#define SCRATCH_MIN ((size_t)65536)

kb_err cache_store_version_peek(cache_store *st, const cache_secret *sec, const char *vid,
                                int *binary, const uint8_t **value, size_t *len,
                                int64_t *created_ms)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r;
    KB_ENSURE_REF(value);
    KB_ENSURE_REF(len);
    *value = NULL;
    *len = 0;
    cache_store_peek_release(st);
    KB_GUARD(stmt(st, Q_VER_READ, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, sec->id));
    KB_GUARD_OUT(rc, bind_text(s, 2, vid));
    r = sqlite3_step(s);
    if (r == SQLITE_DONE) {
        rc = KB_ERR_NOT_FOUND;
    } else if (r != SQLITE_ROW) {
        rc = db_err(st, "version_read");
    } else {
        const uint8_t *blob = sqlite3_column_blob(s, 1);
        size_t n = (size_t)sqlite3_column_bytes(s, 1);
        KB_ENSURE_OUT(rc, blob != NULL && n >= CACHE_SEAL_OVERHEAD, KB_ERR_INTEGRITY);
        if (st->scratch == NULL || kb_secret_len(st->scratch) < n - CACHE_SEAL_OVERHEAD) {
            size_t want =
                n - CACHE_SEAL_OVERHEAD > SCRATCH_MIN ? n - CACHE_SEAL_OVERHEAD : SCRATCH_MIN;
            kb_secret_free(st->scratch);
            st->scratch = NULL;
            KB_GUARD_OUT(rc, kb_secret_new(want, &st->scratch));
        }
        KB_GUARD_OUT(rc,
                     cache_unseal_to(st->key, sec->account, sec->arn, vid, blob, n,
                                     kb_secret_data(st->scratch), kb_secret_len(st->scratch), len));
        st->scratch_used = *len;
        *value = kb_secret_cdata(st->scratch);
        if (binary)
            *binary = sqlite3_column_int(s, 0) != 0;
        if (created_ms)
            *created_ms = sqlite3_column_int64(s, 2);
    }
out:
    done(s);
    return rc;
}

void cache_store_peek_release(cache_store *st)
{
    if (st != NULL && st->scratch != NULL && st->scratch_used > 0) {
        kb_wipe(kb_secret_data(st->scratch), st->scratch_used);
        st->scratch_used = 0;
    }
}

kb_err cache_store_version_exists(cache_store *st, int64_t id, const char *vid)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r;
    KB_GUARD(stmt(st, Q_VER_EXISTS, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_text(s, 2, vid));
    r = sqlite3_step(s);
    rc = r == SQLITE_ROW ? KB_OK : r == SQLITE_DONE ? KB_ERR_NOT_FOUND : db_err(st, "exists");
out:
    done(s);
    return rc;
}

kb_err cache_store_version_count(cache_store *st, int64_t id, size_t *n)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    KB_GUARD(stmt(st, Q_VER_COUNT, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_ENSURE_OUT(rc, sqlite3_step(s) == SQLITE_ROW, KB_ERR_DB);
    *n = (size_t)sqlite3_column_int64(s, 0);
out:
    done(s);
    return rc;
}

kb_err cache_store_versions_prune(cache_store *st, int64_t id, size_t max)
{
    sqlite3_stmt *s;
    size_t n = 0;
    kb_err rc = KB_OK;
    KB_GUARD(cache_store_version_count(st, id, &n));
    if (n <= max)
        return KB_OK;
    KB_GUARD(stmt(st, Q_VER_PRUNE, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, (int64_t)(n - max)));
    return exec_step(st, s, "prune");
out:
    done(s);
    return rc;
}

kb_err cache_store_stage_get(cache_store *st, int64_t id, const char *stage, char *vid)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r;
    KB_GUARD(stmt(st, Q_STAGE_GET, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_text(s, 2, stage));
    r = sqlite3_step(s);
    if (r == SQLITE_ROW)
        copy_col(s, 0, vid, CACHE_VERSION_ID_MAX + 1, NULL);
    else
        rc = r == SQLITE_DONE ? KB_ERR_NOT_FOUND : db_err(st, "stage_get");
out:
    done(s);
    return rc;
}

kb_err cache_store_stage_set(cache_store *st, int64_t id, const char *stage, const char *vid)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    KB_GUARD(stmt(st, Q_STAGE_SET, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_text(s, 2, stage));
    KB_GUARD_OUT(rc, bind_text(s, 3, vid));
    KB_GUARD(exec_step(st, s, "stage_set"));
    return mark_dirty(st, id);
out:
    done(s);
    return rc;
}

kb_err cache_store_stage_remove(cache_store *st, int64_t id, const char *stage)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    KB_GUARD(stmt(st, Q_STAGE_DEL, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_text(s, 2, stage));
    KB_GUARD(exec_step(st, s, "stage_remove"));
    return mark_dirty(st, id);
out:
    done(s);
    return rc;
}

kb_err cache_store_stages(cache_store *st, int64_t id, const char *only_vid,
                          cache_store_stage_fn fn, void *arg)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r;
    KB_GUARD(stmt(st, only_vid ? Q_STAGES_VID : Q_STAGES, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    if (only_vid)
        KB_GUARD_OUT(rc, bind_text(s, 2, only_vid));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        int v = fn(arg, (const char *)sqlite3_column_text(s, 0),
                   (const char *)sqlite3_column_text(s, 1));
        KB_ENSURE_OUT(rc, v >= 0, KB_ERR_INTERNAL);
        if (v > 0)
            goto out;
    }
    if (r != SQLITE_DONE)
        rc = db_err(st, "stages");
out:
    done(s);
    return rc;
}

kb_err cache_store_versions(cache_store *st, int64_t id, int64_t before_seq,
                            cache_store_version_fn fn, void *arg)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r;
    KB_GUARD(stmt(st, Q_VERSIONS, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, before_seq > 0 ? before_seq : INT64_MAX));
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        int v = fn(arg, (const char *)sqlite3_column_text(s, 0), sqlite3_column_int64(s, 1),
                   sqlite3_column_int64(s, 2), sqlite3_column_int(s, 3) != 0);
        KB_ENSURE_OUT(rc, v >= 0, KB_ERR_INTERNAL);
        if (v > 0)
            goto out;
    }
    if (r != SQLITE_DONE)
        rc = db_err(st, "versions");
out:
    done(s);
    return rc;
}

kb_err cache_store_policy_get(cache_store *st, int64_t id, char **out)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    int r;
    *out = NULL;
    KB_GUARD(stmt(st, Q_POLICY_GET, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        const char *p = (const char *)sqlite3_column_text(s, 0);
        *out = strdup(p ? p : "");
        KB_ENSURE_OUT(rc, *out != NULL, KB_ERR_NOMEM);
    } else {
        rc = r == SQLITE_DONE ? KB_ERR_NOT_FOUND : db_err(st, "policy_get");
    }
out:
    done(s);
    return rc;
}

kb_err cache_store_policy_set(cache_store *st, int64_t id, const char *policy)
{
    sqlite3_stmt *s;
    kb_err rc = KB_OK;
    KB_GUARD(stmt(st, Q_POLICY_SET, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_text(s, 2, policy));
    return exec_step(st, s, "policy_set");
out:
    done(s);
    return rc;
}

kb_err cache_store_policy_delete(cache_store *st, int64_t id)
{
    return exec_id(st, Q_POLICY_DEL, id, "policy_delete");
}
