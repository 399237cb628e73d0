/* metrics.c - counters and histograms behind one mutex; rendered on scrape.
 * Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (text 0.0.4). */
#include "metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Latency buckets in seconds: fine below 50 ms, where the list target lives (issue 3, item 4). */
static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                 0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

typedef struct {
    const char *route;
    int status[METRICS_STATUSES_MAX];
    uint64_t status_n[METRICS_STATUSES_MAX];
    uint64_t bucket_n[NBUCKETS]; /* non-cumulative; summed when rendered */
    uint64_t count;
    double sum;
} route_stats;

struct metrics {
    pthread_mutex_t mu;
    route_stats routes[METRICS_ROUTES_MAX];
    size_t nroutes;
    int64_t gauges_at;
    size_t secrets, deleted, clients, disabled;
    bool gauges_ok;
};

kb_err metrics_new(metrics **out)
{
    metrics *m;
    KB_ENSURE_REF(out);
    m = calloc(1, sizeof(*m));
    KB_ENSURE(m != NULL, KB_ERR_NOMEM);
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return KB_ERR_INTERNAL;
    }
    *out = m;
    return KB_OK;
}

void metrics_free(metrics *m)
{
    if (m == NULL)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static route_stats *route_slot(metrics *m, const char *route)
{
    for (size_t i = 0; i < m->nroutes; i++)
        if (m->routes[i].route == route || strcmp(m->routes[i].route, route) == 0)
            return &m->routes[i];
    if (m->nroutes < METRICS_ROUTES_MAX) {
        m->routes[m->nroutes].route = route;
        return &m->routes[m->nroutes++];
    }
    return &m->routes[METRICS_ROUTES_MAX - 1];
}

void metrics_observe(metrics *m, const char *route, int status, double seconds)
{
    route_stats *r;
    size_t j;
    if (m == NULL)
        return;
    if (route == NULL)
        route = "other";
    pthread_mutex_lock(&m->mu);
    r = route_slot(m, route);
    for (j = 0; j < METRICS_STATUSES_MAX; j++) {
        if (r->status[j] == status || r->status[j] == 0) {
            r->status[j] = status;
            break;
        }
    }
    if (j == METRICS_STATUSES_MAX) {
        j = METRICS_STATUSES_MAX - 1;
    }
    r->status_n[j]++;
    for (size_t b = 0; b < NBUCKETS; b++) {
        if (seconds <= buckets[b]) {
            r->bucket_n[b]++;
            break;
        }
    }
    r->count++;
    r->sum += seconds;
    pthread_mutex_unlock(&m->mu);
}

/* Store gauges: listing 100,000 secrets per scrape would be wasteful, so counts are cached. */
/* Count secrets a page at a time (store_secret_list_page): listing all 100,000 at once to count
 * them cost a spike of hundreds of MB once per cache period. Counts what the admin listing shows
 * (rows failing their MAC are dropped there too). */
static kb_err count_secrets(store *st, size_t *live, size_t *deleted)
{
    char *cursor = NULL;
    kb_err rc = KB_OK;
    *live = *deleted = 0;
    for (;;) {
        store_record *recs = NULL;
        size_t n = 0;
        char *next = NULL;
        rc = store_secret_list_page(st, true, cursor, STORE_PAGE_MAX, &recs, &n, &next);
        free(cursor);
        cursor = next;
        if (rc != KB_OK)
            break;
        for (size_t i = 0; i < n; i++) {
            if (recs[i].secret.deleted_at)
                (*deleted)++;
            else
                (*live)++;
        }
        store_records_free(recs, n);
        if (cursor == NULL)
            break;
    }
    free(cursor);
    return rc;
}

static void refresh_gauges(metrics *m, svc *s, int64_t now)
{
    store_client *cls = NULL;
    size_t nc = 0, live = 0, deleted = 0;
    if (s == NULL || (m->gauges_ok && now - m->gauges_at < METRICS_GAUGE_CACHE_SECS))
        return;
    m->gauges_ok = false;
    if (count_secrets(svc_store(s), &live, &deleted) != KB_OK)
        return;
    if (store_client_list(svc_store(s), &cls, &nc) != KB_OK)
        return;
    m->secrets = live;
    m->deleted = deleted;
    m->clients = m->disabled = 0;
    for (size_t i = 0; i < nc; i++) {
        if (cls[i].enabled)
            m->clients++;
        else
            m->disabled++;
    }
    store_clients_free(cls, nc);
    m->gauges_at = now;
    m->gauges_ok = true;
}

/* HSM budget and data-key cache (issue 7). A bucket that is off has no level line. */
static kb_err render_budget(svc *s, kb_dbuf *out)
{
    hsm_budget_stats b;
    dkcache_stats d;
    const char *names[] = {"global", "cloud", "dc"};
    double levels[3];

    hsm_budget_stats_get(svc_budget(s), hsm_budget_now(), &b);
    dkcache_stats_get(svc_dkcache(s), &d);
    levels[0] = b.global;
    levels[1] = b.cloud;
    levels[2] = b.dc;
    KB_GUARD(kb_dbuf_addstr(out, "# HELP keybridged_hsm_budget_tokens Tokens left in each HSM "
                                 "budget bucket (buckets that are off are not shown).\n"
                                 "# TYPE keybridged_hsm_budget_tokens gauge\n"));
    for (size_t i = 0; i < 3; i++)
        if (levels[i] >= 0)
            KB_GUARD(kb_dbuf_addf(out, "keybridged_hsm_budget_tokens{bucket=\"%s\"} %.3f\n",
                                  names[i], levels[i]));
    KB_GUARD(kb_dbuf_addf(
        out,
        "# HELP keybridged_hsm_budget_granted_total Token operations the budget allowed.\n"
        "# TYPE keybridged_hsm_budget_granted_total counter\n"
        "keybridged_hsm_budget_granted_total %llu\n"
        "# HELP keybridged_hsm_budget_refused_total Token operations refused (answered 429 or "
        "deferred), by client class.\n"
        "# TYPE keybridged_hsm_budget_refused_total counter\n"
        "keybridged_hsm_budget_refused_total{class=\"cloud\"} %llu\n"
        "keybridged_hsm_budget_refused_total{class=\"dc\"} %llu\n"
        "# HELP keybridged_hsm_budget_clients Per-client buckets tracked.\n"
        "# TYPE keybridged_hsm_budget_clients gauge\n"
        "keybridged_hsm_budget_clients %zu\n"
        "# HELP keybridged_dkcache_hits_total Content reads served with a cached data key.\n"
        "# TYPE keybridged_dkcache_hits_total counter\n"
        "keybridged_dkcache_hits_total %llu\n"
        "# HELP keybridged_dkcache_misses_total Content reads that needed a token unwrap.\n"
        "# TYPE keybridged_dkcache_misses_total counter\n"
        "keybridged_dkcache_misses_total %llu\n"
        "# HELP keybridged_dkcache_evictions_total Data keys dropped early (cache full).\n"
        "# TYPE keybridged_dkcache_evictions_total counter\n"
        "keybridged_dkcache_evictions_total %llu\n"
        "# HELP keybridged_dkcache_entries Data keys held in locked memory.\n"
        "# TYPE keybridged_dkcache_entries gauge\n"
        "keybridged_dkcache_entries %zu\n",
        (unsigned long long)b.granted, (unsigned long long)b.refused_cloud,
        (unsigned long long)b.refused_dc, b.clients, (unsigned long long)d.hits,
        (unsigned long long)d.misses, (unsigned long long)d.evictions, d.entries));
    return KB_OK;
}

kb_err metrics_render(metrics *m, svc *s, const metrics_server_state *st, int64_t now, kb_dbuf *out)
{
    kb_err rc = KB_OK;
    KB_ENSURE_REF(m);
    KB_ENSURE_REF(out);
    pthread_mutex_lock(&m->mu);
    KB_GUARD_OUT(rc, kb_dbuf_addstr(out, "# HELP keybridged_requests_total HTTP requests answered, "
                                         "by route template and status.\n"
                                         "# TYPE keybridged_requests_total counter\n"));
    for (size_t i = 0; i < m->nroutes; i++) {
        const route_stats *r = &m->routes[i];
        for (size_t j = 0; j < METRICS_STATUSES_MAX && r->status[j] != 0; j++)
            KB_GUARD_OUT(rc,
                         kb_dbuf_addf(out,
                                      "keybridged_requests_total{route=\"%s\",status=\"%d\"} "
                                      "%llu\n",
                                      r->route, r->status[j], (unsigned long long)r->status_n[j]));
    }
    KB_GUARD_OUT(rc, kb_dbuf_addstr(out, "# HELP keybridged_request_duration_seconds Time from "
                                         "request parsed to response queued.\n"
                                         "# TYPE keybridged_request_duration_seconds histogram\n"));
    for (size_t i = 0; i < m->nroutes; i++) {
        const route_stats *r = &m->routes[i];
        uint64_t cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += r->bucket_n[b];
            KB_GUARD_OUT(rc, kb_dbuf_addf(out,
                                          "keybridged_request_duration_seconds_bucket{route=\"%s\","
                                          "le=\"%g\"} %llu\n",
                                          r->route, buckets[b], (unsigned long long)cum));
        }
        KB_GUARD_OUT(rc, kb_dbuf_addf(out,
                                      "keybridged_request_duration_seconds_bucket{route=\"%s\","
                                      "le=\"+Inf\"} %llu\n"
                                      "keybridged_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                                      "keybridged_request_duration_seconds_count{route=\"%s\"} "
                                      "%llu\n",
                                      r->route, (unsigned long long)r->count, r->route, r->sum,
                                      r->route, (unsigned long long)r->count));
    }
    if (s != NULL) {
        uint64_t w = 0, u = 0, o = 0;
        kb_keystore_counters(svc_keystore(s), &w, &u, &o);
        KB_GUARD_OUT(rc, kb_dbuf_addf(out,
                                      "# HELP keybridged_hsm_operations_total Token operations.\n"
                                      "# TYPE keybridged_hsm_operations_total counter\n"
                                      "keybridged_hsm_operations_total{op=\"wrap\"} %llu\n"
                                      "keybridged_hsm_operations_total{op=\"unwrap\"} %llu\n"
                                      "keybridged_hsm_operations_total{op=\"other\"} %llu\n",
                                      (unsigned long long)w, (unsigned long long)u,
                                      (unsigned long long)o));
        KB_GUARD_OUT(rc, render_budget(s, out));
        refresh_gauges(m, s, now);
        if (m->gauges_ok)
            KB_GUARD_OUT(rc, kb_dbuf_addf(out,
                                          "# HELP keybridged_secrets Secrets in the store.\n"
                                          "# TYPE keybridged_secrets gauge\n"
                                          "keybridged_secrets{state=\"live\"} %zu\n"
                                          "keybridged_secrets{state=\"deleted\"} %zu\n"
                                          "# HELP keybridged_clients Registered clients.\n"
                                          "# TYPE keybridged_clients gauge\n"
                                          "keybridged_clients{state=\"enabled\"} %zu\n"
                                          "keybridged_clients{state=\"disabled\"} %zu\n",
                                          m->secrets, m->deleted, m->clients, m->disabled));
        /* After the gauges: their (cached) recount is in this scrape's value, not the next. */
        KB_GUARD_OUT(rc, kb_dbuf_addf(out,
                                      "# HELP keybridged_store_round_trips_total Statements sent "
                                      "to the database server and answered (PostgreSQL; 0 on "
                                      "SQLite).\n"
                                      "# TYPE keybridged_store_round_trips_total counter\n"
                                      "keybridged_store_round_trips_total %llu\n",
                                      (unsigned long long)store_round_trips(svc_store(s))));
    }
    if (st != NULL)
        KB_GUARD_OUT(rc, kb_dbuf_addf(out,
                                      "# HELP keybridged_connections Open client connections.\n"
                                      "# TYPE keybridged_connections gauge\n"
                                      "keybridged_connections %d\n"
                                      "# HELP keybridged_tls_reloads_total Certificate and "
                                      "bundle reloads.\n"
                                      "# TYPE keybridged_tls_reloads_total counter\n"
                                      "keybridged_tls_reloads_total %llu\n"
                                      "# HELP keybridged_fairness_refused_total Requests "
                                      "answered 429 by the per-SPIFFE-ID caps.\n"
                                      "# TYPE keybridged_fairness_refused_total counter\n"
                                      "keybridged_fairness_refused_total{cap=\"connections\"} "
                                      "%llu\n"
                                      "keybridged_fairness_refused_total{cap=\"rate\"} %llu\n",
                                      st->connections, (unsigned long long)st->reloads,
                                      (unsigned long long)st->fair_refused_conns,
                                      (unsigned long long)st->fair_refused_requests));
out:
    pthread_mutex_unlock(&m->mu);
    return rc;
}
