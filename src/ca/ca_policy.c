/* ca_policy.c - registration policy (see ca_policy.h). */
#include "ca_policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/fileio.h"
#include "lib/json.h"

#define PREFIX_MAX 1024
#define ACCOUNT_PH "{account}"

struct rule {
    char prefix[PREFIX_MAX + 1];
    int kind;
    char dir_root[CA_TARGET_MAX];
    char account[16]; /* literal digits, or "{account}" */
    int64_t max_ttl;  /* 0 = no limit */
    int renewable;
};

/* A DNS pattern: a name, or "*." + name (exactly one more leftmost label). An IP pattern: an
 * address with a prefix length (32/128 when written without one), host bits zero. */
struct name_pat {
    int type; /* CA_SAN_DNS | CA_SAN_IP */
    int wildcard;
    char dns[CA_DNS_NAME_MAX + 1];
    uint8_t addr[16];
    size_t addr_len;
    unsigned bits;
};

/* A server_names entry: which DNS and IP SANs IDs under prefix may carry. */
struct names_rule {
    struct rule id; /* only prefix is used (same syntax and matching as rules) */
    struct name_pat *pat;
    size_t npat;
};

struct ca_policy {
    struct rule *r;
    size_t n;
    struct names_rule *nr;
    size_t nn;
};

static int all_digits(const char *s, size_t n, size_t max)
{
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* A canonical absolute path: starts with '/', no empty, "." or ".." segments, no trailing '/'
 * (except "/" itself). */
static int canonical_abs(const char *p)
{
    const char *s = p, *e;

    if (p[0] != '/')
        return 0;
    if (p[1] == '\0')
        return 1;
    while (*s == '/') {
        s++;
        e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return 0;
        s += n;
    }
    return *s == '\0';
}

/* Prefix syntax: like an ID path (segments of A-Z a-z 0-9 . _ -), optional trailing '/', and
 * whole segments "{account}" (at most one). */
static int prefix_ok(const char *p)
{
    size_t n = strlen(p), i = 1, ph = 0;

    if (n == 0 || n > PREFIX_MAX || p[0] != '/')
        return 0;
    if (n == 1)
        return 1;
    while (i < n) {
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        if (j == i)
            return 0; /* empty segment */
        if (j - i == strlen(ACCOUNT_PH) && memcmp(p + i, ACCOUNT_PH, j - i) == 0) {
            ph++;
        } else {
            for (size_t k = i; k < j; k++) {
                char c = p[k];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-'))
                    return 0;
            }
            if ((j - i == 1 && p[i] == '.') || (j - i == 2 && p[i] == '.' && p[i + 1] == '.'))
                return 0;
        }
        if (j == n - 1)
            break; /* trailing '/' */
        i = j + 1;
    }
    return ph <= 1;
}

/* An object with only the allowed keys and a valid path_prefix, copied to prefix. */
static kb_err entry_start(json_t *o, const char *const *allowed, const char *what,
                          const char *unknown, char prefix[PREFIX_MAX + 1], const char **why)
{
    const char *bad = NULL;
    json_t *v;

    if (!json_is_object(o)) {
        *why = what;
        return KB_ERR_INVALID;
    }
    if (kb_json_only_keys(o, allowed, &bad) != KB_OK) {
        *why = unknown;
        return KB_ERR_INVALID;
    }
    v = json_object_get(o, "path_prefix");
    if (!json_is_string(v) || !prefix_ok(json_string_value(v))) {
        *why = "path_prefix must be an ID path like /ns/ (segments of A-Z a-z 0-9 . _ -, "
               "at most one {account} segment)";
        return KB_ERR_INVALID;
    }
    snprintf(prefix, PREFIX_MAX + 1, "%s", json_string_value(v));
    return KB_OK;
}

static kb_err rule_parse(json_t *o, struct rule *r, const char **why)
{
    static const char *const allowed[] = {"path_prefix", "target",    "dir_root", "account",
                                          "max_ttl",     "renewable", NULL};
    const char *s;
    json_t *v;

    memset(r, 0, sizeof(*r));
    KB_GUARD(
        entry_start(o, allowed, "a rule must be an object", "unknown key in rule", r->prefix, why));
    v = json_object_get(o, "target");
    s = json_is_string(v) ? json_string_value(v) : "";
    if (strcmp(s, "dir") == 0) {
        r->kind = CA_TARGET_DIR;
    } else if (strcmp(s, "secretsmanager") == 0) {
        r->kind = CA_TARGET_SM;
    } else {
        *why = "target must be \"dir\" or \"secretsmanager\"";
        return KB_ERR_INVALID;
    }
    v = json_object_get(o, "dir_root");
    if (r->kind == CA_TARGET_DIR) {
        if (!json_is_string(v) || json_string_length(v) >= sizeof(r->dir_root) ||
            !canonical_abs(json_string_value(v))) {
            *why = "a dir rule needs dir_root, a canonical absolute path";
            return KB_ERR_INVALID;
        }
        snprintf(r->dir_root, sizeof(r->dir_root), "%s", json_string_value(v));
    } else if (v != NULL) {
        *why = "dir_root is only for dir rules";
        return KB_ERR_INVALID;
    }
    v = json_object_get(o, "account");
    if (r->kind == CA_TARGET_SM) {
        s = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(s, ACCOUNT_PH) == 0) {
            if (strstr(r->prefix, ACCOUNT_PH) == NULL) {
                *why = "account {account} needs a {account} segment in path_prefix";
                return KB_ERR_INVALID;
            }
        } else if (!all_digits(s, strlen(s), 12) || strlen(s) != 12) {
            *why = "a secretsmanager rule needs account: 12 digits or \"{account}\"";
            return KB_ERR_INVALID;
        }
        snprintf(r->account, sizeof(r->account), "%s", s);
    } else if (v != NULL) {
        *why = "account is only for secretsmanager rules";
        return KB_ERR_INVALID;
    }
    v = json_object_get(o, "max_ttl");
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 60) {
            *why = "max_ttl must be an integer number of seconds >= 60";
            return KB_ERR_INVALID;
        }
        r->max_ttl = json_integer_value(v);
    }
    v = json_object_get(o, "renewable");
    if (v != NULL) {
        if (!json_is_boolean(v)) {
            *why = "renewable must be true or false";
            return KB_ERR_INVALID;
        }
        r->renewable = json_is_true(v);
        if (r->renewable && r->kind == CA_TARGET_SM) {
            *why = "stored SVIDs (secretsmanager) are never renewable over the API";
            return KB_ERR_INVALID;
        }
    }
    return KB_OK;
}

