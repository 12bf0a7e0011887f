//! MurmurHash3 x86 32-bit with seed 0: the hash flagd's `fractional` buckets by (the daemon uses
//! `github.com/twmb/murmur3`'s `StringSum32`). A dozen lines do not earn a dependency.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

pub fn hash32(data: &[u8]) -> u32 {
    let mut h: u32 = 0;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        h ^= mix(k);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail
            .iter()
            .rev()
            .fold(0u32, |k, &byte| (k << 8) | u32::from(byte));
        h ^= mix(k);
    }
    // The length is mixed in modulo 2^32, as the reference does.
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

fn mix(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

#[cfg(test)]
mod tests {
    use super::hash32;

    #[test]
    fn matches_the_reference_vectors() {
        // Published vectors for MurmurHash3_x86_32, seed 0.
        assert_eq!(hash32(b""), 0);
        assert_eq!(hash32(b"hello"), 0x248b_fa47);
        assert_eq!(hash32(b"Hello, world!"), 0xc036_3e43);
        assert_eq!(
            hash32(b"The quick brown fox jumps over the lazy dog"),
            0x2e4f_f723
        );
        assert_eq!(hash32(b"abc"), 0xb3dd_93fa);
    }
}
