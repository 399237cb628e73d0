/* storebench.c - the store work of one keybridged list request, in process, without TLS, HTTP or
 * JSON: store_client_get (by SPIFFE ID, row MAC), store_client_seen, store_readable_list (20
 * secrets through one group: membership, grant and secret MACs per row), store_client_seen
 * again, as svc_client_auth + svc_client_list do. Prints microseconds of CPU per request for 1
 * thread and for THREADS threads sharing the store handle, so store changes can be measured
 * apart from the network stack (and profiled with perf). With "json" as the last argument each
 * request also renders the response as api.c's h_list does (api_record_json per record,
 * json_pack, kb_json_dump with the wiping allocator), to measure the JSON share.
 *
 *   storebench DBDIR [REQUESTS] [THREADS] [SECRETS] [json]
 *
 * The CMake target bench_keybridged_storebench (build/bench/keybridged/storebench; README.md).
 * Not part of ctest.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/err.h"
#include "lib/json.h"
#include "lib/secbuf.h"
#include "server/api.h"
#include "server/store.h"

static const char *ID = "spiffe://example.org/ns/bench/sa/syncer";
static const char *ADMIN = "spiffe://example.org/ns/ops/sa/admin";

static kb_err seal(void *ctx, int64_t id, int64_t version, store_envelope *env,
                   uint8_t checksum[STORE_CHECKSUM_LEN])
{
    (void)ctx;
    env->wrapped_key = calloc(1, 40);
    env->wrapped_key_len = 40;
    env->sealed = calloc(1, 64);
    env->sealed_len = 64;
    env->key_id = strdup("bench");
    memset(checksum, (int)(id + version), STORE_CHECKSUM_LEN);
    return env->wrapped_key && env->sealed && env->key_id ? KB_OK : KB_ERR_NOMEM;
}

typedef struct {
    store *st;
    long n;
    kb_err rc;
} job;

static bool with_json;

/* The body api.c's h_list sends for the native endpoint. */
static kb_err render(const store_client *c, const store_record *recs, size_t n)
{
    json_t *arr = json_array(), *o;
    char *body;
    for (size_t i = 0; arr != NULL && i < n; i++) {
        json_t *e = api_record_json(&recs[i], NULL);
        if (e == NULL || json_array_append_new(arr, e) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    if (arr == NULL)
        return KB_ERR_NOMEM;
    o = json_pack("{s:s,s:s,s:o}", "client", c->spiffe_id, "application", c->app_name, "secrets",
                  arr);
    body = o ? kb_json_dump(o) : NULL;
    json_decref(o);
    if (body == NULL)
        return KB_ERR_NOMEM;
    kb_json_free_str(body);
    return KB_OK;
}

static void *run(void *arg)
{
    job *j = arg;
    for (long i = 0; i < j->n && j->rc == KB_OK; i++) {
        store_client c;
        store_record *recs = NULL;
        size_t n = 0;
        j->rc = store_client_get(j->st, ID, &c);
        if (j->rc != KB_OK)
            break;
        j->rc = store_client_seen(j->st, c.id, 1700000000, false);
        if (j->rc == KB_OK)
            j->rc = store_readable_list(j->st, c.id, &recs, &n);
        if (j->rc == KB_OK)
            j->rc = store_client_seen(j->st, c.id, 1700000000, true);
        if (j->rc == KB_OK && with_json)
            j->rc = render(&c, recs, n);
        store_records_free(recs, n);
        store_client_clear(&c);
    }
    return NULL;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int measure(store *st, long requests, int threads)
{
    pthread_t th[64];
    job j[64];
    double c0 = cpu_now(), w0 = wall_now(), c1, w1;
    for (int i = 0; i < threads; i++) {
        j[i].st = st;
        j[i].n = requests / threads;
        j[i].rc = KB_OK;
        if (pthread_create(&th[i], NULL, run, &j[i]) != 0)
            return 1;
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (j[i].rc != KB_OK) {
            fprintf(stderr, "storebench: %s\n", kb_err_str(j[i].rc));
            return 1;
        }
    }
    c1 = cpu_now();
    w1 = wall_now();
    printf("threads %d: %.1f us CPU per request, %.0f requests/s\n", threads,
           (c1 - c0) * 1e6 / (double)requests, (double)requests / (w1 - w0));
    return 0;
}

int main(int argc, char **argv)
{
    char url[600];
    uint8_t k[32];
    kb_secret *key = NULL;
    store *st = NULL;
    store_opts o = {0};
    long requests = argc > 2 ? strtol(argv[2], NULL, 10) : 20000;
    int threads = argc > 3 ? (int)strtol(argv[3], NULL, 10) : 2;
    int secrets = argc > 4 ? (int)strtol(argv[4], NULL, 10) : 20;
    int64_t cid, gid;

    with_json = argc > 5 && strcmp(argv[5], "json") == 0;
    kb_json_init();
    if (argc < 2 || requests < 1 || threads < 1 || threads > 64 || secrets < 1) {
        fprintf(stderr, "usage: storebench DBDIR [REQUESTS] [THREADS] [SECRETS]\n");
        return 2;
    }
    snprintf(url, sizeof(url), "sqlite:%s/storebench.db", argv[1]);
    memset(k, 7, sizeof(k));
    if (kb_secret_from(k, sizeof(k), &key) != KB_OK)
        return 1;
    o.row_mac_key = key;
    if (store_open(url, &o, &st) != KB_OK)
        return 1;
    {
        store_client_new cn = {.spiffe_id = ID, .enabled = true};
        store_secret_new sn = {0};
        store_version_new vn = {.content_len = 32, .metadata = "{\"owner\":\"bench\"}"};
        char name[32];
        if (store_client_create(st, &cn, ADMIN, 1, &cid, NULL) != KB_OK ||
            store_group_create(st, "bench", NULL, ADMIN, 1, &gid, NULL) != KB_OK ||
            store_membership_add(st, cid, gid, NULL) != KB_OK)
            return 1;
        for (int i = 0; i < secrets; i++) {
            int64_t id;
            snprintf(name, sizeof(name), "bench-secret-%03d", i);
            sn.name = name;
            if (store_secret_create(st, &sn, &vn, seal, NULL, ADMIN, 1, &id, NULL) != KB_OK ||
                store_grant_add(st, gid, id, NULL) != KB_OK)
                return 1;
        }
    }
    if (measure(st, requests / 10, 1) != 0 || /* warm-up */
        measure(st, requests, 1) != 0 || (threads > 1 && measure(st, requests, threads) != 0))
        return 1;
    store_close(st);
    kb_secret_free(key);
    return 0;
}
