/* api.c - Secrets Manager operations for keybridge-cache (see api.h).
 *
 * Shapes and limits: botocore secretsmanager/2017-10-17/service-2.json. Behaviour (stages,
 * idempotency, deletion) follows the Secrets Manager API Reference; see docs/internals/cache.md
 * for where this cache deliberately differs.
 */
#include "api.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>

#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/json.h"
#include "lib/log.h"

#define DAY_MS ((int64_t)86400 * 1000)
#define STAGE_CURRENT "AWSCURRENT"
#define STAGE_PREVIOUS "AWSPREVIOUS"

struct cache_api {
    char region[64];
    cache_store *store;
    const cache_creds *creds;
    pthread_mutex_t lock;
    int64_t last_purge_ms;
    /* Derived SigV4 signing keys: the credentials outlive the api (cache_api_opts), so a cached
     * key can only ever belong to the key it was derived from. */
    kb_sigv4_key_cache *keys;
};

/* Per-request operation context: who, when, and the error to report. */
typedef struct {
    cache_api *api;
    const char *account;
    int64_t now_ms;
    int status;
    const char *etype;
    char emsg[256];
    /* An operation that writes its answer itself (ListSecrets) leaves it here, raw = 1;
     * otherwise the answer is the jansson tree `out`. */
    int raw;
    kb_dbuf body;
} op_ctx;

/* Record an AWS error; returns -1 so handlers can `return fail(...)`. Messages are static text
 * plus field names: never a value from the request. */
__attribute__((format(printf, 3, 4))) static int fail(op_ctx *c, const char *type, const char *fmt,
                                                      ...)
{
    va_list ap;
    c->etype = type;
    c->status = strcmp(type, "InternalServiceError") == 0 ? 500 : 400;
    va_start(ap, fmt);
    vsnprintf(c->emsg, sizeof(c->emsg), fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_internal(op_ctx *c, kb_err e)
{
    kb_log(KB_LOG_ERROR, "internal_error", "err", kb_err_str(e), NULL);
    return fail(c, "InternalServiceError", "An error occurred on the server side.");
}

#define E_PARAM "InvalidParameterException"
#define E_REQUEST "InvalidRequestException"
#define E_NOTFOUND "ResourceNotFoundException"
#define E_EXISTS "ResourceExistsException"
#define E_NEXTTOKEN "InvalidNextTokenException"
#define MSG_NOTFOUND "Secrets Manager can't find the specified secret."
#define MSG_DELETED                                                                                \
    "You can't perform this operation on the secret because it was marked for deletion."

/* ------------------------------------------------------------------ small helpers */

/* A version 4 UUID from 16 random bytes. */
static void uuid4_format(uint8_t b[16], char out[37])
{
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* RFC 9562 section 5.4: version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10 */
    /* 8-4-4-4-12 lowercase hex, formatted by hand: every response carries one (x-amzn-RequestId)
     * and snprintf's 16 conversions showed in the per-request profile. */
    {
        static const char hex[] = "0123456789abcdef";
        size_t o = 0;
        for (size_t i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10)
                out[o++] = '-';
            out[o++] = hex[b[i] >> 4];
            out[o++] = hex[b[i] & 0x0f];
        }
        out[o] = '\0';
    }
}

static kb_err uuid4(char out[37])
{
    uint8_t b[16];
    KB_ENSURE(RAND_bytes(b, sizeof(b)) == 1, KB_ERR_CRYPTO);
    uuid4_format(b, out);
    return KB_OK;
}

/* Request ids (one per response, not secret, never reused): random bytes taken from a
 * per-thread pool refilled 64 ids at a time, since each RAND_bytes call costs more (its DRBG
 * locking and reseed checks) than formatting the id. Version ids use uuid4. */
#define REQUEST_ID_POOL 64
static kb_err request_id(char out[37])
{
    static __thread uint8_t pool[REQUEST_ID_POOL * 16];
    static __thread size_t left;
    if (left == 0) {
        KB_ENSURE(RAND_bytes(pool, sizeof(pool)) == 1, KB_ERR_CRYPTO);
        left = REQUEST_ID_POOL;
    }
    left--;
    uuid4_format(pool + left * 16, out);
    kb_wipe(pool + left * 16, 16);
    return KB_OK;
}

static json_t *ts(int64_t ms)
{
    /* JSON 1.1 timestamps are epoch seconds, fractional (botocore parses a number). */
    return json_real((double)ms / 1000.0);
}

static int set(json_t *o, const char *k, json_t *v)
{
    return v == NULL || json_object_set_new(o, k, v) != 0 ? -1 : 0;
}

/* ---------------------------------------------------------------- input checking */

static int check_keys(op_ctx *c, const json_t *in, const char *const *allowed)
{
    const char *bad = NULL;
    if (kb_json_only_keys(in, allowed, &bad) != KB_OK)
        return fail(c, E_PARAM, "Unknown parameter in input: %.64s", bad ? bad : "?");
    return 0;
}

/* A string member: absent (*out = NULL) unless required; bytes within [min, max]. */
static int get_str(op_ctx *c, const json_t *in, const char *key, size_t min, size_t max,
                   int required, const char **out, size_t *len)
{
    json_t *v = json_object_get(in, key);
    *out = NULL;
    if (len)
        *len = 0;
    if (v == NULL || json_is_null(v)) {
        if (required)
            return fail(c, E_PARAM, "Missing required parameter: %s", key);
        return 0;
    }
    if (!json_is_string(v))
        return fail(c, E_PARAM, "Invalid type for parameter %s: expected a string", key);
    if (json_string_length(v) < min || json_string_length(v) > max)
        return fail(c, E_PARAM, "Invalid length for parameter %s: must be %zu to %zu", key, min,
                    max);
    *out = json_string_value(v);
    if (len)
        *len = json_string_length(v);
    return 0;
}

static int get_bool(op_ctx *c, const json_t *in, const char *key, int *out)
{
    json_t *v = json_object_get(in, key);
    *out = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return fail(c, E_PARAM, "Invalid type for parameter %s: expected a boolean", key);
    *out = json_is_true(v);
    return 0;
}

/* An integer member in [min, max]; *present says whether it was given. */
static int get_int(op_ctx *c, const json_t *in, const char *key, int64_t min, int64_t max,
                   int64_t *out, int *present)
{
    json_t *v = json_object_get(in, key);
    *present = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return fail(c, E_PARAM, "Invalid type for parameter %s: expected an integer", key);
    if (json_integer_value(v) < min || json_integer_value(v) > max)
        return fail(c, E_PARAM, "Invalid value for parameter %s: must be %lld to %lld", key,
                    (long long)min, (long long)max);
    *out = json_integer_value(v);
    *present = 1;
    return 0;
}

/* Secret names: ASCII letters, digits and /_+=.@- (Secrets Manager's CreateSecret Name rule). */
static int name_ok(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && strchr("/_+=.@-", *s) == NULL)
            return 0;
    }
    return 1;
}

static int token_ok(const char *s)
{
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
            return 0;
    }
    return 1;
}

static int get_token(op_ctx *c, const json_t *in, const char **out)
{
    if (get_str(c, in, "ClientRequestToken", CACHE_TOKEN_MIN, CACHE_TOKEN_MAX, 0, out, NULL))
        return -1;
    if (*out && !token_ok(*out))
        return fail(c, E_PARAM, "Invalid ClientRequestToken: use letters, digits, '-' and '_'");
    return 0;
}

/* A secret value from SecretString / SecretBinary: *present = 0 when neither was given. */
typedef struct {
    int present;
    int binary;
    kb_secret *v;
} value_in;

static int get_value(op_ctx *c, const json_t *in, value_in *out)
{
    const char *s = NULL, *b = NULL;
    size_t sl = 0, bl = 0;
    kb_err e;
    memset(out, 0, sizeof(*out));
    if (get_str(c, in, "SecretString", 1, CACHE_SECRET_VALUE_MAX, 0, &s, &sl) ||
        get_str(c, in, "SecretBinary", 1, 4 * ((CACHE_SECRET_VALUE_MAX + 2) / 3), 0, &b, &bl))
        return -1;
    if (s && b)
        return fail(c, E_PARAM,
                    "You can't specify both a binary secret value and a string "
                    "secret value in the same secret.");
    if (s) {
        e = kb_secret_from(s, sl, &out->v);
        if (e != KB_OK)
            return fail_internal(c, e);
        out->present = 1;
    } else if (b) {
        e = kb_b64_decode_secret(b, bl, CACHE_SECRET_VALUE_MAX, &out->v);
        if (e == KB_ERR_TOO_LARGE)
            return fail(c, E_PARAM, "Invalid length for parameter SecretBinary: must be 1 to %d",
                        CACHE_SECRET_VALUE_MAX);
        if (e != KB_OK || kb_secret_len(out->v) == 0) {
            kb_secret_free(out->v);
            out->v = NULL;
            return fail(c, E_PARAM, "Invalid base64 in parameter SecretBinary");
        }
        out->present = 1;
        out->binary = 1;
    }
    return 0;
}

/* Tag keys and values: printable UTF-8 (no control characters); "aws:" keys are reserved. */
static int tag_text_ok(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    }
    return 1;
}

static int check_tag_key(op_ctx *c, const json_t *k)
{
    if (!json_is_string(k))
        return fail(c, E_PARAM, "Invalid type for tag key: expected a string");
    if (json_string_length(k) < 1 || json_string_length(k) > CACHE_TAG_KEY_MAX)
        return fail(c, E_PARAM, "Invalid tag key length: must be 1 to %d", CACHE_TAG_KEY_MAX);
    if (!tag_text_ok(json_string_value(k)))
        return fail(c, E_PARAM, "Invalid characters in tag key");
    if (strncasecmp(json_string_value(k), "aws:", 4) == 0)
        return fail(c, E_PARAM, "Tag keys starting with aws: are reserved");
    return 0;
}

/* Tags: a list of {Key, Value}; checked completely before anything is written. */
static int check_tags(op_ctx *c, const json_t *tags, int required)
{
    static const char *const keys[] = {"Key", "Value", NULL};
    size_t i;
    json_t *t;
    if (tags == NULL || json_is_null(tags)) {
        if (required)
            return fail(c, E_PARAM, "Missing required parameter: Tags");
        return 0;
    }
    if (!json_is_array(tags))
        return fail(c, E_PARAM, "Invalid type for parameter Tags: expected a list");
    if (json_array_size(tags) > CACHE_TAGS_MAX)
        return fail(c, E_PARAM, "Too many tags: at most %d", CACHE_TAGS_MAX);
    json_array_foreach(tags, i, t)
    {
        json_t *v;
        if (!json_is_object(t))
            return fail(c, E_PARAM, "Invalid type for a tag: expected a structure");
        if (check_keys(c, t, keys) || check_tag_key(c, json_object_get(t, "Key")))
            return -1;
        v = json_object_get(t, "Value");
        if (v != NULL && !json_is_string(v))
            return fail(c, E_PARAM, "Invalid type for tag value: expected a string");
        if (v != NULL &&
            (json_string_length(v) > CACHE_TAG_VALUE_MAX || !tag_text_ok(json_string_value(v))))
            return fail(c, E_PARAM, "Invalid tag value: at most %d printable characters",
                        CACHE_TAG_VALUE_MAX);
    }
    return 0;
}

static const char *tag_value(const json_t *t)
{
    json_t *v = json_object_get(t, "Value");
    return v ? json_string_value(v) : "";
}

/* ------------------------------------------------------------------ secret lookup */

/* Find a secret of the caller's account; a secret whose recovery window has ended is removed on
 * sight (it no longer exists). */
static int find_secret(op_ctx *c, const char *id, cache_secret *s)
{
    kb_err e = cache_store_find(c->api->store, c->account, id, s);
    if (e == KB_OK && s->deleted_ms != 0 && s->deletion_ms <= c->now_ms) {
        e = cache_store_secret_delete(c->api->store, s->id);
        if (e != KB_OK)
            return fail_internal(c, e);
        e = KB_ERR_NOT_FOUND;
    }
    if (e == KB_ERR_NOT_FOUND)
        return fail(c, E_NOTFOUND, MSG_NOTFOUND);
    if (e != KB_OK)
        return fail_internal(c, e);
    return 0;
}

static int get_secret_id(op_ctx *c, const json_t *in, cache_secret *s, int allow_deleted)
{
    const char *id;
    if (get_str(c, in, "SecretId", 1, CACHE_SECRET_ID_MAX, 1, &id, NULL) || find_secret(c, id, s))
        return -1;
    if (!allow_deleted && s->deleted_ms != 0)
        return fail(c, E_REQUEST, MSG_DELETED);
    return 0;
}

