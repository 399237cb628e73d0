/* service.c - keybridged's core: seal on write, check-unwrap-audit on read. */
#include "service.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dkcache.h"
#include "expiry.h"
#include "hsm_budget.h"
#include "lib/envelope.h"
#include "lib/fileio.h"
#include "lib/log.h"
#include "lib/prog.h"
#include "lib/spiffe_id.h"
#include "model.h"
#include "server_config.h"

/* Purpose labels for keys derived through the token (kb_keystore_derive). */
#define SVC_LABEL_ROWMAC "rowmac-v1"
#define SVC_LABEL_AUDIT "audit-v1"
#define SVC_PIN_MAX 256

struct svc {
    kb_keystore *ks;
    kb_secret *checksum_key;
    kb_secret *rowmac_key;
    kb_secret *audit_key;
    store *st;
    audit_log *audit;
    char **cloud_prefixes;
    hsm_budget *budget;      /* token buckets over wraps and unwraps (NULL never: rates may be 0) */
    dkcache *dkc;            /* unwrapped data keys (ttl 0 = off) */
    char *anchor_file;       /* [audit] anchor_file: where the latest signed head is exported */
    char *anchor_last;       /* the anchor JSON last written there */
    store_commitment commit; /* the token's state counter, behind the store's state row */
    int64_t check_interval;  /* [store] integrity_check_interval in seconds; 0 = off */
    int64_t check_next;      /* monotonic second of the next periodic check */
    char *trust_domain;      /* [server] trust_domain (NULL if unset), for admin-API ID checks */
    pthread_mutex_t admin_mu; /* serializes admin-flag changes against the last-admin check */
};

/* The state commitment lives in the token (kb_keystore_counter_*; docs/internals/rollback.md). */
static kb_err commit_read(void *ctx, uint64_t *out)
{
    return kb_keystore_counter_read(ctx, out);
}

static kb_err commit_advance(void *ctx, uint64_t to)
{
    return kb_keystore_counter_advance(ctx, to);
}

static int64_t mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

static kb_err audit_sign_cb(void *ctx, const uint8_t *msg, size_t msg_len, uint8_t *sig,
                            size_t sig_max, size_t *sig_len)
{
    KB_ENSURE(sig_max >= KB_KEYSTORE_MAC_LEN, KB_ERR_INTERNAL);
    KB_GUARD(kb_keystore_sign(ctx, msg, msg_len, sig));
    *sig_len = KB_KEYSTORE_MAC_LEN;
    return KB_OK;
}

static kb_err audit_verify_cb(void *ctx, const uint8_t *msg, size_t msg_len, const uint8_t *sig,
                              size_t sig_len)
{
    KB_ENSURE(sig_len == KB_KEYSTORE_MAC_LEN, KB_ERR_AUTH);
    return kb_keystore_verify(ctx, msg, msg_len, sig) == KB_OK ? KB_OK : KB_ERR_AUTH;
}

static kb_err open_keystore(const kb_config *cfg, bool create, kb_keystore **out)
{
    const char *kind = kb_config_str(cfg, "hsm", "keystore");
    kb_secret *pin = NULL;
    kb_err rc = KB_OK;

    if (kind != NULL && strcmp(kind, "file") == 0) {
        const char *path = kb_config_str(cfg, "hsm", "key_file");
        if (path == NULL) {
            kb_log(KB_LOG_ERROR, "keystore_config", "msg", "keystore = file needs [hsm] key_file",
                   NULL);
            return KB_ERR_CONFIG;
        }
        kb_log(KB_LOG_WARN, "keystore_file", "msg",
               "development key file keystore in use: not for production", NULL);
        if (create) {
            rc = kb_keystore_create_file(path);
            if (rc != KB_OK && rc != KB_ERR_EXISTS)
                return rc;
        }
        rc = kb_keystore_open_file(path, out);
        if (rc != KB_OK)
            kb_log(KB_LOG_ERROR, "keystore_open_failed", "kind", "file", "path", path, "error",
                   kb_err_str(rc), NULL);
        return rc;
    }
    if (kind == NULL || strcmp(kind, "pkcs11") != 0) {
        kb_log(KB_LOG_ERROR, "keystore_config", "msg", "[hsm] keystore must be pkcs11 or file",
               NULL);
        return KB_ERR_CONFIG;
    }
    rc = kb_config_secret(cfg, "hsm", "pin_file", SVC_PIN_MAX, &pin);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "keystore_pin", "msg",
               "cannot read [hsm] pin_file (it must exist, be at most 256 bytes and not be "
               "group- or world-accessible)",
               "error", kb_err_str(rc), NULL);
        return rc == KB_ERR_CONFIG || rc == KB_ERR_IO ? KB_ERR_CONFIG : rc;
    }
    const char *module = kb_config_str(cfg, "hsm", "module");
    const char *token = kb_config_str(cfg, "hsm", "token_label");
    const char *label = kb_config_str(cfg, "hsm", "key_label");
    if (create)
        KB_GUARD_OUT(rc, kb_keystore_init_pkcs11(module, token, label, pin));
    KB_GUARD_OUT(rc, kb_keystore_open_pkcs11(module, token, label, pin, out));
out:
    if (rc != KB_OK)
        kb_log(KB_LOG_ERROR, "keystore_open_failed", "kind", "pkcs11", "module",
               module ? module : "", "token", token ? token : "", "key_label", label ? label : "",
               "error", kb_err_str(rc), NULL);
    kb_secret_free(pin);
    return rc;
}

/* A rate: a plain decimal number of ops/s ("500", "0.05"), nothing else. */
static bool cfg_rate(const kb_config *cfg, const char *name, double *out)
{
    const char *v = kb_config_str(cfg, "hsm_budget", name);
    char *end = NULL;
    *out = 0;
    if (v == NULL || v[0] == '\0')
        return true;
    for (const char *p = v; *p; p++)
        if (!((*p >= '0' && *p <= '9') || *p == '.'))
            return false; /* no sign, exponent, hex, inf or nan */
    *out = strtod(v, &end);
    return end != v && *end == '\0';
}

