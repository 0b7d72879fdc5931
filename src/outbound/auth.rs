//! Forward auth: asking the application whether a client may subscribe
//! (`--subscribe-auth-url`). One room with a narrow call: [`Asker::ask`]
//! starts a call (or answers from the cache), [`Asker::ready`] hands back
//! the answers that came, [`Asker::cancel`] forgets a call whose client
//! left or whose deadline passed (the client's I/O timer is the deadline).
//!
//! Calls run on a small pool of keep-alive connections in the loop's
//! `mio::Poll` (tokens from [`TOKEN_BASE`] up, far from the slab keys of
//! client connections), one call per connection (no pipelining), at most
//! `max_inflight` at once; more wait in a bounded queue. Every call is
//! tagged with the client's slab key and a call id that is never reused,
//! so an answer that comes after its client left is never given to the
//! next connection in that slot.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::cache::{self, Cache, Key};
use super::http::{self, Link, Progress, Response, Url};

/// The first mio token of outbound connections: half-way up, far above any
/// slab key and below the listener's and the signals' reserved tokens.
pub const TOKEN_BASE: usize = usize::MAX / 2;
/// Outbound tokens in all (one per pool slot).
pub const TOKENS: usize = 1 << 16;
/// Idle connections kept for the next calls.
const IDLE_KEPT: usize = 8;

/// The asker of a configuration with `--subscribe-auth-url`; its host is
/// resolved once, here.
pub fn from_config(cfg: &crate::config::Config) -> io::Result<Option<Asker>> {
    use std::net::ToSocketAddrs;
    let Some(url) = &cfg.subscribe_auth_url else {
        return Ok(None);
    };
    let unresolved =
        |e: String| io::Error::other(format!("--subscribe-auth-url host {}: {e}", url.host));
    let addr = (url.socket_host(), url.port)
        .to_socket_addrs()
        .map_err(|e| unresolved(e.to_string()))?
        .next()
        .ok_or_else(|| unresolved("no address".into()))?;
    let auth = AuthConfig {
        url: url.clone(),
        timeout: cfg.subscribe_auth_timeout,
        cache_ttl: cfg.subscribe_auth_cache,
        max_inflight: cfg.subscribe_auth_max_inflight,
    };
    Ok(Some(Asker::new(auth, addr)))
}

pub fn is_outbound(t: Token) -> bool {
    (TOKEN_BASE..TOKEN_BASE + TOKENS).contains(&t.0)
}

/// Settings of the forward-auth call.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub url: Url,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub max_inflight: usize,
}

/// What the application's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx; `expires_unix` from `X-Ssecast-Expires: SECS`.
    Allow { expires_unix: Option<u64> },
    /// 401: passed on with `WWW-Authenticate: Bearer`.
    Unauthorized,
    /// 403: passed on.
    Forbidden,
    /// Any other answer, no answer, or too many calls: the client is
    /// closed without an answer (EventSource retries a network error, and
    /// gives up for good on a 503).
    Failed,
    /// No answer within the timeout: closed like `Failed`.
    TimedOut,
}

/// What the hub passes on to the application.
pub struct Facts<'a> {
    pub cookie: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// The client's `X-Forwarded-For` with its address appended.
    pub forwarded_for: &'a str,
    pub last_event_id: Option<&'a str>,
    pub channel: &'a str,
}

/// What [`Asker::ask`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// Known at once (the cache, or a call that could not start).
    Answer(Verdict),
    /// Wait for the answer of this call.
    Waiting(u64),
}

/// An answer for the client `key`, to call `call`.
#[derive(Debug)]
pub struct Answer {
    pub key: usize,
    pub call: u64,
    pub verdict: Verdict,
}

/// Counters for the status document and `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct AuthStats {
    pub calls: u64,
    pub allowed: u64,
    pub denied: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub cache_hits: u64,
}

