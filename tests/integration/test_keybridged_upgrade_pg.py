#!/usr/bin/env python3
"""A rolling upgrade on one PostgreSQL with two real binaries (issue 13, expand/contract).

The "old" keybridged is built from git at OLD_COMMIT (schema 5: the first commit with the compat
floor gate, before step 6) into a cache under the build tree ($KB_BUILD_DIR/old-keybridged/,
only the keybridged target, default flags, -j2; reused by later runs and by the other build
trees of the same checkout, build*/; the build time is printed as "figure:"). The "new" one is this tree's (schema 6: step 6 is expand-only). Sequence:

  1. the old binary bootstraps (schema 5) and an old replica serves: writes and reads;
  2. the new binary runs `keybridged migrate`: schema 6, compat floor 5 recorded;
  3. the old replica, still running, keeps serving reads and writes; restarted, it starts on
     the newer schema (store_schema_newer in its log); its own `migrate` changes nothing;
  4. a new replica serves beside it: each sees the other's writes; the audit chain (written by
     both binaries) verifies;
  5. contract (the floor raised to 6, as a contracting step records it): the running old
     replica's /readyz turns 503, and restarted it refuses to start, naming the database's
     version, its floor and its own version; the new replica keeps serving, the chain verifies.

Skipped (exit 77, ctest SKIP_RETURN_CODE) when the git history holding OLD_COMMIT is not there
(a shallow clone, a source tarball).
"""
import base64
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgserver import PgServer  # noqa
from test_keybridged_api import ADMIN, BUILD, KEYBRIDGED, PKI, SRC, Server, curl, make_hsm  # noqa

OLD_COMMIT = "2a97e695b6b4dc492ee0f43f3c9f066ddc2bf3b8"
OLD_SCHEMA, NEW_SCHEMA = 5, 6
KB = os.path.join(BUILD, "keybridge")
READER = "spiffe://example.org/ns/app/sa/reader"
SKIP = 77
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures.append(what)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def git(*args):
    return subprocess.run(["git", "-C", SRC, *args], capture_output=True, text=True)


def why_no_history():
    """None when OLD_COMMIT's tree can be read, else the reason."""
    if shutil.which("git") is None:
        return "git is not installed"
    if git("rev-parse", "--git-dir").returncode != 0:
        return f"{SRC} is not a git checkout"
    if git("cat-file", "-e", OLD_COMMIT + "^{commit}").returncode != 0:
        shallow = git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"
        return (f"commit {OLD_COMMIT[:12]} is not in the history"
                + (" (shallow clone: fetch with --unshallow)" if shallow else ""))
    return None


def old_binary():
    """The old keybridged, built once into the cache; returns (path, seconds spent building)."""
    cache = os.path.join(BUILD, "old-keybridged", OLD_COMMIT[:12])
    exe = os.path.join(cache, "build", "keybridged")
    if os.path.exists(exe):
        return exe, 0.0
    # The same plain build in a sibling tree of this checkout (CI's build/, build-asan/ and
    # coverage trees): built once per checkout, not once per tree.
    for other in sorted(glob.glob(os.path.join(SRC, "build*", "old-keybridged", OLD_COMMIT[:12],
                                               "build", "keybridged"))):
        if os.access(other, os.X_OK):
            return other, 0.0
    t0 = time.time()
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(os.path.join(cache, "src"))
    arch = subprocess.Popen(["git", "-C", SRC, "archive", OLD_COMMIT], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", os.path.join(cache, "src")], stdin=arch.stdout, check=True)
    if arch.wait() != 0:
        raise RuntimeError("git archive failed")
    for cmd in (["cmake", "-S", "src", "-B", "build", "-DKB_BENCH=OFF"],
                ["cmake", "--build", "build", "--target", "keybridged", "-j2"]):
        p = subprocess.run(cmd, cwd=cache, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.stdout[-2000:]}{p.stderr[-2000:]}")
    return exe, time.time() - t0


def use_pg(srv, url):
    with open(srv.conf) as f:
        text = f.read()
    with open(srv.conf, "w") as f:
        f.write("\n".join(f"url = {url}" if ln.startswith("url = sqlite:") else ln
                          for ln in text.split("\n")))


def start(srv, exe):
    """Serve with binary exe; returns the process (None and the output if it exited)."""
    srv.proc = subprocess.Popen([exe, "--config", srv.conf, "serve"], stdout=srv.log,
                                stderr=srv.log)
    import socket
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=0.2).close()
            return True
        except OSError:
            if srv.proc.poll() is not None:
                return False
            time.sleep(0.05)
    return False


def log_text(srv):
    srv.log.flush()
    with open(srv.log.name) as f:
        return f.read()


def api(srv, pki, cert, method, path, body=None):
    st, out = curl(srv, pki, cert, method, path, json.dumps(body) if body is not None else None)
    return st, out


def write_secret(srv, pki, admin, name):
    st, _ = api(srv, pki, admin, "POST", "/v1/admin/secrets", {"name": name, "content": b64(name)})
    st2, _ = api(srv, pki, admin, "POST", "/v1/admin/grants", {"group": "app", "secret": name})
    return st == 201 and st2 == 201


def read_secret(srv, pki, reader, name):
    st, out = api(srv, pki, reader, "GET", f"/v1/secrets/{name}")
    return st == 200 and json.loads(out).get("name") == name


def audit_verify(srv):
    p = subprocess.run([KB, "--local", srv.conf, "--as", ADMIN, "audit", "verify"],
                       capture_output=True, text=True)
    out = p.stdout + p.stderr
    return p.returncode == 0 and "audit chain: ok" in out, out.strip()[-200:]


def schema(pg):
    v = pg.psql("SELECT version FROM schema_version", db="kb").strip()
    f = pg.psql("SELECT floor_version FROM schema_compat", db="kb", check=False).strip()
    return v, f


