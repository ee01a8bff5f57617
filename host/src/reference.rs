//! The CPU reference: NVFP4 GEMM in f64, written from the contract in `DESIGN.md` (not from
//! any GPU code), and the element-wise comparison that judges a GPU result.
//!
//! Decoding, the blocked scale layout and the fp16 rounding are re-derived here on purpose
//! instead of reusing `kernels_gpu`: the kernels share `kernels_gpu`, so a bug there would
//! otherwise cancel out of the comparison.
//!
//! # Exactness
//! A dequantized element `e2m1 * e4m3` is a multiple of 2^-10 (E2M1 values are multiples of
//! 1/2, E4M3 values of 2^-9) with at most 5 significant bits and magnitude at most
//! `6 * 448 = 2688`, so it is exact in f32 (and fp16). A product of two is a multiple of 2^-20
//! below 2^23, exact in f64, and the f64 sum of such products is exact as long as every
//! partial sum stays below 2^33 in magnitude (53 bits of 2^-20 units); outputs that fit fp16
//! are far inside that. Exact sums do not depend on the order of summation, so the dot
//! products below use several accumulators.

use crate::ScaleLayout;
use crate::problem::HostProblem;
use half::f16;
use rayon::prelude::*;

/// E2M1 values by code, written out from the format (sign | e1 e0 | m, bias 1).
const E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Value of an E4M3 (`e4m3fn`) code: `(-1)^s * 2^(e-7) * (1 + m/8)`, subnormal
/// `(-1)^s * 2^-6 * m/8` for `e = 0`, NaN for `S.1111.111`. Exact in f32.
fn e4m3(code: u8) -> f32 {
    if code & 0x7F == 0x7F {
        return f32::NAN;
    }
    let e = i32::from((code >> 3) & 0xF);
    let m = f64::from(code & 7);
    let mag = if e == 0 {
        m / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + m / 8.0) * 2f64.powi(e - 7)
    };
    (if code & 0x80 != 0 { -mag } else { mag }) as f32
}

/// Byte offset of the scale of (`row`, scale column `col`), from DESIGN.md's formula.
fn scale_index(layout: ScaleLayout, row: usize, col: usize, cols: usize) -> usize {
    match layout {
        ScaleLayout::Plain => row * cols + col,
        ScaleLayout::Blocked => {
            ((row / 128) * cols.div_ceil(4) + col / 4) * 512
                + (row % 32) * 16
                + ((row % 128) / 32) * 4
                + col % 4
        }
    }
}

/// Scale bytes an operand of `rows` x `k` needs in `layout`.
fn scales_needed(layout: ScaleLayout, rows: usize, k: usize) -> usize {
    let cols = k / 16;
    match layout {
        ScaleLayout::Plain => rows * cols,
        ScaleLayout::Blocked => rows.div_ceil(128) * 128 * cols.div_ceil(4) * 4,
    }
}

/// Dequantizes an FP4 operand: `rows * k` values, row-major, element `(r, j)` =
/// `e2m1(code) * e4m3(scale of (r, j / 16))`.
///
/// `data` holds `rows` rows of `k / 2` bytes (element 2i in the low nibble of byte i),
/// `scales` the E4M3 scales in `layout`. Every value is exact (see the module docs); a NaN
/// scale makes its 16 values NaN, zeros included.
///
/// # Panics
/// If `k` is not a multiple of 16, `data.len() != rows * k / 2`, or `scales` is shorter than
/// the layout needs.
pub fn dequantize(
    rows: usize,
    k: usize,
    data: &[u8],
    scales: &[u8],
    layout: ScaleLayout,
) -> Vec<f32> {
    assert!(
        k.is_multiple_of(16),
        "reference::dequantize: k = {k} is not a multiple of 16"
    );
    assert_eq!(
        data.len(),
        rows * k / 2,
        "reference::dequantize: data must be rows * k / 2 bytes"
    );
    let need = scales_needed(layout, rows, k);
    assert!(
        scales.len() >= need,
        "reference::dequantize: {} scale bytes, {layout:?} needs {need}",
        scales.len()
    );
    let cols = k / 16;
    let mut out = vec![0.0f32; rows * k];
    for (r, row) in out.chunks_exact_mut(k.max(1)).enumerate().take(rows) {
        let bytes = &data[r * k / 2..(r + 1) * k / 2];
        for (j, v) in row.iter_mut().enumerate() {
            let byte = bytes[j / 2];
            let code = if j.is_multiple_of(2) {
                byte & 0xF
            } else {
                byte >> 4
            };
            let scale = e4m3(scales[scale_index(layout, r, j / 16, cols)]);
            *v = E2M1[code as usize] * scale;
        }
    }
    out
}

