//! The short cache of the application's "allowed" answers, so that clients
//! coming back after a network blip do not become an authorization storm.
//!
//! Keyed by a 128-bit keyed hash (two SipHash keys drawn at start) of
//! (Cookie, Authorization, channel); the credentials themselves are never
//! stored. A request with neither header is never cached: nothing tells
//! its clients apart. Entries live `ttl` (or until the answer's own
//! expiry, if sooner) and are bounded in number and bytes; the oldest go
//! first. Revocation purges a channel's entries, or all.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

pub type Key = u128;

/// Most entries held by default, and their bytes.
pub const MAX_ENTRIES: usize = 10_000;
pub const MAX_BYTES: usize = 4 << 20;

struct Entry {
    until: Instant,
    expires_unix: Option<u64>,
    channel: Box<str>,
}

pub struct Cache {
    ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
    map: HashMap<Key, Entry>,
    /// Insertion order (= expiry order, the ttl being constant; an entry
    /// expiring sooner goes no later). Stale rows (purged or replaced
    /// keys) are skipped when they come up.
    order: VecDeque<(Instant, Key)>,
    bytes: usize,
    keys: (RandomState, RandomState),
}

/// The bytes one entry costs, counted against the bound.
fn cost(channel: &str) -> usize {
    std::mem::size_of::<(Key, Entry)>() + std::mem::size_of::<(Instant, Key)>() + channel.len()
}

