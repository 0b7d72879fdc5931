"""The test bench of the Redis scale-out suite (issue 11), stdlib only
(the clients are in clients.py, the fake Redis in fake_redis.py).

- `Redis`: a private redis-server in its own temporary directory, on a unix
  socket (and a TCP port when asked, chosen free and retried on collision),
  with the persistence options of the test. `kill9()`, `stop()` (SIGSTOP),
  `cont()`, `restart()` on the same directory and socket.
- `Hub`: one ssecast process (the binary in $SSECAST_BIN), its log in a
  file, its port from its "listening on" line, ready when /health answers.
- `Sse`: a subscriber over a raw socket: response head, de-chunking, the
  SSE fields (id, event, data), comments (heartbeats) with their arrival
  time, every read under a deadline.
- `Publisher`: POST /events/broadcast on one keep-alive http.client
  connection, reopened after an error.
- `FakeRedis`: a TCP proxy in front of a real Redis whose mode can be
  switched: pass, garbage, close mid-reply, slow.
- `Lab`: the owner of everything a test starts. `with Lab() as lab:` ends
  every process by its PID (SIGCONT first, then SIGKILL) and removes the
  directories whatever happens; an atexit hook and SIGTERM/SIGINT handlers
  do the same for what is still running when the runner dies, and children
  get PR_SET_PDEATHSIG so they die with it even after SIGKILL.

Readiness is always a signal (a PONG, a log line, a /health answer, a
status field, an event), never a sleep.
"""
import atexit
import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
BIN = os.environ.get("SSECAST_BIN", os.path.join(REPO, "target", "release", "ssecast"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

from clients import Answer, Event, Publisher, Sse, Timeout, sync  # noqa: E402,F401 (re-exported)
from fake_redis import FakeRedis  # noqa: E402

# ---------------------------------------------------------------------------
# Process bookkeeping
# ---------------------------------------------------------------------------

_live = {}  # pid -> Popen, everything started and not yet reaped
_dirs = []
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # Runs in the child between fork and exec: SIGKILL when the runner dies.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv, **kw):
    p = subprocess.Popen(argv, preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL, **kw)
    _live[p.pid] = p
    return p


def end(p):
    """Resume (it may be stopped) and kill one process we started, by PID."""
    if p is None or p.pid not in _live:
        return
    if p.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                break
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    _live.pop(p.pid, None)


def end_all():
    for p in list(_live.values()):
        end(p)
    for d in _dirs:
        shutil.rmtree(d, ignore_errors=True)
    _dirs.clear()


atexit.register(end_all)


def _on_signal(signum, _frame):
    end_all()
    sys.exit(128 + signum)


for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_s, _on_signal)


def tempdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    _dirs.append(d)
    return d


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what, interval=0.02):
    """Polls `pred` (a readiness signal) until it returns something true."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except (OSError, http.client.HTTPException, ValueError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)


# ---------------------------------------------------------------------------
# RESP (just enough to ping and inspect a Redis)
# ---------------------------------------------------------------------------

def resp_encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespError(Exception):
    pass


class RespConn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            b = self.sock.recv(65536)
            if not b:
                raise ConnectionError("redis closed the connection")
            self.buf += b
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            b = self.sock.recv(65536)
            if not b:
                raise ConnectionError("redis closed the connection")
            self.buf += b
        v, self.buf = self.buf[:n], self.buf[n + 2:]
        return v

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError(f"not RESP: {line!r}")

    def cmd(self, *args):
        self.sock.sendall(resp_encode(*args))
        v = self.read()
        if isinstance(v, RespError):
            raise v
        return v

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------------------
# A private redis-server
# ---------------------------------------------------------------------------

class Redis:
    """redis-server in a temporary directory. `opts` are extra config
    arguments, e.g. ["--appendonly", "yes", "--appendfsync", "always"]."""

    def __init__(self, lab, opts=(), tcp=False):
        if not os.access(REDIS_SERVER, os.X_OK):
            raise AssertionError(f"redis-server not found ({REDIS_SERVER}): install Debian's redis-server")
        self.lab = lab
        self.dir = tempdir("ssecast-redis-")
        self.sock_path = os.path.join(self.dir, "redis.sock")
        self.opts = list(opts)
        self.password = self.opts[self.opts.index("--requirepass") + 1] if "--requirepass" in self.opts else None
        self.tcp = tcp
        self.port = None
        self.proc = None
        self.starts = 0
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}" if self.tcp else f"unix://{self.sock_path}"

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        """Starts (or restarts) on the same directory, socket and port."""
        assert self.proc is None or self.proc.poll() is not None, "redis-server still running"
        restarting = self.starts > 0
        for attempt in range(6):
            if self.tcp and not restarting and (self.port is None or attempt > 0):
                self.port = free_port()  # a restart keeps its port
            self.starts += 1
            log = os.path.join(self.dir, f"redis-{self.starts}.log")
            argv = [REDIS_SERVER, "--daemonize", "no", "--dir", self.dir,
                    "--unixsocket", self.sock_path, "--unixsocketperm", "700",
                    "--port", str(self.port or 0), "--bind", "127.0.0.1",
                    "--logfile", log, "--save", "", "--appendonly", "no",
                    "--protected-mode", "no"] + self.opts
            self.proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_until(lambda: self.proc.poll() is not None or self._pong(), 15,
                           f"redis-server PONG on {self.sock_path}")
            except AssertionError:
                end(self.proc)
                raise
            if self.proc.poll() is None:
                return self
            text = open(log, errors="replace").read() if os.path.exists(log) else ""
            _live.pop(self.proc.pid, None)
            if self.tcp and not restarting and "in use" in text:
                continue  # port collision: another one
            raise AssertionError(f"redis-server exited {self.proc.returncode}: {text[-2000:]}")
        raise AssertionError("redis-server: no free TCP port after 6 attempts")

    def _pong(self):
        c = self.client(timeout=1)
        try:
            return c.cmd("PING") == "PONG"
        except RespError:  # LOADING
            return False
        finally:
            c.close()

    def client(self, timeout=5):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(self.sock_path)
        c = RespConn(s)
        if self.password:
            c.cmd("AUTH", self.password)
        return c

    def cmd(self, *args):
        c = self.client()
        try:
            return c.cmd(*args)
        finally:
            c.close()

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        _live.pop(self.proc.pid, None)

    def stop(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def cont(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self):
        self.kill9()
        return self.start()

    def close(self):
        end(self.proc)


# ---------------------------------------------------------------------------
# ssecast processes
# ---------------------------------------------------------------------------

class Hub:
    def __init__(self, lab, name, args=(), redis=None, bind=None, admin=False, expect_exit=False):
        self.lab = lab
        self.name = name
        self.log_path = os.path.join(lab.dir, f"hub-{name}.log")
        self.args = list(args)
        self.admin_port = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_")}
        for attempt in range(6):
            argv = [BIN, "--bind", bind or "127.0.0.1:0", "--shutdown-grace", "1"]
            if redis is not None:
                argv += ["--redis-url", redis if isinstance(redis, str) else redis.url]
            if admin:
                self.admin_port = free_port()
                argv += ["--admin-bind", f"127.0.0.1:{self.admin_port}"]
            argv += self.args
            self.argv = argv
            self.log = open(self.log_path, "a")
            self.log.write(f"### {' '.join(argv)}\n")
            self.log.flush()
            self.proc = spawn(argv, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
            if expect_exit:
                return
            try:
                m = wait_until(lambda: self.proc.poll() is not None or self._listening(),
                               10, f"hub {name}: 'listening on'")
                if self.proc.poll() is not None:
                    text = self._own_log()
                    _live.pop(self.proc.pid, None)
                    if admin and "in use" in text and f":{self.admin_port}" in text:
                        continue  # the admin port was taken meanwhile
                    raise AssertionError(f"hub {name} exited {self.proc.returncode}: {text[-3000:]}")
                self.port = m
                wait_until(lambda: self.get("/health")[0] == 200, 10, f"hub {name}: /health")
                if admin:
                    wait_until(lambda: self.get("/health", admin=True)[0] == 200, 10,
                               f"hub {name}: /health on its --admin-bind 127.0.0.1:{self.admin_port}")
            except BaseException:
                end(self.proc)  # a hub that is not ready is not left behind
                raise
            return
        raise AssertionError(f"hub {name}: no free admin port after 6 attempts")

    def _listening(self):
        # The main listener's port: the first "listening on" address that
        # is not the admin one.
        for m in re.finditer(r"listening on (?:http://)?([0-9.]+):(\d+)", self._own_log()):
            if int(m.group(2)) != self.admin_port:
                return int(m.group(2))
        return None

    def _own_log(self):
        text = open(self.log_path, errors="replace").read()
        return text[text.rfind("### "):]

    def log_text(self):
        return open(self.log_path, errors="replace").read()

    def log_tail(self, n=30):
        return "".join(self.log_text().splitlines(True)[-n:])

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def assert_alive(self):
        assert self.alive(), f"hub {self.name} died (exit {self.proc.returncode}): {self.log_tail()}"

    def kill(self):
        end(self.proc)

    def get(self, path, admin=False, timeout=5, headers=None):
        port = self.admin_port if admin else self.port
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read(), r
        finally:
            c.close()

    def json(self, path, admin=False):
        st, body, _ = self.get(path, admin=admin)
        assert st == 200, f"hub {self.name} GET {path}: {st} {body[:300]!r}"
        return json.loads(body)

    def status(self, admin=False):
        return self.json("/events/status", admin=admin)

    def health(self, admin=False):
        return self.json("/health", admin=admin)

    def redis_state(self):
        return self.status().get("redis", {}).get("state")

    def wait_redis_up(self, timeout=15):
        wait_until(lambda: self.health().get("redis") == "up", timeout,
                   f"hub {self.name}: /health redis up")

    def publisher(self, **kw):
        return Publisher(self.port, **kw)

    def subscribe(self, channel, last_id=None, query="", **kw):
        return Sse(self.port, channel, last_id=last_id, query=query, **kw)


# ---------------------------------------------------------------------------
# The owner of a test's processes
# ---------------------------------------------------------------------------

class Lab:
    def __init__(self, name="lab"):
        self.name = name
        self.dir = tempdir(f"ssecast-redistest-{name}-")
        self.hubs = []
        self.redises = []
        self.subs = []
        self.closers = []

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            for h in self.hubs:
                print(f"--- hub {h.name} (pid {h.pid}, alive {h.alive()}) log tail:\n{h.log_tail(25)}",
                      file=sys.stderr)
            # A failed test keeps its logs (hubs here, redis-server in its own directory).
            keep = [self.dir] + [r.dir for r in self.redises]
            for d in keep:
                if d in _dirs:
                    _dirs.remove(d)
            print(f"--- logs kept in {' '.join(keep)}", file=sys.stderr)
        for s in self.subs:
            s.close()
        for c in self.closers:
            c()
        for h in self.hubs:
            h.kill()
        for r in self.redises:
            r.close()
        return False

    def redis(self, *opts, tcp=False):
        r = Redis(self, opts, tcp=tcp)
        self.redises.append(r)
        return r

    def hub(self, name, *args, **kw):
        h = Hub(self, name, args, **kw)
        self.hubs.append(h)
        return h

    def subscribe(self, hub, channel, **kw):
        s = hub.subscribe(channel, **kw)
        self.subs.append(s)
        return s

    def fake(self, upstream, delay=2.5):
        return FakeRedis(self, upstream, delay)


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def run_tests(tests, argv):
    """Runs the named tests (all without arguments); prints ok/FAIL with the
    time of each; returns the exit status."""
    chosen = [t for t in tests if not argv[1:] or t.__name__ in argv[1:] or
              t.__name__.removeprefix("test_") in argv[1:]]
    unknown = set(argv[1:]) - {t.__name__ for t in tests} - {t.__name__.removeprefix("test_") for t in tests}
    if unknown:
        print(f"unknown tests: {sorted(unknown)}")
        return 2
    failed = []
    t_all = time.monotonic()
    for t in chosen:
        t0 = time.monotonic()
        print(f"---- {t.__name__}", flush=True)
        try:
            t()
            print(f"ok   {t.__name__} ({time.monotonic() - t0:.1f} s)", flush=True)
        except Exception as e:  # every test reports, then the file fails
            failed.append(t.__name__)
            import traceback
            traceback.print_exc()
            print(f"FAIL {t.__name__} ({time.monotonic() - t0:.1f} s): {type(e).__name__}: {e}", flush=True)
    print(f"{len(chosen) - len(failed)} passed, {len(failed)} failed "
          f"({time.monotonic() - t_all:.1f} s){': ' + ' '.join(failed) if failed else ''}", flush=True)
    return 1 if failed else 0
