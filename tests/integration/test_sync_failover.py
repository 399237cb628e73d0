#!/usr/bin/env python3
"""keybridge-sync with several keybridged URLs (issue 13): failover, retries, stable order.

Real keybridged (SQLite + SoftHSM2) as A, a second real keybridged B on a copy of A's database
(SQLite has one writer, so replicas on one file are not possible; the copy holds the same clients,
grants and secrets, and both use the same token), and hostile peers on loopback:
  - a dead port (nothing listening), a TCP server that resets every connection (RST at accept);
  - a TLS server holding a valid keybridged SVID that answers every request with one status;
  - a relay to A that resets its first connections (a keybridged dropping a herd's handshakes).
Each client starts at url[SHA-256(its SPIFFE ID)[:8] % n] (docs/failover.md), computed here
independently, so the test places each peer where that client will try it first.
  1. stable order: two clients with different offsets land on different replicas, run after run
     (keybridged's own metrics are the witness);
  2. first replica dead (refused) or resetting: the run succeeds on the next, the log says which
     server answered;
  3. 503 from the first: fails over; 403 and 404 from the first: no failover (the run fails and
     the other replica sees no request);
  4. one URL that resets its first two connections: retried with backoff, the run succeeds;
  5. every replica down: the run fails within its deadline and the sink is untouched.
"""
import hashlib
import json
import os
import shutil
import socket
import ssl
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_keybridged_api as kbapi  # noqa: E402
import test_sync_e2e as h  # noqa: E402
import test_sync_keybridged as sk  # noqa: E402

check = h.check
CLIENT2 = "spiffe://example.org/lambda/acct/123456789012/fn/ledger2"


def first_index(client, n):
    """docs/failover.md: the first 8 bytes of SHA-256(SPIFFE ID), big-endian, modulo n."""
    return int.from_bytes(hashlib.sha256(client.encode()).digest()[:8], "big") % n


def place(client, first, others):
    """A URL list in which `first` is the one `client` tries first."""
    n = 1 + len(others)
    i = first_index(client, n)
    lst = list(others)
    lst.insert(i, first)
    return ",".join(lst)


