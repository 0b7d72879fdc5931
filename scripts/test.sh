#!/usr/bin/env bash
# The test command (what CI runs): formatting, lints as errors, every Rust
# test, the load harness's own checks, the committed fuzz seeds, then the
# deployment tests with real programs (nginx, Chromium, the npm eventsource
# client, Prometheus' parser, systemd-analyze), the conformance tests (h11,
# Chromium's and Firefox's EventSource and five more SSE parsers,
# tests/conformance), forward auth (tests/forward_auth), Redis scale-out
# with private redis-server instances (tests/redis), the fault scripts at CI
# size (scripts/faults/run_all.sh, docs/faults.md: ~3 minutes) and a small run of both
# benchmark scripts (ssecast, nginx+nchan, axum, Pushpin) whose results must show
# every event delivered exactly once, in order. Whatever is missing is
# installed or the run fails; nothing skips itself.
#
#   scripts/test.sh                  everything
#   SKIP_DEPLOY=1 scripts/test.sh    without the deployment and conformance tests,
#                                    the fault scripts and the benchmark smoke
#                                    run (local use; refused in CI)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets --no-fail-fast

echo "== load harness (benches/harness): fmt, clippy -D warnings, tests"
(cd benches/harness && cargo fmt --check && cargo clippy -q --all-targets -- -D warnings && cargo test -q)
echo "== fault tools (scripts/faults/tools/faultkit): fmt, clippy -D warnings"
(cd scripts/faults/tools/faultkit && cargo fmt --check && cargo clippy -q --all-targets -- -D warnings)
echo "== axum peer (benches/peers/axum-sse): fmt, clippy -D warnings"
(cd benches/peers/axum-sse && cargo fmt --check && cargo clippy -q --all-targets -- -D warnings)

echo "== fuzz targets: committed seeds replayed"
scripts/fuzz.sh --replay

if [ "${SKIP_DEPLOY:-}" = 1 ]; then
  if [ "${CI:-}" = true ]; then
    echo "SKIP_DEPLOY is not allowed in CI" >&2
    exit 1
  fi
  echo "== deployment tests, fault scripts and benchmark smoke run skipped (SKIP_DEPLOY=1)"
  exit 0
fi
echo "== deployment tests"
tests/deploy/run.sh
echo "== conformance tests (independent HTTP and SSE clients)"
tests/conformance/run.sh
echo "== forward auth tests (Flask application, headless Chromium)"
tests/forward_auth/run.sh
echo "== redis scale-out tests"
tests/redis/run.sh

# Every fault script (slow consumers, churn, slowloris, fd exhaustion,
# restarts, half-closed streams, channel churn) at CI size; each check
# asserts, and every latency bound is derived in the same run.
echo "== fault scripts: CI_SIZE=1 scripts/faults/run_all.sh"
faultlogs=$(mktemp -d /tmp/ssecast-faults-ci.XXXXXX)
CI_SIZE=1 LOGDIR="$faultlogs" scripts/faults/run_all.sh \
  || { tail -n 80 "$faultlogs"/*.out; echo "fault scripts failed (logs in $faultlogs)" >&2; exit 1; }
rm -rf "$faultlogs"

# Speed is reported, not asserted (README, "Benchmarks"); what is asserted is
# that the tooling works end to end against all three servers and that no
# run lost, duplicated or reordered an event.
echo "== benchmark smoke run: QUICK=1 scripts/bench.sh and scripts/compare.sh"
smoke=$(mktemp -d /tmp/ssecast-bench-smoke.XXXXXX)
trap 'rm -rf "$smoke"' EXIT
QUICK=1 OUT="$smoke/bench" scripts/bench.sh > "$smoke/bench.log" 2>&1 \
  || { cat "$smoke/bench.log"; echo "scripts/bench.sh failed" >&2; exit 1; }
QUICK=1 OUT="$smoke/compare" scripts/compare.sh > "$smoke/compare.log" 2>&1 \
  || { cat "$smoke/compare.log"; echo "scripts/compare.sh failed" >&2; exit 1; }
cat "$smoke/compare.md"
# The results first (a problem is named, with the run's summary line), then
# the checker's self-test on the same good file.
benches/check_results.py "$smoke/bench.json" "$smoke/compare/ssecast.json" \
  "$smoke/compare/nchan.json" "$smoke/compare/axum.json" "$smoke/compare/pushpin.json" \
  || { cat "$smoke/bench/summary.txt"; exit 1; }
benches/check_results.py --self-test "$smoke/bench.json" | grep '^self-test'

