#!/usr/bin/env python3
"""`keybridge --local CONF migrate-store` / `keybridged migrate-store` (issue 13): real parts only,
Debian's PostgreSQL (pgserver.py), SoftHSM2, keybridged over mTLS driven with curl.

  - a SQLite store populated through keybridged's admin and client APIs (groups, clients,
    memberships, grants, secrets with several versions, metadata and expiry, a soft-deleted and a
    purged secret, content reads, an expiry notification marker, audit rows and anchors) is
    copied to PostgreSQL; keybridged started on PostgreSQL answers every admin and client read
    identically, its audit chain verifies and holds the source's events unchanged, and ids
    continue above the source's high-water marks (a purged id is not reused);
  - copied back from PostgreSQL (after more writes there) into a fresh SQLite file with
    `keybridged migrate-store`: every table equal row for row (SQL dumps of both), and keybridged
    serves it;
  - refusals, each changing nothing: a non-empty target; a tampered source (a byte flipped in a
    MAC'd column of a secret, a membership, a version and an audit row: the message names the
    table and row, the target stays empty); a missing source file, an unknown scheme, an
    unreachable database, the same store twice; a passfile with mode 0644, PGPASSWORD, a password
    in the URL; no --local.
"""
import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgserver import PgServer, available  # noqa
from test_keybridged_api import ADMIN, BUILD, KEYBRIDGED, PKI, Server, curl, make_hsm  # noqa

KB = os.path.join(BUILD, "keybridge")
READER = "spiffe://example.org/ns/app/sa/reader"
OTHER = "spiffe://example.org/ns/web/sa/other"
TABLES = ["groups", "clients", "secrets", "versions", "memberships", "grants", "fetch_log",
          "notify_sent", "audit_log", "audit_anchors", "store_state"]
ORDER = {"groups": "id", "clients": "id", "secrets": "id", "versions": "secret_id, version",
         "memberships": "client_id, group_id", "grants": "group_id, secret_id",
         "fetch_log": "client_id, secret_id", "notify_sent": "secret_id, version, window_secs",
         "audit_log": "seq", "audit_anchors": "seq", "store_state": "id"}
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures.append(what)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def api(srv, pki, cert, method, path, body=None, query=""):
    st, out = curl(srv, pki, cert, method, path, json.dumps(body) if body is not None else None,
                   query)
    return st, out


def set_url(srv, url):
    with open(srv.conf) as f:
        lines = f.read().split("\n")
    with open(srv.conf, "w") as f:
        f.write("\n".join(f"url = {url}" if ln.startswith("url = ") else ln for ln in lines))


def migrate(conf, src, dst, env=None, prog="keybridge"):
    if prog == "keybridge":
        cmd = [KB, "--local", conf, "migrate-store", "--from", src, "--to", dst]
    else:
        cmd = [KEYBRIDGED, "--config", conf, "migrate-store", "--from", src, "--to", dst]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env=env if env is not None else os.environ)
    return p.returncode, p.stdout + p.stderr


def audit_verify(conf):
    p = subprocess.run([KB, "--local", conf, "--as", ADMIN, "audit", "verify"],
                       capture_output=True, text=True)
    out = p.stdout + p.stderr
    return p.returncode == 0 and "audit chain: ok" in out, out


