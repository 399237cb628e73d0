/* ca_pca.c - AWS Private CA client: IssueCertificate, GetCertificate, the CA certificate (see
 * ca_pca.h and docs/internals/acm-pca.md). */
#include "ca_pca.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca_assume.h"
#include "lib/awsreq.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/spiffe_bundle.h"
#include "lib/x509svid.h"

#define TARGET_PREFIX "ACMPrivateCA."
#define ENDPOINT_MAX 600
#define URI_SAN_MAX 253 /* botocore String253: GeneralName.UniformResourceIdentifier */
#define RETRY_FIRST_MS 500
#define RETRY_CAP_MS 8000
#define PEM_CERT_BEGIN "-----BEGIN CERTIFICATE-----"

struct ca_pca {
    char *ca_arn, *region, *endpoint, *template_arn, *credentials_file, *role_arn, *external_id,
        *sts_endpoint, *ca_file;
    long timeout_ms, deadline_ms;
    double interval_s; /* 1 / issue_rate */
    pthread_mutex_t mu;
    double next_slot; /* monotonic seconds: the earliest the next IssueCertificate may go */
};

static _Thread_local char g_why[320];

static const char *why_fmt(const char *op, const char *what)
{
    snprintf(g_why, sizeof(g_why), "acm-pca %s: %s", op, what);
    return g_why;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts;
    if (s <= 0)
        return;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
}

/* arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE - botocore's Arn pattern, and 5..200. */
static int arn_ok(const char *a)
{
    size_t n = a ? strlen(a) : 0;
    int colons = 0;

    if (n < CA_PCA_ARN_MIN || n > CA_PCA_ARN_MAX || strncmp(a, "arn:", 4) != 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = a[i];
        if (c == ':')
            colons++;
        else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   strchr("_+=/,.@-", c) != NULL))
            return 0;
    }
    return colons == 5 && a[n - 1] != ':' && a[n - 1] != '/';
}

kb_err ca_pca_arn_account(const char *arn, char acct[13])
{
    const char *p = arn;

    for (int i = 0; p != NULL && i < 4; i++) {
        p = strchr(p, ':');
        if (p != NULL)
            p++;
    }
    KB_ENSURE(p != NULL && strlen(p) > 12 && p[12] == ':', KB_ERR_INVALID);
    for (int i = 0; i < 12; i++)
        KB_ENSURE(p[i] >= '0' && p[i] <= '9', KB_ERR_INVALID);
    memcpy(acct, p, 12);
    acct[12] = '\0';
    return KB_OK;
}

static char *dup_opt(const char *s, kb_err *rc)
{
    char *d;
    if (s == NULL || s[0] == '\0')
        return NULL;
    d = strdup(s);
    if (d == NULL)
        *rc = KB_ERR_NOMEM;
    return d;
}

