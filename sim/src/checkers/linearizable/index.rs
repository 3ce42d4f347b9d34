//! Lookups the model makes millions of times, kept small and cache-friendly: which write
//! took effect at a revision, whether any did, a fixed hash for keys, a prefix's range end,
//! and a hint to load what the next answers will need.

use super::lines::Lines;
use std::collections::BTreeMap;
use std::hash::Hasher;

/// Which write took effect at each revision, as (key, index in its line): an array over the
/// revisions when they are dense enough, else a map (a store answering absurd revisions).
pub(super) enum ByRev {
    Dense(Vec<(u32, u32)>),
    Sparse(BTreeMap<i64, (u32, u32)>),
}

const NO_WRITE: (u32, u32) = (u32::MAX, u32::MAX);

impl ByRev {
    pub fn of(lines: &Lines) -> ByRev {
        let events: usize = lines.iter().map(<[_]>::len).sum();
        let top = lines
            .iter()
            .filter_map(|l| l.last())
            .map(|e| e.rev)
            .max()
            .unwrap_or(0);
        let bottom = lines
            .iter()
            .filter_map(|l| l.first())
            .map(|e| e.rev)
            .min()
            .unwrap_or(0);
        let place = |k: usize, x: usize| (k as u32, x as u32);
        if bottom >= 0 && top <= 8 * events as i64 + 1_000_000 {
            let mut dense = vec![NO_WRITE; top as usize + 1];
            for (k, line) in lines.iter().enumerate() {
                for (x, e) in line.iter().enumerate() {
                    dense[e.rev as usize] = place(k, x);
                }
            }
            ByRev::Dense(dense)
        } else {
            let mut sparse = BTreeMap::new();
            for (k, line) in lines.iter().enumerate() {
                for (x, e) in line.iter().enumerate() {
                    sparse.insert(e.rev, place(k, x));
                }
            }
            ByRev::Sparse(sparse)
        }
    }

    pub fn get(&self, rev: i64) -> Option<(usize, usize)> {
        let found = match self {
            ByRev::Dense(d) => usize::try_from(rev).ok().and_then(|r| d.get(r)).copied(),
            ByRev::Sparse(s) => s.get(&rev).copied(),
        };
        found
            .filter(|p| *p != NO_WRITE)
            .map(|(k, x)| (k as usize, x as usize))
    }
}

/// The revisions some write took effect at, as bits: small enough to stay in cache while
/// every key-value of a long history is looked up in it.
pub(super) struct RevSet(Vec<u64>);

impl RevSet {
    pub fn of(lines: &Lines) -> RevSet {
        let top = lines
            .iter()
            .flatten()
            .map(|e| e.rev)
            .max()
            .unwrap_or(0)
            .max(0) as usize;
        let mut bits = vec![0u64; top / 64 + 1];
        for e in lines.iter().flatten().filter(|e| e.rev >= 0) {
            bits[e.rev as usize / 64] |= 1 << (e.rev % 64);
        }
        RevSet(bits)
    }

    pub fn contains(&self, rev: i64) -> bool {
        usize::try_from(rev)
            .ok()
            .and_then(|r| self.0.get(r / 64).map(|w| w & (1 << (r % 64)) != 0))
            .unwrap_or(false)
    }
}

/// A fixed, fast hash for short keys (no per-process seed): FxHash's mix, eight bytes at a
/// time, so a 40-byte key costs five multiplies rather than forty.
#[derive(Default)]
pub(super) struct FixedHash(u64);

impl Hasher for FixedHash {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let word = u64::from_le_bytes(c.try_into().expect("eight bytes"));
            h = (h.rotate_left(5) ^ word).wrapping_mul(K);
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        h = (h.rotate_left(5) ^ u64::from_le_bytes(tail) ^ bytes.len() as u64).wrapping_mul(K);
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Asks the CPU to start loading the cache line at `p`. A long history's answers are read once,
/// in order, and every key and value is an allocation of its own, at addresses the hardware
/// cannot guess: naming the next ones while this one is judged overlaps their loads. A hint
/// only: it changes no result.
#[inline(always)]
pub(super) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and writes nothing, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches every cache line of `*t`.
#[inline(always)]
pub(super) fn prefetch_all<T>(t: &T) {
    let p: *const u8 = (t as *const T).cast();
    for offset in (0..size_of::<T>()).step_by(64) {
        prefetch(p.wrapping_add(offset));
    }
    prefetch(p.wrapping_add(size_of::<T>().saturating_sub(1)));
}

/// Prefetches the key and value of a key-value.
#[inline(always)]
pub(super) fn prefetch_kv(kv: &crate::history::Kv) {
    prefetch(kv.key.as_ptr());
    prefetch(kv.value.as_ptr());
}

/// `[prefix, end)` covers every key that starts with `prefix`.
pub(super) fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    let last = bytes.pop().expect("workload prefixes are not empty");
    assert!(
        last < 0x7f,
        "workload prefixes end in an ASCII character: {prefix}"
    );
    bytes.push(last + 1);
    String::from_utf8(bytes).expect("an ASCII byte was incremented")
}
