/* serve.c - `keybridged serve`: the HTTPS/mTLS front of api_handle, plus the metrics listener.
 *
 * Threads: kb_httpd's event loops (one per core) call handle() concurrently; kb_prog_serve
 * (lib/prog.h) runs them, the metrics listener's single loop and the signal thread (SIGHUP:
 * reload(); SIGTERM/SIGINT: stop). The trust bundle set is shared read-only and swapped under a
 * mutex with reference counts, so a handshake in progress keeps the set it started with. A
 * maintenance thread wipes expired cached data keys every second (dkcache.h).
 *
 * Fairness (issue 7, point 3): before a request reaches the API, its verified SPIFFE ID must be
 * within its caps (fairness.h): a connection is admitted on its first request and counted until
 * it closes (kb_httpd_opts.conn_closed); over the connection cap the reply is 429 and the
 * connection is closed; over the request rate, 429 with Retry-After.
 */
#include "serve.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "api.h"
#include "console.h"
#include "lib/httpd.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/prog.h"
#include "lib/spiffe_bundle.h"
#include "lib/x509svid.h"
#include "fairness.h"
#include "metrics.h"
#include "notify.h"
#include "service.h"

typedef struct {
    svc *s;
    kb_httpd *h;
    kb_httpd *mh;
    kb_httpd *ch; /* the console listener, or NULL */
    console *cn;  /* NULL when [console] listen is unset */
    metrics *m;
    notify *nt;
    const char *td;
    const char *bundle_file;
    pthread_mutex_t mu; /* guards the fields below */
    spiffe_bundle_set *bs;
    struct stat bundle_st;
    int64_t checked_at;
    uint64_t bundle_reloads;
    fairness *fair;    /* NULL when both per-ID caps are off */
    int64_t max_conns; /* [fairness] max_connections_per_client */
    pthread_mutex_t maint_mu;
    pthread_cond_t maint_cv;
    bool maint_stop;
} server;

/* ---- trust bundle ------------------------------------------------------------------------- */

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* (Re)load the bundle if forced or the file changed. Called with sv->mu held. A bundle that
 * fails to parse, or whose spiffe_sequence goes backwards, is refused and the old one kept. */
static kb_err bundle_reload_locked(server *sv, bool force)
{
    struct stat st;
    spiffe_bundle *b = NULL;
    spiffe_bundle_set *set = NULL;
    const char *why = NULL;
    kb_err rc;

    if (stat(sv->bundle_file, &st) != 0) {
        kb_log(KB_LOG_ERROR, "bundle_unreadable", "path", sv->bundle_file, NULL);
        return KB_ERR_IO;
    }
    if (!force && sv->bs != NULL && same_file(&st, &sv->bundle_st))
        return KB_OK;
    rc = spiffe_bundle_load_file(sv->td, sv->bundle_file, &b, &why);
    if (rc == KB_OK && sv->bs != NULL)
        rc = spiffe_bundle_check_update(spiffe_bundle_set_get(sv->bs, sv->td), b, &why);
    if (rc == KB_OK)
        rc = spiffe_bundle_set_new(&set);
    if (rc == KB_OK) {
        rc = spiffe_bundle_set_put(set, b);
        if (rc == KB_OK)
            b = NULL;
    }
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "bundle_refused", "path", sv->bundle_file, "reason",
               why ? why : kb_err_str(rc), NULL);
        /* Remember the stamp anyway: the same bad file is not re-parsed every second. */
        sv->bundle_st = st;
        spiffe_bundle_free(b);
        spiffe_bundle_set_free(set);
        return rc;
    }
    spiffe_bundle_set_free(sv->bs);
    sv->bs = set;
    sv->bundle_st = st;
    sv->bundle_reloads++;
    kb_log(KB_LOG_INFO, "bundle_loaded", "path", sv->bundle_file, "trust_domain", sv->td, NULL);
    return KB_OK;
}

