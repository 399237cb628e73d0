/* test_generate.c - generated content (server/generate.h) with the development file keystore:
 * every type's shape, the limits at, below and above each bound, parameters that do not apply.
 * Through the API, SoftHSM2 and the CLI: tests/integration/test_generate.py. */
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "kbtest.h"
#include "lib/keystore.h"
#include "lib/log.h"
#include "server/generate.h"

static kb_keystore *ks;

static kb_err check(const char *type, int64_t bytes, const char *alphabet, int64_t bits,
                    const char *curve)
{
    gen_params p = {type, bytes, alphabet, bits, curve};
    const char *why = NULL;
    kb_err rc = gen_check(&p, &why);
    if ((rc == KB_OK) != (why == NULL))
        fail_msg("%s: result and reason disagree", type ? type : "(null)");
    return rc;
}

static void limits(void **state)
{
    (void)state;
    assert_ok(check("random", 0, NULL, 0, NULL));
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
    assert_kb(check("openpgp", 0, NULL, 0, NULL), KB_ERR_INVALID);
    assert_kb(check(NULL, 0, NULL, 0, NULL), KB_ERR_INVALID);
    assert_kb(gen_check(NULL, NULL), KB_ERR_NULL);
}

static void make(void **state)
{
    static const char *const pairs[] = {"ec", "rsa", "ed25519"};
    kb_secret *c = NULL;
    char *pub = NULL;
    (void)state;
    gen_params p = {"random", 100, NULL, 0, NULL};
    assert_ok(gen_make(ks, &p, &c, &pub));
    assert_int_equal(kb_secret_len(c), 100);
    assert_null(pub);
    kb_secret_free(c);
    p = (gen_params){"password", 1000, "xy", 0, NULL};
    assert_ok(gen_make(ks, &p, &c, &pub));
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
        p = (gen_params){pairs[i], 0, NULL, i == 1 ? 2048 : 0, NULL};
        assert_ok(gen_make(ks, &p, &c, &pub));
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
    p = (gen_params){"random", 99999, NULL, 0, NULL};
    assert_kb(gen_make(ks, &p, &c, &pub), KB_ERR_TOO_LARGE);
    assert_null(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(limits), cmocka_unit_test(make)};
    char *d = kbtest_tmpdir(), path[256];
    int rc;
    kb_log_set_level(KB_LOG_OFF);
    if (d == NULL || kb_secmem_init() != KB_OK) {
        free(d);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/ks", d);
    if (kb_keystore_create_file(path) != KB_OK || kb_keystore_open_file(path, &ks) != KB_OK) {
        free(d);
        return 1;
    }
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    kb_keystore_free(ks);
    unlink(path);
    rmdir(d);
    free(d);
    return rc;
}
