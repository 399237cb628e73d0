/* store_impl.h - the storage backend interface (OpenSMTPD's table_* style): a backend fills one
 * struct store_ops and registers it under a URL scheme in store.c. Only store.c, audit.c and the
 * backends include this file.
 *
 * Contract for every backend:
 *   - every op is safe to call from several threads at once;
 *   - store.c has already validated names, sizes, metadata and actors (model.h) before calling;
 *   - backends decode rows as stored; store.c decides policy (store_client_effective, the stale
 *     filter);
 *     the backend enforces what needs the database (existence, uniqueness, version order) and
 *     computes/verifies row MACs through rowmac.h on every access-deciding read and write;
 *   - multi-row changes are atomic (one transaction);
 *   - every change op takes a store_audit (audit.h; NULL: none) and, when the change succeeds,
 *     appends its audit row in the SAME transaction, before COMMIT: read the chain head, call
 *     au->mac(au->mac_ctx, prev, seq, &au->ev, mac), insert the row, set au->seq and
 *     au->written (secret_create/version_add first set au->ev.version to the version made). A
 *     failure anywhere, the row's MAC included, rolls the whole change back;
 *   - schema migrations are versioned, each step marked expand-only or contracting; the database
 *     records beside its version a compat floor (the oldest binary schema version that can still
 *     run on it; schema_compat, step 6). A newer database is accepted when its floor is at most
 *     the binary's version (store_schema_gate_newer) and refused with KB_ERR_SCHEMA otherwise.
 */
#ifndef KB_SERVER_STORE_IMPL_H
#define KB_SERVER_STORE_IMPL_H

#include <stdatomic.h>
#include <stdint.h>

#include "audit.h"
#include "store.h"

/* Options as the store keeps them (owned copies). */
typedef struct {
    kb_secret *row_mac_key;
    size_t content_max;
    char **cloud_prefixes; /* NULL-terminated */
    int busy_timeout_ms;
    store_commitment commitment; /* read == NULL: none */
    bool migrate;                /* store_opts.migrate */
} store_cfg;

/* Called by audit_append inside the backend's write transaction, with the previous row's MAC
 * (zeros before the first row) and the new row's seq; fills the new row's MAC. */
typedef audit_mac_fn store_audit_mac_fn;

struct store_ops {
    const char *scheme; /* "sqlite" */
    int schema_version; /* the version this backend's migrations reach */

    /* open also runs the start-up rollback check (store.h, store_verify). */
    kb_err (*open)(store *st, const char *location);
    kb_err (*verify)(store *st);
    void (*close)(store *st);
    kb_err (*get_schema_version)(store *st, int *out);

    kb_err (*secret_create)(store *st, const store_secret_new *s, const store_version_new *v,
                            const char *metadata, store_seal_fn seal, void *seal_ctx,
                            const char *actor, int64_t now, int64_t *id_out, store_audit *au);
    kb_err (*version_add)(store *st, int64_t secret_id, const store_version_new *v,
                          const char *metadata, store_seal_fn seal, void *seal_ctx,
                          const char *actor, int64_t now, int64_t *version_out, store_audit *au);
    kb_err (*secret_update)(store *st, int64_t secret_id, const store_secret_patch *p,
                            const char *actor, int64_t now, store_audit *au);
    kb_err (*secret_set_deleted)(store *st, int64_t secret_id, bool deleted, const char *actor,
                                 int64_t now, store_audit *au);
    kb_err (*secret_purge)(store *st, int64_t secret_id, store_audit *au);
    kb_err (*secret_get)(store *st, const char *name, int64_t id, bool include_deleted,
                         store_secret *out);
    kb_err (*secret_list)(store *st, bool include_deleted, store_record **out, size_t *n);
    kb_err (*secret_list_page)(store *st, bool include_deleted, const char *after, size_t limit,
                               store_record **out, size_t *n, char **next);
    kb_err (*version_list)(store *st, int64_t secret_id, store_version **out, size_t *n);
    kb_err (*version_get)(store *st, int64_t secret_id, int64_t version, store_record *out);
    kb_err (*secrets_expiring)(store *st, int64_t from, int64_t to, store_record **out, size_t *n);

    kb_err (*group_create)(store *st, const char *name, const char *description, const char *actor,
                           int64_t now, int64_t *id_out, store_audit *au);
    kb_err (*group_get)(store *st, const char *name, store_group *out);
    kb_err (*group_list)(store *st, store_group **out, size_t *n);
    kb_err (*group_delete)(store *st, int64_t group_id, store_audit *au);

    kb_err (*client_create)(store *st, const store_client_new *c, bool cloud, const char *actor,
                            int64_t now, int64_t *id_out, store_audit *au);
    kb_err (*client_get)(store *st, const char *spiffe_id, int64_t id, store_client *out);
    kb_err (*client_list)(store *st, store_client **out, size_t *n);
    kb_err (*client_update)(store *st, int64_t client_id, const store_client_patch *p,
                            store_audit *au);
    kb_err (*client_delete)(store *st, int64_t client_id, store_audit *au);
    kb_err (*client_seen)(store *st, int64_t client_id, int64_t now, bool listed);
    /* Every client whose last_list_at is before `before` (store.c keeps the enabled, effectively
     * non-admin ones). Client rows are returned as stored (store_client_effective). */
    kb_err (*clients_stale)(store *st, int64_t before, store_client **out, size_t *n);

