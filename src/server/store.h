/* store.h - keybridged's storage layer: secrets, versions, groups, clients, memberships, grants,
 * the fetch log, and (through audit.h) the audit chain.
 *
 * A store is opened from a URL that picks a backend from a registry (OpenSMTPD's table_*
 * style): "sqlite:/path/to/db" today, "postgresql://..." later. Nothing in this header, nor in
 * the code that uses it, knows which backend it has.
 *
 * Thread safety: a store handle may be used from several threads at once (the SQLite backend
 * keeps a pool of reader connections and one writer connection; see
 * docs/internals/store-performance.md).
 *
 * Integrity: the rows that decide access (clients, memberships, grants and a secret's name,
 * owner, cloud_sync and deleted_at) carry an HMAC-SHA256 under the row-MAC key given at open,
 * over a table-tagged encoding that includes the row's primary key (rowmac.h). Every read that
 * decides access checks it; a mismatch is logged (ids only) and returns KB_ERR_INTEGRITY, or,
 * in lists, drops the row: tampering never grants access.
 *
 * Conventions:
 *   - Times are Unix seconds (int64_t); 0 means "never / not set" (expiry, deleted_at,
 *     last_seen, last_list_at).
 *   - `actor` is the SPIFFE ID of the admin making a change, or "bootstrap".
 *   - Every change takes a store_audit *au (audit.h): the change's audit row, which the backend
 *     writes in the change's own transaction (both or neither); NULL writes no row.
 *   - Objects returned through pointers are owned by the caller and released with the matching
 *     *_free / *_clear function; on error nothing is returned and nothing needs freeing.
 *   - KB_ERR_NOT_FOUND for "no such object" AND for "exists but not readable by this client",
 *     so a client cannot probe names it may not read.
 */
#ifndef KB_SERVER_STORE_H
#define KB_SERVER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/secbuf.h"

typedef struct store store;
/* The audit row of a change (audit.h): every change op takes one and the backend writes it in the
 * change's own transaction. NULL: no audit row (tests, benchmarks). */
typedef struct store_audit store_audit;

#define STORE_CHECKSUM_LEN 32 /* HMAC-SHA256 checksum of (id, version, content), made by caller */
#define STORE_ROWMAC_KEY_MIN 32
#define STORE_KEY_ID_MAX 255         /* length of an envelope's master key id */
#define STORE_BLOB_MAX (1024 * 1024) /* wrapped key or sealed content blob */
#define STORE_BATCH_MAX 1000         /* names in one batch get */
#define STORE_TOUCH_INTERVAL 3600    /* last_seen / last_list_at written at most hourly */
#define STORE_BUSY_TIMEOUT_MS 5000   /* default lock wait */
#define STORE_AUDIT_QUERY_MAX 10000  /* rows one audit query may return */

/* The state commitment kept outside the database (docs/internals/rollback.md): a counter that
 * only goes up, kept where someone who can write the database file cannot roll it back
 * (keybridged: the token, kb_keystore_counter_*). read gives KB_ERR_NOT_FOUND while it was
 * never advanced; advance stores `to` if larger (never lowers it). */
typedef struct {
    kb_err (*read)(void *ctx, uint64_t *out);
    kb_err (*advance)(void *ctx, uint64_t to);
    void *ctx;
} store_commitment;

typedef struct {
    /* Required: the row-MAC key (at least STORE_ROWMAC_KEY_MIN bytes). Copied into the store's
     * own locked memory; the caller keeps ownership of its kb_secret. */
    const kb_secret *row_mac_key;
    /* Largest content in bytes; 0 means MODEL_CONTENT_MAX_DEFAULT. A cloud_sync secret is
     * additionally capped at MODEL_CLOUD_CONTENT_MAX whatever this says. */
    size_t content_max;
    /* NULL-terminated list of SPIFFE ID path prefixes that make a client a cloud client
     * (e.g. "/lambda/"), matched on segment boundaries; NULL means none. Copied. */
    const char *const *cloud_prefixes;
    /* Lock wait in milliseconds; 0 means STORE_BUSY_TIMEOUT_MS. */
    int busy_timeout_ms;
    /* The external commitment (copied; ctx must outlive the store). NULL: the state row and its
     * digest are still kept and checked, but nothing outside the database says how new it
     * must be (unit tests; never keybridged). */
    const store_commitment *commitment;
    /* Apply pending schema migrations. The SQLite backend always migrates at open; the
     * PostgreSQL backend only when this is set (`keybridged migrate`, `bootstrap`: one host
     * migrates, replicas never race to), and otherwise refuses an older schema with
     * KB_ERR_SCHEMA ("run keybridged migrate"). */
    bool migrate;
} store_opts;

