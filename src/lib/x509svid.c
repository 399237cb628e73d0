/* x509svid.c - X509-SVID verification and loading (X509-SVID.md sections 3-5). */
#include "x509svid.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "fileio.h"
#include "secbuf.h"

struct x509svid {
    X509 *leaf;
    STACK_OF(X509) * inter;
    EVP_PKEY *key;
    spiffe_id id;
};

/* Reasons that carry details (an OpenSSL message, the SPIFFE ID rule) are formatted here; the
 * header documents that they live until the thread's next x509svid call. */
static _Thread_local char reason_buf[320];

static kb_err fail(const char **why, const char *reason, kb_err code)
{
    if (why)
        *why = reason;
    return code;
}

static kb_err failf(const char **why, kb_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kb_err failf(const char **why, kb_err code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason_buf, sizeof(reason_buf), fmt, ap);
    va_end(ap);
    return fail(why, reason_buf, code);
}

/* The extension flags OpenSSL derives when it caches a certificate's extensions. EXFLAG_INVALID
 * covers undecodable and duplicated extensions (RFC 5280 4.2: an extension appears at most once),
 * which would make every later check ambiguous. */
static kb_err ext_flags(X509 *x, uint32_t *flags, const char *who, const char **why)
{
    *flags = X509_get_extension_flags(x);
    ERR_clear_error();
    if (*flags & EXFLAG_INVALID)
        return failf(why, KB_ERR_AUTH, "%s has malformed or duplicate extensions", who);
    return KB_OK;
}

static int ext_critical(X509 *x, int nid)
{
    int idx = X509_get_ext_by_NID(x, nid, -1);
    return idx >= 0 && X509_EXTENSION_get_critical(X509_get_ext(x, idx)) == 1;
}

/* The SPIFFE ID of x's URI SANs. *count is the number of URI SANs; *out is set when there is
 * exactly one and it parses (else *why says why). */
static kb_err uri_san(X509 *x, int *count, spiffe_id *out, const char **why)
{
    int crit = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    const ASN1_IA5STRING *uri = NULL;
    kb_err rc = KB_OK;

    ERR_clear_error();
    *count = 0;
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type == GEN_URI) {
            (*count)++;
            uri = gn->d.uniformResourceIdentifier;
        }
    }
    if (*count == 1) {
        const char *idwhy = NULL;
        rc = spiffe_id_parse((const char *)ASN1_STRING_get0_data(uri),
                             (size_t)ASN1_STRING_length(uri), out, &idwhy);
        if (rc != KB_OK)
            rc = failf(why, KB_ERR_AUTH, "URI SAN is not a valid SPIFFE ID: %s",
                       idwhy ? idwhy : "invalid");
    }
    GENERAL_NAMES_free(names);
    return rc;
}

