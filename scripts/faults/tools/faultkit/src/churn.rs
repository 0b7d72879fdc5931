//! `churn`: keeps `--concurrency C` subscribers connected, each for a random
//! lifetime in [life-min, life-max] seconds, then closes it (a fraction with
//! a reset) and opens a new one, for `--duration` seconds (or until SIGUSR1).
//! Every connection's events must be contiguous by their sequence numbers,
//! with ids strictly increasing; `--records FILE` keeps each lifetime for
//! `check`. A resumed subscriber (Last-Event-ID) must start with the event
//! right after the last one it saw: the next sequence number, a higher id.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::common::*;
use crate::sse::Sse;
use crate::sub::{drive, record, request, End, SubConn, Tally};

/// How long a subscriber that has seen no event waits for the last
/// acknowledged one before leaving.
const QUIET_WAIT: u64 = 1_000_000_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn run(a: &Args) {
    let addr = a.addr();
    let channel = a.str("channel", "churn");
    let conc = a.u64("concurrency", 1000);
    let duration = a.f64("duration", 30.0);
    let life_min = a.f64("life-min", 1.0);
    let life_max = a.f64("life-max", 10.0);
    let reset_frac = a.f64("reset-frac", 0.1);
    let batch = a.u64("batch", 200);
    let records = a.opt("records");
    let srcs = a.src_ips();
    let req = request(&channel, None);
    let resume_frac = a.f64("resume-frac", 0.3);
    // (last id, last sequence number) of subscribers that will come back.
    let resume_q: std::cell::RefCell<std::collections::VecDeque<(u64, Option<u64>)>> =
        Default::default();
    let mut rng2 = Rng((now_ns() << 1) | 1);
    let (mut resume_ok, mut resume_bad, mut resume_lost, mut resume_quiet) =
        (0u64, 0u64, 0u64, 0u64);
    let mut resume_examples: Vec<String> = Vec::new();
    let mut rng = Rng(now_ns() | 1);

    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(4096);
    // conn, serial, reset on close, id it waits for before leaving (0: none)
    let mut conns: Slab<(SubConn, u64, bool, u64)> = Slab::new();
    let ack_file = a.opt("ack-file");
    let settle_ns = (a.f64("settle-timeout", 5.0) * 1e9) as u64;
    let mut tail_wait = Hist::default();
    let mut tail_missing = 0u64;
    let mut last_ack = 0u64;
    let read_ack = |last: &mut u64| -> u64 {
        if let Some(p) = &ack_file {
            if let Ok(s) = std::fs::read_to_string(p) {
                if let Ok(v) = s.trim().parse::<u64>() {
                    *last = (*last).max(v);
                }
            }
        }
        *last
    };
    let mut timers: BinaryHeap<Reverse<(u64, usize, u64)>> = BinaryHeap::new();
    let mut serial = 0u64;
    let mut tally = Tally::default();
    let mut server_closed = 0u64;
    let mut peak = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let mut rec: Vec<String> = Vec::new();
    let mut next_src = 0usize;
    let mut connecting = 0u64;
    let mut lifetimes = 0u64;
    let t0 = now_ns();
    let end = t0 + (duration * 1e9) as u64;

    // A subscriber that leaves may come back with its last id (Last-Event-ID)
    // as the next new connection; it must then start exactly after it.
    let mut finish = |c: SubConn, rec: &mut Vec<String>, tally: &mut Tally| {
        if c.resume_from > 0 && c.sse.status == 200 {
            if c.sse.history_lost.is_some() {
                resume_lost += 1;
            } else {
                let next_seq = c.resume_seq.map(|q| q + 1);
                match c.sse.first_id {
                    Some(f)
                        if f > c.resume_from
                            && (next_seq.is_none() || c.sse.first_seq == next_seq) =>
                    {
                        resume_ok += 1
                    }
                    Some(f) => {
                        resume_bad += 1;
                        if resume_examples.len() < 5 {
                            resume_examples.push(format!(
                                "resumed after id {} seq {:?} but first id {} seq {:?}",
                                c.resume_from, c.resume_seq, f, c.sse.first_seq
                            ));
                        }
                    }
                    None => resume_quiet += 1,
                }
            }
        }
        if c.end == End::Client && c.sse.status == 200 && rng2.unit() < resume_frac {
            if let Some(l) = c.sse.last_id {
                resume_q.borrow_mut().push_back((l, c.sse.last_seq));
            }
        }
        if records.is_some() {
            rec.push(record(&c));
        }
        tally.add(&c);
    };

    loop {
        let now = now_ns();
        if now >= end || stopped() {
            break;
        }
        // Keep the population up.
        while (conns.len() as u64) < conc && connecting < batch {
            let src = srcs[next_src % srcs.len()];
            next_src += 1;
            match connect(addr, src, None) {
                Ok(s) => {
                    let e = conns.vacant_entry();
                    let key = e.key();
                    let resume = resume_q.borrow_mut().pop_front();
                    let sub_req = match resume {
                        Some((l, _)) => request(&channel, Some(&l.to_string())),
                        None => req.clone(),
                    };
                    let mut c = SubConn::new(
                        s,
                        now,
                        sub_req,
                        Sse::new(false),
                        false,
                        resume.map_or(0, |r| r.0),
                    );
                    c.resume_seq = resume.and_then(|r| r.1);
                    poll.registry()
                        .register(
                            &mut c.stream,
                            Token(key),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .unwrap();
                    serial += 1;
                    let life = life_min + (life_max - life_min) * rng.unit();
                    timers.push(Reverse((now + (life * 1e9) as u64, key, serial)));
                    let reset = rng.unit() < reset_frac;
                    e.insert((c, serial, reset, 0));
                    connecting += 1;
                }
                Err(_) => {
                    tally.opened += 1;
                    tally.connect_fail += 1;
                    break;
                }
            }
        }
        peak = peak.max(conns.len());
        // Lifetimes that ended.
        while let Some(Reverse((at, key, ser))) = timers.peek().copied() {
            if at > now {
                break;
            }
            timers.pop();
            let live = conns.get(key).is_some_and(|(_, s, _, _)| *s == ser);
            if !live {
                continue;
            }
            let (c, _, _, want) = conns.get_mut(key).unwrap();
            drain(c, &mut buf);
            let t_decide = now_ns();
            if *want == 0 && c.end == End::Open && c.sse.status == 200 {
                // Everything acknowledged so far must arrive before it leaves.
                let w = read_ack(&mut last_ack);
                if w > 0 && c.sse.last_id.is_none_or(|l| l < w) {
                    *want = w;
                    c.t_end = t_decide; // when it decided to leave
                                        // One that has seen no event yet may have subscribed
                                        // after w was published: wait only 1 s for it (the
                                        // publisher's log decides, by send time, in `check`).
                    let wait = if c.sse.last_id.is_some() {
                        settle_ns
                    } else {
                        QUIET_WAIT
                    };
                    timers.push(Reverse((t_decide + wait, key, ser)));
                    continue;
                }
            }
            let (mut c, _, reset, want) = conns.remove(key);
            if !c.connected {
                connecting = connecting.saturating_sub(1);
            }
            leave(
                &mut c,
                want,
                reset,
                &mut tail_wait,
                &mut tail_missing,
                &mut server_closed,
            );
            lifetimes += 1;
            finish(c, &mut rec, &mut tally);
        }
        let wait = timers.peek().map_or(20_000_000, |Reverse((at, _, _))| {
            at.saturating_sub(now_ns()).min(20_000_000)
        });
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_nanos(wait))) {
            if e.kind() != io::ErrorKind::Interrupted {
                die(&format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            let key = ev.token().0;
            let Some((c, _, _, want)) = conns.get_mut(key) else {
                continue;
            };
            let was_connected = c.connected;
            let done = drive(
                c,
                ev.is_readable() || ev.is_read_closed(),
                ev.is_writable(),
                ev.is_error() || ev.is_read_closed(),
                &mut buf,
            );
            if !was_connected && (c.connected || done) {
                connecting = connecting.saturating_sub(1);
            }
            if done {
                let (c, _, _, _) = conns.remove(key);
                if c.end != End::ConnectFail {
                    server_closed += 1;
                }
                finish(c, &mut rec, &mut tally);
            } else if *want > 0 && c.sse.last_id.is_some_and(|l| l >= *want) {
                let (mut c, _, reset, want) = conns.remove(key);
                leave(
                    &mut c,
                    want,
                    reset,
                    &mut tail_wait,
                    &mut tail_missing,
                    &mut server_closed,
                );
                lifetimes += 1;
                finish(c, &mut rec, &mut tally);
            }
        }
    }
    // The end: everyone still connected leaves, once it has every event
    // acknowledged by now (or the settle timeout passed).
    let w = read_ack(&mut last_ack);
    let t_decide = now_ns();
    for (_, (c, _, _, want)) in conns.iter_mut() {
        if *want == 0 && c.end == End::Open && c.sse.status == 200 {
            *want = w;
            c.t_end = t_decide;
        }
    }
    let deadline = t_decide + settle_ns;
    loop {
        let keys: Vec<usize> = conns
            .iter()
            .filter(|(_, (c, _, _, want))| {
                c.end != End::Open
                    || *want == 0
                    || c.sse.last_id.is_some_and(|l| l >= *want)
                    || now_ns() >= deadline
                    || (c.sse.last_id.is_none() && now_ns() >= t_decide + QUIET_WAIT)
            })
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            let (mut c, _, reset, want) = conns.remove(k);
            leave(
                &mut c,
                want,
                reset,
                &mut tail_wait,
                &mut tail_missing,
                &mut server_closed,
            );
            finish(c, &mut rec, &mut tally);
        }
        if conns.is_empty() {
            break;
        }
        let _ = poll.poll(&mut events, Some(Duration::from_millis(5)));
        for ev in events.iter() {
            let key = ev.token().0;
            if let Some((c, _, _, _)) = conns.get_mut(key) {
                drive(
                    c,
                    true,
                    ev.is_writable(),
                    ev.is_error() || ev.is_read_closed(),
                    &mut buf,
                );
            }
        }
    }
    if let Some(p) = &records {
        let _ = std::fs::write(p, rec.join(""));
    }
    let mut j = Json::default();
    j.num("concurrency", conc)
        .num("peak", peak)
        .num("lifetimes", lifetimes)
        .num("server_closed", server_closed)
        .num("tail_missing", tail_missing)
        .num("resumed_ok", resume_ok)
        .num("resumed_wrong_start", resume_bad)
        .num("resumed_history_lost", resume_lost)
        .num("resumed_no_event", resume_quiet)
        .raw(
            "resume_examples",
            &format!(
                "[{}]",
                resume_examples
                    .iter()
                    .map(|e| format!("\"{e}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )
        .hist_ms("tail_wait", &tail_wait);
    tally.json(&mut j);
    println!("{}", j.done());
}

/// Closes a subscriber whose lifetime is over; `want` is the id it had to
/// reach (0: none). The record keeps `t_end` = when it decided to leave.
fn leave(
    c: &mut SubConn,
    want: u64,
    reset: bool,
    wait: &mut Hist,
    missing: &mut u64,
    server_closed: &mut u64,
) {
    if c.end == End::Open {
        let decided = if c.t_end > 0 { c.t_end } else { now_ns() };
        if want > 0 {
            wait.add((now_ns() - decided) / 1000);
            // Ids increase: one that has not reached `want` misses it (or
            // events before it).
            if c.sse.last_id.is_some_and(|l| l < want) {
                *missing += 1;
            }
        }
        c.end = End::Client;
        c.t_end = decided;
    } else if c.end != End::ConnectFail {
        *server_closed += 1;
    }
    c.want = want;
    if reset {
        set_linger_zero(&c.stream);
    }
}

fn drain(c: &mut SubConn, buf: &mut [u8]) {
    if !c.connected {
        return;
    }
    loop {
        match c.stream.read(buf) {
            Ok(0) => {
                c.end = End::Eof;
                c.t_end = now_ns();
                return;
            }
            Ok(n) => {
                let now = now_ns();
                let had = c.sse.head.is_some();
                c.sse.feed(&buf[..n], now);
                if !had && c.sse.head.is_some() {
                    c.t_head = now;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                c.end = End::Reset;
                c.t_end = now_ns();
                return;
            }
        }
    }
}
