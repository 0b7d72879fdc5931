#!/usr/bin/env bash
# Slowloris: thousands of connections that send a request one byte per second
# (drip) or nothing at all (silent), against --header-timeout 2, while
# ordinary clients use the hub: /health on a new connection every 50 ms, a
# keep-alive /events/status poller, and a subscriber receiving 50 events/s.
#
# The ordinary clients run at nice -10 so that the slowloris processes on
# the same core do not delay them (they measure the hub, not their core).
# Two phases on one hub: a reference phase without the attack, then the
# attack: two slowloris processes of N/2 connections each (half drip, half
# silent), the second started 3 s after the first.
#
# Checks:
#  - every slow connection is closed by the hub, at the deadline: between
#    header-timeout - 50 ms and header-timeout + 1 s after it connected
#    (the timer wheel ticks every 100 ms; the box is shared). A slowloris
#    process ends when all its connections are closed, or after
#    header-timeout + 10 s (a connection whose SYN was retried connects late);
#  - a dripping connection (partial request) gets 408 first; a silent one is
#    closed without an answer; the header_timeout counter counts the 408s;
#  - ordinary clients: no failure, no non-200, p99 latency during the attack
#    <= 3 x reference p99 + 20 ms (2000 connections arrive within ~0.1 s and
#    are accepted in a burst, and 2000 deadlines fire in the same 100 ms
#    tick; the box is shared); the subscriber gets every event, no gap,
#    with the same latency bound;
#  - afterwards the hub's open fds are back to where they were.
#
# usage: slowloris.sh [--n 4000] [--header-timeout 2]

source "$(dirname "$0")/lib.sh"

N=4000 HT=2 PHASE=9
while [[ $# -gt 0 ]]; do
    case $1 in
        --n) N=$2; shift 2 ;;
        --header-timeout) HT=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
HALF=$((N / 2))

build
start_hub -- --header-timeout "$HT" --heartbeat-interval 15
fd0=$(fd_count)

# ordinary LABEL SECONDS: the ordinary clients for that long.
ordinary() {
    local label=$1 secs=$2
    bg_prio "$WORK/$label.sub" sub --addr "$ADDR" --channel ord --n 1 --lat --duration $((secs + 2)) \
        --ready-file "$WORK/$label.ready"
    local sub_pid=$BG_PID
    wait_file "$WORK/$label.ready" 10 || die "subscriber did not connect"
    bg_prio "$WORK/$label.pub" pub --addr "$ADDR" --channel ord --rate 50 --duration "$secs"
    PUB_PID=$BG_PID
    bg_prio "$WORK/$label.health" probe --addr "$ADDR" --path /health --interval 0.05 --duration "$secs"
    HEALTH_PID=$BG_PID
    bg_prio "$WORK/$label.ka" probe --addr "$ADDR" --path /events/status --keepalive --interval 0.1 --duration "$secs"
    KA_PID=$BG_PID
    SUB_PID=$sub_pid
}
wait_ordinary() {
    wait_bg "$PUB_PID"
    wait_bg "$HEALTH_PID"
    wait_bg "$KA_PID"
    wait_bg "$SUB_PID"
}

log "reference phase: ordinary clients only (${PHASE}s)"
ordinary ref "$PHASE"
wait_ordinary

log "attack: $N slow connections (half drip, half silent) + ordinary clients"
before=$(status_json)
ordinary atk "$PHASE"
bg "$WORK/slow1" slowloris --addr "$ADDR" --n "$HALF" --mode mixed --interval 1 --duration $((HT + 10)) --src-count 2
s1=$BG_PID
sleep 3
bg "$WORK/slow2" slowloris --addr "$ADDR" --n "$HALF" --mode mixed --interval 1 --duration $((HT + 10)) --src-ips 127.0.0.4,127.0.0.5
s2=$BG_PID
wait_bg "$s1"
wait_bg "$s2"
wait_ordinary
sleep 3 # lingering closes after a 408 last up to 2 s
after=$(status_json)
fd1=$(fd_count)