/* The current set (a reference the caller frees), checking the file at most once a second. */
static spiffe_bundle_set *bundle_get(server *sv)
{
    spiffe_bundle_set *bs;
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&sv->mu);
    if (now != sv->checked_at) {
        sv->checked_at = now;
        (void)bundle_reload_locked(sv, false);
    }
    bs = sv->bs;
    if (bs != NULL)
        spiffe_bundle_set_up_ref(bs);
    pthread_mutex_unlock(&sv->mu);
    return bs;
}

/* kb_http_peer_verify: the peer must be an X509-SVID of our trust domain (X509-SVID.md 5). */
static int verify_peer(void *arg, X509 *leaf, STACK_OF(X509) * chain, char *id, size_t id_len,
                       const char **why)
{
    server *sv = arg;
    spiffe_bundle_set *bs = bundle_get(sv);
    spiffe_id sid;
    kb_err rc;
    if (bs == NULL) {
        *why = "no trust bundle";
        return 0;
    }
    rc = x509svid_verify(bs, leaf, chain, X509SVID_PURPOSE_CLIENT, 0, &sid, why);
    spiffe_bundle_set_free(bs);
    if (rc != KB_OK)
        return 0;
    if ((size_t)snprintf(id, id_len, "%s", spiffe_id_str(&sid)) >= id_len) {
        *why = "SPIFFE ID too long";
        return 0;
    }
    return 1;
}

/* ---- request handling --------------------------------------------------------------------- */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void reply(kb_http_req *hr, const api_response *r)
{
    char ra[32];
    if (r->retry_after > 0) {
        snprintf(ra, sizeof(ra), "%lld", (long long)r->retry_after);
        kb_http_set_header(hr, "Retry-After", ra);
    }
    if (r->raw != NULL)
        kb_http_reply(hr, r->status, "application/json", r->raw, r->raw_len);
    else if (r->status == 204 || r->body == NULL)
        kb_http_reply(hr, r->status, NULL, NULL, 0);
    else
        kb_http_reply_json(hr, r->status, r->body);
}

/* Per-SPIFFE-ID caps. false = resp filled with the 429. */
static bool fair_admit(server *sv, kb_http_req *hr, api_response *resp)
{
    const char *id = kb_http_req_peer_id(hr);
    void **slot = kb_http_req_conn_data(hr);
    double now = hsm_budget_now();
    int64_t ra = 0;

    if (sv->fair == NULL || id == NULL)
        return true;
    if (sv->max_conns > 0 && *slot == NULL) {
        fairness_conn *fc = NULL;
        if (fairness_conn_acquire(sv->fair, id, now, &fc) != KB_OK) {
            api_error(resp, 429, kb_err_str(KB_ERR_LIMIT),
                      "too many open connections for this client");
            resp->retry_after = 1;
            kb_http_req_close_after(hr);
            return false;
        }
        *slot = fc;
    }
    if (fairness_request(sv->fair, id, now, &ra) != KB_OK) {
        api_error(resp, 429, kb_err_str(KB_ERR_LIMIT), "request rate over this client's share");
        resp->retry_after = ra > 0 ? ra : 1;
        return false;
    }
    return true;
}

static void conn_closed(void *data, void *arg)
{
    server *sv = arg;
    fairness_conn_release(sv->fair, data);
}

