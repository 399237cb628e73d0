/* store_sql_secrets.c - secrets and versions for every SQL backend (store_sql.h), the client
 * reads (the ACL query: what a client may list and fetch), secret status from the fetch log and
 * the expiry notifications; the secret and version row loaders are in store_sql.c.
 */
#include <inttypes.h>

#include "lib/buf.h"
#include "lib/json.h"
#include "lib/log.h"
#include "model.h"
#include "store_sql_int.h"

/* ---- secrets and versions ---- */

/* Insert version `ver` of secret `id` (lock and write transaction held). */
static kb_err insert_version(cx *b, int64_t id, int64_t ver, const store_version_new *v,
                             const char *metadata, store_seal_fn seal, void *seal_ctx,
                             const char *actor, int64_t now)
{
    store_envelope env = {0};
    uint8_t checksum[STORE_CHECKSUM_LEN] = {0};
    uint8_t mac[ROWMAC_LEN];
    stmt *s = NULL;
    kb_err rc;

    KB_GUARD_OUT(rc, seal(seal_ctx, id, ver, &env, checksum));
    KB_ENSURE_OUT(rc, env.wrapped_key != NULL && env.wrapped_key_len > 0 && env.sealed != NULL,
                  KB_ERR_INVALID);
    KB_ENSURE_OUT(rc, env.wrapped_key_len <= STORE_BLOB_MAX && env.sealed_len <= STORE_BLOB_MAX,
                  KB_ERR_TOO_LARGE);
    KB_ENSURE_OUT(rc, env.key_id != NULL && env.key_id[0] != '\0', KB_ERR_INVALID);
    KB_ENSURE_OUT(rc, strnlen(env.key_id, STORE_KEY_ID_MAX + 1) <= STORE_KEY_ID_MAX,
                  KB_ERR_TOO_LARGE);
    KB_GUARD_OUT(rc,
                 rowmac_version(b->mac, id, ver, checksum, sizeof(checksum),
                                (int64_t)v->content_len, metadata, v->expires_at, actor, now, mac));
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO versions(secret_id, version, wrapped_key, key_id, sealed, "
                          "checksum, content_len, metadata, expires_at, created_by, created_at, "
                          "mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, ver));
    KB_GUARD_OUT(rc, bind_blob(s, 3, env.wrapped_key, env.wrapped_key_len));
    KB_GUARD_OUT(rc, bind_text(s, 4, env.key_id));
    KB_GUARD_OUT(rc, bind_blob(s, 5, env.sealed, env.sealed_len));
    KB_GUARD_OUT(rc, bind_blob(s, 6, checksum, sizeof(checksum)));
    KB_GUARD_OUT(rc, bind_i64(s, 7, (int64_t)v->content_len));
    KB_GUARD_OUT(rc, bind_text(s, 8, metadata));
    KB_GUARD_OUT(rc, bind_i64(s, 9, v->expires_at));
    KB_GUARD_OUT(rc, bind_text(s, 10, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 11, now));
    KB_GUARD_OUT(rc, bind_blob(s, 12, mac, sizeof(mac)));
    KB_GUARD_OUT(rc, step_done(b, s, "version_insert"));
    done(s);
    s = NULL;
    KB_GUARD_OUT(rc, rowmac_latest(b->mac, id, ver, mac));
    KB_GUARD_OUT(rc, prep(b,
                          "UPDATE secrets SET latest_version = ?1, updated_by = ?2, "
                          "updated_at = ?3, latest_mac = ?5 WHERE id = ?4",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, ver));
    KB_GUARD_OUT(rc, bind_text(s, 2, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 3, now));
    KB_GUARD_OUT(rc, bind_i64(s, 4, id));
    KB_GUARD_OUT(rc, bind_blob(s, 5, mac, sizeof(mac)));
    KB_GUARD_OUT(rc, step_done(b, s, "secret_latest"));
out:
    done(s);
    store_envelope_clear(&env);
    kb_wipe(checksum, sizeof(checksum));
    return rc;
}

/* Rewrite the MAC'd fields of a secret with a fresh MAC (lock and transaction held). */
static kb_err secret_write_flags(cx *b, const store_secret *sec, const char *actor, int64_t now)
{
    uint8_t mac[ROWMAC_LEN];
    stmt *s = NULL;
    kb_err rc;
    KB_GUARD(rowmac_secret(b->mac, sec->id, sec->name, sec->owner_group_id, sec->cloud_sync,
                           sec->deleted_at, mac));
    KB_GUARD(prep(b,
                  "UPDATE secrets SET description = ?1, owner_group_id = ?2, cloud_sync = ?3, "
                  "deleted_at = ?4, updated_by = ?5, updated_at = ?6, mac = ?7 WHERE id = ?8",
                  &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, sec->description));
    if (sec->owner_group_id > 0)
        KB_GUARD_OUT(rc, bind_i64(s, 2, sec->owner_group_id));
    else
        KB_GUARD_OUT(rc, bind_null(s, 2));
    KB_GUARD_OUT(rc, bind_i64(s, 3, sec->cloud_sync ? 1 : 0));
    KB_GUARD_OUT(rc, bind_i64(s, 4, sec->deleted_at));
    KB_GUARD_OUT(rc, bind_text(s, 5, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 6, now));
    KB_GUARD_OUT(rc, bind_blob(s, 7, mac, sizeof(mac)));
    KB_GUARD_OUT(rc, bind_i64(s, 8, sec->id));
    KB_GUARD_OUT(rc, step_done(b, s, "secret_update"));
out:
    done(s);
    return rc;
}

kb_err store_sql_secret_create(store *st, const store_secret_new *sn, const store_version_new *v,
                               const char *metadata, store_seal_fn seal, void *seal_ctx,
                               const char *actor, int64_t now, int64_t *id_out, store_audit *au)
{
    cx *b;
    stmt *s = NULL;
    store_secret sec = {0};
    kb_err rc;

    b = WR(st);
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    if (sn->owner_group_id > 0)
        KB_GUARD_OUT(rc,
                     store_sql_exists(b, "SELECT 1 FROM groups WHERE id = ?1", sn->owner_group_id));
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO secrets(name, description, cloud_sync, created_by, "
                          "created_at, updated_by, updated_at, mac) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?5, ?6) RETURNING id",
                          &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, sn->name));
    KB_GUARD_OUT(rc, bind_text(s, 2, sn->description));
    KB_GUARD_OUT(rc, bind_i64(s, 3, sn->cloud_sync ? 1 : 0));
    KB_GUARD_OUT(rc, bind_text(s, 4, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 5, now));
    KB_GUARD_OUT(rc, bind_blob(s, 6, "", 0));
    KB_GUARD_OUT(rc, step_row(b, s, "secret_insert"));
    /* The MAC binds the id, which exists only now: write it in the same transaction. */
    sec.id = col_i64(s, 0);
    sec.name = (char *)sn->name;
    sec.description = (char *)(sn->description ? sn->description : "");
    sec.owner_group_id = sn->owner_group_id;
    sec.cloud_sync = sn->cloud_sync;
    KB_GUARD_OUT(rc, secret_write_flags(b, &sec, actor, now));
    KB_GUARD_OUT(rc, insert_version(b, sec.id, 1, v, metadata, seal, seal_ctx, actor, now));
    *id_out = sec.id;
    if (au != NULL)
        au->ev.version = 1;
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err max_content_len(cx *b, int64_t secret_id, int64_t *out)
{
    stmt *s = NULL;
    kb_err rc;
    KB_GUARD(
        prep(b, "SELECT coalesce(max(content_len), 0) FROM versions WHERE secret_id = ?1", &s));
    rc = bind_i64(s, 1, secret_id);
    if (rc == KB_OK)
        rc = step_row(b, s, "max_content_len");
    if (rc == KB_OK)
        *out = col_i64(s, 0);
    done(s);
    return rc;
}

/* The content length of the secret's latest version (0 if it has none). */
static kb_err latest_content_len(cx *b, int64_t secret_id, int64_t version, int64_t *out)
{
    stmt *s = NULL;
    kb_err rc;
    KB_GUARD(prep(b,
                  "SELECT coalesce(max(content_len), 0) FROM versions WHERE secret_id = ?1 "
                  "AND version = ?2",
                  &s));
    rc = bind_i64(s, 1, secret_id);
    if (rc == KB_OK)
        rc = bind_i64(s, 2, version);
    if (rc == KB_OK)
        rc = step_row(b, s, "latest_content_len");
    if (rc == KB_OK)
        *out = col_i64(s, 0);
    done(s);
    return rc;
}

kb_err store_sql_version_add(store *st, int64_t secret_id, const store_version_new *v,
                             const char *metadata, store_seal_fn seal, void *seal_ctx,
                             const char *actor, int64_t now, int64_t *version_out, store_audit *au)
{
    cx *b;
    store_secret sec = {0};
    kb_err rc;

    b = WR(st);
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, store_sql_secret_fetch(b, NULL, secret_id, &sec));
    KB_ENSURE_OUT(rc, sec.deleted_at == 0, KB_ERR_CONFLICT);
    KB_GUARD_OUT(rc, model_content_len_check(v->content_len, st->cfg.content_max, sec.cloud_sync));
    KB_ENSURE_OUT(rc, sec.latest_version < INT64_MAX, KB_ERR_CONFLICT);
    KB_GUARD_OUT(rc, insert_version(b, sec.id, sec.latest_version + 1, v, metadata, seal, seal_ctx,
                                    actor, now));
    *version_out = sec.latest_version + 1;
    if (au != NULL)
        au->ev.version = sec.latest_version + 1;
out:
    store_secret_clear(&sec);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

kb_err store_sql_secret_update(store *st, int64_t secret_id, const store_secret_patch *p,
                               const char *actor, int64_t now, store_audit *au)
{
    cx *b;
    store_secret sec = {0};
    char *old_desc = NULL;
    kb_err rc;

    b = WR(st);
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, store_sql_secret_fetch(b, NULL, secret_id, &sec));
    if (p->cloud_sync == 1 && !sec.cloud_sync) {
        int64_t maxlen = 0;
        KB_GUARD_OUT(rc, max_content_len(b, secret_id, &maxlen));
        KB_ENSURE_OUT(rc, maxlen <= MODEL_CLOUD_CONTENT_MAX, KB_ERR_TOO_LARGE);
        /* What the syncer would write is the latest version: it cannot be empty. */
        KB_GUARD_OUT(rc, latest_content_len(b, secret_id, sec.latest_version, &maxlen));
        KB_ENSURE_OUT(rc, maxlen > 0, KB_ERR_INVALID);
    }
    if (p->cloud_sync >= 0)
        sec.cloud_sync = p->cloud_sync == 1;
    if (p->owner_group_id > 0)
        KB_GUARD_OUT(rc,
                     store_sql_exists(b, "SELECT 1 FROM groups WHERE id = ?1", p->owner_group_id));
    if (p->owner_group_id >= 0)
        sec.owner_group_id = p->owner_group_id;
    if (p->description != NULL) {
        old_desc = sec.description;
        sec.description = (char *)p->description;
    }
    KB_GUARD_OUT(rc, secret_write_flags(b, &sec, actor, now));
out:
    if (old_desc != NULL) {
        sec.description = old_desc;
    }
    store_secret_clear(&sec);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

kb_err store_sql_secret_set_deleted(store *st, int64_t secret_id, bool deleted, const char *actor,
                                    int64_t now, store_audit *au)
{
    cx *b;
    store_secret sec = {0};
    kb_err rc;

    b = WR(st);
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, store_sql_secret_fetch(b, NULL, secret_id, &sec));
    KB_ENSURE_OUT(rc, (sec.deleted_at != 0) != deleted, KB_ERR_CONFLICT);
    sec.deleted_at = deleted ? now : 0;
    KB_GUARD_OUT(rc, secret_write_flags(b, &sec, actor, now));
out:
    store_secret_clear(&sec);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

kb_err store_sql_secret_purge(store *st, int64_t secret_id, store_audit *au)
{
    cx *b;
    store_secret sec = {0};
    stmt *s = NULL;
    kb_err rc;

    b = WR(st);
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, store_sql_secret_fetch(b, NULL, secret_id, &sec));
    KB_ENSURE_OUT(rc, sec.deleted_at != 0, KB_ERR_CONFLICT);
    /* ON DELETE CASCADE removes versions (envelopes), grants and the fetch log; secure_delete
     * overwrites the freed pages. */
    KB_GUARD_OUT(rc, prep(b, "DELETE FROM secrets WHERE id = ?1", &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, secret_id));
    KB_GUARD_OUT(rc, step_done(b, s, "secret_purge"));
out:
    done(s);
    store_secret_clear(&sec);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

kb_err store_sql_secret_get(store *st, const char *name, int64_t id, bool include_deleted,
                            store_secret *out)
{
    cx *b;
    kb_err rc;
    b = RD(st);
    rc = store_sql_secret_fetch(b, name, id, out);
    PUT(st, b);
    if (rc == KB_OK && !include_deleted && out->deleted_at != 0) {
        store_secret_clear(out);
        rc = KB_ERR_NOT_FOUND;
    }
    return rc;
}

/* Collect (secret, version[, envelope]) rows; rows failing their MAC are dropped (logged), and
 * with live_only, deleted secrets are dropped after verification (the SQL filter is only a
 * hint on unverified columns). */
typedef struct {
    bool live_only, cloud_only;
} records_filter;

static void records_free(void *arr, size_t n)
{
    store_records_free(arr, n);
}

/* A secret row and its latest version; rows failing a MAC (logged) or the filter, and repeats
 * of the previous secret, are left out. */
static kb_err record_row(cx *b, stmt *s, void *ctx, void *item, const void *prev, bool *keep)
{
    const records_filter *f = ctx;
    const store_record *last = prev;
    store_record *rec = item;
    kb_err e = store_sql_load_secret(b, s, 0, &rec->secret);
    *keep = false;
    if (e == KB_ERR_INTEGRITY)
        return KB_OK;
    KB_GUARD(e);
    if ((f->live_only && rec->secret.deleted_at != 0) ||
        (f->cloud_only && !rec->secret.cloud_sync) ||
        (last != NULL && last->secret.id == rec->secret.id)) {
        store_record_clear(rec);
        return KB_OK;
    }
    e = store_sql_load_latest(b, s, rec);
    if (e != KB_OK) {
        store_record_clear(rec);
        return e == KB_ERR_INTEGRITY ? KB_OK : e;
    }
    *keep = true;
    return KB_OK;
}

static kb_err collect_records(cx *b, stmt *s, bool live_only, bool cloud_only, store_record **out,
                              size_t *n)
{
    records_filter f = {live_only, cloud_only};
    return store_sql_collect(b, s, sizeof(**out), record_row, &f, records_free, "collect_records",
                             (void **)out, n);
}

kb_err store_sql_secret_list(store *st, bool include_deleted, store_record **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    rc = prep(b,
              "SELECT " SECRET_COLS ", " VERSION_COLS " FROM secrets s JOIN versions v ON "
              "v.secret_id = s.id AND v.version = s.latest_version ORDER BY s.name, s.id",
              &s);
    if (rc == KB_OK)
        rc = collect_records(b, s, !include_deleted, false, out, n);
    done(s);
    PUT(st, b);
    return rc;
}

kb_err store_sql_secret_list_page(store *st, bool include_deleted, const char *after, size_t limit,
                                  store_record **out, size_t *n, char **next)
{
    cx *b = RD(st);
    stmt *s = NULL;
    store_record *arr = NULL;
    size_t cnt = 0, cap = 0, seen = 0, lastcap = 0;
    char *last = NULL; /* name of the last row examined: the next page's cursor */
    kb_err rc = KB_OK;
    int r;

    /* Names are UNIQUE, so "name > cursor" pages without repeats or gaps. */
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " SECRET_COLS ", " VERSION_COLS " FROM secrets s JOIN versions v "
                          "ON v.secret_id = s.id AND v.version = s.latest_version "
                          "WHERE s.name > ?1 ORDER BY s.name LIMIT ?2",
                          &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, after));
    KB_GUARD_OUT(rc, bind_i64(s, 2, (int64_t)limit));
    while ((r = step(s)) == STORE_SQL_ROW) {
        store_record rec;
        const char *nm = col_text(s, 1);
        size_t nl = col_len(s, 1);
        kb_err e;
        seen++;
        /* A name with a NUL inside (only by tampering) would make a cursor that does not
         * advance: refuse the page rather than loop. */
        if (nm == NULL || memchr(nm, 0, nl) != NULL) {
            store_log_integrity("secrets", col_i64(s, 0), 0);
            KB_ENSURE_OUT(rc, false, KB_ERR_INTEGRITY);
        }
        if (nl >= lastcap) { /* room for nl bytes and the NUL (nl + 1 could wrap) */
            char *p = realloc(last, nl + 1);
            KB_ENSURE_OUT(rc, p != NULL, KB_ERR_NOMEM);
            last = p;
            lastcap = nl + 1;
        }
        if (nl > 0)
            memcpy(last, nm, nl);
        last[nl] = '\0';
        memset(&rec, 0, sizeof(rec));
        e = store_sql_load_secret(b, s, 0, &rec.secret);
        if (e == KB_ERR_INTEGRITY)
            continue;
        KB_GUARD_OUT(rc, e);
        if (!include_deleted && rec.secret.deleted_at != 0) {
            store_secret_clear(&rec.secret);
            continue;
        }
        e = store_sql_load_latest(b, s, &rec);
        if (e == KB_ERR_INTEGRITY) {
            store_secret_clear(&rec.secret);
            continue;
        }
        if (e == KB_OK)
            e = kb_grow((void **)&arr, &cap, cnt, sizeof(*arr));
        if (e != KB_OK) {
            store_record_clear(&rec);
            KB_GUARD_OUT(rc, e);
        }
        arr[cnt++] = rec;
    }
    if (r != STORE_SQL_DONE)
        rc = b->drv->db_err(b, r, "secret_list_page");
