/* test_spiffe_bundle.c - SPIFFE bundles: the go-spiffe vectors, every format rule, JWKS and PEM
 * round trips, sequence ordering, bundle sets. */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "kbtest.h"
#include "lib/buf.h"
#include "lib/err.h"
#include "lib/fileio.h"
#include "lib/json.h"
#include "lib/spiffe_bundle.h"
#include "lib/x509svid.h"

#define T0 ((time_t)1700000000)

static char *vec(const char *name)
{
    static char p[1024];
    snprintf(p, sizeof(p), "%s/spiffe/spiffebundle/%s", kbtest_testdata(), name);
    return p;
}

/* A CA (or, with ca = 0, a leaf for spiffe://example.org/w) certificate for key. */
static X509 *make_cert(EVP_PKEY *key, int ca, X509 *issuer, EVP_PKEY *issuer_key)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), ca ? 1 : 2);
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)(ca ? "ca" : "w"), -1,
                               -1, 0);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_NAME_free(n);
    ASN1_TIME_set(X509_getm_notBefore(x), T0 - 3600);
    ASN1_TIME_set(X509_getm_notAfter(x), T0 + 3600);
    X509_set_pubkey(x, key);
    const char *ext[][2] = {
        {"basicConstraints", ca ? "critical,CA:TRUE" : "critical,CA:FALSE"},
        {"keyUsage", ca ? "critical,keyCertSign" : "critical,digitalSignature"},
        {"subjectAltName", ca ? "URI:spiffe://example.org" : "URI:spiffe://example.org/w"},
    };
    for (size_t i = 0; i < KB_ARRAY_LEN(ext); i++) {
        X509V3_CTX c;
        X509V3_set_ctx(&c, issuer ? issuer : x, x, NULL, NULL, 0);
        X509_EXTENSION *e = X509V3_EXT_nconf(NULL, &c, ext[i][0], ext[i][1]);
        assert_non_null(e);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

static kb_err parse_json(json_t *doc, spiffe_bundle **b, const char **why)
{
    char *s = json_dumps(doc, JSON_COMPACT);
    assert_non_null(s);
    kb_err rc = spiffe_bundle_parse_jwks("example.org", s, strlen(s), b, why);
    kb_json_free_str(s); /* allocated through kb_json_init's hooks */
    return rc;
}

#define assert_reason(got, want)                                                                   \
    do {                                                                                           \
        const char *g__ = (got);                                                                   \
        if (g__ == NULL || strcmp(g__, (want)) != 0)                                               \
            fail_msg("reason '%s', want '%s'", g__ ? g__ : "(null)", (want));                      \
    } while (0)

/* ---- vectors -------------------------------------------------------------------------------- */

static void vectors(void **state)
{
    (void)state;
    spiffe_bundle *b;
    const char *why;

    assert_ok(spiffe_bundle_load_file("example.org", vec("spiffebundle_valid_1.json"), &b, &why));
    assert_string_equal(spiffe_bundle_trust_domain(b), "example.org");
    assert_int_equal(spiffe_bundle_x509_count(b), 1);
    assert_int_equal(spiffe_bundle_jwt_count(b), 1);
    assert_non_null(spiffe_bundle_jwt_key(b, "C6vs25welZOx6WksNYfbMfiw9l96pMnD"));
    assert_null(spiffe_bundle_jwt_key(b, "nope"));
    assert_false(spiffe_bundle_has_sequence(b));
    assert_int_equal(spiffe_bundle_refresh_hint(b), -1);
    /* The root is the P-384 CA whose key the JWK's x/y carry (checked on parse). */
    assert_int_equal(EVP_PKEY_get_bits(X509_get0_pubkey(spiffe_bundle_x509_root(b, 0))), 384);
    assert_null(spiffe_bundle_x509_root(b, 1));
    spiffe_bundle_free(b);

    assert_ok(spiffe_bundle_load_file("example.org", vec("spiffebundle_valid_2.json"), &b, &why));
    assert_int_equal(spiffe_bundle_x509_count(b), 1);
    assert_int_equal(spiffe_bundle_jwt_count(b), 6);
    assert_true(spiffe_bundle_has_sequence(b));
    assert_int_equal(spiffe_bundle_sequence(b), 1);
    assert_int_equal(spiffe_bundle_refresh_hint(b), 60);
    spiffe_bundle_free(b);

    /* Unknown `use` values ("wit-svid") are ignored (Trust Domain and Bundle 4.2.2). */
    assert_ok(
        spiffe_bundle_load_file("example.org", vec("spiffebundle_valid_with_wit.json"), &b, &why));
    assert_int_equal(spiffe_bundle_x509_count(b), 1);
    assert_int_equal(spiffe_bundle_jwt_count(b), 2);
    assert_null(spiffe_bundle_jwt_key(b, "uNhqAaPI7NDn7IHOsa2ac1BF4O5qGxjZ"));
    spiffe_bundle_free(b);

    static const struct {
        const char *file, *why;
    } bad[] = {
        {"spiffebundle_missing_kid.json", "jwt-svid entry has no 'kid'"},
        {"spiffebundle_no_keys.json", "bundle has no 'keys' member"},
        {"spiffebundle_multiple_x509.json",
         "x509-svid entry must have exactly one certificate in 'x5c'"},
    };
    for (size_t i = 0; i < KB_ARRAY_LEN(bad); i++) {
        b = (spiffe_bundle *)1;
        why = NULL;
        assert_kb(spiffe_bundle_load_file("example.org", vec(bad[i].file), &b, &why),
                  KB_ERR_INVALID);
        assert_reason(why, bad[i].why);
        assert_null(b);
    }

    assert_kb(spiffe_bundle_load_file("example.org", vec("does-not-exist.json"), &b, &why),
              KB_ERR_IO);
    assert_kb(spiffe_bundle_load_file("Example.org", vec("spiffebundle_valid_1.json"), &b, &why),
              KB_ERR_INVALID);
    assert_non_null(strstr(why, "uppercase"));
}

/* ---- format rules --------------------------------------------------------------------------- */

typedef struct {
    EVP_PKEY *k1, *k2;
    X509 *root;
    json_t *good; /* a good document: one x509-svid entry, one jwt-svid entry */
} fixture;

static json_t *load_good_doc(fixture *f)
{
    spiffe_bundle *b;
    kb_dbuf out;
    assert_ok(spiffe_bundle_new("example.org", &b));
    assert_ok(spiffe_bundle_add_x509_root(b, f->root));
    assert_ok(spiffe_bundle_add_jwt_key(b, "kid-1", f->k2));
    kb_dbuf_init(&out, SPIFFE_BUNDLE_MAX);
    assert_ok(spiffe_bundle_to_jwks(b, &out));
    json_error_t je;
    json_t *doc = json_loadb((const char *)out.p, out.len, 0, &je);
    assert_non_null(doc);
    kb_dbuf_free(&out);
    spiffe_bundle_free(b);
    return doc;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    f->k1 = EVP_EC_gen("P-256");
    f->k2 = EVP_EC_gen("P-256");
    f->root = make_cert(f->k1, 1, NULL, NULL);
    f->good = load_good_doc(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    json_decref(f->good);
    X509_free(f->root);
    EVP_PKEY_free(f->k1);
    EVP_PKEY_free(f->k2);
    free(f);
    return 0;
}

static json_t *entry(json_t *doc, size_t i)
{
    return json_array_get(json_object_get(doc, "keys"), i);
}

/* Parse a copy of f->good after mutate(); expect failure with code and reason. */
static void expect_bad(json_t *doc, kb_err code, const char *reason)
{
    spiffe_bundle *b = (spiffe_bundle *)1;
    const char *why = NULL;
    kb_err rc = parse_json(doc, &b, &why);
    if (rc != code)
        fail_msg("got %s (%s), want %s (%s)", kb_err_str(rc), why ? why : "-", kb_err_str(code),
                 reason);
    assert_reason(why, reason);
    assert_null(b);
    json_decref(doc);
}

static void good_document_parses(void **state)
{
    fixture *f = *state;
    spiffe_bundle *b;
    const char *why;
    assert_ok(parse_json(f->good, &b, &why));
    assert_int_equal(spiffe_bundle_x509_count(b), 1);
    assert_int_equal(X509_cmp(spiffe_bundle_x509_root(b, 0), f->root), 0);
    assert_int_equal(EVP_PKEY_eq(spiffe_bundle_jwt_key(b, "kid-1"), f->k2), 1);
    spiffe_bundle_free(b);

    /* Unknown members, and unknown `use` entries however malformed, are ignored. */
    json_t *d = json_deep_copy(f->good);
    json_object_set_new(d, "future_member", json_true());
    json_array_append_new(json_object_get(d, "keys"),
                          json_pack("{s:s, s:i}", "use", "future-svid", "x5c", 7));
    json_object_set_new(entry(d, 0), "x5t", json_string("ignored"));
    assert_ok(parse_json(d, &b, &why));
    assert_int_equal(spiffe_bundle_x509_count(b) + spiffe_bundle_jwt_count(b), 2);
    spiffe_bundle_free(b);
    json_decref(d);

    /* An empty key set is a valid bundle that trusts nothing. */
    d = json_pack("{s:[]}", "keys");
    assert_ok(parse_json(d, &b, &why));
    assert_int_equal(spiffe_bundle_x509_count(b), 0);
    spiffe_bundle_free(b);
    json_decref(d);

    /* An x509-svid entry without key members is accepted on its certificate alone. */
    d = json_deep_copy(f->good);
    json_object_del(entry(d, 0), "x");
    json_object_del(entry(d, 0), "y");
    json_object_del(entry(d, 0), "crv");
    json_object_set_new(entry(d, 0), "kty", json_string("OKP"));
    assert_ok(parse_json(d, &b, &why));
    spiffe_bundle_free(b);
    json_decref(d);
}

static void document_rules(void **state)
{
    fixture *f = *state;
    const char *why;
    spiffe_bundle *b;

    const char *notjson = "{\"keys\": [";
    assert_kb(spiffe_bundle_parse_jwks("example.org", notjson, strlen(notjson), &b, &why),
              KB_ERR_INVALID);
    assert_reason(why, "bundle document is not a JSON object");
    const char *arr = "[]";
    assert_kb(spiffe_bundle_parse_jwks("example.org", arr, 2, &b, &why), KB_ERR_INVALID);
    assert_reason(why, "bundle document is not a JSON object");
    assert_kb(spiffe_bundle_parse_jwks("example.org", "", 0, &b, &why), KB_ERR_INVALID);
    const char *dup = "{\"keys\":[],\"keys\":[]}";
    assert_kb(spiffe_bundle_parse_jwks("example.org", dup, strlen(dup), &b, &why), KB_ERR_INVALID);

    expect_bad(json_pack("{s:{}}", "keys"), KB_ERR_INVALID, "bundle 'keys' is not an array");
    expect_bad(json_pack("{s:[i]}", "keys", 1), KB_ERR_INVALID, "bundle key is not a JSON object");
    expect_bad(json_pack("{s:[{s:s}]}", "keys", "kty", "EC"), KB_ERR_INVALID,
               "bundle key has no 'use' string");
    expect_bad(json_pack("{s:[{s:i}]}", "keys", "use", 1), KB_ERR_INVALID,
               "bundle key has no 'use' string");

    json_t *d = json_deep_copy(f->good);
    json_object_set_new(d, "spiffe_sequence", json_integer(-1));
    expect_bad(d, KB_ERR_INVALID, "'spiffe_sequence' is not a non-negative integer");
    d = json_deep_copy(f->good);
    json_object_set_new(d, "spiffe_sequence", json_string("1"));
    expect_bad(d, KB_ERR_INVALID, "'spiffe_sequence' is not a non-negative integer");
    d = json_deep_copy(f->good);
    json_object_set_new(d, "spiffe_sequence", json_real(1.5));
    expect_bad(d, KB_ERR_INVALID, "'spiffe_sequence' is not a non-negative integer");
    d = json_deep_copy(f->good);
    json_object_set_new(d, "spiffe_refresh_hint", json_integer(-60));
    expect_bad(d, KB_ERR_INVALID, "'spiffe_refresh_hint' is not a non-negative integer");
    d = json_deep_copy(f->good);
    json_object_set_new(d, "spiffe_refresh_hint", json_null());
    expect_bad(d, KB_ERR_INVALID, "'spiffe_refresh_hint' is not a non-negative integer");

    /* Limits: keys count and document size. */
    d = json_pack("{s:[]}", "keys");
    for (size_t i = 0; i < SPIFFE_BUNDLE_KEYS_MAX + 1; i++)
        json_array_append_new(json_object_get(d, "keys"), json_pack("{s:s}", "use", "other"));
    expect_bad(d, KB_ERR_TOO_LARGE, "bundle has too many keys");
    d = json_pack("{s:[]}", "keys");
    for (size_t i = 0; i < SPIFFE_BUNDLE_KEYS_MAX; i++)
        json_array_append_new(json_object_get(d, "keys"), json_pack("{s:s}", "use", "other"));
    assert_ok(parse_json(d, &b, &why)); /* exactly at the limit */
    spiffe_bundle_free(b);
    json_decref(d);

    char *big = malloc(SPIFFE_BUNDLE_MAX + 2);
    memset(big, ' ', SPIFFE_BUNDLE_MAX + 1);
    memcpy(big, "{\"keys\":[]}", 11);
    assert_ok(spiffe_bundle_parse_jwks("example.org", big, SPIFFE_BUNDLE_MAX, &b, &why));
    spiffe_bundle_free(b);
    assert_kb(spiffe_bundle_parse_jwks("example.org", big, SPIFFE_BUNDLE_MAX + 1, &b, &why),
              KB_ERR_TOO_LARGE);
    assert_reason(why, "bundle document is larger than 1 MiB");
    free(big);

    assert_kb(spiffe_bundle_parse_jwks(NULL, "{}", 2, &b, &why), KB_ERR_NULL);
    assert_kb(spiffe_bundle_parse_jwks("example.org", "{}", 2, NULL, &why), KB_ERR_NULL);
    assert_kb(spiffe_bundle_parse_jwks("a:1", "{}", 2, &b, &why), KB_ERR_INVALID);
}

static void x509_entry_rules(void **state)
{
    fixture *f = *state;
    json_t *d;

    d = json_deep_copy(f->good);
    json_object_del(entry(d, 0), "kty");
    expect_bad(d, KB_ERR_INVALID, "bundle key has no 'kty' string");
    d = json_deep_copy(f->good);
    json_object_del(entry(d, 0), "x5c");
    expect_bad(d, KB_ERR_INVALID, "x509-svid entry has no 'x5c' array");
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 0), "x5c", json_string("MIIB"));
    expect_bad(d, KB_ERR_INVALID, "x509-svid entry has no 'x5c' array");
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 0), "x5c", json_array());
    expect_bad(d, KB_ERR_INVALID, "x509-svid entry must have exactly one certificate in 'x5c'");
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 0), "x5c", json_pack("[i]", 1));
    expect_bad(d, KB_ERR_INVALID, "x509-svid 'x5c' certificate is not a string");

    /* base64: the standard alphabet with padding, nothing else (RFC 7517 4.7). */
    const char *bad64[] = {"",     "MII",  "MIIB===",   "MI=B",    "MII-",
                           "MII_", "MI B", "MIIBCg=\n", "MIIBCh=="};
    for (size_t i = 0; i < KB_ARRAY_LEN(bad64); i++) {
        d = json_deep_copy(f->good);
        json_object_set_new(entry(d, 0), "x5c", json_pack("[s]", bad64[i]));
        expect_bad(d, KB_ERR_INVALID, "x509-svid 'x5c' certificate is not valid base64");
    }
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 0), "x5c", json_pack("[s]", "AAAA"));
    expect_bad(d, KB_ERR_INVALID, "x509-svid 'x5c' certificate is not a valid DER certificate");

    /* DER with a byte after the certificate, and a truncated one. */
    unsigned char *der = NULL;
    int dl = i2d_X509(f->root, &der);
    for (int variant = 0; variant < 2; variant++) {
        unsigned char *buf = malloc((size_t)dl + 1);
        memcpy(buf, der, (size_t)dl);
        buf[dl] = 0;
        int len = variant == 0 ? dl + 1 : dl - 1;
        char *b64 = malloc((size_t)len * 2 + 8);
        EVP_EncodeBlock((unsigned char *)b64, buf, len);
        d = json_deep_copy(f->good);
        json_object_set_new(entry(d, 0), "x5c", json_pack("[s]", b64));
        expect_bad(d, KB_ERR_INVALID, "x509-svid 'x5c' certificate is not a valid DER certificate");
        free(b64);
        free(buf);
    }
    OPENSSL_free(der);

    /* The JWK's own key must be the certificate's (RFC 7517 4.7). */
    json_t *jwt = entry(f->good, 1);
    d = json_deep_copy(f->good);
    json_object_set(entry(d, 0), "x", json_object_get(jwt, "x"));
    json_object_set(entry(d, 0), "y", json_object_get(jwt, "y"));
    expect_bad(d, KB_ERR_INVALID, "x509-svid entry key does not match its certificate");
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 0), "kty", json_string("RSA"));
    expect_bad(d, KB_ERR_INVALID, "RSA key 'n' or 'e' is missing or malformed");
    d = json_deep_copy(f->good);
    json_object_del(entry(d, 0), "y");
    expect_bad(d, KB_ERR_INVALID, "EC key 'x' or 'y' is missing or malformed");
}

