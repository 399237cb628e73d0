/* store_migrate.c - copy a whole store between backends, verified on both sides
 * (store_migrate.h; raw table access in store_migrate_db.c).
 */
#include "store_migrate.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "lib/log.h"
#include "rowmac.h"
#include "store_migrate_int.h"

/* The tables copied, parents before children (foreign keys), each in primary-key order. `seq`:
 * an identity / AUTOINCREMENT id whose high-water mark is copied too. */
typedef struct {
    const char *name;
    const char *order;
    bool seq;
} mig_table;

static const mig_table mig_tables[STORE_MIGRATE_TABLES] = {
    {"groups", "id", true},
    {"clients", "id", true},
    {"secrets", "id", true},
    {"versions", "secret_id, version", false},
    {"memberships", "client_id, group_id", false},
    {"grants", "group_id, secret_id", false},
    {"fetch_log", "client_id, secret_id", false},
    {"notify_sent", "secret_id, version, window_secs", false},
    {"audit_log", "seq", false},
    {"audit_anchors", "seq", false},
    {"store_state", "id", false},
};

/* Each backend's own bookkeeping, made by its migrations on the target: not copied. */
static const char *const private_tables[] = {"schema_version", "schema_compat", "store_generation"};

#define MIG_STATE_TABLE (STORE_MIGRATE_TABLES - 1)

/* One pass over one side: checks every row; with dst set, inserts it there too. */
typedef struct {
    const char *side; /* "source" / "target", for messages */
    const mig_table *t;
    const mcol *cols;
    size_t n;
    rowmac_ctx *rm;
    audit_log *au;
    mdb *dst;
    EVP_MD_CTX *md;
    int64_t rows;                   /* of the current table */
    uint8_t digest_sum[ROWMAC_LEN]; /* the state digest of the rows seen */
    bool state_seen;                /* the state row was read */
    int64_t state_counter;
    uint8_t prev[AUDIT_MAC_LEN]; /* the audit chain so far */
    int64_t audit_rows;
    char *why;
    size_t why_len;
} pass;

