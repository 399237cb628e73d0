/* transport.c - in-process (local) dispatch of CLI calls to api_handle, and shared output. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/prog.h"
#include "server/server_config.h"

const kb_config_key cli_config_keys[] = {
    {"client", "server_url", KB_CFG_STRING, "https://127.0.0.1:8443",
     "keybridged address, or a comma-separated list of replicas (at most 8) tried from a "
     "per-client offset with failover on connection errors and 502/503/504 (docs/failover.md); "
     "--server URL (repeatable) replaces it"},
    {"client", "server_id", KB_CFG_STRING, NULL,
     "keybridged's SPIFFE ID; any other server is refused (required for remote calls)"},
    {"client", "cert_file", KB_CFG_PATH, NULL, "the CLI's SVID chain (PEM)"},
    {"client", "key_file", KB_CFG_PATH, NULL, "the CLI's SVID private key (PEM, 0600)"},
    {"client", "bundle_file", KB_CFG_PATH, NULL, "trust bundle (PEM) for the server's SVID"},
    {"client", "timeout", KB_CFG_DURATION, "30s", "request timeout"},
    {"log", "level", KB_CFG_STRING, "warn", "debug, info, warn or error"},
    {NULL, NULL, 0, NULL, NULL},
};

static kb_err local_open(cli *c)
{
    char err[256];
    if (c->svc)
        return KB_OK;
    if (c->as_id == NULL) {
        fprintf(stderr, "keybridge: --local needs --as SPIFFE_ID (the identity to act as)\n");
        return KB_ERR_CONFIG;
    }
    if (kb_config_load(server_config_keys, c->local_config, SERVER_ENV_PREFIX, &c->server_cfg, err,
                       sizeof(err)) != KB_OK) {
        fprintf(stderr, "keybridge: keybridged configuration error: %s\n", err);
        return KB_ERR_CONFIG;
    }
    kb_err rc = svc_open(c->server_cfg, false, &c->svc);
    if (rc != KB_OK)
        fprintf(stderr, "keybridge: cannot open the local store (%s); see the log above\n",
                kb_err_str(rc));
    return rc;
}

kb_err cli_call(cli *c, const char *method, const char *path, const char *query, const json_t *body,
                api_response *resp)
{
    char *text = NULL;
    kb_err rc = KB_OK;
    size_t len = 0;

    memset(resp, 0, sizeof(*resp));
    if (body) {
        text = kb_json_dump(body);
        if (text == NULL)
            return KB_ERR_NOMEM;
        len = strlen(text);
    }
    if (c->local_config) {
        api_request req = {
            .method = method,
            .path = path,
            .query = query ? query : "",
            .body = (const uint8_t *)text,
            .body_len = len,
            .peer = "local",
            .spiffe_id = c->as_id,
            .now = (int64_t)time(NULL),
        };
        rc = local_open(c);
        if (rc == KB_OK)
            api_handle(c->svc, &req, resp);
    } else {
        rc = cli_transport_https(c, method, path, query ? query : "", text, len, resp);
    }
    kb_json_free_str(text);
    return rc;
}

/* Without the HTTPS transport linked in, remote mode says so. */
__attribute__((weak)) kb_err cli_transport_https(cli *c, const char *method, const char *path,
                                                 const char *query, const char *body,
                                                 size_t body_len, api_response *resp)
{
    (void)c, (void)method, (void)path, (void)query, (void)body, (void)body_len, (void)resp;
    fprintf(stderr, "keybridge: remote mode is not available in this build; use --local\n");
    return KB_ERR_UNAVAILABLE;
}

void cli_close(cli *c)
{
    svc_close(c->svc);
    kb_config_free(c->server_cfg);
    c->svc = NULL;
    c->server_cfg = NULL;
    kb_urllist_free(&c->servers);
    c->cfg = NULL; /* kb_prog_main's */
}

int cli_fail(const api_response *r)
{
    const char *code = json_string_value(json_object_get(r->body, "error"));
    const char *msg = json_string_value(json_object_get(r->body, "message"));
    fprintf(stderr, "keybridge: %s (%s, HTTP %d)\n", msg ? msg : "request failed",
            code ? code : "error", r->status);
    switch (r->status) {
    case 401:
    case 403:
        return KB_EXIT_DENIED;
    case 404:
        return KB_EXIT_NOTFOUND;
    case 400:
    case 409:
    case 413:
    case 422:
        return KB_EXIT_USAGE;
    default:
        return KB_EXIT_FAIL;
    }
}

