//! `channels`: channel churn. Publishes one event to each of `--channels N`
//! distinct channels (`PREFIX0`, `PREFIX1`, ...) in batched JSON arrays
//! (`[{"channel":..,"data":..},..]`, `--batch` events a request, `--window`
//! requests pipelined on one keep-alive connection). Every `--sub-every`-th
//! channel gets a subscriber first: it joins, the batch holding its channel
//! is sent only once it has its response head, it must receive exactly its
//! event (by sequence number), then it leaves, so its channel becomes idle
//! (history, no subscriber) and evictable. At most `--sub-ahead`
//! subscribers are open at once. Each request also carries one
//! `--hot-size` event to one of `--hot` hot channels, so that all history
//! together exceeds the hub's `--history-memory` budget.
//!
//! A thread polls `/events/status` (keep-alive) every `--status-every-ms`
//! and the hub's RSS (`--hub-pid`), and keeps the extremes of
//! history_memory_bytes - history_memory_budget_bytes and channel_count.
//!
//! Ends when every channel is published and every subscriber is done
//! (explicit end), on SIGUSR1, or at `--duration` (a cap).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::common::*;
use crate::sse::Sse;
use crate::sub::{drive, request, End, SubConn};

const PUB: Token = Token(usize::MAX - 1);

struct Chan {
    c: SubConn,
    index: u64,
    /// Sequence number of its event once that is in a sent batch.
    seq: Option<u64>,
    t_sent: u64,
}

#[derive(Default)]
struct StatusMax {
    samples: u64,
    failed: u64,
    missing_fields: u64,
    over_budget_max: i64,
    over_budget_samples: u64,
    history_max: u64,
    budget: u64,
    channel_count_max: u64,
    rss_max_kb: u64,
}

