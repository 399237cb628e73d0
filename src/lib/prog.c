/* prog.c - common start-up for every keybridge program. */
#include "prog.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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
    fprintf(f, "usage: %s [--config FILE] [--check-config] %s<command> [args]\n", p->name,
            p->opt_usage ? p->opt_usage : "");
    fprintf(f, "       %s --help | --version | --config-reference\n\ncommands:\n", p->name);
    for (const kb_subcmd *c = p->cmds; c && c->name; c++)
        fprintf(f, "  %-18s %s\n", c->name, c->help);
    if (p->schema)
        fprintf(f, "  %-18s %s\n", "config-reference", "print every configuration key (Markdown)");
    if (p->schema)
        fprintf(f,
                "\nEvery configuration key can also be set as %s_<SECTION>_<KEY>.\n"
                "Secrets (PINs, keys) are only read from files named by *_file keys.\n",
                p->env_prefix);
    fprintf(f, "Run '%s <command> --help' for a command's options.\n", p->name);
    if (p->epilog)
        fprintf(f, "\n%s", p->epilog);
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
    int check = 0, i = 1, rc, used;
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
        } else if (argv[i][0] == '-' && p->opt && (used = p->opt(argc, argv, i)) != 0) {
            if (used < 0)
                return KB_EXIT_USAGE;
            i += used - 1;
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
    if (strcmp(cmd, "config-reference") == 0 && p->schema) {
        /* the command spelling of --config-reference, for every program */
        kb_config_print_reference(p->schema, p->env_prefix, stdout);
        kb_config_free(cfg);
        return KB_EXIT_OK;
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

/* ---- serving ---------------------------------------------------------------------------- */

static atomic_int g_stopping;
static const kb_serve *volatile g_serving;

typedef struct {
    const kb_serve *s;
    kb_httpd *h;
    kb_err rc;
    pthread_t tid;
    int started;
} serve_listener;

static void serve_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

void kb_prog_serve_prepare(void)
{
    sigset_t set;
    serve_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int kb_prog_stopping(void)
{
    return atomic_load(&g_stopping);
}

/* Once: stop every listener and wake the loop. */
static void serve_stop(const kb_serve *s)
{
    if (atomic_exchange(&g_stopping, 1))
        return;
    for (size_t i = 0; s && i < KB_SERVE_LISTENERS_MAX; i++)
        if (s->listeners[i])
            kb_httpd_stop(s->listeners[i]);
    if (s && s->wake)
        s->wake(s->arg);
}

void kb_prog_stop(void)
{
    serve_stop(g_serving);
}

static void *serve_signal_thread(void *arg)
{
    const kb_serve *s = arg;
    sigset_t set;
    int sig = 0;

    serve_signals(&set);
    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (kb_prog_stopping())
            return NULL; /* kb_prog_serve is ending and woke us */
        if (sig == SIGHUP && s->reload) {
            s->reload(s->arg);
            continue;
        }
        kb_log(KB_LOG_INFO, "stopping", "signal",
               sig == SIGTERM  ? "TERM"
               : sig == SIGINT ? "INT"
                               : "HUP",
               NULL);
        serve_stop(s);
        return NULL;
    }
}

static void *serve_listener_thread(void *arg)
{
    serve_listener *l = arg;
    l->rc = kb_httpd_run(l->h);
    if (l->rc != KB_OK)
        kb_log(KB_LOG_ERROR, "listener_stopped", "err", kb_err_str(l->rc), NULL);
    serve_stop(l->s);
    return NULL;
}

kb_err kb_prog_serve(const kb_serve *s)
{
    serve_listener ls[KB_SERVE_LISTENERS_MAX];
    pthread_t sig_tid;
    size_t n = 0, first;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(s);
    memset(ls, 0, sizeof(ls));
    for (size_t i = 0; i < KB_SERVE_LISTENERS_MAX; i++)
        if (s->listeners[i])
            ls[n++].h = s->listeners[i];
    KB_ENSURE(s->loop != NULL || n > 0, KB_ERR_INVALID);
    kb_prog_serve_prepare();
    atomic_store(&g_stopping, 0);
    g_serving = s;
    KB_ENSURE(pthread_create(&sig_tid, NULL, serve_signal_thread, (void *)s) == 0, KB_ERR_INTERNAL);
    /* without a loop, the first listener runs in this thread */
    first = s->loop ? 0 : 1;
    for (size_t i = first; i < n; i++) {
        ls[i].s = s;
        if (pthread_create(&ls[i].tid, NULL, serve_listener_thread, &ls[i]) != 0) {
            rc = KB_ERR_INTERNAL;
            goto out;
        }
        ls[i].started = 1;
    }
    if (s->loop)
        rc = s->loop(s->arg);
    else if ((rc = kb_httpd_run(ls[0].h)) != KB_OK)
        kb_log(KB_LOG_ERROR, "listener_stopped", "err", kb_err_str(rc), NULL);
out:
    serve_stop(s);
    for (size_t i = first; i < n; i++) {
        if (!ls[i].started)
            continue;
        pthread_join(ls[i].tid, NULL);
        if (rc == KB_OK)
            rc = ls[i].rc;
    }
    /* the signal thread is in sigwait unless a signal already ended it: wake it */
    pthread_kill(sig_tid, SIGTERM);
    pthread_join(sig_tid, NULL);
    g_serving = NULL;
    return rc;
}
