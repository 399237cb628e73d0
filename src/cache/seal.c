/* seal.c - key file and AES-256-GCM sealing for keybridge-cache (see seal.h). */
#include "seal.h"

#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "lib/fileio.h"

#define AAD_DOMAIN "keybridge-cache value v1"

kb_err cache_key_generate(const char *path)
{
    uint8_t raw[CACHE_KEY_LEN];
    char hex[2 * CACHE_KEY_LEN + 2];
    kb_err rc = KB_OK;
    int fd = -1;
    size_t off = 0;

    KB_ENSURE_REF(path);
    KB_ENSURE_OUT(rc, RAND_bytes(raw, sizeof(raw)) == 1, KB_ERR_CRYPTO);
    kb_hex(raw, sizeof(raw), hex);
    hex[2 * CACHE_KEY_LEN] = '\n';
    hex[2 * CACHE_KEY_LEN + 1] = '\0';
    /* O_EXCL|O_NOFOLLOW: never replace an existing key (that would orphan every stored value),
     * never write through a planted symlink. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = errno == EEXIST ? KB_ERR_EXISTS : KB_ERR_IO;
        goto out;
    }
    while (off < sizeof(hex) - 1) {
        ssize_t w = write(fd, hex + off, sizeof(hex) - 1 - off);
        if (w < 0 && errno == EINTR)
            continue;
        KB_ENSURE_OUT(rc, w > 0, KB_ERR_IO);
        off += (size_t)w;
    }
    KB_ENSURE_OUT(rc, fchmod(fd, 0600) == 0 && fsync(fd) == 0, KB_ERR_IO);
out:
    if (fd >= 0 && close(fd) != 0 && rc == KB_OK)
        rc = KB_ERR_IO;
    if (rc != KB_OK && rc != KB_ERR_EXISTS && fd >= 0)
        (void)unlink(path);
    kb_wipe(raw, sizeof(raw));
    kb_wipe(hex, sizeof(hex));
    return rc;
}

kb_err cache_key_load(const char *path, kb_secret **out)
{
    kb_secret *file = NULL, *key = NULL;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD_OUT(rc, kb_file_read_secret(path, 2 * CACHE_KEY_LEN + 2, &file));
    KB_ENSURE_OUT(rc, kb_secret_len(file) == 2 * CACHE_KEY_LEN, KB_ERR_INVALID);
    KB_GUARD_OUT(rc, kb_secret_new(CACHE_KEY_LEN, &key));
    KB_GUARD_OUT(rc, kb_unhex((const char *)kb_secret_cdata(file), kb_secret_len(file),
                              kb_secret_data(key), CACHE_KEY_LEN));
    *out = key;
    key = NULL;
out:
    kb_secret_free(file);
    kb_secret_free(key);
    return rc;
}

static kb_err aad_add(kb_dbuf *b, const char *s)
{
    size_t n = strlen(s);
    uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    KB_GUARD(kb_dbuf_add(b, len, sizeof(len)));
    return kb_dbuf_add(b, s, n);
}

/* Length-prefixed fields, so ("a","bc") and ("ab","c") never give the same AAD. */
static kb_err build_aad(kb_dbuf *b, const char *account, const char *arn, const char *version_id)
{
    KB_ENSURE_REF(account);
    KB_ENSURE_REF(arn);
    KB_ENSURE_REF(version_id);
    KB_GUARD(aad_add(b, AAD_DOMAIN));
    KB_GUARD(aad_add(b, account));
    KB_GUARD(aad_add(b, arn));
    return aad_add(b, version_id);
}

kb_err cache_seal(const kb_secret *key, const char *account, const char *arn,
                  const char *version_id, const uint8_t *pt, size_t len, kb_dbuf *out)
{
    EVP_CIPHER_CTX *ctx = NULL;
    kb_dbuf aad;
    uint8_t *blob = NULL;
    kb_err rc = KB_OK;
    int n = 0;

    kb_dbuf_init(&aad, 8192);
    KB_ENSURE_OUT(rc, key && out && (pt || len == 0), KB_ERR_NULL);
    KB_ENSURE_OUT(rc, kb_secret_len(key) == CACHE_KEY_LEN, KB_ERR_INTERNAL);
    KB_ENSURE_OUT(rc, len <= INT32_MAX, KB_ERR_TOO_LARGE);
    KB_GUARD_OUT(rc, build_aad(&aad, account, arn, version_id));
    blob = malloc(len + CACHE_SEAL_OVERHEAD);
    KB_ENSURE_OUT(rc, blob != NULL, KB_ERR_NOMEM);
    /* Random 96-bit nonces: far below the 2^32 invocations per key of SP 800-38D 8.3. */
    KB_ENSURE_OUT(rc, RAND_bytes(blob, CACHE_SEAL_NONCE_LEN) == 1, KB_ERR_CRYPTO);
    ctx = EVP_CIPHER_CTX_new();
    KB_ENSURE_OUT(rc, ctx != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc,
                  EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, kb_secret_cdata(key), blob) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_EncryptUpdate(ctx, NULL, &n, aad.p, (int)aad.len) == 1, KB_ERR_CRYPTO);
    if (len > 0)
        KB_ENSURE_OUT(rc,
                      EVP_EncryptUpdate(ctx, blob + CACHE_SEAL_NONCE_LEN, &n, pt, (int)len) == 1 &&
                          (size_t)n == len,
                      KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_EncryptFinal_ex(ctx, blob + CACHE_SEAL_NONCE_LEN + len, &n) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc,
                  EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CACHE_SEAL_TAG_LEN,
                                      blob + CACHE_SEAL_NONCE_LEN + len) == 1,
                  KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, kb_dbuf_add(out, blob, len + CACHE_SEAL_OVERHEAD));
