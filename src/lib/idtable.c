/* idtable.c - a chained hash table of IDs, bounded, evicting by the owner's idle score. */
#include "idtable.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

typedef struct ent {
    struct ent *next;
    uint64_t hash;
    alignas(max_align_t) unsigned char val[]; /* val_size bytes, then the ID and its NUL */
} ent;

struct kb_idtable {
    kb_idtable_opts o;
    ent **slots;
    size_t nslots, n;
};

/* FNV-1a: placement only (IDs come from verified certificates or authenticated actors, and a
 * collision costs a longer chain, never a wrong answer). */
static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static char *ent_id(const kb_idtable *t, ent *e)
{
    return (char *)e->val + t->o.val_size;
}

kb_err kb_idtable_new(const kb_idtable_opts *o, kb_idtable **out)
{
    kb_idtable *t;
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(o->max >= 1 && o->id_max >= 1 && o->id_max < SIZE_MAX / 2, KB_ERR_INVALID);
    KB_ENSURE(o->val_size < SIZE_MAX / 2, KB_ERR_INVALID);
    t = calloc(1, sizeof(*t));
    KB_ENSURE(t != NULL, KB_ERR_NOMEM);
    t->o = *o;
    t->nslots = 1024;
    while (t->nslots < o->max && t->nslots < ((size_t)1 << 20))
        t->nslots <<= 1;
    t->slots = calloc(t->nslots, sizeof(*t->slots));
    if (t->slots == NULL) {
        free(t);
        return KB_ERR_NOMEM;
    }
    *out = t;
    return KB_OK;
}

void kb_idtable_free(kb_idtable *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nslots; i++) {
        ent *e = t->slots[i];
        while (e) {
            ent *n = e->next;
            free(e);
            e = n;
        }
    }
    free(t->slots);
    free(t);
}

static ent *lookup(kb_idtable *t, const char *id, uint64_t h)
{
    for (ent *e = t->slots[h & (t->nslots - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(ent_id(t, e), id) == 0)
            return e;
    return NULL;
}

static void unlink_ent(kb_idtable *t, ent *victim)
{
    ent **pp = &t->slots[victim->hash & (t->nslots - 1)];
    while (*pp && *pp != victim)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = victim->next;
        free(victim);
        t->n--;
    }
}

/* Drop the first idle entry, else the highest-scoring evictable one; false if all must stay. */
static bool evict_one(kb_idtable *t, void *arg)
{
    ent *best = NULL;
    double best_score = -1;
    for (size_t i = 0; i < t->nslots; i++) {
        for (ent *e = t->slots[i]; e; e = e->next) {
            double s = t->o.idle ? t->o.idle(e->val, arg) : 1;
            if (s >= 0 && s > best_score) {
                best = e;
                best_score = s;
                if (s >= 1)
                    goto found;
            }
        }
    }
found:
    if (best == NULL)
        return false;
    unlink_ent(t, best);
    return true;
}

kb_err kb_idtable_get(kb_idtable *t, const char *id, void *arg, void **val, bool *created)
{
    size_t len;
    uint64_t h;
    ent *e;
    KB_ENSURE_REF(t);
    KB_ENSURE_REF(id);
    KB_ENSURE_REF(val);
    *val = NULL;
    if (created)
        *created = false;
    len = strnlen(id, t->o.id_max + 1);
    KB_ENSURE(len <= t->o.id_max, KB_ERR_TOO_LARGE);
    h = hash(id);
    if ((e = lookup(t, id, h)) != NULL) {
        *val = e->val;
        return KB_OK;
    }
    KB_ENSURE(t->n < t->o.max || evict_one(t, arg), KB_ERR_LIMIT);
    e = calloc(1, sizeof(*e) + t->o.val_size + len + 1);
    KB_ENSURE(e != NULL, KB_ERR_NOMEM);
    memcpy(ent_id(t, e), id, len + 1);
    e->hash = h;
    e->next = t->slots[h & (t->nslots - 1)];
    t->slots[h & (t->nslots - 1)] = e;
    t->n++;
    *val = e->val;
    if (created)
        *created = true;
    return KB_OK;
}

void *kb_idtable_find(kb_idtable *t, const char *id)
{
    ent *e;
    if (t == NULL || id == NULL || strnlen(id, t->o.id_max + 1) > t->o.id_max)
        return NULL;
    e = lookup(t, id, hash(id));
    return e ? e->val : NULL;
}

size_t kb_idtable_count(const kb_idtable *t)
{
    return t ? t->n : 0;
}
