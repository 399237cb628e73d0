/* store_sql_access.c - the access rows for every SQL backend (store_sql.h): groups, clients
 * (and the last-seen cache), memberships and grants. Every row here decides access, so each
 * carries a row MAC (rowmac.h) checked on read and counted in the state digest (the backend's
 * tx_end).
 */
#include "model.h"
#include "store_sql_int.h"

/* ---- groups ---- */

kb_err store_sql_group_create(store *st, const char *name, const char *description,
                              const char *actor, int64_t now, int64_t *id_out, store_audit *au)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO groups(name, description, created_by, created_at) "
                          "VALUES (?1, ?2, ?3, ?4) RETURNING id",
                          &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, name));
    KB_GUARD_OUT(rc, bind_text(s, 2, description));
    KB_GUARD_OUT(rc, bind_text(s, 3, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 4, now));
    KB_GUARD_OUT(rc, step_row(b, s, "group_insert"));
    *id_out = col_i64(s, 0);
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

kb_err store_sql_group_get(store *st, const char *name, store_group *out)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b, "SELECT " GROUP_COLS " FROM groups g WHERE g.name = ?1", &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, name));
    KB_GUARD_OUT(rc, step_row(b, s, "group_get"));
    rc = store_sql_load_group(s, 0, out);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* Collect groups; with mac_kind set, column GROUP_NCOLS holds a membership or grant MAC bound to
 * (fixed_id, group id) that must verify, or the row is dropped. */
enum { LINK_NONE, LINK_MEMBERSHIP, LINK_GRANT };

typedef struct {
    int link;
    int64_t fixed_id;
} group_link;

static void groups_free(void *arr, size_t n)
{
    store_groups_free(arr, n);
}

static kb_err group_row(cx *b, stmt *s, void *ctx, void *item, const void *prev, bool *keep)
{
    const group_link *l = ctx;
    int64_t gid = col_i64(s, 0);
    (void)prev;
    if (l->link != LINK_NONE) {
        uint8_t want[ROWMAC_LEN];
        if (l->link == LINK_MEMBERSHIP)
            KB_GUARD(rowmac_membership(b->mac, l->fixed_id, gid, want));
        else
            KB_GUARD(rowmac_grant(b->mac, gid, l->fixed_id, want));
        if (!col_mac_ok(s, GROUP_NCOLS, want)) {
            store_log_integrity(l->link == LINK_MEMBERSHIP ? "memberships" : "grants",
                                l->link == LINK_MEMBERSHIP ? l->fixed_id : gid,
                                l->link == LINK_MEMBERSHIP ? gid : l->fixed_id);
            *keep = false;
            return KB_OK;
        }
    }
    return store_sql_load_group(s, 0, item);
}

static kb_err collect_groups(cx *b, stmt *s, int link, int64_t fixed_id, store_group **out,
                             size_t *n)
{
    group_link l = {link, fixed_id};
    return store_sql_collect(b, s, sizeof(**out), group_row, &l, groups_free, "collect_groups",
                             (void **)out, n);
}

kb_err store_sql_group_list(store *st, store_group **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    rc = prep(b, "SELECT " GROUP_COLS " FROM groups g ORDER BY g.name", &s);
    if (rc == KB_OK)
        rc = collect_groups(b, s, LINK_NONE, 0, out, n);
    done(s);
    PUT(st, b);
    return rc;
}

kb_err store_sql_group_delete(store *st, int64_t group_id, store_audit *au)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, store_sql_exists(b, "SELECT 1 FROM groups WHERE id = ?1", group_id));
    /* An owner group is part of its secrets' MAC'd rows: refuse rather than rewrite them. */
    rc = store_sql_exists(b, "SELECT 1 FROM secrets WHERE owner_group_id = ?1", group_id);
    KB_ENSURE_OUT(rc, rc == KB_ERR_NOT_FOUND, rc == KB_OK ? KB_ERR_CONFLICT : rc);
    KB_GUARD_OUT(rc, prep(b, "DELETE FROM groups WHERE id = ?1", &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, group_id));
    rc = step_done(b, s, "group_delete");
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

