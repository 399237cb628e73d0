/* daemon.c - `keybridge-sync daemon`: sync_once on the application's schedule (schedule.h),
 * with a loopback listener for GET /status, GET /metrics and POST /sync; started and stopped by
 * kb_prog_serve (lib/prog.h). */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/httpd.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/prog.h"
#include "schedule.h"
#include "sync.h"
#include "sync_cmd.h"
#include "sync_config.h"

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int trigger, stop, running;
    int64_t last_success_s, last_run_s, stale_after_s, runs, failures, next_run_s;
    int64_t interval, minute, second; /* schedule; minute/second -1 until the app is known */
    sync_summary last;                /* counts of the last run (metrics) */
    char *last_summary;               /* JSON */
} daemon_state;

static daemon_state g_d = {
    .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .minute = -1, .second = -1};
/* kb_prog_serve's wake: a stop ends the wait for the next run at once. */
static void daemon_wake(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_d.mu);
    g_d.stop = 1;
    pthread_cond_signal(&g_d.cv);
    pthread_mutex_unlock(&g_d.mu);
}

static void reply_status(kb_http_req *r, int64_t now)
{
    /* 503 until a run has succeeded, and again once the last success is older than
     * stale_after: a probe (systemd, Kubernetes, a load balancer) sees a syncer that has
     * stopped converging, not just one that is alive. */
    int fresh = g_d.last_success_s > 0 && now - g_d.last_success_s <= g_d.stale_after_s;
    json_t *o =
        json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I}}", "status",
                  fresh ? "ok" : "unavailable", "running", g_d.running, "last_success",
                  (json_int_t)g_d.last_success_s, "last_run", (json_int_t)g_d.last_run_s,
                  "next_run", (json_int_t)g_d.next_run_s, "runs", (json_int_t)g_d.runs, "failures",
                  (json_int_t)g_d.failures, "schedule", "interval", (json_int_t)g_d.interval,
                  "minute", (json_int_t)g_d.minute, "second", (json_int_t)g_d.second);
    json_t *last = g_d.last_summary ? json_loads(g_d.last_summary, 0, NULL) : NULL;
    if (o && last)
        json_object_set_new(o, "last", last);
    else
        json_decref(last);
    kb_http_reply_json(r, fresh ? 200 : 503, o);
    json_decref(o);
}

static void reply_metrics(kb_http_req *r, int64_t now)
{
    /* Prometheus text format 0.0.4. Counts only: no secret names, no identities. */
    static const struct {
        const char *op;
        size_t off;
    } counts[] = {
        {"unchanged", offsetof(sync_summary, unchanged)},
        {"created", offsetof(sync_summary, created)},
        {"updated", offsetof(sync_summary, updated)},
        {"restored", offsetof(sync_summary, restored)},
        {"deleted", offsetof(sync_summary, deleted)},
        {"retained", offsetof(sync_summary, retained)},
        {"deferred", offsetof(sync_summary, deferred)},
        {"failed", offsetof(sync_summary, failed)},
    };
    char buf[4096];
    size_t n = 0;
    int fresh = g_d.last_success_s > 0 && now - g_d.last_success_s <= g_d.stale_after_s;
    int k = snprintf(
        buf, sizeof(buf),
        "# HELP keybridge_sync_runs_total Sync runs since start.\n"
        "# TYPE keybridge_sync_runs_total counter\nkeybridge_sync_runs_total %lld\n"
        "# HELP keybridge_sync_failures_total Sync runs that did not apply everything.\n"
        "# TYPE keybridge_sync_failures_total counter\nkeybridge_sync_failures_total %lld\n"
        "# HELP keybridge_sync_last_success_timestamp_seconds End of the last successful run.\n"
        "# TYPE keybridge_sync_last_success_timestamp_seconds gauge\n"
        "keybridge_sync_last_success_timestamp_seconds %lld\n"
        "# HELP keybridge_sync_next_run_timestamp_seconds Next scheduled run.\n"
        "# TYPE keybridge_sync_next_run_timestamp_seconds gauge\n"
        "keybridge_sync_next_run_timestamp_seconds %lld\n"
        "# HELP keybridge_sync_up 1 if the last success is fresh (what /status reports).\n"
        "# TYPE keybridge_sync_up gauge\nkeybridge_sync_up %d\n"
        "# HELP keybridge_sync_last_run_duration_seconds Duration of the last run.\n"
        "# TYPE keybridge_sync_last_run_duration_seconds gauge\n"
        "keybridge_sync_last_run_duration_seconds %.3f\n"
        "# HELP keybridge_sync_last_run_secrets Secrets by outcome in the last run.\n"
        "# TYPE keybridge_sync_last_run_secrets gauge\n",
        (long long)g_d.runs, (long long)g_d.failures, (long long)g_d.last_success_s,
        (long long)g_d.next_run_s, fresh, (double)g_d.last.duration_ms / 1000.0);
    if (k < 0 || (size_t)k >= sizeof(buf)) {
        kb_http_reply_error(r, 500, "internal", "metrics");
        return;
    }
    n = (size_t)k;
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        int64_t v = *(const int64_t *)(const void *)((const char *)&g_d.last + counts[i].off);
        k = snprintf(buf + n, sizeof(buf) - n,
                     "keybridge_sync_last_run_secrets{outcome=\"%s\"} %lld\n", counts[i].op,
                     (long long)v);
        if (k < 0 || (size_t)k >= sizeof(buf) - n)
            break;
        n += (size_t)k;
    }
    kb_http_reply(r, 200, "text/plain; version=0.0.4", buf, n);
}