out:
    done(s);
    PUT(st, b);
    if (rc != KB_OK) {
        free(last);
        store_records_free(arr, cnt);
        return rc;
    }
    if (seen < limit) { /* the last page */
        free(last);
        last = NULL;
    }
    *out = arr;
    *n = cnt;
    *next = last;
    return KB_OK;
}

static void versions_free(void *arr, size_t n)
{
    store_versions_free(arr, n);
}

/* A version row; one failing its MAC is left out (logged). */
static kb_err version_row(cx *b, stmt *s, void *ctx, void *item, const void *prev, bool *keep)
{
    kb_err e = store_sql_load_version(b, s, 0, item);
    (void)ctx;
    (void)prev;
    if (e == KB_ERR_INTEGRITY) {
        *keep = false; /* load_version cleared the slot */
        return KB_OK;
    }
    return e;
}

kb_err store_sql_version_list(store *st, int64_t secret_id, store_version **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;

    b = RD(st);
    KB_GUARD_OUT(rc, store_sql_exists(b, "SELECT 1 FROM secrets WHERE id = ?1", secret_id));
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " VERSION_COLS
                          " FROM versions v WHERE v.secret_id = ?1 ORDER BY v.version DESC",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, secret_id));
    rc = store_sql_collect(b, s, sizeof(**out), version_row, NULL, versions_free, "version_list",
                           (void **)out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* Version `ver` (0 = latest) of an already verified secret, with its envelope (lock held). */
static kb_err version_fetch(cx *b, const store_secret *sec, int64_t ver, store_record *out)
{
    stmt *s = NULL;
    kb_err rc;
    memset(&out->version, 0, sizeof(out->version));
    memset(&out->env, 0, sizeof(out->env));
    if (ver == 0) {
        /* The latest version: latest_version must be the one the server wrote (latest_mac,
         * re-read here with the version row so both come from one statement). */
        uint8_t want[ROWMAC_LEN];
        KB_GUARD(prep(b,
                      "SELECT " VERSION_COLS ", " ENV_COLS ", s.latest_version, s.latest_mac "
                      "FROM secrets s JOIN versions v ON v.secret_id = s.id AND "
                      "v.version = s.latest_version WHERE s.id = ?1",
                      &s));
        KB_GUARD_OUT(rc, bind_i64(s, 1, sec->id));
        KB_GUARD_OUT(rc, step_row(b, s, "version_fetch_latest"));
        KB_GUARD_OUT(rc, rowmac_latest(b->mac, sec->id, col_i64(s, VERSION_NCOLS + 3), want));
        if (!col_mac_ok(s, VERSION_NCOLS + 4, want)) {
            store_log_integrity("secrets.latest_version", sec->id, col_i64(s, VERSION_NCOLS + 3));
            KB_ENSURE_OUT(rc, false, KB_ERR_INTEGRITY);
        }
    } else {
        KB_GUARD(prep(b,
                      "SELECT " VERSION_COLS ", " ENV_COLS
                      " FROM versions v WHERE v.secret_id = ?1 AND v.version = ?2",
                      &s));
        KB_GUARD_OUT(rc, bind_i64(s, 1, sec->id));
        KB_GUARD_OUT(rc, bind_i64(s, 2, ver));
        KB_GUARD_OUT(rc, step_row(b, s, "version_fetch"));
    }
    KB_GUARD_OUT(rc, store_sql_load_version(b, s, 0, &out->version));
    rc = store_sql_load_env(s, VERSION_NCOLS, &out->env);
    if (rc != KB_OK)
        store_version_clear(&out->version);
out:
    done(s);
    return rc;
}

kb_err store_sql_version_get(store *st, int64_t secret_id, int64_t version, store_record *out)
{
    cx *b;
    kb_err rc;
    memset(out, 0, sizeof(*out));
    b = RD(st);
    rc = store_sql_secret_fetch(b, NULL, secret_id, &out->secret);
    if (rc == KB_OK) {
        rc = version_fetch(b, &out->secret, version, out);
        if (rc != KB_OK)
            store_secret_clear(&out->secret);
    }
    PUT(st, b);
    return rc;
}

kb_err store_sql_secrets_expiring(store *st, int64_t from, int64_t to, store_record **out,
                                  size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " SECRET_COLS ", " VERSION_COLS
                          " FROM secrets s JOIN versions v ON v.secret_id = s.id AND "
                          "v.version = s.latest_version WHERE s.deleted_at = 0 AND "
                          "v.expires_at > 0 AND v.expires_at BETWEEN ?1 AND ?2 "
                          "ORDER BY v.expires_at, s.name",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, from));
    KB_GUARD_OUT(rc, bind_i64(s, 2, to));
    rc = collect_records(b, s, true, false, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* ---- client reads ---- */

/* A loaded client as a reader: its effective flags (store.c's policy), and refused when
 * disabled (c cleared). */
static kb_err reader_usable(cx *b, store_client *c)
{
    store_client_effective(b->st, c);
    if (!c->enabled) {
        store_client_clear(c);
        return KB_ERR_DENIED;
    }
    return KB_OK;
}

/* The verified, enabled client by id (lock held). */
static kb_err reader_client(cx *b, int64_t client_id, store_client *c)
{
    KB_GUARD(store_sql_client_fetch(b, NULL, client_id, c));
    return reader_usable(b, c);
}

kb_err store_sql_readable_list(store *st, int64_t client_id, store_record **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    store_record *arr = NULL;
    size_t cnt = 0, cap = 0;
    store_client c = {0};
    kb_err rc;
    int r;

    b = RD(st);
    rc = tx_begin(b, STORE_SQL_TX_READ); /* one snapshot for the client row and the listing */
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, b->drv->state_check(b));
    KB_GUARD_OUT(rc, reader_client(b, client_id, &c));
    /* Every (membership, grant) path to every candidate secret, grouped by secret; each link and
     * the secret row are verified below, and the flags re-checked on verified values. */
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " SECRET_COLS ", " VERSION_COLS ", m.group_id, m.mac, gr.mac "
                          "FROM memberships m JOIN grants gr ON gr.group_id = m.group_id "
                          "JOIN secrets s ON s.id = gr.secret_id "
                          "JOIN versions v ON v.secret_id = s.id AND "
                          "v.version = s.latest_version "
                          "WHERE m.client_id = ?1 AND s.deleted_at = 0 "
                          "ORDER BY s.name, s.id",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, client_id));
    while ((r = step(s)) == STORE_SQL_ROW) {
        const int c0 = SECRET_NCOLS + VERSION_NCOLS;
        int64_t sid = col_i64(s, 0);
        int64_t gid = col_i64(s, c0);
        uint8_t want[ROWMAC_LEN];
        store_record rec;
        kb_err e;

        if (cnt > 0 && arr[cnt - 1].secret.id == sid)
            continue; /* already reachable through a verified path */
        KB_GUARD_OUT(rc, rowmac_membership(b->mac, client_id, gid, want));
        if (!col_mac_ok(s, c0 + 1, want)) {
            store_log_integrity("memberships", client_id, gid);
            continue;
        }
        KB_GUARD_OUT(rc, rowmac_grant(b->mac, gid, sid, want));
        if (!col_mac_ok(s, c0 + 2, want)) {
            store_log_integrity("grants", gid, sid);
            continue;
        }
        memset(&rec, 0, sizeof(rec));
        e = store_sql_load_secret(b, s, 0, &rec.secret);
        if (e == KB_ERR_INTEGRITY)
            continue;
        KB_GUARD_OUT(rc, e);
        if (rec.secret.deleted_at != 0 || (c.cloud && !rec.secret.cloud_sync)) {
            store_secret_clear(&rec.secret);
            continue;
        }
        e = store_sql_load_latest(b, s, &rec);
        if (e == KB_ERR_INTEGRITY) {
            store_secret_clear(&rec.secret);
            continue;
        }
        if (e == KB_OK)
            e = kb_grow((void **)&arr, &cap, cnt, sizeof(*arr));
        if (e != KB_OK) {
            store_record_clear(&rec);
            KB_GUARD_OUT(rc, e);
        }
        arr[cnt++] = rec;
    }
    if (r != STORE_SQL_DONE)
        rc = b->drv->db_err(b, r, "readable_list");
