//! FP4 E2M1 and FP8 E4M3 (`e4m3fn`) decoding, and the exact fp16 bit tricks the kernels use.
//!
//! Host and device share these functions: the CPU tests check them against independently
//! written tables, and the kernels dequantize with the same bit layouts.

/// Value of one FP4 E2M1 code (the low 4 bits of `nibble`): sign | e1 e0 | m, bias 1.
/// Magnitudes are {0, 0.5, 1, 1.5, 2, 3, 4, 6}; code 0b1000 is -0.0.
#[inline(always)]
pub fn e2m1_to_f32(nibble: u8) -> f32 {
    let n = nibble & 0xF;
    let exp = (n >> 1) & 0x3;
    let man = (n & 1) as f32;
    let mag = if exp == 0 {
        man * 0.5
    } else {
        // 2^(exp-1) * (1 + m/2)
        ((1u32 << exp) as f32) * 0.5 * (1.0 + man * 0.5)
    };
    if n & 0x8 != 0 { -mag } else { mag }
}

/// Value of one FP8 E4M3 (`e4m3fn`) code: bias 7, subnormals, no infinities; 0x7F and 0xFF
/// are NaN; the largest finite magnitude is 448.
#[inline(always)]
pub fn e4m3_to_f32(byte: u8) -> f32 {
    let exp = ((byte >> 3) & 0xF) as i32;
    let man = (byte & 0x7) as f32;
    if byte & 0x7F == 0x7F {
        return f32::NAN;
    }
    let mag = if exp == 0 {
        man * (1.0 / 512.0) // m/8 * 2^-6
    } else {
        // 2^(exp-7) * (1 + m/8), built exactly from the f32 exponent field.
        f32::from_bits(((exp - 7 + 127) as u32) << 23) * (1.0 + man * 0.125)
    };
    if byte & 0x80 != 0 { -mag } else { mag }
}

/// fp16 bits of an E4M3 scale, *before* the factor 2^8 the kernels fold elsewhere: the E4M3
/// exponent and mantissa are moved under the fp16 exponent (`(b & 0x7F) << 7`), which gives
/// `value * 2^-8` exactly (E4M3 subnormals land on fp16 subnormals). NaN codes give an fp16 NaN.
#[inline(always)]
pub const fn e4m3_to_f16_bits_scaled(byte: u8) -> u16 {
    if byte & 0x7F == 0x7F {
        return 0x7E00 | (((byte as u16) & 0x80) << 8);
    }
    (((byte as u16) & 0x7F) << 7) | (((byte as u16) & 0x80) << 8)
}

/// Factor by which [`e4m3_to_f16_bits_scaled`] undershoots: the scale is `value * 2^-8`.
pub const E4M3_F16_SHIFT: f32 = 256.0;

/// The four fp16x2 words (as `u32`: low half = first element) that the kernels make from eight
/// FP4 codes packed in `x` (byte j holds codes 2j (low nibble) and 2j+1 (high nibble)).
///
/// Word `i` pairs code `i` (low half) with code `i + 4` (high half), whose bits are 16 apart,
/// so one shift and one mask move both under the fp16 exponent. Each half is
/// `e2m1 value * 2^-14` exactly (0.5 lands on an fp16 subnormal); the kernels fold 2^14 into
/// the epilogue factor. Since the dot product over
/// one scale block does not depend on the order of k, the kernels pair k the same way on both
/// operands and never need to un-shuffle.
#[inline(always)]
pub fn e2m1x8_to_f16x2_scaled(x: u32) -> [u32; 4] {
    // Sign (15) and magnitude bits (e1 e0 m at 9..11) of both halves.
    const MASK: u32 = 0x8E00_8E00;
    // In `even` the codes of the low nibbles (0, 2, 4, 6) keep their magnitude bits at
    // 8j..8j+2 and get their sign, from `x` rotated left by 3, at 8j+6; in `odd` the codes of
    // the high nibbles (1, 3, 5, 7) keep theirs at 8j+4..8j+6 and get their sign at 8j+10
    // (code 7's at bit 2, through the rotation). Magnitude and sign are then 6 bits apart, as
    // in fp16, so one shift and one mask place a pair (codes 0 and 4 share the shift, ...).
    // The other bits of `even` and `odd` are left-overs that the masks drop. Eleven integer
    // instructions for the four words, against sixteen for separate sign and magnitude shifts.
    let r = x.rotate_left(3);
    let even = select_bits(0x0707_0707, x, r);
    let odd = select_bits(0x7070_7070, x, r);
    [
        (even << 9) & MASK,
        (odd << 5) & MASK,
        (even << 1) & MASK,
        odd.rotate_right(3) & MASK,
    ]
}

