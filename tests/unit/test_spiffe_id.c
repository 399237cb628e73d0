/* test_spiffe_id.c - SPIFFE ID syntax (SPIFFE-ID.md 2), accessors, prefix matching. */
#include <string.h>

#include "kbtest.h"
#include "lib/err.h"
#include "lib/spiffe_id.h"

typedef struct {
    const char *id;
    kb_err want;
    const char *why; /* expected reason (a substring) for a rejected ID */
} id_case;

static const id_case cases[] = {
    /* valid */
    {"spiffe://example.org", KB_OK, NULL},
    {"spiffe://example.org/workload", KB_OK, NULL},
    {"spiffe://example.org/ns/payments/sa/api", KB_OK, NULL},
    {"spiffe://example.org/lambda/acct/123/fn/report", KB_OK, NULL},
    {"spiffe://a", KB_OK, NULL},
    {"spiffe://td-with_all.chars-09/x", KB_OK, NULL},
    {"spiffe://example.org/Mixed.Case_Path-09", KB_OK, NULL},
    {"spiffe://example.org/...", KB_OK, NULL},
    {"spiffe://example.org/.a/a./..b", KB_OK, NULL},
    {"spiffe://example.org/_/-/9", KB_OK, NULL},
    {"spiffe://1.2.3.4/ip-like", KB_OK, NULL},
    {"spiffe://..../dots-only-td", KB_OK, NULL},
    /* scheme */
    {"", KB_ERR_INVALID, "empty"},
    {"example.org/workload", KB_ERR_INVALID, "scheme is not"},
    {"http://example.org/workload", KB_ERR_INVALID, "scheme is not"},
    {"spiffe:/example.org/workload", KB_ERR_INVALID, "scheme is not"},
    {"spiffe:example.org", KB_ERR_INVALID, "scheme is not"},
    {"spiffe", KB_ERR_INVALID, "scheme is not"},
    {"SPIFFE://example.org/workload", KB_ERR_INVALID, "scheme must be lowercase"},
    {"Spiffe://example.org/workload", KB_ERR_INVALID, "scheme must be lowercase"},
    {" spiffe://example.org/workload", KB_ERR_INVALID, "scheme is not"},
    /* trust domain */
    {"spiffe://", KB_ERR_INVALID, "trust domain is empty"},
    {"spiffe:///workload", KB_ERR_INVALID, "trust domain is empty"},
    {"spiffe://Example.org/workload", KB_ERR_INVALID, "uppercase"},
    {"spiffe://example.ORG", KB_ERR_INVALID, "uppercase"},
    {"spiffe://example.org:8443/workload", KB_ERR_INVALID, "port"},
    {"spiffe://example.org:/workload", KB_ERR_INVALID, "port"},
    {"spiffe://user@example.org/workload", KB_ERR_INVALID, "userinfo"},
    {"spiffe://exa mple.org/workload", KB_ERR_INVALID, "trust domain has an invalid character"},
    {"spiffe://example!.org", KB_ERR_INVALID, "trust domain has an invalid character"},
    {"spiffe://exam%41ple.org", KB_ERR_INVALID, "percent-encoding"},
    {"spiffe://[::1]/workload", KB_ERR_INVALID, "trust domain has an invalid character"},
    {"spiffe://example.org?x=1", KB_ERR_INVALID, "query"},
    {"spiffe://example.org#frag", KB_ERR_INVALID, "fragment"},
    {"spiffe://ex\xc3\xa4mple.org", KB_ERR_INVALID, "trust domain has an invalid character"},
    /* path */
    {"spiffe://example.org/", KB_ERR_INVALID, "trailing '/'"},
    {"spiffe://example.org/workload/", KB_ERR_INVALID, "trailing '/'"},
    {"spiffe://example.org//workload", KB_ERR_INVALID, "empty segment"},
    {"spiffe://example.org/a//b", KB_ERR_INVALID, "empty segment"},
    {"spiffe://example.org/.", KB_ERR_INVALID, "'.' segment"},
    {"spiffe://example.org/a/./b", KB_ERR_INVALID, "'.' segment"},
    {"spiffe://example.org/..", KB_ERR_INVALID, "'..' segment"},
    {"spiffe://example.org/a/../b", KB_ERR_INVALID, "'..' segment"},
    {"spiffe://example.org/wor%20kload", KB_ERR_INVALID, "percent-encoding"},
    {"spiffe://example.org/work load", KB_ERR_INVALID, "path has an invalid character"},
    {"spiffe://example.org/work~load", KB_ERR_INVALID, "path has an invalid character"},
    {"spiffe://example.org/a+b", KB_ERR_INVALID, "path has an invalid character"},
    {"spiffe://example.org/a:b", KB_ERR_INVALID, "path has an invalid character"},
    {"spiffe://example.org/a@b", KB_ERR_INVALID, "path has an invalid character"},
    {"spiffe://example.org/w\xc3\xa4", KB_ERR_INVALID, "path has an invalid character"},
    {"spiffe://example.org/workload?x=1", KB_ERR_INVALID, "query"},
    {"spiffe://example.org/workload#frag", KB_ERR_INVALID, "fragment"},
    {"spiffe://example.org/a\\b", KB_ERR_INVALID, "path has an invalid character"},
    {"spiffe://example.org/a\nb", KB_ERR_INVALID, "path has an invalid character"},
};

