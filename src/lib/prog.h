/* prog.h - what every keybridge program does at start: common options, logging, hardening.
 *
 * Every program accepts --help, --version, --config FILE and --check-config, then a
 * subcommand from its own table (wireguard-tools' `wg` style):
 *
 *     static const kb_subcmd cmds[] = {{"serve", cmd_serve, "run the server"}, ..., {NULL}};
 *     return kb_prog_main(argc, argv, &prog);
 */
#ifndef KB_PROG_H
#define KB_PROG_H

#include "config.h"

/* A subcommand gets the loaded configuration (NULL if the program has no schema) and its own
 * argv (argv[0] is the subcommand name). It returns the process exit code. */
typedef int (*kb_subcmd_fn)(const kb_config *cfg, int argc, char **argv);

typedef struct {
    const char *name;
    kb_subcmd_fn fn;
    const char *help;
} kb_subcmd;

typedef struct {
    const char *name;            /* "keybridged" */
    const char *summary;         /* one line */
    const kb_config_key *schema; /* config keys, or NULL */
    const char *env_prefix;      /* "KEYBRIDGED" */
    const char *default_config;  /* used when --config is not given and the file exists */
    const kb_subcmd *cmds;       /* NULL-terminated */
    const char *default_cmd;     /* run when no subcommand is given, or NULL (print help) */
    int holds_secrets;           /* 1: kb_secmem_init() before anything else */
} kb_prog;

/* Exit codes shared by all programs. */
enum {
    KB_EXIT_OK = 0,
    KB_EXIT_FAIL = 1,    /* the operation failed */
    KB_EXIT_USAGE = 2,   /* bad command line */
    KB_EXIT_CONFIG = 3,  /* bad configuration */
    KB_EXIT_DENIED = 4,  /* refused: authentication or authorization */
    KB_EXIT_NOTFOUND = 5 /* the named object does not exist */
};

int kb_prog_main(int argc, char **argv, const kb_prog *p);

/* Map a kb_err to an exit code (KB_OK → 0, DENIED/AUTH → 4, NOT_FOUND → 5, CONFIG → 3, ...). */
int kb_exit_code(kb_err e);

#endif
