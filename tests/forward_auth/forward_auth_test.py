#!/usr/bin/env python3
"""Forward auth end to end: the ssecast release binary asks a real Flask
application (app.py, its signed session cookie decides) before each stream.

Every scenario is a function `test_*`; each waits on readiness signals
(the app's "ready" line, ssecast's "listening on" line, response bytes,
EOF), never on bare sleeps. Exits nonzero on any failure; ends the
processes it started by PID (also on failure, via try/finally and atexit).
"""
import atexit
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
BIN = os.environ.get("SSECAST_BIN", os.path.join(REPO, "target", "release", "ssecast"))
AUTH_TIMEOUT = 1.0
children = []


def end_children():
    for p in children:
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(end_children)


def start_app(port=0):
    env = dict(os.environ, FLASK_SECRET="forward-auth-test")
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "app.py"), str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    children.append(p)
    line = p.stdout.readline()
    m = re.match(r"ready (\d+)", line)
    assert m, f"the app did not start: {line!r}"
    return p, int(m.group(1))


def start_hub(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_")}
    p = subprocess.Popen([BIN, "--bind", "127.0.0.1:0", "--retry-ms", "0", *args],
                         stderr=subprocess.PIPE, text=True, env=env)
    children.append(p)
    logs = []
    deadline = time.time() + 10
    while time.time() < deadline:
        line = p.stderr.readline()
        logs.append(line)
        m = re.search(r"listening on (\S+)", line)
        if m:
            threading.Thread(target=lambda: logs.extend(p.stderr), daemon=True).start()
            return p, int(m.group(1).rsplit(":", 1)[1]), logs
        if not line and p.poll() is not None:
            break
    raise AssertionError(f"ssecast did not start: {''.join(logs)}")


def get_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.load(r)


def login(app_port, query):
    """The app's session cookie for `query` (user=..., channels=..., expires=...)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{app_port}/login?{query}", timeout=5) as r:
        cookie = r.headers["Set-Cookie"]
    return cookie.split(";", 1)[0]


def publish(port, channel, data):
    body = json.dumps({"channel": channel, "data": data}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/events/broadcast", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


class Stream:
    """A raw subscribe: the answer's status and headers, or `None` when the
    hub closed the connection without an answer."""

    def __init__(self, port, channel, headers=None, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        lines = [f"GET /events?channel={channel} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        self.status = None
        self.headers = {}
        self.body = b""
        self.closed = False
        while b"\r\n\r\n" not in self.buf:
            if not self._recv():
                return
        head, self.body = self.buf.split(b"\r\n\r\n", 1)
        first, *rest = head.decode().split("\r\n")
        self.status = int(first.split()[1])
        self.headers = {k.lower(): v for k, v in (l.split(": ", 1) for l in rest)}

    def _recv(self):
        try:
            b = self.sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            b = b""
        if not b:
            self.closed = True
            return False
        self.buf += b
        self.body += b if self.status else b""
        return True

    def wait_for(self, needle, timeout=5):
        self.sock.settimeout(timeout)
        while needle.encode() not in self.body:
            if not self._recv():
                return False
        return True

    def wait_eof(self, timeout=10):
        self.sock.settimeout(timeout)
        while self._recv():
            pass
        return self.closed

    def close(self):
        self.sock.close()


def app_calls(app_port):
    return get_json(app_port, "/calls")


def auth_stats(hub):
    return get_json(hub, "/events/status")["forward_auth"]


# ---- scenarios ------------------------------------------------------------

def test_allowed_streams_and_the_app_sees_what_it_needs(hub, app):
    cookie = login(app, "user=alice&channels=alice")
    s = Stream(hub, "alice", {"Cookie": cookie, "X-Forwarded-For": "203.0.113.7", "Last-Event-ID": "earliest"})
    assert s.status == 200, f"status {s.status}"
    assert s.headers["content-type"] == "text/event-stream"
    publish(hub, "alice", "hello alice")
    assert s.wait_for("data: hello alice"), "the event did not arrive"
    last = app_calls(app)["last"]
    assert last.get("Cookie") == cookie, last
    assert last.get("X-Ssecast-Channel") == "alice", last
    assert last.get("X-Forwarded-For") == "203.0.113.7, 127.0.0.1", last
    assert last.get("Last-Event-Id") == "earliest", last
    s.close()


def test_403_is_passed_on(hub, app):
    cookie = login(app, "user=alice&channels=alice")
    s = Stream(hub, "bob", {"Cookie": cookie})
    assert s.status == 403, f"status {s.status}"
    assert s.headers["content-type"] == "application/json"
    s.wait_eof()
    assert "error" in json.loads(s.body), s.body


def test_401_is_passed_on_with_www_authenticate(hub, app):
    s = Stream(hub, "alice")
    assert s.status == 401, f"status {s.status}"
    assert s.headers.get("www-authenticate") == "Bearer", s.headers
    s = Stream(hub, "carol", {"Authorization": "Bearer token-of-carol"})
    assert s.status == 200, f"a bearer token the app accepts: {s.status}"
    s.close()


def test_a_cache_hit_makes_no_second_call(hub, app):
    cookie = login(app, "user=dave&channels=dave")
    before = app_calls(app)["calls"]
    hits = auth_stats(hub)["cache_hits"]
    for _ in range(3):
        s = Stream(hub, "dave", {"Cookie": cookie})
        assert s.status == 200
        s.close()
    assert app_calls(app)["calls"] == before + 1, "only the first subscribe asks the app"
    assert auth_stats(hub)["cache_hits"] == hits + 2
    # Another channel is another question.
    s = Stream(hub, "carol", {"Cookie": cookie})
    assert s.status == 403
    assert app_calls(app)["calls"] == before + 2


def test_no_caching_without_cookie_or_authorization(hub, app):
    before = app_calls(app)["calls"]
    for _ in range(2):
        s = Stream(hub, "public")
        assert s.status == 200, s.status
        s.close()
    assert app_calls(app)["calls"] == before + 2, "both anonymous subscribes ask the app"


def test_x_ssecast_expires_ends_the_stream(hub, app):
    cookie = login(app, "user=erin&channels=erin&expires=2")
    up0 = get_json(hub, "/events/status")["uptime_seconds"]
    t0 = time.monotonic()
    s = Stream(hub, "erin", {"Cookie": cookie})
    assert s.status == 200
    assert s.wait_eof(timeout=6), "the stream did not end"
    took = time.monotonic() - t0
    hub_took = get_json(hub, "/events/status")["uptime_seconds"] - up0
    assert 1.3 <= took <= 3.0, f"ended after {took:.2f} s"
    assert 1.3 <= hub_took <= 3.2, f"the hub's clock says {hub_took:.2f} s"
    assert s.body.endswith(b"0\r\n\r\n"), "a clean end of the chunked stream"


def test_the_app_answering_500_closes_without_an_answer(hub, app):
    failed = auth_stats(hub)["failed"]
    get_json(app, "/mode?m=error")
    try:
        s = Stream(hub, "public")
        assert s.status is None and s.buf == b"", f"answered {s.buf[:80]!r}"
    finally:
        get_json(app, "/mode?m=normal")
    assert auth_stats(hub)["failed"] == failed + 1


def test_a_slow_app_times_out_while_others_are_served(hub, app):
    cookie = login(app, "user=frank&channels=frank,news")
    neighbour = Stream(hub, "news", {"Cookie": cookie})
    assert neighbour.status == 200
    timeouts = auth_stats(hub)["timeouts"]
    get_json(app, "/mode?m=slow")
    result = {}

    def slow_subscribe():
        t0 = time.monotonic()
        s = Stream(hub, "frank", {"Cookie": cookie})
        result["took"] = time.monotonic() - t0
        result["status"], result["buf"] = s.status, s.buf

    t = threading.Thread(target=slow_subscribe)
    t.start()
    try:
        # Once the app holds the call, everything else must be served.
        assert get_json(app, "/slow-started")["started"], "the slow call never reached the app"
        for i in range(3):
            t0 = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{hub}/health", timeout=2) as r:
                assert r.status == 200
            assert time.monotonic() - t0 < 0.2, "/health was slow while a call waited"
            publish(hub, "news", f"tick {i}")
            t0 = time.monotonic()
            assert neighbour.wait_for(f"data: tick {i}", timeout=1), "the neighbour stopped receiving"
            assert time.monotonic() - t0 < 0.2
        t.join(10)
    finally:
        get_json(app, "/mode?m=normal")
    assert result["status"] is None and result["buf"] == b"", f"answered {result['buf'][:80]!r}"
    assert AUTH_TIMEOUT * 0.8 <= result["took"] <= AUTH_TIMEOUT + 1.0, f"closed after {result['took']:.2f} s"
    assert auth_stats(hub)["timeouts"] == timeouts + 1
    neighbour.close()


def wait_until(what, fn, timeout=5):
    """Polls the hub's status (a readiness check, not a sleep) until `fn`."""
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_client_hanging_up_while_it_waits_cancels_its_call(hub, app):
    cookie = login(app, "user=hank&channels=hank")
    get_json(app, "/mode?m=slow")
    try:
        sock = socket.create_connection(("127.0.0.1", hub), timeout=5)
        sock.sendall(f"GET /events?channel=hank HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode())
        assert get_json(app, "/slow-started")["started"], "the call never reached the app"
        assert auth_stats(hub)["in_flight"] == 1
        sock.close()
        wait_until("the call to be cancelled", lambda: auth_stats(hub)["in_flight"] == 0, timeout=0.9)
    finally:
        get_json(app, "/mode?m=normal")
    s = Stream(hub, "hank", {"Cookie": cookie})
    assert s.status == 200, "the next client is served as usual"
    s.close()


def test_calls_over_max_inflight_queue_under_the_same_timeout(app):
    hub_proc, hub, _ = start_hub("--subscribe-auth-url", f"http://127.0.0.1:{app}/auth",
                                 "--subscribe-auth-timeout", str(AUTH_TIMEOUT),
                                 "--subscribe-auth-max-inflight", "1")
    cookie = login(app, "user=ivy&channels=ivy")
    get_json(app, "/mode?m=slow")
    results = []
    try:
        threads = [threading.Thread(target=lambda: results.append(Stream(hub, "ivy", {"Cookie": cookie})))
                   for _ in range(2)]
        threads[0].start()
        assert get_json(app, "/slow-started")["started"]
        threads[1].start()
        wait_until("a queued call", lambda: auth_stats(hub)["queued"] == 1)
        st = auth_stats(hub)
        assert st["in_flight"] == 1 and st["calls"] == 2, st
        for t in threads:
            t.join(10)
    finally:
        get_json(app, "/mode?m=normal")
    assert [r.status for r in results] == [None, None], "both closed without an answer"
    st = auth_stats(hub)
    assert st["timeouts"] == 2 and st["queued"] == 0 and st["in_flight"] == 0, st
    s = Stream(hub, "ivy", {"Cookie": cookie})
    assert s.status == 200
    s.close()
    hub_proc.terminate()
    hub_proc.wait(10)


def test_the_app_down_closes_without_an_answer(hub, app_proc):
    app_proc.kill()
    app_proc.wait()
    t0 = time.monotonic()
    s = Stream(hub, "public")
    assert s.status is None and s.buf == b"", f"answered {s.buf[:80]!r}"
    assert time.monotonic() - t0 < AUTH_TIMEOUT, "a refused connect fails at once"
    st = get_json(hub, "/events/status")["forward_auth"]
    assert st["failed"] >= 1, st
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{hub}/metrics", timeout=5).read().decode()
    assert re.search(r"^ssecast_forward_auth_calls_total \d+", metrics, re.M), metrics[-800:]
    assert 'ssecast_forward_auth_answers_total{outcome="failed"}' in metrics


def test_a_bad_url_is_a_one_line_config_error():
    for url in ["https://127.0.0.1/auth", "127.0.0.1:80/auth", "http://a b/"]:
        p = subprocess.run([BIN, "--subscribe-auth-url", url], capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, (url, p.returncode, p.stderr)
        assert p.stderr.count("\n") == 1 and "--subscribe-auth-url" in p.stderr, p.stderr
    env = dict(os.environ, SSE_SUBSCRIBE_AUTH_URL="ftp://x/")
    p = subprocess.run([BIN], capture_output=True, text=True, timeout=10, env=env)
    assert p.returncode == 2 and "SSE_SUBSCRIBE_AUTH_URL" in p.stderr, p.stderr


def main():
    app_proc, app = start_app()
    hub_proc, hub, logs = start_hub("--subscribe-auth-url", f"http://127.0.0.1:{app}/auth",
                                    "--subscribe-auth-timeout", str(AUTH_TIMEOUT),
                                    "--subscribe-auth-cache", "5")
    scenarios = [
        (test_allowed_streams_and_the_app_sees_what_it_needs, (hub, app)),
        (test_403_is_passed_on, (hub, app)),
        (test_401_is_passed_on_with_www_authenticate, (hub, app)),
        (test_a_cache_hit_makes_no_second_call, (hub, app)),
        (test_no_caching_without_cookie_or_authorization, (hub, app)),
        (test_x_ssecast_expires_ends_the_stream, (hub, app)),
        (test_the_app_answering_500_closes_without_an_answer, (hub, app)),
        (test_a_slow_app_times_out_while_others_are_served, (hub, app)),
        (test_a_client_hanging_up_while_it_waits_cancels_its_call, (hub, app)),
        (test_calls_over_max_inflight_queue_under_the_same_timeout, (app,)),
        (test_the_app_down_closes_without_an_answer, (hub, app_proc)),
        (test_a_bad_url_is_a_one_line_config_error, ()),
    ]
    failed = 0
    for fn, args in scenarios:
        t0 = time.monotonic()
        try:
            fn(*args)
            print(f"ok   {fn.__name__} ({time.monotonic() - t0:.2f} s)", flush=True)
        except Exception as e:  # report every scenario, then fail
            failed += 1
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
    if failed:
        print("".join(logs[-40:]))
    hub_proc.terminate()
    hub_proc.wait(10)
    print(f"forward auth: {len(scenarios) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
