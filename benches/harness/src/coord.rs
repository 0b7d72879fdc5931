//! The coordinator of `run` and `idle`: spawns subscriber workers, publishes,
//! samples the server's memory and CPU between phases, and assembles the report.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};

use crate::args::Config;
use crate::hist::Hist;
use crate::procstat::{cores_busy, cpu_jiffies, now_ns, procs_cpu_ns, procs_mem, self_cpu_ns, Mem};
use crate::publish::{Inflight, Outcome, Publisher};
use crate::ramp;
use crate::report::{self, Phases};

const PUB_BASE: usize = 1 << 20;

pub struct WorkerProc {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    buf: Vec<u8>,
    pub connected: Option<Value>,
    pub stat: Option<Value>,
    stat_gen: u64,
    pub fin: Option<Value>,
    eof: bool,
}

/// What the publish phase measured.
#[derive(Default)]
pub struct PublishResult {
    pub attempted: u64,
    pub acked: u64,
    pub requests: u64,
    pub failed_seqs: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
    pub rtt: Hist,
    pub first_send: u64,
    pub last_ack: u64,
    pub late_sends: u64,
    pub max_late_ns: u64,
    pub drained: bool,
    pub publishers_dead: usize,
}

pub struct Coord<'a> {
    pub cfg: &'a Config,
    poll: Poll,
    events: Events,
    pub workers: Vec<WorkerProc>,
    pubs: Vec<Publisher>,
    pub deadline: u64,
}

fn worker_counts(total: usize, per: usize) -> Vec<usize> {
    if total == 0 {
        return vec![];
    }
    let n = total.div_ceil(per);
    (0..n)
        .map(|i| total / n + usize::from(i < total % n))
        .collect()
}

fn sum_u64(vals: &[&Value], key: &str) -> u64 {
    vals.iter().filter_map(|v| v.get(key)?.as_u64()).sum()
}

impl<'a> Coord<'a> {
    fn new(cfg: &'a Config) -> Result<Coord<'a>, String> {
        Ok(Coord {
            cfg,
            poll: Poll::new().map_err(|e| format!("epoll: {e}"))?,
            events: Events::with_capacity(256),
            workers: Vec::new(),
            pubs: Vec::new(),
            deadline: now_ns() + cfg.duration.as_nanos() as u64,
        })
    }

    fn spawn_workers(&mut self, raw_args: &[String]) -> Result<(), String> {
        let mut first = 0;
        for count in worker_counts(self.cfg.subscribers, self.cfg.per_worker) {
            self.spawn_worker(raw_args, first, count)?;
            first += count;
        }
        Ok(())
    }

    /// Starts one worker for subscribers `first..first+count`.
    fn spawn_worker(
        &mut self,
        raw_args: &[String],
        first: usize,
        count: usize,
    ) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let i = self.workers.len();
        let mut child = Command::new(&exe)
            .arg("__worker")
            .arg(first.to_string())
            .arg(count.to_string())
            .args(raw_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn worker: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("worker pipes missing".into());
        };
        let fd = stdout.as_raw_fd();
        // SAFETY: fcntl on a pipe we own.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
            .map_err(|e| format!("register worker: {e}"))?;
        self.workers.push(WorkerProc {
            child,
            stdin,
            stdout,
            buf: Vec::new(),
            connected: None,
            stat: None,
            stat_gen: 0,
            fin: None,
            eof: false,
        });
        Ok(())
    }

