/* test_api.c - the HTTP API as pure functions: routing, ACLs, the byte-identical "not found",
 * bad input that changes nothing, admin authorization, and a random ACL property test over
 * the native, batch and Keywhiz endpoints (10,000 trials against a model of who may read what).
 */
#include "kbtest.h"

#include <string.h>
#include <unistd.h>

#include "lib/base64.h"
#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/secbuf.h"
#include "server/api.h"
#include "server/model.h"
#include "server/server_config.h"
#include "server/service.h"

#define ADMIN "spiffe://example.org/ns/ops/sa/admin"
#define CLA "spiffe://example.org/ns/a/sa/app"
#define CLB "spiffe://example.org/ns/b/sa/app"
#define CLOUD "spiffe://example.org/lambda/acct/1/fn/report"
#define NOBODY "spiffe://example.org/ns/x/sa/unknown"

static char *g_dir;
static kb_config *g_cfg;
static svc *g_svc;
static int64_t g_now = 1700000000;

static int call(const char *who, const char *method, const char *path, const char *query,
                const char *body, api_response *r)
{
    api_request q = {.method = method,
                     .path = path,
                     .query = query ? query : "",
                     .body = (const uint8_t *)(body ? body : ""),
                     .body_len = body ? strlen(body) : 0,
                     .peer = "local",
                     .spiffe_id = who,
                     .now = g_now};
    api_response_clear(r);
    api_handle(g_svc, &q, r);
    if (r->status != 204)
        assert_non_null(r->body);
    return r->status;
}

/* Call and expect a status; returns the response body's serialization (caller frees). */
static char *expect(int want, const char *who, const char *method, const char *path,
                    const char *query, const char *body)
{
    api_response r = {0};
    int got = call(who, method, path, query, body, &r);
    char *text = r.body ? kb_json_dump(r.body) : strdup("");
    if (got != want)
        fail_msg("%s %s?%s as %s: got %d, want %d: %s", method, path, query ? query : "",
                 who ? who : "(none)", got, want, text);
    api_response_clear(&r);
    return text;
}

static void expect_free(int want, const char *who, const char *method, const char *path,
                        const char *query, const char *body)
{
    free(expect(want, who, method, path, query, body));
}

static int setup(void **state)
{
    char path[512], err[256];
    FILE *f;
    (void)state;
    kb_log_set_level(getenv("KBTEST_LOG") ? KB_LOG_DEBUG : KB_LOG_OFF);
    assert_ok(kb_secmem_init());
    kb_json_init();
    /* tmpfs: the store fsyncs every write (WAL, full sync); tests need not pay for disks. */
    char tmpl[] = "/dev/shm/kbapi.XXXXXX";
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
        kb_config_load(server_config_keys, path, "KBTEST_API_NOENV", &g_cfg, err, sizeof(err)));
    assert_ok(svc_bootstrap(g_cfg, ADMIN));
    assert_ok(svc_open(g_cfg, false, &g_svc));
    return 0;
}

static int teardown(void **state)
{
    char cmd[600];
    (void)state;
    svc_close(g_svc);
    kb_config_free(g_cfg);
    snprintf(cmd, sizeof(cmd), "%s/kb.db", g_dir);
    unlink(cmd);
    snprintf(cmd, sizeof(cmd), "%s/kb.db-wal", g_dir);
    unlink(cmd);
    snprintf(cmd, sizeof(cmd), "%s/kb.db-shm", g_dir);
    unlink(cmd);
    snprintf(cmd, sizeof(cmd), "%s/master.key", g_dir);
    unlink(cmd);
    snprintf(cmd, sizeof(cmd), "%s/keybridged.conf", g_dir);
    unlink(cmd);
    rmdir(g_dir);
    free(g_dir);
    return 0;
}

/* Create a client, optionally in a group. */
static void mk_client(const char *id, const char *app, const char *group)
{
    char body[2048];
    snprintf(body, sizeof(body), "{\"spiffe_id\":\"%s\",\"app_name\":\"%s\"}", id, app);
    expect_free(201, ADMIN, "POST", "/v1/admin/clients", NULL, body);
    if (group) {
        snprintf(body, sizeof(body), "{\"client\":\"%s\",\"group\":\"%s\"}", id, group);
        expect_free(201, ADMIN, "POST", "/v1/admin/memberships", NULL, body);
    }
}

static void mk_group(const char *g)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"name\":\"%s\"}", g);
    expect_free(201, ADMIN, "POST", "/v1/admin/groups", NULL, body);
}

static void mk_secret(const char *name, const char *b64, bool cloud, const char *grant_group)
{
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"name\":\"%s\",\"content\":\"%s\",\"cloud_sync\":%s,"
             "\"metadata\":{\"mode\":\"0440\",\"owner\":\"app\"}}",
             name, b64, cloud ? "true" : "false");
    expect_free(201, ADMIN, "POST", "/v1/admin/secrets", NULL, body);
    if (grant_group) {
        snprintf(body, sizeof(body), "{\"group\":\"%s\",\"secret\":\"%s\"}", grant_group, name);
        expect_free(201, ADMIN, "POST", "/v1/admin/grants", NULL, body);
    }
}

/* ---- route names (no store needed) --------------------------------------------- */

static void test_route_names(void **state)
{
    (void)state;
    assert_string_equal(api_route_name("GET", "/v1/secrets"), "/v1/secrets");
    assert_string_equal(api_route_name("GET", "/v1/secrets/db-pass"), "/v1/secrets/{name}");
    assert_string_equal(api_route_name("POST", "/v1/secrets:batchGet"), "/v1/secrets:batchGet");
    assert_string_equal(api_route_name("GET", "/secret/x"), "/secret/{name}");
    assert_string_equal(api_route_name("GET", "/v1/admin/secrets/x/status"),
                        "/v1/admin/secrets/{name}/status");
    assert_string_equal(api_route_name("GET", "/v1/admin/clients/12"), "/v1/admin/clients/{id}");
    assert_string_equal(api_route_name("GET", "/v1/admin/nope"), "other");
    assert_string_equal(api_route_name("GET", "/../etc/passwd"), "other");
    assert_string_equal(api_route_name("GET", "/v1/secrets/%2e%2e"), "other");
    assert_string_equal(api_route_name("GET", ""), "other");
}

/* ---- the main flow ------------------------------------------------------------------------ */

