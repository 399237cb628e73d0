/* ca_target.h - where a registered SVID is stored, behind one ops table (OpenSMTPD style):
 *
 *   dir:/abs/path                    svid.pem, svid.key, bundle.pem written atomically, 0600
 *   secretsmanager:ACCOUNT:NAME      an AWS Secrets Manager secret (or keybridge-cache) holding
 *                                    SPIRE's SVIDStore JSON in SecretBinary
 *
 * Secrets Manager rules (issue 5, point 3; DESIGN.md "Syncer"): DescribeSecret; absent:
 * CreateSecret under the default encryption key, tagged keybridge:trust-domain and
 * keybridge:registration; present: refused unless it carries both tags with our values, has no
 * KmsKeyId other than the default (aws/secretsmanager), has no resource policy (GetResourcePolicy)
 * and its ARN names ACCOUNT; RestoreSecret if pending deletion; then PutSecretValue. A
 * registration with adopt_spire also takes over a secret tagged spire-svid=true by SPIRE's
 * SVIDStore plugin that has neither keybridge tag (TagResource adds them). Remove:
 * DeleteSecret with a 7-day recovery window, only for a secret we own.
 */
#ifndef KB_CA_TARGET_H
#define KB_CA_TARGET_H

#include <stddef.h>
#include <stdint.h>

#include "ca.h"
#include "ca_store.h"
#include "lib/err.h"

#define CA_TARGET_DIR 1
#define CA_TARGET_SM 2
#define CA_SM_NAME_MAX 512
#define CA_SM_RECOVERY_DAYS 7

typedef struct {
    int kind;
    char path[CA_TARGET_MAX]; /* dir */
    char account[16];         /* sm: 12 digits */
    char name[CA_SM_NAME_MAX + 1];
} ca_target_spec;

/* Parse a target string; *why names the fault. */
KB_WUR kb_err ca_target_parse(const char *s, ca_target_spec *out, const char **why);

/* Defaults for Secrets Manager targets whose registration leaves them empty. */
typedef struct {
    const char *region;
    const char *endpoint;
    const char *credentials_file;
    const char *trust_domain;
    const char *role_arn;     /* assume this role (may hold {account}) for sm targets, or NULL */
    const char *external_id;  /* sts:ExternalId, or NULL */
    const char *sts_endpoint; /* STS endpoint override, or NULL */
} ca_target_env;

/* Before signing for a registration: make sure its target can take the SVID - for Secrets
 * Manager, the secret exists or is created, and is ours (ownership tags, or adoptable from SPIRE
 * with adopt_spire), on the default key, in the account, without a resource policy, restored if
 * pending deletion. A refused target then costs no certificate and no audit row, however often
 * it is retried. ca_target_write checks again before the key is sent. dir: nothing to check. */
KB_WUR kb_err ca_target_prepare(const ca_target_env *env, const ca_reg *r, const char **why);

/* Write an issued SVID to the registration's target. */
KB_WUR kb_err ca_target_write(const ca_target_env *env, const ca_reg *r, const ca_svid *sv,
                              const char **why);
/* Delete the stored SVID (dir: the three files; sm: DeleteSecret, 7-day window). */
KB_WUR kb_err ca_target_remove(const ca_target_env *env, const ca_reg *r, const char **why);

/* SPIRE's SVIDStore JSON for sv (malloc'd, wipe-free with kb_json_free_str). */
KB_WUR kb_err ca_target_svidstore_json(const char *id_str, const ca_svid *sv, char **out);

#endif
