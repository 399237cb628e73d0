/* cmd_admin.c - admin commands over the admin API: groups, clients, memberships, grants,
 * secret lifecycle (versions, rollback, delete/restore/purge, status), expiring secrets, audit.
 *
 *   keybridge admin group list | create NAME [--description D] | show NAME | delete NAME
 *   keybridge admin client list [--stale 45m] | create SPIFFE_ID [--app A] [--admin] [--disabled]
 *                          | show ID | enable ID | disable ID | delete ID
 *   keybridge admin member add|remove SPIFFE_ID GROUP
 *   keybridge admin grant add|remove GROUP SECRET
 *   keybridge admin secret versions|status|show|delete|restore|purge NAME | rollback NAME VERSION
 *   keybridge admin expiring --within 7d
 *   keybridge admin audit list [--object O] [--identity ID] [--limit N] | verify
 *
 * Tables for people, `-o json` for scripts (the response as the server sent it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lib/config.h"
#include "lib/fileio.h"
#include "lib/prog.h"

int cli_cmd_admin(cli *c, int argc, char **argv);

/* Call, then print `key`'s rows as a table (or the whole body with -o json / when key NULL). */
static int run(cli *c, const char *method, const char *path, const char *query, json_t *body,
               const char *key, const char *const *cols)
{
    api_response r;
    int rc;
    kb_err e;
    memset(&r, 0, sizeof(r));
    e = cli_call(c, method, path, query, body, &r);
    if (e != KB_OK) {
        /* Transport failures keep their meaning in the exit code: a missing server_id is a
         * configuration error (3), a server with the wrong identity is refused (4). */
        json_decref(body);
        return kb_exit_code(e);
    }
    json_decref(body);
    rc = cli_check(&r);
    if (rc == KB_EXIT_OK) {
        const json_t *rows = key ? json_object_get(r.body, key) : NULL;
        if (c->json_output || rows == NULL || cols == NULL)
            cli_print_json(stdout, r.body ? r.body : json_null());
        else
            cli_table(stdout, rows, cols);
    }
    api_response_clear(&r);
    return rc;
}

static int usage(const char *u)
{
    fprintf(stderr, "usage: keybridge admin %s\n", u);
    return KB_EXIT_USAGE;
}

static const char *opt(int argc, char **argv, const char *name)
{
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return NULL;
}

static bool flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

static int cmd_group(cli *c, int argc, char **argv)
{
    static const char *const cols[] = {"name", "id", "description", "created_at", NULL};
    char path[1024];
    const char *u = "group list | create NAME [--description D] | show NAME | delete NAME";
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return run(c, "GET", "/v1/admin/groups", "", NULL, "groups", cols);
    if (argc < 3)
        return usage(u);
    if (strcmp(argv[1], "create") == 0) {
        const char *d = opt(argc, argv, "--description");
        return run(c, "POST", "/v1/admin/groups", "",
                   json_pack("{s:s,s:s}", "name", argv[2], "description", d ? d : ""), NULL, NULL);
    }
    if (cli_path(path, sizeof(path), "/v1/admin/groups/", argv[2], "") != KB_OK)
        return usage(u);
    if (strcmp(argv[1], "show") == 0)
        return run(c, "GET", path, "", NULL, NULL, NULL);
    if (strcmp(argv[1], "delete") == 0)
        return run(c, "DELETE", path, "", NULL, NULL, NULL);
    return usage(u);
}

static const char *const client_cols[] = {"id",       "spiffe_id", "enabled",      "admin", "cloud",
                                          "app_name", "last_seen", "last_list_at", NULL};

static int clients_list(cli *c, int argc, char **argv)
{
    const char *stale = opt(argc, argv, "--stale");
    char q[64] = "";
    if (stale) {
        int64_t secs;
        if (kb_parse_duration(stale, &secs) != KB_OK || secs < 0)
            return usage("client list [--stale DURATION (e.g. 45m)]");
        snprintf(q, sizeof(q), "stale=%lld", (long long)secs);
    }
    return run(c, "GET", "/v1/admin/clients", q, NULL, "clients", client_cols);
}

