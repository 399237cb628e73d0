/* sigv4.c - AWS Signature Version 4: canonical request, string to sign, signing, verification.
 *
 * Reference: AWS IAM User Guide, "Create a signed AWS API request" / "Elements of an AWS API
 * request signature" (Signature Version 4), and the aws-c-auth v4 test suite.
 */
#include "sigv4.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_TERMINATOR "aws4_request"
#define SHA256_HEX_LEN 64
/* Secret access keys up to this length are combined with "AWS4" on the stack (wiped). */
#define SIGV4_STACK_SECRET_MAX 256

/* ---------------------------------------------------------------- small helpers */

static int is_unreserved(uint8_t c)
{
    /* RFC 3986 2.3 unreserved characters; AWS: "URI-encode every byte except the unreserved
     * characters: 'A'-'Z', 'a'-'z', '0'-'9', '-', '.', '_', and '~'". */
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* RFC 7230 3.2.6 tchar: what a header name may contain. */
static int is_tchar(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_ws(uint8_t c)
{
    /* Botocore trims and collapses any whitespace (str.split()); HTTP values only hold SP and
     * HTAB once obs-fold is unfolded, CR/LF are here for values that kept a fold. */
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static uint8_t lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c - 'A' + 'a') : c;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static kb_err uri_encode(kb_dbuf *out, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF"; /* AWS: uppercase hex digits */
    for (size_t i = 0; i < n; i++) {
        if (is_unreserved(p[i])) {
            KB_GUARD(kb_dbuf_addc(out, (char)p[i]));
        } else {
            char e[3] = {'%', hex[p[i] >> 4], hex[p[i] & 15]};
            KB_GUARD(kb_dbuf_add(out, e, 3));
        }
    }
    return KB_OK;
}

kb_err kb_sigv4_uri_encode(kb_dbuf *out, const char *s, size_t n)
{
    KB_ENSURE_REF(out);
    KB_ENSURE(s != NULL || n == 0, KB_ERR_NULL);
    return uri_encode(out, (const uint8_t *)s, n);
}

/* Percent-decode then URI-encode: a query component received encoded (or not) comes out in
 * the one canonical encoding. A '%' not followed by two hex digits is malformed. */
static kb_err uri_reencode(kb_dbuf *out, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '%') {
            int hi, lo;
            KB_ENSURE(i + 2 < n, KB_ERR_INVALID);
            hi = hexval(p[i + 1]);
            lo = hexval(p[i + 2]);
            KB_ENSURE(hi >= 0 && lo >= 0, KB_ERR_INVALID);
            c = (uint8_t)(hi << 4 | lo);
            i += 2;
        }
        KB_GUARD(uri_encode(out, &c, 1));
    }
    return KB_OK;
}

/* SHA-256 fetched once: OpenSSL 3's SHA256() one-shot fetches the algorithm (a lookup under a
 * lock) on every call, and a verification hashes twice per request. */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void sha256_hex(const void *p, size_t n, char out[SHA256_HEX_LEN + 1])
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    (void)pthread_once(&sha256_once, sha256_fetch);
    if (sha256_md == NULL || EVP_Digest(p, n, md, NULL, sha256_md, NULL) != 1)
        SHA256(p, n, md);
    kb_hex(md, sizeof(md), out);
}

/* HMAC-SHA256 (RFC 2104) on the SHA-256 fetched once: OpenSSL 3's HMAC() one-shot fetches both
 * the HMAC and the digest algorithms on every call (EVP_Q_mac), about 24,000 instructions of a
 * GetSecretValue's verification; this costs the four compressions and one digest context.
 * Falls back to HMAC() if the fetch failed. Pads and the inner hash are wiped. */
#define HMAC_BLOCK 64
static kb_err hmac256(const void *key, size_t klen, const void *data, size_t dlen, uint8_t out[32])
{
    uint8_t k[HMAC_BLOCK], pad[HMAC_BLOCK], inner[SHA256_DIGEST_LENGTH];
    unsigned int olen = 0;
    EVP_MD_CTX *ctx = NULL;
    kb_err rc = KB_ERR_CRYPTO;

    KB_ENSURE(klen <= (size_t)INT32_MAX, KB_ERR_TOO_LARGE);
    (void)pthread_once(&sha256_once, sha256_fetch);
    if (sha256_md == NULL) {
        if (HMAC(EVP_sha256(), key, (int)klen, data, dlen, out, &olen) == NULL || olen != 32)
            return KB_ERR_CRYPTO;
        return KB_OK;
    }
    memset(k, 0, sizeof(k));
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        goto out;
    if (klen > HMAC_BLOCK) { /* a long key is hashed first */
        if (EVP_DigestInit_ex2(ctx, sha256_md, NULL) != 1 ||
            EVP_DigestUpdate(ctx, key, klen) != 1 || EVP_DigestFinal_ex(ctx, k, &olen) != 1)
            goto out;
    } else if (klen > 0) {
        memcpy(k, key, klen);
    }
    for (size_t i = 0; i < HMAC_BLOCK; i++)
        pad[i] = (uint8_t)(k[i] ^ 0x36);
    if (EVP_DigestInit_ex2(ctx, sha256_md, NULL) != 1 ||
        EVP_DigestUpdate(ctx, pad, sizeof(pad)) != 1 ||
        (dlen > 0 && EVP_DigestUpdate(ctx, data, dlen) != 1) ||
        EVP_DigestFinal_ex(ctx, inner, &olen) != 1 || olen != sizeof(inner))
        goto out;
    for (size_t i = 0; i < HMAC_BLOCK; i++)
        pad[i] = (uint8_t)(k[i] ^ 0x5c);
    if (EVP_DigestInit_ex2(ctx, sha256_md, NULL) != 1 ||
        EVP_DigestUpdate(ctx, pad, sizeof(pad)) != 1 ||
        EVP_DigestUpdate(ctx, inner, sizeof(inner)) != 1 ||
        EVP_DigestFinal_ex(ctx, out, &olen) != 1 || olen != 32)
        goto out;
    rc = KB_OK;
out:
    EVP_MD_CTX_free(ctx);
    kb_wipe(k, sizeof(k));
    kb_wipe(pad, sizeof(pad));
    kb_wipe(inner, sizeof(inner));
    return rc;
}

