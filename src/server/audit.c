/* audit.c - the MAC-chained audit log with signed anchors (see audit.h and
 * docs/internals/audit.md). Storage is the store backend's; the chain logic is here. */
#include "audit.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "lib/buf.h"
#include "lib/fileio.h"
#include "lib/json.h"
#include "lib/log.h"
#include "store_impl.h"

#define AUDIT_CANON_MAX (4 * AUDIT_FIELD_MAX + 2 * AUDIT_ACTION_MAX + 256)
#define AUDIT_VERIFY_CHUNK 1000
#define AUDIT_QUERY_DEFAULT 100

struct audit_log {
    store *st;
    kb_secret *key;
    audit_sign_fn sign;
    audit_verify_fn verify;
    void *ctx;
    int64_t every_rows;
    int64_t every_secs;
    pthread_mutex_t mu; /* guards the two fields below */
    int64_t last_anchor_seq;
    int64_t last_anchor_time;
    /* HMAC fetched and keyed once (re-initialised per row with a NULL key) instead of fetch +
     * new context + key setup per append and per verified row; OpenSSL cleanses it on free. */
    pthread_mutex_t macmu; /* guards mac: appends and a verify may run at once */
    EVP_MAC_CTX *mac;
};

static kb_err put_len(kb_dbuf *b, size_t n)
{
    uint8_t l[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    return kb_dbuf_add(b, l, sizeof(l));
}

static kb_err put_str(kb_dbuf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    KB_GUARD(put_len(b, n));
    return kb_dbuf_add(b, s ? s : "", n);
}

static kb_err put_i64(kb_dbuf *b, int64_t v)
{
    uint8_t x[8];
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--) {
        x[i] = (uint8_t)u;
        u >>= 8;
    }
    KB_GUARD(put_len(b, sizeof(x)));
    return kb_dbuf_add(b, x, sizeof(x));
}

/* canonical(row) = tag, seq, time, identity, peer, action, object, version, result; each field
 * length-prefixed, so no two different rows encode alike. */
static kb_err canon(kb_dbuf *b, int64_t seq, int64_t time, const char *identity, const char *peer,
                    const char *action, const char *object, int64_t version, const char *result)
{
    KB_GUARD(put_str(b, "kb.audit.v1"));
    KB_GUARD(put_i64(b, seq));
    KB_GUARD(put_i64(b, time));
    KB_GUARD(put_str(b, identity));
    KB_GUARD(put_str(b, peer));
    KB_GUARD(put_str(b, action));
    KB_GUARD(put_str(b, object));
    KB_GUARD(put_i64(b, version));
    return put_str(b, result);
}