def rst_close(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


class Resetter:
    """Accepts TCP and resets it at once; relays to `up` after the first `drop` connections when
    up is given (drop=None: resets all)."""

    def __init__(self, up=None, drop=None):
        self.up, self.drop, self.conns = up, drop, 0
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.conns += 1
            if self.up is None or self.drop is None or self.conns <= self.drop:
                rst_close(c)
                continue
            threading.Thread(target=self._relay, args=(c,), daemon=True).start()

    def _relay(self, c):
        u = socket.create_connection(("127.0.0.1", self.up))

        def pump(a, b):
            try:
                while True:
                    x = a.recv(65536)
                    if not x:
                        break
                    b.sendall(x)
            except OSError:
                pass
            finally:
                try:
                    b.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        t = threading.Thread(target=pump, args=(u, c), daemon=True)
        t.start()
        pump(c, u)
        t.join(10)
        c.close()
        u.close()

    def close(self):
        self.ls.close()


class StatusServer:
    """TLS with a valid keybridged SVID; answers every request with `status` (None: reads the
    request and closes without an answer). Counts connections and requests."""

    def __init__(self, cert, key, status):
        self.status, self.requests, self.conns = status, 0, 0
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            s = self.ctx.wrap_socket(c, server_side=True)
            buf = b""
            while b"\r\n\r\n" not in buf:
                x = s.recv(4096)
                if not x:
                    return
                buf += x
            head, _, rest = buf.partition(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            while len(rest) < n:
                rest += s.recv(4096)
            self.requests += 1
            if self.status is None:
                rst_close(s)
                return
            body = json.dumps({"error": "nope", "message": f"status {self.status}"}).encode()
            extra = "Retry-After: 1\r\n" if self.status == 503 else ""
            s.sendall(f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode()
                      + body)
            s.close()
        except (OSError, ssl.SSLError):
            pass

    def close(self):
        self.ls.close()


def main():
    if not os.path.exists(kbapi.KEYBRIDGED):
        print("SKIP: keybridged not built")
        return
    check(first_index(h.CLIENT_ID, 2) != first_index(CLIENT2, 2), "pick clients of both offsets")
    e = h.Env()
    srv = srv_b = None
    peers = []
    try:
        srv, pki, admin, client = sk.setup_keybridged(e.dir)
        admin("POST", "/v1/admin/clients", {"spiffe_id": CLIENT2, "app_name": "ledger"}, want=201)
        admin("POST", "/v1/admin/memberships", {"client": CLIENT2, "group": "payments"}, want=201)
        client2 = pki.leaf("sync2", f"URI:{CLIENT2}")
        for i in range(3):
            sk.add_secret(admin, f"s{i}", f"content {i}".encode())
        admin.c.close()
        # B: a second keybridged on a copy of A's database (A stopped for a consistent copy)
        srv.stop()
        d2 = os.path.join(e.dir, "b")
        os.mkdir(d2)
        for suf in ("", "-wal", "-shm"):
            if os.path.exists(f"{e.dir}/kb.db{suf}"):
                shutil.copy2(f"{e.dir}/kb.db{suf}", f"{d2}/kb.db{suf}")
        srv_b = kbapi.Server(d2, pki, {"module": "", "label": "", "pin_file": ""})
        with open(srv.conf) as f:
            conf = f.read()
        conf = conf.replace(f"127.0.0.1:{srv.port}", f"127.0.0.1:{srv_b.port}")
        conf = conf.replace(f"127.0.0.1:{srv.mport}", f"127.0.0.1:{srv_b.mport}")
        conf = conf.replace(f"sqlite:{e.dir}/kb.db", f"sqlite:{d2}/kb.db")
        with open(srv_b.conf, "w") as f:
            f.write(conf)
        srv.start()
        srv_b.start()
        A, B = f"https://127.0.0.1:{srv.port}", f"https://127.0.0.1:{srv_b.port}"
        fake_pem, fake_key = pki.leaf("fake", f"URI:{kbapi.SERVER_ID},IP:127.0.0.1")

        n_sink = [0]

        def env_for(cid, cert, urls, **over):
            n_sink[0] += 1
            dd = os.path.join(e.dir, f"sink{n_sink[0]}")
            os.mkdir(dd, 0o700)
            env = e.sync_env(KEYBRIDGE_SYNC_SOURCE_URL=urls,
                             KEYBRIDGE_SYNC_SOURCE_SERVER_ID=kbapi.SERVER_ID,
                             KEYBRIDGE_SYNC_SOURCE_SVID_CERT_FILE=cert[0],
                             KEYBRIDGE_SYNC_SOURCE_SVID_KEY_FILE=cert[1],
                             KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE=pki.bundle,
                             KEYBRIDGE_SYNC_SINK_TARGET="dir:" + dd,
                             KEYBRIDGE_SYNC_SINK_REGIONS=None,
                             KEYBRIDGE_SYNC_SINK_ENDPOINT=None,
                             KEYBRIDGE_SYNC_LOG_LEVEL="info")
            env.update(over)
            return env, dd

        def both():
            return sk.server_requests(srv), sk.server_requests(srv_b)

        def answered(err):
            return [json.loads(x).get("server") for x in err.splitlines()
                    if '"keybridged_server"' in x]

        # 1. stable order: each client on url[offset], run after run; the two spread
        for cid, cert in ((h.CLIENT_ID, client), (CLIENT2, client2)):
            want = [A, B][first_index(cid, 2)]
            for _ in range(2):
                m0 = both()
                env, dd = env_for(cid, cert, f"{A},{B}")
                rc, s, err = e.run(env=env)
                check(rc == 0 and s["created"] == 3, (rc, s, err[-2000:]))
                da, db = sk.delta(m0[0], both()[0]), sk.delta(m0[1], both()[1])
                hit, miss = (da, db) if want == A else (db, da)
                check(hit.get(("/v1/secrets", "200")) == 1 and miss == {}, (cid, want, da, db))
                check(answered(err) == [want], (answered(err), want))
        print("ok: stable order: each client on url[SHA-256(SPIFFE ID)[:8] % n], the two on different "
              "replicas, the same one on every run")

        # 2. the first one down: refused, then resetting every connection
        dead = f"https://127.0.0.1:{kbapi.free_port()}"
        rs = Resetter()
        peers.append(rs)
        for what, first in (("refused", dead), ("reset", f"https://127.0.0.1:{rs.port}")):
            m0 = both()
            env, dd = env_for(h.CLIENT_ID, client, place(h.CLIENT_ID, first, [A]))
            rc, s, err = e.run(env=env)
            check(rc == 0 and s["created"] == 3, (what, rc, s, err[-2000:]))
            check(open(os.path.join(dd, "s1"), "rb").read() == b"content 1", "content")
            check('"keybridged_failover"' in err and answered(err) == [A], (what, err[-2000:]))
            check(sk.delta(m0[0], both()[0]).get(("/v1/secrets", "200")) == 1, what)
        check(rs.conns >= 1, "the resetting peer was tried first")
        print("ok: first replica refusing or resetting connections: failed over, A answered")

        # 3. answers: 503 fails over; 403 and 404 are authoritative (no failover)
        for st, ok in ((503, True), (403, False), (404, False)):
            fk = StatusServer(fake_pem, fake_key, st)
            peers.append(fk)
            m0 = both()
            env, dd = env_for(h.CLIENT_ID, client,
                              place(h.CLIENT_ID, f"https://127.0.0.1:{fk.port}", [A]))
            rc, s, err = e.run(env=env)
            da = sk.delta(m0[0], both()[0])
            check(fk.requests == 1, (st, fk.requests))
            if ok:
                check(rc == 0 and s["created"] == 3 and answered(err) == [A], (st, rc, s, err))
            else:
                check(rc != 0 and s["ok"] is False and da == {} and os.listdir(dd) == [],
                      (st, rc, s, da))
                check('"keybridged_failover"' not in err, err[-2000:])
        print("ok: 503 fails over to the next replica; 403 and 404 end the run there (the other "
              "replica saw no request)")

        # 4. one URL whose first two connections are reset: retried after backoff
        fl = Resetter(up=srv.port, drop=2)
        peers.append(fl)
        env, dd = env_for(h.CLIENT_ID, client, f"https://127.0.0.1:{fl.port}")
        t0 = time.monotonic()
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["created"] == 3 and fl.conns >= 3, (rc, s, fl.conns, err[-2000:]))
        check(err.count('"keybridged_retry"') == 2, err[-2000:])
        print(f"ok: a single replica resetting its first 2 connections: retried twice with "
              f"backoff, converged in {time.monotonic() - t0:.1f} s")

        # 5. everything down: fails within the deadline, the sink untouched
        env, dd = env_for(h.CLIENT_ID, client, f"{dead},https://127.0.0.1:{rs.port}")
        with open(os.path.join(dd, "keep"), "wb") as f:
            f.write(b"cached")
        t0 = time.monotonic()
        rc, s, err = e.run("sync", "--deadline", "20s", env=env)
        dt = time.monotonic() - t0
        check(rc != 0 and s["ok"] is False and dt < 20, (rc, s, dt))
        check(sorted(os.listdir(dd)) == ["keep"] and open(os.path.join(dd, "keep"), "rb").read()
              == b"cached", "the sink changed while every replica was down")
        check('"keybridged_giving_up"' in err, err[-2000:])
        print(f"ok: every replica down: exit {rc} after {dt:.1f} s, sink untouched: {s['error']}")
    finally:
        for p in peers:
            p.close()
        for x in (srv, srv_b):
            if x:
                x.stop()
        e.close()
    print("PASS")


if __name__ == "__main__":
    main()
