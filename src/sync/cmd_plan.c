/* cmd_plan.c - keybridge-sync's planning commands, which need no keybridged: `schedule` (the
 * application's offset and EventBridge cron), `iam-policy` (least-privilege policies) and `cost`
 * (monthly AWS cost beside the naive model). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cost.h"
#include "lib/json.h"
#include "lib/prog.h"
#include "schedule.h"
#include "sync.h"
#include "sync_cmd.h"
#include "sync_config.h"

/* ---- schedule, iam-policy -------------------------------------------------------------------
 */

int sync_cmd_schedule(const kb_config *cfg, int argc, char **argv)
{
    int64_t interval = 0; /* 0: [daemon] interval, the daemon's own schedule */
    int napps = 0, minute, cfg_interval;
    char cron[64];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            if (kb_parse_int64(argv[++i], &interval) != KB_OK || !sync_interval_ok(interval)) {
                fprintf(stderr, "keybridge-sync schedule: --interval must divide 60\n");
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridge-sync [--config FILE] schedule APP [APP...] [--interval "
                   "MINUTES]\n\n"
                   "Print each APP's offset (first 32 bits of SHA-256(APP), big-endian, mod the\n"
                   "interval) and its EventBridge cron expression. The interval divides 60;\n"
                   "without --interval it is [daemon] interval, the daemon's own schedule.\n");
            return KB_EXIT_OK;
        } else if (argv[i][0] == '-' || argv[i][0] == '\0') {
            fprintf(stderr, "keybridge-sync schedule: unexpected '%s'\n", argv[i]);
            return KB_EXIT_USAGE;
        } else {
            napps++;
        }
    }
    if (napps == 0) {
        fprintf(stderr, "keybridge-sync schedule: need APP (see --help)\n");
        return KB_EXIT_USAGE;
    }
    if (interval == 0) {
        if (sync_config_interval(cfg, &cfg_interval) != KB_OK) {
            fprintf(stderr, "keybridge-sync schedule: [daemon] interval must divide 60\n");
            return KB_EXIT_CONFIG;
        }
        interval = cfg_interval;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--interval") == 0) {
            i++;
            continue;
        }
        if (sync_schedule_offset(argv[i], (int)interval, &minute) != KB_OK ||
            sync_schedule_cron(minute, (int)interval, cron, sizeof(cron)) != KB_OK)
            return KB_EXIT_USAGE;
        printf("offset %d\n%s\n", minute, cron);
    }
    return KB_EXIT_OK;
}

int sync_cmd_iam_policy(const kb_config *cfg, int argc, char **argv)
{
    const char *app = NULL, *account = "*", *region = "*", *svid = NULL;
    char res[512], svid_res[512];
    json_t *out;
    char *s;
    (void)cfg;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--account") == 0 && i + 1 < argc)
            account = argv[++i];
        else if (strcmp(argv[i], "--region") == 0 && i + 1 < argc)
            region = argv[++i];
        else if (strcmp(argv[i], "--svid-secret") == 0 && i + 1 < argc)
            svid = argv[++i];
        else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridge-sync iam-policy APP [--account N] [--region R] "
                   "[--svid-secret NAME]\n\nPrint least-privilege IAM policies (JSON) for the "
                   "syncer's role and the function's role.\n");
            return KB_EXIT_OK;
        } else if (app == NULL && argv[i][0] != '-')
            app = argv[i];
        else {
            fprintf(stderr, "keybridge-sync iam-policy: unexpected '%s'\n", argv[i]);
            return KB_EXIT_USAGE;
        }
    }
    if (app == NULL || !sync_name_ok(app) || strlen(app) > SYNC_APP_MAX) {
        fprintf(stderr, "keybridge-sync iam-policy: need a valid APP name\n");
        return KB_EXIT_USAGE;
    }
    /* Secret ARNs end in -XXXXXX (6 random characters): match with "-??????". */
    snprintf(res, sizeof(res), "arn:aws:secretsmanager:%s:%s:secret:keybridge/%s/*", region,
             account, app);
    snprintf(svid_res, sizeof(svid_res), "arn:aws:secretsmanager:%s:%s:secret:%s-??????", region,
             account, svid ? svid : "keybridge/svid/*");
    out = json_pack(
        "{s:{s:s,s:[{s:s,s:s,s:[s,s,s,s,s,s,s],s:s},{s:s,s:s,s:[s,s],s:s,s:{s:{s:s}}},"
        "{s:s,s:s,s:s,s:s},{s:s,s:s,s:s,s:s}]},"
        "s:{s:s,s:[{s:s,s:s,s:[s,s],s:s},{s:s,s:s,s:s,s:s}]}}",
        "syncer_role", "Version", "2012-10-17", "Statement", "Sid", "ManageOwnSecrets", "Effect",
        "Allow", "Action", "secretsmanager:DescribeSecret", "secretsmanager:GetResourcePolicy",
        "secretsmanager:PutSecretValue", "secretsmanager:TagResource",
        "secretsmanager:DeleteSecret", "secretsmanager:RestoreSecret",
        "secretsmanager:UpdateSecret", "Resource", res, "Sid", "CreateOwnSecrets", "Effect",
        "Allow", "Action", "secretsmanager:CreateSecret", "secretsmanager:TagResource", "Resource",
        res, "Condition", "StringEquals", "aws:RequestTag/keybridge:app", app, "Sid", "ListManaged",
        "Effect", "Allow", "Action", "secretsmanager:ListSecrets", "Resource", "*", "Sid",
        "ReadOwnSvid", "Effect", "Allow", "Action", "secretsmanager:GetSecretValue", "Resource",
        svid_res, "function_role", "Version", "2012-10-17", "Statement", "Sid", "ReadAppSecrets",
        "Effect", "Allow", "Action", "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret", "Resource", res, "Sid", "ReadOwnSvid", "Effect", "Allow",
        "Action", "secretsmanager:GetSecretValue", "Resource", svid_res);
    s = out ? json_dumps(out, JSON_INDENT(2)) : NULL;
    json_decref(out);
    if (s == NULL)
        return KB_EXIT_FAIL;
    printf("%s\n", s);
    kb_json_free_str(s);
    return KB_EXIT_OK;
}

