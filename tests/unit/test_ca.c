/* test_ca.c - keybridge-ca's library: certificates (checked with the project's own X509-SVID
 * verifier and X509_verify against the CA key), the PKCS#11 EC signer, CSR checks, policy and
 * target parsing, the renewal schedule, and the store's generation check. */
#include "kbtest.h"
#include "kbtest_softhsm.h"

#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <sqlite3.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"
#include "ca/ca_cert.h"
#include "ca/ca_csr.h"
#include "ca/ca_leafkey.h"
#include "ca/ca_policy.h"
#include "ca/ca_renew.h"
#include "ca/ca_sans.h"
#include "ca/ca_store.h"
#include "ca/ca_target.h"
#include "lib/json.h"
#include "lib/keystore.h"
#include "lib/x509svid.h"

static void verify_leaf_with_bundle(X509 *root, X509 *leaf, const char *want)
{
    spiffe_bundle_set *set;
    spiffe_bundle *b;
    spiffe_id got;
    const char *why = NULL;

    assert_ok(spiffe_bundle_set_new(&set));
    assert_ok(spiffe_bundle_new("example.org", &b));
    assert_ok(spiffe_bundle_add_x509_root(b, root));
    assert_ok(spiffe_bundle_set_put(set, b));
    assert_ok(x509svid_verify(set, leaf, NULL, X509SVID_PURPOSE_CLIENT, 0, &got, &why));
    assert_string_equal(spiffe_id_str(&got), want);
    assert_ok(x509svid_verify(set, leaf, NULL, X509SVID_PURPOSE_SERVER, 0, &got, &why));
    /* the root as a leaf is refused (a CA), and a leaf after its notAfter is refused */
    assert_kb(x509svid_verify(set, root, NULL, X509SVID_PURPOSE_CLIENT, 0, &got, &why),
              KB_ERR_AUTH);
    assert_kb(
        x509svid_verify(set, leaf, NULL, X509SVID_PURPOSE_CLIENT, time(NULL) + 7200, &got, &why),
        KB_ERR_AUTH);
    spiffe_bundle_set_free(set);
}

static void certs_with(kb_ec_signer *s)
{
    X509 *root = NULL, *leaf = NULL, *clamped = NULL;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    ca_issuer iss;
    spiffe_id id, rootid;
    const char *why;
    time_t now = time(NULL);

    assert_non_null(k);
    assert_ok(ca_cert_root(s, "example.org", 1, 86400, now, &root));
    assert_int_equal(X509_verify(root, kb_ec_signer_pubkey(s)), 1);
    assert_ok(ca_cert_check_ca(root, kb_ec_signer_pubkey(s), "example.org", &why));
    assert_kb(ca_cert_check_ca(root, k, "example.org", &why), KB_ERR_AUTH);
    assert_kb(ca_cert_check_ca(root, kb_ec_signer_pubkey(s), "other.org", &why), KB_ERR_AUTH);
    assert_ok(x509svid_check_signing(root, &why));
    iss.signer = s;
    iss.cert = root;
    iss.chain = NULL;
    assert_ok(spiffe_id_parse_str("spiffe://example.org/ns/a", &id, &why));
    assert_ok(ca_cert_leaf(&iss, k, &id, 3600, now, &leaf));
    assert_int_equal(X509_verify(leaf, kb_ec_signer_pubkey(s)), 1);
    {
        const ASN1_INTEGER *sn = X509_get0_serialNumber(leaf);
        assert_true(ASN1_STRING_length(sn) >= 8); /* >= 64 bits */
    }
    /* notBefore 10 s in the past */
    {
        struct tm tm;
        assert_int_equal(ASN1_TIME_to_tm(X509_get0_notBefore(leaf), &tm), 1);
        assert_int_equal((long)(now - timegm(&tm)), CA_BACKDATE_SECS);
    }
    verify_leaf_with_bundle(root, leaf, "spiffe://example.org/ns/a");
    /* SKI = SHA-1 of the subjectPublicKey (RFC 5280 4.2.1.2 method 1), AKI = the CA's SKI */
    {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdl = 0;
        const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(leaf);
        const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(leaf);
        int crit = -1;
        ASN1_OCTET_STRING *raw = X509_get_ext_d2i(leaf, NID_subject_key_identifier, &crit, NULL);
        assert_non_null(ski);
        assert_non_null(raw);
        assert_int_equal(crit, 0); /* RFC 5280: MUST be non-critical */
        ASN1_OCTET_STRING_free(raw);
        assert_int_equal(X509_pubkey_digest(leaf, EVP_sha1(), md, &mdl), 1);
        assert_int_equal(ASN1_STRING_length(ski), (int)mdl);
        assert_memory_equal(ASN1_STRING_get0_data(ski), md, mdl);
        assert_non_null(aki);
        assert_int_equal(ASN1_OCTET_STRING_cmp(aki, X509_get0_subject_key_id(root)), 0);
    }
    /* notAfter never past the CA's */
    assert_ok(ca_cert_leaf(&iss, k, &id, CA_TTL_MAX, now, &clamped));
    assert_true(ca_cert_not_after(clamped) <= ca_cert_not_after(root));
    /* refusals: root ID, TTL out of range, CA expired */
    assert_ok(spiffe_id_parse_str("spiffe://example.org", &rootid, &why));
    X509 *bad = NULL;
    assert_kb(ca_cert_leaf(&iss, k, &rootid, 3600, now, &bad), KB_ERR_INVALID);
    assert_kb(ca_cert_leaf(&iss, k, &id, 10, now, &bad), KB_ERR_INVALID);
    assert_kb(ca_cert_leaf(&iss, k, &id, CA_TTL_MAX + 1, now, &bad), KB_ERR_INVALID);
    assert_kb(ca_cert_leaf(&iss, k, &id, 3600, now + 2 * 86400, &bad), KB_ERR_INVALID);
    assert_null(bad);
    /* an intermediate CSR carries the name constraint and verifies */
    X509_REQ *req = NULL;
    assert_ok(ca_cert_csr(s, "example.org", 2, &req));
    assert_int_equal(X509_REQ_verify(req, kb_ec_signer_pubkey(s)), 1);
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    assert_true(X509v3_get_ext_by_NID(exts, NID_name_constraints, -1) >= 0);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    X509_free(clamped);
    X509_free(leaf);
    X509_free(root);
    EVP_PKEY_free(k);
}

/* OpenSSL's own PEM of DER under label, NUL-terminated (malloc'd). */
static char *openssl_pem(const char *label, const uint8_t *der, size_t len)
{
    BIO *m = BIO_new(BIO_s_mem());
    char *p = NULL, *r;
    long n;

    assert_non_null(m);
    assert_true(PEM_write_bio(m, label, "", der, (long)len) > 0);
    n = BIO_get_mem_data(m, &p);
    r = strndup(p, (size_t)n);
    BIO_free(m);
    return r;
}

