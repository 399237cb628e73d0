/* b64.h - base64 (RFC 4648 section 4: standard alphabet, padded, no whitespace), both ways. The
 * client API carries contents this way and Secrets Manager carries SecretBinary this way. */
#ifndef KB_SYNC_B64_H
#define KB_SYNC_B64_H

#include <stddef.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "lib/secbuf.h"

/* Decode in[0..len) strictly (padding required, non-zero pad bits refused) into locked memory.
 * KB_ERR_INVALID on any other input; KB_ERR_TOO_LARGE if the result would exceed max bytes. */
KB_WUR kb_err sync_b64_decode(const char *in, size_t len, size_t max, kb_secret **out);
/* Append the encoding of in[0..len) to out. */
KB_WUR kb_err sync_b64_encode(const uint8_t *in, size_t len, kb_dbuf *out);

#endif
