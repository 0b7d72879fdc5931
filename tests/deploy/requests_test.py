#!/usr/bin/env python3
"""Python `requests` (the client of teams that come from Flask) reading
ssecast directly, with nothing in between.

Starts the release binary on a free port (readiness: its `listening on`
line), subscribes with `requests.get(stream=True)` and the default
`iter_lines()`, and checks:
  * a published event arrives within 200 ms (HTTP/1.1 streams are chunked;
    on a close-delimited body iter_lines would wait for 512 bytes or EOF);
  * multi-line unicode data comes back line for line;
  * reconnecting with `Last-Event-ID` replays exactly the missed events.
Exits nonzero on any failure; ends the process it started by PID.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
BIN = os.environ.get("SSECAST_BIN", os.path.join(REPO, "target", "release", "ssecast"))


def fail(msg):
    print(f"FAIL - {msg}", flush=True)
    sys.exit(1)


def start():
    p = subprocess.Popen([BIN, "--bind", "127.0.0.1:0", "--access-log", "false", "--retry-ms", "0"],
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        line = p.stderr.readline()
        m = re.search(r"listening on (\S+)", line)
        if m:
            threading.Thread(target=p.stderr.read, daemon=True).start()
            return p, "http://" + m.group(1)
        if not line and p.poll() is not None:
            break
    p.kill()
    fail("ssecast did not report `listening on`")


def events(resp):
    """Yields (id, data) per the SSE rules for the lines requests gives."""
    ev_id, data = None, []
    for raw in resp.iter_lines():
        line = raw.decode("utf-8")
        if line == "":
            if data:
                yield ev_id, "\n".join(data)
            data = []
        elif line.startswith("id: "):
            ev_id = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])


def main():
    proc, base = start()
    try:
        got = []
        opened = threading.Event()

        def reader(headers, want, out):
            with requests.get(base + "/events?channel=py", headers=headers, stream=True, timeout=5) as r:
                if r.status_code != 200:
                    fail(f"stream answered {r.status_code}")
                opened.set()
                for ev in events(r):
                    out.append((time.monotonic(), ev))
                    if len(out) == want:
                        return

        t = threading.Thread(target=reader, args=({}, 2, got))
        t.start()
        if not opened.wait(5):
            fail("no 200 from the stream")
        sent = time.monotonic()
        a = requests.post(base + "/events/broadcast", json={"channel": "py", "data": "first"}).json()
        text = "zwei Zeilen\nδεύτερη γραμμή ✓"
        b = requests.post(base + "/events/broadcast", json={"channel": "py", "data": text}).json()
        t.join(5)
        if len(got) != 2:
            fail(f"received {len(got)} of 2 events: {got}")
        delay = (got[0][0] - sent) * 1000
        if delay > 200:
            fail(f"first event took {delay:.0f} ms (iter_lines buffering?)")
        print(f"ok - event arrived through iter_lines() in {delay:.1f} ms")
        if got[1][1] != (str(b["id"]), text):
            fail(f"multi-line data came back as {got[1][1]!r}")
        print("ok - multi-line unicode data line for line")

        missed = [requests.post(base + "/events/broadcast", json={"channel": "py", "data": f"m{i}"}).json()["id"]
                  for i in range(3)]
        again = []
        opened.clear()
        t = threading.Thread(target=reader, args=({"Last-Event-ID": str(b["id"])}, 3, again))
        t.start()
        t.join(5)
        if [int(e[1][0]) for e in again] != missed or [e[1][1] for e in again] != ["m0", "m1", "m2"]:
            fail(f"replay after Last-Event-ID {b['id']} gave {again}, want ids {missed}")
        print("ok - Last-Event-ID replays exactly the missed events, in order")
        _ = a
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print("3 passed, 0 failed")


if __name__ == "__main__":
    main()
