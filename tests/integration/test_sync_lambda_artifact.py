#!/usr/bin/env python3
"""The Lambda artifact (scripts/package-lambda.sh): zip layout, manifest and .sha256, no shared
library but glibc's and no glibc symbol newer than GLIBC_2.34 (checked here with readelf/objdump,
and the check is shown to catch a GLIBC_2.36 symbol), one invocation of `bootstrap` chrooted into
a root filesystem holding only the loader and libc, against the Runtime API stand-in of
test_sync_lambda.py (x86_64 natively, arm64 under qemu-aarch64-static), and a second build from
a copy of the tree at another path, other TMPDIR, TZ and umask giving the same sha256."""
import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sync_e2e import SYNC, Env, check  # noqa: E402
from test_sync_lambda import RuntimeAPI  # noqa: E402

SRC = os.environ.get("KB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
PKG = os.path.join(SRC, "scripts", "package-lambda.sh")
GLIBC_MAX = (2, 34)
ARCHES = {  # arch -> (readelf machine, loader, libc dir)
    "x86_64": ("Advanced Micro Devices X86-64", "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu"),
    "arm64": ("AArch64", "/lib/ld-linux-aarch64.so.1", "/lib/aarch64-linux-gnu"),
}
QEMU = "/usr/bin/qemu-aarch64-static"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def package(out, arch="all", src=SRC, env=None, umask=None):
    cmd = ["bash", os.path.join(src, "scripts", "package-lambda.sh"), "--arch", arch, out]
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    check(p.returncode == 0, p.stdout.decode())
    return p.stdout.decode()


def elf_report(path):
    """(NEEDED list, highest GLIBC_x.y as a tuple, symbols per version > GLIBC_MAX)."""
    d = subprocess.run(["readelf", "-d", path], check=True, capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", d)
    t = subprocess.run(["objdump", "-T", path], check=True, capture_output=True, text=True).stdout
    vers, too_new = set(), []
    for line in t.splitlines():
        m = re.search(r"\(?GLIBC_(\d+)\.(\d+)(?:\.\d+)?\)?\s+(\S+)$", line)
        if m:
            v = (int(m.group(1)), int(m.group(2)))
            vers.add(v)
            if v > GLIBC_MAX:
                too_new.append((m.group(3), "GLIBC_%d.%d" % v))
    return needed, max(vers) if vers else None, too_new


def check_checker(tmp):
    """The ELF check must catch what it guards against: a program calling arc4random (2.36)."""
    c = os.path.join(tmp, "new.c")
    with open(c, "w") as f:
        f.write("#include <stdlib.h>\nint main(void) { return (int)(arc4random() & 1); }\n")
    exe = os.path.join(tmp, "new")
    subprocess.run(["gcc", "-o", exe, c], check=True)
    _, top, too_new = elf_report(exe)
    check(top == (2, 36) and ("arc4random", "GLIBC_2.36") in too_new, (top, too_new))
    print("ok: the glibc check flags arc4random@GLIBC_2.36 in a test program")


def git_head():
    p = subprocess.run(["git", "-C", SRC, "rev-parse", "HEAD"], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def check_zip(out, arch, head):
    name = f"keybridge-sync-lambda-{arch}"
    z = os.path.join(out, name + ".zip")
    with open(z + ".sha256") as f:
        line = f.read()
    check(line == f"{sha256(z)}  {name}.zip\n", line)
    with zipfile.ZipFile(z) as zf:
        infos = zf.infolist()
        check([i.filename for i in infos] == ["bootstrap", "manifest.json"], [i.filename for i in infos])
        boot = infos[0]
        check(stat.S_IMODE(boot.external_attr >> 16) == 0o755 and stat.S_ISREG(boot.external_attr >> 16),
              oct(boot.external_attr >> 16))
        man = json.loads(zf.read("manifest.json"))
        boot_bytes = zf.read("bootstrap")
    with open(os.path.join(out, name + ".manifest.json")) as f:
        check(json.load(f) == man, "manifest beside the zip differs from the one inside")
    check(man["arch"] == arch and man["runtime"] == "provided.al2023" and man["handler"] == "bootstrap", man)
    check(man["files"] == {"bootstrap": {"sha256": hashlib.sha256(boot_bytes).hexdigest(),
                                         "size": len(boot_bytes)}}, man["files"])
    check(re.fullmatch(r"[0-9a-f]{40}|unknown", man["commit"]) and man["version"], man)
    check(man["glibc_max"] == "GLIBC_2.34" and "-ffile-prefix-map" in man["cflags"], man)
    if head:
        check(man["commit"] == head, (man["commit"], head))
    size = os.path.getsize(z)
    check(size <= 5 * 1024 * 1024, f"{name}.zip is {size} bytes (> 5 MiB)")
    return z, man


def unpack(z, root, arch):
    """A root filesystem with the loader and libc only, and the zip in /var/task."""
    _, loader, libdir = ARCHES[arch]
    for p in (loader, os.path.join(libdir, "libc.so.6")):
        dst = root + p
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.realpath(p), dst)
    os.makedirs(os.path.join(root, "tmp"))
    task = os.path.join(root, "var/task")
    with zipfile.ZipFile(z) as zf:
        zf.extractall(task)
    os.chmod(os.path.join(task, "bootstrap"), 0o755)  # zipfile drops modes; `unzip` keeps them
    libs = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                  if ".so" in f)
    check(len(libs) == 2 and any("libc.so.6" in x for x in libs), libs)
    return task


def tls_cert(d):
    """A web CA (PEM) and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test web root")])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(d, n) for n in ("web-ca.pem", "web.pem", "web.key")]
    for path, data in zip(paths, (ca.public_bytes(serialization.Encoding.PEM),
                                  cert.public_bytes(serialization.Encoding.PEM),
                                  key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))):
        with open(path, "wb") as f:
            f.write(data)
    os.chmod(paths[2], 0o600)
    return paths


def start_tls_cache(e, region):
    """keybridge-cache over https (certificate for 127.0.0.1 from a web CA). Returns (port, CA)."""
    ca, cert, key = tls_cert(e.dir)
    saved = dict(os.environ)
    os.environ.update(KEYBRIDGE_CACHE_SERVER_CERT_FILE=cert, KEYBRIDGE_CACHE_SERVER_KEY_FILE=key)
    try:
        port = e.start_cache(region)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return port, ca


def invoke(e, root, arch, rid, argv0, expect_ok=True, **over):
    """One cold invocation of /var/task/bootstrap chrooted into root. Returns the response (or
    the /error body when expect_ok is false)."""
    certs = os.path.join(root, "certs")
    os.makedirs(certs, exist_ok=True)
    for src, dst in ((e.client[0], "svid.pem"), (e.client[1], "svid.key"), (e.bundle, "bundle.pem")):
        shutil.copy2(src, os.path.join(certs, dst))
    api = RuntimeAPI([rid])
    env = e.sync_env(AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{api.port}",
                     KEYBRIDGE_SYNC_SOURCE_SVID_CERT_FILE="/certs/svid.pem",
                     KEYBRIDGE_SYNC_SOURCE_SVID_KEY_FILE="/certs/svid.key",
                     KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE="/certs/bundle.pem",
                     LAMBDA_TASK_ROOT="/var/task", _HANDLER="bootstrap",
                     AWS_SESSION_TOKEN="FwoGZXIvYXdzEXAMPLEsessiontoken", **over)
    # As on Lambda: no loader or OpenSSL trust-store variables.
    env = {k: v for k, v in env.items() if not k.startswith(("LD_", "SSL_CERT_"))}
    env["PATH"] = "/var/task"
    try:
        p = subprocess.run([CHROOT, root] + argv0 + ["/var/task/bootstrap"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    finally:
        api.stop()
    # The loop ends when /next has no more events (non-zero exit); the invocation must be done.
    diag = (arch, p.returncode, api.responses, api.errors, api.init_errors, p.stderr.decode()[-2000:])
    if not expect_ok:
        check(rid in api.errors and not api.responses and not api.init_errors, diag)
        return api.errors[rid][0], p
    check(rid in api.responses and not api.errors and not api.init_errors, diag)
    return api.responses[rid], p


def main():
    tmp = tempfile.mkdtemp(prefix="kblambda-")
    e = None
    try:
        check_checker(tmp)
        out1 = os.path.join(tmp, "out1")
        head = git_head()
        log = package(out1)
        print(log.strip())
        zips = {}
        for arch, (machine, _, _) in ARCHES.items():
            z, man = check_zip(out1, arch, head)
            zips[arch] = (z, man)
            boot = os.path.join(tmp, "boot-" + arch)
            with zipfile.ZipFile(z) as zf, open(boot, "wb") as f:
                f.write(zf.read("bootstrap"))
            h = subprocess.run(["readelf", "-h", boot], check=True, capture_output=True, text=True).stdout
            check(machine in h and "DYN" in h, h)
            needed, top, too_new = elf_report(boot)
            check(set(needed) <= {"libc.so.6", os.path.basename(ARCHES[arch][1])}, (arch, needed))
            check(not too_new and top is not None and top <= GLIBC_MAX, (arch, top, too_new))
            check("GLIBC_2.34" == man["glibc_max"] == "GLIBC_%d.%d" % top, (man["glibc_max"], top))
            print(f"ok: {arch}: {os.path.getsize(z)} bytes, NEEDED {needed}, highest GLIBC_%d.%d" % top)

        e = Env()
        e.start_cache()
        fake = e.start_fake()
        fake.put("db-password", b"hunter2")
        fake.put("api-key", b"k1")

        # x86_64, natively, in a root with only ld.so and libc.so.6
        root = os.path.join(tmp, "root-x86_64")
        unpack(zips["x86_64"][0], root, "x86_64")
        # control: the ordinary build's keybridge-sync cannot start there (no libssl, ...)
        shutil.copy2(SYNC, os.path.join(root, "var/task/keybridge-sync"))
        p = subprocess.run([CHROOT, root, "/var/task/keybridge-sync", "schedule", "x"],
                           capture_output=True, text=True)
        check(p.returncode != 0 and "error while loading shared libraries" in p.stderr, p)
        os.unlink(os.path.join(root, "var/task/keybridge-sync"))
        r, _ = invoke(e, root, "x86_64", "req-x86", [])
        check(r["ok"] is True and r["created"] == 2 and r["application"] == "payments", r)
        print("ok: x86_64 bootstrap in a loader+libc root: one invocation created 2 secrets")

        # Secrets Manager over https, trusted through the system bundle where Amazon Linux 2023
        # keeps it (/etc/pki/tls/certs/ca-bundle.crt): the static OpenSSL's own default
        # (/usr/lib/ssl) is absent there as in this root. Without the bundle: refused.
        port, web_ca = start_tls_cache(e, "eu-west-1")
        tls = dict(KEYBRIDGE_SYNC_SINK_REGIONS="eu-west-1",
                   KEYBRIDGE_SYNC_SINK_ENDPOINT=f"https://127.0.0.1:{port}")
        r, _ = invoke(e, root, "x86_64", "req-tls-0", [], expect_ok=False, **tls)
        check("eu-west-1" in r["errorMessage"] or "list" in r["errorMessage"], r)
        os.makedirs(os.path.join(root, "etc/pki/tls/certs"))
        shutil.copy2(web_ca, os.path.join(root, "etc/pki/tls/certs/ca-bundle.crt"))
        r, _ = invoke(e, root, "x86_64", "req-tls-1", [], **tls)
        check(r["ok"] is True and r["created"] == 2, r)
        print("ok: x86_64 bootstrap: https Secrets Manager endpoint trusted through "
              "/etc/pki/tls/certs/ca-bundle.crt (refused without it)")

        # arm64 under qemu-user-static, with the arm64 loader and libc
        check(os.path.exists(QEMU), "qemu-user-static missing (scripts/deps.sh)")
        root = os.path.join(tmp, "root-arm64")
        unpack(zips["arm64"][0], root, "arm64")
        shutil.copy2(QEMU, os.path.join(root, "qemu-aarch64-static"))
        fake.put("api-key", b"k2")
        r, _ = invoke(e, root, "arm64", "req-arm", ["/qemu-aarch64-static"])
        check(r["ok"] is True and r["updated"] == 1 and r["unchanged"] == 1, r)
        print("ok: arm64 bootstrap under qemu-aarch64-static in a loader+libc root: one invocation "
              "updated 1 secret")

        # reproducible: a copy of the tree elsewhere, other TMPDIR, TZ, locale and umask
        src2 = os.path.join(tmp, "elsewhere", "keybridge")
        os.makedirs(src2)
        for d in ("src", "scripts"):
            shutil.copytree(os.path.join(SRC, d), os.path.join(src2, d))
        man = zips["x86_64"][1]
        tmp2 = os.path.join(tmp, "tmp2")
        os.makedirs(tmp2)
        env = dict(os.environ, KB_COMMIT=man["commit"], KB_DIRTY="true" if man["dirty"] else "false",
                   SOURCE_DATE_EPOCH=str(man["source_date_epoch"]), TMPDIR=tmp2, TZ="Asia/Tokyo",
                   LANG="C.UTF-8")
        arches = ["x86_64", "arm64"] if os.environ.get("KB_LAMBDA_REPRO_ALL") else ["x86_64"]
        out2 = os.path.join(tmp, "out2")
        for arch in arches:
            package(out2, arch, src=src2, env=env, umask=0o077)
            a, b = zips[arch][0], os.path.join(out2, os.path.basename(zips[arch][0]))
            check(sha256(a) == sha256(b), f"{arch}: two builds differ: {sha256(a)} != {sha256(b)}")
            print(f"ok: {arch}: rebuilt from {src2} with TZ, umask, TMPDIR changed: same sha256 {sha256(a)}")
    finally:
        if e:
            e.close()
        if os.environ.get("KB_KEEP_TMP") is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