static kb_err mac_new(const kb_secret *key, EVP_MAC_CTX **out)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    char digest[] = "SHA256";

    *out = NULL;
    if (mac == NULL)
        return KB_ERR_CRYPTO;
    ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    params[0] = OSSL_PARAM_construct_utf8_string("digest", digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (ctx == NULL || EVP_MAC_init(ctx, kb_secret_cdata(key), kb_secret_len(key), params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return KB_ERR_CRYPTO;
    }
    *out = ctx;
    return KB_OK;
}

/* mac = HMAC-SHA256(key, prev || canonical(row)) */
static kb_err chain_mac(audit_log *a, const uint8_t prev[AUDIT_MAC_LEN], const kb_dbuf *c,
                        uint8_t out[AUDIT_MAC_LEN])
{
    size_t len = 0;
    kb_err rc = KB_ERR_CRYPTO;

    pthread_mutex_lock(&a->macmu);
    /* A NULL key re-initialises HMAC with the key already set (OpenSSL 3 EVP_MAC-HMAC). */
    if (EVP_MAC_init(a->mac, NULL, 0, NULL) == 1 &&
        EVP_MAC_update(a->mac, prev, AUDIT_MAC_LEN) == 1 &&
        EVP_MAC_update(a->mac, c->p, c->len) == 1 &&
        EVP_MAC_final(a->mac, out, &len, AUDIT_MAC_LEN) == 1 && len == AUDIT_MAC_LEN)
        rc = KB_OK;
    pthread_mutex_unlock(&a->macmu);
    return rc;
}

static kb_err append_mac(void *vctx, const uint8_t prev[AUDIT_MAC_LEN], int64_t seq,
                         const audit_event *ev, uint8_t mac[AUDIT_MAC_LEN])
{
    audit_log *a = vctx;
    kb_dbuf b;
    kb_err rc;
    kb_dbuf_init(&b, AUDIT_CANON_MAX);
    rc = canon(&b, seq, ev->time, ev->identity, ev->peer, ev->action, ev->object, ev->version,
               ev->result);
    if (rc == KB_OK)
        rc = chain_mac(a, prev, &b, mac);
    kb_dbuf_free(&b);
    return rc;
}

/* The signed anchor message: tag || seq || mac || time. */
static void anchor_msg(const audit_anchor *an, uint8_t msg[18 + 8 + AUDIT_MAC_LEN + 8], size_t *len)
{
    static const char tag[18] = "kb.audit.anchor.1";
    size_t p = 0;
    uint64_t u;
    memcpy(msg, tag, sizeof(tag));
    p += sizeof(tag);
    u = (uint64_t)an->seq;
    for (int i = 7; i >= 0; i--)
        msg[p + (size_t)i] = (uint8_t)(u >> (8 * (7 - i)));
    p += 8;
    memcpy(msg + p, an->mac, AUDIT_MAC_LEN);
    p += AUDIT_MAC_LEN;
    u = (uint64_t)an->time;
    for (int i = 7; i >= 0; i--)
        msg[p + (size_t)i] = (uint8_t)(u >> (8 * (7 - i)));
    p += 8;
    *len = p;
}

kb_err audit_open(store *st, const audit_opts *o, audit_log **out)
{
    audit_log *a;
    audit_anchor *anchors = NULL;
    size_t n = 0;
    kb_err rc;

    KB_ENSURE_REF(st);
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(o->key);
    KB_ENSURE_REF(o->sign);
    *out = NULL;
    KB_ENSURE(kb_secret_len(o->key) >= 32, KB_ERR_CONFIG);
    a = calloc(1, sizeof(*a));
    KB_ENSURE(a != NULL, KB_ERR_NOMEM);
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        free(a);
        return KB_ERR_INTERNAL;
    }
    if (pthread_mutex_init(&a->macmu, NULL) != 0) {
        pthread_mutex_destroy(&a->mu);
        free(a);
        return KB_ERR_INTERNAL;
    }
    a->st = st;
    a->sign = o->sign;
    a->verify = o->verify;
    a->ctx = o->sign_ctx;
    a->every_rows = o->anchor_every_rows ? o->anchor_every_rows : AUDIT_ANCHOR_ROWS_DEFAULT;
    a->every_secs = o->anchor_every_secs ? o->anchor_every_secs : AUDIT_ANCHOR_SECS_DEFAULT;
    KB_GUARD_OUT(rc, kb_secret_from(kb_secret_cdata(o->key), kb_secret_len(o->key), &a->key));
    KB_GUARD_OUT(rc, mac_new(a->key, &a->mac));
    KB_GUARD_OUT(rc, st->ops->anchor_list(st, &anchors, &n));
    if (n > 0) {
        a->last_anchor_seq = anchors[n - 1].seq;
        a->last_anchor_time = anchors[n - 1].time;
    }
    *out = a;
    a = NULL;
out:
    free(anchors);
    audit_close(a);
    return rc;
}

