#!/usr/bin/env python3
"""Expiry notifications (issue 15) against the real keybridged with SoftHSM2.

An HTTPS webhook receiver on loopback (certificate from the test CA, checked by keybridged's httpc
with [notify] ca_file) fails the first attempts: HTTP 500, then a connection reset, then a 500
again, and records every delivery. keybridged ([notify] windows 30d,7d,1d, attempts 2, scans
every second) must deliver exactly one webhook per (secret, version, window) after its retries:
the secret whose expiry came from its PEM certificate (20 days: the 30d window), one in 3 days
(7d), one in 12 hours (1d); none for a secret 60 days out or without expiry. The failed scan is in
the audit log, each delivery too. A restart resends nothing (the delivered windows are in the
database); a new version is notified again. No content in any webhook; the gauges count the
secrets per window. A plain-http URL to a non-loopback host is refused at start.
"""
import http.server
import json
import os
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_keybridged_api import ADMIN, KEYBRIDGED, PKI, Server, make_hsm  # noqa
from test_store_rollback import api, check, failures  # noqa

CONTENT = b"secret-value-42"
DAY = 86400


class Receiver:
    """HTTPS on 127.0.0.1; the first len(fail) requests fail as listed, later ones get 200."""

    def __init__(self, pki, fail):
        self.fail = list(fail)
        self.requests = 0
        self.deliveries = []
        self.bodies = []
        self.lock = threading.Lock()
        pem, key = pki.leaf("hook", "IP:127.0.0.1", eku="serverAuth")
        rx = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with rx.lock:
                    rx.requests += 1
                    rx.bodies.append(body)
                    mode = rx.fail.pop(0) if rx.fail else "ok"
                if mode == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                status = 500 if mode == "500" else 200
                if status == 200:
                    with rx.lock:
                        rx.deliveries.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pem, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return len(self.deliveries)


