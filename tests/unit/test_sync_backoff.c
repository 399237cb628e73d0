/* test_sync_backoff.c - keybridge-sync under a herd (issue 7 point 4): the backoff arithmetic
 * (hint floor, jitter bounds, exponential growth without a hint, the deadline cut), the retry
 * loop driven by a fake clock and fake random numbers (nothing sleeps, nothing is timed), and the
 * deferred batch entries of keybridged's answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kbtest.h"
#include "lib/json.h"
#include "sync/backoff.h"
#include "sync/source_keybridge.h"

static int setup(void **state)
{
    (void)state;
    kb_json_init();
    return 0;
}

static void test_delay_hint(void **state)
{
    int64_t d = -1;
    (void)state;
    /* the hint is the floor; rnd spreads the herd over [hint, hint + hint/2) */
    assert_ok(sync_backoff_delay(2000, 0, 0, 0, 0, &d));
    assert_int_equal(d, 2000);
    assert_ok(sync_backoff_delay(2000, 0, UINT32_MAX, 0, 0, &d));
    assert_true(d >= 2999 && d < 3000);
    assert_ok(sync_backoff_delay(2000, 0, UINT32_MAX / 2, 0, 0, &d));
    assert_true(d >= 2499 && d <= 2500);
    /* the attempt does not grow a server-given hint: the server knows when tokens are due */
    assert_ok(sync_backoff_delay(2000, 7, 0, 0, 0, &d));
    assert_int_equal(d, 2000);
    /* a zero hint ("now") is honoured as such */
    assert_ok(sync_backoff_delay(0, 3, UINT32_MAX, 0, 0, &d));
    assert_int_equal(d, 0);
    assert_kb(sync_backoff_delay(2000, 0, 0, 0, 0, NULL), KB_ERR_NULL);
}

static void test_delay_no_hint(void **state)
{
    int64_t d = -1, prev = 0;
    (void)state;
    /* doubling from the base, capped; no overflow however many attempts */
    for (unsigned a = 0; a < 200; a++) {
        assert_ok(sync_backoff_delay(-1, a, 0, 0, 0, &d));
        assert_true(d >= prev);
        assert_true(d <= SYNC_BACKOFF_CAP_MS);
        prev = d;
    }
    assert_ok(sync_backoff_delay(-1, 0, 0, 0, 0, &d));
    assert_int_equal(d, SYNC_BACKOFF_BASE_MS);
    assert_ok(sync_backoff_delay(-1, 1, 0, 0, 0, &d));
    assert_int_equal(d, 2 * SYNC_BACKOFF_BASE_MS);
    assert_ok(sync_backoff_delay(-1, 1000, 0, 0, 0, &d));
    assert_int_equal(d, SYNC_BACKOFF_CAP_MS);
    assert_ok(sync_backoff_delay(-1, 1000, UINT32_MAX, 0, 0, &d));
    assert_true(d < SYNC_BACKOFF_CAP_MS + SYNC_BACKOFF_CAP_MS / SYNC_BACKOFF_JITTER_DIV);
    assert_true(d > SYNC_BACKOFF_CAP_MS);
}

static void test_delay_deadline(void **state)
{
    int64_t d = -1;
    const int64_t now = 100000, dl = now + 10000; /* 10 s left, 9 s usable */
    (void)state;
    /* fits with its jitter */
    assert_ok(sync_backoff_delay(3000, 0, UINT32_MAX, now, dl, &d));
    assert_true(d >= 4499 && d < 4500);
    /* the jitter is clipped to the usable time: the wait never ends past deadline - reserve */
    assert_ok(sync_backoff_delay(8000, 0, UINT32_MAX, now, dl, &d));
    assert_int_equal(d, 10000 - SYNC_BACKOFF_RESERVE_MS);
    /* exactly the usable time */
    assert_ok(sync_backoff_delay(10000 - SYNC_BACKOFF_RESERVE_MS, 0, UINT32_MAX, now, dl, &d));
    assert_int_equal(d, 10000 - SYNC_BACKOFF_RESERVE_MS);
    /* Retry-After larger than what is left: stop early, no wait */
    d = -1;
    assert_kb(sync_backoff_delay(10000 - SYNC_BACKOFF_RESERVE_MS + 1, 0, 0, now, dl, &d),
              KB_ERR_TIMEOUT);
    assert_int_equal(d, 0);
    assert_kb(sync_backoff_delay(3600 * 1000, 0, 0, now, dl, &d), KB_ERR_TIMEOUT);
    /* past the deadline: even a zero hint stops */
    assert_kb(sync_backoff_delay(0, 0, 0, dl + 1, dl, &d), KB_ERR_TIMEOUT);
    /* no hint: the exponential wait is cut the same way */
    assert_kb(sync_backoff_delay(-1, 10, 0, now, dl, &d), KB_ERR_TIMEOUT);
    assert_ok(sync_backoff_delay(-1, 3, 0, now, dl, &d));
    assert_int_equal(d, 8 * SYNC_BACKOFF_BASE_MS);
}

