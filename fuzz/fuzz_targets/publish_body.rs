//! `routes::decode_publish` on arbitrary bodies and queries.
//!
//! Input: byte 0 picks the Content-Type, byte 1 the query length, then the
//! query (lossy UTF-8, as a head's query is `&str`), then the body.
//! Never panics; every accepted event has valid, unreserved channel and
//! event names and non-empty data that survives SSE encoding; every refusal
//! is 400, 413 or 415 with a message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssecast::http::Request;
use ssecast::routes::decode_publish;
use ssecast::sse::{self, Item, Parser};

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("text/plain"),
    Some("text/plain; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
    Some("application/ld+json"),
    Some("APPLICATION/JSON ; charset=UTF-8"),
    Some(""),
    Some("image/png"),
    Some("text/event-stream"),
];

fuzz_target!(|data: &[u8]| {
    let [ct, qlen, rest @ ..] = data else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(*ct) % CONTENT_TYPES.len()];
    let qlen = usize::from(*qlen).min(rest.len());
    let query = String::from_utf8_lossy(&rest[..qlen]).into_owned();
    let body = &rest[qlen..];
    let req = Request {
        method: "POST",
        path: "/events/broadcast",
        query: &query,
        content_type,
        keep_alive: true,
        ..Request::default()
    };
    match decode_publish(&req, body) {
        Ok(events) => {
            assert!(!events.is_empty());
            for ev in &events {
                assert!(sse::valid_name(&ev.channel), "channel {:?}", ev.channel);
                assert!(!ev.channel.starts_with('$'), "reserved {:?}", ev.channel);
                if let Some(name) = &ev.event {
                    assert!(sse::valid_name(name), "event {name:?}");
                }
                assert!(!ev.data.is_empty(), "empty data accepted");
                round_trip(ev.event.as_deref(), &ev.data);
            }
        }
        Err(e) => {
            assert!(matches!(e.status, 400 | 413 | 415), "{e:?}");
            assert!(!e.message.is_empty());
        }
    }
});

/// What a browser's EventSource would hand the page.
fn round_trip(event: Option<&str>, data: &str) {
    let mut buf = Vec::new();
    sse::encode_event(&mut buf, 42, event, data);
    assert_eq!(buf.len(), sse::encoded_len(42, event, data));
    let mut out = Vec::new();
    Parser::new().feed(&buf, &mut out);
    let want = data.replace("\r\n", "\n").replace('\r', "\n");
    match out.as_slice() {
        [Item::Event(e)] => {
            assert_eq!(e.data, want);
            assert_eq!(e.event.as_deref(), event);
            assert_eq!(e.id.as_deref(), Some("42"));
        }
        other => panic!("{data:?} / {event:?} parsed as {other:?}"),
    }
}
