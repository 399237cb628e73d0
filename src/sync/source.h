/* source.h - where secrets come from, behind an ops table (the real one is keybridged's client
 * API, source_keybridge.h; unit tests plug in a fake). */
#ifndef KB_SYNC_SOURCE_H
#define KB_SYNC_SOURCE_H

#include "sync.h"

typedef struct sync_source sync_source;

typedef struct {
    const char *kind;
    /* The metadata of every secret the client may read (one call: no content, no HSM work). */
    KB_WUR kb_err (*list)(sync_source *s, sync_listing *out, sync_summary *sum);
    /* Contents of names[0..n) into out[0..n) (zeroed by the caller). KB_OK means the transport
     * worked; each out[i].err says whether that secret came back. Any other code: none did. */
    KB_WUR kb_err (*fetch)(sync_source *s, const char *const *names, size_t n, sync_content *out,
                           sync_summary *sum);
    void (*free)(sync_source *s);
} sync_source_ops;

struct sync_source {
    const sync_source_ops *ops;
    void *impl;
};

#endif
