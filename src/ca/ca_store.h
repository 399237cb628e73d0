/* ca_store.h - keybridge-ca's state: CA generations, registrations, issuance audit, renewal
 * leases and the issued-certificate log. Two backends behind one ops table (ca_store_impl.h):
 * SQLite (ca_store_sqlite.c, one host) and PostgreSQL (ca_store_pg.c, several CA replicas on one
 * database), picked by ca_store_open from the location (docs/internals/ca-store.md).
 *
 * Never holds a private key: leaf keys go to their target and are wiped; the CA key lives in the
 * token (or the dev key file) and only its reference is stored here.
 *
 * Concurrency (SQLite; PostgreSQL keeps the same contract with row locks, see ca_store_pg.c):
 * SQLite in WAL mode with full sync and a busy timeout, so the CLI (register,
 * remove) and the daemon share the file. One ca_store may be used from several threads (a
 * recursive mutex serialises them). The write guard (ca_store_write_begin/end) holds an IMMEDIATE
 * transaction, i.e. SQLite's write lock, across "check the registration still exists" and the
 * write to its target: a remove (which deletes the row in its own IMMEDIATE transaction, then the
 * stored SVID) either runs wholly before the check - the renewal then sees the row gone and
 * writes nothing - or wholly after the write, and deletes what was written. Registration ids are
 * AUTOINCREMENT, never reused, so an id is a registration's generation: a remove followed by a new
 * registration for the same SPIFFE ID and target never passes an old renewal's check.
 */
#ifndef KB_CA_STORE_H
#define KB_CA_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

typedef struct ca_store ca_store;

#define CA_STATE_PENDING "pending"   /* intermediate: CSR out, signed chain not imported yet */
#define CA_STATE_PREPARED "prepared" /* next CA: published in the bundle, not signing yet */
#define CA_STATE_ACTIVE "active"     /* signs every new SVID; exactly one */
#define CA_STATE_RETIRED "retired"   /* no longer signs; in the bundle until it expires */

#define CA_REF_MAX 512
#define CA_TARGET_MAX 1024
#define CA_STORE_TEXT_MAX ((size_t)256 * 1024)
#define CA_REG_SANS_MAX 4200 /* >= CA_SANS_STR_MAX (ca_sans.h) */
#define CA_OWNER_MAX 128     /* a replica's lease owner id */
#define CA_CLAIM_MAX 256     /* registrations claimed at once, at most */

typedef struct {
    int64_t gen;
    char state[16];
    char key_kind[16];        /* "pkcs11" | "file" */
    char key_ref[CA_REF_MAX]; /* token key label, or key file path */
    char *cert_pem;           /* CA certificate (NULL while pending) */
    char *chain_pem;          /* certificates above it, up to but excluding the root ("" none) */
    char *roots_pem;          /* the root(s) it chains to (its own cert for a root CA) */
    int64_t not_after;        /* of cert_pem; 0 while pending */
    int64_t created;
} ca_gen;

typedef struct {
    int64_t rid; /* AUTOINCREMENT: the registration's generation */
    char spiffe_id[2049];
    int64_t ttl;
    int64_t avail; /* availability target, seconds */
    char target[CA_TARGET_MAX];
    int renewable;
    char endpoint[512];          /* Secrets Manager endpoint override ("" = default) */
    char region[64];             /* Secrets Manager region ("" = default) */
    char creds_file[CA_REF_MAX]; /* credentials file ("" = environment) */
    /* renewal state */
    int64_t not_after;  /* of the SVID last written; 0 = none yet */
    int64_t next_renew; /* when to renew next */
    int64_t failures;   /* consecutive failures */
    int64_t bundle_seq; /* bundle sequence of the last write */
    int64_t created;
    char sans[CA_REG_SANS_MAX];     /* DNS/IP SANs, ca_sans_format's form ("" = none) */
    int adopt_spire;                /* sm: may take over a secret tagged spire-svid=true */
    char lease_owner[CA_OWNER_MAX]; /* replica renewing it now ("" = none) */
    int64_t lease_until;            /* the lease ends (unix seconds; store clock) */
} ca_reg;

/* Open the store at where: a postgresql:// or postgres:// URL (libpq; the password only from
 * passfile, a 0600 libpq password file, or the URL's passfile= / ~/.pgpass - never in the URL or
 * PGPASSWORD: KB_ERR_CONFIG), anything else is an SQLite file path. passfile may be NULL. */
KB_WUR kb_err ca_store_open_at(const char *where, const char *passfile, ca_store **out);
KB_WUR kb_err ca_store_open(const char *path, ca_store **out); /* ca_store_open_at(path, NULL) */
void ca_store_close(ca_store *st);
/* "sqlite" or "postgresql". */
const char *ca_store_backend(const ca_store *st);
/* 1 if where names a PostgreSQL database. */
int ca_store_is_pg_url(const char *where);

/* Small key/value settings: "trust_domain", "bundle_sequence". */
KB_WUR kb_err ca_store_meta_get(ca_store *st, const char *k, char *v, size_t vlen);
KB_WUR kb_err ca_store_meta_set(ca_store *st, const char *k, const char *v);
/* Atomically add 1 to an integer setting (missing = 0) and return the new value. */
KB_WUR kb_err ca_store_meta_incr(ca_store *st, const char *k, int64_t *out);