/* The envelope of one version: opaque to the store; the caller seals and opens it. */
typedef struct {
    uint8_t *wrapped_key; /* data key wrapped by the master key */
    size_t wrapped_key_len;
    char *key_id;    /* which master key wrapped it (for re-wrapping on rotation) */
    uint8_t *sealed; /* AES-256-GCM(content), AD = (secret id, version) */
    size_t sealed_len;
} store_envelope;

typedef struct {
    int64_t id;
    char *name;
    char *description;      /* "" if none */
    int64_t owner_group_id; /* 0 = no owner group */
    bool cloud_sync;
    int64_t deleted_at;     /* 0 = live */
    int64_t latest_version; /* highest version ever written (versions only go up) */
    char *created_by;
    int64_t created_at;
    char *updated_by;
    int64_t updated_at;
} store_secret;

typedef struct {
    int64_t secret_id;
    int64_t version;
    uint8_t checksum[STORE_CHECKSUM_LEN];
    int64_t content_len;
    char *metadata;     /* canonical JSON object text (sorted keys), "{}" if none */
    int64_t expires_at; /* 0 = never */
    char *created_by;
    int64_t created_at;
} store_version;

/* A secret joined with one of its versions; env is all-NULL/0 in listings (no envelope). */
typedef struct {
    store_secret secret;
    store_version version;
    store_envelope env;
} store_record;

typedef struct {
    int64_t id;
    char *name;
    char *description;
    char *created_by;
    int64_t created_at;
} store_group;

typedef struct {
    int64_t id;
    char *spiffe_id;
    bool enabled;
    bool admin;
    bool cloud;     /* stored flag OR derived from the configured prefixes (fails closed) */
    char *app_name; /* "" if none; required for cloud clients' syncers, not enforced here */
    char *description;
    int64_t last_seen;
    int64_t last_list_at;
    char *created_by;
    int64_t created_at;
} store_client;

typedef struct {
    int64_t client_id;
    char *spiffe_id;
    int64_t secret_id;
    int64_t version;    /* latest version this client fetched */
    int64_t fetched_at; /* when */
} store_fetch;

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* Open (creating and migrating if needed) the store at url. KB_ERR_CONFIG for an unknown scheme
 * or bad options, KB_ERR_SCHEMA if the database is newer than this binary and its compat floor
 * is above this binary's schema version (logged with both versions and the floor; a newer one
 * whose floor admits this binary opens as it is), KB_ERR_DB on database errors. */
KB_WUR kb_err store_open(const char *url, const store_opts *opts, store **out);
void store_close(store *st);

/* The rollback check (docs/internals/rollback.md). The store keeps one state row: a counter,
 * a digest of every live access-deciding row (clients, memberships, grants, secrets, through
 * their row MACs) and a MAC over both. Every write moves the digest and the counter in its own
 * transaction, then advances the external commitment. store_open refuses (KB_ERR_INTEGRITY,
 * logged with both counters) a database whose rows do not match its digest, whose state row
 * does not verify, or whose counter is below the commitment's; it rolls the commitment forward
 * when the database is ahead (a crash between commit and advance, or a write by another
 * process). Reads compare the state counter with the highest one this handle has seen.
 * store_verify recomputes the digest now (keybridged: every [store] integrity_check_interval
 * and on SIGHUP). Once a check fails, every call on the handle answers KB_ERR_UNAVAILABLE
 * until it is reopened: nothing is served from a database that was rolled back. */
KB_WUR kb_err store_verify(store *st);
/* KB_OK while serving, KB_ERR_UNAVAILABLE once a check failed. */
KB_WUR kb_err store_health(store *st);

/* Schema version this binary writes, and the one found in an open store. */
int store_schema_version_supported(void);
KB_WUR kb_err store_schema_version(store *st, int *out);

/* ---- secrets and versions (admin) --------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *description; /* NULL = "" */
    int64_t owner_group_id;  /* 0 = none */
    bool cloud_sync;
} store_secret_new;

