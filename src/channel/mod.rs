//! Channels: each one a log of encoded SSE frames (`ring.rs`) and the tokens
//! of its subscribers. The hub finds channels by name, tracks which ones
//! grew this loop turn, and runs their lifecycle: channels are a cache,
//! history has a budget.
//!
//! - A channel is created by a publish or a subscribe, and exists while it
//!   has subscribers or history. One with neither is freed (at the end of
//!   the loop turn, [`Hub::collect_idle`]).
//! - At `--max-channels`, a new channel evicts the least recently used
//!   channel without subscribers (`lru.rs`); only a hub whose every channel
//!   has subscribers refuses one.
//! - The last id of a freed channel is remembered (`freed.rs`): a client
//!   that had it resumes with nothing missed, and new ids continue above.
//! - All history together stays under one budget, counted as allocated
//!   memory: a publish that would pass it evicts the oldest events of the
//!   whole hub first (`age.rs`); `--history-ttl` drops events by age.
//! - No eviction takes bytes that have not been through a fan-out pass:
//!   the hub asks for that channel to be fanned out first
//!   ([`Appended::FanOutFirst`]), so only a subscriber whose socket is full
//!   can lose its place (it is then dropped as a slow consumer).

mod age;
mod freed;
mod lru;
mod ring;

use std::collections::HashMap;

pub use ring::{Log, PublishError, Resume, FRAME_INDEX_BYTES};

use age::Ages;
use freed::FreedIds;
use lru::Lru;

/// Names whose last id is remembered after their channel is freed.
pub const FREED_IDS_KEPT: usize = 100_000;

/// The hub's limits (from the configuration).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most bytes of frames one channel keeps (`--history-bytes`).
    pub history_bytes: usize,
    pub max_channels: usize,
    /// Memory all histories together may hold (`--history-memory`).
    pub history_memory: usize,
    /// Events older than this many milliseconds are dropped; 0: no limit.
    pub history_ttl_ms: u64,
}

/// The time of a publish: the wall clock for ids, the monotonic clock
/// (milliseconds since the hub started) for ages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub unix_us: u64,
    pub mono_ms: u64,
}

/// What a publish came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Appended with this id.
    Id(u64),
    /// Making room would evict bytes of this channel that have not been
    /// through a fan-out pass: fan it out, then publish again.
    FanOutFirst(u32),
}

/// Lifecycle counters (status document and `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub channels_created: u64,
    /// Freed with no subscribers and no history left.
    pub freed_idle: u64,
    /// Evicted at the channel cap (history and all).
    pub freed_evicted: u64,
    /// Events dropped because their channel's history was full.
    pub evicted_size: u64,
    /// Events dropped by `--history-ttl`.
    pub evicted_age: u64,
    /// Events dropped to keep all history under `--history-memory`.
    pub evicted_budget: u64,
}

/// A named channel: its log and its subscribers' tokens.
pub struct Channel {
    pub name: Box<str>,
    pub log: Log,
    pub subscribers: Vec<u32>,
    /// Redis mode: the ring holds every event of the channel's stream
    /// after its floor (it is followed); otherwise it is no cache of the
    /// stream and serves no resume.
    pub synced: bool,
    live: bool,
    dirty: bool,
    /// Log offset from which bytes have not been through a fan-out pass
    /// (meaningful while `dirty`).
    unsent_from: u64,
    /// Queued for the end-of-turn check for idleness.
    idle_queued: bool,
}

impl Channel {
    fn vacant() -> Channel {
        Channel {
            synced: false,
            name: Box::from(""),
            log: Log::new(0, 0),
            subscribers: Vec::new(),
            live: false,
            dirty: false,
            unsent_from: 0,
            idle_queued: false,
        }
    }

    /// Offset up to which every byte has been through a fan-out pass.
    fn sent(&self) -> u64 {
        if self.dirty {
            self.unsent_from
        } else {
            self.log.head()
        }
    }
}

/// Why a channel is freed.
#[derive(Clone, Copy)]
enum Free {
    Idle,
    Evicted,
}

/// All channels, by name, and which ones grew this loop turn.
pub struct Hub {
    /// Channel slots; a freed slot is vacant until reused.
    channels: Vec<Channel>,
    vacant: Vec<u32>,
    by_name: HashMap<Box<str>, u32>,
    dirty: Vec<u32>,
    /// Channels without subscribers, least recently used first.
    lru: Lru,
    /// Channels with history, by the age of their oldest frame.
    ages: Ages,
    freed: FreedIds,
    /// Channels to check for idleness at the end of the turn.
    maybe_idle: Vec<u32>,
    limits: Limits,
    /// `Log::memory` of every channel, summed.
    used: usize,
    subscribers: usize,
    counts: Counts,
    /// Where an event is encoded before it is copied into a ring.
    scratch: Vec<u8>,
}

