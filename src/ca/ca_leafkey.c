/* ca_leafkey.c - leaf key pairs and their PKCS#8 PEM (see ca_leafkey.h). */
#include "ca_leafkey.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

/* ---- the locked slab ---------------------------------------------------------------------- */

struct ca_keypem {
    uint8_t *data; /* in the slab, or kb_secret_data(sec) */
    size_t len;
    kb_secret *sec; /* NULL for a slab slot */
    int slot;
};

static pthread_once_t g_slab_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_slab_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *g_slab; /* NULL: no slab, every PEM gets its own kb_secret */
static int g_free[CA_KEYSLAB_SLOTS];
static int g_nfree;

static void slab_init(void)
{
    size_t len = (size_t)CA_KEYSLAB_SLOTS * CA_KEYSLAB_SLOT;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (m == MAP_FAILED)
        return;
    if (mlock(m, len) != 0 || madvise(m, len, MADV_DONTDUMP) != 0) {
        munmap(m, len); /* never used: nothing to wipe */
        return;
    }
    g_slab = m; /* kept for the life of the process, like kb_secmem's locked pages */
    for (int i = 0; i < CA_KEYSLAB_SLOTS; i++)
        g_free[i] = CA_KEYSLAB_SLOTS - 1 - i;
    g_nfree = CA_KEYSLAB_SLOTS;
}

static int slot_take(void)
{
    int s = -1;

    pthread_once(&g_slab_once, slab_init);
    if (g_slab == NULL)
        return -1;
    pthread_mutex_lock(&g_slab_mu);
    if (g_nfree > 0)
        s = g_free[--g_nfree];
    pthread_mutex_unlock(&g_slab_mu);
    return s;
}

const uint8_t *ca_keypem_data(const ca_keypem *p)
{
    return p != NULL ? p->data : NULL;
}

size_t ca_keypem_len(const ca_keypem *p)
{
    return p != NULL ? p->len : 0;
}

int ca_keypem_in_slab(const ca_keypem *p)
{
    return p != NULL && p->sec == NULL;
}

void ca_keypem_free(ca_keypem *p)
{
    if (p == NULL)
        return;
    if (p->sec != NULL) {
        kb_secret_free(p->sec);
    } else {
        kb_wipe(p->data, CA_KEYSLAB_SLOT);
        pthread_mutex_lock(&g_slab_mu);
        g_free[g_nfree++] = p->slot;
        pthread_mutex_unlock(&g_slab_mu);
    }
    free(p);
}

/* Room for len bytes: a slab slot when one is free and big enough, else a kb_secret. */
static kb_err keypem_new(size_t len, ca_keypem **out)
{
    ca_keypem *p = calloc(1, sizeof(*p));
    int s;

    KB_ENSURE(p != NULL, KB_ERR_NOMEM);
    p->len = len;
    if (len <= CA_KEYSLAB_SLOT && (s = slot_take()) >= 0) {
        p->slot = s;
        p->data = g_slab + (size_t)s * CA_KEYSLAB_SLOT;
    } else {
        kb_err rc = kb_secret_new(len, &p->sec);
        if (rc != KB_OK) {
            free(p);
            return rc;
        }
        p->data = kb_secret_data(p->sec);
    }
    *out = p;
    return KB_OK;
}

/* ---- keys --------------------------------------------------------------------------------- */

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

kb_err ca_leafkey_pkcs8_pem(const ca_leafkey *k, ca_keypem **out)
{
    uint8_t der[PKCS8_LEN];
    ca_keypem *s = NULL;
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
    KB_GUARD_OUT(rc, keypem_new(pl, &s));
    KB_ENSURE_OUT(rc, ca_pem_write(der, sizeof(der), "PRIVATE KEY", (char *)s->data) == pl,
                  KB_ERR_INTERNAL);
    *out = s;
    s = NULL;
out:
    kb_wipe(der, sizeof(der));
    ca_keypem_free(s);
    return rc;
}