/* ---------------------------------------------------------------- JSON builders */

static int stage_to_map(void *arg, const char *vid, const char *stage)
{
    json_t *map = arg, *arr = json_object_get(map, vid);
    if (arr == NULL) {
        arr = json_array();
        if (arr == NULL || json_object_set_new(map, vid, arr) != 0)
            return -1;
    }
    return json_array_append_new(arr, json_string(stage)) == 0 ? 0 : -1;
}

static int stage_to_list(void *arg, const char *vid, const char *stage)
{
    (void)vid;
    return json_array_append_new((json_t *)arg, json_string(stage)) == 0 ? 0 : -1;
}

static json_t *stages_map(op_ctx *c, const cache_secret *s)
{
    json_t *m = json_object();
    if (m && cache_store_stages(c->api->store, s->id, NULL, stage_to_map, m) != KB_OK) {
        json_decref(m);
        return NULL;
    }
    return m;
}

static json_t *version_stages(op_ctx *c, const cache_secret *s, const char *vid)
{
    json_t *a = json_array();
    if (a && cache_store_stages(c->api->store, s->id, vid, stage_to_list, a) != KB_OK) {
        json_decref(a);
        return NULL;
    }
    return a;
}

static json_t *tags_json(const cache_tag_list *t)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < t->n; i++) {
        json_t *o = json_pack("{s:s, s:s}", "Key", t->t[i].key, "Value", t->t[i].value);
        if (o == NULL || json_array_append_new(a, o) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* Fields shared by DescribeSecret and a ListSecrets entry. */
static int describe(op_ctx *c, const cache_secret *s, const cache_tag_list *tags, json_t *o,
                    const char *map_key)
{
    if (set(o, "ARN", json_string(s->arn)) || set(o, "Name", json_string(s->name)))
        return -1;
    if (s->has_description && set(o, "Description", json_string(s->description)))
        return -1;
    if (s->has_kms_key_id && set(o, "KmsKeyId", json_string(s->kms_key_id)))
        return -1;
    if (set(o, "LastChangedDate", ts(s->changed_ms)))
        return -1;
    if (s->accessed_ms && set(o, "LastAccessedDate", ts(s->accessed_ms)))
        return -1;
    if (s->deleted_ms && set(o, "DeletedDate", ts(s->deleted_ms)))
        return -1;
    if (set(o, "Tags", tags_json(tags)) || set(o, map_key, stages_map(c, s)) ||
        set(o, "CreatedDate", ts(s->created_ms)))
        return -1;
    return 0;
}

/* A ListSecrets page is written straight as JSON (no jansson tree): each entry has the
 * members, in the order, of describe()'s (DescribeSecret's shared fields). The store keeps each
 * secret's entry rendered (cache_list_text): an entry is its head, a comma, its tail. */
static int put_text(kb_dbuf *b, const char *s)
{
    return kb_json_put_str(b, s, strlen(s)) == KB_OK ? 0 : -1;
}

/* Bytes reserved per entry of a page up front (an entry with two tags is ~400): one allocation
 * for a typical page instead of a series of doublings. */
#define LIST_ENTRY_GUESS ((size_t)512)

static int page_entry(kb_dbuf *b, int first, const cache_list_text *t)
{
    /* A store of schema 2 has both texts for every secret (never empty: head is an object's
     * start, tail ends it). */
    if (t == NULL || t->head_len == 0 || t->tail_len == 0)
        return -1;
    return (!first && kb_dbuf_addc(b, ',') != KB_OK) ||
                   kb_dbuf_reserve(b, t->head_len + t->tail_len + 1) != KB_OK ||
                   kb_dbuf_add(b, t->head, t->head_len) != KB_OK || kb_dbuf_addc(b, ',') != KB_OK ||
                   kb_dbuf_add(b, t->tail, t->tail_len) != KB_OK
               ? -1
               : 0;
}

/* The ARN and Name members most answers carry. */
static int arn_name(op_ctx *c, const cache_secret *s, json_t *out)
{
    return set(out, "ARN", json_string(s->arn)) || set(out, "Name", json_string(s->name))
               ? fail_internal(c, KB_ERR_NOMEM)
               : 0;
}

/* ---------------------------------------------------------------- versions */

/* Add a version (or recognise an idempotent retry): vid is the client's token or a new UUID.
 * stages NULL means ["AWSCURRENT"]. Moving AWSCURRENT gives the old current AWSPREVIOUS. */
static int new_version(op_ctx *c, cache_secret *s, const char *token, const value_in *val,
                       const json_t *stages, char vid[CACHE_VERSION_ID_MAX + 1], int *created)
{
    cache_store *st = c->api->store;
    kb_err e;
    size_t i;
    json_t *stage;
    json_t *def = NULL;
    int rc = -1;

    *created = 0;
    if (token) {
        snprintf(vid, CACHE_VERSION_ID_MAX + 1, "%s", token);
    } else if ((e = uuid4(vid)) != KB_OK) {
        return fail_internal(c, e);
    }
    e = cache_store_version_exists(st, s->id, vid);
    if (e == KB_OK) {
        int bin = 0;
        kb_secret *old = NULL;
        int same;
        e = cache_store_version_read(st, s, vid, &bin, &old, NULL);
        if (e != KB_OK)
            return e == KB_ERR_INTEGRITY ? fail(c, "DecryptionFailure",
                                                "Secrets Manager can't decrypt the "
                                                "protected secret text using the provided "
                                                "key.")
                                         : fail_internal(c, e);
        same = bin == val->binary && kb_secret_len(old) == kb_secret_len(val->v) &&
               kb_ct_eq(kb_secret_cdata(old), kb_secret_cdata(val->v), kb_secret_len(old));
        kb_secret_free(old);
        if (!same)
            return fail(c, E_EXISTS,
                        "You can't modify an existing version, you can only create a new version.");
        return 0; /* same token, same value: no new version (idempotent retry) */
    }
    if (e != KB_ERR_NOT_FOUND)
        return fail_internal(c, e);
    e = cache_store_version_add(st, s, vid, val->binary, kb_secret_cdata(val->v),
                                kb_secret_len(val->v), c->now_ms);
    if (e != KB_OK)
        return fail_internal(c, e);
    if (stages == NULL) {
        def = json_pack("[s]", STAGE_CURRENT);
        if (def == NULL)
            return fail_internal(c, KB_ERR_NOMEM);
        stages = def;
    }
    json_array_foreach(stages, i, stage)
    {
        const char *name = json_string_value(stage);
        if (strcmp(name, STAGE_CURRENT) == 0) {
            char prev[CACHE_VERSION_ID_MAX + 1];
            e = cache_store_stage_get(st, s->id, STAGE_CURRENT, prev);
            if (e == KB_OK && strcmp(prev, vid) != 0)
                e = cache_store_stage_set(st, s->id, STAGE_PREVIOUS, prev);
            else if (e == KB_ERR_NOT_FOUND)
                e = KB_OK;
            if (e != KB_OK)
                goto internal;
        }
        if ((e = cache_store_stage_set(st, s->id, name, vid)) != KB_OK)
            goto internal;
    }
    if ((e = cache_store_versions_prune(st, s->id, CACHE_VERSIONS_MAX)) != KB_OK)
        goto internal;
    s->changed_ms = c->now_ms;
    if ((e = cache_store_secret_update(st, s)) != KB_OK)
        goto internal;
    *created = 1;
    rc = 0;
    goto out;
internal:
    rc = fail_internal(c, e);
out:
    json_decref(def);
    return rc;
}

static int check_stages(op_ctx *c, const json_t *stages)
{
    size_t i;
    json_t *v;
    if (stages == NULL || json_is_null(stages))
        return 0;
    if (!json_is_array(stages))
        return fail(c, E_PARAM, "Invalid type for parameter VersionStages: expected a list");
    if (json_array_size(stages) < 1 || json_array_size(stages) > CACHE_STAGES_PER_VERSION)
        return fail(c, E_PARAM, "Invalid length for parameter VersionStages: must be 1 to %d",
                    CACHE_STAGES_PER_VERSION);
    json_array_foreach(stages, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) < 1 ||
            json_string_length(v) > CACHE_STAGE_MAX || !tag_text_ok(json_string_value(v)))
            return fail(c, E_PARAM, "Invalid staging label in VersionStages");
    }
    return 0;
}

/* ---------------------------------------------------------------- operations */

static int op_create(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"Name",
                                       "ClientRequestToken",
                                       "Description",
                                       "KmsKeyId",
                                       "SecretBinary",
                                       "SecretString",
                                       "Tags",
                                       "AddReplicaRegions",
                                       "ForceOverwriteReplicaSecret",
                                       "Type",
                                       NULL};
    const char *name, *token, *desc, *kms, *type;
    cache_secret *s = NULL;
    value_in val = {0};
    char vid[CACHE_VERSION_ID_MAX + 1] = "";
    int created = 0, force = 0, rc = -1;
    kb_err e;
    json_t *tags = json_object_get(in, "Tags"), *repl = json_object_get(in, "AddReplicaRegions");

    if (check_keys(c, in, keys) || get_str(c, in, "Name", 1, CACHE_NAME_MAX, 1, &name, NULL) ||
        get_token(c, in, &token) ||
        get_str(c, in, "Description", 0, CACHE_DESC_MAX, 0, &desc, NULL) ||
        get_str(c, in, "KmsKeyId", 0, CACHE_KMS_MAX, 0, &kms, NULL) ||
        get_str(c, in, "Type", 0, 256, 0, &type, NULL) ||
        get_bool(c, in, "ForceOverwriteReplicaSecret", &force) || check_tags(c, tags, 0))
        return -1;
    if (!name_ok(name))
        return fail(c, E_PARAM,
                    "Invalid name. Must be a valid name containing alphanumeric "
                    "characters, or any of the following: -/_+=.@!");
    if (repl != NULL && !json_is_null(repl))
        return fail(c, E_REQUEST, "Replication to other Regions is not supported.");
    if (get_value(c, in, &val))
        return -1;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    e = cache_store_find_name(c->api->store, c->account, name, s);
    if (e == KB_OK && s->deleted_ms != 0 && s->deletion_ms <= c->now_ms) {
        if ((e = cache_store_secret_delete(c->api->store, s->id)) == KB_OK)
            e = KB_ERR_NOT_FOUND;
    }
    if (e == KB_OK) {
        if (s->deleted_ms != 0) {
            rc = fail(c, E_REQUEST,
                      "You can't create this secret because a secret with this "
                      "name is already scheduled for deletion.");
            goto out;
        }
        /* A retried CreateSecret (same token, same value) gets the first answer again. */
        if (token && val.present &&
            cache_store_version_exists(c->api->store, s->id, token) == KB_OK) {
            if (new_version(c, s, token, &val, NULL, vid, &created))
                goto out;
            rc = set(out, "ARN", json_string(s->arn)) || set(out, "Name", json_string(s->name)) ||
                         set(out, "VersionId", json_string(vid))
                     ? fail_internal(c, KB_ERR_NOMEM)
                     : 0;
            goto out;
        }
        rc = fail(c, E_EXISTS, "The operation failed because the secret %s already exists.",
                  "with this name");
        goto out;
    }
    if (e != KB_ERR_NOT_FOUND) {
        rc = fail_internal(c, e);
        goto out;
    }
    memset(s, 0, sizeof(*s));
    snprintf(s->account, sizeof(s->account), "%s", c->account);
    snprintf(s->name, sizeof(s->name), "%s", name);
    if (desc) {
        s->has_description = 1;
        snprintf(s->description, sizeof(s->description), "%s", desc);
    }
    if (kms) {
        s->has_kms_key_id = 1;
        snprintf(s->kms_key_id, sizeof(s->kms_key_id), "%s", kms);
    }
    s->created_ms = s->changed_ms = c->now_ms;
    /* ARN suffix: 6 random characters, as Secrets Manager appends (retry on a collision). */
    for (int attempt = 0; attempt < 5; attempt++) {
        static const char alnum[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        uint8_t r[6];
        char suffix[7];
        if (RAND_bytes(r, sizeof(r)) != 1) {
            rc = fail_internal(c, KB_ERR_CRYPTO);
            goto out;
        }
        for (int i = 0; i < 6; i++)
            suffix[i] = alnum[r[i] % 62];
        suffix[6] = '\0';
        snprintf(s->arn, sizeof(s->arn), "arn:aws:secretsmanager:%s:%s:secret:%s-%s",
                 c->api->region, c->account, name, suffix);
        e = cache_store_secret_insert(c->api->store, s);
        if (e != KB_ERR_EXISTS)
            break;
    }
    if (e != KB_OK) {
        rc = fail_internal(c, e);
        goto out;
    }
    if (tags) {
        size_t i;
        json_t *t;
        json_array_foreach(tags, i, t)
        {
            e = cache_store_tag_set(c->api->store, s->id,
                                    json_string_value(json_object_get(t, "Key")), tag_value(t));
            if (e != KB_OK) {
                rc = fail_internal(c, e);
                goto out;
            }
        }
    }
    if (val.present && new_version(c, s, token, &val, NULL, vid, &created))
        goto out;
    if (set(out, "ARN", json_string(s->arn)) || set(out, "Name", json_string(s->name)) ||
        (val.present && set(out, "VersionId", json_string(vid)))) {
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    rc = 0;
out:
    kb_secret_free(val.v);
    free(s);
    return rc;
}

static int op_put_value(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId",
                                       "ClientRequestToken",
                                       "SecretBinary",
                                       "SecretString",
                                       "VersionStages",
                                       "RotationToken",
                                       NULL};
    const char *token, *rot;
    cache_secret *s = malloc(sizeof(*s));
    value_in val = {0};
    char vid[CACHE_VERSION_ID_MAX + 1];
    int created = 0, rc = -1;
    json_t *stages = json_object_get(in, "VersionStages");

    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) || get_token(c, in, &token) ||
        get_str(c, in, "RotationToken", 36, 256, 0, &rot, NULL) || check_stages(c, stages) ||
        get_value(c, in, &val))
        goto out;
    if (!val.present) {
        rc = fail(c, E_REQUEST, "You must provide either SecretString or SecretBinary.");
        goto out;
    }
    if (get_secret_id(c, in, s, 0))
        goto out;
    if (json_is_null(stages))
        stages = NULL;
    if (new_version(c, s, token, &val, stages, vid, &created))
        goto out;
    if (set(out, "ARN", json_string(s->arn)) || set(out, "Name", json_string(s->name)) ||
        set(out, "VersionId", json_string(vid)) ||
        set(out, "VersionStages", version_stages(c, s, vid))) {
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    rc = 0;
out:
    kb_secret_free(val.v);
    free(s);
    return rc;
}

