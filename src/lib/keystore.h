/* keystore.h - the master key: wrap data keys, derive purpose keys, sign, inside a token.
 *
 * A keystore holds two keys that never leave it: an AES-256 master wrapping key and an HMAC-SHA256
 * key. Production uses a PKCS#11 token (SoftHSM2 by default, any PKCS#11 v2.40 module that does
 * CKM_AES_GCM and CKM_SHA256_HMAC); a 0600 file of random key material exists for development only
 * and must be chosen explicitly. Both backends fill one ops table (keystore_impl.h); callers never
 * know which one they have, except through kb_keystore_kind().
 *
 * Every function is thread-safe on one kb_keystore (keybridged serves on several threads).
 * See docs/internals/keystore.md for the blob format and the PKCS#11 details.
 */
#ifndef KB_KEYSTORE_H
#define KB_KEYSTORE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "err.h"
#include "secbuf.h"

typedef struct kb_keystore kb_keystore;

/* Size of a data key handed to kb_keystore_wrap (AES-256). */
#define KB_KEYSTORE_DK_LEN 32
/* Size of a derived key and of a signature (HMAC-SHA256). */
#define KB_KEYSTORE_MAC_LEN 32
/* Longest derive label; labels are [a-z0-9._-]+ (so they never contain the NUL byte that
 * separates the sign domain from the derive domain). */
#define KB_KEYSTORE_LABEL_MAX 64
/* Longest key label / token label accepted (PKCS#11 token labels are 32 bytes). */
#define KB_KEYSTORE_NAME_MAX 128
/* Length of a wrapped data key blob (version || iv || ciphertext || tag). */
#define KB_KEYSTORE_BLOB_LEN (1 + 12 + KB_KEYSTORE_DK_LEN + 16)
/* Longest key id string (without NUL). */
#define KB_KEYSTORE_KEY_ID_MAX 512

/* Create keys in the token if absent (idempotent): an AES-256 master wrapping key labelled
 * key_label and an HMAC (CKK_GENERIC_SECRET, 32 bytes, CKM_SHA256_HMAC) key labelled
 * "<key_label>-mac". Both sensitive, non-extractable, private token objects.
 * Errors: KB_ERR_UNAVAILABLE module not loadable, KB_ERR_NOT_FOUND token label not found,
 * KB_ERR_AUTH wrong PIN (or PIN locked), KB_ERR_CONFLICT more than one key with a label or a key
 * that is extractable / not sensitive, KB_ERR_HSM any other token failure. */
KB_WUR kb_err kb_keystore_init_pkcs11(const char *module, const char *token_label,
                                      const char *key_label, const kb_secret *pin);
/* Open the token's keys (they must exist: KB_ERR_NOT_FOUND otherwise). */
KB_WUR kb_err kb_keystore_open_pkcs11(const char *module, const char *token_label,
                                      const char *key_label, const kb_secret *pin,
                                      kb_keystore **out);

/* Development only, chosen explicitly: a 0600 file holding random key material. create refuses
 * to overwrite (KB_ERR_EXISTS); open refuses a file with mode & 077 (KB_ERR_CONFIG) and any
 * malformed file (KB_ERR_INVALID). */
KB_WUR kb_err kb_keystore_create_file(const char *path);
KB_WUR kb_err kb_keystore_open_file(const char *path, kb_keystore **out);

/* Close sessions, wipe key material. NULL is a no-op. */
void kb_keystore_free(kb_keystore *ks);

/* Stable id of the current master key, recorded beside each wrapped data key so the master key
 * can be rotated: "pkcs11:<token>:<key_label>:<hex CKA_ID>" or "file:<hex 16 bytes>". */
const char *kb_keystore_key_id(const kb_keystore *ks);
const char *kb_keystore_kind(const kb_keystore *ks); /* "pkcs11" | "file" */

/* Wrap a 32-byte data key under the master key (AES-256-GCM inside the token, random 96-bit IV,
 * AAD binding the key id); *blob (KB_KEYSTORE_BLOB_LEN bytes) is malloc'd, free() it.
 * Unwrap refuses a key_id that is not this keystore's (KB_ERR_NOT_FOUND) and any malformed or
 * tampered blob (KB_ERR_INTEGRITY); *dk is a new kb_secret. */
KB_WUR kb_err kb_keystore_wrap(kb_keystore *ks, const kb_secret *dk, uint8_t **blob, size_t *len);
KB_WUR kb_err kb_keystore_unwrap(kb_keystore *ks, const char *key_id, const uint8_t *blob,
                                 size_t len, kb_secret **dk);

/* A 32-byte key for a purpose label ("checksum-v1", "rowmac-v1", "audit-v1"), computed inside the
 * token as HMAC-SHA256(mac key, label): deterministic across restarts and processes.
 * KB_ERR_INVALID for an empty, too long or non-[a-z0-9._-] label. */
KB_WUR kb_err kb_keystore_derive(kb_keystore *ks, const char *label, kb_secret **out);

/* HMAC-SHA256(mac key, "keybridge-sign-v1" || 0x00 || data), made inside the token, for signing
 * audit chain heads. The NUL byte keeps it apart from every derive label. verify recomputes and
 * compares in constant time: KB_OK or KB_ERR_INTEGRITY. */
KB_WUR kb_err kb_keystore_sign(kb_keystore *ks, const uint8_t *data, size_t len, uint8_t sig[32]);
KB_WUR kb_err kb_keystore_verify(kb_keystore *ks, const uint8_t *data, size_t len,
                                 const uint8_t sig[32]);

