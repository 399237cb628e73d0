/* api.c - request parsing, routing, and the client API (native /v1 and Keywhiz's endpoints).
 *
 * Order of checks for every API route: parse the raw path and query strictly (no percent in
 * paths, no empty, "." or ".." segments), authenticate the verified SPIFFE ID through
 * svc_client_auth (unknown → 401, disabled → 403: every request, so a client disabled while its
 * connection is kept alive is refused on its next request), then route. A secret the client may
 * not read is reported exactly like a missing one: service.h returns KB_ERR_NOT_FOUND for both
 * and every handler turns that into the same constant body.
 */
#include "api.h"
#include "api_admin.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "model.h"

/* One body for "missing" and "not readable", on every client endpoint. */
#define API_MSG_SECRET_NOT_FOUND "secret not found"
/* The HSM budget is empty (issue 7): 429 with Retry-After, nothing read or changed. */
#define API_MSG_BUDGET "HSM budget exhausted; retry after the Retry-After delay"

/* ---- request parsing ---------------------------------------------------------------------- */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decode a query value (RFC 3986 section 2.1). '+' stays '+': names may contain it.
 * Decoded control characters (including NUL) are refused. */
static kb_err pct_decode(const char *in, size_t len, char **out)
{
    char *o = malloc(len + 1);
    size_t n = 0;
    KB_ENSURE(o != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == '%') {
            if (i + 2 >= len) {
                free(o);
                return KB_ERR_INVALID;
            }
            int h = hexval(in[i + 1]), l = hexval(in[i + 2]);
            if (h < 0 || l < 0) {
                free(o);
                return KB_ERR_INVALID;
            }
            ch = (unsigned char)(h << 4 | l);
            i += 2;
        }
        if (ch < 0x20 || ch == 0x7f) {
            free(o);
            return KB_ERR_INVALID;
        }
        o[n++] = (char)ch;
    }
    o[n] = '\0';
    *out = o;
    return KB_OK;
}

static void ctx_free(api_ctx *c)
{
    free(c->path_copy);
    for (size_t i = 0; i < c->nq; i++) {
        free(c->qkey[i]);
        free(c->qval[i]);
    }
    memset(c, 0, sizeof(*c));
}

static kb_err parse_path(api_ctx *c, const char *path)
{
    size_t len = strlen(path);
    char *p;
    KB_ENSURE(len > 0 && path[0] == '/', KB_ERR_INVALID);
    KB_ENSURE(len <= API_PATH_MAX, KB_ERR_TOO_LARGE);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)path[i];
        /* Printable ASCII only; no percent-encoding at all: no name needs it, and decoding
         * would let "%2f" or "%2e%2e" smuggle separators past the segment checks. */
        KB_ENSURE(ch > 0x20 && ch < 0x7f && ch != '%' && ch != '\\', KB_ERR_INVALID);
    }
    c->path_copy = strdup(path + 1);
    KB_ENSURE(c->path_copy != NULL, KB_ERR_NOMEM);
    p = c->path_copy;
    for (;;) {
        char *slash = strchr(p, '/');
        if (slash)
            *slash = '\0';
        KB_ENSURE(*p != '\0', KB_ERR_INVALID); /* "//" or a trailing '/' */
        KB_ENSURE(strcmp(p, ".") != 0 && strcmp(p, "..") != 0, KB_ERR_INVALID);
        KB_ENSURE(c->nseg < API_SEGS_MAX, KB_ERR_INVALID);
        c->seg[c->nseg++] = p;
        if (!slash)
            break;
        p = slash + 1;
    }
    return KB_OK;
}

