/* store_sql.h - the store ops written once for every SQL backend (docs/internals/store.md, "The
 * shared op layer"). Only the backends (store_sqlite*.c, store_pg.c) and store_sql*.c include it.
 *
 * The bodies of the ops (row loaders and MAC checks, the audit chain, fetch log, ...) live in
 * store_sql*.c over the small statement interface below; a backend supplies the connection and
 * its pool, the schema and migrations, transactions (with the audit chain's write lock and the
 * state digest: store_impl.h), this interface, and the text of the few statements whose SQL
 * differs between dialects (store_sql_q). It puts the shared ops straight into its ops table.
 *
 * SQL in store_sql*.c is written once, in the common subset of SQLite and PostgreSQL, with
 * numbered placeholders ?1, ?2 ... (SQLite's own syntax; the PostgreSQL backend turns each into
 * $N once, when it prepares the statement). Statements are string literals: backends cache them
 * per connection by the literal's address.
 */
#ifndef KB_SERVER_STORE_SQL_H
#define KB_SERVER_STORE_SQL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "rowmac.h"
#include "store_impl.h"

/* What step answers; anything else is a backend error code for db_err. */
#define STORE_SQL_ROW 100  /* a row is ready (SQLITE_ROW) */
#define STORE_SQL_DONE 101 /* no more rows (SQLITE_DONE) */

typedef struct store_sql_cx store_sql_cx;
typedef struct store_sql_stmt store_sql_stmt;

/* What a transaction may do: read (one snapshot), write, or write only logs (audit, fetch and
 * notification rows: no listing changes, so other replicas' listing caches stay valid). */
typedef enum { STORE_SQL_TX_READ, STORE_SQL_TX_WRITE, STORE_SQL_TX_LOG } store_sql_tx;

/* The statements whose text differs between dialects: each backend's table has one per entry. */
typedef enum {
    STORE_SQL_Q_READABLE,     /* STORE_SQL_READABLE(the dialect's STORE_SQL_NAMES): ?1 client id,
                                 ?2 the names as JSON [[index, "name", version], ...] */
    STORE_SQL_Q_AUDIT_QUERY,  /* ?1 object or NULL, ?2 identity or NULL, ?3 since, ?4 until,
                                 ?5 limit (PostgreSQL needs the parameters' types spelled) */
    STORE_SQL_Q_CLIENT_TOUCH, /* ?1 now, ?2 client id, ?3 STORE_TOUCH_INTERVAL, ?4 listed 0/1:
                                 last_seen (and with ?4 last_list_at) moved to now when due */
    STORE_SQL_Q_COUNT
} store_sql_q;

