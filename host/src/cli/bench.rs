//! `nvfp4 bench`: correctness-checked timings of the grouped GEMM against the fp16 floor and
//! cuBLAS (GPU), or the CPU reference on reduced shapes (no GPU).

use super::args::BenchOpts;
use super::device;
use super::gpu::{self, AnyResult, CublasGroup, DeviceGroup, Fp16Rate};
use super::json::Json;
use super::util::{
    ErrorAccumulator, ErrorSummary, Progress, Stats, Table, describe, fmt_err, fmt_opt, geomean,
    problems_json,
};
use nvfp4::cudarc::cublas::CudaBlas;
use nvfp4::cudarc::driver::{CudaContext, CudaStream};
use nvfp4::r#gen::{self, Distribution};
use nvfp4::reference::{self, Tolerance};
use nvfp4::shapes::GroupShape;
use nvfp4::validate::{ProblemSpec, Span};
use nvfp4::{Activation, GemmTypes, GroupedGemm, HostProblem, OutputType, ScaleLayout, f16};
use std::sync::Arc;
use std::time::Instant;

/// Launches (ours and cuBLAS) before the timed iterations: JIT, cuBLAS heuristics and
/// workspace, clocks.
const WARMUP: usize = 3;

/// The reduction of the CPU path: N and K of every problem divided by this.
const CPU_DIVISOR: usize = 8;
/// Wall-clock repetitions of the CPU reference per shape (median reported).
const CPU_REPS: usize = 3;

fn layout_name(l: ScaleLayout) -> &'static str {
    match l {
        ScaleLayout::Plain => "plain",
        ScaleLayout::Blocked => "blocked",
    }
}

/// The bench's scale layouts: one name when both operands share it, else `a/b`.
fn layouts_name([a, b]: [ScaleLayout; 2]) -> String {
    if a == b {
        layout_name(a).to_string()
    } else {
        format!("{}/{}", layout_name(a), layout_name(b))
    }
}

/// The reference outputs of a group: exact f64 values and the sums of |terms| the
/// full-range tolerance needs.
struct Expected {
    want: Vec<Vec<f64>>,
    abs: Vec<Vec<f64>>,
}

fn expected(host: &[HostProblem]) -> Expected {
    let (want, abs) = host.iter().map(reference::gemm_with_abs).unzip();
    Expected { want, abs }
}

/// Compares a group's outputs with the reference under the full-range bound for K = the
/// shape's largest K (a looser bound for the problems with smaller K, exact for the benchmark
/// shapes, whose K is uniform).
fn check_group(got: &[Vec<f16>], exp: &Expected, k_max: usize, count_poison: bool) -> ErrorSummary {
    let mut acc = ErrorAccumulator::default();
    for ((g, w), a) in got.iter().zip(&exp.want).zip(&exp.abs) {
        let c = reference::compare_k(g, w, Some(a), k_max, Tolerance::FullRange);
        let unwritten = if count_poison { gpu::unwritten(g) } else { 0 };
        acc.add(g, w, &c, unwritten);
    }
    acc.finish()
}

/// One shape's results on the GPU.
struct GpuRow {
    shape: GroupShape,
    tiles: u32,
    grid: u32,
    ours: Stats,
    ours_check: ErrorSummary,
    /// The W4A16 kernels on the same problems with A dequantized to fp16 / bf16 (same values,
    /// same reference): fp16 activations first, then bf16.
    w4a16: Vec<(Activation, Stats, ErrorSummary)>,
    cublas: Option<(Stats, ErrorSummary)>,
}

impl GpuRow {
    fn tflops(&self, us: f64) -> f64 {
        self.shape.flops() / (us * 1e-6) / 1e12
    }
    fn floor_us(&self, rate: Option<&Fp16Rate>) -> Option<f64> {
        rate.map(|r| self.shape.flops() / (r.tflops * 1e12) * 1e6)
    }
    fn ratio_to_floor(&self, rate: Option<&Fp16Rate>) -> Option<f64> {
        self.floor_us(rate).map(|f| self.ours.median / f)
    }
    fn speedup(&self) -> Option<f64> {
        self.cublas
            .as_ref()
            .map(|(s, _)| s.median / self.ours.median)
    }
}

