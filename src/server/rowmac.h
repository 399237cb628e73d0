/* rowmac.h - HMAC-SHA256 over the rows that decide access.
 *
 * Each MAC covers a canonical encoding: a table tag and then every deciding field, each
 * length-prefixed (u32be length + bytes; integers as 8-byte big-endian), *including the row's
 * primary key*, so a row cannot be edited, forged, or copied under another id. Booleans are
 * encoded as 0/1 integers; backends also refuse any other stored value ("admin = 2").
 *
 * Backend-neutral: every store backend computes and checks MACs through these functions.
 */
#ifndef KB_SERVER_ROWMAC_H
#define KB_SERVER_ROWMAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/secbuf.h"

#define ROWMAC_LEN 32

KB_WUR kb_err rowmac_client(const kb_secret *key, int64_t id, const char *spiffe_id, bool enabled,
                            bool admin, bool cloud, const char *app_name, uint8_t out[ROWMAC_LEN]);
KB_WUR kb_err rowmac_membership(const kb_secret *key, int64_t client_id, int64_t group_id,
                                uint8_t out[ROWMAC_LEN]);
KB_WUR kb_err rowmac_grant(const kb_secret *key, int64_t group_id, int64_t secret_id,
                           uint8_t out[ROWMAC_LEN]);
KB_WUR kb_err rowmac_secret(const kb_secret *key, int64_t id, const char *name,
                            int64_t owner_group_id, bool cloud_sync, int64_t deleted_at,
                            uint8_t out[ROWMAC_LEN]);

/* Constant-time check of a stored MAC (stored may be NULL or of the wrong length: mismatch). */
bool rowmac_equal(const uint8_t want[ROWMAC_LEN], const void *stored, size_t stored_len);

#endif
