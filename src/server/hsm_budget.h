/* hsm_budget.h - token buckets over keybridged's token (HSM) operations (issue 7, point 1).
 *
 * Every unwrap (a content read that misses the data-key cache) and every wrap (a write) takes one
 * token from three buckets at once, all or none:
 *   - the global bucket: what the HSM can give keybridged;
 *   - the class bucket: one for cloud clients, one for data-center clients (admins, daemons), so
 *     a cloud herd drains only the cloud share and cannot starve the data center. The guarantee
 *     holds when cloud_rate + dc_rate <= global_rate (and the bursts likewise): svc_open warns
 *     otherwise;
 *   - the client bucket: one per SPIFFE ID, so one client cannot drain its class alone.
 * A bucket with rate 0 is off (never limits). Buckets start full.
 *
 * Time is passed in by the caller (monotonic seconds, hsm_budget_now()), so the arithmetic is
 * tested with an injected clock (tests/unit/test_hsm_budget.c). Thread-safe (one mutex).
 * The buckets are lib/ratelimit.h's and the per-client table lib/idtable.h's (bounded at
 * max_clients: at the bound the fullest client bucket is dropped, a full one first).
 * See docs/internals/hsm-budget.md.
 */
#ifndef KB_SERVER_HSM_BUDGET_H
#define KB_SERVER_HSM_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

/* Default bound on the per-client table (distinct SPIFFE IDs tracked at once). */
#define HSM_BUDGET_CLIENTS_DEFAULT 100000
/* Longest client key (SPIFFE IDs are at most 2048 bytes). */
#define HSM_BUDGET_CLIENT_MAX 2048

/* ---- the budget ------------------------------------------------------------------------------ */

/* Rates are ops/s and may be fractional (0.05 = one every 20 s); bursts are whole tokens. */
typedef struct {
    double global_rate;
    int64_t global_burst; /* rate 0 = off */
    double cloud_rate;
    int64_t cloud_burst;
    double dc_rate;
    int64_t dc_burst;
    double client_rate;
    int64_t client_burst;
    size_t max_clients; /* 0 = HSM_BUDGET_CLIENTS_DEFAULT */
} hsm_budget_opts;

typedef struct hsm_budget hsm_budget;

/* KB_ERR_CONFIG for a negative or too large rate/burst, or a burst below 1 on a bucket that is
 * on (it could never grant anything). */
KB_WUR kb_err hsm_budget_new(const hsm_budget_opts *o, double now, hsm_budget **out);
void hsm_budget_free(hsm_budget *b);

/* Take one token for one token operation by client (a SPIFFE ID or other actor name) of the
 * given class, at time now. KB_OK, or KB_ERR_LIMIT with *retry_after = whole seconds until every
 * bucket involved holds a token again (nothing is taken then). NULL b = no budget (KB_OK). */
KB_WUR kb_err hsm_budget_take(hsm_budget *b, const char *client, bool cloud, double now,
                              int64_t *retry_after);

/* Whole seconds (>= 1) until hsm_budget_take(client, cloud) could succeed; takes nothing and
 * adds no client entry. For the Retry-After of an answer made of several refusals. */
int64_t hsm_budget_retry_after(hsm_budget *b, const char *client, bool cloud, double now);

/* Levels (refilled to now; -1 for a bucket that is off) and counters, for metrics and tests. */
typedef struct {
    double global, cloud, dc;
    uint64_t granted;
    uint64_t refused_cloud, refused_dc;
    size_t clients; /* entries in the per-client table */
} hsm_budget_stats;
void hsm_budget_stats_get(hsm_budget *b, double now, hsm_budget_stats *out);

/* CLOCK_MONOTONIC in seconds (kb_ratelimit_now): what production passes as now. */
double hsm_budget_now(void);

#endif
