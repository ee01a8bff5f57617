//! Reliability on the GPU: one `GroupedGemm` shared by threads on their own streams; errors
//! (validation, foreign contexts and streams) come back as typed errors and leave the
//! `GroupedGemm` usable; fp16 overflow at the edge of the input range.
//!
//! Every test needs a CUDA device and is `#[ignore]`d so that it is reported as ignored, not
//! passed, where there is none. On a GPU machine:
//! `cargo test -p nvfp4-tests --release --test reliability -- --ignored --nocapture`.

use std::sync::{Arc, Barrier};

use nvfp4::cudarc::driver::{CudaContext, CudaStream};
use nvfp4::r#gen::{Distribution, Rng, group, pack_scales, problem};
use nvfp4::reference::{Tolerance, gemm, round_f16};
use nvfp4::shapes::gpu_mode_tests;
use nvfp4::{
    DeviceInput, DeviceOutput, Error, GroupPlan, GroupedGemm, HostProblem, Problem, ScaleLayout,
    f16,
};
use nvfp4_tests::{DeviceProblem, Gpu, Layout, POISON, check, check_group, problems, upload_on};

use ScaleLayout::{Blocked, Plain};

/// C of `dp` (`m * n`, row stride removed), copied on `stream`.
fn download_on(stream: &Arc<CudaStream>, dp: &DeviceProblem) -> Vec<f16> {
    let bits: Vec<f16> = stream.clone_dtoh(&dp.c).expect("download C");
    stream.synchronize().expect("synchronize");
    (0..dp.m)
        .flat_map(|r| bits[r * dp.ldc..r * dp.ldc + dp.n].iter().copied())
        .collect()
}

