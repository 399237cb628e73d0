/* fuzz_config.c - configuration files (src/lib/config.c over libinih) and the server's list
 * values (server_config_list). The first byte picks the schema: keybridged's real one
 * (server_config_keys) or a small one with a key of every type; the rest is written to a file
 * that kb_config_load reads, as the programs do.
 *
 * Properties checked (abort on failure): a load either succeeds or fails with a non-empty error
 * message; after a successful load every INT, BOOL and DURATION value (from the file or a
 * default) parses with the shared parser, every origin is one of the four documented ones, and
 * kb_config_print writes JSON that parses; a [clients] cloud_prefixes value splits into at most
 * 64 trimmed, non-empty entries. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/config.h"
#include "lib/json.h"
#include "server/server_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const kb_config_key every_type_keys[] = {
    {"a", "s", KB_CFG_STRING, "x", "string"},
    {"a", "p", KB_CFG_PATH, NULL, "path"},
    {"a", "i", KB_CFG_INT, "0", "int"},
    {"b", "flag", KB_CFG_BOOL, "false", "bool"},
    {"b", "every", KB_CFG_DURATION, "5m", "duration"},
    {"b", "pin_file", KB_CFG_SECRET_FILE, NULL, "secret file"},
    {NULL, NULL, KB_CFG_STRING, NULL, NULL},
};

static char fz_path[64];
static int fz_fd = -1;

static void fz_cleanup(void)
{
    unlink(fz_path);
}

static void fz_init(void)
{
    snprintf(fz_path, sizeof(fz_path), "/tmp/kb-fuzz-config-XXXXXX");
    fz_fd = mkstemp(fz_path);
    if (fz_fd < 0)
        abort();
    atexit(fz_cleanup);
    kb_json_init();
}

static void fz_check_loaded(const kb_config_key *keys, const kb_config *c)
{
    char *out = NULL;
    size_t outlen = 0;
    FILE *f;
    json_t *j = NULL;

    for (size_t i = 0; keys[i].name != NULL; i++) {
        const char *v = kb_config_str(c, keys[i].section, keys[i].name);
        const char *o = kb_config_origin(c, keys[i].section, keys[i].name);
        int64_t n;
        int b;
        if (strcmp(o, "default") != 0 && strcmp(o, "file") != 0 && strcmp(o, "env") != 0 &&
            strcmp(o, "unset") != 0)
            abort();
        if (v == NULL)
            continue;
        if ((keys[i].type == KB_CFG_INT && kb_parse_int64(v, &n) != KB_OK) ||
            (keys[i].type == KB_CFG_BOOL && kb_parse_bool(v, &b) != KB_OK) ||
            (keys[i].type == KB_CFG_DURATION && kb_parse_duration(v, &n) != KB_OK))
            abort(); /* a value of the wrong type got through */
        if (strcmp(keys[i].name, "cloud_prefixes") == 0) {
            char **list = NULL;
            if (server_config_list(v, &list) == KB_OK) {
                size_t k = 0;
                for (; list[k] != NULL; k++)
                    if (list[k][0] == '\0' || list[k][0] == ' ' ||
                        list[k][strlen(list[k]) - 1] == ' ')
                        abort();
                if (k > 64)
                    abort();
                server_config_list_free(list);
            }
        }
    }
    f = open_memstream(&out, &outlen);
    if (f == NULL)
        abort();
    kb_config_print(c, f);
    fclose(f);
    if (kb_json_parse((const uint8_t *)out, outlen, (size_t)1 << 24, &j, NULL, 0) != KB_OK)
        abort(); /* --check-config output must be JSON whatever the values hold */
    json_decref(j);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const kb_config_key *keys;
    kb_config *c = NULL;
    char err[512];

    if (fz_fd < 0)
        fz_init();
    if (size < 1)
        return 0;
    keys = (data[0] & 1) ? every_type_keys : server_config_keys;
    if (ftruncate(fz_fd, 0) != 0 ||
        (size > 1 && pwrite(fz_fd, data + 1, size - 1, 0) != (ssize_t)(size - 1)))
        abort();
    err[0] = '\0';
    if (kb_config_load(keys, fz_path, "KBFUZZ", &c, err, sizeof(err)) != KB_OK) {
        if (c != NULL || err[0] == '\0')
            abort();
        return 0;
    }
    fz_check_loaded(keys, c);
    kb_config_free(c);
    return 0;
}