static int cmd_client(cli *c, int argc, char **argv)
{
    const char *u = "client list [--stale 45m] | create SPIFFE_ID [--app A] [--description D] "
                    "[--admin] [--disabled] | show|enable|disable|delete ID";
    char path[128];
    int64_t id;
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return clients_list(c, argc, argv);
    if (argc >= 1 && strcmp(argv[0], "clients") == 0)
        return clients_list(c, argc, argv);
    if (argc < 3)
        return usage(u);
    if (strcmp(argv[1], "create") == 0) {
        const char *app = opt(argc, argv, "--app"), *d = opt(argc, argv, "--description");
        return run(c, "POST", "/v1/admin/clients", "",
                   json_pack("{s:s,s:s,s:s,s:b,s:b}", "spiffe_id", argv[2], "app_name",
                             app ? app : "", "description", d ? d : "", "admin",
                             flag(argc, argv, "--admin"), "enabled",
                             !flag(argc, argv, "--disabled")),
                   NULL, NULL);
    }
    if (kb_parse_int64(argv[2], &id) != KB_OK || id < 1)
        return usage(u);
    snprintf(path, sizeof(path), "/v1/admin/clients/%lld", (long long)id);
    if (strcmp(argv[1], "show") == 0)
        return run(c, "GET", path, "", NULL, NULL, NULL);
    if (strcmp(argv[1], "enable") == 0 || strcmp(argv[1], "disable") == 0)
        return run(c, "PATCH", path, "",
                   json_pack("{s:b}", "enabled", strcmp(argv[1], "enable") == 0), NULL, NULL);
    if (strcmp(argv[1], "delete") == 0)
        return run(c, "DELETE", path, "", NULL, NULL, NULL);
    return usage(u);
}

static int cmd_link(cli *c, int argc, char **argv, bool grant)
{
    const char *u = grant ? "grant add|remove GROUP SECRET" : "member add|remove SPIFFE_ID GROUP";
    bool add;
    if (argc != 4)
        return usage(u);
    add = strcmp(argv[1], "add") == 0;
    if (!add && strcmp(argv[1], "remove") != 0)
        return usage(u);
    return run(c, add ? "POST" : "DELETE", grant ? "/v1/admin/grants" : "/v1/admin/memberships", "",
               grant ? json_pack("{s:s,s:s}", "group", argv[2], "secret", argv[3])
                     : json_pack("{s:s,s:s}", "client", argv[2], "group", argv[3]),
               NULL, NULL);
}

static int cmd_member(cli *c, int argc, char **argv)
{
    return cmd_link(c, argc, argv, false);
}

static int cmd_grant(cli *c, int argc, char **argv)
{
    return cmd_link(c, argc, argv, true);
}

