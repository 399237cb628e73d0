/* store_sql.c - the shared op layer's core (store_sql.h): the loop behind every multi-row read.
 */
#include "store_sql_int.h"

#include "lib/buf.h"

kb_err store_sql_collect(cx *b, stmt *s, size_t elem, row_fn row, void *ctx,
                         items_free_fn free_items, const char *what, void **out, size_t *n)
{
    char *arr = NULL;
    size_t cnt = 0, cap = 0;
    kb_err rc = KB_OK;
    int r;
    while ((r = step(s)) == STORE_SQL_ROW) {
        bool keep = true;
        KB_GUARD_OUT(rc, kb_grow((void **)&arr, &cap, cnt, elem));
        KB_GUARD_OUT(
            rc, row(b, s, ctx, arr + cnt * elem, cnt > 0 ? arr + (cnt - 1) * elem : NULL, &keep));
        if (keep)
            cnt++;
    }
    if (r != STORE_SQL_DONE)
        rc = b->drv->db_err(b, r, what);
out:
    if (rc != KB_OK) {
        /* Slots past cnt are all-zero except a half-filled one: free it too. */
        free_items(arr, cnt < cap ? cnt + 1 : cnt);
        return rc;
    }
    *out = arr;
    *n = cnt;
    return KB_OK;
}

/* ---- per-handle state ---- */

kb_err store_sql_pool_init(store_sql_pool *p, const store_sql_driver *drv)
{
    p->drv = drv;
    p->seen = calloc(STORE_SQL_SEEN_SLOTS, sizeof(*p->seen));
    KB_ENSURE(p->seen != NULL, KB_ERR_NOMEM);
    if (pthread_mutex_init(&p->smu, NULL) != 0) {
        free(p->seen);
        p->seen = NULL;
        return KB_ERR_INTERNAL;
    }
    return KB_OK;
}

void store_sql_pool_free(store_sql_pool *p)
{
    if (p->seen == NULL)
        return;
    free(p->seen);
    p->seen = NULL;
    pthread_mutex_destroy(&p->smu);
}

/* ---- secret and version row loaders ---- */

/* Load a secret row at column c0 and check its MAC: KB_ERR_INTEGRITY (logged) on mismatch. */
kb_err store_sql_load_secret(cx *b, stmt *s, int c0, store_secret *out)
{
    uint8_t want[ROWMAC_LEN];
    kb_err rc = KB_OK;
    bool strict = true;
    memset(out, 0, sizeof(*out));
    out->id = col_i64(s, c0 + 0);
    out->owner_group_id = col_i64(s, c0 + 3);
    out->cloud_sync = col_bool(s, c0 + 4, &strict);
    out->deleted_at = col_i64(s, c0 + 5);
    out->latest_version = col_i64(s, c0 + 6);
    out->created_at = col_i64(s, c0 + 8);
    out->updated_at = col_i64(s, c0 + 10);
    KB_GUARD_OUT(rc, col_str(s, c0 + 1, &out->name));
    KB_GUARD_OUT(rc, col_str(s, c0 + 2, &out->description));
    KB_GUARD_OUT(rc, col_str(s, c0 + 7, &out->created_by));
    KB_GUARD_OUT(rc, col_str(s, c0 + 9, &out->updated_by));
    KB_GUARD_OUT(rc, rowmac_secret(b->mac, out->id, out->name, out->owner_group_id, out->cloud_sync,
                                   out->deleted_at, want));
    if (!strict || !col_mac_ok(s, c0 + 11, want)) {
        store_log_integrity("secrets", out->id, 0);
        rc = KB_ERR_INTEGRITY;
    }
out:
    if (rc != KB_OK)
        store_secret_clear(out);
    return rc;
}

