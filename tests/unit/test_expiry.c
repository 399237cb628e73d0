/* test_expiry.c - expiry extraction (server/expiry.h): X.509 PEM/DER, PKCS#12, OpenPGP, and the
 * negative cases (malformed PEM/DER, truncated PKCS#12, garbage OpenPGP). The fixtures are the
 * fuzz target's seeds (tests/fuzz/corpus/fuzz_expiry), made by GnuPG 2.2, python-cryptography
 * and openssl pkcs12 (docs/internals/notify.md lists how). */
#include <stdbool.h>
#include <string.h>

#include "kbtest.h"
#include "lib/buf.h"
#include "lib/fileio.h"
#include "lib/secbuf.h"
#include "server/expiry.h"

#define LEAF_NOT_AFTER 1835759167      /* 2028-03-04T05:06:07Z: the leaf; the CA lasts to 2035 */
#define CA_NOT_AFTER 2051222400        /* 2035-01-01T00:00:00Z */
#define PGP_ED25519_EXPIRES 1893499200 /* 2030-01-01T12:00:00Z */
#define PGP_RSA_EXPIRES 1969704000     /* 2032-06-01T12:00:00Z: the newer self-signature */
/* pgp-subkeys-*: primary to 2031-01-01 (1925035200), an encryption subkey to 2029-06-01
 * (1875009600), another to 2028-01-01: the earliest, a subkey's */
#define PGP_SUBKEY_EXPIRES 1830340800
#define PGP_SUBKEY_PRIMARY 1925035200
#define PGP_SUBKEY_FIRST 1875009600

static kb_dbuf load(const char *name)
{
    kb_dbuf b;
    char path[1024];
    const char *src = getenv("KB_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/fuzz_expiry/%s", src ? src : ".", name);
    kb_dbuf_init(&b, 1 << 20);
    if (kb_file_read(path, 1 << 20, &b) != KB_OK)
        fail_msg("cannot read %s", path);
    return b;
}

static kb_err extract(const kb_dbuf *b, size_t len, int64_t *t, expiry_kind *k)
{
    *t = 0;
    return expiry_extract((const uint8_t *)b->p, len, t, k);
}

static void expect(const char *file, kb_err want, expiry_kind kind, int64_t when)
{
    kb_dbuf b = load(file);
    int64_t t;
    expiry_kind k;
    kb_err rc = extract(&b, b.len, &t, &k);
    if (rc != want || k != kind || (want == KB_OK && t != when))
        fail_msg("%s: got %s kind %s t %lld; want %s kind %s t %lld", file, kb_err_str(rc),
                 expiry_kind_name(k), (long long)t, kb_err_str(want), expiry_kind_name(kind),
                 (long long)when);
    kb_dbuf_free(&b);
}

static void x509(void **state)
{
    (void)state;
    /* key, CA, leaf: the key block is skipped, the earliest notAfter (the leaf) wins */
    expect("x509-key-chain.pem", KB_OK, EXPIRY_X509_PEM, LEAF_NOT_AFTER);
    expect("x509-leaf.der", KB_OK, EXPIRY_X509_DER, LEAF_NOT_AFTER);
}

static void pkcs12(void **state)
{
    (void)state;
    expect("p12-nopass.p12", KB_OK, EXPIRY_PKCS12, LEAF_NOT_AFTER);
    expect("p12-emptypass.p12", KB_OK, EXPIRY_PKCS12, LEAF_NOT_AFTER);
    /* certificates encrypted under a real password: recognised, no date */
    expect("p12-password.p12", KB_ERR_NOT_FOUND, EXPIRY_PKCS12, 0);
}

static void openpgp(void **state)
{
    (void)state;
    expect("pgp-ed25519-pub.asc", KB_OK, EXPIRY_OPENPGP, PGP_ED25519_EXPIRES);
    expect("pgp-ed25519-pub.gpg", KB_OK, EXPIRY_OPENPGP, PGP_ED25519_EXPIRES);
    expect("pgp-ed25519-sec.asc", KB_OK, EXPIRY_OPENPGP, PGP_ED25519_EXPIRES);
    expect("pgp-rsa-pub.asc", KB_OK, EXPIRY_OPENPGP, PGP_RSA_EXPIRES);
    expect("pgp-rsa-sec.gpg", KB_OK, EXPIRY_OPENPGP, PGP_RSA_EXPIRES);
    /* subkeys count: the earliest of the primary key and its subkeys (binding signatures) */
    expect("pgp-subkeys-pub.asc", KB_OK, EXPIRY_OPENPGP, PGP_SUBKEY_EXPIRES);
    expect("pgp-subkeys-sec.gpg", KB_OK, EXPIRY_OPENPGP, PGP_SUBKEY_EXPIRES);
    /* a key that never expires: recognised, no date */
    expect("pgp-never-pub.asc", KB_ERR_NOT_FOUND, EXPIRY_OPENPGP, 0);
}