kb_err x509svid_check_leaf(X509 *leaf, int purpose, spiffe_id *out_id, const char **why)
{
    spiffe_id id;
    uint32_t fl;
    int n = 0;

    if (out_id)
        memset(out_id, 0, sizeof(*out_id));
    if (leaf == NULL)
        return fail(why, "no leaf certificate", KB_ERR_NULL);
    if (purpose & ~(X509SVID_PURPOSE_CLIENT | X509SVID_PURPOSE_SERVER))
        return fail(why, "unknown purpose", KB_ERR_INVALID);
    KB_GUARD(ext_flags(leaf, &fl, "leaf", why));

    /* 5.2: exactly one URI SAN, a SPIFFE ID with a non-root path (3.1). */
    KB_GUARD(uri_san(leaf, &n, &id, why));
    if (n == 0)
        return fail(why, "no URI SAN", KB_ERR_AUTH);
    if (n > 1)
        return fail(why, "more than one URI SAN", KB_ERR_AUTH);
    if (spiffe_id_is_root(&id))
        return fail(why, "SPIFFE ID has no path (a trust domain ID is not a workload ID)",
                    KB_ERR_AUTH);

    /* 4.1, 5.2: a leaf sets cA false, so a workload can never mint identities. */
    if (fl & EXFLAG_CA)
        return fail(why, "leaf is a CA", KB_ERR_AUTH);

    /* 4.3: key usage MUST be set and critical; digitalSignature MUST, keyCertSign and cRLSign
     * MUST NOT be set on a leaf. */
    if (!(fl & EXFLAG_KUSAGE))
        return fail(why, "key usage missing", KB_ERR_AUTH);
    if (!ext_critical(leaf, NID_key_usage))
        return fail(why, "key usage not critical", KB_ERR_AUTH);
    uint32_t ku = X509_get_key_usage(leaf);
    if (!(ku & KU_DIGITAL_SIGNATURE))
        return fail(why, "leaf lacks digitalSignature", KB_ERR_AUTH);
    if (ku & KU_KEY_CERT_SIGN)
        return fail(why, "leaf has keyCertSign", KB_ERR_AUTH);
    if (ku & KU_CRL_SIGN)
        return fail(why, "leaf has cRLSign", KB_ERR_AUTH);

    /* 4.4: when the leaf restricts its key with EKU, it must allow the role it is used in. The
     * spec asks issuers for both serverAuth and clientAuth; a verifier needs only the one for
     * the peer's side of the connection. */
    if (fl & EXFLAG_XKUSAGE) {
        uint32_t xku = X509_get_extended_key_usage(leaf);
        if ((purpose & X509SVID_PURPOSE_CLIENT) && !(xku & XKU_SSL_CLIENT))
            return fail(why, "EKU lacks clientAuth", KB_ERR_AUTH);
        if ((purpose & X509SVID_PURPOSE_SERVER) && !(xku & XKU_SSL_SERVER))
            return fail(why, "EKU lacks serverAuth", KB_ERR_AUTH);
    }
    if (out_id)
        *out_id = id;
    return KB_OK;
}

kb_err x509svid_check_signing(X509 *ca, const char **why)
{
    uint32_t fl;
    if (ca == NULL)
        return fail(why, "no intermediate certificate", KB_ERR_NULL);
    KB_GUARD(ext_flags(ca, &fl, "intermediate", why));
    /* 3.2, 4.1: a signing certificate is a CA ... */
    if (!(fl & EXFLAG_CA))
        return fail(why, "intermediate is not a CA", KB_ERR_AUTH);
    /* ... and 4.3: it MUST set keyCertSign. */
    if (!(fl & EXFLAG_KUSAGE) || !(X509_get_key_usage(ca) & KU_KEY_CERT_SIGN))
        return fail(why, "intermediate lacks keyCertSign", KB_ERR_AUTH);
    /* 3.2: a signing certificate's SPIFFE ID, if present, MUST NOT have a path. */
    GENERAL_NAMES *names = X509_get_ext_d2i(ca, NID_subject_alt_name, NULL, NULL);
    int bad = 0;
    ERR_clear_error();
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        spiffe_id id;
        if (gn->type != GEN_URI)
            continue;
        const ASN1_IA5STRING *u = gn->d.uniformResourceIdentifier;
        if (spiffe_id_parse((const char *)ASN1_STRING_get0_data(u), (size_t)ASN1_STRING_length(u),
                            &id, NULL) == KB_OK &&
            !spiffe_id_is_root(&id))
            bad = 1;
    }
    GENERAL_NAMES_free(names);
    if (bad)
        return fail(why, "intermediate's SPIFFE ID has a path", KB_ERR_AUTH);
    return KB_OK;
}

static kb_err chain_error(int err, const char **why)
{
    switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return fail(why, "certificate expired", KB_ERR_AUTH);
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return fail(why, "certificate not yet valid", KB_ERR_AUTH);
    default:
        return failf(why, KB_ERR_AUTH, "chain does not verify: %s",
                     X509_verify_cert_error_string(err));
    }
}

