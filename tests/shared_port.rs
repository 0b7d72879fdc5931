//! Several processes on one port (issue 11, point 8): `--reuse-port` lets
//! hub processes of one user share `--bind`, and `--admin-bind` gives each
//! its own address for its health, status and metrics, since a request to
//! the shared port reaches any of them.

mod common;

use std::time::Duration;

use common::*;

/// A hub process on `bind` with `--reuse-port` and an admin address of
/// its own.
fn shared(bind: &str) -> BinServer {
    BinServer::spawn(
        &[
            "--bind",
            bind,
            "--reuse-port",
            "--admin-bind",
            "127.0.0.1:0",
            "--access-log",
            "false",
        ],
        &[],
    )
}

/// Method, path, headers, body.
type Request<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);

fn active_streams(admin: std::net::SocketAddr) -> u64 {
    let st = get_json(admin, "/events/status");
    st["connections"]["active"]
        .as_u64()
        .unwrap_or_else(|| panic!("no connections.active in {st}"))
}

#[test]
fn two_processes_with_reuse_port_both_take_connections_on_one_port() {
    let a = shared("127.0.0.1:0");
    let port = a.addr.to_string();
    let b = shared(&port);
    assert_eq!(a.addr, b.addr, "both listen on the shared address");
    let (admin_a, admin_b) = (a.admin_addr(), b.admin_addr());
    assert_ne!(admin_a, admin_b);

    // 40 streams on the shared port: the kernel spreads them (all 40 on one
    // process would have odds of 2^-39).
    let streams: Vec<SseStream> = (0..40).map(|_| subscribe(a.addr, "/events")).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (on_a, on_b) = loop {
        let (x, y) = (active_streams(admin_a), active_streams(admin_b));
        if x + y == 40 || std::time::Instant::now() > deadline {
            break (x, y);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(on_a + on_b, 40, "each admin address shows its own streams");
    assert!(
        on_a > 0 && on_b > 0,
        "a={on_a} b={on_b}: one process got none"
    );
    // Each process's /health on its admin address counts its own streams.
    assert_eq!(
        json_u64(&get_json(admin_a, "/health"), "sse_connections"),
        on_a
    );
    assert_eq!(
        json_u64(&get_json(admin_b, "/health"), "sse_connections"),
        on_b
    );

    // Keep-alive requests too: both processes answer some of 40.
    let before = |admin| json_u64(&get_json(admin, "/events/status"), "requests");
    let (ra, rb) = (before(admin_a), before(admin_b));
    for _ in 0..40 {
        let mut c = connect(a.addr);
        for _ in 0..2 {
            assert_eq!(c.request("GET", "/health", &[], b"").status, 200);
        }
    }
    let (da, db) = (before(admin_a) - ra - 1, before(admin_b) - rb - 1);
    assert_eq!(da + db, 80, "requests a={da} b={db}");
    assert!(da > 0 && db > 0, "requests a={da} b={db}");
    drop(streams);
}

#[test]
fn a_second_process_without_reuse_port_on_a_taken_port_fails_clearly() {
    let a = shared("127.0.0.1:0");
    let port = a.addr.to_string();
    let out = run_bin(&["--bind", &port], &[]);
    assert_eq!(out.status.code(), Some(1), "stderr {:?}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("ssecast: "))
        .unwrap_or_else(|| panic!("no 'ssecast:' line: {:?}", out.stderr));
    assert!(
        line.contains(&format!("cannot listen on {port}"))
            && line.contains("in use")
            && line.contains("--reuse-port"),
        "{line}"
    );
    // The first process is untouched.
    assert_eq!(get(a.addr, "/health").status, 200);
}

#[test]
fn reuse_port_on_a_port_held_without_it_says_why() {
    let plain = BinServer::spawn(&["--bind", "127.0.0.1:0"], &[]);
    let port = plain.addr.to_string();
    let out = run_bin(&["--bind", &port], &[("SSE_REUSE_PORT", "true")]);
    assert_eq!(out.status.code(), Some(1), "stderr {:?}", out.stderr);
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("ssecast: "))
        .unwrap_or_else(|| panic!("no 'ssecast:' line: {:?}", out.stderr));
    assert!(
        line.contains(&format!("cannot listen on {port}"))
            && line.contains("SO_REUSEPORT")
            && line.contains("one UID"),
        "{line}"
    );
}

#[test]
fn the_admin_address_serves_health_status_and_metrics_only() {
    let bin = BinServer::spawn(
        &["--bind", "127.0.0.1:0", "--admin-bind", "127.0.0.1:0"],
        &[],
    );
    let admin = bin.admin_addr();
    assert_ne!(admin, bin.addr);
    let mut s = subscribe(bin.addr, "/events?channel=news");

    let h = get_json(admin, "/health");
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(json_u64(&h, "sse_connections"), 1, "{h}");
    let head = http(admin, "HEAD", "/health", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for path in ["/events/status", "/sse/health"] {
        let st = get_json(admin, path);
        assert_eq!(st["connections"]["active"], 1, "{path}: {st}");
        assert_eq!(st["channels"]["news"], 1, "{path}: {st}");
    }
    let m = get(admin, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    assert!(m.text().contains("ssecast_connections"), "{}", m.text());

    // Nothing that streams or changes state.
    let refused: [Request; 6] = [
        ("GET", "/events", &[], b""),
        ("GET", "/sse?channel=news", &[], b""),
        ("GET", "/events/status/stream", &[], b""),
        (
            "POST",
            "/events/broadcast",
            &[("Content-Type", "application/json")],
            br#"{"channel":"news","data":"x"}"#,
        ),
        (
            "POST",
            "/events/close",
            &[("Content-Type", "application/json")],
            br#"{"channel":"news"}"#,
        ),
        ("GET", "/", &[], b""),
    ];
    for (method, path, headers, body) in refused {
        let r = http(admin, method, path, headers, body);
        assert_eq!(r.status, 404, "{method} {path}: {:?}", r.text());
        let msg = r.assert_json_error();
        assert!(msg.contains("admin address"), "{method} {path}: {msg}");
    }
    // The refused publish published nothing; the main address still does.
    let id = publish(bin.addr, "news", "after");
    let ev = s.next_event();
    assert_eq!((ev.id_u64(), ev.data.as_str()), (id, "after"));
    let st = get_json(admin, "/events/status");
    assert_eq!(json_u64(&st, "events_published"), 1, "{st}");
}

#[test]
fn admin_connections_count_toward_the_connection_cap() {
    // --max-connections 1: 1 stream + 256 plain connections are accepted;
    // past them a new connection gets 503 at once, on either address.
    let bin = BinServer::spawn(
        &[
            "--bind",
            "127.0.0.1:0",
            "--admin-bind",
            "127.0.0.1:0",
            "--max-connections",
            "1",
            "--access-log",
            "false",
        ],
        &[],
    );
    let admin = bin.admin_addr();
    let mut held = Vec::new();
    for _ in 0..257 {
        let mut c = connect(bin.addr);
        assert_eq!(c.request("GET", "/health", &[], b"").status, 200);
        held.push(c);
    }
    let r = get(admin, "/health");
    assert_eq!(r.status, 503, "{:?}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get(admin, "/health").status != 200 {
        assert!(std::time::Instant::now() < deadline, "admin still refused");
        std::thread::sleep(Duration::from_millis(20));
    }
}
