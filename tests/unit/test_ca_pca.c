/* test_ca_pca.c - src/ca/ca_pca.c without the network: the answer parsers (good, malformed,
 * truncated, oversized, wrong types, extra members), the IssueCertificate body (every member the
 * model requires, the names and key usages in ApiPassthrough, the URI SAN limit), options,
 * the CSR, the signing algorithm per key type, the checks on a returned certificate (our key,
 * signed by the CA, X509-SVID, the requested ID, names and validity), and a call to an endpoint
 * that does not answer (a clear timeout at the deadline). The signed round trip against a
 * stand-in checked with botocore's model is tests/integration/test_ca_acmpca.py. */
#include "kbtest.h"

#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/ca_cert.h"
#include "ca/ca_pca.h"
#include "lib/json.h"
#include "lib/keystore.h"
#include "lib/secbuf.h"

#define ARN "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/abc-123"
#define CERT_ARN ARN "/certificate/0123456789abcdef"

static char *g_cert_pem; /* one real certificate, PEM */

static char *x509_pem(X509 *x)
{
    BIO *m = BIO_new(BIO_s_mem());
    char *p = NULL, *out;
    long n;
    assert_non_null(m);
    assert_int_equal(PEM_write_bio_X509(m, x), 1);
    n = BIO_get_mem_data(m, &p);
    out = strndup(p, (size_t)n);
    BIO_free(m);
    return out;
}

static int setup(void **state)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    (void)state;
    kb_json_init();
    if (k == NULL || x == NULL)
        return -1;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"t", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, k);
    if (X509_sign(x, k, EVP_sha256()) <= 0)
        return -1;
    g_cert_pem = x509_pem(x);
    X509_free(x);
    EVP_PKEY_free(k);
    return g_cert_pem ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    free(g_cert_pem);
    return 0;
}

/* JSON string escaping of a PEM (newlines) */
static char *json_str(const char *s)
{
    json_t *j = json_string(s);
    char *out = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    return out;
}

static kb_err parse_cert_s(const char *s, char **c, char **ch)
{
    return ca_pca_parse_cert(s, strlen(s), c, ch);
}

static void parse_issue_answers(void **state)
{
    char arn[CA_PCA_ARN_MAX + 1];
    static const char *const bad[] = {
        "",
        "{}",
        "[\"" CERT_ARN "\"]",
        "{\"CertificateArn\": 5}",
        "{\"CertificateArn\": \"not-an-arn\"}",
        "{\"CertificateArn\": \"arn:aws:acm-pca:us-east-1:1:x y\"}",
        "{\"CertificateArn\": \"" CERT_ARN "\", \"Other\": 1}",
        "{\"CertificateArn\": \"" CERT_ARN "\", \"CertificateArn\": \"" CERT_ARN "\"}",
        "{\"CertificateArn\": \"" CERT_ARN "\"} trailing",
        "{\"CertificateArn\": \"" CERT_ARN,
    };
    (void)state;
    assert_ok(ca_pca_parse_issue("{\"CertificateArn\":\"" CERT_ARN "\"}",
                                 strlen("{\"CertificateArn\":\"" CERT_ARN "\"}"), arn));
    assert_string_equal(arn, CERT_ARN);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        arn[0] = 'x';
        assert_true(ca_pca_parse_issue(bad[i], strlen(bad[i]), arn) != KB_OK);
        assert_int_equal(arn[0], '\0');
    }
    /* an ARN over botocore's 200 characters */
    {
        char buf[512];
        char longarn[260];
        memset(longarn, 'a', sizeof(longarn) - 1);
        longarn[sizeof(longarn) - 1] = '\0';
        memcpy(longarn, "arn:aws:acm-pca:r:1:", 20);
        snprintf(buf, sizeof(buf), "{\"CertificateArn\":\"%s\"}", longarn);
        assert_kb(ca_pca_parse_issue(buf, strlen(buf), arn), KB_ERR_INVALID);
    }
}

