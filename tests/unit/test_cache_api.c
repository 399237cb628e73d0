/* test_cache_api.c - keybridge-cache's pure request handler: operations, shapes, limits, filters,
 * pagination, idempotency, stages, account isolation, deletion lifecycle, SigV4 auth. */
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "kbtest.h"
#include "cache/api.h"
#include "cache/creds.h"
#include "cache/seal.h"
#include "cache/store.h"
#include "lib/fileio.h"
#include "lib/json.h"
#include "lib/secbuf.h"
#include "lib/sigv4.h"

#define ACCT_A "111111111111"
#define ACCT_B "222222222222"
#define T0 ((int64_t)1700000000000)

typedef struct {
    char *dir;
    char db[512];
    cache_store *st;
    cache_creds *creds;
    cache_api *api;
    int64_t now;
} fx;

static const char CREDS[] = "# test credentials\n"
                            "AKIDAAAAAAAAAAAAAAAA secretA " ACCT_A "\n"
                            "AKIDBBBBBBBBBBBBBBBB secretB " ACCT_B "\n";

static void open_store(fx *f)
{
    kb_secret *key = NULL;
    char kp[600];
    snprintf(kp, sizeof(kp), "%s/key", f->dir);
    if (access(kp, F_OK) != 0)
        assert_ok(cache_key_generate(kp));
    assert_ok(cache_key_load(kp, &key));
    assert_ok(cache_store_open(f->db, key, &f->st));
    cache_api_opts o = {.region = "us-east-1", .store = f->st, .creds = f->creds};
    assert_ok(cache_api_new(&o, &f->api));
}

static void close_store(fx *f)
{
    cache_api_free(f->api);
    cache_store_close(f->st);
    f->api = NULL;
    f->st = NULL;
}

/* Opening the fixture's store file (again) fails with want. */
static void expect_open_fails(fx *f, kb_err want)
{
    kb_secret *key = NULL;
    cache_store *st2 = NULL;
    char kp[600];
    snprintf(kp, sizeof(kp), "%s/key", f->dir);
    assert_ok(cache_key_load(kp, &key));
    assert_kb(cache_store_open(f->db, key, &st2), want);
    assert_null(st2);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    size_t bad = 0;
    f->dir = kbtest_tmpdir();
    snprintf(f->db, sizeof(f->db), "%s/cache.db", f->dir);
    assert_ok(cache_creds_parse(CREDS, strlen(CREDS), &f->creds, &bad));
    f->now = T0;
    open_store(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    static const char *const files[] = {"cache.db", "cache.db-wal", "cache.db-shm", "key"};
    char p[600];
    close_store(f);
    cache_creds_free(f->creds);
    for (size_t i = 0; i < KB_ARRAY_LEN(files); i++) {
        snprintf(p, sizeof(p), "%s/%s", f->dir, files[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Call an operation as account; returns the parsed response body, *status the HTTP status. */
static json_t *call_as(fx *f, const char *acct, const char *op, const char *body, int *status)
{
    cache_response r;
    json_t *j = NULL;
    f->now += 1000;
    assert_ok(
        cache_api_dispatch(f->api, acct, op, (const uint8_t *)body, strlen(body), f->now, &r));
    assert_int_equal(strlen(r.request_id), 36);
    assert_ok(kb_json_parse_flags(r.body, r.body_len, 1 << 22, KB_JSON_ALLOW_NUL, &j, NULL, 0));
    if (status)
        *status = r.status;
    cache_response_free(&r);
    /* After every request of every test (each write path, refused ones included): the store's
     * kept ListSecrets texts equal a fresh rendering from the tables (store.h). */
    {
        size_t stale = 0;
        assert_ok(cache_store_check_lists(f->st, &stale));
        if (stale != 0)
            fail_msg("%s %.200s: ListSecrets texts of %zu secrets are stale", op, body, stale);
    }
    return j;
}

static json_t *ok(fx *f, const char *op, const char *body)
{
    int st = 0;
    json_t *j = call_as(f, ACCT_A, op, body, &st);
    if (st != 200)
        fail_msg("%s %s: status %d %s", op, body, st,
                 json_string_value(json_object_get(j, "__type")));
    return j;
}

static void expect_err_as(fx *f, const char *acct, const char *op, const char *body, int status,
                          const char *type)
{
    int st = 0;
    json_t *j = call_as(f, acct, op, body, &st);
    const char *t = json_string_value(json_object_get(j, "__type"));
    if (st != status || t == NULL || strcmp(t, type) != 0)
        fail_msg("%s %.200s: got %d %s, want %d %s", op, body, st, t ? t : "(none)", status, type);
    assert_non_null(json_string_value(json_object_get(j, "message")));
    json_decref(j);
}

static void expect_err(fx *f, const char *op, const char *body, const char *type)
{
    expect_err_as(f, ACCT_A, op, body, 400, type);
}

static const char *str(const json_t *j, const char *k)
{
    const char *v = json_string_value(json_object_get(j, k));
    if (v == NULL)
        fail_msg("missing string member %s", k);
    return v;
}

static void done(json_t *j)
{
    json_decref(j);
}

/* ------------------------------------------------------------------------------ */

static void create_get_describe(void **state)
{
    fx *f = *state;
    json_t *c = ok(f, "CreateSecret",
                   "{\"Name\":\"app/db\",\"SecretString\":\"hunter2\",\"Description\":\"DB pw\","
                   "\"Tags\":[{\"Key\":\"team\",\"Value\":\"core\"}]}");
    char arn[600], vid[80];
    snprintf(arn, sizeof(arn), "%s", str(c, "ARN"));
    snprintf(vid, sizeof(vid), "%s", str(c, "VersionId"));
    assert_string_equal(str(c, "Name"), "app/db");
    assert_int_equal(strncmp(arn, "arn:aws:secretsmanager:us-east-1:" ACCT_A ":secret:app/db-", 55),
                     0);
    assert_int_equal(strlen(arn),
                     strlen("arn:aws:secretsmanager:us-east-1:" ACCT_A ":secret:app/db-") + 6);
    assert_int_equal(strlen(vid), 36);
    done(c);

    json_t *g = ok(f, "GetSecretValue", "{\"SecretId\":\"app/db\"}");
    assert_string_equal(str(g, "SecretString"), "hunter2");
    assert_string_equal(str(g, "VersionId"), vid);
    assert_string_equal(str(g, "ARN"), arn);
    assert_int_equal(json_array_size(json_object_get(g, "VersionStages")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(g, "VersionStages"), 0)),
                        "AWSCURRENT");
    assert_true(json_is_number(json_object_get(g, "CreatedDate")));
    done(g);

    /* by full ARN and by partial ARN (no random suffix) */
    char body[800];
    snprintf(body, sizeof(body), "{\"SecretId\":\"%s\"}", arn);
    done(ok(f, "GetSecretValue", body));
    arn[strlen(arn) - 7] = '\0';
    snprintf(body, sizeof(body), "{\"SecretId\":\"%s\"}", arn);
    done(ok(f, "GetSecretValue", body));
    /* a wrong suffix is not found */
    snprintf(body, sizeof(body), "{\"SecretId\":\"%s-XXXXXX\"}", arn);
    expect_err(f, "GetSecretValue", body, "ResourceNotFoundException");

    json_t *d = ok(f, "DescribeSecret", "{\"SecretId\":\"app/db\"}");
    assert_string_equal(str(d, "Description"), "DB pw");
    assert_int_equal(json_array_size(json_object_get(d, "Tags")), 1);
    assert_true(json_is_object(json_object_get(d, "VersionIdsToStages")));
    assert_non_null(json_object_get(json_object_get(d, "VersionIdsToStages"), vid));
    assert_true(json_is_number(json_object_get(d, "LastAccessedDate")));
    assert_null(json_object_get(d, "DeletedDate"));
    done(d);

    json_t *p = ok(f, "GetResourcePolicy", "{\"SecretId\":\"app/db\"}");
    assert_null(json_object_get(p, "ResourcePolicy"));
    assert_string_equal(str(p, "Name"), "app/db");
    done(p);

    expect_err(f, "CreateSecret", "{\"Name\":\"app/db\",\"SecretString\":\"x\"}",
               "ResourceExistsException");
    expect_err(f, "GetSecretValue", "{\"SecretId\":\"nope\"}", "ResourceNotFoundException");
}

static void binary_values(void **state)
{
    fx *f = *state;
    done(ok(f, "CreateSecret", "{\"Name\":\"bin\",\"SecretBinary\":\"AAECAwT/\"}"));
    json_t *g = ok(f, "GetSecretValue", "{\"SecretId\":\"bin\"}");
    assert_string_equal(str(g, "SecretBinary"), "AAECAwT/");
    assert_null(json_object_get(g, "SecretString"));
    done(g);
    expect_err(f, "CreateSecret", "{\"Name\":\"b2\",\"SecretBinary\":\"not base64!\"}",
               "InvalidParameterException");
    expect_err(f, "CreateSecret", "{\"Name\":\"b2\",\"SecretBinary\":\"AA=A\"}",
               "InvalidParameterException");
    expect_err(f, "CreateSecret", "{\"Name\":\"b2\",\"SecretBinary\":\"AAE\"}",
               "InvalidParameterException");
    /* Non-canonical: the pad bits of "QR==" are not zero ("QQ==" is the one spelling of "A").
     * Accepted before the shared base64 module; refused like the other programs do. */
    expect_err(f, "CreateSecret", "{\"Name\":\"b2\",\"SecretBinary\":\"QR==\"}",
               "InvalidParameterException");
    expect_err(f, "CreateSecret", "{\"Name\":\"b2\",\"SecretBinary\":\"QUJ=\"}",
               "InvalidParameterException");
    expect_err(f, "CreateSecret",
               "{\"Name\":\"b2\",\"SecretBinary\":\"AAAA\",\"SecretString\":\"x\"}",
               "InvalidParameterException");
    expect_err(f, "DescribeSecret", "{\"SecretId\":\"b2\"}", "ResourceNotFoundException");
}

static char *big_json(const char *prefix, size_t n, char fill, const char *suffix)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    char *b = malloc(pl + n + sl + 1);
    memcpy(b, prefix, pl);
    memset(b + pl, fill, n);
    memcpy(b + pl + n, suffix, sl + 1);
    return b;
}

static void limits(void **state)
{
    fx *f = *state;
    char *b;
    /* SecretString: 65536 bytes ok, 65537 refused, 0 refused */
    b = big_json("{\"Name\":\"big\",\"SecretString\":\"", 65536, 'x', "\"}");
    done(ok(f, "CreateSecret", b));
    free(b);
    b = big_json("{\"Name\":\"big2\",\"SecretString\":\"", 65537, 'x', "\"}");
    expect_err(f, "CreateSecret", b, "InvalidParameterException");
    free(b);
    expect_err(f, "CreateSecret", "{\"Name\":\"e\",\"SecretString\":\"\"}",
               "InvalidParameterException");
    /* SecretBinary: 65536 decoded bytes ok (87384 base64 chars), 65537 refused */
    b = big_json("{\"Name\":\"bigbin\",\"SecretBinary\":\"", 87380, 'A', "AA==\"}");
    done(ok(f, "CreateSecret", b)); /* 87384 / 4 * 3 - 2 = 65536 bytes */
    free(b);
    b = big_json("{\"Name\":\"bigbin2\",\"SecretBinary\":\"", 87384, 'A', "\"}");
    expect_err(f, "CreateSecret", b, "InvalidParameterException"); /* 65538 bytes */
    free(b);
    /* Name: 512 ok, 513 refused, bad characters refused */
    b = big_json("{\"Name\":\"", 512, 'n', "\"}");
    done(ok(f, "CreateSecret", b));
    free(b);
    b = big_json("{\"Name\":\"", 513, 'n', "\"}");
    expect_err(f, "CreateSecret", b, "InvalidParameterException");
    free(b);
    expect_err(f, "CreateSecret", "{\"Name\":\"a b\"}", "InvalidParameterException");
    expect_err(f, "CreateSecret", "{\"Name\":\"arn:x\"}", "InvalidParameterException");
    expect_err(f, "CreateSecret", "{\"Name\":\"\"}", "InvalidParameterException");
    /* Description: 2048 ok, 2049 refused */
    b = big_json("{\"Name\":\"d1\",\"Description\":\"", 2048, 'd', "\"}");
    done(ok(f, "CreateSecret", b));
    free(b);
    b = big_json("{\"Name\":\"d2\",\"Description\":\"", 2049, 'd', "\"}");
    expect_err(f, "CreateSecret", b, "InvalidParameterException");
    free(b);
    /* Tags: key 128 ok / 129 refused, value 256 ok / 257 refused */
    b = big_json("{\"Name\":\"t1\",\"Tags\":[{\"Key\":\"", 128, 'k', "\",\"Value\":\"v\"}]}");
    done(ok(f, "CreateSecret", b));
    free(b);
    b = big_json("{\"Name\":\"t2\",\"Tags\":[{\"Key\":\"", 129, 'k', "\",\"Value\":\"v\"}]}");
    expect_err(f, "CreateSecret", b, "InvalidParameterException");
    free(b);
    b = big_json("{\"Name\":\"t3\",\"Tags\":[{\"Key\":\"k\",\"Value\":\"", 256, 'v', "\"}]}");
    done(ok(f, "CreateSecret", b));
    free(b);
    b = big_json("{\"Name\":\"t4\",\"Tags\":[{\"Key\":\"k\",\"Value\":\"", 257, 'v', "\"}]}");
    expect_err(f, "CreateSecret", b, "InvalidParameterException");
    free(b);
    expect_err(f, "CreateSecret",
               "{\"Name\":\"t5\",\"Tags\":[{\"Key\":\"aws:x\",\"Value\":\"v\"}]}",
               "InvalidParameterException");
    /* 50 tags ok, 51 refused; TagResource counts the merged set */
    {
        char buf[8192];
        size_t o = (size_t)snprintf(buf, sizeof(buf), "{\"Name\":\"t50\",\"Tags\":[");
        for (int i = 0; i < 50; i++)
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s{\"Key\":\"k%d\",\"Value\":\"v\"}",
                                  i ? "," : "", i);
        snprintf(buf + o, sizeof(buf) - o, "]}");
        done(ok(f, "CreateSecret", buf));
        expect_err(f, "TagResource", "{\"SecretId\":\"t50\",\"Tags\":[{\"Key\":\"new\"}]}",
                   "InvalidParameterException");
        done(ok(f, "TagResource",
                "{\"SecretId\":\"t50\",\"Tags\":[{\"Key\":\"k1\",\"Value\":\"w\"}]}"));
        buf[o - 0] = '\0';
        snprintf(buf + o, sizeof(buf) - o, ",{\"Key\":\"k50\",\"Value\":\"v\"}]}");
        memcpy(buf, "{\"Name\":\"t51\"", 13);
        expect_err(f, "CreateSecret", buf, "InvalidParameterException");
    }
    /* ClientRequestToken: 32..64 */
    expect_err(f, "CreateSecret",
               "{\"Name\":\"tok\",\"SecretString\":\"x\",\"ClientRequestToken\":\"short\"}",
               "InvalidParameterException");
    b = big_json("{\"Name\":\"tok\",\"SecretString\":\"x\",\"ClientRequestToken\":\"", 65, 'a',
                 "\"}");
    expect_err(f, "CreateSecret", b, "InvalidParameterException");
    free(b);
    b = big_json("{\"Name\":\"tok\",\"SecretString\":\"x\",\"ClientRequestToken\":\"", 64, 'a',
                 "\"}");
    json_t *t = ok(f, "CreateSecret", b);
    assert_int_equal(strlen(str(t, "VersionId")), 64);
    done(t);
    free(b);
    /* oversized body */
    b = big_json("{\"Name\":\"huge\",\"Description\":\"", CACHE_BODY_MAX, 'h', "\"}");
    expect_err_as(f, ACCT_A, "CreateSecret", b, 413, "RequestEntityTooLargeException");
    free(b);
    expect_err(f, "DescribeSecret", "{\"SecretId\":\"huge\"}", "ResourceNotFoundException");
}

static void bad_json_and_types(void **state)
{
    fx *f = *state;
    expect_err(f, "CreateSecret", "{\"Name\":", "SerializationException");
    expect_err(f, "CreateSecret", "[1]", "SerializationException");
    expect_err(f, "CreateSecret", "", "SerializationException");
    expect_err(f, "CreateSecret", "{\"Name\":\"a\",\"Name\":\"b\"}", "SerializationException");
    expect_err(f, "CreateSecret", "{\"Name\":5}", "InvalidParameterException");
    expect_err(f, "CreateSecret", "{\"Name\":\"x\",\"SecretString\":[]}",
               "InvalidParameterException");
    expect_err(f, "CreateSecret", "{\"Name\":\"x\",\"Tags\":{}}", "InvalidParameterException");
    expect_err(f, "CreateSecret", "{\"Name\":\"x\",\"Bogus\":1}", "InvalidParameterException");
    expect_err(f, "CreateSecret", "{}", "InvalidParameterException");
    expect_err(f, "ListSecrets", "{\"MaxResults\":\"10\"}", "InvalidParameterException");
    expect_err(f, "ListSecrets", "{\"MaxResults\":0}", "InvalidParameterException");
    expect_err(f, "ListSecrets", "{\"MaxResults\":101}", "InvalidParameterException");
    expect_err(f, "ListSecrets", "{\"SortOrder\":\"up\"}", "InvalidParameterException");
    expect_err(f, "ListSecrets", "{\"Filters\":[{\"Key\":\"color\",\"Values\":[\"x\"]}]}",
               "InvalidParameterException");
    expect_err(f, "ListSecrets", "{\"Filters\":[{\"Key\":\"name\",\"Values\":[]}]}",
               "InvalidParameterException");
    expect_err(f, "ListSecrets", "{\"Filters\":[{\"Key\":\"name\",\"Values\":[\"a;b\"]}]}",
               "InvalidParameterException");
    expect_err(f, "DeleteSecret", "{\"SecretId\":\"x\",\"RecoveryWindowInDays\":\"7\"}",
               "InvalidParameterException");
    expect_err_as(f, ACCT_A, "Frobnicate", "{}", 400, "UnknownOperationException");
    /* nothing was created by any of the above */
    json_t *l = ok(f, "ListSecrets", "{}");
    assert_int_equal(json_array_size(json_object_get(l, "SecretList")), 0);
    done(l);
}

static void versions_and_stages(void **state)
{
    fx *f = *state;
    char v1[80], v2[80], v3[80];
    json_t *j = ok(f, "CreateSecret", "{\"Name\":\"s\",\"SecretString\":\"one\"}");
    snprintf(v1, sizeof(v1), "%s", str(j, "VersionId"));
    done(j);
    j = ok(f, "PutSecretValue", "{\"SecretId\":\"s\",\"SecretString\":\"two\"}");
    snprintf(v2, sizeof(v2), "%s", str(j, "VersionId"));
    assert_string_not_equal(v1, v2);
    done(j);
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"s\",\"VersionStage\":\"AWSPREVIOUS\"}");
    assert_string_equal(str(j, "SecretString"), "one");
    assert_string_equal(str(j, "VersionId"), v1);
    done(j);
    j = ok(f, "UpdateSecret", "{\"SecretId\":\"s\",\"SecretString\":\"three\"}");
    snprintf(v3, sizeof(v3), "%s", str(j, "VersionId"));
    done(j);
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"s\"}");
    assert_string_equal(str(j, "SecretString"), "three");
    done(j);
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"s\",\"VersionStage\":\"AWSPREVIOUS\"}");
    assert_string_equal(str(j, "VersionId"), v2);
    done(j);
    /* v1 lost its stages but is still readable by id (deprecated version) */
    char body[300];
    snprintf(body, sizeof(body), "{\"SecretId\":\"s\",\"VersionId\":\"%s\"}", v1);
    j = ok(f, "GetSecretValue", body);
    assert_string_equal(str(j, "SecretString"), "one");
    assert_int_equal(json_array_size(json_object_get(j, "VersionStages")), 0);
    done(j);
    /* VersionId and VersionStage must agree */
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"s\",\"VersionId\":\"%s\",\"VersionStage\":\"AWSCURRENT\"}", v1);
    expect_err(f, "GetSecretValue", body, "ResourceNotFoundException");
    /* custom stage without AWSCURRENT leaves the current version alone */
    j = ok(f, "PutSecretValue",
           "{\"SecretId\":\"s\",\"SecretString\":\"pending\",\"VersionStages\":[\"AWSPENDING\"]}");
    done(j);
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"s\"}");
    assert_string_equal(str(j, "SecretString"), "three");
    done(j);
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"s\",\"VersionStage\":\"AWSPENDING\"}");
    assert_string_equal(str(j, "SecretString"), "pending");
    done(j);
    j = ok(f, "DescribeSecret", "{\"SecretId\":\"s\"}");
    assert_int_equal(json_object_size(json_object_get(j, "VersionIdsToStages")), 3);
    done(j);
    expect_err(f, "PutSecretValue", "{\"SecretId\":\"s\"}", "InvalidRequestException");
    expect_err(f, "PutSecretValue",
               "{\"SecretId\":\"s\",\"SecretString\":\"x\",\"VersionStages\":[]}",
               "InvalidParameterException");
    /* a secret created without a value has no AWSCURRENT */
    done(ok(f, "CreateSecret", "{\"Name\":\"empty\"}"));
    expect_err(f, "GetSecretValue", "{\"SecretId\":\"empty\"}", "ResourceNotFoundException");
}