static int header_is(const kb_sigv4_header *h, const char *lname)
{
    size_t n = strlen(lname);
    if (h->name_len != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((uint8_t)h->name[i]) != (uint8_t)lname[i])
            return 0;
    return 1;
}

/* The single header named lname: KB_ERR_NOT_FOUND if absent, KB_ERR_INVALID if repeated. */
static kb_err find_one(const kb_sigv4_request *r, const char *lname, const kb_sigv4_header **out)
{
    *out = NULL;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (header_is(&r->headers[i], lname)) {
            KB_ENSURE(*out == NULL, KB_ERR_INVALID);
            *out = &r->headers[i];
        }
    }
    return *out ? KB_OK : KB_ERR_NOT_FOUND;
}

static kb_err check_headers(const kb_sigv4_request *r)
{
    KB_ENSURE(r->n_headers <= KB_SIGV4_MAX_HEADERS, KB_ERR_TOO_LARGE);
    KB_ENSURE(r->n_headers == 0 || r->headers != NULL, KB_ERR_NULL);
    for (size_t i = 0; i < r->n_headers; i++) {
        const kb_sigv4_header *h = &r->headers[i];
        KB_ENSURE(h->name != NULL && (h->value != NULL || h->value_len == 0), KB_ERR_NULL);
        KB_ENSURE(h->name_len > 0 && h->name_len <= KB_SIGV4_MAX_NAME, KB_ERR_INVALID);
        for (size_t j = 0; j < h->name_len; j++)
            KB_ENSURE(is_tchar((uint8_t)h->name[j]), KB_ERR_INVALID);
    }
    return KB_OK;
}

/* ---------------------------------------------------------------- canonical request parts */

typedef struct {
    const uint8_t *p;
    size_t n;
} span;

/* CanonicalURI. Without normalization every segment is encoded as is (S3). With it, empty and
 * "." segments are dropped and ".." removes the previous one (RFC 3986 5.2.4, as the AWS SDKs
 * implement it); the leading '/' stays, and a trailing '/' stays when any segment remains. */
static kb_err canonical_path(kb_dbuf *out, const char *path, int normalize)
{
    size_t len = strlen(path);
    const uint8_t *p = (const uint8_t *)path;
    span *segs = NULL;
    size_t nseg = 0, cap = 1;
    kb_err rc = KB_OK;

    if (len == 0)
        return kb_dbuf_addc(out, '/');
    KB_ENSURE(path[0] == '/', KB_ERR_INVALID); /* origin-form only (RFC 7230 5.3.1) */
    if (!normalize) {
        size_t start = 0;
        for (size_t i = 0; i <= len; i++) {
            if (i == len || p[i] == '/') {
                KB_GUARD(uri_encode(out, p + start, i - start));
                if (i < len)
                    KB_GUARD(kb_dbuf_addc(out, '/'));
                start = i + 1;
            }
        }
        return KB_OK;
    }
    for (size_t i = 0; i < len; i++)
        cap += p[i] == '/';
    segs = calloc(cap, sizeof(*segs));
    KB_ENSURE(segs != NULL, KB_ERR_NOMEM);
    for (size_t i = 1, start = 1; i <= len; i++) {
        if (i < len && p[i] != '/')
            continue;
        size_t n = i - start;
        const uint8_t *s = p + start;
        start = i + 1;
        if (n == 0 || (n == 1 && s[0] == '.'))
            continue;
        if (n == 2 && s[0] == '.' && s[1] == '.') {
            if (nseg > 0)
                nseg--;
            continue;
        }
        segs[nseg].p = s;
        segs[nseg].n = n;
        nseg++;
    }
    KB_GUARD_OUT(rc, kb_dbuf_addc(out, '/'));
    for (size_t i = 0; i < nseg; i++) {
        if (i > 0)
            KB_GUARD_OUT(rc, kb_dbuf_addc(out, '/'));
        KB_GUARD_OUT(rc, uri_encode(out, segs[i].p, segs[i].n));
    }
    if (nseg > 0 && path[len - 1] == '/')
        KB_GUARD_OUT(rc, kb_dbuf_addc(out, '/'));
out:
    free(segs);
    return rc;
}

typedef struct {
    char *k;
    char *v;
} qparam;

static int qparam_cmp(const void *a, const void *b)
{
    const qparam *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : strcmp(x->v, y->v);
}

/* CanonicalQueryString: parameters split on '&' (empty ones dropped), name and value split on
 * the first '=', each re-encoded, sorted by encoded name then value (byte order), joined as
 * name=value with '&'. A name without '=' gets an empty value. */
