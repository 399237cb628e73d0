/* kbtest_softhsm.h - a throwaway SoftHSM2 token for unit tests (C twin of tests/lib/softhsm.sh).
 *
 *     kbtest_softhsm t;
 *     assert_int_equal(kbtest_softhsm_make(&t, "kb-test"), 0);
 *     ... kb_keystore_open_pkcs11(KBTEST_SOFTHSM_MODULE, t.label, "master", pin, &ks) ...
 *     kbtest_softhsm_remove(&t);
 *
 * make() creates a temp dir holding softhsm2.conf (tokens under <dir>/tokens, file backend), sets
 * SOFTHSM2_CONF to it (SoftHSM2 reads it at C_Initialize, so a test never touches /etc/softhsm
 * nor another test's tokens), runs `softhsm2-util --init-token --free`, and writes the user PIN
 * to <dir>/pin with mode 0600. PINs are random per token. If dir_hint is set (e.g. from
 * $KB_KEEP_TOKEN_DIR), that directory is used and remove() leaves it in place.
 */
#ifndef KBTEST_SOFTHSM_H
#define KBTEST_SOFTHSM_H

#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/rand.h>

#ifndef KBTEST_SOFTHSM_MODULE
#define KBTEST_SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#endif

extern char **environ;

typedef struct {
    char dir[512];
    char conf[600];
    char pin_file[600];
    char label[33];
    char pin[33];
    char so_pin[33];
    int keep;
} kbtest_softhsm;

static inline int kbtest_softhsm_rm_cb(const char *p, const struct stat *sb, int flag,
                                       struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static inline void kbtest_softhsm_rmrf(const char *dir)
{
    (void)nftw(dir, kbtest_softhsm_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Run argv, stdout/stderr to /dev/null; returns the exit status or -1. */
static inline int kbtest_run(char *const argv[])
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int st = 0;

    if (posix_spawn_file_actions_init(&fa) != 0)
        return -1;
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline int kbtest_random_pin(char out[33])
{
    unsigned char r[16];
    if (RAND_bytes(r, sizeof(r)) != 1)
        return -1;
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
    return 0;
}

static inline int kbtest_write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    size_t n = strlen(text);
    if (fd < 0)
        return -1;
    if (write(fd, text, n) != (ssize_t)n || fchmod(fd, mode) != 0) {
        close(fd);
        return -1;
    }
    return close(fd);
}

/* Use (and point SOFTHSM2_CONF at) a token directory without creating a token: for tests that
 * need "no such token". */
static inline int kbtest_softhsm_conf(kbtest_softhsm *t, const char *dir_hint)
{
    char tokens[640], text[800];

    memset(t, 0, sizeof(*t));
    if (dir_hint != NULL && dir_hint[0] != '\0') {
        if (mkdir(dir_hint, 0700) != 0 && access(dir_hint, W_OK) != 0)
            return -1;
        snprintf(t->dir, sizeof(t->dir), "%s", dir_hint);
        t->keep = 1;
    } else {
        char tmpl[] = "/tmp/kbhsm.XXXXXX";
        if (mkdtemp(tmpl) == NULL)
            return -1;
        snprintf(t->dir, sizeof(t->dir), "%s", tmpl);
    }
    snprintf(t->conf, sizeof(t->conf), "%s/softhsm2.conf", t->dir);
    snprintf(t->pin_file, sizeof(t->pin_file), "%s/pin", t->dir);
    snprintf(tokens, sizeof(tokens), "%s/tokens", t->dir);
    if (mkdir(tokens, 0700) != 0 && access(tokens, W_OK) != 0)
        return -1;
    snprintf(text, sizeof(text),
             "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
             "slots.removable = false\n",
             tokens);
    if (kbtest_write_file(t->conf, text, 0600) != 0)
        return -1;
    return setenv("SOFTHSM2_CONF", t->conf, 1);
}

/* A conf plus an initialised token labelled label, PIN in t->pin and t->pin_file. 0 on success. */
static inline int kbtest_softhsm_make_in(kbtest_softhsm *t, const char *label, const char *dir_hint)
{
    if (kbtest_softhsm_conf(t, dir_hint) != 0)
        return -1;
    snprintf(t->label, sizeof(t->label), "%s", label);
    if (kbtest_random_pin(t->pin) != 0 || kbtest_random_pin(t->so_pin) != 0)
        return -1;
    char *argv[] = {"softhsm2-util", "--init-token", "--free", "--label", t->label,
                    "--so-pin",      t->so_pin,      "--pin",  t->pin,    NULL};
    if (kbtest_run(argv) != 0)
        return -1;
    return kbtest_write_file(t->pin_file, t->pin, 0600);
}

static inline int kbtest_softhsm_make(kbtest_softhsm *t, const char *label)
{
    return kbtest_softhsm_make_in(t, label, NULL);
}

static inline void kbtest_softhsm_remove(kbtest_softhsm *t)
{
    if (t->dir[0] != '\0' && !t->keep)
        kbtest_softhsm_rmrf(t->dir);
    memset(t->pin, 0, sizeof(t->pin));
    memset(t->so_pin, 0, sizeof(t->so_pin));
    t->dir[0] = '\0';
}

#endif
