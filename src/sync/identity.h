/* identity.h - the syncer's own X509-SVID and the trust bundle it verifies keybridged with.
 *
 * Two places (issue 6 point 1): files (svid.pem leaf first, svid.key PKCS#8, bundle.pem), as
 * `keybridge-ca issue` writes them, or a Secrets Manager secret holding SPIRE's SVIDStore JSON
 * ({"spiffeID" | "spiffeId", "x509SVID", "x509SVIDKey", "bundle", "federatedBundles"}), as
 * keybridge-ca keeps it fresh. The syncer loads it at the start of every run, so a rotated SVID
 * is picked up without a restart (daemon and Lambda modes). */
#ifndef KB_SYNC_IDENTITY_H
#define KB_SYNC_IDENTITY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lib/err.h"
#include "lib/spiffe_bundle.h"
#include "lib/x509svid.h"

/* Largest SVIDStore JSON document we accept. */
#define SYNC_SVIDSTORE_MAX ((size_t)256 * 1024)

typedef struct {
    x509svid *svid;             /* with its private key */
    spiffe_bundle_set *bundles; /* at least the server's trust domain */
    time_t not_after;           /* the leaf's expiry */
} sync_identity;

/* server_td: the trust domain whose bundle must be present (the pinned server_id's). */
KB_WUR kb_err sync_identity_from_files(const char *cert, const char *key, const char *bundle,
                                       const char *server_td, sync_identity *out, const char **why);
/* Parse SVIDStore JSON from memory (a secret's value; the caller wipes it). Federated bundles
 * (object trust domain -> PEM) are added to the set. */
KB_WUR kb_err sync_identity_from_svidstore(const void *json, size_t len, const char *server_td,
                                           sync_identity *out, const char **why);
void sync_identity_clear(sync_identity *id);

#endif