static void test_flow(void **state)
{
    (void)state;
    mk_group("ga");
    mk_group("gb");
    mk_client(CLA, "app-a", "ga");
    mk_client(CLB, "app-b", "gb");
    mk_client(CLOUD, "report", "ga");
    mk_secret("a-plain", "aGVsbG8=", false, "ga"); /* "hello" */
    mk_secret("a-cloud", "d29ybGQ=", true, "ga");  /* "world" */
    mk_secret("b-only", "c2VjcmV0", false, "gb");

    /* List: A sees both of ga's secrets, with its application name. */
    char *t = expect(200, CLA, "GET", "/v1/secrets", NULL, NULL);
    assert_non_null(strstr(t, "\"application\":\"app-a\""));
    assert_non_null(strstr(t, "\"name\":\"a-plain\""));
    assert_non_null(strstr(t, "\"name\":\"a-cloud\""));
    assert_null(strstr(t, "b-only"));
    assert_null(strstr(t, "content")); /* listing carries no content */
    free(t);

    /* The cloud client sees only the opted-in secret, whatever its groups. */
    t = expect(200, CLOUD, "GET", "/v1/secrets", NULL, NULL);
    assert_non_null(strstr(t, "a-cloud"));
    assert_null(strstr(t, "a-plain"));
    free(t);
    char *nf = expect(404, CLOUD, "GET", "/v1/secrets/no-such", NULL, NULL);
    t = expect(404, CLOUD, "GET", "/v1/secrets/a-plain", NULL, NULL);
    assert_string_equal(t, nf);
    free(t);
    free(nf);

    /* Get one: content in base64. */
    t = expect(200, CLA, "GET", "/v1/secrets/a-plain", NULL, NULL);
    assert_non_null(strstr(t, "\"content\":\"aGVsbG8=\""));
    assert_non_null(strstr(t, "\"version\":1"));
    assert_non_null(strstr(t, "\"mode\":\"0440\""));
    free(t);

    /* Not readable == missing, byte for byte, on every endpoint. */
    nf = expect(404, CLA, "GET", "/v1/secrets/nonexistent", NULL, NULL);
    t = expect(404, CLA, "GET", "/v1/secrets/b-only", NULL, NULL);
    assert_string_equal(t, nf);
    free(t);
    free(nf);
    nf = expect(404, CLA, "GET", "/v1/secrets/nonexistent", "version=1", NULL);
    t = expect(404, CLA, "GET", "/v1/secrets/b-only", "version=1", NULL);
    assert_string_equal(t, nf);
    free(t);
    free(nf);
    nf = expect(404, CLA, "GET", "/secret/nonexistent", NULL, NULL);
    t = expect(404, CLA, "GET", "/secret/b-only", NULL, NULL);
    assert_string_equal(t, nf);
    free(t);
    free(nf);
    nf = expect(200, CLA, "POST", "/v1/secrets:batchGet", NULL,
                "{\"names\":[\"a-plain\",\"nonexistent\"]}");
    t = expect(200, CLA, "POST", "/v1/secrets:batchGet", NULL,
               "{\"names\":[\"a-plain\",\"b-only\"]}");
    assert_null(strstr(t, "c2VjcmV0"));
    /* same shape: only the name differs */
    assert_non_null(strstr(t, "{\"name\":\"b-only\",\"error\":\"not_found\"}"));
    assert_non_null(strstr(nf, "{\"name\":\"nonexistent\",\"error\":\"not_found\"}"));
    free(t);
    free(nf);
    nf = expect(404, CLA, "POST", "/batchsecret", NULL,
                "{\"secrets\":[\"a-plain\",\"nonexistent\"]}");
    t = expect(404, CLA, "POST", "/batchsecret", NULL, "{\"secrets\":[\"a-plain\",\"b-only\"]}");
    assert_string_equal(t, nf);
    free(t);
    free(nf);

    /* Keywhiz shapes. */
    t = expect(200, CLA, "GET", "/secret/a-plain", NULL, NULL);
    assert_non_null(strstr(t, "\"secret\":\"aGVsbG8=\""));
    assert_non_null(strstr(t, "\"secretLength\":5"));
    assert_non_null(strstr(t, "\"mode\":\"0440\""));
    assert_non_null(strstr(t, "\"creationDate\":\""));
    free(t);
    t = expect(200, CLA, "GET", "/secrets", NULL, NULL);
    assert_true(t[0] == '[');
    assert_null(strstr(t, "\"secret\":"));
    free(t);
    t = expect(200, CLA, "POST", "/batchsecret", NULL, "{\"secrets\":[\"a-plain\",\"a-cloud\"]}");
    assert_non_null(strstr(t, "d29ybGQ="));
    free(t);

    /* Unknown client 401, non-admin on admin routes 403. */
    expect_free(401, NOBODY, "GET", "/v1/secrets", NULL, NULL);
    expect_free(401, NULL, "GET", "/v1/secrets", NULL, NULL);
    expect_free(403, CLA, "GET", "/v1/admin/secrets", NULL, NULL);
    expect_free(403, CLA, "POST", "/v1/admin/secrets", NULL,
                "{\"name\":\"evil\",\"content\":\"aGVsbG8=\"}");
    expect_free(404, ADMIN, "GET", "/v1/admin/secrets/evil", NULL, NULL);
    expect_free(403, CLOUD, "POST", "/v1/admin/grants", NULL,
                "{\"group\":\"gb\",\"secret\":\"a-plain\"}");

    /* Versions, rollback, status. */
    expect_free(200, ADMIN, "PUT", "/v1/admin/secrets/a-plain", NULL,
                "{\"content\":\"djI=\",\"metadata\":{\"mode\":\"0400\"}}");
    t = expect(200, CLA, "GET", "/v1/secrets/a-plain", NULL, NULL);
    assert_non_null(strstr(t, "\"content\":\"djI=\""));
    assert_non_null(strstr(t, "\"version\":2"));
    free(t);
    t = expect(200, CLA, "GET", "/v1/secrets/a-plain", "version=1", NULL);
    assert_non_null(strstr(t, "aGVsbG8="));
    free(t);
    t = expect(200, ADMIN, "POST", "/v1/admin/secrets/a-plain/rollback", NULL, "{\"version\":1}");
    assert_non_null(strstr(t, "\"version\":3"));
    free(t);
    t = expect(200, ADMIN, "GET", "/v1/admin/secrets/a-plain/versions", NULL, NULL);
    assert_non_null(strstr(t, "\"version\":3"));
    free(t);
    t = expect(200, ADMIN, "GET", "/v1/admin/secrets/a-plain/status", NULL, NULL);
    assert_non_null(strstr(t, CLA));
    assert_non_null(strstr(t, "\"latest_version\":3"));
    free(t);
    t = expect(200, ADMIN, "GET", "/v1/admin/secrets/a-plain", NULL, NULL);
    assert_non_null(strstr(t, "\"groups\":[\"ga\"]"));
    assert_non_null(strstr(t, "\"versions\":3"));
    assert_null(strstr(t, "aGVsbG8="));
    free(t);
    t = expect(200, ADMIN, "GET", "/v1/admin/secrets/b-only/content", NULL, NULL);
    assert_non_null(strstr(t, "c2VjcmV0"));
    free(t);

    /* Soft delete hides it from clients exactly like a missing one; restore brings it back. */
    expect_free(200, ADMIN, "DELETE", "/v1/admin/secrets/a-plain", NULL, NULL);
    nf = expect(404, CLA, "GET", "/v1/secrets/nonexistent", NULL, NULL);
    t = expect(404, CLA, "GET", "/v1/secrets/a-plain", NULL, NULL);
    assert_string_equal(t, nf);
    free(t);
    free(nf);
    t = expect(200, ADMIN, "GET", "/v1/admin/secrets", "deleted=1", NULL);
    assert_non_null(strstr(t, "a-plain"));
    free(t);
    expect_free(200, ADMIN, "POST", "/v1/admin/secrets/a-plain/restore", NULL, NULL);
    expect_free(200, CLA, "GET", "/v1/secrets/a-plain", NULL, NULL);

    /* Groups, clients, memberships, grants. */
    t = expect(200, ADMIN, "GET", "/v1/admin/groups/ga", NULL, NULL);
    assert_non_null(strstr(t, CLA));
    free(t);
    t = expect(200, ADMIN, "GET", "/v1/admin/clients",
               "spiffe_id=spiffe%3A%2F%2Fexample.org%2Fns%2Fa%2Fsa%2Fapp", NULL);
    assert_non_null(strstr(t, "\"app_name\":\"app-a\""));
    free(t);
    t = expect(200, ADMIN, "GET", "/v1/admin/clients", "stale=2700", NULL);
    assert_non_null(strstr(t, CLB)); /* B never listed */
    assert_null(strstr(t, CLA));     /* A listed just now */
    free(t);
    expect_free(409, ADMIN, "POST", "/v1/admin/groups", NULL, "{\"name\":\"ga\"}");
    expect_free(404, ADMIN, "POST", "/v1/admin/memberships", NULL,
                "{\"client\":\"" NOBODY "\",\"group\":\"ga\"}");
    expect_free(200, ADMIN, "DELETE", "/v1/admin/grants", NULL,
                "{\"group\":\"ga\",\"secret\":\"a-plain\"}");
    expect_free(404, CLA, "GET", "/v1/secrets/a-plain", NULL, NULL);
    expect_free(201, ADMIN, "POST", "/v1/admin/grants", NULL,
                "{\"group\":\"ga\",\"secret\":\"a-plain\"}");
    t = expect(200, ADMIN, "GET", "/v1/admin/expiring", "within=86400", NULL);
    assert_non_null(strstr(t, "\"secrets\":[]"));
    free(t);
    expect_free(400, ADMIN, "GET", "/v1/admin/expiring", NULL, NULL);

    /* Disable A: its next request is refused (every request re-checks). */
    t = expect(200, ADMIN, "GET", "/v1/admin/clients", "spiffe_id=" CLA, NULL);
    json_t *j = json_loads(t, 0, NULL);
    int64_t id =
        json_integer_value(json_object_get(json_array_get(json_object_get(j, "clients"), 0), "id"));
    json_decref(j);
    free(t);
    char path[64];
    snprintf(path, sizeof(path), "/v1/admin/clients/%lld", (long long)id);
    expect_free(200, ADMIN, "PATCH", path, NULL, "{\"enabled\":false}");
    t = expect(403, CLA, "GET", "/v1/secrets", NULL, NULL);
    assert_non_null(strstr(t, "\"error\":\"denied\""));
    free(t);
    expect_free(403, CLA, "GET", "/secret/a-plain", NULL, NULL);
    expect_free(200, ADMIN, "PATCH", path, NULL, "{\"enabled\":true}");
    expect_free(200, CLA, "GET", "/v1/secrets", NULL, NULL);

    /* Audit: reads, changes and denials are there, and the chain verifies. */
    t = expect(200, ADMIN, "GET", "/v1/admin/audit", "object=b-only&limit=50", NULL);
    assert_non_null(strstr(t, "secret.read"));
    free(t);
    expect_free(400, ADMIN, "GET", "/v1/admin/audit", "action=x", NULL); /* unknown filter */
    t = expect(200, ADMIN, "GET", "/v1/admin/audit", "identity=" CLA, NULL);
    assert_non_null(strstr(t, "admin.denied"));
    free(t);
    t = expect(200, ADMIN, "POST", "/v1/admin/audit/verify", NULL, NULL);
    assert_non_null(strstr(t, "\"ok\":true"));
    free(t);

    expect_free(200, CLA, "GET", "/healthz", NULL, NULL);
    expect_free(200, NULL, "GET", "/readyz", NULL, NULL);
    expect_free(405, CLA, "POST", "/healthz", NULL, NULL);
}

