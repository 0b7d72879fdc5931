#!/usr/bin/env bash
# The test command (what CI runs): formatting, lints as errors, every Rust
# test, then the deployment tests with real programs (nginx, Chromium, the
# npm eventsource client, Prometheus' parser, systemd-analyze), which
# install what they need and fail if anything is missing.
#
#   scripts/test.sh           everything
#   SKIP_DEPLOY=1 scripts/test.sh   only the Rust side (for a quick local run)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets --no-fail-fast

if [ "${SKIP_DEPLOY:-}" = 1 ]; then
  if [ "${CI:-}" = true ]; then
    echo "SKIP_DEPLOY is not allowed in CI" >&2
    exit 1
  fi
  echo "== deployment tests skipped (SKIP_DEPLOY=1)"
  exit 0
fi
echo "== deployment tests"
tests/deploy/run.sh
