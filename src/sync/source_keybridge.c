/* source_keybridge.c - keybridged's client API over mTLS with server_id pinning (see .h). */
#include "source_keybridge.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/failover.h"
#include "lib/httpc.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/version.h"

/* One keybridged replica of the [source] url list. */
typedef struct {
    kb_httpc *http; /* one kept-alive mTLS connection, reused for the list and every batch */
    char *url;
    char prefix[KB_HTTPC_MAX_URL]; /* the URL's path, prepended to every request path */
} kbserver;

typedef struct {
    kbserver srv[KB_FAILOVER_MAX_URLS]; /* in this client's order (kb_urllist_order) */
    size_t nsrv;
    size_t cur;             /* the replica asked first: the last one that answered */
    const kbserver *logged; /* the replica last logged as answering */
    SSL_CTX *ctx;
    char *server_id;
    const sync_identity *id;
    long timeout_ms;
    const sync_clock *clock;
    char why[256];
} kbsrc;

/* Verify the server as an X509-SVID and pin its ID (called instead of X509_verify_cert). */
static int verify_cb(X509_STORE_CTX *ctx, void *arg)
{
    kbsrc *k = arg;
    spiffe_id peer;
    const char *why = "";
    X509 *leaf = X509_STORE_CTX_get0_cert(ctx);
    if (leaf == NULL || x509svid_verify(k->id->bundles, leaf, X509_STORE_CTX_get0_untrusted(ctx),
                                        X509SVID_PURPOSE_SERVER, 0, &peer, &why) != KB_OK) {
        snprintf(k->why, sizeof(k->why), "server SVID refused: %s", why ? why : "");
        X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (strcmp(spiffe_id_str(&peer), k->server_id) != 0) {
        snprintf(k->why, sizeof(k->why), "server is %.100s, not the pinned server_id",
                 spiffe_id_str(&peer));
        X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    X509_STORE_CTX_set_error(ctx, X509_V_OK);
    return 1;
}

/* The client context: our SVID presented, the peer verified by verify_cb only. No CA store is
 * loaded (verify_cb never consults one; parsing the system bundle was most of a no-op run's CPU,
 * bench/sync/README.md), no host name check (the SVID has a URI SAN only), and no session
 * resumption: every connection re-verifies the pinned identity (DESIGN.md Identity). */
static kb_err build_ctx(kbsrc *k)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    STACK_OF(X509) *chain = x509svid_intermediates(k->id->svid);
    kb_err rc = KB_OK;
    KB_ENSURE(ctx != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, SSL_CTX_use_certificate(ctx, x509svid_leaf(k->id->svid)) == 1, KB_ERR_CONFIG);
    for (int i = 0; i < sk_X509_num(chain); i++)
        KB_ENSURE_OUT(rc, SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) == 1,
                      KB_ERR_CONFIG);
    KB_ENSURE_OUT(rc,
                  SSL_CTX_use_PrivateKey(ctx, x509svid_key(k->id->svid)) == 1 &&
                      SSL_CTX_check_private_key(ctx) == 1,
                  KB_ERR_CONFIG);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, verify_cb, k);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
out:
    if (rc != KB_OK) {
        SSL_CTX_free(ctx);
        return rc;
    }
    k->ctx = ctx;
    return KB_OK;
}

/* Transport errors as the engine knows them: a peer that answered garbage or went away
 * mid-answer is unavailable; a failed handshake or refused identity is an auth failure. */
static kb_err map_http(kb_err e)
{
    switch (e) {
    case KB_ERR_INVALID:
    case KB_ERR_TRUNCATED:
    case KB_ERR_TRAILING:
        return KB_ERR_UNAVAILABLE;
    default:
        return e;
    }
}

/* Retry-After as delay-seconds (RFC 9110 10.2.3; keybridged always sends seconds, at least 1);
 * an HTTP-date or anything else counts as no hint (-1). */
static int64_t retry_after_s(const char *v)
{
    int64_t x = 0;
    size_t n = v ? strlen(v) : 0;
    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x > 0 ? x : -1;
}

static kb_err status_err(long st)
{
    if (st == 200)
        return KB_OK;
    if (st == 401 || st == 403)
        return KB_ERR_DENIED;
    if (st == 404)
        return KB_ERR_NOT_FOUND;
    if (st == 429)
        return KB_ERR_LIMIT;
    if (st >= 500)
        return KB_ERR_UNAVAILABLE;
    return KB_ERR_INVALID;
}

