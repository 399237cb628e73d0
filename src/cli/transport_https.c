/* transport_https.c - the CLI's remote transport: libcurl over mTLS with the CLI's own SVID,
 * pinning keybridged's SPIFFE ID.
 *
 * The server is verified as an X509-SVID (x509svid_verify, purpose server) against the bundle
 * of server_id's trust domain, and its SPIFFE ID must equal [client] server_id exactly
 * (DESIGN.md, Identity: "clients also pin the server's SPIFFE ID, so a workload holding any
 * valid SVID cannot pose as keybridged"). OpenSSL's own chain building and curl's host name
 * check are replaced by that (SSL_CTX_set_cert_verify_callback): SVIDs carry no DNS names.
 */
#include <curl/curl.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lib/buf.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/spiffe_bundle.h"
#include "lib/spiffe_id.h"
#include "lib/x509svid.h"

#define HTTPS_RESPONSE_MAX ((size_t)64 * 1024 * 1024)

typedef struct {
    const char *server_id;
    spiffe_bundle_set *bs;
    x509svid *svid;
    char why[512];
    int verified;
} tls_pin;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int verify_server(X509_STORE_CTX *xs, void *arg)
{
    tls_pin *p = arg;
    spiffe_id id;
    const char *why = NULL;
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_untrusted(xs);

    if (leaf == NULL) {
        snprintf(p->why, sizeof(p->why), "server sent no certificate");
        return 0;
    }
    if (x509svid_verify(p->bs, leaf, chain, X509SVID_PURPOSE_SERVER, 0, &id, &why) != KB_OK) {
        snprintf(p->why, sizeof(p->why), "server certificate refused: %s", why ? why : "?");
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (strcmp(spiffe_id_str(&id), p->server_id) != 0) {
        snprintf(p->why, sizeof(p->why), "server identity mismatch: expected %s, got %s",
                 p->server_id, spiffe_id_str(&id));
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    p->verified = 1;
    return 1;
}

/* Called by curl once the SSL_CTX is set up, before the handshake. */
static CURLcode ssl_ctx_cb(CURL *curl, void *ctxp, void *arg)
{
    SSL_CTX *ctx = ctxp;
    tls_pin *p = arg;
    STACK_OF(X509) *inter = x509svid_intermediates(p->svid);
    (void)curl;
    if (SSL_CTX_use_certificate(ctx, x509svid_leaf(p->svid)) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, x509svid_key(p->svid)) != 1)
        return CURLE_SSL_CERTPROBLEM;
    SSL_CTX_clear_chain_certs(ctx);
    for (int i = 0; i < sk_X509_num(inter); i++)
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(inter, i)) != 1)
            return CURLE_SSL_CERTPROBLEM;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, verify_server, p);
    return CURLE_OK;
}

typedef struct {
    kb_dbuf body;
    int64_t retry_after;
} sink;

static size_t on_body(char *ptr, size_t size, size_t n, void *arg)
{
    sink *s = arg;
    size_t len = size * n;
    return kb_dbuf_add(&s->body, ptr, len) == KB_OK ? len : 0;
}

static size_t on_header(char *ptr, size_t size, size_t n, void *arg)
{
    sink *s = arg;
    size_t len = size * n;
    static const char ra[] = "retry-after:";
    if (len > sizeof(ra) - 1 && strncasecmp(ptr, ra, sizeof(ra) - 1) == 0) {
        char num[24];
        size_t k = 0;
        for (size_t i = sizeof(ra) - 1; i < len && k + 1 < sizeof(num); i++)
            if (ptr[i] >= '0' && ptr[i] <= '9')
                num[k++] = ptr[i];
        num[k] = '\0';
        if (k > 0 && kb_parse_int64(num, &s->retry_after) != KB_OK)
            s->retry_after = 0;
    }
    return len;
}

