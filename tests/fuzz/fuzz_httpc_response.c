/* fuzz_httpc_response.c - libFuzzer target for httpc's HTTP/1.1 response parser (status line,
 * header fields, Content-Length / chunked / until-close bodies, trailers, limits).
 *
 * Input: byte 0 bit 0 says the request was HEAD; the rest is the raw response. Invariants: the
 * body never exceeds the buffer's max; a successful parse has a final status in 200..599; nothing
 * crashes, leaks or reads out of bounds (ASan/UBSan).
 */
#include <stdint.h>
#include <stdlib.h>

#include "lib/httpc.h"

#define FUZZ_BODY_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kb_dbuf body;
    int status = 0;
    kb_err rc;
    if (size < 1)
        return 0;
    kb_dbuf_init(&body, FUZZ_BODY_MAX);
    rc = kb_httpc_parse_response(data + 1, size - 1, data[0] & 1, &status, &body);
    if (body.len > FUZZ_BODY_MAX)
        abort();
    if (rc == KB_OK && (status < 200 || status > 599))
        abort();
    kb_dbuf_free(&body);
    return 0;
}
