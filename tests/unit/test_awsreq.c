/* test_awsreq.c - signed AWS JSON 1.1 calls against a loopback python3 server that checks each
 * signature independently with botocore's SigV4Auth; credentials from the environment. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kbtest.h"
#include "lib/awsreq.h"
#include "lib/buf.h"
#include "lib/json.h"
#include "lib/secbuf.h"

extern char **environ;

static const char k_akid[] = "AKIDAWSREQTEST";
static const char k_secret[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
static const char k_token[] = "FQoGZXIvYXdzEXAMPLE/token+with=chars";

/* The server: prints its port, exits when its stdin closes (so it never outlives the test).
 * It answers every POST with what it saw and whether botocore computes the same signature. */
static const char k_server[] =
    "import sys, json, hashlib, threading, os, time, re\n"
    "from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer\n"
    "from botocore.auth import SigV4Auth\n"
    "from botocore.awsrequest import AWSRequest\n"
    "from botocore.credentials import Credentials\n"
    "akid, secret, region, service = sys.argv[1:5]\n"
    "AUTH = re.compile(r'AWS4-HMAC-SHA256 Credential=([^/]+)/(\\d{8})/([^/]+)/([^/]+)/"
    "aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})')\n"
    "class H(BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def log_message(self, *a): pass\n"
    "    def do_POST(self):\n"
    "        body = self.rfile.read(int(self.headers.get('Content-Length', '0')))\n"
    "        if self.path == '/slow': time.sleep(3)\n"
    "        out = {'path': self.path, 'body_sha': hashlib.sha256(body).hexdigest()}\n"
    "        out['peer_port'] = self.client_address[1]  # tells connections apart\n"
    "        for k in ('X-Amz-Target', 'Content-Type', 'X-Amz-Security-Token', 'X-Amz-Date',\n"
    "                  'Host', 'Expect'):\n"
    "            out[k.lower()] = self.headers.get(k)\n"
    "        m = AUTH.fullmatch(self.headers.get('Authorization', ''))\n"
    "        ok = False\n"
    "        if m and m.group(1) == akid and m.group(3) == region and m.group(4) == service:\n"
    "            signed = m.group(5).split(';')\n"
    "            out['signed_headers'] = m.group(5)\n"
    "            hs = {n: ','.join(self.headers.get_all(n)) for n in signed}\n"
    "            req = AWSRequest(method='POST', url='http://' + self.headers['Host'] + "
    "self.path,\n"
    "                             data=body, headers=hs)\n"
    "            req.context['timestamp'] = self.headers['X-Amz-Date']\n"
    "            a = SigV4Auth(Credentials(akid, secret), service, region)\n"
    "            sig = a.signature(a.string_to_sign(req, a.canonical_request(req)), req)\n"
    "            ok = sig == m.group(6)\n"
    "        out['signature_ok'] = ok\n"
    "        data = json.dumps(out).encode()\n"
    "        if self.path == '/big': data = b'x' * 100000\n"
    "        self.send_response(200 if ok else 403)\n"
    "        self.send_header('Content-Type', 'application/x-amz-json-1.1')\n"
    "        self.send_header('Content-Length', str(len(data)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(data)\n"
    "srv = ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
    "srv.daemon_threads = True\n"
    "srv.handle_error = lambda *a: None  # a client that timed out and left is expected\n"
    "print(srv.server_address[1], flush=True)\n"
    "def watch():\n"
    "    sys.stdin.read()\n"
    "    os._exit(0)\n"
    "threading.Thread(target=watch, daemon=True).start()\n"
    "srv.serve_forever()\n";

