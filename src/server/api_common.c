/* api_common.c - what the client API (api.c) and the admin API (api_admin.c) share: responses
 * and the error-to-status map, the query and body helpers, and record rendering. Depends on
 * neither of them (api.c routes to api_admin.c; both call down into this file).
 */
#include "api_common.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"

/* ---- responses ------------------------------------------------------------------------------ */

/* Listing bodies hold no secret content, but they are wiped like everything else. */
void api_raw_drop(api_response *r)
{
    if (r->raw != NULL) {
        kb_wipe(r->raw, r->raw_len);
        free(r->raw);
    }
    r->raw = NULL;
    r->raw_len = 0;
}

void api_response_clear(api_response *r)
{
    if (r == NULL)
        return;
    json_decref(r->body);
    api_raw_drop(r);
    memset(r, 0, sizeof(*r));
}

/* A 200 with pre-rendered bytes (ownership of raw passes to r). */
void api_ok_raw(api_response *r, char *raw, size_t len)
{
    json_decref(r->body);
    api_raw_drop(r);
    r->body = NULL;
    r->status = 200;
    r->raw = raw;
    r->raw_len = len;
}

void api_ok(api_response *r, int status, json_t *body)
{
    json_decref(r->body);
    api_raw_drop(r);
    r->status = status;
    r->body = body;
    if (body == NULL && status != 204) {
        r->status = 500;
        r->body = json_pack("{s:s,s:s}", "error", "internal", "message", "out of memory");
    }
}

void api_error(api_response *r, int status, const char *code, const char *msg)
{
    json_decref(r->body);
    api_raw_drop(r);
    r->status = status;
    r->body = json_pack("{s:s,s:s}", "error", code, "message", msg);
}

int api_status_for(kb_err e)
{
    switch (e) {
    case KB_OK:
        return 200;
    case KB_ERR_INVALID:
    case KB_ERR_TRUNCATED:
    case KB_ERR_TRAILING:
    case KB_ERR_NULL:
        return 400;
    case KB_ERR_TOO_LARGE:
        return 413;
    case KB_ERR_NOT_FOUND:
        return 404;
    case KB_ERR_EXISTS:
    case KB_ERR_CONFLICT:
        return 409;
    case KB_ERR_DENIED:
        return 403;
    case KB_ERR_AUTH:
        return 401;
    case KB_ERR_LIMIT:
        return 429;
    case KB_ERR_HSM:
    case KB_ERR_UNAVAILABLE:
    case KB_ERR_TIMEOUT:
    case KB_ERR_DB:
        return 503;
    default:
        return 500;
    }
}

void api_error_kb(api_response *r, kb_err e, const char *msg)
{
    int st = api_status_for(e);
    /* Server-side failures never explain themselves to the client: the log has the detail. */
    if (st >= 500) {
        if (st == 500)
            kb_log(KB_LOG_ERROR, "api_internal_error", "error", kb_err_str(e), NULL);
        msg = st == 503 ? "temporarily unavailable, retry later" : "internal error";
        e = st == 503 ? KB_ERR_UNAVAILABLE : KB_ERR_INTERNAL;
    }
    api_error(r, st, kb_err_str(e), msg);
    if (st == 429 || st == 503)
        r->retry_after = 1;
}

/* ---- query and body helpers ---------------------------------------------------------------- */

const char *api_query(const api_ctx *c, const char *key)
{
    for (size_t i = 0; i < c->nq; i++)
        if (strcmp(c->qkey[i], key) == 0)
            return c->qval[i];
    return NULL;
}

kb_err api_query_only(const api_ctx *c, const char *const *allowed)
{
    for (size_t i = 0; i < c->nq; i++) {
        bool ok = false;
        for (size_t j = 0; allowed && allowed[j]; j++)
            if (strcmp(c->qkey[i], allowed[j]) == 0)
                ok = true;
        KB_ENSURE(ok, KB_ERR_INVALID);
    }
    return KB_OK;
}

kb_err api_query_int(const api_ctx *c, const char *key, int64_t def, int64_t *out)
{
    const char *v = api_query(c, key);
    *out = def;
    if (v == NULL)
        return KB_OK;
    KB_ENSURE(*v >= '0' && *v <= '9', KB_ERR_INVALID);
    KB_GUARD(kb_parse_int64(v, out));
    KB_ENSURE(*out >= 0, KB_ERR_INVALID);
    return KB_OK;
}

kb_err api_body(const api_ctx *c, const char *const *allowed, int empty_ok, json_t **out,
                api_response *r)
{
    char why[128] = "";
    const char *bad = NULL;
    json_t *obj = NULL;
    kb_err rc;

    *out = NULL;
    if (c->req->body_len == 0 && empty_ok) {
        *out = json_object();
        if (*out == NULL) {
            api_error_kb(r, KB_ERR_NOMEM, "");
            return KB_ERR_NOMEM;
        }
        return KB_OK;
    }
    if (c->req->body_len > API_BODY_MAX) {
        api_error(r, 413, "too_large", "request body too large");
        return KB_ERR_TOO_LARGE;
    }
    rc = kb_json_parse(c->req->body, c->req->body_len, API_BODY_MAX, &obj, why, sizeof(why));
    if (rc != KB_OK) {
        api_error(r, rc == KB_ERR_TOO_LARGE ? 413 : 400, kb_err_str(rc),
                  why[0] ? why : "malformed JSON body");
        return rc;
    }
    rc = kb_json_only_keys(obj, allowed, &bad);
    if (rc != KB_OK) {
        json_decref(obj);
        api_error(r, 400, "invalid", "unknown field in request body");
        return rc;
    }
    *out = obj;
    return KB_OK;
}

