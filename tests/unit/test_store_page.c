/* test_store_page.c - store_secret_list_page (store_impl.h): paging through all secrets by name
 * gives exactly what store_secret_list gives, for page sizes 1, 7, exact multiples and larger
 * than the store; deleted secrets only with include_deleted; a secret with a tampered row MAC
 * is dropped without stopping the walk; a tampered name with a NUL inside refuses the page
 * instead of looping; bad arguments (NULL outputs, limit 0 or over STORE_PAGE_MAX, an oversized
 * cursor) are refused; a cursor past the end gives an empty last page.
 */
#include <sqlite3.h>
#include <string.h>
#include <unistd.h>

#include "kbtest.h"
#include "lib/err.h"
#include "lib/secbuf.h"
#include "server/model.h"
#include "server/store.h"
#include "server/store_impl.h"

#define NSEC 23

static const char *ADMIN = "spiffe://example.org/admin";

typedef struct {
    char *dir;
    char db[512];
    kb_secret *key;
    store *st;
    int64_t ids[NSEC];
} fx;

static kb_err seal(void *ctx, int64_t id, int64_t version, store_envelope *env,
                   uint8_t checksum[STORE_CHECKSUM_LEN])
{
    (void)ctx;
    env->wrapped_key = calloc(1, 8);
    env->wrapped_key_len = 8;
    env->sealed = calloc(1, 8);
    env->sealed_len = 8;
    env->key_id = strdup("k");
    memset(checksum, (int)(id + version), STORE_CHECKSUM_LEN);
    return env->wrapped_key && env->sealed && env->key_id ? KB_OK : KB_ERR_NOMEM;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    uint8_t k[32];
    char url[600], name[32];
    store_opts o = {0};
    store_secret_new sn = {0};
    store_version_new vn = {.content_len = 3};
    if (f == NULL)
        return -1;
    f->dir = kbtest_tmpdir();
    snprintf(f->db, sizeof(f->db), "%s/p.db", f->dir);
    snprintf(url, sizeof(url), "sqlite:%s", f->db);
    memset(k, 9, sizeof(k));
    if (kb_secret_from(k, sizeof(k), &f->key) != KB_OK)
        return -1;
    o.row_mac_key = f->key;
    if (store_open(url, &o, &f->st) != KB_OK)
        return -1;
    /* Created out of name order, so paging has to sort. */
    for (int i = 0; i < NSEC; i++) {
        snprintf(name, sizeof(name), "s-%02d", (i * 7) % NSEC);
        sn.name = name;
        if (store_secret_create(f->st, &sn, &vn, seal, NULL, ADMIN, 1, &f->ids[(i * 7) % NSEC],
                                NULL) != KB_OK)
            return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char p[600];
    store_close(f->st);
    kb_secret_free(f->key);
    unlink(f->db);
    snprintf(p, sizeof(p), "%s-wal", f->db);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", f->db);
    unlink(p);
    rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void raw_sql(fx *f, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* Walk all pages of `limit`; the names seen, joined by ',', into buf. Returns the page count. */
static int walk(fx *f, bool include_deleted, size_t limit, char *buf, size_t cap)
{
    char *cursor = NULL;
    int pages = 0;
    buf[0] = '\0';
    do {
        store_record *recs = NULL;
        size_t n = 0;
        char *next = NULL;
        assert_ok(store_secret_list_page(f->st, include_deleted, cursor, limit, &recs, &n, &next));
        assert_true(n <= limit);
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(buf);
            snprintf(buf + l, cap - l, "%s%s", l ? "," : "", recs[i].secret.name);
            assert_int_equal(recs[i].version.version, recs[i].secret.latest_version);
        }
        store_records_free(recs, n);
        free(cursor);
        cursor = next;
        pages++;
        assert_true(pages < 1000);
    } while (cursor != NULL);
    return pages;
}

/* The same names, in the same order, as one store_secret_list call. */
static void full(fx *f, bool include_deleted, char *buf, size_t cap)
{
    store_record *recs = NULL;
    size_t n = 0;
    buf[0] = '\0';
    assert_ok(store_secret_list(f->st, include_deleted, &recs, &n));
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, cap - l, "%s%s", l ? "," : "", recs[i].secret.name);
    }
    store_records_free(recs, n);
}

