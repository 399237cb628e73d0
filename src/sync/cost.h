/* cost.h - the monthly AWS cost of running keybridge-sync (`keybridge-sync cost`,
 * docs/keybridge-sync.md "Cost"), beside the naive model of one read per secret per run.
 *
 * Model, per month (SYNC_COST_HOURS_PER_MONTH hours, AWS's monthly convention):
 *   runs        = hours * 60 / interval, per account
 *   calls/run   = svid + ceil(N / 100): the SVID's GetSecretValue (svid = 1 when it comes from a
 *                 secret, as on Lambda) and one ListSecrets per 100 managed secrets; what a no-op
 *                 run measures (its summary's calls), nothing else reaches Secrets Manager
 *   calls/change= DescribeSecret + GetResourcePolicy + PutSecretValue + TagResource (4), in every
 *                 account
 *   naive       = N GetSecretValue per run (plus the same calls per change)
 *   storage     = N * A secrets * price per secret-month
 *   Lambda      = runs * A requests, each duration_ms at memory_mb (GB-s), no free tier
 * Prices are arguments (defaults below, documented with their source); the arithmetic is pure. */
#ifndef KB_SYNC_COST_H
#define KB_SYNC_COST_H

#include <stdint.h>

#include "lib/err.h"

#define SYNC_COST_HOURS_PER_MONTH 730
#define SYNC_COST_CALLS_PER_CHANGE 4
#define SYNC_COST_LIST_PAGE 100
/* Defaults: AWS list prices, us-east-1, x86_64 (aws.amazon.com/secrets-manager/pricing,
 * aws.amazon.com/lambda/pricing), as of 2026-12-05. Flags override them. */
#define SYNC_COST_PRICE_SECRET 0.40             /* $ per secret-month */
#define SYNC_COST_PRICE_API 0.05                /* $ per 10,000 API calls */
#define SYNC_COST_PRICE_LAMBDA_REQ 0.20         /* $ per 1,000,000 requests */
#define SYNC_COST_PRICE_LAMBDA_GBS 0.0000166667 /* $ per GB-second */
#define SYNC_COST_MEMORY_MB 128
/* Billed duration of one no-op run on Lambda: an estimate (bench/sync: ~15 ms on loopback;
 * on Lambda add TLS handshakes with keybridged across the network and with Secrets Manager). */
#define SYNC_COST_DURATION_MS 200
/* Bounds for the inputs (keep every product far inside int64 and double precision). */
#define SYNC_COST_SECRETS_MAX 1000000
#define SYNC_COST_ACCOUNTS_MAX 100000
#define SYNC_COST_CHANGES_MAX 100000000

typedef struct {
    int64_t secrets;     /* N: secrets per account (the application's cloud_sync secrets) */
    int64_t accounts;    /* A: accounts (one syncer each) */
    int64_t interval;    /* minutes, divides 60 */
    int64_t changes;     /* C: new versions per month, each written into every account */
    int svid_secret;     /* 1: the SVID is read from a secret at every run */
    int64_t memory_mb;   /* Lambda memory */
    int64_t duration_ms; /* Lambda billed duration per run */
    double price_secret, price_api, price_lambda_req, price_lambda_gbs;
} sync_cost_in;

typedef struct {
    int64_t runs;               /* per account per month */
    int64_t calls_per_run;      /* keybridge-sync, no-op */
    int64_t naive_per_run;      /* one read per secret */
    int64_t change_calls;       /* per month, all accounts */
    int64_t calls, naive_calls; /* Secrets Manager API calls per month, all accounts */
    double storage, api, naive_api, lambda_req, lambda_gbs, lambda;
    double total, naive_total;
} sync_cost_out;

/* Defaults for everything but secrets and accounts. */
void sync_cost_defaults(sync_cost_in *in);
/* KB_ERR_INVALID on an input out of range (N, A >= 1; interval divides 60; prices >= 0, finite). */
KB_WUR kb_err sync_cost_compute(const sync_cost_in *in, sync_cost_out *out);

#endif
