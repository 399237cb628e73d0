#!/usr/bin/env python3
"""keybridge-sync benchmark against the REAL keybridged (SQLite + SoftHSM2) and keybridge-cache.

Sets up keybridged (as tests/integration/test_keybridged_api.py does), a cloud client for the
application "payments" with N (default 100) cloud-sync secrets, and keybridge-cache; then times
whole processes (posix_spawn -> wait4: wall time and ru_maxrss of the child):
  - no-op sync, secretsmanager sink on keybridge-cache
  - no-op sync, dir sink
  - one `aws secretsmanager get-secret-value` (what a user would otherwise script)
  - full sync of N changed secrets (all N updated by the admin API between runs, not timed)
and prints a Markdown table plus the cache API calls per run (from the sync summary).

    KB_BUILD_DIR=build bench/sync/bench.py [--runs 31] [--n 100] [--hold]

--hold: after setup, print the environment and wait (for perf/strace/ltrace by hand).
"""
import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
os.environ.setdefault("KB_SOURCE_DIR", SRC)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import test_keybridged_api as kbapi  # noqa: E402
import test_sync_e2e as h  # noqa: E402
import test_sync_keybridged as tk  # noqa: E402


def spawn(argv, env):
    """(wall ms, max RSS KiB, exit status, stdout) of one whole process.

    The program runs under GNU time, whose own footprint (~2 MiB) is below the program's: the
    kernel's ru_maxrss of a child spawned straight from Python would report Python's own RSS
    (the high-water mark survives exec). The wall time includes exec'ing time (see baseline)."""
    r, w = os.pipe()
    fd, rss_path = tempfile.mkstemp(prefix="kbbench-rss-")
    os.close(fd)
    argv = ["/usr/bin/time", "-f", "%M", "-o", rss_path] + argv
    fa = [(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_CLOSE, r),
          (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)]
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=fa)
    os.close(w)
    out = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        out += chunk
    _, status, ru = os.wait4(pid, 0)  # includes the program (GNU time's reaped child)
    t = (time.perf_counter() - t0) * 1000
    os.close(r)
    with open(rss_path) as f:
        lines = f.read().split()
    os.unlink(rss_path)
    rss = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return t, rss, os.waitstatus_to_exitcode(status), out, (ru.ru_utime + ru.ru_stime) * 1000


def measure(argv, env, runs, before=None, check_ok=True):
    times, rss, summaries, cpus = [], [], [], []
    for _ in range(runs):
        if before:
            before()
        t, m, code, out, cpu = spawn(argv, env)
        cpus.append(cpu)
        if check_ok and code != 0:
            raise SystemExit(f"{argv[0]} exited {code}: {out[-500:]!r}")
        times.append(t)
        rss.append(m)
        lines = out.decode(errors="replace").strip().splitlines()
        if lines and lines[-1].startswith("{"):
            try:
                summaries.append(json.loads(lines[-1]))
            except ValueError:
                pass
    return {"median_ms": statistics.median(times), "p90_ms": sorted(times)[int(len(times) * 0.9)],
            "min_ms": min(times), "cpu_ms": statistics.median(cpus), "max_rss_kib": max(rss), "summary": summaries[-1] if summaries else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=31)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--hold", action="store_true")
    a = ap.parse_args()
    # SIGTERM (kill PID) cleans up like Ctrl-C: keybridged and keybridge-cache are stopped
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    e = h.Env()
    srv = None
    try:
        srv, pki, admin, client = tk.setup_keybridged(e.dir)
        e.start_cache()
        for i in range(a.n):
            tk.add_secret(admin, f"s{i:03d}", f"content {i}".encode())
        env = e.sync_env(KEYBRIDGE_SYNC_SOURCE_URL=f"https://127.0.0.1:{srv.port}",
                         KEYBRIDGE_SYNC_SOURCE_SERVER_ID=kbapi.SERVER_ID,
                         KEYBRIDGE_SYNC_SOURCE_SVID_CERT_FILE=client[0],
                         KEYBRIDGE_SYNC_SOURCE_SVID_KEY_FILE=client[1],
                         KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE=pki.bundle)
        ddir = os.path.join(e.dir, "secrets")
        os.mkdir(ddir, 0o700)
        denv = dict(env, KEYBRIDGE_SYNC_SINK_TARGET="dir:" + ddir)
        for en in (env, denv):
            rc, s, err = e.run(env=en)
            if rc != 0 or s["created"] != a.n:
                raise SystemExit(f"initial sync failed: {rc} {s} {err}")
        sync = [os.path.abspath(h.SYNC)]
        if a.hold:
            print(f"# keybridged log: {e.dir}/keybridged.log")
            for k, v in sorted(env.items()):
                if k.startswith(("KEYBRIDGE_SYNC_", "AWS_")):
                    print(f"export {k}='{v}'")
            print(f"# dir sink: KEYBRIDGE_SYNC_SINK_TARGET=dir:{ddir}")
            sys.stdout.flush()
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return
        res = {}
        la0 = os.getloadavg()
        res["baseline: /bin/true under the same harness"] = measure(["/bin/true"], env, a.runs)
        res["`keybridge-sync --version` (program start-up only)"] = measure(sync + ["--version"], env, a.runs)
        for _ in range(3):  # warm the page cache and keybridged
            spawn(sync, env)
        res["no-op, secretsmanager sink (keybridge-cache)"] = measure(sync, env, a.runs)
        res["no-op, dir sink"] = measure(sync, denv, a.runs)
        aws = subprocess.run(["which", "aws"], capture_output=True, text=True).stdout.strip()
        aenv = dict(os.environ, AWS_ACCESS_KEY_ID=h.AKID, AWS_SECRET_ACCESS_KEY=h.SKEY,
                    AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL_SECRETS_MANAGER=e.endpoint)
        if aws:
            res["one `aws secretsmanager get-secret-value` (keybridge-cache)"] = measure(
                [aws, "secretsmanager", "get-secret-value", "--secret-id",
                 "keybridge/payments/s000", "--query", "SecretString", "--output", "text"],
                aenv, max(5, a.runs // 3))
        gen = [0]

        def change_all():
            gen[0] += 1
            for i in range(a.n):
                admin("PUT", f"/v1/admin/secrets/s{i:03d}",
                      {"content": base64.b64encode(f"content {i} gen {gen[0]}".encode()).decode()},
                      want=200)
        full_runs = max(3, a.runs // 4)
        res[f"full sync, {a.n} changed, secretsmanager sink"] = measure(sync, env, full_runs,
                                                                      before=change_all)
        gen[0] += 1000
        res[f"full sync, {a.n} changed, dir sink"] = measure(sync, denv, full_runs,
                                                            before=change_all)
        print(f"\nN = {a.n} managed secrets, runs = {a.runs} (full sync: {full_runs})\n")
        print(f"load average before: {la0}, after: {os.getloadavg()}\n")
        print("| run | median wall | p90 | min | median CPU (user+sys) | max RSS | calls (from the summary) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for k, r in res.items():
            calls = r["summary"]["calls"] if r["summary"] else {}
            c = ", ".join(f"{op} {n}" for op, n in calls.items()) or "-"
            print(f"| {k} | {r['median_ms']:.1f} ms | {r['p90_ms']:.1f} ms | {r['min_ms']:.1f} ms "
                  f"| {r['cpu_ms']:.1f} ms | {r['max_rss_kib'] / 1024:.1f} MiB | {c} |")
    finally:
        if srv:
            srv.stop()
        e.close()


if __name__ == "__main__":
    main()