/* ---- bad input: 4xx JSON and no change ----------------------------------------------------- */

/* The message of an error response, or "" (caller frees). */
static char *err_of(int want, const char *who, const char *method, const char *path,
                    const char *query, const char *body, const char *code)
{
    api_response r = {0};
    int got = call(who, method, path, query, body, &r);
    if (got != want)
        fail_msg("%s %s: got %d, want %d", method, path, got, want);
    assert_string_equal(json_string_value(json_object_get(r.body, "error")), code);
    const char *m = json_string_value(json_object_get(r.body, "message"));
    char *out = strdup(m ? m : "");
    api_response_clear(&r);
    return out;
}

static size_t client_count(void)
{
    char *t = expect(200, ADMIN, "GET", "/v1/admin/clients", NULL, NULL);
    json_t *j = json_loads(t, 0, NULL);
    size_t n = json_array_size(json_object_get(j, "clients"));
    json_decref(j);
    free(t);
    return n;
}

static int64_t client_id_of(const char *sid)
{
    char q[600];
    snprintf(q, sizeof(q), "spiffe_id=%s", sid);
    char *t = expect(200, ADMIN, "GET", "/v1/admin/clients", q, NULL);
    json_t *j = json_loads(t, 0, NULL);
    int64_t id =
        json_integer_value(json_object_get(json_array_get(json_object_get(j, "clients"), 0), "id"));
    json_decref(j);
    free(t);
    return id;
}

