//! NVFP4 quantization: the shared rounding functions (`kernels_gpu::quant`) against
//! independently written nearest-value searches, `quantize_cpu` against an independent block
//! model and against the error bound of its dequantized values, validation, and (GPU, ignored
//! without one) the kernel against `quantize_cpu` bit for bit and quantize-then-GEMM.
//!
//! On a GPU machine: `cargo test -p nvfp4-tests --release --test quant -- --include-ignored
//! --nocapture`.

use kernels_gpu::fp4::e4m3_to_f32;
use kernels_gpu::layout::{scale_len, scale_offset};
use kernels_gpu::quant::{QuantBlock, f32_to_e2m1, f32_to_e4m3, quantize_block};
use nvfp4::cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use nvfp4::r#gen::{Rng, pack_scales};
use nvfp4::quant::{
    InputDtype, QuantElement, QuantInput, QuantOutput, QuantSpec, Quantized, Quantizer, bf16,
    check, fp4_bytes, quantize_cpu, scale_bytes,
};
use nvfp4::reference::{self, Tolerance};
use nvfp4::validate::Span;
use nvfp4::{DeviceInput, DeviceOutput, Error, HostProblem, Problem, ScaleLayout, f16};
use nvfp4_tests::{Gpu, check as check_gemm};
use std::sync::Arc;

use ScaleLayout::{Blocked, Plain};

// ---------------------------------------------------------------------------------------
// Independent models of the two formats: value tables and a nearest-value search.

/// E2M1 magnitudes by code 0..=7, from the OCP MX spec's table.
const E2M1_VALUES: [f64; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// E4M3 (`e4m3fn`) magnitude of codes 0..=0x7E from the definition, written as an integer
/// significand times a power of two (not as the decoder under test writes it).
fn e4m3_values() -> Vec<f64> {
    (0u8..=0x7E)
        .map(|c| {
            let (e, m) = ((c / 8) as i32, (c % 8) as f64);
            if e == 0 {
                m * 2f64.powi(-9)
            } else {
                (8.0 + m) * 2f64.powi(e - 10)
            }
        })
        .collect()
}

/// Index (= code) of the value of the sorted table `values` nearest to `x >= 0`, ties to the
/// even index, saturating at the last one (infinity and NaN included).
fn nearest(values: &[f64], x: f64) -> u8 {
    let last = values.len() - 1;
    if x.is_nan() || x >= values[last] {
        return last as u8;
    }
    // values[i] <= x < values[i + 1]
    let i = values.partition_point(|&v| v <= x) - 1;
    let mid = (values[i] + values[i + 1]) / 2.0; // exact: few significant bits
    let pick = if x < mid {
        i
    } else if x > mid {
        i + 1
    } else if i % 2 == 0 {
        i
    } else {
        i + 1
    };
    pick as u8
}

fn e2m1_model(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 8 } else { 0 };
    nearest(&E2M1_VALUES, (x as f64).abs()) | sign
}

fn e4m3_model(x: f32, table: &[f64]) -> u8 {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    if x.is_nan() {
        return 0x7F | sign;
    }
    nearest(table, (x as f64).abs()) | sign
}

/// f32 samples around every point of `points` (a few ulps either side), plus a sweep of the
/// bit patterns from `lo` to `hi` with step `step`, plus a sparse sweep of all finite f32,
/// each with both signs.
fn samples(points: &[f64], lo: f32, hi: f32, step: u32) -> Vec<f32> {
    let mut out = Vec::new();
    for &p in points {
        let b = (p as f32).to_bits() as i64;
        for d in -3i64..=3 {
            let bits = b + d;
            if (0..0x7F80_0000).contains(&bits) {
                out.push(f32::from_bits(bits as u32));
            }
        }
    }
    out.extend(
        (lo.to_bits()..hi.to_bits())
            .step_by(step as usize)
            .map(f32::from_bits),
    );
    out.extend((0..0x7F80_0000u32).step_by(7919).map(f32::from_bits));
    out.extend([0.0, f32::MIN_POSITIVE, f32::MAX, f32::INFINITY, 1e-45]);
    let negatives: Vec<f32> = out.iter().map(|x| -x).collect();
    out.extend(negatives);
    out
}