/// Words 0 and 2 of [`e2m1x8_to_f16x2_scaled`] alone: codes 0 and 4, and codes 2 and 6, of
/// `x` (low half first), each `e2m1 value * 2^-14`; the odd nibbles are ignored. Six integer
/// instructions for the two words. With [`fp4_byte_pair`] this converts FP4 in natural K
/// order (the Hopper fp16-activation kernels' weights).
#[inline(always)]
pub fn e2m1x8_even_to_f16x2_scaled(x: u32) -> [u32; 2] {
    const MASK: u32 = 0x8E00_8E00;
    // As in `e2m1x8_to_f16x2_scaled`: magnitude bits of the low nibbles at 8j..8j+2, their
    // signs (from `x` rotated left by 3) at 8j+6.
    let even = select_bits(0x0707_0707, x, x.rotate_left(3));
    [(even << 9) & MASK, (even << 1) & MASK]
}

/// Words 0 and 2 of [`e2m1x8_to_bf16x2_scaled`]: codes 0 and 4, and codes 2 and 6, of `x`
/// as bf16 pairs, each `e2m1 value * 2^-126`.
#[inline(always)]
pub const fn e2m1x8_even_to_bf16x2_scaled(x: u32) -> [u32; 2] {
    let w = e2m1x8_to_bf16x2_scaled(x);
    [w[0], w[2]]
}

/// The `prmt` selector of [`fp4_byte_pair`] for byte `t` (< 4) of each word: output bytes
/// `w0[t], w1[t], w0[t], w1[t]`.
#[inline(always)]
pub const fn fp4_byte_pair_selector(t: u32) -> u32 {
    t | ((4 + t) << 4) | (t << 8) | ((4 + t) << 12)
}

/// Byte `t` of `w0` and byte `t` of `w1`, where byte `t` of a word of a row holds FP4 codes
/// `2t` (low nibble) and `2t + 1`, arranged for [`e2m1x8_even_to_f16x2_scaled`] (and the bf16
/// one): byte 0 is `w0`'s, byte 1 `w1`'s, and bytes 2 and 3 are the same two bytes shifted
/// right by 4 bits, so each byte's high nibble sits 16 bits above its low one. Word 0 of the
/// conversion then pairs `w0`'s two codes, word 1 `w1`'s. `sel` is
/// [`fp4_byte_pair_selector`]`(t)`. A `prmt`, a shift and a `lop3` on the GPU.
#[inline(always)]
pub fn fp4_byte_pair(w0: u32, w1: u32, sel: u32) -> u32 {
    let m = byte_permute(w0, w1, sel);
    select_bits(0x0000_FFFF, m, m >> 4)
}

/// `prmt.b32` (default mode): byte `i` of the result is byte `(sel >> 4i) & 7` of `b:a`
/// (selector nibbles with bit 3 set are not used here).
#[inline(always)]
fn byte_permute(a: u32, b: u32, sel: u32) -> u32 {
    #[cfg(target_arch = "nvptx64")]
    {
        let d: u32;
        // SAFETY: register-only arithmetic.
        unsafe {
            core::arch::asm!("prmt.b32 {d}, {a}, {b}, {s};", d = out(reg32) d,
                a = in(reg32) a, b = in(reg32) b, s = in(reg32) sel,
                options(pure, nomem, nostack, preserves_flags));
        }
        d
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        let bytes = ((b as u64) << 32) | a as u64;
        (0..4).fold(0, |d, i| {
            let j = (sel >> (4 * i)) & 7;
            d | ((((bytes >> (8 * j)) & 0xFF) as u32) << (8 * i))
        })
    }
}

/// `(a & mask) | (b & !mask)`: one `lop3` on the GPU (ptxas does not always merge the two
/// masked halves into one when the masks are separate constants).
#[inline(always)]
fn select_bits(mask: u32, a: u32, b: u32) -> u32 {
    #[cfg(target_arch = "nvptx64")]
    {
        let d: u32;
        // SAFETY: register-only arithmetic. 0xE4 is the truth table of (a & c) | (b & !c)
        // over a = 0xF0, b = 0xCC, c = 0xAA.
        unsafe {
            core::arch::asm!("lop3.b32 {d}, {a}, {b}, {c}, 0xE4;", d = out(reg32) d,
                a = in(reg32) a, b = in(reg32) b, c = in(reg32) mask,
                options(pure, nomem, nostack, preserves_flags));
        }
        d
    }
    #[cfg(not(target_arch = "nvptx64"))]
    {
        (a & mask) | (b & !mask)
    }
}

