/* test_store_threads.c - one store handle shared by many threads, as keybridged's event loops
 * share it: mixed reads (client listing, single and batch gets, activity markers, admin lists)
 * and writes (creates, grants, new versions, client flag changes) at once, checking every
 * result, not just the absence of crashes. The SQLite backend serves reads from a pool of WAL
 * reader connections and writes from one writer connection; these tests pin down what that must
 * keep: every read sees every write committed before it started (also on another thread's
 * connection), a listing is one consistent snapshot, more threads than pooled connections all
 * get served, and errors on one thread do not leak state into the next user of a connection.
 * Run under ASan/UBSan (KB_SANITIZE=ON) and, when built so, ThreadSanitizer.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kbtest.h"
#include "kbtest_store.h"
#include "lib/err.h"
#include "lib/secbuf.h"
#include "server/store.h"
#include "server/store_impl.h" /* store_generation */

#define T0 1700000000
#define N0 10         /* secrets granted before the threads start */
#define WRITERS 2     /* threads creating and granting secrets */
#define WRITES 20     /* secrets per writer */
#define READERS 6     /* more than the pool's connections on a 2-core machine */
#define READ_LOOPS 60 /* iterations per reader */

static const char *ADMIN = "spiffe://example.org/admin";
static const char *CLIENT = "spiffe://example.org/ns/app/sa/reader";
static const char *OTHER = "spiffe://example.org/ns/other/sa/x";
static const char *const prefixes[] = {"/lambda/", NULL};

typedef struct {
    char *dir;
    char path[512];
    kb_secret *key;
    store *st;
    int64_t client, other, group, other_group;
    atomic_int committed; /* writer secrets created, granted and acknowledged */
    atomic_int stop;
} fx;

/* Blobs name the (id, version) they were sealed for, so a reader can tell that the envelope it
 * got belongs to the row it asked for (no cross-talk between threads' statements). */
static kb_err fake_seal(void *ctx, int64_t id, int64_t version, store_envelope *env,
                        uint8_t checksum[STORE_CHECKSUM_LEN])
{
    char buf[64];
    int n;
    (void)ctx;
    n = snprintf(buf, sizeof(buf), "wk-%lld-%lld", (long long)id, (long long)version);
    env->wrapped_key = malloc((size_t)n);
    if (env->wrapped_key == NULL)
        return KB_ERR_NOMEM;
    memcpy(env->wrapped_key, buf, (size_t)n);
    env->wrapped_key_len = (size_t)n;
    n = snprintf(buf, sizeof(buf), "sealed-%lld-%lld", (long long)id, (long long)version);
    env->sealed = malloc((size_t)n);
    if (env->sealed == NULL)
        return KB_ERR_NOMEM;
    memcpy(env->sealed, buf, (size_t)n);
    env->sealed_len = (size_t)n;
    env->key_id = strdup("master-1");
    memset(checksum, (int)(id * 16 + version), STORE_CHECKSUM_LEN);
    return env->key_id ? KB_OK : KB_ERR_NOMEM;
}

static bool env_matches(const store_record *r)
{
    char want[64];
    int n = snprintf(want, sizeof(want), "sealed-%lld-%lld", (long long)r->secret.id,
                     (long long)r->version.version);
    return r->env.sealed != NULL && r->env.sealed_len == (size_t)n &&
           memcmp(r->env.sealed, want, (size_t)n) == 0 && r->version.secret_id == r->secret.id;
}

