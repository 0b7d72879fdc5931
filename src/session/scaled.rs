//! Redis mode, the session's side (`--redis-url`): publishes that are
//! answered when Redis has acknowledged them; streams that start at once
//! and are held, with heartbeats, until their channel is followed or their
//! replay came from Redis; followed entries appended to the local rings
//! (the rings are caches of the streams); revocations shared through the
//! control stream. The link itself is `outbound/redis`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mio::Token;

use crate::channel::Stamp;
use crate::conn::{Held, Phase, Waiting};
use crate::grants::Revoked;
use crate::http::HttpError;
use crate::outbound::redis::{Appended, Done, Entry, Event, Failure, PAGE};
use crate::routes::publish::Published;
use crate::routes::subscribe::{self, Attach, Authorised, Target, EARLIEST, HISTORY_LOST};
use crate::routes::Reply;
use crate::server::Server;
use crate::sse;

/// One event of a publish in flight: channel, name, data, the channel's
/// local subscribers when it was sent.
type Kept = (Box<str>, Option<Box<str>>, Box<str>, usize);

/// A publish waiting for Redis.
pub(crate) struct Pending {
    key: usize,
    keep_alive: bool,
    cors: Vec<String>,
    batch: bool,
    /// `(channel, event, data, local subscribers)` per event.
    events: Vec<Kept>,
    body_hash: String,
    sent: Instant,
}

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

    fn unfollow_idle(&mut self) {
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

    // ---- publishing ---------------------------------------------------------

    /// Sends a validated publish to Redis; the connection reads nothing
    /// more until it is answered. `Err`: answer this at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_to_redis(
        &mut self,
        key: usize,
        events: &[crate::routes::publish::Publish<'_>],
        stored: Option<(String, String)>,
        keep_alive: bool,
        cors: &[String],
        batch: bool,
    ) -> Result<(), Reply> {
        let call = self.scaled.call();
        let now = self.clock.now();
        let mut kept = Vec::with_capacity(events.len());
        let mut subs = Vec::with_capacity(events.len());
        for e in events {
            let n = self
                .hub
                .find(&e.channel)
                .map_or(0, |ch| self.hub.get(ch).subscribers.len());
            subs.push(n);
            kept.push((
                Box::<str>::from(&*e.channel),
                e.event.as_deref().map(Box::from),
                Box::<str>::from(&*e.data),
                n,
            ));
        }
        let (body_hash, prefix) = match &stored {
            Some((scope, body)) => {
                let s: Vec<String> = subs.iter().map(usize::to_string).collect();
                (
                    body.clone(),
                    Some((scope.as_str(), format!("{body}|{}|", s.join(",")))),
                )
            }
            None => (String::new(), None),
        };
        let wire: Vec<Event<'_>> = events
            .iter()
            .map(|e| Event {
                channel: &e.channel,
                event: e.event.as_deref(),
                data: &e.data,
            })
            .collect();
        let link = self
            .redis
            .as_mut()
            .ok_or_else(|| unavailable("no link", cors))?;
        let prefix = prefix.as_ref().map(|(s, p)| (*s, p.as_str()));
        link.publish(call, &wire, prefix, now)
            .map_err(|f| failure_reply(&f, self.cfg.scale.redis_timeout, cors))?;
        self.scaled.publishes.insert(
            call,
            Pending {
                key,
                keep_alive,
                cors: cors.to_vec(),
                batch,
                events: kept,
                body_hash,
                sent: now,
            },
        );
        self.scaled.awaiting.insert(key, call);
        // The link answers within its timeout; this is the backstop.
        self.after(
            key,
            self.cfg.scale.redis_timeout * 2 + Duration::from_secs(1),
        );
        Ok(())
    }

    fn on_published(&mut self, call: u64, result: Result<Appended, Failure>) {
        let Some(p) = self.scaled.publishes.remove(&call) else {
            return;
        };
        let now = self.clock.now();
        let cors = p.cors.clone();
        let reply = match result {
            Ok(Appended::Ids(ids)) if ids.len() == p.events.len() => {
                self.stats
                    .redis_publish
                    .observe(now.duration_since(p.sent).as_micros() as u64);
                self.stats.events_published += ids.len() as u64;
                for ((ch_name, ev, data, _), &(id, prev)) in p.events.iter().zip(&ids) {
                    self.append_own(ch_name, ev.as_deref(), data, id, prev);
                }
                let published: Vec<Published<'_>> = p
                    .events
                    .iter()
                    .zip(&ids)
                    .map(|((c, _, _, n), &(id, _))| Published {
                        id,
                        channel: c,
                        subscribers: *n,
                    })
                    .collect();
                let body = crate::routes::publish::answer(&published, p.batch);
                Reply::json(200, body, &[], &cors)
            }
            Ok(Appended::Ids(_)) => unavailable("Redis answered a different number of ids", &cors),
            Ok(Appended::Stored(s)) => self.stored_answer(&p, &s),
            Err(f) => failure_reply(&f, self.cfg.scale.redis_timeout, &cors),
        };
        if self.scaled.awaiting.get(&p.key) != Some(&call) {
            return; // the client left
        }
        self.scaled.awaiting.remove(&p.key);
        self.send(p.key, &reply, p.keep_alive, false);
        // Its deadline is the idle one again, then what it sent next.
        self.after(p.key, self.cfg.idle_timeout);
        self.drive(p.key);
    }

    /// An answer stored under the same Idempotency-Key: repeated when the
    /// body is the same, 422 otherwise.
    fn stored_answer(&mut self, p: &Pending, s: &str) -> Reply {
        let mut parts = s.splitn(3, '|');
        let (hash, subs, ids) = (parts.next(), parts.next(), parts.next());
        if hash != Some(p.body_hash.as_str()) {
            let e = HttpError::new(422, "this Idempotency-Key was used with a different body");
            return Reply::error(&e, &[], &p.cors);
        }
        let subs: Vec<usize> = subs
            .unwrap_or("")
            .split(',')
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        let ids: Vec<u64> = ids
            .unwrap_or("")
            .split(',')
            .filter_map(|n| n.parse().ok())
            .collect();
        let published: Vec<Published<'_>> = p
            .events
            .iter()
            .zip(ids.chunks(2))
            .zip(subs.iter().chain(std::iter::repeat(&0)))
            .map(|(((c, _, _, _), pair), n)| Published {
                id: pair[0],
                channel: c,
                subscribers: *n,
            })
            .collect();
        if published.len() != p.events.len() {
            return unavailable("the stored answer does not match this request", &p.cors);
        }
        let body = crate::routes::publish::answer(&published, p.batch);
        Reply::json(200, body, &["Idempotent-Replayed: true"], &p.cors)
    }

    /// This process's own publish, acknowledged: appended to the local ring
    /// at once when it follows that ring's last event (otherwise the follow
    /// read brings it, in its place).
    fn append_own(&mut self, channel: &str, event: Option<&str>, data: &str, id: u64, prev: u64) {
        let Some(ch) = self.hub.find(channel) else {
            return;
        };
        let c = self.hub.get(ch);
        if c.synced && c.log.last_id() == prev {
            self.append_at(ch, event, data, id);
        }
    }

    fn append_at(&mut self, ch: u32, event: Option<&str>, data: &str, id: u64) {
        let now = Stamp {
            unix_us: id,
            mono_ms: self.clock.ms(),
        };
        if let Err(e) = self.append_event(ch, event, data, now) {
            log::warn!("an event from Redis does not fit the local history: {e:?}");
        }
    }

    // ---- following --------------------------------------------------------

    /// A followed channel's tip: its ring starts there, and the streams
    /// held for it join.
    fn on_live(&mut self, channel: &str, tip: u64) {
        let holds = self
            .scaled
            .holds
            .get(channel)
            .is_some_and(|h| !h.is_empty());
        let ch = match self.hub.find(channel) {
            // Freed meanwhile (no subscriber yet): again, for the holds.
            None if holds => {
                let now = self.stamp();
                subscribe::find_channel(&mut self.hub, channel, now).ok()
            }
            ch => ch,
        };
        if let Some(ch) = ch {
            if !self.hub.get(ch).synced {
                self.hub.rebase(ch, tip, true);
            }
        }
        for (key, call) in self.scaled.holds.remove(channel).unwrap_or_default() {
            if held_call(self, key) == Some(call) {
                self.join(key);
            }
        }
    }

    /// Entries another process (or this one) appended: each that follows
    /// the ring's last event is appended; one at or below it is already
    /// there; any other is a gap (Redis lost events): the channel's
    /// streams end, and resuming tells each client what is gone.
    fn on_entries(&mut self, channel: &str, entries: &[Entry]) {
        let Some(ch) = self.hub.find(channel) else {
            return;
        };
        let now_us = self.clock.unix_micros();
        for e in entries {
            let c = self.hub.get(ch);
            if !c.synced {
                return;
            }
            let last = c.log.last_id();
            if e.id <= last {
                continue;
            }
            if e.prev != last {
                log::warn!(
                    "channel {channel}: Redis has event {} after {} but this process last saw {last}: \
                     events were lost in Redis; its streams end and resume with history-lost",
                    e.id,
                    e.prev
                );
                let keys: Vec<usize> = c.subscribers.iter().map(|&k| k as usize).collect();
                for key in keys {
                    // At once (what is pending, then FIN): no cursor may
                    // stay in the ring that is emptied now.
                    self.end_stream(key);
                }
                self.hub.rebase(ch, 0, false);
                if let Some(link) = self.redis.as_mut() {
                    link.unfollow(channel);
                }
                return;
            }
            self.stats.follow_lag.observe(now_us.saturating_sub(e.id));
            self.append_at(ch, e.event.as_deref(), &e.data, e.id);
        }
    }

    // ---- subscribing --------------------------------------------------------

    /// The last stages in Redis mode: a followed channel whose ring holds
    /// the start attaches at once; anything else gets its head now and is
    /// held until the channel is followed and the replay came.
    pub(super) fn start_scaled(
        &mut self,
        key: usize,
        target: &Target<'_>,
        w: Waiting,
        authorised: Authorised,
    ) -> Result<(), crate::routes::Refusal> {
        let now = self.stamp();
        let ch = subscribe::find_channel(&mut self.hub, &target.channel, now)?;
        let sent = target.last_id.as_deref().map(str::trim);
        let after = match sent {
            None => None,
            Some(s) if s == EARLIEST => Some(0),
            // Not an id: a notice, then live (as without Redis).
            Some(s) => s.parse::<u64>().ok(),
        };
        let synced = self.hub.get(ch).synced;
        if synced {
            let log = &self.hub.get(ch).log;
            let in_ring = match after {
                None => sent.is_none(),
                Some(id) => matches!(log.resume_after(id), crate::channel::Resume::At(_)),
            };
            if in_ring {
                let grant = authorised.into_grant();
                let mut a =
                    self.start_stream(target, w.chunked, &w.cors, w.client, Authorised::Open)?;
                if let Some(id) = after {
                    let replayed = log_events_after(&self.hub.get(ch).log, id);
                    self.stats.replayed_ring += replayed;
                }
                a.grant = grant;
                self.attach(key, a, w.status);
                return Ok(());
            }
        }
        // The head now (EventSource gives up for good on anything but 200).
        let retry = match self.cfg.retry_ms {
            0 => 0,
            ms => ms + self.jitter.draw() % (ms / 2 + 1),
        };
        let head = subscribe::head(self.clock.http_date(), &w.cors, w.chunked, retry, None);
        let mut held = Held {
            after,
            last: after.unwrap_or(0),
            replayed: after.is_none(),
            grant: authorised.into_grant(),
            ..Held::default()
        };
        if after.is_none() && sent.is_some() {
            // A Last-Event-ID that is no id: history-lost, then live.
            let mut notice = Vec::new();
            let data = serde_json::json!({ "last_event_id": sent }).to_string();
            sse::encode_event(&mut notice, 0, Some(HISTORY_LOST), &data);
            held.frames = notice;
            self.stats.history_lost_sent += 1;
        }
        let call = self.scaled.call();
        self.last_response = (200, 0);
        let mut w = w;
        w.call = call;
        w.held = Some(Box::new(held));
        let name: Box<str> = w.channel.clone();
        if let Some(c) = self.conns.get_mut(key) {
            c.out.push_vec(head);
            c.phase = Phase::Waiting(Box::new(w));
        }
        self.schedule_heartbeat(key, self.clock.ms());
        if let Some(id) = after {
            self.scaled.replays.insert(call, key);
            let now = self.clock.now();
            if let Some(link) = self.redis.as_mut() {
                link.replay(call, &name, id, now);
            }
        }
        if !synced {
            self.follow(&name, key, call);
        } else if after.is_none() {
            self.join(key);
        }
        Ok(())
    }

    fn follow(&mut self, name: &str, key: usize, call: u64) {
        let now = self.clock.now();
        if let Some(link) = self.redis.as_mut() {
            if link.is_followed(name) {
                // Followed, but its ring was emptied (freed, or a gap):
                // read the tip again.
                link.unfollow(name);
            }
            link.follow(name, now);
        }
        self.scaled
            .holds
            .entry(name.into())
            .or_default()
            .push((key, call));
    }

    /// A replay page came: its frames are kept for the stream; the next
    /// page is asked for, or the stream joins its ring.
    fn on_replayed(&mut self, call: u64, tip: u64, entries: Vec<Entry>) {
        let Some(key) = self.scaled.replays.remove(&call) else {
            return;
        };
        if held_call(self, key) != Some(call) {
            return;
        }
        let ttl_us = self.cfg.history_ttl.as_micros() as u64;
        let cutoff = match ttl_us {
            0 => 0,
            t => self.clock.unix_micros().saturating_sub(t),
        };
        let full = entries.len() >= PAGE;
        let Some(Phase::Waiting(w)) = self.conns.get_mut(key).map(|c| &mut c.phase) else {
            return;
        };
        let Some(h) = w.held.as_mut() else { return };
        let mut kept = entries.iter().filter(|e| e.id >= cutoff).peekable();
        // Complete exactly when what came starts right after what the
        // client (or the previous page) had; else those events are gone.
        // `earliest` (after 0, first page) asks for whatever is there.
        let earliest = h.after == Some(0) && h.ends.is_empty() && h.last == 0;
        let joins = earliest
            || match kept.peek() {
                Some(e) => e.prev == h.last,
                None => entries.is_empty() && tip == h.last,
            };
        if !joins && h.lost_at.is_none() {
            h.lost_at = Some(kept.peek().map_or(tip, |e| e.prev));
        }
        let mut n = 0;
        for e in kept {
            sse::encode_event(&mut h.frames, e.id, e.event.as_deref(), &e.data);
            h.ends.push((e.id, h.frames.len()));
            n += 1;
        }
        match entries.last() {
            Some(last) => h.last = h.last.max(last.id),
            None => h.last = h.last.max(tip),
        }
        self.stats.replayed_redis += n;
        if full {
            let call = self.scaled.call();
            w.call = call;
            let (name, after) = (w.channel.clone(), h.last);
            self.scaled.replays.insert(call, key);
            let now = self.clock.now();
            if let Some(link) = self.redis.as_mut() {
                link.replay(call, &name, after, now);
            }
            return;
        }
        h.replayed = true;
        self.join(key);
    }

    /// A held stream joins its channel's ring when both are ready: the
    /// replayed frames go out first, then the ring from just after them.
    fn join(&mut self, key: usize) {
        let Some(Phase::Waiting(w)) = self.conns.get(key).map(|c| &c.phase) else {
            return;
        };
        let Some(h) = w.held.as_ref() else { return };
        if !h.replayed {
            return;
        }
        let ch = match self.hub.find(&w.channel) {
            Some(ch) => ch,
            None => {
                let name = w.channel.clone();
                let now = self.stamp();
                match subscribe::find_channel(&mut self.hub, &name, now) {
                    Ok(ch) => ch,
                    Err(_) => return self.close(key),
                }
            }
        };
        let Some(Phase::Waiting(w)) = self.conns.get(key).map(|c| &c.phase) else {
            return;
        };
        let Some(h) = w.held.as_ref() else { return };
        if !self.hub.get(ch).synced {
            let (name, call) = (w.channel.clone(), w.call);
            return self.follow(&name, key, call);
        }
        let log = &self.hub.get(ch).log;
        let ring_last = log.last_id();
        let (cursor, keep) = match h.after {
            None => (log.head(), h.frames.len()),
            Some(_) if h.last >= ring_last => {
                // What the ring holds past the join comes from the ring.
                let upto = h.ends.iter().take_while(|(id, _)| *id <= ring_last).last();
                let keep = upto.map_or(
                    if h.ends.is_empty() { h.frames.len() } else { 0 },
                    |(_, end)| *end,
                );
                (log.head(), keep)
            }
            Some(_) => match log.resume_after(h.last) {
                crate::channel::Resume::At(pos) => (pos, h.frames.len()),
                crate::channel::Resume::Lost => {
                    // The ring does not reach back to the replay's end:
                    // one more page.
                    let call = self.scaled.call();
                    let (name, after) = (w.channel.clone(), h.last);
                    if let Some(Phase::Waiting(w)) = self.conns.get_mut(key).map(|c| &mut c.phase) {
                        w.call = call;
                        if let Some(h) = w.held.as_mut() {
                            h.replayed = false;
                        }
                    }
                    self.scaled.replays.insert(call, key);
                    let now = self.clock.now();
                    if let Some(link) = self.redis.as_mut() {
                        link.replay(call, &name, after, now);
                    }
                    return;
                }
            },
        };
        let idle = Phase::Request {
            reader: None,
            idle: false,
        };
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Waiting(w) = std::mem::replace(&mut c.phase, idle) else {
            return;
        };
        let mut h = w.held.unwrap_or_default();
        let mut body = Vec::new();
        if let Some(at) = h.lost_at {
            let data = serde_json::json!({
                "last_event_id": h.after.map(|a| a.to_string()),
                "first_available_id": h.ends.first().map_or(at, |(id, _)| *id),
            })
            .to_string();
            sse::encode_event(&mut body, at, Some(HISTORY_LOST), &data);
            self.stats.history_lost_sent += 1;
        }
        h.frames.truncate(keep);
        body.extend_from_slice(&h.frames);
        let mut bytes = Vec::with_capacity(body.len() + 16);
        if !body.is_empty() {
            if w.chunked {
                bytes.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                bytes.extend_from_slice(&body);
                bytes.extend_from_slice(b"\r\n");
            } else {
                bytes = body;
            }
        }
        let a = Attach {
            channel: ch,
            cursor,
            head: bytes,
            chunked: w.chunked,
            counted: self.streams.counted_as(w.client),
            grant: h.grant.take(),
        };
        self.attach(key, a, w.status);
        self.write_stream(key);
    }

    /// A held stream's heartbeat (its I/O timer).
    pub(crate) fn heartbeat_held(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Waiting(w) = &c.phase else { return };
        let beat: &[u8] = if w.chunked {
            sse::HEARTBEAT_CHUNK
        } else {
            sse::HEARTBEAT
        };
        c.out.buf().extend_from_slice(beat);
        self.stats.heartbeats += 1;
        self.drive(key);
        self.schedule_heartbeat(key, self.clock.ms());
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

fn log_events_after(log: &crate::channel::Log, id: u64) -> u64 {
    match log.resume_after(id) {
        crate::channel::Resume::At(pos) => {
            log.complete_before(log.head()) - log.complete_before(pos)
        }
        crate::channel::Resume::Lost => 0,
    }
}

fn unavailable(why: &str, cors: &[String]) -> Reply {
    let e = HttpError::new(
        503,
        format!("Redis is unavailable ({why}); nothing was published"),
    );
    Reply::error(&e, &["Retry-After: 1"], cors)
}

fn failure_reply(f: &Failure, timeout: Duration, cors: &[String]) -> Reply {
    let e = match f {
        Failure::Unavailable(why) => HttpError::new(
            503,
            format!("Redis is unavailable ({why}); nothing was published"),
        ),
        Failure::Unknown(why) => HttpError::new(
            503,
            format!(
                "Redis did not answer ({why}; --redis-timeout {}s): the publish may or may not \
                 have been applied; retry with the same Idempotency-Key header to make the retry safe",
                timeout.as_secs_f64()
            ),
        ),
        Failure::Refused(why) => HttpError::new(503, format!("Redis refused the publish: {why}")),
    };
    Reply::error(&e, &["Retry-After: 1"], cors)
}
