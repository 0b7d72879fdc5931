//! Subscribing, the session's side: the stages of `routes/subscribe.rs` run
//! in order (admit, authorise, find the start, the head), waiting on the
//! application when it must be asked (forward auth: `Phase::Waiting`,
//! resumed in one place, `Server::resume_stream`), and attaching the
//! connection as a subscriber.

use std::borrow::Cow;
use std::net::IpAddr;

use mio::Token;

use crate::conn::{Phase, Waiting};
use crate::http::{HttpError, Request};
use crate::outbound::auth::{Asked, Facts};
use crate::outbound::Verdict;
use crate::routes::subscribe::{self, Attach, Authorised, Target};
use crate::routes::{cors_headers, Refusal, Reply, STATUS_CHANNEL, STATUS_TOTALS_CHANNEL};
use crate::server::Server;
use crate::stats::Reject;
use crate::stream::Subscriber;
use crate::timer::Timer;

/// A subscribe that went through.
enum Opened {
    Stream(Attach),
    /// A HEAD: the stream's head, and no stream.
    Head(Vec<u8>),
    /// Redis mode, after forward auth: the stream starts in
    /// `start_scaled` (with this grant).
    Scaled(Option<(u64, Option<Box<str>>)>),
}

impl Server {
    pub(super) fn subscribe(
        &mut self,
        key: usize,
        req: &Request<'_>,
        fixed: Option<&'static str>,
        client: IpAddr,
        keep_alive: bool,
    ) {
        let head_only = req.method == "HEAD";
        let chunked = !req.http10;
        let cors = cors_headers(&self.cfg.cors, req.origin);
        let status = matches!(fixed, Some(STATUS_CHANNEL | STATUS_TOTALS_CHANNEL));
        let opened = match self.admit_stream(req, fixed, client) {
            Ok((target, Authorised::Ask)) => {
                let waiting = Waiting {
                    call: 0,
                    channel: target.channel.into(),
                    last_id: target.last_id.map(Into::into),
                    chunked,
                    cors,
                    status,
                    head_only,
                    client,
                    held: None,
                };
                return self.ask_application(key, req, waiting);
            }
            Ok((target, _)) if head_only => {
                self.head_of_stream(&target, chunked, &cors, keep_alive)
            }
            Ok((target, authorised)) if self.redis.is_some() && !status => {
                let w = Waiting {
                    call: 0,
                    channel: target.channel.as_ref().into(),
                    last_id: None,
                    chunked,
                    cors: cors.clone(),
                    status,
                    head_only,
                    client,
                    held: None,
                };
                match self.start_scaled(key, &target, w, authorised) {
                    Ok(()) => return,
                    Err(r) => Err(r),
                }
            }
            Ok((target, authorised)) => self
                .start_stream(&target, chunked, &cors, client, authorised)
                .map(Opened::Stream),
            Err(r) => Err(r),
        };
        match opened {
            Ok(o) => self.open(key, o, status, keep_alive),
            Err(r) => {
                let reply = self.refusal(req, r);
                self.send(key, &reply, keep_alive, head_only);
            }
        }
    }

    /// A subscribe that went through: the stream, or the head of one.
    fn open(&mut self, key: usize, opened: Opened, status: bool, keep_alive: bool) {
        match opened {
            Opened::Scaled(_) => {}
            Opened::Stream(a) => self.attach(key, a, status),
            Opened::Head(head) => {
                self.last_response = (200, 0);
                if let Some(c) = self.conns.get_mut(key) {
                    c.out.buf().extend_from_slice(&head);
                    c.close_after |= !keep_alive;
                }
            }
        }
    }

    /// Authorisation is the application's to say (forward auth): the
    /// connection waits for the answer (`Phase::Waiting`, its deadline on
    /// the I/O timer) unless the cache knows it.
    fn ask_application(&mut self, key: usize, req: &Request<'_>, mut w: Waiting) {
        let (Some(asker), Some(c)) = (self.asker.as_mut(), self.conns.get_mut(key)) else {
            return self.close(key);
        };
        let forwarded_for = match req.forwarded_for.filter(|x| !x.is_empty()) {
            Some(x) => format!("{x}, {}", c.ip),
            None => c.ip.to_string(),
        };
        let facts = Facts {
            cookie: req.cookie,
            authorization: req.authorization,
            forwarded_for: &forwarded_for,
            last_event_id: w.last_id.as_deref(),
            channel: &w.channel,
        };
        let asked = asker.ask(key, &facts, self.clock.now(), self.poll.registry());
        let timeout = asker.timeout();
        let known = match asked {
            Asked::Waiting(call) => {
                w.call = call;
                None
            }
            Asked::Answer(verdict) => Some(verdict),
        };
        c.phase = Phase::Waiting(Box::new(w));
        match known {
            Some(verdict) => self.resume_stream(key, verdict),
            None => self.after(key, timeout),
        }
        self.deliver_answers();
    }

