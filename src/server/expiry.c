/* expiry.c - expiry dates of X.509, PKCS#12 and OpenPGP content (expiry.h). */
#include "expiry.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509.h>

#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/secbuf.h"

const char *expiry_kind_name(expiry_kind k)
{
    switch (k) {
    case EXPIRY_X509_PEM:
        return "x509-pem";
    case EXPIRY_X509_DER:
        return "x509-der";
    case EXPIRY_PKCS12:
        return "pkcs12";
    case EXPIRY_OPENPGP:
        return "openpgp";
    case EXPIRY_NONE:
        break;
    }
    return "none";
}

/* Keep the earlier of *best and t (t > 0); *best == 0 means none yet. */
static void keep_earliest(int64_t *best, int64_t t)
{
    if (t > 0 && (*best == 0 || t < *best))
        *best = t;
}

static kb_err cert_not_after(const X509 *x, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    KB_ENSURE(ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1, KB_ERR_INVALID);
    *out = (int64_t)timegm(&tm);
    KB_ENSURE(*out > 0, KB_ERR_INVALID);
    return KB_OK;
}

/* ---- X.509 PEM ------------------------------------------------------------------------------ */

static kb_err from_pem(const uint8_t *c, size_t len, int64_t *out)
{
    BIO *bio;
    int64_t best = 0;
    bool bad = false;
    int certs = 0, markers = 0;
    static const char begin[] = "-----BEGIN CERTIFICATE-----";

    KB_ENSURE(len <= INT32_MAX, KB_ERR_TOO_LARGE);
    /* Every certificate marker must become a certificate: a block PEM_read_bio_ex cannot read
     * (truncated, bad base64) ends its walk silently, and the earlier blocks must not then
     * pass for the whole content. */
    for (const uint8_t *p = c; (p = memmem(p, len - (size_t)(p - c), begin, sizeof(begin) - 1));
         p += sizeof(begin) - 1)
        markers++;
    bio = BIO_new_mem_buf(c, (int)len);
    KB_ENSURE(bio != NULL, KB_ERR_NOMEM);
    /* Walk the PEM blocks ourselves with PEM_FLAG_SECURE: a secret often holds a private key
     * before its certificate, and PEM_read_bio_X509 would decode that key into ordinary heap
     * and free it uncleared. Every decoded block is wiped here. */
    for (int blocks = 0; blocks < EXPIRY_PEM_BLOCKS_MAX; blocks++) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long dlen = 0;
        if (!PEM_read_bio_ex(bio, &name, &header, &data, &dlen, PEM_FLAG_SECURE))
            break;
        if (strcmp(name, "CERTIFICATE") == 0) {
            const unsigned char *p = data;
            X509 *x = d2i_X509(NULL, &p, dlen);
            int64_t t = 0;
            /* the whole block must be the certificate (OpenSMTPD: trailing bytes are an error) */
            certs++;
            if (x == NULL || p != data + dlen || cert_not_after(x, &t) != KB_OK)
                bad = true;
            else
                keep_earliest(&best, t);
            X509_free(x);
        }
        OPENSSL_secure_clear_free(data, (size_t)dlen);
        OPENSSL_secure_free(name);
        OPENSSL_secure_free(header);
    }
    ERR_clear_error();
    BIO_free(bio);
    /* A content that announces a certificate but has a broken one is malformed, even when
     * another certificate in it parsed: the caller decides what a malformed content means. */
    if (bad || best == 0 || certs != markers)
        return KB_ERR_INVALID;
    *out = best;
    return KB_OK;
}

/* ---- X.509 DER and PKCS#12 ------------------------------------------------------------------ */

static kb_err from_der_cert(const uint8_t *c, size_t len, int64_t *out)
{
    const unsigned char *p = c;
    X509 *x;
    kb_err rc = KB_ERR_NOT_FOUND;

    KB_ENSURE(len <= LONG_MAX, KB_ERR_TOO_LARGE);
    x = d2i_X509(NULL, &p, (long)len);
    if (x != NULL && p == c + len)
        rc = cert_not_after(x, out);
    X509_free(x);
    ERR_clear_error();
    return rc;
}

