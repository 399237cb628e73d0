#!/usr/bin/env python3
"""kill -9 never leaves a change without its audit row (issue 10 item 3), against the real
keybridged (SQLite + SoftHSM2).

Admin workers drive every kind of change over the admin API (secret create / put / update with a
cloud_sync toggle / delete / restore, grants, memberships, client create / update, group create)
while clients read secrets, and a third party holds the database's write lock now and then (as a
slow disk or a checkpoint would), which stalls whatever the server does next. keybridged is
killed with SIGKILL at a random point, several rounds, restarted each time. After every kill the
database must be explained by its audit log, and by nothing else:

  - every secret version present has its secret.create/secret.put row (same version), every
    secret's latest_version is the highest audited one and its deleted flag is the last audited
    delete/restore; the number of audited secret.update / client.update rows equals the number of
    updates the row shows (each update bumps a counter in the description);
  - every grant / membership present is one whose last audited change is an add, and every
    absent one whose last audited change is a remove (or that never existed);
  - every client and group present has its create row;
  - every fetch record has its secret.read row (client, secret, version);
  - nothing acknowledged to a worker is lost (each object's state is that after its last
    acknowledged change, or after the one in flight at the kill);
  - `keybridge audit verify` passes and PRAGMA integrity_check is ok.

Before the change and its audit row shared one transaction, a stall between the two commits
followed by the kill left live data with no audit row, and this test failed in the first rounds.
KB_CRASH_SEED replays a run; KB_CRASH_ROUNDS sets the number of rounds (default 6).
"""
import base64
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_keybridged_api import ADMIN, BUILD, PKI, Conn, Server, check, failures, make_hsm  # noqa

ROUNDS = int(os.environ.get("KB_CRASH_ROUNDS", "6"))
SEED = int(os.environ.get("KB_CRASH_SEED", str(random.randrange(1 << 30))))
WORKERS = 3
READERS = ["spiffe://example.org/ns/read/sa/r%d" % i for i in range(2)]


def b64(s):
    return base64.b64encode(s.encode()).decode()


