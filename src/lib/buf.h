/* buf.h - bounded reading and bounded growing of bytes.
 *
 * kb_reader walks a byte range with a cursor; every read checks the remaining length first and
 * returns KB_ERR_TRUNCATED instead of reading past the end (s2n's stuffer, read side).
 *
 * kb_dbuf is a growable buffer with a hard maximum (curl's dynbuf): adding past the maximum
 * fails with KB_ERR_TOO_LARGE and leaves the buffer as it was. It is always NUL-terminated, and
 * it is wiped when freed or reallocated, so it may carry secret bytes for a short time.
 */
#ifndef KB_BUF_H
#define KB_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct {
    const uint8_t *p;
    size_t len;
    size_t pos;
} kb_reader;

void kb_reader_init(kb_reader *r, const void *p, size_t len);
size_t kb_reader_left(const kb_reader *r);
KB_WUR kb_err kb_reader_bytes(kb_reader *r, size_t n, const uint8_t **out);
KB_WUR kb_err kb_reader_copy(kb_reader *r, void *dst, size_t n);
KB_WUR kb_err kb_reader_u8(kb_reader *r, uint8_t *out);
KB_WUR kb_err kb_reader_u16be(kb_reader *r, uint16_t *out);
KB_WUR kb_err kb_reader_u32be(kb_reader *r, uint32_t *out);
KB_WUR kb_err kb_reader_u64be(kb_reader *r, uint64_t *out);
/* Read up to (not including) delim, at most max bytes, and consume the delimiter.
 * KB_ERR_TOO_LARGE if no delimiter within max bytes, KB_ERR_TRUNCATED if input ends first. */
KB_WUR kb_err kb_reader_until(kb_reader *r, uint8_t delim, size_t max, const uint8_t **out,
                              size_t *out_len);
/* KB_ERR_TRAILING unless every byte was consumed. */
KB_WUR kb_err kb_reader_end(const kb_reader *r);

typedef struct {
    uint8_t *p;
    size_t len;
    size_t cap;
    size_t max;
} kb_dbuf;

/* An empty buffer that will refuse to hold more than max bytes. */
void kb_dbuf_init(kb_dbuf *b, size_t max);
KB_WUR kb_err kb_dbuf_add(kb_dbuf *b, const void *p, size_t n);
KB_WUR kb_err kb_dbuf_addstr(kb_dbuf *b, const char *s);
KB_WUR kb_err kb_dbuf_addf(kb_dbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
KB_WUR kb_err kb_dbuf_vaddf(kb_dbuf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
KB_WUR kb_err kb_dbuf_addc(kb_dbuf *b, char c);
/* Make room for n more bytes at once (one allocation instead of doublings when the size is
 * known ahead); KB_ERR_TOO_LARGE past max, as add. */
KB_WUR kb_err kb_dbuf_reserve(kb_dbuf *b, size_t n);
/* The contents as a NUL-terminated string ("" when empty; never NULL). */
const char *kb_dbuf_str(const kb_dbuf *b);
/* Empty the buffer (wiping what it held) but keep its allocation. */
void kb_dbuf_reset(kb_dbuf *b);
/* Wipe and free. */
void kb_dbuf_free(kb_dbuf *b);
/* Hand the allocation to the caller (NUL-terminated, must be freed with free()); b is emptied. */
char *kb_dbuf_steal(kb_dbuf *b, size_t *len);

/* Make room in the array *arr (capacity *cap elements of elem bytes) for element index n: the
 * capacity doubles (from 16) until it exceeds n, new elements are zeroed, and *arr and *cap change
 * only on success. KB_ERR_NOMEM on allocation failure or if the size would overflow. Callers keep
 * their own count and limit. Not for secret bytes (realloc may leave a copy behind). */
KB_WUR kb_err kb_grow(void **arr, size_t *cap, size_t n, size_t elem);

/* Lowercase hex of n bytes into out (2n+1 bytes). */
void kb_hex(const uint8_t *in, size_t n, char *out);
/* Parse exactly 2n hex characters into out; KB_ERR_INVALID on any other input. */
KB_WUR kb_err kb_unhex(const char *in, size_t in_len, uint8_t *out, size_t n);

#endif