/* Issue 10 item 8: the admin API refuses IDs the mTLS handshake would refuse, with the reason. */
static void test_admin_spiffe_ids(void **state)
{
    (void)state;
    static const struct {
        const char *id, *reason;
    } cases[] = {
        {"spiffe://example.org/ns/a/", "trailing"},     /* trailing slash */
        {"spiffe://EXAMPLE.org/ns/a", "trust domain"},  /* uppercase trust domain */
        {"spiffe://Example.org/ns/a", "trust domain"},  /* mixed case */
        {"spiffe://other.org/ns/a", "trust domain"},    /* another trust domain */
        {"spiffe://example.org", "root"},               /* root ID: not a workload */
        {"spiffe://example.org/ns//a", "segment"},      /* empty segment */
        {"spiffe://example.org/ns/%41", "character"},   /* percent-encoding */
        {"spiffe://example.org/ns/./a", "segment"},     /* dot segment */
        {"spiffe://example.org:443/ns/a", "port"},      /* port */
        {"spiffe://example.org/ns/a?x=1", "character"}, /* query */
    };
    size_t before = client_count();
    for (size_t i = 0; i < KB_ARRAY_LEN(cases); i++) {
        char body[600];
        snprintf(body, sizeof(body), "{\"spiffe_id\":\"%s\"}", cases[i].id);
        char *m = err_of(400, ADMIN, "POST", "/v1/admin/clients", NULL, body, "invalid");
        if (strstr(m, "invalid SPIFFE ID: ") != m)
            fail_msg("case %zu (%s): message '%s'", i, cases[i].id, m);
        free(m);
        char q[600];
        snprintf(q, sizeof(q), "spiffe_id=%s", cases[i].id);
        if (strchr(cases[i].id, '?') == NULL && strchr(cases[i].id, '%') == NULL) {
            m = err_of(400, ADMIN, "GET", "/v1/admin/clients", q, NULL, "invalid");
            free(m);
        }
    }
    /* the reason names the rule for the common mistakes */
    char *m = err_of(400, ADMIN, "POST", "/v1/admin/clients", NULL,
                     "{\"spiffe_id\":\"spiffe://other.org/ns/a\"}", "invalid");
    assert_non_null(strstr(m, "server's trust domain"));
    free(m);
    m = err_of(400, ADMIN, "POST", "/v1/admin/clients", NULL,
               "{\"spiffe_id\":\"spiffe://example.org\"}", "invalid");
    assert_non_null(strstr(m, "root"));
    free(m);
    assert_int_equal(client_count(), before); /* nothing was created */
    /* the canonical form is accepted */
    expect_free(201, ADMIN, "POST", "/v1/admin/clients", NULL,
                "{\"spiffe_id\":\"spiffe://example.org/ns/ok/sa/app-1.x_y\"}");
    assert_int_equal(client_count(), before + 1);
}

/* Issue 10 item 4: no change through the admin API may leave no enabled admin. */
static void test_last_admin(void **state)
{
    (void)state;
    const char *admin2 = "spiffe://example.org/ns/ops/sa/admin2";
    char path[64], path2[64];
    int64_t id = client_id_of(ADMIN);
    snprintf(path, sizeof(path), "/v1/admin/clients/%lld", (long long)id);
    /* ADMIN is the only admin: demote, disable (alone or together), delete: 409 */
    static const char *const patches[] = {"{\"admin\":false}", "{\"enabled\":false}",
                                          "{\"admin\":false,\"enabled\":false}",
                                          "{\"enabled\":true,\"admin\":false}"};
    for (size_t i = 0; i < KB_ARRAY_LEN(patches); i++) {
        char *m = err_of(409, ADMIN, "PATCH", path, NULL, patches[i], "last_admin");
        assert_non_null(strstr(m, "last enabled admin"));
        free(m);
    }
    free(err_of(409, ADMIN, "DELETE", path, NULL, NULL, "last_admin"));
    /* unchanged, still an admin; harmless patches of the last admin still work */
    expect_free(200, ADMIN, "GET", path, NULL, NULL);
    expect_free(200, ADMIN, "PATCH", path, NULL, "{\"admin\":true,\"description\":\"ops\"}");
    /* the refusals are audited */
    char *t = expect(200, ADMIN, "GET", "/v1/admin/audit", "object=" ADMIN, NULL);
    assert_non_null(strstr(t, "client.delete"));
    free(t);

    /* a DISABLED second admin does not count */
    char body[256];
    snprintf(body, sizeof(body), "{\"spiffe_id\":\"%s\",\"admin\":true,\"enabled\":false}", admin2);
    expect_free(201, ADMIN, "POST", "/v1/admin/clients", NULL, body);
    int64_t id2 = client_id_of(admin2);
    snprintf(path2, sizeof(path2), "/v1/admin/clients/%lld", (long long)id2);
    free(err_of(409, ADMIN, "PATCH", path, NULL, "{\"admin\":false}", "last_admin"));
    /* an enabled second admin does: then either may go, but not both */
    expect_free(200, ADMIN, "PATCH", path2, NULL, "{\"enabled\":true}");
    expect_free(200, ADMIN, "PATCH", path, NULL, "{\"admin\":false}");
    free(err_of(409, admin2, "PATCH", path2, NULL, "{\"enabled\":false}", "last_admin"));
    free(err_of(409, admin2, "DELETE", path2, NULL, NULL, "last_admin"));
    /* restore: ADMIN admin again, admin2 removed (allowed: ADMIN is an enabled admin) */
    expect_free(200, admin2, "PATCH", path, NULL, "{\"admin\":true}");
    expect_free(200, ADMIN, "DELETE", path2, NULL, NULL);
    expect_free(200, ADMIN, "GET", "/v1/admin/clients", NULL, NULL);
}