/// `(sum, sum of |terms|)` of `a . b`, accumulated exactly in f64 (see the module docs).
fn dot(a: &[f32], b: &[f32], with_abs: bool) -> (f64, f64) {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let mut abs = [0.0f64; LANES];
    let (ac, ar) = a.split_at(a.len() / LANES * LANES);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(LANES).zip(bc.chunks_exact(LANES)) {
        for l in 0..LANES {
            let t = f64::from(x[l]) * f64::from(y[l]);
            acc[l] += t;
            if with_abs {
                abs[l] += t.abs();
            }
        }
    }
    let mut s: f64 = acc.iter().sum();
    let mut sa: f64 = abs.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        let t = f64::from(*x) * f64::from(*y);
        s += t;
        sa += t.abs();
    }
    (s, sa)
}

/// Shared body of [`gemm`] and [`gemm_with_abs`].
fn gemm_impl(p: &HostProblem, with_abs: bool) -> (Vec<f64>, Vec<f64>) {
    let (m, n, k) = (p.m, p.n, p.k);
    let a = dequantize(m, k, &p.a, &p.sfa, p.sfa_layout);
    let b = dequantize(n, k, &p.b, &p.sfb, p.sfb_layout);
    let alpha = f64::from(p.alpha);
    let mut c = vec![0.0f64; m * n];
    let mut c_abs = vec![0.0f64; if with_abs { m * n } else { 0 }];
    if m == 0 || n == 0 {
        return (c, c_abs);
    }
    let row = |i: usize, c_row: &mut [f64], abs_row: Option<&mut [f64]>| {
        let ar = &a[i * k..(i + 1) * k];
        let mut abs_row = abs_row;
        for (j, cj) in c_row.iter_mut().enumerate() {
            let (s, sa) = dot(ar, &b[j * k..(j + 1) * k], with_abs);
            *cj = alpha * s;
            if let Some(abs_row) = abs_row.as_deref_mut() {
                abs_row[j] = alpha.abs() * sa;
            }
        }
    };
    if with_abs {
        c.par_chunks_mut(n)
            .zip(c_abs.par_chunks_mut(n))
            .enumerate()
            .for_each(|(i, (cr, ar))| row(i, cr, Some(ar)));
    } else {
        c.par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, cr)| row(i, cr, None));
    }
    (c, c_abs)
}

/// `C = alpha * A * B^T` of `p` in f64, `m * n` values row-major, before the fp16 rounding
/// (pass it through [`round_f16`] for the fp16 result the kernels must produce).
///
/// The sum over K is exact (see the module docs); `alpha * sum` is one f64 rounding (exact
/// for `alpha = 1`, and for any alpha within 2^-53 relative, which can only matter for an
/// output that lies within 2^-53 of an fp16 rounding tie). NaN scales give NaN for every
/// output that reads them. Rows of C are computed in parallel (rayon).
///
/// # Panics
/// If `p` is inconsistent (see [`dequantize`]).
pub fn gemm(p: &HostProblem) -> Vec<f64> {
    gemm_impl(p, false).0
}

/// [`gemm`], and for every output the sum of the magnitudes of its terms,
/// `|alpha| * sum_k |a * sa * b * sb|` (the quantity floating-point accumulation error is
/// proportional to; [`compare`] uses it for [`Tolerance::FullRange`]).
///
/// # Panics
/// If `p` is inconsistent (see [`dequantize`]).
pub fn gemm_with_abs(p: &HostProblem) -> (Vec<f64>, Vec<f64>) {
    gemm_impl(p, true)
}

