/* main.c - keybridge-sync, the per-application syncer (docs/keybridge-sync.md).
 *
 *   keybridge-sync [--config FILE] [sync] [--allow-mass-delete]   one run (default)
 *   keybridge-sync daemon                                         every interval, /status
 *   keybridge-sync schedule APP [--interval 15]                   offset + EventBridge cron
 *   keybridge-sync iam-policy APP [--account N] [--region R]      least-privilege policies
 *   keybridge-sync cost --secrets N --accounts A [...]             monthly AWS cost
 * With AWS_LAMBDA_RUNTIME_API set, the default command runs the Lambda custom runtime loop. */
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cost.h"
#include "identity.h"
#include "lambda.h"
#include "lib/awsreq.h"
#include "lib/httpd.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/prog.h"
#include "schedule.h"
#include "sink_dir.h"
#include "sink_secretsmanager.h"
#include "source_keybridge.h"
#include "sync.h"

#define ENV_PREFIX "KEYBRIDGE_SYNC"
#define MAX_REGIONS 16
#define MAX_ALLOW 64

static const kb_config_key keys[] = {
    {"source", "url", KB_CFG_STRING, NULL, "keybridged base URL (https://host:port), required"},
    {"source", "server_id", KB_CFG_STRING, NULL,
     "keybridged's SPIFFE ID, pinned (required): any other server identity is refused"},
    {"source", "svid_cert_file", KB_CFG_PATH, NULL, "our X509-SVID chain (svid.pem, leaf first)"},
    {"source", "svid_key_file", KB_CFG_PATH, NULL, "our SVID private key (svid.key, 0600)"},
    {"source", "bundle_file", KB_CFG_PATH, NULL, "trust bundle for the server (bundle.pem)"},
    {"source", "svid_secret_id", KB_CFG_STRING, NULL,
     "instead of files: Secrets Manager secret with SPIRE SVIDStore JSON (read from the first "
     "sink region and endpoint)"},
    {"source", "timeout", KB_CFG_DURATION, "30s", "per request to keybridged"},
    {"run", "deadline", KB_CFG_DURATION, "60s",
     "time limit of one run, retries after 429/503 and deferred names included (0: none; "
     "on Lambda the invocation's deadline)"},
    {"sink", "target", KB_CFG_STRING, NULL, "dir:/path/to/dir or secretsmanager (required)"},
    {"sink", "regions", KB_CFG_STRING, NULL,
     "secretsmanager: comma-separated regions written from one fetch (default $AWS_REGION)"},
    {"sink", "endpoint", KB_CFG_STRING, NULL,
     "secretsmanager: endpoint override, e.g. http://127.0.0.1:4566 ({region} is replaced), "
     "or a comma-separated list, one per region"},
    {"sink", "ca_file", KB_CFG_PATH, NULL, "secretsmanager: PEM CA file for the endpoint"},
    {"sink", "timeout", KB_CFG_DURATION, "30s",
     "secretsmanager: per call, cut to what is left of the run's deadline"},
    {"sink", "rate", KB_CFG_INT, "20",
     "secretsmanager: most CreateSecret, PutSecretValue, TagResource, DeleteSecret, "
     "RestoreSecret and GetResourcePolicy calls per second per region (AWS: 50/s per account "
     "and region, shared; 0: unpaced, max 1000)"},
    {"sink", "delete_policy", KB_CFG_STRING, "delete",
     "delete (7-day recovery window) or retain (never delete)"},
    {"sink", "max_delete_fraction", KB_CFG_STRING, "0.10",
     "largest share of managed secrets one run may delete (0..1)"},
    {"sink", "owners", KB_CFG_STRING, "", "dir: comma-separated users files may be owned by"},
    {"sink", "groups", KB_CFG_STRING, "", "dir: comma-separated groups files may belong to"},
    {"daemon", "interval", KB_CFG_INT, "15", "minutes between runs (divides 60)"},
    {"daemon", "listen", KB_CFG_STRING, "127.0.0.1:9477", "local /status, /metrics, POST /sync"},
    {"daemon", "stale_after", KB_CFG_DURATION, "0",
     "/status answers 503 when the last success is older (0: 3 intervals)"},
    {"log", "level", KB_CFG_STRING, "info", "debug, info, warn or error"},
    {NULL, NULL, 0, NULL, NULL},
};

typedef struct {
    const kb_config *cfg;
    int allow_mass_delete;
    int64_t deadline_s; /* --deadline; <0: [run] deadline */
} run_ctx;

/* Split a comma list into dst (pointers into buf). */
static size_t split(char *buf, const char **dst, size_t max)
{
    size_t n = 0;
    char *p = buf;
    while (p && *p && n < max) {
        char *c = strchr(p, ',');
        if (c)
            *c = '\0';
        while (*p == ' ')
            p++;
        if (*p)
            dst[n++] = p;
        p = c ? c + 1 : NULL;
    }
    dst[n] = NULL;
    return n;
}

