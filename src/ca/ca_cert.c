/* ca_cert.c - build and sign CA and leaf certificates (see ca_cert.h).
 *
 * References: RFC 5280 4.1 (Certificate, TBSCertificate), 4.2.1.x (extensions); RFC 5758 3.2
 * (ecdsa-with-SHA256 has absent parameters); RFC 2986 4 (CertificationRequest); SPIFFE
 * X509-SVID.md 4 (leaf and signing certificate rules).
 */
#include "ca_cert.h"

#include <pthread.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "lib/buf.h"
#include "lib/x509svid.h"

/* ecdsa-with-SHA256 AlgorithmIdentifier, DER: SEQUENCE { OID 1.2.840.10045.4.3.2 } */
static const uint8_t ALG_ECDSA_SHA256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86,
                                           0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
#define DER_MAX ((size_t)64 * 1024)

static kb_err der_hdr(kb_dbuf *b, uint8_t tag, size_t len)
{
    uint8_t h[6];
    size_t n = 0;

    h[n++] = tag;
    if (len < 0x80) {
        h[n++] = (uint8_t)len;
    } else if (len < 0x100) {
        h[n++] = 0x81;
        h[n++] = (uint8_t)len;
    } else if (len < 0x10000) {
        h[n++] = 0x82;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else if (len < 0x1000000) {
        h[n++] = 0x83;
        h[n++] = (uint8_t)(len >> 16);
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        return KB_ERR_TOO_LARGE;
    }
    return kb_dbuf_add(b, h, n);
}

/* SHA-256 fetched once: EVP_sha256() in EVP_Digest is an implicit fetch, a provider store
 * look-up under a lock on every call (OpenSSL 3, crypto(7) "Performance"). */
static pthread_once_t g_md_once = PTHREAD_ONCE_INIT;
static EVP_MD *g_sha256, *g_sha1;

static void md_init(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    g_sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
}

static const EVP_MD *sha256(void)
{
    pthread_once(&g_md_once, md_init);
    return g_sha256 != NULL ? g_sha256 : EVP_sha256();
}

/* SHA-1 for key identifiers (RFC 5280 4.2.1.2), fetched with SHA-256. */
static const EVP_MD *sha1(void)
{
    pthread_once(&g_md_once, md_init);
    return g_sha1 != NULL ? g_sha1 : EVP_sha1();
}

/* SEQUENCE { tbs, ecdsa-with-SHA256, BIT STRING (0 unused bits) signature } signed by s. */
static kb_err sign_tbs(kb_ec_signer *s, const uint8_t *tbs, size_t tbs_len, kb_dbuf *out)
{
    uint8_t md[32], sig[KB_EC_SIG_DER_MAX];
    size_t sig_len = 0, body;
    unsigned int mdl = 0;

    KB_ENSURE(EVP_Digest(tbs, tbs_len, md, &mdl, sha256(), NULL) == 1 && mdl == 32, KB_ERR_CRYPTO);
    KB_GUARD(kb_ec_signer_sign(s, md, sig, &sig_len));
    body = tbs_len + sizeof(ALG_ECDSA_SHA256) + 2 + (sig_len + 1 >= 0x80 ? 1 : 0) + 1 + sig_len;
    KB_GUARD(der_hdr(out, 0x30, body));
    KB_GUARD(kb_dbuf_add(out, tbs, tbs_len));
    KB_GUARD(kb_dbuf_add(out, ALG_ECDSA_SHA256, sizeof(ALG_ECDSA_SHA256)));
    KB_GUARD(der_hdr(out, 0x03, sig_len + 1));
    KB_GUARD(kb_dbuf_addc(out, 0));
    return kb_dbuf_add(out, sig, sig_len);
}

/* Set the TBS signature algorithm, encode the TBS, sign, assemble the Certificate DER in b. */
static kb_err cert_sign_der(X509 *x, kb_ec_signer *s, kb_dbuf *b)
{
    X509_ALGOR *alg = (X509_ALGOR *)X509_get0_tbs_sigalg(x); /* the TBS field we fill in */
    unsigned char *tbs = NULL;
    kb_err rc = KB_OK;
    int n;

    KB_ENSURE(X509_ALGOR_set0(alg, OBJ_nid2obj(NID_ecdsa_with_SHA256), V_ASN1_UNDEF, NULL) == 1,
              KB_ERR_CRYPTO);
    n = i2d_re_X509_tbs(x, &tbs);
    KB_ENSURE_OUT(rc, n > 0, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, sign_tbs(s, tbs, (size_t)n, b));
out:
    OPENSSL_free(tbs);
    return rc;
}

/* The same, parsed back into an X509. */
static kb_err cert_sign(X509 *x, kb_ec_signer *s, X509 **out)
{
    const unsigned char *p;
    kb_dbuf b;
    kb_err rc = KB_OK;

    kb_dbuf_init(&b, DER_MAX);
    KB_GUARD_OUT(rc, cert_sign_der(x, s, &b));
    p = b.p;
    *out = d2i_X509(NULL, &p, (long)b.len);
    KB_ENSURE_OUT(rc, *out != NULL && p == b.p + b.len, KB_ERR_CRYPTO);
out:
    kb_dbuf_free(&b);
    return rc;
}

/* subjectPublicKeyInfo of x from pub. For EC keys on P-256/P-384 (every leaf key we make and
 * every EC CSR we accept) the two fields are set directly (RFC 5480 2.1.1: id-ecPublicKey with
 * the namedCurve OID, then the point as found in the key): X509_set_pubkey would run the key
 * through an OpenSSL 3 encoder and a decoder (provider look-ups), ~35 % of an issuance. The
 * result is the same DER (tested); other keys take X509_set_pubkey. */
/* subjectPublicKeyInfo from an uncompressed P-256 point (a leaf key made by ca_leafkey). */
static kb_err set_point(X509 *x, const uint8_t *pt, size_t n, int nid)
{
    unsigned char *enc = OPENSSL_memdup(pt, n);

    KB_ENSURE(enc != NULL, KB_ERR_NOMEM);
    if (X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), OBJ_nid2obj(NID_X9_62_id_ecPublicKey),
                               V_ASN1_OBJECT, OBJ_nid2obj(nid), enc, (int)n) != 1) {
        OPENSSL_free(enc);
        return KB_ERR_CRYPTO;
    }
    return KB_OK;
}