/* Break-glass: a store left with no enabled admin (here by a direct store change, as an older
 * database or a lost key would) is recovered by svc_recover_admin, which is audited; it refuses
 * while an enabled admin exists unless forced, and refuses foreign or malformed IDs. */
static void test_recover_admin(void **state)
{
    (void)state;
    int64_t id = client_id_of(ADMIN);
    assert_kb(svc_recover_admin(g_cfg, ADMIN, false), KB_ERR_EXISTS); /* ADMIN is enabled */
    assert_kb(svc_recover_admin(g_cfg, "spiffe://other.org/ns/x", true), KB_ERR_INVALID);
    assert_kb(svc_recover_admin(g_cfg, "spiffe://example.org/ns/x/", true), KB_ERR_INVALID);
    assert_kb(svc_recover_admin(g_cfg, "spiffe://example.org", true), KB_ERR_INVALID);
    store_client_patch p = STORE_CLIENT_PATCH_INIT;
    p.enabled = 0;
    assert_ok(store_client_update(svc_store(g_svc), id, &p, NULL));
    expect_free(403, ADMIN, "GET", "/v1/admin/clients", NULL, NULL); /* locked out */
    assert_ok(svc_recover_admin(g_cfg, ADMIN, false));
    char *t = expect(200, ADMIN, "GET", "/v1/admin/audit", "object=" ADMIN, NULL);
    assert_non_null(strstr(t, "\"admin.recover\""));
    assert_non_null(strstr(t, "\"recover-admin\""));
    free(t);
}

static void bad(int want, const char *who, const char *method, const char *path, const char *q,
                const char *body)
{
    api_response r = {0};
    int got = call(who, method, path, q, body, &r);
    if (got != want)
        fail_msg("%s %s: got %d, want %d", method, path, got, want);
    assert_true(got >= 400 && got < 500);
    assert_true(json_is_string(json_object_get(r.body, "error")));
    assert_true(json_is_string(json_object_get(r.body, "message")));
    api_response_clear(&r);
}

static void test_bad_input(void **state)
{
    char *before, *after;
    (void)state;
    mk_group("gz");
    mk_secret("z-one", "b25l", false, "gz");
    before = expect(200, ADMIN, "GET", "/v1/admin/secrets/z-one/versions", NULL, NULL);

    /* Malformed, wrong types, unknown fields, non-UTF-8, duplicates, trailing data. */
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL, "{\"content\":");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL, "[\"content\"]");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL, "{\"content\":5}");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL, "{\"content\":\"b25l\",\"x\":1}");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL,
        "{\"content\":\"b25l\",\"content\":\"b25l\"}");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL, "{\"content\":\"b25l\"} x");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL, "{\"content\":\"\xff\xfe\"}");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL, "{\"content\":\"b2 5l\"}");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL,
        "{\"content\":\"b25l\",\"metadata\":[]}");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL,
        "{\"content\":\"b25l\",\"metadata\":{\"a\":1}}");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL,
        "{\"content\":\"b25l\",\"metadata\":{\"a\":\"\\u0001\"}}");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL,
        "{\"content\":\"b25l\",\"expires_at\":-1}");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL,
        "{\"content\":\"b25l\",\"expires_at\":\"1\"}");
    bad(400, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL, "");
    bad(400, ADMIN, "PATCH", "/v1/admin/secrets/z-one", NULL, "{\"cloud_sync\":\"yes\"}");
    bad(400, ADMIN, "POST", "/v1/admin/secrets/z-one/rollback", NULL, "{\"version\":0}");
    bad(400, ADMIN, "POST", "/v1/admin/secrets", NULL,
        "{\"name\":\"a\\u0000b\",\"content\":\"b25l\"}");
    bad(400, ADMIN, "POST", "/v1/admin/secrets", NULL, "{\"name\":\"../x\",\"content\":\"b25l\"}");
    bad(400, ADMIN, "POST", "/v1/admin/secrets", NULL,
        "{\"name\":\".hidden\",\"content\":\"b25l\"}");
    bad(400, ADMIN, "POST", "/v1/admin/clients", NULL, "{\"spiffe_id\":\"http://x\"}");
    bad(400, ADMIN, "POST", "/v1/admin/clients", NULL,
        "{\"spiffe_id\":\"spiffe://e.org/x\",\"admin\":1}");
    bad(400, CLA, "POST", "/v1/secrets:batchGet", NULL, "{\"names\":\"z-one\"}");
    bad(400, CLA, "POST", "/v1/secrets:batchGet", NULL, "{\"names\":[]}");
    bad(400, CLA, "POST", "/v1/secrets:batchGet", NULL, "{\"names\":[1]}");
    bad(400, CLA, "POST", "/v1/secrets:batchGet", NULL, "{\"names\":[\"a\",\"a\"]}");
    bad(400, CLA, "POST", "/v1/secrets:batchGet", NULL, "{\"names\":[\"a\"],\"more\":1}");
    bad(400, CLA, "POST", "/batchsecret", NULL, "{\"names\":[\"a\"]}");

    /* Oversized: a name at the limit is fine to ask for, one past it is refused. */
    char name[MODEL_NAME_MAX + 2];
    char path[MODEL_NAME_MAX + 32];
    memset(name, 'n', sizeof(name));
    name[MODEL_NAME_MAX] = '\0';
    snprintf(path, sizeof(path), "/v1/secrets/%s", name);
    expect_free(404, CLA, "GET", path, NULL, NULL);
    name[MODEL_NAME_MAX] = 'n';
    name[MODEL_NAME_MAX + 1] = '\0';
    snprintf(path, sizeof(path), "/v1/secrets/%s", name);
    bad(400, CLA, "GET", path, NULL, NULL);
    /* A body over API_BODY_MAX. */
    size_t big = API_BODY_MAX + 16;
    char *body = malloc(big + 1);
    memset(body, ' ', big);
    body[0] = '{';
    body[big - 1] = '}';
    body[big] = '\0';
    bad(413, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL, body);
    /* Content over the store's limit (64 KiB default): 96 KiB of base64. */
    size_t clen = 96 * 1024;
    snprintf(body, big, "{\"content\":\"");
    size_t off = strlen(body);
    memset(body + off, 'A', clen);
    snprintf(body + off + clen, 8, "\"}");
    bad(413, ADMIN, "PUT", "/v1/admin/secrets/z-one", NULL, body);
    /* Too many names in a batch. */
    off = (size_t)snprintf(body, big, "{\"names\":[");
    for (int i = 0; i <= STORE_BATCH_MAX; i++)
        off += (size_t)snprintf(body + off, big - off, "%s\"n%d\"", i ? "," : "", i);
    snprintf(body + off, big - off, "]}");
    bad(413, CLA, "POST", "/v1/secrets:batchGet", NULL, body);
    free(body);

    /* Path tricks. */
    bad(400, CLA, "GET", "/v1/secrets/..", NULL, NULL);
    bad(400, CLA, "GET", "/v1/secrets/../admin/secrets", NULL, NULL);
    bad(400, CLA, "GET", "/v1/secrets/%2e%2e", NULL, NULL);
    bad(400, CLA, "GET", "/v1/secrets/a%2fb", NULL, NULL);
    bad(400, CLA, "GET", "/v1/secrets/z-one%00", NULL, NULL);
    bad(400, CLA, "GET", "/v1//secrets", NULL, NULL);
    bad(400, CLA, "GET", "/v1/secrets/", NULL, NULL);
    bad(400, CLA, "GET", "/v1/secrets/a\\b", NULL, NULL);
    bad(400, CLA, "GET", "v1/secrets", NULL, NULL);
    bad(400, CLA, "GET", "/v1/secrets/.hidden", NULL, NULL);
    bad(400, ADMIN, "DELETE", "/v1/admin/secrets/..", NULL, NULL);
    bad(400, ADMIN, "DELETE", "/v1/admin/secrets/z-one%2f..", NULL, NULL);
    bad(400, CLA, "GET", "/v1/secrets/z-one", "version=abc", NULL);
    bad(400, CLA, "GET", "/v1/secrets/z-one", "version=-1", NULL);
    bad(400, CLA, "GET", "/v1/secrets/z-one", "version=1&version=2", NULL);
    bad(400, CLA, "GET", "/v1/secrets/z-one", "verbose=1", NULL);
    bad(400, CLA, "GET", "/v1/secrets/z-one", "version=%0", NULL);
    bad(400, ADMIN, "GET", "/v1/admin/clients", "spiffe_id=%00", NULL);
    bad(400, ADMIN, "GET", "/v1/admin/clients/0", NULL, NULL);
    bad(400, ADMIN, "GET", "/v1/admin/clients/1x", NULL, NULL);
    bad(404, CLA, "GET", "/v1/nope", NULL, NULL);
    bad(405, CLA, "DELETE", "/v1/secrets", NULL, NULL);

    after = expect(200, ADMIN, "GET", "/v1/admin/secrets/z-one/versions", NULL, NULL);
    assert_string_equal(before, after); /* nothing above changed the store */
    free(before);
    free(after);
    expect_free(404, ADMIN, "GET", "/v1/admin/secrets/x", NULL, NULL);
}

