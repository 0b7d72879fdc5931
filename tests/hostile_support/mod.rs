//! Helpers for `tests/hostile.rs`: an in-process hub (embedded, or in Redis
//! mode on a private `redis-server` it starts and kills), a raw HTTP/1.1
//! connection that keeps unread bytes (pipelined responses, stream bodies),
//! a subscriber that parses SSE with `ssecast::sse::Parser`, and publishing.
//!
//! Every socket has 5 s read and write timeouts, so a server that stops
//! answering fails a test instead of hanging it. Nothing here sleeps to
//! synchronise: ordering comes from reading responses.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use ssecast::sse::{Event, Item, Parser};

pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[path = "../common/redis.rs"]
pub mod redis;

use redis::RedisServer;

/// Where the hub keeps its channels: embedded (no Redis anywhere) or in a
/// Redis of its own (`--redis-url`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Local,
    Redis,
}

// ---------------------------------------------------------------------------
// The hub under test
// ---------------------------------------------------------------------------

pub struct Hub {
    pub addr: SocketAddr,
    pub mode: Mode,
    handle: ssecast::ShutdownHandle,
    join: Option<JoinHandle<io::Result<()>>>,
    /// Declared last: dropped after `Drop for Hub` has stopped the server.
    redis: Option<RedisServer>,
}

/// What `Hub::warm_up` published to make a subscriber follow: the ids of
/// its first and last (the sync marker) events.
#[derive(Clone, Copy, Debug)]
pub struct WarmUp {
    pub first_id: u64,
    pub last_id: u64,
}

impl Hub {
    /// An embedded hub on 127.0.0.1:0 with a short shutdown grace, plus `flags`.
    pub fn start(flags: &[&str]) -> Hub {
        Hub::start_in(Mode::Local, flags)
    }

    /// The same in `mode`; in Redis mode with a private redis-server, and
    /// returned once `/health` says `"redis": "up"`.
    pub fn start_in(mode: Mode, flags: &[&str]) -> Hub {
        let redis = (mode == Mode::Redis).then(|| RedisServer::start(&[]));
        let url = redis.as_ref().map(RedisServer::url);
        let mut args: Vec<&str> = vec![
            "--bind",
            "127.0.0.1:0",
            "--shutdown-grace",
            "1",
            "--access-log",
            "false",
        ];
        if let Some(u) = &url {
            args.extend(["--redis-url", u.as_str()]);
        }
        args.extend_from_slice(flags);
        let cfg = ssecast::Config::from_args(&args)
            .unwrap_or_else(|e| panic!("config {args:?} refused: {e}"));
        let server = ssecast::Server::new(cfg).expect("Server::new");
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let join = thread::spawn(move || server.run());
        let hub = Hub {
            addr,
            mode,
            handle,
            join: Some(join),
            redis,
        };
        if mode == Mode::Redis {
            hub.wait_redis_up();
        }
        hub
    }

