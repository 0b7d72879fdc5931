#!/usr/bin/env python3
"""A small Flask application in the shape of the apps ssecast replaces: its
session cookie decides who may subscribe to what. ssecast asks it through
`GET /auth` (`--subscribe-auth-url http://127.0.0.1:PORT/auth`).

Routes:
  /login?user=U&channels=a,b&expires=SECS   sets the signed session cookie
  /auth            the forward-auth callback (see README "Asking the application")
  /calls           how many times /auth was called, and the headers of the last call
  /mode?m=normal|slow|error                  how /auth behaves from now on
  /slow-started    answers once a slow /auth call has begun
  /reset           zeroes the call count

Usage: app.py PORT (0: a free port). Prints "ready PORT" once it listens.
The secret comes from FLASK_SECRET so that a restarted app accepts the
cookies of the last one.
"""
import os
import sys
import threading
import time

from flask import Flask, jsonify, request, session
from werkzeug.serving import make_server

app = Flask(__name__)
app.secret_key = os.environ.get("FLASK_SECRET", "test-secret")

state = {"calls": 0, "last": {}, "mode": "normal"}
lock = threading.Lock()
slow_started = threading.Event()


@app.get("/login")
def login():
    session["user"] = request.args["user"]
    session["channels"] = request.args.get("channels", request.args["user"]).split(",")
    if "expires" in request.args:
        session["expires"] = request.args["expires"]
    return jsonify(ok=True)


# --- the forward-auth callback, as in the README -------------------------
@app.get("/auth")
def auth():
    with lock:
        state["calls"] += 1
        state["last"] = dict(request.headers)
        mode = state["mode"]
    if mode == "slow":
        slow_started.set()
        time.sleep(3)
    if mode == "error":
        return jsonify(error="database unavailable"), 500
    channel = request.headers.get("X-Ssecast-Channel", "")
    if channel == "public":
        return "", 204
    user = session.get("user")
    if user is None:
        bearer = request.headers.get("Authorization", "")
        if bearer == "Bearer token-of-carol":
            user, channels = "carol", ["carol"]
        else:
            return jsonify(error="log in first"), 401
    else:
        channels = session.get("channels", [])
    if channel not in channels:
        return jsonify(error=f"{user} may not read {channel}"), 403
    headers = {}
    if "expires" in session:
        headers["X-Ssecast-Expires"] = session["expires"]
    return "", 200, headers
# --------------------------------------------------------------------------


@app.get("/calls")
def calls():
    with lock:
        return jsonify(calls=state["calls"], last=state["last"], mode=state["mode"])


@app.get("/mode")
def mode():
    with lock:
        state["mode"] = request.args["m"]
    return jsonify(ok=True)


@app.get("/slow-started")
def wait_slow():
    """Answers once a slow /auth call has begun (or after 5 s: false)."""
    started = slow_started.wait(5)
    slow_started.clear()
    return jsonify(started=started)


@app.get("/reset")
def reset():
    with lock:
        state["calls"] = 0
    return jsonify(ok=True)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    srv = make_server("127.0.0.1", port, app, threaded=True)
    print(f"ready {srv.server_port}", flush=True)
    srv.serve_forever()
