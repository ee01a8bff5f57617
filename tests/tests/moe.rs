//! The MoE forms on a GPU ([`nvfp4::moe`]): row counts read from device memory, the
//! contiguous `[total_M, K/2]` token layout, CUDA-graph replays with changing counts, and
//! expert parallelism over several GPUs; every result checked against the f64 CPU reference.
//!
//! Every test needs a CUDA device and is `#[ignore]`d so that it is reported as ignored, not
//! passed, where there is none. On a GPU machine:
//! `cargo test -p nvfp4-tests --release --test moe -- --ignored --nocapture`
//! (`multi_gpu_expert_parallel` needs two GPUs and fails on one: add `--skip multi_gpu` there).

use std::sync::Arc;

use nvfp4::cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use nvfp4::cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};
use nvfp4::r#gen::{Distribution, Rng, pack_scales, problem};
use nvfp4::moe::{ContiguousGroup, DeviceCounts, ExpertWeights, GroupSizes};
use nvfp4::reference::Tolerance;
use nvfp4::{
    DeviceInput, DeviceOutput, Error, GroupedGemm, HostProblem, Problem, ScaleLayout, f16,
};
use nvfp4_tests::{Gpu, Layout, POISON, check, problems, upload_on};

use ScaleLayout::{Blocked, Plain};

/// The host data of a contiguous MoE layer: `rows` token rows (plain scales, packed into
/// `sfa_layout` for the device) and one weight matrix per expert.
struct Layer {
    rows: usize,
    n: usize,
    k: usize,
    /// `[rows, k / 2]` FP4.
    a: Vec<u8>,
    /// `[rows, k / 16]` plain scales.
    sfa_plain: Vec<u8>,
    sfa_layout: ScaleLayout,
    /// Per expert: B, its scales (in `sfb_layout`), alpha.
    experts: Vec<(Vec<u8>, Vec<u8>, f32)>,
    sfb_layout: ScaleLayout,
}

impl Layer {
    #[allow(clippy::too_many_arguments)]
    fn new(
        seed: u64,
        rows: usize,
        n: usize,
        k: usize,
        experts: usize,
        dist: Distribution,
        sfa_layout: ScaleLayout,
        sfb_layout: ScaleLayout,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let tokens = problem(&mut rng, rows, 0, k, dist, Plain, Plain);
        let experts = (0..experts)
            .map(|g| {
                let w = problem(&mut rng, 0, n, k, dist, Plain, sfb_layout);
                (w.b, w.sfb, [1.0, 0.5, 2.0, 0.25][g % 4])
            })
            .collect();
        Self {
            rows,
            n,
            k,
            a: tokens.a,
            sfa_plain: tokens.sfa,
            sfa_layout,
            experts,
            sfb_layout,
        }
    }

    /// `sizes` as the kernel applies them: prefix sums clamped to `rows`.
    fn clamp(&self, counts: &[u32]) -> Vec<(usize, usize)> {
        let mut start = 0usize;
        counts
            .iter()
            .map(|&c| {
                let first = start.min(self.rows);
                start = start.saturating_add(c as usize);
                (first, start.min(self.rows) - first)
            })
            .collect()
    }

    /// Expert `g`'s problem over rows `first .. first + m` (plain scales for the reference).
    fn expert_problem(&self, g: usize, first: usize, m: usize) -> HostProblem {
        let (row, cols) = (self.k / 2, self.k / 16);
        let (b, sfb, alpha) = &self.experts[g];
        HostProblem {
            m,
            n: self.n,
            k: self.k,
            a: self.a[first * row..(first + m) * row].to_vec(),
            sfa: self.sfa_plain[first * cols..(first + m) * cols].to_vec(),
            sfa_layout: Plain,
            b: b.clone(),
            sfb: sfb.clone(),
            sfb_layout: self.sfb_layout,
            alpha: *alpha,
        }
    }

