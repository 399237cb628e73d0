/* spiffe_bundle.h - SPIFFE trust bundles and sets of them (one per trust domain).
 *
 * A bundle is the set of authorities of one trust domain (SPIFFE_Trust_Domain_and_Bundle.md 4):
 * X.509 roots that X509-SVIDs chain to, and JWT-SVID signing keys by key id. It is read from
 *
 *   - a SPIFFE bundle document: a JWKS whose `keys` entries carry `use` = "x509-svid" (`x5c` with
 *     exactly one base64 DER certificate, which becomes a root; X509-SVID.md 6) or "jwt-svid" (a
 *     `kid` and an EC or RSA public key; JWT-SVID.md 6), with optional `spiffe_sequence` and
 *     `spiffe_refresh_hint`. Entries with another `use` are ignored, as 4.2.2 requires;
 *   - a PEM file of concatenated root certificates (no sequence, no JWT keys).
 *
 * The document never names its trust domain: the caller says which one it is for (configuration,
 * or the trust domain of the endpoint it came from; section 5).
 *
 * Parsing is strict and all-or-nothing: any malformed entry refuses the whole document with a
 * reason (a static string that never quotes the input), so a corrupted update never silently
 * drops an authority. Entries the spec says to ignore (unknown `use`) are ignored.
 *
 * A bundle and a bundle set are immutable once shared: build them, then hand them to the threads
 * that verify; to update, build a new set and swap it in (spiffe_bundle_set_up_ref/free count
 * references, so a verifier holding the old set keeps it alive).
 */
#ifndef KB_SPIFFE_BUNDLE_H
#define KB_SPIFFE_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "buf.h"
#include "err.h"

/* Largest bundle document (JWKS or PEM) read, in bytes. */
#define SPIFFE_BUNDLE_MAX ((size_t)1024 * 1024)
/* Most entries in one bundle (x509 roots + JWT keys). */
#define SPIFFE_BUNDLE_KEYS_MAX 256
/* Most trust domains in one bundle set. */
#define SPIFFE_BUNDLE_SET_MAX 1024

typedef struct spiffe_bundle spiffe_bundle;
typedef struct spiffe_bundle_set spiffe_bundle_set;

/* An empty bundle for trust domain td (a bare name such as "example.org", validated). */
KB_WUR kb_err spiffe_bundle_new(const char *td, spiffe_bundle **out);
void spiffe_bundle_free(spiffe_bundle *b);

/* Parse a SPIFFE bundle document (JWKS JSON) for trust domain td. KB_ERR_INVALID with *why on any
 * malformed input, KB_ERR_TOO_LARGE over SPIFFE_BUNDLE_MAX or SPIFFE_BUNDLE_KEYS_MAX. Rules:
 *   - a JSON object with a `keys` array (required, may be empty; RFC 7517 5);
 *   - `spiffe_sequence`, `spiffe_refresh_hint`: optional non-negative integers;
 *   - every key is an object with a string `use` and a string `kty`;
 *   - x509-svid: `x5c` is an array of exactly one base64 DER certificate with nothing after it;
 *     when the entry has EC (crv/x/y) or RSA (n/e) members, they must be the certificate's key
 *     (RFC 7517 4.7); no `kid` (X509-SVID.md 6.1);
 *   - jwt-svid: a non-empty `kid`, unique in the bundle, and an EC (P-256/384/521, point on the
 *     curve) or RSA (>= 2048 bits) public key;
 *   - other `use` values: the entry is ignored. */
KB_WUR kb_err spiffe_bundle_parse_jwks(const char *td, const void *buf, size_t len,
                                       spiffe_bundle **out, const char **why);

/* Parse concatenated PEM CERTIFICATE blocks (at least one; other PEM block types are refused). */
KB_WUR kb_err spiffe_bundle_parse_pem(const char *td, const void *buf, size_t len,
                                      spiffe_bundle **out, const char **why);

/* JWKS if the first non-blank byte is '{', else PEM. */
KB_WUR kb_err spiffe_bundle_parse(const char *td, const void *buf, size_t len, spiffe_bundle **out,
                                  const char **why);

