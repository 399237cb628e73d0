/* ca_leafkey.c - leaf key pairs and their PKCS#8 PEM (see ca_leafkey.h). */
#include "ca_leafkey.h"

#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/params.h>

/* PrivateKeyInfo for P-256 up to the private scalar (RFC 5208 5, RFC 5915 3):
 *   SEQUENCE(135) { INTEGER 0,
 *     SEQUENCE { OID id-ecPublicKey 1.2.840.10045.2.1, OID prime256v1 1.2.840.10045.3.1.7 },
 *     OCTET STRING(109) { SEQUENCE(107) { INTEGER 1, OCTET STRING(32) d,
 *       [1] { BIT STRING(66) 00 || point } } } }
 * (the curve is in the AlgorithmIdentifier, so ECPrivateKey omits [0] parameters - as OpenSSL
 * writes it). */
static const uint8_t PKCS8_HEAD[] = {0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06,
                                     0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                                     0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                                     0x04, 0x6d, 0x30, 0x6b, 0x02, 0x01, 0x01, 0x04, 0x20};
static const uint8_t PKCS8_MID[] = {0xa1, 0x44, 0x03, 0x42, 0x00};
#define P256_SCALAR 32
#define PKCS8_LEN (sizeof(PKCS8_HEAD) + P256_SCALAR + sizeof(PKCS8_MID) + CA_P256_POINT_LEN)

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_ctx_key;
static EVP_PKEY *g_template; /* P-256 parameters: only its group is used */
static int g_init_ok;

static void ctx_free(void *p)
{
    EVP_PKEY_CTX_free(p);
}

static void init_once(void)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);

    if (c != NULL && EVP_PKEY_paramgen_init(c) == 1 &&
        EVP_PKEY_CTX_set_group_name(c, "prime256v1") == 1 &&
        EVP_PKEY_paramgen(c, &g_template) == 1 && pthread_key_create(&g_ctx_key, ctx_free) == 0)
        g_init_ok = 1;
    EVP_PKEY_CTX_free(c);
}

/* This thread's key generation context (made once per thread, freed when the thread ends). */
static EVP_PKEY_CTX *thread_ctx(void)
{
    EVP_PKEY_CTX *c;

    pthread_once(&g_once, init_once);
    if (!g_init_ok)
        return NULL;
    c = pthread_getspecific(g_ctx_key);
    if (c != NULL)
        return c;
    c = EVP_PKEY_CTX_new_from_pkey(NULL, g_template, NULL);
    if (c == NULL || EVP_PKEY_keygen_init(c) != 1 || pthread_setspecific(g_ctx_key, c) != 0) {
        EVP_PKEY_CTX_free(c);
        return NULL;
    }
    return c;
}

kb_err ca_leafkey_new(EVP_PKEY **out)
{
    EVP_PKEY_CTX *c = thread_ctx();

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(c != NULL, KB_ERR_CRYPTO);
    KB_ENSURE(EVP_PKEY_keygen(c, out) == 1, KB_ERR_CRYPTO);
    return KB_OK;
}

static int is_p256(EVP_PKEY *k)
{
    char g[32] = "";

    return EVP_PKEY_is_a(k, "EC") &&
           EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, g, sizeof(g), NULL) == 1 &&
           strcmp(g, "prime256v1") == 0;
}

kb_err ca_leafkey_point(EVP_PKEY *k, uint8_t point[CA_P256_POINT_LEN])
{
    size_t n = 0;

    KB_ENSURE_REF(k);
    KB_ENSURE(is_p256(k), KB_ERR_INVALID);
    KB_ENSURE(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, point, CA_P256_POINT_LEN,
                                              &n) == 1,
              KB_ERR_CRYPTO);
    KB_ENSURE(n == CA_P256_POINT_LEN && point[0] == 0x04, KB_ERR_INVALID);
    return KB_OK;
}

size_t ca_pem_len(size_t der_len, const char *label)
{
    size_t l = strlen(label);
    size_t full = der_len / 48, rest = der_len % 48;

    return (11 + l + 6) + full * 65 + (rest ? 4 * ((rest + 2) / 3) + 1 : 0) + (9 + l + 6);
}

size_t ca_pem_write(const uint8_t *der, size_t der_len, const char *label, char *out)
{
    size_t o = 0, l = strlen(label);
    char line[65 + 1];

    memcpy(out + o, "-----BEGIN ", 11);
    o += 11;
    memcpy(out + o, label, l);
    o += l;
    memcpy(out + o, "-----\n", 6);
    o += 6;
    for (size_t i = 0; i < der_len; i += 48) {
        size_t chunk = der_len - i < 48 ? der_len - i : 48;
        int n = EVP_EncodeBlock((unsigned char *)line, der + i, (int)chunk);
        memcpy(out + o, line, (size_t)n);
        o += (size_t)n;
        out[o++] = '\n';
    }
    kb_wipe(line, sizeof(line)); /* the last line of a private key */
    memcpy(out + o, "-----END ", 9);
    o += 9;
    memcpy(out + o, label, l);
    o += l;
    memcpy(out + o, "-----\n", 6);
    o += 6;
    return o;
}

kb_err ca_leafkey_pkcs8_pem(EVP_PKEY *k, kb_secret **out)
{
    uint8_t d[P256_SCALAR], point[CA_P256_POINT_LEN], der[PKCS8_LEN];
    OSSL_PARAM p[2];
    kb_secret *s = NULL;
    size_t o = 0, pl;
    kb_err rc = KB_OK;
    const uint16_t one = 1;

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD(ca_leafkey_point(k, point));
    /* The scalar, zero-padded to 32 bytes, in native byte order (OSSL_PARAM unsigned integers,
     * provider-base(7)), straight into our buffer: no BIGNUM copy to clear. */
    memset(d, 0, sizeof(d));
    p[0] = OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_PRIV_KEY, d, sizeof(d));
    p[1] = OSSL_PARAM_construct_end();
    KB_ENSURE_OUT(rc, EVP_PKEY_get_params(k, p) == 1 && OSSL_PARAM_modified(&p[0]), KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, p[0].return_size <= sizeof(d), KB_ERR_CRYPTO);
    if (*(const uint8_t *)&one == 1) { /* little-endian host: reverse to big-endian */
        for (size_t i = 0; i < sizeof(d) / 2; i++) {
            uint8_t t = d[i];
            d[i] = d[sizeof(d) - 1 - i];
            d[sizeof(d) - 1 - i] = t;
        }
    }
    memcpy(der + o, PKCS8_HEAD, sizeof(PKCS8_HEAD));
    o += sizeof(PKCS8_HEAD);
    memcpy(der + o, d, sizeof(d));
    o += sizeof(d);
    memcpy(der + o, PKCS8_MID, sizeof(PKCS8_MID));
    o += sizeof(PKCS8_MID);
    memcpy(der + o, point, sizeof(point));
    pl = ca_pem_len(sizeof(der), "PRIVATE KEY");
    KB_GUARD_OUT(rc, kb_secret_new(pl, &s));
    KB_ENSURE_OUT(rc,
                  ca_pem_write(der, sizeof(der), "PRIVATE KEY", (char *)kb_secret_data(s)) == pl,
                  KB_ERR_INTERNAL);
    *out = s;
    s = NULL;
out:
    kb_wipe(d, sizeof(d));
    kb_wipe(der, sizeof(der));
    kb_secret_free(s);
    return rc;
}
