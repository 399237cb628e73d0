/* console.c - the web console's login tokens, sessions, CSRF check and routes (console.h).
 *
 * Slots are fixed arrays under one mutex. A token or session id is never kept: only its SHA-256,
 * found by comparing the presented value's hash with EVERY live slot through CRYPTO_memcmp (no
 * early exit), so neither the time nor the answer tells how close a guess was. CSRF tokens are
 * kept as they are (the page must be able to ask for its own again after a reload, with its
 * cookie) and compared with CRYPTO_memcmp too.
 */
#include "console.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "api_common.h"
#include "lib/base64.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/secbuf.h"
#include "lib/spiffe_id.h"

const char *const console_headers[][2] = {
    {"Content-Security-Policy",
     "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
     "frame-ancestors 'none'"},
    {"X-Frame-Options", "DENY"},
    {"X-Content-Type-Options", "nosniff"},
    {"Referrer-Policy", "no-referrer"},
    {"Cross-Origin-Opener-Policy", "same-origin"},
    {"Cross-Origin-Resource-Policy", "same-origin"},
    {"Strict-Transport-Security", "max-age=31536000"},
    {NULL, NULL},
};

typedef struct {
    uint8_t hash[32]; /* SHA-256 of the token / session id */
    char *identity;   /* NULL = free slot */
    int64_t expires_at;
    int64_t created_at;
    char csrf[CONSOLE_SECRET_B64 + 1]; /* sessions only */
} slot;

struct console {
    svc *s;
    char url[CONSOLE_URL_MAX];
    int64_t login_ttl, session_ttl;
    pthread_mutex_t mu;
    slot tokens[CONSOLE_TOKENS_MAX];
    slot sessions[CONSOLE_SESSIONS_MAX];
};

#define CONSOLE_BODY_MAX API_BODY_MAX

/* ---- slots -------------------------------------------------------------------------------- */

static void slot_free(slot *sl)
{
    free(sl->identity);
    kb_wipe(sl, sizeof(*sl));
}

static kb_err sha256(const char *in, size_t len, uint8_t out[32])
{
    unsigned int olen = 0;
    KB_ENSURE(EVP_Digest(in, len, out, &olen, EVP_sha256(), NULL) == 1 && olen == 32,
              KB_ERR_CRYPTO);
    return KB_OK;
}

/* A fresh random value as base64url (CONSOLE_SECRET_B64 characters + NUL). */
static kb_err random_b64(char out[CONSOLE_SECRET_B64 + 1])
{
    uint8_t raw[CONSOLE_SECRET_LEN];
    char *s;
    KB_ENSURE(RAND_priv_bytes(raw, sizeof(raw)) == 1, KB_ERR_CRYPTO);
    s = kb_b64_encode_str(raw, sizeof(raw), KB_B64_URL);
    kb_wipe(raw, sizeof(raw));
    KB_ENSURE(s != NULL, KB_ERR_NOMEM);
    if (strlen(s) != CONSOLE_SECRET_B64) {
        kb_wipe(s, strlen(s));
        free(s);
        return KB_ERR_INTERNAL;
    }
    memcpy(out, s, CONSOLE_SECRET_B64 + 1);
    kb_wipe(s, CONSOLE_SECRET_B64);
    free(s);
    return KB_OK;
}

