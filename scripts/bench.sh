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
#
# Redis scale-out (issue 11), run only when named (never in the default or
# QUICK runs): each run starts its own redis-server (temporary directory,
# no snapshots, no AOF unless the family says otherwise) pinned to core
# $REDIS_CPU (1, the load client's, unless told), and the local runs it is
# compared with come in the same invocation, interleaved:
#   ONLY=redis-fanout   # 10,000 subscribers, 8 publishers: Redis mode vs local
#   ONLY=redis-latency  # one event at 5/s to 1,000 and 10,000: p50/p99, Redis vs local
#   ONLY=redis-publish  # publishes acknowledged/s, 8 keep-alive publishers, Redis's
#                       # own CPU; appendonly no / appendfsync everysec / always,
#                       # Redis on core 1 and on core 0
#   ONLY=reuse-port     # two --reuse-port hubs on one port, 5,000 subscribers each
#                       # (the kernel's split), deliveries and latency per process
#   ONLY=redis          # all four
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
# Redis families (sizes as in issue 11; environment wins).
REDIS_ROUNDS=${REDIS_ROUNDS:-2}
REDIS_FANOUT_SUBS=${REDIS_FANOUT_SUBS:-10000}
REDIS_FANOUT_EVENTS=${REDIS_FANOUT_EVENTS:-$FANOUT_EVENTS}
REDIS_LATENCY_SUBS=${REDIS_LATENCY_SUBS:-"1000 10000"}
REDIS_PUBLISH_EVENTS=${REDIS_PUBLISH_EVENTS:-100000}
REDIS_PUBLISH_FSYNC=${REDIS_PUBLISH_FSYNC:-"no everysec always"}
REDIS_PUBLISH_CPUS=${REDIS_PUBLISH_CPUS:-"1 0"}
REUSE_SUBS=${REUSE_SUBS:-10000}
REUSE_EVENTS=${REUSE_EVENTS:-$FANOUT_EVENTS}
# HUB_REDIS=0: start redis-server but not the hub's Redis mode (a dry run of
# the scripts against a hub without it).
HUB_REDIS=${HUB_REDIS:-1}
if [[ " ${ONLY:-} " == *" redis "* ]]; then
    only=""
    for w in $ONLY; do
        [[ $w == redis ]] && w="redis-fanout redis-latency redis-publish reuse-port"
        only="$only $w"
    done
    ONLY=$only
fi

# want RUN: whether RUN is among $ONLY (all runs when it is empty).
want() { [[ -z ${ONLY:-} || " $ONLY " == *" $1 "* ]]; }
# named RUN: only when $ONLY names it (the Redis families).
named() { [[ " ${ONLY:-} " == *" $1 "* ]]; }

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

# start_hub local|redis [hub flags...]: a fresh hub on core $SERVER_CPU; in
# Redis mode with its own redis-server (flags in REDIS_ARGS), and only once
# the hub says Redis is up.
REDIS_ARGS=()
start_hub() {
    local mode=$1
    shift
    if [[ $mode == redis ]]; then
        start_redis "${REDIS_ARGS[@]}"
        if [[ $HUB_REDIS == 1 ]]; then
            start_ssecast --redis-url "redis://127.0.0.1:$REDIS_PORT" "$@"
            wait_redis_up "$PORT"
        else
            start_ssecast "$@"
        fi
    else
        start_ssecast "$@"
    fi
}