/* A fake clock: sleeping advances it; the random numbers come from a script. */
typedef struct {
    int64_t now;
    int sleeps;
    int64_t slept[16];
    const uint32_t *rnd;
    size_t nrnd, irnd;
} fake_clock;

static int64_t fc_now(void *ctx)
{
    return ((fake_clock *)ctx)->now;
}

static void fc_sleep(void *ctx, int64_t ms)
{
    fake_clock *f = ctx;
    if (f->sleeps < 16)
        f->slept[f->sleeps] = ms;
    f->sleeps++;
    f->now += ms;
}

static uint32_t fc_random(void *ctx)
{
    fake_clock *f = ctx;
    return f->nrnd ? f->rnd[f->irnd++ % f->nrnd] : 0;
}

static void test_wait_loop(void **state)
{
    static const uint32_t rnd[] = {0, UINT32_MAX, UINT32_MAX / 4};
    fake_clock f = {.now = 5000, .rnd = rnd, .nrnd = 3};
    sync_clock c = {.deadline_ms = 5000 + 20000,
                    .now_ms = fc_now,
                    .sleep_ms = fc_sleep,
                    .random = fc_random,
                    .ctx = &f};
    int64_t w = -1;
    unsigned a;
    (void)state;
    assert_int_equal(sync_clock_left(&c), 20000);
    /* a server that answers Retry-After: 4 forever: retried while a wait fits, then stop */
    for (a = 0; sync_backoff_wait(&c, 4000, a, &w) == KB_OK; a++)
        assert_true(w >= 4000 && w <= 6000);
    assert_int_equal(w, 0); /* the refused wait slept nothing */
    /* rnd 0, MAX, MAX/4, 0: 4000 + 5999 + 4499 = 14498 ms slept, 4502 usable ms left: one more
     * 4000 fits, then 502 do not: stop */
    assert_int_equal(f.sleeps, 4);
    assert_int_equal(f.slept[0], 4000);
    assert_true(f.slept[1] >= 5999 && f.slept[1] < 6000);
    assert_true(f.slept[2] >= 4499 && f.slept[2] <= 4500);
    assert_int_equal(f.slept[3], 4000);
    assert_true(f.now <= c.deadline_ms - SYNC_BACKOFF_RESERVE_MS);
    assert_int_equal(a, 4);
    /* the deadline has passed: nothing left */
    f.now = c.deadline_ms + 1;
    assert_int_equal(sync_clock_left(&c), 0);
    assert_kb(sync_backoff_wait(&c, 0, 0, &w), KB_ERR_TIMEOUT);
    assert_int_equal(f.sleeps, 4);
    /* no deadline */
    c.deadline_ms = 0;
    assert_true(sync_clock_left(&c) == INT64_MAX);
    assert_ok(sync_backoff_wait(&c, 1000, 0, &w));
    assert_int_equal(f.sleeps, 5);
}

static void test_wait_hint_too_large(void **state)
{
    fake_clock f = {.now = 0};
    sync_clock c = {.deadline_ms = 60000,
                    .now_ms = fc_now,
                    .sleep_ms = fc_sleep,
                    .random = fc_random,
                    .ctx = &f};
    int64_t w = -1;
    (void)state;
    /* Retry-After: 120 with 60 s left: stop at once, sleep nothing */
    assert_kb(sync_backoff_wait(&c, 120000, 0, &w), KB_ERR_TIMEOUT);
    assert_int_equal(f.sleeps, 0);
    assert_int_equal(f.now, 0);
}

