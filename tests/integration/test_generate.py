#!/usr/bin/env python3
"""Generated secrets (issue 15) against the real keybridged with SoftHSM2.

POST /v1/admin/secrets/{name}/generate and `keybridge secret generate`: random bytes and passwords
from the token's generator (C_GenerateRandom: the token's "other" operation counter moves), EC,
RSA and Ed25519 key pairs made by OpenSSL with the public half stored as NAME.pub and returned; the
answer never holds the content; limits (bytes, alphabet, entropy, bits, curve, parameters that do
not apply) refused with 400/413 and nothing written; a second generate is a new version; every
generate is audited; a non-admin is refused. OpenPGP keys made by GnuPG (gpgme) in a private home:
the stored secret key is imported by a real `gpg`, matches the returned public key (same
fingerprints, a signature it makes verifies with the returned key), carries the requested expiry
(also the versions' expires_at), and no temporary home or gpg-agent is left behind.
"""
import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_keybridged_api import ADMIN, BUILD, PKI, SERVER_ID, Server, make_hsm  # noqa
from test_store_rollback import api, check, failures  # noqa

KB = os.path.join(BUILD, "keybridge")
APP = "spiffe://example.org/ns/pay/sa/app"


def content(srv, pki, admin, name, version=None):
    st, out = api(srv, pki, admin, "GET", f"/v1/admin/secrets/{name}/content" +
                  (f"?version={version}" if version else ""))
    return base64.b64decode(json.loads(out)["content"]) if st == 200 else None


def hsm_other(srv):
    m = urllib.request.urlopen(f"http://127.0.0.1:{srv.mport}/metrics", timeout=10).read()
    g = re.search(rb'keybridged_hsm_operations_total\{op="other"\} (\d+)', m)
    return int(g.group(1)) if g else -1


def gpg(home, *args, data=None):
    os.makedirs(home, mode=0o700, exist_ok=True)
    return subprocess.run(["gpg", "--homedir", home, "--batch", "--no-tty", *args], input=data,
                          capture_output=True)


def colons(out, rec):
    """The records of one type from gpg --with-colons output (lists of fields)."""
    return [ln.split(":") for ln in out.decode().splitlines() if ln.startswith(rec + ":")]


def gpg_leftovers():
    """Temporary GnuPG homes in /dev/shm (keybridged's), and processes (agents) naming one.
    (test_generate's unit test makes its homes elsewhere, but for a second or two one in
    /dev/shm too: callers poll.)"""
    n = sum(1 for e in os.listdir("/dev/shm") if e.startswith("kb-gpg-"))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            n += b"/dev/shm/kb-gpg-" in open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            pass
    return n


