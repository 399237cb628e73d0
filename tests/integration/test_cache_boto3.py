#!/usr/bin/env python3
"""test_cache_boto3.py - keybridge-cache driven by boto3, with every response the server produces
checked against the botocore model (output shapes and error shapes), plus bad-input requests sent
raw (unsigned, badly signed, stale, unknown target, malformed JSON, wrong types, oversized) that
must get the AWS error and change nothing."""
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import boto3
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

BIN = os.path.join(os.environ["KB_BUILD_DIR"], "keybridge-cache")
AKID, SECRET, ACCOUNT = "AKIDBOTOTEST00000001", "boto-secret-key-1", "777788889999"
AKID2, SECRET2 = "AKIDBOTOTEST00000002", "boto-secret-key-2"
MODEL = botocore.session.get_session().get_service_model("secretsmanager")
COMMON_ERRORS = {
    "MissingAuthenticationTokenException", "IncompleteSignatureException",
    "InvalidSignatureException", "UnrecognizedClientException", "UnknownOperationException",
    "SerializationException", "RequestEntityTooLargeException", "InternalServiceError",
}

passed = failed = 0
shape_checks = 0


def large_body(code, want, what):
    """Bodies over 64 KiB cross several evbuffer chunks in the HTTP layer: checked strictly."""
    check(code == want, "%s: got %s" % (what, code))


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, file=sys.stderr)


def validate(shape, value, path, errs):
    """Walk an output shape: required members present, types right, no undefined member."""
    t = shape.type_name
    if t == "structure":
        if not isinstance(value, dict):
            errs.append("%s: expected object" % path)
            return
        for k in shape.required_members:
            if k not in value:
                errs.append("%s.%s: required member missing" % (path, k))
        for k, v in value.items():
            if k not in shape.members:
                errs.append("%s.%s: not in the model" % (path, k))
            else:
                validate(shape.members[k], v, path + "." + k, errs)
    elif t == "list":
        if not isinstance(value, list):
            errs.append("%s: expected list" % path)
            return
        for i, v in enumerate(value):
            validate(shape.member, v, "%s[%d]" % (path, i), errs)
    elif t == "map":
        if not isinstance(value, dict):
            errs.append("%s: expected map" % path)
            return
        for k, v in value.items():
            validate(shape.key, k, path + "<key>", errs)
            validate(shape.value, v, path + "." + k, errs)
    elif t == "string":
        if not isinstance(value, str):
            errs.append("%s: expected string" % path)
        elif shape.enum and value not in shape.enum:
            errs.append("%s: not in enum" % path)
    elif t == "blob":
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", value):
            errs.append("%s: expected base64" % path)
    elif t == "boolean":
        if not isinstance(value, bool):
            errs.append("%s: expected boolean" % path)
    elif t in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            errs.append("%s: expected integer" % path)
    elif t == "timestamp":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errs.append("%s: expected epoch seconds" % path)
    else:
        errs.append("%s: unhandled type %s" % (path, t))


def on_raw_response(http_response, operation_name, **kw):
    """Every raw response boto3 receives: shape check against the model."""
    global shape_checks
    op = MODEL.operation_model(operation_name)
    check(http_response.headers.get("x-amzn-RequestId"), "%s: no x-amzn-RequestId" % operation_name)
    body = json.loads(http_response.content or b"{}")
    errs = []
    if http_response.status_code == 200 and op.output_shape is None:
        if body != {}:
            errs.append("%s: output without a shape must be {}" % operation_name)
    elif http_response.status_code == 200:
        validate(op.output_shape, body, operation_name, errs)
    else:
        code = body.get("__type")
        known = {e.name for e in op.error_shapes}
        if code not in known and code not in COMMON_ERRORS:
            errs.append("%s: error %s not in the model" % (operation_name, code))
        if set(body) - {"__type", "message"}:
            errs.append("%s: error has extra members" % operation_name)
        if not isinstance(body.get("message"), str):
            errs.append("%s: error without message" % operation_name)
        if http_response.status_code not in (400, 413, 500):
            errs.append("%s: status %d" % (operation_name, http_response.status_code))
    shape_checks += 1
    for e in errs:
        check(False, e)


