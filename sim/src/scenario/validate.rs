//! Semantic checks of a parsed scenario that serde cannot express: ranges, probabilities,
//! topology sizes, allowed names and design selections.
//!
//! Each problem is returned as (dotted field, what is wrong and what is allowed), so the loader
//! can put the line of that field in front of it.

use super::Scenario;
use super::TopologyKind;

type Problem = (String, String);

fn check(ok: bool, field: &str, message: impl Into<String>) -> Result<(), Problem> {
    if ok {
        Ok(())
    } else {
        Err((field.to_string(), message.into()))
    }
}

fn range_ok(field: &str, r: [u64; 2]) -> Result<(), Problem> {
    check(
        r[0] <= r[1],
        field,
        format!(
            "range [{}, {}] has its minimum above its maximum",
            r[0], r[1]
        ),
    )
}

fn probability(field: &str, p: f64) -> Result<(), Problem> {
    check(
        (0.0..=1.0).contains(&p),
        field,
        format!("{p} is not a probability between 0 and 1"),
    )
}

fn subset(field: &str, values: &[String], allowed: &[&str]) -> Result<(), Problem> {
    for v in values {
        check(
            allowed.contains(&v.as_str()),
            field,
            format!("unknown value `{v}`; allowed: {}", allowed.join(", ")),
        )?;
    }
    Ok(())
}

/// The lease clients' settings, checked only when the run has lease clients.
fn lease_settings(w: &super::Workload) -> Result<(), Problem> {
    check(
        !w.lease_ttls_s.is_empty(),
        "workload.lease_ttls_s",
        "name at least one TTL for the lease clients to draw from",
    )?;
    for ttl in &w.lease_ttls_s {
        check(
            (1..=3600).contains(ttl),
            "workload.lease_ttls_s",
            format!("TTL {ttl} is not between 1 and 3600 seconds"),
        )?;
    }
    check(
        (1..=10).contains(&w.lease_keys),
        "workload.lease_keys",
        format!("{} keys per lease; allowed: 1 to 10", w.lease_keys),
    )?;
    // The lease clients' keys live under these resources: the workload's own must not.
    for r in &w.resources {
        check(
            r != "events" && r != "leases",
            "workload.resources",
            format!("`{r}` holds the lease clients' keys (workload.lease_clients > 0); the workload needs resources of its own"),
        )?;
    }
    Ok(())
}

