/* ca_store_impl.h - the backend side of ca_store (ca_store.h): the ops table each backend fills.
 *
 * Private to src/ca/ca_store*.c. A backend's own struct starts with a ca_store whose ops point at
 * its table; ca_store.c dispatches every public call through it and holds nothing else, so the
 * callers never know which database they have (STYLE.md 6). Each op has the contract of the
 * public function of the same name in ca_store.h.
 */
#ifndef KB_CA_STORE_IMPL_H
#define KB_CA_STORE_IMPL_H

#include "ca_store.h"

typedef struct {
    const char *name; /* "sqlite" | "postgresql" */
    void (*close)(ca_store *st);
    kb_err (*meta_get)(ca_store *st, const char *k, char *v, size_t vlen);
    kb_err (*meta_set)(ca_store *st, const char *k, const char *v);
    kb_err (*meta_incr)(ca_store *st, const char *k, int64_t *out);
    kb_err (*gen_add)(ca_store *st, ca_gen *g);
    kb_err (*gen_list)(ca_store *st, ca_gen **out, size_t *n);
    kb_err (*gen_update)(ca_store *st, const ca_gen *g);
    kb_err (*gen_activate)(ca_store *st, int64_t gen);
    kb_err (*reg_add)(ca_store *st, ca_reg *r);
    kb_err (*reg_get)(ca_store *st, int64_t rid, ca_reg *out);
    kb_err (*reg_list)(ca_store *st, ca_reg **out, size_t *n);
    kb_err (*reg_renewable)(ca_store *st, const char *spiffe_id, int64_t *ttl, char *sans,
                            size_t sans_len);
    kb_err (*reg_remove)(ca_store *st, int64_t rid, ca_reg *removed);
    kb_err (*reg_claim)(ca_store *st, const ca_claim *c, ca_reg **out, size_t *n);
    kb_err (*reg_retry)(ca_store *st, int64_t rid, const char *owner, int64_t next_renew,
                        int64_t failures);
    kb_err (*reg_done)(ca_store *st, const ca_done *d);
    kb_err (*write_begin)(ca_store *st, int64_t rid, const char *owner);
    kb_err (*write_end)(ca_store *st, int commit);
    kb_err (*audit_add)(ca_store *st, const char *serial, const char *spiffe_id, const char *target,
                        const char *reason, int64_t gen, int64_t not_after, int64_t at);
    kb_err (*audit_each)(ca_store *st, ca_audit_fn fn, void *arg);
    kb_err (*issued_each)(ca_store *st, ca_issued_fn fn, void *arg);
} ca_store_ops;

struct ca_store {
    const ca_store_ops *ops;
};

/* Backends' constructors (ca_store_open picks one from the location). */
KB_WUR kb_err ca_store_sqlite_open(const char *path, ca_store **out);
KB_WUR kb_err ca_store_pg_open(const char *url, const char *passfile, ca_store **out);

#endif
