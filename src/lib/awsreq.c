/* awsreq.c - SigV4-signed AWS JSON 1.1 POSTs over httpc (kept-alive per endpoint); credentials from
 * the environment.
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

#include "httpc.h"
#include "log.h"
#include "sigv4.h"
#include "version.h"

#define AWS_JSON_CT "application/x-amz-json-1.1"
/* The query protocol (STS): form-encoded parameters, as botocore sends them. */
#define AWS_QUERY_CT "application/x-www-form-urlencoded; charset=utf-8"
/* Idle kept-alive clients kept for reuse (one per endpoint in practice: a syncer writes to one
 * endpoint per region, keybridge-ca to a few targets). */
#define POOL_MAX 16

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

/* ---- connection pool -----------------------------------------------------------------------
 * A full sync of 100 changed secrets makes ~400 calls to one endpoint: each reuses one
 * keep-alive connection (one TCP + TLS handshake, one load of the CA store) instead of opening
 * its own. A client is taken out of the pool for the length of a call, so concurrent callers
 * (keybridge-ca's threads) never share a connection. */

typedef struct pooled {
    struct pooled *next;
    char *key; /* "scheme://authority\n" + ca_file */
    kb_httpc *c;
} pooled;

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pooled *pool_head;
static size_t pool_n;

static pooled *pool_take(const char *key)
{
    pooled **pp, *p = NULL;
    pthread_mutex_lock(&pool_mu);
    for (pp = &pool_head; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->key, key) == 0) {
            p = *pp;
            *pp = p->next;
            pool_n--;
            break;
        }
    pthread_mutex_unlock(&pool_mu);
    return p;
}

static void pooled_free(pooled *p)
{
    if (p == NULL)
        return;
    kb_httpc_free(p->c);
    free(p->key);
    free(p);
}

static void pool_put(pooled *p)
{
    pthread_mutex_lock(&pool_mu);
    if (pool_n < POOL_MAX) {
        p->next = pool_head;
        pool_head = p;
        pool_n++;
        p = NULL;
    }
    pthread_mutex_unlock(&pool_mu);
    pooled_free(p);
}

void kb_awsreq_pool_clear(void)
{
    pooled *p;
    pthread_mutex_lock(&pool_mu);
    p = pool_head;
    pool_head = NULL;
    pool_n = 0;
    pthread_mutex_unlock(&pool_mu);
    while (p) {
        pooled *n = p->next;
        pooled_free(p);
        p = n;
    }
}

static kb_err map_err(kb_err e)
{
    switch (e) {
    case KB_ERR_TOO_LARGE:
    case KB_ERR_TIMEOUT:
    case KB_ERR_UNAVAILABLE:
    case KB_ERR_AUTH:
    case KB_ERR_NOMEM:
        return e;
    default: /* malformed, truncated or trailing answers, socket errors */
        return KB_ERR_IO;
    }
}

