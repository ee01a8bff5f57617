//! The CPU reference (`nvfp4::reference`), the generators (`nvfp4::gen`) and `compare`,
//! checked against cases worked out by hand.

use half::f16;
use kernels_gpu::layout::{ScaleLayout, scale_offset};
use nvfp4::r#gen::{Distribution, Rng, group, pack_scales, problem};
use nvfp4::problem::HostProblem;
use nvfp4::reference::{
    Comparison, Tolerance, compare, compare_k, dequantize, full_range_bound, gemm, gemm_with_abs,
    round_f16,
};

/// Packs FP4 codes two per byte, element 2j in the low nibble of byte j.
fn pack(codes: &[u8]) -> Vec<u8> {
    assert!(codes.len().is_multiple_of(2));
    codes
        .chunks(2)
        .map(|p| (p[0] & 0xF) | (p[1] << 4))
        .collect()
}

/// A problem with plain scales from codes given row by row.
fn plain_problem(
    (m, n, k): (usize, usize, usize),
    a: &[u8],
    sfa: &[u8],
    b: &[u8],
    sfb: &[u8],
    alpha: f32,
) -> HostProblem {
    assert_eq!((a.len(), b.len()), (m * k, n * k));
    HostProblem {
        m,
        n,
        k,
        a: pack(a),
        sfa: sfa.to_vec(),
        sfa_layout: ScaleLayout::Plain,
        b: pack(b),
        sfb: sfb.to_vec(),
        sfb_layout: ScaleLayout::Plain,
        alpha,
    }
}

/// 16 codes: the given ones first, zeros after.
fn block(first: &[u8]) -> Vec<u8> {
    let mut v = first.to_vec();
    v.resize(16, 0);
    v
}

#[test]
fn one_by_one_by_sixteen() {
    // a = [1, -0.5, 6, 0, 0...], b = [2, 3, -1.5, 4, 0...]
    let a = block(&[0x2, 0x9, 0x7, 0x0]);
    let b = block(&[0x4, 0x5, 0xB, 0x6]);
    assert_eq!(pack(&a)[..2], [0x92, 0x07]);
    assert_eq!(pack(&b)[..2], [0x54, 0x6B]);
    // dot = 2 - 1.5 - 9 + 0 = -8.5; sa = 0x3C = 1.5, sb = 0x30 = 0.5: -8.5 * 0.75 = -6.375.
    let p = plain_problem((1, 1, 16), &a, &[0x3C], &b, &[0x30], 1.0);
    assert_eq!(gemm(&p), vec![-6.375]);
    let (c, s) = gemm_with_abs(&p);
    assert_eq!(c, vec![-6.375]);
    assert_eq!(s, vec![(2.0 + 1.5 + 9.0) * 0.75]);
    // alpha = 0.5 halves it; |alpha| scales the magnitude sum too.
    let p = plain_problem((1, 1, 16), &a, &[0x3C], &b, &[0x30], -0.5);
    assert_eq!(gemm_with_abs(&p), (vec![3.1875], vec![12.5 * 0.75 * 0.5]));
    assert_eq!(round_f16(&gemm(&p)), vec![f16::from_f64(3.1875)]);
}

#[test]
fn two_blocks_two_rows() {
    // Row 0: block 0 all 1.0, block 1 all 0.5; row 1: block 0 all -1.0, block 1 all 0.
    // B: all 2.0. sfa = [[1, 2], [2^-6, 2^-9]], sfb = [[0.5, 4]].
    let a: Vec<u8> = [[0x2u8; 16], [0x1; 16], [0xA; 16], [0x0; 16]].concat();
    let b = vec![0x4u8; 32];
    let p = plain_problem(
        (2, 1, 32),
        &a,
        &[0x38, 0x40, 0x08, 0x01],
        &b,
        &[0x30, 0x48],
        1.0,
    );
    // row 0: 16 * 1 * 1 * 2 * 0.5 + 16 * 0.5 * 2 * 2 * 4 = 16 + 128
    // row 1: 16 * -1 * 2^-6 * 2 * 0.5 + 0 = -0.25
    assert_eq!(gemm(&p), vec![144.0, -0.25]);
    let d = dequantize(2, 32, &p.a, &p.sfa, ScaleLayout::Plain);
    assert_eq!(&d[..16], &[1.0; 16]);
    assert_eq!(&d[16..32], &[1.0; 16]); // 0.5 * 2
    assert_eq!(&d[32..48], &[-1.0 / 64.0; 16]);
    assert_eq!(&d[48..], &[0.0; 16]);
}

