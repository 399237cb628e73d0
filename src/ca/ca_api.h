/* ca_api.h - keybridge-ca's mTLS API (issue 5, point 4):
 *
 *   POST /v1/svid/renew   body: a PEM CSR. The caller authenticates with its current SVID
 *                         (mTLS, X509-SVID rules against this CA's bundle). Allowed only for a
 *                         registration of the caller's ID marked renewable, only after a third
 *                         of the current certificate's lifetime has passed, at most once per
 *                         min_interval per ID, and only while no stored-SVID renewal is waiting
 *                         (those go first: 503 + Retry-After). Reply: {"spiffe_id", "svid" (PEM
 *                         chain), "bundle" (PEM), "expires_at"}.
 *   GET  /v1/bundle       SPIFFE bundle JWKS (spiffe_sequence, spiffe_refresh_hint);
 *                         ?format=pem or Accept: application/x-pem-file for PEM.
 *   GET  /metrics         Prometheus text: lowest remaining life, failures, renewals.
 *
 * The bundle alone is also served by ca_api_bundle_handler on [server] bundle_listen, a TLS
 * listener that requests no client certificate: SPIFFE federation's bundle endpoint
 * (SPIFFE_Federation.md 5.2.2, profile https_spiffe, endpoint ID = the CA's server SVID).
 */
#ifndef KB_CA_API_H
#define KB_CA_API_H

#include <stddef.h>
#include <time.h>

#include "ca.h"
#include "ca_renew.h"
#include "ca_store.h"
#include "lib/httpd.h"

typedef struct ca_api ca_api;

typedef struct {
    ca_authority *ca;
    ca_store *st;
    ca_renewer *renewer;  /* may be NULL */
    int64_t min_interval; /* per-ID seconds between renewals; 0 = off (benchmarks) */
    size_t max_ids;       /* IDs whose last renewal is remembered; 0 = CA_API_RENEW_IDS_DEFAULT */
} ca_api_opts;

/* The renewal interval per SPIFFE ID: a bounded table of last renewal times. At the bound, an ID
 * whose interval has passed is dropped first, else the one that renewed longest ago (which may
 * then renew again before its interval is over): a new ID is never refused for want of room. */
#define CA_API_RENEW_IDS_DEFAULT 100000
typedef struct ca_renew_rate ca_renew_rate;
KB_WUR kb_err ca_renew_rate_new(int64_t min_interval, size_t max_ids, ca_renew_rate **out);
void ca_renew_rate_free(ca_renew_rate *r);
/* 1 if id may renew at now (and records it), 0 if it renewed less than min_interval ago. */
int ca_renew_rate_take(ca_renew_rate *r, const char *id, time_t now);
size_t ca_renew_rate_count(ca_renew_rate *r);

KB_WUR kb_err ca_api_new(const ca_api_opts *o, ca_api **out);
void ca_api_free(ca_api *a);
/* Rebuild the verification bundle from the authority (after ca_reload reports a change). */
KB_WUR kb_err ca_api_refresh_bundle(ca_api *a);

#define CA_API_BUNDLE_PATH "/v1/bundle"

void ca_api_handler(kb_http_req *req, void *arg);
/* GET /v1/bundle only (404 elsewhere, 405 for other methods): the federation listener. */
void ca_api_bundle_handler(kb_http_req *req, void *arg);
/* verify_peer for kb_httpd_opts (arg = the ca_api). */
int ca_api_verify_peer(void *arg, X509 *leaf, STACK_OF(X509) * chain, char *id, size_t id_len,
                       const char **why);

#endif
