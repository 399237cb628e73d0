/* store.c - the storage API: URL -> backend registry, validation of every input against the
 * data model (model.h), then dispatch through the backend's ops table (store_impl.h). Nothing
 * here knows which database is behind the table. */
#include "store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "model.h"
#include "store_impl.h"

/* The registry: one entry per URL scheme ("sqlite:PATH", "postgresql://..."). */
static const struct store_ops *const backends[] = {
    &store_sqlite_ops,
    &store_pg_ops,
};

void store_log_integrity(const char *table, int64_t id1, int64_t id2)
{
    char a[24], b[24];
    snprintf(a, sizeof(a), "%" PRId64, id1);
    snprintf(b, sizeof(b), "%" PRId64, id2);
    kb_log(KB_LOG_ERROR, "store_integrity_failure", "msg",
           "row MAC mismatch: row treated as absent (database tampered with?)", "table", table,
           "id", a, "id2", b, NULL);
}

static void cfg_free(store_cfg *c)
{
    kb_secret_free(c->row_mac_key);
    c->row_mac_key = NULL;
    if (c->cloud_prefixes) {
        for (size_t i = 0; c->cloud_prefixes[i]; i++)
            free(c->cloud_prefixes[i]);
        free(c->cloud_prefixes);
        c->cloud_prefixes = NULL;
    }
}

static kb_err cfg_copy(const store_opts *o, store_cfg *c)
{
    size_t n = 0;
    KB_ENSURE_REF(o->row_mac_key);
    KB_ENSURE(kb_secret_len(o->row_mac_key) >= STORE_ROWMAC_KEY_MIN, KB_ERR_CONFIG);
    KB_ENSURE(o->busy_timeout_ms >= 0, KB_ERR_CONFIG);
    KB_GUARD(kb_secret_from(kb_secret_cdata(o->row_mac_key), kb_secret_len(o->row_mac_key),
                            &c->row_mac_key));
    c->content_max = o->content_max ? o->content_max : MODEL_CONTENT_MAX_DEFAULT;
    c->busy_timeout_ms = o->busy_timeout_ms ? o->busy_timeout_ms : STORE_BUSY_TIMEOUT_MS;
    c->migrate = o->migrate;
    if (o->commitment != NULL) {
        KB_ENSURE(o->commitment->read != NULL && o->commitment->advance != NULL, KB_ERR_CONFIG);
        c->commitment = *o->commitment;
    }
    while (o->cloud_prefixes && o->cloud_prefixes[n])
        n++;
    c->cloud_prefixes = calloc(n + 1, sizeof(char *));
    KB_ENSURE(c->cloud_prefixes != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < n; i++) {
        if (model_cloud_prefix_check(o->cloud_prefixes[i]) != KB_OK)
            return KB_ERR_CONFIG;
        c->cloud_prefixes[i] = strdup(o->cloud_prefixes[i]);
        KB_ENSURE(c->cloud_prefixes[i] != NULL, KB_ERR_NOMEM);
    }
    return KB_OK;
}

void store_fail(store *st, const char *why)
{
    int was = 0;
    if (atomic_compare_exchange_strong(&st->failed, &was, 1))
        kb_log(KB_LOG_ERROR, "store_refusing_service", "msg",
               "the database does not match its committed state: nothing is served until it is "
               "restored and keybridged restarted (docs/internals/rollback.md)",
               "reason", why, NULL);
}

void store_state_saw(store *st, int64_t counter)
{
    int64_t cur = atomic_load(&st->state_seen);
    while (cur < counter && !atomic_compare_exchange_weak(&st->state_seen, &cur, counter))
        ;
}

/* Every call but close refuses once a rollback check failed. */
static kb_err live(store *st)
{
    return atomic_load(&st->failed) ? KB_ERR_UNAVAILABLE : KB_OK;
}

kb_err store_health(store *st)
{
    KB_ENSURE_REF(st);
    return live(st);
}

kb_err store_verify(store *st)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    return st->ops->verify(st);
}

static _Atomic uint64_t store_epochs;