/* ---- ACL property test ---------------------------------------------------------------------- */

#define P_CLIENTS 8
#define P_GROUPS 5
#define P_SECRETS 16
#define P_TRIALS 10000

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(uint32_t n)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 2685821657736338717ULL) >> 33) % n;
}

static void test_acl_property(void **state)
{
    bool member[P_CLIENTS][P_GROUPS] = {{false}}, grant[P_GROUPS][P_SECRETS] = {{false}};
    bool cloud_c[P_CLIENTS], cloud_s[P_SECRETS];
    char cid[P_CLIENTS][96], sname[P_SECRETS][32], gname[P_GROUPS][16], body[4096];
    char b64[P_SECRETS][16];
    (void)state;

    for (int g = 0; g < P_GROUPS; g++) {
        snprintf(gname[g], sizeof(gname[g]), "pg%d", g);
        mk_group(gname[g]);
    }
    for (int c = 0; c < P_CLIENTS; c++) {
        cloud_c[c] = c % 3 == 0;
        snprintf(cid[c], sizeof(cid[c]),
                 cloud_c[c] ? "spiffe://example.org/lambda/acct/%d/fn/f"
                            : "spiffe://example.org/ns/p/sa/c%d",
                 c);
        mk_client(cid[c], "papp", NULL);
        for (int g = 0; g < P_GROUPS; g++) {
            if (rnd(3) == 0) {
                member[c][g] = true;
                snprintf(body, sizeof(body), "{\"client\":\"%s\",\"group\":\"%s\"}", cid[c],
                         gname[g]);
                expect_free(201, ADMIN, "POST", "/v1/admin/memberships", NULL, body);
            }
        }
    }
    for (int s = 0; s < P_SECRETS; s++) {
        char raw[8];
        snprintf(sname[s], sizeof(sname[s]), "ps%02d", s);
        snprintf(raw, sizeof(raw), "val%02d", s);
        char *e = kb_b64_encode_str((const uint8_t *)raw, strlen(raw), KB_B64_STD);
        snprintf(b64[s], sizeof(b64[s]), "%s", e);
        kb_json_free_str(e);
        cloud_s[s] = rnd(2) == 0;
        mk_secret(sname[s], b64[s], cloud_s[s], NULL);
        for (int g = 0; g < P_GROUPS; g++) {
            if (rnd(4) == 0) {
                grant[g][s] = true;
                snprintf(body, sizeof(body), "{\"group\":\"%s\",\"secret\":\"%s\"}", gname[g],
                         sname[s]);
                expect_free(201, ADMIN, "POST", "/v1/admin/grants", NULL, body);
            }
        }
    }
    bool may[P_CLIENTS][P_SECRETS];
    for (int c = 0; c < P_CLIENTS; c++)
        for (int s = 0; s < P_SECRETS; s++) {
            bool shared = false;
            for (int g = 0; g < P_GROUPS; g++)
                shared |= member[c][g] && grant[g][s];
            may[c][s] = shared && (!cloud_c[c] || cloud_s[s]);
        }

    char *nf_native = expect(404, cid[1], "GET", "/v1/secrets/absent", NULL, NULL);
    char *nf_kw = expect(404, cid[1], "GET", "/secret/absent", NULL, NULL);
    int reads = 0, denials = 0;
    for (int t = 0; t < P_TRIALS; t++) {
        int c = (int)rnd(P_CLIENTS), kind = (int)rnd(5);
        api_response r = {0};
        char path[64];
        if (kind == 0 || kind == 1) { /* get one: native or Keywhiz */
            int s = (int)rnd(P_SECRETS);
            snprintf(path, sizeof(path), kind == 0 ? "/v1/secrets/%s" : "/secret/%s", sname[s]);
            int st = call(cid[c], "GET", path, NULL, NULL, &r);
            char *txt = kb_json_dump(r.body);
            if (may[c][s]) {
                assert_int_equal(st, 200);
                assert_non_null(strstr(txt, b64[s]));
                reads++;
            } else {
                assert_int_equal(st, 404);
                assert_string_equal(txt, kind == 0 ? nf_native : nf_kw);
                denials++;
            }
            kb_json_free_str(txt);
        } else if (kind == 2 || kind == 3) { /* batch: native or Keywhiz */
            int k = 1 + (int)rnd(4), picked[4];
            size_t off =
                (size_t)snprintf(body, sizeof(body), kind == 2 ? "{\"names\":[" : "{\"secrets\":[");
            bool all = true;
            for (int i = 0; i < k; i++) {
                int s;
                bool dup;
                do {
                    s = (int)rnd(P_SECRETS);
                    dup = false;
                    for (int j = 0; j < i; j++)
                        dup |= picked[j] == s;
                } while (dup);
                picked[i] = s;
                all &= may[c][s];
                off += (size_t)snprintf(body + off, sizeof(body) - off, "%s\"%s\"", i ? "," : "",
                                        sname[s]);
            }
            snprintf(body + off, sizeof(body) - off, "]}");
            int st = call(cid[c], "POST", kind == 2 ? "/v1/secrets:batchGet" : "/batchsecret", NULL,
                          body, &r);
            if (kind == 3 && !all) {
                char *txt = kb_json_dump(r.body);
                assert_int_equal(st, 404);
                assert_string_equal(txt, nf_kw);
                kb_json_free_str(txt);
                denials++;
            } else {
                assert_int_equal(st, 200);
                json_t *arr = kind == 2 ? json_object_get(r.body, "secrets") : r.body;
                assert_int_equal(json_array_size(arr), k);
                for (int i = 0; i < k; i++) {
                    json_t *e = json_array_get(arr, (size_t)i);
                    const char *content =
                        json_string_value(json_object_get(e, kind == 2 ? "content" : "secret"));
                    assert_string_equal(json_string_value(json_object_get(e, "name")),
                                        sname[picked[i]]);
                    if (may[c][picked[i]]) {
                        assert_non_null(content);
                        assert_string_equal(content, b64[picked[i]]);
                        reads++;
                    } else {
                        assert_null(content);
                        assert_int_equal(json_object_size(e), 2);
                        assert_string_equal(json_string_value(json_object_get(e, "error")),
                                            "not_found");
                        denials++;
                    }
                }
            }
        } else { /* list: exactly the readable names, native or Keywhiz */
            bool kw = rnd(2) == 0;
            int st = call(cid[c], "GET", kw ? "/secrets" : "/v1/secrets", NULL, NULL, &r);
            assert_int_equal(st, 200);
            json_t *arr = kw ? r.body : json_object_get(r.body, "secrets");
            size_t n = 0;
            for (int s = 0; s < P_SECRETS; s++)
                n += may[c][s];
            size_t pn = 0;
            for (size_t i = 0; i < json_array_size(arr); i++) {
                const char *nm = json_string_value(json_object_get(json_array_get(arr, i), "name"));
                if (strncmp(nm, "ps", 2) != 0)
                    continue;
                int s = (int)strtol(nm + 2, NULL, 10);
                assert_true(may[c][s]);
                pn++;
            }
            assert_int_equal(pn, n);
        }
        api_response_clear(&r);
    }
    free(nf_native);
    free(nf_kw);
    /* The trial mix must actually exercise both outcomes. */
    assert_true(reads > 100);
    assert_true(denials > 100);
}

