//! The event loop. One turn reads top to bottom: poll, accept, read and route
//! requests, one fan-out pass over the channels that grew, timers, sleep.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::channel::Hub;
use crate::config::Config;
use crate::conn::{self, Conn, Io, Pending, Phase};
use crate::http::{self, Framing, HttpError};
use crate::sse;
use crate::stats::{Reject, Stats};
use crate::timer::Wheel;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Timer resolution. Deadlines are seconds; 100 ms is plenty and keeps the
/// wheel's turn (1024 slots) above 100 s.
const TICK: Duration = Duration::from_millis(100);
const READ_BUF: usize = 64 * 1024;
/// Reads from one connection per loop turn before others get a go; the
/// rest is read next turn (the loop then polls without sleeping).
const READS_PER_TURN: u32 = 8;
/// Largest chunk of a chunked stream (the size line has room for it).
const MAX_CHUNK: u64 = 1 << 30;
/// Stop reading pipelined requests while this much output is unsent.
const MAX_OUT_BACKLOG: usize = 1 << 20;
/// How long a lingering close waits for the peer to close.
const LINGER: Duration = Duration::from_secs(2);
/// Connections kept above the connection cap only to answer 503 and close.
const REJECT_RESERVE: usize = 32;
/// File descriptors never used for clients (listener, epoll, stdio, ...).
const FD_RESERVE: usize = 32;
/// Connections allowed beyond the stream limit, so that a hub full of
/// subscribers still takes publishes, health checks and status requests.
const PLAIN_HEADROOM: usize = 256;
/// Retry `accept` this soon after running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Starts a graceful shutdown from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

