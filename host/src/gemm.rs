//! The grouped GEMM: problems on the device, the loaded kernel, plans and launches.

use crate::buffer::{DeviceInput, DeviceOutput};
use crate::problem::HostProblem;
use crate::ptx_module;
use crate::table::{self, PackedTable};
use crate::token_maps::{self, TokenMap};
use crate::validate::{self, ProblemSpec};
use crate::{Error, Result, ScaleLayout};
use cudarc::driver::sys::{CUfunction_attribute, CUstreamCaptureStatus as CaptureStatus};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    LaunchConfig, PushKernelArg,
};
use half::f16;
use kernels_gpu::kernels::{
    DEQUANT_TOKENS, GROUPED_GEMM_MMA, GROUPED_GEMM_MMA_BF16A, GROUPED_GEMM_MMA_F16A,
    GROUPED_GEMM_MMA_F16P, GROUPED_GEMM_WGMMA, GROUPED_GEMM_WGMMA_BF16A,
    GROUPED_GEMM_WGMMA_BF16A_WT, GROUPED_GEMM_WGMMA_F16A, GROUPED_GEMM_WGMMA_F16A_WT,
    GROUPED_GEMM_WGMMA_F16B_WT, GROUPED_GEMM_WGMMA_F16B_WT2, GROUPED_GEMM_WGMMA_F16B_WT8,
    GROUPED_GEMM_WGMMA_F16B_WT8SG, GROUPED_GEMM_WGMMA_F16B_WTSG, GROUPED_GEMM_WGMMA_F16B_WTSG2,
    KernelInfo,
};
pub use kernels_gpu::problem::Activation;
use kernels_gpu::problem::{
    FLAG_OUT_BF16, MODE_DYNAMIC, PAIR_COUNTER_BYTES, ProblemDesc, SizeMode, Split, TokenJob,
    split_counter_bytes, split_ws_bytes,
};
use kernels_gpu::tiling::CHUNK_K;
use std::collections::HashMap;
use std::sync::Arc;

/// Whether NVFP4 x NVFP4 groups (with host sizes) run as a token dequantization pass plus
/// an fp16-activation kernel (see [`GroupedGemm::plan`]) or on the path's NVFP4 kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TokenDequant {
    /// The pass when the group has at least [`TokenDequant::auto_min_macs`] multiply-adds
    /// (`sum m * n * k`; 3e9 on the Hopper path, 5e9 on the portable one), the NVFP4 kernel
    /// below: the pass costs a launch and a trip of the tokens through memory, which small
    /// groups do not win back.
    #[default]
    Auto,
    /// Always the pass.
    Always,
    /// Never the pass.
    Never,
}

impl TokenDequant {
    /// [`TokenDequant::Auto`]'s threshold on the portable path. On the H200 (PERF.md run 61)
    /// the pass gained 12-15% from 6.4e9 multiply-adds up and lost 1% at 3.2e9 (G2 N4096
    /// K1536); on the H100 it lost 4% there (run 69).
    pub const AUTO_MIN_MACS: u64 = 5_000_000_000;

    /// [`TokenDequant::Auto`]'s threshold on the Hopper path. On the H100 (PERF.md run 114)
    /// the pass and its GEMM took 28.6-28.7 us at 3.2e9 multiply-adds (G2 N4096 K1536)
    /// against 30.3 for the NVFP4 kernel, once the GEMM of a launch with at most one CTA an
    /// SM stopped being the pass's programmatic dependent (35.1 us before); from 6.4e9 up
    /// the pass has gained since run 58. Nothing below 3.2e9 was measured: the threshold
    /// sits just under the smallest group that gained.
    pub const AUTO_MIN_MACS_HOPPER: u64 = 3_000_000_000;

    /// [`TokenDequant::Auto`]'s threshold for kernel path `path`.
    pub const fn auto_min_macs(path: KernelPath) -> u64 {
        match path {
            KernelPath::Hopper => Self::AUTO_MIN_MACS_HOPPER,
            KernelPath::Portable => Self::AUTO_MIN_MACS,
        }
    }

    /// Whether a group of `macs` multiply-adds takes the pass on kernel path `path`.
    pub fn wants_pass(self, macs: u64, path: KernelPath) -> bool {
        match self {
            Self::Auto => macs >= Self::auto_min_macs(path),
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// Whether blocked-order launches on the Hopper path (after the token pass, weights by TMA,
/// host sizes) run the pair kernel (`_f16b_wt2`, `_f16b_wtsg2`): clusters of two CTAs on
/// 256-row tiles, each chunk's token tile brought into both CTAs by one multicast copy, so
/// the tokens cross L2 half as often (see [`GroupedGemm::set_pair_tiles`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PairTiles {
    /// The pair kernel for launches of at least [`PairTiles::AUTO_MIN_WAVES`] waves of
    /// clusters (256-row tiles per cluster the device holds at once,
    /// [`GroupedGemm::pair_clusters`]: one an SM on the H200, run 213), the 128-row kernels
    /// below. H100 run 201: G8 N7168 K2048 (364 pair tiles, 2.8 waves) 4% faster; G8 N4096
    /// K7168 (176, 1.3 waves) 5% slower, and the G = 2 shapes (one wave) 15% slower in the
    /// 8-stage pair form (not kept). With dynamic units for the pair kernel (H200): G8 N7168
    /// K2048 8% faster than the 128-row kernel (run 211, a timeline build, one bench each:
    /// 97.5 against 105.9 us), G8 N4096 K7168 2% slower (run 210: 142.9 against 140.1).
    #[default]
    Auto,
    /// The pair kernel for every blocked-order launch of more 128-row tiles than SMs (the
    /// 8-stage kernel's launches stay).
    Always,
    /// Never the pair kernel.
    Never,
}

impl PairTiles {
    /// [`PairTiles::Auto`]'s threshold: pair tiles (256 weight rows x 128 tokens) per
    /// cluster slot ([`GroupedGemm::pair_clusters`]).
    /// Fitted to the two benchmark groups (1.3: slower, 2.8: faster). The wave count is not
    /// what decides (PERF.md run 202): with the G8 N4096 group's token counts the pairs lost
    /// at 1.67 and 2.0 waves (6%, 2%), with the G8 N7168 group's they won at 1.58 and 1.97
    /// (2%, 12%), so this rule misses some gains and takes some losses in between. With
    /// dynamic units (H200 runs 207 and 211) the N4096 group's token counts at N 5120 still
    /// lose 5-7%: the pairs' K loops are slower where the later waves leave clusters idle.
    pub const AUTO_MIN_WAVES: u32 = 2;

    /// Whether a blocked-order launch of `tiles` 128-row tiles and `pair_tiles` 256-row
    /// tiles runs the pair kernel on a device of `sm_count` SMs that holds `clusters` pair
    /// clusters at once ([`GroupedGemm::pair_clusters`]; `sm_count` on the H200, run 213):
    /// `Auto` counts waves of those clusters.
    pub fn wants_pairs(self, tiles: u32, pair_tiles: u32, sm_count: u32, clusters: u32) -> bool {
        match self {
            Self::Auto => {
                clusters > 0 && pair_tiles >= Self::AUTO_MIN_WAVES.saturating_mul(clusters)
            }
            Self::Always => tiles > sm_count,
            Self::Never => false,
        }
    }
}

/// Whether launches cut tiles along K so that every CTA slot has work (see
/// [`GroupedGemm::plan`]). Only groups with host sizes are cut; the MoE forms with device
/// row counts never are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SplitK {
    /// Cut where it paid on the benchmark shapes (PERF.md run 61). A launch of `T` tiles on
    /// `S` CTA slots (`sm_count * ctas_per_sm`) with at least one full wave computes the
    /// first `T - T % S` tiles whole and cuts each of the other `T % S` into the number of
    /// K ranges (2 to 4, each at least [`SplitK::AUTO_MIN_CHUNKS`] chunks of 64 were they
    /// equal) that best fills the last wave, if that saves at least a quarter of it. A cut
    /// launch of the Hopper `_wt` kernels with more units than CTA slots and dynamic units
    /// on (the default; see [`GroupedGemm::set_dynamic_units`]) hands its parts out largest
    /// first, and they are not equal: part `q` of `p` covers `p + 2 - q` shares of K, so the
    /// last of 3 parts holds a quarter of K rather than a third. A launch of at most one
    /// tile per SM (with two CTA slots per SM) cuts every tile in two if each half keeps at least
    /// [`SplitK::AUTO_MIN_CHUNKS_ONE_PER_SM`] chunks (the second CTA slot of each SM is
    /// otherwise idle). A launch of more tiles than SMs but less than a wave computes one
    /// tile per SM whole and cuts the others into as many ranges (2 to 4, each at least
    /// [`SplitK::AUTO_MIN_CHUNKS`] chunks) as the SMs' second slots hold (otherwise some SMs
    /// run two whole tiles while others run one). Other launches are not cut: each part
    /// costs a pipeline start and a round trip of its fp32 sums through L2, which short
    /// parts do not win back.
    #[default]
    Auto,
    /// Never cut.
    Off,
    /// Cut every tile into this many K ranges (at most [`SplitK::MAX_PARTS`]; a range may
    /// be empty when a problem has fewer K chunks of 64 than ranges, and adds zeros); 0 or
    /// 1: never cut. For tests and experiments.
    Parts(u32),
}

impl SplitK {
    /// The most K ranges a tile is cut into.
    pub const MAX_PARTS: u32 = 16;
    /// The largest workspace a plan allocates for cut tiles (bytes); a launch that would
    /// need more is not cut.
    pub const MAX_WS_BYTES: u64 = 256 << 20;
    /// [`SplitK::Auto`]'s most K ranges per tile.
    pub const AUTO_MAX_PARTS: u32 = 4;
    /// [`SplitK::Auto`]'s fewest K chunks (64 values each) per range of a cut tail.
    pub const AUTO_MIN_CHUNKS: u32 = 16;
    /// [`SplitK::Auto`]'s fewest K chunks per half when a launch has one tile per SM.
    pub const AUTO_MIN_CHUNKS_ONE_PER_SM: u32 = 32;

    /// `(dp_tiles, parts)` for a launch of `tiles` tiles on `slots` CTA slots of `sms` SMs
    /// whose problems with tiles have at least `min_chunks` K chunks of 64 (which bounds
    /// [`SplitK::Auto`]'s cut): the first `dp_tiles` tiles whole, the others cut into
    /// `parts` K ranges (`parts == 1`: none cut, `dp_tiles == tiles`).
    pub fn schedule(self, tiles: u32, slots: u32, sms: u32, min_chunks: u32) -> (u32, u32) {
        let none = (tiles, 1);
        if tiles == 0 || slots == 0 {
            return none;
        }
        let (dp, parts) = match self {
            Self::Off => return none,
            Self::Parts(p) => (0, p.min(Self::MAX_PARTS)),
            Self::Auto if tiles <= sms => {
                if slots >= 2 * sms && min_chunks >= 2 * Self::AUTO_MIN_CHUNKS_ONE_PER_SM {
                    (0, 2)
                } else {
                    return none;
                }
            }
            Self::Auto if tiles < slots => {
                // One whole tile per SM; the rest cut into the SMs' second slots.
                let tail = tiles - sms;
                let p = Self::AUTO_MAX_PARTS
                    .min((slots - sms) / tail)
                    .min(min_chunks / Self::AUTO_MIN_CHUNKS);
                if p >= 2 {
                    (sms, p)
                } else {
                    return none;
                }
            }
            Self::Auto => {
                let tail = tiles % slots;
                if tail == 0 {
                    return none;
                }
                // The tail's time in tile times: one wave uncut, ceil(tail * p / slots) / p
                // cut into p; the smallest p within the best, and only if it saves 25%.
                let most = Self::AUTO_MAX_PARTS.min(min_chunks / Self::AUTO_MIN_CHUNKS);
                let cost = |p: u32| {
                    (u64::from(tail) * u64::from(p)).div_ceil(u64::from(slots)) as f64
                        / f64::from(p)
                };
                let best = (2..=most).min_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(a.cmp(&b)));
                match best {
                    Some(p) if cost(p) <= 0.75 => (tiles - tail, p),
                    _ => return none,
                }
            }
        };
        let units = u64::from(dp) + u64::from(tiles - dp) * u64::from(parts);
        if parts <= 1 || units > u64::from(u32::MAX) {
            return none;
        }
        (dp, parts)
    }
}

/// Which kernel a [`GroupedGemm`] launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// `nvfp4_grouped_gemm_mma`: cp.async + mma.sync m16n8k16, any GPU from sm_80 up.
    Portable,
    /// `nvfp4_grouped_gemm_wgmma`: wgmma with FP4 weights dequantized in registers; compute
    /// capability 9.0 (H100, H200) only.
    Hopper,
}

impl KernelPath {
    /// The fastest path for compute capability `(major, minor)`: [`KernelPath::Hopper`] on
    /// 9.0, [`KernelPath::Portable`] elsewhere.
    pub fn best_for(major: i32, minor: i32) -> Self {
        if (major, minor) == (9, 0) {
            Self::Hopper
        } else {
            Self::Portable
        }
    }

    /// Launch facts of the path's kernel (NVFP4 activations).
    pub fn kernel(self) -> &'static KernelInfo {
        self.kernel_for(Activation::Nvfp4)
    }

    /// Launch facts of the path's kernel for `activation` (all three share tiles and launch
    /// shape; they differ in name).
    pub fn kernel_for(self, activation: Activation) -> &'static KernelInfo {
        match (self, activation) {
            (Self::Portable, Activation::Nvfp4) => &GROUPED_GEMM_MMA,
            (Self::Portable, Activation::F16) => &GROUPED_GEMM_MMA_F16A,
            (Self::Portable, Activation::Bf16) => &GROUPED_GEMM_MMA_BF16A,
            (Self::Hopper, Activation::Nvfp4) => &GROUPED_GEMM_WGMMA,
            (Self::Hopper, Activation::F16) => &GROUPED_GEMM_WGMMA_F16A,
            (Self::Hopper, Activation::Bf16) => &GROUPED_GEMM_WGMMA_BF16A,
        }
    }
}

/// The element type of the outputs `c` of a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OutputType {
    /// IEEE fp16 (round to nearest even, overflow to ±inf).
    #[default]
    F16,
    /// bf16 (round to nearest even); only with 16-bit activations.
    Bf16,
}

