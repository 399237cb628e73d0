/* sink_dir.c - directory sink (see sink_dir.h, docs/keybridge-sync.md "dir sink"). */
#include "sink_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "lib/buf.h"
#include "lib/json.h"
#include "lib/log.h"

typedef struct {
    char *path;
    int dirfd;
    char **owners, **groups;
    int as_root;
    char *app;
    json_t *files; /* name -> {file, version, checksum, sha256, mode} */
    int dirty;
    char **wanted_files; /* files the listing maps to (never unlinked by a delete) */
    size_t n_wanted;
} dirsink;

static char **copy_list(const char *const *l)
{
    size_t n = 0;
    char **c;
    while (l && l[n])
        n++;
    c = calloc(n + 1, sizeof(*c));
    for (size_t i = 0; c && i < n; i++) {
        c[i] = strdup(l[i]);
        if (c[i] == NULL) {
            for (size_t j = 0; j < i; j++)
                free(c[j]);
            free(c);
            return NULL;
        }
    }
    return c;
}

static void free_list(char **l)
{
    for (size_t i = 0; l && l[i]; i++)
        free(l[i]);
    free(l);
}

static int in_list(char *const *l, const char *s)
{
    for (size_t i = 0; l && l[i]; i++)
        if (strcmp(l[i], s) == 0)
            return 1;
    return 0;
}

kb_err sync_dir_filename(const char *name, const json_t *metadata, const char **out)
{
    const char *f = name;
    const json_t *v = metadata ? json_object_get(metadata, "filename") : NULL;
    size_t n;
    if (v != NULL) {
        KB_ENSURE(json_is_string(v), KB_ERR_INVALID);
        f = json_string_value(v);
    }
    KB_ENSURE_REF(f);
    n = strnlen(f, 256);
    /* No path separators, nothing hidden (our state and temporaries start with '.'). */
    KB_ENSURE(n > 0 && n <= 255, KB_ERR_INVALID);
    KB_ENSURE(f[0] != '.' && strchr(f, '/') == NULL, KB_ERR_INVALID);
    for (size_t i = 0; i < n; i++)
        KB_ENSURE((unsigned char)f[i] >= 0x20 && f[i] != 0x7f, KB_ERR_INVALID);
    *out = f;
    return KB_OK;
}

kb_err sync_dir_mode(const json_t *metadata, unsigned *mode)
{
    const json_t *v = metadata ? json_object_get(metadata, "mode") : NULL;
    const char *s;
    unsigned m = 0;
    size_t n;
    *mode = SYNC_DIR_DEFAULT_MODE;
    if (v == NULL)
        return KB_OK;
    KB_ENSURE(json_is_string(v), KB_ERR_INVALID);
    s = json_string_value(v);
    n = strlen(s);
    KB_ENSURE(n >= 1 && n <= 5, KB_ERR_INVALID);
    for (size_t i = 0; i < n; i++) {
        KB_ENSURE(s[i] >= '0' && s[i] <= '7', KB_ERR_INVALID);
        m = m * 8 + (unsigned)(s[i] - '0');
    }
    /* Never set-id, sticky, group- or world-writable (issue 6 point 2). */
    KB_ENSURE((m & ~0777u) == 0, KB_ERR_INVALID);
    KB_ENSURE((m & 022u) == 0, KB_ERR_INVALID);
    *mode = m;
    return KB_OK;
}

static void sha256_hex(const uint8_t *p, size_t n, char hex[65])
{
    uint8_t h[SHA256_DIGEST_LENGTH];
    SHA256(p, n, h);
    kb_hex(h, sizeof(h), hex);
}

