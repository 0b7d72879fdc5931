//! `sub`: N subscribers on one channel. Fast ones read and check every event
//! (contiguous ids, latency); `--noread` ones send the request and never read
//! again (with `--rcvbuf` small, the hub's writes stall at once). `--waves K`
//! opens the N subscribers again K times spread over the run.
//!
//! Ends: SIGUSR1 (the script's explicit end), `--exit-when-closed`, or
//! `--duration` (only a cap, so that nothing runs unbounded). With
//! `--ack-file F` (the publisher's last acknowledged id), a stop first reads
//! until every open reading subscriber has that id, at most
//! `--settle-timeout` seconds; those still short of it are `tail_missing`.

use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::common::*;
use crate::sse::Sse;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum End {
    Open,
    Eof,
    Reset,
    ConnectFail,
    /// Closed by this client (its lifetime ended).
    Client,
}

#[allow(dead_code)]
pub struct SubConn {
    pub stream: TcpStream,
    pub connected: bool,
    pub t_start: u64,
    pub t_conn: u64,
    pub t_end: u64,
    pub t_head: u64,
    pub req: Vec<u8>,
    pub req_pos: usize,
    pub sse: Sse,
    pub end: End,
    pub noread: bool,
    pub hup_seen: bool,
    /// Churn: the last acknowledged id when it decided to leave.
    pub want: u64,
    /// Churn: the Last-Event-ID it resumed from (0: a fresh subscription).
    pub resume_from: u64,
    /// Churn: the sequence number of the last event seen before resuming.
    pub resume_seq: Option<u64>,
}

impl SubConn {
    /// A subscriber whose socket was just opened at `now` and still has to
    /// send `req`.
    pub fn new(
        stream: TcpStream,
        now: u64,
        req: Vec<u8>,
        sse: Sse,
        noread: bool,
        resume_from: u64,
    ) -> Self {
        SubConn {
            stream,
            connected: false,
            t_start: now,
            t_conn: 0,
            t_end: 0,
            t_head: 0,
            req,
            req_pos: 0,
            sse,
            end: End::Open,
            noread,
            hup_seen: false,
            want: 0,
            resume_from,
            resume_seq: None,
        }
    }
}