static int col_at(const pass *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->cols[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* "id=3" / "secret_id=2 version=1": the row's key columns (integers only: never a value). */
static void row_key(const pass *p, const mv *vals, char *buf, size_t len)
{
    char name[MDB_NAME_MAX + 1];
    const char *o = p->t->order;
    size_t w = 0;
    buf[0] = '\0';
    while (*o != '\0' && w + 1 < len) {
        size_t k = strcspn(o, ",");
        int c;
        snprintf(name, sizeof(name), "%.*s", (int)(k < MDB_NAME_MAX ? k : MDB_NAME_MAX), o);
        c = col_at(p, name);
        if (c >= 0 && vals[c].t == MV_INT)
            w += (size_t)snprintf(buf + w, len - w, "%s%s=%" PRId64, w ? " " : "", name, vals[c].i);
        o += k;
        while (*o == ',' || *o == ' ')
            o++;
        if (w >= len)
            break;
    }
}

static kb_err refuse(pass *p, const mv *vals, const char *what)
{
    char key[128];
    row_key(p, vals, key, sizeof(key));
    snprintf(p->why, p->why_len, "%s %s (%s): %s", p->side, p->t->name, key, what);
    kb_log(KB_LOG_ERROR, "migrate_refused", "side", p->side, "table", p->t->name, "row", key, "msg",
           what, NULL);
    return KB_ERR_INTEGRITY;
}

static kb_err v_int(pass *p, const mv *vals, const char *name, bool null_ok, int64_t *out)
{
    int c = col_at(p, name);
    *out = 0;
    if (c < 0)
        return refuse(p, vals, "a column the checks need is missing");
    if (null_ok && vals[c].t == MV_NULL)
        return KB_OK;
    if (vals[c].t != MV_INT)
        return refuse(p, vals, "a MAC'd integer column holds another type");
    *out = vals[c].i;
    return KB_OK;
}

static kb_err v_flag(pass *p, const mv *vals, const char *name, bool *out)
{
    int64_t v = 0;
    *out = false; /* set on every path: gcc -O2 cannot tell refuse() never returns KB_OK */
    KB_GUARD(v_int(p, vals, name, false, &v));
    if (v != 0 && v != 1)
        return refuse(p, vals, "a flag is neither 0 nor 1");
    *out = v == 1;
    return KB_OK;
}

/* A NUL-terminated copy of a text column (an embedded NUL is refused). */
static kb_err v_str(pass *p, const mv *vals, const char *name, char **out)
{
    int c = col_at(p, name);
    *out = NULL;
    if (c < 0)
        return refuse(p, vals, "a column the checks need is missing");
    if (vals[c].t != MV_TEXT || memchr(vals[c].p, '\0', vals[c].len) != NULL)
        return refuse(p, vals, "a MAC'd text column holds another type");
    *out = malloc(vals[c].len + 1);
    KB_ENSURE(*out != NULL, KB_ERR_NOMEM);
    memcpy(*out, vals[c].p, vals[c].len);
    (*out)[vals[c].len] = '\0';
    return KB_OK;
}

static kb_err v_blob(pass *p, const mv *vals, const char *name, const uint8_t **out, size_t *len)
{
    int c = col_at(p, name);
    *out = NULL;
    *len = 0;
    if (c < 0)
        return refuse(p, vals, "a column the checks need is missing");
    if (vals[c].t != MV_BLOB)
        return refuse(p, vals, "a MAC column holds another type");
    *out = vals[c].p;
    *len = vals[c].len;
    return KB_OK;
}

static kb_err mac_check(pass *p, const mv *vals, const char *col, const uint8_t want[ROWMAC_LEN],
                        const char *what)
{
    const uint8_t *m;
    size_t ml;
    KB_GUARD(v_blob(p, vals, col, &m, &ml));
    if (!rowmac_equal(want, m, ml))
        return refuse(p, vals, what);
    return KB_OK;
}

/* An access-deciding row's stored MAC joins the state digest (rollback.md). */
static kb_err state_add(pass *p, const mv *vals)
{
    uint8_t e[ROWMAC_LEN];
    const uint8_t *m;
    size_t ml;
    KB_GUARD(v_blob(p, vals, "mac", &m, &ml));
    KB_GUARD(rowmac_state_elem(p->rm, p->t->name, m, ml, e));
    rowmac_digest_add(p->digest_sum, e, false);
    return KB_OK;
}

static kb_err check_client(pass *p, const mv *vals)
{
    uint8_t want[ROWMAC_LEN];
    int64_t id;
    bool en, adm, cloud;
    char *spiffe = NULL, *app = NULL;
    kb_err rc;
    KB_GUARD_OUT(rc, v_int(p, vals, "id", false, &id));
    KB_GUARD_OUT(rc, v_flag(p, vals, "enabled", &en));
    KB_GUARD_OUT(rc, v_flag(p, vals, "admin", &adm));
    KB_GUARD_OUT(rc, v_flag(p, vals, "cloud", &cloud));
    KB_GUARD_OUT(rc, v_str(p, vals, "spiffe_id", &spiffe));
    KB_GUARD_OUT(rc, v_str(p, vals, "app_name", &app));
    KB_GUARD_OUT(rc, rowmac_client(p->rm, id, spiffe, en, adm, cloud, app, want));
    KB_GUARD_OUT(rc, mac_check(p, vals, "mac", want, "row MAC does not verify (tampered?)"));
    rc = state_add(p, vals);
out:
    free(spiffe);
    free(app);
    return rc;
}

static kb_err check_pair(pass *p, const mv *vals, bool grant)
{
    uint8_t want[ROWMAC_LEN];
    int64_t a, b;
    KB_GUARD(v_int(p, vals, grant ? "group_id" : "client_id", false, &a));
    KB_GUARD(v_int(p, vals, grant ? "secret_id" : "group_id", false, &b));
    if (grant)
        KB_GUARD(rowmac_grant(p->rm, a, b, want));
    else
        KB_GUARD(rowmac_membership(p->rm, a, b, want));
    KB_GUARD(mac_check(p, vals, "mac", want, "row MAC does not verify (tampered?)"));
    return state_add(p, vals);
}

static kb_err check_secret(pass *p, const mv *vals)
{
    uint8_t want[ROWMAC_LEN];
    int64_t id, owner, deleted, latest;
    bool cloud;
    char *name = NULL;
    kb_err rc;
    KB_GUARD_OUT(rc, v_int(p, vals, "id", false, &id));
    KB_GUARD_OUT(rc, v_int(p, vals, "owner_group_id", true, &owner));
    KB_GUARD_OUT(rc, v_flag(p, vals, "cloud_sync", &cloud));
    KB_GUARD_OUT(rc, v_int(p, vals, "deleted_at", false, &deleted));
    KB_GUARD_OUT(rc, v_int(p, vals, "latest_version", false, &latest));
    KB_GUARD_OUT(rc, v_str(p, vals, "name", &name));
    KB_GUARD_OUT(rc, rowmac_secret(p->rm, id, name, owner, cloud, deleted, want));
    KB_GUARD_OUT(rc, mac_check(p, vals, "mac", want, "row MAC does not verify (tampered?)"));
    KB_GUARD_OUT(rc, rowmac_latest(p->rm, id, latest, want));
    KB_GUARD_OUT(rc, mac_check(p, vals, "latest_mac", want,
                               "latest_version MAC does not verify (tampered?)"));
    rc = state_add(p, vals);
out:
    free(name);
    return rc;
}

static kb_err check_version(pass *p, const mv *vals)
{
    uint8_t want[ROWMAC_LEN];
    int64_t sid, ver, clen, exp, at;
    const uint8_t *ck;
    size_t ckl;
    char *meta = NULL, *by = NULL;
    kb_err rc;
    KB_GUARD_OUT(rc, v_int(p, vals, "secret_id", false, &sid));
    KB_GUARD_OUT(rc, v_int(p, vals, "version", false, &ver));
    KB_GUARD_OUT(rc, v_int(p, vals, "content_len", false, &clen));
    KB_GUARD_OUT(rc, v_int(p, vals, "expires_at", false, &exp));
    KB_GUARD_OUT(rc, v_int(p, vals, "created_at", false, &at));
    KB_GUARD_OUT(rc, v_blob(p, vals, "checksum", &ck, &ckl));
    if (ckl != STORE_CHECKSUM_LEN) {
        rc = refuse(p, vals, "checksum has the wrong length");
        goto out;
    }
    KB_GUARD_OUT(rc, v_str(p, vals, "metadata", &meta));
    KB_GUARD_OUT(rc, v_str(p, vals, "created_by", &by));
    KB_GUARD_OUT(rc, rowmac_version(p->rm, sid, ver, ck, ckl, clen, meta, exp, by, at, want));
    rc = mac_check(p, vals, "mac", want, "row MAC does not verify (tampered?)");
out:
    free(meta);
    free(by);
    return rc;
}

static kb_err check_audit(pass *p, const mv *vals)
{
    audit_row r;
    uint8_t want[AUDIT_MAC_LEN];
    const uint8_t *m;
    size_t ml;
    kb_err rc;
    memset(&r, 0, sizeof(r));
    KB_GUARD_OUT(rc, v_int(p, vals, "seq", false, &r.seq));
    KB_GUARD_OUT(rc, v_int(p, vals, "time", false, &r.time));
    KB_GUARD_OUT(rc, v_int(p, vals, "version", false, &r.version));
    KB_GUARD_OUT(rc, v_str(p, vals, "identity", &r.identity));
    KB_GUARD_OUT(rc, v_str(p, vals, "peer", &r.peer));
    KB_GUARD_OUT(rc, v_str(p, vals, "action", &r.action));
    KB_GUARD_OUT(rc, v_str(p, vals, "object", &r.object));
    KB_GUARD_OUT(rc, v_str(p, vals, "result", &r.result));
    KB_GUARD_OUT(rc, v_blob(p, vals, "mac", &m, &ml));
    if (p->au == NULL) { /* the pre-check: the chain is verified by audit_verify next */
        rc = KB_OK;
        goto out;
    }
    if (r.seq != p->audit_rows + 1) {
        rc = refuse(p, vals, "audit chain has a gap (row deleted)");
        goto out;
    }
    KB_GUARD_OUT(rc, audit_row_mac(p->au, p->prev, &r, want));
    if (!rowmac_equal(want, m, ml)) {
        rc = refuse(p, vals, "audit chain MAC does not verify (row edited or chain broken)");
        goto out;
    }
    memcpy(p->prev, want, AUDIT_MAC_LEN);
    p->audit_rows++;
out:
    free(r.identity);
    free(r.peer);
    free(r.action);
    free(r.object);
    free(r.result);
    return rc;
}

static kb_err check_state(pass *p, const mv *vals)
{
    uint8_t want[ROWMAC_LEN];
    const uint8_t *d;
    size_t dl;
    int64_t id;
    KB_GUARD(v_int(p, vals, "id", false, &id));
    KB_GUARD(v_int(p, vals, "counter", false, &p->state_counter));
    KB_GUARD(v_blob(p, vals, "digest", &d, &dl));
    if (id != 1 || p->state_counter < 1 || dl != ROWMAC_LEN)
        return refuse(p, vals, "state row malformed");
    KB_GUARD(rowmac_state(p->rm, p->state_counter, d, want));
    KB_GUARD(mac_check(p, vals, "mac", want, "state row MAC does not verify (tampered?)"));
    /* The tables before it in mig_tables are complete: their rows must sum to the digest. */
    if (!kb_ct_eq(d, p->digest_sum, ROWMAC_LEN))
        return refuse(p, vals,
                      "the access-deciding rows do not match the state digest (rows replayed, "
                      "removed or forged)");
    p->state_seen = true;
    return KB_OK;
}

/* The row digest both sides must agree on: every value with its type, in scan order. */
static kb_err digest_row(EVP_MD_CTX *md, const mv *vals, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t h[9];
        uint64_t u = vals[i].t == MV_INT ? (uint64_t)vals[i].i : (uint64_t)vals[i].len;
        h[0] = (uint8_t)vals[i].t;
        for (int k = 8; k >= 1; k--) {
            h[k] = (uint8_t)(u & 0xff);
            u >>= 8;
        }
        KB_ENSURE(EVP_DigestUpdate(md, h, sizeof(h)) == 1, KB_ERR_CRYPTO);
        if ((vals[i].t == MV_TEXT || vals[i].t == MV_BLOB) && vals[i].len > 0)
            KB_ENSURE(EVP_DigestUpdate(md, vals[i].p, vals[i].len) == 1, KB_ERR_CRYPTO);
    }
    return KB_OK;
}

static kb_err on_row(void *ctx, const mv *vals, size_t n)
{
    pass *p = ctx;
    const char *t = p->t->name;
    kb_err rc = KB_OK;

    /* Every value must have its column's declared type (SQLite would store anything). */
    for (size_t i = 0; i < n; i++)
        if (vals[i].t != MV_NULL && vals[i].t != p->cols[i].type)
            return refuse(p, vals, "a value does not have its column's type");
    if (strcmp(t, "clients") == 0)
        rc = check_client(p, vals);
    else if (strcmp(t, "memberships") == 0)
        rc = check_pair(p, vals, false);
    else if (strcmp(t, "grants") == 0)
        rc = check_pair(p, vals, true);
    else if (strcmp(t, "secrets") == 0)
        rc = check_secret(p, vals);
    else if (strcmp(t, "versions") == 0)
        rc = check_version(p, vals);
    else if (strcmp(t, "audit_log") == 0)
        rc = check_audit(p, vals);
    else if (strcmp(t, "store_state") == 0)
        rc = check_state(p, vals);
    KB_GUARD(rc);
    KB_GUARD(digest_row(p->md, vals, n));
    p->rows++;
    if (p->dst != NULL)
        KB_GUARD(mdb_insert(p->dst, vals, n));
    return KB_OK;
}

__attribute__((format(printf, 2, 3))) static void why_f(store_migrate_report *r, const char *fmt,
                                                        ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof(r->why), fmt, ap);
    va_end(ap);
    kb_log(KB_LOG_ERROR, "migrate_refused", "msg", r->why, NULL);
}