/* Read path (at most SPIFFE_BUNDLE_MAX bytes) and spiffe_bundle_parse() it. */
KB_WUR kb_err spiffe_bundle_load_file(const char *td, const char *path, spiffe_bundle **out,
                                      const char **why);

const char *spiffe_bundle_trust_domain(const spiffe_bundle *b);

/* X.509 roots. spiffe_bundle_x509_root() borrows (NULL past the end). */
size_t spiffe_bundle_x509_count(const spiffe_bundle *b);
X509 *spiffe_bundle_x509_root(const spiffe_bundle *b, size_t i);
/* Add a root (the bundle takes its own reference; an identical certificate is added once). */
KB_WUR kb_err spiffe_bundle_add_x509_root(spiffe_bundle *b, X509 *root);
/* The roots as an X509_STORE of trust anchors, for x509svid_verify (borrowed; read-only). */
X509_STORE *spiffe_bundle_x509_store(const spiffe_bundle *b);

/* JWT-SVID keys by key id. spiffe_bundle_jwt_key() borrows (NULL if kid is unknown). */
size_t spiffe_bundle_jwt_count(const spiffe_bundle *b);
EVP_PKEY *spiffe_bundle_jwt_key(const spiffe_bundle *b, const char *kid);
/* Add a public key under kid (KB_ERR_EXISTS if kid is taken). The bundle takes a reference. */
KB_WUR kb_err spiffe_bundle_add_jwt_key(spiffe_bundle *b, const char *kid, EVP_PKEY *key);

/* spiffe_sequence (section 4.1.1): has_sequence is 0 when the document had none. */
int spiffe_bundle_has_sequence(const spiffe_bundle *b);
uint64_t spiffe_bundle_sequence(const spiffe_bundle *b);
KB_WUR kb_err spiffe_bundle_set_sequence(spiffe_bundle *b, uint64_t seq); /* <= INT64_MAX */
/* spiffe_refresh_hint in seconds (section 4.1.2); -1 when absent. */
int64_t spiffe_bundle_refresh_hint(const spiffe_bundle *b);
KB_WUR kb_err spiffe_bundle_set_refresh_hint(spiffe_bundle *b, int64_t seconds); /* >= 0 */

/* May `next` replace `cur` (the bundle in use)? KB_ERR_INVALID if next is for another trust
 * domain; KB_ERR_CONFLICT if its spiffe_sequence is lower than cur's, or cur has a sequence and
 * next has none (a rollback to an older document must not pass). An equal sequence is accepted
 * (the same document read again). cur NULL: any next is accepted. */
KB_WUR kb_err spiffe_bundle_check_update(const spiffe_bundle *cur, const spiffe_bundle *next,
                                         const char **why);

/* Serialize as a SPIFFE bundle document (compact JSON) appended to out: spiffe_sequence and
 * spiffe_refresh_hint when set, then one x509-svid entry per root (kty + EC crv/x/y or RSA n/e,
 * x5c with the base64 DER) and one jwt-svid entry per JWT key (kid + key members). */
KB_WUR kb_err spiffe_bundle_to_jwks(const spiffe_bundle *b, kb_dbuf *out);
/* The roots as concatenated PEM CERTIFICATE blocks appended to out. */
KB_WUR kb_err spiffe_bundle_to_pem(const spiffe_bundle *b, kb_dbuf *out);

/* A map trust domain -> bundle (for federation: one bundle per trust domain trusted). */
KB_WUR kb_err spiffe_bundle_set_new(spiffe_bundle_set **out);
/* Take another reference / drop one (the last drop frees the set and its bundles). */
void spiffe_bundle_set_up_ref(spiffe_bundle_set *s);
void spiffe_bundle_set_free(spiffe_bundle_set *s);
/* Add b, replacing any bundle of the same trust domain. On KB_OK the set owns b; on error the
 * caller still does. Not for a set already shared with other threads. */
KB_WUR kb_err spiffe_bundle_set_put(spiffe_bundle_set *s, spiffe_bundle *b);
/* The bundle of trust domain td, or NULL (borrowed, valid while the set is). */
const spiffe_bundle *spiffe_bundle_set_get(const spiffe_bundle_set *s, const char *td);
size_t spiffe_bundle_set_count(const spiffe_bundle_set *s);

#endif
