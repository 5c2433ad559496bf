//! What the node's own tests and the e2e fault runs share: a seeded
//! generator, so that a seed names one history on every machine and every
//! version of every crate, and the WAL corrupter of the log-tail tests.
//! Nothing in the node's running code uses it.

use std::path::Path;

/// splitmix64 (Steele, Lea, Flood 2014): a tiny seeded generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n` (modulo: the bias is nothing to a test).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// In `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True `pct` times in 100.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Flips one byte inside the last record of the newest chunk of the
/// raft-log WAL in `dir` (a node's `<data-dir>/raft-log`), as a torn or
/// rotten disk would; the node must refuse the log rather than serve it.
pub fn corrupt_newest_wal_record(dir: &Path) {
    let mut chunks: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    chunks.sort();
    let last = chunks
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 64)
        .expect("a WAL chunk with data");
    let mut bytes = std::fs::read(last).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0xff;
    std::fs::write(last, bytes).unwrap();
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn a_seed_names_one_sequence() {
        // The reference values of splitmix64 for seed 0, so a change to the
        // generator (and so to every seeded history) cannot pass unnoticed.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        assert!((0..100).all(|_| a.range(3, 9) == b.range(3, 9)));
        assert!((0..1000).all(|_| (3..=9).contains(&a.range(3, 9))));
    }
}