static void jwt_entry_rules(void **state)
{
    fixture *f = *state;
    json_t *d;

    d = json_deep_copy(f->good);
    json_object_del(entry(d, 1), "kid");
    expect_bad(d, KB_ERR_INVALID, "jwt-svid entry has no 'kid'");
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 1), "kid", json_string(""));
    expect_bad(d, KB_ERR_INVALID, "jwt-svid entry has no 'kid'");
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 1), "kid", json_integer(5));
    expect_bad(d, KB_ERR_INVALID, "jwt-svid entry has no 'kid'");
    char longkid[300];
    memset(longkid, 'k', sizeof(longkid) - 1);
    longkid[sizeof(longkid) - 1] = '\0';
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 1), "kid", json_string(longkid));
    expect_bad(d, KB_ERR_INVALID, "jwt-svid entry 'kid' is too long or has a NUL");
    d = json_deep_copy(f->good);
    json_array_append(json_object_get(d, "keys"), entry(d, 1));
    expect_bad(d, KB_ERR_INVALID, "jwt-svid entries share a 'kid'");

    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 1), "kty", json_string("oct"));
    expect_bad(d, KB_ERR_INVALID, "jwt-svid entry has an unsupported 'kty' (EC or RSA)");
    d = json_deep_copy(f->good);
    json_object_del(entry(d, 1), "kty");
    expect_bad(d, KB_ERR_INVALID, "bundle key has no 'kty' string");
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 1), "crv", json_string("P-192"));
    expect_bad(d, KB_ERR_INVALID, "EC key has a missing or unsupported 'crv'");
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 1), "crv", json_string("P-384")); /* x, y are 32 bytes */
    expect_bad(d, KB_ERR_INVALID, "EC key 'x' or 'y' is missing or malformed");

    /* base64url: no padding, no standard alphabet. */
    const char *x = json_string_value(json_object_get(entry(f->good, 1), "x"));
    char padded[64];
    snprintf(padded, sizeof(padded), "%s=", x);
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 1), "x", json_string(padded));
    expect_bad(d, KB_ERR_INVALID, "EC key 'x' or 'y' is missing or malformed");

    /* A point off the curve: change the last byte of y (43 chars encode 32 bytes; the last char
     * carries 4 data bits, so bump a middle character instead). */
    char y[64];
    snprintf(y, sizeof(y), "%s", json_string_value(json_object_get(entry(f->good, 1), "y")));
    y[20] = (char)(y[20] == 'A' ? 'B' : 'A');
    d = json_deep_copy(f->good);
    json_object_set_new(entry(d, 1), "y", json_string(y));
    expect_bad(d, KB_ERR_INVALID, "EC key is not a valid point on its curve");
}

