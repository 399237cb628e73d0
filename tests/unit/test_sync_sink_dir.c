/* test_sync_sink_dir.c - the data-center sink (src/sync/sink_dir.c) driven by the real engine
 * (sync_run) from a fake source, on a real directory: files and modes written, the state file
 * (0600) makes an unchanged run write nothing, a changed or tampered file is rewritten, a removed
 * secret's file is deleted, a renamed file (filename metadata) replaces the old one, a symlink in
 * place of a file is replaced and never followed, leftover temporaries are cleaned; refused:
 * colliding file names, unsafe modes, an owner outside the allow-list (as root), a state file of
 * another application or readable by others, a directory that is a symlink. */
#include "kbtest.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "lib/fileio.h"
#include "lib/json.h"
#include "lib/secbuf.h"
#include "sync/sink.h"
#include "sync/sink_dir.h"
#include "sync/source.h"
#include "sync/sync.h"

#define MAXS 8

/* The fake source: what keybridged would list and serve. */
typedef struct {
    const char *name;
    int64_t version;
    const char *content;
    const char *meta; /* JSON object text */
} src_item;

static struct {
    src_item items[MAXS];
    size_t n;
    const char *app;
} S;

static void checksum_of(const src_item *it, char out[SYNC_CHECKSUM_HEX + 1])
{
    snprintf(out, SYNC_CHECKSUM_HEX + 1, "%032llx%032zx", (unsigned long long)it->version,
             strlen(it->content));
}

static kb_err s_list(sync_source *s, sync_listing *out, sync_summary *sum)
{
    (void)s;
    sum->calls[SYNC_OP_KB_LIST]++;
    memset(out, 0, sizeof(*out));
    out->application = strdup(S.app);
    out->client = strdup("spiffe://example.org/dc/host");
    out->items = calloc(MAXS, sizeof(*out->items));
    for (size_t i = 0; i < S.n; i++) {
        out->items[i].name = strdup(S.items[i].name);
        out->items[i].version = S.items[i].version;
        checksum_of(&S.items[i], out->items[i].checksum);
        out->items[i].metadata = json_loads(S.items[i].meta ? S.items[i].meta : "{}", 0, NULL);
    }
    out->n = S.n;
    return KB_OK;
}

static kb_err s_fetch(sync_source *s, const char *const *names, size_t n, sync_content *out,
                      sync_summary *sum)
{
    (void)s;
    (void)sum;
    for (size_t i = 0; i < n; i++) {
        const src_item *it = NULL;
        for (size_t k = 0; k < S.n; k++)
            if (strcmp(S.items[k].name, names[i]) == 0)
                it = &S.items[k];
        if (it == NULL) {
            fail_msg("fetch of a name that was not listed: %s", names[i]);
            return KB_ERR_INTERNAL;
        }
        out[i].name = strdup(it->name);
        out[i].version = it->version;
        checksum_of(it, out[i].checksum);
        out[i].metadata = json_loads(it->meta ? it->meta : "{}", 0, NULL);
        if (kb_secret_from(it->content, strlen(it->content), &out[i].content) != KB_OK)
            return KB_ERR_NOMEM;
    }
    return KB_OK;
}

static const sync_source_ops SRC = {"fake", s_list, s_fetch, NULL};

typedef struct {
    char *dir;
    const char *const *owners;
    int as_root;
} fx;

static int setup(void **state)
{
    static fx f;
    memset(&f, 0, sizeof(f));
    f.dir = kbtest_tmpdir();
    memset(&S, 0, sizeof(S));
    S.app = "app";
    *state = &f;
    return f.dir ? 0 : -1;
}

static int teardown(void **state)
{
    fx *f = *state;
    free(f->dir);
    return 0;
}

static kb_err run(fx *f, sync_summary *sum)
{
    sync_source src = {&SRC, NULL};
    sync_sink *sink = NULL;
    sync_dir_opts o = {.path = f->dir, .owners = f->owners, .as_root = f->as_root};
    sync_run_opts ro = {.max_delete_fraction = 1.0};
    kb_err rc;
    assert_ok(sync_sink_dir_new(&o, &sink));
    sync_summary_init(sum);
    rc = sync_run(&src, &sink, 1, &ro, sum);
    sync_sink_free(sink);
    assert_int_equal(kb_secret_live_count(), 0);
    return rc;
}

