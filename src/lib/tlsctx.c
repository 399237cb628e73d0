/* tlsctx.c - OpenSSL server contexts: hardened defaults, SPIFFE peer verification hook, peer ID
 * carried through session tickets. See tlsctx.h and docs/internals/httpd.md. */
#include "lib/tlsctx.h"

#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "lib/fileio.h"
#include "lib/log.h"
#include "lib/secbuf.h"

/* TLS 1.2 suites: ECDHE key exchange and AEAD ciphers only (RFC 9325 section 4.2). TLS 1.3
 * suites are all AEAD with (EC)DHE and keep OpenSSL's defaults. */
#define KB_TLS12_CIPHERS                                                                           \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define KB_TLS_GROUPS "X25519:P-256:P-384"
#define KB_TLS_SID_CTX "keybridge"

typedef struct {
    kb_tls_peer_verify fn;
    void *arg;
} verify_cfg;

static int g_ssl_id_idx = -1;  /* SSL ex_data: malloc'd NUL-terminated peer ID */
static int g_ctx_cfg_idx = -1; /* SSL_CTX ex_data: verify_cfg */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static __thread X509_STORE *tl_bundle;

static void free_str(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (ptr != NULL) {
        kb_wipe(ptr, strlen(ptr));
        free(ptr);
    }
}

static void free_plain(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

static void init_indexes(void)
{
    g_ssl_id_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_str);
    g_ctx_cfg_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_plain);
}

static int set_peer_id(SSL *ssl, const char *id, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, id, len);
    copy[len] = '\0';
    char *old = SSL_get_ex_data(ssl, g_ssl_id_idx);
    if (SSL_set_ex_data(ssl, g_ssl_id_idx, copy) != 1) {
        free(copy);
        return 0;
    }
    free(old);
    return 1;
}

const char *kb_tlsctx_peer_id(const SSL *ssl)
{
    if (ssl == NULL || g_ssl_id_idx < 0)
        return NULL;
    return SSL_get_ex_data(ssl, g_ssl_id_idx);
}

X509_STORE *kb_tlsctx_verify_bundle(void)
{
    return tl_bundle;
}

/* Replaces OpenSSL's chain verification entirely (SSL_CTX_set_cert_verify_callback(3)): SPIFFE
 * X509-SVID rules (one URI SAN, leaf not a CA, key usage, ...) are more than a path check, so the
 * program's verify_peer decides. The untrusted stack is the chain as the peer sent it, leaf
 * first. */
static int cert_verify_cb(X509_STORE_CTX *xs, void *arg)
{
    const verify_cfg *vc = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_untrusted(xs);
    char id[KB_TLS_ID_MAX + 1];
    const char *why = "refused";
    int ok = 0;

    id[0] = '\0';
    if (ssl == NULL || leaf == NULL || vc == NULL || vc->fn == NULL) {
        why = "no peer certificate";
        goto out;
    }
    tl_bundle = X509_STORE_CTX_get0_store(xs);
    ok = vc->fn(vc->arg, leaf, chain, id, sizeof(id), &why) == 1;
    tl_bundle = NULL;
    if (ok) {
        size_t n = strnlen(id, sizeof(id));
        if (n == 0 || n >= sizeof(id)) {
            ok = 0;
            why = "verifier returned no identity";
        } else if (!set_peer_id(ssl, id, n)) {
            ok = 0;
            why = "out of memory";
        }
    }
out:
    if (!ok) {
        kb_log(KB_LOG_WARN, "tls_peer_refused", "reason", why ? why : "refused", NULL);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
    } else {
        X509_STORE_CTX_set_error(xs, X509_V_OK);
    }
    return ok;
}

/* Session tickets carry the verified peer ID as ticket app data (SSL_CTX_set_session_ticket_cb
 * (3)): it is encrypted and authenticated under the context's ticket key, so a resumed session
 * gets back exactly the ID that was verified in the full handshake, and only from a ticket this
 * context issued. */
