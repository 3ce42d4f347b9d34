//! lease: the lease clients' leases against etcd 3.4's lease rules, from what clients saw.
//!
//! (a) A leased key is never deleted by expiry before the TTL has passed since the sending of the
//! lease's last successful grant or keep-alive. (b) A revoke or expiry deletes every attached
//! key, together: nothing of a lease is readable once it is known gone, no read sees part of its
//! keys, and (etcd topology) every key goes at one revision. (c) Once faults stop, a lease nobody
//! keeps alive is gone within its TTL plus `EXPIRY_SLACK_NS`. Server-chosen IDs are unique among
//! live leases. Deletions are seen by the watchers' events and by reads (the lease clients' own
//! and the final audit); the check reads only the history.

use super::{secs, CheckReport, Checker, Violations};
use crate::history::{
    History, LeaseOperation, LeaseOutcome, LeaseRequest, LeaseResult, OpResult, Outcome, SimNanos,
};
use std::collections::{BTreeMap, BTreeSet};

pub struct LeaseCheck;

/// How long past its TTL a lease nobody keeps alive may live once faults have stopped, counted
/// from the later of its last renewal's answer and the end of faults: a leader elected after the
/// heal renews every lease by its TTL plus an election timeout (etcd), the expiry scan runs every
/// 500 ms, the revoke goes through consensus or the database, and a renewal whose answer was
/// lost may reach a server that was busy for up to a request deadline.
pub const EXPIRY_SLACK_NS: SimNanos = 15_000_000_000;

const S: SimNanos = 1_000_000_000;

/// One granted lease, from its grant to the last request naming it.
struct Life<'a> {
    grant: &'a LeaseOperation,
    id: i64,
    /// The largest TTL any answer gave it.
    ttl_s: i64,
    /// Successful renewals (the grant, keep-alives answered with a TTL), in invoke order.
    renewals: Vec<&'a LeaseOperation>,
    /// The latest completion of a grant or keep-alive the server may have acted on.
    last_contact_ns: SimNanos,
    /// Keys attached by a Put that succeeded, with its op.
    keys: BTreeMap<&'a str, &'a LeaseOperation>,
    /// Keys whose attaching Put had no known outcome.
    maybe_keys: BTreeSet<&'a str>,
    /// Revokes that may have taken effect.
    revokes: Vec<&'a LeaseOperation>,
    /// The earliest answer showing the lease gone: a revoke that succeeded, a keep-alive
    /// answered TTL 0, a TimeToLive answered -1.
    gone: Option<&'a LeaseOperation>,
    /// Probes of this lease: its own reads, TimeToLive, and LeaseLeases answers (all clients').
    probes: Vec<&'a LeaseOperation>,
}

impl Life<'_> {
    /// When the lease is at the earliest allowed to expire, judged at `at`: the latest
    /// (send + TTL) over successful renewals sent before `at`, with the renewal that gave it.
    fn expiry_floor(&self, at: SimNanos) -> Option<(SimNanos, &LeaseOperation)> {
        self.renewals
            .iter()
            .filter(|r| r.invoke_ns < at)
            .map(|r| (r.invoke_ns + renewed_ttl(r).max(0) as u64 * S, *r))
            .max_by_key(|(t, _)| *t)
    }

    /// The latest time by which it must be gone once nobody keeps it alive.
    fn bound_ns(&self, faults_stop_ns: SimNanos) -> SimNanos {
        self.last_contact_ns.max(faults_stop_ns) + self.ttl_s.max(0) as u64 * S + EXPIRY_SLACK_NS
    }

    fn describe(&self) -> String {
        format!(
            "lease {} (granted to {} by op#{} at {}, TTL {}s)",
            self.id,
            self.grant.client,
            self.grant.id,
            secs(self.grant.invoke_ns),
            self.ttl_s
        )
    }
}

/// The TTL a successful grant or keep-alive answered.
fn renewed_ttl(op: &LeaseOperation) -> i64 {
    match op.result() {
        Some(LeaseResult::Granted { ttl_s, .. }) | Some(LeaseResult::KeptAlive { ttl_s }) => *ttl_s,
        _ => 0,
    }
}

