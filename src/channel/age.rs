//! The hub-wide age order of history: a binary min-heap of channels keyed
//! by the publish time of each one's oldest retained frame, with each
//! channel's place in the heap kept beside it, so a channel's key moves or
//! goes in O(log n). The top is where the oldest event of the whole hub is:
//! what the history budget evicts first, and the next to expire by age.

const NIL: u32 = u32::MAX;

#[derive(Default)]
pub struct Ages {
    /// (time of the channel's oldest frame, channel).
    heap: Vec<(u64, u32)>,
    /// Channel → its index in `heap`, or NIL.
    pos: Vec<u32>,
}

impl Ages {
    pub fn new() -> Ages {
        Ages::default()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The channel holding the hub's oldest frame, and that frame's time.
    pub fn oldest(&self) -> Option<(u64, u32)> {
        self.heap.first().copied()
    }

    /// The time of the oldest frame outside the top channel.
    pub fn runner_up(&self) -> Option<u64> {
        match (self.heap.get(1), self.heap.get(2)) {
            (Some(a), Some(b)) => Some(a.0.min(b.0)),
            (Some(a), None) => Some(a.0),
            _ => None,
        }
    }

    /// Sets channel `ch`'s key (inserting it if absent).
    pub fn set(&mut self, ch: u32, at: u64) {
        let c = ch as usize;
        if c >= self.pos.len() {
            self.pos.resize(c + 1, NIL);
        }
        let i = self.pos[c];
        if i == NIL {
            self.heap.push((at, ch));
            let i = self.heap.len() - 1;
            self.pos[c] = i as u32;
            self.up(i);
        } else {
            let i = i as usize;
            let old = self.heap[i].0;
            self.heap[i].0 = at;
            if at < old {
                self.up(i);
            } else {
                self.down(i);
            }
        }
    }

    pub fn remove(&mut self, ch: u32) {
        let Some(&i) = self.pos.get(ch as usize) else {
            return;
        };
        if i == NIL {
            return;
        }
        let i = i as usize;
        let last = self.heap.len() - 1;
        self.swap(i, last);
        self.heap.pop();
        self.pos[ch as usize] = NIL;
        if i < self.heap.len() {
            self.down(i);
            self.up(i);
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1 as usize] = a as u32;
        self.pos[self.heap[b].1 as usize] = b as u32;
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].0 <= self.heap[i].0 {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.heap.len() && self.heap[l].0 < self.heap[m].0 {
                m = l;
            }
            if r < self.heap.len() && self.heap[r].0 < self.heap[m].0 {
                m = r;
            }
            if m == i {
                return;
            }
            self.swap(i, m);
            i = m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_is_always_on_top() {
        let mut a = Ages::new();
        // A deterministic shuffle of keys, moved and removed at random.
        let mut model: Vec<Option<u64>> = vec![None; 64];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ch = (x % 64) as u32;
            if x % 5 == 0 {
                a.remove(ch);
                model[ch as usize] = None;
            } else {
                let at = (x >> 20) % 1000;
                a.set(ch, at);
                model[ch as usize] = Some(at);
            }
            let want = model.iter().flatten().min().copied();
            assert_eq!(a.oldest().map(|o| o.0), want);
            assert_eq!(a.heap.len(), model.iter().flatten().count());
            if let Some((_, top)) = a.oldest() {
                let rest = model
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i as u32 != top)
                    .filter_map(|(_, v)| *v)
                    .min();
                assert_eq!(a.runner_up(), rest);
            }
        }
    }
}
