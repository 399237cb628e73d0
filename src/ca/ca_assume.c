/* ca_assume.c - cached STS AssumeRole sessions for Secrets Manager targets (see ca_assume.h). */
#include "ca_assume.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/fileio.h"
#include "lib/log.h"
#include "lib/secbuf.h"
#include "lib/sts.h"

typedef struct {
    char *key; /* role ARN \n external ID \n endpoint */
    kb_aws_creds creds;
    int64_t expires_at;
    int64_t used; /* last use, for eviction */
} session;

#define CREDS_MAX 8192

static kb_err creds_from_file(const char *path, kb_aws_creds *c)
{
    kb_secret *f = NULL;
    const char *p;
    size_t n, i = 0, a0, a1, s0, s1, t0, t1;
    kb_err rc = KB_OK;

    memset(c, 0, sizeof(*c));
    KB_GUARD(kb_file_read_secret(path, CREDS_MAX, &f));
    p = (const char *)kb_secret_cdata(f);
    n = kb_secret_len(f);
#define SKIP_WS()                                                                                  \
    while (i < n && (p[i] == ' ' || p[i] == '\t'))                                                 \
    i++
#define WORD(b, e)                                                                                 \
    do {                                                                                           \
        b = i;                                                                                     \
        while (i < n && p[i] > ' ' && p[i] < 0x7f)                                                 \
            i++;                                                                                   \
        e = i;                                                                                     \
    } while (0)
    SKIP_WS();
    WORD(a0, a1);
    SKIP_WS();
    WORD(s0, s1);
    SKIP_WS();
    WORD(t0, t1);
    SKIP_WS();
    if (i < n && p[i] == '\n')
        i++;
    KB_ENSURE_OUT(rc,
                  i == n && a1 > a0 && s1 > s0 && a1 - a0 <= 128 &&
                      s1 - s0 <= KB_AWSREQ_MAX_SECRET_KEY && t1 - t0 <= KB_AWSREQ_MAX_TOKEN,
                  KB_ERR_CONFIG);
#undef SKIP_WS
#undef WORD
    c->access_key_id = strndup(p + a0, a1 - a0);
    KB_ENSURE_OUT(rc, c->access_key_id != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, kb_secret_from(p + s0, s1 - s0, &c->secret_key));
    if (t1 > t0) {
        c->session_token = strndup(p + t0, t1 - t0);
        KB_ENSURE_OUT(rc, c->session_token != NULL, KB_ERR_NOMEM);
    }
out:
    if (rc != KB_OK)
        kb_aws_creds_free(c);
    kb_secret_free(f);
    return rc;
}

kb_err ca_creds_load(const char *credentials_file, kb_aws_creds *out)
{
    if (credentials_file != NULL && credentials_file[0] != '\0')
        return creds_from_file(credentials_file, out);
    return kb_aws_creds_from_env(out);
}

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static session g_cache[CA_ASSUME_CACHE_MAX];

static void session_clear(session *s)
{
    free(s->key);
    kb_aws_creds_free(&s->creds);
    memset(s, 0, sizeof(*s));
}

void ca_assume_cache_clear(void)
{
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < CA_ASSUME_CACHE_MAX; i++)
        session_clear(&g_cache[i]);
    pthread_mutex_unlock(&g_mu);
}

static kb_err creds_dup(const kb_aws_creds *in, kb_aws_creds *out)
{
    kb_err rc = KB_OK;
    memset(out, 0, sizeof(*out));
    out->access_key_id = strdup(in->access_key_id);
    KB_ENSURE_OUT(rc, out->access_key_id != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, kb_secret_from(kb_secret_cdata(in->secret_key), kb_secret_len(in->secret_key),
                                    &out->secret_key));
    if (in->session_token) {
        out->session_token = strdup(in->session_token);
        KB_ENSURE_OUT(rc, out->session_token != NULL, KB_ERR_NOMEM);
    }
out:
    if (rc != KB_OK)
        kb_aws_creds_free(out);
    return rc;
}

/* role_arn with every {account} replaced by account. */
static kb_err expand(const char *tmpl, const char *account, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, "{account}", 9) == 0) {
            size_t n = strlen(account);
            KB_ENSURE(o + n < cap, KB_ERR_TOO_LARGE);
            memcpy(out + o, account, n);
            o += n;
            p += 9;
        } else {
            KB_ENSURE(o + 1 < cap, KB_ERR_TOO_LARGE);
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return KB_OK;
}

