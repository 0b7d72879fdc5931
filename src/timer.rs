//! A hashed timing wheel, O(1) to schedule, move and cancel, with no
//! allocation per timer.
//!
//! A timer belongs to a connection or to a channel ([`Timer`]). A connection
//! has one timer per [`Lane`], so a deadline of its I/O (request deadline,
//! heartbeat, stalled writer, linger) and a later end of its authorisation
//! can be set side by side. A channel has one (e.g. when its oldest event
//! reaches the history's age limit).
//!
//! Every timer's node (prev, next, deadline) lives at a fixed place: a
//! connection's in `conn_nodes[key * LANES + lane]`, a channel's in
//! `chan_nodes[index]`; nodes are linked into the list of slot
//! `deadline % SLOTS`. A deadline further away than one turn of the wheel
//! stays in its slot until the turn in which it is due.

use std::time::{Duration, Instant};

const NIL: u32 = u32::MAX;
const SLOTS: usize = 1024;
/// Marks a node id as a channel's.
const CHANNEL_BIT: u32 = 1 << 31;
/// Timers per connection.
pub const LANES: usize = 2;

/// Which of a connection's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The deadline of what the connection is doing now: the request
    /// deadline, the keep-alive idle timeout, the next heartbeat, the
    /// stalled-writer deadline, the lingering close.
    Io = 0,
    /// When the connection's authorisation ends (a token's expiry).
    Expiry = 1,
}

/// What a timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    Conn(usize, Lane),
    Channel(u32),
}

impl Timer {
    /// The I/O timer of a connection.
    pub fn io(key: usize) -> Timer {
        Timer::Conn(key, Lane::Io)
    }

    fn id(self) -> u32 {
        match self {
            Timer::Conn(key, lane) => (key * LANES + lane as usize) as u32,
            Timer::Channel(ch) => CHANNEL_BIT | ch,
        }
    }

    fn of_id(id: u32) -> Timer {
        if id & CHANNEL_BIT != 0 {
            Timer::Channel(id & !CHANNEL_BIT)
        } else {
            let lane = if id as usize % LANES == 0 {
                Lane::Io
            } else {
                Lane::Expiry
            };
            Timer::Conn(id as usize / LANES, lane)
        }
    }
}

/// 12 bytes: a connection's two lanes cost what one 24-byte node did.
#[derive(Clone, Copy)]
struct Node {
    prev: u32,
    next: u32,
    /// Tick at which the timer fires (modulo 2^32: at a 100 ms tick that
    /// is 13 years); 0 while unlinked, as a linked deadline is always > 0.
    deadline: u32,
}

const UNLINKED: Node = Node {
    prev: NIL,
    next: NIL,
    deadline: 0,
};