fn kind(op: &LeaseOperation) -> &'static str {
    match op.request {
        LeaseRequest::Grant { .. } => "grant",
        LeaseRequest::KeepAlive { .. } => "keep-alive",
        LeaseRequest::Revoke { .. } => "revoke",
        LeaseRequest::TimeToLive { .. } => "time-to-live",
        LeaseRequest::Leases => "leases",
        LeaseRequest::Attach { .. } => "attach",
        LeaseRequest::Read { .. } => "read",
    }
}

/// Builds every granted lease from the lease operations. A request belongs to the lease its
/// client numbered it with (`life`); a LeaseLeases answer to the latest lease granted under
/// each ID it lists. Also reports IDs handed out twice while the first lease was surely alive.
fn lives<'a>(h: &'a History, out: &mut Violations) -> Vec<Life<'a>> {
    let mut lives: Vec<Life<'a>> = Vec::new();
    let mut by_life: BTreeMap<(&str, u64), usize> = BTreeMap::new();
    let mut by_id: BTreeMap<i64, usize> = BTreeMap::new();
    for op in &h.leases {
        if let Some(LeaseResult::Granted { lease, ttl_s }) = op.result() {
            if let Some(&i) = by_id.get(lease) {
                let earlier: &Life = &lives[i];
                let floor = earlier.expiry_floor(op.invoke_ns).map(|(t, _)| t);
                let revoked = earlier.gone.is_some_and(|g| g.complete_ns < op.invoke_ns);
                if floor.is_some_and(|t| op.invoke_ns < t) && !revoked {
                    out.fire(op.complete_ns, || {
                        format!(
                            "op#{} (grant by {}, sent at {}) was given lease ID {lease}, which {} still held until at least {}: a server-chosen lease ID must be unique among live leases",
                            op.id,
                            op.client,
                            secs(op.invoke_ns),
                            earlier.describe(),
                            secs(floor.unwrap_or(0))
                        )
                    });
                }
            }
            by_id.insert(*lease, lives.len());
            by_life.insert((op.client.as_str(), op.life), lives.len());
            lives.push(Life {
                grant: op,
                id: *lease,
                ttl_s: *ttl_s,
                renewals: vec![op],
                last_contact_ns: op.complete_ns,
                keys: BTreeMap::new(),
                maybe_keys: BTreeSet::new(),
                revokes: vec![],
                gone: None,
                probes: vec![],
            });
            continue;
        }
        if let (LeaseRequest::Leases, Some(LeaseResult::Leases { ids })) =
            (&op.request, op.result())
        {
            for id in ids {
                if let Some(&i) = by_id.get(id) {
                    lives[i].probes.push(op);
                }
            }
            continue;
        }
        if op.request.lease().is_none() {
            continue;
        }
        let Some(&i) = by_life.get(&(op.client.as_str(), op.life)) else {
            continue;
        };
        let life = &mut lives[i];
        let refused = matches!(op.outcome, LeaseOutcome::Failed { .. });
        match (&op.request, op.result()) {
            (LeaseRequest::KeepAlive { .. }, result) => {
                if !refused {
                    life.last_contact_ns = life.last_contact_ns.max(op.complete_ns);
                }
                match result {
                    Some(LeaseResult::KeptAlive { ttl_s }) if *ttl_s > 0 => {
                        life.ttl_s = life.ttl_s.max(*ttl_s);
                        life.renewals.push(op);
                    }
                    Some(LeaseResult::KeptAlive { .. }) => {
                        life.gone.get_or_insert(op);
                    }
                    _ => {}
                }
            }
            (LeaseRequest::Attach { key, .. }, Some(_)) => {
                life.keys.insert(key.as_str(), op);
            }
            (LeaseRequest::Attach { key, .. }, None) if !refused => {
                life.maybe_keys.insert(key.as_str());
            }
            (LeaseRequest::Revoke { .. }, result) => {
                if !refused {
                    life.revokes.push(op);
                }
                if result.is_some() {
                    life.gone.get_or_insert(op);
                }
            }
            (LeaseRequest::TimeToLive { .. }, Some(LeaseResult::TimeToLive { ttl_s, .. })) => {
                if *ttl_s < 0 {
                    life.gone.get_or_insert(op);
                }
                life.probes.push(op);
            }
            (LeaseRequest::Read { .. }, Some(_)) => life.probes.push(op),
            _ => {}
        }
    }
    lives
}

