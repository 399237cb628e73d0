/* store_sql_audit.c - the audit log for every SQL backend (store_sql.h): the hash-chained rows
 * (appended inside the change's own transaction by the backend's tx_end, or with a content
 * read's fetch record by store_sql_audit_append), queries, the signed anchors, and the fetch log
 * that a content read writes with its audit row.
 */
#include "store_sql_int.h"

/* ---- audit ---- */

static kb_err head_locked(cx *b, int64_t *seq, uint8_t mac[AUDIT_MAC_LEN])
{
    stmt *s = NULL;
    kb_err rc;
    *seq = 0;
    memset(mac, 0, AUDIT_MAC_LEN);
    KB_GUARD(prep(b, "SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1", &s));
    rc = step_row(b, s, "audit_head");
    if (rc == KB_OK) {
        *seq = col_i64(s, 0);
        col_fixed(s, 1, mac, AUDIT_MAC_LEN);
    } else if (rc == KB_ERR_NOT_FOUND) {
        rc = KB_OK;
    }
    done(s);
    return rc;
}

kb_err store_sql_audit_head(store *st, int64_t *seq, uint8_t mac[AUDIT_MAC_LEN])
{
    cx *b;
    kb_err rc;
    b = RD(st);
    rc = head_locked(b, seq, mac);
    PUT(st, b);
    return rc;
}

/* Append ev[0..n-1] after the head (writer, write lock held), each row's MAC chained to the one
 * before it; *seq_out is the last row's seq. */
