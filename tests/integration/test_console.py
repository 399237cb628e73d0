#!/usr/bin/env python3
"""The web console (issue 15) against the real keybridged with SoftHSM2, in real Chromium.

keybridged serves the console on its own TLS listener; `keybridge console login` (over mTLS, as
the admin or an owner) prints one-time URLs; tests/browser/console.test.js (playwright-core from
npm driving Debian's /usr/bin/chromium) logs in, creates a secret from an uploaded file, opts it
in to cloud sync, grants it, reveals it, generates a version, walks every page (screenshots in
<build>/console-shots/), is refused a change without the CSRF header, logs out and is refused
with the old cookie and the used URL; an owner sees only its group's secrets. Then this script
checks the server side: the database state (the refused CSRF change changed nothing), the audit
rows (the reveal as secret.admin_read by the admin's identity, the CSRF refusal, logins), and
every console endpoint's parser over plain HTTPS (malformed, oversized, wrong type,
unauthenticated, wrong method). Skips (exit 0) only when /usr/bin/chromium is absent.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_keybridged_api import (ADMIN, BUILD, PKI, SERVER_ID, SRC, Server, api, check,  # noqa
                                 failures, free_port, make_hsm)

CHROMIUM = "/usr/bin/chromium"
KB = os.path.join(BUILD, "keybridge")
OWNER_A = "spiffe://example.org/ns/team-a/sa/alice"
OWNER_B = "spiffe://example.org/ns/team-b/sa/bob"
READER = "spiffe://example.org/ns/apps/sa/reader"
CLOUD = "spiffe://example.org/lambda/acct/fn"
CONTENT = "tls-key-material-\u00e9-42"


def npm_ci():
    """playwright-core into <build>/browser (the lock file pins it); no browser download."""
    d = os.path.join(BUILD, "browser")
    os.makedirs(d, exist_ok=True)
    src = os.path.join(SRC, "tests", "browser")
    stamp = os.path.join(d, "node_modules", ".kb-lock")
    lock = open(os.path.join(src, "package-lock.json"), "rb").read()
    for f in ("package.json", "package-lock.json", "console.test.js"):
        shutil.copyfile(os.path.join(src, f), os.path.join(d, f))
    if not (os.path.exists(stamp) and open(stamp, "rb").read() == lock):
        env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=d,
                       check=True, env=env, timeout=600)
        with open(stamp, "wb") as f:
            f.write(lock)
    return d


def cli_conf(d, srv, pki, cert, name):
    conf = f"{d}/{name}.conf"
    with open(conf, "w") as f:
        f.write(f"[client]\nserver_url = https://127.0.0.1:{srv.port}\n"
                f"server_id = {SERVER_ID}\ncert_file = {cert[0]}\nkey_file = {cert[1]}\n"
                f"bundle_file = {pki.bundle}\ntimeout = 30s\n")
    return conf


def login_url(conf):
    p = subprocess.run([KB, "--config", conf, "console", "login"], capture_output=True,
                       text=True, timeout=60)
    check(p.returncode == 0 and p.stdout.startswith("https://"),
          f"console login: rc={p.returncode} {p.stdout!r} {p.stderr!r}")
    return p.stdout.strip(), p


def chttp(port, cafile, method, path, body=None, headers=None):
    """One request to the console listener (no client certificate): (status, headers, body)."""
    import http.client
    import ssl
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    h = dict(headers or {})
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    c.close()
    return out


def oversized(port, cafile, path, body, headers=None):
    """A body over the limit: the server answers 413 and closes while we still send, so write
    what it takes and read the status line it sent."""
    import socket
    import ssl
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    try:
        s.sendall(head.encode())
        s.sendall(body)
    except OSError:
        pass
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def parser_negatives(port, ca, admin_url):
    """Every console endpoint's parser: malformed, oversized, wrong type, unauthenticated."""
    st, _, b = chttp(port, ca, "POST", "/api/login", b"{not json")
    check(st == 400, f"login malformed JSON: {st} {b[:100]!r}")
    st, _, b = chttp(port, ca, "POST", "/api/login", b'{"token": 5}')
    check(st == 400, f"login wrong type: {st}")
    st, _, b = chttp(port, ca, "POST", "/api/login", {"token": "x", "extra": 1})
    check(st == 400, f"login unknown field: {st}")
    st, _, b = chttp(port, ca, "POST", "/api/login", b"[]")
    check(st == 400, f"login not an object: {st}")
    st, _, b = chttp(port, ca, "POST", "/api/login", {"token": "A" * 43})
    check(st == 401, f"login unknown token: {st}")
    st, _, b = chttp(port, ca, "POST", "/api/login", {"token": "A" * 5000})
    check(st == 401, f"login overlong token: {st}")
    st = oversized(port, ca, "/api/login", b'{"token":"' + b"A" * (1100 * 1024) + b'"}')
    check(st == 413, f"login oversized body: {st}")
    st, _, b = chttp(port, ca, "GET", "/api/login")
    check(st == 405, f"login GET: {st}")
    for path in ("/api/session", "/api/v1/admin/secrets", "/api/v1/admin/audit"):
        st, h, b = chttp(port, ca, "GET", path)
        check(st == 401 and h.get("cache-control") == "no-store",
              f"{path} without a session: {st} {h.get('cache-control')}")
        st, _, b = chttp(port, ca, "GET", path, headers={"Cookie": "kb_console=" + "A" * 43})
        check(st == 401, f"{path} with an unknown session: {st}")
        st, _, b = chttp(port, ca, "GET", path, headers={"Cookie": "kb_console=../../x; a=b"})
        check(st == 401, f"{path} with a malformed cookie: {st}")
    st, _, b = chttp(port, ca, "POST", "/api/logout")
    check(st == 401, f"logout without a session: {st}")
    st, _, b = chttp(port, ca, "GET", "/../../etc/passwd")
    check(st == 404, f"path traversal: {st}")
    st, _, b = chttp(port, ca, "POST", "/index.html", b"x")
    check(st == 405, f"POST to an asset: {st}")

    # With a session (a fresh admin login over HTTP, no browser): the proxied admin API parses
    # strictly too, and a change needs the CSRF header.
    token = admin_url.split("#login=", 1)[1]
    st, h, b = chttp(port, ca, "POST", "/api/login", {"token": token})
    check(st == 200, f"login over HTTP: {st} {b[:200]!r}")
    if st != 200:
        return
    sess = json.loads(b)
    cookie = h["set-cookie"].split(";", 1)[0]
    st, _, b = chttp(port, ca, "POST", "/api/login", {"token": token})
    check(st == 401, f"token reuse: {st}")
    hd = {"Cookie": cookie, "X-CSRF-Token": sess["csrf"]}
    st, _, b = chttp(port, ca, "POST", "/api/v1/admin/secrets", b"{bad", headers=hd)
    check(st == 400, f"proxied malformed JSON: {st}")
    st, _, b = chttp(port, ca, "POST", "/api/v1/admin/secrets", {"name": 5, "content": ""},
                     headers=hd)
    check(st == 400, f"proxied wrong type: {st}")
    st = oversized(port, ca, "/api/v1/admin/secrets",
                   b'{"name":"big","content":"' + b"A" * (1100 * 1024) + b'"}', headers=hd)
    check(st == 413, f"proxied oversized: {st}")
    st, _, b = chttp(port, ca, "POST", "/api/v1/admin/groups", {"name": "csrf-probe"},
                     headers={"Cookie": cookie})
    check(st == 403, f"change without CSRF: {st}")
    st, _, b = chttp(port, ca, "POST", "/api/v1/admin/groups", {"name": "csrf-probe"},
                     headers={"Cookie": cookie, "X-CSRF-Token": sess["csrf"][:-1] + "A"
                              if sess["csrf"][-1] != "A" else sess["csrf"][:-1] + "B"})
    check(st == 403, f"change with a wrong CSRF token: {st}")
    st, _, b = chttp(port, ca, "GET", "/api/v1/admin/groups/csrf-probe", headers=hd)
    check(st == 404, f"the refused change made nothing: {st}")
    st, _, b = chttp(port, ca, "GET", "/api/v1/secrets", headers=hd)
    check(st == 404, f"client API not reachable through the console: {st}")
    st, _, b = chttp(port, ca, "GET", "/api/session", headers=hd)
    check(st == 200 and json.loads(b)["identity"] == ADMIN, f"session: {st} {b[:200]!r}")
    st, h, b = chttp(port, ca, "POST", "/api/logout", headers=hd)
    check(st == 200 and "Max-Age=0" in h.get("set-cookie", ""), f"logout: {st}")
    st, _, b = chttp(port, ca, "GET", "/api/session", headers=hd)
    check(st == 401, f"session after logout: {st}")


