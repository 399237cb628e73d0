/* test_model.c - data model rules: every limit at, below and above, and the negative cases. */
#include <ctype.h>
#include <string.h>

#include "kbtest.h"
#include "lib/err.h"
#include "server/model.h"

static char *rep(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void names(void **state)
{
    (void)state;
    char *s;
    assert_ok(model_name_check("db-password"));
    assert_ok(model_name_check("a_b.c+d=e@f-G9"));
    assert_ok(model_name_check("x"));
    assert_ok(model_name_check("x."));
    assert_kb(model_name_check(""), KB_ERR_INVALID);
    assert_kb(model_name_check(".hidden"), KB_ERR_INVALID);
    assert_kb(model_name_check("."), KB_ERR_INVALID);
    assert_kb(model_name_check("a/b"), KB_ERR_INVALID);
    assert_kb(model_name_check("a b"), KB_ERR_INVALID);
    assert_kb(model_name_check("caf\xc3\xa9"), KB_ERR_INVALID);
    assert_kb(model_name_check("a\nb"), KB_ERR_INVALID);
    assert_kb(model_name_check(NULL), KB_ERR_NULL);
    s = rep('a', MODEL_NAME_MAX - 1);
    assert_ok(model_name_check(s));
    free(s);
    s = rep('a', MODEL_NAME_MAX);
    assert_ok(model_name_check(s));
    free(s);
    s = rep('a', MODEL_NAME_MAX + 1);
    assert_kb(model_name_check(s), KB_ERR_TOO_LARGE);
    free(s);
}

/* Application names: one limit (246) so that keybridge/<app>/<name> fits Secrets Manager's 512
 * characters with the longest secret name. */
static void app_names(void **state)
{
    (void)state;
    char *s;
    assert_int_equal(MODEL_APP_NAME_MAX, 246);
    assert_int_equal(strlen(KB_CLOUD_NAME_PREFIX) + MODEL_APP_NAME_MAX + 1 + MODEL_NAME_MAX,
                     KB_CLOUD_NAME_MAX);
    assert_ok(model_app_name_check("payments"));
    assert_kb(model_app_name_check(""), KB_ERR_INVALID);
    assert_kb(model_app_name_check(".x"), KB_ERR_INVALID);
    assert_kb(model_app_name_check("a/b"), KB_ERR_INVALID);
    assert_kb(model_app_name_check(NULL), KB_ERR_NULL);
    s = rep('a', MODEL_APP_NAME_MAX - 1);
    assert_ok(model_app_name_check(s));
    free(s);
    s = rep('a', MODEL_APP_NAME_MAX);
    assert_ok(model_app_name_check(s));
    free(s);
    s = rep('a', MODEL_APP_NAME_MAX + 1);
    assert_kb(model_app_name_check(s), KB_ERR_TOO_LARGE);
    free(s);
    s = rep('a', MODEL_NAME_MAX);
    assert_kb(model_app_name_check(s), KB_ERR_TOO_LARGE);
    free(s);
}

static void descriptions(void **state)
{
    (void)state;
    char *s;
    assert_ok(model_description_check(NULL));
    assert_ok(model_description_check(""));
    assert_ok(model_description_check("Datenbank-Passwort f\xc3\xbcr die API"));
    assert_kb(model_description_check("tab\there"), KB_ERR_INVALID);
    assert_kb(model_description_check("bad \xff utf8"), KB_ERR_INVALID);
    s = rep('d', MODEL_DESCRIPTION_MAX - 1);
    assert_ok(model_description_check(s));
    free(s);
    s = rep('d', MODEL_DESCRIPTION_MAX);
    assert_ok(model_description_check(s));
    free(s);
    s = rep('d', MODEL_DESCRIPTION_MAX + 1);
    assert_kb(model_description_check(s), KB_ERR_TOO_LARGE);
    free(s);
}

static void content_sizes(void **state)
{
    (void)state;
    assert_ok(model_content_len_check(0, 0, false));
    assert_ok(model_content_len_check(MODEL_CONTENT_MAX_DEFAULT - 1, 0, false));
    assert_ok(model_content_len_check(MODEL_CONTENT_MAX_DEFAULT, 0, false));
    assert_kb(model_content_len_check(MODEL_CONTENT_MAX_DEFAULT + 1, 0, false), KB_ERR_TOO_LARGE);
    /* A larger configured limit applies to local secrets but never to cloud_sync ones. */
    assert_ok(model_content_len_check(100000, 1000000, false));
    assert_ok(model_content_len_check(MODEL_CLOUD_CONTENT_MAX, 1000000, true));
    assert_kb(model_content_len_check(MODEL_CLOUD_CONTENT_MAX + 1, 1000000, true),
              KB_ERR_TOO_LARGE);
    /* Secrets Manager refuses an empty value: a cloud_sync secret holds 1 byte or more. */
    assert_kb(model_content_len_check(0, 0, true), KB_ERR_INVALID);
    assert_ok(model_content_len_check(1, 0, true));
    /* A smaller configured limit applies to both. */
    assert_ok(model_content_len_check(100, 100, true));
    assert_kb(model_content_len_check(101, 100, true), KB_ERR_TOO_LARGE);
}

static void metadata_keys_and_values(void **state)
{
    (void)state;
    char *s;
    assert_ok(model_metadata_key_check("mode"));
    assert_ok(model_metadata_key_check("a.b_c-D9"));
    assert_kb(model_metadata_key_check(""), KB_ERR_INVALID);
    assert_kb(model_metadata_key_check("a+b"), KB_ERR_INVALID);
    assert_kb(model_metadata_key_check("a b"), KB_ERR_INVALID);
    s = rep('k', MODEL_METADATA_KEY_MAX);
    assert_ok(model_metadata_key_check(s));
    free(s);
    s = rep('k', MODEL_METADATA_KEY_MAX - 1);
    assert_ok(model_metadata_key_check(s));
    free(s);
    s = rep('k', MODEL_METADATA_KEY_MAX + 1);
    assert_kb(model_metadata_key_check(s), KB_ERR_TOO_LARGE);
    free(s);

    assert_ok(model_metadata_value_check("0400", 4));
    assert_ok(model_metadata_value_check("", 0));
    assert_ok(model_metadata_value_check("\xe2\x82\xac", 3));             /* U+20AC */
    assert_ok(model_metadata_value_check("\xf0\x9f\x94\x91", 4));         /* U+1F511 */
    assert_kb(model_metadata_value_check("a\x01", 2), KB_ERR_INVALID);    /* C0 */
    assert_kb(model_metadata_value_check("a\x7f", 2), KB_ERR_INVALID);    /* DEL */
    assert_kb(model_metadata_value_check("\xc2\x85", 2), KB_ERR_INVALID); /* C1 NEL */
    assert_kb(model_metadata_value_check("\xc0\xaf", 2), KB_ERR_INVALID); /* overlong */
    assert_kb(model_metadata_value_check("\xe0\x80\xaf", 3), KB_ERR_INVALID);
    assert_kb(model_metadata_value_check("\xed\xa0\x80", 3), KB_ERR_INVALID);     /* surrogate */
    assert_kb(model_metadata_value_check("\xf4\x90\x80\x80", 4), KB_ERR_INVALID); /* >10FFFF */
    assert_kb(model_metadata_value_check("\xe2\x82", 2), KB_ERR_INVALID);         /* truncated */
    assert_kb(model_metadata_value_check("a\0b", 3), KB_ERR_INVALID);             /* embedded NUL */
    s = rep('v', MODEL_METADATA_VALUE_MAX);
    assert_ok(model_metadata_value_check(s, strlen(s)));
    assert_ok(model_metadata_value_check(s, strlen(s) - 1));
    free(s);
    s = rep('v', MODEL_METADATA_VALUE_MAX + 1);
    assert_kb(model_metadata_value_check(s, strlen(s)), KB_ERR_TOO_LARGE);
    free(s);
}

static json_t *md_with_entries(size_t n)
{
    json_t *o = json_object();
    char k[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "k%zu", i);
        json_object_set_new(o, k, json_string("v"));
    }
    return o;
}