static void version_cap(void **state)
{
    fx *f = *state;
    size_t n = 0;
    cache_secret s;
    done(ok(f, "CreateSecret", "{\"Name\":\"many\",\"SecretString\":\"0\"}"));
    for (int i = 1; i <= CACHE_VERSIONS_MAX + 5; i++) {
        char b[100];
        snprintf(b, sizeof(b), "{\"SecretId\":\"many\",\"SecretString\":\"%d\"}", i);
        done(ok(f, "PutSecretValue", b));
    }
    assert_ok(cache_store_find(f->st, ACCT_A, "many", &s));
    assert_ok(cache_store_version_count(f->st, s.id, &n));
    assert_int_equal(n, CACHE_VERSIONS_MAX);
    json_t *j = ok(f, "GetSecretValue", "{\"SecretId\":\"many\",\"VersionStage\":\"AWSPREVIOUS\"}");
    assert_string_equal(str(j, "SecretString"), "104");
    done(j);
}

static void idempotency(void **state)
{
    fx *f = *state;
    const char *tok = "0123456789abcdef0123456789abcdef";
    char b[300];
    done(ok(f, "CreateSecret", "{\"Name\":\"i\",\"SecretString\":\"a\"}"));
    snprintf(b, sizeof(b),
             "{\"SecretId\":\"i\",\"SecretString\":\"b\",\"ClientRequestToken\":\"%s\"}", tok);
    json_t *j = ok(f, "PutSecretValue", b);
    assert_string_equal(str(j, "VersionId"), tok);
    done(j);
    /* same token, same value: no new version, AWSPREVIOUS does not move */
    done(ok(f, "PutSecretValue", b));
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"i\",\"VersionStage\":\"AWSPREVIOUS\"}");
    assert_string_equal(str(j, "SecretString"), "a");
    done(j);
    j = ok(f, "DescribeSecret", "{\"SecretId\":\"i\"}");
    assert_int_equal(json_object_size(json_object_get(j, "VersionIdsToStages")), 2);
    done(j);
    /* same token, other value: ResourceExistsException, nothing changes */
    snprintf(b, sizeof(b),
             "{\"SecretId\":\"i\",\"SecretString\":\"c\",\"ClientRequestToken\":\"%s\"}", tok);
    expect_err(f, "PutSecretValue", b, "ResourceExistsException");
    snprintf(b, sizeof(b),
             "{\"SecretId\":\"i\",\"SecretBinary\":\"Yg==\",\"ClientRequestToken\":\"%s\"}", tok);
    expect_err(f, "PutSecretValue", b, "ResourceExistsException"); /* "b" as binary differs */
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"i\"}");
    assert_string_equal(str(j, "SecretString"), "b");
    done(j);
    /* CreateSecret retried with the same token and value answers the same */
    snprintf(b, sizeof(b), "{\"Name\":\"i2\",\"SecretString\":\"z\",\"ClientRequestToken\":\"%s\"}",
             tok);
    j = ok(f, "CreateSecret", b);
    char arn[600];
    snprintf(arn, sizeof(arn), "%s", str(j, "ARN"));
    done(j);
    j = ok(f, "CreateSecret", b);
    assert_string_equal(str(j, "ARN"), arn);
    done(j);
    snprintf(b, sizeof(b), "{\"Name\":\"i2\",\"SecretString\":\"y\",\"ClientRequestToken\":\"%s\"}",
             tok);
    expect_err(f, "CreateSecret", b, "ResourceExistsException");
}

static void account_isolation(void **state)
{
    fx *f = *state;
    json_t *j = ok(f, "CreateSecret", "{\"Name\":\"mine\",\"SecretString\":\"a\"}");
    char b[700];
    snprintf(b, sizeof(b), "{\"SecretId\":\"%s\"}", str(j, "ARN"));
    done(j);
    expect_err_as(f, ACCT_B, "GetSecretValue", "{\"SecretId\":\"mine\"}", 400,
                  "ResourceNotFoundException");
    expect_err_as(f, ACCT_B, "GetSecretValue", b, 400, "ResourceNotFoundException");
    expect_err_as(f, ACCT_B, "DescribeSecret", b, 400, "ResourceNotFoundException");
    expect_err_as(f, ACCT_B, "DeleteSecret", b, 400, "ResourceNotFoundException");
    expect_err_as(f, ACCT_B, "PutSecretValue", "{\"SecretId\":\"mine\",\"SecretString\":\"x\"}",
                  400, "ResourceNotFoundException");
    j = call_as(f, ACCT_B, "ListSecrets", "{}", NULL);
    assert_int_equal(json_array_size(json_object_get(j, "SecretList")), 0);
    done(j);
    /* B may use the same name independently */
    j = call_as(f, ACCT_B, "CreateSecret", "{\"Name\":\"mine\",\"SecretString\":\"b\"}", NULL);
    assert_non_null(strstr(str(j, "ARN"), ACCT_B));
    done(j);
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"mine\"}");
    assert_string_equal(str(j, "SecretString"), "a");
    done(j);
}