/* Fills a zeroed fixture; on failure the caller frees what was made (fx_free). */
static int fx_fill(fx *f)
{
    uint8_t k[32];
    store_opts o = {0};
    store_client_new cn = {0};
    store_secret_new sn = {0};
    store_version_new vn = {.content_len = 8};
    char name[32];

    f->dir = kbtest_tmpdir();
    {
        char db[400];
        snprintf(db, sizeof(db), "%.380s/store.db", f->dir);
        if (kbtest_store_url(f->path, sizeof(f->path), db) != 0)
            return -1;
    }
    for (size_t i = 0; i < sizeof(k); i++)
        k[i] = (uint8_t)(0xA5 ^ i);
    if (kb_secret_from(k, sizeof(k), &f->key) != KB_OK)
        return -1;
    o.row_mac_key = f->key;
    o.cloud_prefixes = prefixes;
    o.migrate = true;
    if (store_open(f->path, &o, &f->st) != KB_OK)
        return -1;
    cn.spiffe_id = CLIENT;
    cn.enabled = true;
    if (store_client_create(f->st, &cn, ADMIN, T0, &f->client, NULL) != KB_OK)
        return -1;
    cn.spiffe_id = OTHER;
    if (store_client_create(f->st, &cn, ADMIN, T0, &f->other, NULL) != KB_OK)
        return -1;
    if (store_group_create(f->st, "readers", NULL, ADMIN, T0, &f->group, NULL) != KB_OK ||
        store_group_create(f->st, "others", NULL, ADMIN, T0, &f->other_group, NULL) != KB_OK ||
        store_membership_add(f->st, f->client, f->group, NULL) != KB_OK ||
        store_membership_add(f->st, f->other, f->other_group, NULL) != KB_OK)
        return -1;
    for (int i = 0; i < N0; i++) {
        int64_t id;
        snprintf(name, sizeof(name), "base-%02d", i);
        sn.name = name;
        if (store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL) != KB_OK ||
            store_grant_add(f->st, f->group, id, NULL) != KB_OK)
            return -1;
    }
    return 0;
}

static void fx_free(fx *f)
{
    char p[700];
    if (f->st)
        store_close(f->st);
    kb_secret_free(f->key);
    for (const char *suffix = ""; f->dir != NULL && suffix != NULL;
         suffix = suffix[0] == '\0' ? "-wal" : (strcmp(suffix, "-wal") == 0 ? "-shm" : NULL)) {
        snprintf(p, sizeof(p), "%s/store.db%s", f->dir, suffix);
        unlink(p);
    }
    if (f->dir)
        rmdir(f->dir);
    free(f->dir);
    free(f);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    if (fx_fill(f) != 0) {
        fx_free(f); /* cmocka runs no teardown after a failed setup */
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    *state = NULL;
    return 0;
}

/* ---- workers ---- */

typedef struct {
    fx *f;
    int t;
    char why[160]; /* first failure, empty if none */
} worker;

#define FAIL(w, ...)                                                                               \
    do {                                                                                           \
        if ((w)->why[0] == '\0')                                                                   \
            snprintf((w)->why, sizeof((w)->why), __VA_ARGS__);                                     \
    } while (0)

/* Create, grant, and immediately read back through the client path (read-your-writes across
 * connections), then add a version and read that back too. */
static void *writer_main(void *arg)
{
    worker *w = arg;
    fx *f = w->f;
    store_secret_new sn = {0};
    store_version_new vn = {.content_len = 16};
    char name[32];
    for (int i = 0; i < WRITES && w->why[0] == '\0'; i++) {
        int64_t id = 0, ver = 0;
        store_record r;
        kb_err rc;
        snprintf(name, sizeof(name), "w%d-%02d", w->t, i);
        sn.name = name;
        rc = store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0 + i, &id, NULL);
        if (rc == KB_OK)
            rc = store_grant_add(f->st, f->group, id, NULL);
        if (rc != KB_OK) {
            FAIL(w, "create/grant %s: %s", name, kb_err_str(rc));
            break;
        }
        atomic_fetch_add(&f->committed, 1);
        rc = store_readable_get(f->st, f->client, name, 0, &r);
        if (rc != KB_OK || r.version.version != 1 || !env_matches(&r))
            FAIL(w, "read-back %s: %s", name, kb_err_str(rc));
        store_record_clear(&r);
        rc = store_version_add(f->st, id, &vn, fake_seal, NULL, ADMIN, T0 + i, &ver, NULL);
        if (rc != KB_OK || ver != 2) {
            FAIL(w, "version_add %s: %s v%lld", name, kb_err_str(rc), (long long)ver);
            break;
        }
        rc = store_readable_get(f->st, f->client, name, 0, &r);
        if (rc != KB_OK || r.version.version != 2 || !env_matches(&r))
            FAIL(w, "read-back v2 %s: %s", name, kb_err_str(rc));
        store_record_clear(&r);
        /* The other client never gains access, whatever else is going on (the flipper thread
         * disables and re-enables it: denied or not found, never a record). */
        rc = store_readable_get(f->st, f->other, name, 0, &r);
        if (rc != KB_ERR_NOT_FOUND && rc != KB_ERR_DENIED)
            FAIL(w, "other client read %s: %s", name, kb_err_str(rc));
        store_record_clear(&r);
    }
    return NULL;
}

