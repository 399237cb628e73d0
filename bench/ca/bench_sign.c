/* bench_sign.c - the signing ceiling: N ECDSA P-256 signatures over a SHA-256 digest through
 * the CA's kb_ec_signer (SoftHSM2 token or dev file) on T threads, nothing else. Issuance can
 * never be faster than this. Built by CMake (bench_ca_bench_sign), run by bench/ca/run.sh. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "lib/json.h"
#include "lib/keystore.h"
#include "lib/secbuf.h"

static kb_ec_signer *g_s;
static int g_per_thread;
static int g_fail;

static void *worker(void *arg)
{
    uint8_t md[32], der[KB_EC_SIG_DER_MAX];
    size_t n;

    memset(md, (int)(intptr_t)arg, sizeof(md));
    for (int i = 0; i < g_per_thread; i++) {
        md[0] = (uint8_t)i;
        if (kb_ec_signer_sign(g_s, md, der, &n) != KB_OK)
            __atomic_add_fetch(&g_fail, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    kb_secret *pin = NULL;
    pthread_t th[64];
    struct timespec a, b;
    struct rusage ru;
    double secs, cpu;
    int n, t;

    if (argc != 4 && argc != 7) {
        fprintf(stderr, "usage: bench_sign KEYFILE|- N THREADS [MODULE TOKEN LABEL]\n"
                        "       (PIN on stdin for a token)\n");
        return 2;
    }
    kb_json_init();
    if (kb_secmem_init() != KB_OK)
        return 1;
    n = (int)strtol(argv[2], NULL, 10);
    t = (int)strtol(argv[3], NULL, 10);
    if (t < 1 || t > 64 || n < t)
        return 2;
    if (argc == 7) {
        char p[256];
        size_t l;
        if (fgets(p, sizeof(p), stdin) == NULL)
            return 2;
        l = strcspn(p, "\r\n");
        if (kb_secret_from(p, l, &pin) != KB_OK)
            return 1;
        kb_wipe(p, sizeof(p));
        if (kb_keystore_ec_open(argv[4], argv[5], argv[6], pin, &g_s) != KB_OK)
            return 1;
    } else if (kb_keystore_ec_open_file(argv[1], &g_s) != KB_OK) {
        return 1;
    }
    g_per_thread = n / t;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < t; i++)
        pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    getrusage(RUSAGE_SELF, &ru);
    secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
          (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("{\"signatures\":%d,\"threads\":%d,\"seconds\":%.3f,\"per_second\":%.0f,"
           "\"cpu_us_each\":%.1f,\"failed\":%d}\n",
           g_per_thread * t, t, secs, (double)(g_per_thread * t) / secs,
           cpu * 1e6 / (double)(g_per_thread * t), g_fail);
    kb_ec_signer_free(g_s);
    kb_secret_free(pin);
    return g_fail ? 1 : 0;
}
