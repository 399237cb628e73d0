/* test_sync_cost.c - the cost model's arithmetic (src/sync/cost.h), by hand for a few cases. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "cost.h"

static void near(double got, double want)
{
    if (fabs(got - want) > 1e-9 * (1.0 + fabs(want)))
        fail_msg("got %.12f, want %.12f", got, want);
}

static sync_cost_out compute(int64_t n, int64_t a, int64_t c)
{
    sync_cost_in in;
    sync_cost_out o;
    sync_cost_defaults(&in);
    in.secrets = n;
    in.accounts = a;
    in.changes = c;
    assert_int_equal(sync_cost_compute(&in, &o), KB_OK);
    return o;
}

static void hand_computed(void **state)
{
    sync_cost_out o;
    (void)state;
    /* N = 100, A = 1, C = 100: 2920 runs (730 h x 4), 1 + 1 calls per run, 400 per month for
     * changes: 6240 calls = $0.0312; naive 292,000 + 400 = $1.462; storage $40; Lambda 2920
     * requests = $0.000584 + 2920 x 0.125 GB x 0.2 s = 73 GB-s = $0.001216669. */
    o = compute(100, 1, 100);
    assert_int_equal(o.runs, 2920);
    assert_int_equal(o.calls_per_run, 2);
    assert_int_equal(o.naive_per_run, 100);
    assert_int_equal(o.change_calls, 400);
    assert_int_equal(o.calls, 6240);
    assert_int_equal(o.naive_calls, 292400);
    near(o.storage, 40.0);
    near(o.api, 0.0312);
    near(o.naive_api, 1.462);
    near(o.lambda_req, 0.000584);
    near(o.lambda_gbs, 73 * 0.0000166667);
    near(o.total, 40.0 + 0.0312 + 0.000584 + 73 * 0.0000166667);
    /* N = 1000, A = 50, C = 0: 1 + 10 calls per run; 2920 x 50 x 11 = 1,606,000 = $8.03;
     * storage 50,000 secrets = $20,000; naive 146,000,000 calls = $730. */
    o = compute(1000, 50, 0);
    assert_int_equal(o.calls_per_run, 11);
    assert_int_equal(o.calls, 1606000);
    near(o.api, 8.03);
    near(o.storage, 20000.0);
    assert_int_equal(o.naive_calls, 146000000);
    near(o.naive_api, 730.0);
    near(o.lambda_req, 146000 * 0.2 / 1e6);
    /* The page boundary: 100 -> 1 ListSecrets, 101 -> 2. */
    assert_int_equal(compute(1, 1, 0).calls_per_run, 2);
    assert_int_equal(compute(101, 1, 0).calls_per_run, 3);
    assert_int_equal(compute(200, 1, 0).calls_per_run, 3);
}

static void options_change_it(void **state)
{
    sync_cost_in in;
    sync_cost_out o;
    (void)state;
    sync_cost_defaults(&in);
    in.secrets = 10;
    in.accounts = 2;
    in.changes = 0;
    in.interval = 60;   /* 730 runs */
    in.svid_secret = 0; /* SVID from files: ListSecrets only */
    in.memory_mb = 256;
    in.duration_ms = 1000;
    in.price_api = 0.10;
    in.price_secret = 1.0;
    in.price_lambda_req = 1.0;
    in.price_lambda_gbs = 0.001;
    assert_int_equal(sync_cost_compute(&in, &o), KB_OK);
    assert_int_equal(o.runs, 730);
    assert_int_equal(o.calls_per_run, 1);
    assert_int_equal(o.calls, 1460);
    near(o.api, 1460 / 10000.0 * 0.10);
    near(o.storage, 20.0);
    near(o.lambda, 1460 / 1e6 + 1460 * 0.25 * 1.0 * 0.001);
}

static void refuses_out_of_range(void **state)
{
    sync_cost_in in, bad;
    sync_cost_out o;
    (void)state;
    sync_cost_defaults(&in);
    in.secrets = 1;
    in.accounts = 1;
    in.changes = 0;
    assert_int_equal(sync_cost_compute(&in, &o), KB_OK);
    assert_int_equal(sync_cost_compute(NULL, &o), KB_ERR_NULL);
    bad = in, bad.secrets = 0;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    bad = in, bad.secrets = SYNC_COST_SECRETS_MAX + 1;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    bad = in, bad.accounts = 0;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    bad = in, bad.accounts = SYNC_COST_ACCOUNTS_MAX + 1;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    bad = in, bad.interval = 7;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    bad = in, bad.changes = -1;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    bad = in, bad.memory_mb = 64;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    bad = in, bad.duration_ms = 0;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    bad = in, bad.price_api = -0.01;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    bad = in, bad.price_secret = NAN;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    bad = in, bad.price_lambda_gbs = INFINITY;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_ERR_INVALID);
    /* the largest inputs stay exact */
    bad = in, bad.secrets = SYNC_COST_SECRETS_MAX, bad.accounts = SYNC_COST_ACCOUNTS_MAX,
    bad.changes = SYNC_COST_CHANGES_MAX;
    assert_int_equal(sync_cost_compute(&bad, &o), KB_OK);
    assert_int_equal(o.naive_calls,
                     (int64_t)2920 * SYNC_COST_ACCOUNTS_MAX * SYNC_COST_SECRETS_MAX +
                         (int64_t)SYNC_COST_CHANGES_MAX * 4 * SYNC_COST_ACCOUNTS_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hand_computed),
        cmocka_unit_test(options_change_it),
        cmocka_unit_test(refuses_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