kb_err x509svid_verify(const spiffe_bundle_set *bs, X509 *leaf, STACK_OF(X509) * intermediates,
                       int purpose, time_t at, spiffe_id *out_id, const char **why)
{
    kb_err rc;
    spiffe_id id;
    X509_STORE_CTX *ctx = NULL;

    if (out_id)
        memset(out_id, 0, sizeof(*out_id));
    if (bs == NULL)
        return fail(why, "no trust bundles", KB_ERR_NULL);
    KB_GUARD(x509svid_check_leaf(leaf, purpose, &id, why));

    int n = intermediates ? sk_X509_num(intermediates) : 0;
    if (n > X509SVID_CHAIN_MAX)
        return fail(why, "chain has too many certificates", KB_ERR_AUTH);
    for (int i = 0; i < n; i++) {
        X509 *c = sk_X509_value(intermediates, i);
        /* A TLS stack passes the whole peer chain, leaf included. */
        if (c == leaf || X509_cmp(c, leaf) == 0)
            continue;
        KB_GUARD(x509svid_check_signing(c, why));
    }

    /* Only the leaf's own trust domain's roots may vouch for it (Trust Domain and Bundle 6.4). */
    const spiffe_bundle *b = spiffe_bundle_set_get(bs, spiffe_id_trust_domain(&id));
    if (b == NULL || spiffe_bundle_x509_count(b) == 0)
        return fail(why, "trust domain not trusted", KB_ERR_AUTH);

    ctx = X509_STORE_CTX_new();
    if (ctx == NULL)
        return KB_ERR_NOMEM;
    if (X509_STORE_CTX_init(ctx, spiffe_bundle_x509_store(b), leaf, intermediates) != 1) {
        rc = KB_ERR_CRYPTO;
        goto out;
    }
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    /* Every bundle entry is an authority of the trust domain (X509-SVID.md 6.2), self-signed or
     * not: PARTIAL_CHAIN lets a path end at any of them, as other SPIFFE verifiers do. */
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
    X509_VERIFY_PARAM_set_depth(param, X509SVID_CHAIN_MAX);
    /* A fixed time for tests and replays; validity is always checked (there is no flag here that
     * could turn it off: X509_V_FLAG_NO_CHECK_TIME is never set). */
    if (at != 0)
        X509_VERIFY_PARAM_set_time(param, at);
    if (X509_verify_cert(ctx) != 1) {
        rc = chain_error(X509_STORE_CTX_get_error(ctx), why);
        goto out;
    }
    if (out_id)
        *out_id = id;
    rc = KB_OK;
out:
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    return rc;
}

/* ---- loading --------------------------------------------------------------------------------- */

void x509svid_free(x509svid *s)
{
    if (s == NULL)
        return;
    X509_free(s->leaf);
    sk_X509_pop_free(s->inter, X509_free);
    EVP_PKEY_free(s->key);
    free(s);
}

X509 *x509svid_leaf(const x509svid *s)
{
    return s ? s->leaf : NULL;
}

STACK_OF(X509) * x509svid_intermediates(const x509svid *s)
{
    return s ? s->inter : NULL;
}

EVP_PKEY *x509svid_key(const x509svid *s)
{
    return s ? s->key : NULL;
}

const spiffe_id *x509svid_id(const x509svid *s)
{
    return s ? &s->id : NULL;
}

static X509 *der_cert(const unsigned char *der, long len)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, len);
    if (x != NULL && p != der + len) { /* trailing bytes: not one certificate */
        X509_free(x);
        x = NULL;
    }
    ERR_clear_error();
    return x;
}

static EVP_PKEY *der_key(const char *name, const unsigned char *der, long len)
{
    const unsigned char *p = der;
    EVP_PKEY *k = NULL;
    if (strcmp(name, "PRIVATE KEY") == 0) {
        PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, len);
        if (p8 != NULL && p == der + len)
            k = EVP_PKCS82PKEY(p8);
        PKCS8_PRIV_KEY_INFO_free(p8); /* frees the key octets with a clearing free */
    } else {
        /* SEC 1 (RFC 5915) and PKCS#1 (RFC 8017 A.1.2) are the type-specific formats. */
        int type = strcmp(name, "EC PRIVATE KEY") == 0 ? EVP_PKEY_EC : EVP_PKEY_RSA;
        k = d2i_PrivateKey(type, NULL, &p, len);
        if (k != NULL && p != der + len) {
            EVP_PKEY_free(k);
            k = NULL;
        }
    }
    ERR_clear_error();
    return k;
}

static int is_key_block(const char *name)
{
    return strcmp(name, "PRIVATE KEY") == 0 || strcmp(name, "EC PRIVATE KEY") == 0 ||
           strcmp(name, "RSA PRIVATE KEY") == 0;
}

