/* api_admin.c - the admin API (/v1/admin/...): secrets, versions, groups, clients,
 * memberships, grants, expiry and audit. The caller (api_handle) has already checked that the
 * client is an enabled admin or an owner (c->scope, service.h svc_scope): owners pass owner_gate
 * first and see only the secrets of their groups. Content reads and writes go through service.h
 * (sealing, checksum, audit); other changes call store.h and are audited here with
 * svc_audit_event, success or not.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_admin.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/spiffe_id.h"
#include "generate.h"
#include "model.h"

static bool is(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

/* ---- typed body fields (absent is fine unless required; a wrong type is KB_ERR_INVALID) ---- */

static kb_err f_str(const json_t *o, const char *k, bool required, const char **out)
{
    const json_t *v = json_object_get(o, k);
    *out = NULL;
    if (v == NULL)
        return required ? KB_ERR_INVALID : KB_OK;
    KB_ENSURE(json_is_string(v), KB_ERR_INVALID);
    /* JSON strings may carry "\u0000": refuse them rather than silently truncate. */
    KB_ENSURE(strlen(json_string_value(v)) == json_string_length(v), KB_ERR_INVALID);
    *out = json_string_value(v);
    return KB_OK;
}

static kb_err f_bool(const json_t *o, const char *k, int *out)
{
    const json_t *v = json_object_get(o, k);
    *out = -1;
    if (v == NULL)
        return KB_OK;
    KB_ENSURE(json_is_boolean(v), KB_ERR_INVALID);
    *out = json_is_true(v) ? 1 : 0;
    return KB_OK;
}

/* Non-negative integer; JSON null counts as 0 when nullable. */
static kb_err f_int(const json_t *o, const char *k, bool nullable, int64_t *out)
{
    const json_t *v = json_object_get(o, k);
    *out = 0;
    if (v == NULL || (nullable && json_is_null(v)))
        return KB_OK;
    KB_ENSURE(json_is_integer(v), KB_ERR_INVALID);
    KB_ENSURE(json_integer_value(v) >= 0, KB_ERR_INVALID);
    *out = (int64_t)json_integer_value(v);
    return KB_OK;
}

/* Metadata object → canonical text for the store (NULL if absent). */
static kb_err f_metadata(const json_t *o, char **out)
{
    const json_t *v = json_object_get(o, "metadata");
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return KB_OK;
    KB_ENSURE(json_is_object(v), KB_ERR_INVALID);
    KB_GUARD(model_metadata_check(v));
    *out = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    KB_ENSURE(*out != NULL, KB_ERR_NOMEM);
    return KB_OK;
}

#define CLOUD_EMPTY_MSG                                                                            \
    "cloud_sync secrets need at least 1 byte of content (Secrets Manager refuses an empty "        \
    "value); put a non-empty version first"
#define APP_NAME_MSG                                                                               \
    "app_name must be 1..246 characters of A-Z a-z 0-9 _ . + = @ -, not starting with '.' "        \
    "(keybridge/<app>/<secret name> must fit Secrets Manager's 512-character names)"

static void bad_body(api_response *r, kb_err rc, const char *msg)
{
    api_error(r, api_status_for(rc) == 413 ? 413 : 400, kb_err_str(rc), msg);
}

/* Finish an admin change begun with svc_change_begin (its audit row committed with it, or the
 * failure row appended) and answer its error, if any. Returns true if rc is an error. */
static bool audited(svc *s, store_audit *au, kb_err rc, api_response *r, const char *not_found_msg)
{
    svc_change_end(s, au, rc);
    if (rc == KB_OK)
        return false;
    api_error_kb(r, rc, rc == KB_ERR_NOT_FOUND ? not_found_msg : "request refused");
    return true;
}

/* A client's SPIFFE ID as the mTLS handshake would accept it (x509svid_verify): the canonical
 * form of spiffe_id.h, not a trust domain's root ID, and in the server's [server] trust_domain.
 * An ID the handshake refuses could never authenticate, so storing it only misleads. KB_OK or
 * KB_ERR_INVALID/KB_ERR_TOO_LARGE with *why a static reason (never quoting the input). */
static kb_err client_id_check(svc *s, const char *id, const char **why)
{
    spiffe_id sid;
    const char *td = svc_trust_domain(s);
    kb_err rc;
    *why = "missing SPIFFE ID";
    KB_ENSURE(id != NULL, KB_ERR_INVALID);
    rc = model_spiffe_id_check(id);
    if (rc == KB_OK)
        rc = spiffe_id_parse_str(id, &sid, why);
    else
        *why = rc == KB_ERR_TOO_LARGE ? "SPIFFE ID too long" : "not a SPIFFE ID";
    if (rc != KB_OK)
        return rc;
    if (spiffe_id_is_root(&sid)) {
        *why = "a trust domain's root ID is not a workload identity";
        return KB_ERR_INVALID;
    }
    if (td != NULL && !spiffe_id_member_of(&sid, td)) {
        *why = "SPIFFE ID is not in the server's trust domain";
        return KB_ERR_INVALID;
    }
    return KB_OK;
}

static void bad_client_id(api_response *r, kb_err rc, const char *why)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "invalid SPIFFE ID: %s", why);
    api_error(r, api_status_for(rc) == 413 ? 413 : 400, kb_err_str(rc), msg);
}

/* Count of clients that are enabled admins. */
static kb_err enabled_admins(store *st, size_t *out)
{
    store_client *cls = NULL;
    size_t n = 0;
    *out = 0;
    KB_GUARD(store_client_list(st, &cls, &n));
    for (size_t i = 0; i < n; i++)
        if (cls[i].enabled && cls[i].admin)
            (*out)++;
    store_clients_free(cls, n);
    return KB_OK;
}

/* ---- rendering ---------------------------------------------------------------------------- */

typedef struct {
    store_group *g;
    size_t n;
} groups_map;

static json_t *group_name_json(const groups_map *gm, int64_t id)
{
    for (size_t i = 0; id > 0 && i < gm->n; i++)
        if (gm->g[i].id == id)
            return json_string(gm->g[i].name);
    return json_null();
}

