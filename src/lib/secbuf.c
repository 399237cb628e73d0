/* secbuf.c - locked, undumpable, wiped-on-free memory for secrets. */
#include "secbuf.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "log.h"

struct kb_secret {
    uint8_t *map;   /* page-aligned mapping, mlocked */
    size_t map_len; /* mapping length (whole pages) */
    size_t len;     /* bytes in use */
};

static atomic_size_t live_count;

static size_t page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

kb_err kb_secmem_init(void)
{
    struct rlimit rl = {0, 0};
    char limit[64];
    void *probe;
    size_t ps = page_size();

    /* No core files and no ptrace/proc access from same-uid processes. */
    if (setrlimit(RLIMIT_CORE, &rl) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        kb_log(KB_LOG_ERROR, "secmem_harden_failed", "errno", strerror(errno), NULL);
        return KB_ERR_INTERNAL;
    }
    probe = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (probe == MAP_FAILED)
        return KB_ERR_NOMEM;
    if (mlock(probe, ps) != 0) {
        int e = errno;
        if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
            snprintf(limit, sizeof(limit), "%llu", (unsigned long long)rl.rlim_cur);
        else
            snprintf(limit, sizeof(limit), "unknown");
        munmap(probe, ps);
        kb_log(KB_LOG_ERROR, "secmem_lock_failed", "msg",
               "cannot lock memory for secrets: raise RLIMIT_MEMLOCK (ulimit -l, systemd "
               "LimitMEMLOCK=) or grant CAP_IPC_LOCK; refusing to start",
               "rlimit_memlock_bytes", limit, "errno", strerror(e), NULL);
        return KB_ERR_MEMLOCK;
    }
    munlock(probe, ps);
    munmap(probe, ps);
    return KB_OK;
}

kb_err kb_secret_new(size_t len, kb_secret **out)
{
    kb_secret *s;
    size_t ps = page_size();
    size_t map_len;

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(len <= KB_SECRET_MAX, KB_ERR_TOO_LARGE);
    map_len = ((len ? len : 1) + ps - 1) / ps * ps;
    s = calloc(1, sizeof(*s));
    KB_ENSURE(s != NULL, KB_ERR_NOMEM);
    s->map = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->map == MAP_FAILED) {
        free(s);
        return KB_ERR_NOMEM;
    }
    if (mlock(s->map, map_len) != 0) {
        munmap(s->map, map_len);
        free(s);
        kb_log(KB_LOG_ERROR, "secret_lock_failed", "msg",
               "cannot lock secret memory: raise RLIMIT_MEMLOCK", NULL);
        return KB_ERR_MEMLOCK;
    }
    (void)madvise(s->map, map_len, MADV_DONTDUMP);
    s->map_len = map_len;
    s->len = len;
    atomic_fetch_add(&live_count, 1);
    *out = s;
    return KB_OK;
}

kb_err kb_secret_from(const void *data, size_t len, kb_secret **out)
{
    KB_ENSURE(data != NULL || len == 0, KB_ERR_NULL);
    KB_GUARD(kb_secret_new(len, out));
    if (len)
        memcpy((*out)->map, data, len);
    return KB_OK;
}

kb_err kb_secret_truncate(kb_secret *s, size_t len)
{
    KB_ENSURE_REF(s);
    KB_ENSURE(len <= s->len, KB_ERR_INVALID);
    OPENSSL_cleanse(s->map + len, s->len - len);
    s->len = len;
    return KB_OK;
}

uint8_t *kb_secret_data(kb_secret *s)
{
    return s ? s->map : NULL;
}

const uint8_t *kb_secret_cdata(const kb_secret *s)
{
    return s ? s->map : NULL;
}

size_t kb_secret_len(const kb_secret *s)
{
    return s ? s->len : 0;
}

void kb_secret_free(kb_secret *s)
{
    if (s == NULL)
        return;
    OPENSSL_cleanse(s->map, s->map_len);
    munlock(s->map, s->map_len);
    munmap(s->map, s->map_len);
    free(s);
    atomic_fetch_sub(&live_count, 1);
}

void kb_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        OPENSSL_cleanse(p, n);
}

int kb_ct_eq(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

size_t kb_secret_live_count(void)
{
    return atomic_load(&live_count);
}
