/* main.c - keybridge-ca, the SPIFFE CA that issues X509-SVIDs ahead of time.
 *
 * Subcommands (wireguard-tools style table); docs/keybridge-ca.md is the user's guide. The
 * configuration keys and the checks of their values are in ca_config.c.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "ca.h"
#include "ca_cmd.h"
#include "ca_config.h"
#include "ca_csr.h"
#include "ca_store.h"
#include "lib/buf.h"
#include "lib/fileio.h"
#include "lib/log.h"
#include "lib/prog.h"

static void usage_err(const char *cmd, const char *msg)
{
    fprintf(stderr, "keybridge-ca %s: %s (see keybridge-ca %s --help)\n", cmd, msg, cmd);
}

static int need_arg(int i, int argc, const char *cmd, const char *opt)
{
    if (i + 1 >= argc) {
        fprintf(stderr, "keybridge-ca %s: %s needs a value\n", cmd, opt);
        return 0;
    }
    return 1;
}

/* ---- init ---------------------------------------------------------------------------------- */

static int cmd_init(const kb_config *cfg, int argc, char **argv)
{
    const char *td = kb_config_str(cfg, "ca", "trust_domain");
    const char *csr_out = NULL, *why = NULL;
    char have[SPIFFE_TD_MAX + 1];
    int intermediate = 0;
    ca_ctx *x = NULL;
    char *csr = NULL;
    int64_t gen = 0;
    kb_err rc;
    int code;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--trust-domain") == 0 && need_arg(i, argc, "init", argv[i])) {
            td = argv[++i];
        } else if (strcmp(argv[i], "--intermediate") == 0) {
            intermediate = 1;
        } else if (strcmp(argv[i], "--csr-out") == 0 && need_arg(i, argc, "init", argv[i])) {
            csr_out = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0) {
            printf(
                "usage: keybridge-ca init [--trust-domain TD] [--intermediate --csr-out FILE]\n\n"
                "Create the trust domain's CA: a key inside the PKCS#11 token ([ca] key =\n"
                "pkcs11) or a 0600 dev key file ([ca] key = file), then a self-signed root,\n"
                "or with --intermediate a CSR for an upstream CA (import the signed chain\n"
                "with 'keybridge-ca import').\n");
            return KB_EXIT_OK;
        } else {
            usage_err("init", "unexpected argument");
            return KB_EXIT_USAGE;
        }
    }
    if (td == NULL) {
        usage_err("init", "--trust-domain (or [ca] trust_domain) is required");
        return KB_EXIT_USAGE;
    }
    if (intermediate && strcmp(kb_config_str(cfg, "ca", "key"), CA_KEY_ACM_PCA) == 0) {
        usage_err("init", "--intermediate does not apply to [ca] key = acm-pca (AWS Private CA "
                          "holds the CA key; its certificate and chain are read from AWS)");
        return KB_EXIT_USAGE;
    }
    if (intermediate && csr_out == NULL) {
        usage_err("init", "--intermediate needs --csr-out FILE");
        return KB_EXIT_USAGE;
    }
    if (spiffe_td_validate(td, strlen(td), &why) != KB_OK) {
        fprintf(stderr, "keybridge-ca init: invalid trust domain: %s\n", why);
        return KB_EXIT_USAGE;
    }
    if ((code = ca_ctx_open(cfg, 0, &x)) != KB_EXIT_OK)
        return code;
    if (ca_store_trust_domain(ca_ctx_store(x), have, sizeof(have)) == KB_OK &&
        strcmp(have, td) != 0) {
        fprintf(stderr,
                "keybridge-ca init: this database already belongs to trust domain %s "
                "(one CA database per trust domain)\n",
                have);
        ca_ctx_close(x);
        return KB_EXIT_FAIL;
    }
    rc = ca_ctx_new_generation(x, td, intermediate, CA_STATE_ACTIVE, &gen, &csr);
    if (rc != KB_OK) {
        char buf[1024];
        const char *w = strcmp(kb_config_str(cfg, "ca", "key"), "file") == 0
                            ? "cannot create the CA key file in [ca] key_dir (it must exist, "
                              "owned by this user)"
                            : ca_ctx_explain(x, rc, buf, sizeof(buf));
        fprintf(stderr, "keybridge-ca init: failed: %s: %s\n", kb_err_str(rc), w);
        code = kb_exit_code(rc);
    } else if (csr != NULL &&
               (rc = kb_file_write_atomic(csr_out, csr, strlen(csr), 0644)) != KB_OK) {
        fprintf(stderr, "keybridge-ca init: cannot write the CSR to %s: %s\n", csr_out,
                kb_err_str(rc));
        code = kb_exit_code(rc);
    } else if (intermediate) {
        printf("generation %lld pending: CSR written to %s; import the signed chain with\n"
               "  keybridge-ca import --generation %lld --chain CHAIN.pem --roots ROOTS.pem\n",
               (long long)gen, csr_out, (long long)gen);
    } else {
        printf("trust domain %s: root CA generation %lld active\n", td, (long long)gen);
    }
    free(csr);
    ca_ctx_close(x);
    return code;
}

