#!/usr/bin/env bash
# Channel churn: the channel lifecycle (issue 9). Channels are a cache:
# one with no subscriber and no history worth keeping is freed ("idle"); at
# --max-channels the least recently used channel without subscribers is
# evicted ("evicted"); only a hub whose every channel has subscribers
# refuses a new one (503). All history together stays under one budget
# (--history-memory); frames over it go oldest first (events_evicted.budget).
#
# The hub runs with --max-channels 1000 --history-memory 32MiB (the suffix
# is part of what is tested) and --history-bytes 16 MiB per channel. faultkit
# channels publishes one event to each of --channels (100 000) distinct
# channels, in batched JSON arrays on one pipelined keep-alive connection.
# Every tenth channel first gets a subscriber: it joins, the batch with its
# channel is sent once it has its response head, it must get exactly its
# event (by sequence number), then it leaves, so its channel becomes idle
# and evictable. Each request also carries one 64 KiB event to one of 4 hot
# channels: 1000 requests x 64 KiB = 64 MiB of history, twice the budget.
# The tool polls /events/status (every 50 ms) and the hub's RSS throughout.
#
# Checks:
#  - never a 503, for a publish or a subscribe: at most 32 channels have a
#    subscriber at any moment, far below the cap, so every channel the hub
#    would refuse was evictable; every request answered 200, every event
#    published, every subscriber got its event (200, the right sequence
#    number, once), none closed by the hub;
#  - in every status sample: history_memory_bytes <= history_memory_budget_bytes
#    (and the budget reported is the 32 MiB configured), channel_count <= 1000;
#  - the budget and the cap were really reached: events_evicted.budget > 0,
#    channels_freed.evicted > 0;
#  - accounting: channels_freed.idle + channels_freed.evicted =
#    channels_created - channel_count, and channels_created >= the number of
#    distinct channels used;
#  - RSS at every sample <= baseline (measured at start, in this run) +
#    the history budget + 32 MiB (the channel table for 1000 channels,
#    buffers and malloc slack: a per-channel leak of 400 bytes over 100 000
#    channels would use more than that);
#  - afterwards subscribers 0, the hub alive and exit 0 on SIGTERM.
# Ends: the tool ends when every channel is published and every subscriber
# is done (or at its cap, 120 s; then the counts fail).
#
# usage: churn_channels.sh [--channels 100000] [--max-channels 1000]
#        [--history-memory 32MiB] [--hot-size 65536]

source "$(dirname "$0")/lib.sh"

CHANNELS=100000 MAXCH=1000 BUDGET=32MiB HOTSIZE=65536 HOT=4 BATCH=100 SUB_AHEAD=32 TOOL_CAP=120
while [[ $# -gt 0 ]]; do
    case $1 in
        --channels) CHANNELS=$2; shift 2 ;;
        --max-channels) MAXCH=$2; shift 2 ;;
        --history-memory) BUDGET=$2; shift 2 ;;
        --hot-size) HOTSIZE=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
budget_bytes=$(awk -v b="$BUDGET" 'BEGIN {
    n = b + 0; u = b; sub(/^[0-9]+/, "", u)
    m = (u == "" ? 1 : u == "KiB" ? 1024 : u == "MiB" ? 1048576 : u == "GiB" ? 1073741824 : -1)
    if (m < 0) exit 1; printf "%d", n * m }') || die "--history-memory: use N, NKiB, NMiB or NGiB"

build
start_hub -- --max-channels "$MAXCH" --history-memory "$BUDGET" --history-bytes 16777216 --heartbeat-interval 15
rss0=$(rss_kb)
status_json >"$WORK/status0"
log "publishing to $CHANNELS channels (cap $MAXCH, history budget $BUDGET), a subscriber on every tenth"
bg "$WORK/channels" channels --addr "$ADDR" --channels "$CHANNELS" --batch "$BATCH" --window 4 --sub-every 10 \
    --sub-ahead "$SUB_AHEAD" --hot "$HOT" --hot-size "$HOTSIZE" --status-every-ms 50 --hub-pid "$HUB_PID" \
    --duration "$TOOL_CAP"
wait_bg "$BG_PID" || die "faultkit channels failed"
wait_status '.subscribers == 0' 10 || log "warning: subscribers left"
status_json >"$WORK/status1"
C=$WORK/channels S=$WORK/status1
requests=$(j "$C" requests)
distinct=$((CHANNELS + HOT))

