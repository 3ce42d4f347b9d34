//! A node's simulated disk: named files whose writes become durable only on fsync.
//!
//! The disk outlives the node's processes (the world holds it across kills). What a process reads
//! is what it wrote, synced or not, as a page cache would show; a kill behaves like a power loss
//! and drops every unsynced write, optionally leaving a torn prefix of one pending append.
//! An fsync costs what it makes durable, never the size of the file: a member fsyncs its WAL and
//! backend many times a second while both grow. It never touches the real file system.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
enum Pending {
    Append(Vec<u8>),
    /// A whole new file image, as written to a temporary file and renamed over the old one: it
    /// replaces the file atomically when synced.
    Replace(Vec<u8>),
}

#[derive(Clone, Debug, Default)]
struct File {
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

impl File {
    /// The file as the process sees it: the newest image (the last pending replace, or the
    /// durable one) with the appends made after it.
    fn view(&self) -> Vec<u8> {
        let last_replace = self
            .pending
            .iter()
            .rposition(|p| matches!(p, Pending::Replace(_)));
        let (mut out, after) = match last_replace {
            Some(i) => {
                let Pending::Replace(b) = &self.pending[i] else {
                    unreachable!("rposition found a replace")
                };
                (b.clone(), &self.pending[i + 1..])
            }
            None => (self.durable.clone(), &self.pending[..]),
        };
        for p in after {
            if let Pending::Append(b) = p {
                out.extend_from_slice(b);
            }
        }
        out
    }
}

/// What a kill took from the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loss {
    /// Files that had unsynced writes.
    pub files: u64,
    /// Unsynced bytes dropped (a torn prefix that stayed is not counted).
    pub bytes: u64,
    /// Whether a prefix (not the whole) of one pending append reached the disk.
    pub torn: bool,
}

#[derive(Debug, Default)]
pub struct Disk {
    files: BTreeMap<String, File>,
    syncs: u64,
}

pub type SharedDisk = Arc<Mutex<Disk>>;

impl Disk {
    pub fn shared() -> SharedDisk {
        Arc::new(Mutex::new(Disk::default()))
    }

    /// Appends to `name`, creating it; not durable until [`Disk::sync`].
    pub fn append(&mut self, name: &str, bytes: impl Into<Vec<u8>>) {
        let file = self.files.entry(name.to_string()).or_default();
        file.pending.push(Pending::Append(bytes.into()));
    }

    /// Replaces `name` with `bytes` atomically once synced; until then a kill keeps the old file.
    pub fn replace(&mut self, name: &str, bytes: Vec<u8>) {
        let file = self.files.entry(name.to_string()).or_default();
        file.pending.push(Pending::Replace(bytes));
    }

    /// Makes every write to `name` so far durable, in the order they were made: appends extend
    /// the durable image and a replace takes its place, so the cost is what was pending.
    pub fn sync(&mut self, name: &str) {
        if let Some(File { durable, pending }) = self.files.get_mut(name) {
            for p in pending.drain(..) {
                match p {
                    Pending::Append(b) => durable.extend_from_slice(&b),
                    Pending::Replace(b) => *durable = b,
                }
            }
        }
        self.syncs += 1;
    }

    /// The file as the running process sees it, synced or not.
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        self.files.get(name).map(File::view)
    }

    /// Whether `name` has writes a kill would drop (an fsync under way, for tests).
    pub fn unsynced(&self, name: &str) -> bool {
        self.files.get(name).is_some_and(|f| !f.pending.is_empty())
    }

    /// How many fsyncs this disk has served, for metrics and tests.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// A power loss: every unsynced write is dropped. With `tear = Some(n)`, the first pending
    /// append of one file (chosen by `n`) leaves a prefix of `n mod len` bytes behind.
    pub fn crash(&mut self, tear: Option<u64>) -> Loss {
        let mut loss = Loss::default();
        let dirty: Vec<String> = self
            .files
            .iter()
            .filter(|(_, f)| !f.pending.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        let torn_file = tear.and_then(|n| {
            let appends: Vec<&String> = dirty
                .iter()
                .filter(|name| {
                    matches!(self.files[*name].pending.first(), Some(Pending::Append(b)) if b.len() > 1)
                })
                .collect();
            (!appends.is_empty()).then(|| (appends[(n as usize) % appends.len()].clone(), n))
        });
        for name in &dirty {
            let file = self.files.get_mut(name).expect("dirty file exists");
            loss.files += 1;
            let mut pending = std::mem::take(&mut file.pending).into_iter();
            if torn_file.as_ref().is_some_and(|(torn, _)| torn == name) {
                // A prefix of the first unsynced append reached the platter: the write was cut.
                let Some(Pending::Append(b)) = pending.next() else {
                    unreachable!("the torn file's first pending write is an append")
                };
                let n = torn_file.as_ref().map(|(_, n)| *n).unwrap_or(0);
                let kept = 1 + (n as usize) % (b.len() - 1);
                file.durable.extend_from_slice(&b[..kept]);
                loss.bytes += (b.len() - kept) as u64;
                loss.torn = true;
            }
            for p in pending {
                let (Pending::Append(b) | Pending::Replace(b)) = p;
                loss.bytes += b.len() as u64;
            }
        }
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_writes_survive_a_kill() {
        let mut d = Disk::default();
        d.append("wal", b"aaa");
        d.sync("wal");
        d.append("wal", b"bbb");
        assert_eq!(
            d.read("wal").unwrap(),
            b"aaabbb",
            "the process sees its own writes"
        );
        let loss = d.crash(None);
        assert_eq!(
            loss,
            Loss {
                files: 1,
                bytes: 3,
                torn: false
            }
        );
        assert_eq!(d.read("wal").unwrap(), b"aaa");
    }

    #[test]
    fn a_replace_is_atomic_at_sync() {
        let mut d = Disk::default();
        d.replace("snap", b"old".to_vec());
        d.sync("snap");
        d.replace("snap", b"new!".to_vec());
        assert_eq!(d.read("snap").unwrap(), b"new!");
        d.crash(None);
        assert_eq!(
            d.read("snap").unwrap(),
            b"old",
            "an unsynced rename never happened"
        );
        d.replace("snap", b"new!".to_vec());
        d.sync("snap");
        d.crash(None);
        assert_eq!(d.read("snap").unwrap(), b"new!");
    }

    #[test]
    fn one_sync_applies_appends_and_replaces_in_order() {
        let mut d = Disk::default();
        d.append("f", b"aa");
        d.sync("f");
        d.append("f", b"bb");
        d.replace("f", b"new".to_vec());
        d.append("f", b"+tail");
        d.append("other", b"unsynced");
        d.sync("f");
        let loss = d.crash(None);
        assert_eq!(d.read("f").unwrap(), b"new+tail");
        assert_eq!(
            d.read("other").unwrap(),
            b"",
            "only the synced file survives"
        );
        assert_eq!(loss.files, 1);
        assert_eq!(d.syncs(), 2);
    }

    #[test]
    fn a_torn_write_leaves_a_strict_prefix_of_one_append() {
        let mut d = Disk::default();
        d.append("wal", b"head");
        d.sync("wal");
        d.append("wal", b"0123456789");
        d.append("wal", b"tail");
        let loss = d.crash(Some(4));
        assert!(loss.torn);
        let after = d.read("wal").unwrap();
        assert_eq!(&after[..4], b"head");
        let kept = &after[4..];
        assert!(!kept.is_empty() && kept.len() < 10, "{kept:?}");
        assert!(b"0123456789".starts_with(kept));
        assert_eq!(loss.bytes, (10 - kept.len() + 4) as u64);
    }
}
