/* keystore.c - backend-independent half of the keystore: blob format, key ids, labels, counters.
 *
 * Wrapped data key blob (docs/internals/keystore.md):
 *     u8 version (1) || iv[12] || AES-256-GCM(master, iv, aad, dk)[32] || tag[16]
 *     aad = "keybridge-wrap-v1" || 0x00 || key_id
 * Binding the key id in the AAD means a blob re-labelled with another key id fails its tag even
 * if two ids ever named the same key. The IV is random (NIST SP 800-38D 8.2.2): with at most
 * 2^32 wraps per master key the collision bound holds; rotation re-wraps under a new key.
 */
#include "keystore.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "keystore_impl.h"

#define WRAP_VERSION 1
#define WRAP_AAD_PREFIX "keybridge-wrap-v1"
/* The NUL after the prefix cannot occur in a derive label (labels are C strings), so no derive
 * input ever equals a sign input. */
#define SIGN_PREFIX "keybridge-sign-v1"

struct kb_keystore {
    const struct kb_keystore_ops *ops;
    void *impl;
    char *key_id;
    atomic_uint_fast64_t wraps;
    atomic_uint_fast64_t unwraps;
    atomic_uint_fast64_t other;
    pthread_mutex_t cmu; /* serialises the state counter's read-compare-write */
};

kb_err kb_keystore_new(const struct kb_keystore_ops *ops, void *impl, const char *key_id,
                       kb_keystore **out)
{
    kb_keystore *ks = NULL;
    kb_err rc = KB_OK;

    KB_ENSURE_OUT(rc, ops != NULL && impl != NULL && key_id != NULL && out != NULL, KB_ERR_NULL);
    *out = NULL;
    KB_ENSURE_OUT(rc, strlen(key_id) <= KB_KEYSTORE_KEY_ID_MAX, KB_ERR_TOO_LARGE);
    ks = calloc(1, sizeof(*ks));
    KB_ENSURE_OUT(rc, ks != NULL, KB_ERR_NOMEM);
    ks->key_id = strdup(key_id);
    KB_ENSURE_OUT(rc, ks->key_id != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, pthread_mutex_init(&ks->cmu, NULL) == 0, KB_ERR_INTERNAL);
    ks->ops = ops;
    ks->impl = impl;
    atomic_init(&ks->wraps, 0);
    atomic_init(&ks->unwraps, 0);
    atomic_init(&ks->other, 0);
    *out = ks;
    ks = NULL;
    impl = NULL;
out:
    if (ks != NULL) {
        free(ks->key_id);
        free(ks);
    }
    if (impl != NULL && ops != NULL)
        ops->free(impl);
    return rc;
}

void kb_keystore_free(kb_keystore *ks)
{
    if (ks == NULL)
        return;
    ks->ops->free(ks->impl);
    pthread_mutex_destroy(&ks->cmu);
    free(ks->key_id);
    free(ks);
}

const char *kb_keystore_key_id(const kb_keystore *ks)
{
    return ks ? ks->key_id : NULL;
}

const char *kb_keystore_kind(const kb_keystore *ks)
{
    return ks ? ks->ops->kind : NULL;
}

static kb_err wrap_aad(const kb_keystore *ks, uint8_t *aad, size_t cap, size_t *len)
{
    size_t plen = sizeof(WRAP_AAD_PREFIX); /* includes the NUL separator */
    size_t klen = strlen(ks->key_id);

    KB_ENSURE(plen + klen <= cap, KB_ERR_INTERNAL);
    memcpy(aad, WRAP_AAD_PREFIX, plen);
    memcpy(aad + plen, ks->key_id, klen);
    *len = plen + klen;
    return KB_OK;
}

kb_err kb_keystore_wrap(kb_keystore *ks, const kb_secret *dk, uint8_t **blob, size_t *len)
{
    uint8_t aad[sizeof(WRAP_AAD_PREFIX) + KB_KEYSTORE_KEY_ID_MAX];
    uint8_t *b = NULL;
    size_t aad_len;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(ks);
    KB_ENSURE_REF(dk);
    KB_ENSURE_REF(blob);
    KB_ENSURE_REF(len);
    *blob = NULL;
    *len = 0;
    KB_ENSURE(kb_secret_len(dk) == KB_KEYSTORE_DK_LEN, KB_ERR_INVALID);
    KB_GUARD(wrap_aad(ks, aad, sizeof(aad), &aad_len));
    b = malloc(KB_KEYSTORE_BLOB_LEN);
    KB_ENSURE(b != NULL, KB_ERR_NOMEM);
    b[0] = WRAP_VERSION;
    KB_ENSURE_OUT(rc, RAND_bytes(b + 1, KB_KS_IV_LEN) == 1, KB_ERR_CRYPTO);
    atomic_fetch_add(&ks->wraps, 1);
    KB_GUARD_OUT(rc, ks->ops->seal(ks->impl, b + 1, aad, aad_len, kb_secret_cdata(dk),
                                   KB_KEYSTORE_DK_LEN, b + 1 + KB_KS_IV_LEN));
    *blob = b;
    *len = KB_KEYSTORE_BLOB_LEN;
    b = NULL;
out:
    free(b);
    return rc;
}