static int op_update(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {
        "SecretId",     "ClientRequestToken", "Description", "KmsKeyId",
        "SecretBinary", "SecretString",       "Type",        NULL};
    const char *token, *desc, *kms, *type;
    cache_secret *s = malloc(sizeof(*s));
    value_in val = {0};
    char vid[CACHE_VERSION_ID_MAX + 1];
    int created = 0, rc = -1;
    kb_err e;

    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) || get_token(c, in, &token) ||
        get_str(c, in, "Description", 0, CACHE_DESC_MAX, 0, &desc, NULL) ||
        get_str(c, in, "KmsKeyId", 0, CACHE_KMS_MAX, 0, &kms, NULL) ||
        get_str(c, in, "Type", 0, 256, 0, &type, NULL) || get_value(c, in, &val) ||
        get_secret_id(c, in, s, 0))
        goto out;
    if (desc) {
        s->has_description = 1;
        snprintf(s->description, sizeof(s->description), "%s", desc);
    }
    if (kms) {
        s->has_kms_key_id = 1;
        snprintf(s->kms_key_id, sizeof(s->kms_key_id), "%s", kms);
    }
    s->changed_ms = c->now_ms;
    if ((e = cache_store_secret_update(c->api->store, s)) != KB_OK) {
        rc = fail_internal(c, e);
        goto out;
    }
    if (val.present && new_version(c, s, token, &val, NULL, vid, &created))
        goto out;
    if (set(out, "ARN", json_string(s->arn)) || set(out, "Name", json_string(s->name)) ||
        (val.present && set(out, "VersionId", json_string(vid)))) {
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    rc = 0;
out:
    kb_secret_free(val.v);
    free(s);
    return rc;
}

/* Resolve (VersionId, VersionStage) to a version id; default AWSCURRENT. */
static int pick_version(op_ctx *c, const cache_secret *s, const char *want_vid,
                        const char *want_stage, char vid[CACHE_VERSION_ID_MAX + 1])
{
    static const char msg[] =
        "Secrets Manager can't find the specified secret value for VersionId or VersionStage.";
    kb_err e;
    if (want_vid) {
        e = cache_store_version_exists(c->api->store, s->id, want_vid);
        if (e == KB_ERR_NOT_FOUND)
            return fail(c, E_NOTFOUND, msg);
        if (e != KB_OK)
            return fail_internal(c, e);
        snprintf(vid, CACHE_VERSION_ID_MAX + 1, "%s", want_vid);
        if (want_stage == NULL)
            return 0;
    }
    {
        char staged[CACHE_VERSION_ID_MAX + 1];
        e = cache_store_stage_get(c->api->store, s->id, want_stage ? want_stage : STAGE_CURRENT,
                                  staged);
        if (e == KB_ERR_NOT_FOUND || (e == KB_OK && want_vid && strcmp(staged, want_vid) != 0))
            return fail(c, E_NOTFOUND, msg);
        if (e != KB_OK)
            return fail_internal(c, e);
        snprintf(vid, CACHE_VERSION_ID_MAX + 1, "%s", staged);
    }
    return 0;
}

/* Fill a GetSecretValue-shaped object for version vid of s. */
static int value_entry(op_ctx *c, const cache_secret *s, const char *vid, json_t *o)
{
    int bin = 0;
    int64_t created = 0;
    const uint8_t *v = NULL;
    size_t vlen = 0;
    /* Plaintext in the store's locked scratch buffer (no locked mapping per request); it is
     * copied into the response tree, whose blocks are wiped on free (kb_json_init). */
    kb_err e = cache_store_version_peek(c->api->store, s, vid, &bin, &v, &vlen, &created);
    int rc;
    if (e == KB_ERR_INTEGRITY)
        return fail(c, "DecryptionFailure",
                    "Secrets Manager can't decrypt the protected secret text using the provided "
                    "key.");
    if (e != KB_OK)
        return fail_internal(c, e);
    rc = set(o, "ARN", json_string(s->arn)) || set(o, "Name", json_string(s->name)) ||
         set(o, "VersionId", json_string(vid)) ||
         set(o, bin ? "SecretBinary" : "SecretString",
             bin ? kb_json_b64(v, vlen) : json_stringn((const char *)v, vlen)) ||
         set(o, "VersionStages", version_stages(c, s, vid)) || set(o, "CreatedDate", ts(created));
    cache_store_peek_release(c->api->store);
    return rc ? fail_internal(c, KB_ERR_NOMEM) : 0;
}

/* GetSecretValue's answer written straight into c->body (raw), as value_entry would build it
 * and json_dumps write it: ARN, Name, VersionId, SecretString or SecretBinary, VersionStages,
 * CreatedDate, strings escaped byte for byte as jansson does (kb_json_put_str) and the date as
 * the shortest decimal of the same double (kb_json_put_ms). No tree and no json_dumps per
 * request; the value is copied once, into the body, which is wiped when freed or grown. */
typedef struct {
    kb_dbuf *b;
    int n;
} stage_list;

static int stage_to_body(void *arg, const char *vid, const char *stage)
{
    stage_list *l = arg;
    (void)vid;
    if ((l->n++ && kb_dbuf_addc(l->b, ',') != KB_OK) ||
        kb_json_put_str(l->b, stage, strlen(stage)) != KB_OK)
        return -1;
    return 0;
}

static int value_write(op_ctx *c, const cache_secret *s, const char *vid)
{
    kb_dbuf *b = &c->body;
    int bin = 0;
    int64_t created = 0;
    const uint8_t *v = NULL;
    size_t vlen = 0;
    char *b64 = NULL;
    stage_list sl;
    kb_err e = cache_store_version_peek(c->api->store, s, vid, &bin, &v, &vlen, &created);
    if (e == KB_ERR_INTEGRITY)
        return fail(c, "DecryptionFailure",
                    "Secrets Manager can't decrypt the protected secret text using the provided "
                    "key.");
    if (e != KB_OK)
        return fail_internal(c, e);
    kb_dbuf_reset(b);
    sl.b = b;
    sl.n = 0;
    if (bin)
        b64 = kb_b64_encode_str(v, vlen, KB_B64_STD);
    /* One allocation for the usual answer (a value that needs no escaping). */
    e = kb_dbuf_reserve(b, strlen(s->arn) + strlen(s->name) + strlen(vid) +
                               (bin ? (b64 ? strlen(b64) : 0) : vlen) + 160);
    if (e == KB_OK && (bin && b64 == NULL))
        e = KB_ERR_NOMEM;
    if (e == KB_OK &&
        (kb_dbuf_addstr(b, "{\"ARN\":") != KB_OK || put_text(b, s->arn) ||
         kb_dbuf_addstr(b, ",\"Name\":") != KB_OK || put_text(b, s->name) ||
         kb_dbuf_addstr(b, ",\"VersionId\":") != KB_OK || put_text(b, vid) ||
         kb_dbuf_addstr(b, bin ? ",\"SecretBinary\":" : ",\"SecretString\":") != KB_OK ||
         (bin ? put_text(b, b64) : kb_json_put_str(b, (const char *)v, vlen) != KB_OK) ||
         kb_dbuf_addstr(b, ",\"VersionStages\":[") != KB_OK))
        e = KB_ERR_NOMEM;
    cache_store_peek_release(c->api->store);
    kb_json_free_str(b64);
    if (e == KB_OK && cache_store_stages(c->api->store, s->id, vid, stage_to_body, &sl) != KB_OK)
        e = KB_ERR_INTERNAL;
    if (e == KB_OK && (kb_dbuf_addstr(b, "],\"CreatedDate\":") != KB_OK ||
                       kb_json_put_ms(b, created) != KB_OK || kb_dbuf_addc(b, '}') != KB_OK))
        e = KB_ERR_NOMEM;
    if (e != KB_OK) {
        kb_dbuf_reset(b);
        return fail_internal(c, e);
    }
    c->raw = 1;
    return 0;
}

/* LastAccessedDate is kept to the day, as Secrets Manager does: at most one write per secret and
 * day, so reads stay reads. */
static void touch(op_ctx *c, cache_secret *s)
{
    int64_t day = c->now_ms - c->now_ms % DAY_MS;
    if (s->accessed_ms != day) {
        s->accessed_ms = day;
        if (cache_store_secret_update(c->api->store, s) != KB_OK)
            kb_log(KB_LOG_WARN, "touch_failed", NULL);
    }
}

static int op_get_value(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", "VersionId", "VersionStage", NULL};
    const char *want_vid, *want_stage;
    cache_secret *s = malloc(sizeof(*s));
    char vid[CACHE_VERSION_ID_MAX + 1];
    int rc = -1;
    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) ||
        get_str(c, in, "VersionId", CACHE_TOKEN_MIN, CACHE_TOKEN_MAX, 0, &want_vid, NULL) ||
        get_str(c, in, "VersionStage", 1, CACHE_STAGE_MAX, 0, &want_stage, NULL) ||
        get_secret_id(c, in, s, 0) || pick_version(c, s, want_vid, want_stage, vid) ||
        value_write(c, s, vid))
        goto out;
    (void)out; /* the answer is c->body */
    touch(c, s);
    rc = 0;
out:
    free(s);
    return rc;
}

