/* test_console.c - the web console without sockets (console.h): login tokens (single use,
 * expiry, refused identities), sessions (cookie parsing, expiry, logout), the CSRF check on every
 * change (refused changes change nothing), the admin API behind it with the session's identity,
 * owners limited to their groups' secrets (service.h svc_scope), the embedded assets and every
 * endpoint's parser (malformed, oversized, wrong type, unauthenticated).
 */
#include "kbtest.h"

#include <string.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/secbuf.h"
#include "server/api.h"
#include "server/console.h"
#include "server/server_config.h"
#include "server/service.h"

#define ADMIN "spiffe://example.org/ns/ops/sa/admin"
#define OWNA "spiffe://example.org/ns/a/sa/alice"
#define OWNB "spiffe://example.org/ns/b/sa/bob"
#define PLAIN "spiffe://example.org/ns/p/sa/app"
#define CLOUD "spiffe://example.org/lambda/acct/1/fn/x"
#define NOBODY "spiffe://example.org/ns/x/sa/unknown"
#define BASE "https://127.0.0.1:8444"

static char *g_dir;
static kb_config *g_cfg;
static svc *g_svc;
static console *g_cn;
static int64_t g_now = 1700000000;

/* ---- helpers ------------------------------------------------------------------------------ */

static int api(const char *who, const char *method, const char *path, const char *body)
{
    api_request q = {.method = method,
                     .path = path,
                     .query = "",
                     .body = (const uint8_t *)(body ? body : ""),
                     .body_len = body ? strlen(body) : 0,
                     .peer = "local",
                     .spiffe_id = who,
                     .now = g_now};
    api_response r;
    int st;
    api_handle(g_svc, &q, &r);
    st = r.status;
    api_response_clear(&r);
    return st;
}

static void api_want(int want, const char *who, const char *method, const char *path,
                     const char *body)
{
    int got = api(who, method, path, body);
    if (got != want)
        fail_msg("%s %s as %s: got %d, want %d", method, path, who, got, want);
}

/* POST /v1/console/login as who: the status; the token into tok when 201. */
static int token_for(const char *who, const char *method, const char *body, char *tok)
{
    api_request q = {.method = method,
                     .path = "/v1/console/login",
                     .query = "",
                     .body = (const uint8_t *)(body ? body : ""),
                     .body_len = body ? strlen(body) : 0,
                     .peer = "local",
                     .spiffe_id = who,
                     .now = g_now};
    api_response r;
    int st;
    console_login(g_cn, &q, &r);
    st = r.status;
    if (st == 201 && tok != NULL) {
        const char *url = json_string_value(json_object_get(r.body, "url"));
        assert_non_null(url);
        assert_int_equal(strncmp(url, BASE "/#login=", strlen(BASE "/#login=")), 0);
        snprintf(tok, CONSOLE_SECRET_B64 + 1, "%s", url + strlen(BASE "/#login="));
        assert_int_equal(strlen(tok), CONSOLE_SECRET_B64);
        assert_int_equal(json_integer_value(json_object_get(r.body, "expires_at")),
                         g_now + CONSOLE_LOGIN_TTL_DEFAULT);
    }
    api_response_clear(&r);
    return st;
}

typedef struct {
    char cookie[128]; /* "kb_console=..." */
    char csrf[CONSOLE_SECRET_B64 + 1];
} sess;

static int chandle(const char *method, const char *path, const char *cookie, const char *csrf,
                   const char *body, size_t body_len, console_response *r)
{
    char p[512];
    const char *qm = strchr(path, '?');
    snprintf(p, sizeof(p), "%.*s", qm ? (int)(qm - path) : (int)strlen(path), path);
    console_request q = {.method = method,
                         .path = p,
                         .query = qm ? qm + 1 : "",
                         .cookie = cookie,
                         .csrf = csrf,
                         .body = (const uint8_t *)(body ? body : ""),
                         .body_len = body ? (body_len ? body_len : strlen(body)) : 0,
                         .peer = "127.0.0.1:5555",
                         .now = g_now};
    console_handle(g_cn, &q, r);
    return r->status;
}