/// Each table value and each midpoint between neighbours.
fn points_and_midpoints(values: &[f64]) -> Vec<f64> {
    let mut p = values.to_vec();
    p.extend(values.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    p.push(values[values.len() - 1] * 1.5);
    p
}

#[test]
fn e2m1_rounding_matches_nearest_even_model() {
    let points = points_and_midpoints(&E2M1_VALUES);
    let xs = samples(&points, 0.1, 7.0, 97);
    for &x in &xs {
        assert_eq!(
            f32_to_e2m1(x),
            e2m1_model(x),
            "x = {x:e} ({:#010x})",
            x.to_bits()
        );
    }
    println!("e2m1: {} samples", xs.len());
}

#[test]
fn e2m1_every_value_midpoint_and_saturation() {
    for (code, &v) in E2M1_VALUES.iter().enumerate() {
        assert_eq!(f32_to_e2m1(v as f32), code as u8, "{v}");
        assert_eq!(f32_to_e2m1(-v as f32), code as u8 | 8, "-{v}");
    }
    // Ties go to the even code: 0.25 -> 0, 0.75 -> 1.0, 1.25 -> 1.0, 1.75 -> 2.0, 2.5 -> 2,
    // 3.5 -> 4, 5 -> 4.
    let ties = [
        (0.25, 0),
        (0.75, 2),
        (1.25, 2),
        (1.75, 4),
        (2.5, 4),
        (3.5, 6),
        (5.0, 6),
    ];
    for (x, code) in ties {
        assert_eq!(f32_to_e2m1(x), code, "tie {x}");
        let up = f32::from_bits(x.to_bits() + 1);
        let down = f32::from_bits(x.to_bits() - 1);
        assert_eq!(f32_to_e2m1(down), nearest(&E2M1_VALUES, down as f64));
        assert_eq!(f32_to_e2m1(up), nearest(&E2M1_VALUES, up as f64));
        assert_ne!(f32_to_e2m1(down), f32_to_e2m1(up), "{x} is a boundary");
    }
    for x in [6.0f32, 6.5, 7.0, 1e9, f32::MAX, f32::INFINITY] {
        assert_eq!(f32_to_e2m1(x), 7, "{x} saturates");
        assert_eq!(f32_to_e2m1(-x), 15, "-{x} saturates");
    }
    assert_eq!(f32_to_e2m1(-0.0), 8, "-0 keeps its sign");
    assert_eq!(f32_to_e2m1(1e-45), 0);
    assert_eq!(
        f32_to_e2m1(f32::NAN) & 7,
        7,
        "NaN saturates (E2M1 has no NaN)"
    );
}

#[test]
fn e4m3_rounding_matches_nearest_even_model() {
    let table = e4m3_values();
    let points = points_and_midpoints(&table);
    let xs = samples(&points, 2f32.powi(-12), 500.0, 97);
    for &x in &xs {
        assert_eq!(
            f32_to_e4m3(x),
            e4m3_model(x, &table),
            "x = {x:e} ({:#010x})",
            x.to_bits()
        );
    }
    println!("e4m3: {} samples", xs.len());
}

#[test]
fn e4m3_round_trips_all_codes_ties_saturation_subnormals() {
    for code in 0..=255u8 {
        let v = e4m3_to_f32(code);
        let back = f32_to_e4m3(v);
        if code & 0x7F == 0x7F {
            // The decoder gives a positive NaN for both NaN codes.
            assert_eq!(back, 0x7F, "NaN {code:#04x}");
        } else {
            assert_eq!(back, code, "code {code:#04x} = {v}");
        }
    }
    // Every tie between neighbours goes to the even code; one ulp either side decides.
    for lo in 0u8..0x7E {
        let mid = (e4m3_to_f32(lo) + e4m3_to_f32(lo + 1)) / 2.0; // exact in f32
        let even = if lo % 2 == 0 { lo } else { lo + 1 };
        assert_eq!(f32_to_e4m3(mid), even, "tie between {lo:#04x} and the next");
        assert_eq!(f32_to_e4m3(f32::from_bits(mid.to_bits() - 1)), lo);
        assert_eq!(f32_to_e4m3(f32::from_bits(mid.to_bits() + 1)), lo + 1);
    }
    // Saturation: everything above 448 (where 464 would be a tie with 480) gives 448.
    for x in [448.0f32, 448.1, 464.0, 480.0, 1e6, f32::MAX, f32::INFINITY] {
        assert_eq!(f32_to_e4m3(x), 0x7E, "{x}");
        assert_eq!(f32_to_e4m3(-x), 0xFE, "-{x}");
    }
    // Subnormals: multiples of 2^-9; 2^-10 (half the smallest) is a tie and goes to 0.
    let u = 2f32.powi(-9);
    for m in 0..8u8 {
        assert_eq!(f32_to_e4m3(m as f32 * u), m);
    }
    assert_eq!(f32_to_e4m3(u / 2.0), 0);
    assert_eq!(f32_to_e4m3(f32::from_bits((u / 2.0).to_bits() + 1)), 1);
    assert_eq!(
        f32_to_e4m3(1.5 * u),
        2,
        "tie between subnormals 1 and 2 goes to 2"
    );
    assert_eq!(f32_to_e4m3(7.5 * u), 8, "tie up into the smallest normal");
    assert_eq!(f32_to_e4m3(1e-40), 0, "f32 subnormals round to 0");
    assert_eq!(f32_to_e4m3(-0.0), 0x80);
    assert_eq!(f32_to_e4m3(f32::NAN), 0x7F);
}

// ---------------------------------------------------------------------------------------
// The block: an independent model of the documented operation order.

/// The block quantization as `kernels_gpu::quant`'s docs define it, with the model rounding:
/// returns the scale code and the 16 codes.
fn block_model(x: &[f32], g: f32, table: &[f64]) -> (u8, [u8; 16]) {
    if x.iter().any(|v| v.is_nan()) {
        return (0x7F, [0; 16]);
    }
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let s = amax / 6.0 / g;
    let scale = nearest(table, s as f64); // s >= 0
    let sign = |v: f32| if v.is_sign_negative() { 8u8 } else { 0 };
    let mut codes = [0u8; 16];
    if scale == 0 {
        for (c, &v) in codes.iter_mut().zip(x) {
            *c = sign(v);
        }
        return (0, codes);
    }
    let d = table[scale as usize] as f32 * g;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = nearest(&E2M1_VALUES, (v.abs() / d) as f64) | sign(v);
    }
    (scale, codes)
}

fn unpack(fp4: u64) -> [u8; 16] {
    std::array::from_fn(|i| ((fp4 >> (4 * i)) & 0xF) as u8)
}

/// Uniform in [-1, 1).
fn uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * 2f64.powi(-52) - 1.0
}

/// How test tensors are drawn (per 16-element block).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Dist {
    /// Each block: uniform values times 2^e, e uniform over the dtype's wide range (several
    /// magnitudes in one tensor); a few exact zeros and negative zeros.
    Random,
    /// Magnitudes far below what a scale can hold (they quantize to zero scales).
    Tiny,
    /// Magnitudes beyond 448 * 6 * g (saturating), infinities included.
    Huge,
    /// Only zeros of both signs.
    Zero,
    /// Random, with NaN (and some infinities) sprinkled into a third of the blocks.
    NaN,
}

/// Exponent range of [`Dist::Random`] per dtype (fp16 only reaches 2^-24 .. 65504).
fn exp_range(dtype: InputDtype) -> (i32, i32) {
    match dtype {
        InputDtype::F16 => (-22, 14),
        InputDtype::Bf16 | InputDtype::F32 => (-100, 100),
    }
}

/// `n` f32 values of distribution `dist` for `dtype` (already representable in `dtype`
/// after the caller's conversion, up to the conversion's own rounding).
fn draw(rng: &mut Rng, dist: Dist, dtype: InputDtype, n: usize) -> Vec<f32> {
    let (lo, hi) = exp_range(dtype);
    let mut out = Vec::with_capacity(n);
    let mut e = 0;
    let mut nan_block = false;
    for i in 0..n {
        if i % 16 == 0 {
            e = lo + rng.below((hi - lo + 1) as u64) as i32;
            nan_block = rng.below(3) == 0;
        }
        let u = uniform(rng);
        let v = match dist {
            Dist::Random | Dist::NaN => match rng.below(64) {
                0 => 0.0,
                1 => -0.0,
                _ => u * 2f64.powi(e),
            },
            Dist::Tiny => match dtype {
                InputDtype::F16 => u * 2f64.powi(-24 + rng.below(6) as i32),
                InputDtype::Bf16 => u * 2f64.powi(-133 + rng.below(10) as i32),
                InputDtype::F32 => u * 2f64.powi(-149 + rng.below(40) as i32),
            },
            Dist::Huge => match (rng.below(32), dtype) {
                (0, _) => f64::INFINITY.copysign(u),
                (_, InputDtype::F16) => u.signum() * (20000.0 + 45000.0 * u.abs()),
                (_, _) => u * 2f64.powi(100 + rng.below(28) as i32),
            },
            Dist::Zero => 0.0f64.copysign(u),
        };
        let v = if dist == Dist::NaN && nan_block {
            match rng.below(8) {
                0 => f64::NAN,
                1 => f64::INFINITY.copysign(u),
                _ => v,
            }
        } else {
            v
        };
        out.push(v as f32);
    }
    out
}

