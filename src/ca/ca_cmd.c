/* ca_cmd.c - shared set-up of keybridge-ca's subcommands (see ca_cmd.h). */
#include "ca_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "ca_config.h"
#include "ca_target.h"
#include "lib/buf.h"
#include "lib/keystore.h"
#include "lib/log.h"
#include "lib/prog.h"

#define PIN_MAX 256

struct ca_ctx {
    const kb_config *cfg;
    ca_store *st;
    kb_secret *pin;
    ca_pca *pca;
    ca_keys keys;
    ca_authority *ca;
};

#define SOFTHSM2_DEFAULT_CONF "/etc/softhsm/softhsm2.conf"

/* Why the PKCS#11 side fails, in words (module, SoftHSM2's configuration, token), or NULL when
 * the module loads and the token is there. */
static const char *pkcs11_why(const ca_ctx *x, char *buf, size_t len)
{
    const char *mod = x->keys.pkcs11_module, *tok = x->keys.pkcs11_token;
    const char *conf = getenv("SOFTHSM2_CONF");
    int softhsm = mod != NULL && strstr(mod, "softhsm") != NULL;

    if (x->pin == NULL || mod == NULL || tok == NULL)
        return NULL; /* [ca] key = file */
    if (access(mod, R_OK) != 0) {
        snprintf(buf, len, "[pkcs11] module %s cannot be read", mod);
        return buf;
    }
    if (softhsm && conf != NULL && access(conf, R_OK) != 0) {
        snprintf(buf, len, "SOFTHSM2_CONF names %.512s, which cannot be read", conf);
        return buf;
    }
    if (softhsm && conf == NULL && access(SOFTHSM2_DEFAULT_CONF, R_OK) != 0) {
        snprintf(buf, len,
                 "SOFTHSM2_CONF is not set and %s does not exist: SoftHSM2 has no token "
                 "store (set SOFTHSM2_CONF to the configuration naming the token's directory)",
                 SOFTHSM2_DEFAULT_CONF);
        return buf;
    }
    switch (kb_pkcs11_token_check(mod, tok)) {
    case KB_OK:
        return NULL;
    case KB_ERR_UNAVAILABLE:
        snprintf(buf, len, "[pkcs11] module %s is not a loadable PKCS#11 module", mod);
        return buf;
    case KB_ERR_NOT_FOUND:
        snprintf(buf, len, "no initialised token labelled '%s' ([pkcs11] token) in %s%s", tok, mod,
                 softhsm && conf == NULL ? " (SOFTHSM2_CONF is not set, so SoftHSM2 read "
                                           "its default " SOFTHSM2_DEFAULT_CONF ")"
                                         : "");
        return buf;
    case KB_ERR_CONFLICT:
        snprintf(buf, len, "several tokens are labelled '%s' ([pkcs11] token)", tok);
        return buf;
    default:
        snprintf(buf, len, "the PKCS#11 module %s failed to initialise%s", mod,
                 softhsm ? " (SoftHSM2: check SOFTHSM2_CONF and its directories.tokendir)" : "");
        return buf;
    }
}

/* 1 if the store has an active generation. */
static int has_active(ca_store *st)
{
    ca_gen *g = NULL;
    size_t n = 0;
    int found = 0;

    if (ca_store_gen_list(st, &g, &n) != KB_OK)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(g[i].state, CA_STATE_ACTIVE) == 0)
            found = 1;
    ca_gen_list_free(g, n);
    return found;
}

