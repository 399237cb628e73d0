/* ca_pca.h - AWS Private CA (ACM PCA) as keybridge-ca's signer ([ca] key = acm-pca).
 *
 * The authority keeps every leaf key: it makes the key and a CSR, and AWS Private CA signs.
 * Three operations of the JSON 1.1 API (botocore data/acm-pca/2017-08-22/service-2.json,
 * X-Amz-Target ACMPrivateCA.<op>, SigV4 over awsreq.h):
 *   - GetCertificateAuthorityCertificate: the CA certificate and the chain above it, from which
 *     a generation is made (init, rotate prepare): the bundle holds its root;
 *   - IssueCertificate with the APIPassthrough template (default
 *     BlankEndEntityCertificate_APIPassthrough/V1: basicConstraints CA:FALSE and nothing else),
 *     the SPIFFE ID as the URI SAN (then the DNS/IP SANs), key usage digitalSignature,
 *     keyEncipherment, keyAgreement, EKU serverAuth + clientAuth, Validity ABSOLUTE at the
 *     SVID's notAfter, and an IdempotencyToken so that a retried call issues once;
 *   - GetCertificate, polled until the certificate is ready (RequestInProgressException),
 *     with doubling waits, until a deadline.
 * Throttling (ThrottlingException, 5xx) is retried with jittered doubling waits within the same
 * deadline. Calls to IssueCertificate are paced: at most `issue_rate` per second, spaced evenly
 * (a pacer shared by every thread), so the renewal daemon stays under the account's quota
 * (docs/internals/acm-pca.md). Every answer is parsed strictly (bounded, known members only,
 * typed) and the certificate is checked by ca.c before anything is stored.
 */
#ifndef KB_CA_PCA_H
#define KB_CA_PCA_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ca_sans.h"
#include "lib/err.h"
#include "lib/spiffe_id.h"

/* botocore's Arn shape: 5..200 characters. */
#define CA_PCA_ARN_MIN 5
#define CA_PCA_ARN_MAX 200
/* Largest answer read (a certificate and its chain are a few KiB; PEM of a deep chain). */
#define CA_PCA_RESP_MAX ((size_t)256 * 1024)
/* Largest PEM certificate or chain member taken from an answer. */
#define CA_PCA_PEM_MAX ((size_t)128 * 1024)
/* An AWS error type ("ThrottlingException") as kept for messages. */
#define CA_PCA_ERROR_MAX 64
/* IdempotencyToken: 1..36 characters (botocore); ours are 32 hex digits. */
#define CA_PCA_TOKEN_LEN 32
#define CA_PCA_TEMPLATE_DEFAULT                                                                    \
    "arn:aws:acm-pca:::template/BlankEndEntityCertificate_APIPassthrough/V1"
/* Default and largest IssueCertificate pace (calls per second). AWS's default quota is per
 * account and region (docs/internals/acm-pca.md); the default leaves most of it to others. */
#define CA_PCA_RATE_DEFAULT 5
#define CA_PCA_RATE_MAX 1000
/* GetCertificate polling: first wait, doubling up to the cap. */
#define CA_PCA_POLL_FIRST_MS 200
#define CA_PCA_POLL_CAP_MS 5000
/* Whole issuance (pace wait, IssueCertificate and its retries, polls): default bound. */
#define CA_PCA_DEADLINE_DEFAULT_MS 60000

typedef struct {
    const char *ca_arn;           /* arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID */
    const char *region;           /* signing region */
    const char *endpoint;         /* or NULL: https://acm-pca.<region>.amazonaws.com */
    const char *template_arn;     /* or NULL: CA_PCA_TEMPLATE_DEFAULT */
    const char *credentials_file; /* or NULL: AWS_* environment variables */
    const char *role_arn;         /* assume this role first ({account}: the CA's), or NULL */
    const char *external_id;
    const char *sts_endpoint;
    const char *ca_file; /* PEM trust anchors for https, or NULL: system store */
    long timeout_ms;     /* one call; 0: KB_AWSREQ_DEFAULT_TIMEOUT_MS */
    long deadline_ms;    /* one issuance; 0: CA_PCA_DEADLINE_DEFAULT_MS */
    double issue_rate;   /* IssueCertificate calls per second; 0: CA_PCA_RATE_DEFAULT */
} ca_pca_opts;

typedef struct ca_pca ca_pca;

/* Copy the options (checked: ARN shape, rate range). *why names a bad option. */
KB_WUR kb_err ca_pca_new(const ca_pca_opts *o, ca_pca **out, const char **why);
void ca_pca_free(ca_pca *p);
const char *ca_pca_ca_arn(const ca_pca *p);

