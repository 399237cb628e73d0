/* dkcache.h - unwrapped data keys kept for a short time in locked memory (issue 7, point 2).
 *
 * A secret shared by a thousand clients would otherwise cost a thousand token unwraps per
 * rotation; with the cache it costs one per TTL. Entries are keyed by (secret id, version) AND
 * the exact wrapped-key blob they were unwrapped from, so an envelope that changed in the
 * database (re-wrapped, tampered, or a purged id reused) is a miss, never a wrong key.
 *
 * All data keys live in ONE kb_secret arena (mlocked, MADV_DONTDUMP, wiped on free) of
 * max_entries * 32 bytes; a slot is wiped when it expires, is evicted, or when
 * dkcache_forget_secret() is called (a new version was written, the secret was deleted).
 * Expired entries are wiped lazily on access and by dkcache_sweep(), which keybridged runs every
 * second, so a key outlives its TTL by at most about a second.
 *
 * ttl 0 disables the cache: every get misses, put keeps nothing. Time is the caller's
 * (monotonic seconds) so tests inject it. Thread-safe (one mutex).
 */
#ifndef KB_SERVER_DKCACHE_H
#define KB_SERVER_DKCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/secbuf.h"

#define DKCACHE_TTL_DEFAULT 60
#define DKCACHE_TTL_MAX 3600
#define DKCACHE_ENTRIES_DEFAULT 4096
#define DKCACHE_ENTRIES_MAX 65536 /* 2 MiB of locked memory */
#define DKCACHE_WRAPPED_MAX 128   /* longest wrapped blob kept for comparison */

typedef struct dkcache dkcache;

/* KB_ERR_CONFIG for ttl outside 0..DKCACHE_TTL_MAX or max_entries outside 1..DKCACHE_ENTRIES_MAX
 * (max_entries is ignored when ttl is 0); KB_ERR_MEMLOCK/NOMEM if the arena cannot be locked. */
KB_WUR kb_err dkcache_new(int64_t ttl_secs, size_t max_entries, dkcache **out);
/* Wipe every key and free. NULL is a no-op. */
void dkcache_free(dkcache *c);

/* A hit copies the data key into a new kb_secret (*dk, free it) and returns KB_OK; a miss (or an
 * expired entry, wiped now) returns KB_ERR_NOT_FOUND. */
KB_WUR kb_err dkcache_get(dkcache *c, int64_t secret_id, int64_t version, const uint8_t *wrapped,
                          size_t wrapped_len, double now, kb_secret **dk);
/* Keep dk (32 bytes) until now + ttl, replacing an entry for the same (id, version). A full
 * cache first drops expired entries, then the entry closest to expiry. KB_OK also when disabled
 * or when the blob is too long to keep (nothing kept). */
KB_WUR kb_err dkcache_put(dkcache *c, int64_t secret_id, int64_t version, const uint8_t *wrapped,
                          size_t wrapped_len, const kb_secret *dk, double now);
/* Wipe every entry of a secret (all versions). */
void dkcache_forget_secret(dkcache *c, int64_t secret_id);
/* Wipe every expired entry; returns how many. */
size_t dkcache_sweep(dkcache *c, double now);

typedef struct {
    uint64_t hits, misses, evictions, expired;
    size_t entries, capacity;
    int64_t ttl;
} dkcache_stats;
void dkcache_stats_get(dkcache *c, dkcache_stats *out);

#endif