/// A read that shows which of a lease's keys exist at one moment.
struct Sighting<'a> {
    /// `op#N (read by client-K)`.
    what: String,
    invoke_ns: SimNanos,
    complete_ns: SimNanos,
    header_revision: i64,
    /// Keys present, with their mod revisions.
    present: BTreeMap<&'a str, i64>,
}

/// Every read of `life`'s keys: its client's own reads of the lease's range, and the final audit.
fn sightings<'a>(h: &'a History, life: &Life<'a>) -> Vec<Sighting<'a>> {
    let mut out = Vec::new();
    for &op in &life.probes {
        if let (
            LeaseRequest::Read { .. },
            LeaseOutcome::Ok {
                header_revision,
                result: LeaseResult::Read { kvs },
            },
        ) = (&op.request, &op.outcome)
        {
            out.push(Sighting {
                what: format!("op#{} (read by {})", op.id, op.client),
                invoke_ns: op.invoke_ns,
                complete_ns: op.complete_ns,
                header_revision: *header_revision,
                present: kvs
                    .iter()
                    .map(|kv| (kv.key.as_str(), kv.mod_revision))
                    .collect(),
            });
        }
    }
    if let Some(read) = h.final_read() {
        if let Outcome::Ok {
            header_revision,
            result: OpResult::Read { kvs, .. },
        } = &read.outcome
        {
            let mine = |k: &str| life.keys.contains_key(k) || life.maybe_keys.contains(k);
            out.push(Sighting {
                what: format!("op#{} (the final audit read)", read.id),
                invoke_ns: read.invoke_ns,
                complete_ns: read.complete_ns,
                header_revision: *header_revision,
                present: kvs
                    .iter()
                    .filter(|kv| mine(&kv.key))
                    .map(|kv| (kv.key.as_str(), kv.mod_revision))
                    .collect(),
            });
        }
    }
    out
}

/// Delete events the watchers received, by key: (time, revision, `watch#N of watcher-K`).
type WatchDeletes<'a> = BTreeMap<&'a str, Vec<(SimNanos, i64, String)>>;

fn watch_deletes(h: &History) -> WatchDeletes<'_> {
    let mut out: WatchDeletes = BTreeMap::new();
    for w in &h.watches {
        for e in w.events.iter().filter(|e| e.deleted) {
            let what = format!("watch#{} of {} (delete event)", w.id, w.client);
            out.entry(e.key.as_str())
                .or_default()
                .push((e.at_ns, e.mod_revision, what));
        }
    }
    out
}

/// The watchers' first delete event of each of `life`'s keys after it was attached.
fn watched<'a>(
    life: &Life<'a>,
    deletes: &WatchDeletes,
) -> BTreeMap<&'a str, (SimNanos, i64, String)> {
    let mut first: BTreeMap<&str, (SimNanos, i64, String)> = BTreeMap::new();
    for (key, attach) in &life.keys {
        let after = attach.revision().unwrap_or(0);
        let seen = deletes.get(key).into_iter().flatten();
        if let Some(d) = seen
            .filter(|(_, rev, _)| *rev > after)
            .min_by_key(|(at, _, _)| *at)
        {
            first.insert(*key, d.clone());
        }
    }
    first
}

/// The first time each of `life`'s keys was seen deleted or gone: (time, revision, by what).
fn deletions<'a>(
    life: &Life<'a>,
    watched: &BTreeMap<&'a str, (SimNanos, i64, String)>,
    seen: &[Sighting<'a>],
) -> BTreeMap<&'a str, (SimNanos, i64, String)> {
    let mut first = watched.clone();
    for s in seen {
        for (key, attach) in &life.keys {
            if s.invoke_ns > attach.complete_ns
                && !s.present.contains_key(key)
                && first.get(key).is_none_or(|(t, _, _)| s.complete_ns < *t)
            {
                first.insert(*key, (s.complete_ns, s.header_revision, s.what.clone()));
            }
        }
    }
    first
}

