/* bench_issue.c - in-process issuance rate (issue 5 benchmark, part a): key generation + leaf
 * signing + PEM output in memory, N SVIDs over T threads, with the SoftHSM2 key or the file key.
 * Built by CMake (bench_ca_bench_issue), run by bench/ca/run.sh against an existing keybridge-ca
 * database (no audit rows: ca_issue with audit_target NULL, the benchmark's "output in memory"). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "ca/ca.h"
#include "lib/json.h"

static ca_authority *g_ca;
static int g_per_thread;
static int g_fail;

static void *worker(void *arg)
{
    spiffe_id id;
    const char *why;
    char s[128];

    for (int i = 0; i < g_per_thread; i++) {
        ca_svid sv;
        snprintf(s, sizeof(s), "spiffe://example.org/bench/t%ld/%d", (long)(intptr_t)arg, i);
        if (spiffe_id_parse_str(s, &id, &why) != KB_OK ||
            ca_issue(g_ca, &id, 3600, NULL, NULL, NULL, &sv) != KB_OK) {
            __atomic_add_fetch(&g_fail, 1, __ATOMIC_RELAXED);
            continue;
        }
        ca_svid_clear(&sv);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    ca_store *st = NULL;
    ca_keys k;
    kb_secret *pin = NULL;
    pthread_t th[64];
    struct timespec a, b;
    struct rusage ru;
    int n, t;
    double secs, cpu;

    if (argc < 4) {
        fprintf(stderr, "usage: bench_issue DB N THREADS [MODULE TOKEN PIN]\n");
        return 2;
    }
    kb_json_init();
    if (kb_secmem_init() != KB_OK)
        return 1;
    n = (int)strtol(argv[2], NULL, 10);
    t = (int)strtol(argv[3], NULL, 10);
    if (t < 1 || t > 64 || n < t)
        return 2;
    memset(&k, 0, sizeof(k));
    if (argc >= 7) {
        if (kb_secret_from(argv[6], strlen(argv[6]), &pin) != KB_OK)
            return 1;
        k.pkcs11_module = argv[4];
        k.pkcs11_token = argv[5];
        k.pin = pin;
    }
    if (ca_store_open(argv[1], &st) != KB_OK || ca_open(st, &k, &g_ca) != KB_OK) {
        fprintf(stderr, "cannot open the CA\n");
        return 1;
    }
    g_per_thread = n / t;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < t; i++)
        pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    getrusage(RUSAGE_SELF, &ru); /* includes opening the CA: a few ms */
    secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
          (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    /* cpu_us_each is what a loaded, shared machine does not distort: 2 cores / cpu_us_each is
     * the rate the two threads would reach with the cores to themselves. */
    printf("{\"svids\":%d,\"threads\":%d,\"seconds\":%.3f,\"per_second\":%.0f,"
           "\"cpu_us_each\":%.1f,\"failed\":%d}\n",
           g_per_thread * t, t, secs, (double)(g_per_thread * t) / secs,
           cpu * 1e6 / (double)(g_per_thread * t), g_fail);
    ca_free(g_ca);
    ca_store_close(st);
    kb_secret_free(pin);
    return g_fail ? 1 : 0;
}
