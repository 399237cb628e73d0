/* test_dkcache.c - the data-key cache: hits, expiry (injected clock), wipe on a new version,
 * disabled with TTL 0, bounded size, blob mismatch, bad configuration, no leaked secrets. */
#include "kbtest.h"

#include <string.h>

#include "lib/err.h"
#include "lib/keystore.h"
#include "lib/secbuf.h"
#include "server/dkcache.h"

#define T0 500.0

static kb_secret *key_of(uint8_t fill)
{
    uint8_t raw[KB_KEYSTORE_DK_LEN];
    kb_secret *k = NULL;
    memset(raw, fill, sizeof(raw));
    assert_ok(kb_secret_from(raw, sizeof(raw), &k));
    return k;
}

static const uint8_t blob1[KB_KEYSTORE_BLOB_LEN] = {1, 2, 3};
static const uint8_t blob2[KB_KEYSTORE_BLOB_LEN] = {9, 9, 9};

/* A hit must hand back exactly the key that was put. */
static void assert_hit(dkcache *c, int64_t id, int64_t ver, const uint8_t *blob, double now,
                       uint8_t fill)
{
    kb_secret *got = NULL;
    uint8_t want[KB_KEYSTORE_DK_LEN];
    memset(want, fill, sizeof(want));
    assert_ok(dkcache_get(c, id, ver, blob, KB_KEYSTORE_BLOB_LEN, now, &got));
    assert_non_null(got);
    assert_int_equal(kb_secret_len(got), KB_KEYSTORE_DK_LEN);
    assert_memory_equal(kb_secret_cdata(got), want, sizeof(want));
    kb_secret_free(got);
}

static void assert_miss(dkcache *c, int64_t id, int64_t ver, const uint8_t *blob, double now)
{
    kb_secret *got = (kb_secret *)1;
    assert_kb(dkcache_get(c, id, ver, blob, KB_KEYSTORE_BLOB_LEN, now, &got), KB_ERR_NOT_FOUND);
    assert_null(got);
}

static void test_hit_and_expiry(void **state)
{
    dkcache *c = NULL;
    kb_secret *k = key_of(0xA1);
    dkcache_stats st;
    size_t live;
    (void)state;
    assert_ok(dkcache_new(60, 16, &c));
    live = kb_secret_live_count();
    assert_miss(c, 1, 1, blob1, T0);
    assert_ok(dkcache_put(c, 1, 1, blob1, sizeof(blob1), k, T0));
    assert_hit(c, 1, 1, blob1, T0, 0xA1);
    assert_hit(c, 1, 1, blob1, T0 + 59.9, 0xA1);
    /* another version or secret is a different entry */
    assert_miss(c, 1, 2, blob1, T0);
    assert_miss(c, 2, 1, blob1, T0);
    /* at the TTL the entry is gone (and wiped) */
    assert_miss(c, 1, 1, blob1, T0 + 60);
    dkcache_stats_get(c, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 4);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.ttl, 60);
    assert_int_equal(kb_secret_live_count(), live); /* every copy handed out was freed */
    kb_secret_free(k);
    dkcache_free(c);
}

static void test_sweep(void **state)
{
    dkcache *c = NULL;
    kb_secret *k = key_of(0xB2);
    dkcache_stats st;
    (void)state;
    assert_ok(dkcache_new(10, 16, &c));
    assert_ok(dkcache_put(c, 1, 1, blob1, sizeof(blob1), k, T0));
    assert_ok(dkcache_put(c, 2, 1, blob1, sizeof(blob1), k, T0 + 5));
    assert_int_equal(dkcache_sweep(c, T0 + 9), 0);
    assert_int_equal(dkcache_sweep(c, T0 + 10), 1);
    dkcache_stats_get(c, &st);
    assert_int_equal(st.entries, 1);
    assert_hit(c, 2, 1, blob1, T0 + 10, 0xB2);
    assert_int_equal(dkcache_sweep(c, T0 + 100), 1);
    dkcache_stats_get(c, &st);
    assert_int_equal(st.entries, 0);
    kb_secret_free(k);
    dkcache_free(c);
}

/* A new version written: every cached key of the secret goes, others stay. */
static void test_forget_secret(void **state)
{
    dkcache *c = NULL;
    kb_secret *k1 = key_of(0x11), *k2 = key_of(0x22), *k3 = key_of(0x33);
    dkcache_stats st;
    (void)state;
    assert_ok(dkcache_new(60, 16, &c));
    assert_ok(dkcache_put(c, 7, 1, blob1, sizeof(blob1), k1, T0));
    assert_ok(dkcache_put(c, 7, 2, blob2, sizeof(blob2), k2, T0));
    assert_ok(dkcache_put(c, 8, 1, blob1, sizeof(blob1), k3, T0));
    dkcache_forget_secret(c, 7);
    assert_miss(c, 7, 1, blob1, T0);
    assert_miss(c, 7, 2, blob2, T0);
    assert_hit(c, 8, 1, blob1, T0, 0x33);
    dkcache_stats_get(c, &st);
    assert_int_equal(st.entries, 1);
    dkcache_forget_secret(c, 12345); /* nothing to forget */
    dkcache_forget_secret(NULL, 7);
    kb_secret_free(k1);
    kb_secret_free(k2);
    kb_secret_free(k3);
    dkcache_free(c);
}

