/* ca.c - the authority: generations, bundle, issuance (see ca.h). */
#include "ca.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca_cert.h"
#include "ca_leafkey.h"
#include "lib/buf.h"
#include "lib/keystore.h"
#include "lib/log.h"
#include "lib/x509svid.h"

#define PEM_MAX ((size_t)1024 * 1024)

/* One consistent view of the generations, swapped whole on reload. */
struct ca_state {
    int64_t gen;
    kb_ec_signer *signer;
    X509 *cert;
    STACK_OF(X509) * chain; /* above cert, excluding the root */
    char *chain_pem;        /* cert + chain, appended after each leaf */
    spiffe_bundle *bundle;
    char *bundle_pem;
    int64_t bundle_seq;
    time_t not_after;
    char fingerprint[64]; /* of the generation table, to detect changes cheaply */
    /* acm-pca generations: no signer; AWS Private CA signs for the CA of this ARN */
    char pca_arn[CA_REF_MAX];
    const char *pca_sigalg;
};

struct ca_authority {
    ca_store *st;
    ca_keys keys;
    char td[SPIFFE_TD_MAX + 1];
    pthread_rwlock_t lk;
    struct ca_state *s;
};

static STACK_OF(X509) * pem_certs(const char *pem)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *b;
    X509 *x;

    if (sk == NULL || pem == NULL)
        return sk;
    b = BIO_new_mem_buf(pem, (int)strlen(pem));
    if (b == NULL) {
        sk_X509_free(sk);
        return NULL;
    }
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (sk_X509_push(sk, x) <= 0) {
            X509_free(x);
            break;
        }
    }
    ERR_clear_error(); /* end of input */
    BIO_free(b);
    return sk;
}

static kb_err pem_append(kb_dbuf *b, X509 *x)
{
    BIO *m = BIO_new(BIO_s_mem());
    char *p = NULL;
    long n;
    kb_err rc = KB_ERR_CRYPTO;

    if (m != NULL && PEM_write_bio_X509(m, x) == 1 && (n = BIO_get_mem_data(m, &p)) > 0)
        rc = kb_dbuf_add(b, p, (size_t)n);
    BIO_free(m);
    return rc;
}

static char *pem_of_x509(X509 *x)
{
    kb_dbuf b;

    kb_dbuf_init(&b, PEM_MAX);
    if (pem_append(&b, x) != KB_OK) {
        kb_dbuf_free(&b);
        return NULL;
    }
    return kb_dbuf_steal(&b, NULL);
}

static void state_free(struct ca_state *s)
{
    if (s == NULL)
        return;
    kb_ec_signer_free(s->signer);
    X509_free(s->cert);
    sk_X509_pop_free(s->chain, X509_free);
    free(s->chain_pem);
    spiffe_bundle_free(s->bundle);
    free(s->bundle_pem);
    free(s);
}

static kb_err open_signer(const ca_keys *keys, const char *kind, const char *ref,
                          kb_ec_signer **out)
{
    if (strcmp(kind, "file") == 0)
        return kb_keystore_ec_open_file(ref, out);
    if (strcmp(kind, "pkcs11") == 0) {
        KB_ENSURE(keys != NULL && keys->pkcs11_module && keys->pkcs11_token && keys->pin,
                  KB_ERR_CONFIG);
        return kb_keystore_ec_open(keys->pkcs11_module, keys->pkcs11_token, ref, keys->pin, out);
    }
    return KB_ERR_CONFIG;
}

kb_err ca_store_trust_domain(ca_store *st, char *td, size_t len)
{
    return ca_store_meta_get(st, "trust_domain", td, len);
}

static kb_err bundle_seq_get(ca_store *st, int64_t *seq)
{
    char v[32];
    kb_err rc = ca_store_meta_get(st, "bundle_sequence", v, sizeof(v));

    if (rc == KB_ERR_NOT_FOUND) {
        *seq = 0;
        return KB_OK;
    }
    KB_GUARD(rc);
    *seq = strtoll(v, NULL, 10);
    return KB_OK;
}

