/* dkcache.c - a fixed table of slots; keys in one locked arena, metadata beside it.
 *
 * Lookups chain through a small hash index (slot numbers), so a read costs a few comparisons
 * whatever the size; eviction scans the table, but only when it is full, and an insert follows
 * a token unwrap, which costs far more. */
#include "dkcache.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lib/keystore.h"

#define NO_SLOT UINT32_MAX

typedef struct {
    bool used;
    int64_t secret_id, version;
    double expires;
    uint8_t wrapped[DKCACHE_WRAPPED_MAX];
    size_t wrapped_len;
    uint32_t next; /* next slot in the same hash chain, or NO_SLOT */
} slot;

struct dkcache {
    pthread_mutex_t mu;
    int64_t ttl;
    size_t cap, used;
    kb_secret *arena; /* cap * KB_KEYSTORE_DK_LEN bytes */
    slot *slots;
    uint32_t *heads; /* nheads chains */
    size_t nheads;
    uint64_t hits, misses, evictions, expired;
};

kb_err dkcache_new(int64_t ttl_secs, size_t max_entries, dkcache **out)
{
    dkcache *c;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(ttl_secs >= 0 && ttl_secs <= DKCACHE_TTL_MAX, KB_ERR_CONFIG);
    if (ttl_secs > 0)
        KB_ENSURE(max_entries >= 1 && max_entries <= DKCACHE_ENTRIES_MAX, KB_ERR_CONFIG);
    c = calloc(1, sizeof(*c));
    KB_ENSURE(c != NULL, KB_ERR_NOMEM);
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return KB_ERR_INTERNAL;
    }
    c->ttl = ttl_secs;
    if (ttl_secs == 0) {
        *out = c;
        return KB_OK;
    }
    c->cap = max_entries;
    c->nheads = 64;
    while (c->nheads < c->cap)
        c->nheads <<= 1;
    c->slots = calloc(c->cap, sizeof(*c->slots));
    c->heads = malloc(c->nheads * sizeof(*c->heads));
    KB_ENSURE_OUT(rc, c->slots != NULL && c->heads != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < c->nheads; i++)
        c->heads[i] = NO_SLOT;
    KB_GUARD_OUT(rc, kb_secret_new(c->cap * KB_KEYSTORE_DK_LEN, &c->arena));
    *out = c;
    c = NULL;
out:
    dkcache_free(c);
    return rc;
}

