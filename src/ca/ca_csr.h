/* ca_csr.h - accept a certificate signing request's public key, and nothing else from it.
 *
 * The CA builds every field of an SVID itself (issue 5, point 2): a CSR contributes only its
 * public key, after these checks, each with its own message:
 *   - exactly one PEM "CERTIFICATE REQUEST" block (or DER), at most CA_CSR_MAX bytes, nothing
 *     after it;
 *   - its self-signature verifies (proof of possession, RFC 2986 3);
 *   - the key is EC P-256 or P-384 (point on the curve) or RSA of at least 2048 bits;
 *   - every URI SAN it requests, if any, is exactly the expected SPIFFE ID (a CSR for another ID
 *     is refused, not silently corrected).
 */
#ifndef KB_CA_CSR_H
#define KB_CA_CSR_H

#include <stddef.h>

#include <openssl/evp.h>

#include "lib/err.h"
#include "lib/spiffe_id.h"

#define CA_CSR_MAX ((size_t)16 * 1024)
#define CA_RSA_MIN_BITS 2048

/* On KB_OK *pub is the CSR's public key (caller frees). KB_ERR_INVALID (malformed),
 * KB_ERR_TOO_LARGE, KB_ERR_AUTH (bad self-signature), KB_ERR_DENIED (weak key, other ID), each
 * with *why a static reason. expect may be NULL (no SAN check). */
KB_WUR kb_err ca_csr_parse(const void *buf, size_t len, const spiffe_id *expect, EVP_PKEY **pub,
                           const char **why);

/* The same; openssl_only = 1 skips the fast EC path (ca_csr.c) and parses with d2i_X509_REQ
 * alone - for tests and the fuzz target, which check that both paths agree. */
KB_WUR kb_err ca_csr_parse_ex(const void *buf, size_t len, const spiffe_id *expect, EVP_PKEY **pub,
                              const char **why, int openssl_only);

#endif