# rload NAME MODE FLAGS...: `load`, with Redis's CPU over the publish phase
# (--aux-pid) and over the whole run, its core and persistence, in the
# run's JSON as "redis".
rload() {
    local name=$1 c0=0 t0
    t0=$(date +%s%N)
    if [[ -n $REDIS_PID ]]; then
        c0=$(proc_ticks "$REDIS_PID")
        redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    fi
    load "$@" ${REDIS_PID:+--aux-pid "$REDIS_PID"}
    [[ -n $REDIS_PID ]] || return 0
    # Redis's own account of the commands it ran (time per call includes
    # any preemption of its core).
    redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' >"$OUT/$name.redis-commandstats.txt"
    python3 - "$OUT/$name.json" "$REDIS_DESC" "$c0" "$(proc_ticks "$REDIS_PID")" "$t0" "$(date +%s%N)" \
        "$(getconf CLK_TCK)" "$HUB_REDIS" "$OUT/$name.redis-commandstats.txt" <<'PY'
import json, sys
path, desc, c0, c1, t0, t1, hz, hub, cs = sys.argv[1:]
d = json.loads(open(path).readline())
r = json.loads(desc)
r["cpu_s_whole_run"] = (int(c1) - int(c0)) / int(hz)
r["cpu_pct_whole_run"] = round(100 * r["cpu_s_whole_run"] / ((int(t1) - int(t0)) / 1e9), 1)
r["hub_in_redis_mode"] = hub == "1"
stats = {}
for line in open(cs):
    if line.startswith("cmdstat_"):
        name, _, rest = line[8:].strip().partition(":")
        kv = dict(x.split("=", 1) for x in rest.split(","))
        stats[name] = {"calls": int(kv["calls"]), "usec_per_call": float(kv["usec_per_call"])}
r["commandstats"] = stats
d["redis"] = r
open(path, "w").write(json.dumps(d) + "\n")
PY
}

# summarize RUN... <<'PY' (python on stdin): prints, and appends to
# summary.txt, what the snippet computes from the runs' JSON, given as the
# dict R (run name -> report) with helpers g (path lookup), ms and ratio.
SUMMARY_PRELUDE='
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
R = {}
for n in names:
    try:
        R[n] = json.loads(open(os.path.join(out, n + ".json")).readline())
    except (OSError, ValueError):
        pass
def g(run, *path):
    v = run
    for p in path:
        if not isinstance(v, dict):
            return None
        v = v.get(p)
    return v
def ms(ns):
    return "n/a" if ns is None else f"{ns / 1e6:.2f} ms"
def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.3f}"
'
summarize() {
    python3 -c "$SUMMARY_PRELUDE$(cat)" "$OUT" "$@" | tee -a "$OUT/summary.txt" >&2 || log "summary failed"
}

redis_fanout_runs() {
    local r mode names=()
    for ((r = 1; r <= REDIS_ROUNDS; r++)); do
        for mode in local redis; do
            log "redis-fanout round $r, $mode: $REDIS_FANOUT_SUBS subscribers, $REDIS_FANOUT_EVENTS events, $PUBLISHERS publishers"
            start_hub "$mode"
            rload "redis-fanout-$mode-$r" run --subscribers "$REDIS_FANOUT_SUBS" --events "$REDIS_FANOUT_EVENTS" \
                --publishers "$PUBLISHERS" --duration "$CAP"
            stop_server
            names+=("redis-fanout-$mode-$r")
        done
    done
    RUNS+=("${names[@]}")
    summarize "${names[@]}" <<'PY'
for r in range(1, 100):
    l, x = R.get(f"redis-fanout-local-{r}"), R.get(f"redis-fanout-redis-{r}")
    if not l and not x:
        break
    dl, dx = g(l, "delivery", "deliveries_per_s"), g(x, "delivery", "deliveries_per_s")
    print(f"redis-fanout round {r}: local {dl} deliveries/s, Redis mode {dx} (redis/local {ratio(dx, dl)}; goal >= 0.9); "
          f"client saturated local {g(l, 'delivery', 'client_saturated')} redis {g(x, 'delivery', 'client_saturated')}; "
          f"Redis on core {g(x, 'redis', 'core')}{'' if g(x, 'redis', 'hub_in_redis_mode') else ' (DRY RUN: hub not in Redis mode)'}, its CPU {g(x, 'delivery', 'aux_cpu_pct')} %")
PY
}

