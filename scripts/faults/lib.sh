# Shared by the scripts in scripts/faults. Source it; do not run it.
#
# - builds the hub (unless SKIP_BUILD=1, or SSECAST=/path/to/ssecast names a
#   binary to test) and copies the binary to a private work directory, so a
#   concurrent rebuild by someone else cannot swap it under a running test
#   (restart.sh starts it twice);
# - builds faultkit (scripts/faults/tools/faultkit), the client side;
# - starts the hub pinned to core 0 on 127.0.0.1:0 and reads its port from
#   the "listening on" log line; clients run pinned to core 1;
# - remembers every PID it starts and, on exit, stops exactly those;
# - collects checks into a results table; `finish` prints it and exits 0
#   only if every check held.
#
# No fixed lifetimes: a script waits for readiness (the port in the hub's
# log, a tool's --ready-file, a status field, a file or fd count) and ends
# each tool explicitly (stop_bg: SIGUSR1, after which the tool reports; a
# subscriber with --ack-file first reads until it has the publisher's last
# acknowledged id). Every tool's --duration is only a cap ($CAP), so that
# nothing runs unbounded when something is broken. Latency bounds are
# derived in the same run from a measured reference and from the kernel's
# accounting of how busy the hub and the clients were (faultkit busy); each
# check line says how.

set -u -o pipefail

FAULTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$FAULTS_DIR/../.." && pwd)
KIT_DIR=$FAULTS_DIR/tools/faultkit
KIT=$KIT_DIR/target/release/faultkit
HUB_CPU=${HUB_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SCRIPT=$(basename "$0" .sh)
WORK=$(mktemp -d "/tmp/ssecast-faults-$SCRIPT.XXXXXX")
PIDS=()
HUB_PID=""
HUB_LOG=""
PORT=""
ADDR=""
FAILS=0
ROWS=()
HUB_N=0
# Upper bound on any tool's lifetime (seconds); tools are ended explicitly.
CAP=${FAULTS_CAP:-300}

log() { echo "[$(date +%H:%M:%S)] $SCRIPT: $*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    if [[ ${KEEP_WORK:-0} == 1 ]]; then
        log "work files kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { # PID: no longer ours to clean up (it was waited for)
    local p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

build() {
    local src=${SSECAST:-$ROOT/target/release/ssecast}
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        if [[ -z ${SSECAST:-} ]]; then
            log "building ssecast (release)"
            (cd "$ROOT" && cargo build --release -q) || log "warning: ssecast build failed; using the existing binary"
        fi
        log "building faultkit"
        cargo build --release -q --offline --manifest-path "$KIT_DIR/Cargo.toml" 2>/dev/null ||
            cargo build --release -q --manifest-path "$KIT_DIR/Cargo.toml" || die "faultkit build failed"
    fi
    [[ -x $src ]] || die "no hub binary at $src"
    [[ -x $KIT ]] || die "no faultkit binary at $KIT"
    cp "$src" "$WORK/ssecast"
    HUB=$WORK/ssecast
    log "hub binary: $src ($("$HUB" --version 2>/dev/null), sha256 $(sha256sum "$HUB" | cut -c1-12))"
}

# start_hub [--nofile N] [--port P] -- HUB FLAGS...
start_hub() {
    local nofile="" port=0
    while [[ $# -gt 0 ]]; do
        case $1 in
            --nofile) nofile=$2; shift 2 ;;
            --port) port=$2; shift 2 ;;
            --) shift; break ;;
            *) break ;;
        esac
    done
    HUB_N=$((HUB_N + 1))
    HUB_LOG=$WORK/hub-$HUB_N.log
    local pre=()
    [[ -n $nofile ]] && pre=(prlimit "--nofile=$nofile:$nofile")
    "${pre[@]}" taskset -c "$HUB_CPU" "$HUB" --bind "127.0.0.1:$port" --log-level info \
        --access-log false "$@" 2>"$HUB_LOG" &
    HUB_PID=$!
    PIDS+=("$HUB_PID")
    local i
    for ((i = 0; i < 200; i++)); do
        if grep -q 'listening on' "$HUB_LOG" 2>/dev/null; then
            PORT=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$HUB_LOG" | head -1 | sed 's/.*://')
            ADDR=127.0.0.1:$PORT
            return 0
        fi
        kill -0 "$HUB_PID" 2>/dev/null || { cat "$HUB_LOG" >&2; die "hub exited at start"; }
        sleep 0.05
    done
    die "hub did not report listening (log: $HUB_LOG)"
}

