/* keystore_pkcs11_impl.h - private to keystore_pkcs11.c (the module registry, the session pool,
 * the AES/HMAC keystore) and keystore_pkcs11_ec.c (EC signing keys on the same machinery). */
#ifndef KB_LIB_KEYSTORE_PKCS11_IMPL_H
#define KB_LIB_KEYSTORE_PKCS11_IMPL_H

#include <pthread.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "err.h"
#include "secbuf.h"

#define POOL_SIZE 4
#define KEY_LABEL_MAX 64
#define COUNTER_APP "keybridge-state:"
#define CKA_ID_LEN 16 /* random CKA_ID given to generated keys */

/* What C_Login accepted for a token, so that a later open of the same token in this process,
 * which the module answers with CKR_USER_ALREADY_LOGGED_IN without looking at the PIN, still has
 * its PIN checked: salted SHA-256, compared in constant time. */
struct p11_login {
    CK_SLOT_ID slot;
    uint8_t salt[16];
    uint8_t pin_hash[32];
    struct p11_login *next;
};

struct p11_module {
    char *path;
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    unsigned refs;
    int finalize; /* we initialised it, so we finalise it */
    struct p11_login *logins;
    struct p11_module *next;
};

/* One open token: a module reference, a logged-in slot and a pool of sessions. */
struct p11_ks {
    struct p11_module *mod;
    CK_SLOT_ID slot;
    CK_OBJECT_HANDLE wrap_key;
    CK_OBJECT_HANDLE mac_key;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    CK_SESSION_HANDLE sess[POOL_SIZE];
    int busy[POOL_SIZE];
    int nsess;
    int sync_init;
    /* The state counter (kb_keystore_counter_*; calls serialised by keystore.c): a read-write
     * session opened on first use (the pool's are read-only), the object once found. */
    char counter_app[sizeof(COUNTER_APP) + KEY_LABEL_MAX];
    CK_SESSION_HANDLE rw;
    int rw_open;
    CK_OBJECT_HANDLE counter;
};

/* Log a failed PKCS#11 call (the CK_RV in hex, never an argument). */
void kb_p11_log_rv(const char *event, const char *what, CK_RV rv);
/* Module path, token label and key label present and within limits, PIN given. */
KB_WUR kb_err kb_p11_check_args(const char *module, const char *token_label, const char *label,
                                const kb_secret *pin);
/* Load the module (registry), find the token, open the session pool and log in (rw: sessions may
 * create objects). */
KB_WUR kb_err kb_p11_start(const char *module, const char *token_label, const kb_secret *pin,
                           int rw, struct p11_ks **out);
/* Close this keystore's sessions and release the module. */
void kb_p11_free(void *impl);
/* Take a free pool session (waits if all are busy), and give it back. */
int kb_p11_sess_get(struct p11_ks *k);
void kb_p11_sess_put(struct p11_ks *k, int i);
/* The one token object of this class and key type with this label (the one find-object, on
 * find_one: KB_ERR_NOT_FOUND if none, KB_ERR_CONFLICT if several). */
KB_WUR kb_err kb_p11_find_obj(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label,
                              CK_OBJECT_CLASS cls, CK_KEY_TYPE type, CK_OBJECT_HANDLE *h);

#endif