#[test]
fn nan_scale_gives_nan_row() {
    let a: Vec<u8> = [[0x2u8; 16], [0x0; 16], [0x2; 16], [0x2; 16]].concat();
    let b: Vec<u8> = [[0x2u8; 32], [0x3; 32]].concat();
    // A's row 0 has a NaN scale on a block of zeros: still NaN (0 * NaN), for every column.
    let p = plain_problem(
        (2, 2, 32),
        &a,
        &[0x38, 0x7F, 0x38, 0x38],
        &b,
        &[0x38; 4],
        1.0,
    );
    let c = gemm(&p);
    assert!(c[0].is_nan() && c[1].is_nan(), "{c:?}");
    assert_eq!(&c[2..], &[32.0, 48.0]);
    assert!(round_f16(&c)[0].is_nan());
    // B's NaN (0xFF) poisons a column.
    let p = plain_problem(
        (2, 2, 32),
        &a,
        &[0x38; 4],
        &b,
        &[0x38, 0x38, 0xFF, 0x38],
        1.0,
    );
    let c = gemm(&p);
    assert!(
        !c[0].is_nan() && c[1].is_nan() && !c[2].is_nan() && c[3].is_nan(),
        "{c:?}"
    );
}

#[test]
fn overflow_rounds_to_infinity() {
    // 16 * (6 * 448)^2 = 115_605_504, far beyond fp16's 65504.
    let a = vec![0x7u8; 16];
    let b: Vec<u8> = [[0x7u8; 16], [0xF; 16]].concat();
    let p = plain_problem((1, 2, 16), &a, &[0x7E], &b, &[0x7E, 0x7E], 1.0);
    let c = gemm(&p);
    assert_eq!(c, vec![115_605_504.0, -115_605_504.0]);
    let h = round_f16(&c);
    assert_eq!(h, vec![f16::INFINITY, f16::NEG_INFINITY]);
    // One term of 1.0 times alpha: 65504 is the largest fp16, 65520 the tie that rounds up.
    let one = block(&[0x2]);
    for (alpha, want) in [
        (65504.0f32, f16::MAX),
        (65519.0, f16::MAX),
        (65520.0, f16::INFINITY),
    ] {
        let p = plain_problem((1, 1, 16), &one, &[0x38], &one, &[0x38], alpha);
        assert_eq!(round_f16(&gemm(&p)), vec![want], "alpha {alpha}");
    }
}

#[test]
fn empty_problems() {
    let p = plain_problem((0, 3, 32), &[], &[], &[0x2; 96], &[0x38; 6], 1.0);
    assert!(gemm(&p).is_empty());
    assert_eq!(gemm_with_abs(&p), (vec![], vec![]));
    let p = plain_problem((2, 0, 32), &[0x2; 64], &[0x38; 4], &[], &[], 1.0);
    assert!(gemm(&p).is_empty());
    let mut rng = Rng::new(1);
    let p = problem(
        &mut rng,
        0,
        64,
        128,
        Distribution::FullRange,
        ScaleLayout::Blocked,
        ScaleLayout::Blocked,
    );
    assert!(p.a.is_empty() && p.sfa.is_empty());
    assert!(gemm(&p).is_empty());
}

/// Independent triple loop: decodes every element with table lookups written here.
fn naive(p: &HostProblem) -> Vec<f64> {
    const E2M1: [f64; 16] = [
        0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
    ];
    let e4m3 = |c: u8| -> f64 {
        let e = ((c >> 3) & 15) as i32;
        let m = (c & 7) as f64;
        let v = if c & 0x7F == 0x7F {
            f64::NAN
        } else if e == 0 {
            m * 2f64.powi(-9)
        } else {
            (8.0 + m) * 2f64.powi(e - 10)
        };
        if c & 0x80 != 0 { -v } else { v }
    };
    let el = |data: &[u8], scales: &[u8], layout, r: usize, j: usize| -> f64 {
        let byte = data[r * p.k / 2 + j / 2];
        let code = if j.is_multiple_of(2) {
            byte & 15
        } else {
            byte >> 4
        };
        let s = scales[scale_offset(layout, r as u64, (j / 16) as u64, p.k as u32) as usize];
        E2M1[code as usize] * e4m3(s)
    };
    let mut c = vec![0.0; p.m * p.n];
    for i in 0..p.m {
        for j in 0..p.n {
            let mut s = 0.0;
            for kk in 0..p.k {
                s += el(&p.a, &p.sfa, p.sfa_layout, i, kk) * el(&p.b, &p.sfb, p.sfb_layout, j, kk);
            }
            c[i * p.n + j] = s * p.alpha as f64;
        }
    }
    c
}