static void rsa_keys(void **state)
{
    (void)state;
    EVP_PKEY *small = EVP_RSA_gen(1024);
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    spiffe_bundle *b, *back;
    const char *why;
    kb_dbuf out;

    /* An RSA root and RSA JWT key round-trip with n/e members. */
    X509 *root = make_cert(rsa, 1, NULL, NULL);
    assert_ok(spiffe_bundle_new("example.org", &b));
    assert_ok(spiffe_bundle_add_x509_root(b, root));
    assert_ok(spiffe_bundle_add_jwt_key(b, "rsa", rsa));
    kb_dbuf_init(&out, SPIFFE_BUNDLE_MAX);
    assert_ok(spiffe_bundle_to_jwks(b, &out));
    assert_non_null(strstr(kb_dbuf_str(&out), "\"kty\":\"RSA\""));
    assert_non_null(strstr(kb_dbuf_str(&out), "\"e\":\"AQAB\""));
    assert_ok(spiffe_bundle_parse_jwks("example.org", out.p, out.len, &back, &why));
    assert_int_equal(EVP_PKEY_eq(spiffe_bundle_jwt_key(back, "rsa"), rsa), 1);
    assert_int_equal(X509_cmp(spiffe_bundle_x509_root(back, 0), root), 0);
    spiffe_bundle_free(back);
    spiffe_bundle_free(b);
    kb_dbuf_reset(&out);

    /* A short RSA JWT key is refused. */
    assert_ok(spiffe_bundle_new("example.org", &b));
    assert_ok(spiffe_bundle_add_jwt_key(b, "small", small));
    assert_ok(spiffe_bundle_to_jwks(b, &out));
    assert_kb(spiffe_bundle_parse_jwks("example.org", out.p, out.len, &back, &why), KB_ERR_INVALID);
    assert_reason(why, "RSA key is shorter than 2048 bits");
    spiffe_bundle_free(b);
    kb_dbuf_free(&out);
    X509_free(root);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(small);
}