static void handle(kb_http_req *hr, void *arg)
{
    server *sv = arg;
    double t0 = mono_now();
    const char *method = kb_http_req_method(hr), *path = kb_http_req_path(hr);
    api_response resp;
    api_request q;
    X509 *cert = kb_http_req_peer_cert(hr);

    memset(&resp, 0, sizeof(resp));
    memset(&q, 0, sizeof(q));
    /* A kept-alive connection or a resumed session must not outlive the certificate
     * (DESIGN.md, Identity): every request checks notAfter again. */
    if (cert != NULL && X509_cmp_time(X509_get0_notAfter(cert), NULL) <= 0) {
        api_error(&resp, 401, "auth", "client certificate expired");
    } else if (fair_admit(sv, hr, &resp)) {
        q.method = method;
        q.path = path;
        q.query = kb_http_req_query(hr);
        kb_http_req_body(hr, &q.body, &q.body_len);
        q.peer = kb_http_req_peer_addr(hr);
        q.spiffe_id = kb_http_req_peer_id(hr);
        q.now = (int64_t)time(NULL);
        if (strcmp(path, "/v1/console/login") == 0 && sv->cn != NULL)
            console_login(sv->cn, &q, &resp); /* `keybridge console login` */
        else
            api_handle_raw(sv->s, &q, &resp); /* reply() sends pre-rendered bodies as they are */
    }
    reply(hr, &resp);
    metrics_observe(sv->m, api_route_name(method, path), resp.status, mono_now() - t0);
    api_response_clear(&resp);
}

/* The console listener (TLS, no client certificate): console.h does the work; every answer
 * carries its security headers. */
static void handle_console(kb_http_req *hr, void *arg)
{
    server *sv = arg;
    console_request q;
    console_response r;
    memset(&q, 0, sizeof(q));
    q.method = kb_http_req_method(hr);
    q.path = kb_http_req_path(hr);
    q.query = kb_http_req_query(hr);
    q.cookie = kb_http_req_header(hr, "Cookie");
    q.csrf = kb_http_req_header(hr, CONSOLE_CSRF_HEADER);
    kb_http_req_body(hr, &q.body, &q.body_len);
    q.peer = kb_http_req_peer_addr(hr);
    q.now = (int64_t)time(NULL);
    console_handle(sv->cn, &q, &r);
    for (size_t i = 0; console_headers[i][0] != NULL; i++)
        kb_http_set_header(hr, console_headers[i][0], console_headers[i][1]);
    if (r.set_cookie[0] != '\0')
        kb_http_set_header(hr, "Set-Cookie", r.set_cookie);
    kb_http_reply(hr, r.status, r.content_type, r.body, r.len);
    console_response_clear(&r);
}

/* [console]: open its listener and the session table (nothing when listen is unset). */
static kb_err open_console(const kb_config *cfg, server *sv)
{
    const char *listen = kb_config_str(cfg, "console", "listen");
    const char *url = kb_config_str(cfg, "console", "url");
    char buf[CONSOLE_URL_MAX];
    kb_httpd_opts co;
    console_opts opts;
    kb_err rc;
    if (listen == NULL || listen[0] == '\0')
        return KB_OK;
    memset(&co, 0, sizeof(co));
    co.listen = listen;
    co.threads = 1;
    co.cert_file = kb_config_str(cfg, "server", "cert_file");
    co.key_file = kb_config_str(cfg, "server", "key_file");
    co.max_connections = 256;
    co.max_handshakes = 64;
    co.max_body_bytes = API_BODY_MAX;
    co.timeout_secs = (int)kb_config_duration(cfg, "server", "timeout");
    co.handler = handle_console;
    co.handler_arg = sv;
    rc = kb_httpd_new(&co, &sv->ch);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "listen_failed", "addr", listen, "error", kb_err_str(rc), NULL);
        return rc;
    }
    if (url == NULL || url[0] == '\0') {
        /* https://HOST:BOUND_PORT from the listen address (its port may be 0). */
        const char *colon = strrchr(listen, ':');
        int hl = colon ? (int)(colon - listen) : (int)strlen(listen);
        snprintf(buf, sizeof(buf), "https://%.*s:%d", hl, listen, kb_httpd_port(sv->ch));
        url = buf;
    }
    memset(&opts, 0, sizeof(opts));
    opts.url = url;
    opts.login_ttl = kb_config_duration(cfg, "console", "login_ttl");
    opts.session_ttl = kb_config_duration(cfg, "console", "session_ttl");
    rc = console_new(sv->s, &opts, &sv->cn);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "config_invalid", "section", "console", "msg",
               "login_ttl and session_ttl must be 1s..1d, url at most 511 characters", NULL);
        return rc;
    }
    {
        char port[16];
        snprintf(port, sizeof(port), "%d", kb_httpd_port(sv->ch));
        kb_log(KB_LOG_INFO, "console_listening", "addr", listen, "port", port, NULL);
    }
    return KB_OK;
}

