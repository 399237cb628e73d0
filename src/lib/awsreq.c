/* awsreq.c - SigV4-signed AWS JSON 1.1 POSTs over libcurl; credentials from the environment.
 *
 * References: AWS JSON 1.1 protocol (X-Amz-Target, application/x-amz-json-1.1); AWS IAM User
 * Guide, "Signature Version 4"; AWS Lambda "Defined runtime environment variables"
 * (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
 */
#include "awsreq.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "log.h"
#include "sigv4.h"
#include "version.h"

#define AWS_JSON_CT "application/x-amz-json-1.1"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int target_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > KB_AWSREQ_MAX_TARGET)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* A header value we put on the wire must not be able to end the header (CR/LF) or hide bytes. */
static int header_value_ok(const char *v, size_t max)
{
    size_t n = strlen(v);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x21 || (unsigned char)v[i] > 0x7e)
            return 0;
    return 1;
}

static int is_loopback_host(const char *h)
{
    return strcmp(h, "127.0.0.1") == 0 || strcmp(h, "[::1]") == 0 ||
           strcasecmp(h, "localhost") == 0;
}

typedef struct {
    kb_dbuf *out;
    int too_large;
} sink;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    sink *s = arg;
    size_t len = size * n;
    if (kb_dbuf_add(s->out, p, len) != KB_OK) {
        s->too_large = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return len;
}

static kb_err map_curl(CURLcode c, const sink *s)
{
    switch (c) {
    case CURLE_OK:
        return KB_OK;
    case CURLE_WRITE_ERROR:
        return s->too_large ? KB_ERR_TOO_LARGE : KB_ERR_IO;
    case CURLE_OPERATION_TIMEDOUT:
        return KB_ERR_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return KB_ERR_UNAVAILABLE;
    case CURLE_PEER_FAILED_VERIFICATION:
        return KB_ERR_AUTH;
    case CURLE_SSL_CACERT_BADFILE:
        return KB_ERR_CONFIG;
    default:
        return KB_ERR_IO;
    }
}

/* Add "Name: value" to a curl header list (curl copies the string). */
static kb_err add_header(struct curl_slist **l, kb_dbuf *tmp, const char *name, const char *value)
{
    struct curl_slist *n;
    kb_dbuf_reset(tmp);
    KB_GUARD(kb_dbuf_addf(tmp, "%s: %s", name, value));
    n = curl_slist_append(*l, kb_dbuf_str(tmp));
    KB_ENSURE(n != NULL, KB_ERR_NOMEM);
    *l = n;
    return KB_OK;
}