static kb_err parse_query(api_ctx *c, const char *q)
{
    size_t len = strlen(q);
    const char *p = q, *end = q + len;
    size_t n = 0;
    KB_ENSURE(len <= API_QUERY_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(c->nq == 0, KB_ERR_INTERNAL); /* once per request, on a fresh context */
    for (; p < end; n++) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        KB_ENSURE(eq != NULL && eq > p, KB_ERR_INVALID);
        for (const char *k = p; k < eq; k++)
            KB_ENSURE((*k >= 'a' && *k <= 'z') || *k == '_', KB_ERR_INVALID);
        KB_ENSURE(n < API_QUERY_PARAMS_MAX, KB_ERR_INVALID);
        c->qkey[n] = strndup(p, (size_t)(eq - p));
        KB_ENSURE(c->qkey[n] != NULL, KB_ERR_NOMEM);
        c->nq = n + 1; /* ctx_free frees key and value from here on */
        KB_GUARD(pct_decode(eq + 1, (size_t)(stop - eq - 1), &c->qval[n]));
        for (size_t i = 0; i < n; i++)
            KB_ENSURE(strcmp(c->qkey[i], c->qkey[n]) != 0, KB_ERR_INVALID);
        p = amp ? amp + 1 : end;
        KB_ENSURE(!(amp && p == end), KB_ERR_INVALID); /* trailing '&' */
    }
    return KB_OK;
}

/* Keywhiz dates (ApiDate) are ISO 8601 in UTC. */
static json_t *iso_date(int64_t t)
{
    char buf[32];
    struct tm tm;
    time_t tt = (time_t)t;
    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return json_null();
    return json_string(buf);
}

/* Keywhiz's SecretDeliveryResponse shape (what keysync parses): name, secret (base64),
 * secretLength, checksum, creationDate, updateDate, expiry, then the metadata flattened, which is
 * where keysync's mode/owner/group come from. Metadata never overrides a fixed field. */
static json_t *keywhiz_json(const store_record *rec, const kb_secret *content)
{
    json_t *o = json_object(), *meta;
    const char *k;
    json_t *v;
    if (o == NULL)
        return NULL;
    if (json_object_set_new(o, "name", json_string(rec->secret.name)) ||
        (content != NULL && api_add_b64(o, "secret", content)) ||
        json_object_set_new(o, "secretLength", json_integer(rec->version.content_len)) ||
        json_object_set_new(o, "checksum", api_checksum_json(rec->version.checksum)) ||
        json_object_set_new(o, "creationDate", iso_date(rec->secret.created_at)) ||
        json_object_set_new(o, "updateDate", iso_date(rec->version.created_at)) ||
        json_object_set_new(o, "expiry", json_integer(rec->version.expires_at)) ||
        json_object_set_new(o, "version", json_integer(rec->version.version))) {
        json_decref(o);
        return NULL;
    }
    /* Go clients match keys ignoring case, the last one winning: a stored key that equals a
     * fixed field, or an earlier key, ignoring case (possible in rows written before the model
     * refused them) is left out rather than let it replace what the client reads. Sorted keys:
     * the first of a case-equal pair is kept, the same one every time. */
    meta = api_metadata_json(rec->version.metadata);
    json_object_foreach(meta, k, v)
    {
        bool clash = model_metadata_key_reserved(k);
        const char *seen;
        json_t *unused;
        json_object_foreach(o, seen, unused)
        {
            (void)unused;
            clash = clash || strcasecmp(seen, k) == 0;
        }
        if (!clash)
            json_object_set(o, k, v);
    }
    json_decref(meta);
    return o;
}

/* ---- client handlers ---------------------------------------------------------------------- */

static void not_found_secret(api_response *r)
{
    api_error(r, 404, "not_found", API_MSG_SECRET_NOT_FOUND);
}

/* ---- the listing cache (docs/internals/api.md) ---------------------------------------------
 *
 * A client's listing is the same bytes until something that can change it is committed, and a
 * fleet lists far more often than anything changes: keep each client's rendered body, keyed on
 * the store handle and the store_generation read BEFORE the listing was taken (a change
 * committed meanwhile moves the counter, so the entry is already stale when stored), and serve
 * it while the counter has not moved and the entry is younger than API_LIST_CACHE_TTL (changes
 * made by another process, e.g. `keybridge --local`, do not move this process's counter).
 * Authentication and the enabled check run before this on every request; only the listing
 * query and the rendering are saved. Direct-mapped: a colliding client replaces the entry. */
