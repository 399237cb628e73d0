/* test_notify.c - the notifier's configuration checks and window labels (server/notify.h); the
 * delivery itself (retries, one per window, restart) is tests/integration/test_notify.py. */
#include <string.h>
#include <unistd.h>

#include "kbtest.h"
#include "lib/config.h"
#include "lib/log.h"
#include "server/notify.h"
#include "server/server_config.h"

/* notify_new on a configuration holding only a [notify] section with body. */
static kb_err try_conf(const char *body)
{
    char path[] = "/tmp/kbnotify.XXXXXX";
    char err[256];
    kb_config *cfg = NULL;
    notify *n = NULL;
    int fd = mkstemp(path);
    kb_err rc;
    assert_true(fd >= 0);
    assert_true(write(fd, "[notify]\n", 9) == 9);
    assert_true(write(fd, body, strlen(body)) == (ssize_t)strlen(body));
    close(fd);
    rc = kb_config_load(server_config_keys, path, NULL, &cfg, err, sizeof(err));
    unlink(path);
    if (rc != KB_OK)
        return rc;
    rc = notify_new(cfg, NULL, &n);
    /* no URL: nothing to deliver, the thread does not start, a scan sends nothing */
    if (rc == KB_OK && strstr(body, "url") == NULL) {
        size_t sent = 1;
        assert_ok(notify_start(n));
        assert_ok(notify_scan(n, 0, &sent));
        assert_int_equal(sent, 0);
    }
    notify_free(n);
    kb_config_free(cfg);
    return rc;
}

static void config(void **state)
{
    (void)state;
    assert_ok(try_conf(""));
    assert_ok(try_conf("windows = 1d, 30d ,7d\n"));
    assert_ok(try_conf("windows = 90m\nattempts = 20\nbackoff = 0\n"));
    assert_ok(try_conf("url = http://127.0.0.1:9/hook\n"));
    assert_ok(try_conf("url = https://hooks.example.test/services/x\n"));
    assert_kb(try_conf("windows = \n"), KB_ERR_CONFIG);
    assert_kb(try_conf("windows = 7d,7d\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("windows = 0\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("windows = 367d\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("windows = soon\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("windows = 1d,2d,3d,4d,5d,6d,7d,8d,9d\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("attempts = 0\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("attempts = 21\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("interval = 0\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("timeout = 301s\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("backoff = 301s\n"), KB_ERR_CONFIG);
    /* plain http leaves loopback only; other schemes, user info and bad CA files are refused */
    assert_kb(try_conf("url = http://192.0.2.1/hook\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("url = ftp://127.0.0.1/hook\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("url = https://user:pw@hooks.example.test/\n"), KB_ERR_CONFIG);
    assert_kb(try_conf("url = https://127.0.0.1/\nca_file = /nonexistent/ca.pem\n"), KB_ERR_CONFIG);
}

static void labels(void **state)
{
    char b[16];
    (void)state;
    notify_window_label(30 * 86400, b, sizeof(b));
    assert_string_equal(b, "30d");
    notify_window_label(12 * 3600, b, sizeof(b));
    assert_string_equal(b, "12h");
    notify_window_label(90 * 60, b, sizeof(b));
    assert_string_equal(b, "90m");
    notify_window_label(45, b, sizeof(b));
    assert_string_equal(b, "45s");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(config), cmocka_unit_test(labels)};
    kb_log_set_level(KB_LOG_OFF);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