static json_t *admin_record_json(const store_record *rec, const groups_map *gm)
{
    const store_secret *s = &rec->secret;
    const store_version *v = &rec->version;
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (json_object_set_new(o, "name", json_string(s->name)) ||
        json_object_set_new(o, "id", json_integer(s->id)) ||
        json_object_set_new(o, "version", json_integer(s->latest_version)) ||
        json_object_set_new(o, "description", json_string(s->description ? s->description : "")) ||
        json_object_set_new(o, "owner_group", group_name_json(gm, s->owner_group_id)) ||
        json_object_set_new(o, "cloud_sync", json_boolean(s->cloud_sync)) ||
        json_object_set_new(o, "deleted_at", api_time_or_null(s->deleted_at)) ||
        json_object_set_new(o, "checksum", api_checksum_json(v->checksum)) ||
        json_object_set_new(o, "content_length", json_integer(v->content_len)) ||
        json_object_set_new(o, "expires_at", api_time_or_null(v->expires_at)) ||
        json_object_set_new(o, "metadata", api_metadata_json(v->metadata)) ||
        json_object_set_new(o, "created_by", json_string(s->created_by ? s->created_by : "")) ||
        json_object_set_new(o, "created_at", json_integer(s->created_at)) ||
        json_object_set_new(o, "updated_by", json_string(s->updated_by ? s->updated_by : "")) ||
        json_object_set_new(o, "updated_at", json_integer(s->updated_at))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *version_json(const store_version *v)
{
    return json_pack("{s:I,s:o,s:I,s:o,s:o,s:s,s:I}", "version", (json_int_t)v->version, "checksum",
                     api_checksum_json(v->checksum), "content_length", (json_int_t)v->content_len,
                     "metadata", api_metadata_json(v->metadata), "expires_at",
                     api_time_or_null(v->expires_at), "created_by",
                     v->created_by ? v->created_by : "", "created_at", (json_int_t)v->created_at);
}

static json_t *client_json(const store_client *cl)
{
    return json_pack(
        "{s:I,s:s,s:b,s:b,s:b,s:s,s:s,s:o,s:o,s:s,s:I}", "id", (json_int_t)cl->id, "spiffe_id",
        cl->spiffe_id, "enabled", cl->enabled, "admin", cl->admin, "cloud", cl->cloud, "app_name",
        cl->app_name ? cl->app_name : "", "description", cl->description ? cl->description : "",
        "last_seen", api_time_or_null(cl->last_seen), "last_list_at",
        api_time_or_null(cl->last_list_at), "created_by", cl->created_by ? cl->created_by : "",
        "created_at", (json_int_t)cl->created_at);
}

static json_t *group_json(const store_group *g)
{
    return json_pack("{s:I,s:s,s:s,s:s,s:I}", "id", (json_int_t)g->id, "name", g->name,
                     "description", g->description ? g->description : "", "created_by",
                     g->created_by ? g->created_by : "", "created_at", (json_int_t)g->created_at);
}

static json_t *records_json(const store_record *recs, size_t n, const groups_map *gm)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++) {
        if (json_array_append_new(arr, admin_record_json(&recs[i], gm)) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

/* Keep the records the caller may manage (all for an admin) at the front; returns how many. The
 * rest stay behind them in the array, to be freed with it. */
static size_t scope_filter(const svc_scope *sc, store_record *recs, size_t n)
{
    size_t k = 0;
    if (sc == NULL || sc->admin)
        return n;
    for (size_t i = 0; i < n; i++) {
        if (!svc_may_manage(sc, recs[i].secret.owner_group_id))
            continue;
        if (i != k) {
            store_record t = recs[k];
            recs[k] = recs[i];
            recs[i] = t;
        }
        k++;
    }
    return k;
}

/* ---- secrets ------------------------------------------------------------------------------ */

#define ADMIN_LIST_PAGE 1000                             /* secrets rendered per step */
#define ADMIN_LIST_BODY_MAX ((size_t)1024 * 1024 * 1024) /* the whole admin listing */

/* Append one page's records to the listing: rendered as before (records_json, compact dump) and
 * pasted without the page array's brackets. */
static kb_err list_page_append(kb_dbuf *out, const store_record *recs, size_t n,
                               const groups_map *gm, bool *first)
{
    json_t *arr;
    char *t;
    size_t l;
    kb_err rc = KB_OK;
    if (n == 0)
        return KB_OK;
    arr = records_json(recs, n, gm);
    t = arr ? kb_json_dump(arr) : NULL;
    json_decref(arr);
    KB_ENSURE(t != NULL, KB_ERR_NOMEM);
    l = strlen(t);
    if (l > 2) {
        if (!*first)
            rc = kb_dbuf_addc(out, ',');
        if (rc == KB_OK)
            rc = kb_dbuf_add(out, t + 1, l - 2);
        *first = false;
    }
    kb_json_free_str(t);
    return rc;
}

/* The admin listing of every secret, built page by page (store_secret_list_page) into one buffer
 * of bytes: with 100,000 secrets a jansson tree of the whole listing peaked at 422 MB, this at
 * about 101 MB (bench/keybridged/README.md). The body is the same: {"secrets":[...]} by name. */
static void secrets_list(svc *s, api_ctx *c, api_response *r)
{
    static const char *const q[] = {"deleted", NULL};
    const char *del = api_query(c, "deleted");
    store_record *recs = NULL;
    size_t n = 0, len = 0;
    groups_map gm = {NULL, 0};
    char *cursor = NULL, *raw;
    bool first = true;
    kb_dbuf out;
    kb_err rc;

    if (api_query_only(c, q) != KB_OK || (del && !is(del, "0") && !is(del, "1"))) {
        api_error(r, 400, "invalid", "bad query parameter");
        return;
    }
    kb_dbuf_init(&out, ADMIN_LIST_BODY_MAX);
    rc = store_group_list(svc_store(s), &gm.g, &gm.n);
    if (rc == KB_OK)
        rc = kb_dbuf_addstr(&out, "{\"secrets\":[");
    while (rc == KB_OK) {
        char *next = NULL;
        rc = store_secret_list_page(svc_store(s), del && is(del, "1"), cursor, ADMIN_LIST_PAGE,
                                    &recs, &n, &next);
        if (rc != KB_OK)
            break;
        rc = list_page_append(&out, recs, scope_filter(c->scope, recs, n), &gm, &first);
        store_records_free(recs, n);
        recs = NULL;
        free(cursor);
        cursor = next;
        if (cursor == NULL)
            break;
    }
    free(cursor);
    if (rc == KB_OK)
        rc = kb_dbuf_addstr(&out, "]}");
    store_groups_free(gm.g, gm.n);
    if (rc != KB_OK) {
        kb_dbuf_free(&out);
        api_error_kb(r, rc == KB_ERR_TOO_LARGE ? KB_ERR_INTERNAL : rc, "");
        return;
    }
    raw = kb_dbuf_steal(&out, &len);
    json_decref(r->body);
    r->body = NULL;
    r->status = 200;
    r->raw = raw;
    r->raw_len = len;
    if (raw == NULL)
        api_error_kb(r, KB_ERR_NOMEM, "");
}

/* Shared by create (POST) and new version (PUT). */
static void secret_write(svc *s, api_ctx *c, const char *path_name, api_response *r)
{
    static const char *const k_create[] = {
        "name",        "content",    "description",         "metadata", "expires_at",
        "owner_group", "cloud_sync", "expiry_from_content", NULL};
    static const char *const k_put[] = {"content", "metadata", "expires_at", "expiry_from_content",
                                        NULL};
    bool create = path_name == NULL;
    json_t *body = NULL;
    const char *b64 = NULL;
    char *meta = NULL;
    kb_secret *content = NULL;
    svc_secret_spec spec;
    int cloud = -1, from_content = -1;
    int64_t id = 0, version = 0;
    kb_err rc;

    memset(&spec, 0, sizeof(spec));
    if (api_query_only(c, NULL) != KB_OK) {
        api_error(r, 400, "invalid", "unexpected query parameter");
        return;
    }
    if (api_body(c, create ? k_create : k_put, 0, &body, r) != KB_OK)
        return;
    spec.name = path_name;
    if ((create && f_str(body, "name", true, &spec.name) != KB_OK) ||
        f_str(body, "content", true, &b64) != KB_OK ||
        f_str(body, "description", false, &spec.description) != KB_OK ||
        f_str(body, "owner_group", false, &spec.owner_group) != KB_OK ||
        f_bool(body, "cloud_sync", &cloud) != KB_OK ||
        f_bool(body, "expiry_from_content", &from_content) != KB_OK ||
        f_int(body, "expires_at", true, &spec.expires_at) != KB_OK) {
        bad_body(r, KB_ERR_INVALID, "missing field or wrong type");
        goto out;
    }
    if ((rc = model_name_check(spec.name)) != KB_OK ||
        (rc = model_description_check(spec.description)) != KB_OK ||
        (spec.owner_group && (rc = model_name_check(spec.owner_group)) != KB_OK)) {
        bad_body(r, rc, "invalid name, description or owner group");
        goto out;
    }
    if ((rc = f_metadata(body, &meta)) != KB_OK) {
        bad_body(r, rc,
                 "metadata must be an object of at most 64 valid string values whose keys are "
                 "distinct ignoring case and are not a Keywhiz field ignoring case (name, secret, "
                 "secretLength, checksum, creationDate, updateDate, expiry, version)");
        goto out;
    }
    if ((rc = kb_b64_decode_secret(b64, strlen(b64), KB_SECRET_MAX, &content)) != KB_OK) {
        bad_body(r, rc, "content must be canonical padded base64");
        goto out;
    }
    spec.cloud_sync = cloud == 1;
    spec.expiry_from_content = from_content == 1;
    if (spec.expiry_from_content && spec.expires_at > 0) {
        bad_body(r, KB_ERR_INVALID, "expires_at and expiry_from_content exclude each other");
        goto out;
    }
    spec.content = kb_secret_cdata(content);
    spec.content_len = kb_secret_len(content);
    spec.metadata = meta;
    if (create)
        rc = svc_secret_create(s, &c->actor, &spec, &id);
    else
        rc = svc_secret_put(s, &c->actor, &spec, &version);
    if (rc != KB_OK) {
        api_error_kb(r, rc,
                     rc == KB_ERR_NOT_FOUND
                         ? (create ? "owner group not found" : "secret not found")
                     : rc == KB_ERR_EXISTS    ? "a secret with this name exists (maybe deleted)"
                     : rc == KB_ERR_TOO_LARGE ? "content too large"
                     : rc == KB_ERR_INVALID && spec.content_len == 0 ? CLOUD_EMPTY_MSG
                     : rc == KB_ERR_INVALID && spec.expiry_from_content
                         ? "expiry_from_content: no expiry could be read from the content (not "
                           "an X.509 certificate, PKCS#12 or OpenPGP key with a date, or "
                           "malformed)"
                         : "request refused");
        goto out;
    }
    if (create)
        api_ok(r, 201,
               json_pack("{s:s,s:I,s:i}", "name", spec.name, "id", (json_int_t)id, "version", 1));
    else
        api_ok(r, 200, json_pack("{s:s,s:I}", "name", spec.name, "version", (json_int_t)version));
out:
    kb_secret_free(content);
    free(meta);
    json_decref(body);
}

static void secret_show(svc *s, const char *name, api_response *r)
{
    store_secret sec;
    store_version *vers = NULL;
    store_group *grps = NULL;
    size_t nv = 0, ng = 0;
    groups_map gm = {NULL, 0};
    store_record rec;
    json_t *o = NULL, *garr;
    kb_err rc;

    memset(&sec, 0, sizeof(sec));
    memset(&rec, 0, sizeof(rec));
    rc = store_secret_get(svc_store(s), name, true, &sec);
    if (rc == KB_OK)
        rc = store_version_list(svc_store(s), sec.id, &vers, &nv);
    if (rc == KB_OK)
        rc = store_secret_groups(svc_store(s), sec.id, &grps, &ng);
    if (rc == KB_OK)
        rc = store_group_list(svc_store(s), &gm.g, &gm.n);
    if (rc != KB_OK) {
        api_error_kb(r, rc, "secret not found");
        goto out;
    }
    /* admin_record_json wants a record: the secret with its newest version (list is newest
     * first); borrowed pointers, not freed through rec. */
    rec.secret = sec;
    if (nv > 0)
        rec.version = vers[0];
    o = admin_record_json(&rec, &gm);
    garr = json_array();
    for (size_t i = 0; garr && i < ng; i++)
        json_array_append_new(garr, json_string(grps[i].name));
    if (o == NULL || garr == NULL || json_object_set_new(o, "groups", garr) ||
        json_object_set_new(o, "versions", json_integer((json_int_t)nv))) {
        json_decref(o);
        o = NULL;
    }
    api_ok(r, 200, o);
out:
    store_secret_clear(&sec);
    store_versions_free(vers, nv);
    store_groups_free(grps, ng);
    store_groups_free(gm.g, gm.n);
}

static void secret_patch(svc *s, api_ctx *c, const char *name, api_response *r)
{
    static const char *const k[] = {"description", "cloud_sync", "owner_group", NULL};
    store_secret_patch p = STORE_SECRET_PATCH_INIT;
    store_secret sec;
    store_group g;
    store_audit au;
    json_t *body = NULL, *og;
    kb_err rc;

    memset(&sec, 0, sizeof(sec));
    memset(&g, 0, sizeof(g));
    if (api_body(c, k, 0, &body, r) != KB_OK)
        return;
    og = json_object_get(body, "owner_group");
    if (f_str(body, "description", false, &p.description) != KB_OK ||
        f_bool(body, "cloud_sync", &p.cloud_sync) != KB_OK ||
        (og != NULL && !json_is_null(og) && !json_is_string(og))) {
        bad_body(r, KB_ERR_INVALID, "wrong type");
        goto out;
    }
    if ((rc = model_description_check(p.description)) != KB_OK ||
        (json_is_string(og) && (rc = model_name_check(json_string_value(og))) != KB_OK)) {
        bad_body(r, rc, "invalid description or owner group");
        goto out;
    }
    rc = svc_change_begin(s, &c->actor, "secret.update", name, &au);
    if (rc == KB_OK)
        rc = store_secret_get(svc_store(s), name, false, &sec);
    if (rc == KB_OK && json_is_string(og)) {
        rc = store_group_get(svc_store(s), json_string_value(og), &g);
        p.owner_group_id = g.id;
    } else if (og != NULL) {
        p.owner_group_id = 0;
    }
    if (rc == KB_OK)
        rc = store_secret_update(svc_store(s), sec.id, &p, c->actor.identity, c->actor.now, &au);
    if (p.cloud_sync == 1 && (rc == KB_ERR_INVALID || rc == KB_ERR_TOO_LARGE)) {
        svc_change_end(s, &au, rc);
        api_error(r, 400, kb_err_str(rc),
                  rc == KB_ERR_INVALID ? CLOUD_EMPTY_MSG
                                       : "cloud_sync: a version's content is over 65536 bytes "
                                         "(Secrets Manager's limit)");
        goto out;
    }
    if (audited(s, &au, rc, r, "secret or owner group not found"))
        goto out;
    api_ok(r, 200, json_pack("{s:s}", "name", name));
out:
    store_group_clear(&g);
    store_secret_clear(&sec);
    json_decref(body);
}

typedef enum { LIFE_DELETE, LIFE_RESTORE, LIFE_PURGE } life_op;

static void secret_life(svc *s, api_ctx *c, const char *name, life_op op, api_response *r)
{
    store_audit au;
    static const char *const actions[] = {"secret.delete", "secret.restore", "secret.purge"};
    store_secret sec;
    kb_err rc;
    memset(&sec, 0, sizeof(sec));
    if (c->req->body_len != 0 || api_query_only(c, NULL) != KB_OK) {
        api_error(r, 400, "invalid", "this request takes no body or query");
        return;
    }
    rc = svc_change_begin(s, &c->actor, actions[op], name, &au);
    if (rc == KB_OK)
        rc = store_secret_get(svc_store(s), name, op != LIFE_DELETE, &sec);
    if (rc == KB_OK) {
        if (op == LIFE_DELETE)
            rc = store_secret_delete(svc_store(s), sec.id, c->actor.identity, c->actor.now, &au);
        else if (op == LIFE_RESTORE)
            rc = store_secret_restore(svc_store(s), sec.id, c->actor.identity, c->actor.now, &au);
        else
            rc = store_secret_purge(svc_store(s), sec.id, &au);
        /* A deleted or purged secret's data keys have no reason to stay in memory. */
        if (rc == KB_OK && op != LIFE_RESTORE)
            svc_forget_secret(s, sec.id);
    }
    if (!audited(s, &au, rc, r, "secret not found"))
        api_ok(r, 200, json_pack("{s:s,s:s}", "name", name, "result", "ok"));
    store_secret_clear(&sec);
}

static void secret_versions(svc *s, const char *name, api_response *r)
{
    store_secret sec;
    store_version *vers = NULL;
    size_t nv = 0;
    json_t *arr;
    kb_err rc;
    memset(&sec, 0, sizeof(sec));
    rc = store_secret_get(svc_store(s), name, true, &sec);
    if (rc == KB_OK)
        rc = store_version_list(svc_store(s), sec.id, &vers, &nv);
    if (rc != KB_OK) {
        api_error_kb(r, rc, "secret not found");
        goto out;
    }
    arr = json_array();
    for (size_t i = 0; arr && i < nv; i++)
        json_array_append_new(arr, version_json(&vers[i]));
    api_ok(r, 200, json_pack("{s:s,s:o}", "name", name, "versions", arr));
out:
    store_secret_clear(&sec);
    store_versions_free(vers, nv);
}

static void secret_rollback(svc *s, api_ctx *c, const char *name, api_response *r)
{
    static const char *const k[] = {"version", NULL};
    json_t *body = NULL;
    int64_t to = 0, version = 0;
    kb_err rc;
    if (api_body(c, k, 0, &body, r) != KB_OK)
        return;
    if (f_int(body, "version", false, &to) != KB_OK || to < 1) {
        bad_body(r, KB_ERR_INVALID, "version must be a positive integer");
        goto out;
    }
    rc = svc_secret_rollback(s, &c->actor, name, to, &version);
    if (rc != KB_OK) {
        api_error_kb(r, rc,
                     rc == KB_ERR_NOT_FOUND ? "secret or version not found" : "request refused");
        goto out;
    }
    api_ok(r, 200,
           json_pack("{s:s,s:I,s:I}", "name", name, "version", (json_int_t)version, "from_version",
                     (json_int_t)to));
out:
    json_decref(body);
}

/* POST /v1/admin/secrets/{name}/generate: the server makes the content (generate.h); the answer
 * carries metadata and the public key of a pair, never the content. */
static void secret_generate(svc *s, api_ctx *c, const char *name, api_response *r)
{
    static const char *const k[] = {"type",        "bytes",       "alphabet",   "bits",
                                    "curve",       "uid",         "metadata",   "expires_at",
                                    "description", "owner_group", "cloud_sync", NULL};
    json_t *body = NULL, *o = NULL;
    char *meta = NULL;
    generate_params p;
    generate_result res;
    svc_secret_spec spec;
    const char *why = NULL;
    int cloud = -1;
    kb_err rc;

    memset(&p, 0, sizeof(p));
    memset(&res, 0, sizeof(res));
    memset(&spec, 0, sizeof(spec));
    if (api_query_only(c, NULL) != KB_OK) {
        api_error(r, 400, "invalid", "unexpected query parameter");
        return;
    }
    if (api_body(c, k, 0, &body, r) != KB_OK)
        return;
    if (f_str(body, "type", true, &p.type) != KB_OK ||
        f_int(body, "bytes", false, &p.bytes) != KB_OK ||
        f_str(body, "alphabet", false, &p.alphabet) != KB_OK ||
        f_int(body, "bits", false, &p.bits) != KB_OK ||
        f_str(body, "curve", false, &p.curve) != KB_OK ||
        f_str(body, "uid", false, &p.uid) != KB_OK ||
        f_str(body, "description", false, &spec.description) != KB_OK ||
        f_str(body, "owner_group", false, &spec.owner_group) != KB_OK ||
        f_bool(body, "cloud_sync", &cloud) != KB_OK ||
        f_int(body, "expires_at", true, &spec.expires_at) != KB_OK) {
        bad_body(r, KB_ERR_INVALID, "missing field or wrong type");
        goto out;
    }
    if ((json_object_get(body, "bytes") != NULL && p.bytes == 0) ||
        (json_object_get(body, "bits") != NULL && p.bits == 0)) {
        bad_body(r, KB_ERR_INVALID, "bytes and bits must be positive");
        goto out;
    }
    p.expires_at = spec.expires_at; /* openpgp: the key's expiry (checked by generate_check) */
    if ((rc = generate_check(&p, &why)) != KB_OK) {
        bad_body(r, rc, why);
        goto out;
    }
    if ((rc = model_name_check(name)) != KB_OK ||
        (rc = model_description_check(spec.description)) != KB_OK ||
        (spec.owner_group && (rc = model_name_check(spec.owner_group)) != KB_OK)) {
        bad_body(r, rc, "invalid name, description or owner group");
        goto out;
    }
    if ((rc = f_metadata(body, &meta)) != KB_OK) {
        bad_body(r, rc, "metadata must be an object of valid string values");
        goto out;
    }
    spec.name = name;
    spec.metadata = meta;
    spec.cloud_sync = cloud == 1;
    rc = generate_secret(s, &c->actor, &p, &spec, &res);
    if (rc != KB_OK) {
        api_error_kb(r, rc,
                     rc == KB_ERR_NOT_FOUND   ? "owner group not found"
                     : rc == KB_ERR_INVALID   ? "invalid name (NAME.pub must be a valid name too)"
                     : rc == KB_ERR_TOO_LARGE ? "content too large"
                                              : "request refused");
        goto out;
    }
    o = json_pack("{s:s,s:s,s:I}", "name", name, "type", p.type, "version",
                  (json_int_t)res.version);
    if (o != NULL && res.pub_pem != NULL) {
        char pub_name[300];
        snprintf(pub_name, sizeof(pub_name), "%s%s", name, GEN_PUB_SUFFIX);
        json_object_set_new(o, "public_name", json_string(pub_name));
        json_object_set_new(o, "public_version", json_integer((json_int_t)res.pub_version));
        json_object_set_new(o, "public_key", json_string(res.pub_pem));
    }
    if (o != NULL && res.expires_at > 0)
        json_object_set_new(o, "expires_at", json_integer((json_int_t)res.expires_at));
    api_ok(r, res.version == 1 ? 201 : 200, o);
out:
    generate_result_clear(&res);
    free(meta);
    json_decref(body);
}

static void secret_content(svc *s, api_ctx *c, const char *name, api_response *r)
{
    static const char *const q[] = {"version", NULL};
    store_record rec;
    kb_secret *content = NULL;
    int64_t version = 0;
    kb_err rc;
    if (api_query_only(c, q) != KB_OK || api_query_int(c, "version", 0, &version) != KB_OK) {
        api_error(r, 400, "invalid", "bad query parameter");
        return;
    }
    memset(&rec, 0, sizeof(rec));
    rc = svc_secret_read_admin(s, &c->actor, name, version, &rec, &content);
    if (rc != KB_OK) {
        api_error_kb(r, rc, "secret or version not found");
        return;
    }
    api_ok(r, 200, api_record_json(&rec, content));
    kb_secret_free(content);
    store_record_clear(&rec);
}

static void secret_status(svc *s, const char *name, api_response *r)
{
    store_secret sec;
    store_fetch *f = NULL;
    size_t n = 0;
    json_t *arr;
    kb_err rc;
    memset(&sec, 0, sizeof(sec));
    rc = store_secret_get(svc_store(s), name, true, &sec);
    if (rc == KB_OK)
        rc = store_secret_status(svc_store(s), sec.id, &f, &n);
    if (rc != KB_OK) {
        api_error_kb(r, rc, "secret not found");
        goto out;
    }
    arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:b}", "client",
                                             f[i].spiffe_id ? f[i].spiffe_id : "", "version",
                                             (json_int_t)f[i].version, "fetched_at",
                                             (json_int_t)f[i].fetched_at, "current",
                                             f[i].version == sec.latest_version));
    api_ok(r, 200,
           json_pack("{s:s,s:I,s:o}", "name", name, "latest_version",
                     (json_int_t)sec.latest_version, "clients", arr));
out:
    store_secret_clear(&sec);
    store_fetches_free(f, n);
}

