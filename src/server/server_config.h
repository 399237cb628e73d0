/* server_config.h - keybridged's configuration schema (INI + KEYBRIDGED_* environment).
 * docs/configuration.md is generated from this table (`keybridged config-reference`). */
#ifndef KB_SERVER_CONFIG_H
#define KB_SERVER_CONFIG_H

#include "lib/config.h"

#define SERVER_ENV_PREFIX "KEYBRIDGED"

extern const kb_config_key server_config_keys[];

/* Split a comma-separated list (e.g. [clients] cloud_prefixes) into a NULL-terminated array of
 * trimmed, non-empty strings; free with server_config_list_free. At most 64 entries. */
KB_WUR kb_err server_config_list(const char *csv, char ***out);
void server_config_list_free(char **list);

#endif
