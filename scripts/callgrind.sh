#!/usr/bin/env bash
# Instructions per delivery, counted by valgrind's callgrind (exact, unlike
# timings, so two builds can be compared on a busy machine). The hub runs
# under callgrind while sse-load connects $SUBS subscribers and publishes
# events from one publisher at a fixed rate (so that each event is fanned out
# in a loop turn of its own: no batching that would depend on timing); two
# runs that differ only in the number of events give
#     (Ir(run with $EVENTS_HI) - Ir(run with $EVENTS_LO)) / (extra deliveries)
# so start-up, connects and shutdown cancel out and what is left is the cost of
# publishing, fanning out and writing one more event to every subscriber.
#
#   scripts/callgrind.sh                       # builds, prints the figure
#   SSECAST=/path/to/ssecast SKIP_BUILD=1 scripts/callgrind.sh
# Output: one line "callgrind: <instructions>/delivery ..." and, with OUT set,
# the callgrind files there.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/ssecast-callgrind.XXXXXX)}
mkdir -p "$OUT"
# shellcheck source=../benches/lib/common.sh
source "$ROOT/benches/lib/common.sh"
SUBS=${SUBS:-1000}
EVENTS_LO=${EVENTS_LO:-100}
EVENTS_HI=${EVENTS_HI:-300}
RATE=${RATE:-20}
command -v valgrind >/dev/null || die "valgrind is needed (apt-get install valgrind)"
build_harness
build_ssecast

total_ir() { # FILE: the "totals:" (or "summary:") line of a callgrind out file
    awk '/^(totals|summary):/ { print $2; exit }' "$1"
}

run_one() { # EVENTS
    local events=$1 pid file
    next_port
    file="$OUT/callgrind.$events.out"
    valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$SSECAST" --bind "127.0.0.1:$PORT" --log-level warn --shutdown-grace 5 \
        2>>"$OUT/valgrind.log" &
    pid=$!
    # Under valgrind the hub starts slowly: wait up to 60 s for its port.
    local i
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || die "ssecast under valgrind exited (see $OUT/valgrind.log)"
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    "$HARNESS" run --server "127.0.0.1:$PORT" --subscribers "$SUBS" --events "$events" \
        --rate "$RATE" --publishers 1 --drain-timeout 60 --duration 300 --label "callgrind-$events" \
        >"$OUT/load.$events.json" 2>"$OUT/load.$events.err" \
        || die "sse-load failed (see $OUT/load.$events.err)"
    kill -TERM "$pid"
    wait "$pid" || true
    local ir deliveries
    ir=$(total_ir "$file")
    deliveries=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["delivery"]["deliveries"])' "$OUT/load.$events.json")
    echo "$ir $deliveries"
}

read -r ir_lo d_lo < <(run_one "$EVENTS_LO")
read -r ir_hi d_hi < <(run_one "$EVENTS_HI")
[[ $d_hi -gt $d_lo ]] || die "no extra deliveries ($d_lo vs $d_hi)"
python3 - "$ir_lo" "$d_lo" "$ir_hi" "$d_hi" <<'EOF'
import sys
ir_lo, d_lo, ir_hi, d_hi = map(int, sys.argv[1:])
per = (ir_hi - ir_lo) / (d_hi - d_lo)
print(f"callgrind: {per:.0f} instructions/delivery "
      f"(Ir {ir_lo} at {d_lo} deliveries, {ir_hi} at {d_hi})")
EOF
