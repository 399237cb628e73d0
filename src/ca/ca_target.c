/* ca_target.c - dir: and Secrets Manager targets (see ca_target.h).
 *
 * Secrets Manager API reference: DescribeSecret, CreateSecret, GetResourcePolicy, RestoreSecret,
 * PutSecretValue, DeleteSecret (JSON 1.1 over SigV4; awsreq.h). SPIRE's SVIDStore format:
 * spire/pkg/common/plugin/aws/svidstore (spiffeID, x509SVID, x509SVIDKey, bundle,
 * federatedBundles), stored as SecretBinary.
 */
#include "ca_target.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "ca_assume.h"
#include "lib/awsreq.h"
#include "lib/buf.h"
#include "lib/fileio.h"
#include "lib/json.h"
#include "lib/log.h"

#define TAG_TD "keybridge:trust-domain"
#define TAG_REG "keybridge:registration"
#define TAG_SPIRE "spire-svid" /* SPIRE's aws_secretsmanager SVIDStore plugin: "true" */
#define RESP_MAX ((size_t)1024 * 1024)

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("/_+=.@-", c) != NULL;
}

static int canonical_abs(const char *p)
{
    const char *s = p;

    if (p[0] != '/' || p[1] == '\0')
        return 0; /* never the root directory itself */
    while (*s == '/') {
        const char *e = strchr(++s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return 0;
        s += n;
    }
    return *s == '\0';
}

kb_err ca_target_parse(const char *s, ca_target_spec *out, const char **why)
{
    const char *p, *c;
    size_t n;

    KB_ENSURE_REF(out);
    *why = "target must be dir:/ABSOLUTE/PATH or secretsmanager:ACCOUNT:NAME";
    memset(out, 0, sizeof(*out));
    KB_ENSURE(s != NULL, KB_ERR_INVALID);
    if (strlen(s) >= CA_TARGET_MAX) {
        *why = "target too long";
        return KB_ERR_TOO_LARGE;
    }
    if (strncmp(s, "dir:", 4) == 0) {
        p = s + 4;
        if (!canonical_abs(p)) {
            *why = "dir: needs a canonical absolute path (no '.', '..', '//' or trailing '/')";
            return KB_ERR_INVALID;
        }
        out->kind = CA_TARGET_DIR;
        snprintf(out->path, sizeof(out->path), "%s", p);
        return KB_OK;
    }
    if (strncmp(s, "secretsmanager:", 15) == 0) {
        p = s + 15;
        c = strchr(p, ':');
        if (c == NULL || c - p != 12) {
            *why = "secretsmanager: needs ACCOUNT:NAME with a 12-digit account";
            return KB_ERR_INVALID;
        }
        for (const char *q = p; q < c; q++)
            if (*q < '0' || *q > '9') {
                *why = "secretsmanager: account must be 12 digits";
                return KB_ERR_INVALID;
            }
        n = strlen(c + 1);
        if (n == 0 || n > CA_SM_NAME_MAX) {
            *why = "secretsmanager: secret name must be 1-512 characters";
            return KB_ERR_INVALID;
        }
        for (size_t i = 0; i < n; i++)
            if (!name_char(c[1 + i])) {
                *why = "secretsmanager: secret name has a character outside A-Z a-z 0-9 /_+=.@-";
                return KB_ERR_INVALID;
            }
        out->kind = CA_TARGET_SM;
        memcpy(out->account, p, 12);
        snprintf(out->name, sizeof(out->name), "%s", c + 1);
        return KB_OK;
    }
    return KB_ERR_INVALID;
}

/* ---- dir: ---------------------------------------------------------------------------------- */

/* Layout of a dir: target (docs/keybridge-ca.md, "dir: targets"):
 *
 *     DIR/.gen-<n>/{svid.pem,svid.key,bundle.pem}   one complete set per generation (0700/0600)
 *     DIR/current -> .gen-<n>                          switched with one rename(2)
 *     DIR/svid.pem -> current/svid.pem                 stable names for generic readers
 *     DIR/svid.key -> current/svid.key
 *     DIR/bundle.pem -> current/bundle.pem
 *     DIR/.lock                                        flock(2) between writers
 *
 * Separate renames of svid.key and svid.pem let a reader open a key and a certificate that do
 * not belong together (an fsync-long window between the two renames). Here a generation is
 * complete and fsync'd before it becomes visible, and rename(2) of the `current` symlink is the
 * single switch point (POSIX rename: atomic replacement of the name). A reader that opens
 * DIR/current once (as a directory fd) and openat()s the files gets a matching set, always; a
 * reader opening DIR/svid.pem and DIR/svid.key separately sees one switch point instead of two.
 * The previous generation is kept until the next write, so a reader that resolved `current`
 * just before a switch can still open its files; older ones are removed. stat(2) follows the
 * links, so file watchers (tlsctx) see a new inode at every switch, and kb_file_read_secret's
 * mode check applies to the 0600 file the links lead to. */
#define GEN_PREFIX ".gen-"
#define GEN_NAME_MAX 32

static const char *const dir_names[] = {"svid.key", "svid.pem", "bundle.pem"};

static kb_err write_at(int dfd, const char *name, const void *data, size_t len)
{
    const unsigned char *p = data;
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    kb_err rc = KB_OK;

    KB_ENSURE(fd >= 0, KB_ERR_IO);
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        KB_ENSURE_OUT(rc, w > 0, KB_ERR_IO);
        p += w;
        len -= (size_t)w;
    }
    KB_ENSURE_OUT(rc, fsync(fd) == 0, KB_ERR_IO);
out:
    if (close(fd) != 0 && rc == KB_OK)
        rc = KB_ERR_IO;
    return rc;
}