/* The entry only matches the exact wrapped blob: a changed envelope is a miss. */
static void test_blob_must_match(void **state)
{
    dkcache *c = NULL;
    kb_secret *k = key_of(0x44), *got = NULL;
    (void)state;
    assert_ok(dkcache_new(60, 16, &c));
    assert_ok(dkcache_put(c, 1, 1, blob1, sizeof(blob1), k, T0));
    assert_miss(c, 1, 1, blob2, T0);
    assert_kb(dkcache_get(c, 1, 1, blob1, sizeof(blob1) - 1, T0, &got), KB_ERR_NOT_FOUND);
    assert_kb(dkcache_get(c, 1, 1, NULL, 0, T0, &got), KB_ERR_NOT_FOUND);
    assert_kb(dkcache_get(c, 1, 1, blob1, sizeof(blob1), T0, NULL), KB_ERR_NULL);
    assert_hit(c, 1, 1, blob1, T0, 0x44);
    /* a put for the same (id, version) replaces the entry */
    kb_secret_free(k);
    k = key_of(0x55);
    assert_ok(dkcache_put(c, 1, 1, blob2, sizeof(blob2), k, T0));
    assert_miss(c, 1, 1, blob1, T0);
    assert_hit(c, 1, 1, blob2, T0, 0x55);
    kb_secret_free(k);
    dkcache_free(c);
}

static void test_disabled(void **state)
{
    dkcache *c = NULL;
    kb_secret *k = key_of(0x66);
    dkcache_stats st;
    (void)state;
    assert_ok(dkcache_new(0, 0, &c)); /* max_entries ignored when off */
    assert_ok(dkcache_put(c, 1, 1, blob1, sizeof(blob1), k, T0));
    assert_miss(c, 1, 1, blob1, T0);
    assert_int_equal(dkcache_sweep(c, T0 + 1000), 0);
    dkcache_stats_get(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.capacity, 0);
    assert_int_equal(st.misses, 1);
    dkcache_free(c);
    /* no cache at all behaves the same */
    assert_ok(dkcache_put(NULL, 1, 1, blob1, sizeof(blob1), k, T0));
    assert_miss(NULL, 1, 1, blob1, T0);
    kb_secret_free(k);
}

static void test_bounded(void **state)
{
    dkcache *c = NULL;
    kb_secret *k = key_of(0x77);
    dkcache_stats st;
    (void)state;
    assert_ok(dkcache_new(60, 4, &c));
    /* 10 entries put one second apart: only 4 stay, the ones closest to expiry go first */
    for (int i = 0; i < 10; i++) {
        assert_ok(dkcache_put(c, 100 + i, 1, blob1, sizeof(blob1), k, T0 + i));
        dkcache_stats_get(c, &st);
        assert_true(st.entries <= 4);
    }
    dkcache_stats_get(c, &st);
    assert_int_equal(st.entries, 4);
    assert_int_equal(st.evictions, 6);
    for (int i = 0; i < 6; i++)
        assert_miss(c, 100 + i, 1, blob1, T0 + 10);
    for (int i = 6; i < 10; i++)
        assert_hit(c, 100 + i, 1, blob1, T0 + 10, 0x77);
    /* a full cache reuses an expired slot before evicting a live one */
    assert_ok(dkcache_put(c, 200, 1, blob1, sizeof(blob1), k, T0 + 66.5)); /* 106 expired */
    dkcache_stats_get(c, &st);
    assert_int_equal(st.evictions, 6);
    /* a blob too long to keep is not cached (and not an error) */
    {
        uint8_t big[DKCACHE_WRAPPED_MAX + 1];
        memset(big, 1, sizeof(big));
        assert_ok(dkcache_put(c, 300, 1, big, sizeof(big), k, T0 + 67));
        assert_kb(dkcache_get(c, 300, 1, big, sizeof(big), T0 + 67, &(kb_secret *){NULL}),
                  KB_ERR_NOT_FOUND);
    }
    kb_secret_free(k);
    dkcache_free(c);
}

static void test_bad_input(void **state)
{
    dkcache *c = NULL;
    kb_secret *short_key = NULL;
    (void)state;
    assert_kb(dkcache_new(-1, 16, &c), KB_ERR_CONFIG);
    assert_kb(dkcache_new(DKCACHE_TTL_MAX + 1, 16, &c), KB_ERR_CONFIG);
    assert_kb(dkcache_new(60, 0, &c), KB_ERR_CONFIG);
    assert_kb(dkcache_new(60, DKCACHE_ENTRIES_MAX + 1, &c), KB_ERR_CONFIG);
    assert_kb(dkcache_new(60, 16, NULL), KB_ERR_NULL);
    assert_ok(dkcache_new(DKCACHE_TTL_MAX, 1, &c));
    assert_ok(kb_secret_new(16, &short_key));
    assert_kb(dkcache_put(c, 1, 1, blob1, sizeof(blob1), short_key, T0), KB_ERR_INVALID);
    assert_kb(dkcache_put(c, 1, 1, blob1, sizeof(blob1), NULL, T0), KB_ERR_NULL);
    kb_secret_free(short_key);
    dkcache_free(c);
    dkcache_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_expiry), cmocka_unit_test(test_sweep),
        cmocka_unit_test(test_forget_secret),  cmocka_unit_test(test_blob_must_match),
        cmocka_unit_test(test_disabled),       cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
