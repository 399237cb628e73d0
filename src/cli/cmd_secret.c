/* cmd_secret.c - `keybridge secret create|put|get|list`, and the client-side `read` / `list`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/fileio.h"
#include "lib/json.h"
#include "lib/prog.h"
#include "lib/secbuf.h"

#define CLI_CONTENT_MAX (16 * 1024 * 1024)

/* Read content from a file or "-" (stdin) into locked memory. */
static kb_err read_content(const char *path, kb_secret **out)
{
    kb_dbuf b;
    kb_err rc;
    kb_dbuf_init(&b, CLI_CONTENT_MAX);
    if (strcmp(path, "-") == 0) {
        uint8_t chunk[4096];
        rc = KB_OK;
        /* A read error is not the end of the content: storing what came before it would
         * silently write a truncated secret. */
        while (rc == KB_OK) {
            ssize_t n = read(0, chunk, sizeof(chunk));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                rc = n == 0 ? KB_OK : KB_ERR_IO;
                break;
            }
            rc = kb_dbuf_add(&b, chunk, (size_t)n);
        }
        kb_wipe(chunk, sizeof(chunk));
    } else {
        rc = kb_file_read(path, CLI_CONTENT_MAX, &b);
    }
    if (rc == KB_OK)
        rc = kb_secret_from(b.p, b.len, out);
    kb_dbuf_free(&b);
    return rc;
}

static int usage_write(const char *verb)
{
    fprintf(stderr,
            "usage: keybridge secret %s NAME --content-file FILE|- [--description TEXT]\n"
            "         [--metadata KEY=VALUE]... [--expires UNIX_TIME|--expires-from-content]%s\n",
            verb, strcmp(verb, "create") == 0 ? " [--owner-group G] [--cloud-sync]" : "");
    return KB_EXIT_USAGE;
}

/* create and put share their options; create adds owner group and the cloud-sync flag. */
static int secret_write(cli *c, int argc, char **argv, int create)
{
    const char *verb = argv[0], *name = NULL, *content_path = NULL;
    json_t *body = json_object(), *meta = json_object();
    kb_secret *content = NULL;
    api_response resp;
    char path[1024];
    int rc = KB_EXIT_USAGE;

    /* argv[i] is never NULL for i < argc; saying so lets the analyzer see it. */
    for (int i = 1; i < argc && argv[i] != NULL; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            usage_write(verb);
            rc = KB_EXIT_OK;
            goto out;
        } else if (strcmp(a, "--content-file") == 0 && v) {
            content_path = v;
            i++;
        } else if (strcmp(a, "--description") == 0 && v) {
            json_object_set_new(body, "description", json_string(v));
            i++;
        } else if (strcmp(a, "--metadata") == 0 && v && strchr(v, '=')) {
            char *k = strndup(v, (size_t)(strchr(v, '=') - v));
            json_object_set_new(meta, k, json_string(strchr(v, '=') + 1));
            free(k);
            i++;
        } else if (strcmp(a, "--expires") == 0 && v) {
            int64_t t;
            if (kb_parse_int64(v, &t) != KB_OK || t < 0) {
                fprintf(stderr, "keybridge: --expires takes a Unix time\n");
                goto out;
            }
            json_object_set_new(body, "expires_at", json_integer(t));
            i++;
        } else if (strcmp(a, "--expires-from-content") == 0) {
            json_object_set_new(body, "expiry_from_content", json_true());
        } else if (create && strcmp(a, "--owner-group") == 0 && v) {
            json_object_set_new(body, "owner_group", json_string(v));
            i++;
        } else if (create && strcmp(a, "--cloud-sync") == 0) {
            json_object_set_new(body, "cloud_sync", json_true());
        } else if (a[0] != '-' && name == NULL) {
            name = a;
        } else {
            usage_write(verb);
            goto out;
        }
    }
    if (name == NULL || content_path == NULL) {
        usage_write(verb);
        goto out;
    }
    if (read_content(content_path, &content) != KB_OK) {
        fprintf(stderr, "keybridge: cannot read content from %s (missing or over 16 MiB)\n",
                content_path);
        rc = KB_EXIT_FAIL;
        goto out;
    }
    json_object_set_new(body, "content",
                        kb_json_b64(kb_secret_cdata(content), kb_secret_len(content)));
    if (json_object_size(meta) > 0)
        json_object_set(body, "metadata", meta);
    if (create) {
        json_object_set_new(body, "name", json_string(name));
        snprintf(path, sizeof(path), "/v1/admin/secrets");
    } else if (cli_path(path, sizeof(path), "/v1/admin/secrets/", name, NULL) != KB_OK) {
        goto out;
    }
    kb_err crc = cli_call(c, create ? "POST" : "PUT", path, NULL, body, &resp);
    if (crc != KB_OK) {
        rc = kb_exit_code(crc); /* a refused server identity is 4, bad configuration 3 */
        goto out;
    }
    rc = cli_check(&resp);
    if (rc == KB_EXIT_OK) {
        if (c->json_output)
            cli_print_json(stdout, resp.body);
        else
            printf("%s %s version %lld\n", create ? "created" : "updated", name,
                   (long long)json_integer_value(json_object_get(resp.body, "version")));
    }
    api_response_clear(&resp);
