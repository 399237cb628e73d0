#!/usr/bin/env python3
"""keybridged under a herd (issue 7, points 1-3), against the real server with a tiny HSM budget.

Checks: an empty budget answers a content read with 429 + Retry-After and makes no token
operation (keybridged_hsm_operations_total{op="unwrap"} unchanged across the refused request);
listing is never limited; a cloud herd that empties the cloud bucket does not starve a
data-center client; a batch serves what fits (cached keys cost nothing) and marks the rest
{"error":"deferred","retry_after":N}; the Keywhiz endpoints obey the same budget; 50 reads of one
shared secret by 5 clients cost 1 unwrap (data-key cache) and a new version drops the cached key;
per-SPIFFE-ID connection cap (429, connection closed, released on close) and request rate (429 +
Retry-After). Helpers (PKI, Server, SoftHSM) come from test_keybridged_api.py.
"""
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_keybridged_api as kt  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)
    return cond


class Conn:
    """One kept-alive mTLS connection that also returns the response headers."""

    def __init__(self, srv, pki, cert):
        ctx = ssl.create_default_context(cafile=pki.bundle)
        ctx.load_cert_chain(cert[0], cert[1])
        self.c = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)

    def req(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        self.c.request(method, path, body=data,
                       headers={"Content-Type": "application/json"} if data else {})
        r = self.c.getresponse()
        out = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, out

    def close(self):
        self.c.close()


def metrics(srv):
    out = subprocess.run(["curl", "-sS", "--max-time", "5",
                          f"http://127.0.0.1:{srv.mport}/metrics"],
                         capture_output=True, text=True).stdout
    m = {}
    for line in out.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                m[k] = float(v)
            except ValueError:
                pass
    return m


def unwraps(srv):
    return metrics(srv).get('keybridged_hsm_operations_total{op="unwrap"}', -1)


def retry_after_ok(h):
    v = h.get("retry-after", "")
    return v.isdigit() and int(v) >= 1


def b64(s):
    import base64
    return base64.b64encode(s.encode()).decode()


def main():
    if not os.path.exists(kt.KEYBRIDGED):
        print("SKIP: keybridged not built", file=sys.stderr)
        return 0
    d = tempfile.mkdtemp(prefix="kbherd.")
    srv = None
    conns = []
    try:
        hsm = kt.make_hsm(d)
        pki = kt.PKI(f"{d}/pki")
        srv = kt.Server(d, pki, hsm)
        base_conf = open(srv.conf).read()
        srv.bootstrap()
        srv.start()
        admin = pki.leaf("admin", f"URI:{kt.ADMIN}")
        cloud_ids = [f"spiffe://example.org/lambda/acct/{i}/fn/sync" for i in range(1, 6)]
        dc_id = "spiffe://example.org/ns/payments/sa/api"
        cloud = [pki.leaf(f"cloud{i}", f"URI:{x}") for i, x in enumerate(cloud_ids)]
        dc = pki.leaf("dc", f"URI:{dc_id}")

        # -- phase 1 (default budget): groups, clients, secrets
        a = Conn(srv, pki, admin)
        st, _, out = a.req("POST", "/v1/admin/groups", {"name": "g"})
        check(st == 201, f"group {st} {out[:200]!r}")
        for i, x in enumerate(cloud_ids + [dc_id]):
            st, _, _ = a.req("POST", "/v1/admin/clients", {"spiffe_id": x, "app_name": f"app{i}"})
            check(st == 201, f"client {x}: {st}")
            st, _, _ = a.req("POST", "/v1/admin/memberships", {"client": x, "group": "g"})
            check(st == 201, f"membership {x}: {st}")
        names = [f"s{i:02d}" for i in range(20)] + ["shared"]
        for n in names:
            st, _, out = a.req("POST", "/v1/admin/secrets",
                               {"name": n, "content": b64("content of " + n), "cloud_sync": True})
            check(st == 201, f"create {n}: {st} {out[:200]!r}")
            st, _, _ = a.req("POST", "/v1/admin/grants", {"group": "g", "secret": n})
            check(st == 201, f"grant {n}: {st}")
        a.close()
        srv.stop()

        # -- phase 2: a tiny budget. Rates so low (one token per 20 s) that nothing refills
        # during the test: every outcome below is decided by the bursts alone, not by timing.
        # The class shares fit in the global bucket (4 + 4 <= 8).
        with open(srv.conf, "w") as f:
            f.write(base_conf + """[hsm_budget]
global_rate = 0.1
global_burst = 8
cloud_rate = 0.05
cloud_burst = 4
dc_rate = 0.05
dc_burst = 4
cache_ttl = 60s
[fairness]
max_connections_per_client = 2
""")
        srv.start()
        c0 = Conn(srv, pki, cloud[0])
        conns.append(c0)

        # 1. a cloud client drains the cloud bucket (burst 4); the refused read makes no token
        # operation and carries the time until a token is due (about 20 s)
        for i in range(4):
            st, _, out = c0.req("GET", f"/v1/secrets/s{i:02d}")
            check(st == 200 and json.loads(out)["content"] == b64(f"content of s{i:02d}"),
                  f"cloud read s{i:02d}: {st}")
        u0 = unwraps(srv)
        st, h, out = c0.req("GET", "/v1/secrets/s04")
        u1 = unwraps(srv)
        check(st == 429, f"5th cloud read: {st} {out[:200]!r}")
        check(retry_after_ok(h) and 10 <= int(h["retry-after"]) <= 20,
              f"429 carries Retry-After ~20: {h.get('retry-after')}")
        check(st == 429 and json.loads(out).get("error") == "limit", f"429 body {out[:200]!r}")
        check(b"content" not in out, "429 carries no content")
        check(u0 == u1 and u0 > 0, f"no unwrap for the refused read ({u0} -> {u1})")

        # 2. listing is never limited by the budget
        st, _, out = c0.req("GET", "/v1/secrets")
        check(st == 200 and len(json.loads(out)["secrets"]) == 21, f"list while empty: {st}")
        st, _, out = c0.req("GET", "/secrets")
        check(st == 200 and len(json.loads(out)) == 21, f"Keywhiz list while empty: {st}")

        # 3. the data center is not starved by the cloud herd: a herd of 4 more cloud clients
        # is refused, while the DC client still gets its share
        others = [Conn(srv, pki, c) for c in cloud[1:]]
        conns += others
        u0 = unwraps(srv)
        herd = [o.req("GET", f"/v1/secrets/s{5 + k:02d}")[0] for k, o in enumerate(others)]
        check(herd == [429] * 4, f"cloud herd refused: {herd}")
        check(unwraps(srv) == u0, "no unwrap for the refused herd")
        cd = Conn(srv, pki, dc)
        conns.append(cd)
        for n in ("s10", "s11", "s12"):
            st, _, out = cd.req("GET", f"/v1/secrets/{n}")
            check(st == 200 and json.loads(out)["content"] == b64("content of " + n),
                  f"DC read {n} during the cloud herd: {st} {out[:200]!r}")
        st, h, _ = c0.req("GET", "/v1/secrets/s13")
        check(st == 429 and retry_after_ok(h), f"cloud still refused after the DC reads: {st}")

        # 4. Keywhiz endpoints obey the same budget
        st, h, out = c0.req("GET", "/secret/s14")
        check(st == 429 and retry_after_ok(h) and b'"secret"' not in out, f"Keywhiz get: {st}")
        st, h, out = c0.req("POST", "/batchsecret", {"secrets": ["s00", "s15"]})
        check(st == 429 and retry_after_ok(h), f"Keywhiz batch with an uncached name: {st}")
        st, _, out = c0.req("POST", "/batchsecret", {"secrets": ["s00", "s01"]})
        check(st == 200 and len(json.loads(out)) == 2, f"Keywhiz batch of cached keys: {st}")
        st, _, out = c0.req("GET", "/secret/s00")
        check(st == 200 and json.loads(out)["secret"] == b64("content of s00"),
              f"Keywhiz get of a cached key: {st}")

        # 5. a batch: the names that fit are served (cached data keys cost no token), the rest
        # are deferred with the same hint
        u0 = unwraps(srv)
        st, h, out = c0.req("POST", "/v1/secrets:batchGet",
                            {"names": ["s00", "s16", "s01", "s17", "nope"]})
        check(st == 200, f"batch status {st} {out[:300]!r}")
        if st == 200:
            ent = {e["name"]: e for e in json.loads(out)["secrets"]}
            check(ent["s00"].get("content") == b64("content of s00"), f"s00 served {ent['s00']}")
            check(ent["s01"].get("content") == b64("content of s01"), "s01 served")
            check(ent["nope"].get("error") == "not_found", f"missing name {ent['nope']}")
            for n in ("s16", "s17"):
                check(ent[n].get("error") == "deferred" and "content" not in ent[n] and
                      ent[n].get("retry_after") == int(h.get("retry-after", "0")) and
                      ent[n]["retry_after"] >= 10, f"deferred entry {ent[n]} / {h}")
        check(unwraps(srv) == u0, "no unwrap for the batch")

        # 6. the cache: the DC client reads a shared secret (1 unwrap: its last DC token), then
        # 49 more reads by the 5 cloud clients (whose bucket is empty) all hit the cache
        readers = [c0] + others
        m0 = metrics(srv)
        st, _, first = cd.req("GET", "/v1/secrets/shared")
        check(st == 200, f"shared secret read: {st}")
        ok = 0
        for k in range(49):
            st, _, out = readers[k % 5].req("GET", "/v1/secrets/shared")
            ok += st == 200 and out == first
        m1 = metrics(srv)
        check(ok == 49, f"49 further reads all served from the cache ({ok})")
        du = m1['keybridged_hsm_operations_total{op="unwrap"}'] - \
            m0['keybridged_hsm_operations_total{op="unwrap"}']
        check(du == 1, f"50 reads of one shared secret cost {du} unwraps")
        check(m1["keybridged_dkcache_hits_total"] - m0["keybridged_dkcache_hits_total"] == 49,
              "cache hits counted")
        check(m1["keybridged_dkcache_misses_total"] - m0["keybridged_dkcache_misses_total"] == 1,
              "cache misses counted")
        check(m1['keybridged_hsm_budget_tokens{bucket="cloud"}'] < 1 and
              'keybridged_hsm_budget_tokens{bucket="global"}' in m1 and
              m1['keybridged_hsm_budget_tokens{bucket="dc"}'] < 1, f"bucket levels {m1}")
        check(m1['keybridged_hsm_budget_refused_total{class="cloud"}'] >= 8, "refusals counted")
        check(m1.get('keybridged_requests_total{route="/v1/secrets/{name}",status="429"}', 0)
              >= 6, "429s counted per route")

        # 7. an admin write needs a token too: refused when the DC bucket is empty, nothing
        # changes (no wrap, same version)
        a = Conn(srv, pki, admin)
        conns.append(a)
        w0 = metrics(srv)['keybridged_hsm_operations_total{op="wrap"}']
        st, h, out = a.req("PUT", "/v1/admin/secrets/shared", {"content": b64("v2")})
        check(st == 429 and retry_after_ok(h), f"write while the DC bucket is empty: {st}")
        st, _, out = a.req("GET", "/v1/admin/secrets/shared")
        check(st == 200 and json.loads(out)["version"] == 1, f"version unchanged {out[:200]!r}")
        check(metrics(srv)['keybridged_hsm_operations_total{op="wrap"}'] == w0, "no wrap")

        # 8. fairness: at most 2 connections per SPIFFE ID (counted from the first request)
        for c in conns:
            c.close()
        conns = []
        time.sleep(0.3)
        f1, f2, f3 = Conn(srv, pki, dc), Conn(srv, pki, dc), Conn(srv, pki, dc)
        conns += [f1, f2, f3]
        check(f1.req("GET", "/v1/secrets")[0] == 200, "1st connection")
        check(f2.req("GET", "/v1/secrets")[0] == 200, "2nd connection")
        st, h, out = f3.req("GET", "/v1/secrets")
        check(st == 429 and retry_after_ok(h) and h.get("connection", "").lower() == "close",
              f"3rd connection of one ID refused and closed: {st} {h}")
        other = Conn(srv, pki, cloud[0])
        conns.append(other)
        check(other.req("GET", "/v1/secrets")[0] == 200, "another ID is not affected")
        f1.close()
        ok = False
        for _ in range(50):  # the server sees the close asynchronously
            f4 = Conn(srv, pki, dc)
            st = f4.req("GET", "/v1/secrets")[0]
            f4.close()
            if st == 200:
                ok = True
                break
            time.sleep(0.1)
        check(ok, "a closed connection frees its slot")
        check(metrics(srv).get('keybridged_fairness_refused_total{cap="connections"}', 0) >= 1,
              "connection refusals counted")
        for c in conns:
            c.close()
        conns = []
        srv.stop()

        # -- phase 3: per-ID request rate (default budget), and a new version wipes the cache
        with open(srv.conf, "w") as f:
            f.write(base_conf + """[fairness]
requests_per_second = 1
request_burst = 3
""")
        srv.start()
        r = Conn(srv, pki, dc)
        conns.append(r)
        sts = [r.req("GET", "/v1/secrets") for _ in range(4)]
        check([s[0] for s in sts[:3]] == [200, 200, 200], f"burst of 3: {[s[0] for s in sts]}")
        check(sts[3][0] == 429 and retry_after_ok(sts[3][1]), f"4th request: {sts[3][0]}")
        check(metrics(srv).get('keybridged_fairness_refused_total{cap="rate"}', 0) >= 1,
              "rate refusals counted")
        rc = Conn(srv, pki, cloud[1])
        conns.append(rc)
        st, _, out = rc.req("GET", "/v1/secrets/shared")
        check(st == 200 and json.loads(out)["content"] == b64("content of shared"),
              f"another ID has its own rate; v1 read: {st}")
        e0 = metrics(srv)["keybridged_dkcache_entries"]
        a = Conn(srv, pki, admin)
        conns.append(a)
        st, _, out = a.req("PUT", "/v1/admin/secrets/shared", {"content": b64("v2")})
        check(st == 200, f"new version of shared: {st} {out[:200]!r}")
        e1 = metrics(srv)["keybridged_dkcache_entries"]
        check(e0 >= 1 and e1 == e0 - 1, f"the old version's key was wiped ({e0} -> {e1})")
        st, _, out = rc.req("GET", "/v1/secrets/shared")
        check(st == 200 and json.loads(out)["content"] == b64("v2"), f"v2 read: {st}")
        srv.stop()
    finally:
        for c in conns:
            try:
                c.close()
            except Exception:
                pass
        if srv:
            srv.stop()
        if failures:
            print(f"kept {d} for inspection", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        return 1
    print("ok: keybridged herd protection")
    return 0


if __name__ == "__main__":
    sys.exit(main())