static kb_err pat_parse(json_t *v, int type, struct name_pat *np, const char **why)
{
    const char *s = json_string_value(v), *slash;
    char a[64];
    ca_sans tmp;
    const char *w = NULL;

    memset(np, 0, sizeof(*np));
    np->type = type;
    if (s == NULL) {
        *why = "dns and ip list strings";
        return KB_ERR_INVALID;
    }
    if (type == CA_SAN_DNS) {
        if (strncmp(s, "*.", 2) == 0) {
            np->wildcard = 1;
            s += 2;
        }
        if (!ca_dns_name_ok(s, strlen(s), &w)) {
            *why = "a dns pattern is a lowercase host name, or *. and one (one label matches *)";
            return KB_ERR_INVALID;
        }
        snprintf(np->dns, sizeof(np->dns), "%s", s);
        return KB_OK;
    }
    slash = strchr(s, '/');
    if ((slash ? (size_t)(slash - s) : strlen(s)) >= sizeof(a)) {
        *why = "an ip pattern is an address or address/prefix-length";
        return KB_ERR_INVALID;
    }
    snprintf(a, sizeof(a), "%.*s", (int)(slash ? (size_t)(slash - s) : strlen(s)), s);
    memset(&tmp, 0, sizeof(tmp));
    if (ca_sans_add_ip(&tmp, a, &w) != KB_OK) {
        *why = "an ip pattern is an address or address/prefix-length";
        return KB_ERR_INVALID;
    }
    memcpy(np->addr, tmp.e[0].addr, sizeof(np->addr));
    np->addr_len = tmp.e[0].addr_len;
    np->bits = (unsigned)(np->addr_len * 8);
    if (slash != NULL) {
        long b = -1;
        if (all_digits(slash + 1, strlen(slash + 1), 3))
            b = strtol(slash + 1, NULL, 10);
        if (b < 0 || b > (long)np->bits) {
            *why = "an ip pattern's prefix length is 0-32 (IPv4) or 0-128 (IPv6)";
            return KB_ERR_INVALID;
        }
        np->bits = (unsigned)b;
        for (unsigned i = np->bits; i < np->addr_len * 8; i++)
            if (np->addr[i / 8] & (0x80u >> (i % 8))) {
                *why = "an ip pattern's address has host bits set past its prefix length";
                return KB_ERR_INVALID;
            }
    }
    return KB_OK;
}

