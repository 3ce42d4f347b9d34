//! What a read at a revision may show of one key, from the model: the newest write at or
//! below the revision (or, under the mysql-like allowance, an earlier one still committing),
//! and what answers say about versions a delete of unknown outcome may have removed.

use super::model::{Model, Note};

/// Where the last search in a key's revisions ended, as the revisions it holds for: every
/// revision in `[from, to)` has the same newest write, `count` writes at or below it. Reads come
/// roughly in revision order, so most find their answer here without touching the key's line.
/// Only speeds searches up.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    from: i64,
    to: i64,
    count: u32,
    /// The newest write is a put, and one a delete of unknown outcome may have removed.
    put: bool,
    suspect: bool,
}

/// What a read at `rev` may show of `key`: the state after any of `line[first..=last]`
/// (-1: before the key's first write).
#[derive(Clone, Copy, Debug)]
pub(super) struct Vis {
    pub key: usize,
    pub rev: i64,
    pub first: isize,
    pub last: isize,
    /// When the read began, under the mysql-like allowance.
    pub began: Option<u64>,
    /// Whether `line[last]` is a put, and a suspect one (false when `last` is -1).
    last_put: bool,
    last_suspect: bool,
}

impl<'h> Model<'h> {
    /// The writes whose resulting state a read at `rev` may show for `key`. Normally just the
    /// newest write at or below `rev`. Under the mysql-like allowance also earlier ones, when
    /// every write after them up to `rev` was still in flight as the read began (`began`): not
    /// yet acknowledged and shown by no answer that completed before.
    pub fn visible(&self, key: usize, rev: i64, began: Option<u64>) -> Vis {
        let line = &self.lines[key];
        let w = self.window(key, rev);
        let last = w.count as isize - 1;
        let mut first = last;
        if let (true, Some(began)) = (self.late_commits, began) {
            while first >= 0 && line[first as usize].known_by_ns >= began {
                first -= 1;
            }
        }
        Vis {
            key,
            rev,
            first,
            last,
            began: began.filter(|_| self.late_commits),
            last_put: w.put,
            last_suspect: w.suspect,
        }
    }

    /// Whether `line[x]` of `v`'s key is a put, and a suspect one.
    fn put_and_suspect(&self, v: Vis, x: usize) -> (bool, bool) {
        if x as isize == v.last {
            return (v.last_put, v.last_suspect);
        }
        let e = &self.lines[v.key][x];
        (e.change.is_put(), e.suspect)
    }

    /// The window of `key`'s revisions that holds `count` writes, from `line` as it stands.
    pub(super) fn window_at(&self, key: usize, count: usize) -> Window {
        let revs = self.lines.revs(key);
        let newest = count.checked_sub(1).map(|x| &self.lines[key][x]);
        Window {
            from: count.checked_sub(1).map_or(i64::MIN, |x| revs[x]),
            to: revs.get(count).copied().unwrap_or(i64::MAX),
            count: u32::try_from(count).expect("a key has fewer than 2^32 writes"),
            put: newest.is_some_and(|e| e.change.is_put()),
            suspect: newest.is_some_and(|e| e.suspect),
        }
    }

    /// The window of `key`'s revisions that holds `rev`: the cursor's when it does.
    fn window(&self, key: usize, rev: i64) -> Window {
        let w = self.cursor[key].get();
        if w.from <= rev && rev < w.to {
            return w;
        }
        let w = self.window_at(key, self.newest_at(key, rev, w.count as usize));
        self.cursor[key].set(w);
        w
    }

    /// How many of `key`'s writes are at or below `rev`, searched from `p`, where the last
    /// search ended.
    fn newest_at(&self, key: usize, rev: i64, p: usize) -> usize {
        let revs = self.lines.revs(key);
        let mut p = p.min(revs.len());
        for _ in 0..4 {
            if p < revs.len() && revs[p] <= rev {
                p += 1;
            } else if p > 0 && revs[p - 1] > rev {
                p -= 1;
            } else {
                break;
            }
        }
        let settled = (p == revs.len() || revs[p] > rev) && (p == 0 || revs[p - 1] <= rev);
        if !settled {
            p = revs.partition_point(|r| *r <= rev);
        }
        p
    }

    /// The writes in `v`, by line index (-1: the state before the key's first write).
    fn each(v: Vis) -> impl Iterator<Item = isize> {
        v.first..=v.last
    }

    /// Whether a suspect version is visible: what an answer shows there dates its delete, and
    /// is judged once every answer has been read.
    pub fn sees_suspect(&self, v: Vis) -> bool {
        Self::each(v).any(|x| x >= 0 && self.put_and_suspect(v, x as usize).1)
    }

