/* ca_sans.h - DNS and IP subject alternative names a server SVID may carry beside its one URI
 * SAN (X509-SVID.md 2: "An X.509 SVID MUST contain exactly one URI SAN, and MAY contain any
 * number of other SAN field types, including DNS SANs"). Clients that check a host name
 * (keysync, Go's crypto/tls) need one: `certificate is not valid for any names` otherwise.
 *
 * Strict syntax, checked before the policy (ca_policy_check_sans) is asked:
 *   DNS  RFC 1123 host name in its preferred form, lowercase: 1-253 bytes, labels of 1-63
 *        [a-z0-9-] not starting or ending with '-', no trailing dot, no wildcard, not all-numeric
 *        in the last label (an address belongs in --ip);
 *   IP   an IPv4 dotted quad or an IPv6 address as inet_pton(3) reads it (no zone, no prefix),
 *        kept in inet_ntop's canonical form.
 * Stored as one string "dns:NAME,ip:ADDR,..." (the registration's `sans` column).
 */
#ifndef KB_CA_SANS_H
#define KB_CA_SANS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509v3.h>

#include "lib/err.h"

#define CA_SANS_MAX 16 /* DNS + IP names per SVID */
#define CA_DNS_NAME_MAX 253
#define CA_DNS_LABEL_MAX 63
/* "dns:" + name + ',' per entry */
#define CA_SANS_STR_MAX (CA_SANS_MAX * (4 + CA_DNS_NAME_MAX + 1) + 1)

#define CA_SAN_DNS 1
#define CA_SAN_IP 2

typedef struct {
    int type;                       /* CA_SAN_DNS or CA_SAN_IP */
    char text[CA_DNS_NAME_MAX + 1]; /* the name, or the canonical address */
    uint8_t addr[16];               /* IP: network order */
    size_t addr_len;                /* 4 or 16 */
} ca_san;

typedef struct {
    size_t n;
    ca_san e[CA_SANS_MAX];
} ca_sans;

/* 1 if s[0..n) is a valid DNS name as above; *why names the broken rule otherwise. */
int ca_dns_name_ok(const char *s, size_t n, const char **why);

/* Add a name or an address (KB_ERR_INVALID with *why for bad syntax, KB_ERR_EXISTS for a
 * duplicate, KB_ERR_TOO_LARGE past CA_SANS_MAX). */
KB_WUR kb_err ca_sans_add_dns(ca_sans *s, const char *name, const char **why);
KB_WUR kb_err ca_sans_add_ip(ca_sans *s, const char *addr, const char **why);

/* The stored form and back (parse re-checks every entry). "" is no names. */
KB_WUR kb_err ca_sans_format(const ca_sans *s, char *out, size_t len);
KB_WUR kb_err ca_sans_parse(const char *str, ca_sans *s, const char **why);

/* Append the names to gns as dNSName / iPAddress GeneralNames. */
KB_WUR kb_err ca_sans_append(const ca_sans *s, GENERAL_NAMES *gns);

#endif
