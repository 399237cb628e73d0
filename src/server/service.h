/* service.h - keybridged's core: the store, the keystore and the audit log working together.
 *
 * Everything that decides access or touches secret content goes through here, whether it is
 * called by the HTTPS API, by the `keybridge` CLI in local mode, or by the bootstrap command:
 *   - writes seal each version under a fresh data key (envelope.h) and record its checksum;
 *   - client reads check the client (enabled, row MAC), then access (store_readable_*), then
 *     unwrap in the token, and record who fetched which version (fetch log);
 *   - every content read, change and denial is appended to the audit chain.
 * Callers pass an svc_actor naming who is asking and from where, for the audit log.
 */
#ifndef KB_SERVER_SERVICE_H
#define KB_SERVER_SERVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "dkcache.h"
#include "hsm_budget.h"
#include "lib/config.h"
#include "lib/keystore.h"
#include "lib/secbuf.h"
#include "store.h"
#include "store_migrate.h"

typedef struct svc svc;

/* Who is asking: a SPIFFE ID (or "bootstrap" / "local:<user>"), the peer address, and the time. */
typedef struct {
    const char *identity;
    const char *peer;
    int64_t now;
} svc_actor;

/* Open everything keybridged needs from its configuration: the keystore (PKCS#11 token with the
 * PIN read from pin_file, or the development key file), the purpose keys derived through it
 * (checksum, row MAC, audit), the store and the audit log. create = true also creates the
 * master keys in the token if absent (bootstrap); otherwise they must exist. Errors are logged
 * with what failed (never a secret). */
KB_WUR kb_err svc_open(const kb_config *cfg, bool create, svc **out);
void svc_close(svc *s);

store *svc_store(svc *s);
/* [audit] anchor_file, or NULL when the configuration has none. */
const char *svc_anchor_file(svc *s);
/* [server] trust_domain, or NULL when the configuration has none. */
const char *svc_trust_domain(svc *s);
/* Held by the admin API around "would this leave no enabled admin?" and the change itself, so two
 * concurrent demotions cannot both pass the check (one process; see docs/api.md). */
pthread_mutex_t *svc_admin_mu(svc *s);
audit_log *svc_audit(svc *s);
kb_keystore *svc_keystore(svc *s);
hsm_budget *svc_budget(svc *s);
dkcache *svc_dkcache(svc *s);

/* HSM budget and data-key cache ([hsm_budget], issue 7): every token wrap (writes, rollback) and
 * unwrap (reads that miss the data-key cache) takes a token from the global, class (cloud or
 * data center) and per-identity buckets first. Empty: the call returns KB_ERR_LIMIT, makes no
 * token call, changes nothing and is not audited; svc_retry_after() then gives the hint. */

/* Whole seconds (>= 1) until actor a (a cloud client if cloud) can get a token again. */
int64_t svc_retry_after(svc *s, const svc_actor *a, bool cloud);

/* Periodic upkeep (serve runs it every second): wipes expired cached data keys, exports the
 * audit anchor and, every [store] integrity_check_interval, runs svc_check_store. */
void svc_maintenance(svc *s);
/* The full rollback check now (store_verify; serve runs it on SIGHUP too): a failure is logged,
 * audited (action "store_integrity") and from then on the store refuses to serve. */
kb_err svc_check_store(svc *s);
/* Write the latest signed audit anchor to [audit] anchor_file (0600, atomically) if it changed;
 * svc_maintenance does this every time it runs. No-op without an anchor_file. */
void svc_export_anchor(svc *s);
/* Wipe the cached data keys of a secret (deleted, purged). */
void svc_forget_secret(svc *s, int64_t secret_id);

/* Append an audit event for an action taken by actor (result: KB_OK or the error). Audit
 * failures are logged, never returned: they must not change the outcome the caller reports. */
void svc_audit_event(svc *s, const svc_actor *a, const char *action, const char *object,
                     int64_t version, kb_err result);

/* A change and its audit row in one store transaction (audit.h, store_audit): svc_change_begin
 * prepares au for actor a (the row says "ok"; version 0, or the version the op creates); pass au
 * to the store change op, then call svc_change_end with the op's result: on success the row was
 * committed with the change; on failure nothing was and the failure is appended on its own.
 * begin fails (KB_ERR_TOO_LARGE) for an event the log cannot hold: skip the change (a change is
 * never made without its row) and still call svc_change_end. */
KB_WUR kb_err svc_change_begin(svc *s, const svc_actor *a, const char *action, const char *object,
                               store_audit *au);
void svc_change_end(svc *s, store_audit *au, kb_err rc);

/* ---- admin writes ---------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *description; /* NULL = "" */
    const char *owner_group; /* group name or NULL */
    bool cloud_sync;
    const uint8_t *content;
    size_t content_len;
    const char *metadata;     /* JSON object text or NULL */
    int64_t expires_at;       /* 0 = taken from the content (expiry.h) if it has one, else never */
    bool expiry_from_content; /* the caller asked for the content's expiry: refuse the write
                               * (KB_ERR_INVALID) if there is none or it is malformed */
} svc_secret_spec;

/* Create a secret with version 1. */
KB_WUR kb_err svc_secret_create(svc *s, const svc_actor *a, const svc_secret_spec *spec,
                                int64_t *id_out);
/* Write a new version of an existing secret (content, metadata, expiry as in spec; name must
 * exist; description/owner/cloud_sync in spec are ignored). */
KB_WUR kb_err svc_secret_put(svc *s, const svc_actor *a, const svc_secret_spec *spec,
                             int64_t *version_out);
