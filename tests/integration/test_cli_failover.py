#!/usr/bin/env python3
"""The `keybridge` CLI with several keybridged URLs (issue 13, docs/failover.md).

A real keybridged (SQLite + SoftHSM2) and hostile peers on loopback (a dead port, a TCP server
that resets every connection, TLS servers holding a valid keybridged SVID that answer 503 or
close after reading the request, one that only counts connections). Each client starts at
url[SHA-256(its SPIFFE ID)[:8] % n], computed here, so each peer is placed where the client
tries it first.
  1. [client] server_url list: dead first, then resetting first: a GET succeeds on keybridged,
     one "trying" line per failover;
  2. --server repeated replaces the configured list; a bad --server is a usage error;
  3. 503 from the first: a GET fails over;
  4. 403 is authoritative: the second server gets no connection;
  5. a POST that reached a server which then closed is not replayed (keybridged never sees it);
     a GET on the same list fails over.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_keybridged_api as kbapi  # noqa: E402
import test_sync_failover as sf  # noqa: E402

KB = os.path.join(kbapi.BUILD, "keybridge")
check = kbapi.check
APP_ID = "spiffe://example.org/ns/pay/sa/api"


def main():
    if not (os.path.exists(kbapi.KEYBRIDGED) and os.path.exists(KB)):
        print("SKIP: keybridged or keybridge not built")
        return
    import tempfile
    import shutil
    d = tempfile.mkdtemp(prefix="kbclifo-")
    srv = None
    peers = []
    try:
        hsm = kbapi.make_hsm(d)
        pki = kbapi.PKI(f"{d}/pki")
        srv = kbapi.Server(d, pki, hsm)
        srv.bootstrap()
        srv.start()
        A = f"https://127.0.0.1:{srv.port}"
        admin = pki.leaf("admin", f"URI:{kbapi.ADMIN}")
        app = pki.leaf("app", f"URI:{APP_ID}")
        fake_pem, fake_key = pki.leaf("fake", f"URI:{kbapi.SERVER_ID},IP:127.0.0.1")
        dead = f"https://127.0.0.1:{kbapi.free_port()}"
        rs = sf.Resetter()
        peers.append(rs)

        def conf(name, cert, urls):
            p = f"{d}/{name}.conf"
            with open(p, "w") as f:
                f.write(f"[client]\nserver_url = {urls}\nserver_id = {kbapi.SERVER_ID}\n"
                        f"cert_file = {cert[0]}\nkey_file = {cert[1]}\n"
                        f"bundle_file = {pki.bundle}\ntimeout = 10s\n")
            return p

        def kb(cfg, *args):
            p = subprocess.run([KB, "--config", cfg] + list(args), capture_output=True,
                               timeout=60)
            return p.returncode, p.stdout.decode(), p.stderr.decode()

        # 1. the configured list: dead first, then resetting first
        for what, first in (("refused", dead), ("reset", f"https://127.0.0.1:{rs.port}")):
            cfg = conf("a-" + what, admin, sf.place(kbapi.ADMIN, first, [A]))
            rc, out, err = kb(cfg, "-o", "json", "group", "create", f"g-{what}")
            check(rc == 0, (what, rc, err))
            check(err.count("trying " + A) == 1, (what, err))
            rc, out, err = kb(cfg, "-o", "json", "group", "list")
            check(rc == 0 and f"g-{what}" in out, (what, rc, out, err))
        print("ok: [client] server_url list: dead or resetting first replica, the call is served "
              "by the next (one 'trying' line); a POST never sent fails over too")

        # 2. --server repeated replaces the configured list; a bad one is a usage error
        cfg = conf("dead-only", admin, dead)
        rc, out, err = kb(cfg, "group", "list")
        check(rc != 0, ("dead only", rc, err))
        rc, out, err = kb(cfg, "--server", dead, "--server", A, "-o", "json", "group", "list")
        check(rc == 0 and "g-refused" in out, (rc, out, err))
        rc, out, err = kb(cfg, "--server", "http://127.0.0.1:1", "group", "list")
        check(rc == 2 and "--server takes an https:// URL" in err, (rc, err))
        bad = conf("bad-list", admin, f"{A},,{A}")
        rc, out, err = kb(bad, "group", "list")
        check(rc == 3 and "server_url" in err, (rc, err))
        print("ok: --server (repeated) replaces server_url; http:// --server exits 2, an empty "
              "list entry exits 3")

        # 3. 503 from the first: a GET fails over
        f503 = sf.StatusServer(fake_pem, fake_key, 503)
        peers.append(f503)
        cfg = conf("a-503", admin, sf.place(kbapi.ADMIN, f"https://127.0.0.1:{f503.port}", [A]))
        rc, out, err = kb(cfg, "-o", "json", "group", "list")
        check(rc == 0 and f503.requests == 1 and "answered HTTP 503" in err, (rc, err))
        print("ok: 503 from the first replica: the GET is answered by the next")

        # 4. 403 is authoritative: the other server is never contacted
        counter = sf.StatusServer(fake_pem, fake_key, 200)
        peers.append(counter)
        cfg = conf("app", app, sf.place(APP_ID, A, [f"https://127.0.0.1:{counter.port}"]))
        rc, out, err = kb(cfg, "group", "list")
        check(rc == 4 and counter.conns == 0 and "trying" not in err, (rc, counter.conns, err))
        print("ok: 403 from keybridged: exit 4, the other replica got no connection")

        # 5. a POST that reached a server that then closed is not replayed; a GET is
        closer = sf.StatusServer(fake_pem, fake_key, None)
        peers.append(closer)
        cfg = conf("a-close", admin, sf.place(kbapi.ADMIN, f"https://127.0.0.1:{closer.port}",
                                               [A]))
        rc, out, err = kb(cfg, "group", "create", "never-twice")
        check(rc != 0 and closer.requests == 1 and "trying" not in err, (rc, err))
        rc, out, err = kb(cfg, "-o", "json", "group", "list")
        check(rc == 0 and closer.requests == 2 and "never-twice" not in out, (rc, out, err))
        print("ok: a POST the first replica received and dropped is not replayed elsewhere "
              "(exit 1, keybridged has no such group); a GET on the same list fails over")
    finally:
        for p in peers:
            p.close()
        if srv:
            srv.stop()
        if os.environ.get("KB_KEEP_TMP") is None:
            shutil.rmtree(d, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
