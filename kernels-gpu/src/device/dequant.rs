//! FP4 and E4M3 to fp16 in registers, as both kernels use it (the bit tricks themselves are
//! in [`crate::fp4`], shared with the host and tested there).

use super::arch::half;
use crate::fp4::{e2m1x8_to_f16x2_scaled, e4m3_to_f16_bits_scaled};

/// fp16x2 256.0: undoes the 2^-8 of [`e4m3_to_f16_bits_scaled`] (exact).
const F16X2_256: u32 = 0x5C00_5C00;

/// The E4M3 scale byte `b` (low 8 bits) as an fp16x2 word holding its exact value twice
/// (E4M3 subnormals are fp16 normals; NaN codes give NaN).
#[inline(always)]
pub fn scale_f16x2(b: u32) -> u32 {
    let h = e4m3_to_f16_bits_scaled(b as u8) as u32;
    half::mul2(h | (h << 16), F16X2_256)
}

/// Eight FP4 codes `x` times the fp16x2 scale `s`: four fp16x2 words, word `i` pairing code
/// `i` with code `i + 4` (each `value * scale * 2^-14`, exact).
#[inline(always)]
pub fn fp4x8_scaled(x: u32, s: u32) -> [u32; 4] {
    let w = e2m1x8_to_f16x2_scaled(x);
    [
        half::mul2(w[0], s),
        half::mul2(w[1], s),
        half::mul2(w[2], s),
        half::mul2(w[3], s),
    ]
}

/// The A fragments (`mma.m16n8k16` layout, also wgmma's A from registers) of two
/// consecutive k-steps from one thread's 8 codes of row `g` (`lo`, scale `s_lo`) and of row
/// `g + 8` (`hi`, scale `s_hi`): step 0 takes words 0 and 1, step 1 words 2 and 3.
#[inline(always)]
pub fn a_fragments(lo: u32, hi: u32, s_lo: u32, s_hi: u32) -> [[u32; 4]; 2] {
    let lo = fp4x8_scaled(lo, s_lo);
    let hi = fp4x8_scaled(hi, s_hi);
    [[lo[0], hi[0], lo[1], hi[1]], [lo[2], hi[2], lo[3], hi[3]]]
}
