/* test_idtable.c - the bounded per-ID table: lookup, creation, the bound and its eviction order
 * (idle first, else the highest score, else refuse), oversized IDs, stable value addresses. */
#include "kbtest.h"

#include <string.h>

#include "lib/err.h"
#include "lib/idtable.h"

typedef struct {
    int busy;     /* < 0 score: must stay */
    double score; /* else this */
} val;

static double score(void *v, void *arg)
{
    val *x = v;
    (void)arg;
    return x->busy ? -1 : x->score;
}

static kb_idtable *mk(size_t max, size_t id_max)
{
    kb_idtable *t = NULL;
    const kb_idtable_opts o = {
        .max = max, .id_max = id_max, .val_size = sizeof(val), .idle = score};
    assert_ok(kb_idtable_new(&o, &t));
    return t;
}

static val *get(kb_idtable *t, const char *id, bool *created)
{
    void *v = NULL;
    assert_ok(kb_idtable_get(t, id, NULL, &v, created));
    return v;
}

static void create_find_and_stable(void **state)
{
    kb_idtable *t = mk(8, 64);
    bool created = false;
    (void)state;
    val *a = get(t, "spiffe://example.org/a", &created);
    assert_true(created);
    assert_int_equal(a->busy, 0); /* zeroed */
    a->score = 0.25;
    assert_ptr_equal(get(t, "spiffe://example.org/a", &created), a);
    assert_false(created);
    assert_ptr_equal(kb_idtable_find(t, "spiffe://example.org/a"), a);
    assert_null(kb_idtable_find(t, "spiffe://example.org/b"));
    assert_int_equal(kb_idtable_count(t), 1);
    /* many IDs: the first value does not move */
    for (int i = 0; i < 7; i++) {
        char id[32];
        snprintf(id, sizeof(id), "id-%d", i);
        (void)get(t, id, NULL);
    }
    assert_ptr_equal(kb_idtable_find(t, "spiffe://example.org/a"), a);
    assert_true(a->score == 0.25);
    assert_int_equal(kb_idtable_count(t), 8);
    kb_idtable_free(t);
}

static void bound_evicts_idle_then_highest_then_refuses(void **state)
{
    kb_idtable *t = mk(3, 64);
    void *v = NULL;
    (void)state;
    get(t, "a", NULL)->score = 0.2;
    get(t, "b", NULL)->score = 1; /* idle */
    get(t, "c", NULL)->score = 0.7;
    /* full: the idle one goes */
    (void)get(t, "d", NULL);
    assert_int_equal(kb_idtable_count(t), 3);
    assert_null(kb_idtable_find(t, "b"));
    assert_non_null(kb_idtable_find(t, "a"));
    /* no idle one: the highest score (c, 0.7) goes, never a busy one */
    ((val *)kb_idtable_find(t, "d"))->busy = 1;
    (void)get(t, "e", NULL);
    assert_null(kb_idtable_find(t, "c"));
    assert_non_null(kb_idtable_find(t, "a"));
    assert_non_null(kb_idtable_find(t, "d"));
    /* every entry busy: a new ID is refused and nothing changes */
    ((val *)kb_idtable_find(t, "a"))->busy = 1;
    ((val *)kb_idtable_find(t, "e"))->busy = 1;
    assert_kb(kb_idtable_get(t, "f", NULL, &v, NULL), KB_ERR_LIMIT);
    assert_null(v);
    assert_int_equal(kb_idtable_count(t), 3);
    /* a known ID is still found when full */
    assert_ok(kb_idtable_get(t, "a", NULL, &v, NULL));
    kb_idtable_free(t);
}

static void refuses_oversized_and_bad_args(void **state)
{
    kb_idtable *t = mk(4, 8), *u = NULL;
    void *v = NULL;
    kb_idtable_opts o = {.max = 0, .id_max = 8, .val_size = 1};
    (void)state;
    assert_ok(kb_idtable_get(t, "12345678", NULL, &v, NULL)); /* exactly id_max */
    /* one byte longer: refused, never truncated into the entry above */
    assert_kb(kb_idtable_get(t, "123456789", NULL, &v, NULL), KB_ERR_TOO_LARGE);
    assert_null(v);
    assert_null(kb_idtable_find(t, "123456789"));
    assert_int_equal(kb_idtable_count(t), 1);
    assert_kb(kb_idtable_get(t, NULL, NULL, &v, NULL), KB_ERR_NULL);
    assert_kb(kb_idtable_get(NULL, "a", NULL, &v, NULL), KB_ERR_NULL);
    assert_kb(kb_idtable_get(t, "a", NULL, NULL, NULL), KB_ERR_NULL);
    assert_null(kb_idtable_find(NULL, "a"));
    assert_int_equal(kb_idtable_count(NULL), 0);
    assert_kb(kb_idtable_new(&o, &u), KB_ERR_INVALID); /* max 0 */
    o.max = 1;
    o.id_max = 0;
    assert_kb(kb_idtable_new(&o, &u), KB_ERR_INVALID);
    assert_kb(kb_idtable_new(NULL, &u), KB_ERR_NULL);
    assert_null(u);
    kb_idtable_free(t);
    kb_idtable_free(NULL);
}

static void no_score_means_any_may_go(void **state)
{
    kb_idtable *t = NULL;
    const kb_idtable_opts o = {.max = 2, .id_max = 16, .val_size = 0};
    void *v = NULL;
    (void)state;
    assert_ok(kb_idtable_new(&o, &t));
    for (int i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof(id), "x%d", i);
        assert_ok(kb_idtable_get(t, id, NULL, &v, NULL));
        assert_true(kb_idtable_count(t) <= 2);
    }
    kb_idtable_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(create_find_and_stable),
        cmocka_unit_test(bound_evicts_idle_then_highest_then_refuses),
        cmocka_unit_test(refuses_oversized_and_bad_args),
        cmocka_unit_test(no_score_means_any_may_go),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
