/* hsm_budget.c - the global / class / client budget over lib/ratelimit.h's token buckets. */
#include "hsm_budget.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lib/idtable.h"
#include "lib/ratelimit.h"

/* ---- the budget ------------------------------------------------------------------------------ */

struct hsm_budget {
    pthread_mutex_t mu;
    kb_bucket global, cloud, dc;
    double client_rate, client_burst;
    kb_idtable *clients; /* of kb_bucket */
    uint64_t granted, refused_cloud, refused_dc;
};

/* At the bound, a client whose bucket has refilled completely goes first (it is then exactly
 * what a new entry would be, so nothing is lost); failing that, the fullest one. */
static double client_idle(void *val, void *arg)
{
    kb_bucket *b = val;
    kb_bucket_refill(b, *(const double *)arg);
    return b->burst > 0 ? b->tokens / b->burst : 1;
}

kb_err hsm_budget_new(const hsm_budget_opts *o, double now, hsm_budget **out)
{
    hsm_budget *b;
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    *out = NULL;
    const kb_idtable_opts to = {.max = o->max_clients ? o->max_clients : HSM_BUDGET_CLIENTS_DEFAULT,
                                .id_max = HSM_BUDGET_CLIENT_MAX,
                                .val_size = sizeof(kb_bucket),
                                .idle = client_idle};
    KB_GUARD(kb_bucket_check(o->global_rate, (double)o->global_burst));
    KB_GUARD(kb_bucket_check(o->cloud_rate, (double)o->cloud_burst));
    KB_GUARD(kb_bucket_check(o->dc_rate, (double)o->dc_burst));
    KB_GUARD(kb_bucket_check(o->client_rate, (double)o->client_burst));
    b = calloc(1, sizeof(*b));
    KB_ENSURE(b != NULL, KB_ERR_NOMEM);
    if (kb_idtable_new(&to, &b->clients) != KB_OK || pthread_mutex_init(&b->mu, NULL) != 0) {
        kb_idtable_free(b->clients);
        free(b);
        return KB_ERR_NOMEM;
    }
    kb_bucket_init(&b->global, o->global_rate, (double)o->global_burst, now);
    kb_bucket_init(&b->cloud, o->cloud_rate, (double)o->cloud_burst, now);
    kb_bucket_init(&b->dc, o->dc_rate, (double)o->dc_burst, now);
    b->client_rate = o->client_rate;
    b->client_burst = (double)o->client_burst;
    *out = b;
    return KB_OK;
}

void hsm_budget_free(hsm_budget *b)
{
    if (b == NULL)
        return;
    kb_idtable_free(b->clients);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static kb_err client_get(hsm_budget *b, const char *id, double now, kb_bucket **out)
{
    void *v = NULL;
    bool created = false;
    KB_GUARD(kb_idtable_get(b->clients, id, &now, &v, &created));
    if (created)
        kb_bucket_init(v, b->client_rate, b->client_burst, now);
    *out = v;
    return KB_OK;
}

kb_err hsm_budget_take(hsm_budget *b, const char *client, bool cloud, double now,
                       int64_t *retry_after)
{
    kb_bucket *cls, *ce = NULL;
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
    kb_bucket_refill(&b->global, now);
    kb_bucket_refill(cls, now);
    if (b->client_rate > 0 && client != NULL) {
        KB_GUARD_OUT(rc, client_get(b, client, now, &ce));
        kb_bucket_refill(ce, now);
    }
    /* All or none: check every bucket before taking from any, so a refusal changes nothing. */
    w = kb_bucket_wait(&b->global, 1);
    wait = w > wait ? w : wait;
    w = kb_bucket_wait(cls, 1);
    wait = w > wait ? w : wait;
    if (ce != NULL) {
        w = kb_bucket_wait(ce, 1);
        wait = w > wait ? w : wait;
    }
    if (wait > 0) {
        if (cloud)
            b->refused_cloud++;
        else
            b->refused_dc++;
        if (retry_after)
            *retry_after = kb_retry_after_secs(wait);
        rc = KB_ERR_LIMIT;
        goto out;
    }
    (void)kb_bucket_take(&b->global, 1, now);
    (void)kb_bucket_take(cls, 1, now);
    if (ce != NULL)
        (void)kb_bucket_take(ce, 1, now);
    b->granted++;
out:
    pthread_mutex_unlock(&b->mu);
    return rc;
}

int64_t hsm_budget_retry_after(hsm_budget *b, const char *client, bool cloud, double now)
{
    double wait = 0, w;
    kb_bucket *ce;
    if (b == NULL)
        return 1;
    pthread_mutex_lock(&b->mu);
    kb_bucket *cls = cloud ? &b->cloud : &b->dc;
    kb_bucket_refill(&b->global, now);
    kb_bucket_refill(cls, now);
    wait = kb_bucket_wait(&b->global, 1);
    w = kb_bucket_wait(cls, 1);
    wait = w > wait ? w : wait;
    if (b->client_rate > 0 && client != NULL &&
        (ce = kb_idtable_find(b->clients, client)) != NULL) {
        kb_bucket_refill(ce, now);
        w = kb_bucket_wait(ce, 1);
        wait = w > wait ? w : wait;
    }
    pthread_mutex_unlock(&b->mu);
    return kb_retry_after_secs(wait);
}

static double level(kb_bucket *bk, double now)
{
    if (bk->rate <= 0)
        return -1;
    kb_bucket_refill(bk, now);
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
    out->clients = kb_idtable_count(b->clients);
    pthread_mutex_unlock(&b->mu);
}

double hsm_budget_now(void)
{
    return kb_ratelimit_now();
}
