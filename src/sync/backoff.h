/* backoff.h - when to retry keybridged after a 429 / 503 or a deferred batch entry, within the
 * run's deadline (issue 7 point 4).
 *
 * The server's Retry-After (RFC 9110 10.2.3) is the earliest a token is due, so the wait never
 * starts before it; a herd of syncers that all got the same hint must not come back in the same
 * millisecond, so each adds a random share of the wait on top ("Exponential Backoff And Jitter",
 * AWS Architecture Blog, 2015). Without a hint (503 without Retry-After) the wait doubles from
 * SYNC_BACKOFF_BASE_MS up to SYNC_BACKOFF_CAP_MS. A wait that would end later than the deadline
 * minus SYNC_BACKOFF_RESERVE_MS (time left for the retry itself) is not started at all: the run
 * stops early and reports what is left as deferred.
 *
 * The arithmetic is pure (sync_backoff_delay); sync_backoff_wait draws the randomness, reads the
 * clock and sleeps through a sync_clock, so unit tests drive it with a fake clock and fake random
 * numbers and never sleep. */
#ifndef KB_SYNC_BACKOFF_H
#define KB_SYNC_BACKOFF_H

#include <stdint.h>

#include "lib/err.h"

#define SYNC_BACKOFF_BASE_MS 500
#define SYNC_BACKOFF_CAP_MS 30000
#define SYNC_BACKOFF_RESERVE_MS 1000
/* Jitter: up to 1/SYNC_BACKOFF_JITTER_DIV of the wait is added on top (here up to +50 %). */
#define SYNC_BACKOFF_JITTER_DIV 2
/* Most retries of one request, whatever the deadline: bounds a run without a deadline against a
 * server that never serves (the deadline is the real bound: a herd of 1,000 syncers sharing a
 * 200 ops/s budget retries ~50 times in 100 s, bench/herd/README.md). */
#define SYNC_BACKOFF_MAX_ATTEMPTS 1000
/* Default deadline of a one-shot or daemon run (DESIGN.md: a run is bounded in time). */
#define SYNC_DEADLINE_DEFAULT_MS 60000
/* A Lambda run stops this long before the invocation's deadline, to post its summary. */
#define SYNC_LAMBDA_MARGIN_MS 2000

/* The wait before retry number attempt (0 = first retry) given the server's hint in ms (<0: no
 * hint), a random rnd, the monotonic time now_ms and the deadline deadline_ms (0: none).
 * KB_OK and *delay_ms set, or KB_ERR_TIMEOUT when even the wait without jitter would end past
 * deadline - SYNC_BACKOFF_RESERVE_MS (stop now, do not sleep). The jitter is clipped so that the
 * wait never ends past that point. */
KB_WUR kb_err sync_backoff_delay(int64_t hint_ms, unsigned attempt, uint32_t rnd, int64_t now_ms,
                                 int64_t deadline_ms, int64_t *delay_ms);

/* The clock a run uses: monotonic ms, a sleep, a random number. NULL members use the real ones
 * (CLOCK_MONOTONIC, nanosleep, RAND_bytes). */
typedef struct {
    int64_t deadline_ms; /* monotonic; 0 = none */
    int64_t (*now_ms)(void *ctx);
    void (*sleep_ms)(void *ctx, int64_t ms);
    uint32_t (*random)(void *ctx);
    void *ctx;
} sync_clock;

int64_t sync_clock_now(const sync_clock *c);
/* Milliseconds left before the deadline (INT64_MAX without one; 0 when past). */
int64_t sync_clock_left(const sync_clock *c);
/* Sleep ms through the clock (its sleep_ms, or nanosleep). */
void sync_clock_sleep(const sync_clock *c, int64_t ms);
/* Compute the wait (sync_backoff_delay) and sleep it. KB_ERR_TIMEOUT: no time for it, nothing
 * slept. *slept_ms (optional) gets the wait. */
KB_WUR kb_err sync_backoff_wait(const sync_clock *c, int64_t hint_ms, unsigned attempt,
                                int64_t *slept_ms);

#endif
