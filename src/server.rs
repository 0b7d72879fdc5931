//! The event loop. One turn reads top to bottom: poll, accept, read and route
//! requests, one fan-out pass over the channels that grew, timers, sleep.
//!
//! `Server` is the one place that ties the rooms together: the request
//! reader (`reader.rs`) hands complete requests to the routes (`routes/`),
//! which answer or produce a subscriber to attach; the write path
//! (`stream.rs`) writes what a subscriber is owed and says what happened;
//! the timer wheel (`timer.rs`) says whose deadline came. The bookkeeping
//! between them (statistics, timers, dropping, closing) happens here.

use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::channel::{Appended, Hub, Limits, PublishError};
use crate::clock::{Clock, Jitter};
use crate::config::Config;
use crate::conn::{self, Conn, Phase, Side};
use crate::grants::Grants;
use crate::http::HttpError;
use crate::listener::{self, Acceptor, Next, REJECT_RESERVE};
use crate::outbound::{self, Asker};
use crate::routes::subscribe::Streams;
use crate::shutdown::{ShutdownHandle, Stop};
use crate::sse;
use crate::stats::{Reject, Stats};
use crate::stream::{self, Deadlines, Due, Heartbeats};
use crate::timer::{Lane, Timer, Wheel};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// The `--admin-bind` listener (kept clear of the next reserved tokens).
const ADMIN: Token = Token(usize::MAX - 16);

/// Timer resolution. Deadlines are seconds; 100 ms is plenty and keeps the
/// wheel's turn (1024 slots) above 100 s.
pub const TICK: Duration = Duration::from_millis(100);
const READ_BUF: usize = 64 * 1024;
/// Idempotency-Key answers kept without Redis (the oldest go first).
const IDEMPOTENCY_ENTRIES: usize = 100_000;
/// Reads from one connection per loop turn before others get a go; the
/// rest is read next turn (the loop then polls without sleeping).
pub(crate) const READS_PER_TURN: u32 = 8;

pub struct Server {
    pub(crate) cfg: Config,
    /// The stream deadlines of `cfg`, in milliseconds.
    deadlines: Deadlines,
    heartbeats: Heartbeats,
    pub(crate) poll: Poll,
    acceptor: Acceptor,
    local_addr: SocketAddr,
    pub(crate) conns: Slab<Conn>,
    pub(crate) hub: Hub,
    pub(crate) wheel: Wheel,
    pub(crate) stats: Stats,
    pub(crate) scratch: Vec<u8>,
    pub(crate) clock: Clock,
    pub(crate) jitter: Jitter,
    /// Connections accepted before new ones get 503 at once.
    pub(crate) accept_cap: usize,
    /// Open streams and their limits.
    pub(crate) streams: Streams,
    pub(crate) draining: Option<Instant>,
    stop: Stop,
    dirty: Vec<u32>,
    expired: Vec<Timer>,
    dropped_slow: Vec<&'static str>,
    /// Connections that still had input when their read budget ran out.
    pub(crate) ready: Vec<usize>,
    /// Status and body length of the last response written (access log).
    pub(crate) last_response: (u16, usize),
    /// When to publish to the status channels next.
    pub(crate) status_next: Option<Instant>,
    /// Token streams and revocations (`grants.rs`).
    pub(crate) grants: Grants,
    /// Forward auth (`--subscribe-auth-url`): the calls to the application.
    pub(crate) asker: Option<Asker>,
    /// Redis mode (`--redis-url`): the link, and what waits on it.
    pub(crate) redis: Option<outbound::redis::Link>,
    pub(crate) scaled: crate::session::Scaled,
    /// `Idempotency-Key` answers without Redis.
    pub(crate) idempotency: crate::idempotency::Store,
}