/// The GPU benchmark. Returns whether every check passed.
pub fn run_gpu(ctx: Arc<CudaContext>, opts: &BenchOpts, progress: &Progress) -> AnyResult<bool> {
    let stream = ctx.default_stream();
    let name = ctx.name()?;
    let (major, minor) = ctx.compute_capability()?;
    progress.step("loading the kernels...");
    let gemm = device::load_gemm_for(ctx.clone(), &opts.common)?;
    println!(
        "inputs: full-range FP4 codes and E4M3 scales 2^-6..2, {} scales, seed {:#x} (+ shape index); \
         {} timed iterations after {WARMUP} warm-up, L2 flushed ({} MiB memset) before each",
        layouts_name(opts.scales),
        opts.common.seed,
        opts.iters,
        gpu::FLUSH_BYTES >> 20
    );

    let blas = if device::cublas_present() {
        match device::quietly(|| CudaBlas::new(stream.clone())) {
            Ok(Ok(b)) => Some(b),
            Ok(Err(e)) => {
                println!("cuBLAS: handle creation failed ({e}); no cuBLAS baseline or fp16 floor");
                None
            }
            Err(p) => {
                println!("cuBLAS: could not be used ({p}); no cuBLAS baseline or fp16 floor");
                None
            }
        }
    } else {
        println!("cuBLAS: libcublas not found; no cuBLAS baseline or fp16 floor");
        None
    };
    let rate = match &blas {
        Some(blas) => {
            progress.step("measuring the fp16 tensor-core rate (cuBLAS 8192^3)...");
            let r = gpu::fp16_rate(&stream, blas)?;
            println!(
                "fp16 rate: {:.1} TFLOP/s ({}^3 in {:.1} us median; {})",
                r.tflops,
                r.size,
                r.stats_us.median,
                gpu::FP16_METHOD
            );
            Some(r)
        }
        None => None,
    };

    let mut flush = stream.alloc_zeros::<u8>(gpu::FLUSH_BYTES)?;
    let mut rows = Vec::new();
    for (i, shape) in opts.shapes.iter().enumerate() {
        let seed = opts.common.seed.wrapping_add(i as u64);
        rows.push(bench_shape_gpu(
            &gemm,
            &stream,
            blas.as_ref(),
            &mut flush,
            shape,
            seed,
            opts,
            progress,
        )?);
    }
    drop(flush);

    print_gpu_tables(&rows, rate.as_ref());
    let ratios: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.ratio_to_floor(rate.as_ref()))
        .collect();
    let speedups: Vec<f64> = rows.iter().filter_map(GpuRow::speedup).collect();
    let g_ratio = (ratios.len() == rows.len())
        .then(|| geomean(&ratios))
        .flatten();
    let g_speedup = (speedups.len() == rows.len())
        .then(|| geomean(&speedups))
        .flatten();
    println!(
        "geomean: {} x fp16 floor, {} x speedup vs cuBLAS fp16",
        fmt_opt(g_ratio, 2),
        fmt_opt(g_speedup, 2)
    );
    let passed = rows
        .iter()
        .all(|r| r.ours_check.passed && r.cublas.as_ref().is_none_or(|(_, c)| c.passed));
    if !passed {
        println!("CHECK FAILED: see the correctness table");
    }

    if let Some(path) = &opts.json {
        let doc = Json::obj([
            ("tool", Json::str("nvfp4 bench")),
            ("mode", Json::str("gpu")),
            (
                "device",
                Json::obj([
                    ("name", Json::str(name)),
                    ("compute_capability", Json::str(format!("{major}.{minor}"))),
                    ("sm_count", Json::int(gemm.sm_count())),
                    ("pair_clusters", Json::int(gemm.pair_clusters())),
                ]),
            ),
            (
                "kernel",
                Json::obj([
                    ("name", Json::str(gemm.kernel_name())),
                    ("ptx_arch", Json::str(gemm.ptx_arch())),
                    ("ctas_per_sm", Json::int(gemm.ctas_per_sm())),
                    (
                        "ctas_per_sm_w4a16",
                        Json::Arr(vec![
                            Json::int(gemm.ctas_per_sm_for(Activation::F16)),
                            Json::int(gemm.ctas_per_sm_for(Activation::Bf16)),
                        ]),
                    ),
                    ("path", Json::str(format!("{:?}", gemm.path()))),
                    ("portable_requested", Json::Bool(opts.common.portable)),
                    ("weights_by_tma", Json::Bool(gemm.weights_by_tma())),
                    ("blocked_k", Json::Bool(gemm.blocked_k())),
                    ("one_per_sm_deep", Json::Bool(gemm.one_per_sm_deep())),
                    ("scale_groups", Json::Bool(gemm.scale_groups())),
                    ("dynamic_units", Json::Bool(gemm.dynamic_units())),
                    ("pair_tiles", Json::str(format!("{:?}", gemm.pair_tiles()))),
                    (
                        "token_pass",
                        Json::str(format!("{:?}", gemm.token_dequant())),
                    ),
                    ("split_k", Json::str(format!("{:?}", gemm.split_k()))),
                ]),
            ),
            (
                "fp16",
                match &rate {
                    Some(r) => Json::obj([
                        ("tflops", Json::Num(r.tflops)),
                        ("gemm_us", r.stats_us.json()),
                        ("method", Json::str(gpu::FP16_METHOD)),
                    ]),
                    None => Json::Null,
                },
            ),
            (
                "settings",
                Json::obj([
                    ("iters", Json::int(opts.iters as u64)),
                    ("warmup", Json::int(WARMUP as u64)),
                    ("quick", Json::Bool(opts.quick)),
                    ("seed", Json::int(opts.common.seed)),
                    ("scales", Json::str(layouts_name(opts.scales))),
                    ("distribution", Json::str("full_range")),
                    ("l2_flush_bytes", Json::int(gpu::FLUSH_BYTES as u64)),
                    (
                        "timing",
                        Json::str("CUDA events around the launch only, microseconds"),
                    ),
                ]),
            ),
            (
                "shapes",
                Json::Arr(
                    rows.iter()
                        .map(|r| gpu_row_json(r, rate.as_ref()))
                        .collect(),
                ),
            ),
            (
                "geomean",
                Json::obj([
                    ("ratio_to_fp16_floor", Json::opt_num(g_ratio)),
                    ("speedup_vs_cublas", Json::opt_num(g_speedup)),
                ]),
            ),
            ("passed", Json::Bool(passed)),
        ]);
        std::fs::write(path, doc.render())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(passed)
}