kb_err ca_pca_new(const ca_pca_opts *o, ca_pca **out, const char **why)
{
    double rate = o->issue_rate > 0 ? o->issue_rate : CA_PCA_RATE_DEFAULT;
    ca_pca *p;
    kb_err rc = KB_OK;

    *out = NULL;
    *why = NULL;
    if (o->ca_arn != NULL && o->ca_arn[0] != '\0' && !arn_ok(o->ca_arn)) {
        *why = "[acm_pca] ca_arn is not an ARN (arn:aws:acm-pca:REGION:ACCOUNT:"
               "certificate-authority/ID, at most 200 characters)";
        return KB_ERR_CONFIG;
    }
    if (o->template_arn != NULL && o->template_arn[0] != '\0' && !arn_ok(o->template_arn)) {
        *why = "[acm_pca] template_arn is not an ARN";
        return KB_ERR_CONFIG;
    }
    if (o->region == NULL || o->region[0] == '\0' || strlen(o->region) > 64) {
        *why = "[acm_pca] region (or [aws] region) is required";
        return KB_ERR_CONFIG;
    }
    if (rate > CA_PCA_RATE_MAX || o->timeout_ms < 0 || o->deadline_ms < 0) {
        *why = "[acm_pca] issue_rate must be 1..1000 per second, timeouts positive";
        return KB_ERR_CONFIG;
    }
    p = calloc(1, sizeof(*p));
    KB_ENSURE(p != NULL, KB_ERR_NOMEM);
    p->ca_arn = dup_opt(o->ca_arn, &rc);
    p->region = dup_opt(o->region, &rc);
    p->template_arn = dup_opt(o->template_arn ? o->template_arn : CA_PCA_TEMPLATE_DEFAULT, &rc);
    p->credentials_file = dup_opt(o->credentials_file, &rc);
    p->role_arn = dup_opt(o->role_arn, &rc);
    p->external_id = dup_opt(o->external_id, &rc);
    p->sts_endpoint = dup_opt(o->sts_endpoint, &rc);
    p->ca_file = dup_opt(o->ca_file, &rc);
    if (o->endpoint != NULL && o->endpoint[0] != '\0') {
        p->endpoint = dup_opt(o->endpoint, &rc);
    } else if (rc == KB_OK) {
        p->endpoint = malloc(ENDPOINT_MAX);
        if (p->endpoint == NULL)
            rc = KB_ERR_NOMEM;
        else
            snprintf(p->endpoint, ENDPOINT_MAX, "https://acm-pca.%s.amazonaws.com", o->region);
    }
    p->timeout_ms = o->timeout_ms;
    p->deadline_ms = o->deadline_ms > 0 ? o->deadline_ms : CA_PCA_DEADLINE_DEFAULT_MS;
    p->interval_s = 1.0 / rate;
    pthread_mutex_init(&p->mu, NULL);
    if (rc != KB_OK) {
        ca_pca_free(p);
        return rc;
    }
    *out = p;
    return KB_OK;
}

void ca_pca_free(ca_pca *p)
{
    if (p == NULL)
        return;
    free(p->ca_arn);
    free(p->region);
    free(p->endpoint);
    free(p->template_arn);
    free(p->credentials_file);
    free(p->role_arn);
    free(p->external_id);
    free(p->sts_endpoint);
    free(p->ca_file);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

const char *ca_pca_ca_arn(const ca_pca *p)
{
    return p ? p->ca_arn : NULL;
}

/* ---- parsers -------------------------------------------------------------------------------- */

kb_err ca_pca_parse_error(const void *buf, size_t len, char code[CA_PCA_ERROR_MAX + 1])
{
    json_t *o = NULL;
    const char *t, *h;
    kb_err rc = KB_ERR_NOT_FOUND;

    code[0] = '\0';
    if (kb_json_parse(buf, len, CA_PCA_RESP_MAX, &o, NULL, 0) != KB_OK)
        return KB_ERR_NOT_FOUND;
    t = json_string_value(json_object_get(o, "__type"));
    if (t != NULL) {
        h = strrchr(t, '#');
        h = h ? h + 1 : t;
        if (h[0] != '\0' && strlen(h) <= CA_PCA_ERROR_MAX) {
            rc = KB_OK;
            for (size_t i = 0; h[i] != '\0'; i++)
                if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
                      (h[i] >= '0' && h[i] <= '9') || h[i] == '.' || h[i] == '_'))
                    rc = KB_ERR_NOT_FOUND; /* not a type name: never echoed */
            if (rc == KB_OK)
                memcpy(code, h, strlen(h) + 1);
        }
    }
    json_decref(o);
    return rc;
}

kb_err ca_pca_parse_issue(const void *buf, size_t len, char arn[CA_PCA_ARN_MAX + 1])
{
    static const char *const allowed[] = {"CertificateArn", NULL};
    json_t *o = NULL;
    const char *bad = NULL, *a;
    kb_err rc = KB_OK;

    arn[0] = '\0';
    KB_GUARD(kb_json_parse(buf, len, CA_PCA_RESP_MAX, &o, NULL, 0));
    KB_GUARD_OUT(rc, kb_json_only_keys(o, allowed, &bad));
    a = json_string_value(json_object_get(o, "CertificateArn"));
    KB_ENSURE_OUT(rc, a != NULL && arn_ok(a), KB_ERR_INVALID);
    memcpy(arn, a, strlen(a) + 1);
out:
    json_decref(o);
    return rc;
}

