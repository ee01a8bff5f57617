//! NVFP4 quantization: the rounding of f32 to E4M3 (`e4m3fn`) and E2M1 codes, and the
//! quantization of one 16-element block, shared by the quantization kernel and the CPU
//! (`nvfp4::quant::quantize_cpu`), so the two agree bit for bit.
//!
//! # What one block computes
//! For 16 consecutive elements `x[0..16]` of a row (already converted to f32, exactly) and the
//! per-tensor global scale `g` (finite, at least 2^-126; 1.0 when there is none):
//!
//! 1. `amax = max |x[i]|`.
//! 2. **NaN**: if any `x[i]` is NaN, the scale code is `0x7F` (E4M3 NaN) and all 16 FP4 codes
//!    are 0. Dequantizing gives NaN for the whole block, and a GEMM reading it gives NaN in
//!    the rows / columns that use it (the GEMM contract).
//! 3. Scale: `scale = f32_to_e4m3((amax / 6.0) / g)`: two f32 divisions, each correctly
//!    rounded (IEEE `div.rn.f32` on the GPU, `/` on the CPU), then E4M3 round to nearest,
//!    ties to even, saturating at 448 (infinite `amax` gives 448).
//! 4. **Zero scale**: if the scale code is 0 (`amax == 0`, or `amax / 6 / g <= 2^-10`, half
//!    the smallest E4M3 subnormal, so the scale rounds to 0), every FP4 magnitude is 0 and
//!    only the signs of `x` are kept (see 6): no division by zero happens.
//! 5. Otherwise `d = e4m3_to_f32(scale) * g` (one f32 multiplication, correctly rounded; exact
//!    when `g` is 1 or a power of two) and for each element `q = |x[i]| / d` (one correctly
//!    rounded f32 division), and the magnitude code is `f32_to_e2m1(q) & 7`: round to nearest,
//!    ties to even, over {0, 0.5, 1, 1.5, 2, 3, 4, 6}, saturating at 6 (an infinite `x[i]`
//!    gives 6; so does `inf / inf`, which only arises for infinite input when `448 * g`
//!    overflows f32).
//! 6. Every FP4 code's sign bit is the sign bit of `x[i]`, -0.0 included (so `-0.1` under a
//!    large scale is code `0x8`, -0), in NaN-free blocks.
//!
//! Packing: code `i` of the block goes to bits `4i .. 4i + 3` of a little-endian `u64`, i.e.
//! element `2j` in the low nibble of byte `j`, the layout of the GEMM's operands.
//!
//! No fused multiply-add, no approximate division, no flush-to-zero is involved: every f32
//! operation above is a single IEEE-754 operation with round-to-nearest-even, on both sides,
//! and the rounding to E4M3 / E2M1 is integer arithmetic on the f32 bits.
//!
//! # Error of the dequantized value
//! With `s = e4m3_to_f32(scale)`, the dequantized element is `e2m1(code) * s * g`. While the
//! scale is an E4M3 normal that did not saturate (`6 * 2^-6 * g <= amax <= 2688 * g`), `s` is
//! within 2^-4 relative of `amax / 6 / g` and `q <= 6 / (1 - 2^-4) < 6.4`, so the E2M1 rounding
//! error is at most half the spacing of the top binade (1.0, between 4 and 6; 0.4 when
//! saturating above 6): `|x - dequantized| <= s * g * (1 + 2^-22) <= amax / 6 * (1 + 2^-4) *
//! (1 + 2^-20)`, about `0.177 * amax` per element, and at most `|x| / 5` (plus 2^-22
//! relative) for `|x| >= s * g`, where `q >= 1` and half an E2M1 spacing is at most a fifth of
//! the value (the worst case is a tie such as 1.25 -> 1). Below that range (E4M3 subnormal or
//! zero scales) the error can reach `amax`; above it the block saturates.

use crate::fp4::e4m3_to_f32;

/// Elements per quantization block (one E4M3 scale).
pub const BLOCK: usize = 16;

/// Threads per CTA of the quantization kernel (one thread per block, grid-stride loop).
pub const THREADS: u32 = 256;

/// E4M3 (`e4m3fn`) NaN code (`0xFF` is the other one).
pub const E4M3_NAN: u8 = 0x7F;
/// Largest finite E4M3 code: 448.
pub const E4M3_MAX_CODE: u8 = 0x7E;
/// Largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;
/// Largest E2M1 magnitude code: 6.0.
pub const E2M1_MAX_CODE: u8 = 0x7;
/// Largest E2M1 value.
pub const E2M1_MAX: f32 = 6.0;

