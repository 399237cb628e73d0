/* test_rowmac.c - row MACs (rowmac.h): each function against an independent HMAC-SHA256
 * (OpenSSL's one-shot EVP_Q_mac) over the canonical encoding built here by hand, so the keyed,
 * re-initialised context and the memo table can only ever return what a fresh HMAC would:
 * repeated and interleaved rows, rows that evict each other from the memo, encodings longer
 * than the memo entries and than the stack buffer (streamed), two contexts with different keys.
 * Negative cases: short or missing keys, NULL context, MAC comparison with NULL, short or
 * flipped stored values, tables not confusable.
 */
#include <string.h>

#include <openssl/evp.h>

#include "kbtest.h"
#include "lib/err.h"
#include "lib/secbuf.h"
#include "server/rowmac.h"

/* ---- the reference: encoding by hand, HMAC in one shot ---- */

typedef struct {
    uint8_t b[8192];
    size_t n;
} enc;

static void e_bytes(enc *e, const void *p, size_t n)
{
    assert_true(e->n + 4 + n <= sizeof(e->b));
    e->b[e->n++] = (uint8_t)(n >> 24);
    e->b[e->n++] = (uint8_t)(n >> 16);
    e->b[e->n++] = (uint8_t)(n >> 8);
    e->b[e->n++] = (uint8_t)n;
    memcpy(e->b + e->n, p, n);
    e->n += n;
}

static void e_str(enc *e, const char *s)
{
    e_bytes(e, s, strlen(s));
}

static void e_i64(enc *e, int64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
    e_bytes(e, b, 8);
}

static void ref_mac(const kb_secret *key, const enc *e, uint8_t out[ROWMAC_LEN])
{
    size_t len = 0;
    assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, kb_secret_cdata(key),
                              kb_secret_len(key), e->b, e->n, out, ROWMAC_LEN, &len));
    assert_int_equal(len, ROWMAC_LEN);
}

static void ref_client(const kb_secret *key, int64_t id, const char *spiffe, bool en, bool ad,
                       bool cl, const char *app, uint8_t out[ROWMAC_LEN])
{
    enc e = {.n = 0};
    e_str(&e, "kb.rowmac.v1.clients");
    e_i64(&e, id);
    e_str(&e, spiffe);
    e_i64(&e, en);
    e_i64(&e, ad);
    e_i64(&e, cl);
    e_str(&e, app);
    ref_mac(key, &e, out);
}

static void ref_link(const kb_secret *key, const char *tag, int64_t a, int64_t b,
                     uint8_t out[ROWMAC_LEN])
{
    enc e = {.n = 0};
    e_str(&e, tag);
    e_i64(&e, a);
    e_i64(&e, b);
    ref_mac(key, &e, out);
}

static void ref_secret(const kb_secret *key, int64_t id, const char *name, int64_t owner, bool cs,
                       int64_t del, uint8_t out[ROWMAC_LEN])
{
    enc e = {.n = 0};
    e_str(&e, "kb.rowmac.v1.secrets");
    e_i64(&e, id);
    e_str(&e, name);
    e_i64(&e, owner);
    e_i64(&e, cs);
    e_i64(&e, del);
    ref_mac(key, &e, out);
}

static kb_secret *key_of(uint8_t fill, size_t len)
{
    uint8_t k[64];
    kb_secret *s = NULL;
    memset(k, fill, sizeof(k));
    k[0] ^= 0x5a;
    assert_ok(kb_secret_from(k, len, &s));
    return s;
}

/* ---- tests ---- */

static void matches_independent_hmac(void **state)
{
    kb_secret *key = key_of(0x11, 32);
    rowmac_ctx *m = NULL;
    uint8_t got[ROWMAC_LEN], want[ROWMAC_LEN];
    char longid[2100], midid[300];
    (void)state;

    /* A SPIFFE ID too long to memoise (> 192-byte encoding) and one too long for the stack
     * buffer (streamed): the model allows 2048 bytes. */
    memcpy(longid, "spiffe://example.org/", 21);
    memset(longid + 21, 'a', 2048 - 21);
    longid[2048] = '\0';
    memcpy(midid, "spiffe://example.org/", 21);
    memset(midid + 21, 'b', 250 - 21);
    midid[250] = '\0';

    assert_ok(rowmac_ctx_new(key, &m));
    for (int round = 0; round < 3; round++) { /* round 1 and 2 hit the memo */
        assert_ok(
            rowmac_client(m, 7, "spiffe://example.org/ns/a/sa/b", true, false, true, "app", got));
        ref_client(key, 7, "spiffe://example.org/ns/a/sa/b", true, false, true, "app", want);
        assert_memory_equal(got, want, ROWMAC_LEN);
        assert_ok(rowmac_client(m, 8, midid, false, true, false, "", got));
        ref_client(key, 8, midid, false, true, false, "", want);
        assert_memory_equal(got, want, ROWMAC_LEN);
        assert_ok(rowmac_client(m, 9, longid, true, true, true, "x", got));
        ref_client(key, 9, longid, true, true, true, "x", want);
        assert_memory_equal(got, want, ROWMAC_LEN);
        assert_ok(rowmac_membership(m, 3, -4, got));
        ref_link(key, "kb.rowmac.v1.memberships", 3, -4, want);
        assert_memory_equal(got, want, ROWMAC_LEN);
        assert_ok(rowmac_grant(m, INT64_MAX, INT64_MIN, got));
        ref_link(key, "kb.rowmac.v1.grants", INT64_MAX, INT64_MIN, want);
        assert_memory_equal(got, want, ROWMAC_LEN);
        assert_ok(rowmac_secret(m, 12, "db-password", 0, true, 1700000000, got));
        ref_secret(key, 12, "db-password", 0, true, 1700000000, want);
        assert_memory_equal(got, want, ROWMAC_LEN);
        /* NULL strings encode as "" */
        assert_ok(rowmac_secret(m, 13, NULL, 2, false, 0, got));
        ref_secret(key, 13, "", 2, false, 0, want);
        assert_memory_equal(got, want, ROWMAC_LEN);
    }
    rowmac_ctx_free(m);
    kb_secret_free(key);
}

