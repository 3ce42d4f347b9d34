//! What a read at a revision may show of one key, from the model: the newest write at or
//! below the revision (or, under the mysql-like allowance, an earlier one still committing),
//! and what answers say about versions a delete of unknown outcome may have removed.

use super::model::{Model, Note};

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
}

impl<'h> Model<'h> {
    /// The writes whose resulting state a read at `rev` may show for `key`. Normally just the
    /// newest write at or below `rev`. Under the mysql-like allowance also earlier ones, when
    /// every write after them up to `rev` was still in flight as the read began (`began`): not
    /// yet acknowledged and shown by no answer that completed before.
    pub fn visible(&self, key: usize, rev: i64, began: Option<u64>) -> Vis {
        let line = &self.lines[key];
        let last = self.newest_at(key, rev) as isize - 1;
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
        }
    }

    /// How many of `key`'s writes are at or below `rev`, searched from where the last search
    /// ended.
    fn newest_at(&self, key: usize, rev: i64) -> usize {
        let revs = &self.revs[key];
        let mut p = self.cursor[key].get().min(revs.len());
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
        self.cursor[key].set(p);
        p
    }

    /// The writes in `v`, by line index (-1: the state before the key's first write).
    fn each(v: Vis) -> impl Iterator<Item = isize> {
        v.first..=v.last
    }

    /// Whether a suspect version is visible: what an answer shows there dates its delete, and
    /// is judged once every answer has been read.
    pub fn sees_suspect(&self, v: Vis) -> bool {
        Self::each(v).any(|x| x >= 0 && self.lines[v.key][x as usize].suspect)
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
        let x = self.newest_at(key, rev).checked_sub(1)?;
        let e = &self.lines[key][x];
        (e.rev == mod_rev && e.change.is_put() && !e.suspect && !self.late_commits).then_some(x)
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
                let e = &self.lines[v.key][x as usize];
                !e.change.is_put() || self.dated_delete(v.key, x as usize, v.rev, None)
            }
        })
    }

    /// Whether the key may be live and may be absent, counting what is undecided: a suspect
    /// version after the last answer that showed it, a create of unknown outcome.
    pub fn liveness(&self, v: Vis) -> (bool, bool) {
        let (mut live, mut absent) = (false, false);
        for x in Self::each(v) {
            let e = (x >= 0).then(|| &self.lines[v.key][x as usize]);
            match e {
                Some(e) if e.change.is_put() && !e.suspect => live = true,
                Some(e) if e.change.is_put() => {
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
    /// `mod_rev`, or absent (`None`).
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