sum() { echo $(($(j "$WORK/slow1" "$1") + $(j "$WORK/slow2" "$1"))); }
max2() { awk -v a="$(j "$WORK/slow1" "$1")" -v b="$(j "$WORK/slow2" "$1")" 'BEGIN {print (a > b ? a : b)}'; }
min2() { awk -v a="$(j "$WORK/slow1" "$1")" -v b="$(j "$WORK/slow2" "$1")" 'BEGIN {print (a < b ? a : b)}'; }

check "slow connections established" "$(sum connected)" "$N" "v == $N"
check "slow connections left open by the hub" "$(sum still_open)" "0 (after $((HT + 10))s)" 'v == 0'
note "slowest connect (SYN retried if > 1000), ms" "$(max2 connect_delay_max_ms)"
check "drip: closed with 408" "$(sum drip_408)" "$((N / 2))" "v == $((N / 2))"
check "silent: closed without an answer" "$(sum silent_no_response)" "$((N / 2))" "v == $((N / 2))"
lo=$(awk -v h="$HT" 'BEGIN {print h * 1000 - 50}') hi=$(awk -v h="$HT" 'BEGIN {print h * 1000 + 1000}')
for m in drip silent; do
    check "$m: earliest close after connect, ms" "$(min2 ${m}_close_min_ms)" ">= $lo" "v >= $lo"
    check "$m: latest close after connect, ms" "$(max2 ${m}_close_max_ms)" "<= $hi" "v <= $hi"
    note "$m: close after connect p50 / p99 ms" "$(j "$WORK/slow1" ${m}_close_p50_ms) / $(j "$WORK/slow1" ${m}_close_p99_ms) (first batch); $(j "$WORK/slow2" ${m}_close_p50_ms) / $(j "$WORK/slow2" ${m}_close_p99_ms) (second)"
done
ht_count=$(($(jq '.rejected.header_timeout' <<<"$after") - $(jq '.rejected.header_timeout' <<<"$before")))
check "header_timeout counter (408s)" "$ht_count" "$((N / 2))" "v == $((N / 2))"

for p in health ka; do
    r=$WORK/ref.$p a=$WORK/atk.$p
    check "$p: failures + non-200 during the attack" "$(($(j "$a" failed) + $(j "$a" non200)))" "0 of $(j "$a" ok)" 'v == 0'
    note "$p latency p50/p99/max ms, reference" "$(j "$r" lat_p50_ms) / $(j "$r" lat_p99_ms) / $(j "$r" lat_max_ms) (n=$(j "$r" lat_n))"
    note "$p latency p50/p99/max ms, attack" "$(j "$a" lat_p50_ms) / $(j "$a" lat_p99_ms) / $(j "$a" lat_max_ms) (n=$(j "$a" lat_n))"
    rp99=$(j "$r" lat_p99_ms)
    check "$p p99 during the attack, ms" "$(j "$a" lat_p99_ms)" "<= 3 x $rp99 + 20" "v <= 3 * $rp99 + 20"
done
S=$WORK/atk.sub P=$WORK/atk.pub
check "subscriber: events = published, no gap" "$(j "$S" count_min)/$(j "$P" published) gaps $(j "$S" gap_ids)" "all, 0" \
    "$(j "$S" count_min) == $(j "$P" published) && $(j "$S" gap_ids) == 0 && $(j "$S" framing_errors) == 0 && $(j "$S" status_200) == 1"
note "subscriber latency p50/p99 ms, reference" "$(j "$WORK/ref.sub" lat_p50_ms) / $(j "$WORK/ref.sub" lat_p99_ms)"
note "subscriber latency p50/p99 ms, attack" "$(j "$S" lat_p50_ms) / $(j "$S" lat_p99_ms)"
rp99=$(j "$WORK/ref.sub" lat_p99_ms)
check "subscriber p99 during the attack, ms" "$(j "$S" lat_p99_ms)" "<= 3 x $rp99 + 20" "v <= 3 * $rp99 + 20"
check "hub fds after vs before" "$fd1 vs $fd0" "equal" "$fd1 == $fd0"
kill -0 "$HUB_PID" 2>/dev/null
check "hub alive" "$?" "0" 'v == 0'
stop_hub TERM

finish
