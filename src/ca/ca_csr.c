/* ca_csr.c - CSR checks (see ca_csr.h). */
#include "ca_csr.h"

#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

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
        c = EVP_PKEY_CTX_new(k, NULL);
        ok = c != NULL && EVP_PKEY_public_check(c) == 1;
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

static kb_err check_sans(X509_REQ *req, const spiffe_id *expect, const char **why)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
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
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    return rc;
}

kb_err ca_csr_parse(const void *buf, size_t len, const spiffe_id *expect, EVP_PKEY **pub,
                    const char **why)
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