out:
    done(s);
    store_client_clear(&c);
    rc = tx_end(b, rc, NULL);
    PUT(st, b);
    if (rc != KB_OK) {
        store_records_free(arr, cnt);
        return rc;
    }
    *out = arr;
    *n = cnt;
    return KB_OK;
}

/* Columns of STORE_SQL_READABLE (store_sql.h). */
#define RD_I 1
#define RD_C0 2
#define RD_S0 (RD_C0 + CLIENT_NCOLS)
#define RD_V0 (RD_S0 + SECRET_NCOLS)
#define RD_E0 (RD_V0 + VERSION_NCOLS)
#define RD_A0 (RD_E0 + 3)

/* What one readable_get_batch call shares between its names. */
typedef struct {
    int64_t client_id;
    int64_t floor;  /* the state counter seen before the statement */
    store_client c; /* loaded, verified, effective and enabled */
} read_call;

/* The client row of the first row (every row carries it), verified once per call. */
static kb_err read_call_client(cx *b, stmt *s, read_call *call)
{
    KB_GUARD(store_sql_load_client(b, s, RD_C0, &call->c));
    return reader_usable(b, &call->c);
}

/* The state counter c the statement read, once it is reset (on SQLite a statement still
 * stepping holds its snapshot, which the full check must not share): the one already seen is
 * accepted; any other runs the full check, and one below the counter seen before the statement
 * (a rolled-back database) is refused even if the check then passes. */