static int cmd_import(const kb_config *cfg, int argc, char **argv)
{
    const char *chain = NULL, *roots = NULL, *why = NULL;
    int64_t gen = 0;
    int activate = 1, code;
    kb_dbuf cb, rb;
    ca_ctx *x = NULL;
    kb_err rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--generation") == 0 && need_arg(i, argc, "import", argv[i])) {
            if (kb_parse_int64(argv[++i], &gen) != KB_OK) {
                usage_err("import", "--generation takes a number");
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--chain") == 0 && need_arg(i, argc, "import", argv[i])) {
            chain = argv[++i];
        } else if (strcmp(argv[i], "--roots") == 0 && need_arg(i, argc, "import", argv[i])) {
            roots = argv[++i];
        } else if (strcmp(argv[i], "--prepare-only") == 0) {
            activate = 0;
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridge-ca import --generation N --chain CHAIN.pem --roots ROOTS.pem"
                   " [--prepare-only]\n\nImport the upstream-signed certificate (first in "
                   "CHAIN.pem, then upstream\nintermediates) of a pending intermediate "
                   "generation, and activate it.\n");
            return KB_EXIT_OK;
        } else {
            usage_err("import", "unexpected argument");
            return KB_EXIT_USAGE;
        }
    }
    if (gen <= 0 || chain == NULL || roots == NULL) {
        usage_err("import", "--generation, --chain and --roots are required");
        return KB_EXIT_USAGE;
    }
    kb_dbuf_init(&cb, 1024 * 1024);
    kb_dbuf_init(&rb, 1024 * 1024);
    if (kb_file_read(chain, cb.max, &cb) != KB_OK || kb_file_read(roots, rb.max, &rb) != KB_OK) {
        fprintf(stderr, "keybridge-ca import: cannot read the chain or roots file\n");
        kb_dbuf_free(&cb);
        kb_dbuf_free(&rb);
        return KB_EXIT_FAIL;
    }
    if ((code = ca_ctx_open(cfg, 0, &x)) == KB_EXIT_OK) {
        rc =
            ca_import_chain(ca_ctx_store(x), ca_ctx_keys(x), gen, kb_dbuf_str(&cb),
                            kb_dbuf_str(&rb), activate ? CA_STATE_ACTIVE : CA_STATE_PREPARED, &why);
        if (rc != KB_OK) {
            fprintf(stderr, "keybridge-ca import: refused: %s\n", why ? why : kb_err_str(rc));
            code = kb_exit_code(rc);
        } else {
            printf("generation %lld %s\n", (long long)gen, activate ? "active" : "prepared");
        }
    }
    ca_ctx_close(x);
    kb_dbuf_free(&cb);
    kb_dbuf_free(&rb);
    return code;
}