/* Read a regular file through the directory handle, never following a link. */
static kb_err read_at(int dirfd, const char *file, size_t max, kb_secret **out, struct stat *st)
{
    int fd = openat(dirfd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    kb_secret *s = NULL;
    size_t got = 0;
    kb_err rc = KB_OK;
    if (fd < 0)
        return errno == ENOENT ? KB_ERR_NOT_FOUND : KB_ERR_IO;
    KB_ENSURE_OUT(rc, fstat(fd, st) == 0 && S_ISREG(st->st_mode), KB_ERR_IO);
    KB_ENSURE_OUT(rc, (size_t)st->st_size <= max, KB_ERR_TOO_LARGE);
    KB_GUARD_OUT(rc, kb_secret_new((size_t)st->st_size, &s));
    while (got < (size_t)st->st_size) {
        ssize_t r = read(fd, kb_secret_data(s) + got, (size_t)st->st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        KB_ENSURE_OUT(rc, r > 0, KB_ERR_IO);
        got += (size_t)r;
    }
    *out = s;
    s = NULL;
out:
    kb_secret_free(s);
    close(fd);
    return rc;
}

static kb_err write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        KB_ENSURE(w > 0, KB_ERR_IO);
        p += w;
        n -= (size_t)w;
    }
    return KB_OK;
}

/* temp + write + chown + chmod + fsync + renameat + fsync(dir), all relative to dirfd. */
static kb_err write_at(int dirfd, const char *file, const uint8_t *p, size_t n, unsigned mode,
                       uid_t uid, gid_t gid)
{
    uint8_t rnd[8];
    char rhex[17], tmp[64];
    int fd;
    kb_err rc = KB_OK;
    KB_ENSURE(RAND_bytes(rnd, sizeof(rnd)) == 1, KB_ERR_CRYPTO);
    kb_hex(rnd, sizeof(rnd), rhex);
    snprintf(tmp, sizeof(tmp), "%s%s", SYNC_DIR_TMP_PREFIX, rhex);
    fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    KB_ENSURE(fd >= 0, KB_ERR_IO);
    KB_GUARD_OUT(rc, write_all(fd, p, n));
    if (uid != (uid_t)-1 || gid != (gid_t)-1)
        KB_ENSURE_OUT(rc, fchown(fd, uid, gid) == 0, KB_ERR_IO);
    KB_ENSURE_OUT(rc, fchmod(fd, (mode_t)mode) == 0, KB_ERR_IO);
    KB_ENSURE_OUT(rc, fsync(fd) == 0, KB_ERR_IO);
    KB_ENSURE_OUT(rc, close(fd) == 0, KB_ERR_IO);
    fd = -1;
    KB_ENSURE_OUT(rc, renameat(dirfd, tmp, dirfd, file) == 0, KB_ERR_IO);
    KB_ENSURE_OUT(rc, fsync(dirfd) == 0, KB_ERR_IO);
out:
    if (fd >= 0)
        close(fd);
    if (rc != KB_OK)
        unlinkat(dirfd, tmp, 0);
    return rc;
}

/* Leftover temporaries from a crashed run. */
static void clean_temps(int dirfd)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    struct dirent *de;
    if (d == NULL) {
        if (fd >= 0)
            close(fd);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, SYNC_DIR_TMP_PREFIX, strlen(SYNC_DIR_TMP_PREFIX)) == 0)
            unlinkat(dirfd, de->d_name, 0);
    }
    closedir(d);
}

static kb_err state_entry(const json_t *e, const char **file, int64_t *version,
                          const char **checksum, const char **sha, unsigned *mode)
{
    const json_t *f = json_object_get(e, "file"), *v = json_object_get(e, "version"),
                 *c = json_object_get(e, "checksum"), *h = json_object_get(e, "sha256"),
                 *m = json_object_get(e, "mode");
    KB_ENSURE(json_is_object(e) && json_is_string(f) && json_is_integer(v) && json_is_string(c) &&
                  json_is_string(h) && json_is_integer(m),
              KB_ERR_INVALID);
    KB_ENSURE(sync_checksum_ok(json_string_value(c)) && strlen(json_string_value(h)) == 64,
              KB_ERR_INVALID);
    *file = json_string_value(f);
    *version = json_integer_value(v);
    *checksum = json_string_value(c);
    *sha = json_string_value(h);
    *mode = (unsigned)json_integer_value(m);
    return KB_OK;
}