static int cmd_secret_admin(cli *c, int argc, char **argv)
{
    static const char *const vcols[] = {
        "version", "checksum", "content_length", "expires_at", "created_by", "created_at", NULL};
    static const char *const scols[] = {"client", "version", "current", "fetched_at", NULL};
    const char *u = "secret versions|status|show|delete|restore|purge NAME | rollback NAME N";
    char path[1024];
    const char *verb;
    if (argc < 3)
        return usage(u);
    verb = argv[1];
    if (strcmp(verb, "versions") == 0 || strcmp(verb, "status") == 0) {
        if (cli_path(path, sizeof(path), "/v1/admin/secrets/", argv[2],
                     strcmp(verb, "status") == 0 ? "/status" : "/versions") != KB_OK)
            return usage(u);
        return run(c, "GET", path, "", NULL, strcmp(verb, "status") == 0 ? "clients" : "versions",
                   strcmp(verb, "status") == 0 ? scols : vcols);
    }
    if (strcmp(verb, "restore") == 0 || strcmp(verb, "purge") == 0) {
        char suffix[16];
        snprintf(suffix, sizeof(suffix), "/%s", verb);
        if (cli_path(path, sizeof(path), "/v1/admin/secrets/", argv[2], suffix) != KB_OK)
            return usage(u);
        return run(c, "POST", path, "", NULL, NULL, NULL);
    }
    if (strcmp(verb, "rollback") == 0) {
        int64_t v;
        if (argc != 4 || kb_parse_int64(argv[3], &v) != KB_OK || v < 1 ||
            cli_path(path, sizeof(path), "/v1/admin/secrets/", argv[2], "/rollback") != KB_OK)
            return usage(u);
        return run(c, "POST", path, "", json_pack("{s:I}", "version", (json_int_t)v), NULL, NULL);
    }
    if (cli_path(path, sizeof(path), "/v1/admin/secrets/", argv[2], "") != KB_OK)
        return usage(u);
    if (strcmp(verb, "show") == 0)
        return run(c, "GET", path, "", NULL, NULL, NULL);
    if (strcmp(verb, "delete") == 0)
        return run(c, "DELETE", path, "", NULL, NULL, NULL);
    return usage(u);
}

static int cmd_expiring(cli *c, int argc, char **argv)
{
    static const char *const cols[] = {"name", "version", "expires_at", "owner_group", NULL};
    const char *w = opt(argc, argv, "--within");
    int64_t secs;
    char q[64];
    if (w == NULL || kb_parse_duration(w, &secs) != KB_OK || secs < 0)
        return usage("expiring --within DURATION (e.g. 7d)");
    snprintf(q, sizeof(q), "within=%lld", (long long)secs);
    return run(c, "GET", "/v1/admin/expiring", q, NULL, "secrets", cols);
}

/* Append key=value (percent-encoded) to the query. */
static void qadd(char *q, size_t len, const char *k, const char *v)
{
    size_t pos = strlen(q);
    if (v == NULL)
        return;
    pos += (size_t)snprintf(q + pos, len - pos, "%s%s=", pos ? "&" : "", k);
    for (const unsigned char *p = (const unsigned char *)v; *p && pos + 4 < len; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p))
            q[pos++] = (char)*p;
        else
            pos += (size_t)snprintf(q + pos, len - pos, "%%%02X", *p);
    }
    q[pos] = '\0';
}

/* `audit verify [--anchor FILE]`: exit 0 only if the chain verifies (a finding is exit 1). */
static int cmd_audit_verify(cli *c, const char *anchor_path)
{
    json_t *body = json_object();
    api_response r;
    kb_err rc;
    int ec;

    if (anchor_path != NULL) {
        json_error_t je;
        json_t *an = json_load_file(anchor_path, JSON_REJECT_DUPLICATES, &je);
        if (an == NULL || !json_is_object(an)) {
            fprintf(stderr, "keybridge: %s is not an exported audit anchor\n", anchor_path);
            json_decref(an);
            json_decref(body);
            return KB_EXIT_USAGE;
        }
        json_object_set_new(body, "anchor", an);
    }
    memset(&r, 0, sizeof(r));
    rc = cli_call(c, "POST", "/v1/admin/audit/verify", "", body, &r);
    json_decref(body);
    if (rc != KB_OK)
        return kb_exit_code(rc);
    ec = cli_check(&r);
    if (ec == KB_EXIT_OK) {
        const json_t *ok = json_object_get(r.body, "ok");
        if (c->json_output)
            cli_print_json(stdout, r.body);
        else
            printf("audit chain: %s (%lld rows checked, anchor at seq %lld)%s%s\n",
                   json_is_true(ok) ? "ok" : "FAILED",
                   (long long)json_integer_value(json_object_get(r.body, "rows")),
                   (long long)json_integer_value(json_object_get(r.body, "anchor_seq")),
                   json_is_true(ok) ? "" : ": ",
                   json_is_true(ok) ? "" : json_string_value(json_object_get(r.body, "reason")));
        if (!json_is_true(ok)) {
            if (!c->json_output)
                printf("first bad seq: %lld\n",
                       (long long)json_integer_value(json_object_get(r.body, "first_bad_seq")));
            ec = KB_EXIT_FAIL;
        }
        const char *src = json_string_value(json_object_get(r.body, "anchor_source"));
        if (!c->json_output && src != NULL && strcmp(src, "anchor_file") == 0)
            printf("checked against the server's [audit] anchor_file\n");
        else if (!c->json_output && src != NULL && strcmp(src, "none") == 0)
            printf("warning: no anchor outside the database was checked: [audit] anchor_file is "
                   "not set and no --anchor was given, so a truncated log whose stored anchors "
                   "were removed with it cannot be detected\n");
    }
    api_response_clear(&r);
    return ec;
}

