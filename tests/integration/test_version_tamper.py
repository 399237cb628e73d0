#!/usr/bin/env python3
"""Version rows under row MACs (issue 10 item 2) against the real keybridged with SoftHSM2.

An attacker with write access to keybridged's SQLite file edits what a version row serves besides
its sealed content: the metadata that sync tools apply (mode, owner, filename), the checksum, the
expiry, or the secret's latest_version rolled back to an older, authentic version. Each edit must
be refused exactly like an edit of the ciphertext: same status and body on the client API (native
and Keywhiz routes), same exit code and message from `keybridge read`, the secret left out of the
client's listing, a store_integrity_failure log line naming the table, and no secret in the log.
"""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_keybridged_api import ADMIN, BUILD, PKI, SERVER_ID, Server, curl, make_hsm  # noqa
from test_store_rollback import api, check, failures  # noqa

KB = os.path.join(BUILD, "keybridge")
APP = "spiffe://example.org/ns/pay/sa/app"
CONTENT = "c2VjcmV0LXZhbHVlLTQy"  # "secret-value-42"

# Each case: the SQL run on the file (:id is the secret's id). "ciphertext" is the reference.
EDITS = {
    # The last byte (GCM tag) changed: 00 -> 01, anything else -> 00 (never a no-op).
    "ciphertext": "UPDATE versions SET sealed = substr(sealed, 1, length(sealed) - 1) || "
                  "CASE WHEN substr(sealed, -1) = x'00' THEN x'01' ELSE x'00' END "
                  "WHERE secret_id = :id",
    "mode": "UPDATE versions SET metadata = json_set(metadata, '$.mode', '0666') "
            "WHERE secret_id = :id",
    "owner": "UPDATE versions SET metadata = json_set(metadata, '$.owner', 'root') "
             "WHERE secret_id = :id",
    "filename": "UPDATE versions SET metadata = json_set(metadata, '$.filename', "
                "'../../etc/cron.d/evil') WHERE secret_id = :id",
    "checksum": "UPDATE versions SET checksum = zeroblob(32) WHERE secret_id = :id",
    "expiry": "UPDATE versions SET expires_at = 4102444800 WHERE secret_id = :id",
    "latest": "UPDATE secrets SET latest_version = 1 WHERE id = :id",
}


def main():
    d = tempfile.mkdtemp(prefix="kbvtamper.")
    srv = None
    try:
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        srv = Server(d, pki, hsm)
        db = f"{d}/kb.db"
        srv.bootstrap()
        srv.start()
        admin = pki.leaf("admin", f"URI:{ADMIN}")
        app = pki.leaf("app", f"URI:{APP}")
        api(srv, pki, admin, "POST", "/v1/admin/groups", {"name": "g"}, want=201)
        api(srv, pki, admin, "POST", "/v1/admin/clients", {"spiffe_id": APP}, want=201)
        api(srv, pki, admin, "POST", "/v1/admin/memberships", {"client": APP, "group": "g"},
            want=201)
        md = {"mode": "0400", "owner": "app", "filename": "app.key"}
        for case in EDITS:
            name = f"t-{case}"
            api(srv, pki, admin, "POST", "/v1/admin/secrets",
                {"name": name, "content": CONTENT, "metadata": md}, want=201)
            if case == "latest":
                api(srv, pki, admin, "PUT", f"/v1/admin/secrets/{name}",
                    {"content": CONTENT, "metadata": md}, want=200)
            api(srv, pki, admin, "POST", "/v1/admin/grants", {"group": "g", "secret": name},
                want=201)
            st, out = api(srv, pki, app, "GET", f"/v1/secrets/{name}", want=200)
            check(st == 200 and json.loads(out)["content"] == CONTENT, f"{case}: reads before")
        api(srv, pki, admin, "POST", "/v1/admin/secrets",
            {"name": "t-untouched", "content": CONTENT, "metadata": md}, want=201)
        api(srv, pki, admin, "POST", "/v1/admin/grants", {"group": "g", "secret": "t-untouched"},
            want=201)
        srv.stop()

        # -- the edits, in the file, with the server stopped (no cache in the way)
        c = sqlite3.connect(db)
        for case, q in EDITS.items():
            sid = c.execute("SELECT id FROM secrets WHERE name = ?", (f"t-{case}",)).fetchone()[0]
            n = c.execute(q, {"id": sid}).rowcount
            check(n >= 1, f"{case}: edit applied to {n} row(s)")
        c.commit()
        c.close()

        open(srv.log.name, "w").close()
        srv.start()
        cli_conf = f"{d}/app.conf"
        with open(cli_conf, "w") as f:
            f.write(f"[client]\nserver_url = https://127.0.0.1:{srv.port}\n"
                    f"server_id = {SERVER_ID}\ncert_file = {app[0]}\nkey_file = {app[1]}\n"
                    f"bundle_file = {pki.bundle}\ntimeout = 10s\n")

        def observe(case):
            name = f"t-{case}"
            native = curl(srv, pki, app, "GET", f"/v1/secrets/{name}")
            keywhiz = curl(srv, pki, app, "GET", f"/secret/{name}")
            p = subprocess.run([KB, "--config", cli_conf, "read", name], capture_output=True)
            norm = lambda b: b.replace(name.encode(), b"NAME")  # noqa: E731
            return (native[0], norm(native[1]), keywhiz[0], norm(keywhiz[1]), p.returncode,
                    norm(p.stdout), norm(p.stderr))

        ref = observe("ciphertext")
        check(ref[0] not in (0, 200) and ref[2] not in (0, 200) and ref[4] != 0,
              f"ciphertext edit refused: native {ref[0]}, keywhiz {ref[2]}, cli exit {ref[4]}")
        for case in EDITS:
            if case == "ciphertext":
                continue
            got = observe(case)
            check(got == ref, f"{case}: refused exactly like a ciphertext edit "
                              f"(native {got[0]}, keywhiz {got[2]}, cli exit {got[4]})"
                  + ("" if got == ref else f": {got!r} vs {ref!r}"))

        st, out = api(srv, pki, app, "GET", "/v1/secrets/t-untouched", want=200)
        check(st == 200 and json.loads(out)["metadata"] == md, "untouched secret still reads")

        # The listing leaves the metadata/latest edits out (nothing tampered is served).
        st, out = api(srv, pki, app, "GET", "/v1/secrets", want=200)
        listed = {s["name"] for s in json.loads(out)["secrets"]} if st == 200 else set()
        for case in EDITS:
            if case != "ciphertext":
                check(f"t-{case}" not in listed, f"{case}: left out of the listing")
        check("t-untouched" in listed, "untouched secret listed")

        # Audit rows and log lines: refused reads audited like the ciphertext edit.
        srv.stop()
        log = open(srv.log.name).read()
        check('"table":"versions"' in log, "log names the versions table")
        check('"table":"secrets.latest_version"' in log, "log names latest_version")
        check(CONTENT not in log and "secret-value-42" not in log and "evil" not in log,
              "no content or tampered value in the log")
        c = sqlite3.connect(db)
        rows = dict(c.execute("SELECT object, result FROM audit_log WHERE action = 'secret.read' "
                              "AND object LIKE 't-%' AND result != 'ok' GROUP BY object"))
        c.close()
        for case in EDITS:
            check(rows.get(f"t-{case}") == rows.get("t-ciphertext") is not None,
                  f"{case}: audited as {rows.get(f't-{case}')!r} like the ciphertext edit")
    finally:
        if srv:
            srv.stop()
    if failures:
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("all ok")


if __name__ == "__main__":
    main()
