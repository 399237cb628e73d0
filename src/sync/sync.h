/* sync.h - keybridge-sync's data model and the run engine.
 *
 * One run (DESIGN.md "Data flow"):
 *   1. list the metadata of every secret the application may read (source, one call);
 *   2. read every sink's state (all of them, before anything is written: a failure here aborts
 *      the run with no write and no delete);
 *   3. diff (diff.h), confirm each planned change with the sink (DescribeSecret: ListSecrets
 *      lags), guard against mass deletes;
 *   4. fetch the contents of what changed, once, for all sinks (source, batches);
 *   5. write, restore and delete; let each sink persist its state.
 * See docs/internals/sync.md.
 */
#ifndef KB_SYNC_SYNC_H
#define KB_SYNC_SYNC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "backoff.h"
#include "lib/err.h"
#include "lib/names.h"
#include "lib/secbuf.h"
#include "summary.h"

/* A checksum as the client API sends it: lowercase hex of HMAC-SHA256 (64 characters). */
#define SYNC_CHECKSUM_HEX 64
/* Longest secret name and application name: keybridged's own limits (lib/names.h; an
 * application name fits keybridge/<app>/<name> into Secrets Manager's 512 characters). */
#define SYNC_NAME_MAX KB_NAME_MAX
#define SYNC_APP_MAX KB_APP_NAME_MAX
/* Most secrets in one listing. */
#define SYNC_LIST_MAX 100000
/* Largest content that can go to the cloud (Secrets Manager's 64 KiB SecretString limit). */
#define SYNC_CONTENT_MAX 65536

/* One secret's metadata from the source listing. */
typedef struct {
    char *name;
    int64_t version;
    char checksum[SYNC_CHECKSUM_HEX + 1];
    json_t *metadata; /* object of string values (owned reference), never NULL */
} sync_meta;

typedef struct {
    char *application; /* from the server: cloud names are keybridge/<application>/<name> */
    char *client;      /* our SPIFFE ID as the server saw it */
    sync_meta *items;
    size_t n;
} sync_listing;

void sync_listing_clear(sync_listing *l);
/* The entry for name, or NULL. */
const sync_meta *sync_listing_find(const sync_listing *l, const char *name);

/* One fetched secret: the version actually returned (it may be newer than the listing's). */
typedef struct {
    char *name;
    int64_t version;
    char checksum[SYNC_CHECKSUM_HEX + 1];
    json_t *metadata;
    kb_secret *content;     /* NULL when err != KB_OK */
    kb_err err;             /* per-secret fetch result; KB_ERR_LIMIT = over the HSM budget */
    int64_t retry_after_ms; /* err == KB_ERR_LIMIT: the server's hint, -1 if none */
} sync_content;

void sync_content_clear(sync_content *c);

/* A secret name as keybridged allows it (letters, digits, _ . + = @ -, not starting with '.'). */
int sync_name_ok(const char *name);
/* A lowercase 64-hex checksum. */
int sync_checksum_ok(const char *hex);

struct sync_source;
struct sync_sink;

typedef struct {
    double max_delete_fraction; /* 0..1; default 0.10 */
    int allow_mass_delete;
    int retain_deletes; /* delete_policy = retain */
    /* The run's deadline (NULL or deadline_ms 0: none). Past it no sink call starts: what was
     * planned and not done counts as left (and deferred), and the run fails (KB_ERR_TIMEOUT). */
    const sync_clock *clock;
} sync_run_opts;

/* Run once against a source and n sinks. Fills *sum (counts, calls, duration); returns KB_OK only
 * if everything applied. A failure before the apply phase leaves every sink untouched. */
KB_WUR kb_err sync_run(struct sync_source *src, struct sync_sink **sinks, size_t n,
                       const sync_run_opts *o, sync_summary *sum);

/* Test hook (crash tests): KB_SYNC_TEST_CRASH_AFTER=N makes the process SIGKILL itself right
 * after its Nth sink call. Called by the sinks after every call that reaches the sink. */
void sync_crash_point(void);

#endif