static bool is_private(const char *t)
{
    for (size_t i = 0; i < KB_ARRAY_LEN(private_tables); i++)
        if (strcmp(t, private_tables[i]) == 0)
            return true;
    return false;
}

static bool is_copied(const char *t)
{
    for (size_t i = 0; i < STORE_MIGRATE_TABLES; i++)
        if (strcmp(t, mig_tables[i].name) == 0)
            return true;
    return false;
}

/* Every table of d is one this code copies or a backend's own; all copied ones are there. */
static kb_err tables_known(mdb *d, const char *side, store_migrate_report *r)
{
    char **names = NULL;
    size_t n = 0, found = 0;
    kb_err rc = KB_OK;
    KB_GUARD(mdb_tables(d, &names, &n));
    for (size_t i = 0; i < n && rc == KB_OK; i++) {
        if (is_copied(names[i]))
            found++;
        else if (!is_private(names[i])) {
            why_f(r, "%s has a table this migrate-store does not know (%s): refusing to drop it",
                  side, names[i]);
            rc = KB_ERR_SCHEMA;
        }
    }
    if (rc == KB_OK && found != STORE_MIGRATE_TABLES) {
        why_f(r, "%s is not a keybridge store at this schema version (tables missing)", side);
        rc = KB_ERR_SCHEMA;
    }
    mdb_names_free(names, n);
    return rc;
}

