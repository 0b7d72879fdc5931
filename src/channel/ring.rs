//! The log: one channel's append-only ring of encoded SSE frames. A
//! subscriber is a cursor, an absolute byte offset into it; the log is the
//! only copy of what is sent, and also the channel's history.
//!
//! Ids are time-based: a new event's id is `max(previous id + 1, wall clock
//! in µs)`, so they increase across restarts and across a channel being
//! freed and created again. Every retained frame keeps its id and its
//! publish time, so a resume is a search, and history can expire by age.
//!
//! The ring grows by doubling up to its capacity and gives memory back when
//! it shrinks (see [`Log::shrink`]); how much it holds is [`Log::memory`],
//! the figure the hub's history budget counts.

use std::collections::VecDeque;

use crate::sse;

/// Where a `Last-Event-ID` points in a log.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// Send from this absolute offset: the first byte after that event.
    At(u64),
    /// The log no longer holds (or never held) that id.
    Lost,
}

/// Refusal of a publish.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishError {
    /// The encoded frame is larger than the whole history.
    TooLarge { frame: usize, history: usize },
    /// The frame does not fit in the hub's history memory budget even with
    /// every other event evicted (a budget close to `--history-bytes`).
    OverBudget { frame: usize, budget: usize },
}

/// One retained frame: where it ends, its id, when it was published.
#[derive(Clone, Copy, Debug)]
struct Frame {
    end: u64,
    id: u64,
    /// Publish time, milliseconds on the hub's monotonic clock.
    at: u64,
}

/// Bytes of memory one retained frame's index entry costs.
pub const FRAME_INDEX_BYTES: usize = std::mem::size_of::<Frame>();

/// Smallest ring allocated.
const MIN_RING: usize = 256;
/// Index entries kept allocated however few frames are held.
pub(super) const MIN_INDEX: usize = 4;

/// An append-only byte ring of complete SSE frames.
///
/// Invariants: `tail <= head`, `head - tail <= buf.len() <= cap`; `frames`
/// holds every retained frame oldest first, with strictly increasing `end`
/// (the last equal to `head`) and strictly increasing `id` (the last equal
/// to `last_id`); `tail` is the start of the oldest retained frame (or
/// `head` when none is retained); `before_id` is the id just before the
/// oldest retained frame: the newest one dropped, or the log's floor. A
/// cursor `c` is readable when `tail <= c <= head`; byte `o` of the log
/// lives at `buf[o % buf.len()]`.
pub struct Log {
    buf: Vec<u8>,
    cap: usize,
    head: u64,
    tail: u64,
    frames: VecDeque<Frame>,
    before_id: u64,
    last_id: u64,
    /// Events ever appended, and frames dropped from the front.
    published: u64,
    dropped: u64,
}

