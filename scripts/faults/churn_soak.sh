#!/usr/bin/env bash
# Churn soak: thousands of subscribers connecting and leaving continuously
# (random lifetimes, 10 % of them leave with a reset; 30 % of those that
# leave come back as a new connection with Last-Event-ID = the last id they
# saw) while events are published at a steady rate; then everyone leaves and
# the hub must return to where it was.
#
# Checks:
#  - every lifetime's ids are contiguous (no gap, no duplicate) from the first
#    event it saw to the last, and it saw every event published while it was
#    there: from the first one sent after its response head arrived (so
#    appended after it subscribed) to the last one acknowledged when it
#    decided to leave. Before leaving, a subscriber reads until it has that
#    id (the publisher keeps the last acknowledged id in a file), at most
#    5 s; the wait is reported. faultkit check verifies each lifetime against
#    the publisher's log;
#  - a subscriber that resumes with Last-Event-ID starts exactly at the next
#    id (never history-lost: the 1 MiB history holds ~40 s here);
#  - no subscriber was closed by the hub, none refused, none dropped as slow;
#  - afterwards: subscribers 0, connections 1 (the status request itself),
#    open fds exactly the baseline, RSS within 1 MiB of the baseline (see
#    below), and the hub idle: utime+stime over 5 s <= 2 ticks (20 ms),
#    although --heartbeat-interval is 1 s (a timer left behind for a closed
#    connection would keep firing).
# Readiness and ends: the soak is a stated length (--duration) of churn;
# the publisher runs until the churn client has finished (its subscribers
# left once they had the last acknowledged id) and is then stopped. The
# warm-up fills the history with a stated number of events (--count), and
# "settled" means subscribers 0, connections 1 and the hub's open fds back
# to the count it had at start (lingering closes done), waited for, bounded.
# The idle-CPU figure is measured over a stated 5 s window.
# The baseline is taken after a warm-up (the history filled, one round of
# the full population connected and gone), so pages that stay resident by
# design (the ring, the slab and timer slots up to the peak population) are
# in it. A leak of 16 bytes per connection over a 5-minute soak (~100k
# connections) would be 1.6 MB and exceed the 1 MiB tolerance.
#
# usage: churn_soak.sh [--duration 300] [--concurrency 2000] [--rate 200]
#        [--life-min 0.5] [--life-max 8] [--reset-frac 0.1] [--resume-frac 0.3]

source "$(dirname "$0")/lib.sh"

DURATION=300 CONC=2000 RATE=200 LIFE_MIN=0.5 LIFE_MAX=8 RESET_FRAC=0.1 RESUME_FRAC=0.3 WARMUP=8
RSS_TOL_KB=1024
while [[ $# -gt 0 ]]; do
    case $1 in
        --duration) DURATION=$2; shift 2 ;;
        --concurrency) CONC=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --life-min) LIFE_MIN=$2; shift 2 ;;
        --life-max) LIFE_MAX=$2; shift 2 ;;
        --reset-frac) RESET_FRAC=$2; shift 2 ;;
        --resume-frac) RESUME_FRAC=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done

build
start_hub -- --heartbeat-interval 1 --history-bytes 1048576
SRC=(--src-count 8)

fd_start=$(fd_count)
# settle: wait until only the status request is connected and the hub's
# descriptors are back to what it had at start (the hub lingers up to 2 s
# after some responses).
settle() {
    wait_status '.subscribers == 0 and .connections.open == 1' 20 || log "warning: connections did not drain"
    wait_until 10 fds_at_most "$fd_start" || log "warning: hub fds did not return to $fd_start"
}

log "warm-up: fill the history, one round of $CONC subscribers (${WARMUP}s)"
# 1 MiB of history holds ~10k of these events: 20k fill it.
kit pub --addr "$ADDR" --channel churn --count 20000 --rate 0 --duration "$CAP" >"$WORK/warm.pub"
bg "$WORK/warm.pub2" pub --addr "$ADDR" --channel churn --duration "$CAP" --rate "$RATE" --seq-start 1000000
warm_pub=$BG_PID
kit churn --addr "$ADDR" --channel churn --concurrency "$CONC" --duration "$WARMUP" \
    --life-min "$LIFE_MIN" --life-max "$LIFE_MAX" --reset-frac "$RESET_FRAC" "${SRC[@]}" >"$WORK/warm.churn"
stop_bg "$warm_pub"
settle
rss0=$(rss_kb) fd0=$(fd_count)
status_json >"$WORK/status0"
log "baseline: rss ${rss0} kB, fds $fd0"

log "soak: ${DURATION}s, $CONC subscribers, lifetimes ${LIFE_MIN}-${LIFE_MAX}s, $RATE events/s"
start_sampler "$WORK/samples" 5
bg "$WORK/pub" pub --addr "$ADDR" --channel churn --duration "$CAP" --rate "$RATE" --log "$WORK/pub.log" \
    --ack-file "$WORK/acked" --seq-start 2000000