/* ---- cost -----------------------------------------------------------------------------------
 */

#define COST_LIST_MAX 16

static int parse_int_list(const char *s, int64_t *out, size_t *n)
{
    char buf[256];
    const char *parts[COST_LIST_MAX + 1];
    size_t k;
    if (strlen(s) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", s);
    k = sync_config_split(buf, parts, COST_LIST_MAX);
    if (k == 0)
        return -1;
    for (size_t i = 0; i < k; i++)
        if (kb_parse_int64(parts[i], &out[i]) != KB_OK)
            return -1;
    *n = k;
    return 0;
}

static int parse_price(const char *s, double *out)
{
    char *end;
    double d;
    errno = 0;
    d = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(d >= 0.0) || d > 1e6)
        return -1;
    *out = d;
    return 0;
}

static void cost_text(const sync_cost_in *in, const sync_cost_out *o)
{
    printf("keybridge-sync cost: %lld secrets x %lld accounts, a run every %lld min "
           "(%lld runs/month per account, %d h/month), %lld changes/month\n",
           (long long)in->secrets, (long long)in->accounts, (long long)in->interval,
           (long long)o->runs, SYNC_COST_HOURS_PER_MONTH, (long long)in->changes);
    printf("prices: Secrets Manager $%.2f/secret-month, $%.2f/10,000 API calls; Lambda $%.2f/1M "
           "requests, $%.10f/GB-s (%lld MB, %lld ms per run)\n\n",
           in->price_secret, in->price_api, in->price_lambda_req, in->price_lambda_gbs,
           (long long)in->memory_mb, (long long)in->duration_ms);
    printf("%-34s %16s %16s\n", "", "keybridge-sync", "naive");
    printf("%-34s %16lld %16lld\n", "Secrets Manager calls per run", (long long)o->calls_per_run,
           (long long)o->naive_per_run);
    printf("%-34s %16lld %16lld\n", "Secrets Manager calls per month", (long long)o->calls,
           (long long)o->naive_calls);
    printf("%-34s %16.2f %16.2f\n", "Secrets Manager storage ($/month)", o->storage, o->storage);
    printf("%-34s %16.4f %16.4f\n", "Secrets Manager API ($/month)", o->api, o->naive_api);
    printf("%-34s %16.4f %16.4f\n", "Lambda ($/month)", o->lambda, o->lambda);
    printf("%-34s %16.2f %16.2f\n", "total ($/month)", o->total, o->naive_total);
}

static void cost_json(const sync_cost_in *in, const sync_cost_out *o)
{
    json_t *j = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:{s:f,s:f,s:f,"
        "s:f,s:I,s:I}}",
        "secrets", (json_int_t)in->secrets, "accounts", (json_int_t)in->accounts, "interval",
        (json_int_t)in->interval, "changes_per_month", (json_int_t)in->changes, "runs_per_month",
        (json_int_t)o->runs, "calls_per_run", (json_int_t)o->calls_per_run, "naive_calls_per_run",
        (json_int_t)o->naive_per_run, "change_calls", (json_int_t)o->change_calls, "calls",
        (json_int_t)o->calls, "naive_calls", (json_int_t)o->naive_calls, "storage", o->storage,
        "api", o->api, "naive_api", o->naive_api, "lambda_requests", o->lambda_req,
        "lambda_compute", o->lambda_gbs, "lambda", o->lambda, "total", o->total, "naive_total",
        o->naive_total, "prices", "secret_month", in->price_secret, "api_10k", in->price_api,
        "lambda_1m_requests", in->price_lambda_req, "lambda_gb_s", in->price_lambda_gbs,
        "memory_mb", (json_int_t)in->memory_mb, "duration_ms", (json_int_t)in->duration_ms);
    char *t = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    printf("%s\n", t ? t : "null");
    free(t);
    json_decref(j);
}

