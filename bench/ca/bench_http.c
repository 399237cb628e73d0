/* bench_http.c - signing over a CA's network API (issue 5 benchmark, part b): N pre-made CSRs
 * POSTed over T keep-alive HTTPS connections (one libcurl handle per thread, reused, so one TLS
 * handshake per thread), every reply checked for status 200 and a certificate.
 *
 *   bench_http kb    URL CSR_FILE N T CERT KEY CAFILE   keybridge-ca /v1/svid/renew (mTLS)
 *   bench_http cfssl URL CSR_FILE N T - - CAFILE        cfssl /api/v1/cfssl/sign
 *
 * CSR_FILE holds PEM CSRs back to back; request i sends CSR i mod count. The request bodies are
 * built before the clock starts. Prints one JSON line. Built by CMake (bench_ca_bench_http),
 * run by bench/ca/run.sh. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define BODY_MAX (64 * 1024)

static char **g_body;
static size_t *g_len;
static int g_ncsr, g_n, g_next, g_ok, g_fail;
static const char *g_url, *g_cert, *g_key, *g_ca;
static int g_cfssl;

typedef struct {
    char buf[BODY_MAX];
    size_t len;
} resp;

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
    resp *r = arg;
    size_t l = sz * n;

    if (r->len + l >= sizeof(r->buf))
        return 0; /* oversized reply: fail the transfer */
    memcpy(r->buf + r->len, p, l);
    r->len += l;
    r->buf[r->len] = '\0';
    return l;
}

static void *worker(void *arg)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    resp *r = malloc(sizeof(*r));
    long code;
    int i;

    (void)arg;
    if (c == NULL || r == NULL) {
        curl_easy_cleanup(c);
        free(r);
        return NULL;
    }
    h = curl_slist_append(h, g_cfssl ? "Content-Type: application/json"
                                     : "Content-Type: application/pkcs10");
    curl_easy_setopt(c, CURLOPT_URL, g_url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (strncmp(g_url, "https:", 6) == 0) {
        curl_easy_setopt(c, CURLOPT_CAINFO, g_ca);
        /* SVIDs carry a URI SAN, no host name (X509-SVID.md 2); the chain is still verified. */
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
        if (g_cert != NULL) {
            curl_easy_setopt(c, CURLOPT_SSLCERT, g_cert);
            curl_easy_setopt(c, CURLOPT_SSLKEY, g_key);
        }
    }
    while ((i = __atomic_fetch_add(&g_next, 1, __ATOMIC_RELAXED)) < g_n) {
        r->len = 0;
        r->buf[0] = '\0';
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, g_body[i % g_ncsr]);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)g_len[i % g_ncsr]);
        code = 0;
        if (curl_easy_perform(c) == CURLE_OK &&
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK && code == 200 &&
            strstr(r->buf, "BEGIN CERTIFICATE") != NULL) {
            __atomic_add_fetch(&g_ok, 1, __ATOMIC_RELAXED);
        } else {
            if (__atomic_add_fetch(&g_fail, 1, __ATOMIC_RELAXED) <= 3)
                fprintf(stderr, "request %d: status %ld: %.300s\n", i, code, r->buf);
        }
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(r);
    return NULL;
}

/* The PEM as a JSON string body for cfssl: {"certificate_request": "..."}. */
static char *cfssl_body(const char *pem, size_t len, size_t *out_len)
{
    char *b = malloc(2 * len + 64);
    size_t o = 0;

    if (b == NULL)
        return NULL;
    o += (size_t)snprintf(b, 64, "{\"certificate_request\":\"");
    for (size_t i = 0; i < len; i++) {
        if (pem[i] == '\n') {
            b[o++] = '\\';
            b[o++] = 'n';
        } else {
            b[o++] = pem[i];
        }
    }
    b[o++] = '"';
    b[o++] = '}';
    b[o] = '\0';
    *out_len = o;
    return b;
}

static int load_csrs(const char *path)
{
    static const char begin[] = "-----BEGIN CERTIFICATE REQUEST-----";
    FILE *f = fopen(path, "rb");
    char *all, *p, *q;
    long sz;
    int cap = 0;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET))
        return -1;
    all = malloc((size_t)sz + 1);
    if (all == NULL || fread(all, 1, (size_t)sz, f) != (size_t)sz)
        return -1;
    fclose(f);
    all[sz] = '\0';
    for (p = strstr(all, begin); p != NULL; p = q) {
        size_t len;
        q = strstr(p + 1, begin);
        len = q ? (size_t)(q - p) : strlen(p);
        if (g_ncsr == cap) {
            cap = cap ? 2 * cap : 1024;
            g_body = realloc(g_body, (size_t)cap * sizeof(*g_body));
            g_len = realloc(g_len, (size_t)cap * sizeof(*g_len));
            if (g_body == NULL || g_len == NULL)
                return -1;
        }
        if (g_cfssl) {
            g_body[g_ncsr] = cfssl_body(p, len, &g_len[g_ncsr]);
        } else {
            g_body[g_ncsr] = strndup(p, len);
            g_len[g_ncsr] = len;
        }
        if (g_body[g_ncsr++] == NULL)
            return -1;
    }
    free(all);
    return g_ncsr > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    pthread_t th[64];
    struct timespec a, b;
    struct rusage ru;
    double secs, cpu;
    int t;

    if (argc != 9) {
        fprintf(stderr, "usage: bench_http kb|cfssl URL CSR_FILE N THREADS CERT|- KEY|- CAFILE\n");
        return 2;
    }
    g_cfssl = strcmp(argv[1], "cfssl") == 0;
    g_url = argv[2];
    g_n = (int)strtol(argv[4], NULL, 10);
    t = (int)strtol(argv[5], NULL, 10);
    g_cert = strcmp(argv[6], "-") ? argv[6] : NULL;
    g_key = strcmp(argv[7], "-") ? argv[7] : NULL;
    g_ca = argv[8];
    if (t < 1 || t > 64 || g_n < 1 || load_csrs(argv[3]) != 0) {
        fprintf(stderr, "bad arguments or CSR file\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_ALL);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < t; i++)
        pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    getrusage(RUSAGE_SELF, &ru);
    secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
          (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("{\"tool\":\"%s\",\"requests\":%d,\"ok\":%d,\"failed\":%d,\"connections\":%d,"
           "\"seconds\":%.3f,\"per_second\":%.0f,\"client_cpu_seconds\":%.2f}\n",
           argv[1], g_n, g_ok, g_fail, t, secs, (double)g_ok / secs, cpu);
    curl_global_cleanup();
    return g_fail ? 1 : 0;
}
