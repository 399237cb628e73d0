/* hsm_budget.c - token bucket arithmetic and the global / class / client budget.
 *
 * Classic token bucket (RFC 2697 uses the same shape for its committed burst): tokens accrue
 * at `rate` per second up to `burst`; an operation needs one whole token. */
#include "hsm_budget.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- one bucket ------------------------------------------------------------------------------ */

void hsm_bucket_init(hsm_bucket *b, double rate, double burst, double now)
{
    b->rate = rate;
    b->burst = burst;
    b->tokens = burst;
    b->last = now;
}

void hsm_bucket_refill(hsm_bucket *b, double now)
{
    if (b->rate <= 0)
        return;
    if (now > b->last) {
        b->tokens += (now - b->last) * b->rate;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    b->last = now;
}

double hsm_bucket_wait(const hsm_bucket *b, double n)
{
    if (b->rate <= 0)
        return 0;
    if (n > b->burst)
        n = b->burst;
    if (b->tokens >= n)
        return 0;
    return (n - b->tokens) / b->rate;
}

bool hsm_bucket_take(hsm_bucket *b, double n, double now)
{
    if (b->rate <= 0)
        return true;
    hsm_bucket_refill(b, now);
    if (b->tokens < n)
        return false;
    b->tokens -= n;
    return true;
}

int64_t hsm_retry_after_secs(double wait)
{
    int64_t c;
    if (!(wait > 1)) /* also catches NaN */
        return 1;
    if (wait > 86400)
        return 86400;
    c = (int64_t)wait;
    return (double)c < wait ? c + 1 : c;
}

/* ---- the budget ------------------------------------------------------------------------------ */

typedef struct client_ent {
    struct client_ent *next;
    uint64_t hash;
    hsm_bucket b;
    char id[];
} client_ent;

struct hsm_budget {
    pthread_mutex_t mu;
    hsm_bucket global, cloud, dc;
    double client_rate, client_burst;
    client_ent **slots;
    size_t nslots, nclients, max_clients;
    uint64_t granted, refused_cloud, refused_dc;
};

static kb_err check_pair(double rate, int64_t burst)
{
    /* written so that NaN fails too */
    KB_ENSURE(rate >= 0 && rate <= HSM_BUDGET_RATE_MAX, KB_ERR_CONFIG);
    KB_ENSURE(burst >= 0 && burst <= HSM_BUDGET_RATE_MAX, KB_ERR_CONFIG);
    KB_ENSURE(rate == 0 || burst >= 1, KB_ERR_CONFIG);
    return KB_OK;
}

kb_err hsm_budget_new(const hsm_budget_opts *o, double now, hsm_budget **out)
{
    hsm_budget *b;
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD(check_pair(o->global_rate, o->global_burst));
    KB_GUARD(check_pair(o->cloud_rate, o->cloud_burst));
    KB_GUARD(check_pair(o->dc_rate, o->dc_burst));
    KB_GUARD(check_pair(o->client_rate, o->client_burst));
    b = calloc(1, sizeof(*b));
    KB_ENSURE(b != NULL, KB_ERR_NOMEM);
    b->max_clients = o->max_clients ? o->max_clients : HSM_BUDGET_CLIENTS_DEFAULT;
    b->nslots = 1024;
    while (b->nslots < b->max_clients && b->nslots < ((size_t)1 << 20))
        b->nslots <<= 1;
    b->slots = calloc(b->nslots, sizeof(*b->slots));
    if (b->slots == NULL || pthread_mutex_init(&b->mu, NULL) != 0) {
        free(b->slots);
        free(b);
        return KB_ERR_NOMEM;
    }
    hsm_bucket_init(&b->global, o->global_rate, (double)o->global_burst, now);
    hsm_bucket_init(&b->cloud, o->cloud_rate, (double)o->cloud_burst, now);
    hsm_bucket_init(&b->dc, o->dc_rate, (double)o->dc_burst, now);
    b->client_rate = o->client_rate;
    b->client_burst = (double)o->client_burst;
    *out = b;
    return KB_OK;
}

void hsm_budget_free(hsm_budget *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->nslots; i++) {
        client_ent *e = b->slots[i];
        while (e) {
            client_ent *n = e->next;
            free(e);
            e = n;
        }
    }
    free(b->slots);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* FNV-1a: table placement only (IDs come from verified certificates, and a collision costs a
 * longer chain, never a wrong answer). */
uint64_t hsm_id_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static void unlink_ent(hsm_budget *b, client_ent *victim)
{
    client_ent **pp = &b->slots[victim->hash & (b->nslots - 1)];
    while (*pp && *pp != victim)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = victim->next;
        free(victim);
        b->nclients--;
    }
}

/* The table is full: drop a client whose bucket has refilled completely (it is then exactly
 * what a new entry would be, so nothing is lost); failing that, the fullest one. */