kb_err kb_awsreq_call(const kb_awsreq_cfg *cfg, const char *target, const char *json_body,
                      size_t len, long *http_status, kb_dbuf *resp)
{
    CURLU *u = NULL;
    CURL *c = NULL;
    struct curl_slist *hl = NULL;
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *user = NULL;
    char *frag = NULL;
    kb_dbuf hostv, auth, tmp;
    char amz_date[17];
    sink s = {resp, 0};
    CURLcode cc;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(cfg);
    KB_ENSURE_REF(target);
    KB_ENSURE_REF(http_status);
    KB_ENSURE_REF(resp);
    KB_ENSURE(json_body != NULL || len == 0, KB_ERR_NULL);
    KB_ENSURE_REF(cfg->endpoint);
    KB_ENSURE_REF(cfg->region);
    KB_ENSURE_REF(cfg->service);
    KB_ENSURE_REF(cfg->access_key_id);
    KB_ENSURE_REF(cfg->secret_key);
    KB_ENSURE(target_ok(target), KB_ERR_INVALID);
    KB_ENSURE(cfg->session_token == NULL ||
                  header_value_ok(cfg->session_token, KB_AWSREQ_MAX_TOKEN),
              KB_ERR_INVALID);
    KB_ENSURE(cfg->timeout_ms >= 0, KB_ERR_INVALID);
    pthread_once(&curl_once, curl_init);
    KB_ENSURE(curl_init_rc == CURLE_OK, KB_ERR_INTERNAL);
    *http_status = 0;
    kb_dbuf_init(&hostv, 512);
    kb_dbuf_init(&auth, 8192);
    kb_dbuf_init(&tmp, KB_AWSREQ_MAX_TOKEN + 64);

    /* The endpoint, split the way curl will send it, so we sign exactly what goes out. */
    u = curl_url();
    KB_ENSURE_OUT(rc, u != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, curl_url_set(u, CURLUPART_URL, cfg->endpoint, 0) == CURLUE_OK,
                  KB_ERR_INVALID);
    KB_ENSURE_OUT(rc, curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK, KB_ERR_INVALID);
    KB_ENSURE_OUT(rc, curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK, KB_ERR_INVALID);
    KB_ENSURE_OUT(rc, curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_NO_USER,
                  KB_ERR_INVALID); /* no credentials in URLs */
    KB_ENSURE_OUT(rc, curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_NO_FRAGMENT,
                  KB_ERR_INVALID);
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;
    KB_ENSURE_OUT(rc, curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK, KB_ERR_INVALID);
    if (curl_url_get(u, CURLUPART_QUERY, &query, 0) != CURLUE_OK)
        query = NULL;
    if (strcasecmp(scheme, "http") == 0) {
        /* Request and response bodies carry secrets: cleartext only on this machine. */
        KB_ENSURE_OUT(rc, is_loopback_host(host), KB_ERR_CONFIG);
    } else {
        KB_ENSURE_OUT(rc, strcasecmp(scheme, "https") == 0, KB_ERR_INVALID);
    }
    KB_GUARD_OUT(rc, kb_dbuf_addstr(&hostv, host));
    if (port)
        KB_GUARD_OUT(rc, kb_dbuf_addf(&hostv, ":%s", port));

    /* Sign host, content-type, x-amz-target (+ x-amz-date, x-amz-security-token). */
    {
        kb_sigv4_header hs[] = {
            {"Host", 4, kb_dbuf_str(&hostv), hostv.len},
            {"Content-Type", 12, AWS_JSON_CT, strlen(AWS_JSON_CT)},
            {"X-Amz-Target", 12, target, strlen(target)},
        };
        kb_sigv4_request r = {"POST", path, query ? query : "", hs, 3, (const uint8_t *)json_body,
                              len};
        kb_sigv4_params p = {cfg->access_key_id,
                             cfg->secret_key,
                             cfg->session_token,
                             cfg->region,
                             cfg->service,
                             time(NULL),
                             1};
        KB_GUARD_OUT(rc, kb_sigv4_sign(&r, &p, &auth, amz_date));
    }

    KB_GUARD_OUT(rc, add_header(&hl, &tmp, "Host", kb_dbuf_str(&hostv)));
    KB_GUARD_OUT(rc, add_header(&hl, &tmp, "Content-Type", AWS_JSON_CT));
    KB_GUARD_OUT(rc, add_header(&hl, &tmp, "X-Amz-Target", target));
    KB_GUARD_OUT(rc, add_header(&hl, &tmp, "X-Amz-Date", amz_date));
    if (cfg->session_token)
        KB_GUARD_OUT(rc, add_header(&hl, &tmp, "X-Amz-Security-Token", cfg->session_token));
    KB_GUARD_OUT(rc, add_header(&hl, &tmp, "Authorization", kb_dbuf_str(&auth)));
    /* No "Expect: 100-continue" round trip (curl adds it for larger bodies). */
    KB_GUARD_OUT(rc, add_header(&hl, &tmp, "Expect", ""));
    kb_dbuf_reset(&tmp);

    c = curl_easy_init();
    KB_ENSURE_OUT(rc, c != NULL, KB_ERR_NOMEM);
    cc = curl_easy_setopt(c, CURLOPT_CURLU, u);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (cc == CURLE_OK && cfg->ca_file)
        cc = curl_easy_setopt(c, CURLOPT_CAINFO, cfg->ca_file);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                              cfg->timeout_ms ? cfg->timeout_ms : KB_AWSREQ_DEFAULT_TIMEOUT_MS);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_USERAGENT, "keybridge/" KB_VERSION);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_POST, 1L);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, len ? json_body : "");
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    if (cc == CURLE_OK)
        cc = curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    KB_ENSURE_OUT(rc, cc == CURLE_OK, KB_ERR_INTERNAL);

    cc = curl_easy_perform(c);
    rc = map_curl(cc, &s);
    if (rc != KB_OK) {
        kb_log(KB_LOG_WARN, "awsreq_failed", "target", target, "endpoint", cfg->endpoint, "error",
               curl_easy_strerror(cc), NULL);
        goto out;
    }
    KB_ENSURE_OUT(rc, curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, http_status) == CURLE_OK,
                  KB_ERR_IO);
out:
    if (c)
        curl_easy_cleanup(c);
    curl_slist_free_all(hl);
    curl_url_cleanup(u);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_free(user);
    curl_free(frag);
    kb_dbuf_free(&hostv);
    kb_dbuf_free(&auth);
    kb_dbuf_free(&tmp);
    return rc;
}

/* ------------------------------------------------------------------ credentials */

static int akid_ok(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > KB_SIGV4_MAX_SCOPE_PART - 1)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

kb_err kb_aws_creds_from_env(kb_aws_creds *out)
{
    const char *akid, *sk, *tok;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(out);
    memset(out, 0, sizeof(*out));
    akid = getenv("AWS_ACCESS_KEY_ID");
    sk = getenv("AWS_SECRET_ACCESS_KEY");
    tok = getenv("AWS_SESSION_TOKEN");
    KB_ENSURE(akid != NULL && sk != NULL, KB_ERR_NOT_FOUND);
    KB_ENSURE(akid_ok(akid), KB_ERR_CONFIG);
    /* Secret keys are 40 printable characters today; only the bound and the charset are
     * checked, and the value is never echoed. */
    KB_ENSURE(header_value_ok(sk, KB_AWSREQ_MAX_SECRET_KEY), KB_ERR_CONFIG);
    if (tok != NULL && tok[0] != '\0')
        KB_ENSURE(header_value_ok(tok, KB_AWSREQ_MAX_TOKEN), KB_ERR_CONFIG);
    out->access_key_id = strdup(akid);
    KB_ENSURE_OUT(rc, out->access_key_id != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, kb_secret_from(sk, strlen(sk), &out->secret_key));
    if (tok != NULL && tok[0] != '\0') {
        out->session_token = strdup(tok);
        KB_ENSURE_OUT(rc, out->session_token != NULL, KB_ERR_NOMEM);
    }
out:
    if (rc != KB_OK)
        kb_aws_creds_free(out);
    return rc;
}

void kb_aws_creds_free(kb_aws_creds *c)
{
    if (c == NULL)
        return;
    free(c->access_key_id);
    kb_secret_free(c->secret_key);
    if (c->session_token) {
        kb_wipe(c->session_token, strlen(c->session_token));
        free(c->session_token);
    }
    memset(c, 0, sizeof(*c));
}