# stop_hub [SIGNAL] -> sets HUB_RC
stop_hub() {
    local sig=${1:-TERM} i
    [[ -n $HUB_PID ]] || return 0
    kill -"$sig" "$HUB_PID" 2>/dev/null
    for ((i = 0; i < 300; i++)); do
        kill -0 "$HUB_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$HUB_PID" 2>/dev/null && kill -9 "$HUB_PID" 2>/dev/null
    wait "$HUB_PID" 2>/dev/null
    HUB_RC=$?
    forget_pid "$HUB_PID"
    HUB_PID=""
}

kit() { taskset -c "$CLIENT_CPU" "$KIT" "$@"; }

# bg OUTFILE ARGS...: a faultkit process in the background; its PID in BG_PID.
bg() {
    local out=$1
    shift
    taskset -c "$CLIENT_CPU" "$KIT" "$@" >"$out" 2>"$out.err" &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

# bg_prio OUTFILE ARGS...: like bg, at nice -10 where allowed: the clients
# that measure latency must not be delayed by the load generators sharing
# their core, or they would measure the client side, not the hub.
bg_prio() {
    local out=$1 pre=()
    shift
    nice -n -10 true 2>/dev/null && pre=(nice -n -10)
    "${pre[@]}" taskset -c "$CLIENT_CPU" "$KIT" "$@" >"$out" 2>"$out.err" &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

# stop_bg PID...: the explicit end: SIGUSR1 to each (the tool stops, reports
# and exits), then waits for them; returns the last non-zero status.
stop_bg() {
    local p rc=0
    for p in "$@"; do kill -USR1 "$p" 2>/dev/null; done
    for p in "$@"; do wait_bg "$p" || rc=$?; done
    return $rc
}

# wait_until SECONDS CMD...: runs CMD every 50 ms until it succeeds (0) or
# SECONDS pass (1).
wait_until() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 20; i++)); do
        "$@" && return 0
        sleep 0.05
    done
    return 1
}

# start_busy FILE label=PID,...: faultkit busy samples how busy those
# processes are (CPU and run-queue wait per 100 ms window, one timer tick)
# until stop_bg "$BUSY_PID"; returns once it samples.
start_busy() {
    bg "$1" busy --pids "$2" --interval-ms 10 --window-ms 100 --duration "$CAP" --ready-file "$1.ready"
    BUSY_PID=$BG_PID
    wait_file "$1.ready" 10 || die "busy sampler did not start"
}

# ksoftirqd_pids: "ksi0=PID,ksi1=PID" for the kernel threads that process
# loopback packets when softirq work is deferred (under load their run-queue
# wait delays every packet, accounted to neither the hub nor a client).
ksoftirqd_pids() {
    local c p out=()
    for ((c = 0; c < $(nproc); c++)); do
        p=$(pgrep -x "ksoftirqd/$c" | head -1)
        [[ -n $p ]] && out+=("ksi$c=$p")
    done
    (IFS=,; echo "${out[*]}")
}

# fds_at_most N: the hub has at most N open descriptors (for wait_until).
fds_at_most() { (($(fd_count) <= $1)); }

# wait_bg PID: waits for a background faultkit; returns its status.
wait_bg() {
    wait "$1"
    local rc=$?
    forget_pid "$1"
    return $rc
}

