/* sigv4.h - AWS Signature Version 4 (header authentication, AWS4-HMAC-SHA256).
 *
 * Signing (the syncer, the CA, awsreq) and verification (keybridge-cache) of AWS requests, as
 * specified in AWS's "Create a signed AWS API request" (IAM User Guide, Signature Version 4) and
 * checked against the aws-c-auth v4 test suite (tests/unit/test_sigv4.c).
 *
 * Only header authentication is supported: presigned URLs (query authentication), chunked
 * streaming payloads and SigV4a are not. See docs/internals/sigv4.md.
 */
#ifndef KB_SIGV4_H
#define KB_SIGV4_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "err.h"
#include "secbuf.h"

/* Limits on what a request may carry into the signature computation. */
#define KB_SIGV4_MAX_HEADERS 256            /* headers in one request */
#define KB_SIGV4_MAX_SIGNED 64              /* names in SignedHeaders */
#define KB_SIGV4_MAX_NAME 128               /* one header name */
#define KB_SIGV4_MAX_AUTH_LEN 4096          /* the Authorization header value */
#define KB_SIGV4_MAX_CANONICAL (256 * 1024) /* a canonical request */
#define KB_SIGV4_MAX_SCOPE_PART 64          /* access key id, region and service, each */

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} kb_sigv4_header;

typedef struct {
    const char *method; /* "POST" */
    const char *path;   /* raw request path as sent, e.g. "/" ; not yet normalized */
    const char *query;  /* raw query string without '?', or "" (NULL is taken as "") */
    const kb_sigv4_header *headers;
    size_t n_headers; /* as received; duplicates allowed */
    const uint8_t *body;
    size_t body_len;
} kb_sigv4_request;

typedef struct {
    const char *access_key_id;
    const kb_secret *secret_key; /* secret access key (in locked memory) */
    const char *session_token;   /* or NULL */
    const char *region;          /* "us-east-1" */
    const char *service;         /* "secretsmanager" */
    time_t now;                  /* signing time */
    int normalize_path;          /* 1 for every service but S3 */
} kb_sigv4_params;

/* Append the canonical request of r to out (SigV4 task 1).
 *
 * signed_headers: the lowercase header names to sign, strictly ascending (as in SignedHeaders);
 * each must occur in r (KB_ERR_INVALID otherwise). Duplicate headers are joined with ',' in the
 * order received; values are trimmed and inner whitespace runs collapsed to one space.
 * The path is URI-encoded segment by segment (unreserved bytes A-Za-z0-9-._~ kept); with
 * normalize_path, empty, "." and ".." segments are resolved first (RFC 3986 5.2.4, as the AWS
 * SDKs do). Query parameters are percent-decoded, re-encoded and sorted by key, then value.
 * payload_hash_hex: the hashed payload line; NULL means the X-Amz-Content-Sha256 header if
 * present, else the hex SHA-256 of the body. */
KB_WUR kb_err kb_sigv4_canonical_request(const kb_sigv4_request *r,
                                         const char *const *signed_headers, size_t n_signed,
                                         int normalize_path, const char *payload_hash_hex,
                                         kb_dbuf *out);

/* Append the string to sign (SigV4 task 2): algorithm, amz_date, scope, hex SHA-256 of the
 * canonical request, separated by '\n'. */
KB_WUR kb_err kb_sigv4_string_to_sign(const char *amz_date, const char *scope,
                                      const char *canonical_request, size_t cr_len, kb_dbuf *out);

/* The signing key (SigV4 task 3): HMAC-SHA256 chain over date8 ("YYYYMMDD"), region, service
 * and "aws4_request", keyed first by "AWS4" + secret. out holds key material: wipe it. */
KB_WUR kb_err kb_sigv4_signing_key(const kb_secret *secret_key, const char *date8,
                                   const char *region, const char *service, uint8_t out[32]);

/* Append s URI-encoded the SigV4 way (every byte but A-Z a-z 0-9 - . _ ~ as %XX, uppercase hex);
 * also the encoding of AWS query-protocol form values (awsreq's kb_awsreq_call_query). */
KB_WUR kb_err kb_sigv4_uri_encode(kb_dbuf *out, const char *s, size_t n);