/* n PEM certificates (n >= 1), nothing else but whitespace between them, each parsing as a
 * certificate. *count gets n. */
static kb_err pem_certs_only(const char *s, size_t len, int *count)
{
    BIO *b = BIO_new_mem_buf(s, (int)len);
    const char *p = s, *end = s + len;
    X509 *x;
    int n = 0;

    KB_ENSURE(b != NULL, KB_ERR_NOMEM);
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        X509_free(x);
        n++;
    }
    ERR_clear_error();
    BIO_free(b);
    /* every block is a CERTIFICATE and the text is blocks and whitespace only */
    for (int i = 0; i < n; i++) {
        const char *e;
        while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
            p++;
        if ((size_t)(end - p) < strlen(PEM_CERT_BEGIN) ||
            memcmp(p, PEM_CERT_BEGIN, strlen(PEM_CERT_BEGIN)) != 0)
            return KB_ERR_INVALID;
        e = strstr(p, "-----END CERTIFICATE-----");
        if (e == NULL || e >= end)
            return KB_ERR_INVALID;
        p = e + strlen("-----END CERTIFICATE-----");
    }
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    KB_ENSURE(n > 0 && p == end, KB_ERR_INVALID);
    *count = n;
    return KB_OK;
}

kb_err ca_pca_parse_cert(const void *buf, size_t len, char **cert, char **chain)
{
    static const char *const allowed[] = {"Certificate", "CertificateChain", NULL};
    json_t *o = NULL, *c, *ch;
    const char *bad = NULL;
    int n = 0;
    kb_err rc = KB_OK;

    *cert = NULL;
    *chain = NULL;
    KB_GUARD(kb_json_parse(buf, len, CA_PCA_RESP_MAX, &o, NULL, 0));
    KB_GUARD_OUT(rc, kb_json_only_keys(o, allowed, &bad));
    c = json_object_get(o, "Certificate");
    ch = json_object_get(o, "CertificateChain");
    KB_ENSURE_OUT(rc, json_is_string(c) && (ch == NULL || json_is_string(ch)), KB_ERR_INVALID);
    KB_ENSURE_OUT(rc,
                  json_string_length(c) <= CA_PCA_PEM_MAX &&
                      (ch == NULL || json_string_length(ch) <= CA_PCA_PEM_MAX),
                  KB_ERR_TOO_LARGE);
    KB_ENSURE_OUT(rc, strlen(json_string_value(c)) == json_string_length(c), KB_ERR_INVALID);
    KB_GUARD_OUT(rc, pem_certs_only(json_string_value(c), json_string_length(c), &n));
    KB_ENSURE_OUT(rc, n == 1, KB_ERR_INVALID);
    if (ch != NULL) {
        KB_ENSURE_OUT(rc, strlen(json_string_value(ch)) == json_string_length(ch), KB_ERR_INVALID);
        KB_GUARD_OUT(rc, pem_certs_only(json_string_value(ch), json_string_length(ch), &n));
        *chain = strdup(json_string_value(ch));
        KB_ENSURE_OUT(rc, *chain != NULL, KB_ERR_NOMEM);
    }
    *cert = strdup(json_string_value(c));
    KB_ENSURE_OUT(rc, *cert != NULL, KB_ERR_NOMEM);
out:
    if (rc != KB_OK) {
        free(*cert);
        free(*chain);
        *cert = NULL;
        *chain = NULL;
    }
    json_decref(o);
    return rc;
}

/* ---- requests ------------------------------------------------------------------------------- */

const char *ca_pca_signing_algorithm(EVP_PKEY *k)
{
    char grp[64];
    size_t gl = 0;

    if (k == NULL)
        return NULL;
    if (EVP_PKEY_is_a(k, "RSA"))
        return "SHA256WITHRSA";
    if (!EVP_PKEY_is_a(k, "EC") || EVP_PKEY_get_group_name(k, grp, sizeof(grp), &gl) != 1)
        return NULL;
    if (strcmp(grp, "prime256v1") == 0 || strcmp(grp, "P-256") == 0)
        return "SHA256WITHECDSA";
    if (strcmp(grp, "secp384r1") == 0 || strcmp(grp, "P-384") == 0)
        return "SHA384WITHECDSA";
    if (strcmp(grp, "secp521r1") == 0 || strcmp(grp, "P-521") == 0)
        return "SHA512WITHECDSA";
    return NULL;
}

