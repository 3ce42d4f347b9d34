//! The run's trace: one line per significant event, in simulated-time order, and its hash.
//!
//! The trace is the determinism witness. Every line is `<seconds>.<nanos> <node> <event>` built
//! only from simulated time and seeded values, so the same seed and binary give the same lines and
//! the same hash. It owns formatting and hashing; it never reads the wall clock.

use sha2::{Digest, Sha256};
use std::fmt::{Display, Write};

/// The lines, each ended by a newline, in one buffer: a line is written where it lands, with no
/// string of its own, and the buffer is what trace.log holds.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    text: String,
}

impl Trace {
    pub fn push(&mut self, at_ns: u64, node: &str, event: impl Display) {
        // Writing into a String cannot fail.
        let _ = writeln!(
            self.text,
            "{:>6}.{:09} {:<10} {}",
            at_ns / 1_000_000_000,
            at_ns % 1_000_000_000,
            node,
            event
        );
    }

    /// Every line, newline-terminated: trace.log's contents.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Hex SHA-256 of the lines, newline-terminated; the first 16 hex digits are what people read.
    pub fn hash(&self) -> String {
        Sha256::digest(self.text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    }
}

#[cfg(test)]
mod tests {
    use super::Trace;

    #[test]
    fn hash_follows_every_line() {
        let mut a = Trace::default();
        a.push(1_500_000_000, "kine-1", "compact tick 1");
        let mut b = a.clone();
        assert_eq!(a.hash(), b.hash());
        b.push(2_000_000_000, "kine-1", "compact tick 2");
        assert_ne!(a.hash(), b.hash());
        assert!(a.text().starts_with("     1.500000000 kine-1"));
        assert_eq!(a.text().lines().count(), 1);
    }
}
