/* creds.c - credentials file parsing (see creds.h). */
#include "creds.h"

#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/fileio.h"
#include "store.h"

typedef struct {
    char akid[CACHE_AKID_MAX + 1];
    char account[CACHE_ACCOUNT_LEN + 1];
    kb_secret *key;
} cred;

struct cache_creds {
    size_t n, cap;
    cred *v;
};

static int is_akid_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Secret access keys are printable ASCII without spaces (AWS uses base64-like characters). */
static int is_key_char(char c)
{
    return c > ' ' && c < 0x7f;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Split one line into up to 4 fields; returns the number found. */
static size_t split(const char *p, size_t n, const char **f, size_t *fl, size_t max)
{
    size_t i = 0, k = 0;
    while (i < n) {
        while (i < n && is_space(p[i]))
            i++;
        if (i == n)
            break;
        if (k == max)
            return max + 1;
        f[k] = p + i;
        while (i < n && !is_space(p[i]))
            i++;
        fl[k] = (size_t)(p + i - f[k]);
        k++;
    }
    return k;
}

static kb_err parse_line(const char *p, size_t n, cred *out)
{
    const char *f[3];
    size_t fl[3];
    size_t k = split(p, n, f, fl, 3);

    KB_ENSURE(k == 3, KB_ERR_INVALID);
    KB_ENSURE(fl[0] >= CACHE_AKID_MIN && fl[0] <= CACHE_AKID_MAX, KB_ERR_INVALID);
    for (size_t i = 0; i < fl[0]; i++)
        KB_ENSURE(is_akid_char(f[0][i]), KB_ERR_INVALID);
    KB_ENSURE(fl[1] >= 1 && fl[1] <= CACHE_SECRET_KEY_MAX, KB_ERR_INVALID);
    for (size_t i = 0; i < fl[1]; i++)
        KB_ENSURE(is_key_char(f[1][i]), KB_ERR_INVALID);
    KB_ENSURE(fl[2] == CACHE_ACCOUNT_LEN, KB_ERR_INVALID);
    for (size_t i = 0; i < fl[2]; i++)
        KB_ENSURE(f[2][i] >= '0' && f[2][i] <= '9', KB_ERR_INVALID);
    memcpy(out->akid, f[0], fl[0]);
    out->akid[fl[0]] = '\0';
    memcpy(out->account, f[2], fl[2]);
    out->account[fl[2]] = '\0';
    return kb_secret_from(f[1], fl[1], &out->key);
}

kb_err cache_creds_parse(const char *text, size_t len, cache_creds **out, size_t *bad_line)
{
    cache_creds *c = NULL;
    kb_err rc = KB_OK;
    size_t pos = 0, line = 0;

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(text || len == 0, KB_ERR_NULL);
    KB_ENSURE(len <= CACHE_CREDS_FILE_MAX, KB_ERR_TOO_LARGE);
    c = calloc(1, sizeof(*c));
    KB_ENSURE_OUT(rc, c != NULL, KB_ERR_NOMEM);
    while (pos < len) {
        const char *p = text + pos;
        const char *nl = memchr(p, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - p) : len - pos;
        size_t i = 0;
        pos += n + (nl ? 1 : 0);
        line++;
        if (n > 0 && p[n - 1] == '\r')
            n--;
        while (i < n && is_space(p[i]))
            i++;
        if (i == n || p[i] == '#')
            continue;
        KB_ENSURE_OUT(rc, c->n < CACHE_CREDS_MAX, KB_ERR_TOO_LARGE);
        KB_GUARD_OUT(rc, kb_grow((void **)&c->v, &c->cap, c->n, sizeof(*c->v)));
        rc = parse_line(p, n, &c->v[c->n]);
        if (rc != KB_OK) {
            if (bad_line)
                *bad_line = line;
            goto out;
        }
        c->n++;
        /* A duplicated key id would make the lookup ambiguous: refuse the file. */
        for (size_t j = 0; j + 1 < c->n; j++) {
            if (strcmp(c->v[j].akid, c->v[c->n - 1].akid) == 0) {
                if (bad_line)
                    *bad_line = line;
                rc = KB_ERR_INVALID;
                goto out;
            }
        }
    }
    KB_ENSURE_OUT(rc, c->n > 0, KB_ERR_INVALID);
    *out = c;
    c = NULL;
out:
    cache_creds_free(c);
    return rc;
}

kb_err cache_creds_load(const char *path, cache_creds **out, size_t *bad_line)
{
    kb_secret *file = NULL;
    kb_err rc;
    KB_ENSURE_REF(path);
    KB_GUARD(kb_file_read_secret(path, CACHE_CREDS_FILE_MAX, &file));
    rc = cache_creds_parse((const char *)kb_secret_cdata(file), kb_secret_len(file), out, bad_line);
    kb_secret_free(file);
    return rc;
}

void cache_creds_free(cache_creds *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        kb_secret_free(c->v[i].key);
    /* The slot being parsed when an error struck may hold a key too. */
    if (c->v)
        kb_wipe(c->v, c->n * sizeof(*c->v));
    free(c->v);
    free(c);
}

size_t cache_creds_count(const cache_creds *c)
{
    return c ? c->n : 0;
}

kb_err cache_creds_lookup(const cache_creds *c, const char *akid, const kb_secret **key,
                          const char **account)
{
    KB_ENSURE_REF(c);
    KB_ENSURE_REF(akid);
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].akid, akid) == 0) {
            if (key)
                *key = c->v[i].key;
            if (account)
                *account = c->v[i].account;
            return KB_OK;
        }
    }
    return KB_ERR_NOT_FOUND;
}
