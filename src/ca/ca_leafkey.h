/* ca_leafkey.h - leaf key pairs for SVIDs the CA stores (issue 5, point 3): a fresh EC P-256 key
 * per SVID, its public point for the certificate and its PKCS#8 PEM in locked memory.
 *
 * Why not EVP_EC_gen + PEM_write_bio_PrivateKey: in OpenSSL 3 each EVP_EC_gen builds the curve
 * from its name (EC_GROUP_new_by_curve_name + Montgomery set-up) and each PEM write looks up an
 * encoder through the provider store (locks, string compares); together they were ~30 % of an
 * issuance. Here a per-thread EVP_PKEY_CTX with a P-256 template is reused (the group is copied,
 * not rebuilt), and the PKCS#8 document - fixed for P-256 but for the scalar and the point - is
 * written directly (RFC 5208 5 PrivateKeyInfo, RFC 5915 3 ECPrivateKey, RFC 5480 2.1.1 OIDs),
 * byte for byte what OpenSSL writes (tested).
 */
#ifndef KB_CA_LEAFKEY_H
#define KB_CA_LEAFKEY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "lib/err.h"
#include "lib/secbuf.h"

/* Uncompressed P-256 point: 0x04 || X || Y. */
#define CA_P256_POINT_LEN 65

/* A new P-256 key pair (the caller frees it with EVP_PKEY_free). Thread-safe. */
KB_WUR kb_err ca_leafkey_new(EVP_PKEY **out);

/* The uncompressed public point of a P-256 key. KB_ERR_INVALID for any other key. */
KB_WUR kb_err ca_leafkey_point(EVP_PKEY *k, uint8_t point[CA_P256_POINT_LEN]);

/* PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----") of a P-256 private key, in a new kb_secret. The
 * scalar and the DER pass only through stack buffers that are wiped before returning. */
KB_WUR kb_err ca_leafkey_pkcs8_pem(EVP_PKEY *k, kb_secret **out);

/* PEM armour for DER (RFC 7468 2: base64 lines of 64 characters) appended to out:
 * label "CERTIFICATE" etc. out must have room: ca_pem_len(der_len, label) bytes. */
size_t ca_pem_len(size_t der_len, const char *label);
size_t ca_pem_write(const uint8_t *der, size_t der_len, const char *label, char *out);

#endif
