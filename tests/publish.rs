//! Publishing: JSON object, array, text/plain, multi-line data, field
//! injection, answers, keep-alive and pipelining (item 2); ids (item 3);
//! publish protection (item 9).

mod common;

use serde_json::{json, Value};

use common::*;

#[test]
fn json_object_publish_answers_id_channel_and_subscribers() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s1 = subscribe(srv.addr, "/events?channel=news");
    let mut s2 = subscribe(srv.addr, "/events?channel=news");
    let mut p = Publisher::new(srv.addr);

    let r = p.try_json(&json!({"channel": "news", "event": "greeting", "data": "hello"}));
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{:?}",
        r.headers
    );
    let a = r.json();
    let id = json_u64(&a, "id");
    assert_eq!(a["channel"], "news");
    assert_eq!(json_u64(&a, "subscribers"), 2, "answer {a}");
    for s in [&mut s1, &mut s2] {
        let e = s.next_event_strict();
        assert_eq!(e.id_u64(), id);
        assert_eq!(e.event, "greeting");
        assert_eq!(e.data, "hello");
    }

    // No event name: the browser's default type "message".
    let id2 = p.event("news", None, "plain");
    let e = s1.next_event_strict();
    assert_eq!((e.id_u64(), e.event.as_str()), (id2, "message"));

    // A channel nobody listens to: 0 subscribers.
    let a = p.json(&json!({"channel": "empty", "data": "x"}));
    assert_eq!(json_u64(&a, "subscribers"), 0, "answer {a}");
}

#[test]
fn non_string_data_is_sent_compact_encoded() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s = subscribe(srv.addr, "/events?channel=j");
    let mut p = Publisher::new(srv.addr);
    let cases = [
        json!({"k": [1, 2, {"z": null}], "s": "a b"}),
        json!(42),
        json!(true),
        json!([1, "two", 3.5]),
        json!({"multi": "line\nvalue"}),
    ];
    for v in cases {
        let a = p.json(&json!({"channel": "j", "data": v}));
        let e = s.next_event_strict();
        assert_eq!(e.id_u64(), json_u64(&a, "id"));
        // Compact encoding: exactly serde_json's compact form, one line.
        assert_eq!(e.data, serde_json::to_string(&v).unwrap(), "for {v}");
        assert!(!e.data.contains('\n'), "{:?}", e.data);
        let back: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(back, v);
    }
}

#[test]
fn json_array_is_published_in_order_with_one_answer_per_event() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut a_sub = subscribe(srv.addr, "/events?channel=a");
    let mut b_sub = subscribe(srv.addr, "/events?channel=b");
    let mut p = Publisher::new(srv.addr);
    let ans = p.json(&json!([
        {"channel": "a", "data": "one"},
        {"channel": "b", "event": "x", "data": "two"},
        {"channel": "a", "data": "three"},
        {"channel": "a", "event": "y", "data": {"n": 4}},
    ]));
    let evs = ans["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events array: {ans}"));
    assert_eq!(evs.len(), 4, "{ans}");
    let chans: Vec<&str> = evs.iter().map(|e| e["channel"].as_str().unwrap()).collect();
    assert_eq!(chans, ["a", "b", "a", "a"]);
    for e in evs {
        assert_eq!(json_u64(e, "subscribers"), 1, "{ans}");
    }
    let ids: Vec<u64> = evs.iter().map(|e| json_u64(e, "id")).collect();
    assert!(ids[0] < ids[2] && ids[2] < ids[3], "channel a ids {ids:?}");

    let got: Vec<SseEvent> = (0..3).map(|_| a_sub.next_event_strict()).collect();
    assert_eq!(
        got.iter().map(|e| e.id_u64()).collect::<Vec<_>>(),
        [ids[0], ids[2], ids[3]]
    );
    assert_eq!(
        got.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["one", "three", "{\"n\":4}"]
    );
    assert_eq!(got[2].event, "y");
    let b = b_sub.next_event_strict();
    assert_eq!(
        (b.id_u64(), b.event.as_str(), b.data.as_str()),
        (ids[1], "x", "two")
    );
}