def client(port, akid=AKID, secret=SECRET, token=None):
    c = boto3.client("secretsmanager", endpoint_url="http://127.0.0.1:%d" % port,
                     region_name="us-east-1", aws_access_key_id=akid,
                     aws_secret_access_key=secret, aws_session_token=token,
                     config=Config(retries={"max_attempts": 1, "mode": "standard"}))
    c.meta.events.register("before-parse.secrets-manager", on_raw_response_adapter)
    return c


class _Resp:
    def __init__(self, d):
        self.status_code, self.headers, self.content = d["status_code"], d["headers"], d["body"]


def on_raw_response_adapter(operation_model, response_dict, **kw):
    on_raw_response(_Resp(response_dict), operation_model.name)


def err_code(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    return None


class Server:
    def __init__(self, d):
        self.d, self.proc, self.port = d, None, None

    def start(self):
        log = open(os.path.join(self.d, "log"), "ab")
        self.proc = subprocess.Popen([BIN, "--config", os.path.join(self.d, "cfg.ini"), "serve"],
                                     stderr=log)
        for _ in range(100):
            for line in open(os.path.join(self.d, "log")):
                ev = json.loads(line)
                if ev.get("event") == "listening" and "listen" in ev and self.proc.pid:
                    self.port = int(ev["port"])
            if self.port:
                return
            time.sleep(0.1)
        raise SystemExit("server did not start")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        open(os.path.join(self.d, "log"), "w").close()
        self.port = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def raw(port, target, body, headers=None, sign=True, when=None, secret=SECRET, akid=AKID,
        sign_target=True):
    """Send a request by hand (optionally signed with botocore's own SigV4 signer)."""
    url = "http://127.0.0.1:%d/" % port
    data = body if isinstance(body, bytes) else body.encode()
    h = {"Content-Type": "application/x-amz-json-1.1"}
    if sign_target:
        h["X-Amz-Target"] = "secretsmanager." + target
    h.update(headers or {})
    if sign:
        req = AWSRequest(method="POST", url=url, data=data, headers=h)
        signer = SigV4Auth(Credentials(akid, secret), "secretsmanager", "us-east-1")
        if when is not None:
            real = datetime.datetime

            class Fixed(real):
                @classmethod
                def utcnow(cls):
                    return when

                @classmethod
                def now(cls, tz=None):
                    return when.replace(tzinfo=tz) if tz else when

            import botocore.auth as ba
            saved = ba.datetime.datetime
            ba.datetime.datetime = Fixed
            try:
                signer.add_auth(req)
            finally:
                ba.datetime.datetime = saved
        else:
            signer.add_auth(req)
        h = dict(req.headers.items())
    if not sign_target:
        h["X-Amz-Target"] = "secretsmanager." + target
    r = urllib.request.Request(url, data=data, headers=h, method="POST")
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as e:
        payload = e.read()
        try:
            j = json.loads(payload)
        except ValueError:
            j = {"raw": payload[:100].decode("latin1")}
        return e.code, j, dict(e.headers)


def main():
    d = tempfile.mkdtemp(prefix="kb-cache-boto3.")
    subprocess.run([BIN, "init-key", "--out", os.path.join(d, "key")], check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(d, "creds"), "w") as f:
        f.write("%s %s %s\n%s %s 111100002222\n" % (AKID, SECRET, ACCOUNT, AKID2, SECRET2))
    os.chmod(os.path.join(d, "creds"), 0o600)
    with open(os.path.join(d, "cfg.ini"), "w") as f:
        f.write("[server]\nlisten = 127.0.0.1:0\n[store]\npath = %s/cache.db\nkey_file = %s/key\n"
                "[auth]\ncredentials_file = %s/creds\n" % (d, d, d))
    srv = Server(d)
    srv.start()
    try:
        run(srv)
    finally:
        srv.stop()
        subprocess.run(["rm", "-rf", d])
    print("%d response shapes checked" % shape_checks)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


# Every operation in botocore's Secrets Manager model is either implemented or refused with a
# specific error; a new operation in the model fails this test until it is put in one of them.
IMPLEMENTED = {
    "CreateSecret", "PutSecretValue", "UpdateSecret", "GetSecretValue", "BatchGetSecretValue",
    "ListSecrets", "DescribeSecret", "DeleteSecret", "RestoreSecret", "TagResource",
    "UntagResource", "GetResourcePolicy", "PutResourcePolicy", "DeleteResourcePolicy",
    "ValidateResourcePolicy", "ListSecretVersionIds", "UpdateSecretVersionStage",
    "GetRandomPassword",
}
REFUSED = {  # InvalidRequestException naming what keybridge-cache does not do
    "RotateSecret", "CancelRotateSecret", "ReplicateSecretToRegions",
    "RemoveRegionsFromReplication", "StopReplicationToReplica",
}


def operations(c, srv):
    """Issue 14's operations through boto3 (each response shape-checked by on_raw_response)."""
    model_ops = set(MODEL.operation_names)
    check(model_ops - IMPLEMENTED - REFUSED == set(),
          "operations in botocore's model that keybridge-cache neither implements nor refuses: %s"
          % sorted(model_ops - IMPLEMENTED - REFUSED))
    check((IMPLEMENTED | REFUSED) - model_ops == set(),
          "operations listed here but not in the model: %s" % sorted((IMPLEMENTED | REFUSED) - model_ops))
    for op in sorted(model_ops):
        st, j, _ = raw(srv.port, op, "{}")
        check(j.get("__type") != "UnknownOperationException", "%s is routed" % op)
        if st != 200:
            on_raw_like(op, st, j)
    c.create_secret(Name="ops/rb", SecretString="one")
    v2 = c.put_secret_value(SecretId="ops/rb", SecretString="two")["VersionId"]
    v3 = c.put_secret_value(SecretId="ops/rb", SecretString="three")["VersionId"]
    vs = c.list_secret_version_ids(SecretId="ops/rb")["Versions"]
    check([v["VersionId"] for v in vs] == [v3, v2], "ListSecretVersionIds: staged versions, newest first")
    allv, kw = [], {}
    for _ in range(10):  # paged by hand: not every botocore has a paginator for it
        r = c.list_secret_version_ids(SecretId="ops/rb", IncludeDeprecated=True, MaxResults=1, **kw)
        allv += r["Versions"]
        if "NextToken" not in r:
            break
        kw = {"NextToken": r["NextToken"]}
    check(len(allv) == 3 and allv[2]["VersionStages"] == [], "IncludeDeprecated, paged by 1: %s" % allv)
    # roll AWSCURRENT back to v2 (the documented way)
    c.update_secret_version_stage(SecretId="ops/rb", VersionStage="AWSCURRENT",
                                  RemoveFromVersionId=v3, MoveToVersionId=v2)
    check(c.get_secret_value(SecretId="ops/rb")["SecretString"] == "two", "rolled back")
    check(c.get_secret_value(SecretId="ops/rb", VersionStage="AWSPREVIOUS")["VersionId"] == v3,
          "AWSPREVIOUS follows")
    check(err_code(c.update_secret_version_stage, SecretId="ops/rb", VersionStage="AWSCURRENT",
                   MoveToVersionId=v3) == "InvalidParameterException", "move without RemoveFrom")
    pw = c.get_random_password(PasswordLength=24, ExcludePunctuation=True)["RandomPassword"]
    check(len(pw) == 24 and pw.isalnum(), "GetRandomPassword")
    pol = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "secretsmanager:DeleteSecret",
         "Resource": "*"}]})
    c.put_resource_policy(SecretId="ops/rb", ResourcePolicy=pol)
    check(json.loads(c.get_resource_policy(SecretId="ops/rb")["ResourcePolicy"]) == json.loads(pol),
          "policy stored and returned")
    v = c.validate_resource_policy(ResourcePolicy=pol)
    check(v["PolicyValidationPassed"] is True and v["ValidationErrors"] == [], "ValidateResourcePolicy")
    check(err_code(c.put_resource_policy, SecretId="ops/rb", ResourcePolicy="{oops") ==
          "MalformedPolicyDocumentException", "malformed policy")
    c.delete_resource_policy(SecretId="ops/rb")
    check(c.get_resource_policy(SecretId="ops/rb").get("ResourcePolicy") is None, "policy deleted")
    check(err_code(c.rotate_secret, SecretId="ops/rb") == "InvalidRequestException", "rotation refused")
    check(err_code(c.replicate_secret_to_regions, SecretId="ops/rb",
                   AddReplicaRegions=[{"Region": "eu-west-1"}]) == "InvalidRequestException",
          "replication refused")
    # \u0000 in a SecretString is valid JSON and kept byte for byte
    c.put_secret_value(SecretId="ops/rb", SecretString="a\x00b")
    check(c.get_secret_value(SecretId="ops/rb")["SecretString"] == "a\x00b", "NUL in SecretString")
    check(err_code(c.create_secret, Name="ops/n\x00ul", SecretString="x") == "InvalidParameterException",
          "NUL in a name refused")
    # A session token (as Lambda's temporary credentials carry) is signed over and not checked:
    # the access key id and secret decide (docs/keybridge-cache.md).
    t = client(srv.port, token="FwoGZXIvYXdzEXAMPLE-session-token")
    check(t.get_secret_value(SecretId="ops/rb")["SecretString"] == "a\x00b", "session token accepted")