/* Build a state from the generation table. */
static kb_err state_load(ca_authority *ca, struct ca_state **out)
{
    struct ca_state *s = NULL;
    ca_gen *g = NULL;
    size_t n = 0;
    kb_dbuf fp, cp, bp;
    time_t now = time(NULL);
    const ca_gen *active = NULL;
    STACK_OF(X509) *sk = NULL;
    kb_err rc = KB_OK;

    kb_dbuf_init(&fp, 4096);
    kb_dbuf_init(&cp, PEM_MAX);
    kb_dbuf_init(&bp, PEM_MAX);
    *out = NULL;
    KB_GUARD_OUT(rc, ca_store_gen_list(ca->st, &g, &n));
    s = calloc(1, sizeof(*s));
    KB_ENSURE_OUT(rc, s != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, bundle_seq_get(ca->st, &s->bundle_seq));
    KB_GUARD_OUT(rc, spiffe_bundle_new(ca->td, &s->bundle));
    for (size_t i = 0; i < n; i++) {
        if (strcmp(g[i].state, CA_STATE_ACTIVE) == 0)
            active = &g[i];
        if (g[i].cert_pem == NULL || strcmp(g[i].state, CA_STATE_PENDING) == 0)
            continue;
        /* Retired CAs stay trusted until they expire: SVIDs they signed end no later. */
        if (strcmp(g[i].state, CA_STATE_RETIRED) == 0 && g[i].not_after <= now)
            continue;
        sk = pem_certs(g[i].roots_pem);
        KB_ENSURE_OUT(rc, sk != NULL && sk_X509_num(sk) > 0, KB_ERR_INTEGRITY);
        for (int j = 0; j < sk_X509_num(sk); j++)
            KB_GUARD_OUT(rc, spiffe_bundle_add_x509_root(s->bundle, sk_X509_value(sk, j)));
        sk_X509_pop_free(sk, X509_free);
        sk = NULL;
    }
    if (active == NULL) {
        char nb[24];
        snprintf(nb, sizeof(nb), "%zu", n);
        kb_log(KB_LOG_ERROR, "ca_no_active_generation", "generations", nb, NULL);
        rc = KB_ERR_NOT_FOUND;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        KB_GUARD_OUT(rc, kb_dbuf_addf(&fp, "%lld:%s;", (long long)g[i].gen, g[i].state));
    KB_GUARD_OUT(rc, kb_dbuf_addf(&fp, "seq=%lld", (long long)s->bundle_seq));
    {
        uint8_t md[32];
        unsigned int mdl = 0;
        KB_ENSURE_OUT(rc, EVP_Digest(fp.p, fp.len, md, &mdl, EVP_sha256(), NULL) == 1,
                      KB_ERR_CRYPTO);
        kb_hex(md, 31, s->fingerprint); /* 62 hex chars + NUL fits */
    }
    s->gen = active->gen;
    if (strcmp(active->key_kind, CA_KEY_ACM_PCA) != 0)
        KB_GUARD_OUT(rc, open_signer(&ca->keys, active->key_kind, active->key_ref, &s->signer));
    sk = pem_certs(active->cert_pem);
    KB_ENSURE_OUT(rc, sk != NULL && sk_X509_num(sk) == 1, KB_ERR_INTEGRITY);
    s->cert = sk_X509_shift(sk);
    sk_X509_free(sk);
    sk = NULL;
    if (s->signer == NULL) {
        /* AWS Private CA's certificate: checked at init (pca_generation); here, that it can
         * still sign and that this process can ask it to */
        const char *why = NULL;
        if (ca->keys.pca == NULL) {
            kb_log(KB_LOG_ERROR, "ca_pca_not_configured", "why",
                   "the active generation is signed by AWS Private CA: set [ca] key = acm-pca",
                   NULL);
            rc = KB_ERR_CONFIG;
            goto out;
        }
        snprintf(s->pca_arn, sizeof(s->pca_arn), "%s", active->key_ref);
        s->pca_sigalg = ca_pca_signing_algorithm(X509_get0_pubkey(s->cert));
        rc = x509svid_check_signing(s->cert, &why);
        if (rc != KB_OK || s->pca_sigalg == NULL) {
            kb_log(KB_LOG_ERROR, "ca_certificate_refused", "why",
                   why ? why : "AWS Private CA key type not supported", NULL);
            rc = KB_ERR_INTEGRITY;
            goto out;
        }
    } else {
        const char *why = NULL;
        rc = ca_cert_check_ca(s->cert, kb_ec_signer_pubkey(s->signer), ca->td, &why);
        if (rc != KB_OK) {
            kb_log(KB_LOG_ERROR, "ca_certificate_refused", "why", why ? why : "?", NULL);
            goto out;
        }
    }
    s->chain = pem_certs(active->chain_pem);
    KB_ENSURE_OUT(rc, s->chain != NULL, KB_ERR_NOMEM);
    s->not_after = (time_t)active->not_after;
    /* A root CA is in the bundle: the chain a leaf carries is just the leaf. An intermediate
     * sends itself and the upstream intermediates. */
    if (X509_check_issued(s->cert, s->cert) != X509_V_OK) {
        KB_GUARD_OUT(rc, pem_append(&cp, s->cert));
        for (int j = 0; j < sk_X509_num(s->chain); j++)
            KB_GUARD_OUT(rc, pem_append(&cp, sk_X509_value(s->chain, j)));
    }
    s->chain_pem = kb_dbuf_steal(&cp, NULL);
    KB_ENSURE_OUT(rc, s->chain_pem != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, spiffe_bundle_set_sequence(s->bundle, (uint64_t)s->bundle_seq));
    KB_GUARD_OUT(rc, spiffe_bundle_set_refresh_hint(s->bundle, CA_BUNDLE_REFRESH_HINT));
    KB_GUARD_OUT(rc, spiffe_bundle_to_pem(s->bundle, &bp));
    s->bundle_pem = kb_dbuf_steal(&bp, NULL);
    KB_ENSURE_OUT(rc, s->bundle_pem != NULL, KB_ERR_NOMEM);
    *out = s;
    s = NULL;
out:
    sk_X509_pop_free(sk, X509_free);
    state_free(s);
    ca_gen_list_free(g, n);
    kb_dbuf_free(&fp);
    kb_dbuf_free(&cp);
    kb_dbuf_free(&bp);
    return rc;
}

kb_err ca_open(ca_store *st, const ca_keys *keys, ca_authority **out)
{
    ca_authority *ca;
    kb_err rc;

    KB_ENSURE_REF(st);
    KB_ENSURE_REF(out);
    *out = NULL;
    ca = calloc(1, sizeof(*ca));
    KB_ENSURE(ca != NULL, KB_ERR_NOMEM);
    ca->st = st;
    if (keys != NULL)
        ca->keys = *keys;
    pthread_rwlock_init(&ca->lk, NULL);
    rc = ca_store_trust_domain(st, ca->td, sizeof(ca->td));
    if (rc == KB_ERR_NOT_FOUND)
        kb_log(KB_LOG_ERROR, "ca_trust_domain_missing", "msg",
               "the store holds no trust domain (keybridge-ca init sets it)", NULL);
    if (rc == KB_OK)
        rc = state_load(ca, &ca->s);
    if (rc != KB_OK) {
        ca_free(ca);
        return rc;
    }
    *out = ca;
    return KB_OK;
}

void ca_free(ca_authority *ca)
{
    if (ca == NULL)
        return;
    state_free(ca->s);
    pthread_rwlock_destroy(&ca->lk);
    free(ca);
}

kb_err ca_reload(ca_authority *ca, int *changed)
{
    struct ca_state *s = NULL, *old;

    *changed = 0;
    KB_GUARD(state_load(ca, &s));
    pthread_rwlock_wrlock(&ca->lk);
    old = ca->s;
    if (strcmp(old->fingerprint, s->fingerprint) != 0 ||
        strcmp(old->bundle_pem, s->bundle_pem) != 0) {
        ca->s = s;
        s = old;
        *changed = 1;
    }
    pthread_rwlock_unlock(&ca->lk);
    state_free(s);
    return KB_OK;
}

const char *ca_trust_domain(const ca_authority *ca)
{
    return ca->td;
}

int64_t ca_active_gen(ca_authority *ca)
{
    int64_t g;

    pthread_rwlock_rdlock(&ca->lk);
    g = ca->s->gen;
    pthread_rwlock_unlock(&ca->lk);
    return g;
}

int64_t ca_bundle_sequence(ca_authority *ca)
{
    int64_t g;

    pthread_rwlock_rdlock(&ca->lk);
    g = ca->s->bundle_seq;
    pthread_rwlock_unlock(&ca->lk);
    return g;
}

time_t ca_not_after(ca_authority *ca)
{
    time_t t;

    pthread_rwlock_rdlock(&ca->lk);
    t = ca->s->not_after;
    pthread_rwlock_unlock(&ca->lk);
    return t;
}

kb_err ca_bundle_pem(ca_authority *ca, kb_dbuf *out)
{
    kb_err rc;

    pthread_rwlock_rdlock(&ca->lk);
    rc = kb_dbuf_addstr(out, ca->s->bundle_pem);
    pthread_rwlock_unlock(&ca->lk);
    return rc;
}

kb_err ca_bundle_jwks(ca_authority *ca, kb_dbuf *out)
{
    kb_err rc;

    pthread_rwlock_rdlock(&ca->lk);
    rc = spiffe_bundle_to_jwks(ca->s->bundle, out);
    pthread_rwlock_unlock(&ca->lk);
    return rc;
}

kb_err ca_bundle_set(ca_authority *ca, spiffe_bundle_set **out)
{
    spiffe_bundle_set *set = NULL;
    spiffe_bundle *b = NULL;
    const char *why;
    kb_err rc;

    KB_GUARD(spiffe_bundle_set_new(&set));
    pthread_rwlock_rdlock(&ca->lk);
    rc = spiffe_bundle_parse_pem(ca->td, ca->s->bundle_pem, strlen(ca->s->bundle_pem), &b, &why);
    pthread_rwlock_unlock(&ca->lk);
    if (rc == KB_OK)
        rc = spiffe_bundle_set_put(set, b);
    if (rc != KB_OK) {
        spiffe_bundle_free(b);
        spiffe_bundle_set_free(set);
        return rc;
    }
    *out = set;
    return KB_OK;
}

void ca_svid_clear(ca_svid *s)
{
    if (s == NULL)
        return;
    free(s->chain_pem);
    ca_keypem_free(s->key_pem);
    free(s->bundle_pem);
    memset(s, 0, sizeof(*s));
}

kb_err ca_issue(ca_authority *ca, const spiffe_id *id, int64_t ttl, EVP_PKEY *pub,
                const char *audit_target, const char *reason, ca_svid *out)
{
    return ca_issue_sans(ca, id, NULL, ttl, pub, audit_target, reason, out);
}

int ca_is_pca(ca_authority *ca)
{
    int r;

    pthread_rwlock_rdlock(&ca->lk);
    r = ca->s->signer == NULL;
    pthread_rwlock_unlock(&ca->lk);
    return r;
}

static kb_err audit_issued(ca_authority *ca, const spiffe_id *id, const char *audit_target,
                           const char *reason, const ca_svid *out, time_t now)
{
    if (audit_target == NULL)
        return KB_OK;
    KB_GUARD(ca_store_audit_add(ca->st, out->serial, spiffe_id_str(id), audit_target,
                                reason ? reason : "", out->ca_gen, out->not_after, (int64_t)now));
    kb_log(KB_LOG_INFO, "svid_issued", "serial", out->serial, "spiffe_id", spiffe_id_str(id),
           "target", audit_target, "reason", reason ? reason : "", NULL);
    return KB_OK;
}

/* What an AWS Private CA issuance needs from the state, copied so that the read lock is not
 * held across network calls (a reload swaps the state meanwhile). */
typedef struct {
    X509 *cert;
    STACK_OF(X509) * chain;
    char *chain_pem, *bundle_pem;
    char arn[CA_REF_MAX];
    const char *sigalg;
    int64_t gen, seq;
    time_t not_after;
} pca_snap;

static void pca_snap_free(pca_snap *p)
{
    X509_free(p->cert);
    sk_X509_pop_free(p->chain, X509_free);
    free(p->chain_pem);
    free(p->bundle_pem);
}

/* The leaf key as an EVP_PKEY (to sign the CSR), read back from its PKCS#8 PEM. */
static EVP_PKEY *keypem_pkey(const ca_keypem *kp)
{
    BIO *m = BIO_new_mem_buf(ca_keypem_data(kp), (int)ca_keypem_len(kp));
    EVP_PKEY *k = m ? PEM_read_bio_PrivateKey(m, NULL, NULL, NULL) : NULL;

    BIO_free(m);
    return k;
}

/* Issue through AWS Private CA (ca.h): our key and CSR, their signature, our checks. */
static kb_err issue_pca(ca_authority *ca, const spiffe_id *id, const ca_sans *sans, int64_t ttl,
                        const char *audit_target, const char *reason, ca_svid *out,
                        const char **why)
{
    ca_leafkey k;
    ca_keypem *kp = NULL;
    EVP_PKEY *key = NULL;
    X509 *leaf = NULL;
    char *csr = NULL, *leaf_pem = NULL;
    pca_snap sn;
    ca_pca_req rq;
    time_t now = time(NULL);
    int64_t not_after;
    size_t ll, cl;
    kb_err rc = KB_OK;

    memset(&sn, 0, sizeof(sn));
    pthread_rwlock_rdlock(&ca->lk);
    sn.cert = ca->s->cert;
    X509_up_ref(sn.cert);
    sn.chain = X509_chain_up_ref(ca->s->chain);
    sn.chain_pem = strdup(ca->s->chain_pem);
    sn.bundle_pem = strdup(ca->s->bundle_pem);
    memcpy(sn.arn, ca->s->pca_arn, sizeof(sn.arn));
    sn.sigalg = ca->s->pca_sigalg;
    sn.gen = ca->s->gen;
    sn.seq = ca->s->bundle_seq;
    sn.not_after = ca->s->not_after;
    pthread_rwlock_unlock(&ca->lk);
    KB_ENSURE_OUT(rc, sn.chain != NULL && sn.chain_pem != NULL && sn.bundle_pem != NULL,
                  KB_ERR_NOMEM);
    not_after = (int64_t)now + ttl;
    if (not_after > (int64_t)sn.not_after)
        not_after = (int64_t)sn.not_after;
    if (not_after <= (int64_t)now + CA_BACKDATE_SECS) {
        *why = "the AWS Private CA certificate has expired (run keybridge-ca rotate prepare)";
        rc = KB_ERR_INVALID;
        goto out;
    }
    KB_GUARD_OUT(rc, ca_leafkey_gen(&k));
    rc = ca_leafkey_pkcs8_pem(&k, &kp);
    ca_leafkey_wipe(&k);
    KB_GUARD_OUT(rc, rc);
    key = keypem_pkey(kp);
    KB_ENSURE_OUT(rc, key != NULL, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, ca_pca_csr(key, &csr));
    rq.arn = sn.arn;
    rq.csr_pem = csr;
    rq.id = id;
    rq.sans = sans;
    rq.not_after = not_after;
    rq.signing_algorithm = sn.sigalg;
    rc = ca_pca_issue(ca->keys.pca, &rq, &leaf_pem, why);
    if (rc != KB_OK) {
        kb_log(KB_LOG_WARN, "acm_pca_issue_failed", "spiffe_id", spiffe_id_str(id), "err",
               kb_err_str(rc), "why", *why ? *why : "", NULL);
        goto out;
    }
    rc = ca_pca_check_leaf(leaf_pem, key, sn.cert, sn.chain, ca->td, sn.bundle_pem, id, sans,
                           (int64_t)now, not_after, &leaf, why);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "acm_pca_certificate_refused", "spiffe_id", spiffe_id_str(id), "why",
               *why ? *why : "", NULL);
        goto out;
    }
    ll = strlen(leaf_pem);
    cl = strlen(sn.chain_pem);
    out->chain_pem = malloc(ll + 1 + cl + 1);
    KB_ENSURE_OUT(rc, out->chain_pem != NULL, KB_ERR_NOMEM);
    memcpy(out->chain_pem, leaf_pem, ll);
    if (ll > 0 && leaf_pem[ll - 1] != '\n')
        out->chain_pem[ll++] = '\n';
    memcpy(out->chain_pem + ll, sn.chain_pem, cl + 1);
    out->bundle_pem = sn.bundle_pem;
    sn.bundle_pem = NULL;
    out->key_pem = kp;
    kp = NULL;
    ca_cert_serial_hex(leaf, out->serial, sizeof(out->serial));
    out->not_after = (int64_t)ca_cert_not_after(leaf);
    out->ca_gen = sn.gen;
    out->bundle_seq = sn.seq;
    KB_GUARD_OUT(rc, audit_issued(ca, id, audit_target, reason, out, now));
