#!/usr/bin/env python3
"""Cold start of the Lambda artifact against the Runtime API stand-in of the tests.

Each run is one cold invocation: a fresh process and a fresh stand-in (test_sync_lambda.py's
RuntimeAPI) with one event; the process handles it, asks /next again, gets 500 and exits.
  init        spawn -> the stand-in receives the first GET /invocation/next (Lambda's "Init
              Duration": everything before the runtime asks for work)
  invoke      that GET -> the stand-in receives POST /response (for keybridge-sync: one no-op
              sync of N secrets against the fake keybridged and keybridge-cache of the tests)
  RSS         max resident set of the process (GNU time %M, in a second pass: a child spawned
              straight from Python would inherit Python's high-water mark across exec)
Contenders: the artifact's bootstrap (static but for glibc), the ordinary build's keybridge-sync
(shared OpenSSL, jansson, inih, libevent), and ref_bootstrap.c (the runtime loop only).

    bench/lambda/run.sh [--runs 21] [--n 10]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import test_sync_e2e as h  # noqa: E402
from test_sync_lambda import RuntimeAPI  # noqa: E402


class TimedEvents(list):
    """The stand-in's event list; notes when the first /next takes an event."""

    t_next = None

    def pop(self, i=-1):
        if self.t_next is None:
            self.t_next = time.perf_counter()
        return super().pop(i)


def one(argv, env, gnu_time):
    api = RuntimeAPI([])
    api.events = TimedEvents(["req-1"])
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{api.port}")
    rss_file = None
    if gnu_time:
        fd, rss_file = tempfile.mkstemp(prefix="kblambda-rss-")
        os.close(fd)
        argv = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + argv
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t_resp = None
    while p.poll() is None and t_resp is None:
        if "req-1" in api.responses:
            t_resp = time.perf_counter()
        else:
            time.sleep(0.0002)
    _, err = p.communicate(timeout=60)
    t_end = time.perf_counter()
    if t_resp is None and "req-1" in api.responses:
        t_resp = t_end
    api.stop()
    if "req-1" not in api.responses:
        raise SystemExit(f"{argv}: no response: {api.errors} {api.init_errors} {err[-800:]!r}")
    r = api.responses["req-1"]
    if isinstance(r, dict) and "ok" in r and r["ok"] is not True:
        raise SystemExit(f"{argv}: sync failed: {r}")
    rss = 0
    if rss_file:
        with open(rss_file) as f:
            rss = int(f.read().split()[-1])
        os.unlink(rss_file)
    init = (api.events.t_next - t0) * 1000
    return init, (t_resp - api.events.t_next) * 1000, (t_end - t0) * 1000, rss


def med(xs):
    return statistics.median(xs)


def p90(xs):
    return sorted(xs)[max(0, int(len(xs) * 0.9 + 0.5) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--zip", required=True, nargs="+")
    a = ap.parse_args()

    e = h.Env()
    try:
        e.start_cache()
        fake = e.start_fake()
        for i in range(a.n):
            fake.put(f"secret-{i:03d}", f"value {i}".encode())
        env = e.sync_env()
        rc, s, err = e.run(env=env)  # first sync: the timed runs are no-ops
        if rc != 0 or s["created"] != a.n:
            raise SystemExit(f"first sync failed: {s} {err}")
        contenders = [
            ("artifact `bootstrap` (static, glibc shared)", [a.bootstrap]),
            ("`build/keybridge-sync` (shared libraries)", [h.SYNC]),
            ("reference: `ref_bootstrap.c` (runtime loop only)", [a.ref]),
        ]
        res = {}
        for name, argv in contenders:
            one(argv, env, False)  # warm the page cache
            inits, invs, tots, rsss = [], [], [], []
            for _ in range(a.runs):
                i, v, t, _ = one(argv, env, False)
                inits.append(i)
                invs.append(v)
                tots.append(t)
            for _ in range(a.runs):
                rsss.append(one(argv, env, True)[3])
            res[name] = (inits, invs, tots, rsss)
    finally:
        e.close()

    load = os.getloadavg()
    print(f"\n{a.runs} runs each, N = {a.n} secrets (no-op sync), load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs\n")
    for z in a.zip:
        print(f"zip: {os.path.basename(z)}: {os.path.getsize(z)} bytes "
              f"({os.path.getsize(z) / 1048576:.2f} MiB)")
    ref = res[contenders[2][0]]
    print("\n| process | init median (min, p90) | invocation median | whole run median |"
          " max RSS median | init / ref (median, min) | RSS / ref |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, _ in contenders:
        i, v, t, r = res[name]
        print(f"| {name} | {med(i):.2f} ms ({min(i):.2f}, {p90(i):.2f}) | {med(v):.2f} ms | "
              f"{med(t):.2f} ms | {med(r) / 1024:.1f} MiB | {med(i) / med(ref[0]):.2f}x, "
              f"{min(i) / min(ref[0]):.2f}x | {med(r) / med(ref[3]):.2f}x |")


if __name__ == "__main__":
    main()
