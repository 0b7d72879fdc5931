//! Channels come and go (issue 9): idle channels are freed, the channel cap
//! evicts instead of locking up, history has an age and one memory budget,
//! and a client that was caught up never sees `history-lost` for it.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;

/// Resident memory of a process, from /proc (bytes).
fn rss_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

fn nested_u64(v: &Value, a: &str, b: &str) -> u64 {
    v[a][b]
        .as_u64()
        .unwrap_or_else(|| panic!("no {a}.{b} in {v}"))
}

/// Publishes one JSON array of events; asserts 200; returns the ids.
fn publish_batch(p: &mut Publisher, events: &[Value]) -> Vec<u64> {
    let r = p.try_json(&Value::Array(events.to_vec()));
    assert_eq!(r.status, 200, "batch refused: {:?}", r.text());
    r.json()["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| json_u64(e, "id"))
        .collect()
}

fn expect_history_lost(s: &mut SseStream, sent: u64) {
    let e = s.next_event_strict();
    assert_eq!(e.event, "history-lost", "{e:?}");
    let v: Value = serde_json::from_str(&e.data).expect("history-lost data");
    assert_eq!(v["last_event_id"], Value::from(sent.to_string()), "{v}");
}

#[test]
fn sixty_jobs_through_fifty_channels_are_never_refused() {
    let srv = TestServer::start(&["--retry-ms", "0", "--max-channels", "50"]);
    let mut p = Publisher::new(srv.addr);
    for i in 1..=60 {
        let r = p.try_json(&json!({"channel": format!("job{i}"), "data": "done"}));
        assert_eq!(r.status, 200, "job{i}: {:?}", r.text());
    }
    let mut s = subscribe(srv.addr, "/events?channel=fresh");
    let id = p.event("fresh", None, "hello");
    assert_eq!(s.next_event_strict().id_u64(), id);
    let st = status(srv.addr);
    assert!(json_u64(&st, "channel_count") <= 50, "{st}");
    assert_eq!(nested_u64(&st, "channels_freed", "evicted"), 11, "{st}");
    assert_eq!(json_u64(&st, "channels_created"), 61, "{st}");
    assert_eq!(nested_u64(&st, "rejected", "channel_limit"), 0, "{st}");
    // The evicted ones are gone from the status document; the newest stay.
    assert!(st["channels"].get("job1").is_none(), "{st}");
    assert!(st["channels"].get("job60").is_some(), "{st}");
}

#[test]
fn a_hundred_thousand_channels_through_a_thousand_slots() {
    let bin = BinServer::spawn(
        &[
            "--bind",
            "127.0.0.1:0",
            "--max-channels",
            "1000",
            "--history-memory",
            "1MiB",
            "--access-log",
            "false",
            "--retry-ms",
            "0",
        ],
        &[],
    );
    let addr = bin.addr;
    let mut p = Publisher::new(addr);
    let data = "j".repeat(1000);
    let total = 100_000;
    let batch = 400;
    let mut baseline = 0;
    for start in (0..total).step_by(batch) {
        let events: Vec<Value> = (start..start + batch)
            .map(|i| json!({"channel": format!("job-{i}"), "data": data}))
            .collect();
        let ids = publish_batch(&mut p, &events);
        assert_eq!(ids.len(), batch);
        // A subscriber joins and leaves every tenth channel.
        let subs: Vec<SseStream> = (start..start + batch)
            .step_by(10)
            .map(|i| subscribe(addr, &format!("/events?channel=job-{i}")))
            .collect();
        drop(subs);
        if start + batch == 10_000 {
            baseline = rss_bytes(bin.pid());
        }
    }
    let st = wait_status(addr, "no subscribers left", |s| {
        s["subscribers"].as_u64() == Some(0)
    });
    let rss = rss_bytes(bin.pid());
    let live = json_u64(&st, "channel_count");
    assert!(live <= 1000, "{live} channels live");
    assert!(json_u64(&st, "channels_created") >= total as u64, "{st}");
    let freed =
        nested_u64(&st, "channels_freed", "evicted") + nested_u64(&st, "channels_freed", "idle");
    assert_eq!(freed + live, json_u64(&st, "channels_created"), "{st}");
    assert_eq!(nested_u64(&st, "rejected", "channel_limit"), 0, "{st}");
    let used = json_u64(&st, "history_memory_bytes");
    assert_eq!(json_u64(&st, "history_memory_budget_bytes"), 1 << 20);
    assert!(
        used <= 1 << 20,
        "history memory {used} over the 1 MiB budget"
    );
    assert!(nested_u64(&st, "events_evicted", "budget") > 0, "{st}");
    // Flat: 90,000 more channels after the baseline cost at most half again
    // plus 16 MiB (allocator slack), not memory per channel ever created.
    let bound = baseline + baseline / 2 + (16 << 20);
    eprintln!(
        "100,000 channels: RSS {rss} (baseline {baseline} after 10,000), history {used}: {st}"
    );
    assert!(
        rss <= bound,
        "RSS {rss} after {total} channels; baseline {baseline} after 10,000; bound {bound}"
    );
}

#[test]
fn one_budget_bounds_all_history_and_keeps_the_newest() {
    let bin = BinServer::spawn(
        &[
            "--bind",
            "127.0.0.1:0",
            "--history-memory",
            "32MiB",
            "--access-log",
            "false",
            "--retry-ms",
            "0",
        ],
        &[],
    );
    let addr = bin.addr;
    let mut p = Publisher::new(addr);
    let data = vec![b'm'; 100_000];
    let channels = 400;
    let mut ids: Vec<Vec<u64>> = Vec::new();
    let mut baseline = 0;
    for c in 0..channels {
        let path = format!("/events/broadcast?channel=big-{c}");
        let mut these = Vec::new();
        for _ in 0..9 {
            let r = p.post(Some("text/plain"), &path, &data);
            assert_eq!(r.status, 200, "channel {c}: {:?}", r.text());
            these.push(json_u64(&r.json(), "id"));
        }
        ids.push(these);
        if c == 0 {
            baseline = rss_bytes(bin.pid());
        }
    }
    let st = status(addr);
    let rss = rss_bytes(bin.pid());
    let used = json_u64(&st, "history_memory_bytes");
    assert!(used <= 32 << 20, "history memory {used} over 32 MiB: {st}");
    assert!(nested_u64(&st, "events_evicted", "budget") > 0, "{st}");
    // 400 channels of ~1 MiB each were asked for; what is resident is the
    // budget and the baseline, with generous room for the allocator.
    let bound = baseline + (32 << 20) + (64 << 20);
    eprintln!("400 x 9 x 100 KB: RSS {rss} (baseline {baseline}), history {used}");
    assert!(
        rss <= bound,
        "RSS {rss}, baseline {baseline}, bound {bound}"
    );
    // The newest events of the newest channel replay, in order, once.
    let newest = &ids[channels - 1];
    let mut s = subscribe_with(
        addr,
        &format!("/events?channel=big-{}", channels - 1),
        &[("Last-Event-ID", &newest[0].to_string())],
    );
    for id in &newest[1..] {
        let e = s.next_event_strict();
        assert_eq!((e.event.as_str(), e.id_u64()), ("message", *id));
        assert_eq!(e.data.len(), 100_000);
    }
    // The oldest channel's history went to the budget.
    let mut old = subscribe_with(
        addr,
        "/events?channel=big-0",
        &[("Last-Event-ID", &ids[0][0].to_string())],
    );
    expect_history_lost(&mut old, ids[0][0]);
}

#[test]
fn a_caught_up_client_of_an_evicted_channel_resumes_with_nothing_missed() {
    let srv = TestServer::start(&["--retry-ms", "0", "--max-channels", "1"]);
    let mut p = Publisher::new(srv.addr);
    let mut s = subscribe(srv.addr, "/events?channel=user-1");
    let first = p.event("user-1", None, "one");
    let last = p.event("user-1", None, "two");
    assert_eq!(s.next_event_strict().id_u64(), first);
    assert_eq!(s.next_event_strict().id_u64(), last);
    s.close();
    wait_status(srv.addr, "the subscriber gone", |s| {
        s["subscribers"].as_u64() == Some(0)
    });
    // Another channel takes the only slot: user-1 and its history go.
    p.event("user-2", None, "x");
    let st = status(srv.addr);
    assert_eq!(nested_u64(&st, "channels_freed", "evicted"), 1, "{st}");
    assert!(st["channels"].get("user-1").is_none(), "{st}");
    // Back with the last id it saw: nothing missed, live events follow,
    // with ids above the old ones.
    let mut s = subscribe_with(
        srv.addr,
        "/events?channel=user-1",
        &[("Last-Event-ID", &last.to_string())],
    );
    let live = p.event("user-1", None, "three");
    assert!(live > last, "{live} <= {last}");
    let e = s.next_event_strict();
    assert_eq!(
        (e.event.as_str(), e.id_u64(), e.data.as_str()),
        ("message", live, "three")
    );
    // A client that had missed an event gets history-lost.
    let mut behind = subscribe_with(
        srv.addr,
        "/events?channel=user-1",
        &[("Last-Event-ID", &first.to_string())],
    );
    expect_history_lost(&mut behind, first);
    assert_eq!(json_u64(&status(srv.addr), "history_lost_sent"), 1);
}

#[test]
fn history_expires_by_age_and_idle_expired_channels_are_freed() {
    let srv = TestServer::start(&["--retry-ms", "0", "--history-ttl", "1"]);
    let mut p = Publisher::new(srv.addr);
    let mut watcher = subscribe(srv.addr, "/events?channel=kept");
    let k1 = p.event("kept", None, "k1");
    let k2 = p.event("kept", None, "k2");
    assert_eq!(watcher.next_event_strict().id_u64(), k1);
    assert_eq!(watcher.next_event_strict().id_u64(), k2);
    let a = p.event("gone", None, "a");
    let b = p.event("gone", None, "b");
    let published_at = status(srv.addr)["uptime_seconds"].as_f64().unwrap();
    let st = wait_status(srv.addr, "expired history dropped", |s| {
        nested_u64(s, "events_evicted", "age") == 4 && s["channels"].get("gone").is_none()
    });
    let now = st["uptime_seconds"].as_f64().unwrap();
    assert!(
        now >= published_at + 0.9,
        "expired too early: published at {published_at}, gone at {now}"
    );
    assert_eq!(nested_u64(&st, "channels_freed", "idle"), 1, "{st}");
    // The channel with a subscriber stays, without its old events.
    assert_eq!(st["channels"]["kept"], 1, "{st}");
    let mut back = subscribe_with(
        srv.addr,
        "/events?channel=kept",
        &[("Last-Event-ID", &k1.to_string())],
    );
    expect_history_lost(&mut back, k1);
    let mut back = subscribe_with(
        srv.addr,
        "/events?channel=gone",
        &[("Last-Event-ID", &a.to_string())],
    );
    expect_history_lost(&mut back, a);
    // A client that had seen the freed channel's last event missed nothing.
    let mut caught_up = subscribe_with(
        srv.addr,
        "/events?channel=gone",
        &[("Last-Event-ID", &b.to_string())],
    );
    let c = p.event("gone", None, "c");
    assert!(c > b);
    let e = caught_up.next_event_strict();
    assert_eq!((e.event.as_str(), e.id_u64()), ("message", c));
    assert_eq!(back.next_event_strict().id_u64(), c);
    // Live events still flow to the subscriber that stayed.
    let k3 = p.event("kept", None, "k3");
    assert_eq!(watcher.next_event_strict().id_u64(), k3);
}

#[test]
fn a_subscriber_that_keeps_up_through_budget_evictions_gets_every_event_once_in_order() {
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--heartbeat-interval",
        "0",
        "--history-bytes",
        "512KiB",
        "--history-memory",
        "1MiB",
    ]);
    let mut sub = subscribe(srv.addr, "/events?channel=flood");
    let rounds = 40;
    let per_round = 8;
    let n = rounds * per_round;
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < n {
            match sub.next_item_within(Duration::from_secs(10)) {
                Ok(Some(SseItem::Event(e))) => got.push((e.id_u64(), e.data)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        got
    });
    let mut p = Publisher::new(srv.addr);
    let mut published = Vec::new();
    for round in 0..rounds {
        // Other channels fill the budget with history of their own.
        let noise: Vec<Value> = (0..4)
            .map(|i| json!({"channel": format!("noise-{}", (round * 4 + i) % 24), "data": "n".repeat(20_000)}))
            .collect();
        publish_batch(&mut p, &noise);
        let events: Vec<Value> = (0..per_round)
            .map(|i| json!({"channel": "flood", "data": format!("{round}-{i}-{}", "f".repeat(20_000))}))
            .collect();
        let ids = publish_batch(&mut p, &events);
        for (i, id) in ids.into_iter().enumerate() {
            published.push((id, format!("{round}-{i}-{}", "f".repeat(20_000))));
        }
    }
    let got = reader.join().expect("reader");
    let st = status(srv.addr);
    assert!(nested_u64(&st, "events_evicted", "budget") > 0, "{st}");
    assert!(json_u64(&st, "history_memory_bytes") <= 1 << 20, "{st}");
    assert_eq!(json_u64(&st, "slow_consumers_dropped"), 0, "{st}");
    assert_eq!(got.len(), n, "received {} of {n}", got.len());
    let ids: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing");
    let by_id: HashMap<u64, &str> = got.iter().map(|(i, d)| (*i, d.as_str())).collect();
    assert_eq!(by_id.len(), n, "an event came twice");
    assert!(
        got == published,
        "received events differ from the published ones"
    );
}

