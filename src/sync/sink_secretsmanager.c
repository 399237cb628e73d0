/* sink_secretsmanager.c - Secrets Manager / keybridge-cache sink (see the header).
 * API reference: AWS Secrets Manager API Reference (ListSecrets, DescribeSecret, CreateSecret,
 * PutSecretValue, TagResource, DeleteSecret, RestoreSecret, GetResourcePolicy). */
#include "sink_secretsmanager.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/utf8.h"

/* Spacing of the paced calls: at most one every interval_ms (rounded up: never above rate). */
typedef struct {
    int64_t interval_ms; /* 0: unpaced */
    int64_t next_ms;     /* monotonic time of the next allowed call */
} sm_pacer;

typedef struct {
    kb_awsreq_cfg cfg;
    const sync_clock *clock;
    sm_pacer pacer;
    char *endpoint;
    char *region;
    char *app;
    char prefix[SYNC_APP_MAX + 16]; /* keybridge/<app>/ */
} smsink;

#define CLOUD_NAME_CAP (SYNC_APP_MAX + SYNC_NAME_MAX + 16)

int sync_utf8_ok(const uint8_t *p, size_t n)
{
    return (n == 0 || memchr(p, 0, n) == NULL) && kb_utf8_valid(p, n);
}

kb_err sync_sm_token(const char *app, const char *name, int64_t version, const char *checksum,
                     const char *repair_vid, char out[37])
{
    uint8_t d[SHA256_DIGEST_LENGTH];
    char hex[33];
    kb_dbuf b;
    kb_err rc = KB_OK;
    KB_ENSURE(app && name && checksum, KB_ERR_NULL);
    /* NUL-separated fields: names cannot contain NUL, so the encoding is unambiguous. */
    kb_dbuf_init(&b, 4096);
    KB_GUARD_OUT(rc, kb_dbuf_add(&b, "keybridge-sync/v1", 18));
    KB_GUARD_OUT(rc, kb_dbuf_add(&b, app, strlen(app) + 1));
    KB_GUARD_OUT(rc, kb_dbuf_add(&b, name, strlen(name) + 1));
    KB_GUARD_OUT(rc, kb_dbuf_addf(&b, "%" PRId64, version));
    KB_GUARD_OUT(rc, kb_dbuf_addc(&b, '\0'));
    KB_GUARD_OUT(rc, kb_dbuf_add(&b, checksum, strlen(checksum)));
    if (repair_vid) {
        KB_GUARD_OUT(rc, kb_dbuf_add(&b, "\0repair", 8));
        KB_GUARD_OUT(rc, kb_dbuf_addc(&b, '\0'));
        KB_GUARD_OUT(rc, kb_dbuf_add(&b, repair_vid, strlen(repair_vid)));
    }
    SHA256(b.p, b.len, d);
    kb_hex(d, 16, hex);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
out:
    kb_dbuf_free(&b);
    return rc;
}

static int paced(sync_op op)
{
    return op == SYNC_OP_CREATE || op == SYNC_OP_PUT || op == SYNC_OP_TAG || op == SYNC_OP_DELETE ||
           op == SYNC_OP_RESTORE || op == SYNC_OP_POLICY;
}

/* Wait for the pacer's next slot. KB_ERR_TIMEOUT (nothing slept) when the slot is past the
 * deadline. */
static kb_err pace(sm_pacer *p, const sync_clock *c)
{
    int64_t now;
    if (p == NULL || p->interval_ms <= 0)
        return KB_OK;
    now = sync_clock_now(c);
    if (p->next_ms > now) {
        KB_ENSURE(c == NULL || c->deadline_ms <= 0 || p->next_ms < c->deadline_ms, KB_ERR_TIMEOUT);
        sync_clock_sleep(c, p->next_ms - now);
        now = p->next_ms;
    }
    p->next_ms = now + p->interval_ms;
    return KB_OK;
}

static const char *aws_type(const json_t *r);

static int throttled(long st, const json_t *r)
{
    const char *t = aws_type(r);
    return st == 429 || strcmp(t, "ThrottlingException") == 0 ||
           strcmp(t, "TooManyRequestsException") == 0;
}

