//! Channels: each one a log of encoded SSE frames (`ring.rs`) and the tokens
//! of its subscribers; the hub finds channels by name and tracks which ones
//! grew this loop turn.

mod ring;

use std::collections::HashMap;

pub use ring::{Log, PublishError, Resume};

/// A named channel: its log and its subscribers' tokens.
pub struct Channel {
    pub name: Box<str>,
    pub log: Log,
    pub subscribers: Vec<u32>,
    dirty: bool,
    /// Log offset from which bytes have not been through a fan-out pass.
    unsent_from: u64,
}

/// All channels, by name, and which ones grew this loop turn.
pub struct Hub {
    channels: Vec<Channel>,
    by_name: HashMap<Box<str>, u32>,
    dirty: Vec<u32>,
    history_bytes: usize,
    max_channels: usize,
}

impl Hub {
    pub fn new(history_bytes: usize, max_channels: usize) -> Hub {
        Hub {
            channels: Vec::new(),
            by_name: HashMap::new(),
            dirty: Vec::new(),
            history_bytes,
            max_channels,
        }
    }

    /// The channel's index, created on first use; `None` at the channel cap.
    /// `seed` (wall clock, microseconds) becomes a new channel's first id.
    pub fn channel(&mut self, name: &str, seed: u64) -> Option<u32> {
        if let Some(&i) = self.by_name.get(name) {
            return Some(i);
        }
        if self.channels.len() >= self.max_channels {
            return None;
        }
        let i = self.channels.len() as u32;
        self.channels.push(Channel {
            name: name.into(),
            log: Log::new(self.history_bytes, seed),
            subscribers: Vec::new(),
            dirty: false,
            unsent_from: 0,
        });
        self.by_name.insert(name.into(), i);
        Some(i)
    }

    pub fn find(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, i: u32) -> &Channel {
        &self.channels[i as usize]
    }

    pub fn get_mut(&mut self, i: u32) -> &mut Channel {
        &mut self.channels[i as usize]
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Channel> {
        self.channels.iter()
    }

    /// Whether the hub could create a channel with this name now.
    pub fn can_create(&self, name: &str) -> bool {
        self.by_name.contains_key(name) || self.channels.len() < self.max_channels
    }

    /// Appends to a channel and marks it for this turn's fan-out pass.
    pub fn publish(
        &mut self,
        ch: u32,
        event: Option<&str>,
        data: &str,
    ) -> Result<u64, PublishError> {
        let c = &mut self.channels[ch as usize];
        let before = c.log.head();
        let id = c.log.append(event, data)?;
        if !c.dirty {
            c.dirty = true;
            c.unsent_from = before;
            self.dirty.push(ch);
        }
        Ok(id)
    }

    /// Whether appending a frame of `len` bytes would evict bytes that have
    /// not been fanned out yet. The caller then fans this channel out first,
    /// so only subscribers whose sockets are full can lose their place.
    pub fn would_evict_unsent(&self, ch: u32, len: usize) -> bool {
        let c = &self.channels[ch as usize];
        c.dirty && c.log.head() + len as u64 > c.unsent_from + c.log.capacity() as u64
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
        for &ch in out.iter() {
            self.channels[ch as usize].dirty = false;
        }
    }

    /// Adds a subscriber; returns its index in the channel's list.
    pub fn subscribe(&mut self, ch: u32, token: u32) -> u32 {
        let subs = &mut self.channels[ch as usize].subscribers;
        subs.push(token);
        (subs.len() - 1) as u32
    }

    /// Removes the subscriber at `index`; returns the token that moved into
    /// its place (whose stored index must become `index`), if any.
    pub fn unsubscribe(&mut self, ch: u32, index: u32) -> Option<u32> {
        let subs = &mut self.channels[ch as usize].subscribers;
        let index = index as usize;
        if index >= subs.len() {
            return None;
        }
        subs.swap_remove(index);
        subs.get(index).copied()
    }

    pub fn subscriber_count(&self) -> usize {
        self.channels.iter().map(|c| c.subscribers.len()).sum()
    }

    pub fn memory(&self) -> usize {
        self.channels
            .iter()
            .map(|c| c.log.memory() + c.subscribers.capacity() * 4 + c.name.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_marks_dirty_once_and_swaps_subscribers() {
        let mut hub = Hub::new(1024, 2);
        let a = hub.channel("a", 1).unwrap();
        let b = hub.channel("b", 1).unwrap();
        assert!(hub.channel("c", 1).is_none());
        assert_eq!(hub.channel("a", 1), Some(a));
        hub.publish(a, None, "x").unwrap();
        hub.publish(a, None, "y").unwrap();
        let mut d = Vec::new();
        hub.take_dirty(&mut d);
        assert_eq!(d, vec![a]);
        hub.take_dirty(&mut d);
        assert!(d.is_empty());
        // 15-byte frames in a 1024-byte history: eviction of unsent bytes
        // is predicted exactly when head + len passes unsent_from + 1024.
        hub.publish(a, None, "z").unwrap();
        assert!(!hub.would_evict_unsent(a, 900));
        assert!(hub.would_evict_unsent(a, 1024 - 15 + 1));
        hub.mark_sent(a);
        assert!(!hub.would_evict_unsent(a, 1024));
        assert_eq!(hub.subscribe(b, 7), 0);
        assert_eq!(hub.subscribe(b, 8), 1);
        assert_eq!(hub.subscribe(b, 9), 2);
        assert_eq!(hub.unsubscribe(b, 0), Some(9));
        assert_eq!(hub.get(b).subscribers, vec![9, 8]);
        assert_eq!(hub.unsubscribe(b, 1), None);
    }
}