/* Far more distinct rows than memo slots, twice: evictions and collisions never return another
 * row's MAC. */
static void memo_eviction_is_exact(void **state)
{
    kb_secret *key = key_of(0x22, 48);
    rowmac_ctx *m = NULL;
    uint8_t got[ROWMAC_LEN], want[ROWMAC_LEN];
    (void)state;
    assert_ok(rowmac_ctx_new(key, &m));
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 1; i <= 5000; i++) {
            assert_ok(rowmac_membership(m, i, i % 7, got));
            ref_link(key, "kb.rowmac.v1.memberships", i, i % 7, want);
            assert_memory_equal(got, want, ROWMAC_LEN);
            /* the same ids in another table: another MAC */
            assert_ok(rowmac_grant(m, i, i % 7, got));
            assert_memory_not_equal(got, want, ROWMAC_LEN);
        }
    }
    rowmac_ctx_free(m);
    kb_secret_free(key);
}

static void keys_and_fields_separate(void **state)
{
    kb_secret *k1 = key_of(0x33, 32), *k2 = key_of(0x34, 32);
    rowmac_ctx *m1 = NULL, *m2 = NULL;
    uint8_t a[ROWMAC_LEN], b[ROWMAC_LEN];
    (void)state;
    assert_ok(rowmac_ctx_new(k1, &m1));
    assert_ok(rowmac_ctx_new(k2, &m2));
    assert_ok(rowmac_secret(m1, 1, "n", 0, false, 0, a));
    assert_ok(rowmac_secret(m2, 1, "n", 0, false, 0, b));
    assert_memory_not_equal(a, b, ROWMAC_LEN);
    /* every field counts, including the primary key and each flag */
    assert_ok(rowmac_secret(m1, 2, "n", 0, false, 0, b));
    assert_memory_not_equal(a, b, ROWMAC_LEN);
    assert_ok(rowmac_secret(m1, 1, "n", 0, true, 0, b));
    assert_memory_not_equal(a, b, ROWMAC_LEN);
    assert_ok(rowmac_secret(m1, 1, "n", 0, false, 1, b));
    assert_memory_not_equal(a, b, ROWMAC_LEN);
    assert_ok(rowmac_client(m1, 1, "spiffe://e.org/x", true, false, false, "", a));
    assert_ok(rowmac_client(m1, 1, "spiffe://e.org/x", false, false, false, "", b));
    assert_memory_not_equal(a, b, ROWMAC_LEN);
    /* length prefixes: moving a byte between two strings changes the MAC */
    assert_ok(rowmac_client(m1, 1, "spiffe://e.org/xa", true, false, false, "", a));
    assert_ok(rowmac_client(m1, 1, "spiffe://e.org/x", true, false, false, "a", b));
    assert_memory_not_equal(a, b, ROWMAC_LEN);
    rowmac_ctx_free(m1);
    rowmac_ctx_free(m2);
    kb_secret_free(k1);
    kb_secret_free(k2);
}

static void bad_arguments(void **state)
{
    kb_secret *shortkey = key_of(0x44, 31);
    rowmac_ctx *m = NULL;
    uint8_t mac[ROWMAC_LEN], flipped[ROWMAC_LEN];
    (void)state;
    assert_kb(rowmac_ctx_new(shortkey, &m), KB_ERR_INVALID);
    assert_null(m);
    assert_kb(rowmac_ctx_new(NULL, &m), KB_ERR_NULL);
    assert_kb(rowmac_membership(NULL, 1, 2, mac), KB_ERR_NULL);
    assert_kb(rowmac_secret(NULL, 1, "n", 0, false, 0, mac), KB_ERR_NULL);
    rowmac_ctx_free(NULL);
    kb_secret_free(shortkey);

    memset(mac, 0xab, sizeof(mac));
    memcpy(flipped, mac, sizeof(mac));
    flipped[31] ^= 1;
    assert_true(rowmac_equal(mac, mac, ROWMAC_LEN));
    assert_false(rowmac_equal(mac, flipped, ROWMAC_LEN));
    assert_false(rowmac_equal(mac, NULL, ROWMAC_LEN));
    assert_false(rowmac_equal(mac, mac, ROWMAC_LEN - 1));
    assert_false(rowmac_equal(mac, mac, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_independent_hmac),
        cmocka_unit_test(memo_eviction_is_exact),
        cmocka_unit_test(keys_and_fields_separate),
        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