static void metadata_objects(void **state)
{
    (void)state;
    json_t *o;
    char *canon = NULL;

    o = md_with_entries(MODEL_METADATA_ENTRIES_MAX - 1);
    assert_ok(model_metadata_check(o));
    json_decref(o);
    o = md_with_entries(MODEL_METADATA_ENTRIES_MAX);
    assert_ok(model_metadata_check(o));
    json_decref(o);
    o = md_with_entries(MODEL_METADATA_ENTRIES_MAX + 1);
    assert_kb(model_metadata_check(o), KB_ERR_TOO_LARGE);
    json_decref(o);

    /* Canonical form: compact, sorted; NULL and "" mean {}. */
    assert_ok(model_metadata_canon("{ \"z\": \"1\", \"a\": \"2\" }", &canon));
    assert_string_equal(canon, "{\"a\":\"2\",\"z\":\"1\"}");
    free(canon);
    assert_ok(model_metadata_canon(NULL, &canon));
    assert_string_equal(canon, "{}");
    free(canon);
    assert_ok(model_metadata_canon("", &canon));
    assert_string_equal(canon, "{}");
    free(canon);
    /* Wrong types, malformed, duplicates, trailing data, control characters. */
    assert_kb(model_metadata_canon("{\"a\":1}", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"a\":null}", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"a\":{\"b\":\"c\"}}", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("[\"a\"]", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"a\":\"b\"", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"a\":\"b\",\"a\":\"c\"}", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"a\":\"b\"} x", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"a\":\"b\\u0007\"}", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"a\":\"b\\u0000c\"}", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"bad key\":\"v\"}", &canon), KB_ERR_INVALID);
    /* Keys a Go decoder would read over a Keywhiz field, or over each other (issue 14). */
    assert_kb(model_metadata_canon("{\"Secret\":\"v\"}", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"secret\":\"v\"}", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"SECRETLENGTH\":\"1\"}", &canon), KB_ERR_INVALID);
    assert_kb(model_metadata_canon("{\"mode\":\"0400\",\"MODE\":\"0666\"}", &canon),
              KB_ERR_INVALID);
    assert_null(canon);
    assert_ok(model_metadata_canon("{\"mode\":\"0400\",\"owner\":\"a\",\"group\":\"b\","
                                   "\"filename\":\"x.pem\",\"secrets\":\"s\"}",
                                   &canon));
    free(canon);
    canon = NULL;
}

static void metadata_reserved_keys(void **state)
{
    (void)state;
    static const char *const fixed[] = {"name",         "secret",     "secretLength", "checksum",
                                        "creationDate", "updateDate", "expiry",       "version"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        char up[32];
        size_t n = strlen(fixed[i]);
        assert_true(model_metadata_key_reserved(fixed[i]));
        for (size_t k = 0; k <= n; k++)
            up[k] = (char)toupper((unsigned char)fixed[i][k]);
        assert_true(model_metadata_key_reserved(up));
    }
    assert_false(model_metadata_key_reserved("mode"));
    assert_false(model_metadata_key_reserved("filename"));
    assert_false(model_metadata_key_reserved("secret_"));
    assert_false(model_metadata_key_reserved("names"));
    assert_false(model_metadata_key_reserved("nam"));
}

static void spiffe_and_prefixes(void **state)
{
    (void)state;
    const char *const prefixes[] = {"/lambda/", "/batch", NULL};
    char *s;

    assert_ok(model_spiffe_id_check("spiffe://example.org/ns/payments/sa/api"));
    assert_ok(model_spiffe_id_check("spiffe://example.org"));
    assert_kb(model_spiffe_id_check("https://example.org/x"), KB_ERR_INVALID);
    assert_kb(model_spiffe_id_check("spiffe://"), KB_ERR_INVALID);
    assert_kb(model_spiffe_id_check("spiffe:///path"), KB_ERR_INVALID);
    assert_kb(model_spiffe_id_check("spiffe://example.org/a b"), KB_ERR_INVALID);
    s = rep('a', MODEL_SPIFFE_ID_MAX + 1);
    memcpy(s, "spiffe://e/", 11);
    assert_kb(model_spiffe_id_check(s), KB_ERR_TOO_LARGE);
    s[MODEL_SPIFFE_ID_MAX] = '\0';
    assert_ok(model_spiffe_id_check(s));
    free(s);
    assert_ok(model_actor_check("bootstrap"));
    assert_ok(model_actor_check("spiffe://example.org/admin"));
    assert_kb(model_actor_check("root"), KB_ERR_INVALID);

    assert_string_equal(model_spiffe_path("spiffe://example.org/lambda/fn"), "/lambda/fn");
    assert_string_equal(model_spiffe_path("spiffe://example.org"), "");
    assert_null(model_spiffe_path("http://example.org/lambda"));

    /* Segment boundaries. */
    assert_true(model_path_has_prefix("/lambda/acct/1/fn/x", "/lambda/"));
    assert_true(model_path_has_prefix("/lambda/acct/1/fn/x", "/lambda"));
    assert_true(model_path_has_prefix("/lambda", "/lambda/"));
    assert_false(model_path_has_prefix("/lambdax/fn", "/lambda/"));
    assert_false(model_path_has_prefix("/lambdax/fn", "/lambda"));
    assert_false(model_path_has_prefix("/ns/lambda/fn", "/lambda"));
    assert_true(model_path_has_prefix("/lambda/acct/1", "/lambda/acct"));
    assert_false(model_path_has_prefix("/lambda/acct1", "/lambda/acct"));
    assert_true(model_path_has_prefix("/anything", "/"));
    assert_false(model_path_has_prefix("/lambda/x", "lambda/"));
    assert_false(model_path_has_prefix("", "/lambda"));
    assert_false(model_path_has_prefix(NULL, "/lambda"));

    assert_true(model_spiffe_is_cloud("spiffe://example.org/lambda/acct/1/fn/r", prefixes));
    assert_true(model_spiffe_is_cloud("spiffe://example.org/batch", prefixes));
    assert_false(model_spiffe_is_cloud("spiffe://example.org/batchjob", prefixes));
    assert_false(model_spiffe_is_cloud("spiffe://example.org/ns/payments", prefixes));
    assert_false(model_spiffe_is_cloud("spiffe://lambda/x", prefixes)); /* trust domain */
    assert_false(model_spiffe_is_cloud("spiffe://example.org/lambda/x", NULL));

    assert_ok(model_cloud_prefix_check("/lambda/"));
    assert_kb(model_cloud_prefix_check("lambda/"), KB_ERR_INVALID);
    assert_kb(model_cloud_prefix_check(""), KB_ERR_INVALID);
    assert_kb(model_cloud_prefix_check("/a b"), KB_ERR_INVALID);

    assert_ok(model_client_flags_check(true, false));
    assert_ok(model_client_flags_check(false, true));
    assert_ok(model_client_flags_check(false, false));
    assert_kb(model_client_flags_check(true, true), KB_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names),
        cmocka_unit_test(app_names),
        cmocka_unit_test(descriptions),
        cmocka_unit_test(content_sizes),
        cmocka_unit_test(metadata_keys_and_values),
        cmocka_unit_test(metadata_objects),
        cmocka_unit_test(metadata_reserved_keys),
        cmocka_unit_test(spiffe_and_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