/* Remove DIR/<name>, a generation directory: only its plain entries, never following links. */
static kb_err gen_remove(int dfd, const char *name)
{
    int gfd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct dirent *e;
    DIR *d;

    if (gfd < 0)
        return errno == ENOENT ? KB_OK : KB_ERR_IO;
    d = fdopendir(gfd);
    if (d == NULL) {
        close(gfd);
        return KB_ERR_IO;
    }
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            (void)unlinkat(gfd, e->d_name, 0);
    closedir(d);
    return (unlinkat(dfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) ? KB_OK : KB_ERR_IO;
}

/* Generation number that DIR/current points to (0 if none or not ours). */
static uint64_t gen_current(int dfd, char *name, size_t len)
{
    char l[GEN_NAME_MAX + 1];
    ssize_t n = readlinkat(dfd, "current", l, sizeof(l) - 1);
    uint64_t v = 0;

    name[0] = '\0';
    if (n <= (ssize_t)strlen(GEN_PREFIX) || n >= (ssize_t)sizeof(l) - 1)
        return 0;
    l[n] = '\0';
    if (strncmp(l, GEN_PREFIX, strlen(GEN_PREFIX)) != 0)
        return 0;
    for (const char *c = l + strlen(GEN_PREFIX); *c; c++) {
        if (*c < '0' || *c > '9' || v > UINT64_MAX / 10 - 1)
            return 0;
        v = v * 10 + (uint64_t)(*c - '0');
    }
    snprintf(name, len, "%s", l);
    return v;
}

/* Make DIR/<name> a symlink to target, atomically (symlink to <name>.tmp, rename over). */
static kb_err link_set(int dfd, const char *name, const char *target)
{
    char cur[64], tmp[64];
    ssize_t n = readlinkat(dfd, name, cur, sizeof(cur) - 1);

    if (n >= 0) {
        cur[n] = '\0';
        if (strcmp(cur, target) == 0)
            return KB_OK;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", name);
    (void)unlinkat(dfd, tmp, 0);
    KB_ENSURE(symlinkat(target, dfd, tmp) == 0, KB_ERR_IO);
    if (renameat(dfd, tmp, dfd, name) != 0) {
        (void)unlinkat(dfd, tmp, 0);
        return KB_ERR_IO;
    }
    return KB_OK;
}

/* Open DIR (never through a symlink: the policy checked this path, not another) and take the
 * writers' lock. */
static kb_err dir_open_locked(const char *path, int create, int *dfd, int *lfd, const char **why)
{
    *dfd = *lfd = -1;
    *why = "cannot open the target directory";
    if (create && mkdir(path, 0700) != 0 && errno != EEXIST)
        return KB_ERR_IO;
    *dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (*dfd < 0) {
        if (errno == ENOENT && !create)
            return KB_ERR_NOT_FOUND;
        *why = "target is not a directory (symlinks are refused)";
        return errno == ELOOP || errno == ENOTDIR ? KB_ERR_DENIED : KB_ERR_IO;
    }
    *lfd = openat(*dfd, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (*lfd < 0 || flock(*lfd, LOCK_EX) != 0) {
        if (*lfd >= 0)
            close(*lfd);
        close(*dfd);
        *dfd = *lfd = -1;
        return KB_ERR_IO;
    }
    return KB_OK;
}

static void dir_close_locked(int dfd, int lfd)
{
    if (lfd >= 0)
        close(lfd); /* releases the flock */
    if (dfd >= 0)
        close(dfd);
}

static kb_err dir_write(const ca_target_spec *t, const ca_svid *sv, const char **why)
{
    char prev[GEN_NAME_MAX + 1], name[GEN_NAME_MAX + 1], lt[64];
    int dfd, lfd, gfd = -1, switched = 0;
    uint64_t n;
    kb_err rc;
    DIR *d = NULL;
    struct dirent *e;

    KB_ENSURE(sv->key_pem != NULL, KB_ERR_INTERNAL);
    KB_GUARD(dir_open_locked(t->path, 1, &dfd, &lfd, why));
    *why = "cannot write the target directory";
    n = gen_current(dfd, prev, sizeof(prev)) + 1;
    snprintf(name, sizeof(name), GEN_PREFIX "%llu", (unsigned long long)n);
    KB_GUARD_OUT(rc, gen_remove(dfd, name)); /* a leftover of an interrupted write */
    KB_ENSURE_OUT(rc, mkdirat(dfd, name, 0700) == 0, KB_ERR_IO);
    gfd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    KB_ENSURE_OUT(rc, gfd >= 0, KB_ERR_IO);
    KB_GUARD_OUT(
        rc, write_at(gfd, "svid.key", ca_keypem_data(sv->key_pem), ca_keypem_len(sv->key_pem)));
    KB_GUARD_OUT(rc, write_at(gfd, "svid.pem", sv->chain_pem, strlen(sv->chain_pem)));
    KB_GUARD_OUT(rc, write_at(gfd, "bundle.pem", sv->bundle_pem, strlen(sv->bundle_pem)));
    KB_ENSURE_OUT(rc, fsync(gfd) == 0, KB_ERR_IO);
    /* The switch: one rename of the `current` link. */
    KB_GUARD_OUT(rc, link_set(dfd, "current", name));
    switched = 1;
    for (size_t i = 0; i < KB_ARRAY_LEN(dir_names); i++) {
        /* First write into a directory of the old layout (regular files): replaced once. */
        snprintf(lt, sizeof(lt), "current/%s", dir_names[i]);
        KB_GUARD_OUT(rc, link_set(dfd, dir_names[i], lt));
    }
    KB_ENSURE_OUT(rc, fsync(dfd) == 0, KB_ERR_IO);
    /* Keep the previous generation for readers that resolved `current` just before the switch;
     * remove anything older. Failure to prune is not a failed write. */
    {
        int d2 = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (d2 >= 0 && (d = fdopendir(d2)) == NULL)
            close(d2);
    }
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, GEN_PREFIX, strlen(GEN_PREFIX)) != 0 ||
            strcmp(e->d_name, name) == 0 || strcmp(e->d_name, prev) == 0)
            continue;
        if (gen_remove(dfd, e->d_name) != KB_OK)
            kb_log(KB_LOG_WARN, "svid_generation_not_removed", "dir", t->path, "generation",
                   e->d_name, NULL);
    }
    rc = KB_OK;
    *why = NULL;
out:
    if (d != NULL)
        closedir(d);
    if (gfd >= 0)
        close(gfd);
    if (rc != KB_OK && gfd >= 0 && !switched)
        (void)gen_remove(dfd, name); /* never switched to: nothing refers to it */
    dir_close_locked(dfd, lfd);
    return rc;
}

