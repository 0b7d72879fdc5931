//! A subscriber worker process: holds up to `--per-worker` SSE streams in one
//! mio loop, parses them, and answers the coordinator's line commands on stdin
//! (`stat`, `finish SENT FAILED,SEQS`) with JSON lines on stdout.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};

use crate::args::Config;
use crate::hist::Hist;
use crate::http::{parse_head, Framing};
use crate::net::{connect_nb, err_name, would_block};
use crate::owner::owners;
use crate::procstat::{now_ns, self_cpu_ns};
use crate::seqtrack::SeqTrack;
use crate::sse::{json_u64, Item, Parser};

const STDIN: Token = Token(0);
const MAX_HEAD: usize = 16 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Connecting,
    Sending,
    Head,
    Streaming,
    Closed,
}

struct Sub {
    stream: Option<TcpStream>,
    phase: Phase,
    sent: usize,
    head: Vec<u8>,
    body: Framing,
    sse: Parser,
    seq: SeqTrack,
    connected: bool,
    started: u64,
    /// Index in `--server-pid` of the process holding the other end
    /// (`--by-server-pid`), once known.
    group: Option<usize>,
}

/// What the subscribers served by one server process received.
#[derive(Default)]
struct Group {
    subs: u64,
    deliveries: u64,
    unique: u64,
    hist: Hist,
    first_rx: u64,
    last_rx: u64,
}

/// Counters of what the streams carried.
#[derive(Default)]
struct Stats {
    hist: Hist,
    deliveries: u64,
    unique: u64,
    heartbeats: u64,
    other_events: u64,
    retries: u64,
    retry_max_ms: u64,
    first_rx: u64,
    last_rx: u64,
    groups: Vec<Group>,
}

impl Stats {
    fn on_item(&mut self, item: Item<'_>, seq: &mut SeqTrack, group: Option<usize>, now: u64) {
        match item {
            Item::Event { data } => {
                match (json_u64(data, b"\"seq\":"), json_u64(data, b"\"t\":")) {
                    (Some(s), Some(t)) => {
                        self.hist.record(now.saturating_sub(t));
                        self.deliveries += 1;
                        let before = seq.unique;
                        seq.on(s, json_u64(data, b"\"a\":").unwrap_or(s));
                        let fresh = seq.unique - before;
                        self.unique += fresh;
                        if self.first_rx == 0 {
                            self.first_rx = now;
                        }
                        self.last_rx = now;
                        if let Some(g) = group.and_then(|g| self.groups.get_mut(g)) {
                            g.hist.record(now.saturating_sub(t));
                            g.deliveries += 1;
                            g.unique += fresh;
                            if g.first_rx == 0 {
                                g.first_rx = now;
                            }
                            g.last_rx = now;
                        }
                    }
                    _ => self.other_events += 1,
                }
            }
            Item::Comment => self.heartbeats += 1,
            Item::Retry(ms) => {
                self.retries += 1;
                self.retry_max_ms = self.retry_max_ms.max(ms);
            }
        }
    }
}

/// Feeds raw body bytes through the framing and SSE parser. True when the
/// server ended the body.
fn deliver(sub: &mut Sub, stats: &mut Stats, data: &[u8], now: u64) -> Result<bool, String> {
    let Sub {
        body,
        sse,
        seq,
        group,
        ..
    } = sub;
    let group = *group;
    body.feed(data, &mut |chunk| {
        sse.feed(chunk, &mut |item| stats.on_item(item, seq, group, now))
    })
}

struct Worker<'a> {
    cfg: &'a Config,
    first_global: usize,
    poll: Poll,
    subs: Vec<Sub>,
    req: Vec<u8>,
    buf: Vec<u8>,
    next_open: usize,
    inflight: usize,
    deadlines: VecDeque<(usize, u64)>,
    ok: usize,
    resolved: usize,
    failed: BTreeMap<String, u64>,
    first_attempt: u64,
    last_header: u64,
    connect_reported: bool,
    live: usize,
    disconnects: BTreeMap<String, u64>,
    stats: Stats,
    connect_hist: Hist,
    stdin_buf: Vec<u8>,
}

