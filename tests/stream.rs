//! The stream endpoint: headers, alias, channel selection, `retry:`,
//! heartbeats (issue items 1 and 7).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn assert_stream_headers(s: &SseStream, path: &str) {
    let h = &s.head;
    assert_eq!(h.status, 200, "{path}");
    let ct = h.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase().starts_with("text/event-stream"),
        "{path}: Content-Type {ct:?}"
    );
    assert_eq!(
        h.header("cache-control").map(str::to_ascii_lowercase),
        Some("no-cache, no-store, no-transform".to_string()),
        "{path}: Cache-Control in {:?}",
        h.headers
    );
    assert_eq!(
        h.header("x-accel-buffering").map(str::to_ascii_lowercase),
        Some("no".to_string()),
        "{path}: X-Accel-Buffering in {:?}",
        h.headers
    );
    assert_eq!(
        h.header("connection").map(str::to_ascii_lowercase),
        Some("close".to_string()),
        "{path}: the stream is close-delimited, Connection: close expected in {:?}",
        h.headers
    );
    assert!(
        h.header("content-length").is_none(),
        "{path}: a stream must not have a Content-Length: {:?}",
        h.headers
    );
}

#[test]
fn events_and_sse_alias_stream_with_the_right_headers() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut a = subscribe(srv.addr, "/events");
    let mut b = subscribe(srv.addr, "/sse");
    assert_stream_headers(&a, "/events");
    assert_stream_headers(&b, "/sse");

    // Both are on the default channel and receive a publish to it.
    let id = Publisher::new(srv.addr).event("default", Some("hello"), "world");
    for s in [&mut a, &mut b] {
        let e = s.next_event_strict();
        assert_eq!(e.id_u64(), id);
        assert_eq!(e.event, "hello");
        assert_eq!(e.data, "world");
    }
}

#[test]
fn channel_parameter_selects_the_channel_and_absent_means_default() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut news = subscribe(srv.addr, "/events?channel=news");
    let mut sports = subscribe(srv.addr, "/sse?channel=sports");
    let mut dflt = subscribe(srv.addr, "/events");
    let mut dflt_named = subscribe(srv.addr, "/events?channel=default");

    let mut p = Publisher::new(srv.addr);
    let news_id = p.event("news", None, "n1");
    let sports_id = p.event("sports", None, "s1");
    // No channel field: the default channel.
    let a = p.json(&serde_json::json!({"data": "d1"}));
    assert_eq!(a["channel"], "default", "answer {a}");
    let d_id = json_u64(&a, "id");

    // Each subscriber's first event is the one of its own channel, so it got
    // nothing from the channels published before.
    let e = news.next_event_strict();
    assert_eq!((e.id_u64(), e.data.as_str()), (news_id, "n1"));
    let e = sports.next_event_strict();
    assert_eq!((e.id_u64(), e.data.as_str()), (sports_id, "s1"));
    for s in [&mut dflt, &mut dflt_named] {
        let e = s.next_event_strict();
        assert_eq!((e.id_u64(), e.data.as_str()), (d_id, "d1"));
    }

    // And a later event to "news" reaches only news: the others stay quiet
    // until their own next event.
    let n2 = p.event("news", None, "n2");
    let d2 = p.event("default", None, "d2");
    assert_eq!(news.next_event_strict().id_u64(), n2);
    assert_eq!(dflt.next_event_strict().id_u64(), d2);
    assert_eq!(dflt_named.next_event_strict().id_u64(), d2);
}

#[test]
fn retry_line_is_jittered_per_connection_within_half_again() {
    let srv = TestServer::start(&["--retry-ms", "1000"]);
    let mut values = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut s = subscribe(srv.addr, "/events");
        match s.next_item() {
            SseItem::Retry(ms) => values.push(ms),
            other => panic!("first item of the stream is not retry: {other:?}"),
        }
        streams.push(s);
    }
    for v in &values {
        assert!(
            (1000..=1500).contains(v),
            "retry {v} outside [1000, 1500]: {values:?}"
        );
    }
    assert!(
        values.iter().any(|v| *v != values[0]),
        "retry is not jittered, all equal: {values:?}"
    );
}

#[test]
fn default_retry_is_3000_plus_jitter() {
    let srv = TestServer::start(&[]);
    let mut s = subscribe(srv.addr, "/events");
    match s.next_item() {
        SseItem::Retry(ms) => assert!((3000..=4500).contains(&ms), "retry {ms}"),
        other => panic!("first item is not retry: {other:?}"),
    }
}

#[test]
fn retry_zero_sends_no_retry_line() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s = subscribe(srv.addr, "/events");
    let id = publish(srv.addr, "default", "first");
    // The very first thing on the stream is the event.
    let e = s.next_event_strict();
    assert_eq!(e.id_u64(), id);
    assert_eq!(e.data, "first");
}

