//! `slowloris`: N connections that send a request one byte per `--interval`
//! seconds (`drip`) or nothing at all (`silent`); `mixed` alternates. Records
//! when the hub closes each one (relative to the connect and to the first
//! byte) and what it answered (408 expected for a partial request).
//! `--ready-file` once all N have connected (or failed). It ends by itself
//! when the hub has closed every connection, on SIGUSR1, or at
//! `--duration` (a cap).

use std::io::{self, Read, Write};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::common::*;

struct Slow {
    stream: TcpStream,
    t_start: u64,
    drip: bool,
    connected: bool,
    t_conn: u64,
    t_first: u64,
    next_send: u64,
    sent: usize,
    resp: Vec<u8>,
    t_close: u64,
    reset: bool,
}

pub fn run(a: &Args) {
    let addr = a.addr();
    let n = a.u64("n", 1000);
    let mode = a.str("mode", "mixed");
    let interval = (a.f64("interval", 1.0) * 1e9) as u64;
    let duration = a.f64("duration", 10.0);
    let batch = a.u64("batch", 256);
    let srcs = a.src_ips();
    let request = format!(
        "GET /events?channel=slow HTTP/1.1\r\nHost: hub\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(4096)
    )
    .into_bytes();

    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(4096);
    let mut conns: Slab<Slow> = Slab::new();
    let mut done: Vec<Slow> = Vec::new();
    let mut opened = 0u64;
    let mut connect_fail = 0u64;
    let mut connecting = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    let t0 = now_ns();
    let end = t0 + (duration * 1e9) as u64;
    let mut last_scan = 0u64;
    let ready_file = a.opt("ready-file");
    let mut ready_done = false;

    loop {
        let now = now_ns();
        if now >= end || stopped() || (opened >= n && conns.is_empty()) {
            break;
        }
        if !ready_done && opened >= n && connecting == 0 {
            ready_done = true;
            if let Some(p) = &ready_file {
                write_ready(p, &format!("{}\n", n - connect_fail));
            }
        }
        while opened < n && connecting < batch {
            let drip = match mode.as_str() {
                "drip" => true,
                "silent" => false,
                _ => opened.is_multiple_of(2),
            };
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
                    e.insert(Slow {
                        stream: s,
                        t_start: now,
                        drip,
                        connected: false,
                        t_conn: 0,
                        t_first: 0,
                        next_send: 0,
                        sent: 0,
                        resp: Vec::new(),
                        t_close: 0,
                        reset: false,
                    });
                    connecting += 1;
                }
                Err(_) => connect_fail += 1,
            }
        }
        // One byte to every dripping connection that is due.
        if now - last_scan >= 20_000_000 {
            last_scan = now;
            for (_, c) in conns.iter_mut() {
                if c.connected
                    && c.drip
                    && c.t_close == 0
                    && now >= c.next_send
                    && c.sent < request.len()
                {
                    match c.stream.write(&request[c.sent..c.sent + 1]) {
                        Ok(1) => {
                            if c.sent == 0 {
                                c.t_first = now;
                            }
                            c.sent += 1;
                            c.next_send = now + interval;
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => {
                            c.t_close = now;
                            c.reset = true;
                        }
                    }
                }
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
            if !c.connected {
                if !(ev.is_writable() || ev.is_error()) {
                    continue;
                }
                connecting = connecting.saturating_sub(1);
                match c.stream.take_error() {
                    Ok(None) if c.stream.peer_addr().is_ok() => {
                        c.connected = true;
                        c.t_conn = now_ns();
                        c.next_send = c.t_conn;
                    }
                    _ => {
                        connect_fail += 1;
                        conns.remove(key);
                        continue;
                    }
                }
            }
            if c.t_close != 0 {
                continue;
            }
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        c.t_close = now_ns();
                        break;
                    }
                    Ok(k) => c.resp.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.t_close = now_ns();
                        c.reset = true;
                        break;
                    }
                }
            }
            if c.t_close != 0 {
                let c = conns.remove(key);
                done.push(c);
            }
        }
    }
    let still_open = conns.len() as u64;
    let mut cdelay = MinMax::default();
    for c in done.iter().chain(conns.iter().map(|(_, c)| c)) {
        if c.connected {
            cdelay.add((c.t_conn - c.t_start) / 1000);
        }
    }
    let connected = done.iter().filter(|c| c.connected).count() as u64
        + conns.iter().filter(|(_, c)| c.connected).count() as u64;
    let mut j = Json::default();
    j.num("target", n)
        .num("connect_fail", connect_fail)
        .num("connected", connected)
        .num("still_open", still_open)
        .f("connect_delay_max_ms", cdelay.max as f64 / 1000.0)
        .f("seconds", (now_ns() - t0) as f64 / 1e9);
    for (label, want_drip) in [("drip", true), ("silent", false)] {
        let mut from_conn = Hist::default();
        let mut from_first = Hist::default();
        let (mut closed, mut s408, mut other, mut empty, mut resets, mut open) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let mut min_conn = MinMax::default();
        for c in done.iter().filter(|c| c.drip == want_drip) {
            closed += 1;
            from_conn.add((c.t_close - c.t_conn) / 1000);
            min_conn.add((c.t_close - c.t_conn) / 1000);
            if c.t_first > 0 {
                from_first.add((c.t_close - c.t_first) / 1000);
            }
            match status_of(&c.resp) {
                Some(408) => s408 += 1,
                Some(_) => other += 1,
                None => empty += 1,
            }
            if c.reset {
                resets += 1;
            }
        }
        for (_, c) in conns.iter() {
            if c.drip == want_drip {
                open += 1;
            }
        }
        j.num(&format!("{label}_closed"), closed)
            .num(&format!("{label}_open"), open)
            .num(&format!("{label}_408"), s408)
            .num(&format!("{label}_other_status"), other)
            .num(&format!("{label}_no_response"), empty)
            .num(&format!("{label}_resets"), resets)
            .f(
                &format!("{label}_close_min_ms"),
                min_conn.min_or0() as f64 / 1000.0,
            )
            .hist_ms(&format!("{label}_close"), &from_conn)
            .hist_ms(&format!("{label}_close_after_first_byte"), &from_first);
    }
    println!("{}", j.done());
}
