/* ref_bootstrap.c - the smallest Lambda custom runtime: the reference for bench/lambda.
 *
 * GET /2018-06-01/runtime/invocation/next, POST {} to .../invocation/ID/response, again, until
 * /next answers anything but 200. No TLS, no JSON, no configuration: what any bootstrap pays
 * before doing its own work (exec, dynamic loading of libc, one loopback connection per call).
 * Built as the CMake target bench_lambda_ref_bootstrap (build/bench/lambda/ref_bootstrap), linked
 * against libc only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strcasestr (the build defines it too) */
#endif
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int http(const char *api, const char *req, size_t reqlen, char *resp, size_t cap)
{
    char host[256];
    const char *colon = strrchr(api, ':');
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    size_t got = 0;
    int fd;
    if (colon == NULL || (size_t)(colon - api) >= sizeof host)
        return -1;
    memcpy(host, api, (size_t)(colon - api));
    host[colon - api] = '\0';
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
        return -1;
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
        write(fd, req, reqlen) != (ssize_t)reqlen) {
        freeaddrinfo(ai);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    freeaddrinfo(ai);
    /* Connection: close on every request: read until EOF. */
    while (got + 1 < cap) {
        ssize_t n = read(fd, resp + got, cap - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    resp[got] = '\0';
    close(fd);
    return strncmp(resp, "HTTP/1.1 200", 12) == 0 ? 200 : 0;
}

int main(void)
{
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    char req[1024], resp[65536], id[128];
    if (api == NULL)
        return 2;
    for (;;) {
        const char *h;
        size_t n = 0;
        int len = snprintf(req, sizeof req,
                           "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: %s\r\n"
                           "Connection: close\r\n\r\n",
                           api);
        if (len < 0 || (size_t)len >= sizeof req ||
            http(api, req, (size_t)len, resp, sizeof resp) != 200)
            return 1;
        h = strcasestr(resp, "\r\nLambda-Runtime-Aws-Request-Id:");
        if (h == NULL)
            return 1;
        h += strlen("\r\nLambda-Runtime-Aws-Request-Id:");
        while (*h == ' ')
            h++;
        while (h[n] != '\r' && h[n] != '\0' && n + 1 < sizeof id) {
            id[n] = h[n];
            n++;
        }
        id[n] = '\0';
        len = snprintf(req, sizeof req,
                       "POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: %s\r\n"
                       "Content-Type: application/json\r\nContent-Length: 2\r\n"
                       "Connection: close\r\n\r\n{}",
                       id, api);
        if (len < 0 || (size_t)len >= sizeof req)
            return 1;
        http(api, req, (size_t)len, resp, sizeof resp);
    }
}