/* One listing: sorted, unique, each record at its secret's latest version, and at least every
 * writer secret acknowledged before the call started. */
static void check_list(worker *w, int *last_n)
{
    fx *f = w->f;
    store_record *recs = NULL;
    size_t n = 0;
    int before = atomic_load(&f->committed);
    kb_err rc = store_readable_list(f->st, f->client, &recs, &n);
    if (rc != KB_OK) {
        FAIL(w, "readable_list: %s", kb_err_str(rc));
        return;
    }
    if ((int)n < N0 + before)
        FAIL(w, "list has %zu entries, %d were committed before it", n, N0 + before);
    if ((int)n < *last_n)
        FAIL(w, "list went back from %d to %zu entries", *last_n, n);
    *last_n = (int)n;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].version.secret_id != recs[i].secret.id || recs[i].version.version < 1 ||
            recs[i].version.version > 2 || recs[i].env.sealed != NULL)
            FAIL(w, "list entry %zu inconsistent", i);
        if (i > 0 && strcmp(recs[i - 1].secret.name, recs[i].secret.name) >= 0)
            FAIL(w, "list not sorted at %zu", i);
    }
    store_records_free(recs, n);
}

static void *reader_main(void *arg)
{
    worker *w = arg;
    fx *f = w->f;
    int last_n = 0;
    const char *names[3] = {"base-00", "no-such-secret", "base-09"};
    uint64_t last_gen = 0;
    for (int i = 0; i < READ_LOOPS && w->why[0] == '\0'; i++) {
        store_record r, batch[3];
        uint64_t gen = store_generation(f->st);
        if (gen < last_gen)
            FAIL(w, "generation went back from %llu to %llu", (unsigned long long)last_gen,
                 (unsigned long long)gen);
        last_gen = gen;
        kb_err errs[3];
        store_client c;
        kb_err rc;

        check_list(w, &last_n);
        rc = store_readable_get(f->st, f->client, "base-03", 0, &r);
        if (rc != KB_OK || strcmp(r.secret.name, "base-03") != 0 || !env_matches(&r))
            FAIL(w, "get base-03: %s", kb_err_str(rc));
        store_record_clear(&r);
        /* Per-name outcomes inside one snapshot; the unknown name is just NOT_FOUND. */
        rc = store_readable_get_batch(f->st, f->client, names, 3, batch, errs);
        if (rc != KB_OK || errs[0] != KB_OK || errs[1] != KB_ERR_NOT_FOUND || errs[2] != KB_OK ||
            !env_matches(&batch[0]) || !env_matches(&batch[2]))
            FAIL(w, "batch: %s %s %s %s", kb_err_str(rc), kb_err_str(errs[0]), kb_err_str(errs[1]),
                 kb_err_str(errs[2]));
        for (int k = 0; k < 3; k++)
            store_record_clear(&batch[k]);
        /* What keybridged does on every request. */
        rc = store_client_get(f->st, CLIENT, &c);
        if (rc != KB_OK || c.id != f->client || !c.enabled)
            FAIL(w, "client_get: %s", kb_err_str(rc));
        store_client_clear(&c);
        rc = store_client_seen(f->st, f->client, T0 + 3600 * (int64_t)(i % 3), i % 2 == 0);
        if (rc != KB_OK)
            FAIL(w, "client_seen: %s", kb_err_str(rc));
        /* Negative cases on the same connections: unknown client, unreadable secret. */
        if (store_client_seen(f->st, 999999, T0, false) != KB_ERR_NOT_FOUND)
            FAIL(w, "client_seen on an unknown client");
        {
            store_record *none = NULL;
            size_t nn = 0;
            if (store_readable_list(f->st, 999999, &none, &nn) != KB_ERR_NOT_FOUND || none != NULL)
                FAIL(w, "readable_list for an unknown client");
            store_records_free(none, nn);
        }
        rc = store_readable_get(f->st, f->other, "base-03", 0, &r);
        if (rc != KB_ERR_NOT_FOUND && rc != KB_ERR_DENIED)
            FAIL(w, "other client got base-03: %s", kb_err_str(rc));
        store_record_clear(&r);
    }
    return NULL;
}

