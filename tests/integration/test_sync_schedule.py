#!/usr/bin/env python3
"""`keybridge-sync schedule`: offset = first 32 bits of SHA-256(APP), big-endian, mod interval.
Checks 10,000 generated names against a Python reimplementation, and prints the per-slot spread
(informational: only range, determinism and the formula are asserted)."""
import hashlib
import os
import subprocess
import sys

BUILD = os.environ.get("KB_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
SYNC = os.path.join(BUILD, "keybridge-sync")
N = 10000


def offset(app, interval):
    return int.from_bytes(hashlib.sha256(app.encode()).digest()[:4], "big") % interval


def run(*args):
    p = subprocess.run([SYNC] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env={"PATH": os.environ.get("PATH", "")})
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def main():
    # every name through the CLI (several APPs per call keeps the sanitized run fast)
    names = [f"app-{i:05d}.team{i % 37}" for i in range(N)]
    outs = []
    for chunk in range(0, N, 2500):
        p = subprocess.run([SYNC, "schedule"] + names[chunk:chunk + 2500],
                           stdout=subprocess.PIPE, check=True)
        outs += p.stdout.decode().splitlines()
    assert len(outs) == 2 * N, len(outs)
    slots = [0] * 15
    for i, name in enumerate(names):
        off_line, cron = outs[2 * i], outs[2 * i + 1]
        m = offset(name, 15)
        assert off_line == f"offset {m}", (name, off_line, m)
        assert cron == f"cron({m}/15 * * * ? *)", (name, cron)
        assert 0 <= m < 15
        slots[m] += 1
    print("per-slot spread over", N, "names (interval 15):", slots)
    print("min", min(slots), "max", max(slots), "ideal", N // 15)
    # deterministic
    assert run("schedule", names[0])[1] == run("schedule", names[0])[1]
    # other intervals and Terraform's formula parseint(substr(sha256(app),0,8),16) % interval
    for interval in (1, 2, 3, 4, 5, 6, 10, 12, 20, 30, 60):
        rc, out, _ = run("schedule", "payments", "--interval", str(interval))
        tf = int(hashlib.sha256(b"payments").hexdigest()[:8], 16) % interval
        assert rc == 0 and out.splitlines()[0] == f"offset {tf}", (interval, out)
        want = f"cron({tf} * * * ? *)" if interval == 60 else f"cron({tf}/{interval} * * * ? *)"
        assert out.splitlines()[1] == want, out
    # one source of truth (issue 11): without --interval, the cron is the daemon's [daemon]
    # interval from the configuration (file or KEYBRIDGE_SYNC_DAEMON_INTERVAL), not a default
    # of its own; --interval still overrides it; a bad configured interval is a config error.
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "sync.conf")
        for interval in (5, 10, 30, 60):
            with open(conf, "w") as f:
                f.write(f"[daemon]\ninterval = {interval}\n")
            tf = int(hashlib.sha256(b"payments").hexdigest()[:8], 16) % interval
            want = f"cron({tf} * * * ? *)" if interval == 60 else f"cron({tf}/{interval} * * * ? *)"
            rc, out, err = run("--config", conf, "schedule", "payments")
            assert rc == 0 and out.splitlines() == [f"offset {tf}", want], (interval, rc, out, err)
        rc, out, _ = run("--config", conf, "schedule", "payments", "--interval", "15")
        m = offset("payments", 15)
        assert rc == 0 and out.splitlines()[1] == f"cron({m}/15 * * * ? *)", out
        p = subprocess.run([SYNC, "schedule", "payments"], stdout=subprocess.PIPE,
                           env={"PATH": os.environ.get("PATH", ""),
                                "KEYBRIDGE_SYNC_DAEMON_INTERVAL": "20"})
        m = offset("payments", 20)
        assert p.returncode == 0 and p.stdout.decode().splitlines()[1] == f"cron({m}/20 * * * ? *)", p
        with open(conf, "w") as f:
            f.write("[daemon]\ninterval = 7\n")
        rc, out, err = run("--config", conf, "schedule", "payments")
        assert rc == 3 and out == "" and "interval" in err, (rc, out, err)
    # negative cases: intervals that do not divide 60, missing app, junk
    for bad in (["schedule", "x", "--interval", "7"], ["schedule", "x", "--interval", "0"],
                ["schedule", "x", "--interval", "61"], ["schedule", "x", "--interval", "abc"],
                ["schedule"], ["schedule", ""], ["schedule", "a", "--bogus"]):
        rc, out, err = run(*bad)
        assert rc == 2 and out == "", (bad, rc, out)
    print("PASS")


if __name__ == "__main__":
    main()