/* A failure worth another try (on the next replica, or on the same one after a backoff): the
 * peer was reached and then dropped us (connection reset, closed before the answer, closed or
 * timed out during the handshake, a truncated or garbled answer, a timeout), or it answered
 * 502/503/504. Not: nothing listening (connect refused or unresolvable: fail over, but do not
 * wait for it), nor a server identity our verification refused (k->why set: that replica is
 * wrong, not busy). */
static int transient(const kbsrc *k, const kbserver *sv, kb_err rc)
{
    if (kb_httpc_last_stage(sv->http) == KB_HTTPC_STAGE_CONNECT)
        return rc == KB_ERR_TIMEOUT || kb_httpc_connect_errno(sv->http) == ECONNRESET;
    return k->why[0] == '\0';
}

static const char *stage_str(kb_httpc_stage st)
{
    return st == KB_HTTPC_STAGE_CONNECT     ? "connect"
           : st == KB_HTTPC_STAGE_HANDSHAKE ? "handshake"
                                            : "exchange";
}

/* One request, over the replicas of [source] url (docs/failover.md). The replica that answered
 * last is asked first; a transport failure or a 502/503/504 moves to the next one (every request
 * here is a read, so even one that was sent may go elsewhere); any other answer is authoritative
 * and returned as is (a 403 from one replica is the answer of all). When every replica failed in
 * one round, the round is retried after a jittered backoff (the 503's Retry-After when there was
 * one) while the deadline allows: at most SYNC_KB_TRANSPORT_RETRIES rounds when a transport
 * failure was among them, else (only 503s) up to SYNC_BACKOFF_MAX_ATTEMPTS; a round with nothing
 * transient in it (nothing listening, identity refused) ends the request at once. A 429 is
 * retried on the same replica after its Retry-After (backoff.h). Each request's transfer timeout
 * is cut to the time left. */
