#!/usr/bin/env python3
"""A throwaway PostgreSQL server for tests (Debian's postgresql package, no mocks).

    from pgserver import PgServer
    with PgServer() as pg:
        pg.url          # postgresql://kb@127.0.0.1:PORT/kb?passfile=...&sslmode=disable
        pg.psql("SELECT 1")
        pg.stop(); pg.start()   # a restart keeps data, port and password
        pg.new_database("other")  # a second, empty database for the same role: its URL

What it does: initdb into a fresh temporary directory as an unprivileged user (tests run as
root: the `postgres` user, else `nobody`; not root: the caller itself), starts `postgres` on
127.0.0.1 only, on a random free port, with its unix socket in the temporary directory (0700,
owned by that user), creates the role `kb` (password random, stored only in a 0600 libpq passfile)
and the database `kb` owned by it, and removes everything on exit. The superuser is reachable
only through the unix socket in that directory (trust); TCP needs scram-sha-256.

Shell use (the server lives while the command runs; its URL is in $KB_PG_URL, the passfile in
$KB_PG_PASSFILE, the socket directory in $KB_PG_SOCKDIR, the port in $KB_PG_PORT):

    python3 tests/integration/pgserver.py run -- ./build/test_store
    python3 tests/integration/pgserver.py run --ssl -- CMD   # TLS only; $KB_PG_CA, verify-full URL
    python3 tests/integration/pgserver.py check   # exit 0 if a server can be started here

Environment: KB_PG_BINDIR overrides the binaries' directory (default: the newest
/usr/lib/postgresql/*/bin, else pg_config --bindir).
"""
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROLE = "kb"
DB = "kb"
START_TIMEOUT = 30


def bindir():
    d = os.environ.get("KB_PG_BINDIR")
    if d:
        return d
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")[4].split(".")])
    if cands:
        return os.path.dirname(cands[-1])
    try:
        return subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "/usr/lib/postgresql/15/bin"


def available():
    return os.path.exists(os.path.join(bindir(), "postgres"))


def _run_as():
    """(uid, gid) to run the server as: postgres initdb refuses root."""
    if os.geteuid() != 0:
        return None
    import pwd
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            continue
    raise RuntimeError("pgserver: running as root and neither 'postgres' nor 'nobody' exists")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _children(pid):
    out = []
    for st in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(st) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(st.split("/")[2]))
    return out