redis_latency_runs() {
    local n mode names=()
    for n in $REDIS_LATENCY_SUBS; do
        for mode in local redis; do
            log "redis-latency $mode: $LATENCY_EVENTS events at $LATENCY_RATE/s to $n subscribers"
            start_hub "$mode"
            rload "redis-latency-$mode-$n" run --subscribers "$n" --events "$LATENCY_EVENTS" \
                --rate "$LATENCY_RATE" --publishers 1 --duration "$CAP"
            stop_server
            names+=("redis-latency-$mode-$n")
        done
    done
    RUNS+=("${names[@]}")
    summarize "${names[@]}" <<'PY'
for n in sorted({k.rsplit("-", 1)[1] for k in R}, key=int):
    l, x = R.get(f"redis-latency-local-{n}"), R.get(f"redis-latency-redis-{n}")
    lp50, lp99 = g(l, "delivery", "latency_ns", "p50"), g(l, "delivery", "latency_ns", "p99")
    xp50, xp99 = g(x, "delivery", "latency_ns", "p50"), g(x, "delivery", "latency_ns", "p99")
    d = "n/a" if lp99 is None or xp99 is None else f"{(xp99 - lp99) / 1e6:+.2f} ms"
    print(f"redis-latency {n} subscribers: local p50 {ms(lp50)} p99 {ms(lp99)}; Redis mode p50 {ms(xp50)} p99 {ms(xp99)} "
          f"(p99 redis - local {d}; goal <= +2 ms); Redis on core {g(x, 'redis', 'core')}{'' if g(x, 'redis', 'hub_in_redis_mode') else ' (DRY RUN: hub not in Redis mode)'}")
PY
}

redis_publish_runs() {
    local cpu fsync name names=() saved=$REDIS_CPU
    log "redis-publish local: 1 subscriber, $REDIS_PUBLISH_EVENTS events, $PUBLISHERS keep-alive publishers"
    start_hub local
    rload redis-publish-local run --subscribers 1 --events "$REDIS_PUBLISH_EVENTS" --publishers "$PUBLISHERS" --duration "$CAP"
    stop_server
    names+=(redis-publish-local)
    for cpu in $REDIS_PUBLISH_CPUS; do
        for fsync in $REDIS_PUBLISH_FSYNC; do
            REDIS_CPU=$cpu
            case $fsync in
                no) REDIS_ARGS=(--appendonly no) ;;
                *) REDIS_ARGS=(--appendonly yes --appendfsync "$fsync") ;;
            esac
            name=redis-publish-aof-$fsync-core$cpu
            log "redis-publish: Redis on core $cpu, ${REDIS_ARGS[*]}: 1 subscriber, $REDIS_PUBLISH_EVENTS events, $PUBLISHERS publishers"
            start_hub redis
            rload "$name" run --subscribers 1 --events "$REDIS_PUBLISH_EVENTS" --publishers "$PUBLISHERS" --duration "$CAP"
            stop_server
            names+=("$name")
        done
    done
    REDIS_CPU=$saved REDIS_ARGS=()
    RUNS+=("${names[@]}")
    summarize "${names[@]}" <<'PY'
for n, x in R.items():
    p = g(x, "publish") or {}
    d = g(x, "delivery") or {}
    rd = g(x, "redis") or {}
    aof = f"appendonly yes, appendfsync {rd.get('appendfsync')}" if rd.get("appendonly") == "yes" else "appendonly no"
    dry = "" if rd.get("hub_in_redis_mode") else " (DRY RUN: hub not in Redis mode)"
    where = f"Redis on core {rd.get('core')}{dry}, {aof}, Redis CPU {d.get('aux_cpu_pct')} % ({(d.get('aux_cpu_ns_per_event') or 0) / 1e3:.1f} us/publish; EVALSHA {g(rd, 'commandstats', 'evalsha', 'usec_per_call')} us per call by INFO commandstats)" if rd else "no Redis"
    print(f"{n}: {p.get('events_acked')} of {p.get('events_attempted')} acknowledged, {p.get('events_per_s')}/s (goal >= 30,000), "
          f"ack p50 {ms(g(p, 'ack_rtt_ns', 'p50'))} p99 {ms(g(p, 'ack_rtt_ns', 'p99'))}; hub CPU {d.get('server_cpu_pct')} %; {where}; errors {p.get('errors')}")