    /// Checks `c` (`rows` rows of `ldc`) against the reference for `counts`: each expert's
    /// rows, and every row no expert owns still poisoned.
    fn check(&self, label: &str, counts: &[u32], c: &[f16], ldc: usize, tol: Tolerance) {
        let spans = self.clamp(counts);
        for (g, &(first, m)) in spans.iter().enumerate() {
            if m == 0 {
                continue;
            }
            let p = self.expert_problem(g, first, m);
            let got: Vec<f16> = (first..first + m)
                .flat_map(|r| c[r * ldc..r * ldc + self.n].iter().copied())
                .collect();
            let cmp = check(&format!("{label}/expert{g}"), &p, &got, tol);
            assert!(cmp.passed, "{label}: expert {g}: {} bad elements", cmp.bad);
        }
        let used: usize = spans.iter().map(|s| s.1).sum();
        for r in used..self.rows {
            let row = &c[r * ldc..r * ldc + self.n];
            assert!(
                row.iter().all(|x| x.to_bits() == POISON),
                "{label}: row {r} belongs to no expert but was written"
            );
        }
        for r in 0..self.rows {
            let pad = &c[r * ldc + self.n..(r + 1) * ldc];
            assert!(
                pad.iter().all(|x| x.to_bits() == POISON),
                "{label}: ldc padding written"
            );
        }
    }
}

/// The layer's buffers on one device.
struct DeviceLayer {
    a: CudaSlice<u8>,
    lda: usize,
    sfa: CudaSlice<u8>,
    b: Vec<(CudaSlice<u8>, CudaSlice<u8>, f32)>,
    c: CudaSlice<f16>,
    ldc: usize,
}

impl DeviceLayer {
    /// Uploads `layer`, A's rows padded by `lda_pad` bytes and C's by `ldc_pad` elements.
    fn upload(stream: &Arc<CudaStream>, layer: &Layer, lda_pad: usize, ldc_pad: usize) -> Self {
        let row = layer.k / 2;
        let lda = row + lda_pad;
        let mut a = Vec::with_capacity(layer.rows * lda);
        for r in 0..layer.rows {
            a.extend_from_slice(&layer.a[r * row..(r + 1) * row]);
            a.resize(a.len() + lda_pad, 0x77);
        }
        let mut pad = 0u8;
        let sfa = pack_scales(
            layer.sfa_layout,
            layer.rows,
            layer.k,
            &layer.sfa_plain,
            || {
                pad ^= 0x7F; // NaN codes in the padding: reading it would show
                pad
            },
        );
        let ldc = layer.n + ldc_pad;
        let nonempty = |v: Vec<u8>| if v.is_empty() { vec![0] } else { v };
        Self {
            a: stream.clone_htod(&nonempty(a)).unwrap(),
            lda,
            sfa: stream.clone_htod(&nonempty(sfa)).unwrap(),
            b: layer
                .experts
                .iter()
                .map(|(b, sfb, alpha)| {
                    (
                        stream.clone_htod(b).unwrap(),
                        stream.clone_htod(sfb).unwrap(),
                        *alpha,
                    )
                })
                .collect(),
            c: stream
                .clone_htod(&vec![f16::from_bits(POISON); (layer.rows * ldc).max(1)])
                .unwrap(),
            ldc,
        }
    }

    fn group<'a>(&'a mut self, layer: &Layer, sizes: GroupSizes<'a>) -> ContiguousGroup<'a> {
        ContiguousGroup {
            rows: layer.rows,
            n: layer.n,
            k: layer.k,
            a: DeviceInput::from(&self.a),
            lda: Some(self.lda),
            sfa: DeviceInput::from(&self.sfa),
            sfa_layout: layer.sfa_layout,
            c: DeviceOutput::from(&mut self.c),
            ldc: Some(self.ldc),
            experts: self
                .b
                .iter()
                .map(|(b, sfb, alpha)| ExpertWeights {
                    b: DeviceInput::from(b),
                    ldb: None,
                    sfb: DeviceInput::from(sfb),
                    sfb_layout: layer.sfb_layout,
                    alpha: *alpha,
                })
                .collect(),
            sizes,
        }
    }

    fn poison(&mut self, stream: &Arc<CudaStream>) {
        let len = self.c.len();
        stream
            .memcpy_htod(&vec![f16::from_bits(POISON); len], &mut self.c)
            .unwrap();
    }
}

