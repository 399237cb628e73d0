/* keystore_pkcs11.c - the master key in a PKCS#11 token (SoftHSM2 by default).
 *
 * References: PKCS#11 v2.40 base spec (OASIS, "PKCS11-base"), sections 5.4 (C_Initialize,
 * CKF_OS_LOCKING_OK), 5.6 (sessions; login is per application and token, not per session),
 * 5.8 (C_Encrypt/C_Decrypt terminate the operation except on CKR_BUFFER_TOO_SMALL); mechanisms:
 * CKM_AES_GCM (PKCS11-curr 2.40 2.12.3, CK_GCM_PARAMS with ulIvBits) and CKM_SHA256_HMAC.
 *
 * A PKCS#11 module is process-global: C_Initialize may run once, C_Finalize ends it for every
 * user, and C_Login on one session logs in every session of that token. So modules live in a
 * reference-counted registry (one dlopen + C_Initialize per path, C_Finalize when the last
 * keystore using it is freed), and each keystore closes only its own sessions (never C_Logout or
 * C_CloseAllSessions, which would end another keystore's login).
 *
 * Threads: each keystore has a small pool of sessions; a call takes a free one (waiting on a
 * condition variable if all are busy), so calls on different sessions run in parallel in the
 * module, which was initialised with CKF_OS_LOCKING_OK.
 *
 * EC signing keys on the same machinery are in keystore_pkcs11_ec.c; what the two files share is
 * declared in keystore_pkcs11_impl.h.
 */
#include "keystore.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <p11-kit/pkcs11.h>

#include "buf.h"
#include "keystore_impl.h"
#include "keystore_pkcs11_impl.h"
#include "log.h"

#define TOKEN_LABEL_LEN 32 /* CK_TOKEN_INFO.label: blank-padded, not NUL-terminated */
#define CKA_ID_MAX 64
#define PIN_MAX 256
#define MAC_SUFFIX "-mac"
#define COUNTER_DIGITS 20 /* the label: UINT64_MAX has 20 decimal digits */
/* Opening a token is tried this many times when it failed the way a token file being rewritten by
 * another process makes it fail (see kb_p11_start), waiting 25, 50, 100, 200 ms in between. */
#define P11_START_ATTEMPTS 5
#define P11_RETRY_FIRST_MS 25L

/* ---- module registry ---------------------------------------------------------------------- */

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct p11_module *registry;

static const char *rv_hex(CK_RV rv, char buf[24])
{
    snprintf(buf, 24, "0x%lx", (unsigned long)rv);
    return buf;
}

void kb_p11_log_rv(const char *event, const char *what, CK_RV rv)
{
    char b[24];
    kb_log(KB_LOG_ERROR, event, "call", what, "ckr", rv_hex(rv, b), NULL);
}

static void module_free(struct p11_module *m)
{
    struct p11_login *l, *n;

    if (m == NULL)
        return;
    if (m->f != NULL && m->finalize)
        (void)m->f->C_Finalize(NULL);
    if (m->dl != NULL)
        dlclose(m->dl);
    for (l = m->logins; l != NULL; l = n) {
        n = l->next;
        kb_wipe(l, sizeof(*l));
        free(l);
    }
    free(m->path);
    free(m);
}

static kb_err module_acquire(const char *path, struct p11_module **out)
{
    CK_C_INITIALIZE_ARGS args;
    CK_C_GetFunctionList get;
    struct p11_module *m;
    kb_err rc = KB_OK;
    CK_RV rv;

    pthread_mutex_lock(&registry_mu);
    for (m = registry; m != NULL; m = m->next) {
        if (strcmp(m->path, path) == 0) {
            m->refs++;
            *out = m;
            goto unlock;
        }
    }
    m = calloc(1, sizeof(*m));
    KB_ENSURE_OUT(rc, m != NULL, KB_ERR_NOMEM);
    m->path = strdup(path);
    KB_ENSURE_OUT(rc, m->path != NULL, KB_ERR_NOMEM);
    m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (m->dl == NULL) {
        const char *e = dlerror();
        kb_log(KB_LOG_ERROR, "pkcs11_module_load_failed", "module", path, "dlerror",
               e ? e : "unknown", NULL);
        rc = KB_ERR_UNAVAILABLE;
        goto out;
    }
    *(void **)(&get) = dlsym(m->dl, "C_GetFunctionList");
    if (get == NULL || get(&m->f) != CKR_OK || m->f == NULL) {
        kb_log(KB_LOG_ERROR, "pkcs11_module_load_failed", "module", path, "msg",
               "not a PKCS#11 module (no usable C_GetFunctionList)", NULL);
        m->f = NULL;
        rc = KB_ERR_UNAVAILABLE;
        goto out;
    }
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK; /* the module may use native locks; we call from threads */
    rv = m->f->C_Initialize(&args);
    if (rv == CKR_OK) {
        m->finalize = 1;
    } else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        kb_p11_log_rv("pkcs11_module_init_failed", "C_Initialize", rv);
        rc = rv == CKR_CANT_LOCK ? KB_ERR_UNAVAILABLE : KB_ERR_HSM;
        goto out;
    }
    m->refs = 1;
    m->next = registry;
    registry = m;
    *out = m;
    m = NULL;