static void delete_restore(void **state)
{
    fx *f = *state;
    done(ok(f, "CreateSecret", "{\"Name\":\"d\",\"SecretString\":\"a\"}"));
    expect_err(f, "DeleteSecret", "{\"SecretId\":\"d\",\"RecoveryWindowInDays\":6}",
               "InvalidParameterException");
    expect_err(f, "DeleteSecret", "{\"SecretId\":\"d\",\"RecoveryWindowInDays\":31}",
               "InvalidParameterException");
    expect_err(
        f, "DeleteSecret",
        "{\"SecretId\":\"d\",\"RecoveryWindowInDays\":7,\"ForceDeleteWithoutRecovery\":true}",
        "InvalidParameterException");
    json_t *j = ok(f, "DeleteSecret", "{\"SecretId\":\"d\",\"RecoveryWindowInDays\":7}");
    double when = json_number_value(json_object_get(j, "DeletionDate"));
    assert_true(when > (double)T0 / 1000 + 7 * 86400 - 10);
    done(j);
    expect_err(f, "GetSecretValue", "{\"SecretId\":\"d\"}", "InvalidRequestException");
    expect_err(f, "PutSecretValue", "{\"SecretId\":\"d\",\"SecretString\":\"b\"}",
               "InvalidRequestException");
    expect_err(f, "CreateSecret", "{\"Name\":\"d\",\"SecretString\":\"b\"}",
               "InvalidRequestException");
    expect_err(f, "DeleteSecret", "{\"SecretId\":\"d\"}", "InvalidRequestException");
    j = ok(f, "DescribeSecret", "{\"SecretId\":\"d\"}");
    assert_true(json_is_number(json_object_get(j, "DeletedDate")));
    done(j);
    j = ok(f, "ListSecrets", "{}");
    assert_int_equal(json_array_size(json_object_get(j, "SecretList")), 0);
    done(j);
    j = ok(f, "ListSecrets", "{\"IncludePlannedDeletion\":true}");
    assert_int_equal(json_array_size(json_object_get(j, "SecretList")), 1);
    done(j);
    done(ok(f, "RestoreSecret", "{\"SecretId\":\"d\"}"));
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"d\"}");
    assert_string_equal(str(j, "SecretString"), "a");
    done(j);
    /* force delete: gone now, the name is free again */
    done(ok(f, "DeleteSecret", "{\"SecretId\":\"d\",\"ForceDeleteWithoutRecovery\":true}"));
    expect_err(f, "DescribeSecret", "{\"SecretId\":\"d\"}", "ResourceNotFoundException");
    done(ok(f, "CreateSecret", "{\"Name\":\"d\",\"SecretString\":\"new\"}"));
    /* the recovery window ends: the secret is gone */
    done(ok(f, "DeleteSecret", "{\"SecretId\":\"d\",\"RecoveryWindowInDays\":7}"));
    f->now += (int64_t)8 * 86400 * 1000;
    expect_err(f, "DescribeSecret", "{\"SecretId\":\"d\"}", "ResourceNotFoundException");
    expect_err(f, "RestoreSecret", "{\"SecretId\":\"d\"}", "ResourceNotFoundException");
    done(ok(f, "CreateSecret", "{\"Name\":\"d\"}"));
}

static void tags_ops(void **state)
{
    fx *f = *state;
    done(ok(f, "CreateSecret", "{\"Name\":\"t\",\"Tags\":[{\"Key\":\"a\",\"Value\":\"1\"}]}"));
    done(ok(f, "TagResource",
            "{\"SecretId\":\"t\",\"Tags\":[{\"Key\":\"b\",\"Value\":\"2\"},{\"Key\":\"a\","
            "\"Value\":\"9\"}]}"));
    json_t *j = ok(f, "DescribeSecret", "{\"SecretId\":\"t\"}");
    json_t *tags = json_object_get(j, "Tags");
    assert_int_equal(json_array_size(tags), 2);
    assert_string_equal(str(json_array_get(tags, 0), "Value"), "9");
    done(j);
    done(ok(f, "UntagResource", "{\"SecretId\":\"t\",\"TagKeys\":[\"a\",\"zzz\"]}"));
    j = ok(f, "DescribeSecret", "{\"SecretId\":\"t\"}");
    assert_int_equal(json_array_size(json_object_get(j, "Tags")), 1);
    done(j);
    expect_err(f, "TagResource", "{\"SecretId\":\"t\"}", "InvalidParameterException");
    expect_err(f, "UntagResource", "{\"SecretId\":\"t\",\"TagKeys\":\"a\"}",
               "InvalidParameterException");
    expect_err(f, "TagResource", "{\"SecretId\":\"zz\",\"Tags\":[]}", "ResourceNotFoundException");
}

static size_t list_count(fx *f, const char *body)
{
    json_t *j = ok(f, "ListSecrets", body);
    size_t n = json_array_size(json_object_get(j, "SecretList"));
    done(j);
    return n;
}

static void filters(void **state)
{
    fx *f = *state;
    done(ok(f, "CreateSecret",
            "{\"Name\":\"prod/db\",\"Description\":\"Main Database\","
            "\"Tags\":[{\"Key\":\"owner\",\"Value\":\"keybridge\"}]}"));
    done(ok(f, "CreateSecret",
            "{\"Name\":\"prod/api\",\"Tags\":[{\"Key\":\"env\",\"Value\":\"prod\"}]}"));
    done(ok(f, "CreateSecret", "{\"Name\":\"dev/db\",\"Description\":\"dev database\"}"));
    assert_int_equal(list_count(f, "{}"), 3);
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"name\",\"Values\":[\"prod/\"]}]}"), 2);
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"name\",\"Values\":[\"Prod/\"]}]}"), 0);
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"name\",\"Values\":[\"!prod/\"]}]}"),
                     1);
    assert_int_equal(
        list_count(f, "{\"Filters\":[{\"Key\":\"name\",\"Values\":[\"dev\",\"prod/a\"]}]}"), 2);
    assert_int_equal(
        list_count(f, "{\"Filters\":[{\"Key\":\"description\",\"Values\":[\"main\"]}]}"), 1);
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"tag-key\",\"Values\":[\"own\"]}]}"),
                     1);
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"tag-key\",\"Values\":[\"!own\"]}]}"),
                     2);
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"tag-value\",\"Values\":[\"keyb\"]}]}"),
                     1);
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"tag-value\",\"Values\":[\"Keyb\"]}]}"),
                     0);
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"all\",\"Values\":[\"DATABASE\"]}]}"),
                     2);
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"all\",\"Values\":[\"db\"]}]}"), 2);
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"all\",\"Values\":[\"prod\"]}]}"), 2);
    /* filters AND */
    assert_int_equal(list_count(f, "{\"Filters\":[{\"Key\":\"name\",\"Values\":[\"prod\"]},"
                                   "{\"Key\":\"tag-key\",\"Values\":[\"env\"]}]}"),
                     1);
    assert_int_equal(
        list_count(f, "{\"Filters\":[{\"Key\":\"primary-region\",\"Values\":[\"us\"]}]}"), 0);
    /* Tags are in every entry; sort order */
    json_t *j = ok(f, "ListSecrets", "{\"SortOrder\":\"desc\"}");
    json_t *l = json_object_get(j, "SecretList");
    assert_string_equal(str(json_array_get(l, 0), "Name"), "dev/db");
    for (size_t i = 0; i < json_array_size(l); i++) {
        assert_true(json_is_array(json_object_get(json_array_get(l, i), "Tags")));
        assert_true(
            json_is_object(json_object_get(json_array_get(l, i), "SecretVersionsToStages")));
    }
    done(j);
    j = ok(f, "ListSecrets", "{\"SortBy\":\"name\"}");
    assert_string_equal(str(json_array_get(json_object_get(j, "SecretList"), 0), "Name"), "dev/db");
    done(j);
}

static void pagination(void **state)
{
    fx *f = *state;
    /* b holds a request with a whole token in it: room for tok plus the JSON around it */
    char tok[200], b[sizeof(tok) + 64];
    size_t total = 0;
    int pages = 0;
    for (int i = 0; i < 205; i++) {
        snprintf(b, sizeof(b), "{\"Name\":\"p%03d\"}", i);
        done(ok(f, "CreateSecret", b));
    }
    tok[0] = '\0';
    do {
        if (tok[0])
            snprintf(b, sizeof(b), "{\"MaxResults\":100,\"NextToken\":\"%s\"}", tok);
        else
            snprintf(b, sizeof(b), "{\"MaxResults\":100}");
        json_t *j = ok(f, "ListSecrets", b);
        json_t *l = json_object_get(j, "SecretList");
        if (pages == 0)
            assert_string_equal(str(json_array_get(l, 0), "Name"), "p000");
        if (pages == 2)
            assert_string_equal(str(json_array_get(l, 0), "Name"), "p200");
        total += json_array_size(l);
        const char *n = json_string_value(json_object_get(j, "NextToken"));
        assert_true(strlen(n ? n : "") < sizeof(tok));
        snprintf(tok, sizeof(tok), "%s", n ? n : "");
        done(j);
        pages++;
    } while (tok[0]);
    assert_int_equal(total, 205);
    assert_int_equal(pages, 3);
    /* default page size is 100 */
    json_t *j = ok(f, "ListSecrets", "{}");
    assert_int_equal(json_array_size(json_object_get(j, "SecretList")), 100);
    assert_true(strlen(str(j, "NextToken")) < sizeof(tok));
    snprintf(tok, sizeof(tok), "%s", str(j, "NextToken"));
    done(j);
    /* a token is bound to its query and account, and cannot be edited */
    snprintf(b, sizeof(b), "{\"NextToken\":\"%s\",\"SortOrder\":\"desc\"}", tok);
    expect_err(f, "ListSecrets", b, "InvalidNextTokenException");
    snprintf(b, sizeof(b), "{\"NextToken\":\"%s\"}", tok);
    expect_err_as(f, ACCT_B, "ListSecrets", b, 400, "InvalidNextTokenException");
    tok[5] = tok[5] == 'A' ? 'B' : 'A';
    snprintf(b, sizeof(b), "{\"NextToken\":\"%s\"}", tok);
    expect_err(f, "ListSecrets", b, "InvalidNextTokenException");
    expect_err(f, "ListSecrets", "{\"NextToken\":\"garbage\"}", "InvalidNextTokenException");
}

static void batch_get(void **state)
{
    fx *f = *state;
    done(ok(
        f, "CreateSecret",
        "{\"Name\":\"b1\",\"SecretString\":\"one\",\"Tags\":[{\"Key\":\"g\",\"Value\":\"x\"}]}"));
    done(ok(
        f, "CreateSecret",
        "{\"Name\":\"b2\",\"SecretBinary\":\"AQID\",\"Tags\":[{\"Key\":\"g\",\"Value\":\"x\"}]}"));
    done(ok(f, "CreateSecret", "{\"Name\":\"b3\"}"));
    json_t *j = ok(f, "BatchGetSecretValue", "{\"SecretIdList\":[\"b1\",\"b2\",\"nope\",\"b3\"]}");
    json_t *v = json_object_get(j, "SecretValues"), *e = json_object_get(j, "Errors");
    assert_int_equal(json_array_size(v), 2);
    assert_string_equal(str(json_array_get(v, 0), "SecretString"), "one");
    assert_string_equal(str(json_array_get(v, 1), "SecretBinary"), "AQID");
    assert_int_equal(json_array_size(e), 2);
    assert_string_equal(str(json_array_get(e, 0), "SecretId"), "nope");
    assert_string_equal(str(json_array_get(e, 0), "ErrorCode"), "ResourceNotFoundException");
    done(j);
    j = ok(f, "BatchGetSecretValue",
           "{\"Filters\":[{\"Key\":\"tag-key\",\"Values\":[\"g\"]}],\"MaxResults\":1}");
    assert_int_equal(json_array_size(json_object_get(j, "SecretValues")), 1);
    assert_non_null(json_object_get(j, "NextToken"));
    done(j);
    expect_err(f, "BatchGetSecretValue", "{}", "InvalidParameterException");
    expect_err(f, "BatchGetSecretValue",
               "{\"SecretIdList\":[\"b1\"],\"Filters\":[{\"Key\":\"name\",\"Values\":[\"b\"]}]}",
               "InvalidParameterException");
    expect_err(f, "BatchGetSecretValue", "{\"SecretIdList\":[]}", "InvalidParameterException");
    expect_err(f, "BatchGetSecretValue",
               "{\"SecretIdList\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\","
               "\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\",\"18\",\"19\",\"20\",\"21\"]}",
               "InvalidParameterException");
}

static void persistence_and_tamper(void **state)
{
    fx *f = *state;
    done(ok(f, "CreateSecret", "{\"Name\":\"keep\",\"SecretString\":\"durable\"}"));
    close_store(f);
    open_store(f);
    json_t *j = ok(f, "GetSecretValue", "{\"SecretId\":\"keep\"}");
    assert_string_equal(str(j, "SecretString"), "durable");
    done(j);
    /* plaintext is not in the database file */
    {
        kb_dbuf b;
        kb_dbuf_init(&b, 1 << 24);
        assert_ok(kb_file_read(f->db, b.max, &b));
        assert_null(memmem(b.p, b.len, "durable", 7));
        kb_dbuf_free(&b);
    }
    /* a sealed value bound to another version id does not open */
    cache_secret s;
    int bin;
    kb_secret *v = NULL;
    char vid[80];
    assert_ok(cache_store_find(f->st, ACCT_A, "keep", &s));
    assert_ok(cache_store_stage_get(f->st, s.id, "AWSCURRENT", vid));
    assert_ok(cache_store_version_read(f->st, &s, vid, &bin, &v, NULL));
    kb_secret_free(v);
    snprintf(s.arn, sizeof(s.arn),
             "arn:aws:secretsmanager:us-east-1:" ACCT_A ":secret:other-abcdef");
    assert_kb(cache_store_version_read(f->st, &s, vid, &bin, &v, NULL), KB_ERR_INTEGRITY);
    assert_null(v);
}

