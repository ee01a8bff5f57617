//! W4A16: NVFP4 weights with fp16 or bf16 activations ([`nvfp4::GemmTypes`]), fp16 or bf16
//! outputs, on both kernel paths, against an f64 reference written from the contract (the
//! dequantized weights times the 16-bit activation values).
//!
//! CPU tests (run everywhere): the bf16 FP4 bit trick for every code, and validation of
//! 16-bit activations. GPU tests are `#[ignore]`d without a device; on a GPU machine:
//! `cargo test -p nvfp4-tests --release --test w4a16 -- --ignored --nocapture`
//! (`NVFP4_PATH=portable|hopper` picks the path).

use kernels_gpu::fp4::{bf16_bits_to_f32, e2m1_to_f32, e2m1x8_to_bf16x2_scaled};
use kernels_gpu::layout::scale_len;
use nvfp4::cudarc::driver::{CudaSlice, CudaStream};
use nvfp4::r#gen::{Distribution, Rng, problem};
use nvfp4::reference::dequantize;
use nvfp4::shapes::{gpu_mode_benchmarks, gpu_mode_tests};
use nvfp4::validate::{ProblemSpec, Span, check_specs_typed};
use nvfp4::{
    Activation, DeviceInput, DeviceOutput, Error, GemmTypes, HostProblem, KernelPath, OutputType,
    Problem, ScaleLayout, SplitK, bf16, f16,
};
use nvfp4_tests::{Gpu, POISON, assert_err, launch_poisoned};
use std::sync::Arc;

use ScaleLayout::{Blocked, Plain};

// ----- CPU: the bf16 dequantization trick -----

#[test]
fn e2m1_to_bf16_trick_is_exact_for_every_code() {
    for lo in 0..16u32 {
        for hi in 0..16u32 {
            // Code `lo` at position i, code `hi` at position i + 4, for each i.
            for i in 0..4 {
                let x = (lo << (4 * i)) | (hi << (4 * (i + 4)));
                let w = e2m1x8_to_bf16x2_scaled(x)[i];
                let two126 = 2f32.powi(126);
                let got_lo = bf16_bits_to_f32(w as u16) * two126;
                let got_hi = bf16_bits_to_f32((w >> 16) as u16) * two126;
                assert_eq!(
                    got_lo.to_bits(),
                    e2m1_to_f32(lo as u8).to_bits(),
                    "code {lo} at {i}"
                );
                assert_eq!(
                    got_hi.to_bits(),
                    e2m1_to_f32(hi as u8).to_bits(),
                    "code {hi} at {i}+4"
                );
            }
        }
    }
}

// ----- CPU: validation of 16-bit activations -----

fn spec16(m: usize, n: usize, k: usize) -> ProblemSpec {
    let at = |slot: u64| (slot + 1) << 40;
    ProblemSpec {
        m,
        n,
        k,
        a: Span::new(at(0), m * k * 2),
        lda: None,
        sfa: Span::default(),
        sfa_layout: Plain,
        b: Span::new(at(1), n * k / 2),
        ldb: None,
        sfb: Span::new(at(2), scale_len(Plain, n as u64, k as u32) as usize),
        sfb_layout: Plain,
        c: Span::new(at(3), m * n * 2),
        ldc: None,
        alpha: 1.0,
    }
}

#[test]
fn a16_validation() {
    for act in [Activation::F16, Activation::Bf16] {
        check_specs_typed(&[spec16(40, 128, 256)], act).unwrap();
        // The NVFP4 rules would reject this A (4x the bytes an FP4 A needs is fine; an FP4
        // A-sized buffer is too short for 16-bit rows).
        let mut s = spec16(40, 128, 256);
        s.a.len_bytes = 40 * 256 / 2;
        let err = check_specs_typed(&[s], act).unwrap_err();
        assert_err!(
            err,
            Error::BufferTooSmall { problem: 0, field: "a", needed, .. } if needed == 40 * 512
        );
        // lda: bytes, at least 2k, a multiple of 16.
        let mut s = spec16(40, 128, 256);
        s.lda = Some(512 + 8);
        s.a.len_bytes = 40 * 520;
        let err = check_specs_typed(&[s], act).unwrap_err();
        assert_err!(
            err,
            Error::InvalidStride {
                problem: 0,
                field: "lda",
                ..
            }
        );
        let mut s = spec16(40, 128, 256);
        s.lda = Some(256);
        let err = check_specs_typed(&[s], act).unwrap_err();
        assert_err!(
            err,
            Error::InvalidStride {
                problem: 0,
                field: "lda",
                ..
            }
        );
        let mut s = spec16(40, 128, 256);
        s.lda = Some(512 + 16);
        s.a.len_bytes = 39 * 528 + 512;
        check_specs_typed(&[s], act).unwrap();
        // 16-byte alignment of A.
        let mut s = spec16(40, 128, 256);
        s.a.addr += 8;
        let err = check_specs_typed(&[s], act).unwrap_err();
        assert_err!(
            err,
            Error::Misaligned {
                problem: 0,
                field: "a",
                align: 16,
                ..
            }
        );
        // sfa is not read: any span passes, even one overlapping C.
        let mut s = spec16(40, 128, 256);
        s.sfa = s.c;
        check_specs_typed(&[s], act).unwrap();
        // A overlapping C is caught with the 16-bit row length.
        let mut s = spec16(40, 128, 256);
        s.c.addr = s.a.addr + 40 * 512 - 2;
        let err = check_specs_typed(&[s], act).unwrap_err();
        assert_err!(
            err,
            Error::Overlap {
                other_field: "a",
                ..
            }
        );
    }
}

