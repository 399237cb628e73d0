/* tlsctx.h - OpenSSL server contexts for keybridge's HTTPS/mTLS listeners.
 *
 * kb_tlsctx_server_new() builds one SSL_CTX from files: TLS 1.2 minimum (1.3 preferred), ECDHE +
 * AEAD only for 1.2, no compression, no renegotiation, no 0-RTT, session tickets only (no
 * server-side cache) with a 300 s lifetime and fresh ticket keys in every context (the caller
 * rotates contexts; see docs/internals/httpd.md). With verify_peer set, a client certificate is
 * REQUIRED and OpenSSL's chain building is replaced entirely by verify_peer
 * (SSL_CTX_set_cert_verify_callback), which sees the leaf and the chain the peer sent and decides.
 * The SPIFFE ID it returns is kept with the connection and inside the session ticket (encrypted
 * and authenticated under the ticket key), so resumed sessions still carry the verified ID.
 *
 * SSL_CTX is reference counted: every SSL holds a reference, so swapping the context for new
 * connections never disturbs existing ones.
 */
#ifndef KB_TLSCTX_H
#define KB_TLSCTX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "err.h"

/* Same contract as kb_http_peer_verify (httpd.h). */
typedef int (*kb_tls_peer_verify)(void *arg, X509 *leaf, STACK_OF(X509) * chain, char *id,
                                  size_t id_len, const char **why);

/* Session (ticket) lifetime: DESIGN.md, "session tickets live at most 5 minutes". */
#define KB_TLS_SESSION_TIMEOUT 300
#define KB_TLS_FILE_MAX ((size_t)1024 * 1024) /* largest cert/key/bundle file */
#define KB_TLS_ID_MAX 2048

typedef struct {
    const char *cert_file;      /* chain PEM, leaf first */
    const char *key_file;       /* key PEM; refused if group/world accessible */
    const char *client_ca_file; /* bundle PEM: CA names offered, store for verify_peer */
    kb_tls_peer_verify verify_peer;
    void *verify_arg;
} kb_tlsctx_opts;

/* Build a server context. KB_ERR_IO for unreadable files, KB_ERR_CONFIG for a key file with
 * group/world permissions or a key that does not match the certificate, KB_ERR_CRYPTO for PEM
 * or OpenSSL failures. On error nothing is returned and nothing leaks. */
KB_WUR kb_err kb_tlsctx_server_new(const kb_tlsctx_opts *o, SSL_CTX **out);

/* The verified SPIFFE ID of the peer on ssl (full or resumed handshake), or NULL. */
const char *kb_tlsctx_peer_id(const SSL *ssl);

/* The trust bundle of the context whose handshake is being verified: valid only inside
 * verify_peer (thread-local), NULL elsewhere or without client_ca_file. Lets verify_peer follow
 * hot-reloaded bundles without loading them itself. */
X509_STORE *kb_tlsctx_verify_bundle(void);

/* A cheap fingerprint of the files (inode, size, mtime ns of each) for change polling. */
typedef struct {
    uint64_t v[3][4];
} kb_tlsctx_stamp;
void kb_tlsctx_files_stamp(const kb_tlsctx_opts *o, kb_tlsctx_stamp *st);
int kb_tlsctx_stamp_eq(const kb_tlsctx_stamp *a, const kb_tlsctx_stamp *b);

#endif
