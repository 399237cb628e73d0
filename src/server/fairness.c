/* fairness.c - a bounded table of SPIFFE IDs with a connection count and a request bucket. */
#include "fairness.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "lib/idtable.h"
#include "lib/ratelimit.h"

/* The table's value is the fairness_conn handed out: release needs no lookup (its address is
 * stable while it has a connection, since only idle entries are evicted). */
struct fairness_conn {
    int64_t conns;
    kb_bucket b;
};
typedef struct fairness_conn ent;

struct fairness {
    pthread_mutex_t mu;
    fairness_opts o;
    kb_idtable *ids;
    uint64_t refused_conns, refused_requests;
};

/* An ID with no open connection and a full bucket is what a new entry would be: it may go. Any
 * other must stay (dropping it would reset its caps), so a table full of those refuses new IDs. */
static double ent_idle(void *val, void *arg)
{
    ent *e = val;
    return e->conns == 0 && kb_bucket_full(&e->b, *(const double *)arg) ? 1 : -1;
}

kb_err fairness_new(const fairness_opts *o, fairness **out)
{
    fairness *f;
    kb_idtable_opts to = {.id_max = FAIRNESS_ID_MAX, .val_size = sizeof(ent), .idle = ent_idle};
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(o->max_conns >= 0 && o->max_conns <= 1000000, KB_ERR_CONFIG);
    KB_GUARD(kb_bucket_check((double)o->rate, (double)o->burst));
    f = calloc(1, sizeof(*f));
    KB_ENSURE(f != NULL, KB_ERR_NOMEM);
    f->o = *o;
    if (f->o.max_ids == 0)
        f->o.max_ids = FAIRNESS_IDS_DEFAULT;
    to.max = f->o.max_ids;
    if (kb_idtable_new(&to, &f->ids) != KB_OK || pthread_mutex_init(&f->mu, NULL) != 0) {
        kb_idtable_free(f->ids);
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
    kb_idtable_free(f->ids);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* The entry for id, created if needed; NULL if the table is full of busy IDs, the ID is too long,
 * or on ENOMEM. */
static ent *get(fairness *f, const char *id, double now)
{
    void *v = NULL;
    bool created = false;
    if (kb_idtable_get(f->ids, id, &now, &v, &created) != KB_OK)
        return NULL;
    if (created)
        kb_bucket_init(&((ent *)v)->b, (double)f->o.rate, (double)f->o.burst, now);
    return v;
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
    } else if (!kb_bucket_take(&e->b, 1, now)) {
        f->refused_requests++;
        if (retry_after)
            *retry_after = kb_retry_after_secs(kb_bucket_wait(&e->b, 1));
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
    out->ids = kb_idtable_count(f->ids);
    pthread_mutex_unlock(&f->mu);
}