/* ---- round trips, sequence, sets --------------------------------------------------------------
 */

static void jwks_round_trip(void **state)
{
    fixture *f = *state;
    spiffe_bundle *b, *back;
    const char *why;
    kb_dbuf out;
    EVP_PKEY *k384 = EVP_EC_gen("P-384");
    X509 *root2 = make_cert(k384, 1, NULL, NULL);

    assert_ok(spiffe_bundle_new("example.org", &b));
    assert_ok(spiffe_bundle_add_x509_root(b, f->root));
    assert_ok(spiffe_bundle_add_x509_root(b, f->root)); /* a duplicate is added once */
    assert_ok(spiffe_bundle_add_x509_root(b, root2));
    assert_ok(spiffe_bundle_add_jwt_key(b, "a", f->k2));
    assert_kb(spiffe_bundle_add_jwt_key(b, "a", f->k1), KB_ERR_EXISTS);
    assert_kb(spiffe_bundle_add_jwt_key(b, "", f->k1), KB_ERR_INVALID);
    assert_ok(spiffe_bundle_set_sequence(b, 42));
    assert_ok(spiffe_bundle_set_refresh_hint(b, 300));
    assert_kb(spiffe_bundle_set_refresh_hint(b, -1), KB_ERR_INVALID);
    assert_kb(spiffe_bundle_set_sequence(b, (uint64_t)INT64_MAX + 1), KB_ERR_TOO_LARGE);
    assert_int_equal(spiffe_bundle_x509_count(b), 2);

    kb_dbuf_init(&out, SPIFFE_BUNDLE_MAX);
    assert_ok(spiffe_bundle_to_jwks(b, &out));
    /* The published shape: use, kty/crv/x/y, x5c (X509-SVID.md 6.1: no kid on x509-svid). */
    json_error_t je;
    json_t *doc = json_loadb((const char *)out.p, out.len, 0, &je);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "spiffe_sequence")), 42);
    assert_int_equal(json_integer_value(json_object_get(doc, "spiffe_refresh_hint")), 300);
    json_t *e0 = entry(doc, 0);
    assert_string_equal(json_string_value(json_object_get(e0, "use")), "x509-svid");
    assert_string_equal(json_string_value(json_object_get(e0, "kty")), "EC");
    assert_string_equal(json_string_value(json_object_get(e0, "crv")), "P-256");
    assert_int_equal(json_string_length(json_object_get(e0, "x")), 43); /* 32 bytes, unpadded */
    assert_null(json_object_get(e0, "kid"));
    assert_int_equal(json_array_size(json_object_get(e0, "x5c")), 1);
    assert_string_equal(json_string_value(json_object_get(entry(doc, 1), "crv")), "P-384");
    assert_int_equal(json_string_length(json_object_get(entry(doc, 1), "x")), 64);
    json_t *e2 = entry(doc, 2);
    assert_string_equal(json_string_value(json_object_get(e2, "use")), "jwt-svid");
    assert_string_equal(json_string_value(json_object_get(e2, "kid")), "a");
    assert_null(json_object_get(e2, "x5c"));
    json_decref(doc);

    assert_ok(spiffe_bundle_parse("example.org", out.p, out.len, &back, &why));
    assert_int_equal(spiffe_bundle_x509_count(back), 2);
    assert_int_equal(X509_cmp(spiffe_bundle_x509_root(back, 0), f->root), 0);
    assert_int_equal(X509_cmp(spiffe_bundle_x509_root(back, 1), root2), 0);
    assert_int_equal(EVP_PKEY_eq(spiffe_bundle_jwt_key(back, "a"), f->k2), 1);
    assert_int_equal(spiffe_bundle_sequence(back), 42);
    assert_int_equal(spiffe_bundle_refresh_hint(back), 300);

    /* And it serializes to the same bytes again. */
    kb_dbuf again;
    kb_dbuf_init(&again, SPIFFE_BUNDLE_MAX);
    assert_ok(spiffe_bundle_to_jwks(back, &again));
    assert_int_equal(again.len, out.len);
    assert_memory_equal(again.p, out.p, out.len);
    kb_dbuf_free(&again);

    /* A root published this way anchors X509-SVID verification. */
    spiffe_bundle_set *set;
    EVP_PKEY *lk = EVP_EC_gen("P-256");
    X509 *leaf = make_cert(lk, 0, f->root, f->k1);
    spiffe_id id;
    assert_ok(spiffe_bundle_set_new(&set));
    assert_ok(spiffe_bundle_set_put(set, back));
    assert_ok(x509svid_verify(set, leaf, NULL, X509SVID_PURPOSE_CLIENT, T0, &id, &why));
    assert_string_equal(spiffe_id_str(&id), "spiffe://example.org/w");
    spiffe_bundle_set_free(set);
    X509_free(leaf);
    EVP_PKEY_free(lk);

    kb_dbuf_free(&out);
    spiffe_bundle_free(b);
    X509_free(root2);
    EVP_PKEY_free(k384);
}

