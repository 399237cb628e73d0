#!/usr/bin/env python3
"""sign.py - sign one Secrets Manager request with botocore for replay by ab/wrk (benchmark only).

    sign.py URL REGION ACCESS_KEY_ID SECRET_KEY_FILE TARGET BODY_FILE

Prints two lines: the X-Amz-Date value and the Authorization value. The signed headers are
content-type, host, x-amz-date and x-amz-target (what keybridge-cache requires); ab and wrk send
the same Host (127.0.0.1:PORT) and Content-Type, so the request verifies for its 15 minutes.
"""
import sys

import botocore.auth
import botocore.awsrequest
import botocore.credentials

url, region, akid, skfile, target, bodyfile = sys.argv[1:]
with open(skfile) as f:
    secret = f.read().strip()
with open(bodyfile, "rb") as f:
    body = f.read()
req = botocore.awsrequest.AWSRequest(
    method="POST",
    url=url,
    data=body,
    headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
)
botocore.auth.SigV4Auth(
    botocore.credentials.Credentials(akid, secret), "secretsmanager", region
).add_auth(req)
print(req.headers["X-Amz-Date"])
print(req.headers["Authorization"])
