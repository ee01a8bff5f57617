//! The shared decoders of `kernels_gpu::fp4` against values written down independently.

use half::f16;
use kernels_gpu::fp4::{
    E2M1_F16_SHIFT, E4M3_F16_SHIFT, bf16_bits_to_f32, blocked_k, blocked_word_offset, e2m1_to_f32,
    e2m1x8_even_to_bf16x2_scaled, e2m1x8_even_to_f16x2_scaled, e2m1x8_to_bf16x2_scaled,
    e2m1x8_to_f16x2_scaled, e4m3_to_f16_bits_scaled, e4m3_to_f32, f16_bits_to_f32, fp4_byte_pair,
    fp4_byte_pair_selector,
};

/// E2M1 by code, typed in from the OCP MX spec's table (sign bit 3).
const E2M1_TABLE: [f64; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// E4M3 (`e4m3fn`) from its definition, written differently from the decoder under test:
/// the significand as an integer `(8 + m)` (normal) or `m` (subnormal) times a power of two.
fn e4m3_expected(code: u8) -> f64 {
    let s = if code >= 0x80 { -1.0 } else { 1.0 };
    let e = (code as i32 % 128) / 8;
    let m = (code % 8) as f64;
    if e == 15 && m == 7.0 {
        return f64::NAN;
    }
    if e == 0 {
        s * m * (2.0f64).powi(-9)
    } else {
        s * (8.0 + m) * (2.0f64).powi(e - 10)
    }
}

/// Same value and, for zeros, same sign; NaN matches NaN.
fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a == b && a.is_sign_negative() == b.is_sign_negative())
}

#[test]
fn e2m1_all_codes() {
    for code in 0u8..16 {
        let got = e2m1_to_f32(code) as f64;
        assert!(
            same(got, E2M1_TABLE[code as usize]),
            "code {code:#x}: {got}"
        );
        // Only the low nibble counts.
        assert!(same(
            e2m1_to_f32(code | 0xF0) as f64,
            E2M1_TABLE[code as usize]
        ));
    }
}

#[test]
fn e4m3_all_codes() {
    for code in 0..=255u8 {
        let got = e4m3_to_f32(code) as f64;
        let want = e4m3_expected(code);
        assert!(same(got, want), "code {code:#04x}: got {got}, want {want}");
    }
}

#[test]
fn e4m3_known_values() {
    let cases: [(u8, f64); 12] = [
        (0x00, 0.0),
        (0x80, -0.0),
        (0x01, 1.0 / 512.0), // smallest subnormal 2^-9
        (0x07, 7.0 / 512.0), // largest subnormal
        (0x08, 1.0 / 64.0),  // smallest normal 2^-6
        (0x38, 1.0),
        (0x40, 2.0),
        (0x3C, 1.5),
        (0x7E, 448.0),
        (0xFE, -448.0),
        (0xB8, -1.0),
        (0x78, 256.0),
    ];
    for (code, want) in cases {
        assert!(same(e4m3_to_f32(code) as f64, want), "code {code:#04x}");
    }
    assert!(e4m3_to_f32(0x7F).is_nan());
    assert!(e4m3_to_f32(0xFF).is_nan());
    let nans = (0..=255u8).filter(|&c| e4m3_to_f32(c).is_nan()).count();
    assert_eq!(
        nans, 2,
        "only 0x7F and 0xFF are NaN; e4m3fn has no infinities"
    );
    assert!((0..=255u8).all(|c| e4m3_to_f32(c).is_finite() || e4m3_to_f32(c).is_nan()));
}

#[test]
fn f16_bits_decoder_matches_half() {
    for bits in 0..=u16::MAX {
        let got = f16_bits_to_f32(bits) as f64;
        let want = f16::from_bits(bits).to_f64();
        assert!(same(got, want), "bits {bits:#06x}: got {got}, want {want}");
    }
}

