#!/usr/bin/env python3
"""keybridge-ca replicas through a PostgreSQL restart (issue 13): two `keybridge-ca serve`
processes on one real PostgreSQL and one SoftHSM2 token renew N registrations with 60 s SVIDs
(due every 14 s, as in test_ca_ha_pg); after the first wave PostgreSQL is stopped ("fast":
every connection dropped) across the next due time for OUTAGE seconds and started again. Asserted from the
issued-certificate log (ca_issued), the audit and the targets:

- both replicas survive the outage (still running at the end, no restart);
- renewals resume: every registration is renewed again after the restart;
- none missed: each renewal is logged no later than its due time + lease + a wave's slack + the
  outage (work due during the outage is done when the database is back);
- none twice: no renewal is logged before its due time (a window renewed twice would show one
  at once after the other);
- every target holds the last logged certificate, and every logged certificate is in the audit.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgserver import PgServer, available  # noqa
import test_ca_ha_pg as ha  # noqa: the CA set-up helpers (write_conf, make_hsm, ca, rows)

from cryptography import x509  # noqa

N = 60
REPLICAS = 2
OUTAGE = 5
RUN_SECONDS = 50
check = ha.check


def main():
    if not available():
        print("FAIL: no PostgreSQL binaries (scripts/deps.sh installs postgresql)")
        return 1
    w = tempfile.mkdtemp(prefix="kbca-rs-")
    os.chmod(w, 0o700)
    procs = []
    try:
        with PgServer() as pg:
            pin_file, module = ha.make_hsm(w)
            os.makedirs(f"{w}/svids", mode=0o700)
            with open(f"{w}/policy.json", "w") as f:
                f.write('{"rules": [{"path_prefix": "/ns/", "target": "dir", '
                        f'"dir_root": "{w}/svids"' + '}]}')
            confs = [ha.write_conf(w, i, pg.url, pin_file, module) for i in range(REPLICAS)]
            ha.ca(confs[0], "init", "--trust-domain", "example.org")
            now = int(time.time())
            pg.psql("INSERT INTO ca_reg (spiffe_id, ttl, avail, target, renewable, created) "
                    f"SELECT 'spiffe://example.org/ns/w' || i, {ha.TTL}, {ha.AVAIL}, "
                    f"'dir:{w}/svids/w' || i, 0, {now} FROM generate_series(0, {N - 1}) i",
                    db="kb")
            t_start = time.time()
            for i, c in enumerate(confs):
                log = open(f"{w}/serve{i}.log", "w")
                procs.append(subprocess.Popen([ha.B, "-c", c, "serve"], stdout=log, stderr=log))
                log.close()
            # the first wave done, then the outage
            deadline = time.time() + 30
            while time.time() < deadline:
                if int(ha.rows(pg, "SELECT count(DISTINCT rid) FROM ca_issued")[0][0]) >= N:
                    break
                time.sleep(0.2)
            # down across the next due time (first SVIDs' not_after - AVAIL - 2 ticks: ~14 s
            # after the first wave), so renewals come due while the database is away
            time.sleep(11)
            pg.stop("fast")
            down_at = time.time()
            time.sleep(OUTAGE)
            pg.start()
            up_at = time.time()
            check(all(p.poll() is None for p in procs),
                  f"both replicas kept running through a {up_at - down_at:.1f} s outage")
            while time.time() < t_start + RUN_SECONDS:
                time.sleep(0.5)
            alive = [p.poll() is None for p in procs]
            check(all(alive), f"both replicas still running at the end ({alive})")
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=30)
            t_end = time.time()
            seen = 0
            for i in range(REPLICAS):
                with open(f"{w}/serve{i}.log") as f:
                    seen += "ca_db_reconnected" in f.read()
            check(seen == REPLICAS, f"both replicas lost and re-established their connection "
                  f"(ca_db_reconnected in {seen} logs)")

            issued = ha.rows(pg, "SELECT rid, serial, not_after, at, owner FROM ca_issued "
                                 "ORDER BY rid, at, id")
            regs = {int(r[0]): r[1] for r in ha.rows(pg, "SELECT rid, target FROM ca_reg")}
            by = {}
            for rid, serial, na, at, owner in issued:
                by.setdefault(int(rid), []).append((int(at), int(na), serial, owner))
            check(len(regs) == N and set(by) == set(regs),
                  f"every one of {N} registrations has certificates ({len(by)})")
            after = [rid for rid, v in by.items() if any(at >= int(up_at) for at, _, _, _ in v)]
            check(len(after) == N, f"renewals resumed: {len(after)} of {N} renewed after the "
                  "restart")
            slack = ha.LEASE + ha.SLACK + OUTAGE + 2
            twice, missed = [], []
            for rid, v in by.items():
                for (a0, n0, _, _), (a1, _, _, _) in zip(v, v[1:]):
                    due = n0 - ha.AVAIL - 2 * ha.TICK
                    if a1 < due - 1:
                        twice.append((rid, a0, a1, due))
                    if a1 > due + slack:
                        missed.append((rid, a1, due))
                if v[-1][1] - ha.AVAIL - 2 * ha.TICK + slack < int(t_end) - 1:
                    missed.append((rid, "not renewed since", v[-1][0]))
            check(not twice, f"none renewed twice in one window ({twice[:3]})")
            check(not missed, f"none missed: each renewed by its due time + {slack} s "
                  f"(lease, a wave's slack, the outage) ({missed[:3]})")
            wrong = []
            for rid, target in regs.items():
                with open(target[4:] + "/svid.pem", "rb") as f:
                    cert = x509.load_pem_x509_certificate(f.read())
                if cert.serial_number != int(by[rid][-1][2], 16):
                    wrong.append(rid)
            check(not wrong, f"every target holds its last logged SVID ({wrong[:5]})")
            audit = {r[0] for r in ha.rows(pg, "SELECT serial FROM ca_audit")}
            logged = {x[2] for v in by.values() for x in v}
            check(logged <= audit, "every logged certificate is in the audit")
            print(f"figure: {len(issued)} certificates logged for {N} registrations in "
                  f"{int(t_end - t_start)} s across a {up_at - down_at:.1f} s PostgreSQL outage")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if ha.failures:
            for i in range(REPLICAS):
                try:
                    with open(f"{w}/serve{i}.log") as f:
                        print(f"--- serve{i}.log\n" + "".join(f.readlines()[-15:]))
                except OSError:
                    pass
        subprocess.run(["rm", "-rf", "--", w])
    if ha.failures:
        print(f"{len(ha.failures)} failure(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