pub struct Server {
    pub(crate) cfg: Config,
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    pub(crate) conns: Slab<Conn>,
    pub(crate) hub: Hub,
    pub(crate) wheel: Wheel,
    pub(crate) stats: Stats,
    /// Streams per client address; only kept when a per-IP limit is set.
    pub(crate) per_ip: HashMap<IpAddr, u32>,
    scratch: Vec<u8>,
    pub(crate) now: Instant,
    now_ms: u64,
    pub(crate) started: Instant,
    date: (u64, String),
    /// Concurrent streams allowed (`--max-connections`).
    pub(crate) max_connections: usize,
    /// Connections accepted before new ones get 503 at once.
    pub(crate) accept_cap: usize,
    /// Open streams.
    pub(crate) streams: usize,
    accept_paused: Option<Instant>,
    /// accept() has been failing (warned once until it succeeds again).
    accept_failing: bool,
    pub(crate) draining: Option<Instant>,
    shutdown_flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    rng: u64,
    dirty: Vec<u32>,
    expired: Vec<usize>,
    dropped_slow: Vec<(usize, &'static str)>,
    /// Connections that still had input when their read budget ran out.
    ready: Vec<usize>,
    /// Status and body length of the last response written (access log).
    pub(crate) last_response: (u16, usize),
    /// The `$status` channel and when to publish to it next.
    pub(crate) status_channel: Option<u32>,
    pub(crate) status_next: Option<Instant>,
}

impl Server {
    /// Binds the listener; it accepts connections as soon as this returns
    /// (they are served once `run` is called).
    pub fn new(cfg: Config) -> io::Result<Server> {
        let fd_limit = raise_fd_limit();
        // Descriptors: FD_RESERVE for ourselves, REJECT_RESERVE for 503s,
        // PLAIN_HEADROOM for requests that are not streams, the rest streams.
        let fd_cap = (fd_limit as usize)
            .saturating_sub(FD_RESERVE + REJECT_RESERVE)
            .max(16);
        let max_connections = if cfg.max_connections > 0 {
            cfg.max_connections
        } else {
            fd_cap.saturating_sub(PLAIN_HEADROOM).max(16)
        };
        let accept_cap = (max_connections + PLAIN_HEADROOM).min(fd_cap);
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(cfg.bind)?;
        raise_backlog(&listener);
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux:
        // one setsockopt here instead of one per connection.
        set_nodelay(&listener);
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let now = Instant::now();
        // Reserve the slab and timer nodes up front: pages are touched only
        // as connections arrive, so memory grows linearly with subscribers
        // instead of doubling.
        let reserve = (accept_cap + REJECT_RESERVE).min(1 << 20);
        let mut wheel = Wheel::new(now, TICK);
        wheel.reserve(reserve);
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Ok(Server {
            hub: Hub::new(cfg.history_bytes, cfg.max_channels),
            cfg,
            poll,
            listener: Some(listener),
            local_addr,
            conns: Slab::with_capacity(reserve),
            wheel,
            stats: Stats::default(),
            per_ip: HashMap::new(),
            scratch: vec![0; READ_BUF],
            now,
            now_ms: 0,
            started: now,
            date: (u64::MAX, String::new()),
            max_connections,
            accept_cap,
            streams: 0,
            accept_paused: None,
            accept_failing: false,
            draining: None,
            shutdown_flag: Arc::new(AtomicBool::new(false)),
            waker,
            signals: None,
            rng: seed | 1,
            dirty: Vec::new(),
            expired: Vec::new(),
            dropped_slow: Vec::new(),
            ready: Vec::new(),
            last_response: (0, 0),
            status_channel: None,
            status_next: None,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: self.shutdown_flag.clone(),
            waker: self.waker.clone(),
        }
    }

    /// SIGTERM and SIGINT start a graceful shutdown.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Runs until a shutdown completes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.set_now(Instant::now());
            let ready = std::mem::take(&mut self.ready);
            for &key in &ready {
                self.drive(key);
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    SIGNALS => self.read_signals(),
                    Token(key) => {
                        let r = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        let w = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                        self.on_event(key, r, w);
                    }
                }
            }
            if self.shutdown_flag.load(Ordering::SeqCst) && self.draining.is_none() {
                self.begin_shutdown();
            }
            if self.accept_paused.is_some_and(|t| self.now >= t) {
                self.accept_paused = None;
                self.accept();
            }
            self.publish_status();
            self.fan_out();
            self.expire_timers();
            if let Some(deadline) = self.draining {
                if self.conns.is_empty() {
                    log::info!("shutdown complete");
                    return Ok(());
                }
                if self.now >= deadline {
                    log::warn!(
                        "shutdown grace period over; closing {} connections",
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut wake = self.wheel.next_wake();
        for t in [self.draining, self.accept_paused, self.status_next]
            .into_iter()
            .flatten()
        {
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        wake.map(|w| w.saturating_duration_since(Instant::now()))
    }

    fn read_signals(&mut self) {
        if let Some(signals) = self.signals.as_mut() {
            for sig in signals.pending() {
                log::info!("signal {sig} received: shutting down gracefully");
                self.shutdown_flag.store(true, Ordering::SeqCst);
            }
        }
    }

    /// `now` as milliseconds since start (computed once per turn).
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.now_ms = now.saturating_duration_since(self.started).as_millis() as u64;
    }

    pub(crate) fn unix_micros(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64)
    }

    /// The `Date` header value, formatted once per second.
    pub(crate) fn http_date(&mut self) -> &str {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if self.date.0 != secs {
            self.date = (secs, httpdate::fmt_http_date(now));
        }
        &self.date.1
    }

    pub(crate) fn random(&mut self) -> u64 {
        // xorshift64: jitter only, not security.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    // ---- accepting -------------------------------------------------------

    fn accept(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    if self.accept_failing {
                        self.accept_failing = false;
                        log::info!("accepting connections again");
                    }
                    self.admit(stream, addr)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the backlog stays queued. With an
                    // edge-triggered listener no new event may come, so retry
                    // after a close or shortly; never spin.
                    self.stats.accept_errors += 1;
                    if !self.accept_failing {
                        self.accept_failing = true;
                        log::warn!("accept failed: {e}; retrying in {ACCEPT_RETRY:?}");
                    }
                    self.accept_paused = Some(self.now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        let over = self.conns.len() >= self.accept_cap;
        if over && self.conns.len() >= self.accept_cap + REJECT_RESERVE {
            self.stats.reject(Reject::ConnectionLimit);
            return; // dropped: closes at once
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::debug!("register {addr}: {e}");
            return;
        }
        entry.insert(Conn::new(stream, crate::config::canonical(addr.ip())));
        self.stats.connections_accepted += 1;
        if over {
            self.stats.reject(Reject::ConnectionLimit);
            let e = HttpError::new(503, "connection limit reached; retry later");
            self.respond_error(key, &e, &["Retry-After: 1"]);
            self.begin_close(key);
        } else {
            self.wheel.schedule(key, self.now + self.cfg.header_timeout);
        }
    }

    // ---- per-connection I/O ---------------------------------------------

    fn on_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.readable |= readable;
        c.writable |= writable;
        self.drive(key);
    }

    /// Does whatever the connection's readiness allows, across phase changes.
    fn drive(&mut self, key: usize) {
        loop {
            let Some(c) = self.conns.get(key) else {
                return;
            };
            match c.phase {
                Phase::Request { .. } => {
                    if !self.drive_request(key) {
                        return;
                    }
                }
                Phase::Stream(_) => {
                    self.drive_stream(key);
                    return;
                }
                Phase::Closing { .. } => {
                    self.drive_closing(key);
                    return;
                }
            }
        }
    }

    /// Returns true when the connection changed phase and must be driven
    /// again.
    fn drive_request(&mut self, key: usize) -> bool {
        let mut reads = 0;
        loop {
            let before = self.conns.get(key).map_or(0, Conn::out_pending);
            if !self.flush_out(key) {
                return false;
            }
            let Some(c) = self.conns.get_mut(key) else {
                return false;
            };
            if !matches!(c.phase, Phase::Request { .. }) {
                return true;
            }
            let left = c.out_pending();
            if left > 0 && left < before {
                // The client reads its responses: give it the write timeout,
                // not the request deadline, while a large output drains.
                self.wheel.schedule(key, self.now + self.cfg.write_timeout);
            }
            if c.close_after {
                if left == 0 {
                    self.begin_close(key);
                    return true;
                }
                return false;
            }
            if left > MAX_OUT_BACKLOG {
                return false;
            }
            let (buffered, backlogged) = match &c.phase {
                Phase::Request {
                    pending: Some(p), ..
                } => (true, p.backlogged),
                _ => (false, false),
            };
            if backlogged {
                // Requests that arrived while the output was backlogged.
                self.on_request_bytes(key, &[]);
                continue;
            }
            if c.eof {
                // Nothing more will come: answer what is complete, then close;
                // a partial request can never complete.
                if buffered {
                    log::debug!("client closed in the middle of a request");
                }
                if left > 0 {
                    c.close_after = true;
                    continue;
                }
                self.close(key);
                return false;
            }
            if !c.readable {
                return false;
            }
            if reads == READS_PER_TURN {
                // Fairness: let the fan-out pass and other clients run.
                self.ready.push(key);
                return false;
            }
            reads += 1;
            let mut scratch = std::mem::take(&mut self.scratch);
            let r = conn::read(&mut c.stream, &mut scratch);
            match r {
                Io::Done(n) => self.on_request_bytes(key, &scratch[..n]),
                Io::WouldBlock => c.readable = false,
                Io::Closed => {
                    c.readable = false;
                    c.eof = true;
                }
                Io::Error(kind) => {
                    log::debug!("read error: {kind:?}");
                    self.close(key);
                }
            }
            self.scratch = scratch;
        }
    }

    /// Parses and answers every complete request in the new bytes.
    fn on_request_bytes(&mut self, key: usize, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Request { pending, .. } = &mut c.phase else {
            return;
        };
        let (mut st, buffered) = match pending.take() {
            Some(mut p) => {
                p.buf.extend_from_slice(bytes);
                (p, true)
            }
            None => (Box::default(), false),
        };
        st.backlogged = false;
        let mut buf = std::mem::take(&mut st.buf);
        let input: &[u8] = if buffered { &buf } else { bytes };
        let consumed = self.process_requests(key, input, &mut st);
        let leftover = &input[consumed.min(input.len())..];
        let rest = if leftover.is_empty() {
            None
        } else if buffered {
            buf.drain(..consumed);
            Some(buf)
        } else {
            Some(leftover.to_vec())
        };
        let now = self.now;
        let (header_timeout, idle_timeout) = (self.cfg.header_timeout, self.cfg.idle_timeout);
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Request { pending, idle } = &mut c.phase else {
            return;
        };
        match rest {
            Some(b) => {
                st.buf = b;
                *pending = Some(st);
                // A request began after an answered one (or on an idle
                // keep-alive connection): its deadline starts now. A fresh
                // connection keeps the deadline set when it was accepted.
                // Requests waiting for output to drain are on the write
                // timeout instead (set as the output drains).
                let backlogged = pending.as_ref().is_some_and(|p| p.backlogged);
                if backlogged {
                    *idle = false;
                    self.wheel.schedule(key, now + self.cfg.write_timeout);
                } else if *idle || consumed > 0 {
                    *idle = false;
                    self.wheel.schedule(key, now + header_timeout);
                }
            }
            None => {
                if consumed > 0 {
                    *idle = true;
                    self.wheel.schedule(key, now + idle_timeout);
                }
            }
        }
    }

    /// Handles complete requests at the start of `buf`; returns the bytes
    /// consumed. `st` carries the state of a request whose body is partial.
    fn process_requests(&mut self, key: usize, buf: &[u8], st: &mut Pending) -> usize {
        let mut off = 0;
        loop {
            let Some(c) = self.conns.get(key) else {
                return off;
            };
            if !matches!(c.phase, Phase::Request { .. }) || c.close_after || off >= buf.len() {
                return off;
            }
            if c.out_pending() > MAX_OUT_BACKLOG {
                st.backlogged = true;
                return off;
            }
            let rest = &buf[off..];
            let parsed = match http::parse_head(rest, self.cfg.max_header_bytes) {
                Ok(Some(p)) => p,
                Ok(None) => return off,
                Err(e) => {
                    self.fail(key, &e);
                    return buf.len();
                }
            };
            let (req, head_len) = parsed;
            let first_look = st.head_len.is_none();
            st.head_len = Some(head_len);
            let body_input = &rest[head_len..];
            let (body, total): (&[u8], usize) = match req.framing() {
                Framing::Empty => (&[], head_len),
                Framing::Length(n) if n > self.cfg.max_body_bytes => {
                    self.stats.reject(Reject::TooLarge);
                    self.fail(key, &HttpError::new(413, "request body too large"));
                    return buf.len();
                }
                Framing::Length(n) => {
                    if body_input.len() < n {
                        self.maybe_continue(key, &req, st, first_look);
                        return off;
                    }
                    (&body_input[..n], head_len + n)
                }
                Framing::Chunked => {
                    let max_body = self.cfg.max_body_bytes;
                    let max_trailer = self.cfg.max_header_bytes;
                    match st
                        .chunked
                        .decode(body_input, &mut st.body, max_body, max_trailer)
                    {
                        Ok(Some(used)) => (&st.body[..], head_len + used),
                        Ok(None) => {
                            self.maybe_continue(key, &req, st, first_look);
                            return off;
                        }
                        Err(e) => {
                            if e.status == 413 {
                                self.stats.reject(Reject::TooLarge);
                            }
                            self.fail(key, &e);
                            return buf.len();
                        }
                    }
                }
            };
            self.stats.requests += 1;
            self.handle(key, &req, body);
            off += total;
            let b = std::mem::take(&mut st.body);
            *st = Pending::default();
            st.body = b;
            st.body.clear();
        }
    }

    fn maybe_continue(&mut self, key: usize, req: &http::Request<'_>, st: &mut Pending, _: bool) {
        if req.expect_continue && !st.continue_sent {
            st.continue_sent = true;
            if let Some(c) = self.conns.get_mut(key) {
                c.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
        }
    }

    /// Answers a request that cannot be followed by another on this
    /// connection (the framing is unknown or broken), then closes.
    pub(crate) fn fail(&mut self, key: usize, e: &HttpError) {
        if e.status == 400 || e.status == 505 || e.status == 501 {
            self.stats.reject(Reject::BadRequest);
        }
        log::debug!("request refused: {} {}", e.status, e.message);
        self.respond_error(key, e, &[]);
        if let Some(c) = self.conns.get_mut(key) {
            c.close_after = true;
        }
    }

    /// Writes out `c.out`. Returns false when the connection was closed.
    fn flush_out(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        while c.out_pending() > 0 && c.writable {
            match conn::write_vectored(&mut c.stream, &[IoSlice::new(&c.out[c.out_pos..])]) {
                Io::Done(n) => {
                    self.stats.bytes_written += n as u64;
                    c.consume_out(n);
                }
                Io::WouldBlock => c.writable = false,
                Io::Closed | Io::Error(_) => {
                    self.close(key);
                    return false;
                }
            }
        }
        true
    }

    /// Starts a lingering close: flush, shut the write side, wait for EOF.
    pub(crate) fn begin_close(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.close_after = true;
        c.phase = Phase::Closing { shut: false };
        self.wheel
            .schedule(key, self.now + LINGER.max(self.cfg.write_timeout));
        self.drive_closing(key);
    }

    fn drive_closing(&mut self, key: usize) {
        if !self.flush_out(key) {
            return;
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.out_pending() > 0 {
            return;
        }
        if let Phase::Closing { shut } = &mut c.phase {
            if !*shut {
                *shut = true;
                if c.stream.shutdown(Shutdown::Write).is_err() {
                    self.close(key);
                    return;
                }
                self.wheel.schedule(key, self.now + LINGER);
            }
        }
        // Discard whatever the peer still sends until it closes.
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(c) = self.conns.get_mut(key) {
            if !c.readable {
                break;
            }
            match conn::read(&mut c.stream, &mut scratch) {
                Io::Done(_) => {}
                Io::WouldBlock => c.readable = false,
                Io::Closed | Io::Error(_) => self.close(key),
            }
        }
        self.scratch = scratch;
    }

    // ---- streams ----------------------------------------------------------

    fn drive_stream(&mut self, key: usize) {
        // A subscriber has nothing to say; read only to notice it leaving.
        let mut scratch = std::mem::take(&mut self.scratch);
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                self.scratch = scratch;
                return;
            };
            if !c.readable {
                break;
            }
            match conn::read(&mut c.stream, &mut scratch) {
                Io::Done(_) => {}
                Io::WouldBlock => c.readable = false,
                Io::Closed | Io::Error(_) => {
                    self.close(key);
                    self.scratch = scratch;
                    return;
                }
            }
        }
        self.scratch = scratch;
        self.write_stream(key);
    }

    /// Writes a subscriber's pending bytes: its response head (if any), the
    /// rest of a heartbeat, then `log[cursor..head]`, in as few writes as the
    /// kernel allows. A chunked stream frames the log bytes as one chunk per
    /// batch: its size line and closing CRLF are two more slices of the same
    /// `writev`, so the log is still sent without a copy.
    pub(crate) fn write_stream(&mut self, key: usize) {
        let now_ms = self.now_ms();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Conn {
            stream,
            out,
            out_pos,
            writable,
            phase,
            ..
        } = c;
        let Phase::Stream(sub) = phase else {
            return;
        };
        let log = &self.hub.get(sub.channel).log;
        if sub.cursor < log.tail() {
            self.dropped_slow
                .push((key, "fell behind the channel history"));
            self.stats.slow_consumers_dropped += 1;
            conn::reset_on_close(stream);
            self.close(key);
            return;
        }
        let mut wrote = false;
        while *writable {
            if sub.chunked && sub.chunk_len == 0 && sub.cursor < log.head() {
                let len = (log.head() - sub.cursor).min(MAX_CHUNK);
                sub.chunk_len = len as u32;
                sub.chunk_end = sub.cursor + len;
                sub.chunk_head_sent = 0;
                sub.chunk_tail_sent = 0;
            }
            let open = sub.chunk_len > 0;
            let mut size_line = [0u8; 12];
            let size_len = if open {
                chunk_size_line(sub.chunk_len, &mut size_line)
            } else {
                0
            };
            let hb_all = sub.heartbeat();
            let hb = &hb_all[hb_all.len() - sub.heartbeat_left as usize..];
            let head: &[u8] = if open {
                &size_line[sub.chunk_head_sent as usize..size_len]
            } else {
                &[]
            };
            let end = match (sub.chunked, open) {
                (false, _) => log.head(),
                (true, true) => sub.chunk_end,
                (true, false) => sub.cursor,
            };
            let (a, b) = log.slices_to(sub.cursor, end);
            let tail: &[u8] = if open {
                &b"\r\n"[sub.chunk_tail_sent as usize..]
            } else {
                &[]
            };
            let pending_out = &out[*out_pos..];
            if pending_out.is_empty()
                && hb.is_empty()
                && head.is_empty()
                && a.is_empty()
                && tail.is_empty()
            {
                break;
            }
            let iov = [
                IoSlice::new(pending_out),
                IoSlice::new(hb),
                IoSlice::new(head),
                IoSlice::new(a),
                IoSlice::new(b),
                IoSlice::new(tail),
            ];
            match conn::write_vectored(stream, &iov) {
                Io::Done(mut n) => {
                    wrote = true;
                    self.stats.bytes_written += n as u64;
                    let o = n.min(pending_out.len());
                    n -= o;
                    let h = n.min(hb.len());
                    n -= h;
                    sub.heartbeat_left -= h as u8;
                    let sl = n.min(head.len());
                    n -= sl;
                    sub.chunk_head_sent += sl as u8;
                    let d = n.min(a.len() + b.len());
                    n -= d;
                    if d > 0 {
                        sub.cursor += d as u64;
                        // Frames completed: at the head that is every frame
                        // published; only a partial write needs a search.
                        let frames = if sub.cursor == log.head() {
                            log.published()
                        } else {
                            log.complete_before(sub.cursor)
                        };
                        self.stats.deliveries +=
                            u64::from((frames as u32).wrapping_sub(sub.frames));
                        sub.frames = frames as u32;
                    }
                    if open {
                        sub.chunk_tail_sent += n as u8;
                        if sub.chunk_tail_sent == 2 {
                            sub.chunk_len = 0;
                            sub.chunk_head_sent = 0;
                            sub.chunk_tail_sent = 0;
                        }
                    }
                    if o > 0 {
                        *out_pos += o;
                        if *out_pos >= out.len() {
                            // The response head is out: the stream owns no buffer.
                            *out = Vec::new();
                            *out_pos = 0;
                        }
                    }
                }
                Io::WouldBlock => *writable = false,
                Io::Closed | Io::Error(_) => {
                    self.close(key);
                    return;
                }
            }
        }
        let pending = *out_pos < out.len()
            || sub.heartbeat_left > 0
            || sub.chunk_len > 0
            || sub.cursor < log.head();
        if wrote {
            sub.last_write_ms = now_ms;
        }
        if pending {
            if sub.stalled_since_ms == u64::MAX {
                sub.stalled_since_ms = now_ms;
                self.wheel.schedule(key, self.now + self.cfg.write_timeout);
            }
        } else if sub.stalled_since_ms != u64::MAX {
            sub.stalled_since_ms = u64::MAX;
            self.schedule_heartbeat(key, now_ms);
        }
    }

    fn schedule_heartbeat(&mut self, key: usize, last_write_ms: u64) {
        let hb = self.cfg.heartbeat_interval;
        if hb.is_zero() {
            self.wheel.cancel(key);
        } else {
            let at = self.started + Duration::from_millis(last_write_ms) + hb;
            self.wheel.schedule(key, at);
        }
    }

    /// One pass per loop turn over every channel that grew: each subscriber
    /// gets everything published this turn in one write.
    fn fan_out(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        self.hub.take_dirty(&mut dirty);
        for &ch in &dirty {
            self.fan_out_channel(ch);
        }
        self.dirty = dirty;
        self.log_dropped();
    }

    /// Writes to every subscriber of one channel.
    pub(crate) fn fan_out_channel(&mut self, ch: u32) {
        let mut i = 0;
        while let Some(&key) = self.hub.get(ch).subscribers.get(i) {
            self.write_stream(key as usize);
            // A dropped subscriber's place is taken by the last one.
            if self.hub.get(ch).subscribers.get(i) == Some(&key) {
                i += 1;
            }
        }
        self.hub.mark_sent(ch);
    }

    /// Appends an event; when that would evict bytes not yet fanned out
    /// (more than a history's worth published in one loop turn), the
    /// channel is fanned out first, so a subscriber that keeps its socket
    /// drained never loses its place.
    pub(crate) fn publish_event(
        &mut self,
        ch: u32,
        event: Option<&str>,
        data: &str,
    ) -> Result<u64, crate::channel::PublishError> {
        let len = sse::encoded_len(self.hub.get(ch).log.last_id() + 1, event, data);
        if self.hub.would_evict_unsent(ch, len) {
            self.fan_out_channel(ch);
        }
        self.hub.publish(ch, event, data)
    }

    fn log_dropped(&mut self) {
        if !self.dropped_slow.is_empty() {
            let (_, why) = self.dropped_slow[0];
            log::warn!(
                "dropped {} slow subscriber(s): {why}; they can resume with Last-Event-ID",
                self.dropped_slow.len()
            );
            self.dropped_slow.clear();
        }
    }

    /// Once a second while anyone watches `/events/status/stream`, publish
    /// the status document to the `$status` channel.
    fn publish_status(&mut self) {
        let (Some(ch), Some(next)) = (self.status_channel, self.status_next) else {
            return;
        };
        if self.now < next {
            return;
        }
        if self.hub.get(ch).subscribers.is_empty() {
            self.status_next = None;
            return;
        }
        let doc = self.snapshot().status_json().to_string();
        if self.publish_event(ch, Some("status"), &doc).is_err() {
            log::warn!("status document larger than the channel history; not published");
        }
        self.status_next = Some(self.now + Duration::from_secs(1));
    }

    // ---- timers -----------------------------------------------------------

    fn expire_timers(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        self.wheel.expire(self.now, &mut expired);
        for &key in &expired {
            self.on_timer(key);
        }
        self.expired = expired;
    }

    fn on_timer(&mut self, key: usize) {
        let now_ms = self.now_ms();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let out_left = c.out_pending();
        match &mut c.phase {
            Phase::Request { pending, .. } => {
                if out_left > 0 {
                    // Timers run on the write timeout while output drains
                    // (see drive_request): no progress for that long.
                    log::debug!("client does not read its responses; closing");
                    self.close(key);
                } else if pending.is_some() {
                    self.stats.reject(Reject::HeaderTimeout);
                    log::debug!("request not complete before the header deadline");
                    let e = HttpError::new(408, "request not complete before the header deadline");
                    self.respond_error(key, &e, &[]);
                    self.begin_close(key);
                } else {
                    self.close(key);
                }
            }
            Phase::Closing { .. } => self.close(key),
            Phase::Stream(sub) => {
                if sub.stalled_since_ms != u64::MAX {
                    let stalled_for = now_ms.saturating_sub(sub.stalled_since_ms);
                    if stalled_for >= self.cfg.write_timeout.as_millis() as u64 {
                        self.stats.stalled_consumers_dropped += 1;
                        self.dropped_slow.push((key, "socket did not drain"));
                        conn::reset_on_close(&c.stream);
                        self.close(key);
                    } else {
                        let left = self.cfg.write_timeout.as_millis() as u64 - stalled_for;
                        self.wheel
                            .schedule(key, self.now + Duration::from_millis(left));
                    }
                    return;
                }
                let hb_ms = self.cfg.heartbeat_interval.as_millis() as u64;
                if hb_ms == 0 {
                    return;
                }
                let due = sub.last_write_ms + hb_ms;
                if now_ms + TICK.as_millis() as u64 / 2 >= due
                    && sub.heartbeat_left == 0
                    && sub.chunk_len == 0
                {
                    sub.heartbeat_left = sub.heartbeat().len() as u8;
                    self.stats.heartbeats += 1;
                    self.write_stream(key);
                    if let Some(Phase::Stream(sub)) = self.conns.get(key).map(|c| &c.phase) {
                        if sub.stalled_since_ms == u64::MAX {
                            self.schedule_heartbeat(key, now_ms);
                        }
                    }
                } else {
                    let last = sub.last_write_ms;
                    self.schedule_heartbeat(key, last);
                }
            }
        }
        self.log_dropped();
    }

    // ---- closing and shutdown ----------------------------------------------

    /// Removes a connection: its timer, its place in a channel, its per-IP
    /// count. Dropping the socket closes it and removes it from epoll.
    pub(crate) fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let c = self.conns.remove(key);
        self.wheel.cancel(key);
        if let Phase::Stream(sub) = &c.phase {
            self.streams -= 1;
            if let Some(moved) = self.hub.unsubscribe(sub.channel, sub.index) {
                if let Some(Phase::Stream(m)) =
                    self.conns.get_mut(moved as usize).map(|c| &mut c.phase)
                {
                    m.index = sub.index;
                }
            }
            if sub.counted {
                if let Some(n) = self.per_ip.get_mut(&c.ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_ip.remove(&c.ip);
                    }
                }
            }
        }
        if self.accept_paused.is_some() {
            self.accept_paused = Some(self.now);
        }
    }

