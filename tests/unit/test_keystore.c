/* test_keystore.c - file and PKCS#11 (SoftHSM2) keystores: wrap/unwrap, derive, sign, errors.
 *
 * Each PKCS#11 test makes its own throwaway token (kbtest_softhsm.h) with its own SOFTHSM2_CONF.
 * With KB_KEEP_TOKEN_DIR set (tests/integration/test_pkcs11_tool.sh), only one test runs: it
 * initialises keys in the token that directory already holds (made by tests/lib/softhsm.sh,
 * label in KB_KEEP_TOKEN_LABEL) and leaves them there for pkcs11-tool to inspect.
 */
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include "kbtest.h"
#include "kbtest_softhsm.h"
#include "lib/err.h"
#include "lib/fileio.h"
#include "lib/keystore.h"
#include "lib/log.h"
#include "lib/secbuf.h"

#define MODULE KBTEST_SOFTHSM_MODULE
#define KEY "master"

static kb_secret *pin_of(const kbtest_softhsm *t)
{
    kb_secret *pin = NULL;
    assert_ok(kb_file_read_secret(t->pin_file, 256, &pin));
    return pin;
}

static kb_secret *random_dk(void)
{
    kb_secret *dk = NULL;
    assert_ok(kb_secret_new(KB_KEYSTORE_DK_LEN, &dk));
    assert_int_equal(RAND_bytes(kb_secret_data(dk), KB_KEYSTORE_DK_LEN), 1);
    return dk;
}

static char *file_ks_path(char **dir)
{
    char *p = malloc(600);
    *dir = kbtest_tmpdir();
    assert_non_null(*dir);
    snprintf(p, 600, "%s/master.key", *dir);
    return p;
}

static void rm_file_ks(char *dir, char *path)
{
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
}

/* Wrap/unwrap round trip plus every single-byte flip, truncation and re-labelling of the blob:
 * each must fail, never yield a key. Shared by both backends. */
static void check_wrap_contract(kb_keystore *ks)
{
    kb_secret *dk = random_dk(), *got = NULL;
    uint8_t *blob = NULL, *bad;
    size_t len = 0;
    const char *id = kb_keystore_key_id(ks);

    assert_ok(kb_keystore_wrap(ks, dk, &blob, &len));
    assert_int_equal(len, KB_KEYSTORE_BLOB_LEN);
    assert_ok(kb_keystore_unwrap(ks, id, blob, len, &got));
    assert_int_equal(kb_secret_len(got), KB_KEYSTORE_DK_LEN);
    assert_memory_equal(kb_secret_cdata(got), kb_secret_cdata(dk), KB_KEYSTORE_DK_LEN);
    kb_secret_free(got);
    got = NULL;

    /* Two wraps of one key differ (random IV). */
    uint8_t *blob2 = NULL;
    size_t len2 = 0;
    assert_ok(kb_keystore_wrap(ks, dk, &blob2, &len2));
    assert_memory_not_equal(blob, blob2, len);
    free(blob2);

    bad = malloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            memcpy(bad, blob, len);
            bad[i] ^= (uint8_t)(1u << bit);
            assert_kb(kb_keystore_unwrap(ks, id, bad, len, &got), KB_ERR_INTEGRITY);
            assert_null(got);
        }
    }
    memcpy(bad, blob, len);
    bad[len] = 0;
    assert_kb(kb_keystore_unwrap(ks, id, bad, len + 1, &got), KB_ERR_INTEGRITY);
    assert_kb(kb_keystore_unwrap(ks, id, bad, len - 1, &got), KB_ERR_INTEGRITY);
    assert_kb(kb_keystore_unwrap(ks, id, bad, 0, &got), KB_ERR_INTEGRITY);
    assert_null(got);
    free(bad);

    /* Another master key's id: not ours to unwrap. */
    assert_kb(kb_keystore_unwrap(ks, "file:00000000000000000000000000000000", blob, len, &got),
              KB_ERR_NOT_FOUND);
    assert_kb(kb_keystore_unwrap(ks, "", blob, len, &got), KB_ERR_NOT_FOUND);
    assert_null(got);

    /* Wrong shapes and NULLs. */
    kb_secret *short_dk = NULL;
    uint8_t *b3 = (uint8_t *)"x";
    size_t l3 = 9;
    assert_ok(kb_secret_new(16, &short_dk));
    assert_kb(kb_keystore_wrap(ks, short_dk, &b3, &l3), KB_ERR_INVALID);
    assert_null(b3);
    assert_int_equal(l3, 0);
    kb_secret_free(short_dk);
    assert_kb(kb_keystore_wrap(ks, NULL, &b3, &l3), KB_ERR_NULL);
    assert_kb(kb_keystore_wrap(NULL, dk, &b3, &l3), KB_ERR_NULL);
    assert_kb(kb_keystore_unwrap(ks, NULL, blob, len, &got), KB_ERR_NULL);
    assert_kb(kb_keystore_unwrap(ks, id, NULL, len, &got), KB_ERR_NULL);

    free(blob);
    kb_secret_free(dk);
}

