//! Shared helpers for the end-to-end tests: a server started in-process (library
//! API) or as the real binary, a small blocking HTTP/1.1 client over plain
//! `std::net::TcpStream`, and an SSE parser that follows the WHATWG rules.
//!
//! Every socket gets generous read/write timeouts so that a failing test
//! reports instead of hanging.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Read timeout for every socket: long enough for a loaded CI box, short
/// enough that a broken server fails the test rather than hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// In-process server (library API)
// ---------------------------------------------------------------------------

pub struct TestServer {
    pub addr: SocketAddr,
    handle: Option<ssecast::ShutdownHandle>,
    join: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 with `--shutdown-grace 2` plus `args`.
    pub fn start(args: &[&str]) -> TestServer {
        let mut all: Vec<&str> = vec!["--bind", "127.0.0.1:0"];
        if !args.contains(&"--shutdown-grace") {
            all.extend(["--shutdown-grace", "2"]);
        }
        all.extend_from_slice(args);
        let cfg = match ssecast::Config::from_args(&all) {
            Ok(c) => c,
            Err(e) => panic!("config {all:?} refused: {e}"),
        };
        let server = ssecast::Server::new(cfg).expect("Server::new");
        let addr = server.local_addr();
        let handle = server.shutdown_handle();
        let join = thread::spawn(move || server.run());
        TestServer {
            addr,
            handle: Some(handle),
            join: Some(join),
        }
    }

