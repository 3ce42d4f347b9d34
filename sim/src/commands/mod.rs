//! The campaign commands: many seeds, each in a child process of this binary, and the reports
//! they write (fuzz, validate, determinism, bench), `shrink` of a failing seed, `merge` of a
//! sharded campaign, and `list`.
//!
//! They run outside the simulation and only read what child processes print and write.

pub mod bench;
pub mod campaign;
pub mod candidates;
pub mod ddmin;
pub mod determinism;
pub mod fuzz;
pub mod list;
pub mod merge;
pub mod shrink;
pub mod validate;
