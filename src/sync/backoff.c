/* backoff.c - jittered waits for 429 / 503 / deferred, bounded by the run's deadline (see .h). */
#include "backoff.h"

#include <errno.h>
#include <time.h>

#include <openssl/rand.h>

#include "summary.h"

kb_err sync_backoff_delay(int64_t hint_ms, unsigned attempt, uint32_t rnd, int64_t now_ms,
                          int64_t deadline_ms, int64_t *delay_ms)
{
    int64_t base, jitter, limit;
    KB_ENSURE_REF(delay_ms);
    *delay_ms = 0;
    if (hint_ms >= 0) {
        /* The server knows when a token is due: that is the floor, whatever the attempt. */
        base = hint_ms;
    } else {
        base = SYNC_BACKOFF_BASE_MS;
        for (unsigned i = 0; i < attempt && base < SYNC_BACKOFF_CAP_MS; i++)
            base *= 2;
        if (base > SYNC_BACKOFF_CAP_MS)
            base = SYNC_BACKOFF_CAP_MS;
    }
    /* rnd / 2^32 of the jitter range: uniform in [0, base / DIV]. */
    jitter = (int64_t)(((uint64_t)(base / SYNC_BACKOFF_JITTER_DIV) * (uint64_t)rnd) >> 32);
    if (deadline_ms > 0) {
        limit = deadline_ms - SYNC_BACKOFF_RESERVE_MS - now_ms;
        /* Not even the hint fits before the deadline: stop now rather than sleep in vain. */
        KB_ENSURE(base <= limit, KB_ERR_TIMEOUT);
        if (base + jitter > limit)
            jitter = limit - base;
    }
    *delay_ms = base + jitter;
    return KB_OK;
}

int64_t sync_clock_now(const sync_clock *c)
{
    return c && c->now_ms ? c->now_ms(c->ctx) : sync_mono_ms();
}

int64_t sync_clock_left(const sync_clock *c)
{
    int64_t left;
    if (c == NULL || c->deadline_ms <= 0)
        return INT64_MAX;
    left = c->deadline_ms - sync_clock_now(c);
    return left > 0 ? left : 0;
}

static uint32_t real_random(void)
{
    uint32_t r = 0;
    /* Jitter needs no secrecy, but RAND_bytes is what we have (rand() is banned); if it fails the
     * wait is simply the hint without jitter. */
    if (RAND_bytes((unsigned char *)&r, (int)sizeof(r)) != 1)
        r = 0;
    return r;
}

static void real_sleep(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void sync_clock_sleep(const sync_clock *c, int64_t ms)
{
    if (ms <= 0)
        return;
    if (c && c->sleep_ms)
        c->sleep_ms(c->ctx, ms);
    else
        real_sleep(ms);
}

kb_err sync_backoff_wait(const sync_clock *c, int64_t hint_ms, unsigned attempt, int64_t *slept_ms)
{
    int64_t d = 0;
    uint32_t r = c && c->random ? c->random(c->ctx) : real_random();
    if (slept_ms)
        *slept_ms = 0;
    KB_GUARD(
        sync_backoff_delay(hint_ms, attempt, r, sync_clock_now(c), c ? c->deadline_ms : 0, &d));
    sync_clock_sleep(c, d);
    if (slept_ms)
        *slept_ms = d;
    return KB_OK;
}
