/* test_generate.c - generated content (server/generate.h) with the development file keystore:
 * every type's shape, the limits at, below and above each bound, parameters that do not apply.
 * Through the API, SoftHSM2 and the CLI: tests/integration/test_generate.py. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "kbtest.h"
#include "lib/keystore.h"
#include "lib/log.h"
#include "server/expiry.h"
#include "server/generate.h"
#include "server/generate_pgp.h"

static kb_keystore *ks;

static kb_err check(const char *type, int64_t bytes, const char *alphabet, int64_t bits,
                    const char *curve)
{
    generate_params p = {type, bytes, alphabet, bits, curve, NULL, 0};
    const char *why = NULL;
    kb_err rc = generate_check(&p, &why);
    if ((rc == KB_OK) != (why == NULL))
        fail_msg("%s: result and reason disagree", type ? type : "(null)");
    return rc;
}

static void limits(void **state)
{
    (void)state;
    assert_ok(check("random", 0, NULL, 0, NULL));
    assert_ok(check("openpgp", 0, NULL, 0, NULL));
    assert_ok(check("random", GEN_RANDOM_BYTES_MIN, NULL, 0, NULL));
    assert_ok(check("random", GEN_RANDOM_BYTES_MAX, NULL, 0, NULL));
    assert_kb(check("random", GEN_RANDOM_BYTES_MIN - 1, NULL, 0, NULL), KB_ERR_INVALID);
    assert_kb(check("random", GEN_RANDOM_BYTES_MAX + 1, NULL, 0, NULL), KB_ERR_TOO_LARGE);
    assert_kb(check("password", GEN_PASSWORD_LEN_MIN, "0123456789abcdefghijklmnopqrstuv", 0, NULL),
              KB_ERR_INVALID); /* 8 x 5 bits = 40: too weak */
    assert_kb(check("password", GEN_PASSWORD_LEN_MIN, "01", 0, NULL), KB_ERR_INVALID);
    assert_ok(check("password", 64, "01", 0, NULL)); /* exactly 64 bits */
    assert_kb(check("password", 63, "01", 0, NULL), KB_ERR_INVALID);
    assert_kb(check("password", GEN_PASSWORD_LEN_MIN - 1, NULL, 0, NULL), KB_ERR_INVALID);
    assert_ok(check("password", GEN_PASSWORD_LEN_MAX, NULL, 0, NULL));
    assert_kb(check("password", GEN_PASSWORD_LEN_MAX + 1, NULL, 0, NULL), KB_ERR_TOO_LARGE);
    assert_kb(check("password", 0, "a", 0, NULL), KB_ERR_INVALID);
    assert_kb(check("password", 0, "abca", 0, NULL), KB_ERR_INVALID);
    assert_kb(check("password", 0, "ab\x7f", 0, NULL), KB_ERR_INVALID);
    assert_kb(check("password", 0, "ab cd", 0, NULL), KB_ERR_INVALID);
    {
        char all[GEN_ALPHABET_MAX + 2];
        for (int i = 0; i < GEN_ALPHABET_MAX; i++)
            all[i] = (char)(0x21 + i);
        all[GEN_ALPHABET_MAX] = '\0';
        assert_ok(check("password", 0, all, 0, NULL));
        all[GEN_ALPHABET_MAX] = '!';
        all[GEN_ALPHABET_MAX + 1] = '\0';
        assert_kb(check("password", 0, all, 0, NULL), KB_ERR_TOO_LARGE);
    }
    assert_ok(check("rsa", 0, NULL, 2048, NULL));
    assert_kb(check("rsa", 0, NULL, 1024, NULL), KB_ERR_INVALID);
    assert_ok(check("ec", 0, NULL, 0, "P-384"));
    assert_kb(check("ec", 0, NULL, 0, "secp256k1"), KB_ERR_INVALID);
    /* parameters that do not apply */
    assert_kb(check("random", 0, "ab", 0, NULL), KB_ERR_INVALID);
    assert_kb(check("ed25519", 32, NULL, 0, NULL), KB_ERR_INVALID);
    assert_kb(check("password", 0, NULL, 2048, NULL), KB_ERR_INVALID);
    assert_kb(check("rsa", 0, NULL, 0, "P-256"), KB_ERR_INVALID);
    assert_kb(check("openpgp", 32, NULL, 0, NULL), KB_ERR_INVALID);
    assert_kb(check("openpgp", 0, "ab", 0, NULL), KB_ERR_INVALID);
    assert_kb(check("openpgp", 0, NULL, 2048, NULL), KB_ERR_INVALID);
    assert_kb(check("openpgp", 0, NULL, 0, "P-256"), KB_ERR_INVALID);
    assert_kb(check("pgp", 0, NULL, 0, NULL), KB_ERR_INVALID);
    assert_kb(check(NULL, 0, NULL, 0, NULL), KB_ERR_INVALID);
    assert_kb(generate_check(NULL, NULL), KB_ERR_NULL);
}

