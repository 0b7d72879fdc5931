#!/usr/bin/env bash
# Subscribers that leave badly in the middle of a stream, with well-behaved
# watchers on the same channels:
#  - half (N): shutdown(SHUT_WR) after receiving events, then keep reading;
#  - reset (N): SO_LINGER 0 + close (the hub gets an RST);
#    (channel h: 16 KiB events at 20/s, 5 watchers)
#  - partial_rst (NP): SO_RCVBUF 2 KiB and no reading while 256 KiB events
#    flow at 10/s: after 1.5 s more (3.75 MiB) than the receive buffer plus
#    the hub socket's send buffer (about 2 MiB on loopback, measured and
#    reported) has been pushed, so the hub's writev has come back short,
#    inside a frame; then read 3000 bytes and close with unread data (RST).
#    The history (16 MiB) is large enough that none is dropped as slow
#    before it acts (checked: slow_consumers_dropped = 0);
#  - partial_fin (NP): the same, but drain what is queued and close (FIN)
#    while the hub still has the rest of the frame to write.
#    (channel hbig, 2 watchers)
# Each acts at a random time in [1, 3] s ([1.5, 3] s for partial).
#
# Checks: the hub stays up and closes every one of them promptly: once the
# half tool has ended (it ends by itself when all its connections are
# closed: it closed them, or, for the half-closed ones, the hub did), only
# the watchers are subscribed within the write timeout (5 s; a stream the
# hub missed would only go by that timer, and be counted write_stalled:
# checked 0); no ERROR in the hub log; the watchers get every event with no
# gap; afterwards subscribers 0, connections 1 (the status request itself)
# and open fds equal to the baseline (waited for: lingering closes).
# Publishers and watchers are stopped explicitly once the half tool is
# done; the watchers first read up to their publisher's last acked id.
#
# usage: half_closed.sh [--n 100] [--n-partial 25]

source "$(dirname "$0")/lib.sh"

N=100 NP=25
while [[ $# -gt 0 ]]; do
    case $1 in
        --n) N=$2; shift 2 ;;
        --n-partial) NP=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done

build
start_hub -- --history-bytes 16777216 --write-timeout 5 --heartbeat-interval 15
fd0=$(fd_count)
status_json >"$WORK/status0"

WT=5
start_sampler "$WORK/samples"
bg_prio "$WORK/watch" sub --addr "$ADDR" --channel h --n 5 --lat --duration "$CAP" --ready-file "$WORK/watch.ready" \
    --ack-file "$WORK/pub.acked"
watch_pid=$BG_PID
bg "$WORK/watchbig" sub --addr "$ADDR" --channel hbig --n 2 --duration "$CAP" --ready-file "$WORK/watchbig.ready" \
    --ack-file "$WORK/pubbig.acked"
watchbig_pid=$BG_PID
wait_file "$WORK/watch.ready" 10 || die "watchers did not connect"
wait_file "$WORK/watchbig.ready" 10 || die "watchers did not connect"
bg "$WORK/pub" pub --addr "$ADDR" --channel h --rate 20 --size 16384 --duration "$CAP" --ack-file "$WORK/pub.acked"
pub_pid=$BG_PID
bg "$WORK/pubbig" pub --addr "$ADDR" --channel hbig --rate 10 --size 262144 --duration "$CAP" --ack-file "$WORK/pubbig.acked"
pubbig_pid=$BG_PID
bg "$WORK/half" half --addr "$ADDR" --channel h --partial-channel hbig --n "$N" --n-partial "$NP" \
    --act-min 1 --partial-act-min 1.5 --act-max 3 --rcvbuf 2048 --partial-read 3000 --duration 30
half_pid=$BG_PID
wait_bg "$half_pid"
t_half=$(date +%s%N)
wait_status '.subscribers == 7' "$WT"
t_seven=$(date +%s%N)
status_json >"$WORK/status_mid"
stop_bg "$pub_pid" "$pubbig_pid"
stop_bg "$watch_pid" "$watchbig_pid"
wait_status '.subscribers == 0 and .connections.open == 1' 10
wait_until 10 fds_at_most "$fd0" || log "warning: hub fds did not return to $fd0"
stop_sampler
status_json >"$WORK/status1"
fd1=$(fd_count)