    /// Graceful shutdown; asserts that `run` returns `Ok` within `limit`.
    pub fn stop_within(mut self, limit: Duration) {
        self.handle.take().unwrap().shutdown();
        let join = self.join.take().unwrap();
        let deadline = Instant::now() + limit;
        while !join.is_finished() {
            assert!(
                Instant::now() < deadline,
                "server did not stop within {limit:?} after shutdown()"
            );
            thread::sleep(Duration::from_millis(10));
        }
        match join.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("Server::run returned an error: {e}"),
            Err(_) => panic!("server thread panicked"),
        }
    }

    pub fn stop(self) {
        self.stop_within(Duration::from_secs(5));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        if let Some(j) = self.join.take() {
            // Do not hang a failing test on a server that does not stop.
            let deadline = Instant::now() + Duration::from_secs(3);
            while !j.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if j.is_finished() {
                let _ = j.join();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------

pub fn bin_path() -> &'static str {
    env!("CARGO_BIN_EXE_ssecast")
}

/// A `Command` for the binary with every inherited `SSE_*` variable removed.
pub fn bin_command() -> Command {
    let mut cmd = Command::new(bin_path());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SSE_") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

pub struct BinServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr_lines: Arc<Mutex<Vec<String>>>,
}

/// Parses the address after "listening on " in a log line.
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    let at = line.find("listening on ")?;
    let rest = &line[at + "listening on ".len()..];
    let rest = rest.trim_start_matches("http://");
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    token.trim_end_matches(['.', ':']).parse().ok()
}

impl BinServer {
    /// Spawns the binary and waits for its "listening on ADDR" log line.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> BinServer {
        let mut cmd = bin_command();
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ssecast binary");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let lines2 = lines.clone();
        thread::spawn(move || {
            let r = BufReader::new(stderr);
            for line in r.lines() {
                let Ok(line) = line else { break };
                lines2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = parse_listening_line(&line) {
                        return BinServer {
                            child,
                            addr,
                            stderr_lines: lines,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "binary {args:?} {envs:?} never logged 'listening on'; stderr: {:?}",
                        lines.lock().unwrap()
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `--admin-bind` address, from the "admin address ADDR:" line
    /// logged before "listening on".
    pub fn admin_addr(&self) -> SocketAddr {
        let lines = self.stderr_lines.lock().unwrap();
        lines
            .iter()
            .find_map(|l| {
                let rest = &l[l.find("admin address ")? + "admin address ".len()..];
                let token = rest.split_whitespace().next()?;
                token.trim_end_matches(':').parse().ok()
            })
            .unwrap_or_else(|| panic!("no 'admin address' line in {lines:?}"))
    }

    /// Sends a signal with the `kill` command (no libc in the tests).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct BinOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary to completion (at most 10 s) and collects its output.
pub fn run_bin(args: &[&str], envs: &[(&str, &str)]) -> BinOutput {
    let mut cmd = bin_command();
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ssecast binary");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("binary {args:?} {envs:?} did not exit within {IO_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    BinOutput {
        status,
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts the body is JSON `{"error": "<non-empty string>"}` (other
    /// fields allowed) and returns the message.
    pub fn assert_json_error(&self) -> String {
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "error {} without a JSON content type: {:?} body {:?}",
            self.status,
            ct,
            self.text()
        );
        let v = self.json();
        let msg = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("error body without an `error` string: {v}"));
        assert!(!msg.is_empty(), "empty error message: {v}");
        msg.to_string()
    }

    pub fn is_event_stream(&self) -> bool {
        self.header("content-type")
            .map(|v| v.to_ascii_lowercase().starts_with("text/event-stream"))
            .unwrap_or(false)
    }
}

/// One client connection with its own receive buffer (so pipelined
/// responses and the start of an event stream are never lost).
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

pub fn connect(addr: SocketAddr) -> Conn {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = stream.set_nodelay(true);
    Conn {
        stream,
        buf: Vec::new(),
    }
}

/// Builds a request; adds `Host` and, for a body or a POST, `Content-Length`.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        out.extend_from_slice(b"Host: 127.0.0.1\r\n");
    }
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    let has_len = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    if !has_len && (!body.is_empty() || method == "POST") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    pub fn send_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let req = request_bytes(method, path, headers, body);
        self.send(&req);
    }

    /// Reads more bytes into the buffer; Ok(0) is EOF. A reset after some
    /// data was received is reported as EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16384];
        loop {
            return match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    Ok(n)
                }
                // A signal in this process (EINTR) is no answer from the hub.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
                Err(e) => Err(e),
            };
        }
    }

    /// Reads a status line and headers (no body).
    pub fn try_read_head(&mut self) -> io::Result<Option<Response>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or("");
                let mut parts = status_line.splitn(3, ' ');
                let version = parts.next().unwrap_or("");
                assert!(
                    version.starts_with("HTTP/1."),
                    "bad status line {status_line:?}"
                );
                let status: u16 = parts
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
                let reason = parts.next().unwrap_or("").to_string();
                let mut headers = Vec::new();
                for l in lines {
                    let (k, v) = l
                        .split_once(':')
                        .unwrap_or_else(|| panic!("bad header line {l:?}"));
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
                return Ok(Some(Response {
                    status,
                    reason,
                    headers,
                    body: Vec::new(),
                }));
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "EOF inside response head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    pub fn read_head(&mut self) -> Response {
        match self.try_read_head() {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed before a response"),
            Err(e) => panic!("reading response head: {e}"),
        }
    }

    fn read_exact_buf(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside response body",
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_line_buf(&mut self) -> io::Result<String> {
        loop {
            if let Some(p) = find(&self.buf, b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                self.buf.drain(..p + 2);
                return Ok(l);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside chunked body",
                ));
            }
        }
    }

    /// Reads the body of a non-stream response.
    pub fn read_body(&mut self, resp: &mut Response, method: &str) -> io::Result<()> {
        if method == "HEAD" || resp.status / 100 == 1 || resp.status == 204 || resp.status == 304 {
            return Ok(());
        }
        let chunked = resp
            .header("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false);
        if chunked {
            let mut body = Vec::new();
            loop {
                let line = self.read_line_buf()?;
                let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                if size == 0 {
                    // trailers
                    while !self.read_line_buf()?.is_empty() {}
                    break;
                }
                body.extend(self.read_exact_buf(size)?);
                self.read_exact_buf(2)?;
            }
            resp.body = body;
        } else if let Some(len) = resp.header("content-length") {
            let n: usize = len.parse().expect("bad Content-Length");
            resp.body = self.read_exact_buf(n)?;
        } else {
            while self.fill()? != 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(())
    }

    /// Reads one complete non-stream response.
    pub fn read_response_for(&mut self, method: &str) -> Response {
        let mut r = self.read_head();
        assert!(
            !r.is_event_stream(),
            "unexpected event stream where a plain response was expected"
        );
        if let Err(e) = self.read_body(&mut r, method) {
            panic!("reading body of {} response: {e}", r.status);
        }
        r
    }

    pub fn read_response(&mut self) -> Response {
        self.read_response_for("GET")
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.send_request(method, path, headers, body);
        self.read_response_for(method)
    }

    /// Waits for the peer to close: Ok(bytes received before EOF). Err on
    /// timeout.
    pub fn read_until_eof(&mut self, limit: Duration) -> io::Result<Vec<u8>> {
        self.stream.set_read_timeout(Some(limit))?;
        let r = loop {
            match self.fill() {
                Ok(0) => break Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        r
    }

    /// Turns this connection, whose stream response head was just read, into
    /// an SSE reader (bytes already buffered are kept).
    pub fn into_sse(self, head: Response) -> SseStream {
        let mut parser = SseParser::new();
        let mut raw = 0;
        if !self.buf.is_empty() {
            raw += self.buf.len();
            parser.feed(&self.buf);
        }
        SseStream {
            stream: self.stream,
            head,
            parser,
            eof: false,
            raw_bytes: raw,
        }
    }
}

/// One request on a fresh connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut c = connect(addr);
    c.request(method, path, headers, body)
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    http(addr, "GET", path, &[], b"")
}

pub fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "GET {path}: {:?}", r.text());
    r.json()
}

pub fn status(addr: SocketAddr) -> Value {
    get_json(addr, "/events/status")
}

/// Polls `/events/status` until `cond` holds (5 s deadline); returns it.
pub fn wait_status(addr: SocketAddr, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = status(addr);
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "status never satisfied {what}: {s}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `/health` until `sse_connections == n`.
pub fn wait_sse_connections(addr: SocketAddr, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let h = get_json(addr, "/health");
        if h["sse_connections"].as_u64() == Some(n) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "/health never showed sse_connections == {n}: {h}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn json_u64(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no unsigned integer {key:?} in {v}"))
}

// ---------------------------------------------------------------------------
// Publishing
// ---------------------------------------------------------------------------

/// A keep-alive connection used to publish.
pub struct Publisher {
    pub conn: Conn,
    pub headers: Vec<(String, String)>,
}

impl Publisher {
    pub fn new(addr: SocketAddr) -> Publisher {
        Publisher {
            conn: connect(addr),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Publisher {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn post(&mut self, content_type: Option<&str>, path: &str, body: &[u8]) -> Response {
        let mut hs: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(ct) = content_type {
            hs.push(("Content-Type", ct));
        }
        self.conn.request("POST", path, &hs, body)
    }

    pub fn try_json(&mut self, v: &Value) -> Response {
        self.post(
            Some("application/json"),
            "/events/broadcast",
            v.to_string().as_bytes(),
        )
    }

    /// Publishes a JSON body, asserts 200, returns the answer.
    pub fn json(&mut self, v: &Value) -> Value {
        let r = self.try_json(v);
        assert_eq!(r.status, 200, "publish {v} -> {} {:?}", r.status, r.text());
        r.json()
    }

    /// Publishes one event; returns its id.
    pub fn event(&mut self, channel: &str, event: Option<&str>, data: &str) -> u64 {
        let mut v = serde_json::json!({"channel": channel, "data": data});
        if let Some(e) = event {
            v["event"] = Value::from(e);
        }
        let a = self.json(&v);
        assert_eq!(a["channel"], channel, "answer {a}");
        json_u64(&a, "id")
    }
}

pub fn publish(addr: SocketAddr, channel: &str, data: &str) -> u64 {
    Publisher::new(addr).event(channel, None, data)
}

// ---------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The parser's last event id when the event was dispatched.
    pub id: String,
    /// The event type ("message" when no `event:` field was given).
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn id_u64(&self) -> u64 {
        self.id
            .parse()
            .unwrap_or_else(|_| panic!("event id {:?} is not an integer", self.id))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    /// A comment line (text after the colon).
    Comment(String),
    /// A valid `retry:` field.
    Retry(u64),
}

/// An SSE stream parser following the WHATWG "event stream interpretation"
/// rules: lines end with CRLF, LF or CR; a leading BOM is skipped; `data`
/// lines are joined with LF and the final LF removed; one space after the
/// colon is stripped; comment lines start with `:`; an event with an empty
/// data buffer is not dispatched; `id` containing NUL is ignored; `retry`
/// takes ASCII digits only.
pub struct SseParser {
    buf: Vec<u8>,
    pos: usize,
    skip_lf: bool,
    bom_checked: bool,
    data: String,
    event: String,
    last_id: String,
    pub items: VecDeque<SseItem>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser {
            buf: Vec::new(),
            pos: 0,
            skip_lf: false,
            bom_checked: false,
            data: String::new(),
            event: String::new(),
            last_id: String::new(),
            items: VecDeque::new(),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if !self.bom_checked {
            if self.buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf) {
                return;
            }
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.pos = 3;
            }
            self.bom_checked = true;
        }
        loop {
            if self.skip_lf {
                if self.pos >= self.buf.len() {
                    break;
                }
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
                self.skip_lf = false;
            }
            let rest = &self.buf[self.pos..];
            let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                break;
            };
            let line = String::from_utf8_lossy(&rest[..i]).into_owned();
            if rest[i] == b'\r' {
                if i + 1 < rest.len() {
                    self.pos += i + if rest[i + 1] == b'\n' { 2 } else { 1 };
                } else {
                    self.pos += i + 1;
                    self.skip_lf = true;
                }
            } else {
                self.pos += i + 1;
            }
            self.line(&line);
        }
        if self.pos > 65536 || self.pos == self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if let Some(c) = line.strip_prefix(':') {
            self.items.push_back(SseItem::Comment(c.to_string()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    self.items.push_back(SseItem::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        if self.data.is_empty() {
            self.event.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event = if self.event.is_empty() {
            "message".to_string()
        } else {
            std::mem::take(&mut self.event)
        };
        self.event.clear();
        self.items.push_back(SseItem::Event(SseEvent {
            id: self.last_id.clone(),
            event,
            data,
        }));
    }
}

pub struct SseStream {
    pub stream: TcpStream,
    pub head: Response,
    pub parser: SseParser,
    pub eof: bool,
    /// Body bytes received so far.
    pub raw_bytes: usize,
}

impl SseStream {
    /// Next item within `limit`: Ok(Some) item, Ok(None) clean EOF, Err on
    /// timeout or socket error.
    pub fn next_item_within(&mut self, limit: Duration) -> io::Result<Option<SseItem>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(it) = self.parser.items.pop_front() {
                return Ok(Some(it));
            }
            if self.eof {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no SSE item in time",
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.raw_bytes += n;
                    self.parser.feed(&tmp[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no SSE item in time",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn next_item(&mut self) -> SseItem {
        match self.next_item_within(IO_TIMEOUT) {
            Ok(Some(it)) => it,
            Ok(None) => panic!("stream ended while an item was expected"),
            Err(e) => panic!("no SSE item: {e}"),
        }
    }

    /// Next event, skipping comments and `retry:`.
    pub fn next_event(&mut self) -> SseEvent {
        loop {
            if let SseItem::Event(e) = self.next_item() {
                return e;
            }
        }
    }

    /// Next event, asserting that nothing but events arrives (no comments,
    /// no retry).
    pub fn next_event_strict(&mut self) -> SseEvent {
        match self.next_item() {
            SseItem::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Asserts that the stream ends (clean EOF) within `limit`, skipping
    /// whatever arrives before.
    pub fn expect_eof_within(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item_within(left) {
                Ok(None) => return,
                Ok(Some(_)) => {}
                Err(e) => panic!("stream did not end cleanly within {limit:?}: {e}"),
            }
        }
    }

    /// Asserts nothing at all arrives for `d` (time is what is tested).
    pub fn expect_silence(&mut self, d: Duration) {
        match self.next_item_within(d) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Ok(Some(it)) => panic!("expected silence, got {it:?}"),
            Ok(None) => panic!("expected silence, stream ended"),
            Err(e) => panic!("expected silence, got error {e}"),
        }
    }

    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Opens a GET on `path` with `headers` and reads the response head. Returns
/// `Ok(stream)` for a 200 event stream, `Err(response)` (with body) otherwise.
pub fn try_subscribe(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<SseStream, Response> {
    let mut c = connect(addr);
    c.send_request("GET", path, headers, b"");
    let mut head = c.read_head();
    if head.status == 200 && head.is_event_stream() {
        Ok(c.into_sse(head))
    } else {
        let _ = c.read_body(&mut head, "GET");
        Err(head)
    }
}

pub fn subscribe_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseStream {
    match try_subscribe(addr, path, headers) {
        Ok(s) => s,
        Err(r) => panic!(
            "GET {path} {headers:?}: expected a 200 event stream, got {} {:?} {:?}",
            r.status,
            r.headers,
            r.text()
        ),
    }
}

pub fn subscribe(addr: SocketAddr, path: &str) -> SseStream {
    subscribe_with(addr, path, &[])
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parses an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) to
/// Unix seconds. None when it does not follow the grammar.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac = 0.0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        frac = format!("0.{}", &s[start..i]).parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86400 + h * 3600 + mi * 60 + se - offset;
    Some(secs as f64 + frac)
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What a WHATWG client gets back for `data` sent through SSE: every line
/// end (CRLF, CR, LF) becomes LF.
pub fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}
