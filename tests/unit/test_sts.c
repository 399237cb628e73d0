/* test_sts.c - the AssumeRole answer scanner and the request checks (no network: the signed
 * round trip against a stand-in STS that checks the botocore model and the signature is
 * tests/integration/test_ca_sts.py). */
#include <string.h>

#include "kbtest.h"
#include "lib/secbuf.h"
#include "lib/sts.h"

#define OK_XML(creds)                                                                              \
    "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"                   \
    "  <AssumeRoleResult>\n"                                                                       \
    "    <SourceIdentity>x</SourceIdentity>\n"                                                     \
    "    <AssumedRoleUser><Arn>arn:aws:sts::444455556666:assumed-role/r/s</Arn>"                   \
    "<AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>\n"                                    \
    "    <Credentials>" creds "</Credentials>\n"                                                   \
    "    <PackedPolicySize>6</PackedPolicySize>\n"                                                 \
    "  </AssumeRoleResult>\n"                                                                      \
    "  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>"              \
    "</ResponseMetadata>\n"                                                                        \
    "</AssumeRoleResponse>\n"

#define GOOD_CREDS                                                                                 \
    "<SessionToken>FQoGZXIvYXdz+token/with=chars</SessionToken>"                                   \
    "<SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>"                 \
    "<Expiration>2026-12-05T15:28:33.359Z</Expiration>"                                            \
    "<AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>"

static const char k_sk[] = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";

static kb_err parse(const char *xml, kb_aws_creds *c, int64_t *e)
{
    return kb_sts_parse_assume_role(xml, strlen(xml), c, e);
}