/* Walk every page of a ListSecrets query (MaxResults 7), appending names to out (space
 * separated); between the first and second page, run `between` if given. Returns the pages. */
static int walk_pages(fx *f, const char *query_members, char *out, size_t cap,
                      void (*between)(fx *f))
{
    char b[1024], tok[800] = "";
    int pages = 0;
    out[0] = '\0';
    do {
        snprintf(b, sizeof(b), "{\"MaxResults\":7%s%s%s%s%s}", query_members[0] ? "," : "",
                 query_members, tok[0] ? ",\"NextToken\":\"" : "", tok, tok[0] ? "\"" : "");
        json_t *j = ok(f, "ListSecrets", b);
        json_t *l = json_object_get(j, "SecretList"), *e;
        size_t i;
        json_array_foreach(l, i, e)
        {
            size_t n = strlen(out);
            snprintf(out + n, cap - n, "%s ", str(e, "Name"));
        }
        const char *nt = json_string_value(json_object_get(j, "NextToken"));
        assert_true(nt == NULL || strlen(nt) < sizeof(tok));
        snprintf(tok, sizeof(tok), "%s", nt ? nt : "");
        done(j);
        if (pages++ == 0 && between)
            between(f);
    } while (tok[0]);
    return pages;
}

static void drop_k05_add_k99(fx *f)
{
    done(ok(f, "DeleteSecret", "{\"SecretId\":\"k05\",\"ForceDeleteWithoutRecovery\":true}"));
    done(ok(f, "CreateSecret", "{\"Name\":\"k99\"}"));
    done(ok(f, "CreateSecret", "{\"Name\":\"a00\"}"));
}

/* NextToken is a key (sort value, id), not an offset: pages resume after the last entry
 * returned even when it is deleted, inserts do not shift entries, every order works, and only
 * tokens the server wrote are accepted. */
static void pagination_keyset(void **state)
{
    fx *f = *state;
    char names[2048], b[1200];
    for (int i = 0; i < 20; i++) {
        snprintf(b, sizeof(b), "{\"Name\":\"k%02d\"}", (i * 7) % 20); /* created out of order */
        done(ok(f, "CreateSecret", b));
    }
    assert_int_equal(walk_pages(f, "\"SortBy\":\"name\"", names, sizeof(names), NULL), 3);
    assert_string_equal(names, "k00 k01 k02 k03 k04 k05 k06 k07 k08 k09 k10 k11 k12 k13 k14 k15 "
                               "k16 k17 k18 k19 ");
    assert_int_equal(
        walk_pages(f, "\"SortBy\":\"name\",\"SortOrder\":\"desc\"", names, sizeof(names), NULL), 3);
    assert_string_equal(names, "k19 k18 k17 k16 k15 k14 k13 k12 k11 k10 k09 k08 k07 k06 k05 k04 "
                               "k03 k02 k01 k00 ");
    /* created order, 7 a page: after page 1, k05 (due on page 3) is dropped and k99, a00 are
     * created; they come last, nothing is repeated or lost (21 entries: 3 pages) */
    assert_int_equal(walk_pages(f, "", names, sizeof(names), drop_k05_add_k99), 3);
    assert_string_equal(names, "k00 k07 k14 k01 k08 k15 k02 k09 k16 k03 k10 k17 k04 k11 k18 k12 "
                               "k19 k06 k13 k99 a00 ");
    /* the entry a page ended on is deleted before the next page is asked for */
    {
        json_t *j = ok(f, "ListSecrets", "{\"MaxResults\":2,\"SortBy\":\"name\"}");
        char tok[800];
        assert_string_equal(str(json_array_get(json_object_get(j, "SecretList"), 1), "Name"),
                            "k00");
        snprintf(tok, sizeof(tok), "%s", str(j, "NextToken"));
        done(j);
        done(ok(f, "DeleteSecret", "{\"SecretId\":\"k00\",\"ForceDeleteWithoutRecovery\":true}"));
        snprintf(b, sizeof(b), "{\"MaxResults\":2,\"SortBy\":\"name\",\"NextToken\":\"%s\"}", tok);
        j = ok(f, "ListSecrets", b);
        assert_string_equal(str(json_array_get(json_object_get(j, "SecretList"), 0), "Name"),
                            "k01");
        done(j);
        /* edited, truncated, padded, non-canonical, or bound to another order: refused */
        size_t n = strlen(tok);
        char t2[800];
        snprintf(t2, sizeof(t2), "%s", tok);
        t2[n / 2] = t2[n / 2] == 'A' ? 'B' : 'A';
        snprintf(b, sizeof(b), "{\"SortBy\":\"name\",\"NextToken\":\"%s\"}", t2);
        expect_err(f, "ListSecrets", b, "InvalidNextTokenException");
        snprintf(b, sizeof(b), "{\"SortBy\":\"name\",\"NextToken\":\"%.*s\"}", (int)n - 4, tok);
        expect_err(f, "ListSecrets", b, "InvalidNextTokenException");
        snprintf(b, sizeof(b), "{\"SortBy\":\"name\",\"NextToken\":\"%s=\"}", tok);
        expect_err(f, "ListSecrets", b, "InvalidNextTokenException");
        snprintf(b, sizeof(b), "{\"SortBy\":\"name\",\"NextToken\":\"%sA\"}", tok);
        expect_err(f, "ListSecrets", b, "InvalidNextTokenException");
        snprintf(b, sizeof(b), "{\"NextToken\":\"%s\"}", tok);
        expect_err(f, "ListSecrets", b, "InvalidNextTokenException");
        expect_err(f, "ListSecrets", "{\"NextToken\":\"AgAAAAAAAAAB\"}",
                   "InvalidNextTokenException");
    }
}

/* Reads without a locked mapping each (version_peek into the store's scratch buffer), reads in
 * a read transaction that keeps its bookkeeping, tags loaded only when needed, one process per
 * store (locking_mode=EXCLUSIVE), and cache_unseal_to's bounds. */
static void reads_and_scratch(void **state)
{
    fx *f = *state;
    char b[256], vid[CACHE_VERSION_ID_MAX + 1];
    const uint8_t *v = (const uint8_t *)"x";
    size_t vlen = 99, i;
    int bin = -1;
    int64_t created = 0;
    cache_secret s;
    json_t *j, *l;

    /* peek: the value, then wiped by release; bound to the ARN; unknown version */
    done(ok(f, "CreateSecret", "{\"Name\":\"pk\",\"SecretString\":\"peek-value\"}"));
    assert_ok(cache_store_find(f->st, ACCT_A, "pk", &s));
    assert_ok(cache_store_stage_get(f->st, s.id, "AWSCURRENT", vid));
    assert_ok(cache_store_version_peek(f->st, &s, vid, &bin, &v, &vlen, &created));
    assert_int_equal(vlen, 10);
    assert_memory_equal(v, "peek-value", 10);
    assert_int_equal(bin, 0);
    assert_true(created >= T0 && created <= f->now);
    cache_store_peek_release(f->st);
    for (i = 0; i < 10; i++)
        assert_int_equal(v[i], 0);
    assert_kb(cache_store_version_peek(f->st, &s, "no-such-version", &bin, &v, &vlen, NULL),
              KB_ERR_NOT_FOUND);
    assert_null(v);
    assert_int_equal(vlen, 0);
    snprintf(s.arn, sizeof(s.arn), "arn:aws:secretsmanager:us-east-1:" ACCT_A ":secret:pk-zzzzzz");
    assert_kb(cache_store_version_peek(f->st, &s, vid, &bin, &v, &vlen, NULL), KB_ERR_INTEGRITY);
    assert_null(v);
    assert_int_equal(vlen, 0);
    /* GetSecretValue (a read transaction now) still answers and records LastAccessedDate */
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"pk\"}");
    assert_string_equal(str(j, "SecretString"), "peek-value");
    done(j);
    j = ok(f, "DescribeSecret", "{\"SecretId\":\"pk\"}");
    assert_true(json_is_number(json_object_get(j, "LastAccessedDate")));
    done(j);

    /* a failing read still commits its bookkeeping: the secret past its window is dropped */
    done(ok(f, "CreateSecret", "{\"Name\":\"gone\"}"));
    done(ok(f, "DeleteSecret", "{\"SecretId\":\"gone\",\"RecoveryWindowInDays\":7}"));
    f->now += (int64_t)8 * 86400 * 1000;
    assert_ok(cache_store_find(f->st, ACCT_A, "gone", &s));
    expect_err(f, "GetSecretValue", "{\"SecretId\":\"gone\"}", "ResourceNotFoundException");
    assert_kb(cache_store_find(f->st, ACCT_A, "gone", &s), KB_ERR_NOT_FOUND);

    /* tag filters across pages; unfiltered pages still carry every entry's tags */
    for (i = 0; i < 150; i++) {
        snprintf(b, sizeof(b), "{\"Name\":\"t%03zu\",\"Tags\":[{\"Key\":\"k\",\"Value\":\"%s\"}]}",
                 i, i % 2 ? "odd" : "even");
        done(ok(f, "CreateSecret", b));
    }
    j = ok(f, "ListSecrets",
           "{\"MaxResults\":50,\"Filters\":[{\"Key\":\"tag-value\",\"Values\":[\"even\"]}]}");
    l = json_object_get(j, "SecretList");
    assert_int_equal(json_array_size(l), 50);
    assert_string_equal(str(json_array_get(l, 49), "Name"), "t098");
    snprintf(b, sizeof(b),
             "{\"MaxResults\":50,\"Filters\":[{\"Key\":\"tag-value\",\"Values\":[\"even\"]}],"
             "\"NextToken\":\"%s\"}",
             str(j, "NextToken"));
    done(j);
    j = ok(f, "ListSecrets", b);
    l = json_object_get(j, "SecretList");
    assert_int_equal(json_array_size(l), 25);
    assert_string_equal(str(json_array_get(l, 0), "Name"), "t100");
    assert_null(json_object_get(j, "NextToken"));
    done(j);
    j = ok(f, "ListSecrets", "{\"MaxResults\":100}");
    l = json_object_get(j, "SecretList");
    assert_int_equal(json_array_size(l), 100);
    assert_string_equal(str(json_array_get(l, 1), "Name"), "t000");
    assert_int_equal(json_array_size(json_object_get(json_array_get(l, 1), "Tags")), 1);
    snprintf(b, sizeof(b), "{\"MaxResults\":100,\"NextToken\":\"%s\"}", str(j, "NextToken"));
    done(j);
    j = ok(f, "ListSecrets", b);
    l = json_object_get(j, "SecretList");
    assert_int_equal(json_array_size(l), 51);
    assert_string_equal(str(json_array_get(l, 50), "Name"), "t149");
    assert_string_equal(
        str(json_array_get(json_object_get(json_array_get(l, 50), "Tags"), 0), "Value"), "odd");
    done(j);

    /* one process per store: a second open of the same file fails (after the busy timeout) */
    expect_open_fails(f, KB_ERR_DB);
}

static void unseal_to_bounds(void **state)
{
    kb_secret *key = NULL;
    kb_dbuf blob;
    uint8_t out[16];
    size_t n = 99;
    (void)state;
    assert_ok(kb_secret_new(CACHE_KEY_LEN, &key));
    memset(kb_secret_data(key), 7, CACHE_KEY_LEN);
    kb_dbuf_init(&blob, 4096);
    assert_ok(cache_seal(key, ACCT_A, "arn:x", "v1", (const uint8_t *)"hello", 5, &blob));
    assert_kb(cache_unseal_to(key, ACCT_A, "arn:x", "v1", blob.p, blob.len, out, 4, &n),
              KB_ERR_TOO_LARGE);
    assert_int_equal(n, 0);
    assert_ok(cache_unseal_to(key, ACCT_A, "arn:x", "v1", blob.p, blob.len, out, 5, &n));
    assert_int_equal(n, 5);
    assert_memory_equal(out, "hello", 5);
    /* wrong binding, flipped ciphertext byte, truncated blob: nothing of the plaintext left */
    assert_kb(cache_unseal_to(key, ACCT_A, "arn:x", "v2", blob.p, blob.len, out, sizeof(out), &n),
              KB_ERR_INTEGRITY);
    assert_int_equal(n, 0);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(out[i], 0);
    blob.p[CACHE_SEAL_NONCE_LEN] ^= 1;
    assert_kb(cache_unseal_to(key, ACCT_A, "arn:x", "v1", blob.p, blob.len, out, sizeof(out), &n),
              KB_ERR_INTEGRITY);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(out[i], 0);
    assert_kb(cache_unseal_to(key, ACCT_A, "arn:x", "v1", blob.p, CACHE_SEAL_OVERHEAD - 1, out,
                              sizeof(out), &n),
              KB_ERR_INTEGRITY);
    assert_kb(cache_unseal_to(key, ACCT_A, "arn:x", "v1", blob.p, blob.len, NULL, 5, &n),
              KB_ERR_NULL);
    kb_dbuf_free(&blob);
    kb_secret_free(key);
}

/* ------------------------------------------------------------------ HTTP + SigV4 */

typedef struct {
    kb_sigv4_header h[8];
    size_t n;
    char auth[1024];
    char date[17];
    char target[128];
} signed_req;

