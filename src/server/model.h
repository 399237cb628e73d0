/* model.h - validation rules of keybridged's data model: names, descriptions, metadata, content
 * sizes, and the SPIFFE-ID-derived client flags. Pure functions, no storage.
 *
 * Every limit is a named constant here and is tested at, below and above (tests/unit/test_model.c).
 */
#ifndef KB_SERVER_MODEL_H
#define KB_SERVER_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib/err.h"
#include "lib/names.h"

/* Secret, group and application names: 1..255 of A-Z a-z 0-9 _ . + = @ -, not starting with '.'
 * (so no ".", "..", or hidden files when a sink writes the name as a file name). */
#define MODEL_NAME_MAX KB_NAME_MAX
/* Application names (a client's app_name) are shorter: keybridge/<app>/<name> must fit Secrets
 * Manager's 512-character names (lib/names.h). */
#define MODEL_APP_NAME_MAX KB_APP_NAME_MAX
#define MODEL_DESCRIPTION_MAX 1024
/* Default content limit, and the hard cap for cloud_sync secrets (AWS Secrets Manager's
 * SecretString/SecretBinary limit is 65,536 bytes). */
#define MODEL_CONTENT_MAX_DEFAULT 65536
#define MODEL_CLOUD_CONTENT_MAX 65536
#define MODEL_METADATA_ENTRIES_MAX 64
#define MODEL_METADATA_KEY_MAX 128
#define MODEL_METADATA_VALUE_MAX 1024
/* Metadata JSON text as stored: 64 * (128 + 1024*6 escaped + punctuation) fits well below this. */
#define MODEL_METADATA_JSON_MAX (512 * 1024)
/* SPIFFE IDs: the spec's URI limit (standards/SPIFFE-ID.md, 2048 bytes). */
#define MODEL_SPIFFE_ID_MAX 2048
#define MODEL_ACTOR_BOOTSTRAP "bootstrap"
/* Actor of `keybridged recover-admin` (break-glass on the server host). */
#define MODEL_ACTOR_RECOVER "recover-admin"

KB_WUR kb_err model_name_check(const char *name);
/* A name (model_name_check) of at most MODEL_APP_NAME_MAX characters: KB_ERR_TOO_LARGE past it. */
KB_WUR kb_err model_app_name_check(const char *name);
/* NULL is accepted (no description). */
KB_WUR kb_err model_description_check(const char *desc);
/* configured_max 0 = MODEL_CONTENT_MAX_DEFAULT. A cloud_sync secret's content is 1..65536 bytes:
 * KB_ERR_INVALID when empty (Secrets Manager's SecretBinary/SecretString need at least 1 byte). */
KB_WUR kb_err model_content_len_check(size_t len, size_t configured_max, bool cloud_sync);

KB_WUR kb_err model_metadata_key_check(const char *key);
/* value[0..len): valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF), no C0, DEL
 * or C1 control characters, at most MODEL_METADATA_VALUE_MAX bytes. */
KB_WUR kb_err model_metadata_value_check(const char *value, size_t len);
/* True if key equals, ignoring ASCII case, a fixed field of Keywhiz's secret shape (name, secret,
 * secretLength, checksum, creationDate, updateDate, expiry, version). Keywhiz clients written in
 * Go (keysync) decode keys case-insensitively with the last key winning, so a metadata key
 * `Secret` flattened beside `secret` would replace the content they write. */
bool model_metadata_key_reserved(const char *key);
/* obj must be a JSON object of at most MODEL_METADATA_ENTRIES_MAX string values, whose keys are
 * valid, not reserved (model_metadata_key_reserved), and distinct ignoring ASCII case. */
KB_WUR kb_err model_metadata_check(const json_t *obj);
/* Parse and check metadata text (NULL or "" = {}), and return its canonical form (compact,
 * sorted keys; malloc'd, caller frees). */
KB_WUR kb_err model_metadata_canon(const char *text, char **out);

/* Minimal structural check of a SPIFFE ID for storage ("spiffe://" + non-empty trust domain,
 * printable ASCII, bounded). Full validation is lib/spiffe_id.h's job at the TLS layer. */
KB_WUR kb_err model_spiffe_id_check(const char *id);
/* The path part of a SPIFFE ID ("" if it has none); NULL if id is not spiffe://... */
const char *model_spiffe_path(const char *id);
/* A SPIFFE ID or "bootstrap". */
KB_WUR kb_err model_actor_check(const char *actor);

/* True if path starts with prefix on a segment boundary: "/lambda/" and "/lambda" both match
 * "/lambda" and "/lambda/fn", never "/lambdax". A trailing '/' in prefix is ignored; "/" matches
 * every path. A prefix not starting with '/' never matches (model_cloud_prefix_check refuses it
 * at configuration time). */
bool model_path_has_prefix(const char *path, const char *prefix);
KB_WUR kb_err model_cloud_prefix_check(const char *prefix);
/* Whether a SPIFFE ID is a cloud identity under the NULL-terminated prefixes (NULL = none). */
bool model_spiffe_is_cloud(const char *spiffe_id, const char *const *prefixes);
/* Admin and cloud are mutually exclusive: KB_ERR_INVALID if both. */
KB_WUR kb_err model_client_flags_check(bool admin, bool cloud);

#endif
