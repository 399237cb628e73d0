/* lambda.h - the AWS Lambda custom runtime loop (Lambda Runtime API, version 2018-06-01):
 *   GET  /2018-06-01/runtime/invocation/next               -> event + Lambda-Runtime-Aws-Request-Id
 *   POST /2018-06-01/runtime/invocation/{id}/response      <- the JSON summary
 *   POST /2018-06-01/runtime/invocation/{id}/error         <- {"errorType","errorMessage"}
 *   POST /2018-06-01/runtime/init/error                    <- start-up failure
 * Each summary is also printed on stdout in CloudWatch Embedded Metric Format. */
#ifndef KB_SYNC_LAMBDA_H
#define KB_SYNC_LAMBDA_H

#include "lib/err.h"
#include "summary.h"

/* One invocation's work: fill sum; return its result. deadline_ms is the invocation's deadline
 * (Lambda-Runtime-Deadline-Ms) on the monotonic clock, less SYNC_LAMBDA_MARGIN_MS to post the
 * answer; 0 when the Runtime API sent none. */
typedef kb_err (*sync_lambda_fn)(void *arg, int64_t deadline_ms, sync_summary *sum);

/* Serve invocations until the Runtime API stops answering. api is AWS_LAMBDA_RUNTIME_API
 * ("127.0.0.1:9001"). If init_err != KB_OK, report it to /runtime/init/error and return.
 * Returns the process exit code. */
int sync_lambda_run(const char *api, kb_err init_err, const char *init_msg, sync_lambda_fn fn,
                    void *arg);

#endif
