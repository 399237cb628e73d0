#!/usr/bin/env python3
"""keybridge-sync behaves like AWS expects (issue 12): against keybridge-cache behind a relay written
here that can make Secrets Manager slow (sleep before forwarding) or throttle it (400
ThrottlingException, as AWS answers), and that timestamps every call it forwards:

  1. a slow ListSecrets: the run stops at its deadline (within a small margin), exits non-zero,
     nothing is written; the same under the Lambda runtime with Lambda-Runtime-Deadline-Ms (the
     /error is posted before the invocation's deadline, errorMessage says why);
  2. slow writes: the run stops writing at the deadline and reports what was left (`left`,
     counted in `deferred`), exit non-zero; the next run finishes the job;
  3. throttles are retried with jittered backoff and the run succeeds (`throttled` counts them);
     a sink that keeps throttling: the secrets are deferred, the run ends inside its deadline;
  4. pacing: CreateSecret calls arrive at no more than [sink] rate per second (measured);
  5. an empty content is reported by name in the summary's `error` (the others apply);
  6. application names: 246 characters (a 512-character cloud name with a 255-character secret
     name) sync; 247 fail with a clear error naming the limit.
keybridged's side of points 5 and 6 (refusing empty cloud_sync content and long app names with a
400 and a clear message) runs against the real keybridged in test_sync_keybridged_limits below
when keybridged and SoftHSM2 are built/installed.
"""
import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_sync_e2e as h  # noqa: E402
from test_sync_e2e import SYNC, Env, check, free_port  # noqa: E402

MARGIN = 1.0  # seconds: process start, TLS set-up and the last call's own cut-off


class Relay:
    """HTTP relay in front of keybridge-cache. policy(op, n) -> None | ("delay", s) | "throttle",
    where n counts calls of op (1-based). Headers (Host included, it is signed) go unchanged."""

    def __init__(self, cache_port):
        self.cache_port = cache_port
        self.port = free_port()
        self.policy = lambda op, n: None
        self.lock = threading.Lock()
        self.counts = {}
        self.log = []  # (monotonic time, op, "forwarded" | "throttled")
        relay = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self, code, body, ctype="application/x-amz-json-1.1"):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the syncer gave up on this call (its deadline)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                op = self.headers.get("X-Amz-Target", "").split(".")[-1]
                with relay.lock:
                    relay.counts[op] = relay.counts.get(op, 0) + 1
                    k = relay.counts[op]
                act = relay.policy(op, k)
                if act == "throttle":
                    with relay.lock:
                        relay.log.append((time.monotonic(), op, "throttled"))
                    return self._reply(400, json.dumps(
                        {"__type": "ThrottlingException", "message": "Rate exceeded"}).encode())
                if act and act[0] == "delay":
                    time.sleep(act[1])
                with relay.lock:
                    relay.log.append((time.monotonic(), op, "forwarded"))
                c = http.client.HTTPConnection("127.0.0.1", relay.cache_port, timeout=30)
                c.putrequest("POST", self.path, skip_host=True, skip_accept_encoding=True)
                for k2, v in self.headers.items():
                    c.putheader(k2, v)
                c.endheaders(body)
                r = c.getresponse()
                data = r.read()
                c.close()
                self._reply(r.status, data, r.getheader("Content-Type", "application/x-amz-json-1.1"))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reset(self, policy=None):
        with self.lock:
            self.counts = {}
            self.log = []
        self.policy = policy or (lambda op, n: None)

    def times(self, op, what="forwarded"):
        with self.lock:
            return [t for t, o, w in self.log if o == op and w == what]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def timed_run(e, env, *args, timeout=60):
    t0 = time.monotonic()
    rc, s, err = e.run(*args, env=env, timeout=timeout)
    return rc, s, err, time.monotonic() - t0