/// `WARMUP` untimed calls of `enqueue`, then `iters` timed ones ([`gpu::time_events`]: CUDA
/// events, L2 flushed before each).
fn time_warm(
    stream: &Arc<CudaStream>,
    flush: &mut nvfp4::cudarc::driver::CudaSlice<u8>,
    iters: usize,
    mut enqueue: impl FnMut() -> AnyResult<()>,
) -> AnyResult<Stats> {
    for _ in 0..WARMUP {
        enqueue()?;
    }
    gpu::time_events(stream, flush, iters, enqueue)
}

#[allow(clippy::too_many_arguments)]
fn bench_shape_gpu(
    gemm: &GroupedGemm,
    stream: &Arc<CudaStream>,
    blas: Option<&CudaBlas>,
    flush: &mut nvfp4::cudarc::driver::CudaSlice<u8>,
    shape: &GroupShape,
    seed: u64,
    opts: &BenchOpts,
    progress: &Progress,
) -> AnyResult<GpuRow> {
    let label = format!("{} ({})", shape.name, describe(&shape.problems));
    progress.step(format!("{label}: generating..."));
    let host = r#gen::group(
        seed,
        shape,
        Distribution::FullRange,
        opts.scales[0],
        opts.scales[1],
    );
    progress.step(format!("{label}: reference..."));
    let exp = expected(&host);
    let k_max = shape.problems.iter().map(|p| p.2).max().unwrap_or(16);

    progress.step(format!("{label}: uploading and checking..."));
    let mut dev = DeviceGroup::upload(stream, &host)?;
    dev.poison(stream)?;
    let (tiles, grid) = {
        let problems = dev.problems();
        let plan = gemm.plan(stream, &problems)?;
        gemm.launch(stream, &plan)?;
        (plan.total_tiles(), gemm.plan_grid_size(&plan))
    };
    let got = dev.download(stream)?;
    let ours_check = check_group(&got, &exp, k_max, true);
    drop(got);

    progress.step(format!("{label}: timing ({} iterations)...", opts.iters));
    let ours = {
        let problems = dev.problems();
        let plan = gemm.plan(stream, &problems)?;
        time_warm(
            stream,
            flush,
            opts.iters,
            || Ok(gemm.launch(stream, &plan)?),
        )?
    };
    // W4A16: the same problems with A as 16-bit values (exactly the dequantized FP4 A), so the
    // same reference checks them.
    progress.step(format!("{label}: W4A16 (fp16 and bf16 activations)..."));
    dev.upload_a16(stream, &host)?;
    let mut w4a16 = Vec::new();
    for activation in [Activation::F16, Activation::Bf16] {
        let types = GemmTypes {
            activation,
            output: OutputType::F16,
        };
        dev.poison(stream)?;
        {
            let problems = dev.problems_a16(activation);
            gemm.run_typed(stream, &problems, types)?;
        }
        let got = dev.download(stream)?;
        let check = check_group(&got, &exp, k_max, true);
        drop(got);
        let stats = {
            let problems = dev.problems_a16(activation);
            let plan = gemm.plan_typed(stream, &problems, types)?;
            time_warm(
                stream,
                flush,
                opts.iters,
                || Ok(gemm.launch(stream, &plan)?),
            )?
        };
        w4a16.push((activation, stats, check));
    }
    drop(dev);

    let cublas = match blas {
        None => None,
        Some(blas) => {
            progress.step(format!(
                "{label}: cuBLAS fp16 (dequantizing, checking, timing)..."
            ));
            let mut cb = CublasGroup::upload(stream, &host)?;
            cb.enqueue(blas)?;
            let got = cb.download(stream)?;
            let check = check_group(&got, &exp, k_max, false);
            drop(got);
            let stats = time_warm(stream, flush, opts.iters, || cb.enqueue(blas))?;
            Some((stats, check))
        }
    };
    Ok(GpuRow {
        shape: shape.clone(),
        tiles,
        grid,
        ours,
        ours_check,
        w4a16,
        cublas,
    })
}

