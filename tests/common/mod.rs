//! Helpers shared by the integration tests.

/// A deterministic pseudo-random sequence in [-1, 1) (a 64-bit LCG), so tests need no RNG crate.
pub fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