typedef struct {
    pid_t pid;
    int to_child; /* closing it stops the server */
    char url[128];
    kb_secret *secret;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    int in[2], outp[2];
    posix_spawn_file_actions_t fa;
    char port[16] = {0};
    char *argv[] = {"python3",        "-c",        (char *)k_server, (char *)k_akid,
                    (char *)k_secret, "eu-west-1", "secretsmanager", NULL};
    size_t got = 0;

    if (f == NULL || pipe2(in, O_CLOEXEC) != 0 || pipe2(outp, O_CLOEXEC) != 0) {
        free(f);
        return -1;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
    if (posix_spawnp(&f->pid, "python3", &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        free(f);
        return -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(outp[1]);
    f->to_child = in[1];
    while (got < sizeof(port) - 1 && read(outp[0], port + got, 1) == 1 && port[got] != '\n')
        got++;
    close(outp[0]);
    port[got] = '\0';
    if (got == 0) {
        fprintf(stderr, "python3 test server did not start (botocore missing?)\n");
        return -1;
    }
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%s", port);
    if (kb_secret_from(k_secret, strlen(k_secret), &f->secret) != KB_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    int st;
    close(f->to_child);
    kill(f->pid, SIGTERM);
    waitpid(f->pid, &st, 0);
    kb_secret_free(f->secret);
    free(f);
    return kb_secret_live_count() == 0 ? 0 : -1;
}

static kb_awsreq_cfg cfg_for(fixture *f, const char *url)
{
    kb_awsreq_cfg c = {
        url ? url : f->url, "eu-west-1", "secretsmanager", k_akid, f->secret, NULL, NULL, 5000};
    return c;
}

static json_t *call_ok(const kb_awsreq_cfg *c, const char *body, long want_status)
{
    kb_dbuf resp;
    long status = -1;
    json_t *j = NULL;
    kb_dbuf_init(&resp, 1 << 20);
    assert_ok(
        kb_awsreq_call(c, "secretsmanager.GetSecretValue", body, strlen(body), &status, &resp));
    assert_int_equal(status, want_status);
    assert_ok(kb_json_parse(resp.p, resp.len, resp.max, &j, NULL, 0));
    kb_dbuf_free(&resp);
    return j;
}

static const char *jstr(json_t *j, const char *k)
{
    const char *v = json_string_value(json_object_get(j, k));
    return v ? v : "(null)";
}

static void signed_call_verifies_with_botocore(void **state)
{
    fixture *f = *state;
    kb_awsreq_cfg c = cfg_for(f, NULL);
    static const char body[] = "{\"SecretId\":\"keybridge/app/db\"}";
    char want_host[64];
    json_t *j = call_ok(&c, body, 200);

    assert_true(json_is_true(json_object_get(j, "signature_ok")));
    assert_string_equal(jstr(j, "x-amz-target"), "secretsmanager.GetSecretValue");
    assert_string_equal(jstr(j, "content-type"), "application/x-amz-json-1.1");
    assert_string_equal(jstr(j, "signed_headers"), "content-type;host;x-amz-date;x-amz-target");
    assert_null(json_string_value(json_object_get(j, "x-amz-security-token")));
    assert_null(json_string_value(json_object_get(j, "expect")));
    snprintf(want_host, sizeof(want_host), "%s", f->url + strlen("http://"));
    assert_string_equal(jstr(j, "host"), want_host);
    assert_int_equal(strlen(jstr(j, "x-amz-date")), 16);
    json_decref(j);

    /* A larger body (curl would otherwise send Expect: 100-continue) and an empty one. */
    {
        char *big = malloc(200001);
        memset(big, 'a', 200000);
        big[0] = '"';
        big[199999] = '"';
        big[200000] = '\0';
        j = call_ok(&c, big, 200);
        assert_true(json_is_true(json_object_get(j, "signature_ok")));
        assert_null(json_string_value(json_object_get(j, "expect")));
        json_decref(j);
        free(big);
    }
    j = call_ok(&c, "", 200);
    assert_true(json_is_true(json_object_get(j, "signature_ok")));
    json_decref(j);
}

static void session_token_is_sent_and_signed(void **state)
{
    fixture *f = *state;
    kb_awsreq_cfg c = cfg_for(f, NULL);
    json_t *j;
    c.session_token = k_token;
    j = call_ok(&c, "{}", 200);
    assert_true(json_is_true(json_object_get(j, "signature_ok")));
    assert_string_equal(jstr(j, "x-amz-security-token"), k_token);
    assert_string_equal(jstr(j, "signed_headers"),
                        "content-type;host;x-amz-date;x-amz-security-token;x-amz-target");
    json_decref(j);
}

static void endpoint_path_and_query_are_signed(void **state)
{
    fixture *f = *state;
    char url[256];
    kb_awsreq_cfg c;
    json_t *j;
    snprintf(url, sizeof(url), "%s/a/b%%20c/?z=1&a=%%2F", f->url);
    c = cfg_for(f, url);
    j = call_ok(&c, "{}", 200);
    assert_true(json_is_true(json_object_get(j, "signature_ok")));
    assert_string_equal(jstr(j, "path"), "/a/b%20c/?z=1&a=%2F");
    json_decref(j);
}

/* Calls to one endpoint share one kept-alive connection (issue 6: ~400 calls per full sync). */
static void calls_reuse_one_connection(void **state)
{
    fixture *f = *state;
    kb_awsreq_cfg c = cfg_for(f, NULL);
    json_int_t port1, port2;
    json_t *j;
    kb_awsreq_pool_clear();
    j = call_ok(&c, "{}", 200);
    port1 = json_integer_value(json_object_get(j, "peer_port"));
    json_decref(j);
    for (int i = 0; i < 5; i++) {
        j = call_ok(&c, "{\"i\":1}", 200);
        assert_true(json_is_true(json_object_get(j, "signature_ok")));
        assert_int_equal(json_integer_value(json_object_get(j, "peer_port")), port1);
        json_decref(j);
    }
    /* a fresh pool opens a new connection */
    kb_awsreq_pool_clear();
    j = call_ok(&c, "{}", 200);
    port2 = json_integer_value(json_object_get(j, "peer_port"));
    json_decref(j);
    assert_true(port1 > 0 && port2 > 0 && port1 != port2);
    kb_awsreq_pool_clear();
}

static void wrong_secret_is_refused_by_server(void **state)
{
    fixture *f = *state;
    kb_secret *other;
    kb_awsreq_cfg c = cfg_for(f, NULL);
    json_t *j;
    assert_ok(kb_secret_from("not-the-secret", 14, &other));
    c.secret_key = other;
    j = call_ok(&c, "{}", 403); /* an HTTP error is a successful call with a status */
    assert_false(json_is_true(json_object_get(j, "signature_ok")));
    json_decref(j);
    c.secret_key = f->secret;
    c.region = "us-east-2"; /* the server only accepts eu-west-1 */
    j = call_ok(&c, "{}", 403);
    json_decref(j);
    kb_secret_free(other);
}

static void transport_failures_map_to_codes(void **state)
{
    fixture *f = *state;
    kb_awsreq_cfg c = cfg_for(f, NULL);
    kb_dbuf resp;
    long status;
    char url[256];
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof(sa);
    int s;

    kb_dbuf_init(&resp, 1024);
    /* Response over the caller's limit. */
    snprintf(url, sizeof(url), "%s/big", f->url);
    c.endpoint = url;
    assert_kb(kb_awsreq_call(&c, "secretsmanager.ListSecrets", "{}", 2, &status, &resp),
              KB_ERR_TOO_LARGE);
    kb_dbuf_reset(&resp);
    /* Server slower than the timeout. */
    snprintf(url, sizeof(url), "%s/slow", f->url);
    c.timeout_ms = 300;
    assert_kb(kb_awsreq_call(&c, "secretsmanager.ListSecrets", "{}", 2, &status, &resp),
              KB_ERR_TIMEOUT);
    c.timeout_ms = 5000;
    /* Nobody listening: a port that was just free. */
    s = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
    close(s);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(sa.sin_port));
    assert_kb(kb_awsreq_call(&c, "secretsmanager.ListSecrets", "{}", 2, &status, &resp),
              KB_ERR_UNAVAILABLE);
    kb_dbuf_free(&resp);
}

static void bad_input_is_refused_before_sending(void **state)
{
    fixture *f = *state;
    kb_awsreq_cfg c = cfg_for(f, NULL);
    kb_dbuf resp;
    long status;
    kb_dbuf_init(&resp, 1024);
    /* cleartext to anything but loopback */
    c.endpoint = "http://secretsmanager.eu-west-1.amazonaws.com";
    assert_kb(kb_awsreq_call(&c, "secretsmanager.ListSecrets", "{}", 2, &status, &resp),
              KB_ERR_CONFIG);
    c.endpoint = "ftp://127.0.0.1/";
    assert_kb(kb_awsreq_call(&c, "secretsmanager.ListSecrets", "{}", 2, &status, &resp),
              KB_ERR_INVALID);
    c.endpoint = "http://user:pw@127.0.0.1/";
    assert_kb(kb_awsreq_call(&c, "secretsmanager.ListSecrets", "{}", 2, &status, &resp),
              KB_ERR_INVALID);
    c.endpoint = "not a url";
    assert_kb(kb_awsreq_call(&c, "secretsmanager.ListSecrets", "{}", 2, &status, &resp),
              KB_ERR_INVALID);
    c.endpoint = f->url;
    assert_kb(kb_awsreq_call(&c, "secretsmanager.List Secrets", "{}", 2, &status, &resp),
              KB_ERR_INVALID);
    assert_kb(kb_awsreq_call(&c, "", "{}", 2, &status, &resp), KB_ERR_INVALID);
    assert_kb(kb_awsreq_call(&c, "x\r\nEvil: 1", "{}", 2, &status, &resp), KB_ERR_INVALID);
    c.session_token = "tok\r\nEvil: 1";
    assert_kb(kb_awsreq_call(&c, "secretsmanager.ListSecrets", "{}", 2, &status, &resp),
              KB_ERR_INVALID);
    c.session_token = NULL;
    c.region = "eu west";
    assert_kb(kb_awsreq_call(&c, "secretsmanager.ListSecrets", "{}", 2, &status, &resp),
              KB_ERR_INVALID);
    c.region = "eu-west-1";
    c.secret_key = NULL;
    assert_kb(kb_awsreq_call(&c, "secretsmanager.ListSecrets", "{}", 2, &status, &resp),
              KB_ERR_NULL);
    assert_int_equal(resp.len, 0);
    kb_dbuf_free(&resp);
}

static void creds_from_environment(void **state)
{
    (void)state;
    kb_aws_creds cr;
    size_t live = kb_secret_live_count(); /* the group fixture holds one */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    assert_kb(kb_aws_creds_from_env(&cr), KB_ERR_NOT_FOUND);
    setenv("AWS_ACCESS_KEY_ID", k_akid, 1);
    assert_kb(kb_aws_creds_from_env(&cr), KB_ERR_NOT_FOUND);
    setenv("AWS_SECRET_ACCESS_KEY", k_secret, 1);
    assert_ok(kb_aws_creds_from_env(&cr));
    assert_string_equal(cr.access_key_id, k_akid);
    assert_int_equal(kb_secret_len(cr.secret_key), strlen(k_secret));
    assert_memory_equal(kb_secret_cdata(cr.secret_key), k_secret, strlen(k_secret));
    assert_null(cr.session_token);
    kb_aws_creds_free(&cr);
    setenv("AWS_SESSION_TOKEN", k_token, 1);
    assert_ok(kb_aws_creds_from_env(&cr));
    assert_string_equal(cr.session_token, k_token);
    kb_aws_creds_free(&cr);
    assert_null(cr.secret_key);
    /* malformed values */
    setenv("AWS_SESSION_TOKEN", "a\nb", 1);
    assert_kb(kb_aws_creds_from_env(&cr), KB_ERR_CONFIG);
    unsetenv("AWS_SESSION_TOKEN");
    setenv("AWS_SECRET_ACCESS_KEY", "", 1);
    assert_kb(kb_aws_creds_from_env(&cr), KB_ERR_CONFIG);
    setenv("AWS_SECRET_ACCESS_KEY", "has space", 1);
    assert_kb(kb_aws_creds_from_env(&cr), KB_ERR_CONFIG);
    setenv("AWS_SECRET_ACCESS_KEY", k_secret, 1);
    setenv("AWS_ACCESS_KEY_ID", "AKID/../x", 1);
    assert_kb(kb_aws_creds_from_env(&cr), KB_ERR_CONFIG);
    setenv("AWS_ACCESS_KEY_ID", "", 1);
    assert_kb(kb_aws_creds_from_env(&cr), KB_ERR_CONFIG);
    {
        char longid[200];
        memset(longid, 'A', sizeof(longid) - 1);
        longid[sizeof(longid) - 1] = '\0';
        setenv("AWS_ACCESS_KEY_ID", longid, 1);
        assert_kb(kb_aws_creds_from_env(&cr), KB_ERR_CONFIG);
    }
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    assert_int_equal(kb_secret_live_count(), live);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(creds_from_environment),
        cmocka_unit_test(signed_call_verifies_with_botocore),
        cmocka_unit_test(session_token_is_sent_and_signed),
        cmocka_unit_test(endpoint_path_and_query_are_signed),
        cmocka_unit_test(calls_reuse_one_connection),
        cmocka_unit_test(wrong_secret_is_refused_by_server),
        cmocka_unit_test(transport_failures_map_to_codes),
        cmocka_unit_test(bad_input_is_refused_before_sending),
    };
    kb_json_init();
    /* One server for the group: python3 + botocore start once. */
    {
        int rc = cmocka_run_group_tests(tests, setup, teardown);
        kb_awsreq_pool_clear();
        return rc;
    }
}