impl Hub {
    pub fn new(limits: Limits) -> Hub {
        Hub {
            channels: Vec::new(),
            vacant: Vec::new(),
            by_name: HashMap::new(),
            dirty: Vec::new(),
            lru: Lru::new(),
            ages: Ages::new(),
            freed: FreedIds::new(FREED_IDS_KEPT),
            maybe_idle: Vec::new(),
            limits,
            used: 0,
            subscribers: 0,
            counts: Counts::default(),
            scratch: Vec::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The largest encoded event a channel takes: its history, or what the
    /// budget leaves room for beside the smallest frame index.
    pub fn max_frame(&self) -> usize {
        let index = ring::MIN_INDEX * FRAME_INDEX_BYTES;
        let room = self.limits.history_memory.saturating_sub(index);
        self.limits.history_bytes.min(room)
    }

    /// The channel's index, created on first use. At the channel cap the
    /// least recently used channel without subscribers is evicted for it;
    /// `None` when every channel has subscribers.
    pub fn channel(&mut self, name: &str, now: Stamp) -> Option<u32> {
        if let Some(&i) = self.by_name.get(name) {
            return Some(i);
        }
        if self.len() >= self.limits.max_channels {
            let victim = self.lru.front()?;
            self.free(victim, Free::Evicted);
        }
        let floor = self
            .freed
            .take(name)
            .unwrap_or(now.unix_us.saturating_sub(1));
        let ch = Channel {
            name: name.into(),
            log: Log::new(self.limits.history_bytes, floor.saturating_add(1)),
            subscribers: Vec::new(),
            synced: false,
            live: true,
            dirty: false,
            unsent_from: 0,
            idle_queued: false,
        };
        let i = match self.vacant.pop() {
            Some(i) => {
                self.channels[i as usize] = ch;
                i
            }
            None => {
                self.channels.push(ch);
                (self.channels.len() - 1) as u32
            }
        };
        self.by_name.insert(name.into(), i);
        self.counts.channels_created += 1;
        // No subscribers yet: evictable, and freed at the end of the turn
        // unless a subscriber or an event arrives.
        self.lru.touch(i);
        self.queue_idle(i);
        Some(i)
    }

    /// Whether `n` channels that do not exist yet could be created now
    /// (evicting idle ones as needed).
    pub fn can_create(&self, n: usize) -> bool {
        let subscribed = self.len() - self.lru.len();
        n == 0 || n <= self.limits.max_channels.saturating_sub(subscribed)
    }

    pub fn find(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The channel at `i` (a vacant slot reads as an empty channel).
    pub fn get(&self, i: u32) -> &Channel {
        &self.channels[i as usize]
    }

    pub fn get_mut(&mut self, i: u32) -> &mut Channel {
        &mut self.channels[i as usize]
    }

    /// Channels that exist.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Channel> {
        self.channels.iter().filter(|c| c.live)
    }

    /// Appends to a channel and marks it for this turn's fan-out pass,
    /// first making room: the channel's own history (`--history-bytes`),
    /// then the hub's budget, oldest events of the whole hub first.
    pub fn publish(
        &mut self,
        ch: u32,
        event: Option<&str>,
        data: &str,
        now: Stamp,
    ) -> Result<Appended, PublishError> {
        let id = self.channels[ch as usize].log.next_id(now.unix_us);
        let len = crate::sse::encoded_len(id, event, data);
        if len > self.max_frame() {
            return Err(PublishError::TooLarge {
                frame: len,
                history: self.max_frame(),
            });
        }
        while self.channels[ch as usize].log.must_drop_for(len) {
            if let Some(x) = self.drop_front_for_size(ch) {
                return Ok(Appended::FanOutFirst(x));
            }
        }
        let budget = self.limits.history_memory;
        let tight = loop {
            let log = &self.channels[ch as usize].log;
            let grow = log.growth_for(len, false);
            if self.used + grow <= budget {
                break false;
            }
            if self.ages.is_empty() {
                // Nothing left to evict (this log is empty too): give back
                // its spare room, then grow only as far as needed.
                let log = &mut self.channels[ch as usize].log;
                let before = log.memory();
                log.shrink(true);
                self.used = self.used - before + log.memory();
                if self.used + log.growth_for(len, true) <= budget {
                    break true;
                }
                return Err(PublishError::OverBudget { frame: len, budget });
            }
            if let Some(x) = self.evict_oldest(ch, self.used + grow - budget) {
                return Ok(Appended::FanOutFirst(x));
            }
        };
        let c = &mut self.channels[ch as usize];
        let before = c.log.memory();
        let was_empty = c.log.is_empty();
        let head = c.log.head();
        let at = now.mono_ms;
        let id = c
            .log
            .append_at(event, data, now.unix_us, at, tight, &mut self.scratch)?;
        self.used = self.used - before + c.log.memory();
        if !c.dirty {
            c.dirty = true;
            c.unsent_from = head;
            self.dirty.push(ch);
        }
        if c.subscribers.is_empty() {
            self.lru.touch(ch);
        }
        if was_empty {
            self.ages.set(ch, c.log.oldest_at().unwrap_or(at));
        }
        if self.scratch.capacity() > 64 * 1024 {
            // One large event should not pin its size for ever.
            self.scratch = Vec::new();
        }
        debug_assert!(self.used <= budget);
        Ok(Appended::Id(id))
    }

    /// Redis mode: empties the ring and starts it again just after
    /// `floor` (the channel's tip in Redis); `synced` from now on, or not
    /// (no longer followed). Only a channel without subscribers (no cursor
    /// points into the old ring).
    pub fn rebase(&mut self, ch: u32, floor: u64, synced: bool) {
        let cap = self.limits.history_bytes;
        let c = &mut self.channels[ch as usize];
        if !c.subscribers.is_empty() {
            log::error!("channel {}: not rebased, it has subscribers", c.name);
            return;
        }
        let before = c.log.memory();
        c.log = Log::new(cap, floor.saturating_add(1));
        c.synced = synced;
        c.unsent_from = 0;
        self.used = self.used - before + c.log.memory();
        self.ages.remove(ch);
        self.queue_idle(ch);
    }

    /// Drops the oldest frame of `ch` (its history is full), unless it has
    /// not been fanned out (then returns `ch`: fan it out first).
    fn drop_front_for_size(&mut self, ch: u32) -> Option<u32> {
        let c = &mut self.channels[ch as usize];
        let end = c.log.oldest_end()?;
        if end > c.sent() {
            return Some(ch);
        }
        c.log.drop_oldest();
        self.counts.evicted_size += 1;
        self.reposition(ch);
        None
    }

    /// Evicts from the channel holding the hub's oldest frame: frames
    /// oldest first while they stay older than every other channel's oldest,
    /// until shrinking its ring would free `need` bytes; then shrinks it.
    /// From `publishing` itself frames are dropped one at a time and the
    /// ring is kept (the append reuses the room). Returns a channel to fan
    /// out first when its unsent bytes are next in line.
    fn evict_oldest(&mut self, publishing: u32, need: usize) -> Option<u32> {
        let (_, v) = self.ages.oldest()?;
        let limit = self.ages.runner_up().unwrap_or(u64::MAX);
        let before = self.channels[v as usize].log.memory();
        let mut dropped = 0;
        loop {
            let c = &self.channels[v as usize];
            let Some(end) = c.log.oldest_end() else {
                break;
            };
            if dropped > 0 {
                let at = c.log.oldest_at().unwrap_or(u64::MAX);
                let shrinkable = before - (c.log.held() + c.log.frames() * FRAME_INDEX_BYTES);
                if v == publishing || at > limit || shrinkable >= need {
                    break;
                }
            }
            if end > c.sent() {
                if dropped == 0 {
                    return Some(v);
                }
                break;
            }
            self.channels[v as usize].log.drop_oldest();
            self.counts.evicted_budget += 1;
            dropped += 1;
        }
        if v != publishing {
            let c = &mut self.channels[v as usize];
            c.log.shrink(true);
            self.used = self.used - before + c.log.memory();
        }
        self.reposition(v);
        None
    }

    /// Updates a channel's place in the age order after its front changed.
    fn reposition(&mut self, ch: u32) {
        let c = &self.channels[ch as usize];
        match c.log.oldest_at() {
            Some(at) => self.ages.set(ch, at),
            None => {
                self.ages.remove(ch);
                if c.subscribers.is_empty() {
                    self.queue_idle(ch);
                }
            }
        }
    }

    /// When the next event of the hub expires (monotonic ms), if any.
    pub fn next_expiry(&self) -> Option<u64> {
        let ttl = self.limits.history_ttl_ms;
        if ttl == 0 {
            return None;
        }
        self.ages.oldest().map(|(at, _)| at.saturating_add(ttl))
    }

    /// When channel `ch`'s oldest event expires (monotonic ms), if any.
    pub fn next_expiry_of(&self, ch: u32) -> Option<u64> {
        let ttl = self.limits.history_ttl_ms;
        if ttl == 0 {
            return None;
        }
        let at = self.channels.get(ch as usize)?.log.oldest_at()?;
        Some(at.saturating_add(ttl))
    }

    /// Drops every event of the hub older than `--history-ttl` at `now_ms`,
    /// oldest first. Bytes not yet fanned out stay until the next call.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(t) = self.next_expiry() {
            let Some((_, v)) = self.ages.oldest() else {
                return;
            };
            if t > now_ms || self.expire_channel(v, now_ms) == 0 {
                return;
            }
        }
    }