kb_err kb_keystore_unwrap(kb_keystore *ks, const char *key_id, const uint8_t *blob, size_t len,
                          kb_secret **dk)
{
    uint8_t aad[sizeof(WRAP_AAD_PREFIX) + KB_KEYSTORE_KEY_ID_MAX];
    kb_secret *k = NULL;
    size_t aad_len;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(ks);
    KB_ENSURE_REF(key_id);
    KB_ENSURE_REF(dk);
    *dk = NULL;
    KB_ENSURE(blob != NULL || len == 0, KB_ERR_NULL);
    /* Another master key wrapped it (rotation): the caller must find that keystore. */
    KB_ENSURE(strcmp(key_id, ks->key_id) == 0, KB_ERR_NOT_FOUND);
    KB_ENSURE(len == KB_KEYSTORE_BLOB_LEN && blob[0] == WRAP_VERSION, KB_ERR_INTEGRITY);
    KB_GUARD(wrap_aad(ks, aad, sizeof(aad), &aad_len));
    KB_GUARD(kb_secret_new(KB_KEYSTORE_DK_LEN, &k));
    atomic_fetch_add(&ks->unwraps, 1);
    KB_GUARD_OUT(rc, ks->ops->open(ks->impl, blob + 1, aad, aad_len, blob + 1 + KB_KS_IV_LEN,
                                   KB_KEYSTORE_DK_LEN + KB_KS_TAG_LEN, kb_secret_data(k)));
    *dk = k;
    k = NULL;
out:
    kb_secret_free(k);
    return rc;
}

