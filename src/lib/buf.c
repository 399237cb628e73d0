/* buf.c - bounded reader and bounded dynamic buffer. */
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "secbuf.h"

void kb_reader_init(kb_reader *r, const void *p, size_t len)
{
    r->p = p;
    r->len = p ? len : 0;
    r->pos = 0;
}

size_t kb_reader_left(const kb_reader *r)
{
    return r->len - r->pos;
}

kb_err kb_reader_bytes(kb_reader *r, size_t n, const uint8_t **out)
{
    KB_ENSURE_REF(r);
    KB_ENSURE(n <= kb_reader_left(r), KB_ERR_TRUNCATED);
    if (out)
        *out = r->p + r->pos;
    r->pos += n;
    return KB_OK;
}

kb_err kb_reader_copy(kb_reader *r, void *dst, size_t n)
{
    const uint8_t *p;
    KB_GUARD(kb_reader_bytes(r, n, &p));
    if (n)
        memcpy(dst, p, n);
    return KB_OK;
}

static kb_err read_be(kb_reader *r, size_t n, uint64_t *out)
{
    const uint8_t *p;
    uint64_t v = 0;
    KB_GUARD(kb_reader_bytes(r, n, &p));
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p[i];
    *out = v;
    return KB_OK;
}

kb_err kb_reader_u8(kb_reader *r, uint8_t *out)
{
    uint64_t v;
    KB_GUARD(read_be(r, 1, &v));
    *out = (uint8_t)v;
    return KB_OK;
}

kb_err kb_reader_u16be(kb_reader *r, uint16_t *out)
{
    uint64_t v;
    KB_GUARD(read_be(r, 2, &v));
    *out = (uint16_t)v;
    return KB_OK;
}

kb_err kb_reader_u32be(kb_reader *r, uint32_t *out)
{
    uint64_t v;
    KB_GUARD(read_be(r, 4, &v));
    *out = (uint32_t)v;
    return KB_OK;
}

kb_err kb_reader_u64be(kb_reader *r, uint64_t *out)
{
    return read_be(r, 8, out);
}

kb_err kb_reader_until(kb_reader *r, uint8_t delim, size_t max, const uint8_t **out,
                       size_t *out_len)
{
    size_t left = kb_reader_left(r);
    /* Scan max bytes plus one for the delimiter; max = SIZE_MAX must not wrap to a 0 scan. */
    size_t scan = left <= max ? left : max + 1;
    const uint8_t *start = r->p + r->pos;
    const uint8_t *hit = memchr(start, delim, scan);

    if (hit == NULL)
        return left > max ? KB_ERR_TOO_LARGE : KB_ERR_TRUNCATED;
    *out = start;
    *out_len = (size_t)(hit - start);
    r->pos += *out_len + 1;
    return KB_OK;
}

kb_err kb_reader_end(const kb_reader *r)
{
    return kb_reader_left(r) == 0 ? KB_OK : KB_ERR_TRAILING;
}

void kb_dbuf_init(kb_dbuf *b, size_t max)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

/* Make room for n more bytes plus the NUL. Growth copies and wipes the old block, since a
 * realloc could leave secret bytes behind in freed memory. */
static kb_err dbuf_reserve(kb_dbuf *b, size_t n)
{
    size_t need, cap;
    uint8_t *np;

    /* len + n + 1 must not wrap, even for a buffer whose max is SIZE_MAX ("no limit"). */
    KB_ENSURE(n <= b->max && b->len <= b->max - n && b->len + n < SIZE_MAX, KB_ERR_TOO_LARGE);
    need = b->len + n + 1;
    if (need <= b->cap)
        return KB_OK;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    /* Never more than max + 1 (the NUL); need <= max + 1 holds, so cap stays >= need. */
    if (b->max < SIZE_MAX && cap > b->max + 1)
        cap = b->max + 1;
    np = malloc(cap);
    KB_ENSURE(np != NULL, KB_ERR_NOMEM);
    if (b->p) {
        memcpy(np, b->p, b->len);
        kb_wipe(b->p, b->cap);
        free(b->p);
    }
    b->p = np;
    b->cap = cap;
    b->p[b->len] = 0;
    return KB_OK;
}

kb_err kb_dbuf_reserve(kb_dbuf *b, size_t n)
{
    KB_ENSURE_REF(b);
    return dbuf_reserve(b, n);
}

kb_err kb_dbuf_add(kb_dbuf *b, const void *p, size_t n)
{
    KB_ENSURE_REF(b);
    KB_ENSURE(p != NULL || n == 0, KB_ERR_NULL);
    KB_GUARD(dbuf_reserve(b, n));
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
    return KB_OK;
}

kb_err kb_dbuf_addstr(kb_dbuf *b, const char *s)
{
    KB_ENSURE_REF(s);
    return kb_dbuf_add(b, s, strlen(s));
}

kb_err kb_dbuf_addc(kb_dbuf *b, char c)
{
    return kb_dbuf_add(b, &c, 1);
}

kb_err kb_dbuf_vaddf(kb_dbuf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;
    KB_ENSURE_REF(b);
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    KB_ENSURE(n >= 0, KB_ERR_INVALID);
    KB_GUARD(dbuf_reserve(b, (size_t)n));
    vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return KB_OK;
}

kb_err kb_dbuf_addf(kb_dbuf *b, const char *fmt, ...)
{
    va_list ap;
    kb_err rc;
    va_start(ap, fmt);
    rc = kb_dbuf_vaddf(b, fmt, ap);
    va_end(ap);
    return rc;
}

const char *kb_dbuf_str(const kb_dbuf *b)
{
    return b->p ? (const char *)b->p : "";
}

void kb_dbuf_reset(kb_dbuf *b)
{
    if (b->p) {
        kb_wipe(b->p, b->len);
        b->p[0] = 0;
    }
    b->len = 0;
}

void kb_dbuf_free(kb_dbuf *b)
{
    if (b->p) {
        kb_wipe(b->p, b->cap);
        free(b->p);
    }
    b->p = NULL;
    b->len = b->cap = 0;
}

char *kb_dbuf_steal(kb_dbuf *b, size_t *len)
{
    char *p = (char *)b->p;
    if (p == NULL) {
        p = calloc(1, 1);
    }
    if (len)
        *len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void kb_hex(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

kb_err kb_unhex(const char *in, size_t in_len, uint8_t *out, size_t n)
{
    KB_ENSURE(in_len == 2 * n, KB_ERR_INVALID);
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        KB_ENSURE(hi >= 0 && lo >= 0, KB_ERR_INVALID);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return KB_OK;
}

kb_err kb_grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    void *p;
    size_t nc;
    KB_ENSURE_REF(arr);
    KB_ENSURE_REF(cap);
    KB_ENSURE(elem > 0, KB_ERR_INVALID);
    if (n < *cap)
        return KB_OK;
    nc = *cap ? *cap : 16;
    while (nc <= n) {
        KB_ENSURE(nc <= SIZE_MAX / 2, KB_ERR_NOMEM);
        nc *= 2;
    }
    KB_ENSURE(nc <= SIZE_MAX / elem, KB_ERR_NOMEM);
    p = realloc(*arr, nc * elem);
    KB_ENSURE(p != NULL, KB_ERR_NOMEM);
    memset((char *)p + *cap * elem, 0, (nc - *cap) * elem);
    *arr = p;
    *cap = nc;
    return KB_OK;
}