static kb_err dir_load(sync_sink *s, const char *app, sync_state *out, sync_summary *sum)
{
    dirsink *d = s->impl;
    kb_secret *raw = NULL;
    json_t *doc = NULL, *files;
    struct stat st;
    char err[128];
    const char *name;
    json_t *e;
    size_t n = 0;
    kb_err rc;

    memset(out, 0, sizeof(*out));
    free(d->app);
    d->app = strdup(app);
    KB_ENSURE(d->app != NULL, KB_ERR_NOMEM);
    clean_temps(d->dirfd);
    sum->calls[SYNC_OP_DIR_READ]++;
    rc = read_at(d->dirfd, SYNC_DIR_STATE, SYNC_DIR_STATE_MAX, &raw, &st);
    if (rc == KB_ERR_NOT_FOUND) {
        d->files = json_object();
        return d->files ? KB_OK : KB_ERR_NOMEM;
    }
    KB_GUARD_OUT(rc, rc);
    /* The state holds SHA-256 of contents: as private as the files themselves. */
    if ((st.st_mode & 077) != 0) {
        kb_log(KB_LOG_ERROR, "state_file_refused", "reason", "group- or world-accessible", NULL);
        rc = KB_ERR_CONFIG;
        goto out;
    }
    KB_GUARD_OUT(rc, kb_json_parse(kb_secret_cdata(raw), kb_secret_len(raw), SYNC_DIR_STATE_MAX,
                                   &doc, err, sizeof(err)));
    files = json_object_get(doc, "files");
    KB_ENSURE_OUT(rc, json_is_integer(json_object_get(doc, "version")) && json_is_object(files),
                  KB_ERR_INVALID);
    if (!json_is_string(json_object_get(doc, "application")) ||
        strcmp(json_string_value(json_object_get(doc, "application")), app) != 0) {
        kb_log(KB_LOG_ERROR, "state_file_refused", "reason",
               "the directory is managed for another application", NULL);
        rc = KB_ERR_DENIED;
        goto out;
    }
    out->e = calloc(json_object_size(files) + 1, sizeof(*out->e));
    KB_ENSURE_OUT(rc, out->e != NULL, KB_ERR_NOMEM);
    json_object_foreach(files, name, e)
    {
        const char *file, *checksum, *sha;
        int64_t version;
        unsigned mode;
        kb_secret *content = NULL;
        struct stat fst;
        sync_entry *se = &out->e[n];
        const char *dummy;
        KB_ENSURE_OUT(rc, sync_name_ok(name), KB_ERR_INVALID);
        KB_GUARD_OUT(rc, state_entry(e, &file, &version, &checksum, &sha, &mode));
        KB_ENSURE_OUT(rc, sync_dir_filename(file, NULL, &dummy) == KB_OK, KB_ERR_INVALID);
        se->name = strdup(name);
        KB_ENSURE_OUT(rc, se->name != NULL, KB_ERR_NOMEM);
        n++;
        out->n = n;
        se->version = version;
        memcpy(se->checksum, checksum, SYNC_CHECKSUM_HEX + 1);
        if (read_at(d->dirfd, file, SYNC_DIR_FILE_MAX, &content, &fst) == KB_OK) {
            char hex[65];
            sha256_hex(kb_secret_cdata(content), kb_secret_len(content), hex);
            se->intact = kb_ct_eq(hex, sha, 64) && (fst.st_mode & 07777) == mode;
            kb_secret_free(content);
        }
        if (!se->intact)
            kb_log(KB_LOG_WARN, "file_needs_repair", "secret", name, "file", file, NULL);
    }
    json_decref(d->files);
    d->files = json_incref(files);
    rc = KB_OK;
out:
    json_decref(doc);
    kb_secret_free(raw);
    if (rc != KB_OK)
        sync_state_clear(out);
    return rc;
}