class Worker:
    """Owns its objects (names prefixed w<i>-), so its acknowledged changes have one order."""

    def __init__(self, i, rng):
        self.i = i
        self.rng = rng
        self.p = f"w{i}"
        # name -> expected state after the last acknowledged change; inflight: the change sent
        # when the server died (it may or may not have been applied).
        self.secrets = {}   # name: {"latest", "deleted", "upd"}
        self.groups = set()
        self.clients = {}   # spiffe: {"id", "upd", "enabled"}
        self.links = {}     # ("grant"|"membership", group, other): bool present
        self.n = 0
        self.inflight = None
        self.acked = 0

    def op(self):
        """(method, path, body, apply-on-ack callable, description)."""
        r = self.rng
        p = self.p
        self.n += 1
        live = [s for s, v in self.secrets.items() if not v["deleted"]]
        dead = [s for s, v in self.secrets.items() if v["deleted"]]
        choice = r.random()
        if not self.groups or choice < 0.05:
            g = f"{p}-g{self.n}"
            return ("POST", "/v1/admin/groups", {"name": g}, lambda: self.groups.add(g), g)
        if len(self.secrets) < 3 or choice < 0.18:
            s = f"{p}-s{self.n}"

            def ok():
                self.secrets[s] = {"latest": 1, "deleted": False, "upd": 0}
            return ("POST", "/v1/admin/secrets", {"name": s, "content": b64(f"c-{s}-1")}, ok, s)
        if len(self.clients) < 2 or choice < 0.25:
            c = f"spiffe://example.org/ns/{p}/sa/c{self.n}"

            def ok(out=None):
                self.clients[c] = {"upd": 0, "enabled": True}
            return ("POST", "/v1/admin/clients", {"spiffe_id": c}, ok, c)
        if choice < 0.45 and live:
            s = r.choice(live)

            def ok():
                self.secrets[s]["latest"] += 1
            return ("PUT", f"/v1/admin/secrets/{s}", {"content": b64(f"c-{s}-{self.n}")}, ok, s)
        if choice < 0.55 and live:
            s = r.choice(live)
            upd = self.secrets[s]["upd"] + 1

            def ok():
                self.secrets[s]["upd"] = upd
            return ("PATCH", f"/v1/admin/secrets/{s}",
                    {"description": f"upd{upd}", "cloud_sync": bool(upd % 2)}, ok, s)
        if choice < 0.60 and live:
            s = r.choice(live)

            def ok():
                self.secrets[s]["deleted"] = True
            return ("DELETE", f"/v1/admin/secrets/{s}", None, ok, s)
        if choice < 0.64 and dead:
            s = r.choice(dead)

            def ok():
                self.secrets[s]["deleted"] = False
            return ("POST", f"/v1/admin/secrets/{s}/restore", None, ok, s)
        if choice < 0.72 and self.clients:
            c = r.choice(sorted(self.clients))
            st = self.clients[c]
            upd = st["upd"] + 1
            en = not st["enabled"]

            def ok():
                st["upd"] = upd
                st["enabled"] = en
            return ("PATCH", f"/v1/admin/clients/{st['id']}",
                    {"enabled": en, "description": f"upd{upd}"}, ok, c)
        # grants and memberships: toggle one
        g = r.choice(sorted(self.groups))
        if r.random() < 0.5 and live:
            kind, other, path = "grant", r.choice(live), "/v1/admin/grants"
            body = {"group": g, "secret": other}
        elif self.clients:
            kind, other, path = "membership", r.choice(sorted(self.clients)), \
                "/v1/admin/memberships"
            body = {"group": g, "client": other}
        else:
            return self.op()
        key = (kind, g, other)
        present = self.links.get(key, False)

        def ok():
            self.links[key] = not present
        return ("DELETE" if present else "POST", path, body, ok, f"{g} {other}")

    def resync(self, db):
        """After a round: the database is the truth (the change in flight may have landed)."""
        c = sqlite3.connect(db)
        p = self.p + "-"
        self.secrets = {n: {"latest": lv, "deleted": bool(d),
                            "upd": int(desc[3:]) if desc.startswith("upd") else 0}
                        for n, lv, d, desc in c.execute(
                            "SELECT name, latest_version, deleted_at, description FROM secrets")
                        if n.startswith(p)}
        self.clients = {s: {"id": i, "enabled": bool(e),
                            "upd": int(desc[3:]) if desc.startswith("upd") else 0}
                        for i, s, e, desc in c.execute(
                            "SELECT id, spiffe_id, enabled, description FROM clients")
                        if f"/ns/{self.p}/" in s}
        self.groups = {n for (n,) in c.execute("SELECT name FROM groups") if n.startswith(p)}
        self.links = {}
        for g, s in c.execute("SELECT g.name, s.name FROM grants x JOIN groups g ON g.id = "
                              "x.group_id JOIN secrets s ON s.id = x.secret_id"):
            if g.startswith(p):
                self.links[("grant", g, s)] = True
        for g, cl in c.execute("SELECT g.name, c.spiffe_id FROM memberships x JOIN groups g ON "
                               "g.id = x.group_id JOIN clients c ON c.id = x.client_id"):
            if g.startswith(p):
                self.links[("membership", g, cl)] = True
        c.close()
        self.inflight = None

    def run(self, srv, pki, cert, stop):
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = Conn(srv, pki, cert)
                m, path, body, ok, _ = op = self.op()
                self.inflight = op
                st, out = conn.req(m, path, body)
                if 200 <= st < 300:
                    if m == "POST" and path == "/v1/admin/clients":
                        cid = json.loads(out)["id"]
                        ok()
                        self.clients[body["spiffe_id"]]["id"] = cid
                    else:
                        ok()
                    self.acked += 1
                self.inflight = None
            except Exception:
                # The server died mid-request (or refused a connection): stop here; the change
                # stays in flight.
                return


def reader(srv, pki, cert, names, stop, rng):
    conn = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = Conn(srv, pki, cert)
            conn.req("GET", "/v1/secrets/" + rng.choice(names))
        except Exception:
            return


def locker(db, stop, rng, kill):
    """Take the database write lock as soon as it is free, hold it a while, let go; on `kill`,
    SIGKILL the server while holding it (whatever the server does next is stalled)."""
    c = sqlite3.connect(db, timeout=0, isolation_level=None)
    while not stop.is_set():
        try:
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            continue  # spin: we want the lock in the gap between two of the server's commits
        if kill.is_set():
            kill.clear()
            kill.proc.send_signal(signal.SIGKILL)
            kill.proc.wait()
            kill.done.set()
        time.sleep(rng.uniform(0.01, 0.08))
        c.execute("COMMIT")
        time.sleep(rng.uniform(0.02, 0.06))
    c.close()


def audit_rows(c):
    return c.execute("SELECT seq, identity, action, object, version, result FROM audit_log "
                     "ORDER BY seq").fetchall()