static int op_describe(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", NULL};
    cache_secret *s = malloc(sizeof(*s));
    cache_tag_list *tags = malloc(sizeof(*tags));
    int rc = -1;
    kb_err e;
    if (s == NULL || tags == NULL) {
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    if (check_keys(c, in, keys) || get_secret_id(c, in, s, 1))
        goto out;
    if ((e = cache_store_tags_get(c->api->store, s->id, tags)) != KB_OK) {
        rc = fail_internal(c, e);
        goto out;
    }
    rc = describe(c, s, tags, out, "VersionIdsToStages") ? fail_internal(c, KB_ERR_NOMEM) : 0;
out:
    free(s);
    free(tags);
    return rc;
}

static int op_delete(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", "RecoveryWindowInDays",
                                       "ForceDeleteWithoutRecovery", NULL};
    cache_secret *s = malloc(sizeof(*s));
    int64_t days = CACHE_RECOVERY_DEFAULT_DAYS, when;
    int has_days = 0, force = 0, rc = -1;
    kb_err e;
    json_t *d = json_object_get(in, "RecoveryWindowInDays");

    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) || get_bool(c, in, "ForceDeleteWithoutRecovery", &force))
        goto out;
    if (d != NULL && !json_is_null(d) && !json_is_integer(d)) {
        rc = fail(c, E_PARAM,
                  "Invalid type for parameter RecoveryWindowInDays: expected an "
                  "integer");
        goto out;
    }
    if (d != NULL && json_is_integer(d)) {
        has_days = 1;
        days = json_integer_value(d);
    }
    if (force && has_days) {
        rc = fail(c, E_PARAM,
                  "You can't use ForceDeleteWithoutRecovery in conjunction with "
                  "RecoveryWindowInDays.");
        goto out;
    }
    if (days < CACHE_RECOVERY_MIN_DAYS || days > CACHE_RECOVERY_MAX_DAYS) {
        rc = fail(c, E_PARAM,
                  "The RecoveryWindowInDays value must be between %d and %d days "
                  "(inclusive).",
                  CACHE_RECOVERY_MIN_DAYS, CACHE_RECOVERY_MAX_DAYS);
        goto out;
    }
    if (get_secret_id(c, in, s, 1))
        goto out;
    if (force) {
        e = cache_store_secret_delete(c->api->store, s->id);
        when = c->now_ms;
    } else {
        if (s->deleted_ms != 0) {
            rc = fail(c, E_REQUEST,
                      "You can't perform this operation on the secret because it "
                      "was already scheduled for deletion.");
            goto out;
        }
        s->deleted_ms = c->now_ms;
        s->deletion_ms = when = c->now_ms + days * DAY_MS;
        e = cache_store_secret_update(c->api->store, s);
    }
    if (e != KB_OK) {
        rc = fail_internal(c, e);
        goto out;
    }
    rc = set(out, "ARN", json_string(s->arn)) || set(out, "Name", json_string(s->name)) ||
                 set(out, "DeletionDate", ts(when))
             ? fail_internal(c, KB_ERR_NOMEM)
             : 0;
out:
    free(s);
    return rc;
}

static int op_restore(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", NULL};
    cache_secret *s = malloc(sizeof(*s));
    int rc = -1;
    kb_err e;
    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) || get_secret_id(c, in, s, 1))
        goto out;
    if (s->deleted_ms != 0) {
        s->deleted_ms = s->deletion_ms = 0;
        if ((e = cache_store_secret_update(c->api->store, s)) != KB_OK) {
            rc = fail_internal(c, e);
            goto out;
        }
    }
    rc = arn_name(c, s, out);
out:
    free(s);
    return rc;
}

static int op_tag(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", "Tags", NULL};
    cache_secret *s = malloc(sizeof(*s));
    cache_tag_list *have = malloc(sizeof(*have));
    json_t *tags = json_object_get(in, "Tags"), *t;
    size_t i, total;
    int rc = -1;
    kb_err e;
    (void)out;
    if (s == NULL || have == NULL) {
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    if (check_keys(c, in, keys) || check_tags(c, tags, 1) || get_secret_id(c, in, s, 0))
        goto out;
    if ((e = cache_store_tags_get(c->api->store, s->id, have)) != KB_OK) {
        rc = fail_internal(c, e);
        goto out;
    }
    /* The limit applies to the merged set: count the keys that are new. */
    total = have->n;
    json_array_foreach(tags, i, t)
    {
        const char *k = json_string_value(json_object_get(t, "Key"));
        int known = 0;
        for (size_t j = 0; j < have->n && !known; j++)
            known = strcmp(have->t[j].key, k) == 0;
        for (size_t j = 0; j < i && !known; j++)
            known =
                strcmp(json_string_value(json_object_get(json_array_get(tags, j), "Key")), k) == 0;
        total += known ? 0 : 1;
    }
    if (total > CACHE_TAGS_MAX) {
        rc = fail(c, E_PARAM, "A secret can have at most %d tags.", CACHE_TAGS_MAX);
        goto out;
    }
    json_array_foreach(tags, i, t)
    {
        e = cache_store_tag_set(c->api->store, s->id, json_string_value(json_object_get(t, "Key")),
                                tag_value(t));
        if (e != KB_OK) {
            rc = fail_internal(c, e);
            goto out;
        }
    }
    rc = 0;
out:
    free(s);
    free(have);
    return rc;
}

static int op_untag(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", "TagKeys", NULL};
    cache_secret *s = malloc(sizeof(*s));
    json_t *k = json_object_get(in, "TagKeys"), *v;
    size_t i;
    int rc = -1;
    kb_err e;
    (void)out;
    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys))
        goto out;
    if (k == NULL || !json_is_array(k)) {
        rc = fail(c, E_PARAM, "Missing or invalid parameter: TagKeys (a list of strings)");
        goto out;
    }
    if (json_array_size(k) > CACHE_UNTAG_KEYS_MAX) {
        rc = fail(c, E_PARAM, "Too many TagKeys: at most %d", CACHE_UNTAG_KEYS_MAX);
        goto out;
    }
    json_array_foreach(k, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) < 1 ||
            json_string_length(v) > CACHE_TAG_KEY_MAX) {
            rc = fail(c, E_PARAM, "Invalid tag key in TagKeys");
            goto out;
        }
    }
    if (get_secret_id(c, in, s, 0))
        goto out;
    json_array_foreach(k, i, v)
    {
        if ((e = cache_store_tag_remove(c->api->store, s->id, json_string_value(v))) != KB_OK) {
            rc = fail_internal(c, e);
            goto out;
        }
    }
    rc = 0;
out:
    free(s);
    return rc;
}

static int op_policy(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", NULL};
    cache_secret *s = malloc(sizeof(*s));
    char *pol = NULL;
    int rc = -1;
    kb_err e;
    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) || get_secret_id(c, in, s, 1))
        goto out;
    /* A secret without a policy has no ResourcePolicy member, as AWS answers. */
    e = cache_store_policy_get(c->api->store, s->id, &pol);
    if (e != KB_OK && e != KB_ERR_NOT_FOUND) {
        rc = fail_internal(c, e);
        goto out;
    }
    rc = set(out, "ARN", json_string(s->arn)) || set(out, "Name", json_string(s->name)) ||
                 (pol != NULL && set(out, "ResourcePolicy", json_string(pol)))
             ? fail_internal(c, KB_ERR_NOMEM)
             : 0;
out:
    free(pol);
    free(s);
    return rc;
}

/* ------------------------------------------------------- filters and pagination */

static const char *const FILTER_KEYS[] = {
    "description", "name", "tag-key", "tag-value", "primary-region", "owning-service", "all", NULL};

/* Filter value pattern from the model: ^\!?[a-zA-Z0-9 :_@\/\+\=\.\-\!]*$ */
static int filter_value_ok(const char *s)
{
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && strchr(" :_@/+=.-!", *s) == NULL)
            return 0;
    }
    return 1;
}

static int check_filters(op_ctx *c, const json_t *f)
{
    static const char *const keys[] = {"Key", "Values", NULL};
    size_t i, j;
    json_t *e, *v;
    if (f == NULL || json_is_null(f))
        return 0;
    if (!json_is_array(f))
        return fail(c, E_PARAM, "Invalid type for parameter Filters: expected a list");
    if (json_array_size(f) > CACHE_FILTERS_MAX)
        return fail(c, E_PARAM, "Too many filters: at most %d", CACHE_FILTERS_MAX);
    json_array_foreach(f, i, e)
    {
        json_t *k, *vals;
        int known = 0;
        if (!json_is_object(e) || check_keys(c, e, keys))
            return json_is_object(e) ? -1
                                     : fail(c, E_PARAM, "Invalid filter: expected a structure");
        k = json_object_get(e, "Key");
        vals = json_object_get(e, "Values");
        if (!json_is_string(k))
            return fail(c, E_PARAM, "Invalid filter: Key must be a string");
        for (size_t n = 0; FILTER_KEYS[n] && !known; n++)
            known = strcmp(FILTER_KEYS[n], json_string_value(k)) == 0;
        if (!known)
            return fail(c, E_PARAM, "Invalid filter key");
        if (!json_is_array(vals) || json_array_size(vals) < 1 ||
            json_array_size(vals) > CACHE_FILTER_VALUES_MAX)
            return fail(c, E_PARAM, "Invalid filter: Values must be a list of 1 to %d strings",
                        CACHE_FILTER_VALUES_MAX);
        json_array_foreach(vals, j, v)
        {
            if (!json_is_string(v) || json_string_length(v) > CACHE_FILTER_VALUE_MAX ||
                !filter_value_ok(json_string_value(v)))
                return fail(c, E_PARAM, "Invalid filter value");
        }
    }
    return 0;
}

static int has_prefix(const char *s, const char *p, int ci)
{
    size_t n = strlen(p);
    return ci ? strncasecmp(s, p, n) == 0 : strncmp(s, p, n) == 0;
}

static int word_sep(char ch)
{
    return strchr(" /_-.:+=@", ch) != NULL;
}

/* "all": every word of the filter value must be a case-insensitive prefix of an attribute or
 * of a word inside one. */
static int word_in(const char *attr, const char *word, size_t wl)
{
    for (const char *p = attr; *p; p++) {
        if ((p == attr || word_sep(p[-1])) && strncasecmp(p, word, wl) == 0)
            return 1;
    }
    return wl == 0;
}

static int all_match(const cache_secret *s, const cache_tag_list *t, const char *value)
{
    const char *w = value;
    while (*w) {
        size_t wl;
        int hit;
        while (*w == ' ')
            w++;
        if (*w == '\0')
            break;
        wl = strcspn(w, " ");
        hit = word_in(s->name, w, wl) || (s->has_description && word_in(s->description, w, wl));
        for (size_t i = 0; i < t->n && !hit; i++)
            hit = word_in(t->t[i].key, w, wl) || word_in(t->t[i].value, w, wl);
        if (!hit)
            return 0;
        w += wl;
    }
    return 1;
}

static int attr_match(const char *key, const cache_secret *s, const cache_tag_list *t,
                      const char *v)
{
    if (strcmp(key, "name") == 0)
        return has_prefix(s->name, v, 0);
    if (strcmp(key, "description") == 0)
        return s->has_description && has_prefix(s->description, v, 1);
    if (strcmp(key, "tag-key") == 0 || strcmp(key, "tag-value") == 0) {
        int k = key[4] == 'k';
        for (size_t i = 0; i < t->n; i++) {
            if (has_prefix(k ? t->t[i].key : t->t[i].value, v, 0))
                return 1;
        }
        return 0;
    }
    if (strcmp(key, "all") == 0)
        return all_match(s, t, v);
    return 0; /* primary-region, owning-service: no replicas, no owning service here */
}

/* Filters are ANDed. Within one filter: at least one positive value must match (if any is
 * given), and no "!"-negated value may match. */
static int filters_match(const json_t *filters, const cache_secret *s, const cache_tag_list *t)
{
    size_t i, j;
    json_t *f, *v;
    if (filters == NULL || json_is_null(filters))
        return 1;
    json_array_foreach(filters, i, f)
    {
        const char *key = json_string_value(json_object_get(f, "Key"));
        int npos = 0, pos_hit = 0;
        json_array_foreach(json_object_get(f, "Values"), j, v)
        {
            const char *val = json_string_value(v);
            if (val[0] == '!') {
                if (attr_match(key, s, t, val + 1))
                    return 0;
            } else {
                npos++;
                pos_hit |= attr_match(key, s, t, val);
            }
        }
        if (npos > 0 && !pos_hit)
            return 0;
    }
    return 1;
}

/* NextToken: base64url, unpadded, of
 *     version 2 | id u64 | num i64 | text length u16 | text | HMAC-SHA256(token key,
 * binding)[0..16] where (num or text, id) is the sort key of the last secret returned
 * (cache_list_after) and the MAC binds the account, the operation, the query (filters, order,
 * deleted flag) and the payload, so a token can neither be forged nor replayed against another
 * query or account. A key rather than an offset: each page is a range scan from where the last one
 * ended, so reading a whole account of N secrets costs O(N), not O(N^2 / page), and secrets created
 * or deleted meanwhile shift nothing. */
