/* store_sqlite_audit.c - the SQLite backend's audit log: the hash-chained rows (appended inside
 * the change's own transaction by sq_tx_end, or with a content read's fetch record by
 * sq_audit_append), queries, and the signed anchors.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_sqlite_int.h"

/* ---- audit ---- */

static kb_err head_locked(cx *b, int64_t *seq, uint8_t mac[AUDIT_MAC_LEN])
{
    sqlite3_stmt *s = NULL;
    kb_err rc;
    *seq = 0;
    memset(mac, 0, AUDIT_MAC_LEN);
    KB_GUARD(sq_prep(b, "SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1", &s));
    rc = step_row(b, s, "audit_head");
    if (rc == KB_OK) {
        *seq = sqlite3_column_int64(s, 0);
        if (sqlite3_column_bytes(s, 1) == AUDIT_MAC_LEN)
            memcpy(mac, sqlite3_column_blob(s, 1), AUDIT_MAC_LEN);
    } else if (rc == KB_ERR_NOT_FOUND) {
        rc = KB_OK;
    }
    done(s);
    return rc;
}

kb_err sq_audit_head(store *st, int64_t *seq, uint8_t mac[AUDIT_MAC_LEN])
{
    cx *b;
    kb_err rc;
    b = RD(st);
    rc = head_locked(b, seq, mac);
    PUT(st, b);
    return rc;
}

/* Append one row to the chain (writer, inside a write transaction: the write lock is taken
 * before the head is read, so two appenders, threads or processes, never extend the same head). */