int sync_cmd_cost(const kb_config *cfg, int argc, char **argv)
{
    int64_t ns[COST_LIST_MAX], as[COST_LIST_MAX];
    size_t nn = 0, na = 0;
    int json = 0, md = 0;
    sync_cost_in in;
    (void)cfg;
    sync_cost_defaults(&in);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (strcmp(a, "--help") == 0) {
            printf(
                "usage: keybridge-sync cost --secrets N[,N...] --accounts A[,A...] [--interval "
                "15]\n"
                "       [--changes-per-month C] [--svid-files] [--memory-mb 128] "
                "[--duration-ms 200]\n"
                "       [--price-secret 0.40] [--price-api 0.05] [--price-lambda-requests 0.20]\n"
                "       [--price-lambda-gb-s 0.0000166667] [--json | --markdown]\n\n"
                "Monthly Secrets Manager storage and API cost and Lambda cost of N secrets\n"
                "synced into A accounts, from the calls one run makes (1 GetSecretValue for the\n"
                "SVID, unless --svid-files, + ceil(N/100) ListSecrets per no-op run; 4 calls per\n"
                "change and account), beside the naive model of one read per secret per run.\n"
                "C defaults to N (every secret rotated once a month). Prices: AWS list prices,\n"
                "us-east-1, x86_64, as of 2026-12-05 (defaults; the flags override them).\n"
                "Lambda's free tier is not subtracted. %d hours per month.\n",
                SYNC_COST_HOURS_PER_MONTH);
            return KB_EXIT_OK;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
            continue;
        } else if (strcmp(a, "--markdown") == 0) {
            md = 1;
            continue;
        } else if (strcmp(a, "--svid-files") == 0) {
            in.svid_secret = 0;
            continue;
        } else if (v == NULL) {
            bad = 1;
        } else if (strcmp(a, "--secrets") == 0) {
            bad = parse_int_list(v, ns, &nn);
        } else if (strcmp(a, "--accounts") == 0) {
            bad = parse_int_list(v, as, &na);
        } else if (strcmp(a, "--interval") == 0) {
            bad = kb_parse_int64(v, &in.interval) != KB_OK;
        } else if (strcmp(a, "--changes-per-month") == 0) {
            bad = kb_parse_int64(v, &in.changes) != KB_OK || in.changes < 0;
        } else if (strcmp(a, "--memory-mb") == 0) {
            bad = kb_parse_int64(v, &in.memory_mb) != KB_OK;
        } else if (strcmp(a, "--duration-ms") == 0) {
            bad = kb_parse_int64(v, &in.duration_ms) != KB_OK;
        } else if (strcmp(a, "--price-secret") == 0) {
            bad = parse_price(v, &in.price_secret);
        } else if (strcmp(a, "--price-api") == 0) {
            bad = parse_price(v, &in.price_api);
        } else if (strcmp(a, "--price-lambda-requests") == 0) {
            bad = parse_price(v, &in.price_lambda_req);
        } else if (strcmp(a, "--price-lambda-gb-s") == 0) {
            bad = parse_price(v, &in.price_lambda_gbs);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "keybridge-sync cost: bad or incomplete argument '%s' (see --help)\n",
                    a);
            return KB_EXIT_USAGE;
        }
        i++;
    }
    if (nn == 0 || na == 0 || (json && md)) {
        fprintf(stderr, "keybridge-sync cost: need --secrets and --accounts (see --help)\n");
        return KB_EXIT_USAGE;
    }
    if (md)
        printf("| secrets N | accounts A | runs/month/account | calls/run (syncer, naive) | "
               "API calls/month (syncer, naive) | storage $ | API $ (syncer, naive) | "
               "Lambda $ | total $ (syncer, naive) |\n"
               "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t i = 0; i < nn; i++) {
        for (size_t k = 0; k < na; k++) {
            sync_cost_in x = in;
            sync_cost_out o;
            x.secrets = ns[i];
            x.accounts = as[k];
            if (in.changes < 0)
                x.changes = ns[i];
            if (sync_cost_compute(&x, &o) != KB_OK) {
                fprintf(stderr,
                        "keybridge-sync cost: out of range (1 <= N <= %d, 1 <= A <= %d, interval "
                        "divides 60, C <= %d, 128 <= memory <= 10240, 1 <= duration <= 900000, "
                        "prices >= 0)\n",
                        SYNC_COST_SECRETS_MAX, SYNC_COST_ACCOUNTS_MAX, SYNC_COST_CHANGES_MAX);
                return KB_EXIT_USAGE;
            }
            if (json)
                cost_json(&x, &o);
            else if (md)
                printf("| %lld | %lld | %lld | %lld, %lld | %lld, %lld | %.2f | %.4f, %.4f | %.4f "
                       "| %.2f, %.2f |\n",
                       (long long)x.secrets, (long long)x.accounts, (long long)o.runs,
                       (long long)o.calls_per_run, (long long)o.naive_per_run, (long long)o.calls,
                       (long long)o.naive_calls, o.storage, o.api, o.naive_api, o.lambda, o.total,
                       o.naive_total);
            else
                cost_text(&x, &o);
        }
    }
    return KB_EXIT_OK;
}