static void bags_certs(const STACK_OF(PKCS12_SAFEBAG) * bags, int64_t *best, int *seen)
{
    for (int j = 0; j < sk_PKCS12_SAFEBAG_num(bags) && *seen < EXPIRY_P12_BAGS_MAX; j++) {
        const PKCS12_SAFEBAG *bag = sk_PKCS12_SAFEBAG_value(bags, j);
        if (PKCS12_SAFEBAG_get_nid(bag) != NID_certBag ||
            PKCS12_SAFEBAG_get_bag_nid(bag) != NID_x509Certificate)
            continue;
        X509 *x = PKCS12_SAFEBAG_get1_cert(bag);
        int64_t t = 0;
        (*seen)++;
        if (x != NULL && cert_not_after(x, &t) == KB_OK)
            keep_earliest(best, t);
        X509_free(x);
    }
}

/* The certificates of a PKCS#12 that can be read without the bundle's password: plain data
 * safe contents and encrypted ones under the empty password (both encodings of it, RFC 7292
 * B.1: an empty BMPString or none at all). The MAC is not checked: it needs the password too,
 * and the date is advisory. Shrouded key bags are never decrypted. */
static kb_err from_pkcs12(const uint8_t *c, size_t len, int64_t *out, expiry_kind *kind)
{
    const unsigned char *p = c;
    PKCS12 *p12;
    STACK_OF(PKCS7) *safes = NULL;
    int64_t best = 0;
    int seen = 0;

    KB_ENSURE(len <= LONG_MAX, KB_ERR_TOO_LARGE);
    p12 = d2i_PKCS12(NULL, &p, (long)len);
    if (p12 == NULL || p != c + len) {
        PKCS12_free(p12);
        ERR_clear_error();
        return KB_ERR_NOT_FOUND;
    }
    *kind = EXPIRY_PKCS12;
    safes = PKCS12_unpack_authsafes(p12);
    for (int i = 0; safes != NULL && i < sk_PKCS7_num(safes); i++) {
        PKCS7 *p7 = sk_PKCS7_value(safes, i);
        STACK_OF(PKCS12_SAFEBAG) *bags = NULL;
        int nid = OBJ_obj2nid(p7->type);
        if (nid == NID_pkcs7_data) {
            bags = PKCS12_unpack_p7data(p7);
        } else if (nid == NID_pkcs7_encrypted) {
            bags = PKCS12_unpack_p7encdata(p7, "", 0);
            if (bags == NULL)
                bags = PKCS12_unpack_p7encdata(p7, NULL, 0);
        }
        if (bags != NULL)
            bags_certs(bags, &best, &seen);
        sk_PKCS12_SAFEBAG_pop_free(bags, PKCS12_SAFEBAG_free);
    }
    ERR_clear_error();
    sk_PKCS7_pop_free(safes, PKCS7_free);
    PKCS12_free(p12);
    if (safes == NULL)
        return KB_ERR_INVALID; /* a PKCS#12 outer shell around unreadable contents */
    if (best == 0)
        return KB_ERR_NOT_FOUND;
    *out = best;
    return KB_OK;
}

/* ---- OpenPGP (RFC 4880 4.2, 5.2.3, 5.5.2, 12.2; RFC 9580 for v6) ---------------------------- */

#define PGP_TAG_SIG 2
#define PGP_TAG_SECKEY 5
#define PGP_TAG_PUBKEY 6
#define PGP_TAG_SECSUBKEY 7
#define PGP_TAG_PUBSUBKEY 14
#define PGP_SUB_CREATED 2
#define PGP_SUB_KEY_EXPIRES 9
#define PGP_SUB_ISSUER 16
#define PGP_SUB_ISSUER_FPR 33

typedef struct {
    bool active;       /* inside a primary key's packets (before its first subkey) */
    int version;       /* key packet version */
    int64_t created;   /* key creation time */
    int64_t v3_expiry; /* v3 keys: creation + validity days, 0 if none */
    uint8_t fpr[32];   /* v4: SHA-1 (20 bytes), v5/v6: SHA-256 */
    size_t fpr_len;
    uint8_t keyid[8];
    int64_t best_sig_time; /* the most recent self-signature seen */
    int64_t key_expires;   /* its Key Expiration Time (seconds after creation), 0 = never */
    bool have_sig;
} pgp_key;