#[test]
fn matches_naive_loop_all_layouts() {
    let mut rng = Rng::new(2024);
    let layouts = [ScaleLayout::Plain, ScaleLayout::Blocked];
    for (m, n, k) in [(3, 5, 48), (33, 17, 80), (130, 9, 16)] {
        for la in layouts {
            for lb in layouts {
                for dist in [Distribution::GpuMode, Distribution::FullRange] {
                    let mut p = problem(&mut rng, m, n, k, dist, la, lb);
                    p.alpha = 0.75;
                    let want = naive(&p);
                    let got = gemm(&p);
                    assert_eq!(got, want, "{m}x{n}x{k} {la:?} {lb:?} {dist:?}");
                }
            }
        }
    }
}

/// The same logical scales give bit-identical results in either layout (padding, full of
/// NaN codes, is never read).
#[test]
fn layouts_agree() {
    let mut rng = Rng::new(99);
    let (m, n, k) = (70, 130, 400);
    let p = problem(
        &mut rng,
        m,
        n,
        k,
        Distribution::FullRange,
        ScaleLayout::Plain,
        ScaleLayout::Plain,
    );
    let mut q = p.clone();
    q.sfa = pack_scales(ScaleLayout::Blocked, m, k, &p.sfa, || 0x7F);
    q.sfa_layout = ScaleLayout::Blocked;
    q.sfb = pack_scales(ScaleLayout::Blocked, n, k, &p.sfb, || 0xFF);
    q.sfb_layout = ScaleLayout::Blocked;
    let (cp, cq) = (gemm(&p), gemm(&q));
    assert!(cp.iter().all(|v| v.is_finite()));
    assert_eq!(cp, cq);
}

#[test]
fn round_f16_cases() {
    let cases: [(f64, u16); 18] = [
        (1.0, 0x3C00),
        (1.0 + 2f64.powi(-11), 0x3C00),       // tie, to even
        (1.0 + 3.0 * 2f64.powi(-11), 0x3C02), // tie, to even (up)
        (1.0 + 2f64.powi(-11) + 2f64.powi(-40), 0x3C01), // f32 would round to the tie first
        (1.0 + 2f64.powi(-11) - 2f64.powi(-40), 0x3C00),
        (2.0 - 2f64.powi(-11), 0x4000), // tie with odd 2 - 2^-10: carries into the exponent
        (65504.0, 0x7BFF),
        (65519.99, 0x7BFF),
        (65520.0, 0x7C00),
        (-65520.0, 0xFC00),
        (1e300, 0x7C00),
        (-0.0, 0x8000),
        (2f64.powi(-24), 0x0001),
        (2f64.powi(-25), 0x0000), // tie with 0, to even
        (2f64.powi(-25) + 2f64.powi(-60), 0x0001),
        (3.0 * 2f64.powi(-25), 0x0002),
        ((1024.0 - 0.5) * 2f64.powi(-24), 0x0400), // largest subnormal + half: to min normal
        (-1e-30, 0x8000),
    ];
    for (x, bits) in cases {
        assert_eq!(round_f16(&[x])[0].to_bits(), bits, "{x:e}");
    }
    assert!(round_f16(&[f64::NAN])[0].is_nan());
    assert_eq!(
        round_f16(&[f64::INFINITY, f64::NEG_INFINITY]),
        [f16::INFINITY, f16::NEG_INFINITY]
    );
    // Values exactly representable in f32 need one rounding only, which half does right.
    let mut rng = Rng::new(5);
    for _ in 0..200_000 {
        let x = f32::from_bits(rng.next_u64() as u32);
        let (got, want) = (round_f16(&[x as f64])[0], f16::from_f32(x));
        assert!(
            got.to_bits() == want.to_bits() || (x.is_nan() && got.is_nan()),
            "{x:e}"
        );
    }
}

#[test]
fn rng_is_deterministic_and_in_range() {
    let (mut a, mut b) = (Rng::new(42), Rng::new(42));
    let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
    assert!(xs.iter().all(|&x| x == b.next_u64()));
    assert_ne!(Rng::new(43).next_u64(), xs[0]);
    let mut counts = [0usize; 7];
    for _ in 0..70_000 {
        counts[a.below(7) as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (9_000..11_000).contains(&c)),
        "{counts:?}"
    );
    assert_eq!(a.below(1), 0);
}

