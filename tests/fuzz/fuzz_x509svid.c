/* fuzz_x509svid.c - X509-SVID certificate paths: PEM (certificates and keys) and concatenated DER
 * through parsing, the leaf and signing rules, and chain verification against a bundle anchored
 * at the input's last certificate, at a fixed time. No crash, no leak, and no ID without KB_OK. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "lib/spiffe_bundle.h"
#include "lib/x509svid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 2020-03-24T14:30:00Z: inside the validity of the go-spiffe-style seeds. */
#define FUZZ_TIME ((time_t)1585060200)

static void verify(X509 *leaf, STACK_OF(X509) * chain, X509 *anchor)
{
    spiffe_id id;
    const char *why = NULL;
    spiffe_bundle_set *set = NULL;
    spiffe_bundle *b = NULL;

    kb_err rc = x509svid_check_leaf(leaf, X509SVID_PURPOSE_CLIENT, &id, &why);
    if (rc != KB_OK && (why == NULL || spiffe_id_len(&id) != 0))
        abort();
    if (rc != KB_OK)
        return;
    if (spiffe_bundle_set_new(&set) != KB_OK)
        return;
    if (spiffe_bundle_new(spiffe_id_trust_domain(&id), &b) == KB_OK &&
        spiffe_bundle_add_x509_root(b, anchor) == KB_OK && spiffe_bundle_set_put(set, b) == KB_OK)
        b = NULL;
    spiffe_bundle_free(b);
    for (int purpose = 1; purpose <= 2; purpose++) {
        rc = x509svid_verify(set, leaf, chain, purpose, FUZZ_TIME, &id, &why);
        if (rc == KB_OK ? spiffe_id_is_root(&id) : (why == NULL || spiffe_id_len(&id) != 0))
            abort();
    }
    spiffe_bundle_set_free(set);
}

static void der_path(const uint8_t *data, size_t size)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    const unsigned char *p = data;
    const unsigned char *end = data + size;
    while (certs != NULL && p < end && sk_X509_num(certs) < X509SVID_CHAIN_MAX) {
        X509 *x = d2i_X509(NULL, &p, (long)(end - p));
        if (x == NULL)
            break;
        if (sk_X509_push(certs, x) <= 0) {
            X509_free(x);
            break;
        }
    }
    ERR_clear_error();
    if (certs != NULL && sk_X509_num(certs) > 0)
        verify(sk_X509_value(certs, 0), certs, sk_X509_value(certs, sk_X509_num(certs) - 1));
    sk_X509_pop_free(certs, X509_free);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    x509svid *s = NULL;
    const char *why = NULL;
    if (x509svid_parse_pem(data, size, NULL, 0, &s, &why) == KB_OK) {
        STACK_OF(X509) *in = x509svid_intermediates(s);
        X509 *anchor =
            sk_X509_num(in) > 0 ? sk_X509_value(in, sk_X509_num(in) - 1) : x509svid_leaf(s);
        verify(x509svid_leaf(s), in, anchor);
        x509svid_free(s);
    } else if (why == NULL || s != NULL) {
        abort();
    }
    der_path(data, size);
    return 0;
}