static void id_table(void **state)
{
    (void)state;
    size_t ok = 0, bad = 0;
    for (size_t i = 0; i < KB_ARRAY_LEN(cases); i++) {
        const id_case *c = &cases[i];
        spiffe_id id;
        const char *why = NULL;
        kb_err rc = spiffe_id_parse(c->id, strlen(c->id), &id, &why);
        if (rc != c->want)
            fail_msg("case %zu '%s': got %s, want %s (%s)", i, c->id, kb_err_str(rc),
                     kb_err_str(c->want), why ? why : "-");
        if (c->want == KB_OK) {
            assert_string_equal(spiffe_id_str(&id), c->id);
            ok++;
        } else {
            assert_non_null(why);
            if (strstr(why, c->why) == NULL)
                fail_msg("case %zu '%s': reason '%s' does not name '%s'", i, c->id, why, c->why);
            assert_string_equal(spiffe_id_str(&id), ""); /* zeroed on failure */
            bad++;
        }
    }
    assert_true(ok + bad >= 40);
    assert_true(ok >= 10 && bad >= 30);
}

/* Each rule has its own reason: no two rules share a message. */
static void reasons_are_distinct(void **state)
{
    (void)state;
    const char *ids[] = {
        "",
        "http://x",
        "SPIFFE://x",
        "spiffe://",
        "spiffe://X",
        "spiffe://x:1",
        "spiffe://u@x",
        "spiffe://x!",
        "spiffe://x%41",
        "spiffe://x?q",
        "spiffe://x#f",
        "spiffe://x/",
        "spiffe://x//a",
        "spiffe://x/.",
        "spiffe://x/..",
        "spiffe://x/a b",
    };
    const char *seen[KB_ARRAY_LEN(ids)];
    for (size_t i = 0; i < KB_ARRAY_LEN(ids); i++) {
        spiffe_id id;
        const char *why = NULL;
        assert_int_not_equal(spiffe_id_parse(ids[i], strlen(ids[i]), &id, &why), KB_OK);
        assert_non_null(why);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(seen[j], why) == 0)
                fail_msg("'%s' and '%s' share reason '%s'", ids[j], ids[i], why);
        }
        seen[i] = why;
    }
}

/* Build "spiffe://example.org/aaaa/aaaa/..." of exactly n bytes. */
static char *make_id(size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    const char *pre = "spiffe://example.org";
    size_t plen = strlen(pre);
    memcpy(s, pre, plen);
    for (size_t i = plen; i < n; i++)
        s[i] = ((i - plen) % 8 == 0) ? '/' : 'a';
    if (s[n - 1] == '/')
        s[n - 1] = 'b', s[n - 2] = 'b'; /* never end on '/' (keep segments non-empty) */
    s[n] = '\0';
    return s;
}

