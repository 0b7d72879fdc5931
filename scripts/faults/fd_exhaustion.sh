#!/usr/bin/env bash
# File-descriptor exhaustion.
#
# Part 1, the EMFILE path. The hub sizes its connection cap from the
# open-file limit it finds at start (limit - 320 streams, plus 256
# connections of headroom for publishes and health checks), so to make accept() fail
# the limit has to shrink under it: the hub starts with nofile 1024 and
# --max-connections 1000, then its limit is lowered to 256 while it runs
# (prlimit --pid). A subscriber and a publisher (20 events/s) connect first;
# then 400 streams are opened at once. Checks:
#  - the hub's open fds reach the limit and its log says "accept failed";
#  - no spin: the hub's CPU over 5 s while exhausted is <= 10 % (a spinning
#    loop would show ~100 %);
#  - the warning is not repeated for every retry: <= 1 line per second
#    exhausted;
#  - the first subscriber keeps receiving every event, the publisher keeps
#    being answered;
#  - when 200 held streams are closed, the waiting connections are accepted
#    (none left without an answer) and a new /health request gets 200.
# Part 2, prlimit --nofile=256:256 at start and --max-connections 1000 (above
# what the limit allows): the hub caps itself below the limit, so 400
# streams opened at once never make accept() fail: those it cannot take get
# 503 with Retry-After (none closed without an answer, none left waiting),
# its fds stay below the limit, the subscriber keeps receiving.
# Part 3, nofile 512 and the default --max-connections (streams: limit - 320
# = 192): 260 streams at 500/s: exactly 192 accepted, the other 68 get 503
# with Retry-After and are counted as connection_limit; while the hub is full
# of streams, /health and a publish are still answered 200 (headroom).
#
# Readiness and ends, no fixed lifetimes: the holder says when all its
# connections are connected (part 1) or answered (parts 2, 3); the script
# then waits for the hub's fd count to reach the limit, measures over a
# stated window, tells the holder to close 200 streams, and the holder ends
# by itself once no connection is left waiting (or at its cap: then the
# check "left without an answer" fails). Publisher and watcher are stopped
# explicitly; the watcher first reads up to the last acknowledged id.
# The CPU bound (10 %) is a spin detector: a loop that retries accept()
# without waiting shows ~100 % of a core; the measured idle-exhausted cost
# is ~3 %.
#
# usage: fd_exhaustion.sh

