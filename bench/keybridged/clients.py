#!/usr/bin/env python3
"""Benchmark clients for bench/keybridged/run.sh (not a test).

  clients.py latency PORT CA CERT KEY N        sequential GETs of /v1/secrets on one kept-alive
                                              connection; prints JSON {n, errors, p50_ms, p99_ms,
                                              max_ms}
  clients.py slowloris PORT CA CERT KEY N SECS N slow-loris connections for SECS seconds: each
                                              completes the TLS handshake with the given SVID,
                                              sends a partial request head and then one more
                                              header byte every second; closed ones are
                                              reopened. Prints JSON {opened, reopened, open_min,
                                              open_mean}.
"""
import http.client
import json
import socket
import ssl
import sys
import time


def ctx_for(ca, cert, key):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False  # SVIDs carry no DNS names; the chain is still verified
    ctx.load_cert_chain(cert, key)
    return ctx


def latency(port, ca, cert, key, n):
    ctx = ctx_for(ca, cert, key)
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    times, errors = [], 0
    for _ in range(n):
        t = time.perf_counter()
        try:
            c.request("GET", "/v1/secrets")
            r = c.getresponse()
            r.read()
            if r.status != 200:
                errors += 1
        except OSError:
            errors += 1
            c.close()
            c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    pct = lambda p: round(times[min(len(times) - 1, int(len(times) * p))], 3)
    print(json.dumps({"n": n, "errors": errors, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                      "max_ms": round(times[-1], 3)}))


def slowloris(port, ca, cert, key, n, secs):
    ctx = ctx_for(ca, cert, key)
    head = b"GET /v1/secrets HTTP/1.1\r\nHost: 127.0.0.1\r\n"

    def open_one():
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        t = ctx.wrap_socket(s)
        t.sendall(head)
        t.setblocking(False)
        return t

    conns = []
    for _ in range(n):
        try:
            conns.append(open_one())
        except OSError:
            pass
    opened, reopened, open_min, samples = len(conns), 0, len(conns), []
    print(json.dumps({"ready": len(conns)}), flush=True)
    end = time.time() + secs
    while time.time() < end:
        time.sleep(1)
        alive = []
        for t in conns:
            try:
                t.send(b"X")  # one more byte of a header name that never ends
                alive.append(t)
            except (OSError, ssl.SSLError):
                t.close()
        open_min = min(open_min, len(alive))
        while len(alive) < n and time.time() < end:
            try:
                alive.append(open_one())
                reopened += 1
            except OSError:
                break
        conns = alive
        samples.append(len(conns))
    for t in conns:
        t.close()
    print(json.dumps({"opened": opened, "reopened": reopened, "open_min": open_min,
                      "open_mean": round(sum(samples) / max(1, len(samples)), 1)}))


if __name__ == "__main__":
    mode, port, ca, cert, key = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
    if mode == "latency":
        latency(port, ca, cert, key, int(sys.argv[6]))
    else:
        slowloris(port, ca, cert, key, int(sys.argv[6]), float(sys.argv[7]))
