/* fuzz_spiffe_bundle.c - SPIFFE bundle parsing (JWKS or PEM): no crash, no leak, and every
 * bundle that serializes parses back with the same contents. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "lib/buf.h"
#include "lib/json.h"
#include "lib/spiffe_bundle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(const spiffe_bundle *b)
{
    kb_dbuf out;
    spiffe_bundle *back = NULL;
    const char *why = NULL;
    kb_dbuf_init(&out, 4 * SPIFFE_BUNDLE_MAX);
    /* Serializing may refuse a root whose key JWK cannot express (another curve, EdDSA). */
    if (spiffe_bundle_to_jwks(b, &out) == KB_OK) {
        if (spiffe_bundle_parse_jwks(spiffe_bundle_trust_domain(b), out.p, out.len, &back, &why) !=
            KB_OK)
            abort();
        if (spiffe_bundle_x509_count(back) != spiffe_bundle_x509_count(b) ||
            spiffe_bundle_jwt_count(back) != spiffe_bundle_jwt_count(b) ||
            spiffe_bundle_sequence(back) != spiffe_bundle_sequence(b) ||
            spiffe_bundle_refresh_hint(back) != spiffe_bundle_refresh_hint(b))
            abort();
        for (size_t i = 0; i < spiffe_bundle_x509_count(b); i++) {
            if (X509_cmp(spiffe_bundle_x509_root(b, i), spiffe_bundle_x509_root(back, i)) != 0)
                abort();
        }
        spiffe_bundle_free(back);
        back = NULL;
    }
    kb_dbuf_reset(&out);
    if (spiffe_bundle_x509_count(b) > 0) {
        if (spiffe_bundle_to_pem(b, &out) != KB_OK ||
            spiffe_bundle_parse_pem("example.org", out.p, out.len, &back, &why) != KB_OK ||
            spiffe_bundle_x509_count(back) != spiffe_bundle_x509_count(b))
            abort();
        spiffe_bundle_free(back);
    }
    kb_dbuf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    spiffe_bundle *b = NULL;
    const char *why = NULL;
    if (!init) {
        kb_json_init();
        init = 1;
    }
    if (spiffe_bundle_parse("example.org", data, size, &b, &why) != KB_OK) {
        if (why == NULL || b != NULL)
            abort();
        return 0;
    }
    round_trip(b);
    spiffe_bundle_free(b);
    return 0;
}
