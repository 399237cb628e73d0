/* model.c - validation rules of the data model (see model.h). */
#include "model.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/utf8.h"

static bool name_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '+' || c == '=' || c == '@' || c == '-';
}

static bool key_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

kb_err model_name_check(const char *name)
{
    size_t n;
    KB_ENSURE_REF(name);
    n = strnlen(name, MODEL_NAME_MAX + 1);
    KB_ENSURE(n > 0, KB_ERR_INVALID);
    KB_ENSURE(n <= MODEL_NAME_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(name[0] != '.', KB_ERR_INVALID);
    for (size_t i = 0; i < n; i++)
        KB_ENSURE(name_char((unsigned char)name[i]), KB_ERR_INVALID);
    return KB_OK;
}

kb_err model_app_name_check(const char *name)
{
    KB_GUARD(model_name_check(name));
    KB_ENSURE(strlen(name) <= MODEL_APP_NAME_MAX, KB_ERR_TOO_LARGE);
    return KB_OK;
}

/* Valid UTF-8 per RFC 3629 section 4 (no overlongs, no surrogates, <= U+10FFFF) and no control
 * characters (C0, DEL, C1: they confuse terminals and log viewers). */
static kb_err utf8_text_check(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        uint32_t cp = 0;
        size_t k = kb_utf8_next(p + i, len - i, &cp);
        KB_ENSURE(k > 0, KB_ERR_INVALID);
        KB_ENSURE(cp >= 0x20 && cp != 0x7f && !(cp >= 0x80 && cp <= 0x9f), KB_ERR_INVALID);
        i += k;
    }
    return KB_OK;
}

kb_err model_description_check(const char *desc)
{
    size_t n;
    if (desc == NULL)
        return KB_OK;
    n = strnlen(desc, MODEL_DESCRIPTION_MAX + 1);
    KB_ENSURE(n <= MODEL_DESCRIPTION_MAX, KB_ERR_TOO_LARGE);
    return utf8_text_check(desc, n);
}