static kb_err pin_setup(cli *c, tls_pin *p)
{
    const char *cert = kb_config_str(c->cfg, "client", "cert_file");
    const char *key = kb_config_str(c->cfg, "client", "key_file");
    const char *bundle = kb_config_str(c->cfg, "client", "bundle_file");
    const char *why = NULL;
    spiffe_id sid;
    spiffe_bundle *b = NULL;
    kb_err rc;

    p->server_id = kb_config_str(c->cfg, "client", "server_id");
    if (p->server_id == NULL || cert == NULL || key == NULL || bundle == NULL) {
        fprintf(stderr, "keybridge: remote mode needs [client] server_id, cert_file, key_file and "
                        "bundle_file (or --local)\n");
        return KB_ERR_CONFIG;
    }
    if (spiffe_id_parse_str(p->server_id, &sid, &why) != KB_OK) {
        fprintf(stderr, "keybridge: [client] server_id is not a SPIFFE ID: %s\n", why ? why : "");
        return KB_ERR_CONFIG;
    }
    rc = x509svid_load(cert, key, &p->svid, &why);
    if (rc != KB_OK) {
        fprintf(stderr, "keybridge: cannot load the CLI's SVID (%s): %s\n", cert, why ? why : "");
        /* Our own identity files are local state, whatever was wrong with them: exit 3. */
        return KB_ERR_CONFIG;
    }
    rc = spiffe_bundle_load_file(spiffe_id_trust_domain(&sid), bundle, &b, &why);
    if (rc == KB_OK)
        rc = spiffe_bundle_set_new(&p->bs);
    if (rc == KB_OK && (rc = spiffe_bundle_set_put(p->bs, b)) == KB_OK)
        b = NULL;
    spiffe_bundle_free(b);
    if (rc != KB_OK) {
        fprintf(stderr, "keybridge: cannot load the trust bundle (%s): %s\n", bundle,
                why ? why : kb_err_str(rc));
        return KB_ERR_CONFIG;
    }
    return KB_OK;
}

/* Methods that mean the same when sent twice (RFC 9110 9.2.2): only these are sent to another
 * server once the first may have received them. */
static int idempotent(const char *method)
{
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0 ||
           strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0 ||
           strcmp(method, "OPTIONS") == 0;
}

/* One exchange with one server. *again: this failure may be retried on the next server (a
 * transport failure or a 502/503/504, and the request idempotent or never sent); *why says what
 * happened, for the failover line. */