typedef struct store_sql_driver {
    /* Connections: the writer (one at a time), a reader, handing either back. */
    store_sql_cx *(*wr_get)(store *st);
    store_sql_cx *(*rd_get)(store *st);
    void (*put)(store *st, store_sql_cx *b);
    /* Transactions: tx_end commits (rc == KB_OK: the audit row au first, through
     * store_sql_audit_insert_locked, then the state row) or rolls back, and returns the result. */
    kb_err (*tx_begin)(store_sql_cx *b, store_sql_tx mode);
    kb_err (*tx_end)(store_sql_cx *b, kb_err rc, store_audit *au);
    bool (*in_tx)(store_sql_cx *b);
    /* The cheap half of the rollback check that every request makes (store_client_get). */
    kb_err (*state_check)(store_sql_cx *b);
    /* Statements: the connection's cached statement for sql; step (STORE_SQL_ROW, _DONE or an
     * error code); done resets it for its next use (rows and bound values dropped). */
    kb_err (*prep)(store_sql_cx *b, const char *sql, store_sql_stmt **s);
    int (*step)(store_sql_stmt *s);
    /* Execute a statement whose rows are not wanted. Inside a transaction a backend may send it
     * now and check its result with the next statement that needs an answer, or at COMMIT: a
     * failure then fails that statement or the COMMIT (the transaction rolls back), logged with
     * what. Outside a transaction it runs at once, like step. changes() is undefined after it;
     * the bound values may be dropped (done) at once. */
    kb_err (*step_later)(store_sql_stmt *s, const char *what);
    void (*done)(store_sql_stmt *s);
    /* The error for a failed step (KB_ERR_EXISTS on a unique key, KB_ERR_NOT_FOUND on a foreign
     * key, else KB_ERR_DB, logged with what). */
    kb_err (*db_err)(store_sql_cx *b, int rc, const char *what);
    /* Rows changed by the connection's last statement. */
    int64_t (*changes)(store_sql_cx *b);
    /* Parameters, 1-based; text NULL binds "". */
    kb_err (*bind_text)(store_sql_stmt *s, int i, const char *v);
    kb_err (*bind_blob)(store_sql_stmt *s, int i, const void *p, size_t n);
    kb_err (*bind_i64)(store_sql_stmt *s, int i, int64_t v);
    kb_err (*bind_null)(store_sql_stmt *s, int i);
    /* Columns of the current row, 0-based; NULL reads as 0 / NULL / 0 bytes. col_isint: the
     * value is an integer (not NULL, not text), for the strict booleans. */
    int64_t (*col_i64)(store_sql_stmt *s, int i);
    bool (*col_isint)(store_sql_stmt *s, int i);
    const char *(*col_text)(store_sql_stmt *s, int i); /* NUL-terminated */
    const void *(*col_blob)(store_sql_stmt *s, int i);
    size_t (*col_len)(store_sql_stmt *s, int i); /* after col_text or col_blob: their bytes */
    /* STORE_SQL_Q_COUNT statements in this dialect (string literals). */
    const char *const *sql;
} store_sql_driver;

/* First member of every backend connection. */
struct store_sql_cx {
    const store_sql_driver *drv;
    store *st;
    rowmac_ctx *mac; /* this connection's keyed HMAC context (one user at a time) */
    bool writer;
};

/* First member of every backend statement. */
struct store_sql_stmt {
    store_sql_cx *b;
};

#define STORE_SQL_SEEN_SLOTS 4096 /* power of two */

/* First member of every backend's state (st->impl): how the shared ops find the driver, and
 * what they keep per handle (store_sql_pool_init, store_sql_pool_free). */
typedef struct {
    const store_sql_driver *drv;
    pthread_mutex_t smu; /* guards seen */
    struct store_sql_seen {
        int64_t id, last_seen, last_list_at;
    } * seen; /* STORE_SQL_SEEN_SLOTS, direct-mapped by client id: see store_sql_client_seen */
} store_sql_pool;

/* store_sql.c */
kb_err store_sql_pool_init(store_sql_pool *p, const store_sql_driver *drv);
void store_sql_pool_free(store_sql_pool *p); /* a zeroed or initialised one */
/* Fetch one verified client by SPIFFE ID (spiffe_id != NULL) or id, as stored. */
kb_err store_sql_client_fetch(store_sql_cx *b, const char *spiffe_id, int64_t id,
                              store_client *out);
/* KB_OK when sql (SELECT 1 ... WHERE ... = ?1) finds a row for id, else KB_ERR_NOT_FOUND. */
kb_err store_sql_exists(store_sql_cx *b, const char *sql, int64_t id);

/* Column lists of the row loaders (store_sql.c, store_sql_int.h): secrets s, versions v (with
 * the envelope), clients c. */
#define STORE_SQL_SECRET_COLS                                                                      \
    "s.id, s.name, s.description, s.owner_group_id, s.cloud_sync, s.deleted_at, "                  \
    "s.latest_version, s.created_by, s.created_at, s.updated_by, s.updated_at, s.mac, "            \
    "s.latest_mac"
#define STORE_SQL_VERSION_COLS                                                                     \
    "v.secret_id, v.version, v.checksum, v.content_len, v.metadata, v.expires_at, "                \
    "v.created_by, v.created_at, v.mac"
