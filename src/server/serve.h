/* serve.h - `keybridged serve`: configuration → service → HTTPS/mTLS listener → api_handle.
 *
 * Peers are verified as X509-SVIDs (x509svid.h) against the trust bundle of [server]
 * trust_domain only; each request re-checks that the certificate is unexpired and (through
 * api_handle → svc_client_auth) that the client is known and enabled. SIGHUP, or a change of the
 * certificate, key or bundle files (polled every second), reloads them without dropping
 * connections; a bundle whose spiffe_sequence goes backwards is refused. SIGTERM/SIGINT stop.
 * Prometheus metrics are served on [server] metrics_listen (plain HTTP, loopback only).
 */
#ifndef KB_SERVER_SERVE_H
#define KB_SERVER_SERVE_H

#include "lib/config.h"

/* The `serve` subcommand (kb_subcmd_fn). Blocks until stopped; returns an exit code. */
int serve_main(const kb_config *cfg, int argc, char **argv);

#endif