static void check_derive_sign_contract(kb_keystore *ks)
{
    kb_secret *a = NULL, *b = NULL, *c = NULL;
    uint8_t sig[32], sig2[32];
    const uint8_t data[] = "chain head 0001";
    char longlabel[KB_KEYSTORE_LABEL_MAX + 2];

    assert_ok(kb_keystore_derive(ks, "checksum-v1", &a));
    assert_ok(kb_keystore_derive(ks, "checksum-v1", &b));
    assert_ok(kb_keystore_derive(ks, "rowmac-v1", &c));
    assert_int_equal(kb_secret_len(a), 32);
    assert_memory_equal(kb_secret_cdata(a), kb_secret_cdata(b), 32);
    assert_memory_not_equal(kb_secret_cdata(a), kb_secret_cdata(c), 32);

    /* Labels: bounded, lowercase charset, non-empty. */
    memset(longlabel, 'a', sizeof(longlabel) - 1);
    longlabel[sizeof(longlabel) - 1] = '\0';
    kb_secret *bad = (kb_secret *)1;
    assert_kb(kb_keystore_derive(ks, longlabel, &bad), KB_ERR_INVALID);
    assert_null(bad);
    longlabel[KB_KEYSTORE_LABEL_MAX] = '\0';
    assert_ok(kb_keystore_derive(ks, longlabel, &bad));
    kb_secret_free(bad);
    assert_kb(kb_keystore_derive(ks, "", &bad), KB_ERR_INVALID);
    assert_kb(kb_keystore_derive(ks, "Checksum", &bad), KB_ERR_INVALID);
    assert_kb(kb_keystore_derive(ks, "a b", &bad), KB_ERR_INVALID);
    assert_kb(kb_keystore_derive(ks, "a\n", &bad), KB_ERR_INVALID);
    assert_kb(kb_keystore_derive(ks, NULL, &bad), KB_ERR_NULL);

    /* sign: deterministic, verifies, separated from derive, detects any change. */
    assert_ok(kb_keystore_sign(ks, data, sizeof(data), sig));
    assert_ok(kb_keystore_sign(ks, data, sizeof(data), sig2));
    assert_memory_equal(sig, sig2, 32);
    assert_ok(kb_keystore_verify(ks, data, sizeof(data), sig));
    assert_ok(kb_keystore_sign(ks, (const uint8_t *)"checksum-v1", 11, sig2));
    assert_memory_not_equal(sig2, kb_secret_cdata(a), 32);
    assert_kb(kb_keystore_verify(ks, data, sizeof(data) - 1, sig), KB_ERR_INTEGRITY);
    for (size_t i = 0; i < 32; i++) {
        memcpy(sig2, sig, 32);
        sig2[i] ^= 0x80;
        assert_kb(kb_keystore_verify(ks, data, sizeof(data), sig2), KB_ERR_INTEGRITY);
    }
    assert_ok(kb_keystore_sign(ks, NULL, 0, sig2));
    assert_ok(kb_keystore_verify(ks, NULL, 0, sig2));
    assert_kb(kb_keystore_sign(ks, NULL, 5, sig2), KB_ERR_NULL);
    assert_kb(kb_keystore_verify(ks, data, sizeof(data), NULL), KB_ERR_NULL);
    assert_kb(kb_keystore_sign(ks, data, (size_t)2 * 1024 * 1024, sig2), KB_ERR_TOO_LARGE);

    kb_secret_free(a);
    kb_secret_free(b);
    kb_secret_free(c);
}

/* ---- file keystore ------------------------------------------------------------------------ */

static void file_round_trip_and_determinism(void **state)
{
    (void)state;
    size_t live = kb_secret_live_count();
    char *dir, *path = file_ks_path(&dir);
    kb_keystore *ks = NULL, *ks2 = NULL;
    kb_secret *d1 = NULL, *d2 = NULL, *dk = random_dk(), *got = NULL;
    uint8_t *blob = NULL;
    size_t len;
    uint64_t w, u, o;
    struct stat st;

    assert_ok(kb_keystore_create_file(path));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_ok(kb_keystore_open_file(path, &ks));
    assert_string_equal(kb_keystore_kind(ks), "file");
    assert_int_equal(strncmp(kb_keystore_key_id(ks), "file:", 5), 0);
    assert_int_equal(strlen(kb_keystore_key_id(ks)), 5 + 32);
    check_wrap_contract(ks);
    check_derive_sign_contract(ks);

    /* Derive and unwrap agree across close/reopen (another process would read the same file). */
    assert_ok(kb_keystore_derive(ks, "audit-v1", &d1));
    assert_ok(kb_keystore_wrap(ks, dk, &blob, &len));
    kb_keystore_counters(ks, &w, &u, &o);
    assert_true(w >= 3 && u >= 1 && o >= 5);
    assert_ok(kb_keystore_open_file(path, &ks2));
    assert_string_equal(kb_keystore_key_id(ks), kb_keystore_key_id(ks2));
    kb_keystore_free(ks);
    assert_ok(kb_keystore_derive(ks2, "audit-v1", &d2));
    assert_memory_equal(kb_secret_cdata(d1), kb_secret_cdata(d2), 32);
    assert_ok(kb_keystore_unwrap(ks2, kb_keystore_key_id(ks2), blob, len, &got));
    assert_memory_equal(kb_secret_cdata(got), kb_secret_cdata(dk), 32);
    kb_keystore_counters(ks2, &w, &u, &o);
    assert_int_equal(w, 0);
    assert_int_equal(u, 1);
    assert_int_equal(o, 1);

    free(blob);
    kb_secret_free(d1);
    kb_secret_free(d2);
    kb_secret_free(dk);
    kb_secret_free(got);
    kb_keystore_free(ks2);
    assert_int_equal(kb_secret_live_count(), live); /* nothing leaked, everything wiped */
    rm_file_ks(dir, path);
}

