/* ca_sans.c - DNS and IP SANs for server SVIDs (see ca_sans.h). */
#include "ca_sans.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

int ca_dns_name_ok(const char *s, size_t n, const char **why)
{
    size_t i = 0, label_start = 0;
    int all_digits = 1;

    if (n == 0 || n > CA_DNS_NAME_MAX) {
        *why = "a DNS name has 1 to 253 characters";
        return 0;
    }
    if (s[n - 1] == '.') {
        *why = "a DNS name has no trailing dot";
        return 0;
    }
    for (i = 0; i <= n; i++) {
        char c = i < n ? s[i] : '.';
        if (c == '.') {
            size_t len = i - label_start;
            if (len == 0) {
                *why = "a DNS name has no empty label";
                return 0;
            }
            if (len > CA_DNS_LABEL_MAX) {
                *why = "a DNS label has at most 63 characters";
                return 0;
            }
            if (s[label_start] == '-' || s[i - 1] == '-') {
                *why = "a DNS label does not start or end with '-'";
                return 0;
            }
            if (i < n)
                all_digits = 1;
            label_start = i + 1;
            continue;
        }
        if (c == '*') {
            *why = "wildcard DNS names are not issued (name each host)";
            return 0;
        }
        if (c >= 'A' && c <= 'Z') {
            *why = "a DNS name must be lowercase";
            return 0;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            *why = "a DNS name has only a-z, 0-9, '-' and '.'";
            return 0;
        }
        if (!(c >= '0' && c <= '9'))
            all_digits = 0;
    }
    if (all_digits) {
        *why = "a DNS name's last label is not all digits (an IP address goes in --ip)";
        return 0;
    }
    *why = NULL;
    return 1;
}

static int sans_has(const ca_sans *s, int type, const char *text)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->e[i].type == type && strcmp(s->e[i].text, text) == 0)
            return 1;
    return 0;
}

kb_err ca_sans_add_dns(ca_sans *s, const char *name, const char **why)
{
    ca_san *e;

    KB_ENSURE_REF(s);
    KB_ENSURE_REF(name);
    if (!ca_dns_name_ok(name, strlen(name), why))
        return KB_ERR_INVALID;
    if (sans_has(s, CA_SAN_DNS, name)) {
        *why = "the same DNS name is given twice";
        return KB_ERR_EXISTS;
    }
    if (s->n >= CA_SANS_MAX) {
        *why = "at most 16 DNS and IP names per SVID";
        return KB_ERR_TOO_LARGE;
    }
    e = &s->e[s->n++];
    memset(e, 0, sizeof(*e));
    e->type = CA_SAN_DNS;
    memcpy(e->text, name, strlen(name) + 1);
    return KB_OK;
}

kb_err ca_sans_add_ip(ca_sans *s, const char *addr, const char **why)
{
    ca_san e;
    int fam;

    KB_ENSURE_REF(s);
    KB_ENSURE_REF(addr);
    memset(&e, 0, sizeof(e));
    e.type = CA_SAN_IP;
    fam = strchr(addr, ':') != NULL ? AF_INET6 : AF_INET;
    e.addr_len = fam == AF_INET6 ? 16 : 4;
    if (strlen(addr) > 45 || inet_pton(fam, addr, e.addr) != 1) {
        *why = "an IP address is an IPv4 dotted quad or an IPv6 address (no zone, no prefix "
               "length)";
        return KB_ERR_INVALID;
    }
    if (inet_ntop(fam, e.addr, e.text, sizeof(e.text)) == NULL) {
        *why = "an IP address could not be formatted";
        return KB_ERR_INVALID;
    }
    if (sans_has(s, CA_SAN_IP, e.text)) {
        *why = "the same IP address is given twice";
        return KB_ERR_EXISTS;
    }
    if (s->n >= CA_SANS_MAX) {
        *why = "at most 16 DNS and IP names per SVID";
        return KB_ERR_TOO_LARGE;
    }
    s->e[s->n++] = e;
    *why = NULL;
    return KB_OK;
}

kb_err ca_sans_format(const ca_sans *s, char *out, size_t len)
{
    size_t off = 0;

    KB_ENSURE_REF(out);
    KB_ENSURE(len > 0, KB_ERR_TOO_LARGE);
    out[0] = '\0';
    for (size_t i = 0; s != NULL && i < s->n; i++) {
        int k = snprintf(out + off, len - off, "%s%s:%s", i ? "," : "",
                         s->e[i].type == CA_SAN_DNS ? "dns" : "ip", s->e[i].text);
        KB_ENSURE(k > 0 && (size_t)k < len - off, KB_ERR_TOO_LARGE);
        off += (size_t)k;
    }
    return KB_OK;
}

kb_err ca_sans_parse(const char *str, ca_sans *s, const char **why)
{
    char item[8 + CA_DNS_NAME_MAX + 1];
    const char *p = str;

    KB_ENSURE_REF(str);
    KB_ENSURE_REF(s);
    memset(s, 0, sizeof(*s));
    *why = NULL;
    while (*p != '\0') {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || n >= sizeof(item)) {
            *why = "malformed stored SAN list";
            return KB_ERR_INVALID;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        if (strncmp(item, "dns:", 4) == 0)
            KB_GUARD(ca_sans_add_dns(s, item + 4, why));
        else if (strncmp(item, "ip:", 3) == 0)
            KB_GUARD(ca_sans_add_ip(s, item + 3, why));
        else {
            *why = "malformed stored SAN list";
            return KB_ERR_INVALID;
        }
        p += n;
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                *why = "malformed stored SAN list";
                return KB_ERR_INVALID;
            }
        }
    }
    return KB_OK;
}

kb_err ca_sans_append(const ca_sans *s, GENERAL_NAMES *gns)
{
    for (size_t i = 0; s != NULL && i < s->n; i++) {
        const ca_san *e = &s->e[i];
        GENERAL_NAME *gn = GENERAL_NAME_new();
        ASN1_STRING *v = e->type == CA_SAN_DNS ? ASN1_IA5STRING_new() : ASN1_OCTET_STRING_new();
        int ok = gn != NULL && v != NULL &&
                 (e->type == CA_SAN_DNS ? ASN1_STRING_set(v, e->text, (int)strlen(e->text))
                                        : ASN1_STRING_set(v, e->addr, (int)e->addr_len)) == 1;
        if (ok) {
            GENERAL_NAME_set0_value(gn, e->type == CA_SAN_DNS ? GEN_DNS : GEN_IPADD, v);
            v = NULL;
            ok = sk_GENERAL_NAME_push(gns, gn) > 0;
            if (ok)
                gn = NULL;
        }
        ASN1_STRING_free(v);
        GENERAL_NAME_free(gn);
        if (!ok)
            return KB_ERR_NOMEM;
    }
    return KB_OK;
}