def run(srv):
    c = client(srv.port)
    r = c.create_secret(Name="svc/one", SecretString="s3cr3t", Description="first",
                        Tags=[{"Key": "managed-by", "Value": "keybridge"}])
    arn = r["ARN"]
    check(re.fullmatch(r"arn:aws:secretsmanager:us-east-1:%s:secret:svc/one-[A-Za-z0-9]{6}" % ACCOUNT,
                       arn), "ARN format")
    v1 = r["VersionId"]
    g = c.get_secret_value(SecretId="svc/one")
    check(g["SecretString"] == "s3cr3t" and g["VersionStages"] == ["AWSCURRENT"], "get")
    check(isinstance(g["CreatedDate"], datetime.datetime), "CreatedDate parsed as a datetime")
    p = c.put_secret_value(SecretId=arn, SecretString="two")
    check(p["VersionStages"] == ["AWSCURRENT"], "put stages")
    check(c.get_secret_value(SecretId="svc/one", VersionStage="AWSPREVIOUS")["VersionId"] == v1,
          "AWSPREVIOUS moves")
    c.update_secret(SecretId="svc/one", Description="changed")
    u = c.update_secret(SecretId="svc/one", SecretBinary=b"\x00\xffbin")
    check(c.get_secret_value(SecretId="svc/one")["SecretBinary"] == b"\x00\xffbin", "binary round trip")
    check(c.get_secret_value(SecretId="svc/one", VersionId=u["VersionId"])["VersionId"] == u["VersionId"],
          "get by version id")
    ds = c.describe_secret(SecretId=arn[:-7])  # partial ARN
    check(ds["Description"] == "changed" and len(ds["VersionIdsToStages"]) == 2, "describe")
    check(c.get_resource_policy(SecretId="svc/one").get("ResourcePolicy") is None, "no policy")
    c.tag_resource(SecretId="svc/one", Tags=[{"Key": "checksum", "Value": "abc"}])
    c.untag_resource(SecretId="svc/one", TagKeys=["managed-by"])
    check([t["Key"] for t in c.describe_secret(SecretId="svc/one")["Tags"]] == ["checksum"], "tags")
    c.create_secret(Name="svc/empty")
    check(err_code(c.get_secret_value, SecretId="svc/empty") == "ResourceNotFoundException",
          "no current version")
    check(err_code(c.create_secret, Name="svc/one") == "ResourceExistsException", "exists")
    tok = "a" * 32
    c.put_secret_value(SecretId="svc/empty", SecretString="x", ClientRequestToken=tok)
    c.put_secret_value(SecretId="svc/empty", SecretString="x", ClientRequestToken=tok)
    check(err_code(c.put_secret_value, SecretId="svc/empty", SecretString="y",
                   ClientRequestToken=tok) == "ResourceExistsException", "token reuse")

    # >100 secrets, pagination with the boto3 paginator and by hand
    for i in range(110):
        c.create_secret(Name="many/%03d" % i, SecretString="v%d" % i,
                        Tags=[{"Key": "kind", "Value": "many"}])
    pages = list(c.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "tag-value", "Values": ["many"]}], PaginationConfig={"PageSize": 100}))
    check([len(p["SecretList"]) for p in pages] == [100, 10], "paginator pages")
    names = [s["Name"] for p in pages for s in p["SecretList"]]
    check(names == ["many/%03d" % i for i in range(110)], "paginated order")
    first = c.list_secrets(MaxResults=100)
    check(len(first["SecretList"]) == 100 and "NextToken" in first, "manual page 1")
    second = c.list_secrets(MaxResults=100, NextToken=first["NextToken"])
    check(len(second["SecretList"]) == 12 and "NextToken" not in second, "manual page 2")
    t = first["NextToken"]
    t = t[:5] + ("B" if t[5] == "A" else "A") + t[6:]
    check(err_code(c.list_secrets, NextToken=t) == "InvalidNextTokenException", "tampered token")
    check(len(c.list_secrets(Filters=[{"Key": "name", "Values": ["!many/"]}])["SecretList"]) == 2,
          "negated filter")
    check(len(c.list_secrets(Filters=[{"Key": "description", "Values": ["CHANGED"]}])["SecretList"]) == 1,
          "description filter case-insensitive")
    check(sum(len(p["SecretList"]) for p in c.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "all", "Values": ["MANY"]}])) == 110, "all filter")
    desc = c.list_secrets(SortOrder="desc", MaxResults=1)["SecretList"][0]["Name"]
    check(desc == "many/109", "sort desc")

    b = c.batch_get_secret_value(SecretIdList=["many/001", arn, "missing"])
    check(len(b["SecretValues"]) == 2 and b["Errors"][0]["ErrorCode"] == "ResourceNotFoundException",
          "batch get")
    bf = c.batch_get_secret_value(Filters=[{"Key": "name", "Values": ["many/00"]}], MaxResults=5)
    check(len(bf["SecretValues"]) == 5 and "NextToken" in bf, "batch get by filter")
    bf2 = c.batch_get_secret_value(Filters=[{"Key": "name", "Values": ["many/00"]}], MaxResults=5,
                                   NextToken=bf["NextToken"])
    check([v["Name"] for v in bf2["SecretValues"]] == ["many/%03d" % i for i in range(5, 10)],
          "batch page 2")

    # deletion lifecycle
    dl = c.delete_secret(SecretId="many/000", RecoveryWindowInDays=7)
    check(isinstance(dl["DeletionDate"], datetime.datetime), "deletion date")
    check(err_code(c.get_secret_value, SecretId="many/000") == "InvalidRequestException", "deleted get")
    check(err_code(c.create_secret, Name="many/000") == "InvalidRequestException", "pending name")
    check("DeletedDate" in c.describe_secret(SecretId="many/000"), "describe deleted")
    check(len(c.list_secrets(IncludePlannedDeletion=True, Filters=[{"Key": "name", "Values": ["many/000"]}])["SecretList"]) == 1,
          "IncludePlannedDeletion")
    c.restore_secret(SecretId="many/000")
    check(c.get_secret_value(SecretId="many/000")["SecretString"] == "v0", "restored")
    c.delete_secret(SecretId="many/001", ForceDeleteWithoutRecovery=True)
    check(err_code(c.describe_secret, SecretId="many/001") == "ResourceNotFoundException", "force deleted")
    check(err_code(c.delete_secret, SecretId="many/002", RecoveryWindowInDays=31) ==
          "InvalidParameterException", "window 31")
    check(err_code(c.delete_secret, SecretId="many/002", RecoveryWindowInDays=7,
                   ForceDeleteWithoutRecovery=True) == "InvalidParameterException", "window + force")

    # limits through the real client
    large_body(err_code(c.create_secret, Name="big", SecretString="x" * 65537),
               "InvalidParameterException", "65537-byte value")
    large_body(err_code(c.create_secret, Name="big", SecretString="x" * 65536), None,
               "65536-byte value")
    if err_code(c.describe_secret, SecretId="big"):
        c.create_secret(Name="big", SecretString="x" * 60000)
    check(err_code(c.create_secret, Name="n" * 513) == "InvalidParameterException", "513-byte name")
    check(err_code(c.tag_resource, SecretId="big",
                   Tags=[{"Key": "k%d" % i, "Value": "v"} for i in range(51)]) == "InvalidParameterException",
          "51 tags")

    # credentials
    bad = client(srv.port, secret="wrong")
    check(err_code(bad.list_secrets) == "InvalidSignatureException", "wrong secret key")
    unk = client(srv.port, akid="AKIDUNKNOWN000000000")
    check(err_code(unk.list_secrets) == "UnrecognizedClientException", "unknown key id")
    other = client(srv.port, AKID2, SECRET2)
    check(err_code(other.get_secret_value, SecretId=arn) == "ResourceNotFoundException", "isolation")
    check(other.list_secrets()["SecretList"] == [], "isolation list")

    # bad input sent raw: the AWS error, and no state change
    before = len(list(s for p in c.get_paginator("list_secrets").paginate() for s in p["SecretList"]))
    body = json.dumps({"Name": "evil", "SecretString": "x"})
    cases = [
        ("unsigned", dict(sign=False), 400, "MissingAuthenticationTokenException"),
        ("badly signed", dict(secret="nope"), 400, "InvalidSignatureException"),
        ("stale", dict(when=datetime.datetime.utcnow() - datetime.timedelta(minutes=20)), 400,
         "InvalidSignatureException"),
        ("future", dict(when=datetime.datetime.utcnow() + datetime.timedelta(minutes=20)), 400,
         "InvalidSignatureException"),
        ("target not signed", dict(sign_target=False), 400, None),
    ]
    for name, kw, status, code in cases:
        st, j, h = raw(srv.port, "CreateSecret", body, **kw)
        check(st == status and (code is None or j.get("__type") == code),
              "%s: got %s %s" % (name, st, j.get("__type")))
        check("x-amzn-RequestId" in h or "X-Amzn-Requestid" in h or
              any(k.lower() == "x-amzn-requestid" for k in h), "%s: request id" % name)
    st, j, _ = raw(srv.port, "CreateSecret", body, when=datetime.datetime.utcnow() - datetime.timedelta(minutes=20))
    check("Signature expired" in j.get("message", ""), "stale message")
    for name, target, b, code in [
        ("unknown target", "Frobnicate", "{}", "UnknownOperationException"),
        ("malformed JSON", "CreateSecret", '{"Name": ', "SerializationException"),
        ("wrong type", "CreateSecret", '{"Name": 42}', "InvalidParameterException"),
        ("wrong nested type", "CreateSecret", '{"Name": "evil", "Tags": "x"}', "InvalidParameterException"),
        ("unknown member", "CreateSecret", '{"Name": "evil", "Bogus": 1}', "InvalidParameterException"),
    ]:
        st, j, _ = raw(srv.port, target, b)
        check(st == 400 and j.get("__type") == code, "%s: got %s %s" % (name, st, j.get("__type")))
        on_raw_like(target, st, j)
    st, j, _ = raw(srv.port, "CreateSecret", json.dumps({"Name": "evil", "SecretString": "x" * 65537}))
    large_body(j.get("__type"), "InvalidParameterException", "oversized value (raw)")
    st, j, _ = raw(srv.port, "CreateSecret", json.dumps({"Name": "evil", "Description": "d" * 600000}))
    check(st == 413, "oversized body: got %s" % st)
    after = len(list(s for p in c.get_paginator("list_secrets").paginate() for s in p["SecretList"]))
    check(before == after, "no state change from bad input (%d -> %d)" % (before, after))
    check(err_code(c.describe_secret, SecretId="evil") == "ResourceNotFoundException", "evil absent")

    # kill -9: everything acknowledged survives
    c.put_secret_value(SecretId="many/050", SecretString="last-write")
    srv.kill9()
    srv.start()
    c = client(srv.port)
    check(c.get_secret_value(SecretId="many/050")["SecretString"] == "last-write", "after kill -9")
    check(len(list(s for p in c.get_paginator("list_secrets").paginate() for s in p["SecretList"])) == after,
          "count after kill -9")
    operations(c, srv)


def on_raw_like(target, status, body):
    """Shape-check a raw error response too (when the target is a real operation)."""
    global shape_checks
    if target not in MODEL.operation_names:
        check(body.get("__type") in COMMON_ERRORS, "raw error code")
        return
    op = MODEL.operation_model(target)
    known = {e.name for e in op.error_shapes}
    check(body.get("__type") in known or body.get("__type") in COMMON_ERRORS,
          "%s raw error %s in model" % (target, body.get("__type")))
    check(set(body) == {"__type", "message"}, "raw error members")
    shape_checks += 1


if __name__ == "__main__":
    sys.exit(main())