def snapshot(srv, pki, admin, reader):
    """Everything the APIs show (reads are audited: call it once per side)."""
    s = {}
    st, out = api(srv, pki, admin, "GET", "/v1/admin/secrets", query="deleted=1")
    secrets = json.loads(out)["secrets"] if st == 200 else []
    s["secrets"] = secrets
    for rec in secrets:
        n = rec["name"]
        _, info = api(srv, pki, admin, "GET", f"/v1/admin/secrets/{n}")
        _, vers = api(srv, pki, admin, "GET", f"/v1/admin/secrets/{n}/versions")
        s[f"info/{n}"] = json.loads(info)
        vl = json.loads(vers).get("versions", [])
        s[f"versions/{n}"] = vl
        if not rec.get("deleted_at"):
            for v in vl:
                _, c = api(srv, pki, admin, "GET", f"/v1/admin/secrets/{n}/content",
                           query=f"version={v['version']}")
                s[f"content/{n}/{v['version']}"] = json.loads(c).get("content")
            _, stt = api(srv, pki, admin, "GET", f"/v1/admin/secrets/{n}/status")
            s[f"status/{n}"] = json.loads(stt)
    _, g = api(srv, pki, admin, "GET", "/v1/admin/groups")
    s["groups"] = json.loads(g)
    for grp in s["groups"].get("groups", []):
        _, gi = api(srv, pki, admin, "GET", f"/v1/admin/groups/{grp['name']}")
        s[f"group/{grp['name']}"] = json.loads(gi)
    _, c = api(srv, pki, admin, "GET", "/v1/admin/clients")
    clients = json.loads(c).get("clients", [])
    for cl in clients:  # activity times move with these very requests
        cl.pop("last_seen", None)
        cl.pop("last_list_at", None)
    s["clients"] = clients
    st, lst = api(srv, pki, reader, "GET", "/v1/secrets")
    s["reader_list"] = json.loads(lst)["secrets"] if st == 200 else st
    st, au = api(srv, pki, admin, "GET", "/v1/admin/audit", query="limit=10000")
    s["audit"] = json.loads(au)["events"] if st == 200 else st
    return s


def sqlite_rows(path, table):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
    rows = con.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {ORDER[table]}").fetchall()
    con.close()
    return cols, [tuple(v.hex() if isinstance(v, bytes) else v for v in r) for r in rows]


def pg_rows(pg, db, table, cols):
    def col(c):
        v = f"encode({c}, 'hex')" if c in BYTEA else f"{c}::text"
        return f"CASE WHEN {c} IS NULL THEN 'NULL' ELSE {v} END"
    sel = ", ".join(col(c) for c in cols)
    order = ", ".join(f"t.{c.strip()}" for c in ORDER[table].split(","))
    out = pg.psql(f"SELECT {sel} FROM {table} t ORDER BY {order}", db=db)
    rows = []
    for ln in out.split("\n"):
        if ln == "":
            continue
        rows.append(tuple(ln.split("|")))
    return rows


BYTEA = {"mac", "latest_mac", "wrapped_key", "sealed", "checksum", "digest", "sig"}


def norm(rows):
    return [tuple("NULL" if v is None else str(v) for v in r) for r in rows]


def counts_pg(pg, db):
    return {t: int(pg.psql(f"SELECT count(*) FROM {t}", db=db).strip()) for t in TABLES}


def counts_sqlite(path):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    c = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    con.close()
    return c


def empty_counts(c):
    return all(v == 0 for t, v in c.items() if t != "store_state")


