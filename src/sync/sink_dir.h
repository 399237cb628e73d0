/* sink_dir.h - the data-center sink: one file per secret in a directory (keysync semantics).
 *
 *  - file name: the secret's name, or its `filename` metadata (no '/', not starting with '.',
 *    at most 255 bytes); two secrets mapping to one file both fail;
 *  - every file operation goes through a directory descriptor opened with O_NOFOLLOW, and
 *    openat(O_NOFOLLOW | O_EXCL) for temporaries: a symlink is never followed;
 *  - write: temporary file (0600), write, fchown (root only), fchmod, fsync, renameat, fsync dir;
 *  - mode from the `mode` metadata (octal, default 0400); group- or world-writable modes and
 *    set-id bits are refused; `owner` / `group` metadata applied only when running as root and
 *    only for names in the local allow-lists (otherwise the secret fails);
 *  - state file SYNC_DIR_STATE (0600, JSON): per secret its file, version, checksum, SHA-256 and
 *    mode, so a restart does not refetch everything; a file whose SHA-256 or mode no longer
 *    matches, or that is gone, is rewritten on the next run. */
#ifndef KB_SYNC_SINK_DIR_H
#define KB_SYNC_SINK_DIR_H

#include "sink.h"

#define SYNC_DIR_STATE ".keybridge-sync.state"
#define SYNC_DIR_TMP_PREFIX ".keybridge-sync.tmp."
#define SYNC_DIR_STATE_MAX ((size_t)64 * 1024 * 1024)
#define SYNC_DIR_FILE_MAX ((size_t)1024 * 1024)
#define SYNC_DIR_DEFAULT_MODE 0400

typedef struct {
    const char *path;          /* the directory (must exist) */
    const char *const *owners; /* allow-list of user names (NULL-terminated) or NULL */
    const char *const *groups; /* allow-list of group names (NULL-terminated) or NULL */
    int as_root;               /* -1: geteuid() == 0; tests force 0 or 1 */
} sync_dir_opts;

KB_WUR kb_err sync_sink_dir_new(const sync_dir_opts *o, sync_sink **out);

/* Helpers exposed for tests: the file a secret maps to, and its mode. */
KB_WUR kb_err sync_dir_filename(const char *name, const json_t *metadata, const char **out);
KB_WUR kb_err sync_dir_mode(const json_t *metadata, unsigned *mode);

#endif
