/* test_sigv4.c - AWS SigV4: every case of the aws-c-auth v4 test suite (canonical request, string
 * to sign, signature, Authorization), then verification: round trip and its negative cases. */
#include <dirent.h>
#include <string.h>
#include <strings.h>

#include "kbtest.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/fileio.h"
#include "lib/json.h"
#include "lib/secbuf.h"
#include "lib/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

/* ------------------------------------------------------------------ request.txt (test-only) */

#define T_MAX_HEADERS 32

typedef struct {
    char *method, *path, *query;
    /* two heap arrays, not arrays in the struct: clang's analyzer loses a pointer stored at a
     * symbolic index when the next store at a symbolic index hits the same struct */
    char **names;
    char **values;
    kb_sigv4_header h[T_MAX_HEADERS + 4];
    size_t n;
    uint8_t *body;
    size_t body_len;
} treq;

static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static void treq_reserve(treq *t)
{
    if (t->names == NULL)
        t->names = calloc(T_MAX_HEADERS + 4, sizeof(char *));
    if (t->values == NULL)
        t->values = calloc(T_MAX_HEADERS + 4, sizeof(char *));
    assert_non_null(t->names);
    assert_non_null(t->values);
}

static void treq_add(treq *t, const char *name, const char *value)
{
    treq_reserve(t);
    if (t->n >= T_MAX_HEADERS + 4) { /* cmocka's fail() returns: do not write past the end */
        fail_msg("more than %d headers", T_MAX_HEADERS + 4);
        return;
    }
    size_t i = t->n++;
    char *nm = dup_n(name, strlen(name)), *val = dup_n(value, strlen(value));
    t->names[i] = nm;
    t->values[i] = val;
}

/* Point the kb_sigv4_header array at the owned strings (after any change). */
static kb_sigv4_request treq_view(treq *t)
{
    kb_sigv4_request r;
    for (size_t i = 0; i < t->n; i++) {
        t->h[i].name = t->names[i];
        t->h[i].name_len = strlen(t->names[i]);
        t->h[i].value = t->values[i];
        t->h[i].value_len = strlen(t->values[i]);
    }
    r.method = t->method;
    r.path = t->path;
    r.query = t->query;
    r.headers = t->h;
    r.n_headers = t->n;
    r.body = t->body;
    r.body_len = t->body_len;
    return r;
}

static void treq_free(treq *t)
{
    free(t->method);
    free(t->path);
    free(t->query);
    for (size_t i = 0; i < t->n; i++) {
        free(t->names[i]);
        free(t->values[i]);
    }
    free(t->names);
    free(t->values);
    free(t->body);
    memset(t, 0, sizeof(*t));
}

/* A raw HTTP/1.1 request as the test suite writes it: LF line ends, the request target may hold
 * spaces (method = up to the first space, version = after the last), header lines "Name:value",
 * continuation lines (obs-fold, RFC 7230 3.2.4) replaced by one space, body after a blank line. */
static void treq_parse(treq *t, const char *s, size_t len)
{
    const char *end = s + len, *eol, *sp1, *sp2, *q;

    memset(t, 0, sizeof(*t));
    treq_reserve(t);
    eol = memchr(s, '\n', len);
    assert_non_null(eol);
    sp1 = memchr(s, ' ', (size_t)(eol - s));
    assert_non_null(sp1);
    for (sp2 = eol - 1; sp2 > sp1 && *sp2 != ' '; sp2--)
        ;
    assert_true(sp2 > sp1);
    t->method = dup_n(s, (size_t)(sp1 - s));
    q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
    if (q) {
        t->path = dup_n(sp1 + 1, (size_t)(q - sp1 - 1));
        t->query = dup_n(q + 1, (size_t)(sp2 - q - 1));
    } else {
        t->path = dup_n(sp1 + 1, (size_t)(sp2 - sp1 - 1));
        t->query = dup_n("", 0);
    }
    s = eol + 1;
    while (s < end) {
        const char *line = s, *colon;
        size_t ll;
        eol = memchr(s, '\n', (size_t)(end - s));
        ll = eol ? (size_t)(eol - s) : (size_t)(end - s);
        s = eol ? eol + 1 : end;
        if (ll == 0) { /* blank line: the body follows */
            t->body_len = (size_t)(end - s);
            t->body = (uint8_t *)dup_n(s, t->body_len);
            break;
        }
        if (line[0] == ' ' || line[0] == '\t') {
            assert_true(t->n > 0);
            char *prev = t->values[t->n - 1];
            if (prev == NULL) { /* cmocka's fail() returns */
                fail();
                return;
            }
            size_t pl = strlen(prev);
            char *nv = malloc(pl + 1 + ll + 1);
            if (nv == NULL) {
                fail();
                return;
            }
            memcpy(nv, prev, pl);
            nv[pl] = ' ';
            memcpy(nv + pl + 1, line, ll);
            nv[pl + 1 + ll] = '\0';
            free(prev);
            t->values[t->n - 1] = nv;
            continue;
        }
        colon = memchr(line, ':', ll);
        assert_non_null(colon);
        assert_true(t->n < T_MAX_HEADERS);
        t->names[t->n] = dup_n(line, (size_t)(colon - line));
        t->values[t->n] = dup_n(colon + 1, ll - (size_t)(colon - line) - 1);
        t->n++;
    }
}

/* ------------------------------------------------------------------ helpers */

static char *read_text(const char *dir, const char *file)
{
    char path[1024];
    kb_dbuf b;
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    kb_dbuf_init(&b, 1 << 20);
    assert_ok(kb_file_read(path, b.max, &b));
    if (b.len == 0)
        assert_ok(kb_dbuf_addstr(&b, ""));
    return kb_dbuf_steal(&b, NULL);
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
    uint8_t md[32];
    SHA256(p, n, md);
    kb_hex(md, 32, out);
}

