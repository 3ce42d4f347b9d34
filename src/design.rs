//! Design variants: the fixed design and re-created bugs, selected by value, never by a copied
//! component.
//!
//! A `Design` is passed to the store at start. Each area names the one place its variants differ;
//! the code there matches on the area's enum. Parsing accepts `area=variant` and names the allowed
//! values on error, so the CLI and scenario files can report bad input precisely.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How the kine compactor loop handles a failed batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompactorVariant {
    /// kine after v0.13.10: keep committed batches, refresh the target only when known.
    #[default]
    Fixed,
    /// kine issue 357: a failed batch restarts the loop, forgetting committed batches.
    Kine357,
    /// kine PR 414: a tick whose first batch fails sets the next target to 0.
    Kine414,
    /// The first batch after a resync asks for no min-retain clamp.
    ResyncUnclamped,
}

/// How kine lists a key range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListVariant {
    /// Sorted by key, counted from the start key, the start key honoured at every revision.
    #[default]
    Fixed,
    /// kine PR 298: sorted by id, counted over the whole prefix, start key ignored at revision 0.
    Kine298,
    /// Before kine 135886d: a start key ending in NUL is inclusive, any other is exclusive.
    StartKeyInclusive,
    /// Every page starts over at the range's first key, whatever start key it asked for.
    StartKeyIgnored,
    /// A keys-only read returns the values too.
    KeysOnlyValues,
}

/// How kine's watch poller treats a missing id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchVariant {
    /// Wait for the id, then fill it after about a second.
    #[default]
    Fixed,
    /// Skip the missing id at once: a row that commits late is never delivered.
    GapSkip,
    /// etcd member watch (etcd issues 18089, 19179): a watch opened exactly at the compact
    /// revision drops the DELETE event at that revision.
    Etcd18089,
}

/// How a node's client load balancer fails over and back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LbVariant {
    /// The default server is used only while every other server fails; once one passes, the
    /// default server's connections are closed so clients fail back.
    #[default]
    Fixed,
    /// k3s issue 11311: falls back to the default (join) server and never fails back; an
    /// etcd-only default server passes its check because its supervisor answers.
    K3s11311,
}

/// How a control-plane-only node starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartupVariant {
    /// Starts with any previously known server reachable.
    #[default]
    Fixed,
    /// k3s issue 11333: insists on its join server at start.
    K3s11333,
}

/// How an etcd member recovers its current revision after a crash mid-compaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompactionVariant {
    /// The current revision is at least the scheduled compact revision.
    #[default]
    Fixed,
    /// etcd issue 17780: only the revisions left in the backend count, so compacting a tombstone
    /// at the latest revision and crashing before the finished mark lowers the current revision.
    Etcd17780,
}

/// How an etcd member's lessor treats leases when its member becomes the raft leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseVariant {
    /// etcd 3.4's Promote: every lease is renewed to its full TTL plus the election timeout, and
    /// expired leases are revoked only after a ReadIndex confirms this member still leads.
    #[default]
    Fixed,
    /// A new leader keeps the deadlines it knew (the grant's, or its own last renewal) instead of
    /// renewing: keep-alives the old leader answered are forgotten (the v2 TTL loss of etcd #2660).
    NoRenewOnPromote,
    /// etcd issue 15247: revokes of expired leases are proposed without checking that this
    /// member still leads, so a leader that was stuck revokes leases a newer leader kept alive.
    Etcd15247,
}

/// What guards a kine append besides the (name, prev_revision) unique index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InsertVariant {
    /// A row is appended only while no row of its key is newer than the one its writer read, so
    /// a write whose previous row compaction removed meanwhile still loses to a newer write.
    #[default]
    Fixed,
    /// kine issue 504: only the unique index guards; a create that read a tombstone which
    /// compaction then removed succeeds next to the create that raced it.
    Kine504,
}

/// Where the apiserver reads a LIST without a resourceVersion (a consistent read) from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiServerVariant {
    /// From the store at its latest revision.
    #[default]
    Fixed,
    /// From a snapshot revision refreshed on only one consistent LIST in four, as a watch cache
    /// that answers without first catching up to the store's current revision.
    StaleConsistentList,
}

