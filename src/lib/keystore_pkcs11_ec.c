/* keystore_pkcs11_ec.c - EC P-256 signing keys in a PKCS#11 token (keybridge-ca's issuing key),
 * on keystore_pkcs11.c's module registry, login and session pool (keystore_pkcs11_impl.h).
 *
 * PKCS11-curr 2.40 section 2.3: CKM_EC_KEY_PAIR_GEN with CKA_EC_PARAMS = DER OID of the curve
 * (RFC 5480 2.1.1.1, secp256r1 = 1.2.840.10045.3.1.7); CKM_ECDSA signs a caller-supplied hash and
 * returns r || s, each padded to the order's length (2.3.1), which we re-encode as the DER
 * ECDSA-Sig-Value X.509 wants (RFC 3279 2.2.3). CKA_EC_POINT is DER OCTET STRING(uncompressed
 * point) (2.3.3; some modules return the bare point, accepted too). */
#include "keystore.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <p11-kit/pkcs11.h>

#include "keystore_impl.h"
#include "keystore_pkcs11_impl.h"
#include "log.h"

static const uint8_t P256_OID_DER[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
#define P256_POINT_LEN 65
#define P256_COORD 32

struct p11_ec {
    struct p11_ks *ks; /* module, slot, session pool, login */
    CK_OBJECT_HANDLE priv;
};

static kb_err find_ec_obj(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label,
                          CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *h)
{
    return kb_p11_find_obj(f, s, label, cls, CKK_EC, h);
}

/* The private key must be a P-256 key that cannot leave the token. */
static kb_err check_ec_priv(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                            const char *label)
{
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, sign = CK_FALSE;
    uint8_t params[64];
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
        {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
        {CKA_SIGN, &sign, sizeof(sign)},
        {CKA_EC_PARAMS, params, sizeof(params)},
    };
    CK_RV rv = f->C_GetAttributeValue(s, h, a, KB_ARRAY_LEN(a));

    if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_key_attributes_failed", "C_GetAttributeValue", rv);
        return KB_ERR_HSM;
    }
    if (sensitive != CK_TRUE || extractable != CK_FALSE || sign != CK_TRUE ||
        a[3].ulValueLen != sizeof(P256_OID_DER) ||
        memcmp(params, P256_OID_DER, sizeof(P256_OID_DER)) != 0) {
        kb_log(KB_LOG_ERROR, "pkcs11_key_refused", "key", label, "msg",
               "EC key must be P-256, CKA_SIGN, CKA_SENSITIVE=true, CKA_EXTRACTABLE=false", NULL);
        return KB_ERR_CONFLICT;
    }
    return KB_OK;
}

static kb_err ec_pub_from_token(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                                EVP_PKEY **out)
{
    uint8_t raw[128];
    const uint8_t *pt = raw;
    CK_ATTRIBUTE a = {CKA_EC_POINT, raw, sizeof(raw)};
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *c = NULL;
    size_t n;
    kb_err rc = KB_OK;
    CK_RV rv;

    rv = f->C_GetAttributeValue(s, h, &a, 1);
    if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_key_attributes_failed", "C_GetAttributeValue", rv);
        return KB_ERR_HSM;
    }
    n = a.ulValueLen;
    if (n == P256_POINT_LEN + 2 && raw[0] == 0x04 && raw[1] == P256_POINT_LEN) {
        pt = raw + 2; /* DER OCTET STRING wrapping */
        n = P256_POINT_LEN;
    }
    KB_ENSURE(n == P256_POINT_LEN && pt[0] == 0x04, KB_ERR_HSM);
    bld = OSSL_PARAM_BLD_new();
    KB_ENSURE_OUT(rc, bld != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(
        rc,
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1 &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, n) == 1,
        KB_ERR_CRYPTO);
    params = OSSL_PARAM_BLD_to_param(bld);
    KB_ENSURE_OUT(rc, params != NULL, KB_ERR_NOMEM);
    c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    KB_ENSURE_OUT(rc, c != NULL, KB_ERR_CRYPTO);
    *out = NULL;
    KB_ENSURE_OUT(rc,
                  EVP_PKEY_fromdata_init(c) == 1 &&
                      EVP_PKEY_fromdata(c, out, EVP_PKEY_PUBLIC_KEY, params) == 1,
                  KB_ERR_CRYPTO);
out:
    EVP_PKEY_CTX_free(c);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return rc;
}

static kb_err generate_ec(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label)
{
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    uint8_t id[CKA_ID_LEN];
    CK_ATTRIBUTE pub[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &no, sizeof(no)},
        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_EC_PARAMS, (void *)P256_OID_DER, sizeof(P256_OID_DER)},
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, id, sizeof(id)},
    };
    CK_ATTRIBUTE priv[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},     {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)}, {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_MODIFIABLE, &no, sizeof(no)},  {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_DERIVE, &no, sizeof(no)},      {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, id, sizeof(id)},
    };
    CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_OBJECT_HANDLE hpub, hpriv;
    CK_RV rv;

    KB_ENSURE(RAND_bytes(id, sizeof(id)) == 1, KB_ERR_CRYPTO);
    rv = f->C_GenerateKeyPair(s, &mech, pub, KB_ARRAY_LEN(pub), priv, KB_ARRAY_LEN(priv), &hpub,
                              &hpriv);
    if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_keygen_failed", "C_GenerateKeyPair", rv);
        return KB_ERR_HSM;
    }
    kb_log(KB_LOG_INFO, "pkcs11_ec_key_generated", "key", label, NULL);
    return KB_OK;
}

