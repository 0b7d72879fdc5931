use std::collections::VecDeque;

use super::*;

fn feed_all(r: &mut ResponseReader, parts: &[&[u8]]) -> Vec<Parsed> {
    parts.iter().map(|p| r.feed(p)).collect()
}

fn done(p: &Parsed) -> &Response {
    match p {
        Parsed::Done(r) => r,
        other => panic!("not done: {other:?}"),
    }
}

#[test]
fn urls_are_http_host_port_path_only() {
    let u = Url::parse("http://127.0.0.1:8080/auth?x=1").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.path.as_str()),
        ("127.0.0.1", 8080, "/auth?x=1")
    );
    let u = Url::parse("HTTP://app.local").unwrap();
    assert_eq!(
        (u.port, u.path.as_str(), u.authority()),
        (80, "/", "app.local:80".into())
    );
    let u = Url::parse("http://[::1]:9/a").unwrap();
    assert_eq!((u.socket_host(), u.port), ("::1", 9));
    for bad in [
        "https://a/b",
        "a:1/b",
        "http://",
        "http://a:0/",
        "http://a:99999/",
        "http://u@a/",
        "http://a b/",
        "http://a/#f",
        "http://a?q",
        "http://a:x/",
        "http://é/",
    ] {
        assert!(Url::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_request_carries_host_and_headers_and_drops_split_values() {
    let u = Url::parse("http://h:1/p").unwrap();
    let mut out = Vec::new();
    write_get(
        &mut out,
        &u,
        &[("Cookie", "a=1"), ("X-Bad", "a\r\nInjected: 1")],
    );
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("GET /p HTTP/1.1\r\nHost: h:1\r\n"), "{s}");
    assert!(s.contains("\r\nCookie: a=1\r\n") && !s.contains("Injected"));
    assert!(s.ends_with("\r\n\r\n"));
}

#[test]
fn partial_heads_wait_then_a_length_body_completes() {
    let mut r = ResponseReader::default();
    let got = feed_all(
        &mut r,
        &[
            b"HTTP/1.1 20",
            b"0 OK\r\nX-Ssecast-Expires: 2\r\nContent-Le",
            b"ngth: 4\r\n\r\nab",
            b"cd",
        ],
    );
    assert_eq!(
        got[..3],
        [Parsed::Partial, Parsed::Partial, Parsed::Partial]
    );
    let resp = done(&got[3]);
    assert_eq!(resp.status, 200);
    assert!(resp.keep_alive);
    assert_eq!(resp.header("x-ssecast-expires"), Some("2"));
}

#[test]
fn chunked_bodies_are_decoded_a_byte_at_a_time() {
    let mut r = ResponseReader::default();
    let msg = b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    for (i, b) in msg.iter().enumerate() {
        let p = r.feed(&[*b]);
        if i + 1 < msg.len() {
            assert_eq!(p, Parsed::Partial, "at {i}");
        } else {
            assert_eq!(done(&p).status, 403);
        }
    }
}

#[test]
fn a_reader_is_reused_for_the_next_response_on_the_connection() {
    let mut r = ResponseReader::default();
    let one = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let two = b"HTTP/1.1 401 No\r\nWWW-Authenticate: Bearer\r\nContent-Length: 2\r\n\r\nno";
    assert_eq!(done(&r.feed(one)).status, 200);
    assert!(!r.started());
    let resp = r.feed(two);
    assert_eq!(done(&resp).status, 401);
    assert_eq!(done(&resp).header("WWW-Authenticate"), Some("Bearer"));
}

#[test]
fn close_mid_body_fails_and_close_delimited_bodies_complete() {
    let mut r = ResponseReader::default();
    assert_eq!(
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"),
        Parsed::Partial
    );
    assert!(matches!(r.eof(), Parsed::Failed(_)));
    let mut r = ResponseReader::default();
    assert_eq!(
        r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
        Parsed::Partial
    );
    assert!(matches!(r.eof(), Parsed::Failed(_)));
    let mut r = ResponseReader::default();
    assert_eq!(r.feed(b"HTTP/1.0 200 OK\r\n\r\nwhatever"), Parsed::Partial);
    let resp = r.eof();
    assert!(!done(&resp).keep_alive);
    let mut r = ResponseReader::default();
    assert!(matches!(r.eof(), Parsed::Failed(_)));
}

#[test]
fn garbage_and_hostile_answers_fail_without_panicking() {
    let cases: &[&[u8]] = &[
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\n\r\n",
        b"\x00\xff\r\n\r\n",
    ];
    for c in cases {
        let mut r = ResponseReader::default();
        assert!(
            matches!(r.feed(c), Parsed::Failed(_)),
            "{:?}",
            String::from_utf8_lossy(c)
        );
    }
    let mut r = ResponseReader::default();
    let huge = vec![b'a'; MAX_HEAD + 10];
    assert!(matches!(r.feed(b"HTTP/1.1 200 OK\r\nX: "), Parsed::Partial));
    assert!(matches!(r.feed(&huge), Parsed::Failed(_)));
    // The same head arriving complete in one read is refused too.
    let mut r = ResponseReader::default();
    let mut whole = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    whole.extend_from_slice(&huge);
    whole.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    assert!(matches!(r.feed(&whole), Parsed::Failed(_)));
    // Bytes nobody asked for: the answer stands, the connection goes.
    let mut r = ResponseReader::default();
    let p = r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab");
    assert!(!done(&p).keep_alive);
    // An interim 100 is skipped.
    let mut r = ResponseReader::default();
    let p = r.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No\r\n\r\n");
    assert_eq!(done(&p).status, 204);
}

/// A socket of scripted reads; writes are kept.
struct Fake {
    connected: io::Result<bool>,
    reads: VecDeque<Option<Vec<u8>>>,
    written: Vec<u8>,
    write_room: usize,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            connected: Ok(true),
            reads: VecDeque::new(),
            written: Vec::new(),
            write_room: usize::MAX,
        }
    }
}