/* ---- the listing cache (api.h, docs/internals/api.md) ------------------------------------- */

#define CLC "spiffe://example.org/ns/c/sa/app"
#define CLOUDC "spiffe://example.org/lambda/acct/1/fn/lc"

/* A list through api_handle_raw (what serve.c sends); the bytes, malloc'd and NUL-terminated. */
static char *list_raw(const char *who, const char *path, int want)
{
    api_request q = {.method = "GET",
                     .path = path,
                     .query = "",
                     .peer = "local",
                     .spiffe_id = who,
                     .now = g_now};
    api_response r = {0};
    char *out;
    api_handle_raw(g_svc, &q, &r);
    assert_int_equal(r.status, want);
    if (r.raw != NULL) {
        assert_null(r.body);
        out = strndup(r.raw, r.raw_len);
        assert_int_equal(strlen(out), r.raw_len);
    } else {
        assert_non_null(r.body);
        out = kb_json_dump(r.body);
    }
    assert_non_null(out);
    api_response_clear(&r);
    return out;
}

static uint64_t cache_hits(void)
{
    api_list_cache_stats st;
    api_list_cache_stats_get(&st);
    return st.hits;
}

/* Bytes equal what jansson makes of them (so the hand-rendered body is the old tree's dump). */
static void assert_jansson_identical(const char *raw)
{
    json_t *j = json_loads(raw, 0, NULL);
    assert_non_null(j);
    char *d = kb_json_dump(j);
    assert_string_equal(d, raw);
    free(d);
    json_decref(j);
}