/* [hsm_budget]: the buckets and the data-key cache (issue 7). */
static kb_err open_budget(const kb_config *cfg, hsm_budget **b, dkcache **c)
{
    hsm_budget_opts o;
    kb_err rc = KB_ERR_CONFIG;
    int64_t max_clients = kb_config_int(cfg, "hsm_budget", "max_clients");
    int64_t max_entries = kb_config_int(cfg, "hsm_budget", "cache_max_entries");
    bool ok;

    memset(&o, 0, sizeof(o));
    ok = cfg_rate(cfg, "global_rate", &o.global_rate) &&
         cfg_rate(cfg, "cloud_rate", &o.cloud_rate) && cfg_rate(cfg, "dc_rate", &o.dc_rate) &&
         cfg_rate(cfg, "client_rate", &o.client_rate);
    o.global_burst = kb_config_int(cfg, "hsm_budget", "global_burst");
    o.cloud_burst = kb_config_int(cfg, "hsm_budget", "cloud_burst");
    o.dc_burst = kb_config_int(cfg, "hsm_budget", "dc_burst");
    o.client_burst = kb_config_int(cfg, "hsm_budget", "client_burst");
    o.max_clients = max_clients > 0 ? (size_t)max_clients : 0;
    if (!ok || max_clients < 0 || hsm_budget_new(&o, hsm_budget_now(), b) != KB_OK) {
        kb_log(KB_LOG_ERROR, "config_invalid", "section", "hsm_budget", "msg",
               "rates (decimal ops/s) and bursts (whole tokens) must be 0..1000000, and a burst "
               "at least 1 where the rate is not 0",
               NULL);
        return KB_ERR_CONFIG;
    }
    /* The class buckets only keep a cloud herd from starving the data center if together they
     * fit in the global one (hsm_budget.h). */
    if (o.global_rate > 0 &&
        (o.cloud_rate == 0 || o.dc_rate == 0 || o.cloud_rate + o.dc_rate > o.global_rate ||
         o.cloud_burst + o.dc_burst > o.global_burst))
        kb_log(KB_LOG_WARN, "hsm_budget_shares", "msg",
               "cloud_rate + dc_rate (and the bursts) exceed the global budget: one class can "
               "starve the other",
               NULL);
    rc = dkcache_new(kb_config_duration(cfg, "hsm_budget", "cache_ttl"),
                     max_entries > 0 ? (size_t)max_entries : 0, c);
    if (rc == KB_ERR_CONFIG)
        kb_log(KB_LOG_ERROR, "config_invalid", "section", "hsm_budget", "msg",
               "cache_ttl must be 0..1h and cache_max_entries 1..65536", NULL);
    else if (rc != KB_OK)
        kb_log(KB_LOG_ERROR, "dkcache_failed", "error", kb_err_str(rc), NULL);
    return rc;
}

static kb_err svc_open_ex(const kb_config *cfg, bool create, bool migrate, svc **out);

kb_err svc_open(const kb_config *cfg, bool create, svc **out)
{
    return svc_open_ex(cfg, create, create, out);
}

kb_err svc_migrate(const kb_config *cfg, int *version)
{
    svc *s = NULL;
    kb_err rc = svc_open_ex(cfg, false, true, &s);
    if (rc == KB_OK)
        rc = store_schema_version(s->st, version);
    svc_close(s);
    return rc;
}

kb_err svc_migrate_store(const kb_config *cfg, const char *from, const char *to,
                         store_migrate_report *r)
{
    kb_keystore *ks = NULL;
    kb_secret *rowmac = NULL, *audit = NULL;
    char **prefixes = NULL;
    store_commitment commit = {commit_read, commit_advance, NULL};
    audit_opts ao;
    store_migrate_opts mo;
    kb_err rc;

    KB_ENSURE_REF(cfg);
    KB_ENSURE_REF(r);
    memset(r, 0, sizeof(*r));
    KB_GUARD_OUT(rc, open_keystore(cfg, false, &ks));
    KB_GUARD_OUT(rc, kb_keystore_derive(ks, SVC_LABEL_ROWMAC, &rowmac));
    KB_GUARD_OUT(rc, kb_keystore_derive(ks, SVC_LABEL_AUDIT, &audit));
    KB_GUARD_OUT(rc,
                 server_config_list(kb_config_str(cfg, "clients", "cloud_prefixes"), &prefixes));
    commit.ctx = ks;
    memset(&ao, 0, sizeof(ao));
    ao.key = audit;
    ao.sign = audit_sign_cb;
    ao.verify = audit_verify_cb;
    ao.sign_ctx = ks;
    memset(&mo, 0, sizeof(mo));
    mo.from = from;
    mo.to = to;
    mo.row_mac_key = rowmac;
    mo.audit = &ao;
    mo.commitment = &commit;
    mo.content_max = kb_config_int(cfg, "store", "max_content_bytes") > 0
                         ? (size_t)kb_config_int(cfg, "store", "max_content_bytes")
                         : 0;
    mo.cloud_prefixes = (const char *const *)prefixes;
    rc = store_migrate(&mo, r);
out:
    server_config_list_free(prefixes);
    kb_secret_free(rowmac);
    kb_secret_free(audit);
    kb_keystore_free(ks);
    return rc;
}