impl Read for Fake {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.reads.pop_front() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(None) => Ok(0),
            Some(Some(b)) => {
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                Ok(n)
            }
        }
    }
}

impl Write for Fake {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.write_room);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.write_room -= n;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire for Fake {
    fn connected(&mut self) -> io::Result<bool> {
        match &self.connected {
            Ok(b) => Ok(*b),
            Err(e) => Err(io::Error::new(e.kind(), "fake")),
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

#[test]
fn a_link_waits_for_connect_writes_in_parts_and_is_reused() {
    let mut scratch = [0u8; 64];
    let mut l = Link::new(Fake::new());
    l.sock.connected = Ok(false);
    l.send(b"GET / HTTP/1.1\r\n\r\n".to_vec());
    assert_eq!(l.drive(&mut scratch), Progress::Pending, "no readiness yet");
    l.writable = true;
    assert_eq!(l.drive(&mut scratch), Progress::Pending, "still connecting");
    l.sock.connected = Ok(true);
    l.sock.write_room = 5;
    assert_eq!(l.drive(&mut scratch), Progress::Pending);
    assert_eq!(l.sock.written, b"GET /");
    l.sock.write_room = usize::MAX;
    l.writable = true;
    l.sock.reads.push_back(Some(OK[..10].to_vec()));
    l.sock.reads.push_back(Some(OK[10..].to_vec()));
    l.readable = true;
    assert!(matches!(l.drive(&mut scratch), Progress::Answer(r) if r.status == 200));
    assert_eq!(l.sock.written, b"GET / HTTP/1.1\r\n\r\n");
    assert!(!l.is_busy());
    // The same connection carries the next request.
    l.send(b"GET /2 HTTP/1.1\r\n\r\n".to_vec());
    l.sock.reads.push_back(Some(OK.to_vec()));
    l.readable = true;
    assert!(matches!(l.drive(&mut scratch), Progress::Answer(_)));
    assert_eq!(l.served, 2);
}

#[test]
fn a_reused_link_closed_by_the_peer_may_be_retried_a_fresh_one_not() {
    let mut scratch = [0u8; 64];
    let mut l = Link::new(Fake::new());
    l.writable = true;
    l.readable = true;
    l.send(b"GET / HTTP/1.1\r\n\r\n".to_vec());
    l.sock.reads.push_back(None);
    assert_eq!(
        l.drive(&mut scratch),
        Progress::Failed {
            why: "connection closed before the response ended",
            fresh: false
        }
    );
    let mut l = Link::new(Fake::new());
    l.writable = true;
    l.readable = true;
    l.send(b"x".to_vec());
    l.sock.reads.push_back(Some(OK.to_vec()));
    assert!(matches!(l.drive(&mut scratch), Progress::Answer(_)));
    l.send(b"y".to_vec());
    l.sock.reads.push_back(None);
    l.readable = true;
    assert!(matches!(
        l.drive(&mut scratch),
        Progress::Failed { fresh: true, .. }
    ));
    // Half an answer, then the close: not retried.
    let mut l = Link::new(Fake::new());
    l.writable = true;
    l.readable = true;
    l.send(b"x".to_vec());
    l.sock.reads.push_back(Some(OK.to_vec()));
    let _ = l.drive(&mut scratch);
    l.send(b"y".to_vec());
    l.sock.reads.push_back(Some(b"HTTP/1.1 20".to_vec()));
    l.sock.reads.push_back(None);
    l.readable = true;
    assert!(matches!(
        l.drive(&mut scratch),
        Progress::Failed { fresh: false, .. }
    ));
}

#[test]
fn connect_errors_and_idle_surprises_fail_the_link() {
    let mut scratch = [0u8; 64];
    let mut l = Link::new(Fake::new());
    l.sock.connected = Err(io::ErrorKind::ConnectionRefused.into());
    l.writable = true;
    l.send(b"x".to_vec());
    assert!(matches!(l.drive(&mut scratch), Progress::Failed { .. }));
    let mut l = Link::new(Fake::new());
    l.readable = true;
    l.writable = true;
    l.sock.reads.push_back(Some(b"junk".to_vec()));
    assert!(
        matches!(l.drive(&mut scratch), Progress::Failed { .. }),
        "bytes nobody asked for"
    );
    let mut l = Link::new(Fake::new());
    l.readable = true;
    l.writable = true;
    l.sock.reads.push_back(None);
    assert!(
        matches!(l.drive(&mut scratch), Progress::Failed { .. }),
        "idle close"
    );
}