/* Flips the other client's enabled flag: its row MAC is rewritten each time, and readers that
 * load it concurrently must see either state, never a MAC mismatch. */
static void *flipper_main(void *arg)
{
    worker *w = arg;
    fx *f = w->f;
    for (int i = 0; i < 40 && w->why[0] == '\0'; i++) {
        store_client_patch p = STORE_CLIENT_PATCH_INIT;
        store_client c;
        kb_err rc;
        p.enabled = i % 2;
        rc = store_client_update(f->st, f->other, &p, NULL);
        if (rc != KB_OK)
            FAIL(w, "client_update: %s", kb_err_str(rc));
        rc = store_client_get_by_id(f->st, f->other, &c);
        if (rc != KB_OK || c.enabled != (i % 2 == 1))
            FAIL(w, "client after update: %s", kb_err_str(rc));
        store_client_clear(&c);
    }
    return NULL;
}

static void *other_reader_main(void *arg)
{
    worker *w = arg;
    fx *f = w->f;
    for (int i = 0; i < READ_LOOPS && w->why[0] == '\0'; i++) {
        store_record *recs = NULL;
        size_t n = 0;
        kb_err rc = store_readable_list(f->st, f->other, &recs, &n);
        /* Enabled: an empty listing (no grants to its group); disabled: denied. Never a
         * tampering report, never another group's secret. */
        if (!(rc == KB_OK && n == 0) && rc != KB_ERR_DENIED)
            FAIL(w, "other client list: %s n=%zu", kb_err_str(rc), n);
        store_records_free(recs, n);
    }
    return NULL;
}

static void mixed_reads_and_writes(void **state)
{
    fx *f = *state;
    enum { NT = WRITERS + READERS + 2 };
    pthread_t th[NT];
    worker w[NT];
    store_record *recs = NULL;
    size_t n = 0;
    int t = 0;

    memset(w, 0, sizeof(w));
    for (int i = 0; i < NT; i++) {
        w[i].f = f;
        w[i].t = i;
    }
    for (; t < WRITERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, writer_main, &w[t]), 0);
    for (; t < WRITERS + READERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, reader_main, &w[t]), 0);
    assert_int_equal(pthread_create(&th[t], NULL, flipper_main, &w[t]), 0);
    t++;
    assert_int_equal(pthread_create(&th[t], NULL, other_reader_main, &w[t]), 0);
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        if (w[i].why[0] != '\0')
            fail_msg("thread %d: %s", i, w[i].why);
    }
    /* Everything every writer acknowledged is there, at version 2, in one listing. */
    assert_int_equal(atomic_load(&f->committed), WRITERS * WRITES);
    assert_ok(store_readable_list(f->st, f->client, &recs, &n));
    assert_int_equal(n, N0 + WRITERS * WRITES);
    for (size_t i = 0; i < n; i++) {
        bool base = strncmp(recs[i].secret.name, "base-", 5) == 0;
        assert_int_equal(recs[i].version.version, base ? 1 : 2);
        assert_int_equal(recs[i].secret.latest_version, recs[i].version.version);
    }
    store_records_free(recs, n);
}

/* A disabled client is denied on every pooled connection right after the write returns, and
 * allowed again after re-enabling: no connection serves a stale snapshot. */
typedef struct {
    fx *f;
    pthread_barrier_t *bar;
    atomic_int *phase_enabled;
    char why[160];
} gate;

