//! Shared helpers for the integration tests: GPU setup, uploads of [`HostProblem`]s with
//! optional row padding and a poisoned C, runs, downloads, and a one-line summary of each
//! comparison against the CPU reference.

use std::sync::Arc;

use nvfp4::cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use nvfp4::reference::{Comparison, Tolerance, compare_k, gemm_with_abs};
use nvfp4::{
    DeviceInput, DeviceOutput, GroupedGemm, HostProblem, KernelPath, Problem, ScaleLayout, f16,
};

/// Filler for the padding bytes of strided A / B rows: FP4 code 7 (6.0) in both nibbles, so
/// a kernel that reads past `k / 2` bytes of a row gets visibly wrong results.
pub const PAD_BYTE: u8 = 0x77;

/// Bit pattern C is filled with before a run: a negative NaN that no correct output takes
/// (finite inputs give finite outputs; NaN scales give a NaN the kernel computes, which is
/// not required to have this payload, but tests that look for poison use finite inputs).
pub const POISON: u16 = 0xFFFF;

/// The device, a stream and the loaded kernels.
pub struct Gpu {
    /// Context of device 0.
    pub ctx: Arc<CudaContext>,
    /// The stream everything runs on (the context's default stream).
    pub stream: Arc<CudaStream>,
    /// The grouped GEMM.
    pub gemm: GroupedGemm,
}

impl Gpu {
    /// Device 0, its default stream and a [`GroupedGemm`]; prints which device and PTX.
    ///
    /// # Panics
    /// Without a CUDA driver or device (the GPU tests are `#[ignore]`d for that reason).
    pub fn new() -> Self {
        let ctx = CudaContext::new(0).expect("CUDA device 0 (these tests need a GPU)");
        Self::with_context(ctx)
    }

    /// [`Gpu::new`] on an existing context. The kernel path is the device's best
    /// ([`GroupedGemm::new`]) unless `NVFP4_PATH` says `portable` or `hopper`, so the same
    /// suite checks both paths on an H100 / H200 (`scripts/device-verify.sh` runs it twice).
    ///
    /// # Panics
    /// If the kernels cannot be loaded, or `NVFP4_PATH` holds anything else.
    pub fn with_context(ctx: Arc<CudaContext>) -> Self {
        let stream = ctx.default_stream();
        let gemm = match std::env::var("NVFP4_PATH").as_deref() {
            Err(_) | Ok("") | Ok("auto") => GroupedGemm::new(ctx.clone()),
            Ok("portable") => GroupedGemm::with_path(ctx.clone(), KernelPath::Portable),
            Ok("hopper") => GroupedGemm::with_path(ctx.clone(), KernelPath::Hopper),
            Ok(other) => panic!("NVFP4_PATH={other}: expected auto, portable or hopper"),
        }
        .expect("loading the NVFP4 kernels");
        let mut gemm = gemm;
        // NVFP4_TOKEN_DEQUANT=always|never|auto: the token pass for every NVFP4
        // group, for none, or by size (the default), so the suite can check each way.
        gemm.set_token_dequant(env_auto_always_never(
            "NVFP4_TOKEN_DEQUANT",
            [
                nvfp4::TokenDequant::Auto,
                nvfp4::TokenDequant::Always,
                nvfp4::TokenDequant::Never,
            ],
        ));
        // NVFP4_SPLIT_K=auto|off|N: tiles cut along K by size (the default), never, or every
        // tile into N K ranges, so the suite can check the cut tiles' combination.
        gemm.set_split_k(match std::env::var("NVFP4_SPLIT_K").as_deref() {
            Err(_) | Ok("") | Ok("auto") => nvfp4::SplitK::Auto,
            Ok("off") => nvfp4::SplitK::Off,
            Ok(n) => nvfp4::SplitK::Parts(n.parse().unwrap_or_else(|_| {
                panic!("NVFP4_SPLIT_K={n}: expected auto, off or a number of K ranges")
            })),
        });
        // NVFP4_WEIGHTS_TMA=on|off: the Hopper 16-bit launches read aligned weights by TMA
        // (the default) or always by cp.async, so the suite can check both kernels.
        gemm.set_weights_by_tma(env_on("NVFP4_WEIGHTS_TMA"));
        // NVFP4_BLOCKED_K=on|off: NVFP4 groups after the token pass run the Hopper path's
        // blocked-K-order kernel where every k allows it (the default) or always the
        // natural-order one, so the suite can check both.
        gemm.set_blocked_k(env_on("NVFP4_BLOCKED_K"));
        // NVFP4_ONE_PER_SM_DEEP=on|off: blocked-order launches of at most one tile an SM
        // run the 8-stage kernel (the default) or the 4-stage one, so the suite can check
        // both.
        gemm.set_one_per_sm_deep(env_on("NVFP4_ONE_PER_SM_DEEP"));
        // NVFP4_SCALE_GROUPS=on|off: blocked-order launches whose weight scales are all
        // plain, 16-byte aligned and `k` a multiple of 256 copy them four chunks at a time
        // (the default) or every chunk, so the suite can check both.
        gemm.set_scale_groups(env_on("NVFP4_SCALE_GROUPS"));
        // NVFP4_DYNAMIC_UNITS=on|off: `_wt` launches of more work units (whole tiles, parts
        // of tiles cut along K) than CTA slots take their later units from a counter, cut
        // tiles' parts largest first (the default), or every grid-th, so the suite can check
        // both.
        gemm.set_dynamic_units(env_on("NVFP4_DYNAMIC_UNITS"));
        // NVFP4_PAIR_TILES=auto|always|never: blocked-order launches of the 4-stage kernel
        // run the pair kernel (`_f16b_wt2`, `_f16b_wtsg2`) from two waves of 256-row tiles
        // (the default), whenever they have more tiles than SMs, or never, so the suite can
        // check each.
        gemm.set_pair_tiles(env_auto_always_never(
            "NVFP4_PAIR_TILES",
            [
                nvfp4::PairTiles::Auto,
                nvfp4::PairTiles::Always,
                nvfp4::PairTiles::Never,
            ],
        ));
        let (major, minor) = gemm.compute_capability();
        eprintln!(
            "device: {} (sm_{major}{minor}), {} SMs x {} CTAs (W4A16: {}), PTX {}, kernel {}, token pass {:?}, split-K {:?}, weights by TMA {}, blocked K {}, one-per-SM deep {}, scale groups {}, dynamic units {}, pair tiles {:?}",
            ctx.name().unwrap_or_else(|_| "?".into()),
            gemm.sm_count(),
            gemm.ctas_per_sm(),
            gemm.ctas_per_sm_for(nvfp4::Activation::F16),
            gemm.ptx_arch(),
            gemm.kernel_name(),
            gemm.token_dequant(),
            gemm.split_k(),
            gemm.weights_by_tma(),
            gemm.blocked_k(),
            gemm.one_per_sm_deep(),
            gemm.scale_groups(),
            gemm.dynamic_units(),
            gemm.pair_tiles()
        );
        Self { ctx, stream, gemm }
    }