/// An element type the tests build inputs of.
trait TestElement: QuantElement + std::fmt::Debug {
    fn from_f32(x: f32) -> Self;
}
impl TestElement for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}
impl TestElement for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}
impl TestElement for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
}

fn convert<T: TestElement>(x: &[f32]) -> Vec<T> {
    x.iter().map(|&v| T::from_f32(v)).collect()
}

/// Checks `q` against [`block_model`] block by block (and the blocked layout's padding).
fn check_against_model<T: TestElement>(label: &str, input: &[T], stride: usize, q: &Quantized) {
    let table = e4m3_values();
    let cols = q.k / 16;
    let mut plain = vec![0u8; q.rows * cols];
    for r in 0..q.rows {
        for c in 0..cols {
            let x: Vec<f32> = input[r * stride + 16 * c..r * stride + 16 * c + 16]
                .iter()
                .map(|v| v.to_f32())
                .collect();
            let (scale, codes) = block_model(&x, q.global_scale, &table);
            let got_scale =
                q.scales[scale_offset(q.scale_layout, r as u64, c as u64, q.k as u32) as usize];
            let bytes = &q.fp4[r * q.k / 2 + 8 * c..r * q.k / 2 + 8 * c + 8];
            let got_codes: Vec<u8> = bytes.iter().flat_map(|b| [b & 0xF, b >> 4]).collect();
            assert_eq!(
                (got_scale, got_codes.as_slice()),
                (scale, &codes[..]),
                "{label}: row {r} block {c}: x = {x:?}"
            );
            plain[r * cols + c] = scale;
        }
    }
    // Independent packing of the plain scales (gen's inverse formula), padding 0.
    let want = pack_scales(q.scale_layout, q.rows, q.k, &plain, || 0);
    assert_eq!(q.scales, want, "{label}: scale layout / padding");
}

#[test]
fn quantize_block_matches_model() {
    let table = e4m3_values();
    let mut rng = Rng::new(11);
    for dist in [Dist::Random, Dist::Tiny, Dist::Huge, Dist::Zero, Dist::NaN] {
        for g in [1.0f32, 0.75, 2f32.powi(-20), 2f32.powi(20), 1e-30, 3e30] {
            for _ in 0..2000 {
                let x: [f32; 16] = draw(&mut rng, dist, InputDtype::F32, 16)
                    .try_into()
                    .unwrap();
                let QuantBlock { scale, fp4 } = quantize_block(&x, g);
                assert_eq!(
                    (scale, unpack(fp4)),
                    block_model(&x, g, &table),
                    "{dist:?} g = {g}: {x:?}"
                );
            }
        }
    }
}

#[test]
fn quantize_block_special_cases() {
    // NaN anywhere: NaN scale, all codes 0.
    let mut x = [1.0f32; 16];
    x[5] = f32::NAN;
    assert_eq!(
        quantize_block(&x, 1.0),
        QuantBlock {
            scale: 0x7F,
            fp4: 0
        }
    );
    // All zeros (signed): scale 0, signs kept.
    let mut x = [0.0f32; 16];
    x[1] = -0.0;
    assert_eq!(
        quantize_block(&x, 1.0),
        QuantBlock {
            scale: 0,
            fp4: 0x80
        }
    );
    // Tiny: amax / 6 <= 2^-10 rounds the scale to 0, magnitudes 0, signs kept.
    let mut x = [6.0 * 2f32.powi(-10); 16];
    x[0] = -x[0];
    assert_eq!(quantize_block(&x, 1.0), QuantBlock { scale: 0, fp4: 0x8 });
    // Just above: the smallest subnormal scale 2^-9, the values 6 * 2^-10 / 2^-9 = 3.
    let x = [f32::from_bits((6.0 * 2f32.powi(-10)).to_bits() + 1); 16];
    let q = quantize_block(&x, 1.0);
    assert_eq!(q.scale, 0x01);
    assert_eq!(q.fp4, 0x5555_5555_5555_5555);
    // ... and a global scale rescues tiny values: 2^-40 with g = 2^-40 is 1.0 with g = 1.
    let x: [f32; 16] = std::array::from_fn(|i| (i as f32 - 8.0) * 2f32.powi(-40));
    let y: [f32; 16] = std::array::from_fn(|i| i as f32 - 8.0);
    assert_eq!(quantize_block(&x, 2f32.powi(-40)), quantize_block(&y, 1.0));
    // Huge: the scale saturates at 448 and the values at 6 (sign kept).
    let mut x = [1e30f32; 16];
    x[3] = -f32::INFINITY;
    let q = quantize_block(&x, 1.0);
    assert_eq!(q.scale, 0x7E);
    assert_eq!(unpack(q.fp4)[3], 0xF);
    assert!(
        unpack(q.fp4)
            .iter()
            .enumerate()
            .all(|(i, &c)| i == 3 || c == 7)
    );
    // An infinity with finite neighbours: scale 448, the neighbours divided by 448.
    let mut x = [448.0 * 3.0f32; 16];
    x[0] = f32::INFINITY;
    let q = quantize_block(&x, 1.0);
    assert_eq!((q.scale, q.fp4), (0x7E, 0x5555_5555_5555_5557));
    // inf / inf (448 * g overflows): still saturates to 6 with x's sign.
    let mut x = [0.0f32; 16];
    x[2] = -f32::INFINITY;
    let q = quantize_block(&x, 3e38);
    assert_eq!((q.scale, unpack(q.fp4)[2]), (0x7E, 0xF));
    // A hand-computed block: amax 12 -> scale 2 (0x40), values x / 2.
    let x: [f32; 16] = [
        12.0, -12.0, 1.0, -1.0, 0.5, 2.5, 3.0, 5.0, 7.0, 9.0, 11.0, 0.0, -0.0, 0.4, 1.6, 6.0,
    ];
    let q = quantize_block(&x, 1.0);
    assert_eq!(q.scale, 0x40);
    // /2: 6, -6, 0.5, -0.5, 0.25 (tie -> 0), 1.25 (tie -> 1), 1.5, 2.5 (tie -> 2), 3.5 (tie
    // -> 4), 4.5 -> 4, 5.5 -> 6, 0, -0, 0.2 -> 0, 0.8 -> 1, 3.
    let want = [7, 15, 1, 9, 0, 2, 3, 4, 6, 6, 7, 0, 8, 0, 2, 5];
    assert_eq!(unpack(q.fp4), want);
}