/// How the apiserver negotiates a WatchList request's content type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchListVariant {
    /// A WatchList that accepts only the Table format is refused with 406.
    #[default]
    Fixed,
    /// Kubernetes issue 126206: it is served anyway.
    K8s126206,
}

/// Expected-behaviour knobs: not bugs, settings whose outcomes the scenarios show side by side.
pub const KNOBS: &[(&str, &str)] = &[(
    "kine.compact_min_retain",
    "revisions kine's compactor never compacts (overrides the scenario's kine.compact_min_retain)",
)];

/// One selectable variant: its area, name and what it does, for `faultline list`.
pub struct VariantInfo {
    pub area: &'static str,
    pub name: &'static str,
    pub meaning: &'static str,
    /// The checker expected to catch it (empty for the fixed design).
    pub caught_by: &'static str,
    /// The scenario it targets.
    pub scenario: &'static str,
}

/// Every variant this build knows, the fixed one of each area first.
pub const VARIANTS: &[VariantInfo] = &[
    VariantInfo {
        area: "compactor",
        name: "fixed",
        meaning:
            "kine's compactor after v0.13.10: committed batches kept, target refreshed when known",
        caught_by: "",
        scenario: "kine-compaction-failure",
    },
    VariantInfo {
        area: "compactor",
        name: "kine-357",
        meaning:
            "a failed batch restarts the tick loop without recording committed batches (kine #357)",
        caught_by: "compactor-continuity",
        scenario: "kine-compaction-failure",
    },
    VariantInfo {
        area: "compactor",
        name: "kine-414",
        meaning:
            "a tick whose first batch fails sets the next target to 0; compaction stops (kine #414)",
        caught_by: "compactor-continuity",
        scenario: "kine-compaction-failure",
    },
    VariantInfo {
        area: "compactor",
        name: "resync-unclamped",
        meaning: "the first batch after a resync skips the min-retain clamp, compacting revisions still within the newest min_retain",
        caught_by: "compactor-continuity",
        scenario: "kine-quiet-compaction",
    },
    VariantInfo {
        area: "list",
        name: "fixed",
        meaning: "kine's list: by key, counted from the start key, start key honoured",
        caught_by: "",
        scenario: "kine-ha-partitions",
    },
    VariantInfo {
        area: "list",
        name: "kine-298",
        meaning: "lists sorted by id, count over the whole prefix, start key ignored at revision 0 (kine #298)",
        caught_by: "list-continuation",
        scenario: "kine-ha-partitions",
    },
    VariantInfo {
        area: "list",
        name: "start-key-inclusive",
        meaning: "a start key ending in NUL is treated as inclusive, so the last key of a page repeats (kine 135886d)",
        caught_by: "list-continuation",
        scenario: "kine-ha-partitions",
    },
    VariantInfo {
        area: "list",
        name: "start-key-ignored",
        meaning: "every page starts over at the range's first key: each continued page repeats the first",
        caught_by: "list-continuation",
        scenario: "chunked-list-compaction",
    },
    VariantInfo {
        area: "list",
        name: "keys-only-values",
        meaning: "a keys-only list returns the values too",
        caught_by: "linearizable",
        scenario: "chunked-list-compaction",
    },
    VariantInfo {
        area: "watch",
        name: "fixed",
        meaning: "kine's poller waits for a missing id and fills it after about a second",
        caught_by: "",
        scenario: "watch-under-faults",
    },
    VariantInfo {
        area: "watch",
        name: "gap-skip",
        meaning: "the poller skips a missing id at once, so a row that commits late is never delivered",
        caught_by: "watch",
        scenario: "watch-under-faults",
    },
    VariantInfo {
        area: "watch",
        name: "etcd-18089",
        meaning: "an etcd watch opened exactly at the compact revision drops the DELETE at it (etcd #18089)",
        caught_by: "watch",
        scenario: "etcd-compaction-crash",
    },
    VariantInfo {
        area: "watchlist",
        name: "fixed",
        meaning: "a WatchList accepting only Table is refused with 406 Not Acceptable",
        caught_by: "",
        scenario: "watchlist",
    },
    VariantInfo {
        area: "watchlist",
        name: "k8s-126206",
        meaning: "a WatchList accepting only Table is served instead of refused (Kubernetes #126206)",
        caught_by: "watchlist",
        scenario: "watchlist",
    },
    VariantInfo {
        area: "apiserver",
        name: "fixed",
        meaning: "a LIST without a resourceVersion reads the store at its latest revision",
        caught_by: "",
        scenario: "kine-contention",
    },
    VariantInfo {
        area: "apiserver",
        name: "stale-consistent-list",
        meaning: "three consistent LISTs in four are served from a snapshot revision taken at an earlier one, older than writes already acknowledged",
        caught_by: "linearizable",
        scenario: "kine-contention",
    },
    VariantInfo {
        area: "lb",
        name: "fixed",
        meaning: "the default server only while all others fail; fail back once one passes",
        caught_by: "",
        scenario: "etcd-only-rejoin",
    },
    VariantInfo {
        area: "lb",
        name: "k3s-11311",
        meaning: "falls back to the default (join) server and never fails back (k3s #11311)",
        caught_by: "etcd-only-rejoin",
        scenario: "etcd-only-rejoin",
    },
    VariantInfo {
        area: "startup",
        name: "fixed",
        meaning: "a node starts while any previously known server is reachable",
        caught_by: "",
        scenario: "etcd-only-rejoin",
    },
    VariantInfo {
        area: "startup",
        name: "k3s-11333",
        meaning: "a control-plane-only node insists on its join server at start (k3s #11333)",
        caught_by: "etcd-only-rejoin",
        scenario: "etcd-only-rejoin",
    },
    VariantInfo {
        area: "insert",
        name: "fixed",
        meaning: "a kine append commits only while no row of its key is newer than the one it read",
        caught_by: "",
        scenario: "kine-contention",
    },
    VariantInfo {
        area: "insert",
        name: "kine-504",
        meaning: "only the (name, prev_revision) index guards an append: a create whose tombstone compaction removed succeeds twice (kine #504)",
        caught_by: "linearizable",
        scenario: "kine-contention",
    },
    VariantInfo {
        area: "compaction",
        name: "fixed",
        meaning: "an etcd member's current revision is at least its scheduled compact revision",
        caught_by: "",
        scenario: "etcd-compaction-crash",
    },
    VariantInfo {
        area: "compaction",
        name: "etcd-17780",
        meaning: "a crash mid-compaction of a tombstone at the latest revision lowers the revision (etcd #17780)",
        caught_by: "revision-monotonic",
        scenario: "etcd-compaction-crash",
    },
    // `lease=etcd-15247` names no checker or scenario yet: it needs a leader whose raft loop is
    // stuck while its lessor goes on, which no fault here makes (the store test in
    // etcd/lease_tests.rs shows its difference).
    VariantInfo {
        area: "lease",
        name: "fixed",
        meaning: "an etcd member that becomes leader renews every lease to TTL + election timeout, and checks it still leads before revoking",
        caught_by: "",
        scenario: "etcd-ha-partitions",
    },
    VariantInfo {
        area: "lease",
        name: "no-renew-on-promote",
        meaning: "a new etcd leader keeps the old lease deadlines, so leases kept alive through the old leader expire early (etcd #2660, v2 TTLs)",
        caught_by: "lease",
        scenario: "etcd-ha-partitions",
    },
    VariantInfo {
        area: "lease",
        name: "etcd-15247",
        meaning: "a stuck etcd leader resumes and revokes expired leases without checking it still leads (etcd #15247)",
        caught_by: "",
        scenario: "",
    },
];

