/* ratelimit.c - token bucket arithmetic. */
#include "ratelimit.h"

#include <time.h>

kb_err kb_bucket_check(double rate, double burst)
{
    /* written so that NaN fails too */
    KB_ENSURE(rate >= 0 && rate <= KB_RATELIMIT_RATE_MAX, KB_ERR_CONFIG);
    KB_ENSURE(burst >= 0 && burst <= KB_RATELIMIT_RATE_MAX, KB_ERR_CONFIG);
    KB_ENSURE(rate == 0 || burst >= 1, KB_ERR_CONFIG);
    return KB_OK;
}

void kb_bucket_init(kb_bucket *b, double rate, double burst, double now)
{
    b->rate = rate;
    b->burst = burst;
    b->tokens = burst;
    b->last = now;
}

void kb_bucket_refill(kb_bucket *b, double now)
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

double kb_bucket_wait(const kb_bucket *b, double n)
{
    if (b->rate <= 0)
        return 0;
    if (n > b->burst)
        n = b->burst;
    if (b->tokens >= n)
        return 0;
    return (n - b->tokens) / b->rate;
}

bool kb_bucket_take(kb_bucket *b, double n, double now)
{
    if (b->rate <= 0)
        return true;
    kb_bucket_refill(b, now);
    if (b->tokens < n)
        return false;
    b->tokens -= n;
    return true;
}

bool kb_bucket_full(kb_bucket *b, double now)
{
    kb_bucket_refill(b, now);
    return b->rate <= 0 || b->tokens >= b->burst;
}

int64_t kb_retry_after_secs(double wait)
{
    int64_t c;
    if (!(wait > 1)) /* also catches NaN */
        return 1;
    if (wait > 86400)
        return 86400;
    c = (int64_t)wait;
    return (double)c < wait ? c + 1 : c;
}

double kb_ratelimit_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
