//! `probe`: ordinary requests (`GET /health` by default) every `--interval`
//! seconds, each on a new connection (or `--keepalive`),
//! with their latency, until `--count` requests or SIGUSR1 (`--duration`
//! is a cap). `peek`: one stream (`--ready-file` once its response head
//! arrived), the first K events, printed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;
use crate::sse::Sse;

fn one(stream: &mut TcpStream, path: &str, keepalive: bool, buf: &mut Vec<u8>) -> Option<u16> {
    let conn = if keepalive { "keep-alive" } else { "close" };
    let req = format!("GET {path} HTTP/1.1\r\nHost: hub\r\nConnection: {conn}\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    buf.clear();
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(he) = find(buf, b"\r\n\r\n") {
            let clen: usize = header(&buf[..he + 4], "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= he + 4 + clen {
                return status_of(buf);
            }
        }
        match stream.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

pub fn run(a: &Args) {
    let addr = a.addr();
    let path = a.str("path", "/health");
    let interval = a.f64("interval", 0.05);
    let duration = a.f64("duration", 5.0);
    let keepalive = a.flag("keepalive");
    let count = a.u64("count", u64::MAX);
    let timeout = Duration::from_secs_f64(a.f64("timeout", 5.0));
    let t0 = now_ns();
    let end = t0 + (duration * 1e9) as u64;
    let mut h = Hist::default();
    let (mut ok, mut fail, mut non200) = (0u64, 0u64, 0u64);
    let mut ka: Option<TcpStream> = None;
    let mut buf = Vec::new();
    let mut next = t0;
    while now_ns() < end && !stopped() && ok + non200 + fail < count {
        let t = now_ns();
        if t < next {
            std::thread::sleep(Duration::from_nanos(next - t));
        }
        next += (interval * 1e9) as u64;
        let start = now_ns();
        let stream = match ka.take() {
            Some(s) => Some(s),
            None => TcpStream::connect_timeout(&addr.into(), timeout).ok(),
        };
        let Some(mut s) = stream else {
            if stopped() {
                break; // the stop signal interrupted the connect
            }
            fail += 1;
            continue;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let _ = s.set_nodelay(true);
        match one(&mut s, &path, keepalive, &mut buf) {
            Some(code) => {
                h.add((now_ns() - start) / 1000);
                if code == 200 {
                    ok += 1;
                } else {
                    non200 += 1;
                }
                if keepalive {
                    ka = Some(s);
                }
            }
            // A read interrupted by the stop signal (EINTR: a socket
            // timeout is never restarted) is not the hub's failure.
            None if stopped() => break,
            None => fail += 1,
        }
    }
    let mut j = Json::default();
    j.num("ok", ok)
        .num("non200", non200)
        .num("failed", fail)
        .hist_ms("lat", &h);
    println!("{}", j.done());
}

pub fn peek(a: &Args) {
    let addr = a.addr();
    let channel = a.str("channel", "faults");
    let k = a.u64("events", 1) as usize;
    let timeout = a.f64("timeout", 3.0);
    let last = a.opt("last-id");
    let req = crate::sub::request(&channel, last.as_deref());
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| die(&format!("connect: {e}")));
    s.write_all(&req).unwrap();
    let end = now_ns() + (timeout * 1e9) as u64;
    let mut sse = Sse::new(false);
    sse.keep = k;
    let mut tmp = [0u8; 65536];
    let ready_file = a.opt("ready-file");
    while sse.kept.len() < k && now_ns() < end {
        let left = end - now_ns();
        let _ = s.set_read_timeout(Some(Duration::from_nanos(left.max(1_000_000))));
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => {
                let had = sse.head.is_some();
                sse.feed(&tmp[..n], 0);
                if !had && sse.head.is_some() {
                    if let Some(p) = &ready_file {
                        write_ready(p, "head\n");
                    }
                }
            }
            Err(_) => break,
        }
    }
    let evs: Vec<String> = sse
        .kept
        .iter()
        .map(|(id, ev, data)| {
            let mut j = Json::default();
            j.num("id", id).s("event", ev).s("data", data);
            j.done()
        })
        .collect();
    let mut j = Json::default();
    j.num("status", sse.status)
        .b("retry", sse.retry_seen)
        .raw("events", &format!("[{}]", evs.join(",")));
    println!("{}", j.done());
}