static void length_limits(void **state)
{
    (void)state;
    spiffe_id id;
    const char *why = NULL;

    char *s = make_id(SPIFFE_ID_MAX);
    assert_int_equal(strlen(s), 2048);
    assert_ok(spiffe_id_parse(s, 2048, &id, &why));
    assert_int_equal(spiffe_id_len(&id), 2048);
    assert_string_equal(spiffe_id_str(&id), s);
    free(s);

    s = make_id(SPIFFE_ID_MAX - 1);
    assert_ok(spiffe_id_parse(s, strlen(s), &id, &why));
    free(s);

    s = make_id(SPIFFE_ID_MAX + 1);
    assert_int_equal(strlen(s), 2049);
    assert_kb(spiffe_id_parse(s, 2049, &id, &why), KB_ERR_TOO_LARGE);
    assert_non_null(strstr(why, "2048"));
    assert_kb(spiffe_id_parse_str(s, &id, &why), KB_ERR_TOO_LARGE);
    free(s);

    /* Trust domain: 255 bytes ok, 256 refused. */
    char td[300];
    memset(td, 'a', sizeof(td));
    char buf[400];
    snprintf(buf, sizeof(buf), "spiffe://%.*s/x", 255, td);
    assert_ok(spiffe_id_parse_str(buf, &id, &why));
    assert_int_equal(strlen(spiffe_id_trust_domain(&id)), 255);
    snprintf(buf, sizeof(buf), "spiffe://%.*s/x", 256, td);
    assert_kb(spiffe_id_parse_str(buf, &id, &why), KB_ERR_TOO_LARGE);
    assert_non_null(strstr(why, "255"));
}

static void length_is_bounded_not_nul_terminated(void **state)
{
    (void)state;
    spiffe_id id;
    const char *why = NULL;
    const char *s = "spiffe://example.org/workloadTRAILINGJUNK";
    assert_ok(spiffe_id_parse(s, strlen("spiffe://example.org/workload"), &id, &why));
    assert_string_equal(spiffe_id_str(&id), "spiffe://example.org/workload");

    /* An embedded NUL is a character like any other, and not an allowed one. */
    const char nul[] = "spiffe://example.org/a\0b";
    assert_kb(spiffe_id_parse(nul, sizeof(nul) - 1, &id, &why), KB_ERR_INVALID);
    assert_non_null(strstr(why, "path has an invalid character"));
    const char nul_td[] = "spiffe://exa\0mple.org";
    assert_kb(spiffe_id_parse(nul_td, sizeof(nul_td) - 1, &id, &why), KB_ERR_INVALID);

    assert_kb(spiffe_id_parse(NULL, 3, &id, &why), KB_ERR_NULL);
    assert_kb(spiffe_id_parse_str(NULL, &id, &why), KB_ERR_NULL);
    assert_kb(spiffe_id_parse(s, 5, NULL, &why), KB_ERR_NULL);
    /* why may be NULL */
    assert_kb(spiffe_id_parse("spiffe://X", 10, &id, NULL), KB_ERR_INVALID);
}

static void accessors(void **state)
{
    (void)state;
    spiffe_id id, root, other;
    const char *why;
    assert_ok(spiffe_id_parse_str("spiffe://example.org/ns/payments/sa/api", &id, &why));
    assert_string_equal(spiffe_id_trust_domain(&id), "example.org");
    assert_string_equal(spiffe_id_path(&id), "/ns/payments/sa/api");
    assert_false(spiffe_id_is_root(&id));
    assert_true(spiffe_id_member_of(&id, "example.org"));
    assert_false(spiffe_id_member_of(&id, "example.com"));
    assert_false(spiffe_id_member_of(&id, "example"));

    assert_ok(spiffe_id_parse_str("spiffe://example.org", &root, &why));
    assert_true(spiffe_id_is_root(&root));
    assert_string_equal(spiffe_id_path(&root), "");
    assert_string_equal(spiffe_id_trust_domain(&root), "example.org");

    assert_false(spiffe_id_eq(&id, &root));
    other = id; /* a plain value */
    assert_true(spiffe_id_eq(&id, &other));
    assert_ok(spiffe_id_parse_str("spiffe://example.org/ns/payments/sa/apI", &other, &why));
    assert_false(spiffe_id_eq(&id, &other));

    spiffe_id zero;
    memset(&zero, 0, sizeof(zero));
    assert_false(spiffe_id_eq(&zero, &zero));
    assert_false(spiffe_id_is_root(&zero));
}

