/* tlsctx.c - stub (implementation in progress). */
#include "lib/tlsctx.h"

#include <string.h>

kb_err kb_tlsctx_server_new(const kb_tlsctx_opts *o, SSL_CTX **out)
{
    (void)o;
    (void)out;
    return KB_ERR_INTERNAL;
}
const char *kb_tlsctx_peer_id(const SSL *ssl)
{
    (void)ssl;
    return NULL;
}
X509_STORE *kb_tlsctx_verify_bundle(void)
{
    return NULL;
}
void kb_tlsctx_files_stamp(const kb_tlsctx_opts *o, kb_tlsctx_stamp *st)
{
    (void)o;
    memset(st, 0, sizeof(*st));
}
int kb_tlsctx_stamp_eq(const kb_tlsctx_stamp *a, const kb_tlsctx_stamp *b)
{
    return memcmp(a, b, sizeof(*a)) == 0;
}
