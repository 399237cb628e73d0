/* ca_cmd_reg.c - keybridge-ca register | list | remove | renew-once | serve. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ca_api.h"
#include "ca_cmd.h"
#include "ca_policy.h"
#include "ca_renew.h"
#include "ca_target.h"
#include "lib/httpd.h"
#include "lib/log.h"
#include "lib/prog.h"

int ca_cmd_load_policy(const kb_config *cfg, ca_policy **out)
{
    const char *path = kb_config_str(cfg, "policy", "file");
    char err[256];

    *out = NULL;
    if (path == NULL) {
        fprintf(stderr, "keybridge-ca: [policy] file is required: without a policy every "
                        "registration is refused\n");
        return KB_EXIT_CONFIG;
    }
    if (ca_policy_load(path, out, err, sizeof(err)) != KB_OK) {
        fprintf(stderr, "keybridge-ca: policy %s: %s\n", path, err);
        return KB_EXIT_CONFIG;
    }
    return KB_EXIT_OK;
}

static void target_env(const kb_config *cfg, ca_authority *ca, const char *td, ca_target_env *e)
{
    memset(e, 0, sizeof(*e));
    e->region = kb_config_str(cfg, "aws", "region");
    e->endpoint = kb_config_str(cfg, "aws", "endpoint");
    e->credentials_file = kb_config_str(cfg, "aws", "credentials_file");
    e->role_arn = kb_config_str(cfg, "aws", "role_arn");
    e->external_id = kb_config_str(cfg, "aws", "external_id");
    e->sts_endpoint = kb_config_str(cfg, "aws", "sts_endpoint");
    e->trust_domain = ca ? ca_trust_domain(ca) : td;
}

int ca_cmd_register(const kb_config *cfg, int argc, char **argv)
{
    const char *id_s = NULL, *target = NULL, *why = NULL;
    int64_t ttl = kb_config_duration(cfg, "ca", "default_ttl"), avail = -1;
    char td[SPIFFE_TD_MAX + 1];
    char err[512];
    ca_policy *pol = NULL;
    ca_target_spec t;
    ca_ctx *x = NULL;
    spiffe_id id;
    ca_sans sans;
    ca_reg r;
    kb_err rc;
    int code;

    memset(&r, 0, sizeof(r));
    memset(&sans, 0, sizeof(sans));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            printf("usage: keybridge-ca register --spiffe-id ID --target TARGET [--ttl 1h]\n"
                   "       [--availability 30m] [--renewable] [--region R] [--endpoint URL]\n"
                   "       [--credentials-file FILE] [--dns NAME]... [--ip ADDR]...\n"
                   "       [--adopt-spire-svid]\n\n"
                   "TARGET is dir:/ABSOLUTE/PATH or secretsmanager:ACCOUNT:NAME. The policy\n"
                   "file decides which IDs may go to which targets, and which DNS names and IP\n"
                   "addresses (--dns, --ip: SANs for server SVIDs) they may carry; anything else\n"
                   "is refused. --adopt-spire-svid (Secrets Manager only; off by default) lets\n"
                   "the CA take over a secret SPIRE's SVIDStore plugin wrote (tag\n"
                   "spire-svid=true, no keybridge tags) when migrating from SPIRE.\n"
                   "The daemon (serve) writes the SVID and keeps it fresh.\n");
            return KB_EXIT_OK;
        } else if (strcmp(a, "--renewable") == 0) {
            r.renewable = 1;
            continue;
        } else if (strcmp(a, "--adopt-spire-svid") == 0) {
            r.adopt_spire = 1;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "keybridge-ca register: %s needs a value\n", a);
            return KB_EXIT_USAGE;
        }
        i++;
        if (strcmp(a, "--spiffe-id") == 0) {
            id_s = v;
        } else if (strcmp(a, "--target") == 0) {
            target = v;
        } else if (strcmp(a, "--ttl") == 0) {
            if (kb_parse_duration(v, &ttl) != KB_OK) {
                fprintf(stderr, "keybridge-ca register: --ttl takes a duration (30m, 1h)\n");
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(a, "--availability") == 0) {
            if (kb_parse_duration(v, &avail) != KB_OK) {
                fprintf(stderr, "keybridge-ca register: --availability takes a duration\n");
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(a, "--dns") == 0 || strcmp(a, "--ip") == 0) {
            if ((a[2] == 'd' ? ca_sans_add_dns(&sans, v, &why) : ca_sans_add_ip(&sans, v, &why)) !=
                KB_OK) {
                fprintf(stderr, "keybridge-ca register: %s %s: %s\n", a, v, why);
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(a, "--region") == 0 && strlen(v) < sizeof(r.region)) {
            snprintf(r.region, sizeof(r.region), "%s", v);
        } else if (strcmp(a, "--endpoint") == 0 && strlen(v) < sizeof(r.endpoint)) {
            snprintf(r.endpoint, sizeof(r.endpoint), "%s", v);
        } else if (strcmp(a, "--credentials-file") == 0 && strlen(v) < sizeof(r.creds_file)) {
            snprintf(r.creds_file, sizeof(r.creds_file), "%s", v);
        } else {
            fprintf(stderr, "keybridge-ca register: unexpected '%s'\n", a);
            return KB_EXIT_USAGE;
        }
    }
    if (id_s == NULL || target == NULL) {
        fprintf(stderr, "keybridge-ca register: --spiffe-id and --target are required\n");
        return KB_EXIT_USAGE;
    }
    if (spiffe_id_parse_str(id_s, &id, &why) != KB_OK) {
        fprintf(stderr, "keybridge-ca register: invalid SPIFFE ID: %s\n", why);
        return KB_EXIT_USAGE;
    }
    if (spiffe_id_is_root(&id)) {
        fprintf(stderr, "keybridge-ca register: invalid SPIFFE ID: a workload ID needs a path\n");
        return KB_EXIT_USAGE;
    }
    if (ca_target_parse(target, &t, &why) != KB_OK) {
        fprintf(stderr, "keybridge-ca register: invalid target: %s\n", why);
        return KB_EXIT_USAGE;
    }
    if (ttl < 60 || ttl > 30 * 86400) {
        fprintf(stderr, "keybridge-ca register: --ttl must be between 1m and 30d\n");
        return KB_EXIT_USAGE;
    }
    if (avail < 0)
        avail = ttl / 4;
    if (avail >= ttl) {
        fprintf(stderr, "keybridge-ca register: --availability must be shorter than --ttl\n");
        return KB_EXIT_USAGE;
    }
    if (r.adopt_spire && t.kind != CA_TARGET_SM) {
        fprintf(stderr, "keybridge-ca register: --adopt-spire-svid is for secretsmanager: "
                        "targets (SPIRE's SVIDStore secrets)\n");
        return KB_EXIT_USAGE;
    }
    if (r.renewable && t.kind != CA_TARGET_DIR) {
        fprintf(stderr, "keybridge-ca register: --renewable is for data-center workloads "
                        "(dir: targets); stored SVIDs are never renewed over the API\n");
        return KB_EXIT_USAGE;
    }
    if ((code = ca_cmd_load_policy(cfg, &pol)) != KB_EXIT_OK)
        return code;
    if ((code = ca_ctx_open(cfg, 0, &x)) != KB_EXIT_OK)
        goto out;
    if (ca_store_trust_domain(ca_ctx_store(x), td, sizeof(td)) != KB_OK ||
        !spiffe_id_member_of(&id, td)) {
        fprintf(stderr, "keybridge-ca register: %s is not in this CA's trust domain\n", id_s);
        code = KB_EXIT_DENIED;
        goto out;
    }
    if (ca_policy_check(pol, &id, &t, ttl, r.renewable, &why) != KB_OK) {
        fprintf(stderr, "keybridge-ca register: refused by policy: %s\n", why);
        kb_log(KB_LOG_WARN, "registration_refused", "spiffe_id", id_s, "target", target, "why", why,
               NULL);
        code = KB_EXIT_DENIED;
        goto out;
    }
    if (ca_policy_check_sans(pol, &id, &sans, err, sizeof(err)) != KB_OK) {
        fprintf(stderr, "keybridge-ca register: refused by policy: %s\n", err);
        kb_log(KB_LOG_WARN, "registration_refused", "spiffe_id", id_s, "target", target, "why", err,
               NULL);
        code = KB_EXIT_DENIED;
        goto out;
    }
    if (ca_sans_format(&sans, r.sans, sizeof(r.sans)) != KB_OK) {
        code = KB_EXIT_FAIL;
        goto out;
    }
    snprintf(r.spiffe_id, sizeof(r.spiffe_id), "%s", id_s);
    snprintf(r.target, sizeof(r.target), "%s", target);
    r.ttl = ttl;
    r.avail = avail;
    rc = ca_store_reg_add(ca_ctx_store(x), &r);
    if (rc != KB_OK) {
        fprintf(stderr, "keybridge-ca register: %s\n",
                rc == KB_ERR_EXISTS ? "already registered (same ID and target)" : kb_err_str(rc));
        code = rc == KB_ERR_EXISTS ? KB_EXIT_FAIL : kb_exit_code(rc);
        goto out;
    }
    kb_log(KB_LOG_INFO, "registered", "spiffe_id", id_s, "target", target, NULL);
    printf("%lld\n", (long long)r.rid);
out:
    ca_ctx_close(x);
    ca_policy_free(pol);
    return code;
}

int ca_cmd_list(const kb_config *cfg, int argc, char **argv)
{
    ca_ctx *x = NULL;
    ca_reg *r = NULL;
    size_t n = 0;
    int code;

    (void)argv;
    if (argc > 1) {
        printf("usage: keybridge-ca list\n\nOne registration per line: id, SPIFFE ID, target, "
               "ttl, availability, renewable, notAfter of the stored SVID, next renewal,\n"
               "failures, and the DNS/IP SANs if any.\n");
        return KB_EXIT_USAGE;
    }
    if ((code = ca_ctx_open(cfg, 0, &x)) != KB_EXIT_OK)
        return code;
    if (ca_store_reg_list(ca_ctx_store(x), &r, &n) != KB_OK) {
        ca_ctx_close(x);
        return KB_EXIT_FAIL;
    }
    for (size_t i = 0; i < n; i++)
        printf("%lld\t%s\t%s\tttl=%lld\tavailability=%lld\trenewable=%s\tnot_after=%lld\t"
               "next_renew=%lld\tfailures=%lld%s%s%s\n",
               (long long)r[i].rid, r[i].spiffe_id, r[i].target, (long long)r[i].ttl,
               (long long)r[i].avail, r[i].renewable ? "yes" : "no", (long long)r[i].not_after,
               (long long)r[i].next_renew, (long long)r[i].failures, r[i].sans[0] ? "\tsans=" : "",
               r[i].sans, r[i].adopt_spire ? "\tadopt_spire=yes" : "");
    free(r);
    ca_ctx_close(x);
    return KB_EXIT_OK;
}

int ca_cmd_remove(const kb_config *cfg, int argc, char **argv)
{
    char td[SPIFFE_TD_MAX + 1] = "";
    const char *why = NULL;
    ca_target_env env;
    int64_t rid = 0;
    ca_ctx *x = NULL;
    ca_reg r;
    kb_err rc;
    int code;

    if (argc != 3 || strcmp(argv[1], "--id") != 0 || kb_parse_int64(argv[2], &rid) != KB_OK) {
        printf("usage: keybridge-ca remove --id N\n\nRemove registration N (see list) and "
               "delete its stored SVID (Secrets Manager: 7-day recovery window).\n");
        return argc == 2 && strcmp(argv[1], "--help") == 0 ? KB_EXIT_OK : KB_EXIT_USAGE;
    }
    if ((code = ca_ctx_open(cfg, 0, &x)) != KB_EXIT_OK)
        return code;
    if (ca_store_trust_domain(ca_ctx_store(x), td, sizeof(td)) != KB_OK)
        td[0] = '\0';
    /* Row first (in the write lock), then the stored SVID: a renewal under way either wrote
     * before this and its write is deleted below, or sees the row gone and writes nothing. */
    rc = ca_store_reg_remove(ca_ctx_store(x), rid, &r);
    if (rc != KB_OK) {
        fprintf(stderr, "keybridge-ca remove: %s\n",
                rc == KB_ERR_NOT_FOUND ? "no such registration" : kb_err_str(rc));
        ca_ctx_close(x);
        return kb_exit_code(rc);
    }
    target_env(cfg, NULL, td, &env);
    rc = ca_target_remove(&env, &r, &why);
    if (rc != KB_OK) {
        fprintf(stderr,
                "keybridge-ca remove: registration removed, but the stored SVID was "
                "not deleted: %s\n",
                why ? why : kb_err_str(rc));
        code = kb_exit_code(rc);
    } else {
        kb_log(KB_LOG_INFO, "registration_removed", "spiffe_id", r.spiffe_id, "target", r.target,
               NULL);
        printf("removed %lld\n", (long long)rid);
    }
    ca_ctx_close(x);
    return code;
}