/* Refuse a target holding any row (the state row aside: a new store has one). Tables that do
 * not exist yet (a database without the schema) count as empty. */
static kb_err target_empty(mdb *d, store_migrate_report *r)
{
    for (size_t i = 0; i < STORE_MIGRATE_TABLES; i++) {
        int64_t n = 0;
        bool has = false;
        char num[24];
        if (i == MIG_STATE_TABLE)
            continue;
        KB_GUARD(mdb_has_table(d, mig_tables[i].name, &has));
        if (!has)
            continue;
        KB_GUARD(mdb_count(d, mig_tables[i].name, &n));
        if (n > 0) {
            snprintf(num, sizeof(num), "%" PRId64, n);
            snprintf(r->why, sizeof(r->why),
                     "target store is not empty (table %s has %s rows): migrate-store only "
                     "copies into a new, empty store",
                     mig_tables[i].name, num);
            kb_log(KB_LOG_ERROR, "migrate_refused", "msg", r->why, NULL);
            return KB_ERR_EXISTS;
        }
    }
    return KB_OK;
}

/* The same columns (names and declared types) on both sides; scanned in the source's order. */
static kb_err columns_agree(mdb *s, mdb *t, const char *table, mcol *cols, size_t *n,
                            store_migrate_report *r)
{
    mcol tc[MDB_COLS_MAX];
    size_t tn = 0;
    KB_GUARD(mdb_columns(s, table, cols, n));
    KB_GUARD(mdb_columns(t, table, tc, &tn));
    bool ok = *n == tn && *n > 0;
    for (size_t i = 0; ok && i < *n; i++) {
        bool found = false;
        for (size_t j = 0; j < tn; j++)
            if (strcmp(cols[i].name, tc[j].name) == 0 && cols[i].type == tc[j].type)
                found = true;
        ok = found;
    }
    if (!ok) {
        why_f(r, "table %s has other columns on the source than on the target", table);
        return KB_ERR_SCHEMA;
    }
    return KB_OK;
}

