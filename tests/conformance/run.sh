#!/usr/bin/env bash
# Issue 12's conformance suite: independent HTTP and SSE implementations judge
# the ssecast release binary.
#
#   h11         h11_test.py        a strict HTTP/1.1 client (PyPI h11) on raw sockets: every kind
#                                  of answer, keep-alive or Connection: close, HEAD on every route,
#                                  pipelining, chunked publishes and streams, an HTTP/1.0 stream
#   features    features_test.py   resume (header and three query spellings, `earliest`),
#                                  status `connections` (curl | jq), heartbeat events
#   parsers     parsers.test.mjs   payloads.json read back by Chromium's and Firefox ESR's
#                                  EventSource, eventsource-parser, fetch-event-stream,
#                                  extended-eventsource, httpx-sse, sseclient-py
#   heartbeat   heartbeat.test.mjs heartbeat events in Chromium's EventSource
#
# Installs what is missing (Debian: chromium firefox-esr jq curl python3-pip, as root after
# apt-get update; pip: requirements.txt with --break-system-packages, which a Debian python
# needs under PEP 668; npm ci here), builds the release binary unless SSECAST_BIN names one, runs
# every suite bounded in time, and fails if anything is missing or fails: nothing skips itself.
#
# Usage: tests/conformance/run.sh [suite ...]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../lib/suites.sh
source "$REPO/tests/lib/suites.sh"
export DEBIAN_FRONTEND=noninteractive

die() { echo "conformance: $*" >&2; exit 1; }

# ---- system packages ----
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/firefox-esr ] || need+=(firefox-esr)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need[*]} and not root: apt-get install ${need[*]}"
  echo "== apt-get install ${need[*]}"
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
for b in /usr/bin/chromium /usr/bin/firefox-esr; do [ -x "$b" ] || die "$b still missing after apt-get install"; done
command -v jq >/dev/null 2>&1 || die "jq still missing after apt-get install jq"

# ---- python packages (pinned in requirements.txt) ----
py_ok() { python3 -c 'import h11, httpx, httpx_sse, sseclient, requests; assert h11.__version__ == "0.16.0"' >/dev/null 2>&1; }
if ! py_ok; then
  echo "== pip install -r tests/conformance/requirements.txt"
  python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r "$HERE/requirements.txt" \
    || die "pip install -r requirements.txt failed"
fi
py_ok || die "h11 0.16.0, httpx, httpx-sse, sseclient-py or requests still missing after pip install"

# ---- node packages (package-lock.json) ----
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || die "node and npm are required (Node >= 20)"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] || die "Node >= 20 required, found $(node --version)"
echo "== npm ci (tests/conformance)"
npm_ci
for m in playwright-core eventsource-parser fetch-event-stream extended-eventsource; do
  [ -d "$HERE/node_modules/$m" ] || die "npm ci did not install $m"
done
# The clients that stand for "a parser of its own" must not use eventsource-parser.
for m in fetch-event-stream extended-eventsource; do
  ! grep -rlq 'eventsource-parser' "$HERE/node_modules/$m" || die "$m now uses eventsource-parser: pick another client"
done

# ---- the binary ----
release_binary

# ---- the suites ----
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(h11 features parsers heartbeat)
t_all=$SECONDS
for s in "${suites[@]}"; do
  case $s in
    h11) run h11 90 python3 h11_test.py ;;
    features) run features 90 python3 features_test.py ;;
    parsers) run parsers 170 node --test --test-concurrency=1 parsers.test.mjs ;;
    heartbeat) run heartbeat 90 node --test --test-concurrency=1 heartbeat.test.mjs ;;
    *) die "unknown suite '$s' (h11 features parsers heartbeat)" ;;
  esac
done

echo "(conformance suites took $((SECONDS - t_all)) s)"
finish conformance