static void parse_cert_answers(void **state)
{
    char *c = NULL, *ch = NULL, buf[16384];
    char *js = json_str(g_cert_pem);
    char two[8192];
    char *js2;
    (void)state;
    snprintf(buf, sizeof(buf), "{\"Certificate\":%s,\"CertificateChain\":%s}", js, js);
    assert_ok(parse_cert_s(buf, &c, &ch));
    assert_string_equal(c, g_cert_pem);
    assert_string_equal(ch, g_cert_pem);
    free(c);
    free(ch);
    /* no chain */
    snprintf(buf, sizeof(buf), "{\"Certificate\":%s}", js);
    assert_ok(parse_cert_s(buf, &c, &ch));
    assert_null(ch);
    free(c);
    /* a chain of two */
    snprintf(two, sizeof(two), "%s\n%s", g_cert_pem, g_cert_pem);
    js2 = json_str(two);
    snprintf(buf, sizeof(buf), "{\"Certificate\":%s,\"CertificateChain\":%s}", js, js2);
    assert_ok(parse_cert_s(buf, &c, &ch));
    free(c);
    free(ch);
    /* refused: two certificates as the certificate, text around them, not PEM, wrong types,
     * extra members, a key block, truncation */
    snprintf(buf, sizeof(buf), "{\"Certificate\":%s}", js2);
    assert_kb(parse_cert_s(buf, &c, &ch), KB_ERR_INVALID);
    assert_null(c);
    assert_null(ch);
    {
        static const char *const bad[] = {
            "{\"Certificate\":\"hello\"}",
            "{\"Certificate\":\"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END "
            "CERTIFICATE-----\\n\"}",
            "{\"Certificate\":5}",
            "{\"Certificate\":null}",
            "{\"CertificateChain\":\"x\"}",
            "{\"Certificate\":[]}",
            "{}",
            "{\"Certificate\":\"-----BEGIN CERTIFICATE-----",
            "not json",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            assert_true(parse_cert_s(bad[i], &c, &ch) != KB_OK);
    }
    snprintf(buf, sizeof(buf), "{\"Certificate\":%s,\"Extra\":1}", js);
    assert_kb(parse_cert_s(buf, &c, &ch), KB_ERR_INVALID);
    snprintf(buf, sizeof(buf), "{\"Certificate\":%s,\"CertificateChain\":7}", js);
    assert_kb(parse_cert_s(buf, &c, &ch), KB_ERR_INVALID);
    snprintf(two, sizeof(two), "junk before\n%s", g_cert_pem);
    free(js2);
    js2 = json_str(two);
    snprintf(buf, sizeof(buf), "{\"Certificate\":%s}", js2);
    assert_kb(parse_cert_s(buf, &c, &ch), KB_ERR_INVALID);
    snprintf(two, sizeof(two), "%s-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
             g_cert_pem);
    free(js2);
    js2 = json_str(two);
    snprintf(buf, sizeof(buf), "{\"Certificate\":%s,\"CertificateChain\":%s}", js, js2);
    assert_kb(parse_cert_s(buf, &c, &ch), KB_ERR_INVALID);
    /* a NUL inside the certificate string */
    assert_true(parse_cert_s("{\"Certificate\":\"a\\u0000b\"}", &c, &ch) != KB_OK);
    /* over the answer limit, and a certificate string over its own limit */
    {
        size_t n = CA_PCA_RESP_MAX + 64;
        char *big = malloc(n + 1);
        assert_non_null(big);
        memset(big, ' ', n);
        memcpy(big, "{\"Certificate\":\"", 16);
        big[n - 2] = '"';
        big[n - 1] = '}';
        big[n] = '\0';
        assert_true(ca_pca_parse_cert(big, n, &c, &ch) != KB_OK);
        n = CA_PCA_PEM_MAX + 64;
        memset(big, 'A', n);
        memcpy(big, "{\"Certificate\":\"", 16);
        big[n - 2] = '"';
        big[n - 1] = '}';
        assert_kb(ca_pca_parse_cert(big, n, &c, &ch), KB_ERR_TOO_LARGE);
        free(big);
    }
    free(js);
    free(js2);
}

static void parse_error_answers(void **state)
{
    char code[CA_PCA_ERROR_MAX + 1];
    static const char *const none[] = {
        "",
        "{}",
        "{\"__type\": 5}",
        "{\"__type\": \"\"}",
        "{\"__type\": \"a b\"}",
        "{\"__type\": \"x#\"}",
        "not json",
        "{\"__type\": \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
    };
    (void)state;
    {
        const char *s = "{\"__type\":\"ThrottlingException\",\"message\":\"slow\"}";
        assert_ok(ca_pca_parse_error(s, strlen(s), code));
    }
    assert_string_equal(code, "ThrottlingException");
    {
        const char *s = "{\"__type\":\"com.amazonaws.acmpca#AccessDeniedException\"}";
        assert_ok(ca_pca_parse_error(s, strlen(s), code));
        assert_string_equal(code, "AccessDeniedException");
    }
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        assert_kb(ca_pca_parse_error(none[i], strlen(none[i]), code), KB_ERR_NOT_FOUND);
        assert_string_equal(code, "");
    }
}

