//! kine: etcd's API over one SQL table (k3s's default datastore).
//!
//! `sql` is the table, `database` executes one request as one transaction, `driver` carries a
//! request to the database (in-process or over the network), `store` gives etcd semantics on top,
//! and `compactor` is kine's compaction loop.

pub mod compactor;
pub mod database;
pub mod driver;
pub mod lease;
pub mod sql;
pub mod store;
pub mod watch;

#[cfg(test)]
mod compactor_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod watch_tests;