/* Load a version row at c0 and check its MAC: KB_ERR_INTEGRITY (logged) on mismatch. */
kb_err store_sql_load_version(cx *b, stmt *s, int c0, store_version *out)
{
    uint8_t want[ROWMAC_LEN];
    kb_err rc = KB_OK;
    const void *ck = col_ptr(s, c0 + 2);
    memset(out, 0, sizeof(*out));
    out->secret_id = col_i64(s, c0 + 0);
    out->version = col_i64(s, c0 + 1);
    KB_ENSURE_OUT(rc, ck != NULL && col_len(s, c0 + 2) == STORE_CHECKSUM_LEN, KB_ERR_INTEGRITY);
    memcpy(out->checksum, ck, STORE_CHECKSUM_LEN);
    out->content_len = col_i64(s, c0 + 3);
    KB_GUARD_OUT(rc, col_str(s, c0 + 4, &out->metadata));
    out->expires_at = col_i64(s, c0 + 5);
    KB_GUARD_OUT(rc, col_str(s, c0 + 6, &out->created_by));
    out->created_at = col_i64(s, c0 + 7);
    KB_GUARD_OUT(rc, rowmac_version(b->mac, out->secret_id, out->version, out->checksum,
                                    sizeof(out->checksum), out->content_len, out->metadata,
                                    out->expires_at, out->created_by, out->created_at, want));
    if (!col_isint(s, c0 + 3) || !col_isint(s, c0 + 5) || !col_mac_ok(s, c0 + 8, want))
        KB_ENSURE_OUT(rc, false, KB_ERR_INTEGRITY);
out:
    if (rc == KB_ERR_INTEGRITY)
        store_log_integrity("versions", out->secret_id, out->version);
    if (rc != KB_OK)
        store_version_clear(out);
    return rc;
}

kb_err store_sql_latest_check(cx *b, stmt *s, int c0, const store_secret *sec)
{
    uint8_t want[ROWMAC_LEN];
    KB_GUARD(rowmac_latest(b->mac, sec->id, sec->latest_version, want));
    if (!col_isint(s, c0 + 6) || !col_mac_ok(s, c0 + 12, want)) {
        store_log_integrity("secrets.latest_version", sec->id, sec->latest_version);
        return KB_ERR_INTEGRITY;
    }
    return KB_OK;
}

/* The version part of a (verified secret, latest version) row: latest_version and the version
 * row both checked; KB_ERR_INTEGRITY (logged) if either fails. */
kb_err store_sql_load_latest(cx *b, stmt *s, store_record *rec)
{
    KB_GUARD(store_sql_latest_check(b, s, 0, &rec->secret));
    return store_sql_load_version(b, s, SECRET_NCOLS, &rec->version);
}

kb_err store_sql_load_env(stmt *s, int c0, store_envelope *out)
{
    kb_err rc = KB_OK;
    memset(out, 0, sizeof(*out));
    KB_GUARD_OUT(rc, col_blob(s, c0 + 0, &out->wrapped_key, &out->wrapped_key_len));
    KB_GUARD_OUT(rc, col_str(s, c0 + 1, &out->key_id));
    KB_GUARD_OUT(rc, col_blob(s, c0 + 2, &out->sealed, &out->sealed_len));
out:
    if (rc != KB_OK)
        store_envelope_clear(out);
    return rc;
}

/* The one row a fetch by key (a text column, when key is not NULL) or by id selects: prepared,
 * bound and stepped onto it (KB_ERR_NOT_FOUND when there is none). The caller loads the row and
 * calls done(*out), which it must also do on error. */
static kb_err fetch_row(cx *b, const char *by_key, const char *by_id, const char *key, int64_t id,
                        const char *what, stmt **out)
{
    kb_err rc;
    *out = NULL;
    KB_GUARD(prep(b, key != NULL ? by_key : by_id, out));
    rc = key != NULL ? bind_text(*out, 1, key) : bind_i64(*out, 1, id);
    if (rc == KB_OK)
        rc = step_row(b, *out, what);
    return rc;
}