static kb_err pgp_packet_header(kb_reader *r, int *tag, size_t *body_len)
{
    uint8_t b, o1, o2;
    uint16_t u16;
    uint32_t u32;

    KB_GUARD(kb_reader_u8(r, &b));
    KB_ENSURE((b & 0x80) != 0, KB_ERR_INVALID);
    if (b & 0x40) { /* new format */
        *tag = b & 0x3F;
        KB_GUARD(kb_reader_u8(r, &o1));
        if (o1 < 192) {
            *body_len = o1;
        } else if (o1 < 224) {
            KB_GUARD(kb_reader_u8(r, &o2));
            *body_len = ((size_t)(o1 - 192) << 8) + o2 + 192;
        } else if (o1 == 255) {
            KB_GUARD(kb_reader_u32be(r, &u32));
            *body_len = u32;
        } else {
            return KB_ERR_INVALID; /* partial body lengths: not allowed in key material */
        }
    } else {
        *tag = (b >> 2) & 0x0F;
        switch (b & 3) {
        case 0:
            KB_GUARD(kb_reader_u8(r, &o1));
            *body_len = o1;
            break;
        case 1:
            KB_GUARD(kb_reader_u16be(r, &u16));
            *body_len = u16;
            break;
        case 2:
            KB_GUARD(kb_reader_u32be(r, &u32));
            *body_len = u32;
            break;
        default:
            *body_len = kb_reader_left(r); /* indeterminate: to the end */
            break;
        }
    }
    KB_ENSURE(*body_len <= kb_reader_left(r), KB_ERR_TRUNCATED);
    return KB_OK;
}

/* Length of a key packet's public part (RFC 4880 5.5.2, RFC 6637 9, RFC 9580 5.5.2): a secret
 * key packet's fingerprint is computed over it alone. */
static kb_err pgp_mpi(kb_reader *r)
{
    uint16_t bits;
    const uint8_t *d;
    KB_GUARD(kb_reader_u16be(r, &bits));
    return kb_reader_bytes(r, ((size_t)bits + 7) / 8, &d);
}

static kb_err pgp_public_len(const uint8_t *body, size_t n, size_t *out)
{
    kb_reader r;
    uint8_t ver, algo, olen;
    uint32_t created, mlen;
    const uint8_t *d;
    int mpis = 0;

    kb_reader_init(&r, body, n);
    KB_GUARD(kb_reader_u8(&r, &ver));
    KB_GUARD(kb_reader_u32be(&r, &created));
    KB_GUARD(kb_reader_u8(&r, &algo));
    if (ver >= 5) { /* v5/v6: the key material's length is explicit */
        KB_GUARD(kb_reader_u32be(&r, &mlen));
        KB_GUARD(kb_reader_bytes(&r, mlen, &d));
        *out = n - kb_reader_left(&r);
        return KB_OK;
    }
    switch (algo) {
    case 1:
    case 2:
    case 3: /* RSA: n, e */
        mpis = 2;
        break;
    case 16: /* Elgamal: p, g, y */
        mpis = 3;
        break;
    case 17: /* DSA: p, q, g, y */
        mpis = 4;
        break;
    case 18:
    case 19:
    case 22: /* ECDH, ECDSA, EdDSA: curve OID, point (ECDH: + KDF params) */
        KB_GUARD(kb_reader_u8(&r, &olen));
        KB_GUARD(kb_reader_bytes(&r, olen, &d));
        mpis = 1;
        break;
    default:
        return KB_ERR_INVALID;
    }
    for (int i = 0; i < mpis; i++)
        KB_GUARD(pgp_mpi(&r));
    if (algo == 18) {
        KB_GUARD(kb_reader_u8(&r, &olen));
        KB_GUARD(kb_reader_bytes(&r, olen, &d));
    }
    *out = n - kb_reader_left(&r);
    return KB_OK;
}