int ca_cmd_renew_once(const kb_config *cfg, int argc, char **argv)
{
    ca_policy *pol = NULL;
    ca_renewer *rn = NULL;
    ca_renew_opts ro;
    ca_ctx *x = NULL;
    int code, ok = 0, bad = 0, force = 0;
    kb_err rc;

    if (argc == 2 && strcmp(argv[1], "--force") == 0)
        force = 1;
    else if (argc > 1) {
        printf("usage: keybridge-ca renew-once [--force]\n\nOne pass of the renewal loop: renew "
               "every registration that is due (--force: every registration, e.g. after a\n"
               "suspected leaf key exposure), then exit (1 if any failed).\n");
        return KB_EXIT_USAGE;
    }
    if ((code = ca_cmd_load_policy(cfg, &pol)) != KB_EXIT_OK)
        return code;
    if ((code = ca_ctx_open(cfg, 1, &x)) != KB_EXIT_OK)
        goto out;
    memset(&ro, 0, sizeof(ro));
    ro.ca = ca_ctx_ca(x);
    ro.st = ca_ctx_store(x);
    ro.policy = pol;
    ro.tick = kb_config_duration(cfg, "renew", "tick");
    ro.force = force;
    target_env(cfg, ro.ca, NULL, &ro.env);
    if ((rc = ca_renewer_new(&ro, &rn)) == KB_OK)
        rc = ca_renew_pass(rn, time(NULL), &ok, &bad);
    printf("renewed %d failed %d\n", ok, bad);
    code = rc != KB_OK ? kb_exit_code(rc) : (bad ? KB_EXIT_FAIL : KB_EXIT_OK);
out:
    ca_renewer_free(rn);
    ca_ctx_close(x);
    ca_policy_free(pol);
    return code;
}

