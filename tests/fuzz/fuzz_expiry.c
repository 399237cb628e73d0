/* fuzz_expiry.c - expiry extraction (server/expiry.h) over X.509 PEM/DER, PKCS#12 and OpenPGP
 * (armoured and binary) content: no crash, no overread, no leak, a known result code, a date
 * only with KB_OK, and a recognised kind whenever the content was called malformed. */
#include <stdint.h>
#include <stdlib.h>

#include "lib/secbuf.h"
#include "server/expiry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    int64_t t = 0;
    expiry_kind k = EXPIRY_NONE;

    if (!ready) {
        if (kb_secmem_init() != KB_OK)
            abort();
        ready = 1;
    }
    kb_err rc = expiry_extract(data, size, &t, &k);
    if (rc == KB_OK ? (t <= 0 || k == EXPIRY_NONE) : t != 0)
        abort();
    if (rc == KB_ERR_INVALID && k == EXPIRY_NONE)
        abort();
    if (rc != KB_OK && rc != KB_ERR_INVALID && rc != KB_ERR_NOT_FOUND)
        abort();
    return 0;
}