static kb_err dir_begin(sync_sink *s, const sync_listing *l, int *bad)
{
    dirsink *d = s->impl;
    const char **files = calloc(l->n + 1, sizeof(*files));
    KB_ENSURE(files != NULL, KB_ERR_NOMEM);
    free_list(d->wanted_files);
    d->wanted_files = calloc(l->n + 1, sizeof(char *));
    d->n_wanted = 0;
    if (d->wanted_files == NULL) {
        free(files);
        return KB_ERR_NOMEM;
    }
    for (size_t i = 0; i < l->n; i++) {
        unsigned mode;
        if (sync_dir_filename(l->items[i].name, l->items[i].metadata, &files[i]) != KB_OK ||
            sync_dir_mode(l->items[i].metadata, &mode) != KB_OK) {
            kb_log(KB_LOG_ERROR, "bad_metadata", "secret", l->items[i].name, NULL);
            bad[i] = 1;
            files[i] = NULL;
            continue;
        }
        d->wanted_files[d->n_wanted] = strdup(files[i]);
        if (d->wanted_files[d->n_wanted] == NULL) {
            free(files);
            return KB_ERR_NOMEM;
        }
        d->n_wanted++;
    }
    /* Two secrets mapping to one file both fail (issue 6 point 2): quadratic only in the
     * number of secrets per directory, which keysync-style directories keep small. */
    for (size_t i = 0; i < l->n; i++) {
        for (size_t j = i + 1; files[i] && j < l->n; j++) {
            if (files[j] && strcmp(files[i], files[j]) == 0) {
                kb_log(KB_LOG_ERROR, "file_collision", "secret", l->items[i].name, "other",
                       l->items[j].name, NULL);
                bad[i] = bad[j] = 1;
            }
        }
    }
    free(files);
    return KB_OK;
}

static kb_err resolve_owner(dirsink *d, const json_t *meta, uid_t *uid, gid_t *gid)
{
    const char *owner = json_string_value(json_object_get(meta, "owner"));
    const char *group = json_string_value(json_object_get(meta, "group"));
    char buf[4096];
    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (!d->as_root)
        return KB_OK; /* keysync: ownership is only set when running as root */
    if (owner) {
        struct passwd pw, *pp = NULL;
        KB_ENSURE(in_list(d->owners, owner), KB_ERR_DENIED);
        KB_ENSURE(getpwnam_r(owner, &pw, buf, sizeof(buf), &pp) == 0 && pp, KB_ERR_NOT_FOUND);
        *uid = pp->pw_uid;
    }
    if (group) {
        struct group gr, *gp = NULL;
        KB_ENSURE(in_list(d->groups, group), KB_ERR_DENIED);
        KB_ENSURE(getgrnam_r(group, &gr, buf, sizeof(buf), &gp) == 0 && gp, KB_ERR_NOT_FOUND);
        *gid = gp->gr_gid;
    }
    return KB_OK;
}

static int file_wanted(const dirsink *d, const char *file)
{
    for (size_t i = 0; i < d->n_wanted; i++)
        if (strcmp(d->wanted_files[i], file) == 0)
            return 1;
    return 0;
}

static kb_err dir_write(sync_sink *s, const sync_entry *cur, const sync_content *c,
                        sync_summary *sum)
{
    dirsink *d = s->impl;
    const char *file, *old_file = NULL;
    unsigned mode;
    uid_t uid;
    gid_t gid;
    char sha[65];
    json_t *e, *old;
    kb_err rc;
    KB_GUARD(sync_dir_filename(c->name, c->metadata, &file));
    KB_GUARD(sync_dir_mode(c->metadata, &mode));
    rc = resolve_owner(d, c->metadata, &uid, &gid);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "owner_refused", "secret", c->name, "reason",
               "owner or group not in the allow-list", NULL);
        return rc;
    }
    KB_ENSURE(kb_secret_len(c->content) <= SYNC_DIR_FILE_MAX, KB_ERR_TOO_LARGE);
    sum->calls[SYNC_OP_DIR_WRITE]++;
    KB_GUARD(write_at(d->dirfd, file, kb_secret_cdata(c->content), kb_secret_len(c->content), mode,
                      uid, gid));
    sync_crash_point();
    sha256_hex(kb_secret_cdata(c->content), kb_secret_len(c->content), sha);
    old = cur ? json_object_get(d->files, cur->name) : NULL;
    if (old)
        old_file = json_string_value(json_object_get(old, "file"));
    /* The file name changed (filename metadata): remove the old file unless another wants it. */
    if (old_file && strcmp(old_file, file) != 0 && !file_wanted(d, old_file)) {
        sum->calls[SYNC_OP_DIR_UNLINK]++;
        unlinkat(d->dirfd, old_file, 0);
    }
    e = json_pack("{s:s,s:I,s:s,s:s,s:I}", "file", file, "version", (json_int_t)c->version,
                  "checksum", c->checksum, "sha256", sha, "mode", (json_int_t)mode);
    KB_ENSURE(e != NULL, KB_ERR_NOMEM);
    KB_ENSURE(json_object_set_new(d->files, c->name, e) == 0, KB_ERR_NOMEM);
    d->dirty = 1;
    return KB_OK;
}

