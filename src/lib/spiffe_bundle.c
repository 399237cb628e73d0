/* spiffe_bundle.c - SPIFFE bundles (SPIFFE_Trust_Domain_and_Bundle.md 4, X509-SVID.md 6,
 * JWT-SVID.md 6) as JWKS (RFC 7517, key members per RFC 7518 6) and PEM. */
#include "spiffe_bundle.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "base64.h"
#include "buf.h"
#include "fileio.h"
#include "json.h"
#include "spiffe_id.h"

/* Longest JWT key id accepted. */
#define KID_MAX 256
/* Largest RSA modulus accepted in a JWK, in bytes (16384 bits). */
#define RSA_N_MAX 2048
/* Smallest RSA modulus accepted for a JWT-SVID key, in bits. */
#define RSA_BITS_MIN 2048

typedef struct {
    char *kid;
    EVP_PKEY *key;
} jwt_key;

struct spiffe_bundle {
    char td[SPIFFE_TD_MAX + 1];
    STACK_OF(X509) * roots;
    X509_STORE *store;
    jwt_key *jwt;
    size_t njwt, jwt_cap;
    int has_seq;
    uint64_t seq;
    int64_t refresh; /* -1: none */
};

struct spiffe_bundle_set {
    atomic_int refs;
    spiffe_bundle **b;
    size_t n;
    size_t cap;
};

static kb_err fail(const char **why, const char *reason, kb_err code)
{
    if (why)
        *why = reason;
    return code;
}

/* ---- base64 (RFC 4648 4 and 5, strict: base64.h) ------------------------------------------- */

/* The standard alphabet with '=' padding to a multiple of 4 (x5c, RFC 7517 4.7), or the URL
 * alphabet without padding (JWK key members, RFC 7515 2), into a malloc'd buffer; empty refused. */
static kb_err b64_decode(const char *in, size_t len, kb_b64_mode mode, uint8_t **out,
                         size_t *out_len)
{
    size_t cap = kb_b64_dec_max(len);
    uint8_t *buf;
    kb_err rc;
    *out = NULL;
    *out_len = 0;
    KB_ENSURE(len > 0, KB_ERR_INVALID);
    buf = malloc(cap);
    KB_ENSURE(buf != NULL, KB_ERR_NOMEM);
    rc = kb_b64_decode(in, len, mode, buf, cap, out_len);
    if (rc == KB_OK && *out_len == 0)
        rc = KB_ERR_INVALID;
    if (rc != KB_OK) {
        free(buf);
        *out_len = 0;
        return rc == KB_ERR_NOMEM ? rc : KB_ERR_INVALID;
    }
    *out = buf;
    return KB_OK;
}

/* ---- JWK public keys (RFC 7518 6.2 EC, 6.3 RSA) ---------------------------------------------- */

static const struct {
    const char *crv;
    const char *group; /* OpenSSL's name */
    size_t size;       /* field size in bytes: x and y are exactly this long (RFC 7518 6.2.1.2) */
} curves[] = {
    {"P-256", "prime256v1", 32},
    {"P-384", "secp384r1", 48},
    {"P-521", "secp521r1", 66},
};

/* Decode member `name` of obj as base64url into a malloc'd buffer of 1..max bytes. */
static kb_err jwk_member(const json_t *obj, const char *name, size_t max, uint8_t **out,
                         size_t *out_len)
{
    const json_t *v = json_object_get(obj, name);
    *out = NULL;
    if (!json_is_string(v))
        return KB_ERR_INVALID;
    size_t len = json_string_length(v);
    if (len > (max + 2) / 3 * 4)
        return KB_ERR_INVALID;
    return b64_decode(json_string_value(v), len, KB_B64_URL, out, out_len);
}