static kb_err read_call_state(cx *b, const read_call *call, int64_t c)
{
    if (c == call->floor)
        return KB_OK;
    KB_GUARD(b->drv->state_check(b));
    if (c < call->floor) {
        kb_log(KB_LOG_ERROR, "store_read_snapshot_old", "msg",
               "a read saw a state counter below the one already seen: refused", NULL);
        return KB_ERR_UNAVAILABLE;
    }
    return KB_OK;
}

/* The state check and the client the old way, which name the failure: for a statement that
 * found no row (no state row, or no such client) and a call that looked up no name. */
static kb_err read_call_slow(cx *b, read_call *call)
{
    KB_GUARD(b->drv->state_check(b));
    return reader_client(b, call->client_id, &call->c);
}

/* Is the current row's path (membership, grant) present with both links verified? */
static kb_err path_check(cx *b, stmt *s, int64_t client_id, int64_t secret_id, bool *granted,
                         bool *tampered)
{
    uint8_t want[ROWMAC_LEN];
    int64_t gid = col_i64(s, RD_A0);
    *granted = false;
    if (!col_isint(s, RD_A0))
        return KB_OK; /* no path: the LEFT JOIN's NULLs */
    KB_GUARD(rowmac_membership(b->mac, client_id, gid, want));
    if (!col_mac_ok(s, RD_A0 + 1, want)) {
        store_log_integrity("memberships", client_id, gid);
        *tampered = true;
        return KB_OK;
    }
    KB_GUARD(rowmac_grant(b->mac, gid, secret_id, want));
    if (!col_mac_ok(s, RD_A0 + 2, want)) {
        store_log_integrity("grants", gid, secret_id);
        *tampered = true;
        return KB_OK;
    }
    *granted = true;
    return KB_OK;
}