static kb_err canonical_query(kb_dbuf *out, const char *query)
{
    size_t len = strlen(query), cap = 1, n = 0;
    qparam *ps;
    kb_err rc = KB_OK;

    if (len == 0)
        return KB_OK;
    for (size_t i = 0; i < len; i++)
        cap += query[i] == '&';
    ps = calloc(cap, sizeof(*ps));
    KB_ENSURE(ps != NULL, KB_ERR_NOMEM);
    for (size_t i = 0, start = 0; i <= len; i++) {
        if (i < len && query[i] != '&')
            continue;
        const uint8_t *s = (const uint8_t *)query + start;
        size_t sn = i - start, eq = 0;
        kb_dbuf k, v;
        start = i + 1;
        if (sn == 0)
            continue;
        while (eq < sn && s[eq] != '=')
            eq++;
        kb_dbuf_init(&k, out->max);
        kb_dbuf_init(&v, out->max);
        rc = uri_reencode(&k, s, eq);
        if (rc == KB_OK && eq < sn)
            rc = uri_reencode(&v, s + eq + 1, sn - eq - 1);
        if (rc == KB_OK) {
            ps[n].k = kb_dbuf_steal(&k, NULL);
            ps[n].v = kb_dbuf_steal(&v, NULL);
            if (ps[n].k == NULL)
                ps[n].k = strdup("");
            if (ps[n].v == NULL)
                ps[n].v = strdup("");
            n++;
            if (ps[n - 1].k == NULL || ps[n - 1].v == NULL)
                rc = KB_ERR_NOMEM;
        }
        kb_dbuf_free(&k);
        kb_dbuf_free(&v);
        if (rc != KB_OK)
            goto out;
    }
    qsort(ps, n, sizeof(*ps), qparam_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            KB_GUARD_OUT(rc, kb_dbuf_addc(out, '&'));
        KB_GUARD_OUT(rc, kb_dbuf_addstr(out, ps[i].k));
        KB_GUARD_OUT(rc, kb_dbuf_addc(out, '='));
        KB_GUARD_OUT(rc, kb_dbuf_addstr(out, ps[i].v));
    }
out:
    for (size_t i = 0; i < n; i++) {
        free(ps[i].k);
        free(ps[i].v);
    }
    free(ps);
    return rc;
}

/* Trimall: leading and trailing whitespace removed, inner runs collapsed to one space. */
static kb_err add_trimmed(kb_dbuf *out, const char *v, size_t n)
{
    size_t i = 0;
    int pending_space = 0, any = 0;
    for (; i < n; i++) {
        uint8_t c = (uint8_t)v[i];
        if (is_ws(c)) {
            pending_space = any;
            continue;
        }
        if (pending_space)
            KB_GUARD(kb_dbuf_addc(out, ' '));
        KB_GUARD(kb_dbuf_addc(out, (char)c));
        pending_space = 0;
        any = 1;
    }
    return KB_OK;
}

/* Signed header names must be lowercase tokens in strictly ascending order (the form that
 * SignedHeaders takes), so the list is canonical and no header is counted twice. */
static kb_err check_signed_list(const char *const *names, size_t n)
{
    KB_ENSURE(n > 0 && n <= KB_SIGV4_MAX_SIGNED, KB_ERR_INVALID);
    KB_ENSURE_REF(names);
    for (size_t i = 0; i < n; i++) {
        KB_ENSURE_REF(names[i]);
        size_t len = strlen(names[i]);
        KB_ENSURE(len > 0 && len <= KB_SIGV4_MAX_NAME, KB_ERR_INVALID);
        for (size_t j = 0; j < len; j++) {
            uint8_t c = (uint8_t)names[i][j];
            KB_ENSURE(is_tchar(c) && lower(c) == c, KB_ERR_INVALID);
        }
        KB_ENSURE(i == 0 || strcmp(names[i - 1], names[i]) < 0, KB_ERR_INVALID);
    }
    return KB_OK;
}

kb_err kb_sigv4_canonical_request(const kb_sigv4_request *r, const char *const *signed_headers,
                                  size_t n_signed, int normalize_path, const char *payload_hash_hex,
                                  kb_dbuf *out)
{
    char body_hash[SHA256_HEX_LEN + 1];

    KB_ENSURE_REF(r);
    KB_ENSURE_REF(out);
    KB_ENSURE_REF(r->method);
    KB_ENSURE_REF(r->path);
    KB_ENSURE(r->body != NULL || r->body_len == 0, KB_ERR_NULL);
    KB_GUARD(check_headers(r));
    KB_GUARD(check_signed_list(signed_headers, n_signed));
    KB_ENSURE(r->method[0] != '\0', KB_ERR_INVALID);
    for (const char *m = r->method; *m; m++)
        KB_ENSURE(is_tchar((uint8_t)*m), KB_ERR_INVALID);

    /* HTTPMethod \n CanonicalURI \n CanonicalQueryString \n */
    KB_GUARD(kb_dbuf_addstr(out, r->method));
    KB_GUARD(kb_dbuf_addc(out, '\n'));
    KB_GUARD(canonical_path(out, r->path, normalize_path));
    KB_GUARD(kb_dbuf_addc(out, '\n'));
    KB_GUARD(canonical_query(out, r->query ? r->query : ""));
    KB_GUARD(kb_dbuf_addc(out, '\n'));

    /* CanonicalHeaders: name:value\n for each signed name; repeated headers joined by ','. */
    for (size_t i = 0; i < n_signed; i++) {
        int found = 0;
        KB_GUARD(kb_dbuf_addstr(out, signed_headers[i]));
        KB_GUARD(kb_dbuf_addc(out, ':'));
        for (size_t j = 0; j < r->n_headers; j++) {
            const kb_sigv4_header *h = &r->headers[j];
            if (!header_is(h, signed_headers[i]))
                continue;
            if (found)
                KB_GUARD(kb_dbuf_addc(out, ','));
            KB_GUARD(add_trimmed(out, h->value, h->value_len));
            found = 1;
        }
        KB_ENSURE(found, KB_ERR_INVALID); /* a signed header the request does not carry */
        KB_GUARD(kb_dbuf_addc(out, '\n'));
    }
    KB_GUARD(kb_dbuf_addc(out, '\n'));

    /* SignedHeaders \n HashedPayload */
    for (size_t i = 0; i < n_signed; i++) {
        if (i > 0)
            KB_GUARD(kb_dbuf_addc(out, ';'));
        KB_GUARD(kb_dbuf_addstr(out, signed_headers[i]));
    }
    KB_GUARD(kb_dbuf_addc(out, '\n'));
    if (payload_hash_hex == NULL) {
        const kb_sigv4_header *h;
        kb_err e = find_one(r, "x-amz-content-sha256", &h);
        if (e == KB_OK) {
            KB_ENSURE(h->value_len > 0, KB_ERR_INVALID);
            return kb_dbuf_add(out, h->value, h->value_len);
        }
        KB_ENSURE(e == KB_ERR_NOT_FOUND, e);
        sha256_hex(r->body, r->body_len, body_hash);
        payload_hash_hex = body_hash;
    }
    return kb_dbuf_addstr(out, payload_hash_hex);
}