/// Short name of an activation kind for tables and JSON keys.
fn act_name(a: Activation) -> &'static str {
    match a {
        Activation::Nvfp4 => "nvfp4",
        Activation::F16 => "f16",
        Activation::Bf16 => "bf16",
    }
}

fn print_gpu_tables(rows: &[GpuRow], rate: Option<&Fp16Rate>) {
    let mut t = Table::new(&[
        "shape",
        "problems",
        "tiles",
        "CTAs",
        "ours us",
        "min",
        "max",
        "TFLOP/s",
        "fp16 floor us",
        "x floor",
        "cuBLAS us",
        "speedup",
        "W4A16 f16 us",
        "W4A16 bf16 us",
    ])
    .left_columns(2);
    for r in rows {
        let w = |a: Activation| {
            fmt_opt(
                r.w4a16
                    .iter()
                    .find(|(x, _, _)| *x == a)
                    .map(|(_, s, _)| s.median),
                1,
            )
        };
        t.row(vec![
            r.shape.name.clone(),
            describe(&r.shape.problems),
            r.tiles.to_string(),
            r.grid.to_string(),
            format!("{:.1}", r.ours.median),
            format!("{:.1}", r.ours.min),
            format!("{:.1}", r.ours.max),
            format!("{:.1}", r.tflops(r.ours.median)),
            fmt_opt(r.floor_us(rate), 1),
            fmt_opt(r.ratio_to_floor(rate), 2),
            fmt_opt(r.cublas.as_ref().map(|(s, _)| s.median), 1),
            fmt_opt(r.speedup(), 2),
            w(Activation::F16),
            w(Activation::Bf16),
        ]);
    }
    println!("\ntiming (median over iterations, CUDA events, L2 flushed):");
    print!("{}", t.render());

    let mut c = Table::new(&[
        "shape",
        "who",
        "check",
        "bad",
        "unwritten",
        "max abs",
        "max rel",
        "rel frob",
    ])
    .left_columns(2);
    for r in rows {
        let mut line = |who: &str, s: &ErrorSummary, poison: bool| {
            c.row(vec![
                r.shape.name.clone(),
                who.into(),
                s.verdict().into(),
                s.bad.to_string(),
                if poison {
                    s.unwritten.to_string()
                } else {
                    "-".into()
                },
                fmt_err(s.max_abs),
                fmt_err(s.max_rel),
                fmt_err(s.rel_frobenius),
            ]);
        };
        line("ours", &r.ours_check, true);
        for (a, _, s) in &r.w4a16 {
            line(&format!("W4A16 {}", act_name(*a)), s, true);
        }
        if let Some((_, s)) = &r.cublas {
            line("cuBLAS", s, false);
        }
    }
    println!("\ncorrectness vs the f64 reference (full-range tolerance, K = the shape's largest):");
    print!("{}", c.render());
}

