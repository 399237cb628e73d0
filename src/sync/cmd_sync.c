/* cmd_sync.c - `keybridge-sync sync`: one run (identity, source, sinks, sync_run), or the Lambda
 * runtime loop around it; sync_once is also what the daemon runs on its schedule. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"
#include "lambda.h"
#include "lib/awsreq.h"
#include "lib/failover.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/prog.h"
#include "sink_dir.h"
#include "sink_secretsmanager.h"
#include "source_keybridge.h"
#include "sync.h"
#include "sync_cmd.h"
#include "sync_config.h"

static kb_err load_identity(const kb_config *cfg, const sync_sm_opts *smo, sync_identity *id,
                            sync_summary *sum)
{
    const char *server_id = kb_config_str(cfg, "source", "server_id");
    const char *secret_id = kb_config_str(cfg, "source", "svid_secret_id");
    const char *why = "";
    spiffe_id sid;
    kb_err rc;
    if (server_id == NULL || spiffe_id_parse_str(server_id, &sid, &why) != KB_OK ||
        spiffe_id_is_root(&sid)) {
        sync_summary_fail(sum, KB_ERR_CONFIG,
                          "[source] server_id is required and must be a SPIFFE ID (%s)",
                          server_id ? why : "unset");
        return KB_ERR_CONFIG;
    }
    if (secret_id) {
        kb_secret *v = NULL;
        if (smo == NULL) {
            sync_summary_fail(sum, KB_ERR_CONFIG,
                              "[source] svid_secret_id needs AWS credentials and a region");
            return KB_ERR_CONFIG;
        }
        rc = sync_sm_get_value(smo, secret_id, &v, sum);
        if (rc != KB_OK) {
            sync_summary_fail(sum, rc, "cannot read the SVID secret %s (%s)", secret_id,
                              kb_err_str(rc));
            return rc;
        }
        rc = sync_identity_from_svidstore(kb_secret_cdata(v), kb_secret_len(v),
                                          spiffe_id_trust_domain(&sid), id, &why);
        kb_secret_free(v);
    } else {
        const char *c = kb_config_str(cfg, "source", "svid_cert_file"),
                   *k = kb_config_str(cfg, "source", "svid_key_file"),
                   *b = kb_config_str(cfg, "source", "bundle_file");
        if (!c || !k || !b) {
            sync_summary_fail(sum, KB_ERR_CONFIG,
                              "set [source] svid_cert_file, svid_key_file and bundle_file, or "
                              "svid_secret_id");
            return KB_ERR_CONFIG;
        }
        rc = sync_identity_from_files(c, k, b, spiffe_id_trust_domain(&sid), id, &why);
    }
    if (rc != KB_OK)
        sync_summary_fail(sum, rc, "cannot load our SVID: %s (%s)", why ? why : "", kb_err_str(rc));
    return rc;
}

/* One run: identity, source, sinks, sync_run. deadline_ms: the Lambda invocation's (monotonic),
 * or 0 for --deadline / [run] deadline from the start of the run. */