/* The endpoint for region i: one of a comma list (one per region), or a template where
 * {region} is replaced, or NULL (AWS's regional endpoint). */
static const char *endpoint_for(const char *endpoint, size_t i, size_t nreg, const char *region,
                                char *buf, size_t len)
{
    const char *r;
    if (endpoint == NULL || endpoint[0] == '\0')
        return NULL;
    if (strchr(endpoint, ',') != NULL) {
        size_t k;
        char tmp[1024];
        const char *eps[MAX_REGIONS + 1];
        snprintf(tmp, sizeof(tmp), "%s", endpoint);
        k = split(tmp, eps, MAX_REGIONS);
        if (k != nreg || i >= k)
            return "";
        snprintf(buf, len, "%s", eps[i]);
        return buf;
    }
    r = strstr(endpoint, "{region}");
    if (r)
        snprintf(buf, len, "%.*s%s%s", (int)(r - endpoint), endpoint, region, r + 8);
    else
        snprintf(buf, len, "%s", endpoint);
    return buf;
}

static kb_err load_identity(const kb_config *cfg, const sync_sm_opts *smo, sync_identity *id,
                            sync_summary *sum)
{
    const char *server_id = kb_config_str(cfg, "source", "server_id");
    const char *secret_id = kb_config_str(cfg, "source", "svid_secret_id");
    const char *why = "";
    spiffe_id sid;
    kb_err rc;
    if (server_id == NULL || spiffe_id_parse_str(server_id, &sid, &why) != KB_OK ||
        spiffe_id_is_root(&sid)) {
        sync_summary_fail(sum, KB_ERR_CONFIG,
                          "[source] server_id is required and must be a SPIFFE ID (%s)",
                          server_id ? why : "unset");
        return KB_ERR_CONFIG;
    }
    if (secret_id) {
        kb_secret *v = NULL;
        if (smo == NULL) {
            sync_summary_fail(sum, KB_ERR_CONFIG,
                              "[source] svid_secret_id needs AWS credentials and a region");
            return KB_ERR_CONFIG;
        }
        rc = sync_sm_get_value(smo, secret_id, &v, sum);
        if (rc != KB_OK) {
            sync_summary_fail(sum, rc, "cannot read the SVID secret %s (%s)", secret_id,
                              kb_err_str(rc));
            return rc;
        }
        rc = sync_identity_from_svidstore(kb_secret_cdata(v), kb_secret_len(v),
                                          spiffe_id_trust_domain(&sid), id, &why);
        kb_secret_free(v);
    } else {
        const char *c = kb_config_str(cfg, "source", "svid_cert_file"),
                   *k = kb_config_str(cfg, "source", "svid_key_file"),
                   *b = kb_config_str(cfg, "source", "bundle_file");
        if (!c || !k || !b) {
            sync_summary_fail(sum, KB_ERR_CONFIG,
                              "set [source] svid_cert_file, svid_key_file and bundle_file, or "
                              "svid_secret_id");
            return KB_ERR_CONFIG;
        }
        rc = sync_identity_from_files(c, k, b, spiffe_id_trust_domain(&sid), id, &why);
    }
    if (rc != KB_OK)
        sync_summary_fail(sum, rc, "cannot load our SVID: %s (%s)", why ? why : "", kb_err_str(rc));
    return rc;
}

static kb_err parse_fraction(const char *s, double *out)
{
    char *end;
    double d;
    errno = 0;
    d = strtod(s, &end);
    KB_ENSURE(errno == 0 && end != s && *end == '\0' && d >= 0.0 && d <= 1.0, KB_ERR_CONFIG);
    *out = d;
    return KB_OK;
}

/* One run: identity, source, sinks, sync_run. deadline_ms: the Lambda invocation's (monotonic),
 * or 0 for --deadline / [run] deadline from the start of the run. */