static void expiring(svc *s, api_ctx *c, api_response *r)
{
    static const char *const q[] = {"within", NULL};
    store_record *recs = NULL;
    size_t n = 0;
    groups_map gm = {NULL, 0};
    int64_t within = 0;
    kb_err rc;
    if (api_query_only(c, q) != KB_OK || api_query(c, "within") == NULL ||
        api_query_int(c, "within", 0, &within) != KB_OK || within > INT64_MAX / 4) {
        api_error(r, 400, "invalid", "within=SECONDS is required");
        return;
    }
    rc = store_secrets_expiring(svc_store(s), c->actor.now, c->actor.now + within, &recs, &n);
    if (rc == KB_OK)
        rc = store_group_list(svc_store(s), &gm.g, &gm.n);
    if (rc != KB_OK)
        api_error_kb(r, rc, "");
    else
        api_ok(r, 200,
               json_pack("{s:I,s:I,s:o}", "from", (json_int_t)c->actor.now, "to",
                         (json_int_t)(c->actor.now + within), "secrets",
                         records_json(recs, scope_filter(c->scope, recs, n), &gm)));
    store_records_free(recs, n);
    store_groups_free(gm.g, gm.n);
}

static void secrets_route(svc *s, api_ctx *c, api_response *r)
{
    const char *m = c->req->method;
    const char *name;
    if (c->nseg == 3) {
        if (is(m, "GET"))
            secrets_list(s, c, r);
        else if (is(m, "POST"))
            secret_write(s, c, NULL, r);
        else
            api_error(r, 405, "method_not_allowed", "method not allowed on this route");
        return;
    }
    name = c->seg[3];
    if (model_name_check(name) != KB_OK) {
        api_error(r, 400, "invalid", "invalid secret name");
        return;
    }
    if (c->nseg == 4) {
        if (is(m, "GET") && api_query_only(c, NULL) == KB_OK)
            secret_show(s, name, r);
        else if (is(m, "GET"))
            api_error(r, 400, "invalid", "unexpected query parameter");
        else if (is(m, "PUT"))
            secret_write(s, c, name, r);
        else if (is(m, "PATCH"))
            secret_patch(s, c, name, r);
        else if (is(m, "DELETE"))
            secret_life(s, c, name, LIFE_DELETE, r);
        else
            api_error(r, 405, "method_not_allowed", "method not allowed on this route");
        return;
    }
    const char *act = c->seg[4];
    bool get = is(m, "GET"), post = is(m, "POST");
    if (post && is(act, "restore"))
        secret_life(s, c, name, LIFE_RESTORE, r);
    else if (post && is(act, "purge"))
        secret_life(s, c, name, LIFE_PURGE, r);
    else if (post && is(act, "rollback"))
        secret_rollback(s, c, name, r);
    else if (post && is(act, "generate"))
        secret_generate(s, c, name, r);
    else if (get && is(act, "content"))
        secret_content(s, c, name, r);
    else if (get && is(act, "versions"))
        secret_versions(s, name, r);
    else if (get && is(act, "status"))
        secret_status(s, name, r);
    else
        api_error(r, 404, "not_found", "no such route");
}