static void not_recognised(void **state)
{
    int64_t t = 0;
    expiry_kind k;
    static const uint8_t der_key[] = {0x30, 0x03, 0x02, 0x01, 0x00}; /* SEQUENCE { INTEGER 0 } */
    (void)state;
    assert_kb(expiry_extract((const uint8_t *)"hello", 5, &t, &k), KB_ERR_NOT_FOUND);
    assert_int_equal(k, EXPIRY_NONE);
    assert_kb(expiry_extract(NULL, 0, &t, &k), KB_ERR_NOT_FOUND);
    assert_kb(expiry_extract(der_key, sizeof(der_key), &t, &k), KB_ERR_NOT_FOUND);
    assert_int_equal(k, EXPIRY_NONE);
    assert_kb(expiry_extract((const uint8_t *)"x", 1, NULL, &k), KB_ERR_NULL);
    assert_int_equal(t, 0);
}

/* Every prefix of every fixture: no crash, and a date only from a complete one (a truncated
 * PEM or armour cannot yield one; truncated binary formats are malformed or unrecognised). */
static void truncated(void **state)
{
    static const char *const files[] = {
        "x509-key-chain.pem",  "x509-leaf.der",       "p12-nopass.p12",  "p12-emptypass.p12",
        "pgp-ed25519-pub.asc", "pgp-ed25519-pub.gpg", "pgp-rsa-sec.gpg", "pgp-subkeys-sec.gpg"};
    (void)state;
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        kb_dbuf b = load(files[f]);
        for (size_t n = 1; n < b.len; n++) {
            int64_t t;
            expiry_kind k;
            kb_err rc = extract(&b, n, &t, &k);
            /* PEM: the leaf is last; a cut before its BEGIN line leaves key + CA (the CA's date),
             * a cut inside it breaks it, a cut in the final END line can still decode. */
            if (rc == KB_OK && t != LEAF_NOT_AFTER && t != CA_NOT_AFTER &&
                t != PGP_ED25519_EXPIRES && t != PGP_RSA_EXPIRES && t != PGP_SUBKEY_EXPIRES &&
                t != PGP_SUBKEY_PRIMARY && t != PGP_SUBKEY_FIRST)
                fail_msg("%s[:%zu]: date %lld", files[f], n, (long long)t);
            /* A binary key cut at a packet boundary after the primary's self-signature is a
             * whole key with fewer subkeys: its date may only be later (fewer parts expire). */
            bool boundary = strstr(files[f], "subkeys") != NULL &&
                            (t == PGP_SUBKEY_PRIMARY || t == PGP_SUBKEY_FIRST);
            if (rc == KB_OK && !boundary && strstr(files[f], ".pem") == NULL &&
                strstr(files[f], ".asc") == NULL)
                fail_msg("%s[:%zu]: a truncated binary gave a date", files[f], n);
            if (rc != KB_OK && rc != KB_ERR_INVALID && rc != KB_ERR_NOT_FOUND)
                fail_msg("%s[:%zu]: %s", files[f], n, kb_err_str(rc));
        }
        kb_dbuf_free(&b);
    }
}

