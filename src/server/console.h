/* console.h - the web console: login tokens, browser sessions, CSRF, static assets and the JSON
 * endpoints the single-page UI calls (issue 15, docs/console.md).
 *
 * Pure functions over a request struct, like api.h: serve.c adapts its own TLS listener
 * ([console] listen, server certificate, no client certificate) to console_request, and the mTLS
 * API's POST /v1/console/login to console_login.
 *
 *   1. `keybridge console login` (an admin or owner, over mTLS) -> console_login: a one-time
 *      token (32 random bytes, base64url; only its SHA-256 is kept) valid login_ttl seconds, and
 *      the URL https://<console>/#login=<token> (a fragment: browsers send it to no server,
 *      Referer included).
 *   2. The page posts it to /api/login: the token is consumed (found or not, it cannot be used
 *      twice) and a session is made for the identity that asked: a random session id in a cookie
 *      (HttpOnly, Secure, SameSite=Strict, Path=/api/, Max-Age=session_ttl; only its SHA-256 is
 *      kept) and a random CSRF token the page sends as X-CSRF-Token on every change. Every
 *      comparison is constant-time (CRYPTO_memcmp over every slot).
 *   3. /api/v1/admin/... is the admin API itself (api_handle), called with the session's
 *      identity: the same routes, parsers, authorization (admins; owners only for their groups'
 *      secrets, service.h svc_may_manage) and audit rows as over mTLS. The client row is checked
 *      on every request, so a disabled client's sessions stop working at once.
 *
 * Thread safety: every call may be made concurrently (one mutex over the slots).
 */
#ifndef KB_SERVER_CONSOLE_H
#define KB_SERVER_CONSOLE_H

#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "lib/err.h"
#include "service.h"

#define CONSOLE_SECRET_LEN 32           /* random bytes in a token, a session id, a CSRF token */
#define CONSOLE_SECRET_B64 43           /* their base64url length (unpadded) */
#define CONSOLE_TOKENS_MAX 64           /* pending login tokens (oldest dropped past it) */
#define CONSOLE_SESSIONS_MAX 256        /* live sessions (the one expiring soonest dropped) */
#define CONSOLE_LOGIN_TTL_DEFAULT 60    /* seconds a login URL stays valid */
#define CONSOLE_SESSION_TTL_DEFAULT 900 /* seconds a session lives (not extended by use) */
#define CONSOLE_TTL_MAX 86400
#define CONSOLE_URL_MAX 512
#define CONSOLE_COOKIE "kb_console"
#define CONSOLE_CSRF_HEADER "X-CSRF-Token"

/* An embedded file (generated from src/server/console/ by cmake/embed_assets.cmake). */
typedef struct {
    const char *path; /* "/index.html" */
    const char *content_type;
    const uint8_t *data;
    size_t len;
} console_asset;
extern const console_asset console_assets[]; /* ends with a NULL path */

/* Headers on every console answer (assets and JSON alike): CSP without inline script or style,
 * no framing, no sniffing, no referrer. {name, value} pairs, ending with {NULL, NULL}. */
extern const char *const console_headers[][2];

typedef struct console console;

typedef struct {
    const char *url;     /* the console's base URL, e.g. "https://127.0.0.1:8444" (no slash) */
    int64_t login_ttl;   /* seconds; 0 = CONSOLE_LOGIN_TTL_DEFAULT */
    int64_t session_ttl; /* seconds; 0 = CONSOLE_SESSION_TTL_DEFAULT */
} console_opts;

KB_WUR kb_err console_new(svc *s, const console_opts *o, console **out);
void console_free(console *cn);

/* POST /v1/console/login on the mTLS API (req->spiffe_id verified by the handshake): an enabled
 * admin or owner (svc_console_allowed) gets 201 {"url","expires_at","identity"}; unknown 401,
 * disabled or neither admin nor owner 403. Audited as console.login_token either way. */
void console_login(console *cn, const api_request *req, api_response *r);

typedef struct {
    const char *method, *path, *query; /* raw path and query (no '?'), "" if none */
    const char *cookie;                /* the Cookie header, or NULL */
    const char *csrf;                  /* the X-CSRF-Token header, or NULL */
    const uint8_t *body;
    size_t body_len;
    const char *peer;
    int64_t now;
} console_request;

typedef struct {
    int status;
    const char *content_type; /* NULL = none (no body) */
    const uint8_t *body;      /* an asset's bytes (static) or owned (below) */
    size_t len;
    char *owned;          /* a JSON body this response owns (wiped on clear) */
    char set_cookie[160]; /* "" = no Set-Cookie */
} console_response;

/* Answer one request on the console listener. Never fails: errors are JSON
 * {"error","message"} like the API's. */
void console_handle(console *cn, const console_request *req, console_response *resp);
void console_response_clear(console_response *r);

/* Live sessions and pending tokens (tests). */
void console_counts(console *cn, size_t *tokens, size_t *sessions);

#endif
