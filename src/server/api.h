/* api.h - keybridged's HTTP API as pure functions: a request in, a status and a JSON body out.
 *
 * No sockets here: serve.c adapts kb_httpd requests to api_request, and the `keybridge` CLI's
 * local mode calls api_handle in-process. Every access decision and every content read goes
 * through service.h; admin changes that do not touch content call store.h directly and are
 * audited with svc_audit_event. Routes and response shapes: docs/api.md.
 *
 * Thread safety: api_handle may be called concurrently (the store serialises itself).
 *
 * The request and response types and api_response_clear are in api_common.h (included here).
 */
#ifndef KB_SERVER_API_H
#define KB_SERVER_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "api_common.h"
#include "service.h"

/* Route and answer one request. Never fails: errors become a JSON error response
 * {"error": kb_err_str() or an HTTP name, "message": text that never quotes secret content}. */
void api_handle(svc *s, const api_request *req, api_response *resp);
/* The same, but the response may carry a pre-rendered body in resp->raw instead of resp->body,
 * for a caller that sends it as is (serve.c). api_handle parses such bytes back into a tree, so
 * in-process callers (the CLI's --local mode, tests) always get resp->body. */
void api_handle_raw(svc *s, const api_request *req, api_response *resp);

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

#endif
