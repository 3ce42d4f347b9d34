//! faultline as a library: the simulator's pipeline, and the half of it live mode shares.
//!
//! Built two ways. With `--cfg madsim` (the simulator, the `faultline` binary) every module is
//! here. Without it (the real build, `faultline-real`'s live mode) only what runs the same
//! against real processes: the workload clients, the history and its recorder, the checkers,
//! scenario loading, fault draws and reports. `world`, carrying out faults inside madsim (`faults::kill`,
//! `faults::network`), a run of one seed and the campaign commands exist only in the simulator.

pub mod checkers;
pub mod clients;
#[cfg(madsim)]
pub mod commands;
pub mod faults;
pub mod history;
pub mod report;
#[cfg(madsim)]
pub mod run;
pub mod scenario;
#[cfg(madsim)]
pub mod world;