    /// Whether the version written by `line[x]` had been deleted by `rev` according to the
    /// answers that dated a suspect delete. Under the mysql-like allowance (`began`), only for
    /// a read that began once an answer had found it gone: before that the delete may still
    /// have been committing.
    pub fn dated_delete(&self, key: usize, x: usize, rev: i64, began: Option<u64>) -> bool {
        if !self.lines[key][x].suspect {
            return false;
        }
        let s = &self.suspects[&(key, x)];
        s.seen_absent.is_some_and(|(r, _)| rev >= r)
            && began.is_none_or(|b| s.absent_known_ns.is_some_and(|t| b >= t))
    }

    /// When `mod_rev` is the newest write at or below `rev` and a put no suspect delete may
    /// have removed: its line index, found without a search. The common case.
    pub fn plainly_newest(&self, key: usize, rev: i64, mod_rev: i64) -> Option<usize> {
        let w = self.window(key, rev);
        let x = (w.count as usize).checked_sub(1)?;
        // `from` is the newest write's revision.
        (w.from == mod_rev && w.put && !w.suspect && !self.late_commits).then_some(x)
    }

    /// The line index whose version `mod_rev` a read may show, if any.
    pub fn shows_live(&self, v: Vis, mod_rev: i64) -> Option<usize> {
        Self::each(v)
            .filter(|x| *x >= 0)
            .map(|x| x as usize)
            .find(|&x| {
                let e = &self.lines[v.key][x];
                e.rev == mod_rev
                    && e.change.is_put()
                    && !self.dated_delete(v.key, x, v.rev, v.began)
            })
    }

    /// Whether a read may find the key absent.
    pub fn may_be_absent(&self, v: Vis) -> bool {
        Self::each(v).any(|x| {
            x < 0 || {
                let (put, suspect) = self.put_and_suspect(v, x as usize);
                !put || (suspect && self.dated_delete(v.key, x as usize, v.rev, None))
            }
        })
    }

    /// Whether the key may be live and may be absent, counting what is undecided: a suspect
    /// version after the last answer that showed it, a create of unknown outcome.
    pub fn liveness(&self, v: Vis) -> (bool, bool) {
        let (mut live, mut absent) = (false, false);
        for x in Self::each(v) {
            let flags = (x >= 0).then(|| self.put_and_suspect(v, x as usize));
            match flags {
                Some((true, false)) => live = true,
                Some((true, true)) => {
                    let e = &self.lines[v.key][x as usize];
                    let s = &self.suspects[&(v.key, x as usize)];
                    if self.dated_delete(v.key, x as usize, v.rev, v.began) {
                        absent = true;
                    } else {
                        live = true;
                        absent |= v.rev > s.seen_live.map_or(e.rev, |(r, _)| r)
                            || s.seen_absent.is_some_and(|(r, _)| v.rev >= r);
                    }
                }
                _ => {
                    absent = true;
                    live |= self.maybe_created[v.key];
                }
            }
        }
        (live, absent)
    }

    /// Evidence for suspect versions: an answer at `rev` (begun at `began`) showed `key` at
    /// `mod_rev`, or absent (`None`). Every absent note must come before the live ones: under
    /// the mysql-like allowance a live sighting dates the delete only if the read began once an
    /// answer had found the key gone, when the delete had committed; before that it may have
    /// held a revision at or below `rev` and still been committing.
    pub fn note(&mut self, (key, rev, began, shown, op): Note) {
        let Vis { first, last, .. } = self.visible(key, rev, began);
        let line = &self.lines[key];
        match shown {
            Some(mod_rev) => {
                for x in first.max(0)..=last {
                    let x = x as usize;
                    if line[x].rev != mod_rev {
                        continue;
                    }
                    if let Some(s) = self.suspects.get_mut(&(key, x)) {
                        let committed = |b| s.absent_known_ns.is_some_and(|t| b >= t);
                        if self.late_commits && !began.is_some_and(committed) {
                            continue;
                        }
                        if s.seen_live.is_none_or(|(r, _)| rev > r) {
                            s.seen_live = Some((rev, op));
                        }
                    }
                }
            }
            None => {
                let explained = (first..=last).any(|x| x < 0 || !line[x as usize].change.is_put());
                if explained || last < 0 {
                    return;
                }
                let done = self.ops[op].complete_ns;
                if let Some(s) = self.suspects.get_mut(&(key, last as usize)) {
                    if s.seen_absent.is_none_or(|(r, _)| rev < r) {
                        s.seen_absent = Some((rev, op));
                    }
                    s.absent_known_ns = Some(s.absent_known_ns.map_or(done, |t| t.min(done)));
                }
            }
        }
    }

    /// Counts the suspects the answers dated as deleted (each one delete that happened).
    pub fn count_dated_deletes(&mut self) {
        self.resolved += self
            .suspects
            .values()
            .filter(|s| s.seen_absent.is_some())
            .count() as u64;
    }
}
