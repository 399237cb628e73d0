/* httpd.c - HTTP/1.1 server on libevent bufferevents (socket or OpenSSL), one loop per thread.
 *
 * Why not evhttp: libevent 2.1's evhttp answers its own errors (400, 413, 404) with HTML and
 * without our headers, has no hook at accept time (connection cap, TCP_NODELAY), and its timeout
 * is an inactivity timeout, so a client dribbling one header byte every few seconds is never cut
 * off. The request side of HTTP/1.1 that keybridge needs (RFC 9112: request line, fields,
 * Content-Length or chunked bodies, 100-continue, keep-alive, pipelining in order) is small
 * enough to own, and owning it gives JSON errors everywhere, a whole-request deadline, and no
 * per-request allocations. See docs/internals/httpd.md.
 */
#include "lib/httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "lib/buf.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/secbuf.h"

#define KB_HTTPD_BACKLOG 1024
#define KB_HTTPD_POLL_SECS 1 /* certificate file polling */
/* Rebuilding the TLS context rotates the session ticket keys; tickets are accepted for at most
 * KB_TLS_SESSION_TIMEOUT anyway (OpenSSL checks the session's time). */
#define KB_HTTPD_TICKET_ROTATE_SECS KB_TLS_SESSION_TIMEOUT
#define KB_HTTPD_CHUNK_LINE_MAX 256
#define KB_HTTPD_LINGER_SECS 2
#define KB_HTTPD_LINGER_BYTES ((size_t)256 * 1024)
#define KB_HTTPD_RESP_HEAD_MAX ((size_t)64 * 1024)
#define KB_HTTPD_PEER_MAX 64
#define KB_HTTPD_MAX_BODY_CEILING ((size_t)64 * 1024 * 1024)
#define KB_HTTPD_BODY_KEEP ((size_t)64 * 1024) /* larger body buffers are not kept idle */

typedef struct loop loop;
typedef struct conn conn;

typedef struct {
    conn *owner; /* NULL once the connection is gone */
    size_t cap;
    int busy; /* referenced by the output evbuffer */
    uint8_t data[];
} obuf;

struct kb_httpd {
    kb_httpd_opts o;
    char *listen, *cert_file, *key_file, *client_ca_file;
    int is_tls;
    int nloops;
    loop *loops;
    int fds_bound;
    int port;
    int stop_pipe[2];
    atomic_int stopping;
    atomic_int nconn;
    atomic_uint_fast64_t reloads;
    pthread_mutex_t ctx_mu;    /* guards ctx (swapped on reload) */
    pthread_mutex_t reload_mu; /* serializes reloads */
    SSL_CTX *ctx;
    kb_tlsctx_stamp stamp; /* files as last loaded (or last tried) */
    time_t ctx_built;      /* for ticket key rotation */
};

struct loop {
    kb_httpd *h;
    int idx;
    int fd;
    struct event_base *base;
    struct evconnlistener *lev;
    struct event *stop_ev;
    struct event *poll_ev; /* loop 0 only */
    /* libevent "common timeouts": O(1) add/remove for the per-connection deadlines */
    const struct timeval *to_req, *to_linger, *to_hs;
    pthread_t th;
    int started;
    conn *conns; /* doubly linked, for cleanup */
    time_t date_at;
    char date[40];
    time_t cap_logged;
    /* TLS connections still in the handshake, oldest first (the pre-handshake cap) */
    conn *hs_head, *hs_tail;
    int nhs, hs_cap;
    time_t hs_logged;
};

enum conn_state { ST_HEAD, ST_BODY, ST_CHUNK_SIZE, ST_CHUNK_DATA, ST_TRAILER, ST_WRITE, ST_LINGER };

struct kb_http_req {
    conn *c;
    const char *method;
    const char *path;
    const char *query;
    size_t nhdr;
    const char *hname[KB_HTTPD_MAX_HEADERS_COUNT];
    const char *hval[KB_HTTPD_MAX_HEADERS_COUNT];
    int http10;
    int keepalive;
    int is_head;
    int replied;
    kb_dbuf extra; /* handler-set response headers */
};

struct conn {
    loop *lp;
    conn *prev, *next;
    struct bufferevent *bev;
    SSL *ssl;
    struct event *deadline;
    conn *hs_prev, *hs_next; /* loop's handshake list while in_hs */
    int in_hs;
    unsigned hs_steps;       /* handshake state changes so far (info callback) */
    unsigned hs_steps_armed; /* hs_steps when the handshake deadline was last armed */
    int hs_extended;         /* times the handshake deadline was extended (on_deadline) */
    enum conn_state st;
    char peer[KB_HTTPD_PEER_MAX];
    char *hbuf; /* request head copy, parsed in place */
    size_t hcap, hlen;
    size_t hscan; /* bytes of a pending head already checked for bare CR/LF */
    size_t trailer_bytes;
    uint64_t need; /* body bytes (or chunk bytes) still to read */
    int close_after;
    int rd_off;    /* reads disabled (error reply in flight) */
    int linger;    /* drain input after the reply before closing */
    uint8_t *bbuf; /* request body, wiped after the handler */
    size_t bcap, blen;
    kb_dbuf out; /* response head */
    obuf *ob;    /* reply block (head + body), wiped once sent */
    size_t lingered;
    void *data; /* program's per-connection state (kb_http_req_conn_data) */
    kb_http_req req;
};

/* ---------- small helpers ---------- */

static const char *reason_phrase(int s)
{
    switch (s) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Status";
    }
}

/* RFC 9110 section 5.6.2: token characters. */
static int is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return 1;
    return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return 0;
    return 1;
}

/* A field value we are willing to emit: no CTLs except HTAB (no CR/LF injection). */
static int is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return 1;
}

/* Copy n bytes out of an evbuffer, wiping the evbuffer's memory before it is released: request
 * heads carry Authorization and bodies carry secret content. */
static void evbuf_take(struct evbuffer *in, void *dst, size_t n)
{
    struct evbuffer_iovec v[16];
    uint8_t *d = dst;
    size_t left = n;
    while (left > 0) {
        int nv = evbuffer_peek(in, (ev_ssize_t)left, NULL, v, 16);
        if (nv <= 0)
            break;
        size_t got = 0;
        for (int i = 0; i < nv && i < 16 && got < left; i++) {
            size_t k = v[i].iov_len;
            if (k > left - got)
                k = left - got;
            if (d != NULL)
                memcpy(d + got, v[i].iov_base, k);
            kb_wipe(v[i].iov_base, k);
            got += k;
        }
        evbuffer_drain(in, got);
        left -= got;
        if (d != NULL)
            d += got; /* the next peek round continues where this one stopped */
    }
}

/* Make room for n more body bytes; returns where they go, or NULL (out of memory). The old
 * buffer is wiped before it is released. */
static uint8_t *body_grow(conn *c, size_t n)
{
    if (c->bcap - c->blen < n) {
        size_t ncap = c->blen + n;
        if (ncap < 4096)
            ncap = 4096;
        uint8_t *nb = malloc(ncap);
        if (nb == NULL)
            return NULL;
        if (c->bbuf) {
            memcpy(nb, c->bbuf, c->blen);
            kb_wipe(c->bbuf, c->bcap);
            free(c->bbuf);
        }
        c->bbuf = nb;
        c->bcap = ncap;
    }
    uint8_t *dst = c->bbuf + c->blen;
    c->blen += n;
    return dst;
}