/* ---- clients ---- */

static kb_err client_write_mac(cx *b, const store_client *c, bool stored_cloud)
{
    uint8_t mac[ROWMAC_LEN];
    stmt *s = NULL;
    kb_err rc;
    KB_GUARD(rowmac_client(b->mac, c->id, c->spiffe_id, c->enabled, c->admin, stored_cloud,
                           c->app_name, mac));
    KB_GUARD(prep(b,
                  "UPDATE clients SET enabled = ?1, admin = ?2, cloud = ?3, app_name = ?4, "
                  "description = ?5, mac = ?6 WHERE id = ?7",
                  &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, c->enabled ? 1 : 0));
    KB_GUARD_OUT(rc, bind_i64(s, 2, c->admin ? 1 : 0));
    KB_GUARD_OUT(rc, bind_i64(s, 3, stored_cloud ? 1 : 0));
    KB_GUARD_OUT(rc, bind_text(s, 4, c->app_name));
    KB_GUARD_OUT(rc, bind_text(s, 5, c->description));
    KB_GUARD_OUT(rc, bind_blob(s, 6, mac, sizeof(mac)));
    KB_GUARD_OUT(rc, bind_i64(s, 7, c->id));
    rc = step_done(b, s, "client_update");
out:
    done(s);
    return rc;
}

kb_err store_sql_client_create(store *st, const store_client_new *cn, bool cloud, const char *actor,
                               int64_t now, int64_t *id_out, store_audit *au)
{
    cx *b;
    stmt *s = NULL;
    store_client c = {0};
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, prep(b,
                          "INSERT INTO clients(spiffe_id, enabled, admin, cloud, created_by, "
                          "created_at, mac) VALUES (?1, 0, 0, 0, ?2, ?3, ?4) RETURNING id",
                          &s));
    KB_GUARD_OUT(rc, bind_text(s, 1, cn->spiffe_id));
    KB_GUARD_OUT(rc, bind_text(s, 2, actor));
    KB_GUARD_OUT(rc, bind_i64(s, 3, now));
    KB_GUARD_OUT(rc, bind_blob(s, 4, "", 0)); /* the MAC once the id is known */
    KB_GUARD_OUT(rc, step_row(b, s, "client_insert"));
    c.id = col_i64(s, 0);
    c.spiffe_id = (char *)cn->spiffe_id;
    c.enabled = cn->enabled;
    c.admin = cn->admin;
    c.app_name = (char *)(cn->app_name ? cn->app_name : "");
    c.description = (char *)(cn->description ? cn->description : "");
    KB_GUARD_OUT(rc, client_write_mac(b, &c, cloud));
    *id_out = c.id;
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

kb_err store_sql_client_get(store *st, const char *spiffe_id, int64_t id, store_client *out)
{
    cx *b;
    kb_err rc;
    b = RD(st);
    /* Every request starts here: the cheap half of the rollback check (one indexed row). */
    rc = b->drv->state_check(b);
    if (rc == KB_OK)
        rc = store_sql_client_fetch(b, spiffe_id, id, out);
    PUT(st, b);
    return rc;
}

static void clients_free(void *arr, size_t n)
{
    store_clients_free(arr, n);
}

/* A client row (ctx: a group id whose membership MAC, in the column after the client's, must
 * verify, or 0); rows failing a MAC are left out (logged). */
static kb_err client_row(cx *b, stmt *s, void *ctx, void *item, const void *prev, bool *keep)
{
    int64_t group_id = *(const int64_t *)ctx;
    kb_err e;
    (void)prev;
    if (group_id > 0) {
        uint8_t want[ROWMAC_LEN];
        int64_t cid = col_i64(s, 0);
        KB_GUARD(rowmac_membership(b->mac, cid, group_id, want));
        if (!col_mac_ok(s, CLIENT_NCOLS, want)) {
            store_log_integrity("memberships", cid, group_id);
            *keep = false;
            return KB_OK;
        }
    }
    e = store_sql_load_client(b, s, 0, item);
    if (e == KB_ERR_INTEGRITY) {
        *keep = false;
        return KB_OK;
    }
    return e;
}