/// Smallest global scale accepted: the smallest normal f32, 2^-126. With it, `s * g` is never
/// 0 (E4M3's smallest nonzero `s` is 2^-9 and `2^-9 * 2^-126` is a nonzero f32 subnormal).
pub const MIN_GLOBAL_SCALE: f32 = f32::MIN_POSITIVE;

const F32_INF_BITS: u32 = 0x7F80_0000;
const F32_ABS_MASK: u32 = 0x7FFF_FFFF;
/// f32 bits of 448.0 and 6.0.
const E4M3_MAX_BITS: u32 = 0x43E0_0000;
const E2M1_MAX_BITS: u32 = 0x40C0_0000;

const _: () = assert!(E4M3_MAX.to_bits() == E4M3_MAX_BITS && E2M1_MAX.to_bits() == E2M1_MAX_BITS);

/// Element type of the tensor being quantized (a kernel argument: `#[repr(u32)]` codes).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputDtype {
    /// IEEE binary16.
    F16 = 0,
    /// bfloat16 (the top 16 bits of an f32).
    Bf16 = 1,
    /// IEEE binary32.
    F32 = 2,
}

impl InputDtype {
    /// The dtype with this `u32` code.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::F16),
            1 => Some(Self::Bf16),
            2 => Some(Self::F32),
            _ => None,
        }
    }

    /// Bytes per element.
    pub const fn bytes(self) -> u32 {
        match self {
            Self::F16 | Self::Bf16 => 2,
            Self::F32 => 4,
        }
    }
}

/// `x >> shift` rounded to nearest, ties to even (`1 <= shift <= 31`).
#[inline(always)]
const fn shift_right_rne(x: u32, shift: u32) -> u32 {
    let q = x >> shift;
    let rem = x & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    q + (rem > half || (rem == half && q & 1 == 1)) as u32
}

/// The code (without sign) of the value nearest to the f32 magnitude with bits `abs_bits`
/// (sign clear, not NaN, below the format's largest value) in a small binary float format
/// with `man_bits` mantissa bits and smallest normal exponent `emin`, ties to even.
///
/// Codes are `(biased exponent << man_bits) | mantissa` with biased exponent 0 for
/// subnormals (value `mantissa * 2^(emin - man_bits)`) and `e - emin + 1` for normals; a
/// mantissa that rounds up to `2^man_bits` carries into the exponent by the addition.
#[inline(always)]
const fn round_magnitude(abs_bits: u32, man_bits: u32, emin: i32) -> u32 {
    // floor(log2 |x|) for f32 normals; f32 subnormals (field 0) give -127, far below.
    let e = (abs_bits >> 23) as i32 - 127;
    // Below half the smallest subnormal (2^(emin - man_bits - 1)): rounds to 0.
    if e < emin - man_bits as i32 - 1 {
        return 0;
    }
    let significand = (abs_bits & 0x7F_FFFF) | 0x80_0000; // 24 bits, value * 2^(23 - e)
    if e < emin {
        // Subnormal range: count units of 2^(emin - man_bits); shift <= 24.
        shift_right_rne(significand, (23 - man_bits as i32 + (emin - e)) as u32)
    } else {
        let m = shift_right_rne(significand, 23 - man_bits); // 2^man_bits ..= 2^(man_bits + 1)
        (((e - emin + 1) as u32) << man_bits) + m - (1 << man_bits)
    }
}

/// f32 to E4M3 (`e4m3fn`): round to nearest, ties to even; magnitudes above 448 (infinity
/// included) saturate to ±448 (`0x7E` / `0xFE`); NaN gives `0x7F` with the NaN's sign bit
/// (`0x7F` or `0xFF`); subnormals (multiples of 2^-9 below 2^-6) are produced, and
/// magnitudes up to 2^-10 (a tie, to even) round to ±0.
#[inline(always)]
pub const fn f32_to_e4m3(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let a = bits & F32_ABS_MASK;
    if a > F32_INF_BITS {
        return E4M3_NAN | sign;
    }
    if a >= E4M3_MAX_BITS {
        return E4M3_MAX_CODE | sign;
    }
    round_magnitude(a, 3, -6) as u8 | sign
}