static kb_err run_once(void *arg, int64_t deadline_ms, sync_summary *sum)
{
    run_ctx *rx = arg;
    const kb_config *cfg = rx->cfg;
    const char *target = kb_config_str(cfg, "sink", "target");
    const char *endpoint = kb_config_str(cfg, "sink", "endpoint");
    const char *policy = kb_config_str(cfg, "sink", "delete_policy");
    char regbuf[1024], ownbuf[2048], grpbuf[2048], ep[512];
    const char *regions[MAX_REGIONS + 1], *owners[MAX_ALLOW + 1], *groups[MAX_ALLOW + 1];
    size_t nreg = 0, nsinks = 0;
    sync_sink *sinks[MAX_REGIONS];
    sync_source *src = NULL;
    sync_identity id;
    kb_aws_creds creds;
    int have_creds = 0, is_sm;
    sync_sm_opts smo;
    sync_run_opts ro;
    int64_t t0 = sync_mono_ms();
    sync_clock clk;
    kb_err rc = KB_OK;

    memset(&clk, 0, sizeof(clk));
    if (deadline_ms > 0) {
        clk.deadline_ms = deadline_ms;
    } else {
        int64_t d =
            rx->deadline_s >= 0 ? rx->deadline_s : kb_config_duration(cfg, "run", "deadline");
        clk.deadline_ms = d > 0 ? t0 + d * 1000 : 0;
    }
    memset(&id, 0, sizeof(id));
    memset(&creds, 0, sizeof(creds));
    memset(&smo, 0, sizeof(smo));
    memset(&ro, 0, sizeof(ro));
    if (target == NULL || kb_config_str(cfg, "source", "url") == NULL) {
        sync_summary_fail(sum, KB_ERR_CONFIG, "[source] url and [sink] target are required");
        return KB_ERR_CONFIG;
    }
    is_sm = strcmp(target, "secretsmanager") == 0 || strcmp(target, "secretsmanager:") == 0;
    if (!is_sm && strncmp(target, "dir:", 4) != 0) {
        sync_summary_fail(sum, KB_ERR_CONFIG, "[sink] target must be dir:PATH or secretsmanager");
        return KB_ERR_CONFIG;
    }
    if (parse_fraction(kb_config_str(cfg, "sink", "max_delete_fraction"),
                       &ro.max_delete_fraction) != KB_OK ||
        (strcmp(policy, "delete") != 0 && strcmp(policy, "retain") != 0)) {
        sync_summary_fail(sum, KB_ERR_CONFIG,
                          "[sink] max_delete_fraction must be 0..1 and delete_policy "
                          "delete or retain");
        return KB_ERR_CONFIG;
    }
    ro.retain_deletes = strcmp(policy, "retain") == 0;
    ro.clock = &clk;
    ro.allow_mass_delete = rx->allow_mass_delete;
    snprintf(regbuf, sizeof(regbuf), "%s",
             kb_config_str(cfg, "sink", "regions")
                 ? kb_config_str(cfg, "sink", "regions")
                 : (getenv("AWS_REGION") ? getenv("AWS_REGION") : "us-east-1"));
    nreg = split(regbuf, regions, MAX_REGIONS);
    if (is_sm || kb_config_str(cfg, "source", "svid_secret_id")) {
        rc = kb_aws_creds_from_env(&creds);
        if (rc != KB_OK) {
            sync_summary_fail(sum, KB_ERR_CONFIG,
                              "AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                              "(and AWS_SESSION_TOKEN) (%s)",
                              kb_err_str(rc));
            rc = KB_ERR_CONFIG;
            goto out;
        }
        have_creds = 1;
        if (nreg == 0) {
            sync_summary_fail(sum, KB_ERR_CONFIG, "[sink] regions is empty");
            rc = KB_ERR_CONFIG;
            goto out;
        }
        smo.creds = &creds;
        smo.ca_file = kb_config_str(cfg, "sink", "ca_file");
        smo.timeout_ms = (long)kb_config_duration(cfg, "sink", "timeout") * 1000;
        smo.clock = &clk;
        smo.rate = kb_config_int(cfg, "sink", "rate");
        if (smo.timeout_ms <= 0 || smo.rate < 0 || smo.rate > SYNC_SM_RATE_MAX) {
            sync_summary_fail(sum, KB_ERR_CONFIG,
                              "[sink] timeout must be positive and [sink] rate 0..%d",
                              SYNC_SM_RATE_MAX);
            rc = KB_ERR_CONFIG;
            goto out;
        }
    }
    /* the SVID is read at every run: a rotated one is picked up without a restart */
    if (have_creds) {
        smo.region = regions[0];
        smo.endpoint = endpoint_for(endpoint, 0, nreg, regions[0], ep, sizeof(ep));
    }
    KB_GUARD_OUT(rc, load_identity(cfg, have_creds ? &smo : NULL, &id, sum));
    {
        sync_kb_opts ko = {
            .url = kb_config_str(cfg, "source", "url"),
            .server_id = kb_config_str(cfg, "source", "server_id"),
            .identity = &id,
            .timeout_ms = (long)kb_config_duration(cfg, "source", "timeout") * 1000,
            .clock = &clk,
        };
        rc = sync_source_keybridge_new(&ko, &src);
        if (rc != KB_OK) {
            sync_summary_fail(sum, rc, "[source] url must be https:// (%s)", kb_err_str(rc));
            goto out;
        }
    }
    if (is_sm) {
        for (size_t i = 0; i < nreg; i++) {
            sync_sm_opts o = smo;
            char rep[512];
            o.region = regions[i];
            o.endpoint = endpoint_for(endpoint, i, nreg, regions[i], rep, sizeof(rep));
            if (o.endpoint && o.endpoint[0] == '\0') {
                sync_summary_fail(sum, KB_ERR_CONFIG,
                                  "[sink] endpoint: give one endpoint per region");
                rc = KB_ERR_CONFIG;
                goto out;
            }
            rc = sync_sink_sm_new(&o, &sinks[nsinks]);
            if (rc != KB_OK) {
                sync_summary_fail(sum, rc, "bad secretsmanager sink for region %s", regions[i]);
                goto out;
            }
            nsinks++;
        }
    } else {
        sync_dir_opts d = {.path = target + 4, .owners = owners, .groups = groups, .as_root = -1};
        snprintf(ownbuf, sizeof(ownbuf), "%s", kb_config_str(cfg, "sink", "owners"));
        snprintf(grpbuf, sizeof(grpbuf), "%s", kb_config_str(cfg, "sink", "groups"));
        split(ownbuf, owners, MAX_ALLOW);
        split(grpbuf, groups, MAX_ALLOW);
        rc = sync_sink_dir_new(&d, &sinks[0]);
        if (rc != KB_OK) {
            sync_summary_fail(sum, rc, "cannot open the sink directory %s", target + 4);
            goto out;
        }
        nsinks = 1;
    }
    rc = sync_run(src, sinks, nsinks, &ro, sum);
    if (rc != KB_OK && sum->err != KB_OK && sum->calls[SYNC_OP_KB_LIST] > 0 &&
        sync_source_keybridge_why(src)[0] != '\0') {
        /* make a TLS refusal readable: which rule, or which identity */
        char e[512];
        snprintf(e, sizeof(e), "%.200s: %.300s", sum->error, sync_source_keybridge_why(src));
        snprintf(sum->error, sizeof(sum->error), "%s", e);
    }
out:
    for (size_t i = 0; i < nsinks; i++)
        sync_sink_free(sinks[i]);
    if (src)
        src->ops->free(src);
    sync_identity_clear(&id);
    if (have_creds)
        kb_aws_creds_free(&creds);
    sum->duration_ms = sync_mono_ms() - t0;
    return rc;
}