fn emit(v: &Value) {
    let mut out = io::stdout().lock();
    // The coordinator reads these; if it is gone there is nobody to tell.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn map_json(m: &BTreeMap<String, u64>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

impl Worker<'_> {
    fn open_more(&mut self) {
        while self.inflight < self.cfg.connect_concurrency && self.next_open < self.subs.len() {
            let idx = self.next_open;
            self.next_open += 1;
            let now = now_ns();
            if self.first_attempt == 0 {
                self.first_attempt = now;
            }
            let src = self.cfg.source_for(self.first_global + idx);
            let dst = self.cfg.sub_server_for(self.first_global + idx);
            match connect_nb(dst, src) {
                Ok(mut s) => {
                    let reg = self.poll.registry().register(
                        &mut s,
                        Token(idx + 1),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if let Err(e) = reg {
                        self.resolve_fail(idx, format!("register {}", err_name(&e)));
                        continue;
                    }
                    let sub = &mut self.subs[idx];
                    sub.stream = Some(s);
                    sub.phase = Phase::Connecting;
                    sub.started = now;
                    self.inflight += 1;
                    let deadline = now + self.cfg.connect_timeout.as_nanos() as u64;
                    self.deadlines.push_back((idx, deadline));
                }
                Err(e) => self.resolve_fail(idx, format!("connect {}", err_name(&e))),
            }
        }
    }

    /// A subscriber that never got its headers.
    fn resolve_fail(&mut self, idx: usize, reason: String) {
        let sub = &mut self.subs[idx];
        if matches!(sub.phase, Phase::Connecting | Phase::Sending | Phase::Head) {
            self.inflight -= 1;
        }
        sub.phase = Phase::Closed;
        sub.stream = None;
        sub.head = Vec::new();
        *self.failed.entry(reason).or_default() += 1;
        self.resolved += 1;
    }

    /// A connected subscriber whose stream ended.
    fn disconnect(&mut self, idx: usize, reason: String) {
        let sub = &mut self.subs[idx];
        sub.phase = Phase::Closed;
        sub.stream = None;
        self.live -= 1;
        *self.disconnects.entry(reason).or_default() += 1;
    }

    fn on_event(&mut self, idx: usize) {
        if self.subs[idx].phase == Phase::Connecting {
            self.finish_connect(idx);
        }
        if self.subs[idx].phase == Phase::Sending {
            self.send_request(idx);
        }
        if self.subs[idx].phase == Phase::Head {
            self.read_head(idx);
        }
        if self.subs[idx].phase == Phase::Streaming {
            self.read_stream(idx);
        }
    }

    fn finish_connect(&mut self, idx: usize) {
        let Some(s) = self.subs[idx].stream.as_ref() else {
            return;
        };
        match s.take_error() {
            Ok(Some(e)) | Err(e) => {
                return self.resolve_fail(idx, format!("connect {}", err_name(&e)))
            }
            Ok(None) => {}
        }
        match s.peer_addr() {
            Ok(_) => self.subs[idx].phase = Phase::Sending,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => self.resolve_fail(idx, format!("connect {}", err_name(&e))),
        }
    }

    fn send_request(&mut self, idx: usize) {
        let sub = &mut self.subs[idx];
        let Some(s) = sub.stream.as_mut() else {
            return;
        };
        while sub.sent < self.req.len() {
            match s.write(&self.req[sub.sent..]) {
                Ok(n) => sub.sent += n,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.resolve_fail(idx, format!("write {}", err_name(&e))),
            }
        }
        sub.phase = Phase::Head;
    }

    fn read_head(&mut self, idx: usize) {
        loop {
            let sub = &mut self.subs[idx];
            let Some(s) = sub.stream.as_mut() else {
                return;
            };
            let n = match s.read(&mut self.buf) {
                Ok(0) => return self.resolve_fail(idx, "closed before headers".into()),
                Ok(n) => n,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    return self.resolve_fail(idx, "reset".into())
                }
                Err(e) => return self.resolve_fail(idx, format!("read {}", err_name(&e))),
            };
            sub.head.extend_from_slice(&self.buf[..n]);
            let head = match parse_head(&sub.head, false) {
                Ok(Some(h)) => h,
                Ok(None) if sub.head.len() > MAX_HEAD => {
                    return self.resolve_fail(idx, "headers too large".into())
                }
                Ok(None) => continue,
                Err(_) => return self.resolve_fail(idx, "bad response".into()),
            };
            if head.status != 200 {
                return self.resolve_fail(idx, format!("status {}", head.status));
            }
            let now = now_ns();
            let rest = sub.head.split_off(head.len);
            sub.head = Vec::new();
            sub.body = head.framing;
            sub.phase = Phase::Streaming;
            sub.connected = true;
            self.inflight -= 1;
            self.resolved += 1;
            self.ok += 1;
            self.live += 1;
            self.last_header = self.last_header.max(now);
            self.connect_hist.record(now.saturating_sub(sub.started));
            match deliver(&mut self.subs[idx], &mut self.stats, &rest, now) {
                Ok(false) => {}
                Ok(true) => return self.disconnect(idx, "stream ended".into()),
                Err(e) => return self.disconnect(idx, e),
            }
            return;
        }
    }

    fn read_stream(&mut self, idx: usize) {
        loop {
            let Some(s) = self.subs[idx].stream.as_mut() else {
                return;
            };
            let n = match s.read(&mut self.buf) {
                Ok(0) => return self.disconnect(idx, "closed by server".into()),
                Ok(n) => n,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    return self.disconnect(idx, "reset".into())
                }
                Err(e) => return self.disconnect(idx, format!("read {}", err_name(&e))),
            };
            let now = now_ns();
            match deliver(&mut self.subs[idx], &mut self.stats, &self.buf[..n], now) {
                Ok(false) => {}
                Ok(true) => return self.disconnect(idx, "stream ended".into()),
                Err(e) => return self.disconnect(idx, e),
            }
        }
    }

    fn check_timeouts(&mut self) {
        let now = now_ns();
        while let Some(&(idx, deadline)) = self.deadlines.front() {
            let pending = matches!(
                self.subs[idx].phase,
                Phase::Connecting | Phase::Sending | Phase::Head
            );
            if !pending {
                self.deadlines.pop_front();
            } else if deadline <= now {
                self.deadlines.pop_front();
                self.resolve_fail(idx, "timeout".into());
            } else {
                break;
            }
        }
    }

    /// `--by-server-pid`: which server process serves each subscriber.
    fn find_owners(&mut self) {
        let pids = &self.cfg.server_pids;
        self.stats.groups = pids.iter().map(|_| Group::default()).collect();
        let ours: Vec<Option<SocketAddrV4>> = self
            .subs
            .iter()
            .map(|s| match s.stream.as_ref().map(|t| t.local_addr()) {
                Some(Ok(SocketAddr::V4(a))) => Some(a),
                _ => None,
            })
            .collect();
        let found = owners(&self.cfg.sub_servers, pids, &ours);
        for (sub, g) in self.subs.iter_mut().zip(found) {
            sub.group = g;
            if let Some(g) = g {
                self.stats.groups[g].subs += 1;
            }
        }
    }

    /// Per server process (index in `--server-pid`): subscribers and, with
    /// `sent`, what they received (`lost` computed as in `final_json`).
    fn groups_json(&self, sent: Option<(u64, &[u64])>) -> Value {
        let v: Vec<Value> = self
            .stats
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let mut o = json!({
                    "pid": self.cfg.server_pids.get(i),
                    "subs": g.subs,
                    "deliveries": g.deliveries,
                    "unique": g.unique,
                    "first_rx_ns": g.first_rx,
                    "last_rx_ns": g.last_rx,
                    "hist": g.hist.to_sparse(),
                });
                if let Some((sent, failed)) = sent {
                    let lost: u64 = self
                        .subs
                        .iter()
                        .filter(|s| s.connected && s.group == Some(i))
                        .map(|s| s.seq.lost(sent, failed))
                        .sum();
                    o["lost"] = json!(lost);
                }
                o
            })
            .collect();
        Value::Array(v)
    }

    fn stat_json(&self, kind: &str) -> Value {
        json!({
            "type": kind,
            "deliveries": self.stats.deliveries,
            "unique": self.stats.unique,
            "heartbeats": self.stats.heartbeats,
            "other_events": self.stats.other_events,
            "retries": self.stats.retries,
            "retry_max_ms": self.stats.retry_max_ms,
            "first_rx_ns": self.stats.first_rx,
            "last_rx_ns": self.stats.last_rx,
            "live": self.live,
            "disconnects": map_json(&self.disconnects),
            "cpu_ns": self_cpu_ns(),
        })
    }

    fn final_json(&self, sent: u64, failed: &[u64]) -> Value {
        let (mut lost, mut dup, mut ooo, mut reord) = (0u64, 0u64, 0u64, 0u64);
        let (mut subs_lost, mut subs_dup, mut subs_ooo, mut max_lost) = (0u64, 0u64, 0u64, 0u64);
        for sub in self.subs.iter().filter(|s| s.connected) {
            let l = sub.seq.lost(sent, failed);
            lost += l;
            max_lost = max_lost.max(l);
            subs_lost += u64::from(l > 0);
            dup += sub.seq.duplicated;
            subs_dup += u64::from(sub.seq.duplicated > 0);
            ooo += sub.seq.out_of_order;
            reord += sub.seq.reordered;
            subs_ooo += u64::from(sub.seq.out_of_order > 0);
        }
        let mut v = self.stat_json("final");
        if let Value::Object(m) = &mut v {
            m.insert("lost".into(), json!(lost));
            m.insert("subs_with_loss".into(), json!(subs_lost));
            m.insert("max_lost_per_sub".into(), json!(max_lost));
            m.insert("duplicated".into(), json!(dup));
            m.insert("subs_with_dup".into(), json!(subs_dup));
            m.insert("out_of_order".into(), json!(ooo));
            m.insert("subs_with_ooo".into(), json!(subs_ooo));
            m.insert("reordered_concurrent".into(), json!(reord));
            m.insert("hist".into(), self.stats.hist.to_sparse());
            m.insert("groups".into(), self.groups_json(Some((sent, failed))));
        }
        v
    }

    /// Handles commands; returns false when the worker should exit.
    fn on_stdin(&mut self) -> bool {
        let mut tmp = [0u8; 4096];
        loop {
            // SAFETY: reading into a local buffer from our own stdin (a pipe;
            // not through std's buffered Stdin, which would hide bytes from epoll).
            let r = unsafe { libc::read(0, tmp.as_mut_ptr().cast(), tmp.len()) };
            if r == 0 {
                return false;
            }
            if r > 0 {
                self.stdin_buf.extend_from_slice(&tmp[..r as usize]);
                continue;
            }
            let e = io::Error::last_os_error();
            if would_block(&e) {
                break;
            }
            if e.kind() != io::ErrorKind::Interrupted {
                return false;
            }
        }
        while let Some(pos) = self.stdin_buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.stdin_buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let mut words = line.split_whitespace();
            match words.next() {
                Some("stat") => emit(&self.stat_json("stat")),
                Some("finish") => {
                    let sent = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                    let mut failed: Vec<u64> = words
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .filter_map(|w| w.parse().ok())
                        .collect();
                    failed.sort_unstable();
                    emit(&self.final_json(sent, &failed));
                    return false;
                }
                _ => {}
            }
        }
        true
    }
}

