#!/usr/bin/env bash
# Restarts.
#
# Part 1, kill -9 and start again on the same port:
#  - the new hub binds the same port at once (subscribers were connected);
#  - event ids keep increasing: the first id after the restart is above the
#    last one before it;
#  - a client reconnecting with the old Last-Event-ID first gets an event
#    `history-lost` whose data names that id and whose id is the channel's
#    newest, then live events (the next one is newest + 1);
#  - the same with a Last-Event-ID that was never issued; and a client
#    resuming from an id the new hub does hold gets exactly what it missed.
# Part 2, SIGTERM under load: S subscribers (plus 100 that never read) and a
# publisher at 200 events/s, then SIGTERM:
#  - the hub exits 0, within the grace period (--shutdown-grace 5), and logs
#    "shutdown complete";
#  - every reading subscriber gets a clean end of stream (the last chunk of
#    its chunked body, then FIN, not a reset), with no gap, and has every
#    event the publisher got an answer for.
#
# usage: restart.sh [--subscribers 3000] [--grace 5]

source "$(dirname "$0")/lib.sh"

SUBS=3000 GRACE=5
while [[ $# -gt 0 ]]; do
    case $1 in
        --subscribers) SUBS=$2; shift 2 ;;
        --grace) GRACE=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done

build

log "part 1: kill -9 and restart on the same port"
start_hub -- --shutdown-grace "$GRACE"
P1=$PORT
bg "$WORK/subs1" sub --addr "$ADDR" --channel r --n 50 --duration 4 --ready-file "$WORK/subs1.ready"
wait_file "$WORK/subs1.ready" 10 || die "subscribers did not connect"
kit pub --addr "$ADDR" --channel r --count 20 --rate 200 --duration 5 >"$WORK/pub1"
L1=$(j "$WORK/pub1" last_id)
sleep 0.3
kill -9 "$HUB_PID"
wait "$HUB_PID" 2>/dev/null
forget_pid "$HUB_PID"
t0=$(date +%s%N)
start_hub --port "$P1" -- --shutdown-grace "$GRACE"
t1=$(date +%s%N)
check "restarted on the same port" "$PORT" "$P1" "v == $P1"
note "restart until listening, ms" "$(((t1 - t0) / 1000000))"
wait_bg "$BG_PID"
check "subscribers saw the kill as end of stream" "$(($(j "$WORK/subs1" closed_eof) + $(j "$WORK/subs1" closed_reset)))" "50" 'v == 50'

kit pub --addr "$ADDR" --channel r --count 20 --rate 200 --duration 5 >"$WORK/pub2"
F2=$(j "$WORK/pub2" first_id) L2=$(j "$WORK/pub2" last_id)
check "ids keep increasing across the restart" "$L1 -> $F2" "first after > last before" "$F2 > $L1"

# Old id: history-lost, then live events.
bg "$WORK/peek_old" peek --addr "$ADDR" --channel r --last-id "$L1" --events 2 --timeout 5
peek_pid=$BG_PID
sleep 0.5
kit pub --addr "$ADDR" --channel r --count 1 --rate 10 --duration 2 >"$WORK/pub3"
wait_bg "$peek_pid"
K=$WORK/peek_old
check "old Last-Event-ID: first event" "$(jq -r '.events[0].event' "$K")" "history-lost" 'v == "history-lost"'
check "history-lost id = channel's newest" "$(jq -r '.events[0].id' "$K")" "$L2" "v == $L2"
check "history-lost data names the id sent" "$(jq -r '.events[0].data | fromjson | .last_event_id' "$K")" "$L1" "v == \"$L1\""
check "then the live event (newest + 1)" "$(jq -r '.events[1].id' "$K")" "$((L2 + 1))" "v == $((L2 + 1))"
note "history-lost data" "$(jq -r '.events[0].data' "$K")"

