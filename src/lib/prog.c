/* prog.c - common start-up for every keybridge program. */
#include "prog.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "log.h"
#include "secbuf.h"
#include "version.h"

static void usage(const kb_prog *p, FILE *f)
{
    fprintf(f, "%s %s - %s\n\n", p->name, KB_VERSION, p->summary);
    fprintf(f, "usage: %s [--config FILE] [--check-config] <command> [args]\n", p->name);
    fprintf(f, "       %s --help | --version | --config-reference\n\ncommands:\n", p->name);
    for (const kb_subcmd *c = p->cmds; c && c->name; c++)
        fprintf(f, "  %-18s %s\n", c->name, c->help);
    if (p->schema)
        fprintf(f,
                "\nEvery configuration key can also be set as %s_<SECTION>_<KEY>.\n"
                "Secrets (PINs, keys) are only read from files named by *_file keys.\n",
                p->env_prefix);
    fprintf(f, "Run '%s <command> --help' for a command's options.\n", p->name);
}

int kb_exit_code(kb_err e)
{
    switch (e) {
    case KB_OK:
        return KB_EXIT_OK;
    case KB_ERR_DENIED:
    case KB_ERR_AUTH:
        return KB_EXIT_DENIED;
    case KB_ERR_NOT_FOUND:
        return KB_EXIT_NOTFOUND;
    case KB_ERR_CONFIG:
    case KB_ERR_MEMLOCK:
        return KB_EXIT_CONFIG;
    default:
        return KB_EXIT_FAIL;
    }
}

int kb_prog_main(int argc, char **argv, const kb_prog *p)
{
    const char *config_path = NULL;
    int check = 0, i = 1, rc;
    kb_config *cfg = NULL;
    char err[256] = "";
    const char *cmd = NULL;
    const char *lvl;
    kb_log_level level;

    kb_log_set_program(p->name);
    signal(SIGPIPE, SIG_IGN);
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(p, stdout);
            return KB_EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s\n", p->name, KB_VERSION);
            return KB_EXIT_OK;
        } else if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "%s: --config needs a file\n", p->name);
                return KB_EXIT_USAGE;
            }
            config_path = argv[i];
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check = 1;
        } else if (strcmp(argv[i], "--config-reference") == 0) {
            /* The Markdown table docs/configuration.md is generated from. */
            if (p->schema)
                kb_config_print_reference(p->schema, p->env_prefix, stdout);
            return KB_EXIT_OK;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", p->name, argv[i]);
            return KB_EXIT_USAGE;
        } else {
            break;
        }
    }
    if (p->holds_secrets && kb_secmem_init() != KB_OK) {
        fprintf(stderr,
                "%s: cannot lock memory for secrets; raise RLIMIT_MEMLOCK (ulimit -l) or "
                "grant CAP_IPC_LOCK. Refusing to start.\n",
                p->name);
        return KB_EXIT_CONFIG;
    }
    kb_json_init();
    if (p->schema) {
        if (config_path == NULL && p->default_config && access(p->default_config, R_OK) == 0)
            config_path = p->default_config;
        if (kb_config_load(p->schema, config_path, p->env_prefix, &cfg, err, sizeof(err)) !=
            KB_OK) {
            fprintf(stderr, "%s: configuration error: %s\n", p->name, err);
            return KB_EXIT_CONFIG;
        }
        lvl = kb_config_str(cfg, "log", "level");
        if (lvl && kb_log_level_parse(lvl, &level) == 0)
            kb_log_set_level(level);
        else if (lvl) {
            fprintf(stderr,
                    "%s: configuration error: [log] level must be debug, info, warn or "
                    "error\n",
                    p->name);
            kb_config_free(cfg);
            return KB_EXIT_CONFIG;
        }
    }
    if (check) {
        if (cfg)
            kb_config_print(cfg, stdout);
        printf("configuration ok\n");
        kb_config_free(cfg);
        return KB_EXIT_OK;
    }
    cmd = i < argc ? argv[i] : p->default_cmd;
    if (cmd == NULL) {
        usage(p, stderr);
        kb_config_free(cfg);
        return KB_EXIT_USAGE;
    }
    for (const kb_subcmd *c = p->cmds; c && c->name; c++) {
        if (strcmp(c->name, cmd) == 0) {
            char *def_argv[2] = {(char *)cmd, NULL};
            if (i < argc)
                rc = c->fn(cfg, argc - i, argv + i);
            else
                rc = c->fn(cfg, 1, def_argv);
            kb_config_free(cfg);
            return rc;
        }
    }
    fprintf(stderr, "%s: unknown command '%s' (see --help)\n", p->name, cmd);
    kb_config_free(cfg);
    return KB_EXIT_USAGE;
}
