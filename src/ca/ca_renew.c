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
    atomic_int_fast64_t backlog;
    atomic_int_fast64_t min_remaining;
    atomic_uint_fast64_t failures;
    atomic_uint_fast64_t renewals;
};

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

static uint32_t rnd32(void)
{
    uint32_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = 5000; /* the middle of the window */
    return v;
}

_Static_assert(CA_REG_SANS_MAX >= CA_SANS_STR_MAX, "reg.sans holds every SAN list");

/* ca_renew_one; *issue_rc gets the issuance's own result (KB_OK if it was not reached or
 * succeeded), so a pass can tell an unavailable signer from a failing target. */
static kb_err renew_one(ca_renewer *r, const ca_reg *reg, const char *reason, time_t now,
                        kb_err *issue_rc)
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
    rc = ca_store_write_begin(r->o.st, reg->rid);
    if (rc == KB_ERR_CONFLICT) {
        kb_log(KB_LOG_INFO, "renewal_dropped", "spiffe_id", reg->spiffe_id, "target", reg->target,
               "why", "registration removed while the renewal was under way", NULL);
        ca_svid_clear(&sv);
        return rc;
    }
    if (rc != KB_OK) {
        ca_svid_clear(&sv);
        return rc;
    }
    rc = ca_target_write(&r->o.env, reg, &sv, &why);
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
    next = ca_renew_due((int64_t)now, sv.not_after, reg->avail, 2 * r->o.tick, rnd32());
    rc = ca_store_reg_set_state(r->o.st, reg->rid, sv.not_after, next, 0, sv.bundle_seq);
    atomic_fetch_add(&r->renewals, 1);
    ca_svid_clear(&sv);
    return rc;
}

kb_err ca_renew_one(ca_renewer *r, const ca_reg *reg, const char *reason, time_t now)
{
    kb_err issue_rc = KB_OK;
    return renew_one(r, reg, reason, now, &issue_rc);
}

kb_err ca_renew_pass(ca_renewer *r, time_t now, int *renewed, int *failed)
{
    ca_reg *regs = NULL;
    size_t n = 0, due = 0;
    int64_t seq = ca_bundle_sequence(r->o.ca), minrem = -1;
    int signer_down = 0;
    kb_err rc;

    *renewed = 0;
    *failed = 0;
    KB_GUARD(ca_store_reg_list(r->o.st, &regs, &n));
    for (size_t i = 0; i < n; i++)
        if (r->o.force || regs[i].not_after == 0 || regs[i].next_renew <= (int64_t)now ||
            regs[i].bundle_seq < seq)
            due++;
    atomic_store(&r->backlog, (int64_t)due);
    for (size_t i = 0; i < n; i++) {
        ca_reg *g = &regs[i];
        const char *reason;
        int64_t rem;

        if (g->not_after == 0)
            reason = "new";
        else if (g->bundle_seq < seq)
            reason = "bundle";
        else if (g->next_renew <= (int64_t)now)
            reason = g->failures ? "retry" : "schedule";
        else if (r->o.force)
            reason = "forced";
        else
            reason = NULL;
        if (reason != NULL && signer_down) {
            /* AWS Private CA did not answer within its deadline: the rest stay due for the
             * next pass instead of each waiting out the same deadline now */
            atomic_fetch_sub(&r->backlog, 1);
            (*failed)++;
            reason = NULL;
        }
        if (reason != NULL) {
            kb_err irc = KB_OK;
            rc = renew_one(r, g, reason, now, &irc);
            if ((irc == KB_ERR_TIMEOUT || irc == KB_ERR_UNAVAILABLE) && ca_is_pca(r->o.ca)) {
                signer_down = 1;
                kb_log(KB_LOG_WARN, "renewal_pass_cut_short", "why",
                       "AWS Private CA unavailable: the other due renewals wait for the next pass",
                       NULL);
            }
            atomic_fetch_sub(&r->backlog, 1);
            if (rc == KB_OK) {
                (*renewed)++;
                if (ca_store_reg_get(r->o.st, g->rid, g) != KB_OK)
                    continue;
            } else if (rc != KB_ERR_CONFLICT) {
                int64_t back = BACKOFF_MIN, f = g->failures + 1, next;
                for (int64_t k = 1; k < f && back < BACKOFF_MAX; k++)
                    back *= 2;
                if (back > BACKOFF_MAX)
                    back = BACKOFF_MAX;
                next = (int64_t)now + back;
                (*failed)++;
                atomic_fetch_add(&r->failures, 1);
                if (ca_store_reg_set_state(r->o.st, g->rid, g->not_after, next, f, g->bundle_seq) !=
                    KB_OK)
                    kb_log(KB_LOG_WARN, "renewal_state_not_saved", "spiffe_id", g->spiffe_id, NULL);
                g->failures = f;
            } else {
                continue;
            }
        }
        if (g->not_after > 0) {
            rem = g->not_after - (int64_t)now;
            if (minrem < 0 || rem < minrem)
                minrem = rem;
        }
    }
    atomic_store(&r->backlog, 0);
    atomic_store(&r->min_remaining, minrem);
    free(regs);
    return KB_OK;
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
