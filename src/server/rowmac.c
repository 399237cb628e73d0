/* rowmac.c - canonical, table-tagged, length-prefixed encoding of access-deciding rows and their
 * HMAC-SHA256 (see rowmac.h and docs/internals/store.md). */
#include "rowmac.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

struct rowmac_ctx {
    EVP_MAC_CTX *ctx; /* keyed once; re-initialised (same key) for every MAC */
};

kb_err rowmac_ctx_new(const kb_secret *key, rowmac_ctx **out)
{
    EVP_MAC *mac = NULL;
    rowmac_ctx *m = NULL;
    OSSL_PARAM params[2];
    char digest[] = "SHA256";
    kb_err rc = KB_OK;

    KB_ENSURE_REF(key);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(kb_secret_len(key) >= ROWMAC_KEY_MIN, KB_ERR_INVALID);
    m = calloc(1, sizeof(*m));
    KB_ENSURE(m != NULL, KB_ERR_NOMEM);
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    KB_ENSURE_OUT(rc, mac != NULL, KB_ERR_CRYPTO);
    m->ctx = EVP_MAC_CTX_new(mac);
    KB_ENSURE_OUT(rc, m->ctx != NULL, KB_ERR_CRYPTO);
    params[0] = OSSL_PARAM_construct_utf8_string("digest", digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    KB_ENSURE_OUT(rc, EVP_MAC_init(m->ctx, kb_secret_cdata(key), kb_secret_len(key), params) == 1,
                  KB_ERR_CRYPTO);
    *out = m;
    m = NULL;
out:
    EVP_MAC_free(mac);
    rowmac_ctx_free(m);
    return rc;
}

void rowmac_ctx_free(rowmac_ctx *m)
{
    if (m == NULL)
        return;
    EVP_MAC_CTX_free(m->ctx); /* OpenSSL cleanses the HMAC states */
    free(m);
}

/* An incremental HMAC with length-prefixed fields. The tag starts every encoding, so the same
 * field values in two tables never share a MAC. */
typedef struct {
    EVP_MAC_CTX *ctx;
    kb_err err;
} rm;

static void rm_bytes(rm *m, const void *p, size_t n)
{
    uint8_t len[4];
    if (m->err != KB_OK)
        return;
    if (n > UINT32_MAX) {
        m->err = KB_ERR_TOO_LARGE;
        return;
    }
    len[0] = (uint8_t)(n >> 24);
    len[1] = (uint8_t)(n >> 16);
    len[2] = (uint8_t)(n >> 8);
    len[3] = (uint8_t)n;
    if (EVP_MAC_update(m->ctx, len, sizeof(len)) != 1 ||
        (n > 0 && EVP_MAC_update(m->ctx, p, n) != 1))
        m->err = KB_ERR_CRYPTO;
}

static void rm_str(rm *m, const char *s)
{
    if (s == NULL)
        s = "";
    rm_bytes(m, s, strlen(s));
}

static void rm_i64(rm *m, int64_t v)
{
    uint8_t b[8];
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--) {
        b[i] = (uint8_t)u;
        u >>= 8;
    }
    rm_bytes(m, b, sizeof(b));
}

static kb_err rm_begin(rm *m, rowmac_ctx *k, const char *tag)
{
    KB_ENSURE_REF(k);
    m->err = KB_OK;
    m->ctx = k->ctx;
    /* A NULL key re-initialises HMAC with the key already set (OpenSSL 3 EVP_MAC-HMAC). */
    KB_ENSURE(EVP_MAC_init(m->ctx, NULL, 0, NULL) == 1, KB_ERR_CRYPTO);
    rm_str(m, tag);
    return KB_OK;
}

static kb_err rm_end(rm *m, uint8_t out[ROWMAC_LEN])
{
    size_t len = 0;
    kb_err rc = m->err;
    if (rc == KB_OK && (EVP_MAC_final(m->ctx, out, &len, ROWMAC_LEN) != 1 || len != ROWMAC_LEN))
        rc = KB_ERR_CRYPTO;
    m->ctx = NULL;
    if (rc != KB_OK)
        memset(out, 0, ROWMAC_LEN);
    return rc;
}

kb_err rowmac_client(rowmac_ctx *k, int64_t id, const char *spiffe_id, bool enabled, bool admin,
                     bool cloud, const char *app_name, uint8_t out[ROWMAC_LEN])
{
    rm m;
    KB_GUARD(rm_begin(&m, k, "kb.rowmac.v1.clients"));
    rm_i64(&m, id);
    rm_str(&m, spiffe_id);
    rm_i64(&m, enabled ? 1 : 0);
    rm_i64(&m, admin ? 1 : 0);
    rm_i64(&m, cloud ? 1 : 0);
    rm_str(&m, app_name);
    return rm_end(&m, out);
}

kb_err rowmac_membership(rowmac_ctx *k, int64_t client_id, int64_t group_id,
                         uint8_t out[ROWMAC_LEN])
{
    rm m;
    KB_GUARD(rm_begin(&m, k, "kb.rowmac.v1.memberships"));
    rm_i64(&m, client_id);
    rm_i64(&m, group_id);
    return rm_end(&m, out);
}

kb_err rowmac_grant(rowmac_ctx *k, int64_t group_id, int64_t secret_id, uint8_t out[ROWMAC_LEN])
{
    rm m;
    KB_GUARD(rm_begin(&m, k, "kb.rowmac.v1.grants"));
    rm_i64(&m, group_id);
    rm_i64(&m, secret_id);
    return rm_end(&m, out);
}

kb_err rowmac_secret(rowmac_ctx *k, int64_t id, const char *name, int64_t owner_group_id,
                     bool cloud_sync, int64_t deleted_at, uint8_t out[ROWMAC_LEN])
{
    rm m;
    KB_GUARD(rm_begin(&m, k, "kb.rowmac.v1.secrets"));
    rm_i64(&m, id);
    rm_str(&m, name);
    rm_i64(&m, owner_group_id);
    rm_i64(&m, cloud_sync ? 1 : 0);
    rm_i64(&m, deleted_at);
    return rm_end(&m, out);
}

bool rowmac_equal(const uint8_t want[ROWMAC_LEN], const void *stored, size_t stored_len)
{
    if (stored == NULL || stored_len != ROWMAC_LEN)
        return false;
    return kb_ct_eq(want, stored, ROWMAC_LEN) == 1;
}