def check_db(db, workers, rnd):
    c = sqlite3.connect(db)
    ok_rows = [r for r in audit_rows(c) if r[5] == "ok"]
    tag = f"round {rnd}"
    check(c.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"{tag}: integrity_check")
    by_obj = {}
    for seq, ident, action, obj, ver, _ in ok_rows:
        by_obj.setdefault(obj, []).append((action, ver))
    missing = []

    # Secrets and versions.
    for sid, name, latest, deleted_at, desc in c.execute(
            "SELECT id, name, latest_version, deleted_at, description FROM secrets"):
        if not name.startswith("w"):
            continue
        ev = by_obj.get(name, [])
        vers = {v for a, v in ev if a in ("secret.create", "secret.put")}
        have = {v for (v,) in c.execute("SELECT version FROM versions WHERE secret_id = ?",
                                        (sid,))}
        for v in sorted(have - vers):
            missing.append(f"{name} version {v}")
        if vers and latest != max(vers):
            missing.append(f"{name} latest_version {latest} vs audited {max(vers)}")
        life = [a for a, _ in ev if a in ("secret.delete", "secret.restore")]
        if bool(deleted_at) != (bool(life) and life[-1] == "secret.delete"):
            missing.append(f"{name} deleted={bool(deleted_at)} vs audited {life[-1:]}")
        upd = int(desc[3:]) if desc.startswith("upd") else 0
        n = sum(1 for a, _ in ev if a == "secret.update")
        if n != upd:
            missing.append(f"{name}: {upd} updates, {n} secret.update rows")
    # Clients.
    for cid, spiffe, desc in c.execute("SELECT id, spiffe_id, description FROM clients"):
        if "/ns/w" not in spiffe:
            continue
        ev = [a for a, _ in by_obj.get(spiffe, [])]
        if "client.create" not in ev:
            missing.append(f"client {spiffe} has no client.create row")
        upd = int(desc[3:]) if desc.startswith("upd") else 0
        if ev.count("client.update") != upd:
            missing.append(f"{spiffe}: {upd} updates, {ev.count('client.update')} rows")
    # Groups.
    for (name,) in c.execute("SELECT name FROM groups"):
        if name.startswith("w") and "group.create" not in [a for a, _ in by_obj.get(name, [])]:
            missing.append(f"group {name} has no group.create row")
    # Grants and memberships: present iff the last audited change is an add.
    present = set()
    for g, s in c.execute("SELECT g.name, s.name FROM grants x JOIN groups g ON g.id = "
                          "x.group_id JOIN secrets s ON s.id = x.secret_id"):
        present.add(("grant", f"{g} {s}"))
    for g, cl in c.execute("SELECT g.name, c.spiffe_id FROM memberships x JOIN groups g ON "
                           "g.id = x.group_id JOIN clients c ON c.id = x.client_id"):
        present.add(("membership", f"{g} {cl}"))
    audited = set()
    for obj, ev in by_obj.items():
        for kind in ("grant", "membership"):
            last = [a for a, _ in ev if a in (f"{kind}.add", f"{kind}.remove")]
            if last and last[-1] == f"{kind}.add":
                audited.add((kind, obj))
    for kind, obj in sorted(present ^ audited):
        if obj.startswith("w"):
            missing.append(f"{kind} {obj}: present={(kind, obj) in present}, "
                           f"audited={(kind, obj) in audited}")
    # Fetch records.
    reads = {(i, o, v) for _, i, a, o, v, _ in ok_rows if a == "secret.read"}
    for spiffe, name, ver in c.execute(
            "SELECT c.spiffe_id, s.name, f.version FROM fetch_log f JOIN clients c ON "
            "c.id = f.client_id JOIN secrets s ON s.id = f.secret_id"):
        if (spiffe, name, ver) not in reads:
            missing.append(f"fetch {spiffe} {name} v{ver} has no secret.read row")

    check(not missing, f"{tag}: every live change has its audit row "
                       f"({len(ok_rows)} ok rows){': ' + '; '.join(missing[:6]) if missing else ''}")

    # Nothing acknowledged is lost.
    lost = []
    sec = {n: (lv, bool(d), desc) for n, lv, d, desc in
           c.execute("SELECT name, latest_version, deleted_at, description FROM secrets")}
    cls = {s: (bool(e), desc) for s, e, desc in
           c.execute("SELECT spiffe_id, enabled, description FROM clients")}
    grp = {n for (n,) in c.execute("SELECT name FROM groups")}
    for w in workers:
        fl = w.inflight[4] if w.inflight else None
        for name, st in w.secrets.items():
            if name not in sec:
                lost.append(f"secret {name}")
                continue
            lv, d, desc = sec[name]
            upd = int(desc[3:]) if desc.startswith("upd") else 0
            exact = (lv, d, upd) == (st["latest"], st["deleted"], st["upd"])
            if not exact and name != fl:
                lost.append(f"secret {name}: db {(lv, d, upd)} acked "
                            f"{(st['latest'], st['deleted'], st['upd'])}")
        for spiffe, st in w.clients.items():
            if spiffe not in cls:
                lost.append(f"client {spiffe}")
            elif (cls[spiffe][0] != st["enabled"]) and spiffe != fl:
                lost.append(f"client {spiffe} enabled")
        for g in w.groups:
            if g not in grp:
                lost.append(f"group {g}")
        for (kind, g, other), want in w.links.items():
            obj = f"{g} {other}"
            if ((kind, obj) in present) != want and obj != fl:
                lost.append(f"{kind} {obj}")
    check(not lost, f"{tag}: nothing acknowledged is lost "
                    f"({sum(w.acked for w in workers)} acks){': ' + '; '.join(lost[:6]) if lost else ''}")
    c.close()
    return len(missing) == 0