static void *gate_main(void *arg)
{
    gate *g = arg;
    for (int round = 0; round < 20; round++) {
        store_record *recs = NULL;
        size_t n = 0;
        kb_err rc, want;
        pthread_barrier_wait(g->bar); /* the main thread has changed the flag */
        want = atomic_load(g->phase_enabled) ? KB_OK : KB_ERR_DENIED;
        rc = store_readable_list(g->f->st, g->f->client, &recs, &n);
        store_records_free(recs, n);
        if (rc != want && g->why[0] == '\0')
            snprintf(g->why, sizeof(g->why), "round %d: got %s, want %s", round, kb_err_str(rc),
                     kb_err_str(want));
        pthread_barrier_wait(g->bar); /* done reading */
    }
    return NULL;
}

static void every_connection_sees_the_latest_commit(void **state)
{
    fx *f = *state;
    enum { NG = 8 };
    pthread_t th[NG];
    gate g[NG];
    pthread_barrier_t bar;
    atomic_int enabled = 1;

    assert_int_equal(pthread_barrier_init(&bar, NULL, NG + 1), 0);
    for (int i = 0; i < NG; i++) {
        memset(&g[i], 0, sizeof(g[i]));
        g[i].f = f;
        g[i].bar = &bar;
        g[i].phase_enabled = &enabled;
        assert_int_equal(pthread_create(&th[i], NULL, gate_main, &g[i]), 0);
    }
    for (int round = 0; round < 20; round++) {
        store_client_patch p = STORE_CLIENT_PATCH_INIT;
        p.enabled = round % 2;
        assert_ok(store_client_update(f->st, f->client, &p, NULL));
        atomic_store(&enabled, p.enabled);
        pthread_barrier_wait(&bar);
        pthread_barrier_wait(&bar);
    }
    for (int i = 0; i < NG; i++) {
        pthread_join(th[i], NULL);
        if (g[i].why[0] != '\0')
            fail_msg("reader %d: %s", i, g[i].why);
    }
    pthread_barrier_destroy(&bar);
}

/* Errors in the middle of a read (a name that is not there, a batch entry that is refused,
 * integrity of a wrong client) leave the connection clean: repeated many more times than
 * there are pooled connections, a write in between is always visible. */
static void errors_leave_connections_clean(void **state)
{
    fx *f = *state;
    store_secret_new sn = {0};
    store_version_new vn = {.content_len = 4};
    char name[32];
    for (int i = 0; i < 40; i++) {
        store_record r, batch[2];
        kb_err errs[2];
        const char *names[2] = {"missing", "base-01"};
        store_record *recs = NULL;
        size_t n = 0;
        int64_t id;

        assert_kb(store_readable_get(f->st, f->client, "missing", 0, &r), KB_ERR_NOT_FOUND);
        assert_kb(store_readable_get(f->st, f->client, "base-01", 7, &r), KB_ERR_NOT_FOUND);
        assert_kb(store_readable_get(f->st, 424242, "base-01", 0, &r), KB_ERR_NOT_FOUND);
        assert_ok(store_readable_get_batch(f->st, f->client, names, 2, batch, errs));
        assert_kb(errs[0], KB_ERR_NOT_FOUND);
        assert_ok(errs[1]);
        store_record_clear(&batch[1]);
        snprintf(name, sizeof(name), "late-%02d", i);
        sn.name = name;
        assert_ok(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL));
        assert_kb(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL),
                  KB_ERR_EXISTS);
        assert_ok(store_grant_add(f->st, f->group, id, NULL));
        assert_ok(store_readable_list(f->st, f->client, &recs, &n));
        assert_int_equal(n, N0 + i + 1);
        store_records_free(recs, n);
        assert_ok(store_readable_get(f->st, f->client, name, 0, &r));
        assert_true(env_matches(&r));
        store_record_clear(&r);
    }
}

/* The activity marker is decided from remembered values when it can be: a write that is due is
 * still made, a listing marker is not hidden by an earlier plain one, and a deleted client is
 * not found. Checked through store_client_get_by_id, which reads the database. */