#define TOKEN_VERSION 2
#define TOKEN_MAC_LEN 16
#define TOKEN_HEAD_LEN (1 + 8 + 8 + 2)
#define TOKEN_RAW_MAX (TOKEN_HEAD_LEN + CACHE_NAME_MAX + TOKEN_MAC_LEN)

typedef struct {
    int64_t id;
    int64_t num;
    char text[CACHE_NAME_MAX + 1];
} list_cursor;

static kb_err token_mac(op_ctx *c, const char *op, const char *query, const uint8_t *payload,
                        size_t len, uint8_t mac[32])
{
    const kb_secret *k = cache_store_token_key(c->api->store);
    kb_err rc = KB_OK;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *mc = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t outl = 0;
    KB_ENSURE_OUT(rc, mc != NULL, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc,
                  EVP_MAC_init(mc, kb_secret_cdata(k), kb_secret_len(k), params) == 1 &&
                      EVP_MAC_update(mc, (const uint8_t *)c->account, strlen(c->account) + 1) ==
                          1 &&
                      EVP_MAC_update(mc, (const uint8_t *)op, strlen(op) + 1) == 1 &&
                      EVP_MAC_update(mc, (const uint8_t *)query, strlen(query) + 1) == 1 &&
                      EVP_MAC_update(mc, payload, len) == 1 &&
                      EVP_MAC_final(mc, mac, &outl, 32) == 1 && outl == 32,
                  KB_ERR_CRYPTO);
out:
    EVP_MAC_CTX_free(mc);
    EVP_MAC_free(m);
    return rc;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static json_t *token_make(op_ctx *c, const char *op, const char *query, const list_cursor *cur)
{
    uint8_t raw[TOKEN_RAW_MAX], mac[32];
    char *out;
    json_t *j;
    size_t tl = strlen(cur->text), n;
    if (tl > CACHE_NAME_MAX)
        return NULL;
    raw[0] = TOKEN_VERSION;
    put_u64(raw + 1, (uint64_t)cur->id);
    put_u64(raw + 9, (uint64_t)cur->num);
    raw[17] = (uint8_t)(tl >> 8);
    raw[18] = (uint8_t)tl;
    memcpy(raw + TOKEN_HEAD_LEN, cur->text, tl);
    n = TOKEN_HEAD_LEN + tl;
    if (token_mac(c, op, query, raw, n, mac) != KB_OK)
        return NULL;
    memcpy(raw + n, mac, TOKEN_MAC_LEN);
    n += TOKEN_MAC_LEN;
    out = kb_b64_encode_str(raw, n, KB_B64_URL); /* RFC 4648 section 5, without padding */
    j = out ? json_string(out) : NULL;
    kb_json_free_str(out);
    return j;
}

static int token_parse(op_ctx *c, const char *op, const char *query, const char *tok,
                       list_cursor *cur)
{
    static const char bad[] = "The NextToken value is invalid.";
    uint8_t raw[TOKEN_RAW_MAX + 2], mac[32];
    size_t n = strlen(tok), o = 0, tl;
    if (n < (TOKEN_HEAD_LEN + TOKEN_MAC_LEN) * 4 / 3 || n > (TOKEN_RAW_MAX * 4 + 2) / 3 ||
        n % 4 == 1)
        return fail(c, E_NEXTTOKEN, bad);
    /* Canonical encoding only (kb_b64_decode): the unused low bits of the last character are 0. */
    if (kb_b64_decode(tok, n, KB_B64_URL, raw, sizeof(raw), &o) != KB_OK ||
        o < TOKEN_HEAD_LEN + TOKEN_MAC_LEN || raw[0] != TOKEN_VERSION)
        return fail(c, E_NEXTTOKEN, bad);
    tl = (size_t)raw[17] << 8 | raw[18];
    if (tl > CACHE_NAME_MAX || o != TOKEN_HEAD_LEN + tl + TOKEN_MAC_LEN)
        return fail(c, E_NEXTTOKEN, bad);
    if (token_mac(c, op, query, raw, TOKEN_HEAD_LEN + tl, mac) != KB_OK)
        return fail_internal(c, KB_ERR_CRYPTO);
    if (!kb_ct_eq(mac, raw + TOKEN_HEAD_LEN + tl, TOKEN_MAC_LEN))
        return fail(c, E_NEXTTOKEN, bad);
    /* Authentic from here on: we wrote it. */
    cur->id = (int64_t)get_u64(raw + 1);
    cur->num = (int64_t)get_u64(raw + 9);
    memcpy(cur->text, raw + TOKEN_HEAD_LEN, tl);
    cur->text[tl] = '\0';
    if (cur->id <= 0 || strlen(cur->text) != tl)
        return fail(c, E_NEXTTOKEN, bad);
    return 0;
}

typedef struct {
    op_ctx *c;
    const json_t *filters;
    int batch; /* BatchGetSecretValue: entries carry values */
    cache_sort sort;
    list_cursor last; /* sort key of the last entry returned */
    size_t max;
    size_t count; /* entries (and batch errors) on this page */
    json_t *list; /* batch: SecretValues */
    json_t *errors;
    kb_dbuf *page; /* ListSecrets: the answer, entries written directly */
    int more;
    int failed;
    cache_tag_list *tags; /* a row's tags, when filters need them (allocated then: 19 KB) */
} list_state;

static int list_visit(void *arg, const cache_secret *s, const cache_list_text *t)
{
    list_state *ls = arg;
    op_ctx *c = ls->c;
    json_t *o;
    int filtered = ls->filters != NULL && json_array_size(ls->filters) > 0;
    /* Tags are read only when a filter needs them or the entry is returned. */
    if (filtered) {
        if (ls->tags == NULL && (ls->tags = malloc(sizeof(*ls->tags))) == NULL)
            return -1;
        if (cache_store_tags_get(c->api->store, s->id, ls->tags) != KB_OK)
            return -1;
        if (!filters_match(ls->filters, s, ls->tags))
            return 0;
    }
    if (ls->count >= ls->max) {
        ls->more = 1; /* one more match exists: the page ends at ls->last */
        return 1;
    }
    ls->last.id = s->id;
    ls->last.num = ls->sort == CACHE_SORT_CREATED    ? s->created_ms
                   : ls->sort == CACHE_SORT_CHANGED  ? s->changed_ms
                   : ls->sort == CACHE_SORT_ACCESSED ? s->accessed_ms
                                                     : 0;
    if (ls->sort == CACHE_SORT_NAME)
        snprintf(ls->last.text, sizeof(ls->last.text), "%s", s->name);
    ls->count++;
    if (!ls->batch)
        return page_entry(ls->page, ls->count == 1, t);
    o = json_object();
    if (o == NULL)
        return -1;
    {
        char vid[CACHE_VERSION_ID_MAX + 1];
        if (pick_version(c, s, NULL, NULL, vid) || value_entry(c, s, vid, o)) {
            json_decref(o);
            if (c->status == 500)
                return -1;
            /* Per-secret failures go to Errors, as BatchGetSecretValue reports them. */
            o = json_pack("{s:s, s:s, s:s}", "SecretId", s->arn, "ErrorCode", c->etype, "Message",
                          c->emsg);
            c->etype = NULL;
            c->status = 0;
            return o && json_array_append_new(ls->errors, o) == 0 ? 0 : -1;
        }
    }
    return json_array_append_new(ls->list, o) == 0 ? 0 : -1;
}

/* The query a NextToken is bound to, canonical (sorted keys, compact). */
static char *query_key(const json_t *in, const char *const *members)
{
    json_t *q = json_object();
    char *s;
    for (size_t i = 0; q && members[i]; i++) {
        json_t *v = json_object_get(in, members[i]);
        if (v && !json_is_null(v))
            json_object_set(q, members[i], v);
    }
    s = q ? json_dumps(q, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(q);
    return s;
}

static int run_list(op_ctx *c, const json_t *in, json_t *out, const char *op, int batch, size_t max,
                    const char *next, int include_deleted, cache_sort sort, int desc)
{
    static const char *const bind[] = {"Filters", "SortOrder", "SortBy", "IncludePlannedDeletion",
                                       NULL};
    list_state *ls = calloc(1, sizeof(*ls));
    char *qk = query_key(in, bind);
    list_cursor *from = NULL;
    cache_list_after after;
    int rc = -1;
    kb_err e;
    if (ls == NULL || qk == NULL) {
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    ls->c = c;
    ls->filters = json_object_get(in, "Filters");
    ls->batch = batch;
    ls->sort = sort;
    ls->max = max;
    ls->list = batch ? json_array() : NULL;
    ls->errors = batch ? json_array() : NULL;
    if (!batch) {
        /* {"SecretList":[entries]("NextToken":"…")}: the entries are written as they are read */
        ls->page = &c->body;
        kb_dbuf_reset(&c->body);
        if (kb_dbuf_reserve(&c->body, max * LIST_ENTRY_GUESS + 64) != KB_OK ||
            kb_dbuf_addstr(&c->body, "{\"SecretList\":[") != KB_OK) {
            rc = fail_internal(c, KB_ERR_NOMEM);
            goto out;
        }
    }
    memset(&after, 0, sizeof(after));
    if (next) {
        from = calloc(1, sizeof(*from));
        if (from == NULL) {
            rc = fail_internal(c, KB_ERR_NOMEM);
            goto out;
        }
        if (token_parse(c, op, qk, next, from))
            goto out;
        after.id = from->id;
        after.num = from->num;
        after.text = from->text;
    }
    /* ListSecrets reads the kept texts; name, description and dates only for its filters (the
     * sort column, for the NextToken key, in any case). */
    e = cache_store_list(c->api->store, c->account, include_deleted, sort, desc, &after,
                         batch                                         ? CACHE_LIST_SECRETS
                         : ls->filters && json_array_size(ls->filters) ? CACHE_LIST_TEXTS
                                                                       : CACHE_LIST_KEYS,
                         list_visit, ls);
    if (e != KB_OK || (batch && (ls->list == NULL || ls->errors == NULL))) {
        rc = fail_internal(c, e != KB_OK ? e : KB_ERR_NOMEM);
        goto out;
    }
    if (!batch) {
        json_t *tok = ls->more ? token_make(c, op, qk, &ls->last) : NULL;
        if ((ls->more && tok == NULL) || kb_dbuf_addc(&c->body, ']') != KB_OK ||
            (tok && (kb_dbuf_addstr(&c->body, ",\"NextToken\":") != KB_OK ||
                     kb_json_put_str(&c->body, json_string_value(tok), json_string_length(tok)) !=
                         KB_OK)) ||
            kb_dbuf_addc(&c->body, '}') != KB_OK) {
            json_decref(tok);
            rc = fail_internal(c, KB_ERR_NOMEM);
            goto out;
        }
        json_decref(tok);
        c->raw = 1;
        rc = 0;
        goto out;
    }
    if (set(out, "SecretValues", json_incref(ls->list)) ||
        (batch && set(out, "Errors", json_incref(ls->errors))) ||
        (ls->more && set(out, "NextToken", token_make(c, op, qk, &ls->last)))) {
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    rc = 0;
out:
    if (ls) {
        json_decref(ls->list);
        json_decref(ls->errors);
        free(ls->tags);
    }
    free(ls);
    free(from);
    kb_json_free_str(qk);
    return rc;
}

static int op_list(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"IncludePlannedDeletion",
                                       "MaxResults",
                                       "NextToken",
                                       "Filters",
                                       "SortOrder",
                                       "SortBy",
                                       NULL};
    static const char *const sorts[] = {"created-date", "last-changed-date", "last-accessed-date",
                                        "name"};
    static const cache_sort sort_of[] = {CACHE_SORT_CREATED, CACHE_SORT_CHANGED,
                                         CACHE_SORT_ACCESSED, CACHE_SORT_NAME};
    const char *next, *order, *by;
    int64_t max = CACHE_LIST_MAX;
    int has_max, incl = 0, desc = 0;
    cache_sort sort = CACHE_SORT_CREATED;
    if (check_keys(c, in, keys) || get_bool(c, in, "IncludePlannedDeletion", &incl) ||
        get_int(c, in, "MaxResults", 1, CACHE_LIST_MAX, &max, &has_max) ||
        get_str(c, in, "NextToken", 1, CACHE_NEXT_TOKEN_MAX, 0, &next, NULL) ||
        get_str(c, in, "SortOrder", 1, 8, 0, &order, NULL) ||
        get_str(c, in, "SortBy", 1, 32, 0, &by, NULL) ||
        check_filters(c, json_object_get(in, "Filters")))
        return -1;
    if (order) {
        if (strcmp(order, "desc") != 0 && strcmp(order, "asc") != 0)
            return fail(c, E_PARAM, "Invalid SortOrder: asc or desc");
        desc = order[0] == 'd';
    }
    if (by) {
        size_t i;
        for (i = 0; i < KB_ARRAY_LEN(sorts) && strcmp(sorts[i], by) != 0; i++)
            ;
        if (i == KB_ARRAY_LEN(sorts))
            return fail(c, E_PARAM, "Invalid SortBy");
        sort = sort_of[i];
    }
    return run_list(c, in, out, "ListSecrets", 0, (size_t)max, next, incl, sort, desc);
}

static int op_batch_get(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretIdList", "Filters", "MaxResults", "NextToken", NULL};
    json_t *ids = json_object_get(in, "SecretIdList"), *filters = json_object_get(in, "Filters");
    json_t *values = NULL, *errors = NULL, *v;
    const char *next;
    int64_t max = CACHE_BATCH_MAX;
    int has_max, rc = -1;
    size_t i;
    cache_secret *s = NULL;

    if (check_keys(c, in, keys) ||
        get_int(c, in, "MaxResults", 1, CACHE_BATCH_MAX, &max, &has_max) ||
        get_str(c, in, "NextToken", 1, CACHE_NEXT_TOKEN_MAX, 0, &next, NULL) ||
        check_filters(c, filters))
        return -1;
    if (json_is_null(ids))
        ids = NULL;
    if (json_is_null(filters))
        filters = NULL;
    if ((ids == NULL) == (filters == NULL))
        return fail(c, E_PARAM, "Provide either SecretIdList or Filters, but not both.");
    if (filters)
        return run_list(c, in, out, "BatchGetSecretValue", 1, (size_t)max, next, 0,
                        CACHE_SORT_CREATED, 0);
    if (has_max || next)
        return fail(c, E_PARAM, "MaxResults and NextToken can only be used with Filters.");
    if (!json_is_array(ids) || json_array_size(ids) < 1 || json_array_size(ids) > CACHE_BATCH_MAX)
        return fail(c, E_PARAM, "SecretIdList must be a list of 1 to %d secret ids",
                    CACHE_BATCH_MAX);
    json_array_foreach(ids, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) < 1 ||
            json_string_length(v) > CACHE_SECRET_ID_MAX)
            return fail(c, E_PARAM, "Invalid secret id in SecretIdList");
    }
    values = json_array();
    errors = json_array();
    s = malloc(sizeof(*s));
    if (values == NULL || errors == NULL || s == NULL) {
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    json_array_foreach(ids, i, v)
    {
        char vid[CACHE_VERSION_ID_MAX + 1];
        json_t *o = json_object();
        if (o == NULL) {
            rc = fail_internal(c, KB_ERR_NOMEM);
            goto out;
        }
        if (find_secret(c, json_string_value(v), s) ||
            (s->deleted_ms != 0 && fail(c, E_REQUEST, MSG_DELETED)) ||
            pick_version(c, s, NULL, NULL, vid) || value_entry(c, s, vid, o)) {
            json_decref(o);
            if (c->status == 500)
                goto out;
            o = json_pack("{s:O, s:s, s:s}", "SecretId", v, "ErrorCode", c->etype, "Message",
                          c->emsg);
            c->etype = NULL;
            c->status = 0;
            if (o == NULL || json_array_append_new(errors, o) != 0) {
                rc = fail_internal(c, KB_ERR_NOMEM);
                goto out;
            }
            continue;
        }
        touch(c, s);
        if (json_array_append_new(values, o) != 0) {
            rc = fail_internal(c, KB_ERR_NOMEM);
            goto out;
        }
    }
    rc = set(out, "SecretValues", json_incref(values)) || set(out, "Errors", json_incref(errors))
             ? fail_internal(c, KB_ERR_NOMEM)
             : 0;
out:
    json_decref(values);
    json_decref(errors);
    free(s);
    return rc;
}

/* ---------------------------------------------------------------- versions and stages */

typedef struct {
    op_ctx *c;
    const cache_secret *s;
    int deprecated; /* IncludeDeprecated: versions without a stage too */
    size_t max;
    json_t *list;
    int64_t last_seq;
    int more;
    int failed;
} versions_state;

static int versions_visit(void *arg, const char *vid, int64_t created_ms, int64_t seq, int staged)
{
    versions_state *vs = arg;
    json_t *o;
    if (!staged && !vs->deprecated)
        return 0;
    if (json_array_size(vs->list) == vs->max) {
        vs->more = 1;
        return 1;
    }
    o = json_object();
    if (o == NULL || set(o, "VersionId", json_string(vid)) ||
        set(o, "VersionStages", version_stages(vs->c, vs->s, vid)) ||
        set(o, "CreatedDate", ts(created_ms)) || json_array_append_new(vs->list, o) != 0) {
        vs->failed = 1;
        return -1;
    }
    vs->last_seq = seq;
    return 0;
}

/* ListSecretVersionIds: newest first; without IncludeDeprecated only versions with a stage
 * (Secrets Manager's "deprecated" versions are the ones with none). */
static int op_list_versions(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", "MaxResults", "NextToken", "IncludeDeprecated",
                                       NULL};
    const char *tok;
    char query[CACHE_ARN_MAX + 4];
    cache_secret *s = malloc(sizeof(*s));
    versions_state vs = {.c = c, .max = 100};
    list_cursor cur = {0};
    int64_t max = 100;
    int present = 0, rc = -1;
    kb_err e;

    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) || get_int(c, in, "MaxResults", 1, 100, &max, &present) ||
        get_str(c, in, "NextToken", 1, CACHE_NEXT_TOKEN_MAX, 0, &tok, NULL) ||
        get_bool(c, in, "IncludeDeprecated", &vs.deprecated) || get_secret_id(c, in, s, 1))
        goto out;
    /* A token is bound to the secret and to IncludeDeprecated, as ListSecrets' to its query. */
    snprintf(query, sizeof(query), "%s|%d", s->arn, vs.deprecated);
    if (tok && token_parse(c, "ListSecretVersionIds", query, tok, &cur))
        goto out;
    if (tok && cur.id != s->id) {
        rc = fail(c, E_NEXTTOKEN, "The NextToken value is invalid.");
        goto out;
    }
    vs.s = s;
    vs.max = (size_t)max;
    vs.list = json_array();
    if (vs.list == NULL) {
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    e = cache_store_versions(c->api->store, s->id, tok ? cur.num : 0, versions_visit, &vs);
    if (e != KB_OK || vs.failed) {
        rc = fail_internal(c, e != KB_OK ? e : KB_ERR_NOMEM);
        goto out;
    }
    if (set(out, "Versions", vs.list)) {
        vs.list = NULL;
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    vs.list = NULL;
    if (vs.more) {
        list_cursor next = {.id = s->id, .num = vs.last_seq};
        if (set(out, "NextToken", token_make(c, "ListSecretVersionIds", query, &next))) {
            rc = fail_internal(c, KB_ERR_NOMEM);
            goto out;
        }
    }
    rc = arn_name(c, s, out);
out:
    json_decref(vs.list);
    free(s);
    return rc;
}

static int count_stage(void *arg, const char *vid, const char *stage)
{
    (void)vid;
    (void)stage;
    (*(size_t *)arg)++;
    return 0;
}

/* UpdateSecretVersionStage (the documented way to roll AWSCURRENT back): attach VersionStage to
 * MoveToVersionId, detach it from RemoveFromVersionId, or move it between them. A label that is
 * attached elsewhere moves only when RemoveFromVersionId names where it is; AWSCURRENT can only
 * be moved, never just removed, and moving it gives AWSPREVIOUS to the version it left. */
static int op_update_stage(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", "VersionStage", "RemoveFromVersionId",
                                       "MoveToVersionId", NULL};
    const char *stage, *from, *to;
    char at[CACHE_VERSION_ID_MAX + 1];
    cache_secret *s = malloc(sizeof(*s));
    int rc = -1, attached;
    kb_err e;

    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) ||
        get_str(c, in, "VersionStage", 1, CACHE_STAGE_MAX, 1, &stage, NULL) ||
        get_str(c, in, "RemoveFromVersionId", CACHE_TOKEN_MIN, CACHE_TOKEN_MAX, 0, &from, NULL) ||
        get_str(c, in, "MoveToVersionId", CACHE_TOKEN_MIN, CACHE_TOKEN_MAX, 0, &to, NULL))
        goto out;
    if (!tag_text_ok(stage)) {
        rc = fail(c, E_PARAM, "Invalid staging label in VersionStage");
        goto out;
    }
    if (from == NULL && to == NULL) {
        rc = fail(c, E_PARAM, "You must specify RemoveFromVersionId, MoveToVersionId or both.");
        goto out;
    }
    if (get_secret_id(c, in, s, 0))
        goto out;
    e = cache_store_stage_get(c->api->store, s->id, stage, at);
    if (e != KB_OK && e != KB_ERR_NOT_FOUND) {
        rc = fail_internal(c, e);
        goto out;
    }
    attached = e == KB_OK;
    if (from != NULL && (!attached || strcmp(at, from) != 0)) {
        rc = fail(c, E_PARAM,
                  "The staging label is not attached to the version in RemoveFromVersionId.");
        goto out;
    }
    if (to != NULL && attached && from == NULL && strcmp(at, to) != 0) {
        rc = fail(c, E_PARAM,
                  "The staging label is attached to another version: name that version in "
                  "RemoveFromVersionId to move it.");
        goto out;
    }
    if (to == NULL && strcmp(stage, STAGE_CURRENT) == 0) {
        rc = fail(c, E_PARAM,
                  "AWSCURRENT can't be removed, only moved: give MoveToVersionId as well.");
        goto out;
    }
    if (to != NULL) {
        size_t n = 0;
        e = cache_store_version_exists(c->api->store, s->id, to);
        if (e == KB_ERR_NOT_FOUND) {
            rc = fail(c, E_NOTFOUND, "Secrets Manager can't find the version in MoveToVersionId.");
            goto out;
        }
        if (e == KB_OK)
            e = cache_store_stages(c->api->store, s->id, to, count_stage, &n);
        if (e != KB_OK) {
            rc = fail_internal(c, e);
            goto out;
        }
        if (!(attached && strcmp(at, to) == 0) && n >= CACHE_STAGES_PER_VERSION) {
            rc = fail(c, "LimitExceededException", "A version can have at most %d staging labels.",
                      CACHE_STAGES_PER_VERSION);
            goto out;
        }
    }
    if (to == NULL) {
        e = cache_store_stage_remove(c->api->store, s->id, stage);
    } else if (!(attached && strcmp(at, to) == 0)) {
        e = cache_store_stage_set(c->api->store, s->id, stage, to);
        if (e == KB_OK && attached && strcmp(stage, STAGE_CURRENT) == 0)
            e = cache_store_stage_set(c->api->store, s->id, STAGE_PREVIOUS, at);
    } else {
        e = KB_OK; /* already there: nothing to do */
    }
    if (e == KB_OK) {
        s->changed_ms = c->now_ms;
        e = cache_store_secret_update(c->api->store, s);
    }
    if (e != KB_OK) {
        rc = fail_internal(c, e);
        goto out;
    }
    rc = arn_name(c, s, out);