/// Range and consistency checks serde cannot express. Returns the dotted field and the problem.
pub(super) fn validate(s: &Scenario) -> Result<(), Problem> {
    check(!s.name.trim().is_empty(), "name", "must not be empty")?;
    check(
        s.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "name",
        "only letters, digits, '-' and '_' (it names a results folder)",
    )?;
    check(s.duration_s > 0, "duration_s", "must be at least 1 second")?;
    let t = &s.topology;
    match t.kind {
        TopologyKind::Single => check(
            t.servers == 1,
            "topology.servers",
            "a single topology has exactly 1 server",
        )?,
        TopologyKind::Ha => check(
            (1..=5).contains(&t.servers),
            "topology.servers",
            "an ha topology has 1 to 5 servers",
        )?,
        TopologyKind::Etcd => {
            check(
                (1..=7).contains(&(t.servers + t.etcd_only)),
                "topology.servers",
                "an etcd topology has 1 to 7 etcd members (servers plus etcd_only)",
            )?;
            if let Some(j) = &t.join {
                let ok = (j
                    .strip_prefix("server-")
                    .and_then(|n| n.parse::<u32>().ok()))
                .is_some_and(|n| (1..=t.servers).contains(&n))
                    || (j.strip_prefix("etcd-").and_then(|n| n.parse::<u32>().ok()))
                        .is_some_and(|n| (1..=t.etcd_only).contains(&n));
                check(
                    ok,
                    "topology.join",
                    format!(
                        "`{j}` is not one of this topology's etcd servers (server-N or etcd-N)"
                    ),
                )?;
            }
        }
    }
    check(
        t.kind == TopologyKind::Etcd
            || (t.etcd_only == 0 && t.control_plane_only == 0 && t.agents == 0 && t.join.is_none()),
        "topology.kind",
        "etcd_only, control_plane_only, agents and join need kind = \"etcd\"",
    )?;
    check(
        (0.0..=1.0).contains(&s.etcd.torn_write_probability),
        "etcd.torn_write_probability",
        "a probability, 0 to 1",
    )?;
    check(
        (0.0..=1.0).contains(&s.etcd.compaction_crash_probability),
        "etcd.compaction_crash_probability",
        "a probability, 0 to 1",
    )?;
    check(
        ["apiserver", "latest"].contains(&s.etcd.compact_mode.as_str()),
        "etcd.compact_mode",
        format!(
            "unknown compaction mode `{}`; allowed: apiserver, latest",
            s.etcd.compact_mode
        ),
    )?;
    check(
        s.etcd.snapshot_entries >= 10,
        "etcd.snapshot_entries",
        "at least 10 entries",
    )?;
    check(t.clients >= 1, "topology.clients", "at least 1 client")?;
    check(
        ["sqlite", "mysql-like"].contains(&s.database.dialect.as_str()),
        "database.dialect",
        format!(
            "unknown dialect `{}`; allowed: sqlite, mysql-like",
            s.database.dialect
        ),
    )?;
    range_ok("database.latency_ms", s.database.latency_ms)?;
    check(
        s.database.slow_commit_pct <= 100,
        "database.slow_commit_pct",
        "a percentage from 0 to 100",
    )?;
    range_ok("database.slow_commit_ms", s.database.slow_commit_ms)?;
    let c = &s.controllers;
    check(c.count <= 20, "controllers.count", "at most 20 controllers")?;
    check(
        c.count == 0 || t.kind != TopologyKind::Etcd || t.servers + t.control_plane_only > 0,
        "controllers.count",
        "controllers need an apiserver: an etcd topology with servers or control_plane_only nodes",
    )?;
    check(
        c.writes_per_s.is_finite() && c.writes_per_s >= 0.0,
        "controllers.writes_per_s",
        "a finite rate, 0 or more",
    )?;
    check(c.list_limit >= 1, "controllers.list_limit", "at least 1")?;
    range_ok("controllers.page_pause_s", c.page_pause_s)?;
    check(
        !c.conformance || c.seed_objects as i64 > c.list_limit,
        "controllers.seed_objects",
        "the conformance flow needs more seeded objects than one page holds",
    )?;
    check(
        !c.conformance || c.conformance_retry_s >= 1,
        "controllers.conformance_retry_s",
        "at least 1 second",
    )?;
    check(
        c.request_timeout_ms >= 1,
        "controllers.request_timeout_ms",
        "at least 1 ms",
    )?;
    range_ok("network.latency_ms", s.network.latency_ms)?;
    let k = &s.kine;
    check(
        k.compact_interval_jitter_pct <= 100,
        "kine.compact_interval_jitter_pct",
        "a percentage from 0 to 100",
    )?;
    check(
        k.compact_min_retain >= 0,
        "kine.compact_min_retain",
        "must not be negative",
    )?;
    check(
        k.compact_batch_revisions >= store::kine::compactor::MIN_BATCH_REVISIONS,
        "kine.compact_batch_revisions",
        format!(
            "kine's minimum is {}",
            store::kine::compactor::MIN_BATCH_REVISIONS
        ),
    )?;
    check(
        k.compact_timeout_ms > 0,
        "kine.compact_timeout_ms",
        "must be positive",
    )?;
    check(
        k.db_call_timeout_ms > 0,
        "kine.db_call_timeout_ms",
        "must be positive",
    )?;
    let w = &s.workload;
    check(
        !w.resources.is_empty(),
        "workload.resources",
        "name at least one resource",
    )?;
    // Checkers model the workload's resources from its recorded operations alone, so nobody
    // else may write there: controllers write their own resource, kubelets and lease-renewing
    // controllers write `leases`.
    let leases_taken = t.kind == TopologyKind::Etcd
        || (s.controllers.count > 0 && s.controllers.lease_every_s > 0);
    for r in &w.resources {
        check(
            s.controllers.count == 0 || *r != s.controllers.resource,
            "workload.resources",
            format!("`{r}` is the controllers' resource; the workload needs resources of its own"),
        )?;
        check(
            !(leases_taken && r == "leases"),
            "workload.resources",
            "`leases` is written by kubelets or lease-renewing controllers in this scenario; the workload needs resources of its own",
        )?;
    }
    check(
        w.namespaces >= 1 && w.names >= 1,
        "workload.names",
        "at least one namespace and one name",
    )?;
    check(
        w.ops_per_s > 0.0 && w.ops_per_s.is_finite(),
        "workload.ops_per_s",
        "must be positive and finite",
    )?;
    check(
        w.list_limit >= 1,
        "workload.list_limit",
        "must be at least 1",
    )?;
    check(
        w.request_timeout_ms > 0,
        "workload.request_timeout_ms",
        "must be positive",
    )?;
    let weights = w.mix.weights();
    for (kind, weight) in weights {
        check(
            weight >= 0.0 && weight.is_finite(),
            &format!("workload.mix.{kind}"),
            format!("{weight} is not a weight; weights are finite and not negative"),
        )?;
    }
    check(
        weights.iter().map(|(_, w)| w).sum::<f64>() > 0.0,
        "workload.mix",
        "at least one weight must be positive",
    )?;
    check(
        w.pinned_clients <= t.clients,
        "workload.pinned_clients",
        format!("at most the {} clients of [topology]", t.clients),
    )?;
    for (kind, weight) in [
        ("serializable_get", w.mix.serializable_get),
        ("serializable_list", w.mix.serializable_list),
    ] {
        check(
            weight == 0.0 || w.pinned_clients > 0,
            &format!("workload.mix.{kind}"),
            "serializable reads are sent by pinned clients only (a client that moves to another server may see an older state there); set workload.pinned_clients",
        )?;
    }
    if w.lease_clients > 0 {
        lease_settings(w)?;
    }
    for (field, p) in [
        ("workload.edge_keys", w.edge_keys),
        ("workload.edge_reads", w.edge_reads),
        ("workload.empty_values", w.empty_values),
        ("workload.large_values", w.large_values),
        ("workload.compacted_starts", w.compacted_starts),
        ("workload.future_starts", w.future_starts),
    ] {
        probability(field, p)?;
    }
    let f = &s.faults;
    check(
        f.partitions_per_min >= 0.0 && f.partitions_per_min.is_finite(),
        "faults.partitions_per_min",
        "must be finite and not negative",
    )?;
    check(
        f.kills_per_min >= 0.0 && f.kills_per_min.is_finite(),
        "faults.kills_per_min",
        "must be finite and not negative",
    )?;
    range_ok("faults.partition_duration_s", f.partition_duration_s)?;
    range_ok("faults.kill_downtime_s", f.kill_downtime_s)?;
    probability("faults.one_way_probability", f.one_way_probability)?;
    probability(
        "faults.compact_failure_probability",
        f.compact_failure_probability,
    )?;
    subset(
        "faults.partition_kinds",
        &f.partition_kinds,
        &[
            "server-database",
            "client-server",
            "server-server",
            "isolate-node",
            "isolate-control-plane",
            "minority",
        ],
    )?;
    subset(
        "faults.kill_roles",
        &f.kill_roles,
        &[
            "server",
            "database",
            "client",
            "all-control-plane",
            "join-target",
        ],
    )?;
    check(
        f.membership_changes_per_min >= 0.0 && f.membership_changes_per_min.is_finite(),
        "faults.membership_changes_per_min",
        "must be finite and not negative",
    )?;
    subset(
        "faults.membership_kinds",
        &f.membership_kinds,
        crate::faults::membership::KINDS,
    )?;
    if f.membership_changes_per_min > 0.0 {
        check(
            t.kind == TopologyKind::Etcd,
            "faults.membership_changes_per_min",
            "server membership changes need kind = \"etcd\" (k3s servers on embedded etcd)",
        )?;
        check(
            !f.membership_kinds.is_empty(),
            "faults.membership_kinds",
            format!(
                "name at least one change for membership_changes_per_min to draw: {}",
                crate::faults::membership::KINDS.join(", ")
            ),
        )?;
    }
    check(
        f.pauses_per_min >= 0.0 && f.pauses_per_min.is_finite(),
        "faults.pauses_per_min",
        "must be finite and not negative",
    )?;
    let [lo, hi] = f.pause_duration_s;
    check(
        lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi,
        "faults.pause_duration_s",
        format!(
            "[{lo}, {hi}] is not a range of seconds: finite, above 0 (durations are drawn log-uniformly), minimum not above maximum"
        ),
    )?;
    subset(
        "faults.pause_roles",
        &f.pause_roles,
        crate::faults::pause::ROLES,
    )?;
    if t.kind != TopologyKind::Etcd {
        for r in &f.pause_roles {
            check(
                !crate::faults::pause::ETCD_ROLES.contains(&r.as_str()),
                "faults.pause_roles",
                format!("`{r}` names nodes of an etcd topology only (kind = \"etcd\")"),
            )?;
        }
    }
    if f.pauses_per_min > 0.0 {
        check(
            !f.pause_roles.is_empty(),
            "faults.pause_roles",
            format!(
                "name at least one role for pauses_per_min to draw: {}",
                crate::faults::pause::ROLES.join(", ")
            ),
        )?;
    }
    subset(
        "faults.compact_failure_kinds",
        &f.compact_failure_kinds,
        &["database-locked", "timeout", "reply-lost"],
    )?;
    let mut design = store::design::Design::default();
    for (area, variant) in &s.design {
        design
            .set(area, variant)
            .map_err(|e| (format!("design.{area}"), e.to_string()))?;
    }
    Ok(())
}