/* ---- groups ------------------------------------------------------------------------------- */

static void groups_route(svc *s, api_ctx *c, api_response *r)
{
    store_audit au;
    static const char *const k[] = {"name", "description", NULL};
    const char *m = c->req->method;
    store *st = svc_store(s);
    json_t *body = NULL, *arr;
    store_group *gs = NULL, g;
    store_client *cls = NULL;
    size_t n = 0;
    const char *name = NULL, *desc = NULL;
    int64_t id = 0;
    kb_err rc;

    memset(&g, 0, sizeof(g));
    if (c->nseg == 3 && is(m, "GET")) {
        rc = store_group_list(st, &gs, &n);
        if (rc != KB_OK) {
            api_error_kb(r, rc, "");
            return;
        }
        arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
            json_array_append_new(arr, group_json(&gs[i]));
        api_ok(r, 200, json_pack("{s:o}", "groups", arr));
        store_groups_free(gs, n);
        return;
    }
    if (c->nseg == 3 && is(m, "POST")) {
        if (api_body(c, k, 0, &body, r) != KB_OK)
            return;
        if (f_str(body, "name", true, &name) != KB_OK ||
            f_str(body, "description", false, &desc) != KB_OK) {
            bad_body(r, KB_ERR_INVALID, "missing field or wrong type");
        } else if ((rc = model_name_check(name)) != KB_OK ||
                   (rc = model_description_check(desc)) != KB_OK) {
            bad_body(r, rc, "invalid name or description");
        } else {
            rc = svc_change_begin(s, &c->actor, "group.create", name, &au);
            if (rc == KB_OK)
                rc = store_group_create(st, name, desc ? desc : "", c->actor.identity, c->actor.now,
                                        &id, &au);
            if (!audited(s, &au, rc, r, "not found"))
                api_ok(r, 201, json_pack("{s:s,s:I}", "name", name, "id", (json_int_t)id));
        }
        json_decref(body);
        return;
    }
    if (c->nseg != 4) {
        api_error(r, 405, "method_not_allowed", "method not allowed on this route");
        return;
    }
    name = c->seg[3];
    if (model_name_check(name) != KB_OK) {
        api_error(r, 400, "invalid", "invalid group name");
        return;
    }
    rc = store_group_get(st, name, &g);
    if (is(m, "GET")) {
        if (rc == KB_OK)
            rc = store_group_clients(st, g.id, &cls, &n);
        if (rc != KB_OK) {
            api_error_kb(r, rc, "group not found");
        } else {
            json_t *o = group_json(&g);
            arr = json_array();
            for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, json_string(cls[i].spiffe_id));
            json_object_set_new(o, "clients", arr);
            api_ok(r, 200, o);
        }
    } else if (is(m, "DELETE")) {
        kb_err arc = svc_change_begin(s, &c->actor, "group.delete", name, &au);
        if (rc == KB_OK)
            rc = arc;
        if (rc == KB_OK)
            rc = store_group_delete(st, g.id, &au);
        if (!audited(s, &au, rc, r, "group not found"))
            api_ok(r, 200, json_pack("{s:s,s:s}", "name", name, "result", "ok"));
    } else {
        api_error(r, 405, "method_not_allowed", "method not allowed on this route");
    }
    store_clients_free(cls, n);
    store_group_clear(&g);
}

