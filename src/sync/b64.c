/* b64.c - strict base64 (RFC 4648 section 4; section 3.5 for canonical pad bits). */
#include "b64.h"

static const char ALPHA[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

kb_err sync_b64_decode(const char *in, size_t len, size_t max, kb_secret **out)
{
    kb_secret *s = NULL;
    uint8_t *d;
    size_t pad = 0, outlen, o = 0;
    KB_ENSURE_REF(in);
    KB_ENSURE_REF(out);
    KB_ENSURE(len % 4 == 0, KB_ERR_INVALID);
    if (len > 0 && in[len - 1] == '=')
        pad = (len > 1 && in[len - 2] == '=') ? 2 : 1;
    outlen = len / 4 * 3 - pad;
    KB_ENSURE(outlen <= max, KB_ERR_TOO_LARGE);
    KB_GUARD(kb_secret_new(outlen, &s));
    d = kb_secret_data(s);
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        uint32_t w;
        int last = i + 4 == len;
        for (int j = 0; j < 4; j++) {
            v[j] = val((unsigned char)in[i + (size_t)j]);
            if (v[j] < 0 && !(last && j >= 4 - (int)pad)) {
                kb_secret_free(s);
                return KB_ERR_INVALID;
            }
            if (v[j] < 0)
                v[j] = 0;
        }
        w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        /* Non-canonical encodings (pad bits set) are refused: one content, one spelling. */
        if (last && ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))) {
            kb_secret_free(s);
            return KB_ERR_INVALID;
        }
        if (o < outlen)
            d[o++] = (uint8_t)(w >> 16);
        if (o < outlen)
            d[o++] = (uint8_t)(w >> 8);
        if (o < outlen)
            d[o++] = (uint8_t)w;
        kb_wipe(&w, sizeof(w)); /* a plain store would be dead and optimized away */
        kb_wipe(v, sizeof(v));
    }
    *out = s;
    return KB_OK;
}

kb_err sync_b64_encode(const uint8_t *in, size_t len, kb_dbuf *out)
{
    KB_ENSURE_REF(out);
    KB_ENSURE(in != NULL || len == 0, KB_ERR_NULL);
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)in[i] << 16;
        char q[4];
        if (i + 1 < len)
            w |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            w |= in[i + 2];
        q[0] = ALPHA[(w >> 18) & 63];
        q[1] = ALPHA[(w >> 12) & 63];
        q[2] = i + 1 < len ? ALPHA[(w >> 6) & 63] : '=';
        q[3] = i + 2 < len ? ALPHA[w & 63] : '=';
        KB_GUARD(kb_dbuf_add(out, q, 4));
    }
    return KB_OK;
}
