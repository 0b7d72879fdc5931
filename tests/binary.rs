//! The binary: graceful shutdown on SIGTERM/SIGINT (item 12), `--help`,
//! environment twins, bad values (item 13); and graceful shutdown through
//! the library handle.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

use common::*;

const FLAGS: [(&str, &str); 20] = [
    ("--bind", "SSE_BIND"),
    ("--max-connections", "SSE_MAX_CONNECTIONS"),
    ("--max-connections-per-ip", "SSE_MAX_CONNECTIONS_PER_IP"),
    ("--heartbeat-interval", "SSE_HEARTBEAT_INTERVAL"),
    ("--history-bytes", "SSE_HISTORY_BYTES"),
    ("--publish-token", "SSE_PUBLISH_TOKEN"),
    ("--cors-origins", "SSE_CORS_ORIGINS"),
    ("--cors-credentials", "SSE_CORS_CREDENTIALS"),
    ("--trusted-proxies", "SSE_TRUSTED_PROXIES"),
    ("--retry-ms", "SSE_RETRY_MS"),
    ("--header-timeout", "SSE_HEADER_TIMEOUT"),
    ("--write-timeout", "SSE_WRITE_TIMEOUT"),
    ("--idle-timeout", "SSE_IDLE_TIMEOUT"),
    ("--max-header-bytes", "SSE_MAX_HEADER_BYTES"),
    ("--max-body-bytes", "SSE_MAX_BODY_BYTES"),
    ("--max-channels", "SSE_MAX_CHANNELS"),
    ("--shutdown-grace", "SSE_SHUTDOWN_GRACE"),
    ("--log-level", "SSE_LOG_LEVEL"),
    ("--reuse-port", "SSE_REUSE_PORT"),
    ("--admin-bind", "SSE_ADMIN_BIND"),
];

/// Arguments and environment of one binary run.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

fn graceful_on(sig: &str) {
    let mut bin = BinServer::spawn(
        &[
            "--bind",
            "127.0.0.1:0",
            "--shutdown-grace",
            "3",
            "--retry-ms",
            "0",
        ],
        &[],
    );
    let mut s = subscribe(bin.addr, "/events");
    let id = publish(bin.addr, "default", "before shutdown");
    assert_eq!(s.next_event_strict().id_u64(), id);
    // An idle keep-alive connection too.
    let mut idle = connect(bin.addr);
    assert_eq!(idle.request("GET", "/health", &[], b"").status, 200);

    let sent = Instant::now();
    bin.signal(sig);
    s.expect_eof_within(Duration::from_secs(4));
    idle.read_until_eof(Duration::from_secs(4))
        .expect("idle keep-alive connection not closed on shutdown");
    let st = bin
        .wait_exit(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("process still running 6 s after SIG{sig} (grace 3 s)"));
    assert_eq!(st.code(), Some(0), "exit status after SIG{sig}: {st:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "exit took {:?}, more than the 3 s grace period",
        sent.elapsed()
    );
    // The listener is gone.
    assert!(std::net::TcpStream::connect(bin.addr).is_err());
}

#[test]
fn sigterm_ends_streams_cleanly_and_exits_0() {
    graceful_on("TERM");
}

#[test]
fn sigint_ends_streams_cleanly_and_exits_0() {
    graceful_on("INT");
}

#[test]
fn shutdown_handle_ends_streams_and_run_returns_ok() {
    let srv = TestServer::start(&["--retry-ms", "0", "--shutdown-grace", "2"]);
    let mut s = subscribe(srv.addr, "/events?channel=x");
    let id = publish(srv.addr, "x", "one");
    assert_eq!(s.next_event_strict().id_u64(), id);
    let addr = srv.addr;
    let started = Instant::now();
    srv.stop_within(Duration::from_secs(4));
    assert!(started.elapsed() < Duration::from_secs(4));
    s.expect_eof_within(Duration::from_secs(2));
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn help_lists_every_flag_with_its_variable_and_defaults() {
    let out = run_bin(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0), "stderr {:?}", out.stderr);
    let text = &out.stdout;
    for (flag, var) in FLAGS {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
        assert!(text.contains(var), "--help lacks {var}:\n{text}");
        // The variable is on the flag's line (its twin).
        let line = text
            .lines()
            .find(|l| {
                l.split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                    .any(|w| w == flag)
            })
            .unwrap_or_else(|| panic!("no line for {flag}:\n{text}"));
        let idx = text.find(line).unwrap();
        let around = &text[idx..(idx + line.len() + 200).min(text.len())];
        assert!(around.contains(var), "{var} not near {flag}:\n{text}");
    }
    for default in ["127.0.0.1:5001", "1048576", "8192", "3000", "10000", "info"] {
        assert!(
            text.contains(default),
            "--help lacks default {default}:\n{text}"
        );
    }
}

