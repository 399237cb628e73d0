#!/usr/bin/env python3
"""keybridge-sync as a Lambda custom runtime, driven by a small Runtime API written here
(http.server): /invocation/next events, /response with the summary, /error on failure,
/runtime/init/error at start-up, and the EMF record on stdout."""
import http.server
import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sync_e2e import SYNC, Env, check, free_port  # noqa: E402


class RuntimeAPI:
    def __init__(self, events, deadline_s=None):
        self.events = list(events)  # request ids to hand out
        self.deadline_s = deadline_s  # None: far future; else seconds from each /next
        self.deadlines = {}  # request id -> deadline (epoch seconds) handed out
        self.responses = {}
        self.errors = {}
        self.error_times = {}
        self.init_errors = []
        self.port = free_port()
        self.done = threading.Event()
        api = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != "/2018-06-01/runtime/invocation/next":
                    return self._reply(404)
                if not api.events:
                    api.done.set()
                    return self._reply(500, b'{"errorMessage":"no more events"}')
                rid = api.events.pop(0)
                dl = "9999999999999"
                if api.deadline_s is not None:
                    import time
                    api.deadlines[rid] = time.time() + api.deadline_s
                    dl = str(int(api.deadlines[rid] * 1000))
                self._reply(200, b'{"source":"aws.events"}',
                            [("Lambda-Runtime-Aws-Request-Id", rid),
                             ("Lambda-Runtime-Deadline-Ms", dl),
                             ("Content-Type", "application/json")])

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"null")
                parts = self.path.split("/")
                if self.path == "/2018-06-01/runtime/init/error":
                    api.init_errors.append((body, self.headers.get("Lambda-Runtime-Function-Error-Type")))
                elif len(parts) == 6 and parts[4] and parts[5] == "response":
                    api.responses[parts[4]] = body
                elif len(parts) == 6 and parts[5] == "error":
                    import time
                    api.errors[parts[4]] = (body, self.headers.get("Lambda-Runtime-Function-Error-Type"))
                    api.error_times[parts[4]] = time.time()
                else:
                    return self._reply(404)
                self._reply(202, b'{"status":"OK"}')

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def main():
    e = Env()
    try:
        e.start_cache()
        fake = e.start_fake()
        fake.put("db-password", b"hunter2")
        fake.put("api-key", b"k1")

        api = RuntimeAPI(["req-1", "req-2", "req-3"])
        env = e.sync_env(AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{api.port}",
                         AWS_SESSION_TOKEN="FwoGZXIvYXdzEXAMPLEsessiontoken")
        # invocation 1: creates; 2: no-op; then keybridged goes away: 3 fails -> /error
        p = subprocess.Popen([SYNC], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def stop_fake_after_two():
            import time
            while len(api.responses) + len(api.errors) < 2:
                time.sleep(0.02)
            fake.stop()

        t = threading.Thread(target=stop_fake_after_two)
        t.start()
        out, err = p.communicate(timeout=60)
        t.join()
        e.fake = None
        check(p.returncode != 0, "runtime loop should end when /next fails")
        r1, r2 = api.responses.get("req-1"), api.responses.get("req-2")
        check(r1 and r1["created"] == 2 and r1["ok"] is True, (api.responses, err))
        check(r2 and r2["unchanged"] == 2 and r2["calls"] == {"keybridged.list": 1, "ListSecrets": 1}, r2)
        check("req-3" in api.errors, api.errors)
        body, etype = api.errors["req-3"]
        check(etype == "SyncFailed" and body["errorType"] == "SyncFailed", body)
        check("cannot list secrets" in body["errorMessage"], body)
        lines = [json.loads(l) for l in out.decode().splitlines()]
        check(len(lines) == 3, lines)
        for l in lines:
            m = l["_aws"]["CloudWatchMetrics"][0]
            check(m["Namespace"] == "keybridge/sync" and m["Dimensions"] == [["Application"]], l)
            check(any(x["Name"] == "created" for x in m["Metrics"]), l)
            check(isinstance(l["_aws"]["Timestamp"], int) and l["Application"] in ("payments", "unknown"), l)
        check(lines[0]["created"] == 2 and lines[2]["ok"] is False, lines)
        print("ok: Lambda loop: /response summaries, /error on failure, EMF on stdout")
        api.stop()

        # start-up failure -> /runtime/init/error
        api = RuntimeAPI(["req-x"])
        bad = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{api.port}")
        bad.pop("KEYBRIDGE_SYNC_SOURCE_SERVER_ID")
        p = subprocess.run([SYNC], env=bad, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        check(p.returncode == 3 and len(api.init_errors) == 1, (p.returncode, api.init_errors))
        body, etype = api.init_errors[0]
        check(body["errorType"] == "Runtime.InitError" and "server_id" in body["errorMessage"], body)
        check(api.events == ["req-x"], "no invocation should be taken after an init error")
        print("ok: start-up failure posted to /runtime/init/error")
        api.stop()
    finally:
        e.close()
    print("PASS")


if __name__ == "__main__":
    main()