kb_err ca_assume_creds(const ca_assume_cfg *cfg, const char *account, int64_t now,
                       kb_aws_creds *creds, const char **why)
{
    char arn[CA_ASSUME_ARN_MAX + 1], ep[600], err[512];
    const char *ext;
    kb_dbuf key;
    session *s = NULL, *victim = NULL;
    kb_aws_creds fresh;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(cfg);
    KB_ENSURE_REF(cfg->role_arn);
    KB_ENSURE_REF(account);
    KB_ENSURE_REF(creds);
    KB_ENSURE_REF(why);
    memset(&fresh, 0, sizeof(fresh));
    if (strlen(account) != 12 || strspn(account, "0123456789") != 12) {
        *why = "target account is not 12 digits";
        return KB_ERR_INVALID;
    }
    if (expand(cfg->role_arn, account, arn, sizeof(arn)) != KB_OK) {
        *why = "[aws] role_arn is too long";
        return KB_ERR_CONFIG;
    }
    ext = cfg->external_id && cfg->external_id[0] ? cfg->external_id : NULL;
    if (cfg->sts_endpoint && cfg->sts_endpoint[0])
        snprintf(ep, sizeof(ep), "%s", cfg->sts_endpoint);
    else if (cfg->region && cfg->region[0])
        snprintf(ep, sizeof(ep), "https://sts.%s.amazonaws.com", cfg->region);
    else {
        *why = "no region for STS";
        return KB_ERR_CONFIG;
    }
    kb_dbuf_init(&key, sizeof(arn) + KB_STS_EXTERNAL_ID_MAX + sizeof(ep) + 4);
    KB_GUARD_OUT(rc, kb_dbuf_addf(&key, "%s\n%s\n%s", arn, ext ? ext : "", ep));

    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < CA_ASSUME_CACHE_MAX && s == NULL; i++) {
        session *c = &g_cache[i];
        if (c->key == NULL) {
            if (victim == NULL || victim->key != NULL)
                victim = c; /* a free slot first */
        } else if (strcmp(c->key, kb_dbuf_str(&key)) == 0) {
            s = c;
        } else if (victim == NULL || (victim->key != NULL && c->used < victim->used)) {
            victim = c; /* else the least recently used */
        }
    }
    if (s == NULL || s->expires_at - now < CA_ASSUME_REFRESH_S) {
        kb_awsreq_cfg ac = {
            .endpoint = ep,
            .region = cfg->region && cfg->region[0] ? cfg->region : "us-east-1",
            .service = "sts",
            .access_key_id = creds->access_key_id,
            .secret_key = creds->secret_key,
            .session_token = creds->session_token,
        };
        kb_sts_assume a = {arn, ext, CA_ASSUME_SESSION_NAME, CA_ASSUME_DURATION_S};
        int64_t exp = 0;
        rc = kb_sts_assume_role(&ac, &a, &fresh, &exp, err, sizeof(err));
        if (rc != KB_OK) {
            kb_log(KB_LOG_WARN, "ca_assume_role_failed", "role_arn", arn, "reason", err, NULL);
            *why = "STS AssumeRole failed for the target account's role (see the log)";
            pthread_mutex_unlock(&g_mu);
            goto out;
        }
        if (exp - now < CA_ASSUME_REFRESH_S) {
            /* STS gave less than the margin: use it; the next write asks again */
            kb_log(KB_LOG_WARN, "ca_assume_short_session", "role_arn", arn, NULL);
        }
        if (s == NULL)
            s = victim;
        session_clear(s);
        s->key = strdup(kb_dbuf_str(&key));
        if (s->key == NULL) {
            pthread_mutex_unlock(&g_mu);
            rc = KB_ERR_NOMEM;
            goto out;
        }
        s->creds = fresh;
        memset(&fresh, 0, sizeof(fresh));
        s->expires_at = exp;
        kb_log(KB_LOG_INFO, "ca_assume_role", "role_arn", arn, NULL);
    }
    s->used = now;
    rc = creds_dup(&s->creds, &fresh);
    pthread_mutex_unlock(&g_mu);
    if (rc != KB_OK) {
        *why = "out of memory";
        goto out;
    }
    kb_aws_creds_free(creds);
    *creds = fresh;
    memset(&fresh, 0, sizeof(fresh));
out:
    kb_aws_creds_free(&fresh);
    kb_dbuf_free(&key);
    return rc;
}
