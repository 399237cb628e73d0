/* profile.c - run keybridge-cache's request handler in-process, for profilers (benchmark only;
 * a program of the build, BUILD/bench/cache/profile; run by bench/cache/profile.sh).
 *
 *   profile OP COUNT [SECRETS]        OP: list (ListSecrets MaxResults=100) or get (GetSecretValue)
 *
 * Fills an in-memory store with SECRETS secrets (default 1000) shaped as populate.c makes them,
 * signs one request with kb_sigv4_sign, then calls cache_api_handle COUNT times on it: the full
 * per-request path (SigV4 verification, dispatch, SQLite, JSON) minus HTTP and the kernel. Under
 * `valgrind --tool=callgrind --toggle-collect=cache_api_handle` the instruction counts are exact
 * and do not depend on the machine's load; under `perf record` it shows where time goes. Prints
 * the response size and the process CPU time per request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache/api.h"
#include "cache/creds.h"
#include "cache/seal.h"
#include "cache/store.h"
#include "lib/buf.h"
#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/secbuf.h"
#include "lib/sigv4.h"

#define ACCOUNT "123456789012"
#define REGION "us-east-1"
#define AKID "AKIABENCH00000000001"
#define SK "benchsecretkey0123456789abcdefghijklmnop"

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int64_t cpu_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int fill(cache_api *api, int64_t count)
{
    for (int64_t i = 0; i < count; i++) {
        char body[512];
        cache_response r;
        kb_err e;
        int n = snprintf(body, sizeof(body),
                         "{\"Name\":\"bench/%06lld\",\"SecretString\":"
                         "\"value-%06lld-0123456789abcdef0123456789abcdef0123456789ab\","
                         "\"Tags\":[{\"Key\":\"managed-by\",\"Value\":\"keybridge-sync\"},"
                         "{\"Key\":\"checksum\",\"Value\":\"%064lld\"}]}",
                         (long long)i, (long long)i, (long long)i);
        if (n < 0 || (size_t)n >= sizeof(body))
            return -1;
        e = cache_api_dispatch(api, ACCOUNT, "CreateSecret", (const uint8_t *)body, (size_t)n,
                               now_ms(), &r);
        if (e != KB_OK || r.status != 200) {
            fprintf(stderr, "profile: CreateSecret %lld failed\n", (long long)i);
            if (e == KB_OK)
                cache_response_free(&r);
            return -1;
        }
        cache_response_free(&r);
    }
    return 0;
}

int main(int argc, char **argv)
{
    kb_secret *key = NULL, *sk = NULL;
    cache_store *st = NULL;
    cache_api *api = NULL;
    cache_creds *creds = NULL;
    cache_api_opts o;
    kb_sigv4_header h[5];
    kb_sigv4_request sr;
    kb_sigv4_params sp;
    cache_request req;
    kb_dbuf auth;
    char date[17], path[] = "/tmp/kbprofile.key.XXXXXX", credline[128];
    const char *target, *body;
    int64_t count = 0, secrets = 1000, t0;
    size_t bytes = 0;
    int code = 1, fd;

    if (argc < 3 || argc > 4 || (strcmp(argv[1], "list") != 0 && strcmp(argv[1], "get") != 0) ||
        kb_parse_int64(argv[2], &count) != KB_OK || count < 1 ||
        (argc == 4 && (kb_parse_int64(argv[3], &secrets) != KB_OK || secrets < 1))) {
        fprintf(stderr, "usage: profile list|get COUNT [SECRETS]\n");
        return 2;
    }
    kb_json_init();
    kb_log_set_level(KB_LOG_WARN);
    kb_dbuf_init(&auth, KB_SIGV4_MAX_AUTH_LEN);
    fd = mkstemp(path);
    if (fd < 0)
        return 1;
    close(fd);
    unlink(path);
    if (cache_key_generate(path) != KB_OK || cache_key_load(path, &key) != KB_OK) {
        unlink(path);
        fprintf(stderr, "profile: key\n");
        return 1;
    }
    unlink(path);
    if (cache_store_open(":memory:", key, &st) != KB_OK) /* takes key */
        goto out;
    snprintf(credline, sizeof(credline), "%s %s %s\n", AKID, SK, ACCOUNT);
    if (cache_creds_parse(credline, strlen(credline), &creds, NULL) != KB_OK)
        goto out;
    memset(&o, 0, sizeof(o));
    o.region = REGION;
    o.store = st;
    o.creds = creds;
    if (cache_api_new(&o, &api) != KB_OK || fill(api, secrets))
        goto out;

    if (argv[1][0] == 'l') {
        target = "secretsmanager.ListSecrets";
        body = "{\"MaxResults\":100}";
    } else {
        target = "secretsmanager.GetSecretValue";
        body = "{\"SecretId\":\"bench/000042\"}";
    }
    h[0] = (kb_sigv4_header){"Host", 4, "127.0.0.1:8080", 14};
    h[1] = (kb_sigv4_header){"Content-Type", 12, "application/x-amz-json-1.1", 26};
    h[2] = (kb_sigv4_header){"X-Amz-Target", 12, target, strlen(target)};
    memset(&sr, 0, sizeof(sr));
    sr.method = "POST";
    sr.path = "/";
    sr.query = "";
    sr.headers = h;
    sr.n_headers = 3;
    sr.body = (const uint8_t *)body;
    sr.body_len = strlen(body);
    memset(&sp, 0, sizeof(sp));
    if (kb_secret_from(SK, strlen(SK), &sk) != KB_OK)
        goto out;
    sp.access_key_id = AKID;
    sp.secret_key = sk;
    sp.region = REGION;
    sp.service = "secretsmanager";
    sp.now = time(NULL);
    sp.normalize_path = 1;
    if (kb_sigv4_sign(&sr, &sp, &auth, date) != KB_OK)
        goto out;
    h[3] = (kb_sigv4_header){"X-Amz-Date", 10, date, 16};
    h[4] = (kb_sigv4_header){"Authorization", 13, kb_dbuf_str(&auth), auth.len};
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.path = "/";
    req.query = "";
    req.headers = h;
    req.n_headers = 5;
    req.body = sr.body;
    req.body_len = sr.body_len;

    t0 = cpu_us();
    for (int64_t i = 0; i < count; i++) {
        cache_response r;
        req.now_ms = now_ms();
        if (cache_api_handle(api, &req, &r) != KB_OK || r.status != 200) {
            fprintf(stderr, "profile: status %d: %s\n", r.status, r.body ? r.body : "");
            cache_response_free(&r);
            goto out;
        }
        bytes = r.body_len;
        cache_response_free(&r);
    }
    printf("%s: %zu bytes, %.1f us of CPU per request (in-process)\n", argv[1], bytes,
           (double)(cpu_us() - t0) / (double)count);
    code = 0;
out:
    kb_dbuf_free(&auth);
    kb_secret_free(sk);
    cache_api_free(api);
    cache_creds_free(creds);
    cache_store_close(st);
    return code;
}
