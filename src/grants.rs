//! Streams held by a token, and who is barred from new ones.
//!
//! A token stream's `sub` lives in a side table keyed by connection key,
//! kept only for streams whose token names one, so a stream without a token
//! (and every idle subscriber's [`crate::stream::Subscriber`]) costs nothing
//! more. The table keeps a keyed 64-bit hash of the `sub`, not the string:
//! revocation only asks "is this the same sub", a hash answers it in 16
//! bytes and no allocation per stream (about 25 bytes a stream with the
//! map's spare room, where the string cost some 65), and with a per-process
//! random key no client can make its `sub` collide with another's. (The
//! `sub` itself is logged at admission; the stream's end is its
//! `Lane::Expiry` timer, not stored here.) Revocations
//! (`POST /events/close`) bar a channel or a `sub` until a time; the table
//! is bounded and its entries expire. Pure: times are Unix seconds passed
//! in.
//!
//! For forward auth (`--subscribe-auth-url`), the allowed-answer cache must
//! forget what is revoked: [`Grants::revoke`] returns the [`Revoked`] entry
//! for the caller to hand over, and [`Grants::barred`] is the one check
//! every new stream goes through, whatever authorised it.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Most revocations held at once.
pub const MAX_REVOKED: usize = 10_000;

/// What a revocation bars.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revoked {
    Channel(Box<str>),
    Sub(Box<str>),
}

impl Revoked {
    pub fn describe(&self) -> String {
        match self {
            Revoked::Channel(c) => format!("channel '{c}' was revoked; retry later"),
            Revoked::Sub(_) => "this subscriber's access was revoked; retry later".to_string(),
        }
    }
}

/// The revocation table is full of entries that have not expired.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

#[derive(Default)]
pub struct Grants {
    /// The `sub` of each token stream that has one, by connection key
    /// (slab keys fit in 32 bits: the slab is bounded by the descriptor
    /// limit).
    subs: HashMap<u32, u64>,
    /// Keys the `sub` hashes (random per process).
    sub_hasher: RandomState,
    /// What is barred, and until when (Unix seconds).
    revoked: HashMap<Revoked, u64>,
}

impl Grants {
    /// Connection `key` streams with a token for `sub`.
    pub fn hold(&mut self, key: usize, sub: &str) {
        let h = self.sub_hasher.hash_one(sub);
        self.subs.insert(key as u32, h);
    }

    /// Connection `key` closed.
    pub fn forget(&mut self, key: usize) {
        if !self.subs.is_empty() {
            self.subs.remove(&(key as u32));
        }
    }

    /// Whether connection `key` streams for `sub`.
    pub fn streams_for(&self, key: usize, sub: &str) -> bool {
        let h = self.sub_hasher.hash_one(sub);
        self.subs.get(&(key as u32)) == Some(&h)
    }

    /// Token streams open with a `sub`.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// The connections streaming with a token for `sub`.
    pub fn of_sub(&self, sub: &str) -> Vec<usize> {
        let h = self.sub_hasher.hash_one(sub);
        self.subs
            .iter()
            .filter(|(_, s)| **s == h)
            .map(|(k, _)| *k as usize)
            .collect()
    }

    /// Bars `what` until `until_unix` (a later bar of the same wins).
    pub fn revoke(&mut self, what: Revoked, until_unix: u64, now_unix: u64) -> Result<(), Full> {
        if self.revoked.len() >= MAX_REVOKED && !self.revoked.contains_key(&what) {
            self.revoked.retain(|_, until| *until > now_unix);
            if self.revoked.len() >= MAX_REVOKED {
                return Err(Full);
            }
        }
        let until = self.revoked.entry(what).or_insert(0);
        *until = (*until).max(until_unix);
        Ok(())
    }

    /// Whether a new stream of `channel` (for `sub`) is barred at
    /// `now_unix`; what bars it.
    pub fn barred(&mut self, channel: &str, sub: Option<&str>, now_unix: u64) -> Option<Revoked> {
        if self.revoked.is_empty() {
            return None;
        }
        let mut found = None;
        let asks = [
            Some(Revoked::Channel(channel.into())),
            sub.map(|s| Revoked::Sub(s.into())),
        ];
        for what in asks.into_iter().flatten() {
            match self.revoked.get(&what) {
                Some(&until) if until > now_unix => found = found.or(Some(what)),
                Some(_) => {
                    self.revoked.remove(&what);
                }
                None => {}
            }
        }
        found
    }

    /// Revocations held (expired ones may linger until looked at).
    pub fn revoked_len(&self) -> usize {
        self.revoked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_streams_are_held_by_key_and_found_by_sub() {
        let mut g = Grants::default();
        g.hold(3, "ann");
        g.hold(4, "bob");
        assert_eq!(g.of_sub("ann"), vec![3]);
        assert!(g.streams_for(4, "bob") && !g.streams_for(4, "ann"));
        assert!(g.of_sub("cy").is_empty());
        g.forget(3);
        g.forget(9);
        assert!(g.of_sub("ann").is_empty() && g.len() == 1);
    }

    #[test]
    fn revocations_bar_until_they_expire() {
        let mut g = Grants::default();
        assert_eq!(g.barred("news", Some("ann"), 0), None);
        g.revoke(Revoked::Sub("ann".into()), 100, 0).unwrap();
        g.revoke(Revoked::Channel("news".into()), 50, 0).unwrap();
        assert_eq!(
            g.barred("news", Some("ann"), 10),
            Some(Revoked::Channel("news".into()))
        );
        assert_eq!(
            g.barred("other", Some("ann"), 60),
            Some(Revoked::Sub("ann".into()))
        );
        assert_eq!(g.barred("news", None, 60), None);
        assert_eq!(g.revoked_len(), 1, "the expired entry was dropped");
        assert_eq!(g.barred("x", Some("ann"), 100), None);
    }

    #[test]
    fn the_table_is_bounded_and_makes_room_from_expired_entries() {
        let mut g = Grants::default();
        for i in 0..MAX_REVOKED {
            g.revoke(Revoked::Sub(i.to_string().into()), 10 + (i % 2) as u64, 0)
                .unwrap();
        }
        assert_eq!(g.revoke(Revoked::Sub("new".into()), 100, 5), Err(Full));
        assert_eq!(g.revoke(Revoked::Sub("7".into()), 100, 5), Ok(()));
        assert_eq!(g.revoke(Revoked::Sub("new".into()), 100, 10), Ok(()));
        assert_eq!(g.revoked_len(), MAX_REVOKED / 2 + 1);
    }
}
