/* server.c - thin adapter from kb_httpd to the pure API handler (api.h). */
#include "server.h"

#include <string.h>
#include <time.h>

#include "lib/log.h"

#define JSON11 "application/x-amz-json-1.1"

void cache_server_handler(kb_http_req *req, void *arg)
{
    cache_api *api = arg;
    kb_sigv4_header hs[KB_HTTPD_MAX_HEADERS_COUNT];
    size_t n = kb_http_req_header_count(req);
    cache_request r;
    cache_response resp;
    struct timespec now;
    char status[8];

    if (n > KB_HTTPD_MAX_HEADERS_COUNT) {
        kb_http_reply_error(req, 431, "RequestHeaderFieldsTooLarge", "too many headers");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = NULL, *value = NULL;
        kb_http_req_header_at(req, i, &name, &value);
        hs[i].name = name ? name : "";
        hs[i].name_len = strlen(hs[i].name);
        hs[i].value = value ? value : "";
        hs[i].value_len = strlen(hs[i].value);
    }
    memset(&r, 0, sizeof(r));
    r.method = kb_http_req_method(req);
    r.path = kb_http_req_path(req);
    r.query = kb_http_req_query(req);
    r.headers = hs;
    r.n_headers = n;
    kb_http_req_body(req, &r.body, &r.body_len);
    clock_gettime(CLOCK_REALTIME, &now);
    r.now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;

    if (cache_api_handle(api, &r, &resp) != KB_OK) {
        kb_http_reply_error(req, 500, "InternalServiceError", "out of memory");
        return;
    }
    snprintf(status, sizeof(status), "%d", resp.status);
    kb_log(KB_LOG_DEBUG, "request", "status", status, "request_id", resp.request_id, NULL);
    kb_http_set_header(req, "x-amzn-RequestId", resp.request_id);
    kb_http_reply(req, resp.status, JSON11, resp.body, resp.body_len);
    cache_response_free(&resp);
}
