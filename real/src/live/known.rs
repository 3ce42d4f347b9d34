//! Known bugs of the stores live mode is pointed at, so a live report can say which of its
//! violations are a bug already fixed upstream (and which are not explained by any).
//!
//! A target names the bugs its release still has (`known_bugs` in its file); a violation is
//! put down to one of them only when the check that fired and the pattern its message names
//! (the checkers name the pattern of a bug they recognise) both match.

/// One known bug: where it is reported upstream and how the checks show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownBug {
    /// How targets name it (`known_bugs = ["etcd-18089"]`).
    pub name: &'static str,
    /// The check that fires on it.
    pub check: &'static str,
    /// What that check's message says when it recognises the pattern.
    pub marker: &'static str,
    pub what: &'static str,
    pub upstream: &'static str,
    pub fixed_in: &'static str,
}

pub const CATALOGUE: [KnownBug; 2] = [
    KnownBug {
        name: "etcd-18089",
        check: "watch",
        marker: "etcd #18089",
        what: "a watch created exactly at the compact revision is served but misses the DELETE at that revision: compaction removed its tombstone",
        upstream: "https://github.com/etcd-io/etcd/issues/18089",
        fixed_in: "etcd 3.4.34 and 3.5.16",
    },
    KnownBug {
        name: "etcd-15220",
        check: "watch",
        marker: "etcd #15220",
        what: "a progress notification a client asks for is answered at the store's revision while the stream's watch has not yet sent the events up to it (or is about to be cancelled as compacted)",
        upstream: "https://github.com/etcd-io/etcd/issues/15220",
        fixed_in: "etcd #15237 (2023, after 3.4.23; backported to 3.4 and 3.5)",
    },
];

pub fn find(name: &str) -> Option<&'static KnownBug> {
    CATALOGUE.iter().find(|b| b.name == name)
}

/// The names a target may list.
pub fn names() -> Vec<&'static str> {
    CATALOGUE.iter().map(|b| b.name).collect()
}

/// Which known bug, of those `allowed`, a violation of `check` with `message` shows.
pub fn classify(allowed: &[String], check: &str, message: &str) -> Option<&'static KnownBug> {
    allowed
        .iter()
        .filter_map(|n| find(n))
        .find(|b| b.check == check && message.contains(b.marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_violation_is_put_down_to_a_bug_only_when_its_target_has_it_and_check_and_pattern_match() {
        let etcd = vec!["etcd-18089".to_string()];
        let msg = "watch#6 skipped revision 492 (the pattern of etcd #18089: ...)";
        assert_eq!(
            classify(&etcd, "watch", msg).map(|b| b.name),
            Some("etcd-18089")
        );
        // Another check, another message, or a target without the bug: unexplained.
        assert_eq!(classify(&etcd, "linearizable", msg), None);
        assert_eq!(
            classify(&etcd, "watch", "watch#6 skipped revision 492"),
            None
        );
        assert_eq!(classify(&[], "watch", msg), None);
    }
}