kb_err ca_pca_csr(EVP_PKEY *key, char **pem)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *n = NULL;
    BIO *m = NULL;
    char *p = NULL;
    long len;
    kb_err rc = KB_ERR_CRYPTO;

    *pem = NULL;
    KB_ENSURE(req != NULL, KB_ERR_NOMEM);
    n = X509_REQ_get_subject_name(req);
    if (X509_REQ_set_version(req, 0) == 1 &&
        X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"SPIFFE", -1, -1,
                                   0) == 1 &&
        X509_REQ_set_pubkey(req, key) == 1 && X509_REQ_sign(req, key, EVP_sha256()) > 0 &&
        (m = BIO_new(BIO_s_mem())) != NULL && PEM_write_bio_X509_REQ(m, req) == 1 &&
        (len = BIO_get_mem_data(m, &p)) > 0) {
        *pem = strndup(p, (size_t)len);
        rc = *pem ? KB_OK : KB_ERR_NOMEM;
    }
    BIO_free(m);
    X509_REQ_free(req);
    return rc;
}

/* A blob member: the JSON protocol sends blobs as standard base64. */
static json_t *b64_string(const char *s)
{
    char *b = kb_b64_encode_str((const uint8_t *)s, strlen(s), KB_B64_STD);
    json_t *j = b ? json_string(b) : NULL;

    kb_json_free_str(b);
    return j;
}

kb_err ca_pca_issue_body(const ca_pca *p, const ca_pca_req *r, const char *token, char **out)
{
    json_t *o = NULL, *sans = NULL, *e;
    const char *uri = spiffe_id_str(r->id);
    kb_err rc = KB_OK;

    *out = NULL;
    KB_ENSURE(strlen(uri) <= URI_SAN_MAX, KB_ERR_TOO_LARGE);
    KB_ENSURE(r->not_after > 0 && r->signing_algorithm != NULL && arn_ok(r->arn), KB_ERR_INVALID);
    sans = json_array();
    KB_ENSURE_OUT(rc, sans != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(
        rc, json_array_append_new(sans, json_pack("{s:s}", "UniformResourceIdentifier", uri)) == 0,
        KB_ERR_NOMEM);
    for (size_t i = 0; r->sans != NULL && i < r->sans->n; i++) {
        const ca_san *s = &r->sans->e[i];
        e = json_pack("{s:s}", s->type == CA_SAN_DNS ? "DnsName" : "IpAddress", s->text);
        KB_ENSURE_OUT(rc, json_array_append_new(sans, e) == 0, KB_ERR_NOMEM);
    }
    o = json_pack("{s:s, s:o*, s:s, s:s, s:{s:s, s:I}, s:s, s:{s:{s:O, s:{s:b}, s:[{s:s},{s:s}]}}}",
                  "CertificateAuthorityArn", r->arn, "Csr", b64_string(r->csr_pem),
                  "SigningAlgorithm", r->signing_algorithm, "TemplateArn", p->template_arn,
                  "Validity", "Type", "ABSOLUTE", "Value", (json_int_t)r->not_after,
                  "IdempotencyToken", token, "ApiPassthrough", "Extensions",
                  "SubjectAlternativeNames", sans, "KeyUsage", "DigitalSignature", 1,
                  "ExtendedKeyUsage", "ExtendedKeyUsageType", "SERVER_AUTH", "ExtendedKeyUsageType",
                  "CLIENT_AUTH");
    KB_ENSURE_OUT(rc, o != NULL && json_object_get(o, "Csr") != NULL, KB_ERR_NOMEM);
    *out = kb_json_dump(o);
    KB_ENSURE_OUT(rc, *out != NULL, KB_ERR_NOMEM);
out:
    json_decref(sans);
    json_decref(o);
    return rc;
}

/* ---- checking what came back ---------------------------------------------------------------- */

/* The leaf's DNS and IP names are exactly sans, and it has no other names but its URI SAN. */
static int names_match(X509 *leaf, const ca_sans *sans)
{
    GENERAL_NAMES *gns = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    size_t want = sans ? sans->n : 0, seen = 0;
    int ok = gns != NULL, used[CA_SANS_MAX] = {0}; /* each requested name matches once */

    for (int i = 0; ok && i < sk_GENERAL_NAME_num(gns); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gns, i);
        const unsigned char *d;
        size_t n;
        int found = 0;
        if (g->type == GEN_URI)
            continue; /* exactly one, and which: x509svid_verify and the ID check */
        if (g->type != GEN_DNS && g->type != GEN_IPADD) {
            ok = 0;
            break;
        }
        d = ASN1_STRING_get0_data(g->type == GEN_DNS ? g->d.dNSName : g->d.iPAddress);
        n = (size_t)ASN1_STRING_length(g->type == GEN_DNS ? g->d.dNSName : g->d.iPAddress);
        for (size_t j = 0; j < want && !found; j++) {
            const ca_san *s = &sans->e[j];
            if (used[j])
                continue;
            if (g->type == GEN_DNS)
                found = s->type == CA_SAN_DNS && strlen(s->text) == n && memcmp(s->text, d, n) == 0;
            else
                found = s->type == CA_SAN_IP && s->addr_len == n && memcmp(s->addr, d, n) == 0;
            used[j] = found;
        }
        ok = found;
        seen++;
    }
    GENERAL_NAMES_free(gns);
    ERR_clear_error();
    return ok && seen == want;
}

