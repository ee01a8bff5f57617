//! `nvfp4 check`: the GPU MODE test shapes and the ragged shapes in three scale-layout
//! combinations, against the f64 CPU reference (GPU), or a self-check of the reference (CPU).

use super::args::CheckOpts;
use super::device;
use super::gpu::{self, AnyResult, DeviceGroup};
use super::util::{ErrorAccumulator, ErrorSummary, Progress, Table, describe, fmt_err};
use nvfp4::cudarc::driver::{CudaContext, CudaStream};
use nvfp4::r#gen::{self, Distribution};
use nvfp4::reference::{self, Tolerance};
use nvfp4::shapes::{self, GroupShape};
use nvfp4::{GroupedGemm, HostProblem, ScaleLayout, f16};
use rayon::prelude::*;
use std::sync::Arc;

/// One shape of the suite with the distribution and tolerance it is judged by.
struct Case {
    shape: GroupShape,
    dist: Distribution,
    tol: Tolerance,
}

fn suite() -> Vec<Case> {
    let tests = shapes::gpu_mode_tests().into_iter().map(|shape| Case {
        shape,
        dist: Distribution::GpuMode,
        tol: Tolerance::GpuMode,
    });
    let ragged = shapes::ragged().into_iter().map(|shape| Case {
        shape,
        dist: Distribution::FullRange,
        tol: Tolerance::FullRange,
    });
    tests.chain(ragged).collect()
}

fn dist_name(d: Distribution) -> &'static str {
    match d {
        Distribution::GpuMode => "gpu_mode",
        Distribution::FullRange => "full_range",
    }
}

/// The scale-layout combinations (A, B) every shape runs in.
const LAYOUTS: [(ScaleLayout, ScaleLayout, &str); 3] = [
    (ScaleLayout::Plain, ScaleLayout::Plain, "plain/plain"),
    (
        ScaleLayout::Blocked,
        ScaleLayout::Blocked,
        "blocked/blocked",
    ),
    (ScaleLayout::Plain, ScaleLayout::Blocked, "plain/blocked"),
];

/// `p` (plain scales) with its scales repacked into the given layouts. The padding of the
/// blocked layout alternates between the two E4M3 NaN codes, so reading it shows as NaN.
///
/// All three variants of a shape thus hold the same values, and one reference serves them.
fn with_layouts(p: &HostProblem, sfa_layout: ScaleLayout, sfb_layout: ScaleLayout) -> HostProblem {
    assert_eq!(
        (p.sfa_layout, p.sfb_layout),
        (ScaleLayout::Plain, ScaleLayout::Plain)
    );
    let nan_pad = || {
        let mut flip = false;
        move || {
            flip = !flip;
            if flip { 0x7F } else { 0xFF }
        }
    };
    HostProblem {
        sfa: r#gen::pack_scales(sfa_layout, p.m, p.k, &p.sfa, nan_pad()),
        sfa_layout,
        sfb: r#gen::pack_scales(sfb_layout, p.n, p.k, &p.sfb, nan_pad()),
        sfb_layout,
        ..p.clone()
    }
}

/// The shape's problems drawn with plain scales.
fn generate(case: &Case, seed: u64) -> Vec<HostProblem> {
    r#gen::group(
        seed,
        &case.shape,
        case.dist,
        ScaleLayout::Plain,
        ScaleLayout::Plain,
    )
}

/// Exact reference outputs, and the |term| sums when the tolerance needs them.
struct Expected {
    want: Vec<Vec<f64>>,
    abs: Option<Vec<Vec<f64>>>,
}

fn expected(host: &[HostProblem], tol: Tolerance) -> Expected {
    match tol {
        Tolerance::GpuMode => Expected {
            want: host.iter().map(reference::gemm).collect(),
            abs: None,
        },
        Tolerance::FullRange => {
            let (want, abs) = host.iter().map(reference::gemm_with_abs).unzip();
            Expected {
                want,
                abs: Some(abs),
            }
        }
    }
}

/// Compares each problem's output with its own K.
fn compare(
    host: &[HostProblem],
    got: &[Vec<f16>],
    exp: &Expected,
    tol: Tolerance,
    poison: bool,
) -> ErrorSummary {
    let mut acc = ErrorAccumulator::default();
    for (i, (p, g)) in host.iter().zip(got).enumerate() {
        let abs = exp.abs.as_ref().map(|a| a[i].as_slice());
        let c = reference::compare_k(g, &exp.want[i], abs, p.k, tol);
        let unwritten = if poison { gpu::unwritten(g) } else { 0 };
        acc.add(g, &exp.want[i], &c, unwritten);
    }
    acc.finish()
}