/* Is v a well-formed secret (exactly CONSOLE_SECRET_B64 base64url characters)? */
static bool secret_shaped(const char *v, size_t len)
{
    if (len != CONSOLE_SECRET_B64)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = v[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

/* The live slot whose hash matches, or NULL; expired slots are freed on the way. Every live
 * slot is compared (no early exit). Called with cn->mu held. */
static slot *find_locked(slot *arr, size_t n, const uint8_t hash[32], int64_t now)
{
    slot *hit = NULL;
    for (size_t i = 0; i < n; i++) {
        if (arr[i].identity == NULL)
            continue;
        if (arr[i].expires_at <= now) {
            slot_free(&arr[i]);
            continue;
        }
        if (CRYPTO_memcmp(arr[i].hash, hash, 32) == 0)
            hit = &arr[i];
    }
    return hit;
}

/* A free slot, else the one expiring soonest (dropped). Called with cn->mu held. */
static slot *take_locked(slot *arr, size_t n, int64_t now)
{
    slot *best = &arr[0];
    for (size_t i = 0; i < n; i++) {
        if (arr[i].identity != NULL && arr[i].expires_at <= now)
            slot_free(&arr[i]);
        if (arr[i].identity == NULL)
            return &arr[i];
        if (arr[i].expires_at < best->expires_at)
            best = &arr[i];
    }
    slot_free(best);
    return best;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

kb_err console_new(svc *s, const console_opts *o, console **out)
{
    console *cn;
    KB_ENSURE(s != NULL && o != NULL && o->url != NULL && out != NULL, KB_ERR_INVALID);
    KB_ENSURE(strlen(o->url) < CONSOLE_URL_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(o->login_ttl >= 0 && o->login_ttl <= CONSOLE_TTL_MAX, KB_ERR_CONFIG);
    KB_ENSURE(o->session_ttl >= 0 && o->session_ttl <= CONSOLE_TTL_MAX, KB_ERR_CONFIG);
    cn = calloc(1, sizeof(*cn));
    KB_ENSURE(cn != NULL, KB_ERR_NOMEM);
    cn->s = s;
    snprintf(cn->url, sizeof(cn->url), "%s", o->url);
    cn->login_ttl = o->login_ttl > 0 ? o->login_ttl : CONSOLE_LOGIN_TTL_DEFAULT;
    cn->session_ttl = o->session_ttl > 0 ? o->session_ttl : CONSOLE_SESSION_TTL_DEFAULT;
    pthread_mutex_init(&cn->mu, NULL);
    *out = cn;
    return KB_OK;
}

void console_free(console *cn)
{
    if (cn == NULL)
        return;
    for (size_t i = 0; i < CONSOLE_TOKENS_MAX; i++)
        slot_free(&cn->tokens[i]);
    for (size_t i = 0; i < CONSOLE_SESSIONS_MAX; i++)
        slot_free(&cn->sessions[i]);
    pthread_mutex_destroy(&cn->mu);
    free(cn);
}

void console_counts(console *cn, size_t *tokens, size_t *sessions)
{
    *tokens = *sessions = 0;
    pthread_mutex_lock(&cn->mu);
    for (size_t i = 0; i < CONSOLE_TOKENS_MAX; i++)
        *tokens += cn->tokens[i].identity != NULL;
    for (size_t i = 0; i < CONSOLE_SESSIONS_MAX; i++)
        *sessions += cn->sessions[i].identity != NULL;
    pthread_mutex_unlock(&cn->mu);
}

/* ---- mTLS: issue a login token ------------------------------------------------------------ */

void console_login(console *cn, const api_request *req, api_response *r)
{
    svc_actor a = {.identity = req->spiffe_id ? req->spiffe_id : "",
                   .peer = req->peer ? req->peer : "",
                   .now = req->now};
    store_client who;
    svc_scope sc;
    char tok[CONSOLE_SECRET_B64 + 1];
    char url[CONSOLE_URL_MAX + 64];
    slot *sl;
    kb_err rc;

    memset(r, 0, sizeof(*r));
    memset(&sc, 0, sizeof(sc));
    memset(&who, 0, sizeof(who));
    if (req->spiffe_id == NULL || req->spiffe_id[0] == '\0') {
        api_error(r, 401, "auth", "a client certificate is required");
        return;
    }
    if (strcmp(req->method, "POST") != 0) {
        api_error(r, 405, "method_not_allowed", "method not allowed on this route");
        return;
    }
    if ((req->query && req->query[0]) || req->body_len != 0) {
        api_error(r, 400, "invalid", "this route takes no query and no body");
        return;
    }
    rc = svc_client_auth(cn->s, &a, &who);
    if (rc == KB_ERR_NOT_FOUND) {
        api_error(r, 401, "auth", "unknown client");
        return;
    }
    if (rc == KB_ERR_DENIED || rc == KB_ERR_INTEGRITY) {
        api_error(r, 403, "denied", "client is disabled");
        return;
    }
    if (rc == KB_OK)
        rc = svc_scope_get(cn->s, &who, &sc);
    if (rc != KB_OK) {
        api_error_kb(r, rc, "");
        goto out;
    }
    if (!svc_console_allowed(&who, &sc)) {
        svc_audit_event(cn->s, &a, "console.login_token", "", 0, KB_ERR_DENIED);
        api_error(r, 403, "denied", "the console is for admins and members of owner groups");
        goto out;
    }
    rc = random_b64(tok);
    if (rc == KB_OK) {
        pthread_mutex_lock(&cn->mu);
        sl = take_locked(cn->tokens, CONSOLE_TOKENS_MAX, req->now);
        rc = sha256(tok, CONSOLE_SECRET_B64, sl->hash);
        sl->identity = rc == KB_OK ? strdup(req->spiffe_id) : NULL;
        if (rc == KB_OK && sl->identity == NULL)
            rc = KB_ERR_NOMEM;
        sl->created_at = req->now;
        sl->expires_at = req->now + cn->login_ttl;
        if (rc != KB_OK)
            slot_free(sl);
        pthread_mutex_unlock(&cn->mu);
    }
    svc_audit_event(cn->s, &a, "console.login_token", "", 0, rc);
    if (rc != KB_OK) {
        api_error_kb(r, rc, "");
        goto out;
    }
    snprintf(url, sizeof(url), "%s/#login=%s", cn->url, tok);
    api_ok(r, 201,
           json_pack("{s:s,s:I,s:s}", "url", url, "expires_at",
                     (json_int_t)(req->now + cn->login_ttl), "identity", req->spiffe_id));
    kb_wipe(url, sizeof(url));
out:
    kb_wipe(tok, sizeof(tok));
    svc_scope_clear(&sc);
    store_client_clear(&who);
}

/* ---- console listener --------------------------------------------------------------------- */

static void owned_drop(console_response *r)
{
    kb_json_free_str(r->owned); /* wipes */
    r->owned = NULL;
}

void console_response_clear(console_response *r)
{
    if (r == NULL)
        return;
    owned_drop(r);
    memset(r, 0, sizeof(*r));
}

static void reply_json(console_response *r, int status, json_t *body)
{
    static const char oom[] = "{\"error\":\"internal\",\"message\":\"out of memory\"}";
    char *t = body ? kb_json_dump(body) : NULL;
    json_decref(body);
    owned_drop(r);
    r->content_type = "application/json";
    if (t == NULL) {
        r->status = 500;
        r->body = (const uint8_t *)oom;
        r->len = sizeof(oom) - 1;
        return;
    }
    r->owned = t;
    r->status = status;
    r->body = (const uint8_t *)t;
    r->len = strlen(t);
}

static void reply_error(console_response *r, int status, const char *code, const char *msg)
{
    reply_json(r, status, json_pack("{s:s,s:s}", "error", code, "message", msg));
}

/* The session id from the Cookie header ("a=b; kb_console=ID; c=d"), or false. */
static bool cookie_session(const char *cookie, char out[CONSOLE_SECRET_B64 + 1])
{
    static const char name[] = CONSOLE_COOKIE "=";
    const char *p = cookie;
    if (cookie == NULL)
        return false;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && *p == ' ') {
            p++;
            len--;
        }
        if (len > sizeof(name) - 1 && memcmp(p, name, sizeof(name) - 1) == 0) {
            const char *v = p + sizeof(name) - 1;
            size_t vl = len - (sizeof(name) - 1);
            if (!secret_shaped(v, vl))
                return false;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return true;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    return false;
}

typedef struct {
    char identity[SPIFFE_ID_MAX + 1];
    char csrf[CONSOLE_SECRET_B64 + 1];
    int64_t expires_at;
} session_view;

/* The live session of the request's cookie (copied out), or false. */
static bool session_get(console *cn, const console_request *req, session_view *out,
                        uint8_t hash_out[32])
{
    char sid[CONSOLE_SECRET_B64 + 1];
    uint8_t h[32];
    slot *sl;
    bool ok = false;
    if (!cookie_session(req->cookie, sid))
        return false;
    if (sha256(sid, CONSOLE_SECRET_B64, h) != KB_OK) {
        kb_wipe(sid, sizeof(sid));
        return false;
    }
    kb_wipe(sid, sizeof(sid));
    pthread_mutex_lock(&cn->mu);
    sl = find_locked(cn->sessions, CONSOLE_SESSIONS_MAX, h, req->now);
    if (sl != NULL && strlen(sl->identity) < sizeof(out->identity)) {
        snprintf(out->identity, sizeof(out->identity), "%s", sl->identity);
        memcpy(out->csrf, sl->csrf, sizeof(out->csrf));
        out->expires_at = sl->expires_at;
        ok = true;
    }
    pthread_mutex_unlock(&cn->mu);
    if (hash_out != NULL)
        memcpy(hash_out, h, 32);
    return ok;
}

static bool csrf_ok(const console_request *req, const session_view *sv)
{
    size_t len = req->csrf ? strlen(req->csrf) : 0;
    if (!secret_shaped(req->csrf ? req->csrf : "", len))
        return false;
    return CRYPTO_memcmp(req->csrf, sv->csrf, CONSOLE_SECRET_B64) == 0;
}

static json_t *session_json(const session_view *sv, bool admin)
{
    return json_pack("{s:s,s:s,s:I,s:b}", "identity", sv->identity, "csrf", sv->csrf, "expires_at",
                     (json_int_t)sv->expires_at, "admin", admin);
}

/* Is the identity (still) an enabled admin? For the page's menus only: every API call decides
 * access again through api_handle. */
static bool is_admin(console *cn, const char *identity)
{
    store_client c;
    bool admin = false;
    if (store_client_get(svc_store(cn->s), identity, &c) == KB_OK) {
        admin = c.enabled && c.admin;
        store_client_clear(&c);
    }
    return admin;
}

/* POST /api/login {"token": T}: consume the token, open a session. */
static void h_login(console *cn, const console_request *req, console_response *r)
{
    static const char *const keys[] = {"token", NULL};
    svc_actor a = {.identity = "console", .peer = req->peer ? req->peer : "", .now = req->now};
    json_t *body = NULL;
    const json_t *t;
    const char *bad = NULL;
    char why[128] = "";
    char sid[CONSOLE_SECRET_B64 + 1] = "";
    uint8_t h[32];
    session_view sv;
    slot *sl;
    kb_err rc;

    memset(&sv, 0, sizeof(sv));
    if (req->body_len > CONSOLE_BODY_MAX) {
        reply_error(r, 413, "too_large", "request body too large");
        return;
    }
    rc = kb_json_parse(req->body, req->body_len, CONSOLE_BODY_MAX, &body, why, sizeof(why));
    if (rc != KB_OK) {
        reply_error(r, rc == KB_ERR_TOO_LARGE ? 413 : 400, kb_err_str(rc),
                    why[0] ? why : "malformed JSON body");
        return;
    }
    if (kb_json_only_keys(body, keys, &bad) != KB_OK) {
        reply_error(r, 400, "invalid", "unknown field in request body");
        goto out;
    }
    t = json_object_get(body, "token");
    if (!json_is_string(t)) {
        reply_error(r, 400, "invalid", "token must be a string");
        goto out;
    }
    /* A malformed token is answered like an unknown one. */
    if (!secret_shaped(json_string_value(t), json_string_length(t)) ||
        sha256(json_string_value(t), CONSOLE_SECRET_B64, h) != KB_OK) {
        svc_audit_event(cn->s, &a, "console.login", "", 0, KB_ERR_AUTH);
        reply_error(r, 401, "auth", "login link invalid, used or expired");
        goto out;
    }
    pthread_mutex_lock(&cn->mu);
    sl = find_locked(cn->tokens, CONSOLE_TOKENS_MAX, h, req->now);
    if (sl != NULL) {
        snprintf(sv.identity, sizeof(sv.identity), "%s", sl->identity);
        slot_free(sl); /* single use */
    }
    pthread_mutex_unlock(&cn->mu);
    if (sv.identity[0] == '\0') {
        svc_audit_event(cn->s, &a, "console.login", "", 0, KB_ERR_AUTH);
        reply_error(r, 401, "auth", "login link invalid, used or expired");
        goto out;
    }
    a.identity = sv.identity;
    rc = random_b64(sid);
    if (rc == KB_OK)
        rc = random_b64(sv.csrf);
    if (rc == KB_OK)
        rc = sha256(sid, CONSOLE_SECRET_B64, h);
    if (rc == KB_OK) {
        pthread_mutex_lock(&cn->mu);
        sl = take_locked(cn->sessions, CONSOLE_SESSIONS_MAX, req->now);
        sl->identity = strdup(sv.identity);
        if (sl->identity == NULL) {
            rc = KB_ERR_NOMEM;
        } else {
            memcpy(sl->hash, h, 32);
            memcpy(sl->csrf, sv.csrf, sizeof(sl->csrf));
            sl->created_at = req->now;
            sl->expires_at = sv.expires_at = req->now + cn->session_ttl;
        }
        pthread_mutex_unlock(&cn->mu);
    }
    svc_audit_event(cn->s, &a, "console.login", "", 0, rc);
    if (rc != KB_OK) {
        reply_error(r, 500, "internal", "internal error");
        goto out;
    }
    snprintf(r->set_cookie, sizeof(r->set_cookie),
             CONSOLE_COOKIE "=%s; Path=/api/; Max-Age=%lld; HttpOnly; Secure; SameSite=Strict", sid,
             (long long)cn->session_ttl);
    reply_json(r, 200, session_json(&sv, is_admin(cn, sv.identity)));
out:
    kb_wipe(sid, sizeof(sid));
    kb_wipe(&sv, sizeof(sv));
    json_decref(body);
}

static void clear_cookie(console_response *r)
{
    snprintf(r->set_cookie, sizeof(r->set_cookie),
             CONSOLE_COOKIE "=; Path=/api/; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
}

/* POST /api/logout (CSRF): drop the session. */
static void h_logout(console *cn, const console_request *req, const session_view *sv,
                     const uint8_t hash[32], console_response *r)
{
    svc_actor a = {.identity = sv->identity, .peer = req->peer ? req->peer : "", .now = req->now};
    slot *sl;
    pthread_mutex_lock(&cn->mu);
    sl = find_locked(cn->sessions, CONSOLE_SESSIONS_MAX, hash, req->now);
    if (sl != NULL)
        slot_free(sl);
    pthread_mutex_unlock(&cn->mu);
    svc_audit_event(cn->s, &a, "console.logout", "", 0, KB_OK);
    clear_cookie(r);
    reply_json(r, 200, json_pack("{s:s}", "result", "ok"));
}

/* /api/v1/admin/...: the admin API with the session's identity. */
static void h_api(console *cn, const console_request *req, const session_view *sv,
                  console_response *r)
{
    api_request ar = {.method = req->method,
                      .path = req->path + 4, /* "/api/v1/admin/..." -> "/v1/admin/..." */
                      .query = req->query ? req->query : "",
                      .body = req->body,
                      .body_len = req->body_len,
                      .peer = req->peer ? req->peer : "",
                      .spiffe_id = sv->identity,
                      .now = req->now};
    api_response ap;
    api_handle_raw(cn->s, &ar, &ap);
    if (ap.raw != NULL) {
        r->owned = malloc(ap.raw_len + 1);
        if (r->owned == NULL) {
            reply_error(r, 500, "internal", "out of memory");
        } else {
            memcpy(r->owned, ap.raw, ap.raw_len);
            r->owned[ap.raw_len] = '\0';
            r->status = ap.status;
            r->content_type = "application/json";
            r->body = (const uint8_t *)r->owned;
            r->len = ap.raw_len;
        }
    } else if (ap.body != NULL) {
        reply_json(r, ap.status, json_incref(ap.body));
    } else {
        r->status = ap.status;
    }
    api_response_clear(&ap);
}

static bool is(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

void console_handle(console *cn, const console_request *req, console_response *r)
{
    session_view sv;
    uint8_t hash[32];
    const char *m, *path;
    bool change;

    memset(r, 0, sizeof(*r));
    memset(&sv, 0, sizeof(sv));
    if (cn == NULL || req == NULL || req->method == NULL || req->path == NULL) {
        reply_error(r, 400, "invalid", "malformed request");
        return;
    }
    m = req->method;
    path = req->path;
    if (!has_prefix(path, "/api/")) {
        const char *want = is(path, "/") ? "/index.html" : path;
        if (!is(m, "GET") && !is(m, "HEAD")) {
            reply_error(r, 405, "method_not_allowed", "method not allowed on this route");
            return;
        }
        for (size_t i = 0; console_assets[i].path != NULL; i++) {
            if (is(console_assets[i].path, want)) {
                r->status = 200;
                r->content_type = console_assets[i].content_type;
                r->body = console_assets[i].data;
                r->len = console_assets[i].len;
                return;
            }
        }
        reply_error(r, 404, "not_found", "no such page");
        return;
    }
    if (is(path, "/api/login")) {
        if (!is(m, "POST"))
            reply_error(r, 405, "method_not_allowed", "method not allowed on this route");
        else
            h_login(cn, req, r);
        return;
    }
    if (!session_get(cn, req, &sv, hash)) {
        reply_error(r, 401, "auth", "no session or session expired: log in again");
        clear_cookie(r);
        goto out;
    }
    change = !is(m, "GET") && !is(m, "HEAD");
    if (change && !csrf_ok(req, &sv)) {
        svc_actor a = {
            .identity = sv.identity, .peer = req->peer ? req->peer : "", .now = req->now};
        svc_audit_event(cn->s, &a, "console.csrf_refused", "", 0, KB_ERR_DENIED);
        reply_error(r, 403, "csrf", "missing or wrong " CONSOLE_CSRF_HEADER " header");
        goto out;
    }
    if (is(path, "/api/session")) {
        if (!is(m, "GET"))
            reply_error(r, 405, "method_not_allowed", "method not allowed on this route");
        else
            reply_json(r, 200, session_json(&sv, is_admin(cn, sv.identity)));
    } else if (is(path, "/api/logout")) {
        if (!is(m, "POST"))
            reply_error(r, 405, "method_not_allowed", "method not allowed on this route");
        else
            h_logout(cn, req, &sv, hash, r);
    } else if (has_prefix(path, "/api/v1/admin/")) {
        h_api(cn, req, &sv, r);
    } else {
        reply_error(r, 404, "not_found", "no such route");
    }
out:
    kb_wipe(&sv, sizeof(sv));
}
