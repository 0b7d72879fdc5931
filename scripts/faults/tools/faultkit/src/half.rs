//! `half`: subscribers that leave badly in the middle of a stream.
//!  - `half`: shutdown(SHUT_WR) after receiving events, then keep reading:
//!    the hub is expected to close (EOF) soon after;
//!  - `reset`: SO_LINGER 0 then close: the hub gets a reset;
//!  - `partial`: a tiny receive buffer and no reading while large events
//!    flow, so the hub is stuck in the middle of a frame; then read a
//!    little and close with unread data (reset) or drain and close (FIN).

use std::io::{self, Read};
use std::net::Shutdown;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::common::*;
use crate::sse::Sse;
use crate::sub::{drive, request, End, SubConn};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Half,
    Reset,
    PartialRst,
    PartialFin,
}

const MODES: [(Mode, &str); 4] = [
    (Mode::Half, "half"),
    (Mode::Reset, "reset"),
    (Mode::PartialRst, "partial_rst"),
    (Mode::PartialFin, "partial_fin"),
];

struct H {
    c: SubConn,
    mode: Mode,
    act_at: u64,
    acted: u64,
    events_before: u64,
    eof_after: Option<u64>,
}

pub fn run(a: &Args) {
    let addr = a.addr();
    let channel = a.str("channel", "faults");
    let n = a.u64("n", 100);
    let duration = a.f64("duration", 10.0);
    let act_min = a.f64("act-min", 1.0);
    let act_max = a.f64("act-max", 3.0);
    let small = a.u64("rcvbuf", 2048) as usize;
    let partial_read = a.u64("partial-read", 3000) as usize;
    let n_partial = a.u64("n-partial", n);
    let partial_act_min = a.f64("partial-act-min", act_min);
    let req = request(&channel, None);
    let preq = request(&a.str("partial-channel", &channel), None);
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(4096);
    let mut conns: Slab<H> = Slab::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut fails = 0u64;
    let t0 = now_ns();
    let end = t0 + (duration * 1e9) as u64;
    let mut rng = t0 | 1;
    let mut unit = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    for (mode, _) in MODES {
        let partial = matches!(mode, Mode::PartialRst | Mode::PartialFin);
        for _ in 0..(if partial { n_partial } else { n }) {
            let rcv = if partial { Some(small) } else { None };
            match connect(addr, None, rcv) {
                Ok(mut s) => {
                    let e = conns.vacant_entry();
                    poll.registry()
                        .register(
                            &mut s,
                            Token(e.key()),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .unwrap();
                    let lo = if partial { partial_act_min } else { act_min };
                    let act = lo + (act_max - lo) * unit();
                    e.insert(H {
                        c: SubConn::new(
                            s,
                            t0,
                            if partial { preq.clone() } else { req.clone() },
                            Sse::new(false),
                            partial,
                            0,
                        ),
                        mode,
                        act_at: t0 + (act * 1e9) as u64,
                        acted: 0,
                        events_before: 0,
                        eof_after: None,
                    });
                }
                Err(_) => fails += 1,
            }
        }
    }
    let mut closed: Vec<H> = Vec::new();
    loop {
        let now = now_ns();
        if now >= end || stopped() {
            break;
        }
        let due: Vec<usize> = conns
            .iter()
            .filter(|(_, h)| h.acted == 0 && now >= h.act_at)
            .map(|(k, _)| k)
            .collect();
        for k in due {
            let h = conns.get_mut(k).unwrap();
            h.acted = now;
            h.events_before = h.c.sse.events;
            match h.mode {
                Mode::Half => {
                    let _ = h.c.stream.shutdown(Shutdown::Write);
                }
                Mode::Reset => {
                    set_linger_zero(&h.c.stream);
                    closed.push(conns.remove(k));
                }
                Mode::PartialRst | Mode::PartialFin => {
                    // Read a little of what is waiting (the head and part of
                    // a frame), then leave.
                    let mut got = 0;
                    while got < partial_read {
                        let want = (partial_read - got).min(buf.len());
                        match h.c.stream.read(&mut buf[..want]) {
                            Ok(0) => break,
                            Ok(k) => {
                                got += k;
                                h.c.sse.feed(&buf[..k], now);
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    if h.mode == Mode::PartialFin {
                        // Drain what is queued, so the close sends a FIN.
                        loop {
                            match h.c.stream.read(&mut buf) {
                                Ok(0) => break,
                                Ok(k) => h.c.sse.feed(&buf[..k], now),
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => break,
                            }
                        }
                    }
                    h.events_before = h.c.sse.events;
                    closed.push(conns.remove(k));
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
            let Some(h) = conns.get_mut(key) else {
                continue;
            };
            let done = drive(
                &mut h.c,
                ev.is_readable() || ev.is_read_closed(),
                ev.is_writable(),
                ev.is_error() || ev.is_read_closed(),
                &mut buf,
            );
            if done {
                if h.acted > 0 {
                    h.eof_after = Some(h.c.t_end - h.acted);
                }
                closed.push(conns.remove(key));
            }
        }
        if conns
            .iter()
            .all(|(_, h)| h.mode == Mode::Half && h.acted > 0 && h.eof_after.is_some())
            && conns.is_empty()
        {
            break;
        }
    }
    let mut j = Json::default();
    j.num("per_mode", n)
        .num("per_partial_mode", n_partial)
        .num("connect_fail", fails);
    let all: Vec<&H> = closed.iter().chain(conns.iter().map(|(_, h)| h)).collect();
    for (mode, label) in MODES {
        let of: Vec<&&H> = all.iter().filter(|h| h.mode == mode).collect();
        let acted = of.iter().filter(|h| h.acted > 0).count();
        let s200 = of.iter().filter(|h| h.c.sse.status == 200).count();
        let with_events = of.iter().filter(|h| h.events_before > 0).count();
        let gaps: u64 = of.iter().map(|h| h.c.sse.gap_ids).sum();
        let framing: u64 = of.iter().map(|h| h.c.sse.framing_errors).sum();
        let early = of
            .iter()
            .filter(|h| h.acted == 0 && h.c.end != End::Open)
            .count();
        j.num(&format!("{label}_200"), s200)
            .num(&format!("{label}_acted"), acted)
            .num(&format!("{label}_with_events"), with_events)
            .num(&format!("{label}_gaps"), gaps)
            .num(&format!("{label}_framing_errors"), framing)
            .num(&format!("{label}_closed_before_acting"), early);
        if mode == Mode::Half {
            let mut h = Hist::default();
            let mut eof = 0;
            let mut reset = 0;
            for x in &of {
                if let Some(t) = x.eof_after {
                    h.add(t / 1000);
                    if x.c.end == End::Eof {
                        eof += 1;
                    } else {
                        reset += 1;
                    }
                }
            }
            j.num("half_hub_closed_eof", eof)
                .num("half_hub_closed_reset", reset)
                .num(
                    "half_still_open",
                    of.iter()
                        .filter(|x| x.acted > 0 && x.eof_after.is_none())
                        .count(),
                )
                .hist_ms("half_close_after", &h);
        }
    }
    println!("{}", j.done());
}
