/* test_hsm_budget.c - the global / class / client budget and the per-SPIFFE-ID fairness caps, all
 * with an injected clock (no sleeps, no timing assertions). */
#include "kbtest.h"

#include <string.h>

#include "lib/err.h"
#include "lib/ratelimit.h"
#include "server/fairness.h"
#include "server/hsm_budget.h"

#define T0 1000.0
#define CLOUD_A "spiffe://example.org/lambda/acct/1/fn/a"
#define CLOUD_B "spiffe://example.org/lambda/acct/2/fn/b"
#define DC_A "spiffe://example.org/ns/payments/sa/api"

/* ---- the budget ---------------------------------------------------------------------------- */

static void test_budget_config_checks(void **state)
{
    hsm_budget *b = NULL;
    hsm_budget_opts o;
    (void)state;
    memset(&o, 0, sizeof(o));
    o.global_rate = 10; /* burst 0 with a rate: could never grant */
    assert_kb(hsm_budget_new(&o, T0, &b), KB_ERR_CONFIG);
    o.global_burst = 1;
    o.cloud_rate = -1;
    assert_kb(hsm_budget_new(&o, T0, &b), KB_ERR_CONFIG);
    o.cloud_rate = KB_RATELIMIT_RATE_MAX + 1;
    o.cloud_burst = 1;
    assert_kb(hsm_budget_new(&o, T0, &b), KB_ERR_CONFIG);
    o.cloud_rate = KB_RATELIMIT_RATE_MAX;
    o.client_burst = KB_RATELIMIT_RATE_MAX + 1;
    assert_kb(hsm_budget_new(&o, T0, &b), KB_ERR_CONFIG);
    o.client_burst = 0;
    assert_kb(hsm_budget_new(NULL, T0, &b), KB_ERR_NULL);
    assert_ok(hsm_budget_new(&o, T0, &b));
    assert_non_null(b);
    hsm_budget_free(b);
    hsm_budget_free(NULL);
}

static void test_budget_all_off(void **state)
{
    hsm_budget *b = NULL;
    hsm_budget_opts o;
    int64_t ra = -1;
    hsm_budget_stats st;
    (void)state;
    memset(&o, 0, sizeof(o));
    assert_ok(hsm_budget_new(&o, T0, &b));
    for (int i = 0; i < 10000; i++)
        assert_ok(hsm_budget_take(b, CLOUD_A, true, T0, &ra));
    assert_int_equal(ra, 0);
    hsm_budget_stats_get(b, T0, &st);
    assert_true(st.global == -1 && st.cloud == -1 && st.dc == -1);
    assert_int_equal(st.granted, 10000);
    assert_int_equal(st.clients, 0); /* no per-client bucket: no table entries */
    hsm_budget_free(b);
    /* no budget at all is "allowed" too */
    assert_ok(hsm_budget_take(NULL, CLOUD_A, true, T0, &ra));
}

static void test_budget_global_retry_after(void **state)
{
    hsm_budget *b = NULL;
    hsm_budget_opts o = {.global_rate = 1, .global_burst = 3};
    hsm_budget_stats st;
    int64_t ra = 0;
    (void)state;
    assert_ok(hsm_budget_new(&o, T0, &b));
    for (int i = 0; i < 3; i++)
        assert_ok(hsm_budget_take(b, DC_A, false, T0, &ra));
    assert_kb(hsm_budget_take(b, DC_A, false, T0, &ra), KB_ERR_LIMIT);
    assert_int_equal(ra, 1);
    assert_int_equal(hsm_budget_retry_after(b, DC_A, false, T0), 1);
    /* refusals take nothing: half a second later the level is exactly half a token */
    assert_kb(hsm_budget_take(b, CLOUD_A, true, T0 + 0.5, &ra), KB_ERR_LIMIT);
    hsm_budget_stats_get(b, T0 + 0.5, &st);
    assert_true(st.global > 0.49 && st.global < 0.51);
    assert_int_equal(st.refused_dc, 1);
    assert_int_equal(st.refused_cloud, 1);
    assert_int_equal(st.granted, 3);
    assert_ok(hsm_budget_take(b, CLOUD_A, true, T0 + 1.0, &ra));
    assert_int_equal(ra, 0);
    hsm_budget_free(b);
}