static kb_err pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld, EVP_PKEY **out)
{
    kb_err rc = KB_ERR_INVALID;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY_CTX *chk = NULL;
    EVP_PKEY *pk = NULL;
    if (params == NULL || ctx == NULL) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    if (EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto out;
    /* Refuse points off the curve and malformed RSA moduli before anyone trusts the key. */
    chk = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    if (chk == NULL || EVP_PKEY_public_check(chk) != 1)
        goto out;
    *out = pk;
    pk = NULL;
    rc = KB_OK;
out:
    ERR_clear_error();
    EVP_PKEY_free(pk);
    EVP_PKEY_CTX_free(chk);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return rc;
}

static kb_err jwk_ec(const json_t *key, EVP_PKEY **out, const char **why)
{
    kb_err rc = KB_OK;
    uint8_t *x = NULL, *y = NULL, *pub = NULL;
    size_t xl = 0, yl = 0, ci;
    OSSL_PARAM_BLD *bld = NULL;
    const char *crv = json_string_value(json_object_get(key, "crv"));

    for (ci = 0; ci < KB_ARRAY_LEN(curves); ci++) {
        if (crv != NULL && strcmp(crv, curves[ci].crv) == 0)
            break;
    }
    if (ci == KB_ARRAY_LEN(curves)) {
        rc = fail(why, "EC key has a missing or unsupported 'crv'", KB_ERR_INVALID);
        goto out;
    }
    size_t sz = curves[ci].size;
    if (jwk_member(key, "x", sz, &x, &xl) != KB_OK || jwk_member(key, "y", sz, &y, &yl) != KB_OK ||
        xl != sz || yl != sz) {
        rc = fail(why, "EC key 'x' or 'y' is missing or malformed", KB_ERR_INVALID);
        goto out;
    }
    /* SEC 1 2.3.3 uncompressed point: 0x04 || x || y. */
    pub = malloc(1 + 2 * sz);
    bld = OSSL_PARAM_BLD_new();
    if (pub == NULL || bld == NULL) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    pub[0] = 0x04;
    memcpy(pub + 1, x, sz);
    memcpy(pub + 1 + sz, y, sz);
    if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curves[ci].group, 0) !=
            1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + 2 * sz) != 1) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    rc = pkey_fromdata("EC", bld, out);
    if (rc == KB_ERR_INVALID)
        fail(why, "EC key is not a valid point on its curve", rc);
out:
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    free(pub);
    return rc;
}

static kb_err jwk_rsa(const json_t *key, EVP_PKEY **out, const char **why)
{
    kb_err rc = KB_OK;
    uint8_t *n = NULL, *e = NULL;
    size_t nl = 0, el = 0;
    BIGNUM *bn = NULL, *be = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pk = NULL;

    if (jwk_member(key, "n", RSA_N_MAX, &n, &nl) != KB_OK ||
        jwk_member(key, "e", 8, &e, &el) != KB_OK) {
        rc = fail(why, "RSA key 'n' or 'e' is missing or malformed", KB_ERR_INVALID);
        goto out;
    }
    bn = BN_bin2bn(n, (int)nl, NULL);
    be = BN_bin2bn(e, (int)el, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (bn == NULL || be == NULL || bld == NULL ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) != 1) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    rc = pkey_fromdata("RSA", bld, &pk);
    if (rc == KB_ERR_INVALID) {
        fail(why, "RSA key is not a valid public key", rc);
        goto out;
    }
    if (rc != KB_OK)
        goto out;
    *out = pk;
    pk = NULL;
out:
    EVP_PKEY_free(pk);
    BN_free(bn);
    BN_free(be);
    OSSL_PARAM_BLD_free(bld);
    free(n);
    free(e);
    return rc;
}

/* The public key of an EC or RSA JWK. KB_ERR_NOT_FOUND for another kty (caller decides). */
static kb_err jwk_pkey(const json_t *key, const char *kty, EVP_PKEY **out, const char **why)
{
    if (strcmp(kty, "EC") == 0)
        return jwk_ec(key, out, why);
    if (strcmp(kty, "RSA") == 0)
        return jwk_rsa(key, out, why);
    return KB_ERR_NOT_FOUND;
}

static kb_err json_set_b64url(json_t *obj, const char *name, const uint8_t *p, size_t n)
{
    kb_dbuf b;
    kb_err rc;
    kb_dbuf_init(&b, 4 * n / 3 + 8);
    rc = kb_b64_encode(p, n, KB_B64_URL, &b);
    if (rc == KB_OK && json_object_set_new(obj, name, json_string(kb_dbuf_str(&b))) != 0)
        rc = KB_ERR_NOMEM;
    kb_dbuf_free(&b);
    return rc;
}

static kb_err json_set_bn(json_t *obj, const char *name, const BIGNUM *bn, size_t pad)
{
    size_t n = pad ? pad : (size_t)BN_num_bytes(bn);
    if (n == 0)
        n = 1;
    uint8_t *buf = malloc(n);
    if (buf == NULL)
        return KB_ERR_NOMEM;
    kb_err rc = KB_ERR_CRYPTO;
    if (BN_bn2binpad(bn, buf, (int)n) == (int)n)
        rc = json_set_b64url(obj, name, buf, n);
    free(buf);
    return rc;
}