pub fn request(channel: &str, last_id: Option<&str>) -> Vec<u8> {
    let mut r = format!(
        "GET /events?channel={channel} HTTP/1.1\r\nHost: hub\r\nAccept: text/event-stream\r\n"
    );
    if let Some(l) = last_id {
        r.push_str(&format!("Last-Event-ID: {l}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Drives one connection after a readiness event. Returns true when it ended.
pub fn drive(
    c: &mut SubConn,
    readable: bool,
    writable: bool,
    errored: bool,
    buf: &mut [u8],
) -> bool {
    if !c.connected {
        if !(writable || errored) {
            return false;
        }
        match c.stream.take_error() {
            Ok(None) if c.stream.peer_addr().is_ok() => {
                c.connected = true;
                c.t_conn = now_ns();
            }
            _ => {
                c.end = End::ConnectFail;
                c.t_end = now_ns();
                return true;
            }
        }
    }
    while c.req_pos < c.req.len() {
        match c.stream.write(&c.req[c.req_pos..]) {
            Ok(n) => c.req_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.end = End::Reset;
                c.t_end = now_ns();
                return true;
            }
        }
    }
    if c.noread {
        if errored {
            c.hup_seen = true;
        }
        return false;
    }
    if !readable && !errored {
        return false;
    }
    loop {
        match c.stream.read(buf) {
            Ok(0) => {
                c.end = End::Eof;
                c.t_end = now_ns();
                return true;
            }
            Ok(n) => {
                let now = now_ns();
                let had_head = c.sse.head.is_some();
                c.sse.feed(&buf[..n], now);
                if !had_head && c.sse.head.is_some() {
                    c.t_head = now;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.end = End::Reset;
                c.t_end = now_ns();
                return true;
            }
        }
    }
}

/// Totals over subscriber connections.
#[derive(Default)]
pub struct Tally {
    pub opened: u64,
    pub connect_fail: u64,
    pub connected: u64,
    pub s200: u64,
    pub s_other: u64,
    pub other_codes: Vec<u16>,
    pub eof: u64,
    pub reset: u64,
    pub open: u64,
    pub client_closed: u64,
    pub events: u64,
    pub gap_ids: u64,
    pub gap_incidents: u64,
    pub gap_conns: u64,
    pub dups: u64,
    pub heartbeats: u64,
    pub history_lost: u64,
    pub first: MinMax,
    pub last: MinMax,
    pub count: MinMax,
    pub first_seq: MinMax,
    pub last_seq: MinMax,
    pub lat: Hist,
    pub eof_at: MinMax,
    pub hup_seen: u64,
    pub chunked: u64,
    pub framing_errors: u64,
    pub last_chunk: u64,
}

impl Tally {
    pub fn add(&mut self, c: &SubConn) {
        self.opened += 1;
        match c.end {
            End::ConnectFail => {
                self.connect_fail += 1;
                return;
            }
            End::Eof => {
                self.eof += 1;
                self.eof_at.add(c.t_end);
            }
            End::Reset => self.reset += 1,
            End::Open => self.open += 1,
            End::Client => self.client_closed += 1,
        }
        if c.hup_seen {
            self.hup_seen += 1;
        }
        if c.connected {
            self.connected += 1;
        }
        if c.sse.head.is_some() {
            if c.sse.status == 200 {
                self.s200 += 1;
            } else {
                self.s_other += 1;
                if !self.other_codes.contains(&c.sse.status) {
                    self.other_codes.push(c.sse.status);
                }
            }
        }
        let s = &c.sse;
        if s.chunked {
            self.chunked += 1;
        }
        self.framing_errors += s.framing_errors;
        if s.last_chunk {
            self.last_chunk += 1;
        }
        self.events += s.events;
        self.gap_ids += s.gap_ids;
        self.gap_incidents += s.gap_incidents;
        if s.gap_ids > 0 {
            self.gap_conns += 1;
        }
        self.dups += s.dups;
        self.heartbeats += s.heartbeats;
        if s.history_lost.is_some() {
            self.history_lost += 1;
        }
        if !c.noread && s.status == 200 {
            if let Some(f) = s.first_id {
                self.first.add(f);
            }
            if let Some(l) = s.last_id {
                self.last.add(l);
            }
            if let Some(q) = s.first_seq {
                self.first_seq.add(q);
            }
            if let Some(q) = s.last_seq {
                self.last_seq.add(q);
            }
            self.count.add(s.events);
        }
        if let Some(h) = &s.lat {
            self.lat.merge(h);
        }
    }

    pub fn json(&self, j: &mut Json) {
        let codes: Vec<String> = self.other_codes.iter().map(|c| c.to_string()).collect();
        j.num("opened", self.opened)
            .num("connect_fail", self.connect_fail)
            .num("connected", self.connected)
            .num("status_200", self.s200)
            .num("status_other", self.s_other)
            .raw("other_codes", &format!("[{}]", codes.join(",")))
            .num("closed_eof", self.eof)
            .num("closed_reset", self.reset)
            .num("open_at_end", self.open)
            .num("client_closed", self.client_closed)
            .num("hup_seen", self.hup_seen)
            .num("chunked", self.chunked)
            .num("framing_errors", self.framing_errors)
            .num("last_chunk", self.last_chunk)
            .num("events", self.events)
            .num("gap_ids", self.gap_ids)
            .num("gap_incidents", self.gap_incidents)
            .num("gap_conns", self.gap_conns)
            .num("dups", self.dups)
            .num("heartbeats", self.heartbeats)
            .num("history_lost", self.history_lost)
            .num("first_id_min", self.first.min_or0())
            .num("first_id_max", self.first.max)
            .num("last_id_min", self.last.min_or0())
            .num("last_id_max", self.last.max)
            .num("first_seq_min", self.first_seq.min_or0())
            .num("first_seq_max", self.first_seq.max)
            .num("last_seq_min", self.last_seq.min_or0())
            .num("last_seq_max", self.last_seq.max)
            .num("count_min", self.count.min_or0())
            .num("count_max", self.count.max)
            .f(
                "eof_spread_s",
                if self.eof_at.n > 0 {
                    (self.eof_at.max - self.eof_at.min) as f64 / 1e9
                } else {
                    0.0
                },
            )
            .hist_ms("lat", &self.lat);
    }
}

pub fn run(a: &Args) {
    let addr = a.addr();
    let channel = a.str("channel", "faults");
    let n = a.u64("n", 10);
    let duration = a.f64("duration", 10.0);
    let rcvbuf = a
        .opt("rcvbuf")
        .map(|v| v.parse::<usize>().unwrap_or_else(|_| die("--rcvbuf")));
    let noread = a.flag("noread");
    let lat = a.flag("lat");
    let last_id = a.opt("last-id");
    let waves = a.u64("waves", 1).max(1);
    let batch = a.u64("batch", 256);
    let wave_every = a.f64("wave-every", duration / waves as f64);
    let exit_when_closed = a.flag("exit-when-closed");
    let ready_file = a.opt("ready-file");
    let records = a.opt("records");
    let ack_file = a.opt("ack-file");
    let settle_ns = (a.f64("settle-timeout", 5.0) * 1e9) as u64;
    let srcs: Vec<Option<Ipv4Addr>> = a.src_ips();
    let req = request(&channel, last_id.as_deref());

    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(4096);
    let mut conns: Slab<SubConn> = Slab::new();
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 256 * 1024];
    let t0 = now_ns();
    let end = t0 + (duration * 1e9) as u64;
    let mut wave = 0u64;
    let mut to_open = 0u64;
    let mut next_src = 0usize;
    let mut connecting = 0u64;
    let mut ready_written = false;
    let mut rec: Vec<String> = Vec::new();
    // After a stop with --ack-file: (id to reach, deadline).
    let mut drain: Option<(u64, u64)> = None;
    let mut ended_by = "duration";
    let mut tail_wait = 0u64;

    loop {
        let now = now_ns();
        if now >= end {
            break;
        }
        if stopped() && drain.is_none() {
            let want = ack_file
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
            drain = Some((want, now + settle_ns));
            ended_by = "signal";
        }
        if let Some((want, deadline)) = drain {
            let short = conns.iter().any(|(_, c)| {
                !c.noread && c.sse.status == 200 && c.sse.last_id.is_none_or(|l| l < want)
            });
            if !short || now >= deadline {
                tail_wait = now - (deadline - settle_ns);
                break;
            }
        }
        while drain.is_none() && wave < waves && now >= t0 + (wave_every * 1e9 * wave as f64) as u64
        {
            wave += 1;
            to_open += n;
        }
        while to_open > 0 && connecting < batch {
            let src = srcs[next_src % srcs.len()];
            next_src += 1;
            to_open -= 1;
            match connect(addr, src, rcvbuf) {
                Ok(s) => {
                    let e = conns.vacant_entry();
                    let key = e.key();
                    let mut c = SubConn::new(s, now, req.clone(), Sse::new(lat), noread, 0);
                    poll.registry()
                        .register(
                            &mut c.stream,
                            Token(key),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .unwrap();
                    e.insert(c);
                    connecting += 1;
                }
                Err(_) => {
                    tally.opened += 1;
                    tally.connect_fail += 1;
                }
            }
        }
        if !ready_written && to_open == 0 && wave >= 1 {
            // Ready once every first-wave subscriber has its response head.
            let heads = conns
                .iter()
                .filter(|(_, c)| c.sse.head.is_some() || (c.noread && c.req_pos == c.req.len()))
                .count() as u64;
            if heads + tally.opened >= n {
                ready_written = true;
                if let Some(p) = &ready_file {
                    write_ready(p, &format!("{heads}\n"));
                }
            }
        }
        if exit_when_closed && to_open == 0 && wave >= waves && conns.is_empty() {
            ended_by = "closed";
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(20))) {
            if e.kind() != io::ErrorKind::Interrupted {
                die(&format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
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
                let c = conns.remove(key);
                if records.is_some() {
                    rec.push(record(&c));
                }
                tally.add(&c);
            }
        }
    }
    let want = drain.map_or(0, |(w, _)| w);
    let tail_missing = conns
        .iter()
        .filter(|(_, c)| !c.noread && c.sse.status == 200 && c.sse.last_id.is_none_or(|l| l < want))
        .count();
    for (_, c) in conns.iter() {
        if records.is_some() {
            rec.push(record(c));
        }
        tally.add(c);
    }
    if let Some(p) = &records {
        let _ = std::fs::write(p, rec.join(""));
    }
    let mut j = Json::default();
    j.num("target", n * waves)
        .s("ended_by", ended_by)
        .num("tail_want_id", want)
        .num("tail_missing", tail_missing)
        .f("tail_wait_ms", tail_wait as f64 / 1e6);
    tally.json(&mut j);
    println!("{}", j.done());
}

pub fn record(c: &SubConn) -> String {
    format!(
        "{} {} {} {} {} {} {} {} {:?} {} {}\n",
        c.t_head,
        if c.t_end == 0 { now_ns() } else { c.t_end },
        c.sse.status,
        c.sse.first_id.unwrap_or(0),
        c.sse.last_id.unwrap_or(0),
        c.sse.events,
        c.sse.gap_ids,
        c.sse.dups,
        c.end,
        c.sse.history_lost.is_some() as u8,
        c.want
    )
}