// ----- GPU -----

/// One problem's 16-bit activations: the values (exact in the type) and their bits.
struct Acts {
    values: Vec<f32>,
    bits: Vec<u16>,
}

/// `m x k` activations of `kind`: mostly magnitudes 2^-6 .. 2^2 with random signs and full
/// mantissas, some tiny (fp16 subnormals / small bf16) and some exact zeros.
fn acts(rng: &mut Rng, m: usize, k: usize, kind: Activation) -> Acts {
    let mut values = Vec::with_capacity(m * k);
    let mut bits = Vec::with_capacity(m * k);
    for _ in 0..m * k {
        let r = rng.next_u64();
        let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
        let frac = 1.0 + ((r >> 8) & 0xFFFF) as f32 / 65536.0;
        let x = match (r >> 4) % 32 {
            0 => 0.0,
            1 => sign * frac * 2f32.powi(-20),
            e => sign * frac * 2f32.powi((e as i32 % 9) - 6),
        };
        let (v, b) = match kind {
            Activation::Bf16 => {
                let h = bf16::from_f32(x);
                (h.to_f32(), h.to_bits())
            }
            _ => {
                let h = f16::from_f32(x);
                (h.to_f32(), h.to_bits())
            }
        };
        values.push(v);
        bits.push(b);
    }
    Acts { values, bits }
}

/// `alpha * acts x dequant(B)^T` in f64, and the sum of magnitudes of each output's terms.
fn reference(p: &HostProblem, a: &Acts) -> (Vec<f64>, Vec<f64>) {
    let (m, n, k) = (p.m, p.n, p.k);
    let b = dequantize(n, k, &p.b, &p.sfb, p.sfb_layout);
    let alpha = f64::from(p.alpha);
    let mut c = vec![0.0; m * n];
    let mut s = vec![0.0; m * n];
    if m == 0 || n == 0 {
        return (c, s);
    }
    // Rows of C in parallel (the benchmark shapes are ~10^10 multiply-adds).
    let threads = std::thread::available_parallelism().map_or(4, |t| t.get());
    let rows_per = m.div_ceil(threads);
    std::thread::scope(|scope| {
        for (chunk, (c, s)) in c
            .chunks_mut(rows_per * n)
            .zip(s.chunks_mut(rows_per * n))
            .enumerate()
        {
            let (a, b) = (&a.values, &b);
            scope.spawn(move || {
                for (ii, (c_row, s_row)) in c.chunks_mut(n).zip(s.chunks_mut(n)).enumerate() {
                    let i = chunk * rows_per + ii;
                    let ar = &a[i * k..(i + 1) * k];
                    for j in 0..n {
                        let br = &b[j * k..(j + 1) * k];
                        let (mut acc, mut abs) = (0.0f64, 0.0f64);
                        for (&x, &y) in ar.iter().zip(br) {
                            let t = f64::from(x) * f64::from(y);
                            acc += t;
                            abs += t.abs();
                        }
                        c_row[j] = alpha * acc;
                        s_row[j] = alpha.abs() * abs;
                    }
                }
            });
        }
    });
    (c, s)
}

/// The derived bound (as `Tolerance::FullRange`, with the output type's ulp): products are
/// exact (16-bit times 16-bit), fp32 summation errs by at most `gamma_K * S` (x2 for
/// truncating hardware), alpha costs `2^-24 |want|`, the final rounding one ulp of `|want|`.
fn bound(want: f64, abs_sum: f64, k: usize, out: OutputType) -> f64 {
    let u = 2f64.powi(-24);
    let kf = k as f64;
    let gamma = kf * u / (1.0 - kf * u);
    let x = want.abs();
    let ulp = match out {
        OutputType::F16 => {
            let e = if x > 0.0 {
                x.log2().floor() as i32
            } else {
                -14
            };
            2f64.powi(e.max(-14) - 10)
        }
        OutputType::Bf16 => {
            let e = if x > 0.0 {
                x.log2().floor() as i32
            } else {
                -126
            };
            2f64.powi(e.max(-126) - 7)
        }
    };
    2.0 * gamma * abs_sum + u * x + ulp
}

