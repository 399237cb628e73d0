#!/usr/bin/env python3
"""keybridge-ca writes SVIDs into another account with a role it assumes (STS AssumeRole).

A stand-in STS on loopback checks every request against the STS model in botocore's data files
(query protocol: form-encoded POST, Action/Version, every parameter a member of
AssumeRoleRequest with its type, length and pattern, required members present) and the SigV4
signature with botocore's own signer, then answers with temporary credentials in STS's XML.
A recording proxy in front of keybridge-cache shows which credentials and session token each
Secrets Manager call carried. keybridge-cache only knows the temporary key, so a write succeeds
only with the assumed role's credentials.

- sessions are cached: 3 registrations, one AssumeRole; every Secrets Manager call signed with
  the temporary key and carrying its session token;
- refreshed before expiry: a session with less than 5 minutes left is renewed before a write;
- refused: a wrong external ID (AccessDenied) fails the renewal with no Secrets Manager call;
  no credential appears in keybridge-ca's output.
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

BUILD = os.environ.get("KB_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
CA = os.path.join(BUILD, "keybridge-ca")
CACHE = os.path.join(BUILD, "keybridge-cache")
MODEL = sorted(glob.glob("/usr/lib/python3/dist-packages/botocore/data/sts/*/service-2.json"))

BASE_AKID, BASE_SECRET = "AKIDCABASE00000001", "ca-own-secret-key-1"
TEMP_AKID, TEMP_SECRET = "ASIATEMPSTS0000001", "temporary-secret-key-from-sts"
ACCOUNT = "444455556666"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/keybridge-ca-svid-store"
EXTERNAL_ID = "kb-example-org"
AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                  r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})")


def check(cond, msg):
    if not cond:
        raise SystemExit(f"FAIL: {msg}")


def sig_ok(handler, body, akid, secret, service, region):
    m = AUTH.fullmatch(handler.headers.get("Authorization", ""))
    if not m or m.group(1) != akid or m.group(3) != region or m.group(4) != service:
        return False
    signed = m.group(5).split(";")
    hs = {n: ",".join(handler.headers.get_all(n)) for n in signed}
    req = AWSRequest(method="POST", url="http://" + handler.headers["Host"] + handler.path,
                     data=body, headers=hs)
    req.context["timestamp"] = handler.headers["X-Amz-Date"]
    a = SigV4Auth(Credentials(akid, secret), service, region)
    return a.signature(a.string_to_sign(req, a.canonical_request(req)), req) == m.group(6)


class Model:
    """The AssumeRole operation of botocore's STS model."""

    def __init__(self, path):
        m = json.load(open(path))
        self.meta = m["metadata"]
        self.shapes = m["shapes"]
        op = m["operations"]["AssumeRole"]
        self.input = self.shapes[op["input"]["shape"]]

    def problems(self, form):
        p = []
        if form.get("Action") != ["AssumeRole"]:
            p.append("Action")
        if form.get("Version") != [self.meta["apiVersion"]]:
            p.append("Version")
        for k, vs in form.items():
            if k in ("Action", "Version"):
                continue
            if len(vs) != 1:
                p.append(f"{k} repeated")
                continue
            v = vs[0]
            mem = self.input["members"].get(k)
            if mem is None:
                p.append(f"{k} is not a member of AssumeRoleRequest")
                continue
            sh = self.shapes[mem["shape"]]
            if sh["type"] == "integer":
                if not re.fullmatch(r"-?[0-9]+", v) or not (sh.get("min", -2**31) <= int(v) <= sh.get("max", 2**31)):
                    p.append(f"{k}={v} outside {sh.get('min')}..{sh.get('max')}")
            elif sh["type"] == "string":
                if not (sh.get("min", 0) <= len(v) <= sh.get("max", 1 << 30)):
                    p.append(f"{k} length {len(v)}")
                pat = sh.get("pattern")
                if pat:
                    try:
                        rx = re.compile(pat)
                    except re.error:
                        rx = None  # a Java-only construct (arnType's \\u10000): length checked
                    if rx is not None and not rx.fullmatch(v):
                        p.append(f"{k} does not match {pat}")
            else:
                p.append(f"{k}: unexpected shape type {sh['type']}")
        for r in self.input.get("required", []):
            if r not in form:
                p.append(f"required {r} missing")
        return p