/* Fetch one verified secret by name or id (lock held). */
kb_err store_sql_secret_fetch(cx *b, const char *name, int64_t id, store_secret *out)
{
    stmt *s = NULL;
    kb_err rc = fetch_row(b, "SELECT " SECRET_COLS " FROM secrets s WHERE s.name = ?1",
                          "SELECT " SECRET_COLS " FROM secrets s WHERE s.id = ?1", name, id,
                          "secret_fetch", &s);
    if (rc == KB_OK)
        rc = store_sql_load_secret(b, s, 0, out);
    done(s);
    return rc;
}

/* ---- row loaders (column lists: store_sql_int.h) ---- */

/* Load a client row at c0 as stored and check its MAC. The effective flags (cloud derived from the
 * prefixes, admin dropped for a cloud client) are store.c's policy: store_client_effective. */
kb_err store_sql_load_client(cx *b, stmt *s, int c0, store_client *out)
{
    uint8_t want[ROWMAC_LEN];
    kb_err rc = KB_OK;
    bool strict = true;
    memset(out, 0, sizeof(*out));
    out->id = col_i64(s, c0 + 0);
    out->enabled = col_bool(s, c0 + 2, &strict);
    out->admin = col_bool(s, c0 + 3, &strict);
    out->cloud = col_bool(s, c0 + 4, &strict);
    out->last_seen = col_i64(s, c0 + 7);
    out->last_list_at = col_i64(s, c0 + 8);
    out->created_at = col_i64(s, c0 + 10);
    KB_GUARD_OUT(rc, col_str(s, c0 + 1, &out->spiffe_id));
    KB_GUARD_OUT(rc, col_str(s, c0 + 5, &out->app_name));
    KB_GUARD_OUT(rc, col_str(s, c0 + 6, &out->description));
    KB_GUARD_OUT(rc, col_str(s, c0 + 9, &out->created_by));
    KB_GUARD_OUT(rc, rowmac_client(b->mac, out->id, out->spiffe_id, out->enabled, out->admin,
                                   out->cloud, out->app_name, want));
    if (!strict || !col_mac_ok(s, c0 + 11, want)) {
        store_log_integrity("clients", out->id, 0);
        KB_ENSURE_OUT(rc, false, KB_ERR_INTEGRITY);
    }
out:
    if (rc != KB_OK)
        store_client_clear(out);
    return rc;
}

kb_err store_sql_load_group(stmt *s, int c0, store_group *out)
{
    kb_err rc = KB_OK;
    memset(out, 0, sizeof(*out));
    out->id = col_i64(s, c0 + 0);
    KB_GUARD_OUT(rc, col_str(s, c0 + 1, &out->name));
    KB_GUARD_OUT(rc, col_str(s, c0 + 2, &out->description));
    KB_GUARD_OUT(rc, col_str(s, c0 + 3, &out->created_by));
    out->created_at = col_i64(s, c0 + 4);
out:
    if (rc != KB_OK)
        store_group_clear(out);
    return rc;
}

kb_err store_sql_client_fetch(cx *b, const char *spiffe_id, int64_t id, store_client *out)
{
    stmt *s = NULL;
    kb_err rc = fetch_row(b, "SELECT " CLIENT_COLS " FROM clients c WHERE c.spiffe_id = ?1",
                          "SELECT " CLIENT_COLS " FROM clients c WHERE c.id = ?1", spiffe_id, id,
                          "client_fetch", &s);
    if (rc == KB_OK)
        rc = store_sql_load_client(b, s, 0, out);
    done(s);
    return rc;
}

kb_err store_sql_exists(cx *b, const char *sql, int64_t id)
{
    stmt *s = NULL;
    kb_err rc;
    KB_GUARD(prep(b, sql, &s));
    rc = bind_i64(s, 1, id);
    if (rc == KB_OK)
        rc = step_row(b, s, "exists");
    done(s);
    return rc;
}