int svc_migrate_store_cmd(const kb_config *cfg, const char *prog, int argc, char **argv)
{
    const char *from = NULL, *to = NULL;
    store_migrate_report r;
    char hex[2 * sizeof(r.digest) + 1];
    kb_err rc;

    memset(&r, 0, sizeof(r));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            printf(
                "usage: %s migrate-store --from URL --to URL\n\n"
                "Copy every row of the store at --from into the new, empty store at --to\n"
                "(sqlite:PATH or postgresql://...?passfile=PATH, either way), as stored: ids,\n"
                "versions, timestamps, row MACs, the state row and the audit chain. The source's\n"
                "row MACs, state digest and audit chain are verified first, the copy is one\n"
                "transaction on the target, and the target is verified against the token and\n"
                "compared (row counts, SHA-256 of every row) after. Refuses a non-empty target.\n"
                "Needs keybridged's token ([hsm]); stop every keybridged writing to --from first.\n"
                "See docs/high-availability.md.\n",
                strcmp(prog, "keybridge") == 0 ? "keybridge --local KEYBRIDGED_CONF"
                                               : "keybridged [--config FILE]");
            return KB_EXIT_OK;
        }
        if ((strcmp(argv[i], "--from") == 0 || strcmp(argv[i], "--to") == 0) && i + 1 < argc) {
            if (argv[i][2] == 'f')
                from = argv[++i];
            else
                to = argv[++i];
            continue;
        }
        fprintf(stderr, "%s migrate-store: unexpected '%s' (see --help)\n", prog, argv[i]);
        return KB_EXIT_USAGE;
    }
    if (from == NULL || to == NULL) {
        fprintf(stderr, "%s migrate-store: --from URL and --to URL are required\n", prog);
        return KB_EXIT_USAGE;
    }
    rc = svc_migrate_store(cfg, from, to, &r);
    if (rc != KB_OK) {
        fprintf(stderr, "%s migrate-store: refused: %s (%s)\n", prog,
                r.why[0] ? r.why : "see the log above", kb_err_str(rc));
        return kb_exit_code(rc);
    }
    for (size_t i = 0; i < r.ntables; i++)
        printf("%-14s %" PRId64 " rows\n", r.counts[i].table, r.counts[i].rows);
    for (size_t i = 0; i < sizeof(r.digest); i++)
        snprintf(hex + 2 * i, 3, "%02x", r.digest[i]);
    printf("copied %" PRId64 " rows (schema version %d, state counter %" PRId64
           ", audit chain %" PRId64 " rows): source and target verified, digest %s\n",
           r.rows, r.schema_version, r.state_counter, r.audit_rows, hex);
    return KB_EXIT_OK;
}

static kb_err svc_open_ex(const kb_config *cfg, bool create, bool migrate, svc **out)
{
    svc *s;
    kb_err rc = KB_OK;
    store_opts so;
    audit_opts ao;

    KB_ENSURE_REF(cfg);
    KB_ENSURE_REF(out);
    *out = NULL;
    s = calloc(1, sizeof(*s));
    KB_ENSURE(s != NULL, KB_ERR_NOMEM);
    pthread_mutex_init(&s->admin_mu, NULL);
    if (kb_config_str(cfg, "server", "trust_domain") != NULL) {
        s->trust_domain = strdup(kb_config_str(cfg, "server", "trust_domain"));
        KB_ENSURE_OUT(rc, s->trust_domain != NULL, KB_ERR_NOMEM);
    }

    KB_GUARD_OUT(rc, open_keystore(cfg, create, &s->ks));
    KB_GUARD_OUT(rc, kb_keystore_derive(s->ks, KB_CHECKSUM_LABEL, &s->checksum_key));
    KB_GUARD_OUT(rc, kb_keystore_derive(s->ks, SVC_LABEL_ROWMAC, &s->rowmac_key));
    KB_GUARD_OUT(rc, kb_keystore_derive(s->ks, SVC_LABEL_AUDIT, &s->audit_key));
    KB_GUARD_OUT(rc, server_config_list(kb_config_str(cfg, "clients", "cloud_prefixes"),
                                        &s->cloud_prefixes));
    for (size_t i = 0; s->cloud_prefixes[i]; i++) {
        if (model_cloud_prefix_check(s->cloud_prefixes[i]) != KB_OK) {
            kb_log(KB_LOG_ERROR, "config_invalid", "key", "clients.cloud_prefixes", "msg",
                   "each prefix must start with '/'", NULL);
            rc = KB_ERR_CONFIG;
            goto out;
        }
    }

    KB_GUARD_OUT(rc, open_budget(cfg, &s->budget, &s->dkc));

    memset(&so, 0, sizeof(so));
    so.row_mac_key = s->rowmac_key;
    so.migrate = migrate; /* PostgreSQL: only bootstrap and `keybridged migrate` */
    if (kb_config_int(cfg, "store", "max_content_bytes") <= 0) {
        kb_log(KB_LOG_ERROR, "config_invalid", "key", "store.max_content_bytes", "msg",
               "must be a positive number of bytes", NULL);
        rc = KB_ERR_CONFIG;
        goto out;
    }
    so.content_max = (size_t)kb_config_int(cfg, "store", "max_content_bytes");
    so.cloud_prefixes = (const char *const *)s->cloud_prefixes;
    s->commit.read = commit_read;
    s->commit.advance = commit_advance;
    s->commit.ctx = s->ks;
    so.commitment = &s->commit;
    s->check_interval = kb_config_duration(cfg, "store", "integrity_check_interval");
    if (s->check_interval < 0) {
        kb_log(KB_LOG_ERROR, "config_invalid", "key", "store.integrity_check_interval", "msg",
               "must be a duration >= 0", NULL);
        rc = KB_ERR_CONFIG;
        goto out;
    }
    s->check_next = mono_now() + s->check_interval;
    rc = store_open(kb_config_str(cfg, "store", "url"), &so, &s->st);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "store_open_failed", "error", kb_err_str(rc), NULL);
        goto out;
    }

    memset(&ao, 0, sizeof(ao));
    ao.key = s->audit_key;
    ao.sign = audit_sign_cb;
    ao.verify = audit_verify_cb;
    ao.sign_ctx = s->ks;
    ao.anchor_every_rows = kb_config_int(cfg, "audit", "anchor_every_rows");
    ao.anchor_every_secs = kb_config_duration(cfg, "audit", "anchor_every");
    KB_GUARD_OUT(rc, audit_open(s->st, &ao, &s->audit));
    if (kb_config_str(cfg, "audit", "anchor_file") != NULL) {
        s->anchor_file = strdup(kb_config_str(cfg, "audit", "anchor_file"));
        KB_ENSURE_OUT(rc, s->anchor_file != NULL, KB_ERR_NOMEM);
    }
    *out = s;
    s = NULL;