static void print_summary(const sync_summary *sum)
{
    json_t *j = sync_summary_json(sum);
    char *s = j ? kb_json_dump(j) : NULL;
    printf("%s\n", s ? s : "{\"ok\":false}");
    fflush(stdout);
    kb_json_free_str(s);
    json_decref(j);
}

static int exit_for(kb_err rc, const sync_summary *sum)
{
    if (rc == KB_OK && sync_summary_ok(sum))
        return KB_EXIT_OK;
    if (sum->items) /* some secrets failed or were deferred: 1, whatever their own errors */
        return KB_EXIT_FAIL;
    if (sum->err != KB_OK && sum->err != KB_ERR_NOT_FOUND)
        return kb_exit_code(sum->err) == KB_EXIT_OK ? KB_EXIT_FAIL : kb_exit_code(sum->err);
    return KB_EXIT_FAIL;
}

static int cmd_sync(const kb_config *cfg, int argc, char **argv)
{
    run_ctx rx = {cfg, 0, -1};
    sync_summary sum;
    kb_err rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--allow-mass-delete") == 0) {
            rx.allow_mass_delete = 1;
        } else if (strcmp(argv[i], "--deadline") == 0 && i + 1 < argc) {
            if (kb_parse_duration(argv[++i], &rx.deadline_s) != KB_OK || rx.deadline_s < 0) {
                fprintf(stderr, "keybridge-sync sync: --deadline takes a duration (60s, 2m)\n");
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridge-sync [--config FILE] sync [--allow-mass-delete] "
                   "[--deadline DURATION]\n\n"
                   "One run: list from keybridged, diff against the sink, fetch what changed,\n"
                   "write and delete. Prints one JSON summary on stdout; exit 0 only if\n"
                   "everything applied. 429/503 answers and deferred names are retried after\n"
                   "their Retry-After plus jitter until --deadline ([run] deadline, default\n"
                   "60s); what is left is reported as deferred (exit non-zero, no deletes).\n"
                   "With AWS_LAMBDA_RUNTIME_API set, runs the Lambda custom runtime loop\n"
                   "instead (deadline: the invocation's).\n");
            return KB_EXIT_OK;
        } else {
            fprintf(stderr, "keybridge-sync sync: unexpected '%s' (see --help)\n", argv[i]);
            return KB_EXIT_USAGE;
        }
    }
    if (getenv("AWS_LAMBDA_RUNTIME_API") != NULL) {
        kb_err init = KB_OK;
        const char *msg = NULL;
        if (kb_config_str(cfg, "source", "url") == NULL ||
            kb_config_str(cfg, "source", "server_id") == NULL ||
            kb_config_str(cfg, "sink", "target") == NULL) {
            init = KB_ERR_CONFIG;
            msg = "configuration: [source] url, [source] server_id and [sink] target are "
                  "required (KEYBRIDGE_SYNC_SOURCE_URL, ...)";
        }
        return sync_lambda_run(getenv("AWS_LAMBDA_RUNTIME_API"), init, msg, run_once, &rx);
    }
    sync_summary_init(&sum);
    rc = run_once(&rx, 0, &sum);
    print_summary(&sum);
    if (sum.err != KB_OK)
        fprintf(stderr, "keybridge-sync: %s\n", sum.error);
    return exit_for(rc, &sum);
}

