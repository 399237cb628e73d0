/* schedule.c - hashed schedule offsets (see schedule.h). */
#include "schedule.h"

#include <stdio.h>
#include <string.h>

#include <openssl/sha.h>

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

kb_err sync_schedule_offset(const char *app, int interval, int *minute)
{
    uint8_t h[SHA256_DIGEST_LENGTH];
    KB_ENSURE_REF(app);
    KB_ENSURE_REF(minute);
    KB_ENSURE(app[0] != '\0', KB_ERR_INVALID);
    KB_ENSURE(interval >= 1 && interval <= 60 && 60 % interval == 0, KB_ERR_INVALID);
    SHA256((const unsigned char *)app, strlen(app), h);
    *minute = (int)(be32(h) % (uint32_t)interval);
    return KB_OK;
}

int sync_schedule_second(const char *app)
{
    uint8_t h[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)app, strlen(app), h);
    return (int)(be32(h + 4) % 60);
}

kb_err sync_schedule_cron(int minute, int interval, char *out, size_t out_len)
{
    int n;
    KB_ENSURE(interval >= 1 && interval <= 60 && 60 % interval == 0, KB_ERR_INVALID);
    KB_ENSURE(minute >= 0 && minute < interval, KB_ERR_INVALID);
    if (interval == 60)
        n = snprintf(out, out_len, "cron(%d * * * ? *)", minute);
    else
        n = snprintf(out, out_len, "cron(%d/%d * * * ? *)", minute, interval);
    KB_ENSURE(n > 0 && (size_t)n < out_len, KB_ERR_TOO_LARGE);
    return KB_OK;
}

int64_t sync_schedule_next_delay(int64_t now_s, int interval, int minute, int second)
{
    int64_t period = (int64_t)interval * 60;
    int64_t phase = (int64_t)minute * 60 + second;
    int64_t pos = now_s % period;
    int64_t d = phase - pos;
    if (d <= 0)
        d += period;
    return d;
}
