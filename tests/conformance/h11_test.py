#!/usr/bin/env python3
"""A strict HTTP/1.1 client (PyPI h11 over raw sockets) judges every kind of
answer the hub gives.

For each answer (200, 204, 400, 401, 403, 404, 405, 408, 413, 415, 429, 431,
503) h11 must parse it without a protocol error, and afterwards the
connection is either reused for `GET /health` (which must answer 200) or the
answer said `Connection: close` and the hub closes it. Also: HEAD on every
route (same status and headers as GET, no body, the connection reusable),
pipelined publishes, a chunked publish, the chunked stream read chunk by
chunk, an HTTP/1.0 (close-delimited) stream, and the clean end of both on
SIGTERM.

    python3 tests/conformance/h11_test.py [name-substring ...]
"""

import json
import signal
import sys
import time

import h11

from h11_client import Client, header, names, open_stream, values
from hub import Hub, Suite

TOKEN = "conformance-token"
AUTH = ("Authorization", f"Bearer {TOKEN}")
JSON = ("Content-Type", "application/json")

suite = Suite("h11")
# Hub A: token (401), one stream per client (429), small limits (408, 413, 431).
A = Hub(["--publish-token", TOKEN, "--max-connections-per-ip", "1", "--header-timeout", "0.5",
         "--max-body-bytes", "4096", "--max-header-bytes", "2048", "--retry-ms", "1000",
         "--heartbeat-interval", "0"])
# Hub B: two streams at most (503 connection limit), one channel (503 channel limit).
B = Hub(["--max-connections", "2", "--max-channels", "1", "--heartbeat-interval", "0"])


def settle(hub, stream, remaining=0):
    """Close a stream and wait until the hub has let go of it (its per-client slot is free)."""
    stream.close()
    deadline = time.monotonic() + 5
    while hub.get_json("/health")["sse_connections"] != remaining:
        assert time.monotonic() < deadline, "the hub still counts a closed stream"
        time.sleep(0.01)


def answer(hub, expect, method, target, headers=(), body=None, raw=None, source=None, close=None):
    """One exchange on a fresh connection; check status, JSON error, reuse or close."""
    c = Client(hub, source)
    try:
        c.send(method, target, headers, body, raw)
        resp, got = c.response()
        assert resp.status_code == expect, f"{method} {target}: {resp.status_code}, wanted {expect}: {got!r}"
        if expect >= 400:
            assert "error" in json.loads(got), f"{expect} without a JSON error: {got!r}"
            assert int(header(resp, b"content-length")) == len(got)
        fate = c.reusable_or_closed(resp)
        if close is not None:
            assert fate == ("closed" if close else "reused"), f"{expect}: connection {fate}"
        return resp, got
    finally:
        c.close()


# ---- every kind of answer ------------------------------------------------------

@suite.test
def answers_200_and_204_keep_alive():
    for target in ["/health", "/events/status", "/sse/health", "/metrics", "/"]:
        answer(A, 200, "GET", target, close=False)
    answer(A, 204, "GET", "/favicon.ico", close=False)
    answer(A, 204, "OPTIONS", "/events", close=False)
    answer(A, 200, "POST", "/events/broadcast", [JSON, AUTH], b'{"data":"x"}', close=False)


@suite.test
def answers_400_bad_body_keeps_the_connection():
    answer(A, 400, "POST", "/events/broadcast", [JSON, AUTH], b'{"data":', close=False)
    answer(A, 400, "GET", "/events?channel=%ZZ", close=False)
    answer(A, 400, "POST", "/events/broadcast", [JSON, AUTH], b'{"data":"x","event":"a\\nb"}', close=False)


@suite.test
def answers_400_unreadable_request_closes():
    answer(A, 400, "GET", "/health", raw=b"GET /health HTTP/1.1\r\nHost x\r\n\r\n", close=True)
    answer(A, 400, "POST", "/events/broadcast",
           raw=b"POST /events/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", close=True)


@suite.test
def answers_401_without_token():
    r, _ = answer(A, 401, "POST", "/events/broadcast", [JSON], b'{"data":"x"}', close=False)
    assert header(r, b"www-authenticate").startswith(b"Bearer")


@suite.test
def answers_403_for_a_foreign_preflight():
    answer(A, 403, "OPTIONS", "/events", [("Origin", "http://evil.example"),
                                          ("Access-Control-Request-Method", "GET")], close=False)


@suite.test
def answers_404_and_405():
    answer(A, 404, "GET", "/nope", close=False)
    r, _ = answer(A, 405, "GET", "/events/broadcast", close=False)
    assert b"POST" in header(r, b"allow")
    answer(A, 405, "POST", "/health", [JSON], b"{}", close=False)
    answer(A, 405, "DELETE", "/events", close=False)


