/* test_base64.c - the one strict base64 (RFC 4648 4 and 5, canonical encodings only). */
#include <string.h>

#include "kbtest.h"
#include "lib/base64.h"
#include "lib/err.h"
#include "lib/json.h"

static const struct {
    const char *raw, *std, *url;
} vec[] = {{"", "", ""}, /* RFC 4648 10 */
           {"f", "Zg==", "Zg"},
           {"fo", "Zm8=", "Zm8"},
           {"foo", "Zm9v", "Zm9v"},
           {"foob", "Zm9vYg==", "Zm9vYg"},
           {"fooba", "Zm9vYmE=", "Zm9vYmE"},
           {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
           {"\xfb\xff\xbf", "+/+/", "-_-_"}};

static void vectors_both_ways(void **state)
{
    (void)state;
    for (size_t i = 0; i < KB_ARRAY_LEN(vec); i++) {
        size_t n = strlen(vec[i].raw), got = 0;
        uint8_t out[16];
        for (int m = 0; m < 2; m++) {
            kb_b64_mode mode = m ? KB_B64_URL : KB_B64_STD;
            const char *enc = m ? vec[i].url : vec[i].std;
            char *e = kb_b64_encode_str((const uint8_t *)vec[i].raw, n, mode);
            kb_dbuf b;
            assert_string_equal(e, enc);
            kb_json_free_str(e);
            kb_dbuf_init(&b, 64);
            assert_ok(kb_b64_encode((const uint8_t *)vec[i].raw, n, mode, &b));
            assert_string_equal(kb_dbuf_str(&b), enc);
            kb_dbuf_free(&b);
            assert_int_equal(kb_b64_enc_len(n, mode), strlen(enc));
            assert_ok(kb_b64_decode(enc, strlen(enc), mode, out, sizeof(out), &got));
            assert_int_equal(got, n);
            assert_memory_equal(out, vec[i].raw, n);
            assert_true(kb_b64_dec_max(strlen(enc)) >= n);
        }
    }
}

static void round_trips_every_length(void **state)
{
    uint8_t raw[70], back[70];
    (void)state;
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof(raw); n++) {
        for (int m = 0; m < 2; m++) {
            kb_b64_mode mode = m ? KB_B64_URL : KB_B64_STD;
            char *e = kb_b64_encode_str(raw, n, mode);
            size_t got = 0;
            assert_non_null(e);
            assert_ok(kb_b64_decode(e, strlen(e), mode, back, sizeof(back), &got));
            assert_int_equal(got, n);
            assert_memory_equal(back, raw, n);
            /* one byte short of room: refused before anything is written */
            if (n > 0)
                assert_kb(kb_b64_decode(e, strlen(e), mode, back, n - 1, &got), KB_ERR_TOO_LARGE);
            kb_json_free_str(e);
        }
    }
}

static void refuses_malformed(void **state)
{
    /* truncated, misplaced or excess padding, whitespace, wrong alphabet, non-canonical pad bits */
    static const char *const bad_std[] = {
        "Zg",     "Zg=",  "Z===",     "====", "Zh==", "Zm9=", "QR==", "QUJ=",  "Zm 9v",
        "Zm9v\n", "=Zm9", "Zg==Zg==", "Zm9*", "Zm9-", "Zm9_", "AA=A", "Z\0==", "Zm9vYg=\n"};
    static const char *const bad_url[] = {"Z",    "Zg=",  "Zg==",  "Zh", "Zm9", "Zm+v",
                                          "Zm/v", "Zm v", "Zm9v=", "QR", "QUJ", "Zm9vY"};
    uint8_t out[16];
    size_t got = 99;
    (void)state;
    for (size_t i = 0; i < KB_ARRAY_LEN(bad_std); i++) {
        size_t len = strlen(bad_std[i]);
        if (i == 16)
            len = 4; /* the embedded NUL */
        if (kb_b64_decode(bad_std[i], len, KB_B64_STD, out, sizeof(out), &got) != KB_ERR_INVALID)
            fail_msg("std accepted %s", bad_std[i]);
        assert_int_equal(got, 0);
    }
    for (size_t i = 0; i < KB_ARRAY_LEN(bad_url); i++) {
        if (kb_b64_decode(bad_url[i], strlen(bad_url[i]), KB_B64_URL, out, sizeof(out), &got) !=
            KB_ERR_INVALID)
            fail_msg("url accepted %s", bad_url[i]);
    }
    assert_kb(kb_b64_decode(NULL, 4, KB_B64_STD, out, sizeof(out), &got), KB_ERR_NULL);
    assert_kb(kb_b64_decode("Zg==", 4, KB_B64_STD, NULL, 1, &got), KB_ERR_NULL);
    assert_kb(kb_b64_decode("Zg==", 4, KB_B64_STD, out, 1, NULL), KB_ERR_NULL);
    assert_int_equal(kb_b64_enc_len(SIZE_MAX, KB_B64_STD), SIZE_MAX);
}

static void secret_exact_limit(void **state)
{
    kb_secret *s = NULL;
    (void)state;
    assert_ok(kb_b64_decode_secret("aGVsbG8=", 8, 5, &s)); /* exactly max: 5 bytes, 8 chars */
    assert_int_equal(kb_secret_len(s), 5);
    assert_memory_equal(kb_secret_cdata(s), "hello", 5);
    kb_secret_free(s);
    assert_kb(kb_b64_decode_secret("aGVsbG8=", 8, 4, &s), KB_ERR_TOO_LARGE);
    assert_null(s);
    assert_ok(kb_b64_decode_secret("", 0, 0, &s));
    assert_int_equal(kb_secret_len(s), 0);
    kb_secret_free(s);
    assert_kb(kb_b64_decode_secret("aGVsbG8", 7, 100, &s), KB_ERR_INVALID);
    assert_kb(kb_b64_decode_secret("aGV$bG8=", 8, 100, &s), KB_ERR_INVALID);
    assert_kb(kb_b64_decode_secret("aG=sbG8=", 8, 100, &s), KB_ERR_INVALID);
    assert_kb(kb_b64_decode_secret("aGVsbG9=", 8, 100, &s), KB_ERR_INVALID);
    assert_kb(kb_b64_decode_secret("A===", 4, 100, &s), KB_ERR_INVALID);
    assert_kb(kb_b64_decode_secret(NULL, 4, 100, &s), KB_ERR_NULL);
    assert_null(s);
    assert_int_equal(kb_secret_live_count(), 0);
}

static void json_string_of_bytes(void **state)
{
    json_t *j;
    (void)state;
    j = kb_json_b64("\xff\x00\x01", 3);
    assert_string_equal(json_string_value(j), "/wAB");
    json_decref(j);
    j = kb_json_b64("", 0);
    assert_string_equal(json_string_value(j), "");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(vectors_both_ways),    cmocka_unit_test(round_trips_every_length),
        cmocka_unit_test(refuses_malformed),    cmocka_unit_test(secret_exact_limit),
        cmocka_unit_test(json_string_of_bytes),
    };
    kb_json_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
