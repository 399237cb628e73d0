/* test_ca_authority.c - src/ca/ca.c, the authority over a real SQLite store and a development
 * key file: init, issuance (fresh key and CSR key) checked with the project's X509-SVID verifier
 * against the published bundle, the audit row, rotation (prepare, publish both, activate,
 * reload), an intermediate CA (CSR out, signed chain imported and verified), and the refusals:
 * foreign trust domain, second trust domain, unknown key kind, missing PKCS#11 settings, no
 * active generation, an imported chain that is not ours or does not chain to the given roots. */
#include "kbtest.h"

#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"
#include "ca/ca_store.h"
#include "lib/buf.h"
#include "lib/json.h"
#include "lib/secbuf.h"
#include "lib/x509svid.h"

#define TD "example.org"

typedef struct {
    char *dir;
    char db[256];
    char key1[256];
    ca_store *st;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    f->dir = kbtest_tmpdir();
    if (f->dir != NULL) {
        snprintf(f->db, sizeof(f->db), "%s/ca.db", f->dir);
        snprintf(f->key1, sizeof(f->key1), "%s/ca1.key", f->dir);
    }
    if (f->dir == NULL || ca_store_open(f->db, &f->st) != KB_OK) {
        free(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    ca_store_close(f->st);
    free(f->dir);
    free(f);
    return 0;
}

static int64_t new_gen(fx *f, const char *key, const char *gen_state, int intermediate, char **csr)
{
    ca_new_gen_opts o = {.td = TD,
                         .key_kind = "file",
                         .key_ref = key,
                         .ttl = 86400,
                         .intermediate = intermediate,
                         .state = gen_state};
    int64_t gen = 0;
    assert_ok(ca_new_generation(f->st, NULL, &o, &gen, csr));
    assert_true(gen > 0);
    return gen;
}

static STACK_OF(X509) * pem_stack(const char *pem)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x;
    assert_non_null(sk);
    assert_non_null(b);
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        assert_true(sk_X509_push(sk, x) > 0);
    BIO_free(b);
    return sk;
}

/* The leaf in s verifies against the bundle s carries (and the authority publishes), for want. */
static void check_svid(ca_authority *ca, const ca_svid *s, const char *want)
{
    spiffe_bundle_set *set = NULL;
    STACK_OF(X509) *chain = pem_stack(s->chain_pem);
    spiffe_id got;
    const char *why = NULL;
    X509 *leaf;

    assert_true(sk_X509_num(chain) >= 1);
    leaf = sk_X509_shift(chain);
    assert_ok(ca_bundle_set(ca, &set));
    assert_ok(x509svid_verify(set, leaf, chain, X509SVID_PURPOSE_CLIENT, 0, &got, &why));
    assert_string_equal(spiffe_id_str(&got), want);
    /* after its notAfter it is refused */
    assert_kb(
        x509svid_verify(set, leaf, chain, X509SVID_PURPOSE_CLIENT, s->not_after + 1, &got, &why),
        KB_ERR_AUTH);
    assert_true(strlen(s->serial) > 0);
    assert_true(s->ca_gen == ca_active_gen(ca));
    spiffe_bundle_set_free(set);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
}

static int count_certs(const char *pem)
{
    STACK_OF(X509) *sk = pem_stack(pem);
    int n = sk_X509_num(sk);
    sk_X509_pop_free(sk, X509_free);
    return n;
}

typedef struct {
    int rows;
    char serial[64];
    char target[64];
    char reason[64];
} audit_seen;

static void on_audit(void *arg, const char *serial, const char *sid, const char *target,
                     const char *reason, int64_t gen, int64_t not_after, int64_t at)
{
    audit_seen *a = arg;
    (void)sid;
    (void)gen;
    (void)not_after;
    (void)at;
    a->rows++;
    snprintf(a->serial, sizeof(a->serial), "%s", serial);
    snprintf(a->target, sizeof(a->target), "%s", target);
    snprintf(a->reason, sizeof(a->reason), "%s", reason);
}

static void open_needs_a_generation(void **state)
{
    fx *f = *state;
    ca_authority *ca = NULL;
    char td[64];
    assert_kb(ca_open(f->st, NULL, &ca), KB_ERR_NOT_FOUND);
    assert_null(ca);
    assert_kb(ca_store_trust_domain(f->st, td, sizeof(td)), KB_ERR_NOT_FOUND);
}

static void issue_fresh_and_csr_keys(void **state)
{
    fx *f = *state;
    ca_authority *ca = NULL;
    ca_svid s;
    spiffe_id id, other;
    audit_seen seen;
    kb_dbuf jw;
    json_t *j;
    time_t now = time(NULL);

    new_gen(f, f->key1, NULL, 0, NULL);
    assert_ok(ca_open(f->st, NULL, &ca));
    assert_string_equal(ca_trust_domain(ca), TD);
    assert_int_equal(ca_active_gen(ca), 1);
    assert_true(ca_bundle_sequence(ca) >= 1);
    assert_true(ca_not_after(ca) > now + 86000 && ca_not_after(ca) <= now + 86400 + 60);

    /* a fresh key: the PKCS#8 key comes back, the leaf verifies against the bundle */
    assert_ok(spiffe_id_parse_str("spiffe://example.org/ns/a", &id, NULL));
    assert_ok(ca_issue(ca, &id, 600, NULL, "dir:/x", "test", &s));
    assert_non_null(s.key_pem);
    assert_non_null(strstr((const char *)ca_keypem_data(s.key_pem), "BEGIN PRIVATE KEY"));
    assert_true(s.not_after > now + 500 && s.not_after <= now + 600 + 60);
    assert_int_equal(count_certs(s.chain_pem), 1); /* a root CA: the leaf alone */
    assert_int_equal(count_certs(s.bundle_pem), 1);
    check_svid(ca, &s, "spiffe://example.org/ns/a");
    memset(&seen, 0, sizeof(seen));
    assert_ok(ca_store_audit_each(f->st, on_audit, &seen));
    assert_int_equal(seen.rows, 1);
    assert_string_equal(seen.serial, s.serial);
    assert_string_equal(seen.target, "dir:/x");
    assert_string_equal(seen.reason, "test");
    ca_svid_clear(&s);

    /* a CSR's key: certified as is, no key returned; a TTL past the CA's end is clamped */
    {
        EVP_PKEY *pub = EVP_EC_gen("P-256");
        assert_non_null(pub);
        assert_ok(ca_issue(ca, &id, 10 * 86400, pub, NULL, NULL, &s));
        assert_null(s.key_pem);
        assert_true(s.not_after <= (int64_t)ca_not_after(ca));
        check_svid(ca, &s, "spiffe://example.org/ns/a");
        ca_svid_clear(&s);
        EVP_PKEY_free(pub);
    }
    /* without an audit target no audit row is written */
    memset(&seen, 0, sizeof(seen));
    assert_ok(ca_store_audit_each(f->st, on_audit, &seen));
    assert_int_equal(seen.rows, 1);

    /* another trust domain is refused, and nothing is returned */
    assert_ok(spiffe_id_parse_str("spiffe://example.com/ns/a", &other, NULL));
    assert_kb(ca_issue(ca, &other, 600, NULL, "dir:/x", "test", &s), KB_ERR_DENIED);
    assert_null(s.chain_pem);
    assert_null(s.key_pem);
    assert_kb(ca_issue(ca, NULL, 600, NULL, NULL, NULL, &s), KB_ERR_NULL);

    /* the bundle as SPIFFE JWKS: one x509-svid key, the sequence and the refresh hint */
    kb_dbuf_init(&jw, 1 << 20);
    assert_ok(ca_bundle_jwks(ca, &jw));
    assert_ok(kb_json_parse(jw.p, jw.len, 1 << 20, &j, NULL, 0));
    assert_int_equal(json_array_size(json_object_get(j, "keys")), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(j, "keys"), 0), "use")),
        "x509-svid");
    assert_int_equal(json_integer_value(json_object_get(j, "spiffe_sequence")),
                     ca_bundle_sequence(ca));
    assert_int_equal(json_integer_value(json_object_get(j, "spiffe_refresh_hint")),
                     CA_BUNDLE_REFRESH_HINT);
    json_decref(j);
    kb_dbuf_reset(&jw);
    assert_ok(ca_bundle_pem(ca, &jw));
    assert_int_equal(count_certs(kb_dbuf_str(&jw)), 1);
    kb_dbuf_free(&jw);
    ca_free(ca);
}

