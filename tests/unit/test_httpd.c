/* test_httpd.c - the HTTP(S)/mTLS server layer, driven by libcurl and raw sockets on loopback.
 *
 * With KB_HTTPD_SERVE=1 it instead serves mTLS on 127.0.0.1:0 until killed, for
 * tests/integration/test_httpd_tls.sh: it writes certificates into $KB_HTTPD_DIR and prints
 * "port N" on stdout. */
#include "kbtest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/fileio.h"
#include "lib/httpd.h"
#include "lib/json.h"
#include "lib/log.h"

#define CLIENT_ID "spiffe://example.org/ns/test/sa/client"

/* ---------- certificates ---------- */

static EVP_PKEY *gen_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    return k;
}

static void add_ext(X509 *issuer, X509 *cert, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(ex);
    assert_int_equal(X509_add_ext(cert, ex, -1), 1);
    X509_EXTENSION_free(ex);
}

static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, int is_ca,
                       const char *san)
{
    static long serial = 1;
    X509 *c = X509_new();
    assert_non_null(c);
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), serial++);
    X509_gmtime_adj(X509_getm_notBefore(c), -60);
    X509_gmtime_adj(X509_getm_notAfter(c), 3600);
    X509_set_pubkey(c, key);
    X509_NAME *n = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : n);
    if (is_ca) {
        add_ext(issuer, c, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(issuer, c, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(issuer, c, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(issuer, c, NID_key_usage, "critical,digitalSignature");
        add_ext(issuer, c, NID_ext_key_usage, "serverAuth,clientAuth");
    }
    if (san)
        add_ext(issuer, c, NID_subject_alt_name, san);
    assert_true(X509_sign(c, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return c;
}

static void write_pem_cert(const char *path, X509 *a, X509 *b)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    PEM_write_X509(f, a);
    if (b)
        PEM_write_X509(f, b);
    fclose(f);
}

static void write_pem_key(const char *path, EVP_PKEY *k)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(chmod(path, 0600), 0);
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
}

typedef struct {
    char dir[128];
    char ca[256], cert[256], key[256], ccert[256], ckey[256], other_ca[256], ocert[256], okey[256];
} pki;

/* CA, server leaf (127.0.0.1, localhost) named cn, client SVID CLIENT_ID, and a client SVID from
 * an unrelated CA. */
static void make_pki(pki *p, const char *dir, const char *server_cn)
{
    snprintf(p->dir, sizeof(p->dir), "%s", dir);
    snprintf(p->ca, sizeof(p->ca), "%s/ca.pem", dir);
    snprintf(p->cert, sizeof(p->cert), "%s/server.pem", dir);
    snprintf(p->key, sizeof(p->key), "%s/server.key", dir);
    snprintf(p->ccert, sizeof(p->ccert), "%s/client.pem", dir);
    snprintf(p->ckey, sizeof(p->ckey), "%s/client.key", dir);
    snprintf(p->other_ca, sizeof(p->other_ca), "%s/other_ca.pem", dir);
    snprintf(p->ocert, sizeof(p->ocert), "%s/other.pem", dir);
    snprintf(p->okey, sizeof(p->okey), "%s/other.key", dir);
    EVP_PKEY *cak = gen_key(), *sk = gen_key(), *ck = gen_key(), *ocak = gen_key(), *ok = gen_key();
    X509 *ca = make_cert("test ca", cak, NULL, NULL, 1, NULL);
    X509 *srv = make_cert(server_cn, sk, ca, cak, 0,
                          "DNS:localhost,IP:127.0.0.1,URI:spiffe://example.org/server");
    X509 *cli = make_cert("client", ck, ca, cak, 0, "URI:" CLIENT_ID);
    X509 *oca = make_cert("other ca", ocak, NULL, NULL, 1, NULL);
    X509 *oth = make_cert("other", ok, oca, ocak, 0, "URI:spiffe://example.org/other");
    write_pem_cert(p->ca, ca, NULL);
    write_pem_cert(p->cert, srv, NULL);
    write_pem_key(p->key, sk);
    write_pem_cert(p->ccert, cli, NULL);
    write_pem_key(p->ckey, ck);
    write_pem_cert(p->other_ca, oca, NULL);
    write_pem_cert(p->ocert, oth, NULL);
    write_pem_key(p->okey, ok);
    X509_free(ca);
    X509_free(srv);
    X509_free(cli);
    X509_free(oca);
    X509_free(oth);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(sk);
    EVP_PKEY_free(ck);
    EVP_PKEY_free(ocak);
    EVP_PKEY_free(ok);
}

/* A stand-in for the SPIFFE verifier: chain to the reloaded bundle, exactly one URI SAN. */
static int verify_ok(void *arg, X509 *leaf, STACK_OF(X509) * chain, char *id, size_t id_len,
                     const char **why)
{
    (void)arg;
    X509_STORE *bundle = kb_tlsctx_verify_bundle();
    if (bundle == NULL) {
        *why = "no bundle";
        return 0;
    }
    X509_STORE_CTX *xs = X509_STORE_CTX_new();
    int ok = X509_STORE_CTX_init(xs, bundle, leaf, chain) == 1 && X509_verify_cert(xs) == 1;
    X509_STORE_CTX_free(xs);
    if (!ok) {
        *why = "chain does not verify";
        return 0;
    }
    GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_URI) {
            const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
            snprintf(id, id_len, "%s", u);
            found++;
        }
    }
    GENERAL_NAMES_free(sans);
    if (found != 1) {
        *why = "not exactly one URI SAN";
        return 0;
    }
    return 1;
}

static int verify_refuse(void *arg, X509 *leaf, STACK_OF(X509) * chain, char *id, size_t id_len,
                         const char **why)
{
    (void)arg;
    (void)leaf;
    (void)chain;
    (void)id;
    (void)id_len;
    *why = "refused by test";
    return 0;
}

/* ---------- server under test ---------- */

static atomic_int g_blocking;

static void handler(kb_http_req *r, void *arg)
{
    (void)arg;
    const char *path = kb_http_req_path(r);
    const uint8_t *body;
    size_t len;
    kb_http_req_body(r, &body, &len);
    if (strcmp(path, "/echo") == 0) {
        kb_http_set_header(r, "X-Echo-Len", "yes");
        kb_http_set_header(r, "X-Bad", "a\r\nInjected: 1"); /* must be dropped */
        kb_http_set_header(r, "Content-Length", "1");       /* must be dropped */
        kb_http_reply(r, 200, "application/octet-stream", body, len);
        return;
    }
    if (strcmp(path, "/noreply") == 0)
        return;
    if (strcmp(path, "/block") == 0) {
        /* holds the loop, as a burst of handshakes on a starved CPU would */
        atomic_store(&g_blocking, 1);
        usleep(2500 * 1000);
        kb_http_reply(r, 200, "text/plain", "ok\n", 3);
        return;
    }
    if (strcmp(path, "/big") == 0) {
        size_t n = (size_t)32 * 1024 * 1024;
        uint8_t *b = calloc(1, n);
        kb_http_reply(r, 200, "application/octet-stream", b, n);
        free(b);
        return;
    }
    if (strcmp(path, "/static") == 0) {
        kb_http_reply(r, 200, "text/plain", "ok\n", 3);
        return;
    }
    if (strcmp(path, "/twice") == 0) {
        kb_http_reply(r, 201, "text/plain", "one", 3);
        kb_http_reply(r, 202, "text/plain", "two", 3);
        return;
    }
    json_t *j = json_object();
    json_object_set_new(j, "method", json_string(kb_http_req_method(r)));
    json_object_set_new(j, "path", json_string(path));
    json_object_set_new(j, "query", json_string(kb_http_req_query(r)));
    json_object_set_new(j, "len", json_integer((json_int_t)len));
    json_object_set_new(j, "tls", json_boolean(kb_http_req_is_tls(r)));
    const char *id = kb_http_req_peer_id(r);
    json_object_set_new(j, "id", id ? json_string(id) : json_null());
    json_object_set_new(j, "cert", json_boolean(kb_http_req_peer_cert(r) != NULL));
    const char *xt = kb_http_req_header(r, "x-TEST");
    json_object_set_new(j, "xtest", xt ? json_string(xt) : json_null());
    json_object_set_new(j, "nhdr", json_integer((json_int_t)kb_http_req_header_count(r)));
    const char *peer = kb_http_req_peer_addr(r);
    json_object_set_new(j, "peer_ok", json_boolean(strncmp(peer, "127.0.0.1:", 10) == 0));
    kb_http_reply_json(r, 200, j);
    json_decref(j);
}