/// Rounds one f64 to the nearest fp16, ties to even, directly from f64.
///
/// `half::f16::from_f64` cannot be used: with F16C it converts through f32, and the double
/// rounding moves values just above an fp16 tie (e.g. `1 + 2^-11 + 2^-40`) onto the even
/// neighbour instead of up.
fn f64_to_f16(x: f64) -> f16 {
    let sign: u16 = if x.is_sign_negative() { 0x8000 } else { 0 };
    if x.is_nan() {
        return f16::from_bits(sign | 0x7E00);
    }
    let a = x.abs();
    // 65520 is the midpoint between the largest fp16 (65504, odd mantissa) and 2^16:
    // a tie rounds to even, i.e. up, i.e. to infinity.
    if a >= 65520.0 {
        return f16::from_bits(sign | 0x7C00);
    }
    const MIN_NORMAL: f64 = 1.0 / 16384.0; // 2^-14
    let bits = if a < MIN_NORMAL {
        // Subnormal: a multiple of 2^-24; 1024 * 2^-24 is the smallest normal, whose bit
        // pattern 0x0400 is exactly 1024, so the carry needs no special case.
        (a * 16_777_216.0).round_ties_even() as u16
    } else {
        let e = ((a.to_bits() >> 52) & 0x7FF) as i32 - 1023; // floor(log2 a), -14..=15
        let q = (a * 2f64.powi(10 - e)).round_ties_even() as u16; // 1024..=2048
        // q = 2048 carries into the exponent field, which the addition does by itself.
        (((e + 15) as u16) << 10) + (q - 1024)
    };
    f16::from_bits(sign | bits)
}

/// Rounds each value to fp16: round to nearest, ties to even, straight from f64 (no
/// intermediate f32, so no double rounding); magnitudes from 65520 up become ±inf, NaN stays
/// NaN, signed zeros keep their sign.
pub fn round_f16(x: &[f64]) -> Vec<f16> {
    x.iter().map(|&v| f64_to_f16(v)).collect()
}

/// Which element-wise acceptance test [`compare`] applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// GPU MODE's check, `torch.allclose(got, want, rtol = 1e-3, atol = 1e-3)`:
    /// `|got - want| <= 1e-3 + 1e-3 * |want|`. Meant for `gen::Distribution::GpuMode`
    /// inputs, whose exact results a correct fp32-accumulating kernel reproduces up to the
    /// final fp16 rounding (at most 2^-11 relative, inside the tolerance).
    GpuMode,
    /// A bound derived from how the kernels compute (needs the `abs_sum` of
    /// [`gemm_with_abs`]), for `gen::Distribution::FullRange` inputs:
    ///
    /// `|got - want| <= 2 * gamma_K * S + 2^-24 * |want| + ulp16(|want|)`
    ///
    /// - `S = |alpha| * sum_k |a * sa * b * sb|`, the `abs_sum` entry;
    /// - `gamma_K = K u / (1 - K u)` with `u = 2^-24`: each product is exact (dequantized
    ///   values are exact in fp16, fp16 x fp16 products exact in fp32), and recursive fp32
    ///   summation of K terms errs by at most `gamma_K * S` (Higham, Thm. 4.4; any summation
    ///   order, tensor-core trees included). The factor 2 covers hardware that truncates
    ///   instead of rounding to nearest (unit roundoff 2^-23 instead of 2^-24);
    /// - `2^-24 * |want|`: the fp32 multiplication by alpha;
    /// - `ulp16(x) = 2^(max(floor(log2 x), -14) - 10)`, one fp16 ulp at `|want|` (2^-24 in the
    ///   subnormal range): the final rounding to fp16 costs half an ulp of the computed value,
    ///   and a computed value that crossed into the next binade has an ulp twice as large,
    ///   so a whole ulp of `|want|` covers both.
    ///
    /// `compare` does not know K, so it takes `K = FULL_RANGE_K` (8192, at least every K of
    /// `shapes.rs`); [`compare_k`] takes K explicitly and gives the tight bound for it.
    FullRange,
}

/// The K that [`compare`] assumes for [`Tolerance::FullRange`]: an upper bound of every K in
/// `crate::shapes` (the largest is 7168). Use [`compare_k`] for larger K.
pub const FULL_RANGE_K: usize = 8192;

/// The [`Tolerance::FullRange`] bound on `|got - want|` for one output: `want` the exact
/// value, `abs_sum` its `|alpha| * sum |terms|`, `k` the reduction length.
pub fn full_range_bound(want: f64, abs_sum: f64, k: usize) -> f64 {
    const U: f64 = 1.0 / 16_777_216.0; // 2^-24, fp32 unit roundoff
    let ku = k as f64 * U;
    let gamma = if ku < 1.0 {
        ku / (1.0 - ku)
    } else {
        f64::INFINITY
    };
    let aw = want.abs();
    let e = if aw > 0.0 {
        ((aw.to_bits() >> 52) & 0x7FF) as i32 - 1023
    } else {
        -24
    };
    let ulp16 = 2f64.powi(e.max(-14) - 10);
    2.0 * gamma * abs_sum + U * aw + ulp16
}