/* The version part of the current row, for a granted read (*one: KB_OK, KB_ERR_NOT_FOUND for no
 * such version, KB_ERR_INTEGRITY for a forged version row or latest_version). */
static kb_err read_version(cx *b, stmt *s, int64_t version, store_record *out)
{
    if (!col_isint(s, RD_V0))
        return KB_ERR_NOT_FOUND;
    if (version == 0)
        KB_GUARD(store_sql_latest_check(b, s, RD_S0, &out->secret));
    KB_GUARD(store_sql_load_version(b, s, RD_V0, &out->version));
    return store_sql_load_env(s, RD_E0, &out->env);
}

/* The rows of one asked name (the statement is on its first; on return *r is the next step's
 * result, on the next name's first row or past the end). *one gets the outcome: KB_OK with out
 * filled, KB_ERR_NOT_FOUND, KB_ERR_TAMPERED (a forged secret row, or forged links on every
 * path), KB_ERR_INTEGRITY (a forged version or latest_version). The return value is the call's
 * (memory, database). */
static kb_err name_rows(cx *b, stmt *s, const read_call *call, int64_t version, store_record *out,
                        kb_err *one, int *r)
{
    int64_t i = col_i64(s, RD_I);
    bool eligible = false, granted = false, tampered = false;
    kb_err rc = KB_OK;

    memset(out, 0, sizeof(*out));
    *one = KB_ERR_NOT_FOUND;
    if (col_isint(s, RD_S0)) {
        kb_err e = store_sql_load_secret(b, s, RD_S0, &out->secret);
        if (e == KB_ERR_INTEGRITY)
            *one = KB_ERR_TAMPERED; /* a forged secret row */
        else
            KB_GUARD_OUT(rc, e);
        eligible =
            e == KB_OK && out->secret.deleted_at == 0 && (!call->c.cloud || out->secret.cloud_sync);
    }
    /* Every row of the name carries the same secret and version: the first verified path
     * decides, the rest are stepped over. */
    for (;;) {
        if (eligible && !granted) {
            KB_GUARD_OUT(rc,
                         path_check(b, s, call->client_id, out->secret.id, &granted, &tampered));
            if (granted)
                *one = read_version(b, s, version, out);
        }
        *r = step(s);
        if (*r != STORE_SQL_ROW || col_i64(s, RD_I) != i)
            break;
    }
    if (eligible && !granted && tampered)
        *one = KB_ERR_TAMPERED;
    if (*one == KB_ERR_NOMEM || *one == KB_ERR_DB)
        rc = *one; /* not an answer about this name */
out:
    if (rc != KB_OK || *one != KB_OK)
        store_record_clear(out);
    return rc;
}

