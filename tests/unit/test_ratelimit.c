/* test_ratelimit.c - token bucket arithmetic with an injected clock (no sleeps, no timing
 * assertions), configuration checks and Retry-After rounding. */
#include "kbtest.h"

#include "lib/err.h"
#include "lib/ratelimit.h"

#define T0 1000.0

static void test_bucket_refill_and_cap(void **state)
{
    kb_bucket b;
    (void)state;
    kb_bucket_init(&b, 2, 5, T0);
    assert_true(b.tokens == 5);
    for (int i = 0; i < 5; i++)
        assert_true(kb_bucket_take(&b, 1, T0));
    assert_false(kb_bucket_take(&b, 1, T0)); /* empty */
    /* 0.4 s at 2/s = 0.8 token: still not one */
    assert_false(kb_bucket_take(&b, 1, T0 + 0.4));
    assert_true(kb_bucket_wait(&b, 1) > 0.09 && kb_bucket_wait(&b, 1) < 0.11);
    assert_true(kb_bucket_take(&b, 1, T0 + 0.5)); /* 1.0 token */
    assert_false(kb_bucket_take(&b, 1, T0 + 0.5));
    /* a long idle time refills to the burst, never above */
    kb_bucket_refill(&b, T0 + 1000);
    assert_true(b.tokens == 5);
    for (int i = 0; i < 5; i++)
        assert_true(kb_bucket_take(&b, 1, T0 + 1000));
    assert_false(kb_bucket_take(&b, 1, T0 + 1000));
}

static void test_bucket_clock_backwards(void **state)
{
    kb_bucket b;
    (void)state;
    kb_bucket_init(&b, 1, 1, T0);
    assert_true(kb_bucket_take(&b, 1, T0));
    /* the clock goes back 10 s: nothing accrues, and the time is not counted twice later */
    assert_false(kb_bucket_take(&b, 1, T0 - 10));
    assert_false(kb_bucket_take(&b, 1, T0 - 9.5));
    assert_true(kb_bucket_take(&b, 1, T0 - 9));
    assert_false(kb_bucket_take(&b, 1, T0 - 9));
}

static void test_bucket_unlimited_and_wait(void **state)
{
    kb_bucket b;
    (void)state;
    kb_bucket_init(&b, 0, 0, T0);
    for (int i = 0; i < 1000; i++)
        assert_true(kb_bucket_take(&b, 1, T0));
    assert_true(kb_bucket_wait(&b, 1) == 0);
    /* n above the burst can never be met at once: the wait is the time to fill up */
    kb_bucket_init(&b, 4, 2, T0);
    assert_true(kb_bucket_take(&b, 2, T0));
    assert_true(kb_bucket_wait(&b, 10) == 0.5);
}

static void test_retry_after_rounding(void **state)
{
    (void)state;
    assert_int_equal(kb_retry_after_secs(0), 1);
    assert_int_equal(kb_retry_after_secs(0.01), 1);
    assert_int_equal(kb_retry_after_secs(1.0), 1);
    assert_int_equal(kb_retry_after_secs(1.01), 2);
    assert_int_equal(kb_retry_after_secs(7.0), 7);
    assert_int_equal(kb_retry_after_secs(-3), 1);
    assert_int_equal(kb_retry_after_secs(1e12), 86400);
    assert_int_equal(kb_retry_after_secs(0.0 / 0.0), 1); /* NaN */
}

static void test_bucket_check_refuses_bad_config(void **state)
{
    (void)state;
    assert_ok(kb_bucket_check(0, 0));    /* off */
    assert_ok(kb_bucket_check(0.05, 1)); /* one every 20 s */
    assert_ok(kb_bucket_check(KB_RATELIMIT_RATE_MAX, KB_RATELIMIT_RATE_MAX));
    assert_kb(kb_bucket_check(-1, 1), KB_ERR_CONFIG);
    assert_kb(kb_bucket_check(1, -1), KB_ERR_CONFIG);
    assert_kb(kb_bucket_check(KB_RATELIMIT_RATE_MAX + 1.0, 1), KB_ERR_CONFIG); /* oversized */
    assert_kb(kb_bucket_check(1, KB_RATELIMIT_RATE_MAX + 1.0), KB_ERR_CONFIG);
    assert_kb(kb_bucket_check(1, 0), KB_ERR_CONFIG); /* on, but could never grant */
    assert_kb(kb_bucket_check(1, 0.5), KB_ERR_CONFIG);
    assert_kb(kb_bucket_check(0.0 / 0.0, 1), KB_ERR_CONFIG); /* NaN */
    assert_kb(kb_bucket_check(1, 0.0 / 0.0), KB_ERR_CONFIG);
}

static void test_bucket_full(void **state)
{
    kb_bucket b;
    (void)state;
    kb_bucket_init(&b, 1, 2, T0);
    assert_true(kb_bucket_full(&b, T0));
    assert_true(kb_bucket_take(&b, 1, T0));
    assert_false(kb_bucket_full(&b, T0 + 0.5));
    assert_true(kb_bucket_full(&b, T0 + 1));
    kb_bucket_init(&b, 0, 0, T0); /* off: always what a new one would be */
    assert_true(kb_bucket_take(&b, 1, T0));
    assert_true(kb_bucket_full(&b, T0));
    assert_true(kb_ratelimit_now() > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_refill_and_cap),
        cmocka_unit_test(test_bucket_clock_backwards),
        cmocka_unit_test(test_bucket_unlimited_and_wait),
        cmocka_unit_test(test_retry_after_rounding),
        cmocka_unit_test(test_bucket_check_refuses_bad_config),
        cmocka_unit_test(test_bucket_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