/* A cloud herd drains the cloud bucket; the data center still gets its share. */
static void test_budget_cloud_herd_does_not_starve_dc(void **state)
{
    hsm_budget *b = NULL;
    hsm_budget_opts o = {.global_rate = 10,
                         .global_burst = 10,
                         .cloud_rate = 6,
                         .cloud_burst = 6,
                         .dc_rate = 4,
                         .dc_burst = 4};
    char id[128];
    int granted_cloud = 0, granted_dc = 0;
    int64_t ra = 0;
    (void)state;
    assert_ok(hsm_budget_new(&o, T0, &b));
    /* 10 simulated seconds, each: 1000 cloud requests from distinct IDs, then 3 DC requests */
    for (int sec = 0; sec < 10; sec++) {
        double now = T0 + sec;
        for (int i = 0; i < 1000; i++) {
            snprintf(id, sizeof(id), "spiffe://example.org/lambda/acct/%d/fn/f", i);
            if (hsm_budget_take(b, id, true, now, &ra) == KB_OK)
                granted_cloud++;
            else
                assert_true(ra >= 1);
        }
        for (int i = 0; i < 3; i++)
            if (hsm_budget_take(b, DC_A, false, now, &ra) == KB_OK)
                granted_dc++;
    }
    /* the cloud gets its burst and then its rate; the DC every one of its 30 */
    assert_int_equal(granted_cloud, 6 + 9 * 6);
    assert_int_equal(granted_dc, 30);
    hsm_budget_free(b);
}

static void test_budget_per_client(void **state)
{
    hsm_budget *b = NULL;
    hsm_budget_opts o = {.client_rate = 1, .client_burst = 2};
    int64_t ra = 0;
    hsm_budget_stats st;
    (void)state;
    assert_ok(hsm_budget_new(&o, T0, &b));
    assert_ok(hsm_budget_take(b, CLOUD_A, true, T0, &ra));
    assert_ok(hsm_budget_take(b, CLOUD_A, true, T0, &ra));
    assert_kb(hsm_budget_take(b, CLOUD_A, true, T0, &ra), KB_ERR_LIMIT);
    assert_int_equal(ra, 1);
    /* another client is not affected */
    assert_ok(hsm_budget_take(b, CLOUD_B, true, T0, &ra));
    /* the same client after 1 s */
    assert_ok(hsm_budget_take(b, CLOUD_A, true, T0 + 1, &ra));
    hsm_budget_stats_get(b, T0 + 1, &st);
    assert_int_equal(st.clients, 2);
    /* an over-long ID is refused, never truncated into someone else's bucket */
    {
        char big[HSM_BUDGET_CLIENT_MAX + 10];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        assert_kb(hsm_budget_take(b, big, true, T0, &ra), KB_ERR_INVALID);
    }
    hsm_budget_free(b);
}

/* All or none: a refusal by one bucket takes nothing from the others. */
static void test_budget_refusal_takes_nothing(void **state)
{
    hsm_budget *b = NULL;
    hsm_budget_opts o = {.global_rate = 1, .global_burst = 5, .client_rate = 1, .client_burst = 1};
    int64_t ra = 0;
    hsm_budget_stats st;
    (void)state;
    assert_ok(hsm_budget_new(&o, T0, &b));
    assert_ok(hsm_budget_take(b, DC_A, false, T0, &ra));
    for (int i = 0; i < 10; i++)
        assert_kb(hsm_budget_take(b, DC_A, false, T0, &ra), KB_ERR_LIMIT);
    hsm_budget_stats_get(b, T0, &st);
    assert_true(st.global > 3.99 && st.global < 4.01); /* only the one grant */
    hsm_budget_free(b);
}

static void test_budget_client_table_bounded(void **state)
{
    hsm_budget *b = NULL;
    hsm_budget_opts o = {.client_rate = 1, .client_burst = 1, .max_clients = 4};
    hsm_budget_stats st;
    char id[64];
    int64_t ra = 0;
    (void)state;
    assert_ok(hsm_budget_new(&o, T0, &b));
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "spiffe://example.org/c/%d", i);
        assert_ok(hsm_budget_take(b, id, false, T0 + i * 0.01, &ra));
        hsm_budget_stats_get(b, T0, &st);
        assert_true(st.clients <= 4);
    }
    hsm_budget_free(b);

    /* A full table drops an idle (refilled) entry first: a client drained just now keeps its
     * state, so flooding the table cannot reset someone's limit while an idle entry exists. */
    o.max_clients = 2;
    assert_ok(hsm_budget_new(&o, T0, &b));
    assert_ok(hsm_budget_take(b, "p", false, T0, &ra));       /* p drained at T0 */
    assert_ok(hsm_budget_take(b, "q", false, T0 + 5, &ra));   /* p is full again by now */
    assert_ok(hsm_budget_take(b, "r", false, T0 + 5.5, &ra)); /* evicts p, not q */
    assert_kb(hsm_budget_take(b, "q", false, T0 + 5.5, &ra), KB_ERR_LIMIT);
    hsm_budget_stats_get(b, T0 + 5.5, &st);
    assert_int_equal(st.clients, 2);
    hsm_budget_free(b);
}

