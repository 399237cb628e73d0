/* ca_config.c - keybridge-ca's configuration keys and the checks of their values, in one place
 * (docs/configuration.md is generated from the table). */
#include "ca_config.h"

#include <stdio.h>
#include <string.h>

#include "ca.h"
#include "ca_store.h"
#include "lib/httpd.h"

const kb_config_key ca_config_keys[] = {
    {"ca", "trust_domain", KB_CFG_STRING, NULL, "trust domain, e.g. example.org (init)"},
    {"ca", "db", KB_CFG_PATH, "keybridge-ca.db", "SQLite database file (unless store_url)"},
    {"ca", "store_url", KB_CFG_STRING, NULL,
     "PostgreSQL database (postgresql://user@host:port/db?sslmode=verify-full; libpq URI or "
     "connection string, no password) shared by several CA replicas; replaces db"},
    {"ca", "store_passfile", KB_CFG_PATH, NULL,
     "0600 libpq password file for store_url (or ~/.pgpass; never a password in the URL or "
     "PGPASSWORD)"},
    {"ca", "key", KB_CFG_STRING, "pkcs11",
     "where CA keys live: pkcs11 (default), file (dev), or acm-pca (AWS Private CA signs; "
     "[acm_pca])"},
    {"ca", "key_dir", KB_CFG_PATH, NULL, "directory for 0600 dev key files (key = file)"},
    {"ca", "ca_ttl", KB_CFG_DURATION, "365d", "lifetime of a root CA made by init/rotate"},
    {"ca", "default_ttl", KB_CFG_DURATION, "1h", "default SVID lifetime"},
    {"pkcs11", "module", KB_CFG_PATH, "/usr/lib/softhsm/libsofthsm2.so", "PKCS#11 module"},
    {"pkcs11", "token", KB_CFG_STRING, "keybridge", "token label"},
    {"pkcs11", "pin_file", KB_CFG_SECRET_FILE, NULL, "0600 file holding the user PIN"},
    {"pkcs11", "key_label", KB_CFG_STRING, "keybridge-ca", "prefix of CA key labels"},
    {"policy", "file", KB_CFG_PATH, NULL, "registration policy (JSON, docs/keybridge-ca.md)"},
    {"server", "listen", KB_CFG_STRING, "127.0.0.1:8444", "mTLS API address:port"},
    {"server", "threads", KB_CFG_INT, "2", "event loops"},
    {"server", "bundle_listen", KB_CFG_STRING, NULL,
     "address:port of the SPIFFE federation bundle endpoint (GET /v1/bundle, https_spiffe, "
     "no client certificate asked); unset: not served"},
    {"server", "svid_dir", KB_CFG_PATH, NULL,
     "directory where the CA keeps its own server SVID (svid.pem, svid.key, bundle.pem)"},
    {"server", "svid_ttl", KB_CFG_DURATION, "1h",
     "lifetime of the CA's own server SVID (renewed at half of it; 30s..30d)"},
    {"server", "spiffe_id", KB_CFG_STRING, NULL,
     "the CA's own ID (default spiffe://TD/keybridge-ca)"},
    {"server", "svid_dns", KB_CFG_STRING, NULL,
     "comma-separated DNS SANs of the CA's own server SVID (allowed by the policy's "
     "server_names), for clients that check a host name"},
    {"server", "svid_ip", KB_CFG_STRING, NULL,
     "comma-separated IP SANs of the CA's own server SVID (allowed by server_names)"},
    {"renew", "tick", KB_CFG_DURATION, "1s", "how often the daemon looks for due renewals"},
    {"renew", "lease", KB_CFG_DURATION, "60s",
     "how long a replica's claim on due renewals lasts; a dead replica's claims are retaken "
     "after it (longer than renewing 16 registrations takes)"},
    {"renew", "api_min_interval", KB_CFG_DURATION, "10s",
     "per-ID minimum interval between API renewals (0 = off, benchmarks only)"},
    {"aws", "region", KB_CFG_STRING, "us-east-1", "default Secrets Manager region"},
    {"aws", "endpoint", KB_CFG_STRING, NULL, "default Secrets Manager endpoint override"},
    {"aws", "credentials_file", KB_CFG_PATH, NULL,
     "default 0600 credentials file (unset: AWS_* environment variables)"},
    {"aws", "role_arn", KB_CFG_STRING, NULL,
     "Secrets Manager targets: assume this role (STS AssumeRole) with the credentials above and "
     "write with its temporary credentials; {account} is replaced by the target's account, e.g. "
     "arn:aws:iam::{account}:role/keybridge-ca-svid-store"},
    {"aws", "external_id", KB_CFG_STRING, NULL, "sts:ExternalId sent with role_arn (not a secret)"},
    {"aws", "sts_endpoint", KB_CFG_STRING, NULL,
     "STS endpoint override (default https://sts.<region>.amazonaws.com)"},
    {"acm_pca", "ca_arn", KB_CFG_STRING, NULL,
     "[ca] key = acm-pca: the AWS Private CA that signs (arn:aws:acm-pca:REGION:ACCOUNT:"
     "certificate-authority/ID; read by init and rotate prepare)"},
    {"acm_pca", "region", KB_CFG_STRING, NULL, "AWS Private CA region (default [aws] region)"},
    {"acm_pca", "endpoint", KB_CFG_STRING, NULL,
     "endpoint override (default https://acm-pca.<region>.amazonaws.com)"},
    {"acm_pca", "template_arn", KB_CFG_STRING, CA_PCA_TEMPLATE_DEFAULT,
     "IssueCertificate template: an APIPassthrough template, so the URI SAN and key usages "
     "come through"},
    {"acm_pca", "issue_rate", KB_CFG_INT, "5",
     "IssueCertificate calls per second at most, spaced evenly, for every issuance of this "
     "process (keep it below the account's quota: docs/internals/acm-pca.md)"},
    {"acm_pca", "timeout", KB_CFG_DURATION, "10s", "one AWS Private CA call"},
    {"acm_pca", "deadline", KB_CFG_DURATION, "60s",
     "one issuance: rate wait, IssueCertificate with its retries, GetCertificate polls"},
    {"acm_pca", "role_arn", KB_CFG_STRING, NULL,
     "assume this role (STS AssumeRole, {account} = the CA's account) with [aws] "
     "credentials_file's credentials before calling AWS Private CA"},
    {"acm_pca", "external_id", KB_CFG_STRING, NULL, "sts:ExternalId sent with role_arn"},
    {"acm_pca", "ca_file", KB_CFG_PATH, NULL,
     "PEM trust anchors for the endpoint's TLS (default: the system store)"},
    {"log", "level", KB_CFG_STRING, "info", "debug, info, warn or error"},
    {NULL, NULL, 0, NULL, NULL},
};

