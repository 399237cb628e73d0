/* test_buf.c - bounded reader, bounded dynamic buffer, array growth, hex. */
#include <stdlib.h>
#include <string.h>

#include "kbtest.h"
#include "lib/buf.h"
#include "lib/err.h"

static void reader_reads_within_bounds(void **state)
{
    (void)state;
    const uint8_t in[] = {1, 0, 2, 0, 0, 0, 3, 'a', 'b', ':', 'c'};
    kb_reader r;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    const uint8_t *p;
    size_t n;

    kb_reader_init(&r, in, sizeof(in));
    assert_ok(kb_reader_u8(&r, &u8));
    assert_int_equal(u8, 1);
    assert_ok(kb_reader_u16be(&r, &u16));
    assert_int_equal(u16, 2);
    assert_ok(kb_reader_u32be(&r, &u32));
    assert_int_equal(u32, 3);
    assert_ok(kb_reader_until(&r, ':', 2, &p, &n));
    assert_int_equal(n, 2);
    assert_memory_equal(p, "ab", 2);
    assert_kb(kb_reader_end(&r), KB_ERR_TRAILING);
    assert_ok(kb_reader_bytes(&r, 1, &p));
    assert_ok(kb_reader_end(&r));
}

static void reader_refuses_truncated_and_oversized(void **state)
{
    (void)state;
    const uint8_t in[] = {1, 2, 3};
    kb_reader r;
    uint32_t u32;
    uint64_t u64;
    const uint8_t *p;
    size_t n;

    kb_reader_init(&r, in, sizeof(in));
    assert_kb(kb_reader_u32be(&r, &u32), KB_ERR_TRUNCATED);
    assert_int_equal(kb_reader_left(&r), 3); /* a failed read consumes nothing */
    assert_kb(kb_reader_u64be(&r, &u64), KB_ERR_TRUNCATED);
    assert_kb(kb_reader_until(&r, ':', 8, &p, &n), KB_ERR_TRUNCATED);
    assert_kb(kb_reader_until(&r, ':', 1, &p, &n), KB_ERR_TOO_LARGE);
    assert_kb(kb_reader_bytes(&r, SIZE_MAX, &p), KB_ERR_TRUNCATED);
    kb_reader_init(&r, NULL, 5);
    assert_int_equal(kb_reader_left(&r), 0);
}

static void dbuf_refuses_past_max(void **state)
{
    (void)state;
    kb_dbuf b;
    kb_dbuf_init(&b, 8);
    assert_ok(kb_dbuf_addstr(&b, "1234"));
    assert_ok(kb_dbuf_addf(&b, "%d", 567));
    assert_string_equal(kb_dbuf_str(&b), "1234567");
    assert_ok(kb_dbuf_addc(&b, '8')); /* exactly at the limit */
    assert_kb(kb_dbuf_addc(&b, '9'), KB_ERR_TOO_LARGE);
    assert_kb(kb_dbuf_addf(&b, "%s", "x"), KB_ERR_TOO_LARGE);
    assert_string_equal(kb_dbuf_str(&b), "12345678"); /* unchanged by the failures */
    kb_dbuf_reset(&b);
    assert_string_equal(kb_dbuf_str(&b), "");
    assert_kb(kb_dbuf_add(&b, "x", SIZE_MAX), KB_ERR_TOO_LARGE);
    kb_dbuf_free(&b);
    assert_string_equal(kb_dbuf_str(&b), "");
}

/* max + 1 once wrapped to 0 for max = SIZE_MAX: nothing was scanned and a present delimiter
 * was reported as truncated input. */
static void reader_until_unlimited_max(void **state)
{
    (void)state;
    const uint8_t in[] = {'a', 'b', ':', 'c'};
    kb_reader r;
    const uint8_t *p;
    size_t n;
    kb_reader_init(&r, in, sizeof(in));
    assert_ok(kb_reader_until(&r, ':', SIZE_MAX, &p, &n));
    assert_int_equal(n, 2);
    assert_memory_equal(p, "ab", 2);
    assert_kb(kb_reader_until(&r, ':', SIZE_MAX, &p, &n), KB_ERR_TRUNCATED);
    assert_int_equal(kb_reader_left(&r), 1);
    /* at the limit: the delimiter right after max bytes is still found */
    kb_reader_init(&r, in, sizeof(in));
    assert_ok(kb_reader_until(&r, ':', 2, &p, &n));
    kb_reader_init(&r, in, sizeof(in));
    assert_kb(kb_reader_until(&r, ':', 1, &p, &n), KB_ERR_TOO_LARGE);
}