/// A random group: 1..=6 problems, m 0..200, n 1..300, k 16..=512, random scale layouts,
/// row padding and alpha; FullRange data.
fn random_group(seed: u64) -> (Vec<HostProblem>, Vec<Layout>) {
    let mut rng = Rng::new(seed);
    let g = 1 + rng.below(6) as usize;
    let mut ps = Vec::with_capacity(g);
    let mut layouts = Vec::with_capacity(g);
    for _ in 0..g {
        let m = rng.below(200) as usize;
        let n = 1 + rng.below(300) as usize;
        let k = 16 * (1 + rng.below(32) as usize);
        let pick = |x: u64| if x == 0 { Plain } else { Blocked };
        let (la, lb) = (pick(rng.below(2)), pick(rng.below(2)));
        let mut p = problem(&mut rng, m, n, k, Distribution::FullRange, la, lb);
        p.alpha = [1.0, 0.5, -2.0, 1.0 / 256.0][rng.below(4) as usize];
        ps.push(p);
        layouts.push(Layout {
            lda_pad: 8 * rng.below(4) as usize,
            ldb_pad: 8 * rng.below(4) as usize,
            ldc_pad: rng.below(9) as usize,
            poison: POISON,
        });
    }
    (ps, layouts)
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn concurrent_threads_share_one_gemm() {
    const THREADS: usize = 4;
    const SETS: usize = 5;
    let Gpu { ctx, gemm, .. } = Gpu::new();
    let gemm = Arc::new(gemm);
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ctx, gemm, start) = (ctx.clone(), gemm.clone(), start.clone());
            std::thread::spawn(move || {
                // Start together (before anything that could panic, so nobody waits forever).
                start.wait();
                let stream = ctx.new_stream().expect("new stream");
                let sets: Vec<(Vec<HostProblem>, Vec<Layout>)> = (0..SETS)
                    .map(|s| random_group(20_000 + 100 * t as u64 + s as u64))
                    .collect();
                let mut dps: Vec<Vec<DeviceProblem>> = sets
                    .iter()
                    .map(|(ps, ls)| {
                        ps.iter()
                            .zip(ls)
                            .map(|(p, l)| upload_on(&stream, p, *l))
                            .collect()
                    })
                    .collect();
                // All five plans made, then launched back to back on this thread's stream
                // while the other threads do the same.
                let groups: Vec<Vec<Problem<'_>>> = dps.iter_mut().map(|d| problems(d)).collect();
                let plans: Vec<GroupPlan<'_>> = groups
                    .iter()
                    .map(|g| gemm.plan(&stream, g).expect("plan"))
                    .collect();
                for plan in &plans {
                    gemm.launch(&stream, plan).expect("launch");
                }
                drop(plans);
                drop(groups);
                let mut failed = 0;
                for (s, ((ps, _), d)) in sets.iter().zip(&dps).enumerate() {
                    let got: Vec<Vec<f16>> = d.iter().map(|dp| download_on(&stream, dp)).collect();
                    let summary = check_group(
                        &format!("thread {t} set {s}"),
                        ps,
                        &got,
                        Tolerance::FullRange,
                    );
                    failed += usize::from(!summary.passed());
                }
                failed
            })
        })
        .collect();
    let failed: usize = handles
        .into_iter()
        .map(|h| h.join().expect("thread panicked"))
        .sum();
    assert_eq!(failed, 0, "{failed} problem sets wrong");
    println!("{THREADS} threads x {SETS} sets on their own streams: all match the reference");
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn errors_leave_the_gemm_usable() {
    let gpu = Gpu::new();
    let ps = group(
        21_000,
        &gpu_mode_tests()[4],
        Distribution::FullRange,
        Blocked,
        Plain,
    );
    let mut dps = gpu.upload_all(&ps, Layout::default());
    gpu.run(&mut dps).expect("first run");
    let first: Vec<Vec<u16>> = dps.iter().map(|dp| gpu.download_bits(dp)).collect();
    let mut errors = Vec::new();

    // Validation errors: nothing launched, the GroupedGemm untouched.
    {
        let mut group = problems(&mut dps);
        group[1].k = 40;
        let err = gpu.gemm.run(&gpu.stream, &group).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidDimension {
                    problem: 1,
                    field: "k",
                    ..
                }
            ),
            "{err}"
        );
        errors.push(err);
        group[1].k = ps[1].k;
        group[0].alpha = f32::NAN;
        let err = gpu.gemm.plan(&gpu.stream, &group).unwrap_err();
        assert!(
            matches!(err, Error::InvalidAlpha { problem: 0, .. }),
            "{err}"
        );
        errors.push(err);
    }
    {
        // Problem 0 writing into problem 1's A.
        let a1 = DeviceInput::from(&dps[1].a).addr();
        let c_bytes = 2 * ps[0].m * ps[0].n;
        let mut group = problems(&mut dps);
        // SAFETY: never launched: validation rejects the overlap before anything runs.
        group[0].c = unsafe { DeviceOutput::from_raw(a1, c_bytes) };
        group[0].ldc = None;
        let err = gpu.gemm.run(&gpu.stream, &group).unwrap_err();
        assert!(matches!(err, Error::Overlap { .. }), "{err}");
        errors.push(err);
    }
    let mut short = ps[0].clone();
    short.sfa.truncate(short.sfa.len() - 1);
    let err = gpu.gemm.run_host(&gpu.stream, &[short]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferTooSmall {
                problem: 0,
                field: "sfa",
                ..
            }
        ),
        "{err}"
    );
    errors.push(err);

    // Another CUDA context on the same device: its buffers, streams and plans are refused.
    let other = CudaContext::new_non_primary(0, 0).expect("a second CUDA context");
    let other_stream = other.default_stream();
    let foreign_b = other_stream.clone_htod(&ps[0].b).unwrap();
    {
        let group = problems(&mut dps);
        let err = gpu.gemm.run(&other_stream, &group).unwrap_err();
        assert!(
            matches!(err, Error::ContextMismatch { what: "stream" }),
            "{err}"
        );
        errors.push(err);
    }
    {
        let mut group = problems(&mut dps);
        group[0].b = DeviceInput::from(&foreign_b);
        group[0].ldb = None;
        let err = gpu.gemm.run(&gpu.stream, &group).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongContext {
                    problem: 0,
                    field: "b"
                }
            ),
            "{err}"
        );
        errors.push(err);
    }
    {
        let other_gemm = GroupedGemm::new(other.clone()).expect("kernels in the second context");
        let mut odp = upload_on(&other_stream, &ps[0], Layout::default());
        let og = [odp.problem()];
        let plan = other_gemm
            .plan(&other_stream, &og)
            .expect("plan in the second context");
        let err = gpu.gemm.launch(&gpu.stream, &plan).unwrap_err();
        assert!(
            matches!(err, Error::ContextMismatch { what: "plan" }),
            "{err}"
        );
        errors.push(err);
        // The second context's own GroupedGemm works.
        other_gemm
            .launch(&other_stream, &plan)
            .expect("launch in the second context");
        other_stream.synchronize().unwrap();
        drop(plan);
        drop(og);
        let got = download_on(&other_stream, &odp);
        assert!(check("second context", &ps[0], &got, Tolerance::FullRange).passed);
    }
    for e in &errors {
        println!("refused: {e}");
    }

    // Nothing was launched by the refused calls, and the GroupedGemm still computes the
    // same bits.
    for (i, dp) in dps.iter().enumerate() {
        assert_eq!(gpu.download_bits(dp), first[i], "problem {i}: C changed");
    }
    gpu.run(&mut dps).expect("run after the errors");
    let again: Vec<Vec<u16>> = dps.iter().map(|dp| gpu.download_bits(dp)).collect();
    assert_eq!(first, again, "results changed after the refused calls");
    let got: Vec<Vec<f16>> = dps.iter().map(|dp| gpu.download(dp)).collect();
    assert!(check_group("after errors", &ps, &got, Tolerance::FullRange).passed());
}