out:
    X509_free(leaf);
    EVP_PKEY_free(key);
    ca_keypem_free(kp);
    free(csr);
    free(leaf_pem);
    pca_snap_free(&sn);
    if (rc != KB_OK)
        ca_svid_clear(out);
    return rc;
}

kb_err ca_issue_sans(ca_authority *ca, const spiffe_id *id, const ca_sans *sans, int64_t ttl,
                     EVP_PKEY *pub, const char *audit_target, const char *reason, ca_svid *out)
{
    const char *why = NULL;
    return ca_issue_sans_why(ca, id, sans, ttl, pub, audit_target, reason, out, &why);
}

kb_err ca_issue_sans_why(ca_authority *ca, const spiffe_id *id, const ca_sans *sans, int64_t ttl,
                         EVP_PKEY *pub, const char *audit_target, const char *reason, ca_svid *out,
                         const char **why)
{
    ca_leafkey k; /* a fresh leaf key when pub is NULL; wiped on every return */
    int fresh = pub == NULL;
    ca_issuer iss;
    kb_dbuf der;
    time_t not_after = 0;
    size_t pl, cl;
    kb_err rc = KB_OK;
    time_t now = time(NULL);

    KB_ENSURE_REF(ca);
    KB_ENSURE_REF(id);
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(why);
    *why = NULL;
    memset(out, 0, sizeof(*out));
    KB_ENSURE(spiffe_id_member_of(id, ca->td), KB_ERR_DENIED);
    if (ca_is_pca(ca)) {
        if (!fresh) {
            *why = "AWS Private CA signs only CSRs signed by the key it certifies: with "
                   "[ca] key = acm-pca the CA makes every key (no --csr, no API renewal)";
            return KB_ERR_CONFIG;
        }
        return issue_pca(ca, id, sans, ttl, audit_target, reason, out, why);
    }
    if (fresh)
        KB_GUARD(ca_leafkey_gen(&k));
    kb_dbuf_init(&der, PEM_MAX);
    pthread_rwlock_rdlock(&ca->lk);
    iss.signer = ca->s->signer;
    iss.cert = ca->s->cert;
    iss.chain = ca->s->chain;
    rc = ca_cert_leaf_der(&iss, pub, fresh ? k.point : NULL, id, sans, ttl, now, &der, out->serial,
                          &not_after);
    if (rc == KB_OK) {
        /* leaf PEM (made from the DER we just signed) + the CA's chain PEM */
        pl = ca_pem_len(der.len, "CERTIFICATE");
        cl = strlen(ca->s->chain_pem);
        out->chain_pem = malloc(pl + cl + 1);
        out->bundle_pem = strdup(ca->s->bundle_pem);
        rc = out->chain_pem && out->bundle_pem ? KB_OK : KB_ERR_NOMEM;
        if (rc == KB_OK) {
            ca_pem_write(der.p, der.len, "CERTIFICATE", out->chain_pem);
            memcpy(out->chain_pem + pl, ca->s->chain_pem, cl + 1);
        }
    }
    out->ca_gen = ca->s->gen;
    out->bundle_seq = ca->s->bundle_seq;
    pthread_rwlock_unlock(&ca->lk);
    KB_GUARD_OUT(rc, rc);
    if (fresh)
        KB_GUARD_OUT(rc, ca_leafkey_pkcs8_pem(&k, &out->key_pem));
    out->not_after = (int64_t)not_after;
    KB_GUARD_OUT(rc, audit_issued(ca, id, audit_target, reason, out, now));
out:
    if (fresh)
        ca_leafkey_wipe(&k);
    kb_dbuf_free(&der);
    if (rc != KB_OK)
        ca_svid_clear(out);
    return rc;
}

