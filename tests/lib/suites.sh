# Shared by the suite runners (tests/deploy/run.sh, tests/conformance/run.sh):
# npm ci in a folder, the release binary, running one suite under a time
# limit, and the closing count. Source it after setting HERE and REPO; it
# defines die() unless the runner has one.

type die >/dev/null 2>&1 || die() { echo "$(basename "$HERE"): $*" >&2; exit 1; }

# npm ci in $HERE from its committed lock file; npm's noise only on failure.
npm_ci() {
  local npm_log
  npm_log=$(mktemp)
  if ! (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) > "$npm_log" 2>&1; then
    grep -v 'Unknown user config' "$npm_log" >&2 || true
    rm -f "$npm_log"
    die "npm ci in $HERE failed"
  fi
  rm -f "$npm_log"
}

# Builds the release binary unless SSECAST_BIN names one; exports SSECAST_BIN.
release_binary() {
  if [ -z "${SSECAST_BIN:-}" ]; then
    echo "== cargo build --release"
    (cd "$REPO" && cargo build --release --quiet)
    export SSECAST_BIN="$REPO/target/release/ssecast"
  fi
  [ -x "$SSECAST_BIN" ] || die "no ssecast binary at $SSECAST_BIN"
  echo "== using $SSECAST_BIN ($("$SSECAST_BIN" --version 2>&1 | head -1))"
}

passed=0
failed=0
failed_names=()

# run NAME LIMIT COMMAND...: one suite, in $HERE, killed after LIMIT seconds.
run() {
  local name=$1 limit=$2
  shift 2
  echo
  echo "== $name"
  local t0=$SECONDS rc=0
  (cd "$HERE" && timeout --kill-after=10 "$limit" "$@") || rc=$?
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    echo "== $name: ok ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    if [ $rc -eq 124 ]; then
      echo "== $name: TIMED OUT after ${limit} s"
    else
      echo "== $name: FAILED (exit $rc, $((SECONDS - t0)) s)"
    fi
  fi
}

# finish LABEL: the closing line ("LABEL: N passed, N failed"); fails if any did.
finish() {
  echo
  [ $failed -eq 0 ] || echo "failed suites: ${failed_names[*]}"
  echo "$1: $passed passed, $failed failed"
  [ $failed -eq 0 ]
}