static void rotation(void **state)
{
    fx *f = *state;
    ca_authority *ca = NULL;
    ca_svid old, s;
    spiffe_id id;
    char key2[300];
    int changed = -1;
    int64_t seq, g2;

    new_gen(f, f->key1, NULL, 0, NULL);
    assert_ok(ca_open(f->st, NULL, &ca));
    assert_ok(spiffe_id_parse_str("spiffe://example.org/w", &id, NULL));
    assert_ok(ca_issue(ca, &id, 600, NULL, NULL, NULL, &old));
    seq = ca_bundle_sequence(ca);
    assert_ok(ca_reload(ca, &changed));
    assert_int_equal(changed, 0);

    /* prepare: published in the bundle, not signing yet */
    snprintf(key2, sizeof(key2), "%s/ca2.key", f->dir);
    g2 = new_gen(f, key2, CA_STATE_PREPARED, 0, NULL);
    assert_int_equal(g2, 2);
    assert_ok(ca_reload(ca, &changed));
    assert_int_equal(changed, 1);
    assert_int_equal(ca_active_gen(ca), 1);
    assert_true(ca_bundle_sequence(ca) > seq);
    assert_ok(ca_issue(ca, &id, 600, NULL, NULL, NULL, &s));
    assert_int_equal(count_certs(s.bundle_pem), 2);
    assert_int_equal(s.ca_gen, 1);
    ca_svid_clear(&s);

    /* activate: the new one signs; an SVID of the old one still verifies (retired, unexpired) */
    assert_ok(ca_activate(f->st, g2));
    assert_ok(ca_reload(ca, &changed));
    assert_int_equal(changed, 1);
    assert_int_equal(ca_active_gen(ca), 2);
    assert_ok(ca_issue(ca, &id, 600, NULL, NULL, NULL, &s));
    assert_int_equal(s.ca_gen, 2);
    check_svid(ca, &s, "spiffe://example.org/w");
    old.ca_gen = 2; /* check_svid compares with the active generation */
    check_svid(ca, &old, "spiffe://example.org/w");
    ca_svid_clear(&s);
    ca_svid_clear(&old);
    assert_kb(ca_activate(f->st, 99), KB_ERR_NOT_FOUND);
    ca_free(ca);
}