/* ---- clients ------------------------------------------------------------------------------ */

static void clients_list(svc *s, api_ctx *c, api_response *r)
{
    static const char *const q[] = {"spiffe_id", "stale", NULL};
    const char *sid = api_query(c, "spiffe_id");
    store_client *cls = NULL, one;
    size_t n = 0;
    int64_t stale = 0;
    json_t *arr;
    kb_err rc;

    memset(&one, 0, sizeof(one));
    if (api_query_only(c, q) != KB_OK || api_query_int(c, "stale", 0, &stale) != KB_OK ||
        (sid && api_query(c, "stale"))) {
        api_error(r, 400, "invalid", "bad query parameter");
        return;
    }
    if (sid) {
        const char *why;
        if ((rc = client_id_check(s, sid, &why)) != KB_OK) {
            bad_client_id(r, rc, why);
            return;
        }
    }
    if (sid) {
        rc = store_client_get(svc_store(s), sid, &one);
        if (rc != KB_OK) {
            api_error_kb(r, rc, "client not found");
            return;
        }
        api_ok(r, 200, json_pack("{s:[o]}", "clients", client_json(&one)));
        store_client_clear(&one);
        return;
    }
    if (api_query(c, "stale"))
        rc = store_clients_stale(svc_store(s), c->actor.now - stale, &cls, &n);
    else
        rc = store_client_list(svc_store(s), &cls, &n);
    if (rc != KB_OK) {
        api_error_kb(r, rc, "");
        return;
    }
    arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, client_json(&cls[i]));
    api_ok(r, 200, json_pack("{s:o}", "clients", arr));
    store_clients_free(cls, n);
}

