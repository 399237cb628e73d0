/* ca_cmd_reg.c - keybridge-ca register | list | remove | renew-once (the registrations). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ca_cmd.h"
#include "ca_policy.h"
#include "ca_renew.h"
#include "ca_target.h"
#include "lib/log.h"
#include "lib/prog.h"

int ca_cmd_register(const kb_config *cfg, int argc, char **argv)
{
    const char *id_s = NULL, *target = NULL, *why = NULL;
    int64_t ttl = kb_config_duration(cfg, "ca", "default_ttl"), avail = -1;
    char td[SPIFFE_TD_MAX + 1];
    char err[512];
    ca_policy *pol = NULL;
    ca_target_spec t;
    ca_ctx *x = NULL;
    spiffe_id id;
    ca_sans sans;
    ca_reg r;
    kb_err rc;
    int code;

    memset(&r, 0, sizeof(r));
    memset(&sans, 0, sizeof(sans));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            printf("usage: keybridge-ca register --spiffe-id ID --target TARGET [--ttl 1h]\n"
                   "       [--availability 30m] [--renewable] [--region R] [--endpoint URL]\n"
                   "       [--credentials-file FILE] [--dns NAME]... [--ip ADDR]...\n"
                   "       [--adopt-spire-svid]\n\n"
                   "TARGET is dir:/ABSOLUTE/PATH or secretsmanager:ACCOUNT:NAME. The policy\n"
                   "file decides which IDs may go to which targets, and which DNS names and IP\n"
                   "addresses (--dns, --ip: SANs for server SVIDs) they may carry; anything else\n"
                   "is refused. --adopt-spire-svid (Secrets Manager only; off by default) lets\n"
                   "the CA take over a secret SPIRE's SVIDStore plugin wrote (tag\n"
                   "spire-svid=true, no keybridge tags) when migrating from SPIRE.\n"
                   "The daemon (serve) writes the SVID and keeps it fresh.\n");
            return KB_EXIT_OK;
        } else if (strcmp(a, "--renewable") == 0) {
            r.renewable = 1;
            continue;
        } else if (strcmp(a, "--adopt-spire-svid") == 0) {
            r.adopt_spire = 1;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "keybridge-ca register: %s needs a value\n", a);
            return KB_EXIT_USAGE;
        }
        i++;
        if (strcmp(a, "--spiffe-id") == 0) {
            id_s = v;
        } else if (strcmp(a, "--target") == 0) {
            target = v;
        } else if (strcmp(a, "--ttl") == 0) {
            if (kb_parse_duration(v, &ttl) != KB_OK) {
                fprintf(stderr, "keybridge-ca register: --ttl takes a duration (30m, 1h)\n");
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(a, "--availability") == 0) {
            if (kb_parse_duration(v, &avail) != KB_OK) {
                fprintf(stderr, "keybridge-ca register: --availability takes a duration\n");
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(a, "--dns") == 0 || strcmp(a, "--ip") == 0) {
            if ((a[2] == 'd' ? ca_sans_add_dns(&sans, v, &why) : ca_sans_add_ip(&sans, v, &why)) !=
                KB_OK) {
                fprintf(stderr, "keybridge-ca register: %s %s: %s\n", a, v, why);
                return KB_EXIT_USAGE;
            }
        } else if (strcmp(a, "--region") == 0 && strlen(v) < sizeof(r.region)) {
            snprintf(r.region, sizeof(r.region), "%s", v);
        } else if (strcmp(a, "--endpoint") == 0 && strlen(v) < sizeof(r.endpoint)) {
            snprintf(r.endpoint, sizeof(r.endpoint), "%s", v);
        } else if (strcmp(a, "--credentials-file") == 0 && strlen(v) < sizeof(r.creds_file)) {
            snprintf(r.creds_file, sizeof(r.creds_file), "%s", v);
        } else {
            fprintf(stderr, "keybridge-ca register: unexpected '%s'\n", a);
            return KB_EXIT_USAGE;
        }
    }
    if (id_s == NULL || target == NULL) {
        fprintf(stderr, "keybridge-ca register: --spiffe-id and --target are required\n");
        return KB_EXIT_USAGE;
    }
    if (spiffe_id_parse_str(id_s, &id, &why) != KB_OK) {
        fprintf(stderr, "keybridge-ca register: invalid SPIFFE ID: %s\n", why);
        return KB_EXIT_USAGE;
    }
    if (spiffe_id_is_root(&id)) {
        fprintf(stderr, "keybridge-ca register: invalid SPIFFE ID: a workload ID needs a path\n");
        return KB_EXIT_USAGE;
    }
    if (ca_target_parse(target, &t, &why) != KB_OK) {
        fprintf(stderr, "keybridge-ca register: invalid target: %s\n", why);
        return KB_EXIT_USAGE;
    }
    if (ttl < 60 || ttl > 30 * 86400) {
        fprintf(stderr, "keybridge-ca register: --ttl must be between 1m and 30d\n");
        return KB_EXIT_USAGE;
    }
    if (avail < 0)
        avail = ttl / 4;
    if (avail >= ttl) {
        fprintf(stderr, "keybridge-ca register: --availability must be shorter than --ttl\n");
        return KB_EXIT_USAGE;
    }
    if (r.adopt_spire && t.kind != CA_TARGET_SM) {
        fprintf(stderr, "keybridge-ca register: --adopt-spire-svid is for secretsmanager: "
                        "targets (SPIRE's SVIDStore secrets)\n");
        return KB_EXIT_USAGE;
    }
    if (r.renewable && t.kind != CA_TARGET_DIR) {
        fprintf(stderr, "keybridge-ca register: --renewable is for data-center workloads "
                        "(dir: targets); stored SVIDs are never renewed over the API\n");
        return KB_EXIT_USAGE;
    }
    if ((code = ca_cmd_load_policy(cfg, &pol)) != KB_EXIT_OK)
        return code;
    if ((code = ca_ctx_open(cfg, 0, &x)) != KB_EXIT_OK)
        goto out;
    if (ca_store_trust_domain(ca_ctx_store(x), td, sizeof(td)) != KB_OK ||
        !spiffe_id_member_of(&id, td)) {
        fprintf(stderr, "keybridge-ca register: %s is not in this CA's trust domain\n", id_s);
        code = KB_EXIT_DENIED;
        goto out;
    }
    if (ca_policy_check(pol, &id, &t, ttl, r.renewable, &why) != KB_OK) {
        fprintf(stderr, "keybridge-ca register: refused by policy: %s\n", why);
        kb_log(KB_LOG_WARN, "registration_refused", "spiffe_id", id_s, "target", target, "why", why,
               NULL);
        code = KB_EXIT_DENIED;
        goto out;
    }
    if (ca_policy_check_sans(pol, &id, &sans, err, sizeof(err)) != KB_OK) {
        fprintf(stderr, "keybridge-ca register: refused by policy: %s\n", err);
        kb_log(KB_LOG_WARN, "registration_refused", "spiffe_id", id_s, "target", target, "why", err,
               NULL);
        code = KB_EXIT_DENIED;
        goto out;
    }
    if (ca_sans_format(&sans, r.sans, sizeof(r.sans)) != KB_OK) {
        code = KB_EXIT_FAIL;
        goto out;
    }
    snprintf(r.spiffe_id, sizeof(r.spiffe_id), "%s", id_s);
    snprintf(r.target, sizeof(r.target), "%s", target);
    r.ttl = ttl;
    r.avail = avail;
    rc = ca_store_reg_add(ca_ctx_store(x), &r);
    if (rc != KB_OK) {
        fprintf(stderr, "keybridge-ca register: %s\n",
                rc == KB_ERR_EXISTS ? "already registered (same ID and target)" : kb_err_str(rc));
        code = rc == KB_ERR_EXISTS ? KB_EXIT_FAIL : kb_exit_code(rc);
        goto out;
    }
    kb_log(KB_LOG_INFO, "registered", "spiffe_id", id_s, "target", target, NULL);
    printf("%lld\n", (long long)r.rid);
out:
    ca_ctx_close(x);
    ca_policy_free(pol);
    return code;
}

int ca_cmd_list(const kb_config *cfg, int argc, char **argv)
{
    ca_ctx *x = NULL;
    ca_reg *r = NULL;
    size_t n = 0;
    int code;

    (void)argv;
    if (argc > 1) {
        printf("usage: keybridge-ca list\n\nOne registration per line: id, SPIFFE ID, target, "
               "ttl, availability, renewable, notAfter of the stored SVID, next renewal,\n"
               "failures, and the DNS/IP SANs if any.\n");
        return KB_EXIT_USAGE;
    }
    if ((code = ca_ctx_open(cfg, 0, &x)) != KB_EXIT_OK)
        return code;
    if (ca_store_reg_list(ca_ctx_store(x), &r, &n) != KB_OK) {
        ca_ctx_close(x);
        return KB_EXIT_FAIL;
    }
    for (size_t i = 0; i < n; i++)
        printf("%lld\t%s\t%s\tttl=%lld\tavailability=%lld\trenewable=%s\tnot_after=%lld\t"
               "next_renew=%lld\tfailures=%lld%s%s%s\n",
               (long long)r[i].rid, r[i].spiffe_id, r[i].target, (long long)r[i].ttl,
               (long long)r[i].avail, r[i].renewable ? "yes" : "no", (long long)r[i].not_after,
               (long long)r[i].next_renew, (long long)r[i].failures, r[i].sans[0] ? "\tsans=" : "",
               r[i].sans, r[i].adopt_spire ? "\tadopt_spire=yes" : "");
    free(r);
    ca_ctx_close(x);
    return KB_EXIT_OK;
}

int ca_cmd_remove(const kb_config *cfg, int argc, char **argv)
{
    char td[SPIFFE_TD_MAX + 1] = "";
    const char *why = NULL;
    ca_target_env env;
    int64_t rid = 0;
    ca_ctx *x = NULL;
    ca_reg r;
    kb_err rc;
    int code;

    if (argc != 3 || strcmp(argv[1], "--id") != 0 || kb_parse_int64(argv[2], &rid) != KB_OK) {
        printf("usage: keybridge-ca remove --id N\n\nRemove registration N (see list) and "
               "delete its stored SVID (Secrets Manager: 7-day recovery window).\n");
        return argc == 2 && strcmp(argv[1], "--help") == 0 ? KB_EXIT_OK : KB_EXIT_USAGE;
    }
    if ((code = ca_ctx_open(cfg, 0, &x)) != KB_EXIT_OK)
        return code;
    if (ca_store_trust_domain(ca_ctx_store(x), td, sizeof(td)) != KB_OK)
        td[0] = '\0';
    /* Row first (in the write lock), then the stored SVID: a renewal under way either wrote
     * before this and its write is deleted below, or sees the row gone and writes nothing. */
    rc = ca_store_reg_remove(ca_ctx_store(x), rid, &r);
    if (rc != KB_OK) {
        fprintf(stderr, "keybridge-ca remove: %s\n",
                rc == KB_ERR_NOT_FOUND ? "no such registration" : kb_err_str(rc));
        ca_ctx_close(x);
        return kb_exit_code(rc);
    }
    ca_cmd_target_env(cfg, NULL, td, &env);
    rc = ca_target_remove(&env, &r, &why);
    if (rc != KB_OK) {
        fprintf(stderr,
                "keybridge-ca remove: registration removed, but the stored SVID was "
                "not deleted: %s\n",
                why ? why : kb_err_str(rc));
        code = kb_exit_code(rc);
    } else {
        kb_log(KB_LOG_INFO, "registration_removed", "spiffe_id", r.spiffe_id, "target", r.target,
               NULL);
        printf("removed %lld\n", (long long)rid);
    }
    ca_ctx_close(x);
    return code;
}