/// The logical scales of an operand, row-major, and its padding bytes.
fn split_scales(rows: usize, k: usize, scales: &[u8], layout: ScaleLayout) -> (Vec<u8>, Vec<u8>) {
    let mut logical = vec![false; scales.len()];
    let mut plain = Vec::new();
    for r in 0..rows {
        for c in 0..k / 16 {
            let o = scale_offset(layout, r as u64, c as u64, k as u32) as usize;
            logical[o] = true;
            plain.push(scales[o]);
        }
    }
    let pad = scales
        .iter()
        .zip(&logical)
        .filter(|(_, l)| !**l)
        .map(|(b, _)| *b)
        .collect();
    (plain, pad)
}

fn nibbles(bytes: &[u8]) -> [usize; 16] {
    let mut n = [0usize; 16];
    for &b in bytes {
        n[(b & 15) as usize] += 1;
        n[(b >> 4) as usize] += 1;
    }
    n
}

#[test]
fn gpu_mode_distribution() {
    let mut rng = Rng::new(3);
    let (m, n, k) = (40, 200, 400);
    let p = problem(
        &mut rng,
        m,
        n,
        k,
        Distribution::GpuMode,
        ScaleLayout::Blocked,
        ScaleLayout::Blocked,
    );
    assert_eq!(p.alpha, 1.0);
    assert_eq!((p.a.len(), p.b.len()), (m * k / 2, n * k / 2));
    for data in [&p.a, &p.b] {
        let count = nibbles(data);
        for (code, &c) in count.iter().enumerate() {
            assert_eq!(
                c > 0,
                code & !0b1011 == 0,
                "nibble {code:#x} seen {c} times"
            );
        }
    }
    for (rows, scales) in [(m, &p.sfa), (n, &p.sfb)] {
        let (plain, pad) = split_scales(rows, k, scales, ScaleLayout::Blocked);
        assert!(plain.iter().all(|&s| s == 0x38 || s == 0x40));
        assert!(plain.contains(&0x38) && plain.contains(&0x40));
        // rows padded to 128 / 256, 25 scale columns padded to 28: padding has NaN codes.
        assert!(pad.contains(&0x7F) && pad.contains(&0xFF));
        assert!(pad.iter().any(|&b| b != 0x7F && b != 0xFF));
    }
    // The padding is poison: the result is still finite, so it is never read.
    assert!(gemm(&p).iter().all(|v| v.is_finite()));
}

#[test]
fn full_range_distribution() {
    let mut rng = Rng::new(4);
    let (m, n, k) = (64, 96, 512);
    let p = problem(
        &mut rng,
        m,
        n,
        k,
        Distribution::FullRange,
        ScaleLayout::Plain,
        ScaleLayout::Blocked,
    );
    for data in [&p.a, &p.b] {
        assert!(nibbles(data).iter().all(|&c| c > 0), "all 16 codes appear");
        // Both nibble positions see all codes.
        let mut lo = [false; 16];
        let mut hi = [false; 16];
        data.iter().for_each(|&b| {
            lo[(b & 15) as usize] = true;
            hi[(b >> 4) as usize] = true;
        });
        assert!(lo.iter().chain(&hi).all(|&x| x));
    }
    let (sb, _) = split_scales(n, k, &p.sfb, ScaleLayout::Blocked);
    for plain in [&p.sfa, &sb] {
        assert!(
            plain.iter().all(|&s| (0x08..=0x40).contains(&s)),
            "scales in [2^-6, 2]"
        );
        for code in 0x08..=0x40u8 {
            assert!(plain.contains(&code), "scale code {code:#04x} never drawn");
        }
    }
}

#[test]
fn generators_are_reproducible() {
    let shape = &nvfp4::shapes::ragged()[0];
    let g1 = group(
        11,
        shape,
        Distribution::FullRange,
        ScaleLayout::Blocked,
        ScaleLayout::Plain,
    );
    let g2 = group(
        11,
        shape,
        Distribution::FullRange,
        ScaleLayout::Blocked,
        ScaleLayout::Plain,
    );
    let g3 = group(
        12,
        shape,
        Distribution::FullRange,
        ScaleLayout::Blocked,
        ScaleLayout::Plain,
    );
    assert_eq!(g1, g2);
    assert_ne!(g1, g3);
    assert_eq!(g1.len(), shape.problems.len());
    for (p, &(m, n, k)) in g1.iter().zip(&shape.problems) {
        assert_eq!((p.m, p.n, p.k, p.alpha), (m, n, k, 1.0));
        assert_eq!(
            p.sfa.len() as u64,
            kernels_gpu::layout::scale_len(ScaleLayout::Blocked, m as u64, k as u32)
        );
        assert_eq!(p.sfb.len(), n * k / 16);
    }
}

