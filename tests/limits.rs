//! Limits: connections, per-client streams, header deadline, header and body
//! size, slow consumers (item 8).

mod common;

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use common::*;

fn assert_retry_after(r: &Response) {
    let ra = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{} without Retry-After: {:?}", r.status, r.headers));
    let secs: u64 = ra
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {ra:?} is not delay-seconds"));
    assert!(secs >= 1, "Retry-After {secs}");
}

#[test]
fn max_connections_answers_503_with_retry_after() {
    let srv = TestServer::start(&["--retry-ms", "0", "--max-connections", "2"]);
    let s1 = subscribe(srv.addr, "/events");
    let _s2 = subscribe(srv.addr, "/events");

    for path in ["/events", "/sse"] {
        let mut c = connect(srv.addr);
        c.send_request("GET", path, &[], b"");
        let r = c.read_response();
        assert_eq!(r.status, 503, "third stream ({path}): {:?}", r.text());
        assert_retry_after(&r);
        r.assert_json_error();
    }
    // A full hub still answers health checks and takes publishes.
    let h = get(srv.addr, "/health");
    assert_eq!(h.status, 200, "{:?}", h.text());
    assert_eq!(json_u64(&h.json(), "sse_connections"), 2);
    publish(srv.addr, "default", "still publishing");

    // A slot frees up when a stream leaves.
    s1.close();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_subscribe(srv.addr, "/events", &[]) {
            Ok(_s3) => break,
            Err(r) => assert_eq!(r.status, 503, "{:?}", r.text()),
        }
        assert!(Instant::now() < deadline, "slot never freed");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn per_ip_stream_limit_answers_429() {
    let srv = TestServer::start(&["--retry-ms", "0", "--max-connections-per-ip", "2"]);
    let _a = subscribe(srv.addr, "/events");
    // Untrusted peer: forwarded headers are ignored, all of these are 127.0.0.1.
    let _b = subscribe_with(
        srv.addr,
        "/events?channel=x",
        &[("X-Forwarded-For", "203.0.113.5")],
    );
    let r = try_subscribe(srv.addr, "/sse", &[("X-Real-IP", "203.0.113.6")])
        .err()
        .expect("third stream from one address must be refused");
    assert_eq!(r.status, 429, "{:?}", r.text());
    r.assert_json_error();
    // Non-stream requests from the same address are not limited.
    assert_eq!(get(srv.addr, "/health").status, 200);
    let mut p = Publisher::new(srv.addr);
    p.event("default", None, "fine");
}

#[test]
fn per_ip_limit_uses_the_forwarded_address_behind_a_trusted_proxy() {
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--max-connections-per-ip",
        "1",
        "--trusted-proxies",
        "127.0.0.0/8",
    ]);
    let _c1 = subscribe_with(srv.addr, "/events", &[("X-Forwarded-For", "203.0.113.5")]);
    // Same client behind the proxy, by either header.
    for h in [
        ("X-Forwarded-For", "203.0.113.5"),
        ("X-Real-IP", "203.0.113.5"),
        ("X-Forwarded-For", "198.51.100.1, 203.0.113.5"),
        ("X-Forwarded-For", "203.0.113.5, 127.0.0.1"),
    ] {
        let r = try_subscribe(srv.addr, "/events", &[h])
            .err()
            .unwrap_or_else(|| panic!("{h:?}: second stream for 203.0.113.5 accepted"));
        assert_eq!(r.status, 429, "{h:?}: {:?}", r.text());
        r.assert_json_error();
    }
    // Other clients behind the same proxy are independent.
    let _c2 = subscribe_with(srv.addr, "/events", &[("X-Forwarded-For", "203.0.113.6")]);
    let _c3 = subscribe_with(srv.addr, "/events", &[("X-Real-IP", "203.0.113.7")]);
    let _c4 = subscribe_with(
        srv.addr,
        "/events",
        &[("X-Forwarded-For", "203.0.113.5, 198.51.100.9")],
    );
    // The proxy itself (no forwarded header) is one more client.
    let _c5 = subscribe(srv.addr, "/events");
    wait_sse_connections(srv.addr, 5);
}