class World:
    def __init__(self, model, cache_port):
        self.model = model
        self.cache_port = cache_port
        self.lock = threading.Lock()
        self.sts_calls = []      # (form, problems, signature_ok)
        self.sm_calls = []       # (target, akid, token)
        self.expires_in = 3600
        self.issued = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, ctype, data):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def make_sts(world):
    class H(Handler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ct = self.headers.get("Content-Type", "")
            probs = []
            if self.path != "/":
                probs.append("path")
            if not ct.startswith("application/x-www-form-urlencoded"):
                probs.append("content type " + ct)
            if self.headers.get("X-Amz-Target"):
                probs.append("X-Amz-Target in a query-protocol request")
            try:
                form = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=True,
                                             keep_blank_values=True)
            except (ValueError, UnicodeDecodeError) as e:
                form, probs = {}, probs + [f"form: {e}"]
            probs += world.model.problems(form)
            sok = sig_ok(self, body, BASE_AKID, BASE_SECRET, "sts", "us-east-1")
            with world.lock:
                world.sts_calls.append((form, probs, sok))
                exp_in = world.expires_in
            role = form.get("RoleArn", [""])[0]
            ext = form.get("ExternalId", [""])[0]
            if probs or not sok:
                code, status = ("SignatureDoesNotMatch" if not sok else "ValidationError"), 400 if sok else 403
            elif role != ROLE or ext != EXTERNAL_ID:
                code, status = "AccessDenied", 403
            else:
                code, status = None, 200
            if code:
                out = (f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
                       f'<Type>Sender</Type><Code>{code}</Code><Message>no</Message></Error>'
                       f'<RequestId>r</RequestId></ErrorResponse>')
            else:
                with world.lock:
                    world.issued += 1
                    n = world.issued
                exp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + exp_in))
                out = ('<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                       '<AssumeRoleResult><AssumedRoleUser>'
                       f'<AssumedRoleId>AROA0000:{form["RoleSessionName"][0]}</AssumedRoleId>'
                       f'<Arn>arn:aws:sts::{ACCOUNT}:assumed-role/keybridge-ca-svid-store/'
                       f'{form["RoleSessionName"][0]}</Arn></AssumedRoleUser><Credentials>'
                       f'<AccessKeyId>{TEMP_AKID}</AccessKeyId>'
                       f'<SecretAccessKey>{TEMP_SECRET}</SecretAccessKey>'
                       f'<SessionToken>IQoJb3JpZ2luX2VjEXAMPLE+session/token={n}</SessionToken>'
                       f'<Expiration>{exp}</Expiration></Credentials></AssumeRoleResult>'
                       '<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>'
                       '</AssumeRoleResponse>')
            self.reply(status, "text/xml", out.encode())
    return H