impl Checker for LeaseCheck {
    fn name(&self) -> &'static str {
        "lease"
    }

    fn meaning(&self) -> &'static str {
        "no leased key is deleted by expiry before its TTL has passed since the sending of the lease's last successful grant or keep-alive; a revoke or expiry deletes every attached key, together; once faults stop, a lease nobody keeps alive is gone within its TTL + 15 s; server-chosen lease IDs are unique among live leases"
    }

    fn check(&self, h: &History) -> CheckReport {
        if h.leases.is_empty() {
            return CheckReport::not_applicable(self.name(), "the run had no lease clients");
        }
        let mut out = Violations::new();
        let lives = lives(h, &mut out);
        let deletes = watch_deletes(h);
        let mut deleted = 0u64;
        let mut lapsed = 0u64;
        for life in &lives {
            let seen = sightings(h, life);
            let watch_seen = watched(life, &deletes);
            let first = deletions(life, &watch_seen, &seen);
            deleted += first.len() as u64;
            premature(life, &first, &mut out);
            together(h, life, &watch_seen, &seen, &mut out);
            if outlived(life, &seen, h.params.faults_stop_ns, &mut out) {
                lapsed += 1;
            }
        }
        let revoked = lives.iter().filter(|l| !l.revokes.is_empty()).count() as u64;
        CheckReport::judged(
            self.name(),
            out,
            vec![
                ("leases", lives.len() as u64),
                ("key deletions seen", deleted),
                ("revoked leases", revoked),
                ("leases judged gone after faults", lapsed),
            ],
            "no lease was granted",
        )
    }
}

/// (a): a deletion no revoke explains, seen before the lease could have expired; or the
/// server saying the lease is gone (keep-alive TTL 0, TimeToLive -1) that early.
fn premature(life: &Life, first: &BTreeMap<&str, (SimNanos, i64, String)>, out: &mut Violations) {
    if let Some(gone) = life
        .gone
        .filter(|g| !matches!(g.request, LeaseRequest::Revoke { .. }))
    {
        let at = gone.complete_ns;
        let floor = life.expiry_floor(at);
        let revoked = life.revokes.iter().any(|r| r.invoke_ns < at);
        if let Some((floor, renewal)) = floor.filter(|(f, _)| at < *f && !revoked) {
            out.fire(at, || {
                format!(
                    "{} expired before its TTL: op#{} ({} by {}, sent at {}) was answered at {} that the lease is gone, yet op#{} ({} by {}, sent at {}, answered TTL {}s) kept it until {}; no revoke of lease {} had been sent",
                    life.describe(),
                    gone.id,
                    kind(gone),
                    gone.client,
                    secs(gone.invoke_ns),
                    secs(at),
                    renewal.id,
                    kind(renewal),
                    renewal.client,
                    secs(renewal.invoke_ns),
                    renewed_ttl(renewal),
                    secs(floor),
                    life.id
                )
            });
        }
    }
    for (key, (at, rev, what)) in first {
        if life.revokes.iter().any(|r| r.invoke_ns < *at) {
            continue;
        }
        let Some((floor, renewal)) = life.expiry_floor(*at) else {
            continue;
        };
        if *at < floor {
            out.fire(*at, || {
                format!(
                    "key {key} (attached at revision {}) of {} was deleted by expiry before its TTL: {what} saw it gone at {} (revision {rev}), yet op#{} ({} by {}, sent at {}, answered TTL {}s) kept the lease until {}; no revoke of lease {} had been sent",
                    life.keys[key].revision().unwrap_or(0),
                    life.describe(),
                    secs(*at),
                    renewal.id,
                    kind(renewal),
                    renewal.client,
                    secs(renewal.invoke_ns),
                    renewed_ttl(renewal),
                    secs(floor),
                    life.id
                )
            });
        }
    }
}