kb_err ca_config_key_kind(const kb_config *cfg, const char **kind, char *why, size_t len)
{
    const char *k = kb_config_str(cfg, "ca", "key");
    *kind = NULL;
    if (k == NULL || (strcmp(k, CA_KEY_PKCS11) != 0 && strcmp(k, CA_KEY_FILE) != 0 &&
                      strcmp(k, CA_KEY_ACM_PCA) != 0)) {
        snprintf(why, len, "[ca] key must be pkcs11, file or acm-pca");
        return KB_ERR_CONFIG;
    }
    *kind = k;
    return KB_OK;
}

kb_err ca_config_pca(const kb_config *cfg, ca_pca_opts *po, char *why, size_t len)
{
    memset(po, 0, sizeof(*po));
    po->ca_arn = kb_config_str(cfg, "acm_pca", "ca_arn");
    po->region = kb_config_str(cfg, "acm_pca", "region");
    if (po->region == NULL)
        po->region = kb_config_str(cfg, "aws", "region");
    po->endpoint = kb_config_str(cfg, "acm_pca", "endpoint");
    po->template_arn = kb_config_str(cfg, "acm_pca", "template_arn");
    po->credentials_file = kb_config_str(cfg, "aws", "credentials_file");
    po->role_arn = kb_config_str(cfg, "acm_pca", "role_arn");
    po->external_id = kb_config_str(cfg, "acm_pca", "external_id");
    po->sts_endpoint = kb_config_str(cfg, "aws", "sts_endpoint");
    po->ca_file = kb_config_str(cfg, "acm_pca", "ca_file");
    po->timeout_ms = (long)kb_config_duration(cfg, "acm_pca", "timeout") * 1000;
    po->deadline_ms = (long)kb_config_duration(cfg, "acm_pca", "deadline") * 1000;
    po->issue_rate = (double)kb_config_int(cfg, "acm_pca", "issue_rate");
    if (po->timeout_ms <= 0 || po->deadline_ms <= 0 || po->issue_rate < 1) {
        snprintf(why, len,
                 "[acm_pca] timeout and deadline must be at least 1s, issue_rate at "
                 "least 1");
        return KB_ERR_CONFIG;
    }
    return KB_OK;
}

