//! The Redis link: two non-blocking connections in the loop's `Poll`, a
//! command connection (publishes, replays, the channels' tips, fetches;
//! pipelined, replies matched in order) and a follow connection (one
//! `XREAD BLOCK` at a time over two streams whatever the number of
//! channels: the notification stream, where every publish names its
//! channels, and the control stream). A notification naming a followed
//! channel makes it "dirty"; once per loop turn the dirty channels are read
//! (not blocking) on the command connection from their last ids. A
//! blocking read over every followed key would cost Redis work per key on
//! every call (and every call returns at the next publish), and needs a
//! wake-up whenever the set changes; this costs per notification and per
//! channel read. The loop polls the link (`ready`, `tick`)
//! and takes what it hands back (`take_done`): "this publish is
//! acknowledged with these ids", "these entries were appended to channel
//! X", "channel X's tip is N", "a revocation came".
//!
//! Reconnects with backoff and jitter; loads the scripts on every connect;
//! re-sends script calls refused with `NOSCRIPT` in their original order;
//! drops a connection whose replies are late (never resynchronises), fails
//! its publishes (their outcome is unknown) and re-queues its reads.

mod pipe;
pub mod script;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use mio::Token;

use self::pipe::{Resolver, Session, Sock, Target};
pub use self::script::{Appended, Entry, Event, Keys};
use crate::config::{Redis, RedisAddr};

/// The command connection's token and the follow connection's.
pub const CMD: Token = Token(usize::MAX - 10);
pub const FOLLOW: Token = Token(usize::MAX - 11);

pub fn is_redis(t: Token) -> bool {
    t == CMD || t == FOLLOW
}

/// How long one follow read blocks in Redis.
const BLOCK_MS: u64 = 5_000;
/// Entries per stream per read, and per replay page.
pub const PAGE: usize = 500;
/// Publishes, and bytes of data, in one script call at most.
const BATCH_CALLS: usize = 256;
const BATCH_BYTES: usize = 1 << 20;
/// Channels read by one fetch.
const FETCH_KEYS: usize = 1000;
/// Notifications per follow read; a full read means this process may be
/// behind the notification stream's trimming: every channel is read.
const NOTIFY_COUNT: usize = 1000;

/// Why a request got no answer from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not connected (or the connection broke before the command was sent).
    Unavailable(String),
    /// Sent, but not answered (in time, or the connection broke): it may
    /// have run, or may still run.
    Unknown(String),
    /// Redis answered with an error (OOM, LOADING, ...): it did not run.
    Refused(String),
}

