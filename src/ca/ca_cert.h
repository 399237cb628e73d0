/* ca_cert.h - the certificates a SPIFFE CA makes: its own (root or intermediate CSR) and leaf
 * X509-SVIDs, every field built here and signed through a kb_ec_signer (token or dev file).
 *
 * Signing: the TBSCertificate is encoded by OpenSSL with the signature algorithm set to
 * ecdsa-with-SHA256, hashed, signed by the signer, and the Certificate SEQUENCE is assembled
 * (RFC 5280 4.1) and parsed back, so the result is an ordinary X509 the caller can verify.
 */
#ifndef KB_CA_CERT_H
#define KB_CA_CERT_H

#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "ca_sans.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/keystore.h"
#include "lib/spiffe_id.h"

/* notBefore is backdated this much to absorb clock skew (issue 5, point 2). */
#define CA_BACKDATE_SECS 10
/* Serial numbers: 16 random bytes, top bit cleared (positive, >= 64 bits of entropy:
 * CA/Browser Forum BR 7.1, RFC 5280 4.1.2.2 at most 20 octets). */
#define CA_SERIAL_BYTES 16
/* Longest and shortest leaf lifetime accepted. */
#define CA_TTL_MIN 60
#define CA_TTL_MAX ((int64_t)30 * 24 * 3600)

/* The issuing CA: its signer and certificate, and the certificates above it (intermediates up to
 * but excluding the root; empty for a self-signed root). Borrowed by ca_cert_leaf. */
typedef struct {
    kb_ec_signer *signer;
    X509 *cert;
    STACK_OF(X509) * chain; /* may be NULL */
} ca_issuer;

/* A self-signed root for trust domain td, valid [now - backdate, now + ttl): CA:true (critical),
 * key usage keyCertSign + cRLSign (critical), URI SAN spiffe://td, SKI/AKI. gen names the
 * generation in the subject so successive CAs are told apart. */
KB_WUR kb_err ca_cert_root(kb_ec_signer *s, const char *td, int64_t gen, int64_t ttl, time_t now,
                           X509 **out);

/* A CSR for an upstream CA: the same subject and requested extensions as a root, plus a URI name
 * constraint permitting only spiffe://td (RFC 5280 4.2.1.10: URI constraints name the host). */
KB_WUR kb_err ca_cert_csr(kb_ec_signer *s, const char *td, int64_t gen, X509_REQ **out);

/* A leaf X509-SVID for id with public key pub, valid [now - 10 s, min(now + ttl, CA notAfter)).
 * KB_ERR_INVALID if the CA certificate has already expired at now. */
KB_WUR kb_err ca_cert_leaf(const ca_issuer *iss, EVP_PKEY *pub, const spiffe_id *id, int64_t ttl,
                           time_t now, X509 **out);

/* The same leaf as DER (appended to der), without parsing it back into an X509 (the issuance
 * hot path: PEM is made from the DER). The key is either pub or, for a key made by ca_leafkey,
 * p256_point (65 bytes, uncompressed): exactly one of them. sans (may be NULL): DNS and IP
 * names after the URI SAN (checked by the caller against the policy). serial gets the serial
 * as hex, not_after the end. */
#define CA_SERIAL_HEX_LEN (2 * 20 + 1)
KB_WUR kb_err ca_cert_leaf_der(const ca_issuer *iss, EVP_PKEY *pub, const uint8_t *p256_point,
                               const spiffe_id *id, const ca_sans *sans, int64_t ttl, time_t now,
                               kb_dbuf *der, char serial[CA_SERIAL_HEX_LEN], time_t *not_after);

/* Check a CA certificate for SPIFFE signing rules and that it carries signer's public key. */
KB_WUR kb_err ca_cert_check_ca(X509 *cert, EVP_PKEY *pub, const char *td, const char **why);

/* The serial as lowercase hex (out: at least 2 * 20 + 1 bytes). */
void ca_cert_serial_hex(X509 *x, char *out, size_t out_len);
/* notAfter as Unix time (0 on error). */
time_t ca_cert_not_after(X509 *x);

#endif