/* `audit anchor [--out FILE]`: sign the head now; keep the anchor somewhere else (0600). */
static int cmd_audit_anchor(cli *c, const char *out_path)
{
    api_response r;
    kb_err rc;
    int ec;
    memset(&r, 0, sizeof(r));
    rc = cli_call(c, "POST", "/v1/admin/audit/anchor", "", NULL, &r);
    if (rc != KB_OK)
        return kb_exit_code(rc);
    ec = cli_check(&r);
    if (ec == KB_EXIT_OK) {
        char *text = json_dumps(r.body, JSON_COMPACT | JSON_SORT_KEYS);
        if (text == NULL) {
            ec = KB_EXIT_FAIL;
        } else if (out_path != NULL) {
            if (kb_file_write_atomic(out_path, text, strlen(text), 0600) != KB_OK) {
                fprintf(stderr, "keybridge: cannot write %s\n", out_path);
                ec = KB_EXIT_FAIL;
            } else if (!c->json_output) {
                printf("anchor at seq %lld written to %s\n",
                       (long long)json_integer_value(json_object_get(r.body, "seq")), out_path);
            }
        } else {
            printf("%s\n", text);
        }
        free(text);
    }
    api_response_clear(&r);
    return ec;
}

static int cmd_audit(cli *c, int argc, char **argv)
{
    static const char *const cols[] = {"seq",    "time",    "identity", "action",
                                       "object", "version", "result",   NULL};
    char q[4096] = "";
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return cmd_audit_verify(c, opt(argc, argv, "--anchor"));
    if (argc >= 2 && strcmp(argv[1], "anchor") == 0)
        return cmd_audit_anchor(c, opt(argc, argv, "--out"));
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        qadd(q, sizeof(q), "object", opt(argc, argv, "--object"));
        qadd(q, sizeof(q), "identity", opt(argc, argv, "--identity"));
        qadd(q, sizeof(q), "limit", opt(argc, argv, "--limit"));
        qadd(q, sizeof(q), "since", opt(argc, argv, "--since"));
        return run(c, "GET", "/v1/admin/audit", q, NULL, "events", cols);
    }
    return usage("audit list [--object O] [--identity ID] [--since UNIX] [--limit N]\n"
                 "       keybridge audit verify [--anchor FILE] | anchor [--out FILE]");
}

int cli_cmd_admin(cli *c, int argc, char **argv)
{
    static const cli_cmd table[] = {
        {"group", cmd_group, "groups: list, create, show, delete"},
        {"client", cmd_client, "clients: list [--stale 45m], create, show, enable, disable"},
        {"clients", cmd_client, "same as `client list` (e.g. clients --stale 45m)"},
        {"member", cmd_member, "memberships: add|remove SPIFFE_ID GROUP"},
        {"grant", cmd_grant, "grants: add|remove GROUP SECRET"},
        {"secret", cmd_secret_admin, "versions, status, show, rollback, delete, restore, purge"},
        {"expiring", cmd_expiring, "secrets expiring --within DURATION"},
        {"audit", cmd_audit, "audit list, audit verify"},
        {NULL, NULL, NULL},
    };
    return cli_dispatch(c, "admin", table, argc - 1, argv + 1);
}