#[test]
fn version_prints_the_version() {
    let out = run_bin(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{:?}",
        out.stdout
    );
}

#[test]
fn environment_twins_configure_the_binary() {
    let bin = BinServer::spawn(
        &[],
        &[
            ("SSE_BIND", "127.0.0.1:0"),
            ("SSE_HEARTBEAT_INTERVAL", "0.3"),
            ("SSE_RETRY_MS", "0"),
            ("SSE_PUBLISH_TOKEN", "s3cret"),
        ],
    );
    assert_ne!(bin.addr.port(), 5001);
    let mut s = subscribe(bin.addr, "/events");
    // No retry line, a heartbeat within a few intervals.
    let t = Instant::now();
    match s.next_item() {
        SseItem::Comment(_) => {}
        other => panic!("expected a heartbeat first, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The token from the environment is required.
    let body = json!({"data": "x"}).to_string();
    let ct = ("Content-Type", "application/json");
    let r = http(
        bin.addr,
        "POST",
        "/events/broadcast",
        &[ct],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401, "{:?}", r.text());
    let r = http(
        bin.addr,
        "POST",
        "/events/broadcast",
        &[ct, ("Authorization", "Bearer s3cret")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{:?}", r.text());
}

#[test]
fn a_flag_wins_over_its_variable() {
    let bin = BinServer::spawn(
        &["--bind", "127.0.0.1:0", "--retry-ms", "1000"],
        &[("SSE_BIND", "127.0.0.1:1"), ("SSE_RETRY_MS", "0")],
    );
    assert_ne!(bin.addr.port(), 1);
    let mut s = subscribe(bin.addr, "/events");
    match s.next_item() {
        SseItem::Retry(ms) => assert!((1000..=1500).contains(&ms), "{ms}"),
        other => panic!("expected retry from the flag, got {other:?}"),
    }
}

#[test]
fn bad_values_exit_2_with_one_line() {
    let cases: &[Case] = &[
        (&["--heartbeat-interval", "abc"], &[]),
        (&[], &[("SSE_MAX_CONNECTIONS", "-1")]),
        (&["--bind", "not-an-address"], &[]),
        (&["--max-connections-per-ip", "x"], &[]),
        (&["--history-bytes", "-5"], &[]),
        (&["--retry-ms", "1.5x"], &[]),
        (&["--log-level", "loud"], &[]),
        (&["--trusted-proxies", "10.0.0.0/99"], &[]),
        (&["--no-such-flag"], &[]),
        (&["--bind"], &[]),
        (&[], &[("SSE_HEADER_TIMEOUT", "soon")]),
        (&["--cors-origins", "*", "--cors-credentials"], &[]),
        (&["--admin-bind", "localhost"], &[]),
        (&["--admin-bind", "127.0.0.1:99999"], &[]),
        (&[], &[("SSE_ADMIN_BIND", "not-an-address")]),
        (&[], &[("SSE_REUSE_PORT", "maybe")]),
    ];
    for (args, envs) in cases {
        let out = run_bin(args, envs);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} {envs:?}: status {:?}, stderr {:?}",
            out.status,
            out.stderr
        );
        let lines: Vec<&str> = out.stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "{args:?} {envs:?}: stderr {:?}", out.stderr);
        assert!(!lines[0].trim().is_empty());
    }
}

#[test]
fn from_args_refuses_bad_values_and_accepts_good_ones() {
    for args in [
        vec!["--heartbeat-interval", "abc"],
        vec!["--max-connections", "-1"],
        vec!["--cors-origins", "*", "--cors-credentials"],
        vec!["--bind", "nowhere"],
        vec!["--unknown"],
    ] {
        let e = ssecast::Config::from_args(&args)
            .err()
            .unwrap_or_else(|| panic!("{args:?} accepted"));
        assert!(!e.to_string().is_empty(), "{args:?}");
    }
    let ok = ssecast::Config::from_args(["--bind", "127.0.0.1:0", "--heartbeat-interval", "0.5"]);
    assert!(ok.is_ok());
}
