/* test_service.c - keybridged's core: seal on write, access-checked reads, versions, rollback,
 * cloud opt-in, expiry from PEM, tamper detection on the real SQLite file, audit trail. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/pem.h>

#include "kbtest.h"
#include "kbtest_store.h"
#include "lib/json.h"
#include "server/expiry.h"
#include "server/server_config.h"
#include "server/service.h"

#define ADMIN "spiffe://example.org/admin"
#define APP "spiffe://example.org/ns/payments/sa/api"
#define OTHER "spiffe://example.org/ns/hr/sa/web"
#define LAMBDA "spiffe://example.org/lambda/acct/123/fn/report"

typedef struct {
    char *dir;
    char db[512];
    kb_config *cfg;
    svc *s;
    int64_t g_pay, c_app, c_other, c_lambda;
} fx;

static svc_actor actor(const char *id)
{
    svc_actor a = {id, "127.0.0.1:1", (int64_t)time(NULL)};
    return a;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    char ini[512], body[1024];
    char err[256];
    FILE *fp;
    store_client_new cn;

    f->dir = kbtest_tmpdir();
    snprintf(f->db, sizeof(f->db), "%s/kbd.db", f->dir);
    snprintf(ini, sizeof(ini), "%s/kbd.conf", f->dir);
    snprintf(body, sizeof(body),
             "[store]\nurl = sqlite:%s\n[hsm]\nkeystore = file\nkey_file = %s/master.key\n"
             "[clients]\ncloud_prefixes = /lambda/\n",
             f->db, f->dir);
    fp = fopen(ini, "w");
    fputs(body, fp);
    fclose(fp);
    assert_ok(kb_config_load(server_config_keys, ini, NULL, &f->cfg, err, sizeof(err)));
    assert_ok(svc_bootstrap(f->cfg, ADMIN));
    assert_kb(svc_bootstrap(f->cfg, ADMIN), KB_ERR_EXISTS); /* runs once */
    assert_ok(svc_open(f->cfg, false, &f->s));

    store *st = svc_store(f->s);
    int64_t now = (int64_t)time(NULL);
    assert_ok(store_group_create(st, "payments", NULL, ADMIN, now, &f->g_pay, NULL));
    memset(&cn, 0, sizeof(cn));
    cn.enabled = true;
    cn.spiffe_id = APP;
    cn.app_name = "payments-api";
    assert_ok(store_client_create(st, &cn, ADMIN, now, &f->c_app, NULL));
    cn.spiffe_id = OTHER;
    cn.app_name = "hr-web";
    assert_ok(store_client_create(st, &cn, ADMIN, now, &f->c_other, NULL));
    cn.spiffe_id = LAMBDA;
    cn.app_name = "report";
    assert_ok(store_client_create(st, &cn, ADMIN, now, &f->c_lambda, NULL));
    assert_ok(store_membership_add(st, f->c_app, f->g_pay, NULL));
    assert_ok(store_membership_add(st, f->c_lambda, f->g_pay, NULL));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    svc_close(f->s);
    kb_config_free(f->cfg);
    free(f->dir);
    free(f);
    return 0;
}

static void create_secret(fx *f, const char *name, const char *content, bool cloud)
{
    svc_actor a = actor(ADMIN);
    svc_secret_spec sp;
    store_secret sec;
    memset(&sp, 0, sizeof(sp));
    sp.name = name;
    sp.content = (const uint8_t *)content;
    sp.content_len = strlen(content);
    sp.cloud_sync = cloud;
    sp.metadata = "{\"mode\":\"0400\"}";
    assert_ok(svc_secret_create(f->s, &a, &sp, NULL));
    assert_ok(store_secret_get(svc_store(f->s), name, false, &sec));
    assert_ok(store_grant_add(svc_store(f->s), f->g_pay, sec.id, NULL));
    store_secret_clear(&sec);
}

