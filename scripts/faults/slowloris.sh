#!/usr/bin/env bash
# Slowloris: thousands of connections that send a request one byte per second
# (drip) or nothing at all (silent), against --header-timeout 2, while
# ordinary clients use the hub: /health on a new connection every 50 ms, a
# keep-alive /events/status poller, and a subscriber receiving 50 events/s.
#
# The ordinary clients run at nice -10 so that the slowloris processes on
# the same core do not delay them (they measure the hub, not their core).
# Two phases on one hub: a reference phase without the attack (ended after
# --ref-count /health probes), then the attack: two slowloris processes of
# N/2 connections each (half drip, half silent), the second started once
# every connection of the first is established. Each slowloris process ends
# by itself when the hub has closed all its connections; the ordinary
# clients are then told to stop. faultkit busy samples, per 100 ms window
# (one timer tick), the hub's CPU time and run-queue wait and the clients'
# run-queue wait, during the attack.
#
# Checks (T below is the hub's longest loop turn in this attack, bounded
# from the kernel's accounting: the longest stretch in which the hub never
# slept, + 20 ms for the two partial 10 ms samples at its ends, and at least
# the hub's busiest 100 ms of CPU + run-queue wait):
#  - every slow connection is closed by the hub at its deadline:
#    no earlier than header-timeout - 50 ms - T after it connected (the hub
#    reads the clock once per loop turn, so a connection accepted late in a
#    long turn has its deadline counted from the turn's start; 50 ms for the
#    client's own clock reads), and no later than header-timeout + 2 ticks
#    (wheel granularity, and the accept of a burst spreading over a tick)
#    + T (accepted that much after it connected) + S, the slowloris
#    clients' busiest 100 ms (CPU + wait: they notice a close only when
#    they run) + K, the run-queue wait of the ksoftirqd threads (most in
#    100 ms, summed over CPUs): under load the kernel defers loopback
#    packet processing to them, which delays every packet and is accounted
#    to neither the hub nor a client;
#  - a dripping connection (partial request) gets 408 first; a silent one is
#    closed without an answer; the header_timeout counter counts the 408s;
#  - ordinary clients: no failure, no non-200, and
#      p99(attack) <= 3 x p99(reference) + T + P + K
#    (a request that arrives while the hub closes a burst of deadlines, or
#    accepts a burst of connections, waits for that turn; P is the probe's
#    own busiest run-queue wait in 100 ms: it shares core 1 with the
#    attack). For /health, which opens a new connection and so waits in the
#    accept queue behind a whole burst, T is the hub's busiest second
#    (CPU + wait, T1s) when that is longer. The subscriber gets every
#    event, no gap, with the same bound as the status poller;
#  - afterwards the hub's open fds are back to where they were (waited for:
#    lingering closes after a 408 last up to 2 s).
#
# usage: slowloris.sh [--n 4000] [--header-timeout 2] [--ref-count 100]

source "$(dirname "$0")/lib.sh"

N=4000 HT=2 REFN=100
while [[ $# -gt 0 ]]; do
    case $1 in
        --n) N=$2; shift 2 ;;
        --header-timeout) HT=$2; shift 2 ;;
        --ref-count) REFN=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
HALF=$((N / 2))

build
start_hub -- --header-timeout "$HT" --heartbeat-interval 15
fd0=$(fd_count)

# ordinary LABEL [HEALTH_COUNT]: start the ordinary clients (until told to
# stop, or until the /health probe has made HEALTH_COUNT requests).
ordinary() {
    local label=$1 count=()
    [[ -n ${2:-} ]] && count=(--count "$2")
    bg_prio "$WORK/$label.sub" sub --addr "$ADDR" --channel ord --n 1 --lat --duration "$CAP" \
        --ready-file "$WORK/$label.ready" --ack-file "$WORK/$label.acked"
    SUB_PID=$BG_PID
    wait_file "$WORK/$label.ready" 10 || die "subscriber did not connect"
    bg_prio "$WORK/$label.pub" pub --addr "$ADDR" --channel ord --rate 50 --duration "$CAP" --ack-file "$WORK/$label.acked"
    PUB_PID=$BG_PID
    bg_prio "$WORK/$label.health" probe --addr "$ADDR" --path /health --interval 0.05 --duration "$CAP" "${count[@]}"
    HEALTH_PID=$BG_PID
    bg_prio "$WORK/$label.ka" probe --addr "$ADDR" --path /events/status --keepalive --interval 0.1 --duration "$CAP"
    KA_PID=$BG_PID
}
# stop_ordinary: the probes, then the publisher, then the subscriber (which
# first reads up to the publisher's last acknowledged id).
stop_ordinary() {
    stop_bg "$HEALTH_PID" "$KA_PID"
    stop_bg "$PUB_PID"
    stop_bg "$SUB_PID"
}

