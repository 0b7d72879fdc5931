//! The channels without subscribers, least recently used first: an
//! intrusive doubly linked list over channel indices, O(1) to append, move,
//! remove and pop, with no allocation once a channel's node exists.
//!
//! Recency is the channel's last publish or its last subscriber leaving;
//! at the channel cap the front is the one evicted.

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Node {
    prev: u32,
    next: u32,
    linked: bool,
}

const UNLINKED: Node = Node {
    prev: NIL,
    next: NIL,
    linked: false,
};

pub struct Lru {
    nodes: Vec<Node>,
    head: u32,
    tail: u32,
    len: usize,
}

impl Lru {
    pub fn new() -> Lru {
        Lru {
            nodes: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The least recently used.
    pub fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Makes `i` the most recently used (appending it if absent).
    pub fn touch(&mut self, i: u32) {
        self.remove(i);
        let idx = i as usize;
        if idx >= self.nodes.len() {
            self.nodes.resize(idx + 1, UNLINKED);
        }
        self.nodes[idx] = Node {
            prev: self.tail,
            next: NIL,
            linked: true,
        };
        if self.tail != NIL {
            self.nodes[self.tail as usize].next = i;
        } else {
            self.head = i;
        }
        self.tail = i;
        self.len += 1;
    }

    pub fn remove(&mut self, i: u32) {
        let Some(n) = self.nodes.get(i as usize).copied() else {
            return;
        };
        if !n.linked {
            return;
        }
        if n.prev != NIL {
            self.nodes[n.prev as usize].next = n.next;
        } else {
            self.head = n.next;
        }
        if n.next != NIL {
            self.nodes[n.next as usize].prev = n.prev;
        } else {
            self.tail = n.prev;
        }
        self.nodes[i as usize] = UNLINKED;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(l: &Lru) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = l.head;
        while i != NIL {
            out.push(i);
            i = l.nodes[i as usize].next;
        }
        out
    }

    #[test]
    fn least_recently_touched_comes_first() {
        let mut l = Lru::new();
        for i in [3, 1, 4, 5] {
            l.touch(i);
        }
        assert_eq!(order(&l), [3, 1, 4, 5]);
        l.touch(3);
        assert_eq!(order(&l), [1, 4, 5, 3]);
        l.remove(4);
        l.remove(4);
        l.remove(99);
        assert_eq!(order(&l), [1, 5, 3]);
        assert_eq!((l.front(), l.len()), (Some(1), 3));
        l.remove(1);
        l.remove(3);
        assert_eq!(order(&l), [5]);
        l.remove(5);
        assert!(l.len() == 0 && l.front().is_none());
        l.touch(2);
        assert_eq!(order(&l), [2]);
    }
}
