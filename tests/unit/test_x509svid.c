/* test_x509svid.c - X509-SVID rules: the go-spiffe vectors, and one certificate built here per
 * rule, each rejected with its own reason. */
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "kbtest.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/fileio.h"
#include "lib/spiffe_bundle.h"
#include "lib/spiffe_id.h"
#include "lib/x509svid.h"

/* A fixed verification time for the certificates built here (2023-11-14T22:13:20Z). */
#define T0 ((time_t)1700000000)

/* ---- building certificates ------------------------------------------------------------------ */

typedef struct {
    const char *uri[3]; /* URI SANs (NULL-terminated list) */
    const char *dns;    /* a DNS SAN, or NULL */
    const char *bc;     /* basicConstraints value, or NULL for none */
    const char *ku;     /* keyUsage value, or NULL for none */
    const char *eku;    /* extendedKeyUsage value, or NULL for none */
    long nb, na;        /* validity, in seconds from T0 */
    const char *cn;     /* subject CN */
} opts;

static EVP_PKEY *gen_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    return k;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

/* Sign a certificate for key with o's contents; self-signed when issuer is NULL. */
static X509 *make_cert(const opts *o, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key)
{
    static long serial = 1;
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_NAME *name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"keybridge test", -1,
                               -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *)(o->cn ? o->cn : "leaf"), -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509_NAME_free(name);
    ASN1_TIME_set(X509_getm_notBefore(x), T0 + o->nb);
    ASN1_TIME_set(X509_getm_notAfter(x), T0 + o->na);
    X509_set_pubkey(x, key);

    if (o->bc)
        add_ext(x, issuer, NID_basic_constraints, o->bc);
    if (o->ku)
        add_ext(x, issuer, NID_key_usage, o->ku);
    if (o->eku)
        add_ext(x, issuer, NID_ext_key_usage, o->eku);
    add_ext(x, issuer, NID_subject_key_identifier, "hash");
    if (issuer)
        add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
    if (o->uri[0] || o->dns) {
        /* Built by hand so malformed URIs reach the certificate unchanged. */
        GENERAL_NAMES *names = GENERAL_NAMES_new();
        for (int i = 0; i < 3 && o->uri[i]; i++) {
            GENERAL_NAME *gn = GENERAL_NAME_new();
            ASN1_IA5STRING *s = ASN1_IA5STRING_new();
            ASN1_STRING_set(s, o->uri[i], (int)strlen(o->uri[i]));
            GENERAL_NAME_set0_value(gn, GEN_URI, s);
            sk_GENERAL_NAME_push(names, gn);
        }
        if (o->dns) {
            GENERAL_NAME *gn = GENERAL_NAME_new();
            ASN1_IA5STRING *s = ASN1_IA5STRING_new();
            ASN1_STRING_set(s, o->dns, (int)strlen(o->dns));
            GENERAL_NAME_set0_value(gn, GEN_DNS, s);
            sk_GENERAL_NAME_push(names, gn);
        }
        assert_int_equal(X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT),
                         1);
        GENERAL_NAMES_free(names);
    }
    assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

/* A good leaf's options; tests change one field. */
static opts leaf_opts(void)
{
    opts o = {{"spiffe://example.org/ns/payments/sa/api", NULL, NULL},
              NULL,
              "critical,CA:FALSE",
              "critical,digitalSignature",
              "serverAuth,clientAuth",
              -3600,
              3600,
              "leaf"};
    return o;
}

static opts ca_opts(const char *cn)
{
    opts o = {{"spiffe://example.org", NULL, NULL},
              NULL,
              "critical,CA:TRUE",
              "critical,keyCertSign,cRLSign",
              NULL,
              -86400,
              86400,
              cn};
    return o;
}

typedef struct {
    EVP_PKEY *root_key, *other_key, *leaf_key;
    X509 *root, *other_root;
    spiffe_bundle_set *set;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    spiffe_bundle *b;
    f->root_key = gen_key();
    f->other_key = gen_key();
    f->leaf_key = gen_key();
    opts r = ca_opts("root");
    f->root = make_cert(&r, f->root_key, NULL, NULL);
    opts r2 = ca_opts("other root");
    r2.uri[0] = "spiffe://other.org";
    f->other_root = make_cert(&r2, f->other_key, NULL, NULL);
    assert_ok(spiffe_bundle_set_new(&f->set));
    assert_ok(spiffe_bundle_new("example.org", &b));
    assert_ok(spiffe_bundle_add_x509_root(b, f->root));
    assert_ok(spiffe_bundle_set_put(f->set, b));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    spiffe_bundle_set_free(f->set);
    X509_free(f->root);
    X509_free(f->other_root);
    EVP_PKEY_free(f->root_key);
    EVP_PKEY_free(f->other_key);
    EVP_PKEY_free(f->leaf_key);
    free(f);
    return 0;
}