static void body_release(conn *c, int keep)
{
    if (c->bbuf == NULL)
        return;
    kb_wipe(c->bbuf, c->blen);
    c->blen = 0;
    if (!keep || c->bcap > KB_HTTPD_BODY_KEEP) {
        kb_wipe(c->bbuf, c->bcap);
        free(c->bbuf);
        c->bbuf = NULL;
        c->bcap = 0;
    }
}

static const char *loop_date(loop *lp)
{
    time_t now = time(NULL);
    if (now != lp->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(lp->date, sizeof(lp->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        lp->date_at = now;
    }
    return lp->date;
}

/* ---------- connection lifetime ---------- */

static void obuf_release(conn *c);

static void hs_unlink(conn *c)
{
    loop *lp = c->lp;
    if (!c->in_hs)
        return;
    if (c->hs_prev)
        c->hs_prev->hs_next = c->hs_next;
    else
        lp->hs_head = c->hs_next;
    if (c->hs_next)
        c->hs_next->hs_prev = c->hs_prev;
    else
        lp->hs_tail = c->hs_prev;
    c->hs_prev = c->hs_next = NULL;
    c->in_hs = 0;
    lp->nhs--;
}

static void conn_free(conn *c)
{
    loop *lp = c->lp;
    hs_unlink(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        lp->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->deadline)
        event_free(c->deadline);
    if (c->ssl != NULL)
        SSL_set_app_data(c->ssl, NULL); /* the SSL may outlive c (bufferevent finalizing) */
    if (c->bev) {
        if (c->ssl != NULL && SSL_is_init_finished(c->ssl) &&
            !(SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN)) {
            /* Best-effort close_notify (RFC 8446 section 6.1); never blocks. */
            SSL_set_quiet_shutdown(c->ssl, 0);
            (void)SSL_shutdown(c->ssl);
            ERR_clear_error();
        }
        bufferevent_free(c->bev); /* closes the fd, frees the SSL */
    }
    if (c->hbuf) {
        kb_wipe(c->hbuf, c->hcap);
        free(c->hbuf);
    }
    obuf_release(c);
    body_release(c, 0);
    kb_dbuf_free(&c->out);
    kb_dbuf_free(&c->req.extra);
    if (c->data != NULL && lp->h->o.conn_closed != NULL)
        lp->h->o.conn_closed(c->data, lp->h->o.handler_arg);
    atomic_fetch_sub(&lp->h->nconn, 1);
    free(c);
}

static void conn_arm(conn *c, const struct timeval *tv)
{
    evtimer_add(c->deadline, tv);
}

static void conn_process(conn *c);

/* ---------- replies ---------- */

/* Called by libevent when the block has been written out, or when the bufferevent is freed
 * (possibly later than the connection: bufferevents are finalized from the loop). */
static void obuf_cleanup(const void *data, size_t len, void *arg)
{
    obuf *o = arg;
    (void)data;
    kb_wipe(o->data, len);
    o->busy = 0;
    if (o->owner == NULL) {
        free(o);
    } else if (o->cap > KB_HTTPD_BODY_KEEP) {
        o->owner->ob = NULL; /* do not keep a large block for an idle connection */
        free(o);
    }
}

static void obuf_release(conn *c)
{
    obuf *o = c->ob;
    c->ob = NULL;
    if (o == NULL)
        return;
    if (o->busy) {
        o->owner = NULL; /* obuf_cleanup frees it */
        return;
    }
    kb_wipe(o->data, o->cap);
    free(o);
}

static void conn_send(conn *c, kb_http_req *r, int status, const char *ctype, const void *body,
                      size_t len)
{
    kb_httpd *h = c->lp->h;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int no_body = (status == 204 || status == 304 || (status >= 100 && status < 200));
    int keep = !c->close_after && r->keepalive && !atomic_load(&h->stopping);
    kb_err rc = KB_OK;

    if (status < 100 || status > 599)
        status = 500;
    if (!keep)
        c->close_after = 1;
    kb_dbuf_reset(&c->out);
    rc = kb_dbuf_addf(&c->out, "HTTP/1.%d %d %s\r\nDate: %s\r\nCache-Control: no-store\r\n",
                      r->http10 ? 0 : 1, status, reason_phrase(status), loop_date(c->lp));
    if (rc == KB_OK && ctype != NULL && !no_body && is_field_value(ctype))
        rc = kb_dbuf_addf(&c->out, "Content-Type: %s\r\n", ctype);
    if (rc == KB_OK && !no_body)
        rc = kb_dbuf_addf(&c->out, "Content-Length: %zu\r\n", len);
    if (rc == KB_OK && !keep)
        rc = kb_dbuf_addstr(&c->out, "Connection: close\r\n");
    else if (rc == KB_OK && r->http10)
        rc = kb_dbuf_addstr(&c->out, "Connection: keep-alive\r\n");
    if (rc == KB_OK && r->extra.len > 0)
        rc = kb_dbuf_add(&c->out, r->extra.p, r->extra.len);
    if (rc == KB_OK)
        rc = kb_dbuf_addstr(&c->out, "\r\n");
    if (rc != KB_OK) {
        static const char fail500[] = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                                      "Cache-Control: no-store\r\nConnection: close\r\n\r\n";
        c->close_after = 1;
        evbuffer_add(out, fail500, sizeof(fail500) - 1);
        return;
    }
    /* Head and body go out as ONE referenced block: one write(2) / one TLS record per
     * reply, and the block is wiped as soon as the socket (or SSL_write) has consumed it, so
     * no unwiped copy of a secret stays in libevent's chains. */
    size_t blen = (!no_body && !r->is_head && body != NULL) ? len : 0;
    size_t total = c->out.len + blen;
    obuf *o = c->ob;
    if (o != NULL && o->busy) { /* cannot happen: one reply in flight per connection */
        c->close_after = 1;
        return;
    }
    if (o == NULL || o->cap < total) {
        obuf_release(c);
        size_t cap = total < 1024 ? 1024 : total;
        o = malloc(sizeof(*o) + cap);
        if (o == NULL) {
            c->close_after = 1;
            return;
        }
        o->owner = c;
        o->cap = cap;
        o->busy = 0;
        c->ob = o;
    }
    memcpy(o->data, c->out.p, c->out.len);
    if (blen > 0)
        memcpy(o->data + c->out.len, body, blen);
    o->busy = 1;
    if (evbuffer_add_reference(out, o->data, total, obuf_cleanup, o) != 0) {
        kb_wipe(o->data, total);
        o->busy = 0;
        c->close_after = 1;
    }
}

/* Layer-generated error (no handler involved): always JSON, always closes unless asked. */
static void conn_error(conn *c, int status, const char *code, const char *msg)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}", code, msg);
    kb_http_req *r = &c->req;
    c->close_after = 1;
    c->linger = 1; /* the client may still be sending what we refused to read */
    kb_dbuf_reset(&r->extra);
    conn_send(c, r, status, "application/json", body, (size_t)n);
    r->replied = 1;
    c->st = ST_WRITE;
    bufferevent_disable(c->bev, EV_READ);
    c->rd_off = 1;
    conn_arm(c, c->lp->to_req);
}