/// `quantize_cpu` on every distribution, dtype, layout and a few shapes and global scales,
/// against the block model (which also checks the packing and the blocked padding).
#[test]
fn quantize_cpu_matches_model() {
    fn run<T: TestElement>(dtype: InputDtype) {
        let mut rng = Rng::new(20 + dtype as u64);
        let shapes = [(0, 16), (1, 16), (3, 64), (7, 784), (130, 48)];
        for dist in [Dist::Random, Dist::Tiny, Dist::Huge, Dist::Zero, Dist::NaN] {
            for (i, &(rows, k)) in shapes.iter().enumerate() {
                let stride = k + 16 * (i % 2);
                let x = convert::<T>(&draw(&mut rng, dist, dtype, rows * stride));
                for layout in [Plain, Blocked] {
                    for g in [None, Some(0.75), Some(2f32.powi(-12))] {
                        let q = quantize_cpu(&x, rows, k, Some(stride), g, layout).unwrap();
                        assert_eq!(q.fp4.len(), rows * k / 2);
                        assert_eq!(
                            q.scales.len(),
                            scale_len(layout, rows as u64, k as u32) as usize
                        );
                        let label = format!("{dtype:?} {dist:?} {rows}x{k} {layout:?} g={g:?}");
                        check_against_model(&label, &x, stride, &q);
                    }
                }
            }
        }
    }
    run::<f16>(InputDtype::F16);
    run::<bf16>(InputDtype::Bf16);
    run::<f32>(InputDtype::F32);
}

/// The documented error bound of the dequantized values: per element
/// `|x - deq| <= amax / 6 * (1 + 2^-4) * (1 + 2^-20)` when the block's scale is an
/// unsaturated E4M3 normal, `|x - deq| <= |x| / 5 * (1 + 2^-20)` for `|x| >= s * g`, and every
/// value is the nearest multiple `e2m1 * s * g` of x given its scale (saturating at 6).
/// Dequantized with the reference's own decoder.
#[test]
fn dequantized_values_within_documented_bound() {
    let mut rng = Rng::new(30);
    let (rows, k) = (64, 1024);
    let mut worst_amax = 0.0f64;
    let mut worst_rel = 0.0f64;
    let (mut err2, mut x2) = (0.0f64, 0.0f64);
    let (mut checked, mut skipped) = (0usize, 0usize);
    for g in [None, Some(1.0f32 / 2688.0), Some(2f32.powi(-30))] {
        let gv = g.unwrap_or(1.0) as f64;
        // Block magnitudes from about 2^-2 * g to 2^11 * g: scales between 2^-6 and 448
        // (E4M3 normals, no saturation), where the bound holds; blocks that still got a
        // subnormal scale are skipped (and counted).
        let x: Vec<f32> = (0..rows * k)
            .map(|i| {
                let e = (i / 16 % 14) as i32 - 2;
                (uniform(&mut rng) * 2f64.powi(e) * gv) as f32
            })
            .collect();
        let q = quantize_cpu(&x, rows, k, None, g, Plain).unwrap();
        let deq = reference::dequantize(rows, k, &q.fp4, &q.scales, Plain);
        for (b, (xs, ds)) in x.chunks(16).zip(deq.chunks(16)).enumerate() {
            let amax = xs.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
            if !(0x08..=0x7E).contains(&q.scales[b]) {
                skipped += 1;
                continue;
            }
            checked += 1;
            let s = e4m3_to_f32(q.scales[b]) as f64;
            for (&xv, &dv) in xs.iter().zip(ds) {
                let (xv, dv) = (xv as f64, dv as f64 * gv);
                let err = (xv - dv).abs();
                err2 += err * err;
                x2 += xv * xv;
                let bound = amax / 6.0 * (1.0 + 1.0 / 16.0) * (1.0 + 2f64.powi(-20));
                assert!(
                    err <= bound,
                    "block {b}: x = {xv}, deq = {dv}, amax = {amax}, g = {g:?}"
                );
                worst_amax = worst_amax.max(err / amax);
                if xv.abs() >= s * gv {
                    let rel = err / xv.abs();
                    assert!(rel <= 0.2 * (1.0 + 2f64.powi(-20)), "x = {xv}, deq = {dv}");
                    worst_rel = worst_rel.max(rel);
                }
                // Nearest given the scale: no other E2M1 magnitude is closer.
                let best = E2M1_VALUES
                    .iter()
                    .map(|m| (xv.abs() - m * s * gv).abs())
                    .fold(f64::INFINITY, f64::min);
                let tol = 2f64.powi(-20) * xv.abs();
                assert!(err <= best + tol, "x = {xv}: deq {dv} is not the nearest");
            }
        }
    }
    let rel_frob = (err2 / x2).sqrt();
    println!(
        "dequantization: worst |err| / amax = {worst_amax:.4} (bound 0.1771), worst relative \
         error for |x| >= s*g = {worst_rel:.4} (bound 0.2), relative Frobenius {rel_frob:.4}; \
         {checked} blocks checked, {skipped} skipped (subnormal scale)"
    );
    assert!(
        skipped * 100 < checked,
        "the data should exercise normal scales"
    );
    assert!(
        worst_amax > 0.15 && worst_rel > 0.15,
        "the bounds are nearly reached"
    );
}

#[test]
fn tiny_huge_zero_nan_inputs() {
    // Tiny fp32 (1e-30): every scale 0 and every magnitude 0, signs kept.
    let x: Vec<f32> = (0..64)
        .map(|i| if i % 2 == 0 { 1e-30 } else { -1e-30 })
        .collect();
    let q = quantize_cpu(&x, 1, 64, None, None, Plain).unwrap();
    assert_eq!(q.scales, [0; 4]);
    assert!(q.fp4.iter().all(|&b| b == 0x80));
    // ... unless a global scale brings them into range (NVFP4's g = amax / 2688).
    let q = quantize_cpu(&x, 1, 64, None, Some(1e-30 / 2688.0), Plain).unwrap();
    assert!(q.scales.iter().all(|&s| s == 0x7E));
    assert!(q.fp4.iter().all(|&b| b == 0xF7));
    // fp16 subnormals: 2^-24 / 6 is far below 2^-10.
    let x = vec![f16::from_bits(1); 16];
    assert_eq!(
        quantize_cpu(&x, 1, 16, None, None, Plain).unwrap().scales,
        [0]
    );
    // Huge bf16 (1e38, beyond 448 * 6): saturated scale and values.
    let x = vec![bf16::from_f32(-1e38); 32];
    let q = quantize_cpu(&x, 1, 32, None, None, Plain).unwrap();
    assert_eq!(q.scales, [0x7E, 0x7E]);
    assert!(q.fp4.iter().all(|&b| b == 0xFF));
    // Zero: scale 0, codes 0.
    let q = quantize_cpu(&[0.0f32; 32], 2, 16, None, Some(0.5), Blocked).unwrap();
    assert!(q.scales.iter().all(|&s| s == 0) && q.fp4.iter().all(|&b| b == 0));
    // NaN: its block only.
    let mut x = vec![1.0f32; 48];
    x[20] = f32::NAN;
    let q = quantize_cpu(&x, 1, 48, None, None, Plain).unwrap();
    assert_eq!(q.scales[1], 0x7F);
    assert!(q.fp4[8..16].iter().all(|&b| b == 0));
    assert_eq!(q.scales[0], q.scales[2]);
    assert_eq!(q.fp4[..8], q.fp4[16..]);
}