/* Add kty and the public key members of pk to obj (RFC 7518 6.2.1 / 6.3.1). */
static kb_err pkey_to_jwk(EVP_PKEY *pk, json_t *obj)
{
    kb_err rc = KB_ERR_INVALID;
    BIGNUM *a = NULL, *b = NULL;
    if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64];
        size_t ci;
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           NULL) != 1)
            goto out;
        for (ci = 0; ci < KB_ARRAY_LEN(curves); ci++) {
            if (strcmp(group, curves[ci].group) == 0)
                break;
        }
        if (ci == KB_ARRAY_LEN(curves))
            goto out; /* a curve JWK cannot name */
        if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &a) != 1 ||
            EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &b) != 1) {
            rc = KB_ERR_CRYPTO;
            goto out;
        }
        if (json_object_set_new(obj, "kty", json_string("EC")) != 0 ||
            json_object_set_new(obj, "crv", json_string(curves[ci].crv)) != 0) {
            rc = KB_ERR_NOMEM;
            goto out;
        }
        KB_GUARD_OUT(rc, json_set_bn(obj, "x", a, curves[ci].size));
        KB_GUARD_OUT(rc, json_set_bn(obj, "y", b, curves[ci].size));
    } else if (EVP_PKEY_is_a(pk, "RSA")) {
        if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &a) != 1 ||
            EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &b) != 1) {
            rc = KB_ERR_CRYPTO;
            goto out;
        }
        if (json_object_set_new(obj, "kty", json_string("RSA")) != 0) {
            rc = KB_ERR_NOMEM;
            goto out;
        }
        KB_GUARD_OUT(rc, json_set_bn(obj, "n", a, 0));
        KB_GUARD_OUT(rc, json_set_bn(obj, "e", b, 0));
    } else {
        goto out;
    }
    rc = KB_OK;
out:
    ERR_clear_error();
    BN_free(a);
    BN_free(b);
    return rc;
}

/* ---- bundle ---------------------------------------------------------------------------------- */

static kb_err bundle_new(const char *td, spiffe_bundle **out, const char **why)
{
    KB_ENSURE_REF(out);
    *out = NULL;
    if (td == NULL)
        return fail(why, "trust domain is missing", KB_ERR_NULL);
    size_t len = strnlen(td, SPIFFE_TD_MAX + 1);
    KB_GUARD(spiffe_td_validate(td, len, why));
    spiffe_bundle *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return KB_ERR_NOMEM;
    memcpy(b->td, td, len);
    b->refresh = -1;
    b->roots = sk_X509_new_null();
    b->store = X509_STORE_new();
    if (b->roots == NULL || b->store == NULL) {
        spiffe_bundle_free(b);
        return KB_ERR_NOMEM;
    }
    *out = b;
    return KB_OK;
}

kb_err spiffe_bundle_new(const char *td, spiffe_bundle **out)
{
    return bundle_new(td, out, NULL);
}

void spiffe_bundle_free(spiffe_bundle *b)
{
    if (b == NULL)
        return;
    sk_X509_pop_free(b->roots, X509_free);
    X509_STORE_free(b->store);
    for (size_t i = 0; i < b->njwt; i++) {
        free(b->jwt[i].kid);
        EVP_PKEY_free(b->jwt[i].key);
    }
    free(b->jwt);
    free(b);
}

const char *spiffe_bundle_trust_domain(const spiffe_bundle *b)
{
    return b ? b->td : "";
}

size_t spiffe_bundle_x509_count(const spiffe_bundle *b)
{
    return b ? (size_t)sk_X509_num(b->roots) : 0;
}

X509 *spiffe_bundle_x509_root(const spiffe_bundle *b, size_t i)
{
    if (b == NULL || i >= (size_t)sk_X509_num(b->roots))
        return NULL;
    return sk_X509_value(b->roots, (int)i);
}

X509_STORE *spiffe_bundle_x509_store(const spiffe_bundle *b)
{
    return b ? b->store : NULL;
}

static size_t entry_count(const spiffe_bundle *b)
{
    return (size_t)sk_X509_num(b->roots) + b->njwt;
}

