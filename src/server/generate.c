/* generate.c - generated secrets (generate.h). */
#include "generate.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "generate_pgp.h"
#include "model.h"

static const char default_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

static bool is(const char *a, const char *b)
{
    return a != NULL && strcmp(a, b) == 0;
}

static bool is_pair(const char *t)
{
    return is(t, "ec") || is(t, "rsa") || is(t, "ed25519") || is(t, "openpgp");
}

/* n^len >= 2^GEN_PASSWORD_MIN_BITS, without floating point. */
static bool strong_enough(size_t n, int64_t len)
{
    unsigned __int128 acc = 1, goal = (unsigned __int128)1 << GEN_PASSWORD_MIN_BITS;
    for (int64_t i = 0; i < len && acc < goal; i++)
        acc *= n;
    return acc >= goal;
}

kb_err generate_check(const generate_params *p, const char **why)
{
    static const char *bad = "";
    const char **w = why ? why : &bad;

    KB_ENSURE_REF(p);
    *w = NULL;
    if (!is(p->type, "random") && !is(p->type, "password") && !is_pair(p->type)) {
        *w = "type must be random, password, ec, rsa, ed25519 or openpgp";
        return KB_ERR_INVALID;
    }
    if (p->uid != NULL && !is(p->type, "openpgp")) {
        *w = "uid applies to type openpgp only";
        return KB_ERR_INVALID;
    }
    if (is(p->type, "openpgp")) {
        int64_t now = (int64_t)time(NULL);
        kb_err rc = p->uid ? generate_pgp_check_uid(p->uid) : KB_OK;
        if (rc != KB_OK) {
            *w = "openpgp: uid must be 1..256 bytes of UTF-8 without control characters or "
                 "leading/trailing spaces";
            return rc;
        }
        if (p->expires_at != 0 && (p->expires_at < now + GEN_PGP_EXPIRES_MIN_SECS ||
                                   p->expires_at > now + GEN_PGP_EXPIRES_MAX_SECS)) {
            *w = "openpgp: expires_at must be between a day and 20 years from now";
            return KB_ERR_INVALID;
        }
    }
    if (p->alphabet != NULL && !is(p->type, "password")) {
        *w = "alphabet applies to type password only";
        return KB_ERR_INVALID;
    }
    if (p->bytes != 0 && is_pair(p->type)) {
        *w = "bytes applies to types random and password only";
        return KB_ERR_INVALID;
    }
    if (p->bits != 0 && !is(p->type, "rsa")) {
        *w = "bits applies to type rsa only";
        return KB_ERR_INVALID;
    }
    if (p->curve != NULL && !is(p->type, "ec")) {
        *w = "curve applies to type ec only";
        return KB_ERR_INVALID;
    }
    if (is(p->type, "random") && p->bytes != 0 &&
        (p->bytes < GEN_RANDOM_BYTES_MIN || p->bytes > GEN_RANDOM_BYTES_MAX)) {
        *w = "random: bytes must be 16..4096";
        return p->bytes > GEN_RANDOM_BYTES_MAX ? KB_ERR_TOO_LARGE : KB_ERR_INVALID;
    }
    if (is(p->type, "password")) {
        const char *a = p->alphabet ? p->alphabet : default_alphabet;
        size_t n = strlen(a);
        int64_t len = p->bytes ? p->bytes : GEN_PASSWORD_LEN_DEFAULT;
        if (len < GEN_PASSWORD_LEN_MIN || len > GEN_PASSWORD_LEN_MAX) {
            *w = "password: bytes (its length) must be 8..1024";
            return len > GEN_PASSWORD_LEN_MAX ? KB_ERR_TOO_LARGE : KB_ERR_INVALID;
        }
        if (n < GEN_ALPHABET_MIN || n > GEN_ALPHABET_MAX) {
            *w = "password: alphabet must have 2..94 characters";
            return n > GEN_ALPHABET_MAX ? KB_ERR_TOO_LARGE : KB_ERR_INVALID;
        }
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)a[i] < 0x21 || (unsigned char)a[i] > 0x7e) {
                *w = "password: alphabet must be printable ASCII without space (0x21-0x7e)";
                return KB_ERR_INVALID;
            }
            if (memchr(a + i + 1, a[i], n - i - 1) != NULL) {
                *w = "password: alphabet characters must be distinct";
                return KB_ERR_INVALID;
            }
        }
        if (!strong_enough(n, len)) {
            *w = "password: under 64 bits of entropy (make it longer or the alphabet larger)";
            return KB_ERR_INVALID;
        }
    }
    if (is(p->type, "rsa") && p->bits != 0 && p->bits != 2048 && p->bits != 3072 &&
        p->bits != 4096) {
        *w = "rsa: bits must be 2048, 3072 or 4096";
        return KB_ERR_INVALID;
    }
    if (is(p->type, "ec") && p->curve != NULL && !is(p->curve, "P-256") && !is(p->curve, "P-384")) {
        *w = "ec: curve must be P-256 or P-384";
        return KB_ERR_INVALID;
    }
    return KB_OK;
}

