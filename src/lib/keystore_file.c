/* keystore_file.c - development keystore: random key material in a 0600 file.
 *
 * Only for development and tests, and only when chosen explicitly: the keys sit in a file rather
 * than in a token, so anyone who can read the file (or a backup of it) holds the master key.
 *
 * File format (text, exact):
 *     "keybridge-file-keystore-v1\n" <64 hex: AES-256 wrap key> "\n" <64 hex: HMAC key> "\n"
 * Key id: "file:" || hex(SHA-256("keybridge-file-key-id-v1" || 0x00 || wrap key || mac key))[0:16
 * bytes] - a one-way, domain-separated fingerprint that changes with the keys.
 */
#include "keystore.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "buf.h"
#include "envelope.h"
#include "fileio.h"
#include "keystore_impl.h"
#include "log.h"

#define FILE_MAGIC "keybridge-file-keystore-v1\n"
#define FILE_KEY_LEN 32
#define FILE_LEN (sizeof(FILE_MAGIC) - 1 + 2 * (2 * FILE_KEY_LEN + 1))
#define KEY_ID_PREFIX "keybridge-file-key-id-v1"

#define COUNTER_SUFFIX ".counter"
#define COUNTER_MAGIC "keybridge-counter-v1\n"
#define COUNTER_FILE_MAX 64

struct file_ks {
    kb_secret *keys;    /* wrap key [0,32) then mac key [32,64) */
    char *counter_path; /* "<key file>.counter" */
};

static kb_err file_seal(void *impl, const uint8_t iv[KB_KS_IV_LEN], const uint8_t *aad,
                        size_t aad_len, const uint8_t *in, size_t len, uint8_t *out)
{
    struct file_ks *f = impl;
    return kb_aes256gcm_seal(kb_secret_cdata(f->keys), iv, KB_KS_IV_LEN, aad, aad_len, in, len, out,
                             out + len);
}

static kb_err file_open(void *impl, const uint8_t iv[KB_KS_IV_LEN], const uint8_t *aad,
                        size_t aad_len, const uint8_t *in, size_t len, uint8_t *out)
{
    struct file_ks *f = impl;
    KB_ENSURE(len >= KB_KS_TAG_LEN, KB_ERR_INTEGRITY);
    return kb_aes256gcm_open(kb_secret_cdata(f->keys), iv, KB_KS_IV_LEN, aad, aad_len, in,
                             len - KB_KS_TAG_LEN, in + len - KB_KS_TAG_LEN, out);
}

static kb_err hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *data, size_t len,
                          uint8_t out[KB_KEYSTORE_MAC_LEN])
{
    size_t outl = 0;
    /* EVP_Q_mac: one-shot HMAC; thread-safe, keeps no state between calls. */
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, data, len, out,
                  KB_KEYSTORE_MAC_LEN, &outl) == NULL ||
        outl != KB_KEYSTORE_MAC_LEN)
        return KB_ERR_CRYPTO;
    return KB_OK;
}

static kb_err file_mac(void *impl, const uint8_t *data, size_t len,
                       uint8_t out[KB_KEYSTORE_MAC_LEN])
{
    struct file_ks *f = impl;
    return hmac_sha256(kb_secret_cdata(f->keys) + FILE_KEY_LEN, FILE_KEY_LEN, data, len, out);
}

/* The state counter file: COUNTER_MAGIC, a decimal number, "\n"; 0600 (refused otherwise). */
static kb_err file_counter_get(void *impl, uint64_t *out)
{
    struct file_ks *f = impl;
    kb_secret *t = NULL;
    const char *p, *end;
    uint64_t v = 0;
    kb_err rc;

    *out = 0;
    if (access(f->counter_path, F_OK) != 0 && errno == ENOENT)
        return KB_ERR_NOT_FOUND;
    rc = kb_file_read_secret(f->counter_path, COUNTER_FILE_MAX, &t);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "keystore_counter_unreadable", "path", f->counter_path, "error",
               kb_err_str(rc), NULL);
        return rc;
    }
    p = (const char *)kb_secret_cdata(t);
    end = p + kb_secret_len(t); /* the trailing newline is stripped by kb_file_read_secret */
    rc = KB_ERR_INTEGRITY;
    if ((size_t)(end - p) > sizeof(COUNTER_MAGIC) - 1 &&
        memcmp(p, COUNTER_MAGIC, sizeof(COUNTER_MAGIC) - 1) == 0) {
        p += sizeof(COUNTER_MAGIC) - 1;
        rc = p < end && end - p <= 20 ? KB_OK : KB_ERR_INTEGRITY;
        for (; rc == KB_OK && p < end; p++) {
            if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                rc = KB_ERR_INTEGRITY;
            else
                v = v * 10 + (uint64_t)(*p - '0');
        }
    }
    kb_secret_free(t);
    if (rc != KB_OK)
        kb_log(KB_LOG_ERROR, "keystore_counter_malformed", "path", f->counter_path, NULL);
    else
        *out = v;
    return rc;
}

