/* populate.c - fill a keybridge-cache store quickly for the benchmark (not a product tool; built
 * by bench/cache/run.sh with cc against the build's static libraries).
 *
 *   populate STORE_PATH KEY_FILE ACCOUNT REGION COUNT
 *
 * Creates COUNT secrets bench/000000 .. in ACCOUNT through cache_api_dispatch (the same code path
 * as a signed CreateSecret, minus HTTP and SigV4), so rows, sealing, stages and tags are exactly
 * what the server itself writes. Each secret carries a 64-character SecretString and the two tags
 * keybridge-sync writes (managed-by, checksum), so ListSecrets entries have the production shape.
 * Prints the elapsed seconds on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/api.h"
#include "cache/seal.h"
#include "cache/store.h"
#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/secbuf.h"

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    kb_secret *key = NULL;
    cache_store *st = NULL;
    cache_api *api = NULL;
    cache_api_opts o;
    int64_t count = 0, t0;
    int code = 1;
    kb_err e;

    if (argc != 6 || kb_parse_int64(argv[5], &count) != KB_OK || count < 0) {
        fprintf(stderr, "usage: populate STORE_PATH KEY_FILE ACCOUNT REGION COUNT\n");
        return 2;
    }
    kb_json_init();
    kb_log_set_level(KB_LOG_WARN);
    if ((e = cache_key_load(argv[2], &key)) != KB_OK) {
        fprintf(stderr, "populate: key file: %s\n", kb_err_str(e));
        return 1;
    }
    if ((e = cache_store_open(argv[1], key, &st)) != KB_OK) { /* takes key */
        fprintf(stderr, "populate: store: %s\n", kb_err_str(e));
        return 1;
    }
    memset(&o, 0, sizeof(o));
    o.region = argv[4];
    o.store = st;
    if ((e = cache_api_new(&o, &api)) != KB_OK) {
        fprintf(stderr, "populate: api: %s\n", kb_err_str(e));
        goto out;
    }
    t0 = now_ms();
    for (int64_t i = 0; i < count; i++) {
        char body[512];
        cache_response r;
        int n = snprintf(body, sizeof(body),
                         "{\"Name\":\"bench/%06lld\",\"SecretString\":"
                         "\"value-%06lld-0123456789abcdef0123456789abcdef0123456789ab\","
                         "\"Tags\":[{\"Key\":\"managed-by\",\"Value\":\"keybridge-sync\"},"
                         "{\"Key\":\"checksum\",\"Value\":\"%064lld\"}]}",
                         (long long)i, (long long)i, (long long)i);
        if (n < 0 || (size_t)n >= sizeof(body)) {
            fprintf(stderr, "populate: body too long\n");
            goto out;
        }
        e = cache_api_dispatch(api, argv[3], "CreateSecret", (const uint8_t *)body, (size_t)n,
                               now_ms(), &r);
        if (e != KB_OK || r.status != 200) {
            fprintf(stderr, "populate: CreateSecret %lld: %s status %d\n", (long long)i,
                    kb_err_str(e), e == KB_OK ? r.status : 0);
            if (e == KB_OK)
                cache_response_free(&r);
            goto out;
        }
        cache_response_free(&r);
    }
    printf("%.1f\n", (double)(now_ms() - t0) / 1000.0);
    code = 0;
out:
    cache_api_free(api);
    cache_store_close(st);
    return code;
}