pub_pid=$BG_PID
wait_until 10 test -s "$WORK/acked" || die "publisher got no answer"
kit churn --addr "$ADDR" --channel churn --concurrency "$CONC" --duration "$DURATION" \
    --life-min "$LIFE_MIN" --life-max "$LIFE_MAX" --reset-frac "$RESET_FRAC" --resume-frac "$RESUME_FRAC" "${SRC[@]}" \
    --records "$WORK/records" --ack-file "$WORK/acked" --settle-timeout 5 >"$WORK/churn" ||
    die "churn client failed"
stop_bg "$pub_pid" || die "publisher failed"
status_json >"$WORK/status1"
settle
stop_sampler
status_json >"$WORK/status2"
rss1=$(rss_kb) fd1=$(fd_count)
idle_a=$(cpu_ticks)
sleep 5 # the idle-CPU measurement window
idle_b=$(cpu_ticks)
kit check --pub-log "$WORK/pub.log" --records "$WORK/records" --margin-ms 250 >"$WORK/check"

C=$WORK/churn K=$WORK/check
note "published events" "$(j "$WORK/pub" published) at $(j "$WORK/pub" rate | cut -d. -f1)/s"
note "subscriber lifetimes (peak concurrent)" "$(j "$C" lifetimes) ($(j "$C" peak))"
note "events received in total" "$(j "$C" events)"
note "RSS kB every 5 s" "$(series "$WORK/samples" 2)"
note "fds every 5 s" "$(series "$WORK/samples" 3)"
check "publisher errors" "$(($(j "$WORK/pub" non200) + $(j "$WORK/pub" conn_errors)))" "0" 'v == 0'
check "connect failures + non-200" "$(($(j "$C" connect_fail) + $(j "$C" status_other)))" "0" 'v == 0'
check "subscribers closed by the hub" "$(j "$C" server_closed)" "0" 'v == 0'
check "ids: gaps + duplicates in a lifetime" "$(($(j "$C" gap_ids) + $(j "$C" dups)))" "0" 'v == 0'
check "chunked framing errors" "$(j "$C" framing_errors)" "0 ($(j "$C" chunked) chunked streams)" 'v == 0'
check "pub log usable (one connection, in order)" "$(j "$K" pub_log_monotonic)" "true" 'v == "true"'
check "lifetimes checked against the pub log" "$(j "$K" lifetimes_with_events)" ">= 1000" 'v >= 1000'
check "lifetimes missing an event of their span" "$(j "$K" lifetimes_missing_events)" "0 of $(j "$K" lifetimes_with_events)" 'v == 0'
check "resumes (Last-Event-ID) starting right after the last seen (seq + 1)" "$(j "$C" resumed_ok)" ">= 100, all" 'v >= 100'
check "resumes with a wrong start / history-lost" "$(j "$C" resumed_wrong_start) / $(j "$C" resumed_history_lost)" "0 / 0" \
    "$(j "$C" resumed_wrong_start) == 0 && $(j "$C" resumed_history_lost) == 0"
check "lifetimes still missing the last acked id after 5 s" "$(j "$C" tail_missing)" "0" 'v == 0'
note "wait for the last acked event before leaving, p50/p99/max ms" "$(j "$C" tail_wait_p50_ms) / $(j "$C" tail_wait_p99_ms) / $(j "$C" tail_wait_max_ms) (n=$(j "$C" tail_wait_n))"
note "publish ack latency p50/p99/max ms" "$(j "$WORK/pub" ack_p50_ms) / $(j "$WORK/pub" ack_p99_ms) / $(j "$WORK/pub" ack_max_ms)"
check "slow consumers dropped" "$(jq '.slow_consumers_dropped' "$WORK/status2")" "0" 'v == 0'
check "subscribers after" "$(jq '.subscribers' "$WORK/status2")" "0" 'v == 0'
check "connections after (incl. the status request)" "$(jq '.connections.open' "$WORK/status2")" "1" 'v == 1'
check "open fds after vs baseline" "$fd1 vs $fd0" "equal" "$fd1 == $fd0"
check "RSS after - baseline, kB" "$((rss1 - rss0))" "<= $RSS_TOL_KB ($rss0 -> $rss1)" "v <= $RSS_TOL_KB"
note "RSS peak during soak, kB" "$(awk 'BEGIN {m = 0} {if ($2 > m) m = $2} END {print m}' "$WORK/samples")"
check "idle CPU after, ticks in 5 s" "$((idle_b - idle_a))" "<= 2 (20 ms)" 'v <= 2'
kill -0 "$HUB_PID" 2>/dev/null
check "hub alive" "$?" "0" 'v == 0'
stop_hub TERM
check "hub exit code on SIGTERM" "$HUB_RC" "0" 'v == 0'

finish
