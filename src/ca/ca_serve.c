/* ca_serve.c - `keybridge-ca serve`: the renewal daemon, the mTLS API ([server] listen) and the
 * federation bundle endpoint ([server] bundle_listen), started and stopped by kb_prog_serve.
 *
 * The CA keeps its own server SVID in [server] svid_dir, renewed at half its life like a dir:
 * registration; the renewal loop runs in the calling thread, the listeners in their own. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ca_api.h"
#include "ca_cmd.h"
#include "ca_config.h"
#include "ca_policy.h"
#include "ca_renew.h"
#include "ca_sans.h"
#include "ca_target.h"
#include "lib/httpd.h"
#include "lib/log.h"
#include "lib/prog.h"

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

/* What the renewal loop needs (kb_prog_serve's loop). */
typedef struct {
    ca_authority *ca;
    ca_api *api;
    ca_renewer *rn;
    const char *svid_dir, *own_id;
    const ca_sans *osans;
    int64_t svid_ttl, tick, own_renew;
} ca_serve_loop;

/* Every [renew] tick until stopped: pick up a CA change (bundle, own SVID), renew the CA's own
 * server SVID when due, and one renewal pass. */
static kb_err renew_loop(void *arg)
{
    ca_serve_loop *l = arg;
    while (!kb_prog_stopping()) {
        int changed = 0, ok = 0, bad = 0;
        time_t now = time(NULL);
        if (ca_reload(l->ca, &changed) == KB_OK && changed) {
            kb_log(KB_LOG_INFO, "ca_state_changed", NULL);
            if (ca_api_refresh_bundle(l->api) != KB_OK)
                kb_log(KB_LOG_ERROR, "bundle_refresh_failed", NULL);
            l->own_renew = 0;
        }
        if ((int64_t)now >= l->own_renew && own_svid(l->ca, l->svid_dir, l->own_id, l->osans,
                                                     l->svid_ttl, &l->own_renew) != KB_OK) {
            kb_log(KB_LOG_ERROR, "server_svid_renewal_failed", NULL);
            l->own_renew = (int64_t)now + 5;
        }
        if (ca_renew_pass(l->rn, now, &ok, &bad) != KB_OK)
            kb_log(KB_LOG_ERROR, "renewal_pass_failed", NULL);
        for (int64_t i = 0; i < l->tick * 10 && !kb_prog_stopping(); i++)
            usleep(100000);
    }
    return KB_OK;
}

