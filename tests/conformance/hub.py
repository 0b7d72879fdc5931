"""Plumbing shared by the Python conformance tests: start the ssecast release
binary on a free loopback port (ready when it logs `listening on`), publish to
it, and a tiny test registry that prints `N passed, N failed` last.

Every hub started here is ended by its PID (SIGTERM, then SIGKILL) at exit.
"""

import atexit
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
BIN = os.environ.get("SSECAST_BIN", os.path.join(REPO, "target", "release", "ssecast"))

_started = []


class Hub:
    def __init__(self, args=(), env=None, bind="127.0.0.1:0"):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SSE_")}
        clean.update(env or {})
        self.args = ["--bind", bind, "--access-log", "false", *args]
        self.proc = subprocess.Popen([BIN, *self.args], stderr=subprocess.PIPE, text=True, env=clean)
        _started.append(self.proc)
        self.log = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on (\S+):(\d+)", line)
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.stop()
        raise RuntimeError("ssecast did not log `listening on`:\n" + "".join(self.log))

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    @property
    def base(self):
        return f"http://{self.host}:{self.port}"

    def connect(self, timeout=5.0, source=None):
        s = socket.create_connection((self.host, self.port), timeout=timeout,
                                     source_address=(source, 0) if source else None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def exchange(self, raw, timeout=5.0):
        """Send raw bytes on a fresh connection; return everything until the hub closes."""
        with self.connect(timeout) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    def request(self, method, path, body=b"", headers=None, timeout=5.0):
        """One request with Connection: close; returns (status, headers dict lowercased, body bytes)."""
        h = {"Host": "x", "Connection": "close", **(headers or {})}
        if body or method == "POST":
            h["Content-Length"] = str(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        raw = self.exchange(head.encode() + body, timeout)
        head_b, _, rest = raw.partition(b"\r\n\r\n")
        lines = head_b.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        return status, hdrs, rest

    def get_json(self, path):
        status, _, body = self.request("GET", path)
        assert status == 200, f"GET {path} -> {status} {body!r}"
        return json.loads(body)

    def publish(self, channel, data, event=None, token=None):
        """POST /events/broadcast as JSON; returns the answer ({"id":..., ...})."""
        doc = {"channel": channel, "data": data}
        if event is not None:
            doc["event"] = event
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status, _, body = self.request("POST", "/events/broadcast", json.dumps(doc).encode(), headers)
        assert status == 200, f"publish -> {status} {body!r}"
        return json.loads(body)

    def wait_subscribers(self, channel, n, timeout=10.0):
        """Readiness: the status document counts `n` subscribers on `channel`."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.get_json("/events/status")["channels"].get(channel, 0)
            if got >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{channel}: {got} subscribers after {timeout} s, wanted {n}")
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@atexit.register
def _cleanup():
    for p in _started:
        if p.poll() is None:
            p.kill()
            p.wait()


class Suite:
    """Named checks run in order; the last line printed is `N passed, N failed`."""

    def __init__(self, name):
        self.name = name
        self.tests = []

    def test(self, fn):
        self.tests.append(fn)
        return fn

    def run(self, only=None):
        passed = failed = 0
        for fn in self.tests:
            if only and not any(o in fn.__name__ for o in only):
                continue
            t0 = time.monotonic()
            try:
                fn()
            except Exception:  # noqa: BLE001 - report every failure, go on
                failed += 1
                print(f"FAIL {fn.__name__} ({time.monotonic() - t0:.2f} s)", flush=True)
                traceback.print_exc(limit=4, file=sys.stdout)
            else:
                passed += 1
                print(f"ok   {fn.__name__} ({time.monotonic() - t0:.2f} s)", flush=True)
        print(f"{self.name}: {passed} passed, {failed} failed", flush=True)
        return 1 if failed else 0