    kb_err (*membership_set)(store *st, int64_t client_id, int64_t group_id, bool present,
                             store_audit *au);
    kb_err (*client_groups)(store *st, int64_t client_id, store_group **out, size_t *n);
    kb_err (*group_clients)(store *st, int64_t group_id, store_client **out, size_t *n);
    kb_err (*grant_set)(store *st, int64_t group_id, int64_t secret_id, bool present,
                        store_audit *au);
    kb_err (*secret_groups)(store *st, int64_t secret_id, store_group **out, size_t *n);

    kb_err (*readable_list)(store *st, int64_t client_id, store_record **out, size_t *n);
    kb_err (*readable_get_batch)(store *st, int64_t client_id, const char *const *names,
                                 const int64_t *versions, size_t n, store_record *out,
                                 kb_err *errs);

    kb_err (*fetch_record)(store *st, int64_t client_id, int64_t secret_id, int64_t version,
                           int64_t now);
    kb_err (*secret_status)(store *st, int64_t secret_id, store_fetch **out, size_t *n);

    /* Append n >= 1 rows (ev[0..n-1], chained in that order) in one transaction; *seq_out is
     * the last one's seq. With fetch != NULL (n entries), the fetch records (fetch_record's rows)
     * are written in the same transaction: content reads commit their rows and records all
     * together or none. */
    kb_err (*audit_append)(store *st, const audit_event *ev, const audit_fetch *fetch, size_t n,
                           store_audit_mac_fn mac, void *ctx, int64_t *seq_out);
    /* Rows with seq > after, ascending, at most limit. */
    kb_err (*audit_rows)(store *st, int64_t after, size_t limit, audit_row **out, size_t *n);
    kb_err (*audit_query)(store *st, const audit_filter *f, audit_row **out, size_t *n);
    /* The last row's seq and MAC (seq 0 and zeros when empty). */
    kb_err (*audit_head)(store *st, int64_t *seq, uint8_t mac[AUDIT_MAC_LEN]);
    kb_err (*anchor_put)(store *st, const audit_anchor *a);
    /* All anchors ascending by seq (out may be NULL when n is 0). */
    kb_err (*anchor_list)(store *st, audit_anchor **out, size_t *n);
    /* Expiry notifications delivered (notify.h); notify_mark is a change op (its audit row in
     * its transaction). */
    kb_err (*notify_sent)(store *st, int64_t secret_id, int64_t version, int64_t window,
                          bool *sent);
    kb_err (*notify_mark)(store *st, int64_t secret_id, int64_t version, int64_t window,
                          int64_t now, store_audit *au);
};

struct store {
    const struct store_ops *ops;
    void *impl; /* the backend's state */
    store_cfg cfg;
    _Atomic uint64_t generation; /* see store_generation */
    _Atomic int64_t state_seen;  /* highest state counter this handle has seen (rollback.md) */
    _Atomic int failed;          /* a rollback check failed: refuse everything */
    /* see store_round_trips */
    _Atomic uint64_t round_trips;
};

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;

/* The compat floor of a database migrated from version `from` (floor `compat`) to `to`: each
 * contracting step (expand_only[v - 1] false, of `steps`) raises it to that step's version. */
int store_schema_floor(const bool *expand_only, int steps, int from, int compat, int to);

/* A database at db_version > binary_version: KB_OK (logged once, info: the database is newer but
 * its floor admits this binary) or KB_ERR_SCHEMA (logged, error: naming both versions and the
 * floor). */
kb_err store_schema_gate_newer(int db_version, int db_floor, int binary_version);

/* The libpq connection string for a postgresql: store URL, refused (KB_ERR_CONFIG, logged) as
 * the backend refuses it: a password in the URL or PGPASSWORD, a passfile that is not 0600.
 * For store_migrate_db.c. */
KB_WUR kb_err store_pg_conninfo(const char *url, char **out);

/* Test hook: the DDL of schema migration step `version` of the PostgreSQL backend. */
const char *store_pg_migration(int version);

/* Test hook: the SQL of schema migration step `version` (1-based) of the SQLite backend, or NULL
 * past the last one; lets tests build an old database by hand. */
const char *store_sqlite_migration(int version);

/* Shared by backends: mark the handle failed (logged once with why; every later call answers
 * KB_ERR_UNAVAILABLE) and raise state_seen to at least counter. */
void store_fail(store *st, const char *why);
void store_state_saw(store *st, int64_t counter);

/* store.c's client policy, on a client row as a backend decoded it (stored flags): cloud is the
 * stored flag OR derived from the SPIFFE ID and the configured prefixes (a prefix added later
 * makes existing clients cloud clients: fails closed), and a cloud client is never admin (logged).
 * store.c applies it to every client it returns; a backend applies it where it needs the
 * effective flags inside its own transaction (the client reads, client_update). Backends never
 * decide these flags themselves. */
void store_client_effective(store *st, store_client *c);

/* Shared by backends: log a row-MAC mismatch (table and ids only, never values). */
void store_log_integrity(const char *table, int64_t id1, int64_t id2);

#endif