impl Server {
    /// Binds the listener; it accepts connections as soon as this returns
    /// (they are served once `run` is called).
    pub fn new(cfg: Config) -> io::Result<Server> {
        let listening = listener::listen(&cfg)?;
        let local_addr = listening.listener.local_addr()?;
        let poll = Poll::new()?;
        let acceptor = Acceptor::new(
            listening.listener,
            listening.admin,
            poll.registry(),
            [LISTENER, ADMIN],
        )?;
        let stop = Stop::new(poll.registry(), WAKER)?;
        let now = Instant::now();
        // Reserve the slab and timer nodes up front: pages are touched only
        // as connections arrive, so memory grows linearly with subscribers
        // instead of doubling.
        let reserve = (listening.accept_cap + REJECT_RESERVE).min(1 << 20);
        let clock = Clock::new(now);
        let streams = Streams::new(listening.max_connections, cfg.max_connections_per_ip);
        let asker = outbound::auth::from_config(&cfg)?;
        let redis = match cfg.scale.redis() {
            Some(r) => {
                let settings = outbound::redis::Settings {
                    history_events: cfg.scale.history_events,
                    history_ttl: cfg.history_ttl,
                    wait_replicas: cfg.scale.redis_wait_replicas,
                    idempotency_ttl: cfg.scale.idempotency_ttl,
                };
                let link = outbound::redis::Link::new(&r, &settings)?;
                log::info!(
                    "redis mode: {} (prefix '{}', process {}); publishes answer 503 until it is connected",
                    link.address(),
                    r.prefix,
                    link.process()
                );
                Some(link)
            }
            None => None,
        };
        let idempotency = crate::idempotency::Store::new(
            cfg.scale.idempotency_ttl.as_millis() as u64,
            IDEMPOTENCY_ENTRIES,
        );
        let mut wheel = Wheel::new(now, TICK);
        wheel.reserve(reserve);
        Ok(Server {
            hub: Hub::new(Limits {
                history_bytes: cfg.history_bytes,
                max_channels: cfg.max_channels,
                history_memory: cfg.history_memory,
                history_ttl_ms: cfg.history_ttl.as_millis() as u64,
            }),
            deadlines: Deadlines {
                heartbeat_ms: cfg.heartbeat_interval.as_millis() as u64,
                write_timeout_ms: cfg.write_timeout.as_millis() as u64,
                tick_ms: TICK.as_millis() as u64,
            },
            heartbeats: Heartbeats {
                event: cfg.heartbeat_event.as_deref().map(Box::from),
                epoch_ms: clock.started_unix_ms(),
            },
            clock,
            cfg,
            poll,
            acceptor,
            local_addr,
            conns: Slab::with_capacity(reserve),
            wheel,
            stats: Stats::default(),
            scratch: vec![0; READ_BUF],
            jitter: Jitter::seeded(),
            accept_cap: listening.accept_cap,
            streams,
            draining: None,
            stop,
            dirty: Vec::new(),
            expired: Vec::new(),
            dropped_slow: Vec::new(),
            ready: Vec::new(),
            last_response: (0, 0),
            grants: Grants::default(),
            status_next: None,
            asker,
            redis,
            scaled: crate::session::Scaled::default(),
            idempotency,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn max_connections(&self) -> usize {
        self.streams.max()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.stop.handle()
    }

    /// SIGTERM and SIGINT start a graceful shutdown.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        self.stop.install_signals(self.poll.registry(), SIGNALS)
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
            self.clock.set(Instant::now());
            for key in std::mem::take(&mut self.ready) {
                self.drive(key);
            }
            for ev in events.iter() {
                match ev.token() {
                    t @ (LISTENER | ADMIN) => {
                        self.acceptor.readable(t);
                        self.accept();
                    }
                    WAKER => {}
                    SIGNALS => self.stop.read_signals(),
                    Token(key) => {
                        let r = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        let w = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                        if outbound::is_outbound(Token(key)) {
                            self.on_outbound(Token(key), r, w);
                        } else if outbound::redis::is_redis(Token(key)) {
                            self.on_redis(Token(key));
                        } else if let Some(c) = self.conns.get_mut(key) {
                            c.readable |= r;
                            c.writable |= w;
                            self.drive(key);
                        }
                    }
                }
            }
            if self.stop.requested() && self.draining.is_none() {
                self.begin_shutdown();
            }
            if self.acceptor.retry_due(self.clock.now()) {
                self.accept();
            }
            self.publish_status();
            self.redis_turn();
            self.fan_out();
            // After the fan-out pass: every byte has been offered to its
            // subscribers, so expiry never waits for one.
            self.hub.expire(self.clock.ms());
            self.expire_timers();
            // No channel index is held now but by subscribers.
            self.hub.collect_idle();
            if let Some(deadline) = self.draining {
                if self.conns.is_empty() {
                    log::info!("shutdown complete");
                    return Ok(());
                }
                if self.clock.now() >= deadline {
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
        // The hub orders history by age itself (a heap of each channel's
        // oldest event): its next expiry is one deadline, not one per channel.
        let expiry = self
            .hub
            .next_expiry()
            .map(|ms| self.clock.started() + Duration::from_millis(ms));
        for t in [
            self.draining,
            self.acceptor.wake_at(),
            self.status_next,
            expiry,
            self.redis_wake(),
        ]
        .into_iter()
        .flatten()
        {
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        wake.map(|w| w.saturating_duration_since(Instant::now()))
    }

    // ---- accepting -------------------------------------------------------

    fn accept(&mut self) {
        loop {
            match self.acceptor.next(self.clock.now()) {
                Next::Conn(stream, addr, side) => self.admit(stream, addr, side),
                Next::Idle => return,
                Next::Failed => {
                    self.stats.accept_errors += 1;
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, addr: SocketAddr, side: Side) {
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
        entry.insert(Conn::new(stream, crate::config::canonical(addr.ip()), side));
        self.stats.connections_accepted += 1;
        if over {
            self.stats.reject(Reject::ConnectionLimit);
            let e = HttpError::new(503, "connection limit reached; retry later");
            self.respond_error(key, &e, &["Retry-After: 1"], false);
            self.begin_close(key);
        } else {
            self.after(key, self.cfg.header_timeout);
        }
    }

    /// Sets the connection's I/O deadline `d` from now.
    pub(crate) fn after(&mut self, key: usize, d: Duration) {
        self.wheel.schedule(Timer::io(key), self.clock.now() + d);
    }

    // ---- per-connection I/O ---------------------------------------------

    /// Does whatever the connection's readiness allows, across phase changes.
    pub(crate) fn drive(&mut self, key: usize) {
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
                Phase::Stream(_) => return self.drive_stream(key),
                Phase::Waiting(_) => return self.drive_waiting(key),
                Phase::Closing { .. } => return self.drive_closing(key),
            }
        }
    }

    // ---- streams ----------------------------------------------------------

    fn drive_stream(&mut self, key: usize) {
        // A subscriber has nothing to say; read only to notice it leaving.
        if self.discard_or_close(key) {
            self.write_stream(key);
        }
    }

    /// Writes what a subscriber is owed (`stream::write`), then keeps the
    /// books: bytes and deliveries, the stalled-writer deadline while
    /// something is left, the heartbeat once it has drained, dropping a
    /// subscriber that fell behind or whose socket failed.
    pub(crate) fn write_stream(&mut self, key: usize) {
        let now_ms = self.clock.ms();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Stream(sub) = &mut c.phase else {
            return;
        };
        let log = &self.hub.get(sub.channel).log;
        if sub.is_behind(log) {
            self.dropped_slow.push("fell behind the channel history");
            self.stats.slow_consumers_dropped += 1;
            conn::reset_on_close(&c.stream);
            return self.close(key);
        }
        let sink = stream::Sink {
            sock: &mut c.stream,
            writable: &mut c.writable,
            out: &mut c.out,
        };
        let wrote = stream::write(sub, sink, log, &self.heartbeats, now_ms);
        self.stats.bytes_written += wrote.bytes as u64;
        self.stats.deliveries += wrote.frames;
        if wrote.closed {
            return self.close(key);
        }
        if wrote.bytes > 0 {
            sub.last_write_ms = now_ms;
        }
        if sub.is_finished(&c.out) {
            // The last event (and the last chunk) went out: end cleanly.
            let _ = c.stream.shutdown(Shutdown::Write);
            return self.close(key);
        }
        if sub.is_pending(&c.out, log) {
            if sub.stalled_since_ms == u64::MAX {
                sub.stalled_since_ms = now_ms;
                self.after(key, self.cfg.write_timeout);
            }
        } else if sub.stalled_since_ms != u64::MAX {
            sub.stalled_since_ms = u64::MAX;
            self.schedule_heartbeat(key, now_ms);
        }
    }

    pub(crate) fn schedule_heartbeat(&mut self, key: usize, last_write_ms: u64) {
        let hb = self.cfg.heartbeat_interval;
        if hb.is_zero() {
            self.wheel.cancel(Timer::io(key));
        } else {
            let at = self.clock.started() + Duration::from_millis(last_write_ms) + hb;
            self.wheel.schedule(Timer::io(key), at);
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
    fn fan_out_channel(&mut self, ch: u32) {
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

    /// Appends an event. When making room (the channel's history, or the
    /// hub's budget, oldest events hub-wide first) would evict bytes not yet
    /// fanned out, that channel is fanned out first, so a subscriber that
    /// keeps its socket drained never loses its place.
    pub(crate) fn publish_event(
        &mut self,
        ch: u32,
        event: Option<&str>,
        data: &str,
    ) -> Result<u64, PublishError> {
        let now = self.stamp();
        self.append_event(ch, event, data, now)
    }

    /// Appends with the id `max(last + 1, now.unix_us)`: Redis mode passes
    /// the id Redis gave as the time.
    pub(crate) fn append_event(
        &mut self,
        ch: u32,
        event: Option<&str>,
        data: &str,
        now: crate::channel::Stamp,
    ) -> Result<u64, PublishError> {
        loop {
            match self.hub.publish(ch, event, data, now)? {
                Appended::Id(id) => return Ok(id),
                Appended::FanOutFirst(x) => self.fan_out_channel(x),
            }
        }
    }

    fn log_dropped(&mut self) {
        if let Some(why) = self.dropped_slow.first() {
            log::warn!(
                "dropped {} slow subscriber(s): {why}; they can resume with Last-Event-ID",
                self.dropped_slow.len()
            );
            self.dropped_slow.clear();
        }
    }

    // ---- timers -----------------------------------------------------------

    fn expire_timers(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        expired.clear();
        self.wheel.expire(self.clock.now(), &mut expired);
        for &timer in &expired {
            match timer {
                Timer::Conn(key, Lane::Io) => self.on_timer(key),
                Timer::Conn(key, Lane::Expiry) => self.on_expiry(key),
                Timer::Channel(_) => {}
            }
        }
        self.expired = expired;
        self.log_dropped();
    }

    /// A connection's I/O deadline came.
    fn on_timer(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Stream(sub) = &mut c.phase else {
            return self.on_request_deadline(key);
        };
        let now_ms = self.clock.ms();
        match stream::due(sub, now_ms, &self.deadlines) {
            Due::Stalled => {
                self.stats.stalled_consumers_dropped += 1;
                self.dropped_slow.push("socket did not drain");
                conn::reset_on_close(&c.stream);
                self.close(key);
            }
            Due::StallIn(ms) => self.after(key, Duration::from_millis(ms)),
            Due::Heartbeat => {
                let len = self.heartbeats.render(sub.chunked, now_ms).as_slice().len();
                sub.start_heartbeat(len);
                self.stats.heartbeats += 1;
                self.write_stream(key);
                let drained = self
                    .conns
                    .get(key)
                    .and_then(Conn::subscriber)
                    .is_some_and(|s| s.stalled_since_ms == u64::MAX);
                if drained {
                    self.schedule_heartbeat(key, now_ms);
                }
            }
            Due::HeartbeatAfter(last) => self.schedule_heartbeat(key, last),
            Due::Nothing => {}
        }
    }

    // ---- closing and shutdown ----------------------------------------------

    /// Removes a connection: its timers, its place in a channel, its per-IP
    /// count. Dropping the socket closes it and removes it from epoll.
    pub(crate) fn close(&mut self, key: usize) {
        let Some(c) = self.conns.try_remove(key) else {
            return;
        };
        self.wheel.cancel_conn(key);
        self.grants.forget(key);
        self.scaled.awaiting.remove(&key);
        if let (Phase::Waiting(w), Some(asker)) = (&c.phase, &mut self.asker) {
            asker.cancel(w.call);
        }
        if let Phase::Stream(sub) = &c.phase {
            self.streams.closed(sub.counted.then_some(c.ip));
            if let Some(moved) = self.hub.unsubscribe(sub.channel, sub.index) {
                if let Some(Phase::Stream(m)) =
                    self.conns.get_mut(moved as usize).map(|c| &mut c.phase)
                {
                    m.index = sub.index;
                }
            }
        }
        self.acceptor.descriptor_freed(self.clock.now());
    }

    fn begin_shutdown(&mut self) {
        self.draining = Some(self.clock.now() + self.cfg.shutdown_grace);
        self.acceptor.stop(self.poll.registry());
        log::info!(
            "shutting down: {} connections, grace {:?}",
            self.conns.len(),
            self.cfg.shutdown_grace
        );
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(c) = self.conns.get(key) else {
                continue;
            };
            match &c.phase {
                Phase::Stream(_) => self.end_stream(key),
                Phase::Request { reader, .. } => {
                    if reader.is_none() && c.out.is_empty() && !c.readable {
                        // Idle keep-alive: nothing unread, nothing owed.
                        self.close(key);
                    } else {
                        // Answer what has arrived (with `Connection: close`,
                        // as `draining` is set), then the lingering close.
                        self.drive(key);
                    }
                }
                Phase::Waiting(_) => self.close(key),
                Phase::Closing { .. } => {}
            }
        }
    }

    /// Last chance to send what is pending, then a clean end: the last
    /// chunk (when everything else went out) and FIN.
    pub(crate) fn end_stream(&mut self, key: usize) {
        self.write_stream(key);
        if let Some(c) = self.conns.get_mut(key) {
            let done =
                c.out.is_empty() && c.subscriber().is_some_and(|s| s.chunked && s.at_boundary());
            if done {
                let _ = conn::write_vectored(&mut c.stream, &[IoSlice::new(sse::LAST_CHUNK)]);
            }
            let _ = c.stream.shutdown(Shutdown::Write);
        }
        self.close(key);
    }
}
