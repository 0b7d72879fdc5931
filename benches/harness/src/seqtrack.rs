//! Per-subscriber accounting of sequence numbers: lost, duplicated and
//! out-of-order deliveries, without a bitmap per subscriber.

#[derive(Default)]
pub struct SeqTrack {
    /// One past the highest sequence number seen.
    next: u64,
    /// Missing half-open ranges below `next`, ascending.
    gaps: Vec<(u64, u64)>,
    pub unique: u64,
    pub duplicated: u64,
    /// Arrived after an event whose publish started only once this one's
    /// publish had been answered: the server broke publish order.
    pub out_of_order: u64,
    /// Arrived late relative to an event published concurrently with it
    /// (several publishers): no order was promised, counted apart.
    pub reordered: u64,
    /// Highest "answered before send" mark seen on this stream.
    answered_mark: u64,
}

impl SeqTrack {
    /// One delivery of `seq`, whose publish began after every event below
    /// `answered` had been answered.
    pub fn on(&mut self, seq: u64, answered: u64) {
        let mark = self.answered_mark;
        self.answered_mark = mark.max(answered);
        if seq == self.next {
            self.next += 1;
            self.unique += 1;
        } else if seq > self.next {
            self.gaps.push((self.next, seq));
            self.next = seq + 1;
            self.unique += 1;
        } else {
            // Below the high-water mark: a late one fills a gap, else a duplicate.
            let idx = self.gaps.partition_point(|g| g.1 <= seq);
            match self.gaps.get(idx).copied() {
                Some((lo, hi)) if lo <= seq => {
                    if seq < mark {
                        self.out_of_order += 1;
                    } else {
                        self.reordered += 1;
                    }
                    self.unique += 1;
                    if hi - lo == 1 {
                        self.gaps.remove(idx);
                    } else if seq == lo {
                        self.gaps[idx].0 += 1;
                    } else if seq + 1 == hi {
                        self.gaps[idx].1 -= 1;
                    } else {
                        self.gaps[idx].1 = seq;
                        self.gaps.insert(idx + 1, (seq + 1, hi));
                    }
                }
                _ => self.duplicated += 1,
            }
        }
    }

    /// Events of `0..sent` never received, not counting `failed` (sorted):
    /// publishes the server refused.
    pub fn lost(&self, sent: u64, failed: &[u64]) -> u64 {
        let missing = |lo: u64, hi: u64| {
            if hi <= lo {
                return 0;
            }
            let a = failed.partition_point(|&f| f < lo);
            let b = failed.partition_point(|&f| f < hi);
            (hi - lo) - (b - a) as u64
        };
        let mut n: u64 = self
            .gaps
            .iter()
            .map(|&(lo, hi)| missing(lo, hi.min(sent)))
            .sum();
        n += missing(self.next, sent);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let mut t = SeqTrack::default();
        // (seq, answered-before-send): 2 is late but was concurrent with 4;
        // 3 arrives after 6, which was sent once 0..6 were all answered.
        for (s, a) in [
            (0, 0),
            (1, 1),
            (4, 2),
            (2, 2),
            (2, 2),
            (6, 6),
            (3, 3),
            (9, 9),
        ] {
            t.on(s, a);
        }
        assert_eq!(t.unique, 7);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.reordered, 1);
        assert_eq!(t.out_of_order, 1);
        // missing: 5, 7, 8, 10, 11 of 0..12; 8 failed to publish.
        assert_eq!(t.lost(12, &[8]), 4);
        assert_eq!(t.lost(12, &[]), 5);
    }
}