typedef struct {
    const store *st;
    uint64_t gen;
    int64_t client_id;
    int64_t at;
    bool keywhiz;
    char *raw;
    size_t len;
} list_entry;

static list_entry lc_tab[API_LIST_CACHE_SLOTS];
static size_t lc_bytes, lc_entries;
static uint64_t lc_hits, lc_misses;
static pthread_mutex_t lc_mu = PTHREAD_MUTEX_INITIALIZER;

static list_entry *lc_slot(int64_t client_id, bool keywhiz)
{
    uint64_t h = ((uint64_t)client_id * 2 + (keywhiz ? 1 : 0)) * UINT64_C(0x9E3779B97F4A7C15);
    return &lc_tab[(h >> 32) % API_LIST_CACHE_SLOTS];
}

static void lc_drop(list_entry *e)
{
    if (e->raw != NULL) {
        kb_wipe(e->raw, e->len);
        free(e->raw);
        lc_bytes -= e->len;
        lc_entries--;
    }
    memset(e, 0, sizeof(*e));
}

void api_list_cache_clear(void)
{
    pthread_mutex_lock(&lc_mu);
    for (size_t i = 0; i < API_LIST_CACHE_SLOTS; i++)
        lc_drop(&lc_tab[i]);
    pthread_mutex_unlock(&lc_mu);
}

void api_list_cache_stats_get(api_list_cache_stats *out)
{
    pthread_mutex_lock(&lc_mu);
    out->hits = lc_hits;
    out->misses = lc_misses;
    out->entries = lc_entries;
    out->bytes = lc_bytes;
    pthread_mutex_unlock(&lc_mu);
}

/* A copy of the cached body (malloc'd), or NULL on a miss. */
static char *lc_get(const store *st, uint64_t gen, int64_t client_id, bool keywhiz, int64_t now,
                    size_t *len)
{
    char *out = NULL;
    pthread_mutex_lock(&lc_mu);
    list_entry *e = lc_slot(client_id, keywhiz);
    if (e->raw != NULL && e->st == st && e->client_id == client_id && e->keywhiz == keywhiz) {
        /* A clock that went back also ends an entry. */
        if (e->gen == gen && now >= e->at && now - e->at < API_LIST_CACHE_TTL) {
            out = malloc(e->len);
            if (out != NULL) {
                memcpy(out, e->raw, e->len);
                *len = e->len;
            }
        } else {
            lc_drop(e);
        }
    }
    if (out != NULL)
        lc_hits++;
    else
        lc_misses++;
    pthread_mutex_unlock(&lc_mu);
    return out;
}

static void lc_put(const store *st, uint64_t gen, int64_t client_id, bool keywhiz, int64_t now,
                   const char *raw, size_t len)
{
    char *copy;
    if (len > API_LIST_CACHE_ENTRY_MAX || (copy = malloc(len)) == NULL)
        return;
    memcpy(copy, raw, len);
    pthread_mutex_lock(&lc_mu);
    list_entry *e = lc_slot(client_id, keywhiz);
    lc_drop(e);
    /* Over the byte budget: start over (simple, and rare with entries this small). */
    if (lc_bytes + len > API_LIST_CACHE_BYTES_MAX)
        for (size_t i = 0; i < API_LIST_CACHE_SLOTS; i++)
            lc_drop(&lc_tab[i]);
    *e = (list_entry){.st = st,
                      .gen = gen,
                      .client_id = client_id,
                      .at = now,
                      .keywhiz = keywhiz,
                      .raw = copy,
                      .len = len};
    lc_bytes += len;
    lc_entries++;
    pthread_mutex_unlock(&lc_mu);
}