/* One signed POST: content type ct, X-Amz-Target target (JSON 1.1) or none (query protocol). */
static kb_err awsreq_post(const kb_awsreq_cfg *cfg, const char *ct, const char *target,
                          const char *json_body, size_t len, long *http_status, kb_dbuf *resp)
{
    kb_httpc_url *u = NULL;
    kb_dbuf auth, key;
    char amz_date[17];
    pooled *p = NULL;
    int st = 0;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(cfg);
    KB_ENSURE_REF(ct);
    KB_ENSURE_REF(http_status);
    KB_ENSURE_REF(resp);
    KB_ENSURE(json_body != NULL || len == 0, KB_ERR_NULL);
    KB_ENSURE_REF(cfg->endpoint);
    KB_ENSURE_REF(cfg->region);
    KB_ENSURE_REF(cfg->service);
    KB_ENSURE_REF(cfg->access_key_id);
    KB_ENSURE_REF(cfg->secret_key);
    KB_ENSURE(target == NULL || target_ok(target), KB_ERR_INVALID);
    KB_ENSURE(cfg->session_token == NULL ||
                  header_value_ok(cfg->session_token, KB_AWSREQ_MAX_TOKEN),
              KB_ERR_INVALID);
    KB_ENSURE(cfg->timeout_ms >= 0, KB_ERR_INVALID);
    *http_status = 0;
    kb_dbuf_init(&auth, 8192);
    kb_dbuf_init(&key, KB_HTTPC_MAX_URL + 4096);
    u = malloc(sizeof(*u));
    KB_ENSURE_OUT(rc, u != NULL, KB_ERR_NOMEM);

    /* The endpoint, split the way it goes on the wire, so we sign exactly what goes out. */
    KB_GUARD_OUT(rc, kb_httpc_parse_url(cfg->endpoint, u));
    /* Request and response bodies carry secrets: cleartext only on this machine. */
    KB_ENSURE_OUT(rc, u->tls || kb_httpc_host_is_loopback(u->host), KB_ERR_CONFIG);

    /* Sign host, content-type, x-amz-target (+ x-amz-date, x-amz-security-token). */
    {
        const char *q = u->target[u->path_len] == '?' ? u->target + u->path_len + 1 : "";
        char path[KB_HTTPC_MAX_URL];
        kb_sigv4_header hs[] = {
            {"Host", 4, u->authority, strlen(u->authority)},
            {"Content-Type", 12, ct, strlen(ct)},
            {"X-Amz-Target", 12, target ? target : "", target ? strlen(target) : 0},
        };
        kb_sigv4_request r = {"POST", path, q, hs, target ? 3 : 2, (const uint8_t *)json_body, len};
        kb_sigv4_params sp = {cfg->access_key_id,
                              cfg->secret_key,
                              cfg->session_token,
                              cfg->region,
                              cfg->service,
                              time(NULL),
                              1};
        memcpy(path, u->target, u->path_len);
        path[u->path_len] = '\0';
        KB_GUARD_OUT(rc, kb_sigv4_sign(&r, &sp, &auth, amz_date));
    }

    /* One client per (origin, trust anchors). */
    KB_GUARD_OUT(rc, kb_dbuf_addf(&key, "%s://%s\n%s", u->tls ? "https" : "http", u->authority,
                                  cfg->ca_file ? cfg->ca_file : ""));
    p = pool_take(kb_dbuf_str(&key));
    if (p == NULL) {
        kb_httpc_opts o = {cfg->endpoint, cfg->ca_file, NULL, "keybridge/" KB_VERSION};
        p = calloc(1, sizeof(*p));
        KB_ENSURE_OUT(rc, p != NULL, KB_ERR_NOMEM);
        p->key = strdup(kb_dbuf_str(&key));
        KB_ENSURE_OUT(rc, p->key != NULL, KB_ERR_NOMEM);
        KB_GUARD_OUT(rc, kb_httpc_new(&o, &p->c));
    }
    {
        kb_httpc_field f[5];
        size_t nf = 0;
        kb_httpc_req r;
        f[nf++] = (kb_httpc_field){"Content-Type", ct};
        if (target)
            f[nf++] = (kb_httpc_field){"X-Amz-Target", target};
        f[nf++] = (kb_httpc_field){"X-Amz-Date", amz_date};
        if (cfg->session_token)
            f[nf++] = (kb_httpc_field){"X-Amz-Security-Token", cfg->session_token};
        f[nf++] = (kb_httpc_field){"Authorization", kb_dbuf_str(&auth)};
        r = (kb_httpc_req){"POST",
                           u->target,
                           f,
                           nf,
                           len ? json_body : "",
                           len,
                           cfg->timeout_ms ? cfg->timeout_ms : KB_AWSREQ_DEFAULT_TIMEOUT_MS};
        rc = kb_httpc_do(p->c, &r, &st, resp);
    }
    if (rc != KB_OK) {
        kb_log(KB_LOG_WARN, "awsreq_failed", "target", target ? target : "-", "endpoint",
               cfg->endpoint, "error", kb_httpc_why(p->c)[0] ? kb_httpc_why(p->c) : kb_err_str(rc),
               NULL);
        rc = map_err(rc);
        goto out;
    }
    *http_status = st;
out:
    if (p != NULL && p->c != NULL)
        pool_put(p);
    else
        pooled_free(p);
    free(u);
    kb_dbuf_free(&auth);
    kb_dbuf_free(&key);
    return rc;
}

kb_err kb_awsreq_call(const kb_awsreq_cfg *cfg, const char *target, const char *json_body,
                      size_t len, long *http_status, kb_dbuf *resp)
{
    KB_ENSURE_REF(target);
    return awsreq_post(cfg, AWS_JSON_CT, target, json_body, len, http_status, resp);
}

kb_err kb_awsreq_call_query(const kb_awsreq_cfg *cfg, const char *form_body, size_t len,
                            long *http_status, kb_dbuf *resp)
{
    KB_ENSURE_REF(form_body);
    return awsreq_post(cfg, AWS_QUERY_CT, NULL, form_body, len, http_status, resp);
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
