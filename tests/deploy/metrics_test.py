#!/usr/bin/env python3
"""GET /metrics of the ssecast release binary, read by Prometheus' own parser.

Starts ssecast (--bind 127.0.0.1:0, port from its `listening on` line), opens
two streams on channel `a` and one on `b`, publishes three events (two to `a`,
one to `b`), reads them on every stream, gets one request refused (404), then
fetches /metrics and parses it with `prometheus_client.parser.
text_string_to_metric_families` (the PyPI `prometheus_client` package; run.sh
installs it, this test fails without it). Checks:

  * Content-Type `text/plain; version=0.0.4` (a `charset=utf-8` parameter is allowed);
  * every family parses, one family per `# TYPE` line, each declared once;
  * ssecast_subscribers = 3, ssecast_channel_subscribers{channel="a"} = 2 (and "b" = 1);
  * ssecast_events_published_total = 3 (the parser names the counter family
    `ssecast_events_published`; its sample keeps `_total`);
  * ssecast_deliveries_total >= 5 once every stream has read its events
    (2 streams x 2 events on `a` + 1 on `b`);
  * ssecast_rejected_total{reason="not_found"} >= 1;
  * the ssecast_publish_duration_seconds histogram: buckets ascending and
    cumulative, the last one `+Inf`, equal to _count (= 3 publishes), _sum >= 0;
  * label escaping: a stream on channel `q"uo\\te` (URL-encoded in the query)
    comes back from the parser as exactly that label value;
  * no family has two samples with the same labels, also with more channels
    than get their own label (100) and one of them named `_other`.

Usage: python3 tests/deploy/metrics_test.py   (SSECAST_BIN overrides the binary).
Exits nonzero with a message on any failure; ends the process it started by PID.
"""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
BIN = os.environ.get("SSECAST_BIN", os.path.join(REPO, "target", "release", "ssecast"))
OVERALL_TIMEOUT = 60  # seconds, the whole test
IO_TIMEOUT = 5.0  # seconds, any one socket operation
QUOTED = 'q"uo\\te'  # the channel name q"uo\te


class Failure(Exception):
    pass


def log(msg):
    print(msg, flush=True)


try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:  # no skipping: CI must have it (run.sh installs it)
    log(f"FAIL - prometheus_client is not installed ({e}): pip install prometheus_client")
    sys.exit(1)


