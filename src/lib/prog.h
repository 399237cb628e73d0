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
#include "httpd.h"

/* A subcommand gets the loaded configuration (NULL if the program has no schema) and its own
 * argv (argv[0] is the subcommand name). It returns the process exit code. */
typedef int (*kb_subcmd_fn)(const kb_config *cfg, int argc, char **argv);

typedef struct {
    const char *name;
    kb_subcmd_fn fn;
    const char *help;
} kb_subcmd;

/* A program's own global options, before the command (the CLI's -o json, --local, --as): called
 * for each argv[i] starting with '-' that is not a common option. Returns how many entries it
 * used (1 or 2), 0 if argv[i] is not one of its options, or -1 after printing why the value is
 * bad. */
typedef int (*kb_prog_opt_fn)(int argc, char **argv, int i);

typedef struct {
    const char *name;            /* "keybridged" */
    const char *summary;         /* one line */
    const kb_config_key *schema; /* config keys, or NULL */
    const char *env_prefix;      /* "KEYBRIDGED" */
    const char *default_config;  /* used when --config is not given and the file exists */
    const kb_subcmd *cmds;       /* NULL-terminated */
    const char *default_cmd;     /* run when no subcommand is given, or NULL (print help) */
    int holds_secrets;           /* 1: kb_secmem_init() before anything else */
    kb_prog_opt_fn opt;          /* the program's own global options, or NULL */
    const char *opt_usage;       /* their synopsis in the usage line, e.g. "[-o table|json] " */
    const char *epilog;          /* more --help text, or NULL */
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

/* ---- serving: one start-up and one way to stop for every server and daemon ----------------
 *
 *     kb_prog_serve_prepare();             first thing in the serve command, before any thread
 *     ... open stores, keys, kb_httpd_new() the listeners ...
 *     kb_serve s = {.listeners = {h, mh}, .reload = reload, .arg = x};
 *     rc = kb_prog_serve(&s);              returns once stopped and every listener has ended
 *
 * SIGINT and SIGTERM stop; SIGHUP calls reload when it is set, and stops otherwise. The signals
 * are taken by one thread with sigwait, so no other thread is interrupted and the callbacks run
 * in an ordinary thread (not a signal handler). A listener whose loop ends stops the program
 * too, as does the end of loop. */
#define KB_SERVE_LISTENERS_MAX 4

typedef struct {
    kb_httpd *listeners[KB_SERVE_LISTENERS_MAX]; /* unused entries NULL */
    /* The daemon's own work, run in the calling thread until kb_prog_stopping() (the listeners
     * then all run in threads); NULL: the first listener runs in the calling thread. */
    kb_err (*loop)(void *arg);
    void (*reload)(void *arg); /* SIGHUP, from the signal thread; NULL: SIGHUP stops */
    void (*wake)(void *arg);   /* once, when stopping starts: wake what loop waits on */
    void *arg;
} kb_serve;

/* Block SIGINT, SIGTERM and SIGHUP in the calling thread, so every thread started after it
 * leaves them to kb_prog_serve (one that arrives during start-up waits for it). */
void kb_prog_serve_prepare(void);
/* Run until stopped. Returns the first error of loop or of a listener, or KB_OK. */
KB_WUR kb_err kb_prog_serve(const kb_serve *s);
/* 1 once stopping has started (for loops that poll). */
int kb_prog_stopping(void);
/* Stop from inside the program (as SIGTERM does). */
void kb_prog_stop(void);

/* Map a kb_err to an exit code (KB_OK → 0, DENIED/AUTH → 4, NOT_FOUND → 5, CONFIG → 3, ...). */
int kb_exit_code(kb_err e);

#endif