kb_err kb_sigv4_string_to_sign(const char *amz_date, const char *scope,
                               const char *canonical_request, size_t cr_len, kb_dbuf *out)
{
    char h[SHA256_HEX_LEN + 1];

    KB_ENSURE_REF(amz_date);
    KB_ENSURE_REF(scope);
    KB_ENSURE_REF(out);
    KB_ENSURE(canonical_request != NULL || cr_len == 0, KB_ERR_NULL);
    sha256_hex(canonical_request, cr_len, h);
    return kb_dbuf_addf(out, SIGV4_ALGORITHM "\n%s\n%s\n%s", amz_date, scope, h);
}

kb_err kb_sigv4_signing_key(const kb_secret *secret_key, const char *date8, const char *region,
                            const char *service, uint8_t out[32])
{
    kb_secret *k0 = NULL;
    uint8_t a[32], b[32], stack_k0[4 + SIGV4_STACK_SECRET_MAX];
    const uint8_t *k0p;
    size_t k0_len;
    kb_err rc = KB_OK;

    KB_ENSURE_REF(secret_key);
    KB_ENSURE_REF(date8);
    KB_ENSURE_REF(region);
    KB_ENSURE_REF(service);
    KB_ENSURE_REF(out);
    /* kSecret = "AWS4" + secret access key. Every request a server verifies derives a signing
     * key, and a locked mapping per call (mmap + mlock + munmap) cost more than the HMACs: keys
     * of usual size (AWS's are 40 characters) go through a stack buffer wiped below instead, as
     * the other stack temporaries here; longer ones through locked memory. */
    k0_len = 4 + kb_secret_len(secret_key);
    if (kb_secret_len(secret_key) <= SIGV4_STACK_SECRET_MAX) {
        memcpy(stack_k0, "AWS4", 4);
        if (kb_secret_len(secret_key) > 0)
            memcpy(stack_k0 + 4, kb_secret_cdata(secret_key), kb_secret_len(secret_key));
        k0p = stack_k0;
    } else {
        KB_GUARD(kb_secret_new(k0_len, &k0));
        memcpy(kb_secret_data(k0), "AWS4", 4);
        memcpy(kb_secret_data(k0) + 4, kb_secret_cdata(secret_key), kb_secret_len(secret_key));
        k0p = kb_secret_cdata(k0);
    }
    /* kDate, kRegion, kService, kSigning; intermediates wiped on every path. */
    KB_GUARD_OUT(rc, hmac256(k0p, k0_len, date8, strlen(date8), a));
    KB_GUARD_OUT(rc, hmac256(a, sizeof(a), region, strlen(region), b));
    KB_GUARD_OUT(rc, hmac256(b, sizeof(b), service, strlen(service), a));
    KB_GUARD_OUT(rc, hmac256(a, sizeof(a), SIGV4_TERMINATOR, strlen(SIGV4_TERMINATOR), out));
out:
    kb_wipe(a, sizeof(a));
    kb_wipe(b, sizeof(b));
    kb_wipe(stack_k0, sizeof(stack_k0));
    kb_secret_free(k0);
    if (rc != KB_OK)
        kb_wipe(out, 32);
    return rc;
}

kb_err kb_sigv4_format_date(time_t t, char amz_date[17])
{
    struct tm tm;
    KB_ENSURE_REF(amz_date);
    KB_ENSURE(gmtime_r(&t, &tm) != NULL, KB_ERR_INVALID);
    KB_ENSURE(tm.tm_year >= 0 - 1900 + 1 && tm.tm_year <= 9999 - 1900, KB_ERR_INVALID);
    KB_ENSURE(strftime(amz_date, 17, "%Y%m%dT%H%M%SZ", &tm) == 16, KB_ERR_INVALID);
    return KB_OK;
}