Hf=$WORK/half
for m in half reset partial_rst partial_fin; do
    n=$N
    [[ $m == partial* ]] && n=$NP
    check "$m: streaming, then acted" "$(j "$Hf" ${m}_200) / $(j "$Hf" ${m}_acted)" "$n / $n" \
        "$(j "$Hf" ${m}_200) == $n && $(j "$Hf" ${m}_acted) == $n"
done
note "largest hub send queue (sampled every second), KiB" "$(awk 'BEGIN {m = 0} {if ($8 > m) m = $8} END {printf "%d", m / 1024}' "$WORK/samples")"
check "half/reset/watchers: chunked framing errors" "$(($(j "$Hf" half_framing_errors) + $(j "$Hf" reset_framing_errors) + $(j "$WORK/watch" framing_errors) + $(j "$WORK/watchbig" framing_errors)))" "0" 'v == 0'
check "half/reset: had events before acting" "$(($(j "$Hf" half_with_events) + $(j "$Hf" reset_with_events)))" "$((2 * N))" "v == $((2 * N))"
check "half: hub closed after the half-close" "$(($(j "$Hf" half_hub_closed_eof) + $(j "$Hf" half_hub_closed_reset)))" "$N" "v == $N"
note "half: hub closed them after, p50/p99/max ms" "$(j "$Hf" half_close_after_p50_ms) / $(j "$Hf" half_close_after_p99_ms) / $(j "$Hf" half_close_after_max_ms) (EOF $(j "$Hf" half_hub_closed_eof), reset $(j "$Hf" half_hub_closed_reset))"
check "subscribers once the half tool ended" "$(jq .subscribers "$WORK/status_mid")" "7 (the watchers)" 'v == 7'
check "... reached, ms after the half tool ended" "$(((t_seven - t_half) / 1000000))" "< write timeout $((WT * 1000))" "v < $((WT * 1000))"
check "slow consumers dropped (behind / stalled)" "$(jq -r '"\(.slow_consumers.behind_history) / \(.slow_consumers.write_stalled)"' "$WORK/status1")" "0 / 0" 'v == "0 / 0"'
W=$WORK/watch P=$WORK/pub
check "watchers: every event, no gap, not closed" \
    "$(j "$W" count_min)/$(j "$P" published) gaps $(j "$W" gap_ids) eof $(j "$W" closed_eof)" "all, 0, 0" \
    "$(j "$W" count_min) == $(j "$P" published) && $(j "$W" gap_ids) == 0 && $(j "$W" closed_eof) == 0 && $(j "$W" status_200) == 5"
note "watchers latency p50/p99 ms" "$(j "$W" lat_p50_ms) / $(j "$W" lat_p99_ms)"
W=$WORK/watchbig P=$WORK/pubbig
check "big-event watchers: every event, no gap" \
    "$(j "$W" count_min)/$(j "$P" published) gaps $(j "$W" gap_ids) eof $(j "$W" closed_eof)" "all, 0, 0" \
    "$(j "$W" count_min) == $(j "$P" published) && $(j "$W" gap_ids) == 0 && $(j "$W" closed_eof) == 0 && $(j "$W" status_200) == 2"
check "subscribers after" "$(jq .subscribers "$WORK/status1")" "0" 'v == 0'
check "connections after (incl. the status request)" "$(jq .connections.open "$WORK/status1")" "1" 'v == 1'
check "open fds after vs baseline" "$fd1 vs $fd0" "equal" "$fd1 == $fd0"
check "hub log: ERROR lines" "$(log_count 'ERROR')" "0" 'v == 0'
kill -0 "$HUB_PID" 2>/dev/null
check "hub alive" "$?" "0" 'v == 0'
stop_hub TERM
check "hub exit code" "$HUB_RC" "0" 'v == 0'

finish