static void evict_one(hsm_budget *b, double now)
{
    client_ent *best = NULL;
    double best_fill = -1;
    for (size_t i = 0; i < b->nslots; i++) {
        for (client_ent *e = b->slots[i]; e; e = e->next) {
            hsm_bucket_refill(&e->b, now);
            double fill = e->b.burst > 0 ? e->b.tokens / e->b.burst : 1;
            if (fill > best_fill) {
                best = e;
                best_fill = fill;
                if (fill >= 1)
                    goto found;
            }
        }
    }
found:
    if (best)
        unlink_ent(b, best);
}

static client_ent *client_get(hsm_budget *b, const char *id, double now)
{
    uint64_t h = hsm_id_hash(id);
    size_t len = strnlen(id, HSM_BUDGET_CLIENT_MAX + 1);
    client_ent *e;
    if (len > HSM_BUDGET_CLIENT_MAX)
        return NULL;
    for (e = b->slots[h & (b->nslots - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(e->id, id) == 0)
            return e;
    if (b->nclients >= b->max_clients)
        evict_one(b, now);
    e = malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->id, id, len + 1);
    e->hash = h;
    hsm_bucket_init(&e->b, b->client_rate, b->client_burst, now);
    e->next = b->slots[h & (b->nslots - 1)];
    b->slots[h & (b->nslots - 1)] = e;
    b->nclients++;
    return e;
}

kb_err hsm_budget_take(hsm_budget *b, const char *client, bool cloud, double now,
                       int64_t *retry_after)
{
    hsm_bucket *cls;
    client_ent *ce = NULL;
    double wait = 0, w;
    kb_err rc = KB_OK;

    if (retry_after)
        *retry_after = 0;
    if (b == NULL)
        return KB_OK;
    /* An over-long key is refused, never truncated into someone else's bucket. */
    if (client != NULL && strnlen(client, HSM_BUDGET_CLIENT_MAX + 1) > HSM_BUDGET_CLIENT_MAX)
        return KB_ERR_INVALID;
    pthread_mutex_lock(&b->mu);
    cls = cloud ? &b->cloud : &b->dc;
    hsm_bucket_refill(&b->global, now);
    hsm_bucket_refill(cls, now);
    if (b->client_rate > 0 && client != NULL) {
        ce = client_get(b, client, now);
        if (ce == NULL) {
            rc = KB_ERR_NOMEM;
            goto out;
        }
        hsm_bucket_refill(&ce->b, now);
    }
    /* All or none: check every bucket before taking from any, so a refusal changes nothing. */
    w = hsm_bucket_wait(&b->global, 1);
    wait = w > wait ? w : wait;
    w = hsm_bucket_wait(cls, 1);
    wait = w > wait ? w : wait;
    if (ce != NULL) {
        w = hsm_bucket_wait(&ce->b, 1);
        wait = w > wait ? w : wait;
    }
    if (wait > 0) {
        if (cloud)
            b->refused_cloud++;
        else
            b->refused_dc++;
        if (retry_after)
            *retry_after = hsm_retry_after_secs(wait);
        rc = KB_ERR_LIMIT;
        goto out;
    }
    (void)hsm_bucket_take(&b->global, 1, now);
    (void)hsm_bucket_take(cls, 1, now);
    if (ce != NULL)
        (void)hsm_bucket_take(&ce->b, 1, now);
    b->granted++;
out:
    pthread_mutex_unlock(&b->mu);
    return rc;
}

static client_ent *client_find(hsm_budget *b, const char *id)
{
    uint64_t h = hsm_id_hash(id);
    for (client_ent *e = b->slots[h & (b->nslots - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

int64_t hsm_budget_retry_after(hsm_budget *b, const char *client, bool cloud, double now)
{
    double wait = 0, w;
    client_ent *ce;
    if (b == NULL)
        return 1;
    pthread_mutex_lock(&b->mu);
    hsm_bucket *cls = cloud ? &b->cloud : &b->dc;
    hsm_bucket_refill(&b->global, now);
    hsm_bucket_refill(cls, now);
    wait = hsm_bucket_wait(&b->global, 1);
    w = hsm_bucket_wait(cls, 1);
    wait = w > wait ? w : wait;
    if (b->client_rate > 0 && client != NULL && (ce = client_find(b, client)) != NULL) {
        hsm_bucket_refill(&ce->b, now);
        w = hsm_bucket_wait(&ce->b, 1);
        wait = w > wait ? w : wait;
    }
    pthread_mutex_unlock(&b->mu);
    return hsm_retry_after_secs(wait);
}

static double level(hsm_bucket *bk, double now)
{
    if (bk->rate <= 0)
        return -1;
    hsm_bucket_refill(bk, now);
    return bk->tokens;
}

void hsm_budget_stats_get(hsm_budget *b, double now, hsm_budget_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (b == NULL) {
        out->global = out->cloud = out->dc = -1;
        return;
    }
    pthread_mutex_lock(&b->mu);
    out->global = level(&b->global, now);
    out->cloud = level(&b->cloud, now);
    out->dc = level(&b->dc, now);
    out->granted = b->granted;
    out->refused_cloud = b->refused_cloud;
    out->refused_dc = b->refused_dc;
    out->clients = b->nclients;
    pthread_mutex_unlock(&b->mu);
}

double hsm_budget_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