def main():
    if not os.path.exists(CHROMIUM):
        print(f"test_console: skipped: {CHROMIUM} is not installed (scripts/deps.sh installs it)")
        return 0
    d = tempfile.mkdtemp(prefix="kbconsole.")
    srv = None
    shots = os.path.join(BUILD, "console-shots")
    os.makedirs(shots, exist_ok=True)
    try:
        bdir = npm_ci()
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        srv = Server(d, pki, hsm)
        cport = free_port()
        with open(srv.conf, "a") as f:
            f.write(f"[console]\nlisten = 127.0.0.1:{cport}\nlogin_ttl = 5m\n")
        srv.bootstrap()
        srv.start()
        admin = pki.leaf("admin", f"URI:{ADMIN}")
        alice = pki.leaf("alice", f"URI:{OWNER_A}")
        bob = pki.leaf("bob", f"URI:{OWNER_B}")
        reader = pki.leaf("reader", f"URI:{READER}")
        cloud = pki.leaf("cloud", f"URI:{CLOUD}")
        for cid, app in ((OWNER_A, ""), (OWNER_B, ""), (READER, "reader-app"), (CLOUD, "fn")):
            api(srv, pki, admin, "POST", "/v1/admin/clients", {"spiffe_id": cid, "app_name": app},
                want=201)
        for g in ("team-a", "team-b", "app-readers"):
            api(srv, pki, admin, "POST", "/v1/admin/groups", {"name": g}, want=201)
        for cid, g in ((OWNER_A, "team-a"), (OWNER_B, "team-b"), (READER, "app-readers"),
                       (CLOUD, "team-a")):
            api(srv, pki, admin, "POST", "/v1/admin/memberships", {"client": cid, "group": g},
                want=201)
        for name, g in (("a-secret", "team-a"), ("b-secret", "team-b")):
            api(srv, pki, admin, "POST", "/v1/admin/secrets",
                {"name": name, "content": "c2VjcmV0", "owner_group": g}, want=201)
        api(srv, pki, admin, "POST", "/v1/admin/grants", {"group": "app-readers",
                                                          "secret": "a-secret"}, want=201)
        api(srv, pki, reader, "GET", "/v1/secrets", want=200)  # a listing: sync status

        # -- who may ask for a login URL
        st, _ = api(srv, pki, reader, "POST", "/v1/console/login")
        check(st == 403, f"a client that owns nothing cannot log in: {st}")
        st, _ = api(srv, pki, cloud, "POST", "/v1/console/login")
        check(st == 403, f"a cloud client cannot log in: {st}")
        st, _ = api(srv, pki, admin, "POST", "/v1/console/login", {"x": 1})
        check(st == 400, f"login with a body refused: {st}")
        st, _ = api(srv, pki, admin, "GET", "/v1/console/login")
        check(st == 405, f"GET login refused: {st}")

        aconf = cli_conf(d, srv, pki, admin, "admin")
        admin_url, p = login_url(aconf)
        check(admin_url.startswith(f"https://127.0.0.1:{cport}/#login="), admin_url)
        check(admin_url.split("#login=")[1] not in open(f"{d}/keybridged.log").read(),
              "the token is not in keybridged's log")
        http_url, _ = login_url(aconf)
        owner_url, _ = login_url(cli_conf(d, srv, pki, alice, "alice"))

        parser_negatives(cport, pki.bundle, http_url)

        env = dict(os.environ, KB_CONSOLE_TEST=json.dumps({
            "base": f"https://127.0.0.1:{cport}", "admin_url": admin_url,
            "owner_url": owner_url, "shots": shots, "profile": f"{d}/chromium-profile",
            "content": CONTENT, "owner_a": OWNER_A}))
        p = subprocess.run(["node", os.path.join(bdir, "console.test.js")], cwd=bdir, env=env,
                           capture_output=True, text=True, timeout=300)
        sys.stderr.write(p.stderr[-4000:])
        res = {}
        for line in p.stdout.splitlines():
            if line.startswith("{"):
                res = json.loads(line)
        check(p.returncode == 0 and "error" not in res, f"browser run: {res.get('error')}")
        for k, v in sorted(res.get("results", {}).items()):
            check(v is True, f"browser: {k}: {v}")
        check(len(res.get("results", {})) >= 30, f"browser checks ran: {len(res.get('results', {}))}")
        for s in ("secrets", "create", "secret", "expiring", "groups", "clients", "sync",
                  "audit", "owner"):
            check(os.path.getsize(os.path.join(shots, f"console-{s}.png")) > 1000,
                  f"screenshot {s}")

        # -- server side: the state the browser made, and nothing the refused change would have
        st, out = api(srv, pki, admin, "GET", "/v1/admin/secrets/web-tls", want=200)
        sec = json.loads(out) if st == 200 else {}
        check(sec.get("cloud_sync") is True and sec.get("owner_group") == "team-a"
              and sec.get("version") == 2 and "app-readers" in sec.get("groups", []),
              f"web-tls as the browser left it: {sec}")
        check(sec.get("created_by") == ADMIN, f"created as the admin: {sec.get('created_by')}")
        st, out = api(srv, pki, admin, "GET", "/v1/admin/secrets/web-tls/versions", want=200)
        v1 = [v for v in json.loads(out)["versions"] if v["version"] == 1] if st == 200 else []
        check(v1 and v1[0]["content_length"] == len(CONTENT.encode()), f"uploaded bytes: {v1}")
        st, out = api(srv, pki, reader, "GET", "/v1/secrets/web-tls", want=200)
        import base64
        check(st == 200 and base64.b64decode(json.loads(out)["content"]) != CONTENT.encode(),
              "the grant reaches the reader (version 2 is the generated one)")
        st, out = api(srv, pki, admin, "GET", "/v1/admin/audit", query="limit=1000", want=200)
        ev = json.loads(out)["events"] if st == 200 else []

        def has(action, identity, obj=None, result="ok"):
            return any(e["action"] == action and e["identity"] == identity and
                       (obj is None or e["object"] == obj) and e["result"] == result for e in ev)
        check(has("secret.admin_read", ADMIN, "web-tls"), "the reveal is audited as the admin")
        check(has("console.csrf_refused", ADMIN, result="denied"), "CSRF refusal audited")
        check(has("console.login", ADMIN) and has("console.login", OWNER_A), "logins audited")
        check(has("console.login", "console", result="auth"), "failed login audited")
        check(has("console.logout", ADMIN), "logout audited")
        check(has("console.login_token", READER, result="denied"), "refused token audited")
        check(not has("secret.admin_read", OWNER_A, "b-secret"),
              "the owner never read another group's secret")
        st, out = api(srv, pki, admin, "POST", "/v1/admin/audit/verify", want=200)
        check(st == 200 and json.loads(out)["ok"], f"audit chain verifies: {out[:200]!r}")
    finally:
        if srv:
            srv.stop()
        if failures:
            print(f"keybridged log: {d}/keybridged.log", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)
    print(f"test_console: {len(failures)} failure(s); screenshots in {shots}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