out:
    free(s);
    return rc;
}

/* ---------------------------------------------------------------- GetRandomPassword */

#define PASSWORD_DEFAULT_LEN 32
#define PASSWORD_MAX_LEN 4096

/* A uniform index below n (1 <= n <= 65536) from the CSPRNG, by rejection. */
static int rand_below(size_t n, size_t *out)
{
    uint8_t b[2];
    uint32_t v, lim = 65536u - 65536u % (uint32_t)n;
    do {
        if (RAND_bytes(b, sizeof(b)) != 1)
            return -1;
        v = (uint32_t)b[0] << 8 | b[1];
    } while (v >= lim);
    kb_wipe(b, sizeof(b));
    *out = v % n;
    return 0;
}

/* Secrets Manager's character classes (GetRandomPassword); punctuation is its documented set. */
static const char *const PW_CLASSES[] = {"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz",
                                         "0123456789", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", " "};

static int op_random_password(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {
        "PasswordLength",     "ExcludeCharacters",       "ExcludeNumbers",
        "ExcludePunctuation", "ExcludeUppercase",        "ExcludeLowercase",
        "IncludeSpace",       "RequireEachIncludedType", NULL};
    const char *excl;
    int64_t len = PASSWORD_DEFAULT_LEN;
    int present, no_num, no_punct, no_upper, no_lower, space, require = 1, rc = -1;
    char alphabet[128], cls_chars[5][64];
    size_t na = 0, ncls = 0, cls_len[5] = {0};
    kb_secret *pw = NULL;
    const json_t *req = json_object_get(in, "RequireEachIncludedType");

    if (check_keys(c, in, keys) ||
        get_int(c, in, "PasswordLength", 1, PASSWORD_MAX_LEN, &len, &present) ||
        get_str(c, in, "ExcludeCharacters", 0, 4096, 0, &excl, NULL) ||
        get_bool(c, in, "ExcludeNumbers", &no_num) ||
        get_bool(c, in, "ExcludePunctuation", &no_punct) ||
        get_bool(c, in, "ExcludeUppercase", &no_upper) ||
        get_bool(c, in, "ExcludeLowercase", &no_lower) || get_bool(c, in, "IncludeSpace", &space))
        return -1;
    if (req != NULL && !json_is_null(req) && get_bool(c, in, "RequireEachIncludedType", &require))
        return -1;
    {
        const int include[5] = {!no_upper, !no_lower, !no_num, !no_punct, space};
        for (size_t k = 0; k < 5; k++) {
            if (!include[k])
                continue;
            for (const char *p = PW_CLASSES[k]; *p; p++) {
                if (excl != NULL && strchr(excl, *p) != NULL)
                    continue;
                cls_chars[ncls][cls_len[ncls]++] = *p;
                alphabet[na++] = *p;
            }
            /* A class emptied by ExcludeCharacters is not required; the space is never
             * required (it is an addition, not a class Secrets Manager counts). */
            if (cls_len[ncls] > 0 && k < 4)
                ncls++;
            else
                cls_len[ncls] = 0;
        }
    }
    if (na == 0)
        return fail(c, E_PARAM, "The ExcludeCharacters and Exclude* options leave no characters.");
    if (require && (size_t)len < ncls)
        return fail(c, E_PARAM,
                    "PasswordLength is too short to include a character of each included type.");
    if (kb_secret_new((size_t)len, &pw) != KB_OK)
        return fail_internal(c, KB_ERR_NOMEM);
    {
        char *p = (char *)kb_secret_data(pw);
        size_t n = (size_t)len, idx;
        /* One character of each required class first, the rest from the whole alphabet, then a
         * Fisher-Yates shuffle so the required ones land anywhere. */
        for (size_t i = 0; i < n; i++) {
            const char *from = require && i < ncls ? cls_chars[i] : alphabet;
            size_t m = require && i < ncls ? cls_len[i] : na;
            if (rand_below(m, &idx)) {
                rc = fail_internal(c, KB_ERR_CRYPTO);
                goto out;
            }
            p[i] = from[idx];
        }
        for (size_t i = n; i > 1; i--) {
            char t;
            if (rand_below(i, &idx)) {
                rc = fail_internal(c, KB_ERR_CRYPTO);
                goto out;
            }
            t = p[i - 1];
            p[i - 1] = p[idx];
            p[idx] = t;
        }
        rc = set(out, "RandomPassword", json_stringn(p, n)) ? fail_internal(c, KB_ERR_NOMEM) : 0;
    }
out:
    kb_secret_free(pw);
    kb_wipe(cls_chars, sizeof(cls_chars));
    kb_wipe(alphabet, sizeof(alphabet));
    return rc;
}

/* ---------------------------------------------------------------- resource policies */

#define POLICY_MAX 20480

/* A resource policy's structure (no IAM semantics): a JSON object with a Version string and a
 * Statement object or non-empty list of objects, each with Effect Allow or Deny and an Action or
 * NotAction. why gets the first problem. Returns 1 if the text is not JSON at all. */
static int policy_check(const char *text, size_t len, int *is_public, char *why, size_t why_len)
{
    json_t *doc = NULL, *st, *one;
    size_t i;
    int rc = 0;
    *is_public = 0;
    why[0] = '\0';
    if (kb_json_parse(text, len, POLICY_MAX, &doc, NULL, 0) != KB_OK)
        return 1;
    st = json_object_get(doc, "Statement");
    if (!json_is_string(json_object_get(doc, "Version"))) {
        snprintf(why, why_len, "the policy has no Version string");
        goto out;
    }
    if (json_is_object(st)) {
        one = st;
        st = NULL;
    } else if (!json_is_array(st) || json_array_size(st) == 0) {
        snprintf(why, why_len, "Statement must be an object or a non-empty list of objects");
        goto out;
    } else {
        one = NULL;
    }
    for (i = 0; one != NULL || (st != NULL && i < json_array_size(st)); i++) {
        json_t *e = one ? one : json_array_get(st, i);
        const char *eff = json_string_value(json_object_get(e, "Effect"));
        json_t *pr = json_object_get(e, "Principal");
        one = NULL;
        if (!json_is_object(e) || eff == NULL ||
            (strcmp(eff, "Allow") != 0 && strcmp(eff, "Deny") != 0)) {
            snprintf(why, why_len, "statement %zu: Effect must be Allow or Deny", i + 1);
            goto out;
        }
        if (json_object_get(e, "Action") == NULL && json_object_get(e, "NotAction") == NULL) {
            snprintf(why, why_len, "statement %zu: Action or NotAction is required", i + 1);
            goto out;
        }
        /* Public: an unconditioned Allow to every principal ("*" or {"AWS": "*"}). */
        if (strcmp(eff, "Allow") == 0 && json_object_get(e, "Condition") == NULL &&
            ((json_is_string(pr) && strcmp(json_string_value(pr), "*") == 0) ||
             (json_is_object(pr) && json_is_string(json_object_get(pr, "AWS")) &&
              strcmp(json_string_value(json_object_get(pr, "AWS")), "*") == 0)))
            *is_public = 1;
        if (st == NULL)
            break;
    }
    rc = 0;
out:
    json_decref(doc);
    return rc;
}

static int op_put_policy(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", "ResourcePolicy", "BlockPublicPolicy", NULL};
    const char *pol;
    size_t len = 0;
    char why[128];
    cache_secret *s = malloc(sizeof(*s));
    int block = 0, pub = 0, rc = -1;
    kb_err e;

    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) || get_str(c, in, "ResourcePolicy", 1, POLICY_MAX, 1, &pol, &len) ||
        get_bool(c, in, "BlockPublicPolicy", &block) || get_secret_id(c, in, s, 0))
        goto out;
    if (policy_check(pol, len, &pub, why, sizeof(why)) != 0 || why[0] != '\0') {
        rc = fail(c, "MalformedPolicyDocumentException", "The resource policy is malformed: %s",
                  why[0] ? why : "not a JSON object");
        goto out;
    }
    if (block && pub) {
        rc = fail(c, "PublicPolicyException",
                  "BlockPublicPolicy: the resource policy grants access to every principal.");
        goto out;
    }
    if ((e = cache_store_policy_set(c->api->store, s->id, pol)) != KB_OK) {
        rc = fail_internal(c, e);
        goto out;
    }
    rc = arn_name(c, s, out);
