/* httpd.c - stub (implementation in progress). */
#include "lib/httpd.h"

kb_err kb_httpd_new(const kb_httpd_opts *o, kb_httpd **out)
{
    (void)o;
    (void)out;
    return KB_ERR_INTERNAL;
}
int kb_httpd_port(const kb_httpd *h)
{
    (void)h;
    return 0;
}
kb_err kb_httpd_run(kb_httpd *h)
{
    (void)h;
    return KB_ERR_INTERNAL;
}
void kb_httpd_stop(kb_httpd *h)
{
    (void)h;
}
kb_err kb_httpd_reload(kb_httpd *h)
{
    (void)h;
    return KB_ERR_INTERNAL;
}
uint64_t kb_httpd_reload_count(const kb_httpd *h)
{
    (void)h;
    return 0;
}
int kb_httpd_connections(const kb_httpd *h)
{
    (void)h;
    return 0;
}
void kb_httpd_free(kb_httpd *h)
{
    (void)h;
}
const char *kb_http_req_method(kb_http_req *r)
{
    (void)r;
    return "";
}
const char *kb_http_req_path(kb_http_req *r)
{
    (void)r;
    return "";
}
const char *kb_http_req_query(kb_http_req *r)
{
    (void)r;
    return "";
}
const char *kb_http_req_header(kb_http_req *r, const char *name)
{
    (void)r;
    (void)name;
    return NULL;
}
size_t kb_http_req_header_count(kb_http_req *r)
{
    (void)r;
    return 0;
}
void kb_http_req_header_at(kb_http_req *r, size_t i, const char **name, const char **value)
{
    (void)r;
    (void)i;
    *name = NULL;
    *value = NULL;
}
void kb_http_req_body(kb_http_req *r, const uint8_t **p, size_t *len)
{
    (void)r;
    *p = (const uint8_t *)"";
    *len = 0;
}
const char *kb_http_req_peer_addr(kb_http_req *r)
{
    (void)r;
    return "";
}
const char *kb_http_req_peer_id(kb_http_req *r)
{
    (void)r;
    return NULL;
}
X509 *kb_http_req_peer_cert(kb_http_req *r)
{
    (void)r;
    return NULL;
}
int kb_http_req_is_tls(kb_http_req *r)
{
    (void)r;
    return 0;
}
void kb_http_set_header(kb_http_req *r, const char *name, const char *value)
{
    (void)r;
    (void)name;
    (void)value;
}
void kb_http_reply(kb_http_req *r, int status, const char *content_type, const void *body,
                   size_t len)
{
    (void)r;
    (void)status;
    (void)content_type;
    (void)body;
    (void)len;
}
void kb_http_reply_json(kb_http_req *r, int status, const json_t *body)
{
    (void)r;
    (void)status;
    (void)body;
}
void kb_http_reply_error(kb_http_req *r, int status, const char *code, const char *message)
{
    (void)r;
    (void)status;
    (void)code;
    (void)message;
}
