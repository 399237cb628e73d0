/* fairness.h - per-SPIFFE-ID caps on open connections and request rate (issue 7, point 3).
 *
 * One client (one SPIFFE ID) must not starve the rest: it may hold at most max_conns
 * connections that have sent a request (a connection is admitted on its first request, when the
 * verified ID is known, and released when it closes), and send at most `rate` requests per
 * second with bursts of `burst` (a token bucket, lib/ratelimit.h). Over either cap: 429 with
 * Retry-After. 0 turns a cap off.
 *
 * The table of IDs is bounded (max_ids): an ID with no open connection and a full bucket is
 * indistinguishable from a new one and is dropped first when the table is full. If every entry
 * is busy, new IDs are refused (KB_ERR_LIMIT) rather than letting the table grow.
 * Thread-safe (one mutex); time is the caller's (monotonic seconds).
 */
#ifndef KB_SERVER_FAIRNESS_H
#define KB_SERVER_FAIRNESS_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

#define FAIRNESS_IDS_DEFAULT 100000
#define FAIRNESS_ID_MAX 2048

typedef struct {
    int64_t max_conns; /* per ID; 0 = no cap */
    int64_t rate;      /* requests/s per ID; 0 = no cap */
    int64_t burst;     /* bucket size (>= 1 when rate > 0) */
    size_t max_ids;    /* 0 = FAIRNESS_IDS_DEFAULT */
} fairness_opts;

typedef struct fairness fairness;
typedef struct fairness_conn fairness_conn; /* an admitted connection */

KB_WUR kb_err fairness_new(const fairness_opts *o, fairness **out);
/* Frees the table; connections still admitted must not be released afterwards. */
void fairness_free(fairness *f);

/* Admit a connection for id: KB_OK and *out (release it when the connection closes), or
 * KB_ERR_LIMIT when id already holds max_conns connections (or the table is full of busy IDs). */
KB_WUR kb_err fairness_conn_acquire(fairness *f, const char *id, double now, fairness_conn **out);
void fairness_conn_release(fairness *f, fairness_conn *c);

/* Count one request by id: KB_OK, or KB_ERR_LIMIT with *retry_after in whole seconds. */
KB_WUR kb_err fairness_request(fairness *f, const char *id, double now, int64_t *retry_after);

typedef struct {
    uint64_t refused_conns, refused_requests;
    size_t ids;
} fairness_stats;
void fairness_stats_get(fairness *f, fairness_stats *out);

#endif