#[test]
fn header_deadline_closes_a_slow_client_while_others_are_served() {
    let srv = TestServer::start(&["--retry-ms", "0", "--header-timeout", "0.5"]);
    let mut sub = subscribe(srv.addr, "/events");

    let started = Instant::now();
    let mut slow = connect(srv.addr);
    slow.send(b"GET /health HT");

    // A normal client is served meanwhile.
    let r = get(srv.addr, "/health");
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "normal client waited {:?}",
        started.elapsed()
    );

    // The slow one is closed: maybe after a 408 JSON answer, then EOF.
    let got = slow
        .read_until_eof(Duration::from_secs(5))
        .expect("slow client was not closed within 5 s");
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(400),
        "closed after {closed_after:?}, before the 0.5 s deadline"
    );
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    if !got.is_empty() {
        let mut c = Conn {
            stream: slow.stream,
            buf: got,
        };
        let r = c.read_head();
        assert_eq!(r.status, 408, "{:?}", r.headers);
        let mut r = r;
        c.read_body(&mut r, "GET").unwrap();
        r.assert_json_error();
    }

    // The established stream, idle longer than the header deadline, is fine.
    let id = publish(srv.addr, "default", "still here");
    assert_eq!(sub.next_event_strict().id_u64(), id);
}

#[test]
fn header_deadline_is_not_reset_by_trickling_bytes() {
    let srv = TestServer::start(&["--retry-ms", "0", "--header-timeout", "0.5"]);
    let mut c = connect(srv.addr);
    let req =
        b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut answer = Vec::new();
    let mut i = 0;
    // Time itself is tested: one byte per 100 ms until the server acts.
    let closed_at = loop {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "trickling client still open after 4 s"
        );
        if i < req.len() && c.stream.write_all(&req[i..i + 1]).is_err() {
            break started.elapsed();
        }
        i += 1;
        let mut tmp = [0u8; 1024];
        match c.stream.read(&mut tmp) {
            Ok(0) => break started.elapsed(),
            Ok(n) => answer.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break started.elapsed(),
        }
    };
    assert!(
        closed_at >= Duration::from_millis(400) && closed_at < Duration::from_secs(3),
        "closed after {closed_at:?}"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer {text:?}"
    );
}

#[test]
fn oversized_headers_get_431() {
    let srv = TestServer::start(&["--retry-ms", "0", "--max-header-bytes", "1024"]);
    let mut sub = subscribe(srv.addr, "/events");
    let big = "b".repeat(2000);
    let r = http(srv.addr, "GET", "/health", &[("X-Big", &big)], b"");
    assert_eq!(r.status, 431, "{:?}", r.text());
    r.assert_json_error();
    // Just under the limit is fine.
    let ok = "o".repeat(600);
    assert_eq!(
        http(srv.addr, "GET", "/health", &[("X-Ok", &ok)], b"").status,
        200
    );
    let id = publish(srv.addr, "default", "after 431");
    assert_eq!(sub.next_event_strict().id_u64(), id);
}