impl Cache {
    pub fn new(ttl: Duration, max_entries: usize, max_bytes: usize) -> Cache {
        Cache {
            ttl,
            max_entries,
            max_bytes,
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The key of a request, or `None` when it is not to be cached (the
    /// cache is off, or the request carries neither credential).
    pub fn key(
        &self,
        cookie: Option<&str>,
        authorization: Option<&str>,
        channel: &str,
    ) -> Option<Key> {
        let present = |v: Option<&str>| v.is_some_and(|v| !v.is_empty());
        if self.ttl.is_zero() || !(present(cookie) || present(authorization)) {
            return None;
        }
        let half = |s: &RandomState| s.hash_one((cookie, authorization, channel));
        Some(u128::from(half(&self.keys.0)) << 64 | u128::from(half(&self.keys.1)))
    }

    /// An allowed answer still held: its expiry (Unix seconds), if any.
    pub fn get(&mut self, key: Key, now: Instant) -> Option<Option<u64>> {
        self.expire(now);
        let e = self.map.get(&key)?;
        (e.until > now).then_some(e.expires_unix)
    }

    /// Keeps an allowed answer. `left`: how long its own expiry is away.
    pub fn put(
        &mut self,
        key: Key,
        channel: &str,
        expires_unix: Option<u64>,
        left: Option<Duration>,
        now: Instant,
    ) {
        if self.ttl.is_zero() || self.max_entries == 0 {
            return;
        }
        let until = now + left.map_or(self.ttl, |l| l.min(self.ttl));
        if until <= now {
            return;
        }
        self.expire(now);
        self.remove(key);
        while self.map.len() >= self.max_entries || self.bytes + cost(channel) > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_front() else {
                return;
            };
            self.remove(oldest);
        }
        self.bytes += cost(channel);
        self.map.insert(
            key,
            Entry {
                until,
                expires_unix,
                channel: channel.into(),
            },
        );
        self.order.push_back((until, key));
    }

    /// Forgets every entry for `channel`; returns how many.
    pub fn purge_channel(&mut self, channel: &str) -> usize {
        let gone: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, e)| &*e.channel == channel)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.remove(*k);
        }
        gone.len()
    }

    pub fn purge_all(&mut self) {
        self.map = HashMap::new();
        self.order = VecDeque::new();
        self.bytes = 0;
    }

    fn remove(&mut self, key: Key) {
        if let Some(e) = self.map.remove(&key) {
            self.bytes -= cost(&e.channel);
        }
        if self.map.is_empty() {
            self.order.clear();
        }
    }

    /// Drops entries whose time has come (from the front of the order).
    fn expire(&mut self, now: Instant) {
        while let Some(&(until, key)) = self.order.front() {
            if until > now && self.map.contains_key(&key) {
                break;
            }
            self.order.pop_front();
            if self.map.get(&key).is_some_and(|e| e.until <= now) {
                self.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn never_without_credentials_nor_when_off() {
        let c = Cache::new(5 * S, 10, MAX_BYTES);
        assert!(c.key(None, None, "a").is_none());
        assert!(c.key(Some(""), None, "a").is_none());
        assert!(c.key(Some("s=1"), None, "a").is_some());
        assert!(c.key(None, Some("Bearer x"), "a").is_some());
        let off = Cache::new(Duration::ZERO, 10, MAX_BYTES);
        assert!(off.key(Some("s=1"), None, "a").is_none());
    }

    #[test]
    fn keys_tell_credentials_and_channels_apart() {
        let c = Cache::new(5 * S, 10, MAX_BYTES);
        let k = |ck, au, ch| c.key(ck, au, ch).unwrap();
        assert_eq!(k(Some("s=1"), None, "a"), k(Some("s=1"), None, "a"));
        assert_ne!(k(Some("s=1"), None, "a"), k(Some("s=2"), None, "a"));
        assert_ne!(k(Some("s=1"), None, "a"), k(Some("s=1"), None, "b"));
        assert_ne!(k(Some("x"), None, "a"), k(None, Some("x"), "a"));
    }

    #[test]
    fn entries_expire_after_the_ttl_or_their_own_expiry() {
        let t0 = Instant::now();
        let mut c = Cache::new(5 * S, 10, MAX_BYTES);
        let a = c.key(Some("s=1"), None, "a").unwrap();
        let b = c.key(Some("s=2"), None, "a").unwrap();
        c.put(a, "a", None, None, t0);
        c.put(b, "a", Some(42), Some(2 * S), t0);
        assert_eq!(c.get(a, t0 + S), Some(None));
        assert_eq!(c.get(b, t0 + S), Some(Some(42)));
        assert_eq!(c.get(b, t0 + 2 * S), None, "its own expiry came first");
        assert_eq!(c.get(a, t0 + 4 * S), Some(None));
        assert_eq!(c.get(a, t0 + 5 * S), None);
        assert!(c.is_empty() && c.bytes() == 0);
        c.put(a, "a", Some(1), Some(Duration::ZERO), t0);
        assert!(c.is_empty(), "an answer already expired is not kept");
    }

    #[test]
    fn bounded_in_entries_and_bytes_oldest_first() {
        let t0 = Instant::now();
        let mut c = Cache::new(60 * S, 3, MAX_BYTES);
        let keys: Vec<Key> = (0..5)
            .map(|i| c.key(Some(&format!("s={i}")), None, "a").unwrap())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            c.put(*k, "a", None, None, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(keys[0], t0), None);
        assert_eq!(c.get(keys[1], t0), None);
        assert!(c.get(keys[4], t0).is_some());
        let one = cost("a");
        let mut c = Cache::new(60 * S, 100, one * 2);
        for k in &keys {
            c.put(*k, "a", None, None, t0);
        }
        assert_eq!(c.len(), 2);
        assert!(c.bytes() <= one * 2);
        // Re-putting a key replaces it, never counts it twice.
        c.put(keys[4], "a", None, None, t0);
        c.put(keys[4], "a", None, None, t0);
        assert_eq!((c.len(), c.bytes()), (2, one * 2));
    }

    #[test]
    fn purge_by_channel_or_all() {
        let t0 = Instant::now();
        let mut c = Cache::new(60 * S, 100, MAX_BYTES);
        let a = c.key(Some("s"), None, "a").unwrap();
        let b = c.key(Some("s"), None, "b").unwrap();
        c.put(a, "a", None, None, t0);
        c.put(b, "b", None, None, t0);
        assert_eq!(c.purge_channel("a"), 1);
        assert_eq!(c.get(a, t0), None);
        assert!(c.get(b, t0).is_some());
        c.put(a, "a", None, None, t0);
        c.purge_all();
        assert!(c.is_empty() && c.get(b, t0).is_none() && c.bytes() == 0);
        // Stale order rows left by a purge do not disturb later expiry.
        c.put(a, "a", None, None, t0 + S);
        assert!(c.get(a, t0 + 30 * S).is_some());
        assert!(c.get(a, t0 + 61 * S).is_none());
    }
}