kb_err kb_sigv4_parse_date(const char *s, size_t len, time_t *out)
{
    struct tm tm;
    int v[6];
    static const int pos[6] = {0, 4, 6, 9, 11, 13}, width[6] = {4, 2, 2, 2, 2, 2};
    char back[17];

    KB_ENSURE_REF(s);
    KB_ENSURE_REF(out);
    KB_ENSURE(len == 16 && s[8] == 'T' && s[15] == 'Z', KB_ERR_INVALID);
    for (int f = 0; f < 6; f++) {
        v[f] = 0;
        for (int i = 0; i < width[f]; i++) {
            char c = s[pos[f] + i];
            KB_ENSURE(c >= '0' && c <= '9', KB_ERR_INVALID);
            v[f] = v[f] * 10 + (c - '0');
        }
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = v[0] - 1900;
    tm.tm_mon = v[1] - 1;
    tm.tm_mday = v[2];
    tm.tm_hour = v[3];
    tm.tm_min = v[4];
    tm.tm_sec = v[5];
    *out = timegm(&tm);
    /* timegm normalizes out-of-range fields (Feb 30, 25:00); a round trip rejects them. */
    KB_ENSURE(kb_sigv4_format_date(*out, back) == KB_OK && memcmp(back, s, 16) == 0,
              KB_ERR_INVALID);
    return KB_OK;
}

/* ---------------------------------------------------------------- signing */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Signature hex of an already-built canonical request, with a derived signing key. */
static kb_err signature_with_key(const uint8_t key[32], const char *amz_date, const char *region,
                                 const char *service, const kb_dbuf *cr,
                                 char sig_hex[SHA256_HEX_LEN + 1])
{
    char scope[3 * KB_SIGV4_MAX_SCOPE_PART + 32];
    uint8_t mac[32];
    kb_dbuf sts;
    kb_err rc = KB_OK;
    int n;

    kb_dbuf_init(&sts, 1024);
    n = snprintf(scope, sizeof(scope), "%.8s/%s/%s/" SIGV4_TERMINATOR, amz_date, region, service);
    KB_ENSURE_OUT(rc, n > 0 && (size_t)n < sizeof(scope), KB_ERR_INVALID);
    KB_GUARD_OUT(rc, kb_sigv4_string_to_sign(amz_date, scope, kb_dbuf_str(cr), cr->len, &sts));
    KB_GUARD_OUT(rc, hmac256(key, 32, sts.p, sts.len, mac));
    kb_hex(mac, sizeof(mac), sig_hex);
out:
    kb_wipe(mac, sizeof(mac));
    kb_dbuf_free(&sts);
    return rc;
}

/* Signature hex of an already-built canonical request. */
static kb_err compute_signature(const kb_secret *secret_key, const char *amz_date,
                                const char *region, const char *service, const kb_dbuf *cr,
                                char sig_hex[SHA256_HEX_LEN + 1])
{
    char date8[9];
    uint8_t key[32];
    kb_err rc = KB_OK;

    memcpy(date8, amz_date, 8);
    date8[8] = '\0';
    KB_GUARD_OUT(rc, kb_sigv4_signing_key(secret_key, date8, region, service, key));
    KB_GUARD_OUT(rc, signature_with_key(key, amz_date, region, service, cr, sig_hex));
out:
    kb_wipe(key, sizeof(key));
    return rc;
}

/* ---------------------------------------------------------------- signing key cache */

typedef struct {
    int used;
    const kb_secret *secret; /* identity only, never dereferenced */
    size_t secret_len;
    char akid[KB_SIGV4_MAX_SCOPE_PART + 1];
    char date8[9];
    char region[KB_SIGV4_MAX_SCOPE_PART + 1];
    char service[KB_SIGV4_MAX_SCOPE_PART + 1];
} key_slot;

struct kb_sigv4_key_cache {
    pthread_mutex_t mu;
    size_t n, next;
    key_slot *slots;
    kb_secret *keys; /* n * 32 bytes, locked */
    uint64_t hits, misses;
};

kb_err kb_sigv4_key_cache_new(size_t slots, kb_sigv4_key_cache **out)
{
    kb_sigv4_key_cache *c;
    kb_err rc = KB_OK;
    KB_ENSURE_REF(out);
    *out = NULL;
    KB_ENSURE(slots >= 1 && slots <= KB_SIGV4_KEY_CACHE_MAX, KB_ERR_INVALID);
    c = calloc(1, sizeof(*c));
    KB_ENSURE(c != NULL, KB_ERR_NOMEM);
    c->n = slots;
    c->slots = calloc(slots, sizeof(*c->slots));
    KB_ENSURE_OUT(rc, c->slots != NULL, KB_ERR_NOMEM);
    KB_GUARD_OUT(rc, kb_secret_new(slots * 32, &c->keys));
    KB_ENSURE_OUT(rc, pthread_mutex_init(&c->mu, NULL) == 0, KB_ERR_INTERNAL);
    *out = c;
    return KB_OK;
out:
    kb_secret_free(c->keys);
    free(c->slots);
    free(c);
    return rc;
}

void kb_sigv4_key_cache_free(kb_sigv4_key_cache *c)
{
    if (c == NULL)
        return;
    pthread_mutex_destroy(&c->mu);
    kb_secret_free(c->keys); /* wipes */
    free(c->slots);
    free(c);
}

void kb_sigv4_key_cache_stats(kb_sigv4_key_cache *c, uint64_t *hits, uint64_t *misses)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    if (hits)
        *hits = c->hits;
    if (misses)
        *misses = c->misses;
    pthread_mutex_unlock(&c->mu);
}

static int slot_is(const key_slot *k, const kb_secret *secret, const char *akid, const char *date8,
                   const char *region, const char *service)
{
    return k->used && k->secret == secret && k->secret_len == kb_secret_len(secret) &&
           strcmp(k->akid, akid) == 0 && memcmp(k->date8, date8, 8) == 0 &&
           strcmp(k->region, region) == 0 && strcmp(k->service, service) == 0;
}

/* Copy the cached key into key; 0 when there is none. */
static int key_cache_get(kb_sigv4_key_cache *c, const kb_secret *secret, const char *akid,
                         const char *date8, const char *region, const char *service,
                         uint8_t key[32])
{
    int found = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n; i++) {
        if (slot_is(&c->slots[i], secret, akid, date8, region, service)) {
            memcpy(key, kb_secret_cdata(c->keys) + i * 32, 32);
            found = 1;
            break;
        }
    }
    if (found)
        c->hits++;
    else
        c->misses++;
    pthread_mutex_unlock(&c->mu);
    return found;
}

static void key_cache_put(kb_sigv4_key_cache *c, const kb_secret *secret, const char *akid,
                          const char *date8, const char *region, const char *service,
                          const uint8_t key[32])
{
    key_slot *k;
    size_t i, n = c->n; /* fixed at creation: 1..KB_SIGV4_KEY_CACHE_MAX */
    /* The scope parts were length-checked by parse_credential; refuse anything longer anyway. */
    if (strlen(akid) > KB_SIGV4_MAX_SCOPE_PART || strlen(region) > KB_SIGV4_MAX_SCOPE_PART ||
        strlen(service) > KB_SIGV4_MAX_SCOPE_PART || n == 0)
        return;
    pthread_mutex_lock(&c->mu);
    for (i = 0; i < n; i++) /* another thread may have added it meanwhile */
        if (slot_is(&c->slots[i], secret, akid, date8, region, service))
            goto out;
    i = c->next;
    c->next = (c->next + 1) % n;
    k = &c->slots[i];
    k->used = 1;
    k->secret = secret;
    k->secret_len = kb_secret_len(secret);
    memcpy(k->akid, akid, strlen(akid) + 1);
    memcpy(k->date8, date8, 8);
    k->date8[8] = '\0';
    memcpy(k->region, region, strlen(region) + 1);
    memcpy(k->service, service, strlen(service) + 1);
    memcpy(kb_secret_data(c->keys) + i * 32, key, 32);
out:
    pthread_mutex_unlock(&c->mu);
}

