/* test_envelope.c - AES-256-GCM known answers, checksum known answers, envelope round trips and
 * tamper detection on the file keystore and on SoftHSM2. */
#include <string.h>

#include "kbtest.h"
#include "kbtest_softhsm.h"
#include "lib/buf.h"
#include "lib/envelope.h"
#include "lib/err.h"
#include "lib/fileio.h"
#include "lib/keystore.h"
#include "lib/log.h"
#include "lib/secbuf.h"

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = strlen(h) / 2;
    assert_true(n <= cap);
    assert_ok(kb_unhex(h, 2 * n, out, n));
    return n;
}

/* The GCM specification's (McGrew & Viega, "The Galois/Counter Mode of Operation", appendix B)
 * AES-256 test cases 13, 14 and 16, as used by NIST's GCM validation. */
static void gcm_known_answers(void **state)
{
    (void)state;
    struct {
        const char *k, *iv, *p, *a, *c, *t;
    } v[] = {
        {"0000000000000000000000000000000000000000000000000000000000000000",
         "000000000000000000000000", "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
        {"0000000000000000000000000000000000000000000000000000000000000000",
         "000000000000000000000000", "00000000000000000000000000000000", "",
         "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
        {"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
         "cafebabefacedbaddecaf888",
         "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e24"
         "49a6b525b16aedf5aa0de657ba637b39",
         "feedfacedeadbeeffeedfacedeadbeefabaddad2",
         "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b10"
         "56828838c5f61e6393ba7a0abcc9f662",
         "76fc6ece0f4e1768cddf8853bb2d551b"},
    };
    for (size_t i = 0; i < KB_ARRAY_LEN(v); i++) {
        uint8_t k[32], iv[12], p[64], a[32], c[64], t[16], out[64], tag[16];
        size_t kl = unhex(v[i].k, k, sizeof(k)), ivl = unhex(v[i].iv, iv, sizeof(iv));
        size_t pl = unhex(v[i].p, p, sizeof(p)), al = unhex(v[i].a, a, sizeof(a));
        size_t cl = unhex(v[i].c, c, sizeof(c));
        unhex(v[i].t, t, sizeof(t));
        assert_int_equal(kl, 32);
        assert_int_equal(cl, pl);

        assert_ok(kb_aes256gcm_seal(k, iv, ivl, al ? a : NULL, al, pl ? p : NULL, pl,
                                    pl ? out : NULL, tag));
        assert_memory_equal(out, c, cl);
        assert_memory_equal(tag, t, 16);
        memset(out, 0xee, sizeof(out));
        assert_ok(kb_aes256gcm_open(k, iv, ivl, al ? a : NULL, al, cl ? c : NULL, cl, t,
                                    cl ? out : NULL));
        assert_memory_equal(out, p, pl);

        /* A wrong tag, ciphertext or AAD yields an error and no plaintext. */
        t[15] ^= 1;
        memset(out, 0xee, sizeof(out));
        assert_kb(
            kb_aes256gcm_open(k, iv, ivl, al ? a : NULL, al, cl ? c : NULL, cl, t, cl ? out : NULL),
            KB_ERR_INTEGRITY);
        for (size_t j = 0; j < pl; j++)
            assert_int_equal(out[j], 0);
        t[15] ^= 1;
        if (cl) {
            c[0] ^= 0x80;
            assert_kb(kb_aes256gcm_open(k, iv, ivl, al ? a : NULL, al, c, cl, t, out),
                      KB_ERR_INTEGRITY);
            c[0] ^= 0x80;
        }
        uint8_t extra = 0;
        assert_kb(kb_aes256gcm_open(k, iv, ivl, &extra, 1, cl ? c : NULL, cl, t, cl ? out : NULL),
                  KB_ERR_INTEGRITY);
    }
}

/* Expected values computed independently with Python's hmac module:
 *   hmac.new(bytes(range(32)), b"keybridge-checksum-v1" + struct.pack(">QQQ", id, ver,
 *            len(c)) + c, hashlib.sha256).hexdigest() */
static void checksum_known_answers(void **state)
{
    (void)state;
    kb_secret *key = NULL;
    uint8_t k[32], out[32], want[32];
    size_t live = kb_secret_live_count();

    for (int i = 0; i < 32; i++)
        k[i] = (uint8_t)i;
    assert_ok(kb_secret_from(k, 32, &key));

    assert_ok(kb_checksum(key, 42, 7, (const uint8_t *)"hello", 5, out));
    unhex("679b6059d83e2b95b93c3bd371ca94de6682e3fade093952cb6126d38e32f85a", want, 32);
    assert_memory_equal(out, want, 32);

    /* Same content, another secret: another checksum. */
    assert_ok(kb_checksum(key, 43, 7, (const uint8_t *)"hello", 5, out));
    unhex("b26aee85bc706b89a3240ba682798c497881625d39faadbe821dd8aa5ac182af", want, 32);
    assert_memory_equal(out, want, 32);

    assert_ok(kb_checksum(key, UINT64_MAX, 1, NULL, 0, out));
    unhex("2d4de8bc589269c0d0f0d58eac6ab5dc871d00ad702a690867ab27553f1ac19a", want, 32);
    assert_memory_equal(out, want, 32);

    /* Negative: wrong key size, NULL content with a length. */
    kb_secret *short_key = NULL;
    assert_ok(kb_secret_new(16, &short_key));
    assert_kb(kb_checksum(short_key, 1, 1, (const uint8_t *)"x", 1, out), KB_ERR_INVALID);
    assert_kb(kb_checksum(key, 1, 1, NULL, 1, out), KB_ERR_NULL);
    assert_kb(kb_checksum(NULL, 1, 1, (const uint8_t *)"x", 1, out), KB_ERR_NULL);
    kb_secret_free(short_key);
    kb_secret_free(key);
    assert_int_equal(kb_secret_live_count(), live);
}

/* Everything the envelope must guarantee, on any keystore. */
static void check_envelope_contract(kb_keystore *ks)
{
    const char *text = "db-password: correct horse battery staple";
    size_t n = strlen(text);
    kb_envelope e = {0}, e2 = {0}, bad;
    kb_secret *plain = NULL, *ck = NULL, *dk = NULL;
    uint8_t c1[32], c2[32], c3[32];
    size_t live = kb_secret_live_count();

    assert_ok(kb_envelope_seal(ks, 11, 3, (const uint8_t *)text, n, &e));
    assert_int_equal(e.sealed_len, n + KB_ENVELOPE_OVERHEAD);
    assert_string_equal(e.key_id, kb_keystore_key_id(ks));
    assert_int_equal(e.wrapped_len, KB_KEYSTORE_BLOB_LEN);
    assert_null(memmem(e.sealed, e.sealed_len, "horse", 5)); /* really encrypted */
    assert_ok(kb_envelope_open(ks, 11, 3, &e, &plain));
    assert_int_equal(kb_secret_len(plain), n);
    assert_memory_equal(kb_secret_cdata(plain), text, n);
    kb_secret_free(plain);
    plain = NULL;

    /* Equal content in another secret: a different data key and IV, different ciphertext. */
    assert_ok(kb_envelope_seal(ks, 12, 3, (const uint8_t *)text, n, &e2));
    assert_memory_not_equal(e.sealed, e2.sealed, e.sealed_len);
    assert_memory_not_equal(e.wrapped, e2.wrapped, e.wrapped_len);

    /* Moving ciphertext to another secret id or version: refused. */
    assert_kb(kb_envelope_open(ks, 12, 3, &e, &plain), KB_ERR_INTEGRITY);
    assert_kb(kb_envelope_open(ks, 11, 4, &e, &plain), KB_ERR_INTEGRITY);
    assert_kb(kb_envelope_open(ks, 11, 2, &e, &plain), KB_ERR_INTEGRITY);
    /* Swapping data keys between two envelopes: refused. */
    bad = e;
    bad.wrapped = e2.wrapped;
    assert_kb(kb_envelope_open(ks, 11, 3, &bad, &plain), KB_ERR_INTEGRITY);
    assert_null(plain);

    /* Every single-byte change of the sealed content or of the wrapped key: refused. */
    bad = e;
    bad.sealed = malloc(e.sealed_len);
    for (size_t i = 0; i < e.sealed_len; i++) {
        memcpy(bad.sealed, e.sealed, e.sealed_len);
        bad.sealed[i] ^= 0x01;
        assert_kb(kb_envelope_open(ks, 11, 3, &bad, &plain), KB_ERR_INTEGRITY);
        assert_null(plain);
    }
    /* Truncated at every length, and extended. */
    memcpy(bad.sealed, e.sealed, e.sealed_len);
    for (size_t l = 0; l < e.sealed_len; l++) {
        bad.sealed_len = l;
        assert_kb(kb_envelope_open(ks, 11, 3, &bad, &plain), KB_ERR_INTEGRITY);
    }
    free(bad.sealed);
    bad = e;
    bad.wrapped = malloc(e.wrapped_len);
    for (size_t i = 0; i < e.wrapped_len; i++) {
        memcpy(bad.wrapped, e.wrapped, e.wrapped_len);
        bad.wrapped[i] ^= 0x40;
        assert_kb(kb_envelope_open(ks, 11, 3, &bad, &plain), KB_ERR_INTEGRITY);
        assert_null(plain);
    }
    memcpy(bad.wrapped, e.wrapped, e.wrapped_len);
    bad.wrapped_len = e.wrapped_len - 1;
    assert_kb(kb_envelope_open(ks, 11, 3, &bad, &plain), KB_ERR_INTEGRITY);
    free(bad.wrapped);

    /* Wrapped under another master key (id), or with no id at all. */
    bad = e;
    bad.key_id = "pkcs11:other:master:00";
    assert_kb(kb_envelope_open(ks, 11, 3, &bad, &plain), KB_ERR_NOT_FOUND);
    bad.key_id = NULL;
    assert_kb(kb_envelope_open(ks, 11, 3, &bad, &plain), KB_ERR_INTEGRITY);
    bad = e;
    bad.sealed = NULL;
    assert_kb(kb_envelope_open(ks, 11, 3, &bad, &plain), KB_ERR_INTEGRITY);
    assert_null(plain);

    /* open_with_key: the data-key cache path. */
    assert_ok(kb_keystore_unwrap(ks, e.key_id, e.wrapped, e.wrapped_len, &dk));
    assert_ok(kb_envelope_open_with_key(dk, 11, 3, e.sealed, e.sealed_len, &plain));
    assert_memory_equal(kb_secret_cdata(plain), text, n);
    kb_secret_free(plain);
    plain = NULL;
    assert_kb(kb_envelope_open_with_key(dk, 12, 3, e.sealed, e.sealed_len, &plain),
              KB_ERR_INTEGRITY);
    assert_kb(kb_envelope_open_with_key(dk, 12, 3, e2.sealed, e2.sealed_len, &plain),
              KB_ERR_INTEGRITY); /* e2's own id, but another data key */
    kb_secret_data(dk)[0] ^= 1;
    assert_kb(kb_envelope_open_with_key(dk, 11, 3, e.sealed, e.sealed_len, &plain),
              KB_ERR_INTEGRITY);
    assert_ok(kb_secret_truncate(dk, 16));
    assert_kb(kb_envelope_open_with_key(dk, 11, 3, e.sealed, e.sealed_len, &plain), KB_ERR_INVALID);
    assert_kb(kb_envelope_open_with_key(NULL, 11, 3, e.sealed, e.sealed_len, &plain), KB_ERR_NULL);
    assert_null(plain);
    kb_secret_free(dk);

    /* Checksums with the token-derived key: deterministic, bound to id and version. */
    assert_ok(kb_keystore_derive(ks, KB_CHECKSUM_LABEL, &ck));
    assert_ok(kb_checksum(ck, 11, 3, (const uint8_t *)text, n, c1));
    assert_ok(kb_checksum(ck, 12, 3, (const uint8_t *)text, n, c2));
    assert_ok(kb_checksum(ck, 11, 4, (const uint8_t *)text, n, c3));
    assert_memory_not_equal(c1, c2, 32);
    assert_memory_not_equal(c1, c3, 32);
    assert_ok(kb_checksum(ck, 11, 3, (const uint8_t *)text, n, c2));
    assert_memory_equal(c1, c2, 32);
    assert_ok(kb_checksum(ck, 11, 3, (const uint8_t *)text, n - 1, c2));
    assert_memory_not_equal(c1, c2, 32);
    kb_secret_free(ck);

    /* Empty content round-trips; absurd sizes and NULLs are refused before any work. */
    kb_envelope empty = {0};
    assert_ok(kb_envelope_seal(ks, 1, 1, NULL, 0, &empty));
    assert_int_equal(empty.sealed_len, KB_ENVELOPE_OVERHEAD);
    assert_ok(kb_envelope_open(ks, 1, 1, &empty, &plain));
    assert_int_equal(kb_secret_len(plain), 0);
    kb_secret_free(plain);
    plain = NULL;
    kb_envelope_clear(&empty);
    kb_envelope untouched = {0};
    assert_kb(
        kb_envelope_seal(ks, 1, 1, (const uint8_t *)text, KB_ENVELOPE_PLAIN_MAX + 1, &untouched),
        KB_ERR_TOO_LARGE);
    assert_null(untouched.sealed);
    assert_kb(kb_envelope_seal(ks, 1, 1, NULL, 1, &untouched), KB_ERR_NULL);
    assert_kb(kb_envelope_seal(NULL, 1, 1, (const uint8_t *)text, n, &untouched), KB_ERR_NULL);
    assert_kb(kb_envelope_open(ks, 11, 3, NULL, &plain), KB_ERR_NULL);

    kb_envelope_clear(&e);
    kb_envelope_clear(&e2);
    assert_null(e.sealed);
    kb_envelope_clear(NULL);
    assert_int_equal(kb_secret_live_count(), live);
}

static void envelope_on_file_keystore(void **state)
{
    (void)state;
    char *dir = kbtest_tmpdir(), path[600];
    kb_keystore *ks = NULL;

    assert_non_null(dir);
    snprintf(path, sizeof(path), "%s/master.key", dir);
    assert_ok(kb_keystore_create_file(path));
    assert_ok(kb_keystore_open_file(path, &ks));
    check_envelope_contract(ks);
    kb_keystore_free(ks);
    unlink(path);
    rmdir(dir);
    free(dir);
}

static void envelope_on_softhsm(void **state)
{
    (void)state;
    kbtest_softhsm t;
    kb_keystore *ks = NULL;
    kb_secret *pin = NULL;

    assert_int_equal(kbtest_softhsm_make(&t, "kb-envelope"), 0);
    assert_ok(kb_file_read_secret(t.pin_file, 256, &pin));
    assert_ok(kb_keystore_init_pkcs11(KBTEST_SOFTHSM_MODULE, t.label, "master", pin));
    assert_ok(kb_keystore_open_pkcs11(KBTEST_SOFTHSM_MODULE, t.label, "master", pin, &ks));
    check_envelope_contract(ks);
    kb_keystore_free(ks);
    kb_secret_free(pin);
    kbtest_softhsm_remove(&t);
}

/* A larger content (1 MiB) survives the round trip byte for byte. */
static void envelope_large_content(void **state)
{
    (void)state;
    char *dir = kbtest_tmpdir(), path[600];
    kb_keystore *ks = NULL;
    kb_envelope e = {0};
    kb_secret *plain = NULL;
    size_t n = (size_t)1024 * 1024;
    uint8_t *big = malloc(n);

    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 31 + 7);
    snprintf(path, sizeof(path), "%s/master.key", dir);
    assert_ok(kb_keystore_create_file(path));
    assert_ok(kb_keystore_open_file(path, &ks));
    assert_ok(kb_envelope_seal(ks, 5, 9, big, n, &e));
    assert_ok(kb_envelope_open(ks, 5, 9, &e, &plain));
    assert_int_equal(kb_secret_len(plain), n);
    assert_memory_equal(kb_secret_cdata(plain), big, n);
    e.sealed[n / 2] ^= 4;
    kb_secret_free(plain);
    plain = NULL;
    assert_kb(kb_envelope_open(ks, 5, 9, &e, &plain), KB_ERR_INTEGRITY);
    kb_envelope_clear(&e);
    kb_keystore_free(ks);
    free(big);
    unlink(path);
    rmdir(dir);
    free(dir);
}

int main(void)
{
    if (getenv("KB_TEST_LOG") == NULL)
        kb_log_set_level(KB_LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gcm_known_answers),         cmocka_unit_test(checksum_known_answers),
        cmocka_unit_test(envelope_on_file_keystore), cmocka_unit_test(envelope_on_softhsm),
        cmocka_unit_test(envelope_large_content),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