static kb_err client_read(fx *f, const char *who, const char *name, int64_t version, char *out,
                          size_t out_len, int64_t *got_version)
{
    svc_actor a = actor(who);
    store_client c;
    store_record rec;
    kb_secret *content = NULL;
    kb_err rc = svc_client_auth(f->s, &a, &c);
    if (rc != KB_OK)
        return rc;
    rc = svc_client_read(f->s, &a, &c, name, version, &rec, &content);
    if (rc == KB_OK) {
        snprintf(out, out_len, "%.*s", (int)kb_secret_len(content),
                 (const char *)kb_secret_cdata(content));
        if (got_version)
            *got_version = rec.version.version;
        kb_secret_free(content);
        store_record_clear(&rec);
    }
    store_client_clear(&c);
    return rc;
}

static void reads_follow_grants(void **state)
{
    fx *f = *state;
    char buf[128];
    svc_actor a = actor(ADMIN);
    svc_secret_spec sp;

    create_secret(f, "db-password", "s3cret", false);
    memset(&sp, 0, sizeof(sp));
    sp.name = "hr-only";
    sp.content = (const uint8_t *)"x";
    sp.content_len = 1;
    assert_ok(svc_secret_create(f->s, &a, &sp, NULL)); /* granted to nobody */

    assert_ok(client_read(f, APP, "db-password", 0, buf, sizeof(buf), NULL));
    assert_string_equal(buf, "s3cret");
    /* another group's secret and a missing one look the same */
    assert_kb(client_read(f, APP, "hr-only", 0, buf, sizeof(buf), NULL), KB_ERR_NOT_FOUND);
    assert_kb(client_read(f, APP, "nope", 0, buf, sizeof(buf), NULL), KB_ERR_NOT_FOUND);
    assert_kb(client_read(f, OTHER, "db-password", 0, buf, sizeof(buf), NULL), KB_ERR_NOT_FOUND);
    /* unknown and disabled clients are refused before any lookup */
    assert_kb(client_read(f, "spiffe://example.org/x", "db-password", 0, buf, sizeof(buf), NULL),
              KB_ERR_NOT_FOUND);
    store_client_patch p = STORE_CLIENT_PATCH_INIT;
    p.enabled = 0;
    assert_ok(store_client_update(svc_store(f->s), f->c_app, &p, NULL));
    assert_kb(client_read(f, APP, "db-password", 0, buf, sizeof(buf), NULL), KB_ERR_DENIED);
    p.enabled = 1;
    assert_ok(store_client_update(svc_store(f->s), f->c_app, &p, NULL));
    assert_ok(client_read(f, APP, "db-password", 0, buf, sizeof(buf), NULL));
}

static void versions_and_rollback(void **state)
{
    fx *f = *state;
    svc_actor a = actor(ADMIN);
    svc_secret_spec sp;
    char buf[128];
    int64_t v = 0, got = 0;

    create_secret(f, "api-key", "one", false);
    memset(&sp, 0, sizeof(sp));
    sp.name = "api-key";
    sp.content = (const uint8_t *)"two";
    sp.content_len = 3;
    assert_ok(svc_secret_put(f->s, &a, &sp, &v));
    assert_int_equal(v, 2);
    assert_ok(client_read(f, APP, "api-key", 0, buf, sizeof(buf), &got));
    assert_string_equal(buf, "two");
    assert_int_equal(got, 2);
    assert_ok(client_read(f, APP, "api-key", 1, buf, sizeof(buf), &got));
    assert_string_equal(buf, "one");
    /* a rollback writes a new, higher version holding the old content */
    assert_ok(svc_secret_rollback(f->s, &a, "api-key", 1, &v));
    assert_int_equal(v, 3);
    assert_ok(client_read(f, APP, "api-key", 0, buf, sizeof(buf), &got));
    assert_string_equal(buf, "one");
    assert_int_equal(got, 3);
    assert_kb(svc_secret_rollback(f->s, &a, "api-key", 9, &v), KB_ERR_NOT_FOUND);
    assert_kb(svc_secret_rollback(f->s, &a, "api-key", 0, &v), KB_ERR_INVALID);
    sp.name = "no-such";
    assert_kb(svc_secret_put(f->s, &a, &sp, &v), KB_ERR_NOT_FOUND);
    /* admin read */
    store_record rec;
    kb_secret *content = NULL;
    assert_ok(svc_secret_read_admin(f->s, &a, "api-key", 2, &rec, &content));
    assert_memory_equal(kb_secret_cdata(content), "two", 3);
    kb_secret_free(content);
    store_record_clear(&rec);
    /* the fetch log says who holds which version */
    store_secret sec;
    store_fetch *fetches = NULL;
    size_t n = 0;
    assert_ok(store_secret_get(svc_store(f->s), "api-key", false, &sec));
    assert_ok(store_secret_status(svc_store(f->s), sec.id, &fetches, &n));
    assert_int_equal(n, 1);
    assert_string_equal(fetches[0].spiffe_id, APP);
    store_fetches_free(fetches, n);
    store_secret_clear(&sec);
}