fn gpu_row_json(r: &GpuRow, rate: Option<&Fp16Rate>) -> Json {
    Json::obj([
        ("name", Json::str(r.shape.name.clone())),
        ("problems", problems_json(&r.shape.problems)),
        ("flops", Json::Num(r.shape.flops())),
        ("tiles", Json::int(r.tiles)),
        ("ctas", Json::int(r.grid)),
        (
            "ours",
            Json::obj([
                ("us", r.ours.json()),
                ("tflops", Json::Num(r.tflops(r.ours.median))),
                ("check", r.ours_check.json()),
            ]),
        ),
        ("fp16_floor_us", Json::opt_num(r.floor_us(rate))),
        ("ratio_to_fp16_floor", Json::opt_num(r.ratio_to_floor(rate))),
        (
            "cublas_fp16",
            match &r.cublas {
                Some((s, c)) => Json::obj([
                    ("us", s.json()),
                    ("tflops", Json::Num(r.tflops(s.median))),
                    ("check", c.json()),
                ]),
                None => Json::Null,
            },
        ),
        ("speedup_vs_cublas", Json::opt_num(r.speedup())),
        (
            "w4a16",
            Json::obj(r.w4a16.iter().map(|(a, s, c)| {
                (
                    act_name(*a),
                    Json::obj([
                        ("us", s.json()),
                        ("tflops", Json::Num(r.tflops(s.median))),
                        ("check", c.json()),
                    ]),
                )
            })),
        ),
    ])
}

/// `shape` with N and K divided by `d` (K rounded up to a multiple of 16, N at least 1 when
/// it was nonzero), named `<name>/d`.
pub fn reduce(shape: &GroupShape, d: usize) -> GroupShape {
    let problems = shape
        .problems
        .iter()
        .map(|&(m, n, k)| {
            let n = if n == 0 { 0 } else { n.div_ceil(d) };
            let k = (k / d).div_ceil(16).max(1) * 16;
            (m, n, k)
        })
        .collect();
    GroupShape {
        name: format!("{}/{d}", shape.name),
        problems,
    }
}

/// Specs for a group at made-up, disjoint, 256-aligned addresses: validation and packing
/// only look at the numbers, so this measures them without a GPU.
fn fake_specs(shape: &GroupShape, [la, lb]: [ScaleLayout; 2]) -> Vec<ProblemSpec> {
    let mut next: u64 = 1 << 20;
    let mut span = |len: u64| {
        let s = Span::new(next, len as usize);
        next += len.div_ceil(256).max(1) * 256;
        s
    };
    shape
        .problems
        .iter()
        .map(|&(m, n, k)| {
            let (m64, n64) = (m as u64, n as u64);
            let scale = |layout, rows| kernels_gpu::layout::scale_len(layout, rows, k as u32);
            ProblemSpec {
                m,
                n,
                k,
                a: span(m64 * k as u64 / 2),
                lda: None,
                sfa: span(scale(la, m64)),
                sfa_layout: la,
                b: span(n64 * k as u64 / 2),
                ldb: None,
                sfb: span(scale(lb, n64)),
                sfb_layout: lb,
                c: span(m64 * n64 * 2),
                ldc: None,
                alpha: 1.0,
            }
        })
        .collect()
}

