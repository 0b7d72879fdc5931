#!/usr/bin/env bash
# Redis scale-out (issue 11) against the ssecast release binary and private
# redis-server instances, one per test, each in its own temporary directory:
#
#   lab.py, clients.py, fake_redis.py: the bench (tests import it from lab)
#   lab_selftest.py   the bench itself (redis-server lifecycle, the fake Redis,
#                     the SSE reader) against a plain hub
#   scaleout_test.py  several processes, one event order (also with two
#                     publishers at once); resume on another process or one
#                     started later, earliest, paged replays; trimmed and expired
#                     history; revocation across processes; key prefix, name
#                     encoding, db; Idempotency-Key (with and without Redis); two
#                     processes on one port (--reuse-port, --admin-bind)
#   faults_test.py    kill -9 of Redis (appendfsync always), Redis restarted
#                     empty, Redis SIGSTOPped, SCRIPT FLUSH (NOSCRIPT), a fake
#                     Redis (garbage, cut replies, slow replies, LOADING),
#                     reconnect backoff, answers after a client left, /health
#                     while Redis is away, bad URLs, host names, Redis away at
#                     startup, passwords, maxmemory-policy
#
# Python 3 standard library only (tests/redis/lab.py is the bench). Installs
# Debian's redis-server when missing (as root) or fails: nothing skips itself.
# Builds the release binary unless SSECAST_BIN names one.
#
# Usage: tests/redis/run.sh [lab|scaleout|faults ...]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../lib/suites.sh
source "$REPO/tests/lib/suites.sh"
export DEBIAN_FRONTEND=noninteractive

die() { echo "redis tests: $*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is required"
if ! command -v redis-server >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "redis-server is missing and not root: apt-get install redis-server"
  echo "== apt-get install redis-server"
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends redis-server >/dev/null
fi
command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install redis-server"
echo "== $(redis-server --version)"

release_binary

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(lab scaleout faults)
for s in "${suites[@]}"; do
  case $s in
    lab) run lab 60 python3 -u lab_selftest.py ;;
    scaleout) run scaleout 120 python3 -u scaleout_test.py ;;
    faults) run faults 180 python3 -u faults_test.py ;;
    *) die "unknown suite '$s' (lab scaleout faults)" ;;
  esac
done

finish redis