static kb_err request(kbsrc *k, const char *path, const char *body, kb_dbuf *resp,
                      sync_summary *sum, sync_op op)
{
    static const kb_httpc_field json_ct[] = {{"Content-Type", "application/json"}};
    char target[KB_HTTPC_MAX_URL];
    kb_err rc = KB_OK;
    unsigned busy = 0, rounds = 0;
    size_t tried = 0;
    int any_transient = 0, any_transport = 0;
    int64_t round_hint = -1;
    for (;;) {
        kbserver *sv = &k->srv[k->cur];
        int st = 0, tn;
        int64_t left = sync_clock_left(k->clock), waited = 0;
        kb_httpc_req r = {body ? "POST" : "GET",
                          target,
                          body ? json_ct : NULL,
                          body ? 1 : 0,
                          body,
                          body ? strlen(body) : 0,
                          left < k->timeout_ms ? (long)left : k->timeout_ms};
        char ws[24], hs[24];
        if (left <= 0) {
            kb_log(KB_LOG_WARN, "deadline_reached", "path", path, NULL);
            return KB_ERR_TIMEOUT;
        }
        tn = snprintf(target, sizeof(target), "%s%s", sv->prefix, path);
        KB_ENSURE(tn > 0 && (size_t)tn < sizeof(target), KB_ERR_TOO_LARGE);
        kb_dbuf_reset(resp);
        k->why[0] = '\0';
        sum->calls[op]++;
        rc = kb_httpc_do(sv->http, &r, &st, resp);
        if (rc != KB_OK) {
            kb_httpc_stage stg = kb_httpc_last_stage(sv->http);
            rc = map_http(rc);
            any_transport = 1;
            if (transient(k, sv, rc))
                any_transient = 1;
            kb_log(KB_LOG_ERROR, "keybridged_request_failed", "path", path, "server", sv->url,
                   "stage", stage_str(stg), "err", kb_err_str(rc), "reason",
                   k->why[0] ? k->why : kb_httpc_why(sv->http), NULL);
        } else if (st == 429) {
            int64_t ra = retry_after_s(kb_httpc_field_get(sv->http, "Retry-After"));
            rc = KB_ERR_LIMIT;
            sum->throttled++;
            snprintf(hs, sizeof(hs), "%lld", (long long)ra);
            if (busy + 1 < SYNC_BACKOFF_MAX_ATTEMPTS &&
                sync_backoff_wait(k->clock, ra > 0 ? ra * 1000 : -1, busy, &waited) == KB_OK) {
                busy++;
                snprintf(ws, sizeof(ws), "%lld", (long long)waited);
                kb_log(KB_LOG_WARN, "keybridged_busy", "path", path, "server", sv->url, "err",
                       kb_err_str(rc), "retry_after", hs, "waited_ms", ws, NULL);
                continue;
            }
            kb_log(KB_LOG_WARN, "keybridged_busy_giving_up", "path", path, "err", kb_err_str(rc),
                   "retry_after", hs, "reason", "the hint does not fit in the deadline", NULL);
            return rc;
        } else if (kb_failover_status(st)) {
            int64_t ra = retry_after_s(kb_httpc_field_get(sv->http, "Retry-After"));
            char sts[16];
            rc = status_err(st);
            any_transient = 1;
            sum->throttled++;
            if (ra > 0 && ra * 1000 > round_hint)
                round_hint = ra * 1000;
            snprintf(sts, sizeof(sts), "%d", st);
            snprintf(hs, sizeof(hs), "%lld", (long long)ra);
            kb_log(KB_LOG_WARN, "keybridged_unavailable", "path", path, "server", sv->url, "status",
                   sts, "retry_after", hs, NULL);
        } else {
            /* an answer: authoritative, from this replica for the rest of the run */
            if (k->logged != sv) {
                k->logged = sv;
                kb_log(k->nsrv > 1 ? KB_LOG_INFO : KB_LOG_DEBUG, "keybridged_server", "server",
                       sv->url, NULL);
            }
            rc = status_err(st);
            if (rc != KB_OK) {
                char sts[16];
                snprintf(sts, sizeof(sts), "%d", st);
                kb_log(KB_LOG_ERROR, "keybridged_refused", "path", path, "server", sv->url,
                       "status", sts, "err", kb_err_str(rc), NULL);
            }
            return rc;
        }
        /* this replica failed: the next one, or, after a whole round, a backoff */
        k->cur = (k->cur + 1) % k->nsrv;
        if (++tried < k->nsrv) {
            kb_log(KB_LOG_WARN, "keybridged_failover", "path", path, "from", sv->url, "to",
                   k->srv[k->cur].url, NULL);
            continue;
        }
        rounds++;
        if (!any_transient ||
            rounds >= (any_transport ? SYNC_KB_TRANSPORT_RETRIES : SYNC_BACKOFF_MAX_ATTEMPTS) ||
            sync_backoff_wait(k->clock, round_hint, rounds - 1, &waited) != KB_OK) {
            if (any_transient)
                kb_log(KB_LOG_WARN, "keybridged_giving_up", "path", path, "err", kb_err_str(rc),
                       "reason",
                       rounds >= (any_transport ? SYNC_KB_TRANSPORT_RETRIES
                                                : SYNC_BACKOFF_MAX_ATTEMPTS)
                           ? "retries exhausted"
                           : "no time left before the deadline",
                       NULL);
            return rc;
        }
        snprintf(ws, sizeof(ws), "%lld", (long long)waited);
        kb_log(KB_LOG_WARN, "keybridged_retry", "path", path, "err", kb_err_str(rc), "waited_ms",
               ws, NULL);
        tried = 0;
        any_transient = any_transport = 0;
        round_hint = -1;
    }
}

/* ---- parsing ------------------------------------------------------------------------------ */

static kb_err parse_meta_fields(const json_t *o, char **name, int64_t *version, char *checksum,
                                json_t **metadata)
{
    const json_t *n = json_object_get(o, "name"), *v = json_object_get(o, "version"),
                 *c = json_object_get(o, "checksum"), *m = json_object_get(o, "metadata");
    const char *k;
    json_t *mv;
    KB_ENSURE(json_is_string(n) && sync_name_ok(json_string_value(n)), KB_ERR_INVALID);
    KB_ENSURE(json_is_integer(v) && json_integer_value(v) >= 1, KB_ERR_INVALID);
    KB_ENSURE(json_is_string(c) && sync_checksum_ok(json_string_value(c)), KB_ERR_INVALID);
    KB_ENSURE(m == NULL || json_is_null(m) || json_is_object(m), KB_ERR_INVALID);
    if (json_is_object(m)) {
        json_object_foreach((json_t *)m, k, mv)
        {
            KB_ENSURE(json_is_string(mv), KB_ERR_INVALID);
        }
    }
    *name = strdup(json_string_value(n));
    KB_ENSURE(*name != NULL, KB_ERR_NOMEM);
    *version = json_integer_value(v);
    memcpy(checksum, json_string_value(c), SYNC_CHECKSUM_HEX + 1);
    *metadata = json_is_object(m) ? json_incref((json_t *)m) : json_object();
    return KB_OK;
}