    /// Readiness of a connection to the application.
    pub(crate) fn on_outbound(&mut self, t: Token, r: bool, w: bool) {
        if let Some(asker) = self.asker.as_mut() {
            asker.ready(t, r, w, self.clock.now(), self.poll.registry());
            self.deliver_answers();
        }
    }

    /// Hands each answer to the client still waiting for exactly that call
    /// (a slot reused by another client has another call id).
    fn deliver_answers(&mut self) {
        let Some(asker) = self.asker.as_mut() else {
            return;
        };
        for a in asker.take_answers() {
            let waiting = match self.conns.get(a.key).map(|c| &c.phase) {
                Some(Phase::Waiting(w)) => w.call == a.call,
                _ => false,
            };
            if waiting {
                self.resume_stream(a.key, a.verdict);
            }
        }
    }

    /// The one way out of `Phase::Waiting`: the answer came, or the
    /// deadline passed. Allowed: the remaining stages run as for any
    /// subscribe (admission again, the channel, the start, the head,
    /// attach). 401/403: passed on, then the connection closes. Anything
    /// else: closed without an answer, so EventSource retries.
    pub(crate) fn resume_stream(&mut self, key: usize, verdict: Verdict) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let idle = Phase::Request {
            reader: None,
            idle: false,
        };
        let Phase::Waiting(w) = std::mem::replace(&mut c.phase, idle) else {
            return;
        };
        self.wheel.cancel(Timer::io(key));
        let opened = match verdict {
            Verdict::Allow { expires_unix } => match self.allowed(&w, expires_unix) {
                Ok(Opened::Scaled(grant)) => {
                    let target = Target {
                        channel: Cow::Owned(w.channel.to_string()),
                        last_id: w.last_id.as_deref().map(|s| Cow::Owned(s.to_string())),
                    };
                    let authorised = match grant {
                        Some((exp, _)) => Authorised::Until {
                            exp_unix: exp.saturating_sub(crate::auth::LEEWAY_SECS),
                            sub: None,
                        },
                        None => Authorised::Open,
                    };
                    let again = Waiting {
                        call: 0,
                        channel: w.channel.clone(),
                        last_id: None,
                        chunked: w.chunked,
                        cors: w.cors.clone(),
                        status: w.status,
                        head_only: false,
                        client: w.client,
                        held: None,
                    };
                    match self.start_scaled(key, &target, again, authorised) {
                        Ok(()) => return self.drive(key),
                        Err(r) => Err(r),
                    }
                }
                other => other,
            },
            Verdict::Unauthorized => Err(Refusal::new(
                HttpError::new(401, "the application did not authorise this subscription"),
                Reject::Unauthorized,
            )
            .with_headers(&["WWW-Authenticate: Bearer"])),
            Verdict::Forbidden => Err(Refusal::new(
                HttpError::new(403, "the application refused this subscription"),
                Reject::Forbidden,
            )),
            Verdict::TimedOut | Verdict::Failed => {
                if let (Verdict::TimedOut, Some(asker)) = (verdict, self.asker.as_mut()) {
                    asker.timed_out(w.call);
                }
                return self.close(key);
            }
        };
        match opened {
            Ok(o) => self.open(key, o, w.status, false),
            Err(r) => {
                if let Some(why) = r.reason {
                    self.stats.reject(why);
                }
                log::debug!(
                    "subscribe to {} -> {} {}",
                    w.channel,
                    r.error.status,
                    r.error.message
                );
                let reply = Reply::error(&r.error, r.headers, &w.cors);
                self.send(key, &reply, false, w.head_only);
            }
        }
        self.drive(key);
    }

    /// The stages after an allowed answer.
    fn allowed(&mut self, w: &Waiting, expires_unix: Option<u64>) -> Result<Opened, Refusal> {
        // Streams may have opened (or a shutdown begun) meanwhile.
        let admission = self.streams.admission(self.draining.is_some(), w.client);
        subscribe::admit(&admission)?;
        subscribe::admit_client(&admission, w.client)?;
        let target = Target {
            channel: Cow::Borrowed(&w.channel),
            last_id: w.last_id.as_deref().map(Cow::Borrowed),
        };
        if w.head_only {
            return self.head_of_stream(&target, w.chunked, &w.cors, false);
        }
        // A revocation may have come while the application was asked.
        if let Some(what) = self.grants.barred(&w.channel, None, self.clock.unix_secs()) {
            return Err(crate::routes::admin::revoked(&what));
        }
        if self.redis.is_some() && !w.status {
            return Ok(Opened::Scaled(expires_unix.map(|e| (e, None))));
        }
        let mut a = self.start_stream(&target, w.chunked, &w.cors, w.client, Authorised::Open)?;
        // The application's `X-Ssecast-Expires` ends the stream like a
        // token's `exp`, without a leeway: it is relative to now, so no
        // clocks have to agree.
        a.grant = expires_unix.map(|e| (e, None));
        Ok(Opened::Stream(a))
    }

    /// A connection waiting for the application: flush what earlier
    /// requests are owed, and notice the client leaving (its call is then
    /// cancelled in `close`).
    pub(crate) fn drive_waiting(&mut self, key: usize) {
        if self.flush_out(key) {
            self.discard_or_close(key);
        }
    }

    /// The first stages of subscribing (see `subscribe.rs`): admit,
    /// what is asked for, the per-client limit, authorise.
    fn admit_stream<'r>(
        &mut self,
        req: &Request<'r>,
        fixed: Option<&'static str>,
        client: IpAddr,
    ) -> Result<(Target<'r>, Authorised), Refusal> {
        let admission = self.streams.admission(self.draining.is_some(), client);
        subscribe::admit(&admission)?;
        let target = subscribe::target(req, fixed)?;
        subscribe::admit_client(&admission, client)?;
        let authorised = self.authorise_stream(req, &target)?;
        Ok((target, authorised))
    }

    /// The last stages: the channel, where in its log to start, the head.
    pub(super) fn start_stream(
        &mut self,
        target: &Target<'_>,
        chunked: bool,
        cors: &[String],
        client: IpAddr,
        authorised: Authorised,
    ) -> Result<Attach, Refusal> {
        let now = self.stamp();
        let ch = subscribe::find_channel(&mut self.hub, &target.channel, now)?;
        let start = subscribe::find_start(&self.hub.get(ch).log, target.last_id.as_deref());
        if start.lost_notice.is_some() {
            self.stats.history_lost_sent += 1;
        }
        let retry = match self.cfg.retry_ms {
            0 => 0,
            ms => ms + self.jitter.draw() % (ms / 2 + 1),
        };
        let head = subscribe::head(
            self.clock.http_date(),
            cors,
            chunked,
            retry,
            start.lost_notice.as_deref(),
        );
        Ok(Attach {
            channel: ch,
            cursor: start.cursor,
            head,
            chunked,
            counted: self.streams.counted_as(client),
            grant: authorised.into_grant(),
        })
    }

    /// HEAD of a stream: the status and headers a GET would get, and the
    /// connection stays open for the next request. Creates no channel.
    fn head_of_stream(
        &mut self,
        target: &Target<'_>,
        chunked: bool,
        cors: &[String],
        keep_alive: bool,
    ) -> Result<Opened, Refusal> {
        subscribe::room_for(&self.hub, &target.channel)?;
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let date = self.clock.http_date();
        Ok(Opened::Head(subscribe::head_lines(
            date, cors, chunked, connection,
        )))
    }

    /// Turns a connection into a subscriber: its place in the channel, its
    /// per-client count, the stream's head queued, the heartbeat timer.
    pub(crate) fn attach(&mut self, key: usize, a: Attach, status: bool) {
        self.last_response = (200, 0);
        let now_ms = self.clock.ms();
        let index = self.hub.subscribe(a.channel, key as u32);
        let mut sub = Subscriber::new(
            a.channel,
            index,
            a.cursor,
            &self.hub.get(a.channel).log,
            a.chunked,
            now_ms,
        );
        sub.counted = a.counted.is_some();
        self.streams.opened(a.counted);
        if let Some(c) = self.conns.get_mut(key) {
            if let Some(ip) = a.counted {
                c.ip = ip;
            }
            // Responses to requests pipelined before this one go out first.
            c.out.push_vec(a.head);
            c.phase = Phase::Stream(sub);
        }
        self.schedule_heartbeat(key, now_ms);
        if let Some((exp, sub)) = a.grant {
            self.hold_grant(key, exp, sub);
        }
        if status {
            self.status_next.get_or_insert(self.clock.now());
        }
    }
}
