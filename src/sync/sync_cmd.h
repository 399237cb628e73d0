/* sync_cmd.h - keybridge-sync's commands (main.c holds the table) and the run they share. */
#ifndef KB_SYNC_CMD_H
#define KB_SYNC_CMD_H

#include <stdint.h>

#include "lib/config.h"
#include "summary.h"

typedef struct {
    const kb_config *cfg;
    int allow_mass_delete;
    int64_t deadline_s; /* --deadline; <0: [run] deadline */
} sync_once_ctx;

/* One run (arg: a sync_once_ctx): identity, source, sinks, sync_run. deadline_ms: the Lambda
 * invocation's (monotonic), or 0 for --deadline / [run] deadline from the start of the run. */
KB_WUR kb_err sync_once(void *arg, int64_t deadline_ms, sync_summary *sum);
/* The run's JSON summary on one line of stdout. */
void sync_once_print(const sync_summary *sum);

int sync_cmd_sync(const kb_config *cfg, int argc, char **argv);     /* cmd_sync.c */
int sync_cmd_daemon(const kb_config *cfg, int argc, char **argv);   /* daemon.c */
int sync_cmd_schedule(const kb_config *cfg, int argc, char **argv); /* cmd_plan.c */
int sync_cmd_iam_policy(const kb_config *cfg, int argc, char **argv);
int sync_cmd_cost(const kb_config *cfg, int argc, char **argv);

#endif