static void file_create_refuses_overwrite_and_symlink(void **state)
{
    (void)state;
    char *dir, *path = file_ks_path(&dir);
    char link[700];
    kb_keystore *ks = NULL, *ks2 = NULL;
    char id[128];

    assert_ok(kb_keystore_create_file(path));
    assert_ok(kb_keystore_open_file(path, &ks));
    snprintf(id, sizeof(id), "%s", kb_keystore_key_id(ks));
    assert_kb(kb_keystore_create_file(path), KB_ERR_EXISTS);
    assert_ok(kb_keystore_open_file(path, &ks2));
    assert_string_equal(kb_keystore_key_id(ks2), id); /* untouched */

    /* A dangling symlink must not be followed to plant a key elsewhere. */
    snprintf(link, sizeof(link), "%s/link.key", dir);
    assert_int_equal(symlink("/tmp/kb-nonexistent-target.key", link), 0);
    assert_true(kb_keystore_create_file(link) != KB_OK);
    assert_int_equal(access("/tmp/kb-nonexistent-target.key", F_OK), -1);
    unlink(link);
    assert_kb(kb_keystore_create_file(NULL), KB_ERR_NULL);

    kb_keystore_free(ks);
    kb_keystore_free(ks2);
    rm_file_ks(dir, path);
}

static void file_open_refuses_group_or_world_access(void **state)
{
    (void)state;
    char *dir, *path = file_ks_path(&dir);
    kb_keystore *ks = (kb_keystore *)1;
    mode_t bad[] = {0644, 0640, 0604, 0660, 0601};

    assert_ok(kb_keystore_create_file(path));
    for (size_t i = 0; i < KB_ARRAY_LEN(bad); i++) {
        assert_int_equal(chmod(path, bad[i]), 0);
        assert_kb(kb_keystore_open_file(path, &ks), KB_ERR_CONFIG);
        assert_null(ks);
    }
    assert_int_equal(chmod(path, 0400), 0);
    assert_ok(kb_keystore_open_file(path, &ks));
    kb_keystore_free(ks);
    rm_file_ks(dir, path);
}

static void write_0600(const char *path, const char *text)
{
    unlink(path);
    assert_int_equal(kbtest_write_file(path, text, 0600), 0);
}

static void file_open_refuses_malformed(void **state)
{
    (void)state;
    char *dir, *path = file_ks_path(&dir);
    kb_keystore *ks = NULL;
    const char *hex64 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    char good[256], text[512];

    snprintf(good, sizeof(good), "keybridge-file-keystore-v1\n%s\n%s\n", hex64, hex64);
    write_0600(path, good);
    assert_ok(kb_keystore_open_file(path, &ks)); /* the well-formed twin parses */
    kb_keystore_free(ks);
    ks = NULL;
    good[strlen(good) - 1] = '\0';
    write_0600(path, good);
    assert_ok(kb_keystore_open_file(path, &ks)); /* final newline optional */
    kb_keystore_free(ks);
    ks = NULL;

    const char *bad[] = {
        "",
        "keybridge-file-keystore-v1\n",
        "keybridge-file-keystore-v2\n%s\n%s\n",
        "keybridge-file-keystore-v1\n%s\n",
        "keybridge-file-keystore-v1\n%s%s\n",
        "keybridge-file-keystore-v1\n%s\n%.62s\n",
        "keybridge-file-keystore-v1\n%.63sg\n%s\n",
        "keybridge-file-keystore-v1\n%s\n%s\n\n",
        "keybridge-file-keystore-v1\n%s\n%sxx",
        "keybridge-file-keystore-v1 %s\n%s\n",
    };
    for (size_t i = 0; i < KB_ARRAY_LEN(bad); i++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(text, sizeof(text), bad[i], hex64, hex64);
#pragma GCC diagnostic pop
        write_0600(path, text);
        kb_err rc = kb_keystore_open_file(path, &ks);
        if (rc != KB_ERR_INVALID && rc != KB_ERR_TOO_LARGE)
            fail_msg("case %zu: got %s", i, kb_err_str(rc));
        assert_null(ks);
    }
    /* Oversized. */
    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    write_0600(path, text);
    assert_kb(kb_keystore_open_file(path, &ks), KB_ERR_TOO_LARGE);
    unlink(path);
    assert_kb(kb_keystore_open_file(path, &ks), KB_ERR_IO);
    assert_kb(kb_keystore_open_file(NULL, &ks), KB_ERR_NULL);
    rm_file_ks(dir, path);
}

