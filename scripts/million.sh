#!/usr/bin/env bash
# As many concurrent subscribers as this machine holds (aim: 1,000,000),
# spread over as many ssecast processes sharing one port (--reuse-port, Redis
# mode, one private redis-server) as the 20,000 open-file limit needs, and a
# load client of many worker processes over >= 36 loopback source addresses
# (127.0.0.2 ...; about 28k ephemeral ports each; 80 by default, see
# SOURCES below). Not part of CI.
#
# The client ramps up one worker (PER_WORKER subscribers) at a time and stops
# by itself once MemAvailable is under MIN_AVAILABLE_MIB (4 GiB), at TARGET,
# at a step where subscribers failed, or when a slow step would leave no time
# for the hold and the publishes (it says which). Then it holds them
# all for HOLD seconds with heartbeats on (idle CPU), publishes EVENTS events
# RATE per second through the shared port (any process: Redis carries them
# to every other) and measures the time until every subscriber had each.
#
# Reports (stdout, and $OUT/summary.md + $OUT/run.json): subscribers
# reached and what stopped the ramp, RSS per subscriber (sum of the hubs'
# RSS / subscribers, and the growth / subscribers), kernel memory per
# subscriber (/proc/meminfo Slab and /proc/net/sockstat TCP mem before and
# after: both ends of each connection are on this machine), the client's
# RSS, idle CPU with heartbeats, the time for an event to reach all.
#
# Bounded: MAX_SECONDS (1200) for everything, a watchdog that ends the load
# client if MemAvailable falls under HARD_FLOOR_MIB (2 GiB) or time runs out;
# every process it started is ended by its PID on exit.
#
#   scripts/million.sh
#   TARGET=200 HUBS=2 PER_WORKER=50 scripts/million.sh   # a tiny dry run
#   REUSE_PORT=0 scripts/million.sh   # each hub on its own port (SHARED+i),
#                                     # the client spreading over them
#   SKIP_BUILD=1 SSECAST=path scripts/million.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/benches/results/million-$STAMP}
# shellcheck source=../benches/lib/common.sh
source "$ROOT/benches/lib/common.sh"

TARGET=${TARGET:-1000000}
PER_HUB=${PER_HUB:-19000}           # mean per hub; the kernel's spread adds ~1 %, the cap is 19,680
HUBS=${HUBS:-$(((TARGET + PER_HUB - 1) / PER_HUB))}
PER_WORKER=${PER_WORKER:-18000}
# 80 source addresses: about 12,500 connections each at 1,000,000. With 40
# (25,000 each) connect() stalled at ~565k: once one address has used half
# of its 28,232 ephemeral ports, the kernel walks that whole parity half in
# __inet_check_established before trying the other parity
# (benches/results/redis-20261201/README.md).
SOURCES=${SOURCES:-80}
MIN_AVAILABLE_MIB=${MIN_AVAILABLE_MIB:-4096}
HARD_FLOOR_MIB=${HARD_FLOOR_MIB:-2048}
MAX_SECONDS=${MAX_SECONDS:-1200}
HEARTBEAT=${HEARTBEAT:-15}
HOLD=${HOLD:-$((HEARTBEAT * 3))}
EVENTS=${EVENTS:-3}
RATE=${RATE:-0.1}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-64}
# REUSE_PORT=0 HUB_REDIS=0 HUBS=1: a dry run with a hub that has neither.
# (REUSE_PORT=0 with Redis: hub i on its own port; see below.)
REUSE_PORT=${REUSE_PORT:-1}
HUB_REDIS=${HUB_REDIS:-1}
START=$(date +%s)

HUB_PIDS=()
ADMIN_PORTS=()
LOAD_PID=""
WATCH_PID=""
TAIL_PID=""