static void daemon_handler(kb_http_req *r, void *arg)
{
    const char *m = kb_http_req_method(r), *p = kb_http_req_path(r);
    int64_t now = time(NULL);
    (void)arg;
    pthread_mutex_lock(&g_d.mu);
    if (strcmp(p, "/status") == 0 && strcmp(m, "GET") == 0) {
        reply_status(r, now);
    } else if (strcmp(p, "/metrics") == 0 && strcmp(m, "GET") == 0) {
        reply_metrics(r, now);
    } else if (strcmp(p, "/sync") == 0 && strcmp(m, "POST") == 0) {
        /* Triggers coalesce: several POSTs during a run give one more run, not a queue. */
        g_d.trigger = 1;
        pthread_cond_signal(&g_d.cv);
        kb_http_reply_error(r, 202, "accepted", "sync scheduled");
    } else if (strcmp(p, "/status") == 0 || strcmp(p, "/metrics") == 0 || strcmp(p, "/sync") == 0) {
        kb_http_reply_error(r, 405, "method_not_allowed", "GET /status, GET /metrics, POST /sync");
    } else {
        kb_http_reply_error(r, 404, "not_found", "GET /status, GET /metrics, POST /sync");
    }
    pthread_mutex_unlock(&g_d.mu);
}

/* Wait (g_d.mu held) until the next scheduled run, a POST /sync or a stop. The schedule is the
 * application's hashed minute within the interval and hashed second within the minute
 * (schedule.h), so a fleet of syncers spreads its load on keybridged; until the application
 * name is known (no run has reached keybridged yet), a retry comes one interval later. */
static void wait_next(const char *app)
{
    int64_t now = time(NULL), target;
    int minute;
    if (app[0] && sync_schedule_offset(app, (int)g_d.interval, &minute) == KB_OK) {
        g_d.minute = minute;
        g_d.second = sync_schedule_second(app);
        target = now + sync_schedule_next_delay(now, (int)g_d.interval, minute, (int)g_d.second);
    } else {
        target = now + g_d.interval * 60;
    }
    g_d.next_run_s = target;
    {
        char at[32];
        snprintf(at, sizeof(at), "%lld", (long long)target);
        kb_log(KB_LOG_INFO, "next_run", "at", at, NULL);
    }
    while (!g_d.trigger && !g_d.stop && time(NULL) < target) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1; /* and each second: the wall clock may jump */
        pthread_cond_timedwait(&g_d.cv, &g_d.mu, &ts);
    }
}