static void file_keystores_do_not_share_blobs(void **state)
{
    (void)state;
    char *dir1, *p1 = file_ks_path(&dir1), *dir2, *p2 = file_ks_path(&dir2);
    kb_keystore *a = NULL, *b = NULL;
    kb_secret *dk = random_dk(), *got = NULL, *da = NULL, *db = NULL;
    uint8_t *blob = NULL;
    size_t len;

    assert_ok(kb_keystore_create_file(p1));
    assert_ok(kb_keystore_create_file(p2));
    assert_ok(kb_keystore_open_file(p1, &a));
    assert_ok(kb_keystore_open_file(p2, &b));
    assert_string_not_equal(kb_keystore_key_id(a), kb_keystore_key_id(b));
    assert_ok(kb_keystore_wrap(a, dk, &blob, &len));
    assert_kb(kb_keystore_unwrap(b, kb_keystore_key_id(a), blob, len, &got), KB_ERR_NOT_FOUND);
    /* Even lying about the key id does not help: other key, other AAD. */
    assert_kb(kb_keystore_unwrap(b, kb_keystore_key_id(b), blob, len, &got), KB_ERR_INTEGRITY);
    assert_null(got);
    assert_ok(kb_keystore_derive(a, "checksum-v1", &da));
    assert_ok(kb_keystore_derive(b, "checksum-v1", &db));
    assert_memory_not_equal(kb_secret_cdata(da), kb_secret_cdata(db), 32);

    free(blob);
    kb_secret_free(dk);
    kb_secret_free(da);
    kb_secret_free(db);
    kb_keystore_free(a);
    kb_keystore_free(b);
    kb_keystore_free(NULL);
    assert_null(kb_keystore_key_id(NULL));
    rm_file_ks(dir1, p1);
    rm_file_ks(dir2, p2);
}

/* ---- PKCS#11 keystore (SoftHSM2) ---------------------------------------------------------- */

static void p11_init_idempotent_open_round_trip(void **state)
{
    (void)state;
    kbtest_softhsm t;
    kb_keystore *ks = NULL, *ks2 = NULL;
    kb_secret *pin, *d1 = NULL, *d2 = NULL, *dk = random_dk(), *got = NULL;
    uint8_t *blob = NULL;
    size_t len;
    char id[256], want_prefix[64];
    uint64_t w, u, o;

    assert_int_equal(kbtest_softhsm_make(&t, "kb-test"), 0);
    pin = pin_of(&t);

    /* Keys absent: open says so; init creates them; init again changes nothing. */
    assert_kb(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &ks), KB_ERR_NOT_FOUND);
    assert_null(ks);
    assert_ok(kb_keystore_init_pkcs11(MODULE, t.label, KEY, pin));
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &ks));
    snprintf(id, sizeof(id), "%s", kb_keystore_key_id(ks));
    assert_ok(kb_keystore_init_pkcs11(MODULE, t.label, KEY, pin));
    assert_string_equal(kb_keystore_kind(ks), "pkcs11");
    snprintf(want_prefix, sizeof(want_prefix), "pkcs11:%s:%s:", t.label, KEY);
    assert_int_equal(strncmp(id, want_prefix, strlen(want_prefix)), 0);
    assert_int_equal(strlen(id), strlen(want_prefix) + 32);

    check_wrap_contract(ks);
    check_derive_sign_contract(ks);
    assert_ok(kb_keystore_derive(ks, "checksum-v1", &d1));
    assert_ok(kb_keystore_wrap(ks, dk, &blob, &len));
    kb_keystore_counters(ks, &w, &u, &o);
    assert_true(w >= 3 && u >= 1 && o >= 5);
    kb_keystore_free(ks);
    ks = NULL;

    /* Reopen (the module is finalised and re-initialised in between): same key id, same
     * derived key, the old blob unwraps. A second keystore on the same token coexists. */
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &ks2));
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &ks));
    assert_string_equal(kb_keystore_key_id(ks2), id);
    assert_ok(kb_keystore_derive(ks2, "checksum-v1", &d2));
    assert_memory_equal(kb_secret_cdata(d1), kb_secret_cdata(d2), 32);
    kb_keystore_free(ks); /* closing one keystore must not log out the other */
    assert_ok(kb_keystore_unwrap(ks2, id, blob, len, &got));
    assert_memory_equal(kb_secret_cdata(got), kb_secret_cdata(dk), 32);

    free(blob);
    kb_secret_free(d1);
    kb_secret_free(d2);
    kb_secret_free(dk);
    kb_secret_free(got);
    kb_secret_free(pin);
    kb_keystore_free(ks2);
    kbtest_softhsm_remove(&t);
}