static kb_err dir_remove(sync_sink *s, const sync_entry *cur, sync_summary *sum)
{
    dirsink *d = s->impl;
    const json_t *e = json_object_get(d->files, cur->name);
    const char *file = json_string_value(json_object_get(e, "file"));
    if (file && !file_wanted(d, file)) {
        sum->calls[SYNC_OP_DIR_UNLINK]++;
        if (unlinkat(d->dirfd, file, 0) != 0 && errno != ENOENT)
            return KB_ERR_IO;
        KB_ENSURE(fsync(d->dirfd) == 0, KB_ERR_IO);
        sync_crash_point();
    }
    json_object_del(d->files, cur->name);
    d->dirty = 1;
    return KB_OK;
}

static kb_err dir_finish(sync_sink *s, sync_summary *sum)
{
    dirsink *d = s->impl;
    json_t *doc;
    char *text;
    kb_err rc;
    if (!d->dirty)
        return KB_OK;
    doc = json_pack("{s:i,s:s,s:O}", "version", 1, "application", d->app ? d->app : "", "files",
                    d->files);
    KB_ENSURE(doc != NULL, KB_ERR_NOMEM);
    text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    KB_ENSURE(text != NULL, KB_ERR_NOMEM);
    sum->calls[SYNC_OP_DIR_WRITE]++;
    rc = write_at(d->dirfd, SYNC_DIR_STATE, (const uint8_t *)text, strlen(text), 0600, (uid_t)-1,
                  (gid_t)-1);
    kb_json_free_str(text);
    if (rc == KB_OK) {
        d->dirty = 0;
        sync_crash_point();
    }
    return rc;
}

static void dir_free(sync_sink *s)
{
    dirsink *d;
    if (s == NULL)
        return;
    d = s->impl;
    if (d) {
        if (d->dirfd >= 0)
            close(d->dirfd);
        free(d->path);
        free(d->app);
        free_list(d->owners);
        free_list(d->groups);
        free_list(d->wanted_files);
        json_decref(d->files);
        free(d);
    }
    free(s);
}

static const sync_sink_ops DIR_OPS = {
    .kind = "dir",
    .load = dir_load,
    .begin = dir_begin,
    .confirm = NULL, /* the state file is authoritative: nothing lags */
    .write = dir_write,
    .restore = NULL,
    .remove = dir_remove,
    .finish = dir_finish,
    .free = dir_free,
};

kb_err sync_sink_dir_new(const sync_dir_opts *o, sync_sink **out)
{
    sync_sink *s;
    dirsink *d;
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    KB_ENSURE(o->path != NULL && o->path[0] != '\0', KB_ERR_CONFIG);
    s = calloc(1, sizeof(*s));
    d = calloc(1, sizeof(*d));
    if (s == NULL || d == NULL) {
        free(s);
        free(d);
        return KB_ERR_NOMEM;
    }
    s->ops = &DIR_OPS;
    s->impl = d;
    d->dirfd = -1;
    snprintf(s->label, sizeof(s->label), "dir:%s", o->path);
    d->path = strdup(o->path);
    d->owners = copy_list(o->owners);
    d->groups = copy_list(o->groups);
    d->as_root = o->as_root < 0 ? geteuid() == 0 : o->as_root;
    if (d->path == NULL || d->owners == NULL || d->groups == NULL) {
        dir_free(s);
        return KB_ERR_NOMEM;
    }
    /* The directory itself must not be a symlink either. */
    d->dirfd = open(o->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (d->dirfd < 0) {
        kb_log(KB_LOG_ERROR, "dir_open_failed", "path", o->path, "reason", strerror(errno), NULL);
        dir_free(s);
        return KB_ERR_CONFIG;
    }
    *out = s;
    return KB_OK;
}
