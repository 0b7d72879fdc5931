"""h11 (a strict HTTP/1.1 client state machine) over one raw socket: what
the conformance tests use to talk to the hub and judge its answers."""

import json
import time

import h11


class Client:
    """One TCP connection and one h11 client state machine."""

    def __init__(self, hub, source=None):
        self.hub = hub
        self.sock = hub.connect(source=source)
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, method, target, headers=(), body=None, raw=None, chunks=None):
        """Send a request through h11. With `raw`, h11 is told about the request
        (so it knows e.g. that it was a HEAD) but `raw` goes on the wire instead."""
        hdrs = [("Host", "conformance"), *headers]
        if body is not None:
            hdrs.append(("Content-Length", str(len(body))))
        if chunks is not None:
            hdrs.append(("Transfer-Encoding", "chunked"))
        out = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        for piece in ([body] if body else []) + (chunks or []):
            out += self.conn.send(h11.Data(data=piece))
        out += self.conn.send(h11.EndOfMessage())
        self.sock.sendall(out if raw is None else raw)

    def event(self):
        while True:
            ev = self.conn.next_event()
            if ev is not h11.NEED_DATA:
                return ev
            self.conn.receive_data(self.sock.recv(65536))

    def head(self):
        ev = self.event()
        while isinstance(ev, h11.InformationalResponse):
            ev = self.event()
        assert isinstance(ev, h11.Response), f"expected a response, got {ev!r}"
        return ev

    def chunk(self):
        """The next whole chunk of a chunked body (h11 may hand it over in pieces)."""
        data = b""
        while True:
            ev = self.event()
            assert isinstance(ev, h11.Data), f"expected body data, got {ev!r}"
            assert data or ev.chunk_start, "a chunk must start where the last one ended"
            data += ev.data
            if ev.chunk_end:
                return data

    def response(self):
        resp = self.head()
        body = b""
        while not isinstance(ev := self.event(), h11.EndOfMessage):
            assert isinstance(ev, h11.Data), f"unexpected {ev!r}"
            body += ev.data
        return resp, body

    def reusable_or_closed(self, resp):
        """After a complete answer: reuse the connection, or it said close and closes."""
        says_close = b"close" in header(resp, b"connection").lower()
        if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
            assert says_close, f"{resp.status_code}: the connection cannot be reused but the answer did not say Connection: close"
            deadline = time.monotonic() + 5
            while not isinstance(ev := self.event(), h11.ConnectionClosed):
                assert time.monotonic() < deadline, f"bytes after a close-delimited answer: {ev!r}"
            return "closed"
        assert not says_close, "Connection: close, yet h11 saw a reusable connection"
        self.conn.start_next_cycle()
        self.send("GET", "/health")
        r, body = self.response()
        assert r.status_code == 200, f"reuse: GET /health -> {r.status_code} {body!r}"
        assert json.loads(body)["status"] == "healthy"
        return "reused"

    def close(self):
        self.sock.close()


def header(resp, name):
    return b", ".join(v for k, v in resp.headers if k == name)


def names(resp, drop=()):
    return sorted({k.decode() for k, _ in resp.headers} - {"date", *drop})


def values(resp, drop=()):
    """Header values by name, without Date, Content-Length and `drop`."""
    skip = {"date", "content-length", *drop}
    return {k.decode(): header(resp, k).decode() for k, _ in resp.headers if k.decode() not in skip}


def open_stream(hub, channel, headers=(), target=None, source=None):
    """GET a stream; returns (client, response head), the body still to read."""
    c = Client(hub, source)
    c.send("GET", target or f"/events?channel={channel}", headers)
    r = c.head()
    assert r.status_code == 200, r
    return c, r



class Frames:
    """Reads a chunked event stream frame by frame (a frame ends with a blank line)."""

    def __init__(self, client):
        self.client = client
        self.buf = b""

    def next(self, skip=(b":",)):
        """The next frame as text, with the time it arrived; frames starting with `skip` are passed over."""
        while True:
            while b"\n\n" not in self.buf:
                self.buf += self.client.chunk()
            frame, self.buf = self.buf.split(b"\n\n", 1)
            if not any(frame.startswith(s) for s in skip):
                return frame.decode(), time.monotonic()

    def events(self, n, skip=(b":", b"retry:")):
        return [self.next(skip)[0] for _ in range(n)]