static void sign(signed_req *s, const char *akid, const char *secret, const char *target,
                 const char *body, time_t when, int sign_target)
{
    kb_secret *k = NULL;
    kb_dbuf a;
    snprintf(s->target, sizeof(s->target), "secretsmanager.%s", target);
    s->n = 0;
    s->h[s->n++] = (kb_sigv4_header){"Host", 4, "127.0.0.1:4566", 14};
    s->h[s->n++] = (kb_sigv4_header){"Content-Type", 12, "application/x-amz-json-1.1", 26};
    if (sign_target)
        s->h[s->n++] = (kb_sigv4_header){"X-Amz-Target", 12, s->target, strlen(s->target)};
    kb_sigv4_request r = {.method = "POST",
                          .path = "/",
                          .query = "",
                          .headers = s->h,
                          .n_headers = s->n,
                          .body = (const uint8_t *)body,
                          .body_len = strlen(body)};
    assert_ok(kb_secret_from(secret, strlen(secret), &k));
    kb_sigv4_params p = {.access_key_id = akid,
                         .secret_key = k,
                         .region = "us-east-1",
                         .service = "secretsmanager",
                         .now = when,
                         .normalize_path = 1};
    kb_dbuf_init(&a, 1024);
    assert_ok(kb_sigv4_sign(&r, &p, &a, s->date));
    snprintf(s->auth, sizeof(s->auth), "%s", kb_dbuf_str(&a));
    kb_dbuf_free(&a);
    kb_secret_free(k);
    if (!sign_target)
        s->h[s->n++] = (kb_sigv4_header){"X-Amz-Target", 12, s->target, strlen(s->target)};
    s->h[s->n++] = (kb_sigv4_header){"X-Amz-Date", 10, s->date, 16};
    s->h[s->n++] = (kb_sigv4_header){"Authorization", 13, s->auth, strlen(s->auth)};
}

static json_t *send_req(fx *f, signed_req *s, const char *body, int64_t now_ms, int *status)
{
    cache_response r;
    json_t *j = NULL;
    cache_request q = {.method = "POST",
                       .path = "/",
                       .query = "",
                       .headers = s->h,
                       .n_headers = s->n,
                       .body = (const uint8_t *)body,
                       .body_len = strlen(body),
                       .now_ms = now_ms};
    assert_ok(cache_api_handle(f->api, &q, &r));
    assert_int_equal(strlen(r.request_id), 36);
    assert_ok(kb_json_parse_flags(r.body, r.body_len, 1 << 22, KB_JSON_ALLOW_NUL, &j, NULL, 0));
    *status = r.status;
    cache_response_free(&r);
    return j;
}

static void expect_http(fx *f, signed_req *s, const char *body, int64_t now_ms, int status,
                        const char *type)
{
    int st;
    json_t *j = send_req(f, s, body, now_ms, &st);
    const char *t = json_string_value(json_object_get(j, "__type"));
    if (st != status || (type && (t == NULL || strcmp(t, type) != 0)))
        fail_msg("got %d %s, want %d %s", st, t ? t : "-", status, type ? type : "-");
    json_decref(j);
}

static void sigv4_auth(void **state)
{
    fx *f = *state;
    signed_req s;
    time_t now = (time_t)(T0 / 1000);
    const char *body = "{\"Name\":\"signed\",\"SecretString\":\"v\"}";
    int64_t now_ms = (int64_t)now * 1000;

    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "CreateSecret", body, now, 1);
    expect_http(f, &s, body, now_ms, 200, NULL);
    /* captured request replayed as another operation: the target is signed */
    s.h[2].value = "secretsmanager.DeleteSecret";
    s.h[2].value_len = strlen(s.h[2].value);
    expect_http(f, &s, body, now_ms, 400, "InvalidSignatureException");
    /* body tampered */
    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "ListSecrets", "{}", now, 1);
    expect_http(f, &s, "{ }", now_ms, 400, "InvalidSignatureException");
    /* wrong secret key */
    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "wrong", "ListSecrets", "{}", now, 1);
    expect_http(f, &s, "{}", now_ms, 400, "InvalidSignatureException");
    /* unknown key id */
    sign(&s, "AKIDZZZZZZZZZZZZZZZZ", "secretA", "ListSecrets", "{}", now, 1);
    expect_http(f, &s, "{}", now_ms, 400, "UnrecognizedClientException");
    /* stale and future dates */
    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "ListSecrets", "{}", now - 901, 1);
    expect_http(f, &s, "{}", now_ms, 400, "InvalidSignatureException");
    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "ListSecrets", "{}", now + 901, 1);
    expect_http(f, &s, "{}", now_ms, 400, "InvalidSignatureException");
    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "ListSecrets", "{}", now - 899, 1);
    expect_http(f, &s, "{}", now_ms, 200, NULL);
    /* x-amz-target not signed */
    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "ListSecrets", "{}", now, 0);
    expect_http(f, &s, "{}", now_ms, 400, NULL);
    /* unsigned */
    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "ListSecrets", "{}", now, 1);
    s.n--;
    expect_http(f, &s, "{}", now_ms, 400, "MissingAuthenticationTokenException");
    /* malformed Authorization */
    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "ListSecrets", "{}", now, 1);
    s.h[s.n - 1].value = "AWS4-HMAC-SHA256 garbage";
    s.h[s.n - 1].value_len = strlen(s.h[s.n - 1].value);
    expect_http(f, &s, "{}", now_ms, 400, "IncompleteSignatureException");
    /* unknown target, correctly signed */
    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "Frobnicate", "{}", now, 1);
    expect_http(f, &s, "{}", now_ms, 400, "UnknownOperationException");
    /* account B signs: cannot see A's secret */
    body = "{\"SecretId\":\"signed\"}";
    sign(&s, "AKIDBBBBBBBBBBBBBBBB", "secretB", "GetSecretValue", body, now, 1);
    expect_http(f, &s, body, now_ms, 400, "ResourceNotFoundException");
    sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "GetSecretValue", body, now, 1);
    expect_http(f, &s, body, now_ms, 200, NULL);
    /* a large body (over 64 KiB) signs and verifies; the value itself is over the limit */
    {
        char *big = big_json("{\"Name\":\"large\",\"SecretString\":\"", 70000, 'x', "\"}");
        sign(&s, "AKIDAAAAAAAAAAAAAAAA", "secretA", "CreateSecret", big, now, 1);
        expect_http(f, &s, big, now_ms, 400, "InvalidParameterException");
        free(big);
    }
    /* no state change from any refused request */
    json_t *l = ok(f, "ListSecrets", "{}");
    assert_int_equal(json_array_size(json_object_get(l, "SecretList")), 1);
    done(l);
}

static void creds_file(void **state)
{
    (void)state;
    cache_creds *c = NULL;
    size_t bad = 0;
    const kb_secret *k;
    const char *acct;
    assert_ok(cache_creds_parse(CREDS, strlen(CREDS), &c, &bad));
    assert_int_equal(cache_creds_count(c), 2);
    assert_ok(cache_creds_lookup(c, "AKIDBBBBBBBBBBBBBBBB", &k, &acct));
    assert_string_equal(acct, ACCT_B);
    assert_int_equal(kb_secret_len(k), 7);
    assert_kb(cache_creds_lookup(c, "AKIDCCCCCCCCCCCCCCCC", &k, &acct), KB_ERR_NOT_FOUND);
    cache_creds_free(c);
    static const char *const bads[] = {
        "AKIDAAAAAAAAAAAAAAAA secret 12345678901\n",        /* short account */
        "AKIDAAAAAAAAAAAAAAAA secret 123456789012 extra\n", /* 4 fields */
        "akid-lower-case-xx secret 123456789012\n",         /* bad key id */
        "AKID secret 123456789012\n",                       /* key id too short */
        "AKIDAAAAAAAAAAAAAAAA secret 123456789012\nAKIDAAAAAAAAAAAAAAAA s2 123456789012\n",
        "# nothing\n",
    };
    for (size_t i = 0; i < KB_ARRAY_LEN(bads); i++) {
        c = NULL;
        assert_kb(cache_creds_parse(bads[i], strlen(bads[i]), &c, &bad), KB_ERR_INVALID);
        assert_null(c);
    }
    /* the file must be private */
    char *d = kbtest_tmpdir(), p[600];
    snprintf(p, sizeof(p), "%s/creds", d);
    FILE *fp = fopen(p, "w");
    fputs(CREDS, fp);
    fclose(fp);
    chmod(p, 0644);
    assert_kb(cache_creds_load(p, &c, &bad), KB_ERR_CONFIG);
    chmod(p, 0600);
    assert_ok(cache_creds_load(p, &c, &bad));
    cache_creds_free(c);
    unlink(p);
    rmdir(d);
    free(d);
}

static void key_file(void **state)
{
    (void)state;
    char *d = kbtest_tmpdir(), p[600];
    kb_secret *k = NULL;
    struct stat sb;
    snprintf(p, sizeof(p), "%s/key", d);
    assert_ok(cache_key_generate(p));
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_kb(cache_key_generate(p), KB_ERR_EXISTS);
    assert_ok(cache_key_load(p, &k));
    assert_int_equal(kb_secret_len(k), CACHE_KEY_LEN);
    kb_secret_free(k);
    chmod(p, 0640);
    assert_kb(cache_key_load(p, &k), KB_ERR_CONFIG);
    FILE *fp = fopen(p, "w");
    fputs("zz\n", fp);
    fclose(fp);
    chmod(p, 0600);
    assert_kb(cache_key_load(p, &k), KB_ERR_INVALID);
    unlink(p);
    rmdir(d);
    free(d);
}

/* ---- operations added for issue 14: versions, stage moves, passwords, policies, refusals ---- */

static int has_stage(const json_t *entry, const char *stage)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(entry, "VersionStages"), i, v)
    {
        if (strcmp(json_string_value(v), stage) == 0)
            return 1;
    }
    return 0;
}

static void list_version_ids(void **state)
{
    fx *f = *state;
    char vids[5][80], body[400];
    json_t *j, *l;
    for (int i = 0; i < 5; i++) {
        snprintf(body, sizeof(body), "{\"%s\":\"v\",\"SecretString\":\"value %d\"}",
                 i == 0 ? "Name" : "SecretId", i);
        j = ok(f, i == 0 ? "CreateSecret" : "PutSecretValue", body);
        snprintf(vids[i], sizeof(vids[i]), "%s", str(j, "VersionId"));
        done(j);
    }
    /* Without IncludeDeprecated: only the versions with a stage (current and previous). */
    j = ok(f, "ListSecretVersionIds", "{\"SecretId\":\"v\"}");
    l = json_object_get(j, "Versions");
    assert_int_equal(json_array_size(l), 2);
    assert_string_equal(str(json_array_get(l, 0), "VersionId"), vids[4]);
    assert_true(has_stage(json_array_get(l, 0), "AWSCURRENT"));
    assert_string_equal(str(json_array_get(l, 1), "VersionId"), vids[3]);
    assert_true(has_stage(json_array_get(l, 1), "AWSPREVIOUS"));
    assert_non_null(json_object_get(json_array_get(l, 0), "CreatedDate"));
    assert_string_equal(str(j, "Name"), "v");
    assert_null(json_object_get(j, "NextToken"));
    done(j);
    /* With IncludeDeprecated, paged by 2: 5 versions newest first over 3 pages. */
    char tok[300] = "";
    int seen = 0, pages = 0;
    do {
        if (tok[0])
            snprintf(body, sizeof(body),
                     "{\"SecretId\":\"v\",\"IncludeDeprecated\":true,\"MaxResults\":2,"
                     "\"NextToken\":\"%s\"}",
                     tok);
        else
            snprintf(body, sizeof(body),
                     "{\"SecretId\":\"v\",\"IncludeDeprecated\":true,\"MaxResults\":2}");
        j = ok(f, "ListSecretVersionIds", body);
        l = json_object_get(j, "Versions");
        for (size_t i = 0; i < json_array_size(l); i++, seen++)
            assert_string_equal(str(json_array_get(l, i), "VersionId"), vids[4 - seen]);
        const char *n = json_string_value(json_object_get(j, "NextToken"));
        assert_true(strlen(n ? n : "") < sizeof(tok));
        snprintf(tok, sizeof(tok), "%s", n ? n : "");
        done(j);
        pages++;
    } while (tok[0] && pages < 10);
    assert_int_equal(seen, 5);
    assert_int_equal(pages, 3);
    /* Bad input: type, range, unknown secret, a token from another query or edited. */
    expect_err(f, "ListSecretVersionIds", "{\"SecretId\":\"v\",\"MaxResults\":0}",
               "InvalidParameterException");
    expect_err(f, "ListSecretVersionIds", "{\"SecretId\":\"v\",\"MaxResults\":101}",
               "InvalidParameterException");
    expect_err(f, "ListSecretVersionIds", "{\"SecretId\":\"v\",\"IncludeDeprecated\":\"yes\"}",
               "InvalidParameterException");
    expect_err(f, "ListSecretVersionIds", "{}", "InvalidParameterException");
    expect_err(f, "ListSecretVersionIds", "{\"SecretId\":\"nope\"}", "ResourceNotFoundException");
    j = ok(f, "ListSecretVersionIds",
           "{\"SecretId\":\"v\",\"IncludeDeprecated\":true,"
           "\"MaxResults\":1}");
    snprintf(tok, sizeof(tok), "%s", str(j, "NextToken"));
    done(j);
    snprintf(body, sizeof(body), "{\"SecretId\":\"v\",\"MaxResults\":1,\"NextToken\":\"%s\"}", tok);
    expect_err(f, "ListSecretVersionIds", body, "InvalidNextTokenException");
    done(ok(f, "CreateSecret", "{\"Name\":\"w\",\"SecretString\":\"x\"}"));
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"w\",\"IncludeDeprecated\":true,\"NextToken\":\"%s\"}", tok);
    expect_err(f, "ListSecretVersionIds", body, "InvalidNextTokenException");
    tok[3] = tok[3] == 'A' ? 'B' : 'A';
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"v\",\"IncludeDeprecated\":true,\"NextToken\":\"%s\"}", tok);
    expect_err(f, "ListSecretVersionIds", body, "InvalidNextTokenException");
    /* Another account cannot list them. */
    expect_err_as(f, ACCT_B, "ListSecretVersionIds", "{\"SecretId\":\"v\"}", 400,
                  "ResourceNotFoundException");
}