fn check(c: &Comparison, passed: bool, bad: usize) {
    assert_eq!((c.passed, c.bad), (passed, bad), "{c:?}");
}

#[test]
fn compare_exact_passes_and_flip_fails() {
    let mut rng = Rng::new(8);
    for dist in [Distribution::GpuMode, Distribution::FullRange] {
        let p = problem(
            &mut rng,
            24,
            40,
            256,
            dist,
            ScaleLayout::Blocked,
            ScaleLayout::Plain,
        );
        let (want, abs) = gemm_with_abs(&p);
        let got = round_f16(&want);
        for tol in [Tolerance::GpuMode, Tolerance::FullRange] {
            let c = compare(&got, &want, Some(&abs), tol);
            check(&c, true, 0);
            assert!(c.first_bad.is_none());
            assert!(
                c.rel_frobenius < 2f64.powi(-11) && c.max_rel <= 2f64.powi(-11),
                "{c:?}"
            );
        }
        // Negate the largest element.
        let i = (0..want.len())
            .max_by(|&x, &y| want[x].abs().total_cmp(&want[y].abs()))
            .unwrap();
        assert!(want[i].abs() > 1.0);
        let mut bad = got.clone();
        bad[i] = -bad[i];
        for tol in [Tolerance::GpuMode, Tolerance::FullRange] {
            let c = compare(&bad, &want, Some(&abs), tol);
            check(&c, false, 1);
            assert_eq!(c.first_bad, Some((i, bad[i].to_f64(), want[i])));
        }
        // One wrong element shows in the Frobenius norm too.
        assert!(compare(&bad, &want, Some(&abs), Tolerance::GpuMode).rel_frobenius > 1e-3);
    }
}

#[test]
fn compare_nan_inf_and_lengths() {
    let h = |v: f64| f16::from_f64(v);
    let want = [f64::NAN, 1e6, -1e6, 2.0, 3.0];
    let ok = [
        h(f64::NAN),
        f16::INFINITY,
        f16::NEG_INFINITY,
        h(2.0),
        h(3.0),
    ];
    check(&compare(&ok, &want, None, Tolerance::GpuMode), true, 0);
    let variants: [(usize, f16); 6] = [
        (0, h(0.0)),   // NaN expected
        (1, f16::MAX), // inf expected
        (1, f16::NEG_INFINITY),
        (1, h(f64::NAN)),
        (3, f16::INFINITY), // finite expected
        (3, h(f64::NAN)),
    ];
    for (i, v) in variants {
        let mut got = ok;
        got[i] = v;
        let c = compare(&got, &want, None, Tolerance::GpuMode);
        check(&c, false, 1);
        assert_eq!(c.first_bad.unwrap().0, i);
    }
    // Lengths: the missing elements are bad, no panic.
    check(
        &compare(&ok[..2], &want, None, Tolerance::GpuMode),
        false,
        3,
    );
    let longer = [ok.as_slice(), &[h(1.0)]].concat();
    let c = compare(&longer, &want, None, Tolerance::GpuMode);
    check(&c, false, 1);
    assert_eq!(c.first_bad.unwrap().0, 5);
    // FullRange needs abs_sum of the right length.
    assert!(!compare(&ok, &want, None, Tolerance::FullRange).passed);
    assert!(!compare(&ok, &want, Some(&[1.0; 4]), Tolerance::FullRange).passed);
    assert!(compare(&ok, &want, Some(&[1.0; 5]), Tolerance::FullRange).passed);
    // Empty against empty passes.
    check(&compare(&[], &[], Some(&[]), Tolerance::FullRange), true, 0);
}