static void cloud_clients_need_opt_in(void **state)
{
    fx *f = *state;
    char buf[128];
    svc_actor a = actor(LAMBDA);
    store_client c;
    store_record *recs = NULL;
    size_t n = 0;

    create_secret(f, "dc-only", "dc", false);
    create_secret(f, "synced", "cloud", true);
    assert_kb(client_read(f, LAMBDA, "dc-only", 0, buf, sizeof(buf), NULL), KB_ERR_NOT_FOUND);
    assert_ok(client_read(f, LAMBDA, "synced", 0, buf, sizeof(buf), NULL));
    assert_string_equal(buf, "cloud");
    assert_ok(svc_client_auth(f->s, &a, &c));
    assert_true(c.cloud); /* derived from the /lambda/ prefix */
    assert_ok(svc_client_list(f->s, &a, &c, &recs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].secret.name, "synced");
    assert_null(recs[0].env.sealed); /* listing carries no envelope */
    store_records_free(recs, n);
    store_client_clear(&c);
    /* the data-center client sees both */
    a = actor(APP);
    assert_ok(svc_client_auth(f->s, &a, &c));
    assert_ok(svc_client_list(f->s, &a, &c, &recs, &n));
    assert_int_equal(n, 2);
    store_records_free(recs, n);
    store_client_clear(&c);
}

static void equal_contents_different_checksums(void **state)
{
    fx *f = *state;
    svc_actor a = actor(APP);
    store_client c;
    store_record *recs = NULL;
    size_t n = 0;
    create_secret(f, "same-a", "identical", false);
    create_secret(f, "same-b", "identical", false);
    assert_ok(svc_client_auth(f->s, &a, &c));
    assert_ok(svc_client_list(f->s, &a, &c, &recs, &n));
    assert_int_equal(n, 2);
    assert_memory_not_equal(recs[0].version.checksum, recs[1].version.checksum, STORE_CHECKSUM_LEN);
    store_records_free(recs, n);
    store_client_clear(&c);
}

static char *make_pem_cert(time_t not_after)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIO *b = BIO_new(BIO_s_mem());
    char *data, *out;
    long len;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    ASN1_TIME_set(X509_getm_notAfter(x), not_after);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"t", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, k, EVP_sha256());
    PEM_write_bio_X509(b, x);
    len = BIO_get_mem_data(b, &data);
    out = strndup(data, (size_t)len);
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(k);
    return out;
}