out:
    EVP_CIPHER_CTX_free(ctx);
    kb_dbuf_free(&aad);
    free(blob);
    return rc;
}

kb_err cache_unseal_to(const kb_secret *key, const char *account, const char *arn,
                       const char *version_id, const uint8_t *blob, size_t len, uint8_t *out,
                       size_t cap, size_t *out_len)
{
    EVP_CIPHER_CTX *ctx = NULL;
    kb_dbuf aad;
    uint8_t tag[CACHE_SEAL_TAG_LEN];
    size_t ct_len = 0;
    kb_err rc = KB_OK;
    int n = 0;

    kb_dbuf_init(&aad, 8192);
    KB_ENSURE_OUT(rc, key && blob && out_len && (out || cap == 0), KB_ERR_NULL);
    *out_len = 0;
    KB_ENSURE_OUT(rc, kb_secret_len(key) == CACHE_KEY_LEN, KB_ERR_INTERNAL);
    KB_ENSURE_OUT(rc, len >= CACHE_SEAL_OVERHEAD, KB_ERR_INTEGRITY);
    ct_len = len - CACHE_SEAL_OVERHEAD;
    KB_ENSURE_OUT(rc, ct_len <= INT32_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE_OUT(rc, ct_len <= cap, KB_ERR_TOO_LARGE);
    KB_GUARD_OUT(rc, build_aad(&aad, account, arn, version_id));
    memcpy(tag, blob + len - CACHE_SEAL_TAG_LEN, sizeof(tag));
    ctx = EVP_CIPHER_CTX_new();
    KB_ENSURE_OUT(rc, ctx != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc,
                  EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, kb_secret_cdata(key), blob) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_DecryptUpdate(ctx, NULL, &n, aad.p, (int)aad.len) == 1, KB_ERR_CRYPTO);
    if (ct_len > 0)
        KB_ENSURE_OUT(
            rc, EVP_DecryptUpdate(ctx, out, &n, blob + CACHE_SEAL_NONCE_LEN, (int)ct_len) == 1,
            KB_ERR_INTEGRITY);
    KB_ENSURE_OUT(rc, EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, sizeof(tag), tag) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, EVP_DecryptFinal_ex(ctx, tag, &n) == 1, KB_ERR_INTEGRITY);
    *out_len = ct_len;
out:
    /* A plaintext that failed authentication is never handed out. */
    if (rc != KB_OK && out != NULL && ct_len <= cap)
        kb_wipe(out, ct_len);
    EVP_CIPHER_CTX_free(ctx);
    kb_dbuf_free(&aad);
    return rc;
}

kb_err cache_unseal(const kb_secret *key, const char *account, const char *arn,
                    const char *version_id, const uint8_t *blob, size_t len, kb_secret **out)
{
    kb_secret *pt = NULL;
    size_t n = 0;
    kb_err rc = KB_OK;

    KB_ENSURE_OUT(rc, key && out && blob, KB_ERR_NULL);
    *out = NULL;
    KB_ENSURE_OUT(rc, len >= CACHE_SEAL_OVERHEAD, KB_ERR_INTEGRITY);
    KB_GUARD_OUT(rc, kb_secret_new(len - CACHE_SEAL_OVERHEAD, &pt));
    KB_GUARD_OUT(rc, cache_unseal_to(key, account, arn, version_id, blob, len, kb_secret_data(pt),
                                     kb_secret_len(pt), &n));
    *out = pt;
    pt = NULL;
out:
    kb_secret_free(pt);
    return rc;
}

kb_err cache_key_derive(const kb_secret *key, const char *label, kb_secret **out)
{
    kb_secret *d = NULL;
    unsigned int n = 0;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(key);
    KB_ENSURE_REF(label);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD(kb_secret_new(32, &d));
    KB_ENSURE_OUT(rc,
                  HMAC(EVP_sha256(), kb_secret_cdata(key), (int)kb_secret_len(key),
                       (const unsigned char *)label, strlen(label), kb_secret_data(d),
                       &n) != NULL &&
                      n == 32,
                  KB_ERR_CRYPTO);
    *out = d;
    d = NULL;
out:
    kb_secret_free(d);
    return rc;
}