    /// Polls `/health` until it says `"redis": "up"` (the link is the
    /// hub's own business; its answer is the signal).
    fn wait_redis_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            self.assert_alive();
            let mut c = self.connect();
            c.send(&get("/health"));
            if let Ok(r) = c.read_response() {
                if let Ok(v) = r.json() {
                    if v["redis"] == "up" {
                        return;
                    }
                    last = v.to_string();
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("the hub's /health did not say \"redis\": \"up\" within 10 s: {last}");
    }

    /// Makes `sub` (on channel `default`) really follow: publishes warm-up
    /// events until one arrives, then a sync marker, and reads up to it.
    /// In Redis mode a subscriber may start following a moment after its
    /// 200; the hub's delivery, not a sleep, says when it does.
    pub fn warm_up(&self, sub: &mut Subscriber) -> WarmUp {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut first_id = None;
        sub.conn
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        for i in 0.. {
            assert!(
                Instant::now() < deadline,
                "warm-up: no event reached the subscriber within 10 s"
            );
            let r = self.publish(serde_json::json!({ "data": format!("warm-up-{i}") }));
            if r.status != 200 {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            let id = r.json().unwrap()["id"].as_u64().expect("warm-up id");
            first_id.get_or_insert(id);
            if sub.next_event().is_ok() {
                break;
            }
        }
        sub.conn.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let r = self.publish(serde_json::json!({ "data": "warm-up-done" }));
        assert_eq!(r.status, 200, "warm-up marker: {r:?}");
        let last_id = r.json().unwrap()["id"].as_u64().expect("warm-up marker id");
        let got = sub
            .events_until("warm-up-done")
            .unwrap_or_else(|m| panic!("warm-up: {m}"));
        assert!(
            got[..got.len() - 1]
                .iter()
                .all(|e| e.data.starts_with("warm-up-")),
            "warm-up: other events before the marker: {got:?}"
        );
        WarmUp {
            first_id: first_id.unwrap(),
            last_id,
        }
    }

    /// The event loop is still running (it did not panic or return).
    pub fn assert_alive(&self) {
        let j = self.join.as_ref().expect("server thread");
        assert!(
            !j.is_finished(),
            "the server thread has stopped (panic or error in Server::run)"
        );
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// Two request/response round trips on a fresh connection. Bytes written
    /// on another connection before the call have been read by the event loop
    /// by the time it returns (the loop is single-threaded and the second
    /// request arrives in a later poll turn than the first answer).
    pub fn barrier(&self) {
        let mut c = self.connect();
        for _ in 0..2 {
            c.send(&get("/health"));
            let r = c.read_response().expect("barrier: /health answer");
            assert_eq!(r.status, 200, "barrier: /health answered {r:?}");
        }
    }

    /// Publishes `{"data": data}` (plus `extra` fields) as JSON; returns the
    /// answer.
    pub fn publish(&self, fields: Value) -> Response {
        let body = fields.to_string();
        let mut c = self.connect();
        c.send(&post(
            "/events/broadcast",
            Some("application/json"),
            body.as_bytes(),
        ));
        c.read_response().expect("publish answer")
    }

    pub fn subscribe(&self, target: &str, extra_headers: &str) -> Subscriber {
        let mut conn = self.connect();
        conn.send(
            format!("GET {target} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{extra_headers}\r\n")
                .as_bytes(),
        );
        let head = conn.read_head().expect("subscribe: response head");
        assert_eq!(head.status, 200, "subscribe {target}: {head:?}");
        assert_eq!(
            head.header("content-type"),
            Some("text/event-stream"),
            "subscribe {target}: {head:?}"
        );
        Subscriber::new(conn, &head)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(j) = self.join.take() {
            // Bounded: the server leaves by itself after the grace period.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !j.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if j.is_finished() && !thread::panicking() {
                match j.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => panic!("Server::run returned an error: {e}"),
                    Err(_) => panic!("the server thread panicked"),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

pub fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

pub fn post(target: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut r = format!("POST {target} HTTP/1.1\r\nHost: t\r\n");
    if let Some(ct) = content_type {
        r.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn post_json(body: &[u8]) -> Vec<u8> {
    post("/events/broadcast", Some("application/json"), body)
}

/// `bytes` shown with escapes, for messages.
pub fn show(bytes: &[u8]) -> String {
    let s: String = bytes.escape_ascii().to_string();
    if s.len() > 300 {
        format!("{}...({} bytes)", &s[..300], bytes.len())
    } else {
        s
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {:?} {}",
            self.status,
            self.reason,
            self.headers,
            show(&self.body)
        )
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` string of a JSON error body.
    pub fn error_message(&self) -> Result<String, String> {
        let v = self.json()?;
        match v.get("error") {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!("no non-empty \"error\" string in {v}")),
        }
    }

    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// How a read ended when a response was expected.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed cleanly; `partial` holds what arrived.
    Eof {
        partial: Vec<u8>,
    },
    Io(io::Error, Vec<u8>),
    Malformed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Eof { partial } if partial.is_empty() => {
                write!(f, "connection closed with no (further) response")
            }
            ReadError::Eof { partial } => {
                write!(
                    f,
                    "connection closed in the middle of a response: {}",
                    show(partial)
                )
            }
            ReadError::Io(e, partial) => write!(f, "read failed: {e} (after {})", show(partial)),
            ReadError::Malformed(m) => write!(f, "malformed response: {m}"),
        }
    }
}

// ---------------------------------------------------------------------------
// A raw connection
// ---------------------------------------------------------------------------

pub struct Conn {
    pub stream: TcpStream,
    /// Received and not yet consumed.
    pub buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("write {}: {e}", show(bytes)));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// One `write` per byte (with TCP_NODELAY each is its own segment).
    pub fn send_bytewise(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.send(std::slice::from_ref(b));
        }
    }

    pub fn half_close(&mut self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown(Write)");
    }

    /// Reads more bytes into `buf`; `Ok(0)` at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// A status line and headers (the body is left in `buf`).
    pub fn read_head(&mut self) -> Result<Response, ReadError> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            match self.fill() {
                Ok(0) => {
                    return Err(ReadError::Eof {
                        partial: std::mem::take(&mut self.buf),
                    })
                }
                Ok(_) => {}
                Err(e) => return Err(ReadError::Io(e, self.buf.clone())),
            }
        };
        let head: Vec<u8> = self.buf.drain(..end + 4).collect();
        let text = std::str::from_utf8(&head[..end])
            .map_err(|_| ReadError::Malformed(format!("head not UTF-8: {}", show(&head))))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let (version, code, reason) = (parts.next(), parts.next(), parts.next());
        if version != Some("HTTP/1.1") {
            return Err(ReadError::Malformed(format!("status line {status_line:?}")));
        }
        let status: u16 = code
            .and_then(|c| c.parse().ok())
            .filter(|c| (100..600).contains(c))
            .ok_or_else(|| ReadError::Malformed(format!("status line {status_line:?}")))?;
        let mut headers = Vec::new();
        for line in lines {
            let Some((n, v)) = line.split_once(':') else {
                return Err(ReadError::Malformed(format!("header line {line:?}")));
            };
            headers.push((n.to_string(), v.trim().to_string()));
        }
        Ok(Response {
            status,
            reason: reason.unwrap_or_default().to_string(),
            headers,
            body: Vec::new(),
        })
    }

    /// One complete response, body delimited by Content-Length (1xx and 204
    /// have none).
    pub fn read_response(&mut self) -> Result<Response, ReadError> {
        let mut r = self.read_head()?;
        if r.status < 200 || r.status == 204 {
            return Ok(r);
        }
        let len: usize = r
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ReadError::Malformed(format!("no Content-Length: {r:?}")))?;
        while self.buf.len() < len {
            match self.fill() {
                Ok(0) => {
                    return Err(ReadError::Eof {
                        partial: std::mem::take(&mut self.buf),
                    })
                }
                Ok(_) => {}
                Err(e) => return Err(ReadError::Io(e, self.buf.clone())),
            }
        }
        r.body = self.buf.drain(..len).collect();
        Ok(r)
    }

    /// The peer closes cleanly (FIN, not RST) with nothing more sent.
    pub fn expect_eof(&mut self) -> Result<(), String> {
        loop {
            if !self.buf.is_empty() {
                return Err(format!(
                    "expected the connection to close, got more bytes: {}",
                    show(&self.buf)
                ));
            }
            match self.fill() {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("expected a clean close (EOF), got: {e}")),
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------

/// A stream whose 200 head has been read; events are parsed from the rest,
/// de-chunked first when the head says `Transfer-Encoding: chunked`.
pub struct Subscriber {
    pub conn: Conn,
    parser: Parser,
    dechunk: Option<Dechunk>,
    items: std::collections::VecDeque<Item>,
}

impl Subscriber {
    pub fn new(conn: Conn, head: &Response) -> Subscriber {
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let mut s = Subscriber {
            conn,
            parser: Parser::new(),
            dechunk: chunked.then(Dechunk::default),
            items: Default::default(),
        };
        s.consume().unwrap_or_else(|e| panic!("{e}"));
        s
    }

    /// Moves received bytes through the de-chunker and the SSE parser.
    fn consume(&mut self) -> Result<(), String> {
        let raw = std::mem::take(&mut self.conn.buf);
        let body = match &mut self.dechunk {
            Some(d) => {
                let mut body = Vec::new();
                d.feed(&raw, &mut body)?;
                body
            }
            None => raw,
        };
        let mut out = Vec::new();
        self.parser.feed(&body, &mut out);
        self.items.extend(out);
        Ok(())
    }

    /// The next event (comments and `retry:` are skipped).
    pub fn next_event(&mut self) -> Result<Event, String> {
        loop {
            while let Some(item) = self.items.pop_front() {
                if let Item::Event(e) = item {
                    return Ok(e);
                }
            }
            match self.conn.fill() {
                Ok(0) => return Err("the stream closed".to_string()),
                Ok(_) => self.consume()?,
                Err(e) => return Err(format!("stream read failed: {e}")),
            }
        }
    }

    /// Events up to and including the one whose data is `marker`.
    pub fn events_until(&mut self, marker: &str) -> Result<Vec<Event>, String> {
        let mut seen = Vec::new();
        loop {
            let e = self
                .next_event()
                .map_err(|m| format!("{m}; events so far: {seen:?}"))?;
            let done = e.data == marker;
            seen.push(e);
            if done {
                return Ok(seen);
            }
        }
    }
}

/// A strict client-side decoder for a chunked response body: hex size,
/// optional extension, CRLF, data, CRLF; `0` CRLF CRLF ends it.
#[derive(Default)]
pub struct Dechunk {
    line: Vec<u8>,
    /// Data bytes left in the current chunk.
    left: usize,
    /// CRLF bytes expected after the data.
    crlf: u8,
    in_data: bool,
    /// The last chunk was seen; the trailer's CRLF is awaited.
    last: bool,
    pub done: bool,
}

impl Dechunk {
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while let Some((&b, rest)) = input.split_first() {
            if self.done {
                return Err(format!("bytes after the last chunk: {}", show(input)));
            }
            if self.in_data {
                let take = self.left.min(input.len());
                out.extend_from_slice(&input[..take]);
                self.left -= take;
                input = &input[take..];
                if self.left == 0 {
                    self.in_data = false;
                    self.crlf = 2;
                }
                continue;
            }
            input = rest;
            if self.crlf > 0 {
                let want = if self.crlf == 2 { b'\r' } else { b'\n' };
                if b != want {
                    return Err(format!("chunk data not followed by CRLF (got {b:#04x})"));
                }
                self.crlf -= 1;
                continue;
            }
            self.line.push(b);
            if !self.line.ends_with(b"\r\n") {
                if self.line.len() > 64 || (b == b'\n') {
                    return Err(format!("bad chunk size line {}", show(&self.line)));
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = &line[..line.len() - 2];
            if self.last {
                if !line.is_empty() {
                    continue; // a trailer field
                }
                self.done = true;
                continue;
            }
            let size = line.split(|&c| c == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|s| usize::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("bad chunk size line {}", show(line)))?;
            if size == 0 {
                self.last = true;
            } else {
                self.left = size;
                self.in_data = true;
            }
        }
        Ok(())
    }
}