    /// `--ramp`: one worker at a time, each after the previous one's connect
    /// phase, with a reading of the machine after each (`ramp::Sample`).
    /// Stops early when MemAvailable falls under `--min-available-mib`, when
    /// a step had failed subscribers, or at the run's cap. Returns the
    /// subscribers asked for (those of the workers started) and the readings.
    fn ramp(&mut self, raw_args: &[String]) -> Result<(usize, Value), String> {
        let pids = self.cfg.server_pids.clone();
        let mut samples = vec![ramp::sample(0, &pids, &[])];
        let mut stopped_by = "target reached".to_string();
        let mut first = 0;
        let floor_kb = self.cfg.min_available_mib * 1024;
        let counts = worker_counts(self.cfg.subscribers, self.cfg.per_worker);
        // Keep time for what follows the ramp (settle, hold, the publishes
        // at --rate, the drain), so a ramp that slows down still ends in a
        // measured hold and publish rather than in the run's cap.
        let cfg = self.cfg;
        let publishing = if cfg.rate > 0.0 {
            cfg.events as f64 / cfg.rate
        } else {
            0.0
        };
        let reserve = cfg.settle.as_secs_f64()
            + cfg.hold.as_secs_f64()
            + publishing
            + cfg.drain_timeout.as_secs_f64()
            + 30.0;
        let ramp_end = self.deadline.saturating_sub((reserve * 1e9) as u64);
        for (step, count) in counts.iter().enumerate() {
            if now_ns() >= ramp_end {
                stopped_by = format!(
                    "the ramp's time ran out before step {} (it keeps {reserve:.0}s of --duration for the hold and the publishes)",
                    step + 1
                );
                break;
            }
            let avail = ramp::mem_available_kb();
            if floor_kb > 0 && avail.is_some_and(|a| a < floor_kb) {
                stopped_by = format!(
                    "MemAvailable {} MiB under --min-available-mib {}",
                    avail.unwrap_or(0) / 1024,
                    self.cfg.min_available_mib
                );
                break;
            }
            let t0 = now_ns();
            self.spawn_worker(raw_args, first, *count)?;
            self.wait_connected_until(ramp_end);
            if self.workers.last().is_some_and(|w| w.connected.is_none()) {
                // Still connecting when the ramp's time ran out: end it (its
                // subscribers close) and measure the ones before it.
                if let Some(mut w) = self.workers.pop() {
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                }
                stopped_by = format!(
                    "step {} had not connected its {count} subscribers after {:.0}s when the ramp's time ran out (it keeps {reserve:.0}s of --duration for the hold and the publishes); that worker was ended",
                    step + 1,
                    (now_ns() - t0) as f64 / 1e9
                );
                break;
            }
            first += count;
            let ok: u64 = self
                .workers
                .iter()
                .filter_map(|w| w.connected.as_ref()?.get("ok")?.as_u64())
                .sum();
            let kids: Vec<u32> = self.workers.iter().map(|w| w.child.id()).collect();
            let s = ramp::sample(ok, &pids, &kids);
            eprintln!("sse-load ramp: step {} {}", step + 1, ramp::line(&s));
            samples.push(s);
            let last = self.workers.last().and_then(|w| w.connected.as_ref());
            let step_ok = last.and_then(|c| c.get("ok")?.as_u64()).unwrap_or(0);
            if step_ok < *count as u64 {
                let why = last.map(|c| c["failed"].clone()).unwrap_or(Value::Null);
                stopped_by = format!("step {} connected {step_ok} of {count}: {why}", step + 1);
                break;
            }
        }
        Ok((first, json!({"stopped_by": stopped_by, "samples": samples})))
    }