#[test]
fn status_and_metrics_count_the_lifecycle() {
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--max-channels",
        "2",
        "--history-memory",
        "8MiB",
    ]);
    let mut p = Publisher::new(srv.addr);
    for name in ["a", "b", "c"] {
        p.event(name, None, "x");
    }
    let s = subscribe(srv.addr, "/events?channel=idle");
    drop(s);
    let st = wait_status(srv.addr, "the idle channel freed", |s| {
        nested_u64(s, "channels_freed", "idle") == 1
    });
    assert_eq!(json_u64(&st, "channels_created"), 4, "{st}");
    assert_eq!(nested_u64(&st, "channels_freed", "evicted"), 2, "{st}");
    assert_eq!(
        json_u64(&st, "history_memory_budget_bytes"),
        8 << 20,
        "{st}"
    );
    for key in ["size", "age", "budget"] {
        assert!(st["events_evicted"][key].is_u64(), "{key}: {st}");
    }
    let m = get(srv.addr, "/metrics").text();
    for line in [
        "ssecast_channels_created_total 4",
        "ssecast_channels_freed_total{reason=\"idle\"} 1",
        "ssecast_channels_freed_total{reason=\"evicted\"} 2",
        "ssecast_history_memory_budget_bytes 8388608",
        "ssecast_events_evicted_total{reason=\"size\"} 0",
        "ssecast_events_evicted_total{reason=\"age\"} 0",
        "ssecast_events_evicted_total{reason=\"budget\"} 0",
    ] {
        assert!(
            m.lines().any(|l| l == line),
            "/metrics lacks {line:?}:\n{m}"
        );
    }
    assert!(m.contains("ssecast_history_memory_bytes "), "{m}");
}

#[test]
fn a_budget_smaller_than_one_channels_history_is_refused_at_start() {
    let out = run_bin(
        &["--history-bytes", "2MiB", "--history-memory", "1MiB"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{:?}", out.stderr);
    let lines: Vec<&str> = out.stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "{:?}", out.stderr);
    assert!(lines[0].contains("--history-memory"), "{:?}", lines[0]);
}
