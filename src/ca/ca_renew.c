/* ca_renew.c - the renewal engine (see ca_renew.h). */
#include "ca_renew.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "lib/log.h"

#define BACKOFF_MIN 2
#define BACKOFF_MAX 300
#define HOLD_MAX_MS 60000

struct ca_renewer {
    ca_renew_opts o;
    char owner[CA_OWNER_MAX];
    atomic_int_fast64_t backlog;
    atomic_int_fast64_t min_remaining;
    atomic_uint_fast64_t failures;
    atomic_uint_fast64_t renewals;
};

static uint32_t rnd32(void)
{
    uint32_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = 5000; /* the middle of the window */
    return v;
}

kb_err ca_renewer_new(const ca_renew_opts *o, ca_renewer **out)
{
    ca_renewer *r;

    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    r = calloc(1, sizeof(*r));
    KB_ENSURE(r != NULL, KB_ERR_NOMEM);
    r->o = *o;
    if (r->o.tick <= 0)
        r->o.tick = 1;
    if (r->o.lease <= 0)
        r->o.lease = CA_RENEW_LEASE_DEFAULT;
    if (o->owner != NULL) {
        snprintf(r->owner, sizeof(r->owner), "%s", o->owner);
    } else {
        /* host:pid:random - unique per process, so a restarted replica never mistakes a dead
         * one's claims for its own */
        char host[64] = "";
        (void)gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        snprintf(r->owner, sizeof(r->owner), "%s:%ld:%08x", host, (long)getpid(), rnd32());
    }
    r->o.owner = r->owner;
    atomic_init(&r->backlog, 0);
    atomic_init(&r->min_remaining, -1);
    atomic_init(&r->failures, 0);
    atomic_init(&r->renewals, 0);
    *out = r;
    return KB_OK;
}

void ca_renewer_free(ca_renewer *r)
{
    free(r);
}

int64_t ca_renew_due(int64_t issued, int64_t not_after, int64_t avail, int64_t margin, uint32_t rnd)
{
    int64_t life = not_after - issued;
    /* f in [0.45, 0.55] in steps of 1/10000 */
    int64_t f_e4 = 4500 + (int64_t)(rnd % 1001);
    int64_t t = not_after - life * f_e4 / 10000;
    int64_t by_avail = not_after - avail - margin;

    if (by_avail < t)
        t = by_avail;
    if (t < issued)
        t = issued; /* availability target >= lifetime: renew at every pass */
    return t;
}

/* Test hook (KB_CA_TEST_HOLD_DIR): announce "paused.<rid>" and wait while "hold" exists, between
 * issuing and the generation check, so a test can remove the registration deterministically. */
static void test_hold(int64_t rid)
{
    const char *d = getenv("KB_CA_TEST_HOLD_DIR");
    char p[1024], h[1024];
    struct stat st;
    FILE *f;

    if (d == NULL || d[0] == '\0')
        return;
    snprintf(p, sizeof(p), "%s/paused.%lld", d, (long long)rid);
    snprintf(h, sizeof(h), "%s/hold", d);
    if ((f = fopen(p, "w")) != NULL)
        fclose(f);
    for (int i = 0; i < HOLD_MAX_MS / 10 && stat(h, &st) == 0; i++)
        usleep(10000);
}

_Static_assert(CA_REG_SANS_MAX >= CA_SANS_STR_MAX, "reg.sans holds every SAN list");

/* ca_renew_one; *issue_rc gets the issuance's own result (KB_OK if it was not reached or
 * succeeded), so a pass can tell an unavailable signer from a failing target. */