log "reference phase: ordinary clients only, until $REFN /health requests"
ordinary ref "$REFN"
wait_bg "$HEALTH_PID"
stop_ordinary

log "attack: $N slow connections (half drip, half silent) + ordinary clients"
before=$(status_json)
ordinary atk
bg "$WORK/slow1" slowloris --addr "$ADDR" --n "$HALF" --mode mixed --interval 1 --duration $((HT + 10)) --src-count 2 \
    --ready-file "$WORK/slow1.ready"
s1=$BG_PID
KSI=$(ksoftirqd_pids)
start_busy "$WORK/busy" "hub=$HUB_PID,health=$HEALTH_PID,ka=$KA_PID,sub=$SUB_PID,slow1=$s1${KSI:+,$KSI}"
wait_file "$WORK/slow1.ready" 10 || die "first slowloris batch did not connect"
bg "$WORK/slow2" slowloris --addr "$ADDR" --n "$HALF" --mode mixed --interval 1 --duration $((HT + 10)) --src-ips 127.0.0.4,127.0.0.5
s2=$BG_PID
# A second sampler for the second batch's client (the first one's pid list
# is fixed when it starts).
bg "$WORK/busy2" busy --pids "slow2=$s2" --interval-ms 10 --window-ms 100 --duration "$CAP"
busy2=$BG_PID
wait_bg "$s1"
wait_bg "$s2"
stop_ordinary
stop_bg "$BUSY_PID" "$busy2"
wait_until 10 fds_at_most "$fd0" || log "warning: hub fds did not return to $fd0"
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
B=$WORK/busy
HB=$(awk -v s="$(j "$B" hub_stretch_max_ms)" -v b="$(j "$B" hub_busy_max_ms)" 'BEGIN {t = s + 20; printf "%.1f", (t > b ? t : b)}')
SB=$(awk -v a="$(j "$B" slow1_busy_max_ms)" -v b="$(j "$WORK/busy2" slow2_busy_max_ms)" 'BEGIN {print (a > b ? a : b)}')
note "hub busiest 100 ms during the attack: CPU / run-queue wait / both, ms" "$(j "$B" hub_cpu_max_ms) / $(j "$B" hub_wait_max_ms) / $(j "$B" hub_busy_max_ms)"
note "hub longest stretch without sleeping, ms; T (longest turn bound)" "$(j "$B" hub_stretch_max_ms); $HB"
note "hub CPU during the attack, ms in all; per slow connection, us" "$(j "$B" hub_cpu_total_ms); $(awk -v c="$(j "$B" hub_cpu_total_ms)" -v n="$N" 'BEGIN {printf "%.1f", c * 1000 / n}')"
note "slowloris clients' busiest 100 ms (CPU + wait), ms (S)" "$SB"
# K: the most run-queue wait of each ksoftirqd thread in 100 ms, summed.
K=$(jq -r '[to_entries[] | select(.key | test("^ksi[0-9]+_wait_max_ms$")) | .value] | add // 0' "$B" | awk '{printf "%.1f", $1}')
note "ksoftirqd run-queue wait, most in 100 ms summed over CPUs, ms (K)" "$K"
lo=$(awk -v h="$HT" -v T="$HB" 'BEGIN {printf "%.1f", h * 1000 - 50 - T}')
hi=$(awk -v h="$HT" -v H="$HB" -v S="$SB" -v K="$K" 'BEGIN {printf "%.1f", h * 1000 + 200 + H + S + K}')
for m in drip silent; do
    check "$m: earliest close after connect, ms" "$(min2 ${m}_close_min_ms)" ">= header-timeout - 50 - T $HB = $lo" "v >= $lo"
    check "$m: latest close after connect, ms" "$(max2 ${m}_close_max_ms)" "<= header-timeout + 2 ticks + T $HB + S $SB + K $K = $hi" "v <= $hi"
    note "$m: close after connect p50 / p99 ms" "$(j "$WORK/slow1" ${m}_close_p50_ms) / $(j "$WORK/slow1" ${m}_close_p99_ms) (first batch); $(j "$WORK/slow2" ${m}_close_p50_ms) / $(j "$WORK/slow2" ${m}_close_p99_ms) (second)"