#[test]
fn gpu_mode_tolerance_edges() {
    let h = |v: f64| f16::from_f64(v);
    // |got - want| <= 1e-3 + 1e-3 |want|: 2e-3 at want = 1.
    check(
        &compare(&[h(1.0 + 2f64.powi(-9))], &[1.0], None, Tolerance::GpuMode),
        true,
        0,
    );
    check(
        &compare(&[h(1.0 + 2f64.powi(-8))], &[1.0], None, Tolerance::GpuMode),
        false,
        1,
    );
    check(
        &compare(&[h(0.0009)], &[0.0], None, Tolerance::GpuMode),
        true,
        0,
    );
    check(
        &compare(&[h(0.0011)], &[0.0], None, Tolerance::GpuMode),
        false,
        1,
    );
}

#[test]
fn full_range_bound_formula() {
    let u = 2f64.powi(-24);
    let k = 1024usize;
    let gamma = k as f64 * u / (1.0 - k as f64 * u);
    // want = 100: ulp16 = 2^(6 - 10).
    let b = full_range_bound(100.0, 5000.0, k);
    assert_eq!(b, 2.0 * gamma * 5000.0 + u * 100.0 + 2f64.powi(-4));
    // Subnormal range: one ulp is 2^-24.
    assert_eq!(full_range_bound(0.0, 0.0, k), 2f64.powi(-24));
    assert_eq!(full_range_bound(1e-7, 0.0, k), u * 1e-7 + 2f64.powi(-24));
}

/// A simulated kernel: exact products, fp32 accumulation over k in order (round to nearest
/// or truncating), fp32 alpha; returns the fp32 results before the final fp16 rounding.
fn simulated_kernel(p: &HostProblem, truncate: bool) -> Vec<f32> {
    let a = dequantize(p.m, p.k, &p.a, &p.sfa, p.sfa_layout);
    let b = dequantize(p.n, p.k, &p.b, &p.sfb, p.sfb_layout);
    let mut out = Vec::with_capacity(p.m * p.n);
    for i in 0..p.m {
        for j in 0..p.n {
            let mut acc = 0.0f32;
            for kk in 0..p.k {
                let t = a[i * p.k + kk] * b[j * p.k + kk]; // exact in f32
                let exact = acc as f64 + t as f64; // exact in f64 for these magnitudes
                let mut r = exact as f32;
                if truncate && (r as f64).abs() > exact.abs() {
                    r = f32::from_bits(r.to_bits() - 1);
                }
                acc = r;
            }
            out.push(acc * p.alpha);
        }
    }
    out
}

#[test]
fn simulated_fp32_kernel_passes_full_range_bound() {
    let mut rng = Rng::new(77);
    let k = 7168;
    let mut p = problem(
        &mut rng,
        4,
        48,
        k,
        Distribution::FullRange,
        ScaleLayout::Blocked,
        ScaleLayout::Blocked,
    );
    p.alpha = 1.5;
    let (want, abs) = gemm_with_abs(&p);
    assert!(
        want.iter().all(|w| w.abs() < 8192.0),
        "FullRange stays well inside fp16"
    );
    let to_f16 = |c: &[f32]| round_f16(&c.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
    let nearest = simulated_kernel(&p, false);
    let truncated = simulated_kernel(&p, true);
    assert_ne!(
        nearest, truncated,
        "the accumulation is inexact: truncation must show"
    );
    for (truncate, c32) in [(false, &nearest), (true, &truncated)] {
        let got = to_f16(c32);
        let c = compare_k(&got, &want, Some(&abs), k, Tolerance::FullRange);
        assert!(c.passed, "truncate {truncate}: {c:?}");
        assert!(compare(&got, &want, Some(&abs), Tolerance::FullRange).passed);
        assert!(c.rel_frobenius < 1e-3, "{c:?}");
        // Worst observed error against its bound, for the record.
        let worst = got
            .iter()
            .zip(&want)
            .zip(&abs)
            .map(|((g, w), s)| (g.to_f64() - w).abs() / full_range_bound(*w, *s, k))
            .fold(0.0f64, f64::max);
        assert!(worst <= 1.0);
        println!(
            "truncate {truncate}: rel_frobenius {:.3e}, max_rel {:.3e}, worst error / bound {worst:.3}",
            c.rel_frobenius, c.max_rel
        );
    }
    // GpuMode data through the same kernel meets GPU MODE's tolerance.
    let q = problem(
        &mut rng,
        4,
        48,
        k,
        Distribution::GpuMode,
        ScaleLayout::Blocked,
        ScaleLayout::Plain,
    );
    let want = gemm(&q);
    let c = compare(
        &to_f16(&simulated_kernel(&q, false)),
        &want,
        None,
        Tolerance::GpuMode,
    );
    assert!(c.passed, "{c:?}");
}
