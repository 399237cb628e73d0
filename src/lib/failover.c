/* failover.c - server URL lists and their per-client order (see failover.h). */
#include "failover.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

size_t kb_failover_offset(const char *name, size_t n)
{
    /* SHA-256, not a short hash: FNV's low bits follow the bytes' low bits (modulo 2 it is the
     * parity of the odd bytes), so similar SPIFFE IDs would pile onto one replica */
    uint8_t md[SHA256_DIGEST_LENGTH];
    uint64_t h = 0;
    const char *s = name ? name : "";
    if (n == 0)
        return 0;
    SHA256((const unsigned char *)s, strlen(s), md);
    for (int i = 0; i < 8; i++)
        h = h << 8 | md[i];
    return (size_t)(h % (uint64_t)n);
}

int kb_failover_status(int status)
{
    return status == 502 || status == 503 || status == 504;
}

static int blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

kb_err kb_urllist_add(kb_urllist *l, const char *list, const char *prefix)
{
    char *add[KB_FAILOVER_MAX_URLS];
    size_t na = 0, len;
    const char *p;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(l);
    KB_ENSURE_REF(list);
    len = strlen(list);
    KB_ENSURE(len <= KB_FAILOVER_MAX_LIST, KB_ERR_TOO_LARGE);
    p = list;
    for (;;) {
        const char *e = strchr(p, ',');
        const char *end = e ? e : p + strlen(p);
        while (p < end && blank(*p))
            p++;
        while (end > p && blank(end[-1]))
            end--;
        KB_ENSURE_OUT(rc, end > p, KB_ERR_INVALID);
        KB_ENSURE_OUT(rc, l->n + na < KB_FAILOVER_MAX_URLS, KB_ERR_TOO_LARGE);
        KB_ENSURE_OUT(rc,
                      prefix == NULL || ((size_t)(end - p) >= strlen(prefix) &&
                                         strncmp(p, prefix, strlen(prefix)) == 0),
                      KB_ERR_INVALID);
        add[na] = strndup(p, (size_t)(end - p));
        KB_ENSURE_OUT(rc, add[na] != NULL, KB_ERR_NOMEM);
        na++;
        if (e == NULL)
            break;
        p = e + 1;
    }
    for (size_t i = 0; i < na; i++)
        l->url[l->n++] = add[i];
    return KB_OK;
out:
    for (size_t i = 0; i < na; i++)
        free(add[i]);
    return rc;
}

void kb_urllist_free(kb_urllist *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->url[i]);
    memset(l, 0, sizeof(*l));
}

void kb_urllist_order(kb_urllist *l, const char *client)
{
    if (l)
        l->start = kb_failover_offset(client, l->n);
}

const char *kb_urllist_at(const kb_urllist *l, size_t i)
{
    if (l == NULL || l->n == 0)
        return NULL;
    return l->url[(l->start + i) % l->n];
}
