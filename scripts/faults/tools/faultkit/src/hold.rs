//! `hold`: opens N streams at `--rate` per second and keeps the ones the hub
//! accepts (reading them); records what each got: 200, 503 (with or without
//! Retry-After), other, a close without an answer, or nothing yet.
//!
//! Readiness: `--ready-file F` is written once all N are opened and every
//! one has connected (or failed) and, unless `--ready-when connected`, has
//! an answer or was closed. Ends: SIGUSR1. With `--close-count K`, the first
//! SIGUSR1 closes K accepted streams instead, and the tool then ends by
//! itself as soon as no connection is left waiting for an answer (the hub
//! took the waiting ones), or at `--duration` (a cap).

use std::io::{self, Read, Write};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::common::*;

struct Held {
    /// None once this side closed it.
    stream: Option<TcpStream>,
    connected: bool,
    sent: bool,
    head: Vec<u8>,
    status: u16,
    retry_after: bool,
    t_head: u64,
    ended: Option<&'static str>,
}

pub fn run(a: &Args) {
    let addr = a.addr();
    let n = a.u64("n", 300);
    let rate = a.f64("rate", 1000.0);
    let duration = a.f64("duration", 10.0);
    let close_count = a.u64("close-count", 0);
    let ready_file = a.opt("ready-file");
    let ready_connected = a.str("ready-when", "answered") == "connected";
    let mut ready_done = false;
    let path = a.str("path", "/events?channel=hold");
    let srcs = a.src_ips();
    let req = format!("GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n").into_bytes();

    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(4096);
    let mut conns: Slab<Held> = Slab::new();
    let mut finished: Vec<Held> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut opened = 0u64;
    let mut connect_fail = 0u64;
    let mut closed_by_us = 0u64;
    let t0 = now_ns();
    let end = t0 + (duration * 1e9) as u64;
    let mut close_ns: Option<u64> = None;
    let mut ended_by = "duration";
    loop {
        let now = now_ns();
        if now >= end {
            break;
        }
        let waiting = conns
            .iter()
            .filter(|(_, c)| c.status == 0 && c.ended.is_none())
            .count();
        let unconnected = conns.iter().filter(|(_, c)| !c.connected).count();
        if !ready_done && opened >= n && unconnected == 0 && (ready_connected || waiting == 0) {
            ready_done = true;
            if let Some(p) = &ready_file {
                write_ready(p, &format!("{}\n", conns.len()));
            }
        }
        if close_ns.is_some() && waiting == 0 && opened >= n {
            ended_by = "answered";
            break;
        }
        if stopped() {
            if close_count == 0 || close_ns.is_some() {
                ended_by = "signal";
                break;
            }
            clear_stop();
            close_ns = Some(now);
            let keys: Vec<usize> = conns
                .iter()
                .filter(|(_, c)| c.status == 200)
                .map(|(k, _)| k)
                .take(close_count as usize)
                .collect();
            for k in keys {
                conns.remove(k);
                closed_by_us += 1;
            }
            continue;
        }
        let due = (((now - t0) as f64 / 1e9) * rate) as u64 + 1;
        while opened < n.min(due) {
            let src = srcs[opened as usize % srcs.len()];
            opened += 1;
            match connect(addr, src, None) {
                Ok(mut s) => {
                    let e = conns.vacant_entry();
                    poll.registry()
                        .register(
                            &mut s,
                            Token(e.key()),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .unwrap();
                    e.insert(Held {
                        stream: Some(s),
                        connected: false,
                        sent: false,
                        head: Vec::new(),
                        status: 0,
                        retry_after: false,
                        t_head: 0,
                        ended: None,
                    });
                }
                Err(_) => connect_fail += 1,
            }
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(10))) {
            if e.kind() != io::ErrorKind::Interrupted {
                die(&format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let Some(stream) = c.stream.as_mut() else {
                continue;
            };
            if !c.connected {
                if !(ev.is_writable() || ev.is_error()) {
                    continue;
                }
                match stream.take_error() {
                    Ok(None) if stream.peer_addr().is_ok() => c.connected = true,
                    _ => {
                        connect_fail += 1;
                        conns.remove(key);
                        continue;
                    }
                }
            }
            if !c.sent {
                // Tiny request: one write goes through on a fresh socket.
                c.sent = stream.write(&req).is_ok();
            }
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        c.ended = Some("eof");
                        break;
                    }
                    Ok(k) => {
                        if c.status == 0 {
                            c.head.extend_from_slice(&buf[..k]);
                            if let Some(he) = find(&c.head, b"\r\n\r\n") {
                                c.status = status_of(&c.head).unwrap_or(1);
                                c.retry_after = header(&c.head[..he + 4], "retry-after").is_some();
                                c.t_head = now_ns();
                                c.head = Vec::new();
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.ended = Some("reset");
                        break;
                    }
                }
            }
            // Refused (or ended): close our side and keep the record.
            if c.ended.is_some() || (c.status != 0 && c.status != 200) {
                let mut c = conns.remove(key);
                c.stream = None; // close now, as a client told to retry later would
                finished.push(c);
            }
        }
    }
    let mut all: Vec<&Held> = finished.iter().collect();
    all.extend(conns.iter().map(|(_, c)| c));
    let cnt = |f: &dyn Fn(&Held) -> bool| all.iter().filter(|c| f(c)).count() as u64;
    let after = |c: &Held| close_ns.is_some_and(|cn| c.t_head > cn);
    let mut j = Json::default();
    j.s("ended_by", ended_by)
        .num("opened", opened)
        .num("connect_fail", connect_fail)
        .num("connected", cnt(&|c| c.connected))
        .num("status_200", cnt(&|c| c.status == 200) + closed_by_us)
        .num("status_503", cnt(&|c| c.status == 503))
        .num(
            "status_503_retry_after",
            cnt(&|c| c.status == 503 && c.retry_after),
        )
        .num(
            "status_other",
            cnt(&|c| c.status != 0 && c.status != 200 && c.status != 503),
        )
        .num(
            "closed_without_answer",
            cnt(&|c| c.status == 0 && c.ended.is_some()),
        )
        .num(
            "waiting_without_answer",
            cnt(&|c| c.connected && c.status == 0 && c.ended.is_none()),
        )
        .num(
            "streams_open_at_end",
            cnt(&|c| c.status == 200 && c.ended.is_none()),
        )
        .num(
            "streams_closed_by_hub",
            cnt(&|c| c.status == 200 && c.ended.is_some()),
        )
        .num("closed_by_us", closed_by_us)
        .num(
            "accepted_after_close",
            cnt(&|c| c.status == 200 && after(c)),
        );
    println!("{}", j.done());
}