/// The resolved design of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Design {
    pub compactor: CompactorVariant,
    #[serde(default)]
    pub list: ListVariant,
    #[serde(default)]
    pub watch: WatchVariant,
    #[serde(default)]
    pub watchlist: WatchListVariant,
    #[serde(default)]
    pub apiserver: ApiServerVariant,
    #[serde(default)]
    pub lb: LbVariant,
    #[serde(default)]
    pub startup: StartupVariant,
    #[serde(default)]
    pub compaction: CompactionVariant,
    #[serde(default)]
    pub insert: InsertVariant,
    #[serde(default)]
    pub lease: LeaseVariant,
    /// `kine.compact_min_retain=N`: overrides the scenario's setting.
    #[serde(default)]
    pub compact_min_retain: Option<i64>,
}

/// A design selection that names an unknown area or variant.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DesignError {
    #[error("design selection `{0}` is not of the form AREA=VARIANT")]
    Malformed(String),
    #[error("`{knob}` needs a whole number of revisions, 0 or more; got `{value}`")]
    BadKnobValue { knob: String, value: String },
    #[error("unknown design area `{area}`; allowed areas: {allowed}")]
    UnknownArea { area: String, allowed: String },
    #[error("unknown variant `{variant}` for design area `{area}`; allowed: {allowed}")]
    UnknownVariant {
        area: String,
        variant: String,
        allowed: String,
    },
}

