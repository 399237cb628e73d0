/* config.c - schema-checked INI configuration with environment overrides. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "log.h"

#define KB_CFG_VALUE_MAX 4096
#define KB_CFG_FILE_MAX (256 * 1024)

typedef struct {
    char *value;
    const char *origin;
} cfg_val;

struct kb_config {
    const kb_config_key *keys;
    size_t n;
    cfg_val *vals;
};

typedef struct {
    kb_config *c;
    char *err;
    size_t err_len;
    int failed;
} load_ctx;

static ssize_t find_key(const kb_config *c, const char *section, const char *name)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->keys[i].section, section) == 0 && strcmp(c->keys[i].name, name) == 0)
            return (ssize_t)i;
    }
    return -1;
}

kb_err kb_parse_int64(const char *s, int64_t *out)
{
    char *end;
    long long v;
    KB_ENSURE(s != NULL && *s != 0, KB_ERR_INVALID);
    errno = 0;
    v = strtoll(s, &end, 10);
    KB_ENSURE(errno == 0 && *end == 0, KB_ERR_INVALID);
    *out = (int64_t)v;
    return KB_OK;
}

kb_err kb_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    KB_ENSURE_REF(s);
    for (size_t i = 0; i < KB_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return KB_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return KB_OK;
        }
    }
    return KB_ERR_INVALID;
}

kb_err kb_parse_duration(const char *s, int64_t *seconds)
{
    char *end;
    long long v;
    int64_t mul = 1;
    KB_ENSURE(s != NULL && isdigit((unsigned char)*s), KB_ERR_INVALID);
    errno = 0;
    v = strtoll(s, &end, 10);
    KB_ENSURE(errno == 0, KB_ERR_INVALID);
    if (*end != 0) {
        switch (*end) {
        case 's':
            mul = 1;
            break;
        case 'm':
            mul = 60;
            break;
        case 'h':
            mul = 3600;
            break;
        case 'd':
            mul = 86400;
            break;
        default:
            return KB_ERR_INVALID;
        }
        KB_ENSURE(end[1] == 0, KB_ERR_INVALID);
    }
    KB_ENSURE(v <= INT64_MAX / mul, KB_ERR_INVALID);
    *seconds = (int64_t)v * mul;
    return KB_OK;
}

static kb_err check_value(const kb_config_key *k, const char *v)
{
    int64_t i;
    int b;
    KB_ENSURE(strlen(v) < KB_CFG_VALUE_MAX, KB_ERR_TOO_LARGE);
    switch (k->type) {
    case KB_CFG_INT:
        return kb_parse_int64(v, &i);
    case KB_CFG_BOOL:
        return kb_parse_bool(v, &b);
    case KB_CFG_DURATION:
        return kb_parse_duration(v, &i);
    default:
        return KB_OK;
    }
}

static kb_err set_value(kb_config *c, size_t i, const char *v, const char *origin)
{
    char *dup = strdup(v);
    KB_ENSURE(dup != NULL, KB_ERR_NOMEM);
    free(c->vals[i].value);
    c->vals[i].value = dup;
    c->vals[i].origin = origin;
    return KB_OK;
}

/* Debian's libinih is built without INI_HANDLER_LINENO, so errors name the key, not the line. */
static int on_ini(void *user, const char *section, const char *name, const char *value)
{
    load_ctx *ctx = user;
    ssize_t i = find_key(ctx->c, section, name);
    if (i < 0) {
        snprintf(ctx->err, ctx->err_len, "unknown key [%s] %s", section, name);
        ctx->failed = 1;
        return 0;
    }
    if (check_value(&ctx->c->keys[i], value) != KB_OK) {
        snprintf(ctx->err, ctx->err_len, "bad value for [%s] %s", section, name);
        ctx->failed = 1;
        return 0;
    }
    if (set_value(ctx->c, (size_t)i, value, "file") != KB_OK) {
        ctx->failed = 1;
        return 0;
    }
    return 1;
}

static void env_name(const char *prefix, const kb_config_key *k, char *out, size_t len)
{
    size_t pos = 0;
    const char *parts[3] = {prefix, k->section, k->name};
    for (int p = 0; p < 3; p++) {
        if (p > 0 && pos + 1 < len)
            out[pos++] = '_';
        for (const char *s = parts[p]; *s && pos + 1 < len; s++)
            out[pos++] = (*s == '-' || *s == '.') ? '_' : (char)toupper((unsigned char)*s);
    }
    out[pos] = 0;
}