/// The types of one call: what every problem's activations `a` hold and what its outputs `c`
/// receive. The default is NVFP4 activations and fp16 outputs (the contract of DESIGN.md).
///
/// With [`Activation::F16`] or [`Activation::Bf16`] (W4A16) each problem's `a` holds `m` rows
/// of `k` 16-bit values (`lda` in bytes, `None` = `2 k`; 16-byte aligned rows) and `sfa` is not
/// read (pass [`DeviceInput::empty`]); the weights are NVFP4 as always, and the result is
/// `c = round(alpha * sum_k a * (b * sfb))`. fp16 activations multiply with fp16 weights, bf16
/// activations with bf16 weights; both are exact before the fp32 accumulation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GemmTypes {
    /// What `a` holds.
    pub activation: Activation,
    /// What `c` receives.
    pub output: OutputType,
}

/// CTAs per SM assumed when the occupancy query fails.
const FALLBACK_CTAS_PER_SM: u32 = 2;

/// One NVFP4 GEMM of a group, operands in device memory:
/// `c = round_to_fp16(alpha * (a * sfa) * (b * sfb)^T)` with fp32 accumulation.
///
/// Layouts (the contract of `DESIGN.md`):
/// - `a`: `m` rows of `k` FP4 E2M1 values, two per byte (element `2j` in the low nibble of
///   byte `j`), row `r` at byte `r * lda`; `b`: `n` rows likewise, row `r` at `r * ldb`.
/// - `sfa` / `sfb`: one E4M3 (`e4m3fn`) scale per 16 consecutive K elements of a row, in
///   `sfa_layout` / `sfb_layout` ([`ScaleLayout::Plain`] `[rows, k / 16]` or
///   [`ScaleLayout::Blocked`], the cuBLAS "128x4" layout); no stride: the buffer holds exactly
///   `kernels_gpu::layout::scale_len(layout, rows, k)` meaningful bytes.
/// - `c`: `m` rows of `n` fp16 values, row `r` at element `r * ldc`. Only columns `0..n` of
///   each row are written: padding columns of a strided C are left as they were.
///
/// Every rule a problem must meet is listed in [`crate::validate`]; in short `k` is a
/// positive multiple of 16, `m` / `n` may be 0, `alpha` is finite, buffers are long enough
/// and aligned, and no output overlaps an input or another output.
#[derive(Debug)]
pub struct Problem<'a> {
    /// Rows of A and C (tokens); 0 is an empty problem.
    pub m: usize,
    /// Rows of B (weights), columns of C; 0 is an empty problem.
    pub n: usize,
    /// Reduction length in FP4 elements: a positive multiple of 16.
    pub k: usize,
    /// A, FP4 E2M1, 8-byte aligned.
    pub a: DeviceInput<'a>,
    /// Bytes between rows of A: at least `k / 2`, a multiple of 8; `None` = `k / 2`.
    pub lda: Option<usize>,
    /// A's E4M3 scales, 4-byte aligned.
    pub sfa: DeviceInput<'a>,
    /// Layout of `sfa` (over `m` rows).
    pub sfa_layout: ScaleLayout,
    /// B, FP4 E2M1, 8-byte aligned.
    pub b: DeviceInput<'a>,
    /// Bytes between rows of B: at least `k / 2`, a multiple of 8; `None` = `k / 2`.
    pub ldb: Option<usize>,
    /// B's E4M3 scales, 4-byte aligned.
    pub sfb: DeviceInput<'a>,
    /// Layout of `sfb` (over `n` rows).
    pub sfb_layout: ScaleLayout,
    /// C, fp16, 2-byte aligned; written, never read.
    pub c: DeviceOutput<'a>,
    /// fp16 elements between rows of C: at least `n`; `None` = `n`.
    pub ldc: Option<usize>,
    /// Output factor applied to the fp32 sum before the fp16 rounding (the checkpoint's
    /// global scale); must be finite. 1.0 for a plain GEMM.
    pub alpha: f32,
}

impl Problem<'_> {
    /// The numbers validation checks: shapes, strides, layouts, alpha and each buffer's
    /// address and length.
    pub fn spec(&self) -> ProblemSpec {
        ProblemSpec {
            m: self.m,
            n: self.n,
            k: self.k,
            a: self.a.span(),
            lda: self.lda,
            sfa: self.sfa.span(),
            sfa_layout: self.sfa_layout,
            b: self.b.span(),
            ldb: self.ldb,
            sfb: self.sfb.span(),
            sfb_layout: self.sfb_layout,
            c: self.c.span(),
            ldc: self.ldc,
            alpha: self.alpha,
        }
    }

    pub(crate) fn inputs(&self) -> [(&'static str, &DeviceInput<'_>); 4] {
        [
            ("a", &self.a),
            ("sfa", &self.sfa),
            ("b", &self.b),
            ("sfb", &self.sfb),
        ]
    }
}

/// The problem table as a kernel argument type (`ProblemDesc` lives in a `no_std` crate
/// that does not know cudarc).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
struct DeviceDesc(ProblemDesc);

// SAFETY: `ProblemDesc` is `#[repr(C)]`, 104 bytes of integers and an f32 with no padding
// (asserted in kernels-gpu), the layout the kernels read.
unsafe impl DeviceRepr for DeviceDesc {}

/// A validated group with its problem table uploaded: launch it any number of times with
/// [`GroupedGemm::launch`], e.g. inside CUDA graph capture.
///
/// It borrows the problems (and through them their buffers) for `'a`, so the buffers stay
/// alive and untouched by safe code while the plan exists. The device table is freed,
/// stream-ordered, on the stream the plan was made on when the plan drops.
///
/// A CUDA graph that captured a launch of this plan reads its table and buffers at every
/// replay: keep the plan alive as long as the graph may be launched.
///
/// A plan may also own an fp16 copy of its tokens, which each launch rewrites before the GEMM
/// reads it, and a workspace for tiles cut along K, whose counters each launch leaves zero
/// (see [`GroupedGemm::plan`]); launches of the plan on several streams are ordered by its
/// outputs, which they share (with raw outputs or in graph replays, order them yourself:
/// two launches of one plan must not overlap).
#[derive(Debug)]
pub struct GroupPlan<'a> {
    /// The kernel path the table was packed for (its tiles, its token maps).
    path: KernelPath,
    /// The activations' kind: which kernel the launch runs.
    activation: Activation,
    /// Every buffer the kernel reads (the row counts included), for cudarc's bookkeeping.
    inputs: Vec<&'a DeviceInput<'a>>,
    /// Every buffer the kernel writes.
    outputs: Vec<&'a DeviceOutput<'a>>,
    packed: PackedTable,
    /// Where the row counts come from.
    mode: SizeMode,
    /// Device address of the row counts (0 with host sizes).
    counts_addr: u64,
    /// Tiles of the launch (host sizes) or an upper bound of them (device sizes): sizes the
    /// grid; 0 means nothing to launch.
    tile_bound: u32,
    /// `None` when the group has no tiles (nothing to launch).
    table: Option<CudaSlice<DeviceDesc>>,
    /// Device address of `table` (0 without one).
    table_addr: u64,
    /// One TMA tensor map per problem over its tokens, for kernels that read them by TMA
    /// (`KernelInfo::token_maps`); `None` for the others and without a table.
    maps: Option<CudaSlice<TokenMap>>,
    /// Device address of `maps` (0 without them).
    maps_addr: u64,
    /// NVFP4 groups taking the token pass (host sizes): the tokens' fp16 copy and the table
    /// the fp16-activation kernel runs on (see [`TokenPass`]).
    pass: Option<TokenPass>,
    /// Whether the launch runs a `_wt` kernel (the weights by TMA too; `maps` then holds two
    /// maps per problem, tokens' and weights').
    weights_tma: bool,
    /// Whether the token pass writes the blocked K order and the GEMM is the `_f16b_wt`
    /// entry (see [`GroupedGemm::set_blocked_k`]).
    blocked_k: bool,
    /// Whether that GEMM is the 8-stage one-CTA-an-SM entry `_f16b_wt8` (a launch of at
    /// most one work unit an SM; see [`GroupedGemm::set_one_per_sm_deep`]).
    deep: bool,
    /// Whether that GEMM copies its weight scales four chunks at a time (`_f16b_wtsg`,
    /// `_f16b_wt8sg`; see [`GroupedGemm::set_scale_groups`]).
    scale_groups: bool,
    /// Whether the launch's CTAs take their units past the first from a counter in the
    /// split workspace ([`MODE_DYNAMIC`]; see [`GroupedGemm::set_dynamic_units`]).
    dynamic: bool,
    /// Whether the launch runs the pair kernel, `_f16b_wt2` or `_f16b_wtsg2` (see
    /// [`GroupedGemm::set_pair_tiles`]): `tile_bound` and the pass's table then count
    /// 256-row tiles.
    pair: bool,
    /// Which tiles the launch cuts along K, and the workspace where their parts meet
    /// (`split.ws` its address; `None` when no tile is cut and the units are not dynamic).
    split: Split,
    split_ws: Option<CudaSlice<u8>>,
    /// Work units of the launch (tiles, plus the extra parts of cut tiles): sizes the grid.
    units: u32,
    context: Arc<CudaContext>,
}

/// Large NVFP4 x NVFP4 groups (with host sizes) run as two launches: a pass that dequantizes
/// each problem's token rows once into an fp16 workspace (exact), then an fp16-activation
/// kernel on a copy of the table pointing at the workspace: on the Hopper path its W4A16
/// kernel (rows read by TMA; each 64-value chunk in the blocked K order for `_f16b_wt` when
/// the plan's `blocked_k` is set, natural order otherwise), on the portable path
/// `nvfp4_grouped_gemm_mma_f16p` (each 16-byte unit written in that kernel's K order, copied
/// into shared memory as it is). The NVFP4 kernels dequantize a problem's tokens again in
/// every N tile.
#[derive(Debug)]
struct TokenPass {
    /// One job per problem with tiles: its rows of `a` into its workspace.
    jobs: CudaSlice<DeviceJob>,
    /// CTAs per job (the grid's x).
    grid_x: u32,
    /// The fp16 token rows, one buffer per distinct token operand (same row numbers as `a`).
    workspaces: Vec<CudaSlice<u8>>,
    /// The table of the fp16-activation launch.
    table: CudaSlice<DeviceDesc>,
    /// Device addresses of `jobs` and `table` (taken once, so that launches inside CUDA
    /// graph capture touch no cudarc event).
    jobs_addr: u64,
    table_addr: u64,
}

/// The token operands of an NVFP4 table for the token pass: the bytes of each
/// distinct operand's fp16 copy (operands in first-use order; one is `a`, `lda`, `sfa`,
/// `sfa_layout` and `k`, holding `2 k` bytes a row up to the last row its problems use,
/// `m_offset + m`), and which copy each problem reads (`None` for problems without tiles).
/// Linear in the problems.
///
/// # Errors
/// [`Error::InvalidGroup`] (field `a`) if a copy's size does not fit the address space.
fn token_operands(descs: &[ProblemDesc]) -> Result<(Vec<usize>, Vec<Option<usize>>)> {
    let mut index: HashMap<(u64, u64, u64, u32, u32), usize> = HashMap::new();
    let mut rows: Vec<(u64, u32)> = Vec::new(); // (rows, k) per operand
    let operand_of = descs
        .iter()
        .map(|d| {
            if d.m == 0 || d.n == 0 {
                return None;
            }
            let key = (d.a, d.lda, d.sfa, d.sfa_layout, d.k);
            let end = u64::from(d.m_offset) + u64::from(d.m);
            let i = *index.entry(key).or_insert_with(|| {
                rows.push((0, d.k));
                rows.len() - 1
            });
            rows[i].0 = rows[i].0.max(end);
            Some(i)
        })
        .collect();
    let sizes = rows
        .iter()
        .map(|&(rows, k)| {
            rows.checked_mul(u64::from(k) * 2)
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| Error::InvalidGroup {
                    field: "a",
                    reason: format!(
                        "the fp16 copy of {rows} token rows of {k} values does not fit the \
                         address space"
                    ),
                })
        })
        .collect::<Result<_>>()?;
    Ok((sizes, operand_of))
}

/// The pair kernel's 256-row tiles of problem `d` (none without rows or columns).
fn pair_tiles_of(d: &ProblemDesc) -> u64 {
    if d.m == 0 || d.n == 0 {
        0
    } else {
        GROUPED_GEMM_WGMMA_F16B_WT2.tiles_for(d.m, d.n)
    }
}

/// The 256-row tiles of the pair kernel over `descs` (at most the 128-row tiles, which the
/// plan's tile bound has checked fit a `u32`).
fn pair_tile_count(descs: &[ProblemDesc]) -> u32 {
    u32::try_from(descs.iter().map(pair_tiles_of).sum::<u64>()).unwrap_or(u32::MAX)
}

/// The CTA slots a launch's work units fill ([`GroupedGemm::split_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slots {
    /// The kernel's resident CTAs on every SM.
    PerSm,
    /// One CTA an SM: the 8-stage kernel (while the units fit one an SM; past that the
    /// 4-stage kernel runs, with its CTAs an SM).
    OnePerSm,
    /// The pair kernel's clusters ([`GroupedGemm::pair_clusters`]).
    Pairs,
}

impl Slots {
    /// The SMs (pairs: clusters) and the CTA slots (pairs: clusters) that
    /// [`SplitK::schedule`] fills, on `sm_count` SMs holding `ctas_per_sm` CTAs of the
    /// kernel each and `pair_clusters` pair clusters (at least one of each is counted).
    fn schedule_slots(self, sm_count: u32, ctas_per_sm: u32, pair_clusters: u32) -> (u32, u32) {
        match self {
            Self::PerSm => (sm_count, sm_count.saturating_mul(ctas_per_sm)),
            Self::OnePerSm => (sm_count, sm_count),
            Self::Pairs => (pair_clusters.max(1), pair_clusters.max(1)),
        }
    }