/// Entry point of `sse-load __worker INDEX FIRST COUNT <flags>`.
pub fn run(cfg: &Config, first_global: usize, count: usize) -> Result<(), String> {
    let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let fd0 = io::stdin().as_raw_fd();
    // SAFETY: fcntl on our own stdin.
    unsafe {
        let fl = libc::fcntl(fd0, libc::F_GETFL);
        libc::fcntl(fd0, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    poll.registry()
        .register(&mut SourceFd(&fd0), STDIN, Interest::READABLE)
        .map_err(|e| format!("register stdin: {e}"))?;
    let subs = (0..count)
        .map(|_| Sub {
            stream: None,
            phase: Phase::Waiting,
            sent: 0,
            head: Vec::new(),
            body: Framing::Close,
            sse: Parser::default(),
            seq: SeqTrack::default(),
            connected: false,
            started: 0,
            group: None,
        })
        .collect();
    let mut w = Worker {
        cfg,
        first_global,
        poll,
        subs,
        req: cfg.subscribe_request(),
        buf: vec![0; 256 * 1024],
        next_open: 0,
        inflight: 0,
        deadlines: VecDeque::new(),
        ok: 0,
        resolved: 0,
        failed: BTreeMap::new(),
        first_attempt: 0,
        last_header: 0,
        connect_reported: false,
        live: 0,
        disconnects: BTreeMap::new(),
        stats: Stats::default(),
        connect_hist: Hist::new(),
        stdin_buf: Vec::new(),
    };
    let mut events = Events::with_capacity(1024);
    loop {
        w.open_more();
        if !w.connect_reported && w.resolved == w.subs.len() {
            w.connect_reported = true;
            if cfg.by_server_pid {
                w.find_owners();
            }
            emit(&json!({
                "type": "connected",
                "ok": w.ok,
                "failed": map_json(&w.failed),
                "first_ns": w.first_attempt,
                "last_ns": w.last_header,
                "hist": w.connect_hist.to_sparse(),
                "cpu_ns": self_cpu_ns(),
                "groups": w.groups_json(None),
            }));
        }
        match w.poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        for ev in events.iter() {
            match ev.token() {
                STDIN => {
                    if !w.on_stdin() {
                        return Ok(());
                    }
                }
                Token(t) => w.on_event(t - 1),
            }
        }
        w.check_timeouts();
    }
}
