#!/usr/bin/env python3
"""Correctness check of benchmark results (what CI asserts after a QUICK run).

    benches/check_results.py FILE.json [FILE.json ...]

Each FILE is what scripts/bench.sh writes (bench-<UTC>.json) or one peer's
file from scripts/compare.sh (compare-<UTC>/<peer>.json): {"machine", "runs"}.
Speed is never asserted here (figures belong in the README, not in a test
that flakes on a shared machine); what must hold on any machine is:

- every run finished (`ok`), every subscriber connected, none failed;
- memory was read (bytes per subscriber is a number above zero);
- every acknowledged event reached every subscriber exactly once and in
  publish order: deliveries == expected, lost == dup == out_of_order == 0,
  no publish errors, no subscriber disconnected;
- idle runs kept every subscriber and saw heartbeats (not asserted for the
  peers named by `--no-heartbeats PEER,...`, default axum: its keep-alive is
  fixed at 15 s, longer than a quick run's hold);
- runs with several processes on one port (`--by-server-pid`): every
  process served subscribers and each of them got every event;
- the raw-write baseline wrote without errors;
- a channel-churn run had every fresh channel accepted (no 503, nothing
  failed), read the server's memory, and, where the server reports it, kept
  its history memory within its budget.

Pushpin's delivery is best effort by design (a message that finds a full
internal queue is dropped unless the origin implements GRIP's reliable mode),
and on one core its connect path saturates (about 1 ms of CPU per subscriber,
some 502s and timeouts at 10,000), so for the peers named by
`--best-effort PEER,...` (default pushpin) lost deliveries, and failed
subscribers up to 5 %, are printed as notes, not failures.

Prints one line per run and exits 1 if any check failed.

    benches/check_results.py --self-test FILE.json

breaks copies of a good FILE in the ways above and exits 1 unless every
broken copy is caught (so a passing check means something).
"""

import copy
import json
import os
import sys


def fail(problems, run, msg):
    problems.append(f"{run}: {msg}")


def check_connect(problems, name, r, best_effort=False):
    c = r.get("connect") or {}
    want = (r.get("config") or {}).get("subscribers") or 0
    if best_effort and c.get("failed", 0) > 0 and c.get("ok", 0) >= 0.95 * want:
        print(f"note {name}: {c.get('failed')} of {want} subscribers failed {c.get('failed_by_reason')} (best-effort peer)")
    elif c.get("ok") != want or c.get("failed", 1) != 0:
        fail(problems, name, f"connected {c.get('ok')} of {want}, failed {c.get('failed')} {c.get('failed_by_reason')}")
    mem = r.get("memory") or {}
    per = mem.get("rss_bytes_per_subscriber")
    # (with a handful of subscribers the growth is under one page: 0)
    if want >= 100 and (not isinstance(per, (int, float)) or per <= 0):
        fail(problems, name, f"no memory reading (rss_bytes_per_subscriber={per!r})")


def check_delivery(problems, name, r, best_effort=False):
    p = r.get("publish") or {}
    d = r.get("delivery") or {}
    acked = p.get("events_acked", 0)
    if acked <= 0 or acked != p.get("events_attempted"):
        fail(problems, name, f"events acknowledged {acked} of {p.get('events_attempted')}, errors {p.get('errors')}")
    if p.get("errors"):
        fail(problems, name, f"publish errors {p.get('errors')}")
    for key in ("lost", "duplicated", "out_of_order"):
        if key == "lost" and best_effort and d.get(key, 0) > 0:
            print(f"note {name}: lost {d.get(key)} of {d.get('expected')} (best-effort peer)")
            continue
        if d.get(key) != 0:
            fail(problems, name, f"{key} = {d.get(key)}")
    if d.get("expected", 0) <= 0:
        fail(problems, name, "nothing expected: no event acknowledged or no subscriber")
    elif d.get("deliveries", 0) + (d.get("lost", 0) if best_effort else 0) != d.get("expected"):
        fail(problems, name, f"deliveries {d.get('deliveries')} != expected {d.get('expected')}")
    if d.get("disconnects"):
        fail(problems, name, f"subscribers disconnected: {d.get('disconnects')}")
    lat = d.get("latency_ns") or {}
    if lat.get("count") != d.get("deliveries"):
        fail(problems, name, f"latency samples {lat.get('count')} != deliveries {d.get('deliveries')}")
    # Several processes on one port (--by-server-pid): each served some of
    # the subscribers, and each of its subscribers got every event.
    for g in d.get("by_server_pid") or []:
        if not g.get("subscribers"):
            fail(problems, name, f"server process {g.get('pid')} served no subscriber")
        elif g.get("deliveries") != g.get("expected") or g.get("lost"):
            fail(problems, name, f"server process {g.get('pid')}: deliveries {g.get('deliveries')} of {g.get('expected')}, lost {g.get('lost')}")


def check_idle(problems, name, r, heartbeats):
    h = r.get("hold") or {}
    want = (r.get("connect") or {}).get("ok")
    if not want or h.get("live_subscribers_at_end") != want or h.get("disconnects"):
        fail(problems, name, f"live at end {h.get('live_subscribers_at_end')} of {want}, disconnects {h.get('disconnects')}")
    if heartbeats and not h.get("heartbeats", 0) > 0:
        fail(problems, name, "no heartbeats seen while idle")