class PgServer:
    def __init__(self, base=None, quiet=True, ssl=False):
        self.bindir = bindir()
        self.owner = _run_as()
        self.base = tempfile.mkdtemp(prefix="kbpg-", dir=base)
        self.data = os.path.join(self.base, "data")
        self.sockdir = os.path.join(self.base, "sock")
        self.logfile = os.path.join(self.base, "postgres.log")
        self.passfile = os.path.join(self.base, "passfile")
        self.password = secrets.token_urlsafe(24)
        self.port = None
        self.proc = None
        self.quiet = quiet
        self.ssl = ssl
        self.ca_file = None
        self._setup()

    # ---- internals ----
    def _pre(self):
        if self.owner:
            os.setgid(self.owner[1])
            os.setgroups([])
            os.setuid(self.owner[0])
        os.umask(0o077)

    def _chown(self, path):
        if self.owner:
            os.chown(path, self.owner[0], self.owner[1])

    def _bin(self, name):
        return os.path.join(self.bindir, name)

    def _setup(self):
        os.chmod(self.base, 0o700)
        self._chown(self.base)
        # The parent must be traversable by the server's user.
        parent = os.path.dirname(self.base)
        if self.owner and not os.stat(parent).st_mode & 0o001:
            raise RuntimeError(f"pgserver: {parent} is not traversable by uid {self.owner[0]}")
        os.mkdir(self.sockdir, 0o700)
        self._chown(self.sockdir)
        r = subprocess.run([self._bin("initdb"), "-D", self.data, "-U", "postgres",
                            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                            "--locale=C", "--no-sync"], preexec_fn=self._pre,
                           capture_output=True, text=True, cwd=self.base)
        if r.returncode != 0:
            raise RuntimeError(f"pgserver: initdb failed: {r.stdout}{r.stderr}")
        if self.ssl:
            self._make_certs()
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            # superuser only through the private socket; everyone else over loopback TCP with
            # scram (with ssl=True: over TLS only).
            f.write("local all all trust\n" +
                    ("hostssl" if self.ssl else "host") + " all all 127.0.0.1/32 scram-sha-256\n")
        self.start()
        self.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {DB} OWNER {ROLE}")
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:*:*:{ROLE}:{self.password}\n")
        os.chmod(self.passfile, 0o600)

    def _make_certs(self):
        """A test CA and a server certificate for 127.0.0.1 / localhost (openssl CLI)."""
        d = os.path.join(self.base, "tls")
        os.mkdir(d, 0o755)
        self.ca_file = os.path.join(d, "ca.pem")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", f"{d}/ca.key", "-out", self.ca_file, "-days", "2",
            "-subj", "/CN=kbtest pg ca", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")
        run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr",
            "-subj", "/CN=127.0.0.1")
        with open(f"{d}/ext", "w") as f:
            f.write("subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                    "extendedKeyUsage = serverAuth\n")
        run("openssl", "x509", "-req", "-in", f"{d}/server.csr", "-CA", self.ca_file,
            "-CAkey", f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/server.pem", "-days", "2",
            "-extfile", f"{d}/ext")
        os.chmod(f"{d}/server.key", 0o600)
        self._chown(f"{d}/server.key")
        self._chown(f"{d}/server.pem")
        os.unlink(f"{d}/ca.key")

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    # ---- public ----
    @property
    def url(self):
        return self.url_for(DB)

    def url_for(self, db):
        tls = (f"sslmode=verify-full&sslrootcert={self.ca_file}" if self.ssl
               else "sslmode=disable")
        return (f"postgresql://{ROLE}@127.0.0.1:{self.port}/{db}"
                f"?passfile={self.passfile}&{tls}&connect_timeout=5")

    def start(self):
        """Start (or restart after stop) the server; keeps the port once one was chosen."""
        if self.proc and self.proc.poll() is None:
            return
        tries = 1 if self.port else 5
        for _ in range(tries):
            if not self.port or tries > 1:
                self.port = _free_port()
            log = open(self.logfile, "a")
            self.proc = subprocess.Popen(
                [self._bin("postgres"), "-D", self.data, "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sockdir}",
                 "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200",
                 "-c", "shared_buffers=16MB", "-c", "log_min_messages=warning",
                 "-c", "logging_collector=off"] +
                (["-c", "ssl=on", "-c", f"ssl_cert_file={self.base}/tls/server.pem",
                  "-c", f"ssl_key_file={self.base}/tls/server.key"] if self.ssl else []),
                preexec_fn=self._pre, stdout=log, stderr=log, cwd=self.base)
            log.close()
            deadline = time.time() + START_TIMEOUT
            while time.time() < deadline and self.proc.poll() is None:
                r = subprocess.run([self._bin("pg_isready"), "-q", "-h", self.sockdir, "-p",
                                    str(self.port), "-U", "postgres", "-d", "postgres"],
                                   capture_output=True)
                if r.returncode == 0 and self._listening():
                    return
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        raise RuntimeError(f"pgserver: postgres did not start; log:\n{self.log()}")

    def stop(self, mode="fast"):
        """Stop the server: 'fast' (SIGINT: disconnect clients, clean shutdown), 'smart'
        (SIGTERM... waits for clients), 'immediate' (SIGQUIT) or 'kill' (SIGKILL, a crash)."""
        if not self.proc or self.proc.poll() is not None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT,
               "kill": signal.SIGKILL}[mode]
        children = _children(self.proc.pid)
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # after a SIGKILL the backends notice the postmaster's death and exit on their own; the
        # next start refuses while they still hold the shared memory
        deadline = time.time() + 20
        while children and time.time() < deadline:
            children = [c for c in children if os.path.exists(f"/proc/{c}")]
            time.sleep(0.05)

    def psql(self, sql, db="postgres", user="postgres", check=True):
        """Run SQL as the superuser through the private socket; returns stdout (unaligned,
        tuples only, '|' separated)."""
        r = subprocess.run([self._bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-h", self.sockdir, "-p", str(self.port), "-U", user, "-d", db,
                            "-c", sql], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"pgserver: psql failed: {sql!r}: {r.stderr.strip()}")
        return r.stdout

    def new_database(self, name):
        """An empty database owned by the test role; returns its URL."""
        self.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url_for(name)

    def log(self):
        try:
            with open(self.logfile) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def env(self):
        e = {"KB_PG_URL": self.url, "KB_PG_PASSFILE": self.passfile,
             "KB_PG_SOCKDIR": self.sockdir, "KB_PG_PORT": str(self.port)}
        if self.ssl:
            e["KB_PG_CA"] = self.ca_file
        return e

    def close(self):
        self.stop("fast")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv):
    if len(argv) >= 1 and argv[0] == "check":
        if not available():
            print(f"pgserver: no postgres in {bindir()}", file=sys.stderr)
            return 1
        with PgServer() as pg:
            print(pg.psql("SELECT version()").strip())
        return 0
    ssl = len(argv) >= 2 and argv[0] == "run" and argv[1] == "--ssl"
    if ssl:
        argv = argv[:1] + argv[2:]
    if len(argv) >= 2 and argv[0] == "run" and argv[1] == "--" and len(argv) > 2:
        with PgServer(ssl=ssl) as pg:
            env = dict(os.environ)
            env.update(pg.env())
            r = subprocess.run(argv[2:], env=env)
            if r.returncode != 0 and os.environ.get("KB_PG_SHOWLOG"):
                print(pg.log(), file=sys.stderr)
            return r.returncode
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