/// Every byte pair of a word, every word position, with the other nibbles set to patterns
/// that would show up if they leaked into the word under test.
#[test]
fn e2m1x8_to_f16x2_all_pairs_all_positions() {
    const FILLERS: [u32; 4] = [0x0000_0000, 0xFFFF_FFFF, 0x7777_7777, 0x8888_8888];
    let scale = 1.0 / E2M1_F16_SHIFT as f64; // 2^-14
    assert_eq!(scale, 2.0f64.powi(-14));
    for filler in FILLERS {
        for pos in 0..4u32 {
            for lo in 0..16u32 {
                for hi in 0..16u32 {
                    let clear = !((0xF << (4 * pos)) | (0xF << (4 * (pos + 4))));
                    let x = (filler & clear) | (lo << (4 * pos)) | (hi << (4 * (pos + 4)));
                    let word = e2m1x8_to_f16x2_scaled(x)[pos as usize];
                    let (got_lo, got_hi) = (word as u16, (word >> 16) as u16);
                    for (got, code) in [(got_lo, lo), (got_hi, hi)] {
                        let want = E2M1_TABLE[code as usize] * scale;
                        let want_bits = f16::from_f64(want).to_bits();
                        // The product is exact in fp16 (0.5 * 2^-14 is a subnormal).
                        assert_eq!(f16::from_bits(want_bits).to_f64(), want);
                        assert_eq!(
                            got, want_bits,
                            "x = {x:#010x}, word {pos}, code {code:#x}: got {got:#06x}"
                        );
                        assert!(same(f16_bits_to_f32(got) as f64, want));
                    }
                }
            }
        }
    }
}

/// Words of random bits (every nibble set independently, a xorshift stream): each half of
/// each word against the table value of the code it should hold, so no bit of a neighbouring
/// code can leak into a word whatever the other seven codes are.
#[test]
fn e2m1x8_to_f16x2_random_words() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..1_000_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let x = (state >> 16) as u32;
        let words = e2m1x8_to_f16x2_scaled(x);
        let even = e2m1x8_even_to_f16x2_scaled(x);
        assert_eq!(even, [words[0], words[2]], "x = {x:#010x}");
        let bf = e2m1x8_to_bf16x2_scaled(x);
        assert_eq!(
            e2m1x8_even_to_bf16x2_scaled(x),
            [bf[0], bf[2]],
            "x = {x:#010x}"
        );
        for (i, word) in words.iter().enumerate() {
            for (half, code) in [(*word as u16, i), ((*word >> 16) as u16, i + 4)] {
                let nibble = (x >> (4 * code)) & 0xF;
                let want = f16::from_f64(E2M1_TABLE[nibble as usize] / 16384.0).to_bits();
                assert_eq!(half, want, "x = {x:#010x}, word {i}, code {code}");
            }
        }
    }
}