#[test]
fn json_array_is_all_or_none() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s = subscribe(srv.addr, "/events?channel=batch");
    let mut p = Publisher::new(srv.addr);
    for bad in [
        json!([{"channel": "batch", "data": "ok"}, {"channel": "batch", "data": ""}]),
        json!([{"channel": "batch", "data": "ok"}, {"channel": "batch"}]),
        json!([{"channel": "batch", "data": "ok"}, {"channel": "bat\nch", "data": "x"}]),
    ] {
        let r = p.try_json(&bad);
        assert_eq!(r.status, 400, "{bad} -> {:?}", r.text());
        r.assert_json_error();
        // The connection may be closed after an error: use a fresh one.
        p = Publisher::new(srv.addr);
    }
    // Nothing of the refused batches arrived: the next event is this one.
    let id = p.event("batch", None, "sentinel");
    let e = s.next_event_strict();
    assert_eq!((e.id_u64(), e.data.as_str()), (id, "sentinel"));
}

#[test]
fn text_plain_body_is_the_data_with_channel_and_event_from_the_query() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s = subscribe(srv.addr, "/events?channel=txt");
    let mut dflt = subscribe(srv.addr, "/events");
    let mut p = Publisher::new(srv.addr);
    let body = "plain text\nsecond line {\"not\": json}";
    let r = p.post(
        Some("text/plain; charset=utf-8"),
        "/events/broadcast?channel=txt&event=note",
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{:?}", r.text());
    let a = r.json();
    assert_eq!(a["channel"], "txt");
    let e = s.next_event_strict();
    assert_eq!(e.id_u64(), json_u64(&a, "id"));
    assert_eq!(e.event, "note");
    assert_eq!(e.data, body);

    // No query: default channel, default event type.
    let r = p.post(Some("text/plain"), "/events/broadcast", b"to default");
    assert_eq!(r.status, 200, "{:?}", r.text());
    let e = dflt.next_event_strict();
    assert_eq!(e.id_u64(), json_u64(&r.json(), "id"));
    assert_eq!(
        (e.event.as_str(), e.data.as_str()),
        ("message", "to default")
    );

    // Percent-encoded query values are decoded.
    let r = p.post(
        Some("text/plain"),
        "/events/broadcast?channel=t%78t&event=a%20b",
        b"decoded",
    );
    assert_eq!(r.status, 200, "{:?}", r.text());
    let e = s.next_event_strict();
    assert_eq!((e.event.as_str(), e.data.as_str()), ("a b", "decoded"));
}

#[test]
fn json_content_type_is_the_default_also_for_form_urlencoded() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s = subscribe(srv.addr, "/events?channel=ct");
    let mut p = Publisher::new(srv.addr);
    let body = json!({"channel": "ct", "data": "x"}).to_string();
    for ct in [None, Some("application/x-www-form-urlencoded")] {
        let r = p.post(ct, "/events/broadcast", body.as_bytes());
        assert_eq!(r.status, 200, "{ct:?}: {:?}", r.text());
        assert_eq!(s.next_event_strict().id_u64(), json_u64(&r.json(), "id"));
    }
    let r = p.post(Some("application/xml"), "/events/broadcast", b"<x/>");
    assert_eq!(r.status, 415, "{:?}", r.text());
    r.assert_json_error();
}

