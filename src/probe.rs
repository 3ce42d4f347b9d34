//! Code probes: named conditions in the store, counted per run, so a campaign can say which
//! paths its seeds never reached (FoundationDB's `CODE_PROBE`).
//!
//! Every probe is declared once in [`PROBES`] with a one-line meaning; `probe!("name")` marks
//! the place the condition holds. A name missing from the table fails to compile. In the
//! simulator build a hit is one relaxed atomic add on a process-wide counter: each seed runs in
//! its own process, and nothing inside a simulation ever reads the counters, so they cannot
//! change what a run does or its trace (ARCHITECTURE.md: the one sanctioned global). Built
//! without `--cfg madsim` (the real server), a mark compiles to nothing.

use std::sync::atomic::{AtomicU64, Ordering};

/// Every probe: (name, what it means when hit). Grouped by area; names are unique.
pub const PROBES: &[(&str, &str)] = &[
    // kine: the poll loop and its gap handling
    ("kine.poll.failed", "the watch poller's read of the log failed and is retried"),
    ("kine.poll.gap_waited", "the poller met a missing id and waited for it again"),
    ("kine.poll.gap_filled", "a missing id waited for past the fill delay is filled with a gap row"),
    ("kine.poll.fill_refused_below_compact", "a gap fill was refused: the id is at or below the compact revision"),
    ("kine.poll.ids_compacted_unread", "compaction removed ids the poller had not read yet; watchers are told"),
    // kine: inserts and their guards
    ("kine.insert.guard_refused", "an insert lost to a concurrent write of its key (guard fired); the write retries"),
    ("kine.insert.reserve_unique_violation", "a mysql-like reservation hit a row or reservation with the same previous revision"),
    ("kine.insert.reserve_superseded", "a mysql-like reservation found a newer row of its key committed or in flight"),
    ("kine.insert.aborted", "a reserved insert was aborted: its id stays a gap"),
    ("kine.insert.commit_outlived_deadline", "a mysql-like insert's commit delay outlived the caller's deadline"),
    ("kine.insert.recommitted_under_fresh_id", "a reserved insert's id was filled or compacted meanwhile; committed under a fresh id"),
    ("kine.driver.call_timed_out", "a call to the database node timed out (outcome unknown)"),
    // kine: reads and transactions
    ("kine.range.compacted", "a read asked for a revision below the compact revision"),
    ("kine.range.at_compact_revision", "a read at exactly the compact revision was served"),
    ("kine.txn.create_found_key_live", "a create's compare (mod revision 0) failed: the key is live"),
    ("kine.txn.update_found_key_gone", "an update or delete's mod-revision compare failed: the key is gone"),
    ("kine.txn.update_found_newer_revision", "an update or delete's mod-revision compare failed: the key was rewritten"),
    // kine: the compactor
    ("kine.compact.target_clamped_by_min_retain", "a compaction batch's target was lowered to current - min_retain"),
    ("kine.compact.resync_adopted_stored_revision", "a batch found another compact revision stored and the compactor adopted it"),
    ("kine.compact.batch_already_compacted", "a batch found nothing to compact (target at or below the stored revision)"),
    ("kine.compact.batch_failed_locked", "a compaction batch failed with database is locked (rolled back)"),
    ("kine.compact.batch_failed_timeout", "a compaction batch timed out before it committed"),
    ("kine.compact.batch_failed_reply_lost", "a compaction batch committed but its reply was lost"),
    ("kine.compact.batch_failed_unforced", "a compaction batch failed with no injected fault (timeout, unreachable database)"),
    // watches, both stores
    ("watch.kine.opened_at_compact_revision", "a kine watch started exactly at the compact revision"),
    ("watch.kine.start_compacted", "a kine watch's start revision was compacted: cancelled at once"),
    ("watch.kine.cancelled_as_compacted", "a running kine watch was cancelled: compaction took ids it still needed"),
    ("watch.kine.lagged", "a kine watcher fell too far behind the poller and was cancelled"),
    ("watch.kine.event_at_range_end", "a kine watch of a range saw a row exactly at its (exclusive) end"),
    ("watch.etcd.opened_at_compact_revision", "an etcd watch was served from exactly the compact revision"),
    ("watch.etcd.refused_at_compact_revision", "an etcd watch from the compact revision was refused: that revision's change is gone"),
    ("watch.etcd.cancelled_as_compacted", "an etcd watch was cancelled as compacted"),
    ("watch.etcd.event_at_range_end", "an etcd watch of a range met a change exactly at its (exclusive) end"),
    ("watch.progress.deferred", "a progress request waited: a watcher was behind or below its start revision"),
    ("watch.progress.deferred_below_start_revision", "a progress request waited because the store was below a watch's start revision"),
    ("watch.progress.overtaken_by_event", "a progress notification was withheld: an event above it had gone out"),
    ("watch.progress.shared", "a progress request arrived while one was pending and shares its answer"),
    ("watch.cancelled_by_client", "a client cancelled one of its watches"),
    // the etcd member: raft
    ("etcd.raft.pre_vote_refused", "a member refused a pre-vote"),
    ("etcd.raft.vote_refused", "a member refused a vote"),
    ("etcd.raft.check_quorum_step_down", "a leader stepped down on a tick: check-quorum found no active quorum"),
    ("etcd.raft.leader_deposed_by_message", "a leader stepped down on a message (a higher term)"),
    ("etcd.propose.no_leader", "a proposal was refused: no leader known"),
    ("etcd.publish.retried", "a starting member proposed its publish again: the first did not apply in time"),
    ("etcd.read_index.no_leader", "a ReadIndex was refused: no leader known"),
    ("etcd.read_index.before_leader_committed_in_term", "a leader was asked for a ReadIndex before it committed an entry of its term"),
    ("etcd.read_index.before_commit_in_term_seen", "a follower asked for a ReadIndex before it saw a commit of the current term"),
    ("etcd.read.waited_for_apply", "a linearizable read waited for the member to apply up to its read index"),
    // the etcd member: snapshots, log and restarts
    ("etcd.log.compacted_into_snapshot", "a member saved a snapshot and cut its log"),
    ("etcd.snapshot.sent", "a leader sent a snapshot to a follower"),
    ("etcd.snapshot.received", "a member received a snapshot"),
    ("etcd.snapshot.applied", "a member installed a snapshot"),
    ("etcd.snapshot.applied_after_compaction", "a member installed a snapshot of a compacted store"),
    ("etcd.restart.from_snapshot", "a member restarted from a snapshot on its disk"),
    ("etcd.restart.wal_torn_tail_cut", "a restart cut a torn tail off the WAL"),
    ("etcd.restart.wal_replayed_past_backend", "a restart replays WAL entries past the backend's consistent index"),
    ("etcd.restart.backend_ahead_of_wal_commit", "a restart found the backend applied past the WAL's commit index"),
    ("etcd.restart.resumes_compaction", "a restart found a compaction scheduled but not finished and resumes it"),
    ("etcd.compaction.crashed_before_finished", "a member crashed mid-compaction (crash point)"),
    // the etcd member: reads, transactions, membership
    ("etcd.range.compacted", "a read asked for a revision below the compact revision"),
    ("etcd.range.at_compact_revision", "a read at exactly the compact revision was served"),
    ("etcd.range.key_at_range_end", "a range read's end key exists in the store (excluded by the range)"),
    ("etcd.write.request_too_large", "a write was refused: its raft request exceeds --max-request-bytes"),
    ("etcd.txn.create_found_key_live", "a create's compare (mod revision 0) failed: the key is live"),
    ("etcd.txn.update_found_key_gone", "an update or delete's mod-revision compare failed: the key is gone"),
    ("etcd.txn.update_found_newer_revision", "an update or delete's mod-revision compare failed: the key was rewritten"),
    ("etcd.txn.version_compare_failed", "a version compare failed (the apiserver compactor lost compact_rev_key)"),
    ("etcd.membership.member_added", "a member addition applied"),
    ("etcd.membership.member_removed", "a member removal applied"),
    ("etcd.membership.applied_while_voter_cut_off", "a leader applied a membership change while a voter had neither answered lately nor received it"),
    // the apiserver facade
    ("api.list.consistent_read_from_store", "a LIST without a resourceVersion, read from the store at its latest revision"),
    ("api.list.at_resource_version_from_store", "a LIST at a given resourceVersion, read from the store at that revision"),
    ("api.list.any_resource_version", "a LIST at resourceVersion \"0\" (any), read from the store at its latest revision"),
    ("api.list.not_older_than", "a LIST with resourceVersionMatch=NotOlderThan, read from the store at its latest revision"),
    ("api.list.continue_expired_410", "a LIST continuation's revision was compacted: 410 Expired with an rv=-1 token"),
    ("api.list.continue_with_rv_minus_one", "a LIST continued with an rv=-1 token, at the latest revision"),
    ("api.list.continue_while_store_moved_on", "a LIST continuation read at its token's revision while the store had moved on"),
    ("api.write.already_exists", "a create found the object existing (409 AlreadyExists)"),
    ("api.write.conflict", "an update or delete carried a stale resourceVersion (409 Conflict)"),
    ("api.write.not_found", "an update or delete found the object gone (404)"),
    ("api.readyz.etcd_failed", "/readyz failed its etcd check"),
    ("api.readyz.watch_cache_not_synced", "/readyz failed: the watch cache has not synced"),
    ("api.watch.bookmark", "a watch stream sent a bookmark"),
    ("api.watch.expired_410", "a watch ended with 410 Expired: its start was compacted"),
    ("api.watch.refused_406", "a WatchList asked only for Table: refused with 406"),
    ("api.watch.refused_422", "a watch broke WatchList's parameter rules: refused with 422"),
    ("api.watch.etcd_stream_broken", "the apiserver's etcd watch stream broke; its endpoint is failed over"),
    ("api.watch.etcd_stream_stalled", "the apiserver's etcd watch stream answered no progress request in time"),
    ("api.watchlist.waited_for_watch_cache", "a WatchList waited for the watch cache to reach the required revision"),
    ("api.watchlist.initial_events_end_bookmark", "a WatchList sent its initial-events-end bookmark"),
    // k3s nodes
    ("k3s.lb.server_reachable_not_ready", "a health check reached a server whose apiserver was not ready"),
    ("k3s.lb.fail_over", "a load balancer moved its route from one server to another"),
    ("k3s.lb.fell_back_to_default", "a load balancer fell back to its default server: every other one failed"),
    ("k3s.lb.fail_back_from_default", "a load balancer left its default server and closed its connections (fail-back)"),
    ("k3s.lb.no_server_passes", "no server a load balancer knows passed its health check"),
    ("k3s.lb.server_list_updated", "a load balancer's server list changed"),
    ("k3s.lb.server_removed", "a load balancer dropped a server that left"),
    ("k3s.join.through_other_than_join_target", "a node (re)joined through a server other than its join target"),
    ("k3s.join.rejoin_with_join_target_down", "a rejoining node could not reach its join target and tried servers it knew"),
    ("k3s.join.retried", "a join found no server to answer and retries"),
    ("k3s.servers.list_updated", "a node's server lists changed as servers joined or left"),
    ("k3s.servers.list_updated_without_member", "a node without an etcd member learned new server lists from a server"),
    ("k3s.supervisor.join_refused_not_caught_up", "a supervisor refused a join: its member had not caught up"),
    ("k3s.supervisor.member_add_failed", "a supervisor's member addition for a joining node failed"),
    ("k3s.supervisor.member_remove_failed", "a supervisor's member removal failed"),
    ("k3s.kubelet.apiserver_not_ready", "a kubelet's /readyz wait got a not-ready answer"),
    ("k3s.kubelet.readyz_wait_gave_up", "a kubelet waited too long for /readyz and started waiting afresh (k3s restart)"),
];

