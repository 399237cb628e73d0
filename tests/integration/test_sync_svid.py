#!/usr/bin/env python3
"""keybridge-sync with its SVID read from a Secrets Manager secret (issue 6 point 1).

keybridge-ca (development key) issues the fake keybridged's server SVID and keeps the syncer's
SVID in keybridge-cache as SPIRE SVIDStore JSON in SecretBinary (register + renew-once), exactly
as it does in production. Then:
  - the syncer loads the stored SVID and syncs (the fake keybridged sees that leaf's serial);
  - the CA rotates the SVID (renew-once) -> the next run presents the new leaf, no restart;
    a writer using the `spiffeId` spelling is accepted as well;
  - a malformed, expired, wrong-trust-domain, mismatched or missing stored SVID -> non-zero exit,
    a clear message, no call to keybridged and the cache exactly as it was.
"""
import datetime
import json
import os
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_sync_e2e as h  # noqa: E402
from cryptography import x509  # noqa: E402

CA = os.path.join(h.BUILD, "keybridge-ca")
SVID_SECRET = "spiffe/payments"


def leaf_serial(pem):
    return x509.load_pem_x509_certificates(pem.encode())[0].serial_number


class CAEnv:
    """keybridge-ca with a file key, writing into the harness's keybridge-cache."""

    def __init__(self, e):
        self.d = os.path.join(e.dir, "ca")
        os.makedirs(os.path.join(self.d, "keys"), mode=0o700)
        creds = os.path.join(self.d, "ca.creds")
        with open(creds, "w") as f:
            f.write(f"{h.AKID} {h.SKEY}\n")
        os.chmod(creds, 0o600)
        with open(os.path.join(self.d, "policy.json"), "w") as f:
            json.dump({"rules": [{"path_prefix": "/lambda/acct/{account}/",
                                  "target": "secretsmanager", "account": "{account}"}]}, f)
        self.ini = os.path.join(self.d, "ca.ini")
        with open(self.ini, "w") as f:
            f.write(f"[ca]\ndb = {self.d}/ca.db\nkey = file\nkey_dir = {self.d}/keys\n"
                    f"[policy]\nfile = {self.d}/policy.json\n"
                    f"[server]\nlisten = 127.0.0.1:0\nsvid_dir = {self.d}/server\n"
                    f"[aws]\nregion = us-east-1\nendpoint = {e.endpoint}\n"
                    f"credentials_file = {creds}\n")
        self.ca("init", "--trust-domain", h.TD)
        self.rid = None

    def ca(self, *args):
        p = subprocess.run([CA, "-c", self.ini] + list(args), capture_output=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"keybridge-ca {args}: {p.returncode} {p.stderr.decode()[-400:]}")
        return p.stdout.decode()

    def issue(self, spiffe_id, name):
        out = os.path.join(self.d, name)
        self.ca("issue", "--spiffe-id", spiffe_id, "--ttl", "1h", "--out", out)
        return out

    def register(self, spiffe_id, secret):
        self.rid = self.ca("register", "--spiffe-id", spiffe_id, "--target",
                           f"secretsmanager:{h.ACCOUNT}:{secret}", "--ttl", "1h").split()[0]
        self.ca("renew-once")

    def force_renew(self):
        """The next renew-once rotates the registration now (as when its renewal time comes)."""
        c = sqlite3.connect(os.path.join(self.d, "ca.db"))
        c.execute("UPDATE reg SET next_renew = 0 WHERE rid = ?", (int(self.rid),))
        c.commit()
        c.close()
        self.ca("renew-once")


def stored(sm):
    return json.loads(sm.get_secret_value(SecretId=SVID_SECRET)["SecretBinary"])


