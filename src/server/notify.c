/* notify.c - the expiry notifier (notify.h). */
#include "notify.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/httpc.h"
#include "lib/json.h"
#include "lib/log.h"
#include "server_config.h"

struct notify {
    svc *s;
    char *url; /* NULL: no delivery */
    char *ca_file;
    int64_t windows[NOTIFY_WINDOWS_MAX]; /* seconds, descending */
    size_t nwindows;
    int64_t interval, timeout, backoff;
    int attempts;
    kb_httpc_url target;
    _Atomic uint64_t delivered, failed;
    pthread_t tid;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop; /* under mu */
};

void notify_window_label(int64_t secs, char *buf, size_t len)
{
    if (secs % 86400 == 0)
        snprintf(buf, len, "%" PRId64 "d", secs / 86400);
    else if (secs % 3600 == 0)
        snprintf(buf, len, "%" PRId64 "h", secs / 3600);
    else if (secs % 60 == 0)
        snprintf(buf, len, "%" PRId64 "m", secs / 60);
    else
        snprintf(buf, len, "%" PRId64 "s", secs);
}

static int cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* "30d,7d,1d": 1..NOTIFY_WINDOWS_MAX distinct durations in (0, NOTIFY_WINDOW_MAX_SECS]. */
static kb_err parse_windows(const char *csv, notify *n)
{
    char **list = NULL;
    kb_err rc;
    KB_GUARD(server_config_list(csv, &list));
    n->nwindows = 0;
    rc = KB_OK;
    for (size_t i = 0; list[i] != NULL && rc == KB_OK; i++) {
        int64_t w = 0;
        if (n->nwindows == NOTIFY_WINDOWS_MAX || kb_parse_duration(list[i], &w) != KB_OK ||
            w <= 0 || w > NOTIFY_WINDOW_MAX_SECS) {
            rc = KB_ERR_CONFIG;
            break;
        }
        for (size_t k = 0; k < n->nwindows; k++)
            if (n->windows[k] == w)
                rc = KB_ERR_CONFIG;
        n->windows[n->nwindows++] = w;
    }
    server_config_list_free(list);
    if (rc == KB_OK && n->nwindows == 0)
        rc = KB_ERR_CONFIG;
    if (rc == KB_OK)
        qsort(n->windows, n->nwindows, sizeof(n->windows[0]), cmp_desc);
    return rc;
}

static void config_error(const char *key, const char *msg)
{
    kb_log(KB_LOG_ERROR, "config_invalid", "key", key, "msg", msg, NULL);
}

kb_err notify_new(const kb_config *cfg, svc *s, notify **out)
{
    notify *n;
    const char *url = kb_config_str(cfg, "notify", "url");
    const char *ca = kb_config_str(cfg, "notify", "ca_file");
    int64_t attempts = kb_config_int(cfg, "notify", "attempts");
    kb_err rc = KB_OK;

    KB_ENSURE_REF(out);
    *out = NULL;
    n = calloc(1, sizeof(*n));
    KB_ENSURE(n != NULL, KB_ERR_NOMEM);
    n->s = s;
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    n->interval = kb_config_duration(cfg, "notify", "interval");
    n->timeout = kb_config_duration(cfg, "notify", "timeout");
    n->backoff = kb_config_duration(cfg, "notify", "backoff");
    if (parse_windows(kb_config_str(cfg, "notify", "windows"), n) != KB_OK) {
        config_error("notify.windows", "1..8 distinct durations, each at most 366d");
        rc = KB_ERR_CONFIG;
    } else if (attempts < 1 || attempts > NOTIFY_ATTEMPTS_MAX) {
        config_error("notify.attempts", "1..20");
        rc = KB_ERR_CONFIG;
    } else if (n->interval < 1 || n->timeout < 1 || n->timeout > 300 || n->backoff < 0 ||
               n->backoff > NOTIFY_BACKOFF_CAP_SECS) {
        config_error("notify", "interval >= 1s, timeout 1s..5m, backoff 0..5m");
        rc = KB_ERR_CONFIG;
    }
    n->attempts = (int)attempts;
    if (rc == KB_OK && url != NULL && url[0] != '\0') {
        kb_httpc *probe = NULL;
        kb_httpc_opts o = {.url = url, .ca_file = ca};
        /* Check it now (scheme, http only to loopback, a readable ca_file): a bad URL is a
         * start-up error, not a silent loss of every notification. */
        if (kb_httpc_parse_url(url, &n->target) != KB_OK || kb_httpc_new(&o, &probe) != KB_OK) {
            config_error("notify.url", "https:// (or http:// to loopback only) with a readable "
                                       "[notify] ca_file if set");
            rc = KB_ERR_CONFIG;
        }
        kb_httpc_free(probe);
        if (rc == KB_OK &&
            ((n->url = strdup(url)) == NULL || (ca != NULL && (n->ca_file = strdup(ca)) == NULL)))
            rc = KB_ERR_NOMEM;
    }
    if (rc != KB_OK) {
        notify_free(n);
        return rc;
    }
    *out = n;
    return KB_OK;
}