kb_err store_open(const char *url, const store_opts *opts, store **out)
{
    store *st = NULL;
    const char *colon;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(url);
    KB_ENSURE_REF(opts);
    KB_ENSURE_REF(out);
    *out = NULL;
    colon = strchr(url, ':');
    KB_ENSURE(colon != NULL && colon != url, KB_ERR_CONFIG);
    st = calloc(1, sizeof(*st));
    KB_ENSURE(st != NULL, KB_ERR_NOMEM);
    for (size_t i = 0; i < KB_ARRAY_LEN(backends); i++) {
        size_t sl = strlen(backends[i]->scheme);
        if ((size_t)(colon - url) == sl && strncmp(url, backends[i]->scheme, sl) == 0)
            st->ops = backends[i];
    }
    if (st->ops == NULL) {
        kb_log(KB_LOG_ERROR, "store_unknown_scheme", "msg", "unknown store URL scheme", NULL);
        KB_ENSURE_OUT(rc, false, KB_ERR_CONFIG);
    }
    KB_GUARD_OUT(rc, cfg_copy(opts, &st->cfg));
    KB_GUARD_OUT(rc, st->ops->open(st, colon + 1));
    /* Each handle starts 2^40 past the previous one (store.h, store_generation): a cache keyed
     * on (handle, generation) cannot confuse a new handle at a reused address with a closed one.
     * 2^40 changes per handle and 2^24 handles per process are both out of reach. */
    atomic_store(&st->generation, (atomic_fetch_add(&store_epochs, 1) + 1) << 40);
    *out = st;
    st = NULL;
out:
    if (st) {
        cfg_free(&st->cfg);
        free(st);
    }
    return rc;
}

void store_close(store *st)
{
    if (st == NULL)
        return;
    if (st->impl)
        st->ops->close(st);
    cfg_free(&st->cfg);
    free(st);
}

uint64_t store_generation(store *st)
{
    return st ? atomic_load(&st->generation) : 0;
}

uint64_t store_round_trips(store *st)
{
    return st ? atomic_load(&st->round_trips) : 0;
}

/* After a change that may alter listings (store_impl.h, store_generation): always bumped, also on
 * failure, since a spurious bump only costs a cache miss. */
static kb_err changed(store *st, kb_err rc)
{
    atomic_fetch_add(&st->generation, 1);
    return rc;
}

int store_schema_version_supported(void)
{
    return store_sqlite_ops.schema_version;
}

kb_err store_schema_version(store *st, int *out)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    return st->ops->get_schema_version(st, out);
}

/* ---- schema compatibility (expand/contract: docs/internals/store.md, "Schema versions") ---- */

int store_schema_floor(const bool *expand_only, int steps, int from, int compat, int to)
{
    if (from < 0 || to > steps)
        return to; /* cannot happen for the backends' own tables; the strictest floor */
    if (from >= to)
        return compat; /* nothing applied (and from + 1 cannot overflow below) */
    for (int v = from + 1; v <= to; v++) {
        if (!expand_only[v - 1] && v > compat)
            compat = v;
    }
    return compat;
}

kb_err store_schema_gate_newer(int db_version, int db_floor, int binary_version)
{
    char have[16], fl[16], mine[16];
    snprintf(have, sizeof(have), "%d", db_version);
    snprintf(fl, sizeof(fl), "%d", db_floor);
    snprintf(mine, sizeof(mine), "%d", binary_version);
    if (db_floor > binary_version) {
        kb_log(KB_LOG_ERROR, "store_schema_too_new", "msg",
               "the database schema is newer than this binary and was contracted past it (its "
               "compat floor, the oldest binary schema it still supports, is above this "
               "binary's): upgrade this binary",
               "db_schema_version", have, "db_compat_floor", fl, "binary_schema_version", mine,
               NULL);
        return KB_ERR_SCHEMA;
    }
    kb_log(KB_LOG_INFO, "store_schema_newer", "msg",
           "the database schema is newer than this binary but still supports it (expand-only "
           "steps since this binary's version): serving",
           "db_schema_version", have, "db_compat_floor", fl, "binary_schema_version", mine, NULL);
    return KB_OK;
}

/* ---- validation helpers ---- */

static kb_err check_version_new(store *st, const store_version_new *v, bool cloud_sync,
                                char **metadata)
{
    KB_ENSURE_REF(v);
    KB_GUARD(model_content_len_check(v->content_len, st->cfg.content_max, cloud_sync));
    KB_ENSURE(v->expires_at >= 0, KB_ERR_INVALID);
    return model_metadata_canon(v->metadata, metadata);
}

static kb_err check_id(int64_t id)
{
    KB_ENSURE(id > 0, KB_ERR_INVALID);
    return KB_OK;
}

