/* fuzz_spiffe_id.c - SPIFFE ID parser: no crash, no overread, and every accepted ID round-trips
 * (its string re-parses to the same ID, its parts rebuild it, its path matches itself). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/spiffe_id.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    spiffe_id id, again;
    const char *why = NULL;
    if (spiffe_id_parse((const char *)data, size, &id, &why) != KB_OK) {
        if (why == NULL)
            abort(); /* every rejection names its rule */
        return 0;
    }
    if (spiffe_id_len(&id) != size || size > SPIFFE_ID_MAX)
        abort();
    if (spiffe_id_parse_str(spiffe_id_str(&id), &again, &why) != KB_OK ||
        !spiffe_id_eq(&id, &again))
        abort();
    if (spiffe_id_from_parts(spiffe_id_trust_domain(&id), spiffe_id_path(&id), &again, &why) !=
            KB_OK ||
        !spiffe_id_eq(&id, &again))
        abort();
    if (!spiffe_id_is_root(&id) && !spiffe_id_has_prefix(&id, spiffe_id_path(&id)))
        abort();
    if (!spiffe_id_member_of(&id, spiffe_id_trust_domain(&id)))
        abort();
    return 0;
}