typedef struct {
    mcol cols[STORE_MIGRATE_TABLES][MDB_COLS_MAX];
    size_t ncols[STORE_MIGRATE_TABLES];
} mig_schema;

/* One pass over every table of src (checks, digest, counts); with dst, copies each row. */
static kb_err run_pass(pass *p, mdb *src, const mig_schema *sc, store_migrate_report *r,
                       uint8_t digest[32], int64_t counts[STORE_MIGRATE_TABLES])
{
    unsigned int dl = 0;
    kb_err rc = KB_OK;
    p->md = EVP_MD_CTX_new();
    KB_ENSURE(p->md != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, EVP_DigestInit_ex(p->md, EVP_sha256(), NULL) == 1, KB_ERR_CRYPTO);
    for (size_t i = 0; i < STORE_MIGRATE_TABLES; i++) {
        p->t = &mig_tables[i];
        p->cols = sc->cols[i];
        p->n = sc->ncols[i];
        p->rows = 0;
        KB_ENSURE_OUT(rc, EVP_DigestUpdate(p->md, p->t->name, strlen(p->t->name) + 1) == 1,
                      KB_ERR_CRYPTO);
        if (p->dst != NULL)
            KB_GUARD_OUT(rc, mdb_insert_begin(p->dst, p->t->name, p->cols, p->n));
        rc = mdb_scan(src, p->t->name, p->cols, p->n, p->t->order, on_row, p);
        if (rc != KB_OK) {
            if (r->why[0] == '\0')
                why_f(r, "copying table %s failed (%s; see the log)", p->t->name, kb_err_str(rc));
            goto out;
        }
        counts[i] = p->rows;
    }
    if (!p->state_seen) {
        why_f(r, "%s has no state row (store_state): not a verifiable store", p->side);
        rc = KB_ERR_INTEGRITY;
        goto out;
    }
    KB_ENSURE_OUT(rc, EVP_DigestFinal_ex(p->md, digest, &dl) == 1 && dl == 32, KB_ERR_CRYPTO);
out:
    EVP_MD_CTX_free(p->md);
    p->md = NULL;
    return rc;
}

