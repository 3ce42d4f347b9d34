//! Live mode's groundwork: real targets under real faults.
//!
//! - [`target`]: a target file (`targets/*.toml`): how to start one node, how many;
//! - [`supervisor`]: the nodes as child processes, health probes, kill/restart, pause/resume;
//! - [`network`]: TCP proxies on every member-member and client-member link, cut per direction;
//! - [`schedule`]: faults drawn from a seed, written and read back as TOML;
//! - [`runner`]: a schedule carried out against a cluster in real monotonic time;
//! - [`run`]: one live run: the simulator's workload, history, checkers and reports against a
//!   cluster under a schedule (`faultline live`).
//!
//! Errors in the files a user writes are [`input::InputError`]s (file, line, field; exit 2).

pub mod input;
pub mod known;
pub mod network;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod supervisor;
pub mod target;

pub use input::InputError;
pub use network::{Endpoint, Network};
pub use schedule::Schedule;
pub use supervisor::Cluster;
pub use target::Target;