/* A change's audit row (NULL: none): the backend writes it in the change's transaction. */
static kb_err check_audit(store_audit *au)
{
    if (au == NULL)
        return KB_OK;
    KB_ENSURE_REF(au->mac);
    KB_ENSURE(au->ev.action != NULL && au->ev.action[0] != '\0', KB_ERR_INVALID);
    KB_ENSURE(au->ev.result != NULL && au->ev.result[0] != '\0', KB_ERR_INVALID);
    au->seq = 0;
    au->written = false;
    return KB_OK;
}

/* ---- secrets ---- */

kb_err store_secret_create(store *st, const store_secret_new *s, const store_version_new *v,
                           store_seal_fn seal, void *seal_ctx, const char *actor, int64_t now,
                           int64_t *id_out, store_audit *au)
{
    char *md = NULL;
    kb_err rc;
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_ENSURE_REF(s);
    KB_ENSURE_REF(seal);
    KB_ENSURE_REF(id_out);
    KB_GUARD(model_name_check(s->name));
    KB_GUARD(model_description_check(s->description));
    KB_GUARD(model_actor_check(actor));
    KB_ENSURE(s->owner_group_id >= 0, KB_ERR_INVALID);
    KB_GUARD(check_version_new(st, v, s->cloud_sync, &md));
    rc = changed(st, st->ops->secret_create(st, s, v, md, seal, seal_ctx, actor, now, id_out, au));
    free(md);
    return rc;
}

kb_err store_version_add(store *st, int64_t secret_id, const store_version_new *v,
                         store_seal_fn seal, void *seal_ctx, const char *actor, int64_t now,
                         int64_t *version_out, store_audit *au)
{
    char *md = NULL;
    kb_err rc;
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_ENSURE_REF(seal);
    KB_ENSURE_REF(version_out);
    KB_GUARD(check_id(secret_id));
    KB_GUARD(model_actor_check(actor));
    /* The cloud cap depends on the secret's flag, which the backend checks in its transaction;
     * here the configured limit. */
    KB_GUARD(check_version_new(st, v, false, &md));
    rc = changed(st, st->ops->version_add(st, secret_id, v, md, seal, seal_ctx, actor, now,
                                          version_out, au));
    free(md);
    return rc;
}

kb_err store_secret_update(store *st, int64_t secret_id, const store_secret_patch *p,
                           const char *actor, int64_t now, store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_ENSURE_REF(p);
    KB_GUARD(check_id(secret_id));
    KB_GUARD(model_actor_check(actor));
    KB_GUARD(model_description_check(p->description));
    KB_ENSURE(p->cloud_sync >= -1 && p->cloud_sync <= 1, KB_ERR_INVALID);
    KB_ENSURE(p->owner_group_id >= -1, KB_ERR_INVALID);
    return changed(st, st->ops->secret_update(st, secret_id, p, actor, now, au));
}

kb_err store_secret_delete(store *st, int64_t secret_id, const char *actor, int64_t now,
                           store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_GUARD(check_id(secret_id));
    KB_GUARD(model_actor_check(actor));
    KB_ENSURE(now > 0, KB_ERR_INVALID);
    return changed(st, st->ops->secret_set_deleted(st, secret_id, true, actor, now, au));
}

kb_err store_secret_restore(store *st, int64_t secret_id, const char *actor, int64_t now,
                            store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_GUARD(check_id(secret_id));
    KB_GUARD(model_actor_check(actor));
    return changed(st, st->ops->secret_set_deleted(st, secret_id, false, actor, now, au));
}

kb_err store_secret_purge(store *st, int64_t secret_id, store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_GUARD(check_id(secret_id));
    return changed(st, st->ops->secret_purge(st, secret_id, au));
}

kb_err store_secret_get(store *st, const char *name, bool include_deleted, store_secret *out)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_GUARD(model_name_check(name));
    return st->ops->secret_get(st, name, 0, include_deleted, out);
}

kb_err store_secret_get_by_id(store *st, int64_t id, bool include_deleted, store_secret *out)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_GUARD(check_id(id));
    return st->ops->secret_get(st, NULL, id, include_deleted, out);
}

kb_err store_secret_list(store *st, bool include_deleted, store_record **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    return st->ops->secret_list(st, include_deleted, out, n);
}

