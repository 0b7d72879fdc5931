"""The test bench of the Redis scale-out suite (issue 11), stdlib only.

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
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
BIN = os.environ.get("SSECAST_BIN", os.path.join(REPO, "target", "release", "ssecast"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

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
# Publishing
# ---------------------------------------------------------------------------

class Answer:
    def __init__(self, status, body, headers, elapsed, error=None):
        self.status = status
        self.body = body
        self.headers = headers
        self.elapsed = elapsed
        self.error = error

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def id(self):
        return int(self.json["id"])

    @property
    def ids(self):
        return [int(e["id"]) for e in self.json["events"]]

    def __repr__(self):
        return f"<{self.status} {self.body[:200]!r} {self.elapsed:.3f}s{' ' + repr(self.error) if self.error else ''}>"


class Publisher:
    """POSTs on one keep-alive connection; a failed request gives an Answer
    with status None and reopens the connection for the next one."""

    def __init__(self, port, timeout=10, token=None):
        self.port = port
        self.timeout = timeout
        self.token = token
        self.conn = None

    def post(self, body, headers=None, path="/events/broadcast"):
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(headers or {})
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        t0 = time.monotonic()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.conn.request("POST", path, body=data, headers=h)
            r = self.conn.getresponse()
            raw = r.read()
            if r.getheader("Connection", "").lower() == "close":
                self.close()
            return Answer(r.status, raw, {k.lower(): v for k, v in r.getheaders()}, time.monotonic() - t0)
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return Answer(None, b"", {}, time.monotonic() - t0, error=e)

    def get(self, path):
        """A GET on the same keep-alive connection."""
        t0 = time.monotonic()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.conn.request("GET", path)
            r = self.conn.getresponse()
            return Answer(r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}, time.monotonic() - t0)
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return Answer(None, b"", {}, time.monotonic() - t0, error=e)

    def publish(self, channel, data, event=None, key=None):
        body = {"channel": channel, "data": data}
        if event is not None:
            body["event"] = event
        return self.post(body, {"Idempotency-Key": key} if key else None)

    def batch(self, items, key=None):
        return self.post(items, {"Idempotency-Key": key} if key else None)

    def must(self, channel, data, event=None, key=None):
        a = self.publish(channel, data, event, key)
        assert a.status == 200, f"publish {channel}/{data!r}: {a}"
        return a

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# ---------------------------------------------------------------------------
# Subscribing
# ---------------------------------------------------------------------------

class Event:
    __slots__ = ("id", "event", "data", "at")

    def __init__(self, id, event, data, at):
        self.id, self.event, self.data, self.at = id, event, data, at

    @property
    def nid(self):
        return int(self.id)

    def __repr__(self):
        return f"Event(id={self.id!r}, event={self.event!r}, data={self.data[:80]!r})"


class Timeout(AssertionError):
    pass


class Sse:
    """GET /events?channel=C over a raw socket. `items` gets Event objects
    and ("comment", text, time) tuples as they are parsed."""

    def __init__(self, port, channel, last_id=None, query="", headers=None, timeout=5, http10=False):
        self.channel = channel
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        target = f"/events?channel={channel}{query}"
        h = {"Host": "127.0.0.1", "Accept": "text/event-stream"}
        if last_id is not None:
            h["Last-Event-ID"] = str(last_id)
        h.update(headers or {})
        ver = "HTTP/1.0" if http10 else "HTTP/1.1"
        req = f"GET {target} {ver}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        self.sock.sendall(req.encode())
        self.raw = b""
        self.eof = False
        self.t_head = None
        while b"\r\n\r\n" not in self.raw:
            if not self._recv(time.monotonic() + timeout):
                raise AssertionError(f"subscribe {target}: no response head: {self.raw!r}")
        head, rest = self.raw.split(b"\r\n\r\n", 1)
        self.t_head = time.monotonic()
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for l in lines[1:]:
            k, v = l.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.body = b""      # de-chunked, not yet parsed
        self.cbuf = b""      # chunked framing not yet decoded
        self.chunk_left = 0
        self.done = False    # the last chunk
        self.items = []      # parsed, not yet consumed
        self.events = []     # every event, in order
        self.comments = []   # (time, text) of every comment
        self._field = {"id": None, "event": None, "data": []}
        self.last_id = None
        self.raw = b""
        self._feed(rest)

    def ok(self):
        return self.status == 200 and self.headers.get("content-type", "").startswith("text/event-stream")

    # -- bytes -------------------------------------------------------------
    def _recv(self, deadline):
        """One read: blocking until `deadline`, or a non-blocking look when
        it has passed. False when nothing came (or EOF)."""
        left = deadline - time.monotonic()
        self.sock.settimeout(left if left > 0 else 0.0)
        try:
            b = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            return False
        except ConnectionResetError:
            b = b""
        if not b:
            self.eof = True
            return False
        if self.t_head is None:
            self.raw += b
        else:
            self._feed(b)
        return True

    def _feed(self, b):
        if not self.chunked:
            self._parse(b)
            return
        self.cbuf += b
        out = []
        while self.cbuf:
            if self.chunk_left > 0:
                take = self.cbuf[:self.chunk_left]
                out.append(take)
                self.cbuf = self.cbuf[len(take):]
                self.chunk_left -= len(take)
                if self.chunk_left == 0:
                    self.chunk_left = -2  # the CRLF after the data
                continue
            if self.chunk_left == -2:
                if len(self.cbuf) < 2:
                    break
                assert self.cbuf[:2] == b"\r\n", f"chunk not followed by CRLF: {self.cbuf[:20]!r}"
                self.cbuf = self.cbuf[2:]
                self.chunk_left = 0
                continue
            if b"\r\n" not in self.cbuf:
                break
            line, self.cbuf = self.cbuf.split(b"\r\n", 1)
            if self.done:
                continue  # trailer
            size = int(line.split(b";")[0], 16)
            if size == 0:
                self.done = True
            else:
                self.chunk_left = size
        self._parse(b"".join(out))

    def _parse(self, b):
        self.body += b
        now = time.monotonic()
        while True:
            m = re.search(rb"\r\n|\r|\n", self.body)
            if not m or (m.group() == b"\r" and m.end() == len(self.body)):
                break  # a lone CR at the end may be half of a CRLF
            line = self.body[:m.start()].decode("utf-8", errors="replace")
            self.body = self.body[m.end():]
            self._line(line, now)

    def _line(self, line, now):
        f = self._field
        if line == "":
            if f["data"]:
                ev = Event(f["id"] if f["id"] is not None else self.last_id,
                           f["event"] or "message", "\n".join(f["data"]), now)
                self.items.append(ev)
                self.events.append(ev)
            if f["id"] is not None:
                self.last_id = f["id"]
            self._field = {"id": None, "event": None, "data": []}
            return
        if line.startswith(":"):
            self.comments.append((now, line[1:]))
            self.items.append(("comment", line[1:], now))
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            f["data"].append(value)
        elif name == "event":
            f["event"] = value
        elif name == "id":
            f["id"] = value
        # retry and unknown fields: ignored

    # -- items -------------------------------------------------------------
    def next_item(self, timeout=5):
        deadline = time.monotonic() + timeout
        while not self.items:
            if self.eof or not self._recv(deadline):
                return None
        return self.items.pop(0)

    def next_event(self, timeout=5):
        """The next event; None when nothing comes within `timeout` (or EOF)."""
        deadline = time.monotonic() + timeout
        while True:
            it = self.next_item(max(0.0, deadline - time.monotonic()))
            if it is None or isinstance(it, Event):
                return it

    def expect_event(self, timeout=5, what="an event"):
        ev = self.next_event(timeout)
        if ev is None:
            raise Timeout(f"{self.channel}: no {what} within {timeout} s (eof={self.eof})")
        return ev

    def read_until(self, data, timeout=10):
        """Events up to and including the one whose data is `data`."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            ev = self.next_event(max(0.0, deadline - time.monotonic()))
            if ev is None:
                raise Timeout(f"{self.channel}: {data!r} did not arrive within {timeout} s "
                              f"(eof={self.eof}); got {len(got)} events, last {got[-3:]}")
            got.append(ev)
            if ev.data == data:
                return got

    def read_n(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            ev = self.next_event(max(0.0, deadline - time.monotonic()))
            if ev is None:
                raise Timeout(f"{self.channel}: {len(got)} of {n} events within {timeout} s "
                              f"(eof={self.eof}); last {got[-3:]}")
            got.append(ev)
        return got

    def pump(self, duration):
        """Reads whatever arrives for `duration` (heartbeats are recorded)."""
        deadline = time.monotonic() + duration
        while not self.eof and self._recv(deadline):
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


_sync_n = [0]


def sync(pub, channel, subs, timeout=15):
    """Makes sure every subscriber in `subs` is really following `channel`:
    publishes warm-up events until each has received one, then a sync
    marker, and reads each up to it (only warm-ups before it, ids rising).
    Afterwards a subscriber's next event is the next one published."""
    _sync_n[0] += 1
    tag = f"sync{_sync_n[0]}"
    pending = list(subs)
    deadline = time.monotonic() + timeout
    i = 0
    while pending:
        assert time.monotonic() < deadline, \
            f"{len(pending)} of {len(subs)} subscribers of {channel} got no warm-up event in {timeout} s"
        a = pub.publish(channel, f"warmup-{tag}-{i}")
        i += 1
        if a.status != 200:
            time.sleep(0.05)  # the link may still be coming up; retrying is the signal
            continue
        first = pending[0]
        if first.next_event(0.3) is not None:
            pending.pop(0)
        for s in list(pending):
            if s.next_event(0.0) is not None:
                pending.remove(s)
    marker = f"{tag}-done"
    pub.must(channel, marker)
    for s in subs:
        got = s.read_until(marker, timeout=10)
        ids = [e.nid for e in got]
        assert all(e.data.startswith(f"warmup-{tag}-") for e in got[:-1]), \
            f"{channel}: not only warm-ups before the sync marker: {got}"
        assert ids == sorted(set(ids)), f"{channel}: warm-up ids not rising: {ids}"
    return marker


# ---------------------------------------------------------------------------
# A fake Redis: a proxy whose replies can be mangled
# ---------------------------------------------------------------------------

class FakeRedis:
    """Listens on 127.0.0.1:<free port> and forwards to `upstream` (a Redis)
    in mode "pass". Other modes, switchable at any time:
      garbage  nothing is forwarded; every read from the hub is answered
               with bytes that are not RESP (also sent at once to every open
               connection when the mode is set);
      cut      replies are forwarded until the first one, of which half is
               sent before both sides are closed;
      slow     replies are held `delay` seconds before they are sent.
    `connections` counts accepted connections."""

    GARBAGE = b"\x00\xff%%% not RESP at all \xfe\r\n?\r\n"

    def __init__(self, lab, upstream, delay=2.5):
        self.lab = lab
        self.upstream = upstream
        self.delay = delay
        self.mode = "pass"
        self.connections = 0
        self.cut = 0
        self.lock = threading.Lock()
        self.open = []
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        lab.closers.append(self.close)

    def set_mode(self, mode):
        with self.lock:
            self.mode = mode
            conns = list(self.open)
        if mode == "garbage":
            for c, _u in conns:
                try:
                    c.sendall(self.GARBAGE)
                except OSError:
                    pass

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            try:
                u = self.upstream.client().sock
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            c.settimeout(None)
            with self.lock:
                self.open.append((c, u))
            threading.Thread(target=self._up, args=(c, u), daemon=True).start()
            threading.Thread(target=self._down, args=(c, u), daemon=True).start()

    def _drop(self, c, u):
        for s in (c, u):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self.lock:
            if (c, u) in self.open:
                self.open.remove((c, u))

    def _up(self, c, u):
        """hub -> redis"""
        while True:
            try:
                b = c.recv(65536)
            except OSError:
                b = b""
            if not b:
                self._drop(c, u)
                return
            if self.mode == "garbage":
                try:
                    c.sendall(self.GARBAGE)
                except OSError:
                    self._drop(c, u)
                    return
                continue
            try:
                u.sendall(b)
            except OSError:
                self._drop(c, u)
                return

    def _down(self, c, u):
        """redis -> hub"""
        while True:
            try:
                b = u.recv(65536)
            except OSError:
                b = b""
            if not b:
                self._drop(c, u)
                return
            mode = self.mode
            try:
                if mode == "garbage":
                    continue
                if mode == "cut":
                    c.sendall(b[:max(1, len(b) // 2)])
                    with self.lock:
                        self.cut += 1
                    self._drop(c, u)
                    return
                if mode == "slow":
                    time.sleep(self.delay)
                c.sendall(b)
            except OSError:
                self._drop(c, u)
                return

    def close(self):
        self.closed = True
        try:
            self.srv.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.open)
        for c, u in conns:
            self._drop(c, u)


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