static void client_create(svc *s, api_ctx *c, api_response *r)
{
    store_audit au;
    static const char *const k[] = {"spiffe_id", "app_name", "description",
                                    "admin",     "enabled",  NULL};
    store_client_new cn;
    json_t *body = NULL;
    int admin, enabled;
    int64_t id = 0;
    kb_err rc;
    memset(&cn, 0, sizeof(cn));
    if (api_body(c, k, 0, &body, r) != KB_OK)
        return;
    if (f_str(body, "spiffe_id", true, &cn.spiffe_id) != KB_OK ||
        f_str(body, "app_name", false, &cn.app_name) != KB_OK ||
        f_str(body, "description", false, &cn.description) != KB_OK ||
        f_bool(body, "admin", &admin) != KB_OK || f_bool(body, "enabled", &enabled) != KB_OK) {
        bad_body(r, KB_ERR_INVALID, "missing field or wrong type");
        goto out;
    }
    if (cn.app_name && cn.app_name[0] && (rc = model_app_name_check(cn.app_name)) != KB_OK) {
        api_error(r, 400, kb_err_str(rc), APP_NAME_MSG);
        goto out;
    }
    {
        const char *why;
        if ((rc = client_id_check(s, cn.spiffe_id, &why)) != KB_OK) {
            bad_client_id(r, rc, why);
            goto out;
        }
    }
    if ((rc = model_description_check(cn.description)) != KB_OK) {
        bad_body(r, rc, "invalid description");
        goto out;
    }
    cn.admin = admin == 1;
    cn.enabled = enabled != 0;
    rc = svc_change_begin(s, &c->actor, "client.create", cn.spiffe_id, &au);
    if (rc == KB_OK)
        rc = store_client_create(svc_store(s), &cn, c->actor.identity, c->actor.now, &id, &au);
    if (!audited(s, &au, rc, r, "not found"))
        api_ok(r, 201, json_pack("{s:I,s:s}", "id", (json_int_t)id, "spiffe_id", cn.spiffe_id));
out:
    json_decref(body);
}

/* The change would turn the enabled admin `who` into a non-admin (demote, disable, delete). If
 * it is the last enabled admin, refuse with 409: nobody could administer the server afterwards
 * and bootstrap refuses a store that has clients (recovery: `keybridged recover-admin`). The
 * refusal is audited and answered here (KB_ERR_CONFLICT, *answered = true); other errors are left
 * to the caller. */
static kb_err last_admin_check(svc *s, api_ctx *c, const char *who, const char *action,
                               api_response *r, bool *answered)
{
    size_t n = 0;
    kb_err rc = enabled_admins(svc_store(s), &n);
    if (rc != KB_OK)
        return rc;
    if (n > 1)
        return KB_OK;
    svc_audit_event(s, &c->actor, action, who ? who : "", 0, KB_ERR_CONFLICT);
    api_error(r, 409, "last_admin",
              "refused: this is the last enabled admin; make another client an enabled admin "
              "first");
    *answered = true;
    return KB_ERR_CONFLICT;
}

static void client_one(svc *s, api_ctx *c, api_response *r)
{
    static const char *const k[] = {"enabled", "admin", "app_name", "description", NULL};
    const char *m = c->req->method;
    store *st = svc_store(s);
    store_client cl;
    store_group *gs = NULL;
    size_t n = 0;
    int64_t id = 0;
    json_t *body = NULL;
    bool answered = false;
    store_audit au;
    kb_err rc, arc;

    memset(&cl, 0, sizeof(cl));
    if (c->seg[3][0] < '1' || c->seg[3][0] > '9' || kb_parse_int64(c->seg[3], &id) != KB_OK) {
        api_error(r, 400, "invalid", "client id must be a positive integer");
        return;
    }
    rc = store_client_get_by_id(st, id, &cl);
    if (is(m, "GET")) {
        json_t *o, *arr;
        if (rc == KB_OK)
            rc = store_client_groups(st, id, &gs, &n);
        if (rc != KB_OK) {
            api_error_kb(r, rc, "client not found");
            goto out;
        }
        o = client_json(&cl);
        arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
            json_array_append_new(arr, json_string(gs[i].name));
        json_object_set_new(o, "groups", arr);
        api_ok(r, 200, o);
    } else if (is(m, "PATCH")) {
        store_client_patch p = STORE_CLIENT_PATCH_INIT;
        if (api_body(c, k, 0, &body, r) != KB_OK)
            goto out;
        if (f_bool(body, "enabled", &p.enabled) != KB_OK ||
            f_bool(body, "admin", &p.admin) != KB_OK ||
            f_str(body, "app_name", false, &p.app_name) != KB_OK ||
            f_str(body, "description", false, &p.description) != KB_OK) {
            bad_body(r, KB_ERR_INVALID, "wrong type");
            goto out;
        }
        if (p.app_name && p.app_name[0] && (rc = model_app_name_check(p.app_name)) != KB_OK) {
            api_error(r, 400, kb_err_str(rc), APP_NAME_MSG);
            goto out;
        }
        if ((rc = model_description_check(p.description)) != KB_OK) {
            bad_body(r, rc, "invalid description");
            goto out;
        }
        pthread_mutex_lock(svc_admin_mu(s));
        if (rc == KB_OK && cl.enabled && cl.admin && (p.enabled == 0 || p.admin == 0))
            rc = last_admin_check(s, c, cl.spiffe_id, "client.update", r, &answered);
        arc = svc_change_begin(s, &c->actor, "client.update",
                               cl.spiffe_id ? cl.spiffe_id : c->seg[3], &au);
        if (rc == KB_OK)
            rc = arc;
        if (rc == KB_OK)
            rc = store_client_update(st, id, &p, &au);
        pthread_mutex_unlock(svc_admin_mu(s));
        if (!answered && !audited(s, &au, rc, r, "client not found"))
            api_ok(r, 200, json_pack("{s:I,s:s}", "id", (json_int_t)id, "result", "ok"));
    } else if (is(m, "DELETE")) {
        pthread_mutex_lock(svc_admin_mu(s));
        if (rc == KB_OK && cl.enabled && cl.admin)
            rc = last_admin_check(s, c, cl.spiffe_id, "client.delete", r, &answered);
        arc = svc_change_begin(s, &c->actor, "client.delete",
                               cl.spiffe_id ? cl.spiffe_id : c->seg[3], &au);
        if (rc == KB_OK)
            rc = arc;
        if (rc == KB_OK)
            rc = store_client_delete(st, id, &au);
        pthread_mutex_unlock(svc_admin_mu(s));
        if (!answered && !audited(s, &au, rc, r, "client not found"))
            api_ok(r, 200, json_pack("{s:I,s:s}", "id", (json_int_t)id, "result", "ok"));
    } else {
        api_error(r, 405, "method_not_allowed", "method not allowed on this route");
    }
out:
    json_decref(body);
    store_groups_free(gs, n);
    store_client_clear(&cl);
}

/* ---- memberships and grants --------------------------------------------------------------- */

