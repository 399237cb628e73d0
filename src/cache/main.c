/* main.c - keybridge-cache, an AWS Secrets Manager-compatible cache (JSON 1.1 + SigV4): the
 * command table. The configuration keys and their checks are in cache_config.c. */
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "cache_config.h"
#include "creds.h"
#include "lib/httpd.h"
#include "lib/log.h"
#include "lib/prog.h"
#include "seal.h"
#include "server.h"
#include "store.h"

static int cmd_serve(const kb_config *cfg, int argc, char **argv)
{
    cache_config cc;
    kb_secret *key = NULL;
    cache_store *st = NULL;
    cache_creds *creds = NULL;
    cache_api *api = NULL;
    kb_httpd *h = NULL;
    kb_httpd_opts ho;
    cache_api_opts ao;
    kb_serve sv;
    size_t bad_line = 0;
    char port[16], nc[16], why[256];
    kb_err rc;
    int code = KB_EXIT_CONFIG;

    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "keybridge-cache serve: takes no arguments\n");
        return KB_EXIT_USAGE;
    }
    if (cache_config_load(cfg, &cc, why, sizeof(why)) != KB_OK) {
        fprintf(stderr, "keybridge-cache: %s\n", why);
        return KB_EXIT_CONFIG;
    }
    kb_prog_serve_prepare();
    rc = cache_key_load(cc.store_key_file, &key);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "key_file_refused", "path", cc.store_key_file, "err", kb_err_str(rc),
               NULL);
        fprintf(stderr, "keybridge-cache: [store] key_file: %s (must be 0600, 64 hex chars)\n",
                kb_err_str(rc));
        return kb_exit_code(rc);
    }
    rc = cache_creds_load(cc.credentials_file, &creds, &bad_line);
    if (rc != KB_OK) {
        snprintf(nc, sizeof(nc), "%zu", bad_line);
        kb_log(KB_LOG_ERROR, "credentials_file_refused", "path", cc.credentials_file, "err",
               kb_err_str(rc), "line", nc, NULL);
        fprintf(stderr, "keybridge-cache: [auth] credentials_file: %s%s%s\n", kb_err_str(rc),
                bad_line ? " at line " : "", bad_line ? nc : "");
        kb_secret_free(key);
        return KB_EXIT_CONFIG;
    }
    rc = cache_store_open(cc.store_path, key, &st); /* takes key */
    if (rc != KB_OK) {
        fprintf(stderr, "keybridge-cache: cannot open the store: %s\n", kb_err_str(rc));
        code = kb_exit_code(rc);
        goto out;
    }
    memset(&ao, 0, sizeof(ao));
    ao.region = cc.region;
    ao.store = st;
    ao.creds = creds;
    if ((rc = cache_api_new(&ao, &api)) != KB_OK) {
        code = kb_exit_code(rc);
        goto out;
    }
    memset(&ho, 0, sizeof(ho));
    ho.listen = cc.listen;
    ho.threads = cc.threads;
    ho.cert_file = cc.cert_file;
    ho.key_file = cc.key_file;
    ho.max_body_bytes = CACHE_BODY_MAX;
    ho.handler = cache_server_handler;
    ho.handler_arg = api;
    rc = kb_httpd_new(&ho, &h);
    if (rc != KB_OK) {
        fprintf(stderr,
                "keybridge-cache: cannot listen on %s: %s (plain HTTP is only allowed "
                "on loopback; set [server] cert_file and key_file)\n",
                ho.listen ? ho.listen : "?", kb_err_str(rc));
        code = kb_exit_code(rc);
        goto out;
    }
    snprintf(port, sizeof(port), "%d", kb_httpd_port(h));
    snprintf(nc, sizeof(nc), "%zu", cache_creds_count(creds));
    kb_log(KB_LOG_INFO, "listening", "listen", ho.listen, "port", port, "tls",
           ho.cert_file ? "true" : "false", "credentials", nc, "region", cc.region, NULL);
    memset(&sv, 0, sizeof(sv));
    sv.listeners[0] = h;
    rc = kb_prog_serve(&sv);
    kb_log(KB_LOG_INFO, "stopped", "err", kb_err_str(rc), NULL);
    code = rc == KB_OK ? KB_EXIT_OK : KB_EXIT_FAIL;
out:
    kb_httpd_free(h);
    cache_api_free(api);
    cache_store_close(st);
    cache_creds_free(creds);
    return code;
}

static int cmd_init_key(const kb_config *cfg, int argc, char **argv)
{
    const char *out = NULL;
    kb_err rc;
    (void)cfg;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridge-cache init-key --out FILE\n\n"
                   "Write a new random AES-256 key (hex) to FILE with mode 0600. Refuses to\n"
                   "overwrite an existing file: losing the key loses every stored value.\n");
            return KB_EXIT_OK;
        } else {
            fprintf(stderr, "keybridge-cache init-key: unexpected '%s' (see --help)\n", argv[i]);
            return KB_EXIT_USAGE;
        }
    }
    if (out == NULL) {
        fprintf(stderr, "keybridge-cache init-key: --out FILE is required\n");
        return KB_EXIT_USAGE;
    }
    rc = cache_key_generate(out);
    if (rc == KB_ERR_EXISTS) {
        fprintf(stderr, "keybridge-cache init-key: %s exists; refusing to overwrite it\n", out);
        return KB_EXIT_FAIL;
    }
    if (rc != KB_OK) {
        fprintf(stderr, "keybridge-cache init-key: cannot write %s: %s\n", out, kb_err_str(rc));
        return kb_exit_code(rc);
    }
    printf("wrote %s (0600)\n", out);
    return KB_EXIT_OK;
}

static const kb_subcmd cmds[] = {
    {"serve", cmd_serve, "serve the Secrets Manager API (default)"},
    {"init-key", cmd_init_key, "create the at-rest encryption key file (--out FILE)"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    static const kb_prog prog = {
        .name = "keybridge-cache",
        .summary = "AWS Secrets Manager-compatible cache (JSON 1.1 + SigV4)",
        .schema = cache_config_keys,
        .env_prefix = CACHE_ENV_PREFIX,
        .default_config = NULL,
        .cmds = cmds,
        .default_cmd = "serve",
        .holds_secrets = 1,
    };
    return kb_prog_main(argc, argv, &prog);
}