static kb_err collect_clients(cx *b, stmt *s, int64_t group_id, store_client **out, size_t *n)
{
    return store_sql_collect(b, s, sizeof(**out), client_row, &group_id, clients_free,
                             "collect_clients", (void **)out, n);
}

kb_err store_sql_client_list(store *st, store_client **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    rc = prep(b, "SELECT " CLIENT_COLS " FROM clients c ORDER BY c.spiffe_id", &s);
    if (rc == KB_OK)
        rc = collect_clients(b, s, 0, out, n);
    done(s);
    PUT(st, b);
    return rc;
}

kb_err store_sql_client_update(store *st, int64_t client_id, const store_client_patch *p,
                               store_audit *au)
{
    cx *b;
    store_client c = {0};
    char *keep_app = NULL, *keep_desc = NULL;
    bool stored_cloud;
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, store_sql_client_fetch(b, NULL, client_id, &c));
    /* The stored cloud flag is what we re-MAC; the patch applies to the effective flags. */
    stored_cloud = c.cloud;
    store_client_effective(st, &c);
    if (p->enabled >= 0)
        c.enabled = p->enabled == 1;
    if (p->admin >= 0)
        c.admin = p->admin == 1;
    KB_GUARD_OUT(rc, model_client_flags_check(c.admin, c.cloud));
    if (p->app_name != NULL) {
        keep_app = c.app_name;
        c.app_name = (char *)p->app_name;
    }
    if (p->description != NULL) {
        keep_desc = c.description;
        c.description = (char *)p->description;
    }
    KB_GUARD_OUT(rc, client_write_mac(b, &c, stored_cloud));
