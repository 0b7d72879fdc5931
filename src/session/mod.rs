//! A connection's request phase, and the glue between the request reader
//! and the routes: flushing responses, reading within a fair budget,
//! handing bytes to the reader (`reader.rs`), which hands each complete
//! request here; routing it (`routes::resolve`) and calling the endpoint's
//! handler with the parts it uses; writing the answer and the access-log
//! line; the lingering close after a last answer. The loop itself is in
//! `server.rs`; subscribing is `session/subscribe.rs`, private channels'
//! bookkeeping (grants, expiry, revocation) `session/private.rs`.

mod private;
mod scaled;
mod stages;

pub(crate) use scaled::Scaled;

use std::net::IpAddr;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::channel::Stamp;
use crate::conn::{self, Io, Phase, Side};
use crate::http::{HttpError, Request};
use crate::outbound::Verdict;
use crate::reader::{self, Gate, Handler, Limits, MAX_OUT_BACKLOG};
use crate::routes::publish::{self, Publish, Published};
use crate::routes::{
    client_ip, cors_headers, may_see_names, page, resolve, status, LogQuery, LogSafe, Refusal,
    Reply, Resolved, Route,
};
use crate::server::{Server, READS_PER_TURN};
use crate::stats::{Reject, Snapshot};

/// How long a lingering close waits for the peer to close.
const LINGER: Duration = Duration::from_secs(2);

/// A connection's side of the request reader: requests go to the routes.
pub(crate) struct Requests<'a> {
    pub server: &'a mut Server,
    pub key: usize,
}

impl Handler for Requests<'_> {
    fn gate(&self) -> Gate {
        match self.server.conns.get(self.key) {
            Some(c) if matches!(c.phase, crate::conn::Phase::Request { .. }) && !c.close_after => {
                // A publish waiting for Redis holds back what follows it.
                if c.out.len() > MAX_OUT_BACKLOG
                    || self.server.scaled.awaiting.contains_key(&self.key)
                {
                    Gate::Backlogged
                } else {
                    Gate::Open
                }
            }
            _ => Gate::Shut,
        }
    }

    fn request(&mut self, req: &Request<'_>, body: &[u8]) {
        self.server.stats.requests += 1;
        self.server.handle(self.key, req, body);
    }

    fn fail(&mut self, e: &HttpError, head: bool) {
        self.server.fail(self.key, e, head);
    }

    fn send_continue(&mut self) {
        if let Some(c) = self.server.conns.get_mut(self.key) {
            c.out
                .buf()
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
    }
}

