/* generate_pgp.c - OpenPGP key pairs made by GnuPG through gpgme, in a private temporary home
 * (generate.h, docs/internals/generate.md "OpenPGP"). */
#include "generate_pgp.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gpgme.h>

#include "lib/log.h"
#include "lib/utf8.h"

extern char **environ;

static pthread_once_t gpg_once = PTHREAD_ONCE_INIT;
static bool gpg_ready;

static void gpg_init(void)
{
    gpg_ready = gpgme_check_version(NULL) != NULL &&
                gpgme_engine_check_version(GPGME_PROTOCOL_OpenPGP) == GPG_ERR_NO_ERROR;
}

kb_err generate_pgp_check_uid(const char *uid)
{
    size_t n;
    KB_ENSURE_REF(uid);
    n = strlen(uid);
    KB_ENSURE(n > 0, KB_ERR_INVALID);
    KB_ENSURE(n <= GEN_PGP_UID_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(kb_utf8_valid((const uint8_t *)uid, n), KB_ERR_INVALID);
    for (size_t i = 0; i < n; i++)
        KB_ENSURE((unsigned char)uid[i] >= 0x20 && uid[i] != 0x7f, KB_ERR_INVALID);
    /* GnuPG trims surrounding spaces: a user ID it would change is refused, not altered. */
    KB_ENSURE(uid[0] != ' ' && uid[n - 1] != ' ', KB_ERR_INVALID);
    return KB_OK;
}

/* ---- the temporary home -------------------------------------------------------------------- */

/* nftw has no context argument: the walk's first error, per thread. */
static _Thread_local int wipe_errno;

/* Overwrite a regular file with zeros, then remove it; remove anything else (sockets, links,
 * directories after their contents: FTW_DEPTH). */
static int wipe_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_DP) {
        if (rmdir(path) != 0 && wipe_errno == 0)
            wipe_errno = errno;
        return 0;
    }
    if (type == FTW_F && S_ISREG(st->st_mode) && st->st_size > 0) {
        int fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            static const char zeros[4096];
            off_t left = st->st_size;
            while (left > 0) {
                size_t chunk = left > (off_t)sizeof(zeros) ? sizeof(zeros) : (size_t)left;
                ssize_t w = write(fd, zeros, chunk);
                if (w <= 0)
                    break;
                left -= w;
            }
            (void)fsync(fd);
            close(fd);
        }
    }
    if (unlink(path) != 0 && errno != ENOENT && wipe_errno == 0)
        wipe_errno = errno;
    return 0;
}

