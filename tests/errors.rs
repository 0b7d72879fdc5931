//! Errors: 404, 405 with Allow, 400 for malformed requests, JSON error
//! bodies, and a bad client never disturbing a subscriber (item 11).

mod common;

use std::time::Duration;

use common::*;

/// Sends raw bytes on a fresh connection and reads one response.
fn raw(srv: &TestServer, bytes: &[u8]) -> Response {
    let mut c = connect(srv.addr);
    c.send(bytes);
    c.read_response()
}

/// Publishes one event and checks the subscriber receives exactly it next.
fn still_receiving(srv: &TestServer, sub: &mut SseStream, after: &str) {
    let id = publish(srv.addr, "default", after);
    let e = sub.next_event_strict();
    assert_eq!(
        (e.id_u64(), e.data.as_str()),
        (id, after),
        "subscriber disturbed after {after}"
    );
}

#[test]
fn unknown_path_is_404_json() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut sub = subscribe(srv.addr, "/events");
    // (`/` may serve a page: not part of the contract either way.)
    for path in [
        "/nope",
        "/events/",
        "/events/broadcast/x",
        "/health/x",
        "/eventsx",
        "/ssex",
    ] {
        let r = get(srv.addr, path);
        assert_eq!(r.status, 404, "{path}: {:?}", r.text());
        r.assert_json_error();
        still_receiving(&srv, &mut sub, &format!("404 {path}"));
    }
}

#[test]
fn wrong_method_is_405_with_allow() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut sub = subscribe(srv.addr, "/events");
    let cases = [
        ("DELETE", "/events", "GET"),
        ("POST", "/events", "GET"),
        ("PUT", "/sse", "GET"),
        ("GET", "/events/broadcast", "POST"),
        ("PUT", "/events/broadcast", "POST"),
        ("POST", "/health", "GET"),
        ("DELETE", "/events/status", "GET"),
        ("PATCH", "/sse/health", "GET"),
    ];
    for (method, path, allowed) in cases {
        let r = http(srv.addr, method, path, &[], b"");
        assert_eq!(r.status, 405, "{method} {path}: {:?}", r.text());
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow: {:?}", r.headers));
        assert!(
            allow
                .split(',')
                .any(|m| m.trim().eq_ignore_ascii_case(allowed)),
            "{method} {path}: Allow {allow:?} lacks {allowed}"
        );
        assert!(
            !allow
                .split(',')
                .any(|m| m.trim().eq_ignore_ascii_case(method)),
            "{method} {path}: Allow {allow:?} lists the refused method"
        );
        r.assert_json_error();
        still_receiving(&srv, &mut sub, &format!("405 {method} {path}"));
    }
}

#[test]
fn malformed_requests_are_400_json() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut sub = subscribe(srv.addr, "/events");
    let cases: [&[u8]; 8] = [
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"POST /events/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /events/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
    ];
    for bytes in cases {
        let r = raw(&srv, bytes);
        let shown = String::from_utf8_lossy(bytes);
        // HTTP/9.9 may fairly be 505; all the others are 400.
        if shown.contains("HTTP/9.9") {
            assert!(
                r.status == 400 || r.status == 505,
                "{shown:?}: {}",
                r.status
            );
        } else {
            assert_eq!(r.status, 400, "{shown:?}: {:?}", r.text());
        }
        r.assert_json_error();
        still_receiving(&srv, &mut sub, &format!("malformed {shown:?}"));
    }
}

#[test]
fn bad_publish_bodies_are_400_json() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut sub = subscribe(srv.addr, "/events");
    let json = ("Content-Type", "application/json");
    let text = ("Content-Type", "text/plain");
    let cases: [(&str, &[u8]); 6] = [
        ("application/json", b"{not json"),
        ("application/json", b""),
        ("application/json", b"{\"data\": \"x\"} trailing"),
        ("application/json", b"[1, 2]"),
        ("text/plain", b"\xff\xfe not utf-8"),
        ("text/plain", b""),
    ];
    for (ct, body) in cases {
        let h = if ct == "text/plain" { text } else { json };
        let r = http(srv.addr, "POST", "/events/broadcast", &[h], body);
        let shown = String::from_utf8_lossy(body);
        assert_eq!(r.status, 400, "{ct} {shown:?}: {:?}", r.text());
        r.assert_json_error();
        still_receiving(&srv, &mut sub, &format!("bad body {shown:?}"));
    }
}

#[test]
fn an_error_keeps_or_cleanly_closes_the_connection() {
    // After a 404 on a keep-alive connection, the next request works (or the
    // server said Connection: close and closed).
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut c = connect(srv.addr);
    let r = c.request("GET", "/nope", &[], b"");
    assert_eq!(r.status, 404);
    if r.header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        assert!(c.read_until_eof(Duration::from_secs(5)).unwrap().is_empty());
    } else {
        let r = c.request("GET", "/health", &[], b"");
        assert_eq!(r.status, 200);
    }
}

#[test]
fn a_client_that_disconnects_mid_request_does_not_disturb_a_subscriber() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut sub = subscribe(srv.addr, "/events");
    for partial in [
        &b"GET /hea"[..],
        b"POST /events/broadcast HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"da",
        b"GET /events HTTP/1.1\r\n",
    ] {
        let mut c = connect(srv.addr);
        c.send(partial);
        drop(c);
        still_receiving(
            &srv,
            &mut sub,
            &format!("hang-up {:?}", String::from_utf8_lossy(partial)),
        );
    }
    // A subscriber that leaves does not disturb another.
    let other = subscribe(srv.addr, "/events");
    other.close();
    still_receiving(&srv, &mut sub, "other subscriber left");
}

#[test]
fn a_request_arriving_byte_by_byte_is_served() {
    let srv = TestServer::start(&["--retry-ms", "0"]);
    let mut sub = subscribe(srv.addr, "/events?channel=slowly");
    let body = r#"{"channel":"slowly","data":"one byte at a time"}"#;
    let req = request_bytes(
        "POST",
        "/events/broadcast",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let mut c = connect(srv.addr);
    for b in &req {
        c.send(std::slice::from_ref(b));
    }
    let r = c.read_response();
    assert_eq!(r.status, 200, "{:?}", r.text());
    let e = sub.next_event_strict();
    assert_eq!(e.id_u64(), json_u64(&r.json(), "id"));
    assert_eq!(e.data, "one byte at a time");
}
