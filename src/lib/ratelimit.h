/* ratelimit.h - the token bucket (RFC 2697 uses the same shape for its committed burst): tokens
 * accrue at `rate` per second up to `burst`; an operation takes whole tokens. A bucket with rate
 * <= 0 is off (never limits). Buckets start full.
 *
 * Time is passed in by the caller (monotonic seconds, kb_ratelimit_now()), so the arithmetic is
 * tested with an injected clock. Not locked: the owner's mutex covers its buckets. Users:
 * keybridged's HSM budget (server/hsm_budget.c) and per-SPIFFE-ID request caps
 * (server/fairness.c). See docs/internals/lib.md. */
#ifndef KB_LIB_RATELIMIT_H
#define KB_LIB_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

/* Largest configurable rate (tokens/s) and burst; larger values are a configuration error. */
#define KB_RATELIMIT_RATE_MAX 1000000

typedef struct {
    double rate;   /* tokens per second; <= 0 = unlimited */
    double burst;  /* capacity */
    double tokens; /* level at `last` */
    double last;   /* time of the last refill (caller's clock, seconds) */
} kb_bucket;

/* KB_ERR_CONFIG unless 0 <= rate, burst <= KB_RATELIMIT_RATE_MAX (NaN fails) and a bucket that
 * is on (rate > 0) has burst >= 1 (otherwise it could never grant anything). */
KB_WUR kb_err kb_bucket_check(double rate, double burst);
/* A full bucket at time now. */
void kb_bucket_init(kb_bucket *b, double rate, double burst, double now);
/* Add what accrued since the last refill (capped at burst). A clock that goes backwards adds
 * nothing (and moves `last` back, so no time is counted twice). */
void kb_bucket_refill(kb_bucket *b, double now);
/* Seconds until the bucket holds n tokens (0 if it does now); call after refill. n > burst can
 * never be satisfied: returns the time to fill the bucket completely. */
double kb_bucket_wait(const kb_bucket *b, double n);
/* Refill, then take n tokens if all are there. */
bool kb_bucket_take(kb_bucket *b, double n, double now);
/* The bucket is off or refilled completely (at now): it is then exactly what a new one would be. */
bool kb_bucket_full(kb_bucket *b, double now);
/* Whole seconds to put in Retry-After for a wait (at least 1: RFC 9110 10.2.3 has no fractions,
 * and 0 would invite an immediate retry that fails again; at most a day). */
int64_t kb_retry_after_secs(double wait);
/* CLOCK_MONOTONIC in seconds: what production passes as now. */
double kb_ratelimit_now(void);

#endif
