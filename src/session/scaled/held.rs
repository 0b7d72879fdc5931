//! Redis mode's streams: attached at once when their channel is followed
//! and its ring holds the start; otherwise the head goes out at once and the
//! stream is held, with heartbeats, until the channel is followed and the
//! replay came from Redis (in pages), then it joins the ring. Followed
//! entries go into the rings; a gap in a channel's chain ends its streams.

use super::held_call;
use crate::conn::{Held, Phase, Waiting};
use crate::outbound::redis::{Entry, PAGE};
use crate::routes::subscribe::{self, Attach, Authorised, Target, EARLIEST, HISTORY_LOST};
use crate::server::Server;
use crate::sse;

impl Server {
    // ---- following --------------------------------------------------------

    /// A followed channel's tip: its ring starts there, and the streams
    /// held for it join.
    pub(in crate::session) fn on_live(&mut self, channel: &str, tip: u64) {
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
    pub(in crate::session) fn on_entries(&mut self, channel: &str, entries: &[Entry]) {
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
    pub(in crate::session) fn start_scaled(
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
            // Not an id (0 is never issued): a notice, then live, as
            // without Redis.
            Some(s) => s.parse::<u64>().ok().filter(|&id| id > 0),
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
        if after.is_none() {
            // A Last-Event-ID that is no id: at the join, history-lost
            // (as without Redis: with the ring's last id), then live.
            held.not_an_id = sent.map(Box::from);
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
            // Followed but with its ring emptied (freed, or a gap): its
            // tip is read again, once.
            link.prime(name, now);
        }
        self.scaled
            .holds
            .entry(name.into())
            .or_default()
            .push((key, call));
    }

    /// A replay page came: its frames are kept for the stream; the next
    /// page is asked for, or the stream joins its ring.
    pub(in crate::session) fn on_replayed(&mut self, call: u64, tip: u64, entries: Vec<Entry>) {
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
        let mut lost_notice = Vec::new();
        let (cursor, keep) = match h.after {
            None => {
                if let Some(sent) = h.not_an_id.as_deref() {
                    // As `subscribe::find_start` words it (0 included: no
                    // event ever has it).
                    let data = serde_json::json!({
                        "last_event_id": sent,
                        "first_available_id": log.first_available_id(),
                    })
                    .to_string();
                    sse::encode_event(&mut lost_notice, ring_last, Some(HISTORY_LOST), &data);
                }
                (log.head(), h.frames.len())
            }
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
        let mut body = lost_notice;
        if !body.is_empty() {
            self.stats.history_lost_sent += 1;
        }
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
}

fn log_events_after(log: &crate::channel::Log, id: u64) -> u64 {
    match log.resume_after(id) {
        crate::channel::Resume::At(pos) => {
            log.complete_before(log.head()) - log.complete_before(pos)
        }
        crate::channel::Resume::Lost => 0,
    }
}