kb_err spiffe_bundle_add_x509_root(spiffe_bundle *b, X509 *root)
{
    KB_ENSURE_REF(b);
    KB_ENSURE_REF(root);
    for (int i = 0; i < sk_X509_num(b->roots); i++) {
        if (X509_cmp(sk_X509_value(b->roots, i), root) == 0)
            return KB_OK;
    }
    KB_ENSURE(entry_count(b) < SPIFFE_BUNDLE_KEYS_MAX, KB_ERR_TOO_LARGE);
    if (X509_STORE_add_cert(b->store, root) != 1) {
        ERR_clear_error();
        return KB_ERR_CRYPTO;
    }
    if (!X509_up_ref(root))
        return KB_ERR_CRYPTO;
    if (sk_X509_push(b->roots, root) <= 0) {
        X509_free(root);
        return KB_ERR_NOMEM;
    }
    return KB_OK;
}

size_t spiffe_bundle_jwt_count(const spiffe_bundle *b)
{
    return b ? b->njwt : 0;
}

EVP_PKEY *spiffe_bundle_jwt_key(const spiffe_bundle *b, const char *kid)
{
    if (b == NULL || kid == NULL)
        return NULL;
    for (size_t i = 0; i < b->njwt; i++) {
        if (strcmp(b->jwt[i].kid, kid) == 0)
            return b->jwt[i].key;
    }
    return NULL;
}

kb_err spiffe_bundle_add_jwt_key(spiffe_bundle *b, const char *kid, EVP_PKEY *key)
{
    KB_ENSURE_REF(b);
    KB_ENSURE_REF(kid);
    KB_ENSURE_REF(key);
    size_t klen = strnlen(kid, KID_MAX + 1);
    KB_ENSURE(klen > 0, KB_ERR_INVALID);
    KB_ENSURE(klen <= KID_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(spiffe_bundle_jwt_key(b, kid) == NULL, KB_ERR_EXISTS);
    KB_ENSURE(entry_count(b) < SPIFFE_BUNDLE_KEYS_MAX, KB_ERR_TOO_LARGE);
    KB_GUARD(kb_grow((void **)&b->jwt, &b->jwt_cap, b->njwt, sizeof(*b->jwt)));
    char *k = strndup(kid, klen);
    if (k == NULL)
        return KB_ERR_NOMEM;
    if (!EVP_PKEY_up_ref(key)) {
        free(k);
        return KB_ERR_CRYPTO;
    }
    b->jwt[b->njwt].kid = k;
    b->jwt[b->njwt].key = key;
    b->njwt++;
    return KB_OK;
}

int spiffe_bundle_has_sequence(const spiffe_bundle *b)
{
    return b != NULL && b->has_seq;
}

uint64_t spiffe_bundle_sequence(const spiffe_bundle *b)
{
    return b ? b->seq : 0;
}

kb_err spiffe_bundle_set_sequence(spiffe_bundle *b, uint64_t seq)
{
    KB_ENSURE_REF(b);
    /* JSON integers as jansson reads them are signed 64-bit. */
    KB_ENSURE(seq <= (uint64_t)INT64_MAX, KB_ERR_TOO_LARGE);
    b->seq = seq;
    b->has_seq = 1;
    return KB_OK;
}

int64_t spiffe_bundle_refresh_hint(const spiffe_bundle *b)
{
    return b ? b->refresh : -1;
}

kb_err spiffe_bundle_set_refresh_hint(spiffe_bundle *b, int64_t seconds)
{
    KB_ENSURE_REF(b);
    KB_ENSURE(seconds >= 0, KB_ERR_INVALID);
    b->refresh = seconds;
    return KB_OK;
}

kb_err spiffe_bundle_check_update(const spiffe_bundle *cur, const spiffe_bundle *next,
                                  const char **why)
{
    if (next == NULL)
        return fail(why, "new bundle is missing", KB_ERR_NULL);
    if (cur == NULL)
        return KB_OK;
    if (strcmp(cur->td, next->td) != 0)
        return fail(why, "new bundle is for another trust domain", KB_ERR_INVALID);
    /* Section 4.1.1: the sequence only goes up. Refusing a lower one stops an attacker (or a stale
     * mirror) from rolling verifiers back to a bundle that still trusts a retired root. */
    if (cur->has_seq && !next->has_seq)
        return fail(why, "new bundle has no spiffe_sequence but the bundle in use has one",
                    KB_ERR_CONFLICT);
    if (cur->has_seq && next->seq < cur->seq)
        return fail(why, "new bundle's spiffe_sequence is lower than the bundle in use",
                    KB_ERR_CONFLICT);
    return KB_OK;
}

/* ---- parsing --------------------------------------------------------------------------------- */

/* d2i a whole DER certificate: nothing may follow it (trailing bytes would be unsigned data). */
static X509 *der_cert(const uint8_t *der, size_t len)
{
    const unsigned char *p = der;
    if (len == 0 || len > SPIFFE_BUNDLE_MAX)
        return NULL;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x != NULL && p != der + len) {
        X509_free(x);
        x = NULL;
    }
    ERR_clear_error();
    return x;
}