static kb_err set_pubkey(X509 *x, EVP_PKEY *pub)
{
    char g[32] = "";
    uint8_t pt[1 + 2 * 48];
    size_t n = 0;
    int nid;

    if (!EVP_PKEY_is_a(pub, "EC") ||
        EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, g, sizeof(g), NULL) != 1 ||
        (nid = OBJ_sn2nid(g)) == NID_undef ||
        (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1) ||
        EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &n) != 1 ||
        n == 0)
        return X509_set_pubkey(x, pub) == 1 ? KB_OK : KB_ERR_CRYPTO;
    return set_point(x, pt, n, nid);
}

static kb_err add_ext(X509 *x, STACK_OF(X509_EXTENSION) * *sk, int nid, void *val, int crit)
{
    X509_EXTENSION *e;

    if (x != NULL)
        return X509_add1_ext_i2d(x, nid, val, crit, X509V3_ADD_DEFAULT) == 1 ? KB_OK
                                                                             : KB_ERR_CRYPTO;
    e = X509V3_EXT_i2d(nid, crit, val);
    KB_ENSURE(e != NULL, KB_ERR_CRYPTO);
    if (X509v3_add_ext(sk, e, -1) == NULL) {
        X509_EXTENSION_free(e);
        return KB_ERR_CRYPTO;
    }
    X509_EXTENSION_free(e);
    return KB_OK;
}