static int creq(const char *method, const char *path, const sess *s, bool with_csrf,
                const char *body)
{
    console_response r;
    int st =
        chandle(method, path, s ? s->cookie : NULL, s && with_csrf ? s->csrf : NULL, body, 0, &r);
    console_response_clear(&r);
    return st;
}

/* The body of a console answer, parsed (caller frees). */
static json_t *cjson(const char *method, const char *path, const sess *s, int want)
{
    console_response r;
    json_t *j;
    int st = chandle(method, path, s->cookie, s->csrf, NULL, 0, &r);
    if (st != want)
        fail_msg("%s %s: got %d, want %d: %.*s", method, path, st, want, (int)r.len,
                 (const char *)r.body);
    j = json_loadb((const char *)r.body, r.len, 0, NULL);
    console_response_clear(&r);
    assert_non_null(j);
    return j;
}

static void login(const char *who, sess *s)
{
    char tok[CONSOLE_SECRET_B64 + 1], body[128];
    console_response r;
    json_t *j;
    assert_int_equal(token_for(who, "POST", NULL, tok), 201);
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", tok);
    assert_int_equal(chandle("POST", "/api/login", NULL, NULL, body, 0, &r), 200);
    assert_non_null(strstr(r.set_cookie, "; Path=/api/; Max-Age=900; HttpOnly; Secure; "
                                         "SameSite=Strict"));
    assert_int_equal(strncmp(r.set_cookie, CONSOLE_COOKIE "=", strlen(CONSOLE_COOKIE) + 1), 0);
    snprintf(s->cookie, sizeof(s->cookie), "%.*s", (int)(strchr(r.set_cookie, ';') - r.set_cookie),
             r.set_cookie);
    j = json_loadb((const char *)r.body, r.len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "identity")), who);
    snprintf(s->csrf, sizeof(s->csrf), "%s", json_string_value(json_object_get(j, "csrf")));
    assert_int_equal(strlen(s->csrf), CONSOLE_SECRET_B64);
    json_decref(j);
    console_response_clear(&r);
    /* Single use. */
    assert_int_equal(chandle("POST", "/api/login", NULL, NULL, body, 0, &r), 401);
    console_response_clear(&r);
}

static bool list_has(const sess *s, const char *path, const char *key, const char *name)
{
    json_t *j = cjson("GET", path, s, 200);
    const json_t *arr = json_object_get(j, key), *v;
    size_t i;
    bool found = false;
    json_array_foreach(arr, i, v)
    {
        const json_t *n = json_is_object(v) ? json_object_get(v, "name") : v;
        if (json_is_string(n) && strcmp(json_string_value(n), name) == 0)
            found = true;
    }
    json_decref(j);
    return found;
}

/* ---- set-up --------------------------------------------------------------------------------- */