kb_err sq_audit_insert_locked(cx *b, const audit_event *ev, audit_mac_fn macfn, void *ctx,
                              int64_t *seq_out)
{
    sqlite3_stmt *s = NULL;
    uint8_t prev[AUDIT_MAC_LEN], mac[AUDIT_MAC_LEN];
    int64_t seq = 0;
    kb_err rc;
    KB_ENSURE(b->writer && !sqlite3_get_autocommit(b->db), KB_ERR_INTERNAL);
    KB_GUARD_OUT(rc, head_locked(b, &seq, prev));
    seq++;
    KB_GUARD_OUT(rc, macfn(ctx, prev, seq, ev, mac));
    KB_GUARD_OUT(rc, sq_prep(b,
                             "INSERT INTO audit_log(seq, time, identity, peer, action, object, "
                             "version, result, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                             &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, seq));
    KB_GUARD_OUT(rc, bind_i64(s, 2, ev->time));
    KB_GUARD_OUT(rc, bind_text(s, 3, ev->identity));
    KB_GUARD_OUT(rc, bind_text(s, 4, ev->peer));
    KB_GUARD_OUT(rc, bind_text(s, 5, ev->action));
    KB_GUARD_OUT(rc, bind_text(s, 6, ev->object));
    KB_GUARD_OUT(rc, bind_i64(s, 7, ev->version));
    KB_GUARD_OUT(rc, bind_text(s, 8, ev->result));
    KB_GUARD_OUT(rc, bind_blob(s, 9, mac, sizeof(mac)));
    KB_GUARD_OUT(rc, step_done(b, s, "audit_insert"));
    *seq_out = seq;
out:
    done(s);
    return rc;
}

kb_err sq_audit_append(store *st, const audit_event *ev, const audit_fetch *fetch,
                       store_audit_mac_fn macfn, void *ctx, int64_t *seq_out)
{
    cx *b;
    int64_t seq = 0;
    kb_err rc;
    b = WR(st);
    rc = sq_tx_begin(b, true);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    if (fetch != NULL)
        KB_GUARD_OUT(
            rc, sq_fetch_upsert(b, fetch->client_id, fetch->secret_id, fetch->version, ev->time));
    KB_GUARD_OUT(rc, sq_audit_insert_locked(b, ev, macfn, ctx, &seq));
    if (seq_out)
        *seq_out = seq;
out:
    rc = sq_tx_end(b, rc, NULL);
    PUT(st, b);
    return rc;
}

static void audit_free(void *arr, size_t n)
{
    audit_rows_free(arr, n);
}

static kb_err audit_row_load(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev,
                             bool *keep)
{
    audit_row *a = item;
    (void)b;
    (void)ctx;
    (void)prev;
    (void)keep;
    a->seq = sqlite3_column_int64(s, 0);
    a->time = sqlite3_column_int64(s, 1);
    KB_GUARD(col_str(s, 2, &a->identity));
    KB_GUARD(col_str(s, 3, &a->peer));
    KB_GUARD(col_str(s, 4, &a->action));
    KB_GUARD(col_str(s, 5, &a->object));
    a->version = sqlite3_column_int64(s, 6);
    KB_GUARD(col_str(s, 7, &a->result));
    /* A MAC of the wrong size stays all-zero: it will not verify. */
    if (sqlite3_column_bytes(s, 8) == AUDIT_MAC_LEN)
        memcpy(a->mac, sqlite3_column_blob(s, 8), AUDIT_MAC_LEN);
    return KB_OK;
}

static kb_err collect_audit(cx *b, sqlite3_stmt *s, audit_row **out, size_t *n)
{
    return sq_collect(b, s, sizeof(**out), audit_row_load, NULL, audit_free, "audit_rows",
                      (void **)out, n);
}

#define AUDIT_COLS "seq, time, identity, peer, action, object, version, result, mac"

kb_err sq_audit_rows(store *st, int64_t after, size_t limit, audit_row **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(
        rc, sq_prep(b, "SELECT " AUDIT_COLS " FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, after));
    KB_GUARD_OUT(rc, bind_i64(s, 2, (int64_t)limit));
    rc = collect_audit(b, s, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

kb_err sq_audit_query(store *st, const audit_filter *f, audit_row **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, sq_prep(b,
                             "SELECT " AUDIT_COLS " FROM audit_log WHERE "
                             "(?1 IS NULL OR object = ?1) AND (?2 IS NULL OR identity = ?2) AND "
                             "(?3 = 0 OR time >= ?3) AND (?4 = 0 OR time <= ?4) "
                             "ORDER BY seq DESC LIMIT ?5",
                             &s));
    if (f->object)
        KB_GUARD_OUT(rc, bind_text(s, 1, f->object));
    if (f->identity)
        KB_GUARD_OUT(rc, bind_text(s, 2, f->identity));
    KB_GUARD_OUT(rc, bind_i64(s, 3, f->since));
    KB_GUARD_OUT(rc, bind_i64(s, 4, f->until));
    KB_GUARD_OUT(rc, bind_i64(s, 5, (int64_t)f->limit));
    rc = collect_audit(b, s, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

kb_err sq_anchor_put(store *st, const audit_anchor *a)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = WR(st);
    KB_GUARD_OUT(rc, sq_prep(b,
                             "INSERT OR IGNORE INTO audit_anchors(seq, mac, time, sig) "
                             "VALUES (?1, ?2, ?3, ?4)",
                             &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, a->seq));
    KB_GUARD_OUT(rc, bind_blob(s, 2, a->mac, AUDIT_MAC_LEN));
    KB_GUARD_OUT(rc, bind_i64(s, 3, a->time));
    KB_GUARD_OUT(rc, bind_blob(s, 4, a->sig, a->sig_len));
    rc = step_done(b, s, "anchor_put");
out:
    done(s);
    PUT(st, b);
    return rc;
}

static void anchors_free(void *arr, size_t n)
{
    (void)n;
    free(arr);
}

static kb_err anchor_row(cx *b, sqlite3_stmt *s, void *ctx, void *item, const void *prev,
                         bool *keep)
{
    audit_anchor *a = item;
    int sl = sqlite3_column_bytes(s, 3);
    (void)b;
    (void)ctx;
    (void)prev;
    (void)keep;
    a->seq = sqlite3_column_int64(s, 0);
    if (sqlite3_column_bytes(s, 1) == AUDIT_MAC_LEN)
        memcpy(a->mac, sqlite3_column_blob(s, 1), AUDIT_MAC_LEN);
    a->time = sqlite3_column_int64(s, 2);
    if (sl > 0 && sl <= AUDIT_SIG_MAX) {
        memcpy(a->sig, sqlite3_column_blob(s, 3), (size_t)sl);
        a->sig_len = (size_t)sl;
    }
    return KB_OK;
}

kb_err sq_anchor_list(store *st, audit_anchor **out, size_t *n)
{
    cx *b;
    sqlite3_stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    rc = sq_prep(b, "SELECT seq, mac, time, sig FROM audit_anchors ORDER BY seq", &s);
    if (rc == KB_OK)
        rc = sq_collect(b, s, sizeof(**out), anchor_row, NULL, anchors_free, "anchor_list",
                        (void **)out, n);
    done(s);
    PUT(st, b);
    return rc;
}
