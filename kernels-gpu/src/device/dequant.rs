//! FP4 and E4M3 to fp16 in registers, as both kernels use it (the bit tricks themselves are
//! in [`crate::fp4`], shared with the host and tested there).

#[cfg(nvfp4_sm90a)]
use super::arch::wgmma;
use super::arch::{half, mma};
use crate::fp4::{
    BF16_SCALE_BOOST, E2M1_F16_SHIFT, W_BF16_SHIFT, e2m1x8_to_bf16x2_scaled,
    e2m1x8_to_f16x2_scaled, e4m3_to_f16_bits_scaled, e4m3_to_f32,
};
use crate::problem::Activation;

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

/// What a kernel variant's activations are, and how its weights are dequantized and
/// multiplied to match: NVFP4 or fp16 activations use fp16 weights and fp16 MMAs (the
/// provided methods), bf16 activations bf16 weights and bf16 MMAs.
pub trait Act {
    /// The activation kind (one kernel entry per kind).
    const KIND: Activation;
    /// What the epilogue multiplies the fp32 sums by (besides alpha): the factors the
    /// dequantized operands undershoot by.
    const SHIFT: f32;
    /// 16-bit activations already in the kernels' K order (each 16-byte unit's words pair
    /// value `i` with value `i + 4`, as the token pass writes them for the portable kernel):
    /// copied into shared memory as they are.
    const PAIRED: bool = false;
    /// 16-bit activations in the Hopper `_wt` kernels' blocked K order (see
    /// [`crate::fp4::blocked_k`]), as the token pass writes them in its `paired` = 2 mode: the
    /// weights are dequantized a whole scale block per thread and row.
    #[cfg(nvfp4_sm90a)]
    const BLOCKED: bool = false;
    /// The E4M3 scale byte `b` as a packed pair of the MMA's 16-bit type.
    #[inline(always)]
    fn scale(b: u32) -> u32 {
        scale_f16x2(b)
    }
    /// The E4M3 scale bytes `b0` and `b1` (low 8 bits each) as [`Act::scale`] gives them. On
    /// sm_90a (the portable kernels as the H100 and H200 run them) one `cvt.rn.f16x2.e4m3x2`
    /// and two byte permutes convert both, about a fifth of the instructions of two
    /// bit-twiddled conversions; elsewhere it is [`Act::scale`] twice.
    #[inline(always)]
    fn scale2(b0: u32, b1: u32) -> [u32; 2] {
        #[cfg(nvfp4_sm90a)]
        {
            let p = half::e4m3x2_to_f16x2((b0 | (b1 << 8)) as u16);
            [half::prmt(p, p, 0x1010), half::prmt(p, p, 0x3232)]
        }
        #[cfg(not(nvfp4_sm90a))]
        {
            [Self::scale(b0), Self::scale(b1)]
        }
    }
    /// The four E4M3 scale bytes of `sf` (byte `i` first... byte 3) as packed pairs of the
    /// MMA's 16-bit type, each the value [`Act::scale`] gives, with two hardware conversions
    /// (`cvt.rn.f16x2.e4m3x2`, sm_89+) instead of four bit-twiddled ones: what the Hopper
    /// kernels use (the W4A16 ones need four scales a row per chunk).
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    fn scales4(sf: u32) -> [u32; 4] {
        let lo = half::e4m3x2_to_f16x2(sf as u16);
        let hi = half::e4m3x2_to_f16x2((sf >> 16) as u16);
        [
            half::prmt(lo, lo, 0x1010),
            half::prmt(lo, lo, 0x3232),
            half::prmt(hi, hi, 0x1010),
            half::prmt(hi, hi, 0x3232),
        ]
    }
    /// Eight FP4 codes times the packed scale `s`: four words pairing code `i` with `i + 4`.
    #[inline(always)]
    fn fp4x8(x: u32, s: u32) -> [u32; 4] {
        fp4x8_scaled(x, s)
    }
    /// FP4 codes 0 and 4, and 2 and 6, of `x` times the packed scale `s`: words 0 and 2 of
    /// [`Act::fp4x8`] (see [`crate::fp4::fp4_byte_pair`]).
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    fn fp4_even(x: u32, s: u32) -> [u32; 2] {
        let w = crate::fp4::e2m1x8_even_to_f16x2_scaled(x);
        [half::mul2(w[0], s), half::mul2(w[1], s)]
    }
    /// `mma.sync m16n8k16` of the MMA's type: `d += a * b`.
    #[inline(always)]
    fn mma(d: &mut [f32; 4], a: [u32; 4], b0: u32, b1: u32) {
        mma::m16n8k16(d, a, b0, b1)
    }
    /// The wgmma of the MMA's type for 32, 64, 96 and 128 tokens.
    #[cfg(nvfp4_sm90a)]
    const WGMMA: [Wgmma; 4] = WGMMA_F16;
}

/// An asynchronous `wgmma m64nNk16` with A from registers (see `arch::wgmma`).
#[cfg(nvfp4_sm90a)]
pub type Wgmma = unsafe fn(&mut [f32; 64], &[u32; 4], u64);