static int setup(void **state)
{
    char path[512], err[256];
    console_opts o = {.url = BASE};
    FILE *f;
    (void)state;
    kb_log_set_level(getenv("KBTEST_LOG") ? KB_LOG_DEBUG : KB_LOG_OFF);
    assert_ok(kb_secmem_init());
    kb_json_init();
    char tmpl[] = "/dev/shm/kbconsole.XXXXXX";
    char *d = mkdtemp(tmpl);
    g_dir = d ? strdup(d) : kbtest_tmpdir();
    assert_non_null(g_dir);
    snprintf(path, sizeof(path), "%s/keybridged.conf", g_dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "[store]\nurl = sqlite:%s/kb.db\n[hsm]\nkeystore = file\nkey_file = %s/master.key\n"
            "[clients]\ncloud_prefixes = /lambda/\n[audit]\nanchor_every_rows = -1\n"
            "[server]\ntrust_domain = example.org\n",
            g_dir, g_dir);
    fclose(f);
    assert_ok(
        kb_config_load(server_config_keys, path, "KBTEST_CONSOLE_NOENV", &g_cfg, err, sizeof(err)));
    assert_ok(svc_bootstrap(g_cfg, ADMIN));
    assert_ok(svc_open(g_cfg, false, &g_svc));
    assert_ok(console_new(g_svc, &o, &g_cn));

    static const char *const clients[] = {OWNA, OWNB, PLAIN, CLOUD};
    static const char *const groups[] = {"ga", "gb", "gp", "ga"};
    api_want(201, ADMIN, "POST", "/v1/admin/groups", "{\"name\":\"ga\"}");
    api_want(201, ADMIN, "POST", "/v1/admin/groups", "{\"name\":\"gb\"}");
    api_want(201, ADMIN, "POST", "/v1/admin/groups", "{\"name\":\"gp\"}");
    for (size_t i = 0; i < 4; i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"spiffe_id\":\"%s\"}", clients[i]);
        api_want(201, ADMIN, "POST", "/v1/admin/clients", body);
        snprintf(body, sizeof(body), "{\"client\":\"%s\",\"group\":\"%s\"}", clients[i], groups[i]);
        api_want(201, ADMIN, "POST", "/v1/admin/memberships", body);
    }
    api_want(201, ADMIN, "POST", "/v1/admin/secrets",
             "{\"name\":\"sa\",\"content\":\"YQ==\",\"owner_group\":\"ga\"}");
    api_want(201, ADMIN, "POST", "/v1/admin/secrets",
             "{\"name\":\"sb\",\"content\":\"Yg==\",\"owner_group\":\"gb\"}");
    api_want(201, ADMIN, "POST", "/v1/admin/secrets", "{\"name\":\"snone\",\"content\":\"Yw==\"}");
    return 0;
}

