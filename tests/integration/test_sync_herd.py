#!/usr/bin/env python3
"""keybridge-sync under a herd (issue 7 point 4), against the REAL keybridged (SQLite + SoftHSM2)
with small HSM budgets and a dir sink.

  1. 429 then success: keybridged's per-SPIFFE-ID request rate (1/s, burst 1) refuses the
     batchGet that follows the listing; the syncer waits the Retry-After (plus jitter) and the
     retry succeeds (server side: one 429, then a 200).
  2. deferred names fetched on retry: cloud budget 2 tokens/s, burst 3, data-key cache off, 10
     rotated secrets: the first batch serves 3 and defers 7 ({"error":"deferred"}); only the
     deferred names are asked again until all are served; exit 0.
  3. deadline exceeded: budget 0.5 token/s, burst 1, --deadline 6s, 9 rotated secrets and one
     revoked grant: what was fetched is applied, the rest is reported as deferred, exit non-zero,
     and nothing is deleted (the revoked secret's file is still there).
  4. Retry-After larger than the remaining deadline: budget 0.02 token/s (hint ~50 s),
     --deadline 20s: one batchGet, no retry, stop at once with the rest deferred, no delete.
  5. budget back to normal: the next run converges (updates the rest, makes the delete), exit 0.
No timing is asserted: every outcome is decided by bucket sizes and counts of calls.
"""
import base64
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_keybridged_api as kbapi  # noqa: E402
import test_sync_e2e as h  # noqa: E402
import test_sync_keybridged as skb  # noqa: E402

check = h.check
N = 10


def restart(srv, base_conf, extra):
    srv.stop()
    with open(srv.conf, "w") as f:
        f.write(base_conf + extra)
    srv.start()


def read(ddir, name):
    with open(os.path.join(ddir, name), "rb") as f:
        return f.read()