/* A primary key packet: version, creation time and fingerprint (RFC 4880 12.2; RFC 9580 5.5.4). */
static kb_err pgp_key_packet(const uint8_t *body, size_t n, pgp_key *k)
{
    kb_reader r;
    uint8_t ver;
    uint32_t created;
    uint8_t hdr[5];
    size_t hdr_len;
    unsigned int md_len = 0;

    memset(k, 0, sizeof(*k));
    kb_reader_init(&r, body, n);
    KB_GUARD(kb_reader_u8(&r, &ver));
    KB_GUARD(kb_reader_u32be(&r, &created));
    KB_ENSURE(ver >= 3 && ver <= 6, KB_ERR_INVALID);
    k->version = ver;
    k->created = created;
    k->active = true;
    if (ver <= 3) {
        uint16_t days;
        KB_GUARD(kb_reader_u16be(&r, &days));
        if (days > 0)
            k->v3_expiry = (int64_t)created + (int64_t)days * 86400;
        return KB_OK; /* v3 self-signatures carry no expiry; no fingerprint needed */
    }
    KB_ENSURE(n <= UINT32_MAX, KB_ERR_TOO_LARGE);
    if (ver == 4) {
        KB_ENSURE(n <= UINT16_MAX, KB_ERR_TOO_LARGE);
        hdr[0] = 0x99;
        hdr[1] = (uint8_t)(n >> 8);
        hdr[2] = (uint8_t)n;
        hdr_len = 3;
    } else {
        hdr[0] = ver == 5 ? 0x9A : 0x9B;
        hdr[1] = (uint8_t)(n >> 24);
        hdr[2] = (uint8_t)(n >> 16);
        hdr[3] = (uint8_t)(n >> 8);
        hdr[4] = (uint8_t)n;
        hdr_len = 5;
    }
    /* n is the public part only (a secret key packet's is cut by pgp_public_len). */
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    KB_ENSURE(md != NULL, KB_ERR_NOMEM);
    int ok = EVP_DigestInit_ex(md, ver == 4 ? EVP_sha1() : EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, hdr, hdr_len) == 1 && EVP_DigestUpdate(md, body, n) == 1 &&
             EVP_DigestFinal_ex(md, k->fpr, &md_len) == 1;
    EVP_MD_CTX_free(md);
    KB_ENSURE(ok, KB_ERR_CRYPTO);
    k->fpr_len = md_len;
    /* key ID: v4 the low 64 bits, v5/v6 the high 64 bits of the fingerprint */
    memcpy(k->keyid, ver == 4 ? k->fpr + md_len - 8 : k->fpr, 8);
    return KB_OK;
}

typedef struct {
    int64_t created;
    int64_t key_expires;
    bool has_expiry;
    bool issuer_seen;  /* an issuer or issuer fingerprint subpacket */
    bool issuer_match; /* ... naming the primary key */
} pgp_sig_info;

static kb_err pgp_subpackets(const uint8_t *p, size_t n, const pgp_key *k, bool hashed,
                             pgp_sig_info *si)
{
    kb_reader r;
    kb_reader_init(&r, p, n);
    while (kb_reader_left(&r) > 0) {
        uint8_t o1, o2, type;
        uint32_t u32;
        size_t len;
        const uint8_t *d;
        KB_GUARD(kb_reader_u8(&r, &o1));
        if (o1 < 192) {
            len = o1;
        } else if (o1 < 255) {
            KB_GUARD(kb_reader_u8(&r, &o2));
            len = ((size_t)(o1 - 192) << 8) + o2 + 192;
        } else {
            KB_GUARD(kb_reader_u32be(&r, &u32));
            len = u32;
        }
        KB_ENSURE(len >= 1, KB_ERR_INVALID);
        KB_GUARD(kb_reader_u8(&r, &type));
        KB_GUARD(kb_reader_bytes(&r, len - 1, &d));
        type &= 0x7F; /* the critical bit */
        /* Dates only count from the hashed area (RFC 4880 5.2.3.1: the unhashed area is not
         * signed); the issuer may be in either. */
        if (type == PGP_SUB_CREATED && hashed && len == 5)
            si->created = (int64_t)(((uint32_t)d[0] << 24) | ((uint32_t)d[1] << 16) |
                                    ((uint32_t)d[2] << 8) | d[3]);
        else if (type == PGP_SUB_KEY_EXPIRES && hashed && len == 5) {
            si->key_expires = (int64_t)(((uint32_t)d[0] << 24) | ((uint32_t)d[1] << 16) |
                                        ((uint32_t)d[2] << 8) | d[3]);
            si->has_expiry = true;
        } else if (type == PGP_SUB_ISSUER && len == 9) {
            si->issuer_seen = true;
            if (k->fpr_len > 0 && memcmp(d, k->keyid, 8) == 0)
                si->issuer_match = true;
        } else if (type == PGP_SUB_ISSUER_FPR && len >= 2) {
            si->issuer_seen = true;
            if (k->fpr_len > 0 && len - 2 == k->fpr_len && memcmp(d + 1, k->fpr, k->fpr_len) == 0)
                si->issuer_match = true;
        }
    }
    return KB_OK;
}

