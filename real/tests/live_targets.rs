//! Target files: the shipped ones load, and a malformed one is refused naming its file, line
//! and field (the CLI's exit code 2).

use faultline_real::live::{InputError, Target};
use std::path::{Path, PathBuf};

fn targets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../targets")
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-live-targets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn shipped_targets_load() {
    let etcd3 = Target::load(&targets_dir().join("etcd-3.toml")).unwrap();
    assert_eq!((etcd3.nodes, etcd3.name.as_str()), (3, "etcd-3"));
    assert!(etcd3.has_peers());
    assert!(etcd3
        .extra_flags
        .iter()
        .any(|f| f == "--snapshot-count=100"));
    let etcd1 = Target::load(&targets_dir().join("etcd-1.toml")).unwrap();
    assert_eq!(etcd1.nodes, 1);
    let store = Target::load(&targets_dir().join("faultline-store.toml")).unwrap();
    assert_eq!(store.nodes, 1);
    assert!(!store.has_peers());
    let bin = Path::new(env!("CARGO_BIN_EXE_faultline-store"))
        .parent()
        .unwrap();
    assert_eq!(store.missing_program(bin), None);
    assert!(store.missing_program(Path::new("/nonexistent")).is_some());
}

fn refused(name: &str, text: &str) -> InputError {
    let path = write(name, text);
    let e = Target::load(&path).unwrap_err();
    assert_eq!(e.path, path);
    assert_eq!(InputError::EXIT_CODE, 2);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}:{}: {}: ", path.display(), e.line, e.field)),
        "{shown}"
    );
    e
}

#[test]
fn a_wrong_type_names_its_line_and_field() {
    let e = refused(
        "wrong-type.toml",
        "description = \"x\"\n\ncommand = [\"/bin/true\"]\nnodes = \"three\"\n",
    );
    assert_eq!((e.line, e.field.as_str()), (4, "nodes"), "{e}");
}

#[test]
fn an_unknown_field_is_named() {
    let e = refused(
        "unknown.toml",
        "nodes = 1\ncommand = [\"/bin/true\"]\nextra_flag = [\"--x\"]\n",
    );
    assert_eq!((e.line, e.field.as_str()), (3, "extra_flag"), "{e}");
}

#[test]
fn a_missing_field_is_named() {
    let e = refused("missing.toml", "nodes = 1\n");
    assert_eq!(e.field, "command", "{e}");
}

#[test]
fn out_of_range_and_bad_placeholders_are_located() {
    let e = refused("nodes.toml", "command = [\"/bin/true\"]\n\nnodes = 12\n");
    assert_eq!((e.line, e.field.as_str()), (3, "nodes"), "{e}");
    let e = refused(
        "placeholder.toml",
        "nodes = 3\ncommand = [\n  \"/usr/bin/etcd\",\n  \"--initial-cluster={initial_cluster}\",\n]\nextra_flags = [\"--a\", \"--b={clientport}\"]\ninitial_cluster_member = \"{name}=x\"\n",
    );
    assert_eq!((e.line, e.field.as_str()), (6, "extra_flags[1]"), "{e}");
    assert!(
        e.message.contains("{client_port}"),
        "says what is allowed: {e}"
    );
    let e = refused(
        "no-member.toml",
        "nodes = 3\ncommand = [\"/usr/bin/etcd\", \"--initial-cluster={initial_cluster}\"]\n",
    );
    assert_eq!(
        (e.line, e.field.as_str()),
        (2, "initial_cluster_member"),
        "{e}"
    );
    let e = refused(
        "syntax.toml",
        "nodes = 1\ncommand = [\"/bin/true\",, ]\ndescription = \"x\"\n",
    );
    assert_eq!((e.line, e.field.as_str()), (2, "command"), "{e}");
}
