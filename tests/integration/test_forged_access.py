#!/usr/bin/env python3
"""A forged access row answers like a missing name (issue 10 item 6), against the real keybridged.

An attacker with write access to keybridged's SQLite file forges a membership (made-up MAC), a
grant (MAC copied from another grant) or a secret row (a soft-deleted secret un-deleted). A read
through the forged row must be answered byte-for-byte like a read of a name that does not exist,
on the native (/v1/secrets/NAME) and Keywhiz (/secret/NAME) routes, and the tampering must be
logged (secret_access_tampered) and audited (secret.read, result "tampered"), with no secret in
either. The periodic whole-database check is off here ([store] integrity_check_interval = 0), so
this is the per-read check; with it on, the state digest (rollback.md) refuses the whole database
at the next check.
"""
import os
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_keybridged_api import ADMIN, PKI, Server, curl, make_hsm  # noqa
from test_store_rollback import api, check, failures  # noqa

APP = "spiffe://example.org/ns/pay/sa/app"
OUT = "spiffe://example.org/ns/pay/sa/outsider"
CONTENT = "Zm9yZ2VkLWNvbnRlbnQtOTk="  # "forged-content-99"


def main():
    d = tempfile.mkdtemp(prefix="kbforged.")
    srv = None
    try:
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        srv = Server(d, pki, hsm)
        conf = open(srv.conf).read().replace("[store]\n",
                                              "[store]\nintegrity_check_interval = 0\n")
        open(srv.conf, "w").write(conf)
        db = f"{d}/kb.db"
        srv.bootstrap()
        srv.start()
        admin = pki.leaf("admin", f"URI:{ADMIN}")
        certs = {APP: pki.leaf("app", f"URI:{APP}"), OUT: pki.leaf("outsider", f"URI:{OUT}")}
        for g in ("g", "g2"):
            api(srv, pki, admin, "POST", "/v1/admin/groups", {"name": g}, want=201)
        for who, g in ((APP, "g"), (OUT, "g2")):
            api(srv, pki, admin, "POST", "/v1/admin/clients", {"spiffe_id": who}, want=201)
            api(srv, pki, admin, "POST", "/v1/admin/memberships", {"client": who, "group": g},
                want=201)
        # s-member: granted to g, read by the outsider through a forged membership of g.
        # s-grant: granted to g2 only, read by app through a forged grant to g.
        # s-undeleted: granted to g, deleted, then un-deleted in the file.
        for name, g in (("s-member", "g"), ("s-grant", "g2"), ("s-undeleted", "g")):
            api(srv, pki, admin, "POST", "/v1/admin/secrets", {"name": name, "content": CONTENT},
                want=201)
            api(srv, pki, admin, "POST", "/v1/admin/grants", {"group": g, "secret": name},
                want=201)
        api(srv, pki, admin, "DELETE", "/v1/admin/secrets/s-undeleted", want=200)
        for who, name in ((OUT, "s-member"), (APP, "s-grant"), (APP, "s-undeleted")):
            st, _ = curl(srv, pki, certs[who], "GET", f"/v1/secrets/{name}")
            check(st == 404, f"{name}: not readable before the forgery ({st})")

        c = sqlite3.connect(db)
        g = c.execute("SELECT id FROM groups WHERE name = 'g'").fetchone()[0]
        out_id = c.execute("SELECT id FROM clients WHERE spiffe_id = ?", (OUT,)).fetchone()[0]
        c.execute("INSERT INTO memberships(client_id, group_id, mac) VALUES (?, ?, "
                  "randomblob(32))", (out_id, g))
        c.execute("INSERT INTO grants(group_id, secret_id, mac) SELECT ?, "
                  "(SELECT id FROM secrets WHERE name = 's-grant'), mac FROM grants "
                  "WHERE group_id = ? LIMIT 1", (g, g))
        c.execute("UPDATE secrets SET deleted_at = 0 WHERE name = 's-undeleted'")
        c.commit()
        c.close()

        for who, name in ((OUT, "s-member"), (APP, "s-grant"), (APP, "s-undeleted")):
            # A missing name of the same length, so that nothing but the outcome may differ.
            missing = "x" * len(name)
            for route in ("/v1/secrets/{}", "/secret/{}"):
                got = curl(srv, pki, certs[who], "GET", route.format(name))
                ref = curl(srv, pki, certs[who], "GET", route.format(missing))
                check(ref[0] == 404, f"{route}: a missing name is 404 ({ref[0]})")
                check(got == ref, f"{name} via {route.format('NAME')}: byte-identical to a "
                                  f"missing name ({got[0]} {got[1][:120]!r} vs {ref[0]} "
                                  f"{ref[1][:120]!r})")
        # Access that was not forged still works.
        st, _ = curl(srv, pki, certs[APP], "GET", "/v1/secrets/s-member")
        check(st == 200, f"app still reads s-member ({st})")

        srv.stop()
        log = open(srv.log.name).read()
        for name in ("s-member", "s-grant", "s-undeleted"):
            check(f'"event":"secret_access_tampered"' in log and f'"secret":"{name}"' in log,
                  f"{name}: tampering logged")
        for table in ("memberships", "grants", "secrets"):
            check(f'"table":"{table}"' in log, f"log names table {table}")
        check(CONTENT not in log and "forged-content-99" not in log, "no secret in the log")
        c = sqlite3.connect(db)
        rows = c.execute("SELECT identity, object, result FROM audit_log WHERE "
                         "action = 'secret.read' AND result = 'tampered'").fetchall()
        c.close()
        for who, name in ((OUT, "s-member"), (APP, "s-grant"), (APP, "s-undeleted")):
            check((who, name, "tampered") in rows, f"{name}: audit row (tampered) for {who}")
    finally:
        if srv:
            srv.stop()
    if failures:
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("all ok")


if __name__ == "__main__":
    main()