/* [server] svid_dns / svid_ip: comma-separated names for the CA's own server SVID, so clients
 * that check a host name (curl, https_web-style federation clients) accept its listeners. */
static kb_err own_sans(const kb_config *cfg, ca_sans *sans, char *out, size_t len)
{
    static const char *const key[2] = {"svid_dns", "svid_ip"};
    char item[CA_DNS_NAME_MAX + 2];
    const char *why = NULL;

    memset(sans, 0, sizeof(*sans));
    for (int k = 0; k < 2; k++) {
        const char *p = kb_config_str(cfg, "server", key[k]);
        while (p != NULL && *p != '\0') {
            size_t n = strcspn(p, ","), b = 0, e = n;
            while (b < e && p[b] == ' ')
                b++;
            while (e > b && p[e - 1] == ' ')
                e--;
            if (e - b >= sizeof(item)) {
                snprintf(out, len, "[server] %s: an entry is too long", key[k]);
                return KB_ERR_CONFIG;
            }
            memcpy(item, p + b, e - b);
            item[e - b] = '\0';
            if ((k == 0 ? ca_sans_add_dns(sans, item, &why) : ca_sans_add_ip(sans, item, &why)) !=
                KB_OK) {
                snprintf(out, len, "[server] %s: '%s': %s", key[k], item, why);
                return KB_ERR_CONFIG;
            }
            p += n + (p[n] == ',');
        }
    }
    return KB_OK;
}

kb_err ca_config_serve(const kb_config *cfg, ca_serve_config *out, char *why, size_t len)
{
    int64_t threads = kb_config_int(cfg, "server", "threads");

    memset(out, 0, sizeof(*out));
    out->svid_dir = kb_config_str(cfg, "server", "svid_dir");
    out->own_id = kb_config_str(cfg, "server", "spiffe_id");
    out->listen = kb_config_str(cfg, "server", "listen");
    out->bundle_listen = kb_config_str(cfg, "server", "bundle_listen");
    out->svid_ttl = kb_config_duration(cfg, "server", "svid_ttl");
    out->tick = kb_config_duration(cfg, "renew", "tick");
    out->lease = kb_config_duration(cfg, "renew", "lease");
    out->api_min_interval = kb_config_duration(cfg, "renew", "api_min_interval");
    if (out->svid_dir == NULL) {
        snprintf(why, len, "[server] svid_dir is required");
        return KB_ERR_CONFIG;
    }
    if (out->svid_ttl < CA_MIN_SERVER_SVID_TTL || out->svid_ttl > CA_MAX_SERVER_SVID_TTL) {
        snprintf(why, len, "[server] svid_ttl must be between %ds and %dd", CA_MIN_SERVER_SVID_TTL,
                 CA_MAX_SERVER_SVID_TTL / 86400);
        return KB_ERR_CONFIG;
    }
    if (out->tick < 1 || out->lease < 1 || threads < 1 || threads > KB_HTTPD_MAX_THREADS) {
        snprintf(why, len, "[renew] tick and lease >= 1s, [server] threads 1..%d",
                 KB_HTTPD_MAX_THREADS);
        return KB_ERR_CONFIG;
    }
    out->threads = (int)threads;
    return own_sans(cfg, &out->sans, why, len);
}

kb_err ca_config_store(const kb_config *cfg, const char **where, const char **passfile, char *why,
                       size_t len)
{
    const char *url = kb_config_str(cfg, "ca", "store_url");

    *where = url != NULL ? url : kb_config_str(cfg, "ca", "db");
    *passfile = kb_config_str(cfg, "ca", "store_passfile");
    if (url != NULL && !ca_store_is_pg_url(url)) {
        snprintf(why, len, "[ca] store_url must be a postgresql:// URL");
        return KB_ERR_CONFIG;
    }
    if (url == NULL && *passfile != NULL) {
        snprintf(why, len, "[ca] store_passfile is for store_url (PostgreSQL) only");
        return KB_ERR_CONFIG;
    }
    if (*where == NULL) {
        snprintf(why, len, "[ca] db or store_url is required");
        return KB_ERR_CONFIG;
    }
    return KB_OK;
}
