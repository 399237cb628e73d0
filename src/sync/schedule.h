/* schedule.h - when an application's syncer runs (DESIGN.md "Schedule").
 *
 *   offset(APP, I) = be32(SHA-256(APP)[0..4]) mod I          minutes, I divides 60
 *   second(APP)    = be32(SHA-256(APP)[4..8]) mod 60         daemon only: spread in the minute
 *
 * Terraform: parseint(substr(sha256(app), 0, 8), 16) % interval. The EventBridge rule is
 * cron(M/I * * * ? *) with M = offset (I = 60: cron(M * * * ? *)). */
#ifndef KB_SYNC_SCHEDULE_H
#define KB_SYNC_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

/* KB_ERR_INVALID unless 1 <= interval <= 60 and interval divides 60, or app is empty. */
KB_WUR kb_err sync_schedule_offset(const char *app, int interval, int *minute);
int sync_schedule_second(const char *app);
/* "cron(M/I * * * ? *)" into out. */
KB_WUR kb_err sync_schedule_cron(int minute, int interval, char *out, size_t out_len);
/* Seconds from now_s (epoch seconds) to the next run at offset/second within each interval. */
int64_t sync_schedule_next_delay(int64_t now_s, int interval, int minute, int second);

#endif