@suite.test
def answers_408_after_the_header_deadline():
    t0 = time.monotonic()
    answer(A, 408, "GET", "/health", raw=b"GET /health HTTP/1.1\r\nHost: x\r\n", close=True)
    assert time.monotonic() - t0 < 3, "408 long after --header-timeout 0.5"


@suite.test
def answers_413_for_a_large_body():
    big = json.dumps({"data": "x" * 5000}).encode()
    answer(A, 413, "POST", "/events/broadcast", [JSON, AUTH], big)
    chunks = [b'{"data":"', b"y" * 3000, b"y" * 3000, b'"}']
    c = Client(A)
    try:
        c.send("POST", "/events/broadcast", [JSON, AUTH], chunks=chunks)
        r, _ = c.response()
        assert r.status_code == 413, r
        c.reusable_or_closed(r)
    finally:
        c.close()


@suite.test
def answers_415_for_an_unknown_type():
    answer(A, 415, "POST", "/events/broadcast", [("Content-Type", "image/png"), AUTH], b"\x89PNG", close=False)


@suite.test
def answers_429_over_the_per_client_limit():
    s, _ = open_stream(A, "limit")
    try:
        r, _ = answer(A, 429, "GET", "/events?channel=limit", close=False)
        assert header(r, b"retry-after"), "429 without Retry-After"
        answer(A, 200, "GET", "/health", source="127.0.0.2", close=False)  # others unaffected
    finally:
        settle(A, s)


@suite.test
def answers_431_for_large_headers():
    answer(A, 431, "GET", "/health", [("X-Big", "b" * 3000)], close=True)


@suite.test
def answers_503_at_the_channel_and_stream_limits():
    s1, _ = open_stream(B, "only")
    try:
        r, _ = answer(B, 503, "GET", "/events?channel=another", close=False)
        assert header(r, b"retry-after"), "503 without Retry-After"
        s2, _ = open_stream(B, "only")
        try:
            r, _ = answer(B, 503, "GET", "/events?channel=only", close=False)
            assert header(r, b"retry-after")
        finally:
            settle(B, s2, remaining=1)
    finally:
        settle(B, s1)


@suite.test
def answers_503_at_the_connection_cap_and_closes():
    D = Hub(["--max-connections", "1"])  # 1 stream + 256 other connections may be open
    idle = []
    try:
        idle = [D.connect() for _ in range(256)]
        c = Client(D)
        c.send("GET", "/sse/health")
        r, body = c.response()
        assert json.loads(body)["connections"]["open"] == 257, body
        c.conn.start_next_cycle()
        idle.append(c.sock)
        over = Client(D)
        over.conn.send(h11.Request(method="GET", target="/health", headers=[("Host", "x")]))
        over.conn.send(h11.EndOfMessage())  # sent nothing: the hub answers at accept
        r, body = over.response()
        assert r.status_code == 503 and header(r, b"retry-after"), (r, body)
        assert over.reusable_or_closed(r) == "closed"
        over.close()
    finally:
        for s in idle:
            s.close()
        D.stop()


# ---- HEAD ----------------------------------------------------------------------

ROUTES = {"/health": 200, "/events": 200, "/sse": 200, "/events/status": 200, "/sse/health": 200,
          "/events/status/stream": 200, "/metrics": 200, "/": 200, "/favicon.ico": 204, "/nope": 404,
          "/events/broadcast": 405}
STREAMS = {"/events", "/sse", "/events/status/stream"}
FIXED_BODY = {"/", "/favicon.ico", "/nope"}  # GET's body is always the same (405 names the method)


@suite.test
def head_on_every_route_is_get_without_a_body():
    problems = []
    for path, status in ROUTES.items():
        try:
            g = Client(A)
            g.send("GET", path + "?channel=head")
            get = g.head() if path in STREAMS else None
            get_body = None
            if get is None:
                get, get_body = g.response()
            settle(A, g)
            before = A.get_json("/health")["sse_connections"]
            h = Client(A)
            h.send("HEAD", path + "?channel=head")
            resp, body = h.response()
            assert body == b"", f"HEAD {path}: {len(body)} body bytes"
            assert resp.status_code == get.status_code == status, f"HEAD {path}: {resp.status_code}, GET {get.status_code}"
            drop = {"connection", "transfer-encoding"} if path in STREAMS else set()
            assert names(resp, drop) == names(get, drop), f"HEAD {path}: headers {names(resp)} vs GET {names(get)}"
            assert values(resp, drop) == values(get, drop), f"HEAD {path}: {values(resp, drop)} vs GET {values(get, drop)}"
            if path in FIXED_BODY:
                want = b"" if status == 204 else str(len(get_body)).encode()  # a 204 has no Content-Length
                assert header(resp, b"content-length") == header(get, b"content-length") == want, \
                    f"HEAD {path}: Content-Length {header(resp, b'content-length')}, GET's body is {want} bytes"
            if path in STREAMS:
                assert header(resp, b"content-type") == b"text/event-stream"
                assert b"close" not in header(resp, b"connection").lower(), f"HEAD {path} says Connection: close"
            assert h.reusable_or_closed(resp) == "reused", f"HEAD {path}: connection not reusable"
            assert A.get_json("/health")["sse_connections"] == before, f"HEAD {path} became a subscriber"
            h.close()
        except (AssertionError, h11.ProtocolError, OSError) as e:
            problems.append(f"{path}: {e!r}")
    assert not problems, "\n".join(problems)