/* What the caller supplies for a new version; the envelope and checksum come from the seal
 * callback, which is called inside the write transaction once the (secret id, version) pair is
 * known, because both are bound into the AEAD associated data and the checksum. */
typedef struct {
    size_t content_len;
    const char *metadata; /* JSON object text or NULL ("{}"); checked by model_metadata_check */
    int64_t expires_at;   /* 0 = never */
} store_version_new;

/* Fill env (malloc'd buffers, which the store frees with store_envelope_clear) and checksum for
 * (secret_id, version). An error aborts the whole write. */
typedef kb_err (*store_seal_fn)(void *ctx, int64_t secret_id, int64_t version, store_envelope *env,
                                uint8_t checksum[STORE_CHECKSUM_LEN]);

/* Create a secret with version 1. KB_ERR_EXISTS if the name is taken (also by a soft-deleted
 * secret: restore or purge it first), KB_ERR_NOT_FOUND if the owner group does not exist,
 * KB_ERR_TOO_LARGE if content_len is over the limit. */
KB_WUR kb_err store_secret_create(store *st, const store_secret_new *s, const store_version_new *v,
                                  store_seal_fn seal, void *seal_ctx, const char *actor,
                                  int64_t now, int64_t *id_out, store_audit *au);
/* Add the next version (latest + 1, never reused). KB_ERR_CONFLICT if the secret is deleted. */
KB_WUR kb_err store_version_add(store *st, int64_t secret_id, const store_version_new *v,
                                store_seal_fn seal, void *seal_ctx, const char *actor, int64_t now,
                                int64_t *version_out, store_audit *au);

/* Fields to change; NULL / -1 mean "unchanged". */
typedef struct {
    const char *description;
    int cloud_sync;         /* -1, 0 or 1; setting 1 fails with KB_ERR_TOO_LARGE if any
                               version's content is over MODEL_CLOUD_CONTENT_MAX, and with
                               KB_ERR_INVALID if the latest version's content is empty */
    int64_t owner_group_id; /* -1 unchanged, 0 none, else a group id */
} store_secret_patch;
#define STORE_SECRET_PATCH_INIT                                                                    \
    {                                                                                              \
        NULL, -1, -1                                                                               \
    }

KB_WUR kb_err store_secret_update(store *st, int64_t secret_id, const store_secret_patch *p,
                                  const char *actor, int64_t now, store_audit *au);
/* Soft delete (sets deleted_at; clients stop seeing it) and restore. */
KB_WUR kb_err store_secret_delete(store *st, int64_t secret_id, const char *actor, int64_t now,
                                  store_audit *au);
KB_WUR kb_err store_secret_restore(store *st, int64_t secret_id, const char *actor, int64_t now,
                                   store_audit *au);
/* Remove a soft-deleted secret with all its versions, envelopes, grants and fetch log for good.
 * KB_ERR_CONFLICT if it is not deleted. */
KB_WUR kb_err store_secret_purge(store *st, int64_t secret_id, store_audit *au);

/* Admin reads (row MACs verified). With include_deleted false, deleted secrets are NOT_FOUND. */
KB_WUR kb_err store_secret_get(store *st, const char *name, bool include_deleted,
                               store_secret *out);
KB_WUR kb_err store_secret_get_by_id(store *st, int64_t id, bool include_deleted,
                                     store_secret *out);
/* All secrets with their latest version's metadata (no envelopes), by name. */
KB_WUR kb_err store_secret_list(store *st, bool include_deleted, store_record **out, size_t *n);

/* A counter that grows after every change made through this handle that can alter what a client
 * may list or read, or how its listing is rendered: secrets, versions, grants, memberships,
 * clients, group deletion. Activity markers, the fetch log and the audit log do not move it.
 * It is bumped after the backend's transaction has ended, so a caller that reads it BEFORE
 * taking a listing may cache that listing under the value read and serve it while the counter
 * is unchanged: a newer commit always shows as a newer value first. Changes made by another
 * process or another handle on the same database are not seen: bound any cache's lifetime.
 * keybridged's API layer caches rendered listings under it (docs/internals/api.md). The value
 * starts at a process-wide distinct offset per handle, so (handle, generation) never repeats in a
 * process even when a closed handle's memory is reused by a new one. */
uint64_t store_generation(store *st);