static void p11_wrong_pin_is_auth(void **state)
{
    (void)state;
    kbtest_softhsm t;
    kb_keystore *ks = NULL, *bad_ks = NULL;
    kb_secret *pin, *wrong = NULL;

    assert_int_equal(kbtest_softhsm_make(&t, "kb-pin"), 0);
    pin = pin_of(&t);
    assert_ok(kb_secret_from("not-the-pin", 11, &wrong));
    assert_kb(kb_keystore_init_pkcs11(MODULE, t.label, KEY, wrong), KB_ERR_AUTH);
    assert_ok(kb_keystore_init_pkcs11(MODULE, t.label, KEY, pin));
    assert_kb(kb_keystore_open_pkcs11(MODULE, t.label, KEY, wrong, &bad_ks), KB_ERR_AUTH);
    assert_null(bad_ks);
    /* While another keystore holds the token's login, the module would accept any PIN
     * (CKR_USER_ALREADY_LOGGED_IN): ours still refuses a wrong one. */
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &ks));
    assert_kb(kb_keystore_open_pkcs11(MODULE, t.label, KEY, wrong, &bad_ks), KB_ERR_AUTH);
    assert_null(bad_ks);
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &bad_ks));
    kb_keystore_free(bad_ks);
    kb_keystore_free(ks);

    kb_secret *empty = NULL;
    assert_ok(kb_secret_new(0, &empty));
    assert_kb(kb_keystore_open_pkcs11(MODULE, t.label, KEY, empty, &bad_ks), KB_ERR_INVALID);
    kb_secret_free(empty);
    kb_secret_free(wrong);
    kb_secret_free(pin);
    kbtest_softhsm_remove(&t);
}

static void p11_missing_token_module_or_key(void **state)
{
    (void)state;
    kbtest_softhsm t;
    kb_keystore *ks = NULL;
    kb_secret *pin;
    char long_label[40];

    assert_int_equal(kbtest_softhsm_make(&t, "kb-present"), 0);
    pin = pin_of(&t);
    assert_kb(kb_keystore_init_pkcs11(MODULE, "kb-absent", KEY, pin), KB_ERR_NOT_FOUND);
    assert_kb(kb_keystore_open_pkcs11(MODULE, "kb-absent", KEY, pin, &ks), KB_ERR_NOT_FOUND);
    /* A label that is a prefix of the real one is another label. */
    assert_kb(kb_keystore_open_pkcs11(MODULE, "kb-pres", KEY, pin, &ks), KB_ERR_NOT_FOUND);
    assert_kb(kb_keystore_open_pkcs11("/nonexistent/libnope.so", t.label, KEY, pin, &ks),
              KB_ERR_UNAVAILABLE);
    assert_kb(
        kb_keystore_open_pkcs11("/usr/lib/x86_64-linux-gnu/libc.so.6", t.label, KEY, pin, &ks),
        KB_ERR_UNAVAILABLE);
    assert_ok(kb_keystore_init_pkcs11(MODULE, t.label, KEY, pin));
    assert_kb(kb_keystore_open_pkcs11(MODULE, t.label, "other", pin, &ks), KB_ERR_NOT_FOUND);
    assert_null(ks);
    memset(long_label, 'x', sizeof(long_label) - 1);
    long_label[sizeof(long_label) - 1] = '\0';
    assert_kb(kb_keystore_open_pkcs11(MODULE, long_label, KEY, pin, &ks), KB_ERR_TOO_LARGE);
    assert_kb(kb_keystore_open_pkcs11(MODULE, "", KEY, pin, &ks), KB_ERR_INVALID);
    assert_kb(kb_keystore_open_pkcs11(NULL, t.label, KEY, pin, &ks), KB_ERR_NULL);
    assert_kb(kb_keystore_open_pkcs11(MODULE, t.label, KEY, NULL, &ks), KB_ERR_NULL);
    assert_kb(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, NULL), KB_ERR_NULL);
    kb_secret_free(pin);
    kbtest_softhsm_remove(&t);

    /* No token at all in the configured directory. */
    assert_int_equal(kbtest_softhsm_conf(&t, NULL), 0);
    assert_ok(kb_secret_from("1234", 4, &pin));
    assert_kb(kb_keystore_open_pkcs11(MODULE, "kb-present", KEY, pin, &ks), KB_ERR_NOT_FOUND);
    kb_secret_free(pin);
    kbtest_softhsm_remove(&t);
}