    /// Uploads `p` with the row padding and C poison of `layout`.
    ///
    /// # Panics
    /// On a driver error.
    pub fn upload(&self, p: &HostProblem, layout: Layout) -> DeviceProblem {
        upload_on(&self.stream, p, layout)
    }

    /// [`Gpu::upload`] for each problem.
    pub fn upload_all(&self, ps: &[HostProblem], layout: Layout) -> Vec<DeviceProblem> {
        ps.iter().map(|p| self.upload(p, layout)).collect()
    }

    /// Runs the group in one launch (`GroupedGemm::run`) and waits for it.
    ///
    /// # Errors
    /// Whatever `run` or the synchronisation reports.
    pub fn run(&self, dps: &mut [DeviceProblem]) -> nvfp4::Result<()> {
        let problems = problems(dps);
        self.gemm.run(&self.stream, &problems)?;
        drop(problems);
        self.stream.synchronize()?;
        Ok(())
    }

    /// The whole C buffer of `dp` as raw fp16 bits, padding columns included.
    ///
    /// # Panics
    /// On a driver error.
    pub fn download_bits(&self, dp: &DeviceProblem) -> Vec<u16> {
        let c: Vec<f16> = self.stream.clone_dtoh(&dp.c).expect("download C");
        self.stream.synchronize().expect("synchronize");
        c.into_iter().map(f16::to_bits).collect()
    }

    /// C of `dp`: `m * n` values row-major (row stride removed).
    pub fn download(&self, dp: &DeviceProblem) -> Vec<f16> {
        let bits = self.download_bits(dp);
        (0..dp.m)
            .flat_map(|r| {
                bits[r * dp.ldc..r * dp.ldc + dp.n]
                    .iter()
                    .map(|&b| f16::from_bits(b))
            })
            .collect()
    }
}

impl Default for Gpu {
    fn default() -> Self {
        Self::new()
    }
}

/// How one problem is laid out on the device.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Extra bytes after each row of A (a multiple of 8), filled with [`PAD_BYTE`].
    pub lda_pad: usize,
    /// Extra bytes after each row of B (a multiple of 8), filled with [`PAD_BYTE`].
    pub ldb_pad: usize,
    /// Extra fp16 elements after each row of C.
    pub ldc_pad: usize,
    /// Bits C is filled with before the run.
    pub poison: u16,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            lda_pad: 0,
            ldb_pad: 0,
            ldc_pad: 0,
            poison: POISON,
        }
    }
}

