/* api.h - keybridged's HTTP API as pure functions: a request in, a status and a JSON body out.
 *
 * No sockets here: serve.c adapts kb_httpd requests to api_request, and the `keybridge` CLI's
 * local mode calls api_handle in-process. Every access decision and every content read goes
 * through service.h; admin changes that do not touch content call store.h directly and are
 * audited with svc_audit_event. Routes and response shapes: docs/api.md.
 *
 * Thread safety: api_handle may be called concurrently (the store serialises itself).
 */
#ifndef KB_SERVER_API_H
#define KB_SERVER_API_H

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

/* Route and answer one request. Never fails: errors become a JSON error response
 * {"error": kb_err_str() or an HTTP name, "message": text that never quotes secret content}. */
void api_handle(svc *s, const api_request *req, api_response *resp);
/* The same, but the response may carry a pre-rendered body in resp->raw instead of resp->body,
 * for a caller that sends it as is (serve.c). api_handle parses such bytes back into a tree, so
 * in-process callers (the CLI's --local mode, tests) always get resp->body. */
void api_handle_raw(svc *s, const api_request *req, api_response *resp);
void api_response_clear(api_response *r);

/* The per-client cache of rendered listings (GET /v1/secrets and GET /secrets), see
 * docs/internals/api.md: entries live at most API_LIST_CACHE_TTL seconds and are keyed on
 * (store handle, store_generation read before the listing, client id, shape). */
#define API_LIST_CACHE_SLOTS 4096                           /* entries (direct-mapped) */
#define API_LIST_CACHE_TTL 2                                /* seconds */
#define API_LIST_CACHE_ENTRY_MAX ((size_t)256 * 1024)       /* larger bodies are not cached */
#define API_LIST_CACHE_BYTES_MAX ((size_t)64 * 1024 * 1024) /* all entries together */
typedef struct {
    uint64_t hits, misses;
    size_t entries, bytes;
} api_list_cache_stats;
void api_list_cache_stats_get(api_list_cache_stats *out);
/* Drop every entry (wiped). For tests and shutdown. */
void api_list_cache_clear(void);

/* The route template a request matched, for metrics labels ("/v1/secrets/{name}", ...), or
 * "other". Static string; never contains request data. */
const char *api_route_name(const char *method, const char *path);

/* HTTP status for an error code (404 for KB_ERR_NOT_FOUND, 400 for KB_ERR_INVALID, ...). */
int api_status_for(kb_err e);

/* ---- internal to src/server/api_*.c ------------------------------------------------------- */

/* A parsed request: path split into segments, query into key/value pairs (percent-decoded). */
#define API_SEGS_MAX 8
typedef struct {
    const api_request *req;
    svc_actor actor;
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
/* The native client record {name, version, checksum, expires_at, metadata, updated_at[, content]}.
 */
json_t *api_record_json(const store_record *rec, const kb_secret *content);
/* The same record without content, rendered straight into b: byte-identical to kb_json_dump of
 * api_record_json(rec, NULL), with the stored canonical metadata pasted instead of re-parsed. */
KB_WUR kb_err api_record_render(kb_dbuf *b, const store_record *rec);
/* A JSON string literal exactly as jansson's compact dump writes it. */
KB_WUR kb_err api_render_string(kb_dbuf *b, const char *str);

void api_admin(svc *s, api_ctx *c, const store_client *who, api_response *r);

#endif
