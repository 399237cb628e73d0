#!/usr/bin/env python3
"""Herd benchmark (issue 7 point 5): 1,000 keybridge-sync runs (200 applications x 5 accounts,
distinct SPIFFE IDs) against one keybridged with an HSM budget of B ops/s (burst BURST), right
after the 20 secrets they all share were rotated. Run "herd": every syncer launched at once;
run "offset": each application's 5 syncers start at its schedule offset (`keybridge-sync
schedule APP`, minutes -> seconds: 15 minutes compressed to 15 seconds). keybridged's metrics are
scraped every 0.5 s. Sink: one dir per syncer (the dir sink is cheaper than keybridge-cache on
2 cores). See README.md. Usage: run.sh [BUILD_DIR] [--runs herd,offset] [--cache-ttl 0] ...
"""
import argparse
import base64
import csv
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("KB_SOURCE_DIR", os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import test_keybridged_api as kbapi  # noqa: E402
import test_sync_keybridged as tk  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

SYNC = os.path.join(kbapi.BUILD, "keybridge-sync")
# herd<tag>.csv: one row per scrape interval; rates are per second over the interval that ends
# at t_s (seconds since the run's first launch, midpoint of the scrape)
CSV_COLUMNS = ["run", "cache_ttl", "t_s", "unwraps_per_s", "refused_names_per_s",
               "http429_per_s", "syncers_running"]


def make_svids(pki_dir, ids, out_dir):
    """One P-256 X509-SVID per SPIFFE ID, signed by the test PKI's root (fast: no openssl
    process per leaf). Same profile as PKI.leaf: URI SAN only, KU critical digitalSignature,
    CA:FALSE, EKU serverAuth+clientAuth."""
    ca_key = serialization.load_pem_private_key(open(f"{pki_dir}/ca.key", "rb").read(), None)
    ca = x509.load_pem_x509_certificate(open(f"{pki_dir}/ca.pem", "rb").read())
    now = datetime.datetime.now(datetime.timezone.utc)
    paths = []
    for i, sid in enumerate(ids):
        k = ec.generate_private_key(ec.SECP256R1())
        c = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "herd")]))
             .issuer_name(ca.subject).public_key(k.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(hours=6))
             .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(sid)]),
                            critical=False)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                          False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
             .sign(ca_key, hashes.SHA256()))
        pem, key = f"{out_dir}/{i:04d}.pem", f"{out_dir}/{i:04d}.key"
        with open(pem, "wb") as f:
            f.write(c.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
        paths.append((pem, key))
    return paths


def scrape(srv):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.mport}/metrics", timeout=2) as r:
            out = r.read().decode()
    except OSError:
        out = ""
    m = {"unwrap": 0.0, "http429": 0.0, "refused": 0.0, "batch": 0.0}
    for line in out.splitlines():
        if line.startswith("#") or not line:
            continue
        k, _, v = line.rpartition(" ")
        try:
            v = float(v)
        except ValueError:
            continue
        if k == 'keybridged_hsm_operations_total{op="unwrap"}':
            m["unwrap"] = v
        elif k.startswith("keybridged_requests_total") and 'status="429"' in k:
            m["http429"] += v
        elif k.startswith("keybridged_hsm_budget_refused_total"):
            m["refused"] += v
        elif k.startswith("keybridged_requests_total") and "batchGet" in k:
            m["batch"] += v
    return m


def offsets(apps):
    out = subprocess.run([SYNC, "schedule"] + apps, capture_output=True, text=True,
                         check=True).stdout
    mins = [int(x) for x in re.findall(r"^offset (\d+)$", out, re.M)]
    assert len(mins) == len(apps)
    return dict(zip(apps, mins))


