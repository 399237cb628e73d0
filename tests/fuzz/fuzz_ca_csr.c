/* fuzz_ca_csr.c - keybridge-ca's CSR path (ca_csr_parse): no crash, no leak; every rejection
 * names its reason; an accepted key is one the CA would certify (P-256/P-384 or RSA >= 2048). */
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
