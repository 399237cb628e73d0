/* populate.c - fill a bootstrapped keybridged store quickly for the benchmark (not a product
 * tool; the CMake target bench_keybridged_populate, run by bench/keybridged/run.sh).
 *
 *   populate KEYBRIDGED_CONF SECRETS CLIENTS GROUPS BENCH_SPIFFE_ID
 *
 * Goes through service.h / store.h exactly like the admin API does (each secret sealed under its
 * own data key wrapped in the token, checksum, audit event; client, membership and grant rows
 * carry their row MACs), only without HTTP in between. Layout: GROUPS groups g0..; client i
 * (spiffe://example.org/bench/c<i>) is a member of group i % GROUPS; secret j (bench-s<j>) is
 * granted to group j % GROUPS. BENCH_SPIFFE_ID gets its own group "bench" with exactly 20 of the
 * secrets (bench-s0..19), so its list is the 20-secret list the benchmark measures.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/config.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/secbuf.h"
#include "server/server_config.h"
#include "server/service.h"
#include "server/store.h"

#define BENCH_LIST_SECRETS 20

static int64_t arg_num(const char *s)
{
    int64_t v = 0;
    if (kb_parse_int64(s, &v) != KB_OK || v < 0) {
        fprintf(stderr, "populate: bad number '%s'\n", s);
        exit(2);
    }
    return v;
}

#define CHECK(expr, what)                                                                          \
    do {                                                                                           \
        kb_err e_ = (expr);                                                                        \
        if (e_ != KB_OK && e_ != KB_ERR_EXISTS) {                                                  \
            fprintf(stderr, "populate: %s: %s\n", what, kb_err_str(e_));                           \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    kb_config *cfg = NULL;
    svc *s = NULL;
    char err[256], name[64], id[128];
    int64_t *gids = NULL, bench_gid = 0, cid = 0, sid = 0, nsec, ncli, ngrp;
    int rc = 1;
    svc_actor a = {.identity = "spiffe://example.org/ns/ops/sa/admin",
                   .peer = "local",
                   .now = (int64_t)time(NULL)};

    if (argc != 6) {
        fprintf(stderr, "usage: populate KEYBRIDGED_CONF SECRETS CLIENTS GROUPS BENCH_ID\n");
        return 2;
    }
    nsec = arg_num(argv[2]);
    ncli = arg_num(argv[3]);
    ngrp = arg_num(argv[4]);
    if (ngrp < 1 || nsec < BENCH_LIST_SECRETS) {
        fprintf(stderr, "populate: need at least 1 group and %d secrets\n", BENCH_LIST_SECRETS);
        return 2;
    }
    if (kb_secmem_init() != KB_OK) {
        fprintf(stderr, "populate: cannot lock memory (RLIMIT_MEMLOCK)\n");
        return 1;
    }
    kb_json_init();
    kb_log_set_level(KB_LOG_WARN);
    if (kb_config_load(server_config_keys, argv[1], SERVER_ENV_PREFIX, &cfg, err, sizeof(err)) !=
        KB_OK) {
        fprintf(stderr, "populate: configuration: %s\n", err);
        return 1;
    }
    CHECK(svc_open(cfg, false, &s), "open");
    store *st = svc_store(s);
    gids = calloc((size_t)ngrp, sizeof(*gids));
    if (gids == NULL)
        goto out;
    for (int64_t g = 0; g < ngrp; g++) {
        snprintf(name, sizeof(name), "g%lld", (long long)g);
        CHECK(store_group_create(st, name, "", a.identity, a.now, &gids[g], NULL), "group");
    }
    CHECK(store_group_create(st, "bench", "", a.identity, a.now, &bench_gid, NULL), "bench group");
    for (int64_t i = 0; i < ncli; i++) {
        store_client_new c = {.enabled = true};
        snprintf(id, sizeof(id), "spiffe://example.org/bench/c%lld", (long long)i);
        c.spiffe_id = id;
        c.app_name = "bench";
        CHECK(store_client_create(st, &c, a.identity, a.now, &cid, NULL), "client");
        CHECK(store_membership_add(st, cid, gids[i % ngrp], NULL), "membership");
    }
    {
        store_client_new c = {.spiffe_id = argv[5], .app_name = "bench", .enabled = true};
        CHECK(store_client_create(st, &c, a.identity, a.now, &cid, NULL), "bench client");
        CHECK(store_membership_add(st, cid, bench_gid, NULL), "bench membership");
    }
    for (int64_t j = 0; j < nsec; j++) {
        /* Content is not secret here, but sized like a typical credential (64 bytes). */
        uint8_t content[64];
        memset(content, 'a' + (int)(j % 26), sizeof(content));
        snprintf(name, sizeof(name), "bench-s%lld", (long long)j);
        svc_secret_spec sp = {.name = name,
                              .content = content,
                              .content_len = sizeof(content),
                              .metadata = "{\"mode\":\"0400\",\"owner\":\"bench\"}"};
        CHECK(svc_secret_create(s, &a, &sp, &sid), "secret");
        CHECK(store_grant_add(st, gids[j % ngrp], sid, NULL), "grant");
        if (j < BENCH_LIST_SECRETS)
            CHECK(store_grant_add(st, bench_gid, sid, NULL), "bench grant");
        if ((j + 1) % 10000 == 0)
            fprintf(stderr, "populate: %lld secrets\n", (long long)(j + 1));
    }
    rc = 0;
out:
    free(gids);
    svc_close(s);
    kb_config_free(cfg);
    return rc;
}