def one_run(name, srv, clients, sinks_root, mode, offs, deadline, rounds_dir):
    """Launch every syncer (herd: at once; offset: at its application's offset in seconds),
    scrape metrics every 0.5 s until all have exited; return the series and per-syncer data."""
    shutil.rmtree(sinks_root, ignore_errors=True)
    os.makedirs(sinks_root)
    outdir = os.path.join(rounds_dir, name)
    os.makedirs(outdir, exist_ok=True)
    empty_conf = os.path.join(rounds_dir, "empty.conf")  # everything comes from the environment
    open(empty_conf, "w").close()
    series, procs, done = [], {}, {}
    stop = threading.Event()
    t0 = time.monotonic()
    base = scrape(srv)

    def scraper():
        while not stop.is_set():
            t = time.monotonic() - t0
            m = scrape(srv)
            t1 = time.monotonic() - t0
            # the counters were read somewhere in [t, t1] (the scrape is slow under load): the
            # plot uses the midpoint, the budget check the widest window
            series.append({"t": round((t + t1) / 2, 3), "t_lo": round(t, 3), "t_hi": round(t1, 3),
                           **{k: m[k] - base[k] for k in m}, "running": len(procs) - len(done)})
            stop.wait(max(0.0, 0.5 - (time.monotonic() - t0 - t)))

    def launch(i, c):
        d = os.path.join(sinks_root, f"{i:04d}")
        os.mkdir(d, 0o700)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "KEYBRIDGE_SYNC_SOURCE_URL": f"https://127.0.0.1:{srv.port}",
               "KEYBRIDGE_SYNC_SOURCE_SERVER_ID": kbapi.SERVER_ID,
               "KEYBRIDGE_SYNC_SOURCE_SVID_CERT_FILE": c["svid"][0],
               "KEYBRIDGE_SYNC_SOURCE_SVID_KEY_FILE": c["svid"][1],
               "KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE": c["bundle"],
               "KEYBRIDGE_SYNC_SINK_TARGET": "dir:" + d,
               "KEYBRIDGE_SYNC_LOG_LEVEL": "error"}
        out = open(os.path.join(outdir, f"{i:04d}.json"), "w")
        err = open(os.path.join(outdir, f"{i:04d}.log"), "w")
        p = subprocess.Popen([SYNC, "--config", empty_conf, "sync", "--deadline", deadline],
                             env=env, stdout=out, stderr=err)
        out.close()
        err.close()
        procs[i] = (p, time.monotonic() - t0)

    th = threading.Thread(target=scraper, daemon=True)
    th.start()
    order = list(range(len(clients)))
    if mode == "offset":
        order.sort(key=lambda i: offs[clients[i]["app"]])
    for i in order:
        if mode == "offset":
            at = offs[clients[i]["app"]]  # minutes -> seconds
            while time.monotonic() - t0 < at:
                time.sleep(0.005)
        launch(i, clients[i])
    launched = time.monotonic() - t0
    hard = time.monotonic() + 600  # bound everything in time
    while len(done) < len(procs) and time.monotonic() < hard:
        for i, (p, _) in procs.items():
            if i not in done and p.poll() is not None:
                done[i] = (p.returncode, time.monotonic() - t0)
        time.sleep(0.05)
    for i, (p, _) in procs.items():
        if i not in done:
            p.kill()
            p.wait()
            done[i] = (-9, time.monotonic() - t0)
    time.sleep(0.6)
    stop.set()
    th.join()
    res = []
    for i in sorted(procs):
        try:
            s = json.loads(open(os.path.join(outdir, f"{i:04d}.json")).read().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            s = None
        d = os.path.join(sinks_root, f"{i:04d}")
        ok_files = sum(1 for n in range(20)
                       if os.path.exists(f"{d}/shared{n:02d}") and
                       open(f"{d}/shared{n:02d}", "rb").read() == f"rotated {n}".encode())
        if done[i][0] != 0 and not any(x["rc"] != 0 for x in res):
            # show the first failure (names and error codes only: syncers never log contents)
            print(f"{name}: syncer {i} exit {done[i][0]}: {json.dumps(s)[:600]}\n" +
                  open(os.path.join(outdir, f"{i:04d}.log")).read()[-1500:], file=sys.stderr)
        res.append({"i": i, "app": clients[i]["app"], "start": round(procs[i][1], 3),
                    "end": round(done[i][1], 3), "rc": done[i][0], "converged": ok_files == 20,
                    "summary": s})
    return {"name": name, "mode": mode, "launch_s": round(launched, 3), "series": series,
            "syncers": res}


def report(r, B, burst):
    ser, sy = r["series"], r["syncers"]
    rates = []
    for a, b in zip(ser, ser[1:]):
        dt = b["t"] - a["t"]
        if dt > 0:
            rates.append({"t": b["t"], "ops": (b["unwrap"] - a["unwrap"]) / dt,
                          "refused": (b["refused"] - a["refused"]) / dt,
                          "http429": (b["http429"] - a["http429"]) / dt,
                          "running": b["running"]})
    r["rates"] = rates
    conv = [s for s in sy if s["converged"] and s["rc"] == 0]
    throttled = [s for s in sy if s["summary"] and s["summary"].get("throttled", 0) > 0]
    # the budget's promise: over any window, unwraps <= burst + B * window
    worst = 0.0
    for i in range(len(ser)):
        for j in range(i + 1, len(ser)):
            w = ser[j]["t_hi"] - ser[i]["t_lo"]
            worst = max(worst, (ser[j]["unwrap"] - ser[i]["unwrap"]) - (burst + B * w))
    return {
        "run": r["name"], "syncers": len(sy), "launch_spread_s": r["launch_s"],
        "converged": len(conv),
        "time_to_converge_s": round(max(s["end"] for s in sy), 2) if len(conv) == len(sy) else None,
        "median_syncer_end_s": round(sorted(s["end"] for s in sy)[len(sy) // 2], 2),
        "unrecoverable_errors": len(sy) - len(conv),
        "unwraps": int(ser[-1]["unwrap"]) if ser else 0,
        "peak_ops_per_s_0_5s": round(max((x["ops"] for x in rates), default=0), 1),
        "budget_excess_ops": round(worst, 1),
        "http_429": int(ser[-1]["http429"]) if ser else 0,
        "budget_refusals_deferred_names": int(ser[-1]["refused"]) if ser else 0,
        "syncers_throttled": len(throttled),
        "batch_requests": int(ser[-1]["batch"]) if ser else 0,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="herd,offset")
    ap.add_argument("--apps", type=int, default=200)
    ap.add_argument("--accounts", type=int, default=5)
    ap.add_argument("--secrets", type=int, default=20)
    ap.add_argument("--budget", type=float, default=200)
    ap.add_argument("--burst", type=int, default=50)
    ap.add_argument("--cache-ttl", default="0")
    ap.add_argument("--deadline", default="300s")
    ap.add_argument("--out", default=os.path.join(SRC, "bench", "results"))
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    # run.sh's timeout sends TERM: leave through the finally below (servers stopped, dir removed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    machine = {"cpus": os.cpu_count(), "load1_at_start": os.getloadavg()[0],
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")}
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="kbherd.", dir=base)
    srv = None
    try:
        t = time.monotonic()
        hsm = kbapi.make_hsm(d)
        pki = kbapi.PKI(f"{d}/pki")
        srv = kbapi.Server(d, pki, hsm)
        base_conf = open(srv.conf).read()
        srv.bootstrap()
        srv.start()
        admin = tk.Admin(srv, pki, pki.leaf("admin", f"URI:{kbapi.ADMIN}"))
        admin("POST", "/v1/admin/groups", {"name": "shared"}, want=201)
        for n in range(a.secrets):
            admin("POST", "/v1/admin/secrets", {"name": f"shared{n:02d}", "cloud_sync": True,
                  "content": base64.b64encode(f"v1 {n}".encode()).decode()}, want=201)
            admin("POST", "/v1/admin/grants", {"group": "shared", "secret": f"shared{n:02d}"},
                  want=201)
        clients = []
        for app in range(a.apps):
            for acct in range(a.accounts):
                sid = f"spiffe://example.org/lambda/acct/{100000000000 + acct}/fn/app{app:03d}"
                clients.append({"id": sid, "app": f"app{app:03d}", "bundle": pki.bundle})
        for c in clients:
            admin("POST", "/v1/admin/clients", {"spiffe_id": c["id"], "app_name": c["app"]},
                  want=201)
            admin("POST", "/v1/admin/memberships", {"client": c["id"], "group": "shared"},
                  want=201)
        os.makedirs(f"{d}/svids")
        for c, p in zip(clients, make_svids(f"{d}/pki", [c["id"] for c in clients],
                                            f"{d}/svids")):
            c["svid"] = p
        offs = offsets(sorted({c["app"] for c in clients}))
        print(f"setup: {len(clients)} clients, {a.secrets} shared secrets, "
              f"{time.monotonic() - t:.1f} s", file=sys.stderr)
        budget = (f"[hsm_budget]\nglobal_rate = {a.budget}\nglobal_burst = {a.burst}\n"
                  f"cloud_rate = {a.budget}\ncloud_burst = {a.burst}\ncache_ttl = {a.cache_ttl}\n")
        results, reports = [], []
        for rnd, mode in enumerate(a.runs.split(",")):
            # the rotation, then a fresh budget (restart: full buckets, empty data-key cache)
            srv.stop()
            with open(srv.conf, "w") as f:
                f.write(base_conf)
            srv.start()
            admin.c.close()
            admin.c = kbapi.Conn(*admin.args)
            for n in range(a.secrets):
                admin("PUT", f"/v1/admin/secrets/shared{n:02d}",
                      {"content": base64.b64encode(f"rotated {n}".encode()).decode()}, want=200)
            admin.c.close()
            srv.stop()
            with open(srv.conf, "w") as f:
                f.write(base_conf + budget)
            srv.start()
            name = f"{mode}{a.tag}"
            load1 = os.getloadavg()[0]
            r = one_run(name, srv, clients, f"{d}/sinks", mode, offs, a.deadline, f"{d}/runs")
            rep = report(r, a.budget, a.burst)
            rep.update({"budget_ops_s": a.budget, "burst": a.burst, "cache_ttl": a.cache_ttl,
                        "load1_before": load1})
            print(json.dumps(rep), flush=True)
            reports.append(rep)
            results.append({"name": name, "rates": r["rates"], "series": r["series"],
                            "report": rep})
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, f"herd{a.tag}.json"), "w") as f:
            json.dump({"machine": machine, "reports": reports}, f, indent=1)
            f.write("\n")
        # the series, one row per scrape interval (~0.5 s), for bench/herd/plot.py
        with open(os.path.join(a.out, f"herd{a.tag}.csv"), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(CSV_COLUMNS)
            for x in results:
                for p in x["rates"]:
                    w.writerow([x["name"], a.cache_ttl, f"{p['t']:.3f}", f"{p['ops']:.1f}",
                                f"{p['refused']:.1f}", f"{p['http429']:.1f}", p["running"]])
    finally:
        if srv:
            srv.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
