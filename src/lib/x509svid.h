/* x509svid.h - X509-SVIDs: verify a peer's certificate chain, check and load our own.
 *
 * The rules (X509-SVID.md; DESIGN.md "Identity"):
 *   leaf (sections 3.1, 4.1, 4.3, 4.4, 5.2)
 *     - exactly one URI SAN, a valid SPIFFE ID (spiffe_id.h) with a non-root path;
 *     - not a CA (basicConstraints cA false or absent);
 *     - key usage present, critical, with digitalSignature, without keyCertSign and cRLSign;
 *     - extended key usage, if present: clientAuth when the peer is a client
 *       (X509SVID_PURPOSE_CLIENT), serverAuth when it is a server (X509SVID_PURPOSE_SERVER);
 *   intermediates (3.2, 4.1, 4.3): each a CA with keyCertSign; a SPIFFE ID, if any, has no path;
 *   chain (5.1): RFC 5280 path validation (OpenSSL's X509_verify_cert) to the roots of the bundle
 *     of the leaf's own trust domain, and no other (a root of trust domain A never vouches for
 *     an ID in B), including every certificate's validity window at the verification time.
 *
 * Every rejection returns KB_ERR_AUTH (KB_ERR_INVALID for unparsable input) and sets *why to a
 * reason naming the rule ("leaf is a CA", "key usage not critical", "trust domain not trusted",
 * "certificate expired", "chain does not verify: <OpenSSL reason>", ...). Reasons never contain
 * key material. A reason is a static string or lives in a thread-local buffer: it stays valid until
 * the next x509svid_* call on the same thread (copy it to keep it).
 *
 * From a TLS server's verify callback (SSL_CTX_set_cert_verify_callback):
 *
 *     spiffe_id peer; const char *why;
 *     if (x509svid_verify(bundles, X509_STORE_CTX_get0_cert(ctx),
 *                         X509_STORE_CTX_get0_untrusted(ctx), X509SVID_PURPOSE_CLIENT, 0,
 *                         &peer, &why) != KB_OK) { log why; return 0; }
 *     // authorize spiffe_id_str(&peer)
 */
#ifndef KB_X509SVID_H
#define KB_X509SVID_H

#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "err.h"
#include "spiffe_bundle.h"
#include "spiffe_id.h"

/* What the peer proves its identity for: checked against the leaf's EKU when it has one.
 * NONE checks no EKU (loading our own SVID, which serves both directions). */
#define X509SVID_PURPOSE_NONE 0
#define X509SVID_PURPOSE_CLIENT 1 /* the peer is a TLS client: EKU must have clientAuth */
#define X509SVID_PURPOSE_SERVER 2 /* the peer is a TLS server: EKU must have serverAuth */

/* Most certificates in one SVID chain (leaf + intermediates) and largest PEM input. */
#define X509SVID_CHAIN_MAX 16
#define X509SVID_PEM_MAX ((size_t)1024 * 1024)

/* Verify a peer's SVID: leaf rules, intermediates' rules, then the chain to the bundle of the
 * leaf's trust domain in bs, all at time `at` (0: now; tests pass a fixed time; there is no way
 * to skip the validity check). intermediates may be NULL; certificates in it that the path does
 * not use must still be CAs. On KB_OK, *out_id (if not NULL) is the leaf's SPIFFE ID. */
KB_WUR kb_err x509svid_verify(const spiffe_bundle_set *bs, X509 *leaf,
                              STACK_OF(X509) * intermediates, int purpose, time_t at,
                              spiffe_id *out_id, const char **why);

/* The leaf rules alone (no chain, no time): for SVIDs we load, and vectors without their root. */
KB_WUR kb_err x509svid_check_leaf(X509 *leaf, int purpose, spiffe_id *out_id, const char **why);

/* The rules for one signing (intermediate) certificate. */
KB_WUR kb_err x509svid_check_signing(X509 *ca, const char **why);

/* A parsed SVID: leaf, intermediates, optional private key. */
typedef struct x509svid x509svid;

/* Parse PEM: CERTIFICATE blocks (leaf first, then intermediates) and at most one private key
 * (PRIVATE KEY = PKCS#8, EC PRIVATE KEY = SEC1, RSA PRIVATE KEY = PKCS#1; encrypted keys are
 * refused), in certs[0..certs_len) and, if key_pem is not NULL, key_pem[0..key_len) (which must
 * then hold the key and nothing else). The leaf and intermediates must pass
 * x509svid_check_leaf(PURPOSE_NONE) and x509svid_check_signing(); a key must match the leaf.
 * No time check: the caller decides what to do with an expired SVID. The buffers are not kept;
 * the caller wipes key_pem. */
KB_WUR kb_err x509svid_parse_pem(const void *certs, size_t certs_len, const void *key_pem,
                                 size_t key_len, x509svid **out, const char **why);

/* Read cert_path (and key_path unless NULL; read with kb_file_read_secret, so a key file that is
 * group- or world-accessible is refused with KB_ERR_CONFIG) and parse them as above. */
KB_WUR kb_err x509svid_load(const char *cert_path, const char *key_path, x509svid **out,
                            const char **why);

void x509svid_free(x509svid *s);
/* Borrowed pointers, valid while s is. */
X509 *x509svid_leaf(const x509svid *s);
STACK_OF(X509) * x509svid_intermediates(const x509svid *s); /* never NULL; may be empty */
EVP_PKEY *x509svid_key(const x509svid *s);                  /* NULL if no key was given */
const spiffe_id *x509svid_id(const x509svid *s);

#endif
