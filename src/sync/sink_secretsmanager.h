/* sink_secretsmanager.h - AWS Secrets Manager (or keybridge-cache) as a sink, one per region.
 *
 * Cloud name: keybridge/<application>/<name>. Tags (written by CreateSecret, then TagResource
 * after each PutSecretValue):
 *   keybridge:app         the managing application (ListSecrets filters on it)
 *   keybridge:version     the keybridged version written
 *   keybridge:checksum    its checksum (hex HMAC-SHA256 from keybridged)
 *   keybridge:version-id  the Secrets Manager version id written (= ClientRequestToken)
 * ClientRequestToken = UUID form of SHA-256("keybridge-sync/v1" 0 app 0 name 0 version 0
 * checksum) (the client API gives name + version + checksum; the checksum already binds the
 * server's secret id, so name stands in for "secret id"). A rewrite of a secret changed by hand
 * adds 0 "repair" 0 <AWSCURRENT version id> to the hash, so it is a new version yet still
 * idempotent on retry. See docs/keybridge-sync.md "secretsmanager sink". */
#ifndef KB_SYNC_SINK_SECRETSMANAGER_H
#define KB_SYNC_SINK_SECRETSMANAGER_H

#include "lib/awsreq.h"
#include "sink.h"

#define SYNC_SM_TAG_APP "keybridge:app"
#define SYNC_SM_TAG_VERSION "keybridge:version"
#define SYNC_SM_TAG_CHECKSUM "keybridge:checksum"
#define SYNC_SM_TAG_VID "keybridge:version-id"
#define SYNC_SM_PREFIX "keybridge/"
#define SYNC_SM_PAGE 100                           /* ListSecrets MaxResults */
#define SYNC_SM_RESP_MAX ((size_t)4 * 1024 * 1024) /* one response body */
#define SYNC_SM_RECOVERY_DAYS 7
#define SYNC_SM_DEFAULT_KMS "alias/aws/secretsmanager"
/* Pacing and throttles (docs/keybridge-sync.md "Deadline, pacing, throttles"). AWS's quotas for
 * CreateSecret, PutSecretValue, TagResource, DeleteSecret, RestoreSecret and GetResourcePolicy
 * are 50 per second per account and region, shared by every syncer in the account (AWS Secrets
 * Manager User Guide, "Secrets Manager quotas"): those calls are paced to [sink] rate, default
 * SYNC_SM_RATE_DEFAULT. ListSecrets, DescribeSecret and GetSecretValue (quotas of 100 to 40,000
 * per second) are not paced. A ThrottlingException (or HTTP 429) is retried after a jittered,
 * doubling wait (backoff.h, from SYNC_BACKOFF_BASE_MS) while the deadline allows, at most
 * SYNC_SM_THROTTLE_ATTEMPTS times; then the secret counts as deferred. */
#define SYNC_SM_RATE_DEFAULT 20
#define SYNC_SM_RATE_MAX 1000
#define SYNC_SM_THROTTLE_ATTEMPTS 8
#define SYNC_SM_TIMEOUT_DEFAULT_MS 30000

typedef struct {
    const char *region;        /* "us-east-1" */
    const char *endpoint;      /* NULL: https://secretsmanager.<region>.amazonaws.com */
    const kb_aws_creds *creds; /* borrowed */
    const char *ca_file;       /* or NULL */
    long timeout_ms;           /* per call, cut to what is left of clock's deadline */
    const sync_clock *clock;   /* the run's deadline (borrowed; NULL: none) */
    int64_t rate;              /* most quota-limited calls per second (SYNC_SM_PACED); 0: unpaced */
} sync_sm_opts;

KB_WUR kb_err sync_sink_sm_new(const sync_sm_opts *o, sync_sink **out);

/* GetSecretValue of secret_id into locked memory (SecretBinary decoded, or SecretString). */
KB_WUR kb_err sync_sm_get_value(const sync_sm_opts *o, const char *secret_id, kb_secret **out,
                                sync_summary *sum);

/* The ClientRequestToken (36 characters + NUL) for a write; repair_vid NULL for a normal one. */
KB_WUR kb_err sync_sm_token(const char *app, const char *name, int64_t version,
                            const char *checksum, const char *repair_vid, char out[37]);

/* 1 if p[0..n) is valid UTF-8 (RFC 3629) without NUL: goes to SecretString. */
int sync_utf8_ok(const uint8_t *p, size_t n);

#endif
