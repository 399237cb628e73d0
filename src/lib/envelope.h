/* envelope.h - envelope encryption of secret contents and their checksums.
 *
 * Each secret version gets its own random 256-bit data key. The content is sealed with
 * AES-256-GCM (NIST SP 800-38D) under that key, with a random 96-bit IV and associated data
 *     "keybridge-content-v1" || u64be(secret_id) || u64be(version)
 * so ciphertext moved to another secret or version fails its tag. Stored form: iv || ct || tag.
 * The data key is wrapped by the keystore's master key (kb_keystore_wrap) and stored with the id
 * of that master key, so the master key can be rotated by re-wrapping.
 *
 * The checksum is HMAC-SHA256(checksum_key, "keybridge-checksum-v1" || u64be(secret_id) ||
 * u64be(version) || u64be(len) || content), checksum_key = kb_keystore_derive(ks, "checksum-v1")
 * once at start-up: listings need no token operation, and equal contents in two secrets (or two
 * versions) never show equal checksums.
 */
#ifndef KB_ENVELOPE_H
#define KB_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "keystore.h"
#include "secbuf.h"

#define KB_ENVELOPE_IV_LEN 12
#define KB_ENVELOPE_TAG_LEN 16
#define KB_ENVELOPE_OVERHEAD (KB_ENVELOPE_IV_LEN + KB_ENVELOPE_TAG_LEN)
/* Largest content that can be sealed (the plaintext must fit in one kb_secret). */
#define KB_ENVELOPE_PLAIN_MAX KB_SECRET_MAX
/* The derive label of the checksum key. */
#define KB_CHECKSUM_LABEL "checksum-v1"

typedef struct {
    uint8_t *wrapped; /* wrapped data key (malloc'd) */
    size_t wrapped_len;
    char *key_id;    /* id of the master key that wrapped it (malloc'd) */
    uint8_t *sealed; /* iv || ciphertext || tag (malloc'd) */
    size_t sealed_len;
} kb_envelope;

/* Seal plain under a fresh data key; *out is filled on success only (clear it when done). */
KB_WUR kb_err kb_envelope_seal(kb_keystore *ks, uint64_t secret_id, uint64_t version,
                               const uint8_t *plain, size_t len, kb_envelope *out);
/* Unwrap the data key in the keystore and open. KB_ERR_NOT_FOUND if in->key_id is not the
 * keystore's key; KB_ERR_INTEGRITY for any tampered, truncated or moved envelope. */
KB_WUR kb_err kb_envelope_open(kb_keystore *ks, uint64_t secret_id, uint64_t version,
                               const kb_envelope *in, kb_secret **plain);
/* Open with an already unwrapped data key (for a data-key cache). */
KB_WUR kb_err kb_envelope_open_with_key(const kb_secret *dk, uint64_t secret_id, uint64_t version,
                                        const uint8_t *sealed, size_t sealed_len,
                                        kb_secret **plain);
/* Free what an envelope holds and zero it. NULL is a no-op. */
void kb_envelope_clear(kb_envelope *e);

KB_WUR kb_err kb_checksum(const kb_secret *checksum_key, uint64_t secret_id, uint64_t version,
                          const uint8_t *content, size_t len, uint8_t out[32]);

/* The AES-256-GCM step (16-byte tag), exposed for known-answer tests and for the file keystore.
 * seal writes len bytes of ciphertext to ct and the tag to tag; open returns KB_ERR_INTEGRITY if
 * the tag does not verify, and then leaves no plaintext in pt (it is wiped). */
KB_WUR kb_err kb_aes256gcm_seal(const uint8_t key[32], const uint8_t *iv, size_t iv_len,
                                const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t len,
                                uint8_t *ct, uint8_t tag[16]);
KB_WUR kb_err kb_aes256gcm_open(const uint8_t key[32], const uint8_t *iv, size_t iv_len,
                                const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t len,
                                const uint8_t tag[16], uint8_t *pt);

#endif