typedef struct {
    kb_httpd *h;
    pthread_t th;
    int port;
} srv;

static void *srv_main(void *arg)
{
    srv *s = arg;
    kb_err rc = kb_httpd_run(s->h);
    (void)rc;
    return NULL;
}

static void srv_start(srv *s, kb_httpd_opts *o)
{
    if (o->listen == NULL)
        o->listen = "127.0.0.1:0";
    if (o->handler == NULL)
        o->handler = handler;
    if (o->threads == 0)
        o->threads = 2;
    assert_ok(kb_httpd_new(o, &s->h));
    s->port = kb_httpd_port(s->h);
    assert_true(s->port > 0);
    assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_stop(srv *s)
{
    kb_httpd_stop(s->h);
    pthread_join(s->th, NULL);
    kb_httpd_free(s->h);
    s->h = NULL;
}

/* ---------- curl client ---------- */

typedef struct {
    long status;
    kb_dbuf body;
    kb_dbuf hdrs;
    CURLcode cc;
    long new_conns;
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    kb_dbuf *b = arg;
    return kb_dbuf_add(b, p, sz * n) == KB_OK ? sz * n : 0;
}

static void resp_free(resp *r)
{
    kb_dbuf_free(&r->body);
    kb_dbuf_free(&r->hdrs);
}

typedef struct {
    const char *cafile, *cert, *key;
    long sslversion;
} tlsopt;

/* One request on handle c (reused for keep-alive when the caller passes the same handle). */
static void do_req(CURL *c, const char *url, const char *method, const void *body, size_t len,
                   struct curl_slist *hdrs, const tlsopt *t, resp *r)
{
    memset(r, 0, sizeof(*r));
    kb_dbuf_init(&r->body, 8 * 1024 * 1024);
    kb_dbuf_init(&r->hdrs, 64 * 1024);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->hdrs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    if (method)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    else
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    if (t) {
        curl_easy_setopt(c, CURLOPT_CAINFO, t->cafile);
        curl_easy_setopt(c, CURLOPT_SSLCERT, t->cert);
        curl_easy_setopt(c, CURLOPT_SSLKEY, t->key);
        if (t->sslversion)
            curl_easy_setopt(c, CURLOPT_SSLVERSION, t->sslversion);
    }
    r->cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &r->new_conns);
}

static void get1(const char *url, const tlsopt *t, resp *r)
{
    CURL *c = curl_easy_init();
    do_req(c, url, NULL, NULL, 0, NULL, t, r);
    curl_easy_cleanup(c);
}

static json_t *resp_json(resp *r)
{
    json_t *j = NULL;
    assert_ok(kb_json_parse(r->body.p, r->body.len, 1 << 20, &j, NULL, 0));
    return j;
}

static void assert_json_error(resp *r, const char *code)
{
    json_t *j = resp_json(r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), code);
    assert_non_null(json_string_value(json_object_get(j, "message")));
    json_decref(j);
    assert_non_null(strcasestr(kb_dbuf_str(&r->hdrs), "Cache-Control: no-store"));
    assert_non_null(strcasestr(kb_dbuf_str(&r->hdrs), "Content-Type: application/json"));
}

/* ---------- raw socket client ---------- */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {.tv_sec = 15, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Send req, read until the server closes (or 15 s pass); returns the bytes read. */
static size_t raw_exchange(int port, const char *req, char *out, size_t cap)
{
    int fd = raw_connect(port);
    size_t n = strlen(req);
    assert_int_equal(send(fd, req, n, MSG_NOSIGNAL), (ssize_t)n);
    size_t got = 0;
    for (;;) {
        ssize_t k = recv(fd, out + got, cap - 1 - got, 0);
        if (k <= 0)
            break;
        got += (size_t)k;
        if (got >= cap - 1)
            break;
    }
    out[got] = '\0';
    close(fd);
    return got;
}

/* 1 if the server closed the connection (EOF/reset) within the receive timeout. */
static int raw_wait_closed(int fd)
{
    char b[512];
    for (;;) {
        ssize_t k = recv(fd, b, sizeof(b), 0);
        if (k == 0)
            return 1;
        if (k < 0)
            return errno == ECONNRESET;
    }
}

/* ---------- tests: plain HTTP ---------- */

static void test_plain_roundtrip(void **state)
{
    (void)state;
    srv s = {0};
    kb_httpd_opts o = {0};
    srv_start(&s, &o);
    char url[128];
    resp r;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/a/b%%20c?x=1&y=2", s.port);
    struct curl_slist *h = curl_slist_append(NULL, "X-Test: hello  ");
    CURL *c = curl_easy_init();
    do_req(c, url, NULL, NULL, 0, h, NULL, &r);
    assert_int_equal(r.cc, CURLE_OK);
    assert_int_equal(r.status, 200);
    json_t *j = resp_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/a/b%20c");
    assert_string_equal(json_string_value(json_object_get(j, "query")), "x=1&y=2");
    assert_string_equal(json_string_value(json_object_get(j, "xtest")), "hello");
    assert_true(json_is_false(json_object_get(j, "tls")));
    assert_true(json_is_null(json_object_get(j, "id")));
    assert_true(json_is_true(json_object_get(j, "peer_ok")));
    json_decref(j);
    assert_non_null(strcasestr(kb_dbuf_str(&r.hdrs), "Cache-Control: no-store"));
    resp_free(&r);

    /* POST echo: body round trip, handler headers, injected headers dropped */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", s.port);
    const char body[] = "secret\0bytes\xff";
    do_req(c, url, NULL, body, sizeof(body), NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, sizeof(body));
    assert_memory_equal(r.body.p, body, sizeof(body));
    assert_non_null(strcasestr(kb_dbuf_str(&r.hdrs), "X-Echo-Len: yes"));
    assert_null(strcasestr(kb_dbuf_str(&r.hdrs), "Injected"));
    assert_null(strcasestr(kb_dbuf_str(&r.hdrs), "Content-Length: 1\r"));
    resp_free(&r);

    /* empty-path query only */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/?", s.port);
    do_req(c, url, "DELETE", NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    j = resp_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "method")), "DELETE");
    assert_string_equal(json_string_value(json_object_get(j, "query")), "");
    json_decref(j);
    resp_free(&r);

    /* a handler that never replies gets a JSON 500; a second reply is ignored */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/noreply", s.port);
    do_req(c, url, NULL, NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 500);
    assert_json_error(&r, "internal");
    resp_free(&r);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/twice", s.port);
    do_req(c, url, NULL, NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.body.len, 3);
    assert_memory_equal(r.body.p, "one", 3);
    resp_free(&r);

    /* HEAD: headers only */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s.port);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    do_req(c, url, "HEAD", NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 0);
    resp_free(&r);

    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    srv_stop(&s);
}