static kb_err attempt(cli *c, tls_pin *pin, const char *base, const char *method, const char *path,
                      const char *query, const char *body, size_t body_len, api_response *resp,
                      int *again, char *why, size_t why_len)
{
    sink sk;
    kb_dbuf url;
    CURL *h = NULL;
    struct curl_slist *hdrs = NULL;
    long status = 0, sent = 0;
    kb_err rc = KB_OK;
    CURLcode cc;

    *again = 0;
    why[0] = '\0';
    memset(resp, 0, sizeof(*resp));
    memset(&sk, 0, sizeof(sk));
    pin->why[0] = '\0';
    pin->verified = 0;
    kb_dbuf_init(&sk.body, HTTPS_RESPONSE_MAX);
    kb_dbuf_init(&url, 8192);
    KB_GUARD_OUT(rc, kb_dbuf_addstr(&url, base));
    while (url.len > 8 && url.p[url.len - 1] == '/')
        url.p[--url.len] = '\0';
    KB_GUARD_OUT(rc, kb_dbuf_addstr(&url, path));
    if (query && query[0])
        KB_GUARD_OUT(rc, kb_dbuf_addf(&url, "?%s", query));

    h = curl_easy_init();
    KB_ENSURE_OUT(rc, h != NULL, KB_ERR_NOMEM);
    hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = hdrs ? curl_slist_append(hdrs, "Accept: application/json") : NULL;
    KB_ENSURE_OUT(rc, hdrs != NULL, KB_ERR_NOMEM);
    curl_easy_setopt(h, CURLOPT_URL, kb_dbuf_str(&url));
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)kb_config_duration(c->cfg, "client", "timeout"));
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    /* Verification is ours (verify_server): keep VERIFYPEER on so a handshake without a
     * verified server fails, and turn off the DNS name check that SVIDs cannot satisfy. */
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
    curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, pin);
    curl_easy_setopt(h, CURLOPT_SSL_SESSIONID_CACHE, 0L);
    if (body != NULL && body_len > 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sk);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &sk);
    cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        /* bytes of the request written: 0 means the server got nothing (connect or handshake) */
        if (curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &sent) != CURLE_OK)
            sent = 1;
        *again = idempotent(method) || sent == 0;
        if (pin->why[0])
            snprintf(why, why_len, "%s; refusing to talk to this server", pin->why);
        else
            snprintf(why, why_len, "request to %s failed: %s", base, curl_easy_strerror(cc));
        rc = pin->why[0] ? KB_ERR_AUTH : KB_ERR_UNAVAILABLE;
        goto out;
    }
    if (!pin->verified) {
        /* Cannot happen with VERIFYPEER on; fail closed if it ever does. */
        snprintf(why, why_len, "server identity was not verified; refusing");
        rc = KB_ERR_AUTH;
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    resp->status = (int)status;
    resp->retry_after = sk.retry_after;
    if (kb_failover_status(resp->status) && idempotent(method)) {
        *again = 1;
        snprintf(why, why_len, "%s answered HTTP %ld", base, status);
    }
    if (sk.body.len > 0) {
        json_error_t je;
        resp->body = json_loadb((const char *)sk.body.p, sk.body.len, JSON_REJECT_DUPLICATES, &je);
        if (resp->body == NULL) {
            snprintf(why, why_len, "server sent a malformed response (HTTP %ld)", status);
            rc = KB_ERR_INVALID;
            goto out;
        }
    } else if (status != 204) {
        resp->body = json_pack("{s:s,s:s}", "error", "empty", "message", "empty response");
    }
out:
    if (rc != KB_OK)
        api_response_clear(resp);
    curl_slist_free_all(hdrs);
    if (h)
        curl_easy_cleanup(h);
    kb_dbuf_free(&sk.body); /* wiped: it may have held secret content */
    kb_dbuf_free(&url);
    return rc;
}

/* The request to each server of the list in this client's order (docs/failover.md) until one
 * answers with something other than a failure worth another server. */
kb_err cli_transport_https(cli *c, const char *method, const char *path, const char *query,
                           const char *body, size_t body_len, api_response *resp)
{
    tls_pin pin;
    kb_urllist own, *list = &c->servers;
    kb_err rc = KB_OK;
    char why[600];

    memset(resp, 0, sizeof(*resp));
    memset(&pin, 0, sizeof(pin));
    memset(&own, 0, sizeof(own));
    pthread_once(&curl_once, curl_init_once);
    KB_GUARD_OUT(rc, pin_setup(c, &pin));
    if (list->n == 0) {
        const char *base = kb_config_str(c->cfg, "client", "server_url");
        if (base == NULL || kb_urllist_add(&own, base, "https://") != KB_OK) {
            fprintf(stderr,
                    "keybridge: [client] server_url must be https://HOST:PORT, or a "
                    "comma-separated list of at most %d\n",
                    KB_FAILOVER_MAX_URLS);
            rc = KB_ERR_CONFIG;
            goto out;
        }
        list = &own;
    }
    kb_urllist_order(list, spiffe_id_str(x509svid_id(pin.svid)));
    for (size_t i = 0; i < list->n; i++) {
        int again = 0;
        const char *base = kb_urllist_at(list, i);
        rc = attempt(c, &pin, base, method, path, query, body, body_len, resp, &again, why,
                     sizeof(why));
        if (again && i + 1 < list->n) {
            fprintf(stderr, "keybridge: %s; trying %s\n", why, kb_urllist_at(list, i + 1));
            api_response_clear(resp);
            continue;
        }
        if (rc != KB_OK) {
            fprintf(stderr, "keybridge: %s\n", why);
        } else {
            kb_log(list->n > 1 ? KB_LOG_INFO : KB_LOG_DEBUG, "keybridged_server", "server", base,
                   NULL);
        }
        break;
    }
out:
    kb_urllist_free(&own);
    x509svid_free(pin.svid);
    spiffe_bundle_set_free(pin.bs);
    return rc;
}