/* ---------- request parsing (RFC 9112) ---------- */

static int has_token(const char *list, const char *tok)
{
    size_t tl = strlen(tok);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, tok, tl) == 0)
            return 1;
        p = e;
    }
    return 0;
}

/* Parse c->hbuf[0..hlen) (ends with CRLF CRLF) in place. Returns 0 or an HTTP status to send. */
static int parse_head(conn *c, const char **code, const char **msg)
{
    kb_http_req *r = &c->req;
    char *p = c->hbuf, *end = c->hbuf + c->hlen;
    *code = "bad_request";
    *msg = "malformed request";

    /* Lines end with CRLF; a bare CR or LF anywhere is an error, not a line ending we guess at
     * (request smuggling, RFC 9112 section 2.2). Check once, then split. */
    for (char *q = p; q < end; q++) {
        if (*q == '\0')
            return 400;
        if (*q == '\r' && (q + 1 >= end || q[1] != '\n'))
            return 400;
        if (*q == '\n' && (q == p || q[-1] != '\r'))
            return 400;
    }
    char *eol = strstr(p, "\r\n");
    *eol = '\0';
    /* request-line = method SP request-target SP HTTP-version */
    char *sp1 = strchr(p, ' ');
    if (sp1 == NULL)
        return 400;
    *sp1 = '\0';
    char *target = sp1 + 1;
    char *sp2 = strchr(target, ' ');
    if (sp2 == NULL)
        return 400;
    *sp2 = '\0';
    char *ver = sp2 + 1;
    if (!is_token(p) || strlen(p) > 32)
        return 400;
    r->method = p;
    if (strncmp(ver, "HTTP/", 5) != 0)
        return 400;
    if (strcmp(ver, "HTTP/1.1") == 0)
        r->http10 = 0;
    else if (strcmp(ver, "HTTP/1.0") == 0)
        r->http10 = 1;
    else {
        *code = "http_version_not_supported";
        *msg = "only HTTP/1.0 and HTTP/1.1";
        return 505;
    }
    /* origin-form only (RFC 9112 section 3.2.1); visible ASCII only. */
    if (target[0] != '/')
        return 400;
    for (char *q = target; *q; q++)
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
            return 400;
    char *qm = strchr(target, '?');
    if (qm) {
        *qm = '\0';
        r->query = qm + 1;
    } else {
        r->query = "";
    }
    r->path = target;
    r->is_head = strcmp(r->method, "HEAD") == 0;

    const char *cl = NULL, *te = NULL, *conn_h = NULL, *expect = NULL;
    int hosts = 0;
    p = eol + 2;
    while (p < end) {
        eol = strstr(p, "\r\n");
        if (eol == p)
            break; /* the empty line */
        *eol = '\0';
        /* obs-fold is rejected (RFC 9112 section 5.2). */
        if (*p == ' ' || *p == '\t')
            return 400;
        char *colon = strchr(p, ':');
        if (colon == NULL)
            return 400;
        *colon = '\0';
        /* No whitespace between name and colon (RFC 9112 section 5.1). */
        if (!is_token(p))
            return 400;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        *ve = '\0';
        for (char *q = v; *q; q++)
            if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
                return 400;
        if (r->nhdr >= KB_HTTPD_MAX_HEADERS_COUNT) {
            *code = "headers_too_large";
            *msg = "too many header fields";
            return 431;
        }
        r->hname[r->nhdr] = p;
        r->hval[r->nhdr] = v;
        r->nhdr++;
        if (strcasecmp(p, "content-length") == 0) {
            if (cl != NULL)
                return 400;
            cl = v;
        } else if (strcasecmp(p, "transfer-encoding") == 0) {
            if (te != NULL)
                return 400;
            te = v;
        } else if (strcasecmp(p, "connection") == 0) {
            conn_h = v;
        } else if (strcasecmp(p, "expect") == 0) {
            expect = v;
        } else if (strcasecmp(p, "host") == 0) {
            hosts++;
        }
        p = eol + 2;
    }
    /* RFC 9112 section 3.2: a 1.1 request without exactly one Host is a 400. */
    if (!r->http10 && hosts != 1)
        return 400;
    if (r->http10)
        r->keepalive = conn_h != NULL && has_token(conn_h, "keep-alive");
    else
        r->keepalive = !(conn_h != NULL && has_token(conn_h, "close"));

    c->need = 0;
    c->st = ST_BODY;
    if (te != NULL) {
        /* Only "chunked" alone; with Content-Length too it is an error (RFC 9112 section 6.3
         * item 3: smuggling). */
        if (cl != NULL || r->http10)
            return 400;
        if (strcasecmp(te, "chunked") != 0) {
            *code = "not_implemented";
            *msg = "unsupported transfer-encoding";
            return 501;
        }
        c->st = ST_CHUNK_SIZE;
    } else if (cl != NULL) {
        uint64_t n = 0;
        if (*cl == '\0')
            return 400;
        for (const char *q = cl; *q; q++) {
            if (*q < '0' || *q > '9' || n > UINT64_MAX / 10 - 10)
                return 400;
            n = n * 10 + (uint64_t)(*q - '0');
        }
        if (n > c->lp->h->o.max_body_bytes) {
            *code = "payload_too_large";
            *msg = "request body over the limit";
            return 413;
        }
        c->need = n;
    }
    if (expect != NULL) {
        if (strcasecmp(expect, "100-continue") != 0) {
            *code = "expectation_failed";
            *msg = "unsupported expectation";
            return 417;
        }
        /* RFC 9110 section 10.1.1: tell the client to send the body (not for HTTP/1.0). */
        if (!r->http10 && (c->need > 0 || c->st == ST_CHUNK_SIZE))
            evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    return 0;
}

/* ---------- dispatch ---------- */

static void conn_dispatch(conn *c)
{
    kb_httpd *h = c->lp->h;
    kb_http_req *r = &c->req;
    evtimer_del(c->deadline);
    /* Reads stay enabled (no epoll_ctl per request); input that arrives meanwhile waits in the
     * buffer, bounded by the read high-watermark. */
    c->st = ST_WRITE;
    r->replied = 0;
    h->o.handler(r, h->o.handler_arg);
    if (!r->replied)
        kb_http_reply_error(r, 500, "internal", "handler did not reply");
    /* The request's bytes are no longer needed: wipe them (bodies carry secrets). */
    body_release(c, 1);
    kb_wipe(c->hbuf, c->hlen);
    kb_dbuf_reset(&r->extra);
    conn_arm(c, c->lp->to_req);
    /* Nothing could be queued (out of memory): on_write will never fire, so close now. */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_free(c);
}

static void conn_start_request(conn *c)
{
    kb_http_req *r = &c->req;
    r->method = "";
    r->path = "";
    r->query = "";
    r->nhdr = 0;
    r->http10 = 0;
    r->keepalive = 0;
    r->is_head = 0;
    r->replied = 0;
    c->hlen = 0;
    c->hscan = 0;
    c->need = 0;
    c->trailer_bytes = 0;
    c->st = ST_HEAD;
}

/* 1 if in[from..to) holds a bare LF or a CR followed by anything but LF. Such a head can never
 * end in CRLF CRLF, so waiting for more would only hold the connection until the deadline. A CR
 * at the very end is undecided (its LF may be in the next segment). */
static int head_bad_eol(struct evbuffer *in, size_t from, size_t to)
{
    char prev = 0, chunk[512];
    struct evbuffer_ptr p;
    if (from > 0) {
        if (evbuffer_ptr_set(in, &p, from - 1, EVBUFFER_PTR_SET) != 0 ||
            evbuffer_copyout_from(in, &p, &prev, 1) != 1)
            return 0;
    }
    while (from < to) {
        size_t n = to - from < sizeof(chunk) ? to - from : sizeof(chunk);
        if (evbuffer_ptr_set(in, &p, from, EVBUFFER_PTR_SET) != 0 ||
            evbuffer_copyout_from(in, &p, chunk, n) != (ev_ssize_t)n)
            return 0;
        for (size_t i = 0; i < n; i++) {
            if ((chunk[i] == '\n' && prev != '\r') || (prev == '\r' && chunk[i] != '\n'))
                return 1;
            prev = chunk[i];
        }
        from += n;
    }
    return 0;
}

/* Returns 1 if more input is needed, 0 if the connection moved on (dispatched/error). */
static int read_head(conn *c, struct evbuffer *in)
{
    kb_httpd *h = c->lp->h;
    /* RFC 9112 section 2.2: ignore empty lines before the request line. */
    for (;;) {
        unsigned char two[2];
        if (evbuffer_copyout(in, two, 2) == 2 && two[0] == '\r' && two[1] == '\n') {
            evbuffer_drain(in, 2);
            c->hscan = 0;
        } else {
            break;
        }
    }
    struct evbuffer_ptr f = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    size_t have = evbuffer_get_length(in);
    if (f.pos < 0) {
        if (have > h->o.max_header_bytes) {
            conn_error(c, 431, "headers_too_large", "request head over the limit");
            return 0;
        }
        /* Bare LF (or CR) line endings: answer now instead of at the deadline. Only the new
         * bytes are scanned, so a dribbling client costs O(head) in total. */
        if (head_bad_eol(in, c->hscan, have)) {
            conn_error(c, 400, "bad_request", "malformed request: lines must end with CRLF");
            return 0;
        }
        c->hscan = have;
        return 1;
    }
    size_t hl = (size_t)f.pos + 4;
    if (hl > h->o.max_header_bytes) {
        conn_error(c, 431, "headers_too_large", "request head over the limit");
        return 0;
    }
    if (c->hcap < hl + 1) {
        size_t ncap = hl + 1 < 2048 ? 2048 : hl + 1;
        char *nb = malloc(ncap);
        if (nb == NULL) {
            conn_error(c, 500, "internal", "out of memory");
            return 0;
        }
        if (c->hbuf) {
            kb_wipe(c->hbuf, c->hcap);
            free(c->hbuf);
        }
        c->hbuf = nb;
        c->hcap = ncap;
    }
    evbuf_take(in, c->hbuf, hl);
    c->hbuf[hl] = '\0';
    c->hlen = hl;
    const char *code, *msg;
    int st = parse_head(c, &code, &msg);
    if (st != 0) {
        conn_error(c, st, code, msg);
        return 0;
    }
    return 1;
}

static void conn_process(conn *c)
{
    kb_httpd *h = c->lp->h;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    for (;;) {
        switch (c->st) {
        case ST_HEAD:
            if (evbuffer_get_length(in) == 0)
                return;
            if (read_head(c, in) == 0)
                return;
            if (c->st == ST_HEAD)
                return; /* need more */
            continue;
        case ST_BODY: {
            size_t have = evbuffer_get_length(in);
            if (c->need > 0) {
                /* Wait for the whole body (bounded by max_body_bytes), then copy it once. */
                if (have < c->need)
                    return;
                uint8_t *dst = body_grow(c, (size_t)c->need);
                if (dst == NULL) {
                    conn_error(c, 500, "internal", "out of memory");
                    return;
                }
                evbuf_take(in, dst, (size_t)c->need);
                c->need = 0;
            }
            conn_dispatch(c);
            return;
        }
        case ST_CHUNK_SIZE: {
            /* chunk-size [ chunk-ext ] CRLF (RFC 9112 section 7.1) */
            size_t eol_len = 0;
            struct evbuffer_ptr e =
                evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
            if (e.pos < 0) {
                if (evbuffer_get_length(in) > KB_HTTPD_CHUNK_LINE_MAX) {
                    conn_error(c, 400, "bad_request", "malformed chunk");
                    return;
                }
                return;
            }
            if ((size_t)e.pos > KB_HTTPD_CHUNK_LINE_MAX) {
                conn_error(c, 400, "bad_request", "malformed chunk");
                return;
            }
            char line[KB_HTTPD_CHUNK_LINE_MAX + 3];
            evbuf_take(in, line, (size_t)e.pos + 2);
            line[e.pos] = '\0';
            uint64_t n = 0;
            int digits = 0;
            char *q = line;
            for (; *q; q++, digits++) {
                int d;
                if (*q >= '0' && *q <= '9')
                    d = *q - '0';
                else if (*q >= 'a' && *q <= 'f')
                    d = *q - 'a' + 10;
                else if (*q >= 'A' && *q <= 'F')
                    d = *q - 'A' + 10;
                else
                    break;
                if (n > (UINT64_MAX >> 4)) {
                    digits = -1000;
                    break;
                }
                n = (n << 4) | (uint64_t)d;
            }
            if (digits <= 0 || (*q != '\0' && *q != ';' && *q != ' ' && *q != '\t')) {
                conn_error(c, 400, "bad_request", "malformed chunk");
                return;
            }
            if (n > h->o.max_body_bytes - c->blen) {
                conn_error(c, 413, "payload_too_large", "request body over the limit");
                return;
            }
            if (n == 0) {
                c->st = ST_TRAILER;
                continue;
            }
            c->need = n;
            c->st = ST_CHUNK_DATA;
            continue;
        }
        case ST_CHUNK_DATA: {
            size_t n = (size_t)c->need;
            if (evbuffer_get_length(in) < n + 2)
                return;
            uint8_t *dst = body_grow(c, n);
            if (dst == NULL) {
                conn_error(c, 500, "internal", "out of memory");
                return;
            }
            evbuf_take(in, dst, n);
            char crlf[2] = {0, 0}; /* evbuf_take fills it: the length was checked above */
            evbuf_take(in, crlf, 2);
            if (crlf[0] != '\r' || crlf[1] != '\n') {
                conn_error(c, 400, "bad_request", "malformed chunk");
                return;
            }
            c->need = 0;
            c->st = ST_CHUNK_SIZE;
            continue;
        }
        case ST_TRAILER: {
            /* trailer fields are read and discarded, within the header budget */
            size_t eol_len = 0;
            struct evbuffer_ptr e =
                evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
            if (e.pos < 0) {
                if (c->trailer_bytes + evbuffer_get_length(in) > h->o.max_header_bytes) {
                    conn_error(c, 431, "headers_too_large", "trailers over the limit");
                    return;
                }
                return;
            }
            size_t ll = (size_t)e.pos + 2;
            c->trailer_bytes += ll;
            if (c->trailer_bytes > h->o.max_header_bytes) {
                conn_error(c, 431, "headers_too_large", "trailers over the limit");
                return;
            }
            evbuf_take(in, NULL, ll);
            if (ll == 2) {
                conn_dispatch(c);
                return;
            }
            continue;
        }
        case ST_WRITE:
        case ST_LINGER:
            return;
        }
    }
}

/* ---------- bufferevent callbacks ---------- */

static void on_read(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    if (c->st == ST_LINGER) {
        struct evbuffer *in = bufferevent_get_input(bev);
        size_t n = evbuffer_get_length(in);
        c->lingered += n;
        evbuffer_drain(in, n);
        if (c->lingered > KB_HTTPD_LINGER_BYTES)
            conn_free(c);
        return;
    }
    conn_process(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    if (c->st != ST_WRITE || evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    if (c->close_after && !c->linger && evbuffer_get_length(bufferevent_get_input(bev)) == 0) {
        conn_free(c); /* request fully read: a plain close is safe (sends close_notify) */
        return;
    }
    if (c->close_after) {
        /* Lingering close: stop sending, keep draining for a moment so the client reads our
         * reply instead of a reset caused by its unread upload (RFC 9112 section 9.6). */
        c->st = ST_LINGER;
        if (c->ssl != NULL) {
            /* close_notify first (RFC 8446 section 6.1), then the TCP half-close */
            (void)SSL_shutdown(c->ssl);
            ERR_clear_error();
        }
        shutdown(bufferevent_getfd(bev), SHUT_WR);
        if (c->rd_off)
            bufferevent_enable(bev, EV_READ);
        c->rd_off = 0;
        conn_arm(c, c->lp->to_linger);
        return;
    }
    conn_start_request(c);
    conn_arm(c, c->lp->to_req);
    if (c->rd_off)
        bufferevent_enable(bev, EV_READ);
    c->rd_off = 0;
    if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
        conn_process(c); /* pipelined request already here */
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    conn *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        /* TLS handshake done: leave the pre-handshake cap; the request deadline starts now. */
        if (c->in_hs) {
            hs_unlink(c);
            conn_arm(c, c->lp->to_req);
        }
        return;
    }
    if ((what & BEV_EVENT_ERROR) && c->ssl != NULL && !SSL_is_init_finished(c->ssl))
        kb_log(KB_LOG_DEBUG, "tls_handshake_failed", "peer", c->peer, NULL);
    ERR_clear_error();
    conn_free(c);
}

/* Bytes the peer sent that this loop has not read yet (still in the kernel's queue). */
static int conn_input_waiting(const conn *c)
{
    int n = 0;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    return fd >= 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    conn *c = arg;
    (void)fd;
    (void)what;
    /* The handshake deadline is for clients that stall, not for a loop that was too busy to get
     * to them: under a burst of handshakes (a herd of syncers on few cores) one loop iteration
     * can take longer than handshake_timeout, and the deadline of a client that answered in
     * time expires before its bytes are read. So when the handshake moved since the deadline
     * was armed, or the client's next bytes are waiting unread, the deadline starts again
     * (at most KB_HTTPD_HANDSHAKE_EXTENSIONS times); a client silent for a whole period is
     * closed as before. */
    if (c->in_hs && c->hs_extended < KB_HTTPD_HANDSHAKE_EXTENSIONS &&
        (c->hs_steps != c->hs_steps_armed || conn_input_waiting(c))) {
        c->hs_extended++;
        c->hs_steps_armed = c->hs_steps;
        conn_arm(c, c->lp->to_hs);
        return;
    }
    conn_free(c);
}

/* The server side of a handshake moved (a message read or written): on_deadline's witness. */
static void on_tls_info(const SSL *ssl, int where, int ret)
{
    conn *c = SSL_get_app_data(ssl);
    (void)ret;
    /* "before SSL initialization" is reported while nothing was read yet: not progress */
    if (c != NULL && (where & SSL_CB_ACCEPT_LOOP) && SSL_get_state(ssl) != TLS_ST_BEFORE)
        c->hs_steps++;
}

/* ---------- accept ---------- */

static void format_peer(const struct sockaddr *sa, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(out, n, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(out, n, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        snprintf(out, n, "?");
    }
}

/* The pending handshake the cap closes: the oldest one that has not moved at all (nothing read
 * from its client, nothing waiting unread: an idle TCP connection) among the first
 * KB_HTTPD_HS_CAP_SCAN, else the oldest. A client whose handshake is under way but waits for
 * this busy loop is not displaced by idle connections that arrived after it. */
static conn *hs_victim(loop *lp)
{
    conn *c = lp->hs_head;
    for (int i = 0; c != NULL && i < KB_HTTPD_HS_CAP_SCAN; i++, c = c->hs_next)
        if (c->hs_steps == 0 && !conn_input_waiting(c))
            return c;
    return lp->hs_head;
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    loop *lp = arg;
    kb_httpd *h = lp->h;
    conn *c = NULL;
    (void)lev;
    (void)salen;

    if (atomic_fetch_add(&h->nconn, 1) >= h->o.max_connections || atomic_load(&h->stopping)) {
        atomic_fetch_sub(&h->nconn, 1);
        close(fd);
        time_t now = time(NULL);
        if (now != lp->cap_logged) { /* at most one line per second per loop */
            lp->cap_logged = now;
            kb_log(KB_LOG_WARN, "connection_cap", "action", "closed at accept", NULL);
        }
        return;
    }
    /* Without TCP_NODELAY, a reply written as more than one segment waits for the peer's
     * delayed ACK (Nagle, RFC 896 + RFC 1122 4.2.3.2): about 40 ms per TLS response. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto fail;
    c->lp = lp;
    format_peer(sa, c->peer, sizeof(c->peer));
    kb_dbuf_init(&c->out, KB_HTTPD_RESP_HEAD_MAX);
    kb_dbuf_init(&c->req.extra, KB_HTTPD_RESP_HEAD_MAX / 2);
    c->req.c = c;
    if (h->is_tls) {
        pthread_mutex_lock(&h->ctx_mu);
        c->ssl = SSL_new(h->ctx);
        pthread_mutex_unlock(&h->ctx_mu);
        if (c->ssl == NULL)
            goto fail;
        c->bev = bufferevent_openssl_socket_new(lp->base, fd, c->ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (c->bev == NULL) {
            SSL_free(c->ssl);
            goto fail;
        }
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        SSL_set_app_data(c->ssl, c);
        SSL_set_info_callback(c->ssl, on_tls_info);
        c->in_hs = 1;
    } else {
        c->bev = bufferevent_socket_new(lp->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (c->bev == NULL)
            goto fail;
    }
    fd = -1; /* owned by the bufferevent */
    c->deadline = evtimer_new(lp->base, on_deadline, c);
    if (c->deadline == NULL) {
        bufferevent_free(c->bev);
        goto fail;
    }
    c->next = lp->conns;
    if (lp->conns)
        lp->conns->prev = c;
    lp->conns = c;
    if (c->in_hs) {
        /* Pre-handshake cap: past it, the OLDEST pending handshake is closed, not the new one.
         * Idle TCP connections then cannot keep a real client out: they are displaced in
         * arrival order and a real handshake takes milliseconds, not handshake_timeout. */
        if (lp->nhs >= lp->hs_cap && lp->hs_head != NULL) {
            time_t now = time(NULL);
            conn *victim = hs_victim(lp);
            if (now != lp->hs_logged) { /* at most one line per second per loop */
                lp->hs_logged = now;
                kb_log(KB_LOG_WARN, "handshake_cap", "action",
                       "oldest idle pending handshake closed", "peer", victim->peer, NULL);
            }
            conn_free(victim);
        }
        c->hs_prev = lp->hs_tail;
        if (lp->hs_tail)
            lp->hs_tail->hs_next = c;
        else
            lp->hs_head = c;
        lp->hs_tail = c;
        lp->nhs++;
    }
    conn_start_request(c);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    /* A whole request (head + body) fits under the high-watermark; past it libevent stops
     * reading until we consume, so a pipelining client cannot grow the buffer without bound. */
    bufferevent_setwatermark(c->bev, EV_READ, 0,
                             h->o.max_header_bytes + h->o.max_body_bytes + 64 * 1024);
    bufferevent_enable(c->bev, EV_READ);
    /* TLS: the handshake has its own short deadline; the whole-request deadline (slow-loris)
     * starts when it completes (on_event). Plain: the request deadline starts now. */
    conn_arm(c, c->in_hs ? lp->to_hs : lp->to_req);
    return;
fail:
    if (c) {
        kb_dbuf_free(&c->out);
        kb_dbuf_free(&c->req.extra);
        free(c);
    }
    if (fd >= 0)
        close(fd);
    atomic_fetch_sub(&h->nconn, 1);
    ERR_clear_error();
}

/* ---------- setup ---------- */

static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sl, int *loopback)
{
    char host[64];
    const char *colon;
    memset(ss, 0, sizeof(*ss));
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(host))
            return -1;
        memcpy(host, s + 1, (size_t)(rb - s - 1));
        host[rb - s - 1] = '\0';
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || (size_t)(colon - s) >= sizeof(host) ||
            memchr(s, ':', (size_t)(colon - s)))
            return -1;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    char *e = NULL;
    errno = 0;
    long port = strtol(colon + 1, &e, 10);
    if (colon[1] == '\0' || *e != '\0' || errno != 0 || port < 0 || port > 65535)
        return -1;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *sl = sizeof(*s4);
        *loopback = (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *sl = sizeof(*s6);
        *loopback = IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr) ||
                    (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) && s6->sin6_addr.s6_addr[12] == 127);
        return 0;
    }
    return -1;
}