    /// Drops channel `ch`'s events older than `--history-ttl` at `now_ms`;
    /// returns how many.
    pub fn expire_channel(&mut self, ch: u32, now_ms: u64) -> u64 {
        let ttl = self.limits.history_ttl_ms;
        if ttl == 0 || now_ms < ttl {
            return 0;
        }
        let Some(c) = self.channels.get_mut(ch as usize) else {
            return 0;
        };
        let before = c.log.memory();
        let sent = c.sent();
        let n = c.log.drop_older_than(now_ms - ttl, sent);
        if n > 0 {
            c.log.shrink(false);
            self.used = self.used - before + c.log.memory();
            self.counts.evicted_age += n;
            self.reposition(ch);
        }
        n
    }

    fn queue_idle(&mut self, ch: u32) {
        let c = &mut self.channels[ch as usize];
        if !c.idle_queued {
            c.idle_queued = true;
            self.maybe_idle.push(ch);
        }
    }

    /// Frees the channels left with no subscribers and no history. Called
    /// once per loop turn, when no channel index is held anywhere but in
    /// subscribers (which keep their channel alive).
    pub fn collect_idle(&mut self) {
        let mut queue = std::mem::take(&mut self.maybe_idle);
        for &ch in &queue {
            let c = &mut self.channels[ch as usize];
            if !std::mem::take(&mut c.idle_queued) {
                continue; // freed (and maybe reused) since it was queued
            }
            if c.live && c.subscribers.is_empty() && c.log.is_empty() {
                self.free(ch, Free::Idle);
            }
        }
        queue.clear();
        if self.maybe_idle.is_empty() {
            self.maybe_idle = queue;
        }
    }

