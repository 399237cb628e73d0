#!/usr/bin/env python3
"""keybridge-sync daemon mode (issue 6 point 5), against keybridge-cache and the fake keybridged.

  - the status listener is loopback only (0.0.0.0 / :: refused at start);
  - /status is 503 before the first success (the first run fails: the stored SVID is missing),
    200 after a POST /sync once it is there, and 503 again when the last success is stale;
  - /metrics: Prometheus text with runs, failures, up, last-run outcome counts;
  - POST /sync runs now; wrong methods 405, other paths 404;
  - the schedule: the application's hashed minute within the interval and hashed second within
    the minute (recomputed here from SHA-256), shown as next_run;
  - a rotated SVID in the cache is used by the next triggered run, no restart;
  - keybridged down: a failed run is counted, the cache is untouched, /status stays 200 while
    the last success is fresh; SIGTERM exits 0.
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_sync_e2e as h  # noqa: E402

SVID_SECRET = "spiffe/payments"
check = h.check


class Daemon:
    def __init__(self, e, env, name):
        self.log_path = os.path.join(e.dir, f"{name}.log")
        self.log = open(self.log_path, "w")
        self.out = open(os.path.join(e.dir, f"{name}.out"), "w")
        self.p = subprocess.Popen([h.SYNC, "daemon"], env=env, stdout=self.out, stderr=self.log)
        self.port = None
        for _ in range(200):
            m = re.search(r'"event":"status_listening".*?"port":"(\d+)"', open(self.log_path).read())
            if m:
                self.port = int(m.group(1))
                break
            if self.p.poll() is not None:
                raise AssertionError(f"daemon exited {self.p.returncode}: "
                                     + open(self.log_path).read()[-500:])
            time.sleep(0.05)
        check(self.port, "daemon did not report its port")

    def req(self, method, path):
        r = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                   data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(r, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def status(self):
        st, body = self.req("GET", "/status")
        return st, json.loads(body)

    def wait_runs(self, n, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            st, s = self.status()
            if s["runs"] >= n and not s["running"]:
                return st, s
            time.sleep(0.05)
        raise AssertionError(f"daemon did not reach {n} runs: {s}")

    def metrics(self):
        st, body = self.req("GET", "/metrics")
        check(st == 200, st)
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                return self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                return None
        return self.p.returncode


def svidstore(e, svid):
    with open(e.bundle) as f:
        bundle = f.read()
    return json.dumps({"spiffeID": h.CLIENT_ID, "x509SVID": svid[2].decode(),
                       "x509SVIDKey": svid[3].decode(), "bundle": bundle,
                       "federatedBundles": {}}).encode()


def hashed_schedule(app, interval):
    d = hashlib.sha256(app.encode()).digest()
    return int.from_bytes(d[:4], "big") % interval, int.from_bytes(d[4:8], "big") % 60


def main():
    e = h.Env()
    daemons = []
    try:
        e.start_cache()
        fake = e.start_fake()
        sm = e.sm()
        for i in range(4):
            fake.put(f"d{i}", f"daemon value {i}".encode())
        base = e.sync_env(KEYBRIDGE_SYNC_LOG_LEVEL="info", KEYBRIDGE_SYNC_DAEMON_LISTEN="127.0.0.1:0")

        # loopback only: a non-loopback status listener is refused at start
        for addr in ("0.0.0.0:0", "[::]:0"):
            p = subprocess.run([h.SYNC, "daemon"], env=dict(base, KEYBRIDGE_SYNC_DAEMON_LISTEN=addr),
                               capture_output=True, timeout=30)
            check(p.returncode == 3 and b"loopback" in p.stderr, (addr, p.returncode, p.stderr))
        print("ok: non-loopback status listener refused")

        env = dict(base, KEYBRIDGE_SYNC_SOURCE_SVID_SECRET_ID=SVID_SECRET)
        for k in ("CERT_FILE", "KEY_FILE"):
            env.pop("KEYBRIDGE_SYNC_SOURCE_SVID_" + k)
        env.pop("KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE")
        d = Daemon(e, env, "daemon")
        daemons.append(d)

        # 1. first run fails (no stored SVID yet): 503, counted, cache untouched
        st, s = d.wait_runs(1)
        check(st == 503 and s["status"] == "unavailable" and s["last_success"] == 0, s)
        check(s["failures"] == 1 and "SVID" in s["last"]["error"], s)
        check(s["schedule"]["minute"] == -1 and s["next_run"] - s["last_run"] == 15 * 60, s)
        m = d.metrics()
        check(m["keybridge_sync_runs_total"] == 1 and m["keybridge_sync_failures_total"] == 1, m)
        check(m["keybridge_sync_up"] == 0 and m["keybridge_sync_last_success_timestamp_seconds"] == 0, m)
        check(fake.calls["list"] == 0 and h.cache_snapshot(sm) == {}, "cache touched")
        print("ok: 503 before the first success; failure counted in /metrics")

        # 2. the SVID appears; POST /sync runs now -> 200
        sm.create_secret(Name=SVID_SECRET, SecretBinary=svidstore(e, e.client))
        st, body = d.req("POST", "/sync")
        check(st == 202, (st, body))
        st, s = d.wait_runs(2)
        check(st == 200 and s["status"] == "ok" and s["last"]["created"] == 4, s)
        check(s["last_success"] >= s["last_run"] - 1 and s["failures"] == 1, s)
        check(sm.get_secret_value(SecretId="keybridge/payments/d0")["SecretString"]
              == "daemon value 0", "not synced")
        m = d.metrics()
        check(m["keybridge_sync_up"] == 1 and m["keybridge_sync_runs_total"] == 2, m)
        check(m['keybridge_sync_last_run_secrets{outcome="created"}'] == 4, m)
        check(m["keybridge_sync_last_success_timestamp_seconds"] == s["last_success"], m)
        print("ok: POST /sync -> run; /status 200; /metrics counts")

        # 3. the hashed schedule (minute within the interval, second within the minute)
        minute, second = hashed_schedule(h.APP, 15)
        check(s["schedule"] == {"interval": 15, "minute": minute, "second": second}, s["schedule"])
        nr = s["next_run"]
        check(nr % 60 == second and (nr // 60) % 15 == minute, (nr, minute, second))
        check(0 < nr - s["last_run"] <= 15 * 60, (nr, s["last_run"]))
        check(m["keybridge_sync_next_run_timestamp_seconds"] == nr, m)
        logged = [json.loads(x) for x in open(d.log_path) if '"next_run"' in x]
        check(logged and int(logged[-1]["at"]) == nr, logged[-1:])
        print(f"ok: next run at the hashed offset: minute {minute}/15, second {second}")

        # 4. a rotated SVID is used by the next run, without a restart
        rot = h.make_svid(e.ca, h.CLIENT_ID, e.dir, "rotated")
        sm.put_secret_value(SecretId=SVID_SECRET, SecretBinary=svidstore(e, rot))
        fake.put("d1", b"changed")
        fake.client_serials.clear()
        d.req("POST", "/sync")
        st, s = d.wait_runs(3)
        check(st == 200 and s["last"]["updated"] == 1 and s["last"]["unchanged"] == 3, s)
        check(set(fake.client_serials) == {rot[4]}, (fake.client_serials, rot[4]))
        print("ok: rotated SVID picked up by the daemon's next run")

        # 5. methods and paths
        check(d.req("GET", "/sync")[0] == 405 and d.req("POST", "/status")[0] == 405, "405")
        check(d.req("GET", "/nope")[0] == 404 and d.req("DELETE", "/metrics")[0] == 405, "404")

        # 6. keybridged down: failure counted, cache untouched, still fresh (200)
        before = h.cache_snapshot(sm)
        fake.put("d2", b"never written")
        fake.stop()
        e.fake = None
        d.req("POST", "/sync")
        st, s = d.wait_runs(4)
        check(st == 200 and s["failures"] == 2 and s["last"]["ok"] is False, s)
        check(h.cache_snapshot(sm) == before, "cache changed while keybridged was down")
        check(d.metrics()["keybridge_sync_failures_total"] == 2, "failures metric")
        log = open(d.log_path).read()
        check("daemon value" not in log and "PRIVATE KEY" not in log, "secret in the log")
        check(d.stop() == 0, "SIGTERM exit status")
        print("ok: keybridged down: failure counted, cache untouched; SIGTERM exits 0")

        # 7. staleness: a success older than stale_after -> 503 again
        e.fake = fake = h.FakeKeybridged(e.server[0], e.server[1], e.bundle)
        fake.put("d0", b"daemon value 0", version=1)
        env2 = e.sync_env(KEYBRIDGE_SYNC_LOG_LEVEL="info", KEYBRIDGE_SYNC_DAEMON_LISTEN="127.0.0.1:0",
                          KEYBRIDGE_SYNC_DAEMON_STALE_AFTER="1s",
                          KEYBRIDGE_SYNC_SINK_MAX_DELETE_FRACTION="1")
        d2 = Daemon(e, env2, "daemon2")
        daemons.append(d2)
        st, s = d2.wait_runs(1)
        check(s["last_success"] > 0 and s["failures"] == 0, s)
        deadline = time.time() + 20
        while time.time() < deadline and st != 503:
            time.sleep(0.2)
            st, s = d2.status()
        check(st == 503 and s["status"] == "unavailable" and s["last_success"] > 0, s)
        check(d2.metrics()["keybridge_sync_up"] == 0, "up stays 0 when stale")
        check(d2.stop() == 0, "SIGTERM exit status")
        print("ok: stale last success -> 503")
    finally:
        for x in daemons:
            x.stop()
        e.close()
    print("PASS")


if __name__ == "__main__":
    main()
