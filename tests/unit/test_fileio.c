/* test_fileio.c - bounded reads, secret files, atomic writes. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kbtest.h"
#include "lib/fileio.h"

static void atomic_write_and_read(void **state)
{
    (void)state;
    char *dir = kbtest_tmpdir();
    char path[512], link[512];
    struct stat st;
    kb_dbuf b;
    kb_secret *s = NULL;

    snprintf(path, sizeof(path), "%s/f", dir);
    assert_ok(kb_file_write_atomic(path, "abc\n", 4, 0400));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0400);
    kb_dbuf_init(&b, 4);
    assert_ok(kb_file_read(path, 4, &b));
    assert_string_equal(kb_dbuf_str(&b), "abc\n");
    kb_dbuf_free(&b);
    kb_dbuf_init(&b, 100);
    assert_kb(kb_file_read(path, 3, &b), KB_ERR_TOO_LARGE);
    kb_dbuf_free(&b);
    assert_ok(kb_file_read_secret(path, 16, &s));
    assert_int_equal(kb_secret_len(s), 3);
    kb_secret_free(s);

    /* overwrite keeps atomicity and applies the new mode */
    assert_ok(kb_file_write_atomic(path, "x", 1, 0600));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 1);

    /* a symlink at the target is replaced, not followed */
    char victim[512];
    snprintf(victim, sizeof(victim), "%s/victim", dir);
    assert_ok(kb_file_write_atomic(victim, "keep", 4, 0600));
    snprintf(link, sizeof(link), "%s/l", dir);
    assert_int_equal(symlink(victim, link), 0);
    assert_ok(kb_file_write_atomic(link, "new", 3, 0600));
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    kb_dbuf_init(&b, 100);
    assert_ok(kb_file_read(victim, 100, &b));
    assert_string_equal(kb_dbuf_str(&b), "keep");
    kb_dbuf_free(&b);
    free(dir);
}

static void refuses_bad_files(void **state)
{
    (void)state;
    char *dir = kbtest_tmpdir();
    char path[512];
    kb_dbuf b;
    kb_secret *s = NULL;

    kb_dbuf_init(&b, 100);
    assert_kb(kb_file_read(dir, 100, &b), KB_ERR_IO); /* a directory */
    assert_kb(kb_file_read("/nonexistent", 100, &b), KB_ERR_IO);
    kb_dbuf_free(&b);
    snprintf(path, sizeof(path), "%s/open", dir);
    assert_ok(kb_file_write_atomic(path, "1234", 4, 0640));
    assert_kb(kb_file_read_secret(path, 100, &s), KB_ERR_CONFIG);
    assert_null(s);
    snprintf(path, sizeof(path), "%s/nodir/x", dir);
    assert_kb(kb_file_write_atomic(path, "1", 1, 0600), KB_ERR_IO);
    free(dir);
}

/* A FIFO used to block open() until a writer came (a config, key or PIN path pointing at one
 * hung start-up forever); it must be refused like any other non-regular file. The alarm turns
 * a hang into a test failure. */
static void refuses_fifo_without_blocking(void **state)
{
    (void)state;
    char *dir = kbtest_tmpdir();
    char path[512];
    kb_dbuf b;
    kb_secret *s = NULL;

    snprintf(path, sizeof(path), "%s/fifo", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    alarm(20);
    kb_dbuf_init(&b, 100);
    assert_kb(kb_file_read(path, 100, &b), KB_ERR_IO);
    assert_int_equal(b.len, 0);
    kb_dbuf_free(&b);
    assert_kb(kb_file_read_secret(path, 100, &s), KB_ERR_IO);
    assert_null(s);
    alarm(0);
    unlink(path);
    rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(atomic_write_and_read),
        cmocka_unit_test(refuses_bad_files),
        cmocka_unit_test(refuses_fifo_without_blocking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