/* Database round trips this handle has made so far: statements sent to a database server and
 * their answers awaited (PostgreSQL: every PQexec, PQprepare and PQexecPrepared, BEGIN, COMMIT,
 * ROLLBACK and the writers' advisory lock included; a (re)connection counts as one). Always 0
 * on SQLite (in process). keybridged exports it as keybridged_store_round_trips_total. */
uint64_t store_round_trips(store *st);

#define STORE_PAGE_MAX 10000 /* rows one store_secret_list_page call may examine */

/* One page of store_secret_list, for listings too large to hold at once (100,000 secrets):
 * secrets whose name sorts after `after` (NULL or "" = from the start), by name, examining at
 * most `limit` (1..STORE_PAGE_MAX) rows. *next gets a malloc'd cursor to pass as `after` for the
 * next page, or NULL after the last page. Rows failing their MAC (logged) and, without
 * include_deleted, deleted secrets are dropped, so a page may hold fewer than `limit` records
 * (even none) while *next is set: continue until *next is NULL. Each page is its own snapshot:
 * a secret created or deleted meanwhile may or may not appear, but none appears twice.
 * api_admin.c streams the admin listing page by page with it. */
KB_WUR kb_err store_secret_list_page(store *st, bool include_deleted, const char *after,
                                     size_t limit, store_record **out, size_t *n, char **next);

/* Versions of one secret, newest first (no envelopes). */
KB_WUR kb_err store_version_list(store *st, int64_t secret_id, store_version **out, size_t *n);
/* One version (0 = latest) with its envelope, for admin reads and rollback. */
KB_WUR kb_err store_version_get(store *st, int64_t secret_id, int64_t version, store_record *out);
/* Live secrets whose latest version expires in [from, to], soonest first. */
KB_WUR kb_err store_secrets_expiring(store *st, int64_t from, int64_t to, store_record **out,
                                     size_t *n);

/* ---- groups, clients, memberships, grants (admin) ------------------------------------------ */

KB_WUR kb_err store_group_create(store *st, const char *name, const char *description,
                                 const char *actor, int64_t now, int64_t *id_out, store_audit *au);
KB_WUR kb_err store_group_get(store *st, const char *name, store_group *out);
KB_WUR kb_err store_group_list(store *st, store_group **out, size_t *n);
/* Removes its memberships and grants. KB_ERR_CONFLICT while it owns secrets. */
KB_WUR kb_err store_group_delete(store *st, int64_t group_id, store_audit *au);

typedef struct {
    const char *spiffe_id;
    const char *app_name;    /* NULL = "" */
    const char *description; /* NULL = "" */
    bool enabled;
    bool admin;
} store_client_new;

/* The cloud flag is derived from the SPIFFE ID path and the configured prefixes; admin together
 * with cloud is refused with KB_ERR_INVALID. KB_ERR_EXISTS for a known SPIFFE ID. */
KB_WUR kb_err store_client_create(store *st, const store_client_new *c, const char *actor,
                                  int64_t now, int64_t *id_out, store_audit *au);
/* The verified client for a SPIFFE ID: what the server calls on every request. KB_ERR_NOT_FOUND
 * if unknown, KB_ERR_INTEGRITY if its row MAC does not match. Disabled clients are returned
 * (enabled = false): the caller denies them. */
KB_WUR kb_err store_client_get(store *st, const char *spiffe_id, store_client *out);
KB_WUR kb_err store_client_get_by_id(store *st, int64_t id, store_client *out);
/* All clients (rows failing their MAC are left out and logged). */
KB_WUR kb_err store_client_list(store *st, store_client **out, size_t *n);

typedef struct {
    int enabled;             /* -1 unchanged */
    int admin;               /* -1 unchanged; 1 refused for a cloud client */
    const char *app_name;    /* NULL unchanged */
    const char *description; /* NULL unchanged */
} store_client_patch;
#define STORE_CLIENT_PATCH_INIT                                                                    \
    {                                                                                              \
        -1, -1, NULL, NULL                                                                         \
    }

KB_WUR kb_err store_client_update(store *st, int64_t client_id, const store_client_patch *p,
                                  store_audit *au);
KB_WUR kb_err store_client_delete(store *st, int64_t client_id, store_audit *au);
/* Record activity: last_seen is written only if older than STORE_TOUCH_INTERVAL, and, when
 * listed is true, likewise last_list_at (a full listing by the client's syncer). */
