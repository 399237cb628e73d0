#!/usr/bin/env python3
"""listall.py - page through every secret with boto3's ListSecrets paginator (benchmark only).

    listall.py ENDPOINT REGION ACCESS_KEY_ID SECRET_KEY_FILE [FILTER_TAG_KEY]

Prints "<secrets> <pages> <seconds>": what keybridge-sync pays to read a cache's state (100 a page,
optionally filtered on a tag key as the syncer filters on its management tag).
"""
import sys
import time

import boto3

endpoint, region, akid, skfile = sys.argv[1:5]
tag = sys.argv[5] if len(sys.argv) > 5 else None
with open(skfile) as f:
    secret = f.read().strip()
sm = boto3.client(
    "secretsmanager",
    endpoint_url=endpoint,
    region_name=region,
    aws_access_key_id=akid,
    aws_secret_access_key=secret,
)
kw = {"PaginationConfig": {"PageSize": 100}}
if tag:
    kw["Filters"] = [{"Key": "tag-key", "Values": [tag]}]
t0 = time.monotonic()
n = pages = 0
for page in sm.get_paginator("list_secrets").paginate(**kw):
    n += len(page["SecretList"])
    pages += 1
print(n, pages, "%.1f" % (time.monotonic() - t0))
