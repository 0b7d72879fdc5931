//! `Idempotency-Key` on a publish: the same (credential, key) again within
//! the TTL gets the answer the first publish got and publishes nothing;
//! the same key with a different body is a conflict (422).
//!
//! A key is scoped by the publish credential ([`scope`]), so two
//! publishers never see each other's answers, and a body is known by its
//! hash ([`body_hash`]). [`Store`] keeps the answers when the hub runs
//! without Redis; with Redis the same scope, in [`hex`], names the Redis
//! key (`P:{E}:i:<hex>`) and this store is not used. Pure: time comes in
//! as milliseconds of the loop's clock.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest as _, Sha256};

pub type Digest = [u8; 32];

/// Longest key accepted, in bytes.
pub const MAX_KEY: usize = 255;

/// sha256 over (credential length as 8 bytes LE, credential, key): the
/// scope, so two publish credentials never share a key (the length makes
/// ("ab", "c") and ("a", "bc") differ).
pub fn scope(credential: &[u8], key: &str) -> Digest {
    let mut h = Sha256::new();
    h.update((credential.len() as u64).to_le_bytes());
    h.update(credential);
    h.update(key.as_bytes());
    h.finalize().into()
}

pub fn body_hash(body: &[u8]) -> Digest {
    Sha256::digest(body).into()
}

/// The hash of a request's parts, each length-prefixed (so no two
/// different lists of parts hash alike): a publish's query (it may name
/// the channel and event), content type and body.
pub fn request_hash(parts: &[&[u8]]) -> Digest {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Lowercase hex, 64 characters.
pub fn hex(d: &Digest) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// 1 to 255 bytes of printable ASCII (0x21..=0x7e): no spaces, nothing a
/// header or a Redis key name could be confused by.
pub fn valid_key(k: &str) -> bool {
    (1..=MAX_KEY).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic())
}

/// What the store holds for a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not seen, or expired: publish, then [`Store::store`] the answer.
    New,
    /// The same body was published: answer this, publish nothing.
    Replay(&'a [u8]),
    /// The key was used with a different body.
    Conflict,
}

struct Entry {
    body: Digest,
    answer: Vec<u8>,
    /// Which store this is: an order node for an earlier store of the
    /// same scope is stale.
    seq: u64,
}

/// One row of the expiry order.
struct Node {
    expires_ms: u64,
    seq: u64,
    scope: Digest,
}

/// The answers kept without Redis, each for the same TTL, at most
/// `max_entries` of them (the oldest go first).
pub struct Store {
    ttl_ms: u64,
    max_entries: usize,
    map: HashMap<Digest, Entry>,
    /// Store order, which is expiry order (the TTL is the same for all).
    /// Invariant: every entry has exactly one node with its `seq`; other
    /// nodes are stale (replaced entries) and are skipped when they come
    /// up, or dropped by `compact` when they pile up.
    order: VecDeque<Node>,
    answer_bytes: usize,
    next_seq: u64,
}

/// What one entry costs beside its answer: its map slot and its node.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<(Digest, Entry)>();
const NODE_OVERHEAD: usize = std::mem::size_of::<Node>();

impl Store {
    /// `ttl_ms` 0 or `max_entries` 0: the store keeps nothing.
    pub fn new(ttl_ms: u64, max_entries: usize) -> Store {
        Store {
            ttl_ms,
            max_entries,
            map: HashMap::new(),
            order: VecDeque::new(),
            answer_bytes: 0,
            next_seq: 0,
        }
    }