static void answer_is_read(void **state)
{
    kb_aws_creds c;
    int64_t e = 0;
    (void)state;
    assert_ok(parse(OK_XML(GOOD_CREDS), &c, &e));
    assert_string_equal(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
    assert_string_equal(c.session_token, "FQoGZXIvYXdz+token/with=chars");
    assert_int_equal(kb_secret_len(c.secret_key), strlen(k_sk));
    assert_memory_equal(kb_secret_cdata(c.secret_key), k_sk, strlen(k_sk));
    assert_int_equal(e, 1796484513); /* 2026-12-05T15:28:33Z */
    kb_aws_creds_free(&c);
    /* without a fraction */
    assert_ok(parse(OK_XML("<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>k</SecretAccessKey>"
                           "<SessionToken>t</SessionToken>"
                           "<Expiration>2026-12-05T15:28:33Z</Expiration>"),
                    &c, &e));
    assert_int_equal(e, 1796484513);
    kb_aws_creds_free(&c);
    assert_int_equal(kb_secret_live_count(), 0);
}

static void bad_answers_are_refused(void **state)
{
    static const struct {
        const char *xml;
        kb_err want;
    } cases[] = {
        {"", KB_ERR_NOT_FOUND},
        {"not xml", KB_ERR_NOT_FOUND},
        /* missing members */
        {OK_XML("<SecretAccessKey>k</SecretAccessKey><SessionToken>t</SessionToken>"
                "<Expiration>2026-12-05T15:28:33Z</Expiration>"),
         KB_ERR_NOT_FOUND},
        {OK_XML("<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>k</SecretAccessKey>"
                "<Expiration>2026-12-05T15:28:33Z</Expiration>"),
         KB_ERR_NOT_FOUND},
        {"<AssumeRoleResponse><AssumeRoleResult></AssumeRoleResult></AssumeRoleResponse>",
         KB_ERR_NOT_FOUND},
        /* truncated */
        {"<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIA1", KB_ERR_TRUNCATED},
        /* a duplicate key id (which one would we use?) */
        {OK_XML(GOOD_CREDS "<AccessKeyId>ASIA2</AccessKeyId>"), KB_ERR_INVALID},
        /* entities, markup or empty values inside a value */
        {OK_XML("<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>a&amp;b</SecretAccessKey>"
                "<SessionToken>t</SessionToken><Expiration>2026-12-05T15:28:33Z</Expiration>"),
         KB_ERR_INVALID},
        {OK_XML("<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey></SecretAccessKey>"
                "<SessionToken>t</SessionToken><Expiration>2026-12-05T15:28:33Z</Expiration>"),
         KB_ERR_INVALID},
        {OK_XML("<AccessKeyId>asia lower</AccessKeyId><SecretAccessKey>k</SecretAccessKey>"
                "<SessionToken>t</SessionToken><Expiration>2026-12-05T15:28:33Z</Expiration>"),
         KB_ERR_INVALID},
        /* DTDs, CDATA and comments are refused outright */
        {"<!DOCTYPE x [<!ENTITY a \"b\">]>" OK_XML(GOOD_CREDS), KB_ERR_INVALID},
        {OK_XML("<AccessKeyId><![CDATA[ASIA1]]></AccessKeyId>"), KB_ERR_INVALID},
        /* bad expirations */
        {OK_XML("<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>k</SecretAccessKey>"
                "<SessionToken>t</SessionToken><Expiration>2026-02-30T15:28:33Z</Expiration>"),
         KB_ERR_INVALID},
        {OK_XML("<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>k</SecretAccessKey>"
                "<SessionToken>t</SessionToken><Expiration>1796484513</Expiration>"),
         KB_ERR_INVALID},
        {OK_XML("<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>k</SecretAccessKey>"
                "<SessionToken>t</SessionToken><Expiration>2026-12-05T15:28:33.x9Z</Expiration>"),
         KB_ERR_INVALID},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kb_aws_creds c;
        int64_t e = 0;
        kb_err got = parse(cases[i].xml, &c, &e);
        if (got != cases[i].want)
            fail_msg("case %zu: got %s, want %s", i, kb_err_str(got), kb_err_str(cases[i].want));
        assert_null(c.access_key_id);
        assert_null(c.secret_key);
    }
    assert_int_equal(kb_secret_live_count(), 0);
}

static void oversized_values_and_answers_are_refused(void **state)
{
    char *xml, *tok;
    size_t n = KB_AWSREQ_MAX_TOKEN + 1;
    kb_aws_creds c;
    int64_t e;
    (void)state;
    tok = malloc(n + 1);
    xml = malloc(KB_STS_RESP_MAX + 2);
    assert_non_null(tok);
    assert_non_null(xml);
    memset(tok, 'A', n);
    tok[n] = '\0';
    snprintf(xml, KB_STS_RESP_MAX + 2,
             OK_XML("<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>k</SecretAccessKey>"
                    "<SessionToken>%s</SessionToken><Expiration>2026-12-05T15:28:33Z</Expiration>"),
             tok);
    assert_kb(parse(xml, &c, &e), KB_ERR_TOO_LARGE);
    /* at the limit: accepted */
    tok[n - 1] = '\0';
    snprintf(xml, KB_STS_RESP_MAX + 2,
             OK_XML("<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>k</SecretAccessKey>"
                    "<SessionToken>%s</SessionToken><Expiration>2026-12-05T15:28:33Z</Expiration>"),
             tok);
    assert_ok(parse(xml, &c, &e));
    assert_int_equal(strlen(c.session_token), KB_AWSREQ_MAX_TOKEN);
    kb_aws_creds_free(&c);
    /* a whole answer over the limit */
    memset(xml, ' ', KB_STS_RESP_MAX + 1);
    assert_kb(kb_sts_parse_assume_role(xml, KB_STS_RESP_MAX + 1, &c, &e), KB_ERR_TOO_LARGE);
    free(tok);
    free(xml);
}

static void error_code_is_read(void **state)
{
    char code[64];
    static const char err[] =
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>"
        "<Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::1:user/x is not "
        "authorized to perform: sts:AssumeRole</Message></Error><RequestId>r</RequestId>"
        "</ErrorResponse>";
    (void)state;
    assert_ok(kb_sts_parse_error(err, strlen(err), code, sizeof(code)));
    assert_string_equal(code, "AccessDenied");
    assert_kb(kb_sts_parse_error("<html>", 6, code, sizeof(code)), KB_ERR_NOT_FOUND);
    {
        static const char spaced[] =
            "<ErrorResponse><Error><Code>a b</Code></Error></ErrorResponse>";
        assert_kb(kb_sts_parse_error(spaced, strlen(spaced), code, sizeof(code)), KB_ERR_INVALID);
    }
}

static void requests_outside_the_model_are_refused(void **state)
{
    kb_secret *sk = NULL;
    kb_aws_creds c;
    int64_t e;
    char err[256];
    kb_awsreq_cfg cfg = {
        "http://127.0.0.1:9", "eu-west-1", "sts", "AKIDTEST", NULL, NULL, NULL, 1000};
    static const kb_sts_assume bad[] = {
        {"arn:aws:iam::12345:role/short", NULL, "keybridge-ca", 3600},
        {"arn:aws:s3:::bucket-name-long-enough", NULL, "keybridge-ca", 3600},
        {"arn:aws:iam::444455556666:role/", NULL, "keybridge-ca", 3600},
        {"arn:aws:iam::444455556666:role/r", "x", "keybridge-ca", 3600},
        {"arn:aws:iam::444455556666:role/r", "with space", "keybridge-ca", 3600},
        {"arn:aws:iam::444455556666:role/r", NULL, "k", 3600},
        {"arn:aws:iam::444455556666:role/r", NULL, "no/slash", 3600},
        {"arn:aws:iam::444455556666:role/r", NULL, "keybridge-ca", 899},
        {"arn:aws:iam::444455556666:role/r", NULL, "keybridge-ca", 43201},
    };
    (void)state;
    assert_ok(kb_secret_from("secret", 6, &sk));
    cfg.secret_key = sk;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kb_err got = kb_sts_assume_role(&cfg, &bad[i], &c, &e, err, sizeof(err));
        if (got != KB_ERR_INVALID)
            fail_msg("case %zu: got %s (%s)", i, kb_err_str(got), err);
        assert_true(err[0] != '\0');
    }
    kb_secret_free(sk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(answer_is_read),
        cmocka_unit_test(bad_answers_are_refused),
        cmocka_unit_test(oversized_values_and_answers_are_refused),
        cmocka_unit_test(error_code_is_read),
        cmocka_unit_test(requests_outside_the_model_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
