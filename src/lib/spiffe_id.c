/* spiffe_id.c - SPIFFE ID parsing (SPIFFE-ID.md sections 2, 2.1, 2.2, 2.3). */
#include "spiffe_id.h"

#include <string.h>

#define SCHEME "spiffe://"
#define SCHEME_LEN (sizeof(SCHEME) - 1)

/* Trust domain: a-z 0-9 . _ - (SPIFFE-ID.md 2.1; the lowercase-only rule makes the ID's bytes
 * its identity, so comparisons never need case folding). */
static int td_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* Path segments: A-Z a-z 0-9 . _ - (SPIFFE-ID.md 2.2). */
static int path_char_ok(unsigned char c)
{
    return td_char_ok(c) || (c >= 'A' && c <= 'Z');
}

/* The reason for a character that is not allowed, by what the character would mean in a URI
 * (RFC 3986 section 3), so an operator sees which rule was broken. */
static const char *td_char_why(unsigned char c)
{
    switch (c) {
    case '@':
        return "trust domain has userinfo ('@' is not allowed)";
    case ':':
        return "trust domain has a port (':' is not allowed)";
    case '?':
        return "query is not allowed";
    case '#':
        return "fragment is not allowed";
    case '%':
        return "percent-encoding is not allowed";
    default:
        break;
    }
    if (c >= 'A' && c <= 'Z')
        return "trust domain has an uppercase character (must be lowercase)";
    return "trust domain has an invalid character (allowed: a-z 0-9 . _ -)";
}

static const char *path_char_why(unsigned char c)
{
    switch (c) {
    case '?':
        return "query is not allowed";
    case '#':
        return "fragment is not allowed";
    case '%':
        return "percent-encoding is not allowed";
    default:
        return "path has an invalid character (allowed: A-Z a-z 0-9 . _ -)";
    }
}

static kb_err fail(const char **why, const char *reason, kb_err code)
{
    if (why)
        *why = reason;
    return code;
}

/* Validate the trust domain s[0..len), which ends at the first '/' (or the end). */
static kb_err check_td(const char *s, size_t len, const char **why)
{
    if (len == 0)
        return fail(why, "trust domain is empty", KB_ERR_INVALID);
    for (size_t i = 0; i < len; i++) {
        if (!td_char_ok((unsigned char)s[i]))
            return fail(why, td_char_why((unsigned char)s[i]), KB_ERR_INVALID);
    }
    if (len > SPIFFE_TD_MAX)
        return fail(why, "trust domain is longer than 255 bytes", KB_ERR_TOO_LARGE);
    return KB_OK;
}

/* Validate a path s[0..len): empty, or one or more "/segment". */
static kb_err check_path(const char *s, size_t len, const char **why)
{
    size_t i = 0;
    while (i < len) {
        /* s[i] is a '/' here: the trust domain ends at the first '/', and so does each segment. */
        size_t start = ++i;
        while (i < len && s[i] != '/') {
            if (!path_char_ok((unsigned char)s[i]))
                return fail(why, path_char_why((unsigned char)s[i]), KB_ERR_INVALID);
            i++;
        }
        size_t seg = i - start;
        if (seg == 0) {
            /* "/a/" ends with an empty segment: name the trailing slash, the likelier mistake. */
            if (i == len)
                return fail(why, "path has a trailing '/'", KB_ERR_INVALID);
            return fail(why, "path has an empty segment ('//')", KB_ERR_INVALID);
        }
        if (seg == 1 && s[start] == '.')
            return fail(why, "path has a '.' segment", KB_ERR_INVALID);
        if (seg == 2 && s[start] == '.' && s[start + 1] == '.')
            return fail(why, "path has a '..' segment", KB_ERR_INVALID);
    }
    return KB_OK;
}

static int has_prefix_nocase(const char *s, size_t len, const char *prefix, size_t plen)
{
    if (len < plen)
        return 0;
    for (size_t i = 0; i < plen; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != prefix[i])
            return 0;
    }
    return 1;
}