static void generation_refusals(void **state)
{
    fx *f = *state;
    ca_new_gen_opts o = {.td = TD, .key_kind = "file", .key_ref = f->key1, .ttl = 86400};
    char key2[300];
    int64_t gen = 0;

    assert_ok(ca_new_generation(f->st, NULL, &o, &gen, NULL));
    /* the key file exists: not overwritten */
    assert_kb(ca_new_generation(f->st, NULL, &o, &gen, NULL), KB_ERR_EXISTS);
    /* one store, one trust domain */
    snprintf(key2, sizeof(key2), "%s/ca2.key", f->dir);
    o.key_ref = key2;
    o.td = "example.com";
    assert_kb(ca_new_generation(f->st, NULL, &o, &gen, NULL), KB_ERR_CONFLICT);
    o.td = TD;
    o.key_kind = "hsm";
    assert_kb(ca_new_generation(f->st, NULL, &o, &gen, NULL), KB_ERR_CONFIG);
    o.key_kind = "pkcs11"; /* no module, token or PIN */
    assert_kb(ca_new_generation(f->st, NULL, &o, &gen, NULL), KB_ERR_CONFIG);
    o.td = NULL;
    assert_kb(ca_new_generation(f->st, NULL, &o, &gen, NULL), KB_ERR_NULL);
}

/* Sign csr_pem as an intermediate CA under root (key rk), with a URI SAN of san_td. */
static char *sign_intermediate(const char *csr_pem, X509 *root, EVP_PKEY *rk, const char *san_td,
                               EVP_PKEY *other_pub)
{
    BIO *b = BIO_new_mem_buf(csr_pem, -1);
    X509_REQ *req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
    X509 *c = X509_new();
    X509V3_CTX v3;
    char san[128];
    BIO *m = BIO_new(BIO_s_mem());
    char *p = NULL, *out;
    long n;

    assert_non_null(req);
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), 7);
    X509_set_subject_name(c, X509_REQ_get_subject_name(req));
    X509_set_issuer_name(c, X509_get_subject_name(root));
    X509_gmtime_adj(X509_getm_notBefore(c), -60);
    X509_gmtime_adj(X509_getm_notAfter(c), 86400);
    X509_set_pubkey(c, other_pub ? other_pub : X509_REQ_get0_pubkey(req));
    X509V3_set_ctx(&v3, root, c, NULL, NULL, 0);
    snprintf(san, sizeof(san), "URI:spiffe://%s", san_td);
    const char *exts[][2] = {{"basicConstraints", "critical,CA:TRUE"},
                             {"keyUsage", "critical,keyCertSign,cRLSign"},
                             {"subjectKeyIdentifier", "hash"},
                             {"authorityKeyIdentifier", "keyid:always"},
                             {"subjectAltName", san}};
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        X509_EXTENSION *e = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);
        assert_non_null(e);
        X509_add_ext(c, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(c, rk, EVP_sha256()) > 0);
    assert_int_equal(PEM_write_bio_X509(m, c), 1);
    n = BIO_get_mem_data(m, &p);
    out = strndup(p, (size_t)n);
    BIO_free(m);
    BIO_free(b);
    X509_REQ_free(req);
    X509_free(c);
    return out;
}