/* Build a leaf from o under the fixture's root and verify it; returns the reason ("" if OK). */
static const char *verify_leaf(fixture *f, const opts *o, int purpose, time_t at)
{
    static char reason[400];
    X509 *leaf = make_cert(o, f->leaf_key, f->root, f->root_key);
    spiffe_id id;
    const char *why = NULL;
    kb_err rc = x509svid_verify(f->set, leaf, NULL, purpose, at, &id, &why);
    if (rc == KB_OK) {
        assert_string_equal(spiffe_id_str(&id), o->uri[0]);
        reason[0] = '\0';
    } else {
        assert_int_equal(rc, KB_ERR_AUTH);
        assert_non_null(why);
        assert_true(strlen(why) > 0);
        snprintf(reason, sizeof(reason), "%s", why);
        assert_string_equal(spiffe_id_str(&id), ""); /* no ID on failure */
    }
    X509_free(leaf);
    return reason;
}

#define assert_reason(got, want)                                                                   \
    do {                                                                                           \
        const char *g__ = (got);                                                                   \
        if (strcmp(g__, (want)) != 0)                                                              \
            fail_msg("reason '%s', want '%s'", g__, (want));                                       \
    } while (0)

/* ---- built certificates: one per rule ------------------------------------------------------- */

static void good_leaf_verifies(void **state)
{
    fixture *f = *state;
    opts o = leaf_opts();
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "");
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_SERVER, T0), "");
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_NONE, T0), "");
    /* keyEncipherment/keyAgreement are allowed on a leaf (4.3); EKU is optional (4.4). */
    o.ku = "critical,digitalSignature,keyEncipherment,keyAgreement";
    o.eku = NULL;
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT | X509SVID_PURPOSE_SERVER, T0), "");
    /* No basicConstraints at all: cA defaults to false. */
    o.bc = NULL;
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "");
    /* Other SAN types may sit beside the one URI SAN (X509-SVID.md 2). */
    o.dns = "api.example.org";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "");
}

static void validity_window(void **state)
{
    fixture *f = *state;
    opts o = leaf_opts();
    o.nb = -7200;
    o.na = -10;
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "certificate expired");
    o.nb = 100;
    o.na = 7200;
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "certificate not yet valid");
    /* The same certificate at a time inside its window. */
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0 + 200), "");
}

static void now_is_the_default_time(void **state)
{
    fixture *f = *state;
    opts o = leaf_opts();
    /* T0 + 3600 is long past: at = 0 means now, so the leaf has expired. */
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, 0), "certificate expired");

    /* A root and a leaf valid from 1970 to 2100 verify now. */
    long from = (long)(1 - T0), to = (long)(4102444800 - T0);
    opts r = ca_opts("long root");
    r.nb = from;
    r.na = to;
    X509 *root = make_cert(&r, f->root_key, NULL, NULL);
    spiffe_bundle *b;
    assert_ok(spiffe_bundle_new("example.org", &b));
    assert_ok(spiffe_bundle_add_x509_root(b, root));
    assert_ok(spiffe_bundle_set_put(f->set, b)); /* replaces the short-lived root */
    o.nb = from;
    o.na = to;
    X509 *leaf = make_cert(&o, f->leaf_key, root, f->root_key);
    const char *why;
    assert_ok(x509svid_verify(f->set, leaf, NULL, X509SVID_PURPOSE_CLIENT, 0, NULL, &why));
    X509_free(leaf);
    X509_free(root);
}

static void san_rules(void **state)
{
    fixture *f = *state;
    opts o = leaf_opts();
    o.uri[0] = NULL;
    o.dns = "api.example.org";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "no URI SAN");
    o.dns = NULL;
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "no URI SAN");

    o = leaf_opts();
    o.uri[1] = "spiffe://example.org/second";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "more than one URI SAN");

    o = leaf_opts();
    o.uri[0] = "spiffe://example.org";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0),
                  "SPIFFE ID has no path (a trust domain ID is not a workload ID)");

    o.uri[0] = "spiffe://example.org/a//b";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0),
                  "URI SAN is not a valid SPIFFE ID: path has an empty segment ('//')");
    o.uri[0] = "https://example.org/a";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0),
                  "URI SAN is not a valid SPIFFE ID: scheme is not 'spiffe://'");
    o.uri[0] = "spiffe://Example.org/a";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0),
                  "URI SAN is not a valid SPIFFE ID: trust domain has an uppercase character "
                  "(must be lowercase)");
}