const char *ca_ctx_explain(ca_ctx *x, kb_err rc, char *buf, size_t len)
{
    const char *w = pkcs11_why(x, buf, len);

    if (w != NULL)
        return w;
    if (rc == KB_ERR_NOT_FOUND && x->st != NULL && !has_active(x->st))
        return "no active CA: run keybridge-ca init";
    if (x->pca != NULL)
        return "AWS Private CA: the log line before this one names the failure "
               "(acm_pca_ca_certificate_failed or _refused)";
    if (rc == KB_ERR_CONFIG)
        return "the active generation needs another [ca] key (acm-pca generations: [ca] key = "
               "acm-pca)";
    if (rc == KB_ERR_NOT_FOUND)
        return "the active CA's key or its token was not found (the [pkcs11] token, or the key "
               "file in [ca] key_dir): the log line before this one names what";
    if (rc == KB_ERR_AUTH)
        return "refused: the PKCS#11 PIN ([pkcs11] pin_file), or the stored CA certificate "
               "(the log names the check)";
    return kb_err_str(rc);
}

int ca_ctx_open(const kb_config *cfg, int with_ca, ca_ctx **out)
{
    const char *where = NULL, *passfile = NULL;
    const char *kind = NULL;
    char msg[256];
    ca_ctx *x;
    kb_err rc;

    *out = NULL;
    x = calloc(1, sizeof(*x));
    if (x == NULL)
        return KB_EXIT_FAIL;
    x->cfg = cfg;
    if (ca_config_key_kind(cfg, &kind, msg, sizeof(msg)) != KB_OK) {
        fprintf(stderr, "keybridge-ca: %s\n", msg);
        free(x);
        return KB_EXIT_CONFIG;
    }
    if (strcmp(kind, CA_KEY_ACM_PCA) == 0) {
        const char *why = NULL;
        ca_pca_opts po;
        if (ca_config_pca(cfg, &po, msg, sizeof(msg)) != KB_OK) {
            fprintf(stderr, "keybridge-ca: %s\n", msg);
            free(x);
            return KB_EXIT_CONFIG;
        }
        rc = ca_pca_new(&po, &x->pca, &why);
        if (rc != KB_OK) {
            fprintf(stderr, "keybridge-ca: %s\n", why ? why : kb_err_str(rc));
            free(x);
            return KB_EXIT_CONFIG;
        }
        x->keys.pca = x->pca;
    }
    if (strcmp(kind, "pkcs11") == 0) {
        rc = kb_config_secret(cfg, "pkcs11", "pin_file", PIN_MAX, &x->pin);
        if (rc != KB_OK) {
            fprintf(stderr, "keybridge-ca: [pkcs11] pin_file: %s (required, mode 0600)\n",
                    kb_err_str(rc));
            free(x);
            return KB_EXIT_CONFIG;
        }
        x->keys.pkcs11_module = kb_config_str(cfg, "pkcs11", "module");
        x->keys.pkcs11_token = kb_config_str(cfg, "pkcs11", "token");
        x->keys.pin = x->pin;
    }
    if (ca_config_store(cfg, &where, &passfile, msg, sizeof(msg)) != KB_OK) {
        fprintf(stderr, "keybridge-ca: %s\n", msg);
        ca_ctx_close(x);
        return KB_EXIT_CONFIG;
    }
    rc = ca_store_open_at(where, passfile, &x->st);
    if (rc != KB_OK) {
        /* never the URL itself: the log line before this one says what libpq refused */
        fprintf(stderr, "keybridge-ca: cannot open the database %s: %s\n",
                ca_store_is_pg_url(where) ? "[ca] store_url" : where, kb_err_str(rc));
        ca_ctx_close(x);
        return kb_exit_code(rc);
    }
    if (with_ca) {
        rc = ca_open(x->st, &x->keys, &x->ca);
        if (rc != KB_OK) {
            char why[1024];
            fprintf(stderr, "keybridge-ca: cannot open the CA: %s\n",
                    ca_ctx_explain(x, rc, why, sizeof(why)));
            ca_ctx_close(x);
            return kb_exit_code(rc);
        }
    }
    *out = x;
    return KB_EXIT_OK;
}

void ca_ctx_close(ca_ctx *x)
{
    if (x == NULL)
        return;
    ca_free(x->ca);
    ca_store_close(x->st);
    kb_secret_free(x->pin);
    ca_pca_free(x->pca);
    free(x);
}