def main():
    e = h.Env()
    try:
        e.start_cache()
        sm = e.sm()
        ca = CAEnv(e)
        srv = ca.issue(h.SERVER_ID, "server")
        e.bundle = os.path.join(srv, "bundle.pem")
        e.server = (os.path.join(srv, "svid.pem"), os.path.join(srv, "svid.key"))
        fake = e.start_fake()
        ca.register(h.CLIENT_ID, SVID_SECRET)
        doc = stored(sm)
        h.check(set(doc) == {"spiffeID", "x509SVID", "x509SVIDKey", "bundle"},
                doc.keys())
        serial1 = leaf_serial(doc["x509SVID"])
        for i in range(5):
            fake.put(f"s{i}", f"value {i}".encode())

        # files are not configured at all: the stored SVID is the only identity
        env = e.sync_env(KEYBRIDGE_SYNC_SOURCE_SVID_CERT_FILE=None,
                         KEYBRIDGE_SYNC_SOURCE_SVID_KEY_FILE=None,
                         KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE=None,
                         KEYBRIDGE_SYNC_SOURCE_SVID_SECRET_ID=SVID_SECRET)

        def run():
            return e.run(env=env)

        # 1. the stored SVID authenticates the sync
        rc, s, err = run()
        h.check(rc == 0 and s["created"] == 5 and s["ok"], (rc, s, err))
        h.check(h.calls(s, "GetSecretValue") == 1, s["calls"])  # the SVID, read once per run
        h.check(fake.client_serials and set(fake.client_serials) == {serial1},
                (fake.client_serials, serial1))
        h.check(sm.get_secret_value(SecretId="keybridge/payments/s0")["SecretString"] == "value 0",
                "not synced")
        print("ok: SVID from keybridge-ca's SVIDStore secret; sync created 5")

        # 2. rotation by the CA: the next run presents the new leaf (no restart, nothing cached)
        ca.force_renew()
        good = stored(sm)  # as keybridge-ca writes it
        serial2 = leaf_serial(good["x509SVID"])
        h.check(serial2 != serial1, "renew-once did not rotate")
        fake.client_serials.clear()
        fake.put("s0", b"changed")
        rc, s, err = run()
        h.check(rc == 0 and s["updated"] == 1 and s["unchanged"] == 4, (rc, s, err))
        h.check(set(fake.client_serials) == {serial2}, (fake.client_serials, serial2))
        print("ok: rotated SVID (keybridge-ca renew-once) used by the next run")

        # another writer's spelling (spiffeId), no federatedBundles member
        rot = ca.issue(h.CLIENT_ID, "rot3")

        def read(p):
            with open(os.path.join(rot, p)) as f:
                return f.read()
        alt = {"spiffeId": h.CLIENT_ID, "x509SVID": read("svid.pem"),
               "x509SVIDKey": read("svid.key"), "bundle": read("bundle.pem")}
        sm.put_secret_value(SecretId=SVID_SECRET, SecretBinary=json.dumps(alt).encode())
        serial3 = leaf_serial(alt["x509SVID"])
        fake.client_serials.clear()
        rc, s, err = run()
        h.check(rc == 0 and s["unchanged"] == 5, (rc, s, err))
        h.check(set(fake.client_serials) == {serial3}, (fake.client_serials, serial3))
        print("ok: spiffeId spelling accepted")

        # 3. bad stored SVIDs: clear error, no call to keybridged, cache untouched
        evil_dir, exp_dir = os.path.join(e.dir, "evil"), os.path.join(e.dir, "exp")
        os.makedirs(evil_dir)
        os.makedirs(exp_dir)
        evil_id = "spiffe://evil.org/lambda/acct/123456789012/fn/payments"
        ev = h.make_svid(h.make_ca(evil_dir), evil_id, evil_dir, "evil")
        with open(os.path.join(evil_dir, "bundle.pem")) as f:
            evil_bundle = f.read()
        expired = h.make_svid(h.make_ca(exp_dir), h.CLIENT_ID, exp_dir, "expired",
                              ttl=datetime.timedelta(seconds=-30))
        with open(os.path.join(exp_dir, "bundle.pem")) as f:
            expired_bundle = f.read()
        other = h.make_svid(e.ca, "spiffe://example.org/lambda/acct/123456789012/fn/other",
                            e.dir, "other")
        cases = [
            ("not JSON", b"\x00\x01 not json", "not a JSON object"),
            ("JSON array", b"[1,2]", "not a JSON object"),
            ("missing key", json.dumps({k: v for k, v in good.items() if k != "x509SVIDKey"}),
             "needs spiffeID"),
            ("unknown member", json.dumps(dict(good, extra="x")), "unknown member"),
            ("both spellings", json.dumps(dict(good, spiffeId=good["spiffeID"])),
             "needs spiffeID"),
            ("key of another SVID", json.dumps(dict(good, x509SVIDKey=other[3].decode())), ""),
            ("truncated PEM", json.dumps(dict(good, x509SVID=good["x509SVID"][:200])), ""),
            ("spiffeID not the URI SAN",
             json.dumps(dict(good, spiffeID="spiffe://example.org/lambda/acct/123456789012/fn/x")),
             "does not match"),
            ("expired", json.dumps({"spiffeID": h.CLIENT_ID, "x509SVID": expired[2].decode(),
                                    "x509SVIDKey": expired[3].decode(), "bundle": expired_bundle,
                                    "federatedBundles": {}}), "expired"),
            ("wrong trust domain",
             json.dumps({"spiffeID": evil_id, "x509SVID": ev[2].decode(),
                         "x509SVIDKey": ev[3].decode(), "bundle": evil_bundle,
                         "federatedBundles": {"example.org": good["bundle"]}}),
             "trust domain"),
            ("federatedBundles not an object", json.dumps(dict(good, federatedBundles=[])),
             "federatedBundles"),
            ("empty object", b"{}", "needs spiffeID"),
            ("x509SVID not a string", json.dumps(dict(good, x509SVID=7)), "needs spiffeID"),
        ]
        fake.put("s1", b"must not be written")
        before = h.cache_snapshot(sm)
        for what, value, msg in cases:
            raw = value if isinstance(value, bytes) else value.encode()
            sm.put_secret_value(SecretId=SVID_SECRET, SecretBinary=raw)
            before[SVID_SECRET] = h.cache_snapshot(sm)[SVID_SECRET]
            fake.reset_calls()
            rc, s, err = run()
            h.check(rc != 0 and s["ok"] is False, (what, rc, s))
            h.check("SVID" in s.get("error", "") and msg in s["error"], (what, s.get("error")))
            h.check(fake.calls["list"] == 0, (what, "keybridged was called", fake.calls))
            h.check(s["created"] == s["updated"] == s["deleted"] == 0, (what, s))
            h.check(h.cache_snapshot(sm) == before, (what, "cache changed"))
            for bad in ("PRIVATE KEY", good["x509SVIDKey"][40:80]):
                h.check(bad not in err and bad not in json.dumps(s), (what, "key material in output"))
            print(f"ok: {what}: exit {rc}: {s['error']}")
        # a missing secret
        env["KEYBRIDGE_SYNC_SOURCE_SVID_SECRET_ID"] = "spiffe/nobody"
        rc, s, err = run()
        h.check(rc != 0 and "spiffe/nobody" in s["error"] and fake.calls["list"] == 0, (rc, s))
        h.check(h.cache_snapshot(sm) == before, "cache changed")
        print(f"ok: missing SVID secret: exit {rc}: {s['error']}")
        # back to a good one: the syncer recovers on its own
        env["KEYBRIDGE_SYNC_SOURCE_SVID_SECRET_ID"] = SVID_SECRET
        sm.put_secret_value(SecretId=SVID_SECRET, SecretBinary=json.dumps(good).encode())
        rc, s, err = run()
        h.check(rc == 0 and s["updated"] == 1, (rc, s, err))
        print("ok: a good SVID stored again: next run applies")
    finally:
        e.close()
    print("PASS")


if __name__ == "__main__":
    main()