#define STORE_SQL_ENV_COLS "v.wrapped_key, v.key_id, v.sealed"
#define STORE_SQL_CLIENT_COLS                                                                      \
    "c.id, c.spiffe_id, c.enabled, c.admin, c.cloud, c.app_name, c.description, c.last_seen, "     \
    "c.last_list_at, c.created_by, c.created_at, c.mac"

/* The content read (store_sql_readable_get_batch, docs/internals/store.md "The content read"):
 * every asked name of one call in one statement. names is the dialect's table expression
 * `(...) nm` with columns i (the caller's index), name and ver (0: the latest) from the JSON
 * text ?2. joins LEFT JOINs, per name, the secret named nm.name as s, its version
 * STORE_SQL_READABLE_VER as v, and each (membership, grant) path from the client c to s, whose
 * group id, membership MAC and grant MAC are pathcols. Per name, in order of i: the state
 * counter, the client row, the secret row, the version with its envelope, and each path; the
 * LEFT JOINs keep one row when the secret, the version or every path is missing. The joins are
 * the dialect's so that each planner looks a name's rows up by index: PostgreSQL guesses 100
 * rows for any JSON table and, given plain joins, hashed the whole secrets or versions table
 * (and every path of the client) on each read. */
#define STORE_SQL_READABLE_VER "CASE WHEN nm.ver = 0 THEN s.latest_version ELSE nm.ver END"
#define STORE_SQL_READABLE(names, joins, pathcols)                                                 \
    "SELECT st.counter, nm.i, " STORE_SQL_CLIENT_COLS ", " STORE_SQL_SECRET_COLS                   \
    ", " STORE_SQL_VERSION_COLS ", " STORE_SQL_ENV_COLS ", " pathcols " "                          \
    "FROM store_state st JOIN clients c ON c.id = ?1 CROSS JOIN " names " " joins " "              \
    "WHERE st.id = 1 ORDER BY nm.i"

/* The audit_log columns that audit rows are read from, in audit_row's order. */
#define STORE_SQL_AUDIT_COLS "seq, time, identity, peer, action, object, version, result, mac"

/* ---- the shared ops (store_impl.h has their contracts) ---- */

/* store_sql_secrets.c */
kb_err store_sql_secret_create(store *st, const store_secret_new *sn, const store_version_new *v,
                               const char *metadata, store_seal_fn seal, void *seal_ctx,
                               const char *actor, int64_t now, int64_t *id_out, store_audit *au);
kb_err store_sql_version_add(store *st, int64_t secret_id, const store_version_new *v,
                             const char *metadata, store_seal_fn seal, void *seal_ctx,
                             const char *actor, int64_t now, int64_t *version_out, store_audit *au);
kb_err store_sql_secret_update(store *st, int64_t secret_id, const store_secret_patch *p,
                               const char *actor, int64_t now, store_audit *au);
kb_err store_sql_secret_set_deleted(store *st, int64_t secret_id, bool deleted, const char *actor,
                                    int64_t now, store_audit *au);
kb_err store_sql_secret_purge(store *st, int64_t secret_id, store_audit *au);
kb_err store_sql_secret_get(store *st, const char *name, int64_t id, bool include_deleted,
                            store_secret *out);
kb_err store_sql_secret_list(store *st, bool include_deleted, store_record **out, size_t *n);
kb_err store_sql_secret_list_page(store *st, bool include_deleted, const char *after, size_t limit,
                                  store_record **out, size_t *n, char **next);
kb_err store_sql_version_list(store *st, int64_t secret_id, store_version **out, size_t *n);
kb_err store_sql_version_get(store *st, int64_t secret_id, int64_t version, store_record *out);
kb_err store_sql_secrets_expiring(store *st, int64_t from, int64_t to, store_record **out,
                                  size_t *n);
