#!/usr/bin/env python3
"""Crash consistency: SIGKILL keybridge-sync at 50 random points (after its Nth sink call, via
the KB_SYNC_TEST_CRASH_AFTER test hook) and check that the next run converges: the sink then
holds exactly what keybridged lists, and a further run changes nothing.
Seed: $KB_SYNC_CRASH_SEED or random; printed so a failure can be replayed."""
import base64
import os
import random
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sync_e2e import Env, check  # noqa: E402

POINTS = 50


def sm_state(sm, app):
    live = {}
    for page in sm.get_paginator("list_secrets").paginate(IncludePlannedDeletion=True):
        for s in page["SecretList"]:
            if "DeletedDate" in s:
                continue
            v = sm.get_secret_value(SecretId=s["Name"])
            val = v["SecretString"].encode() if "SecretString" in v else v["SecretBinary"]
            live[s["Name"][len(f"keybridge/{app}/"):]] = val
    return live


def dir_state(d):
    return {
        n: open(os.path.join(d, n), "rb").read()
        for n in os.listdir(d)
        if not n.startswith(".")
    }


SEEN = {}  # name -> highest version ever listed (keybridged's versions only go up)


def mutate(rng, fake, i):
    names = sorted(fake.secrets)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.5 and names:
            n = rng.choice(names)
            fake.put(n, f"{n} v{i} {rng.random()}".encode())
        elif op < 0.8 or len(names) < 4:
            n = f"s{rng.randint(0, 40):02d}"
            if n not in fake.secrets:
                data = os.urandom(12) if rng.random() < 0.3 else f"{n} new {i}".encode()
                fake.put(n, data, version=SEEN.get(n, 0) + rng.randint(1, 3))
        else:
            n = rng.choice(names)
            fake.remove(n)
            names.remove(n)
    for n, v in fake.secrets.items():
        SEEN[n] = max(SEEN.get(n, 0), v[0])


def main():
    seed = int(os.environ.get("KB_SYNC_CRASH_SEED", random.randrange(1 << 32)))
    print(f"seed {seed} (replay with KB_SYNC_CRASH_SEED={seed})", flush=True)
    rng = random.Random(seed)
    e = Env()
    try:
        e.start_cache()
        fake = e.start_fake()
        sm = e.sm()
        out = os.path.join(e.dir, "secrets")
        os.mkdir(out, 0o700)
        for i in range(12):
            fake.put(f"s{i:02d}", f"initial {i}".encode())
        envs = {
            "secretsmanager": e.sync_env(),
            "dir": e.sync_env(KEYBRIDGE_SYNC_SINK_TARGET="dir:" + out),
        }
        kills = 0
        for i in range(POINTS):
            kind = "secretsmanager" if i % 2 == 0 else "dir"
            env = dict(envs[kind])
            mutate(rng, fake, i)
            n = rng.randint(1, 12)
            env["KB_SYNC_TEST_CRASH_AFTER"] = str(n)
            rc, s, err = e.run("sync", "--allow-mass-delete", env=env)
            killed = rc == -signal.SIGKILL
            kills += killed
            check(killed or rc == 0, f"point {i}: unexpected exit {rc}: {s} {err}")
            rc, s, err = e.run("sync", "--allow-mass-delete", env=envs[kind])
            check(rc == 0, f"point {i} ({kind}, crash after {n}): recovery run failed: {s} {err}")
            rc, s, err = e.run("sync", "--allow-mass-delete", env=envs[kind])
            total = len(fake.secrets)
            check(rc == 0 and s["unchanged"] == total and s["created"] + s["updated"] +
                  s["deleted"] + s["restored"] == 0, f"point {i}: not converged: {s}")
            want = {k: v[1] for k, v in fake.secrets.items()}
            have = sm_state(sm, "payments") if kind == "secretsmanager" else dir_state(out)
            check(have == want, f"point {i} ({kind}): sink differs from source")
        print(f"ok: {POINTS} crash points ({kills} killed mid-run), every next run converged")
    finally:
        e.close()
    print("PASS")


if __name__ == "__main__":
    main()