note "channels published / s" "$(j "$C" channels_published) in $(j "$C" seconds) s ($(j "$C" channels_per_s | cut -d. -f1)/s), $requests requests"
note "publish answer latency p50/p99/max ms" "$(j "$C" ack_p50_ms) / $(j "$C" ack_p99_ms) / $(j "$C" ack_max_ms)"
check "tool ended by" "$(j "$C" ended_by)" "done (all published, all subscribers done)" 'v == "done"'
check "publish answers: 503 / other non-200 / none" "$(j "$C" responses_503) / $(j "$C" responses_other) / $(j "$C" unanswered)" "0 / 0 / 0" \
    "$(j "$C" responses_503) == 0 && $(j "$C" responses_other) == 0 && $(j "$C" unanswered) == 0"
check "events published (channels + hot)" "$(j "$C" events_ok)" "$((CHANNELS + requests))" "v == $((CHANNELS + requests))"
check "subscribers: got their event" "$(j "$C" subscribers_ok)" "$(j "$C" subscribers_expected)" "v == $(j "$C" subscribers_expected)"
check "subscribers: 503 / other non-200" "$(j "$C" subscribers_503) / $(($(j "$C" subscribers_non200) - $(j "$C" subscribers_503)))" "0 / 0" \
    "$(j "$C" subscribers_non200) == 0"
check "subscribers: wrong event / none / closed by the hub" \
    "$(j "$C" subscribers_wrong_event) / $(j "$C" subscribers_missing_event) / $(j "$C" subscribers_closed_by_hub)" "0 / 0 / 0" \
    "$(j "$C" subscribers_wrong_event) == 0 && $(j "$C" subscribers_missing_event) == 0 && $(j "$C" subscribers_closed_by_hub) == 0"
check "status samples (every 50 ms) / without the lifecycle fields" "$(j "$C" status_samples) / $(j "$C" status_missing_fields)" ">= 10 / 0" \
    "$(j "$C" status_samples) >= 10 && $(j "$C" status_missing_fields) == 0"
check "history_memory_budget_bytes reported" "$(jq '.history_memory_budget_bytes' "$S")" "$budget_bytes ($BUDGET)" "v == $budget_bytes"
check "history_memory_bytes - budget, max over samples" "$(j "$C" history_over_budget_max)" "<= 0 (max $(j "$C" history_memory_max))" \
    "v <= 0 && $(j "$C" status_samples) > 0"
check "channel_count, max over samples" "$(j "$C" channel_count_max)" "<= $MAXCH" "v <= $MAXCH && $(j "$C" status_samples) > 0"
check "channel_count after" "$(jq '.channel_count' "$S")" "<= $MAXCH" "v <= $MAXCH"
note "events_evicted size / age / budget" "$(jq -r '.events_evicted | "\(.size) / \(.age) / \(.budget)"' "$S")"
check "events_evicted.budget (the budget was reached)" "$(jq '.events_evicted.budget' "$S")" "> 0" 'v > 0'
created=$(jq '.channels_created' "$S") count=$(jq '.channel_count' "$S")
idle=$(jq '.channels_freed.idle' "$S") evicted=$(jq '.channels_freed.evicted' "$S")
note "channels created / live / freed idle / freed evicted" "$created / $count / $idle / $evicted"
check "channels_created" "$created" ">= $distinct distinct channels used" "v >= $distinct"
check "channels_freed.evicted (the cap was reached)" "$evicted" "> 0" 'v > 0'
check "freed idle + evicted = created - live" "$idle + $evicted" "$created - $count" \
    "$idle + $evicted == $created - $count && $created > 0"
rss_bound=$((rss0 + budget_bytes / 1024 + 32768))
check "hub RSS, max over samples, kB" "$(j "$C" rss_max_kb)" "<= baseline $rss0 + budget $((budget_bytes / 1024)) + 32768 = $rss_bound" \
    "v <= $rss_bound && v > 0"
check "subscribers after" "$(jq '.subscribers' "$S")" "0" 'v == 0'
kill -0 "$HUB_PID" 2>/dev/null
check "hub alive" "$?" "0" 'v == 0'
stop_hub TERM
check "hub exit code on SIGTERM" "$HUB_RC" "0" 'v == 0'

finish