/// (b): nothing of a lease known gone is readable; no read sees part of its keys; on the etcd
/// topology every key goes at one revision (kine's log gives each deleted row its own).
fn together(
    h: &History,
    life: &Life,
    watched: &BTreeMap<&str, (SimNanos, i64, String)>,
    seen: &[Sighting],
    out: &mut Violations,
) {
    if let Some(gone) = life.gone {
        for s in seen.iter().filter(|s| s.invoke_ns > gone.complete_ns) {
            if let Some((key, rev)) = s.present.iter().next() {
                out.fire(s.invoke_ns, || {
                    format!(
                        "{} was gone (op#{} {} by {} answered {} at {}, revision {}), yet {} sent at {} still read its key {key} (mod revision {rev}, header revision {}): a revoke or expiry deletes every attached key",
                        life.describe(),
                        gone.id,
                        kind(gone),
                        gone.client,
                        match gone.result() {
                            Some(LeaseResult::KeptAlive { .. }) => "TTL 0",
                            Some(LeaseResult::TimeToLive { .. }) => "TTL -1",
                            _ => "ok",
                        },
                        secs(gone.complete_ns),
                        gone.revision().unwrap_or(0),
                        s.what,
                        secs(s.invoke_ns),
                        s.header_revision
                    )
                });
            }
        }
    }
    let attached_by = life.keys.values().map(|a| a.complete_ns).max().unwrap_or(0);
    for s in seen.iter().filter(|s| s.invoke_ns > attached_by) {
        let missing = life.keys.keys().find(|k| !s.present.contains_key(*k));
        let kept = life.keys.keys().find(|k| s.present.contains_key(*k));
        if let (Some(missing), Some(kept)) = (missing, kept) {
            out.fire(s.invoke_ns, || {
                format!(
                    "{} sent at {} saw part of {}'s keys (header revision {}): {kept} present at mod revision {}, {missing} gone: a revoke or expiry deletes every attached key in one write",
                    s.what,
                    secs(s.invoke_ns),
                    life.describe(),
                    s.header_revision,
                    s.present[kept]
                )
            });
        }
    }
    if h.params.topology != "etcd" {
        return;
    }
    let watched: Vec<(&&str, &(SimNanos, i64, String))> = watched.iter().collect();
    if let [(k1, (_, r1, w1)), rest @ ..] = watched.as_slice() {
        if let Some((k2, (at, r2, w2))) = rest.iter().find(|(_, (_, r, _))| r != r1) {
            out.fire(*at, || {
                format!(
                    "the keys of {} were deleted at different revisions: {k1} at {r1} ({w1}), {k2} at {r2} ({w2}): a revoke or expiry deletes every attached key in one write",
                    life.describe()
                )
            });
        }
    }
}

/// (c): past its bound after faults stopped, a lease must be gone. Returns whether anything
/// sent after the bound judged it.
fn outlived(
    life: &Life,
    seen: &[Sighting],
    faults_stop_ns: SimNanos,
    out: &mut Violations,
) -> bool {
    let bound = life.bound_ns(faults_stop_ns);
    let bound_text = || {
        format!(
            "its bound {} (TTL {}s + {}s after the later of its last renewal's answer at {} and the end of faults at {})",
            secs(bound),
            life.ttl_s,
            EXPIRY_SLACK_NS / S,
            secs(life.last_contact_ns),
            secs(faults_stop_ns)
        )
    };
    let mut judged = false;
    for s in seen.iter().filter(|s| s.invoke_ns >= bound) {
        judged = true;
        if let Some((key, rev)) = s.present.iter().next() {
            out.fire(s.invoke_ns, || {
                format!(
                    "{} outlived {}: {} sent at {} still read its key {key} (mod revision {rev}, header revision {})",
                    life.describe(),
                    bound_text(),
                    s.what,
                    secs(s.invoke_ns),
                    s.header_revision
                )
            });
        }
    }
    for p in life.probes.iter().filter(|p| p.invoke_ns >= bound) {
        let alive = match p.result() {
            Some(LeaseResult::TimeToLive { ttl_s, .. }) => {
                judged = true;
                (*ttl_s > 0).then(|| format!("answered TTL {ttl_s}s"))
            }
            Some(LeaseResult::Leases { .. }) => {
                judged = true;
                Some(format!("listed lease {}", life.id))
            }
            _ => None,
        };
        if let Some(alive) = alive {
            out.fire(p.invoke_ns, || {
                format!(
                    "{} outlived {}: op#{} ({} by {}, sent at {}) {alive}",
                    life.describe(),
                    bound_text(),
                    p.id,
                    kind(p),
                    p.client,
                    secs(p.invoke_ns)
                )
            });
        }
    }
    judged
}

#[cfg(test)]
mod tests;
