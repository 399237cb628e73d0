/* awsreq.h - one SigV4-signed AWS JSON 1.1 call over httpc (Secrets Manager and friends).
 *
 * kb_awsreq_call POSTs json_body to cfg->endpoint with the headers of the AWS JSON 1.1 protocol
 * (Content-Type: application/x-amz-json-1.1, X-Amz-Target: <target>), signed with SigV4 over
 * host, content-type, x-amz-date, x-amz-target and x-amz-security-token (when a session token
 * is set). TLS peers are verified (TLS 1.2 or later, system CAs or cfg->ca_file); plain http is
 * only allowed to loopback hosts, since bodies and responses carry secrets. Redirects are not
 * followed. Calls to one endpoint reuse one kept-alive connection (an internal pool of idle
 * clients, safe across threads). See docs/internals/sigv4.md and docs/internals/httpc.md.
 *
 * Credentials come from the environment as on AWS Lambda (kb_aws_creds_from_env): the secret
 * access key is copied into locked memory at once and is never logged.
 */
#ifndef KB_AWSREQ_H
#define KB_AWSREQ_H

#include <stddef.h>

#include "buf.h"
#include "err.h"
#include "secbuf.h"

#define KB_AWSREQ_MAX_TARGET 128     /* X-Amz-Target, e.g. "secretsmanager.GetSecretValue" */
#define KB_AWSREQ_MAX_TOKEN 4096     /* AWS_SESSION_TOKEN */
#define KB_AWSREQ_MAX_SECRET_KEY 128 /* AWS_SECRET_ACCESS_KEY */
#define KB_AWSREQ_DEFAULT_TIMEOUT_MS 10000

typedef struct {
    const char *endpoint;        /* "https://secretsmanager.us-east-1.amazonaws.com" */
    const char *region;          /* "us-east-1" */
    const char *service;         /* "secretsmanager" */
    const char *access_key_id;   /* AKID */
    const kb_secret *secret_key; /* secret access key, in locked memory */
    const char *session_token;   /* or NULL */
    const char *ca_file;         /* PEM trust anchors for https, or NULL for the system store */
    long timeout_ms;             /* whole call; 0 means KB_AWSREQ_DEFAULT_TIMEOUT_MS */
} kb_awsreq_cfg;

/* POST one signed request. On KB_OK, *http_status holds the HTTP status (any: AWS errors come
 * back as 4xx/5xx with a JSON body) and the response body was appended to resp (bounded by
 * resp->max: KB_ERR_TOO_LARGE past it). Errors: KB_ERR_INVALID (bad target, endpoint or
 * credentials), KB_ERR_CONFIG (plain http to a non-loopback host, unusable CA file),
 * KB_ERR_TIMEOUT, KB_ERR_UNAVAILABLE (could not connect/resolve), KB_ERR_AUTH (TLS peer
 * verification failed), KB_ERR_IO (other transfer failures). */
KB_WUR kb_err kb_awsreq_call(const kb_awsreq_cfg *cfg, const char *target, const char *json_body,
                             size_t len, long *http_status, kb_dbuf *resp);

/* The same for an AWS query-protocol API (STS): form_body is the form-encoded parameters
 * (Action=...&Version=...), sent as application/x-www-form-urlencoded without X-Amz-Target;
 * the answer is XML. */
KB_WUR kb_err kb_awsreq_call_query(const kb_awsreq_cfg *cfg, const char *form_body, size_t len,
                                   long *http_status, kb_dbuf *resp);

/* Close the idle kept-alive connections (tests; programs may leave them to exit). */
void kb_awsreq_pool_clear(void);

typedef struct {
    char *access_key_id; /* malloc'd */
    kb_secret *secret_key;
    char *session_token; /* malloc'd (wiped on free), or NULL */
} kb_aws_creds;

/* AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optional AWS_SESSION_TOKEN (the Lambda
 * runtime's variables). KB_ERR_NOT_FOUND if the key id or secret is unset, KB_ERR_CONFIG if a
 * value is empty, too long or has characters no AWS credential has. */
KB_WUR kb_err kb_aws_creds_from_env(kb_aws_creds *out);
void kb_aws_creds_free(kb_aws_creds *c);

#endif