/* ---- administration ----------------------------------------------------------------------- */

static kb_err bump_bundle(ca_store *st)
{
    int64_t seq;
    return ca_store_meta_incr(st, "bundle_sequence", &seq);
}

/* An acm-pca generation (ca.h): AWS Private CA's certificate, checked, and the root above it. */
static kb_err pca_generation(ca_store *st, const ca_keys *keys, const ca_new_gen_opts *o,
                             int64_t *gen)
{
    char *cert_pem = NULL, *chain_pem = NULL;
    STACK_OF(X509) *certs = NULL, *chain = NULL, *up = NULL;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    X509 *cert = NULL, *root = NULL;
    const char *why = NULL;
    kb_dbuf upb;
    ca_gen g;
    kb_err rc = KB_OK;

    memset(&g, 0, sizeof(g));
    kb_dbuf_init(&upb, PEM_MAX);
    KB_ENSURE(keys != NULL && keys->pca != NULL, KB_ERR_CONFIG);
    KB_ENSURE(!o->intermediate, KB_ERR_CONFIG);
    rc = ca_pca_get_ca_certificate(keys->pca, o->key_ref, &cert_pem, &chain_pem, &why);
    if (rc != KB_OK) {
        kb_log(KB_LOG_ERROR, "acm_pca_ca_certificate_failed", "err", kb_err_str(rc), "why",
               why ? why : "", NULL);
        goto out;
    }
    certs = pem_certs(cert_pem);
    chain = pem_certs(chain_pem);
    KB_ENSURE_OUT(rc, certs != NULL && chain != NULL && sk_X509_num(certs) == 1, KB_ERR_INVALID);
    cert = sk_X509_value(certs, 0);
    rc = x509svid_check_signing(cert, &why);
    if (rc == KB_OK && ca_pca_signing_algorithm(X509_get0_pubkey(cert)) == NULL) {
        why = "its key type is not one AWS Private CA signs SVIDs with (EC P-256/384/521, RSA)";
        rc = KB_ERR_AUTH;
    }
    if (rc == KB_OK && X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
        why = "it has expired";
        rc = KB_ERR_AUTH;
    }
    if (rc != KB_OK)
        goto refused;
    if (X509_check_issued(cert, cert) == X509_V_OK) {
        root = cert; /* a root CA: the bundle holds it, leaves carry no chain */
    } else {
        /* GetCertificateAuthorityCertificate's chain: the issuers up to the root */
        why = "its chain does not end at a self-signed root";
        rc = KB_ERR_AUTH;
        if (sk_X509_num(chain) < 1)
            goto refused;
        root = sk_X509_value(chain, sk_X509_num(chain) - 1);
        if (X509_check_issued(root, root) != X509_V_OK)
            goto refused;
        up = sk_X509_dup(chain);
        KB_ENSURE_OUT(rc, up != NULL, KB_ERR_NOMEM);
        (void)sk_X509_pop(up);
        store = X509_STORE_new();
        ctx = X509_STORE_CTX_new();
        KB_ENSURE_OUT(rc, store != NULL && ctx != NULL && X509_STORE_add_cert(store, root) == 1,
                      KB_ERR_NOMEM);
        KB_ENSURE_OUT(rc, X509_STORE_CTX_init(ctx, store, cert, up) == 1, KB_ERR_CRYPTO);
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_ANY);
        if (X509_verify_cert(ctx) != 1) {
            why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
            goto refused;
        }
        for (int i = 0; i < sk_X509_num(up); i++)
            KB_GUARD_OUT(rc, pem_append(&upb, sk_X509_value(up, i)));
    }
    snprintf(g.key_kind, sizeof(g.key_kind), "%s", CA_KEY_ACM_PCA);
    KB_ENSURE_OUT(rc, snprintf(g.key_ref, sizeof(g.key_ref), "%s", o->key_ref) < CA_REF_MAX,
                  KB_ERR_TOO_LARGE);
    g.cert_pem = pem_of_x509(cert);
    g.roots_pem = pem_of_x509(root);
    g.chain_pem = upb.p != NULL ? (char *)kb_dbuf_str(&upb) : "";
    KB_ENSURE_OUT(rc, g.cert_pem != NULL && g.roots_pem != NULL, KB_ERR_NOMEM);
    g.not_after = (int64_t)ca_cert_not_after(cert);
    if (o->state == NULL || strcmp(o->state, CA_STATE_ACTIVE) == 0) {
        snprintf(g.state, sizeof(g.state), "%s", CA_STATE_PREPARED);
        KB_GUARD_OUT(rc, ca_store_gen_add(st, &g));
        KB_GUARD_OUT(rc, ca_store_gen_activate(st, g.gen));
    } else {
        snprintf(g.state, sizeof(g.state), "%s", o->state);
        KB_GUARD_OUT(rc, ca_store_gen_add(st, &g));
    }
    KB_GUARD_OUT(rc, bump_bundle(st));
    if (gen != NULL)
        *gen = g.gen;
    kb_log(KB_LOG_INFO, "ca_generation_created", "trust_domain", o->td, "key", CA_KEY_ACM_PCA,
           "ca_arn", o->key_ref, "state", o->state ? o->state : "active", NULL);
    goto out;