/* Run gpgconf --homedir home ARG (its output discarded); true if it ran and exited 0. */
static bool gpgconf(const char *home, const char *arg1, const char *arg2)
{
    char *argv[] = {"gpgconf", "--homedir", (char *)home, (char *)arg1, (char *)arg2, NULL};
    /* the gpgconf gpgme itself uses (an absolute path), not whatever PATH finds */
    const char *bin = gpg_ready ? gpgme_get_dirinfo("gpgconf-name") : NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none;
    pid_t pid;
    int st = 0, e;

    if (bin == NULL || bin[0] != '/' || posix_spawn_file_actions_init(&fa) != 0)
        return false;
    if (posix_spawnattr_init(&at) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return false;
    }
    /* keybridged's threads block SIGTERM/SIGINT/SIGHUP (kb_prog_serve): not the child's */
    sigemptyset(&none);
    (void)posix_spawnattr_setsigmask(&at, &none);
    (void)posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
    (void)posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    (void)posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    (void)posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    e = posix_spawn(&pid, bin, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (e != 0)
        return false;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return false;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

kb_err generate_pgp_home_wipe(const char *home)
{
    struct stat hs;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(home);
    if (lstat(home, &hs) != 0 && errno == ENOENT)
        return KB_OK;
    pthread_once(&gpg_once, gpg_init);
    /* The agent (and anything else gpg started for this home) first, so that nothing holds or
     * rewrites a file while it is wiped; then its socket directory, if it has one elsewhere
     * (/run/user/UID/gnupg/d.*). A missing gpgconf leaves the agent to notice its socket gone. */
    if (!gpgconf(home, "--kill", "all"))
        kb_log(KB_LOG_WARN, "gen_pgp_agent_kill_failed", NULL);
    (void)gpgconf(home, "--remove-socketdir", NULL);
    /* The agent removes its sockets while it exits: walk again until the directory is gone
     * (bounded: 50 x 20 ms). */
    for (int i = 0; i < 50; i++) {
        struct stat st;
        wipe_errno = 0;
        if (lstat(home, &st) != 0 && errno == ENOENT)
            return KB_OK;
        (void)nftw(home, wipe_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        if (wipe_errno == 0)
            return KB_OK;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    rc = KB_ERR_IO;
    kb_log(KB_LOG_ERROR, "gen_pgp_home_wipe_failed", "dir", home, "error", strerror(wipe_errno),
           NULL);
    return rc;
}

kb_err generate_pgp_home_new(const char *base_dir, char *buf, size_t len)
{
    /* tmpfs first, so that the key files never reach a disk */
    const char *const bases[] = {"/dev/shm", getenv("TMPDIR"), "/tmp"};
    KB_ENSURE_REF(buf);
    KB_ENSURE(len > 0, KB_ERR_INVALID);
    for (size_t i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
        const char *base = base_dir ? base_dir : bases[i];
        if (base_dir != NULL && i > 0)
            break;
        struct stat st;
        if (base == NULL || base[0] != '/')
            continue;
        int n = snprintf(buf, len, "%s/kb-gpg-XXXXXX", base);
        if (n < 0 || (size_t)n >= len)
            continue;
        if (mkdtemp(buf) == NULL)
            continue;
        /* mkdtemp makes it 0700; check rather than trust the umask-free promise */
        if (lstat(buf, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 077) == 0)
            return KB_OK;
        (void)rmdir(buf);
    }
    buf[0] = '\0';
    return KB_ERR_IO;
}

/* ---- gpgme ---------------------------------------------------------------------------------- */

/* A gpgme data sink writing into locked memory (a fixed kb_secret), refusing to grow past it. */
typedef struct {
    kb_secret *buf;
    size_t used;
} sink;

static ssize_t sink_write(void *h, const void *p, size_t n)
{
    sink *s = h;
    if (n > kb_secret_len(s->buf) - s->used) {
        errno = EFBIG;
        return -1;
    }
    memcpy(kb_secret_data(s->buf) + s->used, p, n);
    s->used += n;
    return (ssize_t)n;
}

static kb_err gpg_err(gpgme_error_t e, const char *what)
{
    char msg[128];
    gpgme_strerror_r(e, msg, sizeof(msg));
    kb_log(KB_LOG_ERROR, "gen_pgp_failed", "step", what, "error", msg, NULL);
    return gpgme_err_code(e) == GPG_ERR_ENOMEM ? KB_ERR_NOMEM : KB_ERR_CRYPTO;
}

/* Never asked for (the key has no passphrase): refuse rather than block. */
static gpgme_error_t no_passphrase(void *h, const char *uid_hint, const char *info, int prev_bad,
                                   int fd)
{
    (void)h;
    (void)uid_hint;
    (void)info;
    (void)prev_bad;
    (void)fd;
    return gpgme_error(GPG_ERR_CANCELED);
}

/* Export fpr (secret or public, armoured) into a locked buffer of at most GEN_PGP_ARMOR_MAX. */
static kb_err export_key(gpgme_ctx_t ctx, const char *fpr, bool secret, kb_secret **out)
{
    struct gpgme_data_cbs cbs = {.write = sink_write};
    gpgme_data_t d = NULL;
    sink s = {0};
    gpgme_error_t e;
    kb_err rc;

    KB_GUARD(kb_secret_new(GEN_PGP_ARMOR_MAX, &s.buf));
    e = gpgme_data_new_from_cbs(&d, &cbs, &s);
    if (e != 0) {
        rc = gpg_err(e, "data");
        goto out;
    }
    e = gpgme_op_export(ctx, fpr, secret ? GPGME_EXPORT_MODE_SECRET : 0, d);
    if (e != 0) {
        rc = gpg_err(e, secret ? "export_secret" : "export_public");
        goto out;
    }
    KB_ENSURE_OUT(rc, s.used > 0, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, kb_secret_truncate(s.buf, s.used));
    *out = s.buf;
    s.buf = NULL;
out:
    gpgme_data_release(d);
    kb_secret_free(s.buf);
    return rc;
}

/* The earliest expiry of the key's usable subkeys (the primary is the first); 0 if none. */
static int64_t earliest_expiry(gpgme_key_t key)
{
    int64_t best = 0;
    for (gpgme_subkey_t sk = key->subkeys; sk != NULL; sk = sk->next)
        if (sk->expires > 0 && (best == 0 || sk->expires < best))
            best = sk->expires;
    return best;
}

static kb_err make_in(const char *home, const char *uid, const char *algo, const char *subalgo,
                      unsigned long secs, kb_secret **secret, char **pub, int64_t *expires)
{
    gpgme_ctx_t ctx = NULL;
    gpgme_key_t key = NULL;
    gpgme_genkey_result_t res;
    kb_secret *pubbuf = NULL;
    char *fpr = NULL;
    gpgme_error_t e;
    kb_err rc = KB_OK;

    e = gpgme_new(&ctx);
    if (e != 0)
        return gpg_err(e, "new");
    if ((e = gpgme_set_protocol(ctx, GPGME_PROTOCOL_OpenPGP)) != 0 ||
        (e = gpgme_ctx_set_engine_info(ctx, GPGME_PROTOCOL_OpenPGP, NULL, home)) != 0 ||
        (e = gpgme_set_pinentry_mode(ctx, GPGME_PINENTRY_MODE_LOOPBACK)) != 0) {
        rc = gpg_err(e, "setup");
        goto out;
    }
    gpgme_set_passphrase_cb(ctx, no_passphrase, NULL);
    gpgme_set_offline(ctx, 1);
    gpgme_set_armor(ctx, 1);
    /* Ed25519 primary (certify + sign) and a Curve25519 encryption subkey, both expiring after
     * secs, without a passphrase (the content is sealed under the HSM key when stored). */
    e = gpgme_op_createkey(ctx, uid, algo, 0, secs, NULL,
                           GPGME_CREATE_SIGN | GPGME_CREATE_CERT | GPGME_CREATE_NOPASSWD |
                               GPGME_CREATE_FORCE);
    if (e != 0) {
        rc = gpg_err(e, "createkey");
        goto out;
    }
    res = gpgme_op_genkey_result(ctx);
    KB_ENSURE_OUT(rc, res != NULL && res->fpr != NULL, KB_ERR_CRYPTO);
    fpr = strdup(res->fpr);
    KB_ENSURE_OUT(rc, fpr != NULL, KB_ERR_NOMEM);
    if ((e = gpgme_get_key(ctx, fpr, &key, 1)) != 0) {
        rc = gpg_err(e, "get_key");
        goto out;
    }
    e = gpgme_op_createsubkey(ctx, key, subalgo, 0, secs,
                              GPGME_CREATE_ENCR | GPGME_CREATE_NOPASSWD);
    if (e != 0) {
        rc = gpg_err(e, "createsubkey");
        goto out;
    }
    gpgme_key_unref(key);
    key = NULL;
    if ((e = gpgme_get_key(ctx, fpr, &key, 0)) != 0) {
        rc = gpg_err(e, "get_key");
        goto out;
    }
    KB_ENSURE_OUT(rc, key->subkeys != NULL && key->subkeys->next != NULL, KB_ERR_CRYPTO);
    *expires = earliest_expiry(key);
    KB_GUARD_OUT(rc, export_key(ctx, fpr, true, secret));
    KB_GUARD_OUT(rc, export_key(ctx, fpr, false, &pubbuf));
    *pub = strndup((const char *)kb_secret_cdata(pubbuf), kb_secret_len(pubbuf));
    KB_ENSURE_OUT(rc, *pub != NULL, KB_ERR_NOMEM);
out:
    if (rc != KB_OK) {
        kb_secret_free(*secret);
        *secret = NULL;
    }
    kb_secret_free(pubbuf);
    gpgme_key_unref(key);
    gpgme_release(ctx);
    free(fpr);
    return rc;
}

kb_err generate_pgp_make(const char *uid, int64_t expires_at, int64_t now, kb_secret **secret,
                         char **pub, int64_t *expires)
{
    return generate_pgp_make_algo(NULL, uid, GEN_PGP_ALGO, GEN_PGP_SUBALGO, expires_at, now, secret,
                                  pub, expires);
}

kb_err generate_pgp_make_algo(const char *base_dir, const char *uid, const char *algo,
                              const char *subalgo, int64_t expires_at, int64_t now,
                              kb_secret **secret, char **pub, int64_t *expires)
{
    char home[256];
    kb_err rc, wrc;

    KB_ENSURE_REF(secret);
    KB_ENSURE_REF(pub);
    KB_ENSURE_REF(expires);
    KB_ENSURE_REF(algo);
    KB_ENSURE_REF(subalgo);
    *secret = NULL;
    *pub = NULL;
    *expires = 0;
    KB_GUARD(generate_pgp_check_uid(uid));
    KB_ENSURE(expires_at >= now + GEN_PGP_EXPIRES_MIN_SECS, KB_ERR_INVALID);
    KB_ENSURE(expires_at <= now + GEN_PGP_EXPIRES_MAX_SECS, KB_ERR_INVALID);
    pthread_once(&gpg_once, gpg_init);
    if (!gpg_ready) {
        kb_log(KB_LOG_ERROR, "gen_pgp_unavailable", "why", "gpgme or gpg not usable", NULL);
        return KB_ERR_UNAVAILABLE;
    }
    KB_GUARD(generate_pgp_home_new(base_dir, home, sizeof(home)));
    rc = make_in(home, uid, algo, subalgo, (unsigned long)(expires_at - now), secret, pub, expires);
    wrc = generate_pgp_home_wipe(home);
    if (rc == KB_OK && wrc != KB_OK) {
        /* key material may be left on the host: do not hand out a key that leaked */
        kb_secret_free(*secret);
        *secret = NULL;
        free(*pub);
        *pub = NULL;
        *expires = 0;
        rc = wrc;
    }
    return rc;
}
