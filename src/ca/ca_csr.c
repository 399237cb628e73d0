/* ca_csr.c - CSR checks (see ca_csr.h). */
#include "ca_csr.h"

#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lib/buf.h"

static kb_err check_key(EVP_PKEY *k, const char **why)
{
    char group[32] = "";
    size_t gl = 0;
    EVP_PKEY_CTX *c;
    int ok;

    switch (EVP_PKEY_get_base_id(k)) {
    case EVP_PKEY_EC:
        if (EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof(group), &gl) != 1 ||
            (strcmp(group, "prime256v1") != 0 && strcmp(group, "secp384r1") != 0)) {
            *why = "weak or unsupported key: EC keys must be on P-256 or P-384";
            return KB_ERR_DENIED;
        }
        /* On the curve (and not infinity). P-256 and P-384 have cofactor 1, so every such point
         * is in the prime-order group: the full check's n*Q = O multiplication (SP 800-56A
         * 5.6.2.3.3 step 4) adds nothing here and cost ~7 % of a renewal. */
        c = EVP_PKEY_CTX_new(k, NULL);
        ok = c != NULL && EVP_PKEY_public_check_quick(c) == 1;
        EVP_PKEY_CTX_free(c);
        if (!ok) {
            *why = "EC public key is not a valid point on its curve";
            return KB_ERR_INVALID;
        }
        return KB_OK;
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(k) < CA_RSA_MIN_BITS) {
            *why = "weak key: RSA keys must have at least 2048 bits";
            return KB_ERR_DENIED;
        }
        return KB_OK;
    default:
        *why = "unsupported key type: use EC P-256/P-384 or RSA >= 2048";
        return KB_ERR_DENIED;
    }
}

/* Every URI SAN requested in exts (may be NULL) must be expect. */
static kb_err check_exts(STACK_OF(X509_EXTENSION) * exts, const spiffe_id *expect, const char **why)
{
    GENERAL_NAMES *gns = NULL;
    kb_err rc = KB_OK;
    int idx;

    if (exts == NULL)
        return KB_OK;
    idx = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1);
    if (idx >= 0) {
        gns = X509V3_EXT_d2i(X509v3_get_ext(exts, idx));
        if (gns == NULL) {
            *why = "CSR subjectAltName extension is malformed";
            rc = KB_ERR_INVALID;
        }
        for (int i = 0; rc == KB_OK && i < sk_GENERAL_NAME_num(gns); i++) {
            GENERAL_NAME *g = sk_GENERAL_NAME_value(gns, i);
            const unsigned char *d;
            size_t n;
            if (g->type != GEN_URI)
                continue;
            d = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
            n = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
            if (expect != NULL &&
                (n != spiffe_id_len(expect) || memcmp(d, spiffe_id_str(expect), n) != 0)) {
                *why = "CSR asks for another SPIFFE ID than the caller's";
                rc = KB_ERR_DENIED;
            }
        }
        GENERAL_NAMES_free(gns);
    }
    return rc;
}

static kb_err check_sans(X509_REQ *req, const spiffe_id *expect, const char **why)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    kb_err rc = check_exts(exts, expect, why);

    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return rc;
}

/* ---- fast path: EC CSRs without OpenSSL 3's key decoder ------------------------------------ *
 *
 * d2i_X509_REQ decodes the public key eagerly through an OSSL_DECODER chain that OpenSSL 3.0
 * builds anew for every call (and the curve from its name): ~30 % of a renewal over the API.
 * The CSRs workloads send are EC P-256/P-384 signed with ECDSA; for those this walks the DER
 * (RFC 2986 4: CertificationRequest, strict DER framing: definite minimal lengths, nothing
 * trailing at any level), makes the key from a per-curve template (EVP_PKEY_dup +
 * the encoded point, which OpenSSL checks is on the curve), verifies the self-signature over the
 * exact CertificationRequestInfo bytes, and reads SANs from the extension request attribute
 * (PKCS#9 extensionRequest, RFC 2985 5.4.2). The subject, which the CA ignores, is still parsed.
 * Anything else - another key or signature algorithm, parameters where none belong, any framing
 * surprise - is left to the OpenSSL path below, which has the last word (FAST_PASS). */