static void update_version_stage(void **state)
{
    fx *f = *state;
    char v1[80], v2[80], v3[80], body[400];
    json_t *j = ok(f, "CreateSecret", "{\"Name\":\"r\",\"SecretString\":\"one\"}");
    snprintf(v1, sizeof(v1), "%s", str(j, "VersionId"));
    done(j);
    j = ok(f, "PutSecretValue", "{\"SecretId\":\"r\",\"SecretString\":\"two\"}");
    snprintf(v2, sizeof(v2), "%s", str(j, "VersionId"));
    done(j);
    /* Roll AWSCURRENT back to v1: AWSPREVIOUS goes to v2, the version it left. */
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"r\",\"VersionStage\":\"AWSCURRENT\",\"RemoveFromVersionId\":\"%s\","
             "\"MoveToVersionId\":\"%s\"}",
             v2, v1);
    j = ok(f, "UpdateSecretVersionStage", body);
    assert_string_equal(str(j, "Name"), "r");
    assert_non_null(json_object_get(j, "ARN"));
    done(j);
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"r\"}");
    assert_string_equal(str(j, "SecretString"), "one");
    assert_string_equal(str(j, "VersionId"), v1);
    assert_int_equal(json_array_size(json_object_get(j, "VersionStages")), 1);
    done(j);
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"r\",\"VersionStage\":\"AWSPREVIOUS\"}");
    assert_string_equal(str(j, "VersionId"), v2);
    done(j);
    /* Moving a label attached elsewhere without naming where it is: refused, nothing moves. */
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"r\",\"VersionStage\":\"AWSCURRENT\",\"MoveToVersionId\":\"%s\"}", v2);
    expect_err(f, "UpdateSecretVersionStage", body, "InvalidParameterException");
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"r\",\"VersionStage\":\"AWSCURRENT\",\"RemoveFromVersionId\":\"%s\","
             "\"MoveToVersionId\":\"%s\"}",
             v2, v1);
    expect_err(f, "UpdateSecretVersionStage", body, "InvalidParameterException"); /* wrong from */
    /* AWSCURRENT can't just be removed. */
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"r\",\"VersionStage\":\"AWSCURRENT\",\"RemoveFromVersionId\":\"%s\"}",
             v1);
    expect_err(f, "UpdateSecretVersionStage", body, "InvalidParameterException");
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"r\"}");
    assert_string_equal(str(j, "VersionId"), v1);
    done(j);
    /* A custom label: attach, then remove. */
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"r\",\"VersionStage\":\"blue\",\"MoveToVersionId\":\"%s\"}", v2);
    done(ok(f, "UpdateSecretVersionStage", body));
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"r\",\"VersionStage\":\"blue\"}");
    assert_string_equal(str(j, "SecretString"), "two");
    done(j);
    done(ok(f, "UpdateSecretVersionStage", body)); /* already there: no change, no error */
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"r\",\"VersionStage\":\"blue\",\"RemoveFromVersionId\":\"%s\"}", v2);
    done(ok(f, "UpdateSecretVersionStage", body));
    expect_err(f, "GetSecretValue", "{\"SecretId\":\"r\",\"VersionStage\":\"blue\"}",
               "ResourceNotFoundException");
    /* Unknown target version, missing members, bad ids, 20-label limit. */
    expect_err(f, "UpdateSecretVersionStage",
               "{\"SecretId\":\"r\",\"VersionStage\":\"x\",\"MoveToVersionId\":"
               "\"00000000-0000-4000-8000-000000000000\"}",
               "ResourceNotFoundException");
    expect_err(f, "UpdateSecretVersionStage", "{\"SecretId\":\"r\",\"VersionStage\":\"x\"}",
               "InvalidParameterException");
    expect_err(f, "UpdateSecretVersionStage", "{\"SecretId\":\"r\"}", "InvalidParameterException");
    expect_err(f, "UpdateSecretVersionStage",
               "{\"SecretId\":\"r\",\"VersionStage\":\"x\",\"MoveToVersionId\":\"short\"}",
               "InvalidParameterException");
    j = ok(f, "PutSecretValue",
           "{\"SecretId\":\"r\",\"SecretString\":\"three\","
           "\"VersionStages\":[\"l01\",\"l02\",\"l03\",\"l04\",\"l05\",\"l06\","
           "\"l07\",\"l08\",\"l09\",\"l10\",\"l11\",\"l12\",\"l13\",\"l14\","
           "\"l15\",\"l16\",\"l17\",\"l18\",\"l19\",\"l20\"]}");
    snprintf(v3, sizeof(v3), "%s", str(j, "VersionId"));
    done(j);
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"r\",\"VersionStage\":\"l21\",\"MoveToVersionId\":\"%s\"}", v3);
    expect_err(f, "UpdateSecretVersionStage", body, "LimitExceededException");
    /* Scheduled for deletion: refused. */
    done(ok(f, "DeleteSecret", "{\"SecretId\":\"r\",\"RecoveryWindowInDays\":7}"));
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"r\",\"VersionStage\":\"blue\",\"MoveToVersionId\":\"%s\"}", v2);
    expect_err(f, "UpdateSecretVersionStage", body, "InvalidRequestException");
}

static size_t count_in(const char *s, const char *set)
{
    size_t n = 0;
    for (; *s; s++)
        n += strchr(set, *s) != NULL;
    return n;
}