/* Uniform characters from alphabet: token bytes, each rejected when >= the largest multiple of n
 * that fits in a byte (no modulo bias). */
static kb_err make_password(kb_keystore *ks, const char *alphabet, size_t len, kb_secret **out)
{
    size_t n = strlen(alphabet), filled = 0;
    unsigned limit = 256u - 256u % (unsigned)n;
    uint8_t buf[256];
    kb_secret *pw = NULL;
    kb_err rc;

    KB_GUARD(kb_secret_new(len, &pw));
    while (filled < len) {
        KB_GUARD_OUT(rc, kb_keystore_random(ks, buf, sizeof(buf)));
        for (size_t i = 0; i < sizeof(buf) && filled < len; i++)
            if (buf[i] < limit)
                kb_secret_data(pw)[filled++] = (uint8_t)alphabet[buf[i] % n];
    }
    rc = KB_OK;
    *out = pw;
    pw = NULL;
out:
    kb_wipe(buf, sizeof(buf));
    kb_secret_free(pw);
    return rc;
}

/* PEM of a key into locked memory (the PEM is written to OpenSSL's secure heap first). */
static kb_err pem_private(EVP_PKEY *k, kb_secret **out)
{
    BIO *b = BIO_new(BIO_s_secmem());
    BUF_MEM *bm = NULL;
    kb_err rc = KB_ERR_CRYPTO;
    KB_ENSURE(b != NULL, KB_ERR_NOMEM);
    if (PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1 &&
        BIO_get_mem_ptr(b, &bm) == 1 && bm != NULL)
        rc = kb_secret_from(bm->data, bm->length, out);
    BIO_free(b);
    return rc;
}

static kb_err pem_public(EVP_PKEY *k, char **out)
{
    BIO *b = BIO_new(BIO_s_mem());
    BUF_MEM *bm = NULL;
    kb_err rc = KB_ERR_CRYPTO;
    KB_ENSURE(b != NULL, KB_ERR_NOMEM);
    if (PEM_write_bio_PUBKEY(b, k) == 1 && BIO_get_mem_ptr(b, &bm) == 1 && bm != NULL) {
        *out = strndup(bm->data, bm->length);
        rc = *out ? KB_OK : KB_ERR_NOMEM;
    }
    BIO_free(b);
    return rc;
}

static kb_err make_pair(kb_keystore *ks, const generate_params *p, kb_secret **content, char **pub)
{
    uint8_t seed[GEN_SEED_BYTES];
    EVP_PKEY *k = NULL;
    kb_err rc = KB_OK;

    /* Mix token randomness into OpenSSL's primary DRBG (RAND_add reseeds it with this as
     * additional input beside OpenSSL's own OS entropy); the private DRBG that key generation
     * draws from is its child and reseeds when the primary did. The key itself is made in
     * this process by OpenSSL. */
    KB_GUARD(kb_keystore_random(ks, seed, sizeof(seed)));
    RAND_add(seed, (int)sizeof(seed), (double)sizeof(seed));
    kb_wipe(seed, sizeof(seed));
    if (is(p->type, "ed25519"))
        k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    else if (is(p->type, "rsa"))
        k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)(p->bits ? p->bits : 3072));
    else
        k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", is(p->curve, "P-384") ? "P-384" : "P-256");
    KB_ENSURE_OUT(rc, k != NULL, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, pem_private(k, content));
    rc = pem_public(k, pub);
    if (rc != KB_OK) {
        kb_secret_free(*content);
        *content = NULL;
    }
out:
    EVP_PKEY_free(k); /* OpenSSL clears private key material on free */
    ERR_clear_error();
    return rc;
}

