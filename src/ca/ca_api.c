/* ca_api.c - the mTLS API (see ca_api.h). */
#include "ca_api.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca_cert.h"
#include "ca_csr.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/x509svid.h"

#define RATE_SLOTS 4096

struct rate_ent {
    char id[SPIFFE_ID_MAX + 1];
    time_t last;
    struct rate_ent *next;
};

struct ca_api {
    ca_api_opts o;
    pthread_mutex_t mu;
    spiffe_bundle_set *bundles;
    struct rate_ent *rate[RATE_SLOTS];
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
    for (size_t i = 0; i < RATE_SLOTS; i++) {
        struct rate_ent *e = a->rate[i], *n;
        for (; e != NULL; e = n) {
            n = e->next;
            free(e);
        }
    }
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

static uint32_t fnv(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* 1 if id may renew now (and records it), 0 if it renewed less than min_interval ago. */
static int rate_take(ca_api *a, const char *id, time_t now)
{
    struct rate_ent **pp, *e;
    int ok = 1;

    if (a->o.min_interval <= 0)
        return 1;
    pthread_mutex_lock(&a->mu);
    pp = &a->rate[fnv(id) % RATE_SLOTS];
    for (e = *pp; e != NULL && strcmp(e->id, id) != 0; e = e->next)
        ;
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e != NULL) {
            snprintf(e->id, sizeof(e->id), "%s", id);
            e->next = *pp;
            *pp = e;
        }
    }
    if (e != NULL) {
        if (e->last != 0 && now - e->last < a->o.min_interval)
            ok = 0;
        else
            e->last = now;
    }
    pthread_mutex_unlock(&a->mu);
    return ok;
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
    if (!rate_take(a, peer, now)) {
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