#[test]
fn oversized_body_gets_413() {
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--max-body-bytes",
        "1000",
        "--history-bytes",
        "4096",
    ]);
    let mut sub = subscribe(srv.addr, "/events");
    let body = json!({"data": "x".repeat(2000)}).to_string();
    let r = http(
        srv.addr,
        "POST",
        "/events/broadcast",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 413, "{:?}", r.text());
    r.assert_json_error();
    // Declared too large by chunked encoding as well.
    let mut c = connect(srv.addr);
    let chunk = "y".repeat(1500);
    c.send(
        format!(
            "POST /events/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 413, "chunked: {:?}", r.text());

    // An event larger than the channel history is refused with 413 too.
    let srv2 = TestServer::start(&["--history-bytes", "4096"]);
    let body = json!({"data": "z".repeat(5000)}).to_string();
    let r = http(
        srv2.addr,
        "POST",
        "/events/broadcast",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 413, "event bigger than history: {:?}", r.text());
    r.assert_json_error();

    // The subscriber on the first server saw nothing but this.
    let id = publish(srv.addr, "default", "small");
    let e = sub.next_event_strict();
    assert_eq!((e.id_u64(), e.data.as_str()), (id, "small"));
}

#[test]
fn a_subscriber_that_never_reads_is_dropped_and_others_get_everything() {
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--heartbeat-interval",
        "0",
        "--history-bytes",
        "4096",
    ]);
    // The slow one: subscribes, then never reads.
    let mut slow = connect(srv.addr);
    slow.send_request("GET", "/events?channel=big", &[], b"");
    let head = slow.read_head();
    assert_eq!(head.status, 200);
    let slow = slow.into_sse(head);

    // The normal one reads in its own thread.
    let mut good = subscribe(srv.addr, "/events?channel=big");
    let (tx, rx) = mpsc::channel::<u64>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = thread::spawn(move || {
        let mut quiet_since = Instant::now();
        loop {
            match good.next_item_within(Duration::from_millis(200)) {
                Ok(Some(SseItem::Event(e))) => {
                    quiet_since = Instant::now();
                    if tx.send(e.id_u64()).is_err() {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    if stop2.load(Ordering::SeqCst)
                        || quiet_since.elapsed() > Duration::from_secs(10)
                    {
                        return;
                    }
                }
            }
        }
    });

    let mut p = Publisher::new(srv.addr);
    let data = "d".repeat(3000);
    let mut published = Vec::new();
    let mut dropped = false;
    // Up to ~30 MB: far more than any socket buffers can hold.
    for i in 0..10_000 {
        published.push(p.event("big", None, &data));
        if i % 50 == 49 {
            let st = status(srv.addr);
            if json_u64(&st, "slow_consumers_dropped") >= 1 {
                dropped = true;
                break;
            }
        }
    }
    assert!(
        dropped,
        "never dropped the slow consumer after {} events",
        published.len()
    );
    // A few more after the drop.
    for _ in 0..5 {
        published.push(p.event("big", None, &data));
    }
    let st = wait_status(
        srv.addr,
        "the normal subscriber still on big (only the slow one dropped)",
        |s| s["channels"]["big"].as_u64() == Some(1),
    );
    assert!(json_u64(&st, "slow_consumers_dropped") >= 1);

    // The normal subscriber got every event, in order.
    let mut got = Vec::with_capacity(published.len());
    while got.len() < published.len() {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(id) => got.push(id),
            Err(_) => break,
        }
    }
    assert_eq!(
        got.len(),
        published.len(),
        "normal subscriber missed events"
    );
    assert_eq!(got, published);
    stop.store(true, Ordering::SeqCst);
    drop(rx);

    // The slow one is reset (SO_LINGER 0, so the kernel frees its queue at
    // once): whatever it still reads before the reset is a clean prefix.
    let mut slow = slow;
    let mut ids = Vec::new();
    loop {
        match slow.next_item_within(Duration::from_secs(10)) {
            Ok(Some(SseItem::Event(e))) => {
                assert_eq!(e.data.len(), 3000);
                ids.push(e.id_u64());
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("slow consumer's connection not closed: {e}"),
        }
    }
    assert!(ids.len() < published.len());
    assert_eq!(
        ids[..],
        published[..ids.len()],
        "slow consumer got a non-prefix"
    );
    let _ = reader.join();
}