static ca_pca *new_pca(const char *endpoint, const char *creds, long deadline_ms)
{
    ca_pca_opts o;
    ca_pca *p = NULL;
    const char *why = NULL;
    memset(&o, 0, sizeof(o));
    o.ca_arn = ARN;
    o.region = "us-east-1";
    o.endpoint = endpoint;
    o.credentials_file = creds;
    o.timeout_ms = 300;
    o.deadline_ms = deadline_ms;
    assert_ok(ca_pca_new(&o, &p, &why));
    return p;
}

static void options(void **state)
{
    ca_pca_opts o;
    ca_pca *p = NULL;
    const char *why = NULL;
    char acct[13];
    (void)state;
    memset(&o, 0, sizeof(o));
    o.ca_arn = "arn:aws:acm-pca:us-east-1:111122223333"; /* no resource */
    o.region = "us-east-1";
    assert_kb(ca_pca_new(&o, &p, &why), KB_ERR_CONFIG);
    assert_non_null(why);
    o.ca_arn = ARN;
    o.template_arn = "template";
    assert_kb(ca_pca_new(&o, &p, &why), KB_ERR_CONFIG);
    o.template_arn = NULL;
    o.region = NULL;
    assert_kb(ca_pca_new(&o, &p, &why), KB_ERR_CONFIG);
    o.region = "us-east-1";
    o.issue_rate = CA_PCA_RATE_MAX + 1;
    assert_kb(ca_pca_new(&o, &p, &why), KB_ERR_CONFIG);
    o.issue_rate = 0;
    assert_ok(ca_pca_new(&o, &p, &why));
    assert_string_equal(ca_pca_ca_arn(p), ARN);
    ca_pca_free(p);
    ca_pca_free(NULL);
    assert_null(ca_pca_ca_arn(NULL));
    assert_ok(ca_pca_arn_account(ARN, acct));
    assert_string_equal(acct, "111122223333");
    assert_kb(ca_pca_arn_account("arn:aws:acm-pca:us-east-1:1111:x", acct), KB_ERR_INVALID);
    assert_kb(ca_pca_arn_account("arn:aws:acm-pca:us-east-1:11112222333x:x", acct), KB_ERR_INVALID);
    assert_kb(ca_pca_arn_account("arn:aws", acct), KB_ERR_INVALID);
}