out:
    kb_secret_free(content);
    json_decref(meta);
    json_decref(body);
    return rc;
}

static int secret_create(cli *c, int argc, char **argv)
{
    return secret_write(c, argc, argv, 1);
}

static int secret_put(cli *c, int argc, char **argv)
{
    return secret_write(c, argc, argv, 0);
}

static int usage_generate(void)
{
    fprintf(
        stderr,
        "usage: keybridge secret generate NAME --type random|password|ec|rsa|ed25519|openpgp\n"
        "         [--bytes N] [--alphabet CHARS] [--bits 2048|3072|4096] [--curve P-256|P-384]\n"
        "         [--uid USER_ID] [--description TEXT] [--metadata KEY=VALUE]...\n"
        "         [--expires UNIX_TIME] [--owner-group G] [--cloud-sync] [--public-out FILE]\n"
        "The server generates the content and stores it (a new version if NAME exists); the\n"
        "answer never holds it. Key pairs: the public key is stored as NAME.pub and printed\n"
        "(or written to --public-out). openpgp: GnuPG makes an Ed25519 + Curve25519 key for\n"
        "--uid (default NAME) that expires at --expires (default in 2 years).\n");
    return KB_EXIT_USAGE;
}

/* `secret generate`: option name -> body field (string or positive integer). */
static int secret_generate(cli *c, int argc, char **argv)
{
    static const struct {
        const char *opt, *field;
        bool integer;
    } opts[] = {{"--type", "type", false},
                {"--bytes", "bytes", true},
                {"--alphabet", "alphabet", false},
                {"--bits", "bits", true},
                {"--curve", "curve", false},
                {"--uid", "uid", false},
                {"--description", "description", false},
                {"--owner-group", "owner_group", false},
                {"--expires", "expires_at", true}};
    const char *name = NULL, *pub_out = NULL;
    json_t *body = json_object(), *meta = json_object();
    api_response resp;
    char path[1024];
    int rc = KB_EXIT_USAGE;

    for (int i = 1; i < argc && argv[i] != NULL; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        size_t k = 0;
        for (; k < sizeof(opts) / sizeof(opts[0]); k++)
            if (strcmp(a, opts[k].opt) == 0)
                break;
        if (strcmp(a, "--help") == 0) {
            usage_generate();
            rc = KB_EXIT_OK;
            goto out;
        } else if (k < sizeof(opts) / sizeof(opts[0]) && v) {
            if (opts[k].integer) {
                int64_t n;
                if (kb_parse_int64(v, &n) != KB_OK || n <= 0) {
                    fprintf(stderr, "keybridge: %s takes a positive number\n", a);
                    goto out;
                }
                json_object_set_new(body, opts[k].field, json_integer(n));
            } else {
                json_object_set_new(body, opts[k].field, json_string(v));
            }
            i++;
        } else if (strcmp(a, "--metadata") == 0 && v && strchr(v, '=')) {
            char *key = strndup(v, (size_t)(strchr(v, '=') - v));
            json_object_set_new(meta, key, json_string(strchr(v, '=') + 1));
            free(key);
            i++;
        } else if (strcmp(a, "--public-out") == 0 && v) {
            pub_out = v;
            i++;
        } else if (strcmp(a, "--cloud-sync") == 0) {
            json_object_set_new(body, "cloud_sync", json_true());
        } else if (a[0] != '-' && name == NULL) {
            name = a;
        } else {
            usage_generate();
            goto out;
        }
    }
    if (name == NULL || json_object_get(body, "type") == NULL) {
        usage_generate();
        goto out;
    }
    if (json_object_size(meta) > 0)
        json_object_set(body, "metadata", meta);
    if (cli_path(path, sizeof(path), "/v1/admin/secrets/", name, "/generate") != KB_OK)
        goto out;
    kb_err crc = cli_call(c, "POST", path, NULL, body, &resp);
    if (crc != KB_OK) {
        rc = kb_exit_code(crc);
        goto out;
    }
    rc = cli_check(&resp);
    if (rc == KB_EXIT_OK) {
        const char *pub = json_string_value(json_object_get(resp.body, "public_key"));
        if (c->json_output) {
            cli_print_json(stdout, resp.body);
        } else {
            printf("generated %s version %lld\n", name,
                   (long long)json_integer_value(json_object_get(resp.body, "version")));
            if (json_is_integer(json_object_get(resp.body, "expires_at")))
                printf("the key expires at %lld (Unix time)\n",
                       (long long)json_integer_value(json_object_get(resp.body, "expires_at")));
            if (pub != NULL && pub_out == NULL)
                printf("public key stored as %s version %lld:\n%s",
                       json_string_value(json_object_get(resp.body, "public_name")),
                       (long long)json_integer_value(json_object_get(resp.body, "public_version")),
                       pub);
        }
        if (pub != NULL && pub_out != NULL &&
            kb_file_write_atomic(pub_out, pub, strlen(pub), 0644) != KB_OK) {
            fprintf(stderr, "keybridge: cannot write %s\n", pub_out);
            rc = KB_EXIT_FAIL;
        }
    }
    api_response_clear(&resp);
out:
    json_decref(meta);
    json_decref(body);
    return rc;
}