/// What the link hands back to the loop.
#[derive(Debug)]
pub enum Done {
    Published {
        call: u64,
        result: Result<Appended, Failure>,
    },
    /// A replay page: the channel's tip and the entries after the id asked.
    Replayed {
        call: u64,
        tip: u64,
        entries: Vec<Entry>,
    },
    /// A followed channel's tip when following began: entries after it
    /// will come as `Entries`.
    Live { channel: Box<str>, tip: u64 },
    Entries {
        channel: Box<str>,
        entries: Vec<Entry>,
    },
    /// An entry of the control stream (revocations) from another process.
    Control(Vec<(Vec<u8>, Vec<u8>)>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Down,
    Connecting,
    Handshake,
    Ready,
}

/// What a command connection's reply belongs to.
#[derive(Debug)]
enum Cmd {
    Hello,
    Policy,
    Load(usize),
    /// One script call for the publishes of a turn.
    Publish {
        calls: Vec<u64>,
        args: Vec<Vec<u8>>,
    },
    Wait {
        calls: Vec<u64>,
    },
    Replay {
        call: u64,
        args: Vec<Vec<u8>>,
    },
    Prime {
        channel: Box<str>,
    },
    /// A read (not blocking) of channels the notification stream named.
    Fetch {
        channels: Vec<Box<str>>,
    },
    Control {
        args: Vec<Vec<u8>>,
    },
}

#[derive(Debug)]
enum Fol {
    Hello,
    /// The notification stream's last id, read before the first follow
    /// read (never `$`: it could skip an entry).
    Tip,
    Read,
}

/// One connection: its socket, protocol session and reconnect state.
struct Line<W> {
    token: Token,
    sock: Option<Sock>,
    session: Session<W>,
    state: State,
    failures: u32,
    retry_at: Option<Instant>,
}

impl<W> Line<W> {
    fn new(token: Token) -> Line<W> {
        Line {
            token,
            sock: None,
            session: Session::default(),
            state: State::Down,
            failures: 0,
            retry_at: Some(Instant::now()),
        }
    }
}

struct Followed {
    key: String,
    /// The last id delivered; `None` while the tip is being read.
    last: Option<u64>,
    /// Named by the notification stream since the last fetch.
    dirty: bool,
    /// A fetch of it is in flight.
    fetching: bool,
}

/// State, for status and metrics.
#[derive(Debug, Default, Clone)]
pub struct LinkStats {
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub publish_refused: u64,
}

/// Publishes gathered for one script call.
#[derive(Default)]
struct Batch {
    calls: Vec<u64>,
    keys: Vec<Vec<u8>>,
    argv: Vec<Vec<u8>>,
    bytes: usize,
}

/// What the link needs from the rest of the configuration.
pub struct Settings {
    pub history_events: usize,
    pub history_ttl: Duration,
    pub wait_replicas: usize,
    pub idempotency_ttl: Duration,
}

/// Where Redis is: a socket path, or a host (looked up off the loop).
enum Where {
    Unix(Target),
    Tcp(Resolver),
}

pub struct Link {
    target: Where,
    shown: String,
    auth: Option<(Option<String>, String)>,
    db: u32,
    pub keys: Keys,
    timeout: Duration,
    history_events: usize,
    ttl_ms: u64,
    wait_replicas: usize,
    idempotency_ms: u64,
    process: String,
    cmd: Line<Cmd>,
    follow: Line<Fol>,
    shas: [Option<String>; 2],
    reloading: bool,
    followed: HashMap<Box<str>, Followed>,
    /// A follow read is in flight.
    reading: bool,
    /// Some followed channel may be dirty (saves a scan of all of them).
    any_dirty: bool,
    ctl_last: Vec<u8>,
    /// The notification stream's last id seen (`None`: not read yet on
    /// this connection).
    notify_last: Option<Vec<u8>>,
    /// Reads to send once the command connection is ready.
    queued: VecDeque<Cmd>,
    /// Publishes of this turn, sent together (`send_publishes`).
    batch: Batch,
    /// Publishes answered by the script, waiting for `WAIT`.
    replicating: HashMap<u64, Appended>,
    done: Vec<Done>,
    buf: Vec<u8>,
    rng: u64,
    pub stats: LinkStats,
}

const SCRIPTS: [&str; 2] = [script::PUBLISH, script::REPLAY];

impl Link {
    pub fn new(cfg: &Redis, s: &Settings) -> io::Result<Link> {
        let target = match &cfg.url.addr {
            RedisAddr::Unix(p) => Where::Unix(Target::Unix(p.clone())),
            RedisAddr::Tcp { host, port } => Where::Tcp(Resolver::new(host, *port)),
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        Ok(Link {
            target,
            shown: cfg.url.to_string(),
            auth: cfg.url.password.clone().map(|p| (cfg.url.user.clone(), p)),
            db: cfg.url.db,
            keys: Keys::new(&cfg.prefix),
            timeout: cfg.timeout,
            history_events: s.history_events,
            ttl_ms: s.history_ttl.as_millis() as u64,
            wait_replicas: s.wait_replicas,
            idempotency_ms: s.idempotency_ttl.as_millis() as u64,
            process: format!("{:016x}", seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            cmd: Line::new(CMD),
            follow: Line::new(FOLLOW),
            shas: [None, None],
            reloading: false,
            followed: HashMap::new(),
            reading: false,
            any_dirty: false,
            ctl_last: b"0-0".to_vec(),
            notify_last: None,
            queued: VecDeque::new(),
            replicating: HashMap::new(),
            batch: Batch::default(),
            done: Vec::new(),
            buf: vec![0; 64 * 1024],
            rng: seed | 1,
            stats: LinkStats::default(),
        })
    }

    /// Where Redis is, without the password.
    pub fn address(&self) -> &str {
        &self.shown
    }

    /// This process's name in Redis (its control entries).
    pub fn process(&self) -> &str {
        &self.process
    }

    pub fn is_up(&self) -> bool {
        self.cmd.state == State::Ready
    }

    pub fn state(&self) -> &'static str {
        match (self.cmd.state, self.follow.state) {
            (State::Ready, State::Ready) => "connected",
            _ if self.stats.last_error.is_some() => "down",
            _ => "connecting",
        }
    }

    pub fn followed(&self) -> usize {
        self.followed.len()
    }

    pub fn take_done(&mut self) -> Vec<Done> {
        std::mem::take(&mut self.done)
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    // ---- requests from the loop -------------------------------------------

    /// Appends events (one script call, all or none). `stored`: the
    /// idempotency key and the answer prefix to keep under it.
    pub fn publish(
        &mut self,
        call: u64,
        events: &[Event<'_>],
        stored: Option<(&str, &str)>,
        now: Instant,
    ) -> Result<(), Failure> {
        if !self.is_up() {
            self.stats.publish_refused += 1;
            let why = self
                .stats
                .last_error
                .clone()
                .unwrap_or_else(|| "connecting".into());
            return Err(Failure::Unavailable(why));
        }
        let b = &mut self.batch;
        b.calls.push(call);
        b.keys.push(match (stored, events.first()) {
            (Some((scope, _)), Some(first)) => {
                self.keys.idempotency(first.channel, scope).into_bytes()
            }
            _ => Vec::new(),
        });
        for e in events {
            b.keys.push(self.keys.stream(e.channel).into_bytes());
            b.keys.push(self.keys.meta(e.channel).into_bytes());
        }
        b.argv.push(events.len().to_string().into_bytes());
        b.argv
            .push(stored.map_or("", |(_, p)| p).as_bytes().to_vec());
        for e in events {
            b.argv.push(if e.event.is_some() {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            });
            b.argv.push(e.event.unwrap_or("").as_bytes().to_vec());
            b.bytes += e.data.len();
            b.argv.push(e.data.as_bytes().to_vec());
            b.argv.push(e.channel.as_bytes().to_vec());
        }
        if b.calls.len() >= BATCH_CALLS || b.bytes >= BATCH_BYTES {
            self.send_publishes(now);
        }
        Ok(())
    }

    /// Sends the publishes gathered this turn as one script call (or a few,
    /// when they are many or large).
    pub(super) fn send_publishes(&mut self, now: Instant) {
        if self.batch.calls.is_empty() || !self.is_up() {
            return;
        }
        let b = std::mem::take(&mut self.batch);
        let sha = self.shas[0].clone().unwrap_or_default();
        let mut args: Vec<Vec<u8>> = vec![b"EVALSHA".to_vec(), sha.into_bytes()];
        args.push((1 + b.keys.len()).to_string().into_bytes());
        args.push(self.keys.notify().into_bytes());
        args.extend(b.keys);
        // A quiet channel keeps its stream for its history's age and its
        // last id far longer, so ids resume from it.
        let (stream_px, meta_px) = match self.ttl_ms {
            0 => (0, 0),
            t => (t + 60_000, 2 * t + 86_400_000),
        };
        for v in [
            b.calls.len() as u64,
            self.history_events as u64,
            self.ttl_ms * 1000,
            stream_px,
            meta_px,
            self.idempotency_ms.max(1),
        ] {
            args.push(v.to_string().into_bytes());
        }
        args.push(self.process.clone().into_bytes());
        args.extend(b.argv);
        let calls = b.calls;
        if self.wait_replicas > 0 {
            self.send_cmd(
                Cmd::Publish {
                    calls: calls.clone(),
                    args,
                },
                now,
            );
            let ms = self.timeout.as_millis().to_string();
            let n = self.wait_replicas.to_string();
            let deadline = now + self.timeout * 2;
            self.cmd.session.push(
                Cmd::Wait { calls },
                &[b"WAIT", n.as_bytes(), ms.as_bytes()],
                deadline,
            );
        } else {
            self.send_cmd(Cmd::Publish { calls, args }, now);
        }
    }

    /// Reads the entries after `after` (a page) and the channel's tip.
    /// Queued while Redis is away; answered when it is back.
    pub fn replay(&mut self, call: u64, channel: &str, after: u64, now: Instant) {
        let sha = self.shas[1].clone().unwrap_or_default();
        let args = vec![
            b"EVALSHA".to_vec(),
            sha.into_bytes(),
            b"2".to_vec(),
            self.keys.stream(channel).into_bytes(),
            self.keys.meta(channel).into_bytes(),
            after.to_string().into_bytes(),
            PAGE.to_string().into_bytes(),
        ];
        self.send_or_queue(Cmd::Replay { call, args }, now);
    }

    /// Starts following a channel: its tip is read, then its entries come.
    pub fn follow(&mut self, channel: &str, now: Instant) {
        if self.followed.contains_key(channel) {
            return;
        }
        let key = self.keys.stream(channel);
        self.followed.insert(
            channel.into(),
            Followed {
                key,
                last: None,
                dirty: false,
                fetching: false,
            },
        );
        self.send_or_queue(
            Cmd::Prime {
                channel: channel.into(),
            },
            now,
        );
    }

    /// Reads a followed channel's tip again (its ring was emptied), unless
    /// that is already under way; follows it when it is not followed.
    pub fn prime(&mut self, channel: &str, now: Instant) {
        match self.followed.get_mut(channel) {
            None => self.follow(channel, now),
            Some(f) if f.last.is_none() => {}
            Some(f) => {
                f.last = None;
                self.send_or_queue(
                    Cmd::Prime {
                        channel: channel.into(),
                    },
                    now,
                );
            }
        }
    }

    /// Drops queued replays nobody waits for any more (their clients left
    /// while Redis was away), so the queue cannot grow with churn.
    pub fn retain_replays(&mut self, wanted: impl Fn(u64) -> bool) {
        self.queued
            .retain(|c| !matches!(c, Cmd::Replay { call, .. } if !wanted(*call)));
    }

    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    pub fn unfollow(&mut self, channel: &str) {
        self.followed.remove(channel);
    }

    pub fn is_followed(&self, channel: &str) -> bool {
        self.followed.contains_key(channel)
    }

    /// Iterates the followed channels' names.
    pub fn followed_names(&self) -> impl Iterator<Item = &str> {
        self.followed.keys().map(|k| &**k)
    }

    /// Appends a control entry (a revocation) that every process follows.
    pub fn control(&mut self, fields: &[(&str, &str)], now: Instant) {
        let mut args: Vec<Vec<u8>> = vec![
            b"XADD".to_vec(),
            self.keys.control().into_bytes(),
            b"MAXLEN".to_vec(),
            b"~".to_vec(),
            b"10000".to_vec(),
            b"*".to_vec(),
            b"o".to_vec(),
            self.process.clone().into_bytes(),
        ];
        for (k, v) in fields {
            args.push(k.as_bytes().to_vec());
            args.push(v.as_bytes().to_vec());
        }
        self.send_or_queue(Cmd::Control { args }, now);
    }

    fn send_or_queue(&mut self, c: Cmd, now: Instant) {
        if self.is_up() && !self.reloading {
            self.send_cmd(c, now);
        } else {
            self.queued.push_back(c);
        }
    }

    fn send_cmd(&mut self, c: Cmd, now: Instant) {
        let deadline = now + self.timeout;
        match &c {
            Cmd::Publish { args, .. } | Cmd::Replay { args, .. } | Cmd::Control { args } => {
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                self.cmd.session.write(&refs);
                self.cmd.session.awaits(c, deadline);
            }
            Cmd::Prime { channel } => {
                let sha = self.shas[1].clone().unwrap_or_default();
                let s = self.keys.stream(channel);
                let m = self.keys.meta(channel);
                let args: [&[u8]; 7] = [
                    b"EVALSHA",
                    sha.as_bytes(),
                    b"2",
                    s.as_bytes(),
                    m.as_bytes(),
                    b"",
                    b"1",
                ];
                self.cmd.session.push(c, &args, deadline);
            }
            _ => {}
        }
    }
}

mod follow;
mod io_side;
#[cfg(test)]
mod tests;
