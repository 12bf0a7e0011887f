//! Distinct visitors, estimated: a HyperLogLog sketch of 1,024 one-byte registers (standard
//! error about 3%). Sketches of different days and nodes merge by taking each register's
//! maximum, so a range's unique visitors are the union of its days' sketches. A sketch holds
//! no visitor's identity, only, per register, the longest run of zero bits seen.

use sha2::{Digest, Sha256};

/// Registers per sketch (2^10).
const REGISTERS: usize = 1024;
const INDEX_BITS: u32 = 10;

/// A visitor's identity for counting: a keyed hash of its address and user agent, so the same
/// visitor counts once on every node and nothing stored can be matched to an address without
/// the key.
pub fn visitor_hash(key: &[u8; 32], address: &[u8], user_agent: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(key)
        .chain_update(address)
        .chain_update([0])
        .chain_update(user_agent.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// A HyperLogLog sketch.
#[derive(Clone, PartialEq, Eq)]
pub struct Sketch(Box<[u8; REGISTERS]>);

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sketch(~{})", self.estimate())
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Self(Box::new([0; REGISTERS]))
    }
}

impl Sketch {
    pub fn add(&mut self, hash: u64) {
        let index = (hash >> (64 - INDEX_BITS)) as usize;
        // The rest of the bits, with a stop bit so the run is at most 54 + 1.
        let rest = (hash << INDEX_BITS) | (1 << (INDEX_BITS - 1));
        let rank = u8::try_from(rest.leading_zeros() + 1).unwrap_or(u8::MAX);
        let register = &mut self.0[index];
        *register = (*register).max(rank);
    }

    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// The estimated number of distinct hashes added.
    pub fn estimate(&self) -> u64 {
        let m = REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self.0.iter().map(|r| 2f64.powi(-i32::from(*r))).sum();
        let raw = alpha * m * m / sum;
        let zeros = self.0.iter().filter(|r| **r == 0).count();
        // Few visitors: count empty registers instead (linear counting), far more exact there.
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }

    /// The stored form: hex, which both databases keep as text.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_slice())
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut registers = [0u8; REGISTERS];
        hex::decode_to_slice(text, &mut registers).ok()?;
        Some(Self(Box::new(registers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_of(range: std::ops::Range<u32>) -> Sketch {
        let key = [7u8; 32];
        let mut sketch = Sketch::default();
        for n in range {
            sketch.add(visitor_hash(&key, &n.to_be_bytes(), "ua"));
        }
        sketch
    }

    #[test]
    fn estimates_are_close_at_every_scale() {
        for n in [1u32, 10, 100, 1_000, 10_000, 100_000] {
            let estimate = sketch_of(0..n).estimate() as f64;
            let error = (estimate - f64::from(n)).abs() / f64::from(n);
            assert!(error < 0.1, "{n} visitors estimated as {estimate}");
        }
        assert_eq!(Sketch::default().estimate(), 0);
    }

    #[test]
    fn repeats_count_once_and_merges_are_unions() {
        let mut twice = sketch_of(0..500);
        twice.merge(&sketch_of(0..500));
        assert_eq!(twice, sketch_of(0..500));
        let mut union = sketch_of(0..600);
        union.merge(&sketch_of(400..1000));
        let estimate = union.estimate() as f64;
        assert!((estimate - 1000.0).abs() < 60.0, "{estimate}");
        assert_eq!(Sketch::from_hex(&union.to_hex()), Some(union));
        assert_eq!(Sketch::from_hex("zz"), None);
    }
}
