//! Operating the binary: `--version`, `--check-config`, and the access log
//! (`--access-log true|false`), against the real `ssecast` executable.
//!
//! Self-contained (std only). Every wait is bounded: stderr is read by a
//! thread into a channel and every read of it has a deadline; sockets have
//! read/write timeouts; a server still running when a test ends is killed by
//! its own handle. No sleeps are used as synchronisation: the tests wait for
//! the lines they expect (or for the end of stderr after SIGTERM).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for any single wait in these tests.
const LIMIT: Duration = Duration::from_secs(10);

/// The binary with every `SSE_*` variable removed, so only the flags count.
fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssecast"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SSE_") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary to completion (at most `LIMIT`) and collects its output.
fn run(args: &[&str]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssecast");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_exit(&mut child, LIMIT)
        .unwrap_or_else(|| panic!("ssecast {args:?} did not exit within {LIMIT:?}"));
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Waits for the child to exit, at most `limit`; kills it (by its handle) after that.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        // Polling interval for the exit status, not a synchronisation sleep.
        thread::sleep(Duration::from_millis(5));
    }
}

/// A running server: its stderr arrives line by line on `lines`.
struct Server {
    child: Child,
    addr: SocketAddr,
    lines: Receiver<String>,
    /// Every stderr line seen so far (for failure messages).
    seen: Vec<String>,
}

impl Server {
    /// Starts `ssecast --bind 127.0.0.1:0 <args>`; ready once stderr has a `listening on` line.
    fn start(args: &[&str]) -> Server {
        let mut child = bin()
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ssecast");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Server {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            lines: rx,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + LIMIT;
        loop {
            let line = s
                .next_line(deadline)
                .unwrap_or_else(|| panic!("no 'listening on' line; stderr: {:#?}", s.seen));
            if let Some(addr) = listening_addr(&line) {
                s.addr = addr;
                return s;
            }
        }
    }

    /// The next stderr line, or None at EOF or when `deadline` passes.
    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next stderr line; fails the test if none comes within `LIMIT`.
    fn expect_line(&mut self, what: &str) -> String {
        self.next_line(Instant::now() + LIMIT).unwrap_or_else(|| {
            panic!(
                "no stderr line ({what}) within {LIMIT:?}; stderr so far: {:#?}",
                self.seen
            )
        })
    }