static kb_err ext_basic(X509 *x, STACK_OF(X509_EXTENSION) * *sk, int ca)
{
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    kb_err rc;

    KB_ENSURE(bc != NULL, KB_ERR_NOMEM);
    bc->ca = ca ? 0xff : 0;
    rc = add_ext(x, sk, NID_basic_constraints, bc, 1);
    BASIC_CONSTRAINTS_free(bc);
    return rc;
}

/* Key usage bits (RFC 5280 4.2.1.3): 0 digitalSignature, 5 keyCertSign, 6 cRLSign. */
static kb_err ext_key_usage(X509 *x, STACK_OF(X509_EXTENSION) * *sk, int ca)
{
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    kb_err rc = KB_ERR_CRYPTO;

    KB_ENSURE(ku != NULL, KB_ERR_NOMEM);
    if (ca ? (ASN1_BIT_STRING_set_bit(ku, 5, 1) == 1 && ASN1_BIT_STRING_set_bit(ku, 6, 1) == 1)
           : ASN1_BIT_STRING_set_bit(ku, 0, 1) == 1)
        rc = add_ext(x, sk, NID_key_usage, ku, 1);
    ASN1_BIT_STRING_free(ku);
    return rc;
}

static GENERAL_NAME *uri_name(const char *uri)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();

    if (gn == NULL || ia5 == NULL || ASN1_STRING_set(ia5, uri, (int)strlen(uri)) != 1) {
        GENERAL_NAME_free(gn);
        ASN1_IA5STRING_free(ia5);
        return NULL;
    }
    GENERAL_NAME_set0_value(gn, GEN_URI, ia5);
    return gn;
}

static kb_err ext_san(X509 *x, STACK_OF(X509_EXTENSION) * *sk, const char *uri)
{
    GENERAL_NAMES *gns = GENERAL_NAMES_new();
    GENERAL_NAME *gn = uri_name(uri);
    kb_err rc = KB_ERR_NOMEM;

    if (gns != NULL && gn != NULL && sk_GENERAL_NAME_push(gns, gn) > 0) {
        gn = NULL;
        rc = add_ext(x, sk, NID_subject_alt_name, gns, 0);
    }
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(gns);
    return rc;
}

/* A leaf's SAN: its one URI SAN first, then any DNS and IP names (X509-SVID.md 2). */
static kb_err ext_leaf_san(X509 *x, const char *uri, const ca_sans *sans)
{
    GENERAL_NAMES *gns = GENERAL_NAMES_new();
    GENERAL_NAME *gn = uri_name(uri);
    kb_err rc = KB_ERR_NOMEM;

    if (gns != NULL && gn != NULL && sk_GENERAL_NAME_push(gns, gn) > 0) {
        gn = NULL;
        rc = ca_sans_append(sans, gns);
        if (rc == KB_OK)
            rc = add_ext(x, NULL, NID_subject_alt_name, gns, 0);
    }
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(gns);
    return rc;
}

static kb_err ext_eku(X509 *x)
{
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    kb_err rc = KB_ERR_NOMEM;

    if (eku != NULL && sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) > 0 &&
        sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) > 0)
        rc = add_ext(x, NULL, NID_ext_key_usage, eku, 0);
    sk_ASN1_OBJECT_free(eku); /* the objects are OpenSSL's static table entries */
    return rc;
}

/* SKI = SHA-1 of the subjectPublicKey BIT STRING (RFC 5280 4.2.1.2 method 1). */
static kb_err ext_ski(X509 *x, EVP_PKEY *pub, ASN1_OCTET_STRING **keep)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdl = 0;
    ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();
    kb_err rc = KB_ERR_CRYPTO;

    (void)pub; /* already set on x */
    KB_ENSURE(ski != NULL, KB_ERR_NOMEM);
    if (X509_pubkey_digest(x, EVP_sha1(), md, &mdl) == 1 &&
        ASN1_OCTET_STRING_set(ski, md, (int)mdl) == 1)
        rc = add_ext(x, NULL, NID_subject_key_identifier, ski, 0);
    if (rc == KB_OK && keep != NULL)
        *keep = ski;
    else
        ASN1_OCTET_STRING_free(ski);
    return rc;
}