/// The Hopper `_wt` kernels' blocked K order (NVFP4 groups after the token pass, every `k` a
/// multiple of 64): within each 64-value chunk, logical position `l` (the k index wgmma
/// multiplies) holds value `blocked_k(l)` of the chunk, on both operands, so the sums are
/// the same as in natural order. With `l = 16 s + 8 q + 2 t + e` (k-step `s`, the A
/// fragment's register pair `q`, quad position `t`, half `e`), the value is
/// `16 t + 8 (s / 2) + 4 e + 2 (s % 2) + q`: thread `t` of an MMA quad multiplies exactly the
/// 16 values of scale block `t` in every k-step, so it dequantizes a row's 8 FP4 bytes under
/// one scale with [`e2m1x8_to_f16x2_scaled`] (word `i` of FP4 word `h` of the block, values
/// `8 h + i` and `8 h + i + 4`, is the A register of k-step `2 h + i / 2`, pair `q = i % 2`).
/// The token pass writes each fp16 token row in this order (see [`blocked_word_offset`]).
#[inline(always)]
pub const fn blocked_k(l: u32) -> u32 {
    let (s, q, t, e) = (l / 16, (l / 8) % 2, (l / 2) % 4, l % 2);
    16 * t + 8 * (s / 2) + 4 * e + 2 * (s % 2) + q
}

/// Byte offset, inside a 64-value chunk of an fp16 row in the blocked K order ([`blocked_k`]),
/// of the fp16 pair that word `i` of [`e2m1x8_to_f16x2_scaled`] makes from FP4 word `h` of
/// scale block `t` (values `16 t + 8 h + i` and `+ 4`): logical positions `8 (4 h + i) + 2 t`
/// and `+ 1`.
#[inline(always)]
pub const fn blocked_word_offset(t: u32, h: u32, i: u32) -> u32 {
    16 * (4 * h + i) + 4 * t
}

/// Factor by which [`e2m1x8_to_f16x2_scaled`] undershoots: each value is `e2m1 * 2^-14`.
pub const E2M1_F16_SHIFT: f32 = 16384.0;

/// [`e2m1x8_to_f16x2_scaled`] for bf16 (the weights of the bf16-activation kernels): the same
/// pairing (word `i` = code `i` low, code `i + 4` high), each half `e2m1 value * 2^-126`
/// exactly (the magnitude bits go under bf16's lowest exponent bits; 0.5 lands on a bf16
/// subnormal).
#[inline(always)]
pub const fn e2m1x8_to_bf16x2_scaled(x: u32) -> [u32; 4] {
    // Magnitude bits (e1 e0 m) of code i sit at 4i..4i+2 and go to 6..8; sign 4i+3 to 15.
    const MAG: u32 = 0x01C0_01C0;
    const SIGN: u32 = 0x8000_8000;
    [
        ((x << 6) & MAG) | ((x << 12) & SIGN),
        ((x << 2) & MAG) | ((x << 8) & SIGN),
        ((x >> 2) & MAG) | ((x << 4) & SIGN),
        ((x >> 6) & MAG) | (x & SIGN),
    ]
}

/// The bf16-activation kernels multiply each E4M3 scale by this (exact in f32 and bf16) so
/// that weight times scale, `e2m1 * 2^-126 * scale * 2^100`, stays a bf16 normal.
pub const BF16_SCALE_BOOST: f32 = f32::from_bits((127 + 100) << 23);

/// Factor by which a bf16 weight undershoots `e2m1 * scale`: `2^26` (`2^126 / 2^100`).
pub const W_BF16_SHIFT: f32 = 67_108_864.0;

/// Decodes a bf16 bit pattern to f32 (exact: bf16 is the top half of an f32).
#[inline(always)]
pub const fn bf16_bits_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Decodes an IEEE binary16 bit pattern to f32 (exact; used by tests and the reference).
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1F) as i32;
    let man = (h & 0x3FF) as f32;
    if exp == 0 {
        sign * man * (1.0 / 16_777_216.0) // 2^-24
    } else if exp == 31 {
        if h & 0x3FF == 0 {
            sign * f32::INFINITY
        } else {
            f32::NAN
        }
    } else {
        sign * f32::from_bits(((exp - 15 + 127) as u32) << 23) * (1.0 + man / 1024.0)
    }
}
