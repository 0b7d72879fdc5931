#!/usr/bin/env python3
"""The bench's own checks (lab.py), without Redis mode in the hub: a private
redis-server starts, persists with appendonly, survives kill -9 and a
restart on the same socket, stops and resumes, is ended by its guard; the
fake Redis passes, garbles, cuts and delays replies and counts connections;
the SSE reader and `sync` work against a plain hub (chunked and HTTP/1.0),
heartbeats are recorded.

Usage: lab_selftest.py [test ...]
"""
import os
import signal
import socket
import sys
import time

import lab as L
from lab import Lab, RespConn, resp_encode, run_tests, sync


def test_redis_lifecycle():
    with Lab("self-redis") as lab:
        r = lab.redis("--appendonly", "yes", "--appendfsync", "always")
        assert r.cmd("SET", "k", "v") == "OK"
        assert r.cmd("CONFIG", "GET", "appendfsync") == [b"appendfsync", b"always"]
        pid = r.pid
        r.restart()  # kill -9, start on the same directory and socket
        assert r.pid != pid and r.cmd("GET", "k") == b"v", "appendonly data lost over kill -9"
        r.stop()
        c = r.client(timeout=0.5)
        c.sock.sendall(resp_encode("PING"))
        try:
            c.sock.recv(10)
            raise AssertionError("a SIGSTOPped redis answered")
        except socket.timeout:
            pass
        r.cont()
        assert c.read() == "PONG"
        c.close()
        t = lab.redis(tcp=True)
        s = socket.create_connection(("127.0.0.1", t.port), timeout=2)
        rc = RespConn(s)
        assert rc.cmd("PING") == "PONG"
        rc.close()
        pw = lab.redis("--requirepass", "pw1")
        assert pw.cmd("PING") == "PONG"
        stopped = r.pid
        r.stop()
    # The guard resumed and killed the stopped one.
    try:
        os.kill(stopped, 0)
        with open(f"/proc/{stopped}/stat") as f:
            state = f.read().split()[2]
        raise AssertionError(f"redis-server {stopped} still there after the lab ended (state {state})")
    except (ProcessLookupError, FileNotFoundError):
        pass


def test_fake_redis_modes():
    with Lab("self-fake") as lab:
        r = lab.redis()
        f = lab.fake(r, delay=0.6)

        def conn():
            s = socket.create_connection(("127.0.0.1", f.port), timeout=3)
            return RespConn(s)

        c = conn()
        assert c.cmd("PING") == "PONG" and f.connections == 1
        f.set_mode("garbage")
        c.sock.sendall(resp_encode("PING"))
        junk = c.sock.recv(100)
        assert junk.startswith(f.GARBAGE[:4]), junk
        c.close()
        f.set_mode("cut")
        c = conn()
        c.sock.sendall(resp_encode("ECHO", "0123456789abcdef"))
        got = b""
        while True:
            b = c.sock.recv(100)
            if not b:
                break
            got += b
        assert 0 < len(got) < len(b"$16\r\n0123456789abcdef\r\n"), got
        from fake_redis import reply_end
        two = b"*2\r\n$1\r\na\r\n:5\r\n+OK\r\n"
        assert reply_end(two, 0) == len(two) - 5 and reply_end(two[:9], 0) is None
        assert reply_end(b"$-1\r\n", 0) == 5 and reply_end(b"*-1\r\n", 0) == 5
        f.set_mode("slow")
        c = conn()
        t0 = time.monotonic()
        assert c.cmd("PING") == "PONG" and time.monotonic() - t0 >= 0.6
        f.set_mode("loading")
        try:
            c.cmd("PING")
            raise AssertionError("no LOADING error")
        except L.RespError as e:
            assert str(e).startswith("LOADING"), e
        f.set_mode("pass")
        assert c.cmd("PING") == "PONG"
        c.sock.sendall(resp_encode("SET", "a", "1") + resp_encode("GET", "a")[:7])
        assert c.read() == "OK"
        c.sock.sendall(resp_encode("GET", "a")[7:])
        assert c.read() == b"1"
        assert f.connections == 3, f.connections
        f.drop_all()
        assert c.sock.recv(10) == b""


def test_sse_reader_and_sync_against_a_plain_hub():
    with Lab("self-sse") as lab:
        h = lab.hub("plain", "--heartbeat-interval", "0.3")
        subs = [lab.subscribe(h, "c"), lab.subscribe(h, "c", http10=True)]
        assert subs[0].chunked and not subs[1].chunked
        p = h.publisher()
        sync(p, "c", subs)
        a = p.must("c", "one\r\ntwo\rthree", event="ev")
        b = p.batch([{"channel": "c", "data": "x"}, {"channel": "c", "data": {"j": 1}}])
        assert b.status == 200 and len(b.ids) == 2, b
        for s in subs:
            got = s.read_n(3)
            assert [(e.nid, e.event, e.data) for e in got] == [
                (a.id, "ev", "one\ntwo\nthree"), (b.ids[0], "message", "x"), (b.ids[1], "message", '{"j":1}')], got
            s.pump(0.8)
            assert len(s.comments) >= 2, s.comments
        r = lab.subscribe(h, "c", last_id=a.id)
        assert [e.data for e in r.read_n(2)] == ["x", '{"j":1}']
        assert r.next_event(0.2) is None
        lost = lab.subscribe(h, "c", last_id="nope")
        assert lost.expect_event().event == "history-lost"
        h.assert_alive()


TESTS = [test_redis_lifecycle, test_fake_redis_modes, test_sse_reader_and_sync_against_a_plain_hub]

if __name__ == "__main__":
    sys.exit(run_tests(TESTS, sys.argv))