static void pem_bundles(void **state)
{
    fixture *f = *state;
    spiffe_bundle *b, *back;
    const char *why;
    kb_dbuf pem;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *root2 = make_cert(k, 1, NULL, NULL);

    assert_ok(spiffe_bundle_new("example.org", &b));
    assert_ok(spiffe_bundle_add_x509_root(b, f->root));
    assert_ok(spiffe_bundle_add_x509_root(b, root2));
    kb_dbuf_init(&pem, SPIFFE_BUNDLE_MAX);
    assert_ok(spiffe_bundle_to_pem(b, &pem));
    assert_ok(spiffe_bundle_parse("example.org", pem.p, pem.len, &back, &why));
    assert_int_equal(spiffe_bundle_x509_count(back), 2);
    assert_int_equal(X509_cmp(spiffe_bundle_x509_root(back, 1), root2), 0);
    assert_false(spiffe_bundle_has_sequence(back));
    assert_int_equal(spiffe_bundle_jwt_count(back), 0);
    spiffe_bundle_free(back);

    /* Files, through the auto-detecting loader. */
    char *dir = kbtest_tmpdir();
    char path[512];
    snprintf(path, sizeof(path), "%s/bundle.pem", dir);
    assert_ok(kb_file_write_atomic(path, pem.p, pem.len, 0644));
    assert_ok(spiffe_bundle_load_file("example.org", path, &back, &why));
    assert_int_equal(spiffe_bundle_x509_count(back), 2);
    spiffe_bundle_free(back);
    unlink(path);
    rmdir(dir);
    free(dir);

    /* Truncated: the second block is cut. */
    assert_kb(spiffe_bundle_parse_pem("example.org", pem.p, pem.len - 40, &back, &why),
              KB_ERR_INVALID);
    assert_reason(why, "bundle has a malformed PEM block");
    assert_kb(spiffe_bundle_parse_pem("example.org", "hello", 5, &back, &why), KB_ERR_INVALID);
    assert_reason(why, "bundle has no PEM certificate");
    assert_kb(spiffe_bundle_parse_pem("example.org", "", 0, &back, &why), KB_ERR_INVALID);
    assert_reason(why, "bundle has no PEM certificate");
    const char *key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert_kb(spiffe_bundle_parse_pem("example.org", key, strlen(key), &back, &why),
              KB_ERR_INVALID);
    assert_reason(why, "bundle has a PEM block that is not a CERTIFICATE");
    const char *junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_kb(spiffe_bundle_parse_pem("example.org", junk, strlen(junk), &back, &why),
              KB_ERR_INVALID);
    assert_reason(why, "bundle has a PEM certificate that is not valid DER");
    assert_null(back);

    kb_dbuf_free(&pem);
    spiffe_bundle_free(b);
    X509_free(root2);
    EVP_PKEY_free(k);
}

