/* cmd_console.c - `keybridge console login`: ask keybridged (over mTLS, as this CLI's identity)
 * for a one-time console login URL and print it (docs/console.md). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "lib/prog.h"

static int console_login_cmd(cli *c, int argc, char **argv)
{
    api_response r;
    const json_t *url;
    int rc;
    kb_err e;
    if (argc > 1) {
        fprintf(stderr, "usage: keybridge console login\n");
        return KB_EXIT_USAGE;
    }
    (void)argv;
    if (c->local_config != NULL) {
        fprintf(stderr, "keybridge: console login needs the running keybridged (not --local): "
                        "the login URL is valid only in its memory\n");
        return KB_EXIT_USAGE;
    }
    memset(&r, 0, sizeof(r));
    e = cli_call(c, "POST", "/v1/console/login", "", NULL, &r);
    if (e != KB_OK)
        return kb_exit_code(e);
    rc = cli_check(&r);
    if (rc == KB_EXIT_OK) {
        url = json_object_get(r.body, "url");
        if (c->json_output || !json_is_string(url)) {
            cli_print_json(stdout, r.body ? r.body : json_null());
        } else {
            printf("%s\n", json_string_value(url));
            fprintf(stderr,
                    "Open this URL in a browser within %lld seconds; it works once and logs in "
                    "as %s.\n",
                    (long long)(json_integer_value(json_object_get(r.body, "expires_at")) -
                                (long long)time(NULL)),
                    json_string_value(json_object_get(r.body, "identity")));
        }
    }
    api_response_clear(&r);
    return rc;
}

int cli_cmd_console(cli *c, int argc, char **argv)
{
    static const cli_cmd table[] = {
        {"login", console_login_cmd, "print a one-time URL that logs a browser in as you"},
        {NULL, NULL, NULL},
    };
    return cli_dispatch(c, "console", table, argc - 1, argv + 1);
}
