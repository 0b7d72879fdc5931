//! Redis mode, the session's side (`--redis-url`): publishes that are
//! answered when Redis has acknowledged them; streams that start at once
//! and are held, with heartbeats, until their channel is followed or their
//! replay came from Redis; followed entries appended to the local rings
//! (the rings are caches of the streams); revocations shared through the
//! control stream. The link itself is `outbound/redis`.

mod held;
mod publish;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mio::Token;

use crate::conn::Phase;
use crate::grants::Revoked;
use crate::outbound::redis::Done;
use crate::server::Server;

use publish::Pending;

/// Redis mode's bookkeeping in the server.
#[derive(Default)]
pub(crate) struct Scaled {
    pub publishes: HashMap<u64, Pending>,
    /// Connections whose publish is in flight: no further request of theirs
    /// is read until it is answered.
    pub awaiting: HashMap<usize, u64>,
    /// Replay pages in flight: call → connection.
    pub replays: HashMap<u64, usize>,
    /// Streams held until their channel is followed: channel → (key, call).
    pub holds: HashMap<Box<str>, Vec<(usize, u64)>>,
    pub next_call: u64,
    pub sweep_at: Option<Instant>,
}

impl Scaled {
    fn call(&mut self) -> u64 {
        self.next_call += 1;
        // Apart from forward auth's call ids: never the same number.
        (1 << 62) | self.next_call
    }
}

impl Server {
    // ---- the loop's two calls ---------------------------------------------

    /// Readiness of a Redis connection.
    pub(crate) fn on_redis(&mut self, t: Token) {
        if let Some(link) = self.redis.as_mut() {
            link.ready(t, self.clock.now(), self.poll.registry());
            self.take_redis();
        }
    }

    /// Once per loop turn: the link's timers and the follow read, then
    /// what it brought; once a second, channels no longer watched are
    /// no longer followed.
    pub(crate) fn redis_turn(&mut self) {
        let now = self.clock.now();
        let Some(link) = self.redis.as_mut() else {
            return;
        };
        link.tick(now, self.poll.registry());
        self.take_redis();
        if self.scaled.sweep_at.map_or(true, |t| t <= now) {
            self.scaled.sweep_at = Some(now + Duration::from_secs(1));
            self.unfollow_idle();
        }
    }

    pub(crate) fn redis_wake(&self) -> Option<Instant> {
        let link = self.redis.as_ref()?;
        [link.next_wake(), self.scaled.sweep_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn take_redis(&mut self) {
        loop {
            let done = match self.redis.as_mut() {
                Some(l) => l.take_done(),
                None => return,
            };
            if done.is_empty() {
                return;
            }
            for d in done {
                match d {
                    Done::Published { call, result } => self.on_published(call, result),
                    Done::Replayed { call, tip, entries } => self.on_replayed(call, tip, entries),
                    Done::Live { channel, tip } => self.on_live(&channel, tip),
                    Done::Entries { channel, entries } => self.on_entries(&channel, &entries),
                    Done::Control(fields) => self.on_control(&fields),
                }
            }
        }
    }

    /// Forgets what closed connections waited for: holds, queued replays.
    fn prune(&mut self) {
        let mut holds = std::mem::take(&mut self.scaled.holds);
        holds.retain(|_, v| {
            v.retain(|&(key, call)| held_call(self, key) == Some(call));
            !v.is_empty()
        });
        self.scaled.holds = holds;
        let mut replays = std::mem::take(&mut self.scaled.replays);
        replays.retain(|&call, &mut key| held_call(self, key) == Some(call));
        if let Some(link) = self.redis.as_mut() {
            if link.queued() > 0 {
                link.retain_replays(|call| replays.contains_key(&call));
            }
        }
        self.scaled.replays = replays;
    }

    fn unfollow_idle(&mut self) {
        self.prune();
        let Some(link) = self.redis.as_ref() else {
            return;
        };
        let idle: Vec<Box<str>> = link
            .followed_names()
            .filter(|name| {
                let watched = self
                    .hub
                    .find(name)
                    .is_some_and(|ch| !self.hub.get(ch).subscribers.is_empty());
                !watched && !self.scaled.holds.get(*name).is_some_and(|h| !h.is_empty())
            })
            .map(Box::from)
            .collect();
        for name in idle {
            if let Some(link) = self.redis.as_mut() {
                link.unfollow(&name);
            }
            // Its ring is no longer kept up to date: it is not a cache of
            // the stream any more.
            if let Some(ch) = self.hub.find(&name) {
                self.hub.rebase(ch, 0, false);
            }
        }
    }

    // ---- revocations ------------------------------------------------------

    /// Shares a revocation with every other process.
    pub(crate) fn share_revocation(&mut self, what: &Revoked, until: u64) {
        let now = self.clock.now();
        let (k, v) = match what {
            Revoked::Channel(c) => ("channel", &**c),
            Revoked::Sub(s) => ("sub", &**s),
        };
        let until = until.to_string();
        if let Some(link) = self.redis.as_mut() {
            link.control(&[("k", k), ("v", v), ("u", &until)], now);
        }
    }

    fn on_control(&mut self, fields: &[(Vec<u8>, Vec<u8>)]) {
        let get = |name: &[u8]| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        };
        let (Some(k), Some(v)) = (get(b"k"), get(b"v")) else {
            return;
        };
        let until: u64 = get(b"u").and_then(|u| u.parse().ok()).unwrap_or(0);
        let what = match k {
            "channel" => Revoked::Channel(v.into()),
            "sub" => Revoked::Sub(v.into()),
            _ => return,
        };
        let closed = self.apply_revocation(&what, until);
        if closed > 0 {
            log::info!("closed {closed} stream(s) revoked by another process: {what:?}");
        }
    }
}

/// The call a held stream waits on.
fn held_call(s: &Server, key: usize) -> Option<u64> {
    match s.conns.get(key).map(|c| &c.phase) {
        Some(Phase::Waiting(w)) if w.held.is_some() => Some(w.call),
        _ => None,
    }
}