    /// One poll turn: worker messages and publisher traffic.
    fn pump(&mut self, timeout: Duration, outcomes: &mut Vec<Outcome>) {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) => {
                eprintln!("sse-load: poll: {e}");
                return;
            }
        }
        let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
        for t in tokens {
            if t.0 >= PUB_BASE {
                let registry = self.poll.registry();
                if let Some(p) = self.pubs.get_mut(t.0 - PUB_BASE) {
                    if let Some(o) = p.on_event(registry) {
                        outcomes.push(o);
                    }
                }
            } else if let Some(w) = self.workers.get_mut(t.0) {
                read_worker(w);
            }
        }
    }

    fn pump_for(&mut self, d: Duration) {
        let end = now_ns() + d.as_nanos() as u64;
        let mut sink = Vec::new();
        loop {
            let now = now_ns();
            if now >= end {
                break;
            }
            self.pump(
                Duration::from_nanos((end - now).min(100_000_000)),
                &mut sink,
            );
        }
    }

    fn send_all(&mut self, line: &str) {
        for w in &mut self.workers {
            // A worker that died shows up as EOF on its stdout.
            let _ = w.stdin.write_all(line.as_bytes());
            let _ = w.stdin.flush();
        }
    }

    fn alive(w: &WorkerProc) -> bool {
        !w.eof
    }

    /// Waits until every worker reported its connect phase (or died).
    fn wait_connected(&mut self) {
        self.wait_connected_until(self.deadline);
    }

    /// `wait_connected` with its own time limit.
    fn wait_connected_until(&mut self, limit: u64) {
        let mut sink = Vec::new();
        while now_ns() < limit
            && self
                .workers
                .iter()
                .any(|w| w.connected.is_none() && Self::alive(w))
        {
            self.pump(Duration::from_millis(100), &mut sink);
        }
    }

    /// Asks every worker for its counters and waits for the answers.
    pub fn query_stats(&mut self) -> Vec<Value> {
        let gens: Vec<u64> = self.workers.iter().map(|w| w.stat_gen).collect();
        self.send_all("stat\n");
        let limit = now_ns() + 10_000_000_000;
        let mut sink = Vec::new();
        while now_ns() < limit
            && self
                .workers
                .iter()
                .zip(&gens)
                .any(|(w, g)| w.stat_gen == *g && Self::alive(w))
        {
            self.pump(Duration::from_millis(50), &mut sink);
        }
        self.workers.iter().filter_map(|w| w.stat.clone()).collect()
    }

    fn finish_workers(&mut self, sent: u64, failed: &[u64]) {
        let list: Vec<String> = failed.iter().map(u64::to_string).collect();
        self.send_all(&format!("finish {sent} {}\n", list.join(",")));
        let limit = now_ns() + 30_000_000_000;
        let mut sink = Vec::new();
        while now_ns() < limit
            && self
                .workers
                .iter()
                .any(|w| w.fin.is_none() && Self::alive(w))
        {
            self.pump(Duration::from_millis(50), &mut sink);
        }
        for w in &mut self.workers {
            if w.fin.is_none() {
                let _ = w.child.kill();
            }
            let _ = w.child.wait();
        }
    }

    /// Client CPU so far: this process plus the workers' last reports.
    fn client_cpu(&self, stats: &[Value]) -> u64 {
        let refs: Vec<&Value> = stats.iter().collect();
        self_cpu_ns() + sum_u64(&refs, "cpu_ns")
    }

    fn connect_publishers(&mut self) -> Result<(), String> {
        for j in 0..self.cfg.publishers {
            let p = Publisher::new(
                self.cfg.pub_server,
                Token(PUB_BASE + j),
                self.poll.registry(),
            );
            self.pubs.push(p);
        }
        let limit = now_ns() + 5_000_000_000;
        let mut sink = Vec::new();
        while now_ns() < limit && !self.pubs.iter().all(|p| p.is_idle() || p.is_dead()) {
            self.pump(Duration::from_millis(20), &mut sink);
        }
        if self.pubs.iter().any(Publisher::is_idle) {
            Ok(())
        } else {
            let why = self
                .pubs
                .iter()
                .find_map(|p| p.last_error.clone())
                .unwrap_or_else(|| "timeout".into());
            Err(format!("no publisher connection: {why}"))
        }
    }

    fn publish(&mut self) -> PublishResult {
        let cfg = self.cfg;
        let mut r = PublishResult::default();
        let mut next: u64 = 0;
        let mut outcomes = Vec::new();
        let t0 = now_ns();
        r.first_send = t0;
        let period = if cfg.rate > 0.0 { 1e9 / cfg.rate } else { 0.0 };
        // Publish order as the server must see it: every event below
        // `answered` got its answer before the next request was sent.
        let mut done = vec![false; cfg.events.min(1 << 32) as usize];
        let mut answered: u64 = 0;
        loop {
            let now = now_ns();
            let stop = now >= self.deadline;
            if !stop {
                for p in self.pubs.iter_mut() {
                    if next >= cfg.events {
                        break;
                    }
                    if p.is_dead() {
                        p.revive(self.poll.registry());
                    }
                    if !p.is_idle() {
                        continue;
                    }
                    let due = t0 + (next as f64 * period) as u64;
                    let now = now_ns();
                    if now < due {
                        break;
                    }
                    if period > 0.0 && now - due > period as u64 {
                        r.late_sends += 1;
                        r.max_late_ns = r.max_late_ns.max(now - due);
                    }
                    let count = (cfg.events - next).min(cfg.batch as u64) as usize;
                    let t = now_ns();
                    let req = cfg.publish_request(next, count, t, answered);
                    let inflight = Inflight {
                        first: next,
                        count,
                        sent_ns: t,
                    };
                    next += count as u64;
                    r.requests += 1;
                    if let Some(o) = p.send(req, inflight) {
                        outcomes.push(o);
                    }
                }
            }
            let busy = self.pubs.iter().any(Publisher::is_busy);
            if (next >= cfg.events || stop) && !busy && outcomes.is_empty() {
                break;
            }
            if stop && now >= self.deadline + 5_000_000_000 {
                break;
            }
            if self.pubs.iter().all(|p| p.is_dead() && p.reconnects >= 50) {
                break;
            }
            let wait = if period > 0.0 && next < cfg.events {
                let due = t0 + (next as f64 * period) as u64;
                Duration::from_nanos(due.saturating_sub(now_ns()).min(50_000_000))
            } else {
                Duration::from_millis(50)
            };
            self.pump(wait, &mut outcomes);
            for o in outcomes.drain(..) {
                let now = now_ns();
                let (Outcome::Answered { inflight, .. } | Outcome::Failed { inflight, .. }) = &o;
                for seq in inflight.first..inflight.first + inflight.count as u64 {
                    if let Some(d) = done.get_mut(seq as usize) {
                        *d = true;
                    }
                }
                while done.get(answered as usize) == Some(&true) {
                    answered += 1;
                }
                match o {
                    Outcome::Answered { inflight, status } => {
                        r.rtt.record(now.saturating_sub(inflight.sent_ns));
                        r.last_ack = now;
                        if (200..300).contains(&status) {
                            r.acked += inflight.count as u64;
                        } else {
                            *r.errors.entry(format!("status {status}")).or_default() +=
                                inflight.count as u64;
                            r.failed_seqs
                                .extend(inflight.first..inflight.first + inflight.count as u64);
                        }
                    }
                    Outcome::Failed { inflight, reason } => {
                        *r.errors.entry(reason).or_default() += inflight.count as u64;
                        r.failed_seqs
                            .extend(inflight.first..inflight.first + inflight.count as u64);
                    }
                }
            }
        }
        r.attempted = next;
        r.publishers_dead = self.pubs.iter().filter(|p| p.is_dead()).count();
        r
    }

    /// Waits until every live subscriber has every acknowledged event, or no
    /// progress for `--drain-timeout`, or the run's cap (+5 s for the tail).
    fn drain(&mut self, acked: u64) -> (bool, Vec<Value>) {
        let mut last_total = u64::MAX;
        let mut last_change = now_ns();
        loop {
            let stats = self.query_stats();
            let refs: Vec<&Value> = stats.iter().collect();
            let unique = sum_u64(&refs, "unique");
            let live = sum_u64(&refs, "live");
            let now = now_ns();
            if unique >= acked * live {
                return (true, stats);
            }
            if unique != last_total {
                last_total = unique;
                last_change = now;
            }
            if now - last_change >= self.cfg.drain_timeout.as_nanos() as u64
                || now >= self.deadline + 5_000_000_000
            {
                return (false, stats);
            }
            self.pump_for(Duration::from_millis(20));
        }
    }
}

