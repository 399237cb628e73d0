/* run.c - one sync run across a source and its sinks (see sync.h, docs/internals/sync.md). */
#include "sync.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diff.h"
#include "lib/config.h"
#include "lib/log.h"
#include "sink.h"
#include "source.h"

/* Names per content request: keeps one response under ~9 MiB (100 x 64 KiB in base64). */
#define SYNC_FETCH_BATCH 100

void sync_listing_clear(sync_listing *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].name);
        json_decref(l->items[i].metadata);
    }
    free(l->items);
    free(l->application);
    free(l->client);
    memset(l, 0, sizeof(*l));
}

const sync_meta *sync_listing_find(const sync_listing *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].name, name) == 0)
            return &l->items[i];
    return NULL;
}

void sync_content_clear(sync_content *c)
{
    if (c == NULL)
        return;
    free(c->name);
    json_decref(c->metadata);
    kb_secret_free(c->content);
    memset(c, 0, sizeof(*c));
}

void sync_entry_clear(sync_entry *e)
{
    if (e == NULL)
        return;
    free(e->name);
    free(e->current_vid);
    memset(e, 0, sizeof(*e));
}

void sync_state_clear(sync_state *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        sync_entry_clear(&s->e[i]);
    free(s->e);
    memset(s, 0, sizeof(*s));
}

const sync_entry *sync_state_find(const sync_state *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->e[i].name, name) == 0)
            return &s->e[i];
    return NULL;
}

void sync_sink_free(sync_sink *s)
{
    if (s && s->ops && s->ops->free)
        s->ops->free(s);
    else
        free(s);
}

int sync_name_ok(const char *name)
{
    size_t n;
    if (name == NULL)
        return 0;
    n = strnlen(name, SYNC_NAME_MAX + 1);
    if (n == 0 || n > SYNC_NAME_MAX || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              strchr("_.+=@-", c) != NULL))
            return 0;
    }
    return 1;
}

