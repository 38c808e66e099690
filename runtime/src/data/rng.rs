//! A small, self-contained pseudo-random generator (SplitMix64) and deterministic
//! arithmetic helpers.
//!
//! Everything here uses only integer operations and IEEE-754 basic float operations
//! (`+ - * /`, `floor`), which are correctly rounded on every platform Rust targets, and
//! Rust never fuses them into FMAs. So the same seed gives bit-identical results on every
//! machine, unlike `f32::sin`/`exp` (which call the platform's libm) or libtorch's
//! generators and multi-threaded reductions.

/// SplitMix64 (Steele, Lea and Flood 2014): 64 bits of state, passes BigCrush, and any
/// seed (zero included) is fine.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a good 64-bit mixer.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// An independent stream for `seed` and a path of stream ids (split, example index,
    /// purpose, ...): streams for different paths do not overlap in practice.
    pub(crate) fn stream(seed: u64, path: &[u64]) -> Self {
        let mut h = mix64(seed ^ 0x5EED_0000_E59E_0000);
        for &p in path {
            h = mix64(h ^ mix64(p.wrapping_add(GOLDEN)));
        }
        Self { state: h }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in [0, 1), 24 random bits.
    pub(crate) fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [lo, hi).
    pub(crate) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (n > 0), by Lemire's multiply-shift (bias < n / 2^64).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Approximately standard normal: the sum of four 16-bit uniforms (Irwin-Hall, n = 4),
    /// centred and scaled to unit variance. One draw of 64 bits per value; bounded by
    /// +-2 sqrt(3), which is all image noise needs.
    pub(crate) fn normal(&mut self) -> f32 {
        let r = self.next_u64();
        let sum = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
        // Each part is uniform on {0..65535}: mean 32767.5, variance (65536^2 - 1) / 12.
        const SCALE: f32 = 1.732_050_8 / 65536.0; // sqrt(3) / 2^16: unit variance for 4 parts
        (sum as f32 - 4.0 * 32767.5) * SCALE
    }

    /// Whether a fair coin came up heads.
    pub(crate) fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub(crate) fn permutation(&mut self, n: usize) -> Vec<i64> {
        let mut p: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

/// sin(2 pi t), for `t` in turns, with basic operations only (so bit-reproducible).
/// Absolute error below 4e-6 after range reduction; ample for image patterns.
pub(crate) fn sin_turns(t: f32) -> f32 {
    // Reduce to u in [-0.5, 0.5) turns, then fold to [-0.25, 0.25] by sin(pi - x) = sin(x).
    let mut u = t - t.floor();
    if u >= 0.5 {
        u -= 1.0;
    }
    if u > 0.25 {
        u = 0.5 - u;
    } else if u < -0.25 {
        u = -0.5 - u;
    }
    let x = u * std::f32::consts::TAU; // in [-pi/2, pi/2]
    let x2 = x * x;
    // Taylor series to x^11, Horner form: |error| < (pi/2)^13 / 13! ~ 6e-8 (plus rounding).
    x * (1.0
        + x2 * (-1.0 / 6.0
            + x2 * (1.0 / 120.0 + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362_880.0 + x2 * (-1.0 / 39_916_800.0))))))
}

/// cos(2 pi t), for `t` in turns.
pub(crate) fn cos_turns(t: f32) -> f32 {
    sin_turns(t + 0.25)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sin_matches_libm() {
        for i in -2000..=2000 {
            let t = i as f32 / 997.0;
            let want = (t as f64 * std::f64::consts::TAU).sin() as f32;
            assert!((sin_turns(t) - want).abs() < 4e-6, "t {t}: {} vs {want}", sin_turns(t));
            let want = (t as f64 * std::f64::consts::TAU).cos() as f32;
            assert!((cos_turns(t) - want).abs() < 4e-6, "t {t}: {} vs {want}", cos_turns(t));
        }
    }

    #[test]
    fn known_values_and_streams() {
        // Pinned outputs: a change here changes every synthetic data set.
        // The reference SplitMix64 sequence from state 0.
        let mut r = Rng { state: 0 };
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(7, &[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::stream(7, &[1, 2]).next_u64(), Rng::stream(7, &[2, 1]).next_u64());
        assert_ne!(Rng::stream(7, &[1]).next_u64(), Rng::stream(8, &[1]).next_u64());
    }

    #[test]
    fn distributions() {
        let mut r = Rng::stream(3, &[]);
        let n = 100_000;
        let (mut s, mut s2) = (0f64, 0f64);
        for _ in 0..n {
            let x = r.normal() as f64;
            s += x;
            s2 += x * x;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.03, "mean {mean} var {var}");
        let u: Vec<f32> = (0..n).map(|_| r.uniform()).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mut p = r.permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<i64>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<i64>>());
    }
}