@suite.test
def head_twice_then_get_on_one_connection():
    c = Client(A)
    try:
        for path in ["/nope", "/events", "/health"]:
            c.send("HEAD", path)
            r, body = c.response()
            assert body == b"" and r.status_code in (200, 404), (path, r)
            c.conn.start_next_cycle()
        c.send("GET", "/nope")
        r, body = c.response()
        assert r.status_code == 404 and json.loads(body)["error"]
    finally:
        c.close()


def head_answer(hub, expect, target):
    c = Client(hub)
    try:
        c.send("HEAD", target)
        r, body = c.response()
        assert r.status_code == expect, f"HEAD {target}: {r.status_code}, wanted {expect}"
        assert body == b"" and int(header(r, b"content-length") or 0) > 0, "an error's length, but no body"
        c.reusable_or_closed(r)
    finally:
        c.close()


@suite.test
def head_errors_carry_no_body():
    problems = []
    s_a, _ = open_stream(A, "limit")
    s_b, _ = open_stream(B, "only")
    try:
        for hub, status, target in [(A, 400, "/events?channel=%ZZ"), (A, 404, "/nope"), (A, 405, "/events/broadcast"),
                                    (A, 429, "/events?channel=limit"), (B, 503, "/events?channel=another")]:
            try:
                head_answer(hub, status, target)
            except (AssertionError, h11.ProtocolError, OSError) as e:
                problems.append(f"HEAD {target} ({status}): {e!r}")
    finally:
        settle(A, s_a)
        settle(B, s_b)
    assert not problems, "\n".join(problems)


@suite.test
def head_unreadable_requests_carry_no_body():
    """Errors included: a HEAD whose head cannot be read still gets no body (then a close)."""
    problems = []
    for status, raw in [(400, b"HEAD /health HTTP/1.1\r\nHost x\r\n\r\n"),
                        (431, b"HEAD /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n"),
                        (408, b"HEAD /health HTTP/1.1\r\nHost: x\r\n")]:
        c = Client(A)
        try:
            c.send("HEAD", "/health", raw=raw)
            r, _ = c.response()
            assert r.status_code == status, f"{r.status_code}, wanted {status}"
            assert c.reusable_or_closed(r) == "closed"
        except (AssertionError, h11.ProtocolError, OSError) as e:
            problems.append(f"{status}: {e!r}")
        finally:
            c.close()
    assert not problems, "\n".join(problems)


# ---- pipelining and chunked publishes ------------------------------------------

