/* envelope.c - per-version data keys, AES-256-GCM contents, keyed checksums (see envelope.h). */
#include "envelope.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#define CONTENT_AAD_PREFIX "keybridge-content-v1"
#define CHECKSUM_PREFIX "keybridge-checksum-v1"
#define CONTENT_AAD_LEN (sizeof(CONTENT_AAD_PREFIX) - 1 + 8 + 8)

static void put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static void content_aad(uint64_t secret_id, uint64_t version, uint8_t aad[CONTENT_AAD_LEN])
{
    size_t plen = sizeof(CONTENT_AAD_PREFIX) - 1;
    memcpy(aad, CONTENT_AAD_PREFIX, plen);
    put_u64be(aad + plen, secret_id);
    put_u64be(aad + plen + 8, version);
}

kb_err kb_aes256gcm_seal(const uint8_t key[32], const uint8_t *iv, size_t iv_len,
                         const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t len,
                         uint8_t *ct, uint8_t tag[16])
{
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t fin[16];
    kb_err rc = KB_OK;
    int n = 0;

    KB_ENSURE_REF(key);
    KB_ENSURE_REF(iv);
    KB_ENSURE_REF(tag);
    KB_ENSURE((aad != NULL || aad_len == 0) && ((pt != NULL && ct != NULL) || len == 0),
              KB_ERR_NULL);
    KB_ENSURE(iv_len > 0 && iv_len <= INT_MAX && aad_len <= INT_MAX && len <= INT_MAX,
              KB_ERR_TOO_LARGE);
    ctx = EVP_CIPHER_CTX_new();
    KB_ENSURE(ctx != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)iv_len, NULL) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_EncryptInit_ex(ctx, NULL, NULL, key, iv) == 1, KB_ERR_CRYPTO);
    if (aad_len)
        KB_ENSURE_OUT(rc, EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1, KB_ERR_CRYPTO);
    if (len)
        KB_ENSURE_OUT(rc, EVP_EncryptUpdate(ctx, ct, &n, pt, (int)len) == 1 && (size_t)n == len,
                      KB_ERR_CRYPTO);
    /* GCM's final step writes no bytes; a scratch block avoids arithmetic on a NULL ct. */
    KB_ENSURE_OUT(rc, EVP_EncryptFinal_ex(ctx, fin, &n) == 1 && n == 0, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1, KB_ERR_CRYPTO);
out:
    EVP_CIPHER_CTX_free(ctx); /* cleanses the key schedule */
    return rc;
}

kb_err kb_aes256gcm_open(const uint8_t key[32], const uint8_t *iv, size_t iv_len,
                         const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t len,
                         const uint8_t tag[16], uint8_t *pt)
{
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t t[16], fin[16];
    kb_err rc = KB_OK;
    int n = 0;

    KB_ENSURE_REF(key);
    KB_ENSURE_REF(iv);
    KB_ENSURE_REF(tag);
    KB_ENSURE((aad != NULL || aad_len == 0) && ((pt != NULL && ct != NULL) || len == 0),
              KB_ERR_NULL);
    KB_ENSURE(iv_len > 0 && iv_len <= INT_MAX && aad_len <= INT_MAX && len <= INT_MAX,
              KB_ERR_TOO_LARGE);
    memcpy(t, tag, sizeof(t));
    ctx = EVP_CIPHER_CTX_new();
    KB_ENSURE(ctx != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)iv_len, NULL) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_DecryptInit_ex(ctx, NULL, NULL, key, iv) == 1, KB_ERR_CRYPTO);
    if (aad_len)
        KB_ENSURE_OUT(rc, EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1, KB_ERR_CRYPTO);
    if (len)
        KB_ENSURE_OUT(rc, EVP_DecryptUpdate(ctx, pt, &n, ct, (int)len) == 1 && (size_t)n == len,
                      KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, t) == 1, KB_ERR_CRYPTO);
    /* OpenSSL compares the tag in constant time (CRYPTO_memcmp in the GCM final step). */
    KB_ENSURE_OUT(rc, EVP_DecryptFinal_ex(ctx, fin, &n) == 1, KB_ERR_INTEGRITY);
out:
    if (rc != KB_OK && pt != NULL)
        kb_wipe(pt, len); /* never hand out unauthenticated plaintext */
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

kb_err kb_envelope_seal(kb_keystore *ks, uint64_t secret_id, uint64_t version, const uint8_t *plain,
                        size_t len, kb_envelope *out)
{
    uint8_t aad[CONTENT_AAD_LEN];
    kb_envelope e = {0};
    kb_secret *dk = NULL;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(ks);
    KB_ENSURE_REF(out);
    KB_ENSURE(plain != NULL || len == 0, KB_ERR_NULL);
    KB_ENSURE(len <= KB_ENVELOPE_PLAIN_MAX, KB_ERR_TOO_LARGE);
    KB_GUARD(kb_secret_new(KB_KEYSTORE_DK_LEN, &dk));
    KB_ENSURE_OUT(rc, RAND_bytes(kb_secret_data(dk), KB_KEYSTORE_DK_LEN) == 1, KB_ERR_CRYPTO);
    e.sealed_len = KB_ENVELOPE_OVERHEAD + len;
    e.sealed = malloc(e.sealed_len);
    KB_ENSURE_OUT(rc, e.sealed != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, RAND_bytes(e.sealed, KB_ENVELOPE_IV_LEN) == 1, KB_ERR_CRYPTO);
    content_aad(secret_id, version, aad);
    KB_GUARD_OUT(rc, kb_aes256gcm_seal(kb_secret_cdata(dk), e.sealed, KB_ENVELOPE_IV_LEN, aad,
                                       sizeof(aad), plain, len, e.sealed + KB_ENVELOPE_IV_LEN,
                                       e.sealed + KB_ENVELOPE_IV_LEN + len));
    KB_GUARD_OUT(rc, kb_keystore_wrap(ks, dk, &e.wrapped, &e.wrapped_len));
    e.key_id = strdup(kb_keystore_key_id(ks));
    KB_ENSURE_OUT(rc, e.key_id != NULL, KB_ERR_NOMEM);
    *out = e;
    memset(&e, 0, sizeof(e));
out:
    kb_envelope_clear(&e);
    kb_secret_free(dk);
    return rc;
}