static kb_err insert_rows_locked(cx *b, const audit_event *ev, size_t n, audit_mac_fn macfn,
                                 void *ctx, int64_t *seq_out)
{
    stmt *s = NULL;
    uint8_t prev[AUDIT_MAC_LEN], mac[AUDIT_MAC_LEN];
    int64_t seq = 0;
    kb_err rc;
    KB_ENSURE(b->writer && b->drv->in_tx(b), KB_ERR_INTERNAL);
    KB_GUARD_OUT(rc, head_locked(b, &seq, prev));
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO audit_log(seq, time, identity, peer, action, object, "
                          "version, result, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                          &s));
    for (size_t i = 0; i < n; i++) {
        seq++;
        KB_GUARD_OUT(rc, macfn(ctx, prev, seq, &ev[i], mac));
        KB_GUARD_OUT(rc, bind_i64(s, 1, seq));
        KB_GUARD_OUT(rc, bind_i64(s, 2, ev[i].time));
        KB_GUARD_OUT(rc, bind_text(s, 3, ev[i].identity));
        KB_GUARD_OUT(rc, bind_text(s, 4, ev[i].peer));
        KB_GUARD_OUT(rc, bind_text(s, 5, ev[i].action));
        KB_GUARD_OUT(rc, bind_text(s, 6, ev[i].object));
        KB_GUARD_OUT(rc, bind_i64(s, 7, ev[i].version));
        KB_GUARD_OUT(rc, bind_text(s, 8, ev[i].result));
        KB_GUARD_OUT(rc, bind_blob(s, 9, mac, sizeof(mac)));
        KB_GUARD_OUT(rc, step_later(b, s, "audit_insert"));
        done(s); /* reset for the next row */
        memcpy(prev, mac, sizeof(prev));
    }
    *seq_out = seq;
out:
    done(s);
    return rc;
}

kb_err store_sql_audit_insert_locked(cx *b, const audit_event *ev, audit_mac_fn macfn, void *ctx,
                                     int64_t *seq_out)
{
    return insert_rows_locked(b, ev, 1, macfn, ctx, seq_out);
}

kb_err store_sql_audit_append(store *st, const audit_event *ev, const audit_fetch *fetch, size_t n,
                              store_audit_mac_fn macfn, void *ctx, int64_t *seq_out)
{
    cx *b;
    int64_t seq = 0;
    kb_err rc;
    KB_ENSURE(n >= 1, KB_ERR_INVALID);
    b = WR(st);
    /* The audit log and fetch log change no listing. */
    rc = tx_begin(b, STORE_SQL_TX_LOG);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    for (size_t i = 0; fetch != NULL && i < n; i++)
        KB_GUARD_OUT(rc, store_sql_fetch_upsert(b, fetch[i].client_id, fetch[i].secret_id,
                                                fetch[i].version, ev[i].time));
    KB_GUARD_OUT(rc, insert_rows_locked(b, ev, n, macfn, ctx, &seq));
    if (seq_out)
        *seq_out = seq;
out:
    rc = tx_end(b, rc, NULL);
    PUT(st, b);
    return rc;
}

static void audit_free(void *arr, size_t n)
{
    audit_rows_free(arr, n);
}

static kb_err audit_row_load(cx *b, stmt *s, void *ctx, void *item, const void *prev, bool *keep)
{
    audit_row *a = item;
    (void)b;
    (void)ctx;
    (void)prev;
    (void)keep;
    a->seq = col_i64(s, 0);
    a->time = col_i64(s, 1);
    KB_GUARD(col_str(s, 2, &a->identity));
    KB_GUARD(col_str(s, 3, &a->peer));
    KB_GUARD(col_str(s, 4, &a->action));
    KB_GUARD(col_str(s, 5, &a->object));
    a->version = col_i64(s, 6);
    KB_GUARD(col_str(s, 7, &a->result));
    col_fixed(s, 8, a->mac, AUDIT_MAC_LEN);
    return KB_OK;
}

static kb_err collect_audit(cx *b, stmt *s, audit_row **out, size_t *n)
{
    return store_sql_collect(b, s, sizeof(**out), audit_row_load, NULL, audit_free, "audit_rows",
                             (void **)out, n);
}

kb_err store_sql_audit_rows(store *st, int64_t after, size_t limit, audit_row **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " STORE_SQL_AUDIT_COLS
                          " FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, after));
    KB_GUARD_OUT(rc, bind_i64(s, 2, (int64_t)limit));
    rc = collect_audit(b, s, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

kb_err store_sql_audit_query(store *st, const audit_filter *f, audit_row **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b, SQL(b, STORE_SQL_Q_AUDIT_QUERY), &s));
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

kb_err store_sql_anchor_put(store *st, const audit_anchor *a)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = WR(st);
    /* An anchor for a seq already anchored is kept as it is. */
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO audit_anchors(seq, mac, time, sig) "
                          "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(seq) DO NOTHING",
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

static kb_err anchor_row(cx *b, stmt *s, void *ctx, void *item, const void *prev, bool *keep)
{
    audit_anchor *a = item;
    const void *sig;
    size_t sl;
    (void)b;
    (void)ctx;
    (void)prev;
    (void)keep;
    a->seq = col_i64(s, 0);
    col_fixed(s, 1, a->mac, AUDIT_MAC_LEN);
    a->time = col_i64(s, 2);
    sig = col_ptr(s, 3);
    sl = col_len(s, 3);
    if (sig != NULL && sl > 0 && sl <= AUDIT_SIG_MAX) {
        memcpy(a->sig, sig, sl);
        a->sig_len = sl;
    }
    return KB_OK;
}

kb_err store_sql_anchor_list(store *st, audit_anchor **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    rc = prep(b, "SELECT seq, mac, time, sig FROM audit_anchors ORDER BY seq", &s);
    if (rc == KB_OK)
        rc = store_sql_collect(b, s, sizeof(**out), anchor_row, NULL, anchors_free, "anchor_list",
                               (void **)out, n);
    done(s);
    PUT(st, b);
    return rc;
}

/* ---- fetch log ---- */

kb_err store_sql_fetch_upsert(cx *b, int64_t client_id, int64_t secret_id, int64_t version,
                              int64_t now)
{
    stmt *s = NULL;
    kb_err rc;
    KB_GUARD(prep(b,
                  "INSERT INTO fetch_log(client_id, secret_id, version, fetched_at) "
                  "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(client_id, secret_id) DO UPDATE "
                  "SET version = excluded.version, fetched_at = excluded.fetched_at "
                  "WHERE excluded.fetched_at >= fetch_log.fetched_at",
                  &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, client_id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, secret_id));
    KB_GUARD_OUT(rc, bind_i64(s, 3, version));
    KB_GUARD_OUT(rc, bind_i64(s, 4, now));
    rc = step_later(b, s, "fetch_record");
out:
    done(s);
    return rc;
}

kb_err store_sql_fetch_record(store *st, int64_t client_id, int64_t secret_id, int64_t version,
                              int64_t now)
{
    cx *b = WR(st);
    kb_err rc = store_sql_fetch_upsert(b, client_id, secret_id, version, now);
    PUT(st, b);
    return rc;
}