static void expiry_from_pem(void **state)
{
    fx *f = *state;
    time_t na = (time_t)time(NULL) + 86400 * 30;
    char *pem = make_pem_cert(na);
    store_secret sec;
    store_record rec;
    int64_t t = 0;
    expiry_kind kind;

    assert_ok(expiry_extract((const uint8_t *)pem, strlen(pem), &t, &kind));
    assert_int_equal(t, na);
    assert_kb(expiry_extract((const uint8_t *)"hello", 5, &t, &kind), KB_ERR_NOT_FOUND);
    assert_kb(expiry_extract((const uint8_t *)"-----BEGIN CERTIFICATE-----\nAAAA\n", 33, &t, &kind),
              KB_ERR_INVALID);
    /* a key block before the certificate (the usual bundle order) is skipped */
    char *bundle = malloc(strlen(pem) + 200);
    snprintf(
        bundle, strlen(pem) + 200,
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END "
        "PRIVATE KEY-----\n%s",
        pem);
    t = 0;
    assert_ok(expiry_extract((const uint8_t *)bundle, strlen(bundle), &t, &kind));
    assert_int_equal(t, na);
    free(bundle);
    create_secret(f, "tls-cert", pem, false);
    assert_ok(store_secret_get(svc_store(f->s), "tls-cert", false, &sec));
    assert_ok(store_version_get(svc_store(f->s), sec.id, 0, &rec));
    assert_int_equal(rec.version.expires_at, na);
    store_record_clear(&rec);
    store_secret_clear(&sec);
    free(pem);
}

/* A malformed certificate does not fail a write unless extraction was asked for; then it
 * refuses (nothing written); an explicit date wins and excludes the request. */
static void expiry_request(void **state)
{
    fx *f = *state;
    svc_actor a = actor(ADMIN);
    svc_secret_spec sp;
    store_secret sec;
    store_record rec;
    static const char bad[] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    time_t na = (time_t)time(NULL) + 86400 * 9;
    char *pem = make_pem_cert(na);
    int64_t v = 0;

    memset(&sp, 0, sizeof(sp));
    sp.name = "bad-cert";
    sp.content = (const uint8_t *)bad;
    sp.content_len = strlen(bad);
    sp.expiry_from_content = true;
    assert_kb(svc_secret_create(f->s, &a, &sp, NULL), KB_ERR_INVALID);
    assert_kb(store_secret_get(svc_store(f->s), "bad-cert", false, &sec), KB_ERR_NOT_FOUND);
    sp.expiry_from_content = false; /* best effort: stored without an expiry */
    assert_ok(svc_secret_create(f->s, &a, &sp, NULL));
    assert_ok(store_secret_get(svc_store(f->s), "bad-cert", false, &sec));
    assert_ok(store_version_get(svc_store(f->s), sec.id, 0, &rec));
    assert_int_equal(rec.version.expires_at, 0);
    store_record_clear(&rec);
    /* a good certificate as version 2, extraction asked for */
    sp.content = (const uint8_t *)pem;
    sp.content_len = strlen(pem);
    sp.expiry_from_content = true;
    assert_ok(svc_secret_put(f->s, &a, &sp, &v));
    assert_int_equal(v, 2);
    assert_ok(store_version_get(svc_store(f->s), sec.id, 0, &rec));
    assert_int_equal(rec.version.expires_at, na);
    store_record_clear(&rec);
    /* both an explicit date and extraction: refused, no version 3 */
    sp.expires_at = 12345;
    assert_kb(svc_secret_put(f->s, &a, &sp, &v), KB_ERR_INVALID);
    sp.expiry_from_content = false; /* the explicit date wins over the certificate's */
    assert_ok(svc_secret_put(f->s, &a, &sp, &v));
    assert_int_equal(v, 3);
    assert_ok(store_version_get(svc_store(f->s), sec.id, 0, &rec));
    assert_int_equal(rec.version.expires_at, 12345);
    store_record_clear(&rec);
    store_secret_clear(&sec);
    free(pem);
}

static void exec_sql(const char *db, const char *sql)
{
    sqlite3 *h;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    assert_int_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
}