/* One call. On KB_OK *resp is the parsed body and *status the HTTP status; errors are AWS
 * error shapes ({"__type", "message"}), returned as a body with status >= 400. The call is cut
 * to what is left of the run's deadline (KB_ERR_TIMEOUT past it, nothing sent); paced calls wait
 * for their slot; throttles are retried after a jittered wait while the deadline allows (the last
 * throttled answer is returned when it does not). */
static kb_err call(const kb_awsreq_cfg *cfg0, const sync_clock *clk, sm_pacer *pacer,
                   const char *op, json_t *req, json_t **resp, long *status, sync_summary *sum,
                   sync_op sop)
{
    char target[64], err[128];
    char *body = kb_json_dump(req);
    kb_dbuf out;
    kb_err rc = KB_OK;
    KB_ENSURE(body != NULL, KB_ERR_NOMEM);
    snprintf(target, sizeof(target), "secretsmanager.%s", op);
    kb_dbuf_init(&out, SYNC_SM_RESP_MAX);
    *resp = NULL;
    for (unsigned attempt = 0;; attempt++) {
        kb_awsreq_cfg cfg = *cfg0;
        long tmo = cfg.timeout_ms > 0 ? cfg.timeout_ms : SYNC_SM_TIMEOUT_DEFAULT_MS;
        int64_t left, waited = 0;
        if (paced(sop) && (rc = pace(pacer, clk)) != KB_OK) {
            kb_log(KB_LOG_WARN, "deadline_reached", "op", op, "reason",
                   "the next paced call would start past the deadline", NULL);
            break;
        }
        left = sync_clock_left(clk);
        if (left <= 0) {
            kb_log(KB_LOG_WARN, "deadline_reached", "op", op, NULL);
            rc = KB_ERR_TIMEOUT;
            break;
        }
        cfg.timeout_ms = left < tmo ? (long)left : tmo;
        if (sum)
            sum->calls[sop]++;
        kb_dbuf_reset(&out);
        json_decref(*resp);
        *resp = NULL;
        rc = kb_awsreq_call(&cfg, target, body, strlen(body), status, &out);
        sync_crash_point();
        if (rc != KB_OK) {
            kb_log(KB_LOG_ERROR, "request_failed", "op", op, "err", kb_err_str(rc), NULL);
            break;
        }
        rc = kb_json_parse(out.len ? (const char *)out.p : "{}", out.len ? out.len : 2,
                           SYNC_SM_RESP_MAX, resp, err, sizeof(err));
        if (rc != KB_OK) {
            kb_log(KB_LOG_ERROR, "bad_response", "op", op, "reason", err, NULL);
            break;
        }
        if (!throttled(*status, *resp))
            break;
        if (sum)
            sum->throttled++;
        if (attempt + 1 >= SYNC_SM_THROTTLE_ATTEMPTS ||
            sync_backoff_wait(clk, -1, attempt, &waited) != KB_OK) {
            kb_log(KB_LOG_WARN, "throttled_giving_up", "op", op, "reason",
                   "no retry fits in the deadline or the attempts", NULL);
            break;
        }
        {
            char ws[24];
            snprintf(ws, sizeof(ws), "%lld", (long long)waited);
            kb_log(KB_LOG_WARN, "throttled", "op", op, "waited_ms", ws, NULL);
        }
    }
    if (rc != KB_OK) {
        json_decref(*resp);
        *resp = NULL;
    }
    kb_json_free_str(body); /* may have carried content */
    kb_dbuf_free(&out);
    return rc;
}

static const char *aws_type(const json_t *r)
{
    const char *t = json_string_value(json_object_get(r, "__type"));
    const char *h;
    if (t == NULL)
        return "";
    h = strrchr(t, '#'); /* "com.amazonaws...#ResourceNotFoundException" */
    return h ? h + 1 : t;
}