#[test]
fn dtypes_agree_on_shared_values() {
    // Values exact in fp16, bf16 and f32 quantize identically.
    let mut rng = Rng::new(40);
    let x: Vec<f32> = (0..8 * 64)
        .map(|_| (rng.below(256) as f32 - 128.0) * 2f32.powi(rng.below(8) as i32 - 6))
        .collect();
    let a = quantize_cpu(&x, 8, 64, None, None, Blocked).unwrap();
    let b = quantize_cpu(&convert::<f16>(&x), 8, 64, None, None, Blocked).unwrap();
    let c = quantize_cpu(&convert::<bf16>(&x), 8, 64, None, None, Blocked).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn row_stride_ignores_padding_elements() {
    let mut rng = Rng::new(50);
    let (rows, k, stride) = (5, 64, 80);
    let packed = draw(&mut rng, Dist::Random, InputDtype::F32, rows * k);
    let mut strided = vec![f32::NAN; rows * stride];
    for r in 0..rows {
        strided[r * stride..r * stride + k].copy_from_slice(&packed[r * k..(r + 1) * k]);
    }
    // The last row needs only k elements.
    strided.truncate((rows - 1) * stride + k);
    for layout in [Plain, Blocked] {
        let a = quantize_cpu(&packed, rows, k, None, None, layout).unwrap();
        let b = quantize_cpu(&strided, rows, k, Some(stride), None, layout).unwrap();
        assert_eq!(a, b);
    }
}

fn field_of(e: &Error) -> &'static str {
    match e {
        Error::InvalidQuantize { field, .. } => field,
        other => panic!("expected InvalidQuantize, got {other:?}"),
    }
}

#[test]
fn cpu_errors_name_the_field() {
    let x = vec![0.0f32; 1024];
    let cases: [(&str, Result<Quantized, Error>, &str); 9] = [
        (
            "k",
            quantize_cpu(&x, 1, 0, None, None, Plain),
            "`k` = 0 must be positive",
        ),
        (
            "k",
            quantize_cpu(&x, 1, 40, None, None, Plain),
            "not a multiple of 16",
        ),
        (
            "row_stride",
            quantize_cpu(&x, 2, 32, Some(16), None, Plain),
            "less than a row",
        ),
        (
            "input",
            quantize_cpu(&x, 33, 32, None, None, Plain),
            "holds 4096 bytes but the shape needs 4224 bytes",
        ),
        (
            "input",
            quantize_cpu(&x, 3, 32, Some(500), None, Plain),
            "needs 4128 bytes",
        ),
        (
            "global_scale",
            quantize_cpu(&x, 1, 16, None, Some(f32::NAN), Plain),
            "NaN must be finite",
        ),
        (
            "global_scale",
            quantize_cpu(&x, 1, 16, None, Some(0.0), Plain),
            "at least 2^-126",
        ),
        (
            "global_scale",
            quantize_cpu(&x, 1, 16, None, Some(-1.0), Plain),
            "= -1",
        ),
        (
            "global_scale",
            quantize_cpu(&x, 1, 16, None, Some(1e-40), Plain),
            "smallest normal",
        ),
    ];
    for (field, result, message) in cases {
        let e = result.expect_err(field);
        let text = e.to_string();
        println!("{text}");
        assert_eq!(field_of(&e), field, "{text}");
        assert!(text.starts_with(&format!("quantize: `{field}`")), "{text}");
        assert!(text.contains(message), "{text} should contain {message}");
    }
    // Empty tensors are fine.
    let q = quantize_cpu::<f32>(&[], 0, 16, None, None, Blocked).unwrap();
    assert!(q.fp4.is_empty() && q.scales.is_empty());
}

/// The GPU-side rules of `check` (alignment, nulls, overlaps, stride multiple), on numbers.
#[test]
fn device_validation_names_the_field() {
    let (rows, k) = (40usize, 256usize);
    let base = QuantSpec {
        dtype: InputDtype::Bf16,
        rows,
        k,
        row_stride: None,
        input: Span::new(0x1000_0000, rows * k * 2),
        global_scale: None,
        scale_layout: Blocked,
        out_fp4: Span::new(0x2000_0000, fp4_bytes(rows, k)),
        out_scales: Span::new(0x3000_0000, scale_bytes(Blocked, rows, k)),
    };
    check(&base).expect("the base spec is valid");
    let mut cases: Vec<(QuantSpec, &str, &str)> = Vec::new();
    let mut case = |f: &dyn Fn(&mut QuantSpec), field: &'static str, message: &'static str| {
        let mut s = base;
        f(&mut s);
        cases.push((s, field, message));
    };
    case(&|s| s.k = 40, "k", "not a multiple of 16");
    case(&|s| s.rows = 1 << 33, "rows", "does not fit in 32 bits");
    case(
        &|s| s.input.addr += 8,
        "input",
        "at 0x10000008 is not 16-byte aligned",
    );
    case(&|s| s.input.addr = 0, "input", "null pointer");
    case(
        &|s| s.input.len_bytes -= 1,
        "input",
        "holds 20479 bytes but the shape needs 20480 bytes",
    );
    case(&|s| s.out_fp4.addr += 4, "out_fp4", "not 8-byte aligned");
    case(
        &|s| s.out_fp4.len_bytes -= 1,
        "out_fp4",
        "holds 5119 bytes but the shape needs 5120 bytes",
    );
    case(
        &|s| s.out_scales.len_bytes = 640,
        "out_scales",
        "holds 640 bytes but the shape needs 2048 bytes",
    );
    case(&|s| s.out_scales.addr = 0, "out_scales", "null pointer");
    case(
        &|s| s.out_scales.addr = u64::MAX - 100,
        "out_scales",
        "extends past the 64-bit address space",
    );
    case(
        &|s| {
            s.row_stride = Some(260);
            s.input.len_bytes = 1 << 20;
        },
        "row_stride",
        "= 260 elements (520 bytes) is not a multiple of 16 bytes",
    );
    case(
        &|s| s.out_fp4.addr = 0x1000_1000,
        "out_fp4",
        "overlaps `input`",
    );
    case(
        &|s| s.out_scales.addr = 0x1000_4FF8,
        "out_scales",
        "overlaps `input`",
    );
    case(
        &|s| s.out_scales.addr = 0x2000_1000,
        "out_scales",
        "overlaps `out_fp4`",
    );
    case(
        &|s| s.global_scale = Some(f32::INFINITY),
        "global_scale",
        "inf must be finite",
    );
    for (spec, field, message) in cases {
        let e = check(&spec).expect_err(message);
        let text = e.to_string();
        println!("{text}");
        assert_eq!(field_of(&e), field, "{text}");
        assert!(text.contains(message), "{text} should contain {message}");
    }
    // No rows: nothing is needed, null buffers included.
    let empty = QuantSpec {
        rows: 0,
        input: Span::default(),
        out_fp4: Span::default(),
        out_scales: Span::default(),
        ..base
    };
    check(&empty).unwrap();
    // Adjacent buffers do not overlap.
    let adjacent = QuantSpec {
        out_fp4: Span::new(0x1000_0000 + (rows * k * 2) as u64, fp4_bytes(rows, k)),
        ..base
    };
    check(&adjacent).unwrap();
}