static void tampered_ciphertext_is_detected(void **state)
{
    fx *f = *state;
    char buf[128], sql[512];
    svc_actor a = actor(ADMIN);
    svc_secret_spec sp;

    create_secret(f, "victim", "victim-content", false);
    create_secret(f, "donor", "donor-content!", false);
    memset(&sp, 0, sizeof(sp));
    sp.name = "victim";
    sp.content = (const uint8_t *)"victim-v2-content";
    sp.content_len = strlen("victim-v2-content");
    assert_ok(svc_secret_put(f->s, &a, &sp, NULL));

    /* move another secret's envelope into victim v1: the AAD binds (id, version) */
    snprintf(sql, sizeof(sql),
             "UPDATE versions SET sealed=(SELECT sealed FROM versions WHERE secret_id=(SELECT id "
             "FROM secrets WHERE name='donor')), wrapped_key=(SELECT wrapped_key FROM versions "
             "WHERE secret_id=(SELECT id FROM secrets WHERE name='donor')) WHERE "
             "secret_id=(SELECT id FROM secrets WHERE name='victim') AND version=1");
    exec_sql(f->db, sql);
    assert_kb(client_read(f, APP, "victim", 1, buf, sizeof(buf), NULL), KB_ERR_INTEGRITY);
    /* move victim v2's envelope to v1 of the same secret */
    exec_sql(f->db, "UPDATE versions SET sealed=(SELECT sealed FROM versions v2 WHERE "
                    "v2.secret_id=versions.secret_id AND v2.version=2), wrapped_key=(SELECT "
                    "wrapped_key FROM versions v2 WHERE v2.secret_id=versions.secret_id AND "
                    "v2.version=2) WHERE version=1 AND secret_id=(SELECT id FROM secrets WHERE "
                    "name='victim')");
    assert_kb(client_read(f, APP, "victim", 1, buf, sizeof(buf), NULL), KB_ERR_INTEGRITY);
    /* flip a byte of v2's ciphertext */
    exec_sql(f->db, "UPDATE versions SET sealed=substr(sealed,1,20)||x'ff'||substr(sealed,22) "
                    "WHERE version=2 AND secret_id=(SELECT id FROM secrets WHERE name='victim')");
    assert_kb(client_read(f, APP, "victim", 2, buf, sizeof(buf), NULL), KB_ERR_INTEGRITY);
    /* the untouched secret still reads */
    assert_ok(client_read(f, APP, "donor", 0, buf, sizeof(buf), NULL));
    assert_string_equal(buf, "donor-content!");
}

static void tampered_access_rows_fail_closed(void **state)
{
    fx *f = *state;
    char buf[128];
    svc_secret_spec sp;
    svc_actor a = actor(ADMIN);

    memset(&sp, 0, sizeof(sp));
    sp.name = "private";
    sp.content = (const uint8_t *)"p";
    sp.content_len = 1;
    assert_ok(svc_secret_create(f->s, &a, &sp, NULL));
    /* grant it by editing the file: copy an existing grant row's MAC onto a forged row */
    create_secret(f, "public", "q", false);
    exec_sql(f->db, "INSERT INTO grants SELECT group_id, (SELECT id FROM secrets WHERE "
                    "name='private'), mac FROM grants LIMIT 1");
    /* the forged row is the only access path: answered exactly like a missing name (never the
     * content), and audited as tampering */
    assert_kb(client_read(f, APP, "private", 0, buf, sizeof(buf), NULL), KB_ERR_NOT_FOUND);
    assert_kb(client_read(f, OTHER, "private", 0, buf, sizeof(buf), NULL), KB_ERR_NOT_FOUND);
    {
        audit_filter pf = {"private", APP, 0, 0, 10};
        audit_row *pr = NULL;
        size_t pn = 0;
        assert_ok(audit_query(svc_audit(f->s), &pf, &pr, &pn));
        assert_int_equal(pn, 1);
        assert_string_equal(pr[0].action, "secret.read");
        assert_string_equal(pr[0].result, "tampered");
        audit_rows_free(pr, pn);
    }
    /* make the hr client an admin by editing the file */
    exec_sql(f->db, "UPDATE clients SET admin=1 WHERE spiffe_id='" OTHER "'");
    svc_actor o = actor(OTHER);
    store_client c;
    assert_kb(svc_client_auth(f->s, &o, &c), KB_ERR_INTEGRITY);
    /* and the audit log recorded the denial */
    audit_filter af = {NULL, OTHER, 0, 0, 10};
    audit_row *rows = NULL;
    size_t n = 0;
    assert_ok(audit_query(svc_audit(f->s), &af, &rows, &n));
    assert_true(n >= 1);
    assert_string_equal(rows[0].action, "client.denied");
    assert_string_equal(rows[0].result, "integrity");
    audit_rows_free(rows, n);
}