void notify_free(notify *n)
{
    if (n == NULL)
        return;
    notify_stop(n);
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->mu);
    free(n->url);
    free(n->ca_file);
    free(n);
}

/* Sleep secs unless stopped first; true when stopped. */
static bool wait_or_stop(notify *n, int64_t secs)
{
    struct timespec ts;
    bool stop;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)secs;
    pthread_mutex_lock(&n->mu);
    while (!n->stop && secs > 0) {
        if (pthread_cond_timedwait(&n->cv, &n->mu, &ts) != 0)
            break;
    }
    stop = n->stop;
    pthread_mutex_unlock(&n->mu);
    return stop;
}

static char *webhook_body(const store_record *r, const char *owner, int64_t window)
{
    char when[32], label[16], text[1024];
    struct tm tm;
    time_t t = (time_t)r->version.expires_at;
    json_t *o;
    char *out;

    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    notify_window_label(window, label, sizeof(label));
    snprintf(text, sizeof(text),
             "keybridge: secret %s version %" PRId64 " expires %s (within %s)%s%s", r->secret.name,
             r->version.version, when, label, owner ? "; owner group " : "", owner ? owner : "");
    o = json_pack("{s:s,s:s,s:I,s:I,s:s,s:s,s:I,s:o}", "text", text, "name", r->secret.name,
                  "version", (json_int_t)r->version.version, "expires_at",
                  (json_int_t)r->version.expires_at, "expires", when, "window", label,
                  "window_seconds", (json_int_t)window, "owner_group",
                  owner ? json_string(owner) : json_null());
    out = o ? kb_json_dump(o) : NULL;
    json_decref(o);
    return out;
}

/* POST body, retried with doubling backoff; KB_OK on a 2xx. */
static kb_err deliver(notify *n, kb_httpc **hc, const char *body, const char *name,
                      const char *label)
{
    static const kb_httpc_field fields[] = {{"Content-Type", "application/json"}};
    int64_t delay = n->backoff;
    kb_err rc = KB_ERR_UNAVAILABLE;

    for (int attempt = 1; attempt <= n->attempts; attempt++) {
        kb_dbuf resp;
        int status = 0;
        kb_httpc_req req = {.method = "POST",
                            .target = n->target.target,
                            .fields = fields,
                            .n_fields = 1,
                            .body = body,
                            .body_len = strlen(body),
                            .timeout_ms = (long)n->timeout * 1000};
        if (*hc == NULL) {
            kb_httpc_opts o = {.url = n->url, .ca_file = n->ca_file, .user_agent = "keybridged"};
            rc = kb_httpc_new(&o, hc);
            if (rc != KB_OK)
                return rc;
        }
        kb_dbuf_init(&resp, NOTIFY_BODY_MAX);
        rc = kb_httpc_do(*hc, &req, &status, &resp);
        kb_dbuf_free(&resp);
        if (rc == KB_OK && status >= 200 && status < 300)
            return KB_OK;
        char st[16], at[16];
        snprintf(st, sizeof(st), "%d", status);
        snprintf(at, sizeof(at), "%d", attempt);
        kb_log(KB_LOG_WARN, "notify_attempt_failed", "secret", name, "window", label, "attempt", at,
               "status", st, "error", rc == KB_OK ? "status" : kb_err_str(rc), "why",
               rc == KB_OK ? "" : kb_httpc_why(*hc), NULL);
        rc = rc == KB_OK ? KB_ERR_UNAVAILABLE : rc;
        if (attempt == n->attempts || wait_or_stop(n, delay))
            break;
        delay = delay * 2 > NOTIFY_BACKOFF_CAP_SECS ? NOTIFY_BACKOFF_CAP_SECS : delay * 2;
    }
    return rc;
}

static const char *group_name(const store_group *g, size_t ng, int64_t id)
{
    for (size_t i = 0; i < ng; i++)
        if (g[i].id == id)
            return g[i].name;
    return NULL;
}