impl Log {
    /// An empty log of at most `cap` bytes whose ids start at `first` (at
    /// least 1). The id before it is the log's floor: every id it issues is
    /// above it, and a client that last saw the floor resumes with nothing
    /// missed.
    pub fn new(cap: usize, first: u64) -> Log {
        let floor = first.max(1) - 1;
        Log {
            buf: Vec::new(),
            cap,
            head: 0,
            tail: 0,
            frames: VecDeque::new(),
            before_id: floor,
            last_id: floor,
            published: 0,
            dropped: 0,
        }
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Most bytes of frames the log holds (`--history-bytes`).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes of frames held now.
    pub fn held(&self) -> usize {
        (self.head - self.tail) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames held now.
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// Id of the newest event, or the floor when none was ever appended.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Oldest id still held (`last_id() + 1` when the log is empty).
    pub fn first_available_id(&self) -> u64 {
        self.frames
            .front()
            .map_or(self.last_id.saturating_add(1), |f| f.id)
    }

    /// Events ever appended.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Publish time of the oldest retained frame.
    pub fn oldest_at(&self) -> Option<u64> {
        self.frames.front().map(|f| f.at)
    }

    /// Where the oldest retained frame ends (`None` when empty).
    pub fn oldest_end(&self) -> Option<u64> {
        self.frames.front().map(|f| f.end)
    }

    /// Bytes of memory this log holds: the ring and the frame index, as
    /// allocated.
    pub fn memory(&self) -> usize {
        self.buf.capacity() + self.frames.capacity() * FRAME_INDEX_BYTES
    }

    /// The id the next event appended at wall-clock time `now_us` gets.
    pub fn next_id(&self, now_us: u64) -> u64 {
        self.last_id.saturating_add(1).max(now_us)
    }

    /// Whether appending `len` more bytes would pass the log's capacity, so
    /// that its oldest frame must be dropped first.
    pub fn must_drop_for(&self, len: usize) -> bool {
        !self.frames.is_empty() && self.held() + len > self.cap
    }

    /// Memory an append of `len` bytes would allocate, after the frames
    /// that `must_drop_for` names are gone. `tight`: the ring grows only to
    /// what it needs instead of doubling.
    pub fn growth_for(&self, len: usize, tight: bool) -> usize {
        let ring = self.ring_target(len, tight).saturating_sub(self.buf.len());
        let index = if self.frames.len() == self.frames.capacity() {
            self.index_target() - self.frames.capacity()
        } else {
            0
        };
        ring + index * FRAME_INDEX_BYTES
    }

    fn ring_target(&self, len: usize, tight: bool) -> usize {
        let need = self.held() + len;
        if need <= self.buf.len() {
            return self.buf.len();
        }
        if tight {
            return need;
        }
        need.max(self.buf.len() * 2).max(MIN_RING).min(self.cap)
    }

    fn index_target(&self) -> usize {
        (self.frames.capacity() * 2).max(MIN_INDEX)
    }

    /// Appends one event with the next id in sequence, published at the
    /// time of the newest frame (tests and tools; the hub uses
    /// [`Log::append_at`]).
    pub fn append(&mut self, event: Option<&str>, data: &str) -> Result<u64, PublishError> {
        let at = self.frames.back().map_or(0, |f| f.at);
        self.append_at(event, data, 0, at, false, &mut Vec::new())
    }

    /// Encodes and appends one event with id `next_id(now_us)`, published at
    /// `at` (monotonic ms). Frames are dropped from the front while the log
    /// would pass its capacity; the caller has made sure that is allowed.
    /// `tight`: grow the ring only as far as needed. `scratch` is a buffer
    /// to encode into (shared by all logs).
    pub fn append_at(
        &mut self,
        event: Option<&str>,
        data: &str,
        now_us: u64,
        at: u64,
        tight: bool,
        scratch: &mut Vec<u8>,
    ) -> Result<u64, PublishError> {
        let id = self.next_id(now_us);
        let len = sse::encoded_len(id, event, data);
        if len > self.cap {
            return Err(PublishError::TooLarge {
                frame: len,
                history: self.cap,
            });
        }
        while self.must_drop_for(len) {
            self.drop_oldest();
        }
        let target = self.ring_target(len, tight);
        if target > self.buf.len() {
            self.relocate(target);
        }
        if self.frames.len() == self.frames.capacity() {
            let more = self.index_target() - self.frames.len();
            self.frames.reserve_exact(more);
        }
        scratch.clear();
        sse::encode_event(scratch, id, event, data);
        debug_assert_eq!(scratch.len(), len);
        self.write_at_head(scratch);
        self.head += len as u64;
        self.last_id = id;
        self.published += 1;
        self.frames.push_back(Frame {
            end: self.head,
            id,
            at: at.max(self.frames.back().map_or(0, |f| f.at)),
        });
        Ok(id)
    }

    /// Drops the oldest retained frame; returns false when there is none.
    pub fn drop_oldest(&mut self) -> bool {
        match self.frames.pop_front() {
            Some(f) => {
                self.tail = f.end;
                self.before_id = f.id;
                self.dropped += 1;
                true
            }
            None => false,
        }
    }

    /// Gives memory back after frames were dropped. `fit`: to exactly what
    /// is held (the budget asked for it); otherwise only when at most a
    /// quarter of the ring is used, to twice what is held, so that a log
    /// that shrinks and grows again does not copy on every event.
    pub fn shrink(&mut self, fit: bool) {
        let held = self.held();
        if held == 0 {
            self.buf = Vec::new();
        } else if fit && self.buf.len() > held {
            self.relocate(held);
        } else if self.buf.len() > 4 * MIN_RING && held * 4 <= self.buf.len() {
            self.relocate((held * 2).max(MIN_RING));
        }
        let n = self.frames.len();
        let cap = self.frames.capacity();
        if n == 0 {
            self.frames = VecDeque::new();
        } else if fit && cap > n.max(MIN_INDEX) {
            self.frames.shrink_to(n.max(MIN_INDEX));
        } else if cap > 4 * MIN_INDEX && n * 4 <= cap {
            self.frames.shrink_to(n * 2);
        }
    }

    /// Moves the retained bytes into a new ring of `size` bytes.
    fn relocate(&mut self, size: usize) {
        debug_assert!(size >= self.held());
        let mut next = vec![0u8; size];
        let (a, b) = self.slices_to(self.tail, self.head);
        if size > 0 {
            let start = (self.tail % size as u64) as usize;
            let mut pos = start;
            for part in [a, b] {
                let first = part.len().min(size - pos);
                next[pos..pos + first].copy_from_slice(&part[..first]);
                next[..part.len() - first].copy_from_slice(&part[first..]);
                pos = (pos + part.len()) % size;
            }
        }
        self.buf = next;
    }

    fn write_at_head(&mut self, frame: &[u8]) {
        let size = self.buf.len();
        debug_assert!(self.held() + frame.len() <= size);
        let start = (self.head % size as u64) as usize;
        let first = frame.len().min(size - start);
        self.buf[start..start + first].copy_from_slice(&frame[..first]);
        self.buf[..frame.len() - first].copy_from_slice(&frame[first..]);
    }

    /// The bytes from `cursor` to the head, as at most two slices.
    /// `cursor` must satisfy `tail <= cursor <= head`.
    pub fn slices(&self, cursor: u64) -> (&[u8], &[u8]) {
        self.slices_to(cursor, self.head)
    }

    /// The bytes from `cursor` to `end`, as at most two slices.
    /// Requires `tail <= cursor <= end <= head`.
    pub fn slices_to(&self, cursor: u64, end: u64) -> (&[u8], &[u8]) {
        debug_assert!(self.tail <= cursor && cursor <= end && end <= self.head);
        let n = (end - cursor) as usize;
        if n == 0 {
            return (&[], &[]);
        }
        let size = self.buf.len();
        let s = (cursor % size as u64) as usize;
        if s + n <= size {
            (&self.buf[s..s + n], &[])
        } else {
            (&self.buf[s..], &self.buf[..s + n - size])
        }
    }

    /// Where a client that last saw event `id` resumes: just after that
    /// event when it is held (or is the one just before the oldest held),
    /// else `Lost`. Ids are not consecutive, so this is a search.
    pub fn resume_after(&self, id: u64) -> Resume {
        if id == self.before_id {
            return Resume::At(self.tail);
        }
        if id < self.before_id || id > self.last_id {
            return Resume::Lost;
        }
        match self.frames.binary_search_by_key(&id, |f| f.id) {
            Ok(i) => Resume::At(self.frames[i].end),
            Err(_) => Resume::Lost,
        }
    }

    /// Events whose last byte lies before `pos` (absolute count, including
    /// dropped ones). Deliveries to a cursor moving from a to b are
    /// `complete_before(b) - complete_before(a)`.
    pub fn complete_before(&self, pos: u64) -> u64 {
        self.dropped + self.frames.partition_point(|f| f.end <= pos) as u64
    }

    /// Drops every frame published at or before `cutoff` that ends at or
    /// before `sent` (bytes not yet fanned out are kept); returns how many.
    pub fn drop_older_than(&mut self, cutoff: u64, sent: u64) -> u64 {
        let mut n = 0;
        while let Some(f) = self.frames.front() {
            if f.at > cutoff || f.end > sent {
                break;
            }
            self.drop_oldest();
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{Item, Parser};

    fn read_all(log: &Log, from: u64) -> Vec<u8> {
        let (a, b) = log.slices(from);
        [a, b].concat()
    }

    fn datas(bytes: &[u8]) -> Vec<String> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.feed(bytes, &mut out);
        out.into_iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some(e.data),
                _ => None,
            })
            .collect()
    }

    fn push(log: &mut Log, data: &str, now_us: u64) -> u64 {
        log.append_at(None, data, now_us, 0, false, &mut Vec::new())
            .unwrap()
    }

    #[test]
    fn ids_follow_the_clock_and_never_go_back() {
        let mut log = Log::new(1024, 1000);
        assert_eq!(log.last_id(), 999);
        // The clock is behind the floor: ids count up from it.
        assert_eq!(push(&mut log, "a", 5), 1000);
        assert_eq!(push(&mut log, "b", 5), 1001);
        // The clock moves ahead: ids jump to it.
        assert_eq!(push(&mut log, "c", 5_000), 5_000);
        // The clock goes back: ids still increase.
        assert_eq!(push(&mut log, "d", 10), 5_001);
        assert_eq!(log.published(), 4);
        assert_eq!(datas(&read_all(&log, 0)), ["a", "b", "c", "d"]);
    }

    #[test]
    fn ring_wraps_and_evicts_whole_frames() {
        let mut log = Log::new(100, 0);
        for i in 0..50 {
            push(&mut log, &format!("event-{i:03}"), 0);
            assert!(log.head() - log.tail() <= 100);
            // Whatever is retained parses as whole events, newest last.
            let got = datas(&read_all(&log, log.tail()));
            assert_eq!(got.last().unwrap(), &format!("event-{i:03}"));
            assert_eq!(got.len(), log.frames());
        }
    }

    #[test]
    fn resume_is_a_search_over_time_based_ids() {
        let mut log = Log::new(120, 11);
        // Sparse ids, as a clock gives them.
        let ids: Vec<u64> = (0..5)
            .map(|i| push(&mut log, &i.to_string(), 1_000 * (i + 1)))
            .collect();
        assert_eq!(ids, [1_000, 2_000, 3_000, 4_000, 5_000]);
        match log.resume_after(ids[1]) {
            Resume::At(pos) => assert_eq!(datas(&read_all(&log, pos)), ["2", "3", "4"]),
            Resume::Lost => panic!("id should be held"),
        }
        // The floor (nothing seen yet): everything held.
        assert_eq!(log.resume_after(10), Resume::At(log.tail()));
        assert_eq!(log.resume_after(ids[4]), Resume::At(log.head()));
        // Never issued: between two ids, above the newest, below the floor.
        assert_eq!(log.resume_after(1_500), Resume::Lost);
        assert_eq!(log.resume_after(5_001), Resume::Lost);
        assert_eq!(log.resume_after(9), Resume::Lost);
        for i in 5..20 {
            push(&mut log, &i.to_string(), 0);
        }
        assert_eq!(log.resume_after(ids[0]), Resume::Lost);
        assert_eq!(log.resume_after(10), Resume::Lost);
        // The newest dropped id resumes at the tail: nothing was missed.
        let first = log.first_available_id();
        let before = match log.resume_after(first) {
            Resume::At(p) => p,
            Resume::Lost => panic!("first held id lost"),
        };
        assert!(before > log.tail());
        assert!(matches!(log.resume_after(first - 1), Resume::At(t) if t == log.tail()));
    }

    #[test]
    fn the_ring_never_holds_more_than_its_size() {
        let mut log = Log::new(10_000, 0);
        for i in 0..2000 {
            push(&mut log, &format!("{i:05}"), 0);
            assert!(log.buf.capacity() <= 10_000, "{}", log.buf.capacity());
        }
    }

    #[test]
    fn growth_for_predicts_the_memory_an_append_takes() {
        let mut log = Log::new(1 << 16, 0);
        let mut scratch = Vec::new();
        for i in 0..3000u64 {
            let data = "x".repeat((i % 97) as usize + 1);
            let id = log.next_id(i);
            let len = sse::encoded_len(id, None, &data);
            let tight = i % 3 == 0;
            let mut probe = Log::new(0, 0);
            std::mem::swap(&mut probe, &mut log);
            // Drop what the capacity forces, then predict.
            while probe.must_drop_for(len) {
                probe.drop_oldest();
            }
            let before = probe.memory();
            let predicted = probe.growth_for(len, tight);
            probe
                .append_at(None, &data, i, i, tight, &mut scratch)
                .unwrap();
            assert_eq!(probe.memory(), before + predicted, "append {i}");
            std::mem::swap(&mut probe, &mut log);
        }
    }

    #[test]
    fn a_ring_that_empties_gives_its_memory_back() {
        let mut log = Log::new(1 << 20, 0);
        let big = "b".repeat(10_000);
        for _ in 0..100 {
            push(&mut log, &big, 0);
        }
        assert!(log.memory() >= 1 << 20, "memory {}", log.memory());
        // Keep two small events: 1 MiB must not stay allocated.
        for _ in 0..2 {
            push(&mut log, "small", 0);
        }
        while log.frames() > 2 {
            log.drop_oldest();
        }
        log.shrink(false);
        assert!(log.memory() < 4096, "memory {}", log.memory());
        assert_eq!(datas(&read_all(&log, log.tail())), ["small", "small"]);
        // Shrinking to fit keeps the bytes and the resume points.
        let last = log.last_id();
        log.shrink(true);
        assert_eq!(log.buf.len(), log.held());
        assert_eq!(log.resume_after(last), Resume::At(log.head()));
        assert_eq!(datas(&read_all(&log, log.tail())), ["small", "small"]);
        // And the log keeps working after shrinking (wrapping included).
        for i in 0..50 {
            push(&mut log, &format!("after-{i}"), 0);
            let got = datas(&read_all(&log, log.tail()));
            assert_eq!(got.last().unwrap(), &format!("after-{i}"));
        }
        while log.drop_oldest() {}
        log.shrink(false);
        assert_eq!(log.memory(), 0);
    }

    #[test]
    fn relocation_keeps_wrapped_bytes_in_order() {
        let mut log = Log::new(300, 0);
        for i in 0..40 {
            push(&mut log, &format!("w{i:02}"), 0);
            if i % 7 == 3 {
                log.drop_oldest();
                log.shrink(true);
            }
            let got = datas(&read_all(&log, log.tail()));
            assert_eq!(got.len(), log.frames());
            assert_eq!(got.last().unwrap(), &format!("w{i:02}"));
        }
    }

    #[test]
    fn old_frames_expire_but_unsent_ones_stay() {
        let mut log = Log::new(1024, 0);
        let mut s = Vec::new();
        for at in [10, 20, 30, 40] {
            log.append_at(None, "e", 0, at, false, &mut s).unwrap();
        }
        let sent = log.head() - 15; // the last frame not fanned out yet
        assert_eq!(log.drop_older_than(25, sent), 2);
        assert_eq!(log.oldest_at(), Some(30));
        assert_eq!(log.drop_older_than(100, sent), 1);
        assert_eq!(log.frames(), 1);
        assert_eq!(log.drop_older_than(100, log.head()), 1);
        assert!(log.is_empty());
        assert_eq!(log.resume_after(log.last_id()), Resume::At(log.head()));
    }

    #[test]
    fn too_large_events_are_refused_before_touching_the_log() {
        let mut log = Log::new(64, 0);
        let big = "x".repeat(100);
        assert!(matches!(
            log.append_at(None, &big, 1, 0, false, &mut Vec::new()),
            Err(PublishError::TooLarge { .. })
        ));
        assert_eq!(log.head(), 0);
        assert_eq!(log.last_id(), 0);
    }

    #[test]
    fn append_without_a_clock_counts_up_from_the_first_id() {
        let mut log = Log::new(1024, 100);
        assert_eq!(log.append(None, "a"), Ok(100));
        assert_eq!(log.append(Some("e"), "b"), Ok(101));
        assert_eq!(log.resume_after(99), Resume::At(0));
    }

    #[test]
    fn complete_before_counts_whole_frames() {
        let mut log = Log::new(1024, 0);
        push(&mut log, "a", 1); // 15 bytes: "id: 1\ndata: a\n\n"
        push(&mut log, "b", 1);
        assert_eq!(log.complete_before(0), 0);
        assert_eq!(log.complete_before(14), 0);
        assert_eq!(log.complete_before(15), 1);
        assert_eq!(log.complete_before(log.head()), 2);
        log.drop_oldest();
        assert_eq!(log.complete_before(log.head()), 2);
    }
}
