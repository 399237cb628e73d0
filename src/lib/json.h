/* json.h - jansson, set up for secrets and strict input.
 *
 * kb_json_init() installs allocator hooks that wipe every block jansson frees, so a JSON tree that
 * held secret content leaves nothing behind in the heap. Call it once, before any jansson use.
 *
 * kb_json_parse() parses a bounded buffer strictly: size limit, duplicate keys rejected, UTF-8
 * validated, nothing after the value, and a top-level object required.
 */
#ifndef KB_JSON_H
#define KB_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "buf.h"
#include "err.h"

void kb_json_init(void);

/* Parse buf[0..len) as a JSON object of at most max bytes and at most KB_JSON_DEPTH_MAX deep.
 * On error, err (if not NULL) gets a short reason that never quotes the input. */
#define KB_JSON_DEPTH_MAX 32
KB_WUR kb_err kb_json_parse(const void *buf, size_t len, size_t max, json_t **out, char *err,
                            size_t err_len);
/* As kb_json_parse, with KB_JSON_ALLOW_NUL: strings may contain \u0000 (json_string_length then
 * differs from strlen: the caller must check every string it uses as C text, see
 * kb_json_first_nul). */
#define KB_JSON_ALLOW_NUL 1u
KB_WUR kb_err kb_json_parse_flags(const void *buf, size_t len, size_t max, unsigned flags,
                                  json_t **out, char *err, size_t err_len);
/* The key of the first member of obj (an object) holding, at any depth, a string with an
 * embedded NUL; members named in skip (NULL-terminated, may be NULL) are not looked at. NULL when
 * there is none. */
const char *kb_json_first_nul(const json_t *obj, const char *const *skip);

/* KB_ERR_INVALID if obj has a key not in the NULL-terminated allowed list (NULL: no key is
 * allowed); *bad names it. */
KB_WUR kb_err kb_json_only_keys(const json_t *obj, const char *const *allowed, const char **bad);

/* Serialize compactly into a malloc'd string. kb_json_free_str wipes and frees any malloc'd
 * string (this one, json_dumps' output, or another module's); plain free() is also safe. */
char *kb_json_dump(const json_t *v);
void kb_json_free_str(char *s);

/* Writing JSON straight into a kb_dbuf, for responses too large to build as a jansson tree
 * cheaply (a ListSecrets page). kb_json_put_str appends s[0..n) as a JSON string, escaped
 * byte for byte as jansson's json_dumps does (\" \\ \b \f \n \r \t, other control characters
 * as \u00XX, UTF-8 kept as is, '/' not escaped); KB_ERR_INVALID (nothing appended) when s is not
 * valid UTF-8, as jansson refuses it. kb_json_put_ms appends epoch milliseconds as fractional
 * seconds ("1764962400.123", "1764962400.0"): the shortest decimal that parses to the same
 * double as the json_real(ms / 1000.0) jansson would print with 17 digits. */
KB_WUR kb_err kb_json_put_str(kb_dbuf *b, const char *s, size_t n);
KB_WUR kb_err kb_json_put_ms(kb_dbuf *b, int64_t ms);
/* A new JSON string holding the standard base64 (RFC 4648 4) of p[0..n); the temporary encoding
 * is wiped, and so is the string when the tree is freed (kb_json_init). NULL on failure. */
json_t *kb_json_b64(const void *p, size_t n);

#endif
