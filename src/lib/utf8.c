/* utf8.c - well-formed UTF-8 (RFC 3629 section 4). */
#include "utf8.h"

size_t kb_utf8_next(const uint8_t *p, size_t n, uint32_t *cp)
{
    size_t need;
    uint32_t v;
    if (n == 0)
        return 0;
    if (p[0] < 0x80) {
        need = 0;
        v = p[0];
    } else if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        need = 1;
        v = p[0] & 0x1fu;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        need = 2;
        v = p[0] & 0x0fu;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        need = 3;
        v = p[0] & 0x07u;
    } else {
        return 0; /* a continuation byte, C0/C1 (always overlong), or F5..FF */
    }
    for (size_t k = 1; k <= need; k++) {
        if (k >= n || (p[k] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (p[k] & 0x3fu);
    }
    if ((need == 2 && v < 0x800) || (need == 3 && (v < 0x10000 || v > 0x10ffff)) ||
        (v >= 0xd800 && v <= 0xdfff))
        return 0;
    if (cp)
        *cp = v;
    return need + 1;
}

bool kb_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t k = kb_utf8_next(p + i, n - i, NULL);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}