def main():
    if not os.path.exists(kbapi.KEYBRIDGED):
        print("SKIP: keybridged not built")
        return
    e = h.Env()
    srv = None
    try:
        srv, pki, admin, client = skb.setup_keybridged(e.dir)
        base_conf = open(srv.conf).read()
        for i in range(N):
            skb.add_secret(admin, f"s{i:02d}", f"v1 {i}".encode())
        ddir = os.path.join(e.dir, "secrets")
        os.mkdir(ddir, 0o700)
        env = e.sync_env(KEYBRIDGE_SYNC_SOURCE_URL=f"https://127.0.0.1:{srv.port}",
                         KEYBRIDGE_SYNC_SOURCE_SERVER_ID=kbapi.SERVER_ID,
                         KEYBRIDGE_SYNC_SOURCE_SVID_CERT_FILE=client[0],
                         KEYBRIDGE_SYNC_SOURCE_SVID_KEY_FILE=client[1],
                         KEYBRIDGE_SYNC_SOURCE_BUNDLE_FILE=pki.bundle,
                         KEYBRIDGE_SYNC_SINK_TARGET="dir:" + ddir,
                         KEYBRIDGE_SYNC_LOG_LEVEL="info")

        def rotate(names, tag):
            admin.c.close()
            admin.c = kbapi.Conn(*admin.args)
            for n in names:
                admin("PUT", f"/v1/admin/secrets/{n}",
                      {"content": base64.b64encode(f"{tag} {n}".encode()).decode()}, want=200)

        # 1. 429 then success (per-SPIFFE-ID request rate: the listing takes the only token)
        restart(srv, base_conf, "[fairness]\nrequests_per_second = 1\nrequest_burst = 1\n")
        m0 = skb.server_requests(srv)
        rc, s, err = e.run("sync", "--deadline", "30s", env=env)
        d = skb.delta(m0, skb.server_requests(srv))
        check(rc == 0 and s["ok"] and s["created"] == N, (rc, s, err[-2000:]))
        check(s["throttled"] >= 1 and h.calls(s, "keybridged.batchGet") >= 2, s)
        check(d.get(("/v1/secrets:batchGet", "429"), 0) >= 1 and
              d.get(("/v1/secrets:batchGet", "200"), 0) == 1, d)
        check('"keybridged_busy"' in err and '"retry_after":"1"' in err, err[-2000:])
        check(read(ddir, "s03") == b"v1 3", "content after the retry")
        print(f"ok: 429 then success ({d})")

        # 2. deferred names are asked again until served
        # (admin writes take data-center tokens: the cloud budget does not limit them)
        restart(srv, base_conf, "[hsm_budget]\ncloud_rate = 2\ncloud_burst = 3\ncache_ttl = 0\n")
        rotate([f"s{i:02d}" for i in range(N)], "v2")
        m0 = skb.server_requests(srv)
        rc, s, err = e.run("sync", env=env)
        d = skb.delta(m0, skb.server_requests(srv))
        check(rc == 0 and s["ok"] and s["updated"] == N and s["deferred"] == 0, (rc, s, err[-2000:]))
        check(s["hsm_fetches"] == N and s["throttled"] >= 1, s)
        check(h.calls(s, "keybridged.batchGet") >= 2 and
              d.get(("/v1/secrets:batchGet", "200"), 0) == h.calls(s, "keybridged.batchGet") and
              ("/v1/secrets:batchGet", "429") not in d, (s, d))
        check('"deferred_retry"' in err, err[-2000:])
        check(all(read(ddir, f"s{i:02d}") == f"v2 s{i:02d}".encode() for i in range(N)),
              "all rotated contents written")
        print(f"ok: deferred names fetched on retry ({h.calls(s, 'keybridged.batchGet')} batchGet)")

        # 3. deadline exceeded: partial apply, deferred reported, non-zero exit, no delete
        restart(srv, base_conf, "[hsm_budget]\ncloud_rate = 0.5\ncloud_burst = 1\ncache_ttl = 0\n")
        rotate([f"s{i:02d}" for i in range(N - 1)], "v3")
        admin("DELETE", "/v1/admin/grants", {"group": "payments", "secret": f"s{N - 1:02d}"},
              want=200)
        rc, s, err = e.run("sync", "--deadline", "6s", env=env)
        check(rc != 0 and not s["ok"] and s.get("error_code") == "limit", (rc, s))
        check(1 <= s["updated"] < N - 1 and s["deferred"] == (N - 1 - s["updated"]) + 1, s)
        check(s["deleted"] == 0 and s["failed"] == 0, s)
        check(h.calls(s, "keybridged.batchGet") >= 2, s)
        check(os.path.exists(os.path.join(ddir, f"s{N - 1:02d}")), "deleted in a partial run")
        new = [i for i in range(N - 1) if read(ddir, f"s{i:02d}") == f"v3 s{i:02d}".encode()]
        old = [i for i in range(N - 1) if read(ddir, f"s{i:02d}") == f"v2 s{i:02d}".encode()]
        check(len(new) == s["updated"] and len(new) + len(old) == N - 1, (new, old))
        check('"delete_deferred"' in err, err[-2000:])
        print(f"ok: deadline: {s['updated']} applied, {s['deferred']} deferred, exit {rc}, "
              "no delete")

        # 4. a Retry-After beyond the deadline: stop at once (one batchGet, no retry)
        restart(srv, base_conf,
                "[hsm_budget]\ncloud_rate = 0.02\ncloud_burst = 1\ncache_ttl = 0\n")
        before = s["updated"]
        rc, s, err = e.run("sync", "--deadline", "20s", env=env)
        check(rc != 0 and s.get("error_code") == "limit", (rc, s))
        check(h.calls(s, "keybridged.batchGet") == 1 and s["updated"] == 1, s)
        check(s["deferred"] == (N - 1 - before - 1) + 1 and s["deleted"] == 0, s)
        check('"deferred_giving_up"' in err, err[-2000:])
        check(os.path.exists(os.path.join(ddir, f"s{N - 1:02d}")), "deleted in a partial run")
        print("ok: Retry-After beyond the deadline: stopped after one batchGet")

        # a malformed --deadline is a usage error
        rc, s, err = e.run("sync", "--deadline", "soon", env=env)
        check(rc == 2 and s is None, (rc, s, err))

        # 5. the budget back: the next run converges and makes the delete
        restart(srv, base_conf, "")
        rc, s, err = e.run("sync", env=env)
        check(rc == 0 and s["ok"] and s["deleted"] == 1 and s["deferred"] == 0, (rc, s))
        check(not os.path.exists(os.path.join(ddir, f"s{N - 1:02d}")), "delete after convergence")
        check(all(read(ddir, f"s{i:02d}") == f"v3 s{i:02d}".encode() for i in range(N - 1)),
              "converged")
        print("ok: converged once the budget allows")
    finally:
        if srv:
            srv.stop()
        e.close()
    print("PASS")


if __name__ == "__main__":
    main()