PY
}

# Two hubs with --reuse-port on one port (both on core $SERVER_CPU), each with
# its own --admin-bind; Redis mode, one redis-server. The kernel spreads the
# subscribers (and the publishers' connections); the client finds which
# process serves each subscriber (--by-server-pid).
start_reuse_pair() {
    start_redis "${REDIS_ARGS[@]}"
    local url=() a1 a2 second
    [[ $HUB_REDIS == 1 ]] && url=(--redis-url "redis://127.0.0.1:$REDIS_PORT")
    a1=$((NEXT_PORT + 4001))
    a2=$((NEXT_PORT + 4002))
    start_ssecast --reuse-port --admin-bind "127.0.0.1:$a1" "${url[@]}"
    taskset -c "$SERVER_CPU" "$SSECAST" --bind "127.0.0.1:$PORT" --log-level warn --reuse-port \
        --admin-bind "127.0.0.1:$a2" "${url[@]}" 2>>"$OUT/server-ssecast.log" &
    second=$!
    EXTRA_PIDS=$second
    SERVER_PIDS="$SERVER_PID,$second"
    wait_port "$a2" "$second" || die "the second --reuse-port hub did not listen on its admin address $a2"
    if [[ $HUB_REDIS == 1 ]]; then
        wait_redis_up "$a1"
        wait_redis_up "$a2"
    fi
    ADMIN_PORTS="$a1 $a2"
}

reuse_port_runs() {
    local kind names=() a
    for kind in fanout latency; do
        log "reuse-port $kind: two hubs on one port, $REUSE_SUBS subscribers"
        start_reuse_pair
        if [[ $kind == fanout ]]; then
            rload "reuse-port-$kind" run --subscribers "$REUSE_SUBS" --events "$REUSE_EVENTS" \
                --publishers "$PUBLISHERS" --by-server-pid --duration "$CAP"
        else
            rload "reuse-port-$kind" run --subscribers "$REUSE_SUBS" --events "$LATENCY_EVENTS" \
                --rate "$LATENCY_RATE" --publishers 1 --by-server-pid --duration "$CAP"
        fi
        for a in $ADMIN_PORTS; do
            curl -s -m 2 "http://127.0.0.1:$a/events/status" >"$OUT/reuse-port-$kind-status-$a.json" || true
        done
        stop_server
        names+=("reuse-port-$kind")
    done
    RUNS+=("${names[@]}")
    summarize "${names[@]}" <<'PY'
for n, x in R.items():
    parts = []
    for p in g(x, "delivery", "by_server_pid") or []:
        parts.append(f"pid {p['pid']}: {p['subscribers']} subscribers, {p['deliveries']} of {p['expected']} deliveries ({p['deliveries_per_s']}/s), "
                     f"p50 {ms(g(p, 'latency_ns', 'p50'))} p99 {ms(g(p, 'latency_ns', 'p99'))}, lost {p['lost']}")
    print(f"{n}: {g(x, 'delivery', 'deliveries_per_s')} deliveries/s in all, p99 {ms(g(x, 'delivery', 'latency_ns', 'p99'))}; " + "; ".join(parts))
PY
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

named redis-fanout && redis_fanout_runs
named redis-latency && redis_latency_runs
named redis-publish && redis_publish_runs
named reuse-port && reuse_port_runs

combine "$OUT" "${RUNS[@]}" >"$OUT.json"
log "results: $OUT.json (per run: $OUT/)"