/// Runs `layer` with `counts` (host or device sizes) and checks it.
fn run_contiguous(gpu: &Gpu, label: &str, layer: &Layer, counts: &[u32], device: bool, pad: bool) {
    let stream = &gpu.stream;
    let (lda_pad, ldc_pad) = if pad { (8, 5) } else { (0, 0) };
    let mut dl = DeviceLayer::upload(stream, layer, lda_pad, ldc_pad);
    let counts_dev = stream.clone_htod(counts).unwrap();
    let ldc = dl.ldc;
    {
        let sizes = if device {
            GroupSizes::Device(DeviceCounts::from_slice(&counts_dev))
        } else {
            GroupSizes::Host(counts.iter().map(|&c| c as usize).collect())
        };
        let group = dl.group(layer, sizes);
        gpu.gemm
            .run_contiguous(stream, &group)
            .expect("run_contiguous");
    }
    let c = stream.clone_dtoh(&dl.c).unwrap();
    stream.synchronize().unwrap();
    layer.check(label, counts, &c, ldc, tol_of(layer));
}

fn tol_of(_layer: &Layer) -> Tolerance {
    Tolerance::FullRange
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn contiguous_host_sizes() {
    let gpu = Gpu::new();
    let counts = [40u32, 0, 7, 1, 76, 0, 129, 3];
    for (i, (sfa, sfb, pad)) in [
        (Plain, Plain, false),
        (Blocked, Blocked, false),
        (Blocked, Plain, true),
    ]
    .into_iter()
    .enumerate()
    {
        let layer = Layer::new(
            100 + i as u64,
            300,
            200,
            272,
            8,
            Distribution::FullRange,
            sfa,
            sfb,
        );
        let label = format!(
            "contiguous-host/{sfa:?}-{sfb:?}{}",
            if pad { "-strided" } else { "" }
        );
        run_contiguous(&gpu, &label, &layer, &counts, false, pad);
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn contiguous_device_counts() {
    let gpu = Gpu::new();
    for (i, (counts, sfa)) in [
        (&[40u32, 0, 7, 1, 76, 0, 129, 3][..], Plain),
        (&[40, 0, 7, 1, 76, 0, 129, 3][..], Blocked),
        // Sums past the capacity: clamped, the last experts get fewer rows or none.
        (&[100, 50, 80, 30][..], Blocked),
        (&[0, 0, 0, 0][..], Plain),
        (&[u32::MAX, 5][..], Plain),
    ]
    .into_iter()
    .enumerate()
    {
        let layer = Layer::new(
            200 + i as u64,
            256,
            384,
            256,
            counts.len(),
            Distribution::FullRange,
            sfa,
            Blocked,
        );
        run_contiguous(
            &gpu,
            &format!("contiguous-device/{i}"),
            &layer,
            counts,
            true,
            i == 1,
        );
    }
}

/// The largest benchmark shape (G = 8, N = 4096, K = 7168) in the contiguous layout with
/// device counts: the MoE form on the shape the bench times.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn contiguous_device_counts_benchmark_shape() {
    let gpu = Gpu::new();
    let shape = &nvfp4::shapes::gpu_mode_benchmarks()[0];
    let counts: Vec<u32> = shape.problems.iter().map(|&(m, _, _)| m as u32).collect();
    let rows: usize = shape.problems.iter().map(|p| p.0).sum();
    let (_, n, k) = shape.problems[0];
    let layer = Layer::new(
        300,
        rows,
        n,
        k,
        counts.len(),
        Distribution::GpuMode,
        Blocked,
        Blocked,
    );
    let stream = &gpu.stream;
    let mut dl = DeviceLayer::upload(stream, &layer, 0, 0);
    let counts_dev = stream.clone_htod(&counts).unwrap();
    {
        let group = dl.group(
            &layer,
            GroupSizes::Device(DeviceCounts::from_slice(&counts_dev)),
        );
        gpu.gemm.run_contiguous(stream, &group).unwrap();
    }
    let c = stream.clone_dtoh(&dl.c).unwrap();
    stream.synchronize().unwrap();
    layer.check(
        "contiguous-device/bench0",
        &counts,
        &c,
        dl.ldc,
        Tolerance::GpuMode,
    );
}

/// 512 experts (the most one launch takes with device counts), small ones: the block-wide
/// scan of the counts over every thread of the CTA.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn contiguous_device_counts_max_groups() {
    let gpu = Gpu::new();
    let experts = nvfp4::moe::MAX_DEVICE_GROUPS;
    let mut rng = Rng::new(400);
    let counts: Vec<u32> = (0..experts).map(|_| rng.below(6) as u32).collect();
    let rows = counts.iter().map(|&c| c as usize).sum::<usize>() + 3;
    let layer = Layer::new(
        401,
        rows,
        72,
        64,
        experts,
        Distribution::FullRange,
        Blocked,
        Plain,
    );
    run_contiguous(&gpu, "contiguous-device/512", &layer, &counts, true, false);
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn per_group_device_counts() {
    let gpu = Gpu::new();
    let mut rng = Rng::new(500);
    // Capacities and counts: zero, one, seven, 40, 76, past the capacity (clamped).
    let caps = [64usize, 64, 128, 16, 80, 96, 40];
    let counts = [40u32, 0, 200, 7, 76, 1, 41];
    let ns = [128usize, 200, 64, 300, 129, 16, 256];
    let full: Vec<HostProblem> = caps
        .iter()
        .zip(ns)
        .map(|(&m, n)| problem(&mut rng, m, n, 528, Distribution::FullRange, Blocked, Plain))
        .collect();
    let mut dps: Vec<_> = full
        .iter()
        .map(|p| upload_on(&gpu.stream, p, Layout::default()))
        .collect();
    let counts_dev = gpu.stream.clone_htod(&counts).unwrap();
    {
        let group = problems(&mut dps);
        let dc = DeviceCounts::from_slice(&counts_dev);
        let plan = gpu
            .gemm
            .plan_device_counts(&gpu.stream, &group, &dc)
            .unwrap();
        assert!(plan.device_sizes());
        gpu.gemm.launch(&gpu.stream, &plan).unwrap();
    }
    gpu.stream.synchronize().unwrap();
    for (i, (p, dp)) in full.iter().zip(&dps).enumerate() {
        let m = (counts[i] as usize).min(p.m);
        let c = gpu.download(dp);
        check_prefix(&format!("per-group/{i}"), p, m, &c);
    }
}

/// The first `m` rows of `p` computed, the rest of its capacity still poisoned.
fn check_prefix(label: &str, p: &HostProblem, m: usize, c: &[f16]) {
    let sub = prefix_problem(p, m);
    if m > 0 {
        let cmp = check(label, &sub, &c[..m * p.n], Tolerance::FullRange);
        assert!(cmp.passed, "{label}: {} bad elements", cmp.bad);
    }
    assert!(
        c[m * p.n..p.m * p.n].iter().all(|x| x.to_bits() == POISON),
        "{label}: rows past the count were written"
    );
}

/// The problem of the first `m` rows of `p` (blocked scales repacked for the reference).
fn prefix_problem(p: &HostProblem, m: usize) -> HostProblem {
    let cols = p.k / 16;
    let sfa: Vec<u8> = (0..m * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            let off =
                kernels_gpu::layout::scale_offset(p.sfa_layout, r as u64, c as u64, p.k as u32);
            p.sfa[off as usize]
        })
        .collect();
    HostProblem {
        m,
        a: p.a[..m * p.k / 2].to_vec(),
        sfa,
        sfa_layout: Plain,
        b: p.b.clone(),
        sfb: p.sfb.clone(),
        ..*p
    }
}

/// Device address of a cudarc buffer.
fn addr<T>(stream: &Arc<CudaStream>, buf: &CudaSlice<T>) -> u64 {
    buf.device_ptr(stream).0
}

/// One captured launch, replayed with new counts written to the device between replays:
/// every replay checked (contiguous and per-group forms). The plans take C and the counts as
/// raw addresses (as from PyTorch), so the test can rewrite them between replays.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn cuda_graph_replays_with_changing_device_counts() {
    let gpu = Gpu::new();
    let stream = gpu.ctx.new_stream().unwrap();
    let replays: [&[u32]; 5] = [
        &[40, 0, 7, 1, 76, 0],
        &[0, 0, 0, 0, 0, 0],
        &[1, 200, 0, 0, 0, 55],
        &[300, 300, 300, 300, 300, 300], // clamped to the capacity
        &[76, 40, 7, 1, 0, 128],
    ];
    let layer = Layer::new(
        600,
        256,
        264,
        320,
        6,
        Distribution::FullRange,
        Blocked,
        Blocked,
    );
    let mut dl = DeviceLayer::upload(&stream, &layer, 0, 0);
    let mut counts_dev = stream.clone_htod(replays[0]).unwrap();
    let mut rng = Rng::new(601);
    let full: Vec<HostProblem> = (0..6)
        .map(|_| {
            problem(
                &mut rng,
                96,
                136,
                320,
                Distribution::FullRange,
                Plain,
                Blocked,
            )
        })
        .collect();
    let mut dps: Vec<_> = full
        .iter()
        .map(|p| upload_on(&stream, p, Layout::default()))
        .collect();
    let c_addr = addr(&stream, &dl.c);
    let c_bytes = dl.c.num_bytes();
    let counts_addr = addr(&stream, &counts_dev);
    let dp_c: Vec<(u64, usize)> = dps
        .iter()
        .map(|dp| (addr(&stream, &dp.c), dp.c.num_bytes()))
        .collect();
    stream.synchronize().unwrap();

    // SAFETY (every from_raw below): the buffers are owned by this test and outlive the
    // plans and the graph; they are rewritten only between replays, after synchronising.
    let raw = |a: u64, len: usize| unsafe { DeviceInput::from_raw(a, len) };
    let group = ContiguousGroup {
        rows: layer.rows,
        n: layer.n,
        k: layer.k,
        a: raw(addr(&stream, &dl.a), dl.a.len()),
        lda: Some(dl.lda),
        sfa: raw(addr(&stream, &dl.sfa), dl.sfa.len()),
        sfa_layout: layer.sfa_layout,
        c: unsafe { DeviceOutput::from_raw(c_addr, c_bytes) },
        ldc: Some(dl.ldc),
        experts: dl
            .b
            .iter()
            .map(|(b, sfb, alpha)| ExpertWeights {
                b: raw(addr(&stream, b), b.len()),
                ldb: None,
                sfb: raw(addr(&stream, sfb), sfb.len()),
                sfb_layout: layer.sfb_layout,
                alpha: *alpha,
            })
            .collect(),
        sizes: GroupSizes::Device(unsafe { DeviceCounts::from_raw(counts_addr, replays[0].len()) }),
    };
    let per_group: Vec<Problem<'static>> = full
        .iter()
        .zip(&dps)
        .zip(&dp_c)
        .map(|((p, dp), &(c, len))| Problem {
            m: p.m,
            n: p.n,
            k: p.k,
            a: raw(addr(&stream, &dp.a), dp.a.len()),
            lda: Some(dp.lda),
            sfa: raw(addr(&stream, &dp.sfa), dp.sfa.len()),
            sfa_layout: dp.sfa_layout,
            b: raw(addr(&stream, &dp.b), dp.b.len()),
            ldb: Some(dp.ldb),
            sfb: raw(addr(&stream, &dp.sfb), dp.sfb.len()),
            sfb_layout: dp.sfb_layout,
            c: unsafe { DeviceOutput::from_raw(c, len) },
            ldc: Some(dp.ldc),
            alpha: p.alpha,
        })
        .collect();
    let counts_p = unsafe { DeviceCounts::from_raw(counts_addr, replays[0].len()) };
    let plan_c = gpu.gemm.plan_contiguous(&stream, &group).unwrap();
    let plan_p = gpu
        .gemm
        .plan_device_counts(&stream, &per_group, &counts_p)
        .unwrap();
    stream.synchronize().unwrap();
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let l1 = gpu.gemm.launch(&stream, &plan_c);
    let l2 = gpu.gemm.launch(&stream, &plan_p);
    let graph = stream.end_capture(CUgraphInstantiate_flags(0));
    l1.expect("contiguous launch while capturing");
    l2.expect("per-group launch while capturing");
    let graph = graph.expect("end capture").expect("a graph");
    for (r, counts) in replays.iter().enumerate() {
        // New counts and fresh poison, written on the stream outside the graph.
        stream.memcpy_htod(*counts, &mut counts_dev).unwrap();
        dl.poison(&stream);
        for dp in dps.iter_mut() {
            let len = dp.c.len();
            stream
                .memcpy_htod(&vec![f16::from_bits(POISON); len], &mut dp.c)
                .unwrap();
        }
        graph.launch().unwrap();
        stream.synchronize().unwrap();
        let c = stream.clone_dtoh(&dl.c).unwrap();
        stream.synchronize().unwrap();
        layer.check(
            &format!("graph/contiguous/replay{r}"),
            counts,
            &c,
            dl.ldc,
            Tolerance::FullRange,
        );
        for (i, (p, dp)) in full.iter().zip(&dps).enumerate() {
            let m = (counts[i] as usize).min(p.m);
            let c = stream.clone_dtoh(&dp.c).unwrap();
            stream.synchronize().unwrap();
            check_prefix(&format!("graph/per-group/replay{r}/{i}"), p, m, &c);
        }
    }
    drop(graph);
    drop(plan_p);
    drop(plan_c);
}