static int bind_one(const struct sockaddr_storage *ss, socklen_t sl)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    /* One listener per loop on the same address: the kernel spreads new connections across
     * them (SO_REUSEPORT), no shared accept lock, no hand-off between threads. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        (ss->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(fd, (const struct sockaddr *)ss, sl) != 0 || listen(fd, KB_HTTPD_BACKLOG) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    loop *lp = arg;
    (void)fd;
    (void)what;
    event_base_loopbreak(lp->base);
}

static kb_err build_ctx(kb_httpd *h, SSL_CTX **out)
{
    kb_tlsctx_opts to = {.cert_file = h->cert_file,
                         .key_file = h->key_file,
                         .client_ca_file = h->client_ca_file,
                         .verify_peer = h->o.verify_peer,
                         .verify_arg = h->o.verify_arg};
    return kb_tlsctx_server_new(&to, out);
}

static void files_stamp(kb_httpd *h, kb_tlsctx_stamp *st)
{
    kb_tlsctx_opts to = {
        .cert_file = h->cert_file, .key_file = h->key_file, .client_ca_file = h->client_ca_file};
    kb_tlsctx_files_stamp(&to, st);
}

kb_err kb_httpd_reload(kb_httpd *h)
{
    KB_ENSURE_REF(h);
    if (!h->is_tls)
        return KB_OK;
    SSL_CTX *nctx = NULL, *old = NULL;
    kb_tlsctx_stamp st;
    pthread_mutex_lock(&h->reload_mu);
    files_stamp(h, &st);
    kb_err rc = build_ctx(h, &nctx);
    h->stamp = st; /* a failed load is not retried until the files change again */
    if (rc == KB_OK) {
        pthread_mutex_lock(&h->ctx_mu);
        old = h->ctx;
        h->ctx = nctx;
        pthread_mutex_unlock(&h->ctx_mu);
        h->ctx_built = time(NULL);
        SSL_CTX_free(old); /* live connections hold their own references */
        atomic_fetch_add(&h->reloads, 1);
        kb_log(KB_LOG_INFO, "tls_reloaded", NULL);
    } else {
        kb_log(KB_LOG_ERROR, "tls_reload_failed", "error", kb_err_str(rc), "action",
               "keeping the previous certificate", NULL);
    }
    pthread_mutex_unlock(&h->reload_mu);
    return rc;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    kb_httpd *h = arg;
    (void)fd;
    (void)what;
    kb_tlsctx_stamp st;
    files_stamp(h, &st);
    pthread_mutex_lock(&h->reload_mu);
    int changed = !kb_tlsctx_stamp_eq(&st, &h->stamp);
    int rotate = time(NULL) - h->ctx_built >= KB_HTTPD_TICKET_ROTATE_SECS;
    if (rotate && !changed)
        h->ctx_built = time(NULL); /* on failure, retry at the next rotation, not every second */
    pthread_mutex_unlock(&h->reload_mu);
    if ((changed || rotate) && kb_httpd_reload(h) != KB_OK)
        return; /* logged by kb_httpd_reload; the previous context stays */
}

