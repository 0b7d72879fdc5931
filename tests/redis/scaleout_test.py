#!/usr/bin/env python3
"""Redis scale-out, the healthy paths (issue 11, "Tests"): several ssecast
processes on one private Redis deliver the same events with the same ids in
the same order; a resume on another process, or on one started later, gets
exactly what was missed (from Redis); Idempotency-Key with and without
Redis; two processes sharing one port with --reuse-port.

Usage: scaleout_test.py [test ...]   (default: all)
"""
import json
import sys
import urllib.parse
import threading
import time

from lab import Lab, Publisher, Sse, free_port, run_tests, sync, wait_until


def triples(events):
    return [(e.nid, e.event, e.data) for e in events]


def assert_rising(ids, what):
    assert all(a < b for a, b in zip(ids, ids[1:])), f"{what}: ids not strictly rising: {ids}"


def test_publish_on_one_process_reaches_all_in_the_same_order():
    """Publish on A; subscribers on A, B and C (B over redis://, TCP) get
    identical events, ids, order; a batch published on A arrives in order;
    two publishers on A and B at once: every process sees one and the same
    sequence, each acknowledged event once."""
    with Lab("fanout") as lab:
        r = lab.redis(tcp=True)
        A, B, C = (lab.hub(n, redis=r) for n in "ABC")
        for h in (A, B, C):
            h.wait_redis_up()
        subs = [lab.subscribe(h, "fan") for h in (A, B, C)]
        assert all(s.ok() for s in subs), [s.status for s in subs]
        pa = A.publisher()
        sync(pa, "fan", subs)

        sent = []
        for i in range(40):
            data = f"line {i}\nsecond line of {i}" if i % 7 == 3 else f"e{i}"
            event = "tick" if i % 5 == 0 else None
            a = pa.must("fan", data, event)
            assert a.json["channel"] == "fan", a
            # `subscribers` is this process's own count (one subscriber on A).
            assert a.json["subscribers"] == 1, f"subscribers in A's answer: {a}"
            sent.append((a.id, event or "message", data))
        assert_rising([t[0] for t in sent], "publish answers")
        for s, h in zip(subs, (A, B, C)):
            got = triples(s.read_n(len(sent)))
            assert got == sent, f"hub {h.name}: got {got[:5]}... wanted {sent[:5]}..."

        items = [{"channel": "fan", "data": f"b{i}", **({"event": "batch"} if i % 2 else {})}
                 for i in range(10)]
        a = pa.batch(items)
        assert a.status == 200, f"batch: {a}"
        ids = a.ids
        assert len(ids) == 10 and ids[0] > sent[-1][0], f"batch ids {ids} after {sent[-1][0]}"
        assert_rising(ids, "batch answer")
        want = [(i, it.get("event", "message"), it["data"]) for i, it in zip(ids, items)]
        for s, h in zip(subs, (A, B, C)):
            got = triples(s.read_n(10))
            assert got == want, f"hub {h.name}: batch arrived as {got}, wanted {want}"

        # Two publishers on two processes at once (the reorder/duplicate trap).
        pb = B.publisher()
        acked = {}
        errors = []

        def burst(pub, tag):
            for i in range(30):
                x = pub.publish("fan", f"{tag}{i}")
                if x.status != 200:
                    errors.append((tag, i, x))
                else:
                    acked[f"{tag}{i}"] = x.id

        ts = [threading.Thread(target=burst, args=(p, t)) for p, t in ((pa, "x"), (pb, "y"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert not errors, f"concurrent publishes refused: {errors[:3]}"
        seqs = []
        for s, h in zip(subs, (A, B, C)):
            got = s.read_n(60, timeout=15)
            seq = [(e.nid, e.data) for e in got]
            assert_rising([i for i, _ in seq], f"hub {h.name}, concurrent publishers")
            assert {d: i for i, d in seq} == acked, \
                f"hub {h.name}: delivered {len(seq)} events, not exactly the 60 acknowledged ones with their ids"
            seqs.append(seq)
        assert seqs[0] == seqs[1] == seqs[2], "the three processes delivered different sequences"
        # Per publisher, the order of its own publishes is kept.
        for tag in "xy":
            mine = [d for _, d in seqs[0] if d.startswith(tag)]
            assert mine == [f"{tag}{i}" for i in range(30)], f"publisher {tag} reordered: {mine}"
        for h in (A, B, C):
            h.assert_alive()


def test_resume_on_another_process_gets_exactly_the_missed_events():
    """Last-Event-ID on a different process: exactly the missed events, then
    live ones; the same on a process started after the events were published
    (served from Redis, counted as such); `earliest`; replays longer than one
    page; an id above the channel's head gets history-lost once."""
    with Lab("resume") as lab:
        r = lab.redis()
        A = lab.hub("A", redis=r)
        B = lab.hub("B", redis=r)
        A.wait_redis_up()
        B.wait_redis_up()
        sa = lab.subscribe(A, "re")
        pa = A.publisher()
        warm_marker = sync(pa, "re", [sa])

        ids = [pa.must("re", f"r{i}").id for i in range(10)]
        got = sa.read_n(10)
        assert [e.nid for e in got] == ids and [e.data for e in got] == [f"r{i}" for i in range(10)], got
        sa.close()
        ids += [pa.must("re", f"r{i}").id for i in range(10, 15)]  # missed while away

        def expect(sub, first, last, what):
            got = sub.read_n(last - first + 1)
            want = [(ids[i], f"r{i}") for i in range(first, last + 1)]
            assert [(e.nid, e.data) for e in got] == want, f"{what}: got {triples(got)}, wanted {want}"

        sb = lab.subscribe(B, "re", last_id=ids[4])
        assert sb.ok(), sb.status
        expect(sb, 5, 14, "resume on B (header)")
        ids.append(pa.must("re", "r15").id)
        expect(sb, 15, 15, "live on B after its replay")

        sq = lab.subscribe(B, "re", query=f"&lastEventId={ids[7]}")
        expect(sq, 8, 15, "resume on B (?lastEventId=)")

        # A process started after everything was published.
        D = lab.hub("D", redis=r)
        D.wait_redis_up()
        before = D.status()["redis"]
        sd = lab.subscribe(D, "re", last_id=ids[2])
        assert sd.ok(), sd.status
        expect(sd, 3, 15, "resume on D, started after the events")
        pb = B.publisher()
        ids.append(pb.must("re", "r16").id)
        expect(sd, 16, 16, "live on D after its replay (published on B)")
        expect(sb, 16, 16, "live on B")
        after = D.status()["redis"]
        assert after["replayed_from_redis"] - before["replayed_from_redis"] >= 13, \
            f"D's replayed_from_redis {before} -> {after} (13 events came from Redis)"

        # earliest on a fresh process: every event still held, then live.
        E = lab.hub("E", redis=r)
        E.wait_redis_up()
        se = lab.subscribe(E, "re", last_id="earliest")
        got = se.read_until("r16")
        data = [e.data for e in got]
        assert warm_marker in data, f"earliest on E: no sync marker in {data[:5]}"
        k = data.index(warm_marker)
        assert all(d.startswith("warmup-") for d in data[:k]), data[:k]
        assert [(e.nid, e.data) for e in got[k + 1:]] == [(ids[i], f"r{i}") for i in range(17)], \
            f"earliest on E: {triples(got[k + 1:])}"
        assert_rising([e.nid for e in got], "earliest on E")

        # An id above the head was never issued: history-lost, once, then live.
        bogus = ids[-1] + 10**9
        sl = lab.subscribe(E, "re", last_id=bogus)
        lost = sl.expect_event(what="history-lost")
        assert lost.event == "history-lost", f"resume from a never issued id {bogus}: {lost}"
        d = json.loads(lost.data)
        assert d["last_event_id"] == str(bogus), d
        assert lost.nid == ids[-1], f"history-lost id {lost.id} is not the channel's newest {ids[-1]}"
        ids.append(pa.must("re", "r17").id)
        nxt = sl.expect_event()
        assert (nxt.nid, nxt.data) == (ids[17], "r17"), f"after history-lost: {nxt}"

        # A replay of 299 events from Redis (longer than one page).
        big = []
        for b in range(3):
            a = pa.batch([{"channel": "pg", "data": f"p{b * 100 + i}"} for i in range(100)])
            assert a.status == 200, f"batch {b}: {a}"
            big += a.ids
        F = lab.hub("F", redis=r)
        F.wait_redis_up()
        sf = lab.subscribe(F, "pg", last_id=big[0])
        got = sf.read_n(299, timeout=20)
        assert [(e.nid, e.data) for e in got] == [(big[i], f"p{i}") for i in range(1, 300)], \
            f"paged replay on F: {len(got)} events, first {triples(got[:2])}"
        tail = pa.must("pg", "p300")
        nxt = sf.expect_event()
        assert (nxt.nid, nxt.data) == (tail.id, "p300"), f"live after the paged replay: {nxt}"
        for h in (A, B, D, E, F):
            h.assert_alive()


def test_trimmed_or_expired_history_is_history_lost_and_only_then():
    """--history-events N trims the stream in Redis (MAXLEN ~: whole nodes):
    a resume from an id that is gone gets history-lost (first_available_id
    is the oldest entry Redis holds), one from an id still held gets exactly
    the rest. --history-ttl: an event older than it is gone on a process
    that never saw it, too."""
    with Lab("trim") as lab:
        r = lab.redis()
        A = lab.hub("A", "--history-events", "10", redis=r)
        A.wait_redis_up()
        pa = A.publisher()
        ids = []
        for b in range(4):
            a = pa.batch([{"channel": "trim", "data": f"t{b * 100 + i}"} for i in range(100)])
            assert a.status == 200, a
            ids += a.ids
        key = "ssecast:{trim}:s"
        xlen = r.cmd("XLEN", key)
        assert 10 <= xlen < 400, f"XLEN {key} = {xlen} after 400 appends with --history-events 10"
        oldest = int(r.cmd("XRANGE", key, "-", "+", "COUNT", "1")[0][0].split(b"-")[0])
        k = ids.index(oldest)
        assert k > 0, "nothing was trimmed"
        B = lab.hub("B", redis=r)
        B.wait_redis_up()
        gone = lab.subscribe(B, "trim", last_id=ids[0])
        lost = gone.expect_event(what="history-lost")
        assert lost.event == "history-lost", f"resume from a trimmed id: {lost}"
        d = json.loads(lost.data)
        assert d["last_event_id"] == str(ids[0]) and d.get("first_available_id") == oldest, \
            f"history-lost {d}, oldest entry in Redis {oldest}"
        held = lab.subscribe(B, "trim", last_id=oldest)
        got = held.read_n(399 - k)
        assert [e.nid for e in got] == ids[k + 1:], f"resume from the oldest held id: {len(got)} events"
        assert not history_lost(got)
        # The id just before the oldest held one was trimmed, but nothing
        # after it is missing: no history-lost, every event from the oldest.
        edge = lab.subscribe(B, "trim", last_id=ids[k - 1])
        got = edge.read_n(400 - k)
        assert [e.nid for e in got] == ids[k:], \
            f"resume from the trimmed id just before the oldest held: {triples(got[:2])}"

        C = lab.hub("C", "--history-ttl", "1", redis=r)
        C.wait_redis_up()
        pc = C.publisher()
        old = [pc.must("ttl", f"o{i}").id for i in range(3)]
        time.sleep(1.5)  # the age is what is tested
        new = pc.must("ttl", "n0").id
        D = lab.hub("D", "--history-ttl", "1", redis=r)
        D.wait_redis_up()
        s = lab.subscribe(D, "ttl", last_id=old[0])
        first = s.expect_event(what="history-lost")
        assert first.event == "history-lost", f"resume from an id older than --history-ttl: {first}"
        # After the last expired id nothing is missing: n0 follows it.
        caught_up = lab.subscribe(D, "ttl", last_id=old[-1])
        ev = caught_up.expect_event()
        assert (ev.nid, ev.data) == (new, "n0"), f"resume from the id just before n0 (expired, nothing missed): {ev}"
        for h in (A, B, C, D):
            h.assert_alive()


def history_lost(events):
    return [e for e in events if e.event == "history-lost"]


def test_revocation_reaches_every_process():
    """POST /events/close on A ends the channel's streams on B too (with
    `event: closed`), and bars new ones there."""
    with Lab("close") as lab:
        r = lab.redis()
        A = lab.hub("A", redis=r)
        B = lab.hub("B", redis=r)
        A.wait_redis_up()
        B.wait_redis_up()
        sb = lab.subscribe(B, "priv")
        other = lab.subscribe(B, "open")
        pa = A.publisher()
        sync(pa, "priv", [sb])
        a = pa.post({"channel": "priv", "for": 60}, path="/events/close")
        assert a.status == 200, f"close on A: {a}"
        ev = sb.expect_event(timeout=5, what="event: closed")
        assert ev.event == "closed", f"the stream on B after close on A: {ev}"
        sb.pump(5)
        assert sb.eof, "the stream on B did not end after close on A"
        again = lab.subscribe(B, "priv")
        assert again.status == 403, f"a new stream on B after the revocation: {again.status}"
        sync(pa, "open", [other])  # other channels go on
        B.assert_alive()


def test_keys_are_namespaced_encoded_and_in_the_chosen_db():
    """--redis-prefix namespaces every key; channel names are percent-encoded
    inside the hash tag, so names that look alike never share a stream; the
    URL's /db selects the database."""
    with Lab("keys") as lab:
        r = lab.redis(tcp=True)
        A = lab.hub("A", "--redis-prefix", "t1", redis=f"redis://127.0.0.1:{r.port}/3")
        A.wait_redis_up()
        names = ["a:b", "a%3Ab", "a}b{c", "x y"]
        subs = {n: lab.subscribe(A, urllib.parse.quote(n, safe="")) for n in names}
        p = A.publisher()
        for n in names:
            sync(p, n, [subs[n]])
        for n in names:
            p.must(n, f"only-{n}")
        for n in names:
            ev = subs[n].expect_event()
            assert ev.data == f"only-{n}", f"channel {n!r} got {ev}"
            assert subs[n].next_event(0.2) is None, f"channel {n!r} got another channel's event"
        c = r.client()
        try:
            c.cmd("SELECT", "3")
            keys = sorted(k.decode() for k in c.cmd("KEYS", "*"))
            c.cmd("SELECT", "0")
            in_db0 = c.cmd("KEYS", "*")
        finally:
            c.close()
        for want in ("t1:{a%3Ab}:s", "t1:{a%253Ab}:s", "t1:{a%7Db%7Bc}:s", "t1:{x%20y}:s"):
            assert want in keys, f"no key {want} in db 3: {keys}"
        assert all(k.startswith("t1:") for k in keys), f"keys outside the prefix: {keys}"
        assert not in_db0, f"keys in db 0 with /3 in the URL: {in_db0}"
        A.assert_alive()


def check_idempotency(lab, hub, other=None):
    """Same key twice: the same answer, one event; another key publishes;
    the same key with another body is 422; batches too. With `other`, the
    key is also honoured by another process (the answer is in Redis)."""
    ch = "idem"
    s = lab.subscribe(hub, ch)
    p = hub.publisher()
    sync(p, ch, [s])
    a1 = p.publish(ch, "once", key="key-1")
    assert a1.status == 200, a1
    a2 = p.publish(ch, "once", key="key-1")
    assert a2.status == 200, f"repeat with the same key: {a2}"
    assert a2.id == a1.id and a2.json["channel"] == ch, f"same key, answers {a1} then {a2}"
    if other is not None:
        a2b = other.publisher().publish(ch, "once", key="key-1")
        assert a2b.status == 200 and a2b.id == a1.id, f"same key on process {other.name}: {a2b} (first {a1})"
    a3 = p.publish(ch, "other", key="key-2")
    assert a3.status == 200 and a3.id > a1.id, f"a different key: {a3} after {a1}"
    a4 = p.publish(ch, "changed", key="key-1")
    assert a4.status == 422, f"same key, other body: {a4}"
    assert a4.headers.get("content-type", "").startswith("application/json") and json.loads(a4.body).get("error"), a4
    items = [{"channel": ch, "data": "b0"}, {"channel": ch, "data": "b1", "event": "e"}]
    b1 = p.batch(items, key="key-3")
    b2 = p.batch(items, key="key-3")
    assert b1.status == 200 and b2.status == 200 and b1.ids == b2.ids, f"batch twice: {b1} {b2}"
    b3 = p.batch(items[:1], key="key-3")
    assert b3.status == 422, f"same key, other batch: {b3}"
    # The same key from eight connections at once (likely one loop turn,
    # one script call): one event, one id for all.
    pubs = [hub.publisher() for _ in range(8)]
    for q in pubs:
        assert q.get("/health").status == 200  # connected before the race
    go = threading.Barrier(len(pubs))
    same = [None] * len(pubs)

    def racer(i):
        go.wait()
        same[i] = pubs[i].publish(ch, "raced", key="key-race")

    ts = [threading.Thread(target=racer, args=(i,)) for i in range(len(pubs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert all(a.status == 200 for a in same) and len({a.id for a in same}) == 1, \
        f"the same key raced from 8 connections: {same}"
    p.must(ch, "end")
    got = s.read_until("end")
    want = [(a1.id, "message", "once"), (a3.id, "message", "other"),
            (b1.ids[0], "message", "b0"), (b1.ids[1], "e", "b1"), (same[0].id, "message", "raced")]
    assert triples(got[:-1]) == want, f"the stream: {triples(got)}, wanted {want} then end"
    hub.assert_alive()


def test_idempotency_key_with_redis():
    with Lab("idem-redis") as lab:
        r = lab.redis()
        A = lab.hub("A", redis=r)
        B = lab.hub("B", redis=r)
        A.wait_redis_up()
        B.wait_redis_up()
        check_idempotency(lab, A, other=B)
        keys = r.cmd("KEYS", "ssecast:*:i:*")
        assert keys, "no idempotency answers under ssecast:{...}:i:<hash> in Redis"
        assert all(b"key-" not in k for k in keys), f"client keys stored in clear: {keys}"


def test_idempotency_key_without_redis():
    with Lab("idem-local") as lab:
        A = lab.hub("A")
        check_idempotency(lab, A)


def owner(admins, pub):
    """Which process (sharing one port) holds the keep-alive connection of
    `pub`: the one whose connections.open rises by one when it opens.
    `admins` maps a name to a keep-alive Publisher on that process's
    --admin-bind, so the reads themselves do not change the counts."""
    def opens():
        out = {}
        for name, adm in admins.items():
            a = adm.get("/events/status")
            assert a.status == 200, f"{name} admin status: {a}"
            out[name] = a.json["connections"]["open"]
        return out
    before = opens()
    a = pub.get("/health")
    assert a.status == 200, a
    after = opens()
    rose = [n for n in admins if after[n] - before[n] == 1]
    same = [n for n in admins if after[n] == before[n]]
    return rose[0] if len(rose) == 1 and len(same) == len(admins) - 1 else None


def test_two_processes_share_one_port_with_reuse_port():
    """--reuse-port: two processes on one port both get connections (each
    one's own count read on its --admin-bind); a publish to either reaches
    the subscribers of both."""
    with Lab("reuse") as lab:
        r = lab.redis()
        for attempt in range(5):
            port = free_port()
            try:  # the port may be taken between free_port() and the bind
                A = lab.hub("A", "--reuse-port", redis=r, bind=f"127.0.0.1:{port}", admin=True)
                break
            except AssertionError as e:
                if "in use" not in str(e) or attempt == 4:
                    raise
        B = lab.hub("B", "--reuse-port", redis=r, bind=f"127.0.0.1:{port}", admin=True)
        assert A.port == B.port == port, (A.port, B.port, port)
        A.wait_redis_up()
        B.wait_redis_up()
        subs = [Sse(port, "rp") for _ in range(40)]
        lab.subs.extend(subs)
        assert all(s.ok() for s in subs)
        counts = wait_until(lambda: (lambda c: c if sum(c) == 40 else None)(
            [h.status(admin=True)["connections"]["active"] for h in (A, B)]),
            10, "40 streams counted over A and B")
        print(f"     streams per process: A {counts[0]}, B {counts[1]}")
        assert min(counts) > 0, f"one process got no connection: {counts}"
        shared = Publisher(port)
        sync(shared, "rp", subs)

        admins = {h.name: Publisher(h.admin_port) for h in (A, B)}
        pubs = {}
        for _ in range(60):
            p = Publisher(port)
            o = owner(admins, p)
            if o is not None and o not in pubs:
                pubs[o] = p
            else:
                p.close()
            if len(pubs) == 2:
                break
        assert len(pubs) == 2, f"could not get a publisher connection on each process: {list(pubs)}"
        for name in ("A", "B"):
            a = pubs[name].must("rp", f"from-{name}")
            want = counts[0] if name == "A" else counts[1]
            assert a.json["subscribers"] == want, f"publish answered by {name}: {a} (its own count is {want})"
            for i, s in enumerate(subs):
                ev = s.expect_event(what=f"from-{name}")
                assert (ev.nid, ev.data) == (a.id, f"from-{name}"), f"stream {i}: {ev}, wanted from-{name} {a.id}"
        A.assert_alive()
        B.assert_alive()


TESTS = [
    test_publish_on_one_process_reaches_all_in_the_same_order,
    test_resume_on_another_process_gets_exactly_the_missed_events,
    test_trimmed_or_expired_history_is_history_lost_and_only_then,
    test_revocation_reaches_every_process,
    test_keys_are_namespaced_encoded_and_in_the_chosen_db,
    test_idempotency_key_with_redis,
    test_idempotency_key_without_redis,
    test_two_processes_share_one_port_with_reuse_port,
]

if __name__ == "__main__":
    sys.exit(run_tests(TESTS, sys.argv))