static void link_route(svc *s, api_ctx *c, bool grant, api_response *r)
{
    store_audit au;
    static const char *const k_m[] = {"client", "group", NULL};
    static const char *const k_g[] = {"group", "secret", NULL};
    const char *m = c->req->method;
    bool add = is(m, "POST");
    store *st = svc_store(s);
    json_t *body = NULL;
    const char *a = NULL, *gname = NULL;
    store_client cl;
    store_group g;
    store_secret sec;
    char obj[MODEL_SPIFFE_ID_MAX + MODEL_NAME_MAX + 8];
    const char *action;
    kb_err rc;

    memset(&cl, 0, sizeof(cl));
    memset(&g, 0, sizeof(g));
    memset(&sec, 0, sizeof(sec));
    if (c->nseg != 3 || (!add && !is(m, "DELETE"))) {
        api_error(r, 405, "method_not_allowed", "method not allowed on this route");
        return;
    }
    if (api_body(c, grant ? k_g : k_m, 0, &body, r) != KB_OK)
        return;
    if (f_str(body, grant ? "secret" : "client", true, &a) != KB_OK ||
        f_str(body, "group", true, &gname) != KB_OK) {
        bad_body(r, KB_ERR_INVALID, "missing field or wrong type");
        goto out;
    }
    if (model_name_check(gname) != KB_OK ||
        (grant ? model_name_check(a) : model_spiffe_id_check(a)) != KB_OK) {
        bad_body(r, KB_ERR_INVALID,
                 grant ? "invalid group or secret name" : "invalid group name or SPIFFE ID");
        goto out;
    }
    snprintf(obj, sizeof(obj), "%s %s", gname, a);
    action = grant ? (add ? "grant.add" : "grant.remove")
                   : (add ? "membership.add" : "membership.remove");
    rc = svc_change_begin(s, &c->actor, action, obj, &au);
    if (rc == KB_OK)
        rc = store_group_get(st, gname, &g);
    if (rc == KB_OK)
        rc = grant ? store_secret_get(st, a, false, &sec) : store_client_get(st, a, &cl);
    if (rc == KB_OK) {
        if (grant)
            rc = add ? store_grant_add(st, g.id, sec.id, &au)
                     : store_grant_remove(st, g.id, sec.id, &au);
        else
            rc = add ? store_membership_add(st, cl.id, g.id, &au)
                     : store_membership_remove(st, cl.id, g.id, &au);
    }
    if (!audited(s, &au, rc, r,
                 grant ? "group, secret or grant not found"
                       : "group, client or membership not found"))
        api_ok(r, add ? 201 : 200,
               json_pack("{s:s,s:s,s:s}", "group", gname, grant ? "secret" : "client", a, "result",
                         "ok"));
out:
    store_client_clear(&cl);
    store_group_clear(&g);
    store_secret_clear(&sec);
    json_decref(body);
}

/* ---- audit -------------------------------------------------------------------------------- */

static void audit_route(svc *s, api_ctx *c, api_response *r)
{
    static const char *const q[] = {"object", "identity", "since", "until", "limit", NULL};
    const char *m = c->req->method;
    if (c->nseg == 4 && is(c->seg[3], "verify")) {
        /* Optional {"anchor": <an exported anchor>}: an anchor kept outside the database makes
         * a truncated tail detectable even when the stored anchors were removed with it. */
        static const char *const fields[] = {"anchor", NULL};
        json_t *body = NULL, *anchor;
        const audit_anchor *use = NULL;
        audit_anchor an;
        audit_report rep;
        kb_err rc;
        if (!is(m, "POST")) {
            api_error(r, 405, "method_not_allowed", "method not allowed on this route");
            return;
        }
        const char *source = "none", *afile = svc_anchor_file(s);
        bool afile_missing = false;
        if (api_body(c, fields, 1, &body, r) != KB_OK)
            return;
        anchor = json_object_get(body, "anchor");
        if (anchor != NULL)
            source = "request";
        if (anchor != NULL) {
            char *text = json_is_object(anchor) ? json_dumps(anchor, JSON_COMPACT) : NULL;
            rc = text ? audit_anchor_parse(text, strlen(text), &an) : KB_ERR_INVALID;
            free(text);
            if (rc != KB_OK) {
                json_decref(body);
                api_error(r, 400, "invalid",
                          "anchor must be an exported audit anchor {seq, mac, sig, time}");
                return;
            }
            use = &an;
        }
        /* Without one in the request, the configured [audit] anchor_file is the reference: an
         * emptied or truncated log (stored anchors removed with it) must not pass just because
         * nobody passed --anchor. A configured file that cannot be read is itself a finding. */
        if (anchor == NULL && afile != NULL) {
            source = "anchor_file";
            if (audit_anchor_read(afile, &an) == KB_OK)
                use = &an;
            else
                afile_missing = true;
        }
        memset(&rep, 0, sizeof(rep));
        rc = audit_verify_anchor(svc_audit(s), use, &rep);
        json_decref(body);
        /* Bootstrap writes row 1 and anchors it: a log with no rows has lost them. */
        if (rc == KB_OK && rep.ok && rep.rows == 0) {
            rep.ok = false;
            rep.first_bad_seq = 1;
            rep.reason = "empty log (rows missing; bootstrap always writes row 1)";
        }
        if (rc == KB_OK && rep.ok && afile_missing) {
            rep.ok = false;
            rep.first_bad_seq = rep.rows + 1;
            rep.reason = "the configured [audit] anchor_file is missing or unreadable";
        }
        if (rc == KB_OK && !rep.ok)
            kb_log(KB_LOG_ERROR, "audit_verify_failed", "reason", rep.reason, "anchor_source",
                   source, NULL);
        svc_audit_event(s, &c->actor, "audit.verify", "", 0, rc);
        if (rc != KB_OK) {
            api_error_kb(r, rc, "");
            return;
        }
        api_ok(r, 200,
               json_pack("{s:b,s:I,s:I,s:I,s:s,s:s}", "ok", rep.ok, "rows", (json_int_t)rep.rows,
                         "first_bad_seq", (json_int_t)rep.first_bad_seq, "anchor_seq",
                         (json_int_t)rep.anchor_seq, "reason", rep.reason ? rep.reason : "",
                         "anchor_source", source));
        return;
    }
    if (c->nseg == 4 && is(c->seg[3], "anchor")) {
        /* Sign the chain head now and hand the anchor out, to be kept away from this database. */
        static const char *const no_fields[] = {NULL};
        json_t *body = NULL, *out;
        json_error_t je;
        char *text = NULL;
        kb_err rc;
        if (!is(m, "POST")) {
            api_error(r, 405, "method_not_allowed", "method not allowed on this route");
            return;
        }
        if (api_body(c, no_fields, 1, &body, r) != KB_OK)
            return;
        json_decref(body);
        rc = audit_anchor_now(svc_audit(s), c->req->now);
        if (rc == KB_OK)
            rc = audit_anchor_json(svc_audit(s), &text);
        svc_audit_event(s, &c->actor, "audit.anchor", "", 0, rc);
        if (rc != KB_OK) {
            api_error_kb(r, rc, "no audit rows to anchor");
            return;
        }
        out = json_loads(text, 0, &je);
        free(text);
        if (out == NULL) {
            api_error(r, 500, "internal", "cannot encode the anchor");
            return;
        }
        api_ok(r, 200, out);
        return;
    }
    if (c->nseg != 3) {
        api_error(r, 404, "not_found", "no such route");
        return;
    }
    if (!is(m, "GET")) {
        api_error(r, 405, "method_not_allowed", "method not allowed on this route");
        return;
    }
    audit_filter f;
    int64_t limit = 0;
    audit_row *rows = NULL;
    size_t n = 0;
    json_t *arr;
    kb_err rc;
    memset(&f, 0, sizeof(f));
    f.object = api_query(c, "object");
    f.identity = api_query(c, "identity");
    if (api_query_only(c, q) != KB_OK || api_query_int(c, "since", 0, &f.since) != KB_OK ||
        api_query_int(c, "until", 0, &f.until) != KB_OK ||
        api_query_int(c, "limit", API_AUDIT_LIMIT_DEFAULT, &limit) != KB_OK || limit < 1 ||
        limit > STORE_AUDIT_QUERY_MAX) {
        api_error(r, 400, "invalid", "bad query parameter");
        return;
    }
    f.limit = (size_t)limit;
    rc = audit_query(svc_audit(s), &f, &rows, &n);
    if (rc != KB_OK) {
        api_error_kb(r, rc, "");
        return;
    }
    arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(
            arr, json_pack("{s:I,s:I,s:s,s:s,s:s,s:s,s:I,s:s}", "seq", (json_int_t)rows[i].seq,
                           "time", (json_int_t)rows[i].time, "identity", rows[i].identity, "peer",
                           rows[i].peer, "action", rows[i].action, "object", rows[i].object,
                           "version", (json_int_t)rows[i].version, "result", rows[i].result));
    api_ok(r, 200, json_pack("{s:o}", "events", arr));
    audit_rows_free(rows, n);
}