fn decode(bits: u16, out: OutputType) -> f64 {
    match out {
        OutputType::F16 => f64::from(f16::from_bits(bits).to_f32()),
        OutputType::Bf16 => f64::from(bf16::from_bits(bits).to_f32()),
    }
}

/// One problem on the device: the 16-bit A, B, a poisoned C (`ldc` with padding).
struct Dev {
    a: CudaSlice<u16>,
    lda: usize,
    b: CudaSlice<u8>,
    sfb: CudaSlice<u8>,
    c: CudaSlice<u16>,
    ldc: usize,
}

fn upload(
    stream: &Arc<CudaStream>,
    p: &HostProblem,
    a: &Acts,
    lda_pad: usize,
    ldc_pad: usize,
) -> Dev {
    let lda = p.k + lda_pad; // elements
    let mut padded = Vec::with_capacity(p.m * lda);
    for r in 0..p.m {
        padded.extend_from_slice(&a.bits[r * p.k..(r + 1) * p.k]);
        padded.resize(padded.len() + lda_pad, 0x7C00); // +inf: reading padding would show
    }
    let nonempty16 = |v: Vec<u16>| if v.is_empty() { vec![0] } else { v };
    let nonempty8 = |v: &[u8]| if v.is_empty() { vec![0] } else { v.to_vec() };
    let ldc = p.n + ldc_pad;
    Dev {
        a: stream.clone_htod(&nonempty16(padded)).unwrap(),
        lda,
        b: stream.clone_htod(&nonempty8(&p.b)).unwrap(),
        sfb: stream.clone_htod(&nonempty8(&p.sfb)).unwrap(),
        c: stream
            .clone_htod(&vec![POISON; (p.m * ldc).max(1)])
            .unwrap(),
        ldc,
    }
}

fn device_problem<'a>(stream: &Arc<CudaStream>, p: &HostProblem, d: &'a mut Dev) -> Problem<'a> {
    use nvfp4::cudarc::driver::DevicePtr;
    let (a_addr, _) = d.a.device_ptr(stream);
    let (c_addr, _) = d.c.device_ptr(stream);
    Problem {
        m: p.m,
        n: p.n,
        k: p.k,
        // SAFETY: the buffers live in `d` for 'a, and the tests synchronise before reading
        // them back or dropping them.
        a: unsafe { DeviceInput::from_raw(a_addr, d.a.len() * 2) },
        lda: Some(d.lda * 2),
        sfa: DeviceInput::empty(),
        sfa_layout: Plain,
        b: DeviceInput::from(&d.b),
        ldb: None,
        sfb: DeviceInput::from(&d.sfb),
        sfb_layout: p.sfb_layout,
        // SAFETY: as above.
        c: unsafe { DeviceOutput::from_raw(c_addr, d.c.len() * 2) },
        ldc: Some(d.ldc),
        alpha: p.alpha,
    }
}