    /// The CTA slots (pairs: clusters) of the kernel that runs a launch of `units` work
    /// units, which hands them out dynamically only where they are more: the pair kernel's
    /// clusters, the 8-stage kernel's SMs while the units fit one an SM, else the 4-stage
    /// kernel's `ctas_per_sm` CTAs an SM.
    fn run_slots(self, units: u64, sm_count: u32, ctas_per_sm: u32, pair_clusters: u32) -> u32 {
        match self {
            Self::OnePerSm if units > u64::from(sm_count) => sm_count.saturating_mul(ctas_per_sm),
            _ => self.schedule_slots(sm_count, ctas_per_sm, pair_clusters).1,
        }
    }
}

/// The pair kernels, indexed by the plan's `scale_groups`: scales a chunk at a time, or
/// four chunks at a time.
const PAIR_KERNELS: [&KernelInfo; 2] =
    [&GROUPED_GEMM_WGMMA_F16B_WT2, &GROUPED_GEMM_WGMMA_F16B_WTSG2];

/// The most jobs the token pass takes (its grid's y); larger groups run the NVFP4 kernel.
const MAX_PASS_JOBS: usize = 65_535;
/// CTAs per job of the token pass at most (each strides over the rest).
const MAX_PASS_CTAS_PER_JOB: u64 = 1024;
/// On the Hopper path, the token pass's CTAs over all jobs at most this many an SM (each
/// thread then strides over more blocks, loading three at a time). The GEMM launched as the
/// pass's programmatic dependent gets its SMs as the pass's CTAs retire. H100 runs 182-184
/// on G8 N4096 K7168, whose pass would have 3472 CTAs (26 an SM), with one load a thread in
/// flight: 148.9-149.5 us with 6 an SM, 149.2-150.1 with 4, 150.9 with 3, against
/// 152.2-153.0 uncapped; 154.9 with 2 and 164.1 with 1 (too few loads in flight); capping
/// G2 N3072 K4096's 640 CTAs at 528 lost there (42.8-43.5 us against 42.2-42.7). With four
/// loads a thread in flight (run 187), 4 an SM: G8 N4096 K7168 148.5 us (twice) against
/// 148.6-150.5 for 6 an SM with one load, G8 N7168 K2048 (784 CTAs, now 528) 108.4 against
/// 108.8-109.6, G2 N3072 K4096 (640, now 528) 42.3-42.5 against 42.2-42.7. Three loads in
/// flight (run 196) gained 2% more on G8 N4096 K7168. 4 an SM is also what fits: the pass
/// takes 52 registers a thread (four loads: 60).
const PASS_CTAS_PER_SM_HOPPER: u32 = 4;

/// The token pass's CTAs per job (its grid's x) for `jobs` jobs whose largest has
/// `max_items` 16-value blocks: one block a thread, at most [`MAX_PASS_CTAS_PER_JOB`], and on
/// the Hopper path at most [`PASS_CTAS_PER_SM_HOPPER`] an SM over all jobs (at least one a
/// job); each thread strides over the blocks its CTA's share leaves.
fn pass_grid_x(max_items: u64, jobs: usize, path: KernelPath, sm_count: u32) -> u32 {
    let grid_x = max_items
        .div_ceil(u64::from(DEQUANT_TOKENS.threads))
        .clamp(1, MAX_PASS_CTAS_PER_JOB) as u32;
    match path {
        KernelPath::Hopper => {
            let cap = sm_count.saturating_mul(PASS_CTAS_PER_SM_HOPPER);
            let jobs = u32::try_from(jobs.max(1)).unwrap_or(u32::MAX);
            grid_x.min((cap / jobs).max(1))
        }
        KernelPath::Portable => grid_x,
    }
}

/// A token job as a kernel argument type.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
struct DeviceJob(TokenJob);

// SAFETY: `TokenJob` is `#[repr(C)]`: a u64 and two u32, 16 bytes without padding, the layout
// the pass reads.
unsafe impl DeviceRepr for DeviceJob {}

impl GroupPlan<'_> {
    /// The activation kind of the GEMM kernel a launch runs (fp16 after a token pass).
    fn launched(&self) -> Activation {
        if self.pass.is_some() {
            Activation::F16
        } else {
            self.activation
        }
    }

    /// Whether the launch's CTAs take their work units past the first from a counter
    /// (see [`GroupedGemm::set_dynamic_units`]) rather than every `grid`-th one.
    pub fn dynamic_units(&self) -> bool {
        self.dynamic
    }

    /// Whether the launch runs the pair kernel (see [`GroupedGemm::set_pair_tiles`]).
    pub fn pair_tiles(&self) -> bool {
        self.pair
    }

    /// How the launch cuts its tiles along K: `(dp_tiles, parts)`, the first `dp_tiles`
    /// tiles whole and each later one cut into `parts` K ranges (`parts == 1`: none cut).
    /// With the pair kernel ([`GroupPlan::pair_tiles`]) the tiles are 256 weight rows.
    pub fn split_k_schedule(&self) -> (u32, u32) {
        if self.split.parts > 1 {
            (self.split.dp_tiles, self.split.parts)
        } else {
            (self.tile_bound, 1)
        }
    }

    /// Whether the launch reads the weights by TMA (a `_wt` kernel of the Hopper path; see
    /// [`GroupedGemm::set_weights_by_tma`]).
    pub fn weights_by_tma(&self) -> bool {
        self.weights_tma
    }

    /// Whether the launch runs the token pass in the blocked K order and the
    /// `nvfp4_grouped_gemm_wgmma_f16b_wt` kernel (see [`GroupedGemm::set_blocked_k`]).
    pub fn blocked_k(&self) -> bool {
        self.blocked_k
    }

    /// Whether the launch's GEMM is `nvfp4_grouped_gemm_wgmma_f16b_wt8`, the 8-stage form of
    /// the blocked-order kernel for launches of at most one CTA an SM (see
    /// [`GroupedGemm::set_one_per_sm_deep`]).
    pub fn one_per_sm_deep(&self) -> bool {
        self.deep
    }

    /// Whether the launch's blocked-order GEMM copies each weight row's scales 16 bytes (four
    /// chunks) at a time (`nvfp4_grouped_gemm_wgmma_f16b_wtsg` or `_f16b_wt8sg`; see
    /// [`GroupedGemm::set_scale_groups`]).
    pub fn scale_groups(&self) -> bool {
        self.scale_groups
    }

    /// Problems in the group (including empty ones).
    pub fn num_problems(&self) -> usize {
        self.packed.descs.len()
    }

    /// Tiles of the whole group; 0 means [`GroupedGemm::launch`] does nothing. Where the
    /// row counts live on the device, an upper bound (every group at its capacity; the
    /// kernel computes the actual tiles). With the pair kernel ([`GroupPlan::pair_tiles`])
    /// tiles of 256 weight rows, else of the kernel's (128 rows x its tokens).
    pub fn total_tiles(&self) -> u32 {
        self.tile_bound
    }

    /// Whether the launch reads the row counts from the device ([`crate::moe`]).
    pub fn device_sizes(&self) -> bool {
        self.mode != SizeMode::Host
    }

    /// The problem table as uploaded (a host copy, for inspection).
    pub fn table(&self) -> &[ProblemDesc] {
        &self.packed.descs
    }
}

/// The NVFP4 grouped GEMM on one CUDA device: the kernels loaded from the embedded PTX,
/// ready to run groups of problems with one launch each.
///
/// Construction JIT-loads the PTX for the device (tens of milliseconds): make one per
/// context and reuse it; it is `Send + Sync`.
///
/// ```no_run
/// use nvfp4::cudarc::driver::CudaContext;
/// use nvfp4::{DeviceInput, DeviceOutput, GroupedGemm, Problem, ScaleLayout, f16};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ctx = CudaContext::new(0)?;
/// let stream = ctx.default_stream();
/// let gemm = GroupedGemm::new(ctx.clone())?;
///
/// // One problem: 40 tokens x 4096 weights x K = 7168, plain scales.
/// let (m, n, k) = (40, 4096, 7168);
/// let a = stream.alloc_zeros::<u8>(m * k / 2)?;
/// let sfa = stream.alloc_zeros::<u8>(m * k / 16)?;
/// let b = stream.alloc_zeros::<u8>(n * k / 2)?;
/// let sfb = stream.alloc_zeros::<u8>(n * k / 16)?;
/// let mut c = stream.alloc_zeros::<f16>(m * n)?;
/// let problems = [Problem {
///     m, n, k,
///     a: DeviceInput::from(&a), lda: None,
///     sfa: DeviceInput::from(&sfa), sfa_layout: ScaleLayout::Plain,
///     b: DeviceInput::from(&b), ldb: None,
///     sfb: DeviceInput::from(&sfb), sfb_layout: ScaleLayout::Plain,
///     c: DeviceOutput::from(&mut c), ldc: None,
///     alpha: 1.0,
/// }];
/// gemm.run(&stream, &problems)?; // validates, uploads the table, launches once
/// drop(problems);
/// let out: Vec<f16> = stream.clone_dtoh(&c)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GroupedGemm {
    ctx: Arc<CudaContext>,
    /// The loaded PTX module (shared with a [`crate::quant::Quantizer::from_gemm`]).
    module: Arc<CudaModule>,
    /// The path's kernels for NVFP4, fp16 and bf16 activations (`Activation as usize`).
    funcs: [CudaFunction; 3],
    path: KernelPath,
    compute_capability: (i32, i32),
    ptx_arch: &'static str,
    sm_count: u32,
    /// Resident CTAs per SM of each activation kind's kernel (indexed like `funcs`).
    ctas_per_sm: [u32; 3],
    /// The NVFP4 token dequantization pass.
    dequant: CudaFunction,
    /// The kernel that reads the pass's tokens in the kernels' K order (the portable path's
    /// `nvfp4_grouped_gemm_mma_f16p`; `None` on the Hopper path, whose fp16-activation kernels
    /// read natural order, or the blocked order (`funcs_wt[2]`), by TMA).
    paired: Option<CudaFunction>,
    /// The Hopper path's kernels that read the weights by TMA too (`_wt`), for plans whose
    /// weights allow it (`None` on the portable path): fp16 and bf16 activations, and fp16
    /// activations in the blocked K order (after the token pass).
    funcs_wt: Option<[CudaFunction; 3]>,
    /// Whether plans may use `funcs_wt` (default true; see
    /// [`GroupedGemm::set_weights_by_tma`]).
    weights_tma: bool,
    /// The 8-stage blocked-order entry `_f16b_wt8` (Hopper path, when one CTA of it fits an
    /// SM; `None` otherwise).
    func_wt8: Option<CudaFunction>,
    /// Whether plans may use `func_wt8` (default true; see
    /// [`GroupedGemm::set_one_per_sm_deep`]).
    one_per_sm_deep: bool,
    /// The blocked-order entries that copy the weight scales four chunks at a time (Hopper
    /// path): `_f16b_wtsg` where as many of its CTAs fit an SM as of `_f16b_wt`, and
    /// `_f16b_wt8sg` where one fits.
    funcs_sg: Option<(CudaFunction, Option<CudaFunction>)>,
    /// Whether plans may use `funcs_sg` (default true; see [`GroupedGemm::set_scale_groups`]).
    scale_groups: bool,
    /// Whether plans may use the blocked K order after the token pass (default true; see
    /// [`GroupedGemm::set_blocked_k`]).
    blocked_k: bool,
    /// Whether `_wt` plans take their units dynamically (see
    /// [`GroupedGemm::set_dynamic_units`]).
    dynamic_units: bool,
    /// The pair kernels `_f16b_wt2`, `_f16b_wtsg2` (`PAIR_KERNELS`; Hopper path, where they
    /// load): see [`GroupedGemm::set_pair_tiles`].
    func_pair: [Option<CudaFunction>; 2],
    /// Clusters of two CTAs the device holds at once of both pair kernels, at most
    /// `sm_count`: the pair launches' persistent grid and CTA slots (see
    /// [`GroupedGemm::pair_clusters`]); 0, with `func_pair` empty, where they are not both
    /// loaded or none fits.
    pair_clusters: u32,
    /// When blocked-order plans run the pair kernel (see [`GroupedGemm::set_pair_tiles`]).
    pair_tiles: PairTiles,
    /// When plans of NVFP4 groups use that pass.
    token_dequant: TokenDequant,
    /// Whether plans cut tiles along K.
    split_k: SplitK,
}

impl GroupedGemm {
    /// Loads the kernels into `ctx`: the sm_90a PTX on compute capability 9.0, the sm_80 PTX
    /// on every other capability from 8.0 up.
    ///
    /// # Errors
    /// [`Error::UnsupportedGpu`] below compute capability 8.0; [`Error::PtxLoad`] if the
    /// driver rejects the PTX or the kernel is missing from it (e.g. the placeholder PTX of a
    /// checkout where `cargo xtask build-ptx` has not run); [`Error::Driver`] if a device
    /// query fails.
    pub fn new(ctx: Arc<CudaContext>) -> Result<Self> {
        let (major, minor) = ctx.compute_capability()?;
        Self::with_path(ctx, KernelPath::best_for(major, minor))
    }