/* Write decoded content to stdout or a file (0400, atomically). */
static int emit_content(const json_t *obj, const char *out_path)
{
    const char *b64 = json_string_value(json_object_get(obj, "content"));
    kb_secret *plain = NULL;
    int rc = KB_EXIT_FAIL;
    if (b64 == NULL || kb_b64_decode_secret(b64, strlen(b64), KB_SECRET_MAX, &plain) != KB_OK) {
        fprintf(stderr, "keybridge: malformed content in the response\n");
        return KB_EXIT_FAIL;
    }
    if (out_path) {
        if (kb_file_write_atomic(out_path, kb_secret_cdata(plain), kb_secret_len(plain), 0400) ==
            KB_OK)
            rc = KB_EXIT_OK;
        else
            fprintf(stderr, "keybridge: cannot write %s\n", out_path);
    } else if (fwrite(kb_secret_cdata(plain), 1, kb_secret_len(plain), stdout) ==
               kb_secret_len(plain)) {
        rc = KB_EXIT_OK;
    }
    fflush(stdout);
    kb_secret_free(plain);
    return rc;
}

/* Shared by `secret get` (admin read) and `read` (client read). */
static int get_content(cli *c, int argc, char **argv, const char *prefix, const char *suffix)
{
    const char *name = NULL, *out_path = NULL, *version = NULL;
    char path[1024], query[64] = "";
    api_response resp;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0 && i + 1 < argc)
            version = argv[++i];
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            out_path = argv[++i];
        else if (argv[i][0] != '-' && name == NULL)
            name = argv[i];
        else
            name = NULL, i = argc;
    }
    if (name == NULL) {
        fprintf(stderr, "usage: keybridge %s NAME [--version N] [--out FILE]\n", argv[0]);
        return KB_EXIT_USAGE;
    }
    if (version) {
        int64_t v;
        if (kb_parse_int64(version, &v) != KB_OK || v <= 0) {
            fprintf(stderr, "keybridge: --version takes a positive number\n");
            return KB_EXIT_USAGE;
        }
        snprintf(query, sizeof(query), "version=%lld", (long long)v);
    }
    if (cli_path(path, sizeof(path), prefix, name, suffix) != KB_OK)
        return KB_EXIT_USAGE;
    kb_err crc = cli_call(c, "GET", path, query, NULL, &resp);
    if (crc != KB_OK)
        return kb_exit_code(crc);
    rc = cli_check(&resp);
    if (rc == KB_EXIT_OK) {
        if (c->json_output)
            cli_print_json(stdout, resp.body);
        else
            rc = emit_content(resp.body, out_path);
    }
    api_response_clear(&resp);
    return rc;
}

