/* audit.h - keybridged's append-only, MAC-chained, signed-anchor audit log.
 *
 * Each row (seq, time, identity, peer, action, object, version, result) carries
 *     mac = HMAC-SHA256(audit key, prev_mac || canonical(row))
 * with prev_mac = 32 zero bytes for seq 1, so editing or deleting any row breaks every later
 * MAC. Editing the tail and recomputing is prevented by the key (derived through the HSM in
 * production); truncating the tail is caught by anchors: every `anchor_every_rows` rows or
 * `anchor_every_secs` seconds (and on demand) the chain head (seq, mac) is signed through the
 * `sign` callback (kb_keystore_sign in production) and stored in the audit_anchors table, and
 * can be exported to a file kept elsewhere. See docs/internals/audit.md.
 *
 * Appends are serialised by the store (the head is read and extended inside one write
 * transaction), so concurrent threads and processes produce one chain.
 */
#ifndef KB_SERVER_AUDIT_H
#define KB_SERVER_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/secbuf.h"
#include "store.h"

#define AUDIT_MAC_LEN 32
#define AUDIT_SIG_MAX 512    /* largest signature the callback may return */
#define AUDIT_FIELD_MAX 2048 /* identity, peer, object */
#define AUDIT_ACTION_MAX 64  /* action and result: short identifiers */
#define AUDIT_ANCHOR_FILE_MAX 4096
#define AUDIT_ANCHOR_ROWS_DEFAULT 1000
#define AUDIT_ANCHOR_SECS_DEFAULT 300

typedef struct audit_log audit_log;

/* Sign msg into sig (at most sig_max bytes), setting *sig_len. */
typedef kb_err (*audit_sign_fn)(void *ctx, const uint8_t *msg, size_t msg_len, uint8_t *sig,
                                size_t sig_max, size_t *sig_len);
/* KB_OK if sig is a valid signature of msg, KB_ERR_AUTH if not. */
typedef kb_err (*audit_verify_fn)(void *ctx, const uint8_t *msg, size_t msg_len, const uint8_t *sig,
                                  size_t sig_len);

typedef struct {
    const kb_secret *key;      /* required, >= 32 bytes; copied into locked memory */
    audit_sign_fn sign;        /* required */
    audit_verify_fn verify;    /* optional: without it anchor signatures are not checked */
    void *sign_ctx;            /* passed to sign and verify */
    int64_t anchor_every_rows; /* 0 = AUDIT_ANCHOR_ROWS_DEFAULT, <0 = never automatically */
    int64_t anchor_every_secs; /* 0 = AUDIT_ANCHOR_SECS_DEFAULT, <0 = never automatically */
} audit_opts;

/* One event to append. Strings may be NULL (stored as ""); version 0 = none. */
typedef struct {
    int64_t time;
    const char *identity; /* SPIFFE ID, "bootstrap", or "" if unauthenticated */
    const char *peer;     /* peer address, e.g. "127.0.0.1:51234" */
    const char *action;   /* e.g. "secret.get", "secret.create", "client.denied" */
    const char *object;   /* e.g. a secret or group name */
    int64_t version;
    const char *result; /* "ok" or a kb_err_str() name */
} audit_event;

typedef struct {
    int64_t seq;
    int64_t time;
    char *identity;
    char *peer;
    char *action;
    char *object;
    int64_t version;
    char *result;
    uint8_t mac[AUDIT_MAC_LEN];
} audit_row;

typedef struct {
    int64_t seq;
    uint8_t mac[AUDIT_MAC_LEN];
    int64_t time;
    uint8_t sig[AUDIT_SIG_MAX];
    size_t sig_len;
} audit_anchor;

typedef struct {
    const char *object;   /* exact match, or NULL */
    const char *identity; /* exact match, or NULL */
    int64_t since;        /* time >= since, 0 = any */
    int64_t until;        /* time <= until, 0 = any */
    size_t limit;         /* 1..STORE_AUDIT_QUERY_MAX; 0 = 100 */
} audit_filter;

typedef struct {
    bool ok;
    int64_t rows;          /* rows checked */
    int64_t first_bad_seq; /* first seq at which the chain fails (0 if ok) */
    int64_t anchor_seq;    /* highest anchor seq checked against (0 if none) */
    const char *reason;    /* static text: "ok", "mac mismatch", "seq gap", "truncated", ... */
} audit_report;

KB_WUR kb_err audit_open(store *st, const audit_opts *opts, audit_log **out);
void audit_close(audit_log *a);

/* Append one event; sets *seq_out (may be NULL). Anchors the head if one is due; a failing
 * anchor is logged, not returned: the event itself is stored. */
KB_WUR kb_err audit_append(audit_log *a, const audit_event *ev, int64_t *seq_out);