static kb_err dir_remove(const ca_target_spec *t, const char **why)
{
    static const char *const extra[] = {"current", "current.tmp", "svid.key.tmp", "svid.pem.tmp",
                                        "bundle.pem.tmp"};
    int dfd, lfd;
    kb_err rc = KB_OK;
    DIR *d = NULL;
    struct dirent *e;

    rc = dir_open_locked(t->path, 0, &dfd, &lfd, why);
    if (rc == KB_ERR_NOT_FOUND)
        return KB_OK; /* nothing stored */
    KB_GUARD(rc);
    *why = "cannot delete a stored SVID file";
    /* Links first, so no reader finds a name leading into a half-removed generation. Old-layout
     * regular files go the same way. */
    for (size_t i = 0; i < KB_ARRAY_LEN(dir_names); i++)
        KB_ENSURE_OUT(rc, unlinkat(dfd, dir_names[i], 0) == 0 || errno == ENOENT, KB_ERR_IO);
    for (size_t i = 0; i < KB_ARRAY_LEN(extra); i++)
        KB_ENSURE_OUT(rc, unlinkat(dfd, extra[i], 0) == 0 || errno == ENOENT, KB_ERR_IO);
    {
        int d2 = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        KB_ENSURE_OUT(rc, d2 >= 0, KB_ERR_IO);
        d = fdopendir(d2);
        if (d == NULL)
            close(d2);
        KB_ENSURE_OUT(rc, d != NULL, KB_ERR_IO);
    }
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, GEN_PREFIX, strlen(GEN_PREFIX)) == 0)
            KB_GUARD_OUT(rc, gen_remove(dfd, e->d_name));
    (void)unlinkat(dfd, ".lock", 0);
    KB_ENSURE_OUT(rc, fsync(dfd) == 0, KB_ERR_IO);
    *why = NULL;
