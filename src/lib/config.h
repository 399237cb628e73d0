/* config.h - INI configuration (libinih) with environment overrides.
 *
 * Each program declares its keys in a table of kb_config_key. Loading:
 *   1. defaults from the table;
 *   2. the INI file, if given (unknown sections or keys are an error, naming file:line);
 *   3. environment variables PREFIX_SECTION_KEY (upper case, e.g. KEYBRIDGED_STORE_PATH), for
 *      every key.
 * Secret values (PINs, keys) never appear in the file or the environment: the schema only has
 * `*_file` keys of type KB_CFG_SECRET_FILE holding a path; kb_config_secret() reads the file into
 * locked memory and refuses one that is group- or world-accessible.
 */
#ifndef KB_CONFIG_H
#define KB_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "secbuf.h"

typedef enum {
    KB_CFG_STRING,
    KB_CFG_PATH,
    KB_CFG_INT,      /* signed 64-bit decimal */
    KB_CFG_BOOL,     /* true/false/yes/no/on/off/1/0 */
    KB_CFG_DURATION, /* 30s, 15m, 1h, 7d or plain seconds; stored as seconds */
    KB_CFG_SECRET_FILE,
} kb_config_type;

typedef struct {
    const char *section;
    const char *name;
    kb_config_type type;
    const char *def; /* default as text, or NULL for "unset" */
    const char *help;
} kb_config_key;

typedef struct kb_config kb_config;

/* keys ends with an entry whose name is NULL. path may be NULL (defaults + environment only).
 * On error, err gets a message naming the file, line and key (never a value). */
KB_WUR kb_err kb_config_load(const kb_config_key *keys, const char *path, const char *env_prefix,
                             kb_config **out, char *err, size_t err_len);
void kb_config_free(kb_config *c);

/* Accessors; section/name must be in the schema (a typo is an internal error: abort). */
const char *kb_config_str(const kb_config *c, const char *section, const char *name);
int64_t kb_config_int(const kb_config *c, const char *section, const char *name);
int kb_config_bool(const kb_config *c, const char *section, const char *name);
int64_t kb_config_duration(const kb_config *c, const char *section, const char *name);
KB_WUR kb_err kb_config_secret(const kb_config *c, const char *section, const char *name,
                               size_t max, kb_secret **out);

/* Where a value came from: "default", "file", "env" or "unset". */
const char *kb_config_origin(const kb_config *c, const char *section, const char *name);

/* Print the effective configuration as JSON (for --check-config); secret files are shown as
 * their path only. */
void kb_config_print(const kb_config *c, FILE *f);
/* Print the schema as a Markdown table (docs/configuration.md is generated from this). */
void kb_config_print_reference(const kb_config_key *keys, const char *env_prefix, FILE *f);

/* Parsers shared with the CLI. */
KB_WUR kb_err kb_parse_int64(const char *s, int64_t *out);
KB_WUR kb_err kb_parse_bool(const char *s, int *out);
KB_WUR kb_err kb_parse_duration(const char *s, int64_t *seconds);

#endif
