/* diff.c - the sync decision per secret (see diff.h and docs/internals/sync.md "Diff"). */
#include "diff.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/secbuf.h"

const char *sync_act_name(sync_act a)
{
    switch (a) {
    case SYNC_ACT_NONE:
        return "unchanged";
    case SYNC_ACT_CREATE:
        return "create";
    case SYNC_ACT_UPDATE:
        return "update";
    case SYNC_ACT_RESTORE:
        return "restore";
    case SYNC_ACT_DELETE:
        return "delete";
    case SYNC_ACT_DEFER:
        return "defer";
    case SYNC_ACT_SKIP:
        return "skip";
    }
    return "?";
}

sync_act sync_diff_one(const sync_meta *want, const sync_entry *have, const char **why)
{
    const char *w = "";
    sync_act a;
    if (want == NULL && have == NULL) {
        a = SYNC_ACT_SKIP;
    } else if (want == NULL) {
        a = have->deleted ? SYNC_ACT_SKIP : SYNC_ACT_DELETE;
        w = have->deleted ? "already scheduled for deletion" : "no longer listed";
    } else if (have == NULL) {
        a = SYNC_ACT_CREATE;
        w = "not in the sink";
    } else if (have->deleted) {
        a = SYNC_ACT_RESTORE;
        w = "listed again";
    } else if (have->version > want->version) {
        /* DESIGN.md Data flow 6: never replace a newer version with an older one. */
        a = SYNC_ACT_DEFER;
        w = "sink holds a newer version";
    } else if (have->version == want->version) {
        /* The checksum is an HMAC of (id, version, content), so the same version with another
         * checksum is another secret by that name (or a forged record): do not guess. */
        if (strlen(have->checksum) != SYNC_CHECKSUM_HEX ||
            !kb_ct_eq(have->checksum, want->checksum, SYNC_CHECKSUM_HEX)) {
            a = SYNC_ACT_DEFER;
            w = "same version, different checksum";
        } else if (!have->intact) {
            a = SYNC_ACT_UPDATE;
            w = "changed outside keybridge";
        } else {
            a = SYNC_ACT_NONE;
        }
    } else {
        a = SYNC_ACT_UPDATE;
        w = "new version";
    }
    if (why)
        *why = w;
    return a;
}

static int cmp_entry_name(const void *a, const void *b)
{
    const sync_entry *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

kb_err sync_diff(const sync_listing *l, const sync_state *st, sync_action **out, size_t *n)
{
    sync_action *acts;
    const sync_entry **sorted = NULL;
    uint8_t *seen = NULL;
    size_t k = 0;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(l);
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    acts = calloc(l->n + st->n + 1, sizeof(*acts));
    sorted = calloc(st->n + 1, sizeof(*sorted));
    seen = calloc(st->n + 1, 1);
    KB_ENSURE_OUT(rc, acts && sorted && seen, KB_ERR_NOMEM);
    /* Sort the state once so each listed name is a binary search, not a scan (10^4 names). */
    for (size_t i = 0; i < st->n; i++)
        sorted[i] = &st->e[i];
    qsort(sorted, st->n, sizeof(*sorted), cmp_entry_name);
    for (size_t i = 0; i < l->n; i++) {
        const sync_meta *m = &l->items[i];
        sync_entry key = {.name = m->name};
        const sync_entry *kp = &key, **hit;
        const sync_entry *have = NULL;
        size_t hi = SIZE_MAX;
        hit = bsearch(&kp, sorted, st->n, sizeof(*sorted), cmp_entry_name);
        if (hit) {
            have = *hit;
            hi = (size_t)(have - st->e);
            seen[hi] = 1;
        }
        acts[k].act = sync_diff_one(m, have, &acts[k].why);
        acts[k].name = m->name;
        acts[k].want = i;
        acts[k].have = hi;
        k++;
    }
    for (size_t i = 0; i < st->n; i++) {
        if (seen[i])
            continue;
        acts[k].act = sync_diff_one(NULL, &st->e[i], &acts[k].why);
        acts[k].name = st->e[i].name;
        acts[k].want = SIZE_MAX;
        acts[k].have = i;
        k++;
    }
    *out = acts;
    *n = k;
    acts = NULL;
out:
    free(acts);
    free(sorted);
    free(seen);
    return rc;
}

int sync_mass_delete(size_t n_delete, size_t n_managed, double max_fraction)
{
    if (n_delete == 0)
        return 0;
    if (n_managed == 0)
        return 1;
    return (double)n_delete > max_fraction * (double)n_managed;
}
