/* ca_store.c - keybridge-ca's state: picks a backend and dispatches to its ops (ca_store.h). */
#include "ca_store.h"

#include <stdlib.h>
#include <string.h>

#include "ca_store_impl.h"

int ca_store_is_pg_url(const char *where)
{
    return where != NULL &&
           (strncmp(where, "postgresql://", 13) == 0 || strncmp(where, "postgres://", 11) == 0);
}

kb_err ca_store_open_at(const char *where, const char *passfile, ca_store **out)
{
    KB_ENSURE_REF(where);
    KB_ENSURE_REF(out);
    *out = NULL;
    if (ca_store_is_pg_url(where))
        return ca_store_pg_open(where, passfile, out);
    KB_ENSURE(passfile == NULL, KB_ERR_CONFIG); /* a password file means nothing to SQLite */
    return ca_store_sqlite_open(where, out);
}

kb_err ca_store_open(const char *path, ca_store **out)
{
    return ca_store_open_at(path, NULL, out);
}

void ca_store_close(ca_store *st)
{
    if (st != NULL)
        st->ops->close(st);
}

const char *ca_store_backend(const ca_store *st)
{
    return st ? st->ops->name : "";
}

void ca_gen_list_free(ca_gen *g, size_t n)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(g[i].cert_pem);
        free(g[i].chain_pem);
        free(g[i].roots_pem);
    }
    free(g);
}

kb_err ca_store_meta_get(ca_store *st, const char *k, char *v, size_t vlen)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(k);
    KB_ENSURE_REF(v);
    return st->ops->meta_get(st, k, v, vlen);
}

kb_err ca_store_meta_set(ca_store *st, const char *k, const char *v)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(k);
    KB_ENSURE_REF(v);
    return st->ops->meta_set(st, k, v);
}

kb_err ca_store_meta_incr(ca_store *st, const char *k, int64_t *out)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(k);
    KB_ENSURE_REF(out);
    return st->ops->meta_incr(st, k, out);
}

kb_err ca_store_gen_add(ca_store *st, ca_gen *g)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(g);
    return st->ops->gen_add(st, g);
}

kb_err ca_store_gen_list(ca_store *st, ca_gen **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    return st->ops->gen_list(st, out, n);
}

kb_err ca_store_gen_update(ca_store *st, const ca_gen *g)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(g);
    return st->ops->gen_update(st, g);
}

kb_err ca_store_gen_activate(ca_store *st, int64_t gen)
{
    KB_ENSURE_REF(st);
    return st->ops->gen_activate(st, gen);
}

kb_err ca_store_reg_add(ca_store *st, ca_reg *r)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(r);
    return st->ops->reg_add(st, r);
}

kb_err ca_store_reg_get(ca_store *st, int64_t rid, ca_reg *out)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(out);
    return st->ops->reg_get(st, rid, out);
}

kb_err ca_store_reg_list(ca_store *st, ca_reg **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    return st->ops->reg_list(st, out, n);
}

kb_err ca_store_reg_renewable(ca_store *st, const char *spiffe_id, int64_t *ttl, char *sans,
                              size_t sans_len)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(spiffe_id);
    KB_ENSURE_REF(ttl);
    return st->ops->reg_renewable(st, spiffe_id, ttl, sans, sans_len);
}

kb_err ca_store_reg_remove(ca_store *st, int64_t rid, ca_reg *removed)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(removed);
    return st->ops->reg_remove(st, rid, removed);
}

kb_err ca_store_reg_claim(ca_store *st, const ca_claim *c, ca_reg **out, size_t *n)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(c);
    KB_ENSURE_REF(c->owner);
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(n);
    *out = NULL;
    *n = 0;
    KB_ENSURE(c->owner[0] != '\0' && strlen(c->owner) < CA_OWNER_MAX, KB_ERR_INVALID);
    KB_ENSURE(c->max >= 1 && c->max <= CA_CLAIM_MAX && c->lease >= 1, KB_ERR_INVALID);
    return st->ops->reg_claim(st, c, out, n);
}

kb_err ca_store_reg_retry(ca_store *st, int64_t rid, const char *owner, int64_t next_renew,
                          int64_t failures)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(owner);
    return st->ops->reg_retry(st, rid, owner, next_renew, failures);
}

kb_err ca_store_reg_done(ca_store *st, const ca_done *d)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(d);
    KB_ENSURE_REF(d->serial);
    KB_ENSURE_REF(d->reason);
    KB_ENSURE_REF(d->owner);
    return st->ops->reg_done(st, d);
}

kb_err ca_store_write_begin(ca_store *st, int64_t rid)
{
    KB_ENSURE_REF(st);
    return st->ops->write_begin(st, rid, NULL);
}

kb_err ca_store_write_begin_lease(ca_store *st, int64_t rid, const char *owner)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(owner);
    return st->ops->write_begin(st, rid, owner);
}

kb_err ca_store_write_end(ca_store *st, int commit)
{
    KB_ENSURE_REF(st);
    return st->ops->write_end(st, commit);
}

kb_err ca_store_audit_add(ca_store *st, const char *serial, const char *spiffe_id,
                          const char *target, const char *reason, int64_t gen, int64_t not_after,
                          int64_t at)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(serial);
    KB_ENSURE_REF(spiffe_id);
    KB_ENSURE_REF(target);
    KB_ENSURE_REF(reason);
    return st->ops->audit_add(st, serial, spiffe_id, target, reason, gen, not_after, at);
}

kb_err ca_store_audit_each(ca_store *st, ca_audit_fn fn, void *arg)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(fn);
    return st->ops->audit_each(st, fn, arg);
}

kb_err ca_store_issued_each(ca_store *st, ca_issued_fn fn, void *arg)
{
    KB_ENSURE_REF(st);
    KB_ENSURE_REF(fn);
    return st->ops->issued_each(st, fn, arg);
}
