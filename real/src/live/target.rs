//! Targets: how to start the store under test, as a TOML file in `targets/`.
//!
//! A target says how to start one node (`command`, then `extra_flags`), how many nodes, how one
//! node appears in the initial cluster string, and how long a start may take. The supervisor
//! fills the placeholders per node:
//!
//! | placeholder | value |
//! |---|---|
//! | `{name}` | the node's name, `n1`, `n2`, ... |
//! | `{client_port}` | the port it serves clients on, on 127.0.0.1 (health probes go there) |
//! | `{peer_port}` | the port it listens on for its peers, on 127.0.0.1 |
//! | `{peer_proxy_port}` | the port its peers reach it by: faultline's proxy in front of `{peer_port}`, which partitions cut |
//! | `{data_dir}` | its data folder (kept across restarts) |
//! | `{initial_cluster}` | `initial_cluster_member` filled for every node, joined with commas |
//! | `{bin_dir}` | the folder holding faultline's own binaries (faultline-store) |

use super::input::{self, InputError};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Every placeholder a target may use.
pub const PLACEHOLDERS: [&str; 7] = [
    "name",
    "client_port",
    "peer_port",
    "peer_proxy_port",
    "data_dir",
    "initial_cluster",
    "bin_dir",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    description: String,
    nodes: Spanned<i64>,
    command: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    extra_flags: Vec<Spanned<String>>,
    #[serde(default)]
    initial_cluster_member: Option<Spanned<String>>,
    #[serde(default)]
    start_timeout_s: Option<Spanned<f64>>,
    #[serde(default)]
    semantics: Option<Spanned<String>>,
    #[serde(default)]
    known_bugs: Vec<Spanned<String>>,
}

/// What a target's answers are judged as: etcd's (versions counted per key) or kine's.
pub const SEMANTICS: [&str; 2] = ["etcd", "kine"];

/// A target as loaded: every field checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The file it came from.
    pub path: PathBuf,
    /// The file's stem (`etcd-3`), for reports.
    pub name: String,
    pub description: String,
    pub nodes: usize,
    /// The program and its arguments, placeholders unfilled.
    pub command: Vec<String>,
    pub extra_flags: Vec<String>,
    pub initial_cluster_member: String,
    pub start_timeout_s: f64,
    /// `etcd` (the default) or `kine`: which store's rules the checks hold its answers to.
    pub semantics: String,
    /// Bugs of this release that live reports may put violations down to (`live::known`).
    pub known_bugs: Vec<String>,
}

/// The values of one node's placeholders.
#[derive(Clone, Debug)]
pub struct Fill<'a> {
    pub name: &'a str,
    pub client_port: u16,
    pub peer_port: u16,
    pub peer_proxy_port: u16,
    pub data_dir: &'a Path,
    pub initial_cluster: &'a str,
    pub bin_dir: &'a Path,
}

impl Fill<'_> {
    fn value(&self, placeholder: &str) -> String {
        match placeholder {
            "name" => self.name.to_string(),
            "client_port" => self.client_port.to_string(),
            "peer_port" => self.peer_port.to_string(),
            "peer_proxy_port" => self.peer_proxy_port.to_string(),
            "data_dir" => self.data_dir.display().to_string(),
            "initial_cluster" => self.initial_cluster.to_string(),
            "bin_dir" => self.bin_dir.display().to_string(),
            other => unreachable!("placeholder {other} was checked at load"),
        }
    }
}

/// The placeholders named in `s`, or the first malformed one as an error message.
fn placeholders(s: &str) -> Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("`{{` without its `}}` in {s:?}"));
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} in {s:?}; allowed: {}",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            ));
        }
        found.push(name);
        rest = &after[close + 1..];
    }
    Ok(found)
}

/// `s` with every placeholder replaced by its value for `fill`.
fn fill_in(s: &str, fill: &Fill) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').expect("checked at load");
        out.push_str(&fill.value(&after[..close]));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

impl Target {
    /// Loads and checks the target file at `path`.
    pub fn load(path: &Path) -> Result<Target, InputError> {
        let text = input::read(path)?;
        Target::parse(path, &text)
    }