/* Write a new version holding the content, metadata and expiry of an older version. */
KB_WUR kb_err svc_secret_rollback(svc *s, const svc_actor *a, const char *name, int64_t to_version,
                                  int64_t *version_out);
/* Read a version's content as an admin (audited as secret.admin_read). version 0 = latest. */
KB_WUR kb_err svc_secret_read_admin(svc *s, const svc_actor *a, const char *name, int64_t version,
                                    store_record *rec, kb_secret **content);

/* ---- clients --------------------------------------------------------------------------------- */

/* The enabled client for a verified SPIFFE ID. Unknown → KB_ERR_NOT_FOUND, disabled →
 * KB_ERR_DENIED, tampered row → KB_ERR_INTEGRITY; each denial is audited. */
KB_WUR kb_err svc_client_auth(svc *s, const svc_actor *a, store_client *out);

/* Metadata of what the client may read (no token operation); marks the client as listed. */
KB_WUR kb_err svc_client_list(svc *s, const svc_actor *a, const store_client *c, store_record **out,
                              size_t *n);
/* One readable secret's content (version 0 = latest): access check, unwrap, open, fetch log,
 * audit. Not readable and missing are the same KB_ERR_NOT_FOUND. */
KB_WUR kb_err svc_client_read(svc *s, const svc_actor *a, const store_client *c, const char *name,
                              int64_t version, store_record *rec, kb_secret **content);
/* Batch read: rec[i], content[i], errs[i] for each of n names (n <= STORE_BATCH_MAX). Names the
 * budget cannot cover get errs[i] = KB_ERR_LIMIT (deferred); the others are served, their fetch
 * records and audit rows committed in one store transaction (if that fails, each fails). */
KB_WUR kb_err svc_client_read_batch(svc *s, const svc_actor *a, const store_client *c,
                                    const char *const *names, size_t n, store_record *rec,
                                    kb_secret **content, kb_err *errs);

/* ---- owners (issue 15: the console) ------------------------------------------------------- */

/* The one rule for who may manage (see, change, grant, reveal) a secret outside the client API:
 * an enabled admin manages every secret; another enabled client that is not a cloud client
 * manages the secrets whose owner group it is a member of (verified memberships), and nothing
 * else. The admin API (api.c, api_admin.c) applies it to every admin route, so the console and
 * the CLI see the same answers. */
typedef struct {
    bool admin;
    bool owner;      /* not an admin, and a member of the owner group of a live secret */
    int64_t *groups; /* a non-admin's groups (ids, verified memberships); NULL for an admin */
    size_t n;
} svc_scope;
/* The scope of client c (an enabled client from svc_client_auth). For a non-admin member of
 * groups this pages through the secrets until it finds one its groups own (owner), so a client
 * that owns nothing costs a scan of the secret rows (admin routes only: clients never call
 * them, and [fairness] caps every identity's request rate). */
KB_WUR kb_err svc_scope_get(svc *s, const store_client *c, svc_scope *out);
void svc_scope_clear(svc_scope *sc);
/* May the scope manage a secret with this owner group (0 = none: admins only)? */
bool svc_may_manage(const svc_scope *sc, int64_t owner_group_id);
/* Is group_id one of the owner's groups (admins: every group)? */
bool svc_scope_has_group(const svc_scope *sc, int64_t group_id);
/* May client c use the admin routes and log in to the console: an admin, or an owner (a member
 * of groups that own nothing has nothing to manage, and is refused like any client). */
bool svc_console_allowed(const store_client *c, const svc_scope *sc);

/* ---- bootstrap ------------------------------------------------------------------------------- */

/* Create the database, the master keys and the first admin client (and an "admins" group)
 * for admin_spiffe_id. Refuses (KB_ERR_EXISTS) if any client exists already. */
KB_WUR kb_err svc_bootstrap(const kb_config *cfg, const char *admin_spiffe_id);

/* `keybridged migrate`: open the store with its pending schema migrations applied (the
 * PostgreSQL backend applies them only here and at bootstrap; SQLite at every open) and give the
 * schema version reached. KB_ERR_SCHEMA if the database is newer than this binary. */
KB_WUR kb_err svc_migrate(const kb_config *cfg, int *version);

/* `migrate-store` (keybridged migrate-store, keybridge --local CONF migrate-store): copy the
 * store at `from` into the new, empty store at `to` (store_migrate.h) with this configuration's
 * token: the row-MAC and audit keys, the anchor signature check and the state counter. [store]
 * url is not used: both stores are named on the command line. */
KB_WUR kb_err svc_migrate_store(const kb_config *cfg, const char *from, const char *to,
                                store_migrate_report *r);

/* The `migrate-store --from URL --to URL` command of both programs (prog: "keybridged" or
 * "keybridge"): parses argv (argv[0] = "migrate-store"), runs svc_migrate_store and prints the
 * report (table counts, state counter, audit rows, digest; never a value). Returns the exit code.
 */
int svc_migrate_store_cmd(const kb_config *cfg, const char *prog, int argc, char **argv);

/* Break-glass recovery on the server host (`keybridged recover-admin`): make admin_spiffe_id an
 * enabled admin (creating the client if needed). Needs the token (PIN) like every svc_open.
 * Refuses (KB_ERR_EXISTS) while an enabled admin exists unless force. Audited as
 * "admin.recover" by identity "recover-admin", success or not, then the head is anchored. The ID
 * must be canonical and in [server] trust_domain when that is set (KB_ERR_INVALID). */
KB_WUR kb_err svc_recover_admin(const kb_config *cfg, const char *admin_spiffe_id, bool force);

#endif
