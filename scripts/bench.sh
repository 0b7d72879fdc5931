#!/usr/bin/env bash
# ssecast benchmarks on this machine: density at 10,000 and 19,000 subscribers,
# connect rate, the hub's CPU per connect with and without token auth and
# the verify cost of one token, fan-out throughput (8 publishers, and with batches), latency of
# one event to 10,000 subscribers at 5 events/s, idle cost at 19,000 with
# heartbeats, channel churn (publishes to ever-new channels: fresh channels per
# second and RSS over the run), the raw-write baseline, the hub's CPU per
# connect with a signed token vs without, and with forward auth
# (--subscribe-auth-url) when every connect asks the application (cache off)
# and when the cache answers (benches/lib/auth_app.py, a minimal application,
# runs on the client's core). Every run starts a fresh ssecast
# pinned to core $SERVER_CPU (0); the load client runs on core $CLIENT_CPU (1).
#
# Writes benches/results/bench-<UTC time>/<run>.json (one sse-load report
# each), summary.txt, and benches/results/bench-<UTC time>.json (all runs).
#
#   scripts/bench.sh            # full suite, a few minutes
#   QUICK=1 scripts/bench.sh    # small smoke version, under a minute
#   SKIP_BUILD=1 SSECAST=path scripts/bench.sh   # use a given binary
#   ONLY="churn" scripts/bench.sh   # only these runs (raw-write density
#                                   # connect fanout batch latency idle churn auth)
#   ONLY=auth scripts/bench.sh      # the token-auth pair and the verify cost
#   ONLY=forward-auth scripts/bench.sh  # only the forward-auth runs (also FORWARD_AUTH_ONLY=1)
# Sizes can be changed through the variables below (environment wins).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/benches/results/bench-$STAMP}
# shellcheck source=../benches/lib/common.sh
source "$ROOT/benches/lib/common.sh"

if [[ ${QUICK:-0} == 1 ]]; then
    : "${DENSITY_SUBS:=1000 2000}" "${FANOUT_SUBS:=1000}" "${FANOUT_EVENTS:=300}"
    : "${BATCH_EVENTS:=1000}" "${LATENCY_SUBS:=1000}" "${LATENCY_EVENTS:=10}"
    : "${IDLE_SUBS:=2000}" "${IDLE_HOLD:=5}" "${HEARTBEAT:=2}" "${RAW_SOCKETS:=1000}"
    : "${RAW_SECONDS:=1}" "${CONNECT_SUBS:=2000}" "${CHURN_CHANNELS:=50000}" "${AUTH_SUBS:=2000}"
    : "${FWD_AUTH_SUBS:=500}"
fi
AUTH_SUBS=${AUTH_SUBS:-${CONNECT_SUBS:-19000}}
FWD_AUTH_SUBS=${FWD_AUTH_SUBS:-5000}
[[ ${FORWARD_AUTH_ONLY:-0} == 1 ]] && ONLY=forward-auth
DENSITY_SUBS=${DENSITY_SUBS:-"10000 19000"}
CONNECT_SUBS=${CONNECT_SUBS:-19000}
FANOUT_SUBS=${FANOUT_SUBS:-10000}
FANOUT_EVENTS=${FANOUT_EVENTS:-2000}
PUBLISHERS=${PUBLISHERS:-8}
BATCH=${BATCH:-10}
BATCH_EVENTS=${BATCH_EVENTS:-5000}
LATENCY_SUBS=${LATENCY_SUBS:-10000}
LATENCY_RATE=${LATENCY_RATE:-5}
LATENCY_EVENTS=${LATENCY_EVENTS:-50}
IDLE_SUBS=${IDLE_SUBS:-19000}
HEARTBEAT=${HEARTBEAT:-15}
IDLE_HOLD=${IDLE_HOLD:-$((HEARTBEAT * 3))}
RAW_SOCKETS=${RAW_SOCKETS:-10000}
RAW_SECONDS=${RAW_SECONDS:-3}
CHURN_CHANNELS=${CHURN_CHANNELS:-1000000}
CHURN_BATCH=${CHURN_BATCH:-100}
CHURN_PUBLISHERS=${CHURN_PUBLISHERS:-2}
CAP=${CAP:-180}

