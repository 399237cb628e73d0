/* ca_config.h - keybridge-ca's configuration: the key table (docs/configuration.md is generated
 * from it) and the checks of its values, in one place. The checks fill a struct of the values a
 * command runs with and, on a bad value, return KB_ERR_CONFIG with why naming the key and the
 * rule (the caller prints it after its own "keybridge-ca <cmd>: " prefix). */
#ifndef KB_CA_CONFIG_H
#define KB_CA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "ca_pca.h"
#include "ca_sans.h"
#include "lib/config.h"
#include "lib/err.h"

#define CA_ENV_PREFIX "KEYBRIDGE_CA"

extern const kb_config_key ca_config_keys[];

/* [ca] key: CA_KEY_PKCS11, CA_KEY_FILE or CA_KEY_ACM_PCA. */
KB_WUR kb_err ca_config_key_kind(const kb_config *cfg, const char **kind, char *why, size_t len);

/* [acm_pca] (region defaulting to [aws] region; credentials and STS endpoint from [aws]) as the
 * options of ca_pca_new; timeout and deadline at least 1s, issue_rate at least 1. */
KB_WUR kb_err ca_config_pca(const kb_config *cfg, ca_pca_opts *po, char *why, size_t len);

/* What `keybridge-ca serve` runs with. */
typedef struct {
    const char *svid_dir;      /* [server] svid_dir (required) */
    const char *own_id;        /* [server] spiffe_id, or NULL: spiffe://TD/keybridge-ca */
    const char *listen;        /* [server] listen */
    const char *bundle_listen; /* [server] bundle_listen, or NULL: not served */
    int threads;               /* [server] threads, 1..KB_HTTPD_MAX_THREADS */
    int64_t svid_ttl;          /* [server] svid_ttl, CA_MIN/MAX_SERVER_SVID_TTL */
    int64_t tick;              /* [renew] tick, >= 1 s */
    int64_t lease;             /* [renew] lease, >= 1 s */
    int64_t api_min_interval;  /* [renew] api_min_interval */
    ca_sans sans;              /* [server] svid_dns and svid_ip, parsed and checked */
} ca_serve_config;

KB_WUR kb_err ca_config_serve(const kb_config *cfg, ca_serve_config *out, char *why, size_t len);

/* Where the store is: [ca] store_url (a postgresql:// URL, with [ca] store_passfile) or [ca] db
 * (an SQLite file; a passfile beside it is refused). *where is what ca_store_open_at takes. */
KB_WUR kb_err ca_config_store(const kb_config *cfg, const char **where, const char **passfile,
                              char *why, size_t len);

#endif