/* A leaf's SKI (RFC 5280 4.2.1.2: SHOULD; SPIRE sets it): SHA-1 of the subjectPublicKey BIT
 * STRING's bytes, the same value as ext_ski, hashed with the once-fetched digest (the issuance
 * hot path). */
static kb_err ext_leaf_ski(X509 *x)
{
    ASN1_BIT_STRING *bits = X509_get0_pubkey_bitstr(x);
    unsigned char md[20];
    unsigned int mdl = 0;
    ASN1_OCTET_STRING *ski = NULL;
    kb_err rc = KB_ERR_CRYPTO;

    KB_ENSURE(bits != NULL, KB_ERR_CRYPTO);
    KB_ENSURE(EVP_Digest(ASN1_STRING_get0_data(bits), (size_t)ASN1_STRING_length(bits), md, &mdl,
                         sha1(), NULL) == 1 &&
                  mdl == sizeof(md),
              KB_ERR_CRYPTO);
    ski = ASN1_OCTET_STRING_new();
    KB_ENSURE(ski != NULL, KB_ERR_NOMEM);
    if (ASN1_OCTET_STRING_set(ski, md, (int)mdl) == 1)
        rc = add_ext(x, NULL, NID_subject_key_identifier, ski, 0);
    ASN1_OCTET_STRING_free(ski);
    return rc;
}

static kb_err ext_aki(X509 *x, const ASN1_OCTET_STRING *keyid)
{
    AUTHORITY_KEYID *ak;
    kb_err rc;

    if (keyid == NULL)
        return KB_OK; /* an issuer without SKI: AKI is optional for us (RFC 5280 4.2.1.1) */
    ak = AUTHORITY_KEYID_new();
    KB_ENSURE(ak != NULL, KB_ERR_NOMEM);
    ak->keyid = ASN1_OCTET_STRING_dup(keyid);
    rc = ak->keyid ? add_ext(x, NULL, NID_authority_key_identifier, ak, 0) : KB_ERR_NOMEM;
    AUTHORITY_KEYID_free(ak);
    return rc;
}

static kb_err ext_name_constraints(STACK_OF(X509_EXTENSION) * *sk, const char *td)
{
    NAME_CONSTRAINTS *nc = NAME_CONSTRAINTS_new();
    GENERAL_SUBTREE *st = GENERAL_SUBTREE_new();
    kb_err rc = KB_ERR_NOMEM;

    if (nc == NULL || st == NULL)
        goto out;
    nc->permittedSubtrees = sk_GENERAL_SUBTREE_new_null();
    GENERAL_NAME_free(st->base);
    st->base = uri_name(td); /* host part of spiffe://td: only that trust domain */
    if (nc->permittedSubtrees == NULL || st->base == NULL ||
        sk_GENERAL_SUBTREE_push(nc->permittedSubtrees, st) <= 0)
        goto out;
    st = NULL;
    rc = add_ext(NULL, sk, NID_name_constraints, nc, 1);
out:
    GENERAL_SUBTREE_free(st);
    NAME_CONSTRAINTS_free(nc);
    return rc;
}

static kb_err random_serial(X509 *x)
{
    uint8_t r[CA_SERIAL_BYTES];
    BIGNUM *bn = NULL;
    ASN1_INTEGER *ai = NULL;
    kb_err rc = KB_ERR_CRYPTO;

    KB_ENSURE(RAND_bytes(r, sizeof(r)) == 1, KB_ERR_CRYPTO);
    r[0] &= 0x7f; /* positive */
    r[0] |= 0x40; /* and full length, so the serial always carries >= 64 random bits */
    bn = BN_bin2bn(r, sizeof(r), NULL);
    if (bn != NULL && (ai = BN_to_ASN1_INTEGER(bn, NULL)) != NULL &&
        X509_set_serialNumber(x, ai) == 1)
        rc = KB_OK;
    ASN1_INTEGER_free(ai);
    BN_free(bn);
    return rc;
}