/* The source's rows checked raw before anything else opens it (the store's own start-up check
 * would refuse a digest mismatch without naming the row): row MACs, flags, the state digest.
 * KB_ERR_SCHEMA when its tables are not this binary's (an older SQLite file: the store migrates
 * it when it opens, and the copy pass checks everything again). */
static kb_err precheck_source(const store_migrate_opts *o, mig_schema *sc, store_migrate_report *r)
{
    mdb *src = NULL;
    pass p;
    uint8_t digest[32];
    int64_t counts[STORE_MIGRATE_TABLES];
    kb_err rc;

    memset(&p, 0, sizeof(p));
    p.side = "source";
    p.why = r->why;
    p.why_len = sizeof(r->why);
    KB_GUARD_OUT(rc, mdb_open(o->from, false, &src, r->why, sizeof(r->why)));
    KB_GUARD_OUT(rc, mdb_begin(src, false));
    KB_GUARD_OUT(rc, tables_known(src, "source", r));
    for (size_t i = 0; i < STORE_MIGRATE_TABLES; i++)
        KB_GUARD_OUT(rc,
                     columns_agree(src, src, mig_tables[i].name, sc->cols[i], &sc->ncols[i], r));
    KB_GUARD_OUT(rc, rowmac_ctx_new(o->row_mac_key, &p.rm));
    rc = run_pass(&p, src, sc, r, digest, counts);
out:
    if (src != NULL)
        mdb_rollback(src);
    mdb_close(src);
    rowmac_ctx_free(p.rm);
    return rc;
}

static bool url_is(const char *url, const char *scheme)
{
    return strncmp(url, scheme, strlen(scheme)) == 0;
}

/* Open a side through the store (all of its own start-up checks). */
static kb_err open_store(const store_migrate_opts *o, const char *url, bool target_new, store **out)
{
    store_opts so;
    memset(&so, 0, sizeof(so));
    so.row_mac_key = o->row_mac_key;
    so.content_max = o->content_max;
    so.cloud_prefixes = o->cloud_prefixes;
    /* A new target's counter (1) is below the token's: create its schema without the
     * commitment; it is checked against the token after the copy. */
    so.commitment = target_new ? NULL : o->commitment;
    so.migrate = target_new;
    return store_open(url, &so, out);
}

/* The official checks of one side: the store opens (state row, digest, rollback check) and the
 * audit chain and its signed anchors verify. */
static kb_err verify_store(const store_migrate_opts *o, const char *url, const char *side,
                           int *schema, int64_t *audit_rows, store_migrate_report *r)
{
    store *st = NULL;
    audit_log *a = NULL;
    audit_opts ao = *o->audit;
    audit_report rep;
    char seq[24];
    kb_err rc = open_store(o, url, false, &st);
    if (rc != KB_OK) {
        why_f(r, "cannot open the %s store (%s; see the log)", side, kb_err_str(rc));
        return rc;
    }
    ao.anchor_every_rows = -1; /* verifying writes nothing */
    ao.anchor_every_secs = -1;
    KB_GUARD_OUT(rc, store_schema_version(st, schema));
    KB_GUARD_OUT(rc, audit_open(st, &ao, &a));
    KB_GUARD_OUT(rc, audit_verify_anchor(a, NULL, &rep));
    if (!rep.ok) {
        snprintf(seq, sizeof(seq), "%" PRId64, rep.first_bad_seq);
        snprintf(r->why, sizeof(r->why), "%s audit chain does not verify at seq %s: %s", side, seq,
                 rep.reason);
        rc = KB_ERR_INTEGRITY;
        goto out;
    }
    *audit_rows = rep.rows;
out:
    if (rc != KB_OK && r->why[0] == '\0')
        why_f(r, "verifying the %s store failed (%s; see the log)", side, kb_err_str(rc));
    audit_close(a);
    store_close(st);
    return rc;
}

