//! The log: one channel's append-only ring of encoded SSE frames. A
//! subscriber is a cursor, an absolute byte offset into it; the log is the
//! only copy of what is sent, and also the channel's history.

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
}

/// An append-only byte ring of complete SSE frames.
///
/// Invariants: `tail <= head`, `head - tail <= cap`; `ends` holds the end
/// offset of every retained frame, strictly increasing, the last equal to
/// `head`; `tail` is the start of the oldest retained frame (or `head` when
/// none is retained). A cursor `c` is readable when `tail <= c <= head`.
pub struct Log {
    buf: Vec<u8>,
    cap: usize,
    head: u64,
    tail: u64,
    ends: VecDeque<u64>,
    /// Id of the oldest retained frame (= `next_id` when none is retained).
    first_id: u64,
    next_id: u64,
    /// First id this log ever issued.
    base_id: u64,
    scratch: Vec<u8>,
}

impl Log {
    /// `seed` is the first id: the wall clock in microseconds, so ids keep
    /// increasing across restarts.
    pub fn new(cap: usize, seed: u64) -> Log {
        let seed = seed.max(1);
        Log {
            buf: Vec::new(),
            cap,
            head: 0,
            tail: 0,
            ends: VecDeque::new(),
            first_id: seed,
            next_id: seed,
            base_id: seed,
            scratch: Vec::new(),
        }
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Id of the newest event, or the id just before the first one.
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// Oldest id still held (`last_id() + 1` when the log is empty).
    pub fn first_available_id(&self) -> u64 {
        self.first_id
    }

    /// Events ever appended.
    pub fn published(&self) -> u64 {
        self.next_id - self.base_id
    }

    /// Bytes held in memory for this log.
    pub fn memory(&self) -> usize {
        self.buf.capacity() + self.ends.capacity() * 8 + self.scratch.capacity()
    }

    /// Encodes and appends one event, evicting the oldest frames as needed.
    pub fn append(&mut self, event: Option<&str>, data: &str) -> Result<u64, PublishError> {
        let id = self.next_id;
        let len = sse::encoded_len(id, event, data);
        if len > self.cap {
            return Err(PublishError::TooLarge {
                frame: len,
                history: self.cap,
            });
        }
        while self.head + len as u64 - self.tail > self.cap as u64 {
            match self.ends.pop_front() {
                Some(end) => {
                    self.tail = end;
                    self.first_id += 1;
                }
                None => break,
            }
        }
        let mut frame = std::mem::take(&mut self.scratch);
        frame.clear();
        sse::encode_event(&mut frame, id, event, data);
        debug_assert_eq!(frame.len(), len);
        self.write_at_head(&frame);
        self.scratch = frame;
        self.next_id += 1;
        self.head += len as u64;
        self.ends.push_back(self.head);
        Ok(id)
    }

    fn write_at_head(&mut self, frame: &[u8]) {
        // Linear phase: the log has never wrapped, positions are offsets.
        if self.buf.len() < self.cap && self.head as usize + frame.len() <= self.cap {
            debug_assert_eq!(self.buf.len() as u64, self.head);
            if self.buf.capacity() - self.buf.len() < frame.len() {
                // Grow by doubling, but never past the history size.
                let want = (self.buf.capacity() * 2)
                    .max(self.buf.len() + frame.len())
                    .max(256);
                self.buf.reserve_exact(want.min(self.cap) - self.buf.len());
            }
            self.buf.extend_from_slice(frame);
            return;
        }
        if self.buf.len() < self.cap {
            self.buf.reserve_exact(self.cap - self.buf.len());
            self.buf.resize(self.cap, 0);
        }
        let start = (self.head % self.cap as u64) as usize;
        let first = frame.len().min(self.cap - start);
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
        let s = (cursor % self.cap as u64) as usize;
        if s + n <= self.buf.len() {
            (&self.buf[s..s + n], &[])
        } else {
            (&self.buf[s..], &self.buf[..s + n - self.buf.len()])
        }
    }

    /// Where a client that last saw event `id` resumes.
    pub fn resume_after(&self, id: u64) -> Resume {
        if id > self.last_id() || id < self.first_id - 1 {
            return Resume::Lost;
        }
        if id == self.first_id - 1 {
            Resume::At(self.tail)
        } else {
            Resume::At(self.ends[(id - self.first_id) as usize])
        }
    }

    /// Events whose last byte lies before `pos` (absolute count, including
    /// evicted ones). Deliveries to a cursor moving from a to b are
    /// `complete_before(b) - complete_before(a)`.
    pub fn complete_before(&self, pos: u64) -> u64 {
        let evicted = self.first_id - self.base_id;
        evicted + self.ends.partition_point(|&e| e <= pos) as u64
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

    #[test]
    fn ids_increase_from_the_seed() {
        let mut log = Log::new(1024, 1000);
        assert_eq!(log.last_id(), 999);
        assert_eq!(log.append(None, "a").unwrap(), 1000);
        assert_eq!(log.append(Some("e"), "b").unwrap(), 1001);
        assert_eq!(log.published(), 2);
        assert_eq!(datas(&read_all(&log, 0)), ["a", "b"]);
    }

    #[test]
    fn ring_wraps_and_evicts_whole_frames() {
        let mut log = Log::new(100, 1);
        for i in 0..50 {
            log.append(None, &format!("event-{i:03}")).unwrap();
            assert!(log.head() - log.tail() <= 100);
            // Whatever is retained parses as whole events, newest last.
            let got = datas(&read_all(&log, log.tail()));
            assert_eq!(got.last().unwrap(), &format!("event-{i:03}"));
            assert_eq!(
                got.len() as u64,
                log.last_id() - log.first_available_id() + 1
            );
        }
    }

    #[test]
    fn resume_after_replays_exactly_what_was_missed() {
        let mut log = Log::new(120, 10);
        for i in 0..5 {
            log.append(None, &i.to_string()).unwrap();
        }
        // 5 frames of 16 bytes; ids 10..=14 retained until eviction begins.
        let first = log.first_available_id();
        match log.resume_after(first + 1) {
            Resume::At(pos) => {
                let want: Vec<String> = ((first + 2 - 10)..5).map(|i| i.to_string()).collect();
                assert_eq!(datas(&read_all(&log, pos)), want);
            }
            Resume::Lost => panic!("id should be held"),
        }
        assert_eq!(log.resume_after(log.last_id()), Resume::At(log.head()));
        assert_eq!(log.resume_after(log.last_id() + 1), Resume::Lost);
        for i in 5..20 {
            log.append(None, &i.to_string()).unwrap();
        }
        assert_eq!(log.resume_after(10), Resume::Lost);
        assert_eq!(
            log.resume_after(log.first_available_id() - 1),
            Resume::At(log.tail())
        );
    }

    #[test]
    fn the_ring_never_holds_more_than_its_size() {
        let mut log = Log::new(10_000, 1);
        for i in 0..2000 {
            log.append(None, &format!("{i:05}")).unwrap();
            assert!(
                log.buf.capacity() <= 10_000,
                "capacity {}",
                log.buf.capacity()
            );
        }
    }

    #[test]
    fn too_large_events_are_refused_before_touching_the_log() {
        let mut log = Log::new(64, 1);
        let big = "x".repeat(100);
        assert!(matches!(
            log.append(None, &big),
            Err(PublishError::TooLarge { .. })
        ));
        assert_eq!(log.head(), 0);
        assert_eq!(log.last_id(), 0);
    }

    #[test]
    fn complete_before_counts_whole_frames() {
        let mut log = Log::new(1024, 1);
        log.append(None, "a").unwrap(); // 15 bytes: "id: 1\ndata: a\n\n"
        log.append(None, "b").unwrap();
        assert_eq!(log.complete_before(0), 0);
        assert_eq!(log.complete_before(14), 0);
        assert_eq!(log.complete_before(15), 1);
        assert_eq!(log.complete_before(log.head()), 2);
    }
}
