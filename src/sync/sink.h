/* sink.h - where secrets go, behind an ops table (OpenSMTPD's table backends): sink_dir.c
 * (a directory, keysync semantics) and sink_secretsmanager.c (AWS Secrets Manager or
 * keybridge-cache, one sink per region). The engine (run.c) never knows which one it has. */
#ifndef KB_SYNC_SINK_H
#define KB_SYNC_SINK_H

#include "sync.h"

/* What a sink holds for one secret, as far as keybridge's records go. */
typedef struct {
    char *name; /* the secret's name (not the cloud name) */
    int64_t version;
    char checksum[SYNC_CHECKSUM_HEX + 1];
    int intact;        /* 1: the sink holds exactly what was recorded (AWSCURRENT is the version
                          keybridge wrote; the file's SHA-256 matches the state file) */
    int deleted;       /* 1: scheduled for deletion (recovery window); restorable */
    char *current_vid; /* Secrets Manager: the AWSCURRENT version id, or NULL */
} sync_entry;

typedef struct {
    sync_entry *e;
    size_t n;
} sync_state;

void sync_entry_clear(sync_entry *e);
void sync_state_clear(sync_state *s);
const sync_entry *sync_state_find(const sync_state *s, const char *name);

typedef struct sync_sink sync_sink;

typedef struct {
    const char *kind;
    /* The complete state of what this application manages in the sink. Any error: the run
     * stops before writing anything. */
    KB_WUR kb_err (*load)(sync_sink *s, const char *app, sync_state *out, sync_summary *sum);
    /* Optional: look at the whole listing before the diff; set bad[i] = 1 for entries that must
     * fail in this sink (dir: two secrets mapping to one file). */
    KB_WUR kb_err (*begin)(sync_sink *s, const sync_listing *l, int *bad);
    /* Optional: re-read one secret authoritatively before it is written or deleted (ListSecrets
     * lags). *found = 0 if absent. KB_ERR_DENIED: held by another application, or refused
     * (non-default KMS key, resource policy): never overwrite it. */
    KB_WUR kb_err (*confirm)(sync_sink *s, const char *name, sync_entry *out, int *found,
                             sync_summary *sum);
    /* Write c (cur NULL: create). */
    KB_WUR kb_err (*write)(sync_sink *s, const sync_entry *cur, const sync_content *c,
                           sync_summary *sum);
    /* Optional: bring back a secret scheduled for deletion. */
    KB_WUR kb_err (*restore)(sync_sink *s, const sync_entry *cur, sync_summary *sum);
    KB_WUR kb_err (*remove)(sync_sink *s, const sync_entry *cur, sync_summary *sum);
    /* Optional: persist what the run did (dir: the state file). Called even after failures. */
    KB_WUR kb_err (*finish)(sync_sink *s, sync_summary *sum);
    void (*free)(sync_sink *s);
} sync_sink_ops;

struct sync_sink {
    const sync_sink_ops *ops;
    char label[128]; /* "dir:/run/secrets", "secretsmanager:us-east-1" (logs) */
    void *impl;
};

void sync_sink_free(sync_sink *s);

#endif