def publish_req(data, channel="pipe"):
    body = json.dumps({"channel": channel, "data": data}).encode()
    return (f"POST /events/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def frames_of(chunks):
    return [f for f in b"".join(chunks).split(b"\n\n") if f]


@suite.test
def pipelined_publishes_answer_in_order():
    sub, _ = open_stream(A, "pipe")
    try:
        assert sub.chunk().startswith(b"retry: ")
        c = Client(A)
        reqs = [publish_req(f"p{i}") for i in range(5)] + [b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"] \
            + [publish_req(f"p{i}") for i in range(5, 10)]
        c.sock.sendall(b"".join(reqs))
        ids = []
        for i in range(11):
            # h11 is told about each request (so it can frame the answers) after the fact.
            c.conn.send(h11.Request(method="GET" if i == 5 else "POST", target="/", headers=[("Host", "x")]))
            c.conn.send(h11.EndOfMessage())
            r, body = c.response()
            assert r.status_code == 200, (i, r, body)
            if i != 5:
                ids.append(json.loads(body)["id"])
            c.conn.start_next_cycle()
        c.close()
        assert ids == sorted(ids) and len(set(ids)) == 10, ids
        got = []
        while len(got) < 10:
            got += frames_of([sub.chunk()])
        want = [f"id: {i}\ndata: p{n}".encode() for n, i in enumerate(ids)]
        assert got == want, got
    finally:
        settle(A, sub)


@suite.test
def chunked_publish_split_inside_a_character():
    sub, _ = open_stream(A, "chunked")
    try:
        assert sub.chunk().startswith(b"retry: ")
        body = json.dumps({"channel": "chunked", "data": "héllo ✓ wörld"}, ensure_ascii=False).encode()
        pieces = [body[:11], body[11:12], body[12:20], body[20:]]
        c = Client(A)
        c.send("POST", "/events/broadcast", [JSON, AUTH], chunks=pieces)
        r, answer_body = c.response()
        assert r.status_code == 200, answer_body
        eid = json.loads(answer_body)["id"]
        assert c.reusable_or_closed(r) == "reused"
        c.close()
        assert sub.chunk() == f"id: {eid}\ndata: héllo ✓ wörld\n\n".encode()
    finally:
        settle(A, sub)


# ---- streams -------------------------------------------------------------------

@suite.test
def chunked_stream_chunk_by_chunk_and_its_end():
    C = Hub(["--retry-ms", "1000", "--heartbeat-interval", "0.3", "--shutdown-grace", "2"])
    sub, r = open_stream(C, "chunks")
    try:
        assert header(r, b"transfer-encoding") == b"chunked"
        assert header(r, b"content-type") == b"text/event-stream"
        retry = sub.chunk()
        assert retry.startswith(b"retry: ") and retry.endswith(b"\n\n")
        assert 1000 <= int(retry[7:-2]) <= 1500, retry
        assert sub.chunk() == b":\n\n", "a heartbeat chunk after 0.3 s of quiet"
        one = C.publish("chunks", "one\ntwo")["id"]
        assert sub.chunk() == f"id: {one}\ndata: one\ndata: two\n\n".encode()
        # A batch published in one request reaches the subscriber in one write: one chunk.
        status, _, body = C.request("POST", "/events/broadcast", json.dumps(
            [{"channel": "chunks", "data": f"b{i}", "event": "batch"} for i in range(3)]).encode(), {"Content-Type": "application/json"})
        assert status == 200, body
        ids = [e["id"] for e in json.loads(body)["events"]]
        while (got := sub.chunk()) == b":\n\n":
            pass
        assert got == b"".join(f"id: {i}\nevent: batch\ndata: b{n}\n\n".encode() for n, i in enumerate(ids)), got
        C.proc.send_signal(signal.SIGTERM)
        while isinstance(ev := sub.event(), h11.Data):
            assert ev.data == b":\n\n", ev
        assert isinstance(ev, h11.EndOfMessage), f"stream did not end with the last chunk: {ev!r}"
        assert C.proc.wait(10) == 0
    finally:
        sub.close()
        C.stop()


@suite.test
def http10_stream_is_close_delimited():
    C = Hub(["--retry-ms", "0", "--heartbeat-interval", "0", "--shutdown-grace", "2"])
    c = Client(C)
    try:
        c.send("GET", "/events?channel=old", raw=b"GET /events?channel=old HTTP/1.0\r\n\r\n")
        r = c.head()
        assert r.status_code == 200 and header(r, b"content-type") == b"text/event-stream"
        assert header(r, b"transfer-encoding") == b"" and header(r, b"content-length") == b""
        assert b"close" in header(r, b"connection").lower()
        C.wait_subscribers("old", 1)
        eid = C.publish("old", "from 1.0")["id"]
        want = f"id: {eid}\ndata: from 1.0\n\n".encode()
        got = b""
        while len(got) < len(want):
            ev = c.event()
            assert isinstance(ev, h11.Data), ev
            got += ev.data
        assert got == want, got
        C.proc.send_signal(signal.SIGTERM)
        assert isinstance(c.event(), h11.EndOfMessage), "the close ends the body"
        assert isinstance(c.event(), h11.ConnectionClosed)
    finally:
        c.close()
        C.stop()


@suite.test
def stream_headers():
    s, r = open_stream(A, "hdrs")
    try:
        assert header(r, b"content-type") == b"text/event-stream"
        assert header(r, b"x-accel-buffering") == b"no"
        assert b"close" in header(r, b"connection").lower()
        cc = {v.strip() for v in header(r, b"cache-control").decode().split(",")}
        assert cc == {"no-cache", "no-store", "no-transform"}, f"Cache-Control: {header(r, b'cache-control')}"
    finally:
        settle(A, s)


if __name__ == "__main__":
    try:
        rc = suite.run(sys.argv[1:])
    finally:
        A.stop()
        B.stop()
    sys.exit(rc)
