/* sync_config.c - keybridge-sync's configuration keys and the checks of their values, in one
 * place (docs/configuration.md is generated from the table). */
#include "sync_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const kb_config_key sync_config_keys[] = {
    {"source", "url", KB_CFG_STRING, NULL,
     "keybridged base URL (https://host:port), required; or a comma-separated list of replicas "
     "(at most 8), tried in order from a per-client offset, failing over on connection errors "
     "and 502/503/504 (docs/failover.md)"},
    {"source", "server_id", KB_CFG_STRING, NULL,
     "keybridged's SPIFFE ID, pinned (required): any other server identity is refused"},
    {"source", "svid_cert_file", KB_CFG_PATH, NULL, "our X509-SVID chain (svid.pem, leaf first)"},
    {"source", "svid_key_file", KB_CFG_PATH, NULL, "our SVID private key (svid.key, 0600)"},
    {"source", "bundle_file", KB_CFG_PATH, NULL, "trust bundle for the server (bundle.pem)"},
    {"source", "svid_secret_id", KB_CFG_STRING, NULL,
     "instead of files: Secrets Manager secret with SPIRE SVIDStore JSON (read from the first "
     "sink region and endpoint)"},
    {"source", "timeout", KB_CFG_DURATION, "30s", "per request to keybridged"},
    {"run", "deadline", KB_CFG_DURATION, "60s",
     "time limit of one run, retries after 429/503 and deferred names included (0: none; "
     "on Lambda the invocation's deadline)"},
    {"sink", "target", KB_CFG_STRING, NULL, "dir:/path/to/dir or secretsmanager (required)"},
    {"sink", "regions", KB_CFG_STRING, NULL,
     "secretsmanager: comma-separated regions written from one fetch (default $AWS_REGION)"},
    {"sink", "endpoint", KB_CFG_STRING, NULL,
     "secretsmanager: endpoint override, e.g. http://127.0.0.1:4566 ({region} is replaced), "
     "or a comma-separated list, one per region"},
    {"sink", "ca_file", KB_CFG_PATH, NULL, "secretsmanager: PEM CA file for the endpoint"},
    {"sink", "timeout", KB_CFG_DURATION, "30s",
     "secretsmanager: per call, cut to what is left of the run's deadline"},
    {"sink", "rate", KB_CFG_INT, "20",
     "secretsmanager: most CreateSecret, PutSecretValue, TagResource, DeleteSecret, "
     "RestoreSecret and GetResourcePolicy calls per second per region (AWS: 50/s per account "
     "and region, shared; 0: unpaced, max 1000)"},
    {"sink", "delete_policy", KB_CFG_STRING, "delete",
     "delete (7-day recovery window) or retain (never delete)"},
    {"sink", "max_delete_fraction", KB_CFG_STRING, "0.10",
     "largest share of managed secrets one run may delete (0..1)"},
    {"sink", "owners", KB_CFG_STRING, "", "dir: comma-separated users files may be owned by"},
    {"sink", "groups", KB_CFG_STRING, "", "dir: comma-separated groups files may belong to"},
    {"daemon", "interval", KB_CFG_INT, "15", "minutes between runs (divides 60)"},
    {"daemon", "listen", KB_CFG_STRING, "127.0.0.1:9477", "local /status, /metrics, POST /sync"},
    {"daemon", "stale_after", KB_CFG_DURATION, "0",
     "/status answers 503 when the last success is older (0: 3 intervals)"},
    {"log", "level", KB_CFG_STRING, "info", "debug, info, warn or error"},
    {NULL, NULL, 0, NULL, NULL},
};

int sync_interval_ok(int64_t minutes)
{
    return minutes >= 1 && minutes <= 60 && 60 % minutes == 0;
}

kb_err sync_config_interval(const kb_config *cfg, int *minutes)
{
    int64_t v = kb_config_int(cfg, "daemon", "interval");
    KB_ENSURE(sync_interval_ok(v), KB_ERR_CONFIG);
    *minutes = (int)v;
    return KB_OK;
}

kb_err sync_config_fraction(const char *s, double *out)
{
    char *end;
    double d;
    errno = 0;
    d = strtod(s, &end);
    KB_ENSURE(errno == 0 && end != s && *end == '\0' && d >= 0.0 && d <= 1.0, KB_ERR_CONFIG);
    *out = d;
    return KB_OK;
}

/* Split a comma list into dst (pointers into buf). */
size_t sync_config_split(char *buf, const char **dst, size_t max)
{
    size_t n = 0;
    char *p = buf;
    while (p && *p && n < max) {
        char *c = strchr(p, ',');
        if (c)
            *c = '\0';
        while (*p == ' ')
            p++;
        if (*p)
            dst[n++] = p;
        p = c ? c + 1 : NULL;
    }
    dst[n] = NULL;
    return n;
}

/* The endpoint for region i: one of a comma list (one per region), or a template where
 * {region} is replaced, or NULL (AWS's regional endpoint). */
const char *sync_config_endpoint(const char *endpoint, size_t i, size_t nreg, const char *region,
                                 char *buf, size_t len)
{
    const char *r;
    if (endpoint == NULL || endpoint[0] == '\0')
        return NULL;
    if (strchr(endpoint, ',') != NULL) {
        size_t k;
        char tmp[1024];
        const char *eps[SYNC_MAX_REGIONS + 1];
        snprintf(tmp, sizeof(tmp), "%s", endpoint);
        k = sync_config_split(tmp, eps, SYNC_MAX_REGIONS);
        if (k != nreg || i >= k)
            return "";
        snprintf(buf, len, "%s", eps[i]);
        return buf;
    }
    r = strstr(endpoint, "{region}");
    if (r)
        snprintf(buf, len, "%.*s%s%s", (int)(r - endpoint), endpoint, region, r + 8);
    else
        snprintf(buf, len, "%s", endpoint);
    return buf;
}