/* ---- owners ------------------------------------------------------------------------------- */

/* The body's string member key: *present tells whether it is there at all (any type). A body
 * that does not parse gives "absent": the handler refuses it with 400 before doing anything. */
static const char *peek_str(api_ctx *c, const char *key, bool *present, json_t **hold)
{
    char why[8];
    const json_t *v;
    *present = false;
    *hold = NULL;
    if (c->req->body_len == 0 || kb_json_parse(c->req->body, c->req->body_len, API_BODY_MAX, hold,
                                               why, sizeof(why)) != KB_OK)
        return NULL;
    v = json_object_get(*hold, key);
    *present = v != NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Does the body's owner_group name one of the owner's groups? (absent: absent_ok) */
static bool owner_group_ok(svc *s, api_ctx *c, bool absent_ok)
{
    json_t *hold = NULL;
    bool present, ok = false;
    const char *g = peek_str(c, "owner_group", &present, &hold);
    store_group grp;
    if (!present) {
        ok = absent_ok;
    } else if (g != NULL && store_group_get(svc_store(s), g, &grp) == KB_OK) {
        ok = svc_scope_has_group(c->scope, grp.id);
        store_group_clear(&grp);
    }
    json_decref(hold);
    return ok;
}

/* May the owner manage the live secret called name? Missing and not manageable are alike. */
static bool owner_may(svc *s, api_ctx *c, const char *name, bool *missing)
{
    store_secret sec;
    bool ok = false;
    kb_err rc = store_secret_get(svc_store(s), name, false, &sec);
    *missing = rc == KB_ERR_NOT_FOUND;
    if (rc == KB_OK) {
        ok = svc_may_manage(c->scope, sec.owner_group_id);
        store_secret_clear(&sec);
    }
    return ok;
}

#define OWNER_GROUP_MSG "owners create and move secrets only into one of their own groups"

/* For a caller who is not an admin: may this request go on? false = r holds the refusal (403
 * for routes owners never use or an owner group not theirs, the usual 404 for a secret they may
 * not manage, so its existence is not disclosed). Denials are audited as admin.denied. */
static bool owner_gate(svc *s, api_ctx *c, api_response *r)
{
    const char *m = c->req->method, *coll = c->seg[2];
    bool get = is(m, "GET"), missing = false;
    const char *forbid = "admin identity required";

    if (is(coll, "secrets") && c->nseg == 3) {
        if (get)
            return true;
        if (is(m, "POST") && owner_group_ok(s, c, false))
            return true;
        forbid = OWNER_GROUP_MSG;
    } else if (is(coll, "secrets") && (c->nseg == 4 || c->nseg == 5)) {
        const char *name = c->seg[3], *act = c->nseg == 5 ? c->seg[4] : NULL;
        bool allowed =
            act == NULL
                ? (get || is(m, "PUT") || is(m, "PATCH"))
                : (get && (is(act, "content") || is(act, "versions") || is(act, "status"))) ||
                      (is(m, "POST") && is(act, "generate"));
        if (allowed && model_name_check(name) == KB_OK) {
            if (owner_may(s, c, name, &missing)) {
                if (!is(m, "PATCH") || owner_group_ok(s, c, true))
                    return true;
                forbid = OWNER_GROUP_MSG;
            } else if (missing && act != NULL && is(act, "generate")) {
                if (owner_group_ok(s, c, false))
                    return true; /* generate creates the secret */
                forbid = OWNER_GROUP_MSG;
            } else {
                api_error(r, 404, "not_found", "secret not found");
                return false;
            }
        } else if (allowed) {
            return true; /* the handler answers the bad name with 400 */
        }
    } else if (is(coll, "expiring") && get) {
        return true;
    } else if (is(coll, "groups") && get && c->nseg == 3) {
        return true; /* names to grant to; members only of their own groups (below) */
    } else if (is(coll, "groups") && get && c->nseg == 4) {
        store_group g;
        bool ok = false;
        if (model_name_check(c->seg[3]) != KB_OK)
            return true;
        if (store_group_get(svc_store(s), c->seg[3], &g) == KB_OK) {
            ok = svc_scope_has_group(c->scope, g.id);
            store_group_clear(&g);
        }
        if (ok)
            return true;
        api_error(r, 404, "not_found", "group not found");
        return false;
    } else if (is(coll, "grants") && c->nseg == 3 && (is(m, "POST") || is(m, "DELETE"))) {
        json_t *hold = NULL;
        bool present;
        const char *sec = peek_str(c, "secret", &present, &hold);
        bool ok = sec == NULL || model_name_check(sec) != KB_OK || owner_may(s, c, sec, &missing);
        json_decref(hold);
        if (ok)
            return true; /* a malformed body is the handler's 400 */
        api_error(r, 404, "not_found", "group, secret or grant not found");
        return false;
    }
    svc_audit_event(s, &c->actor, "admin.denied", c->req->path, 0, KB_ERR_DENIED);
    api_error(r, 403, "denied", forbid);
    return false;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

void api_admin(svc *s, api_ctx *c, const store_client *who, api_response *r)
{
    const char *coll;
    (void)who;
    if (c->nseg < 3) {
        api_error(r, 404, "not_found", "no such route");
        return;
    }
    coll = c->seg[2];
    if (c->scope != NULL && !c->scope->admin && !owner_gate(s, c, r))
        return;
    if (is(coll, "secrets") && c->nseg <= 5)
        secrets_route(s, c, r);
    else if (is(coll, "expiring") && c->nseg == 3 && is(c->req->method, "GET"))
        expiring(s, c, r);
    else if (is(coll, "groups") && c->nseg <= 4)
        groups_route(s, c, r);
    else if (is(coll, "clients") && c->nseg == 3 && is(c->req->method, "GET"))
        clients_list(s, c, r);
    else if (is(coll, "clients") && c->nseg == 3 && is(c->req->method, "POST"))
        client_create(s, c, r);
    else if (is(coll, "clients") && c->nseg == 4)
        client_one(s, c, r);
    else if (is(coll, "memberships") && c->nseg == 3)
        link_route(s, c, false, r);
    else if (is(coll, "grants") && c->nseg == 3)
        link_route(s, c, true, r);
    else if (is(coll, "audit") && c->nseg <= 4)
        audit_route(s, c, r);
    else
        api_error(r, 404, "not_found", "no such route");
}