static char *dup_or_null(const char *s, int *fail)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *fail = 1;
    return d;
}

kb_err kb_httpd_new(const kb_httpd_opts *o, kb_httpd **out)
{
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    KB_ENSURE(o->listen != NULL && o->handler != NULL, KB_ERR_CONFIG);
    KB_ENSURE(o->threads >= 0 && o->threads <= KB_HTTPD_MAX_THREADS, KB_ERR_CONFIG);
    KB_ENSURE(o->timeout_secs >= 0 && o->max_connections >= 0, KB_ERR_CONFIG);
    KB_ENSURE(o->handshake_timeout_secs >= 0 && o->max_handshakes >= 0, KB_ERR_CONFIG);
    KB_ENSURE((o->cert_file == NULL) == (o->key_file == NULL), KB_ERR_CONFIG);
    KB_ENSURE(o->cert_file != NULL || (o->client_ca_file == NULL && o->verify_peer == NULL),
              KB_ERR_CONFIG);

    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int loopback = 0;
    if (parse_listen(o->listen, &ss, &sl, &loopback) != 0) {
        kb_log(KB_LOG_ERROR, "httpd_config", "error", "bad listen address", NULL);
        return KB_ERR_CONFIG;
    }
    /* Plain HTTP carries SigV4-signed requests and secret values in clear: loopback only unless
     * explicitly allowed. Checked before anything is bound. */
    if (o->cert_file == NULL && !loopback && !o->allow_plain_non_loopback) {
        kb_log(KB_LOG_ERROR, "httpd_config", "error",
               "plain HTTP refused on a non-loopback address", NULL);
        return KB_ERR_CONFIG;
    }

    kb_err rc = KB_OK;
    int fail = 0;
    kb_httpd *h = calloc(1, sizeof(*h));
    KB_ENSURE(h != NULL, KB_ERR_NOMEM);
    h->o = *o;
    h->stop_pipe[0] = h->stop_pipe[1] = -1;
    pthread_mutex_init(&h->ctx_mu, NULL);
    pthread_mutex_init(&h->reload_mu, NULL);
    h->listen = dup_or_null(o->listen, &fail);
    h->cert_file = dup_or_null(o->cert_file, &fail);
    h->key_file = dup_or_null(o->key_file, &fail);
    h->client_ca_file = dup_or_null(o->client_ca_file, &fail);
    KB_ENSURE_OUT(rc, !fail, KB_ERR_NOMEM);
    h->o.listen = h->listen;
    h->o.cert_file = h->cert_file;
    h->o.key_file = h->key_file;
    h->o.client_ca_file = h->client_ca_file;
    if (h->o.max_header_bytes == 0)
        h->o.max_header_bytes = KB_HTTPD_MAX_HEADER_DEFAULT;
    if (h->o.max_body_bytes == 0)
        h->o.max_body_bytes = KB_HTTPD_MAX_BODY_DEFAULT;
    KB_ENSURE_OUT(rc, h->o.max_body_bytes < KB_HTTPD_MAX_BODY_CEILING, KB_ERR_CONFIG);
    if (h->o.timeout_secs == 0)
        h->o.timeout_secs = KB_HTTPD_TIMEOUT_DEFAULT;
    if (h->o.max_connections == 0)
        h->o.max_connections = KB_HTTPD_MAX_CONN_DEFAULT;
    if (h->o.handshake_timeout_secs == 0)
        h->o.handshake_timeout_secs = KB_HTTPD_HANDSHAKE_TIMEOUT_DEFAULT;
    if (h->o.max_handshakes == 0)
        h->o.max_handshakes = KB_HTTPD_MAX_HANDSHAKES_DEFAULT;
    if (h->o.max_handshakes > h->o.max_connections)
        h->o.max_handshakes = h->o.max_connections;
    if (h->o.threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        h->o.threads = n < 1 ? 1 : (n > KB_HTTPD_MAX_THREADS ? KB_HTTPD_MAX_THREADS : (int)n);
    }
    h->is_tls = h->cert_file != NULL;

    /* A peer that closes mid-write must not kill the process (write(2) EPIPE instead). */
    signal(SIGPIPE, SIG_IGN);

    if (h->is_tls) {
        files_stamp(h, &h->stamp);
        KB_GUARD_OUT(rc, build_ctx(h, &h->ctx));
        h->ctx_built = time(NULL);
    }
    KB_ENSURE_OUT(rc, pipe2(h->stop_pipe, O_CLOEXEC | O_NONBLOCK) == 0, KB_ERR_IO);

    h->nloops = h->o.threads;
    h->loops = calloc((size_t)h->nloops, sizeof(*h->loops));
    KB_ENSURE_OUT(rc, h->loops != NULL, KB_ERR_NOMEM);
    for (int i = 0; i < h->nloops; i++)
        h->loops[i].fd = -1;
    for (int i = 0; i < h->nloops; i++) {
        loop *lp = &h->loops[i];
        lp->h = h;
        lp->idx = i;
        lp->fd = bind_one(&ss, sl);
        if (lp->fd < 0) {
            kb_log(KB_LOG_ERROR, "httpd_bind", "addr", h->listen, "error", strerror(errno), NULL);
            rc = KB_ERR_IO;
            goto out;
        }
        if (i == 0) {
            /* port 0: the other loops bind the port the kernel picked */
            struct sockaddr_storage got;
            socklen_t gl = sizeof(got);
            memset(&got, 0, sizeof(got));
            KB_ENSURE_OUT(rc, getsockname(lp->fd, (struct sockaddr *)&got, &gl) == 0, KB_ERR_IO);
            h->port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
                                                     : ((struct sockaddr_in6 *)&got)->sin6_port);
            if (ss.ss_family == AF_INET)
                ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)h->port);
            else
                ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)h->port);
        }
        struct event_config *cfg = event_config_new();
        KB_ENSURE_OUT(rc, cfg != NULL, KB_ERR_NOMEM);
        /* Each base is touched by its own thread only: no locking needed. */
        event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
        lp->base = event_base_new_with_config(cfg);
        event_config_free(cfg);
        KB_ENSURE_OUT(rc, lp->base != NULL, KB_ERR_NOMEM);
        lp->lev = evconnlistener_new(lp->base, on_accept, lp,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, lp->fd);
        KB_ENSURE_OUT(rc, lp->lev != NULL, KB_ERR_NOMEM);
        lp->fd = -1; /* owned by the listener */
        struct timeval tv_req = {.tv_sec = h->o.timeout_secs, .tv_usec = 0};
        struct timeval tv_linger = {.tv_sec = KB_HTTPD_LINGER_SECS, .tv_usec = 0};
        lp->to_req = event_base_init_common_timeout(lp->base, &tv_req);
        lp->to_linger = event_base_init_common_timeout(lp->base, &tv_linger);
        struct timeval tv_hs = {.tv_sec = h->o.handshake_timeout_secs, .tv_usec = 0};
        lp->to_hs = event_base_init_common_timeout(lp->base, &tv_hs);
        KB_ENSURE_OUT(rc, lp->to_req != NULL && lp->to_linger != NULL && lp->to_hs != NULL,
                      KB_ERR_NOMEM);
        /* the pre-handshake cap is split evenly across loops (rounded up) */
        lp->hs_cap = (h->o.max_handshakes + h->nloops - 1) / h->nloops;
        lp->stop_ev = event_new(lp->base, h->stop_pipe[0], EV_READ | EV_PERSIST, on_stop, lp);
        KB_ENSURE_OUT(rc, lp->stop_ev != NULL && event_add(lp->stop_ev, NULL) == 0, KB_ERR_NOMEM);
        if (i == 0 && h->is_tls) {
            struct timeval tv = {.tv_sec = KB_HTTPD_POLL_SECS, .tv_usec = 0};
            lp->poll_ev = event_new(lp->base, -1, EV_PERSIST, on_poll, h);
            KB_ENSURE_OUT(rc, lp->poll_ev != NULL && event_add(lp->poll_ev, &tv) == 0,
                          KB_ERR_NOMEM);
        }
    }
    {
        char port[16];
        snprintf(port, sizeof(port), "%d", h->port);
        kb_log(KB_LOG_INFO, "listening", "addr", h->listen, "port", port, "tls",
               h->is_tls ? (h->o.verify_peer ? "mtls" : "tls") : "plain", NULL);
    }
    *out = h;
    h = NULL;