/* The current subkey (after a public or secret subkey packet, until the next key packet). */
typedef struct {
    bool active;
    int64_t created;
    int64_t best_sig_time; /* the most recent binding signature by the primary key */
    int64_t key_expires;   /* its Key Expiration Time (seconds after creation), 0 = never */
    bool have_sig;
} pgp_sub;

/* A signature's type and subpackets (v4-v6); *type = -1 for a v3 signature (no subpackets). The
 * subpackets are read only for the types in want (a NUL-terminated list). */
static kb_err pgp_sig_parse(const uint8_t *body, size_t n, const pgp_key *k, const char *want,
                            int *stype, pgp_sig_info *si)
{
    kb_reader r;
    uint8_t ver, type, pk, hash;
    uint16_t h16;
    uint32_t hlen, ulen;
    const uint8_t *h, *u;

    memset(si, 0, sizeof(*si));
    *stype = -1;
    kb_reader_init(&r, body, n);
    KB_GUARD(kb_reader_u8(&r, &ver));
    if (ver < 4)
        return KB_OK; /* v3 signatures have no subpackets */
    KB_ENSURE(ver <= 6, KB_ERR_INVALID);
    KB_GUARD(kb_reader_u8(&r, &type));
    KB_GUARD(kb_reader_u8(&r, &pk));
    KB_GUARD(kb_reader_u8(&r, &hash));
    if (ver == 4) {
        KB_GUARD(kb_reader_u16be(&r, &h16));
        hlen = h16;
    } else {
        KB_GUARD(kb_reader_u32be(&r, &hlen));
    }
    KB_GUARD(kb_reader_bytes(&r, hlen, &h));
    if (ver == 4) {
        KB_GUARD(kb_reader_u16be(&r, &h16));
        ulen = h16;
    } else {
        KB_GUARD(kb_reader_u32be(&r, &ulen));
    }
    KB_GUARD(kb_reader_bytes(&r, ulen, &u));
    if (type == 0 || strchr(want, (char)type) == NULL)
        return KB_OK;
    *stype = type;
    KB_GUARD(pgp_subpackets(h, hlen, k, true, si));
    return pgp_subpackets(u, ulen, k, false, si);
}

/* A signature after the primary key: a self-certification (0x10-0x13) or direct-key signature
 * (0x1F) by the key itself updates the key's expiry if it is the most recent so far. */
static kb_err pgp_sig(const uint8_t *body, size_t n, pgp_key *k)
{
    static const char types[] = {0x10, 0x11, 0x12, 0x13, 0x1F, 0};
    pgp_sig_info si;
    int type;

    KB_GUARD(pgp_sig_parse(body, n, k, types, &type, &si));
    /* A certification by another key (someone signing this user ID) says nothing about the
     * key's lifetime. Without any issuer subpacket the signature is taken as a self-signature
     * (GnuPG always writes one; old keys may not). */
    if (type < 0 || (si.issuer_seen && !si.issuer_match))
        return KB_OK;
    if (!k->have_sig || si.created >= k->best_sig_time) {
        k->have_sig = true;
        k->best_sig_time = si.created;
        k->key_expires = si.has_expiry ? si.key_expires : 0;
    }
    return KB_OK;
}

/* A signature after a subkey: its binding (0x18) by the primary key sets the subkey's expiry
 * (the most recent binding wins). Signatures naming another issuer are ignored; one naming none
 * is taken as the primary key's. Revocations are not read (as for the primary key): a revoked
 * subkey's date still counts, which can only make a notification early. */
static kb_err pgp_subkey_sig(const uint8_t *body, size_t n, const pgp_key *k, pgp_sub *sub)
{
    static const char types[] = {0x18, 0};
    pgp_sig_info si;
    int type;

    KB_GUARD(pgp_sig_parse(body, n, k, types, &type, &si));
    if (type < 0 || (si.issuer_seen && !si.issuer_match))
        return KB_OK;
    if (!sub->have_sig || si.created >= sub->best_sig_time) {
        sub->have_sig = true;
        sub->best_sig_time = si.created;
        sub->key_expires = si.has_expiry ? si.key_expires : 0;
    }
    return KB_OK;
}