/* O=keybridge, OU=<trust domain>, CN=keybridge CA <gen>. An OU holds at most 64 characters
 * (RFC 5280 A.1 ub-organizational-unit-name; OpenSSL refuses longer), a trust domain up to 255
 * (SPIFFE-ID.md 2.1): a longer one is left out of the subject. The URI SAN always names it. */
#define CA_OU_MAX 64
static kb_err ca_name(X509_NAME *n, const char *td, int64_t gen)
{
    char cn[64];

    snprintf(cn, sizeof(cn), "keybridge CA %lld", (long long)gen);
    KB_ENSURE(X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"keybridge",
                                         -1, -1, 0) == 1,
              KB_ERR_INVALID);
    if (strlen(td) <= CA_OU_MAX)
        KB_ENSURE(X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_UTF8, (const unsigned char *)td, -1,
                                             -1, 0) == 1,
                  KB_ERR_INVALID);
    KB_ENSURE(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                         0) == 1,
              KB_ERR_INVALID);
    return KB_OK;
}

static kb_err td_uri(const char *td, char *uri, size_t len)
{
    const char *why;
    int n;

    KB_ENSURE_REF(td);
    KB_GUARD(spiffe_td_validate(td, strlen(td), &why));
    n = snprintf(uri, len, "spiffe://%s", td);
    KB_ENSURE(n > 0 && (size_t)n < len, KB_ERR_TOO_LARGE);
    return KB_OK;
}

kb_err ca_cert_root(kb_ec_signer *s, const char *td, int64_t gen, int64_t ttl, time_t now,
                    X509 **out)
{
    char uri[SPIFFE_TD_MAX + 16];
    EVP_PKEY *pub = kb_ec_signer_pubkey(s);
    ASN1_OCTET_STRING *ski = NULL;
    X509 *x = NULL;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(out);
    KB_ENSURE_REF(pub);
    *out = NULL;
    KB_GUARD(td_uri(td, uri, sizeof(uri)));
    KB_ENSURE(ttl >= 3600 && ttl <= (int64_t)20 * 365 * 24 * 3600, KB_ERR_INVALID);
    x = X509_new();
    KB_ENSURE(x != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, X509_set_version(x, X509_VERSION_3) == 1, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, random_serial(x));
    KB_GUARD_OUT(rc, ca_name(X509_get_subject_name(x), td, gen));
    KB_ENSURE_OUT(rc, X509_set_issuer_name(x, X509_get_subject_name(x)) == 1, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc,
                  X509_time_adj_ex(X509_getm_notBefore(x), 0, -CA_BACKDATE_SECS, &now) != NULL &&
                      X509_time_adj_ex(X509_getm_notAfter(x), 0, (long)ttl, &now) != NULL,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, X509_set_pubkey(x, pub) == 1, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, ext_basic(x, NULL, 1));
    KB_GUARD_OUT(rc, ext_key_usage(x, NULL, 1));
    KB_GUARD_OUT(rc, ext_san(x, NULL, uri));
    KB_GUARD_OUT(rc, ext_ski(x, pub, &ski));
    KB_GUARD_OUT(rc, ext_aki(x, ski));
    KB_GUARD_OUT(rc, cert_sign(x, s, out));
out:
    ASN1_OCTET_STRING_free(ski);
    X509_free(x);
    return rc;
}