static kb_err renew_one(ca_renewer *r, const ca_reg *reg, const char *reason, time_t now,
                        int leased, kb_err *issue_rc)
{
    char err[512];
    ca_sans sans;
    spiffe_id id;
    ca_target_spec t;
    ca_svid sv;
    const char *why = NULL;
    kb_err rc;
    int64_t next;

    memset(&sv, 0, sizeof(sv));
    KB_GUARD(spiffe_id_parse_str(reg->spiffe_id, &id, &why));
    KB_GUARD(ca_target_parse(reg->target, &t, &why));
    /* The policy may have changed since registration: it is checked before every issuance. */
    rc = ca_policy_check(r->o.policy, &id, &t, reg->ttl, reg->renewable, &why);
    if (rc != KB_OK) {
        kb_log(KB_LOG_WARN, "renewal_refused_by_policy", "spiffe_id", reg->spiffe_id, "target",
               reg->target, "why", why, NULL);
        return rc;
    }
    KB_GUARD(ca_sans_parse(reg->sans, &sans, &why));
    rc = ca_policy_check_sans(r->o.policy, &id, &sans, err, sizeof(err));
    if (rc != KB_OK) {
        kb_log(KB_LOG_WARN, "renewal_refused_by_policy", "spiffe_id", reg->spiffe_id, "target",
               reg->target, "why", err, NULL);
        return rc;
    }
    /* The target must be able to take the SVID before one is signed: a refused target (a
     * foreign secret, another key or account) is retried with backoff, and each retry would
     * otherwise sign and audit a certificate that is never delivered. */
    rc = ca_target_prepare(&r->o.env, reg, &why);
    if (rc != KB_OK) {
        kb_log(KB_LOG_WARN, "svid_target_refused", "spiffe_id", reg->spiffe_id, "target",
               reg->target, "err", kb_err_str(rc), "why", why ? why : "", NULL);
        return rc;
    }
    rc = ca_issue_sans_why(r->o.ca, &id, &sans, reg->ttl, NULL, reg->target, reason, &sv, &why);
    if (rc != KB_OK) {
        *issue_rc = rc;
        kb_log(KB_LOG_WARN, "svid_issue_failed", "spiffe_id", reg->spiffe_id, "target", reg->target,
               "err", kb_err_str(rc), "why", why ? why : "", NULL);
        return rc;
    }
    test_hold(reg->rid);
    rc = leased ? ca_store_write_begin_lease(r->o.st, reg->rid, r->owner)
                : ca_store_write_begin(r->o.st, reg->rid);
    if (rc == KB_ERR_CONFLICT) {
        kb_log(KB_LOG_INFO, "renewal_dropped", "spiffe_id", reg->spiffe_id, "target", reg->target,
               "why", "registration removed, or its lease retaken, while the renewal was under way",
               NULL);
        ca_svid_clear(&sv);
        return rc;
    }
    if (rc != KB_OK) {
        ca_svid_clear(&sv);
        return rc;
    }
    rc = ca_target_write(&r->o.env, reg, &sv, &why);
    next = ca_renew_due((int64_t)now, sv.not_after, reg->avail, 2 * r->o.tick, rnd32());
    if (rc == KB_OK) {
        /* the new state, the end of the lease and the issued-log row commit with the guard */
        ca_done d = {.rid = reg->rid,
                     .serial = sv.serial,
                     .reason = reason,
                     .owner = r->owner,
                     .not_after = sv.not_after,
                     .next_renew = next,
                     .bundle_seq = sv.bundle_seq,
                     .at = (int64_t)time(NULL)};
        rc = ca_store_reg_done(r->o.st, &d);
        if (rc != KB_OK)
            why = "the renewal could not be recorded";
    }
    {
        kb_err e = ca_store_write_end(r->o.st, rc == KB_OK);
        if (rc == KB_OK)
            rc = e;
    }
    if (rc != KB_OK) {
        kb_log(KB_LOG_WARN, "svid_write_failed", "spiffe_id", reg->spiffe_id, "target", reg->target,
               "err", kb_err_str(rc), "why", why ? why : "", NULL);
        ca_svid_clear(&sv);
        return rc;
    }
    atomic_fetch_add(&r->renewals, 1);
    ca_svid_clear(&sv);
    return rc;
}

kb_err ca_renew_one(ca_renewer *r, const ca_reg *reg, const char *reason, time_t now)
{
    kb_err issue_rc = KB_OK;
    return renew_one(r, reg, reason, now, 0, &issue_rc);
}

static const char *due_reason(const ca_renewer *r, const ca_reg *g, int64_t seq, time_t now)
{
    if (g->not_after == 0)
        return "new";
    if (g->bundle_seq < seq)
        return "bundle";
    if (g->next_renew <= (int64_t)now)
        return g->failures ? "retry" : "schedule";
    return r->o.force ? "forced" : NULL;
}