static void trust_domain_rules(void **state)
{
    fixture *f = *state;
    opts o = leaf_opts();
    /* Signed by example.org's root, but claims other.org: that root cannot vouch for it. */
    o.uri[0] = "spiffe://other.org/workload";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "trust domain not trusted");

    /* Now trust other.org with its own root: the leaf still does not chain to *that* root. */
    spiffe_bundle *b;
    assert_ok(spiffe_bundle_new("other.org", &b));
    assert_ok(spiffe_bundle_add_x509_root(b, f->other_root));
    assert_ok(spiffe_bundle_set_put(f->set, b));
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0),
                  "chain does not verify: unable to get local issuer certificate");

    /* A leaf issued by other.org's root for other.org verifies (federation). */
    X509 *leaf = make_cert(&o, f->leaf_key, f->other_root, f->other_key);
    spiffe_id id;
    const char *why;
    assert_ok(x509svid_verify(f->set, leaf, NULL, X509SVID_PURPOSE_CLIENT, T0, &id, &why));
    assert_string_equal(spiffe_id_trust_domain(&id), "other.org");
    X509_free(leaf);

    /* An empty bundle for a trust domain trusts nothing. */
    assert_ok(spiffe_bundle_new("empty.org", &b));
    assert_ok(spiffe_bundle_set_put(f->set, b));
    o.uri[0] = "spiffe://empty.org/w";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "trust domain not trusted");
}

static void basic_constraints_and_key_usage(void **state)
{
    fixture *f = *state;
    opts o = leaf_opts();
    o.bc = "critical,CA:TRUE";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "leaf is a CA");

    o = leaf_opts();
    o.ku = NULL;
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "key usage missing");
    o.ku = "digitalSignature";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "key usage not critical");
    o.ku = "critical,keyEncipherment";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "leaf lacks digitalSignature");
    o.ku = "critical,digitalSignature,keyCertSign";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "leaf has keyCertSign");
    o.ku = "critical,digitalSignature,cRLSign";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "leaf has cRLSign");

    /* Two key usage extensions (RFC 5280 4.2: at most one of each): which one would count? */
    o = leaf_opts();
    X509 *leaf = make_cert(&o, f->leaf_key, f->root, f->root_key);
    add_ext(leaf, f->root, NID_key_usage, "critical,keyCertSign");
    assert_true(X509_sign(leaf, f->root_key, EVP_sha256()) > 0);
    const char *why;
    assert_kb(x509svid_verify(f->set, leaf, NULL, X509SVID_PURPOSE_CLIENT, T0, NULL, &why),
              KB_ERR_AUTH);
    assert_reason(why, "leaf has malformed or duplicate extensions");
    X509_free(leaf);
}

static void extended_key_usage(void **state)
{
    fixture *f = *state;
    opts o = leaf_opts();
    o.eku = "serverAuth";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "EKU lacks clientAuth");
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_SERVER, T0), "");
    o.eku = "clientAuth";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_SERVER, T0), "EKU lacks serverAuth");
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "");
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT | X509SVID_PURPOSE_SERVER, T0),
                  "EKU lacks serverAuth");
    o.eku = "codeSigning";
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_CLIENT, T0), "EKU lacks clientAuth");
    assert_reason(verify_leaf(f, &o, X509SVID_PURPOSE_NONE, T0), "");

    X509 *leaf = make_cert(&o, f->leaf_key, f->root, f->root_key);
    const char *why;
    assert_kb(x509svid_verify(f->set, leaf, NULL, 4, T0, NULL, &why), KB_ERR_INVALID);
    X509_free(leaf);
}

