/* main.c - `keybridge`, the admin CLI: a table of commands, one file per group. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/prog.h"
#include "lib/secbuf.h"
#include "lib/version.h"

/* `keybridge group ...` is `keybridge admin group ...`: the admin groups are top-level too. */
static int admin_alias(cli *c, int argc, char **argv)
{
    return cli_cmd_admin(c, argc + 1, argv - 1);
}

static const cli_cmd commands[] = {
    {"secret", cli_cmd_secret,
     "secrets: create, put, get, list, show, versions, status, rollback, delete, restore, purge"},
    {"group", admin_alias, "groups: list, create, show, delete"},
    {"client", admin_alias, "clients: list, create, show, enable, disable, delete"},
    {"clients", admin_alias, "list clients (--stale 45m: whose last listing is older)"},
    {"member", admin_alias, "memberships: add|remove SPIFFE_ID GROUP"},
    {"grant", admin_alias, "grants: add|remove GROUP SECRET"},
    {"expiring", admin_alias, "secrets expiring --within DURATION"},
    {"audit", admin_alias, "audit list, audit verify"},
    {"admin", cli_cmd_admin, "all of the admin groups above, under one name"},
    {"read", cli_cmd_read, "read a secret as a client (client API)"},
    {"list", cli_cmd_list, "list what the client may read (client API)"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fprintf(f,
            "keybridge %s - keybridge admin CLI\n\n"
            "usage: keybridge [--config FILE] [-o table|json] [--local KEYBRIDGED_CONF --as "
            "SPIFFE_ID]\n                 <command> [args]\n\ncommands:\n",
            KB_VERSION);
    for (const cli_cmd *e = commands; e->name; e++)
        fprintf(f, "  %-10s %s\n", e->name, e->help);
    fprintf(f, "\n--local runs the command in-process against keybridged's store and token (on "
               "the\nserver host), acting as the client --as names, with the same access rules "
               "and audit.\nExit codes: 0 ok, 1 failed, 2 usage or bad request, 3 configuration, "
               "4 denied,\n5 not found.\n");
}

int main(int argc, char **argv)
{
    cli c;
    const char *config_path = NULL;
    char err[256];
    int i, rc = KB_EXIT_USAGE;

    memset(&c, 0, sizeof(c));
    kb_log_set_program("keybridge");
    kb_log_set_level(KB_LOG_WARN);
    /* argv[i] is never NULL for i < argc (C11 5.1.2.2.1); saying so lets the analyzer see it. */
    for (i = 1; i < argc && argv[i] != NULL && argv[i][0] == '-'; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return KB_EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("keybridge %s\n", KB_VERSION);
            return KB_EXIT_OK;
        } else if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) && v) {
            config_path = v, i++;
        } else if (strcmp(argv[i], "-o") == 0 && v &&
                   (strcmp(v, "json") == 0 || strcmp(v, "table") == 0)) {
            c.json_output = strcmp(v, "json") == 0, i++;
        } else if (strcmp(argv[i], "--local") == 0 && v) {
            c.local_config = v, i++;
        } else if (strcmp(argv[i], "--as") == 0 && v) {
            c.as_id = v, i++;
        } else if (strcmp(argv[i], "--check-config") == 0) {
            rc = -1;
        } else if (strcmp(argv[i], "--config-reference") == 0) {
            kb_config_print_reference(cli_config_keys, CLI_ENV_PREFIX, stdout);
            return KB_EXIT_OK;
        } else {
            fprintf(stderr, "keybridge: bad option '%s' (see --help)\n", argv[i]);
            return KB_EXIT_USAGE;
        }
    }
    /* The CLI holds secret content in transit: same hardening as the servers. */
    if (kb_secmem_init() != KB_OK) {
        fprintf(stderr, "keybridge: cannot lock memory for secrets; raise RLIMIT_MEMLOCK\n");
        return KB_EXIT_CONFIG;
    }
    kb_json_init();
    if (kb_config_load(cli_config_keys, config_path, CLI_ENV_PREFIX, &c.cfg, err, sizeof(err)) !=
        KB_OK) {
        fprintf(stderr, "keybridge: configuration error: %s\n", err);
        return KB_EXIT_CONFIG;
    }
    if (rc == -1) {
        kb_config_print(c.cfg, stdout);
        printf("configuration ok\n");
        cli_close(&c);
        return KB_EXIT_OK;
    }
    if (i >= argc || argv[i] == NULL) {
        usage(stderr);
        cli_close(&c);
        return KB_EXIT_USAGE;
    }
    rc = -1;
    for (const cli_cmd *e = commands; e->name; e++) {
        if (strcmp(e->name, argv[i]) == 0) {
            rc = e->fn(&c, argc - i, argv + i);
            break;
        }
    }
    if (rc == -1) {
        fprintf(stderr, "keybridge: unknown command '%s' (see --help)\n", argv[i]);
        rc = KB_EXIT_USAGE;
    }
    cli_close(&c);
    return rc;
}
