#!/usr/bin/env python3
"""keybridge-sync against the real keybridge-cache and a fake keybridged (mTLS, SPIFFE SVIDs).

The fake keybridged implements the client API contract (docs/api.md: GET /v1/secrets,
POST /v1/secrets:batchGet) over mTLS with openssl-grade X509-SVIDs made here with
`cryptography`; it counts calls so the test can assert the no-op cost (one list call, no content
fetch, ceil(N/100) ListSecrets). Other sync tests import this module as their harness.
"""
import base64
import datetime
import hashlib
import hmac
import http.server
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time

import boto3
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BUILD = os.environ.get("KB_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
SYNC = os.path.join(BUILD, "keybridge-sync")
CACHE = os.path.join(BUILD, "keybridge-cache")
TD = "example.org"
SERVER_ID = "spiffe://example.org/keybridged"
CLIENT_ID = "spiffe://example.org/lambda/acct/123456789012/fn/payments"
AKID = "AKIDSYNCTEST00000001"
SKEY = "synctestsecretkey0000000000000000000000000"
ACCOUNT = "123456789012"
APP = "payments"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---- certificates -------------------------------------------------------------------------


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(d):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("test root"))
        .issuer_name(_name("test root"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://" + TD)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    with open(os.path.join(d, "bundle.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_svid(ca, spiffe_id, d, prefix, ttl=datetime.timedelta(hours=1)):
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(prefix))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cpem = cert.public_bytes(serialization.Encoding.PEM)
    kpem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cpath, kpath = os.path.join(d, prefix + ".pem"), os.path.join(d, prefix + ".key")
    with open(cpath, "wb") as f:
        f.write(cpem)
    with open(kpath, "wb") as f:
        f.write(kpem)
    os.chmod(kpath, 0o600)
    return cpath, kpath, cpem, kpem, cert.serial_number


# ---- fake keybridged -----------------------------------------------------------------------


class FakeKeybridged:
    """Serves {name: (version, content bytes, metadata)} for one application."""

    HMAC_KEY = b"fake-keybridged-checksum-key"

    def __init__(self, cert, key, bundle):
        self.secrets = {}
        self.app = APP
        self.calls = {"list": 0, "batch": 0, "batch_names": 0}
        self.batch_errors = {}  # name -> error string
        self.client_serials = []
        self.lock = threading.Lock()
        self.port = free_port()
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, obj):
                b = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def do_GET(self):
                fake._peer(self)
                if self.path != "/v1/secrets":
                    return self._send(404, {"error": "not_found"})
                with fake.lock:
                    fake.calls["list"] += 1
                    recs = [fake.record(n) for n in sorted(fake.secrets)]
                self._send(200, {"client": CLIENT_ID, "application": fake.app, "secrets": recs})

            def do_POST(self):
                fake._peer(self)
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                if self.path != "/v1/secrets:batchGet":
                    return self._send(404, {"error": "not_found"})
                out = []
                with fake.lock:
                    fake.calls["batch"] += 1
                    fake.calls["batch_names"] += len(body["names"])
                    for name in body["names"]:
                        if name in fake.batch_errors:
                            out.append({"name": name, "error": fake.batch_errors[name]})
                        elif name not in fake.secrets:
                            out.append({"name": name, "error": "not_found"})
                        else:
                            out.append(fake.record(name, True))
                self._send(200, {"secrets": out})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(bundle)
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _peer(self, h):
        der = h.connection.getpeercert(binary_form=True)
        if der:
            with self.lock:
                self.client_serials.append(x509.load_der_x509_certificate(der).serial_number)

    def checksum(self, name, version, content):
        m = name.encode() + b"\0" + str(version).encode() + b"\0" + content
        return hmac.new(self.HMAC_KEY, m, hashlib.sha256).hexdigest()

    def record(self, name, with_content=False):
        v, c, meta = self.secrets[name]
        r = {
            "name": name,
            "version": v,
            "checksum": self.checksum(name, v, c),
            "expires_at": None,
            "metadata": meta,
            "updated_at": 1700000000 + v,
        }
        if with_content:
            r["content"] = base64.b64encode(c).decode()
        return r

    def put(self, name, content, meta=None, version=None):
        with self.lock:
            old = self.secrets.get(name)
            v = version if version is not None else (old[0] + 1 if old else 1)
            self.secrets[name] = (v, content, meta or {})

    def remove(self, name):
        with self.lock:
            del self.secrets[name]

    def reset_calls(self):
        with self.lock:
            self.calls = {"list": 0, "batch": 0, "batch_names": 0}

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- the harness ---------------------------------------------------------------------------