kb_err store_secret_list_page(store *st, bool include_deleted, const char *after, size_t limit,
                              store_record **out, size_t *n, char **next)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    KB_ENSURE_REF(next);
    *out = NULL;
    *n = 0;
    *next = NULL;
    KB_ENSURE(limit >= 1, KB_ERR_INVALID);
    KB_ENSURE(limit <= STORE_PAGE_MAX, KB_ERR_TOO_LARGE);
    /* The cursor is a name this store returned; it is only bound, never parsed, but bounded. */
    KB_ENSURE(after == NULL || strnlen(after, MODEL_NAME_MAX + 1) <= MODEL_NAME_MAX,
              KB_ERR_TOO_LARGE);
    return st->ops->secret_list_page(st, include_deleted, after ? after : "", limit, out, n, next);
}

kb_err store_version_list(store *st, int64_t secret_id, store_version **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    KB_GUARD(check_id(secret_id));
    return st->ops->version_list(st, secret_id, out, n);
}

kb_err store_version_get(store *st, int64_t secret_id, int64_t version, store_record *out)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_GUARD(check_id(secret_id));
    KB_ENSURE(version >= 0, KB_ERR_INVALID);
    return st->ops->version_get(st, secret_id, version, out);
}

kb_err store_secrets_expiring(store *st, int64_t from, int64_t to, store_record **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    KB_ENSURE(from <= to, KB_ERR_INVALID);
    return st->ops->secrets_expiring(st, from, to, out, n);
}

/* ---- groups ---- */

kb_err store_group_create(store *st, const char *name, const char *description, const char *actor,
                          int64_t now, int64_t *id_out, store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_ENSURE_REF(id_out);
    KB_GUARD(model_name_check(name));
    KB_GUARD(model_description_check(description));
    KB_GUARD(model_actor_check(actor));
    return changed(st, st->ops->group_create(st, name, description, actor, now, id_out, au));
}

kb_err store_group_get(store *st, const char *name, store_group *out)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_GUARD(model_name_check(name));
    return st->ops->group_get(st, name, out);
}

kb_err store_group_list(store *st, store_group **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    return st->ops->group_list(st, out, n);
}

kb_err store_group_delete(store *st, int64_t group_id, store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_GUARD(check_id(group_id));
    return changed(st, st->ops->group_delete(st, group_id, au));
}

/* ---- clients ---- */

void store_client_effective(store *st, store_client *c)
{
    if (model_spiffe_is_cloud(c->spiffe_id, (const char *const *)st->cfg.cloud_prefixes))
        c->cloud = true;
    if (c->admin && c->cloud) {
        char id[24];
        snprintf(id, sizeof(id), "%" PRId64, c->id);
        kb_log(KB_LOG_WARN, "store_admin_cloud_client", "msg",
               "client is admin but its SPIFFE ID is a cloud identity: admin ignored", "id", id,
               NULL);
        c->admin = false;
    }
}

/* A backend's client answer with the policy applied. */
static kb_err client_out(store *st, kb_err rc, store_client *c)
{
    if (rc == KB_OK)
        store_client_effective(st, c);
    return rc;
}

static kb_err clients_out(store *st, store_client *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_client_effective(st, &a[i]);
    return KB_OK;
}

kb_err store_client_create(store *st, const store_client_new *c, const char *actor, int64_t now,
                           int64_t *id_out, store_audit *au)
{
    bool cloud;
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_ENSURE_REF(c);
    KB_ENSURE_REF(id_out);
    KB_GUARD(model_spiffe_id_check(c->spiffe_id));
    if (c->app_name != NULL && c->app_name[0] != '\0')
        KB_GUARD(model_app_name_check(c->app_name));
    KB_GUARD(model_description_check(c->description));
    KB_GUARD(model_actor_check(actor));
    cloud = model_spiffe_is_cloud(c->spiffe_id, (const char *const *)st->cfg.cloud_prefixes);
    KB_GUARD(model_client_flags_check(c->admin, cloud));
    return changed(st, st->ops->client_create(st, c, cloud, actor, now, id_out, au));
}

kb_err store_client_get(store *st, const char *spiffe_id, store_client *out)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_GUARD(model_spiffe_id_check(spiffe_id));
    return client_out(st, st->ops->client_get(st, spiffe_id, 0, out), out);
}

kb_err store_client_get_by_id(store *st, int64_t id, store_client *out)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_GUARD(check_id(id));
    return client_out(st, st->ops->client_get(st, NULL, id, out), out);
}

kb_err store_client_list(store *st, store_client **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    KB_GUARD(st->ops->client_list(st, out, n));
    return clients_out(st, *out, *n);
}