static int cmd_rotate(const kb_config *cfg, int argc, char **argv)
{
    char td[SPIFFE_TD_MAX + 1];
    int64_t gen = 0;
    ca_ctx *x = NULL;
    kb_err rc;
    int code;

    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        printf("usage: keybridge-ca rotate prepare | rotate activate --generation N\n\n"
               "prepare: a next root CA, published in the bundle beside the active one.\n"
               "activate: the prepared CA signs from now on; the old one stays in the bundle\n"
               "until it expires, so SVIDs it signed stay valid (they never outlive it).\n");
        return argc < 2 ? KB_EXIT_USAGE : KB_EXIT_OK;
    }
    if (strcmp(argv[1], "activate") == 0) {
        if (argc != 4 || strcmp(argv[2], "--generation") != 0 ||
            kb_parse_int64(argv[3], &gen) != KB_OK) {
            usage_err("rotate", "activate needs --generation N");
            return KB_EXIT_USAGE;
        }
    } else if (strcmp(argv[1], "prepare") != 0 || argc != 2) {
        usage_err("rotate", "expected prepare or activate");
        return KB_EXIT_USAGE;
    }
    if ((code = ca_ctx_open(cfg, 0, &x)) != KB_EXIT_OK)
        return code;
    rc = ca_store_trust_domain(ca_ctx_store(x), td, sizeof(td));
    if (rc == KB_OK && strcmp(argv[1], "prepare") == 0) {
        rc = ca_ctx_new_generation(x, td, 0, CA_STATE_PREPARED, &gen, NULL);
        if (rc == KB_OK)
            printf("generation %lld prepared (in the bundle; activate it after the bundle has "
                   "reached every relying party)\n",
                   (long long)gen);
    } else if (rc == KB_OK) {
        rc = ca_activate(ca_ctx_store(x), gen);
        if (rc == KB_OK)
            printf("generation %lld active\n", (long long)gen);
    }
    if (rc != KB_OK) {
        fprintf(stderr, "keybridge-ca rotate: failed: %s\n", kb_err_str(rc));
        code = kb_exit_code(rc);
    }
    ca_ctx_close(x);
    return code;
}

/* ---- issue --------------------------------------------------------------------------------- */

static kb_err write_out(const char *dir, const char *name, const void *p, size_t n, mode_t mode)
{
    char path[4096];
    int k = snprintf(path, sizeof(path), "%s/%s", dir, name);

    KB_ENSURE(k > 0 && (size_t)k < sizeof(path), KB_ERR_TOO_LARGE);
    return kb_file_write_atomic(path, p, n, mode);
}