    /// As [`GroupedGemm::new`], but launching the kernel of `path` (e.g. the portable path on
    /// an H100, to compare or to test it).
    ///
    /// # Errors
    /// As [`GroupedGemm::new`]; [`Error::UnsupportedGpu`] also when `path` needs a newer GPU
    /// ([`KernelPath::Hopper`] needs compute capability 9.0).
    pub fn with_path(ctx: Arc<CudaContext>, path: KernelPath) -> Result<Self> {
        let kernel = path.kernel();
        let (module, (major, minor), ptx_arch) = ptx_module::load_module(&ctx, kernel)?;
        let load_kernel = |kernel: &KernelInfo| -> Result<CudaFunction> {
            let func = ptx_module::load_function(&module, kernel, ptx_arch)?;
            match kernel.dynamic_smem_bytes {
                0 => {}
                bytes => func.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    i32::try_from(bytes).unwrap_or(i32::MAX),
                )?,
            }
            Ok(func)
        };
        let load = |activation: Activation| load_kernel(path.kernel_for(activation));
        let funcs = [
            load(Activation::Nvfp4)?,
            load(Activation::F16)?,
            load(Activation::Bf16)?,
        ];
        let sm_count = ptx_module::sm_count(&ctx)?;
        // Per kernel: the W4A16 kernels may need other resources than the NVFP4 one, and a
        // persistent grid sized for more CTAs than fit would run in two waves.
        let mut ctas_per_sm = [Activation::Nvfp4, Activation::F16, Activation::Bf16].map(|a| {
            ptx_module::ctas_per_sm(&funcs[a as usize], path.kernel_for(a), FALLBACK_CTAS_PER_SM)
        });
        let dequant = ptx_module::load_function(&module, &DEQUANT_TOKENS, ptx_arch)?;
        let paired = match path {
            KernelPath::Portable => {
                let func = ptx_module::load_function(&module, &GROUPED_GEMM_MMA_F16P, ptx_arch)?;
                // Token-pass launches size their grid from the fp16-activation entry: the
                // smaller of the two kernels' occupancies, so every CTA is resident.
                let f16 = &mut ctas_per_sm[Activation::F16 as usize];
                *f16 = (*f16).min(ptx_module::ctas_per_sm(
                    &func,
                    &GROUPED_GEMM_MMA_F16P,
                    FALLBACK_CTAS_PER_SM,
                ));
                Some(func)
            }
            KernelPath::Hopper => None,
        };
        let funcs_wt = match path {
            KernelPath::Hopper => {
                let wt = [
                    load_kernel(&GROUPED_GEMM_WGMMA_F16A_WT)?,
                    load_kernel(&GROUPED_GEMM_WGMMA_BF16A_WT)?,
                    load_kernel(&GROUPED_GEMM_WGMMA_F16B_WT)?,
                ];
                // As for the paired kernel: the grid of a 16-bit launch fits any entry.
                let kinds = [Activation::F16, Activation::Bf16, Activation::F16];
                for (func, a) in wt.iter().zip(kinds) {
                    let slot = &mut ctas_per_sm[a as usize];
                    *slot = (*slot).min(ptx_module::ctas_per_sm(
                        func,
                        &GROUPED_GEMM_WGMMA_F16A_WT,
                        FALLBACK_CTAS_PER_SM,
                    ));
                }
                Some(wt)
            }
            KernelPath::Portable => None,
        };
        let func_wt8 = match path {
            // Optional: where its 172 KiB cannot be granted (the attribute refused, or no CTA
            // fits an SM) plans keep the 4-stage kernel. (The GPU test
            // `one_per_sm_deep_kernel` checks that Hopper plans do get it.)
            KernelPath::Hopper => load_kernel(&GROUPED_GEMM_WGMMA_F16B_WT8)
                .ok()
                .filter(|f| ptx_module::ctas_per_sm(f, &GROUPED_GEMM_WGMMA_F16B_WT8, 0) >= 1),
            KernelPath::Portable => None,
        };
        // Optional, as the 8-stage kernel: where their 4 or 8 KiB more shared memory cost a
        // CTA slot (or the attribute is refused), plans keep the other entries.
        let funcs_sg = match path {
            KernelPath::Hopper => load_kernel(&GROUPED_GEMM_WGMMA_F16B_WTSG)
                .ok()
                .filter(|f| {
                    ptx_module::ctas_per_sm(f, &GROUPED_GEMM_WGMMA_F16B_WTSG, 0)
                        >= ctas_per_sm[Activation::F16 as usize]
                })
                .map(|wtsg| {
                    let wt8sg = load_kernel(&GROUPED_GEMM_WGMMA_F16B_WT8SG)
                        .ok()
                        .filter(|f| {
                            ptx_module::ctas_per_sm(f, &GROUPED_GEMM_WGMMA_F16B_WT8SG, 0) >= 1
                        });
                    (wtsg, wt8sg)
                }),
            KernelPath::Portable => None,
        };
        // Optional, as the 8-stage kernel: the pair kernels (`PAIR_KERNELS`), where their
        // clusters launch; plans without them keep the other entries.
        let mut func_pair = match path {
            KernelPath::Hopper => PAIR_KERNELS.map(|k| load_kernel(k).ok()),
            KernelPath::Portable => [None, None],
        };
        // Their persistent grid: as many clusters as the device holds at once of either (a
        // cluster needs two CTA slots of one GPC), at most one an SM; where the query fails,
        // one an SM. Where no cluster fits, plans keep the other entries.
        // (Both entries or neither: a plan may take either.)
        let pair_clusters = if func_pair.iter().all(Option::is_some) {
            func_pair
                .iter()
                .flatten()
                .zip(PAIR_KERNELS)
                .map(|(f, k)| {
                    ptx_module::max_active_clusters(&ctx, f, k, 2, sm_count).unwrap_or(sm_count)
                })
                .min()
                .unwrap_or(0)
                .min(sm_count)
        } else {
            0
        };
        if pair_clusters == 0 {
            func_pair = [None, None];
        }
        Ok(Self {
            ctx,
            module,
            funcs,
            path,
            compute_capability: (major, minor),
            ptx_arch,
            sm_count,
            ctas_per_sm,
            dequant,
            paired,
            funcs_wt,
            weights_tma: true,
            func_wt8,
            one_per_sm_deep: true,
            funcs_sg,
            scale_groups: true,
            blocked_k: true,
            dynamic_units: true,
            func_pair,
            pair_clusters,
            pair_tiles: PairTiles::Auto,
            token_dequant: TokenDequant::default(),
            split_k: SplitK::default(),
        })
    }

    /// Sets whether the plans made from now on cut tiles along K ([`SplitK`]; default
    /// [`SplitK::Auto`]). Plans already made keep theirs.
    ///
    /// ```no_run
    /// use nvfp4::cudarc::driver::CudaContext;
    /// use nvfp4::{GroupedGemm, SplitK};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut gemm = GroupedGemm::new(CudaContext::new(0)?)?;
    /// // Never cut (the plan allocates no workspace for cut tiles):
    /// gemm.set_split_k(SplitK::Off);
    /// assert_eq!(gemm.split_k(), SplitK::Off);
    /// // What a plan chose: `plan.split_k_schedule()` gives (whole tiles, K ranges per cut tile).
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_split_k(&mut self, mode: SplitK) {
        self.split_k = mode;
    }

    /// Whether plans cut tiles along K (see [`SplitK`]).
    pub fn split_k(&self) -> SplitK {
        self.split_k
    }

    /// Sets when the plans made from now on run NVFP4 groups through the token pass
    /// ([`TokenDequant`]; default [`TokenDequant::Auto`]). Plans already made keep theirs.
    pub fn set_token_dequant(&mut self, mode: TokenDequant) {
        self.token_dequant = mode;
    }

    /// When plans of NVFP4 groups use the token pass (see [`TokenDequant`]).
    pub fn token_dequant(&self) -> TokenDequant {
        self.token_dequant
    }

    /// Sets whether the plans made from now on may read the weights by TMA (default `true`).
    /// On the Hopper path a 16-bit launch (W4A16, or an NVFP4 group after the token pass)
    /// then runs the `_wt` kernel when every problem's `b` and `ldb` are multiples of 16
    /// bytes, and the kernel that copies them with `cp.async` otherwise; `false` keeps the
    /// latter for every plan (to compare the two, or to set the newer one aside). No effect on
    /// the portable path. Plans already made keep theirs.
    pub fn set_weights_by_tma(&mut self, on: bool) {
        self.weights_tma = on;
    }

    /// Whether plans may read the weights by TMA (see [`GroupedGemm::set_weights_by_tma`]).
    pub fn weights_by_tma(&self) -> bool {
        self.weights_tma
    }

    /// Sets whether the plans made from now on may run the token pass in the blocked K order
    /// (default `true`). On the Hopper path an NVFP4 group that takes the pass and the `_wt`
    /// kernel (see [`GroupedGemm::set_weights_by_tma`]), and whose every problem with tokens
    /// and weights has `k` a multiple of 64, then has its fp16 tokens written with each
    /// 64-value chunk permuted (`kernels_gpu::fp4::blocked_k`) and runs
    /// `nvfp4_grouped_gemm_wgmma_f16b_wt`, which multiplies its weights in the same order and
    /// so dequantizes them with fewer instructions; the sums are the same up to the fp32
    /// accumulation order. `false` keeps natural order (`_f16a_wt`) for every plan, to compare
    /// the two. No effect on the portable path. Plans already made keep theirs.
    pub fn set_blocked_k(&mut self, on: bool) {
        self.blocked_k = on;
    }

    /// Whether plans may use the blocked K order (see [`GroupedGemm::set_blocked_k`]).
    pub fn blocked_k(&self) -> bool {
        self.blocked_k
    }

    /// Sets whether the plans made from now on may run `nvfp4_grouped_gemm_wgmma_f16b_wt8`
    /// (default `true`): the blocked-order kernel (see [`GroupedGemm::set_blocked_k`]) with 8
    /// pipeline stages instead of 4, 172 KiB of shared memory and so one CTA an SM. A plan
    /// runs it when its launch has at most one tile an SM (for example 2 experts of 128-320
    /// tokens and N of 3072-4096): such a launch then keeps its SMs' second CTA slots empty
    /// and is not cut along K by [`SplitK::Auto`]; with [`SplitK::Parts`] it runs it when the
    /// cut still leaves at most one work unit an SM. The sums are the same as the 4-stage
    /// kernel's. `false` keeps the 4-stage kernel for every plan, to compare the two. No
    /// effect on the portable path. Plans already made keep theirs.
    pub fn set_one_per_sm_deep(&mut self, on: bool) {
        self.one_per_sm_deep = on;
    }

    /// Whether plans may run the 8-stage kernel (see [`GroupedGemm::set_one_per_sm_deep`]).
    pub fn one_per_sm_deep(&self) -> bool {
        self.one_per_sm_deep
    }

    /// Sets whether the plans made from now on that run the blocked-order kernel (see
    /// [`GroupedGemm::set_blocked_k`]) copy each weight row's scales 16 bytes (four 64-value
    /// chunks) at a time (default `true`): `nvfp4_grouped_gemm_wgmma_f16b_wtsg`
    /// (`_f16b_wt8sg` in the 8-stage form), which a plan runs when every problem with work
    /// has its `sfb` in [`ScaleLayout::Plain`] at a 16-byte aligned address and `k` a
    /// multiple of 256 (a row's scales of four chunks are then 16 aligned bytes; its rows
    /// are `k / 16` bytes apart, so each row's copy is an L2 request of its own). Otherwise,
    /// or with `false`, each row's 4 scale bytes are copied every chunk (blocked scales put
    /// a chunk's 128 rows in one 512-byte block, which needs nothing more). The sums are the
    /// same either way. No effect on the portable path. Plans already made keep theirs.
    pub fn set_scale_groups(&mut self, on: bool) {
        self.scale_groups = on;
    }

    /// Whether plans may copy the weight scales four chunks at a time (see
    /// [`GroupedGemm::set_scale_groups`]).
    pub fn scale_groups(&self) -> bool {
        self.scale_groups
    }

    /// Sets whether the plans made from now on that run a Hopper `_wt` kernel (16-bit tokens,
    /// weights by TMA: NVFP4 groups after the token pass, and W4A16 groups; see
    /// [`GroupedGemm::set_weights_by_tma`]; host sizes) hand out their work units
    /// dynamically when they have more units than CTA slots (default `true`): each CTA takes
    /// its first unit by its index and every later one from a counter in the plan's
    /// workspace (4 bytes, zeroed when the plan is made and left zero by every launch) as its
    /// previous unit's K loop ends, so CTAs that run faster (an SM to themselves, fewer
    /// tokens) take more units, instead of every CTA taking every `grid`-th one (the pair
    /// kernel, [`GroupedGemm::set_pair_tiles`]: each cluster of two CTAs one slot, its
    /// first CTA fetching for both). A unit is a whole tile or, in a launch that cuts
    /// tiles along K ([`GroupedGemm::set_split_k`]), one part of a cut tile; such a launch
    /// hands out every cut tile's first part before any second one, and its parts shrink
    /// (part `q` of `p` covers `p + 2 - q` shares of the K range: 5 : 4 : 3 for three), so
    /// the CTAs that finish their whole tiles first take the largest parts. H100 runs
    /// 172-174 and 180: G8 N7168 K2048 (728 whole tiles on 264 CTA slots) 2-3% faster, G8
    /// N4096 K7168 (264 whole tiles, then 88 cut in three) 0.9-1.7%. Without cut tiles the
    /// sums are bitwise the same either way; with them the parts' K ranges differ, so the
    /// fp32 sums may differ in rounding (both are within the contract's bound). No effect on
    /// the portable path. Plans already made keep theirs.
    pub fn set_dynamic_units(&mut self, on: bool) {
        self.dynamic_units = on;
    }

    /// Sets when the plans made from now on that would run the blocked-order 4-stage
    /// kernel (`_f16b_wt` or `_f16b_wtsg`: after the token pass, more tiles than SMs; Hopper
    /// path, host sizes) run the pair kernel (`_f16b_wt2` or `_f16b_wtsg2`) instead (default
    /// [`PairTiles::Auto`]): clusters of two CTAs, each cluster taking 256-row tiles (each
    /// CTA 128 rows of them) and the TMA bringing each chunk's token tile into both CTAs at
    /// once (multicast), so the tokens cross L2 half as often. Its persistent grid holds
    /// [`GroupedGemm::pair_clusters`] clusters (what the device runs at once). Its units are
    /// dynamic as [`GroupedGemm::set_dynamic_units`] says, counting one slot a cluster (the
    /// cluster's first CTA takes each next unit for both); tiles are cut along K as
    /// [`SplitK`] says, counting one slot a cluster ([`SplitK::Auto`]: the tiles past the
    /// last full wave of clusters), each CTA's half of a cut tile in its own workspace (twice
    /// the 128-row kernel's). The sums are bitwise those of the 128-row kernel on the same K
    /// cut. Where the pair kernels did not load, or no cluster of them fits, plans keep the
    /// other entries. Plans already made keep theirs.
    pub fn set_pair_tiles(&mut self, when: PairTiles) {
        self.pair_tiles = when;
    }

    /// When blocked-order plans run the pair kernel (see [`GroupedGemm::set_pair_tiles`]).
    pub fn pair_tiles(&self) -> PairTiles {
        self.pair_tiles
    }

    /// Whether plans may take their units dynamically (see
    /// [`GroupedGemm::set_dynamic_units`]).
    pub fn dynamic_units(&self) -> bool {
        self.dynamic_units
    }

    /// The PTX module the kernels come from, the compute capability and which PTX it is.
    pub(crate) fn module(&self) -> (&Arc<CudaModule>, (i32, i32), &'static str) {
        (&self.module, self.compute_capability, self.ptx_arch)
    }

    /// The CUDA context the kernels are loaded in.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The device's compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// PTX entry names of what an NVFP4 launch with host sizes runs: the path's NVFP4
    /// kernel, the token pass and the path's fp16-activation kernel, or either by size, as
    /// [`TokenDequant`] says (see [`GroupedGemm::plan`]; the MoE forms with device row
    /// counts always run the NVFP4 kernel). On the Hopper path the fp16-activation kernel is
    /// its `_wt` entry (weights by TMA) when every problem's weight rows are 16-byte aligned,
    /// in the blocked K order (`_f16b_wt`) when also every `k` is a multiple of 64 (see
    /// [`GroupedGemm::set_blocked_k`]), in its 8-stage form (`_f16b_wt8`) for launches of at
    /// most one tile an SM (see [`GroupedGemm::set_one_per_sm_deep`]), either copying its
    /// weight scales four chunks at a time (`_f16b_wtsg`, `_f16b_wt8sg`) where every
    /// problem's are plain, 16-byte aligned and `k` a multiple of 256 (see
    /// [`GroupedGemm::set_scale_groups`]).
    pub fn kernel_name(&self) -> String {
        let nvfp4 = self.path.kernel().name;
        let pass = match self.funcs_wt {
            Some(_) if self.weights_tma && self.blocked_k => format!(
                "{} + {}{} ({} where a k is not a multiple of 64, {} for other weights)",
                DEQUANT_TOKENS.name,
                GROUPED_GEMM_WGMMA_F16B_WT.name,
                match (&self.func_wt8, self.one_per_sm_deep) {
                    (Some(_), true) => format!(
                        " ({} for at most one tile an SM)",
                        GROUPED_GEMM_WGMMA_F16B_WT8.name
                    ),
                    _ => String::new(),
                } + match (&self.funcs_sg, self.scale_groups) {
                    (Some(_), true) => format!(
                        " (its `sg` form, {}, where every weight scale tensor is plain, \
                         16-byte aligned and k a multiple of 256)",
                        GROUPED_GEMM_WGMMA_F16B_WTSG.name
                    ),
                    _ => String::new(),
                }
                .as_str()
                    + match (self.func_pair.iter().all(Option::is_some), self.pair_tiles) {
                        (true, PairTiles::Auto | PairTiles::Always) => format!(
                            " (the pair kernels {} / {} {})",
                            GROUPED_GEMM_WGMMA_F16B_WT2.name,
                            GROUPED_GEMM_WGMMA_F16B_WTSG2.name,
                            if self.pair_tiles == PairTiles::Auto {
                                "from two waves of 256-row tiles"
                            } else {
                                "for more tiles than SMs"
                            }
                        ),
                        _ => String::new(),
                    }
                    .as_str(),
                GROUPED_GEMM_WGMMA_F16A_WT.name,
                self.pass_kernel().name
            ),
            Some(_) if self.weights_tma => format!(
                "{} + {} ({} for other weights)",
                DEQUANT_TOKENS.name,
                GROUPED_GEMM_WGMMA_F16A_WT.name,
                self.pass_kernel().name
            ),
            _ => format!("{} + {}", DEQUANT_TOKENS.name, self.pass_kernel().name),
        };
        match self.token_dequant {
            TokenDequant::Never => nvfp4.to_string(),
            TokenDequant::Always => pass,
            TokenDequant::Auto => format!(
                "{nvfp4}, or from {min:.0e} multiply-adds {pass}",
                min = TokenDequant::auto_min_macs(self.path) as f64
            ),
        }
    }

    /// The GEMM kernel that runs after a token pass: the portable path's paired-token entry,
    /// or the Hopper path's fp16-activation kernel.
    fn pass_kernel(&self) -> &'static KernelInfo {
        // The same choice `launch` makes: the paired entry wherever it was loaded.
        if self.paired.is_some() {
            &GROUPED_GEMM_MMA_F16P
        } else {
            self.path.kernel_for(Activation::F16)
        }
    }

    /// The kernel path launches run.
    pub fn path(&self) -> KernelPath {
        self.path
    }

    /// Which embedded PTX was loaded: `"sm_90a"` or `"sm_80"`.
    pub fn ptx_arch(&self) -> &'static str {
        self.ptx_arch
    }

    /// Streaming multiprocessors of the device.
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    /// Clusters of the pair kernels (two CTAs each, see [`GroupedGemm::set_pair_tiles`]) that
    /// the device holds at once, at most [`GroupedGemm::sm_count`]
    /// (`cuOccupancyMaxActiveClusters`; the SM count where that query fails): the persistent
    /// grid of a pair launch and its units' slots. 0 where the pair kernels did not load or no
    /// cluster of them fits (plans then never run them).
    pub fn pair_clusters(&self) -> u32 {
        self.pair_clusters
    }

    /// Resident CTAs per SM of the NVFP4-activation kernel, as the occupancy query reported
    /// (2 if it failed). [`GroupedGemm::ctas_per_sm_for`] gives any activation kind's.
    pub fn ctas_per_sm(&self) -> u32 {
        self.ctas_per_sm_for(Activation::Nvfp4)
    }

    /// Resident CTAs per SM of the kernel for `activation` (2 if the query failed). For fp16
    /// on the portable path: the smaller of its two fp16-activation kernels' (user fp16
    /// activations, and the token pass's rows), so either kernel's grid is resident.
    pub fn ctas_per_sm_for(&self, activation: Activation) -> u32 {
        self.ctas_per_sm[activation as usize]
    }

    /// CTAs a launch of `total_tiles` uncut tiles with NVFP4 activations uses: the
    /// persistent grid `min(total_tiles, sm_count * ctas_per_sm)`, at least 1. What a plan's
    /// launch uses (with its token pass and cut tiles) is [`GroupedGemm::plan_grid_size`].
    pub fn grid_size(&self, total_tiles: u32) -> u32 {
        self.grid_size_for(Activation::Nvfp4, total_tiles)
    }

    /// CTAs the GEMM kernel of `plan`'s launch uses: `min(units, sm_count * ctas_per_sm)` of
    /// the kernel it runs (the fp16-activation one after a token pass), where `units` counts
    /// its whole tiles and the parts of its cut tiles; at least 1. For the pair kernel (see
    /// [`GroupedGemm::set_pair_tiles`]) two CTAs a unit, at most
    /// [`GroupedGemm::pair_clusters`] clusters: `2 * min(units, pair_clusters)`.
    pub fn plan_grid_size(&self, plan: &GroupPlan<'_>) -> u32 {
        if plan.pair {
            2 * plan.units.clamp(1, self.pair_clusters.max(1))
        } else {
            self.grid_size_for(plan.launched(), plan.units)
        }
    }

    /// [`GroupedGemm::grid_size`] for the kernel of `activation`.
    pub fn grid_size_for(&self, activation: Activation, total_tiles: u32) -> u32 {
        total_tiles
            .min(
                self.sm_count
                    .saturating_mul(self.ctas_per_sm_for(activation)),
            )
            .max(1)
    }

    fn check_stream(&self, stream: &CudaStream) -> Result<()> {
        if **stream.context() != *self.ctx {
            return Err(Error::ContextMismatch { what: "stream" });
        }
        Ok(())
    }

    /// Validates `problems` (every rule of [`crate::validate`], plus: each cudarc buffer
    /// belongs to this context), packs the problem table and uploads it on `stream`.
    ///
    /// The returned plan borrows `problems`; launch it with [`GroupedGemm::launch`]. An empty
    /// group, or one whose problems all have `m == 0` or `n == 0`, gives a plan with no tiles
    /// whose launch does nothing (and uploads nothing).
    ///
    /// For groups of at least [`TokenDequant::auto_min_macs`] multiply-adds (or as
    /// [`GroupedGemm::set_token_dequant`] says), the plan also holds an fp16 copy of the
    /// tokens: each launch first dequantizes every problem's token rows once (exactly: E2M1
    /// times E4M3 fits fp16), then runs an fp16-activation kernel on them (on the portable
    /// path one that reads the pass's rows in its own K order). That costs
    /// `2 k` bytes of device memory per token row (per distinct `a`, up to its last row
    /// used), allocated here and freed with the plan.
    ///
    /// Where the launch's tiles would leave CTA slots idle ([`SplitK`], set with
    /// [`GroupedGemm::set_split_k`]), the plan also holds a workspace in which the parts of
    /// tiles cut along K meet: per cut tile, `parts` x 32 KiB (portable) or 64 KiB (Hopper;
    /// twice that for the pair kernel's 256-row tiles, one workspace a CTA of the cluster)
    /// of fp32 sums plus a 4-byte counter, at most [`SplitK::MAX_WS_BYTES`] (a launch that
    /// would need more is not cut); with dynamic units ([`GroupedGemm::set_dynamic_units`])
    /// 4 more bytes (the pair kernel: 256, between its CTAs' workspaces).
    /// [`GroupPlan::split_k_schedule`] says what was chosen.
    ///
    /// # Errors
    /// Any validation error of [`crate::validate::check_specs`] (naming the problem and
    /// field); [`Error::WrongContext`] for a buffer of another context;
    /// [`Error::ContextMismatch`] if `stream` belongs to another context; [`Error::Driver`]
    /// if the upload, the fp16 copy's or the workspace's allocation fails; on the Hopper path,
    /// [`Error::InvalidDimension`] (field `m`) if a problem's rows reach past row 2^31 - 1 of
    /// its `a` (the kernel reads the copy by TMA).
    pub fn plan<'a>(
        &self,
        stream: &Arc<CudaStream>,
        problems: &'a [Problem<'a>],
    ) -> Result<GroupPlan<'a>> {
        self.plan_typed(stream, problems, GemmTypes::default())
    }

    /// [`plan`](Self::plan) for the activation and output types of `types` (see
    /// [`GemmTypes`]: fp16 / bf16 activations with NVFP4 weights, fp16 / bf16 outputs).
    ///
    /// # Errors
    /// As [`plan`](Self::plan), with the rules for `a` of
    /// [`crate::validate::check_specs_typed`]; [`Error::InvalidGroup`] (field `output`) for
    /// bf16 outputs with NVFP4 activations (not supported). On [`KernelPath::Hopper`] with
    /// 16-bit activations, which the kernel reads by TMA: [`Error::InvalidDimension`] (field
    /// `m`) if a problem's rows reach past row 2^31 - 1 of its `a`, [`Error::InvalidStride`]
    /// (field `lda`) for strides of 2^40 bytes or more.
    pub fn plan_typed<'a>(
        &self,
        stream: &Arc<CudaStream>,
        problems: &'a [Problem<'a>],
        types: GemmTypes,
    ) -> Result<GroupPlan<'a>> {
        self.check_stream(stream)?;
        let flags = check_types(types)?;
        let specs: Vec<ProblemSpec> = problems.iter().map(Problem::spec).collect();
        let checked = validate::check_group_typed(&specs, None, types.activation)?;
        let packed = table::pack_checked(&specs, &checked, self.path.kernel()).with_flags(flags);
        let bound = packed.total_tiles;
        self.make_plan(stream, problems, packed, None, bound, types.activation)
    }

    /// [`plan_typed`](Self::plan_typed) + [`launch`](Self::launch).
    ///
    /// # Errors
    /// As [`plan_typed`](Self::plan_typed) and [`launch`](Self::launch).
    pub fn run_typed<'a>(
        &self,
        stream: &Arc<CudaStream>,
        problems: &[Problem<'a>],
        types: GemmTypes,
    ) -> Result<()> {
        let plan = self.plan_typed(stream, problems, types)?;
        self.launch(stream, &plan)
    }

    /// Checks the buffers' contexts and uploads the table of a validated, packed group.
    /// `counts`: the device row counts and how to read them (`None`: host sizes);
    /// `tile_bound`: the tiles of the launch, or an upper bound with device sizes.
    pub(crate) fn make_plan<'a>(
        &self,
        stream: &Arc<CudaStream>,
        problems: &'a [Problem<'a>],
        packed: PackedTable,
        counts: Option<(&'a DeviceInput<'a>, SizeMode)>,
        tile_bound: u32,
        activation: Activation,
    ) -> Result<GroupPlan<'a>> {
        let mut inputs = Vec::with_capacity(problems.len() * 4 + 1);
        let mut outputs = Vec::with_capacity(problems.len());
        for (i, p) in problems.iter().enumerate() {
            for (field, input) in p.inputs() {
                self.check_context(i, field, input.context())?;
                inputs.push(input);
            }
            self.check_context(i, "c", p.c.context())?;
            outputs.push(&p.c);
        }
        let (mode, counts_addr) = match counts {
            Some((input, mode)) => {
                self.check_counts_context(input)?;
                inputs.push(input);
                (mode, input.addr())
            }
            None => (SizeMode::Host, 0),
        };
        self.upload_plan(
            stream,
            inputs,
            outputs,
            packed,
            mode,
            counts_addr,
            tile_bound,
            activation,
        )
    }

    /// [`Error::InvalidGroup`] (field `counts`) if the device counts belong to another context.
    pub(crate) fn check_counts_context(&self, counts: &DeviceInput<'_>) -> Result<()> {
        if counts.context().is_some_and(|ctx| **ctx != *self.ctx) {
            return Err(Error::InvalidGroup {
                field: "counts",
                reason: "belongs to another CUDA context".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn check_context(
        &self,
        problem: usize,
        field: &'static str,
        ctx: Option<&Arc<CudaContext>>,
    ) -> Result<()> {
        if ctx.is_some_and(|ctx| **ctx != *self.ctx) {
            return Err(Error::WrongContext { problem, field });
        }
        Ok(())
    }

    /// Uploads the table (if there is anything to launch) and assembles the plan.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn upload_plan<'a>(
        &self,
        stream: &Arc<CudaStream>,
        inputs: Vec<&'a DeviceInput<'a>>,
        outputs: Vec<&'a DeviceOutput<'a>>,
        packed: PackedTable,
        mode: SizeMode,
        counts_addr: u64,
        tile_bound: u32,
        activation: Activation,
    ) -> Result<GroupPlan<'a>> {
        let (table, maps, pass, weights_tma, blocked_k, pair) = if tile_bound == 0 {
            (None, None, None, false, false, None)
        } else {
            let macs: u64 = packed
                .descs
                .iter()
                .map(|d| u64::from(d.m) * u64::from(d.n) * u64::from(d.k))
                .sum();
            let with_pass = self.token_dequant.wants_pass(macs, self.path)
                && activation == Activation::Nvfp4
                && mode == SizeMode::Host
                && packed.descs.len() <= MAX_PASS_JOBS;
            // The 16-bit launch on the Hopper path reads its weights by TMA too (the `_wt`
            // entry) when every problem's weight rows are 16-byte aligned.
            let weights_tma = self.funcs_wt.is_some()
                && self.weights_tma
                && (with_pass || activation != Activation::Nvfp4)
                && token_maps::weights_by_tma(&packed.descs);
            // After the pass, the `_wt` kernel in the blocked K order when every problem the
            // kernel multiplies has whole 64-value chunks.
            let blocked_k = with_pass
                && weights_tma
                && self.blocked_k
                && packed
                    .descs
                    .iter()
                    .all(|d| !token_maps::has_tiles(d) || d.k % CHUNK_K == 0);
            // The pair kernel runs after the pass only (its table and maps are the pass's):
            // its 256-row tile count when it runs.
            let pair = if with_pass {
                self.pair(blocked_k, &packed.descs, tile_bound)
            } else {
                None
            };
            let (pass, maps) = if with_pass {
                let (pass, maps) =
                    self.upload_token_pass(stream, &packed.descs, weights_tma, pair.is_some())?;
                (Some(pass), maps)
            } else if self.path.kernel_for(activation).token_maps {
                let maps = token_maps::encode_for(&packed.descs, weights_tma)?;
                (None, Some(stream.clone_htod(&maps)?))
            } else {
                (None, None)
            };
            let descs: Vec<DeviceDesc> = packed.descs.iter().copied().map(DeviceDesc).collect();
            (
                Some(stream.clone_htod(&descs)?),
                maps,
                pass,
                weights_tma,
                blocked_k,
                pair,
            )
        };
        // The kernel the launch runs: the fp16-activation one after a token pass.
        let launched = if pass.is_some() {
            Activation::F16
        } else {
            activation
        };
        // A blocked-order launch of at most one tile an SM may run the 8-stage kernel: one
        // CTA an SM with the shared memory and registers of two (H100 run 136: G2 N3072 K4096
        // 46.0-46.6 us against 48.8-49.3 with the 4-stage kernel and its tiles cut in halves
        // into both CTA slots; G2 N4096 K1536 28.2-28.6 against 28.5-28.9). Its CTA slots are
        // the SMs, so `SplitK::Auto` does not cut such a launch.
        // The pair kernel: its launch counts 256-row tiles.
        let tile_bound = pair.unwrap_or(tile_bound);
        let pair = pair.is_some();
        let deep_fits = !pair
            && blocked_k
            && self.one_per_sm_deep
            && self.func_wt8.is_some()
            && tile_bound <= self.sm_count;
        // Dynamic units: the `_wt` kernels (16-bit tokens, weights by TMA, the pair kernels
        // too) take them.
        let dynamic = weights_tma && self.dynamic_units && mode == SizeMode::Host;
        let (split, split_ws, units, dynamic) = if table.is_some() && mode == SizeMode::Host {
            let kind = if pair {
                Slots::Pairs
            } else if deep_fits {
                Slots::OnePerSm
            } else {
                Slots::PerSm
            };
            self.split_for(stream, &packed.descs, tile_bound, launched, kind, dynamic)?
        } else {
            (Split::default(), None, tile_bound, false)
        };
        let deep = deep_fits && units <= self.sm_count;
        // The blocked-order kernel copies its weight scales four chunks at a time when every
        // problem it multiplies has them plain, 16-byte aligned (the copy's alignment;
        // validation asks 4 bytes of any scales) and `k` a multiple of 256 (so each row's
        // group of four chunks is 16 aligned bytes).
        let scale_groups = blocked_k
            && self.scale_groups
            && self
                .funcs_sg
                .as_ref()
                .is_some_and(|(_, wt8)| !deep || wt8.is_some())
            && packed.descs.iter().all(|d| {
                !token_maps::has_tiles(d)
                    || (d.sfb_layout == ScaleLayout::Plain as u32
                        && d.sfb.is_multiple_of(16)
                        && d.k.is_multiple_of(256))
            });
        let table_addr = table.as_ref().map_or(0, |t| t.device_ptr(stream).0);
        let maps_addr = maps.as_ref().map_or(0, |m| m.device_ptr(stream).0);
        Ok(GroupPlan {
            path: self.path,
            activation,
            inputs,
            outputs,
            packed,
            mode,
            counts_addr,
            tile_bound,
            table,
            table_addr,
            maps,
            maps_addr,
            pass,
            weights_tma,
            blocked_k,
            deep,
            scale_groups,
            dynamic,
            pair,
            split,
            split_ws,
            units,
            context: self.ctx.clone(),
        })
    }

    /// Whether a plan of `tiles` 128-row tiles of `descs` in the blocked K order
    /// (`blocked_k`: after the token pass, weights by TMA) runs the pair kernel (loaded, and
    /// [`PairTiles::wants_pairs`]): its 256-row tile count if so.
    fn pair(&self, blocked_k: bool, descs: &[ProblemDesc], tiles: u32) -> Option<u32> {
        if !blocked_k || !self.func_pair.iter().all(Option::is_some) {
            return None;
        }
        let pair_tiles = pair_tile_count(descs);
        self.pair_tiles
            .wants_pairs(tiles, pair_tiles, self.sm_count, self.pair_clusters)
            .then_some(pair_tiles)
    }

    /// The K cut of a launch of `tiles` tiles (host sizes) on the kernel for `activation`:
    /// the schedule of [`SplitK::schedule`] for the CTA slots `kind` names, its workspace
    /// (the counters zeroed on `stream`), the launch's work units, and whether they are
    /// dynamic ([`MODE_DYNAMIC`]: asked by `dynamic`, given to launches of more work units
    /// than CTA slots, whole tiles and cut tiles' parts counted, the parts then in the
    /// guided order; the zeroed unit counter then follows the slots: for pairs, rank 0's,
    /// in the `PAIR_COUNTER_BYTES` before rank 1's). No cut when the workspace would pass
    /// [`SplitK::MAX_WS_BYTES`].
    ///
    /// # Errors
    /// [`Error::Driver`] if the allocation or the zeroing fails.
    fn split_for(
        &self,
        stream: &Arc<CudaStream>,
        descs: &[ProblemDesc],
        tiles: u32,
        activation: Activation,
        kind: Slots,
        dynamic: bool,
    ) -> Result<(Split, Option<CudaSlice<u8>>, u32, bool)> {
        let kernel = self.path.kernel_for(activation);
        let pair = kind == Slots::Pairs;
        let ctas_per_sm = self.ctas_per_sm_for(activation);
        let (sms, slots) = kind.schedule_slots(self.sm_count, ctas_per_sm, self.pair_clusters);
        let min_chunks = descs
            .iter()
            .filter(|d| d.m > 0 && d.n > 0)
            .map(|d| d.k.div_ceil(CHUNK_K))
            .min()
            .unwrap_or(0);
        let (dp, parts) = self.split_k.schedule(tiles, slots, sms, min_chunks);
        // Dynamic units only where they balance something: more units than CTA slots
        // (H100 runs 172-173: G8 N7168 K2048, 728 tiles on 264 slots, 2-3% faster). A cut
        // launch's parts then come in the guided order and sizes (largest first; finer
        // equal cuts cost more than they balance, run 172: +4% to +37%).
        let units = if parts <= 1 {
            u64::from(tiles)
        } else {
            u64::from(dp) + u64::from(tiles - dp) * u64::from(parts)
        };
        // Against the slots of the kernel that runs.
        let run_slots = kind.run_slots(units, self.sm_count, ctas_per_sm, self.pair_clusters);
        let dynamic = dynamic && units > u64::from(run_slots);
        if parts <= 1 && !dynamic {
            return Ok((Split::default(), None, tiles, false));
        }
        let (dp, parts) = if parts <= 1 { (tiles, 1) } else { (dp, parts) };
        let cut = tiles - dp;
        let counters = split_counter_bytes(cut);
        let slots_end = split_ws_bytes(cut, parts, kernel.threads);
        // With dynamic units the launch's unit counter follows the slots; the pair kernel
        // has one workspace per rank, rank 0's, then the counter's `PAIR_COUNTER_BYTES`,
        // then rank 1's.
        let bytes = if pair {
            2 * slots_end + PAIR_COUNTER_BYTES
        } else {
            slots_end + if dynamic { 4 } else { 0 }
        };
        if bytes > SplitK::MAX_WS_BYTES {
            return Ok((Split::default(), None, tiles, false));
        }
        // SAFETY: the kernel reads a slot only after its part wrote it (in the same launch);
        // the counters, which it reads first, and the unit counter are zeroed here.
        let mut ws = unsafe { stream.alloc::<u8>(bytes as usize) }?;
        if counters > 0 {
            stream.memset_zeros(&mut ws.slice_mut(..counters as usize))?;
            if pair {
                let second = (slots_end + PAIR_COUNTER_BYTES) as usize;
                stream.memset_zeros(&mut ws.slice_mut(second..second + counters as usize))?;
            }
        }
        if dynamic {
            let counter = slots_end as usize;
            stream.memset_zeros(&mut ws.slice_mut(counter..counter + 4))?;
        }
        let split = Split {
            dp_tiles: dp,
            parts,
            ws: ws.device_ptr(stream).0,
        };
        Ok((split, Some(ws), dp + cut * parts, dynamic))
    }

    /// The token pass of an NVFP4 group (see [`TokenPass`]): one fp16 workspace per distinct
    /// token operand (`a`, `lda`, `sfa`, its layout and `k`), as many rows as its problems
    /// reach (`m_offset + m`); one job per problem with tiles; the fp16-activation table
    /// (each such problem's `a` the workspace, `lda = 2 k`) and, on the Hopper path, its
    /// token maps.
    ///
    /// # Errors
    /// As [`token_maps::encode`]; [`Error::Driver`] if an allocation or upload fails.
    fn upload_token_pass(
        &self,
        stream: &Arc<CudaStream>,
        descs: &[ProblemDesc],
        weights_tma: bool,
        pair: bool,
    ) -> Result<(TokenPass, Option<CudaSlice<TokenMap>>)> {
        let maps = self.path.kernel_for(Activation::F16).token_maps;
        if maps {
            // Refuse rows the maps cannot address before allocating anything.
            for (problem, d) in descs.iter().enumerate() {
                token_maps::check_rows(problem, d)?;
            }
        }
        let (sizes, operand_of) = token_operands(descs)?;
        let mut addrs = Vec::with_capacity(sizes.len());
        let mut workspaces = Vec::with_capacity(sizes.len());
        for &bytes in &sizes {
            // SAFETY: the pass writes every byte the fp16 kernel reads (the rows of the jobs
            // that name this workspace) before that kernel runs; other rows are never read.
            let ws = unsafe { stream.alloc::<u8>(bytes.max(1)) }?;
            addrs.push(ws.device_ptr(stream).0);
            workspaces.push(ws);
        }
        let mut jobs = Vec::new();
        let mut table16 = Vec::with_capacity(descs.len());
        let mut max_items = 1u64;
        for (i, d) in descs.iter().enumerate() {
            let mut d16 = *d;
            if let Some(w) = operand_of[i] {
                d16.a = addrs[w];
                d16.lda = u64::from(d.k) * 2;
                d16.flags = 0;
                jobs.push(DeviceJob(TokenJob {
                    out: addrs[w],
                    problem: i as u32,
                    pad: 0,
                }));
                max_items = max_items.max(u64::from(d.m) * u64::from(d.k / 16));
            }
            table16.push(d16);
        }
        if pair {
            // The pair kernel's 256-row tiles.
            let mut start = 0u32;
            for d in &mut table16 {
                d.tile_start = start;
                start += pair_tiles_of(d) as u32;
            }
        }
        let maps = if maps && pair {
            let rows = GROUPED_GEMM_WGMMA_F16B_WT2.tile_m / 2;
            Some(stream.clone_htod(&token_maps::encode_with_weights(&table16, rows)?)?)
        } else if maps {
            Some(stream.clone_htod(&token_maps::encode_for(&table16, weights_tma)?)?)
        } else {
            None
        };
        let grid_x = pass_grid_x(max_items, jobs.len(), self.path, self.sm_count);
        let table16: Vec<DeviceDesc> = table16.into_iter().map(DeviceDesc).collect();
        let jobs = stream.clone_htod(&jobs)?;
        let table = stream.clone_htod(&table16)?;
        let (jobs_addr, table_addr) = (jobs.device_ptr(stream).0, table.device_ptr(stream).0);
        let pass = TokenPass {
            jobs,
            grid_x,
            workspaces,
            table,
            jobs_addr,
            table_addr,
        };
        Ok((pass, maps))
    }

    /// Enqueues the plan's kernel launch on `stream` (two launches for a plan that takes the
    /// token pass: the pass, then the GEMM; on the Hopper path a GEMM of more CTAs than SMs,
    /// or one running the 8-stage kernel ([`GroupPlan::one_per_sm_deep`]), is launched as
    /// the pass's programmatic dependent, so its CTAs start as the pass's
    /// finish and wait on the device for the pass to complete). Does not synchronise the
    /// host, so it may be captured into a CUDA graph (keep the plan alive as long as the
    /// graph).
    ///
    /// Stream bookkeeping (cudarc's events, active when the context runs several streams):
    /// `stream` first waits for the last writes of every input and the last reads and
    /// writes of every output; after the launch the inputs' read events and the outputs'
    /// write events are recorded on `stream`. Raw ([`DeviceInput::from_raw`]) buffers are
    /// the caller's to order. Concurrent launches of plans sharing an output serialise on
    /// the host around the enqueue.
    ///
    /// While `stream` is being captured into a CUDA graph no events are waited on or
    /// recorded (waiting on an event recorded outside the capture would invalidate it): the
    /// graph's replays run outside cudarc's tracking, so order them against other streams
    /// yourself, and keep the plan alive while the graph may be launched.
    ///
    /// # Errors
    /// [`Error::ContextMismatch`] if `stream` or the plan belongs to another context;
    /// [`Error::InvalidGroup`] (field `plan`) if the plan was made by a [`GroupedGemm`] of
    /// another [`KernelPath`] (its table is packed for that path's tiles), or runs the pair
    /// kernel (see [`GroupedGemm::set_pair_tiles`]) and this one did not load it;
    /// [`Error::Driver`] if the launch fails (a kernel fault shows up later, at the next
    /// synchronisation, as a driver error).
    pub fn launch(&self, stream: &Arc<CudaStream>, plan: &GroupPlan<'_>) -> Result<()> {
        self.check_stream(stream)?;
        if *plan.context != *self.ctx {
            return Err(Error::ContextMismatch { what: "plan" });
        }
        if plan.path != self.path {
            return Err(Error::InvalidGroup {
                field: "plan",
                reason: format!(
                    "was made for the {:?} kernel path (its tiles and table), and this \
                     GroupedGemm launches the {:?} path: launch it with a GroupedGemm of its path",
                    plan.path, self.path
                ),
            });
        }
        if plan.pair && !self.func_pair.iter().all(Option::is_some) {
            return Err(Error::InvalidGroup {
                field: "plan",
                reason: "runs the pair kernel (256-row tiles, clusters of two CTAs), which this \
                         GroupedGemm did not load: launch it with the GroupedGemm that made it"
                    .into(),
            });
        }
        let Some(table) = &plan.table else {
            return Ok(());
        };
        let total_tiles = plan.tile_bound;
        // At most MAX_PROBLEMS = 2^16 descriptors (validated).
        let num_problems = plan.packed.descs.len() as u32;
        let (counts, mode) = (plan.counts_addr, plan.mode as u32);
        let mode = if plan.dynamic {
            mode | MODE_DYNAMIC
        } else {
            mode
        };

        // cudarc's events: wait now, record when these guards drop (after the launch is
        // enqueued). Not while `stream` is being captured: waiting there on an event recorded
        // outside the capture is invalid, and a graph replays outside cudarc's tracking anyway.
        let capturing = stream
            .capture_status()
            .is_ok_and(|status| status != CaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE);
        let track = (!capturing).then_some(&**stream);
        let table_read = track.map(|stream| table.device_ptr(stream).1);
        let maps_read = track.and_then(|stream| Some(plan.maps.as_ref()?.device_ptr(stream).1));
        let reads: Vec<_> = match track {
            Some(stream) => plan
                .inputs
                .iter()
                .filter_map(|i| i.read_access(stream))
                .collect(),
            None => Vec::new(),
        };
        let writes: Vec<_> = plan.outputs.iter().map(|c| c.write_access(track)).collect();
        let mut table_ptr = plan.table_addr;
        let mut activation = plan.activation;
        // A plan with the token pass: the pass first, then the fp16-activation kernel on its
        // table (the guards order the workspaces across streams for cudarc).
        let mut pass_guards = Vec::new();
        if let Some(pass) = &plan.pass {
            let num_jobs = pass.jobs.len() as u32;
            if let Some(stream) = track {
                pass_guards.push(pass.jobs.device_ptr(stream).1);
                pass_guards.push(pass.table.device_ptr(stream).1);
                for ws in &pass.workspaces {
                    pass_guards.push(ws.device_ptr(stream).1);
                }
            }
            let cfg = LaunchConfig {
                grid_dim: (pass.grid_x, num_jobs, 1),
                block_dim: (DEQUANT_TOKENS.threads, 1, 1),
                shared_mem_bytes: 0,
            };
            // The portable path's GEMM reads the pass's rows in its own K order (1), the
            // Hopper path's `_f16b_wt` kernel in the blocked K order (2).
            let paired = if plan.blocked_k {
                2u32
            } else {
                u32::from(self.paired.is_some())
            };
            let mut launch = stream.launch_builder(&self.dequant);
            launch
                .arg(&plan.table_addr)
                .arg(&pass.jobs_addr)
                .arg(&num_jobs)
                .arg(&paired);
            // SAFETY: the arguments match `nvfp4_dequant_tokens(table: *const ProblemDesc,
            // jobs: *const TokenJob, num_jobs: u32, paired: u32)`; the table is the plan's
            // validated NVFP4 table, each job names one of its problems with tiles and a
            // workspace of the plan holding `(m_offset + m) * k` fp16 values for it (rows that
            // other jobs of the same operand may write are the same rows of the same tokens:
            // identical values);
            // with `paired` 2 every such problem's `k` is a multiple of 64 (`upload_plan`).
            unsafe { launch.launch(cfg) }?;
            table_ptr = pass.table_addr;
            activation = Activation::F16;
        }

        // The `_wt` entry when the plan's weights are read by TMA (16-bit launches on the
        // Hopper path): same tiles, threads and parameters, one more barrier per stage.
        let wt = match (&self.funcs_wt, plan.weights_tma, activation) {
            (Some(_), true, Activation::F16) if plan.blocked_k && plan.pair => {
                let i = usize::from(plan.scale_groups);
                self.func_pair[i].as_ref().map(|f| (f, PAIR_KERNELS[i]))
            }
            (Some(wt), true, Activation::F16) if plan.blocked_k => {
                match (&self.func_wt8, &self.funcs_sg) {
                    (_, Some((_, Some(wt8sg)))) if plan.deep && plan.scale_groups => {
                        Some((wt8sg, &GROUPED_GEMM_WGMMA_F16B_WT8SG))
                    }
                    (Some(wt8), _) if plan.deep => Some((wt8, &GROUPED_GEMM_WGMMA_F16B_WT8)),
                    (_, Some((wtsg, _))) if plan.scale_groups => {
                        Some((wtsg, &GROUPED_GEMM_WGMMA_F16B_WTSG))
                    }
                    _ => Some((&wt[2], &GROUPED_GEMM_WGMMA_F16B_WT)),
                }
            }
            (Some(wt), true, Activation::F16) => Some((&wt[0], &GROUPED_GEMM_WGMMA_F16A_WT)),
            (Some(wt), true, Activation::Bf16) => Some((&wt[1], &GROUPED_GEMM_WGMMA_BF16A_WT)),
            _ => None,
        };
        let kernel = wt.map_or(self.path.kernel_for(activation), |(_, k)| k);
        let split_guard =
            track.and_then(|stream| Some(plan.split_ws.as_ref()?.device_ptr(stream).1));
        let split = plan.split;
        // (For the pair kernel `plan_grid_size` counts two CTAs, a cluster, a unit.)
        let cfg = LaunchConfig {
            grid_dim: (self.plan_grid_size(plan), 1, 1),
            block_dim: (kernel.threads, 1, 1),
            shared_mem_bytes: kernel.dynamic_smem_bytes,
        };
        // After a token pass on the portable path: the kernel for its paired rows.
        let func = match (&plan.pass, &self.paired, wt) {
            (_, _, Some((func, _))) => func,
            (Some(_), Some(paired), None) => paired,
            _ => &self.funcs[activation as usize],
        };
        // After a token pass on the Hopper path a GEMM of more CTAs than SMs is the pass's
        // programmatic dependent: its CTAs are scheduled as the pass's retire, and wait
        // (`griddepcontrol.wait`: first thing in every sm_90a GEMM kernel but the
        // blocked-order ones, which issue their first weight copies before it, runs 156 and
        // 161) for the pass to complete. That saves the launch gap (H100 run 83: 2-2.5% on G8
        // N7168 K2048 and G2 N3072 K4096). Not with at most one CTA an SM: CTAs placed while
        // the pass still holds SMs can land two on one SM, which then takes twice as long
        // (H100 run 114: G2 N4096 K1536 after the pass 35.1 us with it, 28.7 without). Not on
        // the portable path: there G2 N3072 K4096 ran 15% slower with it (likely the same
        // placement: its cut, one whole tile per SM and the rest in halves, needs the CTAs
        // spread evenly).
        // The 8-stage kernel (`plan.deep`) is: its 172 KiB of shared memory leave no room for
        // a second CTA on an SM, so its CTAs cannot double up.
        let programmatic = plan.pass.is_some()
            && self.path == KernelPath::Hopper
            && (cfg.grid_dim.0 > self.sm_count || plan.deep);
        // SAFETY: the arguments match the kernel's signature `(table: *const ProblemDesc,
        // num_problems: u32, total_tiles: u32, counts: *const u32, mode: u32, dp_tiles: u32,
        // parts: u32, ws: u64)`, followed by `maps: u64` for the kernels that take token maps
        // (the split fields are the plan's: with `parts > 1` or dynamic units its workspace,
        // sized by `split_for` for `total_tiles` tiles of this kernel's threads with the
        // counters and the unit counter zero, which every launch leaves zero, and the dynamic
        // flag in `mode` only for a `_wt` kernel with host sizes; the plan's launches are
        // ordered by its outputs) (the plan was made for this path and activation, so `maps`
        // holds one map per descriptor, each over rows of the
        // problem's `a` that validation checked are inside the buffer; for a `_wt` entry two
        // per descriptor, the second over the `n` rows of its `b`, which validation checked
        // too, with `b` and `ldb` 16-byte aligned as `weights_by_tma` required); the table
        // holds `num_problems` descriptors packed from problems that passed validation for
        // `mode` (with device sizes: at most MAX_DEVICE_GROUPS groups, `counts` holding one
        // word per group, every row the clamped counts can name inside the buffers), so every
        // address the kernel forms from it lies inside a buffer the plan borrows (or one the
        // caller vouched for in `from_raw`), outputs are disjoint from everything else, and
        // the borrows keep those buffers alive until the plan drops. The table itself lives
        // in `plan`, and cudarc frees it stream-ordered after this launch. With a token pass
        // the table is the pass's copy: the same descriptors with `a` the fp16 workspace the
        // pass has just written (`lda = 2 k`, rows 32-byte aligned), read by the
        // fp16-activation kernel (on the portable path its paired entry, for which the pass
        // wrote each 16-byte unit in the kernels' K order; on the Hopper path, with
        // `plan.blocked_k`, the `_f16b_wt` entry, for which it wrote each 64-value chunk in
        // the blocked K order, every problem's `k` being a multiple of 64).
        if programmatic || plan.pair {
            // The same arguments for `cuLaunchKernelEx`: pointers to copies, in order.
            let (mut table_arg, mut problems_arg, mut tiles_arg, mut counts_arg, mut mode_arg) =
                (table_ptr, num_problems, total_tiles, counts, mode);
            let (mut dp_arg, mut parts_arg, mut ws_arg, mut maps_arg) =
                (split.dp_tiles, split.parts, split.ws, plan.maps_addr);
            let mut params: [*mut std::ffi::c_void; 9] = [
                (&raw mut table_arg).cast(),
                (&raw mut problems_arg).cast(),
                (&raw mut tiles_arg).cast(),
                (&raw mut counts_arg).cast(),
                (&raw mut mode_arg).cast(),
                (&raw mut dp_arg).cast(),
                (&raw mut parts_arg).cast(),
                (&raw mut ws_arg).cast(),
                (&raw mut maps_arg).cast(),
            ];
            // The kernels without token maps take the first eight.
            let count = if kernel.token_maps { 9 } else { 8 };
            // `params` points at copies of the same values, in the same order.
            let cluster = if plan.pair { 2 } else { 1 };
            unsafe {
                ptx_module::launch_ex(
                    stream,
                    func,
                    cfg,
                    &mut params[..count],
                    programmatic,
                    cluster,
                )
            }?;
        } else {
            let mut launch = stream.launch_builder(func);
            launch
                .arg(&table_ptr)
                .arg(&num_problems)
                .arg(&total_tiles)
                .arg(&counts)
                .arg(&mode)
                .arg(&split.dp_tiles)
                .arg(&split.parts)
                .arg(&split.ws);
            if kernel.token_maps {
                launch.arg(&plan.maps_addr);
            }
            unsafe { launch.launch(cfg) }?;
        }
        drop(pass_guards);
        drop(split_guard);
        drop(table_read);
        drop(maps_read);
        drop(reads);
        drop(writes);
        Ok(())
    }

    /// [`plan`](Self::plan) + [`launch`](Self::launch): validates, uploads the problem table
    /// and enqueues one launch on `stream`.
    ///
    /// The table is freed when this returns, stream-ordered after the launch
    /// (`cuMemFreeAsync` on `stream`; on devices without memory pools cudarc synchronises
    /// `stream` before freeing, and this call then waits for the kernel). Because of that
    /// allocation and the upload, do not call `run` inside CUDA graph capture: capture
    /// [`launch`](Self::launch) of a [`GroupPlan`] made beforehand.
    ///
    /// # Errors
    /// As [`plan`](Self::plan) and [`launch`](Self::launch).
    pub fn run<'a>(&self, stream: &Arc<CudaStream>, problems: &[Problem<'a>]) -> Result<()> {
        let plan = self.plan(stream, problems)?;
        self.launch(stream, &plan)
    }

    /// Runs a group whose operands are in host memory: validates the host buffers' lengths
    /// ([`crate::validate::check_host`]: the same errors as [`plan`](Self::plan)), uploads
    /// them on `stream`, runs, downloads and synchronises `stream`.
    ///
    /// Returns each problem's C, `m * n` fp16 values row-major (empty for an empty
    /// problem). On the device each C is pre-filled with NaN, so an element the kernel
    /// failed to write shows as NaN. Meant for tests, tools and one-off use: every call
    /// allocates and copies everything.
    ///
    /// ```no_run
    /// use nvfp4::cudarc::driver::CudaContext;
    /// use nvfp4::{GroupedGemm, HostProblem, ScaleLayout};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ctx = CudaContext::new(0)?;
    /// let gemm = GroupedGemm::new(ctx.clone())?;
    /// let (m, n, k) = (2, 3, 32);
    /// let problem = HostProblem {
    ///     m, n, k,
    ///     a: vec![0x22; m * k / 2],      // every FP4 element 1.0 (code 2)
    ///     sfa: vec![0x38; m * k / 16],   // E4M3 1.0
    ///     sfa_layout: ScaleLayout::Plain,
    ///     b: vec![0x22; n * k / 2],
    ///     sfb: vec![0x38; n * k / 16],
    ///     sfb_layout: ScaleLayout::Plain,
    ///     alpha: 0.5,
    /// };
    /// let c = gemm.run_host(&ctx.default_stream(), &[problem])?;
    /// assert!(c[0].iter().all(|x| x.to_f32() == 16.0)); // 0.5 * 32 * 1.0 * 1.0
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`plan`](Self::plan) and [`launch`](Self::launch); [`Error::Driver`] if an
    /// allocation or copy fails.
    pub fn run_host(
        &self,
        stream: &Arc<CudaStream>,
        problems: &[HostProblem],
    ) -> Result<Vec<Vec<f16>>> {
        validate::check_host(problems)?;
        self.check_stream(stream)?;
        // Never allocate zero bytes (cuMemAlloc rejects it): empty operands get one byte.
        let upload = |bytes: &[u8]| -> Result<CudaSlice<u8>> {
            Ok(if bytes.is_empty() {
                stream.clone_htod(&[0u8])?
            } else {
                stream.clone_htod(bytes)?
            })
        };
        struct Operands {
            a: CudaSlice<u8>,
            sfa: CudaSlice<u8>,
            b: CudaSlice<u8>,
            sfb: CudaSlice<u8>,
            c: CudaSlice<f16>,
        }
        let mut operands = Vec::with_capacity(problems.len());
        for p in problems {
            // Checked by check_host: m * n fits (C's byte length was computed saturating and
            // compared against the shape's exact need).
            let c_len = (p.m * p.n).max(1);
            operands.push(Operands {
                a: upload(&p.a)?,
                sfa: upload(&p.sfa)?,
                b: upload(&p.b)?,
                sfb: upload(&p.sfb)?,
                c: stream.clone_htod(&vec![f16::NAN; c_len])?,
            });
        }
        let device_problems: Vec<Problem<'_>> = problems
            .iter()
            .zip(operands.iter_mut())
            .map(|(p, o)| Problem {
                m: p.m,
                n: p.n,
                k: p.k,
                a: DeviceInput::from(&o.a),
                lda: None,
                sfa: DeviceInput::from(&o.sfa),
                sfa_layout: p.sfa_layout,
                b: DeviceInput::from(&o.b),
                ldb: None,
                sfb: DeviceInput::from(&o.sfb),
                sfb_layout: p.sfb_layout,
                c: DeviceOutput::from(&mut o.c),
                ldc: None,
                alpha: p.alpha,
            })
            .collect();
        self.run(stream, &device_problems)?;
        drop(device_problems);
        let mut out = Vec::with_capacity(problems.len());
        for (p, o) in problems.iter().zip(&operands) {
            let mut c = stream.clone_dtoh(&o.c)?;
            c.truncate(p.m * p.n);
            out.push(c);
        }
        stream.synchronize()?;
        Ok(out)
    }
}

