/* fuzz_sts.c - kb_sts_parse_assume_role and kb_sts_parse_error over arbitrary bytes (the STS
 * answer is the first network input the AssumeRole path reads). Must never crash, leak or read
 * out of bounds; on success the credentials are well-formed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/secbuf.h"
#include "lib/sts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly size bytes, so a read past the end is caught by ASan */
    char *p = malloc(size ? size : 1);
    kb_aws_creds c;
    int64_t e;
    char code[64];
    if (p == NULL)
        return 0;
    if (size)
        memcpy(p, data, size);
    if (kb_sts_parse_assume_role(p, size, &c, &e) == KB_OK) {
        if (c.access_key_id == NULL || c.secret_key == NULL || c.session_token == NULL ||
            strlen(c.session_token) > KB_AWSREQ_MAX_TOKEN)
            abort();
        kb_aws_creds_free(&c);
    }
    if (kb_sts_parse_error(p, size, code, sizeof(code)) == KB_OK && strlen(code) >= sizeof(code))
        abort();
    free(p);
    return 0;
}
