#!/usr/bin/env python3
"""Mints an ssecast subscribe token: an HS256 JWT, with the standard library.

  scripts/mint-token.py SECRET_FILE CHANNELS [SUB] [TTL_SECONDS]

CHANNELS is comma-separated (a trailing * matches a prefix); TTL defaults to
3600. Prints the token. The same code as the README's "Private channels".
"""
import base64
import hashlib
import hmac
import json
import sys
import time


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(secret, channels, sub=None, ttl=3600):
    header = {"alg": "HS256", "typ": "JWT"}
    now = int(time.time())
    claims = {"exp": now + ttl, "iat": now, "channels": channels}
    if sub:
        claims["sub"] = sub
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    secret = open(sys.argv[1], "rb").read().rstrip(b"\r\n")
    sub = sys.argv[3] if len(sys.argv) > 3 else None
    ttl = int(sys.argv[4]) if len(sys.argv) > 4 else 3600
    print(mint(secret, sys.argv[2].split(","), sub, ttl))
