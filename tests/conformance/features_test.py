#!/usr/bin/env python3
"""Issue 12's stream features, read with h11 over raw sockets:

  * resume: `Last-Event-ID` header, else the query as `lastEventId`,
    `last_event_id` or `lastEventID`; the header wins; `earliest` replays all
    the history still held, then live events;
  * `connections: {active, open, accepted}` in /sse/health and /events/status
    (read with curl | jq), `active` equal to /health's `sse_connections`;
  * `--heartbeat-event NAME` / SSE_HEARTBEAT_EVENT: heartbeats become
    `event: NAME` + `data: {"time": <unix ms>}` without an `id:` line, only to
    subscribers quiet for `--heartbeat-interval` (a fraction: 0.5).

    python3 tests/conformance/features_test.py [name-substring ...]
"""

import json
import subprocess
import sys
import threading
import time

import h11

from h11_client import Frames, open_stream
from hub import Hub, Suite

suite = Suite("features")
R = Hub(["--retry-ms", "0", "--heartbeat-interval", "0"])


def frame(eid, data, event=None):
    return f"id: {eid}\n" + (f"event: {event}\n" if event else "") + f"data: {data}"


def seeded(channel, n=3):
    """Publishes n events to a fresh channel; returns their frames in order."""
    return [frame(R.publish(channel, f"{channel}-{i}")["id"], f"{channel}-{i}") for i in range(n)]


def replay(channel, headers=(), query=""):
    """Subscribes, publishes a live marker once subscribed, returns every frame up to the marker."""
    c, _ = open_stream(R, channel, headers, f"/events?channel={channel}{query}")
    try:
        R.wait_subscribers(channel, 1)
        live = frame(R.publish(channel, "live")["id"], "live")
        f = Frames(c)
        got = []
        while not got or got[-1] != live:
            got.append(f.next()[0])
            assert len(got) < 50, got
        return got[:-1]
    finally:
        c.close()


@suite.test
def resume_from_the_header():
    ev = seeded("hdr")
    got = replay("hdr", [("Last-Event-ID", ev[0].split("\n")[0][4:])])
    assert got == ev[1:], got


@suite.test
def resume_from_each_query_spelling():
    for name in ["lastEventId", "last_event_id", "lastEventID"]:
        ch = f"q-{name}"
        ev = seeded(ch)
        got = replay(ch, query=f"&{name}={ev[0].split(chr(10))[0][4:]}")
        assert got == ev[1:], f"?{name}=: {got}"


@suite.test
def the_header_wins_over_the_query():
    for name in ["lastEventId", "last_event_id", "lastEventID"]:
        ch = f"w-{name}"
        ev = seeded(ch, 4)
        ids = [e.split("\n")[0][4:] for e in ev]
        got = replay(ch, [("Last-Event-ID", ids[2])], f"&{name}={ids[0]}")
        assert got == ev[3:], f"header {ids[2]} + ?{name}={ids[0]}: {got}"


@suite.test
def earliest_replays_all_history_then_live():
    ev = seeded("early-h", 4)
    got = replay("early-h", [("Last-Event-ID", "earliest")])
    assert got == ev, f"Last-Event-ID: earliest: {got}"
    for name in ["lastEventId", "last_event_id", "lastEventID"]:
        ch = f"early-{name}"
        ev = seeded(ch, 2)
        got = replay(ch, query=f"&{name}=earliest")
        assert got == ev, f"?{name}=earliest: {got}"


@suite.test
def the_header_wins_over_earliest_and_back():
    ev = seeded("w-early", 3)
    ids = [e.split("\n")[0][4:] for e in ev]
    got = replay("w-early", [("Last-Event-ID", ids[1])], "&lastEventId=earliest")
    assert got == ev[2:], f"header {ids[1]} + ?lastEventId=earliest: {got}"
    got = replay("w-early", [("Last-Event-ID", "earliest")], f"&last_event_id={ids[1]}")
    assert got[:3] == ev, f"header earliest + ?last_event_id={ids[1]}: {got}"


@suite.test
def earliest_on_an_empty_channel_is_just_live():
    got = replay("early-empty", [("Last-Event-ID", "earliest")])
    assert got == [], f"earliest on an empty channel: {got}"


