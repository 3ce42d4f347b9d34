//! What the real server tells its operator: start-up revisions and compactions, on stderr.
//!
//! An [`Observer`] of the store's events, so the store itself never prints. Rows are not logged:
//! one line per write would drown everything else.

use store::observe::{BatchOutcome, Observer, StoreEvent};

pub struct Log;

impl Observer for Log {
    fn record(&self, event: StoreEvent) {
        match event {
            StoreEvent::ServerStarted {
                current_revision,
                compact_revision,
            } => eprintln!(
                "faultline-store: database at revision {current_revision}, compacted to {compact_revision}"
            ),
            StoreEvent::DbCompact {
                to,
                committed: true,
                deleted_rows,
                ..
            } => eprintln!("faultline-store: compacted to revision {to}, {deleted_rows} rows deleted"),
            StoreEvent::CompactBatch {
                from,
                to,
                outcome: BatchOutcome::Failed { error },
            } => eprintln!("faultline-store: compaction batch {from}..={to} failed: {error}"),
            _ => {}
        }
    }
}