kb_err ca_pca_check_leaf(const char *leaf_pem, EVP_PKEY *key, X509 *ca_cert, STACK_OF(X509) * chain,
                         const char *td, const char *bundle_pem, const spiffe_id *id,
                         const ca_sans *sans, int64_t now, int64_t not_after, X509 **out,
                         const char **why)
{
    spiffe_bundle_set *set = NULL;
    spiffe_bundle *b = NULL;
    STACK_OF(X509) *inter = NULL;
    X509 *leaf = NULL;
    BIO *m = NULL;
    spiffe_id got;
    const char *w = NULL;
    time_t na;
    kb_err rc = KB_ERR_AUTH;

    *out = NULL;
    *why = "acm-pca: the certificate returned cannot be parsed";
    KB_ENSURE_REF(leaf_pem);
    KB_ENSURE_REF(ca_cert);
    m = BIO_new_mem_buf(leaf_pem, (int)strlen(leaf_pem));
    leaf = m ? PEM_read_bio_X509(m, NULL, NULL, NULL) : NULL;
    ERR_clear_error();
    KB_ENSURE_OUT(rc, leaf != NULL, KB_ERR_INVALID);
    rc = KB_ERR_AUTH;
    if (key == NULL || EVP_PKEY_eq(X509_get0_pubkey(leaf), key) != 1) {
        *why = "acm-pca: the certificate returned is not for the key this CA made";
        goto out;
    }
    if (X509_check_issued(ca_cert, leaf) != X509_V_OK ||
        X509_verify(leaf, X509_get0_pubkey(ca_cert)) != 1) {
        ERR_clear_error();
        *why = "acm-pca: the certificate returned is not signed by the CA certificate "
               "(GetCertificateAuthorityCertificate)";
        goto out;
    }
    KB_GUARD_OUT(rc, spiffe_bundle_set_new(&set));
    KB_GUARD_OUT(rc, spiffe_bundle_parse_pem(td, bundle_pem, strlen(bundle_pem), &b, &w));
    KB_GUARD_OUT(rc, spiffe_bundle_set_put(set, b));
    b = NULL;
    inter = chain ? sk_X509_dup(chain) : sk_X509_new_null();
    KB_ENSURE_OUT(rc, inter != NULL && sk_X509_unshift(inter, ca_cert) > 0, KB_ERR_NOMEM);
    for (int p = X509SVID_PURPOSE_CLIENT; p <= X509SVID_PURPOSE_SERVER; p++) {
        rc = x509svid_verify(set, leaf, inter, p, (time_t)now, &got, &w);
        if (rc != KB_OK) {
            snprintf(g_why, sizeof(g_why),
                     "acm-pca: the certificate returned is not a valid "
                     "X509-SVID: %s",
                     w ? w : "?");
            *why = g_why;
            goto out;
        }
    }
    rc = KB_ERR_AUTH;
    if (strcmp(spiffe_id_str(&got), spiffe_id_str(id)) != 0) {
        *why = "acm-pca: the certificate returned names another SPIFFE ID than the one requested";
        goto out;
    }
    if (!names_match(leaf, sans)) {
        *why = "acm-pca: the certificate returned carries other DNS/IP names than requested";
        goto out;
    }
    {
        const ASN1_TIME *t = X509_get0_notAfter(leaf);
        struct tm tm;
        if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 ||
            (na = timegm(&tm)) > (time_t)(not_after + CA_PCA_NOT_AFTER_SLACK) ||
            na <= (time_t)now) {
            *why = "acm-pca: the certificate returned does not have the validity requested";
            goto out;
        }
    }
    *why = NULL;
    *out = leaf;
    leaf = NULL;
    rc = KB_OK;