/* The PEM armour matches OpenSSL's for every length around the 48-byte line boundary. */
static void test_pem_write(void **state)
{
    uint8_t der[200];
    char out[400];
    (void)state;

    for (size_t i = 0; i < sizeof(der); i++)
        der[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 1; len <= sizeof(der); len++) {
        char *want = openssl_pem("CERTIFICATE", der, len);
        size_t n = ca_pem_len(len, "CERTIFICATE");
        assert_true(n < sizeof(out));
        assert_int_equal(ca_pem_write(der, len, "CERTIFICATE", out), n);
        assert_int_equal(n, strlen(want));
        assert_memory_equal(out, want, n);
        free(want);
    }
}

/* Leaf keys: fresh each time, d*G is the point, and the PKCS#8 PEM is byte for byte what OpenSSL
 * writes for the same key. */
static void check_leafkey_pem(const ca_leafkey *k)
{
    ca_keypem *pem = NULL;
    EVP_PKEY *back;
    BIO *m;
    char *again = NULL;
    uint8_t pt[CA_P256_POINT_LEN];
    size_t pl = 0;
    long n;

    assert_ok(ca_leafkey_pkcs8_pem(k, &pem));
    m = BIO_new_mem_buf(ca_keypem_data(pem), (int)ca_keypem_len(pem));
    back = PEM_read_bio_PrivateKey(m, NULL, NULL, NULL);
    assert_non_null(back);
    BIO_free(m);
    assert_int_equal(EVP_PKEY_get_octet_string_param(back, "pub", pt, sizeof(pt), &pl), 1);
    assert_int_equal(pl, sizeof(pt));
    assert_memory_equal(pt, k->point, sizeof(pt));
    {
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(back, NULL);
        assert_non_null(c);
        assert_int_equal(EVP_PKEY_pairwise_check(c), 1); /* the scalar and the point match */
        EVP_PKEY_CTX_free(c);
    }
    m = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(m, back, NULL, NULL, 0, NULL, NULL), 1);
    n = BIO_get_mem_data(m, &again);
    assert_int_equal((size_t)n, ca_keypem_len(pem));
    assert_memory_equal(ca_keypem_data(pem), again, (size_t)n);
    BIO_free(m);
    EVP_PKEY_free(back);
    ca_keypem_free(pem);
}

static void test_leafkey(void **state)
{
    ca_leafkey a, b;
    ca_keypem *pem = NULL, *many[CA_KEYSLAB_SLOTS + 10];
    size_t live = kb_secret_live_count();
    (void)state;

    assert_ok(ca_leafkey_gen(&a));
    assert_ok(ca_leafkey_gen(&b));
    assert_int_equal(a.point[0], 0x04);
    assert_memory_not_equal(a.d, b.d, sizeof(a.d));
    assert_memory_not_equal(a.point, b.point, sizeof(a.point));
    check_leafkey_pem(&a);
    for (int i = 0; i < 100; i++) {
        assert_ok(ca_leafkey_gen(&b));
        check_leafkey_pem(&b);
    }
    /* a scalar with leading zero bytes keeps its 32 bytes (RFC 5915 3): d = 1, Q = G */
    {
        static const char g[] = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
                                "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
        memset(b.d, 0, sizeof(b.d));
        b.d[31] = 1;
        assert_ok(kb_unhex(g, strlen(g), b.point, sizeof(b.point)));
        check_leafkey_pem(&b);
    }
    /* the locked slab: full, then each further PEM in its own kb_secret; all released */
    for (int i = 0; i < CA_KEYSLAB_SLOTS + 10; i++) {
        assert_ok(ca_leafkey_pkcs8_pem(&b, &many[i]));
        assert_int_equal(ca_keypem_in_slab(many[i]), i < CA_KEYSLAB_SLOTS);
        assert_int_equal(ca_keypem_len(many[i]), ca_keypem_len(many[0]));
        assert_memory_equal(ca_keypem_data(many[i]), ca_keypem_data(many[0]),
                            ca_keypem_len(many[0]));
    }
    assert_int_equal(kb_secret_live_count(), live + 10);
    for (int i = 0; i < CA_KEYSLAB_SLOTS + 10; i++)
        ca_keypem_free(many[i]);
    assert_int_equal(kb_secret_live_count(), live);
    assert_ok(ca_leafkey_pkcs8_pem(&b, &pem));
    assert_true(ca_keypem_in_slab(pem)); /* slots come back */
    ca_keypem_free(pem);
    pem = NULL;
    ca_keypem_free(NULL);
    ca_leafkey_wipe(&b);
    for (size_t i = 0; i < sizeof(b); i++)
        assert_int_equal(((uint8_t *)&b)[i], 0);
    /* refusals */
    a.point[0] = 0x02;
    assert_kb(ca_leafkey_pkcs8_pem(&a, &pem), KB_ERR_INVALID);
    assert_null(pem);
    assert_kb(ca_leafkey_pkcs8_pem(NULL, &pem), KB_ERR_NULL);
    assert_kb(ca_leafkey_gen(NULL), KB_ERR_NULL);
    ca_leafkey_wipe(&a);
}

/* The fast subjectPublicKeyInfo (EC keys set field by field) is the DER OpenSSL's encoder makes,
 * for P-256, P-384 and (through X509_set_pubkey) RSA; ca_cert_leaf_der gives the same leaf as
 * DER with its serial and notAfter. */