/// The CPU path: the f64 reference on reduced shapes, wall-clock timed, plus validation and
/// table packing of the full-size shapes. Returns whether every output was finite (the
/// full-range inputs keep them finite).
pub fn run_cpu(opts: &BenchOpts, why: &str, progress: &Progress) -> AnyResult<bool> {
    let reps = if opts.quick { 1 } else { CPU_REPS };
    println!(
        "CPU reference path: shapes with N and K divided by {CPU_DIVISOR} (K rounded up to a \
         multiple of 16); the f64 reference timed by wall clock, median of {reps}; {} threads",
        rayon::current_num_threads()
    );
    println!(
        "validation + problem-table packing (nvfp4::table::pack, the portable kernel's tiles) is \
         timed on the full-size shapes; the kernels, their W4A16 rows and cuBLAS run only on a GPU"
    );
    if opts.common.portable {
        println!("--portable: ignored on the CPU path");
    }
    let mut t = Table::new(&[
        "shape (reduced)",
        "problems",
        "GFLOP",
        "ref ms",
        "min",
        "max",
        "GFLOP/s",
        "finite",
        "full tiles",
        "pack us",
    ])
    .left_columns(2);
    let mut rows_json = Vec::new();
    let mut all_finite = true;
    for (i, full) in opts.shapes.iter().enumerate() {
        let shape = reduce(full, CPU_DIVISOR);
        let seed = opts.common.seed.wrapping_add(i as u64);
        let label = format!("{} ({})", shape.name, describe(&shape.problems));
        progress.step(format!("{label}: generating..."));
        let host = r#gen::group(
            seed,
            &shape,
            Distribution::FullRange,
            opts.scales[0],
            opts.scales[1],
        );
        progress.step(format!("{label}: reference x{reps}..."));
        let mut ms = Vec::new();
        let mut finite = true;
        for _ in 0..reps {
            let start = Instant::now();
            let out: Vec<Vec<f64>> = host.iter().map(reference::gemm).collect();
            ms.push(start.elapsed().as_secs_f64() * 1e3);
            finite &= out
                .iter()
                .all(|c| reference::round_f16(c).iter().all(|h| h.is_finite()));
        }
        all_finite &= finite;
        let ms = Stats::of(&ms).ok_or("no repetitions")?;

        let specs = fake_specs(full, opts.scales);
        let mut pack_us = Vec::new();
        let mut tiles = 0;
        for _ in 0..5 {
            let start = Instant::now();
            let table = nvfp4::table::pack(&specs)?;
            pack_us.push(start.elapsed().as_secs_f64() * 1e6);
            tiles = table.total_tiles;
        }
        let pack_us = Stats::of(&pack_us).ok_or("no repetitions")?;
        let gflop = shape.flops() / 1e9;
        t.row(vec![
            shape.name.clone(),
            describe(&shape.problems),
            format!("{gflop:.2}"),
            format!("{:.1}", ms.median),
            format!("{:.1}", ms.min),
            format!("{:.1}", ms.max),
            format!("{:.2}", gflop / (ms.median * 1e-3)),
            if finite { "yes".into() } else { "NO".into() },
            tiles.to_string(),
            format!("{:.1}", pack_us.median),
        ]);
        rows_json.push(Json::obj([
            ("name", Json::str(shape.name.clone())),
            ("full_name", Json::str(full.name.clone())),
            ("problems", problems_json(&shape.problems)),
            ("flops", Json::Num(shape.flops())),
            ("reference_ms", ms.json()),
            ("reference_gflops", Json::Num(gflop / (ms.median * 1e-3))),
            ("outputs_finite", Json::Bool(finite)),
            ("full_shape_tiles", Json::int(tiles)),
            ("full_shape_pack_us", pack_us.json()),
        ]));
    }
    println!("\nCPU reference (f64, rayon), reduced shapes:");
    print!("{}", t.render());
    if !all_finite {
        println!("CHECK FAILED: a full-range output was not finite in fp16");
    }
    if let Some(path) = &opts.json {
        let doc = Json::obj([
            ("tool", Json::str("nvfp4 bench")),
            ("mode", Json::str("cpu")),
            ("why_cpu", Json::str(why)),
            ("cpu_divisor", Json::int(CPU_DIVISOR as u64)),
            ("threads", Json::int(rayon::current_num_threads() as u64)),
            ("seed", Json::int(opts.common.seed)),
            ("scales", Json::str(layouts_name(opts.scales))),
            ("repetitions", Json::int(reps as u64)),
            ("shapes", Json::Arr(rows_json)),
            ("passed", Json::Bool(all_finite)),
        ]);
        std::fs::write(path, doc.render())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(all_finite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_divides_n_and_k() {
        let s = reduce(&nvfp4::shapes::gpu_mode_benchmarks()[0], 8);
        assert_eq!(s.name, "G8_N4096_K7168/8");
        assert!(s.problems.iter().all(|&(_, n, k)| n == 512 && k == 896));
        assert_eq!(s.problems[0].0, 80);
        let s = reduce(&GroupShape::new("x", &[0, 3], &[0, 17], &[16, 400]), 8);
        assert_eq!(s.problems, vec![(0, 0, 16), (3, 3, 64)]);
    }

    #[test]
    fn fake_specs_validate_and_pack() {
        for shape in nvfp4::shapes::gpu_mode_benchmarks()
            .iter()
            .chain(&nvfp4::shapes::ragged())
        {
            for (la, lb) in [
                (ScaleLayout::Plain, ScaleLayout::Plain),
                (ScaleLayout::Blocked, ScaleLayout::Blocked),
                (ScaleLayout::Plain, ScaleLayout::Blocked),
            ] {
                let t = nvfp4::table::pack(&fake_specs(shape, [la, lb])).unwrap();
                assert_eq!(t.descs.len(), shape.problems.len());
            }
        }
    }
}