/// Outcome of [`compare`]. Error statistics cover the positions where both `got` and `want`
/// are finite (want as rounded to fp16 is finite); non-finite positions only count as `bad`
/// when they disagree.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Largest `|got - want|` (output units).
    pub max_abs: f64,
    /// Largest `|got - want| / |want|` over `want != 0`.
    pub max_rel: f64,
    /// `||got - want||_2 / ||want||_2` (0 if both norms are 0, inf if only `want`'s is).
    pub rel_frobenius: f64,
    /// Positions that failed the tolerance, disagreed on NaN / inf, or are missing from the
    /// shorter slice.
    pub bad: usize,
    /// The first failing position: `(index, got, want)` (`got` is NaN for a missing element).
    pub first_bad: Option<(usize, f64, f64)>,
    /// `bad == 0` and the inputs were usable (lengths agree; `abs_sum` present and the right
    /// length for [`Tolerance::FullRange`]).
    pub passed: bool,
}

/// Compares a kernel's fp16 output `got` with the exact reference `want` (from [`gemm`]),
/// element by element under `tol`. For [`Tolerance::FullRange`] it assumes `K <=`
/// [`FULL_RANGE_K`]; see [`compare_k`].
///
/// Rules at every position:
/// - `want` NaN: `got` must be NaN; `got` NaN with `want` not NaN is bad.
/// - `want` rounding to ±inf in fp16: `got` must be that same infinity; `got` infinite while
///   `want` rounds to a finite value is bad.
/// - otherwise the tolerance of `tol` applies (see [`Tolerance`]).
///
/// Never panics: if the lengths differ, the common prefix is compared and each missing
/// element counts as bad; for `FullRange` a missing or wrong-length `abs_sum` makes
/// every position that is not a matching NaN / inf bad (there is no bound to test against).
/// Both give `passed = false`.
pub fn compare(got: &[f16], want: &[f64], abs_sum: Option<&[f64]>, tol: Tolerance) -> Comparison {
    compare_k(got, want, abs_sum, FULL_RANGE_K, tol)
}

/// [`compare`] with the reduction length `k` of the problem given, so that
/// [`Tolerance::FullRange`] uses `gamma_K` for this K (ignored for [`Tolerance::GpuMode`]).
pub fn compare_k(
    got: &[f16],
    want: &[f64],
    abs_sum: Option<&[f64]>,
    k: usize,
    tol: Tolerance,
) -> Comparison {
    let common = got.len().min(want.len());
    let abs_ok = match tol {
        Tolerance::GpuMode => true,
        Tolerance::FullRange => abs_sum.is_some_and(|s| s.len() == want.len()),
    };
    let mut c = Comparison {
        max_abs: 0.0,
        max_rel: 0.0,
        rel_frobenius: 0.0,
        bad: 0,
        first_bad: None,
        passed: false,
    };
    let (mut diff2, mut want2) = (0.0f64, 0.0f64);
    for i in 0..common {
        let g = got[i].to_f64();
        let w = want[i];
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else {
            let w16 = f64_to_f16(w).to_f64();
            if w16.is_infinite() || g.is_infinite() {
                g == w16
            } else {
                let err = (g - w).abs();
                c.max_abs = c.max_abs.max(err);
                if w != 0.0 {
                    c.max_rel = c.max_rel.max(err / w.abs());
                }
                diff2 += err * err;
                want2 += w * w;
                match tol {
                    Tolerance::GpuMode => err <= 1e-3 + 1e-3 * w.abs(),
                    Tolerance::FullRange => {
                        abs_ok && abs_sum.is_some_and(|s| err <= full_range_bound(w, s[i], k))
                    }
                }
            }
        };
        if !ok {
            c.bad += 1;
            c.first_bad.get_or_insert((i, g, w));
        }
    }
    let missing = got.len().max(want.len()) - common;
    if missing > 0 {
        c.bad += missing;
        c.first_bad.get_or_insert((
            common,
            f64::NAN,
            want.get(common).copied().unwrap_or(f64::NAN),
        ));
    }
    c.rel_frobenius = if want2 > 0.0 {
        diff2.sqrt() / want2.sqrt()
    } else if diff2 > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    c.passed = c.bad == 0 && abs_ok && missing == 0;
    c
}