def make_proxy(world):
    class H(Handler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            m = AUTH.fullmatch(self.headers.get("Authorization", ""))
            with world.lock:
                world.sm_calls.append((self.headers.get("X-Amz-Target"), m.group(1) if m else None,
                                       self.headers.get("X-Amz-Security-Token")))
            req = urllib.request.Request(f"http://127.0.0.1:{world.cache_port}{self.path}",
                                         data=body, method="POST")
            for k, v in self.headers.items():
                if k.lower() not in ("content-length", "connection"):
                    req.add_header(k, v)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    status, data = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, data = e.code, e.read()
            self.reply(status, "application/x-amz-json-1.1", data)
    return H


def serve(handler):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main():
    for b in (CA, CACHE):
        if not os.access(b, os.X_OK):
            print(f"SKIP: {b} not built")
            return
    check(MODEL, "botocore's STS model not found (python3-botocore)")
    model = Model(MODEL[-1])
    with tempfile.TemporaryDirectory(prefix="kb-ca-sts-") as w:
        # keybridge-cache knows only the temporary key of the assumed role
        subprocess.run([CACHE, "init-key", "--out", f"{w}/cache.key"], check=True,
                       stdout=subprocess.DEVNULL)
        with open(f"{w}/cache.creds", "w") as f:
            f.write(f"{TEMP_AKID} {TEMP_SECRET} {ACCOUNT}\n")
        os.chmod(f"{w}/cache.creds", 0o600)
        with open(f"{w}/cache.ini", "w") as f:
            f.write(f"[server]\nlisten = 127.0.0.1:0\nthreads = 2\n[store]\npath = {w}/cache.db\n"
                    f"key_file = {w}/cache.key\n[auth]\ncredentials_file = {w}/cache.creds\n")
        clog = open(f"{w}/cache.log", "w+")
        cache = subprocess.Popen([CACHE, "--config", f"{w}/cache.ini", "serve"], stderr=clog)
        try:
            port = None
            for _ in range(100):
                clog.seek(0)
                m = re.search(r'"port":"(\d+)"', clog.read())
                if m:
                    port = int(m.group(1))
                    break
                time.sleep(0.1)
            check(port, "keybridge-cache did not start")
            world = World(model, port)
            sts, proxy = serve(make_sts(world)), serve(make_proxy(world))
            with open(f"{w}/ca.creds", "w") as f:
                f.write(f"{BASE_AKID} {BASE_SECRET}\n")
            os.chmod(f"{w}/ca.creds", 0o600)
            os.mkdir(f"{w}/keys", 0o700)
            with open(f"{w}/policy.json", "w") as f:
                json.dump({"rules": [{"path_prefix": "/lambda/acct/{account}/",
                                      "target": "secretsmanager", "account": "{account}"}]}, f)

            def write_conf(external_id):
                with open(f"{w}/ca.ini", "w") as f:
                    f.write(f"[ca]\ndb = {w}/ca.db\nkey = file\nkey_dir = {w}/keys\n"
                            f"[policy]\nfile = {w}/policy.json\n"
                            f"[server]\nlisten = 127.0.0.1:0\nsvid_dir = {w}/server\n"
                            f"[aws]\nregion = us-east-1\n"
                            f"endpoint = http://127.0.0.1:{proxy.server_address[1]}\n"
                            f"credentials_file = {w}/ca.creds\n"
                            "role_arn = arn:aws:iam::{account}:role/keybridge-ca-svid-store\n"
                            f"external_id = {external_id}\n"
                            f"sts_endpoint = http://127.0.0.1:{sts.server_address[1]}\n")

            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

            def ca(*args):
                return subprocess.run([CA, "-c", f"{w}/ca.ini", *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)

            write_conf(EXTERNAL_ID)
            check(ca("init", "--trust-domain", "example.org").returncode == 0, "ca init")
            ids = [f"spiffe://example.org/lambda/acct/{ACCOUNT}/fn/f{i}" for i in range(3)]
            for i, sid in enumerate(ids):
                p = ca("register", "--spiffe-id", sid, "--target",
                       f"secretsmanager:{ACCOUNT}:keybridge/svid/f{i}", "--ttl", "1h")
                check(p.returncode == 0, ("register", p.stderr))

            # A: one session for the three writes
            p = ca("renew-once", "--force")
            check(p.returncode == 0, ("renew-once", p.stderr.decode()[-2000:]))
            check(len(world.sts_calls) == 1, f"AssumeRole calls: {len(world.sts_calls)} (want 1)")
            form, probs, sok = world.sts_calls[0]
            check(not probs and sok, (probs, sok))
            check(form["RoleArn"] == [ROLE] and form["ExternalId"] == [EXTERNAL_ID] and
                  form["RoleSessionName"] == ["keybridge-ca"] and form["DurationSeconds"] == ["3600"],
                  form)
            check(world.sm_calls and all(a == TEMP_AKID and t and t.endswith("token=1")
                                         for _, a, t in world.sm_calls), world.sm_calls)
            writes = [c for c in world.sm_calls if c[0] == "secretsmanager.PutSecretValue"]
            check(len(writes) == 3, world.sm_calls)
            sm = boto3.client("secretsmanager", endpoint_url=f"http://127.0.0.1:{port}",
                              region_name="us-east-1", aws_access_key_id=TEMP_AKID,
                              aws_secret_access_key=TEMP_SECRET)
            for i, sid in enumerate(ids):
                d = json.loads(sm.get_secret_value(SecretId=f"keybridge/svid/f{i}")["SecretBinary"])
                check(d["spiffeID"] == sid, d["spiffeID"])
            print(f"ok: one AssumeRole (valid against {os.path.relpath(MODEL[-1], '/usr/lib/python3/dist-packages')}"
                  ", signature checked by botocore) for 3 writes; every Secrets Manager call signed "
                  "with the temporary key and carrying its session token")

            # B: sessions with less than the 5-minute margin left are renewed before each write
            world.expires_in = 200
            n_sts, n_sm = len(world.sts_calls), len(world.sm_calls)
            p = ca("renew-once", "--force")
            check(p.returncode == 0, ("renew-once B", p.stderr.decode()[-2000:]))
            # each renewal opens the target twice - the ownership check before signing
            # (ca_target_prepare) and the write - and each open refreshes a session this close
            # to expiry
            check(len(world.sts_calls) - n_sts == 6, f"{len(world.sts_calls) - n_sts} AssumeRole (want 6)")
            check(all(not pr and so for _, pr, so in world.sts_calls), "a request failed the model")
            toks = {t for _, _, t in world.sm_calls[n_sm:]}
            check(len(toks) == 6, toks)
            print("ok: a session within 5 minutes of expiry is refreshed before the write")

            # C: the role refuses (wrong external ID): the renewal fails, nothing is written
            write_conf("not-the-external-id")
            world.expires_in = 3600
            n_sm = len(world.sm_calls)
            p = ca("renew-once", "--force")
            err = p.stderr.decode()
            check(p.returncode != 0, "renewal succeeded without the role")
            check(len(world.sm_calls) == n_sm, "Secrets Manager called without credentials")
            check("AccessDenied" in err and "AssumeRole" in err, err[-2000:])
            for s in (BASE_SECRET, TEMP_SECRET, "session/token"):
                check(s not in err and s not in p.stdout.decode(), f"{s} in keybridge-ca output")
            print("ok: AccessDenied from STS fails the renewal, no Secrets Manager call, no "
                  "credential in the output")

            # D: without role_arn the CA's own key is used, which this account does not know
            with open(f"{w}/ca.ini") as f:
                conf = f.read()
            with open(f"{w}/ca.ini", "w") as f:
                f.write("\n".join(l for l in conf.splitlines() if not l.startswith("role_arn")) + "\n")
            n_sts, n_sm = len(world.sts_calls), len(world.sm_calls)
            p = ca("renew-once", "--force")
            check(p.returncode != 0 and len(world.sts_calls) == n_sts, "no role: should fail, no STS")
            check(all(a == BASE_AKID and t is None for _, a, t in world.sm_calls[n_sm:]),
                  world.sm_calls[n_sm:])
            print("ok: without role_arn the CA's own credentials go out (and are refused here)")
            sts.shutdown()
            proxy.shutdown()
        finally:
            cache.terminate()
            cache.wait()
    print("PASS")


if __name__ == "__main__":
    main()