out:
    svc_close(s);
    return rc;
}

void svc_close(svc *s)
{
    if (s == NULL)
        return;
    audit_close(s->audit);
    store_close(s->st);
    kb_secret_free(s->checksum_key);
    kb_secret_free(s->rowmac_key);
    kb_secret_free(s->audit_key);
    kb_keystore_free(s->ks);
    server_config_list_free(s->cloud_prefixes);
    dkcache_free(s->dkc);
    hsm_budget_free(s->budget);
    free(s->anchor_file);
    free(s->anchor_last);
    free(s->trust_domain);
    pthread_mutex_destroy(&s->admin_mu);
    free(s);
}

store *svc_store(svc *s)
{
    return s->st;
}

const char *svc_anchor_file(svc *s)
{
    return s->anchor_file;
}

const char *svc_trust_domain(svc *s)
{
    return s->trust_domain;
}

pthread_mutex_t *svc_admin_mu(svc *s)
{
    return &s->admin_mu;
}

audit_log *svc_audit(svc *s)
{
    return s->audit;
}

kb_keystore *svc_keystore(svc *s)
{
    return s->ks;
}

hsm_budget *svc_budget(svc *s)
{
    return s->budget;
}

dkcache *svc_dkcache(svc *s)
{
    return s->dkc;
}

void svc_export_anchor(svc *s)
{
    char *text = NULL;
    if (s == NULL || s->anchor_file == NULL || audit_anchor_json(s->audit, &text) != KB_OK)
        return;
    if (s->anchor_last == NULL || strcmp(text, s->anchor_last) != 0) {
        if (kb_file_write_atomic(s->anchor_file, text, strlen(text), 0600) == KB_OK) {
            free(s->anchor_last);
            s->anchor_last = text;
            text = NULL;
        } else {
            kb_log(KB_LOG_ERROR, "audit_anchor_export_failed", "path", s->anchor_file, NULL);
        }
    }
    free(text);
}

kb_err svc_check_store(svc *s)
{
    kb_err rc;
    KB_ENSURE_REF(s);
    if (store_health(s->st) != KB_OK)
        return KB_ERR_UNAVAILABLE; /* already refusing, already logged and audited */
    rc = store_verify(s->st);
    if (rc == KB_OK || store_health(s->st) == KB_OK)
        return rc; /* passed, or could not run (token unreachable: logged, tried again later) */
    {
        svc_actor a = {.identity = "keybridged", .peer = "", .now = (int64_t)time(NULL)};
        svc_audit_event(s, &a, "store_integrity", "store", 0, KB_ERR_INTEGRITY);
    }
    return rc;
}

void svc_maintenance(svc *s)
{
    if (s == NULL)
        return;
    (void)dkcache_sweep(s->dkc, hsm_budget_now());
    svc_export_anchor(s);
    if (s->check_interval > 0 && mono_now() >= s->check_next) {
        s->check_next = mono_now() + s->check_interval;
        (void)svc_check_store(s);
    }
}

void svc_forget_secret(svc *s, int64_t secret_id)
{
    if (s != NULL)
        dkcache_forget_secret(s->dkc, secret_id);
}

/* One token for one token operation by actor a (cloud: a cloud client). */
static kb_err take_token(svc *s, const svc_actor *a, bool cloud)
{
    return hsm_budget_take(s->budget, a->identity, cloud, hsm_budget_now(), NULL);
}

int64_t svc_retry_after(svc *s, const svc_actor *a, bool cloud)
{
    return hsm_budget_retry_after(s->budget, a->identity, cloud, hsm_budget_now());
}

void svc_audit_event(svc *s, const svc_actor *a, const char *action, const char *object,
                     int64_t version, kb_err result)
{
    audit_event ev = {
        .time = a->now,
        .identity = a->identity,
        .peer = a->peer,
        .action = action,
        .object = object,
        .version = version,
        .result = kb_err_str(result),
    };
    kb_err rc = audit_append(s->audit, &ev, NULL);
    if (rc != KB_OK)
        kb_log(KB_LOG_ERROR, "audit_append_failed", "action", action, "error", kb_err_str(rc),
               NULL);
}

kb_err svc_change_begin(svc *s, const svc_actor *a, const char *action, const char *object,
                        store_audit *au)
{
    audit_event ev = {
        .time = a->now,
        .identity = a->identity,
        .peer = a->peer,
        .action = action,
        .object = object ? object : "",
        .version = 0,
        .result = kb_err_str(KB_OK),
    };
    kb_err rc = audit_change_begin(s->audit, &ev, au);
    if (rc != KB_OK) {
        /* Keep the event for svc_change_end's failure row (which reports why). */
        au->ev = ev;
        au->mac = NULL;
    }
    return rc;
}

void svc_change_end(svc *s, store_audit *au, kb_err rc)
{
    audit_change_end(s->audit, au, rc);
}

/* ---- sealing ------------------------------------------------------------------------------- */

typedef struct {
    svc *s;
    const uint8_t *content;
    size_t len;
} seal_ctx;

/* Called by the store inside its write transaction, once (secret id, version) is known. */
static kb_err seal_cb(void *ctx, int64_t secret_id, int64_t version, store_envelope *env,
                      uint8_t checksum[STORE_CHECKSUM_LEN])
{
    seal_ctx *c = ctx;
    kb_envelope e;
    memset(&e, 0, sizeof(e));
    KB_ENSURE(secret_id > 0 && version > 0, KB_ERR_INTERNAL);
    KB_GUARD(
        kb_envelope_seal(c->s->ks, (uint64_t)secret_id, (uint64_t)version, c->content, c->len, &e));
    kb_err rc = kb_checksum(c->s->checksum_key, (uint64_t)secret_id, (uint64_t)version, c->content,
                            c->len, checksum);
    if (rc != KB_OK) {
        kb_envelope_clear(&e);
        return rc;
    }
    /* Hand the buffers over: the store frees them with store_envelope_clear. */
    env->wrapped_key = e.wrapped;
    env->wrapped_key_len = e.wrapped_len;
    env->key_id = e.key_id;
    env->sealed = e.sealed;
    env->sealed_len = e.sealed_len;
    return KB_OK;
}