/* kb_prog_serve's loop: the first run at start, then on the schedule or a POST /sync. */
static kb_err daemon_loop(void *arg)
{
    sync_once_ctx *rx = arg;
    char app[SYNC_APP_MAX + 1] = "";
    int stop;

    g_d.trigger = 1;
    sync_summary_init(&g_d.last);
    for (;;) {
        sync_summary sum;
        json_t *j;
        kb_err rc;
        pthread_mutex_lock(&g_d.mu);
        if (!g_d.trigger && !g_d.stop)
            wait_next(app);
        g_d.trigger = 0;
        stop = g_d.stop;
        g_d.running = !stop;
        pthread_mutex_unlock(&g_d.mu);
        if (stop)
            break;
        sync_summary_init(&sum);
        rc = sync_once(rx, 0, &sum);
        sync_once_print(&sum);
        if (sum.application[0])
            snprintf(app, sizeof(app), "%s", sum.application);
        j = sync_summary_json(&sum);
        pthread_mutex_lock(&g_d.mu);
        g_d.running = 0;
        g_d.runs++;
        g_d.last_run_s = time(NULL);
        g_d.last = sum;
        if (rc == KB_OK && sync_summary_ok(&sum))
            g_d.last_success_s = g_d.last_run_s;
        else
            g_d.failures++;
        kb_json_free_str(g_d.last_summary);
        g_d.last_summary = j ? kb_json_dump(j) : NULL;
        pthread_mutex_unlock(&g_d.mu);
        json_decref(j);
    }
    return KB_OK;
}

int sync_cmd_daemon(const kb_config *cfg, int argc, char **argv)
{
    sync_once_ctx rx = {cfg, 0, -1};
    int64_t stale = kb_config_duration(cfg, "daemon", "stale_after");
    int interval;
    kb_httpd_opts ho;
    kb_httpd *h = NULL;
    kb_serve ks;
    char port[16];
    kb_err rc;
    (void)argv;
    if (argc > 1) {
        printf("usage: keybridge-sync [--config FILE] daemon\n\nRun every [daemon] interval "
               "minutes at the application's hashed offset and second;\nserve GET /status, "
               "GET /metrics and POST /sync on [daemon] listen (loopback).\n");
        return strcmp(argv[1], "--help") == 0 ? KB_EXIT_OK : KB_EXIT_USAGE;
    }
    if (sync_config_interval(cfg, &interval) != KB_OK) {
        fprintf(stderr, "keybridge-sync: [daemon] interval must divide 60\n");
        return KB_EXIT_CONFIG;
    }
    kb_prog_serve_prepare();
    g_d.interval = interval;
    g_d.stale_after_s = stale > 0 ? stale : (int64_t)interval * 60 * 3;
    memset(&ho, 0, sizeof(ho));
    ho.listen = kb_config_str(cfg, "daemon", "listen");
    ho.threads = 1;
    ho.handler = daemon_handler;
    /* plain HTTP, so kb_httpd refuses anything but 127.0.0.0/8 and ::1 */
    if (kb_httpd_new(&ho, &h) != KB_OK) {
        fprintf(stderr, "keybridge-sync: cannot listen on %s (loopback only)\n", ho.listen);
        return KB_EXIT_CONFIG;
    }
    snprintf(port, sizeof(port), "%d", kb_httpd_port(h));
    kb_log(KB_LOG_INFO, "status_listening", "listen", ho.listen, "port", port, NULL);
    memset(&ks, 0, sizeof(ks));
    ks.listeners[0] = h;
    ks.loop = daemon_loop;
    ks.wake = daemon_wake;
    ks.arg = &rx;
    rc = kb_prog_serve(&ks);
    kb_httpd_free(h);
    kb_json_free_str(g_d.last_summary);
    return rc == KB_OK ? KB_EXIT_OK : KB_EXIT_FAIL;
}
