/* kbtest.h - shared helpers for cmocka unit tests. */
#ifndef KB_TEST_H
#define KB_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

/* Assert a kb_err equals the expected code, printing both names on failure. */
#define assert_kb(expr, code)                                                                      \
    do {                                                                                           \
        kb_err kb__got = (expr);                                                                   \
        if (kb__got != (code))                                                                     \
            fail_msg("%s: got %s, want %s", #expr, kb_err_str(kb__got), kb_err_str(code));         \
    } while (0)
#define assert_ok(expr) assert_kb(expr, KB_OK)

/* A fresh temporary directory for a test (removed by the caller's teardown, if it likes). */
static inline char *kbtest_tmpdir(void)
{
    char tmpl[] = "/tmp/kbtest.XXXXXX";
    char *d = mkdtemp(tmpl);
    if (d == NULL)
        return NULL;
    char *out = malloc(sizeof(tmpl));
    if (out)
        snprintf(out, sizeof(tmpl), "%s", d);
    return out;
}

static inline const char *kbtest_testdata(void)
{
    const char *d = getenv("KB_TESTDATA");
    return d ? d : "../shared/testdata";
}

#endif