KB_WUR kb_err store_client_seen(store *st, int64_t client_id, int64_t now, bool listed);
/* Enabled, non-admin clients whose last listing is before `before` (or who never listed). */
KB_WUR kb_err store_clients_stale(store *st, int64_t before, store_client **out, size_t *n);

KB_WUR kb_err store_membership_add(store *st, int64_t client_id, int64_t group_id, store_audit *au);
KB_WUR kb_err store_membership_remove(store *st, int64_t client_id, int64_t group_id,
                                      store_audit *au);
/* Groups of a client / clients of a group (verified memberships only). */
KB_WUR kb_err store_client_groups(store *st, int64_t client_id, store_group **out, size_t *n);
KB_WUR kb_err store_group_clients(store *st, int64_t group_id, store_client **out, size_t *n);

KB_WUR kb_err store_grant_add(store *st, int64_t group_id, int64_t secret_id, store_audit *au);
KB_WUR kb_err store_grant_remove(store *st, int64_t group_id, int64_t secret_id, store_audit *au);
/* Groups granted a secret (verified grants only). */
KB_WUR kb_err store_secret_groups(store *st, int64_t secret_id, store_group **out, size_t *n);

/* ---- client reads (access decided here) ----------------------------------------------------- */

/* Metadata of every secret the client may read (shares a group, not deleted; for a cloud client
 * only cloud_sync ones), by name, without envelopes: listing never needs the HSM.
 * KB_ERR_DENIED if the client is disabled, KB_ERR_INTEGRITY if its own row is tampered with;
 * tampered memberships, grants or secret rows drop just those paths (logged). */
KB_WUR kb_err store_readable_list(store *st, int64_t client_id, store_record **out, size_t *n);
/* One readable secret with its envelope: version 0 = latest. KB_ERR_NOT_FOUND if it does not
 * exist or is not readable, KB_ERR_TAMPERED if a row on the only access path (secret row,
 * membership, grant) fails its MAC (the server answers it like KB_ERR_NOT_FOUND), and
 * KB_ERR_INTEGRITY if the version row or latest_version does (like a bad GCM tag). */
KB_WUR kb_err store_readable_get(store *st, int64_t client_id, const char *name, int64_t version,
                                 store_record *out);
/* Latest versions of up to STORE_BATCH_MAX names, in one consistent snapshot. out[i] and errs[i]
 * (arrays of n) get each name's record or error; the call itself fails only on a bad argument,
 * a disabled/tampered client, or a database error. */
KB_WUR kb_err store_readable_get_batch(store *st, int64_t client_id, const char *const *names,
                                       size_t n, store_record *out, kb_err *errs);

/* ---- fetch log ----------------------------------------------------------------------------- */

/* Remember that client fetched secret at version (one row per client+secret, keeping the
 * latest version and time). */
KB_WUR kb_err store_fetch_record(store *st, int64_t client_id, int64_t secret_id, int64_t version,
                                 int64_t now);
/* Expiry notifications (notify.h): has the one for (secret, version, window seconds) been
 * delivered? Mark it delivered (idempotent), with its audit row au (the delivery's
 * secret.expiry_notify) in the same transaction: both are committed or neither. Rows go with the
 * secret on purge. */
KB_WUR kb_err store_notify_sent(store *st, int64_t secret_id, int64_t version, int64_t window,
                                bool *sent);
KB_WUR kb_err store_notify_mark(store *st, int64_t secret_id, int64_t version, int64_t window,
                                int64_t now, store_audit *au);
/* Who holds which version of a secret, by client SPIFFE ID. */
KB_WUR kb_err store_secret_status(store *st, int64_t secret_id, store_fetch **out, size_t *n);

/* ---- freeing ------------------------------------------------------------------------------- */

void store_envelope_clear(store_envelope *e); /* wipes and frees, leaves it all-zero */
void store_secret_clear(store_secret *s);
void store_version_clear(store_version *v);
void store_record_clear(store_record *r);
void store_group_clear(store_group *g);
void store_client_clear(store_client *c);
void store_secrets_free(store_secret *a, size_t n);
void store_versions_free(store_version *a, size_t n);
void store_records_free(store_record *a, size_t n);
void store_groups_free(store_group *a, size_t n);
void store_clients_free(store_client *a, size_t n);
void store_fetches_free(store_fetch *a, size_t n);

#endif
