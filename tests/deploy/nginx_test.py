#!/usr/bin/env python3
"""ssecast behind nginx, with the shipped scripts/deploy/nginx/ssecast.conf.

Starts the ssecast release binary (--trusted-proxies 127.0.0.1, heartbeat 0.5 s,
one stream per client address) and a private nginx (its own prefix, pid file,
temp paths, logs under a mktemp dir; never the system's) on free loopback
ports, then checks as real clients bound to 127.0.0.2 / .3 / .4:

  * an event published straight to ssecast arrives through nginx within 200 ms
    (nothing buffered), multi-line data intact;
  * `:` heartbeats pass through nginx;
  * the per-IP limit sees the real client (X-Real-IP / X-Forwarded-For from
    nginx, believed because nginx is trusted): .2 and .3 both get a stream,
    a second one from .2 gets 429, and after .2 closes its stream it gets one
    again; a forged X-Forwarded-For does not move a client into another's slot;
  * POST /events/broadcast through the public side is refused by nginx (403,
    nginx's page, nothing published), while 127.0.0.1 (allowed) may publish;
  * /health, /events/status and /sse/health are proxied;
  * channel names stay private through nginx: /events/status and
    /events/status/stream show a client behind nginx the totals only, while
    a loopback client of ssecast sees the names;
  * a stream's ?token= is written neither to nginx's access log (the shipped
    log_format has no query) nor to ssecast's;
  * with ssecast stopped, a stream request gets its connection closed without an
    answer (nginx 444: an EventSource retries after a network error but gives up
    for good on a 502), while /health reports 502.

Usage: python3 tests/deploy/nginx_test.py   (SSECAST_BIN overrides the binary,
NGINX the nginx executable). Installs nginx with apt-get when missing. Exits
nonzero with a message on any failure; ends every process it started (by PID).
"""

import json
import os
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
CONF = os.environ.get("SSECAST_NGINX_CONF", os.path.join(REPO, "scripts", "deploy", "nginx", "ssecast.conf"))
BIN = os.environ.get("SSECAST_BIN", os.path.join(REPO, "target", "release", "ssecast"))
OVERALL_TIMEOUT = 120  # seconds, the whole test
LATENCY_LIMIT = 0.200  # seconds from publish to arrival through nginx
CHANNEL = "nginx-test"
PRIVATE_CHANNEL = "nginx-private-room"


class Failure(Exception):
    pass


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- processes

class Proc:
    """A child process we started; stopped by its PID only."""

    def __init__(self, name, argv, env=None):
        self.name = name
        self.lines = []
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env=env)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if os.environ.get("DEPLOY_TEST_VERBOSE"):
                sys.stderr.write(f"[{self.name}] {line}\n")

    def wait_line(self, pattern, timeout):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.p.poll() is not None:
                raise Failure(f"{self.name} exited with {self.p.returncode} before logging /{pattern}/:\n"
                              + "\n".join(self.lines[-30:]))
            time.sleep(0.01)
        raise Failure(f"{self.name} did not log /{pattern}/ within {timeout}s:\n" + "\n".join(self.lines[-30:]))

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, sig)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
            except ProcessLookupError:
                pass
        return self.p.returncode


