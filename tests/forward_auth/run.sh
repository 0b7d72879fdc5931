#!/usr/bin/env bash
# Forward auth with real components: the ssecast release binary asking a
# small Flask application (app.py) whose session cookie decides, checked
# with raw HTTP clients (forward_auth_test.py) and with headless Chromium's
# EventSource (browser.test.mjs, playwright-core from tests/deploy with
# Debian's /usr/bin/chromium).
#
# Installs what is missing (pip: flask, with --break-system-packages when
# the system python refuses (PEP 668), else Debian's python3-flask; apt:
# chromium; npm ci in tests/deploy), builds the release binary unless
# SSECAST_BIN names one. Nothing skips itself; each suite is bounded in time.
#
# Usage: tests/forward_auth/run.sh
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export DEBIAN_FRONTEND=noninteractive
die() { echo "forward auth tests: $*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is required"
if ! python3 -c 'import flask' >/dev/null 2>&1; then
  echo "== pip install flask"
  python3 -m pip install --quiet flask \
    || python3 -m pip install --quiet --break-system-packages flask \
    || { [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends python3-flask >/dev/null; } \
    || die "cannot install flask"
fi
python3 -c 'import flask' >/dev/null 2>&1 || die "flask still missing after installing it"

if [ ! -x /usr/bin/chromium ]; then
  [ "$(id -u)" = 0 ] || die "missing chromium and not root: apt-get install chromium"
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || die "node and npm are required (Node >= 20)"
if [ ! -d "$REPO/tests/deploy/node_modules/playwright-core" ]; then
  echo "== npm ci (tests/deploy)"
  (cd "$REPO/tests/deploy" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci in tests/deploy failed"
fi

if [ -z "${SSECAST_BIN:-}" ]; then
  echo "== cargo build --release"
  (cd "$REPO" && cargo build --release --quiet)
  export SSECAST_BIN="$REPO/target/release/ssecast"
fi
[ -x "$SSECAST_BIN" ] || die "no ssecast binary at $SSECAST_BIN"

rc=0
echo "== forward_auth_test.py (Flask app, raw HTTP clients)"
timeout --kill-after=10 120 python3 "$HERE/forward_auth_test.py" || rc=1
echo "== browser.test.mjs (headless Chromium EventSource)"
(cd "$HERE" && timeout --kill-after=10 120 node --test --test-concurrency=1 browser.test.mjs) || rc=1
[ $rc -eq 0 ] && echo "forward auth: all suites passed" || echo "forward auth: FAILED" >&2
exit $rc
