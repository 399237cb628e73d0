/* rowmac.c - canonical, table-tagged, length-prefixed encoding of access-deciding rows and their
 * HMAC-SHA256 (see rowmac.h and docs/internals/store.md).
 *
 * Each encoding is built in a buffer on the stack, then MAC'd with the context's keyed HMAC
 * (re-initialised, not re-keyed). Short encodings are also memoised: a direct-mapped table maps
 * an encoding, compared in full, to its MAC. A store re-reads the same rows request after request
 * (the client, its memberships, the grants and secrets it lists), and a memo hit costs a hash and
 * a memcmp instead of an HMAC. This is exact memoisation of a deterministic function: the caller
 * still compares the result with the stored MAC (kb_ct_eq), so a tampered row never matches. The
 * table holds row encodings (ids, SPIFFE IDs, names, flags) and their MACs, never key material;
 * it is wiped when the context is freed. */
#include "rowmac.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define RM_BUF 512         /* encodings are built here; longer ones are streamed, not memoised */
#define RM_MEMO_ENC 192    /* longest memoised encoding (a client row with a ~100-byte ID) */
#define RM_MEMO_SLOTS 1024 /* power of two; ~230 KB per context */

typedef struct {
    uint64_t hash;
    uint32_t len; /* 0 = empty slot */
    uint8_t mac[ROWMAC_LEN];
    uint8_t enc[RM_MEMO_ENC];
} rm_memo;

struct rowmac_ctx {
    EVP_MAC_CTX *ctx; /* keyed once; re-initialised (same key) for every MAC */
    rm_memo *memo;    /* RM_MEMO_SLOTS entries */
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
    m->memo = calloc(RM_MEMO_SLOTS, sizeof(*m->memo));
    KB_ENSURE_OUT(rc, m->memo != NULL, KB_ERR_NOMEM);
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
    if (m->memo != NULL) {
        kb_wipe(m->memo, RM_MEMO_SLOTS * sizeof(*m->memo));
        free(m->memo);
    }
    free(m);
}

/* One encoding in progress. The tag starts every encoding, so the same field values in two
 * tables never share a MAC. */
typedef struct {
    rowmac_ctx *k;
    kb_err err;
    bool streaming; /* the encoding outgrew buf: HMAC started, no memo */
    bool nomemo;    /* set-digest elements: computed once per row and check, never memoised */
    size_t len;
    uint8_t buf[RM_BUF];
} rm;

static void rm_raw(rm *m, const void *p, size_t n)
{
    if (m->err != KB_OK || n == 0)
        return;
    if (!m->streaming && m->len + n <= sizeof(m->buf)) {
        memcpy(m->buf + m->len, p, n);
        m->len += n;
        return;
    }
    if (!m->streaming) {
        /* A NULL key re-initialises HMAC with the key already set (OpenSSL 3 EVP_MAC-HMAC). */
        if (EVP_MAC_init(m->k->ctx, NULL, 0, NULL) != 1 ||
            EVP_MAC_update(m->k->ctx, m->buf, m->len) != 1) {
            m->err = KB_ERR_CRYPTO;
            return;
        }
        m->streaming = true;
        m->len = 0;
    }
    if (EVP_MAC_update(m->k->ctx, p, n) != 1)
        m->err = KB_ERR_CRYPTO;
}

static void rm_bytes(rm *m, const void *p, size_t n)
{
    uint8_t len[4];
    if (n > UINT32_MAX) {
        m->err = KB_ERR_TOO_LARGE;
        return;
    }
    len[0] = (uint8_t)(n >> 24);
    len[1] = (uint8_t)(n >> 16);
    len[2] = (uint8_t)(n >> 8);
    len[3] = (uint8_t)n;
    rm_raw(m, len, sizeof(len));
    rm_raw(m, p, n);
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
    m->k = k;
    m->err = KB_OK;
    m->streaming = false;
    m->nomemo = false;
    m->len = 0;
    rm_str(m, tag);
    return KB_OK;
}

/* A fast multiply-xorshift hash, 8 bytes at a step: it only spreads encodings over the memo
 * table; equality is then checked in full, so its quality affects the hit rate, never the
 * result. */