def main():
    if not available():
        print("SKIP: no PostgreSQL server binaries")
        return 0
    d = tempfile.mkdtemp(prefix="kbmig.")
    pg = PgServer()
    srv = None
    try:
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        os.makedirs(f"{d}/s")
        srv = Server(f"{d}/s", pki, hsm)
        src_db = f"{d}/s/kb.db"
        admin = pki.leaf("admin", f"URI:{ADMIN}")
        reader = pki.leaf("reader", f"URI:{READER}")
        srv.bootstrap()
        srv.start()

        # Populate through the real API.
        now = int(time.time())
        steps = [
            ("POST", "/v1/admin/groups", {"name": "app", "description": "the app"}),
            ("POST", "/v1/admin/groups", {"name": "web"}),
            ("POST", "/v1/admin/clients", {"spiffe_id": READER, "app_name": "reader"}),
            ("POST", "/v1/admin/clients", {"spiffe_id": OTHER, "description": "d"}),
            ("POST", "/v1/admin/memberships", {"client": READER, "group": "app"}),
            ("POST", "/v1/admin/memberships", {"client": OTHER, "group": "web"}),
            ("POST", "/v1/admin/secrets",
             {"name": "db-password", "content": b64("v1"), "description": "db",
              "metadata": {"mode": "0400"}, "owner_group": "app"}),
            ("PUT", "/v1/admin/secrets/db-password",
             {"content": b64("v2"), "metadata": {"mode": "0440"}, "expires_at": now + 86400}),
            ("PUT", "/v1/admin/secrets/db-password", {"content": b64("v3-\u00e9")}),
            ("POST", "/v1/admin/secrets", {"name": "api-key", "content": b64("k1"),
                                           "cloud_sync": True}),
            ("PUT", "/v1/admin/secrets/api-key", {"content": b64("k2")}),
            ("POST", "/v1/admin/secrets", {"name": "web-cert", "content": b64("c1")}),
            ("POST", "/v1/admin/secrets", {"name": "gone", "content": b64("g")}),
            ("POST", "/v1/admin/secrets", {"name": "purged", "content": b64("p")}),
            ("DELETE", "/v1/admin/secrets/gone", None),
            ("DELETE", "/v1/admin/secrets/purged", None),
            ("POST", "/v1/admin/secrets/purged/purge", None),
            ("POST", "/v1/admin/grants", {"group": "app", "secret": "db-password"}),
            ("POST", "/v1/admin/grants", {"group": "app", "secret": "api-key"}),
            ("POST", "/v1/admin/grants", {"group": "web", "secret": "web-cert"}),
            ("POST", "/v1/admin/secrets/api-key/rollback", {"version": 1}),
        ]
        for method, path, body in steps:
            st, out = api(srv, pki, admin, method, path, body)
            check(st in (200, 201), f"{method} {path}: {st} {out[:120]!r}")
        for name in ("db-password", "api-key"):
            st, _ = api(srv, pki, reader, "GET", f"/v1/secrets/{name}")
            check(st == 200, f"reader reads {name} (fetch log, audit)")
        st, rd = api(srv, pki, reader, "GET", "/v1/secrets/db-password", query="version=2")
        read_v2 = json.loads(rd) if st == 200 else st
        st, out = api(srv, pki, admin, "POST", "/v1/admin/audit/verify")
        check(st == 200 and json.loads(out).get("ok"), "source audit chain verifies")
        before = snapshot(srv, pki, admin, reader)
        check(len(before["secrets"]) == 4 and read_v2 != 404,
              f"source snapshot: {len(before['secrets'])} secrets")
        srv.stop()
        # An expiry notification marker and a signed anchor (the rows keybridged's timers make).
        con = sqlite3.connect(src_db)
        con.execute("INSERT INTO notify_sent(secret_id, version, window_secs, sent_at) "
                    "SELECT id, 2, 86400, 1700000000 FROM secrets WHERE name = 'db-password'")
        con.commit()
        con.close()
        src_counts = counts_sqlite(src_db)
        print(f"source rows: {src_counts}")
        purged_max = sqlite3.connect(src_db).execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'secrets'").fetchone()[0]

        # --- refusals before anything is copied ---
        rc, out = migrate(srv.conf, src_db, pg.url)
        check(rc == 2 or rc == 3, f"a bare path is not a store URL (exit {rc}): {out.strip()}")
        rc, out = migrate(srv.conf, f"sqlite:{d}/nope.db", pg.url)
        check(rc != 0 and "no SQLite database" in out and not os.path.exists(f"{d}/nope.db"),
              f"missing source file refused, not created (exit {rc}): {out.strip()[-160:]}")
        rc, out = migrate(srv.conf, f"sqlite:{src_db}", "mysql://kb@127.0.0.1/kb")
        check(rc != 0 and "not a store URL" in out, f"unknown scheme refused: {out.strip()}")
        rc, out = migrate(srv.conf, f"sqlite:{src_db}", f"sqlite:{d}/s/../s/kb.db")
        check(rc != 0 and "same store" in out, f"same store refused: {out.strip()}")
        rc, out = migrate(srv.conf, f"sqlite:{src_db}",
                          "postgresql://kb@127.0.0.1:1/kb?connect_timeout=2")
        check(rc != 0 and "PostgreSQL" in out, f"unreachable database refused: {out.strip()[-200:]}")
        loose = f"{d}/loose-passfile"
        shutil.copy(pg.passfile, loose)
        os.chmod(loose, 0o644)
        rc, out = migrate(srv.conf, f"sqlite:{src_db}", pg.url.replace(pg.passfile, loose))
        check(rc == 3 and "passfile" in out and "0600" in out,
              f"a 0644 passfile refused (exit {rc}): {out.strip()[-200:]}")
        env = dict(os.environ, PGPASSWORD="x")
        rc, out = migrate(srv.conf, f"sqlite:{src_db}", pg.url, env=env)
        check(rc == 3 and "PGPASSWORD" in out, f"PGPASSWORD refused (exit {rc})")
        rc, out = migrate(srv.conf, f"sqlite:{src_db}",
                          pg.url.replace("postgresql://kb@", "postgresql://kb:hunter2@"))
        check(rc == 3 and "hunter2" not in out, f"a password in the URL refused, not echoed ({rc})")
        p = subprocess.run([KB, "migrate-store", "--from", f"sqlite:{src_db}", "--to", pg.url],
                           capture_output=True, text=True)
        check(p.returncode == 2 and "--local" in p.stderr, "without --local: usage error")
        check(pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                      db="kb").strip() == "0", "refusals created nothing in the target database")

        # --- tampered sources: refused, named, target left empty ---
        tampers = [
            ("secrets", "UPDATE secrets SET name = 'db-passwore' WHERE name = 'db-password'",
             "secrets (id="),
            ("memberships", "UPDATE memberships SET mac = CAST(x'00' || substr(mac, 2) AS BLOB) "
             "WHERE rowid = (SELECT min(rowid) FROM memberships)",
             "memberships (client_id=1 group_id=1): row MAC does not verify"),
            ("clients", "UPDATE clients SET admin = x'31' WHERE id = 1",
             "clients (id=1): a value does not have its column's type"),
            ("versions", "UPDATE versions SET content_len = content_len + 1 "
             "WHERE version = 2", "versions (secret_id="),
            ("audit_log", "UPDATE audit_log SET object = 'x' || object WHERE seq = 3",
             "audit"),
        ]
        for i, (what, sql, want) in enumerate(tampers):
            bad = f"{d}/tampered{i}.db"
            shutil.copy(src_db, bad)
            con = sqlite3.connect(bad)
            con.execute(sql)
            con.commit()
            con.close()
            if i == 0:
                url = pg.new_database("tamper0")
                rc, out = migrate(srv.conf, f"sqlite:{bad}", url)
                tc = counts_pg(pg, "tamper0") if pg.psql(
                    "SELECT count(*) FROM pg_tables WHERE tablename = 'secrets'",
                    db="tamper0").strip() == "1" else {}
                check(rc != 0 and want in out and empty_counts(tc),
                      f"tampered {what} refused into PostgreSQL, target empty ({tc}): "
                      f"{out.strip()[-220:]}")
            else:
                tgt = f"{d}/tampered{i}-target.db"
                rc, out = migrate(srv.conf, f"sqlite:{bad}", f"sqlite:{tgt}")
                tc = counts_sqlite(tgt) if os.path.exists(tgt) else {}
                check(rc != 0 and want in out and (not tc or empty_counts(tc)),
                      f"tampered {what} refused, target empty: {out.strip()[-220:]}")

        # --- SQLite -> PostgreSQL ---
        rc, out = migrate(srv.conf, f"sqlite:{src_db}", pg.url)
        check(rc == 0 and "verified" in out, f"sqlite -> postgresql (exit {rc}): {out.strip()}")
        check("db-password" not in out and "v1" not in out.split("verified")[0].split("rows")[-1],
              "the report names no secret")
        pc = counts_pg(pg, "kb")
        check(pc == src_counts, f"row counts equal: {pc} vs {src_counts}")
        for t in TABLES:
            cols, srows = sqlite_rows(src_db, t)
            prows = pg_rows(pg, "kb", t, cols)
            diff = [(a, b) for a, b in zip(prows, norm(srows)) if a != b][:1]
            check(prows == norm(srows), f"table {t} equal row for row {diff}")

        # A second run into the (now non-empty) target is refused and changes nothing.
        dump = {t: pg_rows(pg, "kb", t, sqlite_rows(src_db, t)[0]) for t in TABLES}
        rc, out = migrate(srv.conf, f"sqlite:{src_db}", pg.url)
        check(rc != 0 and "not empty" in out, f"non-empty target refused: {out.strip()[-200:]}")
        check(all(pg_rows(pg, "kb", t, sqlite_rows(src_db, t)[0]) == dump[t] for t in TABLES),
              "non-empty target unchanged")

        # keybridged on PostgreSQL serves the same store.
        set_url(srv, pg.url)
        srv.start()
        after = snapshot(srv, pki, admin, reader)
        for k in before:
            if k == "audit":
                continue
            check(after.get(k) == before[k], f"{k} identical on PostgreSQL")
        top = max(e["seq"] for e in before["audit"])
        check([e for e in after["audit"] if e["seq"] <= top] == before["audit"],
              f"the {len(before['audit'])} source audit events identical on PostgreSQL")
        st, rd = api(srv, pki, reader, "GET", "/v1/secrets/db-password", query="version=2")
        check(st == 200 and json.loads(rd) == read_v2, "the reader reads version 2 identically")
        okv, vout = audit_verify(srv.conf)
        check(okv, f"audit chain verifies on PostgreSQL: {vout.strip()[-160:]}")
        st, out = api(srv, pki, admin, "POST", "/v1/admin/secrets",
                      {"name": "after-move", "content": b64("new")})
        check(st == 201, f"writes work on PostgreSQL: {st}")
        nid = int(pg.psql("SELECT id FROM secrets WHERE name = 'after-move'", db="kb").strip())
        check(nid > purged_max, f"ids continue above the source's high-water mark ({nid} > "
                                f"{purged_max}: a purged id is never reused)")
        api(srv, pki, admin, "PUT", "/v1/admin/secrets/db-password", {"content": b64("v4")})
        srv.stop()

        # --- PostgreSQL -> SQLite (keybridged migrate-store), into a fresh file ---
        back = f"{d}/back.db"
        rc, out = migrate(srv.conf, pg.url, f"sqlite:{back}", prog="keybridged")
        check(rc == 0 and "verified" in out, f"postgresql -> sqlite (exit {rc}): {out.strip()}")
        bc = counts_sqlite(back)
        check(bc == counts_pg(pg, "kb"), f"row counts equal: {bc}")
        for t in TABLES:
            cols, brows = sqlite_rows(back, t)
            check(pg_rows(pg, "kb", t, cols) == norm(brows), f"table {t} equal row for row (back)")
        con = sqlite3.connect(back)
        seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'secrets'").fetchone()[0]
        con.close()
        check(seq >= nid, f"SQLite id high-water mark copied ({seq})")
        set_url(srv, f"sqlite:{back}")
        srv.start()
        st, out = api(srv, pki, reader, "GET", "/v1/secrets/db-password")
        check(st == 200 and base64.b64decode(json.loads(out)["content"]) == b"v4",
              "keybridged on the copied-back SQLite file serves the latest version")
        st, out = api(srv, pki, admin, "POST", "/v1/admin/audit/verify")
        check(st == 200 and json.loads(out).get("ok"), "audit chain verifies on the copy")
        srv.stop()
        rc, out = migrate(srv.conf, pg.url, f"sqlite:{back}")
        check(rc != 0 and "not empty" in out, "non-empty SQLite target refused")
    finally:
        if srv is not None:
            srv.stop()
        pg.close()
        if not failures:
            shutil.rmtree(d, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s); files kept in {d}", file=sys.stderr)
        return 1
    print("all migrate-store checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
