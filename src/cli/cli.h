/* cli.h - the `keybridge` admin CLI: shared state, transport, output.
 *
 * Commands build API calls (method, path, query, JSON body) and print the answer: a table for
 * people, or the JSON as-is with `-o json` for scripts. The transport is either in-process
 * (`--local KEYBRIDGED_CONF --as SPIFFE_ID`: the operator on the server host, through the very
 * same api_handle the server runs, so the same ACLs and audit apply) or HTTPS with mTLS to
 * keybridged, pinning the server's SPIFFE ID (transport_https.c).
 */
#ifndef KB_CLI_H
#define KB_CLI_H

#include <jansson.h>
#include <stdio.h>

#include "lib/config.h"
#include "lib/err.h"
#include "lib/failover.h"
#include "server/api.h"
#include "server/service.h"

#define CLI_ENV_PREFIX "KEYBRIDGE"

typedef struct cli {
    int json_output;          /* -o json */
    const char *local_config; /* --local FILE: keybridged's configuration */
    const char *as_id;        /* --as SPIFFE_ID (local mode identity) */
    kb_urllist servers;       /* --server URL, repeated: replaces [client] server_url */
    const kb_config *cfg;  /* the CLI's own configuration ([client] ...), owned by kb_prog_main */
    kb_config *server_cfg; /* local mode: keybridged's configuration */
    svc *svc;              /* local mode: opened on first call */
} cli;

typedef int (*cli_fn)(cli *c, int argc, char **argv);
typedef struct {
    const char *name;
    cli_fn fn;
    const char *help;
} cli_cmd;

extern const kb_config_key cli_config_keys[];

/* Perform one API call. resp is filled on KB_OK (any HTTP status); errors are transport
 * failures (cannot connect, server identity mismatch, ...), already reported on stderr. */
KB_WUR kb_err cli_call(cli *c, const char *method, const char *path, const char *query,
                       const json_t *body, api_response *resp);
/* The remote transport (transport_https.c). */
KB_WUR kb_err cli_transport_https(cli *c, const char *method, const char *path, const char *query,
                                  const char *body, size_t body_len, api_response *resp);
void cli_close(cli *c);

/* Print an error response ("keybridge: <message> (<code>, HTTP <status>)") and return the exit
 * code it maps to. */
int cli_fail(const api_response *r);
/* Exit code for a response: 0 for 2xx, else as cli_fail (which it calls). */
int cli_check(const api_response *r);

/* Percent-encode a path segment (names are restricted, but never trust that here). */
KB_WUR kb_err cli_path(char *out, size_t len, const char *fmt_prefix, const char *name,
                       const char *suffix);

/* Print rows of a JSON array of objects as an aligned table with the given columns. */
void cli_table(FILE *f, const json_t *rows, const char *const *cols);
/* Print a JSON value (for -o json). */
void cli_print_json(FILE *f, const json_t *v);

/* Subcommand dispatch: run the entry of table matching argv[0], or print help. */
int cli_dispatch(cli *c, const char *group, const cli_cmd *table, int argc, char **argv);

/* Command groups. */
int cli_cmd_secret(cli *c, int argc, char **argv);
int cli_cmd_read(cli *c, int argc, char **argv);
int cli_cmd_list(cli *c, int argc, char **argv);
int cli_cmd_admin(cli *c, int argc, char **argv);
int cli_cmd_console(cli *c, int argc, char **argv);

#endif