out:
    module_free(m);
unlock:
    pthread_mutex_unlock(&registry_mu);
    return rc;
}

static void module_release(struct p11_module *m)
{
    struct p11_module **pp;

    if (m == NULL)
        return;
    pthread_mutex_lock(&registry_mu);
    if (--m->refs == 0) {
        for (pp = &registry; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == m) {
                *pp = m->next;
                break;
            }
        }
        module_free(m);
    }
    pthread_mutex_unlock(&registry_mu);
}

static void pin_hash(const uint8_t salt[16], const kb_secret *pin, uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int n = 0;

    memset(out, 0, 32);
    if (c == NULL)
        return;
    if (EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(c, salt, 16) != 1 ||
        EVP_DigestUpdate(c, kb_secret_cdata(pin), kb_secret_len(pin)) != 1 ||
        EVP_DigestFinal_ex(c, out, &n) != 1)
        RAND_bytes(out, 32); /* fail closed: matches nothing */
    EVP_MD_CTX_free(c);
}

/* Log in on session s. Called with the keystore's sessions open; the registry lock serialises
 * logins so the record of the accepted PIN matches the module's state. */
static kb_err module_login(struct p11_module *m, CK_SLOT_ID slot, const char *token_label,
                           CK_SESSION_HANDLE s, const kb_secret *pin, int may_retry, int *again)
{
    struct p11_login *l;
    uint8_t h[32] = {0};
    char hb[24];
    kb_err rc = KB_OK;
    CK_RV rv;

    pthread_mutex_lock(&registry_mu);
    for (l = m->logins; l != NULL && l->slot != slot; l = l->next)
        ;
    rv = m->f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)kb_secret_cdata(pin),
                       (CK_ULONG)kb_secret_len(pin));
    if (rv == CKR_OK) {
        if (l == NULL) {
            l = calloc(1, sizeof(*l));
            KB_ENSURE_OUT(rc, l != NULL, KB_ERR_NOMEM);
            l->slot = slot;
            l->next = m->logins;
            m->logins = l;
        }
        KB_ENSURE_OUT(rc, RAND_bytes(l->salt, sizeof(l->salt)) == 1, KB_ERR_CRYPTO);
        pin_hash(l->salt, pin, l->pin_hash);
    } else if (rv == CKR_USER_ALREADY_LOGGED_IN) {
        /* Another keystore in this process holds the login: the PIN must be the same one. */
        if (l != NULL)
            pin_hash(l->salt, pin, h);
        if (l == NULL || !kb_ct_eq(h, l->pin_hash, sizeof(h))) {
            kb_log(KB_LOG_ERROR, "pkcs11_login_refused", "token", token_label, "msg",
                   "user PIN does not match the PIN this process logged in with", NULL);
            rc = KB_ERR_AUTH;
        }
    } else if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE || rv == CKR_PIN_LOCKED ||
               rv == CKR_PIN_EXPIRED || rv == CKR_PIN_INVALID ||
               rv == CKR_USER_PIN_NOT_INITIALIZED) {
        kb_log(KB_LOG_ERROR, "pkcs11_login_refused", "token", token_label, "msg",
               "user PIN rejected (wrong, locked, expired or not initialised)", "ckr",
               rv_hex(rv, hb), NULL);
        rc = KB_ERR_AUTH;
    } else if (rv == CKR_GENERAL_ERROR && may_retry) {
        /* not a PIN verdict: SoftHSM2 answers so when it cannot read its token file (the
         * caller logs and retries, see kb_p11_start) */
        *again = 1;
        rc = KB_ERR_HSM;
    } else {
        kb_log(KB_LOG_ERROR, "pkcs11_login_failed", "token", token_label, "call", "C_Login", "ckr",
               rv_hex(rv, hb), NULL);
        rc = KB_ERR_HSM;
    }
out:
    pthread_mutex_unlock(&registry_mu);
    kb_wipe(h, sizeof(h));
    return rc;
}

/* ---- the keystore ------------------------------------------------------------------------- */

void kb_p11_free(void *impl)
{
    struct p11_ks *k = impl;

    if (k == NULL)
        return;
    if (k->rw_open)
        (void)k->mod->f->C_CloseSession(k->rw);
    for (int i = 0; i < k->nsess; i++)
        (void)k->mod->f->C_CloseSession(k->sess[i]); /* the last one ends our login */
    if (k->sync_init) {
        pthread_cond_destroy(&k->cv);
        pthread_mutex_destroy(&k->mu);
    }
    module_release(k->mod);
    free(k);
}