kb_err store_client_update(store *st, int64_t client_id, const store_client_patch *p,
                           store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_ENSURE_REF(p);
    KB_GUARD(check_id(client_id));
    KB_ENSURE(p->enabled >= -1 && p->enabled <= 1, KB_ERR_INVALID);
    KB_ENSURE(p->admin >= -1 && p->admin <= 1, KB_ERR_INVALID);
    if (p->app_name != NULL && p->app_name[0] != '\0')
        KB_GUARD(model_app_name_check(p->app_name));
    KB_GUARD(model_description_check(p->description));
    return changed(st, st->ops->client_update(st, client_id, p, au));
}

kb_err store_client_delete(store *st, int64_t client_id, store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_GUARD(check_id(client_id));
    return changed(st, st->ops->client_delete(st, client_id, au));
}

kb_err store_client_seen(store *st, int64_t client_id, int64_t now, bool listed)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_id(client_id));
    return st->ops->client_seen(st, client_id, now, listed);
}

kb_err store_clients_stale(store *st, int64_t before, store_client **out, size_t *n)
{
    size_t k = 0;
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    KB_GUARD(st->ops->clients_stale(st, before, out, n));
    /* Policy: only enabled, effectively non-admin clients are expected to list. */
    for (size_t i = 0; i < *n; i++) {
        store_client_effective(st, &(*out)[i]);
        if ((*out)[i].enabled && !(*out)[i].admin)
            (*out)[k++] = (*out)[i];
        else
            store_client_clear(&(*out)[i]);
    }
    *n = k;
    if (k == 0) {
        free(*out);
        *out = NULL;
    }
    return KB_OK;
}

kb_err store_membership_add(store *st, int64_t client_id, int64_t group_id, store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_GUARD(check_id(client_id));
    KB_GUARD(check_id(group_id));
    return changed(st, st->ops->membership_set(st, client_id, group_id, true, au));
}

kb_err store_membership_remove(store *st, int64_t client_id, int64_t group_id, store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_GUARD(check_id(client_id));
    KB_GUARD(check_id(group_id));
    return changed(st, st->ops->membership_set(st, client_id, group_id, false, au));
}

kb_err store_client_groups(store *st, int64_t client_id, store_group **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    KB_GUARD(check_id(client_id));
    return st->ops->client_groups(st, client_id, out, n);
}

kb_err store_group_clients(store *st, int64_t group_id, store_client **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    KB_GUARD(check_id(group_id));
    KB_GUARD(st->ops->group_clients(st, group_id, out, n));
    return clients_out(st, *out, *n);
}

kb_err store_grant_add(store *st, int64_t group_id, int64_t secret_id, store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_GUARD(check_id(group_id));
    KB_GUARD(check_id(secret_id));
    return changed(st, st->ops->grant_set(st, group_id, secret_id, true, au));
}

kb_err store_grant_remove(store *st, int64_t group_id, int64_t secret_id, store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_audit(au));
    KB_GUARD(check_id(group_id));
    KB_GUARD(check_id(secret_id));
    return changed(st, st->ops->grant_set(st, group_id, secret_id, false, au));
}

kb_err store_secret_groups(store *st, int64_t secret_id, store_group **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    KB_GUARD(check_id(secret_id));
    return st->ops->secret_groups(st, secret_id, out, n);
}

/* ---- client reads ---- */

kb_err store_readable_list(store *st, int64_t client_id, store_record **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    *out = NULL;
    *n = 0;
    KB_GUARD(check_id(client_id));
    return st->ops->readable_list(st, client_id, out, n);
}

kb_err store_readable_get(store *st, int64_t client_id, const char *name, int64_t version,
                          store_record *out)
{
    kb_err one = KB_OK; /* the backend only looks up entries still KB_OK */
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    memset(out, 0, sizeof(*out));
    KB_GUARD(check_id(client_id));
    KB_GUARD(model_name_check(name));
    KB_ENSURE(version >= 0, KB_ERR_INVALID);
    KB_GUARD(st->ops->readable_get_batch(st, client_id, &name, &version, 1, out, &one));
    return one;
}