static kb_err status_to_err(long st, const json_t *r, const char *op)
{
    char s[16];
    const char *t;
    if (st == 200)
        return KB_OK;
    t = aws_type(r);
    snprintf(s, sizeof(s), "%ld", st);
    kb_log(KB_LOG_ERROR, "aws_error", "op", op, "status", s, "type", t, NULL);
    if (strcmp(t, "ResourceNotFoundException") == 0)
        return KB_ERR_NOT_FOUND;
    if (strcmp(t, "ResourceExistsException") == 0)
        return KB_ERR_EXISTS;
    if (st == 403 || strcmp(t, "AccessDeniedException") == 0 ||
        strcmp(t, "UnrecognizedClientException") == 0 ||
        strcmp(t, "InvalidSignatureException") == 0)
        return KB_ERR_AUTH;
    if (st == 429 || strcmp(t, "ThrottlingException") == 0)
        return KB_ERR_LIMIT;
    if (st >= 500)
        return KB_ERR_UNAVAILABLE;
    return KB_ERR_INVALID;
}

static const char *tag(const json_t *tags, const char *key)
{
    size_t i;
    json_t *t;
    json_array_foreach(tags, i, t)
    {
        const char *k = json_string_value(json_object_get(t, "Key"));
        if (k && strcmp(k, key) == 0)
            return json_string_value(json_object_get(t, "Value"));
    }
    return NULL;
}

static const char *current_vid(const json_t *stages_map)
{
    const char *vid;
    json_t *stages;
    json_object_foreach((json_t *)stages_map, vid, stages)
    {
        size_t i;
        json_t *st;
        json_array_foreach(stages, i, st)
        {
            if (json_is_string(st) && strcmp(json_string_value(st), "AWSCURRENT") == 0)
                return vid;
        }
    }
    return NULL;
}

/* Fill e from a ListSecrets entry or a DescribeSecret answer. KB_ERR_DENIED when the secret is
 * not this application's; KB_ERR_INVALID when our own tags are unreadable. */
static kb_err entry_from(const smsink *m, const json_t *o, const char *stages_key, sync_entry *e)
{
    const char *name = json_string_value(json_object_get(o, "Name"));
    const json_t *tags = json_object_get(o, "Tags");
    const char *app = tag(tags, SYNC_SM_TAG_APP), *ver = tag(tags, SYNC_SM_TAG_VERSION),
               *ck = tag(tags, SYNC_SM_TAG_CHECKSUM), *vid = tag(tags, SYNC_SM_TAG_VID);
    const char *cur = current_vid(json_object_get(o, stages_key));
    size_t pl = strlen(m->prefix);
    int64_t v = 0;
    char base[37];
    memset(e, 0, sizeof(*e));
    KB_ENSURE(name != NULL, KB_ERR_INVALID);
    if (app == NULL || strcmp(app, m->app) != 0 || strncmp(name, m->prefix, pl) != 0 ||
        !sync_name_ok(name + pl))
        return KB_ERR_DENIED;
    if (ver == NULL || kb_parse_int64(ver, &v) != KB_OK || v < 1 || ck == NULL ||
        !sync_checksum_ok(ck)) {
        /* Ours by tag but unreadable: treat as version 0, i.e. rewrite it. */
        v = 0;
        ck = "";
    }
    e->name = strdup(name + pl);
    KB_ENSURE(e->name != NULL, KB_ERR_NOMEM);
    e->version = v;
    snprintf(e->checksum, sizeof(e->checksum), "%s", ck);
    e->deleted = json_object_get(o, "DeletedDate") != NULL;
    if (cur) {
        e->current_vid = strdup(cur);
        KB_ENSURE(e->current_vid != NULL, KB_ERR_NOMEM);
    }
    e->intact = 0;
    if (cur && v > 0) {
        if (sync_sm_token(m->app, e->name, v, e->checksum, NULL, base) == KB_OK &&
            (strcmp(cur, base) == 0 || (vid && strcmp(cur, vid) == 0)))
            e->intact = 1;
    }
    return KB_OK;
}

static int find_dup(const sync_state *st, const char *name)
{
    for (size_t i = 0; i < st->n; i++)
        if (strcmp(st->e[i].name, name) == 0)
            return 1;
    return 0;
}