// ---------------------------------------------------------------------------------------
// Quantize-then-GEMM accuracy against the unquantized inputs, on the CPU.

/// Standard normal (Box-Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) * 2f64.powi(-53);
    let u2 = (rng.next_u64() >> 11) as f64 * 2f64.powi(-53);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A `rows x k` bf16 tensor of normal values times 2^e per row, e uniform in -3..=3 (rows of
/// several magnitudes, like activations).
fn normal_bf16(rng: &mut Rng, rows: usize, k: usize) -> Vec<bf16> {
    let mut out = Vec::with_capacity(rows * k);
    for _ in 0..rows {
        let scale = 2f64.powi(rng.below(7) as i32 - 3);
        out.extend((0..k).map(|_| bf16::from_f64(normal(rng) * scale)));
    }
    out
}

/// `A * B^T` in f64 of two row-major bf16 tensors (`m x k`, `n x k`).
fn product_f64(a: &[bf16], b: &[bf16], m: usize, n: usize, k: usize) -> Vec<f64> {
    let a: Vec<f64> = a.iter().map(|v| v.to_f64()).collect();
    let b: Vec<f64> = b.iter().map(|v| v.to_f64()).collect();
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = a[i * k..(i + 1) * k]
                .iter()
                .zip(&b[j * k..(j + 1) * k])
                .map(|(x, y)| x * y)
                .sum();
        }
    }
    c
}

fn rel_frobenius(got: impl Iterator<Item = f64>, want: &[f64]) -> f64 {
    let (mut d2, mut w2) = (0.0, 0.0);
    for (g, &w) in got.zip(want) {
        d2 += (g - w) * (g - w);
        w2 += w * w;
    }
    (d2 / w2).sqrt()
}

/// Relative Frobenius error of a quantized operand against its bf16 source.
fn operand_error(x: &[bf16], q: &Quantized) -> f64 {
    let deq = reference::dequantize(q.rows, q.k, &q.fp4, &q.scales, q.scale_layout);
    let want: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    rel_frobenius(deq.iter().map(|&d| d as f64 * q.global_scale as f64), &want)
}

/// The bound on the relative Frobenius error of `Q(A) Q(B)^T` against `A B^T` asserted by
/// the quantize-then-GEMM tests (CPU and GPU), for the normal data of [`normal_bf16`].
///
/// Derivation: with `A' = A + E_A`, `B' = B + E_B`, the error is `E_A B^T + A E_B^T +
/// E_A E_B^T`. For data and rounding errors that are uncorrelated (random inputs, errors
/// independent of the other operand), `||E_A B^T||_F ~ rho_A ||A B^T||_F` where
/// `rho_A = ||E_A||_F / ||A||_F`, so the relative error is about
/// `sqrt(rho_A^2 + rho_B^2 + rho_A^2 rho_B^2)`. NVFP4 with E4M3 block scales on normal data
/// gives `rho` of about 0.095 per operand (measured by `quantize_then_gemm_error_cpu`, which
/// prints it: 0.0945 .. 0.0953 on its two shapes), so about 0.135 predicted for the product;
/// measured 0.128 and 0.133. The bound is 0.20, with margin for the sampling spread of these
/// small products, and the tests also check the error against the prediction from the
/// operands' own measured `rho` (within 25%).
const GEMM_REL_FROBENIUS_BOUND: f64 = 0.20;

/// `sqrt(rho_a^2 + rho_b^2 + rho_a^2 rho_b^2)`, the expected relative error of the product.
fn predicted_product_error(rho_a: f64, rho_b: f64) -> f64 {
    (rho_a * rho_a + rho_b * rho_b + rho_a * rho_a * rho_b * rho_b).sqrt()
}

/// `g = amax / (448 * 6)` over a tensor: NVFP4 checkpoints' global scale, which puts the
/// largest block's scale at the top of the E4M3 range.
fn checkpoint_global_scale(x: &[bf16]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.to_f32().abs()));
    amax / 2688.0
}