static kb_err file_counter_set(void *impl, uint64_t v)
{
    struct file_ks *f = impl;
    char text[COUNTER_FILE_MAX];
    int n = snprintf(text, sizeof(text), "%s%llu\n", COUNTER_MAGIC, (unsigned long long)v);
    KB_ENSURE(n > 0 && (size_t)n < sizeof(text), KB_ERR_INTERNAL);
    return kb_file_write_atomic(f->counter_path, text, (size_t)n, 0600);
}

static void file_free(void *impl)
{
    struct file_ks *f = impl;
    if (f == NULL)
        return;
    kb_secret_free(f->keys);
    free(f->counter_path);
    free(f);
}

static kb_err file_random(void *impl, uint8_t *out, size_t len)
{
    (void)impl;
    KB_ENSURE(len <= INT32_MAX && RAND_priv_bytes(out, (int)len) == 1, KB_ERR_CRYPTO);
    return KB_OK;
}

static const struct kb_keystore_ops file_ops = {
    .kind = "file",
    .seal = file_seal,
    .open = file_open,
    .mac = file_mac,
    .counter_get = file_counter_get,
    .counter_set = file_counter_set,
    .random = file_random,
    .free = file_free,
};

static kb_err write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        KB_ENSURE(w > 0, KB_ERR_IO);
        p += w;
        n -= (size_t)w;
    }
    return KB_OK;
}

kb_err kb_keystore_create_file(const char *path)
{
    kb_secret *keys = NULL, *text = NULL;
    char dir[4096];
    uint8_t *t;
    size_t off;
    int fd = -1, dfd = -1, created = 0;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(path);
    KB_ENSURE(snprintf(dir, sizeof(dir), "%s", path) < (int)sizeof(dir), KB_ERR_TOO_LARGE);
    KB_GUARD_OUT(rc, kb_secret_new(2 * FILE_KEY_LEN, &keys));
    KB_ENSURE_OUT(rc, RAND_bytes(kb_secret_data(keys), 2 * FILE_KEY_LEN) == 1, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, kb_secret_new(FILE_LEN + 1, &text)); /* +1: kb_hex writes a NUL */
    t = kb_secret_data(text);
    off = sizeof(FILE_MAGIC) - 1;
    memcpy(t, FILE_MAGIC, off);
    kb_hex(kb_secret_cdata(keys), FILE_KEY_LEN, (char *)t + off);
    off += 2 * FILE_KEY_LEN;
    t[off++] = '\n';
    kb_hex(kb_secret_cdata(keys) + FILE_KEY_LEN, FILE_KEY_LEN, (char *)t + off);
    off += 2 * FILE_KEY_LEN;
    t[off++] = '\n';

    /* O_EXCL: never overwrite an existing master key (that would orphan every wrapped key);
     * O_NOFOLLOW: never write key material through a planted symlink. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = errno == EEXIST ? KB_ERR_EXISTS : KB_ERR_IO;
        kb_log(KB_LOG_ERROR, "keystore_file_create_failed", "path", path, "error", kb_err_str(rc),
               NULL);
        goto out;
    }
    created = 1;
    KB_ENSURE_OUT(rc, fchmod(fd, 0600) == 0, KB_ERR_IO); /* whatever the umask */
    KB_GUARD_OUT(rc, write_all(fd, t, off));
    KB_ENSURE_OUT(rc, fsync(fd) == 0, KB_ERR_IO);
    KB_ENSURE_OUT(rc, close(fd) == 0, KB_ERR_IO);
    fd = -1;
    dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    KB_ENSURE_OUT(rc, dfd >= 0 && fsync(dfd) == 0, KB_ERR_IO);
out:
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    if (rc != KB_OK && created)
        unlink(path);
    kb_secret_free(keys);
    kb_secret_free(text);
    return rc;
}

