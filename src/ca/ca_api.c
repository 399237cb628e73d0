/* ca_api.c - the mTLS API (see ca_api.h). */
#include "ca_api.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca_cert.h"
#include "ca_csr.h"
#include "lib/idtable.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/x509svid.h"

/* ---- renewal interval per SPIFFE ID (a bounded lib/idtable.h of last renewal times) ---------- */

struct ca_renew_rate {
    pthread_mutex_t mu;
    int64_t min_interval;
    kb_idtable *ids; /* of time_t: the last renewal */
};

typedef struct {
    time_t now;
    int64_t min_interval;
} rate_now;

/* An ID whose interval has passed is what a new entry would be (idle); otherwise the one that
 * renewed longest ago goes first. Never refuses a new ID: at the bound a renewal is let through
 * rather than a workload locked out of its SVID. */
static double rate_idle(void *val, void *arg)
{
    const rate_now *rn = arg;
    double elapsed = (double)(rn->now - *(time_t *)val);
    if (elapsed >= (double)rn->min_interval)
        return 1;
    return elapsed > 0 ? elapsed / (double)rn->min_interval : 0;
}

kb_err ca_renew_rate_new(int64_t min_interval, size_t max_ids, ca_renew_rate **out)
{
    ca_renew_rate *r;
    const kb_idtable_opts to = {.max = max_ids ? max_ids : CA_API_RENEW_IDS_DEFAULT,
                                .id_max = SPIFFE_ID_MAX,
                                .val_size = sizeof(time_t),
                                .idle = rate_idle};
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(min_interval >= 0, KB_ERR_CONFIG);
    r = calloc(1, sizeof(*r));
    KB_ENSURE(r != NULL, KB_ERR_NOMEM);
    r->min_interval = min_interval;
    if (kb_idtable_new(&to, &r->ids) != KB_OK || pthread_mutex_init(&r->mu, NULL) != 0) {
        kb_idtable_free(r->ids);
        free(r);
        return KB_ERR_NOMEM;
    }
    *out = r;
    return KB_OK;
}

