//! The last ids of recently freed channels, so that a client that was
//! caught up when its channel went resumes with nothing missed when the
//! channel comes back, and the new ids continue above the old ones.
//!
//! Bounded: the newest `cap` names, oldest forgotten first; O(1) per insert.
//! Names are kept as 64-bit keyed hashes (a collision matters only if the
//! id matches too), so an entry costs about 32 bytes whatever the name.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

pub struct FreedIds {
    hasher: RandomState,
    /// Hash of the name → (its last id, the insertion that set it).
    ids: HashMap<u64, (u64, u64)>,
    /// Insertions, oldest first: (hash, insertion number).
    order: VecDeque<(u64, u64)>,
    cap: usize,
    seq: u64,
}

impl FreedIds {
    pub fn new(cap: usize) -> FreedIds {
        FreedIds {
            hasher: RandomState::new(),
            ids: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            seq: 0,
        }
    }

    /// Remembers the last id of channel `name`, forgetting the oldest entry
    /// when full.
    pub fn insert(&mut self, name: &str, id: u64) {
        if self.order.len() >= self.cap {
            if let Some((h, seq)) = self.order.pop_front() {
                if self.ids.get(&h).is_some_and(|e| e.1 == seq) {
                    self.ids.remove(&h);
                }
            }
        }
        let h = self.hasher.hash_one(name);
        self.seq += 1;
        self.ids.insert(h, (id, self.seq));
        self.order.push_back((h, self.seq));
    }

    /// The last id of `name` if it was freed recently; the entry goes (the
    /// channel that is being created carries it on).
    pub fn take(&mut self, name: &str) -> Option<u64> {
        let h = self.hasher.hash_one(name);
        self.ids.remove(&h).map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_newest_names_only() {
        let mut f = FreedIds::new(3);
        f.insert("a", 1);
        f.insert("b", 2);
        f.insert("a", 3); // a again: its newer id wins
        f.insert("c", 4);
        // "a"'s first insertion is forgotten; its second one is not.
        assert_eq!(f.take("a"), Some(3));
        assert_eq!(f.take("a"), None);
        f.insert("d", 5); // forgets "b"
        assert_eq!(f.take("b"), None);
        assert_eq!(f.take("c"), Some(4));
        assert_eq!(f.take("d"), Some(5));
        // Bounded whatever the number of names.
        for i in 0..10_000 {
            f.insert(&format!("n{i}"), i);
            assert!(f.order.len() <= 3 && f.ids.len() <= 3);
        }
        assert_eq!(f.take("n9999"), Some(9999));
        assert_eq!(f.take("n0"), None);
    }
}