fn read_worker(w: &mut WorkerProc) {
    let mut tmp = [0u8; 64 * 1024];
    loop {
        match w.stdout.read(&mut tmp) {
            Ok(0) => {
                w.eof = true;
                break;
            }
            Ok(n) => w.buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                w.eof = true;
                break;
            }
        }
    }
    while let Some(pos) = w.buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = w.buf.drain(..=pos).collect();
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("connected") => w.connected = Some(v),
            Some("stat") => {
                w.stat = Some(v);
                w.stat_gen += 1;
            }
            Some("final") => w.fin = Some(v),
            _ => {}
        }
    }
}

/// Quick reachability check before spawning anything.
fn probe(cfg: &Config) -> Result<(), String> {
    let mut addrs = vec![cfg.server];
    if cfg.pub_server != cfg.server && cfg.events > 0 {
        addrs.push(cfg.pub_server);
    }
    for a in &cfg.sub_servers {
        if !addrs.contains(a) {
            addrs.push(*a);
        }
    }
    for a in addrs {
        StdTcpStream::connect_timeout(&a.into(), Duration::from_secs(3))
            .map_err(|e| format!("server {a} unreachable: {e}"))?;
    }
    Ok(())
}

/// `run` and `idle`. Returns the process exit code.
pub fn run(cfg: &Config, raw_args: &[String]) -> i32 {
    let started = now_ns();
    if let Err(e) = probe(cfg) {
        return report::setup_failure(cfg, &e);
    }
    let mut c = match Coord::new(cfg) {
        Ok(c) => c,
        Err(e) => return report::setup_failure(cfg, &e),
    };
    let pids = &cfg.server_pids;
    let mut ph = Phases {
        mem_before: procs_mem(pids),
        ..Phases::default()
    };
    let cpu0 = procs_cpu_ns(pids);
    let client0 = self_cpu_ns();
    let j0 = cpu_jiffies();
    if cfg.ramp {
        match c.ramp(raw_args) {
            Ok((asked, r)) => {
                ph.requested = Some(asked);
                ph.ramp = Some(r);
            }
            Err(e) => return report::setup_failure(cfg, &e),
        }
    } else {
        if let Err(e) = c.spawn_workers(raw_args) {
            return report::setup_failure(cfg, &e);
        }
        c.wait_connected();
    }
    let conn_end = now_ns();
    ph.cores_connect = cores_busy(&j0, &cpu_jiffies());
    ph.server_cpu_connect = cpu0.zip(procs_cpu_ns(pids)).map(|(a, b)| b - a);
    ph.connected = c
        .workers
        .iter()
        .filter_map(|w| w.connected.clone())
        .collect();
    ph.client_cpu_connect = {
        let refs: Vec<&Value> = ph.connected.iter().collect();
        self_cpu_ns() - client0 + sum_u64(&refs, "cpu_ns")
    };
    ph.connect_wall_ns = conn_end - started;

    c.pump_for(cfg.settle);
    ph.mem_after = procs_mem(pids);

    if !cfg.hold.is_zero() {
        let s0 = c.query_stats();
        let cpu0 = procs_cpu_ns(pids);
        let cl0 = c.client_cpu(&s0);
        let j0 = cpu_jiffies();
        let t0 = now_ns();
        let hold = cfg
            .hold
            .min(Duration::from_nanos(c.deadline.saturating_sub(t0)));
        c.pump_for(hold);
        let s1 = c.query_stats();
        let t1 = now_ns();
        ph.hold = Some(report::Hold {
            wall_ns: t1 - t0,
            cores_busy_pct: cores_busy(&j0, &cpu_jiffies()),
            server_cpu_ns: cpu0.zip(procs_cpu_ns(pids)).map(|(a, b)| b - a),
            client_cpu_ns: c.client_cpu(&s1).saturating_sub(cl0),
            before: s0,
            after: s1,
        });
        ph.mem_after_hold = procs_mem(pids);
    }

    let mut publish = None;
    if cfg.events > 0 {
        if let Err(e) = c.connect_publishers() {
            ph.setup_error = Some(e);
        } else {
            let s0 = c.query_stats();
            let cpu0 = procs_cpu_ns(pids);
            let aux0 = procs_cpu_ns(&cfg.aux_pids);
            let cl0 = c.client_cpu(&s0);
            let j0 = cpu_jiffies();
            let w0 = now_ns();
            let r = c.publish();
            let (drained, s1) = c.drain(r.acked);
            ph.cores_publish = cores_busy(&j0, &cpu_jiffies());
            let cpu1 = procs_cpu_ns(pids);
            ph.publish_wall_ns = now_ns().saturating_sub(w0);
            ph.server_cpu_publish = cpu0.zip(cpu1).map(|(a, b)| b - a);
            ph.aux_cpu_publish = aux0.zip(procs_cpu_ns(&cfg.aux_pids)).map(|(a, b)| b - a);
            ph.client_cpu_publish = c.client_cpu(&s1).saturating_sub(cl0);
            ph.stats_before_publish = s0;
            ph.mem_after_publish = procs_mem(pids);
            publish = Some(PublishResult { drained, ..r });
        }
    }
    let (sent, failed) = publish
        .as_ref()
        .map(|p| (p.attempted, p.failed_seqs.clone()))
        .unwrap_or((0, Vec::new()));
    c.finish_workers(sent, &failed);
    ph.finals = c.workers.iter().filter_map(|w| w.fin.clone()).collect();
    ph.workers = c.workers.len();
    ph.workers_lost = c.workers.iter().filter(|w| w.fin.is_none()).count();
    ph.client_cpu_total = self_cpu_ns() + crate::procstat::children_cpu_ns();
    ph.wall_ns = now_ns() - started;
    report::emit(cfg, &ph, publish.as_ref())
}

/// For the report: a memory delta per subscriber in bytes.
pub fn per_sub(before: Option<Mem>, after: Option<Mem>, subs: u64, pss: bool) -> Value {
    match (before, after) {
        (Some(b), Some(a)) if subs > 0 => {
            let (x, y) = if pss {
                (b.pss_kb, a.pss_kb)
            } else {
                (b.rss_kb, a.rss_kb)
            };
            json!(((y as f64 - x as f64) * 1024.0 / subs as f64).round())
        }
        _ => Value::Null,
    }
}