kb_err ca_cert_csr(kb_ec_signer *s, const char *td, int64_t gen, X509_REQ **out)
{
    char uri[SPIFFE_TD_MAX + 16];
    EVP_PKEY *pub = kb_ec_signer_pubkey(s);
    STACK_OF(X509_EXTENSION) *exts = NULL;
    X509_REQ *req = NULL;
    unsigned char *info = NULL;
    const unsigned char *p;
    kb_dbuf b;
    kb_err rc = KB_OK;
    int n;

    KB_ENSURE_REF(out);
    KB_ENSURE_REF(pub);
    *out = NULL;
    KB_GUARD(td_uri(td, uri, sizeof(uri)));
    kb_dbuf_init(&b, DER_MAX);
    req = X509_REQ_new();
    KB_ENSURE_OUT(rc, req != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, X509_REQ_set_version(req, X509_REQ_VERSION_1) == 1, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, ca_name(X509_REQ_get_subject_name(req), td, gen));
    KB_ENSURE_OUT(rc, X509_REQ_set_pubkey(req, pub) == 1, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, ext_basic(NULL, &exts, 1));
    KB_GUARD_OUT(rc, ext_key_usage(NULL, &exts, 1));
    KB_GUARD_OUT(rc, ext_san(NULL, &exts, uri));
    KB_GUARD_OUT(rc, ext_name_constraints(&exts, td));
    KB_ENSURE_OUT(rc, X509_REQ_add_extensions(req, exts) == 1, KB_ERR_CRYPTO);
    n = i2d_re_X509_REQ_tbs(req, &info);
    KB_ENSURE_OUT(rc, n > 0, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, sign_tbs(s, info, (size_t)n, &b));
    p = b.p;
    *out = d2i_X509_REQ(NULL, &p, (long)b.len);
    KB_ENSURE_OUT(rc, *out != NULL, KB_ERR_CRYPTO);
out:
    OPENSSL_free(info);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    kb_dbuf_free(&b);
    return rc;
}