#define FAST_PASS KB_ERR__COUNT /* not an error: "not mine, ask OpenSSL" */

static const uint8_t OID_EC_PUBKEY[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
static const uint8_t OID_P256[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t OID_P384[] = {0x2b, 0x81, 0x04, 0x00, 0x22};
static const uint8_t OID_ECDSA_SHA[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03}; /* + 2,3,4 */
static const uint8_t OID_EXT_REQ[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e};
static const uint8_t OID_MS_EXT_REQ[] = {0x2b, 0x06, 0x01, 0x04, 0x01,
                                         0x82, 0x37, 0x02, 0x01, 0x0e};

typedef struct {
    const uint8_t *tlv, *val;
    size_t tlv_len, len;
} der_item;

/* One TLV with tag `tag` and a minimal definite length (at most 2 length bytes: CA_CSR_MAX). */
static int der_next(kb_reader *r, uint8_t tag, der_item *it)
{
    size_t start = r->pos, len;
    uint8_t t, b, b2;

    if (kb_reader_u8(r, &t) != KB_OK || t != tag || kb_reader_u8(r, &b) != KB_OK)
        return 0;
    if (b < 0x80) {
        len = b;
    } else if (b == 0x81) {
        if (kb_reader_u8(r, &b2) != KB_OK || b2 < 0x80)
            return 0;
        len = b2;
    } else if (b == 0x82) {
        uint16_t v;
        if (kb_reader_u16be(r, &v) != KB_OK || v < 0x100)
            return 0;
        len = v;
    } else {
        return 0;
    }
    if (kb_reader_bytes(r, len, &it->val) != KB_OK)
        return 0;
    it->len = len;
    it->tlv = r->p + start;
    it->tlv_len = r->pos - start;
    return 1;
}

static int oid_is(const der_item *o, const uint8_t *oid, size_t n)
{
    return o->len == n && memcmp(o->val, oid, n) == 0;
}

static pthread_once_t g_tmpl_once = PTHREAD_ONCE_INIT;
static EVP_PKEY *g_tmpl[2]; /* P-256, P-384 parameters */

static void tmpl_init(void)
{
    static const char *const names[2] = {"prime256v1", "secp384r1"};

    for (int i = 0; i < 2; i++) {
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (c == NULL || EVP_PKEY_paramgen_init(c) != 1 ||
            EVP_PKEY_CTX_set_group_name(c, names[i]) != 1 || EVP_PKEY_paramgen(c, &g_tmpl[i]) != 1)
            g_tmpl[i] = NULL;
        EVP_PKEY_CTX_free(c);
    }
}

/* The extension request, if any: at most one (refused otherwise, rather than picking one). */
static kb_err fast_attrs(const der_item *attrs, STACK_OF(X509_EXTENSION) * *exts, const char **why)
{
    kb_reader r;
    der_item a, type, vals, v;

    kb_reader_init(&r, attrs->val, attrs->len);
    while (kb_reader_left(&r) > 0) {
        kb_reader ar, vr;
        const unsigned char *p;
        if (!der_next(&r, 0x30, &a))
            return FAST_PASS;
        kb_reader_init(&ar, a.val, a.len);
        if (!der_next(&ar, 0x06, &type) || !der_next(&ar, 0x31, &vals) || kb_reader_left(&ar) != 0)
            return FAST_PASS;
        if (!oid_is(&type, OID_EXT_REQ, sizeof(OID_EXT_REQ)) &&
            !oid_is(&type, OID_MS_EXT_REQ, sizeof(OID_MS_EXT_REQ)))
            continue; /* challengePassword and the like: ignored, as before */
        if (*exts != NULL) {
            *why = "malformed CSR: more than one extension request";
            return KB_ERR_INVALID;
        }
        kb_reader_init(&vr, vals.val, vals.len);
        if (!der_next(&vr, 0x30, &v) || kb_reader_left(&vr) != 0)
            return FAST_PASS;
        p = v.tlv;
        *exts = d2i_X509_EXTENSIONS(NULL, &p, (long)v.tlv_len);
        if (*exts == NULL || p != v.tlv + v.tlv_len)
            return FAST_PASS;
    }
    return KB_OK;
}

static kb_err fast_parse(const uint8_t *der, size_t len, const spiffe_id *expect, EVP_PKEY **pub,
                         const char **why)
{
    kb_reader r, cr, sr, ar;
    der_item outer, cri, ver, subj, spki, attrs, salg, sig, alg, koid, curve, bits, soid;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    EVP_MD_CTX *mc = NULL;
    EVP_PKEY *k = NULL;
    X509_NAME *nm = NULL;
    const unsigned char *p;
    const char *md;
    int ci;
    kb_err rc = FAST_PASS;

    kb_reader_init(&r, der, len);
    if (!der_next(&r, 0x30, &outer) || kb_reader_left(&r) != 0)
        return FAST_PASS;
    kb_reader_init(&r, outer.val, outer.len);
    if (!der_next(&r, 0x30, &cri) || !der_next(&r, 0x30, &salg) || !der_next(&r, 0x03, &sig) ||
        kb_reader_left(&r) != 0)
        return FAST_PASS;
    kb_reader_init(&cr, cri.val, cri.len);
    if (!der_next(&cr, 0x02, &ver) || ver.len != 1 || ver.val[0] != 0 ||
        !der_next(&cr, 0x30, &subj) || !der_next(&cr, 0x30, &spki) ||
        !der_next(&cr, 0xa0, &attrs) || kb_reader_left(&cr) != 0)
        return FAST_PASS;
    /* SubjectPublicKeyInfo: id-ecPublicKey, namedCurve P-256/P-384 (RFC 5480 2.1.1) */
    kb_reader_init(&sr, spki.val, spki.len);
    if (!der_next(&sr, 0x30, &alg) || !der_next(&sr, 0x03, &bits) || kb_reader_left(&sr) != 0)
        return FAST_PASS;
    kb_reader_init(&ar, alg.val, alg.len);
    if (!der_next(&ar, 0x06, &koid) || !der_next(&ar, 0x06, &curve) || kb_reader_left(&ar) != 0 ||
        !oid_is(&koid, OID_EC_PUBKEY, sizeof(OID_EC_PUBKEY)))
        return FAST_PASS;
    if (oid_is(&curve, OID_P256, sizeof(OID_P256)))
        ci = 0;
    else if (oid_is(&curve, OID_P384, sizeof(OID_P384)))
        ci = 1;
    else
        return FAST_PASS;
    if (bits.len < 2 || bits.val[0] != 0)
        return FAST_PASS;
    /* ecdsa-with-SHA256/384/512, parameters absent (RFC 5758 3.2) */
    kb_reader_init(&ar, salg.val, salg.len);
    if (!der_next(&ar, 0x06, &soid) || kb_reader_left(&ar) != 0 ||
        soid.len != sizeof(OID_ECDSA_SHA) + 1 ||
        memcmp(soid.val, OID_ECDSA_SHA, sizeof(OID_ECDSA_SHA)) != 0)
        return FAST_PASS;
    switch (soid.val[sizeof(OID_ECDSA_SHA)]) {
    case 2:
        md = "SHA2-256";
        break;
    case 3:
        md = "SHA2-384";
        break;
    case 4:
        md = "SHA2-512";
        break;
    default:
        return FAST_PASS;
    }
    if (sig.len < 2 || sig.val[0] != 0)
        return FAST_PASS;
    p = subj.tlv;
    nm = d2i_X509_NAME(NULL, &p, (long)subj.tlv_len);
    if (nm == NULL || p != subj.tlv + subj.tlv_len)
        goto out;
    pthread_once(&g_tmpl_once, tmpl_init);
    if (g_tmpl[ci] == NULL)
        goto out;
    /* From here on the CSR is ours to judge. */
    k = EVP_PKEY_dup(g_tmpl[ci]);
    KB_ENSURE_OUT(rc, k != NULL, KB_ERR_NOMEM);
    if (EVP_PKEY_set1_encoded_public_key(k, bits.val + 1, bits.len - 1) != 1) {
        *why = "malformed CSR: unreadable public key";
        rc = KB_ERR_INVALID;
        goto out;
    }
    KB_GUARD_OUT(rc, check_key(k, why));
    mc = EVP_MD_CTX_new();
    KB_ENSURE_OUT(rc, mc != NULL, KB_ERR_NOMEM);
    if (EVP_DigestVerifyInit_ex(mc, NULL, md, NULL, NULL, k, NULL) != 1 ||
        EVP_DigestVerify(mc, sig.val + 1, sig.len - 1, cri.tlv, cri.tlv_len) != 1) {
        *why = "CSR signature does not verify (no proof of possession)";
        rc = KB_ERR_AUTH;
        goto out;
    }
    rc = fast_attrs(&attrs, &exts, why);
    if (rc != KB_OK)
        goto out;
    KB_GUARD_OUT(rc, check_exts(exts, expect, why));
    *pub = k;
    k = NULL;
out:
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    EVP_MD_CTX_free(mc);
    EVP_PKEY_free(k);
    X509_NAME_free(nm);
    return rc;
}

kb_err ca_csr_parse(const void *buf, size_t len, const spiffe_id *expect, EVP_PKEY **pub,
                    const char **why)
{
    return ca_csr_parse_ex(buf, len, expect, pub, why, 0);
}

kb_err ca_csr_parse_ex(const void *buf, size_t len, const spiffe_id *expect, EVP_PKEY **pub,
                       const char **why, int openssl_only)
{
    static const char hdr[] = "-----BEGIN CERTIFICATE REQUEST-----";
    const unsigned char *p = buf;
    X509_REQ *req = NULL;
    EVP_PKEY *k = NULL;
    BIO *b = NULL;
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long dlen = 0;
    size_t i;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(why);
    *why = "malformed CSR";
    KB_ENSURE_REF(pub);
    *pub = NULL;
    KB_ENSURE(buf != NULL && len > 0, KB_ERR_INVALID);
    if (len > CA_CSR_MAX) {
        *why = "CSR too large";
        return KB_ERR_TOO_LARGE;
    }
    for (i = 0; i < len && (p[i] == ' ' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t'); i++)
        ;
    if (len - i >= sizeof(hdr) - 1 && memcmp(p + i, hdr, sizeof(hdr) - 1) == 0) {
        b = BIO_new_mem_buf(buf, (int)len);
        KB_ENSURE(b != NULL, KB_ERR_NOMEM);
        if (PEM_read_bio(b, &name, &header, &der, &dlen) != 1 ||
            strcmp(name, "CERTIFICATE REQUEST") != 0 || header[0] != '\0') {
            *why = "malformed CSR: not one PEM CERTIFICATE REQUEST block";
            rc = KB_ERR_INVALID;
            goto out;
        }
        /* nothing but whitespace may follow the block */
        for (;;) {
            char c;
            int r = BIO_read(b, &c, 1);
            if (r <= 0)
                break;
            if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
                *why = "malformed CSR: data after the PEM block";
                rc = KB_ERR_TRAILING;
                goto out;
            }
        }
        p = der;
        len = (size_t)dlen;
    }
    if (!openssl_only) {
        rc = fast_parse(p, len, expect, pub, why);
        if (rc != FAST_PASS) {
            if (rc == KB_OK)
                *why = NULL;
            goto out;
        }
        *why = "malformed CSR";
    }
    {
        const unsigned char *q = p;
        req = d2i_X509_REQ(NULL, &q, (long)len);
        if (req == NULL) {
            *why = "malformed CSR: not a DER CertificationRequest";
            rc = KB_ERR_INVALID;
            goto out;
        }
        if (q != p + len) {
            *why = "malformed CSR: bytes after the CertificationRequest";
            rc = KB_ERR_TRAILING;
            goto out;
        }
    }
    k = X509_REQ_get_pubkey(req);
    if (k == NULL) {
        *why = "malformed CSR: unreadable public key";
        rc = KB_ERR_INVALID;
        goto out;
    }
    KB_GUARD_OUT(rc, check_key(k, why));
    if (X509_REQ_verify(req, k) != 1) {
        *why = "CSR signature does not verify (no proof of possession)";
        rc = KB_ERR_AUTH;
        goto out;
    }
    KB_GUARD_OUT(rc, check_sans(req, expect, why));
    *pub = k;
    k = NULL;
    *why = NULL;
out:
    ERR_clear_error();
    EVP_PKEY_free(k);
    X509_REQ_free(req);
    BIO_free(b);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    return rc;
}
