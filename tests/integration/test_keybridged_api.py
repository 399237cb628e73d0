#!/usr/bin/env python3
"""keybridged end to end: SoftHSM2 token, test SVIDs made with the openssl CLI, `keybridged
bootstrap` + `serve` on loopback, driven with curl, `openssl s_client` and Python's http.client.

Checks (issue 3, "Tests that must exist"): a client cannot read another group's secret and cannot
tell it exists (byte-identical 404s on native, Keywhiz and batch endpoints); a cloud client never
sees a secret without cloud_sync; expired, wrong-trust-domain, two-URI-SAN, CA-as-leaf and
no-digitalSignature certificates (and no certificate) are refused; a client disabled while its
connection is kept alive gets 403 on its next request on that connection; a few hundred random
ACL trials over real HTTPS match the model; bad input over the wire gives 4xx JSON and changes
nothing; SIGHUP reload keeps serving; metrics are exposed on the loopback metrics listener.
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

SRC = os.environ.get("KB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("KB_BUILD_DIR", os.path.join(SRC, "build"))
KEYBRIDGED = os.path.join(BUILD, "keybridged")
TD = "example.org"
ADMIN = "spiffe://example.org/ns/ops/sa/admin"
SERVER_ID = "spiffe://example.org/keybridged"

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class PKI:
    """A root CA for example.org and leaves signed with `openssl ca` (which can back-date)."""

    def __init__(self, d):
        self.d = d
        os.makedirs(os.path.join(d, "newcerts"))
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write(f"""[ca]
default_ca = ca_default
[ca_default]
dir = {d}
database = {d}/index.txt
new_certs_dir = {d}/newcerts
certificate = {d}/ca.pem
private_key = {d}/ca.key
serial = {d}/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
default_days = 1
[policy_any]
organizationName = optional
commonName = optional
""")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "2",
             "-subj", "/O=kbtest root", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", f"subjectAltName=URI:spiffe://{TD}"])
        self.bundle = f"{d}/ca.pem"

    def leaf(self, name, sans, ku="critical,digitalSignature", bc="critical,CA:FALSE",
             eku="serverAuth,clientAuth", start=None, end=None):
        d = self.d
        key, csr, pem, ext = (f"{d}/{name}.key", f"{d}/{name}.csr", f"{d}/{name}.pem",
                              f"{d}/{name}.ext")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", csr, "-subj", f"/O=kbtest/CN={name}"])
        os.chmod(key, 0o600)
        with open(ext, "w") as f:
            f.write(f"[v3]\nsubjectAltName = {sans}\nbasicConstraints = {bc}\n"
                    f"keyUsage = {ku}\n")
            if eku:
                f.write(f"extendedKeyUsage = {eku}\n")
        cmd = ["openssl", "ca", "-batch", "-config", f"{d}/ca.cnf", "-in", csr, "-out", pem,
               "-extfile", ext, "-extensions", "v3", "-notext"]
        if start:
            cmd += ["-startdate", start, "-enddate", end]
        run(cmd)
        return pem, key


def store_url(d):
    """The store a test's keybridged uses: a SQLite file in d, or with KB_TEST_STORE=pg the
    PostgreSQL database of `pgserver.py run` ($KB_PG_URL; ctest's integration-pg/* variants)."""
    if os.environ.get("KB_TEST_STORE") == "pg":
        url = os.environ.get("KB_PG_URL")
        if not url:
            raise RuntimeError("KB_TEST_STORE=pg needs KB_PG_URL (run under pgserver.py run)")
        return url
    return f"sqlite:{d}/kb.db"


class Server:
    def __init__(self, d, pki, hsm):
        self.d = d
        self.store = store_url(d)
        self.port = free_port()
        self.mport = free_port()
        self.conf = f"{d}/keybridged.conf"
        srv_pem, srv_key = pki.leaf("server", f"URI:{SERVER_ID},IP:127.0.0.1")
        with open(self.conf, "w") as f:
            f.write(f"""[server]
listen = 127.0.0.1:{self.port}
threads = 2
cert_file = {srv_pem}
key_file = {srv_key}
bundle_file = {pki.bundle}
trust_domain = {TD}
metrics_listen = 127.0.0.1:{self.mport}
[store]
url = {self.store}
[hsm]
keystore = pkcs11
module = {hsm['module']}
token_label = {hsm['label']}
pin_file = {hsm['pin_file']}
[clients]
cloud_prefixes = /lambda/
""")
        self.proc = None
        self.log = open(f"{d}/keybridged.log", "w")

    def bootstrap(self):
        run([KEYBRIDGED, "--config", self.conf, "bootstrap", "--admin-id", ADMIN])

    def start(self):
        self.proc = subprocess.Popen([KEYBRIDGED, "--config", self.conf, "serve"],
                                     stdout=self.log, stderr=self.log)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if not self.store.startswith("sqlite:") and os.path.exists(f"{self.d}/kb.db"):
                    raise RuntimeError("a PostgreSQL run made a SQLite file")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("keybridged exited; see " + self.log.name)
                time.sleep(0.05)
        raise RuntimeError("keybridged did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def curl(srv, pki, cert, method, path, body=None, query="", extra=()):
    """Returns (http status, body bytes); status 0 when the TLS handshake or request failed."""
    url = f"https://127.0.0.1:{srv.port}{path}" + (f"?{query}" if query else "")
    cmd = ["curl", "-sS", "--path-as-is", "--max-time", "10", "--cacert", pki.bundle,
           "-X", method, "-o", "-", "-w", "\n%{http_code}", *extra]
    if cert:
        cmd += ["--cert", cert[0], "--key", cert[1]]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
    cmd.append(url)
    p = subprocess.run(cmd, input=body if isinstance(body, bytes) else (body or "").encode(),
                       capture_output=True)
    out, _, code = p.stdout.rpartition(b"\n")
    return int(code or b"0"), out


def api(srv, pki, cert, method, path, body=None, query="", want=None):
    st, out = curl(srv, pki, cert, method, path,
                   json.dumps(body) if isinstance(body, (dict, list)) else body, query)
    if want is not None and st != want:
        check(False, f"{method} {path}?{query}: got {st}, want {want}: {out[:300]!r}")
    return st, out


class Conn:
    """One kept-alive mTLS connection (http.client)."""

    def __init__(self, srv, pki, cert):
        ctx = ssl.create_default_context(cafile=pki.bundle)
        ctx.load_cert_chain(cert[0], cert[1])
        self.c = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)

    def req(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        self.c.request(method, path, body=data,
                       headers={"Content-Type": "application/json"} if data else {})
        r = self.c.getresponse()
        return r.status, r.read()

    def close(self):
        self.c.close()


def make_hsm(d):
    module = os.environ.get("KB_HSM_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
    out = subprocess.run(
        ["bash", "-c", f'. "{SRC}/tests/lib/softhsm.sh" && kb_softhsm_make kbtest "{d}/hsm" && '
                       'echo "$SOFTHSM2_CONF"; echo "$KB_HSM_PIN_FILE"'],
        check=True, capture_output=True, text=True).stdout.split()
    os.environ["SOFTHSM2_CONF"] = out[0]
    return {"module": module, "label": "kbtest", "pin_file": out[1]}


def prometheus_scrape(d, srv):
    """A real Prometheus (Debian `prometheus`) scrapes the metrics listener; we query it back."""
    port = free_port()
    with open(f"{d}/prometheus.yml", "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: keybridged
    static_configs:
      - targets: ['127.0.0.1:{srv.mport}']
""")
    plog = open(f"{d}/prometheus.log", "w")
    p = subprocess.Popen(["prometheus", f"--config.file={d}/prometheus.yml",
                          f"--storage.tsdb.path={d}/prom", f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=plog, stderr=plog)
    got = None
    try:
        deadline = time.time() + 30
        while time.time() < deadline and got is None:
            time.sleep(0.5)
            r = subprocess.run(["curl", "-sS", "--max-time", "2",
                                f"http://127.0.0.1:{port}/api/v1/query?query="
                                "keybridged_requests_total"], capture_output=True)
            try:
                res = json.loads(r.stdout)["data"]["result"]
                if res:
                    got = res
            except (ValueError, KeyError, TypeError):
                pass
        check(got is not None, "prometheus scraped keybridged_requests_total")
        if got:
            routes = {x["metric"].get("route") for x in got}
            check("/v1/secrets" in routes, f"prometheus sees route labels {routes}")
            check(all(x["metric"].get("job") == "keybridged" for x in got), "job label")
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main():
    if not os.path.exists(KEYBRIDGED):
        print("SKIP: keybridged not built", file=sys.stderr)
        return 0
    d = tempfile.mkdtemp(prefix="kbit.")
    srv = None
    try:
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        srv = Server(d, pki, hsm)
        srv.bootstrap()
        srv.start()
        admin = pki.leaf("admin", f"URI:{ADMIN}")
        ids = {"a": "spiffe://example.org/ns/a/sa/app", "b": "spiffe://example.org/ns/b/sa/app",
               "cloud": "spiffe://example.org/lambda/acct/1/fn/report",
               "stranger": "spiffe://example.org/ns/x/sa/nobody"}
        certs = {k: pki.leaf(k, f"URI:{v}") for k, v in ids.items()}

        # -- set up: groups, clients, secrets, grants (admin API over HTTPS)
        for g in ("ga", "gb"):
            api(srv, pki, admin, "POST", "/v1/admin/groups", {"name": g}, want=201)
        for k, g in (("a", "ga"), ("b", "gb"), ("cloud", "ga")):
            api(srv, pki, admin, "POST", "/v1/admin/clients",
                {"spiffe_id": ids[k], "app_name": "app-" + k}, want=201)
            api(srv, pki, admin, "POST", "/v1/admin/memberships",
                {"client": ids[k], "group": g}, want=201)
        for name, content, cloud, g in (("a-plain", "aGVsbG8=", False, "ga"),
                                        ("a-cloud", "d29ybGQ=", True, "ga"),
                                        ("b-only", "c2VjcmV0", False, "gb")):
            api(srv, pki, admin, "POST", "/v1/admin/secrets",
                {"name": name, "content": content, "cloud_sync": cloud,
                 "metadata": {"mode": "0400"}}, want=201)
            api(srv, pki, admin, "POST", "/v1/admin/grants", {"group": g, "secret": name},
                want=201)

        # -- a client cannot read another group's secret, nor tell it exists
        st, out = api(srv, pki, certs["a"], "GET", "/v1/secrets/a-plain", want=200)
        check(json.loads(out)["content"] == "aGVsbG8=", "A reads its secret")
        for path_fmt, method, body_fmt in (("/v1/secrets/{}", "GET", None),
                                           ("/secret/{}", "GET", None),
                                           ("/v1/secrets:batchGet", "POST", '{{"names":["{}"]}}'),
                                           ("/batchsecret", "POST", '{{"secrets":["{}"]}}')):
            res = []
            for n in ("b-only", "no-such-secret"):
                p = path_fmt.format(n) if "{}" in path_fmt else path_fmt
                st, out = curl(srv, pki, certs["a"], method, p,
                               body_fmt.format(n) if body_fmt else None)
                res.append((st, out.replace(n.encode(), b"NAME")))
            check(res[0] == res[1], f"{path_fmt}: unreadable == missing ({res})")
            check(b"c2VjcmV0" not in res[0][1], f"{path_fmt}: no content leaked")
        st, out = api(srv, pki, certs["a"], "GET", "/v1/secrets", want=200)
        check(b"b-only" not in out and b"a-plain" in out, "A's list")

        # -- a cloud client never sees a secret without cloud_sync
        st, out = api(srv, pki, certs["cloud"], "GET", "/v1/secrets", want=200)
        names = [s["name"] for s in json.loads(out)["secrets"]]
        check(names == ["a-cloud"], f"cloud list {names}")
        s1 = curl(srv, pki, certs["cloud"], "GET", "/v1/secrets/a-plain")
        s2 = curl(srv, pki, certs["cloud"], "GET", "/v1/secrets/zz-none")
        check(s1[0] == 404 and s1 == (s2[0], s2[1]), "cloud: not opted in == missing")

        # -- unknown client: a JSON 401; non-admin on admin routes: 403
        st, out = api(srv, pki, certs["stranger"], "GET", "/v1/secrets", want=401)
        check(json.loads(out)["error"] == "auth", "401 is JSON")
        api(srv, pki, certs["a"], "GET", "/v1/admin/secrets", want=403)

        # -- refused certificates (the handshake fails: no HTTP status at all)
        bad = {
            "expired": pki.leaf("expired", "URI:spiffe://example.org/ns/a/sa/old",
                                start="20200101000000Z", end="20200102000000Z"),
            "wrong-td": pki.leaf("wrongtd", "URI:spiffe://evil.org/ns/a/sa/app"),
            "two-uris": pki.leaf("twouris", f"URI:{ids['a']},URI:spiffe://example.org/ns/z"),
            "ca-as-leaf": pki.leaf("caleaf", f"URI:{ids['a']}", bc="critical,CA:TRUE",
                                   ku="critical,digitalSignature,keyCertSign"),
            "no-digitalSignature": pki.leaf("nods", f"URI:{ids['a']}",
                                            ku="critical,keyEncipherment"),
            "no-client-auth-eku": pki.leaf("noeku", f"URI:{ids['a']}", eku="serverAuth"),
        }
        for what, cert in bad.items():
            st, out = curl(srv, pki, cert, "GET", "/v1/secrets")
            check(st == 0 and b"aGVsbG8=" not in out, f"{what} refused (got {st})")
        st, out = curl(srv, pki, None, "GET", "/v1/secrets")
        check(st == 0, f"no client certificate refused (got {st})")

        # -- openssl s_client: a good SVID gets an answer, a bad one does not
        def s_client(cert):
            req = b"GET /v1/secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            p = subprocess.run(["openssl", "s_client", "-quiet", "-connect",
                                f"127.0.0.1:{srv.port}", "-cert", cert[0], "-key", cert[1],
                                "-CAfile", pki.bundle, "-verify_return_error"],
                               input=req, capture_output=True, timeout=20)
            return p.stdout
        check(s_client(certs["a"]).startswith(b"HTTP/1.1 200"), "s_client good SVID")
        for what in ("expired", "ca-as-leaf", "two-uris"):
            check(b"HTTP/1.1" not in s_client(bad[what]), f"s_client {what} refused")

        # -- disabled mid-connection: 403 on the next request on the same connection
        st, out = api(srv, pki, admin, "GET", "/v1/admin/clients", query="spiffe_id=" + ids["a"],
                      want=200)
        a_id = json.loads(out)["clients"][0]["id"]
        conn = Conn(srv, pki, certs["a"])
        st1, _ = conn.req("GET", "/v1/secrets")
        api(srv, pki, admin, "PATCH", f"/v1/admin/clients/{a_id}", {"enabled": False}, want=200)
        st2, out2 = conn.req("GET", "/v1/secrets/a-plain")
        check(st1 == 200 and st2 == 403, f"disabled mid-connection: {st1} then {st2}")
        check(b"aGVsbG8=" not in out2, "disabled: no content")
        conn.close()
        api(srv, pki, admin, "PATCH", f"/v1/admin/clients/{a_id}", {"enabled": True}, want=200)

        # -- issue 10 items 4 and 8 over HTTPS: the last admin stays; IDs the handshake refuses
        st, out = api(srv, pki, admin, "GET", "/v1/admin/clients", query="spiffe_id=" + ADMIN,
                      want=200)
        admin_id = json.loads(out)["clients"][0]["id"]
        for method, body in (("PATCH", {"admin": False}), ("PATCH", {"enabled": False}),
                             ("DELETE", None)):
            st, out = api(srv, pki, admin, method, f"/v1/admin/clients/{admin_id}", body,
                          want=409)
            check(st == 409 and json.loads(out)["error"] == "last_admin",
                  f"{method} last admin: {out[:120]!r}")
        api(srv, pki, admin, "GET", "/v1/admin/secrets", want=200)
        for bad_id in ("spiffe://example.org/ns/a/sa/app/", "spiffe://EXAMPLE.org/ns/a",
                       "spiffe://other.org/ns/a/sa/app"):
            st, out = api(srv, pki, admin, "POST", "/v1/admin/clients", {"spiffe_id": bad_id},
                          want=400)
            check(b"invalid SPIFFE ID" in out, f"create {bad_id}: reason: {out[:120]!r}")

        # -- bad input over the wire: 4xx JSON, nothing changes
        before = api(srv, pki, admin, "GET", "/v1/admin/secrets/a-plain/versions", want=200)[1]
        for method, path, body, want in (
                ("PUT", "/v1/admin/secrets/a-plain", '{"content":', 400),
                ("PUT", "/v1/admin/secrets/a-plain", '{"content":"aGk=","x":1}', 400),
                ("PUT", "/v1/admin/secrets/a-plain", b'{"content":"\xff"}', 400),
                ("PUT", "/v1/admin/secrets/a-plain", '{"content":7}', 400),
                ("PUT", "/v1/admin/secrets/a-plain", '{"content":"' + "A" * 2_000_000 + '"}', 413),
                ("DELETE", "/v1/admin/secrets/../secrets/a-plain", None, 400),
                ("DELETE", "/v1/admin/secrets/a-plain%2f..", None, 400),
                ("GET", "/v1/secrets/..%2fadmin", None, 400)):
            st, out = curl(srv, pki, admin, method, path, body)
            check(st == want, f"{method} {path[:40]}: got {st}, want {want}")
            if st:
                try:
                    check("error" in json.loads(out), f"{path[:40]}: JSON error body")
                except ValueError:
                    check(False, f"{path[:40]}: non-JSON error body {out[:80]!r}")
        after = api(srv, pki, admin, "GET", "/v1/admin/secrets/a-plain/versions", want=200)[1]
        check(before == after, "bad input changed nothing")

        # -- a few hundred random ACL trials over HTTPS (most trials run in-process in test_api)
        pool = [f"r{i:02d}" for i in range(8)]
        groups = ["ga", "gb"]
        grants = {}
        for n in pool:
            cloud = random.random() < 0.5
            g = random.choice(groups + [None])
            api(srv, pki, admin, "POST", "/v1/admin/secrets",
                {"name": n, "content": "eA==", "cloud_sync": cloud}, want=201)
            if g:
                api(srv, pki, admin, "POST", "/v1/admin/grants", {"group": g, "secret": n},
                    want=201)
            grants[n] = (g, cloud)
        member = {"a": "ga", "b": "gb", "cloud": "ga"}
        conns = {k: Conn(srv, pki, certs[k]) for k in member}
        for _ in range(300):
            k = random.choice(list(member))
            n = random.choice(pool)
            g, cloud = grants[n]
            may = g == member[k] and (k != "cloud" or cloud)
            kind = random.randrange(3)
            if kind == 0:
                st, out = conns[k].req("GET", f"/v1/secrets/{n}")
                ok = (st == 200) if may else (st == 404 and b"eA==" not in out)
            elif kind == 1:
                st, out = conns[k].req("GET", f"/secret/{n}")
                ok = (st == 200) if may else (st == 404 and b"eA==" not in out)
            else:
                st, out = conns[k].req("POST", "/v1/secrets:batchGet", {"names": [n]})
                ok = st == 200 and (b"eA==" in out) == may
            check(ok, f"ACL trial {k} {n} kind {kind}: {st}")
        for c in conns.values():
            c.close()

        # -- SIGHUP reloads without dropping the listener
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        api(srv, pki, certs["a"], "GET", "/v1/secrets", want=200)

        # -- health and metrics
        api(srv, pki, certs["a"], "GET", "/healthz", want=200)
        api(srv, pki, certs["a"], "GET", "/readyz", want=200)
        m = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{srv.mport}/metrics"],
                           capture_output=True).stdout.decode()
        check('keybridged_requests_total{route="/v1/secrets",status="200"}' in m,
              "metrics: requests by route and status")
        check("keybridged_request_duration_seconds_bucket" in m, "metrics: histogram")
        check('keybridged_hsm_operations_total{op="unwrap"}' in m, "metrics: HSM operations")
        check("keybridged_secrets{" in m and "keybridged_clients{" in m, "metrics: gauges")
        check("a-plain" not in m and "example.org" not in m, "metrics carry no names or IDs")
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=m.encode(),
                               capture_output=True)
            check(p.returncode == 0, f"promtool check metrics: {p.stdout!r} {p.stderr!r}")
        if shutil.which("prometheus"):
            prometheus_scrape(d, srv)
        else:
            print("note: prometheus not installed; scrape check skipped", file=sys.stderr)
        log = open(f"{d}/keybridged.log").read()
        check("aGVsbG8=" not in log and "hello" not in log, "no secret content in logs")
    finally:
        if srv:
            srv.stop()
            # A clean exit on SIGTERM (under ASan this also means no leak report).
            check(srv.proc is None or srv.proc.returncode == 0,
                  f"keybridged exit status {srv.proc.returncode if srv.proc else None}")
        if failures:
            print(f"keybridged log: {d}/keybridged.log (kept)", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