static kb_err parse_file(const kb_secret *text, kb_secret *keys)
{
    kb_reader r;
    const uint8_t *p;
    size_t n;
    kb_err rc;

    /* kb_file_read_secret strips one trailing newline; accept the file with or without it. */
    kb_reader_init(&r, kb_secret_cdata(text), kb_secret_len(text));
    rc = kb_reader_bytes(&r, sizeof(FILE_MAGIC) - 1, &p);
    KB_ENSURE(rc == KB_OK && memcmp(p, FILE_MAGIC, sizeof(FILE_MAGIC) - 1) == 0, KB_ERR_INVALID);
    rc = kb_reader_until(&r, '\n', 2 * FILE_KEY_LEN, &p, &n);
    KB_ENSURE(rc == KB_OK, KB_ERR_INVALID);
    KB_ENSURE(kb_unhex((const char *)p, n, kb_secret_data(keys), FILE_KEY_LEN) == KB_OK,
              KB_ERR_INVALID);
    n = kb_reader_left(&r);
    if (n == 2 * FILE_KEY_LEN + 1 && kb_secret_cdata(text)[kb_secret_len(text) - 1] == '\n')
        n--;
    KB_ENSURE(kb_reader_bytes(&r, n, &p) == KB_OK, KB_ERR_INVALID);
    KB_ENSURE(kb_unhex((const char *)p, n, kb_secret_data(keys) + FILE_KEY_LEN, FILE_KEY_LEN) ==
                  KB_OK,
              KB_ERR_INVALID);
    return KB_OK;
}

kb_err kb_keystore_open_file(const char *path, kb_keystore **out)
{
    struct file_ks *f = NULL;
    kb_secret *text = NULL;
    uint8_t *idin = NULL;
    uint8_t digest[32];
    size_t plen = sizeof(KEY_ID_PREFIX); /* with its NUL separator */
    char hex[2 * 16 + 1];
    char key_id[sizeof("file:") + sizeof(hex)];
    kb_err rc = KB_OK;

    KB_ENSURE_REF(path);
    KB_ENSURE_REF(out);
    *out = NULL;
    rc = kb_file_read_secret(path, FILE_LEN, &text);
    if (rc != KB_OK) {
        /* KB_ERR_CONFIG here means group/other may access the file: refuse to use it. */
        kb_log(KB_LOG_ERROR, "keystore_file_open_failed", "path", path, "error", kb_err_str(rc),
               "hint",
               rc == KB_ERR_CONFIG ? "key file must not be accessible to group or others (0600)"
                                   : "cannot read key file",
               NULL);
        goto out;
    }
    f = calloc(1, sizeof(*f));
    KB_ENSURE_OUT(rc, f != NULL, KB_ERR_NOMEM);
    f->counter_path = malloc(strlen(path) + sizeof(COUNTER_SUFFIX));
    KB_ENSURE_OUT(rc, f->counter_path != NULL, KB_ERR_NOMEM);
    memcpy(f->counter_path, path, strlen(path));
    memcpy(f->counter_path + strlen(path), COUNTER_SUFFIX, sizeof(COUNTER_SUFFIX));
    KB_GUARD_OUT(rc, kb_secret_new(2 * FILE_KEY_LEN, &f->keys));
    rc = parse_file(text, f->keys);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "keystore_file_malformed", "path", path, NULL);
        goto out;
    }
    idin = malloc(plen + 2 * FILE_KEY_LEN);
    KB_ENSURE_OUT(rc, idin != NULL, KB_ERR_NOMEM);
    memcpy(idin, KEY_ID_PREFIX, plen);
    memcpy(idin + plen, kb_secret_cdata(f->keys), 2 * FILE_KEY_LEN);
    KB_ENSURE_OUT(rc,
                  EVP_Digest(idin, plen + 2 * FILE_KEY_LEN, digest, NULL, EVP_sha256(), NULL) == 1,
                  KB_ERR_CRYPTO);
    kb_hex(digest, 16, hex);
    snprintf(key_id, sizeof(key_id), "file:%s", hex);
    rc = kb_keystore_new(&file_ops, f, key_id, out);
    f = NULL; /* owned by the keystore, or freed by kb_keystore_new on failure */
out:
    if (idin != NULL) {
        kb_wipe(idin, plen + 2 * FILE_KEY_LEN);
        free(idin);
    }
    file_free(f);
    kb_secret_free(text);
    return rc;
}

/* ---- development EC signing key (PKCS#8 PEM, 0600) ---------------------------------------- */

#include <openssl/pem.h>
#include <openssl/x509.h>