kb_err generate_make(kb_keystore *ks, const generate_params *p, const char *default_uid,
                     kb_secret **content, char **pub_pem, int64_t *expires)
{
    KB_ENSURE_REF(ks);
    KB_ENSURE_REF(content);
    KB_ENSURE_REF(pub_pem);
    KB_ENSURE_REF(expires);
    *content = NULL;
    *pub_pem = NULL;
    *expires = 0;
    KB_GUARD(generate_check(p, NULL));
    if (is(p->type, "openpgp")) {
        /* GnuPG draws from its own generator (libgcrypt); the token cannot feed it. */
        int64_t now = (int64_t)time(NULL);
        KB_ENSURE(p->uid != NULL || default_uid != NULL, KB_ERR_INVALID);
        return generate_pgp_make(p->uid ? p->uid : default_uid,
                                 p->expires_at ? p->expires_at : now + GEN_PGP_EXPIRES_DEFAULT_SECS,
                                 now, content, pub_pem, expires);
    }
    if (is(p->type, "random")) {
        size_t n = (size_t)(p->bytes ? p->bytes : GEN_RANDOM_BYTES_DEFAULT);
        kb_secret *r = NULL;
        KB_GUARD(kb_secret_new(n, &r));
        kb_err rc = kb_keystore_random(ks, kb_secret_data(r), n);
        if (rc != KB_OK) {
            kb_secret_free(r);
            return rc;
        }
        *content = r;
        return KB_OK;
    }
    if (is(p->type, "password"))
        return make_password(ks, p->alphabet ? p->alphabet : default_alphabet,
                             (size_t)(p->bytes ? p->bytes : GEN_PASSWORD_LEN_DEFAULT), content);
    return make_pair(ks, p, content, pub_pem);
}

void generate_result_clear(generate_result *r)
{
    if (r == NULL)
        return;
    free(r->pub_pem);
    memset(r, 0, sizeof(*r));
}

/* Create name, or write a new version if it exists (not deleted). */
static kb_err write_one(svc *s, const svc_actor *a, const svc_secret_spec *spec, int64_t *version)
{
    store_secret sec;
    kb_err rc;
    memset(&sec, 0, sizeof(sec));
    rc = store_secret_get(svc_store(s), spec->name, false, &sec);
    store_secret_clear(&sec);
    if (rc == KB_ERR_NOT_FOUND) {
        *version = 1;
        return svc_secret_create(s, a, spec, NULL);
    }
    KB_GUARD(rc);
    return svc_secret_put(s, a, spec, version);
}

kb_err generate_secret(svc *s, const svc_actor *a, const generate_params *p,
                       const svc_secret_spec *base, generate_result *out)
{
    kb_secret *content = NULL;
    char *pub = NULL, *pub_name = NULL;
    svc_secret_spec spec;
    int64_t expires = 0;
    kb_err rc;

    KB_ENSURE_REF(out);
    memset(out, 0, sizeof(*out));
    KB_ENSURE_REF(base);
    KB_GUARD_OUT(rc, generate_check(p, NULL));
    if (is_pair(p->type)) {
        size_t n = strlen(base->name) + sizeof(GEN_PUB_SUFFIX);
        pub_name = malloc(n);
        KB_ENSURE_OUT(rc, pub_name != NULL, KB_ERR_NOMEM);
        snprintf(pub_name, n, "%s%s", base->name, GEN_PUB_SUFFIX);
        /* checked before anything is generated; too long is a bad name here, not a big body */
        KB_ENSURE_OUT(rc, model_name_check(pub_name) == KB_OK, KB_ERR_INVALID);
    }
    KB_GUARD_OUT(rc, generate_make(svc_keystore(s), p, base->name, &content, &pub, &expires));
    spec = *base;
    spec.content = kb_secret_cdata(content);
    spec.content_len = kb_secret_len(content);
    spec.expiry_from_content = false;
    if (expires != 0) {
        spec.expires_at = expires; /* the key's own, for NAME and NAME.pub */
        out->expires_at = expires;
    }
    KB_GUARD_OUT(rc, write_one(s, a, &spec, &out->version));
    if (pub != NULL) {
        spec.name = pub_name;
        spec.description = is(p->type, "openpgp") ? "public key of a generated OpenPGP key"
                                                  : "public key of a generated key pair";
        spec.content = (const uint8_t *)pub;
        spec.content_len = strlen(pub);
        spec.cloud_sync = base->cloud_sync;
        KB_GUARD_OUT(rc, write_one(s, a, &spec, &out->pub_version));
        out->pub_pem = pub;
        pub = NULL;
    }
out:
    svc_audit_event(s, a, "secret.generate", base ? base->name : "", out->version, rc);
    kb_secret_free(content);
    free(pub);
    free(pub_name);
    if (rc != KB_OK)
        generate_result_clear(out);
    return rc;
}