ca_store *ca_ctx_store(ca_ctx *x)
{
    return x->st;
}

ca_authority *ca_ctx_ca(ca_ctx *x)
{
    return x->ca;
}

const ca_keys *ca_ctx_keys(ca_ctx *x)
{
    return &x->keys;
}

const kb_config *ca_ctx_config(ca_ctx *x)
{
    return x->cfg;
}

kb_err ca_ctx_new_generation(ca_ctx *x, const char *td, int intermediate, const char *state,
                             int64_t *gen, char **csr_pem)
{
    const char *kind = kb_config_str(x->cfg, "ca", "key");
    char ref[CA_REF_MAX], hex[17];
    uint8_t r[8];
    ca_new_gen_opts o;
    int n;

    /* A fresh name per generation: keys are never replaced, so a rotation can be rolled back
     * while the old key still exists. */
    KB_ENSURE(RAND_bytes(r, sizeof(r)) == 1, KB_ERR_CRYPTO);
    kb_hex(r, sizeof(r), hex);
    if (strcmp(kind, CA_KEY_ACM_PCA) == 0) {
        /* the key is AWS Private CA's: the generation names the CA */
        const char *arn = ca_pca_ca_arn(x->pca);
        if (arn == NULL) {
            fprintf(stderr, "keybridge-ca: [ca] key = acm-pca needs [acm_pca] ca_arn\n");
            return KB_ERR_CONFIG;
        }
        n = snprintf(ref, sizeof(ref), "%s", arn);
    } else if (strcmp(kind, "file") == 0) {
        const char *dir = kb_config_str(x->cfg, "ca", "key_dir");
        if (dir == NULL) {
            fprintf(stderr, "keybridge-ca: [ca] key = file needs [ca] key_dir\n");
            return KB_ERR_CONFIG;
        }
        n = snprintf(ref, sizeof(ref), "%s/ca-%s.key", dir, hex);
    } else {
        n = snprintf(ref, sizeof(ref), "%s-%s", kb_config_str(x->cfg, "pkcs11", "key_label"), hex);
    }
    KB_ENSURE(n > 0 && (size_t)n < sizeof(ref), KB_ERR_TOO_LARGE);
    memset(&o, 0, sizeof(o));
    o.td = td;
    o.key_kind = kind;
    o.key_ref = ref;
    o.ttl = kb_config_duration(x->cfg, "ca", "ca_ttl");
    o.intermediate = intermediate;
    o.state = state;
    return ca_new_generation(x->st, &x->keys, &o, gen, csr_pem);
}

int ca_cmd_load_policy(const kb_config *cfg, ca_policy **out)
{
    const char *path = kb_config_str(cfg, "policy", "file");
    char err[256];

    *out = NULL;
    if (path == NULL) {
        fprintf(stderr, "keybridge-ca: [policy] file is required: without a policy every "
                        "registration is refused\n");
        return KB_EXIT_CONFIG;
    }
    if (ca_policy_load(path, out, err, sizeof(err)) != KB_OK) {
        fprintf(stderr, "keybridge-ca: policy %s: %s\n", path, err);
        return KB_EXIT_CONFIG;
    }
    return KB_EXIT_OK;
}

void ca_cmd_target_env(const kb_config *cfg, ca_authority *ca, const char *td, ca_target_env *e)
{
    memset(e, 0, sizeof(*e));
    e->region = kb_config_str(cfg, "aws", "region");
    e->endpoint = kb_config_str(cfg, "aws", "endpoint");
    e->credentials_file = kb_config_str(cfg, "aws", "credentials_file");
    e->role_arn = kb_config_str(cfg, "aws", "role_arn");
    e->external_id = kb_config_str(cfg, "aws", "external_id");
    e->sts_endpoint = kb_config_str(cfg, "aws", "sts_endpoint");
    e->trust_domain = ca ? ca_trust_domain(ca) : td;
}
