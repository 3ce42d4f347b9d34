//! Loading and validation of scenario files: good files load, bad ones name file, line, field.

use super::load::parse;

const GOOD: &str = r#"name = "t"
duration_s = 10
quiet_s = 5

[topology]
kind = "single"
servers = 1
clients = 1

[workload]
resources = ["pods"]
namespaces = 1
names = 2
ops_per_s = 1.0
list_limit = 5
request_timeout_ms = 1000

[faults]
kills_per_min = 1.0
kill_downtime_s = [1, 2]
"#;

#[test]
fn a_good_scenario_loads() {
    let s = parse("good.toml", GOOD).unwrap();
    assert_eq!(s.topology.clients, 1);
    assert_eq!(s.kine.compact_min_retain, 1000, "kine's default");
}

#[test]
fn a_misspelt_field_names_file_line_and_field() {
    let text = GOOD.replace("kills_per_min = 1.0", "kills_per_mi = 1.0");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(e.starts_with("bad.toml:19: faults.kills_per_mi:"), "{e}");
    assert!(e.contains("kills_per_mi"), "{e}");
}

#[test]
fn a_reversed_range_names_its_field_and_line() {
    let text = GOOD.replace("kill_downtime_s = [1, 2]", "kill_downtime_s = [5, 2]");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(e.starts_with("bad.toml:20: faults.kill_downtime_s:"), "{e}");
}

#[test]
fn a_wrong_type_and_an_unknown_design_are_reported() {
    let text = GOOD.replace("clients = 1", "clients = \"one\"");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(e.starts_with("bad.toml:8: topology.clients:"), "{e}");
    let text = format!("{GOOD}\n[design]\ncompactor = \"kine-999\"\n");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(
        e.contains("design.compactor") && e.contains("fixed, kine-357, kine-414"),
        "{e}"
    );
}

#[test]
fn pause_settings_are_checked_and_name_their_field_and_line() {
    let with = |faults: &str| GOOD.replace("kill_downtime_s = [1, 2]\n", faults);
    let ok = with("pauses_per_min = 2.0\npause_duration_s = [0.5, 40.0]\npause_roles = [\"server\", \"client\"]\n");
    let s = parse("ok.toml", &ok).unwrap();
    assert_eq!(s.faults.pause_duration_s, [0.5, 40.0]);
    for (faults, expected) in [
        (
            "pauses_per_min = -1.0\n",
            "bad.toml:20: faults.pauses_per_min: must be finite and not negative",
        ),
        (
            "pause_duration_s = [0.0, 5.0]\n",
            "bad.toml:20: faults.pause_duration_s: [0, 5] is not a range of seconds",
        ),
        (
            "pause_duration_s = [9.0, 5.0]\n",
            "bad.toml:20: faults.pause_duration_s: [9, 5] is not a range",
        ),
        (
            "pause_roles = [\"leader\"]\n",
            "bad.toml:20: faults.pause_roles: unknown value `leader`; allowed: server, database",
        ),
        (
            "pause_roles = [\"agent\"]\n",
            "bad.toml:20: faults.pause_roles: `agent` names nodes of an etcd topology only",
        ),
        (
            // Not written: the line of its table.
            "pauses_per_min = 1.0\n",
            "bad.toml:18: faults.pause_roles: name at least one role",
        ),
        (
            "pause_duratio_s = [1.0, 2.0]\n",
            "bad.toml:20: faults.pause_duratio_s: unknown field",
        ),
    ] {
        let e = parse("bad.toml", &with(faults)).unwrap_err().to_string();
        assert!(e.starts_with(expected), "expected `{expected}`, got: {e}");
    }
}

#[test]
fn a_missing_field_is_named_with_its_table() {
    let text = GOOD.replace("clients = 1\n", "");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(
        e.starts_with("bad.toml:5: topology.clients: missing field"),
        "{e}"
    );
    let text = GOOD.replace("quiet_s = 5\n", "");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(e.contains(": quiet_s: missing field"), "{e}");
}