#define API_LIST_BODY_MAX ((size_t)64 * 1024 * 1024) /* a client's rendered listing */

/* Render a listing: the native shape straight into bytes, Keywhiz's through jansson (its
 * flattened metadata), both compact and byte-identical to dumping the old trees. */
static kb_err render_list(const store_client *who, bool keywhiz, const store_record *recs, size_t n,
                          kb_dbuf *b)
{
    if (keywhiz) {
        json_t *arr = json_array();
        char *t;
        kb_err rc;
        for (size_t i = 0; arr != NULL && i < n; i++) {
            json_t *e = keywhiz_json(&recs[i], NULL);
            if (e == NULL || json_array_append_new(arr, e) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        t = arr ? kb_json_dump(arr) : NULL;
        json_decref(arr);
        rc = t ? kb_dbuf_addstr(b, t) : KB_ERR_NOMEM;
        kb_json_free_str(t);
        return rc;
    }
    KB_GUARD(kb_dbuf_addstr(b, "{\"client\":"));
    KB_GUARD(api_render_string(b, who->spiffe_id));
    KB_GUARD(kb_dbuf_addstr(b, ",\"application\":"));
    KB_GUARD(api_render_string(b, who->app_name ? who->app_name : ""));
    KB_GUARD(kb_dbuf_addstr(b, ",\"secrets\":["));
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            KB_GUARD(kb_dbuf_addc(b, ','));
        KB_GUARD(api_record_render(b, &recs[i]));
    }
    return kb_dbuf_addstr(b, "]}");
}

static void h_list(svc *s, api_ctx *c, const store_client *who, bool keywhiz, api_response *r)
{
    store *st = svc_store(s);
    store_record *recs = NULL;
    size_t n = 0, len = 0;
    uint64_t gen;
    kb_dbuf b;
    char *raw;
    kb_err rc;

    if (api_query_only(c, NULL) != KB_OK) {
        api_error(r, 400, "invalid", "unexpected query parameter");
        return;
    }
    /* Read before the listing is taken (store.h, store_generation). */
    gen = store_generation(st);
    raw = lc_get(st, gen, who->id, keywhiz, c->actor.now, &len);
    if (raw != NULL) {
        /* Still a listing: the activity marker moves as svc_client_list would move it. */
        if (store_client_seen(st, who->id, c->actor.now, true) != KB_OK)
            kb_log(KB_LOG_WARN, "client_seen_failed", NULL);
        api_ok_raw(r, raw, len);
        return;
    }
    rc = svc_client_list(s, &c->actor, who, &recs, &n);
    if (rc != KB_OK) {
        api_error_kb(r, rc, "cannot list secrets");
        return;
    }
    kb_dbuf_init(&b, API_LIST_BODY_MAX);
    rc = render_list(who, keywhiz, recs, n, &b);
    store_records_free(recs, n);
    if (rc != KB_OK) {
        kb_dbuf_free(&b);
        api_error_kb(r, rc == KB_ERR_TOO_LARGE ? KB_ERR_INTERNAL : rc, "");
        return;
    }
    raw = kb_dbuf_steal(&b, &len);
    if (raw == NULL) {
        api_error_kb(r, KB_ERR_NOMEM, "");
        return;
    }
    lc_put(st, gen, who->id, keywhiz, c->actor.now, raw, len);
    api_ok_raw(r, raw, len);
}

static void h_get(svc *s, api_ctx *c, const store_client *who, const char *name, bool keywhiz,
                  api_response *r)
{
    static const char *const q_native[] = {"version", NULL};
    store_record rec;
    kb_secret *content = NULL;
    int64_t version = 0;
    kb_err rc;

    if (api_query_only(c, keywhiz ? NULL : q_native) != KB_OK ||
        api_query_int(c, "version", 0, &version) != KB_OK) {
        api_error(r, 400, "invalid", "bad query parameter");
        return;
    }
    if (model_name_check(name) != KB_OK) {
        api_error(r, 400, "invalid", "invalid secret name");
        return;
    }
    rc = svc_client_read(s, &c->actor, who, name, version, &rec, &content);
    if (rc == KB_ERR_NOT_FOUND) {
        not_found_secret(r);
        return;
    }
    if (rc == KB_ERR_LIMIT) {
        api_error(r, 429, kb_err_str(rc), API_MSG_BUDGET);
        r->retry_after = svc_retry_after(s, &c->actor, who->cloud);
        return;
    }
    if (rc != KB_OK) {
        api_error_kb(r, rc, "cannot read secret");
        return;
    }
    api_ok(r, 200, keywhiz ? keywhiz_json(&rec, content) : api_record_json(&rec, content));
    kb_secret_free(content);
    store_record_clear(&rec);
}

/* Names from a JSON array: strings, valid names, no duplicates, 1..STORE_BATCH_MAX. */
static kb_err batch_names(const json_t *arr, const char ***out, size_t *n)
{
    size_t len;
    const char **names;
    if (!json_is_array(arr))
        return KB_ERR_INVALID;
    len = json_array_size(arr);
    KB_ENSURE(len > 0, KB_ERR_INVALID);
    KB_ENSURE(len <= STORE_BATCH_MAX, KB_ERR_TOO_LARGE);
    names = calloc(len, sizeof(*names));
    KB_ENSURE(names != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < len; i++) {
        const json_t *v = json_array_get(arr, i);
        if (!json_is_string(v) || model_name_check(json_string_value(v)) != KB_OK) {
            free(names);
            return KB_ERR_INVALID;
        }
        names[i] = json_string_value(v);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(names[j], names[i]) == 0) {
                free(names);
                return KB_ERR_INVALID;
            }
        }
    }
    *out = names;
    *n = len;
    return KB_OK;
}