static spiffe_bundle *with_seq(const char *td, int64_t seq)
{
    spiffe_bundle *b;
    assert_ok(spiffe_bundle_new(td, &b));
    if (seq >= 0)
        assert_ok(spiffe_bundle_set_sequence(b, (uint64_t)seq));
    return b;
}

static void sequence_only_goes_up(void **state)
{
    (void)state;
    spiffe_bundle *cur = with_seq("example.org", 5);
    spiffe_bundle *lower = with_seq("example.org", 4);
    spiffe_bundle *same = with_seq("example.org", 5);
    spiffe_bundle *higher = with_seq("example.org", 6);
    spiffe_bundle *none = with_seq("example.org", -1);
    spiffe_bundle *other = with_seq("other.org", 6);
    const char *why;

    assert_kb(spiffe_bundle_check_update(cur, lower, &why), KB_ERR_CONFLICT);
    assert_reason(why, "new bundle's spiffe_sequence is lower than the bundle in use");
    assert_ok(spiffe_bundle_check_update(cur, same, &why));
    assert_ok(spiffe_bundle_check_update(cur, higher, &why));
    assert_kb(spiffe_bundle_check_update(cur, none, &why), KB_ERR_CONFLICT);
    assert_reason(why, "new bundle has no spiffe_sequence but the bundle in use has one");
    assert_ok(spiffe_bundle_check_update(none, cur, &why));
    assert_ok(spiffe_bundle_check_update(none, none, &why));
    assert_kb(spiffe_bundle_check_update(cur, other, &why), KB_ERR_INVALID);
    assert_reason(why, "new bundle is for another trust domain");
    assert_ok(spiffe_bundle_check_update(NULL, lower, &why));
    assert_kb(spiffe_bundle_check_update(cur, NULL, &why), KB_ERR_NULL);

    spiffe_bundle_free(cur);
    spiffe_bundle_free(lower);
    spiffe_bundle_free(same);
    spiffe_bundle_free(higher);
    spiffe_bundle_free(none);
    spiffe_bundle_free(other);
}

