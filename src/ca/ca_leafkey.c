/* ca_leafkey.c - leaf key pairs and their PKCS#8 PEM (see ca_leafkey.h). */
#include "ca_leafkey.h"

#include <pthread.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>

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
#define PKCS8_LEN (sizeof(PKCS8_HEAD) + CA_P256_SCALAR_LEN + sizeof(PKCS8_MID) + CA_P256_POINT_LEN)

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static EC_GROUP *g_group; /* P-256, built once; only read afterwards (EC_POINT_mul takes const) */

static void init_once(void)
{
    g_group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
}

void ca_leafkey_wipe(ca_leafkey *k)
{
    if (k != NULL)
        kb_wipe(k, sizeof(*k));
}

kb_err ca_leafkey_gen(ca_leafkey *k)
{
    BN_CTX *bc = NULL;
    BIGNUM *d = NULL;
    EC_POINT *q = NULL;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(k);
    pthread_once(&g_once, init_once);
    KB_ENSURE(g_group != NULL, KB_ERR_CRYPTO);
    bc = BN_CTX_secure_new();
    d = BN_secure_new();
    q = EC_POINT_new(g_group);
    KB_ENSURE_OUT(rc, bc != NULL && d != NULL && q != NULL, KB_ERR_NOMEM);
    BN_set_flags(d, BN_FLG_CONSTTIME);
    do {
        KB_ENSURE_OUT(rc, BN_priv_rand_range_ex(d, EC_GROUP_get0_order(g_group), 0, bc) == 1,
                      KB_ERR_CRYPTO);
    } while (BN_is_zero(d));
    KB_ENSURE_OUT(rc, EC_POINT_mul(g_group, q, d, NULL, NULL, bc) == 1, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, BN_bn2binpad(d, k->d, CA_P256_SCALAR_LEN) == CA_P256_SCALAR_LEN,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc,
                  EC_POINT_point2oct(g_group, q, POINT_CONVERSION_UNCOMPRESSED, k->point,
                                     CA_P256_POINT_LEN, bc) == CA_P256_POINT_LEN,
                  KB_ERR_CRYPTO);
out:
    if (rc != KB_OK)
        ca_leafkey_wipe(k);
    BN_clear_free(d);
    EC_POINT_free(q);
    BN_CTX_free(bc);
    return rc;
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

kb_err ca_leafkey_pkcs8_pem(const ca_leafkey *k, kb_secret **out)
{
    uint8_t der[PKCS8_LEN];
    kb_secret *s = NULL;
    size_t o = 0, pl;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE_REF(k);
    KB_ENSURE(k->point[0] == 0x04, KB_ERR_INVALID);
    memcpy(der + o, PKCS8_HEAD, sizeof(PKCS8_HEAD));
    o += sizeof(PKCS8_HEAD);
    memcpy(der + o, k->d, sizeof(k->d));
    o += sizeof(k->d);
    memcpy(der + o, PKCS8_MID, sizeof(PKCS8_MID));
    o += sizeof(PKCS8_MID);
    memcpy(der + o, k->point, sizeof(k->point));
    pl = ca_pem_len(sizeof(der), "PRIVATE KEY");
    KB_GUARD_OUT(rc, kb_secret_new(pl, &s));
    KB_ENSURE_OUT(rc,
                  ca_pem_write(der, sizeof(der), "PRIVATE KEY", (char *)kb_secret_data(s)) == pl,
                  KB_ERR_INTERNAL);
    *out = s;
    s = NULL;
out:
    kb_wipe(der, sizeof(der));
    kb_secret_free(s);
    return rc;
}