kb_err sync_once(void *arg, int64_t deadline_ms, sync_summary *sum)
{
    sync_once_ctx *rx = arg;
    const kb_config *cfg = rx->cfg;
    const char *target = kb_config_str(cfg, "sink", "target");
    const char *endpoint = kb_config_str(cfg, "sink", "endpoint");
    const char *policy = kb_config_str(cfg, "sink", "delete_policy");
    char regbuf[1024], ownbuf[2048], grpbuf[2048], ep[512];
    const char *regions[SYNC_MAX_REGIONS + 1], *owners[SYNC_MAX_ALLOW + 1],
        *groups[SYNC_MAX_ALLOW + 1];
    size_t nreg = 0, nsinks = 0;
    sync_sink *sinks[SYNC_MAX_REGIONS];
    sync_source *src = NULL;
    sync_identity id;
    kb_aws_creds creds;
    int have_creds = 0, is_sm;
    sync_sm_opts smo;
    sync_run_opts ro;
    int64_t t0 = sync_mono_ms();
    sync_clock clk;
    kb_err rc = KB_OK;

    memset(&clk, 0, sizeof(clk));
    if (deadline_ms > 0) {
        clk.deadline_ms = deadline_ms;
    } else {
        int64_t d =
            rx->deadline_s >= 0 ? rx->deadline_s : kb_config_duration(cfg, "run", "deadline");
        clk.deadline_ms = d > 0 ? t0 + d * 1000 : 0;
    }
    memset(&id, 0, sizeof(id));
    memset(&creds, 0, sizeof(creds));
    memset(&smo, 0, sizeof(smo));
    memset(&ro, 0, sizeof(ro));
    if (target == NULL || kb_config_str(cfg, "source", "url") == NULL) {
        sync_summary_fail(sum, KB_ERR_CONFIG, "[source] url and [sink] target are required");
        return KB_ERR_CONFIG;
    }
    is_sm = strcmp(target, "secretsmanager") == 0 || strcmp(target, "secretsmanager:") == 0;
    if (!is_sm && strncmp(target, "dir:", 4) != 0) {
        sync_summary_fail(sum, KB_ERR_CONFIG, "[sink] target must be dir:PATH or secretsmanager");
        return KB_ERR_CONFIG;
    }
    if (sync_config_fraction(kb_config_str(cfg, "sink", "max_delete_fraction"),
                             &ro.max_delete_fraction) != KB_OK ||
        (strcmp(policy, "delete") != 0 && strcmp(policy, "retain") != 0)) {
        sync_summary_fail(sum, KB_ERR_CONFIG,
                          "[sink] max_delete_fraction must be 0..1 and delete_policy "
                          "delete or retain");
        return KB_ERR_CONFIG;
    }
    ro.retain_deletes = strcmp(policy, "retain") == 0;
    ro.clock = &clk;
    ro.allow_mass_delete = rx->allow_mass_delete;
    snprintf(regbuf, sizeof(regbuf), "%s",
             kb_config_str(cfg, "sink", "regions")
                 ? kb_config_str(cfg, "sink", "regions")
                 : (getenv("AWS_REGION") ? getenv("AWS_REGION") : "us-east-1"));
    nreg = sync_config_split(regbuf, regions, SYNC_MAX_REGIONS);
    if (is_sm || kb_config_str(cfg, "source", "svid_secret_id")) {
        rc = kb_aws_creds_from_env(&creds);
        if (rc != KB_OK) {
            sync_summary_fail(sum, KB_ERR_CONFIG,
                              "AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                              "(and AWS_SESSION_TOKEN) (%s)",
                              kb_err_str(rc));
            rc = KB_ERR_CONFIG;
            goto out;
        }
        have_creds = 1;
        if (nreg == 0) {
            sync_summary_fail(sum, KB_ERR_CONFIG, "[sink] regions is empty");
            rc = KB_ERR_CONFIG;
            goto out;
        }
        smo.creds = &creds;
        smo.ca_file = kb_config_str(cfg, "sink", "ca_file");
        smo.timeout_ms = (long)kb_config_duration(cfg, "sink", "timeout") * 1000;
        smo.clock = &clk;
        smo.rate = kb_config_int(cfg, "sink", "rate");
        if (smo.timeout_ms <= 0 || smo.rate < 0 || smo.rate > SYNC_SM_RATE_MAX) {
            sync_summary_fail(sum, KB_ERR_CONFIG,
                              "[sink] timeout must be positive and [sink] rate 0..%d",
                              SYNC_SM_RATE_MAX);
            rc = KB_ERR_CONFIG;
            goto out;
        }
    }
    /* the SVID is read at every run: a rotated one is picked up without a restart */
    if (have_creds) {
        smo.region = regions[0];
        smo.endpoint = sync_config_endpoint(endpoint, 0, nreg, regions[0], ep, sizeof(ep));
    }
    KB_GUARD_OUT(rc, load_identity(cfg, have_creds ? &smo : NULL, &id, sum));
    {
        sync_kb_opts ko = {
            .url = kb_config_str(cfg, "source", "url"),
            .server_id = kb_config_str(cfg, "source", "server_id"),
            .identity = &id,
            .timeout_ms = (long)kb_config_duration(cfg, "source", "timeout") * 1000,
            .clock = &clk,
        };
        rc = sync_source_keybridge_new(&ko, &src);
        if (rc != KB_OK) {
            sync_summary_fail(sum, rc,
                              "[source] url must be https://, or a comma-separated list of at "
                              "most %d https:// URLs (%s)",
                              KB_FAILOVER_MAX_URLS, kb_err_str(rc));
            goto out;
        }
    }
    if (is_sm) {
        for (size_t i = 0; i < nreg; i++) {
            sync_sm_opts o = smo;
            char rep[512];
            o.region = regions[i];
            o.endpoint = sync_config_endpoint(endpoint, i, nreg, regions[i], rep, sizeof(rep));
            if (o.endpoint && o.endpoint[0] == '\0') {
                sync_summary_fail(sum, KB_ERR_CONFIG,
                                  "[sink] endpoint: give one endpoint per region");
                rc = KB_ERR_CONFIG;
                goto out;
            }
            rc = sync_sink_sm_new(&o, &sinks[nsinks]);
            if (rc != KB_OK) {
                sync_summary_fail(sum, rc, "bad secretsmanager sink for region %s", regions[i]);
                goto out;
            }
            nsinks++;
        }
    } else {
        sync_dir_opts d = {.path = target + 4, .owners = owners, .groups = groups, .as_root = -1};
        snprintf(ownbuf, sizeof(ownbuf), "%s", kb_config_str(cfg, "sink", "owners"));
        snprintf(grpbuf, sizeof(grpbuf), "%s", kb_config_str(cfg, "sink", "groups"));
        sync_config_split(ownbuf, owners, SYNC_MAX_ALLOW);
        sync_config_split(grpbuf, groups, SYNC_MAX_ALLOW);
        rc = sync_sink_dir_new(&d, &sinks[0]);
        if (rc != KB_OK) {
            sync_summary_fail(sum, rc, "cannot open the sink directory %s", target + 4);
            goto out;
        }
        nsinks = 1;
    }
    rc = sync_run(src, sinks, nsinks, &ro, sum);
    if (rc != KB_OK && sum->err != KB_OK && sum->calls[SYNC_OP_KB_LIST] > 0 &&
        sync_source_keybridge_why(src)[0] != '\0') {
        /* make a TLS refusal readable: which rule, or which identity */
        char e[512];
        snprintf(e, sizeof(e), "%.200s: %.300s", sum->error, sync_source_keybridge_why(src));
        snprintf(sum->error, sizeof(sum->error), "%s", e);
    }
out:
    for (size_t i = 0; i < nsinks; i++)
        sync_sink_free(sinks[i]);
    if (src)
        src->ops->free(src);
    sync_identity_clear(&id);
    if (have_creds)
        kb_aws_creds_free(&creds);
    sum->duration_ms = sync_mono_ms() - t0;
    return rc;
}