out:
    sk_X509_free(inter);
    spiffe_bundle_free(b);
    spiffe_bundle_set_free(set);
    X509_free(leaf);
    BIO_free(m);
    return rc;
}

/* ---- calls ---------------------------------------------------------------------------------- */

typedef struct {
    kb_awsreq_cfg cfg;
    kb_aws_creds creds;
} pca_conn;

static kb_err conn_open(ca_pca *p, pca_conn *c, const char **why)
{
    kb_err rc;

    memset(c, 0, sizeof(*c));
    rc = ca_creds_load(p->credentials_file, &c->creds);
    if (rc != KB_OK) {
        *why = "acm-pca: no usable AWS credentials ([aws] credentials_file, 0600: ACCESS_KEY_ID "
               "SECRET_ACCESS_KEY [SESSION_TOKEN], or AWS_* variables)";
        return rc;
    }
    if (p->role_arn != NULL) {
        char acct[13];
        ca_assume_cfg ac = {p->role_arn, p->external_id, p->sts_endpoint, p->region};
        rc = p->ca_arn ? ca_pca_arn_account(p->ca_arn, acct) : KB_ERR_CONFIG;
        if (rc == KB_OK)
            rc = ca_assume_creds(&ac, acct, (int64_t)time(NULL), &c->creds, why);
        else
            *why = "acm-pca: role_arn needs the CA's account ([acm_pca] ca_arn)";
        if (rc != KB_OK) {
            kb_aws_creds_free(&c->creds);
            return rc;
        }
    }
    c->cfg.endpoint = p->endpoint;
    c->cfg.region = p->region;
    c->cfg.service = "acm-pca";
    c->cfg.access_key_id = c->creds.access_key_id;
    c->cfg.secret_key = c->creds.secret_key;
    c->cfg.session_token = c->creds.session_token;
    c->cfg.ca_file = p->ca_file;
    c->cfg.timeout_ms = p->timeout_ms;
    return KB_OK;
}

/* What an answer means for the caller's loop. */
enum { ANS_OK, ANS_RETRY, ANS_PENDING, ANS_FAIL };

/* One call. ANS_OK: resp holds a 200 answer. Otherwise *rc and *why say what happened. */
static int call(pca_conn *c, const char *op, const char *body, kb_dbuf *resp, kb_err *rc,
                const char **why)
{
    char target[KB_AWSREQ_MAX_TARGET], code[CA_PCA_ERROR_MAX + 1];
    long status = 0;

    kb_dbuf_reset(resp);
    snprintf(target, sizeof(target), TARGET_PREFIX "%s", op);
    *rc = kb_awsreq_call(&c->cfg, target, body, strlen(body), &status, resp);
    if (*rc == KB_ERR_TOO_LARGE) {
        *why = why_fmt(op, "answer larger than the limit");
        return ANS_FAIL;
    }
    if (*rc == KB_ERR_TIMEOUT || *rc == KB_ERR_UNAVAILABLE) {
        *why = why_fmt(op, *rc == KB_ERR_TIMEOUT ? "timed out" : "endpoint unreachable");
        return ANS_RETRY;
    }
    if (*rc != KB_OK) {
        *why = why_fmt(op, kb_err_str(*rc));
        return ANS_FAIL;
    }
    if (status == 200)
        return ANS_OK;
    if (ca_pca_parse_error(resp->p, resp->len, code) != KB_OK)
        snprintf(code, sizeof(code), "HTTP %ld", status);
    *why = why_fmt(op, code);
    if (strcmp(code, "RequestInProgressException") == 0)
        return ANS_PENDING;
    if (strcmp(code, "ThrottlingException") == 0 || strcmp(code, "ServiceUnavailable") == 0 ||
        strcmp(code, "InternalFailure") == 0 || status >= 500) {
        *rc = KB_ERR_UNAVAILABLE;
        return ANS_RETRY;
    }
    *rc = KB_ERR_DENIED; /* AccessDenied, InvalidArn, InvalidState, MalformedCSR, ... */
    return ANS_FAIL;
}