impl Design {
    /// Applies one `area=variant` selection on top of this design.
    pub fn apply(&mut self, selection: &str) -> Result<(), DesignError> {
        let (area, variant) = selection
            .split_once('=')
            .map(|(a, v)| (a.trim(), v.trim()))
            .ok_or_else(|| DesignError::Malformed(selection.to_string()))?;
        self.set(area, variant)
    }

    /// Sets `area` to `variant`.
    pub fn set(&mut self, area: &str, variant: &str) -> Result<(), DesignError> {
        if area == "kine.compact_min_retain" {
            let n = variant
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| DesignError::BadKnobValue {
                    knob: area.to_string(),
                    value: variant.to_string(),
                })?;
            self.compact_min_retain = Some(n);
            return Ok(());
        }
        let known: Vec<&VariantInfo> = VARIANTS.iter().filter(|v| v.area == area).collect();
        if known.is_empty() {
            return Err(DesignError::UnknownArea {
                area: area.to_string(),
                allowed: areas().join(", "),
            });
        }
        if !known.iter().any(|v| v.name == variant) {
            return Err(DesignError::UnknownVariant {
                area: area.to_string(),
                variant: variant.to_string(),
                allowed: known.iter().map(|v| v.name).collect::<Vec<_>>().join(", "),
            });
        }
        match (area, variant) {
            ("compactor", "fixed") => self.compactor = CompactorVariant::Fixed,
            ("compactor", "kine-357") => self.compactor = CompactorVariant::Kine357,
            ("compactor", "kine-414") => self.compactor = CompactorVariant::Kine414,
            ("compactor", "resync-unclamped") => self.compactor = CompactorVariant::ResyncUnclamped,
            ("list", "fixed") => self.list = ListVariant::Fixed,
            ("list", "kine-298") => self.list = ListVariant::Kine298,
            ("list", "start-key-inclusive") => self.list = ListVariant::StartKeyInclusive,
            ("list", "start-key-ignored") => self.list = ListVariant::StartKeyIgnored,
            ("list", "keys-only-values") => self.list = ListVariant::KeysOnlyValues,
            ("watch", "fixed") => self.watch = WatchVariant::Fixed,
            ("watch", "gap-skip") => self.watch = WatchVariant::GapSkip,
            ("watch", "etcd-18089") => self.watch = WatchVariant::Etcd18089,
            ("lb", "fixed") => self.lb = LbVariant::Fixed,
            ("lb", "k3s-11311") => self.lb = LbVariant::K3s11311,
            ("startup", "fixed") => self.startup = StartupVariant::Fixed,
            ("startup", "k3s-11333") => self.startup = StartupVariant::K3s11333,
            ("compaction", "fixed") => self.compaction = CompactionVariant::Fixed,
            ("compaction", "etcd-17780") => self.compaction = CompactionVariant::Etcd17780,
            ("insert", "fixed") => self.insert = InsertVariant::Fixed,
            ("insert", "kine-504") => self.insert = InsertVariant::Kine504,
            ("lease", "fixed") => self.lease = LeaseVariant::Fixed,
            ("lease", "no-renew-on-promote") => self.lease = LeaseVariant::NoRenewOnPromote,
            ("lease", "etcd-15247") => self.lease = LeaseVariant::Etcd15247,
            ("apiserver", "fixed") => self.apiserver = ApiServerVariant::Fixed,
            ("apiserver", "stale-consistent-list") => {
                self.apiserver = ApiServerVariant::StaleConsistentList
            }
            ("watchlist", "fixed") => self.watchlist = WatchListVariant::Fixed,
            ("watchlist", "k8s-126206") => self.watchlist = WatchListVariant::K8s126206,
            _ => unreachable!("variant {area}={variant} is listed but not wired"),
        }
        Ok(())
    }

    /// The selections that differ from the fixed design, as `area=variant` strings.
    pub fn selections(&self) -> Vec<String> {
        let mut out = Vec::new();
        let compactor = match self.compactor {
            CompactorVariant::Fixed => None,
            CompactorVariant::Kine357 => Some("kine-357"),
            CompactorVariant::Kine414 => Some("kine-414"),
            CompactorVariant::ResyncUnclamped => Some("resync-unclamped"),
        };
        if let Some(v) = compactor {
            out.push(format!("compactor={v}"));
        }
        let list = match self.list {
            ListVariant::Fixed => None,
            ListVariant::Kine298 => Some("kine-298"),
            ListVariant::StartKeyInclusive => Some("start-key-inclusive"),
            ListVariant::StartKeyIgnored => Some("start-key-ignored"),
            ListVariant::KeysOnlyValues => Some("keys-only-values"),
        };
        if let Some(v) = list {
            out.push(format!("list={v}"));
        }
        match self.watch {
            WatchVariant::Fixed => {}
            WatchVariant::GapSkip => out.push("watch=gap-skip".into()),
            WatchVariant::Etcd18089 => out.push("watch=etcd-18089".into()),
        }
        if self.watchlist == WatchListVariant::K8s126206 {
            out.push("watchlist=k8s-126206".into());
        }
        if self.apiserver == ApiServerVariant::StaleConsistentList {
            out.push("apiserver=stale-consistent-list".into());
        }
        if self.lb == LbVariant::K3s11311 {
            out.push("lb=k3s-11311".into());
        }
        if self.startup == StartupVariant::K3s11333 {
            out.push("startup=k3s-11333".into());
        }
        if self.compaction == CompactionVariant::Etcd17780 {
            out.push("compaction=etcd-17780".into());
        }
        if self.insert == InsertVariant::Kine504 {
            out.push("insert=kine-504".into());
        }
        match self.lease {
            LeaseVariant::Fixed => {}
            LeaseVariant::NoRenewOnPromote => out.push("lease=no-renew-on-promote".into()),
            LeaseVariant::Etcd15247 => out.push("lease=etcd-15247".into()),
        }
        if let Some(n) = self.compact_min_retain {
            out.push(format!("kine.compact_min_retain={n}"));
        }
        out
    }

    pub fn is_fixed(&self) -> bool {
        self.selections().is_empty()
    }
}

