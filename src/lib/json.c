/* json.c - wiping allocator for jansson, strict bounded parsing. */
#include "json.h"

#include <stdio.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "secbuf.h"
#include "utf8.h"

/* jansson's blocks come from plain malloc, so a string from json_dumps() may be released with
 * free() anywhere; on release through jansson (or kb_json_free_str) the whole usable block is
 * wiped first. malloc_usable_size() gives that size without a header that free() would trip on. */
static void *wipe_malloc(size_t n)
{
    return malloc(n);
}

static void wipe_free(void *ptr)
{
    if (ptr == NULL)
        return;
    kb_wipe(ptr, malloc_usable_size(ptr));
    free(ptr);
}

void kb_json_init(void)
{
    json_set_alloc_funcs(wipe_malloc, wipe_free);
}

static size_t json_depth(const json_t *v, size_t limit)
{
    size_t best = 0;
    if (limit == 0)
        return 1;
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach((json_t *)v, k, c)
        {
            size_t d = json_depth(c, limit - 1);
            if (d > best)
                best = d;
        }
        return best + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c)
        {
            size_t d = json_depth(c, limit - 1);
            if (d > best)
                best = d;
        }
        return best + 1;
    }
    return 0;
}

static void set_err(char *err, size_t err_len, const char *msg)
{
    if (err && err_len)
        snprintf(err, err_len, "%s", msg);
}

kb_err kb_json_parse(const void *buf, size_t len, size_t max, json_t **out, char *err,
                     size_t err_len)
{
    return kb_json_parse_flags(buf, len, max, 0, out, err, err_len);
}

static bool has_nul(const json_t *v)
{
    size_t i;
    const char *k;
    json_t *e;
    if (json_is_string(v))
        return strlen(json_string_value(v)) != json_string_length(v);
    if (json_is_array(v)) {
        json_array_foreach(v, i, e)
        {
            if (has_nul(e))
                return true;
        }
    } else if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, e)
        {
            if (has_nul(e))
                return true;
        }
    }
    return false;
}

const char *kb_json_first_nul(const json_t *obj, const char *const *skip)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        bool skipped = false;
        for (size_t i = 0; skip != NULL && skip[i] != NULL && !skipped; i++)
            skipped = strcmp(skip[i], k) == 0;
        if (!skipped && has_nul(v))
            return k;
    }
    return NULL;
}

kb_err kb_json_parse_flags(const void *buf, size_t len, size_t max, unsigned flags, json_t **out,
                           char *err, size_t err_len)
{
    json_error_t je;
    json_t *v;

    KB_ENSURE_REF(out);
    *out = NULL;
    if (len > max) {
        set_err(err, err_len, "body too large");
        return KB_ERR_TOO_LARGE;
    }
    if (buf == NULL || len == 0) {
        set_err(err, err_len, "empty body");
        return KB_ERR_INVALID;
    }
    v = json_loadb(buf, len,
                   JSON_REJECT_DUPLICATES | ((flags & KB_JSON_ALLOW_NUL) ? JSON_ALLOW_NUL : 0u),
                   &je);
    if (v == NULL) {
        /* je.text may quote input; give only the position and a generic reason. */
        char msg[96];
        snprintf(msg, sizeof(msg), "malformed JSON at byte %d", je.position);
        /* ... and the quoted token (a piece of a secret body, perhaps) is a stack temporary:
         * wiped before returning (STYLE.md 5). */
        kb_wipe(&je, sizeof(je));
        set_err(err, err_len, msg);
        return KB_ERR_INVALID;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        set_err(err, err_len, "expected a JSON object");
        return KB_ERR_INVALID;
    }
    if (json_depth(v, KB_JSON_DEPTH_MAX + 1) > KB_JSON_DEPTH_MAX) {
        json_decref(v);
        set_err(err, err_len, "JSON nested too deeply");
        return KB_ERR_TOO_LARGE;
    }
    *out = v;
    return KB_OK;
}

kb_err kb_json_only_keys(const json_t *obj, const char *const *allowed, const char **bad)
{
    const char *k;
    json_t *v;
    KB_ENSURE(json_is_object(obj), KB_ERR_INVALID);
    json_object_foreach((json_t *)obj, k, v)
    {
        int ok = 0;
        /* allowed == NULL: no field is allowed (a body-less route), never a NULL dereference. */
        for (size_t i = 0; allowed != NULL && allowed[i] != NULL; i++) {
            if (strcmp(k, allowed[i]) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            if (bad)
                *bad = k;
            return KB_ERR_INVALID;
        }
    }
    return KB_OK;
}

char *kb_json_dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT);
}

void kb_json_free_str(char *s)
{
    wipe_free(s);
}

