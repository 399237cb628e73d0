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
 * Optional "server_names" (ca_policy_check_sans below) allows DNS/IP SANs per ID prefix.
 */
#ifndef KB_CA_POLICY_H
#define KB_CA_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "ca_sans.h"
#include "ca_target.h"
#include "lib/err.h"
#include "lib/spiffe_id.h"

#define CA_POLICY_MAX ((size_t)256 * 1024)
#define CA_POLICY_RULES_MAX 1024
#define CA_POLICY_NAMES_MAX 256 /* dns + ip patterns per server_names entry */

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

/* DNS and IP SANs (ca_sans.h) for a server SVID of id: each one must be allowed by some
 * server_names entry whose path_prefix matches id (same matching as rules):
 *
 *   "server_names": [
 *     {"path_prefix": "/keybridged", "dns": ["localhost", "*.svc.example.org"],
 *      "ip": ["127.0.0.1", "::1", "10.0.0.0/8"]}
 *   ]
 *
 * A dns pattern is a name, or "*." + name matching exactly one more leftmost label; an ip
 * pattern is an address or address/prefix-length. KB_OK for no names; KB_ERR_DENIED with err
 * naming the name and the rule otherwise (the caller's own input, so it is quoted). */
KB_WUR kb_err ca_policy_check_sans(const ca_policy *p, const spiffe_id *id, const ca_sans *sans,
                                   char *err, size_t err_len);

#endif
