#!/usr/bin/env python3
"""`keybridge-sync cost` (issue 12): the arithmetic, recomputed here independently for a few cases
and with every price flag; bad arguments refused; the per-run call count it uses (1 GetSecretValue
for the SVID + ceil(N/100) ListSecrets) equal to what a real no-op run against keybridge-cache
measures (its summary's calls); the table in docs/keybridge-sync.md equal to the command's output.
"""
import json
import math
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_sync_e2e as h  # noqa: E402
from test_sync_e2e import SYNC, Env, check  # noqa: E402

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../docs/keybridge-sync.md")
HOURS = 730


def cost(*args):
    p = subprocess.run([SYNC, "cost"] + list(args), capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def cost_json(*args):
    rc, out, err = cost(*args, "--json")
    check(rc == 0, (args, rc, err))
    return [json.loads(line) for line in out.splitlines()]


def model(n, a, interval=15, changes=None, svid=1, mem=128, dur=200, ps=0.40, pa=0.05, pr=0.20,
          pg=0.0000166667):
    changes = n if changes is None else changes
    runs = HOURS * 60 // interval
    per_run = svid + math.ceil(n / 100)
    ch = changes * 4 * a
    calls = runs * a * per_run + ch
    naive = runs * a * n + ch
    lam = runs * a / 1e6 * pr + runs * a * (mem / 1024) * (dur / 1000) * pg
    return {"runs_per_month": runs, "calls_per_run": per_run, "calls": calls, "naive_calls": naive,
            "storage": n * a * ps, "api": calls / 10000 * pa, "naive_api": naive / 10000 * pa,
            "lambda": lam, "total": n * a * ps + calls / 10000 * pa + lam,
            "naive_total": n * a * ps + naive / 10000 * pa + lam}


def same(got, want, what):
    for k, v in want.items():
        ok = got[k] == v if isinstance(v, int) else abs(got[k] - v) <= 1e-9 * (1 + abs(v))
        check(ok, f"{what}: {k} = {got[k]}, want {v}")


def main():
    # 1. arithmetic, defaults and every flag
    for n, a in ((10, 1), (100, 50), (1000, 50), (101, 3)):
        same(cost_json("--secrets", str(n), "--accounts", str(a))[0], model(n, a), f"N={n} A={a}")
    got = cost_json("--secrets", "250", "--accounts", "7", "--interval", "5", "--changes-per-month",
                    "33", "--svid-files", "--memory-mb", "512", "--duration-ms", "1234",
                    "--price-secret", "0.5", "--price-api", "0.07", "--price-lambda-requests",
                    "0.3", "--price-lambda-gb-s", "0.00002")[0]
    same(got, model(250, 7, interval=5, changes=33, svid=0, mem=512, dur=1234, ps=0.5, pa=0.07,
                    pr=0.3, pg=0.00002), "all flags")
    rows = cost_json("--secrets", "10,100", "--accounts", "1,2,3")
    check([(r["secrets"], r["accounts"]) for r in rows] ==
          [(10, 1), (10, 2), (10, 3), (100, 1), (100, 2), (100, 3)], rows)
    rc, out, _ = cost("--secrets", "100", "--accounts", "50")
    check(rc == 0 and "2920 runs/month" in out and "naive" in out and "$0.40/secret-month" in out,
          out)
    print("ok: arithmetic for 5 cases and every flag, lists, text output")

    # 2. bad arguments: usage error (2), nothing printed on stdout
    for bad in (["--secrets", "0", "--accounts", "1"], ["--secrets", "-5", "--accounts", "1"],
                ["--secrets", "x", "--accounts", "1"], ["--secrets", "10"],
                ["--secrets", "10", "--accounts", "1", "--interval", "7"],
                ["--secrets", "10", "--accounts", "1", "--price-api", "-1"],
                ["--secrets", "10", "--accounts", "1", "--price-api", "nan"],
                ["--secrets", "10", "--accounts", "1", "--price-secret", "1e400"],
                ["--secrets", "10", "--accounts", "1", "--changes-per-month", "-1"],
                ["--secrets", "10", "--accounts", "1", "--memory-mb"],
                ["--secrets", "2000000", "--accounts", "1"],
                ["--secrets", "10", "--accounts", "1", "--bogus", "1"],
                ["--secrets", "10", "--accounts", "1", "--json", "--markdown"]):
        rc, out, err = cost(*bad)
        check(rc == 2 and out == "" and err, (bad, rc, out, err))
    print("ok: 13 bad argument sets refused with exit 2")

    # 3. the per-run calls it uses = what a real no-op run measures (SVID from a secret)
    e = Env()
    try:
        e.start_cache()
        fake = e.start_fake()
        sm = e.sm()
        n = 150
        for i in range(n):
            fake.put(f"c{i:03d}", f"v{i}".encode())
        store = {"spiffeID": h.CLIENT_ID, "x509SVID": e.client[2].decode(),
                 "x509SVIDKey": e.client[3].decode(), "bundle": open(e.bundle).read()}
        sm.create_secret(Name="spiffe/payments", SecretBinary=json.dumps(store).encode())
        env = e.sync_env(KEYBRIDGE_SYNC_SOURCE_SVID_SECRET_ID="spiffe/payments",
                         KEYBRIDGE_SYNC_SOURCE_SVID_CERT_FILE=None,
                         KEYBRIDGE_SYNC_SOURCE_SVID_KEY_FILE=None,
                         KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE=None, KEYBRIDGE_SYNC_SINK_RATE="0")
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["created"] == n, (rc, s, err))
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["unchanged"] == n and s["created"] == 0, (rc, s, err))
        measured = sum(v for k, v in s["calls"].items() if not k.startswith("keybridged."))
        predicted = cost_json("--secrets", str(n), "--accounts", "1")[0]["calls_per_run"]
        check(measured == predicted == 3, (s["calls"], predicted))
        check(s["calls"] == {"keybridged.list": 1, "ListSecrets": 2, "GetSecretValue": 1}, s)
        print(f"ok: no-op run of {n} secrets measured {s['calls']}: {measured} Secrets Manager calls"
              f" = cost's calls_per_run {predicted}")
    finally:
        e.close()

    # 4. the docs' table is the command's output
    args = ["--secrets", "10,100,1000", "--accounts", "1,50", "--markdown"]
    rc, out, err = cost(*args)
    check(rc == 0, err)
    doc = open(DOC).read()
    m = re.search(r"<!-- cost-table: keybridge-sync cost (.*?) -->\n(.*?)<!-- /cost-table -->", doc,
                  re.S)
    check(m and m.group(1).split() == args, "docs/keybridge-sync.md has no cost-table block")
    check(m.group(2) == out, "docs/keybridge-sync.md's cost table differs from the command's:\n" + out)
    print("ok: docs/keybridge-sync.md's table = `keybridge-sync cost " + " ".join(args) + "`")
    print("PASS")


if __name__ == "__main__":
    main()
