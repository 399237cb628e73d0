/* base64.c - strict base64 (RFC 4648 4 and 5; 3.5 for canonical pad bits). */
#include "base64.h"

#include <stdlib.h>
#include <string.h>

static const char ALPHA_STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char ALPHA_URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int val(unsigned char c, kb_b64_mode mode)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (mode == KB_B64_URL ? '-' : '+'))
        return 62;
    if (c == (mode == KB_B64_URL ? '_' : '/'))
        return 63;
    return -1;
}

size_t kb_b64_enc_len(size_t n, kb_b64_mode mode)
{
    if (n / 3 >= SIZE_MAX / 4 - 1)
        return SIZE_MAX;
    if (mode == KB_B64_URL)
        return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
    return (n + 2) / 3 * 4;
}

size_t kb_b64_dec_max(size_t len)
{
    return len / 4 * 3 + (len % 4 * 3) / 4;
}

/* One quantum of 1..3 input bytes into 2..4 characters (plus '=' padding in STD mode). */
static size_t enc_quantum(const uint8_t *in, size_t n, kb_b64_mode mode, char q[4])
{
    const char *alpha = mode == KB_B64_URL ? ALPHA_URL : ALPHA_STD;
    uint32_t w = (uint32_t)in[0] << 16;
    size_t keep = n + 1;
    if (n > 1)
        w |= (uint32_t)in[1] << 8;
    if (n > 2)
        w |= in[2];
    q[0] = alpha[(w >> 18) & 63];
    q[1] = alpha[(w >> 12) & 63];
    q[2] = n > 1 ? alpha[(w >> 6) & 63] : '=';
    q[3] = n > 2 ? alpha[w & 63] : '=';
    kb_wipe(&w, sizeof(w));
    return mode == KB_B64_URL ? keep : 4;
}

kb_err kb_b64_encode(const uint8_t *in, size_t n, kb_b64_mode mode, kb_dbuf *out)
{
    kb_err rc = KB_OK;
    char q[4];
    KB_ENSURE_REF(out);
    KB_ENSURE(in != NULL || n == 0, KB_ERR_NULL);
    for (size_t i = 0; i < n && rc == KB_OK; i += 3) {
        size_t k = enc_quantum(in + i, n - i < 3 ? n - i : 3, mode, q);
        rc = kb_dbuf_add(out, q, k);
    }
    kb_wipe(q, sizeof(q));
    return rc;
}

char *kb_b64_encode_str(const uint8_t *in, size_t n, kb_b64_mode mode)
{
    size_t len = kb_b64_enc_len(n, mode), o = 0;
    char *s, q[4];
    if (len == SIZE_MAX || (in == NULL && n > 0))
        return NULL;
    s = malloc(len + 1);
    if (s == NULL)
        return NULL;
    /* Through q: an unpadded (URL) last quantum keeps 2 or 3 of the 4 characters written, and
     * s has room for exactly len. */
    for (size_t i = 0; i < n; i += 3) {
        size_t k = enc_quantum(in + i, n - i < 3 ? n - i : 3, mode, q);
        memcpy(s + o, q, k);
        o += k;
    }
    kb_wipe(q, sizeof(q));
    s[o] = '\0';
    return s;
}

kb_err kb_b64_decode(const char *in, size_t len, kb_b64_mode mode, uint8_t *out, size_t cap,
                     size_t *out_len)
{
    size_t data = len, need, o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(out_len);
    *out_len = 0;
    KB_ENSURE(in != NULL || len == 0, KB_ERR_NULL);
    if (mode == KB_B64_URL) {
        KB_ENSURE(len % 4 != 1, KB_ERR_INVALID);
    } else {
        KB_ENSURE(len % 4 == 0, KB_ERR_INVALID);
        if (data > 0 && in[data - 1] == '=')
            data--;
        if (data > 0 && in[data - 1] == '=')
            data--;
        KB_ENSURE(data % 4 != 1, KB_ERR_INVALID); /* "A===" */
    }
    need = data / 4 * 3 + (data % 4 * 3) / 4;
    KB_ENSURE(need <= cap, KB_ERR_TOO_LARGE);
    KB_ENSURE(out != NULL || need == 0, KB_ERR_NULL);
    for (size_t i = 0; i < data; i++) {
        int v = val((unsigned char)in[i], mode);
        KB_ENSURE_OUT(rc, v >= 0, KB_ERR_INVALID);
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* The bits left over after the last whole byte must be zero (RFC 4648 3.5). */
    KB_ENSURE_OUT(rc, acc == 0, KB_ERR_INVALID);
    *out_len = o;
out:
    kb_wipe(&acc, sizeof(acc));
    if (rc != KB_OK)
        kb_wipe(out, o);
    return rc;
}

kb_err kb_b64_decode_secret(const char *in, size_t len, size_t max, kb_secret **out)
{
    kb_secret *s = NULL;
    size_t n = 0, need = kb_b64_dec_max(len);
    kb_err rc;
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(in != NULL || len == 0, KB_ERR_NULL);
    KB_ENSURE(len % 4 == 0, KB_ERR_INVALID);
    /* Exact size: max is compared with what the text decodes to, not with its upper bound. */
    if (len >= 1 && in[len - 1] == '=')
        need--;
    if (len >= 2 && in[len - 2] == '=')
        need--;
    KB_ENSURE(need <= max, KB_ERR_TOO_LARGE);
    KB_GUARD(kb_secret_new(need, &s));
    rc = kb_b64_decode(in, len, KB_B64_STD, kb_secret_data(s), need, &n);
    if (rc == KB_OK && n != need)
        rc = KB_ERR_INVALID;
    if (rc != KB_OK) {
        kb_secret_free(s);
        return rc;
    }
    *out = s;
    return KB_OK;
}