/* The version's expiry: the one given, else the content's (expiry.h). Without
 * spec->expiry_from_content a content that cannot be read (malformed certificate, key whose
 * date cannot be found) is stored without an expiry and logged (kind only, never content); with
 * it, the write is refused (KB_ERR_INVALID, nothing written) unless a date was found. */
static kb_err expiry_for(const svc_secret_spec *spec, int64_t *out)
{
    expiry_kind kind = EXPIRY_NONE;
    int64_t t = 0;
    kb_err rc;

    *out = 0;
    if (spec->expires_at > 0) {
        KB_ENSURE(!spec->expiry_from_content, KB_ERR_INVALID);
        *out = spec->expires_at;
        return KB_OK;
    }
    rc = expiry_extract(spec->content, spec->content_len, &t, &kind);
    if (rc == KB_OK) {
        *out = t;
        return KB_OK;
    }
    if (kind != EXPIRY_NONE)
        kb_log(KB_LOG_WARN, "expiry_extract_failed", "secret", spec->name, "kind",
               expiry_kind_name(kind), "error", kb_err_str(rc), NULL);
    return spec->expiry_from_content ? KB_ERR_INVALID : KB_OK;
}

kb_err svc_secret_create(svc *s, const svc_actor *a, const svc_secret_spec *spec, int64_t *id_out)
{
    store_secret_new sn;
    store_version_new vn;
    store_group g;
    seal_ctx sc = {s, spec->content, spec->content_len};
    store_audit au;
    kb_err rc = KB_OK;
    int64_t id = 0;

    kb_err arc = svc_change_begin(s, a, "secret.create", spec->name, &au);

    memset(&g, 0, sizeof(g));
    memset(&sn, 0, sizeof(sn));
    sn.name = spec->name;
    sn.description = spec->description;
    sn.cloud_sync = spec->cloud_sync;
    if (spec->owner_group != NULL) {
        KB_GUARD_OUT(rc, store_group_get(s->st, spec->owner_group, &g));
        sn.owner_group_id = g.id;
    }
    memset(&vn, 0, sizeof(vn));
    vn.content_len = spec->content_len;
    vn.metadata = spec->metadata;
    KB_GUARD_OUT(rc, expiry_for(spec, &vn.expires_at));
    KB_GUARD_OUT(rc, take_token(s, a, false)); /* the wrap in seal_cb */
    KB_GUARD_OUT(rc, arc);
    KB_GUARD_OUT(rc,
                 store_secret_create(s->st, &sn, &vn, seal_cb, &sc, a->identity, a->now, &id, &au));
    if (id_out)
        *id_out = id;
out:
    store_group_clear(&g);
    /* A budget refusal changes nothing and is not audited: an audit row can cost a token
     * operation of its own (the chain head signature). It is counted in the metrics. */
    if (rc != KB_ERR_LIMIT)
        svc_change_end(s, &au, rc);
    return rc;
}

kb_err svc_secret_put(svc *s, const svc_actor *a, const svc_secret_spec *spec, int64_t *version_out)
{
    store_secret sec;
    store_version_new vn;
    seal_ctx sc = {s, spec->content, spec->content_len};
    int64_t version = 0;
    store_audit au;
    kb_err rc = KB_OK;
    kb_err arc = svc_change_begin(s, a, "secret.put", spec->name, &au);

    memset(&sec, 0, sizeof(sec));
    KB_GUARD_OUT(rc, store_secret_get(s->st, spec->name, false, &sec));
    memset(&vn, 0, sizeof(vn));
    vn.content_len = spec->content_len;
    vn.metadata = spec->metadata;
    KB_GUARD_OUT(rc, expiry_for(spec, &vn.expires_at));
    KB_GUARD_OUT(rc, take_token(s, a, false));
    KB_GUARD_OUT(rc, arc);
    KB_GUARD_OUT(rc, store_version_add(s->st, sec.id, &vn, seal_cb, &sc, a->identity, a->now,
                                       &version, &au));
    /* A new version: the older versions' data keys need not stay in memory. */
    dkcache_forget_secret(s->dkc, sec.id);
    if (version_out)
        *version_out = version;
out:
    store_secret_clear(&sec);
    if (rc != KB_ERR_LIMIT)
        svc_change_end(s, &au, rc);
    return rc;
}

/* Open a record's envelope: with a cached data key if there is one (no token operation, no
 * budget), else unwrap in the token within the budget (KB_ERR_LIMIT: no token call made) and
 * keep the key for the cache's TTL. */
static kb_err open_record(svc *s, const svc_actor *a, bool cloud, const store_record *rec,
                          kb_secret **content)
{
    const store_envelope *env = &rec->env;
    kb_secret *dk = NULL;
    double now = hsm_budget_now();
    kb_err rc;

    *content = NULL;
    KB_ENSURE(env->sealed != NULL && env->key_id != NULL, KB_ERR_INTEGRITY);
    /* Check the sealed part's shape before spending a token (as kb_envelope_open does). */
    KB_ENSURE(env->sealed_len >= KB_ENVELOPE_OVERHEAD, KB_ERR_INTEGRITY);
    rc = dkcache_get(s->dkc, rec->secret.id, rec->version.version, env->wrapped_key,
                     env->wrapped_key_len, now, &dk);
    if (rc == KB_ERR_NOT_FOUND) {
        KB_GUARD(take_token(s, a, cloud));
        KB_GUARD(
            kb_keystore_unwrap(s->ks, env->key_id, env->wrapped_key, env->wrapped_key_len, &dk));
        /* Keep it only once the content opened with it (a wrong key is never cached). */
    } else if (rc != KB_OK) {
        return rc;
    } else {
        now = -1; /* a hit: nothing to put back */
    }
    rc = kb_envelope_open_with_key(dk, (uint64_t)rec->secret.id, (uint64_t)rec->version.version,
                                   env->sealed, env->sealed_len, content);
    if (rc == KB_OK && now >= 0 &&
        dkcache_put(s->dkc, rec->secret.id, rec->version.version, env->wrapped_key,
                    env->wrapped_key_len, dk, now) != KB_OK)
        kb_log(KB_LOG_WARN, "dkcache_put_failed", NULL);
    kb_secret_free(dk);
    return rc;
}