static void test_leaf_spki_and_der(void **state)
{
    char *d = kbtest_tmpdir(), path[256], serial[CA_SERIAL_HEX_LEN], hex[CA_SERIAL_HEX_LEN];
    EVP_PKEY *keys[3] = {EVP_EC_gen("P-256"), EVP_EC_gen("P-384"), EVP_RSA_gen(2048)};
    kb_ec_signer *s = NULL;
    X509 *root = NULL;
    ca_issuer iss;
    spiffe_id id;
    const char *why;
    time_t now = time(NULL), end = 0;
    (void)state;

    snprintf(path, sizeof(path), "%s/ca.key", d);
    assert_ok(kb_keystore_ec_create_file(path));
    assert_ok(kb_keystore_ec_open_file(path, &s));
    assert_ok(ca_cert_root(s, "example.org", 1, 86400, now, &root));
    iss.signer = s;
    iss.cert = root;
    iss.chain = NULL;
    assert_ok(spiffe_id_parse_str("spiffe://example.org/ns/a", &id, &why));
    for (int i = 0; i < 3; i++) {
        X509 *leaf = NULL, *parsed;
        unsigned char *a = NULL, *b = NULL;
        const unsigned char *p;
        kb_dbuf der;
        int na, nb;

        assert_non_null(keys[i]);
        assert_ok(ca_cert_leaf(&iss, keys[i], &id, 3600, now, &leaf));
        na = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf), &a);
        nb = i2d_PUBKEY(keys[i], &b);
        assert_true(na > 0);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, (size_t)na);
        assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(leaf), keys[i]), 1);
        verify_leaf_with_bundle(root, leaf, "spiffe://example.org/ns/a");
        OPENSSL_free(a);
        OPENSSL_free(b);
        X509_free(leaf);

        kb_dbuf_init(&der, 64 * 1024);
        assert_ok(ca_cert_leaf_der(&iss, keys[i], NULL, &id, NULL, 3600, now, &der, serial, &end));
        p = der.p;
        parsed = d2i_X509(NULL, &p, (long)der.len);
        assert_non_null(parsed);
        assert_ptr_equal(p, der.p + der.len); /* nothing trailing */
        assert_int_equal(X509_verify(parsed, kb_ec_signer_pubkey(s)), 1);
        ca_cert_serial_hex(parsed, hex, sizeof(hex));
        assert_string_equal(serial, hex);
        assert_true(strlen(serial) >= 16);
        assert_int_equal((long)end, (long)ca_cert_not_after(parsed));
        assert_int_equal((long)end, (long)(now + 3600));
        verify_leaf_with_bundle(root, parsed, "spiffe://example.org/ns/a");
        X509_free(parsed);
        kb_dbuf_free(&der);
    }
    /* a leaf key made by ca_leafkey: the certificate carries exactly its point */
    {
        ca_leafkey lk;
        ca_keypem *pem = NULL;
        EVP_PKEY *lp;
        X509 *parsed;
        BIO *m;
        const unsigned char *p;
        kb_dbuf der;

        assert_ok(ca_leafkey_gen(&lk));
        assert_ok(ca_leafkey_pkcs8_pem(&lk, &pem));
        m = BIO_new_mem_buf(ca_keypem_data(pem), (int)ca_keypem_len(pem));
        lp = PEM_read_bio_PrivateKey(m, NULL, NULL, NULL);
        assert_non_null(lp);
        BIO_free(m);
        kb_dbuf_init(&der, 64 * 1024);
        assert_ok(ca_cert_leaf_der(&iss, NULL, lk.point, &id, NULL, 3600, now, &der, serial, &end));
        p = der.p;
        parsed = d2i_X509(NULL, &p, (long)der.len);
        assert_non_null(parsed);
        assert_int_equal(X509_verify(parsed, kb_ec_signer_pubkey(s)), 1);
        assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(parsed), lp), 1);
        verify_leaf_with_bundle(root, parsed, "spiffe://example.org/ns/a");
        /* exactly one of the two keys */
        der.len = 0;
        assert_kb(ca_cert_leaf_der(&iss, lp, lk.point, &id, NULL, 3600, now, &der, serial, &end),
                  KB_ERR_NULL);
        X509_free(parsed);
        kb_dbuf_free(&der);
        EVP_PKEY_free(lp);
        ca_keypem_free(pem);
        ca_leafkey_wipe(&lk);
    }
    /* refusals leave nothing behind */
    {
        kb_dbuf der;
        kb_dbuf_init(&der, 64 * 1024);
        assert_kb(ca_cert_leaf_der(&iss, keys[0], NULL, &id, NULL, 10, now, &der, serial, &end),
                  KB_ERR_INVALID);
        assert_kb(ca_cert_leaf_der(&iss, keys[0], NULL, &id, NULL, 3600, now + 2 * 86400, &der,
                                   serial, &end),
                  KB_ERR_INVALID);
        assert_kb(ca_cert_leaf_der(&iss, NULL, NULL, &id, NULL, 3600, now, &der, serial, &end),
                  KB_ERR_NULL);
        assert_int_equal(der.len, 0);
        kb_dbuf_free(&der);
    }
    for (int i = 0; i < 3; i++)
        EVP_PKEY_free(keys[i]);
    X509_free(root);
    kb_ec_signer_free(s);
    free(d);
}

static void test_file_signer(void **state)
{
    char *d = kbtest_tmpdir(), path[256];
    kb_ec_signer *s = NULL;
    (void)state;

    snprintf(path, sizeof(path), "%s/ca.key", d);
    assert_ok(kb_keystore_ec_create_file(path));
    assert_kb(kb_keystore_ec_create_file(path), KB_ERR_EXISTS);
    assert_ok(kb_keystore_ec_open_file(path, &s));
    assert_string_equal(kb_ec_signer_kind(s), "file");
    certs_with(s);
    kb_ec_signer_free(s);
    assert_int_equal(chmod(path, 0640), 0);
    assert_kb(kb_keystore_ec_open_file(path, &s), KB_ERR_CONFIG);
    free(d);
}

static void test_pkcs11_signer(void **state)
{
    kbtest_softhsm t;
    kb_secret *pin = NULL, *bad = NULL;
    kb_ec_signer *s = NULL, *s2 = NULL;
    uint8_t md[32] = {1}, sig[KB_EC_SIG_DER_MAX];
    size_t n = 0;
    (void)state;

    assert_int_equal(kbtest_softhsm_make(&t, "kb-ca-unit"), 0);
    assert_ok(kb_secret_from(t.pin, strlen(t.pin), &pin));
    assert_ok(kb_secret_from("wrong-pin", 9, &bad));
    assert_kb(kb_keystore_ec_open(KBTEST_SOFTHSM_MODULE, t.label, "ca-1", pin, &s),
              KB_ERR_NOT_FOUND);
    assert_ok(kb_keystore_ec_init(KBTEST_SOFTHSM_MODULE, t.label, "ca-1", pin));
    assert_ok(kb_keystore_ec_init(KBTEST_SOFTHSM_MODULE, t.label, "ca-1", pin)); /* idempotent */
    assert_ok(kb_keystore_ec_open(KBTEST_SOFTHSM_MODULE, t.label, "ca-1", pin, &s));
    /* a second open in the same process (module already initialised) works; a wrong PIN not */
    assert_ok(kb_keystore_ec_open(KBTEST_SOFTHSM_MODULE, t.label, "ca-1", pin, &s2));
    kb_ec_signer_free(s2);
    s2 = NULL;
    assert_kb(kb_keystore_ec_open(KBTEST_SOFTHSM_MODULE, t.label, "ca-1", bad, &s2), KB_ERR_AUTH);
    assert_string_equal(kb_ec_signer_kind(s), "pkcs11");
    assert_ok(kb_ec_signer_sign(s, md, sig, &n));
    {
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(kb_ec_signer_pubkey(s), NULL);
        assert_int_equal(EVP_PKEY_verify_init(c), 1);
        assert_int_equal(EVP_PKEY_verify(c, sig, n, md, 32), 1);
        md[0] ^= 1;
        assert_int_not_equal(EVP_PKEY_verify(c, sig, n, md, 32), 1);
        EVP_PKEY_CTX_free(c);
    }
    certs_with(s);
    assert_true(kb_ec_signer_count(s) >= 3);
    kb_ec_signer_free(s2);
    kb_ec_signer_free(s);
    kb_secret_free(pin);
    kb_secret_free(bad);
    kbtest_softhsm_remove(&t);
}

