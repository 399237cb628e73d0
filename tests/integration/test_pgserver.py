#!/usr/bin/env python3
"""The PostgreSQL test harness (pgserver.py) itself: the server runs as an unprivileged user,
listens on 127.0.0.1 only (random port) with its socket in a private 0700 directory, the role's
password is only in a 0600 passfile (a URL without it is refused), data survives a clean restart
and a crash (SIGKILL) on the same port, and everything is removed on close."""
import os
import socket
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgserver import PgServer, available  # noqa

failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


def psql_url(url, sql):
    return subprocess.run(["psql", "-X", "-A", "-t", url, "-c", sql], capture_output=True,
                          text=True)


def main():
    if not available():
        print("FAIL: no PostgreSQL binaries (scripts/deps.sh installs postgresql)")
        return 1
    with PgServer() as pg:
        base = pg.base
        check(stat.S_IMODE(os.stat(pg.passfile).st_mode) == 0o600, "passfile is 0600")
        check(stat.S_IMODE(os.stat(pg.sockdir).st_mode) == 0o700, "socket dir is 0700")
        who = pg.psql("SELECT usename FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        check(who.strip() == "postgres", "superuser through the private socket")
        owner = os.stat(pg.data).st_uid
        check(os.geteuid() != 0 or owner != 0, f"data directory not owned by root (uid {owner})")
        la = pg.psql("SHOW listen_addresses").strip()
        check(la == "127.0.0.1", f"listen_addresses = {la}")
        r = psql_url(pg.url, "SELECT current_user")
        check(r.returncode == 0 and r.stdout.strip() == "kb", f"role kb via URL: {r.stderr}")
        nopass = pg.url.split("?")[0] + "?sslmode=disable&passfile=/nonexistent"
        r = psql_url(nopass, "SELECT 1")
        check(r.returncode != 0, "no password, no login (scram over TCP)")
        r = psql_url(pg.url, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
        check(r.returncode == 0, "create a table")
        port = pg.port
        pg.stop()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            check(False, "stopped server refuses connections")
        except OSError:
            check(True, "stopped server refuses connections")
        pg.start()
        check(pg.port == port, "restart keeps the port")
        check(psql_url(pg.url, "SELECT v FROM t").stdout.strip() == "42", "data kept over restart")
        psql_url(pg.url, "INSERT INTO t VALUES (43)")
        pg.stop("kill")
        pg.start()
        r = psql_url(pg.url, "SELECT count(*) FROM t")
        check(r.stdout.strip() == "2", f"committed data kept over a crash: {r.stdout!r}")
        url2 = pg.new_database("other")
        check(psql_url(url2, "SELECT 1").returncode == 0, "second database")
    check(not os.path.exists(base), "temporary directory removed")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
