/* fuzz_httpd_request.c - keybridged's HTTP/1.1 request side (src/lib/httpd.c), the first code
 * to touch network bytes: request line, header fields, Content-Length and chunked bodies,
 * trailers, Expect: 100-continue, keep-alive and pipelining.
 *
 * The parser is static, so this file includes httpd.c (as wireguard-tools' fuzzers do) and drives
 * a connection's state machine directly: the input is appended to the input buffer of one end of
 * a libevent bufferevent pair, conn_process() parses it, the handler answers every request, and
 * the harness then does what on_write() does once a reply is sent (start the next pipelined
 * request) until the input is used up or the connection closes. No socket, thread or timer runs.
 *
 * Properties checked (abort on failure): every request the handler sees has a token method of at
 * most 32 bytes, an origin-form path of visible ASCII, at most KB_HTTPD_MAX_HEADERS_COUNT fields
 * whose names are tokens and whose values carry no CR, LF or NUL, and a body within
 * max_body_bytes; every byte written back is a sequence of whole "HTTP/1.x NNN" responses; the
 * head buffer never exceeds max_header_bytes + 1. */
#include "../../src/lib/httpd.c"

#include <event2/bufferevent.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MAX_HEADER 2048
#define FZ_MAX_BODY 4096
#define FZ_MAX_ROUNDS 64

static kb_httpd fz_h;
static loop fz_lp;
static struct timeval fz_tv = {3600, 0};
static int fz_closed; /* conn_closed ran: the connection is gone */

static void fz_handler(kb_http_req *r, void *arg)
{
    const uint8_t *body;
    size_t blen;
    (void)arg;
    if (!is_token(r->method) || strlen(r->method) > 32 || r->path[0] != '/')
        abort();
    for (const char *q = r->path; *q; q++)
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
            abort();
    if (kb_http_req_header_count(r) > KB_HTTPD_MAX_HEADERS_COUNT)
        abort();
    for (size_t i = 0; i < kb_http_req_header_count(r); i++) {
        const char *n, *v;
        kb_http_req_header_at(r, i, &n, &v);
        if (!is_token(n) || !is_field_value(v))
            abort();
    }
    kb_http_req_body(r, &body, &blen);
    if (body == NULL || blen > FZ_MAX_BODY)
        abort();
    /* The connection's data pointer makes conn_free() report the close (fz_conn_closed). */
    *kb_http_req_conn_data(r) = &fz_closed;
    kb_http_set_header(r, "X-Path", kb_http_req_path(r));
    if (blen > 0 && body[0] == 'c')
        kb_http_req_close_after(r);
    kb_http_reply(r, 200, "application/octet-stream", body, blen);
}

static void fz_conn_closed(void *conn_data, void *arg)
{
    (void)arg;
    *(int *)conn_data = 1;
}

/* Every response starts "HTTP/1.x NNN " and has a complete head. */
static void fz_check_output(struct evbuffer *out)
{
    size_t n = evbuffer_get_length(out);
    if (n == 0)
        return;
    unsigned char *p = evbuffer_pullup(out, (ev_ssize_t)n);
    if (p == NULL || n < 13 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') ||
        p[8] != ' ' || p[9] < '1' || p[9] > '5' || p[12] != ' ')
        abort();
    if (memmem(p, n, "\r\n\r\n", 4) == NULL)
        abort();
    evbuffer_drain(out, n); /* runs obuf_cleanup: the reply block is free for the next one */
}

static void fz_init(void)
{
    kb_json_init();
    fz_h.o.max_header_bytes = FZ_MAX_HEADER;
    fz_h.o.max_body_bytes = FZ_MAX_BODY;
    fz_h.o.max_connections = 1;
    fz_h.o.handler = fz_handler;
    fz_h.o.conn_closed = fz_conn_closed;
    fz_lp.h = &fz_h;
    fz_lp.base = event_base_new();
    if (fz_lp.base == NULL)
        abort();
    fz_lp.to_req = &fz_tv;
    fz_lp.to_linger = &fz_tv;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct bufferevent *pair[2];
    conn *c;

    if (fz_lp.base == NULL)
        fz_init();
    if (size > FZ_MAX_HEADER + 2 * FZ_MAX_BODY)
        return 0;
    c = calloc(1, sizeof(*c));
    if (c == NULL || bufferevent_pair_new(fz_lp.base, 0, pair) != 0)
        abort();
    c->lp = &fz_lp;
    c->bev = pair[0];
    kb_dbuf_init(&c->out, KB_HTTPD_RESP_HEAD_MAX);
    kb_dbuf_init(&c->req.extra, KB_HTTPD_RESP_HEAD_MAX / 2);
    c->req.c = c;
    c->deadline = evtimer_new(fz_lp.base, on_deadline, c);
    if (c->deadline == NULL)
        abort();
    fz_lp.conns = c;
    atomic_fetch_add(&fz_h.nconn, 1);
    conn_start_request(c);
    fz_closed = 0;

    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    /* A bufferevent freezes the ends of its buffers that libevent itself fills and drains;
     * here the harness plays the socket. */
    if (evbuffer_unfreeze(in, 0) != 0 || evbuffer_unfreeze(out, 1) != 0 ||
        evbuffer_add(in, data, size) != 0)
        abort();
    conn_process(c);
    for (int round = 0; round < FZ_MAX_ROUNDS && fz_lp.conns == c; round++) {
        if (c->hcap > FZ_MAX_HEADER + 1 && c->hlen > FZ_MAX_HEADER)
            abort();
        if (c->st != ST_WRITE)
            break; /* waiting for more input */
        fz_check_output(out);
        if (c->close_after)
            break; /* on_write would half-close and linger */
        /* on_write: the reply is out; the next pipelined request starts. */
        conn_start_request(c);
        if (evbuffer_get_length(in) == 0)
            break;
        conn_process(c);
    }
    /* conn_free unlinks the connection: it is alive while it is the loop's only one */
    if (fz_lp.conns == c) {
        fz_check_output(out);
        conn_free(c);
    }
    bufferevent_free(pair[1]);
    /* Freed bufferevents are finalized from the loop: let it run once (no timer is due). */
    event_base_loop(fz_lp.base, EVLOOP_NONBLOCK);
    return 0;
}