    fn begin_shutdown(&mut self) {
        self.draining = Some(self.now + self.cfg.shutdown_grace);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.accept_paused = None;
        log::info!(
            "shutting down: {} connections, grace {:?}",
            self.conns.len(),
            self.cfg.shutdown_grace
        );
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            match &c.phase {
                Phase::Stream(_) => {
                    // Last chance to send what is pending, then a clean end:
                    // the last chunk (when everything else went out) and FIN.
                    self.write_stream(key);
                    if let Some(c) = self.conns.get_mut(key) {
                        let done = c.out_pending() == 0
                            && c.subscriber().is_some_and(|s| {
                                s.chunked && s.chunk_len == 0 && s.heartbeat_left == 0
                            });
                        if done {
                            let _ = conn::write_vectored(
                                &mut c.stream,
                                &[IoSlice::new(sse::LAST_CHUNK)],
                            );
                        }
                        let _ = c.stream.shutdown(Shutdown::Write);
                    }
                    self.close(key);
                }
                Phase::Request { pending, .. } => {
                    if pending.is_none() && c.out_pending() == 0 && !c.readable {
                        // Idle keep-alive: nothing unread, nothing owed.
                        self.close(key);
                    } else {
                        // Answer what has arrived (with `Connection: close`,
                        // as `draining` is set), then the lingering close.
                        self.drive(key);
                    }
                }
                Phase::Closing { .. } => {}
            }
        }
    }
}

/// mio listens with a backlog of 128; a reconnect storm after a restart
/// needs more. Calling `listen` again on a listening socket only changes the
/// backlog; the kernel caps it at `net.core.somaxconn`.
fn raise_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen() on a socket we own, with no pointers involved.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 65535) };
    if rc != 0 {
        log::warn!(
            "could not raise the listen backlog: {}",
            io::Error::last_os_error()
        );
    }
}

/// Events go out as soon as they are written (no Nagle delay).
fn set_nodelay(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, pointer to a local of that size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::warn!("could not set TCP_NODELAY: {}", io::Error::last_os_error());
    }
}

/// Writes `"{len:x}\r\n"` into `buf`; returns its length.
fn chunk_size_line(len: u32, buf: &mut [u8; 12]) -> usize {
    let digits = (32 - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, b) in buf.iter_mut().take(digits).enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    digits + 2
}

/// Raises the soft open-file limit to the hard one; returns the limit.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::chunk_size_line;

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        let mut b = [0u8; 12];
        for (len, want) in [
            (1u32, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (0x3fff_ffff, "3fffffff\r\n"),
        ] {
            let n = chunk_size_line(len, &mut b);
            assert_eq!(&b[..n], want.as_bytes());
        }
    }
}
