/* test_config.c - INI schema, environment overrides, secret files. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kbtest.h"
#include "lib/config.h"
#include "lib/err.h"

#include <jansson.h>

static const kb_config_key schema[] = {
    {"server", "listen", KB_CFG_STRING, "127.0.0.1:8443", "address"},
    {"server", "threads", KB_CFG_INT, "0", "loops"},
    {"server", "tls", KB_CFG_BOOL, "true", "tls on"},
    {"sync", "interval", KB_CFG_DURATION, "15m", "interval"},
    {"hsm", "pin_file", KB_CFG_SECRET_FILE, NULL, "PIN file"},
    {NULL, NULL, 0, NULL, NULL},
};

static char *write_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char *path = malloc(512);
    snprintf(path, 512, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void defaults_file_env(void **state)
{
    (void)state;
    char *dir = kbtest_tmpdir();
    char *ini = write_file(dir, "a.ini", "[server]\nthreads = 4\n[sync]\ninterval = 1h\n", 0644);
    kb_config *c = NULL;
    char err[256];

    unsetenv("KBT_SERVER_LISTEN");
    setenv("KBT_SERVER_TLS", "no", 1);
    assert_ok(kb_config_load(schema, ini, "KBT", &c, err, sizeof(err)));
    assert_string_equal(kb_config_str(c, "server", "listen"), "127.0.0.1:8443");
    assert_string_equal(kb_config_origin(c, "server", "listen"), "default");
    assert_int_equal(kb_config_int(c, "server", "threads"), 4);
    assert_string_equal(kb_config_origin(c, "server", "threads"), "file");
    assert_int_equal(kb_config_bool(c, "server", "tls"), 0);
    assert_string_equal(kb_config_origin(c, "server", "tls"), "env");
    assert_int_equal(kb_config_duration(c, "sync", "interval"), 3600);
    assert_null(kb_config_str(c, "hsm", "pin_file"));
    kb_config_free(c);
    unsetenv("KBT_SERVER_TLS");
    free(ini);
    free(dir);
}

static void rejects_bad_input(void **state)
{
    (void)state;
    char *dir = kbtest_tmpdir();
    kb_config *c = NULL;
    char err[256];
    char *unknown = write_file(dir, "u.ini", "[server]\nlisten_typo = x\n", 0644);
    char *badint = write_file(dir, "b.ini", "[server]\nthreads = four\n", 0644);
    char *baddur = write_file(dir, "d.ini", "[sync]\ninterval = 15 minutes\n", 0644);
    char *syntax = write_file(dir, "s.ini", "[server\nthreads = 1\n", 0644);
    char *pin = write_file(dir, "p.ini", "[hsm]\npin = 1234\n", 0644);

    assert_kb(kb_config_load(schema, unknown, "KBT", &c, err, sizeof(err)), KB_ERR_CONFIG);
    assert_non_null(strstr(err, "listen_typo"));
    assert_null(c);
    assert_kb(kb_config_load(schema, badint, "KBT", &c, err, sizeof(err)), KB_ERR_CONFIG);
    assert_non_null(strstr(err, "threads"));
    assert_null(strstr(err, "four")); /* errors name keys, never values */
    assert_kb(kb_config_load(schema, baddur, "KBT", &c, err, sizeof(err)), KB_ERR_CONFIG);
    assert_kb(kb_config_load(schema, syntax, "KBT", &c, err, sizeof(err)), KB_ERR_CONFIG);
    /* A PIN can never be given inline: no such key exists. */
    assert_kb(kb_config_load(schema, pin, "KBT", &c, err, sizeof(err)), KB_ERR_CONFIG);
    assert_null(strstr(err, "1234"));
    assert_kb(kb_config_load(schema, "/nonexistent/x.ini", "KBT", &c, err, sizeof(err)),
              KB_ERR_CONFIG);
    setenv("KBT_SERVER_THREADS", "-x", 1);
    assert_kb(kb_config_load(schema, NULL, "KBT", &c, err, sizeof(err)), KB_ERR_CONFIG);
    unsetenv("KBT_SERVER_THREADS");
    free(unknown);
    free(badint);
    free(baddur);
    free(syntax);
    free(pin);
    free(dir);
}

