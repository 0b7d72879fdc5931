# Shared by scripts/bench.sh and scripts/compare.sh: build, start one server
# pinned to a core, wait for its port, run the load client pinned to the other
# core, stop the server by its PID. Source it; do not run it.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
HARNESS=$ROOT/benches/harness/target/release/sse-load
AXUM=$ROOT/benches/peers/axum-sse/target/release/axum-sse
SSECAST=${SSECAST:-$ROOT/target/release/ssecast}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVER_PID=""
SERVER_PIDS=""
SERVER_TMP=""
PUB_PORT=""   # set when publishes go to another port than subscribes (Pushpin)
ORIGIN_PID=""
EXTRA_PIDS=""  # more hub processes of the same run (--reuse-port), stopped with it
NEXT_PORT=${BASE_PORT:-5600}
# A private redis-server per run (start_redis), pinned to $REDIS_CPU: it has
# to share a core with the hub (0) or with the load client (1) on a 2-core
# machine; every result that used it says which (the run's "redis" object).
REDIS_CPU=${REDIS_CPU:-1}
REDIS_PID=""
REDIS_PORT=""
REDIS_TMP=""
REDIS_DESC=""

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

build_harness() {
    log "building sse-load"
    cargo build --release -q --manifest-path "$ROOT/benches/harness/Cargo.toml" || die "sse-load build failed"
}

build_axum() {
    log "building axum-sse peer"
    cargo build --release -q --manifest-path "$ROOT/benches/peers/axum-sse/Cargo.toml" || die "axum-sse build failed"
}

# SKIP_BUILD=1 uses an existing $SSECAST binary as it is.
build_ssecast() {
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        log "building ssecast"
        (cd "$ROOT" && cargo build --release -q) || die "ssecast build failed"
    fi
    [[ -x $SSECAST ]] || die "no ssecast binary at $SSECAST"
}

# A fresh port per server so no run meets the previous run's TIME_WAIT sockets.
next_port() { NEXT_PORT=$((NEXT_PORT + 1)); PORT=$NEXT_PORT; }