out:
    if (d != NULL)
        closedir(d);
    dir_close_locked(dfd, lfd);
    return rc;
}

/* ---- Secrets Manager ---------------------------------------------------------------------- */

typedef struct {
    kb_awsreq_cfg cfg;
    kb_aws_creds creds;
    char endpoint[600];
} sm_conn;

/* With [aws] role_arn: the target account's role instead of our own credentials (ca_assume.h). */
static kb_err sm_assume(const ca_target_env *env, const ca_reg *r, const char *region,
                        kb_aws_creds *creds, const char **why)
{
    ca_target_spec t;
    ca_assume_cfg ac = {env->role_arn, env->external_id, env->sts_endpoint, region};
    if (env->role_arn == NULL || env->role_arn[0] == '\0')
        return KB_OK;
    KB_GUARD(ca_target_parse(r->target, &t, why));
    return ca_assume_creds(&ac, t.account, (int64_t)time(NULL), creds, why);
}

static kb_err sm_open(const ca_target_env *env, const ca_reg *r, sm_conn *c, const char **why)
{
    const char *region = r->region[0] ? r->region : env->region;
    const char *ep = r->endpoint[0] ? r->endpoint : env->endpoint;
    const char *cf = r->creds_file[0] ? r->creds_file : env->credentials_file;
    kb_err rc;

    memset(c, 0, sizeof(*c));
    if (region == NULL || region[0] == '\0') {
        *why = "no Secrets Manager region";
        return KB_ERR_CONFIG;
    }
    if (ep != NULL && ep[0] != '\0')
        snprintf(c->endpoint, sizeof(c->endpoint), "%s", ep);
    else
        snprintf(c->endpoint, sizeof(c->endpoint), "https://secretsmanager.%s.amazonaws.com",
                 region);
    rc = ca_creds_load(cf, &c->creds);
    if (rc != KB_OK) {
        *why = "no usable AWS credentials (credentials file must be 0600: "
               "ACCESS_KEY_ID SECRET_ACCESS_KEY [SESSION_TOKEN])";
        return rc;
    }
    rc = sm_assume(env, r, region, &c->creds, why);
    if (rc != KB_OK) {
        kb_aws_creds_free(&c->creds);
        return rc;
    }
    c->cfg.endpoint = c->endpoint;
    c->cfg.region = region;
    c->cfg.service = "secretsmanager";
    c->cfg.access_key_id = c->creds.access_key_id;
    c->cfg.secret_key = c->creds.secret_key;
    c->cfg.session_token = c->creds.session_token;
    return KB_OK;
}