done
ht_count=$(($(jq '.rejected.header_timeout' <<<"$after") - $(jq '.rejected.header_timeout' <<<"$before")))
check "header_timeout counter (408s)" "$ht_count" "$((N / 2))" "v == $((N / 2))"

for p in health ka; do
    r=$WORK/ref.$p a=$WORK/atk.$p
    check "$p: failures + non-200 during the attack" "$(($(j "$a" failed) + $(j "$a" non200)))" "0 of $(j "$a" ok)" 'v == 0'
    note "$p latency p50/p99/max ms, reference" "$(j "$r" lat_p50_ms) / $(j "$r" lat_p99_ms) / $(j "$r" lat_max_ms) (n=$(j "$r" lat_n))"
    note "$p latency p50/p99/max ms, attack" "$(j "$a" lat_p50_ms) / $(j "$a" lat_p99_ms) / $(j "$a" lat_max_ms) (n=$(j "$a" lat_n))"
    rp99=$(j "$r" lat_p99_ms) PW=$(j "$B" ${p}_wait_max_ms) TT=$HB TN=T
    # /health opens a new connection: it waits in the accept queue behind
    # the burst of slow connections that arrived before it, so its T is the
    # hub's busiest second (CPU + wait), when that is longer.
    if [[ $p == health ]]; then
        TT=$(awk -v t="$HB" -v b="$(j "$B" hub_busy2_max_ms)" 'BEGIN {printf "%.1f", (b > t ? b : t)}') TN=T1s
    fi
    bound=$(awk -v r="$rp99" -v H="$TT" -v P="$PW" -v K="$K" 'BEGIN {printf "%.3f", 3 * r + H + P + K}')
    check "$p p99 during the attack, ms" "$(j "$a" lat_p99_ms)" "<= 3 x ref $rp99 + $TN $TT + P $PW + K $K = $bound" "v <= $bound"
done
S=$WORK/atk.sub P=$WORK/atk.pub
check "subscriber: events = published, no gap" "$(j "$S" count_min)/$(j "$P" published) gaps $(j "$S" gap_ids)" "all, 0" \
    "$(j "$S" count_min) == $(j "$P" published) && $(j "$S" gap_ids) == 0 && $(j "$S" framing_errors) == 0 && $(j "$S" status_200) == 1"
note "subscriber latency p50/p99 ms, reference" "$(j "$WORK/ref.sub" lat_p50_ms) / $(j "$WORK/ref.sub" lat_p99_ms)"
note "subscriber latency p50/p99 ms, attack" "$(j "$S" lat_p50_ms) / $(j "$S" lat_p99_ms)"
rp99=$(j "$WORK/ref.sub" lat_p99_ms) PW=$(j "$B" sub_wait_max_ms)
bound=$(awk -v r="$rp99" -v H="$HB" -v P="$PW" -v K="$K" 'BEGIN {printf "%.3f", 3 * r + H + P + K}')
check "subscriber p99 during the attack, ms" "$(j "$S" lat_p99_ms)" "<= 3 x ref $rp99 + T $HB + P $PW + K $K = $bound" "v <= $bound"
check "hub fds after vs before" "$fd1 vs $fd0" "equal" "$fd1 == $fd0"
kill -0 "$HUB_PID" 2>/dev/null
check "hub alive" "$?" "0" 'v == 0'
stop_hub TERM

finish