/// Runs `ps` (weights and shapes) with fresh activations of `act`, output `out`, padding
/// as given; checks every element against the bound, the padding untouched, a second run
/// bit-identical, and one plan launched twice more bit-identical too. Returns the worst
/// relative Frobenius error.
fn run_and_check(
    gpu: &Gpu,
    label: &str,
    ps: &[HostProblem],
    seed: u64,
    act: Activation,
    out: OutputType,
    pads: (usize, usize),
) -> f64 {
    let stream = &gpu.stream;
    let mut rng = Rng::new(seed);
    let a: Vec<Acts> = ps.iter().map(|p| acts(&mut rng, p.m, p.k, act)).collect();
    let mut devs: Vec<Dev> = ps
        .iter()
        .zip(&a)
        .map(|(p, a)| upload(stream, p, a, pads.0, pads.1))
        .collect();
    let types = GemmTypes {
        activation: act,
        output: out,
    };
    let mut results = Vec::new();
    for _ in 0..2 {
        for d in devs.iter_mut() {
            let len = d.c.len();
            stream.memcpy_htod(&vec![POISON; len], &mut d.c).unwrap();
        }
        {
            let problems: Vec<Problem<'_>> = ps
                .iter()
                .zip(devs.iter_mut())
                .map(|(p, d)| device_problem(stream, p, d))
                .collect();
            gpu.gemm
                .run_typed(stream, &problems, types)
                .expect("run_typed");
        }
        let got: Vec<Vec<u16>> = devs
            .iter()
            .map(|d| stream.clone_dtoh(&d.c).unwrap())
            .collect();
        stream.synchronize().unwrap();
        results.push(got);
    }
    assert_eq!(results[0], results[1], "{label}: two runs differ bitwise");
    // One plan launched twice more: a launch that left state behind in the plan's workspace
    // (the dynamic units' counter) would differ from the fresh plans' results.
    {
        let problems: Vec<Problem<'_>> = ps
            .iter()
            .zip(devs.iter_mut())
            .map(|(p, d)| device_problem(stream, p, d))
            .collect();
        let outs: Vec<(u64, usize)> = problems
            .iter()
            .map(|p| (p.c.addr(), p.c.len_bytes() / 2))
            .collect();
        let plan = gpu.gemm.plan_typed(stream, &problems, types).expect("plan");
        for launch in 1..=2 {
            let got = launch_poisoned(gpu, &plan, &outs);
            for (i, c) in got.iter().enumerate() {
                assert!(
                    *c == results[0][i],
                    "{label}/p{i}: launch {launch} of one plan differs bitwise from a fresh plan's"
                );
            }
        }
    }
    let mut worst_frob: f64 = 0.0;
    for (i, (p, a)) in ps.iter().zip(&a).enumerate() {
        let (want, abs) = reference(p, a);
        let got = &results[0][i];
        let ldc = devs[i].ldc;
        let (mut bad, mut err2, mut ref2) = (0usize, 0.0f64, 0.0f64);
        let mut first_bad = None;
        for r in 0..p.m {
            for j in 0..p.n {
                let bits = got[r * ldc + j];
                let g = decode(bits, out);
                let w = want[r * p.n + j];
                let ok = bits != POISON && (g - w).abs() <= bound(w, abs[r * p.n + j], p.k, out);
                if !ok {
                    bad += 1;
                    first_bad.get_or_insert((r, j, g, w));
                }
                err2 += (g - w) * (g - w);
                ref2 += w * w;
            }
            for j in p.n..ldc {
                assert_eq!(got[r * ldc + j], POISON, "{label}: padding of C written");
            }
        }
        let frob = if ref2 > 0.0 {
            (err2 / ref2).sqrt()
        } else {
            0.0
        };
        worst_frob = worst_frob.max(frob);
        println!(
            "{label}/p{i}: m={} n={} k={} {act:?}->{out:?}: rel_frob={frob:.3e} bad={bad}",
            p.m, p.n, p.k
        );
        assert_eq!(
            bad, 0,
            "{label}/p{i}: {bad} bad elements, first {first_bad:?}"
        );
    }
    worst_frob
}

fn weights(seed: u64, shapes: &[(usize, usize, usize)], layout: ScaleLayout) -> Vec<HostProblem> {
    let mut rng = Rng::new(seed);
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(m, n, k))| {
            let mut p = problem(&mut rng, m, n, k, Distribution::FullRange, Plain, layout);
            p.alpha = [1.0, 0.5, 2.0][i % 3];
            p
        })
        .collect()
}

const PAIRS: [(Activation, OutputType); 4] = [
    (Activation::F16, OutputType::F16),
    (Activation::F16, OutputType::Bf16),
    (Activation::Bf16, OutputType::F16),
    (Activation::Bf16, OutputType::Bf16),
];

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn ragged_shapes_all_types() {
    let gpu = Gpu::new();
    let shapes = [
        (0, 128, 64),
        (1, 127, 48),
        (7, 129, 272),
        (40, 200, 1040),
        (76, 300, 256),
        (129, 64, 16),
        (40, 0, 64),
    ];
    for (i, (act, out)) in PAIRS.into_iter().enumerate() {
        for (j, layout) in [Plain, Blocked].into_iter().enumerate() {
            let ps = weights(100 + 10 * i as u64 + j as u64, &shapes, layout);
            let pads = if j == 0 { (0, 0) } else { (8, 3) };
            run_and_check(
                &gpu,
                &format!("ragged/{layout:?}"),
                &ps,
                7 + i as u64,
                act,
                out,
                pads,
            );
        }
    }
}