# want RUN: whether RUN is among $ONLY (all runs when it is empty).
want() { [[ -z ${ONLY:-} || " $ONLY " == *" $1 "* ]]; }

mkdir -p "$OUT"
trap stop_server EXIT
build_harness
build_ssecast
RUNS=()

# Forward auth: FWD_AUTH_SUBS subscribers with one session cookie, the hub asking
# auth_app.py; misses with --subscribe-auth-cache 0, hits with the cache on
# (the first connects ask, the rest are answered from the cache), and the same
# connects without forward auth as the baseline. Reported: hub CPU per connect
# (the application's CPU is not the hub's), never asserted.
forward_auth_runs() {
    local mode cache app_port auth
    for mode in off miss hit; do
        cache=0
        [[ $mode == hit ]] && cache=60
        next_port
        app_port=$PORT
        taskset -c "$CLIENT_CPU" python3 "$ROOT/benches/lib/auth_app.py" "$app_port" \
            2>>"$OUT/server-auth-app.log" &
        ORIGIN_PID=$!
        wait_port "$app_port" "$ORIGIN_PID" || die "auth_app.py did not listen on $app_port"
        log "forward auth ($mode): $FWD_AUTH_SUBS subscribers, cache ${cache}s"
        auth=(--subscribe-auth-url "http://127.0.0.1:$app_port/auth")
        [[ $mode == off ]] && auth=()
        start_ssecast "${auth[@]}" \
            --subscribe-auth-cache "$cache" --subscribe-auth-timeout 10 --subscribe-auth-max-inflight 16
        load "forward-auth-$mode" run --subscribers "$FWD_AUTH_SUBS" --connect-concurrency 16 --settle 0 \
            --sub-header 'Cookie: session=bench' --duration "$CAP"
        local calls
        calls=$(curl -s "http://127.0.0.1:$app_port/calls" || echo "?")
        stop_server
        python3 - "$OUT/forward-auth-$mode.json" "$FWD_AUTH_SUBS" "$mode" "$calls" <<'PY' | tee -a "$OUT/summary.txt" >&2
import json, sys
path, n, mode, calls = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    c = json.load(open(path))["connect"]
    cpu = c.get("server_cpu_s")
    per = f"{cpu / n * 1e6:.0f} us" if isinstance(cpu, (int, float)) else "n/a"
    print(f"forward auth {mode}: {c.get('ok')} of {n} connected, hub CPU {per} per connect, "
          f"{c.get('rate_per_s', 'n/a')} connects/s, application calls {calls}")
except (OSError, KeyError, ValueError) as e:
    print(f"forward auth {mode}: no result ({e})")
PY
        RUNS+=("forward-auth-$mode")
    done
}

# The same connect storm twice: open channels, then every stream with an HS256
# token (Authorization: Bearer) that the hub verifies. The hub's CPU per
# connect of each, their ratio, and the verify cost of one token alone.
auth_runs() {
    log "token auth: $AUTH_SUBS connects without, then with a signed token"
    # A throwaway key, kept out of the results (they are committed).
    local secret_file token
    secret_file=$(mktemp /tmp/ssecast-bench-secret.XXXXXX)
    head -c 48 /dev/urandom | base64 -w0 >"$secret_file"
    token=$(python3 "$ROOT/scripts/mint-token.py" "$secret_file" bench bench-user 3600)

    start_ssecast
    load connect-token-off run --subscribers "$AUTH_SUBS" --connect-concurrency 512 --settle 0 --duration "$CAP"
    stop_server
    start_ssecast --subscribe-secret-file "$secret_file"
    load connect-token-on run --subscribers "$AUTH_SUBS" --connect-concurrency 512 --settle 0 \
        --duration "$CAP" --sub-header "Authorization: Bearer $token"
    stop_server
    rm -f "$secret_file"
    RUNS+=(connect-token-off connect-token-on verify)
    python3 - "$OUT/connect-token-off.json" "$OUT/connect-token-on.json" <<'PY' | tee -a "$OUT/summary.txt" >&2
import json, sys
def per(path):
    c = json.load(open(path))["connect"]
    return c["server_cpu_s"] / c["ok"] * 1e6, c["ok"]
off, n_off = per(sys.argv[1])
on, n_on = per(sys.argv[2])
print(f"token auth: hub CPU per connect {off:.2f} us without ({n_off} ok), {on:.2f} us with a token ({n_on} ok): {on / off:.3f}x")
PY
    log "verify cost of one token (cargo bench --bench verify)"
    (cd "$ROOT" && taskset -c "$SERVER_CPU" cargo bench -q --bench verify) \
        >"$OUT/verify.json" 2>"$OUT/verify.err" || log "verify bench failed"
    grep "^verify:" "$OUT/verify.err" | tee -a "$OUT/summary.txt" >&2
}