/* Leaf under an intermediate built from io; returns the reason ("" if OK). */
static const char *verify_with_intermediate(fixture *f, const opts *io, time_t at)
{
    static char reason[400];
    EVP_PKEY *ik = gen_key();
    X509 *inter = make_cert(io, ik, f->root, f->root_key);
    opts lo = leaf_opts();
    X509 *leaf = make_cert(&lo, f->leaf_key, inter, ik);
    STACK_OF(X509) *chain = sk_X509_new_null();
    sk_X509_push(chain, inter);
    const char *why = "";
    spiffe_id id;
    kb_err rc = x509svid_verify(f->set, leaf, chain, X509SVID_PURPOSE_SERVER, at, &id, &why);
    if (rc == KB_OK)
        why = "";
    else
        assert_int_equal(rc, KB_ERR_AUTH);
    snprintf(reason, sizeof(reason), "%s", why);

    /* A TLS stack hands over the whole peer chain, leaf first: same answer. */
    STACK_OF(X509) *full = sk_X509_new_null();
    sk_X509_push(full, leaf);
    sk_X509_push(full, inter);
    rc = x509svid_verify(f->set, leaf, full, X509SVID_PURPOSE_SERVER, at, &id, &why);
    assert_string_equal(rc == KB_OK ? "" : why, reason);
    sk_X509_free(full);

    sk_X509_free(chain);
    X509_free(inter);
    X509_free(leaf);
    EVP_PKEY_free(ik);
    return reason;
}

static void intermediates(void **state)
{
    fixture *f = *state;
    opts io = ca_opts("intermediate");
    assert_reason(verify_with_intermediate(f, &io, T0), "");

    io.ku = "critical,digitalSignature,cRLSign";
    assert_reason(verify_with_intermediate(f, &io, T0), "intermediate lacks keyCertSign");
    io.ku = NULL;
    assert_reason(verify_with_intermediate(f, &io, T0), "intermediate lacks keyCertSign");

    io = ca_opts("intermediate");
    io.bc = "critical,CA:FALSE";
    assert_reason(verify_with_intermediate(f, &io, T0), "intermediate is not a CA");
    io.bc = NULL;
    assert_reason(verify_with_intermediate(f, &io, T0), "intermediate is not a CA");

    io = ca_opts("intermediate");
    io.uri[0] = "spiffe://example.org/ca";
    assert_reason(verify_with_intermediate(f, &io, T0), "intermediate's SPIFFE ID has a path");

    io = ca_opts("intermediate");
    io.nb = -86400;
    io.na = -60; /* expired intermediate, valid leaf */
    assert_reason(verify_with_intermediate(f, &io, T0), "certificate expired");

    /* Without the intermediate the leaf does not chain. */
    io = ca_opts("intermediate");
    EVP_PKEY *ik = gen_key();
    X509 *inter = make_cert(&io, ik, f->root, f->root_key);
    opts lo = leaf_opts();
    X509 *leaf = make_cert(&lo, f->leaf_key, inter, ik);
    const char *why;
    assert_kb(x509svid_verify(f->set, leaf, NULL, X509SVID_PURPOSE_SERVER, T0, NULL, &why),
              KB_ERR_AUTH);
    assert_reason(why, "chain does not verify: unable to get local issuer certificate");
    X509_free(inter);
    X509_free(leaf);
    EVP_PKEY_free(ik);
}

static void chain_to_another_root(void **state)
{
    fixture *f = *state;
    opts o = leaf_opts();
    const char *why;

    /* Issued by a root the bundle does not hold. */
    X509 *leaf = make_cert(&o, f->leaf_key, f->other_root, f->other_key);
    assert_kb(x509svid_verify(f->set, leaf, NULL, X509SVID_PURPOSE_CLIENT, T0, NULL, &why),
              KB_ERR_AUTH);
    assert_reason(why, "chain does not verify: unable to get local issuer certificate");
    X509_free(leaf);

    /* An impostor root with the same name as the trusted one: the signature does not check. */
    EVP_PKEY *evil_key = gen_key();
    opts r = ca_opts("root");
    X509 *evil = make_cert(&r, evil_key, NULL, NULL);
    leaf = make_cert(&o, f->leaf_key, evil, evil_key);
    assert_kb(x509svid_verify(f->set, leaf, NULL, X509SVID_PURPOSE_CLIENT, T0, NULL, &why),
              KB_ERR_AUTH);
    assert_non_null(strstr(why, "chain does not verify: "));
    X509_free(leaf);
    X509_free(evil);
    EVP_PKEY_free(evil_key);

    /* A self-signed "leaf" is not trusted by being well-formed. */
    leaf = make_cert(&o, f->leaf_key, NULL, NULL);
    assert_kb(x509svid_verify(f->set, leaf, NULL, X509SVID_PURPOSE_CLIENT, T0, NULL, &why),
              KB_ERR_AUTH);
    assert_non_null(strstr(why, "chain does not verify: "));
    X509_free(leaf);
}