int sync_checksum_ok(const char *hex)
{
    if (hex == NULL || strlen(hex) != SYNC_CHECKSUM_HEX)
        return 0;
    for (size_t i = 0; i < SYNC_CHECKSUM_HEX; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return 0;
    return 1;
}

void sync_crash_point(void)
{
    static int64_t left = -1;
    static int init;
    if (!init) {
        const char *v = getenv("KB_SYNC_TEST_CRASH_AFTER");
        int64_t n;
        init = 1;
        if (v && kb_parse_int64(v, &n) == KB_OK && n > 0)
            left = n;
    }
    if (left > 0 && --left == 0)
        raise(SIGKILL);
}

/* ---- the run ------------------------------------------------------------------------------ */

typedef struct {
    sync_sink *sink;
    sync_state st;
    sync_action *acts;
    size_t nacts;
    sync_entry *confirmed; /* per action: the confirmed entry (when confirm ran) */
    int *bad;              /* per listing entry: the sink refuses it */
} sink_run;

static void log_item(kb_log_level lvl, const char *event, const sync_sink *s, const char *name,
                     const char *why, kb_err e)
{
    kb_log(lvl, event, "sink", s->label, "secret", name, "reason", why ? why : "", "err",
           kb_err_str(e), NULL);
}

/* Confirm planned changes with the sink and recompute the action from what it says. */
/* The deadline has passed: no further sink call starts. */
static int out_of_time(const sync_run_opts *o)
{
    return sync_clock_left(o->clock) == 0;
}

/* A planned change not made because the deadline came first (or a sink call hit it). */
static void left_over(const sink_run *r, const char *name, sync_summary *sum)
{
    log_item(KB_LOG_WARN, "secret_left", r->sink, name, "the run's deadline was reached",
             KB_ERR_TIMEOUT);
    sum->left++;
    sum->deferred++;
    sync_summary_item(sum, name, "left for the next run: the run's deadline was reached");
}

static void confirm_actions(sink_run *r, const sync_listing *l, const sync_run_opts *o,
                            sync_summary *sum)
{
    for (size_t i = 0; i < r->nacts; i++) {
        sync_action *a = &r->acts[i];
        sync_entry *ce = &r->confirmed[i];
        int found = 0;
        kb_err e;
        if (a->act != SYNC_ACT_CREATE && a->act != SYNC_ACT_UPDATE && a->act != SYNC_ACT_RESTORE &&
            a->act != SYNC_ACT_DELETE)
            continue;
        if (a->want != SIZE_MAX && r->bad[a->want])
            continue;
        if (r->sink->ops->confirm == NULL)
            continue;
        e = out_of_time(o) ? KB_ERR_TIMEOUT
                           : r->sink->ops->confirm(r->sink, a->name, ce, &found, sum);
        if (e == KB_ERR_TIMEOUT || e == KB_ERR_LIMIT) {
            /* Not refused, just not now: the deadline, or throttled past every retry. */
            if (e == KB_ERR_TIMEOUT) {
                left_over(r, a->name, sum);
            } else {
                log_item(KB_LOG_WARN, "secret_deferred", r->sink, a->name, "throttled", e);
                sum->deferred++;
                sync_summary_item(sum, a->name, "deferred: the sink kept throttling");
            }
            a->act = SYNC_ACT_SKIP;
            continue;
        }
        if (e != KB_OK) {
            /* Refused or unreadable: never touch it; it counts as failed. */
            log_item(KB_LOG_ERROR, "confirm_failed", r->sink, a->name,
                     e == KB_ERR_DENIED ? "held by another application or refused" : "", e);
            sum->failed++;
            sync_summary_item(sum, a->name, "%s: %s", r->sink->label,
                              e == KB_ERR_DENIED ? "held by another application, or refused "
                                                   "(non-default KMS key, resource policy)"
                                                 : kb_err_str(e));
            a->act = SYNC_ACT_SKIP;
            continue;
        }
        a->act = sync_diff_one(a->want != SIZE_MAX ? &l->items[a->want] : NULL, found ? ce : NULL,
                               &a->why);
        a->have = found ? SIZE_MAX - 1 : SIZE_MAX; /* SIZE_MAX - 1: use confirmed[i] */
    }
}

static const sync_entry *have_of(const sink_run *r, size_t i)
{
    const sync_action *a = &r->acts[i];
    if (a->have == SIZE_MAX)
        return NULL;
    if (a->have == SIZE_MAX - 1)
        return &r->confirmed[i];
    return &r->st.e[a->have];
}

/* A restored secret keeps what it held; it needs a write unless that is what is wanted. */
static int restore_needs_write(const sync_meta *want, const sync_entry *have)
{
    sync_entry live = *have;
    live.deleted = 0;
    return sync_diff_one(want, &live, NULL) != SYNC_ACT_NONE;
}

static int needs_content(const sync_action *a, const sync_listing *l, const sync_entry *have)
{
    if (a->act == SYNC_ACT_RESTORE)
        return restore_needs_write(&l->items[a->want], have);
    return a->act == SYNC_ACT_CREATE || a->act == SYNC_ACT_UPDATE;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static sync_content *find_content(sync_content *cs, const char **names, size_t n, const char *name)
{
    const char **hit = bsearch(&name, names, n, sizeof(*names), cmp_str);
    return hit ? &cs[hit - names] : NULL;
}

/* A sink call's failure: throttled past every retry → deferred; the deadline → left (and no
 * further call starts); anything else → failed. Returns 1 when the run must stop writing. */
static int sink_failed(const sink_run *r, const char *name, const char *what, kb_err e,
                       sync_summary *sum)
{
    if (e == KB_ERR_TIMEOUT) {
        left_over(r, name, sum);
        return 1;
    }
    if (e == KB_ERR_LIMIT) {
        log_item(KB_LOG_WARN, "secret_deferred", r->sink, name, "throttled", e);
        sum->deferred++;
        sync_summary_item(sum, name, "%s: %s deferred: the sink kept throttling", r->sink->label,
                          what);
        return 0;
    }
    log_item(KB_LOG_ERROR, "write_failed", r->sink, name, what, e);
    sum->failed++;
    sync_summary_item(sum, name, "%s: %s failed (%s)", r->sink->label, what, kb_err_str(e));
    return 0;
}

/* unsure: some content could not be fetched (deferred by the HSM budget or failed). Such a run
 * deletes nothing (issue 7 point 4: "delete nothing it is unsure of"; keep it simple: no deletes
 * at all): the planned deletes count as deferred and the next complete run makes them. */
static void apply_sink(sink_run *r, const sync_listing *l, sync_content *cs, const char **names,
                       size_t nnames, int unsure, const sync_run_opts *o, int *stopped,
                       sync_summary *sum)
{
    size_t n_delete = 0, n_managed = 0;
    int mass;
    for (size_t i = 0; i < r->st.n; i++)
        n_managed += !r->st.e[i].deleted;
    for (size_t i = 0; i < r->nacts; i++)
        n_delete += r->acts[i].act == SYNC_ACT_DELETE;
    mass = !o->retain_deletes && !o->allow_mass_delete &&
           sync_mass_delete(n_delete, n_managed, o->max_delete_fraction);
    if (mass) {
        char nd[24], nm[24];
        snprintf(nd, sizeof(nd), "%zu", n_delete);
        snprintf(nm, sizeof(nm), "%zu", n_managed);
        kb_log(KB_LOG_ERROR, "mass_delete_refused", "sink", r->sink->label, "deletes", nd,
               "managed", nm, NULL);
        sync_summary_fail(sum, KB_ERR_LIMIT,
                          "%s: would delete %zu of %zu managed secrets, more than "
                          "max_delete_fraction %.2f; nothing deleted (use --allow-mass-delete)",
                          r->sink->label, n_delete, n_managed, o->max_delete_fraction);
    }
    for (size_t i = 0; i < r->nacts; i++) {
        sync_action *a = &r->acts[i];
        const sync_entry *have = have_of(r, i);
        sync_content *c;
        kb_err e;
        if (a->want != SIZE_MAX && r->bad[a->want]) {
            log_item(KB_LOG_ERROR, "secret_refused", r->sink, a->name,
                     "two secrets map to one file, or bad metadata", KB_ERR_CONFLICT);
            sum->failed++;
            sync_summary_item(sum, a->name, "%s: two secrets map to one file, or bad metadata",
                              r->sink->label);
            continue;
        }
        if ((a->act == SYNC_ACT_CREATE || a->act == SYNC_ACT_UPDATE || a->act == SYNC_ACT_RESTORE ||
             (a->act == SYNC_ACT_DELETE && !o->retain_deletes && !mass && !unsure)) &&
            (*stopped || out_of_time(o))) {
            *stopped = 1;
            left_over(r, a->name, sum);
            continue;
        }
        switch (a->act) {
        case SYNC_ACT_NONE:
            sum->unchanged++;
            break;
        case SYNC_ACT_SKIP:
            break;
        case SYNC_ACT_DEFER:
            log_item(KB_LOG_WARN, "secret_deferred", r->sink, a->name, a->why, KB_ERR_CONFLICT);
            sum->deferred++;
            sync_summary_item(sum, a->name, "%s: deferred: %s", r->sink->label, a->why);
            break;
        case SYNC_ACT_DELETE:
            if (o->retain_deletes) {
                sum->retained++;
                break;
            }
            if (mass)
                break;
            if (unsure) {
                log_item(KB_LOG_WARN, "delete_deferred", r->sink, a->name,
                         "some contents were not fetched in this run", KB_ERR_LIMIT);
                sum->deferred++;
                break;
            }
            e = r->sink->ops->remove(r->sink, have, sum);
            if (e != KB_OK) {
                *stopped |= sink_failed(r, a->name, "delete", e, sum);
            } else {
                kb_log(KB_LOG_INFO, "deleted", "sink", r->sink->label, "secret", a->name, NULL);
                sum->deleted++;
            }
            break;
        case SYNC_ACT_CREATE:
        case SYNC_ACT_UPDATE:
        case SYNC_ACT_RESTORE: {
            sync_act act = a->act;
            c = find_content(cs, names, nnames, a->name);
            if (act == SYNC_ACT_RESTORE) {
                e = r->sink->ops->restore ? r->sink->ops->restore(r->sink, have, sum)
                                          : KB_ERR_INTERNAL;
                if (e != KB_OK) {
                    *stopped |= sink_failed(r, a->name, "restore", e, sum);
                    break;
                }
                kb_log(KB_LOG_INFO, "restored", "sink", r->sink->label, "secret", a->name, NULL);
                sum->restored++;
                if (!restore_needs_write(&l->items[a->want], have))
                    break;
            }
            if (c == NULL || c->err != KB_OK) {
                kb_err fe = c ? c->err : KB_ERR_UNAVAILABLE;
                if (fe == KB_ERR_TIMEOUT) {
                    left_over(r, a->name, sum);
                    break;
                }
                log_item(fe == KB_ERR_LIMIT ? KB_LOG_WARN : KB_LOG_ERROR, "fetch_failed", r->sink,
                         a->name, "", fe);
                if (fe == KB_ERR_LIMIT) {
                    sum->deferred++;
                    sync_summary_item(sum, a->name, "deferred: over keybridged's HSM budget");
                } else {
                    sum->failed++;
                    sync_summary_item(sum, a->name, "cannot fetch the content from keybridged (%s)",
                                      kb_err_str(fe));
                }
                break;
            }
            /* The fetched version may be newer than the listing's; never older than the sink. */
            if (have && !have->deleted && have->version > c->version) {
                log_item(KB_LOG_WARN, "secret_deferred", r->sink, a->name,
                         "sink holds a newer version", KB_ERR_CONFLICT);
                sum->deferred++;
                sync_summary_item(sum, a->name, "%s: deferred: the sink holds a newer version",
                                  r->sink->label);
                break;
            }
            e = r->sink->ops->write(r->sink, have, c, sum);
            if (e != KB_OK) {
                *stopped |= sink_failed(r, a->name, "write", e, sum);
                break;
            }
            kb_log(KB_LOG_INFO, act == SYNC_ACT_CREATE ? "created" : "updated", "sink",
                   r->sink->label, "secret", a->name, "reason", a->why, NULL);
            if (act == SYNC_ACT_CREATE)
                sum->created++;
            else
                sum->updated++;
            break;
        }
        }
    }
}

static void sink_run_clear(sink_run *r)
{
    if (r->confirmed)
        for (size_t i = 0; i < r->nacts; i++)
            sync_entry_clear(&r->confirmed[i]);
    free(r->confirmed);
    free(r->acts);
    free(r->bad);
    sync_state_clear(&r->st);
}

/* Listing sanity the engine relies on: valid, distinct names. */
static kb_err check_listing(const sync_listing *l)
{
    const char **names;
    kb_err rc = KB_OK;
    names = calloc(l->n + 1, sizeof(*names));
    KB_ENSURE(names != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < l->n; i++) {
        if (!sync_name_ok(l->items[i].name) || !sync_checksum_ok(l->items[i].checksum) ||
            l->items[i].version < 1) {
            rc = KB_ERR_INVALID;
            goto out;
        }
        names[i] = l->items[i].name;
    }
    qsort(names, l->n, sizeof(*names), cmp_str);
    for (size_t i = 1; i < l->n; i++)
        KB_ENSURE_OUT(rc, strcmp(names[i - 1], names[i]) != 0, KB_ERR_INVALID);
out:
    free(names);
    return rc;
}

kb_err sync_run(sync_source *src, sync_sink **sinks, size_t n, const sync_run_opts *o,
                sync_summary *sum)
{
    sync_listing l;
    sink_run *runs = NULL;
    const char **names = NULL;
    sync_content *cs = NULL;
    size_t nnames = 0, k, n_limit = 0, n_unfetched = 0;
    int stopped = 0;
    int64_t t0 = sync_mono_ms();
    kb_err rc = KB_OK;

    memset(&l, 0, sizeof(l));
    KB_ENSURE_REF(src);
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(sum);
    KB_ENSURE(n > 0 && sinks != NULL, KB_ERR_CONFIG);

    /* 1. the listing: one call, no content */
    rc = src->ops->list(src, &l, sum);
    if (rc != KB_OK) {
        sync_summary_fail(sum, rc, "cannot list secrets from the source (%s)", kb_err_str(rc));
        goto out;
    }
    snprintf(sum->application, sizeof(sum->application), "%s", l.application);
    rc = check_listing(&l);
    if (rc != KB_OK) {
        sync_summary_fail(sum, rc, "the source's listing is malformed (%s)", kb_err_str(rc));
        goto out;
    }

    /* 2. every sink's state, before any write */
    runs = calloc(n, sizeof(*runs));
    KB_ENSURE_OUT(rc, runs != NULL, KB_ERR_NOMEM);
    for (size_t s = 0; s < n; s++) {
        runs[s].sink = sinks[s];
        runs[s].bad = calloc(l.n + 1, sizeof(int));
        KB_ENSURE_OUT(rc, runs[s].bad != NULL, KB_ERR_NOMEM);
        rc = sinks[s]->ops->load(sinks[s], l.application, &runs[s].st, sum);
        if (rc != KB_OK) {
            sync_summary_fail(sum, rc, "%s: cannot read the sink's state (%s%s); nothing written",
                              sinks[s]->label, kb_err_str(rc),
                              rc == KB_ERR_TIMEOUT ? ": the run's deadline was reached" : "");
            goto out;
        }
        if (sinks[s]->ops->begin) {
            rc = sinks[s]->ops->begin(sinks[s], &l, runs[s].bad);
            if (rc != KB_OK) {
                sync_summary_fail(sum, rc, "%s: cannot prepare the sink (%s); nothing written",
                                  sinks[s]->label, kb_err_str(rc));
                goto out;
            }
        }
    }

    /* 3. diff and confirm */
    for (size_t s = 0; s < n; s++) {
        KB_GUARD_OUT(rc, sync_diff(&l, &runs[s].st, &runs[s].acts, &runs[s].nacts));
        runs[s].confirmed = calloc(runs[s].nacts + 1, sizeof(sync_entry));
        KB_ENSURE_OUT(rc, runs[s].confirmed != NULL, KB_ERR_NOMEM);
        confirm_actions(&runs[s], &l, o, sum);
    }

    /* 4. one fetch for every sink: the union of what needs content */
    names = calloc(l.n + 1, sizeof(*names));
    KB_ENSURE_OUT(rc, names != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < l.n; i++) {
        for (size_t s = 0; s < n; s++) {
            /* listing entries come first in acts, in listing order */
            sync_action *a = &runs[s].acts[i];
            if (!runs[s].bad[i] && needs_content(a, &l, have_of(&runs[s], i))) {
                names[nnames++] = l.items[i].name;
                break;
            }
        }
    }
    qsort(names, nnames, sizeof(*names), cmp_str);
    cs = calloc(nnames + 1, sizeof(*cs));
    KB_ENSURE_OUT(rc, cs != NULL, KB_ERR_NOMEM);
    for (k = 0; k < nnames; k += SYNC_FETCH_BATCH) {
        size_t m = nnames - k < SYNC_FETCH_BATCH ? nnames - k : SYNC_FETCH_BATCH;
        kb_err fe = src->ops->fetch(src, names + k, m, cs + k, sum);
        if (fe != KB_OK) {
            /* These stay unfetched; the rest still apply (issue 6 point 4). */
            for (size_t j = k; j < k + m; j++) {
                sync_content_clear(&cs[j]);
                cs[j].err = fe;
            }
            kb_log(KB_LOG_ERROR, "fetch_failed", "err", kb_err_str(fe), NULL);
        }
    }

    /* 5. apply what was fetched; with anything unfetched, no deletes */
    for (k = 0; k < nnames; k++) {
        n_limit += cs[k].err == KB_ERR_LIMIT;
        n_unfetched += cs[k].err != KB_OK;
    }
    for (size_t s = 0; s < n; s++) {
        apply_sink(&runs[s], &l, cs, names, nnames, n_unfetched > 0, o, &stopped, sum);
        if (sinks[s]->ops->finish) {
            kb_err fe = sinks[s]->ops->finish(sinks[s], sum);
            if (fe != KB_OK)
                sync_summary_fail(sum, fe, "%s: cannot save the sink's state (%s)", sinks[s]->label,
                                  kb_err_str(fe));
        }
    }
    if (sum->left > 0)
        sync_summary_fail(sum, KB_ERR_TIMEOUT,
                          "the run's deadline was reached: %lld planned changes left for the next "
                          "run (counted in deferred), %lld applied",
                          (long long)sum->left,
                          (long long)(sum->created + sum->updated + sum->restored + sum->deleted));
    if (n_limit > 0)
        sync_summary_fail(sum, KB_ERR_LIMIT,
                          "%zu of %zu secrets deferred: keybridged's HSM budget did not serve them "
                          "before the deadline; applied what was fetched, deleted nothing",
                          n_limit, nnames);
    rc = sum->err;
out:
    if (rc != KB_OK && sum->err == KB_OK)
        sync_summary_fail(sum, rc, "sync failed (%s)", kb_err_str(rc));
    if (rc == KB_OK && !sync_summary_ok(sum)) {
        /* failed or deferred secrets without a fatal error: say which and why */
        sync_summary_close(sum, KB_ERR_CONFLICT);
        rc = KB_ERR_CONFLICT;
    }
    for (size_t i = 0; cs && i < nnames; i++)
        sync_content_clear(&cs[i]);
    free(cs);
    free(names);
    for (size_t s = 0; runs && s < n; s++)
        sink_run_clear(&runs[s]);
    free(runs);
    sync_listing_clear(&l);
    sum->duration_ms += sync_mono_ms() - t0;
    return rc;
}