static kb_err sm_load(sync_sink *s, const char *app, sync_state *out, sync_summary *sum)
{
    smsink *m = s->impl;
    char *next = NULL;
    size_t cap = 0;
    kb_err rc = KB_OK;
    memset(out, 0, sizeof(*out));
    free(m->app);
    m->app = strdup(app);
    KB_ENSURE(m->app != NULL, KB_ERR_NOMEM);
    snprintf(m->prefix, sizeof(m->prefix), "%s%s/", SYNC_SM_PREFIX, app);
    /* One call per 100 secrets: the management tag carries everything the diff needs
     * (DESIGN.md Data flow 3). IncludePlannedDeletion shows names that may come back. */
    do {
        json_t *req, *resp = NULL, *list, *o;
        long st = 0;
        size_t i;
        req = json_pack("{s:i,s:b,s:[{s:s,s:[s]},{s:s,s:[s]},{s:s,s:[s]}]}", "MaxResults",
                        SYNC_SM_PAGE, "IncludePlannedDeletion", 1, "Filters", "Key", "tag-key",
                        "Values", SYNC_SM_TAG_APP, "Key", "tag-value", "Values", app, "Key", "name",
                        "Values", m->prefix);
        KB_ENSURE_OUT(rc, req != NULL, KB_ERR_NOMEM);
        if (next) {
            json_object_set_new(req, "NextToken", json_string(next));
            free(next);
            next = NULL;
        }
        rc = call(&m->cfg, m->clock, &m->pacer, "ListSecrets", req, &resp, &st, sum, SYNC_OP_LIST);
        json_decref(req);
        if (rc == KB_OK)
            rc = status_to_err(st, resp, "ListSecrets");
        list = json_object_get(resp, "SecretList");
        if (rc == KB_OK && !json_is_array(list))
            rc = KB_ERR_INVALID;
        if (rc == KB_OK && json_is_string(json_object_get(resp, "NextToken"))) {
            next = strdup(json_string_value(json_object_get(resp, "NextToken")));
            if (next == NULL)
                rc = KB_ERR_NOMEM;
        }
        if (rc == KB_OK && json_array_size(list) > 0)
            rc = kb_grow((void **)&out->e, &cap, out->n + json_array_size(list) - 1,
                         sizeof(*out->e));
        json_array_foreach(list, i, o)
        {
            kb_err er;
            if (rc != KB_OK)
                break;
            er = entry_from(m, o, "SecretVersionsToStages", &out->e[out->n]);
            if (er == KB_ERR_DENIED) /* filters are prefix matches: not ours after all */
                continue;
            if (er != KB_OK) {
                rc = er;
                break;
            }
            if (find_dup(out, out->e[out->n].name)) {
                sync_entry_clear(&out->e[out->n]);
                rc = KB_ERR_INVALID;
                break;
            }
            out->n++;
        }
        json_decref(resp);
        KB_GUARD_OUT(rc, rc);
        KB_ENSURE_OUT(rc, out->n <= SYNC_LIST_MAX, KB_ERR_TOO_LARGE);
    } while (next != NULL);
out:
    free(next);
    if (rc != KB_OK)
        sync_state_clear(out);
    return rc;
}

