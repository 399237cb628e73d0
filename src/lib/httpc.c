/* httpc.c - minimal HTTP/1.1 client over plain TCP (loopback only) or OpenSSL TLS (see httpc.h).
 *
 * References: RFC 9110 (semantics), RFC 9112 (HTTP/1.1 message syntax: 2.2 bare CR/LF, 4 status
 * line, 5.1 no whitespace before ':', 5.2 obs-fold, 6.1-6.3 message body length, 7.1 chunked,
 * 9.3 persistence), RFC 6066 3 (SNI), RFC 6125 (host name checks, done by OpenSSL's
 * SSL_set1_host / X509_VERIFY_PARAM_set1_ip_asc).
 */
#include "httpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "secbuf.h"

/* Room for one full header section: a line must fit in the read buffer. */
#define RD_CAP (KB_HTTPC_MAX_HEADER + 64)
#define CHUNK_LINE_MAX 1024 /* chunk-size line with extensions */
#define MAX_INTERIM 8       /* 1xx answers skipped before the final one */

/* ---- URL ---------------------------------------------------------------------------------- */

int kb_httpc_host_is_loopback(const char *h)
{
    struct in_addr a4;
    if (h == NULL)
        return 0;
    if (strcasecmp(h, "localhost") == 0 || strcmp(h, "::1") == 0)
        return 1;
    /* RFC 1122 3.2.1.3: all of 127.0.0.0/8 is loopback */
    return inet_pton(AF_INET, h, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

static int host_is_ip(const char *h)
{
    struct in6_addr a;
    return inet_pton(AF_INET, h, &a) == 1 || inet_pton(AF_INET6, h, &a) == 1;
}

kb_err kb_httpc_parse_url(const char *url, kb_httpc_url *out)
{
    const char *p, *a, *ae, *hs, *he;
    size_t n;
    KB_ENSURE_REF(url);
    KB_ENSURE_REF(out);
    memset(out, 0, sizeof(*out));
    n = strlen(url);
    KB_ENSURE(n < KB_HTTPC_MAX_URL, KB_ERR_TOO_LARGE);
    for (size_t i = 0; i < n; i++) /* no spaces, controls, fragments or non-ASCII */
        KB_ENSURE((unsigned char)url[i] > 0x20 && (unsigned char)url[i] < 0x7f && url[i] != '#',
                  KB_ERR_INVALID);
    if (strncasecmp(url, "https://", 8) == 0) {
        out->tls = 1;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else {
        return KB_ERR_INVALID;
    }
    a = p;
    ae = a + strcspn(a, "/?");
    KB_ENSURE(ae > a, KB_ERR_INVALID);
    KB_ENSURE(memchr(a, '@', (size_t)(ae - a)) == NULL, KB_ERR_INVALID); /* no credentials */
    KB_ENSURE((size_t)(ae - a) < sizeof(out->authority), KB_ERR_INVALID);
    memcpy(out->authority, a, (size_t)(ae - a));
    if (*a == '[') {
        hs = a + 1;
        he = memchr(hs, ']', (size_t)(ae - hs));
        KB_ENSURE(he != NULL && he > hs, KB_ERR_INVALID);
        p = he + 1;
        for (const char *q = hs; q < he; q++)
            KB_ENSURE(strchr("0123456789abcdefABCDEF:.", *q) != NULL, KB_ERR_INVALID);
    } else {
        hs = a;
        he = hs;
        while (he < ae && *he != ':')
            he++;
        KB_ENSURE(he > hs, KB_ERR_INVALID);
        p = he;
        for (const char *q = hs; q < he; q++)
            KB_ENSURE((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
                          (*q >= '0' && *q <= '9') || *q == '.' || *q == '-',
                      KB_ERR_INVALID);
    }
    KB_ENSURE((size_t)(he - hs) < sizeof(out->host), KB_ERR_INVALID);
    memcpy(out->host, hs, (size_t)(he - hs));
    if (*a == '[') {
        struct in6_addr a6;
        KB_ENSURE(inet_pton(AF_INET6, out->host, &a6) == 1, KB_ERR_INVALID);
    }
    if (p < ae) {
        unsigned long port = 0;
        size_t pl;
        KB_ENSURE(*p == ':', KB_ERR_INVALID);
        p++;
        pl = (size_t)(ae - p);
        KB_ENSURE(pl >= 1 && pl <= 5, KB_ERR_INVALID);
        for (size_t i = 0; i < pl; i++) {
            KB_ENSURE(p[i] >= '0' && p[i] <= '9', KB_ERR_INVALID);
            port = port * 10 + (unsigned long)(p[i] - '0');
        }
        KB_ENSURE(port >= 1 && port <= 65535, KB_ERR_INVALID);
        snprintf(out->port, sizeof(out->port), "%lu", port);
    } else {
        snprintf(out->port, sizeof(out->port), "%s", out->tls ? "443" : "80");
    }
    if (*ae == '\0') {
        out->target[0] = '/';
        out->path_len = 1;
    } else {
        if (*ae == '?')
            out->target[0] = '/'; /* "http://h?q" means path "/" (RFC 9112 3.2.1) */
        n = strlen(out->target);
        KB_ENSURE(n + strlen(ae) < sizeof(out->target), KB_ERR_TOO_LARGE);
        memcpy(out->target + n, ae, strlen(ae) + 1);
        out->path_len = strcspn(out->target, "?");
    }
    return KB_OK;
}

/* ---- reader ------------------------------------------------------------------------------- */

/* got = 0 means end of stream. */
typedef kb_err (*fill_fn)(void *arg, uint8_t *p, size_t cap, size_t *got);

typedef struct {
    uint8_t b[RD_CAP];
    size_t s, e;
    size_t total; /* bytes ever read */
    fill_fn fill;
    void *arg;
} rd;

static kb_err rd_more(rd *r)
{
    size_t got = 0;
    if (r->s > 0) {
        memmove(r->b, r->b + r->s, r->e - r->s);
        r->e -= r->s;
        r->s = 0;
    }
    KB_ENSURE(r->e < RD_CAP, KB_ERR_TOO_LARGE);
    KB_GUARD(r->fill(r->arg, r->b + r->e, RD_CAP - r->e, &got));
    if (got == 0)
        return KB_ERR_TRUNCATED;
    r->e += got;
    r->total += got;
    return KB_OK;
}

/* One CRLF-terminated line of at most *budget bytes (CRLF included, charged to *budget). A bare
 * LF or a CR anywhere but before the LF is refused (RFC 9112 2.2: we do not guess). The line
 * stays valid until the next read. */
static kb_err rd_line(rd *r, size_t *budget, const uint8_t **line, size_t *len)
{
    size_t scanned = 0;
    for (;;) {
        const uint8_t *base = r->b + r->s;
        const uint8_t *nl = memchr(base + scanned, '\n', r->e - r->s - scanned);
        if (nl != NULL) {
            size_t n = (size_t)(nl - base) + 1;
            KB_ENSURE(n <= *budget, KB_ERR_TOO_LARGE);
            KB_ENSURE(n >= 2 && nl[-1] == '\r', KB_ERR_INVALID);
            KB_ENSURE(memchr(base, '\r', n - 2) == NULL, KB_ERR_INVALID);
            *budget -= n;
            *line = base;
            *len = n - 2;
            r->s += n;
            return KB_OK;
        }
        scanned = r->e - r->s;
        KB_ENSURE(scanned < *budget, KB_ERR_TOO_LARGE);
        KB_GUARD(rd_more(r));
    }
}

static kb_err rd_body(rd *r, uint64_t n, kb_dbuf *out)
{
    while (n > 0) {
        size_t take;
        if (r->s == r->e)
            KB_GUARD(rd_more(r));
        take = r->e - r->s;
        if ((uint64_t)take > n)
            take = (size_t)n;
        KB_GUARD(kb_dbuf_add(out, r->b + r->s, take));
        r->s += take;
        n -= take;
    }
    return KB_OK;
}

/* ---- response parser ---------------------------------------------------------------------- */

typedef struct {
    int status;
    int must_close;
    int until_close; /* body delimited by the end of the connection */
} resp_info;

static int is_tchar(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int ieq(const uint8_t *p, size_t n, const char *s)
{
    return strlen(s) == n && strncasecmp((const char *)p, s, n) == 0;
}

/* "HTTP/1.x SP 3DIGIT [SP reason]" (RFC 9112 4; an absent reason is tolerated). */
static kb_err parse_status_line(const uint8_t *l, size_t n, int *status, int *minor)
{
    KB_ENSURE(n >= 12 && memcmp(l, "HTTP/1.", 7) == 0 && (l[7] == '0' || l[7] == '1') &&
                  l[8] == ' ',
              KB_ERR_INVALID);
    for (int i = 9; i < 12; i++)
        KB_ENSURE(l[i] >= '0' && l[i] <= '9', KB_ERR_INVALID);
    *status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    KB_ENSURE(*status >= 100 && *status <= 599, KB_ERR_INVALID);
    KB_ENSURE(n == 12 || l[12] == ' ', KB_ERR_INVALID);
    for (size_t i = 13; i < n; i++) /* reason-phrase = *( HTAB / SP / VCHAR / obs-text ) */
        KB_ENSURE(l[i] == '\t' || (l[i] >= 0x20 && l[i] != 0x7f), KB_ERR_INVALID);
    *minor = l[7] - '0';
    return KB_OK;
}

/* Split "name: value" (RFC 9112 5): token name, ':' right after it, OWS trimmed, value of
 * VCHAR / SP / HTAB / obs-text only; a leading SP/HTAB is obs-fold (5.2) and refused. */
static kb_err parse_field(const uint8_t *l, size_t n, const uint8_t **name, size_t *nlen,
                          const uint8_t **val, size_t *vlen)
{
    size_t i = 0, vs, ve;
    KB_ENSURE(n > 0 && l[0] != ' ' && l[0] != '\t', KB_ERR_INVALID);
    while (i < n && is_tchar(l[i]))
        i++;
    KB_ENSURE(i > 0 && i < n && l[i] == ':', KB_ERR_INVALID);
    *name = l;
    *nlen = i;
    vs = i + 1;
    while (vs < n && (l[vs] == ' ' || l[vs] == '\t'))
        vs++;
    ve = n;
    while (ve > vs && (l[ve - 1] == ' ' || l[ve - 1] == '\t'))
        ve--;
    for (size_t j = vs; j < ve; j++)
        KB_ENSURE(l[j] == '\t' || (l[j] >= 0x20 && l[j] != 0x7f), KB_ERR_INVALID);
    *val = l + vs;
    *vlen = ve - vs;
    return KB_OK;
}

/* Content-Length = 1*DIGIT (RFC 9110 8.6); a list, even of equal values, is refused. */
static kb_err parse_clen(const uint8_t *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    KB_ENSURE(n >= 1 && n <= 18, KB_ERR_INVALID);
    for (size_t i = 0; i < n; i++) {
        KB_ENSURE(v[i] >= '0' && v[i] <= '9', KB_ERR_INVALID);
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return KB_OK;
}

/* Does the comma-separated token list v contain tok (case-insensitive)? */
static int list_has(const uint8_t *v, size_t n, const char *tok)
{
    size_t i = 0;
    while (i < n) {
        size_t s, e;
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        s = i;
        while (i < n && v[i] != ',')
            i++;
        e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e > s && ieq(v + s, e - s, tok))
            return 1;
    }
    return 0;
}

/* chunk = chunk-size [ chunk-ext ] CRLF (RFC 9112 7.1); extensions are ignored. */
static kb_err parse_chunk_size(const uint8_t *l, size_t n, uint64_t *out)
{
    uint64_t x = 0;
    size_t i = 0;
    while (i < n) {
        uint8_t c = l[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            break;
        KB_ENSURE(i < 15, KB_ERR_TOO_LARGE);
        x = x * 16 + d;
        i++;
    }
    KB_ENSURE(i > 0, KB_ERR_INVALID);
    if (i < n) {
        size_t j = i;
        while (j < n && (l[j] == ' ' || l[j] == '\t')) /* BWS */
            j++;
        KB_ENSURE(j < n && l[j] == ';', KB_ERR_INVALID);
        for (; j < n; j++)
            KB_ENSURE(l[j] == '\t' || (l[j] >= 0x20 && l[j] < 0x7f), KB_ERR_INVALID);
    }
    *out = x;
    return KB_OK;
}

/* Header fields (or trailers when fields == NULL) up to the empty line. */
static kb_err read_fields(rd *r, size_t *budget, kb_dbuf *fields, int *nfields, int64_t *clen,
                          int *chunked, int *conn_close, int *conn_keep)
{
    for (;;) {
        const uint8_t *l, *nm, *v;
        size_t n, nl, vl;
        KB_GUARD(rd_line(r, budget, &l, &n));
        if (n == 0)
            return KB_OK;
        KB_GUARD(parse_field(l, n, &nm, &nl, &v, &vl));
        KB_ENSURE(++*nfields <= KB_HTTPC_MAX_FIELDS, KB_ERR_TOO_LARGE);
        if (fields == NULL)
            continue; /* trailer: syntax checked, content ignored */
        if (ieq(nm, nl, "content-length")) {
            uint64_t x;
            KB_ENSURE(*clen < 0, KB_ERR_INVALID); /* duplicates: RFC 9112 6.3 (5) */
            KB_GUARD(parse_clen(v, vl, &x));
            *clen = (int64_t)x;
        } else if (ieq(nm, nl, "transfer-encoding")) {
            /* Only "chunked" alone: any other coding we cannot decode (RFC 9112 6.3 (4)). */
            KB_ENSURE(!*chunked && ieq(v, vl, "chunked"), KB_ERR_INVALID);
            *chunked = 1;
        } else if (ieq(nm, nl, "connection")) {
            if (list_has(v, vl, "close"))
                *conn_close = 1;
            if (list_has(v, vl, "keep-alive"))
                *conn_keep = 1;
        }
        KB_GUARD(kb_dbuf_add(fields, nm, nl));
        KB_GUARD(kb_dbuf_addc(fields, '\0'));
        KB_GUARD(kb_dbuf_add(fields, v, vl));
        KB_GUARD(kb_dbuf_addc(fields, '\0'));
    }
}

static kb_err read_chunked(rd *r, size_t *budget, kb_dbuf *body)
{
    int ntrailers = 0, d1 = 0, d2 = 0;
    int64_t d3 = -1;
    for (;;) {
        const uint8_t *l;
        size_t n, lb = CHUNK_LINE_MAX;
        uint64_t sz;
        KB_GUARD(rd_line(r, &lb, &l, &n));
        KB_GUARD(parse_chunk_size(l, n, &sz));
        if (sz == 0)
            break;
        KB_ENSURE(sz <= body->max - body->len, KB_ERR_TOO_LARGE);
        KB_GUARD(rd_body(r, sz, body));
        while (r->e - r->s < 2) /* the CRLF right after the data */
            KB_GUARD(rd_more(r));
        KB_ENSURE(r->b[r->s] == '\r' && r->b[r->s + 1] == '\n', KB_ERR_INVALID);
        r->s += 2;
    }
    /* trailer section, bounded by what the header section left */
    return read_fields(r, budget, NULL, &ntrailers, &d3, &d1, &d2, &d2);
}

/* One response from r. fields receives "name\0value\0" pairs of the final response. */
static kb_err read_response(rd *r, int head, kb_dbuf *fields, kb_dbuf *body, resp_info *ri)
{
    size_t budget = KB_HTTPC_MAX_HEADER;
    int minor = 1, chunked = 0, conn_close = 0, conn_keep = 0, nfields = 0;
    int64_t clen = -1;
    memset(ri, 0, sizeof(*ri));
    for (int interim = 0;; interim++) {
        const uint8_t *l;
        size_t n;
        KB_ENSURE(interim <= MAX_INTERIM, KB_ERR_INVALID);
        kb_dbuf_reset(fields);
        chunked = conn_close = conn_keep = nfields = 0;
        clen = -1;
        KB_GUARD(rd_line(r, &budget, &l, &n));
        KB_GUARD(parse_status_line(l, n, &ri->status, &minor));
        KB_GUARD(
            read_fields(r, &budget, fields, &nfields, &clen, &chunked, &conn_close, &conn_keep));
        /* 1xx are interim (RFC 9110 15.2); we never ask for 101 Switching Protocols */
        KB_ENSURE(ri->status != 101, KB_ERR_INVALID);
        if (ri->status >= 200)
            break;
    }
    /* A sender must not send both; a message with both is a smuggling vector (RFC 9112 6.1). */
    KB_ENSURE(!(chunked && clen >= 0), KB_ERR_INVALID);
    ri->must_close = conn_close || (minor == 0 && !conn_keep);
    if (head || ri->status == 204 || ri->status == 304)
        return KB_OK; /* no body whatever the fields say (RFC 9112 6.3 (1)) */
    if (chunked)
        return read_chunked(r, &budget, body);
    if (clen >= 0) {
        KB_ENSURE((uint64_t)clen <= body->max - body->len, KB_ERR_TOO_LARGE);
        return rd_body(r, (uint64_t)clen, body);
    }
    /* Neither: the body runs to the end of the connection (RFC 9112 6.3 (8)). */
    ri->must_close = 1;
    ri->until_close = 1;
    for (;;) {
        kb_err rc;
        if (r->s < r->e) {
            KB_GUARD(kb_dbuf_add(body, r->b + r->s, r->e - r->s));
            r->s = r->e;
        }
        rc = rd_more(r);
        if (rc == KB_ERR_TRUNCATED)
            return KB_OK;
        KB_GUARD(rc);
    }
}

typedef struct {
    const uint8_t *p;
    size_t len, off;
} memsrc;

static kb_err mem_fill(void *arg, uint8_t *p, size_t cap, size_t *got)
{
    memsrc *m = arg;
    size_t n = m->len - m->off;
    if (n > cap)
        n = cap;
    /* small pieces, so the fuzzer exercises lines and bodies split across reads */
    if (n > 777)
        n = 777;
    if (n)
        memcpy(p, m->p + m->off, n);
    m->off += n;
    *got = n;
    return KB_OK;
}

kb_err kb_httpc_parse_response(const void *p, size_t len, int head, int *status, kb_dbuf *body)
{
    memsrc m = {p, len, 0};
    rd *r;
    kb_dbuf fields;
    resp_info ri;
    kb_err rc;
    KB_ENSURE(p != NULL || len == 0, KB_ERR_NULL);
    KB_ENSURE_REF(status);
    KB_ENSURE_REF(body);
    r = calloc(1, sizeof(*r));
    KB_ENSURE(r != NULL, KB_ERR_NOMEM);
    r->fill = mem_fill;
    r->arg = &m;
    kb_dbuf_init(&fields, KB_HTTPC_MAX_HEADER * 2);
    rc = read_response(r, head, &fields, body, &ri);
    if (rc == KB_OK && (r->s < r->e || m.off < m.len))
        rc = KB_ERR_TRAILING;
    if (rc == KB_OK)
        *status = ri.status;
    kb_dbuf_free(&fields);
    kb_wipe(r, sizeof(*r));
    free(r);
    return rc;
}

/* ---- transport ---------------------------------------------------------------------------- */

struct kb_httpc {
    kb_httpc_url u;
    SSL_CTX *ctx;
    int ctx_own; /* built here: verify host names too */
    char *ua;
    int fd;
    SSL *ssl;
    int unclean_eof; /* TLS ended without close_notify */
    int64_t deadline;
    unsigned connects;
    kb_httpc_stage stage; /* how far the last call got */
    int conn_errno;       /* why the last connect failed (0: it did not) */
    kb_dbuf fields;
    rd r;
    char why[160];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on fd until the call's deadline; EINTR restarts with the time left. */
static kb_err wait_fd(kb_httpc *c, short ev)
{
    for (;;) {
        struct pollfd pf = {c->fd, ev, 0};
        int64_t left = c->deadline - now_ms();
        int n;
        if (left <= 0) {
            snprintf(c->why, sizeof(c->why), "timed out");
            return KB_ERR_TIMEOUT;
        }
        n = poll(&pf, 1, left > 60000 ? 60000 : (int)left);
        if (n > 0)
            return KB_OK;
        if (n < 0 && errno != EINTR) {
            snprintf(c->why, sizeof(c->why), "poll: %s", strerror(errno));
            return KB_ERR_IO;
        }
    }
}

/* A socket BIO that writes with MSG_NOSIGNAL: OpenSSL's own uses write(), which raises SIGPIPE
 * on a connection the peer has reset. */
static int nsbio_write(BIO *b, const char *p, int n)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    ssize_t w;
    BIO_clear_retry_flags(b);
    do
        w = send(fd, p, (size_t)n, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_write(b);
    return (int)w;
}

static int nsbio_read(BIO *b, char *p, int n)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    ssize_t r;
    BIO_clear_retry_flags(b);
    do
        r = recv(fd, p, (size_t)n, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_read(b);
    return (int)r;
}

static long nsbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int nsbio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static pthread_once_t nsbio_once = PTHREAD_ONCE_INIT;
static BIO_METHOD *nsbio_meth;

static void nsbio_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "kb-nosigpipe");
    if (m == NULL)
        return;
    if (BIO_meth_set_write(m, nsbio_write) != 1 || BIO_meth_set_read(m, nsbio_read) != 1 ||
        BIO_meth_set_ctrl(m, nsbio_ctrl) != 1 || BIO_meth_set_create(m, nsbio_create) != 1) {
        BIO_meth_free(m);
        return;
    }
    nsbio_meth = m;
}

static void conn_close(kb_httpc *c)
{
    if (c->ssl) {
        /* no close_notify wait: we are done with this peer either way */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    kb_wipe(c->r.b, sizeof(c->r.b)); /* may hold secret response bytes */
    c->r.s = c->r.e = 0;
    c->unclean_eof = 0;
}

static kb_err tls_error(kb_httpc *c, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    long vr = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    if (vr != X509_V_OK)
        snprintf(c->why, sizeof(c->why), "%s: certificate verify failed: %s", what,
                 X509_verify_cert_error_string(vr));
    else
        snprintf(c->why, sizeof(c->why), "%s: %s", what,
                 e ? ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "TLS error"
                   : "connection closed");
    ERR_clear_error();
    return KB_ERR_AUTH;
}

/* SSL_* call outcome: 1 done, 0 retry after waiting, or an error code. */
static kb_err tls_wait(kb_httpc *c, int ret, const char *what, int *again)
{
    int e = SSL_get_error(c->ssl, ret);
    *again = 1;
    if (e == SSL_ERROR_WANT_READ)
        return wait_fd(c, POLLIN);
    if (e == SSL_ERROR_WANT_WRITE)
        return wait_fd(c, POLLOUT);
    *again = 0;
    return tls_error(c, what);
}

static kb_err tcp_connect(kb_httpc *c)
{
    struct addrinfo hints, *res = NULL;
    int gai, one = 1;
    kb_err rc = KB_ERR_UNAVAILABLE;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = host_is_ip(c->u.host) ? AI_NUMERICHOST : 0;
    gai = getaddrinfo(c->u.host, c->u.port, &hints, &res);
    if (gai != 0) {
        snprintf(c->why, sizeof(c->why), "cannot resolve %.100s: %s", c->u.host, gai_strerror(gai));
        return KB_ERR_UNAVAILABLE;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int err = 0;
        socklen_t el = sizeof(err);
        c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
            continue;
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS && errno != EINTR) {
                c->conn_errno = errno;
                snprintf(c->why, sizeof(c->why), "connect: %s", strerror(errno));
                goto next;
            }
            rc = wait_fd(c, POLLOUT);
            if (rc != KB_OK)
                goto next;
            rc = KB_ERR_UNAVAILABLE;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
                c->conn_errno = err ? err : errno;
                snprintf(c->why, sizeof(c->why), "connect: %s", strerror(err ? err : errno));
                goto next;
            }
        }
        /* request head and body go out in one write; do not let Nagle hold the next one */
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        rc = KB_OK;
        break;
    next:
        close(c->fd);
        c->fd = -1;
        if (rc == KB_ERR_TIMEOUT)
            break;
        rc = KB_ERR_UNAVAILABLE;
    }
    freeaddrinfo(res);
    return rc;
}

static kb_err conn_open(kb_httpc *c)
{
    BIO *b;
    kb_err rc;
    c->stage = KB_HTTPC_STAGE_CONNECT;
    c->conn_errno = 0;
    KB_GUARD(tcp_connect(c));
    c->connects++;
    c->stage = KB_HTTPC_STAGE_HANDSHAKE;
    c->r.s = c->r.e = 0;
    if (!c->u.tls) {
        c->stage = KB_HTTPC_STAGE_EXCHANGE;
        return KB_OK;
    }
    pthread_once(&nsbio_once, nsbio_init);
    KB_ENSURE_OUT(rc, nsbio_meth != NULL, KB_ERR_CRYPTO);
    c->ssl = SSL_new(c->ctx);
    KB_ENSURE_OUT(rc, c->ssl != NULL, KB_ERR_CRYPTO);
    b = BIO_new(nsbio_meth);
    KB_ENSURE_OUT(rc, b != NULL, KB_ERR_CRYPTO);
    BIO_set_data(b, (void *)(intptr_t)c->fd);
    SSL_set_bio(c->ssl, b, b);
    if (c->ctx_own) {
        /* AWS and other public endpoints: the certificate must name the host (RFC 6125). */
        if (host_is_ip(c->u.host)) {
            KB_ENSURE_OUT(rc, X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->u.host),
                          KB_ERR_CRYPTO);
        } else {
            KB_ENSURE_OUT(rc, SSL_set1_host(c->ssl, c->u.host) == 1, KB_ERR_CRYPTO);
        }
    }
    /* SNI carries DNS names only (RFC 6066 3) */
    if (!host_is_ip(c->u.host))
        KB_ENSURE_OUT(rc, SSL_set_tlsext_host_name(c->ssl, c->u.host) == 1, KB_ERR_CRYPTO);
    ERR_clear_error();
    for (;;) {
        int again, ret = SSL_connect(c->ssl);
        if (ret == 1)
            break;
        rc = tls_wait(c, ret, "TLS handshake", &again);
        if (rc != KB_OK)
            goto out;
    }
    c->stage = KB_HTTPC_STAGE_EXCHANGE;
    return KB_OK;
out:
    conn_close(c);
    return rc;
}

/* Write all of p. *sent counts bytes handed to the kernel/TLS. */
static kb_err conn_write(kb_httpc *c, const uint8_t *p, size_t n, size_t *sent)
{
    *sent = 0;
    while (*sent < n) {
        if (c->ssl) {
            size_t w = 0;
            int again, ret;
            ERR_clear_error();
            ret = SSL_write_ex(c->ssl, p + *sent, n - *sent, &w);
            if (ret == 1) {
                *sent += w;
                continue;
            }
            if (SSL_get_error(c->ssl, ret) == SSL_ERROR_SYSCALL) {
                snprintf(c->why, sizeof(c->why), "send: %s", strerror(errno));
                ERR_clear_error();
                return KB_ERR_UNAVAILABLE;
            }
            KB_GUARD(tls_wait(c, ret, "TLS write", &again));
        } else {
            ssize_t w = send(c->fd, p + *sent, n - *sent, MSG_NOSIGNAL);
            if (w >= 0) {
                *sent += (size_t)w;
                continue;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                KB_GUARD(wait_fd(c, POLLOUT));
                continue;
            }
            snprintf(c->why, sizeof(c->why), "send: %s", strerror(errno));
            return KB_ERR_UNAVAILABLE;
        }
    }
    return KB_OK;
}

static kb_err conn_fill(void *arg, uint8_t *p, size_t cap, size_t *got)
{
    kb_httpc *c = arg;
    *got = 0;
    for (;;) {
        if (c->ssl) {
            int ret, e;
            ERR_clear_error();
            ret = SSL_read_ex(c->ssl, p, cap, got);
            if (ret == 1)
                return KB_OK;
            e = SSL_get_error(c->ssl, ret);
            if (e == SSL_ERROR_ZERO_RETURN)
                return KB_OK; /* close_notify */
            if (e == SSL_ERROR_WANT_READ) {
                KB_GUARD(wait_fd(c, POLLIN));
                continue;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
                KB_GUARD(wait_fd(c, POLLOUT));
                continue;
            }
            if (e == SSL_ERROR_SYSCALL ||
                ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
                /* TCP ended without close_notify (or was reset): an end, but not a clean one */
                ERR_clear_error();
                c->unclean_eof = 1;
                *got = 0;
                return KB_OK;
            }
            return tls_error(c, "TLS read");
        } else {
            ssize_t r = recv(c->fd, p, cap, 0);
            if (r >= 0) {
                *got = (size_t)r;
                return KB_OK;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                KB_GUARD(wait_fd(c, POLLIN));
                continue;
            }
            if (errno == ECONNRESET) {
                c->unclean_eof = 1;
                return KB_OK;
            }
            snprintf(c->why, sizeof(c->why), "recv: %s", strerror(errno));
            return KB_ERR_IO;
        }
    }
}

/* Is the idle kept-alive connection still usable? Anything readable on it now (an end, a reset
 * or stray bytes) means no: HTTP/1.1 peers say nothing unasked (RFC 9112 9.3). TLS 1.3 may
 * still deliver post-handshake messages (session tickets): SSL_read consumes those and reports
 * no application data. */
static int conn_idle_ok(kb_httpc *c)
{
    if (c->fd < 0)
        return 0;
    for (int i = 0; i < 8; i++) {
        struct pollfd pf = {c->fd, POLLIN, 0};
        int n;
        do
            n = poll(&pf, 1, 0);
        while (n < 0 && errno == EINTR);
        if (n == 0)
            return c->ssl == NULL || SSL_pending(c->ssl) == 0;
        if (n < 0 || (pf.revents & (POLLERR | POLLNVAL)))
            return 0;
        if (c->ssl) {
            uint8_t b;
            size_t got = 0;
            int ret;
            ERR_clear_error();
            ret = SSL_read_ex(c->ssl, &b, 1, &got);
            kb_wipe(&b, 1);
            if (ret == 1 || SSL_get_error(c->ssl, ret) != SSL_ERROR_WANT_READ) {
                ERR_clear_error();
                return 0;
            }
        } else {
            return 0;
        }
    }
    return 0;
}

static int field_ok(const char *s, int name)
{
    size_t n = strlen(s);
    if (name && n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = (uint8_t)s[i];
        if (name ? !is_tchar(ch) : (ch < 0x20 || ch == 0x7f))
            return 0;
    }
    return 1;
}

static kb_err build_request(const kb_httpc *c, const kb_httpc_req *r, kb_dbuf *out)
{
    KB_GUARD(
        kb_dbuf_addf(out, "%s %s HTTP/1.1\r\nHost: %s\r\n", r->method, r->target, c->u.authority));
    if (c->ua)
        KB_GUARD(kb_dbuf_addf(out, "User-Agent: %s\r\n", c->ua));
    for (size_t i = 0; i < r->n_fields; i++)
        KB_GUARD(kb_dbuf_addf(out, "%s: %s\r\n", r->fields[i].name, r->fields[i].value));
    if (r->body)
        KB_GUARD(kb_dbuf_addf(out, "Content-Length: %zu\r\n", r->body_len));
    KB_GUARD(kb_dbuf_add(out, "\r\n", 2));
    if (r->body_len)
        KB_GUARD(kb_dbuf_add(out, r->body, r->body_len));
    return KB_OK;
}

static kb_err check_req(const kb_httpc_req *r)
{
    static const char *const reserved[] = {"host", "content-length", "transfer-encoding",
                                           "connection"};
    size_t tl;
    KB_ENSURE_REF(r->method);
    KB_ENSURE_REF(r->target);
    KB_ENSURE(r->body != NULL || r->body_len == 0, KB_ERR_NULL);
    KB_ENSURE(r->fields != NULL || r->n_fields == 0, KB_ERR_NULL);
    KB_ENSURE(r->timeout_ms >= 0, KB_ERR_INVALID);
    KB_ENSURE(field_ok(r->method, 1), KB_ERR_INVALID);
    tl = strlen(r->target);
    KB_ENSURE(tl >= 1 && tl < KB_HTTPC_MAX_URL && r->target[0] == '/', KB_ERR_INVALID);
    for (size_t i = 0; i < tl; i++)
        KB_ENSURE((uint8_t)r->target[i] > 0x20 && (uint8_t)r->target[i] < 0x7f, KB_ERR_INVALID);
    for (size_t i = 0; i < r->n_fields; i++) {
        KB_ENSURE(r->fields[i].name != NULL && r->fields[i].value != NULL, KB_ERR_NULL);
        KB_ENSURE(field_ok(r->fields[i].name, 1) && field_ok(r->fields[i].value, 0),
                  KB_ERR_INVALID);
        for (size_t j = 0; j < KB_ARRAY_LEN(reserved); j++)
            KB_ENSURE(strcasecmp(r->fields[i].name, reserved[j]) != 0, KB_ERR_INVALID);
    }
    return KB_OK;
}

kb_err kb_httpc_do(kb_httpc *c, const kb_httpc_req *r, int *status, kb_dbuf *body)
{
    kb_dbuf req;
    resp_info ri;
    size_t body_len0 = body ? body->len : 0;
    kb_err rc;
    KB_ENSURE_REF(c);
    KB_ENSURE_REF(r);
    KB_ENSURE_REF(status);
    KB_ENSURE_REF(body);
    KB_GUARD(check_req(r));
    *status = 0;
    c->why[0] = '\0';
    kb_dbuf_reset(&c->fields);
    c->deadline = now_ms() + (r->timeout_ms ? r->timeout_ms : KB_HTTPC_DEFAULT_TIMEOUT_MS);
    kb_dbuf_init(&req, (size_t)64 * 1024 + r->body_len);
    KB_GUARD_OUT(rc, build_request(c, r, &req)); /* wiped on free: the body may be a secret */

    for (int attempt = 0;; attempt++) {
        int reused = 0;
        size_t sent = 0;
        if (c->fd >= 0 && conn_idle_ok(c)) {
            reused = 1;
            c->stage = KB_HTTPC_STAGE_EXCHANGE;
        } else {
            conn_close(c);
            KB_GUARD_OUT(rc, conn_open(c));
        }
        rc = conn_write(c, req.p, req.len, &sent);
        if (rc == KB_ERR_UNAVAILABLE && reused && attempt == 0 &&
            (sent == 0 || strcmp(r->method, "GET") == 0)) {
            /* the peer closed the kept-alive connection under us: once more on a fresh one */
            conn_close(c);
            continue;
        }
        if (rc != KB_OK)
            goto out;
        c->r.total = 0;
        c->r.fill = conn_fill;
        c->r.arg = c;
        rc = read_response(&c->r, strcmp(r->method, "HEAD") == 0, &c->fields, body, &ri);
        if (rc == KB_ERR_TRUNCATED && c->r.total == 0) {
            /* closed without a byte of answer */
            if (reused && attempt == 0 && strcmp(r->method, "GET") == 0) {
                conn_close(c);
                continue;
            }
            snprintf(c->why, sizeof(c->why), "connection closed before a response");
            rc = KB_ERR_UNAVAILABLE;
        }
        if (rc == KB_OK && ri.until_close && c->unclean_eof)
            rc = KB_ERR_TRUNCATED; /* a body ended by a TCP end without close_notify */
        if (rc == KB_OK && !ri.must_close && c->r.s < c->r.e)
            rc = KB_ERR_TRAILING; /* bytes the server sent past its answer */
        if (rc != KB_OK) {
            if (c->why[0] == '\0')
                snprintf(c->why, sizeof(c->why), "bad response: %s", kb_err_str(rc));
            goto out;
        }
        *status = ri.status;
        if (ri.must_close)
            conn_close(c);
        break;
    }
out:
    if (rc != KB_OK) {
        conn_close(c);
        kb_dbuf_reset(&c->fields);
        /* no partial answer reaches the caller */
        if (body->len > body_len0) {
            kb_wipe(body->p + body_len0, body->len - body_len0);
            body->len = body_len0;
            if (body->p)
                body->p[body->len] = 0;
        }
    } else {
        kb_wipe(c->r.b, c->r.s); /* consumed bytes: the answer may have held secrets */
    }
    kb_dbuf_free(&req);
    return rc;
}

const char *kb_httpc_field_get(const kb_httpc *c, const char *name)
{
    size_t off = 0;
    if (c == NULL || name == NULL)
        return NULL;
    while (off < c->fields.len) {
        const char *n = (const char *)c->fields.p + off;
        const char *v = n + strlen(n) + 1;
        if (strcasecmp(n, name) == 0)
            return v;
        off = (size_t)(v - (const char *)c->fields.p) + strlen(v) + 1;
    }
    return NULL;
}

kb_httpc_stage kb_httpc_last_stage(const kb_httpc *c)
{
    return c ? c->stage : KB_HTTPC_STAGE_CONNECT;
}

int kb_httpc_connect_errno(const kb_httpc *c)
{
    return c ? c->conn_errno : 0;
}

unsigned kb_httpc_connects(const kb_httpc *c)
{
    return c ? c->connects : 0;
}

const char *kb_httpc_why(const kb_httpc *c)
{
    return c ? c->why : "";
}

/* The system trust store. OpenSSL's compiled-in default (OPENSSLDIR) is where the distribution
 * that built OpenSSL keeps it; a binary carrying another distribution's OpenSSL - the Lambda
 * bootstrap links Debian's statically (/usr/lib/ssl), Amazon Linux 2023 keeps its bundle in
 * /etc/pki/tls - falls back to the usual bundle files when neither the default file nor the
 * default directory exists. SSL_CERT_FILE / SSL_CERT_DIR, when set, are OpenSSL's and win. */
static kb_err load_system_store(SSL_CTX *ctx)
{
    static const char *const bundles[] = {
        "/etc/pki/tls/certs/ca-bundle.crt",   /* Amazon Linux, Fedora, RHEL */
        "/etc/ssl/certs/ca-certificates.crt", /* Debian, Ubuntu, Alpine */
    };
    struct stat st;
    if (getenv(X509_get_default_cert_file_env()) == NULL &&
        getenv(X509_get_default_cert_dir_env()) == NULL &&
        stat(X509_get_default_cert_file(), &st) != 0 &&
        stat(X509_get_default_cert_dir(), &st) != 0) {
        for (size_t i = 0; i < sizeof bundles / sizeof bundles[0]; i++)
            if (stat(bundles[i], &st) == 0 && S_ISREG(st.st_mode))
                return SSL_CTX_load_verify_file(ctx, bundles[i]) == 1 ? KB_OK : KB_ERR_CONFIG;
    }
    return SSL_CTX_set_default_verify_paths(ctx) == 1 ? KB_OK : KB_ERR_CONFIG;
}

kb_err kb_httpc_new(const kb_httpc_opts *o, kb_httpc **out)
{
    kb_httpc *c;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(o->url);
    *out = NULL;
    c = calloc(1, sizeof(*c));
    KB_ENSURE(c != NULL, KB_ERR_NOMEM);
    c->fd = -1;
    kb_dbuf_init(&c->fields, KB_HTTPC_MAX_HEADER * 2);
    KB_GUARD_OUT(rc, kb_httpc_parse_url(o->url, &c->u));
    /* Bodies carry secrets: cleartext only on this machine. */
    KB_ENSURE_OUT(rc, c->u.tls || kb_httpc_host_is_loopback(c->u.host), KB_ERR_CONFIG);
    if (o->user_agent) {
        KB_ENSURE_OUT(rc, field_ok(o->user_agent, 0), KB_ERR_INVALID);
        c->ua = strdup(o->user_agent);
        KB_ENSURE_OUT(rc, c->ua != NULL, KB_ERR_NOMEM);
    }
    if (!c->u.tls)
        goto out;
    if (o->ssl_ctx) {
        KB_ENSURE_OUT(rc, SSL_CTX_up_ref(o->ssl_ctx) == 1, KB_ERR_CRYPTO);
        c->ctx = o->ssl_ctx;
        goto out;
    }
    c->ctx_own = 1;
    c->ctx = SSL_CTX_new(TLS_client_method());
    KB_ENSURE_OUT(rc, c->ctx != NULL, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) == 1, KB_ERR_CRYPTO);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    /* The CA store is parsed once per client (per endpoint), not per call. */
    if (o->ca_file)
        KB_ENSURE_OUT(rc, SSL_CTX_load_verify_file(c->ctx, o->ca_file) == 1, KB_ERR_CONFIG);
    else
        KB_GUARD_OUT(rc, load_system_store(c->ctx));
out:
    ERR_clear_error();
    if (rc != KB_OK) {
        kb_httpc_free(c);
        return rc;
    }
    *out = c;
    return KB_OK;
}

void kb_httpc_free(kb_httpc *c)
{
    if (c == NULL)
        return;
    conn_close(c);
    SSL_CTX_free(c->ctx);
    free(c->ua);
    kb_dbuf_free(&c->fields);
    kb_wipe(c, sizeof(*c));
    free(c);
}
