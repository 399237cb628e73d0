/* test_prog.c - kb_prog_main's common options and the program's own, and kb_prog_serve: one
 * start-up and one way to stop (SIGTERM/SIGINT stop; SIGHUP reloads when the program reloads,
 * and stops otherwise; a loop ending, or kb_prog_stop, stops the listeners too). */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "kbtest.h"
#include "lib/httpd.h"
#include "lib/log.h"
#include "lib/prog.h"

/* ---- kb_prog_main -------------------------------------------------------------------------- */

static const kb_config_key keys[] = {
    {"log", "level", KB_CFG_STRING, "warn", "debug, info, warn or error"},
    {"x", "n", KB_CFG_INT, "1", "a number"},
    {NULL, NULL, 0, NULL, NULL},
};

static int g_ran, g_flag;
static int64_t g_n;

static int cmd_run(const kb_config *cfg, int argc, char **argv)
{
    (void)argv;
    g_ran = argc;
    g_n = kb_config_int(cfg, "x", "n");
    return 7;
}

static int opt(int argc, char **argv, int i)
{
    if (strcmp(argv[i], "--flag") == 0) {
        g_flag = 1;
        return 1;
    }
    if (strcmp(argv[i], "-o") == 0)
        return i + 1 < argc ? 2 : -1;
    return 0;
}

static const kb_subcmd cmds[] = {{"run", cmd_run, "run it"}, {NULL, NULL, NULL}};

static int prog(const char *conf, int with_opt, char *a0, char *a1, char *a2)
{
    kb_prog p = {
        .name = "kbtest", .summary = "test", .schema = keys, .env_prefix = "KBTEST", .cmds = cmds};
    char *argv[8] = {"kbtest", NULL};
    char cpath[] = "--config";
    int argc = 1;
    if (conf) {
        argv[argc++] = cpath;
        argv[argc++] = (char *)conf;
    }
    if (a0)
        argv[argc++] = a0;
    if (a1)
        argv[argc++] = a1;
    if (a2)
        argv[argc++] = a2;
    if (with_opt)
        p.opt = opt;
    g_ran = g_flag = 0;
    return kb_prog_main(argc, argv, &p);
}

