/* diff.h - what to do with each secret, from the source listing and a sink's state.
 * Pure functions: no I/O (tests/unit/test_sync_diff.c). */
#ifndef KB_SYNC_DIFF_H
#define KB_SYNC_DIFF_H

#include "sink.h"
#include "sync.h"

typedef enum {
    SYNC_ACT_NONE = 0, /* unchanged */
    SYNC_ACT_CREATE,
    SYNC_ACT_UPDATE,
    SYNC_ACT_RESTORE, /* scheduled for deletion and wanted again: restore, then maybe update */
    SYNC_ACT_DELETE,
    SYNC_ACT_DEFER, /* the sink holds the same version with another checksum, or a newer one:
                       never replace it with an older one */
    SYNC_ACT_SKIP,  /* deleted in the sink and not wanted: nothing to do, not counted */
} sync_act;

const char *sync_act_name(sync_act a);

/* One secret: want is NULL if the source no longer lists it, have NULL if the sink has none.
 * *why (may be NULL) gets a static reason. */
sync_act sync_diff_one(const sync_meta *want, const sync_entry *have, const char **why);

typedef struct {
    sync_act act;
    const char *name; /* borrowed from the listing or the state */
    size_t want;      /* index in the listing, or SIZE_MAX */
    size_t have;      /* index in the state, or SIZE_MAX */
    const char *why;
} sync_action;

/* Every listed secret, then every state entry not listed. *out is malloc'd (free()). */
KB_WUR kb_err sync_diff(const sync_listing *l, const sync_state *st, sync_action **out, size_t *n);

/* Would deleting n_delete of n_managed secrets exceed max_fraction? */
int sync_mass_delete(size_t n_delete, size_t n_managed, double max_fraction);

#endif
