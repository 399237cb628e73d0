#!/usr/bin/env python3
"""keybridged on PostgreSQL beside SQLite, in one run (issue 13, "Bench"). Not part of ctest.

    python3 bench/keybridged/pg.py [BUILD_DIR]       (default ./build; a RelWithDebInfo build)

Needs Debian's postgresql, apache2-utils (ab), SoftHSM2, openssl, curl. Everything on loopback,
random ports; the PostgreSQL server is a throwaway one (tests/integration/pgserver.py: initdb in
a temporary directory, fsync off) and the keybridged instances are set up with the integration
tests' helpers (tests/integration/test_keybridged_api.py: PKI, SoftHSM2 token, config).

Configurations, each with one bench client granted 20 secrets (bench/keybridged/populate.c):
  sqlite  one keybridged on SQLite
  pg1     one keybridged on PostgreSQL
  pg2     two keybridged replicas on the same PostgreSQL, one ab per replica at the same time
Workloads (ab -k, kept-alive mTLS connections, -c C_LIST / C_GET split over the replicas):
  list      GET /v1/secrets (served from the listing cache after the first request)
  batchGet  POST /v1/secrets:batchGet {"names": [BATCH secrets]} (content reads: unwrap,
            fetch log and audit row)
For each: requests/s, keybridged CPU per request (utime+stime of every replica from
/proc/PID/stat, before/after), PostgreSQL CPU per request (every postgres process), database
round trips per request (keybridged_store_round_trips_total, summed over the replicas), the
failed / non-2xx count, and ratios to SQLite. The median of ROUNDS rounds per cell.

Then the restart phase (pg2): LOAD_THREADS client threads per replica loop list and batchGet
on kept-alive connections (timeout 10 s) while PostgreSQL is stopped (fast shutdown) after 2 s
and started again 3 s later: p50/p99/max latency and the status counts before, during and after
the outage (503 expected during it, nothing hanging).

Environment: N_LIST (requests per list run, default 20000), N_GET (per batchGet run, 4000),
C_LIST (32), C_GET (8), BATCH (5), ROUNDS (3), LOAD_THREADS (4), OUT (a file to also write the
report to). Run it with `nice` on a shared machine; the load average is in the report.
"""
import http.client
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(SRC, "build"))
os.environ["KB_BUILD_DIR"] = BUILD
os.environ["KB_SOURCE_DIR"] = SRC
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from pgserver import PgServer, _children  # noqa: E402
from test_keybridged_api import PKI, Server, make_hsm  # noqa: E402