static char *conf_file(const char *text)
{
    static char path[64];
    FILE *f;
    snprintf(path, sizeof(path), "/tmp/kbtest_prog.%d.conf", (int)getpid());
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_main_commands(void **state)
{
    (void)state;
    assert_int_equal(prog(NULL, 0, "run", "a", NULL), 7);
    assert_int_equal(g_ran, 2);
    assert_int_equal(prog(NULL, 0, "nope", NULL, NULL), KB_EXIT_USAGE);
    assert_int_equal(g_ran, 0);
    assert_int_equal(prog(NULL, 0, NULL, NULL, NULL), KB_EXIT_USAGE); /* no default command */
    assert_int_equal(prog(NULL, 0, "--version", NULL, NULL), KB_EXIT_OK);
    assert_int_equal(prog(NULL, 0, "config-reference", NULL, NULL), KB_EXIT_OK);
    assert_int_equal(g_ran, 0);
}

static void test_main_program_options(void **state)
{
    (void)state;
    /* without the program's callback, its options are unknown */
    assert_int_equal(prog(NULL, 0, "--flag", "run", NULL), KB_EXIT_USAGE);
    assert_int_equal(g_ran, 0);
    assert_int_equal(prog(NULL, 1, "--flag", "run", NULL), 7);
    assert_int_equal(g_flag, 1);
    assert_int_equal(g_ran, 1);
    assert_int_equal(prog(NULL, 1, "-o", "json", "run"), 7); /* two entries used */
    assert_int_equal(g_ran, 1);
    assert_int_equal(prog(NULL, 1, "run", "-o", NULL), 7); /* after the command: its own */
    assert_int_equal(prog(NULL, 1, "-o", NULL, NULL), KB_EXIT_USAGE); /* bad value */
    assert_int_equal(g_ran, 0);
    assert_int_equal(prog(NULL, 1, "--other", "run", NULL), KB_EXIT_USAGE);
    assert_int_equal(g_ran, 0);
}

static void test_main_config(void **state)
{
    char *path;
    (void)state;
    path = conf_file("[x]\nn = 5\n[log]\nlevel = error\n");
    assert_int_equal(prog(path, 0, "run", NULL, NULL), 7);
    assert_int_equal(g_n, 5);
    {
        /* [log] level applied: a warning is dropped, an error written */
        FILE *f = tmpfile();
        long n;
        assert_non_null(f);
        kb_log_set_fd(fileno(f));
        kb_log(KB_LOG_WARN, "kbtest_warn", NULL);
        fflush(f);
        assert_int_equal(ftell(f) == 0 && lseek(fileno(f), 0, SEEK_END) == 0, 1);
        kb_log(KB_LOG_ERROR, "kbtest_error", NULL);
        n = (long)lseek(fileno(f), 0, SEEK_END);
        assert_true(n > 0);
        kb_log_set_fd(2);
        fclose(f);
    }
    path = conf_file("[log]\nlevel = loud\n");
    assert_int_equal(prog(path, 0, "run", NULL, NULL), KB_EXIT_CONFIG);
    assert_int_equal(g_ran, 0);
    path = conf_file("[x]\nn = many\n");
    assert_int_equal(prog(path, 0, "run", NULL, NULL), KB_EXIT_CONFIG);
    assert_int_equal(prog("/nonexistent/kbtest.conf", 0, "run", NULL, NULL), KB_EXIT_CONFIG);
    unlink(path);
    kb_log_set_level(KB_LOG_WARN);
}

/* ---- kb_prog_serve ------------------------------------------------------------------------- */

static void handler(kb_http_req *r, void *arg)
{
    (void)arg;
    kb_http_reply(r, 200, "text/plain", "ok\n", 3);
}

static kb_httpd *listener(void)
{
    kb_httpd_opts o;
    kb_httpd *h = NULL;
    memset(&o, 0, sizeof(o));
    o.listen = "127.0.0.1:0";
    o.threads = 1;
    o.handler = handler;
    assert_ok(kb_httpd_new(&o, &h));
    return h;
}

typedef struct {
    int signals[4]; /* sent in order, 100 ms apart, to the process */
} sender;

static void *send_signals(void *arg)
{
    sender *s = arg;
    for (int i = 0; i < 4 && s->signals[i]; i++) {
        usleep(100000);
        kill(getpid(), s->signals[i]);
    }
    return NULL;
}

static int g_reloads, g_wakes;
static void reload(void *arg)
{
    (void)arg;
    __atomic_add_fetch(&g_reloads, 1, __ATOMIC_SEQ_CST);
}
static void wake(void *arg)
{
    (void)arg;
    g_wakes++;
}

static kb_err loop_until_stopped(void *arg)
{
    volatile int *iterations = arg;
    while (!kb_prog_stopping()) {
        (*iterations)++;
        usleep(10000);
    }
    return KB_OK;
}

static kb_err loop_fails(void *arg)
{
    (void)arg;
    return KB_ERR_IO;
}

static void serve_with(kb_serve *s, int sig1, int sig2, int sig3)
{
    sender snd = {{sig1, sig2, sig3, 0}};
    pthread_t t;
    kb_prog_serve_prepare(); /* before the sender thread exists */
    g_reloads = g_wakes = 0;
    assert_int_equal(pthread_create(&t, NULL, send_signals, &snd), 0);
    assert_ok(kb_prog_serve(s));
    pthread_join(t, NULL);
}

static void test_serve_term_stops_listeners(void **state)
{
    kb_httpd *h = listener(), *h2 = listener();
    kb_serve s = {.listeners = {h, h2}, .wake = wake};
    (void)state;
    serve_with(&s, SIGTERM, 0, 0);
    assert_int_equal(kb_prog_stopping(), 1);
    assert_int_equal(g_wakes, 1);
    kb_httpd_free(h);
    kb_httpd_free(h2);
}

/* Standard signals coalesce: send each SIGHUP only once the previous one has been handled. */
static void *hup_hup_int(void *arg)
{
    volatile int *iterations = arg;
    while (*iterations == 0)
        usleep(1000);
    kill(getpid(), SIGHUP);
    while (__atomic_load_n(&g_reloads, __ATOMIC_SEQ_CST) < 1)
        usleep(1000);
    kill(getpid(), SIGHUP);
    while (__atomic_load_n(&g_reloads, __ATOMIC_SEQ_CST) < 2)
        usleep(1000);
    kill(getpid(), SIGINT);
    return NULL;
}

static void test_serve_hup_reloads_then_int_stops(void **state)
{
    int iterations = 0;
    kb_httpd *h = listener();
    kb_serve s = {.listeners = {h},
                  .loop = loop_until_stopped,
                  .reload = reload,
                  .wake = wake,
                  .arg = &iterations};
    pthread_t t;
    (void)state;
    kb_prog_serve_prepare();
    g_reloads = g_wakes = 0;
    assert_int_equal(pthread_create(&t, NULL, hup_hup_int, &iterations), 0);
    assert_ok(kb_prog_serve(&s));
    pthread_join(t, NULL);
    assert_int_equal(g_reloads, 2);
    assert_int_equal(g_wakes, 1);
    kb_httpd_free(h);
}

static void test_serve_hup_without_reload_stops(void **state)
{
    int iterations = 0;
    kb_serve s = {.loop = loop_until_stopped, .arg = &iterations};
    (void)state;
    serve_with(&s, SIGHUP, 0, 0);
    assert_int_equal(g_reloads, 0);
    assert_int_equal(kb_prog_stopping(), 1);
}

static void test_serve_loop_error_stops_listeners(void **state)
{
    kb_httpd *h = listener();
    kb_serve s = {.listeners = {h}, .loop = loop_fails, .wake = wake};
    (void)state;
    kb_prog_serve_prepare();
    g_wakes = 0;
    assert_kb(kb_prog_serve(&s), KB_ERR_IO); /* returns: the listener thread was stopped */
    assert_int_equal(g_wakes, 1);
    kb_httpd_free(h);
}

static kb_err loop_stops_itself(void *arg)
{
    (void)arg;
    kb_prog_stop();
    while (!kb_prog_stopping())
        usleep(1000);
    return KB_OK;
}

static void test_serve_stop_from_inside(void **state)
{
    kb_httpd *h = listener();
    kb_serve s = {.listeners = {h}, .loop = loop_stops_itself};
    (void)state;
    assert_ok(kb_prog_serve(&s));
    kb_httpd_free(h);
}

static void test_serve_needs_work(void **state)
{
    kb_serve s;
    (void)state;
    memset(&s, 0, sizeof(s));
    assert_kb(kb_prog_serve(&s), KB_ERR_INVALID); /* no loop, no listener */
    assert_kb(kb_prog_serve(NULL), KB_ERR_NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_main_commands),
        cmocka_unit_test(test_main_program_options),
        cmocka_unit_test(test_main_config),
        cmocka_unit_test(test_serve_term_stops_listeners),
        cmocka_unit_test(test_serve_hup_reloads_then_int_stops),
        cmocka_unit_test(test_serve_hup_without_reload_stops),
        cmocka_unit_test(test_serve_loop_error_stops_listeners),
        cmocka_unit_test(test_serve_stop_from_inside),
        cmocka_unit_test(test_serve_needs_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