refused:
    kb_log(KB_LOG_ERROR, "acm_pca_ca_certificate_refused", "ca_arn", o->key_ref, "why",
           why ? why : "?", NULL);
    rc = rc == KB_OK ? KB_ERR_AUTH : rc;
out:
    free(g.cert_pem);
    free(g.roots_pem);
    kb_dbuf_free(&upb);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_free(up);
    sk_X509_pop_free(certs, X509_free);
    sk_X509_pop_free(chain, X509_free);
    free(cert_pem);
    free(chain_pem);
    return rc;
}

kb_err ca_new_generation(ca_store *st, const ca_keys *keys, const ca_new_gen_opts *o, int64_t *gen,
                         char **csr_pem)
{
    char td[SPIFFE_TD_MAX + 1];
    kb_ec_signer *s = NULL;
    X509 *cert = NULL;
    X509_REQ *req = NULL;
    ca_gen g;
    BIO *m = NULL;
    char *p;
    long n;
    int64_t next;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(o);
    KB_ENSURE_REF(o->td);
    memset(&g, 0, sizeof(g));
    rc = ca_store_trust_domain(st, td, sizeof(td));
    if (rc == KB_ERR_NOT_FOUND)
        KB_GUARD(ca_store_meta_set(st, "trust_domain", o->td));
    else if (rc != KB_OK)
        return rc;
    else
        KB_ENSURE(strcmp(td, o->td) == 0, KB_ERR_CONFLICT);
    if (strcmp(o->key_kind, CA_KEY_ACM_PCA) == 0) {
        return pca_generation(st, keys, o, gen);
    } else if (strcmp(o->key_kind, "file") == 0) {
        KB_GUARD(kb_keystore_ec_create_file(o->key_ref));
    } else if (strcmp(o->key_kind, "pkcs11") == 0) {
        KB_ENSURE(keys && keys->pkcs11_module && keys->pkcs11_token && keys->pin, KB_ERR_CONFIG);
        KB_GUARD(
            kb_keystore_ec_init(keys->pkcs11_module, keys->pkcs11_token, o->key_ref, keys->pin));
    } else {
        return KB_ERR_CONFIG;
    }
    KB_GUARD(open_signer(keys, o->key_kind, o->key_ref, &s));
    KB_GUARD_OUT(rc, ca_store_meta_incr(st, "generation_counter", &next));
    snprintf(g.key_kind, sizeof(g.key_kind), "%s", o->key_kind);
    snprintf(g.key_ref, sizeof(g.key_ref), "%s", o->key_ref);
    if (o->intermediate) {
        snprintf(g.state, sizeof(g.state), "%s", CA_STATE_PENDING);
        KB_GUARD_OUT(rc, ca_cert_csr(s, o->td, next, &req));
        m = BIO_new(BIO_s_mem());
        KB_ENSURE_OUT(rc, m != NULL && PEM_write_bio_X509_REQ(m, req) == 1, KB_ERR_CRYPTO);
        n = BIO_get_mem_data(m, &p);
        KB_ENSURE_OUT(rc, n > 0 && csr_pem != NULL, KB_ERR_CRYPTO);
        *csr_pem = strndup(p, (size_t)n);
        KB_ENSURE_OUT(rc, *csr_pem != NULL, KB_ERR_NOMEM);
        KB_GUARD_OUT(rc, ca_store_gen_add(st, &g));
    } else {
        snprintf(g.state, sizeof(g.state), "%s", o->state ? o->state : CA_STATE_ACTIVE);
        KB_GUARD_OUT(rc, ca_cert_root(s, o->td, next, o->ttl, time(NULL), &cert));
        g.cert_pem = pem_of_x509(cert);
        g.roots_pem = g.cert_pem;
        g.chain_pem = "";
        KB_ENSURE_OUT(rc, g.cert_pem != NULL, KB_ERR_NOMEM);
        g.not_after = (int64_t)ca_cert_not_after(cert);
        if (strcmp(g.state, CA_STATE_ACTIVE) == 0) {
            snprintf(g.state, sizeof(g.state), "%s", CA_STATE_PREPARED);
            KB_GUARD_OUT(rc, ca_store_gen_add(st, &g));
            KB_GUARD_OUT(rc, ca_store_gen_activate(st, g.gen));
        } else {
            KB_GUARD_OUT(rc, ca_store_gen_add(st, &g));
        }
        KB_GUARD_OUT(rc, bump_bundle(st));
    }
    if (gen != NULL)
        *gen = g.gen;
    kb_log(KB_LOG_INFO, "ca_generation_created", "trust_domain", o->td, "key", o->key_kind, "state",
           o->intermediate ? CA_STATE_PENDING : (o->state ? o->state : "active"), NULL);
out:
    if (g.cert_pem != NULL)
        free(g.cert_pem);
    BIO_free(m);
    X509_REQ_free(req);
    X509_free(cert);
    kb_ec_signer_free(s);
    return rc;
}