/* Walk the PEM blocks of buf into s. allow_certs: CERTIFICATE blocks are taken (else refused). */
static kb_err pem_walk(const void *buf, size_t len, int allow_certs, x509svid *s, const char **why)
{
    kb_err rc = KB_OK;
    BIO *bio = NULL;

    if (len > X509SVID_PEM_MAX)
        return fail(why, "PEM input is larger than 1 MiB", KB_ERR_TOO_LARGE);
    if (buf == NULL || len == 0)
        return KB_OK;
    bio = BIO_new_mem_buf(buf, (int)len);
    if (bio == NULL)
        return KB_ERR_NOMEM;
    for (;;) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long dlen = 0;
        /* PEM_FLAG_SECURE: the decoded bytes (a private key, perhaps) are cleansed when freed. */
        if (PEM_read_bio_ex(bio, &name, &header, &data, &dlen,
                            PEM_FLAG_SECURE | PEM_FLAG_EAY_COMPATIBLE) != 1) {
            unsigned long e = ERR_peek_last_error();
            ERR_clear_error();
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
                break; /* no more blocks */
            rc = fail(why, "malformed PEM block", KB_ERR_INVALID);
            goto out;
        }
        if (strcmp(name, "CERTIFICATE") == 0 && header[0] == '\0') {
            X509 *x = der_cert(data, dlen);
            if (!allow_certs) {
                rc = fail(why, "key input has a certificate", KB_ERR_INVALID);
            } else if (x == NULL) {
                rc = fail(why, "PEM certificate is not valid DER", KB_ERR_INVALID);
            } else if (s->leaf == NULL) {
                s->leaf = x;
                x = NULL;
            } else if (sk_X509_num(s->inter) + 1 >= X509SVID_CHAIN_MAX) {
                rc = fail(why, "chain has too many certificates", KB_ERR_TOO_LARGE);
            } else if (sk_X509_push(s->inter, x) <= 0) {
                rc = KB_ERR_NOMEM;
            } else {
                x = NULL;
            }
            X509_free(x);
        } else if (is_key_block(name) && header[0] == '\0') {
            EVP_PKEY *k = der_key(name, data, dlen);
            if (s->key != NULL)
                rc = fail(why, "more than one private key", KB_ERR_INVALID);
            else if (k == NULL)
                rc = fail(why, "PEM private key is not valid", KB_ERR_INVALID);
            else
                s->key = k, k = NULL;
            EVP_PKEY_free(k);
        } else if (strcmp(name, "ENCRYPTED PRIVATE KEY") == 0 || is_key_block(name)) {
            /* PKCS#8 encrypted, or a legacy key with Proc-Type/DEK-Info headers. */
            rc = fail(why, "encrypted private keys are not supported", KB_ERR_INVALID);
        } else {
            rc = fail(why, "unexpected PEM block type", KB_ERR_INVALID);
        }
        OPENSSL_secure_free(name);
        OPENSSL_secure_free(header);
        OPENSSL_secure_clear_free(data, dlen > 0 ? (size_t)dlen : 0);
        if (rc != KB_OK)
            goto out;
    }
out:
    BIO_free(bio);
    return rc;
}

kb_err x509svid_parse_pem(const void *certs, size_t certs_len, const void *key_pem, size_t key_len,
                          x509svid **out, const char **why)
{
    kb_err rc;
    KB_ENSURE_REF(out);
    *out = NULL;
    x509svid *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return KB_ERR_NOMEM;
    s->inter = sk_X509_new_null();
    if (s->inter == NULL) {
        rc = KB_ERR_NOMEM;
        goto out;
    }
    KB_GUARD_OUT(rc, pem_walk(certs, certs_len, 1, s, why));
    if (s->leaf == NULL) {
        rc = fail(why, "no PEM certificate found", KB_ERR_INVALID);
        goto out;
    }
    if (key_pem != NULL) {
        if (s->key != NULL) {
            rc = fail(why, "more than one private key", KB_ERR_INVALID);
            goto out;
        }
        KB_GUARD_OUT(rc, pem_walk(key_pem, key_len, 0, s, why));
        if (s->key == NULL) {
            rc = fail(why, "no PEM private key found", KB_ERR_INVALID);
            goto out;
        }
    }
    KB_GUARD_OUT(rc, x509svid_check_leaf(s->leaf, X509SVID_PURPOSE_NONE, &s->id, why));
    for (int i = 0; i < sk_X509_num(s->inter); i++)
        KB_GUARD_OUT(rc, x509svid_check_signing(sk_X509_value(s->inter, i), why));
    if (s->key != NULL && EVP_PKEY_eq(X509_get0_pubkey(s->leaf), s->key) != 1) {
        ERR_clear_error();
        rc = fail(why, "private key does not match the leaf", KB_ERR_AUTH);
        goto out;
    }
    *out = s;
    s = NULL;
    rc = KB_OK;
out:
    x509svid_free(s);
    return rc;
}