static char *path_in(const fx *f, const char *name)
{
    static char p[512];
    snprintf(p, sizeof(p), "%s/%s", f->dir, name);
    return p;
}

static void assert_file(const fx *f, const char *name, const char *content, unsigned mode)
{
    kb_dbuf b;
    struct stat st;
    assert_int_equal(lstat(path_in(f, name), &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, mode);
    kb_dbuf_init(&b, 1 << 20);
    assert_ok(kb_file_read(path_in(f, name), b.max, &b));
    assert_int_equal(b.len, strlen(content));
    assert_memory_equal(b.p, content, b.len);
    kb_dbuf_free(&b);
}

static int exists(const fx *f, const char *name)
{
    struct stat st;
    return lstat(path_in(f, name), &st) == 0;
}

static void write_raw(const fx *f, const char *name, const char *text, mode_t mode)
{
    int fd = open(path_in(f, name), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(chmod(path_in(f, name), mode), 0);
}

static void files_state_and_repair(void **state)
{
    fx *f = *state;
    sync_summary sum;
    struct stat st;

    S.items[0] = (src_item){"db", 1, "pw-1", NULL};
    S.items[1] = (src_item){"tls", 1, "key-1", "{\"filename\":\"tls.pem\",\"mode\":\"0440\"}"};
    S.n = 2;
    assert_ok(run(f, &sum));
    assert_int_equal(sum.created, 2);
    assert_file(f, "db", "pw-1", SYNC_DIR_DEFAULT_MODE);
    assert_file(f, "tls.pem", "key-1", 0440);
    assert_false(exists(f, "tls"));
    assert_int_equal(stat(path_in(f, SYNC_DIR_STATE), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    /* unchanged: nothing fetched or written, the state file not even rewritten */
    assert_ok(run(f, &sum));
    assert_int_equal(sum.unchanged, 2);
    assert_int_equal(sum.calls[SYNC_OP_DIR_WRITE], 0);
    assert_int_equal(sum.hsm_fetches, 0);

    /* a file edited or re-moded behind our back is rewritten on the next run */
    assert_int_equal(chmod(path_in(f, "db"), 0600), 0);
    write_raw(f, "db", "tampered", 0400);
    assert_int_equal(chmod(path_in(f, "tls.pem"), 0444), 0);
    assert_ok(run(f, &sum));
    assert_int_equal(sum.updated, 2);
    assert_file(f, "db", "pw-1", 0400);
    assert_file(f, "tls.pem", "key-1", 0440);

    /* a new version is written; a new filename replaces the old file */
    S.items[0].version = 2;
    S.items[0].content = "pw-2";
    S.items[1].version = 2;
    S.items[1].meta = "{\"filename\":\"server.pem\"}";
    assert_ok(run(f, &sum));
    assert_int_equal(sum.updated, 2);
    assert_file(f, "db", "pw-2", 0400);
    assert_file(f, "server.pem", "key-1", 0400);
    assert_false(exists(f, "tls.pem"));

    /* the grant is gone: its file is deleted, the other stays */
    S.n = 1;
    assert_ok(run(f, &sum));
    assert_int_equal(sum.deleted, 1);
    assert_false(exists(f, "server.pem"));
    assert_file(f, "db", "pw-2", 0400);
}

static void symlinks_and_temps(void **state)
{
    fx *f = *state;
    sync_summary sum;
    char victim[512], link[512];
    struct stat st;
    sync_sink *sink = NULL;
    sync_dir_opts o = {.path = link, .as_root = 0};

    /* a symlink where the file goes is replaced, its target untouched */
    snprintf(victim, sizeof(victim), "%s.victim", f->dir);
    {
        int fd = open(victim, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "keep", 4), 4);
        close(fd);
    }
    assert_int_equal(symlink(victim, path_in(f, "db")), 0);
    /* a temporary left by a crashed run is removed */
    write_raw(f, SYNC_DIR_TMP_PREFIX "db.123", "half", 0600);
    S.items[0] = (src_item){"db", 1, "pw-1", NULL};
    S.n = 1;
    assert_ok(run(f, &sum));
    assert_file(f, "db", "pw-1", 0400);
    assert_false(exists(f, SYNC_DIR_TMP_PREFIX "db.123"));
    {
        kb_dbuf b;
        kb_dbuf_init(&b, 64);
        assert_ok(kb_file_read(victim, 64, &b));
        assert_int_equal(b.len, 4);
        assert_memory_equal(b.p, "keep", 4);
        kb_dbuf_free(&b);
    }
    unlink(victim);

    /* the directory itself as a symlink is refused */
    snprintf(link, sizeof(link), "%s.link", f->dir);
    assert_int_equal(symlink(f->dir, link), 0);
    assert_kb(sync_sink_dir_new(&o, &sink), KB_ERR_CONFIG);
    assert_null(sink);
    unlink(link);
    o.path = "";
    assert_kb(sync_sink_dir_new(&o, &sink), KB_ERR_CONFIG);
    assert_int_equal(lstat(path_in(f, SYNC_DIR_STATE), &st), 0);
}

static void refusals(void **state)
{
    fx *f = *state;
    sync_summary sum;
    static const char *const owners[] = {"root", NULL};

    /* two secrets mapping to one file both fail; an unsafe mode fails; the rest is written */
    S.items[0] = (src_item){"a", 1, "A", "{\"filename\":\"same\"}"};
    S.items[1] = (src_item){"b", 1, "B", "{\"filename\":\"same\"}"};
    S.items[2] = (src_item){"c", 1, "C", "{\"mode\":\"0666\"}"};
    S.items[3] = (src_item){"d", 1, "D", "{\"owner\":\"nobody\"}"};
    S.n = 4;
    assert_int_not_equal(run(f, &sum), KB_OK);
    assert_int_equal(sum.failed, 3);
    assert_false(exists(f, "same"));
    assert_false(exists(f, "c"));
    /* not root: owner metadata is ignored (keysync), the file is written as ours */
    assert_file(f, "d", "D", 0400);

    /* as root, an owner outside the allow-list is refused and the file is left as it was */
    S.items[3].version = 2;
    S.items[3].content = "D2";
    f->owners = owners;
    f->as_root = 1;
    assert_int_not_equal(run(f, &sum), KB_OK);
    assert_file(f, "d", "D", 0400);
    f->as_root = 0;
}

static void state_file_refusals(void **state)
{
    fx *f = *state;
    sync_summary sum;

    S.items[0] = (src_item){"db", 1, "pw-1", NULL};
    S.n = 1;
    assert_ok(run(f, &sum));

    /* the directory is managed for another application: no write, no delete */
    S.app = "other";
    S.items[0].version = 2;
    S.items[0].content = "pw-2";
    assert_kb(run(f, &sum), KB_ERR_DENIED);
    assert_file(f, "db", "pw-1", 0400);
    S.app = "app";

    /* a state file others can read is refused (it holds SHA-256 of the contents) */
    assert_int_equal(chmod(path_in(f, SYNC_DIR_STATE), 0644), 0);
    assert_kb(run(f, &sum), KB_ERR_CONFIG);
    assert_file(f, "db", "pw-1", 0400);

    /* a state file that is not what we write is refused, not guessed at */
    write_raw(f, SYNC_DIR_STATE, "{\"version\":1,\"application\":\"app\",\"files\":[]}", 0600);
    assert_kb(run(f, &sum), KB_ERR_INVALID);
    write_raw(f, SYNC_DIR_STATE,
              "{\"version\":1,\"application\":\"app\",\"files\":{\"../x\":{\"file\":\"db\"}}}",
              0600);
    assert_int_not_equal(run(f, &sum), KB_OK);
    assert_file(f, "db", "pw-1", 0400);
    write_raw(f, SYNC_DIR_STATE, "not json", 0600);
    assert_int_not_equal(run(f, &sum), KB_OK);
    assert_file(f, "db", "pw-1", 0400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(files_state_and_repair, setup, teardown),
        cmocka_unit_test_setup_teardown(symlinks_and_temps, setup, teardown),
        cmocka_unit_test_setup_teardown(refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(state_file_refusals, setup, teardown),
    };
    kb_json_init();
    if (kb_secmem_init() != KB_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