int kb_p11_sess_get(struct p11_ks *k)
{
    int i;

    pthread_mutex_lock(&k->mu);
    for (;;) {
        for (i = 0; i < k->nsess; i++) {
            if (!k->busy[i]) {
                k->busy[i] = 1;
                pthread_mutex_unlock(&k->mu);
                return i;
            }
        }
        pthread_cond_wait(&k->cv, &k->mu);
    }
}

void kb_p11_sess_put(struct p11_ks *k, int i)
{
    pthread_mutex_lock(&k->mu);
    k->busy[i] = 0;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

static kb_err gcm_mech(CK_GCM_PARAMS *p, CK_MECHANISM *mech, uint8_t iv[KB_KS_IV_LEN],
                       const uint8_t *aad, size_t aad_len)
{
    memset(p, 0, sizeof(*p));
    p->pIv = iv;
    p->ulIvLen = KB_KS_IV_LEN;
    p->ulIvBits = KB_KS_IV_LEN * 8;
    p->pAAD = (CK_BYTE_PTR)aad; /* the module only reads it */
    p->ulAADLen = (CK_ULONG)aad_len;
    p->ulTagBits = KB_KS_TAG_LEN * 8;
    mech->mechanism = CKM_AES_GCM;
    mech->pParameter = p;
    mech->ulParameterLen = sizeof(*p);
    return KB_OK;
}

static kb_err p11_seal(void *impl, const uint8_t iv_in[KB_KS_IV_LEN], const uint8_t *aad,
                       size_t aad_len, const uint8_t *in, size_t len, uint8_t *out)
{
    struct p11_ks *k = impl;
    CK_FUNCTION_LIST_PTR f = k->mod->f;
    uint8_t iv[KB_KS_IV_LEN];
    CK_GCM_PARAMS gp;
    CK_MECHANISM mech;
    CK_ULONG outl = (CK_ULONG)(len + KB_KS_TAG_LEN);
    kb_err rc = KB_OK;
    CK_RV rv;
    int i;

    memcpy(iv, iv_in, sizeof(iv));
    KB_GUARD(gcm_mech(&gp, &mech, iv, aad, aad_len));
    i = kb_p11_sess_get(k);
    rv = f->C_EncryptInit(k->sess[i], &mech, k->wrap_key);
    if (rv == CKR_OK)
        rv = f->C_Encrypt(k->sess[i], (CK_BYTE_PTR)in, (CK_ULONG)len, out, &outl);
    kb_p11_sess_put(k, i);
    if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_wrap_failed", "C_Encrypt", rv);
        rc = KB_ERR_HSM;
    } else if (outl != len + KB_KS_TAG_LEN) {
        rc = KB_ERR_HSM;
    }
    if (rc != KB_OK)
        kb_wipe(out, len + KB_KS_TAG_LEN);
    return rc;
}

static kb_err p11_open(void *impl, const uint8_t iv_in[KB_KS_IV_LEN], const uint8_t *aad,
                       size_t aad_len, const uint8_t *in, size_t len, uint8_t *out)
{
    struct p11_ks *k = impl;
    CK_FUNCTION_LIST_PTR f = k->mod->f;
    uint8_t iv[KB_KS_IV_LEN];
    kb_secret *tmp = NULL;
    CK_GCM_PARAMS gp;
    CK_MECHANISM mech;
    CK_ULONG outl;
    kb_err rc = KB_OK;
    CK_RV rv;
    int i, decrypt_started;

    KB_ENSURE(len >= KB_KS_TAG_LEN, KB_ERR_INTEGRITY);
    memcpy(iv, iv_in, sizeof(iv));
    KB_GUARD(gcm_mech(&gp, &mech, iv, aad, aad_len));
    /* Some modules size the output for ciphertext+tag before they know the tag's fate: give
     * them room, in locked memory, and copy out only the verified plaintext. */
    KB_GUARD(kb_secret_new(len, &tmp));
    outl = (CK_ULONG)len;
    i = kb_p11_sess_get(k);
    rv = f->C_DecryptInit(k->sess[i], &mech, k->wrap_key);
    decrypt_started = rv == CKR_OK;
    if (rv == CKR_OK)
        rv = f->C_Decrypt(k->sess[i], (CK_BYTE_PTR)in, (CK_ULONG)len, kb_secret_data(tmp), &outl);
    kb_p11_sess_put(k, i);
    if (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
        rv == CKR_DATA_INVALID || rv == CKR_DATA_LEN_RANGE
#ifdef CKR_AEAD_DECRYPT_FAILED
        || rv == CKR_AEAD_DECRYPT_FAILED
#endif
    ) {
        rc = KB_ERR_INTEGRITY; /* GCM tag mismatch: tampered blob; the caller logs which */
    } else if (rv == CKR_GENERAL_ERROR && decrypt_started) {
        /* SoftHSM2 2.6 reports a GCM tag mismatch as CKR_GENERAL_ERROR from C_Decrypt (its
         * OpenSSL decryptFinal fails). C_DecryptInit accepted key and parameters, so the input
         * is what failed: fail closed as an integrity error, and keep the code for debugging. */
        char b[24];
        kb_log(KB_LOG_DEBUG, "pkcs11_unwrap_rejected", "call", "C_Decrypt", "ckr", rv_hex(rv, b),
               NULL);
        rc = KB_ERR_INTEGRITY;
    } else if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_unwrap_failed", "C_Decrypt", rv);
        rc = KB_ERR_HSM;
    } else if (outl != len - KB_KS_TAG_LEN) {
        rc = KB_ERR_HSM;
    } else {
        memcpy(out, kb_secret_cdata(tmp), outl);
    }
    kb_secret_free(tmp);
    return rc;
}

