#!/bin/bash
# Container HEALTHCHECK for ssecast: GET /health over bash's /dev/tcp, because
# debian-slim has no curl or wget (bash is always there). Exit 0 when the hub
# answers 200 with "status":"healthy", 1 otherwise.
#
# Address: SSE_HEALTH_ADDR (host:port) if set, else SSE_BIND with a wildcard host
# (0.0.0.0, [::], empty) replaced by loopback; default 127.0.0.1:5001.
# The whole check is bounded: the HEALTHCHECK --timeout kills a hung connect,
# and every read gives up after 3 s.
set -u
addr=${SSE_HEALTH_ADDR:-${SSE_BIND:-127.0.0.1:5001}}
port=${addr##*:}
host=${addr%:*}
case "$host" in
  ''|0.0.0.0|'[::]'|'::') host=127.0.0.1 ;;
  \[*\]) host=${host#[}; host=${host%]} ;;
esac

{ exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || { echo "unhealthy: cannot connect to $host:$port"; exit 1; }
printf 'GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3

IFS= read -r -t 3 status <&3 || { echo "unhealthy: no answer from $host:$port"; exit 1; }
body=
# The JSON body has no final newline: keep what the last read got too.
while IFS= read -r -t 3 line || [ -n "$line" ]; do body+=$line; line=; done <&3
exec 3<&-

case "$status" in
  'HTTP/1.1 200'*) ;;
  *) echo "unhealthy: ${status%$'\r'}"; exit 1 ;;
esac
case "$body" in
  *'"status":"healthy"'*) echo "healthy"; exit 0 ;;
  *) echo "unhealthy: unexpected body: $body"; exit 1 ;;
esac