/// The descriptor flags of `types`, or the error for a combination the kernels lack.
pub(crate) fn check_types(types: GemmTypes) -> Result<u32> {
    match (types.activation, types.output) {
        (_, OutputType::F16) => Ok(0),
        (Activation::Nvfp4, OutputType::Bf16) => Err(Error::InvalidGroup {
            field: "output",
            reason: "bf16 outputs need 16-bit activations (GemmTypes::activation F16 or Bf16)"
                .into(),
        }),
        (_, OutputType::Bf16) => Ok(FLAG_OUT_BF16),
    }
}

/// Services share these across threads: checked at compile time.
#[allow(dead_code)]
fn send_sync() {
    fn check<T: Send + Sync>() {}
    check::<GroupedGemm>();
    check::<Problem<'static>>();
    check::<GroupPlan<'static>>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_grid_caps_large_hopper_passes() {
        let blocks = |m: u64, k: u64| m * k / 16;
        // G8 N4096 K7168 on 132 SMs: the largest job (248 rows) would take 434 CTAs, 3472
        // for the eight; capped at 4 an SM, 66 a job.
        assert_eq!(
            pass_grid_x(blocks(248, 7168), 8, KernelPath::Portable, 132),
            434
        );
        assert_eq!(
            pass_grid_x(blocks(248, 7168), 8, KernelPath::Hopper, 132),
            66
        );
        // G8 N7168 K2048 (98 a job) and G2 N3072 K4096 (320 a job) capped too; G2 N4096
        // K1536 (144 a job, 288 CTAs) is under the cap.
        for (m, k, jobs, ctas) in [(196, 2048, 8, 66), (320, 4096, 2, 264), (384, 1536, 2, 144)] {
            assert_eq!(
                pass_grid_x(blocks(m, k), jobs, KernelPath::Hopper, 132),
                ctas
            );
        }
        // At least one CTA a job, at most MAX_PASS_CTAS_PER_JOB.
        assert_eq!(pass_grid_x(1, 65_535, KernelPath::Hopper, 132), 1);
        assert_eq!(
            pass_grid_x(blocks(1 << 20, 8192), 1, KernelPath::Hopper, 132),
            528
        );
        assert_eq!(
            pass_grid_x(blocks(1 << 20, 8192), 1, KernelPath::Portable, 132),
            1024
        );
        assert_eq!(pass_grid_x(0, 0, KernelPath::Portable, 132), 1);
    }

    #[test]
    fn pair_tiles_auto_takes_the_large_n7168_group_only() {
        // The benchmark groups' 256-row tiles (M tiles of 128 tokens x N / 256), from their
        // descriptors; problems without tiles count nothing.
        let group = |ms: &[u32], n: u32| -> Vec<ProblemDesc> {
            ms.iter()
                .map(|&m| ProblemDesc {
                    m,
                    n,
                    k: 2048,
                    ..ProblemDesc::default()
                })
                .collect()
        };
        let n4096 = group(&[80, 176, 128, 72, 64, 248, 96, 160], 4096);
        let n7168 = group(&[40, 76, 168, 72, 164, 148, 196, 160], 7168);
        assert_eq!(pair_tile_count(&n4096), 11 * 16);
        assert_eq!(pair_tile_count(&n7168), 13 * 28);
        assert_eq!(pair_tile_count(&group(&[0, 7], 4000)), 16);
        assert_eq!(pair_tile_count(&group(&[1], 0)), 0);
        // On 132 SMs Auto takes N7168's 364 (2.8 waves) and leaves N4096's 176 (1.3).
        assert!(PairTiles::Auto.wants_pairs(728, 364, 132, 132));
        assert!(!PairTiles::Auto.wants_pairs(352, 176, 132, 132));
        assert!(PairTiles::Auto.wants_pairs(528, 264, 132, 132));
        assert!(!PairTiles::Auto.wants_pairs(526, 263, 132, 132));
        // Auto counts waves of the clusters the device holds, where fewer than the SMs.
        assert!(PairTiles::Auto.wants_pairs(500, 250, 132, 120));
        assert!(!PairTiles::Auto.wants_pairs(500, 250, 132, 132));
        assert!(!PairTiles::Auto.wants_pairs(728, 364, 132, 0));
        // Always: every launch of more 128-row tiles than SMs; Never: none.
        assert!(PairTiles::Always.wants_pairs(133, 67, 132, 132));
        assert!(!PairTiles::Always.wants_pairs(132, 66, 132, 132));
        assert!(!PairTiles::Never.wants_pairs(728, 364, 132, 132));
    }

    #[test]
    fn slots_of_each_launch_kind() {
        // 132 SMs of two 4-stage CTAs each; the pair clusters as the device reports them.
        for clusters in [132, 120, 0] {
            let s = |kind: Slots| kind.schedule_slots(132, 2, clusters);
            let run = |kind: Slots, units: u64| kind.run_slots(units, 132, 2, clusters);
            assert_eq!(s(Slots::PerSm), (132, 264));
            assert_eq!(s(Slots::OnePerSm), (132, 132));
            // Pairs count the clusters the device holds (at least one), not the SMs.
            let c = clusters.max(1);
            assert_eq!(s(Slots::Pairs), (c, c));
            assert_eq!(run(Slots::PerSm, 728), 264);
            // The 8-stage kernel runs while the units fit one an SM; past that the
            // 4-stage kernel's CTAs are the slots.
            assert_eq!(run(Slots::OnePerSm, 132), 132);
            assert_eq!(run(Slots::OnePerSm, 133), 264);
            assert_eq!(run(Slots::Pairs, 364), c);
            assert_eq!(run(Slots::Pairs, 1), c);
        }
        // On 120 clusters the G8 N7168 K2048 group's 364 pair tiles leave a tail of 4 for
        // `SplitK::Auto` to cut (on 132: 100, which no cut in 2-4 parts shortens by a
        // quarter).
        let (sms, slots) = Slots::Pairs.schedule_slots(132, 2, 120);
        let (dp, parts) = SplitK::Auto.schedule(364, slots, sms, 32);
        assert_eq!(dp, 360);
        assert!(parts > 1);
        assert_eq!(SplitK::Auto.schedule(364, 132, 132, 32), (364, 1));
    }

    fn desc(a: u64, m_offset: u32, m: u32, n: u32, k: u32) -> ProblemDesc {
        ProblemDesc {
            a,
            lda: u64::from(k) / 2,
            sfa: a + (1 << 40),
            m,
            n,
            k,
            m_offset,
            ..ProblemDesc::default()
        }
    }

    #[test]
    fn token_operands_share_one_copy_per_buffer() {
        let descs = [
            // Contiguous layout: three groups in one `a`, rows 0..10, 10..10, 10..30.
            desc(0x1000, 0, 10, 64, 256),
            desc(0x1000, 10, 0, 64, 256), // no rows: no copy
            desc(0x1000, 10, 20, 64, 256),
            // Own buffers; the second has no columns.
            desc(0x9000, 0, 7, 64, 128),
            desc(0xA000, 0, 5, 0, 128),
            // The first buffer again, read up to row 12 only.
            desc(0x1000, 4, 8, 32, 256),
        ];
        let (sizes, of) = token_operands(&descs).unwrap();
        assert_eq!(sizes, vec![30 * 256 * 2, 7 * 128 * 2]);
        assert_eq!(of, vec![Some(0), None, Some(0), Some(1), None, Some(0)]);
    }

    #[test]
    fn token_operands_refuse_copies_past_the_address_space() {
        let descs = [desc(0x1000, u32::MAX, u32::MAX, 64, u32::MAX - 15)];
        let err = token_operands(&descs).unwrap_err();
        assert!(
            matches!(err, Error::InvalidGroup { field: "a", .. }),
            "{err}"
        );
    }

    #[test]
    fn split_k_auto_fills_the_last_wave() {
        // (tiles, slots, sms, min_chunks) -> (dp_tiles, parts), worked out by hand. With a
        // full wave: the tail is tiles % slots, cut into the p in 2..=4 (each range >= 16
        // chunks) minimising ceil(tail * p / slots) / p, kept only at 0.75 or below. Under a
        // wave: halves when tiles <= sms and each half has >= 32 chunks; above sms, sms
        // whole and the rest cut into min(4, (slots - sms) / rest, chunks / 16) ranges.
        let cases = [
            // Portable, G8 N4096 K7168: 608 tiles, tail 80; p = 3 gives 240 units: 1/3.
            ((608, 264, 132, 112), (528, 3)),
            // Portable, G8 N7168 K2048: tail 120; p = 2 (32 chunks): 240 units, 1/2.
            ((1176, 264, 132, 32), (1056, 2)),
            // Portable, G2 N3072 K4096: 192 tiles; 132 whole, 60 cut in 2 (132 / 60).
            ((192, 264, 132, 64), (132, 2)),
            ((192, 264, 132, 31), (192, 1)),
            ((160, 264, 132, 64), (132, 4)),
            // Portable, G2 N4096 K1536: 256 tiles: 124 left for 132 slots: not cut.
            ((256, 264, 132, 24), (256, 1)),
            // Hopper, G8 N4096 K7168: tail 88; p = 3: 264 units, 1/3.
            ((352, 264, 132, 112), (264, 3)),
            // Hopper, G8 N7168 K2048: tail 200; p = 2 needs 2 of 2: no gain.
            ((728, 264, 132, 32), (728, 1)),
            // Hopper, G2 N3072 K4096: 120 tiles on 132 SMs, 64 chunks: halves.
            ((120, 264, 132, 64), (0, 2)),
            // Hopper, G2 N4096 K1536: 128 tiles, 24 chunks: halves too short.
            ((128, 264, 132, 24), (128, 1)),
            ((128, 264, 132, 63), (128, 1)),
            // One CTA slot per SM: halves would make a second wave.
            ((120, 132, 132, 64), (120, 1)),
            // Full waves: nothing to fill.
            ((528, 264, 132, 112), (528, 1)),
            // A tail whose ranges would be too short.
            ((300, 264, 132, 31), (300, 1)),
            ((300, 264, 132, 32), (264, 2)),
            ((0, 264, 132, 64), (0, 1)),
            ((100, 0, 132, 64), (100, 1)),
        ];
        for ((tiles, slots, sms, chunks), want) in cases {
            assert_eq!(
                SplitK::Auto.schedule(tiles, slots, sms, chunks),
                want,
                "{tiles} tiles, {slots} slots, {sms} SMs, {chunks} chunks"
            );
        }
    }

    #[test]
    fn split_k_forced_and_off() {
        assert_eq!(SplitK::Off.schedule(608, 264, 132, 112), (608, 1));
        assert_eq!(SplitK::Parts(3).schedule(608, 264, 132, 112), (0, 3));
        // Not bounded by the chunks (empty ranges add zeros), but by MAX_PARTS.
        assert_eq!(SplitK::Parts(3).schedule(10, 264, 132, 1), (0, 3));
        assert_eq!(
            SplitK::Parts(100).schedule(10, 264, 132, 1),
            (0, SplitK::MAX_PARTS)
        );
        assert_eq!(SplitK::Parts(1).schedule(10, 264, 132, 1), (10, 1));
        assert_eq!(SplitK::Parts(0).schedule(10, 264, 132, 1), (10, 1));
        // Units past u32: not cut.
        assert_eq!(
            SplitK::Parts(16).schedule(u32::MAX / 8, 264, 132, 1),
            (u32::MAX / 8, 1)
        );
        assert_eq!(SplitK::Parts(2).schedule(u32::MAX / 2, 264, 132, 1), (0, 2));
    }
}