/* ---- daemon --------------------------------------------------------------------------------
 */

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
static kb_httpd *volatile g_httpd;

static void on_term(int sig)
{
    (void)sig;
    g_d.stop = 1;
    if (g_httpd)
        kb_httpd_stop(g_httpd);
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

static void *httpd_thread(void *arg)
{
    if (kb_httpd_run(arg) != KB_OK)
        kb_log(KB_LOG_ERROR, "status_listener_stopped", NULL);
    return NULL;
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
        ts.tv_sec += 1; /* wake each second: SIGTERM only sets a flag */
        pthread_cond_timedwait(&g_d.cv, &g_d.mu, &ts);
    }
}

static int cmd_daemon(const kb_config *cfg, int argc, char **argv)
{
    run_ctx rx = {cfg, 0, -1};
    int64_t interval = kb_config_int(cfg, "daemon", "interval");
    int64_t stale = kb_config_duration(cfg, "daemon", "stale_after");
    kb_httpd_opts ho;
    kb_httpd *h = NULL;
    pthread_t th;
    struct sigaction sa;
    char app[SYNC_APP_MAX + 1] = "";
    char port[16];
    (void)argv;
    if (argc > 1) {
        printf("usage: keybridge-sync [--config FILE] daemon\n\nRun every [daemon] interval "
               "minutes at the application's hashed offset and second;\nserve GET /status, "
               "GET /metrics and POST /sync on [daemon] listen (loopback).\n");
        return strcmp(argv[1], "--help") == 0 ? KB_EXIT_OK : KB_EXIT_USAGE;
    }
    if (interval < 1 || interval > 60 || 60 % interval != 0) {
        fprintf(stderr, "keybridge-sync: [daemon] interval must divide 60\n");
        return KB_EXIT_CONFIG;
    }
    g_d.interval = interval;
    g_d.stale_after_s = stale > 0 ? stale : interval * 60 * 3;
    memset(&ho, 0, sizeof(ho));
    ho.listen = kb_config_str(cfg, "daemon", "listen");
    ho.threads = 1;
    ho.handler = daemon_handler;
    /* plain HTTP, so kb_httpd refuses anything but 127.0.0.0/8 and ::1 */
    if (kb_httpd_new(&ho, &h) != KB_OK) {
        fprintf(stderr, "keybridge-sync: cannot listen on %s (loopback only)\n", ho.listen);
        return KB_EXIT_CONFIG;
    }
    g_httpd = h;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    snprintf(port, sizeof(port), "%d", kb_httpd_port(h));
    kb_log(KB_LOG_INFO, "status_listening", "listen", ho.listen, "port", port, NULL);
    if (pthread_create(&th, NULL, httpd_thread, h) != 0) {
        kb_httpd_free(h);
        return KB_EXIT_FAIL;
    }
    g_d.trigger = 1; /* first run at start, then on the schedule */
    sync_summary_init(&g_d.last);
    while (!g_d.stop) {
        sync_summary sum;
        json_t *j;
        kb_err rc;
        pthread_mutex_lock(&g_d.mu);
        if (!g_d.trigger)
            wait_next(app);
        g_d.trigger = 0;
        g_d.running = !g_d.stop;
        pthread_mutex_unlock(&g_d.mu);
        if (g_d.stop)
            break;
        sync_summary_init(&sum);
        rc = run_once(&rx, 0, &sum);
        print_summary(&sum);
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
    kb_httpd_stop(h);
    pthread_join(th, NULL);
    g_httpd = NULL;
    kb_httpd_free(h);
    kb_json_free_str(g_d.last_summary);
    return KB_EXIT_OK;
}

/* ---- schedule, iam-policy -------------------------------------------------------------------
 */

static int cmd_schedule(const kb_config *cfg, int argc, char **argv)
{
    int64_t interval = 15;
    int napps = 0, minute;
    char cron[64];
    (void)cfg;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            if (kb_parse_int64(argv[++i], &interval) != KB_OK || interval < 1 || interval > 60 ||
                60 % interval != 0) {
                fprintf(stderr, "keybridge-sync schedule: --interval must divide 60\n");
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridge-sync schedule APP [APP...] [--interval MINUTES]\n\n"
                   "Print each APP's offset (first 32 bits of SHA-256(APP), big-endian, mod the\n"
                   "interval) and its EventBridge cron expression. The interval divides 60.\n");
            return KB_EXIT_OK;
        } else if (argv[i][0] == '-' || argv[i][0] == '\0') {
            fprintf(stderr, "keybridge-sync schedule: unexpected '%s'\n", argv[i]);
            return KB_EXIT_USAGE;
        } else {
            napps++;
        }
    }
    if (napps == 0) {
        fprintf(stderr, "keybridge-sync schedule: need APP (see --help)\n");
        return KB_EXIT_USAGE;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--interval") == 0) {
            i++;
            continue;
        }
        if (sync_schedule_offset(argv[i], (int)interval, &minute) != KB_OK ||
            sync_schedule_cron(minute, (int)interval, cron, sizeof(cron)) != KB_OK)
            return KB_EXIT_USAGE;
        printf("offset %d\n%s\n", minute, cron);
    }
    return KB_EXIT_OK;
}