typedef struct {
    const char *akid;
    const kb_secret *secret;
    int calls;
    kb_err fail_with; /* returned instead when not KB_OK */
} lookup_ctx;

static kb_err test_lookup(void *arg, const char *akid, const kb_secret **secret, void **user)
{
    lookup_ctx *c = arg;
    c->calls++;
    if (c->fail_with != KB_OK)
        return c->fail_with;
    if (strcmp(akid, c->akid) != 0)
        return KB_ERR_NOT_FOUND;
    *secret = c->secret;
    *user = (void *)c;
    return KB_OK;
}

/* Value of "Name=" inside an Authorization value, up to ',' or end. */
static char *auth_field(const char *auth, const char *name)
{
    const char *p = strstr(auth, name);
    size_t n;
    assert_non_null(p);
    p += strlen(name);
    n = strcspn(p, ",");
    return dup_n(p, n);
}

/* ------------------------------------------------------------------ the AWS test suite */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_case(const char *dir, int *verified)
{
    char *reqtxt = read_text(dir, "request.txt");
    char *ctxtxt = read_text(dir, "context.json");
    char *want_cr = read_text(dir, "header-canonical-request.txt");
    char *want_sts = read_text(dir, "header-string-to-sign.txt");
    char *want_sig = read_text(dir, "header-signature.txt");
    char *signed_req = read_text(dir, "header-signed-request.txt");
    json_t *ctx = NULL, *creds;
    const char *akid, *sk, *token = NULL, *ts, *region, *service;
    int normalize, sign_body, omit_token = 0;
    char amz_date[17], tsbuf[17], scope[128], body_hash[65];
    time_t now;
    kb_secret *secret = NULL;
    treq t;
    kb_sigv4_request r;
    kb_sigv4_params p;
    kb_dbuf auth, cr, sts;
    char *sig, *sh, *want_auth;
    const char *names[T_MAX_HEADERS + 4];
    size_t nn = 0;

    assert_ok(kb_json_parse(ctxtxt, strlen(ctxtxt), 1 << 16, &ctx, NULL, 0));
    creds = json_object_get(ctx, "credentials");
    assert_non_null(creds);
    akid = json_string_value(json_object_get(creds, "access_key_id"));
    sk = json_string_value(json_object_get(creds, "secret_access_key"));
    if (json_object_get(creds, "token"))
        token = json_string_value(json_object_get(creds, "token"));
    region = json_string_value(json_object_get(ctx, "region"));
    service = json_string_value(json_object_get(ctx, "service"));
    ts = json_string_value(json_object_get(ctx, "timestamp"));
    normalize = json_is_true(json_object_get(ctx, "normalize"));
    sign_body = json_is_true(json_object_get(ctx, "sign_body"));
    if (json_object_get(ctx, "omit_session_token"))
        omit_token = json_is_true(json_object_get(ctx, "omit_session_token"));
    assert_true(akid && sk && region && service && ts);
    /* "2015-08-30T12:36:00Z" -> "20150830T123600Z" */
    assert_int_equal(strlen(ts), 20);
    snprintf(tsbuf, sizeof(tsbuf), "%.4s%.2s%.2sT%.2s%.2s%.2sZ", ts, ts + 5, ts + 8, ts + 11,
             ts + 14, ts + 17);
    assert_ok(kb_sigv4_parse_date(tsbuf, 16, &now));
    assert_ok(kb_secret_from(sk, strlen(sk), &secret));

    treq_parse(&t, reqtxt, strlen(reqtxt));
    /* sign_body: the signer adds X-Amz-Content-Sha256 (an S3-style header) before signing. */
    if (sign_body) {
        sha256_hex(t.body, t.body_len, body_hash);
        treq_add(&t, "X-Amz-Content-Sha256", body_hash);
    }
    r = treq_view(&t);
    p = (kb_sigv4_params){akid, secret,   (token && !omit_token) ? token : NULL, region, service,
                          now,  normalize};
    kb_dbuf_init(&auth, 8192);
    assert_ok(kb_sigv4_sign(&r, &p, &auth, amz_date));
    assert_string_equal(amz_date, tsbuf);

    /* Signature and the whole Authorization line, byte for byte. */
    sig = auth_field(kb_dbuf_str(&auth), "Signature=");
    assert_string_equal(sig, want_sig);
    want_auth = strstr(signed_req, "\nAuthorization:");
    assert_non_null(want_auth);
    want_auth += strlen("\nAuthorization:");
    want_auth[strcspn(want_auth, "\n")] = '\0';
    assert_string_equal(kb_dbuf_str(&auth), want_auth);

    /* Canonical request and string to sign over the request as sent (with X-Amz-Date and a
     * signed token), with the SignedHeaders the signer chose. */
    treq_add(&t, "X-Amz-Date", amz_date);
    if (token && !omit_token)
        treq_add(&t, "X-Amz-Security-Token", token);
    sh = auth_field(kb_dbuf_str(&auth), "SignedHeaders=");
    for (char *c = sh; c && *c;) {
        names[nn++] = c;
        c = strchr(c, ';');
        if (c)
            *c++ = '\0';
    }
    r = treq_view(&t);
    kb_dbuf_init(&cr, KB_SIGV4_MAX_CANONICAL);
    assert_ok(kb_sigv4_canonical_request(&r, names, nn, normalize, NULL, &cr));
    assert_string_equal(kb_dbuf_str(&cr), want_cr);
    snprintf(scope, sizeof(scope), "%.8s/%s/%s/aws4_request", amz_date, region, service);
    kb_dbuf_init(&sts, 4096);
    assert_ok(kb_sigv4_string_to_sign(amz_date, scope, kb_dbuf_str(&cr), cr.len, &sts));
    assert_string_equal(kb_dbuf_str(&sts), want_sts);

    /* The verifier accepts the signed request (it always normalizes the path, so only for the
     * normalized cases); the token added after signing (post-sts-header-after) stays unsigned. */
    if (token && omit_token)
        treq_add(&t, "X-Amz-Security-Token", token);
    treq_add(&t, "Authorization", kb_dbuf_str(&auth));
    if (normalize) {
        lookup_ctx lc = {akid, secret, 0, KB_OK};
        kb_sigv4_verify_opts o = {test_lookup, &lc, service, NULL, 0, now, 900, NULL};
        kb_sigv4_key_cache *kc = NULL;
        char reg[64];
        void *user = NULL;
        const char *why = NULL;
        uint64_t hits = 0, misses = 0;
        r = treq_view(&t);
        assert_ok(kb_sigv4_verify(&r, &o, reg, &user, &why));
        assert_string_equal(reg, region);
        assert_ptr_equal(user, &lc);
        assert_null(why);
        /* The same through a signing-key cache: derived on the first, reused on the second. */
        assert_ok(kb_sigv4_key_cache_new(4, &kc));
        o.key_cache = kc;
        assert_ok(kb_sigv4_verify(&r, &o, reg, &user, &why));
        assert_ok(kb_sigv4_verify(&r, &o, reg, &user, &why));
        kb_sigv4_key_cache_stats(kc, &hits, &misses);
        assert_int_equal(hits, 1);
        assert_int_equal(misses, 1);
        kb_sigv4_key_cache_free(kc);
        (*verified)++;
    }

    kb_dbuf_free(&auth);
    kb_dbuf_free(&cr);
    kb_dbuf_free(&sts);
    free(sig);
    free(sh);
    treq_free(&t);
    kb_secret_free(secret);
    json_decref(ctx);
    free(reqtxt);
    free(ctxtxt);
    free(want_cr);
    free(want_sts);
    free(want_sig);
    free(signed_req);
}

