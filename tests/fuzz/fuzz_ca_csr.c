/* fuzz_ca_csr.c - keybridge-ca's CSR path (ca_csr_parse): no crash, no leak; every rejection
 * names its reason; an accepted key is one the CA would certify (P-256/P-384 or RSA >= 2048).
 * Differential: the fast EC path and the OpenSSL-only path agree - whatever the fast path
 * accepts, d2i_X509_REQ accepts with the same key, and the other way round (the one stricter
 * refusal: more than one extension request). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ca/ca_csr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    spiffe_id id;
    const char *why = NULL;
    EVP_PKEY *pub = NULL;
    kb_err rc;

    if (spiffe_id_parse_str("spiffe://example.org/ns/a", &id, &why) != KB_OK)
        abort();
    rc = ca_csr_parse(data, size, (size & 1) ? &id : NULL, &pub, &why);
    {
        EVP_PKEY *slow = NULL;
        const char *swhy = NULL;
        kb_err src = ca_csr_parse_ex(data, size, (size & 1) ? &id : NULL, &slow, &swhy, 1);
        if (rc == KB_OK && (src != KB_OK || EVP_PKEY_eq(pub, slow) != 1))
            abort();
        if (rc != KB_OK && src == KB_OK &&
            (why == NULL || strcmp(why, "malformed CSR: more than one extension request") != 0))
            abort();
        EVP_PKEY_free(slow);
    }
    if (rc != KB_OK) {
        if (why == NULL || pub != NULL)
            abort();
        return 0;
    }
    if (pub == NULL)
        abort();
    if (EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA && EVP_PKEY_get_bits(pub) < 2048)
        abort();
    EVP_PKEY_free(pub);
    return 0;
}
