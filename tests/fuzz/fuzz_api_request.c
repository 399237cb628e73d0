/* fuzz_api_request.c - libFuzzer target for every request parser of the API: JSON bodies of all
 * body-taking routes (native, Keywhiz and admin), raw paths and raw queries, through api_handle
 * with a real service (development key file keystore, SQLite on tmpfs).
 *
 * Input: byte 0 picks the route (or "path"/"query" mode), the rest is the body, path or query.
 * Invariants checked: every answer has a status in 200..599 and a JSON body with "error" for
 * 4xx/5xx; nothing crashes, leaks or reads out of bounds (ASan/UBSan).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/secbuf.h"
#include "server/api.h"
#include "server/server_config.h"
#include "server/service.h"

#define ADMIN "spiffe://example.org/ns/ops/sa/admin"
#define CLIENT "spiffe://example.org/ns/a/sa/app"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static svc *g_svc;
static kb_config *g_cfg;

static const struct {
    const char *who, *method, *path;
} routes[] = {
    {ADMIN, "POST", "/v1/admin/secrets"},       {ADMIN, "PUT", "/v1/admin/secrets/fz"},
    {ADMIN, "PATCH", "/v1/admin/secrets/fz"},   {ADMIN, "POST", "/v1/admin/secrets/fz/rollback"},
    {ADMIN, "POST", "/v1/admin/groups"},        {ADMIN, "POST", "/v1/admin/clients"},
    {ADMIN, "PATCH", "/v1/admin/clients/2"},    {ADMIN, "POST", "/v1/admin/memberships"},
    {ADMIN, "DELETE", "/v1/admin/memberships"}, {ADMIN, "POST", "/v1/admin/grants"},
    {ADMIN, "DELETE", "/v1/admin/grants"},      {ADMIN, "POST", "/v1/admin/audit/verify"},
    {CLIENT, "POST", "/v1/secrets:batchGet"},   {CLIENT, "POST", "/batchsecret"},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static void call(const char *who, const char *method, const char *path, const char *query,
                 const uint8_t *body, size_t len)
{
    api_request q = {method, path, query, body, len, "fuzz", who, 1700000000};
    api_response r;
    api_handle(g_svc, &q, &r);
    if (r.status < 200 || r.status > 599)
        abort();
    if (r.status >= 400 && !json_is_string(json_object_get(r.body, "error")))
        abort();
    api_response_clear(&r);
}

static void init(void)
{
    char dir[] = "/dev/shm/kbfuzz.XXXXXX", path[256], err[256];
    FILE *f;
    kb_log_set_level(KB_LOG_OFF);
    if (kb_secmem_init() != KB_OK || mkdtemp(dir) == NULL)
        abort();
    kb_json_init();
    snprintf(path, sizeof(path), "%s/kb.conf", dir);
    f = fopen(path, "w");
    if (f == NULL)
        abort();
    fprintf(f,
            "[store]\nurl = sqlite:%s/kb.db\n[hsm]\nkeystore = file\nkey_file = %s/key\n"
            "[audit]\nanchor_every_rows = -1\n",
            dir, dir);
    fclose(f);
    if (kb_config_load(server_config_keys, path, "KBFUZZ_NOENV", &g_cfg, err, sizeof(err)) !=
            KB_OK ||
        svc_bootstrap(g_cfg, ADMIN) != KB_OK || svc_open(g_cfg, false, &g_svc) != KB_OK)
        abort();
    static const char *const setup[][2] = {
        {"/v1/admin/groups", "{\"name\":\"fg\"}"},
        {"/v1/admin/clients", "{\"spiffe_id\":\"" CLIENT "\"}"},
        {"/v1/admin/memberships", "{\"client\":\"" CLIENT "\",\"group\":\"fg\"}"},
        {"/v1/admin/secrets", "{\"name\":\"fz\",\"content\":\"eA==\"}"},
        {"/v1/admin/grants", "{\"group\":\"fg\",\"secret\":\"fz\"}"},
    };
    for (size_t i = 0; i < sizeof(setup) / sizeof(setup[0]); i++)
        call(ADMIN, "POST", setup[i][0], "", (const uint8_t *)setup[i][1], strlen(setup[i][1]));
    /* The files stay open through the handle; the directory can go now. */
    snprintf(path, sizeof(path), "%s/kb.conf", dir);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;
    if (g_svc == NULL)
        init();
    if (size < 1)
        return 0;
    unsigned sel = data[0] % (NROUTES + 2);
    data++;
    size--;
    if (sel < NROUTES) {
        call(routes[sel].who, routes[sel].method, routes[sel].path, "", data, size);
        return 0;
    }
    /* Raw path or query: the HTTP layer hands over NUL-free strings. */
    text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (strlen(text) == size) {
        if (sel == NROUTES)
            call(CLIENT, "GET", text, "", (const uint8_t *)"", 0);
        else
            call(ADMIN, "GET", "/v1/admin/audit", text, (const uint8_t *)"", 0);
    }
    free(text);
    return 0;
}
