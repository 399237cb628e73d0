/* store_migrate.h - copy a whole store from one backend to another (`keybridged migrate-store`,
 * `keybridge --local CONF migrate-store`): SQLite -> PostgreSQL and back.
 *
 * Every row of every table is copied as stored: ids, versions, timestamps, envelopes, row MACs,
 * the state row, the audit chain and its signed anchors, and the id high-water marks (so an id
 * is never reused on the target either). Nothing is re-MAC'd: the target verifies with the same
 * keys or not at all, and a tampered source cannot be laundered into a clean-looking target.
 *
 * Order (docs/high-availability.md, docs/internals/store.md "Moving a store"):
 *   1. the source is opened through the store (schema at this binary's version, state row and
 *      digest, rollback check against the token's counter) and its audit chain and anchors
 *      verified (audit_verify); the target is opened through the store to create or migrate its
 *      schema (no commitment: a new database's counter is below the token's);
 *   2. one read snapshot of the source and ONE transaction on the target (PostgreSQL: under the
 *      store's write lock): the target must be empty (no object, audit or fetch row; state
 *      counter 1), every source row's MAC, the state digest and the audit chain are checked on
 *      exactly the rows copied, and any refusal rolls the target back: it stays empty;
 *   3. after COMMIT the target is opened through the store with the token's commitment and its
 *      audit chain verified, then read back raw: row counts per table and a SHA-256 over every
 *      row of every table must equal the source's.
 *
 * Nothing secret is printed or logged: refusals name the table, the row's key columns and the
 * check, never values (contents are sealed anyway; names are not printed either).
 */
#ifndef KB_SERVER_STORE_MIGRATE_H
#define KB_SERVER_STORE_MIGRATE_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "store.h"

#define STORE_MIGRATE_TABLES 11 /* tables copied (store_migrate.c, mig_tables) */
#define STORE_MIGRATE_WHY_MAX 256

typedef struct {
    const char *from; /* store URLs: "sqlite:PATH" or "postgresql://..." */
    const char *to;
    const kb_secret *row_mac_key;       /* as store_opts */
    const audit_opts *audit;            /* the audit key and the anchor signature check */
    const store_commitment *commitment; /* the token's state counter (NULL: none; tests) */
    size_t content_max;
    const char *const *cloud_prefixes;
} store_migrate_opts;

typedef struct {
    const char *table;
    int64_t rows;
} store_migrate_count;

typedef struct {
    int schema_version;
    store_migrate_count counts[STORE_MIGRATE_TABLES];
    size_t ntables;
    int64_t rows;                    /* all tables */
    int64_t state_counter;           /* the copied state row's counter */
    int64_t audit_rows;              /* audit chain length, verified on both sides */
    uint8_t digest[32];              /* SHA-256 over every row copied (equal on both sides) */
    char why[STORE_MIGRATE_WHY_MAX]; /* on failure: what was refused (table, key, check) */
} store_migrate_report;

/* Copy the store at o->from into the empty store at o->to. KB_OK when every row is copied and
 * both sides verified; otherwise nothing was committed on the target and r->why says why:
 * KB_ERR_EXISTS (target not empty), KB_ERR_INTEGRITY (a source row, the state digest or the
 * audit chain does not verify; or the target disagrees after the copy), KB_ERR_SCHEMA,
 * KB_ERR_CONFIG (bad URL, passfile, same store on both sides), KB_ERR_NOT_FOUND (no source),
 * KB_ERR_DB. */
KB_WUR kb_err store_migrate(const store_migrate_opts *o, store_migrate_report *r);

#endif