/// Expert parallelism: the experts of one layer split over every GPU of the machine, one
/// `GroupedGemm` per device, each on its own host thread; every expert checked.
#[test]
#[ignore = "needs two or more CUDA GPUs; run with --ignored on a multi-GPU machine"]
fn multi_gpu_expert_parallel() {
    let devices = CudaContext::device_count().expect("CUDA driver") as usize;
    assert!(
        devices >= 2,
        "this test needs two or more GPUs and found {devices}: it did not run (skip it with \
         --skip multi_gpu on a single-GPU machine)"
    );
    let layer = Layer::new(
        700,
        512,
        640,
        1024,
        16,
        Distribution::FullRange,
        Blocked,
        Blocked,
    );
    let counts: Vec<u32> = vec![40, 0, 7, 1, 76, 33, 64, 12, 100, 0, 5, 50, 60, 20, 30, 14];
    let spans = layer.clamp(&counts);
    let per_device = layer.experts.len().div_ceil(devices);
    let results: Vec<(usize, Vec<f16>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..devices)
            .map(|d| {
                let layer = &layer;
                let spans = &spans;
                s.spawn(move || {
                    let ctx = CudaContext::new(d).expect("device");
                    let gemm = GroupedGemm::new(ctx.clone()).expect("kernels");
                    let stream = ctx.new_stream().unwrap();
                    let experts: Vec<usize> =
                        (d * per_device..((d + 1) * per_device).min(layer.experts.len())).collect();
                    // This device's experts as per-group problems (host sizes).
                    let mut out = Vec::new();
                    let ps: Vec<HostProblem> = experts
                        .iter()
                        .map(|&g| layer.expert_problem(g, spans[g].0, spans[g].1))
                        .collect();
                    let mut dps: Vec<_> = ps
                        .iter()
                        .map(|p| upload_on(&stream, p, Layout::default()))
                        .collect();
                    {
                        let group = problems(&mut dps);
                        gemm.run(&stream, &group).expect("run");
                    }
                    for (&g, dp) in experts.iter().zip(&dps) {
                        let c = stream.clone_dtoh(&dp.c).unwrap();
                        out.push((g, c));
                    }
                    stream.synchronize().unwrap();
                    eprintln!(
                        "device {d} ({}): experts {experts:?}",
                        ctx.name().unwrap_or_default()
                    );
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(results.len(), layer.experts.len());
    for (g, c) in results {
        let (first, m) = spans[g];
        if m == 0 {
            continue;
        }
        let p = layer.expert_problem(g, first, m);
        let cmp = check(
            &format!("multi-gpu/expert{g}"),
            &p,
            &c[..m * layer.n],
            Tolerance::FullRange,
        );
        assert!(cmp.passed, "expert {g}: {} bad elements", cmp.bad);
    }
}

/// Validation of the MoE forms needs no GPU for these errors; run here on a GPU so that the
/// device path's context checks run too.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn device_counts_errors_launch_nothing() {
    let gpu = Gpu::new();
    let layer = Layer::new(800, 64, 64, 64, 3, Distribution::GpuMode, Plain, Plain);
    let mut dl = DeviceLayer::upload(&gpu.stream, &layer, 0, 0);
    let short = gpu.stream.clone_htod(&[1u32, 2]).unwrap();
    let group = dl.group(&layer, GroupSizes::Device(DeviceCounts::from_slice(&short)));
    let err = gpu.gemm.plan_contiguous(&gpu.stream, &group).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidGroup {
                field: "counts",
                ..
            }
        ),
        "{err}"
    );
}
