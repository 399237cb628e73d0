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

struct ca_policy {
    struct rule *r;
    size_t n;
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

static kb_err rule_parse(json_t *o, struct rule *r, const char **why)
{
    static const char *const allowed[] = {"path_prefix", "target",    "dir_root", "account",
                                          "max_ttl",     "renewable", NULL};
    const char *bad = NULL, *s;
    json_t *v;

    memset(r, 0, sizeof(*r));
    if (!json_is_object(o)) {
        *why = "a rule must be an object";
        return KB_ERR_INVALID;
    }
    if (kb_json_only_keys(o, allowed, &bad) != KB_OK) {
        *why = "unknown key in rule";
        return KB_ERR_INVALID;
    }
    v = json_object_get(o, "path_prefix");
    if (!json_is_string(v) || !prefix_ok(json_string_value(v))) {
        *why = "path_prefix must be an ID path like /ns/ (segments of A-Z a-z 0-9 . _ -, "
               "at most one {account} segment)";
        return KB_ERR_INVALID;
    }
    snprintf(r->prefix, sizeof(r->prefix), "%s", json_string_value(v));
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

kb_err ca_policy_parse(const void *buf, size_t len, ca_policy **out, char *err, size_t err_len)
{
    static const char *const allowed[] = {"rules", NULL};
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
        snprintf(err, err_len, "unknown top-level key (only \"rules\")");
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
