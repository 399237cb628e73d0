/* fairness.c - a bounded table of SPIFFE IDs with a connection count and a request bucket. */
#include "fairness.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "hsm_budget.h"

/* An entry is the fairness_conn handed out: release needs no lookup. */
struct fairness_conn {
    struct fairness_conn *next;
    uint64_t hash;
    int64_t conns;
    hsm_bucket b;
    char id[];
};
typedef struct fairness_conn ent;

struct fairness {
    pthread_mutex_t mu;
    fairness_opts o;
    ent **slots;
    size_t nslots, n;
    uint64_t refused_conns, refused_requests;
};

kb_err fairness_new(const fairness_opts *o, fairness **out)
{
    fairness *f;
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(o->max_conns >= 0 && o->max_conns <= 1000000, KB_ERR_CONFIG);
    KB_ENSURE(o->rate >= 0 && o->rate <= HSM_BUDGET_RATE_MAX, KB_ERR_CONFIG);
    KB_ENSURE(o->burst >= 0 && o->burst <= HSM_BUDGET_RATE_MAX, KB_ERR_CONFIG);
    KB_ENSURE(o->rate == 0 || o->burst >= 1, KB_ERR_CONFIG);
    f = calloc(1, sizeof(*f));
    KB_ENSURE(f != NULL, KB_ERR_NOMEM);
    f->o = *o;
    if (f->o.max_ids == 0)
        f->o.max_ids = FAIRNESS_IDS_DEFAULT;
    f->nslots = 1024;
    while (f->nslots < f->o.max_ids && f->nslots < ((size_t)1 << 20))
        f->nslots <<= 1;
    f->slots = calloc(f->nslots, sizeof(*f->slots));
    if (f->slots == NULL || pthread_mutex_init(&f->mu, NULL) != 0) {
        free(f->slots);
        free(f);
        return KB_ERR_NOMEM;
    }
    *out = f;
    return KB_OK;
}

void fairness_free(fairness *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->nslots; i++) {
        ent *e = f->slots[i];
        while (e) {
            ent *n = e->next;
            free(e);
            e = n;
        }
    }
    free(f->slots);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static bool idle(ent *e, double now)
{
    hsm_bucket_refill(&e->b, now);
    return e->conns == 0 && (e->b.rate <= 0 || e->b.tokens >= e->b.burst);
}

static void unlink_ent(fairness *f, ent *victim)
{
    ent **pp = &f->slots[victim->hash & (f->nslots - 1)];
    while (*pp && *pp != victim)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = victim->next;
        free(victim);
        f->n--;
    }
}

static bool evict_idle(fairness *f, double now)
{
    for (size_t i = 0; i < f->nslots; i++) {
        for (ent *e = f->slots[i]; e; e = e->next) {
            if (idle(e, now)) {
                unlink_ent(f, e);
                return true;
            }
        }
    }
    return false;
}

/* The entry for id, created if needed; NULL if the table is full of busy IDs or on ENOMEM. */
static ent *get(fairness *f, const char *id, double now)
{
    uint64_t h = hsm_id_hash(id);
    size_t len = strnlen(id, FAIRNESS_ID_MAX + 1);
    ent *e;
    if (len > FAIRNESS_ID_MAX)
        return NULL;
    for (e = f->slots[h & (f->nslots - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(e->id, id) == 0)
            return e;
    if (f->n >= f->o.max_ids && !evict_idle(f, now))
        return NULL;
    e = calloc(1, sizeof(*e) + len + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->id, id, len + 1);
    e->hash = h;
    hsm_bucket_init(&e->b, (double)f->o.rate, (double)f->o.burst, now);
    e->next = f->slots[h & (f->nslots - 1)];
    f->slots[h & (f->nslots - 1)] = e;
    f->n++;
    return e;
}

kb_err fairness_conn_acquire(fairness *f, const char *id, double now, fairness_conn **out)
{
    ent *e;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(f);
    KB_ENSURE_REF(id);
    KB_ENSURE_REF(out);
    *out = NULL;
    pthread_mutex_lock(&f->mu);
    e = get(f, id, now);
    if (e == NULL || (f->o.max_conns > 0 && e->conns >= f->o.max_conns)) {
        f->refused_conns++;
        rc = KB_ERR_LIMIT;
    } else {
        e->conns++;
        *out = e;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void fairness_conn_release(fairness *f, fairness_conn *c)
{
    if (f == NULL || c == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    if (c->conns > 0)
        c->conns--;
    pthread_mutex_unlock(&f->mu);
}

kb_err fairness_request(fairness *f, const char *id, double now, int64_t *retry_after)
{
    ent *e;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(f);
    KB_ENSURE_REF(id);
    if (retry_after)
        *retry_after = 0;
    if (f->o.rate == 0)
        return KB_OK;
    pthread_mutex_lock(&f->mu);
    e = get(f, id, now);
    if (e == NULL) {
        f->refused_requests++;
        if (retry_after)
            *retry_after = 1;
        rc = KB_ERR_LIMIT;
    } else if (!hsm_bucket_take(&e->b, 1, now)) {
        f->refused_requests++;
        if (retry_after)
            *retry_after = hsm_retry_after_secs(hsm_bucket_wait(&e->b, 1));
        rc = KB_ERR_LIMIT;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

void fairness_stats_get(fairness *f, fairness_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);
    out->refused_conns = f->refused_conns;
    out->refused_requests = f->refused_requests;
    out->ids = f->n;
    pthread_mutex_unlock(&f->mu);
}
