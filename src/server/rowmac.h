/* rowmac.h - HMAC-SHA256 over the rows that decide access.
 *
 * Each MAC covers a canonical encoding: a table tag and then every deciding field, each
 * length-prefixed (u32be length + bytes; integers as 8-byte big-endian), *including the row's
 * primary key*, so a row cannot be edited, forged, or copied under another id. Booleans are
 * encoded as 0/1 integers; backends also refuse any other stored value ("admin = 2").
 *
 * Backend-neutral: every store backend computes and checks MACs through these functions.
 *
 * Cost: a store checks one MAC per row it reads on the request path (client, membership, grant,
 * secret), so the HMAC algorithm is fetched and keyed once per rowmac_ctx (rowmac_ctx_new), and
 * each MAC only resets the keyed context (EVP_MAC_init with a NULL key: the HMAC ipad/opad
 * states are reused, RFC 2104 section 4 "precomputations") instead of fetching the algorithm and
 * hashing the key again for every row.
 *
 * Thread safety: a rowmac_ctx is used by one thread at a time (a store backend keeps one per
 * database connection). The raw key stays in the caller's kb_secret (locked memory); the keyed
 * OpenSSL context holds the derived HMAC states in OpenSSL's heap and is cleansed by OpenSSL when
 * freed (rowmac_ctx_free).
 */
#ifndef KB_SERVER_ROWMAC_H
#define KB_SERVER_ROWMAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/secbuf.h"

#define ROWMAC_LEN 32
#define ROWMAC_KEY_MIN 32

typedef struct rowmac_ctx rowmac_ctx;

/* A keyed context for key (at least ROWMAC_KEY_MIN bytes): KB_ERR_INVALID if shorter,
 * KB_ERR_CRYPTO if OpenSSL fails. */
KB_WUR kb_err rowmac_ctx_new(const kb_secret *key, rowmac_ctx **out);
void rowmac_ctx_free(rowmac_ctx *m);

KB_WUR kb_err rowmac_client(rowmac_ctx *m, int64_t id, const char *spiffe_id, bool enabled,
                            bool admin, bool cloud, const char *app_name, uint8_t out[ROWMAC_LEN]);
KB_WUR kb_err rowmac_membership(rowmac_ctx *m, int64_t client_id, int64_t group_id,
                                uint8_t out[ROWMAC_LEN]);
KB_WUR kb_err rowmac_grant(rowmac_ctx *m, int64_t group_id, int64_t secret_id,
                           uint8_t out[ROWMAC_LEN]);
KB_WUR kb_err rowmac_secret(rowmac_ctx *m, int64_t id, const char *name, int64_t owner_group_id,
                            bool cloud_sync, int64_t deleted_at, uint8_t out[ROWMAC_LEN]);

/* The set digest (docs/internals/rollback.md): the sum mod 2^256 of one element per live
 * access-deciding row, element = HMAC(key, tag "kb.rowmac.v1.state-elem" || table || stored row
 * MAC). Keyed, so someone reading the database cannot compute elements, let alone pick old rows
 * whose elements cancel. rowmac_digest_add adds (or subtracts) an element in place. */
KB_WUR kb_err rowmac_state_elem(rowmac_ctx *k, const char *table, const void *mac, size_t mac_len,
                                uint8_t out[ROWMAC_LEN]);
void rowmac_digest_add(uint8_t d[ROWMAC_LEN], const uint8_t e[ROWMAC_LEN], bool subtract);
/* MAC of the state row: (counter, digest). */
KB_WUR kb_err rowmac_state(rowmac_ctx *k, int64_t counter, const uint8_t digest[ROWMAC_LEN],
                           uint8_t out[ROWMAC_LEN]);
/* A version row: everything a reader is served besides the sealed content (which AES-GCM binds to
 * (secret id, version)): checksum, length, metadata (mode/owner/filename that sync tools apply),
 * expiry and creator. The envelope (wrapped key, key id, sealed blob) is authenticated by
 * unwrapping and opening it. */
KB_WUR kb_err rowmac_version(rowmac_ctx *m, int64_t secret_id, int64_t version,
                             const uint8_t *checksum, size_t checksum_len, int64_t content_len,
                             const char *metadata, int64_t expires_at, const char *created_by,
                             int64_t created_at, uint8_t out[ROWMAC_LEN]);
/* A secret's latest_version (kept in its own column, secrets.latest_mac, so that rolling it back
 * is refused like a version edit, not hidden like a missing secret). */
KB_WUR kb_err rowmac_latest(rowmac_ctx *m, int64_t secret_id, int64_t latest_version,
                            uint8_t out[ROWMAC_LEN]);

/* Constant-time check of a stored MAC (stored may be NULL or of the wrong length: mismatch). */
bool rowmac_equal(const uint8_t want[ROWMAC_LEN], const void *stored, size_t stored_len);

#endif