    fn free(&mut self, ch: u32, why: Free) {
        let c = std::mem::replace(&mut self.channels[ch as usize], Channel::vacant());
        debug_assert!(c.live && c.subscribers.is_empty());
        self.freed.insert(&c.name, c.log.last_id());
        self.used -= c.log.memory();
        self.by_name.remove(&c.name);
        self.lru.remove(ch);
        self.ages.remove(ch);
        // Its entries in `dirty` and `maybe_idle` stay: both lists are
        // checked against the slot's flags when read (no scan here).
        self.vacant.push(ch);
        match why {
            Free::Idle => self.counts.freed_idle += 1,
            Free::Evicted => self.counts.freed_evicted += 1,
        }
    }

    /// Records that a fan-out pass wrote (or tried to write) everything
    /// published to the channel so far.
    pub fn mark_sent(&mut self, ch: u32) {
        let c = &mut self.channels[ch as usize];
        c.unsent_from = c.log.head();
    }

    /// Channels that grew since the last call; their marks are cleared.
    pub fn take_dirty(&mut self, out: &mut Vec<u32>) {
        out.clear();
        out.append(&mut self.dirty);
        // A channel freed this turn left its entry (its slot is no longer
        // dirty), and a slot reused may appear twice: keep each once.
        out.retain(|&ch| std::mem::take(&mut self.channels[ch as usize].dirty));
    }

    /// Adds a subscriber; returns its index in the channel's list.
    pub fn subscribe(&mut self, ch: u32, token: u32) -> u32 {
        let subs = &mut self.channels[ch as usize].subscribers;
        if subs.is_empty() {
            self.lru.remove(ch);
        }
        subs.push(token);
        self.subscribers += 1;
        (subs.len() - 1) as u32
    }

    /// Removes the subscriber at `index`; returns the token that moved into
    /// its place (whose stored index must become `index`), if any. The last
    /// subscriber leaving makes the channel evictable, or frees it at the
    /// end of the turn when it holds no history.
    pub fn unsubscribe(&mut self, ch: u32, index: u32) -> Option<u32> {
        let subs = &mut self.channels.get_mut(ch as usize)?.subscribers;
        let index = index as usize;
        if index >= subs.len() {
            return None;
        }
        subs.swap_remove(index);
        self.subscribers -= 1;
        let moved = subs.get(index).copied();
        if subs.is_empty() {
            self.lru.touch(ch);
            self.queue_idle(ch);
        }
        moved
    }

    /// Open streams, over all channels.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers
    }

    /// Memory held by all histories: what `--history-memory` bounds.
    pub fn memory(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests;
