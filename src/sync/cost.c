/* cost.c - monthly cost model of keybridge-sync (see cost.h). */
#include "cost.h"

#include <math.h>
#include <string.h>

void sync_cost_defaults(sync_cost_in *in)
{
    memset(in, 0, sizeof(*in));
    in->interval = 15;
    in->changes = -1; /* the caller's default: N (every secret rotated once a month) */
    in->svid_secret = 1;
    in->memory_mb = SYNC_COST_MEMORY_MB;
    in->duration_ms = SYNC_COST_DURATION_MS;
    in->price_secret = SYNC_COST_PRICE_SECRET;
    in->price_api = SYNC_COST_PRICE_API;
    in->price_lambda_req = SYNC_COST_PRICE_LAMBDA_REQ;
    in->price_lambda_gbs = SYNC_COST_PRICE_LAMBDA_GBS;
}

static int price_ok(double p)
{
    return isfinite(p) && p >= 0.0 && p < 1e6;
}

kb_err sync_cost_compute(const sync_cost_in *in, sync_cost_out *o)
{
    int64_t n, a, requests;
    KB_ENSURE_REF(in);
    KB_ENSURE_REF(o);
    memset(o, 0, sizeof(*o));
    n = in->secrets;
    a = in->accounts;
    KB_ENSURE(n >= 1 && n <= SYNC_COST_SECRETS_MAX, KB_ERR_INVALID);
    KB_ENSURE(a >= 1 && a <= SYNC_COST_ACCOUNTS_MAX, KB_ERR_INVALID);
    KB_ENSURE(in->interval >= 1 && in->interval <= 60 && 60 % in->interval == 0, KB_ERR_INVALID);
    KB_ENSURE(in->changes >= 0 && in->changes <= SYNC_COST_CHANGES_MAX, KB_ERR_INVALID);
    KB_ENSURE(in->memory_mb >= 128 && in->memory_mb <= 10240, KB_ERR_INVALID);
    KB_ENSURE(in->duration_ms >= 1 && in->duration_ms <= 900000, KB_ERR_INVALID);
    KB_ENSURE(price_ok(in->price_secret) && price_ok(in->price_api) &&
                  price_ok(in->price_lambda_req) && price_ok(in->price_lambda_gbs),
              KB_ERR_INVALID);
    o->runs = SYNC_COST_HOURS_PER_MONTH * (60 / in->interval);
    o->calls_per_run =
        (in->svid_secret ? 1 : 0) + (n + SYNC_COST_LIST_PAGE - 1) / SYNC_COST_LIST_PAGE;
    o->naive_per_run = n;
    o->change_calls = in->changes * SYNC_COST_CALLS_PER_CHANGE * a;
    o->calls = o->runs * a * o->calls_per_run + o->change_calls;
    o->naive_calls = o->runs * a * o->naive_per_run + o->change_calls;
    o->storage = (double)(n * a) * in->price_secret;
    o->api = (double)o->calls / 10000.0 * in->price_api;
    o->naive_api = (double)o->naive_calls / 10000.0 * in->price_api;
    requests = o->runs * a;
    o->lambda_req = (double)requests / 1e6 * in->price_lambda_req;
    o->lambda_gbs = (double)requests * ((double)in->memory_mb / 1024.0) *
                    ((double)in->duration_ms / 1000.0) * in->price_lambda_gbs;
    o->lambda = o->lambda_req + o->lambda_gbs;
    o->total = o->storage + o->api + o->lambda;
    o->naive_total = o->storage + o->naive_api + o->lambda;
    return KB_OK;
}