def audit_verify(srv):
    p = subprocess.run([os.path.join(BUILD, "keybridge"), "--local", srv.conf, "--as", ADMIN,
                        "audit", "verify"], capture_output=True, text=True)
    return p.returncode == 0 and "audit chain: ok" in p.stdout + p.stderr, p.stdout + p.stderr


def main():
    print(f"seed {SEED} (KB_CRASH_SEED replays), {ROUNDS} rounds")
    rng = random.Random(SEED)
    d = tempfile.mkdtemp(prefix="kbauditcrash.")
    srv = None
    try:
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        srv = Server(d, pki, hsm)
        db = f"{d}/kb.db"
        srv.bootstrap()
        srv.start()
        admin = pki.leaf("admin", f"URI:{ADMIN}")
        a = Conn(srv, pki, admin)
        check(a.req("POST", "/v1/admin/groups", {"name": "readers"})[0] == 201, "group readers")
        names = []
        for i in range(4):
            n = f"r{i}"
            names.append(n)
            a.req("POST", "/v1/admin/secrets", {"name": n, "content": b64(f"read-{i}")})
            a.req("POST", "/v1/admin/grants", {"group": "readers", "secret": n})
        rcerts = []
        for i, r in enumerate(READERS):
            a.req("POST", "/v1/admin/clients", {"spiffe_id": r})
            a.req("POST", "/v1/admin/memberships", {"client": r, "group": "readers"})
            rcerts.append(pki.leaf(f"r{i}", f"URI:{r}"))
        a.close()
        workers = [Worker(i, random.Random(rng.random())) for i in range(WORKERS)]
        stalled = 0
        for rnd in range(1, ROUNDS + 1):
            if srv.proc is None or srv.proc.poll() is not None:
                srv.start()
            for w in workers:
                w.inflight = None
            stop = threading.Event()
            kill = threading.Event()
            kill.proc = srv.proc
            kill.done = threading.Event()
            ts = [threading.Thread(target=w.run, args=(srv, pki, admin, stop)) for w in workers]
            ts += [threading.Thread(target=reader, args=(srv, pki, c, names, stop,
                                                          random.Random(rng.random())))
                   for c in rcerts]
            lk = threading.Thread(target=locker, args=(db, stop, random.Random(rng.random()),
                                                       kill))
            for t in ts + [lk]:
                t.start()
            time.sleep(rng.uniform(0.6, 1.6))
            if rng.random() < 0.7:
                kill.set()  # kill while the third party holds the write lock
                if not kill.done.wait(5):
                    srv.proc.send_signal(signal.SIGKILL)
                else:
                    stalled += 1
            else:
                srv.proc.send_signal(signal.SIGKILL)  # anywhere
            srv.proc.wait()
            stop.set()
            for t in ts + [lk]:
                t.join(15)
            check(srv.proc.returncode == -signal.SIGKILL, f"round {rnd}: killed with SIGKILL")
            check_db(db, workers, rnd)
            for w in workers:
                w.resync(db)
            okv, out = audit_verify(srv)
            check(okv, f"round {rnd}: keybridge audit verify ({out.strip()[:200]})")
        # A clean restart serves and changes after the last kill, and verifies.
        srv.start()
        a = Conn(srv, pki, admin)
        st, _ = a.req("POST", "/v1/admin/secrets", {"name": "after", "content": b64("x")})
        check(st == 201, f"restart after {ROUNDS} kills serves changes ({st})")
        a.close()
        srv.stop()
        okv, out = audit_verify(srv)
        check(okv, "final keybridge audit verify")
        print(f"{ROUNDS} rounds, {stalled} killed while the write lock was held, "
              f"{sum(w.acked for w in workers)} acknowledged changes")
    finally:
        if srv:
            srv.stop()
    if failures:
        print(f"{len(failures)} failure(s); seed {SEED}", file=sys.stderr)
        sys.exit(1)
    print("all ok")


if __name__ == "__main__":
    main()
