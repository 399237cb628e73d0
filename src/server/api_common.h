/* api_common.h - the request/response types and the helpers shared by the client API (api.c)
 * and the admin API (api_admin.c), in api_common.c. It includes neither api.h nor api_admin.h:
 * api.c -> api_admin.c -> api_common.c, with no way back.
 */
#ifndef KB_SERVER_API_COMMON_H
#define KB_SERVER_API_COMMON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "service.h"

/* Limits on what a request may carry (tested at, below and above in tests/unit/test_api.c). */
#define API_PATH_MAX 1024                  /* raw path bytes */
#define API_QUERY_MAX 4096                 /* raw query bytes */
#define API_BODY_MAX ((size_t)1024 * 1024) /* JSON body bytes (httpd's default cap too) */
#define API_QUERY_PARAMS_MAX 8             /* key=value pairs in a query */
#define API_AUDIT_LIMIT_DEFAULT 100

typedef struct {
    const char *method, *path, *query; /* raw path and query (no '?'), "" if none */
    const uint8_t *body;
    size_t body_len;
    const char *peer;      /* "127.0.0.1:5555" or "local" */
    const char *spiffe_id; /* verified peer SPIFFE ID (never NULL for API routes) */
    int64_t now;
} api_request;

typedef struct {
    int status;
    json_t *body;        /* owned; NULL only for 204 */
    int64_t retry_after; /* seconds, 0 = none (429/503) */
    /* A pre-rendered JSON body (malloc'd, wiped and freed by api_response_clear); when set,
     * body is NULL and this is what is sent. Only ever set by api_handle_raw. */
    char *raw;
    size_t raw_len;
} api_response;

void api_response_clear(api_response *r);

/* HTTP status for an error code (404 for KB_ERR_NOT_FOUND, 400 for KB_ERR_INVALID, ...). */
int api_status_for(kb_err e);

/* A parsed request: path split into segments, query into key/value pairs (percent-decoded). */
#define API_SEGS_MAX 8
typedef struct {
    const api_request *req;
    svc_actor actor;
    const svc_scope *scope; /* admin routes: what the caller may manage (service.h) */
    char *path_copy;
    const char *seg[API_SEGS_MAX];
    size_t nseg;
    char *qkey[API_QUERY_PARAMS_MAX];
    char *qval[API_QUERY_PARAMS_MAX];
    size_t nq;
} api_ctx;

void api_error(api_response *r, int status, const char *code, const char *msg);
void api_error_kb(api_response *r, kb_err e, const char *msg);
void api_ok(api_response *r, int status, json_t *body);
/* A 200 with pre-rendered bytes (ownership of raw passes to r). */
void api_ok_raw(api_response *r, char *raw, size_t len);
/* Drop (wipe and free) a pre-rendered body. */
void api_raw_drop(api_response *r);
/* The query value for key, or NULL. */
const char *api_query(const api_ctx *c, const char *key);
/* KB_ERR_INVALID if the query has a key not in the NULL-terminated list. */
KB_WUR kb_err api_query_only(const api_ctx *c, const char *const *allowed);
/* Parse a non-negative decimal query value (absent = def). */
KB_WUR kb_err api_query_int(const api_ctx *c, const char *key, int64_t def, int64_t *out);
/* Parse the body as a strict JSON object with only the allowed keys. An empty body is {} when
 * empty_ok. On failure the response is filled and an error returned. */
KB_WUR kb_err api_body(const api_ctx *c, const char *const *allowed, int empty_ok, json_t **out,
                       api_response *r);
/* Record helpers shared by client and admin handlers. */
json_t *api_metadata_json(const char *canon);
json_t *api_time_or_null(int64_t t);
json_t *api_checksum_json(const uint8_t *sum);
/* Add key: base64(content) to o (0 on success, as json_object_set_new); the temporary encoding
 * is wiped. */
int api_add_b64(json_t *o, const char *key, const kb_secret *content);
/* The native client record {name, version, checksum, expires_at, metadata, updated_at[, content]}.
 */
json_t *api_record_json(const store_record *rec, const kb_secret *content);
/* The same record without content, rendered straight into b: byte-identical to kb_json_dump of
 * api_record_json(rec, NULL), with the stored canonical metadata pasted instead of re-parsed. */
KB_WUR kb_err api_record_render(kb_dbuf *b, const store_record *rec);
/* A JSON string literal exactly as jansson's compact dump writes it. */
KB_WUR kb_err api_render_string(kb_dbuf *b, const char *str);

#endif