/// One problem's operands on the device.
pub struct DeviceProblem {
    /// Rows of A and C.
    pub m: usize,
    /// Rows of B, columns of C.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Bytes between rows of A.
    pub lda: usize,
    /// Bytes between rows of B.
    pub ldb: usize,
    /// fp16 elements between rows of C.
    pub ldc: usize,
    /// A (at least one byte: zero-byte allocations are avoided).
    pub a: CudaSlice<u8>,
    /// A's scales.
    pub sfa: CudaSlice<u8>,
    /// Layout of `sfa`.
    pub sfa_layout: ScaleLayout,
    /// B.
    pub b: CudaSlice<u8>,
    /// B's scales.
    pub sfb: CudaSlice<u8>,
    /// Layout of `sfb`.
    pub sfb_layout: ScaleLayout,
    /// C, `max(m * ldc, 1)` elements.
    pub c: CudaSlice<f16>,
    /// Output factor.
    pub alpha: f32,
}

impl DeviceProblem {
    /// The problem as the library takes it, borrowing these buffers.
    pub fn problem(&mut self) -> Problem<'_> {
        Problem {
            m: self.m,
            n: self.n,
            k: self.k,
            a: DeviceInput::from(&self.a),
            lda: Some(self.lda),
            sfa: DeviceInput::from(&self.sfa),
            sfa_layout: self.sfa_layout,
            b: DeviceInput::from(&self.b),
            ldb: Some(self.ldb),
            sfb: DeviceInput::from(&self.sfb),
            sfb_layout: self.sfb_layout,
            c: DeviceOutput::from(&mut self.c),
            ldc: Some(self.ldc),
            alpha: self.alpha,
        }
    }
}

/// The problems of `dps`, borrowing their buffers.
pub fn problems(dps: &mut [DeviceProblem]) -> Vec<Problem<'_>> {
    dps.iter_mut().map(DeviceProblem::problem).collect()
}

/// Rows of `row_bytes` bytes from `src`, each followed by `pad` bytes of [`PAD_BYTE`].
fn padded_rows(src: &[u8], rows: usize, row_bytes: usize, pad: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * (row_bytes + pad));
    for r in 0..rows {
        out.extend_from_slice(&src[r * row_bytes..(r + 1) * row_bytes]);
        out.resize(out.len() + pad, PAD_BYTE);
    }
    out
}

fn upload_bytes(stream: &Arc<CudaStream>, bytes: &[u8]) -> CudaSlice<u8> {
    let bytes = if bytes.is_empty() { &[0u8][..] } else { bytes };
    stream.clone_htod(bytes).expect("upload")
}

/// Poisons the C buffers `outs` (`(address, elements)`; every byte 0xFF, i.e. [`POISON`]),
/// launches `plan`, waits, and returns each buffer's raw 16-bit values.
pub fn launch_poisoned(
    gpu: &Gpu,
    plan: &nvfp4::GroupPlan<'_>,
    outs: &[(u64, usize)],
) -> Vec<Vec<u16>> {
    gpu.stream.synchronize().unwrap();
    for &(addr, len) in outs {
        // SAFETY: addr .. + 2 * len is a C buffer the plan borrows, alive and idle.
        unsafe { nvfp4::cudarc::driver::result::memset_d8_sync(addr, 0xFF, 2 * len) }.unwrap();
    }
    gpu.gemm.launch(&gpu.stream, plan).expect("launch");
    gpu.stream.synchronize().unwrap();
    outs.iter()
        .map(|&(addr, len)| {
            let mut out = vec![f16::ZERO; len];
            // SAFETY: as above; the launch has finished.
            unsafe { nvfp4::cudarc::driver::result::memcpy_dtoh_sync(&mut out, addr) }.unwrap();
            out.iter().map(|x| x.to_bits()).collect()
        })
        .collect()
}