/// Result of one (shape, layouts) case on the GPU.
struct GpuResult {
    summary: ErrorSummary,
    /// A second run gave bit-identical output.
    repeatable: bool,
}

fn run_case_gpu(
    gemm: &GroupedGemm,
    stream: &Arc<CudaStream>,
    host: &[HostProblem],
    exp: &Expected,
    tol: Tolerance,
) -> AnyResult<GpuResult> {
    let mut dev = DeviceGroup::upload(stream, host)?;
    let mut outputs = Vec::new();
    for _ in 0..2 {
        dev.poison(stream)?;
        {
            let problems = dev.problems();
            let plan = gemm.plan(stream, &problems)?;
            gemm.launch(stream, &plan)?;
        }
        outputs.push(dev.download(stream)?);
    }
    let bits =
        |o: &Vec<Vec<f16>>| -> Vec<u16> { o.iter().flatten().map(|x| x.to_bits()).collect() };
    let repeatable = bits(&outputs[0]) == bits(&outputs[1]);
    let mut summary = compare(host, &outputs[0], exp, tol, true);
    summary.passed &= repeatable;
    Ok(GpuResult {
        summary,
        repeatable,
    })
}

/// The GPU check. Returns whether every case passed.
pub fn run_gpu(ctx: Arc<CudaContext>, opts: &CheckOpts, progress: &Progress) -> AnyResult<bool> {
    let stream = ctx.default_stream();
    progress.step("loading the kernels...");
    let gemm = device::load_gemm_for(ctx.clone(), &opts.common)?;
    println!(
        "outputs poisoned with {:#06x} before each run; each case runs twice and must repeat \
         bit for bit; seed {:#x} (+ shape index)",
        gpu::POISON,
        opts.common.seed
    );
    let mut t = Table::new(&[
        "shape",
        "dist",
        "scales",
        "problems",
        "result",
        "bad",
        "unwritten",
        "repeat",
        "max abs",
        "max rel",
        "rel frob",
    ])
    .left_columns(4);
    let (mut passed, mut failed) = (0usize, 0usize);
    for (i, case) in suite().iter().enumerate() {
        let seed = opts.common.seed.wrapping_add(i as u64);
        progress.step(format!("{}: generating and reference...", case.shape.name));
        let base = generate(case, seed);
        let exp = expected(&base, case.tol);
        for &(la, lb, lname) in &LAYOUTS {
            let host: Vec<HostProblem> = base.iter().map(|p| with_layouts(p, la, lb)).collect();
            let mut row = vec![
                case.shape.name.clone(),
                dist_name(case.dist).into(),
                lname.into(),
                describe(&case.shape.problems),
            ];
            match run_case_gpu(&gemm, &stream, &host, &exp, case.tol) {
                Ok(r) => {
                    let s = r.summary;
                    if s.passed {
                        passed += 1
                    } else {
                        failed += 1
                    }
                    row.extend([
                        s.verdict().into(),
                        s.bad.to_string(),
                        s.unwritten.to_string(),
                        if r.repeatable {
                            "yes".into()
                        } else {
                            "NO".into()
                        },
                        fmt_err(s.max_abs),
                        fmt_err(s.max_rel),
                        fmt_err(s.rel_frobenius),
                    ]);
                }
                Err(e) => {
                    failed += 1;
                    row.push(format!("FAIL: {e}"));
                }
            }
            t.row(row);
        }
    }
    println!();
    print!("{}", t.render());
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// A model of an fp32-accumulating kernel on the CPU: dequantize to f32 (exact), sum the
/// exact products in f32 in K order, multiply by alpha in f32, round once to fp16. It must
/// pass the same tolerance a GPU kernel is held to.
fn fp32_model(p: &HostProblem) -> Vec<f16> {
    let a = reference::dequantize(p.m, p.k, &p.a, &p.sfa, p.sfa_layout);
    let b = reference::dequantize(p.n, p.k, &p.b, &p.sfb, p.sfb_layout);
    let mut c = vec![f16::ZERO; p.m * p.n];
    if p.n == 0 {
        return c;
    }
    c.par_chunks_mut(p.n).enumerate().for_each(|(i, row)| {
        let ar = &a[i * p.k..(i + 1) * p.k];
        for (j, out) in row.iter_mut().enumerate() {
            let br = &b[j * p.k..(j + 1) * p.k];
            let s: f32 = ar.iter().zip(br).fold(0.0f32, |s, (x, y)| s + x * y);
            *out = f16::from_f32(p.alpha * s);
        }
    });
    c
}

/// The CPU self-check. Returns whether every case passed.
pub fn run_cpu(opts: &CheckOpts, progress: &Progress) -> AnyResult<bool> {
    println!(
        "CPU-only check (no kernel runs): the f64 reference on the test and ragged shapes must \
         give bitwise-identical fp16 results for every scale layout, finite outputs, and an \
         fp32-accumulating CPU model of a kernel must pass the tolerance; seed {:#x} (+ shape \
         index)",
        opts.common.seed
    );
    if opts.common.portable {
        println!("--portable: ignored on the CPU path");
    }
    let mut t = Table::new(&[
        "shape",
        "dist",
        "scales",
        "problems",
        "result",
        "same bits",
        "finite",
        "fp32 model",
        "max abs",
        "max rel",
        "rel frob",
    ])
    .left_columns(4);
    let (mut passed, mut failed) = (0usize, 0usize);
    for (i, case) in suite().iter().enumerate() {
        let seed = opts.common.seed.wrapping_add(i as u64);
        progress.step(format!("{}: generating and reference...", case.shape.name));
        let base = generate(case, seed);
        let exp = expected(&base, case.tol);
        let base_bits: Vec<Vec<u16>> = exp
            .want
            .iter()
            .map(|w| {
                reference::round_f16(w)
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            })
            .collect();
        for &(la, lb, lname) in &LAYOUTS {
            let host: Vec<HostProblem> = base.iter().map(|p| with_layouts(p, la, lb)).collect();
            let rounded: Vec<Vec<f16>> = host
                .iter()
                .map(|p| reference::round_f16(&reference::gemm(p)))
                .collect();
            let same_bits = rounded
                .iter()
                .zip(&base_bits)
                .all(|(r, b)| r.iter().map(|x| x.to_bits()).eq(b.iter().copied()));
            let finite = rounded.iter().flatten().all(|x| x.is_finite());
            let model: Vec<Vec<f16>> = host.iter().map(fp32_model).collect();
            let s = compare(&host, &model, &exp, case.tol, false);
            let ok = same_bits && finite && s.passed;
            if ok {
                passed += 1
            } else {
                failed += 1
            }
            let yes = |b: bool| {
                if b {
                    "yes".to_string()
                } else {
                    "NO".to_string()
                }
            };
            t.row(vec![
                case.shape.name.clone(),
                dist_name(case.dist).into(),
                lname.into(),
                describe(&case.shape.problems),
                if ok { "pass".into() } else { "FAIL".into() },
                yes(same_bits),
                yes(finite),
                s.verdict().into(),
                fmt_err(s.max_abs),
                fmt_err(s.max_rel),
                fmt_err(s.rel_frobenius),
            ]);
        }
    }
    println!();
    print!("{}", t.render());
    println!("{passed} passed, {failed} failed (CPU-only check)");
    Ok(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_repack_without_changing_values() {
        let case = &suite()[8];
        let base = generate(case, 1);
        for &(la, lb, _) in &LAYOUTS {
            for p in &base {
                let q = with_layouts(p, la, lb);
                nvfp4::validate::check_host(std::slice::from_ref(&q)).unwrap();
                assert_eq!(
                    reference::dequantize(q.m, q.k, &q.a, &q.sfa, q.sfa_layout),
                    reference::dequantize(p.m, p.k, &p.a, &p.sfa, p.sfa_layout)
                );
                assert_eq!(
                    reference::dequantize(q.n, q.k, &q.b, &q.sfb, q.sfb_layout),
                    reference::dequantize(p.n, p.k, &p.b, &p.sfb, p.sfb_layout)
                );
            }
        }
    }

    #[test]
    fn suite_covers_tests_and_ragged() {
        let s = suite();
        assert_eq!(s.len(), 13);
        assert!(s[..10].iter().all(|c| c.dist == Distribution::GpuMode));
        assert!(s[10..].iter().all(|c| c.tol == Tolerance::FullRange));
    }
}