/* A body much larger than one socket read crosses many evbuffer chunks and several peek
 * rounds: every byte must arrive in order (a non-repeating pattern catches misplaced chunks). */
static void test_large_body_integrity(void **state)
{
    (void)state;
    srv s = {0};
    kb_httpd_opts o = {0};
    char url[128];
    resp r;
    size_t n = 700 * 1024;
    uint8_t *body = malloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = (uint8_t)((i * 7 + i / 251) % 251);
    srv_start(&s, &o);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", s.port);
    CURL *c = curl_easy_init();
    for (int round = 0; round < 3; round++) {
        do_req(c, url, "POST", body, n, NULL, NULL, &r);
        assert_int_equal(r.cc, CURLE_OK);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body.len, n);
        assert_memory_equal(r.body.p, body, n);
        resp_free(&r);
    }
    curl_easy_cleanup(c);
    srv_stop(&s);
    free(body);
}

static void test_body_limit(void **state)
{
    (void)state;
    srv s = {0};
    kb_httpd_opts o = {.max_body_bytes = 4096};
    srv_start(&s, &o);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", s.port);
    uint8_t *big = malloc(8192);
    for (size_t i = 0; i < 8192; i++)
        big[i] = (uint8_t)(i * 7);
    resp r;
    CURL *c = curl_easy_init();
    size_t sizes[] = {0, 1, 4095, 4096};
    for (size_t i = 0; i < KB_ARRAY_LEN(sizes); i++) {
        do_req(c, url, "PUT", big, sizes[i], NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body.len, sizes[i]);
        if (sizes[i])
            assert_memory_equal(r.body.p, big, sizes[i]);
        resp_free(&r);
    }
    do_req(c, url, "PUT", big, 4097, NULL, NULL, &r);
    assert_int_equal(r.status, 413);
    assert_json_error(&r, "payload_too_large");
    resp_free(&r);
    do_req(c, url, "PUT", big, 8192, NULL, NULL, &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);

    /* chunked: decoded and bounded the same way */
    struct curl_slist *h = curl_slist_append(NULL, "Transfer-Encoding: chunked");
    do_req(c, url, "POST", big, 4096, h, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 4096);
    assert_memory_equal(r.body.p, big, 4096);
    resp_free(&r);
    do_req(c, url, "POST", big, 4097, h, NULL, &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);

    /* the server still serves after all that */
    get1(url, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    free(big);
    srv_stop(&s);
}

static void test_header_limit(void **state)
{
    (void)state;
    srv s = {0};
    kb_httpd_opts o = {.max_header_bytes = 2048};
    srv_start(&s, &o);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s.port);
    char hv[4200];
    resp r;

    memset(hv, 0, sizeof(hv));
    memcpy(hv, "X-Test: ", 8);
    memset(hv + 8, 'a', 1500);
    struct curl_slist *h = curl_slist_append(NULL, hv);
    CURL *c = curl_easy_init();
    do_req(c, url, NULL, NULL, 0, h, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    curl_slist_free_all(h);

    memset(hv + 8, 'a', 4000);
    h = curl_slist_append(NULL, hv);
    do_req(c, url, NULL, NULL, 0, h, NULL, &r);
    assert_int_equal(r.status, 431);
    assert_json_error(&r, "headers_too_large");
    resp_free(&r);
    curl_slist_free_all(h);

    /* too many fields */
    h = NULL;
    for (int i = 0; i < KB_HTTPD_MAX_HEADERS_COUNT + 5; i++) {
        char line[32];
        snprintf(line, sizeof(line), "X-H%d: 1", i);
        h = curl_slist_append(h, line);
    }
    do_req(c, url, NULL, NULL, 0, h, NULL, &r);
    assert_int_equal(r.status, 431);
    resp_free(&r);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    srv_stop(&s);
}

static void test_keepalive(void **state)
{
    (void)state;
    srv s = {0};
    kb_httpd_opts o = {0};
    srv_start(&s, &o);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", s.port);
    CURL *c = curl_easy_init();
    long conns = 0;
    for (int i = 0; i < 300; i++) {
        resp r;
        char body[32];
        int n = snprintf(body, sizeof(body), "req %d", i);
        do_req(c, url, NULL, body, (size_t)n, NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body.len, (size_t)n);
        assert_memory_equal(r.body.p, body, (size_t)n);
        conns += r.new_conns;
        resp_free(&r);
    }
    assert_int_equal(conns, 1);
    curl_easy_cleanup(c);

    /* pipelined requests on one socket are answered in order; Connection: close ends it */
    char out[8192];
    raw_exchange(s.port,
                 "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
                 "GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 out, sizeof(out));
    char *p1 = strstr(out, "\"/1\""), *p2 = strstr(out, "\"/2\""), *p3 = strstr(out, "\"/3\"");
    assert_non_null(p1);
    assert_non_null(p2);
    assert_non_null(p3);
    assert_true(p1 < p2 && p2 < p3);
    assert_non_null(strstr(out, "Connection: close"));

    /* HTTP/1.0 closes unless asked to keep alive */
    raw_exchange(s.port, "GET /10 HTTP/1.0\r\n\r\n", out, sizeof(out));
    assert_true(strncmp(out, "HTTP/1.0 200", 12) == 0);
    srv_stop(&s);
}

static void test_malformed(void **state)
{
    (void)state;
    srv s = {0};
    kb_httpd_opts o = {0};
    srv_start(&s, &o);
    static const struct {
        const char *req;
        const char *status;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", "400"},                       /* no Host */
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"}, /* two Hosts */
        {"GET / HTTP/1.1\nHost: a\r\n\r\n", "400"},              /* bare LF */
        {"GET /\rx HTTP/1.1\r\nHost: a\r\n\r\n", "400"},         /* bare CR */
        {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "400"},           /* double space */
        {"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "400"},    /* absolute-form */
        {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", "400"},            /* bad method */
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "505"},            /* version */
        {"GET / FOO/1.1\r\nHost: a\r\n\r\n", "400"},             /* protocol */
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "400"},           /* space before : */
        {"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "400"}, /* obs-fold */
        {"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", "400"}, /* no colon */
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "400"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", "400"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", "400"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "400"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
         "0\r\n\r\n",
         "400"}, /* CL + TE: smuggling */
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "501"},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "400"},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", "413"},
        {"POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", "417"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01"
         "b\r\n\r\n",
         "400"}, /* control character */
    };
    char out[4096];
    for (size_t i = 0; i < KB_ARRAY_LEN(cases); i++) {
        raw_exchange(s.port, cases[i].req, out, sizeof(out));
        char want[32];
        snprintf(want, sizeof(want), "HTTP/1.1 %s ", cases[i].status);
        if (strncmp(out, want, strlen(want)) != 0)
            fail_msg("case %zu: got '%.40s', want %s", i, out, cases[i].status);
        assert_non_null(strstr(out, "Connection: close"));
        assert_non_null(strstr(out, "\r\n\r\n{\"error\":"));
    }
    /* valid edge cases: leading empty line, chunked with extension and trailer */
    raw_exchange(s.port, "\r\nGET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", out,
                 sizeof(out));
    assert_true(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    raw_exchange(s.port,
                 "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: "
                 "close\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n",
                 out, sizeof(out));
    assert_true(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    assert_non_null(strstr(out, "\r\n\r\nabcde"));
    srv_stop(&s);
}

static double now_secs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Bare LF (or bare CR) line endings never form CRLF CRLF: the server must answer 400 at once,
 * not hold the connection until the request deadline (issue 10 item 7). */
static void test_bare_lf_fast(void **state)
{
    (void)state;
    srv s = {0};
    kb_httpd_opts o = {.timeout_secs = 30, .threads = 1};
    srv_start(&s, &o);
    static const char *cases[] = {
        "GET / HTTP/1.1\nHost: a\n\n",         /* all bare LF */
        "GET / HTTP/1.1\r\nHost: a\n\n",       /* bare LF after a good line */
        "GET / HTTP/1.1\r\nHost: a\r\n\n",     /* bare LF as the empty line */
        "GET / HTTP/1.1\rHost: a\r\r",         /* bare CR */
        "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", /* bare LF as a leading empty line */
    };
    char out[4096];
    for (size_t i = 0; i < KB_ARRAY_LEN(cases); i++) {
        double t0 = now_secs();
        raw_exchange(s.port, cases[i], out, sizeof(out));
        double dt = now_secs() - t0;
        if (strncmp(out, "HTTP/1.1 400 ", 13) != 0 || dt > 3.0)
            fail_msg("case %zu: got '%.40s' after %.1f s, want an immediate 400", i, out, dt);
        assert_non_null(strstr(out, "\"error\":\"bad_request\""));
    }
    /* the same, dribbled one byte at a time: the 400 comes as soon as the bare LF arrives */
    int fd = raw_connect(s.port);
    const char dribble[] = "GET / HTTP/1.1\nHost: a";
    double t0 = now_secs();
    size_t sent = 0;
    for (; sent < sizeof(dribble) - 1; sent++) {
        if (send(fd, dribble + sent, 1, MSG_NOSIGNAL) != 1)
            break;
        usleep(20 * 1000);
    }
    ssize_t k = recv(fd, out, sizeof(out) - 1, 0);
    assert_true(k > 0);
    out[k] = '\0';
    assert_true(strncmp(out, "HTTP/1.1 400 ", 13) == 0);
    assert_true(now_secs() - t0 < 3.0);
    close(fd);
    /* a CRLF split across segments (CR last in one, LF first in the next) is fine */
    fd = raw_connect(s.port);
    const char *parts[] = {"GET / HTTP/1.1\r", "\nHost: a\r", "\nConnection: close\r\n\r", "\n"};
    for (size_t i = 0; i < KB_ARRAY_LEN(parts); i++) {
        assert_int_equal(send(fd, parts[i], strlen(parts[i]), MSG_NOSIGNAL),
                         (ssize_t)strlen(parts[i]));
        usleep(50 * 1000);
    }
    k = recv(fd, out, sizeof(out) - 1, 0);
    assert_true(k > 0);
    out[k] = '\0';
    assert_true(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    close(fd);
    srv_stop(&s);
}

static void test_timeout_slowloris(void **state)
{
    (void)state;
    srv s = {0};
    kb_httpd_opts o = {.timeout_secs = 1, .threads = 1};
    srv_start(&s, &o);
    /* a client that dribbles its head one byte at a time is cut off by the whole-request
     * deadline, even though it is never idle for a full timeout */
    int fd = raw_connect(s.port);
    const char *head = "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int closed = 0;
    for (size_t i = 0; head[i] && i < 40; i++) {
        if (send(fd, head + i, 1, MSG_NOSIGNAL) != 1) {
            closed = 1;
            break;
        }
        /* meanwhile another client is served by the same (only) loop */
        if (i == 3) {
            char url[128];
            resp r;
            snprintf(url, sizeof(url), "http://127.0.0.1:%d/", s.port);
            get1(url, NULL, &r);
            assert_int_equal(r.status, 200);
            resp_free(&r);
        }
        usleep(100 * 1000);
    }
    if (!closed)
        closed = raw_wait_closed(fd);
    assert_true(closed);
    close(fd);

    /* a client that never reads a large reply: the write is bounded by the deadline too, and
     * the reply buffer is released safely although libevent still held it */
    fd = raw_connect(s.port);
    const char big[] = "GET /big HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(send(fd, big, sizeof(big) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(big) - 1));
    for (int i = 0; i < 100 && kb_httpd_connections(s.h) < 1; i++)
        usleep(10 * 1000);
    for (int i = 0; i < 500 && kb_httpd_connections(s.h) > 0; i++)
        usleep(10 * 1000);
    assert_int_equal(kb_httpd_connections(s.h), 0);
    close(fd);

    /* an idle connection (no bytes at all) is closed too */
    fd = raw_connect(s.port);
    assert_true(raw_wait_closed(fd));
    close(fd);
    srv_stop(&s);
}

static void test_connection_cap(void **state)
{
    (void)state;
    srv s = {0};
    kb_httpd_opts o = {.max_connections = 2, .timeout_secs = 30};
    srv_start(&s, &o);
    int a = raw_connect(s.port), b = raw_connect(s.port);
    for (int i = 0; i < 200 && kb_httpd_connections(s.h) < 2; i++)
        usleep(10 * 1000);
    assert_int_equal(kb_httpd_connections(s.h), 2);
    int c = raw_connect(s.port);
    assert_true(raw_wait_closed(c)); /* over the cap: closed at accept */
    close(c);
    assert_int_equal(kb_httpd_connections(s.h), 2);
    close(a);
    for (int i = 0; i < 200 && kb_httpd_connections(s.h) > 1; i++)
        usleep(10 * 1000);
    char out[2048];
    raw_exchange(s.port, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", out,
                 sizeof(out));
    assert_true(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    close(b);
    srv_stop(&s);
}

static void test_bad_options(void **state)
{
    (void)state;
    kb_httpd *h = NULL;
    kb_httpd_opts o = {.listen = "0.0.0.0:0", .handler = handler};
    /* plain HTTP on a non-loopback address: refused before binding */
    assert_kb(kb_httpd_new(&o, &h), KB_ERR_CONFIG);
    assert_null(h);
    o.listen = "[::]:0";
    assert_kb(kb_httpd_new(&o, &h), KB_ERR_CONFIG);
    o.listen = "10.1.2.3:80";
    assert_kb(kb_httpd_new(&o, &h), KB_ERR_CONFIG);
    const char *bad[] = {"127.0.0.1",      "127.0.0.1:",   "127.0.0.1:99999",
                         "127.0.0.1:-1",   "127.0.0.1:8x", "[::1]8080",
                         "example.com:80", ":80",          ""};
    for (size_t i = 0; i < KB_ARRAY_LEN(bad); i++) {
        o.listen = bad[i];
        assert_kb(kb_httpd_new(&o, &h), KB_ERR_CONFIG);
    }
    o.listen = "127.0.0.1:0";
    o.handler = NULL;
    assert_kb(kb_httpd_new(&o, &h), KB_ERR_CONFIG);
    o.handler = handler;
    o.cert_file = "/nonexistent/cert.pem"; /* cert without key */
    assert_kb(kb_httpd_new(&o, &h), KB_ERR_CONFIG);
    o.key_file = "/nonexistent/key.pem";
    assert_kb(kb_httpd_new(&o, &h), KB_ERR_IO);
    o.cert_file = o.key_file = NULL;
    o.verify_peer = verify_ok; /* mTLS without TLS */
    assert_kb(kb_httpd_new(&o, &h), KB_ERR_CONFIG);
    o.verify_peer = NULL;
    o.threads = -1;
    assert_kb(kb_httpd_new(&o, &h), KB_ERR_CONFIG);
    assert_null(h);
    assert_kb(kb_httpd_new(NULL, &h), KB_ERR_NULL);

    /* loopback forms that are accepted; a second bind to a taken port without REUSEPORT
     * ownership is not our concern, but the port is reported */
    o.threads = 1;
    o.listen = "localhost:0";
    assert_ok(kb_httpd_new(&o, &h));
    assert_true(kb_httpd_port(h) > 0);
    kb_httpd_stop(h); /* stop before run: run returns at once */
    assert_ok(kb_httpd_run(h));
    kb_httpd_free(h);
    kb_httpd_free(NULL);

    /* IPv6 loopback, when the machine has it */
    srv s6 = {0};
    kb_httpd_opts o6 = {.listen = "[::1]:0", .threads = 1, .handler = handler};
    if (kb_httpd_new(&o6, &s6.h) == KB_OK) {
        s6.port = kb_httpd_port(s6.h);
        assert_int_equal(pthread_create(&s6.th, NULL, srv_main, &s6), 0);
        char url[128];
        resp r;
        snprintf(url, sizeof(url), "http://[::1]:%d/v6", s6.port);
        get1(url, NULL, &r);
        assert_int_equal(r.status, 200);
        json_t *j = resp_json(&r);
        assert_string_equal(json_string_value(json_object_get(j, "path")), "/v6");
        json_decref(j);
        resp_free(&r);
        srv_stop(&s6);
    }
}

/* ---------- tests: TLS ---------- */

typedef struct {
    char *dir;
    pki p;
} tls_fixture;

static int tls_setup(void **state)
{
    tls_fixture *f = calloc(1, sizeof(*f));
    f->dir = kbtest_tmpdir();
    make_pki(&f->p, f->dir, "server-A");
    *state = f;
    return 0;
}

static int tls_teardown(void **state)
{
    tls_fixture *f = *state;
    const char *names[] = {"ca.pem",       "server.pem", "server.key", "client.pem", "client.key",
                           "other_ca.pem", "other.pem",  "other.key",  "bad.key"};
    char path[512];
    for (size_t i = 0; i < KB_ARRAY_LEN(names); i++) {
        snprintf(path, sizeof(path), "%s/%s", f->dir, names[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void test_tls_server_only(void **state)
{
    tls_fixture *f = *state;
    srv s = {0};
    kb_httpd_opts o = {.cert_file = f->p.cert, .key_file = f->p.key};
    srv_start(&s, &o);
    char url[128];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/x", s.port);
    tlsopt t = {.cafile = f->p.ca};
    resp r;
    get1(url, &t, &r);
    assert_int_equal(r.cc, CURLE_OK);
    assert_int_equal(r.status, 200);
    json_t *j = resp_json(&r);
    assert_true(json_is_true(json_object_get(j, "tls")));
    assert_true(json_is_null(json_object_get(j, "id")));
    json_decref(j);
    resp_free(&r);
    /* over the body limit over TLS: a JSON 413 reaches the client (lingering close) */
    {
        size_t big_len = 3 * KB_HTTPD_MAX_BODY_DEFAULT;
        uint8_t *big = calloc(1, big_len);
        CURL *c = curl_easy_init();
        do_req(c, url, "PUT", big, big_len, NULL, &t, &r);
        assert_int_equal(r.status, 413);
        assert_json_error(&r, "payload_too_large");
        resp_free(&r);
        do_req(c, url, "PUT", big, KB_HTTPD_MAX_BODY_DEFAULT, NULL, &t, &r);
        assert_int_equal(r.status, 200);
        resp_free(&r);
        curl_easy_cleanup(c);
        free(big);
    }
    /* wrong trust anchor on the client: fails */
    tlsopt bad = {.cafile = f->p.other_ca};
    get1(url, &bad, &r);
    assert_int_not_equal(r.cc, CURLE_OK);
    resp_free(&r);
    /* plain HTTP to a TLS port: no reply */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", s.port);
    get1(url, NULL, &r);
    assert_int_not_equal(r.status, 200);
    resp_free(&r);

    /* a key file readable by others is refused */
    assert_int_equal(chmod(f->p.key, 0644), 0);
    kb_httpd *h2 = NULL;
    assert_kb(kb_httpd_new(&o, &h2), KB_ERR_CONFIG);
    assert_int_equal(chmod(f->p.key, 0600), 0);
    /* cert and key that do not match */
    o.key_file = f->p.ckey;
    o.listen = "127.0.0.1:0";
    assert_kb(kb_httpd_new(&o, &h2), KB_ERR_CONFIG);
    srv_stop(&s);
}

static void test_mtls(void **state)
{
    tls_fixture *f = *state;
    srv s = {0};
    kb_httpd_opts o = {.cert_file = f->p.cert,
                       .key_file = f->p.key,
                       .client_ca_file = f->p.ca,
                       .verify_peer = verify_ok};
    srv_start(&s, &o);
    char url[128];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/who", s.port);
    resp r;

    tlsopt t = {.cafile = f->p.ca, .cert = f->p.ccert, .key = f->p.ckey};
    get1(url, &t, &r);
    assert_int_equal(r.cc, CURLE_OK);
    assert_int_equal(r.status, 200);
    json_t *j = resp_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "id")), CLIENT_ID);
    assert_true(json_is_true(json_object_get(j, "cert")));
    json_decref(j);
    resp_free(&r);

    /* no client certificate: handshake fails */
    tlsopt none = {.cafile = f->p.ca};
    get1(url, &none, &r);
    assert_int_not_equal(r.cc, CURLE_OK);
    assert_int_equal(r.status, 0);
    resp_free(&r);

    /* certificate from another CA: the verifier refuses, handshake fails */
    tlsopt other = {.cafile = f->p.ca, .cert = f->p.ocert, .key = f->p.okey};
    get1(url, &other, &r);
    assert_int_not_equal(r.cc, CURLE_OK);
    assert_int_equal(r.status, 0);
    resp_free(&r);
    srv_stop(&s);

    /* a verifier that refuses everything: even the good client fails */
    o.verify_peer = verify_refuse;
    o.listen = NULL;
    srv_start(&s, &o);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/who", s.port);
    get1(url, &t, &r);
    assert_int_not_equal(r.cc, CURLE_OK);
    assert_int_equal(r.status, 0);
    resp_free(&r);
    srv_stop(&s);

    /* client_ca_file without verify_peer is refused (OpenSSL's path check alone is not SPIFFE) */
    kb_httpd *h2 = NULL;
    o.verify_peer = NULL;
    o.listen = "127.0.0.1:0";
    assert_kb(kb_httpd_new(&o, &h2), KB_ERR_CONFIG);
}

static int tls_client(int port, SSL_CTX *cctx, SSL_SESSION **sess_io, int *reused, char *out,
                      size_t cap);
static SSL_CTX *client_ctx(const pki *p, int min_v, int max_v, int with_cert);

/* Plain TCP connections that never start TLS: the handshake has its own short deadline and a
 * pre-handshake cap below the connection cap, so they cannot starve real clients (issue 10
 * item 9). */
static void test_handshake_cap(void **state)
{
    tls_fixture *f = *state;
    srv s = {0};
    kb_httpd_opts o = {.cert_file = f->p.cert,
                       .key_file = f->p.key,
                       .client_ca_file = f->p.ca,
                       .verify_peer = verify_ok,
                       .threads = 1,
                       .timeout_secs = 30,
                       .max_connections = 8,
                       .max_handshakes = 4,
                       .handshake_timeout_secs = 2};
    srv_start(&s, &o);
    enum { NIDLE = 10 };
    int idle[NIDLE];
    for (int i = 0; i < NIDLE; i++)
        idle[i] = raw_connect(s.port);
    /* every idle connection was accepted, but at most max_handshakes are held */
    usleep(300 * 1000);
    assert_true(kb_httpd_connections(s.h) <= 4);
    /* a real mTLS client is still served */
    char out[4096];
    SSL_CTX *cc = client_ctx(&f->p, TLS1_2_VERSION, TLS1_3_VERSION, 1);
    double t0 = now_secs();
    assert_true(tls_client(s.port, cc, NULL, NULL, out, sizeof(out)));
    assert_non_null(strstr(out, CLIENT_ID));
    assert_true(now_secs() - t0 < 2.0);
    SSL_CTX_free(cc);
    /* the idle ones are all closed by the handshake deadline (2 s), not the request one (30 s) */
    t0 = now_secs();
    for (int i = 0; i < NIDLE; i++) {
        assert_true(raw_wait_closed(idle[i]));
        close(idle[i]);
    }
    double dt = now_secs() - t0;
    if (dt > 5.0)
        fail_msg("idle connections closed after %.1f s, want <= handshake_timeout", dt);
    for (int i = 0; i < 200 && kb_httpd_connections(s.h) > 0; i++)
        usleep(10 * 1000);
    assert_int_equal(kb_httpd_connections(s.h), 0);
    /* after a handshake, the request deadline applies (longer than the handshake one) */
    cc = client_ctx(&f->p, TLS1_2_VERSION, TLS1_3_VERSION, 1);
    int fd = raw_connect(s.port);
    SSL *ssl = SSL_new(cc);
    SSL_set_fd(ssl, fd);
    assert_int_equal(SSL_connect(ssl), 1);
    sleep(3); /* past handshake_timeout */
    const char req[] = "GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_int_equal(SSL_write(ssl, req, sizeof(req) - 1), (int)sizeof(req) - 1);
    int k = SSL_read(ssl, out, (int)sizeof(out) - 1);
    assert_true(k > 0);
    out[k] = '\0';
    assert_true(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(cc);
    ERR_clear_error();
    srv_stop(&s);
}

typedef struct {
    int port;
    SSL_CTX *cc;
    int ok;
} blocker;

static void *block_main(void *arg)
{
    blocker *b = arg;
    int fd = raw_connect(b->port);
    SSL *ssl = SSL_new(b->cc);
    char out[512];
    const char req[] = "GET /block HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, req, sizeof(req) - 1) > 0)
        b->ok = SSL_read(ssl, out, sizeof(out) - 1) > 0;
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    return NULL;
}

/* A client that sent its handshake in time must not be closed because the loop was busy past
 * handshake_timeout (bench/herd: under a burst on 2 starved cores, keybridged closed syncers
 * whose handshakes were waiting for the loop, "connection closed before a response"). The
 * client connects (the loop accepts it, its handshake deadline starts), another request holds
 * the only loop for 2.5 s (> handshake_timeout 1 s), the client sends its ClientHello meanwhile:
 * it is served once the loop is free. A client that sends nothing is still closed in time. */
static void test_handshake_busy_loop(void **state)
{
    tls_fixture *f = *state;
    srv s = {0};
    kb_httpd_opts o = {.cert_file = f->p.cert,
                       .key_file = f->p.key,
                       .client_ca_file = f->p.ca,
                       .verify_peer = verify_ok,
                       .threads = 1,
                       .timeout_secs = 30,
                       .handshake_timeout_secs = 1};
    SSL_CTX *cc = client_ctx(&f->p, TLS1_2_VERSION, TLS1_3_VERSION, 1);
    blocker b = {0, cc, 0};
    pthread_t th;
    char out[4096];
    srv_start(&s, &o);
    b.port = s.port;
    int idle = raw_connect(s.port);
    int fd = raw_connect(s.port);
    usleep(200 * 1000); /* both accepted: their handshake deadlines run */
    atomic_store(&g_blocking, 0);
    assert_int_equal(pthread_create(&th, NULL, block_main, &b), 0);
    for (int i = 0; i < 500 && !atomic_load(&g_blocking); i++)
        usleep(10 * 1000);
    assert_true(atomic_load(&g_blocking));
    /* the loop is held: this handshake waits past its deadline through no fault of its own; the
     * client then takes 300 ms (well within handshake_timeout) to answer the server's flight */
    SSL *ssl = SSL_new(cc);
    SSL_set_fd(ssl, fd);
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    for (int slept = 0;;) {
        int ret = SSL_connect(ssl), e;
        struct pollfd pf = {fd, POLLIN, 0};
        if (ret == 1)
            break;
        e = SSL_get_error(ssl, ret);
        assert_true(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE);
        pf.events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        assert_int_equal(poll(&pf, 1, 10000), 1);
        if (!slept++)
            usleep(300 * 1000);
    }
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK), 0);
    const char req[] = "GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_int_equal(SSL_write(ssl, req, sizeof(req) - 1), (int)sizeof(req) - 1);
    int k = SSL_read(ssl, out, (int)sizeof(out) - 1);
    assert_true(k > 0);
    out[k] = '\0';
    assert_true(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    SSL_free(ssl);
    close(fd);
    pthread_join(th, NULL);
    assert_true(b.ok);
    /* the silent one is closed: at most (1 + extensions) x 1 s after its accept */
    assert_true(raw_wait_closed(idle));
    close(idle);
    SSL_CTX_free(cc);
    ERR_clear_error();
    srv_stop(&s);
}

/* BIO-pair client plumbing: what the client's TLS wrote goes to the socket; one read of the
 * socket (waiting up to the receive timeout) goes to the client's TLS. */
static void bio_to_fd(BIO *xb, int fd)
{
    char b[4096];
    int n;
    while ((n = BIO_read(xb, b, (int)sizeof(b))) > 0)
        assert_int_equal(send(fd, b, (size_t)n, MSG_NOSIGNAL), (ssize_t)n);
}

static void fd_to_bio(int fd, BIO *xb)
{
    char b[4096];
    size_t room = BIO_ctrl_get_write_guarantee(xb);
    ssize_t n = recv(fd, b, room < sizeof(b) ? room : sizeof(b), 0);
    assert_true(n > 0);
    assert_int_equal(BIO_write(xb, b, (int)n), (int)n);
}

/* The pre-handshake cap displaces an idle connection, not an older handshake under way: a
 * client that sent its ClientHello (and got the server's flight) is still served when idle TCP
 * connections arriving after it fill the cap (before: the oldest pending handshake was closed,
 * whatever it was doing). */
static void test_handshake_cap_spares_progress(void **state)
{
    tls_fixture *f = *state;
    srv s = {0};
    kb_httpd_opts o = {.cert_file = f->p.cert,
                       .key_file = f->p.key,
                       .client_ca_file = f->p.ca,
                       .verify_peer = verify_ok,
                       .threads = 1,
                       .timeout_secs = 30,
                       .max_connections = 16,
                       .max_handshakes = 4,
                       .handshake_timeout_secs = 5};
    SSL_CTX *cc = client_ctx(&f->p, TLS1_2_VERSION, TLS1_3_VERSION, 1);
    char out[4096];
    int idle[4], ret;
    srv_start(&s, &o);
    int fd = raw_connect(s.port);
    /* The client's TLS runs over a BIO pair and the test carries the bytes, so the handshake
     * stops exactly where the test wants it: with a socket BIO, a client descheduled after its
     * ClientHello found the server's flight already there and finished the handshake in its
     * first SSL_connect (seen in CI). */
    BIO *ib = NULL, *xb = NULL;
    assert_int_equal(BIO_new_bio_pair(&ib, 0, &xb, 0), 1);
    SSL *ssl = SSL_new(cc);
    SSL_set_bio(ssl, ib, ib);
    /* ClientHello out, the server's first flight back: the handshake is under way */
    ret = SSL_connect(ssl);
    assert_true(ret != 1);
    assert_int_equal(SSL_get_error(ssl, ret), SSL_ERROR_WANT_READ);
    bio_to_fd(xb, fd);
    struct pollfd pf = {fd, POLLIN, 0};
    assert_int_equal(poll(&pf, 1, 10000), 1);
    /* four idle connections after it: the cap (4) is reached, one of them must go */
    for (int i = 0; i < 4; i++)
        idle[i] = raw_connect(s.port);
    usleep(500 * 1000);
    while ((ret = SSL_connect(ssl)) != 1) {
        assert_int_equal(SSL_get_error(ssl, ret), SSL_ERROR_WANT_READ);
        bio_to_fd(xb, fd);
        fd_to_bio(fd, xb);
    }
    bio_to_fd(xb, fd);
    const char req[] = "GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    assert_int_equal(SSL_write(ssl, req, sizeof(req) - 1), (int)sizeof(req) - 1);
    bio_to_fd(xb, fd);
    int k;
    while ((k = SSL_read(ssl, out, (int)sizeof(out) - 1)) <= 0) {
        assert_int_equal(SSL_get_error(ssl, k), SSL_ERROR_WANT_READ);
        bio_to_fd(xb, fd);
        fd_to_bio(fd, xb);
    }
    out[k] = '\0';
    assert_true(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    SSL_free(ssl); /* frees ib */
    BIO_free(xb);
    close(fd);
    /* the displaced one was idle: the first of them is closed at once, not at the deadline */
    double t0 = now_secs();
    assert_true(raw_wait_closed(idle[0]));
    assert_true(now_secs() - t0 < 4.0);
    for (int i = 0; i < 4; i++)
        close(idle[i]);
    SSL_CTX_free(cc);
    ERR_clear_error();
    srv_stop(&s);
}

/* Raw OpenSSL client: connect, handshake, send one request, return the response text. */
static int tls_client(int port, SSL_CTX *cctx, SSL_SESSION **sess_io, int *reused, char *out,
                      size_t cap)
{
    int fd = raw_connect(port);
    SSL *ssl = SSL_new(cctx);
    SSL_set_fd(ssl, fd);
    if (sess_io && *sess_io)
        SSL_set_session(ssl, *sess_io);
    int ok = SSL_connect(ssl) == 1;
    out[0] = '\0';
    if (ok) {
        const char req[] = "GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        SSL_write(ssl, req, sizeof(req) - 1);
        size_t got = 0;
        for (;;) {
            int k = SSL_read(ssl, out + got, (int)(cap - 1 - got));
            if (k <= 0)
                break;
            got += (size_t)k;
        }
        out[got] = '\0';
        /* a client that does not send close_notify marks its TLS 1.2 session not resumable */
        SSL_shutdown(ssl);
        if (reused)
            *reused = SSL_session_reused(ssl);
        if (sess_io) {
            SSL_SESSION_free(*sess_io);
            *sess_io = SSL_get1_session(ssl);
        }
        ok = got > 0;
    }
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
    return ok;
}

static SSL_CTX *client_ctx(const pki *p, int min_v, int max_v, int with_cert)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    /* security level 0 so that the CLIENT would happily speak TLS 1.0/1.1: only the server's
     * policy can make the handshake fail */
    SSL_CTX_set_security_level(c, 0);
    SSL_CTX_set_cipher_list(c, "ALL:@SECLEVEL=0");
    SSL_CTX_set_min_proto_version(c, min_v);
    SSL_CTX_set_max_proto_version(c, max_v);
    assert_int_equal(SSL_CTX_load_verify_locations(c, p->ca, NULL), 1);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    if (with_cert) {
        assert_int_equal(SSL_CTX_use_certificate_file(c, p->ccert, SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(c, p->ckey, SSL_FILETYPE_PEM), 1);
    }
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT);
    return c;
}

static void test_tls_versions_and_resumption(void **state)
{
    tls_fixture *f = *state;
    srv s = {0};
    kb_httpd_opts o = {.cert_file = f->p.cert,
                       .key_file = f->p.key,
                       .client_ca_file = f->p.ca,
                       .verify_peer = verify_ok};
    srv_start(&s, &o);
    char out[4096];

    /* TLS 1.0/1.1 refused */
    SSL_CTX *c11 = client_ctx(&f->p, TLS1_VERSION, TLS1_1_VERSION, 1);
    assert_false(tls_client(s.port, c11, NULL, NULL, out, sizeof(out)));
    SSL_CTX_free(c11);

    /* curl too */
    char url[128];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/who", s.port);
    tlsopt t11 = {.cafile = f->p.ca,
                  .cert = f->p.ccert,
                  .key = f->p.ckey,
                  .sslversion = CURL_SSLVERSION_TLSv1_1 | CURL_SSLVERSION_MAX_TLSv1_1};
    resp r;
    get1(url, &t11, &r);
    assert_int_not_equal(r.cc, CURLE_OK);
    resp_free(&r);

    /* the same permissive client works with 1.2 and 1.3; sessions resume and resumed sessions
     * still carry the verified ID (from the ticket) */
    int versions[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    for (size_t i = 0; i < 2; i++) {
        SSL_CTX *cc = client_ctx(&f->p, versions[i], versions[i], 1);
        SSL_SESSION *sess = NULL;
        int reused = -1;
        assert_true(tls_client(s.port, cc, &sess, &reused, out, sizeof(out)));
        assert_int_equal(reused, 0);
        assert_non_null(strstr(out, CLIENT_ID));
        assert_non_null(sess);
        assert_true(tls_client(s.port, cc, &sess, &reused, out, sizeof(out)));
        if (reused != 1)
            assert_int_equal(reused, 1);
        assert_non_null(strstr(out, CLIENT_ID));
        assert_non_null(strstr(out, "\"cert\":true"));
        SSL_SESSION_free(sess);
        SSL_CTX_free(cc);
    }

    /* a TLS 1.2 client offering only CBC / non-ECDHE suites is refused */
    SSL_CTX *cbc = client_ctx(&f->p, TLS1_2_VERSION, TLS1_2_VERSION, 1);
    SSL_CTX_set_cipher_list(cbc, "AES128-SHA:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0");
    assert_false(tls_client(s.port, cbc, NULL, NULL, out, sizeof(out)));
    SSL_CTX_free(cbc);
    srv_stop(&s);
}

static X509 *peer_cert_cn(int port, const pki *p, char *cn, size_t cn_len)
{
    SSL_CTX *cc = client_ctx(p, TLS1_2_VERSION, TLS1_3_VERSION, 0);
    int fd = raw_connect(port);
    SSL *ssl = SSL_new(cc);
    SSL_set_fd(ssl, fd);
    cn[0] = '\0';
    X509 *x = NULL;
    if (SSL_connect(ssl) == 1) {
        x = SSL_get1_peer_certificate(ssl);
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, (int)cn_len);
    }
    SSL_free(ssl);
    SSL_CTX_free(cc);
    close(fd);
    ERR_clear_error();
    return x;
}

static void test_reload(void **state)
{
    tls_fixture *f = *state;
    srv s = {0};
    kb_httpd_opts o = {.cert_file = f->p.cert, .key_file = f->p.key};
    srv_start(&s, &o);
    char cn[64];
    X509 *x = peer_cert_cn(s.port, &f->p, cn, sizeof(cn));
    assert_non_null(x);
    X509_free(x);
    assert_string_equal(cn, "server-A");

    /* an existing keep-alive connection */
    char url[128];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/", s.port);
    tlsopt t = {.cafile = f->p.ca};
    CURL *c = curl_easy_init();
    resp r;
    do_req(c, url, NULL, NULL, 0, NULL, &t, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.new_conns, 1);
    resp_free(&r);

    /* new certificate and key (same CA: keep ca.pem) */
    {
        FILE *fca = fopen(f->p.ca, "r");
        X509 *ca = PEM_read_X509(fca, NULL, NULL, NULL);
        fclose(fca);
        (void)ca;
        X509_free(ca);
    }
    pki p2;
    char *d2 = kbtest_tmpdir();
    make_pki(&p2, d2, "server-B");
    /* serve B's chain; the client trusts B's CA from now on */
    char buf[8192];
    FILE *in = fopen(p2.cert, "r");
    size_t n = fread(buf, 1, sizeof(buf), in);
    fclose(in);
    assert_ok(kb_file_write_atomic(f->p.cert, buf, n, 0644));
    in = fopen(p2.key, "r");
    n = fread(buf, 1, sizeof(buf), in);
    fclose(in);
    assert_ok(kb_file_write_atomic(f->p.key, buf, n, 0600));
    uint64_t before = kb_httpd_reload_count(s.h);
    assert_ok(kb_httpd_reload(s.h));
    assert_true(kb_httpd_reload_count(s.h) > before);

    x = peer_cert_cn(s.port, &p2, cn, sizeof(cn));
    assert_non_null(x);
    X509_free(x);
    assert_string_equal(cn, "server-B");

    /* the old keep-alive connection still works (no new connection made) */
    do_req(c, url, NULL, NULL, 0, NULL, &t, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.new_conns, 0);
    resp_free(&r);
    curl_easy_cleanup(c);

    /* a broken key: reload fails, the previous certificate stays */
    assert_ok(kb_file_write_atomic(f->p.key, "garbage", 7, 0600));
    assert_kb(kb_httpd_reload(s.h), KB_ERR_CRYPTO);
    x = peer_cert_cn(s.port, &p2, cn, sizeof(cn));
    assert_non_null(x);
    X509_free(x);
    assert_string_equal(cn, "server-B");

    /* file polling: putting A's key back (with B's cert) is a mismatch, keep B; then write a
     * full new pair C and wait for the poller to pick it up without an explicit reload */
    pki p3;
    char *d3 = kbtest_tmpdir();
    make_pki(&p3, d3, "server-C");
    in = fopen(p3.key, "r");
    n = fread(buf, 1, sizeof(buf), in);
    fclose(in);
    assert_ok(kb_file_write_atomic(f->p.key, buf, n, 0600));
    in = fopen(p3.cert, "r");
    n = fread(buf, 1, sizeof(buf), in);
    fclose(in);
    assert_ok(kb_file_write_atomic(f->p.cert, buf, n, 0644));
    for (int i = 0; i < 100; i++) {
        x = peer_cert_cn(s.port, &p3, cn, sizeof(cn));
        X509_free(x);
        if (strcmp(cn, "server-C") == 0)
            break;
        usleep(100 * 1000);
    }
    assert_string_equal(cn, "server-C");
    srv_stop(&s);

    tls_fixture t2 = {.dir = d2, .p = p2}, t3 = {.dir = d3, .p = p3};
    tls_fixture *pt2 = malloc(sizeof(t2)), *pt3 = malloc(sizeof(t3));
    *pt2 = t2;
    *pt3 = t3;
    void *st2 = pt2, *st3 = pt3;
    tls_teardown(&st2);
    tls_teardown(&st3);
    /* restore fixture files for later tests in this group */
    make_pki(&f->p, f->dir, "server-A");
}

/* ---------- serve mode for the integration test ---------- */

static kb_httpd *g_serve;

static void on_term(int sig)
{
    (void)sig;
    kb_httpd_stop(g_serve);
}

static int serve_main(void)
{
    const char *dir = getenv("KB_HTTPD_DIR");
    if (dir == NULL)
        return 2;
    /* KB_HTTPD_SERVE=mtls (default) | tls | plain; KB_HTTPD_THREADS=n */
    const char *mode = getenv("KB_HTTPD_SERVE");
    if (mode == NULL)
        mode = "mtls";
    const char *th = getenv("KB_HTTPD_THREADS");
    pki p;
    make_pki(&p, dir, "server-A");
    kb_httpd_opts o = {.listen = "127.0.0.1:0",
                       .threads = th ? (int)strtol(th, NULL, 10) : 0,
                       .cert_file = p.cert,
                       .key_file = p.key,
                       .client_ca_file = p.ca,
                       .verify_peer = verify_ok,
                       .handler = handler};
    if (strcmp(mode, "tls") == 0 || strcmp(mode, "plain") == 0) {
        o.client_ca_file = NULL;
        o.verify_peer = NULL;
    }
    if (strcmp(mode, "plain") == 0)
        o.cert_file = o.key_file = NULL;
    if (kb_httpd_new(&o, &g_serve) != KB_OK)
        return 1;
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    printf("port %d\n", kb_httpd_port(g_serve));
    fflush(stdout);
    kb_err rc = kb_httpd_run(g_serve);
    kb_httpd_free(g_serve);
    return rc == KB_OK ? 0 : 1;
}

int main(void)
{
    kb_json_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (getenv("KB_HTTPD_SERVE") != NULL)
        return serve_main();
    kb_log_set_level(KB_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_plain_roundtrip),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_large_body_integrity),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_bare_lf_fast),
        cmocka_unit_test(test_timeout_slowloris),
        cmocka_unit_test(test_connection_cap),
        cmocka_unit_test_setup_teardown(test_tls_server_only, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_mtls, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_handshake_cap, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_handshake_busy_loop, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_handshake_cap_spares_progress, tls_setup,
                                        tls_teardown),
        cmocka_unit_test_setup_teardown(test_tls_versions_and_resumption, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_reload, tls_setup, tls_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
