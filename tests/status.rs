//! `/events/status` (alias `/sse/health`) and `/health` (items 5 and 6).

mod common;

use serde_json::Value;

use common::*;

fn assert_json_content_type(r: &Response) {
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("application/json"), "Content-Type {ct:?}");
}

#[test]
fn status_reports_connections_channels_and_counters() {
    let srv = TestServer::start(&["--retry-ms", "0", "--heartbeat-interval", "0"]);

    let fresh = status(srv.addr);
    assert_eq!(json_u64(&fresh, "events_published"), 0, "{fresh}");
    assert_eq!(json_u64(&fresh, "subscribers"), 0, "{fresh}");

    let mut a1 = subscribe(srv.addr, "/events?channel=a");
    let mut a2 = subscribe(srv.addr, "/events?channel=a");
    let mut d = subscribe(srv.addr, "/events");
    let mut p = Publisher::new(srv.addr);
    for i in 0..3 {
        p.event("a", None, &format!("a{i}"));
    }
    p.event("default", None, "d");
    for s in [&mut a1, &mut a2] {
        for _ in 0..3 {
            s.next_event_strict();
        }
    }
    d.next_event_strict();
    let received = (a1.raw_bytes + a2.raw_bytes + d.raw_bytes) as u64;

    let r = get(srv.addr, "/events/status");
    assert_eq!(r.status, 200);
    assert_json_content_type(&r);
    let st = r.json();
    // 3 streams + the publisher + (maybe) this request.
    let conns = json_u64(&st["connections"], "open");
    assert!((4..=6).contains(&conns), "connections {conns}: {st}");
    // `active` is the open streams, the same number as /health's sse_connections.
    assert_eq!(json_u64(&st["connections"], "active"), 3, "{st}");
    assert_eq!(
        json_u64(&st["connections"], "accepted"),
        json_u64(&st, "connections_accepted"),
        "{st}"
    );
    assert_eq!(json_u64(&st, "subscribers"), 3, "{st}");
    let channels = st["channels"]
        .as_object()
        .unwrap_or_else(|| panic!("channels is not an object: {st}"));
    assert_eq!(channels.get("a").and_then(Value::as_u64), Some(2), "{st}");
    assert_eq!(
        channels.get("default").and_then(Value::as_u64),
        Some(1),
        "{st}"
    );
    assert_eq!(json_u64(&st, "events_published"), 4, "{st}");
    assert_eq!(json_u64(&st, "deliveries"), 7, "3 events x 2 + 1 x 1: {st}");
    let bytes = json_u64(&st, "bytes_written");
    assert!(
        bytes >= received,
        "bytes_written {bytes} < {received} bytes the subscribers received: {st}"
    );
    assert_eq!(json_u64(&st, "heartbeats"), 0, "{st}");
    assert_eq!(json_u64(&st, "slow_consumers_dropped"), 0, "{st}");
    let up = st["uptime_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("uptime_seconds not a number: {st}"));
    assert!((0.0..120.0).contains(&up), "{st}");
    let limits = st["limits"]
        .as_object()
        .unwrap_or_else(|| panic!("limits is not an object: {st}"));
    assert!(!limits.is_empty(), "{st}");

    // A subscriber leaving is seen.
    a2.close();
    wait_status(srv.addr, "channel a back to 1 subscriber", |s| {
        s["channels"]["a"].as_u64() == Some(1) && s["subscribers"].as_u64() == Some(2)
    });
}

#[test]
fn sse_health_is_an_alias_of_events_status() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let _s = subscribe(srv.addr, "/events?channel=x");
    publish(srv.addr, "x", "one");
    let r = get(srv.addr, "/sse/health");
    assert_eq!(r.status, 200);
    assert_json_content_type(&r);
    let alias = r.json();
    let main = status(srv.addr);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&alias), keys(&main));
    for k in [
        "connections",
        "subscribers",
        "channels",
        "events_published",
        "deliveries",
        "bytes_written",
        "heartbeats",
        "slow_consumers_dropped",
        "uptime_seconds",
        "limits",
    ] {
        assert!(alias.get(k).is_some(), "/sse/health lacks {k}: {alias}");
    }
    assert_eq!(json_u64(&alias, "events_published"), 1);
    assert_eq!(alias["channels"]["x"].as_u64(), Some(1), "{alias}");
}

#[test]
fn health_reports_healthy_rfc3339_timestamp_and_open_streams() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let r = get(srv.addr, "/health");
    assert_eq!(r.status, 200);
    assert_json_content_type(&r);
    let h = r.json();
    assert_eq!(h["status"], "healthy", "{h}");
    let ts = h["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {h}"));
    let t = parse_rfc3339(ts).unwrap_or_else(|| panic!("timestamp {ts:?} is not RFC 3339"));
    let now = unix_now();
    assert!(
        (t - now).abs() < 60.0,
        "timestamp {ts} is {} s off",
        t - now
    );
    assert_eq!(json_u64(&h, "sse_connections"), 0, "{h}");

    let s1 = subscribe(srv.addr, "/events");
    let _s2 = subscribe(srv.addr, "/sse?channel=other");
    // Plain keep-alive connections are not streams.
    let mut idle = connect(srv.addr);
    let r = idle.request("GET", "/health", &[], b"");
    assert_eq!(json_u64(&r.json(), "sse_connections"), 2, "{}", r.text());
    s1.close();
    wait_sse_connections(srv.addr, 1);
}
