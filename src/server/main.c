/* main.c - keybridged, the central secrets server. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lib/log.h"
#include "lib/prog.h"
#include "serve.h"
#include "server_config.h"
#include "service.h"
#include "store.h"

static int cmd_bootstrap(const kb_config *cfg, int argc, char **argv)
{
    const char *admin = NULL;
    kb_err rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--admin-id") == 0 && i + 1 < argc) {
            admin = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridged [--config FILE] bootstrap --admin-id SPIFFE_ID\n\n"
                   "Create the database, the master keys in the token (or the development key\n"
                   "file), and the first admin client with an 'admins' group. Runs once.\n");
            return KB_EXIT_OK;
        } else {
            fprintf(stderr, "keybridged bootstrap: unexpected '%s' (see --help)\n", argv[i]);
            return KB_EXIT_USAGE;
        }
    }
    if (admin == NULL) {
        fprintf(stderr, "keybridged bootstrap: --admin-id SPIFFE_ID is required\n");
        return KB_EXIT_USAGE;
    }
    rc = svc_bootstrap(cfg, admin);
    if (rc != KB_OK) {
        fprintf(stderr, "keybridged bootstrap: failed (%s); see the log above\n", kb_err_str(rc));
        return kb_exit_code(rc);
    }
    printf("bootstrapped: admin client %s in group 'admins'\n", admin);
    return KB_EXIT_OK;
}

static int cmd_recover_admin(const kb_config *cfg, int argc, char **argv)
{
    const char *admin = NULL;
    bool force = false;
    kb_err rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--admin-id") == 0 && i + 1 < argc) {
            admin = argv[++i];
        } else if (strcmp(argv[i], "--force") == 0) {
            force = true;
        } else if (strcmp(argv[i], "--help") == 0) {
            printf(
                "usage: keybridged [--config FILE] recover-admin --admin-id SPIFFE_ID [--force]\n"
                "\n"
                "Break-glass recovery when no enabled admin is left: make SPIFFE_ID an enabled\n"
                "admin (created if absent). Runs on the server host with the token PIN, writes\n"
                "an 'admin.recover' audit row and anchors it. Refuses while an enabled admin\n"
                "exists unless --force (e.g. the only admin's key is lost or stolen).\n");
            return KB_EXIT_OK;
        } else {
            fprintf(stderr, "keybridged recover-admin: unexpected '%s' (see --help)\n", argv[i]);
            return KB_EXIT_USAGE;
        }
    }
    if (admin == NULL) {
        fprintf(stderr, "keybridged recover-admin: --admin-id SPIFFE_ID is required\n");
        return KB_EXIT_USAGE;
    }
    rc = svc_recover_admin(cfg, admin, force);
    if (rc == KB_ERR_EXISTS) {
        fprintf(stderr, "keybridged recover-admin: refused: an enabled admin exists; use the "
                        "admin API, or --force if that admin's key is lost\n");
        return kb_exit_code(rc);
    }
    if (rc != KB_OK) {
        fprintf(stderr, "keybridged recover-admin: failed (%s); see the log above\n",
                kb_err_str(rc));
        return kb_exit_code(rc);
    }
    printf("recovered: %s is an enabled admin (audited as admin.recover)\n", admin);
    return KB_EXIT_OK;
}

static int cmd_migrate(const kb_config *cfg, int argc, char **argv)
{
    int version = 0;
    kb_err rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridged [--config FILE] migrate\n\n"
                   "Apply the pending schema migrations to [store] url and print the schema\n"
                   "version reached. With PostgreSQL, run it once (from one host) before starting\n"
                   "replicas of a newer keybridged: serve refuses an older schema. A newer\n"
                   "database is never migrated down: left as it is while its compat floor admits\n"
                   "this binary (a rolling upgrade), refused once it was contracted past it.\n");
            return KB_EXIT_OK;
        }
        fprintf(stderr, "keybridged migrate: unexpected '%s' (see --help)\n", argv[i]);
        return KB_EXIT_USAGE;
    }
    rc = svc_migrate(cfg, &version);
    if (rc != KB_OK) {
        fprintf(stderr, "keybridged migrate: failed (%s); see the log above\n", kb_err_str(rc));
        return kb_exit_code(rc);
    }
    printf("schema version %d (this binary writes %d)\n", version,
           store_schema_version_supported());
    return KB_EXIT_OK;
}

static int cmd_migrate_store(const kb_config *cfg, int argc, char **argv)
{
    return svc_migrate_store_cmd(cfg, "keybridged", argc, argv);
}

static const kb_subcmd cmds[] = {
    {"bootstrap", cmd_bootstrap, "create the store, master keys and first admin"},
    {"recover-admin", cmd_recover_admin,
     "break-glass: make an ID an enabled admin when none is left (audited)"},
    {"migrate", cmd_migrate, "apply pending database schema migrations (PostgreSQL: required)"},
    {"migrate-store", cmd_migrate_store,
     "copy the whole store between SQLite and PostgreSQL (--from URL --to URL), verified"},
    {"serve", serve_main, "serve the client, Keywhiz and admin APIs over mTLS"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    static const kb_prog prog = {
        .name = "keybridged",
        .summary = "keybridge secrets server",
        .schema = server_config_keys,
        .env_prefix = SERVER_ENV_PREFIX,
        .default_config = "/etc/keybridge/keybridged.conf",
        .cmds = cmds,
        .default_cmd = NULL,
        .holds_secrets = 1,
    };
    return kb_prog_main(argc, argv, &prog);
}