kb_err store_sql_readable_list(store *st, int64_t client_id, store_record **out, size_t *n);
kb_err store_sql_readable_get_batch(store *st, int64_t client_id, const char *const *names,
                                    const int64_t *versions, size_t n, store_record *out,
                                    kb_err *errs);
kb_err store_sql_secret_status(store *st, int64_t secret_id, store_fetch **out, size_t *n);
kb_err store_sql_notify_sent(store *st, int64_t secret_id, int64_t version, int64_t window,
                             bool *sent);
kb_err store_sql_notify_mark(store *st, int64_t secret_id, int64_t version, int64_t window,
                             int64_t now, store_audit *au);

/* store_sql_access.c */
kb_err store_sql_group_create(store *st, const char *name, const char *description,
                              const char *actor, int64_t now, int64_t *id_out, store_audit *au);
kb_err store_sql_group_get(store *st, const char *name, store_group *out);
kb_err store_sql_group_list(store *st, store_group **out, size_t *n);
kb_err store_sql_group_delete(store *st, int64_t group_id, store_audit *au);
kb_err store_sql_client_create(store *st, const store_client_new *cn, bool cloud, const char *actor,
                               int64_t now, int64_t *id_out, store_audit *au);
kb_err store_sql_client_get(store *st, const char *spiffe_id, int64_t id, store_client *out);
kb_err store_sql_client_list(store *st, store_client **out, size_t *n);
kb_err store_sql_client_update(store *st, int64_t client_id, const store_client_patch *p,
                               store_audit *au);
kb_err store_sql_client_seen(store *st, int64_t client_id, int64_t now, bool listed);
/* The last_seen / last_list_at this handle last read for a client (lower bounds of the stored
 * ones); false when it has none. */
bool store_sql_seen_get(store_sql_pool *q, int64_t id, int64_t *ls, int64_t *lla);
kb_err store_sql_client_delete(store *st, int64_t client_id, store_audit *au);
kb_err store_sql_clients_stale(store *st, int64_t before, store_client **out, size_t *n);
kb_err store_sql_membership_set(store *st, int64_t client_id, int64_t group_id, bool present,
                                store_audit *au);
kb_err store_sql_grant_set(store *st, int64_t group_id, int64_t secret_id, bool present,
                           store_audit *au);
kb_err store_sql_client_groups(store *st, int64_t client_id, store_group **out, size_t *n);
kb_err store_sql_secret_groups(store *st, int64_t secret_id, store_group **out, size_t *n);
kb_err store_sql_group_clients(store *st, int64_t group_id, store_client **out, size_t *n);

/* store_sql_audit.c */
kb_err store_sql_audit_head(store *st, int64_t *seq, uint8_t mac[AUDIT_MAC_LEN]);
/* Append one row to the chain: writer, inside a write transaction (whose write lock is taken
 * before the head is read, so two appenders never extend the same head). Backends' tx_end. */
kb_err store_sql_audit_insert_locked(store_sql_cx *b, const audit_event *ev, audit_mac_fn macfn,
                                     void *ctx, int64_t *seq_out);
kb_err store_sql_audit_append(store *st, const audit_event *ev, const audit_fetch *fetch, size_t n,
                              store_audit_mac_fn macfn, void *ctx, int64_t *seq_out);
kb_err store_sql_audit_rows(store *st, int64_t after, size_t limit, audit_row **out, size_t *n);
kb_err store_sql_audit_query(store *st, const audit_filter *f, audit_row **out, size_t *n);
kb_err store_sql_anchor_put(store *st, const audit_anchor *a);
kb_err store_sql_anchor_list(store *st, audit_anchor **out, size_t *n);
/* Upsert the fetch log row (writer, in a transaction or not). */
kb_err store_sql_fetch_upsert(store_sql_cx *b, int64_t client_id, int64_t secret_id,
                              int64_t version, int64_t now);
kb_err store_sql_fetch_record(store *st, int64_t client_id, int64_t secret_id, int64_t version,
                              int64_t now);

#endif
