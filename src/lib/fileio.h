/* fileio.h - bounded file reads and atomic, private file writes. */
#ifndef KB_FILEIO_H
#define KB_FILEIO_H

#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"
#include "secbuf.h"

/* Read a whole regular file of at most max bytes into b (appending). KB_ERR_TOO_LARGE if larger,
 * KB_ERR_IO if missing or not a regular file. Symlinks are followed (configuration paths). */
KB_WUR kb_err kb_file_read(const char *path, size_t max, kb_dbuf *b);

/* Read a secret file (PIN, key) of at most max bytes into locked memory. Refuses files that are
 * group- or world-accessible (mode & 077) with KB_ERR_CONFIG, so a leaked permission is noticed
 * rather than used. One trailing newline is stripped. */
KB_WUR kb_err kb_file_read_secret(const char *path, size_t max, kb_secret **out);

/* Write data to path atomically with the given mode: a temporary file in the same directory
 * (created 0600 with O_EXCL), write, fsync, fchmod, rename over path, fsync the directory.
 * The target is replaced even if it is a symlink (rename does not follow it). */
KB_WUR kb_err kb_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

#endif