int ca_cmd_serve(const kb_config *cfg, int argc, char **argv)
{
    ca_serve_config sc;
    const char *own_id;
    int64_t own_renew = 0;
    char idbuf[SPIFFE_ID_MAX + 1], cert[4096], key[4096], bundle[4096], port[16];
    ca_policy *pol = NULL;
    ca_renewer *rn = NULL;
    ca_api *api = NULL;
    kb_httpd *h = NULL;
    ca_renew_opts ro;
    ca_api_opts ao;
    kb_httpd_opts ho;
    ca_ctx *x = NULL;
    kb_httpd *bh = NULL;
    const char *why = NULL;
    char err[512];
    spiffe_id oid;
    ca_serve_loop loop;
    kb_serve ks;
    int code;
    kb_err rc;

    (void)argv;
    if (argc > 1) {
        printf("usage: keybridge-ca serve\n\nRun the renewal daemon and the mTLS API "
               "([server] listen). The CA keeps its own server SVID in [server] svid_dir.\n");
        return KB_EXIT_USAGE;
    }
    if (ca_config_serve(cfg, &sc, err, sizeof(err)) != KB_OK) {
        fprintf(stderr, "keybridge-ca serve: %s\n", err);
        return KB_EXIT_CONFIG;
    }
    own_id = sc.own_id;
    kb_prog_serve_prepare();
    if ((code = ca_cmd_load_policy(cfg, &pol)) != KB_EXIT_OK)
        return code;
    if ((code = ca_ctx_open(cfg, 1, &x)) != KB_EXIT_OK)
        goto out;
    if (own_id == NULL) {
        snprintf(idbuf, sizeof(idbuf), "spiffe://%s/keybridge-ca", ca_trust_domain(ca_ctx_ca(x)));
        own_id = idbuf;
    }
    if (spiffe_id_parse_str(own_id, &oid, &why) != KB_OK) {
        fprintf(stderr, "keybridge-ca serve: [server] spiffe_id: %s\n", why);
        code = KB_EXIT_CONFIG;
        goto out;
    }
    if (ca_policy_check_sans(pol, &oid, &sc.sans, err, sizeof(err)) != KB_OK) {
        fprintf(stderr, "keybridge-ca serve: the server SVID's names are refused by policy: %s\n",
                err);
        code = KB_EXIT_DENIED;
        goto out;
    }
    code = KB_EXIT_FAIL;
    if ((rc = own_svid(ca_ctx_ca(x), sc.svid_dir, own_id, &sc.sans, sc.svid_ttl, &own_renew)) !=
        KB_OK) {
        fprintf(stderr, "keybridge-ca serve: cannot write the server SVID into %s: %s\n",
                sc.svid_dir, kb_err_str(rc));
        code = kb_exit_code(rc);
        goto out;
    }
    memset(&ro, 0, sizeof(ro));
    ro.ca = ca_ctx_ca(x);
    ro.st = ca_ctx_store(x);
    ro.policy = pol;
    ro.tick = sc.tick;
    ro.lease = sc.lease;
    ca_cmd_target_env(cfg, ro.ca, NULL, &ro.env);
    if (ca_renewer_new(&ro, &rn) != KB_OK)
        goto out;
    memset(&ao, 0, sizeof(ao));
    ao.ca = ro.ca;
    ao.st = ro.st;
    ao.renewer = rn;
    ao.min_interval = sc.api_min_interval;
    if (ca_api_new(&ao, &api) != KB_OK)
        goto out;
    snprintf(cert, sizeof(cert), "%s/svid.pem", sc.svid_dir);
    snprintf(key, sizeof(key), "%s/svid.key", sc.svid_dir);
    snprintf(bundle, sizeof(bundle), "%s/bundle.pem", sc.svid_dir);
    memset(&ho, 0, sizeof(ho));
    ho.listen = sc.listen;
    ho.threads = sc.threads;
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
    if (sc.bundle_listen != NULL &&
        (rc = bundle_listener(sc.bundle_listen, cert, key, api, &bh)) != KB_OK) {
        fprintf(stderr, "keybridge-ca serve: cannot listen on [server] bundle_listen %s: %s\n",
                sc.bundle_listen, kb_err_str(rc));
        code = kb_exit_code(rc);
        goto out;
    }
    snprintf(port, sizeof(port), "%d", kb_httpd_port(h));
    kb_log(KB_LOG_INFO, "listening", "listen", ho.listen, "port", port, "spiffe_id", own_id, NULL);
    if (bh != NULL) {
        snprintf(port, sizeof(port), "%d", kb_httpd_port(bh));
        kb_log(KB_LOG_INFO, "bundle_endpoint_listening", "listen", sc.bundle_listen, "port", port,
               "profile", "https_spiffe", "spiffe_id", own_id, NULL);
    }
    memset(&loop, 0, sizeof(loop));
    loop.ca = ro.ca;
    loop.api = api;
    loop.rn = rn;
    loop.svid_dir = sc.svid_dir;
    loop.own_id = own_id;
    loop.osans = &sc.sans;
    loop.svid_ttl = sc.svid_ttl;
    loop.tick = sc.tick;
    loop.own_renew = own_renew;
    memset(&ks, 0, sizeof(ks));
    ks.listeners[0] = h;
    ks.listeners[1] = bh;
    ks.loop = renew_loop;
    ks.arg = &loop;
    rc = kb_prog_serve(&ks);
    code = rc == KB_OK ? KB_EXIT_OK : KB_EXIT_FAIL;
out:
    kb_httpd_free(h);
    kb_httpd_free(bh);
    ca_api_free(api);
    ca_renewer_free(rn);
    ca_ctx_close(x);
    ca_policy_free(pol);
    kb_log(KB_LOG_INFO, "stopped", NULL);
    return code;
}