/* Generations. add sets g->gen. */
KB_WUR kb_err ca_store_gen_add(ca_store *st, ca_gen *g);
KB_WUR kb_err ca_store_gen_list(ca_store *st, ca_gen **out, size_t *n); /* by gen ascending */
void ca_gen_list_free(ca_gen *g, size_t n);
KB_WUR kb_err ca_store_gen_update(ca_store *st, const ca_gen *g); /* state, cert, chain, roots */
/* Make gen the active one and every other active one retired, in one transaction. */
KB_WUR kb_err ca_store_gen_activate(ca_store *st, int64_t gen);

/* Registrations. add: KB_ERR_EXISTS if (spiffe_id, target) is registered; sets r->rid. */
KB_WUR kb_err ca_store_reg_add(ca_store *st, ca_reg *r);
KB_WUR kb_err ca_store_reg_get(ca_store *st, int64_t rid, ca_reg *out);
KB_WUR kb_err ca_store_reg_list(ca_store *st, ca_reg **out, size_t *n);
/* The TTL (and, if sans is not NULL, the DNS/IP SANs) of the newest registration of spiffe_id
 * marked renewable (KB_ERR_NOT_FOUND if none): the renew API's per-request check, on a
 * read-only connection that never waits for a commit. */
KB_WUR kb_err ca_store_reg_renewable(ca_store *st, const char *spiffe_id, int64_t *ttl, char *sans,
                                     size_t sans_len);
/* Delete the row (KB_ERR_NOT_FOUND if absent), copying it to *removed first. */
KB_WUR kb_err ca_store_reg_remove(ca_store *st, int64_t rid, ca_reg *removed);
/* Renewal work is claimed by leases, so several CA replicas on one database renew each
 * registration once per window: a claim takes up to max due registrations (not_after 0, next_renew
 * <= now, bundle_seq < bundle_seq, or any with force) with rid > after_rid whose lease has ended
 * (or is owner's), sets lease_owner = owner and lease_until = store clock + lease, and returns
 * them by rid ascending. PostgreSQL: one UPDATE over SELECT ... FOR UPDATE SKIP LOCKED, on the
 * database's clock; SQLite: one IMMEDIATE transaction. A replica that dies holding claims loses
 * them when the lease ends; the next claim by any replica retakes them. */
typedef struct {
    const char *owner;  /* this replica's id (ca_renewer makes one) */
    int64_t now;        /* the pass's time: what is due */
    int64_t lease;      /* seconds */
    int64_t bundle_seq; /* the CA's bundle sequence: registrations written before it are due */
    int64_t after_rid;  /* a pass's cursor: each registration at most once per pass */
    size_t max;         /* 1..CA_CLAIM_MAX */
    int force;
} ca_claim;
KB_WUR kb_err ca_store_reg_claim(ca_store *st, const ca_claim *c, ca_reg **out, size_t *n);
/* A renewal failed: record next_renew and failures and end owner's lease (no-op if the row is
 * gone or another replica holds it now). */
KB_WUR kb_err ca_store_reg_retry(ca_store *st, int64_t rid, const char *owner, int64_t next_renew,
                                 int64_t failures);

/* A renewal completed (call inside the write guard, after the target write): the registration's
 * new state, its lease ended, and one row of the issued-certificate log - all in the guard's
 * transaction, so the log never shows a renewal the registration does not, and a renewal whose
 * replica died before the commit is neither logged nor completed (its claim is retaken). */
typedef struct {
    int64_t rid;
    const char *serial;
    const char *reason;
    const char *owner;
    int64_t not_after, next_renew, bundle_seq, at;
} ca_done;
KB_WUR kb_err ca_store_reg_done(ca_store *st, const ca_done *d);

/* The write guard (see the header comment). begin: KB_ERR_CONFLICT if registration rid no
 * longer exists, or (owner not NULL) its lease is no longer owner's - another replica retook it
 * (nothing is held then); on KB_OK the caller must call end exactly once. */
KB_WUR kb_err ca_store_write_begin(ca_store *st, int64_t rid);
KB_WUR kb_err ca_store_write_begin_lease(ca_store *st, int64_t rid, const char *owner);
KB_WUR kb_err ca_store_write_end(ca_store *st, int commit);

/* Audit of issuance: one row per certificate signed. Returns only once the row is committed
 * (synchronous=FULL), so a certificate is never handed out without its row surviving a crash.
 * Concurrent callers are group-committed: rows queued while one transaction is being written
 * go together in the next (one fsync per batch instead of per row). All of a batch or none. */
KB_WUR kb_err ca_store_audit_add(ca_store *st, const char *serial, const char *spiffe_id,
                                 const char *target, const char *reason, int64_t gen,
                                 int64_t not_after, int64_t at);
/* Call fn for each audit row, oldest first. */
typedef void (*ca_audit_fn)(void *arg, const char *serial, const char *spiffe_id,
                            const char *target, const char *reason, int64_t gen, int64_t not_after,
                            int64_t at);
KB_WUR kb_err ca_store_audit_each(ca_store *st, ca_audit_fn fn, void *arg);

/* Call fn for each row of the issued-certificate log (ca_store_reg_done), oldest first. */
typedef void (*ca_issued_fn)(void *arg, int64_t rid, const char *serial, const char *reason,
                             const char *owner, int64_t not_after, int64_t at);
KB_WUR kb_err ca_store_issued_each(ca_store *st, ca_issued_fn fn, void *arg);

#endif
