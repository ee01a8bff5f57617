//! The grouped GEMM on a GPU, checked against the f64 CPU reference.
//!
//! Every test needs a CUDA device and is `#[ignore]`d so that it is reported as ignored, not
//! passed, where there is none. On a GPU machine:
//! `cargo test -p nvfp4-tests --release --test gpu -- --ignored --nocapture`.
//! Each test prints one line per problem or group: shape, max error, relative Frobenius.

use nvfp4::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use nvfp4::r#gen::{Distribution, Rng, group, problem};
use nvfp4::reference::{Tolerance, gemm};
use nvfp4::shapes::{GroupShape, gpu_mode_benchmarks, gpu_mode_tests, ragged};
use nvfp4::{
    DeviceInput, DeviceOutput, Error, HostProblem, PairTiles, Problem, ScaleLayout, SplitK,
    TokenDequant, f16,
};
use nvfp4_tests::{
    DeviceProblem, Gpu, Layout, POISON, check, check_group, launch_poisoned, problems, upload_on,
};

use ScaleLayout::{Blocked, Plain};
use kernels_gpu::layout::scale_offset;

/// Runs `ps` through the device path with `layout`, returns each C (`m * n`).
fn run_group(gpu: &Gpu, ps: &[HostProblem], layout: Layout) -> Vec<Vec<f16>> {
    let mut dps = gpu.upload_all(ps, layout);
    gpu.run(&mut dps).expect("run");
    dps.iter().map(|dp| gpu.download(dp)).collect()
}

/// Downloads every C of `dps` and checks the group against `ps`'s reference (full-range
/// tolerance), failing with `label`; returns the outputs.
fn download_checked(
    gpu: &Gpu,
    ps: &[HostProblem],
    dps: &[DeviceProblem],
    label: &str,
) -> Vec<Vec<f16>> {
    let got: Vec<Vec<f16>> = dps.iter().map(|dp| gpu.download(dp)).collect();
    let s = check_group(label, ps, &got, Tolerance::FullRange);
    assert!(s.passed(), "{label}: {} bad elements", s.bad);
    got
}