kb_err spiffe_id_parse(const char *s, size_t len, spiffe_id *out, const char **why)
{
    KB_ENSURE_REF(out);
    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return fail(why, "SPIFFE ID is missing", KB_ERR_NULL);
    if (len == 0)
        return fail(why, "SPIFFE ID is empty", KB_ERR_INVALID);
    if (len > SPIFFE_ID_MAX)
        return fail(why, "SPIFFE ID is longer than 2048 bytes", KB_ERR_TOO_LARGE);
    if (len < SCHEME_LEN || memcmp(s, SCHEME, SCHEME_LEN) != 0) {
        /* RFC 3986 schemes are case-insensitive, but SPIFFE IDs are compared as bytes: only the
         * canonical lowercase spelling is accepted. */
        if (has_prefix_nocase(s, len, SCHEME, SCHEME_LEN))
            return fail(why, "scheme must be lowercase 'spiffe://'", KB_ERR_INVALID);
        return fail(why, "scheme is not 'spiffe://'", KB_ERR_INVALID);
    }

    const char *td = s + SCHEME_LEN;
    size_t rest = len - SCHEME_LEN;
    const char *slash = memchr(td, '/', rest);
    size_t td_len = slash ? (size_t)(slash - td) : rest;
    KB_GUARD(check_td(td, td_len, why));
    KB_GUARD(check_path(td + td_len, rest - td_len, why));

    memcpy(out->str, s, len);
    out->str[len] = '\0';
    memcpy(out->td, td, td_len);
    out->td[td_len] = '\0';
    out->len = len;
    out->path_off = SCHEME_LEN + td_len;
    return KB_OK;
}

kb_err spiffe_id_parse_str(const char *s, spiffe_id *out, const char **why)
{
    KB_ENSURE_REF(out);
    if (s == NULL) {
        memset(out, 0, sizeof(*out));
        return fail(why, "SPIFFE ID is missing", KB_ERR_NULL);
    }
    /* strnlen bounds the scan: anything longer than the limit is refused anyway. */
    return spiffe_id_parse(s, strnlen(s, SPIFFE_ID_MAX + 1), out, why);
}

kb_err spiffe_td_validate(const char *s, size_t len, const char **why)
{
    if (s == NULL)
        return fail(why, "trust domain is missing", KB_ERR_NULL);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '/')
            return fail(why, "trust domain has an invalid character (allowed: a-z 0-9 . _ -)",
                        KB_ERR_INVALID);
    }
    return check_td(s, len, why);
}

kb_err spiffe_id_from_parts(const char *td, const char *path, spiffe_id *out, const char **why)
{
    KB_ENSURE_REF(out);
    memset(out, 0, sizeof(*out));
    if (td == NULL || path == NULL)
        return fail(why, "SPIFFE ID is missing", KB_ERR_NULL);
    size_t td_len = strnlen(td, SPIFFE_ID_MAX + 1);
    size_t path_len = strnlen(path, SPIFFE_ID_MAX + 1);
    KB_GUARD(spiffe_td_validate(td, td_len, why));
    if (path_len > 0 && path[0] != '/')
        return fail(why, "path must start with '/'", KB_ERR_INVALID);
    if (SCHEME_LEN + td_len + path_len > SPIFFE_ID_MAX)
        return fail(why, "SPIFFE ID is longer than 2048 bytes", KB_ERR_TOO_LARGE);

    char buf[SPIFFE_ID_MAX + 1];
    memcpy(buf, SCHEME, SCHEME_LEN);
    memcpy(buf + SCHEME_LEN, td, td_len);
    memcpy(buf + SCHEME_LEN + td_len, path, path_len);
    return spiffe_id_parse(buf, SCHEME_LEN + td_len + path_len, out, why);
}

const char *spiffe_id_str(const spiffe_id *id)
{
    return id ? id->str : "";
}

size_t spiffe_id_len(const spiffe_id *id)
{
    return id ? id->len : 0;
}

const char *spiffe_id_trust_domain(const spiffe_id *id)
{
    return id ? id->td : "";
}

const char *spiffe_id_path(const spiffe_id *id)
{
    return id ? id->str + id->path_off : "";
}

int spiffe_id_is_root(const spiffe_id *id)
{
    return id != NULL && id->len > 0 && id->path_off == id->len;
}

int spiffe_id_eq(const spiffe_id *a, const spiffe_id *b)
{
    /* IDs are public identifiers, not secrets: an ordinary comparison is right here. */
    return a != NULL && b != NULL && a->len > 0 && a->len == b->len &&
           memcmp(a->str, b->str, a->len) == 0;
}

int spiffe_id_member_of(const spiffe_id *id, const char *td)
{
    return id != NULL && td != NULL && id->len > 0 && strcmp(id->td, td) == 0;
}

int spiffe_id_has_prefix(const spiffe_id *id, const char *prefix)
{
    if (id == NULL || prefix == NULL || prefix[0] != '/' || id->len == 0)
        return 0;
    const char *path = id->str + id->path_off;
    size_t path_len = id->len - id->path_off;
    size_t plen = strlen(prefix);
    if (plen > path_len || memcmp(path, prefix, plen) != 0)
        return 0;
    /* The prefix ends on a segment boundary if it ends with '/' (then the path, which never ends
     * with '/', continues below it), or the path ends there, or the path's next byte is '/'. */
    if (prefix[plen - 1] == '/')
        return 1;
    return plen == path_len || path[plen] == '/';
}
