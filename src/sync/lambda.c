/* lambda.c - Lambda custom runtime loop ("Using the Lambda runtime API for custom runtimes",
 * AWS Lambda Developer Guide). Plain HTTP to the local Runtime API endpoint only. */
#include "lambda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "lib/buf.h"
#include "lib/httpc.h"
#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/prog.h"

#define LAMBDA_EVENT_MAX ((size_t)6 * 1024 * 1024) /* Lambda's synchronous payload limit */
#define LAMBDA_REQ_ID_MAX 128

#define LAMBDA_POST_TIMEOUT_MS 30000
/* /next blocks until an event arrives (the Lambda service freezes us meanwhile): no real limit */
#define LAMBDA_NEXT_TIMEOUT_MS ((long)7 * 24 * 3600 * 1000)

/* Lambda-Runtime-Deadline-Ms: milliseconds since the epoch (Lambda Runtime API, "Next
 * invocation"); 0 if absent or malformed. */
static int64_t deadline_of(const kb_httpc *c)
{
    const char *v = kb_httpc_field_get(c, "Lambda-Runtime-Deadline-Ms");
    int64_t ms;
    return v != NULL && strlen(v) < 32 && kb_parse_int64(v, &ms) == KB_OK && ms > 0 ? ms : 0;
}

/* Lambda-Runtime-Aws-Request-Id, a UUID: kept only if safe to put in a URL path. */
static int request_id_of(const kb_httpc *c, char *out, size_t cap)
{
    const char *v = kb_httpc_field_get(c, "Lambda-Runtime-Aws-Request-Id");
    size_t n = v ? strlen(v) : 0;
    if (n == 0 || n >= cap)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              ch == '-' || ch == '_'))
            return 0;
    }
    memcpy(out, v, n + 1);
    return 1;
}

static int post(kb_httpc *c, const char *path, const char *body, const char *err_type)
{
    kb_httpc_field f[2] = {{"Content-Type", "application/json"},
                           {"Lambda-Runtime-Function-Error-Type", err_type}};
    kb_httpc_req r = {
        "POST", path, f, err_type ? 2 : 1, body, strlen(body), LAMBDA_POST_TIMEOUT_MS};
    kb_dbuf resp;
    int st = 0;
    kb_dbuf_init(&resp, 64 * 1024);
    if (kb_httpc_do(c, &r, &st, &resp) != KB_OK)
        st = 0;
    kb_dbuf_free(&resp);
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
    char base[256], url[512], path[512];
    kb_httpc *c = NULL;
    kb_httpc_opts ho = {url, NULL, NULL, NULL};
    int code = KB_EXIT_OK;
    if (api == NULL || strlen(api) > 200 || strchr(api, '/') != NULL) {
        fprintf(stderr, "keybridge-sync: AWS_LAMBDA_RUNTIME_API is not host:port\n");
        return KB_EXIT_CONFIG;
    }
    /* plain http: httpc refuses anything but loopback, where the Runtime API lives */
    snprintf(url, sizeof(url), "http://%s", api);
    snprintf(base, sizeof(base), "/2018-06-01/runtime");
    if (kb_httpc_new(&ho, &c) != KB_OK) {
        fprintf(stderr, "keybridge-sync: AWS_LAMBDA_RUNTIME_API is not a loopback host:port\n");
        return KB_EXIT_CONFIG;
    }
    if (init_err != KB_OK) {
        char *b = error_body("Runtime.InitError", init_msg ? init_msg : kb_err_str(init_err));
        snprintf(path, sizeof(path), "%s/init/error", base);
        if (b)
            post(c, path, b, "Runtime.InitError");
        kb_json_free_str(b);
        kb_httpc_free(c);
        return kb_exit_code(init_err);
    }
    for (;;) {
        kb_dbuf ev;
        char req_id[LAMBDA_REQ_ID_MAX + 1];
        int64_t deadline_epoch_ms;
        int st = 0;
        kb_err hr;
        sync_summary sum;
        kb_err rc;
        char *out = NULL;
        json_t *j;
        kb_httpc_req r = {"GET", path, NULL, 0, NULL, 0, LAMBDA_NEXT_TIMEOUT_MS};
        kb_dbuf_init(&ev, LAMBDA_EVENT_MAX);
        snprintf(path, sizeof(path), "%s/invocation/next", base);
        hr = kb_httpc_do(c, &r, &st, &ev);
        kb_dbuf_free(&ev); /* the event (a schedule tick) carries nothing we use */
        if (hr != KB_OK || st != 200 || !request_id_of(c, req_id, sizeof(req_id))) {
            kb_log(KB_LOG_ERROR, "runtime_api_gone", "reason",
                   hr != KB_OK ? kb_httpc_why(c) : "bad /next answer", NULL);
            code = KB_EXIT_FAIL;
            break;
        }
        deadline_epoch_ms = deadline_of(c);
        sync_summary_init(&sum);
        {
            /* the epoch deadline onto the monotonic clock the run uses */
            int64_t dl = 0;
            if (deadline_epoch_ms > 0) {
                dl = sync_mono_ms() + (deadline_epoch_ms - sync_now_ms()) - SYNC_LAMBDA_MARGIN_MS;
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
            snprintf(path, sizeof(path), "%s/invocation/%s/response", base, req_id);
            post(c, path, out ? out : "{}", NULL);
        } else {
            char msg[4096]; /* the whole summary, error included */
            j = sync_summary_json(&sum);
            out = j ? kb_json_dump(j) : NULL;
            json_decref(j);
            /* errorMessage carries the summary, so a failed run still reports its counts. */
            snprintf(msg, sizeof(msg), "%s", out ? out : (sum.error[0] ? sum.error : "failed"));
            kb_json_free_str(out);
            out = error_body("SyncFailed", msg);
            snprintf(path, sizeof(path), "%s/invocation/%s/error", base, req_id);
            post(c, path, out ? out : "{}", "SyncFailed");
        }
        kb_json_free_str(out);
    }
    kb_httpc_free(c);
    return code;
}