static int cmd_iam_policy(const kb_config *cfg, int argc, char **argv)
{
    const char *app = NULL, *account = "*", *region = "*", *svid = NULL;
    char res[512], svid_res[512];
    json_t *out;
    char *s;
    (void)cfg;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--account") == 0 && i + 1 < argc)
            account = argv[++i];
        else if (strcmp(argv[i], "--region") == 0 && i + 1 < argc)
            region = argv[++i];
        else if (strcmp(argv[i], "--svid-secret") == 0 && i + 1 < argc)
            svid = argv[++i];
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridge-sync iam-policy APP [--account N] [--region R] "
                   "[--svid-secret NAME]\n\nPrint least-privilege IAM policies (JSON) for the "
                   "syncer's role and the function's role.\n");
            return KB_EXIT_OK;
        } else if (app == NULL && argv[i][0] != '-')
            app = argv[i];
        else {
            fprintf(stderr, "keybridge-sync iam-policy: unexpected '%s'\n", argv[i]);
            return KB_EXIT_USAGE;
        }
    }
    if (app == NULL || !sync_name_ok(app) || strlen(app) > SYNC_APP_MAX) {
        fprintf(stderr, "keybridge-sync iam-policy: need a valid APP name\n");
        return KB_EXIT_USAGE;
    }
    /* Secret ARNs end in -XXXXXX (6 random characters): match with "-??????". */
    snprintf(res, sizeof(res), "arn:aws:secretsmanager:%s:%s:secret:keybridge/%s/*", region,
             account, app);
    snprintf(svid_res, sizeof(svid_res), "arn:aws:secretsmanager:%s:%s:secret:%s-??????", region,
             account, svid ? svid : "keybridge/svid/*");
    out = json_pack(
        "{s:{s:s,s:[{s:s,s:s,s:[s,s,s,s,s,s,s],s:s},{s:s,s:s,s:[s,s],s:s,s:{s:{s:s}}},"
        "{s:s,s:s,s:s,s:s},{s:s,s:s,s:s,s:s}]},"
        "s:{s:s,s:[{s:s,s:s,s:[s,s],s:s},{s:s,s:s,s:s,s:s}]}}",
        "syncer_role", "Version", "2012-10-17", "Statement", "Sid", "ManageOwnSecrets", "Effect",
        "Allow", "Action", "secretsmanager:DescribeSecret", "secretsmanager:GetResourcePolicy",
        "secretsmanager:PutSecretValue", "secretsmanager:TagResource",
        "secretsmanager:DeleteSecret", "secretsmanager:RestoreSecret",
        "secretsmanager:UpdateSecret", "Resource", res, "Sid", "CreateOwnSecrets", "Effect",
        "Allow", "Action", "secretsmanager:CreateSecret", "secretsmanager:TagResource", "Resource",
        res, "Condition", "StringEquals", "aws:RequestTag/keybridge:app", app, "Sid", "ListManaged",
        "Effect", "Allow", "Action", "secretsmanager:ListSecrets", "Resource", "*", "Sid",
        "ReadOwnSvid", "Effect", "Allow", "Action", "secretsmanager:GetSecretValue", "Resource",
        svid_res, "function_role", "Version", "2012-10-17", "Statement", "Sid", "ReadAppSecrets",
        "Effect", "Allow", "Action", "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret", "Resource", res, "Sid", "ReadOwnSvid", "Effect", "Allow",
        "Action", "secretsmanager:GetSecretValue", "Resource", svid_res);
    s = out ? json_dumps(out, JSON_INDENT(2)) : NULL;
    json_decref(out);
    if (s == NULL)
        return KB_EXIT_FAIL;
    printf("%s\n", s);
    kb_json_free_str(s);
    return KB_EXIT_OK;
}

/* ---- cost -----------------------------------------------------------------------------------
 */

#define COST_LIST_MAX 16

static int parse_int_list(const char *s, int64_t *out, size_t *n)
{
    char buf[256];
    const char *parts[COST_LIST_MAX + 1];
    size_t k;
    if (strlen(s) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", s);
    k = split(buf, parts, COST_LIST_MAX);
    if (k == 0)
        return -1;
    for (size_t i = 0; i < k; i++)
        if (kb_parse_int64(parts[i], &out[i]) != KB_OK)
            return -1;
    *n = k;
    return 0;
}

static int parse_price(const char *s, double *out)
{
    char *end;
    double d;
    errno = 0;
    d = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(d >= 0.0) || d > 1e6)
        return -1;
    *out = d;
    return 0;
}