static int cmd_issue(const kb_config *cfg, int argc, char **argv)
{
    const char *id_s = NULL, *out = NULL, *csr_path = NULL, *why = NULL;
    int64_t ttl = kb_config_duration(cfg, "ca", "default_ttl");
    ca_policy *pol = NULL;
    char err[512];
    ca_sans sans;
    EVP_PKEY *pub = NULL;
    spiffe_id id;
    ca_svid sv;
    ca_ctx *x = NULL;
    kb_dbuf csr;
    kb_err rc = KB_OK;
    int code;

    memset(&sv, 0, sizeof(sv));
    memset(&sans, 0, sizeof(sans));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--spiffe-id") == 0 && need_arg(i, argc, "issue", argv[i])) {
            id_s = argv[++i];
        } else if (strcmp(argv[i], "--ttl") == 0 && need_arg(i, argc, "issue", argv[i])) {
            if (kb_parse_duration(argv[++i], &ttl) != KB_OK) {
                usage_err("issue", "--ttl takes a duration like 30m, 1h, 2d");
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--out") == 0 && need_arg(i, argc, "issue", argv[i])) {
            out = argv[++i];
        } else if (strcmp(argv[i], "--csr") == 0 && need_arg(i, argc, "issue", argv[i])) {
            csr_path = argv[++i];
        } else if ((strcmp(argv[i], "--dns") == 0 || strcmp(argv[i], "--ip") == 0) &&
                   need_arg(i, argc, "issue", argv[i])) {
            const char *opt = argv[i++];
            if ((opt[2] == 'd' ? ca_sans_add_dns(&sans, argv[i], &why)
                               : ca_sans_add_ip(&sans, argv[i], &why)) != KB_OK) {
                fprintf(stderr, "keybridge-ca issue: %s %s: %s\n", opt, argv[i], why);
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridge-ca issue --spiffe-id ID [--ttl 1h] --out DIR [--csr FILE]\n"
                   "       [--dns NAME]... [--ip ADDR]...\n\n"
                   "Write DIR/svid.pem (leaf first, then intermediates), DIR/svid.key (PKCS#8,\n"
                   "0600; not written with --csr, whose key stays with its owner) and\n"
                   "DIR/bundle.pem. --dns and --ip add DNS and IP SANs beside the URI SAN (for\n"
                   "server SVIDs whose clients check a host name), each allowed by the policy\n"
                   "file's server_names for this SPIFFE ID.\n");
            return KB_EXIT_OK;
        } else {
            usage_err("issue", "unexpected argument");
            return KB_EXIT_USAGE;
        }
    }
    if (id_s == NULL || out == NULL) {
        usage_err("issue", "--spiffe-id and --out are required");
        return KB_EXIT_USAGE;
    }
    if (spiffe_id_parse_str(id_s, &id, &why) != KB_OK) {
        fprintf(stderr, "keybridge-ca issue: invalid SPIFFE ID: %s\n", why);
        return KB_EXIT_USAGE;
    }
    if (spiffe_id_is_root(&id)) {
        fprintf(stderr, "keybridge-ca issue: invalid SPIFFE ID: a workload ID needs a path "
                        "(the trust domain's root ID is not a workload)\n");
        return KB_EXIT_USAGE;
    }
    if (ttl < 60 || ttl > 30 * 86400) {
        fprintf(stderr, "keybridge-ca issue: --ttl must be between 1m and 30d\n");
        return KB_EXIT_USAGE;
    }
    if (sans.n > 0) {
        /* DNS/IP names only where the policy's server_names allows them for this ID */
        if ((code = ca_cmd_load_policy(cfg, &pol)) != KB_EXIT_OK)
            return code;
        if (ca_policy_check_sans(pol, &id, &sans, err, sizeof(err)) != KB_OK) {
            fprintf(stderr, "keybridge-ca issue: refused by policy: %s\n", err);
            ca_policy_free(pol);
            return KB_EXIT_DENIED;
        }
        ca_policy_free(pol);
    }
    kb_dbuf_init(&csr, CA_CSR_MAX + 1);
    if (csr_path != NULL) {
        if (kb_file_read(csr_path, CA_CSR_MAX, &csr) != KB_OK) {
            fprintf(stderr,
                    "keybridge-ca issue: cannot read the CSR (missing or over %zu "
                    "bytes)\n",
                    CA_CSR_MAX);
            kb_dbuf_free(&csr);
            return KB_EXIT_FAIL;
        }
        rc = ca_csr_parse(csr.p, csr.len, &id, &pub, &why);
        kb_dbuf_free(&csr);
        if (rc != KB_OK) {
            fprintf(stderr, "keybridge-ca issue: CSR refused: %s\n", why);
            return kb_exit_code(rc) == KB_EXIT_FAIL ? KB_EXIT_USAGE : kb_exit_code(rc);
        }
    }
    if ((code = ca_ctx_open(cfg, 1, &x)) != KB_EXIT_OK) {
        EVP_PKEY_free(pub);
        return code;
    }
    if (!spiffe_id_member_of(&id, ca_trust_domain(ca_ctx_ca(x)))) {
        fprintf(stderr, "keybridge-ca issue: %s is not in this CA's trust domain %s\n", id_s,
                ca_trust_domain(ca_ctx_ca(x)));
        code = KB_EXIT_DENIED;
        goto out;
    }
    if (mkdir(out, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "keybridge-ca issue: cannot create %s\n", out);
        code = KB_EXIT_FAIL;
        goto out;
    }
    rc = ca_issue_sans_why(ca_ctx_ca(x), &id, &sans, ttl, pub, out, "issue", &sv, &why);
    if (rc != KB_OK && why != NULL) {
        fprintf(stderr, "keybridge-ca issue: failed: %s\n", why);
        code = kb_exit_code(rc);
        rc = KB_OK; /* reported */
        goto out;
    }
    KB_GUARD_OUT(rc, rc);
    if (sv.key_pem != NULL)
        KB_GUARD_OUT(rc, write_out(out, "svid.key", ca_keypem_data(sv.key_pem),
                                   ca_keypem_len(sv.key_pem), 0600));
    KB_GUARD_OUT(rc, write_out(out, "svid.pem", sv.chain_pem, strlen(sv.chain_pem), 0644));
    KB_GUARD_OUT(rc, write_out(out, "bundle.pem", sv.bundle_pem, strlen(sv.bundle_pem), 0644));
    printf("issued %s serial %s valid until %lld\n", id_s, sv.serial, (long long)sv.not_after);