kb_err kb_config_load(const kb_config_key *keys, const char *path, const char *env_prefix,
                      kb_config **out, char *err, size_t err_len)
{
    kb_config *c = NULL;
    kb_err rc = KB_OK;
    char ebuf[256] = "";
    load_ctx ctx;
    size_t n = 0;

    KB_ENSURE_REF(keys);
    KB_ENSURE_REF(out);
    *out = NULL;
    while (keys[n].name != NULL)
        n++;
    c = calloc(1, sizeof(*c));
    KB_ENSURE_OUT(rc, c != NULL, KB_ERR_NOMEM);
    c->keys = keys;
    c->n = n;
    c->vals = calloc(n ? n : 1, sizeof(cfg_val));
    KB_ENSURE_OUT(rc, c->vals != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < n; i++) {
        c->vals[i].origin = "unset";
        if (keys[i].def)
            KB_GUARD_OUT(rc, set_value(c, i, keys[i].def, "default"));
    }
    if (path != NULL) {
        kb_dbuf body;
        int r;
        kb_dbuf_init(&body, KB_CFG_FILE_MAX);
        rc = kb_file_read(path, KB_CFG_FILE_MAX, &body);
        if (rc != KB_OK) {
            snprintf(ebuf, sizeof(ebuf), "%.200s: cannot read (%s)", path, kb_err_str(rc));
            kb_dbuf_free(&body);
            rc = KB_ERR_CONFIG;
            goto out;
        }
        ctx.c = c;
        ctx.err = ebuf;
        ctx.err_len = sizeof(ebuf);
        ctx.failed = 0;
        r = ini_parse_string(kb_dbuf_str(&body), on_ini, &ctx);
        kb_dbuf_free(&body);
        if (r != 0 || ctx.failed) {
            char tmp[sizeof(ebuf)];
            if (!ctx.failed)
                snprintf(ebuf, sizeof(ebuf), "line %d: syntax error", r);
            snprintf(tmp, sizeof(tmp), "%.150s", ebuf);
            snprintf(ebuf, sizeof(ebuf), "%.80s: %.150s", path, tmp);
            rc = KB_ERR_CONFIG;
            goto out;
        }
    }
    if (env_prefix != NULL) {
        for (size_t i = 0; i < n; i++) {
            char name[256];
            const char *v;
            env_name(env_prefix, &keys[i], name, sizeof(name));
            v = getenv(name);
            if (v == NULL)
                continue;
            if (check_value(&keys[i], v) != KB_OK) {
                snprintf(ebuf, sizeof(ebuf), "environment %.120s: bad value", name);
                rc = KB_ERR_CONFIG;
                goto out;
            }
            KB_GUARD_OUT(rc, set_value(c, i, v, "env"));
        }
    }
    *out = c;
    c = NULL;
out:
    if (err && err_len) {
        snprintf(err, err_len, "%s", ebuf);
    }
    kb_config_free(c);
    return rc;
}

void kb_config_free(kb_config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n && c->vals; i++)
        free(c->vals[i].value);
    free(c->vals);
    free(c);
}

static size_t must_find(const kb_config *c, const char *section, const char *name)
{
    ssize_t i = find_key(c, section, name);
    if (i < 0) {
        fprintf(stderr, "internal error: config key [%s] %s not in schema\n", section, name);
        abort();
    }
    return (size_t)i;
}

const char *kb_config_str(const kb_config *c, const char *section, const char *name)
{
    const char *v = c->vals[must_find(c, section, name)].value;
    return (v && *v) ? v : NULL;
}

int64_t kb_config_int(const kb_config *c, const char *section, const char *name)
{
    int64_t v = 0;
    const char *s = kb_config_str(c, section, name);
    if (s && kb_parse_int64(s, &v) != KB_OK)
        v = 0;
    return v;
}

int kb_config_bool(const kb_config *c, const char *section, const char *name)
{
    int v = 0;
    const char *s = kb_config_str(c, section, name);
    if (s && kb_parse_bool(s, &v) != KB_OK)
        v = 0;
    return v;
}

int64_t kb_config_duration(const kb_config *c, const char *section, const char *name)
{
    int64_t v = 0;
    const char *s = kb_config_str(c, section, name);
    if (s && kb_parse_duration(s, &v) != KB_OK)
        v = 0;
    return v;
}

kb_err kb_config_secret(const kb_config *c, const char *section, const char *name, size_t max,
                        kb_secret **out)
{
    size_t i = must_find(c, section, name);
    const char *path = c->vals[i].value;
    KB_ENSURE(c->keys[i].type == KB_CFG_SECRET_FILE, KB_ERR_INTERNAL);
    KB_ENSURE(path != NULL && *path != 0, KB_ERR_CONFIG);
    return kb_file_read_secret(path, max, out);
}

const char *kb_config_origin(const kb_config *c, const char *section, const char *name)
{
    return c->vals[must_find(c, section, name)].origin;
}

/* --check-config prints JSON: values are quoted as log lines quote them (a value that is not
 * UTF-8 is shown with U+FFFD, never as bytes that make the output unparsable). */
static void print_json_str(FILE *f, const char *s)
{
    size_t cap = (s ? strlen(s) : 0) * 6 + 2;
    char *q = malloc(cap);
    if (q == NULL) {
        fputs("\"\"", f);
        return;
    }
    fwrite(q, 1, kb_log_json_quote(q, cap, s), f);
    free(q);
}

void kb_config_print(const kb_config *c, FILE *f)
{
    fprintf(f, "{");
    for (size_t i = 0; i < c->n; i++) {
        char key[256];
        snprintf(key, sizeof(key), "%s.%s", c->keys[i].section, c->keys[i].name);
        fprintf(f, "%s\n  ", i ? "," : "");
        print_json_str(f, key);
        fprintf(f, ": {\"value\": ");
        if (c->vals[i].value)
            print_json_str(f, c->vals[i].value);
        else
            fprintf(f, "null");
        fprintf(f, ", \"origin\": \"%s\"}", c->vals[i].origin);
    }
    fprintf(f, "\n}\n");
}

void kb_config_print_reference(const kb_config_key *keys, const char *env_prefix, FILE *f)
{
    static const char *const tn[] = {"string", "path",     "integer",
                                     "bool",   "duration", "secret file"};
    fprintf(f, "| section | key | type | default | environment | meaning |\n");
    fprintf(f, "| --- | --- | --- | --- | --- | --- |\n");
    for (size_t i = 0; keys[i].name; i++) {
        char env[256];
        env_name(env_prefix, &keys[i], env, sizeof(env));
        fprintf(f, "| `[%s]` | `%s` | %s | %s%s%s | `%s` | %s |\n", keys[i].section, keys[i].name,
                tn[keys[i].type], keys[i].def ? "`" : "", keys[i].def ? keys[i].def : "—",
                keys[i].def ? "`" : "", env, keys[i].help);
    }
}