static X509 *upstream_root(EVP_PKEY *k)
{
    X509 *c = X509_new();
    X509V3_CTX v3;
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), 1);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(c), "CN", MBSTRING_ASC,
                               (const unsigned char *)"upstream", -1, -1, 0);
    X509_set_issuer_name(c, X509_get_subject_name(c));
    X509_gmtime_adj(X509_getm_notBefore(c), -60);
    X509_gmtime_adj(X509_getm_notAfter(c), 2 * 86400);
    X509_set_pubkey(c, k);
    X509V3_set_ctx(&v3, c, c, NULL, NULL, 0);
    const char *exts[][2] = {{"basicConstraints", "critical,CA:TRUE"},
                             {"keyUsage", "critical,keyCertSign,cRLSign"},
                             {"subjectKeyIdentifier", "hash"},
                             {"subjectAltName", "URI:spiffe://" TD}};
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        X509_EXTENSION *e = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);
        assert_non_null(e);
        X509_add_ext(c, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(c, k, EVP_sha256()) > 0);
    return c;
}

static char *pem_of(X509 *x)
{
    BIO *m = BIO_new(BIO_s_mem());
    char *p = NULL, *out;
    long n;
    assert_int_equal(PEM_write_bio_X509(m, x), 1);
    n = BIO_get_mem_data(m, &p);
    out = strndup(p, (size_t)n);
    BIO_free(m);
    return out;
}

static void intermediate_import(void **state)
{
    fx *f = *state;
    char *csr = NULL, *good, *wrong_key, *wrong_td, *root_pem, *other_root_pem;
    EVP_PKEY *rk = EVP_EC_gen("P-256"), *ok2 = EVP_EC_gen("P-256");
    X509 *root = upstream_root(rk), *other_root = upstream_root(ok2);
    const char *why = NULL;
    ca_authority *ca = NULL;
    ca_svid s;
    spiffe_id id;
    int64_t gen;

    gen = new_gen(f, f->key1, NULL, 1, &csr);
    assert_non_null(csr);
    assert_non_null(strstr(csr, "BEGIN CERTIFICATE REQUEST"));
    /* pending: nothing signs yet */
    assert_kb(ca_open(f->st, NULL, &ca), KB_ERR_NOT_FOUND);

    root_pem = pem_of(root);
    other_root_pem = pem_of(other_root);
    good = sign_intermediate(csr, root, rk, TD, NULL);
    wrong_key = sign_intermediate(csr, root, rk, TD, ok2);
    wrong_td = sign_intermediate(csr, root, rk, "example.com", NULL);

    /* refusals change nothing: the generation stays pending */
    assert_kb(ca_import_chain(f->st, NULL, gen, wrong_key, root_pem, CA_STATE_ACTIVE, &why),
              KB_ERR_AUTH);
    assert_string_equal(why, "certificate does not carry the CA's public key");
    assert_kb(ca_import_chain(f->st, NULL, gen, wrong_td, root_pem, CA_STATE_ACTIVE, &why),
              KB_ERR_AUTH);
    assert_string_equal(why, "CA certificate has no URI SAN for the trust domain");
    assert_kb(ca_import_chain(f->st, NULL, gen, good, other_root_pem, CA_STATE_ACTIVE, &why),
              KB_ERR_AUTH);
    assert_non_null(why);
    assert_kb(ca_import_chain(f->st, NULL, gen, "no pem", root_pem, CA_STATE_ACTIVE, &why),
              KB_ERR_INVALID);
    assert_kb(ca_import_chain(f->st, NULL, gen + 1, good, root_pem, CA_STATE_ACTIVE, &why),
              KB_ERR_NOT_FOUND);
    assert_kb(ca_open(f->st, NULL, &ca), KB_ERR_NOT_FOUND);

    /* the right chain: active, its leaves carry the intermediate and verify to the root */
    assert_ok(ca_import_chain(f->st, NULL, gen, good, root_pem, CA_STATE_ACTIVE, &why));
    assert_null(why);
    assert_kb(ca_import_chain(f->st, NULL, gen, good, root_pem, CA_STATE_ACTIVE, &why),
              KB_ERR_NOT_FOUND); /* no longer pending */
    assert_ok(ca_open(f->st, NULL, &ca));
    assert_ok(spiffe_id_parse_str("spiffe://example.org/i", &id, NULL));
    assert_ok(ca_issue(ca, &id, 600, NULL, NULL, NULL, &s));
    assert_int_equal(count_certs(s.chain_pem), 2); /* leaf + intermediate */
    assert_int_equal(count_certs(s.bundle_pem), 1);
    check_svid(ca, &s, "spiffe://example.org/i");
    ca_svid_clear(&s);
    ca_free(ca);

    free(csr);
    free(good);
    free(wrong_key);
    free(wrong_td);
    free(root_pem);
    free(other_root_pem);
    X509_free(root);
    X509_free(other_root);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(ok2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(open_needs_a_generation, setup, teardown),
        cmocka_unit_test_setup_teardown(issue_fresh_and_csr_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(generation_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(intermediate_import, setup, teardown),
    };
    kb_json_init();
    if (kb_secmem_init() != KB_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