static kb_err parse_x509_entry(spiffe_bundle *b, const json_t *key, const char *kty,
                               const char **why)
{
    kb_err rc;
    const json_t *x5c = json_object_get(key, "x5c");
    uint8_t *der = NULL;
    size_t der_len = 0;
    X509 *x = NULL;
    EVP_PKEY *jwk = NULL;

    /* X509-SVID.md 6.2 would skip an entry without x5c and use only the first of several; like
     * go-spiffe we refuse both, since a publisher that sends them is broken, not extensible. */
    if (!json_is_array(x5c))
        return fail(why, "x509-svid entry has no 'x5c' array", KB_ERR_INVALID);
    if (json_array_size(x5c) != 1)
        return fail(why, "x509-svid entry must have exactly one certificate in 'x5c'",
                    KB_ERR_INVALID);
    const json_t *c = json_array_get(x5c, 0);
    if (!json_is_string(c))
        return fail(why, "x509-svid 'x5c' certificate is not a string", KB_ERR_INVALID);
    if (b64_decode(json_string_value(c), json_string_length(c), KB_B64_STD, &der, &der_len) !=
        KB_OK) {
        rc = fail(why, "x509-svid 'x5c' certificate is not valid base64", KB_ERR_INVALID);
        goto out;
    }
    x = der_cert(der, der_len);
    if (x == NULL) {
        rc =
            fail(why, "x509-svid 'x5c' certificate is not a valid DER certificate", KB_ERR_INVALID);
        goto out;
    }
    /* RFC 7517 4.7: the key in the certificate MUST match the JWK's own key members. */
    rc = jwk_pkey(key, kty, &jwk, why);
    if (rc == KB_OK) {
        if (EVP_PKEY_eq(jwk, X509_get0_pubkey(x)) != 1) {
            ERR_clear_error();
            rc = fail(why, "x509-svid entry key does not match its certificate", KB_ERR_INVALID);
            goto out;
        }
    } else if (rc != KB_ERR_NOT_FOUND) {
        goto out;
    }
    rc = spiffe_bundle_add_x509_root(b, x);
    if (rc == KB_ERR_TOO_LARGE)
        fail(why, "bundle has too many keys", rc);
out:
    X509_free(x);
    EVP_PKEY_free(jwk);
    free(der);
    return rc;
}

static kb_err parse_jwt_entry(spiffe_bundle *b, const json_t *key, const char *kty,
                              const char **why)
{
    const json_t *kid = json_object_get(key, "kid");
    EVP_PKEY *pk = NULL;
    kb_err rc;

    /* JWT-SVID.md 6.1: the kid parameter MUST be set (tokens name their key by it). */
    if (!json_is_string(kid) || json_string_length(kid) == 0)
        return fail(why, "jwt-svid entry has no 'kid'", KB_ERR_INVALID);
    if (json_string_length(kid) > KID_MAX ||
        strlen(json_string_value(kid)) != json_string_length(kid))
        return fail(why, "jwt-svid entry 'kid' is too long or has a NUL", KB_ERR_INVALID);
    if (spiffe_bundle_jwt_key(b, json_string_value(kid)) != NULL)
        return fail(why, "jwt-svid entries share a 'kid'", KB_ERR_INVALID);
    rc = jwk_pkey(key, kty, &pk, why);
    if (rc == KB_ERR_NOT_FOUND)
        return fail(why, "jwt-svid entry has an unsupported 'kty' (EC or RSA)", KB_ERR_INVALID);
    KB_GUARD(rc);
    /* A JWT-SVID key signs tokens on its own, so its size is policy here (NIST SP 800-131A).
     * An x509-svid entry's key is the certificate's, whose strength path validation judges. */
    if (EVP_PKEY_is_a(pk, "RSA") && EVP_PKEY_get_bits(pk) < RSA_BITS_MIN) {
        EVP_PKEY_free(pk);
        return fail(why, "RSA key is shorter than 2048 bits", KB_ERR_INVALID);
    }
    rc = spiffe_bundle_add_jwt_key(b, json_string_value(kid), pk);
    if (rc == KB_ERR_TOO_LARGE)
        fail(why, "bundle has too many keys", rc);
    EVP_PKEY_free(pk);
    return rc;
}

