/* ca_assume.h - temporary credentials for Secrets Manager targets in other accounts.
 *
 * With [aws] role_arn set, keybridge-ca does not write SVIDs with its own credentials: for each
 * target account it assumes the role (STS AssumeRole, src/lib/sts.c; deploy/terraform/
 * svid-store-role creates it) and writes with the temporary credentials. role_arn may contain
 * "{account}", replaced by the target's account, so one setting serves every account. Sessions
 * are cached per (role ARN, external ID, STS endpoint) and refreshed when less than
 * CA_ASSUME_REFRESH_S of their life remains, so a write never starts with credentials that
 * could expire during it.
 */
#ifndef KB_CA_ASSUME_H
#define KB_CA_ASSUME_H

#include <stdint.h>

#include "lib/awsreq.h"
#include "lib/err.h"

#define CA_ASSUME_DURATION_S 3600 /* asked of STS: the role's minimum maximum */
#define CA_ASSUME_REFRESH_S 300
#define CA_ASSUME_SESSION_NAME "keybridge-ca"
#define CA_ASSUME_CACHE_MAX 64 /* distinct roles kept; the oldest is dropped past it */
#define CA_ASSUME_ARN_MAX 2048

typedef struct {
    const char *role_arn;     /* ARN or template with {account} */
    const char *external_id;  /* or NULL / "" */
    const char *sts_endpoint; /* or NULL / "": https://sts.<region>.amazonaws.com */
    const char *region;       /* signing region for STS */
} ca_assume_cfg;

/* Replace *creds (the CA's own, used to call STS) by temporary credentials for the role in
 * account (12 digits). On failure *creds is unchanged and *why says what went wrong (no
 * credential in it). now: Unix seconds (time(NULL); tests pass their own). */
KB_WUR kb_err ca_assume_creds(const ca_assume_cfg *cfg, const char *account, int64_t now,
                              kb_aws_creds *creds, const char **why);

/* The CA's own credentials: a 0600 file "ACCESS_KEY_ID SECRET_ACCESS_KEY [SESSION_TOKEN]"
 * when credentials_file is set (not NULL or ""), else AWS_* environment variables
 * (kb_aws_creds_from_env). Used for Secrets Manager targets and AWS Private CA. */
KB_WUR kb_err ca_creds_load(const char *credentials_file, kb_aws_creds *out);

/* Drop every cached session (wiped). */
void ca_assume_cache_clear(void);

#endif
