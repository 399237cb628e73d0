/* ca_policy.h - which SPIFFE IDs may be stored where (issue 5, point 3).
 *
 * A strict JSON file (unknown keys, duplicate keys, wrong types refused; docs/keybridge-ca.md):
 *
 *   {"rules": [
 *     {"path_prefix": "/lambda/acct/{account}/", "target": "secretsmanager",
 *      "account": "{account}", "max_ttl": 86400},
 *     {"path_prefix": "/ns/", "target": "dir", "dir_root": "/run/keybridge/svids",
 *      "renewable": true}
 *   ]}
 *
 * A registration is allowed iff some rule matches it: its ID's path has path_prefix (segment
 * boundaries, spiffe_id_has_prefix rules; a `{account}` segment matches 1-12 digits and captures
 * them), the target kind equals `target`, a dir target lies at or under dir_root (lexically: the
 * target path is already canonical), a Secrets Manager target's account equals `account` (a
 * literal, or the captured {account}), ttl <= max_ttl (if set), and renewable only if the rule
 * says so (never for secretsmanager). Anything else is refused, naming the closest reason.
 */
#ifndef KB_CA_POLICY_H
#define KB_CA_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "ca_target.h"
#include "lib/err.h"
#include "lib/spiffe_id.h"

#define CA_POLICY_MAX ((size_t)256 * 1024)
#define CA_POLICY_RULES_MAX 1024

typedef struct ca_policy ca_policy;

/* err gets "rule N: reason" (never quoting the input). */
KB_WUR kb_err ca_policy_parse(const void *buf, size_t len, ca_policy **out, char *err,
                              size_t err_len);
KB_WUR kb_err ca_policy_load(const char *path, ca_policy **out, char *err, size_t err_len);
void ca_policy_free(ca_policy *p);
size_t ca_policy_rule_count(const ca_policy *p);

/* KB_OK if allowed; KB_ERR_DENIED with *why otherwise. */
KB_WUR kb_err ca_policy_check(const ca_policy *p, const spiffe_id *id, const ca_target_spec *t,
                              int64_t ttl, int renewable, const char **why);

#endif
