//! The shape of a read's answer, judged whatever the store holds: what its options let it carry
//! (no key-values for a count only, no values for keys only), its limit, `more` and `count`
//! against its key-values, key order and range, and each key-value's revisions and version
//! against each other and against the revision the read was served at.
//!
//! Every answered read is judged so, its range inside the workload's prefixes or not. A problem
//! is data until a report keeps it: its message is built only then.

use super::explain::printable;
use super::spec::{Answer, Spec};
use crate::history::Kv;

/// The first thing wrong with an answer's shape.
pub(super) enum Shape<'h> {
    CountOnlyKvs(usize),
    CountOnlyMore,
    OverLimit(usize),
    OutsideRange(&'h Kv),
    OutOfOrder(&'h Kv, &'h Kv),
    /// `more` that is not "the limit cut the range": (more, key-values, count, limit).
    More(bool, usize, i64, i64),
    /// A count that is not the number of key-values of an uncut answer.
    Count(i64, usize),
    ValueInKeysOnly(&'h Kv),
    /// Revisions out of order: not `0 < create <= mod <= served`.
    Revisions(&'h Kv, i64),
    /// An object's resourceVersion below 1 or above the revision its read was served at.
    ResourceVersion(&'h Kv, i64),
    /// A version the store's rules do not allow (etcd: counted from the key's creation, at most
    /// one per revision since; kine: 1 for every live key).
    Version(&'h Kv, bool),
}

/// The first problem with the shape of `a`, an answer to `s` served at `rev`; `etcd` says
/// whose version rules apply. `modelled` (every key in its range is the model's) leaves key
/// order and versions newer than `rev` to the model's walk of the answer, which names the
/// writes involved.
pub(super) fn shape<'h>(
    s: &Spec,
    a: &Answer<'h>,
    rev: i64,
    etcd: bool,
    modelled: bool,
) -> Option<Shape<'h>> {
    let n = a.kvs.len();
    if s.count_only {
        if n > 0 {
            return Some(Shape::CountOnlyKvs(n));
        }
        // etcd and kine count without listing: nothing is cut, so nothing is "more".
        return a.more.then_some(Shape::CountOnlyMore);
    }
    if s.limit > 0 && n as i64 > s.limit {
        return Some(Shape::OverLimit(n));
    }
    // In key order (checked below or by the model's walk), so the ends tell whether all are in
    // range.
    let ends = [a.kvs.first(), a.kvs.last()];
    if let Some(kv) = ends.into_iter().flatten().find(|kv| !s.contains(&kv.key)) {
        return Some(Shape::OutsideRange(kv));
    }
    if !modelled {
        if let Some(w) = a.kvs.windows(2).find(|w| w[0].key >= w[1].key) {
            return Some(Shape::OutOfOrder(&w[0], &w[1]));
        }
    }
    // Cut by the limit: a full page with keys after it.
    let cut = s.limit > 0 && n as i64 == s.limit && a.count > n as i64;
    if a.more && !cut {
        return Some(Shape::More(a.more, n, a.count, s.limit));
    }
    if !a.more && a.count != n as i64 {
        return Some(Shape::Count(a.count, n));
    }
    if s.facade {
        // An object carries its resourceVersion (mod revision) alone.
        let newer = !modelled;
        return a
            .kvs
            .iter()
            .find(|kv| kv.mod_revision < 1 || (newer && kv.mod_revision > rev))
            .map(|kv| Shape::ResourceVersion(kv, rev));
    }
    a.kvs
        .iter()
        .find_map(|kv| kv_shape(kv, (rev, !modelled), etcd, s.keys_only))
}

/// The first problem with one live key-value served at `rev` (a mod revision above it is
/// judged only with `newer`).
pub(super) fn kv_shape(
    kv: &Kv,
    (rev, newer): (i64, bool),
    etcd: bool,
    keys_only: bool,
) -> Option<Shape<'_>> {
    if keys_only && !kv.value.is_empty() {
        return Some(Shape::ValueInKeysOnly(kv));
    }
    let future = newer && kv.mod_revision > rev;
    if kv.create_revision < 1 || kv.mod_revision < kv.create_revision || future {
        return Some(Shape::Revisions(kv, rev));
    }
    let version_ok = if etcd {
        kv.version >= 1 && kv.version <= kv.mod_revision - kv.create_revision + 1
    } else {
        kv.version == 1
    };
    (!version_ok).then_some(Shape::Version(kv, etcd))
}

impl Shape<'_> {
    /// What is wrong, as the end of a sentence that starts with the operation.
    pub fn describe(&self) -> String {
        match *self {
            Shape::CountOnlyKvs(n) => format!("asked for a count only but returned {n} key-values"),
            Shape::CountOnlyMore => {
                "asked for a count only but returned more=true: a count cuts nothing".into()
            }
            Shape::OverLimit(n) => format!("returned {n} key-values, more than its limit"),
            Shape::OutsideRange(kv) => format!("returned {}, outside its range", printable(&kv.key)),
            Shape::OutOfOrder(a, b) => format!(
                "returned {} after {}: key-values must be in ascending key order, each once",
                printable(&b.key),
                printable(&a.key)
            ),
            Shape::More(more, n, count, limit) => format!(
                "returned more={more} with {n} key-values, count {count} and limit {limit}: more must be true exactly when the limit cut the range"
            ),
            Shape::Count(count, n) => format!(
                "returned count {count} with {n} key-values and more=false: the count must be the number of keys in its range"
            ),
            Shape::ValueInKeysOnly(kv) => format!(
                "asked for keys only but returned {} with value {}",
                printable(&kv.key),
                super::explain::short(&kv.value)
            ),
            Shape::Revisions(kv, rev) => format!(
                "returned {} with create revision {} and mod revision {}, served at revision {rev}: every key-value needs 0 < create revision <= mod revision <= the revision served",
                printable(&kv.key),
                kv.create_revision,
                kv.mod_revision
            ),
            Shape::ResourceVersion(kv, rev) => format!(
                "returned {} at resourceVersion {}, served at revision {rev}: an object's resourceVersion is at least 1 and at most the revision served",
                printable(&kv.key),
                kv.mod_revision
            ),
            Shape::Version(kv, etcd) => format!(
                "returned {} with version {} (create revision {}, mod revision {}): {}",
                printable(&kv.key),
                kv.version,
                kv.create_revision,
                kv.mod_revision,
                if etcd {
                    "a live key's version counts its writes since creation, at least 1 and at most one per revision since"
                } else {
                    "kine reports version 1 for every live key"
                }
            ),
        }
    }
}