static kb_err check_ec_args(const char *module, const char *token_label, const char *label,
                            const kb_secret *pin)
{
    return kb_p11_check_args(module, token_label, label, pin);
}

kb_err kb_keystore_ec_init(const char *module, const char *token_label, const char *label,
                           const kb_secret *pin)
{
    struct p11_ks *k = NULL;
    CK_OBJECT_HANDLE h;
    kb_err rc;

    KB_GUARD(check_ec_args(module, token_label, label, pin));
    KB_GUARD(kb_p11_start(module, token_label, pin, 1, &k));
    rc = find_ec_obj(k->mod->f, k->sess[0], label, CKO_PRIVATE_KEY, &h);
    if (rc == KB_ERR_NOT_FOUND) {
        KB_GUARD_OUT(rc, generate_ec(k->mod->f, k->sess[0], label));
        rc = find_ec_obj(k->mod->f, k->sess[0], label, CKO_PRIVATE_KEY, &h);
    }
    KB_GUARD_OUT(rc, rc);
    KB_GUARD_OUT(rc, check_ec_priv(k->mod->f, k->sess[0], h, label));
out:
    kb_p11_free(k);
    return rc;
}

static kb_err p11_ec_sign(void *impl, const uint8_t digest[32], uint8_t der[KB_EC_SIG_DER_MAX],
                          size_t *der_len)
{
    struct p11_ec *e = impl;
    CK_FUNCTION_LIST_PTR f = e->ks->mod->f;
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    uint8_t rs[2 * P256_COORD];
    CK_ULONG rsl = sizeof(rs);
    ECDSA_SIG *sig = NULL;
    BIGNUM *r = NULL, *s = NULL;
    unsigned char *p = der;
    kb_err rc = KB_OK;
    CK_RV rv;
    int i, n;

    i = kb_p11_sess_get(e->ks);
    rv = f->C_SignInit(e->ks->sess[i], &mech, e->priv);
    if (rv == CKR_OK)
        rv = f->C_Sign(e->ks->sess[i], (CK_BYTE_PTR)digest, 32, rs, &rsl);
    kb_p11_sess_put(e->ks, i);
    if (rv != CKR_OK || rsl != sizeof(rs)) {
        kb_p11_log_rv("pkcs11_ec_sign_failed", "C_Sign", rv);
        return KB_ERR_HSM;
    }
    sig = ECDSA_SIG_new();
    r = BN_bin2bn(rs, P256_COORD, NULL);
    s = BN_bin2bn(rs + P256_COORD, P256_COORD, NULL);
    KB_ENSURE_OUT(rc, sig != NULL && r != NULL && s != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, ECDSA_SIG_set0(sig, r, s) == 1, KB_ERR_CRYPTO);
    r = s = NULL;
    KB_ENSURE_OUT(rc, i2d_ECDSA_SIG(sig, NULL) <= KB_EC_SIG_DER_MAX, KB_ERR_INTERNAL);
    n = i2d_ECDSA_SIG(sig, &p);
    KB_ENSURE_OUT(rc, n > 0, KB_ERR_CRYPTO);
    *der_len = (size_t)n;
out:
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return rc;
}

static void p11_ec_free(void *impl)
{
    struct p11_ec *e = impl;

    if (e == NULL)
        return;
    kb_p11_free(e->ks);
    free(e);
}

static const struct kb_ec_signer_ops p11_ec_ops = {
    .kind = "pkcs11",
    .sign = p11_ec_sign,
    .free = p11_ec_free,
};

kb_err kb_keystore_ec_open(const char *module, const char *token_label, const char *label,
                           const kb_secret *pin, kb_ec_signer **out)
{
    struct p11_ec *e = NULL;
    CK_OBJECT_HANDLE hpub;
    EVP_PKEY *pub = NULL;
    kb_err rc;

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD(check_ec_args(module, token_label, label, pin));
    e = calloc(1, sizeof(*e));
    KB_ENSURE(e != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, kb_p11_start(module, token_label, pin, 0, &e->ks));
    rc = find_ec_obj(e->ks->mod->f, e->ks->sess[0], label, CKO_PRIVATE_KEY, &e->priv);
    if (rc == KB_ERR_NOT_FOUND)
        kb_log(KB_LOG_ERROR, "pkcs11_key_not_found", "token", token_label, "key", label, NULL);
    KB_GUARD_OUT(rc, rc);
    KB_GUARD_OUT(rc, check_ec_priv(e->ks->mod->f, e->ks->sess[0], e->priv, label));
    rc = find_ec_obj(e->ks->mod->f, e->ks->sess[0], label, CKO_PUBLIC_KEY, &hpub);
    if (rc == KB_ERR_NOT_FOUND)
        kb_log(KB_LOG_ERROR, "pkcs11_key_not_found", "token", token_label, "key", label, "msg",
               "the private key is there, its public key object is not", NULL);
    KB_GUARD_OUT(rc, rc);
    KB_GUARD_OUT(rc, ec_pub_from_token(e->ks->mod->f, e->ks->sess[0], hpub, &pub));
    rc = kb_ec_signer_new(&p11_ec_ops, e, pub, out);
    e = NULL;
out:
    p11_ec_free(e);
    return rc;
}