static void p11_and_file_blobs_are_not_interchangeable(void **state)
{
    (void)state;
    kbtest_softhsm t;
    char *dir, *path = file_ks_path(&dir);
    kb_keystore *p = NULL, *f = NULL;
    kb_secret *pin, *dk = random_dk(), *got = NULL;
    uint8_t *blob = NULL;
    size_t len;

    assert_int_equal(kbtest_softhsm_make(&t, "kb-mix"), 0);
    pin = pin_of(&t);
    assert_ok(kb_keystore_init_pkcs11(MODULE, t.label, KEY, pin));
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &p));
    assert_ok(kb_keystore_create_file(path));
    assert_ok(kb_keystore_open_file(path, &f));
    assert_ok(kb_keystore_wrap(p, dk, &blob, &len));
    assert_kb(kb_keystore_unwrap(f, kb_keystore_key_id(p), blob, len, &got), KB_ERR_NOT_FOUND);
    assert_kb(kb_keystore_unwrap(f, kb_keystore_key_id(f), blob, len, &got), KB_ERR_INTEGRITY);
    free(blob);
    assert_ok(kb_keystore_wrap(f, dk, &blob, &len));
    assert_kb(kb_keystore_unwrap(p, kb_keystore_key_id(f), blob, len, &got), KB_ERR_NOT_FOUND);
    assert_kb(kb_keystore_unwrap(p, kb_keystore_key_id(p), blob, len, &got), KB_ERR_INTEGRITY);
    assert_null(got);

    free(blob);
    kb_secret_free(dk);
    kb_secret_free(pin);
    kb_keystore_free(p);
    kb_keystore_free(f);
    kbtest_softhsm_remove(&t);
    rm_file_ks(dir, path);
}

#define THREADS 6
#define ROUNDS 40

struct thr {
    kb_keystore *ks;
    const uint8_t *ref_derived;
    int failures;
};

static void *worker(void *arg)
{
    struct thr *th = arg;
    for (int i = 0; i < ROUNDS; i++) {
        kb_secret *dk = NULL, *got = NULL, *d = NULL;
        uint8_t *blob = NULL;
        size_t len = 0;
        uint8_t sig[32];
        if (kb_secret_new(32, &dk) != KB_OK || RAND_bytes(kb_secret_data(dk), 32) != 1 ||
            kb_keystore_wrap(th->ks, dk, &blob, &len) != KB_OK ||
            kb_keystore_unwrap(th->ks, kb_keystore_key_id(th->ks), blob, len, &got) != KB_OK ||
            memcmp(kb_secret_cdata(got), kb_secret_cdata(dk), 32) != 0 ||
            kb_keystore_derive(th->ks, "rowmac-v1", &d) != KB_OK ||
            memcmp(kb_secret_cdata(d), th->ref_derived, 32) != 0 ||
            kb_keystore_sign(th->ks, blob, len, sig) != KB_OK ||
            kb_keystore_verify(th->ks, blob, len, sig) != KB_OK)
            th->failures++;
        free(blob);
        kb_secret_free(dk);
        kb_secret_free(got);
        kb_secret_free(d);
    }
    return NULL;
}