static void null_and_limits(void **state)
{
    fixture *f = *state;
    const char *why;
    spiffe_id id;
    opts o = leaf_opts();
    X509 *leaf = make_cert(&o, f->leaf_key, f->root, f->root_key);
    assert_kb(x509svid_verify(NULL, leaf, NULL, 0, T0, &id, &why), KB_ERR_NULL);
    assert_kb(x509svid_verify(f->set, NULL, NULL, 0, T0, &id, &why), KB_ERR_NULL);
    assert_kb(x509svid_check_leaf(NULL, 0, &id, &why), KB_ERR_NULL);
    assert_kb(x509svid_check_signing(NULL, &why), KB_ERR_NULL);
    /* why and out_id are optional */
    assert_ok(x509svid_verify(f->set, leaf, NULL, X509SVID_PURPOSE_CLIENT, T0, NULL, NULL));

    STACK_OF(X509) *chain = sk_X509_new_null();
    for (int i = 0; i < X509SVID_CHAIN_MAX + 1; i++)
        sk_X509_push(chain, f->root);
    assert_kb(x509svid_verify(f->set, leaf, chain, 0, T0, &id, &why), KB_ERR_AUTH);
    assert_reason(why, "chain has too many certificates");
    sk_X509_free(chain);
    X509_free(leaf);
}

/* ---- PEM loading and the go-spiffe vectors -------------------------------------------------- */

static char *vec_path(const char *name)
{
    static char p[1024];
    snprintf(p, sizeof(p), "%s/spiffe/x509svid/%s", kbtest_testdata(), name);
    return p;
}

static kb_err parse_vec(const char *certs, const char *key, x509svid **out, const char **why)
{
    kb_dbuf c, k;
    kb_dbuf_init(&c, X509SVID_PEM_MAX);
    kb_dbuf_init(&k, X509SVID_PEM_MAX);
    assert_ok(kb_file_read(vec_path(certs), c.max, &c));
    if (key)
        assert_ok(kb_file_read(vec_path(key), k.max, &k));
    kb_err rc = x509svid_parse_pem(c.p, c.len, key ? k.p : NULL, k.len, out, why);
    kb_dbuf_free(&c);
    kb_dbuf_free(&k);
    return rc;
}

static void vectors_good(void **state)
{
    (void)state;
    x509svid *s;
    const char *why;

    assert_ok(parse_vec("good-leaf-only.pem", NULL, &s, &why));
    assert_string_equal(spiffe_id_str(x509svid_id(s)), "spiffe://example.org/workload-1");
    assert_int_equal(sk_X509_num(x509svid_intermediates(s)), 0);
    assert_null(x509svid_key(s));
    x509svid_free(s);

    assert_ok(parse_vec("good-leaf-and-intermediate.pem", NULL, &s, &why));
    assert_string_equal(spiffe_id_str(x509svid_id(s)), "spiffe://example.org/workload-1");
    assert_int_equal(sk_X509_num(x509svid_intermediates(s)), 1);
    x509svid_free(s);

    const char *with_key[] = {"good-cert-and-key.pem", "good-key-and-cert.pem"};
    for (size_t i = 0; i < 2; i++) {
        assert_ok(parse_vec(with_key[i], NULL, &s, &why));
        assert_non_null(x509svid_key(s));
        assert_string_equal(spiffe_id_str(x509svid_id(s)), "spiffe://example.org/workload-1");
        x509svid_free(s);
    }

    /* Separate key files: PKCS#8 EC and RSA, each with its own certificate. */
    assert_ok(parse_vec("good-leaf-and-intermediate.pem", "key-pkcs8-ecdsa.pem", &s, &why));
    assert_true(EVP_PKEY_is_a(x509svid_key(s), "EC"));
    x509svid_free(s);
    assert_ok(parse_vec("good-leaf-only.pem", "key-pkcs8-rsa.pem", &s, &why));
    assert_true(EVP_PKEY_is_a(x509svid_key(s), "RSA"));
    x509svid_free(s);
}

