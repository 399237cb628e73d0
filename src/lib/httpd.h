/* httpd.h - the shared HTTP/1.1 server layer (plain HTTP on loopback, HTTPS, mTLS with SPIFFE).
 *
 * keybridged, keybridge-ca and keybridge-cache serve through this layer. It owns sockets, TLS,
 * limits and timeouts; the program owns routing and authorization.
 *
 *     kb_httpd_opts o = {.listen = "127.0.0.1:8443", .cert_file = ..., .key_file = ...,
 *                        .client_ca_file = ..., .verify_peer = my_svid_check,
 *                        .handler = route, .handler_arg = app};
 *     kb_httpd *h;
 *     KB_GUARD(kb_httpd_new(&o, &h));      // binds now, fails fast
 *     ... kb_httpd_run(h) blocks; kb_httpd_stop(h) (from a signal handler or a thread) ends it.
 *
 * Threads: `threads` event loops, each with its own listener on the same address
 * (SO_REUSEPORT), so the handler is called CONCURRENTLY from several threads: it must be
 * thread-safe. A request belongs to one loop and must be answered from inside the handler
 * (kb_http_reply* exactly once; a handler that returns without replying gets a 500).
 *
 * Every reply carries `Cache-Control: no-store`. Errors produced by the layer itself (malformed
 * request 400, over-limit 413/431, unsupported 501/505, timeouts) are JSON
 * {"error": code, "message": msg}. Nothing the client sent (header values, bodies) is logged.
 */
#ifndef KB_HTTPD_H
#define KB_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/x509.h>

#include "err.h"
#include "tlsctx.h"

typedef struct kb_httpd kb_httpd;
typedef struct kb_http_req kb_http_req;
typedef void (*kb_http_handler)(kb_http_req *req, void *arg);

/* Called during the TLS handshake with the peer's leaf and the untrusted chain it sent (leaf
 * first; OpenSSL has NOT verified it: this callback does all verification itself, e.g. SPIFFE
 * X509-SVID rules against the bundle). Return 1 to accept and write the peer's SPIFFE ID into
 * id[0..id_len) (NUL-terminated), 0 to refuse (*why = a short static reason, logged). Called
 * from loop threads, concurrently: must be thread-safe. */
typedef kb_tls_peer_verify kb_http_peer_verify;
/* Inside verify_peer, kb_tlsctx_verify_bundle() (tlsctx.h) returns the X509_STORE loaded from
 * client_ca_file, so hot-reloaded bundles reach the check. */

/* Defaults, and hard ceilings for the limits. */
#define KB_HTTPD_MAX_HEADER_DEFAULT ((size_t)16 * 1024)
#define KB_HTTPD_MAX_BODY_DEFAULT ((size_t)1024 * 1024)
#define KB_HTTPD_TIMEOUT_DEFAULT 10
#define KB_HTTPD_MAX_CONN_DEFAULT 4096
#define KB_HTTPD_HANDSHAKE_TIMEOUT_DEFAULT 5
#define KB_HTTPD_MAX_HANDSHAKES_DEFAULT 1024
/* Times a handshake deadline starts again because the handshake moved or the client's bytes
 * wait unread (a busy loop, not a stalled client): a handshake lasts at most
 * (1 + this) x handshake_timeout_secs. */
#define KB_HTTPD_HANDSHAKE_EXTENSIONS 5
/* Pending handshakes the pre-handshake cap looks through for an idle one to close (bounded work
 * per accept; past it the oldest is closed). */
#define KB_HTTPD_HS_CAP_SCAN 64
#define KB_HTTPD_MAX_HEADERS_COUNT 100 /* header fields per request */
#define KB_HTTPD_MAX_THREADS 256
#define KB_HTTPD_PEER_ID_MAX 2048 /* SPIFFE IDs are at most 2048 bytes */

typedef struct {
    const char *listen;              /* "127.0.0.1:8443", "[::1]:8443"; port 0 = ephemeral */
    int threads;                     /* event loops; 0 = number of online CPUs */
    const char *cert_file;           /* server chain PEM (leaf first); NULL = plain HTTP */
    const char *key_file;            /* server key PEM (must not be group/world accessible) */
    const char *client_ca_file;      /* trust bundle PEM (offered CA names; given to verify_peer) */
    kb_http_peer_verify verify_peer; /* set: mTLS REQUIRED, this callback decides */
    void *verify_arg;
    int allow_plain_non_loopback; /* default 0: plain HTTP only on 127.0.0.0/8 or ::1 */
    size_t max_header_bytes;      /* request line + headers; default 16 KiB; over: 431 */
    size_t max_body_bytes;        /* default 1 MiB; over: 413 */
    int timeout_secs;    /* deadline to receive a whole request, write a reply, or idle; def. 10 */
    int max_connections; /* total cap (across loops), default 4096; over it: closed at accept */
    /* TLS only. A connection must finish its handshake within handshake_timeout_secs (default
     * 5; the request deadline starts after it). At most max_handshakes (default 1024, at most
     * max_connections; split evenly across loops) may be mid-handshake: past it the OLDEST
     * pending handshake is closed to make room, so idle TCP cannot starve real clients. */
    int handshake_timeout_secs;
    int max_handshakes;
    kb_http_handler handler;
    void *handler_arg;
    /* Optional: called from the connection's loop when a connection whose data slot
     * (kb_http_req_conn_data) is non-NULL closes, with that data and handler_arg. Lets a program
     * keep per-connection state, e.g. per-client connection counts. */
    void (*conn_closed)(void *conn_data, void *arg);
} kb_httpd_opts;