static void issue_body(void **state)
{
    ca_pca *p = new_pca("http://127.0.0.1:1", NULL, 1000);
    const char *why = NULL;
    ca_pca_req r;
    spiffe_id id;
    ca_sans sans;
    char *body = NULL, *csr = NULL;
    json_t *o, *e;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    (void)state;
    memset(&sans, 0, sizeof(sans));
    assert_ok(spiffe_id_parse_str("spiffe://example.org/web", &id, &why));
    assert_ok(ca_sans_add_dns(&sans, "web.example.org", &why));
    assert_ok(ca_sans_add_ip(&sans, "::1", &why));
    assert_ok(ca_pca_csr(k, &csr));
    r.arn = ARN;
    r.csr_pem = csr;
    r.id = &id;
    r.sans = &sans;
    r.not_after = 1800000000;
    r.signing_algorithm = ca_pca_signing_algorithm(k);
    assert_ok(ca_pca_issue_body(p, &r, "0123456789abcdef0123456789abcdef", &body));
    o = json_loads(body, 0, NULL);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "CertificateAuthorityArn")), ARN);
    assert_string_equal(json_string_value(json_object_get(o, "SigningAlgorithm")),
                        "SHA256WITHECDSA");
    assert_string_equal(json_string_value(json_object_get(o, "TemplateArn")),
                        CA_PCA_TEMPLATE_DEFAULT);
    assert_string_equal(json_string_value(json_object_get(o, "IdempotencyToken")),
                        "0123456789abcdef0123456789abcdef");
    e = json_object_get(o, "Validity");
    assert_string_equal(json_string_value(json_object_get(e, "Type")), "ABSOLUTE");
    assert_int_equal(json_integer_value(json_object_get(e, "Value")), 1800000000);
    {
        /* Csr: base64 of the PEM */
        const char *b64 = json_string_value(json_object_get(o, "Csr"));
        unsigned char dec[4096];
        int n = EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)strlen(b64));
        assert_true(n > 0);
        assert_memory_equal(dec, csr, strlen(csr));
    }
    e = json_object_get(json_object_get(o, "ApiPassthrough"), "Extensions");
    assert_non_null(e);
    {
        json_t *s = json_object_get(e, "SubjectAlternativeNames");
        assert_int_equal(json_array_size(s), 3);
        assert_string_equal(
            json_string_value(json_object_get(json_array_get(s, 0), "UniformResourceIdentifier")),
            "spiffe://example.org/web");
        assert_string_equal(json_string_value(json_object_get(json_array_get(s, 1), "DnsName")),
                            "web.example.org");
        assert_string_equal(json_string_value(json_object_get(json_array_get(s, 2), "IpAddress")),
                            "::1");
        assert_true(
            json_is_true(json_object_get(json_object_get(e, "KeyUsage"), "DigitalSignature")));
        assert_int_equal(json_object_size(json_object_get(e, "KeyUsage")), 1);
        assert_int_equal(json_array_size(json_object_get(e, "ExtendedKeyUsage")), 2);
    }
    json_decref(o);
    free(body);
    body = NULL;
    /* the URI SAN limit of the model (253) */
    {
        char longid[300];
        spiffe_id lid;
        memcpy(longid, "spiffe://example.org/", 21);
        memset(longid + 21, 'a', 240);
        longid[261] = '\0';
        assert_ok(spiffe_id_parse_str(longid, &lid, &why));
        r.id = &lid;
        assert_kb(ca_pca_issue_body(p, &r, "t", &body), KB_ERR_TOO_LARGE);
        assert_null(body);
        assert_kb(ca_pca_issue(p, &r, &body, &why), KB_ERR_TOO_LARGE);
        assert_non_null(strstr(why, "253"));
        r.id = &id;
    }
    r.signing_algorithm = NULL;
    assert_kb(ca_pca_issue_body(p, &r, "t", &body), KB_ERR_INVALID);
    free(csr);
    EVP_PKEY_free(k);
    ca_pca_free(p);
}

static void csr_and_algorithms(void **state)
{
    EVP_PKEY *k = EVP_EC_gen("P-256"), *k3 = EVP_EC_gen("P-384"), *k5 = EVP_EC_gen("P-521");
    EVP_PKEY *rsa = EVP_RSA_gen(2048), *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    char *csr = NULL;
    X509_REQ *req;
    BIO *m;
    (void)state;
    assert_string_equal(ca_pca_signing_algorithm(k), "SHA256WITHECDSA");
    assert_string_equal(ca_pca_signing_algorithm(k3), "SHA384WITHECDSA");
    assert_string_equal(ca_pca_signing_algorithm(k5), "SHA512WITHECDSA");
    assert_string_equal(ca_pca_signing_algorithm(rsa), "SHA256WITHRSA");
    assert_null(ca_pca_signing_algorithm(ed));
    assert_null(ca_pca_signing_algorithm(NULL));
    assert_ok(ca_pca_csr(k, &csr));
    m = BIO_new_mem_buf(csr, -1);
    req = PEM_read_bio_X509_REQ(m, NULL, NULL, NULL);
    assert_non_null(req);
    assert_int_equal(X509_REQ_verify(req, k), 1);
    assert_int_equal(EVP_PKEY_eq(X509_REQ_get0_pubkey(req), k), 1);
    assert_null(strstr(csr, "PRIVATE"));
    X509_REQ_free(req);
    BIO_free(m);
    free(csr);
    EVP_PKEY_free(k);
    EVP_PKEY_free(k3);
    EVP_PKEY_free(k5);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ed);
}