static void activity_marker_through_memory(void **state)
{
    fx *f = *state;
    store_client c;
    const int64_t I = STORE_TOUCH_INTERVAL;

    assert_ok(store_client_seen(f->st, f->client, T0 + I, false));
    assert_ok(store_client_get_by_id(f->st, f->client, &c));
    assert_int_equal(c.last_seen, T0 + I);
    assert_int_equal(c.last_list_at, 0);
    store_client_clear(&c);
    for (int i = 0; i < 5; i++) /* remembered: nothing due */
        assert_ok(store_client_seen(f->st, f->client, T0 + I + 10 + i, false));
    assert_ok(store_client_seen(f->st, f->client, T0 + I + 20, true)); /* listing never marked */
    assert_ok(store_client_get_by_id(f->st, f->client, &c));
    assert_int_equal(c.last_seen, T0 + I);
    assert_int_equal(c.last_list_at, T0 + I + 20);
    store_client_clear(&c);
    assert_ok(store_client_seen(f->st, f->client, T0 + 2 * I + 5, false)); /* due again */
    assert_ok(store_client_get_by_id(f->st, f->client, &c));
    assert_int_equal(c.last_seen, T0 + 2 * I + 5);
    assert_int_equal(c.last_list_at, T0 + I + 20);
    store_client_clear(&c);
    assert_ok(store_client_delete(f->st, f->client, NULL));
    assert_kb(store_client_seen(f->st, f->client, T0 + 3 * I, true), KB_ERR_NOT_FOUND);
    assert_kb(store_client_seen(f->st, f->client, T0 + 3 * I + 1, false), KB_ERR_NOT_FOUND);
    assert_kb(store_client_seen(f->st, 0x7fffffff, T0, false), KB_ERR_NOT_FOUND);
}

/* store_generation moves after every change that can alter a listing, and only then: reads,
 * activity markers and the fetch log leave it alone. */