/// On the Hopper path a 16-bit plan reads its weights by TMA (the `_wt` kernel) exactly when
/// every problem's weight rows are 16-byte aligned and the switch is on; both kernels are
/// checked against the reference on ragged M and N with aligned K (the suites' ragged shapes
/// have K = 16 or 48 in each group, which keeps them on the `cp.async` kernel).
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn weights_by_tma_choice_and_both_kernels() {
    let mut gpu = Gpu::new();
    let hopper = gpu.gemm.path() == KernelPath::Hopper;
    let types = GemmTypes {
        activation: Activation::F16,
        output: OutputType::F16,
    };
    // The choice: K = 64 (32-byte rows) takes it, K = 48 (24-byte rows) does not.
    for (k, aligned) in [(64, true), (48, false)] {
        for on in [true, false] {
            gpu.gemm.set_weights_by_tma(on);
            let ps = weights(900 + k as u64, &[(40, 96, k)], Plain);
            let mut rng = Rng::new(901);
            let a = acts(&mut rng, 40, k, Activation::F16);
            let mut d = upload(&gpu.stream, &ps[0], &a, 0, 0);
            let problems = [device_problem(&gpu.stream, &ps[0], &mut d)];
            let plan = gpu.gemm.plan_typed(&gpu.stream, &problems, types).unwrap();
            assert_eq!(
                plan.weights_by_tma(),
                hopper && aligned && on,
                "k = {k}, switch {on}, {:?} path",
                gpu.gemm.path()
            );
        }
    }
    if !hopper {
        println!("SKIPPED the kernel comparison: the portable path has one kernel per type");
        return;
    }
    let shapes = [
        (0, 128, 64),
        (1, 127, 64),
        (7, 129, 320),
        (40, 200, 1024),
        (76, 300, 256),
        (129, 64, 32),
    ];
    for on in [true, false] {
        gpu.gemm.set_weights_by_tma(on);
        for (i, (act, out)) in PAIRS.into_iter().enumerate() {
            let ps = weights(950 + i as u64, &shapes, Plain);
            run_and_check(
                &gpu,
                &format!("weights by TMA {on}"),
                &ps,
                960 + i as u64,
                act,
                out,
                (0, 0),
            );
        }
    }
}

