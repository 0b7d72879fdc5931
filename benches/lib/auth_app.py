#!/usr/bin/env python3
"""The smallest forward-auth application for scripts/bench.sh: every
`GET` is allowed (200, no body), over HTTP/1.1 keep-alive, one thread per
connection. It counts its calls; `GET /calls` answers the count (and is
itself not counted).

Usage: auth_app.py PORT
"""
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

calls = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        global calls
        body = b""
        if self.path == "/calls":
            body = str(calls).encode()
        else:
            with lock:
                calls += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