def main():
    reason = why_no_history()
    if reason:
        print(f"SKIP: {reason}; the old binary of the rolling-upgrade test cannot be built")
        return SKIP
    exe_old, secs = old_binary()
    print(f"figure: old keybridged ({OLD_COMMIT[:12]}) build: "
          + (f"{secs:.0f} s" if secs else "cached"), flush=True)
    d = tempfile.mkdtemp(prefix="kbup.")
    pg = PgServer()
    servers = []
    try:
        hsm = make_hsm(d)
        pki = PKI(f"{d}/pki")
        for name in ("old", "new"):
            os.makedirs(f"{d}/{name}")
            srv = Server(f"{d}/{name}", pki, hsm)
            use_pg(srv, pg.url)
            servers.append(srv)
        old, new = servers
        admin = pki.leaf("admin", f"URI:{ADMIN}")
        reader = pki.leaf("reader", f"URI:{READER}")

        # 1. The old binary's database and replica.
        p = subprocess.run([exe_old, "--config", old.conf, "bootstrap", "--admin-id", ADMIN],
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, f"old binary bootstraps ({p.stderr.strip()[-200:]})")
        check(schema(pg) == (str(OLD_SCHEMA), ""), f"database at schema {OLD_SCHEMA} ({schema(pg)})")
        check(start(old, exe_old), "old replica serves")
        for method, path, body in (("POST", "/v1/admin/groups", {"name": "app"}),
                                   ("POST", "/v1/admin/clients", {"spiffe_id": READER}),
                                   ("POST", "/v1/admin/memberships",
                                    {"client": READER, "group": "app"})):
            st, out = api(old, pki, admin, method, path, body)
            check(st == 201, f"{method} {path} on the old replica: {st} {out[:100]!r}")
        check(write_secret(old, pki, admin, "s-before"), "old replica writes before the upgrade")

        # 2. The new binary migrates (expand).
        p = subprocess.run([KEYBRIDGED, "--config", new.conf, "migrate"], capture_output=True,
                           text=True, timeout=120)
        check(p.returncode == 0 and f"schema version {NEW_SCHEMA}" in p.stdout,
              f"new binary: keybridged migrate ({p.stdout.strip()} {p.stderr.strip()[-200:]})")
        check(schema(pg) == (str(NEW_SCHEMA), str(OLD_SCHEMA)),
              f"schema {NEW_SCHEMA}, compat floor {OLD_SCHEMA} recorded ({schema(pg)})")

        # 3. The old replica keeps serving, restarts, and its migrate changes nothing.
        check(read_secret(old, pki, reader, "s-before"), "old replica reads after the migration")
        check(write_secret(old, pki, admin, "s-old-after"), "old replica writes after it")
        st, out = api(old, pki, reader, "GET", "/readyz")
        check(st == 200, f"old replica ready on schema {NEW_SCHEMA} ({st} {out[:80]!r})")
        old.stop()
        check(start(old, exe_old), "old replica restarts on the newer schema")
        check('"store_schema_newer"' in log_text(old), "and logs that the database is newer")
        check(read_secret(old, pki, reader, "s-old-after"), "restarted old replica reads")
        p = subprocess.run([exe_old, "--config", old.conf, "migrate"], capture_output=True,
                           text=True, timeout=120)
        check(p.returncode == 0 and schema(pg) == (str(NEW_SCHEMA), str(OLD_SCHEMA)),
              f"old binary's migrate leaves the newer schema alone ({p.stdout.strip()})")

        # 4. A new replica beside it.
        check(start(new, KEYBRIDGED), "new replica serves")
        check(read_secret(new, pki, reader, "s-old-after"), "new replica reads the old one's write")
        check(write_secret(new, pki, admin, "s-new"), "new replica writes")
        check(read_secret(old, pki, reader, "s-new"), "old replica reads the new one's write")
        check(write_secret(old, pki, admin, "s-old-last"), "old replica writes beside it")
        check(read_secret(new, pki, reader, "s-old-last"), "... which the new one reads")
        okv, out = audit_verify(new)
        check(okv, f"one audit chain written by both binaries verifies ({out})")

        # 5. Contract: the floor reaches the new version; the old binary is done.
        pg.psql(f"UPDATE schema_compat SET floor_version = {NEW_SCHEMA}", db="kb")
        st, _ = api(old, pki, reader, "GET", "/readyz")
        check(st == 503, f"running old replica: /readyz 503 once contracted past it ({st})")
        old.stop()
        ok = start(old, exe_old)
        text = log_text(old)
        line = next((ln for ln in text.splitlines() if "store_schema_too_new" in ln), "")
        check(not ok and old.proc.poll() not in (None, 0),
              f"old replica refuses to start after the contract (exit {old.proc.poll()})")
        check(f'"db_schema_version":"{NEW_SCHEMA}"' in line
              and f'"db_compat_floor":"{NEW_SCHEMA}"' in line
              and f'"binary_schema_version":"{OLD_SCHEMA}"' in line and "upgrade" in line,
              f"with a message naming both versions and the floor ({line[:300]})")
        check(read_secret(new, pki, reader, "s-before") and
              api(new, pki, reader, "GET", "/readyz")[0] == 200, "new replica keeps serving")
        check(write_secret(new, pki, admin, "s-contracted"), "and writing")
        okv, out = audit_verify(new)
        check(okv, f"the chain still verifies ({out})")
    finally:
        for srv in servers:
            srv.stop()
        pg.close()
        if failures:
            for srv in servers:
                print(f"--- {srv.log.name}\n" + "".join(log_text(srv).splitlines(True)[-10:]))
        subprocess.run(["rm", "-rf", d])
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("all ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