static int ticket_gen_cb(SSL *s, void *arg)
{
    (void)arg;
    const char *id = kb_tlsctx_peer_id(s);
    SSL_SESSION *sess = SSL_get0_session(s);
    if (id != NULL && sess != NULL)
        return SSL_SESSION_set1_ticket_appdata(sess, id, strlen(id));
    return 1;
}

static SSL_TICKET_RETURN ticket_dec_cb(SSL *s, SSL_SESSION *ss, const unsigned char *keyname,
                                       size_t keyname_len, SSL_TICKET_STATUS status, void *arg)
{
    (void)keyname;
    (void)keyname_len;
    (void)arg;
    switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW:
        break;
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    default:
        return SSL_TICKET_RETURN_ABORT;
    }
    const verify_cfg *vc = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), g_ctx_cfg_idx);
    if (vc != NULL && vc->fn != NULL) {
        void *data = NULL;
        size_t len = 0;
        /* No verified ID in the ticket: do a full handshake instead of resuming. */
        if (SSL_SESSION_get0_ticket_appdata(ss, &data, &len) != 1 || data == NULL || len == 0 ||
            len > KB_TLS_ID_MAX || memchr(data, '\0', len) != NULL)
            return SSL_TICKET_RETURN_IGNORE_RENEW;
        if (!set_peer_id(s, data, len))
            return SSL_TICKET_RETURN_IGNORE_RENEW;
    }
    return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE : SSL_TICKET_RETURN_USE_RENEW;
}

static kb_err load_key(SSL_CTX *ctx, const char *path)
{
    kb_secret *pem = NULL;
    BIO *bio = NULL;
    EVP_PKEY *pk = NULL;
    kb_err rc = kb_file_read_secret(path, KB_TLS_FILE_MAX, &pem);
    if (rc != KB_OK)
        return rc;
    bio = BIO_new_mem_buf(kb_secret_cdata(pem), (int)kb_secret_len(pem));
    KB_ENSURE_OUT(rc, bio != NULL, KB_ERR_NOMEM);
    pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    KB_ENSURE_OUT(rc, pk != NULL, KB_ERR_CRYPTO);
    /* fails when the key does not match the certificate */
    KB_ENSURE_OUT(rc, SSL_CTX_use_PrivateKey(ctx, pk) == 1, KB_ERR_CONFIG);
    KB_ENSURE_OUT(rc, SSL_CTX_check_private_key(ctx) == 1, KB_ERR_CONFIG);
out:
    EVP_PKEY_free(pk);
    BIO_free(bio);
    kb_secret_free(pem);
    return rc;
}

static kb_err check_readable(const char *path)
{
    struct stat st;
    KB_ENSURE(stat(path, &st) == 0 && S_ISREG(st.st_mode), KB_ERR_IO);
    KB_ENSURE((size_t)st.st_size <= KB_TLS_FILE_MAX, KB_ERR_TOO_LARGE);
    return KB_OK;
}

