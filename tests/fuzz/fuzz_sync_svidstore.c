/* fuzz_sync_svidstore.c - the SPIRE SVIDStore JSON the syncer reads from a Secrets Manager
 * secret (sync_identity_from_svidstore): JSON, PEM chain, PKCS#8 key, bundles. */
#include <stddef.h>
#include <stdint.h>

#include "lib/json.h"
#include "sync/identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    sync_identity id;
    const char *why;
    if (!init) {
        kb_json_init();
        init = 1;
    }
    if (sync_identity_from_svidstore(data, size, "example.org", &id, &why) == KB_OK)
        sync_identity_clear(&id);
    return 0;
}