static void p11_concurrent_calls(void **state)
{
    (void)state;
    kbtest_softhsm t;
    kb_keystore *ks = NULL;
    kb_secret *pin, *ref = NULL;
    pthread_t tid[THREADS];
    struct thr th[THREADS];
    uint64_t w, u, o;

    assert_int_equal(kbtest_softhsm_make(&t, "kb-threads"), 0);
    pin = pin_of(&t);
    assert_ok(kb_keystore_init_pkcs11(MODULE, t.label, KEY, pin));
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &ks));
    assert_ok(kb_keystore_derive(ks, "rowmac-v1", &ref));
    for (int i = 0; i < THREADS; i++) {
        th[i] = (struct thr){ks, kb_secret_cdata(ref), 0};
        assert_int_equal(pthread_create(&tid[i], NULL, worker, &th[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(tid[i], NULL), 0);
        assert_int_equal(th[i].failures, 0);
    }
    kb_keystore_counters(ks, &w, &u, &o);
    assert_int_equal(w, THREADS * ROUNDS);
    assert_int_equal(u, THREADS * ROUNDS);
    assert_int_equal(o, 1 + 3 * THREADS * ROUNDS);
    kb_secret_free(ref);
    kb_secret_free(pin);
    kb_keystore_free(ks);
    kbtest_softhsm_remove(&t);
}

/* KB_KEEP_TOKEN_DIR mode: init keys in the token tests/lib/softhsm.sh made there, prove they
 * work, print the key id, keep everything for pkcs11-tool. */
static void keep_token(void **state)
{
    (void)state;
    const char *dir = getenv("KB_KEEP_TOKEN_DIR");
    const char *label = getenv("KB_KEEP_TOKEN_LABEL");
    const char *key = getenv("KB_KEEP_KEY_LABEL");
    char pin_file[600];
    kb_secret *pin = NULL;
    kb_keystore *ks = NULL;

    assert_non_null(label);
    if (key == NULL)
        key = KEY;
    snprintf(pin_file, sizeof(pin_file), "%s/pin", dir);
    assert_ok(kb_file_read_secret(pin_file, 256, &pin));
    assert_ok(kb_keystore_init_pkcs11(MODULE, label, key, pin));
    assert_ok(kb_keystore_open_pkcs11(MODULE, label, key, pin, &ks));
    check_wrap_contract(ks);
    printf("key_id=%s\n", kb_keystore_key_id(ks));
    kb_keystore_free(ks);
    kb_secret_free(pin);
}

/* The state counter contract (kb_keystore_counter_*): absent at first, only ever goes up,
 * survives a reopen (ks2 is a second keystore on the same keys, as another process would be). */
static void check_counter_contract(kb_keystore *ks, kb_keystore *ks2)
{
    uint64_t v = 99;
    assert_kb(kb_keystore_counter_read(ks, &v), KB_ERR_NOT_FOUND);
    assert_int_equal(v, 0);
    assert_ok(kb_keystore_counter_advance(ks, 5));
    assert_ok(kb_keystore_counter_read(ks, &v));
    assert_int_equal(v, 5);
    assert_ok(kb_keystore_counter_advance(ks, 3)); /* never back */
    assert_ok(kb_keystore_counter_read(ks, &v));
    assert_int_equal(v, 5);
    assert_ok(kb_keystore_counter_advance(ks, 5));
    assert_ok(kb_keystore_counter_advance(ks2, (uint64_t)1 << 40));
    assert_ok(kb_keystore_counter_read(ks, &v));
    assert_int_equal(v, (uint64_t)1 << 40);
    assert_ok(kb_keystore_counter_advance(ks, UINT64_MAX));
    assert_ok(kb_keystore_counter_read(ks2, &v));
    assert_true(v == UINT64_MAX);
    assert_kb(kb_keystore_counter_read(NULL, &v), KB_ERR_NULL);
    assert_kb(kb_keystore_counter_read(ks, NULL), KB_ERR_NULL);
    assert_kb(kb_keystore_counter_advance(NULL, 1), KB_ERR_NULL);
}

static void file_state_counter(void **state)
{
    (void)state;
    char *dir, *path = file_ks_path(&dir);
    char cpath[700];
    kb_keystore *ks = NULL, *ks2 = NULL;
    struct stat st;
    uint64_t v;
    FILE *fp;

    assert_ok(kb_keystore_create_file(path));
    assert_ok(kb_keystore_open_file(path, &ks));
    assert_ok(kb_keystore_open_file(path, &ks2));
    check_counter_contract(ks, ks2);
    snprintf(cpath, sizeof(cpath), "%s.counter", path);
    assert_int_equal(stat(cpath, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* Malformed or group-readable counter files are refused, not read as 0. */
    static const char *const bad[] = {
        "keybridge-counter-v1\n",     "keybridge-counter-v1\n12x\n",
        "keybridge-counter-v1\n-1\n", "keybridge-counter-v1\n18446744073709551616\n",
        "keybridge-counter-v2\n1\n",  ""};
    for (size_t i = 0; i < KB_ARRAY_LEN(bad); i++) {
        fp = fopen(cpath, "w");
        assert_non_null(fp);
        fputs(bad[i], fp);
        fclose(fp);
        chmod(cpath, 0600);
        assert_kb(kb_keystore_counter_read(ks, &v), KB_ERR_INTEGRITY);
        assert_int_not_equal(kb_keystore_counter_advance(ks, 1), KB_OK);
    }
    fp = fopen(cpath, "w");
    assert_non_null(fp);
    fputs("keybridge-counter-v1\n7\n", fp);
    fclose(fp);
    chmod(cpath, 0644);
    assert_kb(kb_keystore_counter_read(ks, &v), KB_ERR_CONFIG);
    chmod(cpath, 0600);
    assert_ok(kb_keystore_counter_read(ks, &v));
    assert_int_equal(v, 7);
    kb_keystore_free(ks);
    kb_keystore_free(ks2);
    unlink(cpath);
    rm_file_ks(dir, path);
}

static void p11_state_counter(void **state)
{
    (void)state;
    kbtest_softhsm t;
    kb_keystore *ks = NULL, *ks2 = NULL, *other = NULL;
    kb_secret *pin;
    uint64_t v;

    assert_int_equal(kbtest_softhsm_make(&t, "kb-ctr"), 0);
    pin = pin_of(&t);
    assert_ok(kb_keystore_init_pkcs11(MODULE, t.label, KEY, pin));
    assert_ok(kb_keystore_init_pkcs11(MODULE, t.label, "other-key", pin));
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &ks));
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &ks2));
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, "other-key", pin, &other));
    check_counter_contract(ks, ks2);
    /* Each key label has its own counter. */
    assert_kb(kb_keystore_counter_read(other, &v), KB_ERR_NOT_FOUND);
    kb_keystore_free(ks2);
    kb_keystore_free(ks);
    /* Kept in the token: a new session sees it. */
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &ks));
    assert_ok(kb_keystore_counter_read(ks, &v));
    assert_true(v == UINT64_MAX);
    kb_keystore_free(ks);
    kb_keystore_free(other);
    kb_secret_free(pin);
    kbtest_softhsm_remove(&t);
}

