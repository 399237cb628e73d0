/* test_httpc.c - the HTTP/1.1 client against scripted servers on 127.0.0.1 (a C thread, plain or
 * TLS with a test CA made by the openssl CLI), and its response parser on raw bytes: every
 * refusal (bare LF, obs-fold, duplicate Content-Length, CL+TE, oversize, truncation, trailing
 * bytes, ...), keep-alive reuse counted in connections, reconnects, timeouts, TLS verification. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "kbtest.h"
#include "lib/httpc.h"

extern char **environ;

/* ---- parser on raw bytes ------------------------------------------------------------------ */

typedef struct {
    const char *raw;
    kb_err want;
    const char *body; /* expected body when KB_OK */
    int status;
} pcase;

static const pcase k_cases[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", KB_OK, "hello", 200},
    {"HTTP/1.1 404 Not Found\r\ncontent-length:2\r\n\r\nno", KB_OK, "no", 404},
    {"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", KB_OK, "", 200},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n "
     "world\r\n0\r\nX-Trailer: 1\r\n\r\n",
     KB_OK, "hello world", 200},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", KB_OK,
     "0123456789", 200},
    {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", KB_OK, "x",
     201},
    {"HTTP/1.1 204 No Content\r\n\r\n", KB_OK, "", 204},
    {"HTTP/1.1 200 OK\r\n\r\nuntil close", KB_OK, "until close", 200},
    {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", KB_OK, "ok", 200},
    /* refusals */
    {"", KB_ERR_TRUNCATED, NULL, 0},
    {"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", KB_ERR_INVALID, NULL, 0},         /* bare LF */
    {"HTTP/1.1 200 OK\r\nA: b\nContent-Length: 0\r\n\r\n", KB_ERR_INVALID, NULL, 0}, /* bare LF */
    {"HTTP/1.1 200 OK\r\nA: b\rc\r\nContent-Length: 0\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nA: b\r\n  folded\r\nContent-Length: 0\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: "
     "chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
     KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", KB_ERR_INVALID, NULL,
     0},
    {"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\n: empty\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 600 OK\r\nContent-Length: 0\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200OK\r\nContent-Length: 0\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 101 Switching Protocols\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", KB_ERR_TRUNCATED, NULL, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", KB_ERR_TRUNCATED, NULL, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", KB_ERR_TRAILING, NULL, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", KB_ERR_INVALID,
     NULL, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", KB_ERR_TRUNCATED, NULL, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", KB_ERR_TOO_LARGE,
     NULL, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer\r\n\r\n",
     KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nX: a\x01z\r\nContent-Length: 0\r\n\r\n", KB_ERR_INVALID, NULL, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", KB_ERR_TOO_LARGE, NULL, 0}, /* max 64 */
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n", KB_ERR_TOO_LARGE, NULL, 0},
};

static void parser_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        kb_dbuf b;
        int st = -1;
        kb_err rc;
        kb_dbuf_init(&b, 64);
        rc = kb_httpc_parse_response(k_cases[i].raw, strlen(k_cases[i].raw), 0, &st, &b);
        if (rc != k_cases[i].want)
            fail_msg("case %zu: got %s, want %s", i, kb_err_str(rc), kb_err_str(k_cases[i].want));
        if (rc == KB_OK) {
            assert_int_equal(st, k_cases[i].status);
            assert_int_equal(b.len, strlen(k_cases[i].body));
            assert_memory_equal(kb_dbuf_str(&b), k_cases[i].body, b.len);
        }
        kb_dbuf_free(&b);
    }
}