    /// Checks target `text`, read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Target, InputError> {
        let file: File = input::parse(path, text)?;
        let err = |at: usize, field: &str, message: String| {
            InputError::at(path, text, at, field, message)
        };
        let nodes = *file.nodes.get_ref();
        if !(1..=9).contains(&nodes) {
            return Err(err(
                file.nodes.span().start,
                "nodes",
                format!("{nodes} nodes; allowed: 1 to 9"),
            ));
        }
        if file.command.get_ref().is_empty() {
            return Err(err(
                file.command.span().start,
                "command",
                "empty; give the program and its arguments".to_string(),
            ));
        }
        let mut uses_initial_cluster = false;
        let strings = file
            .command
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("command[{i}]"), s))
            .chain(
                file.extra_flags
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("extra_flags[{i}]"), s)),
            );
        for (field, s) in strings {
            let names = placeholders(s.get_ref()).map_err(|m| err(s.span().start, &field, m))?;
            uses_initial_cluster |= names.contains(&"initial_cluster");
        }
        let program = &file.command.get_ref()[0];
        if program.get_ref().trim().is_empty() {
            return Err(err(
                program.span().start,
                "command[0]",
                "the program is empty".to_string(),
            ));
        }
        let member = match &file.initial_cluster_member {
            Some(m) => {
                let names = placeholders(m.get_ref())
                    .map_err(|e| err(m.span().start, "initial_cluster_member", e))?;
                if names.contains(&"initial_cluster") {
                    return Err(err(
                        m.span().start,
                        "initial_cluster_member",
                        "cannot contain {initial_cluster} itself".to_string(),
                    ));
                }
                m.get_ref().clone()
            }
            None if uses_initial_cluster => return Err(err(
                file.command.span().start,
                "initial_cluster_member",
                "missing: the command uses {initial_cluster}, so say how one node appears in it"
                    .to_string(),
            )),
            None => String::new(),
        };
        let start_timeout_s = match &file.start_timeout_s {
            Some(t) => {
                let v = *t.get_ref();
                if !(v.is_finite() && v > 0.0 && v <= 600.0) {
                    return Err(err(
                        t.span().start,
                        "start_timeout_s",
                        format!("{v}; allowed: more than 0, at most 600 seconds"),
                    ));
                }
                v
            }
            None => 30.0,
        };
        let semantics = match &file.semantics {
            Some(v) if !SEMANTICS.contains(&v.get_ref().as_str()) => {
                return Err(err(
                    v.span().start,
                    "semantics",
                    format!("{:?}; allowed: {}", v.get_ref(), SEMANTICS.join(", ")),
                ))
            }
            Some(v) => v.get_ref().clone(),
            None => "etcd".to_string(),
        };
        for (i, b) in file.known_bugs.iter().enumerate() {
            if super::known::find(b.get_ref()).is_none() {
                return Err(err(
                    b.span().start,
                    &format!("known_bugs[{i}]"),
                    format!(
                        "{:?} is not a known bug; known: {}",
                        b.get_ref(),
                        super::known::names().join(", ")
                    ),
                ));
            }
        }
        Ok(Target {
            path: path.to_path_buf(),
            name: path.file_stem().map_or_else(
                || "target".to_string(),
                |s| s.to_string_lossy().into_owned(),
            ),
            description: file.description,
            nodes: nodes as usize,
            command: file
                .command
                .into_inner()
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            extra_flags: file
                .extra_flags
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            initial_cluster_member: member,
            start_timeout_s,
            semantics,
            known_bugs: file
                .known_bugs
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
        })
    }

    /// True when the nodes talk to each other through `{peer_proxy_port}`, so partitions
    /// between members can be cut.
    pub fn has_peers(&self) -> bool {
        self.command
            .iter()
            .chain(&self.extra_flags)
            .chain(std::iter::once(&self.initial_cluster_member))
            .any(|s| s.contains("{peer_proxy_port}"))
    }

    /// The node names: `n1` to `nN`.
    pub fn node_names(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| format!("n{i}")).collect()
    }

    /// The initial cluster string, given each node's fill (its own `initial_cluster` unused).
    pub fn initial_cluster(&self, fills: &[Fill]) -> String {
        fills
            .iter()
            .map(|f| fill_in(&self.initial_cluster_member, f))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The program and arguments of one node.
    pub fn argv(&self, fill: &Fill) -> Vec<String> {
        self.command
            .iter()
            .chain(&self.extra_flags)
            .map(|s| fill_in(s, fill))
            .collect()
    }

    /// The program this target runs, with `{bin_dir}` filled, when it is not there: the reason
    /// a test skips (loudly) or a run stops before starting anything.
    pub fn missing_program(&self, bin_dir: &Path) -> Option<PathBuf> {
        let program =
            PathBuf::from(self.command[0].replace("{bin_dir}", &bin_dir.display().to_string()));
        if program.components().count() > 1 {
            return (!program.is_file()).then_some(program);
        }
        let on_path = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(&program).is_file()));
        (!on_path).then_some(program)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_per_node() {
        let t = Target::parse(
            Path::new("t.toml"),
            "nodes = 2\ncommand = [\"x\", \"--a={name}:{client_port}\", \"--c={initial_cluster}\"]\ninitial_cluster_member = \"{name}=p{peer_proxy_port}\"\n",
        )
        .unwrap();
        let dir = PathBuf::from("/d");
        let fill = |name, port| Fill {
            name,
            client_port: 1,
            peer_port: 2,
            peer_proxy_port: port,
            data_dir: &dir,
            initial_cluster: "",
            bin_dir: &dir,
        };
        let cluster = t.initial_cluster(&[fill("n1", 10), fill("n2", 20)]);
        assert_eq!(cluster, "n1=p10,n2=p20");
        let mut f = fill("n1", 10);
        f.initial_cluster = &cluster;
        assert_eq!(t.argv(&f), ["x", "--a=n1:1", "--c=n1=p10,n2=p20"]);
        assert!(t.has_peers());
    }

    #[test]
    fn unknown_placeholder_names_its_element() {
        let e = Target::parse(
            Path::new("t.toml"),
            "nodes = 1\ncommand = [\n  \"x\",\n  \"--p={port}\",\n]\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "command[1]"), "{e}");
    }
}
