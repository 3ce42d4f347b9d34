//! Checksummed framing for a member's append-only files (the raft WAL and the MVCC backend log),
//! and the WAL's records.
//!
//! Each frame is `len (u32 LE) | crc32 (u32 LE) | payload`. Reading stops at the first frame that
//! is short or fails its checksum: that is a torn tail, cut by a crash before its fsync, and is
//! dropped (etcd's WAL repair does the same). A frame is the unit of atomicity.

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The intact frames of `bytes`, and how many bytes they span (the rest is a torn tail).
pub fn frames(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push(payload);
        at += 8 + len;
    }
    (out, at)
}

/// What one Ready persisted: new entries (which overwrite any at the same or later index) and the
/// hard state, written as one frame.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WalBatch {
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

impl WalBatch {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let hs = self
            .hard_state
            .as_ref()
            .map(|h| h.write_to_bytes().expect("a hard state encodes"))
            .unwrap_or_default();
        out.push(self.hard_state.is_some() as u8);
        out.extend_from_slice(&(hs.len() as u32).to_le_bytes());
        out.extend_from_slice(&hs);
        for e in &self.entries {
            let b = e.write_to_bytes().expect("an entry encodes");
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(&b);
        }
        out
    }

    pub fn decode(payload: &[u8]) -> Self {
        // A payload passed its checksum, so it is what we wrote: a parse failure is a bug.
        let has_hs = payload[0] == 1;
        let hs_len = u32::from_le_bytes(payload[1..5].try_into().expect("4 bytes")) as usize;
        let hard_state = has_hs.then(|| {
            HardState::parse_from_bytes(&payload[5..5 + hs_len]).expect("WAL hard state parses")
        });
        let mut at = 5 + hs_len;
        let mut entries = Vec::new();
        while at < payload.len() {
            let len = u32::from_le_bytes(payload[at..at + 4].try_into().expect("4 bytes")) as usize;
            entries.push(
                Entry::parse_from_bytes(&payload[at + 4..at + 4 + len]).expect("WAL entry parses"),
            );
            at += 4 + len;
        }
        WalBatch {
            entries,
            hard_state,
        }
    }
}

/// Replays a WAL image: the entries in force (later writes overwrite from their index on) after
/// `snapshot_index`, and the last hard state.
pub fn replay(bytes: &[u8], snapshot_index: u64) -> (Vec<Entry>, Option<HardState>, usize) {
    let (frames, valid) = frames(bytes);
    let mut entries: Vec<Entry> = Vec::new();
    let mut hard_state = None;
    for f in frames {
        let batch = WalBatch::decode(f);
        for e in batch.entries {
            if e.index <= snapshot_index {
                continue;
            }
            while entries.last().is_some_and(|l| l.index >= e.index) {
                entries.pop();
            }
            entries.push(e);
        }
        if batch.hard_state.is_some() {
            hard_state = batch.hard_state;
        }
    }
    (entries, hard_state, valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 3].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_torn_tail_is_dropped_and_later_entries_overwrite() {
        let mut image = Vec::new();
        image.extend(frame(
            &WalBatch {
                entries: vec![entry(1, 1), entry(2, 1), entry(3, 1)],
                hard_state: None,
            }
            .encode(),
        ));
        let hs = HardState {
            term: 2,
            commit: 2,
            ..Default::default()
        };
        image.extend(frame(
            &WalBatch {
                entries: vec![entry(3, 2)],
                hard_state: Some(hs.clone()),
            }
            .encode(),
        ));
        let intact = image.len();
        let torn = frame(
            &WalBatch {
                entries: vec![entry(4, 2)],
                hard_state: None,
            }
            .encode(),
        );
        image.extend_from_slice(&torn[..torn.len() - 2]);
        let (entries, got_hs, valid) = replay(&image, 1);
        assert_eq!(valid, intact);
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>(),
            vec![(2, 1), (3, 2)]
        );
        assert_eq!(got_hs, Some(hs));
    }

    #[test]
    fn a_corrupted_frame_ends_the_log() {
        let mut image = frame(b"one");
        image.extend(frame(b"two"));
        let last = image.len() - 1;
        image[last] ^= 0xff;
        let (frames, valid) = frames(&image);
        assert_eq!(frames, vec![&b"one"[..]]);
        assert_eq!(valid, 11);
    }
}