static int secret_get(cli *c, int argc, char **argv)
{
    return get_content(c, argc, argv, "/v1/admin/secrets/", "/content");
}

int cli_cmd_read(cli *c, int argc, char **argv)
{
    return get_content(c, argc, argv, "/v1/secrets/", NULL);
}

static int print_list(cli *c, const char *path, const char *query, const char *key,
                      const char *const *cols)
{
    api_response resp;
    int rc;
    kb_err crc = cli_call(c, "GET", path, query, NULL, &resp);
    if (crc != KB_OK)
        return kb_exit_code(crc);
    rc = cli_check(&resp);
    if (rc == KB_EXIT_OK) {
        if (c->json_output)
            cli_print_json(stdout, resp.body);
        else
            cli_table(stdout, json_object_get(resp.body, key), cols);
    }
    api_response_clear(&resp);
    return rc;
}

static int secret_list(cli *c, int argc, char **argv)
{
    static const char *const cols[] = {"name", "version", "cloud_sync", "expires_at", NULL};
    int deleted = argc > 1 && strcmp(argv[1], "--deleted") == 0;
    if (argc > 1 + deleted) {
        fprintf(stderr, "usage: keybridge secret list [--deleted]\n");
        return KB_EXIT_USAGE;
    }
    return print_list(c, "/v1/admin/secrets", deleted ? "deleted=1" : "", "secrets", cols);
}

int cli_cmd_list(cli *c, int argc, char **argv)
{
    static const char *const cols[] = {"name", "version", "checksum", "expires_at", NULL};
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: keybridge list\n");
        return KB_EXIT_USAGE;
    }
    return print_list(c, "/v1/secrets", "", "secrets", cols);
}

static const cli_cmd secret_cmds[] = {
    {"create", secret_create, "create a secret (version 1)"},
    {"put", secret_put, "write a new version"},
    {"generate", secret_generate, "have the server generate the content (random, password, keys)"},
    {"get", secret_get, "read a version's content (admin, audited)"},
    {"list", secret_list, "list secrets"},
    {NULL, NULL, NULL},
};

int cli_cmd_secret(cli *c, int argc, char **argv)
{
    /* create/put/get/list here; the lifecycle verbs live with the other admin commands. */
    if (argc >= 2) {
        for (const cli_cmd *e = secret_cmds; e->name; e++)
            if (strcmp(e->name, argv[1]) == 0)
                return e->fn(c, argc - 1, argv + 1);
        if (strcmp(argv[1], "--help") != 0 && strcmp(argv[1], "help") != 0)
            return cli_cmd_admin(c, argc + 1, argv - 1);
    }
    return cli_dispatch(c, "secret", secret_cmds, argc - 1, argv + 1);
}