def wait_for(cond, secs):
    end = time.time() + secs
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def main():
    d = tempfile.mkdtemp(prefix="kbnotify.")
    srv = None
    try:
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        rx = Receiver(pki, ["500", "reset", "500"])
        srv = Server(d, pki, hsm)
        base_conf = open(srv.conf).read()

        # -- a plain-http webhook to a non-loopback host is a configuration error at start
        with open(srv.conf, "w") as f:
            f.write(base_conf + "[notify]\nurl = http://192.0.2.1/hook\n")
        srv.bootstrap()
        p = subprocess.run([KEYBRIDGED, "--config", srv.conf, "serve"], capture_output=True,
                           timeout=30)
        check(p.returncode == 3 and b"notify.url" in p.stderr + p.stdout,
              f"http:// to a non-loopback host refused at start (exit {p.returncode})")

        with open(srv.conf, "w") as f:
            f.write(base_conf + f"""[notify]
url = https://127.0.0.1:{rx.port}/hooks/keybridge
ca_file = {pki.bundle}
windows = 30d,7d,1d
interval = 1s
attempts = 2
backoff = 1s
timeout = 5s
""")
        admin = pki.leaf("admin", f"URI:{ADMIN}")
        srv.start()
        now = int(time.time())
        # A certificate valid for 20 days: its expiry comes from the content.
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{d}/c.key", "-out",
                        f"{d}/c.pem", "-days", "20", "-subj", "/CN=svc"], check=True,
                       capture_output=True)
        import base64
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        api(srv, pki, admin, "POST", "/v1/admin/groups", {"name": "payments"}, want=201)
        api(srv, pki, admin, "POST", "/v1/admin/secrets",
            {"name": "cert-20d", "content": b64(open(f"{d}/c.key", "rb").read() +
                                                open(f"{d}/c.pem", "rb").read()),
             "owner_group": "payments", "expiry_from_content": True}, want=201)
        for name, exp in (("tok-3d", now + 3 * DAY), ("tok-12h", now + DAY // 2),
                          ("tok-60d", now + 60 * DAY), ("never", 0)):
            api(srv, pki, admin, "POST", "/v1/admin/secrets",
                {"name": name, "content": b64(CONTENT), "expires_at": exp}, want=201)

        check(wait_for(lambda: rx.count() >= 3, 40), f"3 deliveries ({rx.count()})")
        time.sleep(4)  # several more scans: nothing more may arrive
        got = sorted((x["name"], x["version"], x["window"]) for x in rx.deliveries)
        check(got == [("cert-20d", 1, "30d"), ("tok-12h", 1, "1d"), ("tok-3d", 1, "7d")],
              f"exactly one delivery per window per version: {got}")
        check(rx.requests == 6, f"3 failed attempts + 3 deliveries = 6 requests ({rx.requests})")
        cert = [x for x in rx.deliveries if x["name"] == "cert-20d"]
        if cert:
            c = cert[0]
            check(c["owner_group"] == "payments" and abs(c["expires_at"] - (now + 20 * DAY)) < 120
                  and "cert-20d" in c["text"] and "30d" in c["text"],
                  f"webhook fields and Slack text: {c}")
        check(all(set(x) == {"text", "name", "version", "expires_at", "expires", "window",
                             "window_seconds", "owner_group"} for x in rx.deliveries),
              "webhook carries metadata fields only")
        allb = b"".join(rx.bodies)
        check(CONTENT not in allb and b64(CONTENT).encode() not in allb
              and b"PRIVATE KEY" not in allb, "no content in any webhook")

        # -- metrics: the gauges per window, the counters
        m = urllib.request.urlopen(f"http://127.0.0.1:{srv.mport}/metrics", timeout=10).read()
        m = m.decode()
        for w, n in (("30d", 3), ("7d", 2), ("1d", 1)):
            check(f'keybridged_secrets_expiring{{window="{w}"}} {n}\n' in m, f"gauge {w} = {n}")
        check('keybridged_expiry_notifications_total{result="delivered"} 3\n' in m,
              "delivered counter")
        check('keybridged_expiry_notifications_total{result="failed"} 1\n' in m,
              "one scan failed all its attempts")

        # -- restart: nothing resent
        srv.stop()
        srv.start()
        time.sleep(4)
        check(rx.count() == 3, f"no resend after a restart ({rx.count()})")
        # -- a new version is a new notification (7d window, version 2)
        api(srv, pki, admin, "PUT", "/v1/admin/secrets/tok-3d",
            {"content": b64(CONTENT), "expires_at": now + 2 * DAY}, want=200)
        check(wait_for(lambda: rx.count() >= 4, 20), "new version notified")
        time.sleep(3)
        check(rx.count() == 4 and (rx.deliveries[-1]["name"], rx.deliveries[-1]["version"],
                                   rx.deliveries[-1]["window"]) == ("tok-3d", 2, "7d"),
              f"exactly one for version 2: {rx.deliveries[3:]}")
        srv.stop()

        c = sqlite3.connect(f"{d}/kb.db")
        rows = c.execute("SELECT object, version, result FROM audit_log "
                         "WHERE action = 'secret.expiry_notify' ORDER BY seq").fetchall()
        sent = c.execute("SELECT count(*) FROM notify_sent").fetchone()[0]
        c.close()
        ok = sorted((o, v) for o, v, r in rows if r == "ok")
        bad = [(o, v, r) for o, v, r in rows if r != "ok"]
        check(ok == [("cert-20d", 1), ("tok-12h", 1), ("tok-3d", 1), ("tok-3d", 2)],
              f"deliveries audited: {ok}")
        check(len(bad) == 1 and bad[0][2] != "ok", f"the failed scan audited: {bad}")
        check(sent == 4, f"4 delivered windows recorded ({sent})")
        log = open(srv.log.name).read()
        check(CONTENT.decode() not in log, "no content in the log")
        check('"event":"notify_attempt_failed"' in log, "failed attempts logged")
    finally:
        if srv:
            srv.stop()
    if failures:
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("all ok")


if __name__ == "__main__":
    main()
