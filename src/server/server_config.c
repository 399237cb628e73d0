/* server_config.c - keybridged's configuration keys. */
#include "server_config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

const kb_config_key server_config_keys[] = {
    {"server", "listen", KB_CFG_STRING, "127.0.0.1:8443",
     "client and admin API address (mTLS); loopback by default"},
    {"server", "threads", KB_CFG_INT, "0", "event loops; 0 = one per CPU"},
    {"server", "cert_file", KB_CFG_PATH, NULL, "server SVID chain (PEM, leaf first)"},
    {"server", "key_file", KB_CFG_PATH, NULL, "server SVID private key (PEM, 0600)"},
    {"server", "bundle_file", KB_CFG_PATH, NULL, "trust bundle (PEM roots) for client SVIDs"},
    {"server", "trust_domain", KB_CFG_STRING, NULL,
     "the only trust domain whose clients are accepted"},
    {"server", "max_body_bytes", KB_CFG_INT, "1048576", "largest request body"},
    {"server", "max_header_bytes", KB_CFG_INT, "16384", "largest request header block"},
    {"server", "timeout", KB_CFG_DURATION, "10s", "read/write/idle timeout per connection"},
    {"server", "max_connections", KB_CFG_INT, "4096", "connection cap across all loops"},
    {"server", "handshake_timeout", KB_CFG_DURATION, "5s",
     "deadline for a new connection's TLS handshake (the request timeout starts after it)"},
    {"server", "max_handshakes", KB_CFG_INT, "1024",
     "connections mid-handshake at once (at most max_connections); past it the oldest is closed"},
    {"server", "metrics_listen", KB_CFG_STRING, "127.0.0.1:9464",
     "Prometheus metrics address (plain HTTP, loopback only); empty disables"},
    {"store", "url", KB_CFG_STRING, "sqlite:/var/lib/keybridge/keybridged.db",
     "database: sqlite:PATH, or a libpq URI postgresql://USER@HOST:PORT/DB?passfile=PATH"
     "&sslmode=verify-full (password only in a 0600 passfile; run `keybridged migrate` first)"},
    {"store", "max_content_bytes", KB_CFG_INT, "65536",
     "largest secret content; cloud-synced secrets are capped at 65536 whatever this says"},
    {"store", "integrity_check_interval", KB_CFG_DURATION, "60s",
     "how often the whole database is checked against its committed state (rollback and "
     "replayed rows; also on SIGHUP); 0 = only at start-up and on SIGHUP"},
    {"hsm", "keystore", KB_CFG_STRING, "pkcs11",
     "pkcs11 (production) or file (development only, chosen explicitly)"},
    {"hsm", "module", KB_CFG_PATH, "/usr/lib/softhsm/libsofthsm2.so", "PKCS#11 module"},
    {"hsm", "token_label", KB_CFG_STRING, "keybridge", "PKCS#11 token label"},
    {"hsm", "key_label", KB_CFG_STRING, "keybridge-master", "master key label in the token"},
    {"hsm", "pin_file", KB_CFG_SECRET_FILE, NULL, "file holding the token user PIN (0600)"},
    {"hsm", "key_file", KB_CFG_SECRET_FILE, NULL,
     "development keystore file (0600), used only with keystore = file"},
    {"clients", "cloud_prefixes", KB_CFG_STRING, "/lambda/",
     "comma-separated SPIFFE ID path prefixes that make a client a cloud client"},
    {"audit", "anchor_every_rows", KB_CFG_INT, "1000", "sign the audit chain head every N rows"},
    {"audit", "anchor_every", KB_CFG_DURATION, "5m", "... or at least this often"},
    {"audit", "anchor_file", KB_CFG_PATH, NULL,
     "where to export the latest signed chain head (keep a copy elsewhere)"},
    {"hsm_budget", "global_rate", KB_CFG_STRING, "0",
     "token (HSM) operations per second for the whole server (unwraps for reads, wraps for "
     "writes; decimal, e.g. 0.5); 0 = no global bucket"},
    {"hsm_budget", "global_burst", KB_CFG_INT, "0", "global bucket size (tokens)"},
    {"hsm_budget", "cloud_rate", KB_CFG_STRING, "500",
     "token operations per second for all cloud clients together; keep cloud_rate + dc_rate <= "
     "global_rate so a cloud herd cannot starve the data center; 0 = off"},
    {"hsm_budget", "cloud_burst", KB_CFG_INT, "1000", "cloud bucket size"},
    {"hsm_budget", "dc_rate", KB_CFG_STRING, "0",
     "token operations per second for all data-center clients (and admins) together; 0 = off"},
    {"hsm_budget", "dc_burst", KB_CFG_INT, "0", "data-center bucket size"},
    {"hsm_budget", "client_rate", KB_CFG_STRING, "0",
     "token operations per second for each client (SPIFFE ID); 0 = off"},
    {"hsm_budget", "client_burst", KB_CFG_INT, "0",
     "per-client bucket size (1000 lets a client fetch one full batch at once)"},
    {"hsm_budget", "max_clients", KB_CFG_INT, "100000",
     "per-client buckets tracked at once (idle ones are dropped first)"},
    {"hsm_budget", "cache_ttl", KB_CFG_DURATION, "60s",
     "how long an unwrapped data key stays in locked memory (0 disables the cache; at most 1h)"},
    {"hsm_budget", "cache_max_entries", KB_CFG_INT, "4096",
     "data keys cached at most (32 bytes of locked memory each; at most 65536)"},
    {"fairness", "max_connections_per_client", KB_CFG_INT, "256",
     "open connections one SPIFFE ID may hold (counted from its first request); 0 = no cap"},
    {"fairness", "requests_per_second", KB_CFG_INT, "0",
     "requests per second one SPIFFE ID may send (429 + Retry-After beyond); 0 = no cap"},
    {"fairness", "request_burst", KB_CFG_INT, "0",
     "burst of requests one SPIFFE ID may send above its rate"},
    {"fairness", "max_tracked", KB_CFG_INT, "100000",
     "SPIFFE IDs tracked at once (idle ones are dropped first)"},
    {"notify", "url", KB_CFG_STRING, NULL,
     "expiry webhook (JSON with a Slack-compatible \"text\"): https://, or http:// to loopback "
     "only; unset = no webhook (the expiry gauges still work)"},
    {"notify", "ca_file", KB_CFG_PATH, NULL,
     "PEM trust anchors for the webhook's server certificate; unset = the system store"},
    {"notify", "windows", KB_CFG_STRING, "30d,7d,1d",
     "comma-separated windows before expiry (1..8, each at most 366d): one webhook per secret "
     "version per window"},
    {"notify", "interval", KB_CFG_DURATION, "1h", "how often the notifier scans (at least 1s)"},
    {"notify", "timeout", KB_CFG_DURATION, "10s", "deadline for one webhook attempt (1s..5m)"},
    {"notify", "attempts", KB_CFG_INT, "5",
     "attempts per webhook in one scan (1..20); a notification that failed them all is tried "
     "again at the next scan"},
    {"notify", "backoff", KB_CFG_DURATION, "2s",
     "wait before the first retry, doubled after each failure (capped at 5m)"},
    {"console", "listen", KB_CFG_STRING, "",
     "web console address (HTTPS with the server certificate, no client certificate; "
     "docs/console.md); empty = no console"},
    {"console", "url", KB_CFG_STRING, NULL,
     "the console's base URL printed by `keybridge console login` (no trailing slash); unset = "
     "https://<listen host>:<port>"},
    {"console", "login_ttl", KB_CFG_DURATION, "60s",
     "how long a one-time login URL stays valid (1s..1d)"},
    {"console", "session_ttl", KB_CFG_DURATION, "15m",
     "how long a console session lives, from login (1s..1d; not extended by use)"},
    {"log", "level", KB_CFG_STRING, "info", "debug, info, warn or error"},
    {NULL, NULL, 0, NULL, NULL},
};

kb_err server_config_list(const char *csv, char ***out)
{
    char **list;
    size_t n = 0;
    const char *p = csv ? csv : "";

    KB_ENSURE_REF(out);
    *out = NULL;
    list = calloc(65, sizeof(char *));
    KB_ENSURE(list != NULL, KB_ERR_NOMEM);
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        while (len > 0 && isspace((unsigned char)*s)) {
            s++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)s[len - 1]))
            len--;
        if (len > 0) {
            if (n == 64) {
                server_config_list_free(list);
                return KB_ERR_TOO_LARGE;
            }
            list[n] = strndup(s, len);
            if (list[n] == NULL) {
                server_config_list_free(list);
                return KB_ERR_NOMEM;
            }
            n++;
        }
        p = end ? end + 1 : p + strlen(p);
    }
    *out = list;
    return KB_OK;
}

void server_config_list_free(char **list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; list[i]; i++)
        free(list[i]);
    free(list);
}