static kb_err get_nonneg_int(const json_t *root, const char *name, int *present, int64_t *out)
{
    const json_t *v = json_object_get(root, name);
    *present = 0;
    if (v == NULL)
        return KB_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return KB_ERR_INVALID;
    *present = 1;
    *out = (int64_t)json_integer_value(v);
    return KB_OK;
}

kb_err spiffe_bundle_parse_jwks(const char *td, const void *buf, size_t len, spiffe_bundle **out,
                                const char **why)
{
    kb_err rc;
    spiffe_bundle *b = NULL;
    json_t *root = NULL;
    int present;
    int64_t v;

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD(bundle_new(td, &b, why));
    if (len > SPIFFE_BUNDLE_MAX) {
        rc = fail(why, "bundle document is larger than 1 MiB", KB_ERR_TOO_LARGE);
        goto out;
    }
    rc = kb_json_parse(buf, len, SPIFFE_BUNDLE_MAX, &root, NULL, 0);
    if (rc != KB_OK) {
        fail(why, "bundle document is not a JSON object", rc);
        goto out;
    }
    if (get_nonneg_int(root, "spiffe_sequence", &present, &v) != KB_OK) {
        rc = fail(why, "'spiffe_sequence' is not a non-negative integer", KB_ERR_INVALID);
        goto out;
    }
    if (present)
        KB_GUARD_OUT(rc, spiffe_bundle_set_sequence(b, (uint64_t)v));
    if (get_nonneg_int(root, "spiffe_refresh_hint", &present, &v) != KB_OK) {
        rc = fail(why, "'spiffe_refresh_hint' is not a non-negative integer", KB_ERR_INVALID);
        goto out;
    }
    if (present)
        KB_GUARD_OUT(rc, spiffe_bundle_set_refresh_hint(b, v));

    /* RFC 7517 5: a JWK Set MUST have a "keys" member (go-spiffe: "no authorities found"). */
    const json_t *keys = json_object_get(root, "keys");
    if (keys == NULL) {
        rc = fail(why, "bundle has no 'keys' member", KB_ERR_INVALID);
        goto out;
    }
    if (!json_is_array(keys)) {
        rc = fail(why, "bundle 'keys' is not an array", KB_ERR_INVALID);
        goto out;
    }
    if (json_array_size(keys) > SPIFFE_BUNDLE_KEYS_MAX) {
        rc = fail(why, "bundle has too many keys", KB_ERR_TOO_LARGE);
        goto out;
    }
    size_t i;
    const json_t *key;
    json_array_foreach(keys, i, key)
    {
        if (!json_is_object(key)) {
            rc = fail(why, "bundle key is not a JSON object", KB_ERR_INVALID);
            goto out;
        }
        /* Section 4.2.2: `use` MUST be set; values are case-sensitive. */
        const char *use = json_string_value(json_object_get(key, "use"));
        if (use == NULL) {
            rc = fail(why, "bundle key has no 'use' string", KB_ERR_INVALID);
            goto out;
        }
        int is_x509 = strcmp(use, "x509-svid") == 0;
        int is_jwt = strcmp(use, "jwt-svid") == 0;
        if (!is_x509 && !is_jwt)
            continue; /* unknown use: "MUST ignore the entire JWK element" (4.2.2) */
        /* RFC 7517 4.1: kty MUST be present. */
        const char *kty = json_string_value(json_object_get(key, "kty"));
        if (kty == NULL) {
            rc = fail(why, "bundle key has no 'kty' string", KB_ERR_INVALID);
            goto out;
        }
        if (is_x509)
            KB_GUARD_OUT(rc, parse_x509_entry(b, key, kty, why));
        else
            KB_GUARD_OUT(rc, parse_jwt_entry(b, key, kty, why));
    }
    *out = b;
    b = NULL;
    rc = KB_OK;
out:
    json_decref(root);
    spiffe_bundle_free(b);
    return rc;
}