static void audit_trail_is_complete_and_verifies(void **state)
{
    fx *f = *state;
    char buf[64];
    audit_filter af = {"audited", NULL, 0, 0, 100};
    audit_row *rows = NULL;
    size_t n = 0;
    audit_report rep;

    create_secret(f, "audited", "a", false);
    assert_ok(client_read(f, APP, "audited", 0, buf, sizeof(buf), NULL));
    assert_kb(client_read(f, OTHER, "audited", 0, buf, sizeof(buf), NULL), KB_ERR_NOT_FOUND);
    assert_ok(audit_query(svc_audit(f->s), &af, &rows, &n));
    assert_int_equal(n, 3); /* newest first: denied read, read, create */
    assert_string_equal(rows[0].action, "secret.read");
    assert_string_equal(rows[0].identity, OTHER);
    assert_string_equal(rows[0].result, "not_found");
    assert_string_equal(rows[1].identity, APP);
    assert_int_equal(rows[1].version, 1);
    assert_string_equal(rows[1].result, "ok");
    assert_string_equal(rows[2].action, "secret.create");
    audit_rows_free(rows, n);
    assert_ok(audit_verify(svc_audit(f->s), NULL, &rep));
    assert_true(rep.ok);
}

/* A batch read commits the fetch records and audit rows of every name it serves in one
 * transaction, and hands out content only after it: when that commit fails (a trigger makes
 * the database refuse one name's fetch record), no name of the batch gets content, and nothing of
 * it is recorded; once the database accepts them, all are served and recorded together. */
static void batch_read_commits_once(void **state)
{
    fx *f = *state;
    svc_actor a = actor(APP);
    store_client c;
    store_record rec[3];
    kb_secret *content[3] = {NULL, NULL, NULL};
    kb_err errs[3];
    const char *names[] = {"b1", "b2", "nope"};
    int64_t rows;

    create_secret(f, "b1", "one", false);
    create_secret(f, "b2", "two", false);
    assert_ok(svc_client_auth(f->s, &a, &c));
    /* Only b2's record is refused: b1's, which comes first, goes with it. */
    exec_sql(f->db, "CREATE TRIGGER t_no_fetch BEFORE INSERT ON fetch_log WHEN NEW.secret_id = "
                    "(SELECT id FROM secrets WHERE name = 'b2') "
                    "BEGIN SELECT RAISE(ABORT, 'no fetch records'); END");
    rows = kbtest_store_int(f->db, "SELECT COUNT(*) FROM audit_log WHERE result = 'ok' AND "
                                   "action = 'secret.read'");
    assert_ok(svc_client_read_batch(f->s, &a, &c, names, 3, rec, content, errs));
    assert_int_equal(errs[0], KB_ERR_UNAVAILABLE); /* retryable, not "not found" */
    assert_int_equal(errs[1], KB_ERR_UNAVAILABLE);
    assert_int_equal(errs[2], KB_ERR_NOT_FOUND);
    for (int i = 0; i < 3; i++) {
        assert_null(content[i]);
        assert_null(rec[i].env.sealed);
    }
    assert_int_equal(kbtest_store_int(f->db,
                                      "SELECT COUNT(*) FROM audit_log WHERE result = 'ok' AND "
                                      "action = 'secret.read'"),
                     rows);
    assert_int_equal(kbtest_store_int(f->db, "SELECT COUNT(*) FROM fetch_log"), 0);

    exec_sql(f->db, "DROP TRIGGER t_no_fetch");
    assert_ok(svc_client_read_batch(f->s, &a, &c, names, 3, rec, content, errs));
    assert_int_equal(errs[0], KB_OK);
    assert_int_equal(errs[1], KB_OK);
    assert_int_equal(errs[2], KB_ERR_NOT_FOUND);
    assert_memory_equal(kb_secret_cdata(content[0]), "one", 3);
    assert_memory_equal(kb_secret_cdata(content[1]), "two", 3);
    for (int i = 0; i < 3; i++) {
        kb_secret_free(content[i]);
        store_record_clear(&rec[i]);
    }
    assert_int_equal(kbtest_store_int(f->db,
                                      "SELECT COUNT(*) FROM audit_log WHERE result = 'ok' AND "
                                      "action = 'secret.read'"),
                     rows + 2);
    assert_int_equal(kbtest_store_int(f->db, "SELECT COUNT(*) FROM fetch_log"), 2);
    store_client_clear(&c);
}

