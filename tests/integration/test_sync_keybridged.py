#!/usr/bin/env python3
"""keybridge-sync against the REAL keybridged (SQLite + SoftHSM2) and keybridge-cache.

keybridged is started, bootstrapped and given openssl-made SVIDs as in test_keybridged_api.py;
an admin creates a group, a cloud client (SPIFFE ID under /lambda/, application "payments") and
N cloud-sync secrets (plus secrets that must never leave: not opted in, or in another group).
Then, with keybridged's own request metrics as the second witness:
  1. the first run creates N (contents fetched in ceil(N/100) batches);
  2. a second run is a no-op: exactly 1 list call, no batchGet (server side too), ceil(N/100)
     ListSecrets;
  3. a changed secret updates (only it is fetched);
  4. a removed grant deletes (7-day recovery window);
  5. keybridged stopped: the sync fails, the cache is untouched.
"""
import base64
import json
import math
import os
import re
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_keybridged_api as kbapi  # noqa: E402
import test_sync_e2e as h  # noqa: E402

N = int(os.environ.get("KB_SYNC_N", "120"))
check = h.check


class RecordingProxy:
    """A TCP relay to keybridge-cache that keeps what the client sent, one entry per connection
    (kb_awsreq keeps one connection per endpoint alive, so a run's calls share an entry). SigV4
    still verifies: the bytes, Host header included, reach the cache unchanged. stop() waits for
    every relayed connection to finish, so `requests` is complete when it returns."""

    def __init__(self, port):
        self.requests = []
        self.up = port
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.stopped = False
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            t = threading.Thread(target=self._conn, args=(c,), daemon=True)
            with self.lock:
                self.conns.append(t)
            t.start()

    def _conn(self, c):
        u = socket.create_connection(("127.0.0.1", self.up))
        got = []

        def pump(src, dst, keep):
            try:
                while True:
                    b = src.recv(65536)
                    if not b:
                        break
                    if keep is not None:
                        keep.append(b)
                    dst.sendall(b)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        t = threading.Thread(target=pump, args=(u, c, None), daemon=True)
        t.start()
        pump(c, u, got)
        t.join(10)
        c.close()
        u.close()
        with self.lock:
            self.requests.append(b"".join(got))

    def stop(self):
        """Called after the client process has exited: its connections are closed, so each
        relay thread ends as soon as it has forwarded the last bytes."""
        self.stopped = True
        self.ls.close()
        with self.lock:
            conns = list(self.conns)
        for t in conns:
            t.join(20)


def server_requests(srv):
    """{(route, status): count} from keybridged's metrics listener."""
    m = kbapi.subprocess.run(["curl", "-sS", f"http://127.0.0.1:{srv.mport}/metrics"],
                             capture_output=True, check=True).stdout.decode()
    out = {}
    for route, status, v in re.findall(
            r'keybridged_requests_total\{route="([^"]+)",status="(\d+)"\} (\d+)', m):
        out[(route, status)] = int(v)
    return out


def delta(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b) if b.get(k, 0) != a.get(k, 0)}


class Admin:
    def __init__(self, srv, pki, cert):
        self.args = (srv, pki, cert)
        self.c = kbapi.Conn(srv, pki, cert)

    def __call__(self, method, path, body=None, want=None):
        try:
            st, out = self.c.req(method, path, body)
        except (OSError, kbapi.http.client.HTTPException):
            # the server closed the idle keep-alive connection: one new connection, one retry
            self.c.close()
            self.c = kbapi.Conn(*self.args)
            st, out = self.c.req(method, path, body)
        if want is not None and st != want:
            raise AssertionError(f"{method} {path}: {st} (want {want}): {out[:300]!r}")
        return st, json.loads(out) if out else None


def b64(s):
    return base64.b64encode(s).decode()


def setup_keybridged(d):
    hsm = kbapi.make_hsm(d)
    pki = kbapi.PKI(f"{d}/pki")
    srv = kbapi.Server(d, pki, hsm)
    srv.bootstrap()
    srv.start()
    admin = Admin(srv, pki, pki.leaf("admin", f"URI:{kbapi.ADMIN}"))
    client = pki.leaf("sync", f"URI:{h.CLIENT_ID}")
    admin("POST", "/v1/admin/groups", {"name": "payments"}, want=201)
    admin("POST", "/v1/admin/groups", {"name": "other"}, want=201)
    admin("POST", "/v1/admin/clients", {"spiffe_id": h.CLIENT_ID, "app_name": h.APP}, want=201)
    admin("POST", "/v1/admin/memberships", {"client": h.CLIENT_ID, "group": "payments"}, want=201)
    return srv, pki, admin, client


