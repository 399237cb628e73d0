/* test_ca_config.c - keybridge-ca's option checks (ca_config.c): [ca] key, [acm_pca] numbers and
 * serve's settings ([server] svid_dir, svid_ttl, threads, svid_dns/svid_ip; [renew] tick). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kbtest.h"
#include "ca.h"
#include "ca_config.h"
#include "lib/config.h"

static kb_config *load(const char *ini_text)
{
    char *dir = kbtest_tmpdir();
    char path[512], err[256];
    kb_config *c = NULL;
    FILE *f;
    snprintf(path, sizeof(path), "%s/ca.ini", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(ini_text, f);
    fclose(f);
    assert_ok(kb_config_load(ca_config_keys, path, CA_ENV_PREFIX, &c, err, sizeof(err)));
    remove(path);
    free(dir);
    return c;
}

static void key_kind(void **state)
{
    (void)state;
    static const char *const good[] = {"pkcs11", "file", "acm-pca"};
    char ini[128], why[256];
    const char *kind = NULL;
    for (size_t i = 0; i < 3; i++) {
        snprintf(ini, sizeof(ini), "[ca]\nkey = %s\n", good[i]);
        kb_config *c = load(ini);
        assert_ok(ca_config_key_kind(c, &kind, why, sizeof(why)));
        assert_string_equal(kind, good[i]);
        kb_config_free(c);
    }
    kb_config *c = load("[ca]\nkey = hsm\n");
    assert_kb(ca_config_key_kind(c, &kind, why, sizeof(why)), KB_ERR_CONFIG);
    assert_null(kind);
    assert_non_null(strstr(why, "[ca] key must be"));
    kb_config_free(c);
}

static void pca_numbers(void **state)
{
    (void)state;
    static const char *const bad[] = {"[acm_pca]\ntimeout = 0\n", "[acm_pca]\ndeadline = 0\n",
                                      "[acm_pca]\nissue_rate = 0\n"};
    ca_pca_opts po;
    char why[256];
    kb_config *c = load("[aws]\nregion = eu-west-1\n[acm_pca]\nca_arn = arn:x\n");
    assert_ok(ca_config_pca(c, &po, why, sizeof(why)));
    assert_string_equal(po.region, "eu-west-1"); /* [aws] region when [acm_pca] has none */
    assert_string_equal(po.ca_arn, "arn:x");
    assert_int_equal(po.timeout_ms, 10000);
    kb_config_free(c);
    for (size_t i = 0; i < 3; i++) {
        c = load(bad[i]);
        assert_kb(ca_config_pca(c, &po, why, sizeof(why)), KB_ERR_CONFIG);
        assert_non_null(strstr(why, "[acm_pca]"));
        kb_config_free(c);
    }
}

static void serve_settings(void **state)
{
    (void)state;
    static const struct {
        const char *ini, *why;
    } bad[] = {
        {"[server]\nthreads = 2\n", "svid_dir is required"},
        {"[server]\nsvid_dir = /d\nsvid_ttl = 10s\n", "svid_ttl must be between"},
        {"[server]\nsvid_dir = /d\nsvid_ttl = 31d\n", "svid_ttl must be between"},
        {"[server]\nsvid_dir = /d\nthreads = 0\n", "[server] threads"},
        {"[server]\nsvid_dir = /d\n[renew]\ntick = 0\n", "[renew] tick"},
        {"[server]\nsvid_dir = /d\n[renew]\nlease = 0\n", "lease >= 1s"},
        {"[server]\nsvid_dir = /d\nsvid_dns = bad..name\n", "[server] svid_dns: 'bad..name'"},
        {"[server]\nsvid_dir = /d\nsvid_ip = 300.1.1.1\n", "[server] svid_ip: '300.1.1.1'"},
    };
    ca_serve_config sc;
    char why[256];
    kb_config *c = load("[server]\nsvid_dir = /d\nsvid_dns = ca.example.org, ca2.example.org\n"
                        "svid_ip = 127.0.0.1\n");
    assert_ok(ca_config_serve(c, &sc, why, sizeof(why)));
    assert_string_equal(sc.svid_dir, "/d");
    assert_null(sc.own_id);
    assert_null(sc.bundle_listen);
    assert_int_equal(sc.threads, 2);
    assert_int_equal(sc.svid_ttl, 3600);
    assert_int_equal(sc.tick, 1);
    assert_int_equal(sc.lease, 60);
    kb_config_free(c);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = load(bad[i].ini);
        why[0] = '\0';
        assert_kb(ca_config_serve(c, &sc, why, sizeof(why)), KB_ERR_CONFIG);
        if (strstr(why, bad[i].why) == NULL)
            fail_msg("case %zu: '%s' does not name '%s'", i, why, bad[i].why);
        kb_config_free(c);
    }
}

/* [ca] store_url (PostgreSQL) or [ca] db (SQLite); a passfile only with a URL. */
static void store_location(void **state)
{
    const char *where = NULL, *pf = NULL;
    char why[256];
    kb_config *c;
    (void)state;

    c = load("[ca]\ndb = /var/lib/ca.db\n");
    assert_ok(ca_config_store(c, &where, &pf, why, sizeof(why)));
    assert_string_equal(where, "/var/lib/ca.db");
    assert_null(pf);
    kb_config_free(c);
    c = load("[ca]\nstore_url = postgresql://ca@db/ca?sslmode=verify-full\n"
             "store_passfile = /etc/kb/pgpass\n");
    assert_ok(ca_config_store(c, &where, &pf, why, sizeof(why)));
    assert_string_equal(where, "postgresql://ca@db/ca?sslmode=verify-full");
    assert_string_equal(pf, "/etc/kb/pgpass");
    kb_config_free(c);
    c = load("[ca]\nstore_url = mysql://ca@db/ca\n");
    assert_kb(ca_config_store(c, &where, &pf, why, sizeof(why)), KB_ERR_CONFIG);
    assert_non_null(strstr(why, "postgresql://"));
    kb_config_free(c);
    c = load("[ca]\ndb = /x.db\nstore_passfile = /etc/kb/pgpass\n");
    assert_kb(ca_config_store(c, &where, &pf, why, sizeof(why)), KB_ERR_CONFIG);
    assert_non_null(strstr(why, "store_url"));
    kb_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_kind),
        cmocka_unit_test(pca_numbers),
        cmocka_unit_test(serve_settings),
        cmocka_unit_test(store_location),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