static void sm_close(sm_conn *c)
{
    kb_aws_creds_free(&c->creds);
}

/* One call; *resp = parsed JSON body (object) or NULL; *etype = the AWS error type or "". */
static kb_err sm_call(sm_conn *c, const char *op, json_t *req, long *status, json_t **resp,
                      char *etype, size_t etype_len)
{
    char target[64];
    char *body = kb_json_dump(req);
    kb_dbuf b;
    kb_err rc;

    *resp = NULL;
    etype[0] = '\0';
    KB_ENSURE(body != NULL, KB_ERR_NOMEM);
    snprintf(target, sizeof(target), "secretsmanager.%s", op);
    kb_dbuf_init(&b, RESP_MAX);
    rc = kb_awsreq_call(&c->cfg, target, body, strlen(body), status, &b);
    kb_json_free_str(body);
    if (rc == KB_OK && b.len > 0 && kb_json_parse(b.p, b.len, RESP_MAX, resp, NULL, 0) != KB_OK &&
        *status == 200)
        rc = KB_ERR_INVALID;
    if (rc == KB_OK && *status != 200 && *resp != NULL) {
        const char *t = json_string_value(json_object_get(*resp, "__type"));
        const char *h = t ? strrchr(t, '#') : NULL;
        snprintf(etype, etype_len, "%s", h ? h + 1 : (t ? t : ""));
    }
    kb_dbuf_free(&b);
    return rc;
}

static int tag_value_is(json_t *tags, const char *key, const char *want)
{
    size_t i;
    json_t *t;

    json_array_foreach(tags, i, t)
    {
        const char *k = json_string_value(json_object_get(t, "Key"));
        const char *v = json_string_value(json_object_get(t, "Value"));
        if (k && v && strcmp(k, key) == 0)
            return strcmp(v, want) == 0;
    }
    return 0;
}

/* arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-xxxxxx */
static int arn_account_is(const char *arn, const char *account)
{
    const char *p = arn;

    for (int i = 0; p != NULL && i < 4; i++) {
        p = strchr(p, ':');
        if (p)
            p++;
    }
    return p != NULL && strncmp(p, account, 12) == 0 && p[12] == ':';
}

/* federatedBundles is left out: keybridge-ca federates with no other trust domain, and SPIRE's
 * SVIDStore plugins omit the member when it would be empty (encoding/json omitempty), so a
 * reader written for SPIRE sees the same document. */
kb_err ca_target_svidstore_json(const char *id_str, const ca_svid *sv, char **out)
{
    json_t *o = json_object();
    json_t *key = NULL;
    kb_err rc = KB_OK;

    KB_ENSURE(o != NULL, KB_ERR_NOMEM);
    if (sv->key_pem != NULL)
        key = json_stringn((const char *)ca_keypem_data(sv->key_pem), ca_keypem_len(sv->key_pem));
    if (json_object_set_new(o, "spiffeID", json_string(id_str)) != 0 ||
        json_object_set_new(o, "x509SVID", json_string(sv->chain_pem)) != 0 ||
        json_object_set_new(o, "x509SVIDKey", key ? key : json_string("")) != 0 ||
        json_object_set_new(o, "bundle", json_string(sv->bundle_pem)) != 0)
        rc = KB_ERR_NOMEM;
    if (rc == KB_OK) {
        *out = kb_json_dump(o);
        rc = *out ? KB_OK : KB_ERR_NOMEM;
    }
    json_decref(o); /* the wiping allocator clears the key's copy */
    return rc;
}