int ca_cmd_renew_once(const kb_config *cfg, int argc, char **argv)
{
    ca_policy *pol = NULL;
    ca_renewer *rn = NULL;
    ca_renew_opts ro;
    ca_ctx *x = NULL;
    int code, ok = 0, bad = 0, force = 0;
    kb_err rc;

    if (argc == 2 && strcmp(argv[1], "--force") == 0)
        force = 1;
    else if (argc > 1) {
        printf("usage: keybridge-ca renew-once [--force]\n\nOne pass of the renewal loop: renew "
               "every registration that is due (--force: every registration, e.g. after a\n"
               "suspected leaf key exposure), then exit (1 if any failed).\n");
        return KB_EXIT_USAGE;
    }
    if ((code = ca_cmd_load_policy(cfg, &pol)) != KB_EXIT_OK)
        return code;
    if ((code = ca_ctx_open(cfg, 1, &x)) != KB_EXIT_OK)
        goto out;
    memset(&ro, 0, sizeof(ro));
    ro.ca = ca_ctx_ca(x);
    ro.st = ca_ctx_store(x);
    ro.policy = pol;
    ro.tick = kb_config_duration(cfg, "renew", "tick");
    ro.force = force;
    ro.lease = kb_config_duration(cfg, "renew", "lease");
    ca_cmd_target_env(cfg, ro.ca, NULL, &ro.env);
    if ((rc = ca_renewer_new(&ro, &rn)) == KB_OK)
        rc = ca_renew_pass(rn, time(NULL), &ok, &bad);
    printf("renewed %d failed %d\n", ok, bad);
    code = rc != KB_OK ? kb_exit_code(rc) : (bad ? KB_EXIT_FAIL : KB_EXIT_OK);
out:
    ca_renewer_free(rn);
    ca_ctx_close(x);
    ca_policy_free(pol);
    return code;
}
