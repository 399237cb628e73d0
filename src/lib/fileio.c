/* fileio.c - bounded reads, secret-file reads, atomic writes. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static kb_err read_fd(int fd, size_t max, kb_dbuf *b)
{
    uint8_t chunk[4096];
    size_t total = 0;
    kb_err rc = KB_OK;

    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        KB_ENSURE_OUT(rc, n >= 0, KB_ERR_IO);
        if (n == 0)
            break;
        KB_ENSURE_OUT(rc, total + (size_t)n <= max, KB_ERR_TOO_LARGE);
        KB_GUARD_OUT(rc, kb_dbuf_add(b, chunk, (size_t)n));
        total += (size_t)n;
    }
out:
    kb_wipe(chunk, sizeof(chunk));
    return rc;
}

kb_err kb_file_read(const char *path, size_t max, kb_dbuf *b)
{
    struct stat st;
    int fd;
    kb_err rc;

    KB_ENSURE_REF(path);
    /* O_NONBLOCK: opening a FIFO (or a device) must not block before fstat refuses it; on a
     * regular file it changes nothing (POSIX open(), read()). */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    KB_ENSURE(fd >= 0, KB_ERR_IO);
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return KB_ERR_IO;
    }
    if ((size_t)st.st_size > max) {
        close(fd);
        return KB_ERR_TOO_LARGE;
    }
    rc = read_fd(fd, max, b);
    close(fd);
    return rc;
}

kb_err kb_file_read_secret(const char *path, size_t max, kb_secret **out)
{
    struct stat st;
    kb_dbuf b;
    kb_err rc = KB_OK;
    int fd = -1;
    size_t len;

    KB_ENSURE_REF(path);
    KB_ENSURE_REF(out);
    *out = NULL;
    kb_dbuf_init(&b, max);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* see kb_file_read */
    KB_ENSURE_OUT(rc, fd >= 0, KB_ERR_IO);
    KB_ENSURE_OUT(rc, fstat(fd, &st) == 0 && S_ISREG(st.st_mode), KB_ERR_IO);
    KB_ENSURE_OUT(rc, (st.st_mode & 077) == 0, KB_ERR_CONFIG);
    KB_ENSURE_OUT(rc, (size_t)st.st_size <= max, KB_ERR_TOO_LARGE);
    KB_GUARD_OUT(rc, read_fd(fd, max, &b));
    len = b.len;
    if (len > 0 && b.p[len - 1] == '\n')
        len--;
    if (len > 0 && b.p[len - 1] == '\r')
        len--;
    KB_GUARD_OUT(rc, kb_secret_from(b.p, len, out));
out:
    if (fd >= 0)
        close(fd);
    kb_dbuf_free(&b);
    return rc;
}

kb_err kb_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[4096], dir[4096];
    const uint8_t *p = data;
    size_t left = len;
    int fd = -1, dfd = -1;
    kb_err rc = KB_OK;
    int n;

    KB_ENSURE_REF(path);
    KB_ENSURE(data != NULL || len == 0, KB_ERR_NULL);
    n = snprintf(dir, sizeof(dir), "%s", path);
    KB_ENSURE(n > 0 && (size_t)n < sizeof(dir), KB_ERR_TOO_LARGE);
    n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.XXXXXX", path, (long)getpid());
    KB_ENSURE(n > 0 && (size_t)n < sizeof(tmp), KB_ERR_TOO_LARGE);

    fd = mkostemp(tmp, O_CLOEXEC); /* created 0600 */
    KB_ENSURE_OUT(rc, fd >= 0, KB_ERR_IO);
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        KB_ENSURE_OUT(rc, w > 0, KB_ERR_IO);
        p += w;
        left -= (size_t)w;
    }
    KB_ENSURE_OUT(rc, fchmod(fd, mode) == 0, KB_ERR_IO);
    KB_ENSURE_OUT(rc, fsync(fd) == 0, KB_ERR_IO);
    KB_ENSURE_OUT(rc, close(fd) == 0, KB_ERR_IO);
    fd = -1;
    KB_ENSURE_OUT(rc, rename(tmp, path) == 0, KB_ERR_IO);
    tmp[0] = 0;
    dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    KB_ENSURE_OUT(rc, dfd >= 0 && fsync(dfd) == 0, KB_ERR_IO);
out:
    if (fd >= 0)
        close(fd);
    if (dfd >= 0)
        close(dfd);
    if (rc != KB_OK && tmp[0])
        unlink(tmp);
    return rc;
}