static void from_parts(void **state)
{
    (void)state;
    spiffe_id id;
    const char *why;
    assert_ok(spiffe_id_from_parts("example.org", "/lambda/acct/123", &id, &why));
    assert_string_equal(spiffe_id_str(&id), "spiffe://example.org/lambda/acct/123");
    assert_ok(spiffe_id_from_parts("example.org", "", &id, &why));
    assert_true(spiffe_id_is_root(&id));
    assert_kb(spiffe_id_from_parts("example.org", "lambda", &id, &why), KB_ERR_INVALID);
    assert_non_null(strstr(why, "must start with '/'"));
    assert_kb(spiffe_id_from_parts("Example.org", "/a", &id, &why), KB_ERR_INVALID);
    assert_kb(spiffe_id_from_parts("example.org/a", "/a", &id, &why), KB_ERR_INVALID);
    assert_kb(spiffe_id_from_parts("example.org", "/a/", &id, &why), KB_ERR_INVALID);
    assert_kb(spiffe_id_from_parts(NULL, "/a", &id, &why), KB_ERR_NULL);

    assert_ok(spiffe_td_validate("example.org", 11, &why));
    assert_kb(spiffe_td_validate("", 0, &why), KB_ERR_INVALID);
    assert_kb(spiffe_td_validate("a:1", 3, &why), KB_ERR_INVALID);
    assert_kb(spiffe_td_validate("a/b", 3, &why), KB_ERR_INVALID);
}

static void prefix_on_segment_boundaries(void **state)
{
    (void)state;
    spiffe_id id, lambda, root;
    const char *why;
    assert_ok(spiffe_id_parse_str("spiffe://example.org/lambda/acct/123/fn/report", &id, &why));
    assert_ok(spiffe_id_parse_str("spiffe://example.org/lambda", &lambda, &why));
    assert_ok(spiffe_id_parse_str("spiffe://example.org", &root, &why));

    assert_true(spiffe_id_has_prefix(&id, "/lambda/"));
    assert_true(spiffe_id_has_prefix(&id, "/lambda"));
    assert_true(spiffe_id_has_prefix(&id, "/lambda/acct/123"));
    assert_true(spiffe_id_has_prefix(&id, "/lambda/acct/123/"));
    assert_true(spiffe_id_has_prefix(&id, "/lambda/acct/123/fn/report"));
    assert_true(spiffe_id_has_prefix(&id, "/"));
    assert_false(spiffe_id_has_prefix(&id, "/lambda/acct/12"));
    assert_false(spiffe_id_has_prefix(&id, "/lamb"));
    assert_false(spiffe_id_has_prefix(&id, "/lambda/acct/123/fn/report/"));
    assert_false(spiffe_id_has_prefix(&id, "/lambda/acct/123/fn/reports"));
    assert_false(spiffe_id_has_prefix(&id, "lambda/"));
    assert_false(spiffe_id_has_prefix(&id, ""));
    assert_false(spiffe_id_has_prefix(&id, NULL));
    assert_false(spiffe_id_has_prefix(&id, "/Lambda"));

    assert_true(spiffe_id_has_prefix(&lambda, "/lambda"));
    assert_false(spiffe_id_has_prefix(&lambda, "/lambda/"));
    assert_false(spiffe_id_has_prefix(&root, "/"));
    assert_false(spiffe_id_has_prefix(&root, "/lambda"));

    spiffe_id lambdax;
    assert_ok(spiffe_id_parse_str("spiffe://example.org/lambdax/acct", &lambdax, &why));
    assert_false(spiffe_id_has_prefix(&lambdax, "/lambda"));
    assert_false(spiffe_id_has_prefix(&lambdax, "/lambda/"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(id_table),
        cmocka_unit_test(reasons_are_distinct),
        cmocka_unit_test(length_limits),
        cmocka_unit_test(length_is_bounded_not_nul_terminated),
        cmocka_unit_test(accessors),
        cmocka_unit_test(from_parts),
        cmocka_unit_test(prefix_on_segment_boundaries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
