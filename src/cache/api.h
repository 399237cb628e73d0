/* api.h - the Secrets Manager JSON 1.1 API of keybridge-cache, as a pure function.
 *
 * cache_api_handle() takes one HTTP request (method, path, headers, body, time) and produces one
 * response (status, body, request id); it does no I/O besides the store, so unit tests and the
 * fuzzer drive it without a socket (server.c is the thin adapter over kb_httpd).
 *
 * Protocol: POST / with X-Amz-Target: secretsmanager.<Operation> and Content-Type
 * application/x-amz-json-1.1, signed with SigV4 (host, x-amz-date, x-amz-target and content-type
 * signed, dated within 15 minutes). Shapes, limits and error codes follow the botocore model
 * secretsmanager/2017-10-17/service-2.json. Errors are {"__type": code, "message": text}; text
 * never contains a secret value or a credential.
 *
 * Thread-safe: store access is serialized by a lock inside the api; signature checks run outside
 * it.
 */
#ifndef KB_CACHE_API_H
#define KB_CACHE_API_H

#include <stddef.h>
#include <stdint.h>

#include "creds.h"
#include "lib/err.h"
#include "lib/sigv4.h"
#include "store.h"

/* Largest request body accepted (a 64 KiB SecretString written with \u escapes is ~384 KiB). */
#define CACHE_BODY_MAX ((size_t)512 * 1024)
#define CACHE_SECRET_VALUE_MAX 65536
#define CACHE_SECRET_ID_MAX 2048
#define CACHE_TOKEN_MIN 32
#define CACHE_TOKEN_MAX 64
#define CACHE_LIST_MAX 100
#define CACHE_BATCH_MAX 20
#define CACHE_FILTERS_MAX 10
#define CACHE_FILTER_VALUES_MAX 10
#define CACHE_FILTER_VALUE_MAX 512
#define CACHE_NEXT_TOKEN_MAX 4096
#define CACHE_UNTAG_KEYS_MAX 200
#define CACHE_RECOVERY_MIN_DAYS 7
#define CACHE_RECOVERY_MAX_DAYS 30
#define CACHE_RECOVERY_DEFAULT_DAYS 30
#define CACHE_SKEW_MAX 900 /* seconds, as AWS: 15 minutes */
/* Derived SigV4 signing keys kept (one per access key id, day and region in use). */
#define CACHE_SIGNING_KEYS 64
/* Largest answer written directly (a ListSecrets page: 100 entries of at most 50 tags, every
 * string escaped; ~14 MiB at worst). */
#define CACHE_RESPONSE_MAX ((size_t)32 * 1024 * 1024)

typedef struct cache_api cache_api;

typedef struct {
    const char *region;       /* "us-east-1": ARNs, and the credential scope region required */
    cache_store *store;       /* not owned */
    const cache_creds *creds; /* not owned; NULL: every signed request is refused */
} cache_api_opts;

typedef struct {
    const char *method;
    const char *path;
    const char *query;
    const kb_sigv4_header *headers;
    size_t n_headers;
    const uint8_t *body;
    size_t body_len;
    int64_t now_ms; /* wall clock, milliseconds since the epoch */
} cache_request;

typedef struct {
    int status;
    char request_id[37]; /* x-amzn-RequestId */
    char *body;          /* JSON, NUL-terminated; may hold secret values: cache_response_free */
    size_t body_len;
} cache_response;

KB_WUR kb_err cache_api_new(const cache_api_opts *o, cache_api **out);
void cache_api_free(cache_api *a);

/* Authenticate and run one request. Always fills out (an AWS error response on failure) unless
 * memory runs out (KB_ERR_NOMEM). */
KB_WUR kb_err cache_api_handle(cache_api *a, const cache_request *r, cache_response *out);

/* Run an operation ("CreateSecret", ...) for an already authenticated account: the part of
 * cache_api_handle after SigV4 (unit tests, fuzzing). */
KB_WUR kb_err cache_api_dispatch(cache_api *a, const char *account, const char *operation,
                                 const uint8_t *body, size_t len, int64_t now_ms,
                                 cache_response *out);

/* Wipe and free the body. */
void cache_response_free(cache_response *r);

#endif