kb_err svc_secret_rollback(svc *s, const svc_actor *a, const char *name, int64_t to_version,
                           int64_t *version_out)
{
    store_secret sec;
    store_record old;
    kb_secret *content = NULL;
    store_version_new vn;
    seal_ctx sc;
    int64_t version = 0;
    store_audit au;
    kb_err rc = KB_OK;
    kb_err arc = svc_change_begin(s, a, "secret.rollback", name, &au);

    memset(&sec, 0, sizeof(sec));
    memset(&old, 0, sizeof(old));
    KB_ENSURE_OUT(rc, to_version > 0, KB_ERR_INVALID);
    KB_GUARD_OUT(rc, store_secret_get(s->st, name, false, &sec));
    KB_GUARD_OUT(rc, store_version_get(s->st, sec.id, to_version, &old));
    KB_GUARD_OUT(rc, open_record(s, a, false, &old, &content));
    KB_GUARD_OUT(rc, take_token(s, a, false)); /* the wrap of the new version */
    memset(&vn, 0, sizeof(vn));
    vn.content_len = kb_secret_len(content);
    vn.metadata = old.version.metadata;
    vn.expires_at = old.version.expires_at;
    sc.s = s;
    sc.content = kb_secret_cdata(content);
    sc.len = kb_secret_len(content);
    KB_GUARD_OUT(rc, arc);
    KB_GUARD_OUT(rc, store_version_add(s->st, sec.id, &vn, seal_cb, &sc, a->identity, a->now,
                                       &version, &au));
    dkcache_forget_secret(s->dkc, sec.id);
    if (version_out)
        *version_out = version;
out:
    kb_secret_free(content);
    store_record_clear(&old);
    store_secret_clear(&sec);
    if (rc != KB_ERR_LIMIT)
        svc_change_end(s, &au, rc);
    return rc;
}

kb_err svc_secret_read_admin(svc *s, const svc_actor *a, const char *name, int64_t version,
                             store_record *rec, kb_secret **content)
{
    store_secret sec;
    kb_err rc = KB_OK;

    memset(&sec, 0, sizeof(sec));
    memset(rec, 0, sizeof(*rec));
    *content = NULL;
    KB_GUARD_OUT(rc, store_secret_get(s->st, name, false, &sec));
    KB_GUARD_OUT(rc, store_version_get(s->st, sec.id, version, rec));
    rc = open_record(s, a, false, rec, content);
    if (rc != KB_OK)
        store_record_clear(rec);
out:
    store_secret_clear(&sec);
    if (rc != KB_ERR_LIMIT)
        svc_audit_event(s, a, "secret.admin_read", name,
                        rc == KB_OK ? rec->version.version : version, rc);
    return rc;
}

/* ---- clients ------------------------------------------------------------------------------- */

kb_err svc_client_auth(svc *s, const svc_actor *a, store_client *out)
{
    kb_err rc;
    memset(out, 0, sizeof(*out));
    rc = store_client_get(s->st, a->identity, out);
    if (rc == KB_OK && !out->enabled)
        rc = KB_ERR_DENIED;
    if (rc != KB_OK) {
        store_client_clear(out);
        /* A store refusing service (rollback detected) was audited once; not per request. */
        if (rc != KB_ERR_UNAVAILABLE)
            svc_audit_event(s, a, "client.denied", a->identity, 0, rc);
        return rc;
    }
    /* Activity marker (written at most hourly by the store); failure is not fatal. */
    if (store_client_seen(s->st, out->id, a->now, false) != KB_OK)
        kb_log(KB_LOG_WARN, "client_seen_failed", NULL);
    return KB_OK;
}

kb_err svc_client_list(svc *s, const svc_actor *a, const store_client *c, store_record **out,
                       size_t *n)
{
    kb_err rc = store_readable_list(s->st, c->id, out, n);
    if (rc == KB_OK) {
        if (store_client_seen(s->st, c->id, a->now, true) != KB_OK)
            kb_log(KB_LOG_WARN, "client_seen_failed", NULL);
    } else {
        svc_audit_event(s, a, "secret.list", "", 0, rc);
    }
    return rc;
}

/* Unwrap a readable record (KB_OK: *content is set, the read still to be committed by
 * commit_reads). A forged access row (membership, grant or secret row failing its MAC:
 * KB_ERR_TAMPERED from the store) is logged and audited as such, then answered exactly like a
 * missing name; any other failure is audited here and rec cleared. */
static kb_err open_read(svc *s, const svc_actor *a, const store_client *c, const char *name,
                        store_record *rec, kb_err found, kb_secret **content)
{
    kb_err rc = found;
    *content = NULL;
    if (rc == KB_ERR_TAMPERED) {
        kb_log(KB_LOG_ERROR, "secret_access_tampered", "msg",
               "a row deciding this read failed its row MAC: answered as not found", "secret", name,
               "client", a->identity, NULL);
        svc_audit_event(s, a, "secret.read", name, 0, rc);
        store_record_clear(rec);
        return KB_ERR_NOT_FOUND;
    }
    if (rc == KB_OK)
        rc = open_record(s, a, c->cloud, rec, content);
    if (rc == KB_OK)
        return KB_OK;
    /* Over budget: deferred, nothing read, nothing recorded (see svc_secret_create). */
    if (rc != KB_ERR_LIMIT)
        svc_audit_event(s, a, "secret.read", name, 0, rc);
    if (rc == KB_ERR_INTEGRITY)
        kb_log(KB_LOG_ERROR, "secret_integrity_failure", "secret", name, NULL);
    store_record_clear(rec);
    return rc;
}