kb_err store_readable_get_batch(store *st, int64_t client_id, const char *const *names, size_t n,
                                store_record *out, kb_err *errs)
{
    int64_t *versions;
    kb_err rc;
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(names);
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(errs);
    KB_GUARD(check_id(client_id));
    KB_ENSURE(n >= 1, KB_ERR_INVALID);
    KB_ENSURE(n <= STORE_BATCH_MAX, KB_ERR_TOO_LARGE);
    memset(out, 0, n * sizeof(*out));
    for (size_t i = 0; i < n; i++)
        errs[i] = names[i] ? model_name_check(names[i]) : KB_ERR_NULL;
    versions = calloc(n, sizeof(*versions));
    KB_ENSURE(versions != NULL, KB_ERR_NOMEM);
    rc = st->ops->readable_get_batch(st, client_id, names, versions, n, out, errs);
    free(versions);
    return rc;
}

kb_err store_notify_sent(store *st, int64_t secret_id, int64_t version, int64_t window, bool *sent)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(sent);
    *sent = false;
    KB_GUARD(live(st));
    KB_GUARD(check_id(secret_id));
    KB_ENSURE(version > 0 && window > 0, KB_ERR_INVALID);
    return st->ops->notify_sent(st, secret_id, version, window, sent);
}

kb_err store_notify_mark(store *st, int64_t secret_id, int64_t version, int64_t window, int64_t now,
                         store_audit *au)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_id(secret_id));
    KB_ENSURE(version > 0 && window > 0, KB_ERR_INVALID);
    return st->ops->notify_mark(st, secret_id, version, window, now, au);
}

kb_err store_fetch_record(store *st, int64_t client_id, int64_t secret_id, int64_t version,
                          int64_t now)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_GUARD(check_id(client_id));
    KB_GUARD(check_id(secret_id));
    KB_ENSURE(version > 0, KB_ERR_INVALID);
    return st->ops->fetch_record(st, client_id, secret_id, version, now);
}

kb_err store_secret_status(store *st, int64_t secret_id, store_fetch **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_GUARD(live(st));
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    KB_GUARD(check_id(secret_id));
    return st->ops->secret_status(st, secret_id, out, n);
}

/* ---- freeing ---- */

static void free_wiped(void *p, size_t n)
{
    if (p) {
        kb_wipe(p, n);
        free(p);
    }
}

void store_envelope_clear(store_envelope *e)
{
    if (e == NULL)
        return;
    free_wiped(e->wrapped_key, e->wrapped_key_len);
    free_wiped(e->sealed, e->sealed_len);
    free(e->key_id);
    memset(e, 0, sizeof(*e));
}

void store_secret_clear(store_secret *s)
{
    if (s == NULL)
        return;
    free(s->name);
    free(s->description);
    free(s->created_by);
    free(s->updated_by);
    memset(s, 0, sizeof(*s));
}

void store_version_clear(store_version *v)
{
    if (v == NULL)
        return;
    free(v->metadata);
    free(v->created_by);
    memset(v, 0, sizeof(*v));
}

void store_record_clear(store_record *r)
{
    if (r == NULL)
        return;
    store_secret_clear(&r->secret);
    store_version_clear(&r->version);
    store_envelope_clear(&r->env);
}

void store_group_clear(store_group *g)
{
    if (g == NULL)
        return;
    free(g->name);
    free(g->description);
    free(g->created_by);
    memset(g, 0, sizeof(*g));
}

void store_client_clear(store_client *c)
{
    if (c == NULL)
        return;
    free(c->spiffe_id);
    free(c->app_name);
    free(c->description);
    free(c->created_by);
    memset(c, 0, sizeof(*c));
}

#define DEFINE_ARRAY_FREE(fn, type, clear)                                                         \
    void fn(type *a, size_t n)                                                                     \
    {                                                                                              \
        if (a == NULL)                                                                             \
            return;                                                                                \
        for (size_t i = 0; i < n; i++)                                                             \
            clear(&a[i]);                                                                          \
        free(a);                                                                                   \
    }

static void fetch_clear(store_fetch *f)
{
    free(f->spiffe_id);
}

DEFINE_ARRAY_FREE(store_secrets_free, store_secret, store_secret_clear)
DEFINE_ARRAY_FREE(store_versions_free, store_version, store_version_clear)
DEFINE_ARRAY_FREE(store_records_free, store_record, store_record_clear)
DEFINE_ARRAY_FREE(store_groups_free, store_group, store_group_clear)
DEFINE_ARRAY_FREE(store_clients_free, store_client, store_client_clear)
DEFINE_ARRAY_FREE(store_fetches_free, store_fetch, fetch_clear)