/* ISO 8601 basic format used by X-Amz-Date: "YYYYMMDDTHHMMSSZ" (UTC). */
KB_WUR kb_err kb_sigv4_format_date(time_t t, char amz_date[17]);
/* Parse exactly that format (16 characters, a real calendar date); KB_ERR_INVALID otherwise. */
KB_WUR kb_err kb_sigv4_parse_date(const char *s, size_t len, time_t *out);

/* Sign: produce the Authorization header value, X-Amz-Date value (and the token header is the
 * caller's job to add). signed header set = all headers given (lowercased, sorted), plus
 * x-amz-date, plus x-amz-security-token when p->session_token is set. r must not itself carry
 * Authorization or X-Amz-Date (nor X-Amz-Security-Token when a session token is given):
 * KB_ERR_INVALID. The Authorization value is appended to `authorization`. */
KB_WUR kb_err kb_sigv4_sign(const kb_sigv4_request *r, const kb_sigv4_params *p,
                            kb_dbuf *authorization, char amz_date[17]);

/* Verify a received request. lookup() maps an access key id to its secret key (+ opaque user
 * value, e.g. an account); verify parses the Authorization header strictly (AWS4-HMAC-SHA256
 * Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=..., Signature=64 hex),
 * requires X-Amz-Date within max_skew seconds of now and matching the credential date, requires
 * host, x-amz-date and every header named in required_signed to be signed, requires the service
 * to match when given, recomputes the signature (path always normalized: not for S3) and
 * compares in constant time. An X-Amz-Content-Sha256 header, if present, must equal the body's
 * hash (so it cannot unsign the payload).
 *
 * On failure, *why is a static message suitable for an AWS error response, and the kb_err is:
 *   KB_ERR_INVALID   malformed, missing or duplicated Authorization / X-Amz-Date, bad syntax,
 *                    a signed header absent from the request, a request too large to canonicalize
 *   KB_ERR_NOT_FOUND unknown access key id (lookup said so)
 *   KB_ERR_TIMEOUT   X-Amz-Date more than max_skew seconds before or after now
 *   KB_ERR_AUTH      signature mismatch, scope not matching (date, service), a required header
 *                    not signed, payload hash header not matching the body
 * Any other code comes from lookup() or the crypto library. region_out gets the credential's
 * region, *user_out the lookup's user value, both only on success. */
typedef kb_err (*kb_sigv4_lookup_fn)(void *arg, const char *access_key_id,
                                     const kb_secret **secret_key, void **user);

/* A bounded cache of derived signing keys for kb_sigv4_verify: deriving one costs four HMACs
 * per request, and a server sees the same (access key id, day, region, service) for a whole
 * day. Entries are keyed by the access key id, the secret key object lookup() returned (its
 * address and length), the credential's date, region and service; at most `slots` are kept
 * (replaced round-robin), in locked memory, wiped when replaced and when the cache is freed.
 * Thread-safe (one mutex). The cache must not outlive the secret keys lookup() hands out: a
 * key freed and another allocated at the same address with the same length would hit. Only a
 * fully verified request adds its key, so unknown keys, stale dates or bad signatures cannot
 * fill it. */
#define KB_SIGV4_KEY_CACHE_MAX 1024
typedef struct kb_sigv4_key_cache kb_sigv4_key_cache;
/* slots: 1..KB_SIGV4_KEY_CACHE_MAX. */
KB_WUR kb_err kb_sigv4_key_cache_new(size_t slots, kb_sigv4_key_cache **out);
void kb_sigv4_key_cache_free(kb_sigv4_key_cache *c);
/* Counters for tests and metrics: lookups that found a key, and keys derived (misses). */
void kb_sigv4_key_cache_stats(kb_sigv4_key_cache *c, uint64_t *hits, uint64_t *misses);

typedef struct {
    kb_sigv4_lookup_fn lookup;
    void *lookup_arg;
    const char *service; /* required service, e.g. "secretsmanager" */
    const char *const *required_signed;
    size_t n_required;
    time_t now;
    long max_skew;                 /* 900 seconds */
    kb_sigv4_key_cache *key_cache; /* optional (NULL: derive the signing key every time) */
} kb_sigv4_verify_opts;

KB_WUR kb_err kb_sigv4_verify(const kb_sigv4_request *r, const kb_sigv4_verify_opts *o,
                              char region_out[64], void **user_out, const char **why);

#endif