/* A subkey packet: version (4..6; subkeys do not exist in v3) and creation time. */
static kb_err pgp_subkey_packet(const uint8_t *body, size_t n, pgp_sub *sub)
{
    kb_reader r;
    uint8_t ver;
    uint32_t created;
    memset(sub, 0, sizeof(*sub));
    kb_reader_init(&r, body, n);
    KB_GUARD(kb_reader_u8(&r, &ver));
    KB_GUARD(kb_reader_u32be(&r, &created));
    KB_ENSURE(ver >= 4 && ver <= 6, KB_ERR_INVALID);
    sub->created = created;
    sub->active = true;
    return KB_OK;
}

static void pgp_subkey_finish(pgp_sub *sub, int64_t *best)
{
    if (sub->active && sub->have_sig && sub->key_expires > 0)
        keep_earliest(best, sub->created + sub->key_expires);
    sub->active = false;
}

static void pgp_finish(pgp_key *k, int64_t *best)
{
    if (!k->active)
        return;
    if (k->version <= 3)
        keep_earliest(best, k->v3_expiry);
    else if (k->have_sig && k->key_expires > 0)
        keep_earliest(best, k->created + k->key_expires);
    k->active = false;
}

/* A sequence of OpenPGP packets holding at least one primary key. */
static kb_err pgp_packets(const uint8_t *c, size_t len, int64_t *out)
{
    kb_reader r;
    pgp_key k;
    pgp_sub sub;
    int64_t best = 0;
    int keys = 0;

    memset(&k, 0, sizeof(k));
    memset(&sub, 0, sizeof(sub));
    kb_reader_init(&r, c, len);
    for (int i = 0; kb_reader_left(&r) > 0; i++) {
        int tag = 0;
        size_t n = 0;
        const uint8_t *body;
        KB_ENSURE(i < EXPIRY_PGP_PACKETS_MAX, KB_ERR_TOO_LARGE);
        KB_GUARD(pgp_packet_header(&r, &tag, &n));
        KB_GUARD(kb_reader_bytes(&r, n, &body));
        KB_ENSURE(tag != 0, KB_ERR_INVALID);
        KB_ENSURE(i > 0 || tag == PGP_TAG_PUBKEY || tag == PGP_TAG_SECKEY, KB_ERR_INVALID);
        if (tag == PGP_TAG_PUBKEY || tag == PGP_TAG_SECKEY) {
            pgp_finish(&k, &best);
            pgp_subkey_finish(&sub, &best);
            size_t pub = n;
            if (tag == PGP_TAG_SECKEY && n > 0 && body[0] >= 4)
                KB_GUARD(pgp_public_len(body, n, &pub));
            KB_GUARD(pgp_key_packet(body, pub, &k));
            keys++;
        } else if (tag == PGP_TAG_PUBSUBKEY || tag == PGP_TAG_SECSUBKEY) {
            pgp_finish(&k, &best);
            pgp_subkey_finish(&sub, &best);
            KB_GUARD(pgp_subkey_packet(body, n, &sub));
        } else if (tag == PGP_TAG_SIG && k.active) {
            KB_GUARD(pgp_sig(body, n, &k));
        } else if (tag == PGP_TAG_SIG && sub.active) {
            KB_GUARD(pgp_subkey_sig(body, n, &k, &sub));
        }
    }
    pgp_finish(&k, &best);
    pgp_subkey_finish(&sub, &best);
    KB_ENSURE(keys > 0, KB_ERR_INVALID);
    if (best == 0)
        return KB_ERR_NOT_FOUND;
    *out = best;
    return KB_OK;
}

#define PGP_ARMOR_PUB "-----BEGIN PGP PUBLIC KEY BLOCK-----"
#define PGP_ARMOR_SEC "-----BEGIN PGP PRIVATE KEY BLOCK-----"

/* ASCII armour (RFC 4880 6.2): header line, armour headers up to an empty line, base64 body up
 * to the CRC line ("=xxxx") or the END line, decoded by the tree's strict base64 (lib/base64.h)
 * into locked memory: a private
 * key block holds key material. The checksum is not checked (RFC 9580 deprecates it). */
