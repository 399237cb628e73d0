/* cache_config.h - keybridge-cache's configuration: the key table (docs/configuration.md is
 * generated from it) and the checks of its values, in one place. */
#ifndef KB_CACHE_CONFIG_H
#define KB_CACHE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "lib/config.h"
#include "lib/err.h"

#define CACHE_ENV_PREFIX "KEYBRIDGE_CACHE"

extern const kb_config_key cache_config_keys[];

/* The values `keybridge-cache serve` runs with, checked (pointers into the configuration). */
typedef struct {
    const char *listen, *cert_file, *key_file; /* [server] */
    int threads;                               /* [server] threads: 0 = one per online CPU */
    const char *store_path, *store_key_file;   /* [store] path, key_file */
    const char *credentials_file;              /* [auth] */
    const char *region;                        /* [aws] */
} cache_config;

/* Read and check serve's settings: KB_ERR_CONFIG with why (the key and the rule) when a required
 * key is missing or a value is out of range. */
KB_WUR kb_err cache_config_load(const kb_config *cfg, cache_config *out, char *why, size_t len);

#endif