static kb_err sm_confirm(sync_sink *s, const char *name, sync_entry *out, int *found,
                         sync_summary *sum)
{
    smsink *m = s->impl;
    char cloud[CLOUD_NAME_CAP];
    json_t *req, *resp = NULL;
    const char *kms;
    long st = 0;
    kb_err rc;
    *found = 0;
    sync_entry_clear(out);
    snprintf(cloud, sizeof(cloud), "%s%s", m->prefix, name);
    req = json_pack("{s:s}", "SecretId", cloud);
    KB_ENSURE(req != NULL, KB_ERR_NOMEM);
    rc = call(&m->cfg, m->clock, &m->pacer, "DescribeSecret", req, &resp, &st, sum,
              SYNC_OP_DESCRIBE);
    if (rc == KB_OK && st != 200 && strcmp(aws_type(resp), "ResourceNotFoundException") == 0) {
        rc = KB_OK; /* absent: free to create */
        goto out;
    }
    if (rc == KB_OK)
        rc = status_to_err(st, resp, "DescribeSecret");
    KB_GUARD_OUT(rc, rc);
    rc = entry_from(m, resp, "VersionIdsToStages", out);
    if (rc == KB_ERR_DENIED) {
        kb_log(KB_LOG_ERROR, "secret_not_ours", "secret", cloud, "reason",
               "name held by another application or not managed by keybridge", NULL);
        goto out;
    }
    KB_GUARD_OUT(rc, rc);
    /* DESIGN.md Syncer: default encryption key only, no resource policy. */
    kms = json_string_value(json_object_get(resp, "KmsKeyId"));
    if (kms != NULL && strcmp(kms, SYNC_SM_DEFAULT_KMS) != 0) {
        kb_log(KB_LOG_ERROR, "secret_refused", "secret", cloud, "reason",
               "encrypted under a non-default KMS key", NULL);
        rc = KB_ERR_DENIED;
        goto out;
    }
    json_decref(resp);
    resp = NULL;
    rc = call(&m->cfg, m->clock, &m->pacer, "GetResourcePolicy", req, &resp, &st, sum,
              SYNC_OP_POLICY);
    if (rc == KB_OK)
        rc = status_to_err(st, resp, "GetResourcePolicy");
    KB_GUARD_OUT(rc, rc);
    if (json_is_string(json_object_get(resp, "ResourcePolicy")) &&
        json_string_length(json_object_get(resp, "ResourcePolicy")) > 0) {
        kb_log(KB_LOG_ERROR, "secret_refused", "secret", cloud, "reason", "has a resource policy",
               NULL);
        rc = KB_ERR_DENIED;
        goto out;
    }
    *found = 1;
out:
    if (rc != KB_OK || !*found)
        sync_entry_clear(out);
    json_decref(req);
    json_decref(resp);
    return rc;
}