static kb_err p11_mac(void *impl, const uint8_t *data, size_t len, uint8_t out[KB_KEYSTORE_MAC_LEN])
{
    struct p11_ks *k = impl;
    CK_FUNCTION_LIST_PTR f = k->mod->f;
    CK_MECHANISM mech = {CKM_SHA256_HMAC, NULL, 0};
    CK_ULONG outl = KB_KEYSTORE_MAC_LEN;
    CK_RV rv;
    int i;

    i = kb_p11_sess_get(k);
    rv = f->C_SignInit(k->sess[i], &mech, k->mac_key);
    if (rv == CKR_OK)
        rv = f->C_Sign(k->sess[i], (CK_BYTE_PTR)data, (CK_ULONG)len, out, &outl);
    kb_p11_sess_put(k, i);
    if (rv != CKR_OK || outl != KB_KEYSTORE_MAC_LEN) {
        kb_p11_log_rv("pkcs11_mac_failed", "C_Sign", rv);
        kb_wipe(out, KB_KEYSTORE_MAC_LEN);
        return KB_ERR_HSM;
    }
    return KB_OK;
}

static kb_err find_one(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl,
                       CK_ULONG ntmpl, const char *label, const char *what, CK_OBJECT_HANDLE *h);

/* The counter object: find it (once per keystore) on the read-write session. */
static kb_err counter_find(struct p11_ks *k)
{
    CK_FUNCTION_LIST_PTR f = k->mod->f;
    CK_OBJECT_CLASS cls = CKO_DATA;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_APPLICATION, k->counter_app, strlen(k->counter_app)},
    };
    CK_RV rv;

    if (!k->rw_open) {
        /* Login is per application and token: this session is a logged-in R/W user session. */
        rv = f->C_OpenSession(k->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &k->rw);
        if (rv != CKR_OK) {
            kb_p11_log_rv("pkcs11_open_session_failed", "C_OpenSession", rv);
            return KB_ERR_HSM;
        }
        k->rw_open = 1;
    }
    if (k->counter != CK_INVALID_HANDLE)
        return KB_OK;
    return find_one(f, k->rw, tmpl, KB_ARRAY_LEN(tmpl), k->counter_app,
                    "more than one state counter object for this key label", &k->counter);
}

/* The value is the object's CKA_LABEL, COUNTER_DIGITS decimal digits: the attribute PKCS#11
 * lets C_SetAttributeValue change on any storage object (v2.40 table 20, footnote 8), which
 * SoftHSM2 does not allow for a data object's CKA_VALUE. */
static kb_err p11_counter_get(void *impl, uint64_t *out)
{
    struct p11_ks *k = impl;
    char b[COUNTER_DIGITS + 1];
    CK_BBOOL priv = CK_FALSE;
    CK_ATTRIBUTE a[] = {
        {CKA_LABEL, b, sizeof(b)},
        {CKA_PRIVATE, &priv, sizeof(priv)},
    };
    uint64_t v = 0;
    bool ok;
    CK_RV rv;

    *out = 0;
    KB_GUARD(counter_find(k));
    rv = k->mod->f->C_GetAttributeValue(k->rw, k->counter, a, KB_ARRAY_LEN(a));
    if (rv == CKR_OBJECT_HANDLE_INVALID)
        k->counter = CK_INVALID_HANDLE; /* deleted meanwhile: look again next time */
    if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL) {
        kb_p11_log_rv("pkcs11_counter_failed", "C_GetAttributeValue", rv);
        return KB_ERR_HSM;
    }
    /* A public object could be written by anyone holding the token without the PIN. */
    ok = rv == CKR_OK && a[0].ulValueLen == COUNTER_DIGITS && priv == CK_TRUE;
    for (size_t i = 0; ok && i < COUNTER_DIGITS; i++) {
        uint64_t d = (uint64_t)(b[i] - '0');
        ok = b[i] >= '0' && b[i] <= '9' && v <= (UINT64_MAX - d) / 10;
        v = v * 10 + d;
    }
    if (!ok) {
        kb_log(KB_LOG_ERROR, "pkcs11_counter_refused", "key", k->counter_app, "msg",
               "state counter must be a private CKO_DATA object labelled with 20 digits", NULL);
        return KB_ERR_INTEGRITY;
    }
    *out = v;
    return KB_OK;
}