def ensure_nginx():
    nginx = os.environ.get("NGINX") or shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
    if nginx:
        return nginx
    log("nginx not found: installing it with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], check=True, env=env, timeout=600)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise Failure("nginx still missing after apt-get install nginx")
    return nginx


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_conf(nginx_port, upstream_port, tmp):
    """The shipped file with its three documented substitution points rewritten."""
    text = open(CONF, encoding="utf-8").read()
    new, n1 = re.subn(r"(?m)^(\s*)listen 80;", rf"\g<1>listen 127.0.0.1:{nginx_port};", text)
    new, n2 = re.subn(r"(?m)^(\s*)server 127\.0\.0\.1:5001;", rf"\g<1>server 127.0.0.1:{upstream_port};", new)
    new, n3 = re.subn(r"(?m)^(\s*)access_log /var/log/nginx/ssecast\.access\.log ",
                      lambda m: f"{m.group(1)}access_log {tmp}/ssecast.access.log ", new)
    if n1 != 1 or n2 != 1 or n3 != 1:
        raise Failure(f"substitution points not found exactly once in {CONF} (listen: {n1}, upstream: {n2}, log: {n3})")
    return new


def write_nginx_tree(tmp, nginx_port, upstream_port):
    os.chmod(tmp, 0o755)  # nginx workers run as nobody when we are root: they must reach the temp paths
    with open(os.path.join(tmp, "ssecast.conf"), "w", encoding="utf-8") as f:
        f.write(render_conf(nginx_port, upstream_port, tmp))
    main = f"""
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type text/plain;
    # A hostile site-wide setting (some sites compress everything): the shipped
    # locations must still stream uncompressed, unbuffered.
    gzip on;
    gzip_min_length 1;
    gzip_types text/event-stream application/json;
    include {tmp}/ssecast.conf;
}}
"""
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write(main)
    return path


# ---------------------------------------------------------------- HTTP clients

def http_request(port, method, path, source="127.0.0.1", headers=None, body=b"", timeout=5.0):
    """One request on a fresh connection from `source`; returns (status, headers, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    try:
        hdrs = {"Host": f"127.0.0.1:{port}", "Connection": "close"}
        if body:
            hdrs["Content-Length"] = str(len(body))
        hdrs.update(headers or {})
        req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        s.sendall(req.encode("latin-1") + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    h = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        h[k.strip().lower()] = v.strip()
    if "chunked" in h.get("transfer-encoding", ""):
        rest = dechunk_all(rest)
    return status, h, rest


def dechunk_all(raw):
    out = b""
    while raw:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += raw[:size]
        raw = raw[size + 2:]
    return out


class Stream:
    """An SSE stream read incrementally over a raw socket (handles chunked from nginx)."""

    def __init__(self, port, path, source, headers=None, timeout=5.0):
        self.source = source
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        # Like a browser: it accepts compression (a compressed stream would be buffered).
        hdrs = {"Host": f"127.0.0.1:{port}", "Accept": "text/event-stream", "Accept-Encoding": "gzip, deflate, br"}
        hdrs.update(headers or {})
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        self.sock.sendall(req.encode("latin-1"))
        self.raw = b""
        self.text = ""          # decoded body
        self.frames = []        # (arrival monotonic time, frame text without the blank line)
        self.closed = False
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            try:
                self._recv(deadline)
            except socket.timeout:
                raise Failure(f"stream from {source}: no response headers within {timeout}s (held back by a buffering proxy?)")
            if self.closed and b"\r\n\r\n" not in self.raw:
                raise Failure(f"stream from {source}: connection closed before response headers")
        head, _, self.raw = self.raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "")
        self.clen = int(self.headers["content-length"]) if "content-length" in self.headers else None
        self.compressed = "content-encoding" in self.headers
        if self.status == 200 and not self.compressed:
            self._decode()

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
        self.raw += data

    def _decode(self):
        now = time.monotonic()
        if self.chunked:
            while True:
                i = self.raw.find(b"\r\n")
                if i < 0:
                    break
                size = int(self.raw[:i].split(b";")[0], 16)
                if size == 0:
                    self.closed = True
                    self.raw = b""
                    break
                if len(self.raw) < i + 2 + size + 2:
                    break
                self.text += self.raw[i + 2:i + 2 + size].decode("utf-8")
                self.raw = self.raw[i + 2 + size + 2:]
        else:
            self.text += self.raw.decode("utf-8")
            self.raw = b""
        while "\n\n" in self.text:
            frame, _, self.text = self.text.partition("\n\n")
            self.frames.append((now, frame))

    def body(self, timeout=2.0):
        """The whole (short) body of a non-stream answer, e.g. a 429."""
        deadline = time.monotonic() + timeout
        while not self.closed and (self.clen is None or len(self.raw) < self.clen):
            try:
                self._recv(deadline)
            except socket.timeout:
                break
        out = self.raw
        return dechunk_all(out) if self.chunked else out

    def wait_frame(self, pred, timeout, what):
        """First frame (from those not yet consumed) matching pred; returns (time, frame)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (t, f) in enumerate(self.frames):
                if pred(f):
                    del self.frames[: i + 1]
                    return t, f
            if self.closed:
                raise Failure(f"stream from {self.source} closed while waiting for {what}")
            try:
                self._recv(deadline)
            except socket.timeout:
                raise Failure(f"stream from {self.source}: no {what} within {timeout}s; frames: {self.frames!r}")
            if not self.compressed:
                self._decode()

    def collect(self, seconds):
        """All frames arriving within `seconds` (consumed)."""
        deadline = time.monotonic() + seconds
        while not self.closed:
            try:
                self._recv(deadline)
            except socket.timeout:
                break
            if not self.compressed:
                self._decode()
        out = [f for _, f in self.frames]
        self.frames = []
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def publish_direct(port, event):
    body = json.dumps(event).encode()
    status, _, resp = http_request(port, "POST", "/events/broadcast", headers={"Content-Type": "application/json"}, body=body)
    if status != 200:
        raise Failure(f"direct publish to ssecast -> {status} {resp!r}")
    return json.loads(resp)


def frame_data(frame):
    return "\n".join(line[6:] if line.startswith("data: ") else line[5:]
                     for line in frame.split("\n") if line.startswith("data:"))


def frame_id(frame):
    m = re.search(r"(?m)^id: ?(\S+)$", frame)
    return m.group(1) if m else None


def is_heartbeat(frame):
    return frame != "" and all(line.startswith(":") for line in frame.split("\n"))


# ---------------------------------------------------------------- the test

def main():
    def on_alarm(*_):
        raise Failure(f"the whole test took more than {OVERALL_TIMEOUT}s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(OVERALL_TIMEOUT)

    if not os.path.exists(BIN):
        raise Failure(f"ssecast binary not found at {BIN}: run `cargo build --release` first (or set SSECAST_BIN)")
    nginx = ensure_nginx()
    tmp = tempfile.mkdtemp(prefix="ssecast-nginx-")
    procs = []
    streams = []
    results = []

    def check(name, fn):
        try:
            fn()
            results.append((name, None))
            log(f"ok - {name}")
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            results.append((name, e))
            log(f"FAIL - {name}: {e}")

    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_")}
        sse = Proc("ssecast", [BIN, "--bind", "127.0.0.1:0", "--trusted-proxies", "127.0.0.1",
                               "--heartbeat-interval", "0.5", "--max-connections-per-ip", "1"], env=env)
        procs.append(sse)
        m = sse.wait_line(r"listening on 127\.0\.0\.1:(\d+)", 10)
        sse_port = int(m.group(1))
        log(f"# ssecast pid {sse.p.pid} on 127.0.0.1:{sse_port}")

        for attempt in range(5):
            nginx_port = free_port()
            conf = write_nginx_tree(tmp, nginx_port, sse_port)
            t = subprocess.run([nginx, "-t", "-p", tmp + "/", "-c", conf, "-e", os.path.join(tmp, "error.log")],
                               capture_output=True, text=True, timeout=30)
            if t.returncode != 0:
                raise Failure(f"nginx -t rejected the shipped config:\n{t.stderr}")
            ngx = Proc("nginx", [nginx, "-p", tmp + "/", "-c", conf, "-e", os.path.join(tmp, "error.log")])
            procs.append(ngx)
            deadline = time.monotonic() + 10
            up = False
            while time.monotonic() < deadline and ngx.p.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", nginx_port), timeout=1).close()
                    up = True
                    break
                except OSError:
                    time.sleep(0.05)
            if up:
                break
            ngx.stop()
            procs.remove(ngx)
            err = open(os.path.join(tmp, "error.log"), encoding="utf-8", errors="replace").read()
            if "Address already in use" not in err:
                raise Failure(f"nginx did not start:\n{err[-3000:]}\n" + "\n".join(ngx.lines[-20:]))
        else:
            raise Failure("nginx did not start on a free port in 5 attempts")
        log(f"# nginx pid {ngx.p.pid} on 127.0.0.1:{nginx_port} (prefix {tmp})")

        a = None

        def health():
            st, h, b = http_request(nginx_port, "GET", "/health", source="127.0.0.2")
            assert st == 200, f"/health through nginx: {st} {b!r}"
            j = json.loads(b)
            assert j.get("status") == "healthy", f"/health body {j}"
            for p in ("/events/status", "/sse/health"):
                st, h, b = http_request(nginx_port, "GET", p, source="127.0.0.2")
                assert st == 200, f"{p} through nginx: {st} {b!r}"
                json.loads(b)
        check("/health, /events/status and /sse/health are proxied", health)

        def names_private():
            s = Stream(nginx_port, f"/events?channel={PRIVATE_CHANNEL}", "127.0.0.6")
            try:
                assert s.status == 200, f"stream from 127.0.0.6: {s.status} {s.body()!r}"
                deadline = time.monotonic() + 5
                while True:
                    st, _, b = http_request(sse_port, "GET", "/events/status")
                    direct = json.loads(b)
                    if direct.get("channels", {}).get(PRIVATE_CHANNEL) == 1:
                        break
                    assert time.monotonic() < deadline, f"loopback status never listed {PRIVATE_CHANNEL}: {direct}"
                    time.sleep(0.05)
                st, _, b = http_request(nginx_port, "GET", "/events/status", source="127.0.0.2")
                far = json.loads(b)
                assert st == 200 and "channels" not in far, f"names through nginx: {far}"
                assert PRIVATE_CHANNEL.encode() not in b, f"a channel name through nginx: {b!r}"
                assert far.get("subscribers", 0) >= 1, f"totals missing through nginx: {far}"
                live = Stream(nginx_port, "/events/status/stream", "127.0.0.7")
                try:
                    assert live.status == 200, f"/events/status/stream through nginx: {live.status}"
                    _, frame = live.wait_frame(lambda f: "event: status" in f, 3.0, "a status event")
                    doc = json.loads(frame_data(frame))
                    assert "channels" not in doc, f"names in the status stream through nginx: {doc}"
                finally:
                    live.close()
            finally:
                s.close()
        check("channel names stay private through nginx (status, status stream); loopback sees them", names_private)

        def token_not_logged():
            secret = "eyJhbGciOiJIUzI1NiJ9.nginx-log-check.c2VjcmV0"
            s = Stream(nginx_port, f"/events?channel={PRIVATE_CHANNEL}&token={secret}", "127.0.0.8")
            assert s.status == 200, f"stream with ?token= from 127.0.0.8: {s.status} {s.body()!r}"
            s.close()
            path = os.path.join(tmp, "ssecast.access.log")
            deadline = time.monotonic() + 5
            while True:
                text = open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""
                if any(line.startswith("127.0.0.8 ") for line in text.splitlines()):
                    break
                assert time.monotonic() < deadline, f"no access-log line for 127.0.0.8 in {path}: {text[-500:]!r}"
                time.sleep(0.05)
            assert secret not in text and "token=" not in text, f"nginx logged the token: {text[-500:]!r}"
            assert '"GET /events HTTP/1.1"' in text, f"the stream's line: {text[-500:]!r}"
            assert not any(secret in line for line in sse.lines), "ssecast logged the token"
        check("?token= is written to neither nginx's access log nor ssecast's", token_not_logged)

        def stream_opens():
            nonlocal a
            a = Stream(nginx_port, f"/events?channel={CHANNEL}", "127.0.0.2")
            streams.append(a)
            assert a.status == 200, f"stream through nginx from 127.0.0.2: {a.status} {a.body()!r}"
            ct = a.headers.get("content-type", "")
            assert ct.startswith("text/event-stream"), f"content-type {ct!r}"
            assert a.headers.get("cache-control", "") == "no-cache, no-store, no-transform", f"cache-control {a.headers.get('cache-control')!r}"
            assert "content-encoding" not in a.headers, f"stream is compressed ({a.headers['content-encoding']}): gzip buffers events"
        check("a stream opens through nginx (200, text/event-stream, no-cache/no-store/no-transform, not compressed)", stream_opens)

        def latency():
            assert a is not None and a.status == 200 and not a.compressed, "no usable stream from 127.0.0.2"
            worst = 0.0
            for i in range(8):
                data = f"event {i} through nginx\nsecond line é✓" if i % 2 else f"event {i}"
                t0 = time.monotonic()
                ans = publish_direct(sse_port, {"channel": CHANNEL, "data": data})
                t, frame = a.wait_frame(lambda f, want=str(ans["id"]): frame_id(f) == want, 2.0, f"event {ans['id']}")
                dt = t - t0
                worst = max(worst, dt)
                assert frame_data(frame) == data, f"data through nginx: {frame_data(frame)!r} != {data!r}"
                assert dt < LATENCY_LIMIT, f"event {i} arrived {dt * 1000:.0f} ms after the publish (buffered?)"
                time.sleep(0.05)
            log(f"# worst publish-to-arrival through nginx: {worst * 1000:.1f} ms")
        check(f"published events arrive through nginx within {LATENCY_LIMIT * 1000:.0f} ms, data intact", latency)

        def heartbeats():
            assert a is not None and a.status == 200 and not a.compressed, "no usable stream from 127.0.0.2"
            frames = a.collect(1.8)
            hb = [f for f in frames if is_heartbeat(f)]
            assert len(hb) >= 2, f"expected >= 2 heartbeats in 1.8 s of quiet at 0.5 s interval, got frames {frames!r}"
        check("heartbeats (':' comments) pass through nginx", heartbeats)

        def per_ip_limit():
            b = Stream(nginx_port, f"/events?channel={CHANNEL}", "127.0.0.3")
            streams.append(b)
            assert b.status == 200, f"first stream from 127.0.0.3: {b.status} {b.body()!r} (ssecast counted nginx's address, not the client's?)"
            c = Stream(nginx_port, f"/events?channel={CHANNEL}", "127.0.0.2")
            streams.append(c)
            body = c.body()
            c.close()
            assert c.status == 429, f"second stream from 127.0.0.2: expected 429, got {c.status} {body!r}"
            assert b'"error"' in body, f"429 body is not ssecast's JSON error: {body!r}"
            # Forged chain: right-most untrusted entry is the real peer (127.0.0.4), not 127.0.0.2.
            d = Stream(nginx_port, f"/events?channel={CHANNEL}", "127.0.0.4", headers={"X-Forwarded-For": "127.0.0.2", "X-Real-IP": "127.0.0.2"})
            streams.append(d)
            assert d.status == 200, f"127.0.0.4 forging X-Forwarded-For 127.0.0.2: got {d.status} {d.body()!r} (the forged entry was believed)"
            e = Stream(nginx_port, f"/events?channel={CHANNEL}", "127.0.0.4", headers={"X-Forwarded-For": "127.0.0.9"})
            streams.append(e)
            body = e.body()
            e.close()
            assert e.status == 429, f"second stream from 127.0.0.4 forging X-Forwarded-For 127.0.0.9: expected 429, got {e.status} {body!r}"
            d.close()
            # The limit is on concurrent streams: when .2 closes, it may open one again (ssecast
            # notices the close at the latest at the next heartbeat write).
            a.close()
            deadline = time.monotonic() + 5
            while True:
                again = Stream(nginx_port, f"/events?channel={CHANNEL}", "127.0.0.2")
                streams.append(again)
                if again.status == 200:
                    break
                again.body()
                again.close()
                assert time.monotonic() < deadline, f"127.0.0.2 still refused ({again.status}) 5 s after closing its stream"
                time.sleep(0.2)
            streams.insert(0, again)
        check("per-IP limit uses the real client address (.2 and .3 get streams, a 2nd from .2 gets 429, forged XFF ignored, freed on close)", per_ip_limit)

        def broadcast_refused():
            b = next((s for s in streams if s.source == "127.0.0.3" and s.status == 200), None)
            assert b is not None, "no open stream from 127.0.0.3 to watch"
            b.collect(0.1)
            st, h, body = http_request(nginx_port, "POST", "/events/broadcast", source="127.0.0.2",
                                       headers={"Content-Type": "application/json"},
                                       body=json.dumps({"channel": CHANNEL, "data": "must not be published"}).encode())
            assert st == 403, f"public POST /events/broadcast through nginx: expected 403, got {st} {body!r}"
            assert b"nginx" in body.lower() and b'"error"' not in body, f"403 should be nginx's own page (config deny), got {body!r}"
            leaked = [f for f in b.collect(0.4) if "must not be published" in f]
            assert not leaked, f"the refused publish reached subscribers: {leaked!r}"
        check("POST /events/broadcast through nginx's public side is refused by nginx (403)", broadcast_refused)

        def broadcast_internal():
            b = next((s for s in streams if s.source == "127.0.0.3" and s.status == 200), None)
            st, h, body = http_request(nginx_port, "POST", "/events/broadcast", source="127.0.0.1",
                                       headers={"Content-Type": "application/json"},
                                       body=json.dumps({"channel": CHANNEL, "data": "internal publish"}).encode())
            assert st == 200, f"POST /events/broadcast through nginx from allowed 127.0.0.1: {st} {body!r}"
            want = str(json.loads(body)["id"])
            b.wait_frame(lambda f: frame_id(f) == want, 2.0, "the internal publish")
        check("an allowed internal address (127.0.0.1) may publish through nginx", broadcast_internal)

        def unknown_404():
            st, _, _ = http_request(nginx_port, "GET", "/events/nope", source="127.0.0.2")
            assert st == 404, f"/events/nope: {st}"
        check("other paths under /events/ are not proxied (404)", unknown_404)

        def upstream_down():
            for s in streams:
                s.close()
            code = sse.stop(signal.SIGTERM, timeout=15)
            assert code == 0, f"ssecast exit code on SIGTERM: {code}"
            for path in (f"/events?channel={CHANNEL}", f"/sse?channel={CHANNEL}"):
                try:
                    s = Stream(nginx_port, path, "127.0.0.2", timeout=5)
                    body = s.body()
                    s.close()
                    raise AssertionError(f"{path} with ssecast down: answered {s.status} {body[:80]!r}; an EventSource "
                                         "gives up for good on a non-200 answer, the connection must be closed instead")
                except Failure as e:
                    assert "closed before response headers" in str(e), str(e)
            st, _, _ = http_request(nginx_port, "GET", "/health", source="127.0.0.2")
            assert st == 502, f"/health with ssecast down: {st} (a health check must see the failure)"
        check("with ssecast down, streams are closed without an answer (EventSource retries), /health is 502", upstream_down)

    finally:
        signal.alarm(0)
        for s in streams:
            s.close()
        codes = {}
        for p in reversed(procs):
            codes[p.name] = p.stop(signal.SIGTERM, timeout=15)
        failed = [r for r in results if r[1] is not None]
        if failed or not results:
            err = os.path.join(tmp, "error.log")
            if os.path.exists(err):
                log("# nginx error.log (tail):")
                for line in open(err, encoding="utf-8", errors="replace").read().splitlines()[-25:]:
                    log("#   " + line)
            for p in procs:
                log(f"# {p.name} output (tail):")
                for line in p.lines[-25:]:
                    log("#   " + line)
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"# exit codes after stop: {codes}")

    passed = sum(1 for r in results if r[1] is None)
    failed = len(results) - passed
    log(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        log(f"FAIL - {e}")
        log("0 passed, 1 failed")
        sys.exit(1)
