/* keystore_impl.h - the backend table behind kb_keystore (internal to keystore*.c).
 *
 * keystore.c owns the blob format, key-id checks, label rules and counters; a backend only
 * performs the two primitive operations with the keys it holds (OpenSMTPD-style table of
 * function pointers). Every op must be safe to call from several threads at once.
 */
#ifndef KB_KEYSTORE_IMPL_H
#define KB_KEYSTORE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "keystore.h"
#include "secbuf.h"

#define KB_KS_IV_LEN 12
#define KB_KS_TAG_LEN 16

struct kb_keystore_ops {
    const char *kind;
    /* AES-256-GCM under the master key: out gets len bytes of ciphertext then the 16-byte tag. */
    kb_err (*seal)(void *impl, const uint8_t iv[KB_KS_IV_LEN], const uint8_t *aad, size_t aad_len,
                   const uint8_t *in, size_t len, uint8_t *out);
    /* The inverse: in is ciphertext || tag (len includes the tag); out gets len - 16 bytes.
     * A failed tag check is KB_ERR_INTEGRITY. */
    kb_err (*open)(void *impl, const uint8_t iv[KB_KS_IV_LEN], const uint8_t *aad, size_t aad_len,
                   const uint8_t *in, size_t len, uint8_t *out);
    /* HMAC-SHA256 under the mac key. */
    kb_err (*mac)(void *impl, const uint8_t *data, size_t len, uint8_t out[KB_KEYSTORE_MAC_LEN]);
    /* The state counter (kb_keystore_counter_*): read it (KB_ERR_NOT_FOUND while it does not
     * exist) and store a value (creating it). keystore.c serialises the calls and only ever
     * stores a larger value. */
    kb_err (*counter_get)(void *impl, uint64_t *out);
    kb_err (*counter_set)(void *impl, uint64_t v);
    /* len random bytes (len <= KB_KEYSTORE_RANDOM_MAX) from the token's generator. */
    kb_err (*random)(void *impl, uint8_t *out, size_t len);
    void (*free)(void *impl);
};

/* Take ownership of impl (freed with ops->free on failure too) and make a keystore with key_id. */
KB_WUR kb_err kb_keystore_new(const struct kb_keystore_ops *ops, void *impl, const char *key_id,
                              kb_keystore **out);

/* The backend table behind kb_ec_signer: sign a SHA-256 digest, giving DER. */
struct kb_ec_signer_ops {
    const char *kind;
    kb_err (*sign)(void *impl, const uint8_t digest[32], uint8_t der[KB_EC_SIG_DER_MAX],
                   size_t *der_len);
    void (*free)(void *impl);
};

/* Take ownership of impl and pub (both freed on failure too) and make a signer. */
KB_WUR kb_err kb_ec_signer_new(const struct kb_ec_signer_ops *ops, void *impl, EVP_PKEY *pub,
                               kb_ec_signer **out);

#endif