int cli_check(const api_response *r)
{
    if (r->status >= 200 && r->status < 300)
        return KB_EXIT_OK;
    return cli_fail(r);
}

kb_err cli_path(char *out, size_t len, const char *prefix, const char *name, const char *suffix)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t pos = 0;
    int n = snprintf(out, len, "%s", prefix);
    KB_ENSURE(n >= 0 && (size_t)n < len, KB_ERR_TOO_LARGE);
    pos = (size_t)n;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        KB_ENSURE(pos + 4 < len, KB_ERR_TOO_LARGE);
        if (isalnum(*p) || strchr("-._~+=@", *p)) {
            out[pos++] = (char)*p;
        } else {
            out[pos++] = '%';
            out[pos++] = hex[*p >> 4];
            out[pos++] = hex[*p & 15];
        }
    }
    n = snprintf(out + pos, len - pos, "%s", suffix ? suffix : "");
    KB_ENSURE(n >= 0 && (size_t)n < len - pos, KB_ERR_TOO_LARGE);
    return KB_OK;
}

static void cell(const json_t *v, char *buf, size_t len)
{
    if (v == NULL || json_is_null(v))
        snprintf(buf, len, "-");
    else if (json_is_string(v))
        snprintf(buf, len, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
    else if (json_is_true(v))
        snprintf(buf, len, "yes");
    else if (json_is_false(v))
        snprintf(buf, len, "no");
    else {
        char *s = kb_json_dump(v);
        snprintf(buf, len, "%s", s ? s : "?");
        kb_json_free_str(s);
    }
}

void cli_table(FILE *f, const json_t *rows, const char *const *cols)
{
    size_t ncol = 0, width[16] = {0};
    size_t i;
    json_t *row;
    char buf[256];

    while (cols[ncol] && ncol < 16)
        ncol++;
    for (size_t c = 0; c < ncol; c++)
        width[c] = strlen(cols[c]);
    json_array_foreach(rows, i, row)
    {
        for (size_t c = 0; c < ncol; c++) {
            cell(json_object_get(row, cols[c]), buf, sizeof(buf));
            if (strlen(buf) > width[c])
                width[c] = strlen(buf);
        }
    }
    for (size_t c = 0; c < ncol; c++) {
        for (const char *p = cols[c]; *p; p++)
            fputc(toupper((unsigned char)*p), f);
        fprintf(f, "%*s", (int)(width[c] - strlen(cols[c]) + (c + 1 < ncol ? 2 : 0)), "");
    }
    fputc('\n', f);
    json_array_foreach(rows, i, row)
    {
        for (size_t c = 0; c < ncol; c++) {
            cell(json_object_get(row, cols[c]), buf, sizeof(buf));
            fprintf(f, "%-*s%s", (int)width[c], buf, c + 1 < ncol ? "  " : "");
        }
        fputc('\n', f);
    }
}

void cli_print_json(FILE *f, const json_t *v)
{
    if (v)
        json_dumpf(v, f, JSON_INDENT(2) | JSON_SORT_KEYS);
    fputc('\n', f);
}

int cli_dispatch(cli *c, const char *group, const cli_cmd *table, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "--help") != 0 && strcmp(argv[0], "help") != 0) {
        for (const cli_cmd *e = table; e->name; e++)
            if (strcmp(e->name, argv[0]) == 0)
                return e->fn(c, argc, argv);
        fprintf(stderr, "keybridge %s: unknown command '%s'\n", group, argv[0]);
    }
    FILE *f = argc >= 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "help") == 0)
                  ? stdout
                  : stderr;
    fprintf(f, "usage: keybridge %s <command> [args]\n\ncommands:\n", group);
    for (const cli_cmd *e = table; e->name; e++)
        fprintf(f, "  %-12s %s\n", e->name, e->help);
    return f == stdout ? KB_EXIT_OK : KB_EXIT_USAGE;
}