/* Validate options, load TLS material, bind and listen. Fails fast (KB_ERR_CONFIG for bad
 * options or a plain listener on a non-loopback address without allow_plain_non_loopback,
 * KB_ERR_CRYPTO/KB_ERR_IO for TLS material, KB_ERR_IO when binding fails). */
KB_WUR kb_err kb_httpd_new(const kb_httpd_opts *o, kb_httpd **out);
/* The bound port (useful with port 0). */
int kb_httpd_port(const kb_httpd *h);
/* Run the event loops (the calling thread runs one of them); returns after kb_httpd_stop. */
KB_WUR kb_err kb_httpd_run(kb_httpd *h);
/* Ask the loops to stop. Async-signal-safe and thread-safe; may be called before run. */
void kb_httpd_stop(kb_httpd *h);
/* Re-read cert/key/bundle and swap the TLS context for NEW connections (existing ones keep
 * theirs). On error the old context stays in use. Thread-safe. Files are also polled every
 * second and reloaded on change. KB_OK without doing anything for plain HTTP. */
KB_WUR kb_err kb_httpd_reload(kb_httpd *h);
/* Number of successful reloads so far (tests, metrics). */
uint64_t kb_httpd_reload_count(const kb_httpd *h);
/* Currently open connections (tests, metrics). */
int kb_httpd_connections(const kb_httpd *h);
/* Stop (if running), wait for loops, close everything. NULL is a no-op. */
void kb_httpd_free(kb_httpd *h);

/* Request accessors: valid only inside the handler. */
const char *kb_http_req_method(kb_http_req *r); /* "GET", "POST", ... */
const char *kb_http_req_path(kb_http_req *r);   /* raw (not decoded) path without the query */
const char *kb_http_req_query(kb_http_req *r);  /* raw query without '?', "" if none */
/* Value of the first header named name (case-insensitive), or NULL. */
const char *kb_http_req_header(kb_http_req *r, const char *name);
size_t kb_http_req_header_count(kb_http_req *r);
void kb_http_req_header_at(kb_http_req *r, size_t i, const char **name, const char **value);
/* Body bytes (contiguous, <= max_body_bytes; chunked bodies are decoded). The layer wipes its
 * copy after the handler returns. *p is never NULL (points at "" when empty). */
void kb_http_req_body(kb_http_req *r, const uint8_t **p, size_t *len);
const char *kb_http_req_peer_addr(kb_http_req *r); /* "127.0.0.1:53211", "[::1]:53211" */
const char *kb_http_req_peer_id(kb_http_req *r);   /* verified SPIFFE ID, or NULL */
X509 *kb_http_req_peer_cert(kb_http_req *r);       /* verified leaf, or NULL (not owned) */
int kb_http_req_is_tls(kb_http_req *r);
/* The connection's data slot (NULL on a new connection), kept across its requests; see
 * kb_httpd_opts.conn_closed. */
void **kb_http_req_conn_data(kb_http_req *r);
/* Close the connection after this reply (the reply says Connection: close). */
void kb_http_req_close_after(kb_http_req *r);

/* Add a response header (before replying). Names/values with CR, LF or NUL are dropped. The
 * layer sets Content-Type, Content-Length, Cache-Control and Connection itself. */
void kb_http_set_header(kb_http_req *r, const char *name, const char *value);
/* Send the reply (exactly once; later calls are ignored). The layer wipes its copies of the
 * body after sending. content_type NULL = no Content-Type header. */
void kb_http_reply(kb_http_req *r, int status, const char *content_type, const void *body,
                   size_t len);
/* Serialize body compactly as application/json (serialization wiped after sending). */
void kb_http_reply_json(kb_http_req *r, int status, const json_t *body);
/* JSON error: {"error": code, "message": msg} */
void kb_http_reply_error(kb_http_req *r, int status, const char *code, const char *message);

#endif