json_t *kb_json_b64(const void *p, size_t n)
{
    char *enc = kb_b64_encode_str(p, n, KB_B64_STD);
    json_t *v = enc ? json_string(enc) : NULL;
    kb_json_free_str(enc);
    return v;
}

/* ---------------------------------------------------------------- direct writing */

/* Whether none of the 8 bytes at p needs more than copying: no control character, '"', '\\'
 * or byte >= 0x80 (the classic "has a zero byte" test, exact for "any": a borrow only ever
 * propagates above a byte that matched). Lets the copying run over plain ASCII 8 bytes a step. */
static int plain8(const uint8_t *p)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t x, q, bs, bad;
    memcpy(&x, p, sizeof(x));
    q = x ^ (ones * '"');
    bs = x ^ (ones * '\\');
    bad = ((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((bs - ones) & ~bs) | x;
    return (bad & high) == 0;
}

kb_err kb_json_put_str(kb_dbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, run = 0, start = b->len;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(b);
    KB_ENSURE(s != NULL || n == 0, KB_ERR_NULL);
    /* The common case, plain ASCII with nothing to escape: one copy between the quotes. */
    while (n - i >= 8 && plain8(p + i))
        i += 8;
    while (i < n && p[i] >= 0x20 && p[i] < 0x80 && p[i] != '"' && p[i] != '\\')
        i++;
    if (i == n) {
        KB_GUARD(kb_dbuf_reserve(b, n + 2));
        b->p[b->len] = '"';
        if (n)
            memcpy(b->p + b->len + 1, p, n);
        b->p[b->len + n + 1] = '"';
        b->len += n + 2;
        b->p[b->len] = '\0';
        return KB_OK;
    }
    i = 0;
    KB_GUARD(kb_dbuf_addc(b, '"'));
    while (i < n) {
        uint8_t ch;
        if (n - i >= 8 && plain8(p + i)) {
            i += 8;
            run += 8;
            continue;
        }
        ch = p[i];
        char esc[6];
        size_t el = 2, k;
        if (ch >= 0x20 && ch != '"' && ch != '\\') {
            k = ch < 0x80 ? 1 : kb_utf8_next(p + i, n - i, NULL);
            KB_ENSURE_OUT(rc, k > 0, KB_ERR_INVALID);
            i += k;
            run += k;
            continue;
        }
        KB_GUARD_OUT(rc, kb_dbuf_add(b, p + i - run, run));
        run = 0;
        esc[0] = '\\';
        switch (ch) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
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
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            el = 6;
        }
        KB_GUARD_OUT(rc, kb_dbuf_add(b, esc, el));
        i++;
    }
    KB_GUARD_OUT(rc, kb_dbuf_add(b, p + n - run, run));
    KB_GUARD_OUT(rc, kb_dbuf_addc(b, '"'));
out:
    if (rc != KB_OK) { /* nothing appended */
        kb_wipe(b->p + start, b->len - start);
        b->len = start;
        b->p[start] = 0;
    }
    return rc;
}

kb_err kb_json_put_ms(kb_dbuf *b, int64_t ms)
{
    char tmp[32];
    size_t n = sizeof(tmp);
    uint64_t sec;
    unsigned frac;
    KB_ENSURE_REF(b);
    if (ms < 0 || ms > ((int64_t)1 << 53)) {
        /* Not a date this code writes: jansson's own form (17 digits, ".0" if integral). */
        int k = snprintf(tmp, sizeof(tmp), "%.17g", (double)ms / 1000.0);
        KB_ENSURE(k > 0 && (size_t)k < sizeof(tmp), KB_ERR_INVALID);
        KB_GUARD(kb_dbuf_add(b, tmp, (size_t)k));
        return strpbrk(tmp, ".e") ? KB_OK : kb_dbuf_add(b, ".0", 2);
    }
    /* m / 1000 as a decimal with at most 3 fraction digits is exactly the value that (double)m /
     * 1000.0 rounds (correctly) from, so a parser gets that same double back. */
    sec = (uint64_t)ms / 1000;
    frac = (unsigned)((uint64_t)ms % 1000);
    if (frac == 0) {
        tmp[--n] = '0';
    } else {
        int digits = 3;
        while (frac % 10 == 0) {
            frac /= 10;
            digits--;
        }
        while (digits-- > 0) {
            tmp[--n] = (char)('0' + frac % 10);
            frac /= 10;
        }
    }
    tmp[--n] = '.';
    do {
        tmp[--n] = (char)('0' + sec % 10);
        sec /= 10;
    } while (sec);
    return kb_dbuf_add(b, tmp + n, sizeof(tmp) - n);
}