static void token_from_serial(const char *serial, char out[37])
{
    /* Idempotency token (36 chars, UUID shape) derived from the leaf serial: a retried write of
     * the same SVID is one version, a new SVID is a new version. */
    char h[33];
    size_t n = strlen(serial);

    for (size_t i = 0; i < 32; i++)
        h[i] = i < n ? serial[i] : '0';
    h[32] = '\0';
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

/* 1 if tags have key at all. */
static int tag_present(json_t *tags, const char *key)
{
    size_t i;
    json_t *t;

    json_array_foreach(tags, i, t)
    {
        const char *k = json_string_value(json_object_get(t, "Key"));
        if (k != NULL && strcmp(k, key) == 0)
            return 1;
    }
    return 0;
}

/* Migration from SPIRE (registration option adopt_spire): a secret SPIRE's aws_secretsmanager
 * SVIDStore plugin wrote (tag spire-svid = true) and that carries neither keybridge tag may be
 * taken over: keybridge's two tags are added (TagResource), after the same key, account and
 * resource-policy checks as any existing secret. A secret with either keybridge tag is never
 * adopted: its tags must match. */
static int sm_adoptable(const ca_reg *r, json_t *tags)
{
    return r->adopt_spire && tag_value_is(tags, TAG_SPIRE, "true") && !tag_present(tags, TAG_TD) &&
           !tag_present(tags, TAG_REG);
}

static kb_err sm_adopt(sm_conn *c, const ca_target_env *env, const ca_reg *r,
                       const ca_target_spec *t, const char **why)
{
    json_t *req, *resp = NULL;
    char etype[96];
    long st = 0;
    kb_err rc;

    req = json_pack("{s:s,s:[{s:s,s:s},{s:s,s:s}]}", "SecretId", t->name, "Tags", "Key", TAG_TD,
                    "Value", env->trust_domain, "Key", TAG_REG, "Value", r->spiffe_id);
    KB_ENSURE(req != NULL, KB_ERR_NOMEM);
    rc = sm_call(c, "TagResource", req, &st, &resp, etype, sizeof(etype));
    json_decref(req);
    json_decref(resp);
    KB_GUARD(rc);
    if (st != 200) {
        *why = "TagResource failed (adopting a SPIRE SVIDStore secret)";
        kb_log(KB_LOG_WARN, "sm_adopt_failed", "secret", t->name, "aws_error", etype, NULL);
        return KB_ERR_UNAVAILABLE;
    }
    kb_log(KB_LOG_INFO, "sm_secret_adopted", "secret", t->name, "spiffe_id", r->spiffe_id, "from",
           "spire-svid", NULL);
    return KB_OK;
}

/* Make sure the target secret is ours before anything is signed for it or sent to it:
 * DescribeSecret; absent: CreateSecret (empty, default key, tagged) and check the ARN's account;
 * present: our tags (or adoptable from SPIRE), the default key, the account, no resource
 * policy; RestoreSecret if pending deletion. */
static kb_err sm_own(sm_conn *c, const ca_target_env *env, const ca_reg *r, const ca_target_spec *t,
                     const char **why)
{
    json_t *req = NULL, *resp = NULL, *tags = NULL;
    char etype[96];
    int adopt = 0;
    long st = 0;
    kb_err rc;

    *why = "Secrets Manager call failed";
    req = json_pack("{s:s}", "SecretId", t->name);
    KB_ENSURE_OUT(rc, req != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, sm_call(c, "DescribeSecret", req, &st, &resp, etype, sizeof(etype)));
    json_decref(req);
    req = NULL;
    if (st != 200 && strcmp(etype, "ResourceNotFoundException") == 0) {
        /* Absent: create it empty under the default key (no KmsKeyId), tagged, and check the
         * ARN's account before any key material is sent: a wrong account never receives it. */
        json_decref(resp);
        resp = NULL;
        tags = json_pack("[{s:s,s:s},{s:s,s:s}]", "Key", TAG_TD, "Value", env->trust_domain, "Key",
                         TAG_REG, "Value", r->spiffe_id);
        req = json_pack("{s:s,s:o}", "Name", t->name, "Tags", tags);
        tags = NULL;
        KB_ENSURE_OUT(rc, req != NULL, KB_ERR_NOMEM);
        KB_GUARD_OUT(rc, sm_call(c, "CreateSecret", req, &st, &resp, etype, sizeof(etype)));
        if (st != 200) {
            *why = "CreateSecret failed";
            kb_log(KB_LOG_WARN, "sm_create_failed", "secret", t->name, "aws_error", etype, NULL);
            rc = KB_ERR_UNAVAILABLE;
            goto out;
        }
        if (!arn_account_is(json_string_value(json_object_get(resp, "ARN")) ?: "", t->account)) {
            *why = "created secret's ARN names another AWS account than the registration's";
            rc = KB_ERR_DENIED;
            goto out;
        }
        rc = KB_OK;
        goto out;
    }
    if (st != 200 || resp == NULL) {
        *why = "DescribeSecret failed";
        kb_log(KB_LOG_WARN, "sm_describe_failed", "secret", t->name, "aws_error", etype, NULL);
        rc = KB_ERR_UNAVAILABLE;
        goto out;
    }
    /* Present: it must be ours, in the right account, on the default key, without a policy. */
    if (!tag_value_is(json_object_get(resp, "Tags"), TAG_TD, env->trust_domain) ||
        !tag_value_is(json_object_get(resp, "Tags"), TAG_REG, r->spiffe_id)) {
        adopt = sm_adoptable(r, json_object_get(resp, "Tags"));
        if (!adopt) {
            *why = "existing secret lacks keybridge's ownership tags for this trust domain and ID";
            rc = KB_ERR_DENIED;
            goto out;
        }
    }
    {
        const char *kms = json_string_value(json_object_get(resp, "KmsKeyId"));
        if (kms != NULL && kms[0] != '\0' && strcmp(kms, "alias/aws/secretsmanager") != 0) {
            *why = "existing secret is encrypted under another key than the default";
            rc = KB_ERR_DENIED;
            goto out;
        }
    }
    if (!arn_account_is(json_string_value(json_object_get(resp, "ARN")) ?: "", t->account)) {
        *why = "secret's ARN names another AWS account than the registration's";
        rc = KB_ERR_DENIED;
        goto out;
    }
    {
        int deleted = json_object_get(resp, "DeletedDate") != NULL;
        json_decref(resp);
        resp = NULL;
        req = json_pack("{s:s}", "SecretId", t->name);
        KB_ENSURE_OUT(rc, req != NULL, KB_ERR_NOMEM);
        KB_GUARD_OUT(rc, sm_call(c, "GetResourcePolicy", req, &st, &resp, etype, sizeof(etype)));
        if (st != 200) {
            *why = "GetResourcePolicy failed";
            rc = KB_ERR_UNAVAILABLE;
            goto out;
        }
        if (json_string_value(json_object_get(resp, "ResourcePolicy")) != NULL) {
            *why = "existing secret has a resource policy";
            rc = KB_ERR_DENIED;
            goto out;
        }
        if (deleted) {
            json_decref(resp);
            resp = NULL;
            KB_GUARD_OUT(rc, sm_call(c, "RestoreSecret", req, &st, &resp, etype, sizeof(etype)));
            if (st != 200) {
                *why = "RestoreSecret failed";
                rc = KB_ERR_UNAVAILABLE;
                goto out;
            }
        }
    }
    rc = adopt ? sm_adopt(c, env, r, t, why) : KB_OK;
out:
    json_decref(tags);
    json_decref(req);
    json_decref(resp);
    return rc;
}

static kb_err sm_write(const ca_target_env *env, const ca_reg *r, const ca_target_spec *t,
                       const ca_svid *sv, const char **why)
{
    sm_conn c;
    json_t *req = NULL, *resp = NULL;
    char *doc = NULL, etype[96], tok[37];
    long st = 0;
    kb_err rc;

    KB_GUARD(sm_open(env, r, &c, why));
    *why = "Secrets Manager call failed";
    KB_GUARD_OUT(rc, ca_target_svidstore_json(r->spiffe_id, sv, &doc));
    token_from_serial(sv->serial, tok);
    /* checked again right before the key is sent: ownership may change after ca_target_prepare */
    KB_GUARD_OUT(rc, sm_own(&c, env, r, t, why));
    req = json_pack("{s:s,s:s,s:o}", "SecretId", t->name, "ClientRequestToken", tok, "SecretBinary",
                    kb_json_b64(doc, strlen(doc)));
    KB_ENSURE_OUT(rc, req != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, sm_call(&c, "PutSecretValue", req, &st, &resp, etype, sizeof(etype)));
    if (st != 200) {
        *why = "PutSecretValue failed";
        kb_log(KB_LOG_WARN, "sm_put_failed", "secret", t->name, "aws_error", etype, NULL);
        rc = KB_ERR_UNAVAILABLE;
        goto out;
    }
    rc = KB_OK;
out:
    if (rc == KB_OK)
        *why = NULL;
    json_decref(req);
    json_decref(resp);
    kb_json_free_str(doc);
    sm_close(&c);
    return rc;
}

static kb_err sm_prepare(const ca_target_env *env, const ca_reg *r, const ca_target_spec *t,
                         const char **why)
{
    sm_conn c;
    kb_err rc;

    KB_GUARD(sm_open(env, r, &c, why));
    rc = sm_own(&c, env, r, t, why);
    sm_close(&c);
    if (rc == KB_OK)
        *why = NULL;
    return rc;
}

static kb_err sm_remove(const ca_target_env *env, const ca_reg *r, const ca_target_spec *t,
                        const char **why)
{
    sm_conn c;
    json_t *req = NULL, *resp = NULL;
    char etype[96];
    long st = 0;
    kb_err rc;

    KB_GUARD(sm_open(env, r, &c, why));
    req = json_pack("{s:s}", "SecretId", t->name);
    KB_ENSURE_OUT(rc, req != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, sm_call(&c, "DescribeSecret", req, &st, &resp, etype, sizeof(etype)));
    if (st != 200 && strcmp(etype, "ResourceNotFoundException") == 0) {
        rc = KB_OK; /* nothing stored */
        goto out;
    }
    if (st != 200) {
        *why = "DescribeSecret failed";
        rc = KB_ERR_UNAVAILABLE;
        goto out;
    }
    if (!tag_value_is(json_object_get(resp, "Tags"), TAG_TD, env->trust_domain) ||
        !tag_value_is(json_object_get(resp, "Tags"), TAG_REG, r->spiffe_id)) {
        *why = "secret lacks keybridge's ownership tags; not deleting it";
        rc = KB_ERR_DENIED;
        goto out;
    }
    if (json_object_get(resp, "DeletedDate") != NULL) {
        rc = KB_OK; /* already pending deletion */
        goto out;
    }
    json_decref(req);
    json_decref(resp);
    resp = NULL;
    req = json_pack("{s:s,s:i}", "SecretId", t->name, "RecoveryWindowInDays", CA_SM_RECOVERY_DAYS);
    KB_ENSURE_OUT(rc, req != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, sm_call(&c, "DeleteSecret", req, &st, &resp, etype, sizeof(etype)));
    if (st != 200) {
        *why = "DeleteSecret failed";
        rc = KB_ERR_UNAVAILABLE;
    }
out:
    json_decref(req);
    json_decref(resp);
    sm_close(&c);
    return rc;
}

kb_err ca_target_write(const ca_target_env *env, const ca_reg *r, const ca_svid *sv,
                       const char **why)
{
    ca_target_spec t;

    KB_GUARD(ca_target_parse(r->target, &t, why));
    if (t.kind == CA_TARGET_DIR)
        return dir_write(&t, sv, why);
    return sm_write(env, r, &t, sv, why);
}

kb_err ca_target_prepare(const ca_target_env *env, const ca_reg *r, const char **why)
{
    ca_target_spec t;

    KB_GUARD(ca_target_parse(r->target, &t, why));
    if (t.kind == CA_TARGET_DIR)
        return KB_OK; /* dir_write refuses a symlinked or foreign directory before writing */
    return sm_prepare(env, r, &t, why);
}

kb_err ca_target_remove(const ca_target_env *env, const ca_reg *r, const char **why)
{
    ca_target_spec t;

    KB_GUARD(ca_target_parse(r->target, &t, why));
    if (t.kind == CA_TARGET_DIR)
        return dir_remove(&t, why);
    return sm_remove(env, r, &t, why);
}