static uint32_t rnd32(void)
{
    uint32_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = 0x80000000u;
    return v;
}

/* Wait before retry `attempt` (0 = first): first_ms doubling up to cap_ms, plus up to half of
 * it at random (so a fleet that was throttled together does not come back together). 0 if the
 * wait would pass the deadline. */
static int wait_retry(int attempt, long first_ms, long cap_ms, double deadline)
{
    double w = (double)first_ms / 1000.0;

    for (int i = 0; i < attempt && w * 1000.0 < (double)cap_ms; i++)
        w *= 2;
    if (w * 1000.0 > (double)cap_ms)
        w = (double)cap_ms / 1000.0;
    w += w * 0.5 * ((double)rnd32() / 4294967296.0);
    if (mono_s() + w > deadline)
        return 0;
    sleep_s(w);
    return 1;
}

/* The pacer: IssueCertificate calls at least interval_s apart, across threads. 0 if the slot
 * would come after the deadline (nothing reserved). */
static int pace(ca_pca *p, double deadline)
{
    double now = mono_s(), slot;

    pthread_mutex_lock(&p->mu);
    slot = p->next_slot > now ? p->next_slot : now;
    if (slot > deadline) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    p->next_slot = slot + p->interval_s;
    pthread_mutex_unlock(&p->mu);
    sleep_s(slot - now);
    return 1;
}

/* Call op until it answers (retrying throttling, 5xx and timeouts; polling while in progress
 * when poll is set) or the deadline passes. */
static kb_err call_retry(ca_pca *p, pca_conn *c, const char *op, const char *body, int poll,
                         int paced, double deadline, kb_dbuf *resp, const char **why)
{
    int retries = 0, polls = 0;
    kb_err rc = KB_OK;

    for (;;) {
        int a;
        if (paced && !pace(p, deadline)) {
            /* after failed attempts, the deadline is theirs, not the pacer's */
            *why = why_fmt(op, retries > 0 ? "still throttled or unavailable at the deadline"
                                           : "deadline passed waiting for the issue rate "
                                             "([acm_pca] issue_rate)");
            return KB_ERR_TIMEOUT;
        }
        a = call(c, op, body, resp, &rc, why);
        if (a == ANS_OK)
            return KB_OK;
        if (a == ANS_FAIL)
            return rc;
        if (a == ANS_PENDING && !poll) {
            *why = why_fmt(op, "unexpected RequestInProgressException");
            return KB_ERR_INVALID;
        }
        if (a == ANS_PENDING
                ? !wait_retry(polls++, CA_PCA_POLL_FIRST_MS, CA_PCA_POLL_CAP_MS, deadline)
                : !wait_retry(retries++, RETRY_FIRST_MS, RETRY_CAP_MS, deadline)) {
            kb_log(KB_LOG_WARN, "acm_pca_deadline", "op", op, "last", *why, NULL);
            *why = why_fmt(op, a == ANS_PENDING ? "certificate still not ready at the deadline"
                                                : "still throttled or unavailable at the deadline");
            return KB_ERR_TIMEOUT;
        }
    }
}