static uint64_t rm_hash(const uint8_t *p, size_t n)
{
    const uint64_t k = 0x9E3779B97F4A7C15u;
    uint64_t h = (uint64_t)n * k, w;
    while (n >= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * k;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * k;
    return h ^ (h >> 29);
}

static kb_err rm_end(rm *m, uint8_t out[ROWMAC_LEN])
{
    EVP_MAC_CTX *ctx = m->k->ctx;
    size_t len = 0;
    uint64_t h = 0;
    rm_memo *slot = NULL;
    kb_err rc = m->err;

    if (rc == KB_OK && !m->streaming) {
        if (m->len <= RM_MEMO_ENC && !m->nomemo) {
            h = rm_hash(m->buf, m->len);
            slot = &m->k->memo[h & (RM_MEMO_SLOTS - 1)];
            if (slot->len == m->len && slot->hash == h && memcmp(slot->enc, m->buf, m->len) == 0) {
                memcpy(out, slot->mac, ROWMAC_LEN);
                return KB_OK;
            }
        }
        if (EVP_MAC_init(ctx, NULL, 0, NULL) != 1 || EVP_MAC_update(ctx, m->buf, m->len) != 1)
            rc = KB_ERR_CRYPTO;
    }
    if (rc == KB_OK && (EVP_MAC_final(ctx, out, &len, ROWMAC_LEN) != 1 || len != ROWMAC_LEN))
        rc = KB_ERR_CRYPTO;
    if (rc != KB_OK) {
        memset(out, 0, ROWMAC_LEN);
        return rc;
    }
    if (slot != NULL) {
        slot->hash = h;
        slot->len = (uint32_t)m->len;
        memcpy(slot->enc, m->buf, m->len);
        memcpy(slot->mac, out, ROWMAC_LEN);
    }
    return KB_OK;
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

kb_err rowmac_state_elem(rowmac_ctx *k, const char *table, const void *mac, size_t mac_len,
                         uint8_t out[ROWMAC_LEN])
{
    rm m;
    KB_GUARD(rm_begin(&m, k, "kb.rowmac.v1.state-elem"));
    m.nomemo = true;
    rm_str(&m, table);
    rm_bytes(&m, mac, mac_len);
    return rm_end(&m, out);
}

kb_err rowmac_state(rowmac_ctx *k, int64_t counter, const uint8_t digest[ROWMAC_LEN],
                    uint8_t out[ROWMAC_LEN])
{
    rm m;
    KB_GUARD(rm_begin(&m, k, "kb.rowmac.v1.state"));
    m.nomemo = true;
    rm_i64(&m, counter);
    rm_bytes(&m, digest, ROWMAC_LEN);
    return rm_end(&m, out);
}

/* d = d + e or d - e mod 2^256, both big-endian. */
void rowmac_digest_add(uint8_t d[ROWMAC_LEN], const uint8_t e[ROWMAC_LEN], bool subtract)
{
    unsigned carry = 0;
    for (int i = ROWMAC_LEN - 1; i >= 0; i--) {
        unsigned x = d[i], y = e[i];
        unsigned r;
        if (subtract) {
            r = x - y - carry;
            carry = x < y + carry ? 1u : 0u;
        } else {
            r = x + y + carry;
            carry = r >> 8;
        }
        d[i] = (uint8_t)r;
    }
}

kb_err rowmac_version(rowmac_ctx *k, int64_t secret_id, int64_t version, const uint8_t *checksum,
                      size_t checksum_len, int64_t content_len, const char *metadata,
                      int64_t expires_at, const char *created_by, int64_t created_at,
                      uint8_t out[ROWMAC_LEN])
{
    rm m;
    KB_GUARD(rm_begin(&m, k, "kb.rowmac.v1.versions"));
    rm_i64(&m, secret_id);
    rm_i64(&m, version);
    rm_bytes(&m, checksum, checksum ? checksum_len : 0);
    rm_i64(&m, content_len);
    rm_str(&m, metadata);
    rm_i64(&m, expires_at);
    rm_str(&m, created_by);
    rm_i64(&m, created_at);
    return rm_end(&m, out);
}

kb_err rowmac_latest(rowmac_ctx *k, int64_t secret_id, int64_t latest_version,
                     uint8_t out[ROWMAC_LEN])
{
    rm m;
    KB_GUARD(rm_begin(&m, k, "kb.rowmac.v1.latest"));
    rm_i64(&m, secret_id);
    rm_i64(&m, latest_version);
    return rm_end(&m, out);
}

bool rowmac_equal(const uint8_t want[ROWMAC_LEN], const void *stored, size_t stored_len)
{
    if (stored == NULL || stored_len != ROWMAC_LEN)
        return false;
    return kb_ct_eq(want, stored, ROWMAC_LEN) == 1;
}