# An id never issued (from the future) is lost too.
kit peek --addr "$ADDR" --channel r --last-id 99999999999999999 --events 1 --timeout 2 >"$WORK/peek_future"
check "never-issued Last-Event-ID: first event" "$(jq -r '.events[0].event' "$WORK/peek_future")" "history-lost" 'v == "history-lost"'

# An id the hub holds: exactly what was missed.
L3=$(j "$WORK/pub3" last_id)
kit peek --addr "$ADDR" --channel r --last-id $((L3 - 3)) --events 3 --timeout 2 >"$WORK/peek_held"
check "held Last-Event-ID: replay of the 3 missed" "$(jq -r '[.events[].id] | map(tostring) | join(",")' "$WORK/peek_held")" \
    "$((L3 - 2)),$((L3 - 1)),$L3" "v == \"$((L3 - 2)),$((L3 - 1)),$L3\""
stop_hub TERM
check "hub exit code after part 1" "$HUB_RC" "0" 'v == 0'

log "part 2: SIGTERM under load ($SUBS subscribers + 100 not reading, 200 events/s)"
start_hub -- --shutdown-grace "$GRACE" --heartbeat-interval 15
bg "$WORK/subs" sub --addr "$ADDR" --channel t --n "$SUBS" --duration 60 --exit-when-closed \
    --src-count 2 --ready-file "$WORK/subs.ready"
subs_pid=$BG_PID
bg "$WORK/stalled" sub --addr "$ADDR" --channel t --n 100 --noread --rcvbuf 4096 --duration 60
stalled_pid=$BG_PID
wait_file "$WORK/subs.ready" 30 || die "subscribers did not connect"
wait_status ".subscribers >= $((SUBS + 100))" 20 || log "warning: not all subscribers registered"
note "subscribers when SIGTERM is sent" "$(status_json | jq .subscribers)"
bg "$WORK/pub" pub --addr "$ADDR" --channel t --rate 200 --duration 30
pub_pid=$BG_PID
sleep 3
pid=$HUB_PID
t0=$(date +%s%N)
kill -TERM "$pid"
while kill -0 "$pid" 2>/dev/null; do
    sleep 0.01
    (($(date +%s%N) - t0 > (GRACE + 5) * 1000000000)) && break
done
t1=$(date +%s%N)
wait "$pid"
rc=$?
forget_pid "$pid"
HUB_PID=""
kill "$stalled_pid" 2>/dev/null
wait_bg "$stalled_pid"
wait_bg "$subs_pid"
wait_bg "$pub_pid"
S=$WORK/subs P=$WORK/pub
ms=$(((t1 - t0) / 1000000))
check "exit code after SIGTERM" "$rc" "0" 'v == 0'
check "exit after SIGTERM, ms" "$ms" "<= grace $((GRACE * 1000))" "v <= $((GRACE * 1000))"
check "hub log: shutdown complete" "$(grep -c 'shutdown complete' "$HUB_LOG")" "1" 'v == 1'
check "subscribers ended cleanly (FIN)" "$(j "$S" closed_eof)" "$SUBS" "v == $SUBS"
check "subscribers reset / still open" "$(j "$S" closed_reset) / $(j "$S" open_at_end)" "0 / 0" \
    "$(j "$S" closed_reset) == 0 && $(j "$S" open_at_end) == 0"
check "gaps in any stream" "$(j "$S" gap_ids)" "0" 'v == 0'
check "streams ended with the last chunk (0-size)" "$(j "$S" last_chunk)" "$(j "$S" chunked) (chunked ones)" "v == $(j "$S" chunked) && $(j "$S" framing_errors) == 0"
check "every acked event delivered (min last id - last acked)" "$(($(j "$S" last_id_min) - $(j "$P" last_id)))" ">= 0" 'v >= 0'
note "publisher: answered / unanswered in flight / its connection ended by" \
    "$(j "$P" published) / $(j "$P" lost_inflight) / $( (($(j "$P" conn_errors) > 0)) && echo reset || echo FIN)"
note "spread of the subscribers' end of stream, s" "$(j "$S" eof_spread_s)"

finish