static kb_err p11_counter_set(void *impl, uint64_t v)
{
    struct p11_ks *k = impl;
    CK_FUNCTION_LIST_PTR f = k->mod->f;
    CK_OBJECT_CLASS cls = CKO_DATA;
    CK_BBOOL yes = CK_TRUE;
    char b[COUNTER_DIGITS + 1];
    CK_ATTRIBUTE val = {CKA_LABEL, b, COUNTER_DIGITS};
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_MODIFIABLE, &yes, sizeof(yes)},
        {CKA_APPLICATION, k->counter_app, strlen(k->counter_app)},
        {CKA_LABEL, b, COUNTER_DIGITS},
    };
    kb_err rc;
    CK_RV rv;

    snprintf(b, sizeof(b), "%020llu", (unsigned long long)v);
    rc = counter_find(k);
    if (rc == KB_ERR_NOT_FOUND) {
        rv = f->C_CreateObject(k->rw, tmpl, KB_ARRAY_LEN(tmpl), &k->counter);
        if (rv != CKR_OK) {
            k->counter = CK_INVALID_HANDLE;
            kb_p11_log_rv("pkcs11_counter_failed", "C_CreateObject", rv);
            return KB_ERR_HSM;
        }
        kb_log(KB_LOG_INFO, "pkcs11_counter_created", "key", k->counter_app, NULL);
        return KB_OK;
    }
    KB_GUARD(rc);
    rv = f->C_SetAttributeValue(k->rw, k->counter, &val, 1);
    if (rv == CKR_OBJECT_HANDLE_INVALID)
        k->counter = CK_INVALID_HANDLE;
    if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_counter_failed", "C_SetAttributeValue", rv);
        return KB_ERR_HSM;
    }
    return KB_OK;
}

/* PKCS#11 2.40 5.15: the token's own generator (SoftHSM2: its DRBG; an HSM: its certified one). */
static kb_err p11_random(void *impl, uint8_t *out, size_t len)
{
    struct p11_ks *k = impl;
    CK_FUNCTION_LIST_PTR f = k->mod->f;
    int i = kb_p11_sess_get(k);
    CK_RV rv = f->C_GenerateRandom(k->sess[i], out, (CK_ULONG)len);
    kb_p11_sess_put(k, i);
    if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_random_failed", "C_GenerateRandom", rv);
        return KB_ERR_HSM;
    }
    return KB_OK;
}

static const struct kb_keystore_ops p11_ops = {
    .kind = "pkcs11",
    .seal = p11_seal,
    .open = p11_open,
    .mac = p11_mac,
    .counter_get = p11_counter_get,
    .counter_set = p11_counter_set,
    .random = p11_random,
    .free = kb_p11_free,
};

/* ---- opening ------------------------------------------------------------------------------ */