kb_err spiffe_bundle_parse_pem(const char *td, const void *buf, size_t len, spiffe_bundle **out,
                               const char **why)
{
    kb_err rc = KB_OK;
    spiffe_bundle *b = NULL;
    BIO *bio = NULL;

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD(bundle_new(td, &b, why));
    if (len > SPIFFE_BUNDLE_MAX) {
        rc = fail(why, "bundle document is larger than 1 MiB", KB_ERR_TOO_LARGE);
        goto out;
    }
    if (buf == NULL || len == 0) {
        rc = fail(why, "bundle has no PEM certificate", KB_ERR_INVALID);
        goto out;
    }
    bio = BIO_new_mem_buf(buf, (int)len);
    if (bio == NULL) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    for (;;) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long dlen = 0;
        if (PEM_read_bio(bio, &name, &header, &data, &dlen) != 1) {
            unsigned long e = ERR_peek_last_error();
            ERR_clear_error();
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
                break; /* no more blocks */
            rc = fail(why, "bundle has a malformed PEM block", KB_ERR_INVALID);
            goto out;
        }
        int is_cert = strcmp(name, "CERTIFICATE") == 0 && header[0] == '\0';
        X509 *x = is_cert ? der_cert(data, (size_t)dlen) : NULL;
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        if (!is_cert) {
            rc = fail(why, "bundle has a PEM block that is not a CERTIFICATE", KB_ERR_INVALID);
            goto out;
        }
        if (x == NULL) {
            rc = fail(why, "bundle has a PEM certificate that is not valid DER", KB_ERR_INVALID);
            goto out;
        }
        rc = spiffe_bundle_add_x509_root(b, x);
        X509_free(x);
        if (rc != KB_OK) {
            if (rc == KB_ERR_TOO_LARGE)
                fail(why, "bundle has too many keys", rc);
            goto out;
        }
    }
    if (spiffe_bundle_x509_count(b) == 0) {
        rc = fail(why, "bundle has no PEM certificate", KB_ERR_INVALID);
        goto out;
    }
    *out = b;
    b = NULL;
out:
    BIO_free(bio);
    spiffe_bundle_free(b);
    return rc;
}