/// FP4 bytes of one row of `k` elements, every element +6 (code 0x7) or -6 (0xF) by `neg(j)`.
fn sixes(k: usize, neg: impl Fn(usize) -> bool) -> Vec<u8> {
    (0..k / 2)
        .map(|j| {
            let code = |e: usize| if neg(e) { 0xFu8 } else { 0x7 };
            code(2 * j) | (code(2 * j + 1) << 4)
        })
        .collect()
}

/// Rows of +-6 with scales 448 on both operands, K = 7168: every product is +-2688^2 and an
/// output is `2688^2 * d` for an even `d` (agreeing minus disagreeing signs). With alpha = 1
/// any `d != 0` overflows fp16 (65504) and must be exactly +-inf, `d == 0` exactly 0; with
/// alpha = 2^-24 every output is finite (at most 7168 * 2688^2 * 2^-24 = 3087) and exact:
/// all partial sums are integer multiples of 2^14 * 441 below 2^24 of them, so fp32
/// accumulation (in any order) loses nothing, and the fp32 accumulator (at most 5.2e10) is
/// far from overflowing.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn fp16_overflow_at_the_edge_of_the_range() {
    let gpu = Gpu::new();
    let (m, n, k) = (72usize, 136usize, 7168usize);
    let mut rng = Rng::new(22_000);
    let mut rows = |count: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(count * k / 2);
        for r in 0..count {
            let row = match r {
                0 => sixes(k, |_| false),
                1 => sixes(k, |_| true),
                2 => sixes(k, |j| j % 2 == 1),
                3 => sixes(k, |j| j >= k / 2),
                4 => sixes(k, |j| j == 5),
                _ => {
                    let bits: Vec<u64> = (0..k / 64).map(|_| rng.next_u64()).collect();
                    sixes(k, |j| (bits[j / 64] >> (j % 64)) & 1 == 1)
                }
            };
            out.extend(row);
        }
        out
    };
    let (a, b) = (rows(m), rows(n));
    const E4M3_448: u8 = 0x7E;
    for (sfa_layout, sfb_layout) in [(Plain, Blocked), (Blocked, Plain)] {
        let scales = |layout, count: usize| {
            pack_scales(layout, count, k, &vec![E4M3_448; count * k / 16], || {
                E4M3_448
            })
        };
        for alpha in [1.0f32, 1.0 / 16_777_216.0, -1.0 / 16_777_216.0] {
            let p = HostProblem {
                m,
                n,
                k,
                a: a.clone(),
                sfa: scales(sfa_layout, m),
                sfa_layout,
                b: b.clone(),
                sfb: scales(sfb_layout, n),
                sfb_layout,
                alpha,
            };
            let mut dps = gpu.upload_all(std::slice::from_ref(&p), Layout::default());
            gpu.run(&mut dps).expect("run");
            let got = gpu.download(&dps[0]);
            let want = round_f16(&gemm(&p));
            let (mut inf, mut finite, mut mismatched) = (0, 0, 0);
            for (g, w) in got.iter().zip(&want) {
                if w.is_infinite() {
                    inf += 1;
                } else {
                    finite += 1;
                }
                // Numerically (+0 and -0 alike): the sign of an exact zero times a negative
                // alpha depends on how the epilogue multiplies.
                if g != w {
                    mismatched += 1;
                }
            }
            let label = format!("+-6 x 448, K={k}, alpha={alpha:e}, {sfa_layout:?}/{sfb_layout:?}");
            println!(
                "{label}: {inf} outputs +-inf, {finite} finite, {mismatched} differ from the reference"
            );
            let cmp = check(&label, &p, &got, Tolerance::FullRange);
            assert!(cmp.passed, "{label}");
            assert_eq!(
                mismatched, 0,
                "{label}: outputs differ from round_f16(reference)"
            );
            if alpha == 1.0 {
                assert!(
                    inf > 0 && finite > 0,
                    "{label}: want both +-inf and finite outputs"
                );
            } else {
                assert_eq!(inf, 0, "{label}: every output is finite");
                // Row 0 of A against row 0 of B: all 7168 signs agree.
                // 3087 rounds to 3088 in fp16.
                assert_eq!(got[0].to_f32(), 3088.0 * alpha.signum(), "{label}");
            }
        }
    }
}