    /// SIGTERM by PID, then every remaining stderr line up to EOF, and the exit status.
    fn terminate(mut self) -> (Vec<String>, ExitStatus) {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM {} failed", self.child.id());
        let deadline = Instant::now() + LIMIT;
        let mut rest = Vec::new();
        while let Some(l) = self.next_line(deadline) {
            rest.push(l);
        }
        let status = wait_exit(&mut self.child, LIMIT)
            .unwrap_or_else(|| panic!("still running {LIMIT:?} after SIGTERM"));
        (rest, status)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split(|c: char| c.is_whitespace() || c == ',' || c == '(')
        .next()?
        .parse()
        .ok()
}

/// One request on a fresh connection (`Connection: close`); returns (status, whole response).
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response to EOF");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// The body length the server declared.
fn content_length(response: &str) -> usize {
    response
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length in {response:?}"))
}

/// An access-log line, taken apart.
#[derive(Debug, PartialEq)]
struct Access {
    level: String,
    client: String,
    method: String,
    target: String,
    status: u16,
    bytes: usize,
    micros: u64,
}

/// Parses `<time> [INFO] 127.0.0.1 "GET /health" 200 <bytes> <n>us`; None if it is not one.
fn parse_access(line: &str) -> Option<Access> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let level = line[open + 1..close].trim().to_string();
    let rest = line[close + 1..].trim_start();
    let (client, rest) = rest.split_once(" \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let (method, target) = request.split_once(' ')?;
    let mut f = rest.split(' ');
    let status = f.next()?.parse().ok()?;
    let bytes = f.next()?.parse().ok()?;
    let micros = f.next()?.strip_suffix("us")?.parse().ok()?;
    if f.next().is_some() {
        return None;
    }
    Some(Access {
        level,
        client: client.to_string(),
        method: method.to_string(),
        target: target.to_string(),
        status,
        bytes,
        micros,
    })
}

#[test]
fn version_prints_name_and_version() {
    let out = run(&["--version"]);
    assert!(
        out.status.success(),
        "--version: {:?} {}",
        out.status,
        out.stderr
    );
    assert_eq!(
        out.stdout.trim_end(),
        format!("ssecast {}", env!("CARGO_PKG_VERSION")),
        "--version output"
    );
}

#[test]
fn check_config_prints_the_effective_settings_and_exits_0() {
    let out = run(&["--check-config", "--heartbeat-interval", "5"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("heartbeat=5s"),
        "effective settings without heartbeat=5s: {:?}",
        out.stdout
    );
    // The rest of the effective settings are there too (defaults included).
    for part in ["bind=127.0.0.1:5001", "access_log=true", "ui=true"] {
        assert!(out.stdout.contains(part), "no {part} in {:?}", out.stdout);
    }
    let out = run(&[
        "--check-config",
        "--bind",
        "127.0.0.1:0",
        "--access-log",
        "off",
        "--ui",
        "no",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("access_log=false") && out.stdout.contains("ui=false"),
        "{:?}",
        out.stdout
    );
}

#[test]
fn check_config_with_a_bad_value_exits_2_with_one_line() {
    let out = run(&["--check-config", "--heartbeat-interval", "x"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "stderr: {:?}", out.stderr);
    assert!(
        out.stderr.contains("heartbeat-interval"),
        "the message names the flag: {:?}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("configuration ok"),
        "stdout: {:?}",
        out.stdout
    );
}

#[test]
fn access_log_has_one_info_line_per_request() {
    let mut srv = Server::start(&["--log-level", "info"]);
    let cases = [
        ("GET", "/health", 200u16),
        ("GET", "/no/such/path?x=1", 404),
    ];
    for (method, path, want) in cases {
        let (status, response) = request(srv.addr, method, path);
        assert_eq!(status, want, "{method} {path}: {response}");
        // The server logs while handling the request, in its one thread: the
        // next stderr line is this request's access line.
        let line = srv.expect_line("access line");
        let a = parse_access(&line)
            .unwrap_or_else(|| panic!("not an access-log line after {method} {path}: {line:?}"));
        assert_eq!(a.level, "INFO", "{line}");
        assert_eq!(a.client, "127.0.0.1", "{line}");
        assert_eq!(a.method, method, "{line}");
        assert_eq!(a.target, path, "{line}");
        assert_eq!(a.status, want, "{line}");
        assert_eq!(a.bytes, content_length(&response), "{line}");
        assert!(
            a.micros < 10_000_000,
            "duration {}us is implausible: {line}",
            a.micros
        );
    }
    // Exactly one line per request: SIGTERM, then the rest of stderr holds no access line.
    let (rest, status) = srv.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM; stderr {rest:#?}"
    );
    assert!(
        rest.iter().all(|l| parse_access(l).is_none()),
        "extra access lines: {rest:#?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("signal")),
        "no shutdown line after SIGTERM: {rest:#?}"
    );
}

#[test]
fn access_log_false_logs_no_request() {
    let srv = Server::start(&["--log-level", "info", "--access-log", "false"]);
    let (status, _) = request(srv.addr, "GET", "/health");
    assert_eq!(status, 200);
    let (status, _) = request(srv.addr, "GET", "/nope");
    assert_eq!(status, 404);
    // The requests were answered (so handled) before SIGTERM is sent; the
    // single-threaded server would have logged them before it sees the signal.
    // Everything it writes from here to EOF must be shutdown lines only.
    let (rest, status) = srv.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM; stderr {rest:#?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("signal")),
        "no shutdown line after SIGTERM (so stderr was not read to the end?): {rest:#?}"
    );
    let access: Vec<&String> = rest
        .iter()
        .filter(|l| parse_access(l).is_some() || l.contains("\"GET "))
        .collect();
    assert!(
        access.is_empty(),
        "access lines with --access-log false: {access:#?}"
    );
}

#[test]
fn the_access_line_parser_matches_the_documented_format() {
    let a =
        parse_access(r#"2026-01-01T00:00:00Z [INFO] 127.0.0.1 "GET /health" 200 75 31us"#).unwrap();
    assert_eq!(
        a,
        Access {
            level: "INFO".into(),
            client: "127.0.0.1".into(),
            method: "GET".into(),
            target: "/health".into(),
            status: 200,
            bytes: 75,
            micros: 31,
        }
    );
    assert!(parse_access("2026-01-01T00:00:00Z [INFO] shutdown complete").is_none());
}