#[test]
fn max_channels_refuses_a_new_channel_with_503_only_when_every_channel_has_subscribers() {
    let srv = TestServer::start(&["--retry-ms", "0", "--max-channels", "3"]);
    let mut p = Publisher::new(srv.addr);
    // Channels without subscribers make room for new ones (the least
    // recently used is evicted): never a 503 for them.
    for i in 0..10 {
        let r = p.try_json(&json!({"channel": format!("idle{i}"), "data": "x"}));
        assert_eq!(r.status, 200, "idle{i}: {:?}", r.text());
    }
    // Three channels with a subscriber each fill the cap.
    let mut subs: Vec<SseStream> = (0..3)
        .map(|i| subscribe(srv.addr, &format!("/events?channel=ch{i}")))
        .collect();
    let refused = p.try_json(&json!({"channel": "ch3", "data": "x"}));
    assert_eq!(refused.status, 503, "{:?}", refused.text());
    assert_retry_after(&refused);
    refused.assert_json_error();
    // Subscribing to a new channel is refused too; existing ones work.
    let r = try_subscribe(srv.addr, "/events?channel=brand-new", &[])
        .err()
        .expect("subscribe to a channel over the limit accepted");
    assert_eq!(r.status, 503, "{:?}", r.text());
    assert_retry_after(&r);
    let id = Publisher::new(srv.addr).event("ch0", None, "ok");
    assert_eq!(subs[0].next_event_strict().id_u64(), id);
}

#[test]
fn idle_timeout_closes_keep_alive_connections_but_not_streams() {
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--heartbeat-interval",
        "0",
        "--idle-timeout",
        "0.5",
    ]);
    let mut sub = subscribe(srv.addr, "/events");
    let mut idle = connect(srv.addr);
    assert_eq!(idle.request("GET", "/health", &[], b"").status, 200);
    let t = Instant::now();
    let rest = idle
        .read_until_eof(Duration::from_secs(5))
        .expect("idle keep-alive connection not closed");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "closed after {:?}",
        t.elapsed()
    );
    // The stream, silent all this time (no heartbeats), is still served.
    let id = publish(srv.addr, "default", "alive");
    assert_eq!(sub.next_event_strict().id_u64(), id);
}

#[test]
fn a_prompt_subscriber_is_not_dropped_by_a_fast_publisher() {
    // Sequential publishes (each waits for its answer) of 2 KB events
    // through a 64 KB history: a subscriber that reads all the time is never
    // "slower than the history window".
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--heartbeat-interval",
        "0",
        "--history-bytes",
        "65536",
    ]);
    let mut good = subscribe(srv.addr, "/events?channel=fast");
    let n = 300;
    let reader = thread::spawn(move || {
        let mut ids = Vec::new();
        while ids.len() < n {
            match good.next_item_within(Duration::from_secs(10)) {
                Ok(Some(SseItem::Event(e))) => ids.push(e.id_u64()),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        ids
    });
    let mut p = Publisher::new(srv.addr);
    let data = "f".repeat(2000);
    let published: Vec<u64> = (0..n).map(|_| p.event("fast", None, &data)).collect();
    let got = reader.join().unwrap();
    let st = status(srv.addr);
    assert_eq!(
        json_u64(&st, "slow_consumers_dropped"),
        0,
        "a subscriber reading all the time was dropped: {st}"
    );
    assert_eq!(got.len(), n, "received {} of {n} events", got.len());
    assert_eq!(got, published);
}

#[test]
fn pipelined_publishes_bigger_than_the_history_do_not_drop_a_reading_subscriber() {
    // Two 3 KB events through a 4 KB history, pipelined in one write: the
    // subscriber is idle and reading, so it must get both (the hub may write
    // the first before appending the second), not be dropped as "slow".
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--heartbeat-interval",
        "0",
        "--history-bytes",
        "4096",
    ]);
    let mut sub = subscribe(srv.addr, "/events?channel=burst");
    let mut c = connect(srv.addr);
    let data = "b".repeat(3000);
    let mut req = Vec::new();
    for _ in 0..2 {
        let body = json!({"channel": "burst", "data": data}).to_string();
        req.extend(request_bytes(
            "POST",
            "/events/broadcast",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        ));
    }
    c.send(&req);
    let ids: Vec<u64> = (0..2)
        .map(|_| {
            let r = c.read_response();
            assert_eq!(r.status, 200, "{:?}", r.text());
            json_u64(&r.json(), "id")
        })
        .collect();
    for id in ids {
        match sub.next_item_within(Duration::from_secs(5)) {
            Ok(Some(SseItem::Event(e))) => assert_eq!(e.id_u64(), id),
            other => panic!(
                "reading subscriber did not get event {id}: {other:?}; status {}",
                status(srv.addr)
            ),
        }
    }
}