/* openpgp's own parameters: the user ID and the key's expiry. */
static kb_err check_pgp(const char *uid, int64_t expires_at)
{
    generate_params p = {.type = "openpgp", .uid = uid, .expires_at = expires_at};
    const char *why = NULL;
    kb_err rc = generate_check(&p, &why);
    if ((rc == KB_OK) != (why == NULL))
        fail_msg("openpgp: result and reason disagree");
    return rc;
}

static void pgp_limits(void **state)
{
    int64_t now = (int64_t)time(NULL);
    char big[GEN_PGP_UID_MAX + 2];
    (void)state;
    assert_ok(check_pgp("Payments signing <pay@example.org>", 0));
    assert_ok(check_pgp("Zo\xc3\xab", now + 2 * 86400));            /* UTF-8 */
    assert_ok(check_pgp("x", now + GEN_PGP_EXPIRES_MAX_SECS - 60)); /* just inside */
    assert_kb(check_pgp("x", now + 3600), KB_ERR_INVALID);          /* under a day */
    assert_kb(check_pgp("x", now - 86400), KB_ERR_INVALID);         /* past */
    assert_kb(check_pgp("x", now + GEN_PGP_EXPIRES_MAX_SECS + 60), KB_ERR_INVALID);
    assert_kb(check_pgp("", 0), KB_ERR_INVALID);
    assert_kb(check_pgp(" lead", 0), KB_ERR_INVALID);
    assert_kb(check_pgp("trail ", 0), KB_ERR_INVALID);
    assert_kb(check_pgp("a\nb", 0), KB_ERR_INVALID);
    assert_kb(check_pgp("a\x7f", 0), KB_ERR_INVALID);
    assert_kb(check_pgp("bad \xc3\x28 utf8", 0), KB_ERR_INVALID);
    assert_kb(check_pgp("overlong \xc0\xaf", 0), KB_ERR_INVALID);
    memset(big, 'u', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_kb(check_pgp(big, 0), KB_ERR_TOO_LARGE);
    big[GEN_PGP_UID_MAX] = '\0';
    assert_ok(check_pgp(big, 0));
    /* uid applies to openpgp only */
    generate_params p = {.type = "ed25519", .uid = "x"};
    assert_kb(generate_check(&p, NULL), KB_ERR_INVALID);
}

/* The directory the tests' GnuPG homes are made in (their own, so that a keybridged or another
 * test running at the same time, whose homes are in /dev/shm, is not counted). */
static char g_base[300];

/* Homes left in g_base, and processes whose command line names g_base (a gpg-agent left running
 * for one of them). */
static int leftovers(void)
{
    int n = 0;
    DIR *d = opendir(g_base);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += strncmp(e->d_name, "kb-gpg-", 7) == 0;
    if (d)
        closedir(d);
    DIR *p = opendir("/proc");
    while (p && (e = readdir(p)) != NULL) {
        char path[300], cmd[4096];
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(path, "r");
        size_t len = f ? fread(cmd, 1, sizeof(cmd) - 1, f) : 0;
        if (f)
            fclose(f);
        for (size_t k = 0; k < len; k++)
            if (cmd[k] == '\0')
                cmd[k] = ' ';
        cmd[len] = '\0';
        n += strstr(cmd, g_base) != NULL;
    }
    if (p)
        closedir(p);
    return n;
}

/* Leftovers after up to 2 s (an agent told to stop may take a moment to exit). */
static int leftovers_settled(void)
{
    int n = leftovers();
    for (int i = 0; i < 40 && n > 0; i++) {
        usleep(50 * 1000);
        n = leftovers();
    }
    return n;
}

static void pgp_make(void **state)
{
    kb_secret *c = NULL;
    char *pub = NULL;
    int64_t now = (int64_t)time(NULL), exp = 0, want = now + 30 * 86400, got = 0;
    expiry_kind kind;
    (void)state;
    assert_int_equal(leftovers(), 0);
    assert_ok(generate_pgp_make_algo(g_base, "Unit Test <unit@example.org>", GEN_PGP_ALGO,
                                     GEN_PGP_SUBALGO, want, now, &c, &pub, &exp));
    assert_non_null(c);
    assert_non_null(pub);
    assert_true(kb_secret_len(c) > 100 && kb_secret_len(c) <= GEN_PGP_ARMOR_MAX);
    assert_memory_equal(kb_secret_cdata(c), "-----BEGIN PGP PRIVATE KEY BLOCK-----", 37);
    assert_memory_equal(pub, "-----BEGIN PGP PUBLIC KEY BLOCK-----", 36);
    assert_null(strstr(pub, "PRIVATE"));
    /* the key's expiry as GnuPG recorded it: the requested one (to the seconds gpg took) */
    assert_true(exp >= want - 5 && exp <= want + 60);
    /* and what expiry extraction reads from the stored content and the public key agrees */
    assert_ok(expiry_extract(kb_secret_cdata(c), kb_secret_len(c), &got, &kind));
    assert_int_equal(kind, EXPIRY_OPENPGP);
    assert_int_equal(got, exp);
    assert_ok(expiry_extract((const uint8_t *)pub, strlen(pub), &got, &kind));
    assert_int_equal(got, exp);
    kb_secret_free(c);
    free(pub);
    c = NULL;
    pub = NULL;
    /* the temporary home is gone, and so is its agent */
    assert_int_equal(leftovers_settled(), 0);
    /* through generate_make (home in /dev/shm), the defaults: 2 years, uid from the caller */
    generate_params p = {.type = "openpgp"};
    assert_ok(generate_make(ks, &p, "payments-signing", &c, &pub, &exp));
    assert_true(exp >= now + GEN_PGP_EXPIRES_DEFAULT_SECS - 5 &&
                exp <= now + GEN_PGP_EXPIRES_DEFAULT_SECS + 60);
    kb_secret_free(c);
    free(pub);
}

/* A failure inside GnuPG (an algorithm it refuses: before any key, and after the primary key's
 * files exist) returns an error and still leaves no home and no agent. */
static void pgp_failure_wipes(void **state)
{
    kb_secret *c = NULL;
    char *pub = NULL;
    int64_t now = (int64_t)time(NULL), exp = 7;
    (void)state;
    assert_kb(generate_pgp_make_algo(g_base, "x", "no-such-algo", GEN_PGP_SUBALGO, now + 86400 * 10,
                                     now, &c, &pub, &exp),
              KB_ERR_CRYPTO);
    assert_int_equal(leftovers_settled(), 0);
    assert_kb(generate_pgp_make_algo(g_base, "x", GEN_PGP_ALGO, "no-such-algo", now + 86400 * 10,
                                     now, &c, &pub, &exp),
              KB_ERR_CRYPTO);
    assert_null(c);
    assert_null(pub);
    assert_int_equal(exp, 0);
    assert_int_equal(leftovers_settled(), 0);
    /* out of range before anything is made */
    assert_kb(generate_pgp_make("x", now + 10, now, &c, &pub, &exp), KB_ERR_INVALID);
    assert_kb(generate_pgp_make("a\tb", now + 86400 * 10, now, &c, &pub, &exp), KB_ERR_INVALID);
    assert_kb(generate_pgp_make(NULL, now + 86400 * 10, now, &c, &pub, &exp), KB_ERR_NULL);
}

/* The home: a fresh private directory; the wipe removes files, nested directories and sockets
 * in it, and the directory itself. */
static void pgp_home(void **state)
{
    char home[256], path[300];
    struct stat st;
    (void)state;
    /* the default place: /dev/shm here (a tmpfs) */
    assert_ok(generate_pgp_home_new(NULL, home, sizeof(home)));
    assert_memory_equal(home, "/dev/shm/kb-gpg-", 16);
    assert_int_equal(lstat(home, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_ok(generate_pgp_home_wipe(home));
    assert_int_equal(lstat(home, &st), -1);
    assert_ok(generate_pgp_home_new(g_base, home, sizeof(home)));
    assert_int_equal(lstat(home, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/private-keys-v1.d", home);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/private-keys-v1.d/AB.key", home);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("(11:private-key(3:ecc...))", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/S.gpg-agent", home);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    assert_ok(generate_pgp_home_wipe(home));
    assert_int_equal(lstat(home, &st), -1);
    assert_int_equal(errno, ENOENT);
    assert_ok(generate_pgp_home_wipe(home)); /* already gone: fine */
    assert_kb(generate_pgp_home_new(NULL, NULL, 0), KB_ERR_NULL);
    assert_kb(generate_pgp_home_new("/nonexistent/dir", home, sizeof(home)), KB_ERR_IO);
    assert_int_equal(leftovers(), 0);
}

static void make(void **state)
{
    static const char *const pairs[] = {"ec", "rsa", "ed25519"};
    kb_secret *c = NULL;
    char *pub = NULL;
    int64_t exp = -1;
    (void)state;
    generate_params p = {"random", 100, NULL, 0, NULL, NULL, 0};
    assert_ok(generate_make(ks, &p, "n", &c, &pub, &exp));
    assert_int_equal(kb_secret_len(c), 100);
    assert_null(pub);
    assert_int_equal(exp, 0);
    kb_secret_free(c);
    p = (generate_params){"password", 1000, "xy", 0, NULL, NULL, 0};
    assert_ok(generate_make(ks, &p, "n", &c, &pub, &exp));
    assert_int_equal(kb_secret_len(c), 1000);
    size_t x = 0;
    for (size_t i = 0; i < 1000; i++) {
        uint8_t ch = kb_secret_cdata(c)[i];
        assert_true(ch == 'x' || ch == 'y');
        x += ch == 'x';
    }
    assert_true(x > 400 && x < 600); /* uniform: 500 +- 6 sigma */
    kb_secret_free(c);
    for (size_t i = 0; i < 3; i++) {
        p = (generate_params){pairs[i], 0, NULL, i == 1 ? 2048 : 0, NULL, NULL, 0};
        assert_ok(generate_make(ks, &p, "n", &c, &pub, &exp));
        BIO *b = BIO_new_mem_buf(kb_secret_cdata(c), (int)kb_secret_len(c));
        EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        BIO_free(b);
        assert_non_null(k);
        b = BIO_new_mem_buf(pub, -1);
        EVP_PKEY *pk = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
        BIO_free(b);
        assert_non_null(pk);
        assert_int_equal(EVP_PKEY_eq(k, pk), 1);
        EVP_PKEY_free(k);
        EVP_PKEY_free(pk);
        kb_secret_free(c);
        free(pub);
    }
    p = (generate_params){"random", 99999, NULL, 0, NULL, NULL, 0};
    assert_kb(generate_make(ks, &p, "n", &c, &pub, &exp), KB_ERR_TOO_LARGE);
    assert_null(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(limits),
        cmocka_unit_test(make),
        cmocka_unit_test(pgp_limits),
        cmocka_unit_test(pgp_make),
        cmocka_unit_test(pgp_failure_wipes),
        cmocka_unit_test(pgp_home),
    };
    char *d = kbtest_tmpdir(), path[256];
    int rc;
    kb_log_set_level(KB_LOG_OFF);
    if (d == NULL || kb_secmem_init() != KB_OK) {
        free(d);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/ks", d);
    snprintf(g_base, sizeof(g_base), "%s/gpg", d);
    if (kb_keystore_create_file(path) != KB_OK || kb_keystore_open_file(path, &ks) != KB_OK ||
        mkdir(g_base, 0700) != 0) {
        free(d);
        return 1;
    }
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    kb_keystore_free(ks);
    unlink(path);
    rmdir(g_base);
    rmdir(d);
    free(d);
    return rc;
}