static void test_list_cache(void **state)
{
    (void)state;
    char *a, *b, *c;
    uint64_t h;

    mk_group("lc");
    mk_client(CLC, "app-c", "lc");
    mk_client(CLOUDC, "lc-fn", "lc");
    /* Metadata that needs escaping, to check the pasted canonical text. */
    expect_free(201, ADMIN, "POST", "/v1/admin/secrets", NULL,
                "{\"name\":\"lc-one\",\"content\":\"aGVsbG8=\",\"cloud_sync\":false,"
                "\"metadata\":{\"owner\":\"a\\\"b\\\\c/\\u00e9\",\"mode\":\"0400\"}}");
    expect_free(201, ADMIN, "POST", "/v1/admin/grants", NULL,
                "{\"group\":\"lc\",\"secret\":\"lc-one\"}");
    mk_secret("lc-two", "d29ybGQ=", false, NULL);

    /* A miss, then a hit: the same bytes, and those are jansson's dump of the same tree. */
    h = cache_hits();
    a = list_raw(CLC, "/v1/secrets", 200);
    b = list_raw(CLC, "/v1/secrets", 200);
    assert_int_equal(cache_hits(), h + 1);
    assert_string_equal(a, b);
    assert_jansson_identical(a);
    assert_non_null(strstr(a, "\"application\":\"app-c\""));
    assert_non_null(strstr(a, "lc-one"));
    assert_null(strstr(a, "lc-two"));
    free(b);
    /* In-process callers get the tree: the same text again. */
    b = expect(200, CLC, "GET", "/v1/secrets", NULL, NULL);
    assert_string_equal(a, b);
    free(b);
    /* Uncached (emptied cache): byte-identical. */
    api_list_cache_clear();
    h = cache_hits();
    b = list_raw(CLC, "/v1/secrets", 200);
    assert_int_equal(cache_hits(), h);
    assert_string_equal(a, b);
    free(b);
    free(a);
    /* Keywhiz's shape likewise. */
    a = list_raw(CLC, "/secrets", 200);
    b = list_raw(CLC, "/secrets", 200);
    assert_string_equal(a, b);
    assert_jansson_identical(a);
    api_list_cache_clear();
    c = list_raw(CLC, "/secrets", 200);
    assert_string_equal(a, c);
    free(a);
    free(b);
    free(c);
    /* The native and Keywhiz entries never stand in for each other. */
    a = list_raw(CLC, "/v1/secrets", 200);
    b = list_raw(CLC, "/secrets", 200);
    assert_string_not_equal(a, b);
    assert_true(a[0] == '{' && b[0] == '[');
    free(a);
    free(b);

    /* A grant added, then removed: visible on the very next list (cache primed before). */
    free(list_raw(CLC, "/v1/secrets", 200));
    expect_free(201, ADMIN, "POST", "/v1/admin/grants", NULL,
                "{\"group\":\"lc\",\"secret\":\"lc-two\"}");
    a = list_raw(CLC, "/v1/secrets", 200);
    assert_non_null(strstr(a, "lc-two"));
    free(a);
    free(list_raw(CLC, "/v1/secrets", 200));
    expect_free(200, ADMIN, "DELETE", "/v1/admin/grants", NULL,
                "{\"group\":\"lc\",\"secret\":\"lc-two\"}");
    a = list_raw(CLC, "/v1/secrets", 200);
    assert_null(strstr(a, "lc-two"));
    free(a);

    /* A new version. */
    a = list_raw(CLC, "/v1/secrets", 200);
    assert_non_null(strstr(a, "\"name\":\"lc-one\",\"version\":1,"));
    free(a);
    expect_free(200, ADMIN, "PUT", "/v1/admin/secrets/lc-one", NULL, "{\"content\":\"YWdhaW4=\"}");
    a = list_raw(CLC, "/v1/secrets", 200);
    assert_non_null(strstr(a, "\"name\":\"lc-one\",\"version\":2,"));
    free(a);

    /* cloud_sync flipped on and off: the cloud client's next list follows. */
    a = list_raw(CLOUDC, "/v1/secrets", 200);
    assert_null(strstr(a, "lc-one"));
    free(a);
    expect_free(200, ADMIN, "PATCH", "/v1/admin/secrets/lc-one", NULL, "{\"cloud_sync\":true}");
    a = list_raw(CLOUDC, "/v1/secrets", 200);
    assert_non_null(strstr(a, "lc-one"));
    free(a);
    free(list_raw(CLOUDC, "/v1/secrets", 200));
    expect_free(200, ADMIN, "PATCH", "/v1/admin/secrets/lc-one", NULL, "{\"cloud_sync\":false}");
    a = list_raw(CLOUDC, "/v1/secrets", 200);
    assert_null(strstr(a, "lc-one"));
    free(a);

    /* Disabled: refused although its listing is cached; removed: unknown. */
    free(list_raw(CLC, "/v1/secrets", 200));
    free(list_raw(CLC, "/secrets", 200));
    a = expect(200, ADMIN, "GET", "/v1/admin/clients", "spiffe_id=" CLC, NULL);
    json_t *j = json_loads(a, 0, NULL);
    int64_t id =
        json_integer_value(json_object_get(json_array_get(json_object_get(j, "clients"), 0), "id"));
    json_decref(j);
    assert_non_null(strstr(a, "\"last_list_at\":1")); /* listings mark the client */
    free(a);
    char path[64];
    snprintf(path, sizeof(path), "/v1/admin/clients/%lld", (long long)id);
    expect_free(200, ADMIN, "PATCH", path, NULL, "{\"enabled\":false}");
    a = list_raw(CLC, "/v1/secrets", 403);
    assert_null(strstr(a, "lc-one"));
    free(a);
    a = list_raw(CLC, "/secrets", 403);
    assert_null(strstr(a, "lc-one"));
    free(a);
    expect_free(200, ADMIN, "PATCH", path, NULL, "{\"enabled\":true}");
    free(list_raw(CLC, "/v1/secrets", 200));
    expect_free(200, ADMIN, "DELETE", path, NULL, NULL);
    a = list_raw(CLC, "/v1/secrets", 401);
    assert_null(strstr(a, "lc-one"));
    free(a);

    /* A later request (past the lifetime) renders again: changes by other processes show. */
    free(list_raw(CLOUDC, "/v1/secrets", 200));
    h = cache_hits();
    g_now += API_LIST_CACHE_TTL;
    free(list_raw(CLOUDC, "/v1/secrets", 200));
    assert_int_equal(cache_hits(), h);
    g_now -= API_LIST_CACHE_TTL;
    /* A clock that went back does not revive an entry either. */
    free(list_raw(CLOUDC, "/v1/secrets", 200));
    assert_int_equal(cache_hits(), h);
    api_list_cache_clear();
    api_list_cache_stats st;
    api_list_cache_stats_get(&st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_names), cmocka_unit_test(test_flow),
        cmocka_unit_test(test_bad_input),   cmocka_unit_test(test_acl_property),
        cmocka_unit_test(test_list_cache),  cmocka_unit_test(test_admin_spiffe_ids),
        cmocka_unit_test(test_last_admin),  cmocka_unit_test(test_recover_admin),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
