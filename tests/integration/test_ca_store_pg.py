#!/usr/bin/env python3
"""keybridge-ca's store contract on a real PostgreSQL: runs the unit test binary test_ca_store
(the cases run against SQLite and PostgreSQL alike: meta, generations, registrations, the write
guard, leases and their expiry, claims racing on three connections, a newer schema refused) with
KB_PG_URL pointing at a throwaway server (pgserver.py)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgserver import PgServer, available  # noqa

def main():
    if not available():
        print("FAIL: no PostgreSQL binaries (scripts/deps.sh installs postgresql)")
        return 1
    exe = os.path.join(os.environ["KB_BUILD_DIR"], "test_ca_store")
    with PgServer() as pg:
        env = dict(os.environ)
        env.update(pg.env())
        r = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=300)
        out = r.stdout + r.stderr
        print("\n".join(l for l in out.splitlines() if not l.startswith('{"ts"')))
        if r.returncode != 0:
            print("FAIL: test_ca_store against PostgreSQL")
            return 1
        if "SKIPPED" in out:
            print("FAIL: PostgreSQL cases were skipped")
            return 1
    print("ok: ca_store contract on PostgreSQL")
    return 0

if __name__ == "__main__":
    sys.exit(main())