/* Fill mac = HMAC(audit key, prev || canonical(row seq, ev)); the store calls it inside its write
 * transaction with the previous row's MAC (zeros before the first row). */
typedef kb_err (*audit_mac_fn)(void *ctx, const uint8_t prev[AUDIT_MAC_LEN], int64_t seq,
                               const audit_event *ev, uint8_t mac[AUDIT_MAC_LEN]);

/* The audit row of one change (store.h's change ops take a store_audit *): the backend appends it
 * inside the change's own transaction, before COMMIT, so the change and its row are committed
 * together or not at all (one commit, one fsync; kill -9 can never leave a change without its
 * row). Made by audit_change_begin with result "ok"; ops that create a version (secret create,
 * version add) set ev.version to it. A change that fails writes nothing, row included:
 * audit_change_end then appends the failure row on its own. */
struct store_audit {
    audit_event ev;
    audit_mac_fn mac; /* audit.c's chain MAC; tests may inject a failing one */
    void *mac_ctx;
    int64_t seq;  /* set by the backend: the row's seq */
    bool written; /* set by the backend once the row is in the (committed) transaction */
};

/* Prepare au for a change described by ev (ev's strings must outlive au; ev->result is ignored:
 * the row says "ok"). */
KB_WUR kb_err audit_change_begin(audit_log *a, const audit_event *ev, store_audit *au);
/* After the change op returned rc: on KB_OK the row was committed with the change (anchors the
 * head if due); a successful op that wrote no row (none should) gets it appended now. On failure
 * nothing was written: the event is appended on its own with result rc. Errors of that append
 * are logged, not returned (the caller answers with rc). */
void audit_change_end(audit_log *a, store_audit *au, kb_err rc);

/* The fetch record of a content read (store_fetch_record's row; fetched_at = the event's time). */
typedef struct {
    int64_t client_id;
    int64_t secret_id;
    int64_t version;
} audit_fetch;

/* A content read: the fetch record and the audit row in one store transaction (both or
 * neither; one commit per read). */
KB_WUR kb_err audit_append_read(audit_log *a, const audit_event *ev, const audit_fetch *fetch,
                                int64_t *seq_out);
/* n content reads (a batch), 1 <= n <= AUDIT_READS_MAX: ev[i] and fetch[i] for each, all rows
 * and records in one store transaction, chained in order (all or none); *seq_out is the last
 * row's seq. */
#define AUDIT_READS_MAX STORE_BATCH_MAX
KB_WUR kb_err audit_append_reads(audit_log *a, const audit_event *ev, const audit_fetch *fetch,
                                 size_t n, int64_t *seq_out);
/* Sign and store the current head now (no-op on an empty log). */
KB_WUR kb_err audit_anchor_now(audit_log *a, int64_t now);
/* Write the latest stored anchor as JSON {"seq","mac","sig","time"} (hex) to path (0600,
 * atomically). KB_ERR_NOT_FOUND if there is none. */
KB_WUR kb_err audit_export_anchor(audit_log *a, const char *path);
/* Walk the whole chain; compare against every stored anchor and, if anchor_path is not NULL,
 * the exported anchor. Returns KB_OK with report->ok telling the verdict (a tampered log is a
 * finding, not a failure of the call); errors are for I/O or a malformed anchor file. */
KB_WUR kb_err audit_verify(audit_log *a, const char *anchor_path, audit_report *report);
/* The same with an anchor already in memory (NULL: only the stored anchors). */
KB_WUR kb_err audit_verify_anchor(audit_log *a, const audit_anchor *extra, audit_report *report);
/* Read and parse an exported anchor file (KB_ERR_IO/KB_ERR_NOT_FOUND if unreadable, KB_ERR_INVALID
 * if it is not an anchor). */
KB_WUR kb_err audit_anchor_read(const char *path, audit_anchor *out);
/* Parse an exported anchor (the JSON audit_export_anchor writes), strictly. */
KB_WUR kb_err audit_anchor_parse(const void *buf, size_t len, audit_anchor *out);
/* The latest stored anchor as that JSON text (malloc'd); KB_ERR_NOT_FOUND if there is none. */
KB_WUR kb_err audit_anchor_json(audit_log *a, char **out);
/* The chain MAC of row r after prev (zeros before seq 1), as audit_verify computes it: for a
 * caller that walks rows it read itself (store_migrate.c). */
KB_WUR kb_err audit_row_mac(audit_log *a, const uint8_t prev[AUDIT_MAC_LEN], const audit_row *r,
                            uint8_t mac[AUDIT_MAC_LEN]);
/* Rows matching the filter, newest first. */
KB_WUR kb_err audit_query(audit_log *a, const audit_filter *f, audit_row **out, size_t *n);

void audit_rows_free(audit_row *rows, size_t n);

#endif
