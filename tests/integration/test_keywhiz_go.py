#!/usr/bin/env python3
"""keybridged's Keywhiz endpoints against a client that decodes like Square's keysync (issue 14).

keysync is written in Go: encoding/json matches object keys to struct fields ignoring case, the
last matching key winning, and a nil slice is sent as null. tests/integration/keysync_like is such
a client (Go's standard library only, host name checked against the server certificate's SANs).
Checks:
- metadata keys equal to a Keywhiz field ignoring case (Secret, SECRETLENGTH, Name, ...) or to
  another key ignoring case are refused with 400 on create and on a new version, and nothing is
  stored; keysync's own keys (filename, mode, owner, group) are accepted;
- the Go client decodes GET /secrets, GET /secret/NAME and POST /batchsecret to the real
  content, length, mode, owner and filename;
- {"secrets":null} (keysync's steady-state poll) and {"secrets":[]} answer 200 [];
  {} and {"secrets":"x"} answer 400.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_keybridged_api as kb  # noqa: E402  (PKI, Server, make_hsm, api)

failures = kb.failures
check = kb.check


def build_client(d):
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is required (scripts/deps.sh installs golang-go)")
    out = os.path.join(d, "keysync_like")
    env = dict(os.environ, GOCACHE=os.path.join(kb.BUILD, "go-cache"),
               GOPATH=os.path.join(d, "gopath"), GOPROXY="off", GOFLAGS="-mod=mod",
               CGO_ENABLED="0")
    src = os.path.join(kb.SRC, "tests", "integration", "keysync_like", "main.go")
    subprocess.run([go, "build", "-o", out, src], check=True, env=env)
    return out


def main():
    if not os.path.exists(kb.KEYBRIDGED):
        print("SKIP: keybridged not built", file=sys.stderr)
        return 0
    d = tempfile.mkdtemp(prefix="kbkw.")
    srv = None
    try:
        client = build_client(d)
        hsm = kb.make_hsm(d)
        pki = kb.PKI(f"{d}/pki")
        srv = kb.Server(d, pki, hsm)
        srv.bootstrap()
        srv.start()
        admin = pki.leaf("admin", f"URI:{kb.ADMIN}")
        app_id = "spiffe://example.org/ns/a/sa/app"
        app = pki.leaf("app", f"URI:{app_id}")
        api = kb.api
        api(srv, pki, admin, "POST", "/v1/admin/groups", {"name": "g"}, want=201)
        api(srv, pki, admin, "POST", "/v1/admin/clients", {"spiffe_id": app_id, "app_name": "a"},
            want=201)
        api(srv, pki, admin, "POST", "/v1/admin/memberships", {"client": app_id, "group": "g"},
            want=201)

        # -- metadata that a Go decoder would read over a fixed field is refused, nothing stored
        bad = [{"Secret": "x"}, {"SECRET": "x"}, {"secretlength": "1"}, {"Name": "other"},
               {"CHECKSUM": "0"}, {"creationdate": "x"}, {"UpdateDate": "x"}, {"Expiry": "1"},
               {"VERSION": "9"}, {"mode": "0400", "Mode": "0666"},
               {"owner": "nobody", "OWNER": "root"}]
        for i, md in enumerate(bad):
            st, out = api(srv, pki, admin, "POST", "/v1/admin/secrets",
                          {"name": f"bad-{i}", "content": "aGVsbG8=", "metadata": md})
            check(st == 400, f"metadata {md} refused on create (got {st})")
            check(b"ignoring case" in out, f"the error names the rule: {out[:200]!r}")
            st, _ = api(srv, pki, admin, "GET", f"/v1/admin/secrets/bad-{i}")
            check(st == 404, f"nothing stored for {md}")
        good_md = {"mode": "0440", "owner": "app", "group": "app", "filename": "db.pem"}
        api(srv, pki, admin, "POST", "/v1/admin/secrets",
            {"name": "db", "content": "aGVsbG8gd29ybGQ=", "metadata": good_md}, want=201)
        api(srv, pki, admin, "POST", "/v1/admin/secrets",
            {"name": "api-key", "content": "c2VjcmV0", "metadata": {"mode": "0400"}}, want=201)
        for name in ("db", "api-key"):
            api(srv, pki, admin, "POST", "/v1/admin/grants", {"group": "g", "secret": name},
                want=201)
        st, out = api(srv, pki, admin, "PUT", "/v1/admin/secrets/db",
                      {"content": "bmV3", "metadata": {"mode": "0400", "secretLength": "1"}})
        check(st == 400, f"reserved key refused on a new version (got {st})")
        st, out = api(srv, pki, admin, "GET", "/v1/admin/secrets/db")
        check(st == 200 and json.loads(out).get("version") == 1,
              f"refused version changed nothing: {out[:200]!r}")

        def go(*args):
            p = subprocess.run([client, "-url", f"https://127.0.0.1:{srv.port}", "-cert", app[0],
                                "-key", app[1], "-ca", pki.bundle, *args], capture_output=True)
            return p.returncode, p.stdout.decode(), p.stderr.decode()

        # -- the Go client decodes listing, single get and batch to the real values
        rc, out, err = go("list")
        check(rc == 0, f"list decodes in Go: rc={rc} {err}")
        if rc == 0:
            lst = {e["name"]: e for e in json.loads(out)}
            check(sorted(lst) == ["api-key", "db"], f"listing names: {sorted(lst)}")
            db = lst.get("db", {})
            check(db.get("length") == 11 and "content" not in db, f"listing entry: {db}")
            check(db.get("mode") == "0440" and db.get("owner") == "app" and
                  db.get("filename") == "db.pem", f"metadata applied by Go client: {db}")
            check(db.get("created", "").startswith("20"), f"creationDate decodes: {db}")
        rc, out, err = go("get", "db")
        check(rc == 0 and json.loads(out).get("content") == "hello world",
              f"single get content: rc={rc} {out} {err}")
        rc, out, err = go("batch", "db", "api-key")
        if rc == 0:
            got = {e["name"]: e.get("content") for e in json.loads(out)}
            check(got == {"db": "hello world", "api-key": "secret"}, f"batch contents: {got}")
        else:
            check(False, f"batch decodes: rc={rc} {err}")

        # -- keysync's steady-state poll: {"secrets":null}; and an empty list
        rc, out, err = go("batch")
        check('{"secrets":null}' in err, f"the Go client sent null: {err}")
        check(rc == 0 and json.loads(out) == [], f"null batch answers 200 []: rc={rc} {out}")
        rc, out, err = go("batch-empty")
        check(rc == 0 and json.loads(out) == [], f"empty batch answers 200 []: rc={rc} {out}")
        for body in ({}, {"secrets": "db"}, {"secrets": 5}, {"secrets": [None]}):
            st, _ = api(srv, pki, app, "POST", "/batchsecret", body)
            check(st == 400, f"batch {body} answers 400 (got {st})")
    finally:
        if srv:
            srv.stop()
        if failures:
            print(f"kept {d} for inspection", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)
    print(f"{len(failures)} failed" if failures else "keywhiz go client: all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