/* RFC 5280 4.2.1.9 (a CA's basicConstraints MUST be critical) and X509-SVID.md 4.3 (a signing
 * certificate's key usage MUST be critical): checked on an imported certificate, which an
 * upstream CA made (ours are built so). */
static kb_err ext_critical(X509 *x, int nid, const char *missing, const char *not_crit,
                           const char **why)
{
    int i = X509_get_ext_by_NID(x, nid, -1);

    if (i < 0) {
        *why = missing;
        return KB_ERR_AUTH;
    }
    if (X509_EXTENSION_get_critical(X509_get_ext(x, i)) != 1) {
        *why = not_crit;
        return KB_ERR_AUTH;
    }
    return KB_OK;
}

/* Before an imported intermediate may sign: its own fields, then a test SVID signed by it
 * (a throwaway key, never stored) verified as a relying party would - the X509-SVID rules and
 * RFC 5280 path validation through upstream to roots, which applies every name constraint,
 * path length and policy above us. An upstream CA whose name constraints exclude the trust
 * domain signs a certificate that verifies on its own, yet every SVID under it would fail. The
 * test SVID is audited like any signature (reason "import-check", target "none"). */
static kb_err import_check(ca_store *st, kb_ec_signer *s, int64_t gen, X509 *cert,
                           STACK_OF(X509) * chain, STACK_OF(X509) * roots, const char *td,
                           const char **why)
{
    char idbuf[SPIFFE_TD_MAX + 64], serial[CA_SERIAL_HEX_LEN];
    spiffe_bundle_set *set = NULL;
    spiffe_bundle *b = NULL;
    EVP_PKEY *k = NULL;
    X509 *leaf = NULL;
    ca_issuer iss;
    spiffe_id id;
    time_t now = time(NULL);
    kb_err rc = KB_OK;

    KB_GUARD(ext_critical(cert, NID_basic_constraints, "CA certificate has no basicConstraints",
                          "CA certificate's basicConstraints is not critical (RFC 5280 4.2.1.9)",
                          why));
    KB_GUARD(ext_critical(cert, NID_key_usage, "CA certificate has no key usage",
                          "CA certificate's key usage is not critical (X509-SVID 4.3)", why));
    snprintf(idbuf, sizeof(idbuf), "spiffe://%s/keybridge-ca/import-check", td);
    KB_GUARD(spiffe_id_parse_str(idbuf, &id, why));
    k = EVP_EC_gen("P-256");
    KB_ENSURE(k != NULL, KB_ERR_CRYPTO);
    iss.signer = s;
    iss.cert = cert;
    iss.chain = chain;
    rc = ca_cert_leaf(&iss, k, &id, CA_TTL_MIN, now, &leaf);
    if (rc != KB_OK) {
        *why = "cannot sign a test SVID with the imported certificate (expired?)";
        goto out;
    }
    ca_cert_serial_hex(leaf, serial, sizeof(serial));
    KB_GUARD_OUT(rc, ca_store_audit_add(st, serial, idbuf, "none", "import-check", gen,
                                        (int64_t)ca_cert_not_after(leaf), (int64_t)now));
    KB_GUARD_OUT(rc, spiffe_bundle_set_new(&set));
    KB_GUARD_OUT(rc, spiffe_bundle_new(td, &b));
    for (int i = 0; i < sk_X509_num(roots); i++)
        KB_GUARD_OUT(rc, spiffe_bundle_add_x509_root(b, sk_X509_value(roots, i)));
    KB_GUARD_OUT(rc, spiffe_bundle_set_put(set, b));
    b = NULL;
    /* the chain a leaf carries: our certificate, then the upstream intermediates */
    for (int p = X509SVID_PURPOSE_CLIENT; p <= X509SVID_PURPOSE_SERVER; p++) {
        STACK_OF(X509) *inter = sk_X509_dup(chain);
        KB_ENSURE_OUT(rc, inter != NULL && sk_X509_unshift(inter, cert) > 0, KB_ERR_NOMEM);
        rc = x509svid_verify(set, leaf, inter, p, now, NULL, why);
        sk_X509_free(inter);
        if (rc != KB_OK) {
            static _Thread_local char msg[512];
            snprintf(msg, sizeof(msg),
                     "a test SVID signed by the imported certificate does not verify through "
                     "the chain (%s): name constraints, path length or key usage above it "
                     "exclude this trust domain's SVIDs",
                     *why);
            *why = msg;
            kb_log(KB_LOG_WARN, "ca_import_refused", "why", msg, NULL);
            goto out;
        }
    }
out:
    spiffe_bundle_free(b);
    spiffe_bundle_set_free(set);
    X509_free(leaf);
    EVP_PKEY_free(k);
    return rc;
}