/// Dynamic units on the W4A16 `_wt` kernels: on the Hopper path a group of more whole tiles
/// than CTA slots takes its tiles past the first wave from a counter by default, and not with
/// the switch off; every type pair matches the reference either way (`run_and_check`: two
/// fresh plans and one plan launched twice, all bitwise equal, so the counter's reset is
/// covered on `_f16a_wt` and `_bf16a_wt`). Ragged M (0, 1, 7, 40, 76, ...), one N not a multiple of 128,
/// K = 256 (too few chunks for `SplitK::Auto` to cut).
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn dynamic_units_all_types() {
    let mut gpu = Gpu::new();
    let hopper = gpu.gemm.path() == KernelPath::Hopper;
    // The `_wt` kernels with their defaults, whatever the suite's switches say.
    gpu.gemm.set_split_k(SplitK::Auto);
    gpu.gemm.set_weights_by_tma(true);
    let shapes: Vec<(usize, usize, usize)> = [40, 200, 76, 128, 7, 1, 0, 300]
        .into_iter()
        .zip([4096, 4000, 4096, 4096, 4096, 4096, 4096, 4096])
        .map(|(m, n)| (m, n, 256))
        .collect();
    let ps = weights(980, &shapes, Plain);
    let types = GemmTypes {
        activation: Activation::F16,
        output: OutputType::F16,
    };
    let slots = gpu.gemm.sm_count() * gpu.gemm.ctas_per_sm_for(Activation::F16);
    for on in [true, false] {
        gpu.gemm.set_dynamic_units(on);
        {
            let mut rng = Rng::new(981);
            let mut devs: Vec<Dev> = ps
                .iter()
                .map(|p| {
                    let a = acts(&mut rng, p.m, p.k, Activation::F16);
                    upload(&gpu.stream, p, &a, 0, 0)
                })
                .collect();
            let problems: Vec<Problem<'_>> = ps
                .iter()
                .zip(devs.iter_mut())
                .map(|(p, d)| device_problem(&gpu.stream, p, d))
                .collect();
            let plan = gpu.gemm.plan_typed(&gpu.stream, &problems, types).unwrap();
            // 320 tiles on the Hopper path: more than two CTAs an SM up to 159 SMs.
            let many = plan.total_tiles() > slots;
            if hopper && gpu.gemm.sm_count() < 160 {
                assert!(many, "{} tiles, {slots} slots", plan.total_tiles());
            }
            assert_eq!(plan.split_k_schedule().1, 1, "not cut");
            assert_eq!(
                plan.dynamic_units(),
                hopper && on && many,
                "switch {on}, {:?} path",
                gpu.gemm.path()
            );
        }
        for (i, (act, out)) in PAIRS.into_iter().enumerate() {
            run_and_check(
                &gpu,
                &format!("dynamic units {on}"),
                &ps,
                990 + i as u64,
                act,
                out,
                (0, 0),
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_mode_test_shapes() {
    let gpu = Gpu::new();
    for (i, shape) in gpu_mode_tests().iter().enumerate() {
        let (act, out) = PAIRS[i % 4];
        let ps = weights(200 + i as u64, &shape.problems, Blocked);
        run_and_check(&gpu, &shape.name, &ps, 300 + i as u64, act, out, (0, 0));
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_mode_benchmark_shapes() {
    let gpu = Gpu::new();
    for (i, shape) in gpu_mode_benchmarks().iter().enumerate() {
        let act = [Activation::F16, Activation::Bf16][i % 2];
        let ps = weights(400 + i as u64, &shape.problems, Plain);
        let frob = run_and_check(
            &gpu,
            &shape.name,
            &ps,
            500 + i as u64,
            act,
            OutputType::F16,
            (0, 0),
        );
        println!("{}: worst relative Frobenius {frob:.3e}", shape.name);
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn bf16_output_needs_16_bit_activations() {
    let gpu = Gpu::new();
    let ps = weights(600, &[(8, 64, 64)], Plain);
    let mut rng = Rng::new(601);
    let a = acts(&mut rng, 8, 64, Activation::F16);
    let mut d = upload(&gpu.stream, &ps[0], &a, 0, 0);
    let problems = [device_problem(&gpu.stream, &ps[0], &mut d)];
    let types = GemmTypes {
        activation: Activation::Nvfp4,
        output: OutputType::Bf16,
    };
    let err = gpu
        .gemm
        .plan_typed(&gpu.stream, &problems, types)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidGroup {
                field: "output",
                ..
            }
        ),
        "{err}"
    );
}

/// Checks rows `row0 .. row0 + p.m` of the downloaded output `got` (row stride `ldc`) against
/// the reference of `p` with activations `a` (`p.m` rows); returns the bad elements.
fn bad_rows(
    got: &[u16],
    ldc: usize,
    row0: usize,
    p: &HostProblem,
    a: &Acts,
    out: OutputType,
) -> usize {
    let (want, abs) = reference(p, a);
    let mut bad = 0;
    for r in 0..p.m {
        for j in 0..p.n {
            let bits = got[(row0 + r) * ldc + j];
            let w = want[r * p.n + j];
            if bits == POISON
                || (decode(bits, out) - w).abs() > bound(w, abs[r * p.n + j], p.k, out)
            {
                bad += 1;
            }
        }
    }
    bad
}

/// Rows `rows` of `all`'s activations as their own [`Acts`].
fn acts_rows(all: &Acts, k: usize, rows: std::ops::Range<usize>) -> Acts {
    Acts {
        values: all.values[rows.start * k..rows.end * k].to_vec(),
        bits: all.bits[rows.start * k..rows.end * k].to_vec(),
    }
}

/// The contiguous MoE layout with 16-bit activations
/// ([`nvfp4::GroupedGemm::plan_contiguous_typed`]): five experts of M = 0, 1, 7, 40, 76 in a 130-row buffer (the last 6 rows unowned), N = 136
/// (not a multiple of the tile), both weight-scale layouts, every activation/output pair,
/// host sizes and device counts. Owned rows match the reference, unowned rows and the
/// padding of `ldc` stay poisoned.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn contiguous_moe_all_types() {
    use nvfp4::cudarc::driver::DevicePtr;
    use nvfp4::moe::{ContiguousGroup, DeviceCounts, ExpertWeights, GroupSizes};
    let gpu = Gpu::new();
    let stream = &gpu.stream;
    let sizes = [0usize, 1, 7, 40, 76];
    let (rows, n, k, ldc) = (130usize, 136usize, 320usize, 144usize);
    for (t, (act, out)) in PAIRS.into_iter().enumerate() {
        let layout = [Plain, Blocked][t % 2];
        let shapes: Vec<_> = sizes.iter().map(|&m| (m, n, k)).collect();
        let ps = weights(700 + t as u64, &shapes, layout);
        let all = acts(&mut Rng::new(710 + t as u64), rows, k, act);
        let a = stream.clone_htod(&all.bits).unwrap();
        let bs: Vec<CudaSlice<u8>> = ps
            .iter()
            .map(|p| stream.clone_htod(&p.b).unwrap())
            .collect();
        let sfbs: Vec<CudaSlice<u8>> = ps
            .iter()
            .map(|p| stream.clone_htod(&p.sfb).unwrap())
            .collect();
        let counts = stream.clone_htod(&sizes.map(|m| m as u32)).unwrap();
        for device in [false, true] {
            let label = format!("contiguous {act:?}->{out:?} {layout:?} device={device}");
            let c = stream.clone_htod(&vec![POISON; rows * ldc]).unwrap();
            {
                let (a_addr, _) = a.device_ptr(stream);
                let (c_addr, _) = c.device_ptr(stream);
                let group = ContiguousGroup {
                    rows,
                    n,
                    k,
                    // SAFETY: `a` and `c` outlive the launch; the stream is synchronised below.
                    a: unsafe { DeviceInput::from_raw(a_addr, rows * k * 2) },
                    lda: None,
                    sfa: DeviceInput::empty(),
                    sfa_layout: Plain,
                    // SAFETY: as above.
                    c: unsafe { DeviceOutput::from_raw(c_addr, rows * ldc * 2) },
                    ldc: Some(ldc),
                    experts: ps
                        .iter()
                        .zip(bs.iter().zip(&sfbs))
                        .map(|(p, (b, sfb))| ExpertWeights {
                            b: DeviceInput::from(b),
                            ldb: None,
                            sfb: DeviceInput::from(sfb),
                            sfb_layout: p.sfb_layout,
                            alpha: p.alpha,
                        })
                        .collect(),
                    sizes: if device {
                        GroupSizes::Device(DeviceCounts::from_slice(&counts))
                    } else {
                        GroupSizes::Host(sizes.to_vec())
                    },
                };
                let types = GemmTypes {
                    activation: act,
                    output: out,
                };
                let plan = gpu
                    .gemm
                    .plan_contiguous_typed(stream, &group, types)
                    .expect("plan_contiguous_typed");
                gpu.gemm.launch(stream, &plan).expect("launch");
                stream.synchronize().unwrap();
            }
            let got = stream.clone_dtoh(&c).unwrap();
            let mut row0 = 0;
            for (g, p) in ps.iter().enumerate() {
                let a_g = acts_rows(&all, k, row0..row0 + p.m);
                let bad = bad_rows(&got, ldc, row0, p, &a_g, out);
                assert_eq!(
                    bad, 0,
                    "{label}: expert {g} (M = {}): {bad} bad elements",
                    p.m
                );
                row0 += p.m;
            }
            for r in 0..rows {
                let first = if r < row0 { n } else { 0 };
                for j in first..ldc {
                    assert_eq!(got[r * ldc + j], POISON, "{label}: row {r} col {j} written");
                }
            }
            println!("{label}: {} experts, {row0} of {rows} rows: ok", ps.len());
        }
    }
}

/// Per-group buffers with device counts and 16-bit activations
/// ([`nvfp4::GroupedGemm::plan_device_counts_typed`]): capacity 64 rows each, counts 0, 1, 7,
/// 40 and 1000 (clamped to 64); rows past the count stay poisoned.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn per_group_device_counts_all_types() {
    use nvfp4::moe::DeviceCounts;
    let gpu = Gpu::new();
    let stream = &gpu.stream;
    let counts_host = [0u32, 1, 7, 40, 1000];
    let cap = 64usize;
    for (t, (act, out)) in PAIRS.into_iter().enumerate() {
        let shapes: Vec<_> = (0..counts_host.len())
            .map(|i| (cap, 72 + 40 * i, 160))
            .collect();
        let ps = weights(800 + t as u64, &shapes, [Blocked, Plain][t % 2]);
        let mut rng = Rng::new(810 + t as u64);
        let a: Vec<Acts> = ps.iter().map(|p| acts(&mut rng, p.m, p.k, act)).collect();
        let mut devs: Vec<Dev> = ps
            .iter()
            .zip(&a)
            .map(|(p, a)| upload(stream, p, a, 8, 3))
            .collect();
        let counts = stream.clone_htod(&counts_host).unwrap();
        let dc = DeviceCounts::from_slice(&counts);
        {
            let problems: Vec<Problem<'_>> = ps
                .iter()
                .zip(devs.iter_mut())
                .map(|(p, d)| device_problem(stream, p, d))
                .collect();
            let types = GemmTypes {
                activation: act,
                output: out,
            };
            let plan = gpu
                .gemm
                .plan_device_counts_typed(stream, &problems, &dc, types)
                .expect("plan_device_counts_typed");
            gpu.gemm.launch(stream, &plan).expect("launch");
            stream.synchronize().unwrap();
        }
        for (i, ((p, a), d)) in ps.iter().zip(&a).zip(&devs).enumerate() {
            let got = stream.clone_dtoh(&d.c).unwrap();
            let m = (counts_host[i] as usize).min(cap);
            let p_m = HostProblem { m, ..p.clone() };
            let bad = bad_rows(&got, d.ldc, 0, &p_m, &acts_rows(a, p.k, 0..m), out);
            assert_eq!(
                bad, 0,
                "{act:?}->{out:?} problem {i} (count {}): {bad} bad",
                counts_host[i]
            );
            for r in 0..cap {
                let first = if r < m { p.n } else { 0 };
                for j in first..d.ldc {
                    assert_eq!(
                        got[r * d.ldc + j],
                        POISON,
                        "problem {i}: row {r} col {j} written"
                    );
                }
            }
        }
        println!("per-group device counts {act:?}->{out:?}: ok");
    }
}

/// Fake, disjoint device addresses for problems that are planned but never launched.
const FAKE_A: u64 = 0x1000_0000_0000;
const FAKE_B: u64 = 0x2000_0000_0000;
const FAKE_SFB: u64 = 0x3000_0000_0000;
const FAKE_C: u64 = 0x4000_0000_0000;

/// A problem of `m` rows of fp16 activations at fake addresses (never launched); `slot`
/// (below 16) picks disjoint ones, 1 TiB apart.
fn fake_problem(slot: u64, m: usize) -> Problem<'static> {
    let (n, k) = (8, 16);
    let at = |base: u64| base + (slot << 40);
    // SAFETY: never launched: planning only validates and packs the addresses.
    unsafe {
        Problem {
            m,
            n,
            k,
            a: DeviceInput::from_raw(at(FAKE_A), m * k * 2),
            lda: None,
            sfa: DeviceInput::empty(),
            sfa_layout: Plain,
            b: DeviceInput::from_raw(at(FAKE_B), n * k / 2),
            ldb: None,
            sfb: DeviceInput::from_raw(at(FAKE_SFB), n * k / 16),
            sfb_layout: Plain,
            c: DeviceOutput::from_raw(at(FAKE_C), m * n * 2),
            ldc: None,
            alpha: 1.0,
        }
    }
}

/// The Hopper W4A16 kernels address token rows with signed 32-bit TMA coordinates: a
/// problem whose rows reach past row 2^31 - 1 is refused when planned, naming the problem and
/// `m`; one row less plans. The portable path has no such limit and plans both.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn tma_row_limit_is_checked_when_planning() {
    let gpu = Gpu::new();
    let types = GemmTypes {
        activation: Activation::F16,
        output: OutputType::F16,
    };
    let limit = i32::MAX as usize;
    let ok = [fake_problem(0, 4), fake_problem(1, limit)];
    gpu.gemm
        .plan_typed(&gpu.stream, &ok, types)
        .expect("2^31 - 1 rows plan");
    let over = [fake_problem(0, 4), fake_problem(1, limit + 1)];
    let got = gpu.gemm.plan_typed(&gpu.stream, &over, types);
    match gpu.gemm.path() {
        KernelPath::Hopper => {
            let err = got.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidDimension {
                        problem: 1,
                        field: "m",
                        ..
                    }
                ),
                "{err}"
            );
            println!("refused as expected: {err}");
        }
        KernelPath::Portable => {
            got.expect("the portable path plans 2^31 rows");
        }
    }
}