out:
    if (rc != KB_OK) {
        fprintf(stderr, "keybridge-ca issue: failed: %s\n", kb_err_str(rc));
        code = kb_exit_code(rc);
    }
    ca_svid_clear(&sv);
    EVP_PKEY_free(pub);
    ca_ctx_close(x);
    return code;
}

/* ---- bundle, audit ------------------------------------------------------------------------- */

static int cmd_bundle(const kb_config *cfg, int argc, char **argv)
{
    int jwks = 0, code;
    ca_ctx *x = NULL;
    kb_dbuf b;
    kb_err rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--format") == 0 && i + 1 < argc) {
            jwks = strcmp(argv[++i], "jwks") == 0;
            if (!jwks && strcmp(argv[i], "pem") != 0) {
                usage_err("bundle", "--format is pem or jwks");
                return KB_EXIT_USAGE;
            }
        } else {
            printf("usage: keybridge-ca bundle [--format pem|jwks]\n");
            return strcmp(argv[i], "--help") == 0 ? KB_EXIT_OK : KB_EXIT_USAGE;
        }
    }
    if ((code = ca_ctx_open(cfg, 1, &x)) != KB_EXIT_OK)
        return code;
    kb_dbuf_init(&b, 4 * 1024 * 1024);
    rc = jwks ? ca_bundle_jwks(ca_ctx_ca(x), &b) : ca_bundle_pem(ca_ctx_ca(x), &b);
    if (rc == KB_OK)
        fwrite(b.p, 1, b.len, stdout);
    if (rc == KB_OK && jwks)
        putchar('\n');
    kb_dbuf_free(&b);
    ca_ctx_close(x);
    return kb_exit_code(rc);
}

static void audit_print(void *arg, const char *serial, const char *id, const char *target,
                        const char *reason, int64_t gen, int64_t not_after, int64_t at)
{
    (void)arg;
    printf("%lld\t%s\t%s\t%s\t%s\tgen=%lld\tnot_after=%lld\n", (long long)at, serial, id, target,
           reason, (long long)gen, (long long)not_after);
}

static int cmd_audit(const kb_config *cfg, int argc, char **argv)
{
    ca_ctx *x = NULL;
    int code;
    kb_err rc;

    (void)argv;
    if (argc > 1) {
        printf("usage: keybridge-ca audit\n\nPrint every issuance: time, serial, ID, target, "
               "reason, CA generation, notAfter.\n");
        return KB_EXIT_USAGE;
    }
    if ((code = ca_ctx_open(cfg, 0, &x)) != KB_EXIT_OK)
        return code;
    rc = ca_store_audit_each(ca_ctx_store(x), audit_print, NULL);
    ca_ctx_close(x);
    return kb_exit_code(rc);
}

static const kb_subcmd cmds[] = {
    {"init", cmd_init, "create the trust domain's CA (root, or intermediate CSR)"},
    {"import", cmd_import, "import the signed chain of an intermediate CA"},
    {"issue", cmd_issue, "issue one SVID into a directory"},
    {"register", ca_cmd_register, "register an SVID kept fresh in a target"},
    {"list", ca_cmd_list, "list registrations"},
    {"remove", ca_cmd_remove, "remove a registration and delete its stored SVID"},
    {"serve", ca_cmd_serve, "renewal daemon + mTLS API (renew, bundle)"},
    {"renew-once", ca_cmd_renew_once, "one pass of the renewal loop, then exit"},
    {"rotate", cmd_rotate, "prepare or activate the next CA"},
    {"bundle", cmd_bundle, "print the trust bundle (PEM or SPIFFE JWKS)"},
    {"audit", cmd_audit, "print the issuance audit"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    static const kb_prog prog = {
        .name = "keybridge-ca",
        .summary = "SPIFFE CA: issues X509-SVIDs ahead of time and keeps them fresh",
        .schema = ca_config_keys,
        .env_prefix = CA_ENV_PREFIX,
        .default_config = NULL,
        .cmds = cmds,
        .default_cmd = NULL,
        .holds_secrets = 1,
    };
    return kb_prog_main(argc, argv, &prog);
}