# Helpers run on the clients' core too, so the hub has core 0 to itself
# (its run-queue wait, measured by faultkit busy, is then other people's).
status_json() { taskset -c "$CLIENT_CPU" curl -s -m 5 "http://$ADDR/events/status"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$HUB_PID/status" 2>/dev/null; }
fd_count() { ls "/proc/$HUB_PID/fd" 2>/dev/null | wc -l; }
# utime + stime of the hub, in clock ticks (1/100 s).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$HUB_PID/stat" 2>/dev/null; }
CLK_TCK=$(getconf CLK_TCK)

# cpu_pct SECONDS: the hub's CPU use over that many seconds, in percent.
cpu_pct() {
    local a b
    a=$(cpu_ticks)
    sleep "$1"
    b=$(cpu_ticks)
    awk -v a="$a" -v b="$b" -v s="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (b - a) * 100 / hz / s }'
}

# j FILE FIELD: a field of a faultkit JSON result.
j() { jq -r ".$2" "$1"; }

# Wait until a file exists and is non-empty (a faultkit --ready-file).
wait_file() { # FILE SECONDS
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        [[ -s $1 ]] && return 0
        sleep 0.05
    done
    return 1
}

# Wait until the status document satisfies a jq condition.
wait_status() { # JQ_CONDITION SECONDS
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        status_json | jq -e "$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# check NAME MEASURED EXPECTATION AWK_CONDITION
# The condition sees the measured value as v, e.g. 'v == 0', 'v <= 50'.
check() {
    local name=$1 v=$2 want=$3 cond=$4 ok
    if [[ -n $v && $v != null ]] && awk -v v="$v" "BEGIN { exit !($cond) }" 2>/dev/null; then
        ok=PASS
    else
        ok=FAIL
        FAILS=$((FAILS + 1))
    fi
    ROWS+=("$name|$v|$want|$ok")
    if [[ -n ${RESULTS_FILE:-} ]]; then
        echo "$SCRIPT|$name|$v|$want|$ok" >>"$RESULTS_FILE"
    fi
}

# note NAME VALUE: a measured figure that is reported, not asserted.
note() {
    ROWS+=("$1|$2|-|info")
    if [[ -n ${RESULTS_FILE:-} ]]; then
        echo "$SCRIPT|$1|$2|-|info" >>"$RESULTS_FILE"
    fi
}

print_table() {
    local r w1=5 w2=8 w3=8
    for r in "${ROWS[@]}"; do
        IFS='|' read -r a b c d <<<"$r"
        ((${#a} > w1)) && w1=${#a}
        ((${#b} > w2)) && w2=${#b}
        ((${#c} > w3)) && w3=${#c}
    done
    printf "\n== %s ==\n" "$SCRIPT"
    printf "%-${w1}s  %-${w2}s  %-${w3}s  %s\n" check measured expected result
    printf "%-${w1}s  %-${w2}s  %-${w3}s  %s\n" "$(printf %${w1}s | tr ' ' -)" "$(printf %${w2}s | tr ' ' -)" "$(printf %${w3}s | tr ' ' -)" ------
    for r in "${ROWS[@]}"; do
        IFS='|' read -r a b c d <<<"$r"
        printf "%-${w1}s  %-${w2}s  %-${w3}s  %s\n" "$a" "$b" "$c" "$d"
    done
}

finish() {
    print_table
    if ((FAILS == 0)); then
        printf "%s: PASS\n" "$SCRIPT"
        exit 0
    fi
    printf "%s: FAIL (%d check(s) did not hold; work files kept in %s)\n" "$SCRIPT" "$FAILS" "$WORK"
    KEEP_WORK=1
    exit 1
}

# The hub log's warnings and errors (count of lines matching a pattern).
log_count() { grep -c -- "$1" "$HUB_LOG" 2>/dev/null || true; }

# start_sampler FILE [INTERVAL]: every INTERVAL seconds (default 1) one line
# "seconds rss_kb fds cpu_ticks sendq_est sendq_finwait finwait_n sendq_max
# tcp_mem_kb" for the hub, until stop_sampler.
start_sampler() {
    local file=$1 every=${2:-1} pid=$HUB_PID
    SAMPLER_T0=$(date +%s.%N)
    (
        t0=$(date +%s.%N)
        while kill -0 "$pid" 2>/dev/null; do
            t=$(date +%s.%N)
            r=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)
            f=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
            c=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null)
            [[ -n $r ]] && echo "$(awk -v a="$t0" -v b="$t" 'BEGIN {printf "%.1f", b - a}') $r $f $c $(sendq) $(tcp_mem_kb)"
            sleep "$every"
        done
    ) >"$file" &
    SAMPLER_PID=$!
    PIDS+=("$SAMPLER_PID")
    taskset -cp "$CLIENT_CPU" "$SAMPLER_PID" >/dev/null 2>&1
}
stop_sampler() {
    [[ -n ${SAMPLER_PID:-} ]] || return 0
    kill "$SAMPLER_PID" 2>/dev/null
    wait "$SAMPLER_PID" 2>/dev/null
    forget_pid "$SAMPLER_PID"
    SAMPLER_PID=""
}

# series FILE COLUMN: the column as a space-separated list (for the report);
# at most 20 values: every k-th sample, and always the last.
series() {
    awk -v c="$2" '{v[NR] = $c} END {k = int((NR + 19) / 20); if (k < 1) k = 1
        for (i = 1; i <= NR; i += k) printf "%s%s", (i > 1 ? " " : ""), v[i]
        if ((NR - 1) % k != 0) printf " %s", v[NR]}' "$1"
}

# sendq: kernel send queues of the hub's sockets (bytes the kernel holds for
# them): "established_total finwait_total finwait_count max_one", from ss.
sendq() {
    ss -tnH "( sport = :$PORT )" 2>/dev/null | awk '
        { q = $3; if (q > max) max = q
          if ($1 == "ESTAB") est += q
          else if ($1 ~ /FIN-WAIT|LAST-ACK|CLOSING/) { fw += q; n++ } }
        END { printf "%d %d %d %d\n", est, fw, n, max }'
}
# Kernel memory of all TCP sockets on the box, in KiB (shared with others).
tcp_mem_kb() { awk -v p="$(getconf PAGESIZE)" '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1) * p / 1024}' /proc/net/sockstat; }