/* The opened reads (errs[i] == KB_OK) of n: their fetch records and audit rows in one store
 * transaction; content is only handed out once they are committed. If that fails, every opened
 * read fails with its error (content freed, record cleared). */
static void commit_reads(svc *s, const svc_actor *a, const store_client *c,
                         const char *const *names, size_t n, store_record *rec, kb_secret **content,
                         kb_err *errs)
{
    audit_event *ev = NULL;
    audit_fetch *fr = NULL;
    size_t k = 0;
    kb_err rc = KB_OK;

    for (size_t i = 0; i < n; i++)
        k += errs[i] == KB_OK;
    if (k == 0)
        return;
    ev = calloc(k, sizeof(*ev));
    fr = calloc(k, sizeof(*fr));
    if (ev == NULL || fr == NULL)
        rc = KB_ERR_NOMEM;
    k = 0;
    for (size_t i = 0; rc == KB_OK && i < n; i++) {
        if (errs[i] != KB_OK)
            continue;
        ev[k] = (audit_event){.time = a->now,
                              .identity = a->identity,
                              .peer = a->peer,
                              .action = "secret.read",
                              .object = names[i],
                              .version = rec[i].version.version,
                              .result = kb_err_str(KB_OK)};
        fr[k] = (audit_fetch){c->id, rec[i].secret.id, rec[i].version.version};
        k++;
    }
    if (rc == KB_OK)
        rc = audit_append_reads(s->audit, ev, fr, k, NULL);
    free(ev);
    free(fr);
    if (rc == KB_OK)
        return;
    kb_log(KB_LOG_ERROR, "audit_append_failed", "action", "secret.read", "error", kb_err_str(rc),
           NULL);
    /* Whatever the store said (a foreign key is KB_ERR_NOT_FOUND: a client or secret removed
     * since the read), the names were readable: answer "try again" (503), never "not found",
     * which a Keywhiz client takes as the secret gone for the whole batch. */
    for (size_t i = 0; i < n; i++) {
        if (errs[i] != KB_OK)
            continue;
        kb_secret_free(content[i]);
        content[i] = NULL;
        store_record_clear(&rec[i]);
        errs[i] = KB_ERR_UNAVAILABLE;
    }
}

kb_err svc_client_read(svc *s, const svc_actor *a, const store_client *c, const char *name,
                       int64_t version, store_record *rec, kb_secret **content)
{
    kb_err rc;
    memset(rec, 0, sizeof(*rec));
    rc = store_readable_get(s->st, c->id, name, version, rec);
    rc = open_read(s, a, c, name, rec, rc, content);
    commit_reads(s, a, c, &name, 1, rec, content, &rc);
    return rc;
}

kb_err svc_client_read_batch(svc *s, const svc_actor *a, const store_client *c,
                             const char *const *names, size_t n, store_record *rec,
                             kb_secret **content, kb_err *errs)
{
    KB_ENSURE(n <= STORE_BATCH_MAX, KB_ERR_TOO_LARGE);
    memset(rec, 0, n * sizeof(*rec));
    KB_GUARD(store_readable_get_batch(s->st, c->id, names, n, rec, errs));
    for (size_t i = 0; i < n; i++)
        errs[i] = open_read(s, a, c, names[i], &rec[i], errs[i], &content[i]);
    commit_reads(s, a, c, names, n, rec, content, errs);
    return KB_OK;
}

/* ---- bootstrap ----------------------------------------------------------------------------- */

kb_err svc_recover_admin(const kb_config *cfg, const char *admin_spiffe_id, bool force)
{
    svc *s = NULL;
    store_client *clients = NULL, one;
    size_t n = 0, admins = 0;
    int64_t id = 0;
    kb_err rc = KB_OK;
    svc_actor a = {MODEL_ACTOR_RECOVER, "local", (int64_t)time(NULL)};
    bool change_audited = false;
    spiffe_id sid;
    const char *why = NULL;
    const char *td = kb_config_str(cfg, "server", "trust_domain");

    memset(&one, 0, sizeof(one));
    KB_GUARD_OUT(rc, model_spiffe_id_check(admin_spiffe_id));
    if (spiffe_id_parse_str(admin_spiffe_id, &sid, &why) != KB_OK || spiffe_id_is_root(&sid) ||
        (td != NULL && !spiffe_id_member_of(&sid, td))) {
        kb_log(KB_LOG_ERROR, "recover_admin_refused", "msg",
               why ? why : "not a workload SPIFFE ID in [server] trust_domain", NULL);
        return KB_ERR_INVALID;
    }
    KB_GUARD_OUT(rc, svc_open(cfg, false, &s));
    KB_GUARD_OUT(rc, store_client_list(s->st, &clients, &n));
    for (size_t i = 0; i < n; i++)
        if (clients[i].enabled && clients[i].admin)
            admins++;
    if (admins > 0 && !force) {
        kb_log(KB_LOG_ERROR, "recover_admin_refused", "msg",
               "an enabled admin exists: use the admin API (or --force if its key is lost)", NULL);
        rc = KB_ERR_EXISTS;
        goto out;
    }
    rc = store_client_get(s->st, admin_spiffe_id, &one);
    if (rc == KB_OK || rc == KB_ERR_NOT_FOUND) {
        /* The change and its audit row in one transaction. */
        kb_err found = rc;
        store_audit au;
        rc = svc_change_begin(s, &a, "admin.recover", admin_spiffe_id, &au);
        if (rc == KB_OK && found == KB_OK) {
            store_client_patch p = STORE_CLIENT_PATCH_INIT;
            p.enabled = 1;
            p.admin = 1;
            rc = store_client_update(s->st, one.id, &p, &au);
        } else if (rc == KB_OK) {
            store_client_new cn;
            memset(&cn, 0, sizeof(cn));
            cn.spiffe_id = admin_spiffe_id;
            cn.description = "admin (recover-admin)";
            cn.enabled = true;
            cn.admin = true;
            rc = store_client_create(s->st, &cn, a.identity, a.now, &id, &au);
        }
        svc_change_end(s, &au, rc);
        if (rc != KB_OK) {
            change_audited = true;
            goto out;
        }
    }
    if (rc != KB_OK)
        goto out;
    KB_GUARD_OUT(rc, audit_anchor_now(s->audit, a.now));
    svc_export_anchor(s);
out:
    if (s != NULL && rc != KB_OK && !change_audited)
        svc_audit_event(s, &a, "admin.recover", admin_spiffe_id ? admin_spiffe_id : "", 0, rc);
    store_client_clear(&one);
    store_clients_free(clients, n);
    svc_close(s);
    return rc;
}