cleanup() {
    local p kids
    [[ -n $TAIL_PID ]] && { kill -TERM "$TAIL_PID" 2>/dev/null || true; }
    if [[ -n $WATCH_PID ]]; then
        kill -TERM "$WATCH_PID" 2>/dev/null || true
        wait "$WATCH_PID" 2>/dev/null || true
    fi
    if [[ -n $LOAD_PID ]] && kill -0 "$LOAD_PID" 2>/dev/null; then
        # Its workers exit by themselves when its pipes close; end them by PID too.
        kids=$(ps --ppid "$LOAD_PID" -o pid= 2>/dev/null || true)
        kill -TERM "$LOAD_PID" 2>/dev/null || true
        for p in $kids; do kill -TERM "$p" 2>/dev/null || true; done
        wait "$LOAD_PID" 2>/dev/null || true
    fi
    for p in "${HUB_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${HUB_PIDS[@]}"; do
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    HUB_PIDS=()
    stop_redis
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT/status"
build_harness
build_ssecast

machine_reading() { # NAME: meminfo, sockstat, conntrack, file handles
    {
        grep -E '^(MemTotal|MemAvailable|Slab|SReclaimable|SUnreclaim):' /proc/meminfo
        cat /proc/net/sockstat
        echo "nf_conntrack_count $(cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo none)"
        echo "file-nr $(cat /proc/sys/fs/file-nr)"
    } >"$OUT/machine-$1.txt"
}
machine_reading start

# Redis for the hubs (core $REDIS_CPU, no persistence).
[[ $HUB_REDIS == 1 ]] && start_redis
next_port
SHARED=$PORT
# REUSE_PORT=1: every hub on $SHARED (--reuse-port), its own figures on an
# --admin-bind address. REUSE_PORT=0: hub i on its own port SHARED+i (status
# there too), the client spreading its subscribers over them (--sub-servers);
# publishes go to the first, Redis carries them to the others.
NEXT_PORT=$((SHARED + HUBS))
log "starting $HUBS hub processes from 127.0.0.1:$SHARED (reuse-port $REUSE_PORT, Redis $HUB_REDIS), core $SERVER_CPU, heartbeat ${HEARTBEAT}s"
SUB_SERVERS=()
for ((i = 0; i < HUBS; i++)); do
    flags=(--log-level warn --heartbeat-interval "$HEARTBEAT")
    if [[ $REUSE_PORT == 1 ]]; then
        port=$SHARED
        admin=$((SHARED + 3000 + i))
        flags+=(--bind "127.0.0.1:$port" --reuse-port --admin-bind "127.0.0.1:$admin")
    else
        port=$((SHARED + i))
        admin=$port
        flags+=(--bind "127.0.0.1:$port")
    fi
    [[ $HUB_REDIS == 1 ]] && flags+=(--redis-url "redis://127.0.0.1:$REDIS_PORT")
    taskset -c "$SERVER_CPU" "$SSECAST" "${flags[@]}" 2>>"$OUT/hubs.log" &
    HUB_PIDS+=($!)
    ADMIN_PORTS+=("$admin")
    SUB_SERVERS+=("127.0.0.1:$port")
    wait_port "$admin" "$!" || die "hub $i did not listen on $admin (see $OUT/hubs.log)"
    if [[ $HUB_REDIS == 1 ]]; then wait_redis_up "$admin"; fi
done
[[ $REUSE_PORT == 1 ]] && SUB_SERVERS=("127.0.0.1:$SHARED")
PIDS=$(IFS=,; echo "${HUB_PIDS[*]}")
log "hubs: ${HUB_PIDS[*]}"

# The watchdog: ends the load client when memory or time runs out, and keeps
# the hubs' status documents from the moment they held the most subscribers.
watch_run() {
    local best=0 total avail now a i
    while sleep 2; do
        now=$(date +%s)
        avail=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
        if ((avail < HARD_FLOOR_MIB)); then
            echo "watchdog: MemAvailable ${avail} MiB under ${HARD_FLOOR_MIB} MiB at $((now - START))s: ending the load client" >>"$OUT/watchdog.txt"
            kill -TERM "$LOAD_PID" 2>/dev/null || true
        fi
        if ((now - START > MAX_SECONDS)); then
            echo "watchdog: ${MAX_SECONDS}s reached: ending the load client" >>"$OUT/watchdog.txt"
            kill -TERM "$LOAD_PID" 2>/dev/null || true
        fi
        total=0
        i=0
        for a in "${ADMIN_PORTS[@]}"; do
            curl -s -m 2 "http://127.0.0.1:$a/events/status" >"$OUT/status/.now-$i.json" 2>/dev/null || true
            total=$((total + $(grep -o '"subscribers":[0-9]*' "$OUT/status/.now-$i.json" | head -n 1 | cut -d: -f2 || echo 0)))
            i=$((i + 1))
        done
        if ((total > best)); then
            best=$total
            for ((i = 0; i < ${#ADMIN_PORTS[@]}; i++)); do
                mv -f "$OUT/status/.now-$i.json" "$OUT/status/hub-$i.json"
            done
            machine_reading peak
            echo "$best subscribers at $((now - START))s, MemAvailable ${avail} MiB" >"$OUT/status/peak.txt"
        fi
    done
}
LOAD_PID=""
left=$((MAX_SECONDS - ($(date +%s) - START) - 120))
((left > 60)) || die "no time left for the load"
: >"$OUT/run.err"
taskset -c "$CLIENT_CPU" "$HARNESS" run --server "127.0.0.1:$SHARED" --server-pid "$PIDS" \
    --sub-servers "$(IFS=,; echo "${SUB_SERVERS[*]}")" \
    ${REDIS_PID:+--aux-pid "$REDIS_PID"} --label million \
    --ramp --min-available-mib "$MIN_AVAILABLE_MIB" --subscribers "$TARGET" --per-worker "$PER_WORKER" \
    --sources "$SOURCES" --connect-concurrency "$CONNECT_CONCURRENCY" --max-failures "$TARGET" \
    --settle 5 --hold "$HOLD" --events "$EVENTS" --rate "$RATE" --publishers 1 --drain-timeout 15 \
    --duration "$left" >"$OUT/run.json" 2>"$OUT/run.err" &
LOAD_PID=$!
watch_run &
WATCH_PID=$!
tail -f "$OUT/run.err" --pid "$LOAD_PID" >&2 &
TAIL_PID=$!
rc=0
wait "$LOAD_PID" || rc=$?
((rc == 0)) || log "the load client exited $rc"
LOAD_PID=""
wait "$TAIL_PID" 2>/dev/null || true
TAIL_PID=""
machine_reading end
rm -f "$OUT"/status/.now-*.json

python3 - "$OUT" "$HUBS" "$REDIS_DESC" "$HEARTBEAT" "$(git -C "$ROOT" rev-parse --short HEAD)" <<'PY' | tee "$OUT/summary.md"
import glob, json, os, sys
out, hubs, redis, hb, rev = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
try:
    r = json.loads(open(os.path.join(out, "run.json")).readline())
except (OSError, ValueError) as e:
    print(f"no result from the load client: {e}")
    sys.exit(0)
ramp = r.get("ramp") or {}
samples = ramp.get("samples") or []
last = samples[-1] if samples else {}
first = samples[0] if samples else {}
subs = r.get("connect", {}).get("ok") or 0
per = ramp.get("per_subscriber") or {}
hold = r.get("hold") or {}
d = r.get("delivery") or {}
lat = d.get("latency_ns") or {}
status = []
for f in sorted(glob.glob(os.path.join(out, "status", "hub-*.json"))):
    try:
        status.append(json.load(open(f)))
    except ValueError:
        pass
counts = [s.get("subscribers", 0) for s in status]
def mib(kb):
    return f"{(kb or 0) / 1024:.0f} MiB"
rows = [
    ("concurrent subscribers reached", f"{subs:,} (target {r.get('config', {}).get('subscribers'):,}, hub processes {hubs})"),
    ("what stopped the ramp", ramp.get("stopped_by")),
    ("per hub at the peak (status documents)", f"min {min(counts) if counts else 'n/a'}, max {max(counts) if counts else 'n/a'}, sum {sum(counts):,}" if counts else "n/a"),
    ("hub RSS per subscriber: sum of hub RSS / subscribers", f"{(last.get('server_rss_kb') or 0) * 1024 / subs:.0f} B (sum {mib(last.get('server_rss_kb'))})" if subs else "n/a"),
    ("hub RSS growth per subscriber", f"{per.get('server_rss_bytes')} B"),
    ("kernel slab per subscriber (both ends)", f"{per.get('kernel_slab_bytes_both_ends')} B (Slab {mib(first.get('slab_kb'))} -> {mib(last.get('slab_kb'))})"),
    ("kernel TCP buffer memory per subscriber (sockstat mem, both ends)", f"{per.get('kernel_tcp_buffer_bytes_both_ends')} B"),
    ("client RSS per subscriber", f"{per.get('client_rss_bytes')} B"),
    ("MemAvailable drop per subscriber (everything)", f"{per.get('mem_available_drop_bytes')} B ({mib(first.get('mem_available_kb'))} -> {mib(last.get('mem_available_kb'))})"),
    (f"idle CPU with heartbeats every {hb}s (all hubs, {hold.get('seconds', 0):.0f}s)", f"{hold.get('server_cpu_pct')} % of a core; {hold.get('heartbeats')} heartbeats, {hold.get('heartbeats_per_subscriber_per_min')} per subscriber per minute; disconnects {hold.get('disconnects')}; cores busy {hold.get('cores_busy_pct')}"),
    ("events published / acknowledged", f"{r.get('publish', {}).get('events_attempted')} / {r.get('publish', {}).get('events_acked')} ({r.get('publish', {}).get('errors')})"),
    ("time for an event to reach all (slowest delivery of any event)", f"{(lat.get('max') or 0) / 1e6:.0f} ms (p50 {(lat.get('p50') or 0) / 1e6:.0f} ms, p99 {(lat.get('p99') or 0) / 1e6:.0f} ms over {lat.get('count')} deliveries)"),
    ("deliveries: expected / unique / lost / dup / out of order", f"{d.get('expected')} / {d.get('unique')} / {d.get('lost')} / {d.get('duplicated')} / {d.get('out_of_order')}; drained {d.get('drained')}; client saturated {d.get('client_saturated')}"),
    ("hub CPU during the publish phase", f"{d.get('server_cpu_pct')} %; Redis {d.get('aux_cpu_pct')} %; cores busy {d.get('cores_busy_pct')}"),
]
print(f"# million.sh, commit {rev}\n")
print(f"Redis: {redis or 'none'}\n")
print("| | |\n|---|---|")
for k, v in rows:
    print(f"| {k} | {v} |")
print("\nRamp (subscribers, MemAvailable, Slab, TCP mem pages, hub RSS, client RSS):\n")
for s in samples:
    print(f"- {s.get('subscribers')}: {mib(s.get('mem_available_kb'))}, slab {mib(s.get('slab_kb'))}, tcp mem {s.get('tcp_mem_pages')}, hubs {mib(s.get('server_rss_kb'))}, client {mib(s.get('client_rss_kb'))}")
wd = os.path.join(out, "watchdog.txt")
if os.path.exists(wd):
    print("\nWatchdog:\n\n" + open(wd).read())
PY
log "results: $OUT/summary.md (run.json, status/, machine-*.txt)"