static int teardown(void **state)
{
    char cmd[600];
    (void)state;
    console_free(g_cn);
    svc_close(g_svc);
    kb_config_free(g_cfg);
    static const char *const files[] = {"kb.db", "kb.db-wal", "kb.db-shm", "master.key",
                                        "keybridged.conf"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(cmd, sizeof(cmd), "%s/%s", g_dir, files[i]);
        unlink(cmd);
    }
    rmdir(g_dir);
    free(g_dir);
    return 0;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_new_args(void **state)
{
    console *cn = NULL;
    char big[CONSOLE_URL_MAX + 8];
    console_opts o = {.url = BASE, .login_ttl = -1};
    (void)state;
    assert_kb(console_new(g_svc, &o, &cn), KB_ERR_CONFIG);
    o.login_ttl = 0;
    o.session_ttl = CONSOLE_TTL_MAX + 1;
    assert_kb(console_new(g_svc, &o, &cn), KB_ERR_CONFIG);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    o.session_ttl = 0;
    o.url = big;
    assert_kb(console_new(g_svc, &o, &cn), KB_ERR_TOO_LARGE);
    o.url = NULL;
    assert_kb(console_new(g_svc, &o, &cn), KB_ERR_INVALID);
    assert_null(cn);
    console_free(NULL);
    console_response_clear(NULL);
}

static void test_login_token(void **state)
{
    char tok[CONSOLE_SECRET_B64 + 1];
    (void)state;
    assert_int_equal(token_for(NULL, "POST", NULL, NULL), 401);
    assert_int_equal(token_for(NOBODY, "POST", NULL, NULL), 401);
    assert_int_equal(token_for(ADMIN, "GET", NULL, NULL), 405);
    assert_int_equal(token_for(ADMIN, "POST", "{}", NULL), 400);
    /* A member of a group that owns nothing, a cloud client: nothing to manage. */
    assert_int_equal(token_for(PLAIN, "POST", NULL, NULL), 403);
    assert_int_equal(token_for(CLOUD, "POST", NULL, NULL), 403);
    assert_int_equal(token_for(ADMIN, "POST", NULL, tok), 201);
    assert_int_equal(token_for(OWNA, "POST", NULL, tok), 201);
}

static void test_login_exchange(void **state)
{
    char tok[CONSOLE_SECRET_B64 + 1], body[256];
    console_response r;
    size_t nt, ns;
    (void)state;
    /* Parser: malformed, wrong type, unknown field, not an object, oversized, wrong method. */
    static const char *const bad400[] = {"{x", "{\"token\":5}",   "{\"token\":\"a\",\"b\":1}", "[]",
                                         "",   "{\"token\":null}"};
    for (size_t i = 0; i < sizeof(bad400) / sizeof(*bad400); i++) {
        int st = chandle("POST", "/api/login", NULL, NULL, bad400[i], 0, &r);
        if (st != 400)
            fail_msg("login body '%s': %d", bad400[i], st);
        console_response_clear(&r);
    }
    char *huge = malloc(API_BODY_MAX + 2);
    assert_non_null(huge);
    memset(huge, ' ', API_BODY_MAX + 1);
    huge[API_BODY_MAX + 1] = '\0';
    assert_int_equal(chandle("POST", "/api/login", NULL, NULL, huge, API_BODY_MAX + 1, &r), 413);
    console_response_clear(&r);
    free(huge);
    assert_int_equal(chandle("GET", "/api/login", NULL, NULL, NULL, 0, &r), 405);
    console_response_clear(&r);
    /* Unknown, malformed (wrong length, wrong alphabet) tokens: all the same 401. */
    static const char *const bad401[] = {
        "{\"token\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}", "{\"token\":\"short\"}",
        "{\"token\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+\"}", "{\"token\":\"\"}"};
    for (size_t i = 0; i < sizeof(bad401) / sizeof(*bad401); i++) {
        int st = chandle("POST", "/api/login", NULL, NULL, bad401[i], 0, &r);
        if (st != 401)
            fail_msg("login body '%s': %d", bad401[i], st);
        assert_string_equal(r.set_cookie, "");
        console_response_clear(&r);
    }
    /* Expired: valid up to login_ttl seconds. */
    assert_int_equal(token_for(ADMIN, "POST", NULL, tok), 201);
    snprintf(body, sizeof(body), "{\"token\":\"%s\"}", tok);
    g_now += CONSOLE_LOGIN_TTL_DEFAULT;
    assert_int_equal(chandle("POST", "/api/login", NULL, NULL, body, 0, &r), 401);
    console_response_clear(&r);
    g_now -= CONSOLE_LOGIN_TTL_DEFAULT;
    /* The table is bounded: past CONSOLE_TOKENS_MAX the oldest go. */
    for (size_t i = 0; i < CONSOLE_TOKENS_MAX + 3; i++)
        assert_int_equal(token_for(ADMIN, "POST", NULL, NULL), 201);
    console_counts(g_cn, &nt, &ns);
    assert_int_equal(nt, CONSOLE_TOKENS_MAX);
}

static void test_session(void **state)
{
    sess s, bad;
    json_t *j;
    char cookie[256];
    console_response r;
    (void)state;
    login(ADMIN, &s);
    j = cjson("GET", "/api/session", &s, 200);
    assert_string_equal(json_string_value(json_object_get(j, "identity")), ADMIN);
    assert_true(json_is_true(json_object_get(j, "admin")));
    assert_string_equal(json_string_value(json_object_get(j, "csrf")), s.csrf);
    json_decref(j);
    /* The cookie among others, with spaces. */
    snprintf(cookie, sizeof(cookie), "a=b;  %s; c=d", s.cookie);
    assert_int_equal(chandle("GET", "/api/session", cookie, NULL, NULL, 0, &r), 200);
    console_response_clear(&r);
    /* Unauthenticated and malformed cookies: 401 everywhere, and the cookie is cleared. */
    static const char *const bad_cookies[] = {
        NULL,
        "",
        "kb_console=",
        "kb_console=short",
        "kb_console=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "kb_console=../../../../../../../../../../etc/pw",
        "other=1",
        "kb_consolex=AAAA"};
    static const char *const paths[] = {"/api/session", "/api/v1/admin/secrets", "/api/logout"};
    for (size_t i = 0; i < sizeof(bad_cookies) / sizeof(*bad_cookies); i++) {
        for (size_t k = 0; k < 3; k++) {
            int st =
                chandle(k == 2 ? "POST" : "GET", paths[k], bad_cookies[i], s.csrf, NULL, 0, &r);
            if (st != 401)
                fail_msg("%s with cookie '%s': %d", paths[k], bad_cookies[i] ? bad_cookies[i] : "",
                         st);
            assert_non_null(strstr(r.set_cookie, "Max-Age=0"));
            console_response_clear(&r);
        }
    }
    /* Another session's CSRF token does not work with this cookie. */
    login(ADMIN, &bad);
    snprintf(bad.cookie, sizeof(bad.cookie), "%s", s.cookie);
    assert_int_equal(creq("POST", "/api/v1/admin/groups", &bad, true, "{\"name\":\"gx\"}"), 403);
    /* Routes: unknown, wrong methods, the client API is not behind the console. */
    assert_int_equal(creq("GET", "/api/nope", &s, false, NULL), 404);
    assert_int_equal(creq("GET", "/api/v1/secrets", &s, false, NULL), 404);
    assert_int_equal(creq("POST", "/api/session", &s, true, NULL), 405);
    assert_int_equal(creq("GET", "/api/logout", &s, false, NULL), 405);
    /* Expiry: the session lives session_ttl seconds from login, whatever its use. */
    g_now += CONSOLE_SESSION_TTL_DEFAULT - 1;
    assert_int_equal(creq("GET", "/api/session", &s, false, NULL), 200);
    g_now += 1;
    assert_int_equal(creq("GET", "/api/session", &s, false, NULL), 401);
    assert_int_equal(creq("GET", "/api/v1/admin/secrets", &s, false, NULL), 401);
    g_now -= CONSOLE_SESSION_TTL_DEFAULT;
    /* Logout (a change: CSRF required), then the cookie is refused. */
    login(ADMIN, &s);
    assert_int_equal(creq("POST", "/api/logout", &s, false, NULL), 403);
    assert_int_equal(creq("GET", "/api/session", &s, false, NULL), 200);
    assert_int_equal(chandle("POST", "/api/logout", s.cookie, s.csrf, NULL, 0, &r), 200);
    assert_non_null(strstr(r.set_cookie, "Max-Age=0"));
    console_response_clear(&r);
    assert_int_equal(creq("GET", "/api/session", &s, false, NULL), 401);
    assert_int_equal(creq("POST", "/api/logout", &s, true, NULL), 401);
}

static void test_csrf(void **state)
{
    sess s;
    char wrong[CONSOLE_SECRET_B64 + 1];
    console_response r;
    (void)state;
    login(ADMIN, &s);
    /* Missing, wrong (same shape), malformed: 403 and nothing made. */
    assert_int_equal(creq("POST", "/api/v1/admin/groups", &s, false, "{\"name\":\"gx\"}"), 403);
    snprintf(wrong, sizeof(wrong), "%s", s.csrf);
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    assert_int_equal(
        chandle("POST", "/api/v1/admin/groups", s.cookie, wrong, "{\"name\":\"gx\"}", 0, &r), 403);
    console_response_clear(&r);
    assert_int_equal(chandle("DELETE", "/api/v1/admin/secrets/sa", s.cookie, "x", NULL, 0, &r),
                     403);
    console_response_clear(&r);
    assert_int_equal(creq("GET", "/api/v1/admin/groups/gx", &s, false, NULL), 404);
    assert_int_equal(creq("GET", "/api/v1/admin/secrets/sa", &s, false, NULL), 200);
    /* With it: the admin API answers, as the session's identity. */
    assert_int_equal(creq("POST", "/api/v1/admin/groups", &s, true, "{\"name\":\"gx\"}"), 201);
    json_t *j = cjson("GET", "/api/v1/admin/groups/gx", &s, 200);
    assert_string_equal(json_string_value(json_object_get(j, "created_by")), ADMIN);
    json_decref(j);
    /* The proxied parsers: malformed, wrong type, oversized. */
    assert_int_equal(creq("POST", "/api/v1/admin/groups", &s, true, "{"), 400);
    assert_int_equal(creq("POST", "/api/v1/admin/groups", &s, true, "{\"name\":7}"), 400);
    assert_int_equal(creq("GET", "/api/v1/admin/../admin/secrets", &s, false, NULL), 400);
    /* Reveal: audited as the session's identity. */
    j = cjson("GET", "/api/v1/admin/secrets/sa/content", &s, 200);
    assert_string_equal(json_string_value(json_object_get(j, "content")), "YQ==");
    json_decref(j);
    j = cjson("GET", "/api/v1/admin/audit", &s, 200);
    const json_t *e0 = json_array_get(json_object_get(j, "events"), 0);
    /* newest first: the audit read itself is not audited, the reveal is */
    bool found = false;
    size_t i;
    const json_t *e;
    json_array_foreach(json_object_get(j, "events"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "action")), "secret.admin_read") == 0 &&
            strcmp(json_string_value(json_object_get(e, "identity")), ADMIN) == 0 &&
            strcmp(json_string_value(json_object_get(e, "object")), "sa") == 0)
            found = true;
    }
    assert_non_null(e0);
    assert_true(found);
    json_decref(j);
}