/// Natural-K-order conversion (the Hopper fp16-activation kernels' weights): for every byte
/// position `t` and every pair of bytes at that position, with the other bytes of both words
/// set to fillers that would show if they leaked, `fp4_byte_pair` then the even-nibble
/// conversion gives word 0 = the first byte's codes (low nibble, high nibble) and word 1 =
/// the second byte's, in fp16 (`* 2^-14`) and bf16 (`* 2^-126`), against the E2M1 table.
#[test]
fn fp4_byte_pair_natural_order_all_bytes() {
    assert_eq!(fp4_byte_pair_selector(0), 0x4040);
    assert_eq!(fp4_byte_pair_selector(3), 0x7373);
    const FILLERS: [u32; 3] = [0x0000_0000, 0xFFFF_FFFF, 0x9E37_79B9];
    let two126 = 2.0f64.powi(126);
    for filler in FILLERS {
        for t in 0..4u32 {
            let sel = fp4_byte_pair_selector(t);
            let clear = !(0xFF << (8 * t));
            for b0 in 0..256u32 {
                for b1 in 0..256u32 {
                    let w0 = (filler & clear) | (b0 << (8 * t));
                    let w1 = (filler.rotate_left(7) & clear) | (b1 << (8 * t));
                    let x = fp4_byte_pair(w0, w1, sel);
                    let f16s = e2m1x8_even_to_f16x2_scaled(x);
                    let bf16s = e2m1x8_even_to_bf16x2_scaled(x);
                    for (word, byte) in [(0, b0), (1, b1)] {
                        for (half, code) in [(0, byte & 0xF), (1, byte >> 4)] {
                            let want = E2M1_TABLE[code as usize];
                            let h = (f16s[word] >> (16 * half)) as u16;
                            let want_h = f16::from_f64(want / 16384.0).to_bits();
                            assert_eq!(h, want_h, "t {t}, bytes {b0:#04x} {b1:#04x}, word {word}");
                            let b = bf16_bits_to_f32((bf16s[word] >> (16 * half)) as u16) as f64;
                            assert!(
                                same(b * two126, want),
                                "bf16: t {t}, bytes {b0:#04x} {b1:#04x}, word {word}: {b}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Element order of the four words: word i pairs code i with code i + 4.
#[test]
fn e2m1x8_pairing_order() {
    // Codes 0..8 = 0, 0.5, 1, 1.5, 2, 3, 4, 6 in nibbles 0..8.
    let x = 0x7654_3210u32;
    let words = e2m1x8_to_f16x2_scaled(x);
    for i in 0..4 {
        let lo = f16::from_bits(words[i] as u16).to_f64() * 16384.0;
        let hi = f16::from_bits((words[i] >> 16) as u16).to_f64() * 16384.0;
        assert_eq!(lo, E2M1_TABLE[i]);
        assert_eq!(hi, E2M1_TABLE[i + 4]);
    }
}

#[test]
fn e4m3_to_f16_scaled_all_codes() {
    assert_eq!(E4M3_F16_SHIFT, 256.0);
    for code in 0..=255u8 {
        let h = f16::from_bits(e4m3_to_f16_bits_scaled(code)).to_f64();
        let want = e4m3_expected(code);
        assert!(
            same(h * 256.0, want),
            "code {code:#04x}: {h} * 256 != {want}"
        );
    }
}

/// The blocked K order of the Hopper `_wt` kernels after the token pass: a permutation of
/// each 64-value chunk; the token pass's word placement puts every dequantized pair where the
/// order says; and the A fragments the kernel builds (word `i` of FP4 word `h` of scale block
/// `t` as k-step `2h + i/2`, register pair `i % 2`) carry, in wgmma's fragment layout
/// (register pair `q` of thread `t` = k `16 s + 8 q + 2 t`, `+ 1`), the values the order puts
/// there.
#[test]
fn blocked_k_order_is_consistent() {
    let mut seen = [false; 64];
    for l in 0..64 {
        let p = blocked_k(l);
        assert!(p < 64 && !seen[p as usize], "position {l} -> {p}");
        seen[p as usize] = true;
        // The scale block of every value thread t multiplies is t.
        assert_eq!(p / 16, (l / 2) % 4, "position {l}");
    }
    for t in 0..4 {
        for h in 0..2 {
            for i in 0..4 {
                // The pass: the pair (values 16t + 8h + i, + 4) at this byte offset.
                let at = blocked_word_offset(t, h, i);
                assert_eq!(at % 4, 0);
                for e in 0..2 {
                    let value = 16 * t + 8 * h + i + 4 * e;
                    assert_eq!(blocked_k(at / 2 + e), value, "pass t {t} h {h} i {i} e {e}");
                    // The kernel: k-step 2h + i/2, register pair i % 2 of quad thread t.
                    let (s, q) = (2 * h + i / 2, i % 2);
                    assert_eq!(blocked_k(16 * s + 8 * q + 2 * t + e), value, "kernel");
                }
            }
        }
    }
}
