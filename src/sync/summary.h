/* summary.h - the JSON summary every run prints (issue 6 point 7), and its CloudWatch Embedded
 * Metric Format twin for Lambda (docs/keybridge-sync.md, "Summary"). */
#ifndef KB_SYNC_SUMMARY_H
#define KB_SYNC_SUMMARY_H

#include <jansson.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/names.h"

/* Calls counted per operation: the source's two routes and each cache operation. */
typedef enum {
    SYNC_OP_KB_LIST = 0, /* GET /v1/secrets */
    SYNC_OP_KB_BATCH,    /* POST /v1/secrets:batchGet */
    SYNC_OP_LIST,        /* ListSecrets */
    SYNC_OP_DESCRIBE,    /* DescribeSecret */
    SYNC_OP_POLICY,      /* GetResourcePolicy */
    SYNC_OP_CREATE,      /* CreateSecret */
    SYNC_OP_PUT,         /* PutSecretValue */
    SYNC_OP_TAG,         /* TagResource */
    SYNC_OP_DELETE,      /* DeleteSecret */
    SYNC_OP_RESTORE,     /* RestoreSecret */
    SYNC_OP_GET,         /* GetSecretValue (the SVID from a secret) */
    SYNC_OP_DIR_READ,    /* dir sink: state file read */
    SYNC_OP_DIR_WRITE,   /* dir sink: a file written (temp + fsync + rename) */
    SYNC_OP_DIR_UNLINK,  /* dir sink: a file removed */
    SYNC_OP__COUNT
} sync_op;

/* The name used in the summary's "calls" object ("keybridged.list", "ListSecrets", ...). */
const char *sync_op_name(sync_op op);

typedef struct {
    char application[KB_APP_NAME_MAX + 1];
    int64_t unchanged, created, updated, restored, deleted, retained, deferred, failed;
    int64_t left; /* planned changes not attempted: the deadline came first (also in deferred) */
    int64_t calls[SYNC_OP__COUNT];
    int64_t bytes_fetched; /* response bytes of content fetches */
    int64_t hsm_fetches;   /* secrets whose content was fetched (each may cost an HSM unwrap) */
    int64_t throttled;     /* 429/503 answers and batch answers with deferred names (issue 7) */
    int64_t duration_ms;
    int64_t started_ms;   /* wall clock at start (ms since the epoch), for the EMF timestamp */
    kb_err err;           /* first fatal error, KB_OK if none */
    char error[512];      /* a message for humans; never secret content */
    int items;            /* error only says which secrets failed or were deferred (exit 1) */
    char item_error[320]; /* the first failed or deferred secret: "name: why" */
} sync_summary;

void sync_summary_init(sync_summary *s);
/* Record a fatal error (the first one wins). The message is printf-formatted. */
void sync_summary_fail(sync_summary *s, kb_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Remember why a secret failed or was deferred, for the summary's error (the first one wins;
 * counting stays with the caller). The message is printf-formatted; never secret content. */
void sync_summary_item(sync_summary *s, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A run with failed or deferred secrets but no fatal error: error becomes "N failed, M deferred;
 * first: <item_error>" (error_code from e). No-op when ok or when an error is already set. */
void sync_summary_close(sync_summary *s, kb_err e);
/* Everything applied: no fatal error, nothing failed or deferred. */
int sync_summary_ok(const sync_summary *s);

/* {"ok":..,"application":..,"unchanged":..,...,"calls":{...},"bytes_fetched":..,
 *  "hsm_fetches":..,"throttled":..,"left":..,"duration_ms":..[,"error":..,"error_code":..]} */
json_t *sync_summary_json(const sync_summary *s);
/* The same as one CloudWatch Embedded Metric Format record (namespace "keybridge/sync",
 * dimension Application). */
json_t *sync_summary_emf(const sync_summary *s);

int64_t sync_now_ms(void);  /* CLOCK_REALTIME in ms */
int64_t sync_mono_ms(void); /* CLOCK_MONOTONIC in ms */

#endif