N_LIST = int(os.environ.get("N_LIST", "20000"))
N_GET = int(os.environ.get("N_GET", "4000"))
C_LIST = int(os.environ.get("C_LIST", "32"))
C_GET = int(os.environ.get("C_GET", "8"))
BATCH = int(os.environ.get("BATCH", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
LOAD_THREADS = int(os.environ.get("LOAD_THREADS", "4"))
BENCH_ID = "spiffe://example.org/ns/bench/sa/syncer"
HZ = os.sysconf("SC_CLK_TCK")
POPULATE = os.path.join(BUILD, "bench", "keybridged", "populate")


def say(*a):
    print("==", *a, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def ticks(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
            t += int(v[11]) + int(v[12])
        except OSError:
            pass
    return t


def pg_pids(pg):
    return [pg.proc.pid] + _children(pg.proc.pid) if pg else []


def round_trips(srv):
    m = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{srv.mport}/metrics"],
                       capture_output=True, text=True).stdout
    for ln in m.splitlines():
        if ln.startswith("keybridged_store_round_trips_total "):
            return int(ln.split()[1])
    return 0


def ab_parse(out):
    def num(pat):
        m = re.search(pat, out, re.M)
        return float(m.group(1)) if m else 0.0
    return {"done": num(r"^Complete requests:\s+(\d+)"),
            "rps": num(r"^Requests per second:\s+([\d.]+)"),
            "bad": num(r"^Failed requests:\s+(\d+)") + num(r"^Non-2xx responses:\s+(\d+)"),
            "p99": num(r"^\s+99%\s+(\d+)")}


def measure(servers, pg, abcmds):
    """Run one ab per replica at once; CPU and round trips over all replicas."""
    kpids = [s.proc.pid for s in servers]
    ppids = pg_pids(pg)
    rt0 = sum(round_trips(s) for s in servers)
    k0, p0 = ticks(kpids), ticks(ppids)
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in abcmds]
    outs = [p.communicate()[0] for p in procs]
    k1, p1 = ticks(kpids), ticks(ppids)
    rt1 = sum(round_trips(s) for s in servers)
    rs = [ab_parse(o) for o in outs]
    done = sum(r["done"] for r in rs) or 1
    if any(r["done"] == 0 for r in rs):
        say("ab failed:", outs[0][-500:])
    return {"rps": sum(r["rps"] for r in rs), "kcpu": (k1 - k0) * 1e6 / HZ / done,
            "pcpu": (p1 - p0) * 1e6 / HZ / done, "rt": (rt1 - rt0) / done,
            "bad": sum(r["bad"] for r in rs), "p99": max(r["p99"] for r in rs)}


def ab_cmds(servers, abpem, cacert, kind, n, c, body):
    cmds = []
    for s in servers:
        base = ["nice", "-n", "10", "ab", "-q", "-k", "-n", str(n // len(servers)),
                "-c", str(max(1, c // len(servers))), "-E", abpem]
        if kind == "list":
            cmds.append(base + [f"https://127.0.0.1:{s.port}/v1/secrets"])
        else:
            cmds.append(base + ["-p", body, "-T", "application/json",
                                f"https://127.0.0.1:{s.port}/v1/secrets:batchGet"])
    return cmds


class Loader:
    """LOAD_THREADS threads per replica, list and batchGet alternately on kept-alive
    connections; every request's (start time, latency, status)."""

    def __init__(self, servers, pki_ca, cert, key, names):
        self.ctx = ssl.create_default_context(cafile=pki_ca)
        self.ctx.check_hostname = False
        self.ctx.load_cert_chain(cert, key)
        self.servers, self.names = servers, names
        self.stop = False
        self.samples = []
        self.mu = threading.Lock()

    def run_one(self, srv, k):
        conn = None
        body = json.dumps({"names": self.names})
        i = k
        while not self.stop:
            if conn is None:
                conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=self.ctx,
                                                   timeout=10)
            t = time.time()
            try:
                if i % 2:
                    conn.request("GET", "/v1/secrets")
                else:
                    conn.request("POST", "/v1/secrets:batchGet", body,
                                 {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                st = r.status
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                st = "timeout" if "timed out" in str(e) else "conn-error"
                conn.close()
                conn = None
            with self.mu:
                self.samples.append((t, time.time() - t, st))
            i += 1

    def start(self):
        self.threads = [threading.Thread(target=self.run_one, args=(s, k), daemon=True)
                        for s in self.servers for k in range(LOAD_THREADS)]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join(15)


def summarize(samples, lo, hi):
    sel = [s for s in samples if lo <= s[0] < hi]
    lat = sorted(s[1] * 1000 for s in sel)
    codes = {}
    for s in sel:
        codes[str(s[2])] = codes.get(str(s[2]), 0) + 1
    if not lat:
        return {"n": 0}
    pct = lambda p: round(lat[min(len(lat) - 1, int(len(lat) * p))], 2)  # noqa: E731
    return {"n": len(sel), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(lat[-1], 1),
            "status": codes}


def main():
    if not os.path.exists(POPULATE):
        print(f"pg.py: {POPULATE} is not built (cmake --build {BUILD} --target "
              "bench_keybridged_populate)", file=sys.stderr)
        return 2
    for tool in ("ab", "curl", "openssl", "softhsm2-util"):
        if shutil.which(tool) is None:
            print(f"pg.py: {tool} is required (scripts/deps.sh)", file=sys.stderr)
            return 2
    d = tempfile.mkdtemp(prefix="kbpgbench.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(d, 0o711)
    pg = None
    servers = []
    lines = []

    def out(s=""):
        lines.append(s)
        print(s, flush=True)

    try:
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        cert, key = pki.leaf("bench", f"URI:{BENCH_ID}")
        abpem = f"{d}/bench-ab.pem"
        with open(abpem, "w") as f:
            f.write(open(cert).read() + open(key).read())
        os.chmod(abpem, 0o600)
        pg = PgServer(base=d)

        def instance(name, url):
            os.makedirs(f"{d}/{name}")
            s = Server(f"{d}/{name}", pki, hsm)
            if url:
                with open(s.conf) as f:
                    text = f.read()
                with open(s.conf, "w") as f:
                    f.write(re.sub(r"^url = sqlite:.*$", f"url = {url}", text, flags=re.M) +
                            "[log]\nlevel = warn\n")
            else:  # its own master key in the shared token (bootstrap makes one)
                with open(s.conf) as f:
                    text = f.read()
                with open(s.conf, "w") as f:
                    f.write(text.replace("[hsm]\n", "[hsm]\nkey_label = sqlite-master\n") +
                            "[log]\nlevel = warn\n")
            return s

        lite = instance("sqlite", None)
        r1 = instance("pg-r1", pg.url)
        r2 = instance("pg-r2", pg.url)
        servers = [lite, r1, r2]
        for s in (lite, r1):
            p = subprocess.run([os.path.join(BUILD, "keybridged"), "--config", s.conf,
                                "bootstrap", "--admin-id", "spiffe://example.org/ns/ops/sa/admin"],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"bootstrap failed: {p.stdout}{p.stderr}")
            subprocess.run([POPULATE, s.conf, "20", "0", "1", BENCH_ID], check=True,
                           capture_output=True)
        names = [f"bench-s{j}" for j in range(BATCH)]
        body = f"{d}/batch.json"
        with open(body, "w") as f:
            json.dump({"names": names}, f)
        for s in servers:
            s.start()

        configs = [("sqlite", [lite], None), ("pg1", [r1], pg), ("pg2", [r1, r2], pg)]
        res = {}
        load_start = loadavg()
        say("warm-up")
        for cname, srvs, p in configs:
            for kind in ("list", "batchGet"):
                measure(srvs, p, ab_cmds(srvs, abpem, pki.bundle, kind, 400, 4, body))
        for r in range(ROUNDS):
            for kind, n, c in (("list", N_LIST, C_LIST), ("batchGet", N_GET, C_GET)):
                for cname, srvs, p in configs:
                    m = measure(srvs, p, ab_cmds(srvs, abpem, pki.bundle, kind, n, c, body))
                    say(f"round {r + 1} {kind} {cname}: {json.dumps(m)} load {loadavg()}")
                    res.setdefault((kind, cname), []).append(m)
        load_end = loadavg()

        def med(kind, cname, f):
            return statistics.median(m[f] for m in res[(kind, cname)])

        commit = subprocess.run(["git", "-C", SRC, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        cpu = open("/proc/cpuinfo").read()
        model = re.search(r"model name\s*:\s*(.*)", cpu)
        out(f"keybridged on PostgreSQL vs SQLite ({time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, "
            f"commit {commit}, {os.cpu_count()} CPUs, {model.group(1) if model else '?'})")
        out(f"load average at start {load_start}, at end of the rounds {load_end}; "
            f"medians of {ROUNDS} rounds; ab on the same machine")
        out(f"list: GET /v1/secrets (20 secrets), ab -k -c {C_LIST} -n {N_LIST}; batchGet: "
            f"{BATCH} names, ab -k -c {C_GET} -n {N_GET}; pg2: the same split over two replicas")
        out()
        out("| workload | store | req/s | keybridged CPU/req | PostgreSQL CPU/req | "
            "total CPU/req vs SQLite | DB round trips/req | failed/non-2xx | ab p99 |")
        out("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for kind in ("list", "batchGet"):
            base = med(kind, "sqlite", "kcpu") + med(kind, "sqlite", "pcpu")
            for cname, _, _ in configs:
                tot = med(kind, cname, "kcpu") + med(kind, cname, "pcpu")
                bad = sum(m["bad"] for m in res[(kind, cname)])
                out(f"| {kind} | {cname} | {med(kind, cname, 'rps'):.0f} | "
                    f"{med(kind, cname, 'kcpu'):.1f} us | {med(kind, cname, 'pcpu'):.1f} us | "
                    f"{tot / base if base else 0:.2f}x | {med(kind, cname, 'rt'):.3f} | "
                    f"{bad:.0f} | {med(kind, cname, 'p99'):.0f} ms |")
        out()
        out("targets: list from the listing cache 0 round trips; <= 3 per content read "
            f"(batchGet of {BATCH}: <= 3 per request); CPU per list within 1.3x of SQLite's")
        kl = med("list", "pg1", "kcpu") / (med("list", "sqlite", "kcpu") or 1)
        out(f"list keybridged CPU pg1/sqlite = {kl:.2f}x, pg2/sqlite = "
            f"{med('list', 'pg2', 'kcpu') / (med('list', 'sqlite', 'kcpu') or 1):.2f}x")

        # ---- PostgreSQL restarts under load (two replicas)
        say("restart phase")
        lo = Loader([r1, r2], pki.bundle, cert, key, names)
        lo.start()
        time.sleep(2)
        t_stop = time.time()
        pg.stop("fast")
        t_stopped = time.time()
        time.sleep(3)
        t_start = time.time()
        pg.start()
        t_up = time.time()
        time.sleep(4)
        t_end = time.time()
        lo.finish()
        s = lo.samples
        t0 = min(x[0] for x in s) if s else 0
        out()
        out(f"PostgreSQL restart under load ({LOAD_THREADS} client threads per replica, list and "
            f"batchGet alternately, kept-alive, 10 s client timeout): stop (fast) at "
            f"{t_stop - t0:.1f} s took {t_stopped - t_stop:.2f} s, start at {t_start - t0:.1f} s "
            f"took {t_up - t_start:.2f} s; load average {loadavg()}")
        out(f"  before:  {json.dumps(summarize(s, 0, t_stop))}")
        out(f"  outage:  {json.dumps(summarize(s, t_stop, t_up))}")
        out(f"  after:   {json.dumps(summarize(s, t_up, t_end + 20))}")
        after = [x for x in s if x[0] >= t_up]
        first_ok = [x[0] + x[1] for x in after if x[2] == 200]
        out(f"  first 200 after the start returned: {(first_ok[0] - t_up) if first_ok else -1:.2f} s "
            "after PostgreSQL accepted connections")
        out(f"  whole phase: {json.dumps(summarize(s, 0, t_end + 20))}")
        for srv in (r1, r2):
            if srv.proc.poll() is not None:
                out("  a replica exited during the restart phase")
        if os.environ.get("OUT"):
            with open(os.environ["OUT"], "w") as f:
                f.write("\n".join(lines) + "\n")
    finally:
        for srv in servers:
            srv.stop()
        if pg:
            pg.close()
        if not os.environ.get("KEEP"):
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