static int label_ok(const char *label)
{
    size_t n = strlen(label);

    if (n == 0 || n > KB_KEYSTORE_LABEL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = label[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

kb_err kb_keystore_derive(kb_keystore *ks, const char *label, kb_secret **out)
{
    kb_secret *k = NULL;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(ks);
    KB_ENSURE_REF(label);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(label_ok(label), KB_ERR_INVALID);
    KB_GUARD(kb_secret_new(KB_KEYSTORE_MAC_LEN, &k));
    atomic_fetch_add(&ks->other, 1);
    KB_GUARD_OUT(rc,
                 ks->ops->mac(ks->impl, (const uint8_t *)label, strlen(label), kb_secret_data(k)));
    *out = k;
    k = NULL;
out:
    kb_secret_free(k);
    return rc;
}

kb_err kb_keystore_random(kb_keystore *ks, uint8_t *out, size_t len)
{
    KB_ENSURE_REF(ks);
    KB_ENSURE(out != NULL || len == 0, KB_ERR_NULL);
    while (len > 0) {
        size_t n = len < KB_KEYSTORE_RANDOM_MAX ? len : KB_KEYSTORE_RANDOM_MAX;
        atomic_fetch_add(&ks->other, 1);
        kb_err rc = ks->ops->random(ks->impl, out, n);
        if (rc != KB_OK) {
            kb_wipe(out, len);
            return rc;
        }
        out += n;
        len -= n;
    }
    return KB_OK;
}

/* Largest input to sign/verify: audit chain heads are small; the bound keeps the copy below
 * (prefix || data, needed because C_Sign takes one buffer) from growing without limit. */
#define SIGN_DATA_MAX ((size_t)1024 * 1024)

static kb_err sign_raw(kb_keystore *ks, const uint8_t *data, size_t len, uint8_t sig[32])
{
    size_t plen = sizeof(SIGN_PREFIX); /* includes the NUL separator */
    uint8_t *msg;
    kb_err rc;

    KB_ENSURE_REF(ks);
    KB_ENSURE_REF(sig);
    KB_ENSURE(data != NULL || len == 0, KB_ERR_NULL);
    KB_ENSURE(len <= SIGN_DATA_MAX, KB_ERR_TOO_LARGE);
    msg = malloc(plen + len);
    KB_ENSURE(msg != NULL, KB_ERR_NOMEM);
    memcpy(msg, SIGN_PREFIX, plen);
    if (len)
        memcpy(msg + plen, data, len);
    atomic_fetch_add(&ks->other, 1);
    rc = ks->ops->mac(ks->impl, msg, plen + len, sig);
    free(msg);
    return rc;
}

kb_err kb_keystore_sign(kb_keystore *ks, const uint8_t *data, size_t len, uint8_t sig[32])
{
    kb_err rc = sign_raw(ks, data, len, sig);
    if (rc != KB_OK && sig != NULL)
        memset(sig, 0, KB_KEYSTORE_MAC_LEN);
    return rc;
}

kb_err kb_keystore_verify(kb_keystore *ks, const uint8_t *data, size_t len, const uint8_t sig[32])
{
    uint8_t want[KB_KEYSTORE_MAC_LEN];
    kb_err rc;

    KB_ENSURE_REF(sig);
    rc = sign_raw(ks, data, len, want);
    if (rc == KB_OK && !kb_ct_eq(want, sig, sizeof(want)))
        rc = KB_ERR_INTEGRITY;
    kb_wipe(want, sizeof(want));
    return rc;
}

kb_err kb_keystore_counter_read(kb_keystore *ks, uint64_t *out)
{
    kb_err rc;
    KB_ENSURE_REF(ks);
    KB_ENSURE_REF(out);
    *out = 0;
    KB_ENSURE(ks->ops->counter_get != NULL, KB_ERR_UNAVAILABLE);
    pthread_mutex_lock(&ks->cmu);
    atomic_fetch_add(&ks->other, 1);
    rc = ks->ops->counter_get(ks->impl, out);
    pthread_mutex_unlock(&ks->cmu);
    return rc;
}

kb_err kb_keystore_counter_advance(kb_keystore *ks, uint64_t to)
{
    uint64_t cur = 0;
    kb_err rc;
    KB_ENSURE_REF(ks);
    KB_ENSURE(ks->ops->counter_get != NULL && ks->ops->counter_set != NULL, KB_ERR_UNAVAILABLE);
    pthread_mutex_lock(&ks->cmu);
    atomic_fetch_add(&ks->other, 1);
    rc = ks->ops->counter_get(ks->impl, &cur);
    if (rc == KB_ERR_NOT_FOUND || (rc == KB_OK && cur < to)) {
        atomic_fetch_add(&ks->other, 1);
        rc = ks->ops->counter_set(ks->impl, to);
    }
    pthread_mutex_unlock(&ks->cmu);
    return rc;
}

void kb_keystore_counters(const kb_keystore *ks, uint64_t *wraps, uint64_t *unwraps,
                          uint64_t *other)
{
    if (wraps)
        *wraps = ks ? (uint64_t)atomic_load(&ks->wraps) : 0;
    if (unwraps)
        *unwraps = ks ? (uint64_t)atomic_load(&ks->unwraps) : 0;
    if (other)
        *other = ks ? (uint64_t)atomic_load(&ks->other) : 0;
}

/* ---- EC signers --------------------------------------------------------------------------- */

struct kb_ec_signer {
    const struct kb_ec_signer_ops *ops;
    void *impl;
    EVP_PKEY *pub;
    atomic_uint_fast64_t signs;
};

kb_err kb_ec_signer_new(const struct kb_ec_signer_ops *ops, void *impl, EVP_PKEY *pub,
                        kb_ec_signer **out)
{
    kb_ec_signer *s;

    if (out == NULL || ops == NULL || pub == NULL) {
        if (ops != NULL && impl != NULL)
            ops->free(impl);
        EVP_PKEY_free(pub);
        return KB_ERR_NULL;
    }
    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        ops->free(impl);
        EVP_PKEY_free(pub);
        return KB_ERR_NOMEM;
    }
    s->ops = ops;
    s->impl = impl;
    s->pub = pub;
    atomic_init(&s->signs, 0);
    *out = s;
    return KB_OK;
}

kb_err kb_ec_signer_sign(kb_ec_signer *s, const uint8_t digest[32], uint8_t der[KB_EC_SIG_DER_MAX],
                         size_t *der_len)
{
    kb_err rc;

    KB_ENSURE_REF(s);
    KB_ENSURE_REF(digest);
    KB_ENSURE_REF(der);
    KB_ENSURE_REF(der_len);
    rc = s->ops->sign(s->impl, digest, der, der_len);
    if (rc == KB_OK)
        atomic_fetch_add(&s->signs, 1);
    return rc;
}

EVP_PKEY *kb_ec_signer_pubkey(const kb_ec_signer *s)
{
    return s ? s->pub : NULL;
}

const char *kb_ec_signer_kind(const kb_ec_signer *s)
{
    return s ? s->ops->kind : "";
}

uint64_t kb_ec_signer_count(const kb_ec_signer *s)
{
    return s ? (uint64_t)atomic_load(&s->signs) : 0;
}

void kb_ec_signer_free(kb_ec_signer *s)
{
    if (s == NULL)
        return;
    s->ops->free(s->impl);
    EVP_PKEY_free(s->pub);
    free(s);
}