if want raw-write; then
    log "raw-write baseline: $RAW_SOCKETS sockets"
    "$HARNESS" raw-write --sockets "$RAW_SOCKETS" --seconds "$RAW_SECONDS" \
        --writer-cpu "$SERVER_CPU" --reader-cpu "$CLIENT_CPU" --label raw-write \
        >"$OUT/raw-write.json" 2>"$OUT/raw-write.err" || log "raw-write failed"
    cat "$OUT/raw-write.err" >>"$OUT/summary.txt"
    tail -n 1 "$OUT/raw-write.err" >&2
    RUNS+=(raw-write)
fi

if want density; then
    for n in $DENSITY_SUBS; do
        log "density: $n subscribers"
        start_ssecast
        load "density-$n" run --subscribers "$n" --settle 2 --duration "$CAP"
        stop_server
        RUNS+=("density-$n")
    done
fi

if want connect; then
    log "connect storm: $CONNECT_SUBS subscribers, 512 handshakes in flight per worker (beyond a 128 listen backlog)"
    start_ssecast
    load connect-rate run --subscribers "$CONNECT_SUBS" --connect-concurrency 512 --settle 0 --duration "$CAP"
    stop_server
    RUNS+=(connect-rate)
fi

if want fanout; then
    log "fan-out: $FANOUT_SUBS subscribers, $FANOUT_EVENTS events, $PUBLISHERS publishers"
    start_ssecast
    load fanout-p$PUBLISHERS run --subscribers "$FANOUT_SUBS" --events "$FANOUT_EVENTS" \
        --publishers "$PUBLISHERS" --duration "$CAP"
    stop_server
    RUNS+=("fanout-p$PUBLISHERS")
fi

if want batch; then
    log "fan-out with batches of $BATCH: $FANOUT_SUBS subscribers, $BATCH_EVENTS events"
    start_ssecast
    load "fanout-p$PUBLISHERS-b$BATCH" run --subscribers "$FANOUT_SUBS" --events "$BATCH_EVENTS" \
        --publishers "$PUBLISHERS" --batch "$BATCH" --duration "$CAP"
    stop_server
    RUNS+=("fanout-p$PUBLISHERS-b$BATCH")
fi

if want auth; then
    auth_runs
fi

if want forward-auth; then
    forward_auth_runs
fi

if want latency; then
    log "latency: one event at a time to $LATENCY_SUBS subscribers at $LATENCY_RATE/s"
    start_ssecast
    load "latency-$LATENCY_SUBS" run --subscribers "$LATENCY_SUBS" --events "$LATENCY_EVENTS" \
        --rate "$LATENCY_RATE" --publishers 1 --duration "$CAP"
    stop_server
    RUNS+=("latency-$LATENCY_SUBS")
fi

if want idle; then
    log "idle: $IDLE_SUBS subscribers for ${IDLE_HOLD}s, heartbeat every ${HEARTBEAT}s"
    start_ssecast --heartbeat-interval "$HEARTBEAT"
    load "idle-$IDLE_SUBS" idle --subscribers "$IDLE_SUBS" --hold "$IDLE_HOLD" \
        --duration $((IDLE_HOLD + CAP))
    stop_server
    RUNS+=("idle-$IDLE_SUBS")
fi

if want churn; then
    log "channel churn: $CHURN_CHANNELS fresh channels, $CHURN_BATCH per request, $CHURN_PUBLISHERS publishers"
    start_ssecast
    load "churn-$CHURN_CHANNELS" churn --channels "$CHURN_CHANNELS" --batch "$CHURN_BATCH" \
        --publishers "$CHURN_PUBLISHERS" --duration "$CAP"
    stop_server
    RUNS+=("churn-$CHURN_CHANNELS")
fi

combine "$OUT" "${RUNS[@]}" >"$OUT.json"
log "results: $OUT.json (per run: $OUT/)"
