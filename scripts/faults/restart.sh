#!/usr/bin/env bash
# Restarts.
#
# Part 1, kill -9 and start again on the same port:
#  - the new hub binds the same port at once (subscribers were connected);
#  - event ids keep increasing: the first id after the restart is above the
#    last one before it;
#  - a client reconnecting with the old Last-Event-ID first gets an event
#    `history-lost` whose data names that id and whose id is the channel's
#    newest, then live events (the next one is the next published: its id
#    is the one the publisher was answered, above the newest; ids are
#    time-based, so not newest + 1);
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
# Readiness and ends: subscribers are waited for (ready file, status
# count), they end when the hub closes their stream (--exit-when-closed);
# SIGTERM is sent once the hub has published a stated number of events
# under load, the publisher ends when its connection does. The SIGTERM
# bound is the configured grace period (--shutdown-grace).
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
bg "$WORK/subs1" sub --addr "$ADDR" --channel r --n 50 --duration "$CAP" --exit-when-closed --ready-file "$WORK/subs1.ready"
subs1_pid=$BG_PID
wait_file "$WORK/subs1.ready" 10 || die "subscribers did not connect"
kit pub --addr "$ADDR" --channel r --count 20 --rate 200 --duration "$CAP" >"$WORK/pub1"
L1=$(j "$WORK/pub1" last_id)
kill -9 "$HUB_PID"
wait "$HUB_PID" 2>/dev/null
forget_pid "$HUB_PID"
t0=$(date +%s%N)
start_hub --port "$P1" -- --shutdown-grace "$GRACE"
t1=$(date +%s%N)
check "restarted on the same port" "$PORT" "$P1" "v == $P1"
note "restart until listening, ms" "$(((t1 - t0) / 1000000))"
wait_bg "$subs1_pid"
check "subscribers saw the kill as end of stream" "$(($(j "$WORK/subs1" closed_eof) + $(j "$WORK/subs1" closed_reset)))" "50" 'v == 50'

kit pub --addr "$ADDR" --channel r --count 20 --rate 200 --duration "$CAP" >"$WORK/pub2"
F2=$(j "$WORK/pub2" first_id) L2=$(j "$WORK/pub2" last_id)
check "ids keep increasing across the restart" "$L1 -> $F2" "first after > last before" "$F2 > $L1"

# Old id: history-lost, then live events.
bg "$WORK/peek_old" peek --addr "$ADDR" --channel r --last-id "$L1" --events 2 --timeout 5 --ready-file "$WORK/peek_old.ready"
peek_pid=$BG_PID
wait_file "$WORK/peek_old.ready" 5 || die "peek did not subscribe"
kit pub --addr "$ADDR" --channel r --count 4 --rate 100 --duration "$CAP" --log "$WORK/pub3.log" >"$WORK/pub3"
wait_bg "$peek_pid"
K=$WORK/peek_old
mapfile -t ID3 < <(awk '{print $1}' "$WORK/pub3.log")
check "old Last-Event-ID: first event" "$(jq -r '.events[0].event' "$K")" "history-lost" 'v == "history-lost"'
check "history-lost id = channel's newest" "$(jq -r '.events[0].id' "$K")" "$L2" "v == $L2"
check "history-lost data names the id sent" "$(jq -r '.events[0].data | fromjson | .last_event_id' "$K")" "$L1" "v == \"$L1\""
check "then the live event (the next published, id > newest)" "$(jq -r '.events[1].id' "$K")" "${ID3[0]} (> $L2)" \
    "v == ${ID3[0]} && v > $L2"
note "history-lost data" "$(jq -r '.events[0].data' "$K")"

# An id never issued (from the future) is lost too.
kit peek --addr "$ADDR" --channel r --last-id 99999999999999999 --events 1 --timeout 2 >"$WORK/peek_future"
check "never-issued Last-Event-ID: first event" "$(jq -r '.events[0].event' "$WORK/peek_future")" "history-lost" 'v == "history-lost"'

# An id the hub holds: exactly what was missed (the ids the publisher was
# answered after it).
want="${ID3[1]},${ID3[2]},${ID3[3]}"
kit peek --addr "$ADDR" --channel r --last-id "${ID3[0]}" --events 3 --timeout 2 >"$WORK/peek_held"
check "held Last-Event-ID: replay of the 3 missed" "$(jq -r '[.events[].id] | map(tostring) | join(",")' "$WORK/peek_held")" \
    "$want" "v == \"$want\""
stop_hub TERM
check "hub exit code after part 1" "$HUB_RC" "0" 'v == 0'

log "part 2: SIGTERM under load ($SUBS subscribers + 100 not reading, 200 events/s)"
start_hub -- --shutdown-grace "$GRACE" --heartbeat-interval 15
bg "$WORK/subs" sub --addr "$ADDR" --channel t --n "$SUBS" --duration "$CAP" --exit-when-closed \
    --src-count 2 --ready-file "$WORK/subs.ready"
subs_pid=$BG_PID
bg "$WORK/stalled" sub --addr "$ADDR" --channel t --n 100 --noread --rcvbuf 4096 --duration "$CAP" \
    --ready-file "$WORK/stalled.ready"
stalled_pid=$BG_PID
wait_file "$WORK/subs.ready" 30 || die "subscribers did not connect"
wait_file "$WORK/stalled.ready" 30 || die "stalled subscribers did not connect"
wait_status ".subscribers >= $((SUBS + 100))" 20 || log "warning: not all subscribers registered"
note "subscribers when SIGTERM is sent" "$(status_json | jq .subscribers)"
bg "$WORK/pub" pub --addr "$ADDR" --channel t --rate 200 --duration "$CAP"
pub_pid=$BG_PID
# Under load: SIGTERM once 400 events (2 s at 200/s) have been published.
wait_status '.events_published >= 400' 20 || log "warning: the publisher did not reach 400 events"
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
stop_bg "$stalled_pid"
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