static void handle_metrics(kb_http_req *hr, void *arg)
{
    server *sv = arg;
    const char *path = kb_http_req_path(hr);
    kb_dbuf b;
    metrics_server_state st;

    if (strcmp(kb_http_req_method(hr), "GET") != 0) {
        kb_http_reply_error(hr, 405, "method_not_allowed", "GET only");
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        kb_http_reply(hr, 200, "text/plain; charset=utf-8", "ok\n", 3);
        return;
    }
    if (strcmp(path, "/metrics") != 0) {
        kb_http_reply_error(hr, 404, "not_found", "try /metrics");
        return;
    }
    st.connections = kb_httpd_connections(sv->h);
    {
        fairness_stats fs;
        fairness_stats_get(sv->fair, &fs);
        st.fair_refused_conns = fs.refused_conns;
        st.fair_refused_requests = fs.refused_requests;
    }
    pthread_mutex_lock(&sv->mu);
    st.reloads = kb_httpd_reload_count(sv->h) + sv->bundle_reloads;
    pthread_mutex_unlock(&sv->mu);
    kb_dbuf_init(&b, METRICS_TEXT_MAX);
    if (metrics_render(sv->m, sv->s, &st, (int64_t)time(NULL), &b) != KB_OK ||
        notify_render_metrics(sv->nt, (int64_t)time(NULL), &b) != KB_OK) {
        kb_http_reply_error(hr, 500, "internal", "metrics unavailable");
    } else {
        kb_http_reply(hr, 200, "text/plain; version=0.0.4; charset=utf-8",
                      b.p ? b.p : (uint8_t *)"", b.len);
    }
    kb_dbuf_free(&b);
}

/* ---- threads ------------------------------------------------------------------------------ */

/* Every second: wipe expired data keys, so none outlives its TTL by much even when idle. */
static void *maint_thread(void *arg)
{
    server *sv = arg;
    pthread_mutex_lock(&sv->maint_mu);
    while (!sv->maint_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        (void)pthread_cond_timedwait(&sv->maint_cv, &sv->maint_mu, &ts);
        if (sv->maint_stop)
            break;
        pthread_mutex_unlock(&sv->maint_mu);
        svc_maintenance(sv->s);
        pthread_mutex_lock(&sv->maint_mu);
    }
    pthread_mutex_unlock(&sv->maint_mu);
    return NULL;
}

/* [fairness]: NULL *out when both caps are off. */
static kb_err open_fairness(const kb_config *cfg, server *sv)
{
    fairness_opts fo;
    int64_t max_ids = kb_config_int(cfg, "fairness", "max_tracked");
    kb_err rc;
    memset(&fo, 0, sizeof(fo));
    fo.max_conns = kb_config_int(cfg, "fairness", "max_connections_per_client");
    fo.rate = kb_config_int(cfg, "fairness", "requests_per_second");
    fo.burst = kb_config_int(cfg, "fairness", "request_burst");
    fo.max_ids = max_ids > 0 ? (size_t)max_ids : 0;
    sv->max_conns = fo.max_conns;
    if (fo.max_conns == 0 && fo.rate == 0)
        return KB_OK;
    rc = max_ids < 0 ? KB_ERR_CONFIG : fairness_new(&fo, &sv->fair);
    if (rc != KB_OK)
        kb_log(KB_LOG_ERROR, "config_invalid", "section", "fairness", "msg",
               "caps must be >= 0, and request_burst at least 1 when requests_per_second is set",
               NULL);
    return rc;
}

/* SIGHUP (kb_prog_serve's signal thread): reload the TLS material and the trust bundle, then the
 * full rollback check (docs/internals/rollback.md). */
