/* test_cache_config.c - keybridge-cache's option checks (cache_config.c): required keys, the
 * [server] threads range, and the values serve runs with. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kbtest.h"
#include "cache_config.h"
#include "lib/config.h"
#include "lib/httpd.h"

/* Load ini text through the real table (environment cleared of our prefix's keys). */
static kb_config *load(const char *ini_text)
{
    char *dir = kbtest_tmpdir();
    char path[512], err[256];
    kb_config *c = NULL;
    FILE *f;
    snprintf(path, sizeof(path), "%s/cache.ini", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(ini_text, f);
    fclose(f);
    unsetenv("KEYBRIDGE_CACHE_SERVER_THREADS");
    unsetenv("KEYBRIDGE_CACHE_STORE_KEY_FILE");
    unsetenv("KEYBRIDGE_CACHE_AUTH_CREDENTIALS_FILE");
    assert_ok(kb_config_load(cache_config_keys, path, CACHE_ENV_PREFIX, &c, err, sizeof(err)));
    remove(path);
    free(dir);
    return c;
}

static void good_values(void **state)
{
    (void)state;
    kb_config *c = load("[store]\nkey_file = /k\n[auth]\ncredentials_file = /c\n"
                        "[server]\nthreads = 3\n");
    cache_config cc;
    char why[256] = "";
    assert_ok(cache_config_load(c, &cc, why, sizeof(why)));
    assert_int_equal(cc.threads, 3);
    assert_string_equal(cc.store_key_file, "/k");
    assert_string_equal(cc.credentials_file, "/c");
    assert_string_equal(cc.store_path, "keybridge-cache.db");
    assert_string_equal(cc.listen, "127.0.0.1:4566");
    assert_string_equal(cc.region, "us-east-1");
    assert_null(cc.cert_file);
    kb_config_free(c);
}

static void missing_required(void **state)
{
    (void)state;
    static const char *const inis[] = {
        "[auth]\ncredentials_file = /c\n", /* no [store] key_file */
        "[store]\nkey_file = /k\n",        /* no [auth] credentials_file */
    };
    for (size_t i = 0; i < sizeof(inis) / sizeof(inis[0]); i++) {
        kb_config *c = load(inis[i]);
        cache_config cc;
        char why[256] = "";
        assert_kb(cache_config_load(c, &cc, why, sizeof(why)), KB_ERR_CONFIG);
        assert_non_null(strstr(why, "are required"));
        kb_config_free(c);
    }
}

static void threads_range(void **state)
{
    (void)state;
    char ini[256];
    const int64_t bad[] = {-1, KB_HTTPD_MAX_THREADS + 1};
    for (size_t i = 0; i < 2; i++) {
        snprintf(ini, sizeof(ini),
                 "[store]\nkey_file = /k\n[auth]\ncredentials_file = /c\n[server]\nthreads = "
                 "%lld\n",
                 (long long)bad[i]);
        kb_config *c = load(ini);
        cache_config cc;
        char why[256] = "";
        assert_kb(cache_config_load(c, &cc, why, sizeof(why)), KB_ERR_CONFIG);
        assert_non_null(strstr(why, "[server] threads"));
        kb_config_free(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_values),
        cmocka_unit_test(missing_required),
        cmocka_unit_test(threads_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