#[test]
fn quantize_then_gemm_error_cpu() {
    let mut rng = Rng::new(60);
    for &(m, n, k) in &[(40, 128, 1024), (76, 96, 4096)] {
        let a = normal_bf16(&mut rng, m, k);
        let b = normal_bf16(&mut rng, n, k);
        let ga = checkpoint_global_scale(&a);
        let qa = quantize_cpu(&a, m, k, None, Some(ga), Blocked).unwrap();
        let qb = quantize_cpu(&b, n, k, None, None, Plain).unwrap();
        let p = HostProblem {
            m,
            n,
            k,
            a: qa.fp4.clone(),
            sfa: qa.scales.clone(),
            sfa_layout: qa.scale_layout,
            b: qb.fp4.clone(),
            sfb: qb.scales.clone(),
            sfb_layout: qb.scale_layout,
            alpha: ga,
        };
        let quantized = reference::gemm(&p); // exact product of the quantized operands
        let exact = product_f64(&a, &b, m, n, k);
        let err = rel_frobenius(quantized.iter().copied(), &exact);
        let (rho_a, rho_b) = (operand_error(&a, &qa), operand_error(&b, &qb));
        let predicted = predicted_product_error(rho_a, rho_b);
        println!(
            "quantize-then-GEMM (CPU) {m}x{n}x{k}: rel Frobenius {err:.4} (predicted {predicted:.4} \
             from rho_a = {rho_a:.4}, rho_b = {rho_b:.4}; bound {GEMM_REL_FROBENIUS_BOUND})"
        );
        assert!(err <= GEMM_REL_FROBENIUS_BOUND, "{err}");
        assert!(
            (err - predicted).abs() <= 0.25 * predicted,
            "{err} vs {predicted}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// GPU tests.

struct QuantGpu {
    stream: Arc<CudaStream>,
    quantizer: Quantizer,
}

impl QuantGpu {
    fn new() -> Self {
        let ctx = CudaContext::new(0).expect("CUDA device 0 (these tests need a GPU)");
        Self::with_context(ctx)
    }

    fn with_context(ctx: Arc<CudaContext>) -> Self {
        let stream = ctx.default_stream();
        let quantizer = Quantizer::new(ctx.clone()).expect("loading the quantization kernel");
        let (major, minor) = quantizer.compute_capability();
        eprintln!(
            "device: {} (sm_{major}{minor}), PTX {}",
            ctx.name().unwrap_or_else(|_| "?".into()),
            quantizer.ptx_arch()
        );
        Self { stream, quantizer }
    }

    /// Quantizes `x` (`rows x k`, row stride `stride`) on the GPU: the input is uploaded
    /// behind `offset` elements of NaN (so a view with an offset is used), the outputs are
    /// views of exactly the needed length in buffers 64 bytes longer, all filled with
    /// `poison`; checks the tails kept the poison, returns what the views got.
    #[allow(clippy::too_many_arguments)]
    fn quantize<T: TestElement>(
        &self,
        x: &[T],
        rows: usize,
        k: usize,
        stride: usize,
        offset: usize,
        g: Option<f32>,
        layout: ScaleLayout,
        poison: u8,
    ) -> (Vec<u8>, Vec<u8>) {
        let s = &self.stream;
        let mut host = vec![T::from_f32(f32::NAN); offset];
        host.extend_from_slice(x);
        host.push(T::from_f32(f32::NAN)); // never an empty allocation
        let input: CudaSlice<T> = s.clone_htod(&host).expect("upload input");
        let (nf, ns) = (fp4_bytes(rows, k), scale_bytes(layout, rows, k));
        let mut fp4 = s.clone_htod(&vec![poison; nf + 64]).expect("alloc fp4");
        let mut scales = s.clone_htod(&vec![poison; ns + 64]).expect("alloc scales");
        let view = input.slice(offset..);
        let input = QuantInput::from_view(view, rows, k).with_row_stride(stride);
        self.quantizer
            .quantize(
                s,
                &input,
                g,
                layout,
                QuantOutput::from(fp4.slice_mut(..nf)),
                QuantOutput::from(scales.slice_mut(..ns)),
            )
            .expect("quantize");
        drop(input);
        let fp4: Vec<u8> = s.clone_dtoh(&fp4).expect("download fp4");
        let scales: Vec<u8> = s.clone_dtoh(&scales).expect("download scales");
        s.synchronize().expect("synchronize");
        assert!(
            fp4[nf..].iter().all(|&b| b == poison),
            "bytes past out_fp4 written"
        );
        assert!(
            scales[ns..].iter().all(|&b| b == poison),
            "bytes past out_scales written"
        );
        (fp4[..nf].to_vec(), scales[..ns].to_vec())
    }
}

/// The GPU kernel against `quantize_cpu`, bit for bit: every dtype, both layouts, rows in
/// {0, 1, 7, 40, 76, 300}, K in {16, 64, 784, 4096}, random / tiny / huge / zero / NaN data,
/// no global scale, a checkpoint-style one and an arbitrary one, packed and padded rows.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_matches_cpu_bit_for_bit() {
    fn run<T: TestElement>(gpu: &QuantGpu, dtype: InputDtype) -> usize {
        let mut rng = Rng::new(100 + dtype as u64);
        let mut cases = 0;
        let dists = [Dist::Random, Dist::Tiny, Dist::Huge, Dist::Zero, Dist::NaN];
        for (i, &rows) in [0usize, 1, 7, 40, 76, 300].iter().enumerate() {
            for (j, &k) in [16usize, 64, 784, 4096].iter().enumerate() {
                // Padded rows on every other case: 16 more elements (32 or 64 bytes).
                let stride = if (i + j) % 2 == 1 { k + 16 } else { k };
                // Input views at 0 or 32 bytes into their buffer.
                let offset = ((i + j) % 3 == 2) as usize * (32 / dtype.bytes() as usize);
                for (d, &dist) in dists.iter().enumerate() {
                    let x = draw(&mut rng, dist, dtype, rows.saturating_sub(1) * stride + k);
                    let x = convert::<T>(&if rows == 0 { Vec::new() } else { x });
                    let amax = x.iter().fold(0.0f32, |m, v| {
                        let v = v.to_f32().abs();
                        if v.is_finite() { m.max(v) } else { m }
                    });
                    let checkpoint = (amax / 2688.0).max(f32::MIN_POSITIVE);
                    let gs = [None, Some(checkpoint), Some(0.3)];
                    for layout in [Plain, Blocked] {
                        let g = gs[(d + layout as usize + i) % 3];
                        let poison = if (i + j + d) % 2 == 0 { 0xA5 } else { 0x5A };
                        let want = quantize_cpu(&x, rows, k, Some(stride), g, layout).unwrap();
                        let (fp4, scales) =
                            gpu.quantize(&x, rows, k, stride, offset, g, layout, poison);
                        let label = format!(
                            "{dtype:?} {dist:?} rows={rows} k={k} stride={stride} \
                             offset={offset} {layout:?} g={g:?}"
                        );
                        let first = |a: &[u8], b: &[u8]| a.iter().zip(b).position(|(x, y)| x != y);
                        assert_eq!(fp4.len(), want.fp4.len(), "{label}");
                        assert!(
                            fp4 == want.fp4,
                            "{label}: FP4 differs first at byte {:?}",
                            first(&fp4, &want.fp4)
                        );
                        assert!(
                            scales == want.scales,
                            "{label}: scales differ first at byte {:?}",
                            first(&scales, &want.scales)
                        );
                        cases += 1;
                    }
                }
            }
        }
        cases
    }
    let gpu = QuantGpu::new();
    let cases = run::<f16>(&gpu, InputDtype::F16)
        + run::<bf16>(&gpu, InputDtype::Bf16)
        + run::<f32>(&gpu, InputDtype::F32);
    println!("GPU == CPU bit for bit in {cases} cases");
}

/// A bigger tensor than the grid (the grid-stride loop wraps many times), every layout.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_large_tensor_matches_cpu() {
    let gpu = QuantGpu::new();
    let mut rng = Rng::new(200);
    let (rows, k) = (4099, 7168);
    let x = convert::<bf16>(&draw(&mut rng, Dist::Random, InputDtype::Bf16, rows * k));
    for layout in [Plain, Blocked] {
        let want = quantize_cpu(&x, rows, k, None, Some(0.01), layout).unwrap();
        let (fp4, scales) = gpu.quantize(&x, rows, k, k, 0, Some(0.01), layout, 0xA5);
        assert!(fp4 == want.fp4 && scales == want.scales, "{layout:?}");
        println!(
            "{rows}x{k} {layout:?}: equal ({} CTAs)",
            gpu.quantizer.grid_size(layout, rows, k)
        );
    }
}

/// Errors on the GPU path come before any launch and leave the quantizer usable.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_validation_errors() {
    let gpu = QuantGpu::new();
    let s = &gpu.stream;
    let x: CudaSlice<f16> = s.alloc_zeros(40 * 64 + 8).unwrap();
    let mut fp4 = s.alloc_zeros::<u8>(40 * 32).unwrap();
    let mut sf = s.alloc_zeros::<u8>(40 * 4).unwrap();
    // A view 8 bytes in: misaligned.
    let input = QuantInput::from_view(x.slice(4..), 40, 64);
    let e = gpu
        .quantizer
        .quantize(s, &input, None, Plain, (&mut fp4).into(), (&mut sf).into())
        .unwrap_err();
    println!("{e}");
    assert_eq!(field_of(&e), "input");
    // Blocked scales need 128 x 4 bytes.
    let input = QuantInput::from_slice(&x, 40, 64);
    let e = gpu
        .quantizer
        .quantize(
            s,
            &input,
            None,
            Blocked,
            (&mut fp4).into(),
            (&mut sf).into(),
        )
        .unwrap_err();
    println!("{e}");
    assert_eq!(field_of(&e), "out_scales");
    // The valid call still works.
    gpu.quantizer
        .quantize(s, &input, None, Plain, (&mut fp4).into(), (&mut sf).into())
        .unwrap();
    s.synchronize().unwrap();
}