static void batch(const char *body, const char *const *names, size_t n, sync_content *out,
                  kb_err want)
{
    size_t fetched = 99;
    assert_kb(sync_kb_parse_batch(body, strlen(body), names, n, out, &fetched), want);
}

static void test_parse_deferred(void **state)
{
    static const char *const names[] = {"a", "b", "c"};
    sync_content out[3];
    size_t fetched = 0;
    const char *ok = "{\"secrets\":[{\"name\":\"a\",\"version\":1,\"checksum\":"
                     "\"1111111111111111111111111111111111111111111111111111111111111111\","
                     "\"metadata\":{},\"content\":\"eA==\"},"
                     "{\"name\":\"b\",\"error\":\"deferred\",\"retry_after\":3},"
                     "{\"name\":\"c\",\"error\":\"deferred\"}]}";
    (void)state;
    memset(out, 0, sizeof(out));
    assert_ok(sync_kb_parse_batch(ok, strlen(ok), names, 3, out, &fetched));
    assert_int_equal(fetched, 1);
    assert_int_equal(out[0].err, KB_OK);
    /* "deferred" is the budget's answer: KB_ERR_LIMIT with its hint, not KB_ERR_INVALID */
    assert_int_equal(out[1].err, KB_ERR_LIMIT);
    assert_int_equal(out[1].retry_after_ms, 3000);
    assert_null(out[1].content);
    assert_int_equal(out[2].err, KB_ERR_LIMIT);
    assert_int_equal(out[2].retry_after_ms, -1);
    for (int i = 0; i < 3; i++)
        sync_content_clear(&out[i]);
    /* the older "limit" spelling too */
    batch("{\"secrets\":[{\"name\":\"a\",\"error\":\"limit\",\"retry_after\":0}]}", names, 1, out,
          KB_OK);
    assert_int_equal(out[0].err, KB_ERR_LIMIT);
    assert_int_equal(out[0].retry_after_ms, 0);
    sync_content_clear(&out[0]);
    /* an unknown error stays invalid for that name */
    batch("{\"secrets\":[{\"name\":\"a\",\"error\":\"later\"}]}", names, 1, out, KB_OK);
    assert_int_equal(out[0].err, KB_ERR_INVALID);
    sync_content_clear(&out[0]);
    /* malformed hints: negative, a string, a fraction, past the limit -> the answer is bad */
    static const char *const bad[] = {
        "{\"secrets\":[{\"name\":\"a\",\"error\":\"deferred\",\"retry_after\":-1}]}",
        "{\"secrets\":[{\"name\":\"a\",\"error\":\"deferred\",\"retry_after\":\"3\"}]}",
        "{\"secrets\":[{\"name\":\"a\",\"error\":\"deferred\",\"retry_after\":1.5}]}",
        "{\"secrets\":[{\"name\":\"a\",\"error\":\"deferred\",\"retry_after\":86401}]}",
        "{\"secrets\":[{\"name\":\"a\",\"error\":\"deferred\",\"retry_after\":null}]}",
        "{\"secrets\":[{\"name\":\"a\",\"error\":7}]}",
        NULL};
    for (size_t i = 0; bad[i]; i++) {
        batch(bad[i], names, 1, out, KB_ERR_INVALID);
        assert_int_equal(out[0].err, KB_ERR_INVALID);
        assert_int_equal(out[0].retry_after_ms, -1);
        sync_content_clear(&out[0]);
    }
    /* at the limit */
    batch("{\"secrets\":[{\"name\":\"a\",\"error\":\"deferred\",\"retry_after\":86400}]}", names, 1,
          out, KB_OK);
    assert_int_equal(out[0].retry_after_ms, 86400000);
    sync_content_clear(&out[0]);
    /* truncated */
    batch("{\"secrets\":[{\"name\":\"a\",\"error\":\"deferred\",\"retry_", names, 1, out,
          KB_ERR_INVALID);
    sync_content_clear(&out[0]);
    assert_int_equal(kb_secret_live_count(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delay_hint),          cmocka_unit_test(test_delay_no_hint),
        cmocka_unit_test(test_delay_deadline),      cmocka_unit_test(test_wait_loop),
        cmocka_unit_test(test_wait_hint_too_large), cmocka_unit_test(test_parse_deferred),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
