//! A hashed timing wheel: one timer per key (a connection's slab key), O(1)
//! schedule and cancel, no allocation per timer.
//!
//! Each key's node (prev, next, deadline) lives in `nodes[key]`, linked into
//! the list of slot `deadline % SLOTS`. A deadline further away than one turn
//! of the wheel stays in its slot until the turn in which it is due.

use std::time::{Duration, Instant};

const NIL: u32 = u32::MAX;
const SLOTS: usize = 1024;

#[derive(Clone, Copy)]
struct Node {
    prev: u32,
    next: u32,
    /// Tick at which the timer fires; meaningful only while linked.
    deadline: u64,
    linked: bool,
}

const UNLINKED: Node = Node {
    prev: NIL,
    next: NIL,
    deadline: 0,
    linked: false,
};

pub struct Wheel {
    start: Instant,
    tick: Duration,
    slots: Vec<u32>,
    nodes: Vec<Node>,
    /// Every tick up to and including this one has been expired.
    current: u64,
    len: usize,
}

impl Wheel {
    pub fn new(start: Instant, tick: Duration) -> Wheel {
        Wheel {
            start,
            tick,
            slots: vec![NIL; SLOTS],
            nodes: Vec::new(),
            current: 0,
            len: 0,
        }
    }

    /// Reserves nodes for keys below `n`, so scheduling never allocates.
    pub fn reserve(&mut self, n: usize) {
        self.nodes.reserve(n.saturating_sub(self.nodes.len()));
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn tick_of(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.start);
        (d.as_nanos() / self.tick.as_nanos()) as u64
    }

    /// Sets (or moves) the timer of `key` to fire at the first tick not
    /// earlier than `at`.
    pub fn schedule(&mut self, key: usize, at: Instant) {
        self.cancel(key);
        if key >= self.nodes.len() {
            self.nodes.resize(key + 1, UNLINKED);
        }
        let d = at.saturating_duration_since(self.start);
        let mut deadline = d.as_nanos().div_ceil(self.tick.as_nanos()) as u64;
        if deadline <= self.current {
            deadline = self.current + 1;
        }
        let slot = (deadline % SLOTS as u64) as usize;
        let head = self.slots[slot];
        self.nodes[key] = Node {
            prev: NIL,
            next: head,
            deadline,
            linked: true,
        };
        if head != NIL {
            self.nodes[head as usize].prev = key as u32;
        }
        self.slots[slot] = key as u32;
        self.len += 1;
    }

    pub fn cancel(&mut self, key: usize) {
        let Some(node) = self.nodes.get(key).copied() else {
            return;
        };
        if !node.linked {
            return;
        }
        if node.prev != NIL {
            self.nodes[node.prev as usize].next = node.next;
        } else {
            let slot = (node.deadline % SLOTS as u64) as usize;
            self.slots[slot] = node.next;
        }
        if node.next != NIL {
            self.nodes[node.next as usize].prev = node.prev;
        }
        self.nodes[key] = UNLINKED;
        self.len -= 1;
    }

    pub fn is_scheduled(&self, key: usize) -> bool {
        self.nodes.get(key).is_some_and(|n| n.linked)
    }

    /// Unlinks every timer due at `now` and appends its key to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<usize>) {
        let now_tick = self.tick_of(now);
        if now_tick <= self.current {
            return;
        }
        // After a long sleep visit each slot once, not each missed tick.
        let first = self.current + 1;
        let last = now_tick.min(self.current + SLOTS as u64);
        for t in first..=last {
            let slot = (t % SLOTS as u64) as usize;
            let mut k = self.slots[slot];
            while k != NIL {
                let node = self.nodes[k as usize];
                if node.deadline <= now_tick {
                    self.cancel(k as usize);
                    out.push(k as usize);
                }
                k = node.next;
            }
        }
        self.current = now_tick;
    }

    /// When the loop must wake next, or `None` when no timer is set.
    /// May be early (a slot can hold timers of a later turn), never late.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        for t in self.current + 1..=self.current + SLOTS as u64 {
            let mut k = self.slots[(t % SLOTS as u64) as usize];
            while k != NIL {
                let node = self.nodes[k as usize];
                if node.deadline <= t {
                    return Some(self.start + self.tick * t as u32);
                }
                k = node.next;
            }
        }
        // Every timer is more than one turn away: wake after a turn.
        Some(self.start + self.tick * (self.current + SLOTS as u64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fires_at_or_after_deadline_never_before() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 100 * MS);
        w.schedule(3, t0 + 250 * MS);
        w.schedule(5, t0 + 100 * MS);
        let mut out = Vec::new();
        w.expire(t0 + 99 * MS, &mut out);
        assert!(out.is_empty());
        w.expire(t0 + 100 * MS, &mut out);
        assert_eq!(out, vec![5]);
        out.clear();
        w.expire(t0 + 299 * MS, &mut out);
        assert!(out.is_empty(), "250 ms rounds up to the 300 ms tick");
        w.expire(t0 + 300 * MS, &mut out);
        assert_eq!(out, vec![3]);
        assert!(w.is_empty());
    }

    #[test]
    fn cancel_and_move_relink() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 100 * MS);
        for k in 0..10 {
            w.schedule(k, t0 + 500 * MS);
        }
        w.cancel(4);
        w.cancel(4);
        w.schedule(7, t0 + 2000 * MS);
        assert_eq!(w.len(), 9);
        let mut out = Vec::new();
        w.expire(t0 + 600 * MS, &mut out);
        out.sort();
        assert_eq!(out, vec![0, 1, 2, 3, 5, 6, 8, 9]);
        assert!(w.is_scheduled(7));
        assert_eq!(w.next_wake(), Some(t0 + 2000 * MS));
    }

    #[test]
    fn deadlines_beyond_one_turn_wait_their_turn() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 10 * MS);
        let far = t0 + 10 * MS * (SLOTS as u32 + 5);
        w.schedule(1, far);
        let mut out = Vec::new();
        w.expire(t0 + 10 * MS * 10, &mut out);
        assert!(out.is_empty());
        w.expire(far - MS, &mut out);
        assert!(out.is_empty());
        w.expire(far, &mut out);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn long_sleep_expires_everything_due() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 10 * MS);
        for k in 0..50 {
            w.schedule(k, t0 + MS * (k as u32 * 37));
        }
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_secs(60), &mut out);
        assert_eq!(out.len(), 50);
        assert!(w.next_wake().is_none());
    }

    #[test]
    fn past_deadlines_fire_on_the_next_tick() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 100 * MS);
        let mut out = Vec::new();
        w.expire(t0 + 1000 * MS, &mut out);
        w.schedule(2, t0);
        assert_eq!(w.next_wake(), Some(t0 + 1100 * MS));
        w.expire(t0 + 1100 * MS, &mut out);
        assert_eq!(out, vec![2]);
    }
}