/* The same store on both sides would be emptied into itself. */
static bool same_store(const char *from, const char *to)
{
    char a[PATH_MAX], b[PATH_MAX];
    if (strcmp(from, to) == 0)
        return true;
    if (url_is(from, "sqlite:") && url_is(to, "sqlite:") && realpath(from + 7, a) != NULL &&
        realpath(to + 7, b) != NULL)
        return strcmp(a, b) == 0;
    return false;
}

kb_err store_migrate(const store_migrate_opts *o, store_migrate_report *r)
{
    mdb *src = NULL, *dst = NULL;
    store *tst = NULL;
    mig_schema *sc = NULL;
    pass p;
    int tschema = 0;
    int64_t src_audit = 0, dst_audit = 0, counts2[STORE_MIGRATE_TABLES] = {0};
    uint8_t digest2[32] = {0};
    bool dst_tx = false, src_tx = false;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(o);
    KB_ENSURE_REF(r);
    KB_ENSURE_REF(o->from);
    KB_ENSURE_REF(o->to);
    KB_ENSURE_REF(o->audit);
    memset(r, 0, sizeof(*r));
    memset(&p, 0, sizeof(p));
    p.why = r->why;
    p.why_len = sizeof(r->why);
    for (int side = 0; side < 2; side++) {
        const char *u = side ? o->to : o->from;
        if (!url_is(u, "sqlite:") && !url_is(u, "postgresql:")) {
            why_f(r, "%s: not a store URL (sqlite:PATH or postgresql://...)",
                  side ? "--to" : "--from");
            return KB_ERR_CONFIG;
        }
    }
    if (same_store(o->from, o->to)) {
        why_f(r, "--from and --to name the same store");
        return KB_ERR_CONFIG;
    }

    /* 1. The source: its rows raw (naming a tampered row), then through the store. It must
     * exist: the store would create it. */
    sc = calloc(1, sizeof(*sc));
    KB_ENSURE_OUT(rc, sc != NULL, KB_ERR_NOMEM);
    rc = precheck_source(o, sc, r);
    if (rc == KB_ERR_SCHEMA) {
        r->why[0] = '\0';
        rc = KB_OK;
    }
    KB_GUARD_OUT(rc, rc);
    KB_GUARD_OUT(rc, verify_store(o, o->from, "source", &r->schema_version, &src_audit, r));

    /* The target: refuse a non-empty one before its schema is touched, then create/migrate it. */
    if (url_is(o->to, "postgresql:")) {
        KB_GUARD_OUT(rc, mdb_open(o->to, false, &dst, r->why, sizeof(r->why)));
        KB_GUARD_OUT(rc, target_empty(dst, r));
        mdb_close(dst);
        dst = NULL;
    } else {
        mdb *probe = NULL;
        if (mdb_open(o->to, false, &probe, NULL, 0) == KB_OK) {
            rc = target_empty(probe, r);
            mdb_close(probe);
            KB_GUARD_OUT(rc, rc);
        }
    }
    rc = open_store(o, o->to, true, &tst);
    if (rc == KB_OK)
        rc = store_schema_version(tst, &tschema);
    store_close(tst);
    tst = NULL;
    if (rc != KB_OK) {
        why_f(r, "cannot create the target store's schema (%s; see the log)", kb_err_str(rc));
        goto out;
    }
    if (tschema != r->schema_version) {
        why_f(r, "source and target schema versions differ");
        rc = KB_ERR_SCHEMA;
        goto out;
    }

    /* 2. One snapshot of the source, one transaction on the target. */
    KB_GUARD_OUT(rc, mdb_open(o->from, false, &src, r->why, sizeof(r->why)));
    KB_GUARD_OUT(rc, mdb_open(o->to, true, &dst, r->why, sizeof(r->why)));
    KB_GUARD_OUT(rc, mdb_begin(src, false));
    src_tx = true;
    KB_GUARD_OUT(rc, mdb_begin(dst, true));
    dst_tx = true;
    KB_GUARD_OUT(rc, tables_known(src, "source", r));
    KB_GUARD_OUT(rc, tables_known(dst, "target", r));
    KB_GUARD_OUT(rc, target_empty(dst, r));
    for (size_t i = 0; i < STORE_MIGRATE_TABLES; i++)
        KB_GUARD_OUT(rc,
                     columns_agree(src, dst, mig_tables[i].name, sc->cols[i], &sc->ncols[i], r));
    KB_GUARD_OUT(rc, mdb_exec(dst, "DELETE FROM store_state"));
    KB_GUARD_OUT(rc, rowmac_ctx_new(o->row_mac_key, &p.rm));
    {
        /* The chain MAC needs the audit key: an audit handle (on the source store, read only). */
        store *st = NULL;
        audit_opts ao = *o->audit;
        ao.anchor_every_rows = -1;
        ao.anchor_every_secs = -1;
        KB_GUARD_OUT(rc, open_store(o, o->from, false, &st));
        rc = audit_open(st, &ao, &p.au);
        if (rc != KB_OK) {
            store_close(st);
            goto out;
        }
        tst = st;
    }
    p.side = "source";
    p.dst = dst;
    {
        int64_t counts[STORE_MIGRATE_TABLES];
        KB_GUARD_OUT(rc, run_pass(&p, src, sc, r, r->digest, counts));
        for (size_t i = 0; i < STORE_MIGRATE_TABLES; i++) {
            r->counts[i].table = mig_tables[i].name;
            r->counts[i].rows = counts[i];
            r->rows += counts[i];
        }
        r->ntables = STORE_MIGRATE_TABLES;
    }
    r->state_counter = p.state_counter;
    r->audit_rows = p.audit_rows;
    if (p.audit_rows < src_audit) {
        why_f(r, "source audit log shrank between its check and the copy");
        rc = KB_ERR_INTEGRITY;
        goto out;
    }
    for (size_t i = 0; i < STORE_MIGRATE_TABLES; i++) {
        int64_t v = 0;
        if (!mig_tables[i].seq)
            continue;
        KB_GUARD_OUT(rc, mdb_seq_get(src, mig_tables[i].name, &v));
        KB_GUARD_OUT(rc, mdb_seq_set(dst, mig_tables[i].name, v));
    }
    KB_GUARD_OUT(rc, mdb_commit(dst));
    dst_tx = false;
    mdb_rollback(src);
    src_tx = false;
    kb_log(KB_LOG_INFO, "migrate_copied", "msg", "every row copied and committed on the target",
           NULL);

    /* 3. The target, checked through the store against the token, then read back raw. */
    rc = verify_store(o, o->to, "target", &tschema, &dst_audit, r);
    if (rc == KB_OK && dst_audit != r->audit_rows) {
        why_f(r, "target audit chain length differs from the source's");
        rc = KB_ERR_INTEGRITY;
    }
    KB_GUARD_OUT(rc, rc);
    KB_GUARD_OUT(rc, mdb_begin(dst, false));
    dst_tx = true;
    {
        pass q;
        memset(&q, 0, sizeof(q));
        q.side = "target";
        q.rm = p.rm;
        q.au = p.au;
        q.why = r->why;
        q.why_len = sizeof(r->why);
        KB_GUARD_OUT(rc, run_pass(&q, dst, sc, r, digest2, counts2));
    }
    for (size_t i = 0; i < STORE_MIGRATE_TABLES; i++) {
        if (counts2[i] != r->counts[i].rows) {
            why_f(r, "target table %s has another row count than the source", mig_tables[i].name);
            rc = KB_ERR_INTEGRITY;
            goto out;
        }
    }
    if (!kb_ct_eq(digest2, r->digest, sizeof(digest2))) {
        why_f(r, "target rows differ from the source's (digest mismatch)");
        rc = KB_ERR_INTEGRITY;
    }
out:
    if (dst_tx)
        mdb_rollback(dst);
    if (src_tx)
        mdb_rollback(src);
    mdb_close(src);
    mdb_close(dst);
    audit_close(p.au);
    store_close(tst);
    rowmac_ctx_free(p.rm);
    free(sc);
    if (rc != KB_OK && r->why[0] == '\0')
        why_f(r, "migrate-store failed (%s; see the log)", kb_err_str(rc));
    return rc;
}