kb_err spiffe_bundle_parse(const char *td, const void *buf, size_t len, spiffe_bundle **out,
                           const char **why)
{
    const uint8_t *p = buf;
    size_t i = 0;
    while (p != NULL && i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (p != NULL && i < len && p[i] == '{')
        return spiffe_bundle_parse_jwks(td, buf, len, out, why);
    return spiffe_bundle_parse_pem(td, buf, len, out, why);
}

kb_err spiffe_bundle_load_file(const char *td, const char *path, spiffe_bundle **out,
                               const char **why)
{
    kb_dbuf b;
    kb_err rc;
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE_REF(path);
    kb_dbuf_init(&b, SPIFFE_BUNDLE_MAX);
    rc = kb_file_read(path, SPIFFE_BUNDLE_MAX, &b);
    if (rc == KB_ERR_TOO_LARGE)
        fail(why, "bundle document is larger than 1 MiB", rc);
    else if (rc != KB_OK)
        fail(why, "bundle file cannot be read", rc);
    else
        rc = spiffe_bundle_parse(td, b.p, b.len, out, why);
    kb_dbuf_free(&b);
    return rc;
}

/* ---- serializing ----------------------------------------------------------------------------- */

static kb_err x509_entry(X509 *x, json_t **out)
{
    kb_err rc;
    unsigned char *der = NULL;
    kb_dbuf b64;
    json_t *e = json_object();
    json_t *arr = json_array();
    int dlen = i2d_X509(x, &der);

    kb_dbuf_init(&b64, SPIFFE_BUNDLE_MAX);
    if (e == NULL || arr == NULL || dlen <= 0) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    if (json_object_set_new(e, "use", json_string("x509-svid")) != 0) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    KB_GUARD_OUT(rc, pkey_to_jwk(X509_get0_pubkey(x), e));
    KB_GUARD_OUT(rc, kb_b64_encode(der, (size_t)dlen, KB_B64_STD, &b64));
    if (json_array_append_new(arr, json_string(kb_dbuf_str(&b64))) != 0 ||
        json_object_set(e, "x5c", arr) != 0) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    *out = e;
    e = NULL;
out:
    json_decref(e);
    json_decref(arr);
    OPENSSL_free(der);
    kb_dbuf_free(&b64);
    return rc;
}

static kb_err jwt_entry(const jwt_key *k, json_t **out)
{
    kb_err rc;
    json_t *e = json_object();
    if (e == NULL || json_object_set_new(e, "use", json_string("jwt-svid")) != 0 ||
        json_object_set_new(e, "kid", json_string(k->kid)) != 0) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    KB_GUARD_OUT(rc, pkey_to_jwk(k->key, e));
    *out = e;
    e = NULL;
out:
    json_decref(e);
    return rc;
}

kb_err spiffe_bundle_to_jwks(const spiffe_bundle *b, kb_dbuf *out)
{
    kb_err rc = KB_OK;
    json_t *doc = NULL, *keys = NULL;
    char *s = NULL;

    KB_ENSURE_REF(b);
    KB_ENSURE_REF(out);
    doc = json_object();
    keys = json_array();
    if (doc == NULL || keys == NULL) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    if (b->has_seq &&
        json_object_set_new(doc, "spiffe_sequence", json_integer((json_int_t)b->seq)) != 0) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    if (b->refresh >= 0 && json_object_set_new(doc, "spiffe_refresh_hint",
                                               json_integer((json_int_t)b->refresh)) != 0) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < sk_X509_num(b->roots); i++) {
        json_t *e = NULL;
        KB_GUARD_OUT(rc, x509_entry(sk_X509_value(b->roots, i), &e));
        if (json_array_append_new(keys, e) != 0) {
            rc = KB_ERR_NOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < b->njwt; i++) {
        json_t *e = NULL;
        KB_GUARD_OUT(rc, jwt_entry(&b->jwt[i], &e));
        if (json_array_append_new(keys, e) != 0) {
            rc = KB_ERR_NOMEM;
            goto out;
        }
    }
    if (json_object_set(doc, "keys", keys) != 0) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    s = json_dumps(doc, JSON_COMPACT);
    if (s == NULL) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    rc = kb_dbuf_addstr(out, s);
out:
    kb_json_free_str(s);
    json_decref(keys);
    json_decref(doc);
    return rc;
}

kb_err spiffe_bundle_to_pem(const spiffe_bundle *b, kb_dbuf *out)
{
    KB_ENSURE_REF(b);
    KB_ENSURE_REF(out);
    kb_err rc = KB_OK;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return KB_ERR_NOMEM;
    for (int i = 0; i < sk_X509_num(b->roots); i++) {
        if (PEM_write_bio_X509(bio, sk_X509_value(b->roots, i)) != 1) {
            rc = KB_ERR_CRYPTO;
            goto out;
        }
    }
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    if (n > 0)
        rc = kb_dbuf_add(out, p, (size_t)n);
out:
    ERR_clear_error();
    BIO_free(bio);
    return rc;
}

/* ---- bundle set ------------------------------------------------------------------------------ */

kb_err spiffe_bundle_set_new(spiffe_bundle_set **out)
{
    KB_ENSURE_REF(out);
    spiffe_bundle_set *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return KB_ERR_NOMEM;
    atomic_init(&s->refs, 1);
    *out = s;
    return KB_OK;
}

void spiffe_bundle_set_up_ref(spiffe_bundle_set *s)
{
    if (s != NULL)
        atomic_fetch_add(&s->refs, 1);
}

void spiffe_bundle_set_free(spiffe_bundle_set *s)
{
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (size_t i = 0; i < s->n; i++)
        spiffe_bundle_free(s->b[i]);
    free(s->b);
    free(s);
}

kb_err spiffe_bundle_set_put(spiffe_bundle_set *s, spiffe_bundle *b)
{
    KB_ENSURE_REF(s);
    KB_ENSURE_REF(b);
    for (size_t i = 0; i < s->n; i++) {
        if (s->b[i] == b)
            return KB_OK;
        if (strcmp(s->b[i]->td, b->td) == 0) {
            spiffe_bundle_free(s->b[i]);
            s->b[i] = b;
            return KB_OK;
        }
    }
    KB_ENSURE(s->n < SPIFFE_BUNDLE_SET_MAX, KB_ERR_TOO_LARGE);
    KB_GUARD(kb_grow((void **)&s->b, &s->cap, s->n, sizeof(*s->b)));
    s->b[s->n++] = b;
    return KB_OK;
}

const spiffe_bundle *spiffe_bundle_set_get(const spiffe_bundle_set *s, const char *td)
{
    if (s == NULL || td == NULL)
        return NULL;
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->b[i]->td, td) == 0)
            return s->b[i];
    }
    return NULL;
}

size_t spiffe_bundle_set_count(const spiffe_bundle_set *s)
{
    return s ? s->n : 0;
}