wait_port() { # PORT PID
    local port=$1 pid=$2 i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

start_ssecast() { # extra flags...
    next_port
    taskset -c "$SERVER_CPU" "$SSECAST" --bind "127.0.0.1:$PORT" --log-level warn "$@" \
        2>>"$OUT/server-ssecast.log" &
    SERVER_PID=$!
    SERVER_PIDS=$SERVER_PID
    wait_port "$PORT" "$SERVER_PID" || die "ssecast did not listen on $PORT (see $OUT/server-ssecast.log)"
}

start_axum() {
    next_port
    taskset -c "$SERVER_CPU" "$AXUM" "127.0.0.1:$PORT" 2>>"$OUT/server-axum.log" &
    SERVER_PID=$!
    SERVER_PIDS=$SERVER_PID
    wait_port "$PORT" "$SERVER_PID" || die "axum-sse did not listen on $PORT"
}

start_nchan() { # HEARTBEAT_SECONDS [TEMPLATE]
    next_port
    SERVER_TMP=$(mktemp -d /tmp/ssecast-nchan.XXXXXX)
    sed -e "s#@PREFIX@#$SERVER_TMP#g" -e "s#@PORT@#$PORT#g" -e "s#@HEARTBEAT@#$1#g" \
        -e "s#@REDIS@#redis://127.0.0.1:${REDIS_PORT:-6379}#g" \
        "$ROOT/benches/peers/nchan/${2:-nginx.conf.template}" >"$SERVER_TMP/nginx.conf"
    taskset -c "$SERVER_CPU" nginx -p "$SERVER_TMP" -c "$SERVER_TMP/nginx.conf" -e "$SERVER_TMP/error.log" &
    SERVER_PID=$!
    wait_port "$PORT" "$SERVER_PID" || die "nginx did not listen on $PORT (see $SERVER_TMP/error.log)"
    local workers
    workers=$(ps --ppid "$SERVER_PID" -o pid= | tr -d ' ' | paste -sd, -)
    SERVER_PIDS="$SERVER_PID${workers:+,$workers}"
}

# Pushpin (Debian package pushpin: condure, zurl, pushpin-proxy,
# pushpin-handler) in front of benches/peers/pushpin/origin.py, which tells it
# to hold every subscriber on the channel `bench`. Everything server-side,
# the origin too, runs on $SERVER_CPU; memory and CPU are read from the
# launcher and its four services (the origin is the application, not the hub).
start_pushpin() { # HEARTBEAT_SECONDS
    next_port
    local origin_port pub_port
    pub_port=$((PORT + 1000))
    origin_port=$((PORT + 2000))
    SERVER_TMP=$(mktemp -d /tmp/ssecast-pushpin.XXXXXX)
    mkdir -p "$SERVER_TMP/run" "$SERVER_TMP/log"
    sed -e "s#@PREFIX@#$SERVER_TMP#g" -e "s#@PORT@#$PORT#g" -e "s#@PUBPORT@#$pub_port#g" \
        "$ROOT/benches/peers/pushpin/pushpin.conf.template" >"$SERVER_TMP/pushpin.conf"
    echo "* 127.0.0.1:$origin_port" >"$SERVER_TMP/routes"
    taskset -c "$SERVER_CPU" python3 "$ROOT/benches/peers/pushpin/origin.py" "$origin_port" bench "$1" \
        2>>"$OUT/server-pushpin-origin.log" &
    ORIGIN_PID=$!
    wait_port "$origin_port" "$ORIGIN_PID" || die "pushpin origin did not listen on $origin_port"
    taskset -c "$SERVER_CPU" pushpin --config "$SERVER_TMP/pushpin.conf" >"$SERVER_TMP/log/launcher.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$PORT" "$SERVER_PID" || die "pushpin did not listen on $PORT (see $SERVER_TMP/log)"
    wait_port "$pub_port" "$SERVER_PID" || die "pushpin's publish API did not listen on $pub_port"
    PUB_PORT=$pub_port
    local services
    services=$(ps --ppid "$SERVER_PID" -o pid= | tr -d ' ' | paste -sd, -)
    SERVER_PIDS="$SERVER_PID${services:+,$services}"
}

# start_redis [redis-server flags...]: a private redis-server in a fresh
# temporary directory on a free loopback port (the next one that it binds),
# pinned to $REDIS_CPU, with no snapshots and no AOF unless the flags say
# otherwise (later flags win). Sets REDIS_PID, REDIS_PORT, REDIS_DESC.
start_redis() {
    local try
    command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
    for try in 1 2 3 4 5; do
        next_port
        REDIS_PORT=$((PORT + 2000))
        REDIS_TMP=$(mktemp -d /tmp/ssecast-bench-redis.XXXXXX)
        taskset -c "$REDIS_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$REDIS_TMP" \
            --save "" --appendonly no --daemonize no --protected-mode no \
            --maxmemory-policy noeviction --logfile "$REDIS_TMP/redis.log" "$@" &
        REDIS_PID=$!
        if wait_port "$REDIS_PORT" "$REDIS_PID"; then
            local aof fsync
            aof=$(redis-cli -p "$REDIS_PORT" config get appendonly | tail -n 1)
            fsync=$(redis-cli -p "$REDIS_PORT" config get appendfsync | tail -n 1)
            REDIS_DESC="{\"core\":$REDIS_CPU,\"appendonly\":\"$aof\",\"appendfsync\":\"$fsync\",\"version\":\"$(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/')\",\"port\":$REDIS_PORT}"
            log "redis-server $REDIS_PID on 127.0.0.1:$REDIS_PORT, core $REDIS_CPU, appendonly $aof, appendfsync $fsync"
            return 0
        fi
        stop_redis
    done
    die "redis-server did not start (see $OUT/server-redis.log)"
}

stop_redis() {
    [[ -n $REDIS_PID ]] || return 0
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    [[ -n $REDIS_TMP ]] && { cat "$REDIS_TMP/redis.log" >>"$OUT/server-redis.log" 2>/dev/null || true; rm -rf "$REDIS_TMP"; }
    REDIS_PID="" REDIS_PORT="" REDIS_TMP="" REDIS_DESC=""
}

# utime + stime of a process in clock ticks (/proc/PID/stat fields 14, 15).
proc_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

# wait_redis_up PORT: until the hub's /health says "redis":"up" (it starts
# degraded and connects in the background), at most 10 s.
wait_redis_up() {
    local i
    for ((i = 0; i < 200; i++)); do
        curl -s -m 1 "http://127.0.0.1:$1/health" | grep -q '"redis" *: *"up"' && return 0
        sleep 0.05
    done
    die "the hub on $1 did not report redis up: $(curl -s -m 1 "http://127.0.0.1:$1/health")"
}

stop_server() {
    local p
    for p in $EXTRA_PIDS; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in $EXTRA_PIDS; do
        local i
        for ((i = 0; i < 150; i++)); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    EXTRA_PIDS=""
    if [[ -n $ORIGIN_PID ]]; then
        kill -TERM "$ORIGIN_PID" 2>/dev/null || true
        wait "$ORIGIN_PID" 2>/dev/null || true
        ORIGIN_PID=""
    fi
    [[ -n $SERVER_PID ]] || { stop_redis; return 0; }
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    if [[ -n $SERVER_TMP ]]; then
        cp "$SERVER_TMP/error.log" "$OUT/server-nchan-error.log" 2>/dev/null || true
        local f
        for f in "$SERVER_TMP"/log/*.log; do # Pushpin's: appended, one file per service
            [[ -f $f ]] && cat "$f" >>"$OUT/server-pushpin-$(basename "$f")"
        done
        rm -rf "$SERVER_TMP"
    fi
    SERVER_PID="" SERVER_PIDS="" SERVER_TMP="" PUB_PORT=""
    stop_redis
    sleep 1
}

# load NAME MODE FLAGS...: one bounded sse-load run against the current server;
# JSON to $OUT/NAME.json, summary line to $OUT/summary.txt and the terminal.
load() {
    local name=$1 mode=$2
    shift 2
    local rc=0
    taskset -c "$CLIENT_CPU" "$HARNESS" "$mode" --server "127.0.0.1:$PORT" \
        ${PUB_PORT:+--pub-server "127.0.0.1:$PUB_PORT"} \
        --server-pid "$SERVER_PIDS" --label "$name" "$@" \
        >"$OUT/$name.json" 2>"$OUT/$name.err" || rc=$?
    cat "$OUT/$name.err" >>"$OUT/summary.txt"
    tail -n 1 "$OUT/$name.err" >&2
    [[ $rc == 0 ]] || log "run $name exited $rc (kept its JSON)"
    return 0
}

machine_json() {
    local cpu kernel rev
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//; s/"/\\"/g')
    kernel=$(uname -r)
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)
    # The load average shows whether something else shared the machine.
    printf '{"date":"%s","cpu":"%s","cores":%s,"kernel":"%s","git":"%s","server_cpu":%s,"client_cpu":%s,"loadavg":"%s"}' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$cpu" "$(nproc)" "$kernel" "$rev" "$SERVER_CPU" "$CLIENT_CPU" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# combine DIR NAME...: {"machine": ..., "runs": {NAME: <DIR/NAME.json>, ...}}
combine() {
    local dir=$1 first=1 n
    shift
    printf '{"machine":%s,"runs":{' "$(machine_json)"
    for n in "$@"; do
        [[ -s $dir/$n.json ]] || continue
        ((first)) || printf ','
        first=0
        printf '"%s":%s' "$n" "$(head -n 1 "$dir/$n.json")"
    done
    printf '}}\n'
}