static void test_owner(void **state)
{
    sess a;
    json_t *j;
    (void)state;
    login(OWNA, &a);
    j = cjson("GET", "/api/session", &a, 200);
    assert_true(json_is_false(json_object_get(j, "admin")));
    json_decref(j);
    /* Sees its group's secret only, in the listing and the expiry view. */
    assert_true(list_has(&a, "/api/v1/admin/secrets", "secrets", "sa"));
    assert_false(list_has(&a, "/api/v1/admin/secrets", "secrets", "sb"));
    assert_false(list_has(&a, "/api/v1/admin/secrets", "secrets", "snone"));
    assert_int_equal(creq("GET", "/api/v1/admin/secrets/sa", &a, false, NULL), 200);
    assert_int_equal(creq("GET", "/api/v1/admin/secrets/sa/content", &a, false, NULL), 200);
    assert_int_equal(creq("GET", "/api/v1/admin/secrets/sa/versions", &a, false, NULL), 200);
    assert_int_equal(creq("GET", "/api/v1/admin/secrets/sa/status", &a, false, NULL), 200);
    /* Another group's secret: the same 404 as a missing one, for every route. */
    static const char *const other[][2] = {{"GET", "/api/v1/admin/secrets/sb"},
                                           {"GET", "/api/v1/admin/secrets/sb/content"},
                                           {"GET", "/api/v1/admin/secrets/sb/versions"},
                                           {"GET", "/api/v1/admin/secrets/snone/status"},
                                           {"PUT", "/api/v1/admin/secrets/sb"},
                                           {"PATCH", "/api/v1/admin/secrets/sb"},
                                           {"POST", "/api/v1/admin/secrets/sb/generate"},
                                           {"GET", "/api/v1/admin/secrets/missing"},
                                           {"GET", "/api/v1/admin/groups/gb"}};
    for (size_t i = 0; i < sizeof(other) / sizeof(*other); i++) {
        int st = creq(other[i][0], other[i][1], &a, true, "{\"content\":\"eA==\"}");
        if (st != 404)
            fail_msg("owner %s %s: %d", other[i][0], other[i][1], st);
    }
    assert_int_equal(
        creq("POST", "/api/v1/admin/grants", &a, true, "{\"group\":\"gp\",\"secret\":\"sb\"}"),
        404);
    /* Routes owners never use: 403. */
    static const char *const admin_only[][2] = {
        {"GET", "/api/v1/admin/clients"},           {"GET", "/api/v1/admin/audit"},
        {"POST", "/api/v1/admin/groups"},           {"DELETE", "/api/v1/admin/secrets/sa"},
        {"POST", "/api/v1/admin/secrets/sa/purge"}, {"POST", "/api/v1/admin/memberships"}};
    for (size_t i = 0; i < sizeof(admin_only) / sizeof(*admin_only); i++) {
        int st = creq(admin_only[i][0], admin_only[i][1], &a, true, "{}");
        if (st != 403)
            fail_msg("owner %s %s: %d", admin_only[i][0], admin_only[i][1], st);
    }
    /* Create and move only into its own groups. */
    assert_int_equal(creq("POST", "/api/v1/admin/secrets", &a, true,
                          "{\"name\":\"x1\",\"content\":\"eA==\",\"owner_group\":\"gb\"}"),
                     403);
    assert_int_equal(
        creq("POST", "/api/v1/admin/secrets", &a, true, "{\"name\":\"x1\",\"content\":\"eA==\"}"),
        403);
    assert_int_equal(creq("POST", "/api/v1/admin/secrets", &a, true,
                          "{\"name\":\"x1\",\"content\":\"eA==\",\"owner_group\":\"ga\"}"),
                     201);
    assert_int_equal(
        creq("PATCH", "/api/v1/admin/secrets/x1", &a, true, "{\"owner_group\":\"gb\"}"), 403);
    assert_int_equal(creq("PATCH", "/api/v1/admin/secrets/x1", &a, true, "{\"owner_group\":null}"),
                     403);
    assert_int_equal(creq("PATCH", "/api/v1/admin/secrets/x1", &a, true, "{\"cloud_sync\":true}"),
                     200);
    assert_int_equal(creq("PUT", "/api/v1/admin/secrets/x1", &a, true, "{\"content\":\"eQ==\"}"),
                     200);
    assert_int_equal(creq("POST", "/api/v1/admin/secrets/x2/generate", &a, true,
                          "{\"type\":\"random\",\"owner_group\":\"gb\"}"),
                     403);
    assert_int_equal(creq("POST", "/api/v1/admin/secrets/x2/generate", &a, true,
                          "{\"type\":\"random\",\"owner_group\":\"ga\"}"),
                     201);
    assert_int_equal(
        creq("POST", "/api/v1/admin/secrets/x2/generate", &a, true, "{\"type\":\"random\"}"), 200);
    assert_int_equal(
        creq("POST", "/api/v1/admin/grants", &a, true, "{\"group\":\"gp\",\"secret\":\"x1\"}"),
        201);
    assert_int_equal(creq("POST", "/api/v1/admin/grants", &a, true, "{\"group\":5}"), 400);
    assert_int_equal(creq("GET", "/api/v1/admin/groups", &a, false, NULL), 200);
    assert_int_equal(creq("GET", "/api/v1/admin/groups/ga", &a, false, NULL), 200);
    api_want(200, ADMIN, "PUT", "/v1/admin/secrets/sb",
             "{\"content\":\"eA==\",\"expires_at\":1700000100}");
    api_want(200, OWNA, "PUT", "/v1/admin/secrets/sa",
             "{\"content\":\"eA==\",\"expires_at\":1700000100}");
    assert_true(list_has(&a, "/api/v1/admin/expiring?within=1000", "secrets", "sa"));
    assert_false(list_has(&a, "/api/v1/admin/expiring?within=1000", "secrets", "sb"));
    assert_int_equal(creq("GET", "/api/v1/admin/expiring", &a, false, NULL), 400);
    /* Over mTLS, the same rules (one policy). */
    api_want(404, OWNA, "GET", "/v1/admin/secrets/sb", NULL);
    api_want(200, OWNA, "GET", "/v1/admin/secrets/x1", NULL);
    api_want(403, PLAIN, "GET", "/v1/admin/secrets", NULL);
    api_want(403, CLOUD, "GET", "/v1/admin/secrets", NULL);
    /* A disabled client's session stops working at once (the client row is read per call). */
    {
        api_request q = {.method = "GET",
                         .path = "/v1/admin/clients",
                         .query = "spiffe_id=" OWNA,
                         .body = (const uint8_t *)"",
                         .peer = "local",
                         .spiffe_id = ADMIN,
                         .now = g_now};
        api_response r;
        char path[64];
        api_handle(g_svc, &q, &r);
        assert_int_equal(r.status, 200);
        snprintf(path, sizeof(path), "/v1/admin/clients/%lld",
                 (long long)json_integer_value(
                     json_object_get(json_array_get(json_object_get(r.body, "clients"), 0), "id")));
        api_response_clear(&r);
        api_want(200, ADMIN, "PATCH", path, "{\"enabled\":false}");
        assert_int_equal(creq("GET", "/api/v1/admin/secrets", &a, false, NULL), 403);
        api_want(200, ADMIN, "PATCH", path, "{\"enabled\":true}");
        assert_int_equal(creq("GET", "/api/v1/admin/secrets", &a, false, NULL), 200);
    }
}

