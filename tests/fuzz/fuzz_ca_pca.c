/* fuzz_ca_pca.c - the AWS Private CA answer parsers (ca_pca_parse_issue, ca_pca_parse_cert,
 * ca_pca_parse_error) over arbitrary bytes: the first code that reads IssueCertificate,
 * GetCertificate and GetCertificateAuthorityCertificate answers. Must never crash, leak or read
 * out of bounds; on success the ARN is within the model's bounds and the certificate strings are
 * PEM of bounded size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ca/ca_pca.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly size bytes, so a read past the end is caught by ASan */
    char *p = malloc(size ? size : 1);
    char arn[CA_PCA_ARN_MAX + 1], code[CA_PCA_ERROR_MAX + 1];
    char *cert = NULL, *chain = NULL;

    if (p == NULL)
        return 0;
    if (size)
        memcpy(p, data, size);
    if (ca_pca_parse_issue(p, size, arn) == KB_OK &&
        (strlen(arn) < CA_PCA_ARN_MIN || strlen(arn) > CA_PCA_ARN_MAX))
        abort();
    if (ca_pca_parse_cert(p, size, &cert, &chain) == KB_OK) {
        if (cert == NULL || strlen(cert) > CA_PCA_PEM_MAX ||
            strncmp(cert, "-----BEGIN CERTIFICATE-----", 27) != 0 ||
            (chain != NULL && strlen(chain) > CA_PCA_PEM_MAX))
            abort();
        free(cert);
        free(chain);
    }
    if (ca_pca_parse_error(p, size, code) == KB_OK &&
        (code[0] == '\0' || strlen(code) > CA_PCA_ERROR_MAX))
        abort();
    free(p);
    return 0;
}
