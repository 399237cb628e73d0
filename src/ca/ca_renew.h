/* ca_renew.h - keeping registered SVIDs fresh in their targets (issue 5, points 3 and 4).
 *
 * Schedule (DESIGN.md "Identity"): an SVID of lifetime L expiring at E is renewed at
 *     min(E - f * L, E - availability - margin),  f uniform in [0.45, 0.55]
 * so renewal starts when a jittered 45-55 % of its life remains, or earlier when less than the
 * availability target (plus a margin of two ticks) would remain: when the CA stops, every stored
 * SVID still has at least its availability target to live. A bundle change (sequence above the
 * one last written) renews at once. Failures retry with exponential backoff (2 s doubling, at most
 * 5 min, never later than the availability deadline). The generation check (ca_store.h) runs just
 * before every write. With AWS Private CA as the signer, an issuance that times out or finds it
 * unavailable ends the pass's issuing: the other due registrations wait for the next pass rather
 * than each waiting out the same deadline (docs/internals/acm-pca.md).
 *
 * Several replicas (PostgreSQL store): a pass claims due registrations in batches of
 * CA_RENEW_CLAIM_BATCH under a lease ([renew] lease; ca_store_reg_claim), renews them, and
 * completes each in the write guard's transaction with its issued-log row (ca_store_reg_done):
 * each registration is renewed by one replica once per window, and a dead replica's claims are
 * retaken when their lease ends. A renewal whose lease was retaken meanwhile is dropped at the
 * guard (KB_ERR_CONFLICT), like one whose registration was removed.
 */
#ifndef KB_CA_RENEW_H
#define KB_CA_RENEW_H

#include <stdint.h>
#include <time.h>

#include "ca.h"
#include "ca_policy.h"
#include "ca_store.h"
#include "ca_target.h"

typedef struct ca_renewer ca_renewer;

typedef struct {
    ca_authority *ca;
    ca_store *st;
    const ca_policy *policy; /* re-checked before every renewal; NULL refuses everything */
    ca_target_env env;
    int64_t tick;      /* seconds between passes (margin for the availability target) */
    int force;         /* every registration is due at every pass (renew-once --force) */
    int64_t lease;     /* seconds a claim lasts (0: CA_RENEW_LEASE_DEFAULT) */
    const char *owner; /* this replica's lease id (NULL: host:pid:random, made once) */
} ca_renew_opts;

#define CA_RENEW_CLAIM_BATCH 16
#define CA_RENEW_LEASE_DEFAULT 60

KB_WUR kb_err ca_renewer_new(const ca_renew_opts *o, ca_renewer **out);
void ca_renewer_free(ca_renewer *r);

/* One pass: renew every registration that is due at now. *renewed and *failed count them. */
KB_WUR kb_err ca_renew_pass(ca_renewer *r, time_t now, int *renewed, int *failed);

/* Renew one registration now (reason for the audit: "new", "schedule", "bundle", ...).
 * KB_ERR_CONFLICT if it was removed while under way (nothing written). */
KB_WUR kb_err ca_renew_one(ca_renewer *r, const ca_reg *reg, const char *reason, time_t now);

/* When to renew an SVID valid [issued, not_after) with this availability target; rnd jitter. */
int64_t ca_renew_due(int64_t issued, int64_t not_after, int64_t avail, int64_t margin,
                     uint32_t rnd);

/* Stored SVIDs due now and not yet renewed (API renewals yield while it is > 0). */
int64_t ca_renew_backlog(ca_renewer *r);
/* Metrics: lowest remaining life (seconds) over stored SVIDs at the last pass (-1 if none),
 * total failures, total renewals. */
void ca_renew_metrics(ca_renewer *r, int64_t *min_remaining, uint64_t *failures,
                      uint64_t *renewals);

#endif
