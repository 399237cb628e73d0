/* server.h - keybridge-cache's HTTP adapter: kb_httpd requests -> cache_api_handle. */
#ifndef KB_CACHE_SERVER_H
#define KB_CACHE_SERVER_H

#include "api.h"
#include "lib/httpd.h"

/* The kb_httpd handler; arg is the cache_api. Copies headers into a kb_sigv4_header array,
 * stamps the wall clock, and sends the response with x-amzn-RequestId. */
void cache_server_handler(kb_http_req *req, void *arg);

#endif
