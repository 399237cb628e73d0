/* metrics.h - keybridged's Prometheus metrics (text exposition format 0.0.4).
 *
 * Requests by route template and status, a latency histogram per route, token (HSM) operations,
 * and gauges for secrets, clients, open connections and certificate reloads; the HSM budget
 * (bucket levels, refusals), the data-key cache (hits, misses, entries) and fairness refusals.
 * Labels only ever hold route templates (api_route_name) and status codes: never names, IDs or
 * anything a client sent, so a metric cannot leak a secret's name and label cardinality stays
 * bounded.
 *
 * Thread-safe: metrics_observe is called from every event loop.
 */
#ifndef KB_SERVER_METRICS_H
#define KB_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "service.h"

#define METRICS_ROUTES_MAX 64   /* distinct route templates tracked (others fold into "other") */
#define METRICS_STATUSES_MAX 16 /* distinct statuses per route (others fold into 0) */
#define METRICS_TEXT_MAX ((size_t)1024 * 1024)
#define METRICS_GAUGE_CACHE_SECS 15 /* secrets/clients counts are recomputed at most this often */

typedef struct metrics metrics;

KB_WUR kb_err metrics_new(metrics **out);
void metrics_free(metrics *m);

/* Count one answered request. route must be a static string (api_route_name). */
void metrics_observe(metrics *m, const char *route, int status, double seconds);

/* Extra gauges owned by the server loop. */
typedef struct {
    int connections;
    uint64_t reloads;
    uint64_t fair_refused_conns;    /* per-SPIFFE-ID connection cap (fairness.h) */
    uint64_t fair_refused_requests; /* per-SPIFFE-ID request rate */
} metrics_server_state;

/* Append the exposition text to out. s may be NULL (no store gauges or HSM counters). */
KB_WUR kb_err metrics_render(metrics *m, svc *s, const metrics_server_state *st, int64_t now,
                             kb_dbuf *out);

#endif