static void random_password(void **state)
{
    fx *f = *state;
    static const char punct[] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    json_t *j = ok(f, "GetRandomPassword", "{}");
    const char *p = str(j, "RandomPassword");
    char first[64];
    assert_int_equal(strlen(p), 32);
    /* RequireEachIncludedType is on by default: each class appears. */
    assert_true(count_in(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") > 0);
    assert_true(count_in(p, "abcdefghijklmnopqrstuvwxyz") > 0);
    assert_true(count_in(p, "0123456789") > 0);
    assert_true(count_in(p, punct) > 0);
    assert_int_equal(count_in(p, " "), 0);
    snprintf(first, sizeof(first), "%s", p);
    done(j);
    j = ok(f, "GetRandomPassword", "{}");
    assert_string_not_equal(str(j, "RandomPassword"), first);
    done(j);
    /* Exclusions hold over many draws; length 4 with 4 required classes has one of each. */
    for (int i = 0; i < 200; i++) {
        j = ok(f, "GetRandomPassword", "{\"PasswordLength\":4}");
        p = str(j, "RandomPassword");
        assert_int_equal(strlen(p), 4);
        assert_int_equal(count_in(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), 1);
        assert_int_equal(count_in(p, "0123456789"), 1);
        done(j);
        j = ok(f, "GetRandomPassword",
               "{\"PasswordLength\":40,\"ExcludePunctuation\":true,\"ExcludeUppercase\":true,"
               "\"ExcludeCharacters\":\"aeiou01\",\"IncludeSpace\":true}");
        p = str(j, "RandomPassword");
        assert_int_equal(strlen(p), 40);
        assert_int_equal(count_in(p, punct), 0);
        assert_int_equal(count_in(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), 0);
        assert_int_equal(count_in(p, "aeiou01"), 0);
        assert_int_equal(strlen(p), count_in(p, "bcdfghjklmnpqrstvwxyz23456789 "));
        done(j);
    }
    j = ok(f, "GetRandomPassword",
           "{\"PasswordLength\":4096,\"ExcludeNumbers\":true,"
           "\"RequireEachIncludedType\":false}");
    assert_int_equal(strlen(str(j, "RandomPassword")), 4096);
    assert_int_equal(count_in(str(j, "RandomPassword"), "0123456789"), 0);
    done(j);
    expect_err(f, "GetRandomPassword", "{\"PasswordLength\":0}", "InvalidParameterException");
    expect_err(f, "GetRandomPassword", "{\"PasswordLength\":4097}", "InvalidParameterException");
    expect_err(f, "GetRandomPassword", "{\"PasswordLength\":\"8\"}", "InvalidParameterException");
    expect_err(f, "GetRandomPassword", "{\"PasswordLength\":3}", "InvalidParameterException");
    expect_err(f, "GetRandomPassword",
               "{\"ExcludeNumbers\":true,\"ExcludePunctuation\":true,\"ExcludeUppercase\":true,"
               "\"ExcludeLowercase\":true}",
               "InvalidParameterException");
    expect_err(f, "GetRandomPassword", "{\"Length\":8}", "InvalidParameterException");
}

static void resource_policies(void **state)
{
    fx *f = *state;
    static const char pol[] = "{\\\"Version\\\":\\\"2012-10-17\\\",\\\"Statement\\\":"
                              "[{\\\"Effect\\\":\\\"Deny\\\",\\\"Principal\\\":\\\"*\\\","
                              "\\\"Action\\\":\\\"secretsmanager:*\\\"}]}";
    static const char pub[] =
        "{\\\"Version\\\":\\\"2012-10-17\\\",\\\"Statement\\\":"
        "{\\\"Effect\\\":\\\"Allow\\\",\\\"Principal\\\":{\\\"AWS\\\":\\\"*\\\"},"
        "\\\"Action\\\":\\\"secretsmanager:GetSecretValue\\\"}}";
    char body[1024];
    json_t *j;
    done(ok(f, "CreateSecret", "{\"Name\":\"p\",\"SecretString\":\"x\"}"));
    j = ok(f, "GetResourcePolicy", "{\"SecretId\":\"p\"}");
    assert_null(json_object_get(j, "ResourcePolicy"));
    done(j);
    snprintf(body, sizeof(body), "{\"SecretId\":\"p\",\"ResourcePolicy\":\"%s\"}", pol);
    j = ok(f, "PutResourcePolicy", body);
    assert_string_equal(str(j, "Name"), "p");
    done(j);
    j = ok(f, "GetResourcePolicy", "{\"SecretId\":\"p\"}");
    assert_non_null(strstr(str(j, "ResourcePolicy"), "\"Effect\":\"Deny\""));
    done(j);
    /* Public policy: stored unless BlockPublicPolicy. */
    snprintf(body, sizeof(body),
             "{\"SecretId\":\"p\",\"ResourcePolicy\":\"%s\",\"BlockPublicPolicy\":true}", pub);
    expect_err(f, "PutResourcePolicy", body, "PublicPolicyException");
    j = ok(f, "GetResourcePolicy", "{\"SecretId\":\"p\"}");
    assert_non_null(strstr(str(j, "ResourcePolicy"), "Deny")); /* unchanged */
    done(j);
    /* Malformed: not JSON, no Version, no Statement, bad Effect, no Action, too long, type. */
    expect_err(f, "PutResourcePolicy", "{\"SecretId\":\"p\",\"ResourcePolicy\":\"{not json\"}",
               "MalformedPolicyDocumentException");
    expect_err(f, "PutResourcePolicy",
               "{\"SecretId\":\"p\",\"ResourcePolicy\":\"{\\\"Statement\\\":[]}\"}",
               "MalformedPolicyDocumentException");
    expect_err(f, "PutResourcePolicy",
               "{\"SecretId\":\"p\",\"ResourcePolicy\":\"{\\\"Version\\\":\\\"1\\\","
               "\\\"Statement\\\":[{\\\"Effect\\\":\\\"Maybe\\\",\\\"Action\\\":\\\"a\\\"}]}\"}",
               "MalformedPolicyDocumentException");
    expect_err(f, "PutResourcePolicy",
               "{\"SecretId\":\"p\",\"ResourcePolicy\":\"{\\\"Version\\\":\\\"1\\\","
               "\\\"Statement\\\":[{\\\"Effect\\\":\\\"Allow\\\"}]}\"}",
               "MalformedPolicyDocumentException");
    expect_err(f, "PutResourcePolicy", "{\"SecretId\":\"p\",\"ResourcePolicy\":5}",
               "InvalidParameterException");
    expect_err(f, "PutResourcePolicy", "{\"SecretId\":\"p\"}", "InvalidParameterException");
    expect_err(f, "PutResourcePolicy", "{\"SecretId\":\"nope\",\"ResourcePolicy\":\"{}\"}",
               "ResourceNotFoundException");
    {
        size_t n = 20481;
        char *big = malloc(n + 64);
        snprintf(big, n + 64, "{\"SecretId\":\"p\",\"ResourcePolicy\":\"");
        size_t o = strlen(big);
        memset(big + o, ' ', n);
        snprintf(big + o + n, 64, "\"}");
        expect_err(f, "PutResourcePolicy", big, "InvalidParameterException");
        free(big);
    }
    /* Validate: structure problems are a result, not-JSON an error; no secret needed. */
    snprintf(body, sizeof(body), "{\"ResourcePolicy\":\"%s\"}", pol);
    j = ok(f, "ValidateResourcePolicy", body);
    assert_true(json_is_true(json_object_get(j, "PolicyValidationPassed")));
    assert_int_equal(json_array_size(json_object_get(j, "ValidationErrors")), 0);
    done(j);
    j = ok(f, "ValidateResourcePolicy", "{\"ResourcePolicy\":\"{\\\"Version\\\":\\\"1\\\"}\"}");
    assert_true(json_is_false(json_object_get(j, "PolicyValidationPassed")));
    assert_int_equal(json_array_size(json_object_get(j, "ValidationErrors")), 1);
    done(j);
    expect_err(f, "ValidateResourcePolicy", "{\"ResourcePolicy\":\"[1,2\"}",
               "MalformedPolicyDocumentException");
    snprintf(body, sizeof(body), "{\"SecretId\":\"nope\",\"ResourcePolicy\":\"%s\"}", pol);
    expect_err(f, "ValidateResourcePolicy", body, "ResourceNotFoundException");
    /* Another account sees no policy and cannot change it; delete removes it. */
    expect_err_as(f, ACCT_B, "DeleteResourcePolicy", "{\"SecretId\":\"p\"}", 400,
                  "ResourceNotFoundException");
    j = ok(f, "DeleteResourcePolicy", "{\"SecretId\":\"p\"}");
    assert_string_equal(str(j, "Name"), "p");
    done(j);
    j = ok(f, "GetResourcePolicy", "{\"SecretId\":\"p\"}");
    assert_null(json_object_get(j, "ResourcePolicy"));
    done(j);
    done(ok(f, "DeleteResourcePolicy", "{\"SecretId\":\"p\"}")); /* none: still fine */
    /* The policy goes with the secret. */
    snprintf(body, sizeof(body), "{\"SecretId\":\"p\",\"ResourcePolicy\":\"%s\"}", pol);
    done(ok(f, "PutResourcePolicy", body));
    done(ok(f, "DeleteSecret", "{\"SecretId\":\"p\",\"ForceDeleteWithoutRecovery\":true}"));
    done(ok(f, "CreateSecret", "{\"Name\":\"p\",\"SecretString\":\"x\"}"));
    j = ok(f, "GetResourcePolicy", "{\"SecretId\":\"p\"}");
    assert_null(json_object_get(j, "ResourcePolicy"));
    done(j);
}

static void refused_operations(void **state)
{
    fx *f = *state;
    static const char *const ops[] = {"RotateSecret", "CancelRotateSecret",
                                      "ReplicateSecretToRegions", "RemoveRegionsFromReplication",
                                      "StopReplicationToReplica"};
    done(ok(f, "CreateSecret", "{\"Name\":\"q\",\"SecretString\":\"x\"}"));
    for (size_t i = 0; i < KB_ARRAY_LEN(ops); i++) {
        int st = 0;
        json_t *j = call_as(f, ACCT_A, ops[i], "{\"SecretId\":\"q\"}", &st);
        assert_int_equal(st, 400);
        assert_string_equal(str(j, "__type"), "InvalidRequestException");
        assert_non_null(strstr(str(j, "message"), "keybridge-cache does not support"));
        done(j);
        expect_err(f, ops[i], "{\"SecretId\":\"nope\"}", "ResourceNotFoundException");
    }
    expect_err(f, "SomethingNew", "{}", "UnknownOperationException");
}

static void nul_in_strings(void **state)
{
    fx *f = *state;
    /* \u0000 is valid JSON: kept in a SecretString, byte for byte. */
    json_t *j = ok(f, "CreateSecret", "{\"Name\":\"n\",\"SecretString\":\"a\\u0000b\"}");
    done(j);
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"n\"}");
    assert_int_equal(json_string_length(json_object_get(j, "SecretString")), 3);
    assert_memory_equal(json_string_value(json_object_get(j, "SecretString")), "a\0b", 3);
    done(j);
    done(ok(f, "PutSecretValue", "{\"SecretId\":\"n\",\"SecretString\":\"\\u0000\"}"));
    j = ok(f, "GetSecretValue", "{\"SecretId\":\"n\"}");
    assert_int_equal(json_string_length(json_object_get(j, "SecretString")), 1);
    done(j);
    /* Anywhere else it would cut a C string short: refused, nothing created or changed. */
    expect_err(f, "CreateSecret", "{\"Name\":\"m\\u0000x\",\"SecretString\":\"v\"}",
               "InvalidParameterException");
    expect_err(f, "DescribeSecret", "{\"SecretId\":\"m\"}", "ResourceNotFoundException");
    expect_err(f, "TagResource",
               "{\"SecretId\":\"n\",\"Tags\":[{\"Key\":\"k\\u0000\",\"Value\":\"v\"}]}",
               "InvalidParameterException");
    expect_err(f, "ListSecrets", "{\"Filters\":[{\"Key\":\"name\",\"Values\":[\"\\u0000\"]}]}",
               "InvalidParameterException");
    j = ok(f, "DescribeSecret", "{\"SecretId\":\"n\"}");
    assert_int_equal(json_array_size(json_object_get(j, "Tags")), 0);
    done(j);
}

/* ListSecrets writes its entries directly (no jansson tree): each must carry exactly what
 * DescribeSecret says of the same secret, member for member and value for value (dates as the
 * same doubles), for escaped text, unicode, tags, several versions with stages, accessed and
 * deleted secrets; and the page's NextToken must still work. */
static void list_matches_describe(void **state)
{
    static const char *const shared[] = {
        "ARN",         "Name", "Description", "KmsKeyId", "LastChangedDate", "LastAccessedDate",
        "DeletedDate", "Tags", "CreatedDate"};
    fx *f = *state;
    json_t *l, *list, *e;
    size_t i, n_entries = 0;
    int with_desc = 0, with_deleted = 0, with_accessed = 0;
    f->now += 123; /* dates with a fraction of a second */
    done(ok(f, "CreateSecret",
            "{\"Name\":\"esc/one\",\"SecretString\":\"v1\",\"KmsKeyId\":\"alias/k\\\"1\","
            "\"Description\":\"quote\\\" back\\\\ nl\\n tab\\t cr\\r ff\\f bs\\b ctl\\u0001"
            "\\u001f del\\u007f slash/ \\u00e9 \\ud83d\\ude00 </script>\","
            "\"Tags\":[{\"Key\":\"team\",\"Value\":\"caf\\u00e9 a b:c/d=e+f-g@h_i.j\"},"
            "{\"Key\":\"empty\",\"Value\":\"\"}]}"));
    done(ok(f, "PutSecretValue", "{\"SecretId\":\"esc/one\",\"SecretString\":\"v2\"}"));
    done(ok(f, "PutSecretValue",
            "{\"SecretId\":\"esc/one\",\"SecretString\":\"v3\","
            "\"VersionStages\":[\"green\",\"blue\"]}"));
    f->now += 377; /* LastAccessedDate keeps the day only; other dates .5 */
    done(ok(f, "GetSecretValue", "{\"SecretId\":\"esc/one\"}"));
    done(ok(f, "CreateSecret", "{\"Name\":\"plain/two\",\"SecretString\":\"x\"}"));
    done(ok(f, "CreateSecret", "{\"Name\":\"gone/three\",\"SecretString\":\"x\"}"));
    done(ok(f, "DeleteSecret", "{\"SecretId\":\"gone/three\",\"RecoveryWindowInDays\":7}"));

    l = ok(f, "ListSecrets", "{\"IncludePlannedDeletion\":true}");
    list = json_object_get(l, "SecretList");
    assert_int_equal(json_array_size(list), 3);
    assert_null(json_object_get(l, "NextToken"));
    json_array_foreach(list, i, e)
    {
        char body[4096];
        json_t *d, *ks, *kd;
        const char *k;
        json_t *v;
        snprintf(body, sizeof(body), "{\"SecretId\":\"%s\"}", str(e, "ARN"));
        d = ok(f, "DescribeSecret", body);
        for (size_t m = 0; m < KB_ARRAY_LEN(shared); m++) {
            json_t *a = json_object_get(e, shared[m]), *b = json_object_get(d, shared[m]);
            if ((a == NULL) != (b == NULL) || (a && !json_equal(a, b)))
                fail_msg("%s: member %s differs from DescribeSecret", str(e, "Name"), shared[m]);
        }
        ks = json_object_get(e, "SecretVersionsToStages");
        kd = json_object_get(d, "VersionIdsToStages");
        assert_non_null(ks);
        assert_true(json_equal(ks, kd));
        json_object_foreach(e, k, v)
        {
            size_t m;
            for (m = 0; m < KB_ARRAY_LEN(shared) && strcmp(shared[m], k) != 0; m++)
                ;
            if (m == KB_ARRAY_LEN(shared) && strcmp(k, "SecretVersionsToStages") != 0)
                fail_msg("unexpected member %s", k);
        }
        if (strcmp(str(e, "Name"), "esc/one") == 0) {
            with_desc = json_object_get(e, "Description") != NULL;
            with_accessed = json_object_get(e, "LastAccessedDate") != NULL;
            assert_int_equal(json_object_size(ks), 3); /* current, previous, green+blue */
            assert_int_equal(json_array_size(json_object_get(e, "Tags")), 2);
            assert_true(json_real_value(json_object_get(e, "CreatedDate")) ==
                        (double)(T0 + 1123) / 1000.0);
        }
        if (json_object_get(e, "DeletedDate") != NULL)
            with_deleted = 1;
        n_entries++;
        done(d);
    }
    done(l);
    assert_int_equal(n_entries, 3);
    assert_true(with_desc && with_deleted && with_accessed);

    /* A page of one: NextToken written into the direct body, and it continues the listing. */
    l = ok(f, "ListSecrets", "{\"MaxResults\":1}");
    assert_int_equal(json_array_size(json_object_get(l, "SecretList")), 1);
    {
        char body[8192];
        json_t *l2;
        snprintf(body, sizeof(body), "{\"MaxResults\":1,\"NextToken\":\"%s\"}",
                 str(l, "NextToken"));
        l2 = ok(f, "ListSecrets", body);
        assert_int_equal(json_array_size(json_object_get(l2, "SecretList")), 1);
        assert_string_not_equal(str(json_array_get(json_object_get(l2, "SecretList"), 0), "Name"),
                                str(json_array_get(json_object_get(l, "SecretList"), 0), "Name"));
        done(l2);
    }
    done(l);
    /* An empty listing is still {"SecretList":[]}. */
    l = call_as(f, ACCT_B, "ListSecrets", "{}", NULL);
    assert_non_null(json_object_get(l, "SecretList"));
    assert_int_equal(json_array_size(json_object_get(l, "SecretList")), 0);
    assert_int_equal(json_object_size(l), 1);
    done(l);
}

/* A ListSecrets page reads its tags and stages with one statement each for the whole page
 * (secrets in any id order: by name, newest first, filtered): every entry's Tags (in insertion
 * order) and SecretVersionsToStages equal DescribeSecret's, across pages of every order. */
static void list_page_tags_stages(void **state)
{
    static const char *const names[] = {"m/7", "b/2", "z/9", "a/1", "q/5", "c/3", "y/8", "d/4"};
    static const char *const queries[] = {
        "{\"MaxResults\":3}",
        "{\"MaxResults\":3,\"SortOrder\":\"desc\"}",
        "{\"MaxResults\":3,\"SortBy\":\"name\"}",
        "{\"MaxResults\":3,\"SortBy\":\"name\",\"SortOrder\":\"desc\"}",
        "{\"MaxResults\":2,\"Filters\":[{\"Key\":\"tag-key\",\"Values\":[\"k\"]}]}",
        "{\"MaxResults\":100,\"SortBy\":\"name\"}",
        "{\"MaxResults\":3,\"SortBy\":\"last-changed-date\"}",
        "{\"MaxResults\":3,\"SortBy\":\"last-changed-date\",\"SortOrder\":\"desc\"}",
        "{\"MaxResults\":3,\"SortBy\":\"last-accessed-date\"}",
        "{\"MaxResults\":2,\"SortBy\":\"created-date\",\"Filters\":[{\"Key\":\"name\","
        "\"Values\":[\"!q\"]}]}"};
    fx *f = *state;
    char body[1024];
    for (size_t i = 0; i < KB_ARRAY_LEN(names); i++) {
        /* i tags % 4, inserted in an order that is not the keys' order; stages vary too */
        int n = snprintf(body, sizeof(body), "{\"Name\":\"%s\",\"SecretString\":\"v\"", names[i]);
        if (i % 4 > 0) {
            n += snprintf(body + n, sizeof(body) - (size_t)n, ",\"Tags\":[");
            for (size_t t = 0; t < i % 4; t++)
                n += snprintf(body + n, sizeof(body) - (size_t)n,
                              "%s{\"Key\":\"%s\",\"Value\":\"v\\\"%zu\"}", t ? "," : "",
                              t == 0   ? "z"
                              : t == 1 ? "k"
                                       : "a",
                              i);
            n += snprintf(body + n, sizeof(body) - (size_t)n, "]");
        }
        snprintf(body + n, sizeof(body) - (size_t)n, "}");
        done(ok(f, "CreateSecret", body));
        f->now += 1000;
        if (i % 3 == 0) {
            snprintf(body, sizeof(body),
                     "{\"SecretId\":\"%s\",\"SecretString\":\"w\",\"VersionStages\":"
                     "[\"AWSCURRENT\",\"s2\",\"s1\"]}",
                     names[i]);
            done(ok(f, "PutSecretValue", body));
        }
    }
    for (size_t q = 0; q < KB_ARRAY_LEN(queries); q++) {
        size_t seen = 0, pages = 0;
        char *next = NULL, names_seen[KB_ARRAY_LEN(names) + 1][8] = {{0}};
        double last_changed = 0;
        int by_changed = strstr(queries[q], "last-changed") != NULL,
            desc = strstr(queries[q], "desc") != NULL;
        do {
            json_t *l, *e;
            size_t i;
            if (next)
                snprintf(body, sizeof(body), "%.*s,\"NextToken\":\"%s\"}",
                         (int)strlen(queries[q]) - 1, queries[q], next);
            else
                snprintf(body, sizeof(body), "%s", queries[q]);
            free(next);
            next = NULL;
            l = ok(f, "ListSecrets", body);
            json_array_foreach(json_object_get(l, "SecretList"), i, e)
            {
                char d_body[1024];
                json_t *d;
                snprintf(d_body, sizeof(d_body), "{\"SecretId\":\"%s\"}", str(e, "ARN"));
                d = ok(f, "DescribeSecret", d_body);
                if (!json_equal(json_object_get(e, "Tags"), json_object_get(d, "Tags")) ||
                    !json_equal(json_object_get(e, "SecretVersionsToStages"),
                                json_object_get(d, "VersionIdsToStages")))
                    fail_msg("query %zu: %s differs from DescribeSecret", q, str(e, "Name"));
                if (strcmp(str(e, "Name"), "d/4") == 0) /* 3 tags: z, k, a as inserted */
                    assert_string_equal(str(json_array_get(json_object_get(e, "Tags"), 2), "Key"),
                                        "a");
                done(d);
                /* each secret once, across pages, in the order asked for */
                for (size_t k = 0; k < seen; k++)
                    assert_string_not_equal(names_seen[k], str(e, "Name"));
                assert_true(seen < KB_ARRAY_LEN(names));
                snprintf(names_seen[seen], sizeof(names_seen[0]), "%s", str(e, "Name"));
                if (by_changed) {
                    double ch = json_real_value(json_object_get(e, "LastChangedDate"));
                    assert_true(seen == 0 || (desc ? ch <= last_changed : ch >= last_changed));
                    last_changed = ch;
                }
                seen++;
            }
            if (json_object_get(l, "NextToken"))
                next = strdup(str(l, "NextToken"));
            done(l);
            pages++;
        } while (next != NULL && pages < 10);
        /* tag-key k: the secrets with 2 or 3 tags (i % 4 >= 2: z/9, a/1, y/8, d/4); name !q:
         * all but q/5 */
        assert_int_equal(seen, q == 4                           ? 4
                               : q == KB_ARRAY_LEN(queries) - 1 ? KB_ARRAY_LEN(names) - 1
                                                                : KB_ARRAY_LEN(names));
    }
}

/* Run SQL on the store's file while the store is closed. */
static void db_exec(fx *f, const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err ? err : "?");
    sqlite3_close(db);
}

