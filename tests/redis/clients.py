"""Clients of the hub for the Redis suite (stdlib only): `Publisher` (POST
/events/broadcast on one keep-alive http.client connection, reopened after
an error; every answer an `Answer` with its time), `Sse` (a subscriber over a
raw socket: head, de-chunking, SSE fields, comments with their arrival
time, every read under a deadline) and `sync` (publish warm-up events until
every subscriber really follows a channel)."""
import http.client
import json
import re
import socket
import time

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