/// What the status document and `/metrics` show of forward auth.
#[derive(Debug, Clone)]
pub struct AuthView {
    pub stats: AuthStats,
    pub in_flight: usize,
    pub queued: usize,
    pub cache_entries: usize,
    pub cache_bytes: usize,
}

impl AuthView {
    pub fn json(&self) -> serde_json::Value {
        let s = &self.stats;
        serde_json::json!({
            "calls": s.calls,
            "allowed": s.allowed,
            "denied": s.denied,
            "failed": s.failed,
            "timeouts": s.timeouts,
            "cache_hits": s.cache_hits,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "cache_entries": self.cache_entries,
            "cache_bytes": self.cache_bytes,
        })
    }

    /// Prometheus families, appended to `o`.
    pub fn metrics(&self, o: &mut String) {
        use std::fmt::Write;
        let s = &self.stats;
        let _ = writeln!(o, "# HELP ssecast_forward_auth_calls_total Calls to the application's auth URL.\n# TYPE ssecast_forward_auth_calls_total counter\nssecast_forward_auth_calls_total {}", s.calls);
        let _ = writeln!(o, "# HELP ssecast_forward_auth_answers_total Forward-auth outcomes: allowed, denied (401/403), failed (other answers, errors), timeout.\n# TYPE ssecast_forward_auth_answers_total counter");
        for (what, n) in [
            ("allowed", s.allowed),
            ("denied", s.denied),
            ("failed", s.failed),
            ("timeout", s.timeouts),
        ] {
            let _ = writeln!(
                o,
                "ssecast_forward_auth_answers_total{{outcome=\"{what}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# HELP ssecast_forward_auth_cache_hits_total Subscribes allowed from the cache, without a call.\n# TYPE ssecast_forward_auth_cache_hits_total counter\nssecast_forward_auth_cache_hits_total {}", s.cache_hits);
        let _ = writeln!(o, "# HELP ssecast_forward_auth_in_flight Calls waiting for the application's answer.\n# TYPE ssecast_forward_auth_in_flight gauge\nssecast_forward_auth_in_flight {}", self.in_flight);
        let _ = writeln!(o, "# HELP ssecast_forward_auth_queued Calls waiting for a free connection.\n# TYPE ssecast_forward_auth_queued gauge\nssecast_forward_auth_queued {}", self.queued);
        let _ = writeln!(o, "# HELP ssecast_forward_auth_cache_entries Allowed answers cached.\n# TYPE ssecast_forward_auth_cache_entries gauge\nssecast_forward_auth_cache_entries {}", self.cache_entries);
    }
}

struct Call {
    id: u64,
    key: usize,
    request: Vec<u8>,
    cache: Option<(Key, Box<str>)>,
    retried: bool,
}

struct Slot {
    link: Link<TcpStream>,
    call: Option<Call>,
}

pub struct Asker {
    cfg: AuthConfig,
    addr: SocketAddr,
    slots: Vec<Option<Slot>>,
    idle: Vec<usize>,
    queue: VecDeque<Call>,
    cache: Cache,
    next_id: u64,
    pub stats: AuthStats,
    scratch: Vec<u8>,
    answers: Vec<Answer>,
}

impl Asker {
    /// `addr` is the URL's host, resolved once at start.
    pub fn new(cfg: AuthConfig, addr: SocketAddr) -> Asker {
        Asker {
            cache: Cache::new(cfg.cache_ttl, cache::MAX_ENTRIES, cache::MAX_BYTES),
            cfg,
            addr,
            slots: Vec::new(),
            idle: Vec::new(),
            queue: VecDeque::new(),
            next_id: 1,
            stats: AuthStats::default(),
            scratch: vec![0; 16 * 1024],
            answers: Vec::new(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|s| s.call.is_some())
            .count()
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn view(&self) -> AuthView {
        AuthView {
            stats: self.stats.clone(),
            in_flight: self.in_flight(),
            queued: self.queued(),
            cache_entries: self.cache.len(),
            cache_bytes: self.cache.bytes(),
        }
    }

    /// Revocation: forget the allowed answers for a channel, or all.
    pub fn purge_channel(&mut self, name: &str) -> usize {
        self.cache.purge_channel(name)
    }

    pub fn purge_all(&mut self) {
        self.cache.purge_all()
    }

    /// Asks whether client `key` may subscribe.
    pub fn ask(&mut self, key: usize, f: &Facts<'_>, now: Instant, reg: &Registry) -> Asked {
        let cache_key = self.cache.key(f.cookie, f.authorization, f.channel);
        if let Some(expires_unix) = cache_key.and_then(|k| self.cache.get(k, now)) {
            self.stats.cache_hits += 1;
            return Asked::Answer(Verdict::Allow { expires_unix });
        }
        let mut request = Vec::with_capacity(512);
        let mut headers = vec![
            ("X-Forwarded-For", f.forwarded_for),
            ("X-Ssecast-Channel", f.channel),
        ];
        for (name, v) in [
            ("Cookie", f.cookie),
            ("Authorization", f.authorization),
            ("Last-Event-ID", f.last_event_id),
        ] {
            if let Some(v) = v {
                headers.push((name, v));
            }
        }
        http::write_get(&mut request, &self.cfg.url, &headers);
        self.stats.calls += 1;
        let id = self.next_id;
        self.next_id += 1;
        let call = Call {
            id,
            key,
            request,
            cache: cache_key.map(|k| (k, f.channel.into())),
            retried: false,
        };
        if self.in_flight() >= self.cfg.max_inflight {
            if self.queue.len() >= self.cfg.max_inflight.saturating_mul(4).max(16) {
                log::warn!(
                    "forward auth: {} calls in flight and the queue is full; closing a client",
                    self.cfg.max_inflight
                );
                self.stats.failed += 1;
                return Asked::Answer(Verdict::Failed);
            }
            self.queue.push_back(call);
            return Asked::Waiting(id);
        }
        match self.start(call, now, reg) {
            Ok(()) => Asked::Waiting(id),
            Err(e) => {
                log::warn!("forward auth: cannot connect to {}: {e}", self.addr);
                self.stats.failed += 1;
                Asked::Answer(Verdict::Failed)
            }
        }
    }

    /// The answers that came since the last call (to `ready`, `ask`).
    pub fn take_answers(&mut self) -> Vec<Answer> {
        std::mem::take(&mut self.answers)
    }

    /// Puts a call on an idle connection (and writes it at once: no new
    /// readiness edge would come), or on a new one (written once the
    /// connect completes).
    fn start(&mut self, call: Call, now: Instant, reg: &Registry) -> io::Result<()> {
        let (i, reused) = match self.idle.pop() {
            Some(i) => (i, true),
            None => (self.connect(reg)?, false),
        };
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return Err(io::Error::other("pool slot vanished"));
        };
        slot.link.send(call.request.clone());
        slot.call = Some(call);
        if reused {
            slot.link.writable = true;
            self.drive(i, now, reg);
        }
        Ok(())
    }

    fn connect(&mut self, reg: &Registry) -> io::Result<usize> {
        let i = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.slots.len() < TOKENS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return Err(io::Error::other("no outbound token left")),
        };
        let mut sock = TcpStream::connect(self.addr)?;
        reg.register(
            &mut sock,
            Token(TOKEN_BASE + i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let _ = sock.set_nodelay(true);
        self.slots[i] = Some(Slot {
            link: Link::new(sock),
            call: None,
        });
        Ok(i)
    }

    /// Readiness of outbound connection `t`; answers are kept for
    /// [`Asker::take_answers`].
    pub fn ready(&mut self, t: Token, r: bool, w: bool, now: Instant, reg: &Registry) {
        let i = t.0.wrapping_sub(TOKEN_BASE);
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        slot.link.readable |= r;
        slot.link.writable |= w;
        self.drive(i, now, reg);
    }

    fn drive(&mut self, i: usize, now: Instant, reg: &Registry) {
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        match slot.link.drive(&mut self.scratch) {
            Progress::Pending => return,
            Progress::Answer(resp) => {
                let keep = resp.keep_alive;
                if let Some(call) = slot.call.take() {
                    let verdict = self.verdict(&resp, call.cache.as_ref(), now);
                    self.answers.push(Answer {
                        key: call.key,
                        call: call.id,
                        verdict,
                    });
                }
                if keep && self.idle.len() < IDLE_KEPT {
                    self.idle.push(i);
                } else {
                    self.drop_slot(i);
                }
            }
            Progress::Failed { why, fresh } => {
                let call = slot.call.take();
                self.drop_slot(i);
                if let Some(mut call) = call {
                    if fresh && !call.retried {
                        // The application had closed the idle connection:
                        // the same call once more on a new one.
                        call.retried = true;
                        let (key, id) = (call.key, call.id);
                        if let Err(e) = self.start(call, now, reg) {
                            self.fail(key, id, &e.to_string());
                        }
                    } else {
                        self.fail(call.key, call.id, why);
                    }
                }
            }
        }
        self.next(now, reg);
    }

    fn fail(&mut self, key: usize, call: u64, why: &str) {
        log::warn!(
            "forward auth: call to {} failed: {why}; closing the client",
            self.cfg.url.authority()
        );
        self.stats.failed += 1;
        self.answers.push(Answer {
            key,
            call,
            verdict: Verdict::Failed,
        });
    }

    /// Starts queued calls while there is room.
    fn next(&mut self, now: Instant, reg: &Registry) {
        while self.in_flight() < self.cfg.max_inflight {
            let Some(call) = self.queue.pop_front() else {
                return;
            };
            let (key, id) = (call.key, call.id);
            if let Err(e) = self.start(call, now, reg) {
                self.fail(key, id, &e.to_string());
            }
        }
    }

    fn drop_slot(&mut self, i: usize) {
        self.idle.retain(|&j| j != i);
        if let Some(s) = self.slots.get_mut(i) {
            *s = None;
        }
    }

    /// Maps an answer to a verdict, counts it, caches an allowed one.
    fn verdict(
        &mut self,
        resp: &Response,
        cache: Option<&(Key, Box<str>)>,
        now: Instant,
    ) -> Verdict {
        match resp.status {
            200..=299 => {
                self.stats.allowed += 1;
                let secs = resp
                    .header("x-ssecast-expires")
                    .and_then(|v| v.trim().parse::<f64>().ok());
                let secs = secs
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| s.min(1e9));
                let now_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let expires_unix = secs.map(|s| (now_unix + s).round() as u64);
                if let Some((k, channel)) = cache {
                    let left = secs.map(Duration::from_secs_f64);
                    self.cache.put(*k, channel, expires_unix, left, now);
                }
                Verdict::Allow { expires_unix }
            }
            401 => {
                self.stats.denied += 1;
                Verdict::Unauthorized
            }
            403 => {
                self.stats.denied += 1;
                Verdict::Forbidden
            }
            other => {
                log::warn!("forward auth: the application answered {other}; closing the client");
                self.stats.failed += 1;
                Verdict::Failed
            }
        }
    }

    /// Forgets call `id`: its client left. A call in flight loses its
    /// connection (the answer would come on it later).
    pub fn cancel(&mut self, id: u64) {
        self.queue.retain(|c| c.id != id);
        let i = self.slots.iter().position(|s| {
            s.as_ref()
                .and_then(|s| s.call.as_ref())
                .is_some_and(|c| c.id == id)
        });
        if let Some(i) = i {
            self.drop_slot(i);
        }
        self.answers.retain(|a| a.call != id);
    }

    /// Call `id` found no answer in time.
    pub fn timed_out(&mut self, id: u64) {
        self.stats.timeouts += 1;
        log::warn!(
            "forward auth: no answer from {} within {:?}; closing the client",
            self.cfg.url.authority(),
            self.cfg.timeout
        );
        self.cancel(id);
    }
}