static void secret_file_permissions(void **state)
{
    (void)state;
    char *dir = kbtest_tmpdir();
    char *good = write_file(dir, "pin", "1234\n", 0600);
    char *open_pin = write_file(dir, "pin-open", "1234\n", 0644);
    kb_config *c = NULL;
    kb_secret *s = NULL;
    char err[256];

    setenv("KBT_HSM_PIN_FILE", good, 1);
    assert_ok(kb_config_load(schema, NULL, "KBT", &c, err, sizeof(err)));
    assert_ok(kb_config_secret(c, "hsm", "pin_file", 64, &s));
    assert_int_equal(kb_secret_len(s), 4); /* trailing newline stripped */
    assert_memory_equal(kb_secret_data(s), "1234", 4);
    kb_secret_free(s);
    assert_kb(kb_config_secret(c, "hsm", "pin_file", 3, &s), KB_ERR_TOO_LARGE);
    kb_config_free(c);

    setenv("KBT_HSM_PIN_FILE", open_pin, 1);
    assert_ok(kb_config_load(schema, NULL, "KBT", &c, err, sizeof(err)));
    assert_kb(kb_config_secret(c, "hsm", "pin_file", 64, &s), KB_ERR_CONFIG);
    assert_null(s);
    kb_config_free(c);
    unsetenv("KBT_HSM_PIN_FILE");
    free(good);
    free(open_pin);
    free(dir);
}

static void parsers(void **state)
{
    (void)state;
    int64_t v;
    int b;
    assert_ok(kb_parse_duration("90", &v));
    assert_int_equal(v, 90);
    assert_ok(kb_parse_duration("45m", &v));
    assert_int_equal(v, 2700);
    assert_ok(kb_parse_duration("7d", &v));
    assert_int_equal(v, 604800);
    assert_kb(kb_parse_duration("-1m", &v), KB_ERR_INVALID);
    assert_kb(kb_parse_duration("1mm", &v), KB_ERR_INVALID);
    assert_kb(kb_parse_duration("", &v), KB_ERR_INVALID);
    assert_kb(kb_parse_duration("99999999999999999999d", &v), KB_ERR_INVALID);
    assert_kb(kb_parse_duration("9223372036854775807d", &v), KB_ERR_INVALID);
    assert_ok(kb_parse_int64("-42", &v));
    assert_int_equal(v, -42);
    assert_kb(kb_parse_int64("42x", &v), KB_ERR_INVALID);
    assert_kb(kb_parse_int64("", &v), KB_ERR_INVALID);
    assert_ok(kb_parse_bool("ON", &b));
    assert_int_equal(b, 1);
    assert_kb(kb_parse_bool("maybe", &b), KB_ERR_INVALID);
}

/* --check-config output is JSON whatever a value holds: quotes, backslashes and control
 * characters escaped, bytes that are not UTF-8 shown as U+FFFD (found by fuzz_config). */
static void print_is_json(void **state)
{
    (void)state;
    char *dir = kbtest_tmpdir();
    char *ini = write_file(dir, "j.ini", "[server]\nlisten = a\"b\\c\x01\xff\xc3\xa9\n", 0644);
    kb_config *c = NULL;
    char err[256];
    char *out = NULL;
    size_t outlen = 0;
    json_t *j = NULL;

    unsetenv("KBT_SERVER_LISTEN");
    unsetenv("KBT_SERVER_TLS");
    assert_ok(kb_config_load(schema, ini, "KBT", &c, err, sizeof(err)));
    FILE *f = open_memstream(&out, &outlen);
    assert_non_null(f);
    kb_config_print(c, f);
    fclose(f);
    j = json_loadb(out, outlen, 0, NULL);
    assert_non_null(j);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "server.listen"), "value")),
        "a\"b\\c\x01\xef\xbf\xbd\xc3\xa9");
    json_decref(j);
    free(out);
    kb_config_free(c);
    free(ini);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_file_env),       cmocka_unit_test(rejects_bad_input),
        cmocka_unit_test(secret_file_permissions), cmocka_unit_test(parsers),
        cmocka_unit_test(print_is_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