kb_err kb_p11_check_args(const char *module, const char *token_label, const char *key_label,
                         const kb_secret *pin)
{
    KB_ENSURE_REF(module);
    KB_ENSURE_REF(token_label);
    KB_ENSURE_REF(key_label);
    KB_ENSURE_REF(pin);
    KB_ENSURE(module[0] != '\0' && token_label[0] != '\0' && key_label[0] != '\0', KB_ERR_INVALID);
    KB_ENSURE(strlen(module) < 4096, KB_ERR_TOO_LARGE);
    KB_ENSURE(strlen(token_label) <= TOKEN_LABEL_LEN, KB_ERR_TOO_LARGE);
    KB_ENSURE(strlen(key_label) <= KEY_LABEL_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(kb_secret_len(pin) > 0, KB_ERR_INVALID);
    KB_ENSURE(kb_secret_len(pin) <= PIN_MAX, KB_ERR_TOO_LARGE);
    return KB_OK;
}

static int label_eq(const unsigned char padded[TOKEN_LABEL_LEN], const char *label)
{
    size_t n = strlen(label);

    if (n > TOKEN_LABEL_LEN || memcmp(padded, label, n) != 0)
        return 0;
    for (size_t i = n; i < TOKEN_LABEL_LEN; i++)
        if (padded[i] != ' ')
            return 0;
    return 1;
}

/* The one initialised token labelled token_label. quiet: a missing token is not logged (the
 * caller will look again). */
static kb_err find_slot(CK_FUNCTION_LIST_PTR f, const char *token_label, CK_SLOT_ID *slot,
                        int quiet)
{
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0;
    CK_TOKEN_INFO ti;
    kb_err rc = KB_ERR_NOT_FOUND;
    CK_RV rv;

    rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
    KB_ENSURE_OUT(rc, rv == CKR_OK, KB_ERR_HSM);
    if (n > 0) {
        slots = calloc(n, sizeof(*slots));
        KB_ENSURE_OUT(rc, slots != NULL, KB_ERR_NOMEM);
        rv = f->C_GetSlotList(CK_TRUE, slots, &n);
        KB_ENSURE_OUT(rc, rv == CKR_OK, KB_ERR_HSM);
    }
    rc = KB_ERR_NOT_FOUND;
    for (CK_ULONG i = 0; i < n; i++) {
        if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
            continue;
        /* An uninitialised token's label means nothing (SoftHSM2's free slot is blank). */
        if (!(ti.flags & CKF_TOKEN_INITIALIZED) || !label_eq(ti.label, token_label))
            continue;
        if (rc == KB_OK) {
            kb_log(KB_LOG_ERROR, "pkcs11_token_ambiguous", "token", token_label, NULL);
            rc = KB_ERR_CONFLICT;
            goto out;
        }
        *slot = slots[i];
        rc = KB_OK;
    }
out:
    if (rv != CKR_OK)
        kb_p11_log_rv("pkcs11_slot_list_failed", "C_GetSlotList", rv);
    else if (rc == KB_ERR_NOT_FOUND && !quiet)
        kb_log(KB_LOG_ERROR, "pkcs11_token_not_found", "token", token_label, NULL);
    free(slots);
    return rc;
}

/* Before attempt+1: 25 ms, doubling. */
static void retry_wait(int attempt)
{
    struct timespec ts = {0, (P11_RETRY_FIRST_MS << (attempt - 1)) * 1000000L};
    nanosleep(&ts, NULL);
}

static void log_retry(const char *token_label, const char *why, int attempt)
{
    char n[16];

    snprintf(n, sizeof(n), "%d", attempt);
    kb_log(KB_LOG_WARN, "pkcs11_token_retry", "token", token_label, "why", why, "attempt", n, NULL);
}

kb_err kb_pkcs11_token_check(const char *module, const char *token_label)
{
    struct p11_module *m = NULL;
    CK_SLOT_ID slot;
    kb_err rc;

    KB_ENSURE_REF(module);
    KB_ENSURE_REF(token_label);
    for (int i = 1;; i++) {
        KB_GUARD(module_acquire(module, &m));
        rc = find_slot(m->f, token_label, &slot, i < P11_START_ATTEMPTS);
        module_release(m);
        if (rc != KB_ERR_NOT_FOUND || i == P11_START_ATTEMPTS)
            return rc;
        retry_wait(i); /* as kb_p11_start: the token file may be being rewritten */
    }
}

/* The one object matching tmpl: KB_ERR_NOT_FOUND if none, KB_ERR_CONFLICT (logged with what)
 * if several (which one is meant is then undefined: refuse). */
static kb_err find_one(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl,
                       CK_ULONG ntmpl, const char *label, const char *what, CK_OBJECT_HANDLE *h)
{
    CK_OBJECT_HANDLE found[2];
    CK_ULONG n = 0;
    CK_RV rv;

    rv = f->C_FindObjectsInit(s, tmpl, ntmpl);
    if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_find_failed", "C_FindObjectsInit", rv);
        return KB_ERR_HSM;
    }
    rv = f->C_FindObjects(s, found, 2, &n);
    (void)f->C_FindObjectsFinal(s);
    if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_find_failed", "C_FindObjects", rv);
        return KB_ERR_HSM;
    }
    if (n == 0)
        return KB_ERR_NOT_FOUND;
    if (n > 1) {
        kb_log(KB_LOG_ERROR, "pkcs11_key_ambiguous", "key", label, "msg", what, NULL);
        return KB_ERR_CONFLICT;
    }
    *h = found[0];
    return KB_OK;
}

/* Find the one token object of this class and key type with this label. */
kb_err kb_p11_find_obj(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label,
                       CK_OBJECT_CLASS cls, CK_KEY_TYPE type, CK_OBJECT_HANDLE *h)
{
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_LABEL, (void *)label, strlen(label)},
    };
    return find_one(f, s, tmpl, KB_ARRAY_LEN(tmpl), label,
                    type == CKK_EC ? "more than one EC key with this label"
                                   : "more than one key with this label",
                    h);
}

/* Find the one secret key with this label and key type. */
static kb_err find_key(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label,
                       CK_KEY_TYPE type, CK_OBJECT_HANDLE *h)
{
    return kb_p11_find_obj(f, s, label, CKO_SECRET_KEY, type, h);
}

/* Refuse a key that could leave the token: the design requires sensitive, never-extractable
 * token keys (DESIGN.md "Encryption"); a key made by hand without them is a misconfiguration. */
static kb_err check_key(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                        const char *label, uint8_t *id, size_t *id_len)
{
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE;
    CK_ULONG vlen = 0;
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
        {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
        {CKA_VALUE_LEN, &vlen, sizeof(vlen)},
        {CKA_ID, id, id ? CKA_ID_MAX : 0},
    };
    CK_RV rv;

    rv = f->C_GetAttributeValue(s, h, a, id ? 4 : 3);
    if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_key_attributes_failed", "C_GetAttributeValue", rv);
        return KB_ERR_HSM;
    }
    if (sensitive != CK_TRUE || extractable != CK_FALSE || vlen != 32) {
        kb_log(KB_LOG_ERROR, "pkcs11_key_refused", "key", label, "msg",
               "key must be 32 bytes, CKA_SENSITIVE=true, CKA_EXTRACTABLE=false", NULL);
        return KB_ERR_CONFLICT;
    }
    if (id != NULL)
        *id_len = a[3].ulValueLen;
    return KB_OK;
}