out:
    kb_httpd_free(h);
    return rc;
}

int kb_httpd_port(const kb_httpd *h)
{
    return h ? h->port : 0;
}

uint64_t kb_httpd_reload_count(const kb_httpd *h)
{
    return h ? atomic_load(&((kb_httpd *)h)->reloads) : 0;
}

int kb_httpd_connections(const kb_httpd *h)
{
    return h ? atomic_load(&((kb_httpd *)h)->nconn) : 0;
}

static void *loop_main(void *arg)
{
    loop *lp = arg;
    event_base_loop(lp->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

kb_err kb_httpd_run(kb_httpd *h)
{
    KB_ENSURE_REF(h);
    kb_err rc = KB_OK;
    for (int i = 1; i < h->nloops; i++) {
        if (pthread_create(&h->loops[i].th, NULL, loop_main, &h->loops[i]) != 0) {
            rc = KB_ERR_INTERNAL;
            kb_httpd_stop(h);
            break;
        }
        h->loops[i].started = 1;
    }
    loop_main(&h->loops[0]);
    for (int i = 1; i < h->nloops; i++) {
        if (h->loops[i].started) {
            pthread_join(h->loops[i].th, NULL);
            h->loops[i].started = 0;
        }
    }
    return rc;
}

void kb_httpd_stop(kb_httpd *h)
{
    if (h == NULL)
        return;
    /* Only an atomic store and write(2): async-signal-safe. The pipe stays readable, so every
     * loop sees it (level-triggered) and breaks out. */
    atomic_store(&h->stopping, 1);
    if (h->stop_pipe[1] >= 0) {
        ssize_t n = write(h->stop_pipe[1], "x", 1);
        (void)n;
    }
}

void kb_httpd_free(kb_httpd *h)
{
    if (h == NULL)
        return;
    if (h->loops) {
        for (int i = 0; i < h->nloops; i++) {
            loop *lp = &h->loops[i];
            /* conn_free unlinks each connection; walk with the saved successor */
            for (conn *c = lp->conns, *next; c != NULL; c = next) {
                next = c->next;
                conn_free(c);
            }
            if (lp->poll_ev)
                event_free(lp->poll_ev);
            if (lp->stop_ev)
                event_free(lp->stop_ev);
            if (lp->lev)
                evconnlistener_free(lp->lev);
            if (lp->fd >= 0)
                close(lp->fd);
            if (lp->base)
                event_base_free(lp->base);
        }
        free(h->loops);
    }
    if (h->stop_pipe[0] >= 0)
        close(h->stop_pipe[0]);
    if (h->stop_pipe[1] >= 0)
        close(h->stop_pipe[1]);
    SSL_CTX_free(h->ctx);
    pthread_mutex_destroy(&h->ctx_mu);
    pthread_mutex_destroy(&h->reload_mu);
    free(h->listen);
    free(h->cert_file);
    free(h->key_file);
    free(h->client_ca_file);
    free(h);
}

/* ---------- request API ---------- */

const char *kb_http_req_method(kb_http_req *r)
{
    return r->method;
}

const char *kb_http_req_path(kb_http_req *r)
{
    return r->path;
}

const char *kb_http_req_query(kb_http_req *r)
{
    return r->query;
}

const char *kb_http_req_header(kb_http_req *r, const char *name)
{
    for (size_t i = 0; i < r->nhdr; i++)
        if (strcasecmp(r->hname[i], name) == 0)
            return r->hval[i];
    return NULL;
}

size_t kb_http_req_header_count(kb_http_req *r)
{
    return r->nhdr;
}

void kb_http_req_header_at(kb_http_req *r, size_t i, const char **name, const char **value)
{
    if (i >= r->nhdr) {
        *name = NULL;
        *value = NULL;
        return;
    }
    *name = r->hname[i];
    *value = r->hval[i];
}

void kb_http_req_body(kb_http_req *r, const uint8_t **p, size_t *len)
{
    conn *c = r->c;
    *p = c->bbuf ? c->bbuf : (const uint8_t *)"";
    *len = c->blen;
}

const char *kb_http_req_peer_addr(kb_http_req *r)
{
    return r->c->peer;
}

const char *kb_http_req_peer_id(kb_http_req *r)
{
    return r->c->ssl ? kb_tlsctx_peer_id(r->c->ssl) : NULL;
}

void **kb_http_req_conn_data(kb_http_req *r)
{
    return &r->c->data;
}

void kb_http_req_close_after(kb_http_req *r)
{
    r->c->close_after = 1;
}

X509 *kb_http_req_peer_cert(kb_http_req *r)
{
    conn *c = r->c;
    if (c->ssl == NULL || kb_tlsctx_peer_id(c->ssl) == NULL)
        return NULL;
    return SSL_get0_peer_certificate(c->ssl);
}

int kb_http_req_is_tls(kb_http_req *r)
{
    return r->c->ssl != NULL;
}

void kb_http_set_header(kb_http_req *r, const char *name, const char *value)
{
    if (r->replied || name == NULL || value == NULL || !is_token(name) || !is_field_value(value))
        return;
    /* The layer owns framing and caching headers. */
    if (strcasecmp(name, "content-length") == 0 || strcasecmp(name, "transfer-encoding") == 0 ||
        strcasecmp(name, "connection") == 0 || strcasecmp(name, "cache-control") == 0 ||
        strcasecmp(name, "content-type") == 0 || strcasecmp(name, "date") == 0)
        return;
    size_t mark = r->extra.len;
    if (kb_dbuf_addf(&r->extra, "%s: %s\r\n", name, value) != KB_OK)
        r->extra.len = mark;
}

void kb_http_reply(kb_http_req *r, int status, const char *content_type, const void *body,
                   size_t len)
{
    if (r == NULL || r->replied)
        return;
    r->replied = 1;
    if (body == NULL)
        len = 0;
    conn_send(r->c, r, status, content_type, body, len);
}

void kb_http_reply_json(kb_http_req *r, int status, const json_t *body)
{
    if (r == NULL || r->replied)
        return;
    char *s = body ? kb_json_dump(body) : NULL;
    if (s == NULL) {
        kb_http_reply_error(r, 500, "internal", "could not serialize the reply");
        return;
    }
    kb_http_reply(r, status, "application/json", s, strlen(s));
    kb_json_free_str(s);
}

void kb_http_reply_error(kb_http_req *r, int status, const char *code, const char *message)
{
    if (r == NULL || r->replied)
        return;
    json_t *j =
        json_pack("{s:s, s:s}", "error", code ? code : "error", "message", message ? message : "");
    char *s = j ? kb_json_dump(j) : NULL;
    json_decref(j);
    if (s == NULL) {
        static const char fallback[] = "{\"error\":\"internal\",\"message\":\"\"}";
        kb_http_reply(r, status, "application/json", fallback, sizeof(fallback) - 1);
        return;
    }
    kb_http_reply(r, status, "application/json", s, strlen(s));
    kb_json_free_str(s);
}