/// Quantize random bf16 A and B on the GPU, run the grouped GEMM on the quantized buffers
/// (A under a checkpoint-style global scale folded into alpha), and check:
/// - the GEMM against the f64 reference of the quantized operands (downloaded), with the
///   usual FullRange tolerance;
/// - the quantized operands against `quantize_cpu` (bit for bit);
/// - the product against the f64 product of the unquantized bf16 inputs: relative Frobenius
///   within [`GEMM_REL_FROBENIUS_BOUND`] and within 25% of the prediction from the operands'
///   measured quantization errors (plus the fp16 output rounding, 2^-11).
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_quantize_then_gemm() {
    let gemm_gpu = Gpu::new();
    let gpu = QuantGpu::with_context(gemm_gpu.ctx.clone());
    let s = &gpu.stream;
    let mut rng = Rng::new(300);
    for &(m, n, k, la, lb) in &[
        (40, 256, 1024, Blocked, Plain),
        (76, 512, 4096, Plain, Blocked),
        (300, 384, 784, Blocked, Blocked),
    ] {
        let a = normal_bf16(&mut rng, m, k);
        let b = normal_bf16(&mut rng, n, k);
        let ga = checkpoint_global_scale(&a);
        let (da, db) = (s.clone_htod(&a).unwrap(), s.clone_htod(&b).unwrap());
        let mut fa = s.alloc_zeros::<u8>(fp4_bytes(m, k)).unwrap();
        let mut sa = s.alloc_zeros::<u8>(scale_bytes(la, m, k)).unwrap();
        let mut fb = s.alloc_zeros::<u8>(fp4_bytes(n, k)).unwrap();
        let mut sb = s.alloc_zeros::<u8>(scale_bytes(lb, n, k)).unwrap();
        let q = &gpu.quantizer;
        q.quantize(
            s,
            &QuantInput::from_slice(&da, m, k),
            Some(ga),
            la,
            (&mut fa).into(),
            (&mut sa).into(),
        )
        .expect("quantize A");
        q.quantize(
            s,
            &QuantInput::from_slice(&db, n, k),
            None,
            lb,
            (&mut fb).into(),
            (&mut sb).into(),
        )
        .expect("quantize B");
        let mut c = s.alloc_zeros::<f16>(m * n).unwrap();
        let problems = [Problem {
            m,
            n,
            k,
            a: DeviceInput::from(&fa),
            lda: None,
            sfa: DeviceInput::from(&sa),
            sfa_layout: la,
            b: DeviceInput::from(&fb),
            ldb: None,
            sfb: DeviceInput::from(&sb),
            sfb_layout: lb,
            c: DeviceOutput::from(&mut c),
            ldc: None,
            alpha: ga, // g_a * g_b with g_b = 1
        }];
        gemm_gpu.gemm.run(s, &problems).expect("GEMM");
        drop(problems);
        let got: Vec<f16> = s.clone_dtoh(&c).unwrap();
        let host = |d: &CudaSlice<u8>| -> Vec<u8> { s.clone_dtoh(d).unwrap() };
        let p = HostProblem {
            m,
            n,
            k,
            a: host(&fa),
            sfa: host(&sa),
            sfa_layout: la,
            b: host(&fb),
            sfb: host(&sb),
            sfb_layout: lb,
            alpha: ga,
        };
        s.synchronize().unwrap();
        let qa = quantize_cpu(&a, m, k, None, Some(ga), la).unwrap();
        let qb = quantize_cpu(&b, n, k, None, None, lb).unwrap();
        assert!(p.a == qa.fp4 && p.sfa == qa.scales, "A: GPU != CPU");
        assert!(p.b == qb.fp4 && p.sfb == qb.scales, "B: GPU != CPU");
        let label = format!("quantize-then-GEMM {m}x{n}x{k} {la:?}/{lb:?}");
        assert!(check_gemm(&label, &p, &got, Tolerance::FullRange).passed);
        let exact = product_f64(&a, &b, m, n, k);
        let err = rel_frobenius(got.iter().map(|v| v.to_f64()), &exact);
        let predicted = predicted_product_error(operand_error(&a, &qa), operand_error(&b, &qb));
        println!(
            "{label}: rel Frobenius vs unquantized bf16 product {err:.4} (predicted \
             {predicted:.4}, bound {GEMM_REL_FROBENIUS_BOUND})"
        );
        assert!(err <= GEMM_REL_FROBENIUS_BOUND, "{label}: {err}");
        assert!(
            (err - predicted).abs() <= 0.25 * predicted + 2f64.powi(-11),
            "{label}: {err} vs predicted {predicted}"
        );
    }
}

/// [`Quantizer::from_gemm`]: the kernel from the GEMM's own module (same context, same PTX)
/// quantizes bit for bit like the CPU.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_quantizer_from_gemm() {
    let ctx = CudaContext::new(0).expect("CUDA device 0 (these tests need a GPU)");
    let gemm = nvfp4::GroupedGemm::new(ctx.clone()).expect("loading the GEMM kernels");
    let gpu = QuantGpu {
        stream: ctx.default_stream(),
        quantizer: Quantizer::from_gemm(&gemm).expect("Quantizer::from_gemm"),
    };
    assert!(Arc::ptr_eq(gpu.quantizer.context(), gemm.context()));
    assert_eq!(gpu.quantizer.ptx_arch(), gemm.ptx_arch());
    let mut rng = Rng::new(77);
    let (rows, k) = (76, 784);
    for layout in [Plain, Blocked] {
        let x = convert::<bf16>(&draw(&mut rng, Dist::Random, InputDtype::Bf16, rows * k));
        let want = quantize_cpu(&x, rows, k, None, Some(0.3), layout).unwrap();
        let (fp4, scales) = gpu.quantize(&x, rows, k, k, 0, Some(0.3), layout, 0xA5);
        assert!(fp4 == want.fp4, "{layout:?}: FP4 differs");
        assert!(scales == want.scales, "{layout:?}: scales differ");
    }
    println!("Quantizer::from_gemm ({}): GPU == CPU", gemm.ptx_arch());
}
