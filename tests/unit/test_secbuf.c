/* test_secbuf.c - locked secret buffers, wiping, constant-time compare. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kbtest.h"
#include "lib/err.h"
#include "lib/secbuf.h"

static void secret_holds_and_frees(void **state)
{
    (void)state;
    kb_secret *s = NULL;
    size_t before = kb_secret_live_count();
    assert_ok(kb_secret_from("hunter2", 7, &s));
    assert_int_equal(kb_secret_len(s), 7);
    assert_memory_equal(kb_secret_data(s), "hunter2", 7);
    assert_int_equal(kb_secret_live_count(), before + 1);
    /* the mapping is locked: mincore reports it resident */
    unsigned char vec = 0;
    long ps = sysconf(_SC_PAGESIZE);
    void *page = (void *)((uintptr_t)kb_secret_data(s) & ~(uintptr_t)(ps - 1));
    assert_int_equal(mincore(page, (size_t)ps, &vec), 0);
    assert_true(vec & 1);
    assert_ok(kb_secret_truncate(s, 3));
    assert_int_equal(kb_secret_len(s), 3);
    assert_kb(kb_secret_truncate(s, 4), KB_ERR_INVALID);
    kb_secret_free(s);
    assert_int_equal(kb_secret_live_count(), before);
    kb_secret_free(NULL);
}

static void secret_limits(void **state)
{
    (void)state;
    kb_secret *s = NULL;
    assert_ok(kb_secret_new(0, &s));
    assert_int_equal(kb_secret_len(s), 0);
    kb_secret_free(s);
    assert_kb(kb_secret_new(KB_SECRET_MAX + 1, &s), KB_ERR_TOO_LARGE);
    assert_null(s);
    assert_kb(kb_secret_from(NULL, 4, &s), KB_ERR_NULL);
    assert_kb(kb_secret_new(1, NULL), KB_ERR_NULL);
}

static void wipe_and_ct_eq(void **state)
{
    (void)state;
    uint8_t a[16], b[16];
    memset(a, 0x5a, sizeof(a));
    memcpy(b, a, sizeof(b));
    assert_true(kb_ct_eq(a, b, sizeof(a)));
    b[15] ^= 1;
    assert_false(kb_ct_eq(a, b, sizeof(a)));
    kb_wipe(a, sizeof(a));
    for (size_t i = 0; i < sizeof(a); i++)
        assert_int_equal(a[i], 0);
}

static void secmem_init_hardens_process(void **state)
{
    (void)state;
    /* As root mlock always works; the refusal path is covered by integration/test_memlock (an
     * unprivileged user at RLIMIT_MEMLOCK 0, or an injected EPERM where the kernel allows it). */
    assert_ok(kb_secmem_init());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(secret_holds_and_frees),
        cmocka_unit_test(secret_limits),
        cmocka_unit_test(wipe_and_ct_eq),
        cmocka_unit_test(secmem_init_hardens_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