#[test]
fn idle_subscriber_gets_heartbeat_comments() {
    let srv = TestServer::start(&["--retry-ms", "0", "--heartbeat-interval", "0.5"]);
    let mut s = subscribe(srv.addr, "/events?channel=quiet");
    let start = Instant::now();
    let mut beats = Vec::new();
    // Time itself is what is tested: count heartbeats over ~2.2 s.
    let window = Duration::from_millis(2200);
    while start.elapsed() < window {
        match s.next_item_within(window.saturating_sub(start.elapsed())) {
            Ok(Some(SseItem::Comment(_))) => beats.push(start.elapsed()),
            Ok(Some(other)) => panic!("idle stream got {other:?}"),
            Ok(None) => panic!("idle stream closed"),
            Err(_) => break,
        }
    }
    assert!(
        beats.len() >= 2,
        "expected at least 2 heartbeats in 2.2 s at 0.5 s interval, got {beats:?}"
    );
    assert!(
        beats.len() <= 6,
        "too many heartbeats in 2.2 s at 0.5 s interval: {beats:?}"
    );
    assert!(
        beats[0] >= Duration::from_millis(250),
        "first heartbeat after {:?}, before the interval of quiet",
        beats[0]
    );
    let st = status(srv.addr);
    assert!(json_u64(&st, "heartbeats") >= 2, "status {st}");
}

#[test]
fn busy_subscriber_gets_no_heartbeat() {
    let srv = TestServer::start(&["--retry-ms", "0", "--heartbeat-interval", "0.5"]);
    let mut s = subscribe(srv.addr, "/events?channel=busy");
    let mut p = Publisher::new(srv.addr);
    // An event every ~150 ms for ~1.5 s: never 500 ms of quiet.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let id = p.event("busy", None, &format!("tick {n}"));
        match s.next_item() {
            SseItem::Event(e) => assert_eq!(e.id_u64(), id),
            other => panic!(
                "busy subscriber got {other:?} after {:?} (event {n})",
                start.elapsed()
            ),
        }
        n += 1;
        thread::sleep(Duration::from_millis(150));
    }
    assert!(n >= 5, "only {n} events were published");
    // Heartbeats are on: once quiet, one comes.
    match s.next_item_within(Duration::from_secs(5)) {
        Ok(Some(SseItem::Comment(_))) => {}
        other => panic!("no heartbeat once the channel went quiet: {other:?}"),
    }
}

#[test]
fn heartbeat_zero_means_off() {
    let srv = TestServer::start(&["--retry-ms", "0", "--heartbeat-interval", "0"]);
    let mut s = subscribe(srv.addr, "/events");
    // Time is what is tested: 1.2 s of nothing at all.
    s.expect_silence(Duration::from_millis(1200));
    let id = publish(srv.addr, "default", "x");
    assert_eq!(s.next_event_strict().id_u64(), id);
}

/// HTTP/1.1 streams are chunked, one chunk per batch, framed exactly;
/// HTTP/1.0 streams are close-delimited (no chunked encoding allowed).
#[test]
fn http11_streams_are_chunked_and_http10_streams_close_delimited() {
    use std::io::{Read, Write};
    let srv = TestServer::start(&["--retry-ms", "0", "--heartbeat-interval", "0"]);
    for (version, chunked) in [("1.1", true), ("1.0", false)] {
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /events?channel=frame{version} HTTP/{version}\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "EOF inside the head");
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap().to_ascii_lowercase();
        assert_eq!(
            head.contains("transfer-encoding: chunked"),
            chunked,
            "{head}"
        );
        let id = publish(srv.addr, &format!("frame{version}"), "x");
        let frame = format!("id: {id}\ndata: x\n\n");
        let want = if chunked {
            format!("{:x}\r\n{frame}\r\n", frame.len())
        } else {
            frame
        };
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want);
    }
}

/// Events must not wait for Nagle. The hub sets TCP_NODELAY once, on its
/// listener, and relies on Linux handing it down to accepted sockets: this
/// checks that premise on the kernel the tests run on.
#[test]
fn accepted_sockets_inherit_nodelay_from_the_listener() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let on: libc::c_int = 1;
    let fd = l.as_raw_fd();
    // SAFETY: setsockopt/getsockopt on sockets owned by this test.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            4,
        );
    }
    let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    c.write_all(b"x").unwrap();
    let (a, _) = l.accept().unwrap();
    assert!(
        a.nodelay().unwrap(),
        "this kernel does not inherit TCP_NODELAY on accept"
    );
}

/// `--heartbeat-event`: heartbeats are events a page can see (`event:
/// NAME`, the hub's time as data) with no `id:`, so the client's last event
/// id stays on the last real event; still only to quiet subscribers.
#[test]
fn heartbeat_event_is_a_named_event_without_an_id() {
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--heartbeat-interval",
        "0.5",
        "--heartbeat-event",
        "ping",
    ]);
    let mut s = subscribe(srv.addr, "/events?channel=watch");
    let id = publish(srv.addr, "watch", "real");
    let e = s.next_event_strict();
    assert_eq!((e.id_u64(), e.data.as_str()), (id, "real"));
    let before = unix_now();
    for _ in 0..2 {
        let e = s.next_event_strict();
        assert_eq!(e.event, "ping", "{e:?}");
        // No id: line, so the parser's last event id did not move.
        assert_eq!(e.id_u64(), id, "{e:?}");
        let v: Value = serde_json::from_str(&e.data).expect("heartbeat data is JSON");
        let t = v["time"].as_u64().expect("time in unix ms") as f64 / 1000.0;
        assert!(
            (before - 2.0..unix_now() + 1.0).contains(&t),
            "heartbeat time {t} vs now {}",
            unix_now()
        );
    }
    let st = status(srv.addr);
    assert!(json_u64(&st, "heartbeats") >= 2, "status {st}");
}

#[test]
fn heartbeat_event_name_is_validated() {
    for bad in ["a\nb", &"x".repeat(129)] {
        let e = ssecast::Config::from_args(["--heartbeat-event", bad]);
        assert!(e.is_err(), "{bad:?} accepted");
    }
}