void dkcache_free(dkcache *c)
{
    if (c == NULL)
        return;
    kb_secret_free(c->arena); /* wipes every key */
    free(c->slots);
    free(c->heads);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static size_t head_of(const dkcache *c, int64_t secret_id, int64_t version)
{
    uint64_t h =
        (uint64_t)secret_id * 0x9E3779B97F4A7C15ULL ^ (uint64_t)version * 0xC2B2AE3D27D4EB4FULL;
    h ^= h >> 29;
    return (size_t)(h & (c->nheads - 1));
}

static uint8_t *key_at(dkcache *c, size_t i)
{
    return kb_secret_data(c->arena) + i * KB_KEYSTORE_DK_LEN;
}

/* Unlink slot i from its chain and wipe its key. Called with mu held. */
static void drop(dkcache *c, uint32_t i)
{
    slot *s = &c->slots[i];
    uint32_t *pp = &c->heads[head_of(c, s->secret_id, s->version)];
    while (*pp != NO_SLOT && *pp != i)
        pp = &c->slots[*pp].next;
    if (*pp == i)
        *pp = s->next;
    kb_wipe(key_at(c, i), KB_KEYSTORE_DK_LEN);
    memset(s, 0, sizeof(*s));
    c->used--;
}

static uint32_t find(dkcache *c, int64_t secret_id, int64_t version)
{
    for (uint32_t i = c->heads[head_of(c, secret_id, version)]; i != NO_SLOT; i = c->slots[i].next)
        if (c->slots[i].secret_id == secret_id && c->slots[i].version == version)
            return i;
    return NO_SLOT;
}

kb_err dkcache_get(dkcache *c, int64_t secret_id, int64_t version, const uint8_t *wrapped,
                   size_t wrapped_len, double now, kb_secret **dk)
{
    uint32_t i;
    kb_err rc = KB_ERR_NOT_FOUND;
    KB_ENSURE_REF(dk);
    *dk = NULL;
    if (c == NULL)
        return KB_ERR_NOT_FOUND;
    pthread_mutex_lock(&c->mu);
    if (c->ttl == 0 || wrapped == NULL) {
        c->misses++;
        goto out;
    }
    i = find(c, secret_id, version);
    if (i != NO_SLOT && c->slots[i].expires <= now) {
        drop(c, i);
        c->expired++;
        i = NO_SLOT;
    }
    /* The blob is not secret (it is what the database holds), but a constant-time compare
     * costs nothing here and keeps every comparison in this module uniform. */
    if (i == NO_SLOT || c->slots[i].wrapped_len != wrapped_len ||
        !kb_ct_eq(c->slots[i].wrapped, wrapped, wrapped_len)) {
        c->misses++;
        goto out;
    }
    rc = kb_secret_from(key_at(c, i), KB_KEYSTORE_DK_LEN, dk);
    if (rc == KB_OK)
        c->hits++;
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* A slot for a new entry: a free one, else an expired one, else the one closest to expiry. */
static uint32_t free_slot(dkcache *c, double now)
{
    uint32_t victim = NO_SLOT;
    if (c->used < c->cap) {
        for (size_t i = 0; i < c->cap; i++)
            if (!c->slots[i].used)
                return (uint32_t)i;
    }
    for (size_t i = 0; i < c->cap; i++) {
        if (c->slots[i].expires <= now) {
            drop(c, (uint32_t)i);
            c->expired++;
            return (uint32_t)i;
        }
        if (victim == NO_SLOT || c->slots[i].expires < c->slots[victim].expires)
            victim = (uint32_t)i;
    }
    drop(c, victim);
    c->evictions++;
    return victim;
}

kb_err dkcache_put(dkcache *c, int64_t secret_id, int64_t version, const uint8_t *wrapped,
                   size_t wrapped_len, const kb_secret *dk, double now)
{
    uint32_t i;
    size_t h;
    KB_ENSURE_REF(dk);
    KB_ENSURE(kb_secret_len(dk) == KB_KEYSTORE_DK_LEN, KB_ERR_INVALID);
    if (c == NULL || c->ttl == 0 || wrapped == NULL || wrapped_len > DKCACHE_WRAPPED_MAX)
        return KB_OK;
    pthread_mutex_lock(&c->mu);
    i = find(c, secret_id, version);
    if (i != NO_SLOT)
        drop(c, i);
    i = free_slot(c, now);
    h = head_of(c, secret_id, version);
    c->slots[i].used = true;
    c->slots[i].secret_id = secret_id;
    c->slots[i].version = version;
    c->slots[i].expires = now + (double)c->ttl;
    memcpy(c->slots[i].wrapped, wrapped, wrapped_len);
    c->slots[i].wrapped_len = wrapped_len;
    memcpy(key_at(c, i), kb_secret_cdata(dk), KB_KEYSTORE_DK_LEN);
    c->slots[i].next = c->heads[h];
    c->heads[h] = i;
    c->used++;
    pthread_mutex_unlock(&c->mu);
    return KB_OK;
}

void dkcache_forget_secret(dkcache *c, int64_t secret_id)
{
    if (c == NULL || c->ttl == 0)
        return;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->cap && c->used > 0; i++)
        if (c->slots[i].used && c->slots[i].secret_id == secret_id)
            drop(c, (uint32_t)i);
    pthread_mutex_unlock(&c->mu);
}

size_t dkcache_sweep(dkcache *c, double now)
{
    size_t n = 0;
    if (c == NULL || c->ttl == 0)
        return 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->cap && c->used > 0; i++) {
        if (c->slots[i].used && c->slots[i].expires <= now) {
            drop(c, (uint32_t)i);
            n++;
        }
    }
    c->expired += n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void dkcache_stats_get(dkcache *c, dkcache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    out->hits = c->hits;
    out->misses = c->misses;
    out->evictions = c->evictions;
    out->expired = c->expired;
    out->entries = c->used;
    out->capacity = c->cap;
    out->ttl = c->ttl;
    pthread_mutex_unlock(&c->mu);
}