def main():
    d = tempfile.mkdtemp(prefix="kbgen.")
    srv = None
    try:
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        srv = Server(d, pki, hsm)
        srv.bootstrap()
        srv.start()
        admin = pki.leaf("admin", f"URI:{ADMIN}")
        app = pki.leaf("app", f"URI:{APP}")
        api(srv, pki, admin, "POST", "/v1/admin/clients", {"spiffe_id": APP}, want=201)
        api(srv, pki, admin, "POST", "/v1/admin/groups", {"name": "pay"}, want=201)

        def gen(name, body, want):
            st, out = api(srv, pki, admin, "POST", f"/v1/admin/secrets/{name}/generate", body,
                          want=want)
            return json.loads(out) if st in (200, 201) else (st, out)

        # -- random: token bytes, the answer has no content
        before = hsm_other(srv)
        r = gen("rnd", {"type": "random", "owner_group": "pay"}, 201)
        check(r == {"name": "rnd", "type": "random", "version": 1}, f"metadata only: {r}")
        check(hsm_other(srv) > before, "the token's generator was called (other ops moved)")
        c = content(srv, pki, admin, "rnd")
        check(c is not None and len(c) == 32, "32 random bytes stored")
        r = gen("rnd4k", {"type": "random", "bytes": 4096}, 201)
        check(len(content(srv, pki, admin, "rnd4k") or b"") == 4096, "4096 bytes")

        # -- password: length, alphabet, uniform use of it
        r = gen("pw", {"type": "password", "bytes": 41, "alphabet": "abc"}, 201)
        pw = content(srv, pki, admin, "pw") or b""
        check(len(pw) == 41 and set(pw) <= set(b"abc") and len(set(pw)) == 3,
              f"41 characters from abc ({pw!r})")
        pw2 = content(srv, pki, admin, "pw") if gen("pw", {"type": "password"}, 200) else b""
        check(len(pw2) == 32 and re.fullmatch(rb"[A-Za-z0-9]{32}", pw2) is not None,
              "default: 32 of A-Za-z0-9, as version 2")

        # -- key pairs
        for name, body in (("k-ec", {"type": "ec"}), ("k-ec384", {"type": "ec", "curve": "P-384"}),
                           ("k-rsa", {"type": "rsa", "bits": 2048}),
                           ("k-ed", {"type": "ed25519"})):
            r = gen(name, body, 201)
            pub = r.get("public_key", "") if isinstance(r, dict) else ""
            check(isinstance(r, dict) and r.get("public_name") == f"{name}.pub"
                  and r.get("public_version") == 1 and pub.startswith("-----BEGIN PUBLIC KEY"),
                  f"{name}: public half returned")
            priv = content(srv, pki, admin, name) or b""
            check(b"PRIVATE KEY" not in json.dumps(r).encode(), f"{name}: no private key in answer")
            stored_pub = content(srv, pki, admin, f"{name}.pub") or b""
            check(stored_pub.decode() == pub, f"{name}: NAME.pub holds the public key")
            p = subprocess.run(["openssl", "pkey", "-pubout"], input=priv, capture_output=True)
            check(p.returncode == 0 and p.stdout.decode() == pub,
                  f"{name}: stored private key (PKCS#8) matches the public key")
            if name == "k-rsa":
                t = subprocess.run(["openssl", "pkey", "-noout", "-text"], input=priv,
                                   capture_output=True).stdout
                check(b"2048 bit" in t, "rsa: 2048 bits")
            if name == "k-ec384":
                t = subprocess.run(["openssl", "pkey", "-noout", "-text"], input=priv,
                                   capture_output=True).stdout
                check(b"P-384" in t, "ec: P-384")
        r = gen("k-ed", {"type": "ed25519"}, 200)
        check(isinstance(r, dict) and r.get("version") == 2 and r.get("public_version") == 2,
              "a second generate: new versions of NAME and NAME.pub")

        # -- OpenPGP: GnuPG's key, checked with a real gpg
        left_before = gpg_leftovers()
        now = int(time.time())
        want = now + 90 * 86400
        r = gen("k-pgp", {"type": "openpgp", "uid": "Payments <pay@example.org>",
                          "expires_at": want, "owner_group": "pay"}, 201)
        pub = r.get("public_key", "") if isinstance(r, dict) else ""
        check(isinstance(r, dict) and r.get("public_name") == "k-pgp.pub"
              and pub.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
              and "PRIVATE" not in json.dumps(r) and abs(r.get("expires_at", 0) - want) < 120,
              f"openpgp: metadata, public key and expiry returned ({r})")
        sec = content(srv, pki, admin, "k-pgp") or b""
        check(sec.startswith(b"-----BEGIN PGP PRIVATE KEY BLOCK-----"),
              "openpgp: the armoured secret key is the content")
        check((content(srv, pki, admin, "k-pgp.pub") or b"").decode() == pub,
              "openpgp: NAME.pub holds the public key")
        for n in ("k-pgp", "k-pgp.pub"):
            _, out = api(srv, pki, admin, "GET", f"/v1/admin/secrets/{n}", want=200)
            check(json.loads(out).get("expires_at") == r.get("expires_at"),
                  f"openpgp: {n}'s expires_at is the key's")
        hs, hp = f"{d}/gpg-sec", f"{d}/gpg-pub"
        p = gpg(hs, "--list-packets", data=sec)
        check(p.returncode == 0 and b":secret key packet:" in p.stdout
              and b":secret sub key packet:" in p.stdout
              and b'user ID packet: "Payments <pay@example.org>"' in p.stdout
              and b"protected" not in p.stdout.replace(b"unprotected", b""),
              f"openpgp: gpg --list-packets reads a secret key + subkey ({p.stderr[-300:]!r})")
        p = gpg(hs, "--import", data=sec)
        check(p.returncode == 0 and b"secret keys imported: 1" in p.stderr,
              f"openpgp: gpg --import takes the stored key ({p.stderr[-300:]!r})")
        p = gpg(hp, "--import", data=pub.encode())
        check(p.returncode == 0, "openpgp: gpg --import takes the returned public key")
        ls = gpg(hs, "--with-colons", "--list-secret-keys").stdout
        lp = gpg(hp, "--with-colons", "--list-keys").stdout
        fs, fp = [f[9] for f in colons(ls, "fpr")], [f[9] for f in colons(lp, "fpr")]
        check(len(fs) == 2 and fs == fp, f"openpgp: same primary and subkey fingerprints ({fs} {fp})")
        keys = colons(lp, "pub") + colons(lp, "sub")
        # field 12: the key's own capabilities in lower case (upper case: the whole key's)
        check([(k[3], "".join(sorted(c for c in k[11] if c.islower()))) for k in keys]
              == [("22", "cs"), ("18", "e")],
              f"openpgp: Ed25519 certify/sign + Curve25519 encryption ({keys})")
        exps = [int(k[6] or 0) for k in keys]
        check(min(exps) == r.get("expires_at") and all(-5 <= e - want < 120 for e in exps),
              f"openpgp: both keys expire as asked, the answer says the earliest ({exps})")
        p = gpg(hs, "--pinentry-mode", "loopback", "--passphrase", "", "-u", fs[0], "--sign",
                data=b"signed by a generated key")
        v = gpg(hp, "--verify", data=p.stdout)
        check(p.returncode == 0 and v.returncode == 0 and b"Good signature" in v.stderr,
              f"openpgp: a signature by the stored key verifies with the returned key "
              f"({v.stderr[-300:]!r})")
        r2 = gen("k-pgp2", {"type": "openpgp"}, 201)
        p = gpg(f"{d}/gpg-2", "--with-colons", "--show-keys",
                data=(r2.get("public_key", "") if isinstance(r2, dict) else "").encode())
        uids = [u[9] for u in colons(p.stdout, "uid")]
        check(uids == ["k-pgp2"] and abs(r2.get("expires_at", 0) - (now + 730 * 86400)) < 300,
              f"openpgp defaults: uid NAME, 2 years ({uids}, {r2})")
        clean = False
        for _ in range(40):
            clean = gpg_leftovers() <= left_before
            if clean:
                break
            time.sleep(0.1)
        check(clean, "openpgp: no temporary home or gpg-agent left")

        # -- limits and wrong parameters: refused, nothing written
        bad = [({"type": "random", "bytes": 4097}, 413), ({"type": "random", "bytes": 15}, 400),
               ({"type": "random", "bytes": 0}, 400), ({"type": "password", "bytes": 7}, 400),
               ({"type": "password", "bytes": 1025}, 413),
               ({"type": "password", "bytes": 40, "alphabet": "abc"}, 400),  # 63.4 bits
               ({"type": "password", "alphabet": "aab"}, 400),
               ({"type": "password", "alphabet": "ab c"}, 400),
               ({"type": "password", "alphabet": "a"}, 400),
               ({"type": "password", "alphabet": "".join(chr(i) for i in range(0x21, 0x7f))
                 + "\u00e9"}, 413),
               ({"type": "random", "alphabet": "abc"}, 400), ({"type": "ec", "bytes": 32}, 400),
               ({"type": "rsa", "bits": 1024}, 400), ({"type": "ec", "curve": "P-521"}, 400),
               ({"type": "ed25519", "curve": "P-256"}, 400), ({"type": "dsa"}, 400),
               ({"type": "openpgp", "bytes": 32}, 400), ({"type": "openpgp", "bits": 2048}, 400),
               ({"type": "openpgp", "curve": "P-256"}, 400),
               ({"type": "openpgp", "alphabet": "ab"}, 400),
               ({"type": "openpgp", "uid": ""}, 400), ({"type": "openpgp", "uid": "a\nb"}, 400),
               ({"type": "openpgp", "uid": " x"}, 400), ({"type": "openpgp", "uid": 5}, 400),
               ({"type": "openpgp", "uid": "u" * 257}, 413),
               ({"type": "openpgp", "expires_at": int(time.time()) + 600}, 400),
               ({"type": "openpgp", "expires_at": int(time.time()) + 21 * 366 * 86400}, 400),
               ({"type": "ec", "uid": "x"}, 400),
               ({}, 400), ({"type": "random", "bytes": "32"}, 400),
               ({"type": "random", "extra": 1}, 400),
               ({"type": "random", "owner_group": "nosuch"}, 404)]
        for body, want in bad:
            gen("refused", body, want)
        st, _ = api(srv, pki, admin, "GET", "/v1/admin/secrets/refused")
        check(st == 404, "nothing written by a refused generate")
        gen("x" * 252, {"type": "ec"}, 400)  # NAME.pub would be 256 characters
        st, _ = api(srv, pki, admin, "GET", "/v1/admin/secrets/" + "x" * 252)
        check(st == 404, "a name whose .pub is too long: refused before generating")
        st, _ = api(srv, pki, app, "POST", "/v1/admin/secrets/app-gen/generate",
                    {"type": "random"})
        check(st == 403, f"non-admin refused ({st})")

        # -- the CLI
        conf = f"{d}/admin.conf"
        with open(conf, "w") as f:
            f.write(f"[client]\nserver_url = https://127.0.0.1:{srv.port}\n"
                    f"server_id = {SERVER_ID}\ncert_file = {admin[0]}\nkey_file = {admin[1]}\n"
                    f"bundle_file = {pki.bundle}\ntimeout = 30s\n")
        p = subprocess.run([KB, "--config", conf, "secret", "generate", "cli-pw", "--type",
                            "password", "--bytes", "24", "--alphabet", "0123456789abcdef"],
                           capture_output=True)
        pw = content(srv, pki, admin, "cli-pw") or b"-"
        check(p.returncode == 0 and b"generated cli-pw version 1" in p.stdout
              and pw not in p.stdout + p.stderr and re.fullmatch(rb"[0-9a-f]{24}", pw),
              f"CLI password ({p.returncode} {p.stdout!r} {p.stderr!r})")
        p = subprocess.run([KB, "--config", conf, "secret", "generate", "cli-ed", "--type",
                            "ed25519", "--public-out", f"{d}/cli-ed.pub"], capture_output=True)
        check(p.returncode == 0 and open(f"{d}/cli-ed.pub").read().startswith("-----BEGIN PUBLIC")
              and b"PRIVATE" not in p.stdout, "CLI key pair, public key to a file")
        p = subprocess.run([KB, "--config", conf, "secret", "generate", "cli-pgp", "--type",
                            "openpgp", "--uid", "CLI <cli@example.org>", "--public-out",
                            f"{d}/cli-pgp.asc"], capture_output=True)
        check(p.returncode == 0 and b"the key expires at" in p.stdout
              and open(f"{d}/cli-pgp.asc").read().startswith("-----BEGIN PGP PUBLIC KEY")
              and b"PRIVATE" not in p.stdout, f"CLI openpgp ({p.returncode} {p.stderr!r})")
        p = subprocess.run([KB, "--config", conf, "secret", "generate", "cli-bad", "--type",
                            "random", "--bytes", "99999"], capture_output=True)
        check(p.returncode == 2 and b"16..4096" in p.stderr, f"CLI limit: exit {p.returncode}")
        p = subprocess.run([KB, "--config", conf, "secret", "generate", "cli-x"],
                           capture_output=True)
        check(p.returncode == 2, "CLI without --type: usage")
        srv.stop()

        c = sqlite3.connect(f"{d}/kb.db")
        rows = c.execute("SELECT object, version, result FROM audit_log "
                         "WHERE action = 'secret.generate'").fetchall()
        c.close()
        ok = {(o, v) for o, v, r in rows if r == "ok"}
        check({("rnd", 1), ("pw", 2), ("k-ed", 2), ("cli-pw", 1), ("k-pgp", 1), ("cli-pgp", 1)}
              <= ok,
              f"generates audited: {sorted(ok)}")
        check(any(o == "refused" and r == "not_found" for o, v, r in rows),
              "a refused generate past validation (unknown owner group) is audited")
        log = open(srv.log.name).read()
        check("PRIVATE KEY" not in log and pw.decode() not in log, "no content in the log")
    finally:
        if srv:
            srv.stop()
    if failures:
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("all ok")


if __name__ == "__main__":
    main()