#define EC_FILE_MAX ((size_t)16 * 1024)

struct file_ec {
    EVP_PKEY *key;
};

static kb_err file_ec_sign(void *impl, const uint8_t digest[32], uint8_t der[KB_EC_SIG_DER_MAX],
                           size_t *der_len)
{
    struct file_ec *f = impl;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(f->key, NULL);
    size_t n = KB_EC_SIG_DER_MAX;
    kb_err rc = KB_ERR_CRYPTO;

    if (c != NULL && EVP_PKEY_sign_init(c) == 1 && EVP_PKEY_sign(c, der, &n, digest, 32) == 1) {
        *der_len = n;
        rc = KB_OK;
    }
    EVP_PKEY_CTX_free(c);
    return rc;
}

static void file_ec_free(void *impl)
{
    struct file_ec *f = impl;

    if (f == NULL)
        return;
    EVP_PKEY_free(f->key); /* OpenSSL clears private key material on free */
    free(f);
}

static const struct kb_ec_signer_ops file_ec_ops = {
    .kind = "file",
    .sign = file_ec_sign,
    .free = file_ec_free,
};

static int is_p256(EVP_PKEY *k)
{
    char group[32] = "";
    size_t gl = 0;

    if (k == NULL || EVP_PKEY_get_base_id(k) != EVP_PKEY_EC)
        return 0;
    if (EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof(group), &gl) != 1)
        return 0;
    return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

/* A public-only copy (SubjectPublicKeyInfo round trip), so callers never hold the private key. */
static EVP_PKEY *public_copy(EVP_PKEY *k)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    EVP_PKEY *pub = NULL;
    int n = i2d_PUBKEY(k, &der);

    if (n > 0) {
        p = der;
        pub = d2i_PUBKEY(NULL, &p, n);
    }
    OPENSSL_free(der);
    return pub;
}

kb_err kb_keystore_ec_create_file(const char *path)
{
    EVP_PKEY *k = NULL;
    BIO *b = NULL;
    char *pem = NULL;
    long n;
    int fd = -1;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(path);
    k = EVP_EC_gen("P-256");
    KB_ENSURE_OUT(rc, k != NULL, KB_ERR_CRYPTO);
    b = BIO_new(BIO_s_secmem());
    KB_ENSURE_OUT(rc, b != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1,
                  KB_ERR_CRYPTO);
    n = BIO_get_mem_data(b, &pem);
    KB_ENSURE_OUT(rc, n > 0, KB_ERR_CRYPTO);
    /* O_EXCL: never replace an existing key (a CA key lost is a trust domain lost). */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = errno == EEXIST ? KB_ERR_EXISTS : KB_ERR_IO;
        goto out;
    }
    KB_ENSURE_OUT(rc, write(fd, pem, (size_t)n) == (ssize_t)n, KB_ERR_IO);
    KB_ENSURE_OUT(rc, fchmod(fd, 0600) == 0 && fsync(fd) == 0, KB_ERR_IO);
out:
    if (fd >= 0 && close(fd) != 0 && rc == KB_OK)
        rc = KB_ERR_IO;
    if (fd >= 0 && rc != KB_OK)
        (void)unlink(path);
    BIO_free(b); /* secmem BIO: cleansed on free */
    EVP_PKEY_free(k);
    return rc;
}

kb_err kb_keystore_ec_open_file(const char *path, kb_ec_signer **out)
{
    kb_secret *pem = NULL;
    struct file_ec *f = NULL;
    EVP_PKEY *pub = NULL;
    BIO *b = NULL;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(path);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD(kb_file_read_secret(path, EC_FILE_MAX, &pem));
    f = calloc(1, sizeof(*f));
    KB_ENSURE_OUT(rc, f != NULL, KB_ERR_NOMEM);
    b = BIO_new_mem_buf(kb_secret_cdata(pem), (int)kb_secret_len(pem));
    KB_ENSURE_OUT(rc, b != NULL, KB_ERR_NOMEM);
    f->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    KB_ENSURE_OUT(rc, f->key != NULL && is_p256(f->key), KB_ERR_INVALID);
    pub = public_copy(f->key);
    KB_ENSURE_OUT(rc, pub != NULL, KB_ERR_CRYPTO);
    rc = kb_ec_signer_new(&file_ec_ops, f, pub, out);
    f = NULL;
out:
    BIO_free(b);
    kb_secret_free(pem);
    file_ec_free(f);
    return rc;
}