kb_err svc_bootstrap(const kb_config *cfg, const char *admin_spiffe_id)
{
    svc *s = NULL;
    store_client *clients = NULL;
    size_t n = 0;
    int64_t client_id = 0, group_id = 0;
    kb_err rc = KB_OK;
    svc_actor a = {"bootstrap", "local", (int64_t)time(NULL)};
    store_client_new cn;
    store_audit au;
    char obj[MODEL_SPIFFE_ID_MAX + 8];

    KB_GUARD_OUT(rc, model_spiffe_id_check(admin_spiffe_id));
    KB_GUARD_OUT(rc, svc_open(cfg, true, &s));
    KB_GUARD_OUT(rc, store_client_list(s->st, &clients, &n));
    if (n > 0) {
        kb_log(KB_LOG_ERROR, "bootstrap_refused", "msg",
               "the store already has clients; bootstrap runs once", NULL);
        rc = KB_ERR_EXISTS;
        goto out;
    }
    memset(&cn, 0, sizeof(cn));
    cn.spiffe_id = admin_spiffe_id;
    cn.description = "first admin (bootstrap)";
    cn.enabled = true;
    cn.admin = true;
    /* Each change commits with its own audit row (client.create, group.create, membership.add,
     * as the admin API writes them), so a crash part-way leaves no unaudited row. */
    KB_GUARD_OUT(rc, svc_change_begin(s, &a, "client.create", admin_spiffe_id, &au));
    rc = store_client_create(s->st, &cn, a.identity, a.now, &client_id, &au);
    svc_change_end(s, &au, rc);
    KB_GUARD_OUT(rc, rc);
    KB_GUARD_OUT(rc, svc_change_begin(s, &a, "group.create", "admins", &au));
    rc = store_group_create(s->st, "admins", "administrators (bootstrap)", a.identity, a.now,
                            &group_id, &au);
    svc_change_end(s, &au, rc);
    KB_GUARD_OUT(rc, rc);
    snprintf(obj, sizeof(obj), "admins %s", admin_spiffe_id);
    KB_GUARD_OUT(rc, svc_change_begin(s, &a, "membership.add", obj, &au));
    rc = store_membership_add(s->st, client_id, group_id, &au);
    svc_change_end(s, &au, rc);
    KB_GUARD_OUT(rc, rc);
    /* Then the bootstrap row, and the chain's first signed anchor (exported if configured). */
    svc_audit_event(s, &a, "bootstrap", admin_spiffe_id, 0, KB_OK);
    KB_GUARD_OUT(rc, audit_anchor_now(s->audit, a.now));
    svc_export_anchor(s);
out:
    if (s != NULL && rc != KB_OK)
        svc_audit_event(s, &a, "bootstrap", admin_spiffe_id ? admin_spiffe_id : "", 0, rc);
    store_clients_free(clients, n);
    svc_close(s);
    return rc;
}

/* ---- owners --------------------------------------------------------------------------------- */

#define SCOPE_PAGE 1000

/* Does a live secret have one of the scope's groups as its owner group? Sets sc->owner. */
static kb_err scope_owns_any(svc *s, svc_scope *sc)
{
    char *cursor = NULL;
    kb_err rc = KB_OK;
    while (sc->n > 0 && !sc->owner) {
        store_record *recs = NULL;
        size_t n = 0;
        char *next = NULL;
        rc = store_secret_list_page(s->st, false, cursor, SCOPE_PAGE, &recs, &n, &next);
        if (rc != KB_OK)
            break;
        for (size_t i = 0; i < n && !sc->owner; i++)
            sc->owner = svc_scope_has_group(sc, recs[i].secret.owner_group_id);
        store_records_free(recs, n);
        free(cursor);
        cursor = next;
        if (cursor == NULL)
            break;
    }
    free(cursor);
    return rc;
}

kb_err svc_scope_get(svc *s, const store_client *c, svc_scope *out)
{
    store_group *g = NULL;
    size_t n = 0;
    kb_err rc;
    memset(out, 0, sizeof(*out));
    if (c->admin) {
        out->admin = true;
        return KB_OK;
    }
    if (!c->enabled || c->cloud)
        return KB_OK; /* manages nothing */
    KB_GUARD(store_client_groups(s->st, c->id, &g, &n));
    if (n > 0) {
        out->groups = calloc(n, sizeof(*out->groups));
        KB_ENSURE_OUT(rc, out->groups != NULL, KB_ERR_NOMEM);
        for (size_t i = 0; i < n; i++)
            out->groups[i] = g[i].id;
        out->n = n;
    }
    rc = scope_owns_any(s, out);
out:
    store_groups_free(g, n);
    return rc;
}

void svc_scope_clear(svc_scope *sc)
{
    if (sc == NULL)
        return;
    free(sc->groups);
    memset(sc, 0, sizeof(*sc));
}

bool svc_scope_has_group(const svc_scope *sc, int64_t group_id)
{
    if (sc->admin)
        return true;
    for (size_t i = 0; i < sc->n; i++)
        if (group_id > 0 && sc->groups[i] == group_id)
            return true;
    return false;
}

bool svc_may_manage(const svc_scope *sc, int64_t owner_group_id)
{
    return sc->admin || (owner_group_id > 0 && svc_scope_has_group(sc, owner_group_id));
}

bool svc_console_allowed(const store_client *c, const svc_scope *sc)
{
    return c->enabled && (sc->admin || (sc->owner && !c->cloud));
}