void sync_once_print(const sync_summary *sum)
{
    json_t *j = sync_summary_json(sum);
    char *s = j ? kb_json_dump(j) : NULL;
    printf("%s\n", s ? s : "{\"ok\":false}");
    fflush(stdout);
    kb_json_free_str(s);
    json_decref(j);
}

static int exit_for(kb_err rc, const sync_summary *sum)
{
    if (rc == KB_OK && sync_summary_ok(sum))
        return KB_EXIT_OK;
    if (sum->items) /* some secrets failed or were deferred: 1, whatever their own errors */
        return KB_EXIT_FAIL;
    if (sum->err != KB_OK && sum->err != KB_ERR_NOT_FOUND)
        return kb_exit_code(sum->err) == KB_EXIT_OK ? KB_EXIT_FAIL : kb_exit_code(sum->err);
    return KB_EXIT_FAIL;
}

int sync_cmd_sync(const kb_config *cfg, int argc, char **argv)
{
    sync_once_ctx rx = {cfg, 0, -1};
    sync_summary sum;
    kb_err rc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--allow-mass-delete") == 0) {
            rx.allow_mass_delete = 1;
        } else if (strcmp(argv[i], "--deadline") == 0 && i + 1 < argc) {
            if (kb_parse_duration(argv[++i], &rx.deadline_s) != KB_OK || rx.deadline_s < 0) {
                fprintf(stderr, "keybridge-sync sync: --deadline takes a duration (60s, 2m)\n");
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: keybridge-sync [--config FILE] sync [--allow-mass-delete] "
                   "[--deadline DURATION]\n\n"
                   "One run: list from keybridged, diff against the sink, fetch what changed,\n"
                   "write and delete. Prints one JSON summary on stdout; exit 0 only if\n"
                   "everything applied. 429/503 answers and deferred names are retried after\n"
                   "their Retry-After plus jitter until --deadline ([run] deadline, default\n"
                   "60s); what is left is reported as deferred (exit non-zero, no deletes).\n"
                   "With AWS_LAMBDA_RUNTIME_API set, runs the Lambda custom runtime loop\n"
                   "instead (deadline: the invocation's).\n");
            return KB_EXIT_OK;
        } else {
            fprintf(stderr, "keybridge-sync sync: unexpected '%s' (see --help)\n", argv[i]);
            return KB_EXIT_USAGE;
        }
    }
    if (getenv("AWS_LAMBDA_RUNTIME_API") != NULL) {
        kb_err init = KB_OK;
        const char *msg = NULL;
        if (kb_config_str(cfg, "source", "url") == NULL ||
            kb_config_str(cfg, "source", "server_id") == NULL ||
            kb_config_str(cfg, "sink", "target") == NULL) {
            init = KB_ERR_CONFIG;
            msg = "configuration: [source] url, [source] server_id and [sink] target are "
                  "required (KEYBRIDGE_SYNC_SOURCE_URL, ...)";
        }
        return sync_lambda_run(getenv("AWS_LAMBDA_RUNTIME_API"), init, msg, sync_once, &rx);
    }
    sync_summary_init(&sum);
    rc = sync_once(&rx, 0, &sum);
    sync_once_print(&sum);
    if (sum.err != KB_OK)
        fprintf(stderr, "keybridge-sync: %s\n", sum.error);
    return exit_for(rc, &sum);
}
