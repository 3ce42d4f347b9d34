//! Every workload key's timeline of writes, held in one array: key after key, each in a stretch
//! sized for every write that names it, so no line ever moves or grows. A long history leaves
//! the heap fragmented, and a separate vector per key (and per key again for its revisions)
//! cost the allocator a search each. Only storage: what a line means is the model's.

use super::model::Event;
use std::ops::{Index, IndexMut, Range};

pub(super) struct Lines {
    /// Stretch `k` is `start[k]..start[k + 1]`; key `k`'s line is its first `len[k]` events.
    events: Vec<Event>,
    /// The revision of each event in `events`, dense for the searches every read makes.
    revs: Vec<i64>,
    start: Vec<usize>,
    len: Vec<usize>,
}

impl Lines {
    /// Room for `room[k]` writes on key `k`; `blank` fills the stretches until writes enter.
    pub fn with_room(room: &[usize], blank: Event) -> Lines {
        let mut start = Vec::with_capacity(room.len() + 1);
        start.push(0);
        for r in room {
            start.push(start.last().expect("starts at 0") + r);
        }
        let total = *start.last().expect("starts at 0");
        Lines {
            events: vec![blank; total],
            revs: vec![0; total],
            start,
            len: vec![0; room.len()],
        }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.len.len()
    }

    fn range(&self, key: usize) -> Range<usize> {
        self.start[key]..self.start[key] + self.len[key]
    }

    /// Each key's line, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &[Event]> + '_ {
        (0..self.len()).map(|k| &self[k])
    }

    /// The revisions of `key`'s line, as of the last `sort`.
    pub fn revs(&self, key: usize) -> &[i64] {
        &self.revs[self.range(key)]
    }

    /// Puts `e` at `at` in `key`'s line, moving the later ones up.
    pub fn insert(&mut self, key: usize, at: usize, e: Event) {
        let len = self.len[key];
        assert!(
            self.start[key] + len < self.start[key + 1],
            "key {key} has more writes in its line than writes name it"
        );
        assert!(at <= len, "insert at {at} past the end of a line of {len}");
        let from = self.start[key] + at;
        let to = self.start[key] + len + 1;
        self.events[to - 1] = e;
        self.events[from..to].rotate_right(1);
        self.len[key] += 1;
    }

    pub fn push(&mut self, key: usize, e: Event) {
        self.insert(key, self.len[key], e);
    }

    /// Sorts every line by revision (ties by operation) and refreshes `revs`.
    pub fn sort(&mut self) {
        for key in 0..self.len() {
            let r = self.range(key);
            let line = &mut self.events[r.clone()];
            if !line.is_sorted_by_key(|e| e.rev) {
                line.sort_by_key(|e| (e.rev, e.op));
            }
            for (rev, e) in self.revs[r].iter_mut().zip(line.iter()) {
                *rev = e.rev;
            }
        }
    }
}

impl Index<usize> for Lines {
    type Output = [Event];

    fn index(&self, key: usize) -> &[Event] {
        &self.events[self.range(key)]
    }
}

impl IndexMut<usize> for Lines {
    fn index_mut(&mut self, key: usize) -> &mut [Event] {
        let r = self.range(key);
        &mut self.events[r]
    }
}