def check_churn(problems, name, r):
    want = (r.get("config") or {}).get("channels") or 0
    if want <= 0 or r.get("channels_ok") != want:
        fail(problems, name, f"channels accepted {r.get('channels_ok')} of {want}")
    if r.get("refused") or r.get("failed"):
        fail(problems, name, f"refused {r.get('refused')}, failed {r.get('failed')} ({r.get('error')})")
    end = (r.get("memory") or {}).get("rss_bytes_end")
    if not isinstance(end, (int, float)) or end <= 0:
        fail(problems, name, f"no memory reading (rss_bytes_end={end!r})")
    st = r.get("status") or {}
    used, budget = st.get("history_memory_bytes"), st.get("history_memory_budget_bytes")
    if isinstance(used, int) and isinstance(budget, int) and used > budget:
        fail(problems, name, f"history memory {used} over its budget {budget}")


def check_file(path, quiet_peers, best_effort):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    peer = os.path.splitext(os.path.basename(path))[0]
    return check_doc(doc, peer, quiet_peers, best_effort)


def check_run(problems, label, r, heartbeats, best_effort):
    if not r.get("ok") and not best_effort:
        fail(problems, label, f"run not ok: {r.get('error') or r.get('errors')}")
    if r.get("mode") == "churn":
        check_churn(problems, label, r)
        return
    if r.get("mode") == "verify":
        return  # the cost of one token verification: reported, never asserted
    if r.get("mode") == "raw-write":
        if r.get("errors") or not r.get("writes", 0) > 0:
            fail(problems, label, f"raw-write wrote {r.get('writes')} with {r.get('errors')} errors")
        return
    check_connect(problems, label, r, best_effort)
    if r.get("mode") == "idle":
        check_idle(problems, label, r, heartbeats)
    elif (r.get("config") or {}).get("events", 0) > 0:
        check_delivery(problems, label, r, best_effort)


def check_doc(doc, peer, quiet_peers, best_effort=frozenset()):
    problems = []
    runs = doc.get("runs")
    if not isinstance(runs, dict) or not runs:
        return [f"{peer}: no runs"]
    for name, r in runs.items():
        label = f"{peer}/{name}"
        before = len(problems)
        check_run(problems, label, r, peer not in quiet_peers, peer in best_effort)
        print(f"checked {label}: {'ok' if len(problems) == before else 'FAILED'}")
    return problems


BREAKS = [
    ("a lost delivery", "delivery", lambda d: d.update(lost=1)),
    ("a duplicate", "delivery", lambda d: d.update(duplicated=1)),
    ("a reordered delivery", "delivery", lambda d: d.update(out_of_order=1)),
    ("one delivery short", "delivery", lambda d: d.update(deliveries=d["deliveries"] - 1)),
    ("a failed subscriber", "connect", lambda c: c.update(failed=1)),
    ("a subscriber disconnected while idle", "hold", lambda h: h.update(disconnects={"eof": 1})),
    ("no heartbeats while idle", "hold", lambda h: h.update(heartbeats=0)),
    ("a process on a shared port served nobody", "delivery",
     lambda d: d["by_server_pid"][0].update(subscribers=0), lambda r: bool(r["delivery"].get("by_server_pid"))),
    ("a refused fresh channel", "refused", lambda f: f.update({"503": 1})),
    ("history over its budget", "status",
     lambda s: s.update(history_memory_bytes=(s.get("history_memory_budget_bytes") or 0) + 1)),
]


def self_test(path):
    with open(path, encoding="utf-8") as f:
        good = json.load(f)
    if check_doc(good, "selftest", set()):
        print(f"self-test: {path} is not a good file to start from")
        return 1
    missed = 0
    for what, key, breaker, *need in BREAKS:
        runs = [n for n, r in good["runs"].items() if key in r and all(f(r) for f in need)]
        if not runs:
            continue
        bad = copy.deepcopy(good)
        breaker(bad["runs"][runs[0]][key])
        caught = check_doc(bad, "selftest", set())
        print(f"self-test: {what} in {runs[0]}: {'caught' if caught else 'MISSED'}")
        missed += not caught
    return 1 if missed else 0


def main(argv):
    args = argv[1:]
    if args[:1] == ["--self-test"] and len(args) == 2:
        return self_test(args[1])
    quiet_peers = {"axum"}
    best_effort = {"pushpin"}
    while args[:1] in (["--no-heartbeats"], ["--best-effort"]) and len(args) > 1:
        names = set(filter(None, args[1].split(",")))
        if args[0] == "--no-heartbeats":
            quiet_peers = names
        else:
            best_effort = names
        args = args[2:]
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    problems = []
    for path in args:
        try:
            problems += check_file(path, quiet_peers, best_effort)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: {e}")
    for p in problems:
        print(f"FAIL {p}")
    print(f"{len(problems)} problem(s) in {len(args)} file(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