def start_cost(env):
    """What starting and ending the syncer costs on this machine right now (loader, sanitizer
    start-up and exit-time leak check, a loaded CPU): the deadline is counted from main(), so
    the checks below allow this on top of MARGIN. The slowest of three `--check-config` runs."""
    worst = 0.0
    for _ in range(3):
        t0 = time.monotonic()
        subprocess.run([SYNC, "--check-config"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        worst = max(worst, time.monotonic() - t0)
    return worst


def managed(sm, app=h.APP):
    names = []
    for page in sm.get_paginator("list_secrets").paginate():
        names += [x["Name"] for x in page["SecretList"] if x["Name"].startswith(f"keybridge/{app}/")]
    return names


def keybridged_limits():
    """The real keybridged refuses what the syncer could not write: empty cloud_sync content (create,
    new version, turning cloud_sync on) and application names over 246 characters (create, update),
    each with a 400 and a message that says why."""
    import test_keybridged_api as kbapi
    import test_sync_keybridged as tk
    if not os.path.exists(kbapi.KEYBRIDGED):
        print("SKIP: keybridged not built (keybridged's limits)")
        return
    e = Env()
    srv = None
    try:
        srv, pki, admin, client = tk.setup_keybridged(e.dir)
        empty_msg = "cloud_sync secrets need at least 1 byte of content"
        st, out = admin("POST", "/v1/admin/secrets", {"name": "e1", "content": "", "cloud_sync": True})
        check(st == 400 and empty_msg in out["message"], (st, out))
        tk.add_secret(admin, "c1", b"x")
        st, out = admin("PUT", "/v1/admin/secrets/c1", {"content": ""})
        check(st == 400 and empty_msg in out["message"], (st, out))
        admin("POST", "/v1/admin/secrets", {"name": "local-empty", "content": ""}, want=201)
        st, out = admin("PATCH", "/v1/admin/secrets/local-empty", {"cloud_sync": True})
        check(st == 400 and empty_msg in out["message"], (st, out))
        admin("PUT", "/v1/admin/secrets/local-empty", {"content": tk.b64(b"now set")}, want=200)
        admin("PATCH", "/v1/admin/secrets/local-empty", {"cloud_sync": True}, want=200)
        st, out = admin("GET", "/v1/admin/secrets/e1")
        check(st == 404, "a refused secret was stored")
        print("ok: keybridged refuses empty cloud_sync content (create, put, PATCH cloud_sync) with 400")

        app_msg = "app_name must be 1..246 characters"
        for n, want in ((245, 201), (246, 201), (247, 400), (255, 400)):
            st, out = admin("POST", "/v1/admin/clients",
                            {"spiffe_id": f"spiffe://example.org/lambda/acct/1/fn/a{n}",
                             "app_name": "a" * n})
            check(st == want, (n, st, out))
            if want == 400:
                check(app_msg in out["message"] and "512" in out["message"], out)
        st, out = admin("GET", "/v1/admin/clients")
        ids = {c["spiffe_id"]: c["id"] for c in out["clients"]}
        cid = ids["spiffe://example.org/lambda/acct/1/fn/a246"]
        st, out = admin("PATCH", f"/v1/admin/clients/{cid}", {"app_name": "b" * 247})
        check(st == 400 and app_msg in out["message"], (st, out))
        admin("PATCH", f"/v1/admin/clients/{cid}", {"app_name": "b" * 246}, want=200)
        print("ok: keybridged application names: 245 and 246 accepted, 247 and 255 refused (create, "
              "update) with 400 and the limit")
    finally:
        if srv:
            srv.stop()
        e.close()


def main():
    keybridged_limits()
    e = Env()
    relay = None
    try:
        e.start_cache()
        fake = e.start_fake()
        sm = e.sm()
        relay = Relay(e.cache_port)
        ep = f"http://127.0.0.1:{relay.port}"
        base = dict(KEYBRIDGE_SYNC_SINK_ENDPOINT=ep, KEYBRIDGE_SYNC_SINK_RATE="0")
        for i in range(8):
            fake.put(f"s{i}", f"value {i}".encode())
        slack = MARGIN + start_cost(e.sync_env(**base))

        # 1. slow ListSecrets: stop at the deadline, non-zero, nothing written
        relay.reset(lambda op, n: ("delay", 10) if op == "ListSecrets" else None)
        rc, s, err, dt = timed_run(e, e.sync_env(**base), "sync", "--deadline", "3s")
        check(rc != 0 and s["ok"] is False, (rc, s, err))
        check(dt < 3 + slack, f"answered {dt:.2f} s after start with a 3 s deadline (slack {slack:.2f} s)")
        check("deadline" in s["error"] and s["error_code"] == "timeout", s)
        check(s["created"] == 0 and managed(sm) == [], s)
        print(f"ok: slow ListSecrets (10 s) with a 3 s deadline: exit {rc} after {dt:.2f} s, "
              f"error {s['error']!r}")

        # 1b. the same under the Lambda runtime: 6 s invocation deadline, ListSecrets takes 14 s
        from test_sync_lambda import RuntimeAPI
        api = RuntimeAPI(["req-slow"], deadline_s=6)
        relay.reset(lambda op, n: ("delay", 14) if op == "ListSecrets" else None)
        env = e.sync_env(AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{api.port}", **base)
        p = subprocess.Popen([SYNC], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.communicate(timeout=60)
        check("req-slow" in api.errors, (api.errors, api.responses))
        body, etype = api.errors["req-slow"]
        early = api.deadlines["req-slow"] - api.error_times["req-slow"]
        check(early > 0, f"/error posted {-early:.2f} s after the invocation's deadline")
        msg = json.loads(body["errorMessage"])
        check(etype == "SyncFailed" and "deadline" in msg["error"], body)
        print(f"ok: Lambda, 6 s deadline, 14 s ListSecrets: /error posted {early:.2f} s before the "
              f"deadline, errorMessage.error {msg['error']!r}")
        api.stop()

        # 2. slow writes: stop writing at the deadline, report what was left, next run finishes
        relay.reset(lambda op, n: ("delay", 0.5) if op == "CreateSecret" else None)
        rc, s, err, dt = timed_run(e, e.sync_env(**base), "sync", "--deadline", "3s")
        check(rc != 0 and s["ok"] is False, (rc, s, err))
        check(dt < 3 + slack, f"answered {dt:.2f} s after start with a 3 s deadline (slack {slack:.2f} s)")
        check(s["left"] > 0 and s["created"] + s["left"] == 8 and s["deferred"] == s["left"], s)
        check(s["error_code"] == "timeout" and f"{s['left']} planned changes left" in s["error"], s)
        check(len(managed(sm)) >= s["created"], (managed(sm), s))
        print(f"ok: 0.5 s CreateSecret with a 3 s deadline: {s['created']} created, "
              f"{s['left']} left, exit {rc} after {dt:.2f} s")
        relay.reset()
        rc, s, err, dt = timed_run(e, e.sync_env(**base))
        check(rc == 0 and s["ok"] and len(managed(sm)) == 8 and s["left"] == 0, (rc, s, err))
        print("ok: the next run finishes the job")

        # 3. throttles retried with jittered backoff; the run succeeds
        for i in range(8, 14):
            fake.put(f"s{i}", f"value {i}".encode())
        relay.reset(lambda op, n: "throttle" if (op == "CreateSecret" and n in (1, 2, 4))
                    or (op == "DescribeSecret" and n == 1) else None)
        rc, s, err, dt = timed_run(e, e.sync_env(**base))
        check(rc == 0 and s["ok"] is True and s["created"] == 6, (rc, s, err))
        check(s["throttled"] == 4 and s["deferred"] == 0, s)
        check(s["calls"]["CreateSecret"] == 6 + 3, s)
        print(f"ok: 4 ThrottlingExceptions retried, run ok in {dt:.2f} s ({s['calls']})")

        # 3b. a sink that keeps throttling: deferred, inside the deadline, exit non-zero
        for i in range(14, 17):
            fake.put(f"s{i}", f"value {i}".encode())
        relay.reset(lambda op, n: "throttle" if op == "CreateSecret" else None)
        rc, s, err, dt = timed_run(e, e.sync_env(**base), "sync", "--deadline", "4s")
        check(rc != 0 and s["created"] == 0 and s["deferred"] == 3, (rc, s, err))
        check(s["throttled"] >= 3 and dt < 4 + slack, (s, dt, slack))
        check("throttl" in s["error"] or "deadline" in s["error"], s)
        print(f"ok: always throttled: 3 deferred, {s['throttled']} throttles, exit {rc} after "
              f"{dt:.2f} s, error {s['error']!r}")
        relay.reset()
        rc, s, err = e.run(env=e.sync_env(**base))
        check(rc == 0 and s["created"] == 3, (rc, s, err))

        # 4. pacing: CreateSecret at no more than [sink] rate per second
        n_new, rate = 12, 5
        for i in range(n_new):
            fake.put(f"p{i:02d}", f"paced {i}".encode())
        relay.reset()
        rc, s, err, dt = timed_run(e, e.sync_env(**dict(base, KEYBRIDGE_SYNC_SINK_RATE=str(rate))))
        check(rc == 0 and s["created"] == n_new, (rc, s, err))
        ts = relay.times("CreateSecret")
        check(len(ts) == n_new, ts)
        measured = (len(ts) - 1) / (ts[-1] - ts[0])
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        check(measured <= rate * 1.05, f"{measured:.2f} CreateSecret/s with rate {rate}")
        check(measured >= rate * 0.7, f"pacing too slow: {measured:.2f}/s for rate {rate}")
        # arrival times carry the relay's scheduling jitter (a late call shortens the next gap):
        # check every window of `rate` consecutive gaps (one second's worth) instead of one gap
        windows = [ts[i + rate] - ts[i] for i in range(len(ts) - rate)]
        check(min(windows) >= 1.0 - 0.15, f"{rate + 1} writes within {min(windows):.3f} s")
        print(f"ok: pacing: {n_new} CreateSecret at {measured:.2f}/s with rate {rate} "
              f"(smallest gap {min(gaps) * 1000:.0f} ms, shortest {rate + 1} writes "
              f"{min(windows):.3f} s)")
        # unpaced, for comparison (what the outside run saw)
        for i in range(n_new):
            fake.put(f"u{i:02d}", f"unpaced {i}".encode())
        relay.reset()
        rc, s, err = e.run(env=e.sync_env(**base))
        ts = relay.times("CreateSecret")
        check(rc == 0 and len(ts) == n_new, (rc, s))
        print(f"    unpaced (rate 0): {(len(ts) - 1) / max(ts[-1] - ts[0], 1e-6):.0f} CreateSecret/s")

        # 5. an empty content: reported by name in error; the others apply
        fake.put("empty", b"")
        fake.put("full", b"x")
        relay.reset()
        rc, s, err = e.run(env=e.sync_env(**base))
        check(rc == 1 and s["failed"] == 1 and s["created"] == 1, (rc, s, err))
        check("empty: empty content: Secrets Manager needs at least 1 byte" in s["error"], s)
        check(s["error"].startswith("1 failed, 0 deferred; first: "), s)
        check("keybridge/payments/empty" not in managed(sm), "empty secret reached the cache")
        print(f"ok: empty content: exit 1, error {s['error']!r}")
        fake.remove("empty")

        # 6. application names: 246 works (512-character cloud name), 247 is refused clearly
        app246 = "a" * 246
        fake.app = app246
        for n in list(fake.secrets):
            fake.remove(n)
        long_name = "n" * 255
        fake.put(long_name, b"at the limit")
        rc, s, err = e.run(env=e.sync_env(**base))
        check(rc == 0 and s["created"] == 1 and s["application"] == app246, (rc, s, err))
        cloud = f"keybridge/{app246}/{long_name}"
        check(len(cloud) == 512 and sm.get_secret_value(SecretId=cloud)["SecretString"] == "at the limit",
              cloud)
        print("ok: a 246-character application with a 255-character secret: 512-character name")
        fake.app = "a" * 245
        rc, s, err = e.run(env=e.sync_env(**base))
        check(rc == 0 and s["created"] == 1, (rc, s, err))
        fake.app = "a" * 247
        rc, s, err = e.run(env=e.sync_env(**base))
        check(rc != 0 and "longer than 246 characters" in s["error"], (rc, s, err))
        check("shorten the client's app_name" in s["error"], s)
        print(f"ok: 245 syncs; 247 refused: {s['error']!r}")
    finally:
        if relay:
            relay.stop()
        e.close()
    print("PASS")


if __name__ == "__main__":
    main()
