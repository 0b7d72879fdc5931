//! `pub`: publishes events over keep-alive connections with pipelining, at a
//! fixed rate or as fast as the hub answers. Each event's data is
//! `s=SEQ t=MONOTONIC_NS` plus padding; the answer's id is recorded with the
//! send and acknowledgement times (`--log FILE`: `id seq t_send t_ack`).
//! Ids are time-based (strictly increasing, not contiguous); subscribers
//! find lost events from SEQ. It sends until `--count`, `--duration` (a cap)
//! or SIGUSR1 (the explicit end), then waits for the answers in flight.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::common::*;

struct PubConn {
    stream: TcpStream,
    connected: bool,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    inflight: VecDeque<(u64, u64)>, // (seq, t_send)
    dead: bool,
}

pub fn run(a: &Args) {
    let addr = a.addr();
    let channel = a.str("channel", "faults");
    let duration = a.f64("duration", 10.0);
    let rate = a.f64("rate", 0.0);
    let max_count = a.u64("count", u64::MAX);
    let window = a.u64("window", if rate > 0.0 { 64 } else { 32 }) as usize;
    let size = a.u64("size", 64) as usize;
    let nconns = a.u64("conns", 1) as usize;
    let reconnect = a.flag("reconnect");
    let log_path = a.opt("log");
    let start_delay = a.f64("delay", 0.0);
    let seq_start = a.u64("seq-start", 0);
    // The last acknowledged id, rewritten in place after every answer, for a
    // subscriber process that must know what has been published so far.
    let ack_file = a
        .opt("ack-file")
        .map(|p| std::fs::File::create(&p).unwrap_or_else(|e| die(&format!("{p}: {e}"))));
    let pad: String = "x".repeat(size);

    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(256);
    let mut conns: Vec<Option<PubConn>> = (0..nconns).map(|_| None).collect();
    let open = |poll: &Poll, i: usize| -> Option<PubConn> {
        match connect(addr, None, None) {
            Ok(mut s) => {
                poll.registry()
                    .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
                    .unwrap();
                Some(PubConn {
                    stream: s,
                    connected: false,
                    out: Vec::new(),
                    out_pos: 0,
                    inbuf: Vec::new(),
                    inflight: VecDeque::new(),
                    dead: false,
                })
            }
            Err(_) => None,
        }
    };
    if start_delay > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(start_delay));
    }
    for (i, c) in conns.iter_mut().enumerate() {
        *c = open(&poll, i);
    }
    let t0 = now_ns();
    let mut end = t0 + (duration * 1e9) as u64;
    let mut seq: u64 = seq_start;
    let mut acked: u64 = 0;
    let mut non200: u64 = 0;
    let mut lost_inflight: u64 = 0;
    let mut conn_errors: u64 = 0;
    let mut eofs: u64 = 0;
    let mut ids = MinMax::default();
    let mut last_id_seen: u64 = 0;
    let mut ids_increasing = true;
    let mut log: Vec<(u64, u64, u64, u64)> = Vec::new();
    let mut ack_lat = Hist::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_reconnect = 0u64;

    loop {
        let now = now_ns();
        if stopped() && now < end {
            end = now;
        }
        let sending = now < end && seq - seq_start < max_count;
        let all_idle = conns
            .iter()
            .all(|c| c.as_ref().is_none_or(|c| c.inflight.is_empty()));
        if !sending && all_idle {
            break;
        }
        if now > end + 5_000_000_000 {
            break; // answers that never come
        }
        // Drop dead connections; reopen them when asked to.
        for (i, slot) in conns.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|c| c.dead) {
                if let Some(c) = slot.take() {
                    lost_inflight += c.inflight.len() as u64;
                }
            }
            if slot.is_none() && sending && reconnect && now - last_reconnect > 100_000_000 {
                last_reconnect = now;
                *slot = open(&poll, i);
            }
        }
        if conns.iter().all(|c| c.is_none()) && (!sending || !reconnect) {
            break;
        }
        // Queue new requests.
        if sending {
            let allowed = if rate > 0.0 {
                (((now - t0) as f64 / 1e9) * rate) as u64 + 1
            } else {
                u64::MAX
            };
            'fill: for c in conns.iter_mut().flatten() {
                if !c.connected || c.dead {
                    continue;
                }
                while c.inflight.len() < window && seq - seq_start < allowed.min(max_count) {
                    let t = now_ns();
                    let body =
                        format!("{{\"channel\":\"{channel}\",\"data\":\"s={seq} t={t} {pad}\"}}");
                    let _ = write!(
                        c.out,
                        "POST /events/broadcast HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                        body.len(),
                        body
                    );
                    c.inflight.push_back((seq, t));
                    seq += 1;
                    if now_ns() >= end {
                        break 'fill;
                    }
                }
                flush(c, &mut conn_errors);
            }
        }
        let timeout = if rate > 0.0 {
            Duration::from_micros(500)
        } else {
            Duration::from_millis(50)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                die(&format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = conns[i].as_mut() else { continue };
            if !c.connected && (ev.is_writable() || ev.is_error()) {
                match c.stream.take_error() {
                    Ok(None) if c.stream.peer_addr().is_ok() => c.connected = true,
                    _ => {
                        c.dead = true;
                        conn_errors += 1;
                        continue;
                    }
                }
            }
            if ev.is_writable() {
                flush(c, &mut conn_errors);
            }
            // Read answers.
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        c.dead = true;
                        eofs += 1;
                        break;
                    }
                    Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        c.dead = true;
                        conn_errors += 1;
                        break;
                    }
                }
            }
            let t_ack = now_ns();
            // Parse complete responses.
            let mut off = 0;
            while let Some(he) = find(&c.inbuf[off..], b"\r\n\r\n") {
                let head = &c.inbuf[off..off + he + 4];
                let clen: usize = header(head, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if c.inbuf.len() < off + he + 4 + clen {
                    break;
                }
                let status = status_of(head).unwrap_or(0);
                let body = &c.inbuf[off + he + 4..off + he + 4 + clen];
                off += he + 4 + clen;
                let Some((s, t_send)) = c.inflight.pop_front() else {
                    continue;
                };
                if status != 200 {
                    non200 += 1;
                    continue;
                }
                let id = find(body, b"\"id\":").and_then(|i| {
                    let r = &body[i + 5..];
                    let e = r
                        .iter()
                        .position(|c| !c.is_ascii_digit())
                        .unwrap_or(r.len());
                    std::str::from_utf8(&r[..e]).ok()?.parse::<u64>().ok()
                });
                if let Some(id) = id {
                    acked += 1;
                    if id <= last_id_seen {
                        ids_increasing = false;
                    }
                    last_id_seen = id;
                    ids.add(id);
                    ack_lat.add((t_ack - t_send) / 1000);
                    if log_path.is_some() {
                        log.push((id, s, t_send, t_ack));
                    }
                }
            }
            c.inbuf.drain(..off);
            if let Some(f) = &ack_file {
                use std::os::unix::fs::FileExt;
                let _ = f.write_at(format!("{last_id_seen:020}\n").as_bytes(), 0);
            }
        }
    }
    let elapsed = (now_ns() - t0) as f64 / 1e9;
    if let Some(p) = &log_path {
        let mut f = io::BufWriter::new(
            std::fs::File::create(p).unwrap_or_else(|e| die(&format!("{p}: {e}"))),
        );
        log.sort_unstable();
        for (id, s, ts, ta) in &log {
            let _ = writeln!(f, "{id} {s} {ts} {ta}");
        }
    }
    let mut j = Json::default();
    j.num("sent", seq - seq_start)
        .num("published", acked)
        .num("non200", non200)
        .num("lost_inflight", lost_inflight)
        .num("conn_errors", conn_errors)
        .num("conn_eofs", eofs)
        .num("first_id", ids.min_or0())
        .num("last_id", ids.max)
        .b("ids_increasing", ids_increasing && ids.n == acked)
        .f("seconds", elapsed)
        .f("rate", acked as f64 / elapsed.max(1e-9))
        .hist_ms("ack", &ack_lat);
    println!("{}", j.done());
}

fn flush(c: &mut PubConn, errors: &mut u64) {
    while c.out_pos < c.out.len() {
        match c.stream.write(&c.out[c.out_pos..]) {
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                c.dead = true;
                *errors += 1;
                break;
            }
        }
    }
    if c.out_pos == c.out.len() {
        c.out.clear();
        c.out_pos = 0;
    }
}