static void test_csr(void **state)
{
    EVP_PKEY *k = EVP_EC_gen("P-256"), *pub = NULL;
    X509_REQ *req = X509_REQ_new();
    spiffe_id id;
    const char *why;
    unsigned char *der = NULL;
    int n;
    (void)state;

    assert_ok(spiffe_id_parse_str("spiffe://example.org/ns/a", &id, &why));
    assert_int_equal(X509_REQ_set_pubkey(req, k), 1);
    assert_true(X509_REQ_sign(req, k, EVP_sha256()) > 0);
    n = i2d_X509_REQ(req, &der);
    assert_true(n > 0);
    assert_ok(ca_csr_parse(der, (size_t)n, &id, &pub, &why));
    assert_int_equal(EVP_PKEY_eq(pub, k), 1);
    EVP_PKEY_free(pub);
    /* truncated, trailing, tampered, empty, oversized */
    assert_kb(ca_csr_parse(der, (size_t)n - 1, &id, &pub, &why), KB_ERR_INVALID);
    {
        uint8_t *t = malloc((size_t)n + 1);
        memcpy(t, der, (size_t)n);
        t[n] = 0;
        assert_kb(ca_csr_parse(t, (size_t)n + 1, &id, &pub, &why), KB_ERR_TRAILING);
        t[n - 2] ^= 1;
        assert_true(ca_csr_parse(t, (size_t)n, &id, &pub, &why) != KB_OK);
        free(t);
    }
    assert_kb(ca_csr_parse(der, 0, &id, &pub, &why), KB_ERR_INVALID);
    assert_kb(ca_csr_parse(der, CA_CSR_MAX + 1, &id, &pub, &why), KB_ERR_TOO_LARGE);
    assert_null(pub);
    OPENSSL_free(der);
    X509_REQ_free(req);
    EVP_PKEY_free(k);
}

/* A DER CSR for k signed with md; san: URI SAN or NULL; ext_twice: two extension requests;
 * challenge: a challengePassword attribute too. */
static unsigned char *make_csr(EVP_PKEY *k, const EVP_MD *md, const char *san, int ext_twice,
                               int challenge, int *n)
{
    X509_REQ *req = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    unsigned char *der = NULL;

    assert_non_null(req);
    assert_int_equal(X509_REQ_set_pubkey(req, k), 1);
    assert_int_equal(X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_UTF8,
                                                (const unsigned char *)"w", -1, -1, 0),
                     1);
    if (san != NULL) {
        char v[300];
        snprintf(v, sizeof(v), "URI:%s", san);
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, v);
        assert_non_null(e);
        assert_true(sk_X509_EXTENSION_push(exts, e) > 0);
        assert_int_equal(X509_REQ_add_extensions(req, exts), 1);
        if (ext_twice) { /* again, as Microsoft's extension request attribute */
            unsigned char *ed = NULL;
            int el = i2d_X509_EXTENSIONS(exts, &ed);
            assert_true(el > 0);
            assert_int_equal(
                X509_REQ_add1_attr_by_NID(req, NID_ms_ext_req, V_ASN1_SEQUENCE, ed, el), 1);
            OPENSSL_free(ed);
        }
    }
    if (challenge)
        assert_int_equal(X509_REQ_add1_attr_by_NID(req, NID_pkcs9_challengePassword, MBSTRING_ASC,
                                                   (const unsigned char *)"pw", -1),
                         1);
    assert_true(X509_REQ_sign(req, k, md) > 0);
    *n = i2d_X509_REQ(req, &der);
    assert_true(*n > 0);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    return der;
}

/* The fast EC path and the OpenSSL-only path give the same answer (and the same key). */
static kb_err both_paths(const unsigned char *der, int n, const spiffe_id *id, EVP_PKEY *want)
{
    EVP_PKEY *a = NULL, *b = NULL;
    const char *wa = NULL, *wb = NULL;
    kb_err ra = ca_csr_parse_ex(der, (size_t)n, id, &a, &wa, 0);
    kb_err rb = ca_csr_parse_ex(der, (size_t)n, id, &b, &wb, 1);

    assert_int_equal(ra, rb);
    if (ra == KB_OK) {
        assert_int_equal(EVP_PKEY_eq(a, b), 1);
        assert_int_equal(EVP_PKEY_eq(a, want), 1);
        assert_null(wa);
    } else {
        assert_null(a);
        assert_null(b);
        assert_non_null(wa);
        assert_non_null(wb);
    }
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    return ra;
}

static void test_csr_paths(void **state)
{
    EVP_PKEY *p256 = EVP_EC_gen("P-256"), *p384 = EVP_EC_gen("P-384"), *rsa = EVP_RSA_gen(2048);
    EVP_PKEY *pub = NULL;
    spiffe_id id;
    const char *why;
    unsigned char *der;
    int n;
    (void)state;

    assert_ok(spiffe_id_parse_str("spiffe://example.org/ns/a", &id, &why));
    der = make_csr(p256, EVP_sha256(), "spiffe://example.org/ns/a", 0, 0, &n);
    assert_ok(both_paths(der, n, &id, p256));
    assert_ok(both_paths(der, n, NULL, p256));
    /* tampered signature, then a public point off the curve */
    {
        uint8_t pt[65];
        size_t pl = 0;
        der[n - 3] ^= 0x01;
        assert_kb(both_paths(der, n, &id, p256), KB_ERR_AUTH);
        der[n - 3] ^= 0x01;
        assert_int_equal(EVP_PKEY_get_octet_string_param(p256, "pub", pt, sizeof(pt), &pl), 1);
        for (int i = 0; i + 65 <= n; i++) {
            if (memcmp(der + i, pt, 65) == 0) {
                der[i + 64] ^= 0x01; /* Y changed: not on the curve */
                break;
            }
        }
        assert_kb(both_paths(der, n, &id, p256), KB_ERR_INVALID);
    }
    OPENSSL_free(der);
    der = make_csr(p256, EVP_sha512(), NULL, 0, 1, &n); /* SHA-512, challengePassword, no SAN */
    assert_ok(both_paths(der, n, &id, p256));
    OPENSSL_free(der);
    der = make_csr(p384, EVP_sha384(), "spiffe://example.org/ns/a", 0, 0, &n);
    assert_ok(both_paths(der, n, &id, p384));
    OPENSSL_free(der);
    der = make_csr(p256, EVP_sha256(), "spiffe://example.org/ns/other", 0, 0, &n);
    assert_kb(both_paths(der, n, &id, p256), KB_ERR_DENIED);
    OPENSSL_free(der);
    der = make_csr(rsa, EVP_sha256(), "spiffe://example.org/ns/a", 0, 0, &n); /* OpenSSL path */
    assert_ok(both_paths(der, n, &id, rsa));
    OPENSSL_free(der);
    /* the fast path's one stricter rule: two extension requests (PKCS#9 and Microsoft's) are
     * refused, not picked from; OpenSSL alone takes the first */
    der = make_csr(p256, EVP_sha256(), "spiffe://example.org/ns/a", 1, 0, &n);
    assert_kb(ca_csr_parse(der, (size_t)n, &id, &pub, &why), KB_ERR_INVALID);
    assert_string_equal(why, "malformed CSR: more than one extension request");
    assert_null(pub);
    assert_ok(ca_csr_parse_ex(der, (size_t)n, &id, &pub, &why, 1));
    EVP_PKEY_free(pub);
    pub = NULL;
    OPENSSL_free(der);
    EVP_PKEY_free(p256);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(rsa);
}

