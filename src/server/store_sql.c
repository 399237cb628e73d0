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
    kb_err rc;
    if (spiffe_id != NULL) {
        KB_GUARD(prep(b, "SELECT " CLIENT_COLS " FROM clients c WHERE c.spiffe_id = ?1", &s));
        rc = bind_text(s, 1, spiffe_id);
    } else {
        KB_GUARD(prep(b, "SELECT " CLIENT_COLS " FROM clients c WHERE c.id = ?1", &s));
        rc = bind_i64(s, 1, id);
    }
    if (rc == KB_OK)
        rc = step_row(b, s, "client_fetch");
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
