#!/usr/bin/env python3
"""Expiry extraction on write (issue 15) with artefacts made in the test by openssl and gpg.

keybridged (SoftHSM2) stores each without expires_at and must set the expiry the tools
themselves report: an X.509 certificate as PEM (after its key) and DER (`openssl x509 -enddate`);
PKCS#12 bundles with no password (-certpbe NONE) and under the empty password: the leaf's date
(the earliest of the chain); a PKCS#12 under a real password: stored without an expiry (its
certificates cannot be read) and, when the date is asked for (`expiry_from_content`), refused
with 400 and nothing written; an OpenPGP key made by gpg whose encryption subkey expires before
the primary key, armoured public and binary secret: the subkey's date (gpg --with-colons); a key
that never expires: none. An explicit expires_at always wins over the content.
"""
import base64
import calendar
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_keybridged_api import ADMIN, PKI, Server, make_hsm  # noqa
from test_store_rollback import api, check, failures  # noqa

DAY = 86400


def run(*args, data=None):
    return subprocess.run(list(args), input=data, capture_output=True, check=True).stdout


def not_after(pem_path):
    out = run("openssl", "x509", "-noout", "-enddate", "-in", pem_path).decode().strip()
    return calendar.timegm(time.strptime(out.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z"))


def main():
    d = tempfile.mkdtemp(prefix="kbexp.")
    srv = None
    try:
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        srv = Server(d, pki, hsm)
        srv.bootstrap()
        srv.start()
        admin = pki.leaf("admin", f"URI:{ADMIN}")

        def put(name, content, want=201, **extra):
            body = {"name": name, "content": base64.b64encode(content).decode(), **extra}
            api(srv, pki, admin, "POST", "/v1/admin/secrets", body, want=want)

        def expires(name):
            st, out = api(srv, pki, admin, "GET", f"/v1/admin/secrets/{name}")
            return json.loads(out).get("expires_at") if st == 200 else "missing"

        # -- X.509: a CA valid 400 days and a leaf valid 40 days, made by openssl now
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "400", "-subj",
            "/CN=exp-ca")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{d}/leaf.key", "-out", f"{d}/leaf.csr", "-subj", "/CN=leaf")
        run("openssl", "x509", "-req", "-in", f"{d}/leaf.csr", "-CA", f"{d}/ca.pem", "-CAkey",
            f"{d}/ca.key", "-CAcreateserial", "-days", "40", "-out", f"{d}/leaf.pem")
        run("openssl", "x509", "-in", f"{d}/leaf.pem", "-outform", "DER", "-out",
            f"{d}/leaf.der")
        leaf, ca = not_after(f"{d}/leaf.pem"), not_after(f"{d}/ca.pem")
        check(leaf < ca, "the leaf expires first")
        rd = lambda p: open(p, "rb").read()  # noqa: E731
        put("x-pem", rd(f"{d}/leaf.key") + rd(f"{d}/leaf.pem") + rd(f"{d}/ca.pem"))
        check(expires("x-pem") == leaf, f"PEM key + leaf + CA: the leaf's notAfter {leaf}")
        put("x-der", rd(f"{d}/leaf.der"))
        check(expires("x-der") == leaf, "DER certificate: its notAfter")
        put("x-ca", rd(f"{d}/ca.pem"), expires_at=leaf - DAY)
        check(expires("x-ca") == leaf - DAY, "an explicit expires_at wins over the content")

        # -- PKCS#12: no password, empty password, a real password
        p12 = ["openssl", "pkcs12", "-export", "-inkey", f"{d}/leaf.key", "-in",
               f"{d}/leaf.pem", "-certfile", f"{d}/ca.pem"]
        run(*p12, "-out", f"{d}/nopass.p12", "-passout", "pass:", "-certpbe", "NONE",
            "-keypbe", "NONE", "-nomac")
        run(*p12, "-out", f"{d}/empty.p12", "-passout", "pass:")
        run(*p12, "-out", f"{d}/pw.p12", "-passout", "pass:s3cret")
        put("p-nopass", rd(f"{d}/nopass.p12"))
        check(expires("p-nopass") == leaf, "PKCS#12 without password: the leaf's notAfter")
        put("p-empty", rd(f"{d}/empty.p12"))
        check(expires("p-empty") == leaf, "PKCS#12 under the empty password: the leaf's")
        put("p-pw", rd(f"{d}/pw.p12"))
        check(expires("p-pw") is None, "PKCS#12 under a password: stored, no expiry")
        put("p-pw-ask", rd(f"{d}/pw.p12"), want=400, expiry_from_content=True)
        check(expires("p-pw-ask") == "missing", "... and refused when the date is asked for")

        # -- OpenPGP: primary 300 days, encryption subkey 100 days (gpg's own numbers)
        gh = f"{d}/gnupg"
        os.makedirs(gh, mode=0o700)
        g = ["gpg", "--homedir", gh, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        run(*g, "--quick-gen-key", "Exp Test <exp@example.org>", "ed25519", "cert,sign", "300d")
        fpr = [ln.split(":")[9] for ln in run(*g, "--with-colons", "--list-keys").decode()
               .splitlines() if ln.startswith("fpr:")][0]
        run(*g, "--quick-add-key", fpr, "cv25519", "encr", "100d")
        run(*g, "--quick-gen-key", "Never <never@example.org>", "ed25519", "cert,sign", "never")
        cols = [ln.split(":") for ln in run(*g, "--with-colons", "--list-keys", fpr).decode()
                .splitlines() if ln[:4] in ("pub:", "sub:")]
        dates = [int(c[6]) for c in cols]
        check(len(dates) == 2 and dates[1] < dates[0], f"gpg: the subkey expires first {dates}")
        put("g-pub", run(*g, "--armor", "--export", fpr))
        check(expires("g-pub") == min(dates), f"OpenPGP public key: the subkey's date {dates}")
        put("g-sec", run(*g, "--export-secret-keys", fpr))
        check(expires("g-sec") == min(dates), "OpenPGP binary secret key: the same")
        put("g-never", run(*g, "--armor", "--export", "never@example.org"))
        check(expires("g-never") is None, "an OpenPGP key that never expires: no expiry")
        put("g-never-ask", run(*g, "--armor", "--export", "never@example.org"), want=400,
            expiry_from_content=True)
        subprocess.run(["gpgconf", "--homedir", gh, "--kill", "all"], capture_output=True)
        log = open(srv.log.name).read()
        check("PRIVATE KEY" not in log, "no content in the log")
    finally:
        if srv:
            srv.stop()
    if failures:
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("all ok")


if __name__ == "__main__":
    main()