kb_err kb_tlsctx_server_new(const kb_tlsctx_opts *o, SSL_CTX **out)
{
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    KB_ENSURE(o->cert_file != NULL && o->key_file != NULL, KB_ERR_CONFIG);
    /* A bundle without a verifier would mean "OpenSSL path check only", which is not SPIFFE
     * verification: refuse the configuration rather than half-verify. */
    KB_ENSURE(o->client_ca_file == NULL || o->verify_peer != NULL, KB_ERR_CONFIG);
    pthread_once(&g_once, init_indexes);
    KB_ENSURE(g_ssl_id_idx >= 0 && g_ctx_cfg_idx >= 0, KB_ERR_CRYPTO);

    kb_err rc = KB_OK;
    SSL_CTX *ctx = NULL;
    verify_cfg *vc = NULL;

    KB_GUARD_OUT(rc, check_readable(o->cert_file));
    if (o->client_ca_file != NULL)
        KB_GUARD_OUT(rc, check_readable(o->client_ca_file));
    ctx = SSL_CTX_new(TLS_server_method());
    KB_ENSURE_OUT(rc, ctx != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, SSL_CTX_set_cipher_list(ctx, KB_TLS12_CIPHERS) == 1, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, SSL_CTX_set1_groups_list(ctx, KB_TLS_GROUPS) == 1, KB_ERR_CRYPTO);
    /* CLEANSE_PLAINTEXT: record buffers that held decrypted requests (secrets in PUT bodies)
     * are wiped before being freed. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_CLEANSE_PLAINTEXT);
    /* Like nginx: idle keep-alive connections give their record buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* No 0-RTT: early data is replayable (RFC 8446 section 8). */
    SSL_CTX_set_max_early_data(ctx, 0);
    SSL_CTX_set_recv_max_early_data(ctx, 0);
    /* Tickets only (stateless, no cross-thread session cache), at most 5 minutes
     * (DESIGN.md "Identity"); each context has fresh random ticket keys, and contexts are
     * rebuilt on reload and on a timer, which rotates the keys. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_timeout(ctx, KB_TLS_SESSION_TIMEOUT);
    SSL_CTX_set_num_tickets(ctx, 1);
    KB_ENSURE_OUT(rc,
                  SSL_CTX_set_session_id_context(ctx, (const unsigned char *)KB_TLS_SID_CTX,
                                                 sizeof(KB_TLS_SID_CTX) - 1) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, SSL_CTX_set_session_ticket_cb(ctx, ticket_gen_cb, ticket_dec_cb, NULL) == 1,
                  KB_ERR_CRYPTO);

    KB_ENSURE_OUT(rc, SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) == 1, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, load_key(ctx, o->key_file));

    if (o->verify_peer != NULL) {
        vc = malloc(sizeof(*vc));
        KB_ENSURE_OUT(rc, vc != NULL, KB_ERR_NOMEM);
        vc->fn = o->verify_peer;
        vc->arg = o->verify_arg;
        KB_ENSURE_OUT(rc, SSL_CTX_set_ex_data(ctx, g_ctx_cfg_idx, vc) == 1, KB_ERR_CRYPTO);
        verify_cfg *owned = vc;
        vc = NULL; /* owned by ctx now (freed by the ex_data free callback) */
        if (o->client_ca_file != NULL) {
            KB_ENSURE_OUT(rc, SSL_CTX_load_verify_locations(ctx, o->client_ca_file, NULL) == 1,
                          KB_ERR_CRYPTO);
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->client_ca_file);
            KB_ENSURE_OUT(rc, names != NULL, KB_ERR_CRYPTO);
            SSL_CTX_set_client_CA_list(ctx, names);
        }
        /* RFC 8446 section 4.3.2 / 5246 7.4.4: request a certificate and fail without one. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        SSL_CTX_set_cert_verify_callback(ctx, cert_verify_cb, owned);
    }
    *out = ctx;
    ctx = NULL;
out:
    free(vc);
    SSL_CTX_free(ctx);
    if (rc != KB_OK)
        ERR_clear_error();
    return rc;
}

static void stamp_one(const char *path, uint64_t v[4])
{
    struct stat st;
    memset(v, 0, 4 * sizeof(v[0]));
    if (path == NULL || stat(path, &st) != 0)
        return;
    v[0] = (uint64_t)st.st_ino;
    v[1] = (uint64_t)st.st_size;
    v[2] = (uint64_t)st.st_mtim.tv_sec;
    v[3] = (uint64_t)st.st_mtim.tv_nsec ^ ((uint64_t)st.st_dev << 32);
}

void kb_tlsctx_files_stamp(const kb_tlsctx_opts *o, kb_tlsctx_stamp *st)
{
    memset(st, 0, sizeof(*st));
    if (o == NULL)
        return;
    stamp_one(o->cert_file, st->v[0]);
    stamp_one(o->key_file, st->v[1]);
    stamp_one(o->client_ca_file, st->v[2]);
}

int kb_tlsctx_stamp_eq(const kb_tlsctx_stamp *a, const kb_tlsctx_stamp *b)
{
    return memcmp(a, b, sizeof(*a)) == 0;
}