#[test]
fn multiline_data_round_trips_through_a_whatwg_parser() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s = subscribe(srv.addr, "/events?channel=ml");
    let mut p = Publisher::new(srv.addr);
    let cases = [
        "hello\nworld",
        "cr\ronly",
        "crlf\r\nline",
        "mixed\nall\r\nthree\rkinds",
        "trailing newline\n",
        "\nleading newline",
        "empty\n\nline in the middle",
        "\r\n\r\n",
        "\n",
        " leading space",
        "  two spaces",
        "data: injected\n\nid: 1\nevent: evil",
        ": not a comment",
        "tab\tand unicode é ✓ 🚀",
        "colon:inside",
    ];
    for data in cases {
        let id = p.event("ml", None, data);
        let e = s.next_event_strict();
        assert_eq!(e.id_u64(), id, "for {data:?}");
        assert_eq!(e.event, "message", "for {data:?}");
        // SSE carries line ends as LF; everything else is exactly as sent.
        assert_eq!(e.data, normalize_newlines(data), "for {data:?}");
    }
    // The same through text/plain.
    for data in ["a\r\nb\rc\nd", "x\n"] {
        let r = p.post(
            Some("text/plain"),
            "/events/broadcast?channel=ml",
            data.as_bytes(),
        );
        assert_eq!(r.status, 200, "{:?}", r.text());
        let e = s.next_event_strict();
        assert_eq!(e.data, normalize_newlines(data), "text/plain {data:?}");
    }
}

#[test]
fn control_characters_in_event_or_channel_are_refused() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s = subscribe(srv.addr, "/events?channel=safe");
    for bad in ["a\nb", "a\rb", "a\r\nb", "a\u{0}b", "\n", "x\u{1}"] {
        for field in ["event", "channel"] {
            let mut v = json!({"channel": "safe", "event": "ok", "data": "x"});
            v[field] = Value::from(bad);
            let r = Publisher::new(srv.addr).try_json(&v);
            assert_eq!(
                r.status,
                400,
                "{field}={bad:?} -> {} {:?}",
                r.status,
                r.text()
            );
            r.assert_json_error();
        }
    }
    // Through the text/plain query too (percent-encoded LF, CR and NUL).
    for q in [
        "channel=safe&event=a%0Ab",
        "channel=safe&event=a%0Db",
        "channel=sa%0Afe",
        "channel=safe&event=a%00b",
    ] {
        let r = Publisher::new(srv.addr).post(
            Some("text/plain"),
            &format!("/events/broadcast?{q}"),
            b"x",
        );
        assert_eq!(r.status, 400, "{q} -> {} {:?}", r.status, r.text());
        r.assert_json_error();
    }
    // Other bad fields.
    for v in [
        json!({"channel": "safe", "data": ""}),
        json!({"channel": "safe", "data": null}),
        json!({"channel": "safe"}),
        json!({"channel": "", "data": "x"}),
        json!({"channel": "safe", "event": "", "data": "x"}),
        json!({"channel": "c".repeat(129), "data": "x"}),
        json!({"channel": "safe", "event": "e".repeat(129), "data": "x"}),
        json!("just a string"),
    ] {
        let r = Publisher::new(srv.addr).try_json(&v);
        assert_eq!(r.status, 400, "{v} -> {} {:?}", r.status, r.text());
        r.assert_json_error();
    }
    // 128 bytes is fine.
    let a = Publisher::new(srv.addr)
        .json(&json!({"channel": "safe", "event": "e".repeat(128), "data": "x"}));
    // Nothing refused reached the subscriber.
    let e = s.next_event_strict();
    assert_eq!(e.id_u64(), json_u64(&a, "id"));
    assert_eq!(e.event, "e".repeat(128));
}

#[test]
fn several_publishes_on_one_keep_alive_connection() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s = subscribe(srv.addr, "/events?channel=ka");
    let mut p = Publisher::new(srv.addr);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(p.event("ka", None, &format!("m{i}")));
    }
    // Other request kinds on the same connection too.
    let r = p.conn.request("GET", "/health", &[], b"");
    assert_eq!(r.status, 200);
    ids.push(p.event("ka", None, "m5"));
    for (i, id) in ids.iter().enumerate() {
        let e = s.next_event_strict();
        assert_eq!((e.id_u64(), e.data.clone()), (*id, format!("m{i}")));
    }
}