/// Every GPU MODE test shape with the given scale layouts (per shape index), GpuMode data.
fn gpu_mode_tests_with(label: &str, layouts: impl Fn(usize) -> (ScaleLayout, ScaleLayout)) {
    let gpu = Gpu::new();
    for (i, shape) in gpu_mode_tests().iter().enumerate() {
        let (sfa, sfb) = layouts(i);
        let ps = group(1000 + i as u64, shape, Distribution::GpuMode, sfa, sfb);
        let got = run_group(&gpu, &ps, Layout::default());
        let s = check_group(
            &format!("{label}/{}", shape.name),
            &ps,
            &got,
            Tolerance::GpuMode,
        );
        assert!(s.passed(), "{label}/{}: {} bad elements", shape.name, s.bad);
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_mode_tests_plain_scales() {
    gpu_mode_tests_with("plain", |_| (Plain, Plain));
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_mode_tests_blocked_scales() {
    gpu_mode_tests_with("blocked", |_| (Blocked, Blocked));
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_mode_tests_mixed_scales() {
    gpu_mode_tests_with("mixed", |i| {
        if i % 2 == 0 {
            (Plain, Blocked)
        } else {
            (Blocked, Plain)
        }
    });
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_mode_benchmarks_full_range() {
    let gpu = Gpu::new();
    let mut worst_frob: f64 = 0.0;
    for (i, shape) in gpu_mode_benchmarks().iter().enumerate() {
        let (sfa, sfb) = if i % 2 == 0 {
            (Blocked, Blocked)
        } else {
            (Plain, Plain)
        };
        let ps = group(2000 + i as u64, shape, Distribution::FullRange, sfa, sfb);
        let got = run_group(&gpu, &ps, Layout::default());
        let s = check_group(&shape.name, &ps, &got, Tolerance::FullRange);
        worst_frob = worst_frob.max(s.rel_frobenius);
        assert!(
            s.passed(),
            "{}: {} elements outside the FullRange bound",
            shape.name,
            s.bad
        );
    }
    println!("benchmarks: worst relative Frobenius error {worst_frob:.3e} (fp16 rounding ~2e-4)");
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn ragged_shapes_full_range() {
    let gpu = Gpu::new();
    let mut shapes = ragged();
    shapes.push(GroupShape::new(
        "ragged_more",
        &[1, 7, 40, 76, 0, 129, 65],
        &[1, 127, 129, 200, 64, 16, 300],
        &[16, 48, 16, 48, 16, 80, 1040],
    ));
    for (i, shape) in shapes.iter().enumerate() {
        for (j, (sfa, sfb)) in [(Plain, Plain), (Blocked, Blocked), (Blocked, Plain)]
            .into_iter()
            .enumerate()
        {
            let seed = 3000 + 10 * i as u64 + j as u64;
            let ps = group(seed, shape, Distribution::FullRange, sfa, sfb);
            let got = run_group(&gpu, &ps, Layout::default());
            let label = format!("{}/{sfa:?}-{sfb:?}", shape.name);
            let s = check_group(&label, &ps, &got, Tolerance::FullRange);
            assert!(s.passed(), "{label}: {} bad elements", s.bad);
            for (p, c) in ps.iter().zip(&got) {
                assert_eq!(c.len(), p.m * p.n);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn alpha_uniform_and_per_problem() {
    let gpu = Gpu::new();
    let shape = &gpu_mode_tests()[8]; // M = 40, 56, 384, 512
    let mut ps = group(4000, shape, Distribution::GpuMode, Blocked, Blocked);
    for p in &mut ps {
        p.alpha = 0.375;
    }
    let got = run_group(&gpu, &ps, Layout::default());
    assert!(check_group("alpha=0.375", &ps, &got, Tolerance::GpuMode).passed());

    let alphas = [2.0f32, -1.5, 1.0 / 1024.0, 0.8125];
    let mut ps = group(4001, shape, Distribution::FullRange, Plain, Blocked);
    for (p, &alpha) in ps.iter_mut().zip(&alphas) {
        p.alpha = alpha;
    }
    let got = run_group(&gpu, &ps, Layout::default());
    assert!(check_group("alpha per problem", &ps, &got, Tolerance::FullRange).passed());
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn poisoned_output_fully_written_padding_untouched() {
    let gpu = Gpu::new();
    let shape = GroupShape::new(
        "poison",
        &[0, 1, 40, 76, 128, 200],
        &[128, 130, 96, 328, 256, 72],
        &[64, 128, 256, 320, 512, 64],
    );
    for (sfa, sfb) in [(Plain, Plain), (Blocked, Blocked)] {
        let ps = group(5000, &shape, Distribution::GpuMode, sfa, sfb);
        let layout = Layout {
            ldc_pad: 24,
            poison: POISON,
            ..Layout::default()
        };
        let mut dps = gpu.upload_all(&ps, layout);
        gpu.run(&mut dps).expect("run");
        for (i, (p, dp)) in ps.iter().zip(&dps).enumerate() {
            let bits = gpu.download_bits(dp);
            let mut unwritten = 0;
            let mut pad_touched = 0;
            for r in 0..p.m {
                let row = &bits[r * dp.ldc..(r + 1) * dp.ldc];
                unwritten += row[..p.n].iter().filter(|&&b| b == POISON).count();
                pad_touched += row[p.n..].iter().filter(|&&b| b != POISON).count();
            }
            if p.m == 0 {
                assert!(
                    bits.iter().all(|&b| b == POISON),
                    "problem {i} (m = 0): C was written"
                );
            }
            println!(
                "poison {sfa:?}/{sfb:?}[{i}] m={} n={} k={} ldc={}: unwritten={unwritten} \
                 padding touched={pad_touched}",
                p.m, p.n, p.k, dp.ldc
            );
            assert_eq!(unwritten, 0, "problem {i}: elements left poisoned");
            assert_eq!(
                pad_touched, 0,
                "problem {i}: padding columns beyond n were written"
            );
            let got = gpu.download(dp);
            assert!(check(&format!("poison[{i}]"), p, &got, Tolerance::GpuMode).passed);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn bitwise_repeatable() {
    let gpu = Gpu::new();
    let shape = &gpu_mode_benchmarks()[1]; // G = 8, N = 7168, K = 2048
    let ps = group(6000, shape, Distribution::FullRange, Blocked, Blocked);
    let mut dps = gpu.upload_all(&ps, Layout::default());
    gpu.run(&mut dps).expect("first run");
    let first: Vec<Vec<u16>> = dps.iter().map(|dp| gpu.download_bits(dp)).collect();
    for run in 1..3 {
        gpu.run(&mut dps).expect("repeat run");
        let again: Vec<Vec<u16>> = dps.iter().map(|dp| gpu.download_bits(dp)).collect();
        for (i, (a, b)) in first.iter().zip(&again).enumerate() {
            let diff = a.iter().zip(b).filter(|(x, y)| x != y).count();
            assert_eq!(
                diff, 0,
                "run {run}, problem {i}: {diff} elements changed bits"
            );
        }
    }
    let host = gpu.gemm.run_host(&gpu.stream, &ps).expect("run_host");
    for (i, (a, b)) in first.iter().zip(&host).enumerate() {
        assert!(
            a.iter().zip(b).all(|(x, y)| *x == y.to_bits()),
            "run_host differs, problem {i}"
        );
    }
    println!("bitwise repeatable: {} (3 runs + run_host)", shape.name);
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn nan_scale_poisons_exactly_its_row_and_column() {
    let gpu = Gpu::new();
    for layout in [Plain, Blocked] {
        let mut rng = Rng::new(7000);
        let (m, n, k) = (72, 200, 256);
        let mut p = problem(&mut rng, m, n, k, Distribution::GpuMode, layout, layout);
        let (row, col) = (37usize, 131usize);
        // NaN in A's scale for (row, scale column 5) and B's for (col, scale column 11).
        let at = |r: usize, c: usize, rows_k: u32| {
            scale_offset(layout, r as u64, c as u64, rows_k) as usize
        };
        p.sfa[at(row, 5, k as u32)] = 0x7F;
        p.sfb[at(col, 11, k as u32)] = 0xFF;
        let got = run_group(&gpu, std::slice::from_ref(&p), Layout::default()).remove(0);
        let mut wrong = 0;
        for r in 0..m {
            for c in 0..n {
                let nan = got[r * n + c].is_nan();
                if nan != (r == row || c == col) {
                    wrong += 1;
                }
            }
        }
        let want = gemm(&p);
        assert!(
            want[row * n].is_nan() && want[col].is_nan(),
            "the reference propagates NaN"
        );
        let cmp = check(
            &format!("nan scale {layout:?}"),
            &p,
            &got,
            Tolerance::GpuMode,
        );
        println!(
            "nan scale {layout:?}: row {row} and column {col} NaN, {wrong} misplaced NaN/finite"
        );
        assert_eq!(
            wrong, 0,
            "NaN must be exactly in row {row} and column {col}"
        );
        assert!(cmp.passed);
    }
}

fn strided(label: &str, layout: Layout, seed: u64) {
    let gpu = Gpu::new();
    let shape = GroupShape::new(
        label,
        &[40, 1, 76, 128],
        &[256, 130, 72, 96],
        &[256, 48, 1024, 64],
    );
    for (sfa, sfb) in [(Plain, Blocked), (Blocked, Plain)] {
        let ps = group(seed, &shape, Distribution::FullRange, sfa, sfb);
        let mut dps = gpu.upload_all(&ps, layout);
        gpu.run(&mut dps).expect("run");
        let got: Vec<Vec<f16>> = dps.iter().map(|dp| gpu.download(dp)).collect();
        let s = check_group(
            &format!("{label} {layout:?}"),
            &ps,
            &got,
            Tolerance::FullRange,
        );
        assert!(s.passed(), "{label}: {} bad elements", s.bad);
        for dp in &dps {
            let bits = gpu.download_bits(dp);
            for r in 0..dp.m {
                let pad = &bits[r * dp.ldc + dp.n..(r + 1) * dp.ldc];
                assert!(
                    pad.iter().all(|&b| b == layout.poison),
                    "{label}: padding written"
                );
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn strided_lda_ldb_ldc() {
    let layout = Layout {
        lda_pad: 24,
        ldb_pad: 8,
        ldc_pad: 8,
        poison: POISON,
    };
    strided("strided", layout, 8000);
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn strided_odd_ldc() {
    // ldc = n + 1: rows of C start at odd element offsets (2-byte aligned only).
    let layout = Layout {
        lda_pad: 0,
        ldb_pad: 16,
        ldc_pad: 1,
        poison: POISON,
    };
    strided("odd ldc", layout, 8100);
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn many_problems_sharing_shapes() {
    // L = 4 copies of every problem of a GPU MODE test shape (what the reference's batch
    // dimension means), different data each.
    let gpu = Gpu::new();
    let base = &gpu_mode_tests()[4];
    let copies: Vec<(usize, usize, usize)> = (0..4).flat_map(|_| base.problems.clone()).collect();
    let shape = GroupShape {
        name: "L4".into(),
        problems: copies,
    };
    let ps = group(9000, &shape, Distribution::GpuMode, Blocked, Blocked);
    let got = run_group(&gpu, &ps, Layout::default());
    assert!(check_group("L=4", &ps, &got, Tolerance::GpuMode).passed());
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn many_problems_sharing_one_weight_buffer() {
    // 64 experts' worth of token groups all multiplying the same B (inputs may overlap).
    let gpu = Gpu::new();
    let (n, k) = (384, 512);
    let mut rng = Rng::new(9100);
    let weights = problem(&mut rng, 0, n, k, Distribution::FullRange, Plain, Blocked);
    let ms: Vec<usize> = (0..64).map(|i| [0, 1, 7, 40, 64, 76, 130][i % 7]).collect();
    let ps: Vec<HostProblem> = ms
        .iter()
        .map(|&m| {
            let mut p = problem(&mut rng, m, 0, k, Distribution::FullRange, Plain, Blocked);
            p.n = n;
            p.b = weights.b.clone();
            p.sfb = weights.sfb.clone();
            p
        })
        .collect();
    let b = gpu.stream.clone_htod(&weights.b).unwrap();
    let sfb = gpu.stream.clone_htod(&weights.sfb).unwrap();
    let mut dps = gpu.upload_all(&ps, Layout::default());
    let group: Vec<Problem<'_>> = dps
        .iter_mut()
        .map(|dp| Problem {
            b: DeviceInput::from(&b),
            sfb: DeviceInput::from(&sfb),
            ..dp.problem()
        })
        .collect();
    gpu.gemm.run(&gpu.stream, &group).expect("run");
    drop(group);
    let got: Vec<Vec<f16>> = dps.iter().map(|dp| gpu.download(dp)).collect();
    assert!(check_group("shared B", &ps, &got, Tolerance::FullRange).passed());
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn plan_reused_with_views_of_one_buffer() {
    // The three problems' C are views of one allocation, their A views of another; one plan
    // is launched three times, C re-poisoned before each launch.
    let gpu = Gpu::new();
    let shape = &gpu_mode_tests()[3];
    let ps = group(10_000, shape, Distribution::GpuMode, Plain, Plain);
    assert_eq!(ps.len(), 3);
    let a_all: Vec<u8> = ps.iter().flat_map(|p| p.a.iter().copied()).collect();
    let a_dev = gpu.stream.clone_htod(&a_all).unwrap();
    let lens: Vec<usize> = ps.iter().map(|p| p.m * p.n).collect();
    let c_len: usize = lens.iter().sum();
    let mut c_dev = gpu
        .stream
        .clone_htod(&vec![f16::from_bits(POISON); c_len])
        .unwrap();
    let mut dps = gpu.upload_all(&ps, Layout::default());

    let (c0, mut rest) = c_dev.split_at_mut(lens[0]);
    let (c1, c2) = rest.split_at_mut(lens[1]);
    let mut a_off = 0;
    let mut group = Vec::new();
    for ((p, dp), c_view) in ps.iter().zip(dps.iter_mut()).zip([c0, c1, c2]) {
        let a_view = a_dev.slice(a_off..a_off + p.a.len());
        a_off += p.a.len();
        group.push(Problem {
            a: DeviceInput::from(a_view),
            c: DeviceOutput::from(c_view),
            ..dp.problem()
        });
    }
    let c_addr = group[0].c.addr();
    let plan = gpu.gemm.plan(&gpu.stream, &group).expect("plan");
    assert_eq!(plan.num_problems(), 3);
    let mut first: Vec<u16> = Vec::new();
    for launch in 0..3 {
        // C is borrowed by the plan: poison and read it through its raw address (the stream
        // is idle around these synchronous copies).
        gpu.stream.synchronize().unwrap();
        let mut out = vec![f16::ZERO; c_len];
        // SAFETY: c_addr .. + 2 * c_len is c_dev, alive and not in use by the GPU.
        unsafe { nvfp4::cudarc::driver::result::memset_d8_sync(c_addr, 0xFF, 2 * c_len) }.unwrap();
        gpu.gemm.launch(&gpu.stream, &plan).expect("launch");
        gpu.stream.synchronize().unwrap();
        // SAFETY: as above; the launch has finished.
        unsafe { nvfp4::cudarc::driver::result::memcpy_dtoh_sync(&mut out, c_addr) }.unwrap();
        let out: Vec<u16> = out.iter().map(|x| x.to_bits()).collect();
        assert!(
            !out.contains(&POISON),
            "launch {launch} left poisoned elements"
        );
        if launch == 0 {
            first = out;
        } else {
            assert_eq!(first, out, "launch {launch} of one plan differs bitwise");
        }
    }
    drop(plan);
    drop(group);
    let mut off = 0;
    let got: Vec<Vec<f16>> = lens
        .iter()
        .map(|&len| {
            let c = first[off..off + len]
                .iter()
                .map(|&b| f16::from_bits(b))
                .collect();
            off += len;
            c
        })
        .collect();
    assert!(check_group("views + plan x3", &ps, &got, Tolerance::GpuMode).passed());
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn multi_stream_event_tracking() {
    // Upload on one stream, compute on a second, download on the first: cudarc's events
    // (recorded by `launch`) must order the three.
    let gpu = Gpu::new();
    let upload = gpu.ctx.new_stream().unwrap();
    let compute = gpu.ctx.new_stream().unwrap();
    let shape = &gpu_mode_benchmarks()[3];
    let ps = group(11_000, shape, Distribution::GpuMode, Blocked, Plain);
    let mut dps: Vec<_> = ps
        .iter()
        .map(|p| upload_on(&upload, p, Layout::default()))
        .collect();
    let group = problems(&mut dps);
    gpu.gemm
        .run(&compute, &group)
        .expect("run on the compute stream");
    drop(group);
    let got: Vec<Vec<f16>> = ps
        .iter()
        .zip(&dps)
        .map(|(p, dp)| {
            let c = upload.clone_dtoh(&dp.c).unwrap();
            c[..p.m * p.n].to_vec()
        })
        .collect();
    upload.synchronize().unwrap();
    assert!(check_group("multi-stream", &ps, &got, Tolerance::GpuMode).passed());
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn cuda_graph_replays_launch() {
    let gpu = Gpu::new();
    let stream = gpu.ctx.new_stream().unwrap();
    let shape = &gpu_mode_tests()[9];
    let ps = group(12_000, shape, Distribution::GpuMode, Blocked, Blocked);
    let mut dps: Vec<_> = ps
        .iter()
        .map(|p| upload_on(&stream, p, Layout::default()))
        .collect();
    let group = problems(&mut dps);
    let plan = gpu.gemm.plan(&stream, &group).expect("plan");
    stream.synchronize().unwrap();
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let launched = gpu.gemm.launch(&stream, &plan);
    let graph = stream.end_capture(CUgraphInstantiate_flags(0));
    launched.expect("launch while capturing");
    let graph = graph.expect("end capture").expect("a graph");
    graph.launch().unwrap();
    graph.launch().unwrap();
    stream.synchronize().unwrap();
    drop(graph);
    drop(plan);
    drop(group);
    let got: Vec<Vec<f16>> = ps
        .iter()
        .zip(&dps)
        .map(|(p, dp)| stream.clone_dtoh(&dp.c).unwrap()[..p.m * p.n].to_vec())
        .collect();
    stream.synchronize().unwrap();
    assert!(check_group("graph", &ps, &got, Tolerance::GpuMode).passed());
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn invalid_group_launches_nothing() {
    let gpu = Gpu::new();
    let mut rng = Rng::new(13_000);
    let good = problem(&mut rng, 40, 128, 256, Distribution::GpuMode, Plain, Plain);
    let mut dps = gpu.upload_all(std::slice::from_ref(&good), Layout::default());
    let mut group = problems(&mut dps);
    group[0].k = 40;
    let err = gpu.gemm.run(&gpu.stream, &group).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidDimension {
                problem: 0,
                field: "k",
                ..
            }
        ),
        "{err}"
    );
    drop(group);
    let bits = gpu.download_bits(&dps[0]);
    assert!(
        bits.iter().all(|&b| b == POISON),
        "a rejected group must not be launched"
    );
    // run_host rejects short host buffers with the same error as the device path.
    let mut short = good.clone();
    short.a.truncate(100);
    let err = gpu.gemm.run_host(&gpu.stream, &[good, short]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferTooSmall {
                problem: 1,
                field: "a",
                ..
            }
        ),
        "{err}"
    );
    println!("invalid group: rejected with `{err}`, nothing launched");
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn empty_groups_are_no_ops() {
    let gpu = Gpu::new();
    gpu.gemm.run(&gpu.stream, &[]).expect("G = 0");
    let shape = ragged()
        .into_iter()
        .find(|s| s.name == "ragged_all_empty")
        .unwrap();
    let ps = group(14_000, &shape, Distribution::GpuMode, Plain, Plain);
    let mut dps = gpu.upload_all(&ps, Layout::default());
    let group = problems(&mut dps);
    let plan = gpu.gemm.plan(&gpu.stream, &group).expect("plan");
    assert_eq!(plan.total_tiles(), 0);
    gpu.gemm
        .launch(&gpu.stream, &plan)
        .expect("launch of nothing");
    drop(plan);
    drop(group);
    for dp in &dps {
        assert!(gpu.download_bits(dp).iter().all(|&b| b == POISON));
    }
    let out = gpu.gemm.run_host(&gpu.stream, &ps).expect("run_host");
    assert!(out.iter().all(Vec::is_empty));
    println!("empty groups: no launch, outputs untouched");
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn run_host_matches_reference() {
    let gpu = Gpu::new();
    let shape = &gpu_mode_tests()[5];
    let ps = group(15_000, shape, Distribution::FullRange, Blocked, Plain);
    let got = gpu.gemm.run_host(&gpu.stream, &ps).expect("run_host");
    assert!(check_group("run_host", &ps, &got, Tolerance::FullRange).passed());
}

/// Every tile cut along K (into 2, 3, 4 and 16 ranges, some of them empty where K has fewer
/// chunks of 64) and by size, on the NVFP4 kernel and (token pass forced) on the
/// fp16-activation kernels: against the reference, and one plan launched three times with C
/// poisoned before each launch gives the same bits (each launch leaves the tiles' counters
/// zero for the next; a stale counter would leave a tile unwritten). Two groups: one with a
/// `k` that is not a multiple of 64 (natural K order after the pass on the Hopper path) and
/// blocked weight scales; one with whole 64-value chunks only (the blocked K order after the
/// pass, `_f16b_wt`) and plain weight scales.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn split_k_cut_tiles() {
    let mut gpu = Gpu::new();
    let natural = GroupShape::new(
        "split",
        &[1, 7, 40, 76, 0, 129, 200],
        &[130, 127, 129, 200, 64, 72, 300],
        &[1040, 48, 640, 2048, 16, 80, 4096],
    );
    let whole = GroupShape::new(
        "split-whole-chunks",
        &[1, 7, 40, 76, 0, 129, 200],
        &[130, 127, 129, 200, 64, 72, 300],
        &[1024, 64, 640, 2048, 64, 320, 4096],
    );
    for (g, (shape, sfa, sfb)) in [(&natural, Plain, Blocked), (&whole, Blocked, Plain)]
        .into_iter()
        .enumerate()
    {
        split_k_group(&mut gpu, shape, sfa, sfb, 15_000 + 100 * g as u64);
    }
}

/// [`split_k_cut_tiles`] for one group shape and scale layouts.
fn split_k_group(gpu: &mut Gpu, shape: &GroupShape, sfa: ScaleLayout, sfb: ScaleLayout, seed: u64) {
    let hopper = gpu.gemm.path() == nvfp4::KernelPath::Hopper;
    let whole_chunks = shape.problems.iter().all(|&(_, _, k)| k % 64 == 0);
    let modes = [
        (SplitK::Parts(2), TokenDequant::Never),
        (SplitK::Parts(3), TokenDequant::Never),
        (SplitK::Parts(4), TokenDequant::Never),
        (SplitK::Parts(16), TokenDequant::Never),
        (SplitK::Auto, TokenDequant::Never),
        (SplitK::Parts(2), TokenDequant::Always),
        (SplitK::Parts(3), TokenDequant::Always),
        (SplitK::Parts(16), TokenDequant::Always),
    ];
    for (i, (mode, pass)) in modes.into_iter().enumerate() {
        gpu.gemm.set_split_k(mode);
        gpu.gemm.set_token_dequant(pass);
        let ps = group(seed + i as u64, shape, Distribution::FullRange, sfa, sfb);
        let layout = Layout {
            poison: POISON,
            ..Layout::default()
        };
        let mut dps = gpu.upload_all(&ps, layout);
        let (outs, ldcs) = c_buffers(&mut dps);
        let group_problems = problems(&mut dps);
        let plan = gpu.gemm.plan(&gpu.stream, &group_problems).expect("plan");
        let (dp_tiles, parts) = plan.split_k_schedule();
        println!(
            "{} split {mode:?}, token pass {pass:?}: {} tiles, {dp_tiles} whole, the rest in \
             {parts} K ranges; blocked K order {}",
            shape.name,
            plan.total_tiles(),
            plan.blocked_k()
        );
        let passed = hopper && pass == TokenDequant::Always;
        let blocked = passed && whole_chunks && gpu.gemm.blocked_k() && gpu.gemm.weights_by_tma();
        assert_eq!(plan.blocked_k(), blocked, "{}", shape.name);
        if let SplitK::Parts(n) = mode {
            assert_eq!((dp_tiles, parts), (0, n), "{mode:?}: every tile cut");
        }
        let mut first: Vec<Vec<u16>> = Vec::new();
        for launch in 0..3 {
            let got = launch_poisoned(gpu, &plan, &outs);
            if launch == 0 {
                first = got;
            } else {
                assert_eq!(
                    first, got,
                    "{mode:?} / {pass:?}: launch {launch} differs bitwise"
                );
            }
        }
        drop(plan);
        drop(group_problems);
        let got = unstride(&ps, &first, &ldcs);
        let label = format!("{} split {mode:?} / {pass:?}", shape.name);
        let s = check_group(&label, &ps, &got, Tolerance::FullRange);
        assert!(s.passed(), "{label}: {} bad elements", s.bad);
    }
}

/// Each problem's C buffer as `(device address, elements)`, for [`launch_poisoned`], and its
/// `ldc`.
fn c_buffers(dps: &mut [DeviceProblem]) -> (Vec<(u64, usize)>, Vec<usize>) {
    dps.iter_mut()
        .map(|dp| {
            let (len, ldc) = (dp.c.len(), dp.ldc);
            ((dp.problem().c.addr(), len), ldc)
        })
        .unzip()
}

/// Each problem's `m x n` C from its raw bits (`ldc` elements a row).
fn unstride(ps: &[HostProblem], bits: &[Vec<u16>], ldcs: &[usize]) -> Vec<Vec<f16>> {
    ps.iter()
        .zip(bits)
        .zip(ldcs)
        .map(|((p, bits), &ldc)| {
            (0..p.m)
                .flat_map(|r| {
                    bits[r * ldc..r * ldc + p.n]
                        .iter()
                        .map(|&b| f16::from_bits(b))
                })
                .collect()
        })
        .collect()
}

/// A ragged group of eight problems for the token-pass tests: M = 1, 7, 40, 76, 0, 129, 200 and
/// `last_m`, N not a multiple of the 128-row tile (130, 127, 129, 300, 64, 72, 96 and
/// `last_n`), every K a multiple of 64 (64 to 4096).
fn ragged_eight(name: &str, last_m: usize, last_n: usize) -> GroupShape {
    GroupShape::new(
        name,
        &[1, 7, 40, 76, 0, 129, 200, last_m],
        &[130, 127, 129, 300, 64, 72, 96, last_n],
        &[64, 640, 128, 2048, 64, 192, 1024, 4096],
    )
}

/// NVFP4 groups through the token pass in both K orders (full-range data, ragged M, N not a
/// multiple of the tile, both scale layouts): the Hopper path takes the blocked order
/// (`_f16b_wt`) only when the switch is on and every problem's `k` is a multiple of 64 (a
/// group with `k` = 96 keeps natural order, its 48-byte weight rows still read by TMA), and
/// every combination matches the reference.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn token_pass_blocked_k_order() {
    let mut gpu = Gpu::new();
    let hopper = gpu.gemm.path() == nvfp4::KernelPath::Hopper;
    gpu.gemm.set_token_dequant(TokenDequant::Always);
    gpu.gemm.set_weights_by_tma(true);
    let whole = ragged_eight("k64", 256, 256);
    let mut ragged_k = whole.clone();
    ragged_k.name = "k96".into();
    ragged_k.problems[2].2 = 96;
    for (g, (shape, whole_chunks)) in [(&whole, true), (&ragged_k, false)].into_iter().enumerate() {
        let (sfa, sfb) = [(Plain, Blocked), (Blocked, Plain)][g];
        let ps = group(17_000 + g as u64, shape, Distribution::FullRange, sfa, sfb);
        for on in [true, false] {
            gpu.gemm.set_blocked_k(on);
            let mut dps = gpu.upload_all(&ps, Layout::default());
            let group_problems = problems(&mut dps);
            let plan = gpu.gemm.plan(&gpu.stream, &group_problems).expect("plan");
            assert_eq!(
                plan.blocked_k(),
                hopper && on && whole_chunks,
                "{}: switch {on}, {:?} path",
                shape.name,
                gpu.gemm.path()
            );
            assert_eq!(plan.weights_by_tma(), hopper, "{}", shape.name);
            gpu.gemm.launch(&gpu.stream, &plan).expect("launch");
            gpu.stream.synchronize().expect("synchronize");
            drop(plan);
            drop(group_problems);
            download_checked(
                &gpu,
                &ps,
                &dps,
                &format!("{}/blocked switch {on}", shape.name),
            );
        }
    }
}

/// A GPU with the token pass on every NVFP4 group and the library's defaults for the kernels
/// after it (`SplitK::Auto`, weights by TMA, the blocked K order, the 8-stage kernel, dynamic
/// units), whatever the suite's switches say: for the tests that assert which kernel a plan
/// runs. Also whether it takes the Hopper path, and the CTA slots of its 16-bit kernels.
fn blocked_order_gpu() -> (Gpu, bool, u32) {
    let mut gpu = Gpu::new();
    let hopper = gpu.gemm.path() == nvfp4::KernelPath::Hopper;
    gpu.gemm.set_token_dequant(TokenDequant::Always);
    gpu.gemm.set_split_k(SplitK::Auto);
    gpu.gemm.set_weights_by_tma(true);
    gpu.gemm.set_blocked_k(true);
    gpu.gemm.set_one_per_sm_deep(true);
    gpu.gemm.set_dynamic_units(true);
    let slots = gpu.gemm.sm_count() * gpu.gemm.ctas_per_sm_for(nvfp4::Activation::F16);
    (gpu, hopper, slots)
}

/// The 8-stage blocked-order kernel (`_f16b_wt8`, one CTA an SM): on the Hopper path a
/// blocked-order launch of at most one tile an SM runs it by default and is not cut along K
/// by `SplitK::Auto`, one of more tiles than SMs does not, and the switch turns it off. Its
/// sums are bitwise those of the 4-stage kernel (same per-thread order; neither launch here
/// is cut), three launches of each plan are bitwise equal, and both match the reference, on a ragged group (M = 0, 1, 7, 40, 76; N not a
/// multiple of 128) and on one of 4 x 4096 weight rows.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn one_per_sm_deep_kernel() {
    let (mut gpu, hopper, _) = blocked_order_gpu();
    let few = ragged_eight("few-tiles", 320, 3072);
    let many = GroupShape::new("many-tiles", &[40, 200, 76, 128], &[4096; 4], &[512; 4]);
    for (g, shape) in [&few, &many].into_iter().enumerate() {
        let ps = group(
            18_000 + g as u64,
            shape,
            Distribution::FullRange,
            Plain,
            Blocked,
        );
        let mut outs: Vec<Vec<Vec<u16>>> = Vec::new();
        for on in [true, false] {
            gpu.gemm.set_one_per_sm_deep(on);
            let (sm_count, path) = (gpu.gemm.sm_count(), gpu.gemm.path());
            let label = format!("{}/deep switch {on}", shape.name);
            outs.push(launch_thrice_checked(&gpu, &ps, &label, |plan| {
                let fits = plan.total_tiles() <= sm_count;
                // 84 and 160 tiles of the Hopper path: one group on each side on GPUs of up
                // to 159 SMs (the portable path's 64-token tiles make more).
                if hopper && sm_count < 160 {
                    assert_eq!(fits, g == 0, "{}: {} tiles", shape.name, plan.total_tiles());
                }
                assert_eq!(
                    plan.one_per_sm_deep(),
                    hopper && on && fits,
                    "{}: switch {on}, {path:?} path",
                    shape.name,
                );
                if plan.one_per_sm_deep() {
                    assert_eq!(plan.split_k_schedule().1, 1, "{}: not cut", shape.name);
                }
            }));
        }
        // Same sums whichever kernel ran (neither launch is cut: the groups' 64-value K and
        // the many-tile group's 8 chunks are below `SplitK::Auto`'s minimums).
        assert_eq!(outs[0], outs[1], "{}", shape.name);
    }
}

/// The blocked-order kernels' weight scales copied four chunks at a time (`_f16b_wtsg`,
/// `_f16b_wt8sg`: 16 bytes a row into a ring of `STAGES / 2` slots): on the Hopper path a plan
/// takes them when the switch is on and every problem's `sfb` is plain with `k` a multiple of
/// 256, never with blocked weight scales or another `k`. Their sums are bitwise those of the
/// per-chunk copies (three launches of each plan bitwise equal) and match the reference: on a ragged group (M = 0, 1, 7, 40, 76; N not a
/// multiple of 128) in the 8-stage form, on a group of more tiles than SMs (N 4000 and 2000
/// among them) in the 4-stage form, on that group with every tile cut in three (parts whose
/// first chunk is inside a group of four: 16 and 8 chunks in three), and on the ragged group
/// of `ragged_eight` (some `k` = 64, 128, 192, 640: not taken).
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn weight_scales_in_groups_of_four_chunks() {
    let (mut gpu, hopper, _) = blocked_order_gpu();
    let few = GroupShape::new(
        "few-tiles",
        &[1, 7, 40, 76, 0, 129, 200, 320],
        &[130, 127, 129, 300, 64, 72, 96, 3072],
        &[256, 768, 256, 2048, 256, 512, 1024, 4096],
    );
    let many = GroupShape::new(
        "many-tiles",
        &[40, 200, 76, 128],
        &[4096, 4000, 4096, 2000],
        &[512, 1024, 512, 2048],
    );
    let other_k = ragged_eight("k64", 256, 256);
    let cases = [
        (&few, SplitK::Auto, true),
        (&many, SplitK::Auto, true),
        (&many, SplitK::Parts(3), true),
        (&other_k, SplitK::Auto, false),
    ];
    for (g, (shape, split, k256)) in cases.into_iter().enumerate() {
        gpu.gemm.set_split_k(split);
        for sfb in [Plain, Blocked] {
            let ps = group(
                19_000 + g as u64,
                shape,
                Distribution::FullRange,
                Blocked,
                sfb,
            );
            let mut outs: Vec<Vec<Vec<u16>>> = Vec::new();
            for on in [true, false] {
                gpu.gemm.set_scale_groups(on);
                let sm_count = gpu.gemm.sm_count();
                let label = format!("{}/{split:?}/sfb {sfb:?}/groups switch {on}", shape.name);
                outs.push(launch_thrice_checked(&gpu, &ps, &label, |plan| {
                    assert_eq!(plan.blocked_k(), hopper, "{label}");
                    assert_eq!(
                        plan.scale_groups(),
                        hopper && on && sfb == Plain && k256,
                        "{label}"
                    );
                    // 84 and 144 tiles on the Hopper path: one group on each side of the SM
                    // count on GPUs of up to 143 SMs.
                    if hopper && sm_count < 144 && g < 2 {
                        assert_eq!(plan.one_per_sm_deep(), g == 0, "{label}");
                    }
                    if g == 2 {
                        assert_eq!(plan.split_k_schedule().1, 3, "{label}");
                    }
                }));
            }
            assert_eq!(outs[0], outs[1], "{} {split:?} {sfb:?}", shape.name);
        }
    }
}

/// Whole tiles and guided parts in one launch, as `SplitK::Auto` plans G8 N4096 K7168 (the
/// largest benchmark group: 352 tiles, on 132 SMs 264 whole and the last 88 cut in three):
/// three launches of one plan (C poisoned before each; the cut tiles' counters and the unit
/// counter must be left zero) are bitwise equal and match the reference. On the Hopper path
/// a plan that cuts its tail into more units than CTA slots must take them dynamically.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn whole_tiles_and_guided_parts_relaunched() {
    let (gpu, hopper, slots) = blocked_order_gpu();
    let shape = &gpu_mode_benchmarks()[0];
    let ps = group(19_700, shape, Distribution::FullRange, Plain, Plain);
    let label = format!("{}: whole tiles and guided parts", shape.name);
    launch_thrice_checked(&gpu, &ps, &label, |plan| {
        let (dp, parts) = plan.split_k_schedule();
        let units = u64::from(dp) + u64::from(plan.total_tiles() - dp) * u64::from(parts);
        println!(
            "{label}: {} tiles, {dp} whole, the rest in {parts}; {units} units on {slots} \
             slots; dynamic units {}",
            plan.total_tiles(),
            plan.dynamic_units()
        );
        // (A pair plan, as with `NVFP4_PAIR_TILES=always`, has a slot per cluster.)
        let slots = if plan.pair_tiles() {
            gpu.gemm.pair_clusters()
        } else {
            slots
        };
        if hopper && parts > 1 {
            assert_eq!(plan.dynamic_units(), units > u64::from(slots), "{label}");
        }
        // On 132-SM Hopper GPUs (the H100 and H200 this was measured on) the tail is cut.
        if hopper && gpu.gemm.sm_count() == 132 {
            assert!(dp > 0 && parts > 1, "{label}: ({dp}, {parts})");
        }
    });
}

/// The group of [`dynamic_units_relaunched`] and [`guided_parts_relaunched`]: 320 tiles on
/// the Hopper path (more than two CTAs an SM on GPUs of up to 159 SMs), ragged M (0, 1, 7,
/// 40, 76, ...), one N not a multiple of 128, 8 K chunks (below `SplitK::Auto`'s minimum:
/// nothing is cut unless asked).
fn many_tiles_group(seed: u64) -> Vec<HostProblem> {
    let shape = GroupShape::new(
        "many-tiles",
        &[40, 200, 76, 128, 7, 1, 0, 300],
        &[4096, 4000, 4096, 4096, 4096, 4096, 4096, 4096],
        &[512; 8],
    );
    group(seed, &shape, Distribution::FullRange, Plain, Blocked)
}

/// Plans `ps` with `gpu`'s settings, hands the plan to `check_plan`, launches it three times
/// (C poisoned before each), asserts the three bitwise equal and the results within the
/// reference's bound, and returns the first launch's raw bits.
fn launch_thrice_checked(
    gpu: &Gpu,
    ps: &[HostProblem],
    label: &str,
    check_plan: impl FnOnce(&nvfp4::GroupPlan<'_>),
) -> Vec<Vec<u16>> {
    let mut dps = gpu.upload_all(ps, Layout::default());
    let (outs, ldcs) = c_buffers(&mut dps);
    let group_problems = problems(&mut dps);
    let plan = gpu.gemm.plan(&gpu.stream, &group_problems).expect("plan");
    check_plan(&plan);
    let first = launch_poisoned(gpu, &plan, &outs);
    for launch in 1..3 {
        let got = launch_poisoned(gpu, &plan, &outs);
        assert!(
            first == got,
            "{label}, launch {launch}: not bitwise the first's"
        );
    }
    drop(plan);
    drop(group_problems);
    let got = unstride(ps, &first, &ldcs);
    let s = check_group(label, ps, &got, Tolerance::FullRange);
    assert!(s.passed(), "{label}: {} bad elements", s.bad);
    first
}

/// The pair kernel: on the Hopper path a blocked-order plan of more tiles than SMs with
/// [`PairTiles::Always`] runs `_f16b_wt2` (blocked weight scales) or `_f16b_wtsg2` (plain:
/// scale groups), clusters of two CTAs over 256-row tiles with the token tile multicast to
/// both, and its sums are bitwise those of the 128-row kernel on the same K cut: uncut, and
/// cut in three, with static and with dynamic units (the cluster's first CTA fetching for
/// both; dynamic where the units outnumber the clusters), and the ragged group cut in twelve
/// (empty parts: units without chunks); with `SplitK::Auto` (G8 N4096 K7168: whole pair
/// tiles and the tail cut in three, the benchmark's schedule) it matches the reference.
/// Three launches of each plan (C poisoned before each) are bitwise equal and match the
/// reference: ragged M (0, 1, 7, 40, 76, ...), N not a multiple of 256 (the second CTA's
/// rows partly or wholly past `n`), and the G8 N4096 K7168 and G8 N7168 K2048 benchmark
/// groups. [`PairTiles::Auto`] takes the pair kernel where [`PairTiles::wants_pairs`] says
/// (on 132 SMs holding 132 pair clusters: G8 N7168 K2048, 364 pair tiles, but not G8 N4096
/// K7168, 176). Off the Hopper path the test says SKIPPED and checks nothing.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn pair_tiles_match_the_blocked_kernel() {
    let (mut gpu, hopper, _) = blocked_order_gpu();
    if !hopper {
        // Off the Hopper path no plan runs the pair kernel: nothing to compare.
        eprintln!("pair_tiles_match_the_blocked_kernel: SKIPPED, not the Hopper path");
        return;
    }
    let sms = gpu.gemm.sm_count();
    // The pair kernels load on Hopper, and their grid is what the device holds at once.
    let clusters = gpu.gemm.pair_clusters();
    println!("pair clusters the device holds at once: {clusters} ({sms} SMs)");
    assert!(
        (1..=sms).contains(&clusters),
        "{clusters} pair clusters on {sms} SMs"
    );
    let ragged = GroupShape::new(
        "pair-ragged",
        &[40, 200, 76, 128, 7, 1, 0, 300],
        &[4096, 4000, 96, 4224, 4096, 200, 4096, 4096],
        &[512, 512, 512, 1024, 512, 512, 512, 512],
    );
    let benches = gpu_mode_benchmarks();
    // (shape, weight scale layouts): plain takes the scale-group forms.
    let cases = [
        (ragged, vec![Plain, Blocked]),
        (benches[0].clone(), vec![Plain, Blocked]), // G = 8, N = 4096, K = 7168
        (benches[1].clone(), vec![Plain]),          // G = 8, N = 7168, K = 2048
    ];
    for (g, (shape, layouts)) in cases.iter().enumerate() {
        let tiles = |rows: usize| -> u32 {
            shape
                .problems
                .iter()
                .map(|&(m, n, _)| (m.div_ceil(128) * n.div_ceil(rows)) as u32)
                .sum()
        };
        let auto =
            PairTiles::Auto.wants_pairs(tiles(128), tiles(256), sms, gpu.gemm.pair_clusters());
        for &sfb in layouts {
            let ps = group(
                30_000 + g as u64,
                shape,
                Distribution::FullRange,
                Plain,
                sfb,
            );
            // (K cut, dynamic units asked): the ragged group also with static units (uncut
            // and cut; uncut, its 131 pair tiles are not dynamic on 132 clusters either way); the
            // G8 groups dynamic (the default), G8 N4096 K7168 also with the
            // benchmark's cut (Auto: the pair tiles past the first wave of clusters in three,
            // whole tiles and cut ones in one launch).
            let configs: &[(SplitK, bool)] = match (g, sfb) {
                // (Parts(12) with 8 chunks: empty parts, units without chunks; three or
                // more units a cluster, so each value word of the pair records is reused.)
                (0, _) => &[
                    (SplitK::Off, false),
                    (SplitK::Off, true),
                    (SplitK::Parts(3), false),
                    (SplitK::Parts(3), true),
                    (SplitK::Parts(12), true),
                ],
                (1, Plain) => &[
                    (SplitK::Off, true),
                    (SplitK::Parts(3), true),
                    (SplitK::Auto, true),
                ],
                _ => &[(SplitK::Off, true), (SplitK::Parts(3), true)],
            };
            for &(split, dynamic) in configs {
                gpu.gemm.set_split_k(split);
                gpu.gemm.set_dynamic_units(dynamic);
                let mut bits = Vec::new();
                for when in [PairTiles::Never, PairTiles::Always, PairTiles::Auto] {
                    gpu.gemm.set_pair_tiles(when);
                    let label = format!(
                        "{} {sfb:?} {split:?} dynamic {dynamic}, pair {when:?}",
                        shape.name
                    );
                    let pairs = when == PairTiles::Always || (when == PairTiles::Auto && auto);
                    bits.push(launch_thrice_checked(&gpu, &ps, &label, |plan| {
                        assert_eq!(plan.pair_tiles(), pairs, "{label}");
                        let (dp, parts) = plan.split_k_schedule();
                        // A pair plan's units are dynamic where asked and more than its
                        // clusters; its grid holds two CTAs a cluster, at most as many
                        // clusters as the device holds at once.
                        if pairs {
                            let units = dp + (plan.total_tiles() - dp) * parts;
                            let clusters = gpu.gemm.pair_clusters();
                            assert_eq!(
                                plan.dynamic_units(),
                                dynamic && units > clusters,
                                "{label}"
                            );
                            assert_eq!(
                                gpu.gemm.plan_grid_size(plan),
                                2 * units.clamp(1, clusters),
                                "{label}"
                            );
                        }
                        match split {
                            SplitK::Off => assert_eq!(parts, 1, "{label}: not cut"),
                            SplitK::Parts(p) => {
                                assert_eq!((dp, parts), (0, p), "{label}: every tile in {p}")
                            }
                            _ if pairs => assert!(
                                parts > 1 && dp > 0 && dp < plan.total_tiles(),
                                "{label}: whole and cut pair tiles, {dp} of {} whole, {parts} parts",
                                plan.total_tiles()
                            ),
                            _ => {}
                        }
                        assert_eq!(
                            plan.scale_groups(),
                            sfb == Plain && gpu.gemm.scale_groups(),
                            "{label}"
                        );
                        println!(
                            "{label}: {} tiles, cut {:?}, pair kernel {}, dynamic units {}",
                            plan.total_tiles(),
                            plan.split_k_schedule(),
                            plan.pair_tiles(),
                            plan.dynamic_units()
                        );
                    }));
                }
                // With `SplitK::Auto` the pair kernel cuts other tiles (those past its own
                // first wave), so its fp32 sums may round differently: each launch is
                // checked against the reference above, and Never and Auto (both 128-row
                // here) must agree bitwise.
                if split == SplitK::Auto {
                    assert!(bits[0] == bits[2], "{}: Never and Auto differ", shape.name);
                } else {
                    assert!(
                        bits[0] == bits[1] && bits[1] == bits[2],
                        "{} {sfb:?} {split:?} dynamic {dynamic}: pair differs from the 128-row \
                         kernel",
                        shape.name
                    );
                }
            }
        }
        if sms == 132 && gpu.gemm.pair_clusters() == 132 {
            // The rule's two measured sides (PERF.md run 201).
            assert_eq!(auto, g == 2, "{}: Auto on 132 SMs", shape.name);
        }
    }
    gpu.gemm.set_pair_tiles(PairTiles::Auto);
}

/// Dynamic units: on the Hopper path a `_wt` launch (here after the token pass, in the
/// blocked K order and in natural order) of more whole tiles than CTA slots takes the tiles
/// past its first wave from a counter in the plan's workspace, which each launch must leave
/// zero for the next. Three launches of one such plan (C poisoned before each), and three of
/// the same group with the switch off, are bitwise equal (each tile's sums do not depend on
/// which CTA computes it) and match the reference ([`many_tiles_group`], not cut).
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn dynamic_units_relaunched() {
    let (mut gpu, hopper, slots) = blocked_order_gpu();
    let ps = many_tiles_group(19_000);
    for blocked in [true, false] {
        gpu.gemm.set_blocked_k(blocked);
        let mut bits = Vec::new();
        for on in [true, false] {
            gpu.gemm.set_dynamic_units(on);
            let label = format!("dynamic units: switch {on}, blocked {blocked}");
            bits.push(launch_thrice_checked(&gpu, &ps, &label, |plan| {
                let many = plan.total_tiles() > slots;
                if hopper && gpu.gemm.sm_count() < 160 {
                    assert!(many, "{} tiles, {slots} slots", plan.total_tiles());
                }
                assert_eq!(plan.split_k_schedule().1, 1, "not cut");
                assert_eq!(plan.blocked_k(), hopper && blocked, "blocked K order");
                assert_eq!(plan.dynamic_units(), hopper && on && many, "{label}");
                println!(
                    "{label}: {} tiles on {slots} slots, dynamic units {}",
                    plan.total_tiles(),
                    plan.dynamic_units()
                );
            }));
        }
        assert!(
            bits[0] == bits[1],
            "blocked {blocked}: switch on and off differ"
        );
    }
}

/// Guided parts: on the Hopper path a `_wt` launch whose tiles are all cut along K (2, 3 and
/// 8 parts of 8 chunks: one of the 8 guided parts is empty) into more parts than CTA slots
/// takes them dynamically, every tile's part 0 first, the parts shrinking. Three launches of
/// one such plan (C poisoned before each; the tiles' and the units' counters must be left
/// zero) are bitwise equal and match the reference, in the blocked K order and in natural
/// order, and so does the same cut with the switch off (equal parts, the static order).
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn guided_parts_relaunched() {
    let (mut gpu, hopper, slots) = blocked_order_gpu();
    let ps = many_tiles_group(19_500);
    for blocked in [true, false] {
        gpu.gemm.set_blocked_k(blocked);
        // (16 parts would pass `SplitK::MAX_WS_BYTES` here: 320 x 16 x 64 KiB of sums.)
        for parts in [2, 3, 8] {
            gpu.gemm.set_split_k(SplitK::Parts(parts));
            for on in [true, false] {
                gpu.gemm.set_dynamic_units(on);
                let label = format!("guided: switch {on}, {parts} parts, blocked {blocked}");
                launch_thrice_checked(&gpu, &ps, &label, |plan| {
                    let units = u64::from(plan.total_tiles()) * u64::from(parts);
                    if hopper {
                        assert_eq!(plan.split_k_schedule(), (0, parts), "every tile cut");
                    }
                    // 320 tiles on the Hopper path: more parts than slots (so dynamic with
                    // the switch on) on GPUs of up to 639 CTA slots.
                    let dynamic = hopper && on && units > u64::from(slots);
                    assert_eq!(plan.dynamic_units(), dynamic, "{label}");
                    println!("{label}: dynamic units {}", plan.dynamic_units());
                });
            }
        }
    }
}
