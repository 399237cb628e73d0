/* httpc.h - a small HTTP/1.1 client on OpenSSL for keybridge's outbound calls (the syncer's
 * keybridged and Secrets Manager peers, keybridge-ca's targets), so those programs need no libcurl.
 *
 * One kb_httpc talks to one origin (scheme, host, port) over at most one keep-alive connection,
 * reused across calls and reopened when the peer closed it (docs/internals/httpc.md):
 *   - http:// only to loopback (127.0.0.0/8, ::1, localhost): bodies carry secrets;
 *   - https:// with TLS 1.2 or later. Without opts.ssl_ctx: peer verified against ca_file or the
 *     system CA store, host name (or IP) checked, SNI sent. With opts.ssl_ctx the caller's context
 *     decides everything about the peer (client certificate, verify callback, trust store); httpc
 *     then does no host name check and loads no CA store. Sessions are never resumed.
 *   - responses parsed strictly (RFC 9112): status line, header section <= KB_HTTPC_MAX_HEADER,
 *     Content-Length or chunked bodies bounded by the caller's kb_dbuf max, no obs-fold, no bare
 *     LF/CR, no duplicate Content-Length, no Content-Length with Transfer-Encoding, nothing after
 *     the response on a kept-alive connection;
 *   - one deadline per call covers connect, TLS handshake, write and read (poll); EINTR-safe;
 *     never raises SIGPIPE (MSG_NOSIGNAL, also under TLS through a small BIO).
 * A kb_httpc is not thread-safe: one thread uses it at a time.
 */
#ifndef KB_HTTPC_H
#define KB_HTTPC_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "buf.h"
#include "err.h"

#define KB_HTTPC_MAX_HEADER ((size_t)16 * 1024) /* status line + header fields (+ trailers) */
#define KB_HTTPC_MAX_FIELDS 100                 /* header fields in one response */
#define KB_HTTPC_MAX_URL 2048
#define KB_HTTPC_DEFAULT_TIMEOUT_MS 10000

typedef struct kb_httpc kb_httpc;

typedef struct {
    int tls;                       /* https */
    char host[256];                /* without brackets: "127.0.0.1", "::1", "example.com" */
    char authority[272];           /* as written in the URL, for Host: "[::1]:8443" */
    char port[6];                  /* "443" when not written */
    char target[KB_HTTPC_MAX_URL]; /* path (default "/") and "?query" as written */
    size_t path_len;               /* target[0..path_len) is the path */
} kb_httpc_url;

/* Split "http[s]://host[:port][/path][?query]". KB_ERR_INVALID for anything else: other schemes,
 * user info, fragments, spaces or control characters, a bad port; KB_ERR_TOO_LARGE past
 * KB_HTTPC_MAX_URL. */
KB_WUR kb_err kb_httpc_parse_url(const char *url, kb_httpc_url *out);
/* 127.0.0.0/8, ::1 or localhost. */
int kb_httpc_host_is_loopback(const char *host);

typedef struct {
    const char *url;        /* origin; a path in it is ignored (requests name their own) */
    const char *ca_file;    /* https without ssl_ctx: PEM trust anchors; NULL = system store */
    SSL_CTX *ssl_ctx;       /* https: caller's client context (a reference is taken), or NULL */
    const char *user_agent; /* or NULL */
} kb_httpc_opts;

/* KB_ERR_INVALID (bad URL), KB_ERR_CONFIG (http to a non-loopback host, unusable ca_file),
 * KB_ERR_CRYPTO, KB_ERR_NOMEM. Nothing is connected yet. */
KB_WUR kb_err kb_httpc_new(const kb_httpc_opts *o, kb_httpc **out);
void kb_httpc_free(kb_httpc *c);

typedef struct {
    const char *name;
    const char *value;
} kb_httpc_field;

typedef struct {
    const char *method;           /* "GET", "POST", ... */
    const char *target;           /* origin-form "/path?query" */
    const kb_httpc_field *fields; /* extra header fields (not Host, Content-Length,
                                     Transfer-Encoding, Connection: httpc writes those) */
    size_t n_fields;
    const void *body; /* sent with Content-Length when not NULL (also for an empty body) */
    size_t body_len;
    long timeout_ms; /* whole call; 0 = KB_HTTPC_DEFAULT_TIMEOUT_MS */
} kb_httpc_req;

/* One exchange. On KB_OK *status is the final status (any: 4xx/5xx are answers, not errors) and
 * the body was appended to body (KB_ERR_TOO_LARGE past body->max; the buffer wipes on reset/free).
 * Errors: KB_ERR_INVALID (bad request arguments, malformed response), KB_ERR_TOO_LARGE (header
 * section or body over its limit), KB_ERR_TRUNCATED (connection closed mid-response),
 * KB_ERR_TRAILING (bytes after the response), KB_ERR_TIMEOUT, KB_ERR_UNAVAILABLE (could not
 * resolve/connect, connection reset or closed before an answer), KB_ERR_AUTH (TLS handshake or
 * peer verification failed), KB_ERR_IO. After any error the connection is closed. */
KB_WUR kb_err kb_httpc_do(kb_httpc *c, const kb_httpc_req *r, int *status, kb_dbuf *body);

/* Value of a header field of the last response (first occurrence, case-insensitive name), or
 * NULL. Valid until the next call. */
const char *kb_httpc_field_get(const kb_httpc *c, const char *name);
/* How far the last kb_httpc_do got before it returned: CONNECT (no connection: refused,
 * unresolvable, connect timeout), HANDSHAKE (connected, TLS handshake not done: closed, reset,
 * alert or refused peer), EXCHANGE (the request was being written or the answer read). Nothing
 * of the request reached the peer before EXCHANGE, so any request may be sent elsewhere. */
typedef enum {
    KB_HTTPC_STAGE_CONNECT,
    KB_HTTPC_STAGE_HANDSHAKE,
    KB_HTTPC_STAGE_EXCHANGE
} kb_httpc_stage;
kb_httpc_stage kb_httpc_last_stage(const kb_httpc *c);
/* The errno of the last failed connect (ECONNREFUSED: nothing listens; ECONNRESET: a peer reset
 * it), or 0 (no connect failed in the last call, or it failed otherwise: resolution, timeout). */
int kb_httpc_connect_errno(const kb_httpc *c);
/* Connections opened so far (tests and benchmarks check the reuse). */
unsigned kb_httpc_connects(const kb_httpc *c);
/* A short reason for the last transport failure ("" if none); never holds secret data. */
const char *kb_httpc_why(const kb_httpc *c);

/* The response parser on a complete byte string, for fuzzing and tests: head = the request was
 * HEAD. Same errors as kb_httpc_do; KB_ERR_TRAILING when bytes follow the response. */
KB_WUR kb_err kb_httpc_parse_response(const void *p, size_t len, int head, int *status,
                                      kb_dbuf *body);

#endif