static void vectors_wrong(void **state)
{
    (void)state;
    static const struct {
        const char *certs, *key, *why;
        kb_err rc;
    } cases[] = {
        {"wrong-leaf-ca-true.pem", NULL, "leaf is a CA", KB_ERR_AUTH},
        {"wrong-leaf-cert-sign.pem", NULL, "leaf has keyCertSign", KB_ERR_AUTH},
        {"wrong-leaf-crl-sign.pem", NULL, "leaf has cRLSign", KB_ERR_AUTH},
        {"wrong-leaf-empty-id.pem", NULL, "no URI SAN", KB_ERR_AUTH},
        {"wrong-leaf-no-digital-signature.pem", NULL, "leaf lacks digitalSignature", KB_ERR_AUTH},
        {"wrong-intermediate-no-ca.pem", NULL, "intermediate is not a CA", KB_ERR_AUTH},
        {"wrong-intermediate-no-key-cert-sign.pem", NULL, "intermediate lacks keyCertSign",
         KB_ERR_AUTH},
        {"corrupt-cert.pem", NULL, "PEM certificate is not valid DER", KB_ERR_INVALID},
        {"corrupt-key.pem", NULL, "PEM private key is not valid", KB_ERR_INVALID},
        {"good-leaf-only.pem", "corrupt-key.pem", "PEM private key is not valid", KB_ERR_INVALID},
        {"not-pem", NULL, "no PEM certificate found", KB_ERR_INVALID},
        {"good-leaf-only.pem", "not-pem", "no PEM private key found", KB_ERR_INVALID},
        {"key-pkcs8-ecdsa.pem", NULL, "no PEM certificate found", KB_ERR_INVALID},
        {"good-leaf-only.pem", "key-pkcs8-ecdsa.pem", "private key does not match the leaf",
         KB_ERR_AUTH},
        {"good-leaf-and-intermediate.pem", "key-pkcs8-rsa.pem",
         "private key does not match the leaf", KB_ERR_AUTH},
        {"good-cert-and-key.pem", "key-pkcs8-ecdsa.pem", "more than one private key",
         KB_ERR_INVALID},
        {"good-leaf-only.pem", "good-leaf-only.pem", "key input has a certificate", KB_ERR_INVALID},
    };
    for (size_t i = 0; i < KB_ARRAY_LEN(cases); i++) {
        x509svid *s = (x509svid *)1;
        const char *why = NULL;
        kb_err rc = parse_vec(cases[i].certs, cases[i].key, &s, &why);
        if (rc != cases[i].rc || why == NULL || strcmp(why, cases[i].why) != 0)
            fail_msg("%s + %s: got %s '%s', want %s '%s'", cases[i].certs,
                     cases[i].key ? cases[i].key : "-", kb_err_str(rc), why ? why : "(null)",
                     kb_err_str(cases[i].rc), cases[i].why);
        assert_null(s);
    }
}

/* The vectors carry no root, but good-leaf-and-intermediate's intermediate can anchor a bundle
 * (every bundle entry is an authority): verify at a time inside, then past, its one-hour window. */
static void vectors_chain_with_fixed_time(void **state)
{
    (void)state;
    x509svid *s;
    const char *why;
    spiffe_bundle_set *set;
    spiffe_bundle *b;
    spiffe_id id;
    assert_ok(parse_vec("good-leaf-and-intermediate.pem", NULL, &s, &why));
    assert_ok(spiffe_bundle_set_new(&set));
    assert_ok(spiffe_bundle_new("example.org", &b));
    assert_ok(spiffe_bundle_add_x509_root(b, sk_X509_value(x509svid_intermediates(s), 0)));
    assert_ok(spiffe_bundle_set_put(set, b));

    time_t inside = 1585060200; /* 2020-03-24T14:30:00Z; leaf valid 14:07:30-15:07:40 */
    assert_ok(x509svid_verify(set, x509svid_leaf(s), x509svid_intermediates(s),
                              X509SVID_PURPOSE_CLIENT, inside, &id, &why));
    assert_string_equal(spiffe_id_str(&id), "spiffe://example.org/workload-1");
    assert_kb(x509svid_verify(set, x509svid_leaf(s), x509svid_intermediates(s),
                              X509SVID_PURPOSE_CLIENT, inside + 3600, &id, &why),
              KB_ERR_AUTH);
    assert_reason(why, "certificate expired");
    assert_kb(x509svid_verify(set, x509svid_leaf(s), NULL, X509SVID_PURPOSE_CLIENT, 0, &id, &why),
              KB_ERR_AUTH);
    assert_reason(why, "certificate expired");
    assert_kb(x509svid_verify(set, x509svid_leaf(s), NULL, X509SVID_PURPOSE_CLIENT, inside - 3600,
                              &id, &why),
              KB_ERR_AUTH);
    assert_reason(why, "certificate not yet valid");

    spiffe_bundle_set_free(set);
    x509svid_free(s);
}

