/* seal.h - keybridge-cache's at-rest encryption: the key file and AES-256-GCM sealing.
 *
 * The key file holds 32 random bytes as 64 lowercase hex characters and a newline (hex, so that
 * kb_file_read_secret's trailing-newline stripping can never eat a key byte). It must be 0600.
 *
 * A sealed value is nonce(12) || ciphertext || tag(16). The associated data binds the value to
 * its place: account, secret ARN and version id (NIST SP 800-38D section 5.2.1.1), so a row copied
 * to another secret, version or account fails to open instead of being served there.
 */
#ifndef KB_CACHE_SEAL_H
#define KB_CACHE_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/secbuf.h"

#define CACHE_KEY_LEN 32
#define CACHE_SEAL_NONCE_LEN 12
#define CACHE_SEAL_TAG_LEN 16
#define CACHE_SEAL_OVERHEAD (CACHE_SEAL_NONCE_LEN + CACHE_SEAL_TAG_LEN)

/* Create a new key file (0600). Refuses to overwrite anything at path (KB_ERR_EXISTS). */
KB_WUR kb_err cache_key_generate(const char *path);
/* Load a key file: KB_ERR_CONFIG if group/world accessible, KB_ERR_INVALID if malformed. */
KB_WUR kb_err cache_key_load(const char *path, kb_secret **out);

/* Seal pt[0..len) under key for (account, arn, version_id); appends the blob to out. */
KB_WUR kb_err cache_seal(const kb_secret *key, const char *account, const char *arn,
                         const char *version_id, const uint8_t *pt, size_t len, kb_dbuf *out);
/* Open a blob sealed by cache_seal; KB_ERR_INTEGRITY if the tag (or the binding) does not match. */
KB_WUR kb_err cache_unseal(const kb_secret *key, const char *account, const char *arn,
                           const char *version_id, const uint8_t *blob, size_t len,
                           kb_secret **out);

/* The same, decrypting into out[0..cap) (locked memory the caller owns, e.g. the store's scratch
 * buffer): no allocation of a locked mapping per call. *out_len = plaintext length on success;
 * KB_ERR_TOO_LARGE if it would not fit; on any failure out holds nothing of the plaintext. */
KB_WUR kb_err cache_unseal_to(const kb_secret *key, const char *account, const char *arn,
                              const char *version_id, const uint8_t *blob, size_t len, uint8_t *out,
                              size_t cap, size_t *out_len);

/* A purpose key derived from the master key: HMAC-SHA256(key, label). */
KB_WUR kb_err cache_key_derive(const kb_secret *key, const char *label, kb_secret **out);

#endif
