/* test_utf8.c - the one UTF-8 check (RFC 3629 section 4): every boundary of the well-formed
 * table, and the malformed kinds (overlong, surrogate, above U+10FFFF, truncated, stray
 * continuation, F5..FF), plus the callers' policies built on it. */
#include "kbtest.h"

#include <string.h>

#include "lib/err.h"
#include "lib/utf8.h"

#define U(s) (const uint8_t *)(s), sizeof(s) - 1

static void well_formed_boundaries(void **state)
{
    static const struct {
        const char *s;
        size_t len;
        uint32_t cp;
    } ok[] = {
        {"\x00", 1, 0},
        {"\x7f", 1, 0x7f},
        {"\xc2\x80", 2, 0x80},
        {"\xdf\xbf", 2, 0x7ff},
        {"\xe0\xa0\x80", 3, 0x800},
        {"\xed\x9f\xbf", 3, 0xd7ff},
        {"\xee\x80\x80", 3, 0xe000},
        {"\xef\xbf\xbf", 3, 0xffff},
        {"\xf0\x90\x80\x80", 4, 0x10000},
        {"\xf4\x8f\xbf\xbf", 4, 0x10ffff},
    };
    (void)state;
    for (size_t i = 0; i < KB_ARRAY_LEN(ok); i++) {
        uint32_t cp = 0xffffffff;
        assert_int_equal(kb_utf8_next((const uint8_t *)ok[i].s, ok[i].len, &cp), ok[i].len);
        assert_int_equal(cp, ok[i].cp);
        assert_true(kb_utf8_valid((const uint8_t *)ok[i].s, ok[i].len));
    }
    assert_true(kb_utf8_valid(U("plain ascii, \xc3\xbc, \xe2\x82\xac, \xf0\x9f\x94\x91")));
    assert_true(kb_utf8_valid(NULL, 0));
    assert_true(kb_utf8_valid(U("a\0b"))); /* NUL is U+0000: refusing it is the caller's policy */
}

static void refuses_malformed(void **state)
{
    static const char *const bad[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xc1\xbf",         /* overlong */
        "\xe0\x9f\xbf",     /* overlong 3-byte */
        "\xf0\x8f\xbf\xbf", /* overlong 4-byte */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xed\xbf\xbf",     /* surrogate U+DFFF */
        "\xf4\x90\x80\x80", /* U+110000 */
        "\xf5\x80\x80\x80",
        "\xff",
        "\xfe",
        "\x80",         /* stray continuation */
        "\xc3",         /* truncated */
        "\xe2\x82",     /* truncated */
        "\xf0\x9f\x94", /* truncated */
        "\xc3\x28",     /* bad continuation */
        "\xe2\x28\xa1",
        "\xf0\x9f\x28\x91",
        "ok\xc3", /* truncated at the end of good text */
    };
    (void)state;
    for (size_t i = 0; i < KB_ARRAY_LEN(bad); i++) {
        size_t n = strlen(bad[i]);
        if (kb_utf8_valid((const uint8_t *)bad[i], n))
            fail_msg("accepted #%zu", i);
    }
    /* a sequence cut by the length given, though the bytes after are fine */
    assert_int_equal(kb_utf8_next((const uint8_t *)"\xe2\x82\xac", 2, NULL), 0);
    assert_int_equal(kb_utf8_next((const uint8_t *)"x", 0, NULL), 0);
    /* a NUL-terminated string shorter than its lead byte says: stops at the NUL */
    assert_int_equal(kb_utf8_next((const uint8_t *)"\xf0\x9f", 4, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(well_formed_boundaries),
        cmocka_unit_test(refuses_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