/* ---- record rendering --------------------------------------------------------------------- */

json_t *api_metadata_json(const char *canon)
{
    json_t *m = NULL;
    if (canon != NULL && canon[0] != '\0')
        m = json_loads(canon, JSON_REJECT_DUPLICATES, NULL);
    if (m == NULL || !json_is_object(m)) {
        json_decref(m);
        m = json_object();
    }
    return m;
}

json_t *api_time_or_null(int64_t t)
{
    return t > 0 ? json_integer(t) : json_null();
}

json_t *api_checksum_json(const uint8_t *sum)
{
    char hex[STORE_CHECKSUM_LEN * 2 + 1];
    kb_hex(sum, STORE_CHECKSUM_LEN, hex);
    return json_string(hex);
}

/* Add "content" (base64) to o; the temporary encoding is wiped. */
int api_add_b64(json_t *o, const char *key, const kb_secret *content)
{
    return json_object_set_new(o, key,
                               kb_json_b64(kb_secret_cdata(content), kb_secret_len(content)));
}

/* The native record: list entries omit content. */
json_t *api_record_json(const store_record *rec, const kb_secret *content)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (json_object_set_new(o, "name", json_string(rec->secret.name)) ||
        json_object_set_new(o, "version", json_integer(rec->version.version)) ||
        json_object_set_new(o, "checksum", api_checksum_json(rec->version.checksum)) ||
        json_object_set_new(o, "expires_at", api_time_or_null(rec->version.expires_at)) ||
        json_object_set_new(o, "metadata", api_metadata_json(rec->version.metadata)) ||
        json_object_set_new(o, "updated_at", json_integer(rec->version.created_at)) ||
        (content != NULL && api_add_b64(o, "content", content))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* A JSON string exactly as jansson's compact dump writes it (dump.c: '"' and '\\' escaped, the
 * five short escapes, other control characters as \u00XX with uppercase hex, everything else,
 * UTF-8 included, verbatim), so a rendered body is byte-identical to json_dumps of the tree. */
kb_err api_render_string(kb_dbuf *b, const char *str)
{
    static const char hexd[] = "0123456789ABCDEF";
    const char *run = str;
    KB_GUARD(kb_dbuf_addc(b, '"'));
    for (const char *p = str; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t el = 2;
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        KB_GUARD(kb_dbuf_add(b, run, (size_t)(p - run)));
        run = p + 1;
        switch (ch) {
        case '"':
        case '\\':
            esc[1] = (char)ch;
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hexd[ch >> 4];
            esc[5] = hexd[ch & 15];
            el = 6;
        }
        KB_GUARD(kb_dbuf_add(b, esc, el));
    }
    KB_GUARD(kb_dbuf_add(b, run, strlen(run)));
    return kb_dbuf_addc(b, '"');
}

/* The stored metadata text is model_metadata_canon's output (json_dumps COMPACT|SORT_KEYS of a
 * flat object of strings, made at write time), i.e. already what dumping the parsed object
 * gives: paste it instead of parsing it per record per request. Text that does not look like
 * that dump (not an object, or raw control bytes, which a dump never holds) goes the slow way,
 * which renders anything unparsable as {} like api_metadata_json. */
static kb_err render_metadata(kb_dbuf *b, const char *canon)
{
    size_t n = canon ? strlen(canon) : 0;
    bool ok = n >= 2 && canon[0] == '{' && canon[n - 1] == '}';
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)canon[i] >= 0x20;
    if (n == 0)
        return kb_dbuf_add(b, "{}", 2);
    if (ok)
        return kb_dbuf_add(b, canon, n);
    json_t *m = api_metadata_json(canon);
    char *t = m ? kb_json_dump(m) : NULL;
    kb_err rc = t ? kb_dbuf_addstr(b, t) : KB_ERR_NOMEM;
    kb_json_free_str(t);
    json_decref(m);
    return rc;
}

kb_err api_record_render(kb_dbuf *b, const store_record *rec)
{
    char hex[STORE_CHECKSUM_LEN * 2 + 1];
    kb_hex(rec->version.checksum, STORE_CHECKSUM_LEN, hex);
    KB_GUARD(kb_dbuf_addstr(b, "{\"name\":"));
    KB_GUARD(api_render_string(b, rec->secret.name));
    KB_GUARD(kb_dbuf_addf(b, ",\"version\":%" PRId64 ",\"checksum\":\"%s\",\"expires_at\":",
                          rec->version.version, hex));
    if (rec->version.expires_at > 0)
        KB_GUARD(kb_dbuf_addf(b, "%" PRId64, rec->version.expires_at));
    else
        KB_GUARD(kb_dbuf_add(b, "null", 4));
    KB_GUARD(kb_dbuf_addstr(b, ",\"metadata\":"));
    KB_GUARD(render_metadata(b, rec->version.metadata));
    return kb_dbuf_addf(b, ",\"updated_at\":%" PRId64 "}", rec->version.created_at);
}