static kb_err names_rule_parse(json_t *o, struct names_rule *r, const char **why)
{
    static const char *const allowed[] = {"path_prefix", "dns", "ip", NULL};
    json_t *dns, *ip;
    size_t i, total;

    memset(r, 0, sizeof(*r));
    KB_GUARD(entry_start(o, allowed, "a server_names entry must be an object",
                         "unknown key in server_names entry (path_prefix, dns, ip)", r->id.prefix,
                         why));
    dns = json_object_get(o, "dns");
    ip = json_object_get(o, "ip");
    if ((dns != NULL && !json_is_array(dns)) || (ip != NULL && !json_is_array(ip))) {
        *why = "dns and ip are arrays of strings";
        return KB_ERR_INVALID;
    }
    total = json_array_size(dns) + json_array_size(ip);
    if (total == 0) {
        *why = "a server_names entry allows at least one dns or ip pattern";
        return KB_ERR_INVALID;
    }
    if (total > CA_POLICY_NAMES_MAX) {
        *why = "more than 256 patterns in one server_names entry";
        return KB_ERR_TOO_LARGE;
    }
    r->pat = calloc(total, sizeof(*r->pat));
    KB_ENSURE(r->pat != NULL, KB_ERR_NOMEM);
    for (i = 0; i < json_array_size(dns); i++)
        KB_GUARD(pat_parse(json_array_get(dns, i), CA_SAN_DNS, &r->pat[r->npat++], why));
    for (i = 0; i < json_array_size(ip); i++)
        KB_GUARD(pat_parse(json_array_get(ip, i), CA_SAN_IP, &r->pat[r->npat++], why));
    return KB_OK;
}

static kb_err names_parse(json_t *arr, ca_policy *p, char *err, size_t err_len)
{
    const char *why = NULL;
    kb_err rc;

    if (arr == NULL)
        return KB_OK;
    if (!json_is_array(arr)) {
        snprintf(err, err_len, "\"server_names\" must be an array");
        return KB_ERR_INVALID;
    }
    if (json_array_size(arr) > CA_POLICY_RULES_MAX) {
        snprintf(err, err_len, "more than %d server_names entries", CA_POLICY_RULES_MAX);
        return KB_ERR_TOO_LARGE;
    }
    if (json_array_size(arr) == 0)
        return KB_OK;
    p->nr = calloc(json_array_size(arr), sizeof(*p->nr));
    KB_ENSURE(p->nr != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        rc = names_rule_parse(json_array_get(arr, i), &p->nr[i], &why);
        p->nn++; /* owns its patterns even when it failed: freed with the policy */
        if (rc != KB_OK) {
            snprintf(err, err_len, "server_names entry %zu: %s", i + 1, why);
            return rc;
        }
    }
    return KB_OK;
}