static void malformed(void **state)
{
    int64_t t = 0;
    expiry_kind k;
    kb_dbuf b;
    (void)state;
    /* a CERTIFICATE block that is not a certificate */
    static const char bad_pem[] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_kb(expiry_extract((const uint8_t *)bad_pem, strlen(bad_pem), &t, &k), KB_ERR_INVALID);
    assert_int_equal(k, EXPIRY_X509_PEM);
    /* a good chain plus a broken certificate block: malformed as a whole */
    b = load("x509-key-chain.pem");
    assert_ok(kb_dbuf_add(&b, bad_pem, strlen(bad_pem)));
    assert_kb(extract(&b, b.len, &t, &k), KB_ERR_INVALID);
    kb_dbuf_free(&b);
    /* DER with a trailing byte: not a certificate */
    b = load("x509-leaf.der");
    assert_ok(kb_dbuf_addc(&b, 0));
    assert_kb(extract(&b, b.len, &t, &k), KB_ERR_NOT_FOUND);
    kb_dbuf_free(&b);
    /* a DER certificate with a flipped byte in notAfter's tag */
    b = load("x509-leaf.der");
    for (size_t i = 0; i + 1 < b.len; i++)
        if ((uint8_t)b.p[i] == 0x17 && (uint8_t)b.p[i + 1] == 0x0d) /* UTCTime, 13 bytes */
            b.p[i] = 0x04;
    assert_kb(extract(&b, b.len, &t, &k), KB_ERR_NOT_FOUND);
    kb_dbuf_free(&b);
    /* garbage OpenPGP: armour with bad base64, a header without colon, no END line */
    static const char *const bad_asc[] = {
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQ!!\n-----END PGP PUBLIC KEY BLOCK-----\n",
        ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nnot a header\n\nmDME\n-----END PGP PUBLIC KEY "
         "BLOCK-----\n"),
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n\n-----END PGP PRIVATE KEY BLOCK-----\n",
    };
    for (size_t i = 0; i < sizeof(bad_asc) / sizeof(bad_asc[0]); i++) {
        assert_kb(expiry_extract((const uint8_t *)bad_asc[i], strlen(bad_asc[i]), &t, &k),
                  KB_ERR_INVALID);
        assert_int_equal(k, EXPIRY_OPENPGP);
    }
    /* a good armoured key whose last base64 quantum has non-zero pad bits ("zWo=" -> "zWp=":
     * the same bytes to a lenient decoder): refused, as base64 is everywhere (lib/base64.h) */
    b = load("pgp-rsa-pub.asc");
    {
        char *q = memmem(b.p, b.len, "zWo=\n=", 6);
        assert_non_null(q);
        assert_ok(extract(&b, b.len, &t, &k));
        q[2] = 'p';
        assert_kb(extract(&b, b.len, &t, &k), KB_ERR_INVALID);
        assert_int_equal(k, EXPIRY_OPENPGP);
    }
    kb_dbuf_free(&b);
    /* binary: a key packet whose length runs past the end; a partial body length; a v9 key */
    static const uint8_t past_end[] = {0x99, 0x01, 0x00, 0x04, 0x00};
    static const uint8_t partial[] = {0xC6, 0xE1, 0x04, 0x00};
    static const uint8_t bad_version[] = {0xC6, 0x05, 0x09, 0x00, 0x00, 0x00, 0x01};
    assert_kb(expiry_extract(past_end, sizeof(past_end), &t, &k), KB_ERR_INVALID);
    assert_int_equal(k, EXPIRY_OPENPGP);
    assert_kb(expiry_extract(partial, sizeof(partial), &t, &k), KB_ERR_INVALID);
    assert_kb(expiry_extract(bad_version, sizeof(bad_version), &t, &k), KB_ERR_INVALID);
    /* a subkey's binding signature never dates the primary key: drop the primary's self-sig
     * expiry by appending nothing but garbage after a valid key: trailing garbage is malformed */
    b = load("pgp-ed25519-pub.gpg");
    assert_ok(kb_dbuf_add(&b, "\x01\x02", 2));
    assert_kb(extract(&b, b.len, &t, &k), KB_ERR_INVALID);
    kb_dbuf_free(&b);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A subkey packet (version ver, created) for the key in b. */
static void add_subkey(kb_dbuf *b, uint8_t ver, uint32_t created)
{
    uint8_t pkt[7] = {0xCE, 5, ver};
    put32(pkt + 3, created);
    assert_ok(kb_dbuf_add(b, pkt, sizeof(pkt)));
}

/* A v4 signature of type 0x18 (subkey binding) made at created, with Key Expiration Time
 * expires (0: none) and, if issuer is not NULL, an issuer key ID subpacket; sublen_extra makes
 * the last hashed subpacket claim more bytes than there are. Only the parts the parser reads. */