static void cost_text(const sync_cost_in *in, const sync_cost_out *o)
{
    printf("keybridge-sync cost: %lld secrets x %lld accounts, a run every %lld min "
           "(%lld runs/month per account, %d h/month), %lld changes/month\n",
           (long long)in->secrets, (long long)in->accounts, (long long)in->interval,
           (long long)o->runs, SYNC_COST_HOURS_PER_MONTH, (long long)in->changes);
    printf("prices: Secrets Manager $%.2f/secret-month, $%.2f/10,000 API calls; Lambda $%.2f/1M "
           "requests, $%.10f/GB-s (%lld MB, %lld ms per run)\n\n",
           in->price_secret, in->price_api, in->price_lambda_req, in->price_lambda_gbs,
           (long long)in->memory_mb, (long long)in->duration_ms);
    printf("%-34s %16s %16s\n", "", "keybridge-sync", "naive");
    printf("%-34s %16lld %16lld\n", "Secrets Manager calls per run", (long long)o->calls_per_run,
           (long long)o->naive_per_run);
    printf("%-34s %16lld %16lld\n", "Secrets Manager calls per month", (long long)o->calls,
           (long long)o->naive_calls);
    printf("%-34s %16.2f %16.2f\n", "Secrets Manager storage ($/month)", o->storage, o->storage);
    printf("%-34s %16.4f %16.4f\n", "Secrets Manager API ($/month)", o->api, o->naive_api);
    printf("%-34s %16.4f %16.4f\n", "Lambda ($/month)", o->lambda, o->lambda);
    printf("%-34s %16.2f %16.2f\n", "total ($/month)", o->total, o->naive_total);
}

static void cost_json(const sync_cost_in *in, const sync_cost_out *o)
{
    json_t *j = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:{s:f,s:f,s:f,"
        "s:f,s:I,s:I}}",
        "secrets", (json_int_t)in->secrets, "accounts", (json_int_t)in->accounts, "interval",
        (json_int_t)in->interval, "changes_per_month", (json_int_t)in->changes, "runs_per_month",
        (json_int_t)o->runs, "calls_per_run", (json_int_t)o->calls_per_run, "naive_calls_per_run",
        (json_int_t)o->naive_per_run, "change_calls", (json_int_t)o->change_calls, "calls",
        (json_int_t)o->calls, "naive_calls", (json_int_t)o->naive_calls, "storage", o->storage,
        "api", o->api, "naive_api", o->naive_api, "lambda_requests", o->lambda_req,
        "lambda_compute", o->lambda_gbs, "lambda", o->lambda, "total", o->total, "naive_total",
        o->naive_total, "prices", "secret_month", in->price_secret, "api_10k", in->price_api,
        "lambda_1m_requests", in->price_lambda_req, "lambda_gb_s", in->price_lambda_gbs,
        "memory_mb", (json_int_t)in->memory_mb, "duration_ms", (json_int_t)in->duration_ms);
    char *t = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    printf("%s\n", t ? t : "null");
    free(t);
    json_decref(j);
}

