#!/usr/bin/env python3
"""Redis scale-out when Redis fails (issue 11, "Tests"): kill -9 of a Redis
with appendfsync always loses no acknowledged event; a Redis restarted
empty makes an old Last-Event-ID history-lost, once; a SIGSTOPped Redis
makes publishes 503 within --redis-timeout while /health, heartbeats and
new streams go on, and retried Idempotency-Keys publish once; SCRIPT FLUSH
is survived in order; a fake Redis answering garbage, closing mid-reply,
answering slowly or LOADING is logged and reconnected with backoff, never a
panic; a client that left never passes its answer to the next; /health says
"redis": "down" with 200 while Redis is away; configuration errors, host
names, passwords, maxmemory-policy, a Redis away at startup.

Usage: faults_test.py [test ...]   (default: all)
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

from lab import BIN, Lab, percentile, run_tests, sync, wait_until

TIMEOUT = 1.0   # --redis-timeout of the fault tests
MARGIN = 0.5    # what an answer may take beyond it on a loaded CI box


def publish_until_ok(pub, channel, data, key=None, timeout=20):
    """Retries (the retry is the signal that the link is back) until 200."""
    deadline = time.monotonic() + timeout
    while True:
        a = pub.publish(channel, data, key=key)
        if a.status == 200:
            return a
        assert time.monotonic() < deadline, f"publish {data!r} never answered 200 in {timeout} s: last {a}"
        time.sleep(0.1)


def history_lost(events):
    return [e for e in events if e.event == "history-lost"]


def test_kill9_with_appendfsync_always_loses_no_acknowledged_event():
    with Lab("kill9") as lab:
        r = lab.redis("--appendonly", "yes", "--appendfsync", "always")
        A = lab.hub("A", "--redis-timeout", f"{TIMEOUT:g}", redis=r)
        B = lab.hub("B", "--redis-timeout", f"{TIMEOUT:g}", redis=r)
        A.wait_redis_up()
        B.wait_redis_up()
        live = lab.subscribe(B, "dur")
        pa = A.publisher(timeout=5)
        sync(pa, "dur", [live])

        answers = []   # (phase, data, Answer)
        phase = ["before"]
        stop = threading.Event()

        def publisher(pub, tag):
            i = 0
            while not stop.is_set():
                a = pub.publish("dur", f"d{tag}-{i}")
                answers.append((phase[0], f"d{tag}-{i}", a))
                i += 1
                if a.status != 200:
                    time.sleep(0.02)

        def acked(ph=None):
            return [x for x in answers if x[2].status == 200 and (ph is None or x[0] == ph)]

        # Four publishers on two processes, so that appends are in flight
        # when Redis dies.
        ts = [threading.Thread(target=publisher, args=(h.publisher(timeout=5), f"{h.name}{j}"))
              for h in (A, B) for j in range(2)]
        for t in ts:
            t.start()
        try:
            wait_until(lambda: len(acked("before")) >= 200, 20, "200 acknowledged publishes")
            phase[0] = "down"
            r.kill9()
            n = len(answers)
            wait_until(lambda: len([x for x in answers[n:] if x[2].status != 200]) >= 8, 10,
                       "publishes refused while Redis is dead")
            phase[0] = "after"
            r.start()  # same directory (appendonlydir), same socket
            wait_until(lambda: len(acked("after")) >= 200, 30, "200 acknowledged publishes after the restart")
        finally:
            stop.set()
            for t in ts:
                t.join(15)
        for ph, d, a in answers:
            if a.status != 200:
                assert a.status == 503, f"{d} during the outage: {a}"
        end = publish_until_ok(pa, "dur", "end")
        ok = acked()
        ack_ids = {d: a.id for _, d, a in ok}
        before_max = max(a.id for ph, _, a in ok if ph == "before")
        after_min = min(a.id for ph, _, a in ok if ph == "after")
        assert after_min > before_max, f"ids went backwards across the Redis restart: {before_max} -> {after_min}"
        for tag in {d.rsplit("-", 1)[0] for d in ack_ids}:
            mine = sorted((int(d.rsplit("-", 1)[1]), i) for d, i in ack_ids.items() if d.rsplit("-", 1)[0] == tag)
            assert all(a[1] < b[1] for a, b in zip(mine, mine[1:])), f"publisher {tag}: ids not rising with its order"

        def check(events, what):
            assert not history_lost(events), f"{what}: history-lost with nothing lost: {history_lost(events)}"
            ids = [e.nid for e in events]
            assert all(a < b for a, b in zip(ids, ids[1:])), f"{what}: an id repeats or goes backwards"
            seen = {}
            for e in events:
                assert e.data not in seen, f"{what}: {e.data} delivered twice ({seen[e.data]}, {e.id})"
                seen[e.data] = e.nid
            lost = [d for d in ack_ids if d not in seen]
            wrong = [d for d in ack_ids if d in seen and seen[d] != ack_ids[d]]
            extra = [e.data for e in events if e.data.startswith("d") and e.data not in ack_ids]
            print(f"     {what}: {len(ack_ids)} acknowledged, acked-but-lost {len(lost)}, "
                  f"other id {len(wrong)}, unacknowledged but present {len(extra)}")
            assert not lost, f"{what}: acknowledged but lost: {lost[:10]}"
            assert not wrong, f"{what}: delivered with another id than acknowledged: {wrong[:5]}"

        check(live.read_until("end", timeout=20), "live subscriber on B")
        C = lab.hub("C", redis=r)
        C.wait_redis_up()
        replay = lab.subscribe(C, "dur", last_id="earliest")
        got = replay.read_until("end", timeout=20)
        assert got[-1].nid == end.id
        check([e for e in got if not e.data.startswith("warmup-") and not e.data.startswith("sync")],
              "replay from Redis on C")
        print(f"     publishes: {len(ok)} answered 200, {len(answers) - len(ok)} 503 while Redis was dead")
        for h in (A, B, C):
            h.assert_alive()


def test_redis_restarted_empty_gives_history_lost_once():
    with Lab("empty") as lab:
        r = lab.redis("--save", "", "--appendonly", "no")
        A = lab.hub("A", redis=r)
        A.wait_redis_up()
        sa = lab.subscribe(A, "np")
        pa = A.publisher()
        sync(pa, "np", [sa])
        old = [pa.must("np", f"old{i}").id for i in range(5)]
        assert [e.nid for e in sa.read_n(5)] == old
        rc0 = A.status()["redis"]["reconnects"]
        r.restart()  # kill -9, start again: nothing was persisted
        wait_until(lambda: (lambda s: s["reconnects"] > rc0 and s["state"] == "connected")(A.status()["redis"]),
                   20, "A reconnected to the restarted Redis")
        new = [publish_until_ok(pa, "np", "new0").id]
        assert new[0] > old[-1], f"ids went backwards after the Redis restart: {old[-1]} -> {new[0]}"

        B = lab.hub("B", redis=r)
        B.wait_redis_up()
        sb = lab.subscribe(B, "np", last_id=old[2])
        first = sb.expect_event(what="history-lost")
        assert first.event == "history-lost", f"resume from {old[2]} after the events were lost: {first}"
        d = json.loads(first.data)
        assert d["last_event_id"] == str(old[2]), d
        new += [pa.must("np", f"new{i}").id for i in (1, 2)]
        got = sb.read_until("new2")
        assert not history_lost(got), f"a second history-lost: {got}"
        ids = [first.nid] + [e.nid for e in got]
        assert all(a < b for a, b in zip(ids, ids[1:])), f"ids after history-lost: {ids}"
        assert all(e.nid > old[-1] for e in got), f"live events not above the old ids: {got}"
        assert [e.data for e in got][-2:] == ["new1", "new2"], got

        # The subscriber that stayed on A through the restart: either its
        # stream goes on (at most one history-lost, then the new events), or
        # it ends and the reconnect an EventSource makes with its last id
        # gets history-lost once, then live events above the old ids.
        got = []
        while not got or got[-1].data != "new2":
            ev = sa.next_event(10)
            if ev is None:
                break
            got.append(ev)
        if sa.eof and (not got or got[-1].data != "new2"):
            print(f"     subscriber kept through the restart: its stream ended after {[e.data for e in got]}; "
                  f"reconnecting with Last-Event-ID {sa.last_id}")
            assert all(e.nid > old[-1] for e in got if e.event != "history-lost"), got
            again = lab.subscribe(A, "np", last_id=sa.last_id)
            first = again.expect_event(what="history-lost")
            assert first.event == "history-lost" and json.loads(first.data)["last_event_id"] == str(sa.last_id), first
            n3 = pa.must("np", "new3").id
            rest = again.read_until("new3")
            ids = [first.nid] + [e.nid for e in rest]
            assert not history_lost(rest) and all(a < b for a, b in zip(ids, ids[1:])), \
                f"after history-lost on A: {first} then {rest}"
            assert all(e.nid > old[-1] for e in rest) and rest[-1].nid == n3, rest
            assert [e.data for e in rest] in (["new0", "new1", "new2", "new3"], ["new1", "new2", "new3"],
                                              ["new2", "new3"], ["new3"]), rest
        else:
            print(f"     subscriber kept through the restart: {len(history_lost(got))} history-lost, "
                  f"then {[e.data for e in got if e.event != 'history-lost']}")
            assert got and got[-1].data == "new2", f"kept subscriber: {got} (eof={sa.eof})"
            assert len(history_lost(got)) <= 1, got
            real = [e for e in got if e.event != "history-lost"]
            assert [e.data for e in real] == ["new0", "new1", "new2"] and [e.nid for e in real] == new, got
        A.assert_alive()
        B.assert_alive()


def test_sigstopped_redis_publishes_503_while_health_and_heartbeats_go_on():
    with Lab("sigstop") as lab:
        r = lab.redis()
        flags = ("--redis-timeout", f"{TIMEOUT:g}", "--heartbeat-interval", "1")
        A = lab.hub("A", *flags, redis=r)
        B = lab.hub("B", *flags, redis=r)
        A.wait_redis_up()
        B.wait_redis_up()
        s = lab.subscribe(A, "st")
        pa = A.publisher(timeout=10)
        sync(pa, "st", [s])
        pre = [pa.must("st", f"pre{i}").id for i in range(5)]
        assert [e.nid for e in s.read_n(5)] == pre

        health = []   # (t, latency, status, redis)
        answers = []  # (key, data, Answer, t_sent)
        stop = threading.Event()

        def checker():
            import http.client
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    c = http.client.HTTPConnection("127.0.0.1", A.port, timeout=5)
                    c.request("GET", "/health")
                    resp = c.getresponse()
                    body = json.loads(resp.read())
                    health.append((t0, time.monotonic() - t0, resp.status, body.get("redis")))
                    c.close()
                except Exception as e:  # recorded, asserted below
                    health.append((t0, time.monotonic() - t0, None, repr(e)))
                time.sleep(0.05)

        def publisher():
            i = 0
            while not stop.is_set():
                key, data = f"stop-key-{i}", f"st{i}"
                t0 = time.monotonic()
                answers.append((key, data, pa.publish("st", data, key=key), t0))
                i += 1
                time.sleep(0.05)  # a publisher's pace, not a synchronisation

        r.stop()
        t_stop = time.monotonic()
        threads = [threading.Thread(target=checker), threading.Thread(target=publisher)]
        try:
            for t in threads:
                t.start()
            # New subscribers once the hub has noticed the outage: 200 and
            # the head at once.
            wait_until(lambda: any(h[3] == "down" for h in health), 4, "/health redis down after SIGSTOP")
            t0 = time.monotonic()
            fresh = lab.subscribe(A, "st")
            head_new = time.monotonic() - t0
            t0 = time.monotonic()
            held = lab.subscribe(B, "st", last_id=pre[1])  # needs Redis: held, with heartbeats
            head_held = time.monotonic() - t0
            s.pump(t_stop + 5.0 - time.monotonic())
            held.pump(0.0)
        finally:
            r.cont()
            t_cont = time.monotonic()
            stop.set()
            for t in threads:
                t.join(15)

        # Publishes during the outage: 503 within the timeout (+ margin).
        during = [(k, d, a, t) for k, d, a, t in answers if t + TIMEOUT + MARGIN < t_cont]
        assert during, "no publish was made during the outage"
        bad = [(d, a) for _, d, a, _ in during if a.status != 503 or a.elapsed > TIMEOUT + MARGIN]
        assert not bad, f"publishes while Redis was stopped, wanted 503 within {TIMEOUT + MARGIN} s: {bad[:5]}"
        for _, d, a, _ in during:
            assert "retry-after" in a.headers and json.loads(a.body).get("error"), f"503 without Retry-After or JSON: {a}"
        # The first one was sent to a connected Redis: it waits out the
        # timeout and cannot know whether the append happened.
        first = during[0][2]
        assert first.elapsed >= TIMEOUT * 0.9, f"the first publish after SIGSTOP did not wait for the timeout: {first}"
        msg = json.loads(first.body)["error"].lower()
        assert "unknown" in msg or "may or may not" in msg, \
            f"a timed-out publish must say its outcome is unknown: {first}"
        print(f"     publishes during the outage: {len(during)} x 503, slowest {max(a.elapsed for _, _, a, _ in during):.3f} s")

        # /health during the outage.
        out = [h for h in health if h[0] < t_cont]
        assert out and all(h[2] == 200 for h in out), f"/health during the outage: {[h for h in out if h[2] != 200][:5]}"
        lat = [h[1] for h in out]
        print(f"     /health during the outage: n={len(lat)} p50={percentile(lat, 50) * 1000:.1f} ms "
              f"p99={percentile(lat, 99) * 1000:.1f} ms max={max(lat) * 1000:.1f} ms")
        assert max(lat) < TIMEOUT / 4, f"/health took {max(lat):.3f} s during the outage (timeout {TIMEOUT} s)"
        assert any(h[3] == "down" for h in out), f"/health never said redis down: {set(h[3] for h in out)}"

        # Heartbeats on the stream that was open all along, and on the new ones.
        beats = [t for t, _ in s.comments if t_stop <= t <= t_cont]
        gaps = [b - a for a, b in zip([t_stop] + beats, beats + [t_cont])]
        print(f"     heartbeats during the outage: {len(beats)}, largest gap {max(gaps):.2f} s")
        assert len(beats) >= 3 and max(gaps) <= 2.2, f"heartbeats at {[round(b - t_stop, 2) for b in beats]}"
        assert fresh.ok() and head_new < 0.5, f"new subscriber during the outage: {fresh.status} in {head_new:.3f} s"
        assert held.ok() and head_held < 0.5, f"subscriber with a replay during the outage: {held.status} in {head_held:.3f} s"
        held.pump(1.5)
        assert held.comments, "the held replay got no heartbeat"

        # After SIGCONT: retry every refused publish with its key.
        wait_until(lambda: A.health().get("redis") == "up", 15, "/health redis up after SIGCONT")
        acked = {d: (k, a.id) for k, d, a, _ in answers if a.status == 200}
        for k, d, a, _ in answers:
            if a.status != 200:
                acked[d] = (k, publish_until_ok(pa, "st", d, key=k).id)
        pa.must("st", "end")
        got = s.read_until("end", timeout=20)
        counts = {}
        for e in got:
            counts[e.data] = counts.get(e.data, 0) + 1
        dups = {d: n for d, n in counts.items() if n > 1}
        assert not dups, f"duplicates after retrying with the same Idempotency-Key: {dups}"
        missing = [d for d in acked if d not in counts]
        assert not missing, f"acknowledged but not delivered: {missing}"
        by = {e.data: e.nid for e in got}
        wrong = [d for d, (_, i) in acked.items() if by[d] != i]
        assert not wrong, f"delivered with another id than the (retried) answer: {wrong}"
        ids = [e.nid for e in got]
        assert all(a < b for a, b in zip(ids, ids[1:])), f"ids not rising after the outage: {ids}"
        print(f"     after SIGCONT: {len(acked)} acknowledged events delivered once each")
        # The held replay: the missed pre events, then the same sequence.
        hgot = held.read_until("end", timeout=20)
        want = [("pre2", pre[2]), ("pre3", pre[3]), ("pre4", pre[4])] + [(e.data, e.nid) for e in got]
        assert [(e.data, e.nid) for e in hgot] == want, f"held replay on B: {triples_short(hgot)}"
        for h in (A, B):
            h.assert_alive()


def triples_short(events):
    return [(e.nid, e.data) for e in events][:8]


WINDOW = 6.0     # how long reconnects to a misbehaving Redis are watched
MAX_RATE = 4.0   # connections/s allowed in that window: backoff (50 ms doubling to 5 s) on both
                 # of a process's connections makes about 2; no backoff makes ~16


def observe_reconnects(f, hub, stream, window):
    """Connections the fake sees per second for `window` seconds (and when
    they came), while the open stream is read and /health checked."""
    n0, t0 = f.connections, time.monotonic()
    while time.monotonic() - t0 < window:
        assert hub.get("/health")[0] == 200
        stream.pump(0.25)
        hub.assert_alive()
    per_s = (f.connections - n0) / window
    ts = [round(t - t0, 2) for t in f.accepted_at if t >= t0]
    return per_s, ts


def test_reconnects_back_off_against_a_redis_that_accepts_and_fails():
    """Reconnect with backoff: a Redis that accepts connections and then
    fails every request (garbage, cut replies, LOADING after a restart) must
    see the reconnects slow down, not a steady stream of them from every
    process at once."""
    with Lab("backoff") as lab:
        r = lab.redis()
        rates = {}
        for mode in ("garbage", "cut", "loading"):
            f = lab.fake(r)
            A = lab.hub(f"backoff-{mode}", "--redis-timeout", f"{TIMEOUT:g}", "--heartbeat-interval", "1", redis=f.url)
            A.wait_redis_up()
            s = lab.subscribe(A, "bo")
            f.set_mode(mode)
            f.drop_all()
            wait_until(lambda: f.connections >= 4, 10, f"{mode}: reconnects")
            per_s, ts = observe_reconnects(f, A, s, WINDOW)
            rates[mode] = (per_s, ts)
            A.kill()
            f.close()
        print("     " + ", ".join(f"{m}: {v[0]:.1f} connections/s" for m, v in rates.items())
              + f" over {WINDOW:g} s (allowed {MAX_RATE:g})")
        bad = {m: v for m, v in rates.items() if v[0] > MAX_RATE}
        assert not bad, "no backoff: " + "; ".join(
            f"{m} {v[0]:.1f}/s, accepted at {v[1][:25]}" for m, v in bad.items())


def test_fake_redis_garbage_cut_and_slow_replies():
    """A Redis that answers garbage, closes mid-reply or answers slower than
    --redis-timeout: logged, reconnected (the fake counts connections), no
    panic, /health and streams served; once it behaves, publishing works."""
    with Lab("fake") as lab:
        r = lab.redis()
        for mode in ("garbage", "cut", "slow"):
            f = lab.fake(r, delay=2.5 * TIMEOUT)
            A = lab.hub(f"fake-{mode}", "--redis-timeout", f"{TIMEOUT:g}", "--heartbeat-interval", "1", redis=f.url)
            A.wait_redis_up()
            s = lab.subscribe(A, "fk")
            pa = A.publisher()
            sync(pa, "fk", [s])
            log_at = len(A.log_text())
            n0 = f.connections
            f.set_mode(mode)
            a = pa.publish("fk", "during")
            assert a.status == 503, f"{mode}: publish while Redis misbehaves: {a}"
            assert a.elapsed <= (TIMEOUT + MARGIN if mode == "slow" else 0.5 + MARGIN), f"{mode}: 503 took {a.elapsed:.2f} s"
            t0 = time.monotonic()
            lat = []
            while f.connections < n0 + 2:
                assert time.monotonic() - t0 < 20, f"{mode}: the hub reconnected {f.connections - n0} times in 20 s"
                t1 = time.monotonic()
                assert A.get("/health")[0] == 200
                lat.append(time.monotonic() - t1)
                s.pump(0.2)
                A.assert_alive()
            print(f"     {mode}: {f.connections - n0} reconnects in {time.monotonic() - t0:.1f} s, "
                  f"/health max {max(lat) * 1000:.1f} ms")
            assert max(lat) < TIMEOUT / 4, f"{mode}: /health took {max(lat):.3f} s"
            s.pump(1.5)
            assert s.comments and s.comments[-1][0] > t0, f"{mode}: the open stream got no heartbeat"
            n = lab.subscribe(A, "fk-new")
            assert n.ok(), f"{mode}: a new stream while Redis misbehaves: {n.status}"
            text = A.log_text()[log_at:]
            assert re.search(r"(?i)(WARN|ERROR).*redis|redis.*(WARN|ERROR)", text), \
                f"{mode}: nothing about Redis logged at warn/error: {text[-1500:]}"
            assert "panicked" not in A.log_text(), f"{mode}: a panic in the log"
            f.set_mode("pass")
            # With a key: a retry after a timed-out attempt must not publish twice.
            publish_until_ok(pa, "fk", "after", key=f"after-{mode}")
            pa.must("fk", "end")
            got = [e.data for e in s.read_until("end", timeout=15)]
            assert set(got) <= {"during", "after", "end"} and got.count("during") <= 1 and got.count("after") == 1, \
                f"{mode}: after the fault: {got}"
            A.assert_alive()
            assert "panicked" not in A.log_text()
            A.kill()
            f.close()


def test_script_flush_is_survived_in_order():
    """SCRIPT FLUSH behind the hub's back: the next publishes meet NOSCRIPT;
    the hub loads its scripts again and re-sends what was in flight in its
    original order. Every publish answers 200, each publisher's events
    arrive in its order, once."""
    with Lab("noscript") as lab:
        r = lab.redis()
        A = lab.hub("A", redis=r)
        A.wait_redis_up()
        s = lab.subscribe(A, "ns")
        pubs = [A.publisher() for _ in range(4)]
        sync(pubs[0], "ns", [s])
        results = {}

        def burst(i):
            results[i] = [pubs[i].publish("ns", f"n{i}-{k}") for k in range(25)]

        for round_ in range(3):
            assert r.cmd("SCRIPT", "FLUSH") == "OK"
            ts = [threading.Thread(target=burst, args=(i,)) for i in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(20)
            bad = [(i, a) for i, rs in results.items() for a in rs if a.status != 200]
            assert not bad, f"round {round_}: publishes after SCRIPT FLUSH: {bad[:3]}"
            got = s.read_n(100, timeout=15)
            ids = [e.nid for e in got]
            assert all(a < b for a, b in zip(ids, ids[1:])), f"round {round_}: ids not rising"
            stats = r.cmd("INFO", "errorstats").decode()
            m = re.search(r"errorstat_NOSCRIPT:count=(\d+)", stats)
            assert m and int(m.group(1)) > round_, f"round {round_}: the hub never met NOSCRIPT: {stats!r}"
            for i in range(4):
                mine = [(e.nid, e.data) for e in got if e.data.startswith(f"n{i}-")]
                want = [(a.id, f"n{i}-{k}") for k, a in enumerate(results[i])]
                assert mine == want, f"round {round_}, publisher {i}: {mine[:4]} vs {want[:4]}"
        print(f"     NOSCRIPT answers met: {m.group(1)} over 3 flushes, 300 publishes all 200, in order")
        A.assert_alive()


def test_redis_loading_after_a_restart_is_waited_out():
    """A Redis that restarts and answers -LOADING for a while (the fake
    drops every connection, then answers LOADING to every command): the hub
    waits it out (publishes 503, /health "down", streams with heartbeats),
    then works again without a restart of its own."""
    with Lab("loading") as lab:
        r = lab.redis()
        f = lab.fake(r)
        A = lab.hub("A", "--redis-timeout", f"{TIMEOUT:g}", "--heartbeat-interval", "1", redis=f.url)
        A.wait_redis_up()
        s = lab.subscribe(A, "ld")
        pa = A.publisher()
        sync(pa, "ld", [s])
        f.set_mode("loading")
        f.drop_all()
        wait_until(lambda: f.loading_answers >= 1, 10, "the hub's first command after the restart")
        wait_until(lambda: A.health()["redis"] == "down", 5, "/health redis down while loading")
        a = pa.publish("ld", "while-loading")
        assert a.status == 503, f"publish while Redis is loading: {a}"
        t0 = time.monotonic()
        s.pump(2.0)
        assert any(t > t0 for t, _ in s.comments), "no heartbeat while Redis was loading"
        print(f"     LOADING answers sent: {f.loading_answers}, connections {f.connections}")
        A.assert_alive()
        f.set_mode("pass")
        A.wait_redis_up(15)
        p = publish_until_ok(pa, "ld", "loaded", key="loaded")
        got = s.read_until("loaded")
        assert [e.data for e in got] == ["loaded"] and got[0].nid == p.id, f"after loading: {triples_short(got)}"
        assert "panicked" not in A.log_text()


def test_a_reused_connection_slot_never_gets_another_clients_answer():
    """Replies slowed down (0.3 s, under --redis-timeout 2): a publisher
    hangs up while its publish waits for Redis, the next connection most
    likely takes its slot and publishes to another channel. Every answer
    names its own channel and an id that its own subscriber receives with
    its own data."""
    with Lab("slots") as lab:
        r = lab.redis()
        f = lab.fake(r, delay=0.3)
        A = lab.hub("A", "--redis-timeout", "2", redis=f.url)
        A.wait_redis_up()
        sx = lab.subscribe(A, "gone")
        sy = lab.subscribe(A, "mine")
        p = A.publisher()
        sync(p, "gone", [sx])
        sync(p, "mine", [sy])
        f.set_mode("slow")
        answers = []
        import socket as _s
        for i in range(8):
            x = _s.create_connection(("127.0.0.1", A.port))
            body = json.dumps({"channel": "gone", "data": f"gone-{i}"}).encode()
            x.sendall(b"POST /events/broadcast HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            A.get("/health")  # most likely read by now (one loop, a later turn)
            x.close()         # gone while its append waits for Redis
            y = A.publisher()
            a = y.publish("mine", f"mine-{i}")
            y.close()
            assert a.status == 200 and a.json["channel"] == "mine", f"round {i}: {a}"
            answers.append(a.id)
        f.set_mode("pass")
        got = sy.read_n(8, timeout=10)
        assert [(e.nid, e.data) for e in got] == [(i, f"mine-{k}") for k, i in enumerate(answers)], \
            f"answers {answers} vs the stream {triples_short(got)}"
        p.must("gone", "gone-end")
        gone = sx.read_until("gone-end")[:-1]
        datas = [e.data for e in gone]
        # A hub may drop a request whose client left; the scenario needs
        # some of them to be in flight when the next client came.
        assert datas and len(set(datas)) == len(datas) and set(datas) <= {f"gone-{i}" for i in range(8)}, datas
        assert not set(answers) & {e.nid for e in gone}
        print(f"     {len(datas)} of 8 abandoned publishes were appended; 8 answers to the next client, all its own")
        A.assert_alive()


def test_health_says_redis_down_with_200_and_up_after():
    with Lab("health") as lab:
        r = lab.redis()
        A = lab.hub("A", "--redis-timeout", f"{TIMEOUT:g}", redis=r)
        A.wait_redis_up()
        st = A.status()["redis"]
        for k in ("state", "address", "reconnects", "last_error", "followed_channels",
                  "replayed_from_redis", "replayed_from_ring"):
            assert k in st, f"status redis object lacks {k}: {st}"
        assert st["state"] == "connected" and r.sock_path in st["address"], st
        metrics = A.get("/metrics")[1].decode()
        for m in ("ssecast_redis_up", "ssecast_redis_reconnects_total", "ssecast_redis_publish_seconds",
                  "ssecast_redis_follow_lag_seconds", "ssecast_replayed_events_total"):
            assert m in metrics, f"/metrics lacks {m}"
        assert re.search(r"^ssecast_redis_up 1$", metrics, re.M), "ssecast_redis_up is not 1"

        r.kill9()
        wait_until(lambda: A.health()["redis"] == "down", 5, "/health redis down (200)")
        st = A.status()["redis"]
        assert st["state"] != "connected" and st["last_error"], f"status while Redis is dead: {st}"
        assert re.search(r"^ssecast_redis_up 0$", A.get("/metrics")[1].decode(), re.M), "ssecast_redis_up is not 0"
        a = A.publisher().publish("h", "x")
        assert a.status == 503 and "retry-after" in a.headers and json.loads(a.body).get("error"), a
        r.start()
        t0 = time.monotonic()
        A.wait_redis_up(20)
        print(f"     /health redis up {time.monotonic() - t0:.2f} s after Redis came back")
        assert A.status()["redis"]["reconnects"] >= 1
        A.publisher().must("h", "y")

        P = lab.hub("plain")
        h = P.health()
        assert "redis" not in h, f"/health without --redis-url: {h}"


def test_startup_config_and_redis_away_at_start():
    with Lab("config") as lab:
        for url in ("ftp://127.0.0.1:6379", "redis://127.0.0.1:notaport", "unix://"):
            p = subprocess.run([BIN, "--redis-url", url, "--check-config"], capture_output=True, text=True, timeout=10)
            lines = p.stderr.strip().splitlines()
            assert p.returncode == 2 and len(lines) == 1, f"--redis-url {url}: exit {p.returncode}, stderr {p.stderr!r}"
        env_p = subprocess.run([BIN, "--check-config"], capture_output=True, text=True, timeout=10,
                               env=dict(os.environ, SSE_REDIS_URL="ftp://x"))
        assert env_p.returncode == 2, f"SSE_REDIS_URL=ftp://x: exit {env_p.returncode}"

        # maxmemory-policy: a loud warning unless noeviction.
        ev = lab.redis("--maxmemory-policy", "allkeys-lru")
        W = lab.hub("evicting", redis=ev)
        W.wait_redis_up()
        wait_until(lambda: re.search(r"(?i)WARN.*maxmemory-policy", W.log_text()), 5,
                   "a warning about maxmemory-policy allkeys-lru")
        ne = lab.redis()
        N = lab.hub("noeviction", redis=ne)
        N.wait_redis_up()
        N.publisher().must("c", "w")
        assert not re.search(r"(?i)maxmemory-policy.*(evict|lru|warn)|WARN.*maxmemory", N.log_text()), \
            f"a maxmemory warning with noeviction: {N.log_tail(5)}"

        # Away at startup: the hub starts degraded and connects when it can.
        r = lab.redis()
        r.kill9()
        A = lab.hub("away", "--redis-timeout", f"{TIMEOUT:g}", redis=r)
        assert A.health()["redis"] == "down"
        a = A.publisher().publish("c", "x")
        assert a.status == 503, f"publish with Redis away at startup: {a}"
        r.start()
        A.wait_redis_up(20)
        A.publisher().must("c", "y")

        # A host name is looked up (off the loop); one that does not resolve
        # is not fatal.
        rt = lab.redis(tcp=True)
        H = lab.hub("by-name", redis=f"redis://localhost:{rt.port}")
        H.wait_redis_up()
        H.publisher().must("c", "by-name")
        Z = lab.hub("no-such-host", "--redis-timeout", f"{TIMEOUT:g}", redis="redis://no-such-host.invalid:6379")
        t0 = time.monotonic()
        for _ in range(5):
            assert Z.health()["redis"] == "down"
        assert time.monotonic() - t0 < 0.5, "/health slow while the name does not resolve"
        assert Z.publisher().publish("c", "x").status == 503
        Z.assert_alive()

        # A wrong password: logged, retried, /health down, never a crash.
        rw = lab.redis("--requirepass", "right-one", tcp=True)
        X = lab.hub("pw-wrong", "--redis-timeout", f"{TIMEOUT:g}", redis=f"redis://:wrong-one@127.0.0.1:{rw.port}")
        wait_until(lambda: re.search(r"(?i)(WARN|ERROR).*(auth|WRONGPASS|password)", X.log_text()), 5,
                   "a warning about the refused password")
        assert X.health()["redis"] == "down"
        assert X.publisher().publish("c", "x").status == 503
        X.assert_alive()
        assert "wrong-one" not in "".join(l for l in X.log_text().splitlines(True) if not l.startswith("### "))

        # A password (URL and file) is used and never shown.
        pw = "s3cret-Pw-771"
        rp = lab.redis("--requirepass", pw, tcp=True)
        U = lab.hub("pw-url", redis=f"redis://:{pw}@127.0.0.1:{rp.port}")
        U.wait_redis_up()
        U.publisher().must("c", "z")
        pwfile = os.path.join(lab.dir, "pw")
        with open(pwfile, "w") as fh:
            fh.write(pw + "\n")
        F = lab.hub("pw-file", "--redis-password-file", pwfile, redis=f"redis://127.0.0.1:{rp.port}")
        F.wait_redis_up()
        for h in (U, F):
            logged = "".join(l for l in h.log_text().splitlines(True) if not l.startswith("### "))
            assert pw not in logged, f"hub {h.name} logged the password"
            assert pw not in json.dumps(h.status()), f"hub {h.name}'s status shows the password"


TESTS = [
    test_startup_config_and_redis_away_at_start,
    test_script_flush_is_survived_in_order,
    test_health_says_redis_down_with_200_and_up_after,
    test_kill9_with_appendfsync_always_loses_no_acknowledged_event,
    test_redis_restarted_empty_gives_history_lost_once,
    test_sigstopped_redis_publishes_503_while_health_and_heartbeats_go_on,
    test_fake_redis_garbage_cut_and_slow_replies,
    test_redis_loading_after_a_restart_is_waited_out,
    test_reconnects_back_off_against_a_redis_that_accepts_and_fails,
    test_a_reused_connection_slot_never_gets_another_clients_answer,
]

if __name__ == "__main__":
    sys.exit(run_tests(TESTS, sys.argv))