static void test_assets(void **state)
{
    console_response r;
    (void)state;
    assert_int_equal(chandle("GET", "/", NULL, NULL, NULL, 0, &r), 200);
    assert_string_equal(r.content_type, "text/html; charset=utf-8");
    assert_non_null(memmem(r.body, r.len, "<script src=\"/app.js\"", 21));
    /* no inline script or style in the page */
    assert_null(memmem(r.body, r.len, "<script>", 8));
    assert_null(memmem(r.body, r.len, "style=", 6));
    assert_null(memmem(r.body, r.len, "<style", 6));
    console_response_clear(&r);
    assert_int_equal(chandle("GET", "/app.js", NULL, NULL, NULL, 0, &r), 200);
    assert_string_equal(r.content_type, "text/javascript; charset=utf-8");
    assert_null(memmem(r.body, r.len, "innerHTML", 9));
    assert_null(memmem(r.body, r.len, "eval(", 5));
    console_response_clear(&r);
    assert_int_equal(chandle("GET", "/app.css", NULL, NULL, NULL, 0, &r), 200);
    console_response_clear(&r);
    assert_int_equal(chandle("GET", "/nope.js", NULL, NULL, NULL, 0, &r), 404);
    console_response_clear(&r);
    assert_int_equal(chandle("GET", "/../index.html", NULL, NULL, NULL, 0, &r), 404);
    console_response_clear(&r);
    assert_int_equal(chandle("POST", "/index.html", NULL, NULL, "x", 0, &r), 405);
    console_response_clear(&r);
    console_handle(g_cn, NULL, &r);
    assert_int_equal(r.status, 400);
    console_response_clear(&r);
    bool csp = false, frame = false;
    for (size_t i = 0; console_headers[i][0]; i++) {
        if (strcmp(console_headers[i][0], "Content-Security-Policy") == 0)
            csp = strstr(console_headers[i][1], "default-src 'self'") &&
                  strstr(console_headers[i][1], "frame-ancestors 'none'") &&
                  !strstr(console_headers[i][1], "unsafe");
        if (strcmp(console_headers[i][0], "X-Frame-Options") == 0)
            frame = strcmp(console_headers[i][1], "DENY") == 0;
    }
    assert_true(csp && frame);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_args),       cmocka_unit_test(test_login_token),
        cmocka_unit_test(test_login_exchange), cmocka_unit_test(test_session),
        cmocka_unit_test(test_csrf),           cmocka_unit_test(test_owner),
        cmocka_unit_test(test_assets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