class Env:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kbsync-")
        self.procs = []
        self.ca = make_ca(self.dir)
        self.bundle = os.path.join(self.dir, "bundle.pem")
        self.server = make_svid(self.ca, SERVER_ID, self.dir, "server")
        self.client = make_svid(self.ca, CLIENT_ID, self.dir, "client")
        self.fake = None
        self.cache_port = None

    def start_fake(self):
        self.fake = FakeKeybridged(self.server[0], self.server[1], self.bundle)
        return self.fake

    def start_cache(self, region="us-east-1"):
        """Start keybridge-cache for region; the first one becomes self.cache_port."""
        key = os.path.join(self.dir, f"cache-{region}.key")
        creds = os.path.join(self.dir, "cache.creds")
        subprocess.run([CACHE, "init-key", "--out", key], check=True, stdout=subprocess.DEVNULL)
        with open(creds, "w") as f:
            f.write(f"{AKID} {SKEY} {ACCOUNT}\n")
        os.chmod(creds, 0o600)
        port = free_port()
        env = dict(os.environ)
        env.update(
            {
                "KEYBRIDGE_CACHE_STORE_KEY_FILE": key,
                "KEYBRIDGE_CACHE_AUTH_CREDENTIALS_FILE": creds,
                "KEYBRIDGE_CACHE_STORE_PATH": os.path.join(self.dir, f"cache-{region}.db"),
                "KEYBRIDGE_CACHE_SERVER_LISTEN": f"127.0.0.1:{port}",
                "KEYBRIDGE_CACHE_AWS_REGION": region,
                "KEYBRIDGE_CACHE_SERVER_THREADS": "1",
            }
        )
        log = open(os.path.join(self.dir, f"cache-{region}.log"), "w")
        p = subprocess.Popen([CACHE, "serve"], env=env, stdout=log, stderr=log)
        self.procs.append(p)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("keybridge-cache did not start")
        if self.cache_port is None:
            self.cache_port = port
        return port

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.cache_port}"

    def sm(self, region="us-east-1", port=None):
        return boto3.client(
            "secretsmanager",
            region_name=region,
            endpoint_url=f"http://127.0.0.1:{port or self.cache_port}",
            aws_access_key_id=AKID,
            aws_secret_access_key=SKEY,
            config=Config(retries={"max_attempts": 1}),
        )

    def sync_env(self, **over):
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYBRIDGE_SYNC_")}
        env.pop("AWS_LAMBDA_RUNTIME_API", None)
        env.update(
            {
                "KEYBRIDGE_SYNC_SOURCE_URL": f"https://127.0.0.1:{self.fake.port if self.fake else 1}",
                "KEYBRIDGE_SYNC_SOURCE_SERVER_ID": SERVER_ID,
                "KEYBRIDGE_SYNC_SOURCE_SVID_CERT_FILE": self.client[0],
                "KEYBRIDGE_SYNC_SOURCE_SVID_KEY_FILE": self.client[1],
                "KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE": self.bundle,
                "KEYBRIDGE_SYNC_SINK_TARGET": "secretsmanager",
                "KEYBRIDGE_SYNC_SINK_REGIONS": "us-east-1",
                "KEYBRIDGE_SYNC_SINK_ENDPOINT": self.endpoint if self.cache_port else "",
                "KEYBRIDGE_SYNC_LOG_LEVEL": "warn",
                "AWS_ACCESS_KEY_ID": AKID,
                "AWS_SECRET_ACCESS_KEY": SKEY,
            }
        )
        for k, v in over.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def run(self, *args, env=None, timeout=60):
        p = subprocess.run(
            [SYNC] + list(args),
            env=env or self.sync_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        out = p.stdout.decode().strip().splitlines()
        summary = json.loads(out[-1]) if out else None
        return p.returncode, summary, p.stderr.decode()

    def close(self):
        if self.fake:
            self.fake.stop()
        for p in self.procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KB_KEEP_TMP") is None:
            shutil.rmtree(self.dir, ignore_errors=True)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def calls(summary, op):
    return summary["calls"].get(op, 0)


def cache_snapshot(sm):
    """Every secret with its tags, stages and current value: equal snapshots = cache untouched."""
    snap = {}
    pages = sm.get_paginator("list_secrets").paginate(IncludePlannedDeletion=True)
    for page in pages:
        for s in page["SecretList"]:
            d = sm.describe_secret(SecretId=s["Name"])
            val = None
            if "DeletedDate" not in d:
                v = sm.get_secret_value(SecretId=s["Name"])
                val = v.get("SecretString") or base64.b64encode(v.get("SecretBinary", b"")).decode()
            snap[s["Name"]] = (
                sorted((t["Key"], t["Value"]) for t in d.get("Tags", [])),
                json.dumps(d.get("VersionIdsToStages"), sort_keys=True),
                "DeletedDate" in d,
                val,
            )
    return snap


# ---- the test ------------------------------------------------------------------------------


def main():
    e = Env()
    try:
        e.start_cache()
        fake = e.start_fake()
        sm = e.sm()
        fake.put("db-password", b"hunter2")
        fake.put("tls-key", bytes(range(256)))  # not UTF-8: SecretBinary
        fake.put("api-token", "ünïcödé token".encode(), {"owner": "app"})
        for i in range(7):
            fake.put(f"extra-{i}", f"value {i}".encode())

        # 1. first run creates everything, one fetch
        rc, s, err = e.run()
        check(rc == 0, f"first run failed: {rc} {s} {err}")
        check(s["created"] == 10 and s["unchanged"] == 0 and s["failed"] == 0, s)
        check(calls(s, "keybridged.list") == 1 and calls(s, "keybridged.batchGet") == 1, s)
        check(s["hsm_fetches"] == 10 and s["bytes_fetched"] > 0, s)
        check(s["application"] == APP and s["ok"] is True, s)
        v = sm.get_secret_value(SecretId="keybridge/payments/db-password")
        check(v.get("SecretString") == "hunter2", v)
        v = sm.get_secret_value(SecretId="keybridge/payments/tls-key")
        check(v.get("SecretBinary") == bytes(range(256)) and "SecretString" not in v, v)
        v = sm.get_secret_value(SecretId="keybridge/payments/api-token")
        check(v.get("SecretString") == "ünïcödé token", v)
        d = sm.describe_secret(SecretId="keybridge/payments/db-password")
        tags = {t["Key"]: t["Value"] for t in d["Tags"]}
        check(tags["keybridge:app"] == APP and tags["keybridge:version"] == "1", tags)
        check(tags["keybridge:checksum"] == fake.checksum("db-password", 1, b"hunter2"), tags)
        check("KmsKeyId" not in d, d)
        print("ok: first run creates 10 (SecretString / SecretBinary, tags)")

        # 2. no-op: one list call, no content, ceil(N/100) ListSecrets, nothing else
        fake.reset_calls()
        rc, s, err = e.run()
        check(rc == 0 and s["unchanged"] == 10 and s["created"] == 0 and s["updated"] == 0, s)
        check(fake.calls == {"list": 1, "batch": 0, "batch_names": 0}, fake.calls)
        check(s["calls"] == {"keybridged.list": 1, "ListSecrets": 1}, s["calls"])
        check(s["hsm_fetches"] == 0 and s["bytes_fetched"] == 0, s)
        print("ok: no-op run = 1 list call, 0 fetches, 1 ListSecrets", s["duration_ms"], "ms")

        # 3. a changed secret updates (only it is fetched)
        fake.put("db-password", b"correct horse")
        fake.reset_calls()
        rc, s, err = e.run()
        check(rc == 0 and s["updated"] == 1 and s["unchanged"] == 9, s)
        check(fake.calls["batch_names"] == 1, fake.calls)
        check(calls(s, "DescribeSecret") == 1 and calls(s, "PutSecretValue") == 1, s)
        check(calls(s, "TagResource") == 1, s)
        check(
            sm.get_secret_value(SecretId="keybridge/payments/db-password")["SecretString"]
            == "correct horse",
            "update not applied",
        )
        print("ok: changed secret updated")

        # 4. changed by hand in the cache -> rewritten (AWSCURRENT not ours)
        sm.put_secret_value(SecretId="keybridge/payments/db-password", SecretString="by hand")
        rc, s, err = e.run()
        check(rc == 0 and s["updated"] == 1, s)
        check(
            sm.get_secret_value(SecretId="keybridge/payments/db-password")["SecretString"]
            == "correct horse",
            "hand change not repaired",
        )
        rc, s, err = e.run()
        check(rc == 0 and s["unchanged"] == 10, s)
        print("ok: hand-changed secret rewritten, then stable")

        # 5. mass-delete guard: 2 of 10 > 10% -> nothing deleted, non-zero exit
        fake.remove("extra-0")
        fake.remove("extra-1")
        before = cache_snapshot(sm)
        rc, s, err = e.run()
        check(rc != 0 and s["deleted"] == 0 and "max_delete_fraction" in s.get("error", ""), s)
        check(cache_snapshot(sm) == before, "mass-delete guard touched the cache")
        rc, s, err = e.run("sync", "--allow-mass-delete")
        check(rc == 0 and s["deleted"] == 2, s)
        d = sm.describe_secret(SecretId="keybridge/payments/extra-0")
        check("DeletedDate" in d, d)
        print("ok: mass-delete refused without --allow-mass-delete, then 7-day deletes")

        # 6. one delete of 8 is within 10%? 1/8 = 12.5% > 10%: raise the fraction by env
        fake.remove("extra-2")
        rc, s, err = e.run(env=e.sync_env(KEYBRIDGE_SYNC_SINK_MAX_DELETE_FRACTION="0.2"))
        check(rc == 0 and s["deleted"] == 1, s)
        # delete_policy = retain keeps it
        fake.remove("extra-3")
        rc, s, err = e.run(env=e.sync_env(KEYBRIDGE_SYNC_SINK_DELETE_POLICY="retain"))
        check(rc == 0 and s["deleted"] == 0 and s["retained"] == 1, s)
        check("DeletedDate" not in sm.describe_secret(SecretId="keybridge/payments/extra-3"), "")
        fake.put("extra-3", b"value 3", version=1)
        print("ok: max_delete_fraction from env, delete_policy=retain")

        # 7. a name that comes back is restored
        fake.put("extra-0", b"value 0", version=1)
        rc, s, err = e.run()
        check(rc == 0 and s["restored"] == 1 and s["updated"] == 0, s)
        check("DeletedDate" not in sm.describe_secret(SecretId="keybridge/payments/extra-0"), "")
        fake.put("extra-1", b"value 1 changed", version=2)
        rc, s, err = e.run()
        check(rc == 0 and s["restored"] == 1 and s["updated"] == 1, s)
        check(
            sm.get_secret_value(SecretId="keybridge/payments/extra-1")["SecretString"]
            == "value 1 changed",
            "restored secret not updated",
        )
        print("ok: returning names restored (RestoreSecret), updated when changed")

        # 8. a name held by someone else is never overwritten
        sm.create_secret(Name="keybridge/payments/foreign", SecretString="not yours")
        sm.create_secret(
            Name="keybridge/payments/other-app",
            SecretString="other",
            Tags=[{"Key": "keybridge:app", "Value": "billing"}],
        )
        sm.create_secret(
            Name="keybridge/payments/cmk",
            SecretString="cmk",
            KmsKeyId="arn:aws:kms:us-east-1:123456789012:key/1234",
            Tags=[{"Key": "keybridge:app", "Value": APP}],
        )
        fake.put("foreign", b"mine")
        fake.put("other-app", b"mine")
        fake.put("cmk", b"mine")
        rc, s, err = e.run()
        check(rc != 0 and s["failed"] == 3 and s["created"] == 0, s)
        check(sm.get_secret_value(SecretId="keybridge/payments/foreign")["SecretString"] == "not yours", "")
        check(sm.get_secret_value(SecretId="keybridge/payments/other-app")["SecretString"] == "other", "")
        check(sm.get_secret_value(SecretId="keybridge/payments/cmk")["SecretString"] == "cmk", "")
        for n in ("foreign", "other-app", "cmk"):
            fake.remove(n)
        rc, s, err = e.run()
        # foreign and other-app are not ours: ignored. cmk carries our tag but a customer key:
        # deleting it is refused too (loudly).
        check(rc != 0 and s["deleted"] == 0 and s["failed"] == 1, s)
        check(sm.get_secret_value(SecretId="keybridge/payments/cmk")["SecretString"] == "cmk", "")
        sm.delete_secret(SecretId="keybridge/payments/cmk", ForceDeleteWithoutRecovery=True)
        rc, s, err = e.run()
        check(rc == 0 and s["deleted"] == 0, ("unmanaged secrets must not be deleted", s))
        print("ok: foreign name, other application, non-default KMS key refused")

        # 9. a fetch failure for some secrets: the rest still apply
        fake.put("extra-4", b"v4 new")
        fake.put("extra-5", b"v5 new")
        fake.batch_errors["extra-4"] = "limit"
        rc, s, err = e.run()
        check(rc != 0 and s["updated"] == 1 and s["deferred"] == 1, s)
        check(sm.get_secret_value(SecretId="keybridge/payments/extra-5")["SecretString"] == "v5 new", "")
        fake.batch_errors.clear()
        rc, s, err = e.run()
        check(rc == 0 and s["updated"] == 1, s)
        print("ok: partial fetch failure: others applied, deferred retried next run")

        # 10. fail-safe: keybridged down -> non-zero, cache exactly as it was
        fake.put("db-password", b"never written")
        before = cache_snapshot(sm)
        fake.stop()
        rc, s, err = e.run()
        check(rc != 0 and s["ok"] is False and s.get("error"), s)
        check(sum(s["calls"].get(k, 0) for k in s["calls"] if not k.startswith("keybridged")) == 0, s)
        check(cache_snapshot(sm) == before, "cache changed while keybridged was down")
        print("ok: keybridged down: exit", rc, "-", s["error"])
        e.fake = fake = FakeKeybridged(e.server[0], e.server[1], e.bundle)
        fake.secrets = {}
        # the cache down (state unreadable) -> no write, no delete
        rc, s, err = e.run(env=e.sync_env(KEYBRIDGE_SYNC_SINK_ENDPOINT=f"http://127.0.0.1:{free_port()}"))
        check(rc != 0 and s["created"] == 0 and s["deleted"] == 0, s)
        check(cache_snapshot(sm) == before, "cache changed")
        print("ok: cache unreachable: exit", rc)

        # 11. pinning: a server with another valid SVID is refused; wrong pin refused
        imp = make_svid(e.ca, "spiffe://example.org/imposter", e.dir, "imposter")
        impostor = FakeKeybridged(imp[0], imp[1], e.bundle)
        try:
            rc, s, err = e.run(
                env=e.sync_env(KEYBRIDGE_SYNC_SOURCE_URL=f"https://127.0.0.1:{impostor.port}")
            )
            check(rc == 4 and impostor.calls["list"] == 0, (rc, s, impostor.calls))
            check("not the pinned server_id" in s["error"], s)
        finally:
            impostor.stop()
        rc, s, err = e.run(env=e.sync_env(KEYBRIDGE_SYNC_SOURCE_SERVER_ID=None))
        check(rc == 3 and "server_id" in s["error"], (rc, s))
        rc, s, err = e.run(env=e.sync_env(KEYBRIDGE_SYNC_SOURCE_URL=f"http://127.0.0.1:{fake.port}"))
        check(rc == 3, (rc, s))
        # a bundle without the server's root: chain refused
        other_dir = os.path.join(e.dir, "other")
        os.mkdir(other_dir)
        make_ca(other_dir)
        fake.reset_calls()
        rc, s, err = e.run(env=e.sync_env(KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE=os.path.join(other_dir, "bundle.pem")))
        check(rc == 4 and fake.calls["list"] == 0, (rc, s))
        print("ok: server_id pinned; impostor SVID, http:// and foreign bundle refused")

        # 12. more than 100 managed secrets: ceil(N/100) ListSecrets per no-op run
        fake.secrets = {}
        fake.app = "bulk"
        for i in range(150):
            fake.put(f"s{i:03d}", f"content {i}".encode())
        rc, s, err = e.run()
        check(rc == 0 and s["created"] == 150 and calls(s, "keybridged.batchGet") == 2, s)
        fake.reset_calls()
        rc, s, err = e.run()
        check(rc == 0 and s["unchanged"] == 150 and calls(s, "ListSecrets") == 2, s)
        check(fake.calls["batch"] == 0, fake.calls)
        print("ok: 150 secrets: 2 ListSecrets per no-op run, 2 content batches of <= 100")

        # 13. two regions written from one fetch; one region unreadable -> nothing anywhere
        eu_port = e.start_cache("eu-west-1")
        eu = e.sm("eu-west-1", eu_port)
        fake.put("s000", b"changed")
        two = e.sync_env(
            KEYBRIDGE_SYNC_SINK_REGIONS="us-east-1,eu-west-1",
            KEYBRIDGE_SYNC_SINK_ENDPOINT=f"{e.endpoint},http://127.0.0.1:{free_port()}",
        )
        before = cache_snapshot(sm)
        rc, s, err = e.run(env=two)
        check(rc != 0 and s["updated"] == 0 and "eu-west-1" in s["error"], s)
        check(cache_snapshot(sm) == before, "us-east-1 written while eu-west-1 was unreadable")
        two["KEYBRIDGE_SYNC_SINK_ENDPOINT"] = f"{e.endpoint},http://127.0.0.1:{eu_port}"
        fake.reset_calls()
        rc, s, err = e.run(env=two)
        check(rc == 0 and s["created"] == 150 and s["updated"] == 1 and s["unchanged"] == 149, s)
        check(fake.calls["batch_names"] == 150, fake.calls)  # one fetch serves both regions
        check(eu.get_secret_value(SecretId="keybridge/bulk/s000")["SecretString"] == "changed", "")
        check(sm.get_secret_value(SecretId="keybridge/bulk/s000")["SecretString"] == "changed", "")
        rc, s, err = e.run(env=two)
        check(rc == 0 and s["unchanged"] == 300 and calls(s, "ListSecrets") == 4, s)
        print("ok: two regions from one fetch; an unreadable region blocks every write")

        # 14. AWS CLI reads a synced secret from keybridge-cache (unchanged function tooling)
        cli_env = dict(os.environ, AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SKEY,
                       AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL_SECRETS_MANAGER=e.endpoint)
        out = subprocess.run(["aws", "secretsmanager", "get-secret-value", "--secret-id",
                              "keybridge/bulk/s001", "--query", "SecretString", "--output", "text"],
                             env=cli_env, stdout=subprocess.PIPE, check=True, timeout=60)
        check(out.stdout.decode().strip() == "content 1", out.stdout)
        print("ok: aws CLI with AWS_ENDPOINT_URL_SECRETS_MANAGER reads a synced secret")
    finally:
        e.close()
    print("PASS")


if __name__ == "__main__":
    main()
