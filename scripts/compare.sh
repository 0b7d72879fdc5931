#!/usr/bin/env bash
# ssecast against its peers under the same load: nginx + nchan, a minimal
# axum + tokio broadcaster, and Pushpin (in front of a small origin that holds
# every subscriber on one channel). Each peer is started fresh for every run, pinned to
# core $SERVER_CPU (0); the load client runs on core $CLIENT_CPU (1). Runs per
# peer: density (connect + memory), fan-out (8 publishers), latency (one event
# at a time at 5/s), idle cost with a heartbeat every $HEARTBEAT s.
#
# Writes benches/results/compare-<UTC time>/<peer>/<run>.json,
# benches/results/compare-<UTC time>/<peer>.json (all runs of a peer) and
# benches/results/compare-<UTC time>.md (a markdown table with ratios
# ssecast/peer), which it also prints.
#
#   scripts/compare.sh                  # full comparison, several minutes
#   QUICK=1 scripts/compare.sh          # small smoke version
#   PEERS="ssecast axum" scripts/compare.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
BASE=${OUT:-$ROOT/benches/results/compare-$STAMP}
# shellcheck source=../benches/lib/common.sh
source "$ROOT/benches/lib/common.sh"

if [[ ${QUICK:-0} == 1 ]]; then
    : "${SUBS:=1000}" "${FANOUT_EVENTS:=100}" "${LATENCY_EVENTS:=10}" "${IDLE_HOLD:=5}" "${HEARTBEAT:=2}"
fi
PEERS=${PEERS:-"ssecast nchan axum pushpin"}
SUBS=${SUBS:-10000}
PUBLISHERS=${PUBLISHERS:-8}
FANOUT_EVENTS=${FANOUT_EVENTS:-300}
LATENCY_RATE=${LATENCY_RATE:-5}
LATENCY_EVENTS=${LATENCY_EVENTS:-25}
HEARTBEAT=${HEARTBEAT:-15}
IDLE_HOLD=${IDLE_HOLD:-$((HEARTBEAT * 2 + 5))}
CAP=${CAP:-120}

ensure_nchan() {
    if [[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]] && command -v nginx >/dev/null; then
        return 0
    fi
    log "installing nginx + libnginx-mod-nchan"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan \
        >/dev/null || die "could not install nginx + nchan"
}

ensure_pushpin() {
    command -v pushpin >/dev/null && command -v condure >/dev/null && command -v zurl >/dev/null && return 0
    log "installing pushpin"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pushpin \
        >/dev/null || die "could not install pushpin"
}

# start PEER: a fresh server of that kind; sets PORT, SERVER_PID(S), PRESET.
start_peer() {
    case $1 in
        ssecast) start_ssecast --heartbeat-interval "$HEARTBEAT"; PRESET=ssecast ;;
        nchan) start_nchan "$HEARTBEAT"; PRESET=nchan ;;
        ssecast-redis)
            start_redis
            start_ssecast --heartbeat-interval "$HEARTBEAT" --redis-url "redis://127.0.0.1:$REDIS_PORT"
            wait_redis_up "$PORT"
            PRESET=ssecast
            ;;
        nchan-redis)
            start_redis
            start_nchan "$HEARTBEAT" nginx-redis.conf.template
            PRESET=nchan
            ;;
        axum) start_axum; PRESET=axum ;;
        pushpin) start_pushpin "$HEARTBEAT"; PRESET=pushpin ;;
        *) die "unknown peer $1" ;;
    esac
}

mkdir -p "$BASE"
trap stop_server EXIT
build_harness
for p in $PEERS; do
    case $p in
        ssecast | ssecast-redis) build_ssecast ;;
        nchan | nchan-redis) ensure_nchan ;;
        axum) build_axum ;;
        pushpin) ensure_pushpin ;;
    esac
done
if [[ $PEERS == *axum* && $HEARTBEAT != 15 ]]; then
    log "note: the axum peer's keep-alive is fixed at 15 s; HEARTBEAT=$HEARTBEAT applies to the others"
fi

COLS=()
for p in $PEERS; do
    OUT=$BASE/$p
    mkdir -p "$OUT"
    log "== $p: density, $SUBS subscribers"
    start_peer "$p"
    load density run ${REDIS_PID:+--aux-pid "$REDIS_PID"} --preset "$PRESET" --subscribers "$SUBS" --settle 2 --duration "$CAP"
    if [[ -n $REDIS_PID ]]; then
        # What the peer keeps in Redis with $SUBS subscribers on one channel.
        echo "$p: Redis $REDIS_DESC; after the density run: $(redis-cli -p "$REDIS_PORT" info memory | grep -E '^used_memory:' | tr -d '\r'), $(redis-cli -p "$REDIS_PORT" info clients | grep -E '^connected_clients:' | tr -d '\r'), keys $(redis-cli -p "$REDIS_PORT" dbsize)" >>"$BASE/redis-notes.txt"
    fi
    stop_server

    log "== $p: fan-out, $SUBS subscribers, $FANOUT_EVENTS events, $PUBLISHERS publishers"
    start_peer "$p"
    load fanout run ${REDIS_PID:+--aux-pid "$REDIS_PID"} --preset "$PRESET" --subscribers "$SUBS" --events "$FANOUT_EVENTS" \
        --publishers "$PUBLISHERS" --duration "$CAP"
    stop_server

    log "== $p: latency, $LATENCY_EVENTS events at $LATENCY_RATE/s to $SUBS subscribers"
    start_peer "$p"
    load latency run ${REDIS_PID:+--aux-pid "$REDIS_PID"} --preset "$PRESET" --subscribers "$SUBS" --events "$LATENCY_EVENTS" \
        --rate "$LATENCY_RATE" --publishers 1 --duration "$CAP"
    stop_server

    log "== $p: idle, $SUBS subscribers for ${IDLE_HOLD}s"
    start_peer "$p"
    load idle idle ${REDIS_PID:+--aux-pid "$REDIS_PID"} --preset "$PRESET" --subscribers "$SUBS" --hold "$IDLE_HOLD" \
        --duration $((IDLE_HOLD + CAP))
    stop_server

    combine "$OUT" density fanout latency idle >"$BASE/$p.json"
    COLS+=("$p=$BASE/$p.json")
done

{
    echo "# ssecast compared with its peers"
    echo
    echo "Machine: $(machine_json)"
    echo
    echo "Load: $SUBS subscribers; fan-out $FANOUT_EVENTS events from $PUBLISHERS publishers;"
    echo "latency $LATENCY_EVENTS events at $LATENCY_RATE/s; idle ${IDLE_HOLD}s with heartbeat ${HEARTBEAT}s."
    echo "Server pinned to core $SERVER_CPU, load client to core $CLIENT_CPU. Ratios are ssecast/peer."
    echo
    if [[ -s $BASE/redis-notes.txt ]]; then
        echo "Redis (a private redis-server per run, pinned to core $REDIS_CPU; its CPU is not in the server figures):"
        echo
        sed 's/^/- /' "$BASE/redis-notes.txt"
        echo
    fi
    "$HARNESS" table "${COLS[@]}"
} >"$BASE.md"
cat "$BASE.md"
log "results: $BASE.md (per peer: $BASE/)"