static kb_err generate_key(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label, int mac)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = mac ? CKK_GENERIC_SECRET : CKK_AES;
    CK_ULONG vlen = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_BBOOL enc = mac ? CK_FALSE : CK_TRUE, sig = mac ? CK_TRUE : CK_FALSE;
    uint8_t id[CKA_ID_LEN];
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_VALUE_LEN, &vlen, sizeof(vlen)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)},
        {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_MODIFIABLE, &no, sizeof(no)},
        {CKA_ENCRYPT, &enc, sizeof(enc)},
        {CKA_DECRYPT, &enc, sizeof(enc)},
        {CKA_SIGN, &sig, sizeof(sig)},
        {CKA_VERIFY, &sig, sizeof(sig)},
        {CKA_WRAP, &no, sizeof(no)},
        {CKA_UNWRAP, &no, sizeof(no)},
        {CKA_DERIVE, &no, sizeof(no)},
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_ID, id, sizeof(id)},
    };
    CK_MECHANISM mech = {mac ? CKM_GENERIC_SECRET_KEY_GEN : CKM_AES_KEY_GEN, NULL, 0};
    CK_OBJECT_HANDLE h;
    CK_RV rv;

    /* A random CKA_ID makes the key id change when a key is replaced under the same label. */
    KB_ENSURE(RAND_bytes(id, sizeof(id)) == 1, KB_ERR_CRYPTO);
    rv = f->C_GenerateKey(s, &mech, tmpl, KB_ARRAY_LEN(tmpl), &h);
    if (rv != CKR_OK) {
        kb_p11_log_rv("pkcs11_keygen_failed", "C_GenerateKey", rv);
        return KB_ERR_HSM;
    }
    kb_log(KB_LOG_INFO, "pkcs11_key_generated", "key", label, NULL);
    return KB_OK;
}

/* Load the module, find the token, open the session pool and log in. rw: sessions may create
 * objects (init). */
/* One try of kb_p11_start; *why is set (and nothing logged) when it failed the way a token file
 * being rewritten makes it fail and this is not the last attempt. */
static kb_err p11_start_once(const char *module, const char *token_label, const kb_secret *pin,
                             int rw, int last, const char **why, struct p11_ks **out)
{
    struct p11_ks *k = NULL;
    CK_FLAGS flags = CKF_SERIAL_SESSION | (rw ? CKF_RW_SESSION : 0);
    int again = 0;
    kb_err rc = KB_OK;
    CK_RV rv;

    *out = NULL;
    k = calloc(1, sizeof(*k));
    KB_ENSURE(k != NULL, KB_ERR_NOMEM);
    if (pthread_mutex_init(&k->mu, NULL) != 0) {
        free(k);
        return KB_ERR_INTERNAL;
    }
    if (pthread_cond_init(&k->cv, NULL) != 0) {
        pthread_mutex_destroy(&k->mu);
        free(k);
        return KB_ERR_INTERNAL;
    }
    k->sync_init = 1;
    rc = module_acquire(module, &k->mod);
    if (rc != KB_OK) {
        pthread_cond_destroy(&k->cv);
        pthread_mutex_destroy(&k->mu);
        free(k);
        return rc;
    }
    rc = find_slot(k->mod->f, token_label, &k->slot, !last);
    if (rc == KB_ERR_NOT_FOUND && !last)
        *why = "token not listed";
    KB_GUARD_OUT(rc, rc);
    for (int i = 0; i < POOL_SIZE; i++) {
        rv = k->mod->f->C_OpenSession(k->slot, flags, NULL, NULL, &k->sess[i]);
        if (rv != CKR_OK) {
            kb_p11_log_rv("pkcs11_open_session_failed", "C_OpenSession", rv);
            rc = KB_ERR_HSM;
            goto out;
        }
        k->nsess++;
    }
    rc = module_login(k->mod, k->slot, token_label, k->sess[0], pin, !last, &again);
    if (again)
        *why = "C_Login: CKR_GENERAL_ERROR";
    KB_GUARD_OUT(rc, rc);
    *out = k;
    k = NULL;
out:
    kb_p11_free(k); /* the last reference: C_Finalize, so a retry reads the token files again */
    return rc;
}