/* The asked names (errs[i] == KB_OK) as the JSON STORE_SQL_READABLE reads: [[i, "name", ver]].
 * *m: how many. */
static kb_err names_json(const char *const *names, const int64_t *versions, size_t n,
                         const kb_err *errs, kb_dbuf *q, size_t *m)
{
    *m = 0;
    KB_GUARD(kb_dbuf_addc(q, '['));
    for (size_t i = 0; i < n; i++) {
        if (errs[i] != KB_OK)
            continue;
        KB_GUARD(kb_dbuf_addf(q, "%s[%zu,", *m > 0 ? "," : "", i));
        KB_GUARD(kb_json_put_str(q, names[i], strlen(names[i])));
        KB_GUARD(kb_dbuf_addf(q, ",%" PRId64 "]", versions[i]));
        (*m)++;
    }
    return kb_dbuf_addc(q, ']');
}

kb_err store_sql_readable_get_batch(store *st, int64_t client_id, const char *const *names,
                                    const int64_t *versions, size_t n, store_record *out,
                                    kb_err *errs)
{
    read_call call = {.client_id = client_id, .floor = atomic_load(&st->state_seen)};
    kb_dbuf q;
    size_t m = 0, seen = 0;
    int64_t prev = -1, counter;
    stmt *s = NULL;
    cx *b;
    kb_err rc;
    int r;

    kb_dbuf_init(&q, STORE_BATCH_MAX * (MODEL_NAME_MAX + 48) + 2);
    b = RD(st);
    /* One statement for every name: one snapshot, one round trip, no transaction. */
    KB_GUARD_OUT(rc, names_json(names, versions, n, errs, &q, &m));
    if (m == 0) {
        rc = read_call_slow(b, &call);
        goto out;
    }
    KB_GUARD_OUT(rc, prep(b, SQL(b, STORE_SQL_Q_READABLE), &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, client_id));
    KB_GUARD_OUT(rc, bind_text(s, 2, kb_dbuf_str(&q)));
    r = step(s);
    if (r == STORE_SQL_DONE) {
        /* No state row or no such client: the slow path names which. If both are there now
         * (the client was created since), the names were not found. */
        done(s);
        s = NULL;
        KB_GUARD_OUT(rc, read_call_slow(b, &call));
        for (size_t i = 0; i < n; i++)
            if (errs[i] == KB_OK)
                errs[i] = KB_ERR_NOT_FOUND;
        goto out;
    }
    KB_ENSURE_OUT(rc, r == STORE_SQL_ROW, b->drv->db_err(b, r, "readable_get"));
    counter = col_i64(s, 0);
    KB_GUARD_OUT(rc, read_call_client(b, s, &call));
    while (r == STORE_SQL_ROW) {
        int64_t i = col_i64(s, RD_I);
        /* Names come in the order given, each asked once. */
        KB_ENSURE_OUT(rc, i > prev && (uint64_t)i < n && errs[i] == KB_OK, KB_ERR_INTERNAL);
        prev = i;
        seen++;
        KB_GUARD_OUT(rc, name_rows(b, s, &call, versions[i], &out[i], &errs[i], &r));
    }
    KB_ENSURE_OUT(rc, r == STORE_SQL_DONE, b->drv->db_err(b, r, "readable_get"));
    KB_ENSURE_OUT(rc, seen == m, KB_ERR_INTERNAL);
    done(s);
    s = NULL;
    rc = read_call_state(b, &call, counter);
out:
    done(s);
    if (rc != KB_OK)
        for (size_t i = 0; i < n; i++)
            store_record_clear(&out[i]);
    store_client_clear(&call.c);
    kb_dbuf_free(&q);
    PUT(st, b);
    return rc;
}

