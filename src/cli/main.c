/* main.c - `keybridge`, the admin CLI: a table of commands, one file per group.
 *
 * Started like every keybridge program (kb_prog_main: --config, --check-config, [log] level,
 * memory locking); the CLI adds its own global options (-o, --local, --as) before the command. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "lib/prog.h"
#include "server/server_config.h"

/* The global options fill it; each command runs on it, then it is closed. */
static cli g_cli;

static int cli_opt(int argc, char **argv, int i)
{
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "-o") == 0) {
        if (v == NULL || (strcmp(v, "json") != 0 && strcmp(v, "table") != 0)) {
            fprintf(stderr, "keybridge: -o takes table or json\n");
            return -1;
        }
        g_cli.json_output = strcmp(v, "json") == 0;
    } else if (strcmp(argv[i], "--server") == 0) {
        kb_err rc = v ? kb_urllist_add(&g_cli.servers, v, "https://") : KB_ERR_INVALID;
        if (rc != KB_OK) {
            fprintf(stderr,
                    "keybridge: --server takes an https:// URL (or a comma-separated list; at "
                    "most %d in all)\n",
                    KB_FAILOVER_MAX_URLS);
            return -1;
        }
    } else if (strcmp(argv[i], "--local") == 0 || strcmp(argv[i], "--as") == 0) {
        if (v == NULL) {
            fprintf(stderr, "keybridge: %s needs a value\n", argv[i]);
            return -1;
        }
        if (argv[i][2] == 'l')
            g_cli.local_config = v;
        else
            g_cli.as_id = v;
    } else {
        return 0;
    }
    return 2;
}

static int run(const kb_config *cfg, cli_fn fn, int argc, char **argv)
{
    int rc;
    g_cli.cfg = cfg;
    rc = fn(&g_cli, argc, argv);
    cli_close(&g_cli);
    return rc;
}

/* `keybridge group ...` is `keybridge admin group ...`: the admin groups are top-level too. */
static int admin_alias(cli *c, int argc, char **argv)
{
    return cli_cmd_admin(c, argc + 1, argv - 1);
}

static int secret(const kb_config *cfg, int argc, char **argv)
{
    return run(cfg, cli_cmd_secret, argc, argv);
}

static int admin(const kb_config *cfg, int argc, char **argv)
{
    return run(cfg, cli_cmd_admin, argc, argv);
}

static int admin_group(const kb_config *cfg, int argc, char **argv)
{
    return run(cfg, admin_alias, argc, argv);
}

static int read_(const kb_config *cfg, int argc, char **argv)
{
    return run(cfg, cli_cmd_read, argc, argv);
}

static int list(const kb_config *cfg, int argc, char **argv)
{
    return run(cfg, cli_cmd_list, argc, argv);
}

static int console_(const kb_config *cfg, int argc, char **argv)
{
    return run(cfg, cli_cmd_console, argc, argv);
}

/* The copy needs keybridged's token (row-MAC and audit keys, state counter): --local only. */
static int migrate_store(const kb_config *cfg, int argc, char **argv)
{
    int rc;
    char err[256];
    kb_config *scfg = NULL;
    (void)cfg;
    if (argc > 1 && strcmp(argv[1], "--help") == 0)
        return svc_migrate_store_cmd(NULL, "keybridge", argc, argv);
    if (g_cli.local_config == NULL) {
        fprintf(stderr, "keybridge migrate-store: runs on the server host with keybridged's "
                        "token: keybridge --local KEYBRIDGED_CONF migrate-store --from URL --to "
                        "URL\n");
        kb_urllist_free(&g_cli.servers);
        return KB_EXIT_USAGE;
    }
    if (kb_config_load(server_config_keys, g_cli.local_config, SERVER_ENV_PREFIX, &scfg, err,
                       sizeof(err)) != KB_OK) {
        fprintf(stderr, "keybridge: keybridged configuration error: %s\n", err);
        kb_urllist_free(&g_cli.servers);
        return KB_EXIT_CONFIG;
    }
    rc = svc_migrate_store_cmd(scfg, "keybridge", argc, argv);
    kb_config_free(scfg);
    kb_urllist_free(&g_cli.servers);
    return rc;
}

static const kb_subcmd commands[] = {
    {"secret", secret,
     "secrets: create, put, get, list, show, versions, status, rollback, delete, restore, purge"},
    {"group", admin_group, "groups: list, create, show, delete"},
    {"client", admin_group, "clients: list, create, show, enable, disable, delete"},
    {"clients", admin_group, "list clients (--stale 45m: whose last listing is older)"},
    {"member", admin_group, "memberships: add|remove SPIFFE_ID GROUP"},
    {"grant", admin_group, "grants: add|remove GROUP SECRET"},
    {"expiring", admin_group, "secrets expiring --within DURATION"},
    {"audit", admin_group, "audit list, audit verify"},
    {"admin", admin, "all of the admin groups above, under one name"},
    {"read", read_, "read a secret as a client (client API)"},
    {"list", list, "list what the client may read (client API)"},
    {"migrate-store", migrate_store,
     "copy the store between SQLite and PostgreSQL, verified (--local KEYBRIDGED_CONF)"},
    {"console", console_, "console login: a one-time URL for the web console"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    static const kb_prog prog = {
        .name = "keybridge",
        .summary = "keybridge admin CLI",
        .schema = cli_config_keys,
        .env_prefix = CLI_ENV_PREFIX,
        .default_config = NULL,
        .cmds = commands,
        .default_cmd = NULL,
        .holds_secrets = 1, /* secret content in transit: same hardening as the servers */
        .opt = cli_opt,
        .opt_usage = "[-o table|json] [--server URL]...\n"
                     "                 [--local KEYBRIDGED_CONF --as SPIFFE_ID] ",
        .epilog =
            "--local runs the command in-process against keybridged's store and token (on the\n"
            "server host), acting as the client --as names, with the same access rules and "
            "audit.\n--server (repeatable) replaces [client] server_url; with several servers each "
            "is tried in\nturn on connection errors and 502/503/504 (docs/failover.md).\nExit "
            "codes: 0 ok, 1 failed, 2 usage or bad request, 3 configuration, 4 "
            "denied,\n5 not found.\n",
    };
    return kb_prog_main(argc, argv, &prog);
}
