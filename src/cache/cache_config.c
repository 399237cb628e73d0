/* cache_config.c - keybridge-cache's configuration keys and the checks of their values, in one
 * place (docs/configuration.md is generated from the table). */
#include "cache_config.h"

#include <stdio.h>
#include <string.h>

#include "lib/httpd.h"

const kb_config_key cache_config_keys[] = {
    {"server", "listen", KB_CFG_STRING, "127.0.0.1:4566",
     "address:port to listen on; plain HTTP only on loopback, anything else needs cert_file"},
    {"server", "cert_file", KB_CFG_PATH, NULL, "TLS certificate chain (PEM); unset = plain HTTP"},
    {"server", "key_file", KB_CFG_PATH, NULL, "TLS private key (PEM, 0600)"},
    {"server", "threads", KB_CFG_INT, "0", "event loops; 0 = one per online CPU"},
    {"store", "path", KB_CFG_PATH, "keybridge-cache.db", "SQLite database file"},
    {"store", "key_file", KB_CFG_SECRET_FILE, NULL,
     "0600 key file for at-rest encryption (keybridge-cache init-key --out FILE)"},
    {"auth", "credentials_file", KB_CFG_SECRET_FILE, NULL,
     "0600 file: one 'ACCESS_KEY_ID SECRET_ACCESS_KEY ACCOUNT_ID' per line"},
    {"aws", "region", KB_CFG_STRING, "us-east-1", "region served (ARNs, credential scope)"},
    {"log", "level", KB_CFG_STRING, "info", "debug, info, warn or error"},
    {NULL, NULL, 0, NULL, NULL},
};

kb_err cache_config_load(const kb_config *cfg, cache_config *out, char *why, size_t len)
{
    int64_t threads = kb_config_int(cfg, "server", "threads");

    memset(out, 0, sizeof(*out));
    out->listen = kb_config_str(cfg, "server", "listen");
    out->cert_file = kb_config_str(cfg, "server", "cert_file");
    out->key_file = kb_config_str(cfg, "server", "key_file");
    out->store_path = kb_config_str(cfg, "store", "path");
    out->store_key_file = kb_config_str(cfg, "store", "key_file");
    out->credentials_file = kb_config_str(cfg, "auth", "credentials_file");
    out->region = kb_config_str(cfg, "aws", "region");
    if (out->store_key_file == NULL || out->credentials_file == NULL || out->store_path == NULL) {
        snprintf(why, len,
                 "[store] key_file, [store] path and [auth] credentials_file are "
                 "required");
        return KB_ERR_CONFIG;
    }
    if (threads < 0 || threads > KB_HTTPD_MAX_THREADS) {
        snprintf(why, len, "[server] threads must be 0 to %d", KB_HTTPD_MAX_THREADS);
        return KB_ERR_CONFIG;
    }
    out->threads = (int)threads;
    return KB_OK;
}