kb_err model_content_len_check(size_t len, size_t configured_max, bool cloud_sync)
{
    size_t max = configured_max ? configured_max : MODEL_CONTENT_MAX_DEFAULT;
    KB_ENSURE(len <= max, KB_ERR_TOO_LARGE);
    KB_ENSURE(!cloud_sync || len <= MODEL_CLOUD_CONTENT_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(!cloud_sync || len > 0, KB_ERR_INVALID);
    return KB_OK;
}

kb_err model_metadata_key_check(const char *key)
{
    size_t n;
    KB_ENSURE_REF(key);
    n = strnlen(key, MODEL_METADATA_KEY_MAX + 1);
    KB_ENSURE(n > 0, KB_ERR_INVALID);
    KB_ENSURE(n <= MODEL_METADATA_KEY_MAX, KB_ERR_TOO_LARGE);
    for (size_t i = 0; i < n; i++)
        KB_ENSURE(key_char((unsigned char)key[i]), KB_ERR_INVALID);
    return KB_OK;
}

kb_err model_metadata_value_check(const char *value, size_t len)
{
    KB_ENSURE_REF(value);
    KB_ENSURE(len <= MODEL_METADATA_VALUE_MAX, KB_ERR_TOO_LARGE);
    return utf8_text_check(value, len);
}

bool model_metadata_key_reserved(const char *key)
{
    /* What api.c's keywhiz_json renders before the flattened metadata. */
    static const char *const fixed[] = {"name",         "secret",     "secretLength", "checksum",
                                        "creationDate", "updateDate", "expiry",       "version"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (strcasecmp(key, fixed[i]) == 0)
            return true;
    return false;
}

kb_err model_metadata_check(const json_t *obj)
{
    const char *k, *seen[MODEL_METADATA_ENTRIES_MAX];
    size_t n = 0;
    json_t *v;
    KB_ENSURE_REF(obj);
    KB_ENSURE(json_is_object(obj), KB_ERR_INVALID);
    KB_ENSURE(json_object_size(obj) <= MODEL_METADATA_ENTRIES_MAX, KB_ERR_TOO_LARGE);
    json_object_foreach((json_t *)obj, k, v)
    {
        /* jansson keys may hold NUL only with JSON_ALLOW_NUL, which we never pass. */
        KB_GUARD(model_metadata_key_check(k));
        KB_ENSURE(!model_metadata_key_reserved(k), KB_ERR_INVALID);
        for (size_t i = 0; i < n; i++)
            KB_ENSURE(strcasecmp(seen[i], k) != 0, KB_ERR_INVALID);
        seen[n++] = k;
        KB_ENSURE(json_is_string(v), KB_ERR_INVALID);
        KB_GUARD(model_metadata_value_check(json_string_value(v), json_string_length(v)));
    }
    return KB_OK;
}

kb_err model_metadata_canon(const char *text, char **out)
{
    json_t *obj = NULL;
    json_error_t je;
    kb_err rc = KB_OK;
    size_t n;

    KB_ENSURE_REF(out);
    *out = NULL;
    if (text == NULL || text[0] == '\0')
        text = "{}";
    n = strnlen(text, MODEL_METADATA_JSON_MAX + 1);
    KB_ENSURE(n <= MODEL_METADATA_JSON_MAX, KB_ERR_TOO_LARGE);
    obj = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
    KB_ENSURE(obj != NULL, KB_ERR_INVALID);
    KB_GUARD_OUT(rc, model_metadata_check(obj));
    *out = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    KB_ENSURE_OUT(rc, *out != NULL, KB_ERR_NOMEM);
out:
    json_decref(obj);
    return rc;
}

kb_err model_spiffe_id_check(const char *id)
{
    static const char scheme[] = "spiffe://";
    size_t n;
    const char *td;
    KB_ENSURE_REF(id);
    n = strnlen(id, MODEL_SPIFFE_ID_MAX + 1);
    KB_ENSURE(n <= MODEL_SPIFFE_ID_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(n > sizeof(scheme) - 1 && strncmp(id, scheme, sizeof(scheme) - 1) == 0,
              KB_ERR_INVALID);
    td = id + sizeof(scheme) - 1;
    KB_ENSURE(td[0] != '/', KB_ERR_INVALID);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        KB_ENSURE(c > 0x20 && c < 0x7f, KB_ERR_INVALID);
    }
    return KB_OK;
}

const char *model_spiffe_path(const char *id)
{
    static const char scheme[] = "spiffe://";
    const char *slash;
    if (id == NULL || strncmp(id, scheme, sizeof(scheme) - 1) != 0)
        return NULL;
    slash = strchr(id + sizeof(scheme) - 1, '/');
    return slash ? slash : "";
}

kb_err model_actor_check(const char *actor)
{
    KB_ENSURE_REF(actor);
    if (strcmp(actor, MODEL_ACTOR_BOOTSTRAP) == 0 || strcmp(actor, MODEL_ACTOR_RECOVER) == 0)
        return KB_OK;
    return model_spiffe_id_check(actor);
}

bool model_path_has_prefix(const char *path, const char *prefix)
{
    size_t plen;
    if (path == NULL || prefix == NULL || prefix[0] != '/')
        return false;
    plen = strlen(prefix);
    while (plen > 0 && prefix[plen - 1] == '/')
        plen--;
    if (plen == 0)
        return true; /* "/" : every path */
    if (strncmp(path, prefix, plen) != 0)
        return false;
    return path[plen] == '\0' || path[plen] == '/';
}

kb_err model_cloud_prefix_check(const char *prefix)
{
    size_t n;
    KB_ENSURE_REF(prefix);
    n = strnlen(prefix, MODEL_SPIFFE_ID_MAX + 1);
    KB_ENSURE(n <= MODEL_SPIFFE_ID_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(n >= 1 && prefix[0] == '/', KB_ERR_INVALID);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)prefix[i];
        KB_ENSURE(c > 0x20 && c < 0x7f, KB_ERR_INVALID);
    }
    return KB_OK;
}

bool model_spiffe_is_cloud(const char *spiffe_id, const char *const *prefixes)
{
    const char *path = model_spiffe_path(spiffe_id);
    if (path == NULL || prefixes == NULL)
        return false;
    for (size_t i = 0; prefixes[i] != NULL; i++)
        if (model_path_has_prefix(path, prefixes[i]))
            return true;
    return false;
}

kb_err model_client_flags_check(bool admin, bool cloud)
{
    KB_ENSURE(!(admin && cloud), KB_ERR_INVALID);
    return KB_OK;
}
