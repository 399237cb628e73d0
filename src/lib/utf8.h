/* utf8.h - one UTF-8 check for the whole tree (RFC 3629 section 4's well-formed byte sequences:
 * no overlong forms, no surrogates U+D800..U+DFFF, nothing above U+10FFFF, no truncated or stray
 * continuation bytes). Policy on top (control characters, NUL) stays with each caller. */
#ifndef KB_LIB_UTF8_H
#define KB_LIB_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length (1..4) of the one well-formed character at the start of p[0..n), its code point in *cp
 * (if cp is not NULL); 0 if the bytes there are not one (or n is 0). Reads no byte past the first
 * that does not fit, so a NUL-terminated string may pass n = strnlen(p, 4). */
size_t kb_utf8_next(const uint8_t *p, size_t n, uint32_t *cp);
/* p[0..n) is entirely well-formed UTF-8 (a NUL byte is U+0000 and allowed: callers that refuse
 * it say so). */
bool kb_utf8_valid(const uint8_t *p, size_t n);

#endif