void ca_renew_rate_free(ca_renew_rate *r)
{
    if (r == NULL)
        return;
    kb_idtable_free(r->ids);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int ca_renew_rate_take(ca_renew_rate *r, const char *id, time_t now)
{
    rate_now rn = {now, r->min_interval};
    void *v = NULL;
    bool created = false;
    int ok = 1;

    if (r->min_interval <= 0)
        return 1;
    pthread_mutex_lock(&r->mu);
    /* An ID the table cannot hold (too long: the handshake refuses those first) renews unmetered,
     * as when an entry could not be allocated. */
    if (kb_idtable_get(r->ids, id, &rn, &v, &created) == KB_OK) {
        time_t *last = v;
        if (!created && now - *last < r->min_interval)
            ok = 0;
        else
            *last = now;
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

size_t ca_renew_rate_count(ca_renew_rate *r)
{
    size_t n;
    pthread_mutex_lock(&r->mu);
    n = kb_idtable_count(r->ids);
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* ---- the API ------------------------------------------------------------------------------- */

struct ca_api {
    ca_api_opts o;
    pthread_mutex_t mu;
    spiffe_bundle_set *bundles;
    ca_renew_rate *rate;
};

kb_err ca_api_new(const ca_api_opts *o, ca_api **out)
{
    ca_api *a;
    kb_err rc;

    KB_ENSURE_REF(o);
    a = calloc(1, sizeof(*a));
    KB_ENSURE(a != NULL, KB_ERR_NOMEM);
    a->o = *o;
    pthread_mutex_init(&a->mu, NULL);
    rc = ca_renew_rate_new(o->min_interval, o->max_ids, &a->rate);
    if (rc == KB_OK)
        rc = ca_bundle_set(o->ca, &a->bundles);
    if (rc != KB_OK) {
        ca_api_free(a);
        return rc;
    }
    *out = a;
    return KB_OK;
}

void ca_api_free(ca_api *a)
{
    if (a == NULL)
        return;
    ca_renew_rate_free(a->rate);
    spiffe_bundle_set_free(a->bundles);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

kb_err ca_api_refresh_bundle(ca_api *a)
{
    spiffe_bundle_set *n = NULL, *old;

    KB_GUARD(ca_bundle_set(a->o.ca, &n));
    pthread_mutex_lock(&a->mu);
    old = a->bundles;
    a->bundles = n;
    pthread_mutex_unlock(&a->mu);
    spiffe_bundle_set_free(old);
    return KB_OK;
}

int ca_api_verify_peer(void *arg, X509 *leaf, STACK_OF(X509) * chain, char *id, size_t id_len,
                       const char **why)
{
    ca_api *a = arg;
    spiffe_bundle_set *bs;
    spiffe_id pid;
    kb_err rc;

    pthread_mutex_lock(&a->mu);
    bs = a->bundles;
    spiffe_bundle_set_up_ref(bs);
    pthread_mutex_unlock(&a->mu);
    rc = x509svid_verify(bs, leaf, chain, X509SVID_PURPOSE_CLIENT, 0, &pid, why);
    spiffe_bundle_set_free(bs);
    if (rc != KB_OK)
        return 0;
    if (spiffe_id_len(&pid) + 1 > id_len) {
        *why = "SPIFFE ID too long";
        return 0;
    }
    memcpy(id, spiffe_id_str(&pid), spiffe_id_len(&pid) + 1);
    return 1;
}

static time_t asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    return ASN1_TIME_to_tm(t, &tm) == 1 ? timegm(&tm) : 0;
}

static void do_renew(ca_api *a, kb_http_req *req)
{
    const char *peer = kb_http_req_peer_id(req), *why = NULL;
    X509 *cur = kb_http_req_peer_cert(req);
    const uint8_t *body;
    size_t blen;
    int64_t ttl = 0;
    EVP_PKEY *pub = NULL;
    spiffe_id id;
    ca_svid sv;
    time_t now = time(NULL), nb, na;
    json_t *o = NULL;
    char exp[32], sans_s[CA_REG_SANS_MAX];
    ca_sans sans;
    kb_err rc;

    memset(&sv, 0, sizeof(sv));
    if (peer == NULL || cur == NULL || spiffe_id_parse_str(peer, &id, &why) != KB_OK) {
        kb_http_reply_error(req, 401, "unauthenticated", "a client SVID is required");
        return;
    }
    rc = ca_store_reg_renewable(a->o.st, peer, &ttl, sans_s, sizeof(sans_s));
    if (rc != KB_OK && rc != KB_ERR_NOT_FOUND) {
        kb_http_reply_error(req, 500, "internal", "registration lookup failed");
        return;
    }
    if (rc == KB_ERR_NOT_FOUND) {
        kb_log(KB_LOG_WARN, "api_renew_denied", "spiffe_id", peer, "why", "not renewable", NULL);
        kb_http_reply_error(req, 403, "denied",
                            "no renewable registration for this SPIFFE ID (stored SVIDs are "
                            "renewed by the CA, never over the API)");
        goto out;
    }
    nb = asn1_time(X509_get0_notBefore(cur));
    na = asn1_time(X509_get0_notAfter(cur));
    if (na <= nb || (now - nb) * 3 < (na - nb)) {
        kb_http_reply_error(req, 429, "too_early",
                            "renewal allowed only after a third of the current lifetime");
        goto out;
    }
    if (a->o.renewer != NULL && ca_renew_backlog(a->o.renewer) > 0) {
        kb_http_set_header(req, "Retry-After", "1");
        kb_http_reply_error(req, 503, "busy", "stored-SVID renewals go first; retry shortly");
        goto out;
    }
    kb_http_req_body(req, &body, &blen);
    rc = ca_csr_parse(body, blen, &id, &pub, &why);
    if (rc != KB_OK) {
        kb_http_reply_error(req, rc == KB_ERR_DENIED ? 403 : 400, "bad_csr", why);
        goto out;
    }
    if (!ca_renew_rate_take(a->rate, peer, now)) {
        kb_http_set_header(req, "Retry-After", "10");
        kb_http_reply_error(req, 429, "rate_limited", "renewal rate limit for this SPIFFE ID");
        goto out;
    }
    /* The registration's DNS/IP SANs (checked against the policy when it was registered and at
     * every renewal pass) come back in the renewed SVID; a CSR contributes only its key. */
    if (ca_sans_parse(sans_s, &sans, &why) != KB_OK) {
        kb_http_reply_error(req, 500, "internal", "stored SANs of the registration are invalid");
        goto out;
    }
    rc = ca_issue_sans(a->o.ca, &id, &sans, ttl, pub, "api", "api-renew", &sv);
    if (rc == KB_ERR_CONFIG && ca_is_pca(a->o.ca)) {
        kb_http_reply_error(req, 501, "not_supported",
                            "this CA signs with AWS Private CA, which certifies only a key whose "
                            "own CSR it receives: no renewal over the API");
        goto out;
    }
    if (rc != KB_OK) {
        kb_http_reply_error(req, 500, "issue_failed", kb_err_str(rc));
        goto out;
    }
    snprintf(exp, sizeof(exp), "%lld", (long long)sv.not_after);
    o = json_pack("{s:s,s:s,s:s,s:s,s:I}", "spiffe_id", peer, "svid", sv.chain_pem, "bundle",
                  sv.bundle_pem, "serial", sv.serial, "expires_at", (json_int_t)sv.not_after);
    if (o == NULL)
        kb_http_reply_error(req, 500, "internal", "out of memory");
    else
        kb_http_reply_json(req, 200, o);
out:
    json_decref(o);
    ca_svid_clear(&sv);
    EVP_PKEY_free(pub);
}

static void do_bundle(ca_api *a, kb_http_req *req)
{
    const char *q = kb_http_req_query(req), *acc = kb_http_req_header(req, "Accept");
    int pem = strcmp(q, "format=pem") == 0 || (acc && strstr(acc, "application/x-pem-file"));
    kb_dbuf b;
    kb_err rc;

    kb_dbuf_init(&b, 4 * 1024 * 1024);
    rc = pem ? ca_bundle_pem(a->o.ca, &b) : ca_bundle_jwks(a->o.ca, &b);
    if (rc != KB_OK)
        kb_http_reply_error(req, 500, "internal", "bundle unavailable");
    else
        kb_http_reply(req, 200, pem ? "application/x-pem-file" : "application/json", b.p, b.len);
    kb_dbuf_free(&b);
}

static void do_metrics(ca_api *a, kb_http_req *req)
{
    int64_t minrem = -1;
    uint64_t fails = 0, ren = 0;
    char buf[1024];
    int n;

    if (a->o.renewer)
        ca_renew_metrics(a->o.renewer, &minrem, &fails, &ren);
    n = snprintf(buf, sizeof(buf),
                 "# TYPE keybridge_ca_svid_min_remaining_seconds gauge\n"
                 "keybridge_ca_svid_min_remaining_seconds %lld\n"
                 "# TYPE keybridge_ca_renewal_failures_total counter\n"
                 "keybridge_ca_renewal_failures_total %llu\n"
                 "# TYPE keybridge_ca_renewals_total counter\n"
                 "keybridge_ca_renewals_total %llu\n"
                 "# TYPE keybridge_ca_bundle_sequence gauge\n"
                 "keybridge_ca_bundle_sequence %lld\n",
                 (long long)minrem, (unsigned long long)fails, (unsigned long long)ren,
                 (long long)ca_bundle_sequence(a->o.ca));
    kb_http_reply(req, 200, "text/plain; version=0.0.4", buf, (size_t)n);
}

void ca_api_handler(kb_http_req *req, void *arg)
{
    ca_api *a = arg;
    const char *m = kb_http_req_method(req), *p = kb_http_req_path(req);

    if (strcmp(p, "/v1/svid/renew") == 0) {
        if (strcmp(m, "POST") != 0)
            kb_http_reply_error(req, 405, "method_not_allowed", "use POST");
        else
            do_renew(a, req);
    } else if (strcmp(p, CA_API_BUNDLE_PATH) == 0) {
        if (strcmp(m, "GET") != 0)
            kb_http_reply_error(req, 405, "method_not_allowed", "use GET");
        else
            do_bundle(a, req);
    } else if (strcmp(p, "/metrics") == 0 && strcmp(m, "GET") == 0) {
        do_metrics(a, req);
    } else {
        kb_http_reply_error(req, 404, "not_found", "no such endpoint");
    }
}

/* The federation bundle endpoint (SPIFFE_Federation.md 5.2.2, https_spiffe): one path, GET only,
 * on a listener that asks for no client certificate (5.2.2.3: servers MUST NOT require client
 * authentication there). Nothing else is reachable through it. */
void ca_api_bundle_handler(kb_http_req *req, void *arg)
{
    ca_api *a = arg;
    const char *m = kb_http_req_method(req), *p = kb_http_req_path(req);

    if (strcmp(p, CA_API_BUNDLE_PATH) != 0)
        kb_http_reply_error(req, 404, "not_found", "only " CA_API_BUNDLE_PATH " is served here");
    else if (strcmp(m, "GET") != 0)
        kb_http_reply_error(req, 405, "method_not_allowed", "use GET");
    else
        do_bundle(a, req);
}