/// A plan made by a [`nvfp4::GroupedGemm`] of one kernel path is refused by one of the
/// other path (its table is packed for the other kernel's tiles and token maps), before
/// anything is launched; launching it with its own path works.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn plans_launch_only_on_their_own_path() {
    let gpu = Gpu::new();
    if gpu.gemm.compute_capability() != (9, 0) {
        println!("SKIPPED: needs compute capability 9.0 (both kernel paths); nothing checked");
        return;
    }
    let hopper = nvfp4::GroupedGemm::with_path(gpu.ctx.clone(), KernelPath::Hopper).unwrap();
    let portable = nvfp4::GroupedGemm::with_path(gpu.ctx.clone(), KernelPath::Portable).unwrap();
    let ps = weights(700, &[(40, 96, 64)], Plain);
    let mut rng = Rng::new(701);
    let a = acts(&mut rng, 40, 64, Activation::F16);
    let mut d = upload(&gpu.stream, &ps[0], &a, 0, 0);
    let problems = [device_problem(&gpu.stream, &ps[0], &mut d)];
    let types = GemmTypes {
        activation: Activation::F16,
        output: OutputType::F16,
    };
    for (maker, launcher) in [(&hopper, &portable), (&portable, &hopper)] {
        let plan = maker.plan_typed(&gpu.stream, &problems, types).unwrap();
        let err = launcher.launch(&gpu.stream, &plan).unwrap_err();
        assert!(
            matches!(err, Error::InvalidGroup { field: "plan", .. }),
            "{err}"
        );
        maker.launch(&gpu.stream, &plan).unwrap();
    }
    gpu.stream.synchronize().unwrap();
}

/// The premise of [`tma_row_limit_is_checked_when_planning`], checked everywhere: validation
/// itself accepts the fake problems (2^31 rows fit the 32-bit fields), so on the GPU only
/// the Hopper path's TMA limit can refuse them.
#[test]
fn fake_problems_of_2_31_rows_validate() {
    let problems = [fake_problem(0, 4), fake_problem(1, i32::MAX as usize + 1)];
    let specs: Vec<ProblemSpec> = problems.iter().map(Problem::spec).collect();
    check_specs_typed(&specs, Activation::F16).unwrap();
}