/* SoftHSM2 2.6.1 (Debian 12) rewrites token.object on every C_Login: under the file's lock it
 * truncates it, unlocks, and only then writes the 320 bytes (stdio flush at fclose; fixed
 * upstream by SoftHSMv2 PR 578, not in 2.6.1). Another process's C_Initialize that reads the
 * file in that gap lists no such token (keybridge-ca serve replicas started together exited with
 * NOT_FOUND). Here the gap is held open: token.object is empty when the open starts and is
 * written back once SoftHSM2 has read it (inotify), as the other process's write would land. */
struct rewrite {
    char path[1024];
    char buf[4096];
    ssize_t len;
    int ino;
};

static void *rewrite_after_read(void *arg)
{
    struct rewrite *r = arg;
    struct pollfd pfd = {.fd = r->ino, .events = POLLIN};
    char ev[4096];
    ssize_t got = 0;
    int fd;

    /* the first read of the empty file by C_Initialize (5 s: never hang the test); whatever the
     * inotify read says, the file is written back */
    if (poll(&pfd, 1, 5000) == 1)
        got = read(r->ino, ev, sizeof(ev));
    (void)got;
    fd = open(r->path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (pwrite(fd, r->buf, (size_t)r->len, 0) != r->len)
            r->len = -1;
        close(fd);
    }
    return NULL;
}

static void token_object_path(const kbtest_softhsm *t, char *out, size_t len)
{
    char tokens[640];
    DIR *d;
    struct dirent *e;

    out[0] = '\0';
    snprintf(tokens, sizeof(tokens), "%s/tokens", t->dir);
    d = opendir(tokens);
    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            snprintf(out, len, "%s/%s/token.object", tokens, e->d_name);
    closedir(d);
    assert_true(out[0] != '\0');
}

static void p11_open_outlasts_a_token_file_being_rewritten(void **state)
{
    (void)state;
    kbtest_softhsm t;
    kb_keystore *ks = NULL;
    kb_secret *pin;
    struct rewrite r;
    pthread_t tid;
    int fd;

    assert_int_equal(kbtest_softhsm_make(&t, "kb-rewrite"), 0);
    pin = pin_of(&t);
    assert_ok(kb_keystore_init_pkcs11(MODULE, t.label, KEY, pin));
    memset(&r, 0, sizeof(r));
    token_object_path(&t, r.path, sizeof(r.path));
    fd = open(r.path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    r.len = read(fd, r.buf, sizeof(r.buf));
    assert_true(r.len > 0 && r.len < (ssize_t)sizeof(r.buf));
    assert_int_equal(ftruncate(fd, 0), 0); /* what the other process's C_Login leaves */
    close(fd);
    r.ino = inotify_init1(IN_CLOEXEC);
    assert_true(r.ino >= 0);
    assert_true(inotify_add_watch(r.ino, r.path, IN_CLOSE_NOWRITE) >= 0);
    assert_int_equal(pthread_create(&tid, NULL, rewrite_after_read, &r), 0);
    assert_ok(kb_keystore_open_pkcs11(MODULE, t.label, KEY, pin, &ks));
    assert_int_equal(pthread_join(tid, NULL), 0);
    assert_true(r.len > 0);
    close(r.ino);
    kb_keystore_free(ks);
    /* a token that really is absent is still NOT_FOUND (after the retries) */
    assert_kb(kb_keystore_open_pkcs11(MODULE, "kb-absent", KEY, pin, &ks), KB_ERR_NOT_FOUND);
    assert_null(ks);
    kb_secret_free(pin);
    kbtest_softhsm_remove(&t);
}

int main(void)
{
    /* Expected failures would log; the asserts check them. KB_TEST_LOG=1 shows the logs. */
    if (getenv("KB_TEST_LOG") == NULL)
        kb_log_set_level(KB_LOG_OFF);
    if (getenv("KB_KEEP_TOKEN_DIR") != NULL) {
        const struct CMUnitTest keep[] = {cmocka_unit_test(keep_token)};
        return cmocka_run_group_tests(keep, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(file_round_trip_and_determinism),
        cmocka_unit_test(file_create_refuses_overwrite_and_symlink),
        cmocka_unit_test(file_open_refuses_group_or_world_access),
        cmocka_unit_test(file_open_refuses_malformed),
        cmocka_unit_test(file_keystores_do_not_share_blobs),
        cmocka_unit_test(p11_init_idempotent_open_round_trip),
        cmocka_unit_test(p11_wrong_pin_is_auth),
        cmocka_unit_test(p11_missing_token_module_or_key),
        cmocka_unit_test(p11_and_file_blobs_are_not_interchangeable),
        cmocka_unit_test(p11_concurrent_calls),
        cmocka_unit_test(p11_open_outlasts_a_token_file_being_rewritten),
        cmocka_unit_test(file_state_counter),
        cmocka_unit_test(p11_state_counter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