#[test]
fn broken_toml_is_a_syntax_error_on_its_line() {
    let text = GOOD.replace("names = 2", "names = = 2");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(e.starts_with("bad.toml:13: not valid TOML:"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn a_bad_mix_weight_names_its_operation_kind() {
    let text = format!("{GOOD}\n[workload.mix]\ndelete = -1.0\n");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(e.contains("workload.mix.delete:"), "{e}");
    let text = format!(
        "{GOOD}\n[workload.mix]\ncreate = 0.0\nupdate = 0.0\ndelete = 0.0\nget = 0.0\nlist = 0.0\n"
    );
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(e.contains("workload.mix: at least one weight"), "{e}");
}

#[test]
fn membership_changes_are_validated_with_their_line() {
    let text = GOOD.replace(
        "kill_downtime_s = [1, 2]",
        "kill_downtime_s = [1, 2]\nmembership_changes_per_min = 0.5\nmembership_kinds = [\"server-join\"]",
    );
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(
        e.starts_with("bad.toml:21: faults.membership_changes_per_min:")
            && e.contains("need kind = \"etcd\""),
        "{e}"
    );
    let text = GOOD.replace(
        "kill_downtime_s = [1, 2]",
        "kill_downtime_s = [1, 2]\nmembership_kinds = [\"server-join\", \"server-swap\"]",
    );
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(
        e.starts_with("bad.toml:21: faults.membership_kinds: unknown value `server-swap`")
            && e.contains("server-join, server-leave, server-replace"),
        "{e}"
    );
}

#[test]
fn serializable_reads_need_pinned_clients_and_pins_need_clients() {
    let text = format!("{GOOD}\n[workload.mix]\nserializable_get = 1.0\n");
    let e = parse("bad.toml", &text).unwrap_err().to_string();
    assert!(
        e.starts_with("bad.toml:23: workload.mix.serializable_get: serializable reads are sent by pinned clients only"),
        "{e}"
    );
    let pinned = GOOD.replace(
        "request_timeout_ms = 1000",
        "request_timeout_ms = 1000\npinned_clients = 1",
    );
    let s = parse(
        "good.toml",
        &format!("{pinned}\n[workload.mix]\nserializable_get = 1.0\ncompacted_read = 0.5\n"),
    )
    .unwrap();
    assert_eq!(s.workload.pinned_clients, 1);
    assert_eq!(s.workload.mix.compacted_read, 0.5);
    let e = parse(
        "bad.toml",
        &pinned.replace("pinned_clients = 1", "pinned_clients = 2"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("bad.toml:17: workload.pinned_clients: at most the 1 clients"),
        "{e}"
    );
}

#[test]
fn lease_settings_are_validated_with_their_line() {
    let leases = GOOD.replace(
        "request_timeout_ms = 1000",
        "request_timeout_ms = 1000\nlease_clients = 2\nlease_ttls_s = [2, 0]",
    );
    let e = parse("bad.toml", &leases).unwrap_err().to_string();
    assert!(
        e.starts_with("bad.toml:18: workload.lease_ttls_s: TTL 0 is not between 1 and 3600"),
        "{e}"
    );
    let e = parse(
        "bad.toml",
        &leases.replace("[2, 0]", "[2, 5]\nlease_keys = 11"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("bad.toml:19: workload.lease_keys: 11 keys per lease"),
        "{e}"
    );
    let e = parse(
        "bad.toml",
        &leases
            .replace("[2, 0]", "[2, 5]")
            .replace("[\"pods\"]", "[\"events\"]"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("bad.toml:11: workload.resources: `events` holds the lease clients' keys"),
        "{e}"
    );
    let s = parse("good.toml", &leases.replace("[2, 0]", "[2, 5]")).unwrap();
    assert_eq!(
        (
            s.workload.lease_clients,
            s.workload.lease_ttls_s,
            s.workload.lease_keys
        ),
        (2, vec![2, 5], 2)
    );
    // Without lease clients the settings are not judged, and the defaults hold.
    let s = parse("good.toml", GOOD).unwrap();
    assert_eq!((s.workload.lease_clients, s.workload.lease_keys), (0, 2));
}
