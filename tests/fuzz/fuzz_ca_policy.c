/* fuzz_ca_policy.c - keybridge-ca's policy file parser: no crash, no leak, every rejection has
 * a message, and an accepted policy answers checks (targets, and DNS/IP SANs against
 * server_names) without crashing. The same bytes also go through ca_sans_parse (the stored
 * SAN list): every refusal says why, and what it accepts formats back to a list that parses
 * to the same names. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca_policy.h"
#include "lib/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    ca_policy *p = NULL;
    char err[256] = "";
    const char *why = NULL;
    ca_target_spec t;
    spiffe_id id;

    if (!init) {
        kb_json_init();
        init = 1;
    }
    {
        char str[CA_SANS_STR_MAX], back[CA_SANS_STR_MAX];
        ca_sans a, b;
        if (size < sizeof(str)) {
            memcpy(str, data, size);
            str[size] = '\0';
            if (ca_sans_parse(str, &a, &why) != KB_OK) {
                if (why == NULL)
                    abort();
            } else if (ca_sans_format(&a, back, sizeof(back)) != KB_OK ||
                       ca_sans_parse(back, &b, &why) != KB_OK || a.n != b.n) {
                abort();
            }
        }
    }
    if (ca_policy_parse(data, size, &p, err, sizeof(err)) != KB_OK) {
        if (err[0] == '\0' || p != NULL)
            abort();
        return 0;
    }
    if (spiffe_id_parse_str("spiffe://example.org/lambda/acct/123456789012/fn/x", &id, &why) !=
        KB_OK)
        abort();
    if (ca_target_parse("secretsmanager:123456789012:x", &t, &why) == KB_OK &&
        ca_policy_check(p, &id, &t, 3600, 0, &why) != KB_OK && why == NULL)
        abort(); /* a refusal always says why */
    if (ca_target_parse("dir:/run/x/y", &t, &why) == KB_OK &&
        ca_policy_check(p, &id, &t, 3600, 1, &why) != KB_OK && why == NULL)
        abort();
    {
        ca_sans s;
        if (ca_sans_parse("dns:localhost,dns:a.svc.example.org,ip:127.0.0.1,ip:::1", &s, &why) !=
            KB_OK)
            abort();
        err[0] = '\0';
        if (ca_policy_check_sans(p, &id, &s, err, sizeof(err)) != KB_OK && err[0] == '\0')
            abort();
    }
    ca_policy_free(p);
    return 0;
}
