#!/usr/bin/env python3
"""Two Python SSE clients read one stream until the `end` event and print what
they got as one JSON document on stdout: {"httpx-sse": {...}, "sseclient-py": {...}},
each {"events": [{"type", "data", "id"}...], "errors": [...], "retry": ...}.

Each prints `opened <client>` on stderr once its response headers are in, so
the caller can wait for both before publishing.

    python3 py_readers.py STREAM_URL
"""

import json
import sys
import threading

import httpx
import requests
import sseclient
from httpx_sse import connect_sse

TIMEOUT = 60


def opened(name):
    print(f"opened {name}", file=sys.stderr, flush=True)


def with_httpx_sse(url, out):
    with httpx.Client(timeout=TIMEOUT) as client, connect_sse(client, "GET", url) as es:
        es.response.raise_for_status()
        opened("httpx-sse")
        for sse in es.iter_sse():
            out["events"].append({"type": sse.event, "data": sse.data, "id": sse.id, "retry": sse.retry})
            if sse.event == "end":
                return


def with_sseclient(url, out):
    with requests.get(url, stream=True, timeout=TIMEOUT, headers={"Accept": "text/event-stream"}) as r:
        r.raise_for_status()
        opened("sseclient-py")
        for ev in sseclient.SSEClient(r).events():
            out["events"].append({"type": ev.event, "data": ev.data, "id": ev.id, "retry": ev.retry})
            if ev.event == "end":
                return


def main():
    url = sys.argv[1]
    results = {}
    threads = []
    for name, fn in [("httpx-sse", with_httpx_sse), ("sseclient-py", with_sseclient)]:
        out = results[name] = {"events": [], "errors": []}

        def run(fn=fn, out=out):
            try:
                fn(url, out)
            except Exception as e:  # noqa: BLE001 - reported to the caller
                out["errors"].append(repr(e))

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(TIMEOUT + 5)
    for name, t in zip(results, threads):
        if t.is_alive():
            results[name]["errors"].append(f"no end event within {TIMEOUT} s")
    json.dump(results, sys.stdout, ensure_ascii=True)


if __name__ == "__main__":
    main()
