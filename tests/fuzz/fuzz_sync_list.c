/* fuzz_sync_list.c - keybridged client API answers as the syncer parses them (list + batch). */
#include <stddef.h>
#include <stdint.h>

#include "lib/json.h"
#include "sync/source_keybridge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    sync_listing l;
    sync_content out[2] = {{0}};
    const char *names[2] = {"a", "b"};
    size_t fetched;
    if (!init) {
        kb_json_init();
        init = 1;
    }
    if (sync_kb_parse_list(data, size, &l) == KB_OK)
        sync_listing_clear(&l);
    if (sync_kb_parse_batch(data, size, names, 2, out, &fetched) != KB_OK)
        fetched = 0;
    sync_content_clear(&out[0]);
    sync_content_clear(&out[1]);
    return 0;
}