/* The state counter: a monotonic 64-bit number kept outside the database, to which keybridged
 * commits the state of its access-deciding rows (docs/internals/rollback.md). In a PKCS#11
 * token it is a private, modifiable CKO_DATA token object with CKA_APPLICATION
 * "keybridge-state:<key_label>" whose CKA_LABEL holds the value as 20 decimal digits (the label
 * is the attribute PKCS#11 lets any storage object change; SoftHSM2 refuses to change a data
 * object's CKA_VALUE); with the file keystore it is
 * the 0600 file "<key_file>.counter", written atomically (weaker: whoever can write that
 * directory can roll it back together with the database).
 * read: KB_ERR_NOT_FOUND while it was never advanced, KB_ERR_INTEGRITY if malformed.
 * advance: store `to` if it is larger than the current value (creating the counter); a smaller
 * or equal value leaves it unchanged (KB_OK): it never goes back. Calls on one keystore are
 * serialised; two processes advancing at the same moment can leave it at the smaller of their
 * values until the next advance (documented in rollback.md). */
KB_WUR kb_err kb_keystore_counter_read(kb_keystore *ks, uint64_t *out);
KB_WUR kb_err kb_keystore_counter_advance(kb_keystore *ks, uint64_t to);

/* len random bytes from the keystore's generator: C_GenerateRandom in the PKCS#11 token (its
 * DRBG), RAND_priv_bytes for the development file keystore. Any len; asked in chunks of at most
 * KB_KEYSTORE_RANDOM_MAX. Counted as an "other" token operation. */
#define KB_KEYSTORE_RANDOM_MAX ((size_t)1024)
KB_WUR kb_err kb_keystore_random(kb_keystore *ks, uint8_t *out, size_t len);

/* Counters for metrics/tests: token operations performed so far (wraps, unwraps, other =
 * derive + sign + verify). Any pointer may be NULL. */
void kb_keystore_counters(const kb_keystore *ks, uint64_t *wraps, uint64_t *unwraps,
                          uint64_t *other);

/* ---- EC P-256 signing keys (CA keys) ------------------------------------------------------ *
 *
 * A signing key for a certificate authority: an EC P-256 key pair whose private half is
 * generated inside the token (CKM_EC_KEY_PAIR_GEN; CKA_SENSITIVE, not CKA_EXTRACTABLE, private
 * token object) and used only through CKM_ECDSA over a SHA-256 digest computed by the caller.
 * Only the public key ever leaves the token. A 0600 PEM file (PKCS#8) is the development
 * twin, chosen explicitly. Both give one kb_ec_signer; callers never know which they have
 * except through kb_ec_signer_kind(). Thread-safe like the keystore (a session pool). */
typedef struct kb_ec_signer kb_ec_signer;

/* Longest DER ECDSA-Sig-Value for P-256 (SEQUENCE of two INTEGERs of at most 33 bytes). */
#define KB_EC_SIG_DER_MAX 72

/* Generate the key pair labelled label in the token if no key has that label (idempotent: an
 * existing pair is checked - P-256, sensitive, never extractable - and kept). Errors as for
 * kb_keystore_init_pkcs11. */
KB_WUR kb_err kb_keystore_ec_init(const char *module, const char *token_label, const char *label,
                                  const kb_secret *pin);
/* Open the pair labelled label (KB_ERR_NOT_FOUND if absent, KB_ERR_CONFLICT if ambiguous or
 * extractable). */
KB_WUR kb_err kb_keystore_ec_open(const char *module, const char *token_label, const char *label,
                                  const kb_secret *pin, kb_ec_signer **out);

/* Is there exactly one initialised token labelled token_label in module? KB_OK if so;
 * KB_ERR_UNAVAILABLE if the module cannot be loaded, KB_ERR_HSM if it fails to initialise
 * (SoftHSM2: unreadable SOFTHSM2_CONF or token directory), KB_ERR_NOT_FOUND if no such token,
 * KB_ERR_CONFLICT if several. Lets a caller tell "no token" from "no key" in its message. */
KB_WUR kb_err kb_pkcs11_token_check(const char *module, const char *token_label);

/* Development only: create a new P-256 key as a 0600 PKCS#8 PEM file (KB_ERR_EXISTS if path
 * exists), and open one (refused with KB_ERR_CONFIG if group/world accessible, KB_ERR_INVALID if
 * it is not an EC P-256 private key). */
KB_WUR kb_err kb_keystore_ec_create_file(const char *path);
KB_WUR kb_err kb_keystore_ec_open_file(const char *path, kb_ec_signer **out);

/* ECDSA over a 32-byte SHA-256 digest; *der_len gets the length of the DER ECDSA-Sig-Value
 * (RFC 5480 2.2 / RFC 3279 2.2.3) written to der[0..KB_EC_SIG_DER_MAX). */
KB_WUR kb_err kb_ec_signer_sign(kb_ec_signer *s, const uint8_t digest[32],
                                uint8_t der[KB_EC_SIG_DER_MAX], size_t *der_len);
/* The public key (borrowed, valid while s is). */
EVP_PKEY *kb_ec_signer_pubkey(const kb_ec_signer *s);
const char *kb_ec_signer_kind(const kb_ec_signer *s); /* "pkcs11" | "file" */
/* Signatures made so far (metrics, tests). */
uint64_t kb_ec_signer_count(const kb_ec_signer *s);
void kb_ec_signer_free(kb_ec_signer *s);

#endif