out:
    if (keep_app)
        c.app_name = keep_app;
    if (keep_desc)
        c.description = keep_desc;
    store_client_clear(&c);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err delete_by_id(store *st, const char *sql, int64_t id, store_audit *au)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = WR(st);
    /* A transaction, so the rows it removes (and their cascades) move the state row with it. */
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    KB_GUARD_OUT(rc, prep(b, sql, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    KB_GUARD_OUT(rc, step_done(b, s, "delete"));
    KB_ENSURE_OUT(rc, b->drv->changes(b) > 0, KB_ERR_NOT_FOUND);
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

static kb_err client_touch(store *st, int64_t client_id, int64_t now, bool listed)
{
    cx *b = WR(st);
    stmt *s = NULL;
    kb_err rc;
    /* Throttled so that a busy client does not turn every read into a write. */
    KB_GUARD_OUT(rc, prep(b, SQL(b, STORE_SQL_Q_CLIENT_TOUCH), &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, now));
    KB_GUARD_OUT(rc, bind_i64(s, 2, client_id));
    KB_GUARD_OUT(rc, bind_i64(s, 3, STORE_TOUCH_INTERVAL));
    KB_GUARD_OUT(rc, bind_i64(s, 4, listed ? 1 : 0));
    rc = step_done(b, s, "client_seen");
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* The last_seen / last_list_at values this process last read for a client: lower bounds of the
 * stored ones (they only move forward, and ids are never reused), so when they say nothing is
 * due, nothing is, and the request needs no database access at all for its activity marker. */
bool store_sql_seen_get(store_sql_pool *q, int64_t id, int64_t *ls, int64_t *lla)
{
    struct store_sql_seen *e = &q->seen[(uint64_t)id & (STORE_SQL_SEEN_SLOTS - 1)];
    bool hit;
    pthread_mutex_lock(&q->smu);
    hit = e->id == id;
    if (hit) {
        *ls = e->last_seen;
        *lla = e->last_list_at;
    }
    pthread_mutex_unlock(&q->smu);
    return hit;
}

static void seen_put(store_sql_pool *q, int64_t id, int64_t ls, int64_t lla)
{
    struct store_sql_seen *e = &q->seen[(uint64_t)id & (STORE_SQL_SEEN_SLOTS - 1)];
    pthread_mutex_lock(&q->smu);
    e->id = id;
    e->last_seen = ls;
    e->last_list_at = lla;
    pthread_mutex_unlock(&q->smu);
}

static void seen_forget(store_sql_pool *q, int64_t id)
{
    struct store_sql_seen *e = &q->seen[(uint64_t)id & (STORE_SQL_SEEN_SLOTS - 1)];
    pthread_mutex_lock(&q->smu);
    if (e->id == id)
        e->id = 0;
    pthread_mutex_unlock(&q->smu);
}

static bool seen_due(int64_t ls, int64_t lla, int64_t now, bool listed)
{
    return ls <= now - STORE_TOUCH_INTERVAL || (listed && lla <= now - STORE_TOUCH_INTERVAL);
}

/* Called twice on every request (svc_client_auth, svc_client_list). Decided from the values
 * remembered above when possible, else on a reader, so the common case (a client seen within
 * the hour) never touches the database, let alone queues behind the writer. The UPDATE re-checks
 * the same conditions, so a race with another thread only skips a redundant write. A client
 * deleted by another process may still be answered KB_OK here until its entry is evicted:
 * the marker is advisory; access is decided by store_client_get and the reads. */
kb_err store_sql_client_seen(store *st, int64_t client_id, int64_t now, bool listed)
{
    store_sql_pool *q = POOL(st);
    cx *b;
    stmt *s = NULL;
    int64_t ls = 0, lla = 0;
    kb_err rc;
    if (store_sql_seen_get(q, client_id, &ls, &lla) && !seen_due(ls, lla, now, listed))
        return KB_OK;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b, "SELECT last_seen, last_list_at FROM clients WHERE id = ?1", &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, client_id));
    KB_GUARD_OUT(rc, step_row(b, s, "client_seen_check"));
    ls = col_i64(s, 0);
    lla = col_i64(s, 1);
out:
    done(s);
    PUT(st, b);
    if (rc != KB_OK)
        return rc;
    if (!seen_due(ls, lla, now, listed)) {
        seen_put(q, client_id, ls, lla);
        return KB_OK;
    }
    /* Written values are re-read next time rather than guessed (the UPDATE may lose a race). */
    seen_forget(q, client_id);
    return client_touch(st, client_id, now, listed);
}

kb_err store_sql_client_delete(store *st, int64_t client_id, store_audit *au)
{
    seen_forget(POOL(st), client_id);
    return delete_by_id(st, "DELETE FROM clients WHERE id = ?1", client_id, au);
}

kb_err store_sql_clients_stale(store *st, int64_t before, store_client **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " CLIENT_COLS " FROM clients c WHERE c.last_list_at < ?1 "
                          "ORDER BY c.last_list_at, c.spiffe_id",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, before));
    rc = collect_clients(b, s, 0, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

/* ---- memberships and grants ---- */

static kb_err link_set(store *st, bool membership, int64_t a, int64_t g, bool present,
                       store_audit *au)
{
    cx *b;
    stmt *s = NULL;
    uint8_t mac[ROWMAC_LEN];
    kb_err rc;
    b = WR(st);
    rc = tx_begin(b, STORE_SQL_TX_WRITE);
    if (rc != KB_OK) {
        PUT(st, b);
        return rc;
    }
    if (!present) {
        KB_GUARD_OUT(rc, prep(b,
                              membership ? "DELETE FROM memberships WHERE client_id = ?1 AND "
                                           "group_id = ?2"
                                         : "DELETE FROM grants WHERE secret_id = ?1 AND "
                                           "group_id = ?2",
                              &s));
        KB_GUARD_OUT(rc, bind_i64(s, 1, a));
        KB_GUARD_OUT(rc, bind_i64(s, 2, g));
        KB_GUARD_OUT(rc, step_done(b, s, "link_delete"));
        KB_ENSURE_OUT(rc, b->drv->changes(b) > 0, KB_ERR_NOT_FOUND);
        goto out;
    }
    KB_GUARD_OUT(rc, store_sql_exists(b, "SELECT 1 FROM groups WHERE id = ?1", g));
    if (membership) {
        KB_GUARD_OUT(rc, store_sql_exists(b, "SELECT 1 FROM clients WHERE id = ?1", a));
        KB_GUARD_OUT(rc, rowmac_membership(b->mac, a, g, mac));
        KB_GUARD_OUT(rc, prep(b,
                              "INSERT INTO memberships(client_id, group_id, mac) "
                              "VALUES (?1, ?2, ?3)",
                              &s));
    } else {
        KB_GUARD_OUT(rc, store_sql_exists(b, "SELECT 1 FROM secrets WHERE id = ?1", a));
        KB_GUARD_OUT(rc, rowmac_grant(b->mac, g, a, mac));
        KB_GUARD_OUT(
            rc, prep(b, "INSERT INTO grants(secret_id, group_id, mac) VALUES (?1, ?2, ?3)", &s));
    }
    KB_GUARD_OUT(rc, bind_i64(s, 1, a));
    KB_GUARD_OUT(rc, bind_i64(s, 2, g));
    KB_GUARD_OUT(rc, bind_blob(s, 3, mac, sizeof(mac)));
    rc = step_done(b, s, "link_insert");
out:
    done(s);
    rc = tx_end(b, rc, au);
    PUT(st, b);
    return rc;
}

kb_err store_sql_membership_set(store *st, int64_t client_id, int64_t group_id, bool present,
                                store_audit *au)
{
    return link_set(st, true, client_id, group_id, present, au);
}

kb_err store_sql_grant_set(store *st, int64_t group_id, int64_t secret_id, bool present,
                           store_audit *au)
{
    return link_set(st, false, secret_id, group_id, present, au);
}

/* The groups linked to one row (a client's memberships or a secret's grants), verified by
 * collect_groups; owner_sql checks that the row itself exists. */
static kb_err linked_groups(store *st, const char *owner_sql, const char *sql, int kind, int64_t id,
                            store_group **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, store_sql_exists(b, owner_sql, id));
    KB_GUARD_OUT(rc, prep(b, sql, &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, id));
    rc = collect_groups(b, s, kind, id, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}

kb_err store_sql_client_groups(store *st, int64_t client_id, store_group **out, size_t *n)
{
    return linked_groups(st, "SELECT 1 FROM clients WHERE id = ?1",
                         "SELECT " GROUP_COLS ", m.mac FROM memberships m JOIN groups g ON "
                         "g.id = m.group_id WHERE m.client_id = ?1 ORDER BY g.name",
                         LINK_MEMBERSHIP, client_id, out, n);
}

kb_err store_sql_secret_groups(store *st, int64_t secret_id, store_group **out, size_t *n)
{
    return linked_groups(st, "SELECT 1 FROM secrets WHERE id = ?1",
                         "SELECT " GROUP_COLS ", gr.mac FROM grants gr JOIN groups g ON "
                         "g.id = gr.group_id WHERE gr.secret_id = ?1 ORDER BY g.name",
                         LINK_GRANT, secret_id, out, n);
}

kb_err store_sql_group_clients(store *st, int64_t group_id, store_client **out, size_t *n)
{
    cx *b;
    stmt *s = NULL;
    kb_err rc;
    b = RD(st);
    KB_GUARD_OUT(rc, store_sql_exists(b, "SELECT 1 FROM groups WHERE id = ?1", group_id));
    KB_GUARD_OUT(rc, prep(b,
                          "SELECT " CLIENT_COLS ", m.mac FROM memberships m JOIN clients c ON "
                          "c.id = m.client_id WHERE m.group_id = ?1 ORDER BY c.spiffe_id",
                          &s));
    KB_GUARD_OUT(rc, bind_i64(s, 1, group_id));
    rc = collect_clients(b, s, group_id, out, n);
out:
    done(s);
    PUT(st, b);
    return rc;
}