/* ---- serve --------------------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop;
static kb_httpd *volatile g_httpd, *volatile g_bundle_httpd;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
    if (g_httpd)
        kb_httpd_stop(g_httpd);
    if (g_bundle_httpd)
        kb_httpd_stop(g_bundle_httpd);
}

static void *httpd_thread(void *arg)
{
    kb_err rc = kb_httpd_run(arg);
    if (rc != KB_OK)
        kb_log(KB_LOG_ERROR, "httpd_stopped", "err", kb_err_str(rc), NULL);
    g_stop = 1;
    return NULL;
}

/* The federation bundle endpoint ([server] bundle_listen): TLS with the CA's server SVID, no
 * client certificate requested (SPIFFE_Federation.md 5.2.2.3), GET /v1/bundle only. The SVID
 * files are the mTLS listener's, reloaded by the layer when they change. */
static kb_err bundle_listener(const char *listen, const char *cert, const char *key, ca_api *api,
                              kb_httpd **out)
{
    kb_httpd_opts o;

    memset(&o, 0, sizeof(o));
    o.listen = listen;
    o.threads = 1;
    o.cert_file = cert;
    o.key_file = key;
    o.max_body_bytes = 1;
    o.handler = ca_api_bundle_handler;
    o.handler_arg = api;
    return kb_httpd_new(&o, out);
}