static void bundle_sets(void **state)
{
    (void)state;
    spiffe_bundle_set *s;
    spiffe_bundle *a, *a2, *c;
    assert_ok(spiffe_bundle_set_new(&s));
    assert_null(spiffe_bundle_set_get(s, "example.org"));
    assert_ok(spiffe_bundle_new("example.org", &a));
    assert_ok(spiffe_bundle_new("example.org", &a2));
    assert_ok(spiffe_bundle_new("other.org", &c));
    assert_ok(spiffe_bundle_set_put(s, a));
    assert_ok(spiffe_bundle_set_put(s, c));
    assert_int_equal(spiffe_bundle_set_count(s), 2);
    assert_ptr_equal(spiffe_bundle_set_get(s, "example.org"), a);
    assert_ptr_equal(spiffe_bundle_set_get(s, "other.org"), c);
    assert_null(spiffe_bundle_set_get(s, "example.com"));
    assert_null(spiffe_bundle_set_get(s, NULL));
    assert_ok(spiffe_bundle_set_put(s, a2)); /* replaces (and frees) a */
    assert_int_equal(spiffe_bundle_set_count(s), 2);
    assert_ptr_equal(spiffe_bundle_set_get(s, "example.org"), a2);
    assert_kb(spiffe_bundle_set_put(s, NULL), KB_ERR_NULL);

    spiffe_bundle_set_up_ref(s);
    spiffe_bundle_set_free(s); /* one reference left */
    assert_ptr_equal(spiffe_bundle_set_get(s, "other.org"), c);
    spiffe_bundle_set_free(s);

    /* Limit on trust domains. */
    assert_ok(spiffe_bundle_set_new(&s));
    for (int i = 0; i <= SPIFFE_BUNDLE_SET_MAX; i++) {
        char td[32];
        spiffe_bundle *b;
        snprintf(td, sizeof(td), "td%d.org", i);
        assert_ok(spiffe_bundle_new(td, &b));
        kb_err rc = spiffe_bundle_set_put(s, b);
        if (i < SPIFFE_BUNDLE_SET_MAX) {
            assert_ok(rc);
        } else {
            assert_kb(rc, KB_ERR_TOO_LARGE);
            spiffe_bundle_free(b); /* still the caller's */
        }
    }
    spiffe_bundle_set_free(s);

    spiffe_bundle *b;
    assert_kb(spiffe_bundle_new("", &b), KB_ERR_INVALID);
    assert_kb(spiffe_bundle_new("spiffe://example.org", &b), KB_ERR_INVALID);
    assert_kb(spiffe_bundle_new(NULL, &b), KB_ERR_NULL);
}

int main(void)
{
    kb_json_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(vectors),
        cmocka_unit_test_setup_teardown(good_document_parses, setup, teardown),
        cmocka_unit_test_setup_teardown(document_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(x509_entry_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(jwt_entry_rules, setup, teardown),
        cmocka_unit_test(rsa_keys),
        cmocka_unit_test_setup_teardown(jwks_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(pem_bundles, setup, teardown),
        cmocka_unit_test(sequence_only_goes_up),
        cmocka_unit_test(bundle_sets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
