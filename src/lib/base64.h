/* base64.h - one strict base64 for the whole tree (RFC 4648 4 and 5), both ways.
 *
 * Decoding is strict everywhere so that one content has exactly one spelling: no whitespace, no
 * characters outside the alphabet, padding only where RFC 4648 puts it, and the unused bits of the
 * last quantum zero (RFC 4648 3.5, "canonical encoding"). KB_B64_STD is the standard alphabet with
 * '=' padding to a multiple of 4 (the client API, Secrets Manager SecretBinary, JWK x5c);
 * KB_B64_URL is the URL alphabet without padding (JWK key members, RFC 7515 2). The empty string
 * decodes to zero bytes: callers that need content check the length themselves. */
#ifndef KB_LIB_BASE64_H
#define KB_LIB_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"
#include "secbuf.h"

typedef enum {
    KB_B64_STD = 0, /* RFC 4648 4: A-Z a-z 0-9 + /, '=' padded */
    KB_B64_URL = 1, /* RFC 4648 5: A-Z a-z 0-9 - _, unpadded */
} kb_b64_mode;

/* Characters in the encoding of n bytes (no NUL); SIZE_MAX if that would overflow. */
size_t kb_b64_enc_len(size_t n, kb_b64_mode mode);
/* Upper bound on the bytes that len characters decode to. */
size_t kb_b64_dec_max(size_t len);

/* Append the encoding of in[0..n) to out (KB_ERR_TOO_LARGE past out's max). */
KB_WUR kb_err kb_b64_encode(const uint8_t *in, size_t n, kb_b64_mode mode, kb_dbuf *out);
/* The encoding of in[0..n) as a NUL-terminated malloc'd string, NULL on allocation failure.
 * Free it with kb_json_free_str (it wipes), since the text may carry a secret. */
char *kb_b64_encode_str(const uint8_t *in, size_t n, kb_b64_mode mode);

/* Decode in[0..len) into out (cap bytes): *out_len bytes written. KB_ERR_INVALID on anything
 * but a canonical encoding, KB_ERR_TOO_LARGE if the result would not fit in cap (checked before
 * anything is written). Intermediate values are wiped. */
KB_WUR kb_err kb_b64_decode(const char *in, size_t len, kb_b64_mode mode, uint8_t *out, size_t cap,
                            size_t *out_len);
/* Decode standard base64 into locked memory of at most max bytes (same errors). */
KB_WUR kb_err kb_b64_decode_secret(const char *in, size_t len, size_t max, kb_secret **out);

#endif
