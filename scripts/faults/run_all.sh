#!/usr/bin/env bash
# Runs every fault script and prints the combined table. Exits 0 only if
# every check held. Three sizes:
#   scripts/faults/run_all.sh            short durations (churn 60 s, slow
#                                        consumers 15 s): about 4 minutes
#   CI_SIZE=1 scripts/faults/run_all.sh  what scripts/test.sh (CI) runs:
#                                        churn 45 s, slow consumers 10 s,
#                                        about 3 minutes (QUICK=1 is the same)
#   FULL=1 scripts/faults/run_all.sh     each script's own full size (churn
#                                        5 min, slow consumers 20 s, 300 000
#                                        channels): about 8 minutes
#
# usage: scripts/faults/run_all.sh [--churn-duration S] [--slow-duration S]
#        [--channels N]
# Environment: SSECAST=/path/to/ssecast tests that binary instead of building
# the working tree; SKIP_BUILD=1 uses the binaries as they are; LOGDIR is
# where each script's output goes (default /tmp/ssecast-faults-logs).

set -u -o pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
CHURN=60 SLOW=15 CHANNELS=100000
if [[ ${CI_SIZE:-0} == 1 || ${QUICK:-0} == 1 ]]; then
    CHURN=45 SLOW=10
elif [[ ${FULL:-0} == 1 ]]; then
    CHURN=300 SLOW=20 CHANNELS=300000
fi
while [[ $# -gt 0 ]]; do
    case $1 in
        --churn-duration) CHURN=$2; shift 2 ;;
        --slow-duration) SLOW=$2; shift 2 ;;
        --channels) CHANNELS=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

RESULTS_FILE=$(mktemp /tmp/ssecast-faults-all.XXXXXX)
export RESULTS_FILE
trap 'rm -f "$RESULTS_FILE"' EXIT
LOGDIR=${LOGDIR:-/tmp/ssecast-faults-logs}
mkdir -p "$LOGDIR"

# Build once; the scripts then use the binaries as they are.
(cd "$DIR/../.." && if [[ -z ${SSECAST:-} && ${SKIP_BUILD:-0} != 1 ]]; then cargo build --release -q; fi) ||
    echo "warning: ssecast build failed; using the existing binary" >&2
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    cargo build --release -q --offline --manifest-path "$DIR/tools/faultkit/Cargo.toml" 2>/dev/null ||
        cargo build --release -q --manifest-path "$DIR/tools/faultkit/Cargo.toml" || exit 1
fi
export SKIP_BUILD=1

RUNS=(
    "slow_consumers.sh --duration $SLOW"
    "churn_soak.sh --duration $CHURN"
    "slowloris.sh"
    "fd_exhaustion.sh"
    "restart.sh"
    "half_closed.sh"
    "churn_channels.sh --channels $CHANNELS"
)
declare -A RC SECS
start_all=$(date +%s)
for r in "${RUNS[@]}"; do
    name=${r%% *}
    name=${name%.sh}
    t0=$(date +%s)
    echo "[$(date +%H:%M:%S)] run_all: $r" >&2
    # shellcheck disable=SC2086
    "$DIR"/$r >"$LOGDIR/$name.out" 2>&1
    RC[$name]=$?
    SECS[$name]=$(($(date +%s) - t0))
    tail -n 1 "$LOGDIR/$name.out" >&2
done

w1=8 w2=5 w3=8 w4=8
while IFS='|' read -r s c m e r; do
    ((${#s} > w1)) && w1=${#s}
    ((${#c} > w2)) && w2=${#c}
    ((${#m} > w3)) && w3=${#m}
    ((${#e} > w4)) && w4=${#e}
done <"$RESULTS_FILE"
((w3 > 60)) && w3=60
line() { printf "%-${w1}s  %-${w2}s  %-${w3}s  %-${w4}s  %s\n" "$@"; }
echo
line script check measured expected result
line "$(printf %${w1}s | tr ' ' -)" "$(printf %${w2}s | tr ' ' -)" "$(printf %${w3}s | tr ' ' -)" "$(printf %${w4}s | tr ' ' -)" ------
while IFS='|' read -r s c m e r; do
    ((${#m} > 60)) && m="${m:0:57}..."
    line "$s" "$c" "$m" "$e" "$r"
done <"$RESULTS_FILE"

echo
fail=0
for r in "${RUNS[@]}"; do
    name=${r%% *}
    name=${name%.sh}
    if [[ ${RC[$name]} == 0 ]]; then res=PASS; else res=FAIL; fail=1; fi
    printf "%-16s %s  (%3ss, %d checks failed; full output %s)\n" "$name" "$res" "${SECS[$name]}" \
        "$(grep -c "^$name|.*|FAIL$" "$RESULTS_FILE")" "$LOGDIR/$name.out"
done
echo "total: $(($(date +%s) - start_all))s"
exit $fail