/* The CA's own server SVID, kept fresh in [server] svid_dir like a dir: registration. */
/* [server] svid_dns / svid_ip: comma-separated names for the CA's own server SVID, so clients
 * that check a host name (curl, https_web-style federation clients) accept its listeners. */
static int own_sans(const kb_config *cfg, ca_sans *sans)
{
    static const char *const key[2] = {"svid_dns", "svid_ip"};
    char item[CA_DNS_NAME_MAX + 2];
    const char *why = NULL;

    memset(sans, 0, sizeof(*sans));
    for (int k = 0; k < 2; k++) {
        const char *p = kb_config_str(cfg, "server", key[k]);
        while (p != NULL && *p != '\0') {
            size_t n = strcspn(p, ","), b = 0, e = n;
            while (b < e && p[b] == ' ')
                b++;
            while (e > b && p[e - 1] == ' ')
                e--;
            if (e - b >= sizeof(item)) {
                fprintf(stderr, "keybridge-ca serve: [server] %s: an entry is too long\n", key[k]);
                return KB_EXIT_CONFIG;
            }
            memcpy(item, p + b, e - b);
            item[e - b] = '\0';
            if ((k == 0 ? ca_sans_add_dns(sans, item, &why) : ca_sans_add_ip(sans, item, &why)) !=
                KB_OK) {
                fprintf(stderr, "keybridge-ca serve: [server] %s: '%s': %s\n", key[k], item, why);
                return KB_EXIT_CONFIG;
            }
            p += n + (p[n] == ',');
        }
    }
    return KB_EXIT_OK;
}