class Ssecast:
    """The ssecast process we started; stopped by its PID only."""

    def __init__(self, args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_")}
        self.lines = []
        self.p = subprocess.Popen([BIN, "--bind", "127.0.0.1:0", *args], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 10
        while True:
            m = next((re.search(r"listening on 127\.0\.0\.1:(\d+)", l) for l in list(self.lines)
                      if "listening on" in l), None)
            if m:
                self.port = int(m.group(1))
                return
            if self.p.poll() is not None:
                raise Failure(f"ssecast exited with {self.p.returncode} before listening:\n" + "\n".join(self.lines))
            if time.monotonic() > deadline:
                self.stop()
                raise Failure("ssecast did not log 'listening on' within 10 s:\n" + "\n".join(self.lines))
            time.sleep(0.01)

    def _read(self):
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if os.environ.get("DEPLOY_TEST_VERBOSE"):
                sys.stderr.write(f"[ssecast] {line}\n")

    def stop(self):
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGTERM)
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
            except ProcessLookupError:
                pass
        return self.p.returncode


def get(port, path, method="GET", body=None, headers=None):
    """One request on a fresh connection; returns (status, headers dict (lower-case), body text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8")
    finally:
        c.close()


def publish(port, channel, data):
    status, _, text = get(port, "/events/broadcast", "POST", json.dumps({"channel": channel, "data": data}),
                          {"Content-Type": "application/json"})
    if status != 200:
        raise Failure(f"publish to {channel!r} -> {status} {text}")
    return json.loads(text)


class Stream:
    """One open event stream (http.client handles the chunked framing)."""

    def __init__(self, port, channel):
        self.channel = channel
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
        self.conn.request("GET", "/events?channel=" + urllib.parse.quote(channel, safe=""))
        # The response head is written after the subscriber is registered: once we
        # have it, the hub counts this stream.
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise Failure(f"stream on {channel!r}: {self.resp.status} {self.resp.read()!r}")
        ctype = self.resp.getheader("Content-Type", "")
        if not ctype.startswith("text/event-stream"):
            raise Failure(f"stream on {channel!r}: Content-Type {ctype!r}")

    def next_event(self):
        """The next event (dict of id/event/data), skipping retry/comment blocks; socket timeout bounds it."""
        ev = {}
        while True:
            line = self.resp.readline()
            if not line:
                raise Failure(f"stream on {self.channel!r} ended")
            line = line.decode("utf-8").rstrip("\n")
            if line == "":
                if "data" in ev:
                    return ev
                ev = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                ev["data"] = ev["data"] + "\n" + value if "data" in ev else value
            elif field in ("id", "event"):
                ev[field] = value

    def close(self):
        self.conn.close()


def check_content_type(ctype):
    parts = [p.strip() for p in ctype.split(";")]
    params = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        params[k.strip().lower()] = v.strip().strip('"')
    if parts[0].lower() != "text/plain" or params.get("version") != "0.0.4":
        raise Failure(f"Content-Type {ctype!r} is not text/plain; version=0.0.4")
    if not ctype.startswith("text/plain; version=0.0.4"):
        raise Failure(f"Content-Type {ctype!r} does not start with 'text/plain; version=0.0.4'")
    extra = set(params) - {"version", "charset"}
    if extra or params.get("charset", "utf-8").lower() != "utf-8":
        raise Failure(f"Content-Type {ctype!r}: unexpected parameters")


def parse_metrics(text):
    """Every family through the real parser; one family per # TYPE line, none declared twice."""
    families = list(text_string_to_metric_families(text))  # raises on anything it cannot parse
    types = re.findall(r"(?m)^# TYPE (\S+) (\S+)$", text)
    names = [n for n, _ in types]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise Failure(f"families declared more than once: {sorted(dup)}")
    if len(families) != len(types):
        raise Failure(f"{len(types)} # TYPE lines but the parser returned {len(families)} families: "
                      f"{[f.name for f in families]}")
    for f in families:
        if f.type == "unknown":
            raise Failure(f"family {f.name} has no usable TYPE")
        if not f.samples:
            raise Failure(f"family {f.name} has no samples")
    return {f.name: f for f in families}


def samples(fams, family, sample_name=None, **labels):
    """Sample values of `family` whose name is `sample_name` (default: the family name) and labels include `labels`."""
    f = fams.get(family)
    if f is None:
        raise Failure(f"no family {family!r}; have {sorted(fams)}")
    want = sample_name or family
    return [s for s in f.samples if s.name == want and all(s.labels.get(k) == v for k, v in labels.items())]


def one(fams, family, sample_name=None, **labels):
    got = samples(fams, family, sample_name, **labels)
    if len(got) != 1:
        raise Failure(f"expected one sample {sample_name or family}{labels}, got {got}")
    return got[0].value


def main():
    def on_alarm(*_):
        raise Failure(f"the whole test took more than {OVERALL_TIMEOUT}s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(OVERALL_TIMEOUT)

    if not os.path.exists(BIN):
        raise Failure(f"ssecast binary not found at {BIN}: run `cargo build --release` first (or set SSECAST_BIN)")
    results = []

    def check(name, fn):
        try:
            fn()
            results.append((name, None))
            log(f"ok - {name}")
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            results.append((name, e))
            log(f"FAIL - {name}: {type(e).__name__}: {e}")

    srv = None
    streams = []
    try:
        srv = Ssecast(["--heartbeat-interval", "0", "--retry-ms", "0"])
        port = srv.port
        log(f"# ssecast pid {srv.p.pid} on 127.0.0.1:{port}")
        st = {}

        # ---- activity ----
        streams = [Stream(port, "a"), Stream(port, "a"), Stream(port, "b")]
        publish(port, "a", "first on a")
        publish(port, "a", "second\non a")
        publish(port, "b", "only on b")
        for s in streams:
            want = ["first on a", "second\non a"] if s.channel == "a" else ["only on b"]
            got = [s.next_event()["data"] for _ in want]
            if got != want:
                raise Failure(f"stream on {s.channel}: got {got}, want {want}")
        status, _, body = get(port, "/no/such/endpoint")
        if status != 404:
            raise Failure(f"GET /no/such/endpoint -> {status} {body}")

        status, headers, text = get(port, "/metrics")
        if status != 200:
            raise Failure(f"GET /metrics -> {status}: {text}")
        if os.environ.get("DEPLOY_TEST_VERBOSE"):
            sys.stderr.write(text)
        st["text"] = text

        check("Content-Type is text/plain; version=0.0.4", lambda: check_content_type(headers.get("content-type", "")))

        def parses():
            st["fams"] = parse_metrics(text)
        check("every family parses with prometheus_client's parser", parses)
        fams = st.get("fams")
        if fams is None:
            raise Failure("cannot check values: /metrics did not parse")

        def expect(label, got, ok):
            if not ok:
                raise Failure(f"{label} = {got}")

        def subscribers():
            expect("ssecast_subscribers", one(fams, "ssecast_subscribers"), one(fams, "ssecast_subscribers") == 3)
            a = one(fams, "ssecast_channel_subscribers", channel="a")
            b = one(fams, "ssecast_channel_subscribers", channel="b")
            expect('ssecast_channel_subscribers{channel="a"}', a, a == 2)
            expect('ssecast_channel_subscribers{channel="b"}', b, b == 1)
            if fams["ssecast_channel_subscribers"].type != "gauge":
                raise Failure(f"ssecast_channel_subscribers is a {fams['ssecast_channel_subscribers'].type}")
        check("ssecast_subscribers = 3, channel a = 2, channel b = 1", subscribers)

        def events():
            f = fams.get("ssecast_events_published")
            if f is None or f.type != "counter":
                raise Failure(f"no counter family ssecast_events_published (parser strips _total): {sorted(fams)}")
            v = one(fams, "ssecast_events_published", "ssecast_events_published_total")
            expect("ssecast_events_published_total", v, v == 3)
        check("ssecast_events_published_total = 3 (a counter)", events)

        def deliveries():
            v = one(fams, "ssecast_deliveries", "ssecast_deliveries_total")
            expect("ssecast_deliveries_total", v, v >= 5)
        check("ssecast_deliveries_total >= 5 after every stream read its events", deliveries)

        def rejected():
            v = one(fams, "ssecast_rejected", "ssecast_rejected_total", reason="not_found")
            expect('ssecast_rejected_total{reason="not_found"}', v, v >= 1)
        check('ssecast_rejected_total{reason="not_found"} >= 1', rejected)

        def histogram():
            name = "ssecast_publish_duration_seconds"
            f = fams.get(name)
            if f is None or f.type != "histogram":
                raise Failure(f"no histogram family {name}")
            buckets = [(s.labels["le"], s.value) for s in f.samples if s.name == name + "_bucket"]
            if len(buckets) < 2:
                raise Failure(f"buckets: {buckets}")
            les = [float(le) for le, _ in buckets]
            if buckets[-1][0] != "+Inf":
                raise Failure(f"last bucket is le={buckets[-1][0]!r}, not +Inf")
            if les != sorted(les) or len(set(les)) != len(les):
                raise Failure(f"bucket bounds not strictly ascending: {les}")
            counts = [v for _, v in buckets]
            if any(b < a for a, b in zip(counts, counts[1:])):
                raise Failure(f"buckets are not cumulative: {buckets}")
            count = one(fams, name, name + "_count")
            total = one(fams, name, name + "_sum")
            if buckets[-1][1] != count:
                raise Failure(f'bucket{{le="+Inf"}} = {buckets[-1][1]} but _count = {count}')
            if count != 3:
                raise Failure(f"_count = {count}, want 3 (three publishes)")
            if not total >= 0:
                raise Failure(f"_sum = {total}")
        check("ssecast_publish_duration_seconds: cumulative buckets ending in +Inf = _count = 3", histogram)

        def escaping():
            q = Stream(port, QUOTED)
            streams.append(q)
            status, _, text2 = get(port, "/metrics")
            if status != 200:
                raise Failure(f"GET /metrics -> {status}")
            fams2 = parse_metrics(text2)
            got = samples(fams2, "ssecast_channel_subscribers", channel=QUOTED)
            if len(got) != 1 or got[0].value != 1:
                chans = [s.labels.get("channel") for s in fams2["ssecast_channel_subscribers"].samples]
                raise Failure(f"no ssecast_channel_subscribers{{channel={QUOTED!r}}} = 1 after parsing; channels: {chans}")
            raw = [l for l in text2.splitlines() if l.startswith("ssecast_channel_subscribers{")]
            if 'ssecast_channel_subscribers{channel="q\\"uo\\\\te"} 1' not in raw:
                raise Failure(f"raw exposition lines: {raw}")
            total = one(fams2, "ssecast_subscribers")
            expect("ssecast_subscribers with the fourth stream", total, total == 4)
        check('label escaping: channel q"uo\\te round-trips through the parser', escaping)

        def no_duplicate_series():
            # More channels than get a label of their own (100), one of them really
            # named `_other`: the per-channel gauge must still have one sample per
            # label set (Prometheus rejects a whole scrape with a duplicate series).
            for i in range(101):
                publish(port, f"many-{i:03d}", "x")
            publish(port, "_other", "x")
            status, _, text3 = get(port, "/metrics")
            if status != 200:
                raise Failure(f"GET /metrics -> {status}")
            fams3 = parse_metrics(text3)
            for f in fams3.values():
                seen = {}
                for smp in f.samples:
                    key = (smp.name, tuple(sorted(smp.labels.items())))
                    seen[key] = seen.get(key, 0) + 1
                dups = [f"{n}{dict(l)} x{c}" for (n, l), c in seen.items() if c > 1]
                if dups:
                    raw = [l for l in text3.splitlines() if 'channel="_other"' in l]
                    raise Failure(f"duplicate series in {f.name}: {dups}; lines: {raw}")
        check("no duplicate series with > 100 channels and a channel named _other", no_duplicate_series)
    finally:
        for s in streams:
            s.close()
        if srv is not None:
            rc = srv.stop()
            results.append(("ssecast exits 0 on SIGTERM", None if rc == 0 else Failure(f"exit code {rc}")))
            log(f"{'ok' if rc == 0 else 'FAIL'} - ssecast exits 0 on SIGTERM (exit {rc})")
        signal.alarm(0)

    failed = [n for n, e in results if e is not None]
    log(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        log(f"FAIL - {e}")
        log("0 passed, 1 failed")
        sys.exit(1)