/* A ListSecrets answer, byte for byte (the clock does not move: equal stores, equal bytes). */
static char *list_raw(fx *f, const char *acct, const char *body)
{
    cache_response r;
    char *out;
    assert_ok(cache_api_dispatch(f->api, acct, "ListSecrets", (const uint8_t *)body, strlen(body),
                                 f->now, &r));
    assert_int_equal(r.status, 200);
    out = strndup(r.body, r.body_len);
    assert_non_null(out);
    cache_response_free(&r);
    return out;
}

/* A store of schema 1 (before the kept ListSecrets texts) is migrated at open: every listing is
 * byte for byte what it was, the texts check clean, and later writes keep them. Schema 1 is
 * made from a schema-2 store by dropping the two columns, which gives schema 1's table. */
static void schema_1_migration(void **state)
{
    static const char *const queries[] = {
        "{\"IncludePlannedDeletion\":true}",
        "{}",
        "{\"SortBy\":\"name\",\"SortOrder\":\"desc\",\"IncludePlannedDeletion\":true}",
        "{\"Filters\":[{\"Key\":\"tag-key\",\"Values\":[\"team\"]}]}",
        "{\"Filters\":[{\"Key\":\"all\",\"Values\":[\"caf\"]}]}",
        "{\"MaxResults\":1}"};
    fx *f = *state;
    char *before[KB_ARRAY_LEN(queries)], *other;
    size_t stale = 1;
    json_t *l;

    f->now += 321;
    done(ok(f, "CreateSecret",
            "{\"Name\":\"mig/a\",\"SecretString\":\"v1\",\"KmsKeyId\":\"alias/k\\\"1\","
            "\"Description\":\"quote\\\" nl\\n ctl\\u0001 \\u00e9 \\ud83d\\ude00\","
            "\"Tags\":[{\"Key\":\"team\",\"Value\":\"caf\\u00e9\"},{\"Key\":\"b\",\"Value\":\"\"},"
            "{\"Key\":\"a\",\"Value\":\"x\\\\y\"}]}"));
    done(ok(f, "PutSecretValue",
            "{\"SecretId\":\"mig/a\",\"SecretString\":\"v2\",\"VersionStages\":[\"s2\",\"s1\"]}"));
    done(ok(f, "PutSecretValue", "{\"SecretId\":\"mig/a\",\"SecretString\":\"v3\"}"));
    done(ok(f, "GetSecretValue", "{\"SecretId\":\"mig/a\"}"));
    done(ok(f, "CreateSecret", "{\"Name\":\"mig/b\",\"SecretString\":\"x\"}"));
    done(ok(f, "CreateSecret",
            "{\"Name\":\"mig/c\",\"SecretString\":\"x\",\"Tags\":[{\"Key\":\"team\","
            "\"Value\":\"ops\"}]}"));
    done(ok(f, "DeleteSecret", "{\"SecretId\":\"mig/c\",\"RecoveryWindowInDays\":7}"));
    done(call_as(f, ACCT_B, "CreateSecret", "{\"Name\":\"mig/b\",\"SecretString\":\"y\"}", NULL));
    for (size_t q = 0; q < KB_ARRAY_LEN(queries); q++)
        before[q] = list_raw(f, ACCT_A, queries[q]);
    other = list_raw(f, ACCT_B, "{}");

    close_store(f);
    db_exec(f, "ALTER TABLE secrets DROP COLUMN list_head;"
               " ALTER TABLE secrets DROP COLUMN list_tail;"
               " UPDATE meta SET v = '1' WHERE k = 'schema';");
    open_store(f);
    for (size_t q = 0; q < KB_ARRAY_LEN(queries); q++) {
        char *after = list_raw(f, ACCT_A, queries[q]);
        if (strcmp(before[q], after) != 0)
            fail_msg("%s: after migration\n%s\nbefore\n%s", queries[q], after, before[q]);
        free(after);
        free(before[q]);
    }
    {
        char *after = list_raw(f, ACCT_B, "{}");
        assert_string_equal(after, other);
        free(after);
        free(other);
    }
    assert_ok(cache_store_check_lists(f->st, &stale));
    assert_int_equal(stale, 0);
    /* Writes after the migration keep the texts (call_as checks them after each). */
    done(ok(f, "TagResource",
            "{\"SecretId\":\"mig/b\",\"Tags\":[{\"Key\":\"new\",\"Value\":\"1\"}]}"));
    l = ok(f, "ListSecrets", "{\"Filters\":[{\"Key\":\"name\",\"Values\":[\"mig/b\"]}]}");
    assert_string_equal(
        str(json_array_get(
                json_object_get(json_array_get(json_object_get(l, "SecretList"), 0), "Tags"), 0),
            "Key"),
        "new");
    done(l);

    /* Migrated once: the file is schema 2 now. */
    close_store(f);
    {
        sqlite3 *db = NULL;
        sqlite3_stmt *s = NULL;
        assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
        assert_int_equal(
            sqlite3_prepare_v2(db, "SELECT v FROM meta WHERE k = 'schema'", -1, &s, NULL),
            SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(s, 0), "2");
        sqlite3_finalize(s);
        sqlite3_close(db);
    }

    /* The check sees a stale text (what call_as relies on). */
    db_exec(f, "UPDATE secrets SET list_tail = '\"Tags\":[],\"SecretVersionsToStages\":{}'"
               " WHERE name = 'mig/b'");
    open_store(f);
    assert_ok(cache_store_check_lists(f->st, &stale));
    assert_int_equal(stale, 2); /* mig/b of both accounts */
    close_store(f);

    /* A store of a newer schema is refused, and left as it was. */
    db_exec(f, "UPDATE meta SET v = '3' WHERE k = 'schema'");
    expect_open_fails(f, KB_ERR_SCHEMA);
    db_exec(f, "UPDATE meta SET v = '2' WHERE k = 'schema'");
    open_store(f); /* for teardown */
}

/* GetSecretValue writes its answer directly: every member equals the one BatchGetSecretValue
 * builds for the same version with jansson (escapes, \u0000, unicode, binary, stages, date),
 * and no other member is present. */
static void get_value_matches_tree(void **state)
{
    static const char *const ids[] = {"direct/str", "direct/bin"};
    static const char *const members[] = {
        "ARN", "Name", "VersionId", "SecretString", "SecretBinary", "VersionStages", "CreatedDate"};
    fx *f = *state;
    f->now += 456;
    done(ok(f, "CreateSecret",
            "{\"Name\":\"direct/str\",\"SecretString\":\"quote\\\" back\\\\ nl\\n nul\\u0000 "
            "ctl\\u001f \\u00e9 \\ud83d\\ude00 </script> a-long-plain-run-0123456789\"}"));
    done(ok(f, "PutSecretValue",
            "{\"SecretId\":\"direct/str\",\"SecretString\":\"v2\\t\","
            "\"VersionStages\":[\"AWSCURRENT\",\"zeta\",\"alpha\"]}"));
    done(ok(f, "CreateSecret", "{\"Name\":\"direct/bin\",\"SecretBinary\":\"AAECA/79/w==\"}"));
    for (size_t i = 0; i < KB_ARRAY_LEN(ids); i++) {
        char body[256];
        json_t *g, *batch, *e;
        const char *k;
        json_t *v;
        snprintf(body, sizeof(body), "{\"SecretId\":\"%s\"}", ids[i]);
        g = ok(f, "GetSecretValue", body);
        snprintf(body, sizeof(body), "{\"SecretIdList\":[\"%s\"]}", ids[i]);
        batch = ok(f, "BatchGetSecretValue", body);
        e = json_array_get(json_object_get(batch, "SecretValues"), 0);
        assert_non_null(e);
        for (size_t m = 0; m < KB_ARRAY_LEN(members); m++) {
            json_t *a = json_object_get(g, members[m]), *b = json_object_get(e, members[m]);
            if ((a == NULL) != (b == NULL) || (a && !json_equal(a, b)))
                fail_msg("%s: member %s differs from the jansson tree", ids[i], members[m]);
        }
        json_object_foreach(g, k, v)
        {
            if (json_object_get(e, k) == NULL)
                fail_msg("unexpected member %s", k);
        }
        if (i == 0) {
            assert_int_equal(json_string_length(json_object_get(g, "SecretString")), 3);
            assert_int_equal(json_array_size(json_object_get(g, "VersionStages")), 3);
            assert_string_equal(
                json_string_value(json_array_get(json_object_get(g, "VersionStages"), 0)),
                "AWSCURRENT");
        } else {
            assert_string_equal(str(g, "SecretBinary"), "AAECA/79/w==");
        }
        done(g);
        done(batch);
    }
    /* The previous version, by stage: the escaped value, \u0000 included. */
    {
        json_t *g = ok(f, "GetSecretValue",
                       "{\"SecretId\":\"direct/str\",\"VersionStage\":\"AWSPREVIOUS\"}");
        json_t *s = json_object_get(g, "SecretString");
        static const char want[] = "quote\" back\\ nl\n nul\0 ctl\x1f \xc3\xa9 \xf0\x9f\x98\x80 "
                                   "</script> a-long-plain-run-0123456789";
        assert_int_equal(json_string_length(s), sizeof(want) - 1);
        assert_memory_equal(json_string_value(s), want, sizeof(want) - 1);
        assert_true(json_is_real(json_object_get(g, "CreatedDate")));
        done(g);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(create_get_describe, setup, teardown),
        cmocka_unit_test_setup_teardown(list_matches_describe, setup, teardown),
        cmocka_unit_test_setup_teardown(list_page_tags_stages, setup, teardown),
        cmocka_unit_test_setup_teardown(schema_1_migration, setup, teardown),
        cmocka_unit_test_setup_teardown(get_value_matches_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(binary_values, setup, teardown),
        cmocka_unit_test_setup_teardown(limits, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_json_and_types, setup, teardown),
        cmocka_unit_test_setup_teardown(versions_and_stages, setup, teardown),
        cmocka_unit_test_setup_teardown(version_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(account_isolation, setup, teardown),
        cmocka_unit_test_setup_teardown(delete_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(tags_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(filters, setup, teardown),
        cmocka_unit_test_setup_teardown(pagination, setup, teardown),
        cmocka_unit_test_setup_teardown(batch_get, setup, teardown),
        cmocka_unit_test_setup_teardown(persistence_and_tamper, setup, teardown),
        cmocka_unit_test_setup_teardown(reads_and_scratch, setup, teardown),
        cmocka_unit_test_setup_teardown(pagination_keyset, setup, teardown),
        cmocka_unit_test_setup_teardown(list_version_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(update_version_stage, setup, teardown),
        cmocka_unit_test_setup_teardown(random_password, setup, teardown),
        cmocka_unit_test_setup_teardown(resource_policies, setup, teardown),
        cmocka_unit_test_setup_teardown(refused_operations, setup, teardown),
        cmocka_unit_test_setup_teardown(nul_in_strings, setup, teardown),
        cmocka_unit_test(unseal_to_bounds),
        cmocka_unit_test_setup_teardown(sigv4_auth, setup, teardown),
        cmocka_unit_test(creds_file),
        cmocka_unit_test(key_file),
    };
    if (kb_secmem_init() != KB_OK)
        return 1;
    kb_json_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