void audit_close(audit_log *a)
{
    if (a == NULL)
        return;
    kb_secret_free(a->key);
    EVP_MAC_CTX_free(a->mac);
    pthread_mutex_destroy(&a->macmu);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

static kb_err field_check(const char *s, size_t max)
{
    if (s == NULL)
        return KB_OK;
    KB_ENSURE(strnlen(s, max + 1) <= max, KB_ERR_TOO_LARGE);
    return KB_OK;
}

kb_err audit_anchor_now(audit_log *a, int64_t now)
{
    audit_anchor an;
    uint8_t msg[18 + 8 + AUDIT_MAC_LEN + 8];
    size_t msg_len = 0;

    KB_ENSURE_REF(a);
    memset(&an, 0, sizeof(an));
    KB_GUARD(a->st->ops->audit_head(a->st, &an.seq, an.mac));
    if (an.seq == 0)
        return KB_OK;
    an.time = now;
    anchor_msg(&an, msg, &msg_len);
    KB_GUARD(a->sign(a->ctx, msg, msg_len, an.sig, sizeof(an.sig), &an.sig_len));
    KB_ENSURE(an.sig_len > 0 && an.sig_len <= AUDIT_SIG_MAX, KB_ERR_CRYPTO);
    KB_GUARD(a->st->ops->anchor_put(a->st, &an));
    pthread_mutex_lock(&a->mu);
    if (an.seq > a->last_anchor_seq)
        a->last_anchor_seq = an.seq;
    a->last_anchor_time = now;
    pthread_mutex_unlock(&a->mu);
    return KB_OK;
}

static kb_err append(audit_log *a, const audit_event *ev, const audit_fetch *fetch, size_t n,
                     int64_t *seq_out);

kb_err audit_append(audit_log *a, const audit_event *ev, int64_t *seq_out)
{
    return append(a, ev, NULL, 1, seq_out);
}

kb_err audit_append_reads(audit_log *a, const audit_event *ev, const audit_fetch *fetch, size_t n,
                          int64_t *seq_out)
{
    KB_ENSURE_REF(ev);
    KB_ENSURE_REF(fetch);
    KB_ENSURE(n >= 1, KB_ERR_INVALID);
    KB_ENSURE(n <= AUDIT_READS_MAX, KB_ERR_TOO_LARGE);
    for (size_t i = 0; i < n; i++)
        KB_ENSURE(fetch[i].client_id > 0 && fetch[i].secret_id > 0 && fetch[i].version > 0,
                  KB_ERR_INVALID);
    return append(a, ev, fetch, n, seq_out);
}

kb_err audit_append_read(audit_log *a, const audit_event *ev, const audit_fetch *fetch,
                         int64_t *seq_out)
{
    return audit_append_reads(a, ev, fetch, 1, seq_out);
}

static kb_err event_check(const audit_event *ev)
{
    KB_ENSURE_REF(ev);
    KB_ENSURE(ev->action != NULL && ev->action[0] != '\0', KB_ERR_INVALID);
    KB_ENSURE(ev->result != NULL && ev->result[0] != '\0', KB_ERR_INVALID);
    KB_GUARD(field_check(ev->action, AUDIT_ACTION_MAX));
    KB_GUARD(field_check(ev->result, AUDIT_ACTION_MAX));
    KB_GUARD(field_check(ev->identity, AUDIT_FIELD_MAX));
    KB_GUARD(field_check(ev->peer, AUDIT_FIELD_MAX));
    return field_check(ev->object, AUDIT_FIELD_MAX);
}

static void anchor_if_due(audit_log *a, int64_t seq, int64_t now);

kb_err audit_change_begin(audit_log *a, const audit_event *ev, store_audit *au)
{
    KB_ENSURE_REF(a);
    KB_ENSURE_REF(au);
    memset(au, 0, sizeof(*au));
    KB_ENSURE_REF(ev);
    au->ev = *ev;
    au->ev.result = kb_err_str(KB_OK);
    KB_GUARD(event_check(&au->ev));
    au->mac = append_mac;
    au->mac_ctx = a;
    return KB_OK;
}

void audit_change_end(audit_log *a, store_audit *au, kb_err rc)
{
    audit_event ev;
    kb_err e;
    if (a == NULL || au == NULL)
        return;
    if (rc == KB_OK && au->written) {
        anchor_if_due(a, au->seq, au->ev.time);
        return;
    }
    ev = au->ev;
    if (rc == KB_OK)
        kb_log(KB_LOG_WARN, "audit_change_unwritten", "action", ev.action, NULL);
    else
        ev.result = kb_err_str(rc);
    e = audit_append(a, &ev, NULL);
    if (e != KB_OK)
        kb_log(KB_LOG_ERROR, "audit_append_failed", "action", ev.action, "error", kb_err_str(e),
               NULL);
}

static kb_err append(audit_log *a, const audit_event *ev, const audit_fetch *fetch, size_t n,
                     int64_t *seq_out)
{
    int64_t seq = 0;

    KB_ENSURE_REF(a);
    for (size_t i = 0; i < n; i++)
        KB_GUARD(event_check(&ev[i]));
    KB_GUARD(a->st->ops->audit_append(a->st, ev, fetch, n, append_mac, a, &seq));
    if (seq_out)
        *seq_out = seq;
    anchor_if_due(a, seq, ev[n - 1].time);
    return KB_OK;
}

/* Sign the head if anchor_every_rows rows or anchor_every_secs seconds have passed since the last
 * anchor; a failing anchor is logged (the row itself is stored). */
static void anchor_if_due(audit_log *a, int64_t seq, int64_t now)
{
    bool due;
    pthread_mutex_lock(&a->mu);
    due = (a->every_rows > 0 && seq - a->last_anchor_seq >= a->every_rows) ||
          (a->every_secs > 0 && now - a->last_anchor_time >= a->every_secs);
    pthread_mutex_unlock(&a->mu);
    if (due) {
        kb_err e = audit_anchor_now(a, now);
        if (e != KB_OK)
            kb_log(KB_LOG_ERROR, "audit_anchor_failed", "error", kb_err_str(e), NULL);
    }
}

kb_err audit_anchor_json(audit_log *a, char **out)
{
    audit_anchor *anchors = NULL;
    size_t n = 0;
    char mac_hex[AUDIT_MAC_LEN * 2 + 1], sig_hex[AUDIT_SIG_MAX * 2 + 1];
    json_t *o = NULL;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(a);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_GUARD(a->st->ops->anchor_list(a->st, &anchors, &n));
    KB_ENSURE_OUT(rc, n > 0, KB_ERR_NOT_FOUND);
    kb_hex(anchors[n - 1].mac, AUDIT_MAC_LEN, mac_hex);
    kb_hex(anchors[n - 1].sig, anchors[n - 1].sig_len, sig_hex);
    o = json_pack("{s:I, s:s, s:s, s:I}", "seq", (json_int_t)anchors[n - 1].seq, "mac", mac_hex,
                  "sig", sig_hex, "time", (json_int_t)anchors[n - 1].time);
    KB_ENSURE_OUT(rc, o != NULL, KB_ERR_NOMEM);
    *out = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    KB_ENSURE_OUT(rc, *out != NULL, KB_ERR_NOMEM);
out:
    json_decref(o);
    free(anchors);
    return rc;
}

kb_err audit_export_anchor(audit_log *a, const char *path)
{
    char *text = NULL;
    kb_err rc;
    KB_ENSURE_REF(path);
    KB_GUARD(audit_anchor_json(a, &text));
    rc = kb_file_write_atomic(path, text, strlen(text), 0600);
    free(text);
    return rc;
}

/* Parse an exported anchor strictly: exactly the four keys, hex of the right sizes. */
kb_err audit_anchor_parse(const void *buf, size_t len, audit_anchor *an)
{
    static const char *const keys[] = {"seq", "mac", "sig", "time", NULL};
    json_t *o = NULL, *seq, *mac, *sig, *tm;
    const char *bad = NULL;
    kb_err rc;
    size_t sl;

    KB_ENSURE_REF(an);
    memset(an, 0, sizeof(*an));
    KB_GUARD_OUT(rc, kb_json_parse(buf, len, AUDIT_ANCHOR_FILE_MAX, &o, NULL, 0));
    KB_GUARD_OUT(rc, kb_json_only_keys(o, keys, &bad));
    seq = json_object_get(o, "seq");
    mac = json_object_get(o, "mac");
    sig = json_object_get(o, "sig");
    tm = json_object_get(o, "time");
    KB_ENSURE_OUT(rc,
                  json_is_integer(seq) && json_is_integer(tm) && json_is_string(mac) &&
                      json_is_string(sig),
                  KB_ERR_INVALID);
    an->seq = (int64_t)json_integer_value(seq);
    an->time = (int64_t)json_integer_value(tm);
    KB_ENSURE_OUT(rc, an->seq > 0, KB_ERR_INVALID);
    KB_GUARD_OUT(rc,
                 kb_unhex(json_string_value(mac), json_string_length(mac), an->mac, AUDIT_MAC_LEN));
    sl = json_string_length(sig);
    KB_ENSURE_OUT(rc, sl > 0 && sl % 2 == 0 && sl / 2 <= AUDIT_SIG_MAX, KB_ERR_INVALID);
    KB_GUARD_OUT(rc, kb_unhex(json_string_value(sig), sl, an->sig, sl / 2));
    an->sig_len = sl / 2;
out:
    json_decref(o);
    return rc;
}

static kb_err read_anchor_file(const char *path, audit_anchor *an)
{
    kb_dbuf b;
    kb_err rc;
    kb_dbuf_init(&b, AUDIT_ANCHOR_FILE_MAX);
    rc = kb_file_read(path, AUDIT_ANCHOR_FILE_MAX, &b);
    if (rc == KB_OK)
        rc = audit_anchor_parse(b.p, b.len, an);
    kb_dbuf_free(&b);
    return rc;
}

static int anchor_cmp(const void *x, const void *y)
{
    const audit_anchor *a = x, *b = y;
    return (a->seq > b->seq) - (a->seq < b->seq);
}

static void fail(audit_report *r, int64_t seq, const char *why)
{
    if (!r->ok)
        return; /* keep the first finding */
    r->ok = false;
    r->first_bad_seq = seq;
    r->reason = why;
}

kb_err audit_anchor_read(const char *path, audit_anchor *out)
{
    KB_ENSURE_REF(path);
    KB_ENSURE_REF(out);
    return read_anchor_file(path, out);
}

kb_err audit_verify(audit_log *a, const char *anchor_path, audit_report *report)
{
    audit_anchor an;
    if (anchor_path == NULL)
        return audit_verify_anchor(a, NULL, report);
    KB_ENSURE_REF(report);
    KB_GUARD(read_anchor_file(anchor_path, &an));
    return audit_verify_anchor(a, &an, report);
}

kb_err audit_verify_anchor(audit_log *a, const audit_anchor *extra, audit_report *report)
{
    audit_anchor *anchors = NULL;
    size_t na = 0, ai = 0, cap;
    uint8_t prev[AUDIT_MAC_LEN] = {0};
    int64_t expect = 1, after = 0;
    kb_dbuf c;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(a);
    KB_ENSURE_REF(report);
    memset(report, 0, sizeof(*report));
    report->ok = true;
    report->reason = "ok";
    kb_dbuf_init(&c, AUDIT_CANON_MAX);

    KB_GUARD_OUT(rc, a->st->ops->anchor_list(a->st, &anchors, &na));
    if (extra != NULL) {
        cap = na;
        KB_GUARD_OUT(rc, kb_grow((void **)&anchors, &cap, na, sizeof(*anchors)));
        anchors[na] = *extra;
        na++;
        qsort(anchors, na, sizeof(*anchors), anchor_cmp);
    }
    /* Signatures first: a forged anchor must not be trusted as a reference. */
    for (size_t i = 0; a->verify != NULL && i < na; i++) {
        uint8_t msg[18 + 8 + AUDIT_MAC_LEN + 8];
        size_t ml = 0;
        anchor_msg(&anchors[i], msg, &ml);
        if (a->verify(a->ctx, msg, ml, anchors[i].sig, anchors[i].sig_len) != KB_OK) {
            fail(report, anchors[i].seq, "anchor signature invalid");
            goto out;
        }
    }
    for (;;) {
        audit_row *rows = NULL;
        size_t nr = 0;
        KB_GUARD_OUT(rc, a->st->ops->audit_rows(a->st, after, AUDIT_VERIFY_CHUNK, &rows, &nr));
        for (size_t i = 0; i < nr && report->ok; i++) {
            audit_row *r = &rows[i];
            uint8_t want[AUDIT_MAC_LEN];
            if (r->seq != expect) {
                fail(report, expect, "seq gap (row deleted)");
                break;
            }
            kb_dbuf_reset(&c);
            rc = canon(&c, r->seq, r->time, r->identity, r->peer, r->action, r->object, r->version,
                       r->result);
            if (rc == KB_OK)
                rc = chain_mac(a, prev, &c, want);
            if (rc != KB_OK)
                break;
            if (!kb_ct_eq(want, r->mac, AUDIT_MAC_LEN)) {
                fail(report, r->seq, "mac mismatch (row edited or chain broken)");
                break;
            }
            while (ai < na && anchors[ai].seq < r->seq)
                ai++;
            for (; ai < na && anchors[ai].seq == r->seq; ai++) {
                report->anchor_seq = r->seq;
                if (!kb_ct_eq(anchors[ai].mac, r->mac, AUDIT_MAC_LEN))
                    fail(report, r->seq, "anchor mismatch (chain rewritten)");
            }
            memcpy(prev, r->mac, AUDIT_MAC_LEN);
            report->rows++;
            expect++;
            after = r->seq;
        }
        audit_rows_free(rows, nr);
        if (rc != KB_OK || !report->ok || nr < AUDIT_VERIFY_CHUNK)
            break;
    }
    KB_GUARD_OUT(rc, rc);
    /* Anchors past the end: rows that existed are gone. */
    if (report->ok && na > 0 && anchors[na - 1].seq >= expect)
        fail(report, expect, "truncated (anchor beyond the last row)");
out:
    kb_dbuf_free(&c);
    free(anchors);
    if (rc == KB_OK && !report->ok) {
        char seq[24];
        snprintf(seq, sizeof(seq), "%" PRId64, report->first_bad_seq);
        kb_log(KB_LOG_ERROR, "audit_verify_failed", "first_bad_seq", seq, "reason", report->reason,
               NULL);
    }
    return rc;
}

kb_err audit_row_mac(audit_log *a, const uint8_t prev[AUDIT_MAC_LEN], const audit_row *r,
                     uint8_t mac[AUDIT_MAC_LEN])
{
    kb_dbuf c;
    kb_err rc;
    KB_ENSURE_REF(a);
    KB_ENSURE_REF(r);
    kb_dbuf_init(&c, AUDIT_CANON_MAX);
    rc = canon(&c, r->seq, r->time, r->identity, r->peer, r->action, r->object, r->version,
               r->result);
    if (rc == KB_OK)
        rc = chain_mac(a, prev, &c, mac);
    kb_dbuf_free(&c);
    return rc;
}

kb_err audit_query(audit_log *a, const audit_filter *f, audit_row **out, size_t *n)
{
    audit_filter q;
    KB_ENSURE_REF(a);
    KB_ENSURE_REF(f);
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    *out = NULL;
    *n = 0;
    q = *f;
    if (q.limit == 0)
        q.limit = AUDIT_QUERY_DEFAULT;
    KB_ENSURE(q.limit <= STORE_AUDIT_QUERY_MAX, KB_ERR_TOO_LARGE);
    KB_GUARD(field_check(q.object, AUDIT_FIELD_MAX));
    KB_GUARD(field_check(q.identity, AUDIT_FIELD_MAX));
    return a->st->ops->audit_query(a->st, &q, out, n);
}

void audit_rows_free(audit_row *rows, size_t n)
{
    if (rows == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(rows[i].identity);
        free(rows[i].peer);
        free(rows[i].action);
        free(rows[i].object);
        free(rows[i].result);
    }
    free(rows);
}