/// Probes no simulated scenario can reach, for a structural reason, each with why and the store
/// test that reaches it: (name, reason). madsim's connections and madsim-tonic's server streams
/// are unbounded queues, so a client that stops reading never pushes back on the server (no
/// HTTP/2 flow control). `--require-probes` does not require these; the coverage table lists
/// them apart.
pub const SCENARIO_UNREACHABLE: &[(&str, &str)] = &[(
    "watch.kine.lagged",
    "needs a watch stream that pushes back on a slow reader (simulated streams never do); \
         kine::watch_tests::a_watcher_whose_consumer_stops_reading_is_cancelled_as_lagging",
)];

/// Whether `name` is in [`SCENARIO_UNREACHABLE`].
pub fn scenario_unreachable(name: &str) -> Option<&'static str> {
    SCENARIO_UNREACHABLE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

/// The index of `name` in [`PROBES`]; evaluated at compile time by `probe!`, where a name not
/// declared stops the build.
pub const fn index(name: &str) -> usize {
    let mut i = 0;
    while i < PROBES.len() {
        if same(PROBES[i].0, name) {
            return i;
        }
        i += 1;
    }
    panic!("probe! names a probe not declared in src/probe.rs PROBES")
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Each name declared once: a second entry would never be counted.
const _: () = {
    let mut i = 0;
    while i < PROBES.len() {
        assert!(
            index(PROBES[i].0) == i,
            "a probe is declared twice in PROBES"
        );
        i += 1;
    }
};

static HITS: [AtomicU64; PROBES.len()] = [const { AtomicU64::new(0) }; PROBES.len()];

/// Counts one hit of the probe at `index` (called by `probe!`).
#[inline(always)]
pub fn hit(index: usize) {
    HITS[index].fetch_add(1, Ordering::Relaxed);
}

/// Every declared probe with its hits in this process since the last [`reset`], in table
/// order. Read only outside a simulation, after it ended.
pub fn hits() -> Vec<(&'static str, u64)> {
    PROBES
        .iter()
        .zip(&HITS)
        .map(|((name, _), n)| (*name, n.load(Ordering::Relaxed)))
        .collect()
}

/// The hits of one declared probe in this process (tests compare it before and after).
pub fn hits_of(name: &str) -> u64 {
    HITS[index(name)].load(Ordering::Relaxed)
}

/// Zeroes every counter (before a run, so its counts are its own).
pub fn reset() {
    for n in &HITS {
        n.store(0, Ordering::Relaxed);
    }
}

/// Marks a code probe: `probe!("kine.poll.gap_filled")`. The name must be declared in
/// [`PROBES`] (checked at compile time). Counts a hit in the simulator build, unless it was built
/// with `--cfg faultline_no_probes` (the baseline `make bench-probes` measures probes against).
#[cfg(all(madsim, not(faultline_no_probes)))]
#[macro_export]
macro_rules! probe {
    ($name:literal) => {{
        const INDEX: usize = $crate::probe::index($name);
        $crate::probe::hit(INDEX);
    }};
}

/// Marks a code probe; outside the simulator (or with probes compiled out) only the name is
/// checked, at compile time, and nothing runs.
#[cfg(any(not(madsim), faultline_no_probes))]
#[macro_export]
macro_rules! probe {
    ($name:literal) => {{
        const _: usize = $crate::probe::index($name);
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_their_entries_and_have_meanings() {
        for (i, (name, meaning)) in PROBES.iter().enumerate() {
            assert_eq!(index(name), i);
            assert!(!meaning.is_empty(), "{name} has no meaning");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'.'
                    || b == b'_'),
                "{name}: names are lowercase dotted words"
            );
        }
    }

    #[test]
    fn every_scenario_unreachable_probe_is_declared_once_with_a_reason() {
        for (i, (name, why)) in SCENARIO_UNREACHABLE.iter().enumerate() {
            assert!(
                PROBES.iter().any(|(p, _)| p == name),
                "{name} is not declared in PROBES"
            );
            assert!(!why.is_empty(), "{name} has no reason");
            assert!(
                SCENARIO_UNREACHABLE[..i].iter().all(|(n, _)| n != name),
                "{name} is listed twice"
            );
            assert_eq!(scenario_unreachable(name), Some(*why));
        }
        assert_eq!(scenario_unreachable("watch.cancelled_by_client"), None);
    }

    #[cfg(all(madsim, not(faultline_no_probes)))]
    #[test]
    fn a_mark_counts_its_probe() {
        // Other tests in this process hit probes too; compare before and after.
        let before = hits();
        crate::probe!("watch.cancelled_by_client");
        crate::probe!("watch.cancelled_by_client");
        let after = hits();
        let i = index("watch.cancelled_by_client");
        assert!(after[i].1 >= before[i].1 + 2);
    }
}