static void h_batch(svc *s, api_ctx *c, const store_client *who, bool keywhiz, api_response *r)
{
    static const char *const k_native[] = {"names", NULL};
    static const char *const k_keywhiz[] = {"secrets", NULL};
    json_t *body = NULL, *arr = NULL;
    const json_t *want;
    const char **names = NULL;
    size_t n = 0;
    store_record *recs = NULL;
    kb_secret **contents = NULL;
    kb_err *errs = NULL, rc;
    int64_t retry = 0;

    if (api_query_only(c, NULL) != KB_OK) {
        api_error(r, 400, "invalid", "unexpected query parameter");
        return;
    }
    if (api_body(c, keywhiz ? k_keywhiz : k_native, 0, &body, r) != KB_OK)
        return;
    want = json_object_get(body, keywhiz ? "secrets" : "names");
    if (keywhiz && (json_is_null(want) || (json_is_array(want) && json_array_size(want) == 0))) {
        /* keysync posts {"secrets":null} (a nil Go slice) on every poll with nothing to fetch:
         * Keywhiz answers an empty batch, so do we. Only an absent or wrong-typed member is an
         * error. */
        api_ok(r, 200, json_array());
        goto out;
    }
    rc = batch_names(want, &names, &n);
    if (rc != KB_OK) {
        api_error(r, api_status_for(rc), kb_err_str(rc),
                  "names must be a non-empty array of distinct valid secret names (at most "
                  "1000)");
        goto out;
    }
    recs = calloc(n, sizeof(*recs));
    contents = calloc(n, sizeof(*contents));
    errs = calloc(n, sizeof(*errs));
    if (recs == NULL || contents == NULL || errs == NULL) {
        api_error_kb(r, KB_ERR_NOMEM, "");
        goto out;
    }
    rc = svc_client_read_batch(s, &c->actor, who, names, n, recs, contents, errs);
    if (rc != KB_OK) {
        api_error_kb(r, rc, "cannot read secrets");
        goto out;
    }
    /* Names the budget could not cover are deferred, all with the same hint (issue 7). */
    for (size_t i = 0; i < n && retry == 0; i++)
        if (errs[i] == KB_ERR_LIMIT)
            retry = svc_retry_after(s, &c->actor, who->cloud);
    if (keywhiz) {
        /* Keywhiz answers a batch all-or-nothing: any unreadable name is a 404 for the whole
         * request, with the same body as a single missing secret; failing that, any deferred
         * name makes it a 429 (the names served meanwhile have their data keys cached, so
         * the retry costs only the rest). */
        for (size_t i = 0; i < n; i++) {
            if (errs[i] == KB_ERR_NOT_FOUND) {
                not_found_secret(r);
                goto out;
            }
        }
        if (retry > 0) {
            api_error(r, 429, kb_err_str(KB_ERR_LIMIT), API_MSG_BUDGET);
            r->retry_after = retry;
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            if (errs[i] != KB_OK) {
                if (errs[i] == KB_ERR_NOT_FOUND)
                    not_found_secret(r);
                else
                    api_error_kb(r, errs[i], "cannot read secrets");
                goto out;
            }
        }
    }
    arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++) {
        json_t *e;
        if (errs[i] == KB_OK)
            e = keywhiz ? keywhiz_json(&recs[i], contents[i])
                        : api_record_json(&recs[i], contents[i]);
        else if (errs[i] == KB_ERR_LIMIT)
            e = json_pack("{s:s,s:s,s:I}", "name", names[i], "error", "deferred", "retry_after",
                          (json_int_t)retry);
        else
            e = json_pack("{s:s,s:s}", "name", names[i], "error",
                          api_status_for(errs[i]) >= 500 ? "unavailable" : kb_err_str(errs[i]));
        if (e == NULL || json_array_append_new(arr, e) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    if (arr == NULL) {
        api_error_kb(r, KB_ERR_NOMEM, "");
        goto out;
    }
    if (keywhiz)
        api_ok(r, 200, arr);
    else
        api_ok(r, 200, json_pack("{s:o}", "secrets", arr));
    /* A 200 with deferred entries also carries the hint as a header, for generic clients. */
    r->retry_after = retry;
out:
    for (size_t i = 0; i < n; i++) {
        if (contents)
            kb_secret_free(contents[i]);
        if (recs)
            store_record_clear(&recs[i]);
    }
    free(contents);
    free(recs);
    free(errs);
    free(names);
    json_decref(body);
}

/* ---- health ------------------------------------------------------------------------------- */

static void h_health(svc *s, bool ready, api_response *r)
{
    int v = 0;
    if (!ready) {
        api_ok(r, 200, json_pack("{s:s}", "status", "ok"));
        return;
    }
    /* Ready = the store answers; the keys were derived through the token at start-up. */
    if (s == NULL || store_schema_version(svc_store(s), &v) != KB_OK) {
        api_error(r, 503, "unavailable", "store not ready");
        r->retry_after = 1;
        return;
    }
    api_ok(r, 200, json_pack("{s:s,s:i}", "status", "ready", "schema", v));
}

/* ---- routing ------------------------------------------------------------------------------ */

static bool is(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

static void method_not_allowed(api_response *r)
{
    api_error(r, 405, "method_not_allowed", "method not allowed on this route");
}

static void handle(svc *s, const api_request *req, api_response *r, bool raw_ok)
{
    api_ctx c;
    store_client who;
    kb_err prc, rc;
    const char *m;

    memset(r, 0, sizeof(*r));
    memset(&c, 0, sizeof(c));
    memset(&who, 0, sizeof(who));
    if (req == NULL || req->method == NULL || req->path == NULL) {
        api_error(r, 400, "invalid", "malformed request");
        return;
    }
    m = req->method;
    c.req = req;
    c.actor.identity = req->spiffe_id ? req->spiffe_id : "";
    c.actor.peer = req->peer ? req->peer : "";
    c.actor.now = req->now;
    prc = parse_path(&c, req->path);
    if (prc == KB_OK)
        prc = parse_query(&c, req->query ? req->query : "");

    /* Health needs no client row: the TLS layer already required a valid SVID. */
    if (prc == KB_OK && c.nseg == 1 && (is(c.seg[0], "healthz") || is(c.seg[0], "readyz"))) {
        if (!is(m, "GET"))
            method_not_allowed(r);
        else
            h_health(s, is(c.seg[0], "readyz"), r);
        goto out;
    }

    if (req->spiffe_id == NULL || req->spiffe_id[0] == '\0') {
        api_error(r, 401, "auth", "a client certificate is required");
        goto out;
    }
    rc = svc_client_auth(s, &c.actor, &who);
    if (rc == KB_ERR_NOT_FOUND) {
        api_error(r, 401, "auth", "unknown client");
        goto out;
    }
    if (rc == KB_ERR_DENIED || rc == KB_ERR_INTEGRITY) {
        api_error(r, 403, "denied", "client is disabled");
        goto out;
    }
    if (rc != KB_OK) {
        api_error_kb(r, rc, "");
        goto out;
    }
    if (prc != KB_OK) {
        api_error(r, api_status_for(prc), kb_err_str(prc), "malformed path or query");
        goto out;
    }

    if (c.nseg >= 2 && is(c.seg[0], "v1") && is(c.seg[1], "admin")) {
        /* Admins manage everything; an owner (a member of secrets' owner groups) manages only
         * those secrets, through the routes api_admin lets owners use (service.h, svc_scope). */
        svc_scope sc;
        rc = svc_scope_get(s, &who, &sc);
        if (rc != KB_OK) {
            api_error_kb(r, rc, "");
            goto out;
        }
        if (!svc_console_allowed(&who, &sc)) {
            svc_scope_clear(&sc);
            svc_audit_event(s, &c.actor, "admin.denied", req->path, 0, KB_ERR_DENIED);
            api_error(r, 403, "denied", "admin identity required");
            goto out;
        }
        c.scope = &sc;
        api_admin(s, &c, &who, r);
        c.scope = NULL;
        svc_scope_clear(&sc);
        goto out;
    }
    if (c.nseg == 2 && is(c.seg[0], "v1") && is(c.seg[1], "secrets")) {
        if (is(m, "GET"))
            h_list(s, &c, &who, false, r);
        else
            method_not_allowed(r);
    } else if (c.nseg == 3 && is(c.seg[0], "v1") && is(c.seg[1], "secrets")) {
        if (is(m, "GET"))
            h_get(s, &c, &who, c.seg[2], false, r);
        else
            method_not_allowed(r);
    } else if (c.nseg == 2 && is(c.seg[0], "v1") && is(c.seg[1], "secrets:batchGet")) {
        if (is(m, "POST"))
            h_batch(s, &c, &who, false, r);
        else
            method_not_allowed(r);
    } else if (c.nseg == 1 && is(c.seg[0], "secrets")) {
        if (is(m, "GET"))
            h_list(s, &c, &who, true, r);
        else
            method_not_allowed(r);
    } else if (c.nseg == 2 && is(c.seg[0], "secret")) {
        if (is(m, "GET"))
            h_get(s, &c, &who, c.seg[1], true, r);
        else
            method_not_allowed(r);
    } else if (c.nseg == 1 && is(c.seg[0], "batchsecret")) {
        if (is(m, "POST"))
            h_batch(s, &c, &who, true, r);
        else
            method_not_allowed(r);
    } else {
        api_error(r, 404, "not_found", "no such route");
    }
out:
    /* In-process callers get a tree (api.h, api_handle_raw); the bytes were made by json_dumps or
     * byte-identically to it, so this parse cannot fail short of memory. */
    if (r->raw != NULL && !raw_ok) {
        json_error_t je;
        json_t *t = json_loadb(r->raw, r->raw_len, 0, &je);
        api_raw_drop(r);
        if (t != NULL)
            r->body = t;
    }
    if (r->body == NULL && r->raw == NULL && r->status != 204)
        api_error(r, 500, "internal", "internal error");
    /* A budget refusal anywhere (admin writes, rollback, admin reads): the real hint. */
    if (r->status == 429 && who.id != 0 && r->retry_after <= 1)
        r->retry_after = svc_retry_after(s, &c.actor, who.cloud);
    store_client_clear(&who);
    ctx_free(&c);
}

void api_handle(svc *s, const api_request *req, api_response *r)
{
    handle(s, req, r, false);
}

void api_handle_raw(svc *s, const api_request *req, api_response *r)
{
    handle(s, req, r, true);
}

/* ---- metrics route names ------------------------------------------------------------------ */

static const char *const admin_colls[] = {"secrets",     "expiring", "groups", "clients",
                                          "memberships", "grants",   "audit",  NULL};
static const char *const admin_routes2[] = {
    "/v1/admin/secrets",     "/v1/admin/expiring", "/v1/admin/groups", "/v1/admin/clients",
    "/v1/admin/memberships", "/v1/admin/grants",   "/v1/admin/audit",
};
static const char *const admin_routes3[] = {
    "/v1/admin/secrets/{name}", NULL, "/v1/admin/groups/{name}",
    "/v1/admin/clients/{id}",   NULL, NULL,
    "/v1/admin/audit/verify",
};
static const char *const secret_actions[] = {"restore", "purge",  "versions", "rollback",
                                             "content", "status", "generate", NULL};
static const char *const secret_action_routes[] = {
    "/v1/admin/secrets/{name}/restore",  "/v1/admin/secrets/{name}/purge",
    "/v1/admin/secrets/{name}/versions", "/v1/admin/secrets/{name}/rollback",
    "/v1/admin/secrets/{name}/content",  "/v1/admin/secrets/{name}/status",
    "/v1/admin/secrets/{name}/generate",
};

const char *api_route_name(const char *method, const char *path)
{
    api_ctx c;
    const char *name = "other";
    (void)method;
    memset(&c, 0, sizeof(c));
    if (path == NULL || parse_path(&c, path) != KB_OK)
        goto out;
    if (c.nseg == 1) {
        if (is(c.seg[0], "healthz"))
            name = "/healthz";
        else if (is(c.seg[0], "readyz"))
            name = "/readyz";
        else if (is(c.seg[0], "secrets"))
            name = "/secrets";
        else if (is(c.seg[0], "batchsecret"))
            name = "/batchsecret";
    } else if (c.nseg == 2 && is(c.seg[0], "secret")) {
        name = "/secret/{name}";
    } else if (c.nseg >= 2 && is(c.seg[0], "v1")) {
        if (c.nseg == 2 && is(c.seg[1], "secrets"))
            name = "/v1/secrets";
        else if (c.nseg == 2 && is(c.seg[1], "secrets:batchGet"))
            name = "/v1/secrets:batchGet";
        else if (c.nseg == 3 && is(c.seg[1], "secrets"))
            name = "/v1/secrets/{name}";
        else if (c.nseg >= 3 && c.nseg <= 5 && is(c.seg[1], "admin")) {
            for (size_t i = 0; admin_colls[i]; i++) {
                if (!is(c.seg[2], admin_colls[i]))
                    continue;
                if (c.nseg == 3)
                    name = admin_routes2[i];
                else if (c.nseg == 4 && admin_routes3[i])
                    name = admin_routes3[i];
                else if (c.nseg == 5 && i == 0) {
                    for (size_t j = 0; secret_actions[j]; j++)
                        if (is(c.seg[4], secret_actions[j]))
                            name = secret_action_routes[j];
                }
                break;
            }
        }
    }
out:
    ctx_free(&c);
    return name;
}