static void parser_limits_and_head(void **state)
{
    kb_dbuf b, raw;
    int st;
    (void)state;
    kb_dbuf_init(&b, 64);
    /* HEAD: Content-Length describes a body that is not there */
    assert_ok(
        kb_httpc_parse_response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 38, 1, &st, &b));
    assert_int_equal(b.len, 0);
    /* header section over 16 KiB */
    kb_dbuf_init(&raw, 1 << 20);
    assert_ok(kb_dbuf_addstr(&raw, "HTTP/1.1 200 OK\r\nX-Big: "));
    for (int i = 0; i < 16400; i++)
        assert_ok(kb_dbuf_addc(&raw, 'a'));
    assert_ok(kb_dbuf_addstr(&raw, "\r\nContent-Length: 0\r\n\r\n"));
    assert_kb(kb_httpc_parse_response(raw.p, raw.len, 0, &st, &b), KB_ERR_TOO_LARGE);
    /* many small fields: same total limit, and a count limit */
    kb_dbuf_reset(&raw);
    assert_ok(kb_dbuf_addstr(&raw, "HTTP/1.1 200 OK\r\n"));
    for (int i = 0; i < KB_HTTPC_MAX_FIELDS + 1; i++)
        assert_ok(kb_dbuf_addf(&raw, "X-%d: v\r\n", i));
    assert_ok(kb_dbuf_addstr(&raw, "Content-Length: 0\r\n\r\n"));
    assert_kb(kb_httpc_parse_response(raw.p, raw.len, 0, &st, &b), KB_ERR_TOO_LARGE);
    /* a big Content-Length body within the caller's max is fine */
    kb_dbuf_free(&b);
    kb_dbuf_init(&b, 100000);
    kb_dbuf_reset(&raw);
    assert_ok(kb_dbuf_addstr(&raw, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"));
    for (int i = 0; i < 100000; i++)
        assert_ok(kb_dbuf_addc(&raw, (char)('a' + i % 26)));
    assert_ok(kb_httpc_parse_response(raw.p, raw.len, 0, &st, &b));
    assert_int_equal(b.len, 100000);
    assert_int_equal(b.p[99999], 'a' + 99999 % 26);
    kb_dbuf_free(&raw);
    kb_dbuf_free(&b);
}

static void url_parsing(void **state)
{
    kb_httpc_url u;
    (void)state;
    assert_ok(kb_httpc_parse_url("https://secretsmanager.us-east-1.amazonaws.com", &u));
    assert_int_equal(u.tls, 1);
    assert_string_equal(u.host, "secretsmanager.us-east-1.amazonaws.com");
    assert_string_equal(u.port, "443");
    assert_string_equal(u.target, "/");
    assert_ok(kb_httpc_parse_url("http://[::1]:8080/a/b%20c/?z=1", &u));
    assert_int_equal(u.tls, 0);
    assert_string_equal(u.host, "::1");
    assert_string_equal(u.authority, "[::1]:8080");
    assert_string_equal(u.port, "8080");
    assert_string_equal(u.target, "/a/b%20c/?z=1");
    assert_int_equal(u.path_len, 9);
    assert_ok(kb_httpc_parse_url("http://127.0.0.1?x=1", &u));
    assert_string_equal(u.target, "/?x=1");
    assert_kb(kb_httpc_parse_url("ftp://127.0.0.1/", &u), KB_ERR_INVALID);
    assert_kb(kb_httpc_parse_url("http://user:pw@127.0.0.1/", &u), KB_ERR_INVALID);
    assert_kb(kb_httpc_parse_url("not a url", &u), KB_ERR_INVALID);
    assert_kb(kb_httpc_parse_url("http://127.0.0.1/#frag", &u), KB_ERR_INVALID);
    assert_kb(kb_httpc_parse_url("http://127.0.0.1:0/", &u), KB_ERR_INVALID);
    assert_kb(kb_httpc_parse_url("http://127.0.0.1:65536/", &u), KB_ERR_INVALID);
    assert_kb(kb_httpc_parse_url("http://127.0.0.1:/", &u), KB_ERR_INVALID);
    assert_kb(kb_httpc_parse_url("http:///x", &u), KB_ERR_INVALID);
    assert_kb(kb_httpc_parse_url("http://[zz]/", &u), KB_ERR_INVALID);
    assert_kb(kb_httpc_parse_url("http://a_b/", &u), KB_ERR_INVALID);
    assert_true(kb_httpc_host_is_loopback("127.0.0.1"));
    assert_true(kb_httpc_host_is_loopback("127.9.8.7"));
    assert_true(kb_httpc_host_is_loopback("::1"));
    assert_true(kb_httpc_host_is_loopback("LocalHost"));
    assert_false(kb_httpc_host_is_loopback("128.0.0.1"));
    assert_false(kb_httpc_host_is_loopback("localhost.evil.com"));
    assert_false(kb_httpc_host_is_loopback("10.0.0.1"));
}

/* ---- scripted server ---------------------------------------------------------------------- */

enum { ACT_ANSWER, ACT_ANSWER_CLOSE, ACT_DROP, ACT_SLOW };

typedef struct {
    const char *resp;
    int act;
} step;

typedef struct {
    int lfd, port;
    pthread_t th;
    SSL_CTX *tls;
    const step *script;
    size_t nsteps; /* the last step repeats */
    int conns, reqs, closed, stop;
    char last_req[4096];
} srv;

static int srv_read_req(srv *s, int fd, SSL *ssl, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        char *e;
        int n;
        struct pollfd pf = {fd, POLLIN, 0};
        if (!(ssl && SSL_pending(ssl)) && poll(&pf, 1, 100) == 0) {
            if (__atomic_load_n(&s->stop, __ATOMIC_SEQ_CST))
                return -1;
            continue;
        }
        n = ssl ? SSL_read(ssl, buf + len, (int)(cap - 1 - len))
                : (int)recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = 0;
        e = strstr(buf, "\r\n\r\n");
        if (e) {
            const char *cl = strstr(buf, "Content-Length: ");
            size_t want = (size_t)(e + 4 - buf) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
            if (len >= want)
                return (int)len;
        }
        if (len + 1 >= cap)
            return -1;
    }
}

