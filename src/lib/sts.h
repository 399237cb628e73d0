/* sts.h - AWS STS AssumeRole: temporary credentials for another account's role.
 *
 * STS speaks the AWS query protocol (botocore's data/sts/2011-06-15/service-2.json): a SigV4-
 * signed form-encoded POST (Action=AssumeRole&Version=2011-06-15&RoleArn=...&RoleSessionName=...
 * &DurationSeconds=...[&ExternalId=...]) answered with XML. Only the four members we need are
 * read from the answer (AssumeRoleResponse/AssumeRoleResult/Credentials/{AccessKeyId,
 * SecretAccessKey, SessionToken, Expiration}), by a bounded scanner that refuses anything it
 * does not expect (duplicates, entities, CDATA, oversized values). See docs/internals/sigv4.md.
 */
#ifndef KB_STS_H
#define KB_STS_H

#include <stddef.h>
#include <stdint.h>

#include "awsreq.h"
#include "err.h"

#define KB_STS_RESP_MAX ((size_t)16 * 1024) /* an AssumeRole answer is ~2 KiB */
#define KB_STS_ROLE_ARN_MIN 20              /* botocore arnType */
#define KB_STS_ROLE_ARN_MAX 2048
#define KB_STS_EXTERNAL_ID_MIN 2 /* externalIdType */
#define KB_STS_EXTERNAL_ID_MAX 1224
#define KB_STS_SESSION_NAME_MIN 2 /* roleSessionNameType */
#define KB_STS_SESSION_NAME_MAX 64
#define KB_STS_DURATION_MIN 900 /* roleDurationSecondsType */
#define KB_STS_DURATION_MAX 43200
#define KB_STS_AKID_MAX 128 /* accessKeyIdType */
#define KB_STS_ERROR_MAX 256

typedef struct {
    const char *role_arn;     /* arn:aws:iam::123456789012:role/NAME */
    const char *external_id;  /* or NULL */
    const char *session_name; /* [A-Za-z0-9_+=,.@-], 2-64 */
    int duration_s;           /* 900-43200 */
} kb_sts_assume;

/* AssumeRole with the caller's credentials in cfg (cfg->endpoint: the STS endpoint, e.g.
 * https://sts.eu-west-1.amazonaws.com; cfg->service is forced to "sts"). On KB_OK *out holds
 * the temporary credentials (free with kb_aws_creds_free) and *expires_at their expiry (Unix
 * seconds). Errors: KB_ERR_INVALID (a parameter outside STS's model), KB_ERR_DENIED (STS said
 * AccessDenied or another client error; err names STS's error code), KB_ERR_UNAVAILABLE
 * (5xx/throttled), transport errors as kb_awsreq_call, KB_ERR_INVALID for an answer we cannot
 * read. err (may be NULL) gets a message without any credential. */
KB_WUR kb_err kb_sts_assume_role(const kb_awsreq_cfg *cfg, const kb_sts_assume *a,
                                 kb_aws_creds *out, int64_t *expires_at, char *err, size_t err_len);

/* Parse an AssumeRole XML answer (exposed for the unit test and the fuzzer). */
KB_WUR kb_err kb_sts_parse_assume_role(const char *xml, size_t len, kb_aws_creds *out,
                                       int64_t *expires_at);

/* The error code of an STS ErrorResponse (<Error><Code>...</Code>), or KB_ERR_NOT_FOUND. */
KB_WUR kb_err kb_sts_parse_error(const char *xml, size_t len, char *code, size_t code_len);

#endif
