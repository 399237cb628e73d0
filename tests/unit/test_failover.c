/* test_failover.c - server URL lists: parsing, limits, the stable per-client order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kbtest.h"
#include "lib/failover.h"

static void parses_lists_and_repeats(void **state)
{
    kb_urllist l;
    (void)state;
    memset(&l, 0, sizeof(l));
    assert_ok(kb_urllist_add(&l, "https://a:1, https://b:2 ,https://c:3", "https://"));
    assert_int_equal(l.n, 3);
    assert_string_equal(l.url[0], "https://a:1");
    assert_string_equal(l.url[1], "https://b:2");
    assert_string_equal(l.url[2], "https://c:3");
    /* a second list (a repeated --server) appends */
    assert_ok(kb_urllist_add(&l, "https://d:4", "https://"));
    assert_int_equal(l.n, 4);
    assert_string_equal(kb_urllist_at(&l, 3), "https://d:4");
    assert_string_equal(kb_urllist_at(&l, 4), "https://a:1"); /* wraps */
    kb_urllist_free(&l);
    assert_int_equal(l.n, 0);
    assert_null(kb_urllist_at(&l, 0));
}

static void refuses_bad_lists_unchanged(void **state)
{
    kb_urllist l;
    char big[KB_FAILOVER_MAX_LIST + 2];
    (void)state;
    memset(&l, 0, sizeof(l));
    assert_ok(kb_urllist_add(&l, "https://a:1", "https://"));
    assert_kb(kb_urllist_add(&l, "", "https://"), KB_ERR_INVALID);
    assert_kb(kb_urllist_add(&l, " ", "https://"), KB_ERR_INVALID);
    assert_kb(kb_urllist_add(&l, "https://b:1,,https://c:1", "https://"), KB_ERR_INVALID);
    assert_kb(kb_urllist_add(&l, "https://b:1,", "https://"), KB_ERR_INVALID);
    assert_kb(kb_urllist_add(&l, "https://b:1,http://c:1", "https://"), KB_ERR_INVALID);
    assert_kb(kb_urllist_add(&l, "https:/", "https://"), KB_ERR_INVALID);
    assert_kb(kb_urllist_add(&l, "h,h,h,h,h,h,h,h", NULL), KB_ERR_TOO_LARGE); /* 1 + 8 > 8 */
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_kb(kb_urllist_add(&l, big, NULL), KB_ERR_TOO_LARGE);
    assert_kb(kb_urllist_add(NULL, "x", NULL), KB_ERR_NULL);
    assert_kb(kb_urllist_add(&l, NULL, NULL), KB_ERR_NULL);
    assert_int_equal(l.n, 1); /* nothing of a refused list was kept */
    assert_string_equal(l.url[0], "https://a:1");
    assert_ok(kb_urllist_add(&l, "h,h,h,h,h,h,h", NULL)); /* exactly 8 */
    assert_int_equal(l.n, KB_FAILOVER_MAX_URLS);
    kb_urllist_free(&l);
    kb_urllist_free(NULL);
}

static void order_is_stable_and_spreads(void **state)
{
    kb_urllist l;
    size_t seen[3] = {0, 0, 0};
    (void)state;
    memset(&l, 0, sizeof(l));
    assert_ok(kb_urllist_add(&l, "https://a:1,https://b:2,https://c:3", NULL));
    /* SHA-256("") starts e3b0c44298fc1c14, SHA-256("a") ca978112ca1bbdca: a fixed, documented
     * function (clients in other languages can compute it), not rand() */
    assert_int_equal(kb_failover_offset("", 3), 0xe3b0c44298fc1c14ULL % 3);
    assert_int_equal(kb_failover_offset("a", 1000), 0xca978112ca1bbdcaULL % 1000);
    /* similar IDs do not pile up on one replica of two (FNV-1a would: its low bit is the
     * parity of the odd bytes) */
    assert_int_not_equal(
        kb_failover_offset("spiffe://example.org/lambda/acct/123456789012/fn/payments", 2),
        kb_failover_offset("spiffe://example.org/lambda/acct/123456789012/fn/ledger2", 2));
    assert_int_equal(kb_failover_offset("x", 0), 0);
    kb_urllist_order(&l, "spiffe://example.org/app/1");
    size_t s1 = l.start;
    kb_urllist_order(&l, "spiffe://example.org/app/1");
    assert_int_equal(l.start, s1);
    assert_string_equal(kb_urllist_at(&l, 0), l.url[s1]);
    assert_string_equal(kb_urllist_at(&l, 1), l.url[(s1 + 1) % 3]);
    kb_urllist_order(&l, NULL);
    assert_int_equal(l.start, kb_failover_offset("", 3));
    kb_urllist_order(NULL, "x");
    /* 300 clients spread over 3 servers: none gets less than a fifth */
    for (int i = 0; i < 300; i++) {
        char id[64];
        snprintf(id, sizeof(id), "spiffe://example.org/lambda/acct/%d/fn/app%03d", i % 5, i / 5);
        seen[kb_failover_offset(id, 3)]++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(seen[i] >= 60);
    kb_urllist_free(&l);
}

static void status_classes(void **state)
{
    (void)state;
    assert_true(kb_failover_status(502));
    assert_true(kb_failover_status(503));
    assert_true(kb_failover_status(504));
    assert_false(kb_failover_status(500));
    assert_false(kb_failover_status(200));
    assert_false(kb_failover_status(403));
    assert_false(kb_failover_status(404));
    assert_false(kb_failover_status(429));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_lists_and_repeats),
        cmocka_unit_test(refuses_bad_lists_unchanged),
        cmocka_unit_test(order_is_stable_and_spreads),
        cmocka_unit_test(status_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