impl fmt::Display for Design {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.selections();
        if s.is_empty() {
            write!(f, "fixed")
        } else {
            write!(f, "{}", s.join(","))
        }
    }
}

/// The design areas and knobs, in the order `faultline list` shows them.
pub fn areas() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = KNOBS.iter().map(|(k, _)| *k).collect();
    for v in VARIANTS {
        if !out.contains(&v.area) {
            out.push(v.area);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_a_variant_and_prints_it_back() {
        let mut d = Design::default();
        d.apply("compactor=kine-414").unwrap();
        assert_eq!(d.compactor, CompactorVariant::Kine414);
        assert_eq!(d.to_string(), "compactor=kine-414");
        d.apply("compactor = fixed").unwrap();
        assert!(d.is_fixed());
        d.apply("kine.compact_min_retain=1000").unwrap();
        d.apply("watch=gap-skip").unwrap();
        assert_eq!(d.compact_min_retain, Some(1000));
        assert_eq!(d.to_string(), "watch=gap-skip,kine.compact_min_retain=1000");
    }

    #[test]
    fn unknown_values_name_what_is_allowed() {
        let mut d = Design::default();
        let e = d.apply("compactor=kine-999").unwrap_err().to_string();
        assert!(e.contains("fixed, kine-357, kine-414"), "{e}");
        let e = d.apply("nosuch=x").unwrap_err().to_string();
        assert!(
            e.contains("allowed areas: kine.compact_min_retain, compactor, list, watch"),
            "{e}"
        );
        let e = d
            .apply("kine.compact_min_retain=lots")
            .unwrap_err()
            .to_string();
        assert!(e.contains("whole number"), "{e}");
        assert!(matches!(
            d.apply("compactor"),
            Err(DesignError::Malformed(_))
        ));
    }
}