def jq(path, program):
    out = subprocess.run(f"curl -fsS --max-time 5 {R.base}{path} | jq -ce '{program}'", shell=True,
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, f"curl {path} | jq '{program}': {out.returncode} {out.stderr}"
    return json.loads(out.stdout)


@suite.test
def status_counts_connections():
    streams = [open_stream(R, "count")[0] for _ in range(2)]
    try:
        R.wait_subscribers("count", 2)
        for path in ["/sse/health", "/events/status"]:
            c = jq(path, ".connections")
            assert set(c) == {"active", "open", "accepted"}, c
            assert c["active"] == 2, c
            assert c["open"] >= 3 and c["accepted"] >= c["open"], c  # 2 streams + curl itself
            assert jq(path, ".connections.active") == jq("/health", ".sse_connections") == 2
    finally:
        for s in streams:
            s.close()
    deadline = time.monotonic() + 5
    while jq("/sse/health", ".connections.active") != 0:
        assert time.monotonic() < deadline, "active did not fall back to 0"
        time.sleep(0.02)


def heartbeat_ok(text, name):
    lines = text.split("\n")
    assert lines[0] == f"event: {name}" and len(lines) == 2 and lines[1].startswith("data: "), repr(text)
    body = json.loads(lines[1][6:])
    assert set(body) == {"time"} and isinstance(body["time"], int), body
    assert abs(body["time"] - time.time() * 1000) < 5000, f"time {body['time']} is not unix ms now"


@suite.test
def heartbeat_events_only_to_quiet_subscribers():
    H = Hub(["--heartbeat-event", "tick", "--heartbeat-interval", "0.5", "--retry-ms", "0"])
    quiet, _ = open_stream(H, "quiet")
    busy, _ = open_stream(H, "busy")
    seen = []  # (frame, arrival) on the busy stream, read as it comes

    def read_busy():
        f = Frames(busy)
        try:
            while True:
                seen.append(f.next(skip=()))
        except (OSError, AssertionError, h11.ProtocolError):
            return  # closed at the end of the test

    try:
        H.wait_subscribers("quiet", 1)
        H.wait_subscribers("busy", 1)
        threading.Thread(target=read_busy, daemon=True).start()
        real = H.publish("quiet", "real")["id"]
        q = Frames(quiet)
        while (first := q.next(skip=())[0]).startswith("event: tick"):
            pass
        assert first == frame(real, "real"), first
        beats = [q.next(skip=()) for _ in range(3)]
        for text, _ in beats:
            heartbeat_ok(text, "tick")
            assert "id:" not in text
        gaps = [b[1] - a[1] for a, b in zip(beats, beats[1:])]
        assert all(0.35 < g < 1.5 for g in gaps), f"heartbeats {gaps} s apart with --heartbeat-interval 0.5"

        for _ in range(15):  # keep "busy" written to every 0.1 s (pacing, not synchronisation)
            H.publish("busy", "work")
            time.sleep(0.1)
        deadline = time.monotonic() + 5
        while sum(t.endswith("data: work") for t, _ in seen) < 15:
            assert time.monotonic() < deadline, f"busy stream: {seen}"
            time.sleep(0.01)
        works = [i for i, (t, _) in enumerate(seen) if t.endswith("data: work")]
        assert any(t.startswith("event: tick") for t, _ in seen[:works[0]]), "no heartbeat while busy was quiet"
        during = seen[works[0]:works[-1] + 1]
        ticks = 0
        for (_, t0), (text, t1) in zip(during, during[1:]):
            if text.startswith("event: tick"):
                heartbeat_ok(text, "tick")
                assert t1 - t0 > 0.4, f"a heartbeat {t1 - t0:.2f} s after the last write"
                ticks += 1
        assert ticks <= 1, f"a subscriber written every 0.1 s got {ticks} heartbeats"
    finally:
        quiet.close()
        busy.close()
        H.stop()


@suite.test
def heartbeat_event_from_the_environment():
    H = Hub(["--retry-ms", "0"], env={"SSE_HEARTBEAT_EVENT": "ping", "SSE_HEARTBEAT_INTERVAL": "0.5"})
    s, _ = open_stream(H, "env")
    try:
        text, _ = Frames(s).next(skip=())
        heartbeat_ok(text, "ping")
    finally:
        s.close()
        H.stop()


@suite.test
def plain_heartbeat_stays_a_comment():
    H = Hub(["--retry-ms", "0", "--heartbeat-interval", "0.5"])
    s, _ = open_stream(H, "plain")
    try:
        assert Frames(s).next(skip=())[0] == ":"
    finally:
        s.close()
        H.stop()


if __name__ == "__main__":
    try:
        rc = suite.run(sys.argv[1:])
    finally:
        R.stop()
    sys.exit(rc)