static kb_err from_armor(const uint8_t *c, size_t len, const uint8_t *begin, int64_t *out)
{
    kb_reader r;
    kb_secret *b64 = NULL, *bin = NULL;
    size_t nb = 0;
    const uint8_t *line;
    size_t line_len;
    bool in_body = false, ended = false;
    kb_err rc = KB_OK;

    kb_reader_init(&r, begin, len - (size_t)(begin - c));
    KB_GUARD_OUT(rc, kb_secret_new(len, &b64));
    /* the BEGIN line itself */
    KB_GUARD_OUT(rc, kb_reader_until(&r, '\n', len, &line, &line_len));
    while (!ended && kb_reader_left(&r) > 0) {
        rc = kb_reader_until(&r, '\n', len, &line, &line_len);
        if (rc != KB_OK) { /* a last line without its newline */
            line_len = kb_reader_left(&r);
            KB_GUARD_OUT(rc, kb_reader_bytes(&r, line_len, &line));
        }
        while (line_len > 0 && (line[line_len - 1] == '\r' || line[line_len - 1] == ' ' ||
                                line[line_len - 1] == '\t'))
            line_len--;
        if (line_len >= 5 && memcmp(line, "-----", 5) == 0) {
            ended = true;
        } else if (!in_body) {
            if (line_len == 0)
                in_body = true;
            else
                KB_ENSURE_OUT(rc, memchr(line, ':', line_len) != NULL, KB_ERR_INVALID);
        } else if (line_len > 0 && line[0] == '=') {
            ended = true; /* CRC-24 line; the END line follows */
        } else {
            /* the lines joined; the strict decoder (lib/base64.h) judges the result */
            memcpy(kb_secret_data(b64) + nb, line, line_len);
            nb += line_len;
        }
    }
    KB_ENSURE_OUT(rc, ended && nb > 0, KB_ERR_INVALID);
    KB_GUARD_OUT(rc, kb_b64_decode_secret((const char *)kb_secret_cdata(b64), nb, len, &bin));
    rc = pgp_packets(kb_secret_cdata(bin), kb_secret_len(bin), out);
out:
    kb_secret_free(bin);
    kb_secret_free(b64);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

static const uint8_t *find(const uint8_t *c, size_t len, const char *needle)
{
    return memmem(c, len, needle, strlen(needle));
}

/* Does the content start like a binary OpenPGP key packet (old or new format, tag 5 or 6)? */
static bool pgp_binary_start(const uint8_t *c, size_t len)
{
    if (len < 2 || (c[0] & 0x80) == 0)
        return false;
    int tag = (c[0] & 0x40) ? (c[0] & 0x3F) : ((c[0] >> 2) & 0x0F);
    return tag == PGP_TAG_PUBKEY || tag == PGP_TAG_SECKEY;
}

kb_err expiry_extract(const uint8_t *content, size_t len, int64_t *out, expiry_kind *kind)
{
    const uint8_t *armor;
    int64_t t = 0;
    kb_err rc;

    KB_ENSURE_REF(out);
    KB_ENSURE_REF(kind);
    *kind = EXPIRY_NONE;
    if (content == NULL || len == 0)
        return KB_ERR_NOT_FOUND;
    if (find(content, len, "-----BEGIN CERTIFICATE-----") != NULL) {
        *kind = EXPIRY_X509_PEM;
        rc = from_pem(content, len, &t);
    } else if ((armor = find(content, len, PGP_ARMOR_PUB)) != NULL ||
               (armor = find(content, len, PGP_ARMOR_SEC)) != NULL) {
        *kind = EXPIRY_OPENPGP;
        rc = from_armor(content, len, armor, &t);
    } else if (content[0] == 0x30 && (rc = from_der_cert(content, len, &t)) != KB_ERR_NOT_FOUND) {
        *kind = EXPIRY_X509_DER;
    } else if (content[0] == 0x30) {
        rc = from_pkcs12(content, len, &t, kind); /* NOT_FOUND: any other DER */
    } else if (pgp_binary_start(content, len)) {
        *kind = EXPIRY_OPENPGP;
        rc = pgp_packets(content, len, &t);
    } else {
        rc = KB_ERR_NOT_FOUND;
    }
    if (rc == KB_ERR_TRUNCATED || rc == KB_ERR_TRAILING || rc == KB_ERR_TOO_LARGE)
        rc = KB_ERR_INVALID;
    if (rc == KB_OK)
        *out = t;
    return rc;
}