out:
    free(s);
    return rc;
}

static int op_delete_policy(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", NULL};
    cache_secret *s = malloc(sizeof(*s));
    int rc = -1;
    kb_err e;
    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) || get_secret_id(c, in, s, 0))
        goto out;
    if ((e = cache_store_policy_delete(c->api->store, s->id)) != KB_OK) {
        rc = fail_internal(c, e);
        goto out;
    }
    rc = arn_name(c, s, out);
out:
    free(s);
    return rc;
}

/* ValidateResourcePolicy checks the structure only (policy_check), not what IAM Access Analyzer
 * checks on AWS; a SecretId, when given, must name an existing secret. */
static int op_validate_policy(op_ctx *c, const json_t *in, json_t *out)
{
    static const char *const keys[] = {"SecretId", "ResourcePolicy", NULL};
    const char *pol, *sid;
    size_t len = 0;
    char why[128];
    int pub = 0, rc = -1;
    cache_secret *s = malloc(sizeof(*s));
    json_t *errs = NULL;

    if (s == NULL)
        return fail_internal(c, KB_ERR_NOMEM);
    if (check_keys(c, in, keys) || get_str(c, in, "ResourcePolicy", 1, POLICY_MAX, 1, &pol, &len) ||
        get_str(c, in, "SecretId", 1, CACHE_ARN_MAX, 0, &sid, NULL) ||
        (sid != NULL && get_secret_id(c, in, s, 1)))
        goto out;
    if (policy_check(pol, len, &pub, why, sizeof(why)) != 0) {
        rc = fail(c, "MalformedPolicyDocumentException",
                  "The resource policy is not a JSON object.");
        goto out;
    }
    errs = json_array();
    if (errs == NULL ||
        (why[0] &&
         json_array_append_new(errs, json_pack("{s:s,s:s}", "CheckName", "POLICY_STRUCTURE",
                                               "ErrorMessage", why)) != 0) ||
        set(out, "PolicyValidationPassed", json_boolean(why[0] == '\0')) ||
        set(out, "ValidationErrors", errs)) {
        errs = NULL;
        rc = fail_internal(c, KB_ERR_NOMEM);
        goto out;
    }
    errs = NULL;
    rc = 0;
out:
    json_decref(errs);
    free(s);
    return rc;
}

/* Rotation and replication belong to the data center here: keybridged writes new versions and
 * keybridge-sync copies them, so these answer a specific error instead of pretending. */
static int op_not_here(op_ctx *c, const json_t *in, const char *what)
{
    cache_secret s;
    if (json_object_get(in, "SecretId") != NULL && get_secret_id(c, in, &s, 0))
        return -1;
    return fail(c, E_REQUEST,
                "keybridge-cache does not support %s: secrets are rotated in keybridged and "
                "copied here by keybridge-sync.",
                what);
}

static int op_rotate(op_ctx *c, const json_t *in, json_t *out)
{
    (void)out;
    return op_not_here(c, in, "rotation (RotateSecret)");
}

static int op_cancel_rotate(op_ctx *c, const json_t *in, json_t *out)
{
    (void)out;
    return op_not_here(c, in, "rotation (CancelRotateSecret)");
}

static int op_replication(op_ctx *c, const json_t *in, json_t *out)
{
    (void)out;
    return op_not_here(c, in, "replication to other Regions");
}

/* ---------------------------------------------------------------- dispatch */

typedef int (*op_fn)(op_ctx *c, const json_t *in, json_t *out);

static const struct {
    const char *name;
    op_fn fn;
    int writes; /* 1: a write transaction (all or nothing); 0: a read transaction whose
                 * bookkeeping writes (LastAccessedDate, dropping a secret past its recovery
                 * window on sight) are kept whatever the outcome: cache_api_dispatch */
} OPS[] = {
    {"CreateSecret", op_create, 1},
    {"PutSecretValue", op_put_value, 1},
    {"UpdateSecret", op_update, 1},
    {"GetSecretValue", op_get_value, 0},
    {"BatchGetSecretValue", op_batch_get, 0},
    {"ListSecrets", op_list, 0},
    {"DescribeSecret", op_describe, 0},
    {"DeleteSecret", op_delete, 1},
    {"RestoreSecret", op_restore, 1},
    {"TagResource", op_tag, 1},
    {"UntagResource", op_untag, 1},
    {"GetResourcePolicy", op_policy, 0},
    {"PutResourcePolicy", op_put_policy, 1},
    {"DeleteResourcePolicy", op_delete_policy, 1},
    {"ValidateResourcePolicy", op_validate_policy, 0},
    {"ListSecretVersionIds", op_list_versions, 0},
    {"UpdateSecretVersionStage", op_update_stage, 1},
    {"GetRandomPassword", op_random_password, 0},
    {"RotateSecret", op_rotate, 0},
    {"CancelRotateSecret", op_cancel_rotate, 0},
    {"ReplicateSecretToRegions", op_replication, 0},
    {"RemoveRegionsFromReplication", op_replication, 0},
    {"StopReplicationToReplica", op_replication, 0},
};

static kb_err respond_json(cache_response *r, int status, json_t *body)
{
    char *s = kb_json_dump(body);
    KB_ENSURE(s != NULL, KB_ERR_NOMEM);
    r->status = status;
    r->body = s;
    r->body_len = strlen(s);
    return KB_OK;
}