struct audit_thread {
    ca_store *st;
    int base, n, fails;
};

static void *audit_writer(void *arg)
{
    struct audit_thread *t = arg;
    char serial[32];

    for (int i = 0; i < t->n; i++) {
        snprintf(serial, sizeof(serial), "%08x", (unsigned)(t->base + i));
        if (ca_store_audit_add(t->st, serial, "spiffe://example.org/ns/a", "api", "test", 1, 2,
                               3) != KB_OK)
            t->fails++;
    }
    return NULL;
}

static void count_row(void *arg, const char *serial, const char *sid, const char *target,
                      const char *reason, int64_t gen, int64_t not_after, int64_t at)
{
    int *seen = arg;
    unsigned long v = strtoul(serial, NULL, 16);

    (void)sid;
    (void)target;
    (void)reason;
    (void)gen;
    (void)not_after;
    (void)at;
    if (v < 200)
        seen[v]++;
    seen[200]++; /* total */
}

/* Group commit: concurrent writers each get their own row committed exactly once; a row added
 * under the write guard joins (and rolls back with) that transaction; a failing commit fails
 * every row of its batch. */
static void test_audit_group_commit(void **state)
{
    char *d = kbtest_tmpdir(), path[256];
    ca_store *st = NULL;
    pthread_t th[8];
    struct audit_thread t[8];
    int seen[201];
    ca_reg r;
    sqlite3 *db;
    (void)state;

    snprintf(path, sizeof(path), "%s/ca.db", d);
    assert_ok(ca_store_open(path, &st));
    for (int i = 0; i < 8; i++) {
        t[i] = (struct audit_thread){st, i * 25, 25, 0};
        assert_int_equal(pthread_create(&th[i], NULL, audit_writer, &t[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(t[i].fails, 0);
    }
    memset(seen, 0, sizeof(seen));
    assert_ok(ca_store_audit_each(st, count_row, seen));
    assert_int_equal(seen[200], 200);
    for (int i = 0; i < 200; i++)
        assert_int_equal(seen[i], 1);
    /* inside the write guard */
    memset(&r, 0, sizeof(r));
    snprintf(r.spiffe_id, sizeof(r.spiffe_id), "spiffe://example.org/ns/a");
    snprintf(r.target, sizeof(r.target), "dir:/x");
    r.ttl = 3600;
    assert_ok(ca_store_reg_add(st, &r));
    assert_ok(ca_store_write_begin(st, r.rid));
    assert_ok(
        ca_store_audit_add(st, "000000c7", "spiffe://example.org/ns/a", "dir:/x", "t", 1, 2, 3));
    assert_ok(ca_store_write_end(st, 0)); /* rolled back with it */
    memset(seen, 0, sizeof(seen));
    assert_ok(ca_store_audit_each(st, count_row, seen));
    assert_int_equal(seen[200], 200);
    /* a commit that cannot succeed: every writer of the batch is told */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE audit", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    for (int i = 0; i < 4; i++) {
        t[i] = (struct audit_thread){st, i * 5, 5, 0};
        assert_int_equal(pthread_create(&th[i], NULL, audit_writer, &t[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(t[i].fails, 5);
    }
    assert_kb(ca_store_audit_add(NULL, "x", "y", "z", "r", 1, 2, 3), KB_ERR_NULL);
    ca_store_close(st);
    free(d);
}

/* SPIRE's SVIDStore document: exactly spiffeID, x509SVID, x509SVIDKey, bundle (SPIRE omits an
 * empty federatedBundles, and so do we). */
static void test_svidstore_json(void **state)
{
    ca_svid sv;
    char *doc = NULL;
    json_t *o = NULL;
    const char *k;
    json_t *v;
    size_t n = 0;
    (void)state;

    memset(&sv, 0, sizeof(sv));
    sv.chain_pem = "CHAIN";
    sv.bundle_pem = "BUNDLE";
    assert_ok(ca_target_svidstore_json("spiffe://example.org/a", &sv, &doc));
    assert_ok(kb_json_parse(doc, strlen(doc), 65536, &o, NULL, 0));
    json_object_foreach(o, k, v)
    {
        assert_true(strcmp(k, "spiffeID") == 0 || strcmp(k, "x509SVID") == 0 ||
                    strcmp(k, "x509SVIDKey") == 0 || strcmp(k, "bundle") == 0);
        n++;
    }
    assert_int_equal(n, 4);
    assert_null(json_object_get(o, "federatedBundles"));
    assert_string_equal(json_string_value(json_object_get(o, "x509SVID")), "CHAIN");
    json_decref(o);
    kb_json_free_str(doc);
}

/* DNS/IP SAN syntax (at, below and above the limits), the stored form, the policy's
 * server_names, and a leaf carrying them: one URI SAN, accepted by our verifier, host checks. */
static void test_sans(void **state)
{
    static const char *const good_dns[] = {"localhost", "a.b-c.example.org", "x1.y2", "a", NULL};
    static const char *const bad_dns[] = {
        "",        "Localhost", "a..b",    ".a",    "a.",  "-a.org", "a-.org",          "a_b.org",
        "*.a.org", "a.*.org",   "1.2.3.4", "a.123", "a b", "a\x01b", "caf\xc3\xa9.org", NULL};
    static const char *const good_ip[] = {"127.0.0.1", "::1", "10.0.0.255", "2001:db8::2", NULL};
    static const char *const bad_ip[] = {"127.1",      "1.2.3.4.5",  "256.0.0.1", "01.2.3.4",
                                         "fe80::1%lo", "10.0.0.0/8", "",          "::g",
                                         " 1.2.3.4",   NULL};
    static const char pol[] =
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/srv\",\"dns\":[\"localhost\","
        "\"*.svc.example.org\"],\"ip\":[\"127.0.0.1\",\"10.0.0.0/8\",\"2001:db8::/32\"]}]}";
    static const char *const bad_pol[] = {
        "{\"rules\":[],\"server_names\":{}}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/a\"}]}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/a\",\"dns\":\"x.org\"}]}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/a\",\"dns\":[\"X.org\"]}]}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/a\",\"dns\":[\"*.*.org\"]}]}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/a\",\"dns\":[1]}]}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/a\",\"ip\":[\"10.0.0.1/8\"]}]}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/a\",\"ip\":[\"10.0.0.0/33\"]}]}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/a\",\"ip\":[\"10.0.0.0/-1\"]}]}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/a\",\"ip\":[\"10.0.0.0/\"]}]}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"a\",\"ip\":[\"10.0.0.1\"]}]}",
        "{\"rules\":[],\"server_names\":[{\"path_prefix\":\"/a\",\"ip\":[\"1.1.1.1\"],\"x\":1}]}",
        NULL,
    };
    char label64[80], name254[300], buf[CA_SANS_STR_MAX], err[512];
    const char *why;
    ca_sans s, back;
    ca_policy *p = NULL;
    spiffe_id id;
    (void)state;

    for (size_t i = 0; good_dns[i]; i++)
        assert_true(ca_dns_name_ok(good_dns[i], strlen(good_dns[i]), &why));
    for (size_t i = 0; bad_dns[i]; i++) {
        why = NULL;
        if (ca_dns_name_ok(bad_dns[i], strlen(bad_dns[i]), &why))
            fail_msg("accepted DNS name %zu", i);
        assert_non_null(why);
    }
    /* label 63 ok, 64 not; name 253 ok, 254 not */
    memset(label64, 'a', 64);
    label64[64] = '\0';
    assert_false(ca_dns_name_ok(label64, 64, &why));
    assert_true(ca_dns_name_ok(label64, 63, &why));
    for (size_t i = 0; i < sizeof(name254); i++)
        name254[i] = (i % 2) ? '.' : 'a';
    assert_true(ca_dns_name_ok(name254, 253, &why));
    assert_false(ca_dns_name_ok(name254, 255, &why));
    memset(&s, 0, sizeof(s));
    for (size_t i = 0; good_ip[i]; i++)
        assert_ok(ca_sans_add_ip(&s, good_ip[i], &why));
    for (size_t i = 0; bad_ip[i]; i++)
        if (ca_sans_add_ip(&s, bad_ip[i], &why) == KB_OK)
            fail_msg("accepted IP %zu", i);
    assert_kb(ca_sans_add_ip(&s, "127.0.0.1", &why), KB_ERR_EXISTS);
    assert_kb(ca_sans_add_ip(&s, "0:0:0:0:0:0:0:1", &why), KB_ERR_EXISTS); /* canonical form */
    assert_ok(ca_sans_add_dns(&s, "localhost", &why));
    assert_kb(ca_sans_add_dns(&s, "localhost", &why), KB_ERR_EXISTS);
    assert_ok(ca_sans_format(&s, buf, sizeof(buf)));
    assert_string_equal(buf, "ip:127.0.0.1,ip:::1,ip:10.0.0.255,ip:2001:db8::2,dns:localhost");
    assert_ok(ca_sans_parse(buf, &back, &why));
    assert_int_equal(back.n, s.n);
    assert_kb(ca_sans_parse("dns:a,", &back, &why), KB_ERR_INVALID);
    assert_kb(ca_sans_parse("uri:x", &back, &why), KB_ERR_INVALID);
    assert_kb(ca_sans_parse("dns:A", &back, &why), KB_ERR_INVALID);
    assert_kb(ca_sans_parse(",dns:a", &back, &why), KB_ERR_INVALID);
    assert_ok(ca_sans_parse("", &back, &why));
    assert_int_equal(back.n, 0);
    assert_kb(ca_sans_format(&s, buf, 10), KB_ERR_TOO_LARGE);
    /* at most CA_SANS_MAX */
    memset(&back, 0, sizeof(back));
    for (int i = 0; i < CA_SANS_MAX; i++) {
        char a[32];
        snprintf(a, sizeof(a), "10.0.0.%d", i);
        assert_ok(ca_sans_add_ip(&back, a, &why));
    }
    assert_kb(ca_sans_add_dns(&back, "one-more.org", &why), KB_ERR_TOO_LARGE);
    assert_ok(ca_sans_format(&back, buf, sizeof(buf)));

    /* policy */
    for (size_t i = 0; bad_pol[i]; i++) {
        err[0] = 0;
        if (ca_policy_parse(bad_pol[i], strlen(bad_pol[i]), &p, err, sizeof(err)) == KB_OK)
            fail_msg("accepted bad server_names %zu", i);
        assert_non_null(strstr(err, "server_names"));
        assert_null(p);
    }
    assert_ok(ca_policy_parse(pol, strlen(pol), &p, err, sizeof(err)));
    assert_ok(spiffe_id_parse_str("spiffe://example.org/srv/a", &id, &why));
    {
        static const char *const allowed[] = {"dns:localhost",    "dns:a.svc.example.org",
                                              "ip:127.0.0.1",     "ip:10.255.0.1",
                                              "ip:2001:db8:1::5", NULL};
        static const char *const denied[] = {
            "dns:svc.example.org", "dns:a.b.svc.example.org", "dns:localhost2",     "ip:127.0.0.2",
            "ip:11.0.0.1",         "ip:2001:db9::1",          "ip:::ffff:10.0.0.1", NULL};
        for (size_t i = 0; allowed[i]; i++) {
            assert_ok(ca_sans_parse(allowed[i], &back, &why));
            if (ca_policy_check_sans(p, &id, &back, err, sizeof(err)) != KB_OK)
                fail_msg("refused %s: %s", allowed[i], err);
        }
        for (size_t i = 0; denied[i]; i++) {
            assert_ok(ca_sans_parse(denied[i], &back, &why));
            if (ca_policy_check_sans(p, &id, &back, err, sizeof(err)) != KB_ERR_DENIED)
                fail_msg("allowed %s", denied[i]);
            assert_non_null(strstr(err, "server_names entry 1 (path_prefix /srv)"));
        }
        assert_ok(ca_sans_parse("dns:localhost", &back, &why));
        assert_ok(spiffe_id_parse_str("spiffe://example.org/srvx", &id, &why));
        assert_kb(ca_policy_check_sans(p, &id, &back, err, sizeof(err)), KB_ERR_DENIED);
        assert_non_null(strstr(err, "no server_names entry"));
        assert_kb(ca_policy_check_sans(NULL, &id, &back, err, sizeof(err)), KB_ERR_DENIED);
        assert_ok(ca_policy_check_sans(NULL, &id, NULL, err, sizeof(err))); /* no names */
    }
    ca_policy_free(p);

    /* a leaf with names: exactly one URI SAN, verified by our own X509-SVID verifier as client
     * and server, and matching its host names (what keysync's Go client checks) */
    {
        kb_ec_signer *sg = NULL;
        char *kp = NULL, path[] = "/tmp/kbca-sans-XXXXXX";
        X509 *root = NULL, *leaf = NULL;
        EVP_PKEY *k = EVP_EC_gen("P-256");
        ca_issuer iss;
        kb_dbuf der;
        char serial[CA_SERIAL_HEX_LEN];
        time_t end = 0, now = time(NULL);
        const unsigned char *q;
        GENERAL_NAMES *gns;
        int uris = 0;

        assert_non_null(mkdtemp(path));
        assert_true(asprintf(&kp, "%s/ca.key", path) > 0);
        assert_ok(kb_keystore_ec_create_file(kp));
        assert_ok(kb_keystore_ec_open_file(kp, &sg));
        assert_ok(ca_cert_root(sg, "example.org", 1, 86400, now, &root));
        iss.signer = sg;
        iss.cert = root;
        iss.chain = NULL;
        assert_ok(spiffe_id_parse_str("spiffe://example.org/srv/a", &id, &why));
        assert_ok(ca_sans_parse("dns:localhost,ip:127.0.0.1,ip:::1", &s, &why));
        kb_dbuf_init(&der, 65536);
        assert_ok(ca_cert_leaf_der(&iss, k, NULL, &id, &s, 3600, now, &der, serial, &end));
        q = der.p;
        leaf = d2i_X509(NULL, &q, (long)der.len);
        assert_non_null(leaf);
        verify_leaf_with_bundle(root, leaf, "spiffe://example.org/srv/a");
        gns = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
        assert_int_equal(sk_GENERAL_NAME_num(gns), 4);
        for (int i = 0; i < sk_GENERAL_NAME_num(gns); i++)
            uris += sk_GENERAL_NAME_value(gns, i)->type == GEN_URI;
        assert_int_equal(uris, 1);
        GENERAL_NAMES_free(gns);
        assert_int_equal(X509_check_host(leaf, "localhost", 0, 0, NULL), 1);
        assert_int_equal(X509_check_host(leaf, "other", 0, 0, NULL), 0);
        assert_int_equal(X509_check_ip_asc(leaf, "127.0.0.1", 0), 1);
        assert_int_equal(X509_check_ip_asc(leaf, "::1", 0), 1);
        assert_int_equal(X509_check_ip_asc(leaf, "127.0.0.2", 0), 0);
        X509_free(leaf);
        X509_free(root);
        kb_dbuf_free(&der);
        EVP_PKEY_free(k);
        kb_ec_signer_free(sg);
        unlink(kp);
        rmdir(path);
        free(kp);
    }
}

/* A version-1 database (before reg.sans and reg.adopt_spire) opens, gains the columns, keeps
 * its rows; a registration's SANs and adoption flag round-trip; a database newer than this
 * binary is refused. */
static void test_store_migration(void **state)
{
    char dir[] = "/tmp/kbca-mig-XXXXXX", path[256];
    sqlite3 *db = NULL;
    ca_store *st = NULL;
    ca_reg *regs = NULL, r;
    size_t n = 0;
    int64_t ttl = 0;
    char sans[CA_REG_SANS_MAX];
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/ca.db", dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "CREATE TABLE reg (rid INTEGER PRIMARY KEY AUTOINCREMENT, spiffe_id TEXT NOT "
                     "NULL, ttl INTEGER NOT NULL, avail INTEGER NOT NULL, target TEXT NOT NULL, "
                     "renewable INTEGER NOT NULL, endpoint TEXT NOT NULL DEFAULT '', region TEXT "
                     "NOT NULL DEFAULT '', creds_file TEXT NOT NULL DEFAULT '', not_after INTEGER "
                     "NOT NULL DEFAULT 0, next_renew INTEGER NOT NULL DEFAULT 0, failures INTEGER "
                     "NOT NULL DEFAULT 0, bundle_seq INTEGER NOT NULL DEFAULT 0, created INTEGER "
                     "NOT NULL, UNIQUE (spiffe_id, target));"
                     "INSERT INTO reg (spiffe_id, ttl, avail, target, renewable, created) VALUES "
                     "('spiffe://example.org/ns/a', 3600, 900, 'dir:/x', 1, 1);"
                     "PRAGMA user_version=1;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    assert_ok(ca_store_open(path, &st));
    assert_ok(ca_store_reg_list(st, &regs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(regs[0].sans, "");
    assert_int_equal(regs[0].adopt_spire, 0);
    assert_string_equal(regs[0].lease_owner, ""); /* 3 -> 4: no lease held */
    assert_int_equal(regs[0].lease_until, 0);
    free(regs);
    memset(&r, 0, sizeof(r));
    snprintf(r.spiffe_id, sizeof(r.spiffe_id), "spiffe://example.org/ns/b");
    snprintf(r.target, sizeof(r.target), "dir:/y");
    snprintf(r.sans, sizeof(r.sans), "dns:localhost,ip:127.0.0.1");
    r.ttl = 600;
    r.renewable = 1;
    r.adopt_spire = 1;
    assert_ok(ca_store_reg_add(st, &r));
    memset(&r.sans, 0, sizeof(r.sans));
    r.adopt_spire = 0;
    assert_ok(ca_store_reg_get(st, r.rid, &r));
    assert_int_equal(r.adopt_spire, 1);
    assert_string_equal(r.sans, "dns:localhost,ip:127.0.0.1");
    assert_ok(ca_store_reg_renewable(st, "spiffe://example.org/ns/b", &ttl, sans, sizeof(sans)));
    assert_int_equal(ttl, 600);
    assert_string_equal(sans, "dns:localhost,ip:127.0.0.1");
    ca_store_close(st);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=5", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_kb(ca_store_open(path, &st), KB_ERR_SCHEMA);
    unlink(path);
    snprintf(path, sizeof(path), "%s/ca.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/ca.db-shm", dir);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
}

static void test_policy_and_targets(void **state)
{
    static const char good[] =
        "{\"rules\":[{\"path_prefix\":\"/lambda/acct/{account}/\",\"target\":\"secretsmanager\","
        "\"account\":\"{account}\"},{\"path_prefix\":\"/ns/\",\"target\":\"dir\",\"dir_root\":"
        "\"/run/svids\",\"renewable\":true,\"max_ttl\":7200}]}";
    static const char *const bad[] = {
        "[]",
        "{\"rules\":{}}",
        "{\"rules\":[],\"x\":1}",
        "{\"rules\":[{\"path_prefix\":\"ns\",\"target\":\"dir\",\"dir_root\":\"/a\"}]}",
        "{\"rules\":[{\"path_prefix\":\"/ns//x\",\"target\":\"dir\",\"dir_root\":\"/a\"}]}",
        "{\"rules\":[{\"path_prefix\":\"/ns/\",\"target\":\"dir\"}]}",
        "{\"rules\":[{\"path_prefix\":\"/ns/\",\"target\":\"dir\",\"dir_root\":\"/a/../b\"}]}",
        "{\"rules\":[{\"path_prefix\":\"/ns/\",\"target\":\"ftp\"}]}",
        "{\"rules\":[{\"path_prefix\":\"/ns/\",\"target\":\"secretsmanager\",\"account\":\"12\"}]}",
        "{\"rules\":[{\"path_prefix\":\"/ns/\",\"target\":\"secretsmanager\",\"account\":"
        "\"{account}\"}]}",
        "{\"rules\":[{\"path_prefix\":\"/a/{account}/\",\"target\":\"secretsmanager\","
        "\"account\":\"{account}\",\"renewable\":true}]}",
        "{\"rules\":[{\"path_prefix\":\"/ns/\",\"target\":\"dir\",\"dir_root\":\"/a\","
        "\"max_ttl\":\"1h\"}]}",
        "{\"rules\":[{\"path_prefix\":\"/ns/\",\"target\":\"dir\",\"dir_root\":\"/a\","
        "\"renewable\":1}]}",
        NULL,
    };
    ca_policy *p = NULL;
    ca_target_spec t;
    spiffe_id id;
    char err[256];
    const char *why;
    (void)state;

    for (size_t i = 0; bad[i]; i++) {
        err[0] = 0;
        if (ca_policy_parse(bad[i], strlen(bad[i]), &p, err, sizeof(err)) == KB_OK)
            fail_msg("accepted bad policy %zu", i);
        assert_true(err[0] != 0);
        assert_null(p);
    }
    assert_ok(ca_policy_parse(good, strlen(good), &p, err, sizeof(err)));
    assert_int_equal(ca_policy_rule_count(p), 2);
    assert_ok(spiffe_id_parse_str("spiffe://example.org/lambda/acct/123456789012/fn/x", &id, &why));
    assert_ok(ca_target_parse("secretsmanager:123456789012:spiffe/x", &t, &why));
    assert_ok(ca_policy_check(p, &id, &t, 3600, 0, &why));
    assert_kb(ca_policy_check(p, &id, &t, 3600, 1, &why), KB_ERR_DENIED);
    assert_ok(ca_target_parse("secretsmanager:210987654321:spiffe/x", &t, &why));
    assert_kb(ca_policy_check(p, &id, &t, 3600, 0, &why), KB_ERR_DENIED);
    assert_ok(ca_target_parse("dir:/run/svids/x", &t, &why));
    assert_kb(ca_policy_check(p, &id, &t, 3600, 0, &why), KB_ERR_DENIED);
    assert_ok(spiffe_id_parse_str("spiffe://example.org/ns/a", &id, &why));
    assert_ok(ca_policy_check(p, &id, &t, 3600, 1, &why));
    assert_kb(ca_policy_check(p, &id, &t, 7201, 1, &why), KB_ERR_DENIED);
    assert_ok(ca_target_parse("dir:/run/svidsx/a", &t, &why));
    assert_kb(ca_policy_check(p, &id, &t, 3600, 0, &why), KB_ERR_DENIED);
    assert_ok(spiffe_id_parse_str("spiffe://example.org/nsx/a", &id, &why));
    assert_ok(ca_target_parse("dir:/run/svids/x", &t, &why));
    assert_kb(ca_policy_check(p, &id, &t, 3600, 0, &why), KB_ERR_DENIED);
    assert_kb(ca_policy_check(NULL, &id, &t, 3600, 0, &why), KB_ERR_DENIED);
    ca_policy_free(p);
    /* targets */
    assert_kb(ca_target_parse("dir:relative", &t, &why), KB_ERR_INVALID);
    assert_kb(ca_target_parse("dir:/a/./b", &t, &why), KB_ERR_INVALID);
    assert_kb(ca_target_parse("dir:/a/", &t, &why), KB_ERR_INVALID);
    assert_kb(ca_target_parse("dir:/", &t, &why), KB_ERR_INVALID);
    assert_kb(ca_target_parse("secretsmanager:12345678901:x", &t, &why), KB_ERR_INVALID);
    assert_kb(ca_target_parse("secretsmanager:12345678901a:x", &t, &why), KB_ERR_INVALID);
    assert_kb(ca_target_parse("secretsmanager:123456789012:", &t, &why), KB_ERR_INVALID);
    assert_kb(ca_target_parse("secretsmanager:123456789012:a b", &t, &why), KB_ERR_INVALID);
    assert_kb(ca_target_parse("s3:bucket", &t, &why), KB_ERR_INVALID);
}

static void test_schedule(void **state)
{
    (void)state;
    /* 1 h SVID issued at 0, availability 5 min: renewal when 45-55 % remains */
    for (uint32_t r = 0; r < 3000; r += 7) {
        int64_t t = ca_renew_due(0, 3600, 300, 2, r);
        assert_true(t >= 3600 - 1980 && t <= 3600 - 1620);
    }
    /* availability target bigger than half the life: earlier */
    assert_true(ca_renew_due(0, 60, 40, 2, 0) <= 60 - 42);
    /* availability >= lifetime: at once */
    assert_int_equal(ca_renew_due(100, 160, 100, 2, 0), 100);
}

static void test_store_generation_check(void **state)
{
    char *d = kbtest_tmpdir(), path[256];
    ca_store *st = NULL;
    ca_reg r, got;
    (void)state;

    snprintf(path, sizeof(path), "%s/ca.db", d);
    assert_ok(ca_store_open(path, &st));
    memset(&r, 0, sizeof(r));
    snprintf(r.spiffe_id, sizeof(r.spiffe_id), "spiffe://example.org/ns/a");
    snprintf(r.target, sizeof(r.target), "dir:/x");
    r.ttl = 3600;
    assert_ok(ca_store_reg_add(st, &r));
    assert_kb(ca_store_reg_add(st, &r), KB_ERR_EXISTS);
    int64_t first = r.rid;
    /* the renew API's look-up: only renewable registrations, the newest one's TTL */
    int64_t ttl = 0;
    assert_kb(ca_store_reg_renewable(st, r.spiffe_id, &ttl, NULL, 0), KB_ERR_NOT_FOUND);
    {
        ca_reg r2 = r;
        snprintf(r2.target, sizeof(r2.target), "dir:/y");
        r2.renewable = 1;
        r2.ttl = 600;
        assert_ok(ca_store_reg_add(st, &r2));
        assert_ok(ca_store_reg_renewable(st, r.spiffe_id, &ttl, NULL, 0));
        assert_int_equal(ttl, 600);
        assert_kb(ca_store_reg_renewable(st, "spiffe://example.org/ns/b", &ttl, NULL, 0),
                  KB_ERR_NOT_FOUND);
        assert_ok(ca_store_reg_remove(st, r2.rid, &got));
        assert_kb(ca_store_reg_renewable(st, r.spiffe_id, &ttl, NULL, 0), KB_ERR_NOT_FOUND);
        assert_kb(ca_store_reg_renewable(st, NULL, &ttl, NULL, 0), KB_ERR_NULL);
    }
    assert_ok(ca_store_write_begin(st, first));
    assert_ok(ca_store_write_end(st, 1));
    assert_ok(ca_store_reg_remove(st, first, &got));
    assert_kb(ca_store_reg_remove(st, first, &got), KB_ERR_NOT_FOUND);
    assert_kb(ca_store_write_begin(st, first), KB_ERR_CONFLICT);
    /* the same ID and target again: a new generation, the old one stays refused */
    assert_ok(ca_store_reg_add(st, &r));
    assert_true(r.rid != first);
    assert_kb(ca_store_write_begin(st, first), KB_ERR_CONFLICT);
    assert_ok(ca_store_write_begin(st, r.rid));
    assert_ok(ca_store_write_end(st, 0));
    ca_store_close(st);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_signer),
        cmocka_unit_test(test_pkcs11_signer),
        cmocka_unit_test(test_csr),
        cmocka_unit_test(test_policy_and_targets),
        cmocka_unit_test(test_svidstore_json),
        cmocka_unit_test(test_sans),
        cmocka_unit_test(test_store_migration),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_store_generation_check),
        cmocka_unit_test(test_pem_write),
        cmocka_unit_test(test_leafkey),
        cmocka_unit_test(test_leaf_spki_and_der),
        cmocka_unit_test(test_csr_paths),
        cmocka_unit_test(test_audit_group_commit),
    };
    kb_json_init();
    if (kb_secmem_init() != KB_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