#[test]
fn pipelined_publishes_are_answered_in_order() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s = subscribe(srv.addr, "/events?channel=pipe");
    let mut c = connect(srv.addr);
    let mut all = Vec::new();
    for i in 0..3 {
        let body = json!({"channel": "pipe", "data": format!("p{i}")}).to_string();
        all.extend(request_bytes(
            "POST",
            "/events/broadcast",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        ));
    }
    c.send(&all); // one write
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = c.read_response();
        assert_eq!(r.status, 200, "{:?}", r.text());
        ids.push(json_u64(&r.json(), "id"));
    }
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
    for (i, id) in ids.iter().enumerate() {
        let e = s.next_event_strict();
        assert_eq!((e.id_u64(), e.data.clone()), (*id, format!("p{i}")));
    }

    // A mix in one write: publish, health, status, publish.
    let mut mix = request_bytes(
        "POST",
        "/events/broadcast?channel=pipe",
        &[("Content-Type", "text/plain")],
        b"t1",
    );
    mix.extend(request_bytes("GET", "/health", &[], b""));
    mix.extend(request_bytes("GET", "/events/status", &[], b""));
    mix.extend(request_bytes(
        "POST",
        "/events/broadcast?channel=pipe",
        &[("Content-Type", "text/plain")],
        b"t2",
    ));
    c.send(&mix);
    let r1 = c.read_response();
    let r2 = c.read_response();
    let r3 = c.read_response();
    let r4 = c.read_response();
    assert_eq!([r1.status, r2.status, r3.status, r4.status], [200; 4]);
    assert!(r1.json().get("id").is_some(), "{}", r1.text());
    assert_eq!(r2.json()["status"], "healthy", "{}", r2.text());
    assert!(r3.json().get("events_published").is_some(), "{}", r3.text());
    let (i1, i4) = (json_u64(&r1.json(), "id"), json_u64(&r4.json(), "id"));
    assert!(ids[2] < i1 && i1 < i4);
    assert_eq!(s.next_event_strict().data, "t1");
    assert_eq!(s.next_event_strict().data, "t2");
}

#[test]
fn chunked_request_body_is_accepted() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut s = subscribe(srv.addr, "/events?channel=chunk");
    let mut c = connect(srv.addr);
    let body = json!({"channel": "chunk", "data": "in pieces"}).to_string();
    let (a, b) = body.split_at(10);
    let req = format!(
        "POST /events/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    c.send(req.as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200, "{:?}", r.text());
    let e = s.next_event_strict();
    assert_eq!(e.id_u64(), json_u64(&r.json(), "id"));
    assert_eq!(e.data, "in pieces");
}

#[test]
fn ids_strictly_increase_per_channel() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut sa = subscribe(srv.addr, "/events?channel=ia");
    let mut sb = subscribe(srv.addr, "/events?channel=ib");
    let mut p = Publisher::new(srv.addr);
    let (mut ia, mut ib) = (Vec::new(), Vec::new());
    for i in 0..30 {
        if i % 3 == 0 {
            ib.push(p.event("ib", None, "b"));
        }
        ia.push(p.event("ia", None, "a"));
    }
    let batch = p.json(&json!([
        {"channel": "ia", "data": "x"},
        {"channel": "ib", "data": "y"},
        {"channel": "ia", "data": "z"}
    ]));
    let evs = batch["events"].as_array().unwrap();
    ia.push(json_u64(&evs[0], "id"));
    ib.push(json_u64(&evs[1], "id"));
    ia.push(json_u64(&evs[2], "id"));
    for ids in [&ia, &ib] {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "not increasing: {ids:?}"
        );
    }
    let got_a: Vec<u64> = (0..ia.len())
        .map(|_| sa.next_event_strict().id_u64())
        .collect();
    let got_b: Vec<u64> = (0..ib.len())
        .map(|_| sb.next_event_strict().id_u64())
        .collect();
    assert_eq!(got_a, ia);
    assert_eq!(got_b, ib);
}