/* SecretString for UTF-8, SecretBinary (base64) for anything else. */
static kb_err set_value(json_t *req, const kb_secret *content)
{
    const uint8_t *p = kb_secret_cdata(content);
    size_t n = kb_secret_len(content);
    kb_dbuf b;
    kb_err rc = KB_OK;
    KB_ENSURE(n <= SYNC_CONTENT_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(n > 0, KB_ERR_INVALID); /* SecretBinary and SecretString need 1 byte or more */
    if (sync_utf8_ok(p, n)) {
        KB_ENSURE(json_object_set_new(req, "SecretString", json_stringn((const char *)p, n)) == 0,
                  KB_ERR_NOMEM);
        return KB_OK;
    }
    kb_dbuf_init(&b, SYNC_CONTENT_MAX * 2);
    KB_GUARD_OUT(rc, kb_b64_encode(p, n, KB_B64_STD, &b));
    KB_ENSURE_OUT(rc, json_object_set_new(req, "SecretBinary", json_string(kb_dbuf_str(&b))) == 0,
                  KB_ERR_NOMEM);
out:
    kb_dbuf_free(&b);
    return rc;
}

static json_t *tags_json(const smsink *m, const sync_content *c, const char *vid, int with_app)
{
    char v[24];
    snprintf(v, sizeof(v), "%" PRId64, c->version);
    if (with_app)
        return json_pack("[{s:s,s:s},{s:s,s:s},{s:s,s:s},{s:s,s:s}]", "Key", SYNC_SM_TAG_APP,
                         "Value", m->app, "Key", SYNC_SM_TAG_VERSION, "Value", v, "Key",
                         SYNC_SM_TAG_CHECKSUM, "Value", c->checksum, "Key", SYNC_SM_TAG_VID,
                         "Value", vid);
    return json_pack("[{s:s,s:s},{s:s,s:s},{s:s,s:s}]", "Key", SYNC_SM_TAG_VERSION, "Value", v,
                     "Key", SYNC_SM_TAG_CHECKSUM, "Value", c->checksum, "Key", SYNC_SM_TAG_VID,
                     "Value", vid);
}

static kb_err simple(smsink *m, const char *op, json_t *req, sync_summary *sum, sync_op sop)
{
    json_t *resp = NULL;
    long st = 0;
    kb_err rc;
    KB_ENSURE(req != NULL, KB_ERR_NOMEM);
    rc = call(&m->cfg, m->clock, &m->pacer, op, req, &resp, &st, sum, sop);
    if (rc == KB_OK)
        rc = status_to_err(st, resp, op);
    json_decref(resp);
    json_decref(req);
    return rc;
}

static kb_err sm_write(sync_sink *s, const sync_entry *cur, const sync_content *c,
                       sync_summary *sum)
{
    smsink *m = s->impl;
    char cloud[CLOUD_NAME_CAP], token[37];
    const char *repair = NULL;
    json_t *req;
    kb_err rc;
    snprintf(cloud, sizeof(cloud), "%s%s", m->prefix, c->name);
    /* Same version and checksum but AWSCURRENT is not ours: changed by hand; a new version id
     * is needed, or the idempotent retry would leave the hand-made one current. */
    if (cur && !cur->deleted && cur->version == c->version &&
        strcmp(cur->checksum, c->checksum) == 0 && !cur->intact && cur->current_vid)
        repair = cur->current_vid;
    if (kb_secret_len(c->content) == 0 || kb_secret_len(c->content) > SYNC_CONTENT_MAX) {
        int empty = kb_secret_len(c->content) == 0;
        const char *why = empty ? "empty content: Secrets Manager needs at least 1 byte "
                                  "(keybridged refuses empty content for cloud_sync secrets; "
                                  "put a non-empty version)"
                                : "content over Secrets Manager's 65536 bytes";
        kb_log(KB_LOG_ERROR, "secret_refused", "secret", cloud, "reason", why, NULL);
        sync_summary_item(sum, c->name, "%s", why);
        return empty ? KB_ERR_INVALID : KB_ERR_TOO_LARGE;
    }
    KB_GUARD(sync_sm_token(m->app, c->name, c->version, c->checksum, repair, token));
    if (cur == NULL) {
        req = json_pack("{s:s,s:s,s:s,s:o}", "Name", cloud, "ClientRequestToken", token,
                        "Description", "Managed by keybridge-sync; changes are overwritten", "Tags",
                        tags_json(m, c, token, 1));
        KB_ENSURE(req != NULL, KB_ERR_NOMEM);
        rc = set_value(req, c->content);
        if (rc != KB_OK) {
            json_decref(req);
            return rc;
        }
        return simple(m, "CreateSecret", req, sum, SYNC_OP_CREATE);
    }
    req = json_pack("{s:s,s:s}", "SecretId", cloud, "ClientRequestToken", token);
    KB_ENSURE(req != NULL, KB_ERR_NOMEM);
    rc = set_value(req, c->content);
    if (rc != KB_OK) {
        json_decref(req);
        return rc;
    }
    KB_GUARD(simple(m, "PutSecretValue", req, sum, SYNC_OP_PUT));
    /* Tags after the value: a crash in between leaves old tags, so the next run writes again
     * with the same token (idempotent) and then tags. */
    req = json_pack("{s:s,s:o}", "SecretId", cloud, "Tags", tags_json(m, c, token, 0));
    return simple(m, "TagResource", req, sum, SYNC_OP_TAG);
}

static kb_err sm_restore(sync_sink *s, const sync_entry *cur, sync_summary *sum)
{
    smsink *m = s->impl;
    char cloud[CLOUD_NAME_CAP];
    snprintf(cloud, sizeof(cloud), "%s%s", m->prefix, cur->name);
    return simple(m, "RestoreSecret", json_pack("{s:s}", "SecretId", cloud), sum, SYNC_OP_RESTORE);
}

static kb_err sm_remove(sync_sink *s, const sync_entry *cur, sync_summary *sum)
{
    smsink *m = s->impl;
    char cloud[CLOUD_NAME_CAP];
    snprintf(cloud, sizeof(cloud), "%s%s", m->prefix, cur->name);
    return simple(
        m, "DeleteSecret",
        json_pack("{s:s,s:i}", "SecretId", cloud, "RecoveryWindowInDays", SYNC_SM_RECOVERY_DAYS),
        sum, SYNC_OP_DELETE);
}

static void sm_free(sync_sink *s)
{
    smsink *m;
    if (s == NULL)
        return;
    m = s->impl;
    if (m) {
        free(m->endpoint);
        free(m->region);
        free(m->app);
        free(m);
    }
    free(s);
}

static const sync_sink_ops SM_OPS = {
    .kind = "secretsmanager",
    .load = sm_load,
    .begin = NULL,
    .confirm = sm_confirm,
    .write = sm_write,
    .restore = sm_restore,
    .remove = sm_remove,
    .finish = NULL,
    .free = sm_free,
};

static kb_err fill_cfg(const sync_sm_opts *o, kb_awsreq_cfg *cfg, char **endpoint, char **region)
{
    char ep[512];
    KB_ENSURE(o->region != NULL && o->region[0] != '\0' && strlen(o->region) < 64, KB_ERR_CONFIG);
    KB_ENSURE(o->creds != NULL && o->creds->access_key_id && o->creds->secret_key, KB_ERR_CONFIG);
    if (o->endpoint && o->endpoint[0])
        snprintf(ep, sizeof(ep), "%s", o->endpoint);
    else
        snprintf(ep, sizeof(ep), "https://secretsmanager.%s.amazonaws.com", o->region);
    *endpoint = strdup(ep);
    *region = strdup(o->region);
    KB_ENSURE(*endpoint && *region, KB_ERR_NOMEM);
    memset(cfg, 0, sizeof(*cfg));
    cfg->endpoint = *endpoint;
    cfg->region = *region;
    cfg->service = "secretsmanager";
    cfg->access_key_id = o->creds->access_key_id;
    cfg->secret_key = o->creds->secret_key;
    cfg->session_token = o->creds->session_token;
    cfg->ca_file = o->ca_file;
    cfg->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : SYNC_SM_TIMEOUT_DEFAULT_MS;
    return KB_OK;
}

kb_err sync_sink_sm_new(const sync_sm_opts *o, sync_sink **out)
{
    sync_sink *s;
    smsink *m;
    kb_err rc;
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    s = calloc(1, sizeof(*s));
    m = calloc(1, sizeof(*m));
    if (s == NULL || m == NULL) {
        free(s);
        free(m);
        return KB_ERR_NOMEM;
    }
    s->ops = &SM_OPS;
    s->impl = m;
    rc = fill_cfg(o, &m->cfg, &m->endpoint, &m->region);
    if (rc == KB_OK && (o->rate < 0 || o->rate > SYNC_SM_RATE_MAX))
        rc = KB_ERR_CONFIG;
    if (rc != KB_OK) {
        sm_free(s);
        return rc;
    }
    m->clock = o->clock;
    m->pacer.interval_ms = o->rate > 0 ? (1000 + o->rate - 1) / o->rate : 0;
    snprintf(s->label, sizeof(s->label), "secretsmanager:%s", o->region);
    *out = s;
    return KB_OK;
}

kb_err sync_sm_get_value(const sync_sm_opts *o, const char *secret_id, kb_secret **out,
                         sync_summary *sum)
{
    kb_awsreq_cfg cfg;
    char *ep = NULL, *rg = NULL;
    json_t *req = NULL, *resp = NULL;
    const json_t *bin, *str;
    long st = 0;
    kb_err rc;
    KB_ENSURE_REF(secret_id);
    KB_ENSURE_REF(out);
    KB_GUARD_OUT(rc, fill_cfg(o, &cfg, &ep, &rg));
    req = json_pack("{s:s}", "SecretId", secret_id);
    KB_ENSURE_OUT(rc, req != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc,
                 call(&cfg, o->clock, NULL, "GetSecretValue", req, &resp, &st, sum, SYNC_OP_GET));
    KB_GUARD_OUT(rc, status_to_err(st, resp, "GetSecretValue"));
    bin = json_object_get(resp, "SecretBinary");
    str = json_object_get(resp, "SecretString");
    if (json_is_string(bin))
        rc = kb_b64_decode_secret(json_string_value(bin), json_string_length(bin), KB_SECRET_MAX,
                                  out);
    else if (json_is_string(str))
        rc = kb_secret_from(json_string_value(str), json_string_length(str), out);
    else
        rc = KB_ERR_INVALID;
out:
    json_decref(req);
    json_decref(resp); /* wiped (kb_json_init) */
    free(ep);
    free(rg);
    return rc;
}
