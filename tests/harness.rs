//! Self-tests of the test helpers (no server): the SSE parser must follow
//! the WHATWG rules and the RFC 3339 parser must be right, or the other
//! tests prove nothing.

mod common;

use common::*;

fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseItem> {
    let mut p = SseParser::new();
    for c in chunks {
        p.feed(c);
    }
    p.items.into_iter().collect()
}

fn ev(id: &str, event: &str, data: &str) -> SseItem {
    SseItem::Event(SseEvent {
        id: id.into(),
        event: event.into(),
        data: data.into(),
    })
}

#[test]
fn sse_parser_follows_whatwg_line_and_field_rules() {
    let stream = b"\xEF\xBB\xBFretry: 1200\n\n:hb\r\nid: 7\revent: x\r\ndata: a\ndata:b\r\ndata:  c\r\rdata\n\nid: 8\0\ndata: d\n\nretry: 1x\n\n";
    let want = vec![
        SseItem::Retry(1200),
        SseItem::Comment("hb".into()),
        ev("7", "x", "a\nb\n c"),
        ev("7", "message", ""),
        ev("7", "message", "d"),
    ];
    assert_eq!(parse_chunks(&[stream]), want);
    // Byte by byte, so CR / LF pairs split across reads.
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(parse_chunks(&bytes), want);
}

#[test]
fn sse_parser_ignores_an_incomplete_event_and_empty_data() {
    assert_eq!(parse_chunks(&[b"event: e\n\n"]), vec![]);
    assert_eq!(parse_chunks(&[b"data: x\n"]), vec![]);
    assert_eq!(parse_chunks(&[b"data\n\n"]), vec![ev("", "message", "")]);
    // A trailing CR at the end of a read then an LF is one line end.
    assert_eq!(
        parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\r"]),
        vec![ev("", "message", "a\nb")]
    );
}

#[test]
fn rfc3339_parser() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951868800.0));
    assert_eq!(
        parse_rfc3339("2025-11-22T02:40:00+01:00"),
        Some(1763775600.0)
    );
    assert_eq!(
        parse_rfc3339("2025-11-22T01:40:00.250Z"),
        Some(1763775600.25)
    );
    assert_eq!(
        parse_rfc3339("2025-11-22T01:40:00-00:30"),
        Some(1763777400.0)
    );
    for bad in [
        "2025-11-22 01:40:00",
        "2025-11-22T01:40:00",
        "2025-13-22T01:40:00Z",
        "2025-11-22T01:40Z",
        "2025-11-22T01:40:00.Z",
        "2025-11-22T01:40:00+0100",
        "1763775600",
        "",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
    }
}

#[test]
fn listening_line_parser() {
    let a = parse_listening_line(
        "2025-11-22T01:40:00Z INFO ssecast listening on 127.0.0.1:41234 (max 1000 connections)",
    );
    assert_eq!(a, Some("127.0.0.1:41234".parse().unwrap()));
    assert_eq!(
        parse_listening_line("listening on http://127.0.0.1:5001."),
        Some("127.0.0.1:5001".parse().unwrap())
    );
    assert_eq!(parse_listening_line("starting"), None);
}

#[test]
fn newline_normalization() {
    assert_eq!(normalize_newlines("a\r\nb\rc\nd\r\r\n"), "a\nb\nc\nd\n\n");
}