kb_err ca_pca_get_ca_certificate(ca_pca *p, const char *arn, char **cert_pem, char **chain_pem,
                                 const char **why)
{
    static const char op[] = "GetCertificateAuthorityCertificate";
    double deadline = mono_s() + (double)p->deadline_ms / 1000.0;
    json_t *req = NULL;
    char *body = NULL;
    pca_conn c;
    kb_dbuf resp;
    kb_err rc;

    *cert_pem = NULL;
    *chain_pem = NULL;
    if (arn == NULL || !arn_ok(arn)) {
        *why = "acm-pca: no CA ARN ([acm_pca] ca_arn)";
        return KB_ERR_CONFIG;
    }
    KB_GUARD(conn_open(p, &c, why));
    kb_dbuf_init(&resp, CA_PCA_RESP_MAX);
    req = json_pack("{s:s}", "CertificateAuthorityArn", arn);
    body = req ? kb_json_dump(req) : NULL;
    KB_ENSURE_OUT(rc, body != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, call_retry(p, &c, op, body, 0, 0, deadline, &resp, why));
    rc = ca_pca_parse_cert(resp.p, resp.len, cert_pem, chain_pem);
    if (rc != KB_OK)
        *why = why_fmt(op, "malformed answer (want Certificate: one PEM certificate, "
                           "CertificateChain: PEM certificates)");
out:
    kb_json_free_str(body);
    json_decref(req);
    kb_dbuf_free(&resp);
    kb_aws_creds_free(&c.creds);
    return rc;
}

kb_err ca_pca_issue(ca_pca *p, const ca_pca_req *r, char **cert_pem, const char **why)
{
    double deadline = mono_s() + (double)p->deadline_ms / 1000.0;
    char token[CA_PCA_TOKEN_LEN + 1], arn[CA_PCA_ARN_MAX + 1];
    char *body = NULL, *gbody = NULL, *chain = NULL;
    json_t *g = NULL;
    uint8_t rnd[CA_PCA_TOKEN_LEN / 2];
    pca_conn c;
    kb_dbuf resp;
    kb_err rc;

    *cert_pem = NULL;
    *why = NULL;
    KB_ENSURE(RAND_bytes(rnd, sizeof(rnd)) == 1, KB_ERR_CRYPTO);
    kb_hex(rnd, sizeof(rnd), token);
    rc = ca_pca_issue_body(p, r, token, &body);
    if (rc != KB_OK) {
        *why = rc == KB_ERR_TOO_LARGE ? "acm-pca: the SPIFFE ID is longer than the 253 characters "
                                        "AWS Private CA takes in a URI SAN"
                                      : "acm-pca: cannot build the IssueCertificate request";
        return rc;
    }
    kb_dbuf_init(&resp, CA_PCA_RESP_MAX);
    rc = conn_open(p, &c, why);
    if (rc != KB_OK) {
        kb_dbuf_free(&resp);
        kb_json_free_str(body);
        return rc;
    }
    /* A retried IssueCertificate carries the same IdempotencyToken: one certificate. */
    KB_GUARD_OUT(rc, call_retry(p, &c, "IssueCertificate", body, 0, 1, deadline, &resp, why));
    rc = ca_pca_parse_issue(resp.p, resp.len, arn);
    if (rc != KB_OK) {
        *why = why_fmt("IssueCertificate", "malformed answer (want CertificateArn)");
        goto out;
    }
    g = json_pack("{s:s, s:s}", "CertificateAuthorityArn", r->arn, "CertificateArn", arn);
    gbody = g ? kb_json_dump(g) : NULL;
    KB_ENSURE_OUT(rc, gbody != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, call_retry(p, &c, "GetCertificate", gbody, 1, 0, deadline, &resp, why));
    rc = ca_pca_parse_cert(resp.p, resp.len, cert_pem, &chain);
    if (rc != KB_OK)
        *why = why_fmt("GetCertificate", "malformed answer (want Certificate: one PEM "
                                         "certificate, CertificateChain: PEM certificates)");
out:
    free(chain);
    kb_json_free_str(body);
    kb_json_free_str(gbody);
    json_decref(g);
    kb_dbuf_free(&resp);
    kb_aws_creds_free(&c.creds);
    return rc;
}