kb_err ca_import_chain(ca_store *st, const ca_keys *keys, int64_t gen, const char *chain_pem,
                       const char *roots_pem, const char *state, const char **why)
{
    char td[SPIFFE_TD_MAX + 1];
    STACK_OF(X509) *chain = NULL, *roots = NULL;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    kb_ec_signer *s = NULL;
    ca_gen *g = NULL, *mine = NULL;
    size_t n = 0;
    kb_dbuf up;
    kb_err rc = KB_OK;

    *why = "import failed";
    kb_dbuf_init(&up, PEM_MAX);
    KB_GUARD(ca_store_trust_domain(st, td, sizeof(td)));
    KB_GUARD_OUT(rc, ca_store_gen_list(st, &g, &n));
    for (size_t i = 0; i < n; i++)
        if (g[i].gen == gen)
            mine = &g[i];
    if (mine == NULL || strcmp(mine->state, CA_STATE_PENDING) != 0) {
        *why = "no pending generation with that number";
        rc = KB_ERR_NOT_FOUND;
        goto out;
    }
    chain = pem_certs(chain_pem);
    roots = pem_certs(roots_pem);
    if (chain == NULL || roots == NULL || sk_X509_num(chain) < 1 || sk_X509_num(roots) < 1) {
        *why = "chain and roots must each hold at least one PEM certificate";
        rc = KB_ERR_INVALID;
        goto out;
    }
    KB_GUARD_OUT(rc, open_signer(keys, mine->key_kind, mine->key_ref, &s));
    KB_GUARD_OUT(rc, ca_cert_check_ca(sk_X509_value(chain, 0), kb_ec_signer_pubkey(s), td, why));
    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();
    KB_ENSURE_OUT(rc, store != NULL && ctx != NULL, KB_ERR_NOMEM);
    for (int i = 0; i < sk_X509_num(roots); i++)
        KB_ENSURE_OUT(rc, X509_STORE_add_cert(store, sk_X509_value(roots, i)) == 1, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, X509_STORE_CTX_init(ctx, store, sk_X509_value(chain, 0), chain) == 1,
                  KB_ERR_CRYPTO);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_ANY);
    if (X509_verify_cert(ctx) != 1) {
        *why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
        rc = KB_ERR_AUTH;
        goto out;
    }
    {
        STACK_OF(X509) *upstream = sk_X509_dup(chain);
        KB_ENSURE_OUT(rc, upstream != NULL, KB_ERR_NOMEM);
        (void)sk_X509_shift(upstream);
        rc = import_check(st, s, gen, sk_X509_value(chain, 0), upstream, roots, td, why);
        sk_X509_free(upstream);
        KB_GUARD_OUT(rc, rc);
    }
    for (int i = 1; i < sk_X509_num(chain); i++)
        KB_GUARD_OUT(rc, pem_append(&up, sk_X509_value(chain, i)));
    free(mine->cert_pem);
    mine->cert_pem = pem_of_x509(sk_X509_value(chain, 0));
    free(mine->chain_pem);
    mine->chain_pem = kb_dbuf_steal(&up, NULL);
    free(mine->roots_pem);
    mine->roots_pem = strdup(roots_pem);
    KB_ENSURE_OUT(rc, mine->cert_pem && mine->chain_pem && mine->roots_pem, KB_ERR_NOMEM);
    mine->not_after = (int64_t)ca_cert_not_after(sk_X509_value(chain, 0));
    snprintf(mine->state, sizeof(mine->state), "%s", CA_STATE_PREPARED);
    KB_GUARD_OUT(rc, ca_store_gen_update(st, mine));
    if (state != NULL && strcmp(state, CA_STATE_ACTIVE) == 0)
        KB_GUARD_OUT(rc, ca_store_gen_activate(st, gen));
    KB_GUARD_OUT(rc, bump_bundle(st));
    *why = NULL;
out:
    kb_dbuf_free(&up);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(roots, X509_free);
    kb_ec_signer_free(s);
    ca_gen_list_free(g, n);
    return rc;
}

kb_err ca_activate(ca_store *st, int64_t gen)
{
    KB_GUARD(ca_store_gen_activate(st, gen));
    return bump_bundle(st);
}