/* ---- fairness ------------------------------------------------------------------------------ */

static void test_fairness_conn_cap(void **state)
{
    fairness *f = NULL;
    fairness_opts o = {.max_conns = 2};
    fairness_conn *c1 = NULL, *c2 = NULL, *c3 = NULL, *other = NULL;
    fairness_stats st;
    (void)state;
    assert_ok(fairness_new(&o, &f));
    assert_ok(fairness_conn_acquire(f, DC_A, T0, &c1));
    assert_ok(fairness_conn_acquire(f, DC_A, T0, &c2));
    assert_kb(fairness_conn_acquire(f, DC_A, T0, &c3), KB_ERR_LIMIT);
    assert_null(c3);
    assert_ok(fairness_conn_acquire(f, CLOUD_A, T0, &other)); /* per ID */
    fairness_conn_release(f, c1);
    assert_ok(fairness_conn_acquire(f, DC_A, T0, &c3));
    fairness_stats_get(f, &st);
    assert_int_equal(st.refused_conns, 1);
    assert_int_equal(st.ids, 2);
    fairness_conn_release(f, c2);
    fairness_conn_release(f, c3);
    fairness_conn_release(f, other);
    fairness_conn_release(f, NULL);
    fairness_free(f);
}

static void test_fairness_request_rate(void **state)
{
    fairness *f = NULL;
    fairness_opts o = {.rate = 2, .burst = 4};
    int64_t ra = 0;
    (void)state;
    assert_ok(fairness_new(&o, &f));
    for (int i = 0; i < 4; i++)
        assert_ok(fairness_request(f, DC_A, T0, &ra));
    assert_kb(fairness_request(f, DC_A, T0, &ra), KB_ERR_LIMIT);
    assert_int_equal(ra, 1);
    assert_ok(fairness_request(f, CLOUD_A, T0, &ra)); /* someone else */
    assert_ok(fairness_request(f, DC_A, T0 + 0.5, &ra));
    assert_kb(fairness_request(f, DC_A, T0 + 0.5, &ra), KB_ERR_LIMIT);
    fairness_free(f);

    /* rate 0: never limited */
    o.rate = 0;
    o.burst = 0;
    assert_ok(fairness_new(&o, &f));
    for (int i = 0; i < 1000; i++)
        assert_ok(fairness_request(f, DC_A, T0, &ra));
    fairness_free(f);
}

static void test_fairness_config_and_bounds(void **state)
{
    fairness *f = NULL;
    fairness_opts o = {.rate = 5, .burst = 0};
    fairness_conn *c[3] = {NULL, NULL, NULL}, *x = NULL;
    int64_t ra = 0;
    (void)state;
    assert_kb(fairness_new(&o, &f), KB_ERR_CONFIG);
    o.burst = 1;
    o.max_conns = -1;
    assert_kb(fairness_new(&o, &f), KB_ERR_CONFIG);
    assert_kb(fairness_new(NULL, &f), KB_ERR_NULL);
    /* a table of 2 IDs: busy IDs are never dropped, so a third is refused */
    o.max_conns = 5;
    o.max_ids = 2;
    assert_ok(fairness_new(&o, &f));
    assert_ok(fairness_conn_acquire(f, "a", T0, &c[0]));
    assert_ok(fairness_conn_acquire(f, "b", T0, &c[1]));
    assert_kb(fairness_conn_acquire(f, "c", T0, &c[2]), KB_ERR_LIMIT);
    assert_kb(fairness_request(f, "c", T0, &ra), KB_ERR_LIMIT);
    /* once "a" is idle (no connection, bucket full again) it can make room */
    fairness_conn_release(f, c[0]);
    assert_ok(fairness_conn_acquire(f, "c", T0 + 10, &x));
    fairness_conn_release(f, x);
    fairness_conn_release(f, c[1]);
    fairness_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_config_checks),
        cmocka_unit_test(test_budget_all_off),
        cmocka_unit_test(test_budget_global_retry_after),
        cmocka_unit_test(test_budget_cloud_herd_does_not_starve_dc),
        cmocka_unit_test(test_budget_per_client),
        cmocka_unit_test(test_budget_refusal_takes_nothing),
        cmocka_unit_test(test_budget_client_table_bounded),
        cmocka_unit_test(test_fairness_conn_cap),
        cmocka_unit_test(test_fairness_request_rate),
        cmocka_unit_test(test_fairness_config_and_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