/* KB_ERR_CONFIG: no application name; KB_ERR_TOO_LARGE: longer than keybridged's limit (a
 * client stored before it); KB_ERR_INVALID: not a name. */
static kb_err app_name_check(const char *s)
{
    size_t n = strlen(s);
    KB_ENSURE(n > 0, KB_ERR_CONFIG);
    KB_ENSURE(n <= SYNC_APP_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(sync_name_ok(s), KB_ERR_INVALID);
    return KB_OK;
}

#define WHY_NO_APP "keybridged names no application for this client (set its app_name)"
#define WHY_LONG_APP                                                                               \
    "keybridged's application name for this client is longer than 246 characters "                 \
    "(keybridge/<app>/<name> must fit Secrets Manager's 512); shorten the client's app_name"
#define WHY_BAD_APP "keybridged's application name is not a name (A-Z a-z 0-9 _ . + = @ -)"
_Static_assert(SYNC_APP_MAX == 246, "WHY_LONG_APP says 246");

/* sync_kb_parse_list, saying in *why (when not NULL) what is wrong with the application name. */
static kb_err parse_list(const void *body, size_t len, sync_listing *out, const char **why)
{
    json_t *doc = NULL, *arr, *app, *client;
    char err[128];
    size_t n;
    kb_err rc;
    KB_ENSURE_REF(out);
    memset(out, 0, sizeof(*out));
    KB_GUARD(kb_json_parse(body, len, SYNC_KB_LIST_MAX, &doc, err, sizeof(err)));
    arr = json_object_get(doc, "secrets");
    app = json_object_get(doc, "application");
    client = json_object_get(doc, "client");
    KB_ENSURE_OUT(rc, json_is_array(arr) && json_is_string(app) && json_is_string(client),
                  KB_ERR_INVALID);
    /* Cloud names are keybridge/<application>/<name>: the server must name the application. */
    rc = app_name_check(json_string_value(app));
    if (rc != KB_OK && why)
        *why = rc == KB_ERR_CONFIG      ? WHY_NO_APP
               : rc == KB_ERR_TOO_LARGE ? WHY_LONG_APP
                                        : WHY_BAD_APP;
    KB_GUARD_OUT(rc, rc);
    n = json_array_size(arr);
    KB_ENSURE_OUT(rc, n <= SYNC_LIST_MAX, KB_ERR_TOO_LARGE);
    out->application = strdup(json_string_value(app));
    out->client = strdup(json_string_value(client));
    out->items = calloc(n + 1, sizeof(*out->items));
    KB_ENSURE_OUT(rc, out->application && out->client && out->items, KB_ERR_NOMEM);
    for (size_t i = 0; i < n; i++) {
        sync_meta *m = &out->items[i];
        const json_t *o = json_array_get(arr, i);
        KB_ENSURE_OUT(rc, json_is_object(o), KB_ERR_INVALID);
        KB_GUARD_OUT(rc, parse_meta_fields(o, &m->name, &m->version, m->checksum, &m->metadata));
        out->n++;
    }
    rc = KB_OK;
out:
    json_decref(doc);
    if (rc != KB_OK)
        sync_listing_clear(out);
    return rc;
}

kb_err sync_kb_parse_list(const void *body, size_t len, sync_listing *out)
{
    return parse_list(body, len, out, NULL);
}

static kb_err item_error(const char *e)
{
    /* "deferred": over the HSM budget, retry after retry_after (docs/api.md); "limit" is the
     * older spelling of the same. */
    if (strcmp(e, "deferred") == 0 || strcmp(e, "limit") == 0)
        return KB_ERR_LIMIT;
    if (strcmp(e, "not_found") == 0)
        return KB_ERR_NOT_FOUND;
    if (strcmp(e, "denied") == 0)
        return KB_ERR_DENIED;
    if (strcmp(e, "unavailable") == 0 || strcmp(e, "hsm") == 0)
        return KB_ERR_UNAVAILABLE;
    return KB_ERR_INVALID;
}

kb_err sync_kb_parse_batch(const void *body, size_t len, const char *const *names, size_t n,
                           sync_content *out, size_t *fetched)
{
    json_t *doc = NULL, *arr;
    char err[128];
    size_t i;
    json_t *o;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(fetched);
    *fetched = 0;
    for (i = 0; i < n; i++) {
        sync_content_clear(&out[i]);
        out[i].err = KB_ERR_NOT_FOUND;
        out[i].retry_after_ms = -1;
    }
    KB_GUARD(kb_json_parse(body, len, SYNC_KB_BATCH_MAX, &doc, err, sizeof(err)));
    arr = json_object_get(doc, "secrets");
    KB_ENSURE_OUT(rc, json_is_array(arr), KB_ERR_INVALID);
    KB_ENSURE_OUT(rc, json_array_size(arr) <= n, KB_ERR_INVALID);
    json_array_foreach(arr, i, o)
    {
        const char *nm = json_string_value(json_object_get(o, "name"));
        const json_t *e = json_object_get(o, "error"), *c = json_object_get(o, "content");
        size_t j;
        sync_content *dst;
        KB_ENSURE_OUT(rc, json_is_object(o) && nm != NULL, KB_ERR_INVALID);
        for (j = 0; j < n && strcmp(names[j], nm) != 0; j++)
            ;
        /* An answer for a name we did not ask for, or twice for one name, is malformed. */
        KB_ENSURE_OUT(rc, j < n && out[j].name == NULL, KB_ERR_INVALID);
        dst = &out[j];
        if (e != NULL) {
            const json_t *ra = json_object_get(o, "retry_after");
            KB_ENSURE_OUT(rc, json_is_string(e), KB_ERR_INVALID);
            /* the hint, when present, is whole seconds (as Retry-After), bounded */
            KB_ENSURE_OUT(rc,
                          ra == NULL || (json_is_integer(ra) && json_integer_value(ra) >= 0 &&
                                         json_integer_value(ra) <= SYNC_KB_RETRY_AFTER_LIMIT),
                          KB_ERR_INVALID);
            dst->name = strdup(nm);
            KB_ENSURE_OUT(rc, dst->name != NULL, KB_ERR_NOMEM);
            dst->err = item_error(json_string_value(e));
            if (dst->err == KB_ERR_LIMIT && ra != NULL)
                dst->retry_after_ms = (int64_t)json_integer_value(ra) * 1000;
            continue;
        }
        KB_ENSURE_OUT(rc, json_is_string(c), KB_ERR_INVALID);
        KB_GUARD_OUT(
            rc, parse_meta_fields(o, &dst->name, &dst->version, dst->checksum, &dst->metadata));
        rc = kb_b64_decode_secret(json_string_value(c), json_string_length(c), SYNC_KB_CONTENT_MAX,
                                  &dst->content);
        if (rc != KB_OK) {
            dst->err = rc;
            rc = KB_OK;
            continue;
        }
        dst->err = KB_OK;
        (*fetched)++;
    }
out:
    json_decref(doc); /* wiped by kb_json_init's allocator */
    if (rc != KB_OK)
        for (i = 0; i < n; i++) {
            sync_content_clear(&out[i]);
            out[i].err = rc;
            out[i].retry_after_ms = -1;
        }
    return rc;
}

/* ---- ops ---------------------------------------------------------------------------------- */

static kb_err kb_list(sync_source *s, sync_listing *out, sync_summary *sum)
{
    kbsrc *k = s->impl;
    kb_dbuf resp;
    kb_err rc;
    kb_dbuf_init(&resp, SYNC_KB_LIST_MAX);
    rc = request(k, "/v1/secrets", NULL, &resp, sum, SYNC_OP_KB_LIST);
    if (rc == KB_OK) {
        const char *why = NULL;
        rc = parse_list(resp.p ? resp.p : (const uint8_t *)"", resp.len, out, &why);
        if (why)
            snprintf(k->why, sizeof(k->why), "%s", why);
        if (rc != KB_OK)
            kb_log(KB_LOG_ERROR, "bad_listing", "err", kb_err_str(rc), "reason", k->why, NULL);
    }
    kb_dbuf_free(&resp);
    return rc;
}

/* One batchGet of names[0..n) into out[0..n). */
static kb_err fetch_once(kbsrc *k, const char *const *names, size_t n, sync_content *out,
                         sync_summary *sum)
{
    kb_dbuf resp;
    json_t *req = NULL, *arr = json_array();
    char *body = NULL;
    size_t fetched = 0;
    kb_err rc = KB_OK;
    KB_ENSURE(arr != NULL, KB_ERR_NOMEM);
    kb_dbuf_init(&resp, SYNC_KB_BATCH_MAX);
    for (size_t i = 0; i < n; i++)
        KB_ENSURE_OUT(rc, json_array_append_new(arr, json_string(names[i])) == 0, KB_ERR_NOMEM);
    req = json_pack("{s:O}", "names", arr);
    KB_ENSURE_OUT(rc, req != NULL, KB_ERR_NOMEM);
    body = kb_json_dump(req);
    KB_ENSURE_OUT(rc, body != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, request(k, "/v1/secrets:batchGet", body, &resp, sum, SYNC_OP_KB_BATCH));
    sum->bytes_fetched += (int64_t)resp.len;
    rc = sync_kb_parse_batch(resp.p ? resp.p : (const uint8_t *)"", resp.len, names, n, out,
                             &fetched);
    sum->hsm_fetches += (int64_t)fetched;
out:
    kb_dbuf_free(&resp); /* wiped */
    kb_json_free_str(body);
    json_decref(req);
    json_decref(arr);
    return rc;
}

/* The batch, then the deferred names again after their hint (plus jitter) for as long as the
 * deadline allows (docs/api.md: "Retry just the deferred names after N seconds"). What is still
 * deferred at the end stays KB_ERR_LIMIT: the engine reports it as deferred. */
static kb_err kb_fetch(sync_source *s, const char *const *names, size_t n, sync_content *out,
                       sync_summary *sum)
{
    kbsrc *k = s->impl;
    const char **again = NULL;
    size_t *idx = NULL;
    sync_content *tmp = NULL;
    kb_err rc;
    KB_GUARD(fetch_once(k, names, n, out, sum));
    again = calloc(n + 1, sizeof(*again));
    idx = calloc(n + 1, sizeof(*idx));
    tmp = calloc(n + 1, sizeof(*tmp));
    if (again == NULL || idx == NULL || tmp == NULL) {
        /* the first answer stands; what it deferred stays deferred */
        rc = KB_OK;
        goto out;
    }
    for (unsigned attempt = 0; attempt < SYNC_BACKOFF_MAX_ATTEMPTS; attempt++) {
        size_t m = 0;
        int64_t hint = -1, waited = 0;
        char ns[24], hs[24];
        for (size_t i = 0; i < n; i++) {
            if (out[i].err != KB_ERR_LIMIT)
                continue;
            if (out[i].retry_after_ms > hint)
                hint = out[i].retry_after_ms;
            idx[m] = i;
            again[m++] = names[i];
        }
        if (m == 0)
            break;
        sum->throttled++;
        snprintf(ns, sizeof(ns), "%zu", m);
        snprintf(hs, sizeof(hs), "%lld", (long long)(hint < 0 ? -1 : hint / 1000));
        if (sync_backoff_wait(k->clock, hint, attempt, &waited) != KB_OK) {
            kb_log(KB_LOG_WARN, "deferred_giving_up", "names", ns, "retry_after", hs, "reason",
                   "the hint does not fit in the deadline", NULL);
            break;
        }
        kb_log(KB_LOG_INFO, "deferred_retry", "names", ns, "retry_after", hs, NULL);
        if (fetch_once(k, again, m, tmp, sum) != KB_OK) {
            /* the retry itself failed (deadline, 429 without room, transport): they stay
             * deferred; what was fetched before stands */
            for (size_t j = 0; j < m; j++)
                sync_content_clear(&tmp[j]);
            break;
        }
        for (size_t j = 0; j < m; j++) {
            sync_content_clear(&out[idx[j]]);
            out[idx[j]] = tmp[j];
            memset(&tmp[j], 0, sizeof(tmp[j]));
        }
    }
    rc = KB_OK;
out:
    free(again);
    free(idx);
    free(tmp);
    return rc;
}

static void kb_free(sync_source *s)
{
    kbsrc *k;
    if (s == NULL)
        return;
    k = s->impl;
    if (k) {
        for (size_t i = 0; i < k->nsrv; i++) {
            kb_httpc_free(k->srv[i].http);
            free(k->srv[i].url);
        }
        SSL_CTX_free(k->ctx);
        free(k->server_id);
        free(k);
    }
    free(s);
}

static const sync_source_ops KB_OPS = {"keybridged", kb_list, kb_fetch, kb_free};

const char *sync_source_keybridge_why(const sync_source *s)
{
    return s && s->impl ? ((const kbsrc *)s->impl)->why : "";
}

/* One replica: its URL (trailing slashes dropped), path prefix and client. */
static kb_err server_open(kbsrc *k, kbserver *sv, const char *url)
{
    size_t ul;
    kb_httpc_url u;
    kb_err rc;
    sv->url = strdup(url);
    KB_ENSURE(sv->url != NULL, KB_ERR_NOMEM);
    ul = strlen(sv->url);
    while (ul > 8 && sv->url[ul - 1] == '/')
        sv->url[--ul] = '\0';
    KB_ENSURE(kb_httpc_parse_url(sv->url, &u) == KB_OK, KB_ERR_CONFIG);
    KB_ENSURE(u.target[u.path_len] == '\0', KB_ERR_CONFIG); /* no query */
    if (u.path_len > 1)
        memcpy(sv->prefix, u.target, u.path_len + 1);
    {
        kb_httpc_opts ho = {sv->url, NULL, k->ctx, "keybridge-sync/" KB_VERSION};
        rc = kb_httpc_new(&ho, &sv->http);
        if (rc == KB_ERR_INVALID)
            rc = KB_ERR_CONFIG;
    }
    return rc;
}

kb_err sync_source_keybridge_new(const sync_kb_opts *o, sync_source **out)
{
    sync_source *s = NULL;
    kbsrc *k = NULL;
    spiffe_id sid;
    kb_urllist ul;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    memset(&ul, 0, sizeof(ul));
    KB_ENSURE(o->url != NULL, KB_ERR_CONFIG);
    KB_ENSURE(o->server_id != NULL && spiffe_id_parse_str(o->server_id, &sid, NULL) == KB_OK &&
                  !spiffe_id_is_root(&sid),
              KB_ERR_CONFIG);
    KB_ENSURE(o->identity != NULL && o->identity->svid != NULL && o->identity->bundles != NULL,
              KB_ERR_CONFIG);
    rc = kb_urllist_add(&ul, o->url, "https://");
    if (rc != KB_OK)
        return rc == KB_ERR_NOMEM ? rc : KB_ERR_CONFIG;
    /* every client walks the list in the same cyclic order from its own stable offset */
    kb_urllist_order(&ul, spiffe_id_str(x509svid_id(o->identity->svid)));
    s = calloc(1, sizeof(*s));
    k = calloc(1, sizeof(*k));
    if (s == NULL || k == NULL) {
        free(s);
        free(k);
        kb_urllist_free(&ul);
        return KB_ERR_NOMEM;
    }
    s->ops = &KB_OPS;
    s->impl = k;
    k->id = o->identity;
    k->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    k->clock = o->clock;
    k->server_id = strdup(o->server_id);
    KB_ENSURE_OUT(rc, k->server_id != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, build_ctx(k));
    for (size_t i = 0; i < ul.n; i++) {
        rc = server_open(k, &k->srv[k->nsrv++], kb_urllist_at(&ul, i));
        KB_GUARD_OUT(rc, rc);
    }
    kb_urllist_free(&ul);
    *out = s;
    return KB_OK;
out:
    kb_urllist_free(&ul);
    kb_free(s);
    return rc;
}

const char *sync_source_keybridge_server(const sync_source *s)
{
    const kbsrc *k = s && s->impl ? s->impl : NULL;
    return k && k->nsrv > 0 ? k->srv[k->cur].url : "";
}
