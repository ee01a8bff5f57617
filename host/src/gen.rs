//! Seeded input generators: FP4 operands and E4M3 scales drawn like GPU MODE's reference
//! generator ([`Distribution::GpuMode`]) or over the full code range
//! ([`Distribution::FullRange`]).
//!
//! Everything is a pure function of the seed (a small xoshiro256** generator, no `rand`
//! dependency), so a failing case can be reproduced from its seed alone.

use crate::ScaleLayout;
use crate::problem::HostProblem;
use crate::shapes::GroupShape;

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64.
///
/// Not cryptographic; fast, statistically sound for test data, and identical on every
/// platform.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

/// One SplitMix64 step: advances `state` and returns the next output.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole stream is determined by `seed` (any value, 0 included: the
    /// state is expanded with SplitMix64, so it is never all zero).
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Self { s }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform integer in `0..n`, without modulo bias (Lemire's multiply-and-reject).
    ///
    /// # Panics
    /// If `n == 0` (the range is empty).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0): empty range");
        // threshold = 2^64 mod n: products whose low half falls below it are rejected.
        let threshold = n.wrapping_neg() % n;
        loop {
            let x = self.next_u64();
            let wide = (x as u128) * (n as u128);
            if (wide as u64) >= threshold {
                return (wide >> 64) as u64;
            }
        }
    }

    /// A uniform byte.
    fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }
}

/// How operand codes and scales are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Like GPU MODE's `nvfp4_group_gemm` generator: every FP4 nibble is a uniform random
    /// nibble masked with `0b1011` (sign and the two low bits kept, so values are
    /// {0, ±0.5, ±1, ±1.5}), every scale is E4M3 1.0 (`0x38`) or 2.0 (`0x40`) with equal
    /// probability. Results are small integers times 1/4 and exact in fp32, so a correct
    /// kernel matches the reference up to the final fp16 rounding.
    GpuMode,
    /// All 16 FP4 codes uniformly (so ±0, all magnitudes up to 6, -0 included), and scales
    /// drawn uniformly from the 57 positive E4M3 codes `0x08..=0x40`, whose values cover
    /// [2^-6, 2] with all mantissa patterns (not only powers of two).
    ///
    /// Why this range: every product `a * sa * b * sb` is then either 0 or at least
    /// `0.25 * 2^-12 = 2^-14` (the smallest normal fp16) and at most `144 * 4 = 576`. Signs are
    /// symmetric, so an output is a random walk of K terms with mean 0 and
    /// `E[term^2] = (E[a^2] E[s^2])^2 = (8.5625 * 0.472)^2 ≈ 16.3`: its standard deviation at
    /// K = 7168 is about 342, and even the largest of millions of outputs stays two orders of
    /// magnitude below the fp16 maximum 65504. Larger scales (the E4M3 range goes to 448)
    /// would overflow fp16, as they should, which tests nothing about accuracy.
    FullRange,
}

/// Scale codes of [`Distribution::FullRange`]: E4M3 `0x08` = 2^-6 up to `0x40` = 2.0.
const FULL_RANGE_SCALE_MIN: u8 = 0x08;
const FULL_RANGE_SCALE_MAX: u8 = 0x40;

/// E4M3 1.0 and 2.0, the scales of [`Distribution::GpuMode`].
const E4M3_ONE: u8 = 0x38;
const E4M3_TWO: u8 = 0x40;

/// One packed FP4 byte (two codes) drawn from `dist`.
fn fp4_byte(rng: &mut Rng, dist: Distribution) -> u8 {
    match dist {
        Distribution::GpuMode => rng.byte() & 0b1011_1011,
        Distribution::FullRange => rng.byte(),
    }
}

/// One (logical, non-padding) E4M3 scale drawn from `dist`.
fn scale_byte(rng: &mut Rng, dist: Distribution) -> u8 {
    match dist {
        Distribution::GpuMode => {
            if rng.next_u64() >> 63 == 0 {
                E4M3_ONE
            } else {
                E4M3_TWO
            }
        }
        Distribution::FullRange => {
            let span = (FULL_RANGE_SCALE_MAX - FULL_RANGE_SCALE_MIN) as u64 + 1;
            FULL_RANGE_SCALE_MIN + rng.below(span) as u8
        }
    }
}

/// A padding byte for the blocked layout: half the time an E4M3 NaN (`0x7F` or `0xFF`), else
/// any byte. A kernel that reads padding into a result therefore produces NaN or garbage.
fn pad_byte(rng: &mut Rng) -> u8 {
    let x = rng.next_u64();
    match x >> 62 {
        0 => 0x7F,
        1 => 0xFF,
        _ => x as u8,
    }
}