kb_err ca_policy_parse(const void *buf, size_t len, ca_policy **out, char *err, size_t err_len)
{
    static const char *const allowed[] = {"rules", "server_names", NULL};
    const char *bad = NULL, *why = NULL;
    ca_policy *p = NULL;
    json_t *root = NULL, *rules;
    char jerr[128] = "";
    kb_err rc = KB_OK;
    size_t i, nrules;

    KB_ENSURE_REF(out);
    *out = NULL;
    if (err_len > 0)
        err[0] = '\0';
    rc = kb_json_parse(buf, len, CA_POLICY_MAX, &root, jerr, sizeof(jerr));
    if (rc != KB_OK) {
        snprintf(err, err_len, "not a strict JSON object: %s", jerr);
        return rc;
    }
    if (kb_json_only_keys(root, allowed, &bad) != KB_OK) {
        snprintf(err, err_len, "unknown top-level key (only \"rules\" and \"server_names\")");
        rc = KB_ERR_INVALID;
        goto out;
    }
    rules = json_object_get(root, "rules");
    if (!json_is_array(rules)) {
        snprintf(err, err_len, "\"rules\" must be an array");
        rc = KB_ERR_INVALID;
        goto out;
    }
    if (json_array_size(rules) > CA_POLICY_RULES_MAX) {
        snprintf(err, err_len, "more than %d rules", CA_POLICY_RULES_MAX);
        rc = KB_ERR_TOO_LARGE;
        goto out;
    }
    p = calloc(1, sizeof(*p));
    KB_ENSURE_OUT(rc, p != NULL, KB_ERR_NOMEM);
    nrules = json_array_size(rules);
    if (nrules > 0) {
        p->r = calloc(nrules, sizeof(*p->r));
        KB_ENSURE_OUT(rc, p->r != NULL, KB_ERR_NOMEM);
    }
    for (i = 0; i < nrules; i++) {
        rc = rule_parse(json_array_get(rules, i), &p->r[i], &why);
        if (rc != KB_OK) {
            snprintf(err, err_len, "rule %zu: %s", i + 1, why);
            goto out;
        }
        p->n++;
    }
    KB_GUARD_OUT(rc, names_parse(json_object_get(root, "server_names"), p, err, err_len));
    *out = p;
    p = NULL;
out:
    ca_policy_free(p);
    json_decref(root);
    return rc;
}

kb_err ca_policy_load(const char *path, ca_policy **out, char *err, size_t err_len)
{
    kb_dbuf b;
    kb_err rc;

    kb_dbuf_init(&b, CA_POLICY_MAX + 1);
    rc = kb_file_read(path, CA_POLICY_MAX, &b);
    if (rc != KB_OK)
        snprintf(err, err_len, "cannot read the policy file (%s)", kb_err_str(rc));
    else
        rc = ca_policy_parse(b.p, b.len, out, err, err_len);
    kb_dbuf_free(&b);
    return rc;
}

void ca_policy_free(ca_policy *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nn; i++)
        free(p->nr[i].pat);
    free(p->nr);
    free(p->r);
    free(p);
}

size_t ca_policy_rule_count(const ca_policy *p)
{
    return p ? p->n : 0;
}

/* Match the ID's path against a prefix with an optional {account} segment; capture it. */
static int prefix_match(const struct rule *r, const spiffe_id *id, char acct[16])
{
    const char *ph = strstr(r->prefix, ACCOUNT_PH);
    const char *path = spiffe_id_path(id), *seg_end;
    char expanded[SPIFFE_ID_MAX + 1];
    size_t before, seglen;

    acct[0] = '\0';
    if (ph == NULL)
        return spiffe_id_has_prefix(id, r->prefix);
    before = (size_t)(ph - r->prefix); /* includes the '/' before the placeholder */
    if (strncmp(path, r->prefix, before) != 0)
        return 0;
    seg_end = strchr(path + before, '/');
    seglen = seg_end ? (size_t)(seg_end - (path + before)) : strlen(path + before);
    if (!all_digits(path + before, seglen, 12))
        return 0;
    memcpy(acct, path + before, seglen);
    acct[seglen] = '\0';
    if ((size_t)snprintf(expanded, sizeof(expanded), "%.*s%s%s", (int)before, r->prefix, acct,
                         ph + strlen(ACCOUNT_PH)) >= sizeof(expanded))
        return 0;
    return spiffe_id_has_prefix(id, expanded);
}

