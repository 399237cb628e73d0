/* main.c - keybridge-sync, the per-application syncer (docs/keybridge-sync.md): its commands.
 *
 *   keybridge-sync [--config FILE] [sync] [--allow-mass-delete]   one run (default)   cmd_sync.c
 *   keybridge-sync daemon                                         every interval      daemon.c
 *   keybridge-sync schedule APP [--interval 15]                   offset + cron       cmd_plan.c
 *   keybridge-sync iam-policy APP [--account N] [--region R]      IAM policies        cmd_plan.c
 *   keybridge-sync cost --secrets N --accounts A [...]            monthly AWS cost    cmd_plan.c
 * With AWS_LAMBDA_RUNTIME_API set, the default command runs the Lambda custom runtime loop.
 * The configuration keys and their checks are in sync_config.c. */
#include "lib/prog.h"
#include "sync_cmd.h"
#include "sync_config.h"

static const kb_subcmd cmds[] = {
    {"sync", sync_cmd_sync, "one run (default; Lambda runtime when AWS_LAMBDA_RUNTIME_API is set)"},
    {"daemon", sync_cmd_daemon, "run on the schedule with a local /status, /metrics, POST /sync"},
    {"schedule", sync_cmd_schedule,
     "print APP's offset and EventBridge cron (--interval, default [daemon] interval)"},
    {"iam-policy", sync_cmd_iam_policy, "print least-privilege IAM policies for APP"},
    {"cost", sync_cmd_cost,
     "monthly AWS cost for N secrets in A accounts, beside one read per run"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    static const kb_prog prog = {
        .name = "keybridge-sync",
        .summary = "per-application syncer: keybridged -> Secrets Manager | directory",
        .schema = sync_config_keys,
        .env_prefix = SYNC_ENV_PREFIX,
        .default_config = "/etc/keybridge/keybridge-sync.conf",
        .cmds = cmds,
        .default_cmd = "sync",
        .holds_secrets = 1,
    };
    return kb_prog_main(argc, argv, &prog);
}