/* A scope part (access key id, region, service) must be short and plain, so it cannot break
 * the Credential syntax or the scope string. */
static int scope_part_ok(const char *s, size_t n, int lowercase_only)
{
    if (n == 0 || n > KB_SIGV4_MAX_SCOPE_PART - 1)
        return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 (lowercase_only ? c == '-' : (c >= 'A' && c <= 'Z') || c == '-' || c == '_');
        if (!ok)
            return 0;
    }
    return 1;
}

kb_err kb_sigv4_sign(const kb_sigv4_request *r, const kb_sigv4_params *p, kb_dbuf *authorization,
                     char amz_date[17])
{
    kb_sigv4_header *hs = NULL;
    char(*lnames)[KB_SIGV4_MAX_NAME + 1] = NULL;
    const char **names = NULL;
    size_t nh, nn = 0;
    kb_sigv4_request ext;
    kb_dbuf cr;
    char date[17], sig[SHA256_HEX_LEN + 1];
    kb_err rc = KB_OK;

    KB_ENSURE_REF(r);
    KB_ENSURE_REF(p);
    KB_ENSURE_REF(authorization);
    KB_ENSURE_REF(amz_date);
    KB_ENSURE_REF(p->access_key_id);
    KB_ENSURE_REF(p->secret_key);
    KB_ENSURE_REF(p->region);
    KB_ENSURE_REF(p->service);
    KB_GUARD(check_headers(r));
    KB_ENSURE(scope_part_ok(p->access_key_id, strlen(p->access_key_id), 0), KB_ERR_INVALID);
    KB_ENSURE(scope_part_ok(p->region, strlen(p->region), 1), KB_ERR_INVALID);
    KB_ENSURE(scope_part_ok(p->service, strlen(p->service), 1), KB_ERR_INVALID);
    for (size_t i = 0; i < r->n_headers; i++) {
        const kb_sigv4_header *h = &r->headers[i];
        KB_ENSURE(!header_is(h, "authorization") && !header_is(h, "x-amz-date") &&
                      !(p->session_token && header_is(h, "x-amz-security-token")),
                  KB_ERR_INVALID);
    }
    KB_GUARD(kb_sigv4_format_date(p->now, date));

    kb_dbuf_init(&cr, KB_SIGV4_MAX_CANONICAL);
    /* The request as signed: the caller's headers plus X-Amz-Date (and the session token). */
    nh = r->n_headers + 2;
    hs = calloc(nh, sizeof(*hs));
    lnames = calloc(nh, sizeof(*lnames));
    names = calloc(nh, sizeof(*names));
    KB_ENSURE_OUT(rc, hs && lnames && names, KB_ERR_NOMEM);
    if (r->n_headers)
        memcpy(hs, r->headers, r->n_headers * sizeof(*hs));
    nh = r->n_headers;
    hs[nh++] = (kb_sigv4_header){"X-Amz-Date", 10, date, 16};
    if (p->session_token)
        hs[nh++] = (kb_sigv4_header){"X-Amz-Security-Token", 20, p->session_token,
                                     strlen(p->session_token)};
    ext = *r;
    ext.headers = hs;
    ext.n_headers = nh;

    /* SignedHeaders: every header name, lowercased, sorted, once. */
    for (size_t i = 0; i < nh; i++) {
        for (size_t j = 0; j < hs[i].name_len; j++)
            lnames[i][j] = (char)lower((uint8_t)hs[i].name[j]);
        lnames[i][hs[i].name_len] = '\0';
        names[i] = lnames[i];
    }
    qsort(names, nh, sizeof(*names), name_cmp);
    for (size_t i = 0; i < nh; i++)
        if (nn == 0 || strcmp(names[nn - 1], names[i]) != 0)
            names[nn++] = names[i];
    KB_ENSURE_OUT(rc, nn <= KB_SIGV4_MAX_SIGNED, KB_ERR_TOO_LARGE);

    KB_GUARD_OUT(rc, kb_sigv4_canonical_request(&ext, names, nn, p->normalize_path, NULL, &cr));
    KB_GUARD_OUT(rc, compute_signature(p->secret_key, date, p->region, p->service, &cr, sig));
    KB_GUARD_OUT(rc, kb_dbuf_addf(authorization, SIGV4_ALGORITHM " Credential=%s/%.8s/%s/%s/",
                                  p->access_key_id, date, p->region, p->service));
    KB_GUARD_OUT(rc, kb_dbuf_addstr(authorization, SIGV4_TERMINATOR ", SignedHeaders="));
    for (size_t i = 0; i < nn; i++) {
        if (i > 0)
            KB_GUARD_OUT(rc, kb_dbuf_addc(authorization, ';'));
        KB_GUARD_OUT(rc, kb_dbuf_addstr(authorization, names[i]));
    }
    KB_GUARD_OUT(rc, kb_dbuf_addf(authorization, ", Signature=%s", sig));
    memcpy(amz_date, date, 17);
out:
    kb_dbuf_free(&cr);
    free(hs);
    free(lnames);
    free(names);
    return rc;
}

/* ---------------------------------------------------------------- verification */

typedef struct {
    char akid[KB_SIGV4_MAX_SCOPE_PART];
    char date8[9];
    char region[KB_SIGV4_MAX_SCOPE_PART];
    char service[KB_SIGV4_MAX_SCOPE_PART];
    char names_buf[KB_SIGV4_MAX_AUTH_LEN];
    const char *names[KB_SIGV4_MAX_SIGNED];
    size_t n_names;
    char sig[SHA256_HEX_LEN + 1];
} auth_parts;