static void aws_test_suite_every_case(void **state)
{
    (void)state;
    char root[1024], dir[2048];
    char *names[256];
    size_t n = 0, ran = 0;
    int verified = 0;
    DIR *d;
    struct dirent *e;

    snprintf(root, sizeof(root), "%s/sigv4-test-suite", kbtest_testdata());
    d = opendir(root);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char probe[2048];
        if (e->d_name[0] == '.')
            continue;
        snprintf(probe, sizeof(probe), "%s/%s", root, e->d_name);
        DIR *sub = opendir(probe);
        if (sub == NULL)
            continue; /* README.md */
        closedir(sub);
        assert_true(n < 256);
        names[n++] = dup_n(e->d_name, strlen(e->d_name));
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str);
    assert_true(n >= 38); /* the suite as checked in: nothing silently missing */
    for (size_t i = 0; i < n; i++) {
        snprintf(dir, sizeof(dir), "%s/%s", root, names[i]);
        print_message("sigv4 case %s\n", names[i]);
        run_case(dir, &verified);
        ran++;
        free(names[i]);
    }
    assert_int_equal(ran, n);
    assert_true(verified > 0);
    assert_int_equal(kb_secret_live_count(), 0);
}

/* ------------------------------------------------------------------ primitives */

static void signing_key_known_answer(void **state)
{
    (void)state;
    /* AWS documentation example: secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY,
     * 20150830/us-east-1/iam. */
    static const char sk[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    kb_secret *s;
    uint8_t key[32];
    char hex[65];
    assert_ok(kb_secret_from(sk, strlen(sk), &s));
    assert_ok(kb_sigv4_signing_key(s, "20150830", "us-east-1", "iam", key));
    kb_hex(key, 32, hex);
    assert_string_equal(hex, "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
    assert_kb(kb_sigv4_signing_key(NULL, "20150830", "us-east-1", "iam", key), KB_ERR_NULL);
    kb_secret_free(s);
}

/* The signing key equals the HMAC() chain of the SigV4 specification for secrets of every
 * length around SHA-256's 64-byte block ("AWS4" + secret longer than 64 bytes is hashed first)
 * and past the stack buffer. */
static void signing_key_matches_hmac(void **state)
{
    static const size_t lens[] = {0, 1, 40, 59, 60, 61, 62, 100, 200, 300};
    (void)state;
    for (size_t i = 0; i < KB_ARRAY_LEN(lens); i++) {
        char sk[305];
        uint8_t k0[310], a[32], b[32], got[32];
        unsigned int n = 0;
        kb_secret *s;
        for (size_t j = 0; j < lens[i]; j++)
            sk[j] = (char)('A' + (i + j) % 26);
        memcpy(k0, "AWS4", 4);
        memcpy(k0 + 4, sk, lens[i]);
        assert_non_null(
            HMAC(EVP_sha256(), k0, (int)(4 + lens[i]), (const uint8_t *)"20150830", 8, a, &n));
        assert_non_null(HMAC(EVP_sha256(), a, 32, (const uint8_t *)"eu-west-3", 9, b, &n));
        assert_non_null(HMAC(EVP_sha256(), b, 32, (const uint8_t *)"secretsmanager", 14, a, &n));
        assert_non_null(HMAC(EVP_sha256(), a, 32, (const uint8_t *)"aws4_request", 12, b, &n));
        assert_ok(kb_secret_from(lens[i] ? sk : "", lens[i], &s));
        assert_ok(kb_sigv4_signing_key(s, "20150830", "eu-west-3", "secretsmanager", got));
        assert_memory_equal(got, b, 32);
        kb_secret_free(s);
    }
}

static void dates_parse_strictly(void **state)
{
    (void)state;
    time_t t;
    char back[17];
    assert_ok(kb_sigv4_parse_date("20150830T123600Z", 16, &t));
    assert_int_equal(t, 1440938160);
    assert_ok(kb_sigv4_format_date(t, back));
    assert_string_equal(back, "20150830T123600Z");
    assert_kb(kb_sigv4_parse_date("20150230T123600Z", 16, &t), KB_ERR_INVALID); /* Feb 30 */
    assert_kb(kb_sigv4_parse_date("20150830T253600Z", 16, &t), KB_ERR_INVALID);
    assert_kb(kb_sigv4_parse_date("20150830 123600Z", 16, &t), KB_ERR_INVALID);
    assert_kb(kb_sigv4_parse_date("20150830T123600", 15, &t), KB_ERR_INVALID);
    assert_kb(kb_sigv4_parse_date("20150830T123600ZZ", 17, &t), KB_ERR_INVALID);
    assert_kb(kb_sigv4_parse_date("2015083OT123600Z", 16, &t), KB_ERR_INVALID);
    assert_kb(kb_sigv4_parse_date("+0150830T123600Z", 16, &t), KB_ERR_INVALID);
}

static void canonical_request_rejects_bad_input(void **state)
{
    (void)state;
    kb_sigv4_header h[] = {{"Host", 4, "example.com", 11}, {"X-A", 3, "1", 1}};
    kb_sigv4_request r = {"GET", "/", "", h, 2, NULL, 0};
    const char *ok[] = {"host", "x-a"};
    const char *unsorted[] = {"x-a", "host"};
    const char *upper[] = {"Host"};
    const char *dup[] = {"host", "host"};
    const char *absent[] = {"host", "x-b"};
    kb_dbuf b;

    kb_dbuf_init(&b, 4096);
    assert_ok(kb_sigv4_canonical_request(&r, ok, 2, 1, NULL, &b));
    kb_dbuf_reset(&b);
    assert_kb(kb_sigv4_canonical_request(&r, unsorted, 2, 1, NULL, &b), KB_ERR_INVALID);
    assert_kb(kb_sigv4_canonical_request(&r, upper, 1, 1, NULL, &b), KB_ERR_INVALID);
    assert_kb(kb_sigv4_canonical_request(&r, dup, 2, 1, NULL, &b), KB_ERR_INVALID);
    assert_kb(kb_sigv4_canonical_request(&r, absent, 2, 1, NULL, &b), KB_ERR_INVALID);
    assert_kb(kb_sigv4_canonical_request(&r, ok, 0, 1, NULL, &b), KB_ERR_INVALID);
    r.query = "a=%zz";
    assert_kb(kb_sigv4_canonical_request(&r, ok, 2, 1, NULL, &b), KB_ERR_INVALID);
    r.query = "a=%4";
    assert_kb(kb_sigv4_canonical_request(&r, ok, 2, 1, NULL, &b), KB_ERR_INVALID);
    r.query = "";
    r.path = "relative";
    assert_kb(kb_sigv4_canonical_request(&r, ok, 2, 1, NULL, &b), KB_ERR_INVALID);
    r.path = "/";
    h[1].name = "X A";
    assert_kb(kb_sigv4_canonical_request(&r, ok, 2, 1, NULL, &b), KB_ERR_INVALID);
    h[1].name = "X-A";
    r.n_headers = KB_SIGV4_MAX_HEADERS + 1;
    assert_kb(kb_sigv4_canonical_request(&r, ok, 2, 1, NULL, &b), KB_ERR_TOO_LARGE);
    r.n_headers = 2;
    /* A canonical request past the output buffer's limit. */
    kb_dbuf_free(&b);
    kb_dbuf_init(&b, 16);
    assert_kb(kb_sigv4_canonical_request(&r, ok, 2, 1, NULL, &b), KB_ERR_TOO_LARGE);
    kb_dbuf_free(&b);
}

static void canonical_query_and_path_details(void **state)
{
    (void)state;
    kb_sigv4_header h[] = {{"Host", 4, "h", 1}};
    const char *names[] = {"host"};
    kb_sigv4_request r = {"GET", "/a%20b/./c/../d/", "b=2&a=2&a=1&&c&%7e=x+y", h, 1, NULL, 0};
    kb_dbuf b;
    kb_dbuf_init(&b, 4096);
    assert_ok(kb_sigv4_canonical_request(&r, names, 1, 1, "UNSIGNED-PAYLOAD", &b));
    /* The path as sent is encoded again (AWS "double encoding" for non-S3 services); query
     * components are decoded and re-encoded, sorted by key then value, empty ones dropped. */
    assert_string_equal(kb_dbuf_str(&b), "GET\n/a%2520b/d/\na=1&a=2&b=2&c=&~=x%2By\n"
                                         "host:h\n\nhost\nUNSIGNED-PAYLOAD");
    kb_dbuf_free(&b);
}

/* ------------------------------------------------------------------ verification */

static const char *k_akid = "AKIDKEYBRIDGE01";
static const char *k_secret = "s3cr3t/KEYBRIDGE+test/0123456789abcdefgh";
static const time_t k_now = 1700000000; /* 2023-11-14T22:13:20Z */
static const char *k_required[] = {"content-type", "host", "x-amz-date", "x-amz-target"};

typedef struct {
    treq t;
    kb_secret *secret;
    lookup_ctx lc;
    kb_sigv4_verify_opts o;
    char region[64];
    void *user;
    const char *why;
} vfix;

static const char k_body[] = "{\"SecretId\":\"keybridge/app/db\"}";

/* A signed Secrets Manager request: headers given, X-Amz-Date and Authorization appended. */
static void vfix_sign(vfix *f, int with_target, time_t when)
{
    kb_sigv4_request r;
    kb_sigv4_params p;
    kb_dbuf auth;
    char date[17];

    memset(&f->t, 0, sizeof(f->t));
    f->t.method = dup_n("POST", 4);
    f->t.path = dup_n("/", 1);
    f->t.query = dup_n("", 0);
    f->t.body_len = strlen(k_body);
    f->t.body = (uint8_t *)dup_n(k_body, f->t.body_len);
    treq_add(&f->t, "Host", "127.0.0.1:8443");
    treq_add(&f->t, "Content-Type", "application/x-amz-json-1.1");
    if (with_target)
        treq_add(&f->t, "X-Amz-Target", "secretsmanager.GetSecretValue");
    treq_add(&f->t, "X-Keybridge-Dup", "first");
    treq_add(&f->t, "X-Keybridge-Dup", "second");
    r = treq_view(&f->t);
    p = (kb_sigv4_params){k_akid, f->secret, NULL, "eu-west-1", "secretsmanager", when, 1};
    kb_dbuf_init(&auth, 8192);
    assert_ok(kb_sigv4_sign(&r, &p, &auth, date));
    treq_add(&f->t, "X-Amz-Date", date);
    treq_add(&f->t, "Authorization", kb_dbuf_str(&auth));
    kb_dbuf_free(&auth);
}

static int vfix_setup(void **state)
{
    vfix *f = calloc(1, sizeof(*f));
    if (f == NULL || kb_secret_from(k_secret, strlen(k_secret), &f->secret) != KB_OK)
        return -1;
    f->lc = (lookup_ctx){k_akid, f->secret, 0, KB_OK};
    f->o = (kb_sigv4_verify_opts){
        test_lookup, &f->lc, "secretsmanager", k_required, KB_ARRAY_LEN(k_required), k_now,
        900,         NULL};
    vfix_sign(f, 1, k_now);
    *state = f;
    return 0;
}

static int vfix_teardown(void **state)
{
    vfix *f = *state;
    treq_free(&f->t);
    kb_secret_free(f->secret);
    free(f);
    return kb_secret_live_count() == 0 ? 0 : -1;
}

static kb_err vfix_verify(vfix *f)
{
    kb_sigv4_request r = treq_view(&f->t);
    f->user = NULL;
    f->why = NULL;
    f->region[0] = '\0';
    return kb_sigv4_verify(&r, &f->o, f->region, &f->user, &f->why);
}

static char **vfix_value(vfix *f, const char *name)
{
    for (size_t i = 0; i < f->t.n; i++)
        if (strcasecmp(f->t.names[i], name) == 0)
            return &f->t.values[i];
    fail_msg("no header %s", name);
    return NULL;
}

static void vfix_set(vfix *f, const char *name, const char *value)
{
    char **v = vfix_value(f, name);
    free(*v);
    *v = dup_n(value, strlen(value));
}

/* Replace the Authorization value by a template of its parts: $C credential, $H signed
 * headers, $S signature, $s the signature's first 63 characters. */
static void vfix_set_auth(vfix *f, const char *tmpl)
{
    char *auth = *vfix_value(f, "Authorization");
    char *sig = auth_field(auth, "Signature=");
    char *sh = auth_field(auth, "SignedHeaders=");
    char *cred = auth_field(auth, "Credential=");
    kb_dbuf b;

    kb_dbuf_init(&b, 8192);
    for (const char *c = tmpl; *c; c++) {
        if (c[0] == '$' && c[1] != '\0') {
            c++;
            if (*c == 'C')
                assert_ok(kb_dbuf_addstr(&b, cred));
            else if (*c == 'H')
                assert_ok(kb_dbuf_addstr(&b, sh));
            else if (*c == 'S')
                assert_ok(kb_dbuf_addstr(&b, sig));
            else if (*c == 's')
                assert_ok(kb_dbuf_add(&b, sig, 63));
            else
                fail_msg("bad template %s", tmpl);
            continue;
        }
        assert_ok(kb_dbuf_addc(&b, *c));
    }
    vfix_set(f, "Authorization", kb_dbuf_str(&b));
    kb_dbuf_free(&b);
    free(sig);
    free(sh);
    free(cred);
}

static void verify_round_trip(void **state)
{
    vfix *f = *state;
    assert_ok(vfix_verify(f));
    assert_string_equal(f->region, "eu-west-1");
    assert_ptr_equal(f->user, &f->lc);
    assert_null(f->why);
    assert_int_equal(f->lc.calls, 1);
    /* Header names are case-insensitive, and ',' without a space between parts is accepted. */
    vfix_set_auth(f, "AWS4-HMAC-SHA256 Credential=$C,SignedHeaders=$H,Signature=$S");
    assert_ok(vfix_verify(f));
    vfix_set_auth(f, "AWS4-HMAC-SHA256 Signature=$S, Credential=$C, SignedHeaders=$H");
    assert_ok(vfix_verify(f));
    /* At the skew limit, on both sides. */
    f->o.now = k_now + 900;
    assert_ok(vfix_verify(f));
    f->o.now = k_now - 900;
    assert_ok(vfix_verify(f));
    /* No service requirement, no required list. */
    f->o.now = k_now;
    f->o.service = NULL;
    f->o.n_required = 0;
    assert_ok(vfix_verify(f));
}

static void verify_rejects_bad_signature(void **state)
{
    vfix *f = *state;
    char **auth = vfix_value(f, "Authorization");
    size_t n = strlen(*auth);
    /* flip the last signature character */
    (*auth)[n - 1] = (*auth)[n - 1] == '0' ? '1' : '0';
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    assert_non_null(f->why);
    assert_null(f->user);
}

static void verify_rejects_wrong_secret(void **state)
{
    vfix *f = *state;
    kb_secret *other;
    assert_ok(kb_secret_from("another-secret", 14, &other));
    f->lc.secret = other;
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    kb_secret_free(other);
}

static void verify_rejects_unknown_key(void **state)
{
    vfix *f = *state;
    f->lc.akid = "AKIDSOMEONEELSE";
    assert_kb(vfix_verify(f), KB_ERR_NOT_FOUND);
    assert_non_null(f->why);
    /* other lookup failures propagate */
    f->lc.fail_with = KB_ERR_DB;
    assert_kb(vfix_verify(f), KB_ERR_DB);
}

static void verify_requires_signed_headers(void **state)
{
    vfix *f = *state;
    /* Signed without X-Amz-Target; the header is added after signing. */
    treq_free(&f->t);
    vfix_sign(f, 0, k_now);
    treq_add(&f->t, "X-Amz-Target", "secretsmanager.DeleteSecret");
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    /* Without the requirement the (honestly signed) rest verifies. */
    f->o.n_required = 2;
    assert_ok(vfix_verify(f));
    /* host and x-amz-date are always required. */
    vfix_set_auth(f, "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=content-type;x-amz-date;"
                     "x-keybridge-dup, Signature=$S");
    f->o.n_required = 0;
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
}

static void verify_rejects_stale_and_future_dates(void **state)
{
    vfix *f = *state;
    f->o.now = k_now + 16 * 60;
    assert_kb(vfix_verify(f), KB_ERR_TIMEOUT);
    f->o.now = k_now + 901;
    assert_kb(vfix_verify(f), KB_ERR_TIMEOUT);
    f->o.now = k_now - 16 * 60;
    assert_kb(vfix_verify(f), KB_ERR_TIMEOUT);
    assert_int_equal(f->lc.calls, 0); /* refused before any key lookup */
    /* Signed 16 minutes in the future. */
    f->o.now = k_now;
    treq_free(&f->t);
    vfix_sign(f, 1, k_now + 16 * 60);
    assert_kb(vfix_verify(f), KB_ERR_TIMEOUT);
    /* Bad or missing dates are malformed, not stale. */
    vfix_set(f, "X-Amz-Date", "2023-11-14T22:13:20Z");
    assert_kb(vfix_verify(f), KB_ERR_INVALID);
    vfix_set(f, "X-Amz-Date", "");
    assert_kb(vfix_verify(f), KB_ERR_INVALID);
    treq_add(&f->t, "x-amz-date", "20231114T221320Z");
    assert_kb(vfix_verify(f), KB_ERR_INVALID); /* twice */
}

static void verify_rejects_credential_date_mismatch(void **state)
{
    vfix *f = *state;
    /* 2023-11-14 in X-Amz-Date, the day before in the scope. */
    vfix_set_auth(f, "AWS4-HMAC-SHA256 Credential=AKIDKEYBRIDGE01/20231113/eu-west-1/"
                     "secretsmanager/aws4_request, SignedHeaders=$H, Signature=$S");
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    assert_int_equal(f->lc.calls, 0);
}

static void verify_rejects_wrong_service(void **state)
{
    vfix *f = *state;
    f->o.service = "kms";
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    /* A scope naming another service, with the signature recomputed by the client for it,
     * is still refused by a cache that only serves secretsmanager. */
    f->o.service = "secretsmanager";
    vfix_set_auth(f, "AWS4-HMAC-SHA256 Credential=AKIDKEYBRIDGE01/20231114/eu-west-1/"
                     "kms/aws4_request, SignedHeaders=$H, Signature=$S");
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    /* The region is bound into the signature. */
    vfix_set_auth(f, "AWS4-HMAC-SHA256 Credential=AKIDKEYBRIDGE01/20231114/us-east-1/"
                     "secretsmanager/aws4_request, SignedHeaders=$H, Signature=$S");
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
}

static void verify_rejects_malformed_authorization(void **state)
{
    vfix *f = *state;
    static const char *bad[] = {
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H",
        "AWS4-HMAC-SHA256 Credential=$C, Signature=$S",
        "AWS4-HMAC-SHA256 SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=$C, Credential=$C, SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H, Signature=$S, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H, SignedHeaders=$H, "
        "Signature=$S",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H, Signature=$S, Extra=1",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H, Signature=$S,",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H, Signature=$s",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H, Signature=$S0",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H, Signature=g$s",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H, Signature=",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H, Signature",
        "AWS4-HMAC-SHA1 Credential=$C, SignedHeaders=$H, Signature=$S",
        "aws4-hmac-sha256 Credential=$C, SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 ",
        "",
        "AWS4-HMAC-SHA256 credential=$C, SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=AKIDKEYBRIDGE01/20231114/eu-west-1/secretsmanager, "
        "SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=AKIDKEYBRIDGE01/20231114/eu-west-1/secretsmanager/"
        "aws4_request/x, SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=AKIDKEYBRIDGE01/20231114/eu-west-1/secretsmanager/"
        "aws5_request, SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=AKID KEY/20231114/eu-west-1/secretsmanager/"
        "aws4_request, SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=/20231114/eu-west-1/secretsmanager/"
        "aws4_request, SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=AKIDKEYBRIDGE01/2023111/eu-west-1/secretsmanager/"
        "aws4_request, SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=AKIDKEYBRIDGE01/20231114/EU-WEST-1/secretsmanager/"
        "aws4_request, SignedHeaders=$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H;, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=Host;$H, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=x-amz-date;host, Signature=$S",
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=host;host;x-amz-date, Signature=$S",
        /* signed but absent from the request */
        "AWS4-HMAC-SHA256 Credential=$C, SignedHeaders=$H;zz-absent, Signature=$S",
    };
    char big[KB_SIGV4_MAX_AUTH_LEN + 64];
    char *orig = dup_n(*vfix_value(f, "Authorization"), strlen(*vfix_value(f, "Authorization")));

    for (size_t i = 0; i < KB_ARRAY_LEN(bad); i++) {
        vfix_set(f, "Authorization", orig);
        vfix_set_auth(f, bad[i]);
        kb_err e = vfix_verify(f);
        if (e != KB_ERR_INVALID)
            fail_msg("case %zu (%s): got %s", i, bad[i], kb_err_str(e));
        assert_non_null(f->why);
    }
    /* The uppercase-hex form of the right signature is not accepted either. */
    {
        char **auth;
        vfix_set(f, "Authorization", orig);
        assert_ok(vfix_verify(f));
        auth = vfix_value(f, "Authorization");
        for (char *c = strstr(*auth, "Signature=") + 10; *c; c++)
            if (*c >= 'a' && *c <= 'f')
                *c = (char)(*c - 'a' + 'A');
        assert_kb(vfix_verify(f), KB_ERR_INVALID);
    }
    /* Oversized: just over the limit. */
    memset(big, 0, sizeof(big));
    snprintf(big, sizeof(big),
             "AWS4-HMAC-SHA256 Credential=%s/20231114/eu-west-1/secretsmanager/"
             "aws4_request, SignedHeaders=host;x-amz-date, Signature=",
             k_akid);
    while (strlen(big) < KB_SIGV4_MAX_AUTH_LEN + 1)
        big[strlen(big)] = 'a';
    vfix_set(f, "Authorization", big);
    assert_kb(vfix_verify(f), KB_ERR_INVALID);
    /* Missing and repeated Authorization. */
    vfix_set(f, "Authorization", "AWS4-HMAC-SHA256 Credential=x");
    treq_add(&f->t, "authorization", "AWS4-HMAC-SHA256 Credential=x");
    assert_kb(vfix_verify(f), KB_ERR_INVALID);
    f->t.n -= 2; /* drop both (the last two headers); owned strings freed below */
    free(f->t.names[f->t.n]);
    free(f->t.values[f->t.n]);
    free(f->t.names[f->t.n + 1]);
    free(f->t.values[f->t.n + 1]);
    assert_kb(vfix_verify(f), KB_ERR_INVALID);
    free(orig);
}

static void verify_detects_tampering(void **state)
{
    vfix *f = *state;
    /* body */
    f->t.body[f->t.body_len - 3] ^= 1;
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    f->t.body[f->t.body_len - 3] ^= 1;
    assert_ok(vfix_verify(f));
    /* truncated body */
    f->t.body_len--;
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    f->t.body_len++;
    /* query */
    free(f->t.query);
    f->t.query = dup_n("Action=x", 8);
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    free(f->t.query);
    f->t.query = dup_n("", 0);
    /* path */
    free(f->t.path);
    f->t.path = dup_n("/x", 2);
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    free(f->t.path);
    f->t.path = dup_n("/", 1);
    /* method */
    free(f->t.method);
    f->t.method = dup_n("PUT", 3);
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    free(f->t.method);
    f->t.method = dup_n("POST", 4);
    assert_ok(vfix_verify(f));
    /* the second of a duplicated header */
    for (size_t i = 0, seen = 0; i < f->t.n; i++) {
        if (strcmp(f->t.names[i], "X-Keybridge-Dup") == 0 && ++seen == 2) {
            free(f->t.values[i]);
            f->t.values[i] = dup_n("secomd", 6);
        }
    }
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
}

static void verify_checks_payload_hash_header(void **state)
{
    vfix *f = *state;
    char h[65];
    /* UNSIGNED-PAYLOAD (or another body's hash) must not detach the body from the signature. */
    treq_add(&f->t, "X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD");
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    sha256_hex("{}", 2, h);
    vfix_set(f, "X-Amz-Content-Sha256", h);
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    /* The right hash, unsigned: fine (the body is hashed either way). */
    sha256_hex(k_body, strlen(k_body), h);
    vfix_set(f, "X-Amz-Content-Sha256", h);
    assert_ok(vfix_verify(f));
    treq_add(&f->t, "X-Amz-Content-Sha256", h);
    assert_kb(vfix_verify(f), KB_ERR_INVALID);
}

static void sign_rejects_bad_input(void **state)
{
    (void)state;
    kb_secret *s;
    kb_sigv4_header h[] = {{"Host", 4, "h", 1}, {"X-Amz-Date", 10, "20150830T123600Z", 16}};
    kb_sigv4_request r = {"POST", "/", "", h, 1, NULL, 0};
    kb_sigv4_params p;
    kb_dbuf auth;
    char date[17];

    assert_ok(kb_secret_from("k", 1, &s));
    kb_dbuf_init(&auth, 8192);
    p = (kb_sigv4_params){"AKID", s, NULL, "us-east-1", "secretsmanager", k_now, 1};
    assert_ok(kb_sigv4_sign(&r, &p, &auth, date));
    kb_dbuf_reset(&auth);
    r.n_headers = 2; /* the caller may not bring its own X-Amz-Date */
    assert_kb(kb_sigv4_sign(&r, &p, &auth, date), KB_ERR_INVALID);
    r.n_headers = 1;
    p.region = "us-east-1/x";
    assert_kb(kb_sigv4_sign(&r, &p, &auth, date), KB_ERR_INVALID);
    p.region = "";
    assert_kb(kb_sigv4_sign(&r, &p, &auth, date), KB_ERR_INVALID);
    p.region = "us-east-1";
    p.access_key_id = "AKID, Signature=00";
    assert_kb(kb_sigv4_sign(&r, &p, &auth, date), KB_ERR_INVALID);
    p.access_key_id = "AKID";
    p.service = NULL;
    assert_kb(kb_sigv4_sign(&r, &p, &auth, date), KB_ERR_NULL);
    p.service = "secretsmanager";
    h[0].name_len = 0;
    assert_kb(kb_sigv4_sign(&r, &p, &auth, date), KB_ERR_INVALID);
    h[0].name_len = 4;
    /* Output limit: the Authorization does not fit. */
    kb_dbuf_free(&auth);
    kb_dbuf_init(&auth, 32);
    assert_kb(kb_sigv4_sign(&r, &p, &auth, date), KB_ERR_TOO_LARGE);
    kb_dbuf_free(&auth);
    kb_secret_free(s);
    assert_int_equal(kb_secret_live_count(), 0);
}

/* ------------------------------------------------------------------ signing-key cache */

static void key_cache_stats_are(kb_sigv4_key_cache *kc, uint64_t want_hits, uint64_t want_misses)
{
    uint64_t hits = 0, misses = 0;
    kb_sigv4_key_cache_stats(kc, &hits, &misses);
    assert_int_equal(hits, want_hits);
    assert_int_equal(misses, want_misses);
}

static void key_cache_reuses_and_still_verifies(void **state)
{
    vfix *f = *state;
    kb_sigv4_key_cache *kc = NULL;
    assert_ok(kb_sigv4_key_cache_new(8, &kc));
    f->o.key_cache = kc;
    assert_ok(vfix_verify(f));
    key_cache_stats_are(kc, 0, 1);
    assert_ok(vfix_verify(f));
    assert_string_equal(f->region, "eu-west-1");
    assert_ptr_equal(f->user, &f->lc);
    key_cache_stats_are(kc, 1, 1);
    /* A cached key does not make a tampered request pass. */
    f->t.body[f->t.body_len - 3] ^= 1;
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    f->t.body[f->t.body_len - 3] ^= 1;
    key_cache_stats_are(kc, 2, 1);
    assert_ok(vfix_verify(f));
    f->o.key_cache = NULL;
    kb_sigv4_key_cache_free(kc);
}

static void key_cache_keeps_nothing_from_a_failure(void **state)
{
    vfix *f = *state;
    kb_sigv4_key_cache *kc = NULL;
    kb_secret *wrong = NULL;
    const kb_secret *right = f->lc.secret;
    assert_ok(kb_sigv4_key_cache_new(8, &kc));
    assert_ok(kb_secret_from("not the key", 11, &wrong));
    f->o.key_cache = kc;
    /* The lookup hands out the wrong key: refused twice, derived twice (nothing cached). */
    f->lc.secret = wrong;
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    key_cache_stats_are(kc, 0, 2);
    /* With the right key it verifies; then a lookup handing out another key object for the same
     * access key id does not reuse the key derived from the first. */
    f->lc.secret = right;
    assert_ok(vfix_verify(f));
    key_cache_stats_are(kc, 0, 3);
    f->lc.secret = wrong;
    assert_kb(vfix_verify(f), KB_ERR_AUTH);
    key_cache_stats_are(kc, 0, 4);
    f->lc.secret = right;
    assert_ok(vfix_verify(f));
    key_cache_stats_are(kc, 1, 4);
    f->o.key_cache = NULL;
    kb_sigv4_key_cache_free(kc);
    kb_secret_free(wrong);
}

static void key_cache_is_per_day_and_bounded(void **state)
{
    vfix *f = *state;
    kb_sigv4_key_cache *kc = NULL;
    assert_kb(kb_sigv4_key_cache_new(0, &kc), KB_ERR_INVALID);
    assert_kb(kb_sigv4_key_cache_new(KB_SIGV4_KEY_CACHE_MAX + 1, &kc), KB_ERR_INVALID);
    assert_ok(kb_sigv4_key_cache_new(1, &kc));
    f->o.key_cache = kc;
    assert_ok(vfix_verify(f));
    key_cache_stats_are(kc, 0, 1);
    /* Signed on the next day (verified then): another scope, another key, which takes the
     * only slot. */
    treq_free(&f->t);
    vfix_sign(f, 1, k_now + 86400);
    f->o.now = k_now + 86400;
    assert_ok(vfix_verify(f));
    assert_ok(vfix_verify(f));
    key_cache_stats_are(kc, 1, 2);
    treq_free(&f->t);
    vfix_sign(f, 1, k_now);
    f->o.now = k_now;
    assert_ok(vfix_verify(f));
    key_cache_stats_are(kc, 1, 3);
    f->o.key_cache = NULL;
    kb_sigv4_key_cache_free(kc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(aws_test_suite_every_case),
        cmocka_unit_test(signing_key_known_answer),
        cmocka_unit_test(signing_key_matches_hmac),
        cmocka_unit_test(dates_parse_strictly),
        cmocka_unit_test(canonical_request_rejects_bad_input),
        cmocka_unit_test(canonical_query_and_path_details),
        cmocka_unit_test(sign_rejects_bad_input),
        cmocka_unit_test_setup_teardown(verify_round_trip, vfix_setup, vfix_teardown),
        cmocka_unit_test_setup_teardown(verify_rejects_bad_signature, vfix_setup, vfix_teardown),
        cmocka_unit_test_setup_teardown(verify_rejects_wrong_secret, vfix_setup, vfix_teardown),
        cmocka_unit_test_setup_teardown(verify_rejects_unknown_key, vfix_setup, vfix_teardown),
        cmocka_unit_test_setup_teardown(verify_requires_signed_headers, vfix_setup, vfix_teardown),
        cmocka_unit_test_setup_teardown(verify_rejects_stale_and_future_dates, vfix_setup,
                                        vfix_teardown),
        cmocka_unit_test_setup_teardown(verify_rejects_credential_date_mismatch, vfix_setup,
                                        vfix_teardown),
        cmocka_unit_test_setup_teardown(verify_rejects_wrong_service, vfix_setup, vfix_teardown),
        cmocka_unit_test_setup_teardown(verify_rejects_malformed_authorization, vfix_setup,
                                        vfix_teardown),
        cmocka_unit_test_setup_teardown(verify_detects_tampering, vfix_setup, vfix_teardown),
        cmocka_unit_test_setup_teardown(key_cache_reuses_and_still_verifies, vfix_setup,
                                        vfix_teardown),
        cmocka_unit_test_setup_teardown(key_cache_keeps_nothing_from_a_failure, vfix_setup,
                                        vfix_teardown),
        cmocka_unit_test_setup_teardown(key_cache_is_per_day_and_bounded, vfix_setup,
                                        vfix_teardown),
        cmocka_unit_test_setup_teardown(verify_checks_payload_hash_header, vfix_setup,
                                        vfix_teardown),
    };
    kb_json_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