/* The registration with this rid in regs (sorted by rid), or NULL. */
static ca_reg *find_rid(ca_reg *regs, size_t n, int64_t rid)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (regs[mid].rid == rid)
            return &regs[mid];
        if (regs[mid].rid < rid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Renew one claimed registration and record the outcome; returns the renewal's result. */
static kb_err renew_claimed(ca_renewer *r, ca_reg *g, const char *reason, time_t now,
                            int *signer_down)
{
    kb_err irc = KB_OK, rc = renew_one(r, g, reason, now, 1, &irc);
    int64_t back = BACKOFF_MIN, f = g->failures + 1;

    if ((irc == KB_ERR_TIMEOUT || irc == KB_ERR_UNAVAILABLE) && ca_is_pca(r->o.ca)) {
        *signer_down = 1;
        kb_log(KB_LOG_WARN, "renewal_pass_cut_short", "why",
               "AWS Private CA unavailable: the other due renewals wait for the next pass", NULL);
    }
    if (rc == KB_OK || rc == KB_ERR_CONFLICT)
        return rc;
    for (int64_t k = 1; k < f && back < BACKOFF_MAX; k++)
        back *= 2;
    if (back > BACKOFF_MAX)
        back = BACKOFF_MAX;
    atomic_fetch_add(&r->failures, 1);
    if (ca_store_reg_retry(r->o.st, g->rid, r->owner, (int64_t)now + back, f) != KB_OK)
        kb_log(KB_LOG_WARN, "renewal_state_not_saved", "spiffe_id", g->spiffe_id, NULL);
    return rc;
}

kb_err ca_renew_pass(ca_renewer *r, time_t now, int *renewed, int *failed)
{
    ca_reg *regs = NULL, *batch = NULL;
    size_t n = 0, nb = 0, due = 0;
    int64_t seq = ca_bundle_sequence(r->o.ca), minrem = -1, cursor = 0;
    int signer_down = 0;
    kb_err rc = KB_OK;

    *renewed = 0;
    *failed = 0;
    /* the whole list: the backlog the API yields to, and the remaining-life metric */
    KB_GUARD(ca_store_reg_list(r->o.st, &regs, &n));
    for (size_t i = 0; i < n; i++)
        if (due_reason(r, &regs[i], seq, now) != NULL)
            due++;
    atomic_store(&r->backlog, (int64_t)due);
    /* claim due work in batches, rid ascending from a cursor: each registration at most once
     * per pass, and none that another replica holds */
    while (!signer_down) {
        ca_claim c = {.owner = r->owner,
                      .now = (int64_t)now,
                      .lease = r->o.lease,
                      .bundle_seq = seq,
                      .after_rid = cursor,
                      .max = CA_RENEW_CLAIM_BATCH,
                      .force = r->o.force};
        rc = ca_store_reg_claim(r->o.st, &c, &batch, &nb);
        if (rc != KB_OK || nb == 0)
            break;
        for (size_t i = 0; i < nb; i++) {
            ca_reg *g = &batch[i], *mine = find_rid(regs, n, g->rid);
            const char *reason = due_reason(r, g, seq, now);
            kb_err e;

            cursor = g->rid;
            if (reason == NULL)
                reason = "forced";
            if (signer_down) {
                /* AWS Private CA did not answer within its deadline: the rest stay due for the
                 * next pass (their leases end now) instead of each waiting out the deadline */
                if (ca_store_reg_retry(r->o.st, g->rid, r->owner, g->next_renew, g->failures) !=
                    KB_OK)
                    kb_log(KB_LOG_WARN, "renewal_state_not_saved", "spiffe_id", g->spiffe_id, NULL);
                (*failed)++;
                continue;
            }
            e = renew_claimed(r, g, reason, now, &signer_down);
            if (e == KB_OK) {
                (*renewed)++;
                if (mine != NULL && ca_store_reg_get(r->o.st, g->rid, mine) != KB_OK)
                    mine->not_after = 0;
            } else if (e != KB_ERR_CONFLICT) {
                (*failed)++;
            }
            if (atomic_load(&r->backlog) > 0)
                atomic_fetch_sub(&r->backlog, 1);
        }
        free(batch);
        batch = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (regs[i].not_after > 0) {
            int64_t rem = regs[i].not_after - (int64_t)now;
            if (minrem < 0 || rem < minrem)
                minrem = rem;
        }
    }
    atomic_store(&r->backlog, 0);
    atomic_store(&r->min_remaining, minrem);
    free(regs);
    return rc;
}

int64_t ca_renew_backlog(ca_renewer *r)
{
    return r ? atomic_load(&r->backlog) : 0;
}

void ca_renew_metrics(ca_renewer *r, int64_t *min_remaining, uint64_t *failures, uint64_t *renewals)
{
    if (min_remaining)
        *min_remaining = atomic_load(&r->min_remaining);
    if (failures)
        *failures = atomic_load(&r->failures);
    if (renewals)
        *renewals = atomic_load(&r->renewals);
}
