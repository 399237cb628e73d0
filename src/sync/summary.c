/* summary.c - run summary as JSON and as CloudWatch Embedded Metric Format.
 *
 * EMF: "Specification: Embedded metric format" (Amazon CloudWatch User Guide): a JSON object with
 * an "_aws" member {Timestamp, CloudWatchMetrics:[{Namespace, Dimensions, Metrics}]} and one
 * top-level member per metric and dimension. */
#include "summary.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const OP_NAMES[SYNC_OP__COUNT] = {
    "keybridged.list",   "keybridged.batchGet", "ListSecrets",    "DescribeSecret",
    "GetResourcePolicy", "CreateSecret",        "PutSecretValue", "TagResource",
    "DeleteSecret",      "RestoreSecret",       "GetSecretValue", "dir.read",
    "dir.write",         "dir.unlink",
};

const char *sync_op_name(sync_op op)
{
    return (unsigned)op < SYNC_OP__COUNT ? OP_NAMES[op] : "other";
}

int64_t sync_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sync_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sync_summary_init(sync_summary *s)
{
    memset(s, 0, sizeof(*s));
    s->started_ms = sync_now_ms();
}

void sync_summary_fail(sync_summary *s, kb_err e, const char *fmt, ...)
{
    va_list ap;
    if (s->err != KB_OK)
        return;
    s->err = e == KB_OK ? KB_ERR_INTERNAL : e;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof(s->error), fmt, ap);
    va_end(ap);
}

void sync_summary_item(sync_summary *s, const char *name, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (s->item_error[0] != '\0')
        return;
    n = snprintf(s->item_error, sizeof(s->item_error), "%.200s: ", name ? name : "?");
    if (n < 0 || (size_t)n >= sizeof(s->item_error))
        return;
    va_start(ap, fmt);
    vsnprintf(s->item_error + n, sizeof(s->item_error) - (size_t)n, fmt, ap);
    va_end(ap);
}

void sync_summary_close(sync_summary *s, kb_err e)
{
    if (s->err != KB_OK || sync_summary_ok(s))
        return;
    sync_summary_fail(s, e, "%lld failed, %lld deferred; first: %s", (long long)s->failed,
                      (long long)s->deferred, s->item_error[0] ? s->item_error : "unknown");
    s->items = 1;
}

int sync_summary_ok(const sync_summary *s)
{
    return s->err == KB_OK && s->failed == 0 && s->deferred == 0;
}

#define COUNTS(X)                                                                                  \
    X(unchanged) X(created) X(updated) X(restored) X(deleted) X(retained) X(deferred) X(failed)

json_t *sync_summary_json(const sync_summary *s)
{
    json_t *o = json_object(), *calls = json_object();
    int bad = o == NULL || calls == NULL;
    bad |= json_object_set_new(o, "ok", json_boolean(sync_summary_ok(s)));
    bad |= json_object_set_new(o, "application", json_string(s->application));
#define ADD(f) bad |= json_object_set_new(o, #f, json_integer(s->f));
    COUNTS(ADD)
#undef ADD
    for (int i = 0; i < SYNC_OP__COUNT && calls; i++) {
        if (s->calls[i] != 0 || i == SYNC_OP_KB_LIST)
            bad |= json_object_set_new(calls, OP_NAMES[i], json_integer(s->calls[i]));
    }
    bad |= json_object_set(o, "calls", calls);
    bad |= json_object_set_new(o, "bytes_fetched", json_integer(s->bytes_fetched));
    bad |= json_object_set_new(o, "hsm_fetches", json_integer(s->hsm_fetches));
    bad |= json_object_set_new(o, "throttled", json_integer(s->throttled));
    bad |= json_object_set_new(o, "left", json_integer(s->left));
    bad |= json_object_set_new(o, "duration_ms", json_integer(s->duration_ms));
    if (s->err != KB_OK) {
        bad |= json_object_set_new(o, "error", json_string(s->error));
        bad |= json_object_set_new(o, "error_code", json_string(kb_err_str(s->err)));
    }
    json_decref(calls);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *sync_summary_emf(const sync_summary *s)
{
    json_t *o = sync_summary_json(s), *metrics, *aws;
    static const char *const names[] = {"unchanged",   "created",   "updated", "restored",
                                        "deleted",     "deferred",  "failed",  "bytes_fetched",
                                        "hsm_fetches", "throttled", "left",    "duration_ms",
                                        NULL};
    if (o == NULL)
        return NULL;
    metrics = json_array();
    for (size_t i = 0; metrics && names[i]; i++) {
        const char *unit = strcmp(names[i], "duration_ms") == 0     ? "Milliseconds"
                           : strcmp(names[i], "bytes_fetched") == 0 ? "Bytes"
                                                                    : "Count";
        json_array_append_new(metrics, json_pack("{s:s,s:s}", "Name", names[i], "Unit", unit));
    }
    aws = json_pack("{s:I,s:[{s:s,s:[[s]],s:o}]}", "Timestamp", (json_int_t)s->started_ms,
                    "CloudWatchMetrics", "Namespace", "keybridge/sync", "Dimensions", "Application",
                    "Metrics", metrics);
    if (aws == NULL || json_object_set_new(o, "_aws", aws) ||
        json_object_set_new(o, "Application",
                            json_string(s->application[0] ? s->application : "unknown"))) {
        json_decref(o);
        return NULL;
    }
    return o;
}