def add_secret(admin, name, content, cloud=True, group="payments", meta=None):
    admin("POST", "/v1/admin/secrets", {"name": name, "content": b64(content), "cloud_sync": cloud,
                                        "metadata": meta or {}}, want=201)
    admin("POST", "/v1/admin/grants", {"group": group, "secret": name}, want=201)


def main():
    if not os.path.exists(kbapi.KEYBRIDGED):
        print("SKIP: keybridged not built")
        return
    e = h.Env()
    srv = None
    try:
        srv, pki, admin, client = setup_keybridged(e.dir)
        e.start_cache()
        sm = e.sm()
        for i in range(N):
            add_secret(admin, f"s{i:03d}", f"content {i}".encode())
        add_secret(admin, "bin", bytes(range(256)))
        add_secret(admin, "dc-only", b"stays in the data center", cloud=False)
        add_secret(admin, "other-group", b"not ours", group="other")
        total = N + 1
        env = e.sync_env(KEYBRIDGE_SYNC_SOURCE_URL=f"https://127.0.0.1:{srv.port}",
                         KEYBRIDGE_SYNC_SOURCE_SERVER_ID=kbapi.SERVER_ID,
                         KEYBRIDGE_SYNC_SOURCE_SVID_CERT_FILE=client[0],
                         KEYBRIDGE_SYNC_SOURCE_SVID_KEY_FILE=client[1],
                         KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE=pki.bundle)
        pages = math.ceil(total / 100)

        # 1. first run creates everything
        m0 = server_requests(srv)
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["ok"] and s["created"] == total and s["failed"] == 0, (rc, s, err))
        check(s["application"] == h.APP, s)
        check(h.calls(s, "keybridged.list") == 1 and h.calls(s, "keybridged.batchGet") == pages, s)
        check(s["hsm_fetches"] == total, s)
        d = delta(m0, server_requests(srv))
        check(d == {("/v1/secrets", "200"): 1, ("/v1/secrets:batchGet", "200"): pages}, d)
        check(sm.get_secret_value(SecretId="keybridge/payments/s007")["SecretString"] == "content 7",
              "content")
        v = sm.get_secret_value(SecretId="keybridge/payments/bin")
        check(v.get("SecretBinary") == bytes(range(256)), "binary content")
        names = {x["Name"] for p in sm.get_paginator("list_secrets").paginate() for x in p["SecretList"]}
        check("keybridge/payments/dc-only" not in names and "keybridge/payments/other-group" not in names,
              "a secret without cloud_sync or of another group reached the cache")
        tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId="keybridge/payments/s000")["Tags"]}
        st, vers = admin("GET", "/v1/admin/secrets/s000/versions", want=200)
        check(tags["keybridge:checksum"] == vers["versions"][0]["checksum"] and
              tags["keybridge:version"] == "1", (tags, vers))
        print(f"ok: first run created {total} ({pages} batchGet), {s['duration_ms']} ms")

        # 2. no-op: 1 list call, no fetch, ceil(N/100) ListSecrets; the server agrees
        m0 = server_requests(srv)
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["unchanged"] == total and s["created"] == s["updated"] == 0, (rc, s))
        check(s["calls"] == {"keybridged.list": 1, "ListSecrets": pages}, s["calls"])
        check(s["hsm_fetches"] == 0 and s["bytes_fetched"] == 0, s)
        d = delta(m0, server_requests(srv))
        check(d == {("/v1/secrets", "200"): 1}, d)
        print(f"ok: no-op = 1 list call (server agrees), {pages} ListSecrets, {s['duration_ms']} ms")

        # the dir sink from the same server: files, then a no-op with one list call
        ddir = os.path.join(e.dir, "secrets")
        os.mkdir(ddir, 0o700)
        denv = dict(env, KEYBRIDGE_SYNC_SINK_TARGET="dir:" + ddir)
        rc, s, err = e.run(env=denv)
        check(rc == 0 and s["created"] == total, (rc, s, err))
        with open(os.path.join(ddir, "s009"), "rb") as f:
            check(f.read() == b"content 9", "dir content")
        check(not os.path.exists(os.path.join(ddir, "dc-only")), "dc-only in the dir sink")
        m0 = server_requests(srv)
        rc, s, err = e.run(env=denv)
        check(rc == 0 and s["unchanged"] == total and s["calls"] == {"keybridged.list": 1, "dir.read": 1}, (rc, s))
        check(delta(m0, server_requests(srv)) == {("/v1/secrets", "200"): 1}, "dir no-op")
        print(f"ok: dir sink: created {total}, then a no-op with 1 list call")

        # 3. a changed secret updates, only it is fetched
        admin("PUT", "/v1/admin/secrets/s005", {"content": b64(b"rotated 5")}, want=200)
        m0 = server_requests(srv)
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["updated"] == 1 and s["unchanged"] == total - 1, (rc, s))
        check(s["hsm_fetches"] == 1 and h.calls(s, "keybridged.batchGet") == 1, s)
        check(sm.get_secret_value(SecretId="keybridge/payments/s005")["SecretString"] == "rotated 5",
              "update")
        tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId="keybridge/payments/s005")["Tags"]}
        check(tags["keybridge:version"] == "2", tags)
        d = delta(m0, server_requests(srv))
        check(d == {("/v1/secrets", "200"): 1, ("/v1/secrets:batchGet", "200"): 1}, d)
        print("ok: changed secret updated (one fetch)")

        # 4. a removed grant deletes, with a 7-day recovery window
        admin("DELETE", "/v1/admin/grants", {"group": "payments", "secret": "s003"}, want=200)
        proxy = RecordingProxy(e.cache_port)
        rc, s, err = e.run(env=dict(env, KEYBRIDGE_SYNC_SINK_ENDPOINT=f"http://127.0.0.1:{proxy.port}"))
        proxy.stop()
        check(rc == 0 and s["deleted"] == 1 and s["unchanged"] == total - 1, (rc, s))
        dd = sm.describe_secret(SecretId="keybridge/payments/s003")
        check("DeletedDate" in dd, dd)
        # the recovery window the syncer asked for (the run went through a recording proxy)
        dels = [r for r in proxy.requests if b"secretsmanager.DeleteSecret" in r]
        check(len(dels) == 1 and b'"RecoveryWindowInDays":7' in dels[0].replace(b" ", b"")
              and b"ForceDeleteWithoutRecovery" not in dels[0], dels)
        try:
            sm.get_secret_value(SecretId="keybridge/payments/s003")
            check(False, "a deleted secret is still readable")
        except sm.exceptions.InvalidRequestException:
            pass
        # the window: restore still possible (RestoreSecret), as AWS within 7 days
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["unchanged"] == total - 1 and s["deleted"] == 0, (rc, s))
        admin("POST", "/v1/admin/grants", {"group": "payments", "secret": "s003"}, want=201)
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["restored"] == 1, (rc, s))
        check(sm.get_secret_value(SecretId="keybridge/payments/s003")["SecretString"] == "content 3",
              "restored")
        # opting out of cloud sync is a removal too
        admin("PATCH", "/v1/admin/secrets/s004", {"cloud_sync": False}, want=200)
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["deleted"] == 1, (rc, s))
        print("ok: removed grant -> deleted (7-day window), regranted -> restored; opt-out deletes")

        # the same sync with the SVID stored in the cache as SVIDStore JSON (as keybridge-ca does)
        rd = lambda p: open(p).read()  # noqa: E731
        sm.create_secret(Name="spiffe/payments", SecretBinary=json.dumps(
            {"spiffeID": h.CLIENT_ID, "x509SVID": rd(client[0]), "x509SVIDKey": rd(client[1]),
             "bundle": rd(pki.bundle), "federatedBundles": {}}).encode())
        senv = dict(env, KEYBRIDGE_SYNC_SOURCE_SVID_SECRET_ID="spiffe/payments")
        for k in ("SVID_CERT_FILE", "SVID_KEY_FILE", "BUNDLE_FILE"):
            senv.pop("KEYBRIDGE_SYNC_SOURCE_" + k)
        rc, s, err = e.run(env=senv)
        check(rc == 0 and s["unchanged"] == total - 1 and h.calls(s, "GetSecretValue") == 1,
              (rc, s, err))
        print("ok: SVID from an SVIDStore secret in keybridge-cache against the real keybridged")

        # 5. keybridged stopped: fails, the cache untouched
        admin("PUT", "/v1/admin/secrets/s006", {"content": b64(b"never synced")}, want=200)
        admin.c.close()
        before = h.cache_snapshot(sm)
        srv.stop()
        rc, s, err = e.run(env=env)
        check(rc != 0 and s["ok"] is False and s.get("error"), (rc, s))
        check(all(k.startswith("keybridged") for k in s["calls"]), s["calls"])
        check(h.cache_snapshot(sm) == before, "cache changed while keybridged was down")
        print(f"ok: keybridged stopped: exit {rc}: {s['error']}")
    finally:
        if srv:
            srv.stop()
        e.close()
    print("PASS")


if __name__ == "__main__":
    main()