#[test]
fn ids_keep_increasing_across_a_restart() {
    let first = TestServer::start(&[]);
    let mut p = Publisher::new(first.addr);
    let mut last = 0;
    for i in 0..20 {
        let id = p.event("restart", None, &format!("before {i}"));
        assert!(id > last);
        last = id;
    }
    let other_before = p.event("other", None, "x");
    drop(p);
    first.stop();

    let second = TestServer::start(&[]);
    let mut p = Publisher::new(second.addr);
    let after = p.event("restart", None, "after");
    assert!(
        after > last,
        "id after restart {after} is not above the last id before it {last}"
    );
    let other_after = p.event("other", None, "y");
    assert!(
        other_after > other_before,
        "{other_after} <= {other_before}"
    );
}

#[test]
fn publish_token_is_required_when_configured() {
    let srv = TestServer::start(&["--retry-ms", "0", "--publish-token", "s3cret"]);
    let mut s = subscribe(srv.addr, "/events?channel=tok");
    let body = json!({"channel": "tok", "data": "x"}).to_string();
    let ct = ("Content-Type", "application/json");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("Bearer s3crett"),
        Some("Basic s3cret"),
        Some("s3cret"),
        Some("Bearer "),
    ] {
        let mut hs = vec![ct];
        if let Some(a) = auth {
            hs.push(("Authorization", a));
        }
        let r = http(srv.addr, "POST", "/events/broadcast", &hs, body.as_bytes());
        assert_eq!(
            r.status,
            401,
            "Authorization {auth:?} -> {} {:?}",
            r.status,
            r.text()
        );
        r.assert_json_error();
    }
    let r = http(
        srv.addr,
        "POST",
        "/events/broadcast",
        &[ct, ("Authorization", "Bearer s3cret")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{:?}", r.text());
    // Only the authorized publish reached the subscriber.
    let e = s.next_event_strict();
    assert_eq!(e.id_u64(), json_u64(&r.json(), "id"));
}

#[test]
fn with_a_token_a_non_loopback_client_may_publish() {
    let srv = TestServer::start(&[
        "--retry-ms",
        "0",
        "--publish-token",
        "s3cret",
        "--trusted-proxies",
        "127.0.0.1",
    ]);
    let body = json!({"data": "x"}).to_string();
    let r = http(
        srv.addr,
        "POST",
        "/events/broadcast",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", "203.0.113.5"),
            ("Authorization", "Bearer s3cret"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{:?}", r.text());
    let r = http(
        srv.addr,
        "POST",
        "/events/broadcast",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", "203.0.113.5"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401, "{:?}", r.text());
}

#[test]
fn without_a_token_only_loopback_clients_may_publish() {
    let srv = TestServer::start(&["--retry-ms", "0", "--trusted-proxies", "127.0.0.1"]);
    let mut s = subscribe(srv.addr, "/events?channel=lo");
    let body = json!({"channel": "lo", "data": "x"}).to_string();
    let ct = ("Content-Type", "application/json");
    for fwd in [
        ("X-Forwarded-For", "203.0.113.5"),
        ("X-Forwarded-For", "203.0.113.5, 127.0.0.1"),
        ("X-Forwarded-For", "127.0.0.1, 203.0.113.5"),
        ("X-Real-IP", "203.0.113.9"),
        ("X-Forwarded-For", "2001:db8::1"),
    ] {
        let r = http(
            srv.addr,
            "POST",
            "/events/broadcast",
            &[ct, fwd],
            body.as_bytes(),
        );
        assert_eq!(r.status, 403, "{fwd:?} -> {} {:?}", r.status, r.text());
        r.assert_json_error();
    }
    // The proxy itself, with no forwarded address, is a loopback client.
    let r = http(
        srv.addr,
        "POST",
        "/events/broadcast",
        &[ct],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{:?}", r.text());
    let e = s.next_event_strict();
    assert_eq!(e.id_u64(), json_u64(&r.json(), "id"));
}

#[test]
fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let body = json!({"data": "x"}).to_string();
    for fwd in [
        ("X-Forwarded-For", "203.0.113.5"),
        ("X-Real-IP", "203.0.113.9"),
    ] {
        let r = http(
            srv.addr,
            "POST",
            "/events/broadcast",
            &[("Content-Type", "application/json"), fwd],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{fwd:?}: {:?}", r.text());
    }
}