static void reload(void *arg)
{
    server *sv = arg;
    kb_err rc = kb_httpd_reload(sv->h);
    if (rc == KB_OK && sv->ch != NULL)
        rc = kb_httpd_reload(sv->ch);
    pthread_mutex_lock(&sv->mu);
    kb_err brc = bundle_reload_locked(sv, true);
    pthread_mutex_unlock(&sv->mu);
    kb_log(rc == KB_OK && brc == KB_OK ? KB_LOG_INFO : KB_LOG_ERROR, "reload", "tls",
           kb_err_str(rc), "bundle", kb_err_str(brc), NULL);
    kb_err src = svc_check_store(sv->s);
    kb_log(src == KB_OK ? KB_LOG_INFO : KB_LOG_ERROR, "store_checked", "result", kb_err_str(src),
           NULL);
}

/* ---- main --------------------------------------------------------------------------------- */

static bool loopback_addr(const char *a)
{
    return strncmp(a, "127.", 4) == 0 || strncmp(a, "[::1]:", 6) == 0 ||
           strncmp(a, "localhost:", 10) == 0;
}

int serve_main(const kb_config *cfg, int argc, char **argv)
{
    server sv;
    kb_httpd_opts o, mo;
    pthread_t maint_tid;
    bool maint_started = false;
    const char *mlisten;
    int code = KB_EXIT_FAIL;
    kb_err rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridged [--config FILE] serve\n\n"
                   "Serve the client, Keywhiz and admin APIs over HTTPS with mTLS (SPIFFE), and\n"
                   "Prometheus metrics on [server] metrics_listen. SIGHUP reloads the server\n"
                   "certificate, key and trust bundle; SIGTERM stops.\n");
            return KB_EXIT_OK;
        }
        fprintf(stderr, "keybridged serve: unexpected '%s' (see --help)\n", argv[i]);
        return KB_EXIT_USAGE;
    }
    memset(&sv, 0, sizeof(sv));
    pthread_mutex_init(&sv.mu, NULL);
    pthread_mutex_init(&sv.maint_mu, NULL);
    pthread_cond_init(&sv.maint_cv, NULL);
    sv.td = kb_config_str(cfg, "server", "trust_domain");
    sv.bundle_file = kb_config_str(cfg, "server", "bundle_file");
    if (sv.td == NULL || sv.bundle_file == NULL ||
        kb_config_str(cfg, "server", "cert_file") == NULL ||
        kb_config_str(cfg, "server", "key_file") == NULL) {
        kb_log(KB_LOG_ERROR, "config_invalid", "msg",
               "serve needs [server] trust_domain, cert_file, key_file and bundle_file", NULL);
        code = KB_EXIT_CONFIG;
        goto out;
    }
    mlisten = kb_config_str(cfg, "server", "metrics_listen");
    if (mlisten != NULL && mlisten[0] != '\0' && !loopback_addr(mlisten)) {
        kb_log(KB_LOG_ERROR, "config_invalid", "key", "server.metrics_listen", "msg",
               "the metrics listener is plain HTTP and must be on loopback", NULL);
        code = KB_EXIT_CONFIG;
        goto out;
    }
    /* Before any thread starts, so only kb_prog_serve's signal thread receives them (SIGPIPE is
     * ignored by kb_prog_main: a peer closing mid-write must not kill the server). */
    kb_prog_serve_prepare();

    pthread_mutex_lock(&sv.mu);
    rc = bundle_reload_locked(&sv, true);
    pthread_mutex_unlock(&sv.mu);
    if (rc != KB_OK) {
        code = KB_EXIT_CONFIG;
        goto out;
    }
    if ((rc = metrics_new(&sv.m)) != KB_OK || (rc = svc_open(cfg, false, &sv.s)) != KB_OK ||
        (rc = open_fairness(cfg, &sv)) != KB_OK || (rc = notify_new(cfg, sv.s, &sv.nt)) != KB_OK) {
        code = kb_exit_code(rc);
        goto out;
    }

    memset(&o, 0, sizeof(o));
    o.listen = kb_config_str(cfg, "server", "listen");
    o.threads = (int)kb_config_int(cfg, "server", "threads");
    o.cert_file = kb_config_str(cfg, "server", "cert_file");
    o.key_file = kb_config_str(cfg, "server", "key_file");
    o.client_ca_file = sv.bundle_file;
    o.verify_peer = verify_peer;
    o.verify_arg = &sv;
    o.max_header_bytes = (size_t)kb_config_int(cfg, "server", "max_header_bytes");
    o.max_body_bytes = (size_t)kb_config_int(cfg, "server", "max_body_bytes");
    o.timeout_secs = (int)kb_config_duration(cfg, "server", "timeout");
    o.max_connections = (int)kb_config_int(cfg, "server", "max_connections");
    o.handshake_timeout_secs = (int)kb_config_duration(cfg, "server", "handshake_timeout");
    o.max_handshakes = (int)kb_config_int(cfg, "server", "max_handshakes");
    o.handler = handle;
    o.handler_arg = &sv;
    o.conn_closed = conn_closed;
    rc = kb_httpd_new(&o, &sv.h);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "listen_failed", "addr", o.listen ? o.listen : "", "error",
               kb_err_str(rc), NULL);
        code = kb_exit_code(rc);
        goto out;
    }
    if (mlisten != NULL && mlisten[0] != '\0') {
        memset(&mo, 0, sizeof(mo));
        mo.listen = mlisten;
        mo.threads = 1;
        mo.max_connections = 64;
        mo.max_body_bytes = 1024;
        mo.handler = handle_metrics;
        mo.handler_arg = &sv;
        rc = kb_httpd_new(&mo, &sv.mh);
        if (rc != KB_OK) {
            kb_log(KB_LOG_ERROR, "listen_failed", "addr", mlisten, "error", kb_err_str(rc), NULL);
            code = kb_exit_code(rc);
            goto out;
        }
        char port[16];
        snprintf(port, sizeof(port), "%d", kb_httpd_port(sv.mh));
        kb_log(KB_LOG_INFO, "metrics_listening", "addr", mlisten, "port", port, NULL);
    }
    if ((rc = open_console(cfg, &sv)) != KB_OK) {
        code = kb_exit_code(rc);
        goto out;
    }
    if (pthread_create(&maint_tid, NULL, maint_thread, &sv) != 0)
        goto out;
    maint_started = true;
    if ((rc = notify_start(sv.nt)) != KB_OK) {
        code = kb_exit_code(rc);
        goto out;
    }
    {
        char port[16];
        snprintf(port, sizeof(port), "%d", kb_httpd_port(sv.h));
        kb_log(KB_LOG_INFO, "listening", "addr", o.listen ? o.listen : "", "port", port,
               "trust_domain", sv.td, NULL);
    }
    {
        kb_serve ks = {.listeners = {sv.h, sv.mh, sv.ch}, .reload = reload, .arg = &sv};
        rc = kb_prog_serve(&ks);
    }
    code = rc == KB_OK ? KB_EXIT_OK : kb_exit_code(rc);
out:
    if (maint_started) {
        pthread_mutex_lock(&sv.maint_mu);
        sv.maint_stop = true;
        pthread_cond_signal(&sv.maint_cv);
        pthread_mutex_unlock(&sv.maint_mu);
        pthread_join(maint_tid, NULL);
    }
    notify_free(sv.nt); /* stops and joins the notifier first */
    kb_httpd_free(sv.ch);
    console_free(sv.cn);
    kb_httpd_free(sv.mh);
    kb_httpd_free(sv.h); /* releases every admitted connection: fairness must still exist */
    fairness_free(sv.fair);
    svc_close(sv.s);
    metrics_free(sv.m);
    spiffe_bundle_set_free(sv.bs);
    pthread_mutex_destroy(&sv.mu);
    pthread_cond_destroy(&sv.maint_cv);
    pthread_mutex_destroy(&sv.maint_mu);
    return code;
}