kb_err notify_scan(notify *n, int64_t now, size_t *delivered)
{
    store *st;
    store_record *recs = NULL;
    store_group *groups = NULL;
    size_t nr = 0, ng = 0, sent = 0;
    kb_httpc *hc = NULL;
    kb_err rc;

    if (delivered)
        *delivered = 0;
    if (n->url == NULL)
        return KB_OK;
    st = svc_store(n->s);
    KB_GUARD_OUT(rc, store_secrets_expiring(st, now, now + n->windows[0], &recs, &nr));
    if (nr > 0)
        KB_GUARD_OUT(rc, store_group_list(st, &groups, &ng));
    for (size_t i = 0; i < nr; i++) {
        const store_record *r = &recs[i];
        int64_t left = r->version.expires_at - now, window = 0;
        bool done = false;
        char label[16];
        /* the narrowest window the expiry is in (windows are descending) */
        for (size_t w = 0; w < n->nwindows; w++)
            if (left <= n->windows[w])
                window = n->windows[w];
        if (window == 0)
            continue;
        KB_GUARD_OUT(rc, store_notify_sent(st, r->secret.id, r->version.version, window, &done));
        if (done)
            continue;
        notify_window_label(window, label, sizeof(label));
        char *body = webhook_body(r, group_name(groups, ng, r->secret.owner_group_id), window);
        KB_ENSURE_OUT(rc, body != NULL, KB_ERR_NOMEM);
        kb_err drc = deliver(n, &hc, body, r->secret.name, label);
        kb_json_free_str(body);
        svc_actor a = {.identity = NOTIFY_IDENTITY, .peer = "local", .now = now};
        if (drc == KB_OK) {
            /* The mark and its audit row in one transaction (a change op): a failure leaves
             * neither, so the next scan resends, and the log never misses a recorded delivery. */
            store_audit au;
            kb_err mrc = svc_change_begin(n->s, &a, "secret.expiry_notify", r->secret.name, &au);
            au.ev.version = r->version.version;
            if (mrc == KB_OK)
                mrc = store_notify_mark(st, r->secret.id, r->version.version, window,
                                        (int64_t)time(NULL), &au);
            svc_change_end(n->s, &au, mrc);
            KB_GUARD_OUT(rc, mrc);
            atomic_fetch_add(&n->delivered, 1);
            sent++;
            kb_log(KB_LOG_INFO, "notify_delivered", "secret", r->secret.name, "window", label,
                   NULL);
        } else {
            atomic_fetch_add(&n->failed, 1);
            kb_log(KB_LOG_ERROR, "notify_failed", "secret", r->secret.name, "window", label,
                   "error", kb_err_str(drc), NULL);
            svc_audit_event(n->s, &a, "secret.expiry_notify", r->secret.name, r->version.version,
                            drc);
        }
        pthread_mutex_lock(&n->mu);
        bool stop = n->stop;
        pthread_mutex_unlock(&n->mu);
        if (stop)
            break;
    }
out:
    kb_httpc_free(hc);
    store_records_free(recs, nr);
    store_groups_free(groups, ng);
    if (delivered)
        *delivered = sent;
    return rc;
}

static void *notify_thread(void *arg)
{
    notify *n = arg;
    do {
        size_t sent = 0;
        kb_err rc = notify_scan(n, (int64_t)time(NULL), &sent);
        if (rc != KB_OK)
            kb_log(KB_LOG_ERROR, "notify_scan_failed", "error", kb_err_str(rc), NULL);
    } while (!wait_or_stop(n, n->interval));
    return NULL;
}

kb_err notify_start(notify *n)
{
    KB_ENSURE_REF(n);
    if (n->url == NULL || n->started)
        return KB_OK;
    KB_ENSURE(pthread_create(&n->tid, NULL, notify_thread, n) == 0, KB_ERR_INTERNAL);
    n->started = true;
    return KB_OK;
}

void notify_stop(notify *n)
{
    if (n == NULL || !n->started)
        return;
    pthread_mutex_lock(&n->mu);
    n->stop = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    pthread_join(n->tid, NULL);
    n->started = false;
}

kb_err notify_render_metrics(notify *n, int64_t now, kb_dbuf *out)
{
    store_record *recs = NULL;
    size_t nr = 0;
    kb_err rc;

    KB_ENSURE_REF(n);
    KB_GUARD(store_secrets_expiring(svc_store(n->s), now, now + n->windows[0], &recs, &nr));
    rc = kb_dbuf_addstr(out, "# HELP keybridged_secrets_expiring Live secrets whose latest "
                             "version expires within the window from now.\n"
                             "# TYPE keybridged_secrets_expiring gauge\n");
    for (size_t w = 0; w < n->nwindows && rc == KB_OK; w++) {
        char label[16];
        size_t count = 0;
        for (size_t i = 0; i < nr; i++)
            if (recs[i].version.expires_at - now <= n->windows[w])
                count++;
        notify_window_label(n->windows[w], label, sizeof(label));
        rc = kb_dbuf_addf(out, "keybridged_secrets_expiring{window=\"%s\"} %zu\n", label, count);
    }
    store_records_free(recs, nr);
    if (rc == KB_OK)
        rc =
            kb_dbuf_addf(out,
                         "# HELP keybridged_expiry_notifications_total Expiry webhooks by "
                         "outcome (failed: every attempt of a scan failed).\n"
                         "# TYPE keybridged_expiry_notifications_total counter\n"
                         "keybridged_expiry_notifications_total{result=\"delivered\"} %" PRIu64 "\n"
                         "keybridged_expiry_notifications_total{result=\"failed\"} %" PRIu64 "\n",
                         atomic_load(&n->delivered), atomic_load(&n->failed));
    return rc;
}