impl Server {
    /// Flushes responses, reads and hands over requests. Returns true when
    /// the connection changed phase and must be driven again.
    pub(crate) fn drive_request(&mut self, key: usize) -> bool {
        let mut reads = 0;
        loop {
            let before = self.conns.get(key).map_or(0, |c| c.out.len());
            if !self.flush_out(key) {
                return false;
            }
            let Some(c) = self.conns.get_mut(key) else {
                return false;
            };
            let Phase::Request { reader, .. } = &c.phase else {
                return true;
            };
            let (buffered, backlogged) = reader
                .as_ref()
                .map_or((false, false), |r| (true, r.is_backlogged()));
            let left = c.out.len();
            if left > 0 && left < before {
                // The client reads its responses: give it the write timeout,
                // not the request deadline, while a large output drains.
                self.after(key, self.cfg.write_timeout);
            }
            let Some(c) = self.conns.get_mut(key) else {
                return false;
            };
            if c.close_after {
                if left == 0 {
                    self.begin_close(key);
                    return true;
                }
                return false;
            }
            if left > reader::MAX_OUT_BACKLOG || self.scaled.awaiting.contains_key(&key) {
                return false;
            }
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
            match conn::read(&mut c.stream, &mut scratch) {
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

    /// Hands the new bytes to the request reader; sets the deadline for
    /// what is left.
    fn on_request_bytes(&mut self, key: usize, bytes: &[u8]) {
        let Some(Phase::Request { reader, .. }) = self.conns.get_mut(key).map(|c| &mut c.phase)
        else {
            return;
        };
        let reader = reader.take();
        let limits = Limits {
            max_header_bytes: self.cfg.max_header_bytes,
            max_body_bytes: self.cfg.max_body_bytes,
        };
        let fed = reader::feed(reader, bytes, limits, &mut Requests { server: self, key });
        // The connection may have become a stream or closed meanwhile.
        let Some(Phase::Request { reader, idle }) = self.conns.get_mut(key).map(|c| &mut c.phase)
        else {
            return;
        };
        let timeout = match fed.reader {
            Some(r) => {
                // A request began after an answered one (or on an idle
                // keep-alive connection): its deadline starts now. A fresh
                // connection keeps the deadline set when it was accepted.
                // Requests waiting for output to drain are on the write
                // timeout instead (set as the output drains).
                let t = if r.is_backlogged() {
                    Some(self.cfg.write_timeout)
                } else if *idle || fed.handled {
                    Some(self.cfg.header_timeout)
                } else {
                    None
                };
                if t.is_some() {
                    *idle = false;
                }
                *reader = Some(r);
                t
            }
            None if fed.handled => {
                *idle = true;
                Some(self.cfg.idle_timeout)
            }
            None => None,
        };
        if let Some(t) = timeout {
            self.after(key, t);
        }
    }

    /// Answers a request that cannot be followed by another on this
    /// connection (the framing is unknown or broken), then closes.
    pub(crate) fn fail(&mut self, key: usize, e: &HttpError, head_only: bool) {
        match e.status {
            400 | 501 | 505 => self.stats.reject(Reject::BadRequest),
            413 => self.stats.reject(Reject::TooLarge),
            _ => {}
        }
        log::debug!("request refused: {} {}", e.status, e.message);
        self.respond_error(key, e, &[], head_only);
    }

    /// An error answer when the request itself could not be read; the
    /// connection closes after it.
    pub(crate) fn respond_error(
        &mut self,
        key: usize,
        e: &HttpError,
        extra: &[&str],
        head_only: bool,
    ) {
        self.send(key, &Reply::error(e, extra, &[]), false, head_only);
    }

    /// Writes out the connection's pending output. Returns false when the
    /// connection was closed.
    fn flush_out(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        let flushed = c.flush();
        self.stats.bytes_written += flushed.bytes as u64;
        if flushed.failed {
            self.close(key);
        }
        !flushed.failed
    }

    /// Starts a lingering close: flush, shut the write side, wait for EOF.
    pub(crate) fn begin_close(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.close_after = true;
        c.phase = Phase::Closing { shut: false };
        self.after(key, LINGER.max(self.cfg.write_timeout));
        self.drive_closing(key);
    }

    pub(crate) fn drive_closing(&mut self, key: usize) {
        if !self.flush_out(key) {
            return;
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if !c.out.is_empty() {
            return;
        }
        if let Phase::Closing { shut } = &mut c.phase {
            if !*shut {
                *shut = true;
                if c.stream.shutdown(Shutdown::Write).is_err() {
                    return self.close(key);
                }
                self.after(key, LINGER);
            }
        }
        // Discard whatever the peer still sends until it closes.
        self.discard_or_close(key);
    }

    /// Reads and drops input; closes the connection when the peer did.
    /// Returns false when it was closed.
    pub(crate) fn discard_or_close(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        if c.discard_input(&mut self.scratch) {
            self.close(key);
            return false;
        }
        true
    }

    /// Routes one request and writes the access-log line.
    pub(crate) fn handle(&mut self, key: usize, req: &Request<'_>, body: &[u8]) {
        let started = Instant::now();
        self.last_response = (0, 0);
        self.route(key, req, body);
        if self.cfg.access_log {
            let (status, bytes) = self.last_response;
            let peer = self.conns.get(key).map(|c| c.ip);
            let client = peer.map(|p| client_ip(&self.cfg, p, req).to_string());
            log::info!(
                "{} \"{} {}{}{}\" {} {} {}us",
                client.as_deref().unwrap_or("-"),
                req.method,
                LogSafe(req.path),
                if req.query.is_empty() { "" } else { "?" },
                LogQuery(req.query),
                status,
                bytes,
                started.elapsed().as_micros()
            );
        }
    }

    fn route(&mut self, key: usize, req: &Request<'_>, body: &[u8]) {
        let keep_alive = req.keep_alive && self.draining.is_none();
        let peer = self
            .conns
            .get(key)
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.ip);
        let client = client_ip(&self.cfg, peer, req);
        let cors = cors_headers(&self.cfg.cors, req.origin);
        let side = self.conns.get(key).map_or(Side::Public, |c| c.side);
        let answer = match resolve(req, &self.cfg, side) {
            Resolved::Answered(a) => a,
            Resolved::Endpoint(Route::Stream) => {
                return self.subscribe(key, req, None, client, keep_alive)
            }
            Resolved::Endpoint(Route::StatusStream) => {
                let ch = status::channel_for(may_see_names(&self.cfg, peer, req));
                return self.subscribe(key, req, Some(ch), client, keep_alive);
            }
            Resolved::Endpoint(Route::Broadcast) => {
                let started = Instant::now();
                let r = self.publish(key, req, body, client, &cors, keep_alive);
                self.stats
                    .observe_publish(started.elapsed().as_micros() as u64);
                match r {
                    Ok(None) => return, // answered when Redis has it
                    Ok(Some(reply)) => Ok(reply),
                    Err(r) => Err(r),
                }
            }
            Resolved::Endpoint(Route::Close) => self.close_streams(req, body, client, &cors),
            Resolved::Endpoint(Route::Metrics) => {
                let names = may_see_names(&self.cfg, peer, req);
                Ok(status::metrics(&self.snapshot(names), &cors))
            }
            Resolved::Endpoint(Route::Favicon) => Ok(page::favicon()),
            Resolved::Endpoint(Route::Ui) => page::ui(&self.cfg, client),
            Resolved::Endpoint(Route::Status) => {
                let names = may_see_names(&self.cfg, peer, req);
                Ok(status::status(&self.snapshot(names), &cors))
            }
            Resolved::Endpoint(Route::Health) => Ok(status::health(
                self.draining.is_some(),
                self.hub.subscriber_count(),
                self.redis.as_ref().map(|l| l.is_up()),
                &cors,
            )),
            Resolved::Endpoint(Route::NotFound) => return,
        };
        let reply = answer.unwrap_or_else(|r| self.refusal(req, r));
        self.send(key, &reply, keep_alive, req.method == "HEAD");
    }

    /// Counts and logs a refusal; its reply carries CORS headers.
    fn refusal(&mut self, req: &Request<'_>, r: Refusal) -> Reply {
        if let Some(why) = r.reason {
            self.stats.reject(why);
        }
        log::debug!(
            "{} {} -> {} {}",
            req.method,
            req.path,
            r.error.status,
            r.error.message
        );
        let cors = cors_headers(&self.cfg.cors, req.origin);
        Reply::error(&r.error, r.headers, &cors)
    }

    /// Queues a reply on the connection (`head_only`: an answer to HEAD,
    /// without content).
    pub(crate) fn send(&mut self, key: usize, reply: &Reply, keep_alive: bool, head_only: bool) {
        let sent = if head_only { 0 } else { reply.body.len() };
        self.last_response = (reply.status, sent);
        let date = self.clock.http_date().to_string();
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        reply.write_to(c.out.buf(), &date, keep_alive, head_only);
        if !keep_alive {
            c.close_after = true;
        }
    }

    /// A publish: validated, then appended here, or sent to Redis (`None`:
    /// the answer comes when Redis has it). With an `Idempotency-Key`, the
    /// answer stored for the same key is repeated instead (422 for another
    /// body).
    fn publish(
        &mut self,
        key: usize,
        req: &Request<'_>,
        body: &[u8],
        client: IpAddr,
        cors: &[String],
        keep_alive: bool,
    ) -> Result<Option<Reply>, Refusal> {
        self.stats.publish_requests += 1;
        let scaled = self.redis.is_some();
        let events = publish::check(req, body, client, &self.cfg, &self.hub, !scaled)?;
        let batch = publish::body_is_array(req, body);
        let idem = publish::idempotency(req, body, &self.cfg)?;
        if scaled {
            let stored = idem.map(|(scope, hash)| {
                (
                    crate::idempotency::hex(&scope),
                    crate::idempotency::hex(&hash),
                )
            });
            return match self.publish_to_redis(key, &events, stored, keep_alive, cors, batch) {
                Ok(()) => Ok(None),
                Err(reply) => Ok(Some(reply)),
            };
        }
        let now_ms = self.clock.ms();
        if let Some((scope, hash)) = &idem {
            use crate::idempotency::Lookup;
            match self.idempotency.lookup(scope, hash, now_ms) {
                Lookup::Replay(answer) => {
                    let answer = answer.to_vec();
                    return Ok(Some(Reply::json(
                        200,
                        answer,
                        &["Idempotent-Replayed: true"],
                        cors,
                    )));
                }
                Lookup::Conflict => return Err(publish::idempotency_conflict()),
                Lookup::New => {}
            }
        }
        let published = self.publish_all(&events);
        let answer = publish::answer(&published, batch);
        if let Some((scope, hash)) = idem {
            self.idempotency.store(scope, hash, answer.clone(), now_ms);
        }
        Ok(Some(Reply::json(200, answer, &[], cors)))
    }

    /// The time of a publish or a new channel: the wall clock for ids,
    /// this turn's monotonic time for ages.
    pub(crate) fn stamp(&self) -> Stamp {
        Stamp {
            unix_us: self.clock.unix_micros(),
            mono_ms: self.clock.ms(),
        }
    }

    /// Once a second while anyone watches `/events/status/stream`, publish
    /// the status document to the status channels (names in the first).
    pub(crate) fn publish_status(&mut self) {
        let Some(next) = self.status_next else {
            return;
        };
        if self.clock.now() < next {
            return;
        }
        // The status channels (`$status` with channel names, then
        // `$status:totals` without), by name: a freed channel's index may
        // belong to another by now.
        let mut watched = false;
        let names = [
            crate::routes::STATUS_CHANNEL,
            crate::routes::STATUS_TOTALS_CHANNEL,
        ];
        for (i, name) in names.into_iter().enumerate() {
            let Some(ch) = self
                .hub
                .find(name)
                .filter(|&ch| !self.hub.get(ch).subscribers.is_empty())
            else {
                continue;
            };
            watched = true;
            let doc = self.snapshot(i == 0).status_json().to_string();
            if self.publish_event(ch, Some("status"), &doc).is_err() {
                log::warn!("status document larger than the channel history; not published");
            }
        }
        self.status_next = watched.then(|| self.clock.now() + Duration::from_secs(1));
    }

    /// Publishes validated events in order (see `routes::publish::check`).
    pub(crate) fn publish_all<'a>(&mut self, events: &'a [Publish<'_>]) -> Vec<Published<'a>> {
        let now = self.stamp();
        let mut published = Vec::with_capacity(events.len());
        for ev in events {
            let Some(ch) = self.hub.channel(&ev.channel, now) else {
                continue; // cannot happen: checked before
            };
            match self.publish_event(ch, ev.event.as_deref(), &ev.data) {
                Ok(id) => {
                    self.stats.events_published += 1;
                    published.push(Published {
                        id,
                        channel: &ev.channel,
                        subscribers: self.hub.get(ch).subscribers.len(),
                    });
                }
                Err(e) => log::error!("publish refused after checks: {e:?}"),
            }
        }
        published
    }

    /// What the status endpoints show; `names`: channel names too.
    pub(crate) fn snapshot(&self, names: bool) -> Snapshot<'_> {
        Snapshot {
            stats: &self.stats,
            hub: &self.hub,
            cfg: &self.cfg,
            connections: self.conns.len(),
            max_connections: self.streams.max(),
            accept_cap: self.accept_cap,
            uptime_secs: self.clock.uptime_secs(),
            draining: self.draining.is_some(),
            names,
            auth: self.asker.as_ref().map(|a| a.view()),
            redis: self.redis.as_ref().map(|l| crate::stats::RedisView {
                state: l.state(),
                address: l.address().to_string(),
                reconnects: l.stats.reconnects,
                last_error: l.stats.last_error.clone(),
                followed: l.followed(),
                publish_refused: l.stats.publish_refused,
            }),
        }
    }

    /// The I/O deadline of a connection that is not a stream came.
    pub(crate) fn on_request_deadline(&mut self, key: usize) {
        let Some(c) = self.conns.get(key) else {
            return;
        };
        match &c.phase {
            Phase::Request { .. } if !c.out.is_empty() => {
                // Timers run on the write timeout while output drains
                // (see drive_request): no progress for that long.
                log::debug!("client does not read its responses; closing");
                self.close(key);
            }
            Phase::Request {
                reader: Some(r), ..
            } => {
                let head = r.is_head();
                self.stats.reject(Reject::HeaderTimeout);
                log::debug!("request not complete before the header deadline");
                let e = HttpError::new(408, "request not complete before the header deadline");
                self.respond_error(key, &e, &[], head);
                self.begin_close(key);
            }
            Phase::Waiting(w) if w.held.is_some() => self.heartbeat_held(key),
            Phase::Waiting(_) => self.resume_stream(key, Verdict::TimedOut),
            _ => self.close(key),
        }
    }
}
