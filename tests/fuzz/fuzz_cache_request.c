/* fuzz_cache_request.c - keybridge-cache's request parser: "<Operation>\n<JSON body>" goes
 * through cache_api_dispatch against an in-memory store (one per process, so state builds up
 * across inputs the way a long-running server's does). Every response must be JSON, and every
 * secret's kept ListSecrets texts must equal a fresh rendering (checked every 16 inputs). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/api.h"
#include "cache/store.h"
#include "lib/json.h"
#include "lib/secbuf.h"

static cache_api *api;
static cache_store *st;

static void init(void)
{
    kb_secret *key = NULL;
    cache_api_opts o;
    if (kb_secmem_init() != KB_OK)
        abort();
    kb_json_init();
    if (kb_secret_new(32, &key) != KB_OK || cache_store_open(":memory:", key, &st) != KB_OK)
        abort();
    memset(&o, 0, sizeof(o));
    o.region = "us-east-1";
    o.store = st;
    if (cache_api_new(&o, &api) != KB_OK)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int64_t now = 1700000000000;
    static unsigned checks;
    char op[64];
    const uint8_t *nl;
    size_t oplen;
    cache_response r;
    json_t *j = NULL;

    if (api == NULL)
        init();
    nl = memchr(data, '\n', size < sizeof(op) ? size : sizeof(op));
    if (nl == NULL)
        return 0;
    oplen = (size_t)(nl - data);
    memcpy(op, data, oplen);
    op[oplen] = '\0';
    now += 3600 * 1000; /* time moves on: recovery windows end, purges run */
    if (cache_api_dispatch(api, (size & 1) ? "111111111111" : "222222222222", op, nl + 1,
                           size - oplen - 1, now, &r) != KB_OK)
        return 0;
    if (r.status < 200 || r.status > 599 ||
        kb_json_parse(r.body, r.body_len, (size_t)1 << 24, &j, NULL, 0) != KB_OK)
        abort(); /* every response is a JSON object */
    json_decref(j);
    cache_response_free(&r);
    /* Whatever the requests did or refused, the kept ListSecrets texts equal a fresh rendering
     * (store.h, cache_store_check_lists). A full pass over the store, which grows across inputs:
     * every 16th input (a stale text stays stale until its secret is rendered again). */
    if (++checks % 16 == 0) {
        size_t stale = 0;
        if (cache_store_check_lists(st, &stale) != KB_OK || stale != 0)
            abort();
    }
    return 0;
}
