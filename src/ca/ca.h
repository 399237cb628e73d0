/* ca.h - the certificate authority of one trust domain: its generations, signer, bundle, and
 * issuance of X509-SVIDs (leaf key made here, or a public key from a CSR).
 *
 * The authority reads its state from the store (ca_store.h): the active generation signs, every
 * generation that is prepared, active, or retired but unexpired is in the bundle (rotation:
 * prepare, publish both, activate). ca_reload() re-reads it (the daemon calls it every tick, so
 * a `rotate activate` by the CLI takes effect). Thread-safe: issuance takes a read lock.
 */
#ifndef KB_CA_H
#define KB_CA_H

#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "ca_leafkey.h"
#include "ca_pca.h"
#include "ca_sans.h"
#include "ca_store.h"
#include "lib/err.h"
#include "lib/secbuf.h"
#include "lib/spiffe_bundle.h"
#include "lib/spiffe_id.h"

typedef struct ca_authority ca_authority;

/* Where CA keys live. module/token/pin are needed only for pkcs11 generations, pca only for
 * acm-pca generations (AWS Private CA signs; ca_pca.h). */
typedef struct {
    const char *pkcs11_module;
    const char *pkcs11_token;
    const kb_secret *pin; /* borrowed for the authority's lifetime */
    ca_pca *pca;          /* borrowed likewise */
} ca_keys;

/* Generation key kinds: a PKCS#11 token, a dev key file, or AWS Private CA (key_ref = the CA's
 * ARN; no key here: every leaf is signed by IssueCertificate). */
#define CA_KEY_PKCS11 "pkcs11"
#define CA_KEY_FILE "file"
#define CA_KEY_ACM_PCA "acm-pca"

/* Refresh hint published in the bundle (SPIFFE_Trust_Domain_and_Bundle.md 4.1.2). */
#define CA_BUNDLE_REFRESH_HINT 300
#define CA_DEFAULT_TTL 3600
/* Bounds of [server] svid_ttl, the CA's own server SVID: renewed at half its life, so 30 s is
 * a renewal every 15 s; a month is already far longer than DESIGN.md's short-lived servers. */
#define CA_MIN_SERVER_SVID_TTL 30
#define CA_MAX_SERVER_SVID_TTL (30 * 86400)

/* Open with the store's active generation (KB_ERR_NOT_FOUND if there is none: run init).
 * st stays owned by the caller and must outlive the authority. */
KB_WUR kb_err ca_open(ca_store *st, const ca_keys *keys, ca_authority **out);
void ca_free(ca_authority *ca);
/* Re-read generations; *changed = 1 if the active generation or bundle changed. */
KB_WUR kb_err ca_reload(ca_authority *ca, int *changed);

const char *ca_trust_domain(const ca_authority *ca);
int64_t ca_active_gen(ca_authority *ca);
int64_t ca_bundle_sequence(ca_authority *ca);
/* notAfter of the active CA certificate. */
time_t ca_not_after(ca_authority *ca);

/* The bundle as PEM or SPIFFE JWKS (appended to out). */
KB_WUR kb_err ca_bundle_pem(ca_authority *ca, kb_dbuf *out);
KB_WUR kb_err ca_bundle_jwks(ca_authority *ca, kb_dbuf *out);
/* A new reference-counted bundle set holding this trust domain's bundle (for verification). */
KB_WUR kb_err ca_bundle_set(ca_authority *ca, spiffe_bundle_set **out);

/* An issued SVID, all in memory. */
typedef struct {
    char *chain_pem;    /* leaf first, then intermediates */
    ca_keypem *key_pem; /* PKCS#8 PEM of the leaf key, locked (NULL when issued for a CSR) */
    char *bundle_pem;
    char serial[48]; /* hex */
    int64_t not_after;
    int64_t ca_gen;
    int64_t bundle_seq;
} ca_svid;

void ca_svid_clear(ca_svid *s);