/* GetCertificateAuthorityCertificate for arn: *cert_pem is the CA certificate, *chain_pem the
 * certificates above it (NULL for a root CA); malloc'd. */
KB_WUR kb_err ca_pca_get_ca_certificate(ca_pca *p, const char *arn, char **cert_pem,
                                        char **chain_pem, const char **why);

/* One SVID request: the CSR (PEM, signed by the leaf key), its ID and names, and the notAfter
 * wanted (Unix seconds). signing_algorithm: "SHA256WITHECDSA", ... (the CA key's). */
typedef struct {
    const char *arn;
    const char *csr_pem;
    const spiffe_id *id;
    const ca_sans *sans; /* or NULL */
    int64_t not_after;
    const char *signing_algorithm;
} ca_pca_req;

/* IssueCertificate, then GetCertificate until it is ready. *cert_pem (malloc'd) is the leaf
 * as AWS returned it: the caller verifies it. Errors: KB_ERR_DENIED (AccessDenied, InvalidArn,
 * a refused request: *why names AWS's error type), KB_ERR_TIMEOUT (deadline passed while
 * throttled or in progress), KB_ERR_INVALID (an answer we cannot read), transport errors as
 * kb_awsreq_call. */
KB_WUR kb_err ca_pca_issue(ca_pca *p, const ca_pca_req *r, char **cert_pem, const char **why);

/* The IssueCertificate request body (JSON, malloc'd; exposed for the unit test). token: the
 * IdempotencyToken. */
KB_WUR kb_err ca_pca_issue_body(const ca_pca *p, const ca_pca_req *r, const char *token,
                                char **out);

/* The signing algorithm for a CA key: SHA256WITHECDSA (P-256), SHA384WITHECDSA (P-384),
 * SHA512WITHECDSA (P-521), SHA256WITHRSA (RSA); NULL for anything else. */
const char *ca_pca_signing_algorithm(EVP_PKEY *ca_key);

/* A CSR (PEM, malloc'd) for key: an empty subject but O=SPIFFE (X509-SVID leaves need no
 * subject; some CAs refuse an empty one), no extensions: the names come from ApiPassthrough. */
KB_WUR kb_err ca_pca_csr(EVP_PKEY *key, char **pem);

/* Answer parsers (network bytes; tests/fuzz/fuzz_ca_pca.c). Strict JSON (kb_json_parse), only
 * the members of the model's output shape, each a string within its bounds. */
/* IssueCertificateResponse: {"CertificateArn": ARN}. */
KB_WUR kb_err ca_pca_parse_issue(const void *buf, size_t len, char arn[CA_PCA_ARN_MAX + 1]);
/* GetCertificateResponse / GetCertificateAuthorityCertificateResponse: {"Certificate": PEM,
 * "CertificateChain": PEM (optional)}; the certificate must be exactly one PEM certificate, the
 * chain one or more. *chain is NULL when absent. */
KB_WUR kb_err ca_pca_parse_cert(const void *buf, size_t len, char **cert, char **chain);
/* An AWS JSON error: the type from "__type" (after any '#'), or KB_ERR_NOT_FOUND. */
KB_WUR kb_err ca_pca_parse_error(const void *buf, size_t len, char code[CA_PCA_ERROR_MAX + 1]);

/* Check a certificate AWS Private CA returned before anything is stored: it carries key (the
 * leaf key we made), is signed by ca_cert (the active generation's certificate), passes the
 * X509-SVID rules and RFC 5280 path validation as a client and as a server through ca_cert and
 * chain to the roots in bundle_pem (keybridge's own x509svid_verify), names exactly id as its
 * URI SAN and exactly the DNS/IP names in sans (may be NULL), and ends after now and no later
 * than not_after (+ CA_PCA_NOT_AFTER_SLACK). On KB_OK *out is the parsed leaf. */
#define CA_PCA_NOT_AFTER_SLACK 60
KB_WUR kb_err ca_pca_check_leaf(const char *leaf_pem, EVP_PKEY *key, X509 *ca_cert,
                                STACK_OF(X509) * chain, const char *td, const char *bundle_pem,
                                const spiffe_id *id, const ca_sans *sans, int64_t now,
                                int64_t not_after, X509 **out, const char **why);

/* The account field of an ARN (12 digits) into acct; KB_ERR_INVALID if it has none. */
KB_WUR kb_err ca_pca_arn_account(const char *arn, char acct[13]);

#endif