static kb_err respond_error(cache_response *r, int status, const char *type, const char *msg)
{
    json_t *o = json_pack("{s:s, s:s}", "__type", type, "message", msg);
    kb_err rc;
    KB_ENSURE(o != NULL, KB_ERR_NOMEM);
    rc = respond_json(r, status, o);
    json_decref(o);
    return rc;
}

static kb_err begin_response(cache_response *out)
{
    memset(out, 0, sizeof(*out));
    return request_id(out->request_id);
}

/* cache_api_dispatch on a response begun already (its request id set). */
static kb_err dispatch(cache_api *a, const char *account, const char *operation,
                       const uint8_t *body, size_t len, int64_t now_ms, cache_response *out)
{
    op_ctx c;
    json_t *in = NULL, *res = NULL;
    char jerr[96];
    kb_err rc, e;
    size_t i;
    int locked = 0, in_tx = 0, failed;

    for (i = 0; i < KB_ARRAY_LEN(OPS) && strcmp(OPS[i].name, operation) != 0; i++)
        ;
    if (i == KB_ARRAY_LEN(OPS))
        return respond_error(out, 400, "UnknownOperationException", "Unknown operation");
    /* \u0000 is valid JSON and Secrets Manager takes it in a SecretString; anywhere else it is
     * refused here, so every other string can be used as C text. */
    e = kb_json_parse_flags(body, len, CACHE_BODY_MAX, KB_JSON_ALLOW_NUL, &in, jerr, sizeof(jerr));
    if (e == KB_ERR_TOO_LARGE && len > CACHE_BODY_MAX)
        return respond_error(out, 413, "RequestEntityTooLargeException", "Request body too large");
    if (e != KB_OK)
        return respond_error(out, 400, "SerializationException", jerr);
    {
        static const char *const nul_ok[] = {"SecretString", NULL};
        const char *bad = kb_json_first_nul(in, nul_ok);
        if (bad != NULL) {
            char msg[128];
            snprintf(msg, sizeof(msg), "Invalid character (NUL) in parameter %.64s", bad);
            json_decref(in);
            return respond_error(out, 400, E_PARAM, msg);
        }
    }

    memset(&c, 0, sizeof(c));
    c.api = a;
    c.account = account;
    c.now_ms = now_ms;
    kb_dbuf_init(&c.body, CACHE_RESPONSE_MAX);
    res = json_object();
    if (res == NULL) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    pthread_mutex_lock(&a->lock);
    locked = 1;
    if (!OPS[i].writes) {
        /* One snapshot and one lock for all the statements of a read (a ListSecrets page runs
         * two per entry); a LastAccessedDate update inside it upgrades it (touch). */
        if ((e = cache_store_begin_read(a->store)) != KB_OK) {
            failed = fail_internal(&c, e);
            goto done;
        }
        in_tx = 1;
    } else {
        if ((e = cache_store_begin(a->store)) != KB_OK) {
            failed = fail_internal(&c, e);
            goto done;
        }
        in_tx = 1;
        /* Secrets past their recovery window go, at most once a minute (AWS: "background task
         * with low priority"); find_secret also drops them on sight. */
        if (now_ms - a->last_purge_ms > 60000 || now_ms < a->last_purge_ms) {
            if (cache_store_purge_expired(a->store, now_ms) == KB_OK)
                a->last_purge_ms = now_ms;
        }
    }
    failed = OPS[i].fn(&c, in, res);
    if (in_tx && !OPS[i].writes) {
        /* A read's only writes are bookkeeping (LastAccessedDate, dropping a secret past its
         * recovery window on sight): kept whatever the outcome, as they were before reads ran
         * in a transaction; failing to keep them does not fail the read. */
        if (cache_store_commit(a->store) != KB_OK)
            kb_log(KB_LOG_WARN, "read_commit_failed", "op", operation, NULL);
    } else if (in_tx) {
        if (failed) {
            cache_store_rollback(a->store);
        } else if ((e = cache_store_commit(a->store)) != KB_OK) {
            /* Not acknowledged: the client sees an error and may retry with its token. */
            failed = fail_internal(&c, e);
        }
    }
done:
    if (locked)
        pthread_mutex_unlock(&a->lock);
    if (failed) {
        kb_log(KB_LOG_INFO, "request_failed", "op", operation, "error", c.etype, "account", account,
               NULL);
        rc = respond_error(out, c.status ? c.status : 500,
                           c.etype ? c.etype : "InternalServiceError", c.emsg);
    } else if (c.raw) {
        /* The body's block is plain malloc: cache_response_free wipes and frees it. */
        out->status = 200;
        out->body = (char *)c.body.p;
        out->body_len = c.body.len;
        kb_dbuf_init(&c.body, 0);
        rc = KB_OK;
    } else {
        rc = respond_json(out, 200, res);
    }
out:
    kb_dbuf_free(&c.body);
    json_decref(in);
    json_decref(res);
    return rc;
}

kb_err cache_api_dispatch(cache_api *a, const char *account, const char *operation,
                          const uint8_t *body, size_t len, int64_t now_ms, cache_response *out)
{
    KB_ENSURE_REF(a);
    KB_ENSURE_REF(account);
    KB_ENSURE_REF(operation);
    KB_ENSURE_REF(out);
    KB_GUARD(begin_response(out));
    return dispatch(a, account, operation, body, len, now_ms, out);
}

/* ---------------------------------------------------------------- HTTP + SigV4 */

static kb_err lookup(void *arg, const char *akid, const kb_secret **key, void **user)
{
    const cache_api *a = arg;
    const char *account = NULL;
    if (a->creds == NULL)
        return KB_ERR_NOT_FOUND;
    KB_GUARD(cache_creds_lookup(a->creds, akid, key, &account));
    *user = (void *)account;
    return KB_OK;
}

static const char *header(const cache_request *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->n_headers; i++) {
        if (r->headers[i].name_len == n && strncasecmp(r->headers[i].name, name, n) == 0)
            return r->headers[i].value;
    }
    return NULL;
}

static size_t header_count(const cache_request *r, const char *name)
{
    size_t n = strlen(name), k = 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (r->headers[i].name_len == n && strncasecmp(r->headers[i].name, name, n) == 0)
            k++;
    }
    return k;
}

static kb_err auth_error(cache_response *out, kb_err e, const char *why, const cache_request *r,
                         time_t now)
{
    if (e == KB_ERR_NOT_FOUND)
        return respond_error(out, 400, "UnrecognizedClientException",
                             "The security token included in the request is invalid.");
    if (e == KB_ERR_TIMEOUT) {
        char msg[200], nowd[17], lim[17];
        const char *d = header(r, "x-amz-date");
        time_t t = 0;
        int late;
        /* The date is echoed only once it parsed as a date: never raw client bytes. */
        if (d == NULL || kb_sigv4_parse_date(d, strlen(d), &t) != KB_OK ||
            kb_sigv4_format_date(now, nowd) != KB_OK)
            return respond_error(out, 400, "InvalidSignatureException", "Signature expired");
        late = t < now;
        if (kb_sigv4_format_date(late ? now - CACHE_SKEW_MAX : now + CACHE_SKEW_MAX, lim) != KB_OK)
            return respond_error(out, 400, "InvalidSignatureException", "Signature expired");
        if (late)
            snprintf(msg, sizeof(msg),
                     "Signature expired: %s is now earlier than %s (%s - 15 min.)", d, lim, nowd);
        else
            snprintf(msg, sizeof(msg),
                     "Signature not yet current: %s is still later than %s (%s + 15 min.)", d, lim,
                     nowd);
        return respond_error(out, 400, "InvalidSignatureException", msg);
    }
    if (e == KB_ERR_INVALID)
        return respond_error(out, 400, "IncompleteSignatureException",
                             why ? why : "The request signature is malformed.");
    if (e == KB_ERR_AUTH)
        return respond_error(out, 400, "InvalidSignatureException",
                             why ? why
                                 : "The request signature we calculated does not match the "
                                   "signature you provided. Check your AWS Secret Access Key and "
                                   "signing method. Consult the service documentation for "
                                   "details.");
    kb_log(KB_LOG_ERROR, "auth_internal_error", "err", kb_err_str(e), NULL);
    return respond_error(out, 500, "InternalServiceError", "An error occurred on the server side.");
}

kb_err cache_api_handle(cache_api *a, const cache_request *r, cache_response *out)
{
    static const char *const required[] = {"host", "x-amz-date", "x-amz-target", "content-type"};
    static const char prefix[] = "secretsmanager.";
    kb_sigv4_request sr;
    kb_sigv4_verify_opts vo;
    char region[64] = "";
    void *user = NULL;
    const char *why = NULL, *target, *ctype;
    time_t now;
    kb_err e;

    KB_ENSURE_REF(a);
    KB_ENSURE_REF(r);
    KB_ENSURE_REF(out);
    KB_GUARD(begin_response(out));
    now = (time_t)(r->now_ms / 1000);
    if (r->body_len > CACHE_BODY_MAX)
        return respond_error(out, 413, "RequestEntityTooLargeException", "Request body too large");
    if (r->method == NULL || strcmp(r->method, "POST") != 0 || r->path == NULL ||
        strcmp(r->path, "/") != 0)
        return respond_error(out, 404, "UnknownOperationException",
                             "Only POST / is served (AWS JSON 1.1 protocol)");
    if (header_count(r, "authorization") == 0)
        return respond_error(out, 400, "MissingAuthenticationTokenException",
                             "Missing Authentication Token");

    memset(&sr, 0, sizeof(sr));
    sr.method = r->method;
    sr.path = r->path;
    sr.query = r->query ? r->query : "";
    sr.headers = r->headers;
    sr.n_headers = r->n_headers;
    sr.body = r->body;
    sr.body_len = r->body_len;
    memset(&vo, 0, sizeof(vo));
    vo.lookup = lookup;
    vo.lookup_arg = a;
    vo.key_cache = a->keys;
    vo.service = "secretsmanager";
    vo.required_signed = required;
    vo.n_required = KB_ARRAY_LEN(required);
    vo.now = now;
    vo.max_skew = CACHE_SKEW_MAX;
    e = kb_sigv4_verify(&sr, &vo, region, &user, &why);
    if (e != KB_OK)
        return auth_error(out, e, why, r, now);
    if (strcmp(region, a->region) != 0)
        return respond_error(out, 400, "InvalidSignatureException",
                             "Credential should be scoped to a valid region.");

    /* Signed, so these headers are authentic; exactly one of each. */
    target = header(r, "x-amz-target");
    ctype = header(r, "content-type");
    if (target == NULL || header_count(r, "x-amz-target") != 1 ||
        strncmp(target, prefix, sizeof(prefix) - 1) != 0)
        return respond_error(out, 400, "UnknownOperationException", "Unknown operation");
    if (ctype == NULL || header_count(r, "content-type") != 1 ||
        strncmp(ctype, "application/x-amz-json-1.1", 26) != 0 ||
        (ctype[26] != '\0' && ctype[26] != ';'))
        return respond_error(out, 400, "SerializationException",
                             "Content-Type must be application/x-amz-json-1.1");
    /* out was begun above: one request id per response. */
    return dispatch(a, (const char *)user, target + sizeof(prefix) - 1, r->body, r->body_len,
                    r->now_ms, out);
}

void cache_response_free(cache_response *r)
{
    if (r == NULL)
        return;
    kb_json_free_str(r->body);
    r->body = NULL;
    r->body_len = 0;
}

kb_err cache_api_new(const cache_api_opts *o, cache_api **out)
{
    cache_api *a;
    kb_err e;
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(o->store);
    KB_ENSURE_REF(o->region);
    KB_ENSURE_REF(out);
    KB_ENSURE(strlen(o->region) > 0 && strlen(o->region) < 64, KB_ERR_CONFIG);
    a = calloc(1, sizeof(*a));
    KB_ENSURE(a != NULL, KB_ERR_NOMEM);
    snprintf(a->region, sizeof(a->region), "%s", o->region);
    a->store = o->store;
    a->creds = o->creds;
    e = kb_sigv4_key_cache_new(CACHE_SIGNING_KEYS, &a->keys);
    if (e != KB_OK) {
        free(a);
        return e;
    }
    if (pthread_mutex_init(&a->lock, NULL) != 0) {
        kb_sigv4_key_cache_free(a->keys);
        free(a);
        return KB_ERR_INTERNAL;
    }
    *out = a;
    return KB_OK;
}

void cache_api_free(cache_api *a)
{
    if (a == NULL)
        return;
    pthread_mutex_destroy(&a->lock);
    kb_sigv4_key_cache_free(a->keys);
    free(a);
}