static void generation_moves_on_changes_only(void **state)
{
    fx *f = *state;
    store_secret_new sn = {.name = "gen-secret"};
    store_version_new vn = {.content_len = 4};
    store_secret_patch sp = STORE_SECRET_PATCH_INIT;
    store_client_patch cp = STORE_CLIENT_PATCH_INIT;
    store_client_new cn = {.spiffe_id = "spiffe://example.org/ns/gen/sa/new", .enabled = true};
    store_record *recs = NULL, r;
    store_client c;
    size_t n = 0;
    int64_t id = 0, ver = 0, cid = 0, gid = 0;
    uint64_t g = store_generation(f->st), g2;

#define MOVED(call)                                                                                \
    do {                                                                                           \
        assert_ok(call);                                                                           \
        g2 = store_generation(f->st);                                                              \
        if (g2 <= g)                                                                               \
            fail_msg("generation did not move after %s", #call);                                   \
        g = g2;                                                                                    \
    } while (0)
#define STILL(call)                                                                                \
    do {                                                                                           \
        assert_ok(call);                                                                           \
        if (store_generation(f->st) != g)                                                          \
            fail_msg("generation moved after %s", #call);                                          \
    } while (0)

    assert_int_equal(store_generation(NULL), 0);
    STILL(store_readable_list(f->st, f->client, &recs, &n));
    store_records_free(recs, n);
    STILL(store_readable_get(f->st, f->client, "base-00", 0, &r));
    STILL(store_fetch_record(f->st, f->client, r.secret.id, 1, T0));
    store_record_clear(&r);
    STILL(store_client_get(f->st, CLIENT, &c));
    store_client_clear(&c);
    STILL(store_client_seen(f->st, f->client, T0 + 10 * STORE_TOUCH_INTERVAL, true)); /* writes */
    STILL(store_secret_list(f->st, true, &recs, &n));
    store_records_free(recs, n);

    MOVED(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL));
    MOVED(store_version_add(f->st, id, &vn, fake_seal, NULL, ADMIN, T0, &ver, NULL));
    MOVED(store_grant_add(f->st, f->group, id, NULL));
    sp.cloud_sync = 1;
    MOVED(store_secret_update(f->st, id, &sp, ADMIN, T0, NULL));
    MOVED(store_secret_delete(f->st, id, ADMIN, T0 + 1, NULL));
    MOVED(store_secret_restore(f->st, id, ADMIN, T0 + 2, NULL));
    MOVED(store_grant_remove(f->st, f->group, id, NULL));
    MOVED(store_client_create(f->st, &cn, ADMIN, T0, &cid, NULL));
    cp.app_name = "renamed";
    MOVED(store_client_update(f->st, f->client, &cp, NULL));
    MOVED(store_group_create(f->st, "gen-group", NULL, ADMIN, T0, &gid, NULL) == KB_OK
              ? store_membership_add(f->st, cid, gid, NULL)
              : KB_ERR_INTERNAL);
    MOVED(store_membership_remove(f->st, cid, gid, NULL));
    MOVED(store_group_delete(f->st, gid, NULL));
    MOVED(store_client_delete(f->st, cid, NULL));
    MOVED(store_secret_delete(f->st, id, ADMIN, T0 + 3, NULL));
    MOVED(store_secret_purge(f->st, id, NULL));
#undef MOVED
#undef STILL
}

/* The WAL stays bounded while readers never stop: SQLite's passive autocheckpoint cannot start
 * the WAL over while any reader uses it, and with a pool of readers there nearly always is one
 * (the WAL grew past 10 MB over these 600 writes before the writer's RESTART checkpoint). The
 * bound is SQLite's 1000-page threshold (4 MB) plus slack. */
static atomic_int wal_stop, wal_read_errors, wal_reads;

static void *wal_reader(void *arg)
{
    fx *f = arg;
    while (!atomic_load(&wal_stop)) {
        store_record *recs = NULL;
        size_t n = 0;
        /* Readers keep working while the writer checkpoints and restarts the WAL. */
        if (store_readable_list(f->st, f->client, &recs, &n) != KB_OK || n < N0) {
            atomic_fetch_add(&wal_read_errors, 1);
            break;
        }
        atomic_fetch_add(&wal_reads, 1);
        store_records_free(recs, n);
    }
    return NULL;
}

static void wal_stays_bounded_under_reads(void **state)
{
    fx *f = *state;
    pthread_t th[2];
    char wal[600], name[32];
    off_t max = 0;
    store_secret_new sn = {0};
    store_version_new vn = {.content_len = 8};
    struct stat sb;
    static char md[16 * 1024 + 64];
    size_t ml = 0;

    /* 16 KB of metadata per version: a few pages per commit, so few commits (each one an
     * fsync) fill the WAL. */
    md[ml++] = '{';
    for (int k = 0; k < 16; k++) {
        ml += (size_t)snprintf(md + ml, sizeof(md) - ml, "%s\"k%02d\":\"", k ? "," : "", k);
        memset(md + ml, 'a' + k, 1000);
        ml += 1000;
        md[ml++] = '"';
    }
    md[ml++] = '}';
    md[ml] = '\0';
    vn.metadata = md;

    snprintf(wal, sizeof(wal), "%s/store.db-wal", f->dir);
    atomic_store(&wal_stop, 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, wal_reader, f), 0);
    for (int i = 0; i < 600; i++) {
        int64_t id;
        snprintf(name, sizeof(name), "wal-%05d", i);
        sn.name = name;
        assert_ok(store_secret_create(f->st, &sn, &vn, fake_seal, NULL, ADMIN, T0, &id, NULL));
        if (stat(wal, &sb) == 0 && sb.st_size > max)
            max = sb.st_size;
    }
    atomic_store(&wal_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&wal_read_errors), 0);
    assert_true(atomic_load(&wal_reads) > 0);
    if (max > 6 * 1024 * 1024)
        fail_msg("WAL reached %lld bytes", (long long)max);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(mixed_reads_and_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(every_connection_sees_the_latest_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(errors_leave_connections_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(activity_marker_through_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(generation_moves_on_changes_only, setup, teardown),
        cmocka_unit_test_setup_teardown(wal_stays_bounded_under_reads, setup, teardown),
    };
    /* PostgreSQL (KB_TEST_STORE=pg): all but the last, SQLite's WAL bound. */
    if (kbtest_pg())
        return _cmocka_run_group_tests("tests", tests, KB_ARRAY_LEN(tests) - 1, NULL, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