static int under_root(const char *path, const char *root)
{
    size_t n = strlen(root);

    if (strcmp(root, "/") == 0)
        return 1;
    return strncmp(path, root, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

kb_err ca_policy_check(const ca_policy *p, const spiffe_id *id, const ca_target_spec *t,
                       int64_t ttl, int renewable, const char **why)
{
    char acct[16];
    int matched_id = 0;

    *why = "no policy rule allows this SPIFFE ID";
    KB_ENSURE(p != NULL && id != NULL && t != NULL, KB_ERR_DENIED);
    for (size_t i = 0; i < p->n; i++) {
        const struct rule *r = &p->r[i];
        if (!prefix_match(r, id, acct))
            continue;
        matched_id = 1;
        if (r->kind != t->kind) {
            *why = "no policy rule allows this SPIFFE ID into this kind of target";
            continue;
        }
        if (r->kind == CA_TARGET_DIR && !under_root(t->path, r->dir_root)) {
            *why = "directory is outside the policy's dir_root for this SPIFFE ID";
            continue;
        }
        if (r->kind == CA_TARGET_SM &&
            strcmp(t->account, strcmp(r->account, ACCOUNT_PH) == 0 ? acct : r->account) != 0) {
            *why = "this SPIFFE ID may not be stored in that AWS account";
            continue;
        }
        if (r->max_ttl > 0 && ttl > r->max_ttl) {
            *why = "ttl is over the policy's max_ttl";
            continue;
        }
        if (renewable && !r->renewable) {
            *why = "policy does not allow API renewal for this SPIFFE ID";
            continue;
        }
        *why = NULL;
        return KB_OK;
    }
    (void)matched_id;
    return KB_ERR_DENIED;
}

static int pat_allows(const struct name_pat *np, const ca_san *e)
{
    if (np->type != e->type)
        return 0;
    if (e->type == CA_SAN_DNS) {
        const char *dot;
        if (!np->wildcard)
            return strcmp(np->dns, e->text) == 0;
        dot = strchr(e->text, '.'); /* one label, then exactly the pattern's name */
        return dot != NULL && dot != e->text && strcmp(dot + 1, np->dns) == 0;
    }
    if (np->addr_len != e->addr_len)
        return 0;
    for (unsigned i = 0; i < np->bits; i++) {
        unsigned m = 0x80u >> (i % 8);
        if ((np->addr[i / 8] & m) != (e->addr[i / 8] & m))
            return 0;
    }
    return 1;
}

kb_err ca_policy_check_sans(const ca_policy *p, const spiffe_id *id, const ca_sans *sans, char *err,
                            size_t err_len)
{
    char acct[16];

    if (err_len > 0)
        err[0] = '\0';
    if (sans == NULL || sans->n == 0)
        return KB_OK;
    if (p == NULL || id == NULL) {
        snprintf(err, err_len, "DNS and IP names need a policy file with server_names");
        return KB_ERR_DENIED;
    }
    for (size_t k = 0; k < sans->n; k++) {
        const ca_san *e = &sans->e[k];
        const char *kind = e->type == CA_SAN_DNS ? "DNS name" : "IP address";
        size_t matched = 0; /* 1 + the first entry matching the ID */
        int ok = 0;
        for (size_t i = 0; i < p->nn && !ok; i++) {
            if (!prefix_match(&p->nr[i].id, id, acct))
                continue;
            if (matched == 0)
                matched = i + 1;
            for (size_t j = 0; j < p->nr[i].npat && !ok; j++)
                ok = pat_allows(&p->nr[i].pat[j], e);
        }
        if (ok)
            continue;
        if (!matched)
            snprintf(err, err_len,
                     "%s %s refused: no server_names entry of the policy matches this SPIFFE ID",
                     kind, e->text);
        else
            snprintf(err, err_len,
                     "%s %s refused: not in the %s list of server_names entry %zu (path_prefix "
                     "%s) or any other entry matching this SPIFFE ID",
                     kind, e->text, e->type == CA_SAN_DNS ? "dns" : "ip", matched,
                     p->nr[matched - 1].id.prefix);
        return KB_ERR_DENIED;
    }
    return KB_OK;
}
