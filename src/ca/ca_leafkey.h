/* ca_leafkey.h - leaf key pairs for SVIDs the CA stores (issue 5, point 3): a fresh EC P-256 key
 * per SVID, its public point for the certificate and its PKCS#8 PEM in locked memory.
 *
 * Why not EVP_EC_gen + PEM_write_bio_PrivateKey: in OpenSSL 3.0 each EVP_EC_gen (even from a
 * reused context with a template) rebuilds the curve from its name (EC_GROUP_new_by_curve_name,
 * Montgomery set-up, a modular inverse), then the key's point and scalar are fetched back through
 * OSSL_PARAMs, and each PEM write looks up an encoder through the provider store; together ~40 %
 * of an issuance. Here one EC_GROUP is built once and shared (read-only), the scalar and point
 * are computed directly, the certificate takes the point, and the PKCS#8 document - fixed for
 * P-256 but for the scalar and the point - is written directly (RFC 5208 5 PrivateKeyInfo,
 * RFC 5915 3 ECPrivateKey, RFC 5480 2.1.1 OIDs), byte for byte what OpenSSL writes (tested).
 */
#ifndef KB_CA_LEAFKEY_H
#define KB_CA_LEAFKEY_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/secbuf.h"

/* Uncompressed P-256 point: 0x04 || X || Y. */
#define CA_P256_POINT_LEN 65
#define CA_P256_SCALAR_LEN 32

/* A leaf key pair, raw: the private scalar d (big-endian, 32 bytes) and Q = d*G. It lives on its
 * user's stack for the length of one issuance and is wiped with ca_leafkey_wipe. */
typedef struct {
    uint8_t d[CA_P256_SCALAR_LEN];
    uint8_t point[CA_P256_POINT_LEN];
} ca_leafkey;

/* A new key pair: d uniform in [1, n-1] from the DRBG's private stream (FIPS 186-5 A.2.2,
 * rejection sampling by BN_priv_rand_range_ex), Q = d*G (constant-time scalar multiplication).
 * Thread-safe. On error k is wiped. */
KB_WUR kb_err ca_leafkey_gen(ca_leafkey *k);
void ca_leafkey_wipe(ca_leafkey *k);

/* A leaf key's PKCS#8 PEM in locked memory. Most live in a slot of one shared slab of locked,
 * MADV_DONTDUMP pages (CA_KEYSLAB_SLOTS slots, set up once): a kb_secret per key costs an mmap,
 * mlock, madvise, munlock and munmap, ~14 % of an issuance. When every slot is taken, or the slab
 * could not be locked, the PEM goes into its own kb_secret as before. Slots are wiped on free. */
typedef struct ca_keypem ca_keypem;
#define CA_KEYSLAB_SLOTS 64
#define CA_KEYSLAB_SLOT 256

/* PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----") of k; the DER passes only through a stack buffer
 * that is wiped before returning. */
KB_WUR kb_err ca_leafkey_pkcs8_pem(const ca_leafkey *k, ca_keypem **out);
const uint8_t *ca_keypem_data(const ca_keypem *p);
size_t ca_keypem_len(const ca_keypem *p);
/* 1 if p sits in the slab (tests). */
int ca_keypem_in_slab(const ca_keypem *p);
/* Wipe and release. NULL is a no-op. */
void ca_keypem_free(ca_keypem *p);

/* PEM armour for DER (RFC 7468 2: base64 lines of 64 characters): ca_pem_len bytes are written
 * to out (no NUL). */
size_t ca_pem_len(size_t der_len, const char *label);
size_t ca_pem_write(const uint8_t *der, size_t der_len, const char *label, char *out);

#endif