/* ---- fetch log (the upsert and fetch_record: store_sql_audit.c) ---- */

static void fetches_free(void *arr, size_t n)
{
    store_fetches_free(arr, n);
}

static kb_err fetch_row(cx *b, stmt *s, void *ctx, void *item, const void *prev, bool *keep)
{
    store_fetch *f = item;
    (void)b;
    (void)ctx;
    (void)prev;
    (void)keep;
    f->client_id = col_i64(s, 0);
    KB_GUARD(col_str(s, 1, &f->spiffe_id));
    f->secret_id = col_i64(s, 2);
    f->version = col_i64(s, 3);
    f->fetched_at = col_i64(s, 4);
    return KB_OK;
}

kb_err store_sql_secret_status(store *st, int64_t secret_id, store_fetch **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, store_sql_exists(b, "SELECT 1 FROM secrets WHERE id = ?1", secret_id));
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT f.client_id, c.spiffe_id, f.secret_id, f.version, f.fetched_at "
                          "FROM fetch_log f JOIN clients c ON c.id = f.client_id "
                          "WHERE f.secret_id = ?1 ORDER BY c.spiffe_id",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, secret_id));
    rc = store_sql_collect(b, s, sizeof(**out), fetch_row, NULL, fetches_free, "secret_status",
                           (void **)out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* ---- expiry notifications (notify.h) ---- */

kb_err store_sql_notify_sent(store *st, int64_t secret_id, int64_t version, int64_t window,
                             bool *sent)
{
    cx *b = RD(st);
    stmt *s = NULL;
    kb_err rc;
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT 1 FROM notify_sent WHERE secret_id = ?1 AND version = ?2 "
                          "AND window_secs = ?3",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, secret_id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, version));
    KB_GUARD_OUT(rc, bind_i64(s, 3, window));
    rc = step_row(b, s, "notify_sent");
    *sent = rc == KB_OK;
    if (rc == KB_ERR_NOT_FOUND)
        rc = KB_OK;
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* The mark and the delivery's audit row in one transaction: a crash can leave neither (the
 * webhook is sent again) but never a mark without its row or a row without its mark. */
kb_err store_sql_notify_mark(store *st, int64_t secret_id, int64_t version, int64_t window,
                             int64_t now, store_audit *au)
{
    cx *b = WR(st);
    stmt *s = NULL;
    kb_err rc = tx_begin(b, STORE_SQL_TX_LOG);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO notify_sent(secret_id, version, window_secs, sent_at) "
                          "VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, secret_id));
    KB_GUARD_OUT(rc, bind_i64(s, 2, version));
    KB_GUARD_OUT(rc, bind_i64(s, 3, window));
    KB_GUARD_OUT(rc, bind_i64(s, 4, now));
    rc = step_done(b, s, "notify_mark");
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}