static void *srv_main(void *arg)
{
    srv *s = arg;
    sigset_t set;
    /* the server side may write to a client that has gone: that thread only blocks SIGPIPE
     * (it is delivered to the writing thread) */
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    while (!__atomic_load_n(&s->stop, __ATOMIC_SEQ_CST)) {
        struct pollfd pf = {s->lfd, POLLIN, 0};
        SSL *ssl = NULL;
        int fd;
        if (poll(&pf, 1, 50) <= 0)
            continue;
        fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        __atomic_add_fetch(&s->conns, 1, __ATOMIC_SEQ_CST);
        if (s->tls) {
            ssl = SSL_new(s->tls);
            SSL_set_fd(ssl, fd);
            if (SSL_accept(ssl) != 1)
                goto done;
        }
        for (;;) {
            char buf[4096];
            int n = srv_read_req(s, fd, ssl, buf, sizeof(buf));
            int i;
            const step *st;
            if (n < 0)
                break;
            memcpy(s->last_req, buf, (size_t)n + 1);
            i = __atomic_fetch_add(&s->reqs, 1, __ATOMIC_SEQ_CST);
            st = &s->script[(size_t)i < s->nsteps ? (size_t)i : s->nsteps - 1];
            if (st->act == ACT_DROP)
                break;
            if (st->act == ACT_SLOW)
                usleep(400 * 1000);
            if (ssl)
                SSL_write(ssl, st->resp, (int)strlen(st->resp));
            else
                (void)!send(fd, st->resp, strlen(st->resp), MSG_NOSIGNAL);
            if (st->act == ACT_ANSWER_CLOSE)
                break;
        }
    done:
        if (ssl) {
            SSL_shutdown(ssl);
            SSL_free(ssl);
        }
        close(fd);
        __atomic_add_fetch(&s->closed, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void srv_start(srv *s, const step *script, size_t n, SSL_CTX *tls)
{
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof(sa);
    memset(s, 0, sizeof(*s));
    s->script = script;
    s->nsteps = n;
    s->tls = tls;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(s->lfd, 8), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_stop(srv *s)
{
    __atomic_store_n(&s->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(s->th, NULL);
    close(s->lfd);
}

/* Wait (bounded) until the server has closed n connections: a sync point, not a timing test. */
static void wait_closed(srv *s, int n)
{
    for (int i = 0; i < 1000 && __atomic_load_n(&s->closed, __ATOMIC_SEQ_CST) < n; i++)
        usleep(10 * 1000);
    assert_true(__atomic_load_n(&s->closed, __ATOMIC_SEQ_CST) >= n);
}

static kb_httpc *client_for(const srv *s, const char *scheme, const char *host, const char *ca,
                            SSL_CTX *ctx)
{
    char url[128];
    kb_httpc *c = NULL;
    kb_httpc_opts o = {url, ca, ctx, "kbtest/1"};
    snprintf(url, sizeof(url), "%s://%s:%d", scheme, host, s->port);
    assert_ok(kb_httpc_new(&o, &c));
    return c;
}

static kb_err do_req(kb_httpc *c, const char *method, const char *body, long timeout_ms, int *st,
                     kb_dbuf *out)
{
    kb_httpc_field f[] = {{"Content-Type", "application/json"}};
    kb_httpc_req r = {method, "/p?q=1", f, 1, body, body ? strlen(body) : 0, timeout_ms};
    kb_dbuf_reset(out);
    return kb_httpc_do(c, &r, st, out);
}

#define OK5 "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
#define CHUNKED "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"

static void keepalive_reuse_and_bodies(void **state)
{
    static const step sc[] = {{OK5, ACT_ANSWER}, {CHUNKED, ACT_ANSWER}, {OK5, ACT_ANSWER}};
    srv s;
    kb_httpc *c;
    kb_dbuf b;
    int st;
    (void)state;
    srv_start(&s, sc, 3, NULL);
    c = client_for(&s, "http", "127.0.0.1", NULL, NULL);
    kb_dbuf_init(&b, 1024);
    assert_ok(do_req(c, "POST", "{\"a\":1}", 0, &st, &b));
    assert_int_equal(st, 200);
    assert_string_equal(kb_dbuf_str(&b), "hello");
    assert_non_null(strstr(s.last_req, "POST /p?q=1 HTTP/1.1\r\n"));
    assert_non_null(strstr(s.last_req, "Content-Length: 7\r\n"));
    assert_non_null(strstr(s.last_req, "User-Agent: kbtest/1\r\n"));
    assert_non_null(strstr(s.last_req, "\r\n\r\n{\"a\":1}"));
    {
        char host[64];
        snprintf(host, sizeof(host), "Host: 127.0.0.1:%d\r\n", s.port);
        assert_non_null(strstr(s.last_req, host));
    }
    assert_string_equal(kb_httpc_field_get(c, "content-length"), "5");
    assert_null(kb_httpc_field_get(c, "X-None"));
    assert_ok(do_req(c, "GET", NULL, 0, &st, &b));
    assert_string_equal(kb_dbuf_str(&b), "abc");
    assert_null(strstr(s.last_req, "Content-Length"));
    for (int i = 0; i < 20; i++)
        assert_ok(do_req(c, "GET", NULL, 0, &st, &b));
    assert_int_equal(kb_httpc_connects(c), 1);
    assert_int_equal(__atomic_load_n(&s.conns, __ATOMIC_SEQ_CST), 1);
    assert_int_equal(__atomic_load_n(&s.reqs, __ATOMIC_SEQ_CST), 22);
    kb_httpc_free(c);
    kb_dbuf_free(&b);
    srv_stop(&s);
}

static void reconnects_when_peer_closed(void **state)
{
    /* the server closes after each answer, without saying so */
    static const step sc[] = {{OK5, ACT_ANSWER_CLOSE}};
    static const step drop[] = {{OK5, ACT_ANSWER}, {"", ACT_DROP}, {OK5, ACT_ANSWER}};
    srv s;
    kb_httpc *c;
    kb_dbuf b;
    int st;
    (void)state;
    kb_dbuf_init(&b, 1024);
    srv_start(&s, sc, 1, NULL);
    c = client_for(&s, "http", "127.0.0.1", NULL, NULL);
    for (int i = 0; i < 3; i++) {
        assert_ok(do_req(c, "POST", "{}", 0, &st, &b));
        assert_string_equal(kb_dbuf_str(&b), "hello");
        wait_closed(&s, i + 1); /* the server has closed: the next call must notice */
    }
    assert_int_equal(kb_httpc_connects(c), 3);
    kb_httpc_free(c);
    srv_stop(&s);

    /* a GET on a kept-alive connection closed without an answer is sent once more */
    srv_start(&s, drop, 3, NULL);
    c = client_for(&s, "http", "127.0.0.1", NULL, NULL);
    assert_ok(do_req(c, "GET", NULL, 0, &st, &b));
    assert_ok(do_req(c, "GET", NULL, 0, &st, &b));
    assert_string_equal(kb_dbuf_str(&b), "hello");
    assert_int_equal(kb_httpc_connects(c), 2);
    assert_int_equal(__atomic_load_n(&s.reqs, __ATOMIC_SEQ_CST), 3);
    kb_httpc_free(c);
    srv_stop(&s);

    /* ... but a POST that reached the server is not: the caller decides */
    srv_start(&s, drop, 3, NULL);
    c = client_for(&s, "http", "127.0.0.1", NULL, NULL);
    assert_ok(do_req(c, "POST", "{}", 0, &st, &b));
    assert_kb(do_req(c, "POST", "{}", 0, &st, &b), KB_ERR_UNAVAILABLE);
    assert_int_equal(b.len, 0);
    assert_int_equal(__atomic_load_n(&s.reqs, __ATOMIC_SEQ_CST), 2);
    /* and the next call opens a new connection */
    assert_ok(do_req(c, "POST", "{}", 0, &st, &b));
    assert_int_equal(kb_httpc_connects(c), 2);
    kb_httpc_free(c);
    srv_stop(&s);
    kb_dbuf_free(&b);
}

static void live_malformed_and_limits(void **state)
{
    static const step sc[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", ACT_ANSWER},
        {"HTTP/1.1 200 OK\r\nA: b\r\n c\r\nContent-Length: 0\r\n\r\n", ACT_ANSWER},
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK", ACT_ANSWER},
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", ACT_ANSWER_CLOSE},
        {"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", ACT_ANSWER},
        {OK5, ACT_SLOW},
        {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", ACT_ANSWER},
        {OK5, ACT_ANSWER},
    };
    srv s;
    kb_httpc *c;
    kb_dbuf b;
    int st;
    (void)state;
    kb_dbuf_init(&b, 1024);
    srv_start(&s, sc, KB_ARRAY_LEN(sc), NULL);
    c = client_for(&s, "http", "127.0.0.1", NULL, NULL);
    assert_kb(do_req(c, "POST", "{}", 0, &st, &b), KB_ERR_INVALID);
    assert_kb(do_req(c, "POST", "{}", 0, &st, &b), KB_ERR_INVALID);
    assert_kb(do_req(c, "POST", "{}", 0, &st, &b), KB_ERR_TRAILING);
    assert_int_equal(b.len, 0);
    assert_kb(do_req(c, "POST", "{}", 0, &st, &b), KB_ERR_TRUNCATED);
    assert_int_equal(b.len, 0); /* no partial answer */
    assert_kb(do_req(c, "POST", "{}", 0, &st, &b), KB_ERR_TOO_LARGE);
    assert_kb(do_req(c, "POST", "{}", 100, &st, &b), KB_ERR_TIMEOUT);
    assert_string_equal(kb_httpc_why(c), "timed out");
    assert_ok(do_req(c, "POST", "{}", 0, &st, &b));
    assert_ok(do_req(c, "POST", "{}", 0, &st, &b));
    /* each error and the Connection: close dropped the connection */
    assert_int_equal(kb_httpc_connects(c), 8);
    kb_httpc_free(c);
    srv_stop(&s);
    kb_dbuf_free(&b);
}

static void bad_arguments_and_refusals(void **state)
{
    kb_httpc *c = NULL;
    kb_httpc_opts o = {"http://10.1.2.3:80", NULL, NULL, NULL};
    kb_dbuf b;
    int st;
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof(sa);
    int fd;
    char url[64];
    (void)state;
    assert_kb(kb_httpc_new(&o, &c), KB_ERR_CONFIG); /* cleartext off this machine */
    o.url = "http://example.com/";
    assert_kb(kb_httpc_new(&o, &c), KB_ERR_CONFIG);
    o.url = "gopher://127.0.0.1/";
    assert_kb(kb_httpc_new(&o, &c), KB_ERR_INVALID);
    o.url = "https://127.0.0.1:1/";
    o.ca_file = "/nonexistent/ca.pem";
    assert_kb(kb_httpc_new(&o, &c), KB_ERR_CONFIG);
    o.ca_file = NULL;
    o.user_agent = "x\r\nEvil: 1";
    assert_kb(kb_httpc_new(&o, &c), KB_ERR_INVALID);
    assert_null(c);
    /* nobody listening on a port that was just free */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(sa.sin_port));
    o.url = url;
    o.user_agent = NULL;
    assert_ok(kb_httpc_new(&o, &c));
    kb_dbuf_init(&b, 64);
    assert_kb(do_req(c, "GET", NULL, 0, &st, &b), KB_ERR_UNAVAILABLE);
    {
        kb_httpc_field evil[] = {{"X-A", "b\r\nInjected: 1"}};
        kb_httpc_field host[] = {{"host", "other"}};
        kb_httpc_field badname[] = {{"X A", "b"}};
        kb_httpc_req r = {"GET", "/", evil, 1, NULL, 0, 0};
        assert_kb(kb_httpc_do(c, &r, &st, &b), KB_ERR_INVALID);
        r.fields = host;
        assert_kb(kb_httpc_do(c, &r, &st, &b), KB_ERR_INVALID);
        r.fields = badname;
        assert_kb(kb_httpc_do(c, &r, &st, &b), KB_ERR_INVALID);
        r.n_fields = 0;
        r.target = "/a b";
        assert_kb(kb_httpc_do(c, &r, &st, &b), KB_ERR_INVALID);
        r.target = "x";
        assert_kb(kb_httpc_do(c, &r, &st, &b), KB_ERR_INVALID);
        r.target = "/";
        r.method = "GE T";
        assert_kb(kb_httpc_do(c, &r, &st, &b), KB_ERR_INVALID);
        r.method = NULL;
        assert_kb(kb_httpc_do(c, &r, &st, &b), KB_ERR_NULL);
    }
    assert_int_equal(kb_httpc_connects(c), 0);
    kb_httpc_free(c);
    kb_dbuf_free(&b);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

static char *g_dir;

static void run_sh(const char *cmd)
{
    pid_t pid;
    int wst = 0;
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    assert_int_equal(posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ), 0);
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
}

static SSL_CTX *server_ctx(const char *name)
{
    char cert[512], key[512];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    snprintf(cert, sizeof(cert), "%s/%s.pem", g_dir, name);
    snprintf(key, sizeof(key), "%s/%s.key", g_dir, name);
    assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
    return ctx;
}

static int tls_setup(void **state)
{
    char cmd[4096];
    (void)state;
    g_dir = kbtest_tmpdir();
    if (g_dir == NULL)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "set -e; cd %s; "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
             "-out ca.pem -subj /CN=kbtest-ca -days 2 -addext basicConstraints=critical,CA:TRUE "
             "-addext keyUsage=critical,keyCertSign 2>/dev/null; "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
             "good.key -out good.pem -subj /CN=localhost -days 2 -CA ca.pem -CAkey ca.key "
             "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null; "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
             "other.key -out other.pem -subj /CN=other -days 2 -CA ca.pem -CAkey ca.key "
             "-addext subjectAltName=DNS:other.example 2>/dev/null",
             g_dir);
    run_sh(cmd);
    return 0;
}

static int tls_teardown(void **state)
{
    char cmd[600];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    run_sh(cmd);
    free(g_dir);
    return 0;
}

static int g_verify_calls;
static int g_verify_answer;

static int custom_verify(X509_STORE_CTX *x, void *arg)
{
    (void)arg;
    g_verify_calls++;
    X509_STORE_CTX_set_error(x, g_verify_answer ? X509_V_OK : X509_V_ERR_APPLICATION_VERIFICATION);
    return g_verify_answer;
}

static void tls_verification(void **state)
{
    static const step sc[] = {{OK5, ACT_ANSWER}};
    SSL_CTX *good = server_ctx("good"), *other = server_ctx("other"), *cctx;
    char ca[512];
    srv s;
    kb_httpc *c;
    kb_dbuf b;
    int st;
    (void)state;
    snprintf(ca, sizeof(ca), "%s/ca.pem", g_dir);
    kb_dbuf_init(&b, 1024);

    srv_start(&s, sc, 1, good);
    /* by IP (checked against the IP SAN), kept alive */
    c = client_for(&s, "https", "127.0.0.1", ca, NULL);
    for (int i = 0; i < 5; i++) {
        assert_ok(do_req(c, "POST", "{\"secret\":1}", 0, &st, &b));
        assert_string_equal(kb_dbuf_str(&b), "hello");
    }
    assert_int_equal(kb_httpc_connects(c), 1);
    kb_httpc_free(c);
    /* by name (SNI + DNS SAN) */
    c = client_for(&s, "https", "localhost", ca, NULL);
    assert_ok(do_req(c, "GET", NULL, 0, &st, &b));
    kb_httpc_free(c);
    /* the system store does not know the test CA */
    c = client_for(&s, "https", "127.0.0.1", NULL, NULL);
    assert_kb(do_req(c, "GET", NULL, 0, &st, &b), KB_ERR_AUTH);
    assert_non_null(strstr(kb_httpc_why(c), "verify"));
    kb_httpc_free(c);
    /* plain http to a TLS server: no valid answer */
    c = client_for(&s, "http", "127.0.0.1", NULL, NULL);
    assert_true(do_req(c, "GET", NULL, 1000, &st, &b) != KB_OK);
    kb_httpc_free(c);
    srv_stop(&s);

    /* a certificate from the right CA for another name */
    srv_start(&s, sc, 1, other);
    c = client_for(&s, "https", "127.0.0.1", ca, NULL);
    assert_kb(do_req(c, "GET", NULL, 0, &st, &b), KB_ERR_AUTH);
    kb_httpc_free(c);
    /* a caller's context decides alone (no host name check, no CA store loaded) */
    cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_cert_verify_callback(cctx, custom_verify, NULL);
    g_verify_answer = 0;
    c = client_for(&s, "https", "127.0.0.1", NULL, cctx);
    assert_kb(do_req(c, "GET", NULL, 0, &st, &b), KB_ERR_AUTH);
    assert_int_equal(g_verify_calls, 1);
    g_verify_answer = 1;
    assert_ok(do_req(c, "GET", NULL, 0, &st, &b));
    assert_ok(do_req(c, "GET", NULL, 0, &st, &b));
    assert_int_equal(g_verify_calls, 2);
    assert_int_equal(kb_httpc_connects(c), 2);
    kb_httpc_free(c);
    SSL_CTX_free(cctx); /* the client held its own reference until here */
    srv_stop(&s);
    SSL_CTX_free(good);
    SSL_CTX_free(other);
    kb_dbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parser_cases),
        cmocka_unit_test(parser_limits_and_head),
        cmocka_unit_test(url_parsing),
        cmocka_unit_test(keepalive_reuse_and_bodies),
        cmocka_unit_test(reconnects_when_peer_closed),
        cmocka_unit_test(live_malformed_and_limits),
        cmocka_unit_test(bad_arguments_and_refusals),
        cmocka_unit_test_setup_teardown(tls_verification, tls_setup, tls_teardown),
    };
    /* SIGPIPE keeps its default action here: the client must never raise it (httpc.h) */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