/* SoftHSM2 2.6.1 (the Debian 12 package) rewrites the token's token.object on every successful
 * C_Login: under the file's lock it truncates it, unlocks, and only then writes it (the stdio
 * buffer is flushed by fclose; fixed upstream after 2.6.1, SoftHSMv2 PR 578). Another process
 * that reads the file in that gap sees an empty file: at C_Initialize the token is not listed
 * (KB_ERR_NOT_FOUND: keybridge-ca serve replicas started together exited 5), at C_Login the
 * module answers CKR_GENERAL_ERROR before it looks at the PIN. The gap ends with the writer's
 * next system call, so these two failures are retried a few times (a PIN verdict never is),
 * each time from C_Initialize when no other keystore of this process holds the module. A token
 * that really is absent costs 375 ms more before the same error. */
kb_err kb_p11_start(const char *module, const char *token_label, const kb_secret *pin, int rw,
                    struct p11_ks **out)
{
    const char *why;
    kb_err rc;

    for (int i = 1;; i++) {
        why = NULL;
        rc = p11_start_once(module, token_label, pin, rw, i == P11_START_ATTEMPTS, &why, out);
        if (rc == KB_OK || why == NULL)
            return rc;
        log_retry(token_label, why, i);
        retry_wait(i);
    }
}

kb_err kb_keystore_init_pkcs11(const char *module, const char *token_label, const char *key_label,
                               const kb_secret *pin)
{
    char mac_label[KEY_LABEL_MAX + sizeof(MAC_SUFFIX)];
    struct p11_ks *k = NULL;
    CK_OBJECT_HANDLE h;
    kb_err rc;

    KB_GUARD(kb_p11_check_args(module, token_label, key_label, pin));
    snprintf(mac_label, sizeof(mac_label), "%s%s", key_label, MAC_SUFFIX);
    KB_GUARD(kb_p11_start(module, token_label, pin, 1, &k));
    for (int mac = 0; mac <= 1; mac++) {
        const char *label = mac ? mac_label : key_label;
        CK_KEY_TYPE type = mac ? CKK_GENERIC_SECRET : CKK_AES;
        rc = find_key(k->mod->f, k->sess[0], label, type, &h);
        if (rc == KB_ERR_NOT_FOUND) {
            KB_GUARD_OUT(rc, generate_key(k->mod->f, k->sess[0], label, mac));
            KB_GUARD_OUT(rc, find_key(k->mod->f, k->sess[0], label, type, &h));
        }
        KB_GUARD_OUT(rc, rc);
        KB_GUARD_OUT(rc, check_key(k->mod->f, k->sess[0], h, label, NULL, NULL));
    }
out:
    kb_p11_free(k);
    return rc;
}

kb_err kb_keystore_open_pkcs11(const char *module, const char *token_label, const char *key_label,
                               const kb_secret *pin, kb_keystore **out)
{
    char mac_label[KEY_LABEL_MAX + sizeof(MAC_SUFFIX)];
    char key_id[KB_KEYSTORE_KEY_ID_MAX + 1];
    char hex[2 * CKA_ID_MAX + 1];
    uint8_t id[CKA_ID_MAX];
    size_t id_len = 0;
    struct p11_ks *k = NULL;
    kb_err rc;
    int n;

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD(kb_p11_check_args(module, token_label, key_label, pin));
    snprintf(mac_label, sizeof(mac_label), "%s%s", key_label, MAC_SUFFIX);
    KB_GUARD(kb_p11_start(module, token_label, pin, 0, &k));
    rc = find_key(k->mod->f, k->sess[0], key_label, CKK_AES, &k->wrap_key);
    if (rc == KB_ERR_NOT_FOUND)
        kb_log(KB_LOG_ERROR, "pkcs11_key_not_found", "token", token_label, "key", key_label, "hint",
               "create it with init (kb_keystore_init_pkcs11)", NULL);
    KB_GUARD_OUT(rc, rc);
    KB_GUARD_OUT(rc, check_key(k->mod->f, k->sess[0], k->wrap_key, key_label, id, &id_len));
    KB_ENSURE_OUT(rc, id_len <= CKA_ID_MAX, KB_ERR_HSM);
    rc = find_key(k->mod->f, k->sess[0], mac_label, CKK_GENERIC_SECRET, &k->mac_key);
    if (rc == KB_ERR_NOT_FOUND)
        kb_log(KB_LOG_ERROR, "pkcs11_key_not_found", "token", token_label, "key", mac_label, "hint",
               "create it with init (kb_keystore_init_pkcs11)", NULL);
    KB_GUARD_OUT(rc, rc);
    KB_GUARD_OUT(rc, check_key(k->mod->f, k->sess[0], k->mac_key, mac_label, NULL, NULL));
    snprintf(k->counter_app, sizeof(k->counter_app), "%s%s", COUNTER_APP, key_label);
    kb_hex(id, id_len, hex);
    n = snprintf(key_id, sizeof(key_id), "pkcs11:%s:%s:%s", token_label, key_label, hex);
    KB_ENSURE_OUT(rc, n > 0 && (size_t)n < sizeof(key_id), KB_ERR_TOO_LARGE);
    rc = kb_keystore_new(&p11_ops, k, key_id, out);
    k = NULL; /* owned by the keystore, or already freed */
out:
    kb_p11_free(k);
    return rc;
}