static char *pem_of(X509 *cert, EVP_PKEY *key, int format)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (cert)
        assert_int_equal(PEM_write_bio_X509(bio, cert), 1);
    if (key && format == 1) /* SEC1 "EC PRIVATE KEY" */
        assert_int_equal(PEM_write_bio_PrivateKey_traditional(bio, key, NULL, NULL, 0, NULL, NULL),
                         1);
    else if (key && format == 2) /* encrypted PKCS#8 */
        assert_int_equal(
            PEM_write_bio_PKCS8PrivateKey(bio, key, EVP_aes_128_cbc(), "pw", 2, NULL, NULL), 1);
    else if (key)
        assert_int_equal(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    char *out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

/* keybridge-ca's dir: layout: DIR/current -> .gen-N and DIR/svid.{pem,key} -> current/...;
 * x509svid_load resolves `current` once so the pair always comes from one generation. */
static void generation_links_read_one_set(void **state)
{
    fixture *f = *state;
    opts o = leaf_opts();
    EVP_PKEY *k2 = gen_key();
    X509 *l1 = make_cert(&o, f->leaf_key, f->root, f->root_key);
    X509 *l2 = make_cert(&o, k2, f->root, f->root_key);
    char *dir = kbtest_tmpdir(), p[600], q[600];
    x509svid *s = NULL;
    const char *why;

    for (int g = 1; g <= 2; g++) {
        char *c = pem_of(g == 1 ? l1 : l2, NULL, 0),
             *k = pem_of(NULL, g == 1 ? f->leaf_key : k2, 0);
        snprintf(p, sizeof(p), "%s/.gen-%d", dir, g);
        assert_int_equal(mkdir(p, 0700), 0);
        snprintf(p, sizeof(p), "%s/.gen-%d/svid.pem", dir, g);
        assert_ok(kb_file_write_atomic(p, c, strlen(c), 0600));
        snprintf(p, sizeof(p), "%s/.gen-%d/svid.key", dir, g);
        assert_ok(kb_file_write_atomic(p, k, strlen(k), 0600));
        free(c);
        free(k);
    }
    snprintf(p, sizeof(p), "%s/current", dir);
    assert_int_equal(symlink(".gen-2", p), 0);
    snprintf(p, sizeof(p), "%s/svid.pem", dir);
    assert_int_equal(symlink("current/svid.pem", p), 0);
    snprintf(q, sizeof(q), "%s/svid.key", dir);
    assert_int_equal(symlink("current/svid.key", q), 0);
    assert_ok(x509svid_load(p, q, &s, &why));
    assert_int_equal(EVP_PKEY_eq(x509svid_key(s), k2), 1);
    x509svid_free(s);
    /* a `current` that leaves the directory is not used for pinning; the by-path read then
     * follows the links as the kernel resolves them (here: to nothing) */
    snprintf(p, sizeof(p), "%s/current", dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(symlink("../elsewhere", p), 0);
    snprintf(p, sizeof(p), "%s/svid.pem", dir);
    assert_kb(x509svid_load(p, q, &s, &why), KB_ERR_IO);
    assert_null(s);
    X509_free(l1);
    X509_free(l2);
    EVP_PKEY_free(k2);
    free(dir);
}

static void pem_key_formats_and_files(void **state)
{
    fixture *f = *state;
    opts o = leaf_opts();
    X509 *leaf = make_cert(&o, f->leaf_key, f->root, f->root_key);
    char *cert_pem = pem_of(leaf, NULL, 0);
    char *root_pem = pem_of(f->root, NULL, 0);
    x509svid *s;
    const char *why;

    for (int fmt = 0; fmt < 2; fmt++) { /* PKCS#8, SEC1 */
        char *key_pem = pem_of(NULL, f->leaf_key, fmt);
        assert_ok(
            x509svid_parse_pem(cert_pem, strlen(cert_pem), key_pem, strlen(key_pem), &s, &why));
        assert_int_equal(EVP_PKEY_eq(x509svid_key(s), f->leaf_key), 1);
        x509svid_free(s);
        free(key_pem);
    }
    char *enc = pem_of(NULL, f->leaf_key, 2);
    assert_kb(x509svid_parse_pem(cert_pem, strlen(cert_pem), enc, strlen(enc), &s, &why),
              KB_ERR_INVALID);
    assert_reason(why, "encrypted private keys are not supported");
    free(enc);

    /* Chain order: the leaf comes first. A root first is read as a leaf with a root ID. */
    kb_dbuf both;
    kb_dbuf_init(&both, 1 << 20);
    assert_ok(kb_dbuf_addstr(&both, root_pem));
    assert_ok(kb_dbuf_addstr(&both, cert_pem));
    assert_kb(x509svid_parse_pem(both.p, both.len, NULL, 0, &s, &why), KB_ERR_AUTH);
    assert_reason(why, "SPIFFE ID has no path (a trust domain ID is not a workload ID)");
    kb_dbuf_free(&both);

    /* Other PEM types and truncation. */
    const char *csr = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE "
                      "REQUEST-----\n";
    assert_kb(x509svid_parse_pem(csr, strlen(csr), NULL, 0, &s, &why), KB_ERR_INVALID);
    assert_reason(why, "unexpected PEM block type");
    size_t half = strlen(cert_pem) / 2;
    assert_kb(x509svid_parse_pem(cert_pem, half, NULL, 0, &s, &why), KB_ERR_INVALID);
    assert_kb(x509svid_parse_pem(cert_pem, X509SVID_PEM_MAX + 1, NULL, 0, &s, &why),
              KB_ERR_TOO_LARGE);
    assert_kb(x509svid_parse_pem(NULL, 0, NULL, 0, &s, &why), KB_ERR_INVALID);
    assert_kb(x509svid_parse_pem(cert_pem, strlen(cert_pem), NULL, 0, NULL, &why), KB_ERR_NULL);

    /* Too many certificates. */
    kb_dbuf many;
    kb_dbuf_init(&many, 1 << 20);
    assert_ok(kb_dbuf_addstr(&many, cert_pem));
    for (int i = 0; i < X509SVID_CHAIN_MAX; i++)
        assert_ok(kb_dbuf_addstr(&many, root_pem));
    assert_kb(x509svid_parse_pem(many.p, many.len, NULL, 0, &s, &why), KB_ERR_TOO_LARGE);
    assert_reason(why, "chain has too many certificates");
    kb_dbuf_free(&many);

    /* Files: the key file must be private. */
    char *dir = kbtest_tmpdir();
    char cpath[512], kpath[512];
    snprintf(cpath, sizeof(cpath), "%s/svid.pem", dir);
    snprintf(kpath, sizeof(kpath), "%s/svid.key", dir);
    char *key_pem = pem_of(NULL, f->leaf_key, 0);
    assert_ok(kb_file_write_atomic(cpath, cert_pem, strlen(cert_pem), 0644));
    assert_ok(kb_file_write_atomic(kpath, key_pem, strlen(key_pem), 0600));
    assert_ok(x509svid_load(cpath, kpath, &s, &why));
    assert_non_null(x509svid_key(s));
    assert_string_equal(spiffe_id_str(x509svid_id(s)), o.uri[0]);
    /* What we load verifies like any peer. */
    assert_ok(x509svid_verify(f->set, x509svid_leaf(s), x509svid_intermediates(s),
                              X509SVID_PURPOSE_SERVER, T0, NULL, &why));
    x509svid_free(s);
    assert_ok(x509svid_load(cpath, NULL, &s, &why));
    assert_null(x509svid_key(s));
    x509svid_free(s);
    assert_int_equal(chmod(kpath, 0640), 0);
    assert_kb(x509svid_load(cpath, kpath, &s, &why), KB_ERR_CONFIG);
    assert_null(s);
    char missing[600];
    snprintf(missing, sizeof(missing), "%s/nope.pem", dir);
    assert_kb(x509svid_load(missing, NULL, &s, &why), KB_ERR_IO);
    unlink(cpath);
    unlink(kpath);
    rmdir(dir);
    free(dir);
    free(key_pem);

    free(cert_pem);
    free(root_pem);
    X509_free(leaf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(good_leaf_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(validity_window, setup, teardown),
        cmocka_unit_test_setup_teardown(now_is_the_default_time, setup, teardown),
        cmocka_unit_test_setup_teardown(san_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(trust_domain_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(basic_constraints_and_key_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(extended_key_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(intermediates, setup, teardown),
        cmocka_unit_test_setup_teardown(chain_to_another_root, setup, teardown),
        cmocka_unit_test_setup_teardown(null_and_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(vectors_good, setup, teardown),
        cmocka_unit_test_setup_teardown(vectors_wrong, setup, teardown),
        cmocka_unit_test_setup_teardown(vectors_chain_with_fixed_time, setup, teardown),
        cmocka_unit_test_setup_teardown(generation_links_read_one_set, setup, teardown),
        cmocka_unit_test_setup_teardown(pem_key_formats_and_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
