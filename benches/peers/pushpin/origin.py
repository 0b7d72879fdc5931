#!/usr/bin/env python3
"""The origin behind Pushpin in the benchmarks.

Pushpin holds no state of its own about what a request means: it forwards each
subscribe to an origin, and the origin's answer tells it to hold the
connection open as a stream on a channel (GRIP). This origin answers every
GET with an empty text/event-stream body and

    Grip-Hold: stream
    Grip-Channel: CHANNEL
    Grip-Keep-Alive: :\\n\\n; format=cstring; timeout=HEARTBEAT

so Pushpin keeps the subscriber, sends it whatever is published to CHANNEL
through its publish API, and a `:` comment after HEARTBEAT quiet seconds.

    origin.py PORT CHANNEL HEARTBEAT
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Pushpin reuses its origin connections

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Grip-Hold", "stream")
        self.send_header("Grip-Channel", self.server.channel)
        self.send_header("Grip-Keep-Alive", f":\\n\\n; format=cstring; timeout={self.server.heartbeat}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog: a class attribute, because the constructor listens.
    request_queue_size = 1024


def main():
    if len(sys.argv) != 4:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    port, channel, heartbeat = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    server = Server(("127.0.0.1", port), Origin)
    server.channel = channel
    server.heartbeat = heartbeat
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