pub struct Wheel {
    start: Instant,
    tick: Duration,
    slots: Vec<u32>,
    conn_nodes: Vec<Node>,
    chan_nodes: Vec<Node>,
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
            conn_nodes: Vec::new(),
            chan_nodes: Vec::new(),
            current: 0,
            len: 0,
        }
    }

    /// Reserves nodes for connection keys below `n`, so scheduling never
    /// allocates.
    pub fn reserve(&mut self, n: usize) {
        let want = n * LANES;
        self.conn_nodes
            .reserve(want.saturating_sub(self.conn_nodes.len()));
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

    fn node(&self, id: u32) -> Node {
        let nodes = if id & CHANNEL_BIT != 0 {
            &self.chan_nodes
        } else {
            &self.conn_nodes
        };
        nodes
            .get((id & !CHANNEL_BIT) as usize)
            .copied()
            .unwrap_or(UNLINKED)
    }

    /// The node of `id`, grown into place when first used.
    fn node_mut(&mut self, id: u32) -> &mut Node {
        let nodes = if id & CHANNEL_BIT != 0 {
            &mut self.chan_nodes
        } else {
            &mut self.conn_nodes
        };
        let i = (id & !CHANNEL_BIT) as usize;
        if i >= nodes.len() {
            nodes.resize(i + 1, UNLINKED);
        }
        &mut nodes[i]
    }

    /// Sets (or moves) `timer` to fire at the first tick not earlier than
    /// `at`.
    pub fn schedule(&mut self, timer: Timer, at: Instant) {
        self.cancel(timer);
        let id = timer.id();
        let d = at.saturating_duration_since(self.start);
        let mut deadline = d.as_nanos().div_ceil(self.tick.as_nanos()) as u64;
        if deadline <= self.current {
            deadline = self.current + 1;
        }
        // Stored modulo 2^32 and never 0 (0 marks "unlinked"): a deadline
        // that truncates to 0 fires one tick late, never early.
        let stored = (deadline as u32).max(1);
        let slot = stored as usize % SLOTS;
        let head = self.slots[slot];
        *self.node_mut(id) = Node {
            prev: NIL,
            next: head,
            deadline: stored,
        };
        if head != NIL {
            self.node_mut(head).prev = id;
        }
        self.slots[slot] = id;
        self.len += 1;
    }

    pub fn cancel(&mut self, timer: Timer) {
        self.unlink(timer.id());
    }

    /// Cancels every timer of a connection.
    pub fn cancel_conn(&mut self, key: usize) {
        self.cancel(Timer::Conn(key, Lane::Io));
        self.cancel(Timer::Conn(key, Lane::Expiry));
    }

    fn unlink(&mut self, id: u32) {
        let node = self.node(id);
        if node.deadline == 0 {
            return;
        }
        if node.prev != NIL {
            self.node_mut(node.prev).next = node.next;
        } else {
            let slot = (node.deadline as usize) % SLOTS;
            self.slots[slot] = node.next;
        }
        if node.next != NIL {
            self.node_mut(node.next).prev = node.prev;
        }
        *self.node_mut(id) = UNLINKED;
        self.len -= 1;
    }

    pub fn is_scheduled(&self, timer: Timer) -> bool {
        self.node(timer.id()).deadline != 0
    }

    /// Whether the node's deadline (stored modulo 2^32) is at or before
    /// `tick`.
    fn due(node: Node, tick: u64) -> bool {
        (tick as u32).wrapping_sub(node.deadline) < u32::MAX / 2
    }

    /// Unlinks every timer due at `now` and appends it to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Timer>) {
        let now_tick = self.tick_of(now);
        if now_tick <= self.current {
            return;
        }
        // After a long sleep visit each slot once, not each missed tick.
        let first = self.current + 1;
        let last = now_tick.min(self.current + SLOTS as u64);
        for t in first..=last {
            let slot = (t % SLOTS as u64) as usize;
            let mut id = self.slots[slot];
            while id != NIL {
                let node = self.node(id);
                if Self::due(node, now_tick) {
                    self.unlink(id);
                    out.push(Timer::of_id(id));
                }
                id = node.next;
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
            let mut id = self.slots[(t % SLOTS as u64) as usize];
            while id != NIL {
                let node = self.node(id);
                if Self::due(node, t) {
                    return Some(self.start + self.tick * t as u32);
                }
                id = node.next;
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

    fn keys(out: &[Timer]) -> Vec<usize> {
        let mut k: Vec<usize> = out
            .iter()
            .map(|t| match t {
                Timer::Conn(key, Lane::Io) => *key,
                other => panic!("unexpected timer {other:?}"),
            })
            .collect();
        k.sort();
        k
    }

    #[test]
    fn fires_at_or_after_deadline_never_before() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 100 * MS);
        w.schedule(Timer::io(3), t0 + 250 * MS);
        w.schedule(Timer::io(5), t0 + 100 * MS);
        let mut out = Vec::new();
        w.expire(t0 + 99 * MS, &mut out);
        assert!(out.is_empty());
        w.expire(t0 + 100 * MS, &mut out);
        assert_eq!(keys(&out), vec![5]);
        out.clear();
        w.expire(t0 + 299 * MS, &mut out);
        assert!(out.is_empty(), "250 ms rounds up to the 300 ms tick");
        w.expire(t0 + 300 * MS, &mut out);
        assert_eq!(keys(&out), vec![3]);
        assert!(w.is_empty());
    }

    #[test]
    fn cancel_and_move_relink() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 100 * MS);
        for k in 0..10 {
            w.schedule(Timer::io(k), t0 + 500 * MS);
        }
        w.cancel(Timer::io(4));
        w.cancel(Timer::io(4));
        w.schedule(Timer::io(7), t0 + 2000 * MS);
        assert_eq!(w.len(), 9);
        let mut out = Vec::new();
        w.expire(t0 + 600 * MS, &mut out);
        assert_eq!(keys(&out), vec![0, 1, 2, 3, 5, 6, 8, 9]);
        assert!(w.is_scheduled(Timer::io(7)));
        assert_eq!(w.next_wake(), Some(t0 + 2000 * MS));
    }

    #[test]
    fn deadlines_beyond_one_turn_wait_their_turn() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 10 * MS);
        let far = t0 + 10 * MS * (SLOTS as u32 + 5);
        w.schedule(Timer::io(1), far);
        let mut out = Vec::new();
        w.expire(t0 + 10 * MS * 10, &mut out);
        assert!(out.is_empty());
        w.expire(far - MS, &mut out);
        assert!(out.is_empty());
        w.expire(far, &mut out);
        assert_eq!(keys(&out), vec![1]);
    }

    #[test]
    fn long_sleep_expires_everything_due() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 10 * MS);
        for k in 0..50 {
            w.schedule(Timer::io(k), t0 + MS * (k as u32 * 37));
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
        w.schedule(Timer::io(2), t0);
        assert_eq!(w.next_wake(), Some(t0 + 1100 * MS));
        w.expire(t0 + 1100 * MS, &mut out);
        assert_eq!(keys(&out), vec![2]);
    }

    #[test]
    fn a_connection_has_independent_lanes_and_channels_their_own_timers() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 100 * MS);
        w.reserve(4);
        let expiry = Timer::Conn(3, Lane::Expiry);
        w.schedule(Timer::io(3), t0 + 200 * MS);
        w.schedule(expiry, t0 + 500 * MS);
        // Channel 3 and connection 3 are different timers.
        w.schedule(Timer::Channel(3), t0 + 300 * MS);
        w.schedule(Timer::Channel(0), t0 + 300 * MS);
        assert_eq!(w.len(), 4);
        // Moving the I/O deadline leaves the expiry alone.
        w.schedule(Timer::io(3), t0 + 400 * MS);
        assert!(w.is_scheduled(expiry));
        let mut out = Vec::new();
        w.expire(t0 + 300 * MS, &mut out);
        out.sort_by_key(|t| format!("{t:?}"));
        assert_eq!(out, vec![Timer::Channel(0), Timer::Channel(3)]);
        out.clear();
        w.expire(t0 + 400 * MS, &mut out);
        assert_eq!(out, vec![Timer::io(3)]);
        out.clear();
        w.expire(t0 + 500 * MS, &mut out);
        assert_eq!(out, vec![expiry]);
        assert!(w.is_empty());
    }

    #[test]
    fn cancel_conn_cancels_both_lanes_and_nothing_else() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0, 100 * MS);
        for k in 0..4 {
            w.schedule(Timer::io(k), t0 + 100 * MS);
            w.schedule(Timer::Conn(k, Lane::Expiry), t0 + 100 * MS);
        }
        w.schedule(Timer::Channel(2), t0 + 100 * MS);
        w.cancel_conn(2);
        w.cancel_conn(2);
        assert_eq!(w.len(), 7);
        assert!(w.is_scheduled(Timer::Channel(2)));
        let mut out = Vec::new();
        w.expire(t0 + 100 * MS, &mut out);
        assert_eq!(out.len(), 7);
        assert!(!out.contains(&Timer::io(2)));
        assert!(!out.contains(&Timer::Conn(2, Lane::Expiry)));
    }

    #[test]
    fn timer_ids_round_trip() {
        for t in [
            Timer::io(0),
            Timer::Conn(0, Lane::Expiry),
            Timer::io(123_456),
            Timer::Conn(123_456, Lane::Expiry),
            Timer::Channel(0),
            Timer::Channel(99_999),
        ] {
            assert_eq!(Timer::of_id(t.id()), t);
        }
    }
}