/* max = SIZE_MAX ("no limit") once wrapped max + 1 to 0: the block was cut to 0 bytes and the
 * NUL and the data were written past it; len + n + 1 could wrap too. */
static void dbuf_unlimited_max_does_not_wrap(void **state)
{
    (void)state;
    kb_dbuf b;
    kb_dbuf_init(&b, SIZE_MAX);
    assert_ok(kb_dbuf_addstr(&b, "abc"));
    assert_true(b.cap > b.len);
    assert_string_equal(kb_dbuf_str(&b), "abc");
    assert_kb(kb_dbuf_add(&b, "x", SIZE_MAX - 3), KB_ERR_TOO_LARGE);
    assert_kb(kb_dbuf_add(&b, "x", SIZE_MAX), KB_ERR_TOO_LARGE);
    assert_string_equal(kb_dbuf_str(&b), "abc");
    kb_dbuf_free(&b);
}

static void hex_round_trip_and_rejects(void **state)
{
    (void)state;
    uint8_t in[] = {0x00, 0xab, 0xff}, out[3];
    char hex[7];
    kb_hex(in, 3, hex);
    assert_string_equal(hex, "00abff");
    assert_ok(kb_unhex(hex, 6, out, 3));
    assert_memory_equal(in, out, 3);
    assert_kb(kb_unhex("00abf", 5, out, 3), KB_ERR_INVALID);
    assert_kb(kb_unhex("00abfg", 6, out, 3), KB_ERR_INVALID);
    assert_kb(kb_unhex("00abff00", 8, out, 3), KB_ERR_INVALID);
}

static void grow_doubles_zeroes_and_refuses_overflow(void **state)
{
    uint64_t *v = NULL, *keep;
    size_t cap = 0;
    (void)state;
    for (size_t n = 0; n < 1000; n++) {
        assert_ok(kb_grow((void **)&v, &cap, n, sizeof(*v)));
        assert_true(cap > n);
        assert_int_equal(v[n], 0); /* new elements are zeroed */
        v[n] = n + 1;
    }
    assert_int_equal(cap, 1024); /* 16, doubling: log(n) reallocations, not n */
    for (size_t n = 0; n < 1000; n++)
        assert_int_equal(v[n], n + 1);
    /* room already there: nothing moves */
    keep = v;
    assert_ok(kb_grow((void **)&v, &cap, 5, sizeof(*v)));
    assert_ptr_equal(v, keep);
    /* a far index is reached in one step */
    assert_ok(kb_grow((void **)&v, &cap, 5000, sizeof(*v)));
    assert_int_equal(cap, 8192);
    /* oversized: the element count or the byte size would overflow; nothing changes */
    assert_kb(kb_grow((void **)&v, &cap, SIZE_MAX, sizeof(*v)), KB_ERR_NOMEM);
    assert_kb(kb_grow((void **)&v, &cap, SIZE_MAX / 4, sizeof(*v)), KB_ERR_NOMEM);
    assert_int_equal(cap, 8192);
    assert_int_equal(v[999], 1000);
    assert_kb(kb_grow((void **)&v, &cap, 1, 0), KB_ERR_INVALID);
    assert_kb(kb_grow(NULL, &cap, 1, 8), KB_ERR_NULL);
    assert_kb(kb_grow((void **)&v, NULL, 1, 8), KB_ERR_NULL);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reader_reads_within_bounds),
        cmocka_unit_test(reader_refuses_truncated_and_oversized),
        cmocka_unit_test(dbuf_refuses_past_max),
        cmocka_unit_test(dbuf_unlimited_max_does_not_wrap),
        cmocka_unit_test(reader_until_unlimited_max),
        cmocka_unit_test(hex_round_trip_and_rejects),
        cmocka_unit_test(grow_doubles_zeroes_and_refuses_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