static kb_err copy_part(char *dst, size_t cap, const char *s, size_t n, int lowercase_only)
{
    KB_ENSURE(n < cap && scope_part_ok(s, n, lowercase_only), KB_ERR_INVALID);
    memcpy(dst, s, n);
    dst[n] = '\0';
    return KB_OK;
}

/* Credential=AKID/YYYYMMDD/region/service/aws4_request */
static kb_err parse_credential(auth_parts *a, const char *s, size_t n)
{
    const char *f[5];
    size_t fl[5], k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '/')
            continue;
        KB_ENSURE(k < 5, KB_ERR_INVALID);
        f[k] = s + start;
        fl[k] = i - start;
        k++;
        start = i + 1;
    }
    KB_ENSURE(k == 5, KB_ERR_INVALID);
    KB_GUARD(copy_part(a->akid, sizeof(a->akid), f[0], fl[0], 0));
    KB_ENSURE(fl[1] == 8, KB_ERR_INVALID);
    for (size_t i = 0; i < 8; i++)
        KB_ENSURE(f[1][i] >= '0' && f[1][i] <= '9', KB_ERR_INVALID);
    memcpy(a->date8, f[1], 8);
    a->date8[8] = '\0';
    KB_GUARD(copy_part(a->region, sizeof(a->region), f[2], fl[2], 1));
    KB_GUARD(copy_part(a->service, sizeof(a->service), f[3], fl[3], 1));
    KB_ENSURE(fl[4] == strlen(SIGV4_TERMINATOR) && memcmp(f[4], SIGV4_TERMINATOR, fl[4]) == 0,
              KB_ERR_INVALID);
    return KB_OK;
}

/* SignedHeaders=a;b;c : copied into names_buf with ';' replaced by NUL. */
static kb_err parse_signed_headers(auth_parts *a, const char *s, size_t n)
{
    KB_ENSURE(n > 0 && n < sizeof(a->names_buf), KB_ERR_INVALID);
    memcpy(a->names_buf, s, n);
    a->names_buf[n] = '\0';
    a->n_names = 0;
    for (size_t i = 0, start = 0; i <= n; i++) {
        if (i < n && s[i] != ';')
            continue;
        KB_ENSURE(a->n_names < KB_SIGV4_MAX_SIGNED, KB_ERR_INVALID);
        a->names_buf[i] = '\0';
        a->names[a->n_names++] = a->names_buf + start;
        start = i + 1;
    }
    return check_signed_list(a->names, a->n_names);
}