static void open_fails_cleanly(void **state)
{
    (void)state;
    kb_config *cfg = NULL;
    svc *s = NULL;
    char err[256];
    char *dir = kbtest_tmpdir();
    char ini[512], body[512];
    FILE *fp;
    snprintf(ini, sizeof(ini), "%s/bad.conf", dir);
    snprintf(body, sizeof(body), "[store]\nurl = sqlite:%s/x.db\n[hsm]\nkeystore = vault\n", dir);
    fp = fopen(ini, "w");
    fputs(body, fp);
    fclose(fp);
    assert_ok(kb_config_load(server_config_keys, ini, NULL, &cfg, err, sizeof(err)));
    assert_kb(svc_open(cfg, false, &s), KB_ERR_CONFIG);
    assert_null(s);
    kb_config_free(cfg);
    /* pkcs11 without a PIN file */
    snprintf(body, sizeof(body), "[store]\nurl = sqlite:%s/x.db\n", dir);
    fp = fopen(ini, "w");
    fputs(body, fp);
    fclose(fp);
    assert_ok(kb_config_load(server_config_keys, ini, NULL, &cfg, err, sizeof(err)));
    assert_kb(svc_open(cfg, false, &s), KB_ERR_CONFIG);
    kb_config_free(cfg);
    /* a negative content limit is refused, not read as a huge one */
    snprintf(body, sizeof(body),
             "[store]\nurl = sqlite:%s/x.db\nmax_content_bytes = -1\n[hsm]\nkeystore = file\n"
             "key_file = %s/k\n",
             dir, dir);
    fp = fopen(ini, "w");
    fputs(body, fp);
    fclose(fp);
    assert_ok(kb_config_load(server_config_keys, ini, NULL, &cfg, err, sizeof(err)));
    char keyfile[512];
    snprintf(keyfile, sizeof(keyfile), "%s/k", dir);
    assert_ok(kb_keystore_create_file(keyfile));
    assert_kb(svc_open(cfg, false, &s), KB_ERR_CONFIG);
    assert_null(s);
    kb_config_free(cfg);
    free(dir);
}

int main(void)
{
    kb_json_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(reads_follow_grants, setup, teardown),
        cmocka_unit_test_setup_teardown(versions_and_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(cloud_clients_need_opt_in, setup, teardown),
        cmocka_unit_test_setup_teardown(equal_contents_different_checksums, setup, teardown),
        cmocka_unit_test_setup_teardown(expiry_from_pem, setup, teardown),
        cmocka_unit_test_setup_teardown(expiry_request, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_ciphertext_is_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_access_rows_fail_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(audit_trail_is_complete_and_verifies, setup, teardown),
        cmocka_unit_test_setup_teardown(batch_read_commits_once, setup, teardown),
        cmocka_unit_test(open_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