static void add_binding(kb_dbuf *b, uint32_t created, uint32_t expires, const uint8_t *issuer,
                        uint8_t sublen_extra)
{
    uint8_t body[64], *h;
    size_t n = 0, hl;
    body[n++] = 4;    /* version */
    body[n++] = 0x18; /* subkey binding */
    body[n++] = 22;   /* EdDSA */
    body[n++] = 8;    /* SHA-256 */
    n += 2;           /* hashed length, below */
    h = body + n;
    h[0] = 5, h[1] = 2, put32(h + 2, created), h += 6;
    if (expires)
        h[0] = 5, h[1] = 9, put32(h + 2, expires), h += 6;
    if (issuer)
        h[0] = 9, h[1] = 16, memcpy(h + 2, issuer, 8), h += 10;
    h[-6] = (uint8_t)(h[-6] + sublen_extra); /* harmless unless asked: the created subpacket */
    hl = (size_t)(h - (body + n));
    body[4] = 0;
    body[5] = (uint8_t)hl;
    n += hl;
    body[n++] = 0; /* unhashed length */
    body[n++] = 0;
    uint8_t hdr[2] = {0xC2, (uint8_t)n};
    assert_ok(kb_dbuf_add(b, hdr, 2));
    assert_ok(kb_dbuf_add(b, body, n));
}

/* Subkeys: the most recent binding by the primary key dates a subkey; bindings by another key are
 * ignored; the earliest of primary and subkeys wins; malformed subkeys and bindings refused. */
static void openpgp_subkeys(void **state)
{
    static const uint8_t other[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const uint32_t c = 1800000000; /* after the fixture's primary key, before it expires */
    int64_t t = 0;
    expiry_kind k;
    kb_dbuf b;
    (void)state;
    /* a subkey bound for 1000 days: earlier than the primary's 2030 */
    b = load("pgp-ed25519-pub.gpg");
    add_subkey(&b, 4, c);
    add_binding(&b, c, 1000 * 86400, NULL, 0);
    assert_ok(extract(&b, b.len, &t, &k));
    assert_int_equal(t, (int64_t)c + 1000 * 86400);
    /* a newer binding without expiry: the subkey no longer expires, the primary's date wins */
    add_binding(&b, c + 10, 0, NULL, 0);
    assert_ok(extract(&b, b.len, &t, &k));
    assert_int_equal(t, PGP_ED25519_EXPIRES);
    kb_dbuf_free(&b);
    /* a binding made by another key: ignored */
    b = load("pgp-ed25519-pub.gpg");
    add_subkey(&b, 4, c);
    add_binding(&b, c, 10 * 86400, other, 0);
    assert_ok(extract(&b, b.len, &t, &k));
    assert_int_equal(t, PGP_ED25519_EXPIRES);
    kb_dbuf_free(&b);
    /* the GnuPG-made fixture again, binary secret key: a subkey is the earliest */
    b = load("pgp-subkeys-sec.gpg");
    assert_ok(extract(&b, b.len, &t, &k));
    assert_int_equal(t, PGP_SUBKEY_EXPIRES);
    kb_dbuf_free(&b);
    /* a v3 subkey (they do not exist): malformed */
    b = load("pgp-ed25519-pub.gpg");
    add_subkey(&b, 3, c);
    assert_kb(extract(&b, b.len, &t, &k), KB_ERR_INVALID);
    assert_int_equal(k, EXPIRY_OPENPGP);
    kb_dbuf_free(&b);
    /* a binding whose subpacket runs past its area: malformed */
    b = load("pgp-ed25519-pub.gpg");
    add_subkey(&b, 4, c);
    add_binding(&b, c, 1000 * 86400, NULL, 40);
    assert_kb(extract(&b, b.len, &t, &k), KB_ERR_INVALID);
    kb_dbuf_free(&b);
    /* a subkey packet too short for its creation time */
    b = load("pgp-ed25519-pub.gpg");
    assert_ok(kb_dbuf_add(&b, "\xCE\x02\x04\x00", 4));
    assert_kb(extract(&b, b.len, &t, &k), KB_ERR_INVALID);
    kb_dbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(x509),
        cmocka_unit_test(pkcs12),
        cmocka_unit_test(openpgp),
        cmocka_unit_test(not_recognised),
        cmocka_unit_test(truncated),
        cmocka_unit_test(malformed),
        cmocka_unit_test(openpgp_subkeys),
    };
    if (kb_secmem_init() != KB_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
