/* test_ca_api.c - keybridge-ca's renewal interval per SPIFFE ID (ca_renew_rate): one renewal per
 * min_interval, and the table's bound (it had none): at the bound an ID whose interval has passed
 * goes first, else the one that renewed longest ago; a new ID is never refused. */
#include "kbtest.h"

#include <string.h>

#include "ca/ca_api.h"
#include "lib/err.h"

#define T0 1000000
#define A "spiffe://example.org/a"
#define B "spiffe://example.org/b"
#define C "spiffe://example.org/c"

static void one_renewal_per_interval(void **state)
{
    ca_renew_rate *r = NULL;
    (void)state;
    assert_ok(ca_renew_rate_new(10, 0, &r));
    assert_int_equal(ca_renew_rate_take(r, A, T0), 1);
    assert_int_equal(ca_renew_rate_take(r, A, T0 + 9), 0);
    assert_int_equal(ca_renew_rate_take(r, B, T0 + 9), 1); /* per ID */
    assert_int_equal(ca_renew_rate_take(r, A, T0 + 10), 1);
    assert_int_equal(ca_renew_rate_take(r, A, T0 + 10), 0);
    ca_renew_rate_free(r);
    /* 0 = off: nothing is recorded */
    assert_ok(ca_renew_rate_new(0, 0, &r));
    assert_int_equal(ca_renew_rate_take(r, A, T0), 1);
    assert_int_equal(ca_renew_rate_take(r, A, T0), 1);
    assert_int_equal(ca_renew_rate_count(r), 0);
    ca_renew_rate_free(r);
    assert_kb(ca_renew_rate_new(-1, 0, &r), KB_ERR_CONFIG);
    assert_kb(ca_renew_rate_new(10, 0, NULL), KB_ERR_NULL);
}

static void bounded_evicts_idle_then_oldest(void **state)
{
    ca_renew_rate *r = NULL;
    char id[64];
    (void)state;
    assert_ok(ca_renew_rate_new(100, 2, &r));
    assert_int_equal(ca_renew_rate_take(r, A, T0), 1);
    assert_int_equal(ca_renew_rate_take(r, B, T0 + 50), 1);
    /* full, nobody idle: A (renewed longest ago) goes, C is let in */
    assert_int_equal(ca_renew_rate_take(r, C, T0 + 60), 1);
    assert_int_equal(ca_renew_rate_count(r), 2);
    assert_int_equal(ca_renew_rate_take(r, B, T0 + 61), 0); /* B and C remembered */
    assert_int_equal(ca_renew_rate_take(r, C, T0 + 61), 0);
    /* at T0 + 150 B's interval has passed: B is the one dropped for A, C stays limited */
    assert_int_equal(ca_renew_rate_take(r, A, T0 + 150), 1);
    assert_int_equal(ca_renew_rate_take(r, C, T0 + 150), 0);
    assert_int_equal(ca_renew_rate_take(r, A, T0 + 151), 0);
    /* a flood of new IDs never grows the table past its bound */
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "spiffe://example.org/flood/%d", i);
        assert_int_equal(ca_renew_rate_take(r, id, T0 + 200), 1);
        assert_true(ca_renew_rate_count(r) <= 2);
    }
    ca_renew_rate_free(r);
}

static void oversized_id_is_not_truncated(void **state)
{
    ca_renew_rate *r = NULL;
    char *big = malloc(SPIFFE_ID_MAX + 2);
    (void)state;
    assert_non_null(big);
    memset(big, 'a', SPIFFE_ID_MAX + 1);
    big[SPIFFE_ID_MAX + 1] = '\0';
    assert_ok(ca_renew_rate_new(10, 4, &r));
    /* never stored (so never shares an entry with its prefix); the handshake refuses such IDs */
    assert_int_equal(ca_renew_rate_take(r, big, T0), 1);
    assert_int_equal(ca_renew_rate_count(r), 0);
    big[SPIFFE_ID_MAX] = '\0';
    assert_int_equal(ca_renew_rate_take(r, big, T0), 1);
    assert_int_equal(ca_renew_rate_take(r, big, T0), 0);
    ca_renew_rate_free(r);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_renewal_per_interval),
        cmocka_unit_test(bounded_evicts_idle_then_oldest),
        cmocka_unit_test(oversized_id_is_not_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