/// Draws one operand: `rows * k / 2` FP4 bytes and its scales packed in `layout`.
fn operand(
    rng: &mut Rng,
    rows: usize,
    k: usize,
    dist: Distribution,
    layout: ScaleLayout,
) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..rows * k / 2).map(|_| fp4_byte(rng, dist)).collect();
    let plain: Vec<u8> = (0..rows * (k / 16))
        .map(|_| scale_byte(rng, dist))
        .collect();
    let scales = pack_scales(layout, rows, k, &plain, || pad_byte(rng));
    (data, scales)
}

/// One problem `m x n x k` with `alpha = 1.0`, operands drawn from `dist`, A's scales in
/// `sfa_layout` and B's in `sfb_layout`.
///
/// Draw order (part of the reproducibility contract): A's bytes, A's scales (row-major),
/// A's padding, then the same for B. Padding bytes of the blocked layout are random and
/// half of them are E4M3 NaN codes (`0x7F` / `0xFF`), so a kernel that reads padding is
/// caught.
///
/// # Panics
/// If `k` is not a multiple of 16 (one scale block), which no valid problem has.
pub fn problem(
    rng: &mut Rng,
    m: usize,
    n: usize,
    k: usize,
    dist: Distribution,
    sfa_layout: ScaleLayout,
    sfb_layout: ScaleLayout,
) -> HostProblem {
    assert!(
        k.is_multiple_of(16),
        "gen::problem: k = {k} is not a multiple of 16"
    );
    let (a, sfa) = operand(rng, m, k, dist, sfa_layout);
    let (b, sfb) = operand(rng, n, k, dist, sfb_layout);
    HostProblem {
        m,
        n,
        k,
        a,
        sfa,
        sfa_layout,
        b,
        sfb,
        sfb_layout,
        alpha: 1.0,
    }
}

/// The problems of `shape`, in order, all drawn from one generator seeded with `seed`.
///
/// # Panics
/// If a K of `shape` is not a multiple of 16.
pub fn group(
    seed: u64,
    shape: &GroupShape,
    dist: Distribution,
    sfa_layout: ScaleLayout,
    sfb_layout: ScaleLayout,
) -> Vec<HostProblem> {
    let mut rng = Rng::new(seed);
    shape
        .problems
        .iter()
        .map(|&(m, n, k)| problem(&mut rng, m, n, k, dist, sfa_layout, sfb_layout))
        .collect()
}

/// Packs row-major scales `plain` (`[rows, k / 16]`) into `layout`.
///
/// For [`ScaleLayout::Blocked`] the result has `ceil(rows / 128) * 128 * ceil(k / 64) * 4`
/// bytes (rows padded to 128, scale columns to 4); byte `o` holds (row `r`, scale column
/// `c`) where, writing `o = tile * 512 + within`,
/// `r = (tile / ceil(k/64)) * 128 + ((within % 16) / 4) * 32 + within / 16` and
/// `c = (tile % ceil(k/64)) * 4 + within % 4` (the inverse of the DESIGN.md formula).
/// Padding bytes (`r >= rows` or `c >= k / 16`) are filled by calling `pad`, once per
/// padding byte in increasing offset order. [`ScaleLayout::Plain`] copies `plain` and
/// never calls `pad`.
///
/// # Panics
/// If `plain.len() != rows * (k / 16)`.
pub fn pack_scales(
    layout: ScaleLayout,
    rows: usize,
    k: usize,
    plain: &[u8],
    mut pad: impl FnMut() -> u8,
) -> Vec<u8> {
    let cols = k / 16;
    assert_eq!(
        plain.len(),
        rows * cols,
        "gen::pack_scales: plain scales must be [rows = {rows}, k / 16 = {cols}]"
    );
    match layout {
        ScaleLayout::Plain => plain.to_vec(),
        ScaleLayout::Blocked => {
            let col_groups = cols.div_ceil(4);
            let len = rows.div_ceil(128) * 128 * col_groups * 4;
            (0..len)
                .map(|o| {
                    let (tile, within) = (o / 512, o % 512);
                    let r = (tile / col_groups) * 128 + ((within % 16) / 4) * 32 + within / 16;
                    let c = (tile % col_groups) * 4 + within % 4;
                    if r < rows && c < cols {
                        plain[r * cols + c]
                    } else {
                        pad()
                    }
                })
                .collect()
        }
    }
}