#[cfg(nvfp4_sm90a)]
const WGMMA_F16: [Wgmma; 4] = [
    wgmma::m64n32k16,
    wgmma::m64n64k16,
    wgmma::m64n96k16,
    wgmma::m64n128k16,
];

/// NVFP4 activations (dequantized to fp16 like the weights).
pub struct Fp4Act;
/// fp16 activations.
pub struct F16Act;
/// bf16 activations.
pub struct Bf16Act;
/// fp16 activations in the Hopper `_wt` kernels' blocked K order (from the token pass): see
/// [`Act::BLOCKED`].
#[cfg(nvfp4_sm90a)]
pub struct F16BlockedAct;
/// fp16 activations in the kernels' K order (from the token pass): see [`Act::PAIRED`].
pub struct F16PairedAct;

impl Act for Fp4Act {
    const KIND: Activation = Activation::Nvfp4;
    const SHIFT: f32 = E2M1_F16_SHIFT * E2M1_F16_SHIFT;
}

impl Act for F16Act {
    const KIND: Activation = Activation::F16;
    const SHIFT: f32 = E2M1_F16_SHIFT;
}

impl Act for F16PairedAct {
    const KIND: Activation = Activation::F16;
    const SHIFT: f32 = E2M1_F16_SHIFT;
    const PAIRED: bool = true;
}

#[cfg(nvfp4_sm90a)]
impl Act for F16BlockedAct {
    const KIND: Activation = Activation::F16;
    const SHIFT: f32 = E2M1_F16_SHIFT;
    const BLOCKED: bool = true;
}

impl Act for Bf16Act {
    #[cfg(nvfp4_sm90a)]
    const WGMMA: [Wgmma; 4] = [
        wgmma::m64n32k16_bf16,
        wgmma::m64n64k16_bf16,
        wgmma::m64n96k16_bf16,
        wgmma::m64n128k16_bf16,
    ];
    const KIND: Activation = Activation::Bf16;
    const SHIFT: f32 = W_BF16_SHIFT;
    #[inline(always)]
    fn scale(b: u32) -> u32 {
        // Exact: an E4M3 value has at most 4 significant bits; times 2^100 it is a bf16
        // normal (2^91 .. 2^109); NaN codes give NaN.
        half::f32_to_bf16x2(e4m3_to_f32(b as u8) * BF16_SCALE_BOOST)
    }
    #[inline(always)]
    fn scale2(b0: u32, b1: u32) -> [u32; 2] {
        [Self::scale(b0), Self::scale(b1)]
    }
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    fn scales4(sf: u32) -> [u32; 4] {
        // Each scale exactly in fp16 (NaN kept), widened to f32 (exact), times the boost:
        // the same product as `scale`.
        let pairs = [
            half::e4m3x2_to_f16x2(sf as u16),
            half::e4m3x2_to_f16x2((sf >> 16) as u16),
        ];
        let one = |i: usize| {
            let h = (pairs[i / 2] >> (16 * (i % 2))) as u16;
            half::f32_to_bf16x2(half::f16_to_f32(h) * BF16_SCALE_BOOST)
        };
        [one(0), one(1), one(2), one(3)]
    }
    #[inline(always)]
    fn fp4x8(x: u32, s: u32) -> [u32; 4] {
        let w = e2m1x8_to_bf16x2_scaled(x);
        [
            half::mul2_bf16(w[0], s),
            half::mul2_bf16(w[1], s),
            half::mul2_bf16(w[2], s),
            half::mul2_bf16(w[3], s),
        ]
    }
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    fn fp4_even(x: u32, s: u32) -> [u32; 2] {
        let w = crate::fp4::e2m1x8_even_to_bf16x2_scaled(x);
        [half::mul2_bf16(w[0], s), half::mul2_bf16(w[1], s)]
    }
    #[inline(always)]
    fn mma(d: &mut [f32; 4], a: [u32; 4], b0: u32, b1: u32) {
        mma::m16n8k16_bf16(d, a, b0, b1)
    }
}

/// [`a_fragments`] for the weights of kernel variant `A`.
#[inline(always)]
pub fn a_fragments_for<A: Act>(lo: u32, hi: u32, s_lo: u32, s_hi: u32) -> [[u32; 4]; 2] {
    let lo = A::fp4x8(lo, s_lo);
    let hi = A::fp4x8(hi, s_hi);
    [[lo[0], hi[0], lo[1], hi[1]], [lo[2], hi[2], lo[3], hi[3]]]
}

/// Eight consecutive 16-bit activations as loaded (four words, element `2i` in the low half
/// of word `i`, `2i + 1` in the high half) in the kernels' K order: four words pairing element `i`
/// with element `i + 4`, as [`fp4x8_scaled`] pairs FP4 codes.
#[inline(always)]
pub fn pair_i_i4(v: [u32; 4]) -> [u32; 4] {
    [
        half::prmt(v[0], v[2], 0x5410),
        half::prmt(v[0], v[2], 0x7632),
        half::prmt(v[1], v[3], 0x5410),
        half::prmt(v[1], v[3], 0x7632),
    ]
}