time_t ca_cert_not_after(X509 *x)
{
    struct tm tm;

    if (x == NULL || ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
        return 0;
    return timegm(&tm);
}

/* The unsigned leaf: every field but the signature. */
static kb_err leaf_build(const ca_issuer *iss, EVP_PKEY *pub, const uint8_t *p256_point,
                         const spiffe_id *id, const ca_sans *sans, int64_t ttl, time_t now,
                         X509 **out, time_t *not_after)
{
    X509_NAME *subj = NULL;
    X509 *x = NULL;
    time_t ca_end, end;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(iss);
    KB_ENSURE_REF(iss->cert);
    KB_ENSURE_REF(iss->signer);
    KB_ENSURE((pub != NULL) != (p256_point != NULL), KB_ERR_NULL); /* exactly one key */
    KB_ENSURE_REF(id);
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(!spiffe_id_is_root(id), KB_ERR_INVALID); /* X509-SVID.md 3.1 */
    KB_ENSURE(ttl >= CA_TTL_MIN && ttl <= CA_TTL_MAX, KB_ERR_INVALID);
    ca_end = ca_cert_not_after(iss->cert);
    KB_ENSURE(ca_end > now, KB_ERR_INVALID);
    end = now + (time_t)ttl;
    if (end > ca_end)
        end = ca_end; /* no SVID outlives the CA that signed it */
    x = X509_new();
    subj = X509_NAME_new();
    KB_ENSURE_OUT(rc, x != NULL && subj != NULL, KB_ERR_NOMEM);
    KB_ENSURE_OUT(rc, X509_set_version(x, X509_VERSION_3) == 1, KB_ERR_CRYPTO);
    KB_GUARD_OUT(rc, random_serial(x));
    KB_ENSURE_OUT(rc,
                  X509_NAME_add_entry_by_txt(subj, "O", MBSTRING_UTF8,
                                             (const unsigned char *)"keybridge", -1, -1, 0) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, X509_set_subject_name(x, subj) == 1, KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc, X509_set_issuer_name(x, X509_get_subject_name(iss->cert)) == 1,
                  KB_ERR_CRYPTO);
    KB_ENSURE_OUT(rc,
                  X509_time_adj_ex(X509_getm_notBefore(x), 0, -CA_BACKDATE_SECS, &now) != NULL &&
                      X509_time_adj_ex(X509_getm_notAfter(x), 0, (long)(end - now), &now) != NULL,
                  KB_ERR_CRYPTO);
    if (pub != NULL)
        KB_GUARD_OUT(rc, set_pubkey(x, pub));
    else
        KB_GUARD_OUT(rc, set_point(x, p256_point, 65, NID_X9_62_prime256v1));
    KB_GUARD_OUT(rc, ext_basic(x, NULL, 0));
    KB_GUARD_OUT(rc, ext_key_usage(x, NULL, 0));
    KB_GUARD_OUT(rc, ext_eku(x));
    KB_GUARD_OUT(rc, ext_leaf_san(x, spiffe_id_str(id), sans));
    KB_GUARD_OUT(rc, ext_leaf_ski(x));
    KB_GUARD_OUT(rc, ext_aki(x, X509_get0_subject_key_id(iss->cert)));
    if (not_after != NULL)
        *not_after = end;
    *out = x;
    x = NULL;
out:
    X509_NAME_free(subj);
    X509_free(x);
    return rc;
}

kb_err ca_cert_leaf(const ca_issuer *iss, EVP_PKEY *pub, const spiffe_id *id, int64_t ttl,
                    time_t now, X509 **out)
{
    X509 *x = NULL;
    kb_err rc;

    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE_REF(pub);
    KB_GUARD(leaf_build(iss, pub, NULL, id, NULL, ttl, now, &x, NULL));
    rc = cert_sign(x, iss->signer, out);
    X509_free(x);
    return rc;
}

kb_err ca_cert_leaf_der(const ca_issuer *iss, EVP_PKEY *pub, const uint8_t *p256_point,
                        const spiffe_id *id, const ca_sans *sans, int64_t ttl, time_t now,
                        kb_dbuf *der, char serial[CA_SERIAL_HEX_LEN], time_t *not_after)
{
    X509 *x = NULL;
    kb_err rc;

    KB_ENSURE_REF(der);
    KB_ENSURE_REF(serial);
    KB_ENSURE_REF(not_after);
    KB_GUARD(leaf_build(iss, pub, p256_point, id, sans, ttl, now, &x, not_after));
    rc = cert_sign_der(x, iss->signer, der);
    if (rc == KB_OK)
        ca_cert_serial_hex(x, serial, CA_SERIAL_HEX_LEN);
    X509_free(x);
    return rc;
}

kb_err ca_cert_check_ca(X509 *cert, EVP_PKEY *pub, const char *td, const char **why)
{
    char uri[SPIFFE_TD_MAX + 16];
    GENERAL_NAMES *gns = NULL;
    EVP_PKEY *cp;
    int ok = 0;

    *why = "not a usable CA certificate";
    KB_ENSURE_REF(cert);
    KB_GUARD(td_uri(td, uri, sizeof(uri)));
    KB_GUARD(x509svid_check_signing(cert, why));
    cp = X509_get0_pubkey(cert);
    if (cp == NULL || pub == NULL || EVP_PKEY_eq(cp, pub) != 1) {
        *why = "certificate does not carry the CA's public key";
        return KB_ERR_AUTH;
    }
    gns = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gns != NULL && i < sk_GENERAL_NAME_num(gns); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gns, i);
        if (g->type == GEN_URI &&
            (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier) == strlen(uri) &&
            memcmp(ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), uri, strlen(uri)) == 0)
            ok = 1;
    }
    GENERAL_NAMES_free(gns);
    if (!ok) {
        *why = "CA certificate has no URI SAN for the trust domain";
        return KB_ERR_AUTH;
    }
    *why = NULL;
    return KB_OK;
}

void ca_cert_serial_hex(X509 *x, char *out, size_t out_len)
{
    const ASN1_INTEGER *ai = X509_get0_serialNumber(x);
    const unsigned char *d = ASN1_STRING_get0_data(ai);
    size_t n = (size_t)ASN1_STRING_length(ai);

    if (out_len == 0)
        return;
    out[0] = '\0';
    if (n == 0 || 2 * n + 1 > out_len)
        return;
    kb_hex(d, n, out);
}