/// [`Gpu::upload`] on any stream.
///
/// # Panics
/// On a driver error, or if a pad is not a multiple of 8 bytes.
pub fn upload_on(stream: &Arc<CudaStream>, p: &HostProblem, layout: Layout) -> DeviceProblem {
    assert!(
        layout.lda_pad.is_multiple_of(8) && layout.ldb_pad.is_multiple_of(8),
        "row pads must keep 8-byte rows"
    );
    let row = p.k / 2;
    let (lda, ldb, ldc) = (
        row + layout.lda_pad,
        row + layout.ldb_pad,
        p.n + layout.ldc_pad,
    );
    let a = padded_rows(&p.a, p.m, row, layout.lda_pad);
    let b = padded_rows(&p.b, p.n, row, layout.ldb_pad);
    let c = vec![f16::from_bits(layout.poison); (p.m * ldc).max(1)];
    DeviceProblem {
        m: p.m,
        n: p.n,
        k: p.k,
        lda,
        ldb,
        ldc,
        a: upload_bytes(stream, &a),
        sfa: upload_bytes(stream, &p.sfa),
        sfa_layout: p.sfa_layout,
        b: upload_bytes(stream, &b),
        sfb: upload_bytes(stream, &p.sfb),
        sfb_layout: p.sfb_layout,
        c: stream.clone_htod(&c).expect("upload C"),
        alpha: p.alpha,
    }
}

/// Worst errors over a group.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// Problems compared.
    pub problems: usize,
    /// Failing elements over all problems.
    pub bad: usize,
    /// Largest absolute error.
    pub max_abs: f64,
    /// Largest relative error (over nonzero references).
    pub max_rel: f64,
    /// Largest per-problem relative Frobenius error.
    pub rel_frobenius: f64,
}

impl Summary {
    /// Whether every element passed.
    pub fn passed(&self) -> bool {
        self.bad == 0
    }
}

/// Compares `got` (`m * n` row-major) with the f64 reference of `p` under `tol` (with the
/// FullRange bound for this problem's K), printing one line.
pub fn check(label: &str, p: &HostProblem, got: &[f16], tol: Tolerance) -> Comparison {
    let (want, abs_sum) = gemm_with_abs(p);
    let c = compare_k(got, &want, Some(&abs_sum), p.k, tol);
    println!(
        "{label}: m={} n={} k={} alpha={} {:?}/{:?}: max_abs={:.3e} max_rel={:.3e} \
         rel_frob={:.3e} bad={} {}",
        p.m,
        p.n,
        p.k,
        p.alpha,
        p.sfa_layout,
        p.sfb_layout,
        c.max_abs,
        c.max_rel,
        c.rel_frobenius,
        c.bad,
        match c.first_bad {
            Some((i, g, w)) => format!("first bad at {i}: got {g} want {w}"),
            None => "ok".into(),
        }
    );
    c
}

/// [`check`] for each problem of a group; prints one summary line and returns it.
pub fn check_group(label: &str, ps: &[HostProblem], got: &[Vec<f16>], tol: Tolerance) -> Summary {
    assert_eq!(ps.len(), got.len(), "{label}: one output per problem");
    let mut s = Summary {
        problems: ps.len(),
        ..Summary::default()
    };
    for (i, (p, g)) in ps.iter().zip(got).enumerate() {
        let c = check(&format!("{label}[{i}]"), p, g, tol);
        s.bad += c.bad + usize::from(!c.passed && c.bad == 0);
        s.max_abs = s.max_abs.max(c.max_abs);
        s.max_rel = s.max_rel.max(c.max_rel);
        s.rel_frobenius = s.rel_frobenius.max(c.rel_frobenius);
    }
    println!(
        "{label}: {} problems, {:?}: worst max_abs={:.3e} max_rel={:.3e} rel_frob={:.3e}, bad={}",
        s.problems, tol, s.max_abs, s.max_rel, s.rel_frobenius, s.bad
    );
    s
}

/// Asserts that the error `err` matches a pattern (with an optional guard), printing it if
/// not: `assert_err!(err, Error::InvalidStride { problem: 0, field: "lda", .. })`.
#[macro_export]
macro_rules! assert_err {
    ($err:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {
        match $err {
            $pattern $(if $guard)? => {}
            ref other => panic!("unexpected error: {other:?}"),
        }
    };
}

/// A three-way setting of the suite read from the environment: `auto` (or unset, or empty),
/// `always` or `never`, as `[auto, always, never]` gives them.
///
/// # Panics
/// On any other value (so a misspelt setting cannot silently run the default).
fn env_auto_always_never<T>(name: &str, choices: [T; 3]) -> T {
    let [auto, always, never] = choices;
    match std::env::var(name).as_deref() {
        Err(_) | Ok("") | Ok("auto") => auto,
        Ok("always") => always,
        Ok("never") => never,
        Ok(other) => panic!("{name}={other}: expected auto, always or never"),
    }
}

/// A switch of the suite read from the environment: `on` (or unset, or empty) or `off`.
///
/// # Panics
/// On any other value.
fn env_on(name: &str) -> bool {
    match std::env::var(name).as_deref() {
        Err(_) | Ok("") | Ok("on") => true,
        Ok("off") => false,
        Ok(other) => panic!("{name}={other}: expected on or off"),
    }
}