/* keybridge-ca's dir: targets switch a whole set at once: DIR/current -> .gen-N, and
 * DIR/svid.pem -> current/svid.pem (docs/keybridge-ca.md). Reading the two files by path could
 * straddle a switch and pair an old certificate with a new key, so when both files are such
 * links in one directory, resolve `current` once and read both from that generation. Returns 1
 * and fills the two paths if it applies, else 0 (read the paths as given). */
static int pin_generation(const char *cert_path, const char *key_path, char *cert_out,
                          char *key_out, size_t len)
{
    char dir[4096], gen[256], link[4200], want[512];
    const char *cb, *kb;
    size_t dl;
    ssize_t n;

    if (key_path == NULL || (cb = strrchr(cert_path, '/')) == NULL ||
        (kb = strrchr(key_path, '/')) == NULL)
        return 0;
    dl = (size_t)(cb - cert_path);
    if (dl >= sizeof(dir) || (size_t)(kb - key_path) != dl || memcmp(cert_path, key_path, dl) != 0)
        return 0;
    memcpy(dir, cert_path, dl);
    dir[dl] = 0;
    cb++, kb++;
    for (int i = 0; i < 2; i++) {
        const char *path = i == 0 ? cert_path : key_path, *base = i == 0 ? cb : kb;
        n = readlink(path, link, sizeof(link) - 1);
        if (n <= 0)
            return 0;
        link[n] = 0;
        snprintf(want, sizeof(want), "current/%s", base);
        if (strcmp(link, want) != 0)
            return 0;
    }
    snprintf(link, sizeof(link), "%s/current", dir);
    n = readlink(link, gen, sizeof(gen) - 1);
    if (n <= 0)
        return 0;
    gen[n] = 0;
    if (strchr(gen, '/') != NULL || strcmp(gen, "..") == 0 || strcmp(gen, ".") == 0)
        return 0; /* a generation is a sibling directory name, nothing else */
    if ((size_t)snprintf(cert_out, len, "%s/%s/%s", dir, gen, cb) >= len ||
        (size_t)snprintf(key_out, len, "%s/%s/%s", dir, gen, kb) >= len)
        return 0;
    return 1;
}

kb_err x509svid_load(const char *cert_path, const char *key_path, x509svid **out, const char **why)
{
    kb_err rc;
    kb_dbuf certs;
    kb_secret *key = NULL;
    char cert_pinned[4096], key_pinned[4096];
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE_REF(cert_path);
    if (pin_generation(cert_path, key_path, cert_pinned, key_pinned, sizeof(cert_pinned))) {
        cert_path = cert_pinned;
        key_path = key_pinned;
    }
    kb_dbuf_init(&certs, X509SVID_PEM_MAX);
    rc = kb_file_read(cert_path, X509SVID_PEM_MAX, &certs);
    if (rc != KB_OK) {
        fail(why,
             rc == KB_ERR_TOO_LARGE ? "PEM input is larger than 1 MiB"
                                    : "certificate file cannot be read",
             rc);
        goto out;
    }
    if (key_path != NULL) {
        rc = kb_file_read_secret(key_path, X509SVID_PEM_MAX, &key);
        if (rc != KB_OK) {
            fail(why,
                 rc == KB_ERR_CONFIG ? "key file is group- or world-accessible"
                                     : "key file cannot be read",
                 rc);
            goto out;
        }
    }
    rc = x509svid_parse_pem(certs.p, certs.len, key ? kb_secret_cdata(key) : NULL,
                            key ? kb_secret_len(key) : 0, out, why);
out:
    kb_secret_free(key);
    kb_dbuf_free(&certs);
    return rc;
}