/// f32 to an E2M1 code (low 4 bits: sign | e1 e0 | m): round to nearest, ties to even, over
/// {0, 0.5, 1, 1.5, 2, 3, 4, 6}; magnitudes above 6 (infinity included) saturate to ±6, and
/// so does NaN (its sign bit kept): E2M1 has no NaN. -0.0 gives `0x8`.
#[inline(always)]
pub const fn f32_to_e2m1(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 28) & 0x8) as u8;
    let a = bits & F32_ABS_MASK;
    if a >= E2M1_MAX_BITS {
        return E2M1_MAX_CODE | sign;
    }
    round_magnitude(a, 1, 0) as u8 | sign
}

/// Repeats `$body` with `$i` bound to 0, 1, ..., 15 as constants: the kernel keeps a block's
/// 16 values in registers only if every index is a compile-time constant, which does not
/// depend on LLVM deciding to unroll a loop.
macro_rules! unroll16 {
    ($i:ident => $body:block) => {
        unroll16!(@ $i, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
    };
    (@ $i:ident, $body:block, $($n:literal)*) => {
        $( { let $i: usize = $n; $body } )*
    };
}

/// The E4M3 scale code of a block whose largest magnitude is `amax`, under global scale `g`:
/// `f32_to_e4m3((amax / 6.0) / g)` (step 3 of the module docs). NaN `amax` gives NaN.
#[inline(always)]
pub fn block_scale(amax: f32, g: f32) -> u8 {
    f32_to_e4m3(amax / E2M1_MAX / g)
}

/// One quantized block: the E4M3 scale code and the 16 FP4 codes packed in a `u64` (code `i`
/// in bits `4i .. 4i + 3`; as bytes, little-endian, element `2j` in the low nibble of byte
/// `j`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantBlock {
    /// E4M3 scale code.
    pub scale: u8,
    /// 16 E2M1 codes.
    pub fp4: u64,
}

/// Quantizes 16 consecutive elements `x` under global scale `g` (1.0 for none; the callers
/// check `g` is finite and at least [`MIN_GLOBAL_SCALE`]), exactly as the module docs say.
#[inline(always)]
pub fn quantize_block(x: &[f32; BLOCK], g: f32) -> QuantBlock {
    // amax on the bits: for non-NaN magnitudes the integer order is the float order, and a
    // NaN has larger bits than infinity, so one max finds both.
    let mut amax_bits = 0u32;
    let mut signs = 0u64;
    unroll16!(i => {
        let bits = x[i].to_bits();
        let a = bits & F32_ABS_MASK;
        amax_bits = if a > amax_bits { a } else { amax_bits };
        signs |= ((bits >> 31) as u64) << (4 * i + 3);
    });
    if amax_bits > F32_INF_BITS {
        return QuantBlock {
            scale: E4M3_NAN,
            fp4: 0,
        };
    }
    let scale = block_scale(f32::from_bits(amax_bits), g);
    if scale == 0 {
        return QuantBlock { scale, fp4: signs };
    }
    let d = e4m3_to_f32(scale) * g;
    let mut fp4 = signs;
    unroll16!(i => {
        let q = f32::from_bits(x[i].to_bits() & F32_ABS_MASK) / d;
        // `& 7`: the sign comes from x; a NaN q (inf / inf) has a platform-dependent sign.
        fp4 |= ((f32_to_e2m1(q) & E2M1_MAX_CODE) as u64) << (4 * i);
    });
    QuantBlock { scale, fp4 }
}

/// Rows and scale columns the quantization writes scales for: `(rows, k / 16)` for
/// [`crate::layout::ScaleLayout::Plain`], `(ceil(rows / 128) * 128, ceil(k / 64) * 4)` for
/// [`crate::layout::ScaleLayout::Blocked`], whose padding bytes (rows past `rows`, columns past
/// `k / 16`) are written with 0. `rows * cols` of it is `scale_len(layout, rows, k)`.
#[inline(always)]
pub const fn scale_grid(layout: crate::layout::ScaleLayout, rows: u64, k: u32) -> (u64, u32) {
    let cols = crate::layout::scale_cols(k);
    match layout {
        crate::layout::ScaleLayout::Plain => (rows, cols),
        crate::layout::ScaleLayout::Blocked => (rows.div_ceil(128) * 128, cols.div_ceil(4) * 4),
    }
}