    /// New: not seen (or expired). Replay: the stored answer body for the
    /// same body hash. Conflict: same scope, different body hash. An entry
    /// stored at `t` is held while `now_ms < t + ttl`.
    pub fn lookup(&mut self, scope: &Digest, body: &Digest, now_ms: u64) -> Lookup<'_> {
        self.expire(now_ms);
        match self.map.get(scope) {
            None => Lookup::New,
            Some(e) if e.body == *body => Lookup::Replay(&e.answer),
            Some(_) => Lookup::Conflict,
        }
    }

    /// Keeps `answer` for `scope` (replacing what it had) until
    /// `now_ms + ttl`, making room by dropping the oldest entries.
    pub fn store(&mut self, scope: Digest, body: Digest, answer: Vec<u8>, now_ms: u64) {
        if self.ttl_ms == 0 || self.max_entries == 0 {
            return;
        }
        self.expire(now_ms);
        self.remove(&scope);
        while self.map.len() >= self.max_entries {
            let Some(node) = self.order.pop_front() else {
                break;
            };
            if self.is_current(&node) {
                self.remove(&node.scope);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.answer_bytes += answer.capacity();
        self.map.insert(scope, Entry { body, answer, seq });
        self.order.push_back(Node {
            expires_ms: now_ms.saturating_add(self.ttl_ms),
            seq,
            scope,
        });
        self.compact();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes held: the answers, plus an estimate of each entry's map slot
    /// and of each order node (stale ones included).
    pub fn memory(&self) -> usize {
        self.answer_bytes + self.map.len() * ENTRY_OVERHEAD + self.order.len() * NODE_OVERHEAD
    }

    fn is_current(&self, node: &Node) -> bool {
        self.map.get(&node.scope).is_some_and(|e| e.seq == node.seq)
    }

    fn remove(&mut self, scope: &Digest) {
        if let Some(e) = self.map.remove(scope) {
            self.answer_bytes -= e.answer.capacity();
        }
        if self.map.is_empty() {
            self.order.clear();
        }
    }

    /// Drops the entries whose time has come, from the front of the order
    /// (stale nodes on the way go too).
    fn expire(&mut self, now_ms: u64) {
        while let Some(node) = self.order.front() {
            let current = self.is_current(node);
            if current && node.expires_ms > now_ms {
                break;
            }
            let Some(node) = self.order.pop_front() else {
                break;
            };
            if current {
                self.remove(&node.scope);
            }
        }
    }

    /// Stale nodes are at most as many as the entries (plus a few): a scope
    /// stored again and again within the TTL does not grow the order.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order
                .retain(|n| map.get(&n.scope).is_some_and(|e| e.seq == n.seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_frames_its_parts() {
        let h = |p: &[&[u8]]| request_hash(p);
        assert_ne!(h(&[b"channel=a", b"", b"x"]), h(&[b"channel=b", b"", b"x"]));
        assert_ne!(h(&[b"ab", b"c"]), h(&[b"a", b"bc"]));
        assert_eq!(h(&[b"q", b"t", b"b"]), h(&[b"q", b"t", b"b"]));
    }

    fn d(n: u8) -> Digest {
        [n; 32]
    }

    #[test]
    fn scope_tells_credentials_and_keys_apart() {
        assert_eq!(scope(b"cred", "k1"), scope(b"cred", "k1"));
        assert_ne!(scope(b"cred", "k1"), scope(b"other", "k1"));
        assert_ne!(scope(b"cred", "k1"), scope(b"cred", "k2"));
        assert_ne!(scope(b"ab", "c"), scope(b"a", "bc"), "the length frames it");
        assert_ne!(scope(b"", "k"), scope(b"k", ""));
        // sha256(8 zero bytes) — the empty credential and key.
        assert_eq!(
            hex(&scope(b"", "")),
            "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"
        );
        assert_eq!(
            hex(&body_hash(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&d(0xa5)), "a5".repeat(32));
    }

    #[test]
    fn keys_are_1_to_255_printable_ascii() {
        assert!(valid_key("a"));
        assert!(valid_key("order-42:retry_1/~!"));
        assert!(valid_key(&"k".repeat(255)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"k".repeat(256)));
        for bad in ["a b", "a\tb", "a\r\n", "é", "\x7f", "\0"] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn replay_and_conflict() {
        let mut s = Store::new(1000, 10);
        assert_eq!(s.lookup(&d(1), &d(9), 0), Lookup::New);
        s.store(d(1), d(9), b"{\"id\":1}".to_vec(), 0);
        assert_eq!(s.lookup(&d(1), &d(9), 10), Lookup::Replay(b"{\"id\":1}"));
        assert_eq!(s.lookup(&d(1), &d(8), 10), Lookup::Conflict);
        assert_eq!(s.lookup(&d(2), &d(9), 10), Lookup::New, "another scope");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn expiry_exactly_at_the_ttl() {
        let mut s = Store::new(1000, 10);
        s.store(d(1), d(9), b"a".to_vec(), 500);
        s.store(d(2), d(9), b"b".to_vec(), 700);
        assert_eq!(s.lookup(&d(1), &d(9), 1499), Lookup::Replay(b"a"));
        assert_eq!(s.lookup(&d(1), &d(9), 1500), Lookup::New);
        assert_eq!(s.len(), 1);
        assert_eq!(s.lookup(&d(2), &d(9), 1699), Lookup::Replay(b"b"));
        assert_eq!(s.lookup(&d(2), &d(8), 1700), Lookup::New);
        assert!(s.is_empty());
        assert_eq!(s.memory(), 0);
        // A lookup of any scope expires them all.
        s.store(d(3), d(9), b"c".to_vec(), 2000);
        s.lookup(&d(4), &d(9), 3000);
        assert!(s.is_empty());
    }

    #[test]
    fn the_oldest_go_first_at_the_cap() {
        let mut s = Store::new(60_000, 3);
        for i in 0..5 {
            s.store(d(i), d(9), vec![i], u64::from(i));
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.lookup(&d(0), &d(9), 5), Lookup::New);
        assert_eq!(s.lookup(&d(1), &d(9), 5), Lookup::New);
        for i in 2..5 {
            assert_eq!(s.lookup(&d(i), &d(9), 5), Lookup::Replay(&[i]));
        }
        let mut one = Store::new(60_000, 1);
        one.store(d(1), d(9), b"a".to_vec(), 0);
        one.store(d(2), d(9), b"b".to_vec(), 0);
        assert_eq!(one.len(), 1);
        assert_eq!(one.lookup(&d(2), &d(9), 0), Lookup::Replay(b"b"));
    }

    #[test]
    fn stored_again_lives_from_its_new_store() {
        let mut s = Store::new(1000, 2);
        s.store(d(1), d(9), b"old".to_vec(), 0);
        s.store(d(2), d(9), b"b".to_vec(), 100);
        s.store(d(1), d(8), b"new".to_vec(), 500);
        assert_eq!(s.len(), 2);
        // Its first node comes up at 1000: stale, it does not drop it.
        assert_eq!(s.lookup(&d(1), &d(8), 1200), Lookup::Replay(b"new"));
        assert_eq!(s.lookup(&d(2), &d(9), 1200), Lookup::New);
        assert_eq!(s.lookup(&d(1), &d(8), 1499), Lookup::Replay(b"new"));
        assert_eq!(s.lookup(&d(1), &d(8), 1500), Lookup::New);

        // At the cap, the stale node is not taken for the oldest entry:
        // 2 (stored before 1's second store) goes, 1 stays.
        let mut s = Store::new(1000, 2);
        s.store(d(1), d(9), b"a".to_vec(), 0);
        s.store(d(2), d(9), b"b".to_vec(), 0);
        s.store(d(1), d(9), b"a2".to_vec(), 0);
        s.store(d(3), d(9), b"c".to_vec(), 0);
        assert_eq!(s.lookup(&d(2), &d(9), 0), Lookup::New);
        assert_eq!(s.lookup(&d(1), &d(9), 0), Lookup::Replay(b"a2"));
        assert_eq!(s.lookup(&d(3), &d(9), 0), Lookup::Replay(b"c"));

        // Stored again and again: the order does not grow with it.
        let mut s = Store::new(1_000_000, 10);
        for t in 0..10_000 {
            s.store(d(1), d(9), b"x".to_vec(), t);
        }
        assert_eq!(s.len(), 1);
        assert!(s.order.len() <= 2 + 16, "{}", s.order.len());
    }

    #[test]
    fn memory_follows_the_answers() {
        let mut s = Store::new(1000, 10);
        assert_eq!(s.memory(), 0);
        s.store(d(1), d(9), vec![0; 1000], 0);
        let one = s.memory();
        assert!(one >= 1000 + 32 + 32, "{one}");
        s.store(d(2), d(9), vec![0; 1000], 0);
        assert_eq!(s.memory(), 2 * one);
        s.store(d(2), d(9), vec![0; 1000], 0);
        assert!(s.memory() >= 2 * one, "a stale node counted while held");
        s.store(d(2), d(9), vec![0; 10], 1);
        assert!(s.memory() < 2 * one);
        s.lookup(&d(1), &d(9), 2000);
        assert_eq!((s.len(), s.memory()), (0, 0), "all gone with the entries");
    }

    #[test]
    fn ttl_zero_or_no_room_keeps_nothing() {
        for mut s in [Store::new(0, 10), Store::new(1000, 0)] {
            s.store(d(1), d(9), b"a".to_vec(), 0);
            assert!(s.is_empty());
            assert_eq!(s.lookup(&d(1), &d(9), 0), Lookup::New);
            assert_eq!(s.memory(), 0);
        }
    }

    /// Random stores and lookups against a plain list in store order.
    #[test]
    fn agrees_with_a_model() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let (ttl, cap) = (50, 8);
        let mut s = Store::new(ttl, cap);
        let mut model: Vec<(Digest, Digest, Vec<u8>, u64)> = Vec::new();
        let mut now = 0;
        for _ in 0..20_000 {
            now += rnd(4);
            let (scope, body) = (d(rnd(12) as u8), d(rnd(2) as u8));
            model.retain(|e| e.3 + ttl > now);
            if rnd(2) == 0 {
                let answer = vec![0; rnd(5) as usize];
                s.store(scope, body, answer.clone(), now);
                model.retain(|e| e.0 != scope);
                if model.len() == cap {
                    model.remove(0);
                }
                model.push((scope, body, answer, now));
            } else {
                let want = match model.iter().find(|e| e.0 == scope) {
                    None => Lookup::New,
                    Some(e) if e.1 == body => Lookup::Replay(&e.2),
                    Some(_) => Lookup::Conflict,
                };
                assert_eq!(s.lookup(&scope, &body, now), want);
            }
            assert_eq!(s.len(), model.len());
            assert!(s.order.len() <= 2 * s.len() + 17);
        }
    }
}