kb_err kb_envelope_open_with_key(const kb_secret *dk, uint64_t secret_id, uint64_t version,
                                 const uint8_t *sealed, size_t sealed_len, kb_secret **plain)
{
    uint8_t aad[CONTENT_AAD_LEN];
    kb_secret *p = NULL;
    size_t len;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(dk);
    KB_ENSURE_REF(plain);
    *plain = NULL;
    KB_ENSURE(sealed != NULL || sealed_len == 0, KB_ERR_NULL);
    KB_ENSURE(kb_secret_len(dk) == KB_KEYSTORE_DK_LEN, KB_ERR_INVALID);
    /* Shorter than iv + tag cannot be a sealed content: stored data was cut. */
    KB_ENSURE(sealed_len >= KB_ENVELOPE_OVERHEAD, KB_ERR_INTEGRITY);
    len = sealed_len - KB_ENVELOPE_OVERHEAD;
    KB_ENSURE(len <= KB_ENVELOPE_PLAIN_MAX, KB_ERR_TOO_LARGE);
    KB_GUARD(kb_secret_new(len, &p));
    content_aad(secret_id, version, aad);
    KB_GUARD_OUT(rc, kb_aes256gcm_open(kb_secret_cdata(dk), sealed, KB_ENVELOPE_IV_LEN, aad,
                                       sizeof(aad), sealed + KB_ENVELOPE_IV_LEN, len,
                                       sealed + KB_ENVELOPE_IV_LEN + len, kb_secret_data(p)));
    *plain = p;
    p = NULL;
out:
    kb_secret_free(p);
    return rc;
}

kb_err kb_envelope_open(kb_keystore *ks, uint64_t secret_id, uint64_t version,
                        const kb_envelope *in, kb_secret **plain)
{
    kb_secret *dk = NULL;
    kb_err rc;

    KB_ENSURE_REF(ks);
    KB_ENSURE_REF(in);
    KB_ENSURE_REF(plain);
    *plain = NULL;
    KB_ENSURE(in->key_id != NULL, KB_ERR_INTEGRITY);
    /* Check the sealed part's shape before spending a token operation on its key. */
    KB_ENSURE(in->sealed != NULL && in->sealed_len >= KB_ENVELOPE_OVERHEAD, KB_ERR_INTEGRITY);
    KB_GUARD(kb_keystore_unwrap(ks, in->key_id, in->wrapped, in->wrapped_len, &dk));
    rc = kb_envelope_open_with_key(dk, secret_id, version, in->sealed, in->sealed_len, plain);
    kb_secret_free(dk);
    return rc;
}

void kb_envelope_clear(kb_envelope *e)
{
    if (e == NULL)
        return;
    free(e->wrapped);
    free(e->key_id);
    free(e->sealed);
    memset(e, 0, sizeof(*e));
}

kb_err kb_checksum(const kb_secret *checksum_key, uint64_t secret_id, uint64_t version,
                   const uint8_t *content, size_t len, uint8_t out[32])
{
    uint8_t hdr[sizeof(CHECKSUM_PREFIX) - 1 + 24];
    size_t plen = sizeof(CHECKSUM_PREFIX) - 1;
    EVP_MAC *mac = NULL;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    size_t outl = 0;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(checksum_key);
    KB_ENSURE_REF(out);
    KB_ENSURE(content != NULL || len == 0, KB_ERR_NULL);
    KB_ENSURE(kb_secret_len(checksum_key) == KB_KEYSTORE_MAC_LEN, KB_ERR_INVALID);
    memcpy(hdr, CHECKSUM_PREFIX, plen);
    put_u64be(hdr + plen, secret_id);
    put_u64be(hdr + plen + 8, version);
    /* The length makes the encoding injective even if a suffix is ever appended (RFC 2104
     * leaves framing to the caller). */
    put_u64be(hdr + plen + 16, (uint64_t)len);
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    KB_ENSURE_OUT(rc, mac != NULL, KB_ERR_CRYPTO);
    ctx = EVP_MAC_CTX_new(mac);
    KB_ENSURE_OUT(rc, ctx != NULL, KB_ERR_NOMEM);
    params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    KB_ENSURE_OUT(
        rc, EVP_MAC_init(ctx, kb_secret_cdata(checksum_key), KB_KEYSTORE_MAC_LEN, params) == 1,
        KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_MAC_update(ctx, hdr, sizeof(hdr)) == 1, KB_ERR_CRYPTO);
    if (len)
        KB_ENSURE_OUT(rc, EVP_MAC_update(ctx, content, len) == 1, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_MAC_final(ctx, out, &outl, 32) == 1 && outl == 32, KB_ERR_CRYPTO);
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    if (rc != KB_OK)
        memset(out, 0, 32);
    return rc;
}