source "$(dirname "$0")/lib.sh"
[[ $# -eq 0 ]] || die "no options"

build

# watcher LABEL CHANNEL: a reading subscriber and a 20 events/s publisher.
watcher() {
    bg_prio "$WORK/$1.watch" sub --addr "$ADDR" --channel "$2" --n 1 --lat --duration "$CAP" \
        --ready-file "$WORK/$1.ready" --ack-file "$WORK/$1.acked"
    WATCH_PID=$BG_PID
    wait_file "$WORK/$1.ready" 10 || die "watcher did not connect"
    bg "$WORK/$1.pub" pub --addr "$ADDR" --channel "$2" --rate 20 --duration "$CAP" --ack-file "$WORK/$1.acked"
    PUB_PID=$BG_PID
    wait_until 10 test -s "$WORK/$1.acked" || die "publisher got no answer"
}

log "part 1: nofile 1024 lowered to 256 at run time, --max-connections 1000, 400 streams"
start_hub --nofile 1024 -- --max-connections 1000 --heartbeat-interval 15
watcher p1 fd
prlimit --pid "$HUB_PID" --nofile=256:256 || die "prlimit --pid failed"
check "hub open-file limit (lowered)" "$(awk '/Max open files/ {print $4}' "/proc/$HUB_PID/limits")" "256" 'v == 256'
bg "$WORK/hold" hold --addr "$ADDR" --n 400 --rate 2000 --path "/events?channel=fd" \
    --duration "$CAP" --close-count 200 --ready-when connected --ready-file "$WORK/hold.ready"
hold_pid=$BG_PID
wait_file "$WORK/hold.ready" 20 || die "holder did not connect"
wait_until 10 grep -q 'accept failed' "$HUB_LOG" || log "warning: no accept failure logged"
t_ex0=$(date +%s.%N)
fd_full=$(fd_count)
cpu=$(cpu_pct 5) # the measurement window
warn_lines=$(log_count 'accept failed')
t_ex1=$(date +%s.%N)
stop_bg "$hold_pid" # first signal: close 200 streams; it ends once none is left waiting
health=$(taskset -c "$CLIENT_CPU" curl -s -m 5 -o /dev/null -w '%{http_code}' "http://$ADDR/health")
stop_bg "$PUB_PID"
stop_bg "$WATCH_PID"
H=$WORK/hold
# Exhausted from the first failed accept (before t_ex0) to t_ex1: at least
# t_ex1 - t_ex0, which is the allowance (1 line per second).
exhausted_s=$(awk -v a="$t_ex0" -v b="$t_ex1" 'BEGIN {printf "%.1f", b - a + 1}')

check "hub fds while exhausted" "$fd_full" ">= 254" "v >= 254"
check "hub log: accept failed (EMFILE)" "$(grep -c 'accept failed: Too many open files' "$HUB_LOG")" ">= 1" 'v >= 1'
check "hub CPU while exhausted, % over 5 s" "$cpu" "<= 10 (no spin)" 'v <= 10'
check "accept-failed warnings in ~${exhausted_s}s exhausted" "$warn_lines" "<= ${exhausted_s%.*} (1/s)" "v <= ${exhausted_s%.*}"
note "streams accepted before the close / from the backlog after it" "$(($(j "$H" status_200) - $(j "$H" accepted_after_close))) / $(j "$H" accepted_after_close)"
check "waiting connections accepted after the close" "$(j "$H" accepted_after_close)" ">= 1" 'v >= 1'
check "connections left without an answer" "$(($(j "$H" waiting_without_answer) + $(j "$H" closed_without_answer)))" "0" 'v == 0'
check "new /health after descriptors freed" "$health" "200" 'v == 200'
W=$WORK/p1.watch P=$WORK/p1.pub
check "watcher: every event, no gap, not closed" \
    "$(j "$W" count_min)/$(j "$P" published) gaps $(j "$W" gap_ids) eof $(j "$W" closed_eof)" "all, 0, 0" \
    "$(j "$W" count_min) == $(j "$P" published) && $(j "$W" gap_ids) == 0 && $(j "$W" framing_errors) == 0 && $(j "$W" closed_eof) == 0 && $(j "$P" published) > 0"
note "watcher latency p50/p99/max ms" "$(j "$W" lat_p50_ms) / $(j "$W" lat_p99_ms) / $(j "$W" lat_max_ms)"
check "publisher errors" "$(($(j "$P" non200) + $(j "$P" conn_errors) + $(j "$P" lost_inflight)))" "0" 'v == 0'
stop_hub TERM
check "hub exit code (part 1)" "$HUB_RC" "0" 'v == 0'

log "part 2: nofile 256 at start, --max-connections 1000, 400 streams"
start_hub --nofile 256 -- --max-connections 1000 --heartbeat-interval 15
watcher p2 fd
bg "$WORK/hold2" hold --addr "$ADDR" --n 400 --rate 2000 --path "/events?channel=fd" --duration "$CAP" \
    --ready-file "$WORK/hold2.ready"
hold_pid=$BG_PID
wait_file "$WORK/hold2.ready" 20 || log "warning: not every connection was answered"
fd_max=$(fd_count)
cpu=$(cpu_pct 2) # the measurement window
stop_bg "$hold_pid"
stop_bg "$PUB_PID"
stop_bg "$WATCH_PID"
H=$WORK/hold2 W=$WORK/p2.watch P=$WORK/p2.pub
note "streams accepted / 503 (of 400)" "$(j "$H" status_200) / $(j "$H" status_503)"
check "fds while full (limit 256)" "$fd_max" "< 250" 'v < 250'
check "accept failures (EMFILE)" "$(log_count 'accept failed')" "0" 'v == 0'
check "refused: 503 with Retry-After" "$(j "$H" status_503_retry_after)" "= 400 - accepted" "v == 400 - $(j "$H" status_200) && v > 0"
check "refused without an answer / still waiting" "$(j "$H" closed_without_answer) / $(j "$H" waiting_without_answer)" "0 / 0" \
    "$(j "$H" closed_without_answer) == 0 && $(j "$H" waiting_without_answer) == 0"
check "hub CPU while full, % over 2 s" "$cpu" "<= 10" 'v <= 10'
check "watcher: every event, no gap, not closed" \
    "$(j "$W" count_min)/$(j "$P" published) gaps $(j "$W" gap_ids) eof $(j "$W" closed_eof)" "all, 0, 0" \
    "$(j "$W" count_min) == $(j "$P" published) && $(j "$W" gap_ids) == 0 && $(j "$W" closed_eof) == 0 && $(j "$P" published) > 0"
stop_hub TERM
check "hub exit code (part 2)" "$HUB_RC" "0" 'v == 0'

log "part 3: nofile 512, default --max-connections"
start_hub --nofile 512 -- --heartbeat-interval 15
maxc=$(grep -o 'effective max_connections=[0-9]*' "$HUB_LOG" | sed 's/.*=//')
check "derived max_connections (streams)" "$maxc" "512 - 320 = 192" "v == 192"
bg "$WORK/hold3" hold --addr "$ADDR" --n $((maxc + 68)) --rate 500 --path "/events?channel=fd3" --duration "$CAP" \
    --ready-file "$WORK/hold3.ready"
hold_pid=$BG_PID
wait_file "$WORK/hold3.ready" 20 || log "warning: not every connection was answered"
health=$(taskset -c "$CLIENT_CPU" curl -s -m 5 -o /dev/null -w '%{http_code}' "http://$ADDR/health")
pubcode=$(taskset -c "$CLIENT_CPU" curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d '{"channel":"fd3","data":"while full"}' "http://$ADDR/events/broadcast")
status_json >"$WORK/status3"
stop_bg "$hold_pid"
H=$WORK/hold3
over=$(($(j "$H" opened) - maxc))
check "streams accepted" "$(j "$H" status_200)" "$maxc" "v == $maxc"
check "over the stream limit: 503 with Retry-After" "$(j "$H" status_503_retry_after)" "$over" "v == $over"
check "over: closed without answer / waiting" "$(j "$H" closed_without_answer) / $(j "$H" waiting_without_answer)" "0 / 0" \
    "$(j "$H" closed_without_answer) == 0 && $(j "$H" waiting_without_answer) == 0"
check "connection_limit counter" "$(jq '.rejected.connection_limit' "$WORK/status3")" "$over" "v == $over"
check "while full of streams: /health, publish" "$health, $pubcode" "200, 200" "$health == 200 && $pubcode == 200"
check "hub log: no accept failure" "$(log_count 'accept failed')" "0" 'v == 0'
stop_hub TERM
check "hub exit code (part 3)" "$HUB_RC" "0" 'v == 0'

finish