/* ---- ca_pca_check_leaf over certificates made by ca_cert.c ---------------------------------- */

typedef struct {
    char *dir;
    kb_ec_signer *s, *rogue;
    X509 *root, *rogue_root;
    char *bundle_pem;
} cafx;

static void cafx_init(cafx *f)
{
    char p[512];
    time_t now = time(NULL);
    memset(f, 0, sizeof(*f));
    f->dir = kbtest_tmpdir();
    assert_non_null(f->dir);
    snprintf(p, sizeof(p), "%s/ca.key", f->dir);
    assert_ok(kb_keystore_ec_create_file(p));
    assert_ok(kb_keystore_ec_open_file(p, &f->s));
    snprintf(p, sizeof(p), "%s/rogue.key", f->dir);
    assert_ok(kb_keystore_ec_create_file(p));
    assert_ok(kb_keystore_ec_open_file(p, &f->rogue));
    assert_ok(ca_cert_root(f->s, "example.org", 1, 86400, now, &f->root));
    assert_ok(ca_cert_root(f->rogue, "example.org", 1, 86400, now, &f->rogue_root));
    f->bundle_pem = x509_pem(f->root);
}

static void cafx_free(cafx *f)
{
    char p[512];
    kb_ec_signer_free(f->s);
    kb_ec_signer_free(f->rogue);
    X509_free(f->root);
    X509_free(f->rogue_root);
    free(f->bundle_pem);
    snprintf(p, sizeof(p), "%s/ca.key", f->dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/rogue.key", f->dir);
    unlink(p);
    rmdir(f->dir);
    free(f->dir);
}

/* A leaf PEM for pub, id and sans, signed by signer/cert, valid ttl. */
static char *leaf(kb_ec_signer *signer, X509 *cert, EVP_PKEY *pub, const char *id_s,
                  const ca_sans *sans, int64_t ttl)
{
    ca_issuer iss = {signer, cert, NULL};
    char serial[CA_SERIAL_HEX_LEN];
    const char *why = NULL;
    time_t na = 0;
    spiffe_id id;
    kb_dbuf der;
    const uint8_t *d;
    X509 *x;
    char *pem;
    assert_ok(spiffe_id_parse_str(id_s, &id, &why));
    kb_dbuf_init(&der, 65536);
    assert_ok(ca_cert_leaf_der(&iss, pub, NULL, &id, sans, ttl, time(NULL), &der, serial, &na));
    d = (const uint8_t *)der.p;
    x = d2i_X509(NULL, &d, (long)der.len);
    assert_non_null(x);
    pem = x509_pem(x);
    X509_free(x);
    kb_dbuf_free(&der);
    return pem;
}

static void check_leaf(void **state)
{
    cafx f;
    EVP_PKEY *k = EVP_EC_gen("P-256"), *other = EVP_EC_gen("P-256");
    const char *why = NULL;
    int64_t now = (int64_t)time(NULL);
    spiffe_id id;
    ca_sans sans, none;
    X509 *out = NULL;
    char *pem;
    (void)state;
    cafx_init(&f);
    memset(&sans, 0, sizeof(sans));
    memset(&none, 0, sizeof(none));
    assert_ok(ca_sans_add_dns(&sans, "web.example.org", &why));
    assert_ok(spiffe_id_parse_str("spiffe://example.org/web", &id, &why));
#define CHECK(p, s, na)                                                                            \
    ca_pca_check_leaf(p, k, f.root, NULL, "example.org", f.bundle_pem, &id, s, now, na, &out, &why)
    /* good, with and without names */
    pem = leaf(f.s, f.root, k, "spiffe://example.org/web", &sans, 3600);
    assert_ok(CHECK(pem, &sans, now + 3600));
    assert_non_null(out);
    assert_null(why);
    X509_free(out);
    out = NULL;
    /* names other than requested */
    assert_kb(CHECK(pem, NULL, now + 3600), KB_ERR_AUTH);
    assert_non_null(strstr(why, "DNS/IP names"));
    assert_null(out);
    /* a name twice instead of two names (each requested name must match once) */
    {
        ca_sans dup = sans, two = sans;
        char *p2;
        dup.e[1] = dup.e[0];
        dup.n = 2;
        assert_ok(ca_sans_add_dns(&two, "api.example.org", &why));
        p2 = leaf(f.s, f.root, k, "spiffe://example.org/web", &dup, 3600);
        assert_kb(CHECK(p2, &two, now + 3600), KB_ERR_AUTH);
        assert_non_null(strstr(why, "DNS/IP names"));
        free(p2);
    }
    /* later than asked */
    assert_kb(CHECK(pem, &sans, now + 600), KB_ERR_AUTH);
    assert_non_null(strstr(why, "validity"));
    free(pem);
    /* another ID */
    pem = leaf(f.s, f.root, k, "spiffe://example.org/other", NULL, 3600);
    assert_kb(CHECK(pem, &none, now + 3600), KB_ERR_AUTH);
    assert_non_null(strstr(why, "another SPIFFE ID"));
    free(pem);
    /* another key */
    pem = leaf(f.s, f.root, other, "spiffe://example.org/web", NULL, 3600);
    assert_kb(CHECK(pem, &none, now + 3600), KB_ERR_AUTH);
    assert_non_null(strstr(why, "not for the key"));
    free(pem);
    /* signed by another CA */
    pem = leaf(f.rogue, f.rogue_root, k, "spiffe://example.org/web", NULL, 3600);
    assert_kb(CHECK(pem, &none, now + 3600), KB_ERR_AUTH);
    assert_non_null(strstr(why, "not signed by the CA"));
    free(pem);
    /* the CA's own certificate is not a leaf (and not for our key) */
    pem = x509_pem(f.root);
    assert_kb(ca_pca_check_leaf(pem, X509_get0_pubkey(f.root), f.root, NULL, "example.org",
                                f.bundle_pem, &id, NULL, now, now + 3600, &out, &why),
              KB_ERR_AUTH);
    assert_non_null(strstr(why, "X509-SVID"));
    free(pem);
    /* not a certificate at all */
    assert_kb(
        CHECK("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", &none, now + 3600),
        KB_ERR_INVALID);
    assert_kb(CHECK(NULL, &none, now + 3600), KB_ERR_NULL);
#undef CHECK
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
    cafx_free(&f);
}

/* An endpoint that refuses connections: retried until the deadline, then a clear timeout; and
 * without credentials nothing is sent. */
static void unreachable_endpoint(void **state)
{
    char dir_creds[256], *cert = NULL, *chain = NULL;
    const char *why = NULL;
    char *d = kbtest_tmpdir();
    ca_pca *p;
    FILE *fp;
    time_t t0;
    (void)state;
    assert_non_null(d);
    snprintf(dir_creds, sizeof(dir_creds), "%s/creds", d);
    fp = fopen(dir_creds, "w");
    assert_non_null(fp);
    fputs("AKIDTEST SECRETTEST\n", fp);
    fclose(fp);
    chmod(dir_creds, 0600);
    p = new_pca("http://127.0.0.1:1", dir_creds, 1500);
    t0 = time(NULL);
    assert_kb(ca_pca_get_ca_certificate(p, ARN, &cert, &chain, &why), KB_ERR_TIMEOUT);
    assert_non_null(strstr(why, "GetCertificateAuthorityCertificate"));
    assert_null(strstr(why, "SECRETTEST"));
    assert_null(cert);
    assert_true(time(NULL) - t0 <= 4);
    assert_kb(ca_pca_get_ca_certificate(p, "nope", &cert, &chain, &why), KB_ERR_CONFIG);
    ca_pca_free(p);
    /* no credentials file: refused before any call */
    p = new_pca("http://127.0.0.1:1", "/nonexistent/creds", 1500);
    assert_true(ca_pca_get_ca_certificate(p, ARN, &cert, &chain, &why) != KB_OK);
    assert_non_null(strstr(why, "credentials"));
    ca_pca_free(p);
    unlink(dir_creds);
    rmdir(d);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_issue_answers), cmocka_unit_test(parse_cert_answers),
        cmocka_unit_test(parse_error_answers), cmocka_unit_test(options),
        cmocka_unit_test(issue_body),          cmocka_unit_test(csr_and_algorithms),
        cmocka_unit_test(check_leaf),          cmocka_unit_test(unreachable_endpoint),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