static kb_err parse_signature(auth_parts *a, const char *s, size_t n)
{
    KB_ENSURE(n == SHA256_HEX_LEN, KB_ERR_INVALID);
    for (size_t i = 0; i < n; i++)
        KB_ENSURE((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'), KB_ERR_INVALID);
    memcpy(a->sig, s, n);
    a->sig[n] = '\0';
    return KB_OK;
}

/* "AWS4-HMAC-SHA256 " then exactly the three components Credential, SignedHeaders and
 * Signature, each once, in any order, separated by ',' and optional spaces. Nothing else. */
static kb_err parse_authorization(auth_parts *a, const char *v, size_t n)
{
    static const char alg[] = SIGV4_ALGORITHM " ";
    int seen_c = 0, seen_h = 0, seen_s = 0;
    size_t i;

    KB_ENSURE(n <= KB_SIGV4_MAX_AUTH_LEN, KB_ERR_INVALID);
    KB_ENSURE(n > sizeof(alg) - 1 && memcmp(v, alg, sizeof(alg) - 1) == 0, KB_ERR_INVALID);
    i = sizeof(alg) - 1;
    for (;;) {
        size_t start, end, eq;
        while (i < n && v[i] == ' ')
            i++;
        start = i;
        while (i < n && v[i] != ',')
            i++;
        end = i;
        while (end > start && v[end - 1] == ' ')
            end--;
        for (eq = start; eq < end && v[eq] != '='; eq++)
            ;
        KB_ENSURE(eq < end, KB_ERR_INVALID);
        const char *key = v + start, *val = v + eq + 1;
        size_t kl = eq - start, vl = end - eq - 1;
        if (kl == 10 && memcmp(key, "Credential", 10) == 0) {
            KB_ENSURE(!seen_c++, KB_ERR_INVALID);
            KB_GUARD(parse_credential(a, val, vl));
        } else if (kl == 13 && memcmp(key, "SignedHeaders", 13) == 0) {
            KB_ENSURE(!seen_h++, KB_ERR_INVALID);
            KB_GUARD(parse_signed_headers(a, val, vl));
        } else if (kl == 9 && memcmp(key, "Signature", 9) == 0) {
            KB_ENSURE(!seen_s++, KB_ERR_INVALID);
            KB_GUARD(parse_signature(a, val, vl));
        } else {
            return KB_ERR_INVALID;
        }
        if (i == n)
            break;
        i++; /* the ',' */
    }
    KB_ENSURE(seen_c && seen_h && seen_s, KB_ERR_INVALID);
    return KB_OK;
}

static int list_has(const auth_parts *a, const char *name)
{
    for (size_t i = 0; i < a->n_names; i++)
        if (strcasecmp(a->names[i], name) == 0)
            return 1;
    return 0;
}

#define FAIL(code, msg)                                                                            \
    do {                                                                                           \
        rc = (code);                                                                               \
        *why = (msg);                                                                              \
        goto out;                                                                                  \
    } while (0)

kb_err kb_sigv4_verify(const kb_sigv4_request *r, const kb_sigv4_verify_opts *o,
                       char region_out[64], void **user_out, const char **why)
{
    static const char *dummy_why;
    auth_parts *a = NULL;
    const kb_sigv4_header *h;
    const kb_secret *secret = NULL;
    void *user = NULL;
    char body_hash[SHA256_HEX_LEN + 1], sig[SHA256_HEX_LEN + 1], amz_date[17];
    uint8_t key[32];
    int cached = 0;
    time_t t;
    kb_dbuf cr;
    kb_err rc = KB_OK, e;

    if (why == NULL)
        why = &dummy_why;
    *why = "Internal error";
    KB_ENSURE_REF(r);
    KB_ENSURE_REF(o);
    KB_ENSURE_REF(o->lookup);
    KB_ENSURE_REF(region_out);
    KB_ENSURE(o->n_required == 0 || o->required_signed != NULL, KB_ERR_NULL);
    kb_dbuf_init(&cr, KB_SIGV4_MAX_CANONICAL);
    memset(sig, 0, sizeof(sig));

    if (r->method == NULL || r->path == NULL || (r->body == NULL && r->body_len != 0) ||
        check_headers(r) != KB_OK)
        FAIL(KB_ERR_INVALID, "Malformed request");
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        FAIL(KB_ERR_NOMEM, "Internal error");

    /* Authorization: exactly one, strictly parsed. */
    e = find_one(r, "authorization", &h);
    if (e == KB_ERR_NOT_FOUND)
        FAIL(KB_ERR_INVALID, "Request is missing Authentication Token");
    if (e != KB_OK)
        FAIL(KB_ERR_INVALID, "Authorization header is repeated");
    if (parse_authorization(a, h->value, h->value_len) != KB_OK)
        FAIL(KB_ERR_INVALID, "Authorization header is malformed");

    /* X-Amz-Date: exactly one, well-formed, fresh, and on the credential's day. */
    e = find_one(r, "x-amz-date", &h);
    if (e != KB_OK)
        FAIL(KB_ERR_INVALID, "Request must contain exactly one X-Amz-Date header");
    if (kb_sigv4_parse_date(h->value, h->value_len, &t) != KB_OK)
        FAIL(KB_ERR_INVALID, "X-Amz-Date is not in the form YYYYMMDDTHHMMSSZ");
    memcpy(amz_date, h->value, 16);
    amz_date[16] = '\0';
    if (o->max_skew < 0 || (long long)t - (long long)o->now > (long long)o->max_skew ||
        (long long)o->now - (long long)t > (long long)o->max_skew)
        FAIL(KB_ERR_TIMEOUT, "Signature expired or not yet valid: X-Amz-Date is outside the "
                             "allowed clock skew");
    if (memcmp(a->date8, amz_date, 8) != 0)
        FAIL(KB_ERR_AUTH, "Date in Credential scope does not match YYYYMMDD from X-Amz-Date");
    if (o->service != NULL && strcmp(o->service, a->service) != 0)
        FAIL(KB_ERR_AUTH, "Credential should be scoped to the correct service");

    /* What must be covered by the signature. */
    if (!list_has(a, "host") || !list_has(a, "x-amz-date"))
        FAIL(KB_ERR_AUTH, "SignedHeaders must include host and x-amz-date");
    for (size_t i = 0; i < o->n_required; i++)
        if (o->required_signed[i] == NULL || !list_has(a, o->required_signed[i]))
            FAIL(KB_ERR_AUTH, "SignedHeaders is missing a required header");

    /* The payload is always hashed here; a client-sent hash header must agree with it, or it
     * could claim UNSIGNED-PAYLOAD (or another body's hash) and detach the body. */
    sha256_hex(r->body, r->body_len, body_hash);
    e = find_one(r, "x-amz-content-sha256", &h);
    if (e == KB_ERR_INVALID)
        FAIL(KB_ERR_INVALID, "X-Amz-Content-Sha256 header is repeated");
    if (e == KB_OK &&
        (h->value_len != SHA256_HEX_LEN || memcmp(h->value, body_hash, SHA256_HEX_LEN) != 0))
        FAIL(KB_ERR_AUTH, "The provided x-amz-content-sha256 header does not match the body");

    /* The key. */
    e = o->lookup(o->lookup_arg, a->akid, &secret, &user);
    if (e == KB_ERR_NOT_FOUND)
        FAIL(KB_ERR_NOT_FOUND, "The security token included in the request is invalid.");
    if (e != KB_OK)
        FAIL(e, "Internal error");
    if (secret == NULL)
        FAIL(KB_ERR_INTERNAL, "Internal error");

    e = kb_sigv4_canonical_request(r, a->names, a->n_names, 1, body_hash, &cr);
    if (e != KB_OK)
        FAIL(e == KB_ERR_NOMEM ? e : KB_ERR_INVALID,
             "The request cannot be canonicalized (a signed header is missing or the request "
             "is malformed)");
    if (o->key_cache == NULL) {
        e = compute_signature(secret, amz_date, a->region, a->service, &cr, sig);
    } else {
        cached = key_cache_get(o->key_cache, secret, a->akid, a->date8, a->region, a->service, key);
        e = cached ? KB_OK : kb_sigv4_signing_key(secret, a->date8, a->region, a->service, key);
        if (e == KB_OK)
            e = signature_with_key(key, amz_date, a->region, a->service, &cr, sig);
    }
    if (e != KB_OK)
        FAIL(e, "Internal error");
    if (!kb_ct_eq(sig, a->sig, SHA256_HEX_LEN))
        FAIL(KB_ERR_AUTH, "The request signature we calculated does not match the signature "
                          "you provided.");
    if (o->key_cache != NULL && !cached)
        key_cache_put(o->key_cache, secret, a->akid, a->date8, a->region, a->service, key);

    memcpy(region_out, a->region, strlen(a->region) + 1);
    if (user_out)
        *user_out = user;
    *why = NULL;
out:
    kb_wipe(sig, sizeof(sig));
    kb_wipe(key, sizeof(key));
    kb_dbuf_free(&cr);
    free(a);
    return rc;
}