/// The integer after `"key":` in `text` (first occurrence after `from`).
fn num_after(text: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let i = text.find(&pat)? + pat.len();
    let r = text[i..].trim_start();
    let e = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
    r[..e].parse().ok()
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn sampler(
    addr: std::net::SocketAddrV4,
    every: Duration,
    hub_pid: u32,
    done: Arc<AtomicBool>,
) -> StatusMax {
    let mut m = StatusMax {
        over_budget_max: i64::MIN,
        ..Default::default()
    };
    let mut conn: Option<std::net::TcpStream> = None;
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 65536];
    while !done.load(Ordering::Relaxed) {
        if hub_pid > 0 {
            m.rss_max_kb = m.rss_max_kb.max(rss_kb(hub_pid));
        }
        let s = match conn.take() {
            Some(s) => Some(s),
            None => std::net::TcpStream::connect(addr).ok(),
        };
        let Some(mut s) = s else {
            m.failed += 1;
            std::thread::sleep(every);
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let ok = s
            .write_all(b"GET /events/status HTTP/1.1\r\nHost: hub\r\n\r\n")
            .is_ok();
        buf.clear();
        let mut body: Option<String> = None;
        while ok && body.is_none() {
            if let Some(he) = find(&buf, b"\r\n\r\n") {
                let clen: usize = header(&buf[..he + 4], "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if buf.len() >= he + 4 + clen {
                    body = Some(String::from_utf8_lossy(&buf[he + 4..he + 4 + clen]).into_owned());
                    break;
                }
            }
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        match body {
            Some(b) => {
                m.samples += 1;
                conn = Some(s);
                let h = num_after(&b, "history_memory_bytes");
                let g = num_after(&b, "history_memory_budget_bytes");
                let c = num_after(&b, "channel_count");
                match (h, g, c) {
                    (Some(h), Some(g), Some(c)) => {
                        let over = h as i64 - g as i64;
                        m.over_budget_max = m.over_budget_max.max(over);
                        if over > 0 {
                            m.over_budget_samples += 1;
                        }
                        m.history_max = m.history_max.max(h);
                        m.budget = g;
                        m.channel_count_max = m.channel_count_max.max(c);
                    }
                    _ => m.missing_fields += 1,
                }
            }
            None => m.failed += 1,
        }
        std::thread::sleep(every);
    }
    m
}

pub fn run(a: &Args) {
    let addr = a.addr();
    let n = a.u64("channels", 100_000);
    let prefix = a.str("prefix", "cc");
    let batch = a.u64("batch", 100).max(1);
    let window = a.u64("window", 4).max(1) as usize;
    let sub_every = a.u64("sub-every", 10).max(1);
    let sub_ahead = a.u64("sub-ahead", 32).max(1) as usize;
    let size = a.u64("size", 64) as usize;
    let hot = a.u64("hot", 4);
    let hot_size = a.u64("hot-size", 16384) as usize;
    let sub_wait = (a.f64("sub-timeout", 5.0) * 1e9) as u64;
    let duration = a.f64("duration", 300.0);
    let every = Duration::from_millis(a.u64("status-every-ms", 50));
    let hub_pid = a.u64("hub-pid", 0) as u32;
    let pad = "x".repeat(size);
    let hot_pad = "h".repeat(hot_size);

    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let status_thread = std::thread::spawn(move || sampler(addr, every, hub_pid, d2));

    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(1024);
    let mut p = connect(addr, None, None).unwrap_or_else(|e| die(&format!("connect: {e}")));
    poll.registry()
        .register(&mut p, PUB, Interest::READABLE | Interest::WRITABLE)
        .unwrap();
    let mut p_connected = false;
    let mut out: Vec<u8> = Vec::new();
    let mut out_pos = 0usize;
    let mut inbuf: Vec<u8> = Vec::new();
    let mut inflight: std::collections::VecDeque<u64> = Default::default(); // events per request
    let mut subs: Slab<Chan> = Slab::new();
    let mut buf = vec![0u8; 256 * 1024];
    let t0 = now_ns();
    let end = t0 + (duration * 1e9) as u64;
    let mut next_ch = 0u64; // next channel to publish to
    let mut next_sub = 0u64; // next channel to open a subscriber for
    let mut seq = 0u64;
    let mut requests = 0u64;
    let (
        mut ok_events,
        mut refused_503,
        mut other_refused,
        mut resp_200,
        mut resp_503,
        mut resp_other,
    ) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut other_codes: Vec<u16> = Vec::new();
    let mut pub_dead = false;
    let (mut sub_ok, mut sub_non200, mut sub_503, mut sub_wrong, mut sub_missing, mut sub_closed) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut sub_codes: Vec<u16> = Vec::new();
    let mut examples: Vec<String> = Vec::new();
    let mut ended_by = "duration";
    let mut ack_lat = Hist::default();
    let mut sent_at: std::collections::VecDeque<u64> = Default::default();

    loop {
        let now = now_ns();
        if now >= end {
            break;
        }
        if stopped() {
            ended_by = "signal";
            break;
        }
        if next_ch >= n && inflight.is_empty() && subs.is_empty() && next_sub >= n {
            ended_by = "done";
            break;
        }
        if pub_dead && inflight.is_empty() {
            ended_by = "publisher connection lost";
            break;
        }
        // Subscribers ahead of the publisher.
        while subs.len() < sub_ahead && next_sub < n {
            let i = next_sub;
            next_sub += sub_every;
            let Ok(s) = connect(addr, None, None) else {
                sub_non200 += 1;
                continue;
            };
            let e = subs.vacant_entry();
            let mut ch = Chan {
                c: SubConn::new(
                    s,
                    now,
                    request(&format!("{prefix}{i}"), None),
                    Sse::new(false),
                    false,
                    0,
                ),
                index: i,
                seq: None,
                t_sent: 0,
            };
            poll.registry()
                .register(
                    &mut ch.c.stream,
                    Token(e.key()),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .unwrap();
            e.insert(ch);
        }
        // The next batch, up to the first subscribed channel whose
        // subscriber has no response head yet.
        if p_connected && !pub_dead && inflight.len() < window && next_ch < n {
            let mut body = String::from("[");
            let mut k = 0u64;
            while k < batch && next_ch < n {
                let i = next_ch;
                if i.is_multiple_of(sub_every) {
                    if i >= next_sub {
                        break; // its subscriber is not open yet
                    }
                    // Not found: its subscriber already failed (counted).
                    if let Some((_, ch)) = subs.iter_mut().find(|(_, c)| c.index == i) {
                        if ch.c.sse.head.is_none() && ch.c.end == End::Open {
                            break; // no response head yet
                        }
                        ch.seq = Some(seq);
                        ch.t_sent = now;
                    }
                }
                if k > 0 {
                    body.push(',');
                }
                let t = now_ns();
                body.push_str(&format!(
                    "{{\"channel\":\"{prefix}{i}\",\"data\":\"s={seq} t={t} {pad}\"}}"
                ));
                seq += 1;
                next_ch += 1;
                k += 1;
            }
            if k > 0 {
                if hot > 0 {
                    body.push_str(&format!(
                        ",{{\"channel\":\"hot{}\",\"data\":\"{hot_pad}\"}}",
                        requests % hot
                    ));
                    k += 1;
                }
                body.push(']');
                let _ = write!(
                    out,
                    "POST /events/broadcast HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                    body.len(),
                    body
                );
                requests += 1;
                inflight.push_back(k);
                sent_at.push_back(now_ns());
                flush(&mut p, &mut out, &mut out_pos, &mut pub_dead);
            }
        }
        // Subscribers whose event never came.
        let late: Vec<usize> = subs
            .iter()
            .filter(|(_, c)| c.seq.is_some() && now > c.t_sent + sub_wait)
            .map(|(k, _)| k)
            .collect();
        for k in late {
            let c = subs.remove(k);
            sub_missing += 1;
            if examples.len() < 5 {
                examples.push(format!(
                    "subscriber of {prefix}{} got no event in time (status {}, {} events)",
                    c.index, c.c.sse.status, c.c.sse.events
                ));
            }
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(5))) {
            if e.kind() != io::ErrorKind::Interrupted {
                die(&format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            if ev.token() == PUB {
                if !p_connected {
                    match p.take_error() {
                        Ok(None) if p.peer_addr().is_ok() => p_connected = true,
                        _ => {
                            pub_dead = true;
                            continue;
                        }
                    }
                }
                flush(&mut p, &mut out, &mut out_pos, &mut pub_dead);
                loop {
                    match p.read(&mut buf) {
                        Ok(0) => {
                            pub_dead = true;
                            break;
                        }
                        Ok(k) => inbuf.extend_from_slice(&buf[..k]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            pub_dead = true;
                            break;
                        }
                    }
                }
                let mut off = 0;
                while let Some(he) = find(&inbuf[off..], b"\r\n\r\n") {
                    let head = &inbuf[off..off + he + 4];
                    let clen: usize = header(head, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if inbuf.len() < off + he + 4 + clen {
                        break;
                    }
                    let status = status_of(head).unwrap_or(0);
                    off += he + 4 + clen;
                    let k = inflight.pop_front().unwrap_or(0);
                    if let Some(t) = sent_at.pop_front() {
                        ack_lat.add((now_ns() - t) / 1000);
                    }
                    match status {
                        200 => {
                            resp_200 += 1;
                            ok_events += k;
                        }
                        503 => {
                            resp_503 += 1;
                            refused_503 += k;
                        }
                        s => {
                            resp_other += 1;
                            other_refused += k;
                            if !other_codes.contains(&s) {
                                other_codes.push(s);
                            }
                        }
                    }
                }
                inbuf.drain(..off);
                continue;
            }
            let key = ev.token().0;
            let Some(ch) = subs.get_mut(key) else {
                continue;
            };
            let ended = drive(
                &mut ch.c,
                ev.is_readable() || ev.is_read_closed(),
                ev.is_writable(),
                ev.is_error() || ev.is_read_closed(),
                &mut buf,
            );
            let sse = &ch.c.sse;
            if sse.head.is_some() && sse.status != 200 {
                sub_non200 += 1;
                if sse.status == 503 {
                    sub_503 += 1;
                }
                if !sub_codes.contains(&sse.status) {
                    sub_codes.push(sse.status);
                }
                subs.remove(key);
            } else if sse.events >= 1 {
                // Its event: the right one, once, ids sane; then it leaves.
                if sse.events == 1 && sse.first_seq == ch.seq && sse.dups == 0 {
                    sub_ok += 1;
                } else {
                    sub_wrong += 1;
                    if examples.len() < 5 {
                        examples.push(format!(
                            "subscriber of {prefix}{}: {} events, first seq {:?}, expected {:?}",
                            ch.index, sse.events, sse.first_seq, ch.seq
                        ));
                    }
                }
                subs.remove(key);
            } else if ended {
                sub_closed += 1;
                if examples.len() < 5 {
                    examples.push(format!(
                        "subscriber of {prefix}{} ended ({:?}) before its event",
                        ch.index, ch.c.end
                    ));
                }
                subs.remove(key);
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let st = status_thread.join().unwrap_or_default();
    let elapsed = (now_ns() - t0) as f64 / 1e9;
    let codes = |v: &[u16]| {
        format!(
            "[{}]",
            v.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let mut j = Json::default();
    j.s("ended_by", ended_by)
        .num("channels", n)
        .num("channels_published", next_ch)
        .num("requests", requests)
        .num("responses_200", resp_200)
        .num("responses_503", resp_503)
        .num("responses_other", resp_other)
        .raw("other_codes", &codes(&other_codes))
        .num("events_ok", ok_events)
        .num("events_refused_503", refused_503)
        .num("events_refused_other", other_refused)
        .num("unanswered", inflight.len())
        .num("subscribers_expected", n.div_ceil(sub_every))
        .num("subscribers_ok", sub_ok)
        .num("subscribers_non200", sub_non200)
        .num("subscribers_503", sub_503)
        .raw("subscriber_codes", &codes(&sub_codes))
        .num("subscribers_wrong_event", sub_wrong)
        .num("subscribers_missing_event", sub_missing)
        .num("subscribers_closed_by_hub", sub_closed)
        .num("subscribers_left_open", subs.len())
        .f("seconds", elapsed)
        .f("channels_per_s", next_ch as f64 / elapsed.max(1e-9))
        .hist_ms("ack", &ack_lat)
        .num("status_samples", st.samples)
        .num("status_failed", st.failed)
        .num("status_missing_fields", st.missing_fields)
        .num(
            "history_over_budget_max",
            if st.samples > st.missing_fields {
                st.over_budget_max
            } else {
                0
            },
        )
        .num("history_over_budget_samples", st.over_budget_samples)
        .num("history_memory_max", st.history_max)
        .num("history_memory_budget", st.budget)
        .num("channel_count_max", st.channel_count_max)
        .num("rss_max_kb", st.rss_max_kb);
    let ex: Vec<String> = examples
        .iter()
        .map(|e| format!("\"{}\"", e.replace('"', "'")))
        .collect();
    j.raw("examples", &format!("[{}]", ex.join(",")));
    println!("{}", j.done());
}

fn flush(s: &mut TcpStream, out: &mut Vec<u8>, pos: &mut usize, dead: &mut bool) {
    while *pos < out.len() {
        match s.write(&out[*pos..]) {
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                *dead = true;
                break;
            }
        }
    }
    if *pos == out.len() {
        out.clear();
        *pos = 0;
    }
}