static int cmd_cost(const kb_config *cfg, int argc, char **argv)
{
    int64_t ns[COST_LIST_MAX], as[COST_LIST_MAX];
    size_t nn = 0, na = 0;
    int json = 0, md = 0;
    sync_cost_in in;
    (void)cfg;
    sync_cost_defaults(&in);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (strcmp(a, "--help") == 0) {
            printf(
                "usage: keybridge-sync cost --secrets N[,N...] --accounts A[,A...] [--interval "
                "15]\n"
                "       [--changes-per-month C] [--svid-files] [--memory-mb 128] "
                "[--duration-ms 200]\n"
                "       [--price-secret 0.40] [--price-api 0.05] [--price-lambda-requests 0.20]\n"
                "       [--price-lambda-gb-s 0.0000166667] [--json | --markdown]\n\n"
                "Monthly Secrets Manager storage and API cost and Lambda cost of N secrets\n"
                "synced into A accounts, from the calls one run makes (1 GetSecretValue for the\n"
                "SVID, unless --svid-files, + ceil(N/100) ListSecrets per no-op run; 4 calls per\n"
                "change and account), beside the naive model of one read per secret per run.\n"
                "C defaults to N (every secret rotated once a month). Prices: AWS list prices,\n"
                "us-east-1, x86_64, as of 2026-12-05 (defaults; the flags override them).\n"
                "Lambda's free tier is not subtracted. %d hours per month.\n",
                SYNC_COST_HOURS_PER_MONTH);
            return KB_EXIT_OK;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
            continue;
        } else if (strcmp(a, "--markdown") == 0) {
            md = 1;
            continue;
        } else if (strcmp(a, "--svid-files") == 0) {
            in.svid_secret = 0;
            continue;
        } else if (v == NULL) {
            bad = 1;
        } else if (strcmp(a, "--secrets") == 0) {
            bad = parse_int_list(v, ns, &nn);
        } else if (strcmp(a, "--accounts") == 0) {
            bad = parse_int_list(v, as, &na);
        } else if (strcmp(a, "--interval") == 0) {
            bad = kb_parse_int64(v, &in.interval) != KB_OK;
        } else if (strcmp(a, "--changes-per-month") == 0) {
            bad = kb_parse_int64(v, &in.changes) != KB_OK || in.changes < 0;
        } else if (strcmp(a, "--memory-mb") == 0) {
            bad = kb_parse_int64(v, &in.memory_mb) != KB_OK;
        } else if (strcmp(a, "--duration-ms") == 0) {
            bad = kb_parse_int64(v, &in.duration_ms) != KB_OK;
        } else if (strcmp(a, "--price-secret") == 0) {
            bad = parse_price(v, &in.price_secret);
        } else if (strcmp(a, "--price-api") == 0) {
            bad = parse_price(v, &in.price_api);
        } else if (strcmp(a, "--price-lambda-requests") == 0) {
            bad = parse_price(v, &in.price_lambda_req);
        } else if (strcmp(a, "--price-lambda-gb-s") == 0) {
            bad = parse_price(v, &in.price_lambda_gbs);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "keybridge-sync cost: bad or incomplete argument '%s' (see --help)\n",
                    a);
            return KB_EXIT_USAGE;
        }
        i++;
    }
    if (nn == 0 || na == 0 || (json && md)) {
        fprintf(stderr, "keybridge-sync cost: need --secrets and --accounts (see --help)\n");
        return KB_EXIT_USAGE;
    }
    if (md)
        printf("| secrets N | accounts A | runs/month/account | calls/run (syncer, naive) | "
               "API calls/month (syncer, naive) | storage $ | API $ (syncer, naive) | "
               "Lambda $ | total $ (syncer, naive) |\n"
               "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t i = 0; i < nn; i++) {
        for (size_t k = 0; k < na; k++) {
            sync_cost_in x = in;
            sync_cost_out o;
            x.secrets = ns[i];
            x.accounts = as[k];
            if (in.changes < 0)
                x.changes = ns[i];
            if (sync_cost_compute(&x, &o) != KB_OK) {
                fprintf(stderr,
                        "keybridge-sync cost: out of range (1 <= N <= %d, 1 <= A <= %d, interval "
                        "divides 60, C <= %d, 128 <= memory <= 10240, 1 <= duration <= 900000, "
                        "prices >= 0)\n",
                        SYNC_COST_SECRETS_MAX, SYNC_COST_ACCOUNTS_MAX, SYNC_COST_CHANGES_MAX);
                return KB_EXIT_USAGE;
            }
            if (json)
                cost_json(&x, &o);
            else if (md)
                printf("| %lld | %lld | %lld | %lld, %lld | %lld, %lld | %.2f | %.4f, %.4f | %.4f "
                       "| %.2f, %.2f |\n",
                       (long long)x.secrets, (long long)x.accounts, (long long)o.runs,
                       (long long)o.calls_per_run, (long long)o.naive_per_run, (long long)o.calls,
                       (long long)o.naive_calls, o.storage, o.api, o.naive_api, o.lambda, o.total,
                       o.naive_total);
            else
                cost_text(&x, &o);
        }
    }
    return KB_EXIT_OK;
}

static int cmd_config_reference(const kb_config *cfg, int argc, char **argv)
{
    (void)cfg;
    (void)argc;
    (void)argv;
    kb_config_print_reference(keys, ENV_PREFIX, stdout);
    return KB_EXIT_OK;
}

static const kb_subcmd cmds[] = {
    {"sync", cmd_sync, "one run (default; Lambda runtime when AWS_LAMBDA_RUNTIME_API is set)"},
    {"daemon", cmd_daemon, "run on the schedule with a local /status, /metrics, POST /sync"},
    {"schedule", cmd_schedule, "print APP's offset and EventBridge cron (--interval 15)"},
    {"iam-policy", cmd_iam_policy, "print least-privilege IAM policies for APP"},
    {"cost", cmd_cost, "monthly AWS cost for N secrets in A accounts, beside one read per run"},
    {"config-reference", cmd_config_reference, "print every configuration key (Markdown)"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    static const kb_prog prog = {
        .name = "keybridge-sync",
        .summary = "per-application syncer: keybridged -> Secrets Manager | directory",
        .schema = keys,
        .env_prefix = ENV_PREFIX,
        .default_config = "/etc/keybridge/keybridge-sync.conf",
        .cmds = cmds,
        .default_cmd = "sync",
        .holds_secrets = 1,
    };
    return kb_prog_main(argc, argv, &prog);
}
