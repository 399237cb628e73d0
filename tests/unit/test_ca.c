/* test_ca.c - keybridge-ca's library: certificates (checked with the project's own X509-SVID
 * verifier and X509_verify against the CA key), the PKCS#11 EC signer, CSR checks, policy and
 * target parsing, the renewal schedule, and the store's generation check. */
#include "kbtest.h"
#include "kbtest_softhsm.h"

#include <string.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"
#include "ca/ca_cert.h"
#include "ca/ca_csr.h"
#include "ca/ca_policy.h"
#include "ca/ca_renew.h"
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
        cmocka_unit_test(test_file_signer), cmocka_unit_test(test_pkcs11_signer),
        cmocka_unit_test(test_csr),         cmocka_unit_test(test_policy_and_targets),
        cmocka_unit_test(test_schedule),    cmocka_unit_test(test_store_generation_check),
    };
    kb_json_init();
    if (kb_secmem_init() != KB_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
