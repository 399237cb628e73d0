/* idtable.h - a bounded table of per-ID state (SPIFFE IDs, actor names) with eviction.
 *
 * Each entry holds a fixed-size value (zeroed when created) and a copy of its ID. The table never
 * holds more than max entries: when a new ID arrives at the bound, the owner's `idle` callback
 * scores the entries, and
 *   - the first entry scoring >= 1 (idle: exactly what a new entry would be, so dropping it loses
 *     nothing) is evicted; failing that,
 *   - the entry with the highest score >= 0 (the closest to idle: the oldest) is evicted; and
 *   - if every entry scores < 0 (busy, must be kept), the new ID is refused with KB_ERR_LIMIT.
 * A value's address is stable until its entry is evicted or the table freed. Not locked: the
 * owner's mutex covers the table. Users: server/hsm_budget.c (per-client buckets),
 * server/fairness.c (per-ID connection counts and buckets), ca/ca_api.c (renewal interval).
 * See docs/internals/lib.md. */
#ifndef KB_LIB_IDTABLE_H
#define KB_LIB_IDTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Score of the entry holding val, with the arg passed to kb_idtable_get (typically the time):
 * >= 1 idle, [0, 1) evictable (higher = evicted first), < 0 must be kept. */
typedef double (*kb_idtable_score_fn)(void *val, void *arg);

typedef struct {
    size_t max;               /* entries at most (>= 1) */
    size_t id_max;            /* longest ID in bytes; longer ones are refused (KB_ERR_TOO_LARGE) */
    size_t val_size;          /* bytes of per-ID state */
    kb_idtable_score_fn idle; /* NULL: every entry scores 1 (any one may go) */
} kb_idtable_opts;

typedef struct kb_idtable kb_idtable;

KB_WUR kb_err kb_idtable_new(const kb_idtable_opts *o, kb_idtable **out);
void kb_idtable_free(kb_idtable *t);

/* The value for id, created (zeroed, *created = true) if absent, evicting as above when the table
 * is full. KB_ERR_TOO_LARGE for an ID longer than id_max (never truncated into another's entry),
 * KB_ERR_LIMIT when full of entries that must be kept, KB_ERR_NOMEM. */
KB_WUR kb_err kb_idtable_get(kb_idtable *t, const char *id, void *arg, void **val, bool *created);
/* The value for id, or NULL; creates nothing. */
void *kb_idtable_find(kb_idtable *t, const char *id);
/* Entries held now. */
size_t kb_idtable_count(const kb_idtable *t);

#endif
