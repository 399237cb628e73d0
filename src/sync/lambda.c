/* lambda.c - Lambda custom runtime loop ("Using the Lambda runtime API for custom runtimes",
 * AWS Lambda Developer Guide). Plain HTTP to the local Runtime API endpoint only. */
#include "lambda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "backoff.h"
#include "lib/buf.h"
#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/prog.h"

#define LAMBDA_EVENT_MAX ((size_t)6 * 1024 * 1024) /* Lambda's synchronous payload limit */
#define LAMBDA_REQ_ID_MAX 128

typedef struct {
    kb_dbuf *body;
    char req_id[LAMBDA_REQ_ID_MAX + 1];
    int64_t deadline_epoch_ms; /* Lambda-Runtime-Deadline-Ms, 0 if absent or malformed */
} next_ctx;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    next_ctx *c = arg;
    return kb_dbuf_add(c->body, p, size * n) == KB_OK ? size * n : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    next_ctx *c = arg;
    size_t len = size * n;
    static const char h[] = "lambda-runtime-aws-request-id:";
    static const char dl[] = "lambda-runtime-deadline-ms:";
    if (len > sizeof(dl) - 1 && len < sizeof(dl) + 32 && strncasecmp(p, dl, sizeof(dl) - 1) == 0) {
        /* milliseconds since the epoch (Lambda Runtime API, "Next invocation") */
        char v[40];
        size_t i = sizeof(dl) - 1, j = 0;
        int64_t ms;
        while (i < len && p[i] == ' ')
            i++;
        while (i < len && p[i] != '\r' && p[i] != '\n' && j < sizeof(v) - 1)
            v[j++] = p[i++];
        v[j] = '\0';
        c->deadline_epoch_ms = kb_parse_int64(v, &ms) == KB_OK && ms > 0 ? ms : 0;
        return len;
    }
    if (len > sizeof(h) - 1 && strncasecmp(p, h, sizeof(h) - 1) == 0) {
        size_t i = sizeof(h) - 1, j = 0;
        while (i < len && p[i] == ' ')
            i++;
        while (i < len && p[i] != '\r' && p[i] != '\n' && j < LAMBDA_REQ_ID_MAX) {
            char ch = p[i++];
            /* request ids are UUIDs; keep them safe to put in a URL path */
            if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_'))
                return 0;
            c->req_id[j++] = ch;
        }
        c->req_id[j] = '\0';
    }
    return len;
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static long post(CURL *c, const char *url, const char *body, const char *err_type)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char eh[128];
    long st = 0;
    if (err_type) {
        snprintf(eh, sizeof(eh), "Lambda-Runtime-Function-Error-Type: %s", err_type);
        h = curl_slist_append(h, eh);
    }
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    curl_slist_free_all(h);
    return st;
}

static char *error_body(const char *type, const char *msg)
{
    json_t *o = json_pack("{s:s,s:s,s:[]}", "errorType", type, "errorMessage", msg, "stackTrace");
    char *s = o ? kb_json_dump(o) : NULL;
    json_decref(o);
    return s;
}

int sync_lambda_run(const char *api, kb_err init_err, const char *init_msg, sync_lambda_fn fn,
                    void *arg)
{
    char base[256], url[512];
    CURL *c;
    int code = KB_EXIT_OK;
    if (api == NULL || strlen(api) > 200 || strchr(api, '/') != NULL) {
        fprintf(stderr, "keybridge-sync: AWS_LAMBDA_RUNTIME_API is not host:port\n");
        return KB_EXIT_CONFIG;
    }
    snprintf(base, sizeof(base), "http://%s/2018-06-01/runtime", api);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    c = curl_easy_init();
    if (c == NULL)
        return KB_EXIT_FAIL;
    if (init_err != KB_OK) {
        char *b = error_body("Runtime.InitError", init_msg ? init_msg : kb_err_str(init_err));
        snprintf(url, sizeof(url), "%s/init/error", base);
        if (b)
            post(c, url, b, "Runtime.InitError");
        kb_json_free_str(b);
        curl_easy_cleanup(c);
        return kb_exit_code(init_err);
    }
    for (;;) {
        kb_dbuf ev;
        next_ctx nc;
        long st = 0;
        CURLcode cr;
        sync_summary sum;
        kb_err rc;
        char *out = NULL;
        json_t *j;
        kb_dbuf_init(&ev, LAMBDA_EVENT_MAX);
        memset(&nc, 0, sizeof(nc));
        nc.body = &ev;
        snprintf(url, sizeof(url), "%s/invocation/next", base);
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &nc);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &nc);
        /* /next blocks until an event arrives: no timeout (the Lambda service freezes us). */
        cr = curl_easy_perform(c);
        if (cr == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
        kb_dbuf_free(&ev); /* the event (a schedule tick) carries nothing we use */
        if (cr != CURLE_OK || st != 200 || nc.req_id[0] == '\0') {
            kb_log(KB_LOG_ERROR, "runtime_api_gone", "reason",
                   cr != CURLE_OK ? curl_easy_strerror(cr) : "bad /next answer", NULL);
            code = KB_EXIT_FAIL;
            break;
        }
        sync_summary_init(&sum);
        {
            /* the epoch deadline onto the monotonic clock the run uses */
            int64_t dl = 0;
            if (nc.deadline_epoch_ms > 0) {
                dl =
                    sync_mono_ms() + (nc.deadline_epoch_ms - sync_now_ms()) - SYNC_LAMBDA_MARGIN_MS;
                if (dl <= 0)
                    dl = 1; /* already past: a run that stops at once */
            }
            rc = fn(arg, dl, &sum);
        }
        j = sync_summary_emf(&sum);
        if (j) {
            char *emf = kb_json_dump(j);
            if (emf) {
                printf("%s\n", emf);
                fflush(stdout);
            }
            kb_json_free_str(emf);
            json_decref(j);
        }
        if (rc == KB_OK && sync_summary_ok(&sum)) {
            j = sync_summary_json(&sum);
            out = j ? kb_json_dump(j) : NULL;
            json_decref(j);
            snprintf(url, sizeof(url), "%s/invocation/%s/response", base, nc.req_id);
            post(c, url, out ? out : "{}", NULL);
        } else {
            char msg[512];
            j = sync_summary_json(&sum);
            out = j ? kb_json_dump(j) : NULL;
            json_decref(j);
            /* errorMessage carries the summary, so a failed run still reports its counts. */
            snprintf(msg, sizeof(msg), "%s", out ? out : (sum.error[0] ? sum.error : "failed"));
            kb_json_free_str(out);
            out = error_body("SyncFailed", msg);
            snprintf(url, sizeof(url), "%s/invocation/%s/error", base, nc.req_id);
            post(c, url, out ? out : "{}", "SyncFailed");
        }
        kb_json_free_str(out);
    }
    curl_easy_cleanup(c);
    return code;
}
