#!/usr/bin/env bash
# Fuzzes the parsers with cargo-fuzz (libFuzzer): builds the targets in fuzz/,
# then runs each one alone, in one process (-jobs=1), for SECONDS (default 60).
# Prints executions, speed, corpus growth and findings per target; exits 1 if
# any target found a crash (artifacts under fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh [SECONDS]          all targets
#   FUZZ_TARGETS="request" scripts/fuzz.sh 300
#   scripts/fuzz.sh --replay           run every committed seed once (CI; no cargo-fuzz)
#
# Toolchain: a nightly toolchain is used when installed; otherwise stable.
# With `-s none` (used here) cargo-fuzz passes only stable `-C` flags, so
# plain stable builds it; sanitizers (`-s address`) need nightly, or stable
# with RUSTC_BOOTSTRAP=1. Install the tool with `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
fuzz_dir=$PWD
read -ra targets <<< "${FUZZ_TARGETS:-request publish_body sse_roundtrip channel_log token outbound_response resp}"

# --replay: the regression half of fuzzing. The targets are built as plain
# binaries (stable, no coverage instrumentation, debug assertions on) and each
# runs its committed seeds once (corpus/<target>/seed-*: hand-written inputs
# and every input a finding was fixed for). Any panic or failed assertion
# fails the run.
if [[ ${1:-} == --replay ]]; then
    echo "== building the fuzz targets (cargo build, stable, no instrumentation)"
    cargo build -q --bins
    failed=0
    for t in "${targets[@]}"; do
        seeds=("$fuzz_dir/corpus/$t"/seed-*)
        [[ -e ${seeds[0]} ]] || { echo "no seeds for $t" >&2; exit 1; }
        if out=$("$fuzz_dir/target/debug/$t" "${seeds[@]}" 2>&1); then
            echo "ok - $t: ${#seeds[@]} seeds replayed"
        else
            echo "FAIL - $t:"; echo "$out" | grep -v '^Running:\|^Executed' | tail -20
            failed=1
        fi
    done
    exit "$failed"
fi

secs="${1:-60}"
[[ "$secs" =~ ^[0-9]+$ && "$secs" -gt 0 ]] || { echo "usage: $0 [SECONDS] | --replay" >&2; exit 2; }

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "no nightly toolchain: using the default (stable) one"
    fuzz=(cargo fuzz)
fi
triple=$(rustc -vV | sed -n 's/^host: //p')

# Safe Rust: no sanitizer (several times faster); debug assertions and
# overflow checks stay on (cargo-fuzz's default).
echo "== building: ${fuzz[*]} build -s none <target>"
for t in "${targets[@]}"; do
    CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" "${fuzz[@]}" build -s none "$t" >/dev/null 2>>build.log \
        || { cat build.log >&2; rm -f build.log; exit 2; }
done
rm -f build.log

failed=0
printf '%-14s %12s %10s %8s %s\n' target execs execs/s "new" findings
for t in "${targets[@]}"; do
    bin="$fuzz_dir/target/$triple/release/$t"
    work="$fuzz_dir/artifacts/$t"
    mkdir -p "$work" "$fuzz_dir/corpus/$t"
    rm -f "$work/fuzz-0.log"
    stamp="$work/.started"
    touch "$stamp"
    # -jobs=1: one worker process, its output in $work/fuzz-0.log.
    (cd "$work" && "$bin" "$fuzz_dir/corpus/$t" \
        -jobs=1 -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=4096 -print_final_stats=1 -artifact_prefix="$work/") \
        >"$work/driver.log" 2>&1 || true
    log="$work/fuzz-0.log"
    [[ -f "$log" ]] || log="$work/driver.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    added=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
    mapfile -t found < <(find "$work" -maxdepth 1 -newer "$stamp" \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
    if grep -qE '^==[0-9]+== ERROR: libFuzzer|deadly signal|panicked at' "$log" && [[ ${#found[@]} -eq 0 ]]; then
        found=("(crash in $log, no artifact)")
    fi
    printf '%-14s %12s %10s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${added:-?}" \
        "$([[ ${#found[@]} -eq 0 ]] && echo none || echo "${#found[@]}")"
    if [[ ${#found[@]} -gt 0 ]]; then
        failed=1
        for f in "${found[@]}"; do echo "    $f"; done
        grep -m1 -A3 'panicked at' "$log" | sed 's/^/    /' || true
        echo "    reproduce: ${fuzz[*]} run -s none $t ${found[0]}"
    fi
done
exit "$failed"