static kb_err own_svid(ca_authority *ca, const char *dir, const char *id_s, const ca_sans *sans,
                       int64_t ttl, int64_t *renew_at)
{
    ca_reg r;
    ca_svid sv;
    spiffe_id id;
    ca_target_env env;
    const char *why;
    kb_err rc;

    memset(&r, 0, sizeof(r));
    memset(&env, 0, sizeof(env));
    KB_GUARD(spiffe_id_parse_str(id_s, &id, &why));
    KB_ENSURE(snprintf(r.target, sizeof(r.target), "dir:%s", dir) < (int)sizeof(r.target),
              KB_ERR_TOO_LARGE);
    KB_GUARD(ca_issue_sans(ca, &id, sans, ttl, NULL, r.target, "server-svid", &sv));
    rc = ca_target_write(&env, &r, &sv, &why);
    *renew_at = (int64_t)time(NULL) + (sv.not_after - (int64_t)time(NULL)) / 2;
    ca_svid_clear(&sv);
    return rc;
}

int ca_cmd_serve(const kb_config *cfg, int argc, char **argv)
{
    const char *svid_dir = kb_config_str(cfg, "server", "svid_dir");
    const char *own_id = kb_config_str(cfg, "server", "spiffe_id");
    int64_t tick = kb_config_duration(cfg, "renew", "tick"), own_renew = 0;
    int64_t svid_ttl = kb_config_duration(cfg, "server", "svid_ttl");
    int64_t threads = kb_config_int(cfg, "server", "threads");
    char idbuf[SPIFFE_ID_MAX + 1], cert[4096], key[4096], bundle[4096], port[16];
    ca_policy *pol = NULL;
    ca_renewer *rn = NULL;
    ca_api *api = NULL;
    kb_httpd *h = NULL;
    ca_renew_opts ro;
    ca_api_opts ao;
    kb_httpd_opts ho;
    ca_ctx *x = NULL;
    const char *bundle_listen = kb_config_str(cfg, "server", "bundle_listen");
    kb_httpd *bh = NULL;
    const char *why = NULL;
    char err[512];
    ca_sans osans;
    spiffe_id oid;
    pthread_t th, bth;
    int code, started = 0, bstarted = 0;
    struct sigaction sa;
    kb_err rc;

    (void)argv;
    if (argc > 1) {
        printf("usage: keybridge-ca serve\n\nRun the renewal daemon and the mTLS API "
               "([server] listen). The CA keeps its own server SVID in [server] svid_dir.\n");
        return KB_EXIT_USAGE;
    }
    if (svid_dir == NULL) {
        fprintf(stderr, "keybridge-ca serve: [server] svid_dir is required\n");
        return KB_EXIT_CONFIG;
    }
    if (svid_ttl < CA_MIN_SERVER_SVID_TTL || svid_ttl > CA_MAX_SERVER_SVID_TTL) {
        fprintf(stderr, "keybridge-ca serve: [server] svid_ttl must be between %ds and %dd\n",
                CA_MIN_SERVER_SVID_TTL, CA_MAX_SERVER_SVID_TTL / 86400);
        return KB_EXIT_CONFIG;
    }
    if (tick < 1 || threads < 1 || threads > KB_HTTPD_MAX_THREADS) {
        fprintf(stderr, "keybridge-ca serve: [renew] tick >= 1s, [server] threads 1..%d\n",
                KB_HTTPD_MAX_THREADS);
        return KB_EXIT_CONFIG;
    }
    if ((code = ca_cmd_load_policy(cfg, &pol)) != KB_EXIT_OK)
        return code;
    if ((code = ca_ctx_open(cfg, 1, &x)) != KB_EXIT_OK)
        goto out;
    if (own_id == NULL) {
        snprintf(idbuf, sizeof(idbuf), "spiffe://%s/keybridge-ca", ca_trust_domain(ca_ctx_ca(x)));
        own_id = idbuf;
    }
    if ((code = own_sans(cfg, &osans)) != KB_EXIT_OK)
        goto out;
    if (spiffe_id_parse_str(own_id, &oid, &why) != KB_OK) {
        fprintf(stderr, "keybridge-ca serve: [server] spiffe_id: %s\n", why);
        code = KB_EXIT_CONFIG;
        goto out;
    }
    if (ca_policy_check_sans(pol, &oid, &osans, err, sizeof(err)) != KB_OK) {
        fprintf(stderr, "keybridge-ca serve: the server SVID's names are refused by policy: %s\n",
                err);
        code = KB_EXIT_DENIED;
        goto out;
    }
    code = KB_EXIT_FAIL;
    if ((rc = own_svid(ca_ctx_ca(x), svid_dir, own_id, &osans, svid_ttl, &own_renew)) != KB_OK) {
        fprintf(stderr, "keybridge-ca serve: cannot write the server SVID into %s: %s\n", svid_dir,
                kb_err_str(rc));
        code = kb_exit_code(rc);
        goto out;
    }
    memset(&ro, 0, sizeof(ro));
    ro.ca = ca_ctx_ca(x);
    ro.st = ca_ctx_store(x);
    ro.policy = pol;
    ro.tick = tick;
    target_env(cfg, ro.ca, NULL, &ro.env);
    if (ca_renewer_new(&ro, &rn) != KB_OK)
        goto out;
    memset(&ao, 0, sizeof(ao));
    ao.ca = ro.ca;
    ao.st = ro.st;
    ao.renewer = rn;
    ao.min_interval = kb_config_duration(cfg, "renew", "api_min_interval");
    if (ca_api_new(&ao, &api) != KB_OK)
        goto out;
    snprintf(cert, sizeof(cert), "%s/svid.pem", svid_dir);
    snprintf(key, sizeof(key), "%s/svid.key", svid_dir);
    snprintf(bundle, sizeof(bundle), "%s/bundle.pem", svid_dir);
    memset(&ho, 0, sizeof(ho));
    ho.listen = kb_config_str(cfg, "server", "listen");
    ho.threads = (int)threads;
    ho.cert_file = cert;
    ho.key_file = key;
    ho.client_ca_file = bundle;
    ho.verify_peer = ca_api_verify_peer;
    ho.verify_arg = api;
    ho.max_body_bytes = 64 * 1024;
    ho.handler = ca_api_handler;
    ho.handler_arg = api;
    if ((rc = kb_httpd_new(&ho, &h)) != KB_OK) {
        fprintf(stderr, "keybridge-ca serve: cannot listen on %s: %s\n", ho.listen, kb_err_str(rc));
        code = kb_exit_code(rc);
        goto out;
    }
    if (bundle_listen != NULL &&
        (rc = bundle_listener(bundle_listen, cert, key, api, &bh)) != KB_OK) {
        fprintf(stderr, "keybridge-ca serve: cannot listen on [server] bundle_listen %s: %s\n",
                bundle_listen, kb_err_str(rc));
        code = kb_exit_code(rc);
        goto out;
    }
    g_httpd = h;
    g_bundle_httpd = bh;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (pthread_create(&th, NULL, httpd_thread, h) != 0)
        goto out;
    started = 1;
    snprintf(port, sizeof(port), "%d", kb_httpd_port(h));
    kb_log(KB_LOG_INFO, "listening", "listen", ho.listen, "port", port, "spiffe_id", own_id, NULL);
    if (bh != NULL) {
        if (pthread_create(&bth, NULL, httpd_thread, bh) != 0)
            goto out;
        bstarted = 1;
        snprintf(port, sizeof(port), "%d", kb_httpd_port(bh));
        kb_log(KB_LOG_INFO, "bundle_endpoint_listening", "listen", bundle_listen, "port", port,
               "profile", "https_spiffe", "spiffe_id", own_id, NULL);
    }
    while (!g_stop) {
        int changed = 0, ok = 0, bad = 0;
        time_t now = time(NULL);
        if (ca_reload(ro.ca, &changed) == KB_OK && changed) {
            kb_log(KB_LOG_INFO, "ca_state_changed", NULL);
            if (ca_api_refresh_bundle(api) != KB_OK)
                kb_log(KB_LOG_ERROR, "bundle_refresh_failed", NULL);
            own_renew = 0;
        }
        if ((int64_t)now >= own_renew &&
            own_svid(ro.ca, svid_dir, own_id, &osans, svid_ttl, &own_renew) != KB_OK) {
            kb_log(KB_LOG_ERROR, "server_svid_renewal_failed", NULL);
            own_renew = (int64_t)now + 5;
        }
        if (ca_renew_pass(rn, now, &ok, &bad) != KB_OK)
            kb_log(KB_LOG_ERROR, "renewal_pass_failed", NULL);
        for (int64_t i = 0; i < tick * 10 && !g_stop; i++)
            usleep(100000);
    }
    code = KB_EXIT_OK;
out:
    if (h != NULL)
        kb_httpd_stop(h);
    if (bh != NULL)
        kb_httpd_stop(bh);
    if (started)
        pthread_join(th, NULL);
    if (bstarted)
        pthread_join(bth, NULL);
    g_httpd = NULL;
    g_bundle_httpd = NULL;
    kb_httpd_free(h);
    kb_httpd_free(bh);
    ca_api_free(api);
    ca_renewer_free(rn);
    ca_ctx_close(x);
    ca_policy_free(pol);
    kb_log(KB_LOG_INFO, "stopped", NULL);
    return code;
}