/* Issue an SVID for id valid ttl seconds from now (clamped to the CA's notAfter). pub NULL: a
 * fresh P-256 key is generated and returned in key_pem; otherwise pub (from a checked CSR) is
 * certified and key_pem is NULL. With an acm-pca generation active, the key and a CSR are made
 * here and AWS Private CA signs (ca_pca_issue); the certificate it returns is checked
 * (ca_pca_check_leaf) before it is returned; a pub from someone else's CSR is refused
 * (KB_ERR_CONFIG: AWS Private CA needs the CSR its key signed). *why, when the caller asks
 * (ca_issue_sans_why), names what failed. When audit_target is not NULL an audit row (serial, ID,
 * target, reason, time) is written before returning; NULL only for the in-memory benchmark. */
KB_WUR kb_err ca_issue(ca_authority *ca, const spiffe_id *id, int64_t ttl, EVP_PKEY *pub,
                       const char *audit_target, const char *reason, ca_svid *out);
/* The same with DNS and IP SANs beside the URI SAN (sans may be NULL; the caller has checked
 * them against the policy, ca_policy_check_sans). */
KB_WUR kb_err ca_issue_sans(ca_authority *ca, const spiffe_id *id, const ca_sans *sans, int64_t ttl,
                            EVP_PKEY *pub, const char *audit_target, const char *reason,
                            ca_svid *out);
/* The same, with *why naming a failure (a static or thread-local string; may stay NULL). */
KB_WUR kb_err ca_issue_sans_why(ca_authority *ca, const spiffe_id *id, const ca_sans *sans,
                                int64_t ttl, EVP_PKEY *pub, const char *audit_target,
                                const char *reason, ca_svid *out, const char **why);
/* 1 if the active generation is signed by AWS Private CA. */
int ca_is_pca(ca_authority *ca);

/* The trust domain recorded in the store (set by init). */
KB_WUR kb_err ca_store_trust_domain(ca_store *st, char *td, size_t len);

/* Administration (keybridge-ca init / rotate / import). key_kind "pkcs11" or "file"; key_ref
 * is the token label or the key file path (a new key is created there). key_kind "acm-pca":
 * key_ref is the CA's ARN; the CA certificate and the chain above it come from
 * GetCertificateAuthorityCertificate (keys->pca), are checked (a CA with keyCertSign, a key
 * AWS can sign with, valid now, a chain ending at a self-signed root that verifies) and the
 * root becomes the bundle's; intermediate does not apply. */
typedef struct {
    const char *td;
    const char *key_kind;
    const char *key_ref;
    int64_t ttl;       /* root lifetime */
    int intermediate;  /* 1: make a CSR instead of a self-signed root */
    const char *state; /* CA_STATE_ACTIVE for init, CA_STATE_PREPARED for rotate prepare */
} ca_new_gen_opts;
/* Create a key and a generation. For an intermediate, *csr_pem (malloc'd) gets the CSR and the
 * generation is pending until ca_import_chain. Bumps the bundle sequence. */
KB_WUR kb_err ca_new_generation(ca_store *st, const ca_keys *keys, const ca_new_gen_opts *o,
                                int64_t *gen, char **csr_pem);
/* Import the signed chain for a pending generation: chain_pem = the CA certificate first, then
 * any upstream intermediates; roots_pem = upstream root(s). Verified: the certificate carries
 * the generation's key, follows the SPIFFE signing rules, has the trust domain's URI SAN, and
 * chains to the roots. Then the generation becomes `state`. */
KB_WUR kb_err ca_import_chain(ca_store *st, const ca_keys *keys, int64_t gen, const char *chain_pem,
                              const char *roots_pem, const char *state, const char **why);
/* Make gen active (the previous active one is retired; it stays in the bundle until it
 * expires). Bumps the bundle sequence. */
KB_WUR kb_err ca_activate(ca_store *st, int64_t gen);

#endif