static void pages_equal_the_full_list(void **state)
{
    fx *f = *state;
    char want[2048], got[2048];
    const size_t limits[] = {1, 7, NSEC, NSEC + 1, STORE_PAGE_MAX};
    assert_ok(store_secret_delete(f->st, f->ids[4], ADMIN, 5, NULL));
    for (int d = 0; d < 2; d++) {
        full(f, d == 1, want, sizeof(want));
        for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
            int pages = walk(f, d == 1, limits[i], got, sizeof(got));
            assert_string_equal(got, want);
            if (limits[i] == 1)
                assert_true(pages >= NSEC - 1);
            if (limits[i] > NSEC)
                assert_int_equal(pages, 1);
        }
    }
    full(f, false, want, sizeof(want));
    assert_null(strstr(want, "s-04")); /* deleted: only with include_deleted */
    full(f, true, want, sizeof(want));
    assert_non_null(strstr(want, "s-04"));
}

static void tampered_rows(void **state)
{
    fx *f = *state;
    char want[2048], got[2048];
    store_record *recs = NULL;
    size_t n = 0;
    char *next = NULL;
    /* A forged flag: the row's MAC no longer matches, it is dropped, the walk goes on. */
    raw_sql(f, "UPDATE secrets SET cloud_sync = 1 WHERE name = 's-05'");
    full(f, true, want, sizeof(want));
    assert_null(strstr(want, "s-05"));
    assert_int_equal(walk(f, true, 1, got, sizeof(got)) >= NSEC - 1, 1);
    assert_string_equal(got, want);
    /* A name with a NUL inside: refused, not an endless walk. */
    raw_sql(f, "UPDATE secrets SET name = CAST(x'732d3130006162' AS TEXT) WHERE name = 's-10'");
    assert_kb(store_secret_list_page(f->st, true, "s-09", 5, &recs, &n, &next), KB_ERR_INTEGRITY);
    assert_null(recs);
    assert_null(next);
}

static void bad_arguments(void **state)
{
    fx *f = *state;
    store_record *recs = NULL;
    size_t n = 0;
    char *next = NULL;
    char big[MODEL_NAME_MAX + 2];
    assert_kb(store_secret_list_page(f->st, false, NULL, 0, &recs, &n, &next), KB_ERR_INVALID);
    assert_kb(store_secret_list_page(f->st, false, NULL, STORE_PAGE_MAX + 1, &recs, &n, &next),
              KB_ERR_TOO_LARGE);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_kb(store_secret_list_page(f->st, false, big, 5, &recs, &n, &next), KB_ERR_TOO_LARGE);
    big[MODEL_NAME_MAX] = '\0'; /* at the limit: fine */
    assert_ok(store_secret_list_page(f->st, false, big, 5, &recs, &n, &next));
    assert_int_equal(n, 5); /* "aaa..." sorts before every "s-NN" */
    assert_string_equal(recs[0].secret.name, "s-00");
    assert_string_equal(next, "s-04");
    store_records_free(recs, n);
    free(next);
    assert_kb(store_secret_list_page(NULL, false, NULL, 5, &recs, &n, &next), KB_ERR_NULL);
    assert_kb(store_secret_list_page(f->st, false, NULL, 5, NULL, &n, &next), KB_ERR_NULL);
    assert_kb(store_secret_list_page(f->st, false, NULL, 5, &recs, NULL, &next), KB_ERR_NULL);
    assert_kb(store_secret_list_page(f->st, false, NULL, 5, &recs, &n, NULL), KB_ERR_NULL);
    /* past the end: an empty last page */
    assert_ok(store_secret_list_page(f->st, false, "zzz", 5, &recs, &n, &next));
    assert_int_equal(n, 0);
    assert_null(recs);
    assert_null(next);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(pages_equal_the_full_list, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
