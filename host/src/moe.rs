//! The forms a mixture-of-experts layer needs: row counts that live on the GPU, and the
//! contiguous token layout.
//!
//! # Row counts on the device
//! In an MoE layer the router computes on the GPU how many tokens each expert gets. Reading
//! those counts back to the host costs a synchronisation every layer; instead, hand the
//! kernel a device buffer of `u32` counts ([`DeviceCounts`]) and give every buffer room for
//! an upper bound (the capacity). The kernel reads the counts at launch: one launch, no host
//! copy, and the same launch can be captured once in a CUDA graph and replayed with new
//! counts. A group with no rows costs one read of its count. Counts above the capacity are
//! clamped to it (rows past the capacity are neither read nor written); a count is an
//! unsigned 32-bit integer, so a negative `int32` count reads as a huge one and is clamped
//! too. At most [`MAX_DEVICE_GROUPS`] groups per launch with device counts.
//!
//! - Per-group buffers: [`GroupedGemm::plan_device_counts`] takes ordinary [`Problem`]s whose
//!   `m` is the capacity of their buffers; problem `i` computes `min(counts[i], m_i)` rows.
//! - Contiguous buffers: [`ContiguousGroup`] with [`GroupSizes::Device`].
//!
//! # 16-bit activations
//! Both forms take fp16 or bf16 activations (W4A16) and fp16 or bf16 outputs like
//! [`GroupedGemm::plan_typed`]: [`GroupedGemm::plan_device_counts_typed`] and
//! [`GroupedGemm::plan_contiguous_typed`] with a [`GemmTypes`]. The token buffer then holds
//! 16-bit rows (`lda` in bytes: at least `2 k`, a multiple of 16, default `2 k`; the buffer
//! 16-byte aligned) and its scales are not read (pass [`DeviceInput::empty`]).
//!
//! # The contiguous layout
//! As MoE code and `torch._grouped_mm` lay them out: the tokens of all experts in one
//! `[rows, k / 2]` FP4 buffer `a` (with its scales over `rows` rows, plain or blocked), expert
//! `g`'s tokens being rows `o_g .. o_g + m_g` where `o_g = m_0 + .. + m_(g-1)`; the output one
//! `[rows, n]` fp16 buffer `c`, expert `g` writing the same rows. Each expert has its own
//! weights ([`ExpertWeights`]; views into one `[G, n, k / 2]` tensor work). `rows` is the
//! capacity: the counts may sum to less (rows past the sum are not written), never more (host
//! counts: an error; device counts: clamped). With the blocked scale layout, the scales of row
//! `r` are found at row `r` of the whole `[rows, k / 16]` blocked tensor: experts need not
//! start at multiples of 128 rows.
//!
//! ```no_run
//! use nvfp4::cudarc::driver::CudaContext;
//! use nvfp4::moe::{ContiguousGroup, DeviceCounts, ExpertWeights, GroupSizes};
//! use nvfp4::{DeviceInput, DeviceOutput, GroupedGemm, ScaleLayout, f16};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ctx = CudaContext::new(0)?;
//! let stream = ctx.default_stream();
//! let gemm = GroupedGemm::new(ctx.clone())?;
//! // 8 experts of 512 x 1024 weights, room for 256 tokens in all.
//! let (experts, rows, n, k) = (8, 256, 512, 1024);
//! let a = stream.alloc_zeros::<u8>(rows * k / 2)?;
//! let sfa = stream.alloc_zeros::<u8>(rows * k / 16)?;
//! let b = stream.alloc_zeros::<u8>(experts * n * k / 2)?;
//! let sfb = stream.alloc_zeros::<u8>(experts * n * k / 16)?;
//! let mut c = stream.alloc_zeros::<f16>(rows * n)?;
//! // The router's histogram, written on the GPU (here: uploaded).
//! let counts = stream.clone_htod(&[40u32, 0, 7, 1, 76, 0, 100, 32])?;
//! let group = ContiguousGroup {
//!     rows, n, k,
//!     a: DeviceInput::from(&a), lda: None,
//!     sfa: DeviceInput::from(&sfa), sfa_layout: ScaleLayout::Plain,
//!     c: DeviceOutput::from(&mut c), ldc: None,
//!     experts: (0..experts)
//!         .map(|g| ExpertWeights {
//!             b: DeviceInput::from(b.slice(g * n * k / 2..(g + 1) * n * k / 2)),
//!             ldb: None,
//!             sfb: DeviceInput::from(sfb.slice(g * n * k / 16..(g + 1) * n * k / 16)),
//!             sfb_layout: ScaleLayout::Plain,
//!             alpha: 1.0,
//!         })
//!         .collect(),
//!     sizes: GroupSizes::Device(DeviceCounts::from_slice(&counts)),
//! };
//! let plan = gemm.plan_contiguous(&stream, &group)?; // validates for the capacity
//! gemm.launch(&stream, &plan)?; // reads the counts on the GPU; capturable in a graph
//! # Ok(()) }
//! ```

use crate::buffer::{DeviceInput, DeviceOutput};
use crate::gemm::{GemmTypes, GroupPlan, GroupedGemm, Problem, check_types};
use crate::table::{self, PackedTable};
use crate::validate::{self, ProblemSpec, Span};
use crate::{Error, Result, ScaleLayout};
use cudarc::driver::{CudaSlice, CudaStream, CudaView};
use kernels_gpu::kernels::KernelInfo;
pub use kernels_gpu::problem::MAX_DEVICE_GROUPS;
use kernels_gpu::problem::{ProblemDesc, SizeMode};
use std::sync::Arc;

/// Row counts of a group in device memory: one `u32` per group, in group order (an `int32`
/// tensor of non-negative counts has the same bytes). The kernel reads them at launch.
#[derive(Debug)]
pub struct DeviceCounts<'a> {
    input: DeviceInput<'a>,
}

impl<'a> DeviceCounts<'a> {
    /// The whole of `slice`: one count per element.
    pub fn from_slice(slice: &'a CudaSlice<u32>) -> Self {
        Self {
            input: DeviceInput::from_words(slice),
        }
    }

    /// The elements of `view` (e.g. `slice.slice(0..groups)`).
    pub fn from_view(view: CudaView<'a, u32>) -> Self {
        Self {
            input: DeviceInput::from_words_view(view),
        }
    }

    /// `groups` counts at device address `ptr` (e.g. a PyTorch `int32` tensor).
    ///
    /// # Safety
    /// As [`DeviceInput::from_raw`] for `4 * groups` bytes: readable device memory of the
    /// context, alive and written by nothing else until the launches that read it finish
    /// (the producer of the counts must be ordered before the launch's stream by the caller).
    pub unsafe fn from_raw(ptr: u64, groups: usize) -> Self {
        Self {
            // SAFETY: forwarded to the caller.
            input: unsafe { DeviceInput::from_raw(ptr, groups.saturating_mul(4)) },
        }
    }

    /// Number of counts (groups) the buffer holds.
    pub fn len(&self) -> usize {
        self.input.len_bytes() / 4
    }

    /// Whether the buffer holds no count.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Device address and length in bytes.
    pub fn span(&self) -> Span {
        self.input.span()
    }
}

/// Where the row counts of a [`ContiguousGroup`] come from.
#[derive(Debug)]
pub enum GroupSizes<'a> {
    /// Known on the host: one count per expert, summing to at most `rows`.
    Host(Vec<usize>),
    /// In device memory, read by the kernel at launch ([`DeviceCounts`]).
    Device(DeviceCounts<'a>),
}

/// One expert's weights in a [`ContiguousGroup`]: `n` rows of `k` FP4 values and their scales
/// (the `b` side of [`Problem`], with the same rules), and its output factor.
#[derive(Debug)]
pub struct ExpertWeights<'a> {
    /// B, FP4 E2M1, `n` rows, 8-byte aligned.
    pub b: DeviceInput<'a>,
    /// Bytes between rows of B: at least `k / 2`, a multiple of 8; `None` = `k / 2`.
    pub ldb: Option<usize>,
    /// B's E4M3 scales, 4-byte aligned, over `n` rows.
    pub sfb: DeviceInput<'a>,
    /// Layout of `sfb`.
    pub sfb_layout: ScaleLayout,
    /// Output factor of this expert (finite).
    pub alpha: f32,
}

/// A grouped GEMM in the contiguous MoE layout (see the [module docs](self)): expert `g`
/// computes rows `o_g .. o_g + m_g` of `c` from the same rows of `a` and its own weights.
///
/// Validation is that of a [`Problem`] with `m = rows` for the token side (`a`, `lda`, `sfa`,
/// `c`, `ldc`: errors name problem 0) and of each expert's weights (errors name the expert),
/// plus the counts: [`Error::InvalidGroup`] for host sizes of the wrong length or summing past
/// `rows`, device counts with fewer words than experts or more than [`MAX_DEVICE_GROUPS`]
/// experts, or counts overlapping `c`.
#[derive(Debug)]
pub struct ContiguousGroup<'a> {
    /// Capacity: rows of `a`, of its scales and of `c`.
    pub rows: usize,
    /// Rows of every expert's weights, columns of `c`.
    pub n: usize,
    /// Reduction length: a positive multiple of 16.
    pub k: usize,
    /// The tokens of all experts, FP4 E2M1, `rows` rows, 8-byte aligned (16-bit activations:
    /// `rows` rows of `k` fp16 / bf16 values, 16-byte aligned).
    pub a: DeviceInput<'a>,
    /// Bytes between rows of `a`: at least `k / 2`, a multiple of 8; `None` = `k / 2`
    /// (16-bit activations: at least `2 k`, a multiple of 16; `None` = `2 k`).
    pub lda: Option<usize>,
    /// `a`'s E4M3 scales over `rows` rows, 4-byte aligned (not read with 16-bit activations:
    /// pass [`DeviceInput::empty`]).
    pub sfa: DeviceInput<'a>,
    /// Layout of `sfa`.
    pub sfa_layout: ScaleLayout,
    /// The output, fp16 (or bf16, see [`GemmTypes`]), `rows` rows of `n`, 2-byte aligned.
    /// Rows no expert owns are not written.
    pub c: DeviceOutput<'a>,
    /// Elements between rows of `c`: at least `n`; `None` = `n`.
    pub ldc: Option<usize>,
    /// One entry per expert, in the order of the rows.
    pub experts: Vec<ExpertWeights<'a>>,
    /// The experts' row counts.
    pub sizes: GroupSizes<'a>,
}

impl ContiguousGroup<'_> {
    /// Runs the validation of [`GroupedGemm::plan_contiguous`] (without the CUDA-context
    /// checks, which need the device): no GPU needed.
    ///
    /// # Errors
    /// As [`GroupedGemm::plan_contiguous`].
    pub fn check(&self) -> Result<()> {
        self.check_typed(GemmTypes::default())
    }

    /// [`ContiguousGroup::check`] for the activation and output types of `types`: the
    /// validation of [`GroupedGemm::plan_contiguous_typed`] without the CUDA-context checks.
    ///
    /// # Errors
    /// As [`GroupedGemm::plan_contiguous_typed`].
    pub fn check_typed(&self, types: GemmTypes) -> Result<()> {
        check_types(types)?;
        self.check_inner(types).map(|_| ())
    }

    fn check_inner(&self, types: GemmTypes) -> Result<Vec<validate::Checked>> {
        let experts = self.experts.len();
        let counts_read = match &self.sizes {
            GroupSizes::Host(sizes) => {
                check_host_sizes(sizes, experts, self.rows)?;
                None
            }
            GroupSizes::Device(counts) => {
                check_counts(counts, experts)?;
                (experts > 0).then(|| counts_span(counts, experts))
            }
        };
        let checked = validate::check_group_typed(&self.specs(), counts_read, types.activation)?;
        if let (GroupSizes::Device(_), Some(token)) = (&self.sizes, checked.first()) {
            // The kernel's tile count, bounded with the smallest tiles of all kernels.
            let bound = contiguous_tile_bound(
                &kernels_gpu::kernels::GROUPED_GEMM_MMA,
                token.m,
                token.n,
                experts,
            );
            bound_u32(bound)?;
        }
        Ok(checked)
    }

    /// The specs validation checks: the token side (`m = rows`) with expert 0's weights as
    /// problem 0, every other expert's weights as a problem with no tokens.
    fn specs(&self) -> Vec<ProblemSpec> {
        self.experts
            .iter()
            .enumerate()
            .map(|(g, e)| {
                let first = g == 0;
                let none = Span::default();
                ProblemSpec {
                    m: if first { self.rows } else { 0 },
                    n: self.n,
                    k: self.k,
                    a: if first { self.a.span() } else { none },
                    lda: self.lda,
                    sfa: if first { self.sfa.span() } else { none },
                    sfa_layout: self.sfa_layout,
                    b: e.b.span(),
                    ldb: e.ldb,
                    sfb: e.sfb.span(),
                    sfb_layout: e.sfb_layout,
                    c: if first { self.c.span() } else { none },
                    ldc: self.ldc,
                    alpha: e.alpha,
                }
            })
            .collect()
    }
}

/// Runs the validation of [`GroupedGemm::plan_device_counts`] (without the CUDA-context
/// checks): no GPU needed.
///
/// # Errors
/// As [`GroupedGemm::plan_device_counts`].
pub fn check_device_counts(problems: &[Problem<'_>], counts: &DeviceCounts<'_>) -> Result<()> {
    check_device_counts_typed(problems, counts, GemmTypes::default())
}

/// [`check_device_counts`] for the activation and output types of `types`: the validation of
/// [`GroupedGemm::plan_device_counts_typed`] without the CUDA-context checks.
///
/// # Errors
/// As [`GroupedGemm::plan_device_counts_typed`].
pub fn check_device_counts_typed(
    problems: &[Problem<'_>],
    counts: &DeviceCounts<'_>,
    types: GemmTypes,
) -> Result<()> {
    check_types(types)?;
    let specs: Vec<ProblemSpec> = problems.iter().map(Problem::spec).collect();
    check_device_counts_specs(&specs, counts, types).map(|_| ())
}

fn check_device_counts_specs(
    specs: &[ProblemSpec],
    counts: &DeviceCounts<'_>,
    types: GemmTypes,
) -> Result<Vec<validate::Checked>> {
    check_counts(counts, specs.len())?;
    let counts_read = (!specs.is_empty()).then(|| counts_span(counts, specs.len()));
    validate::check_group_typed(specs, counts_read, types.activation)
}

/// Checks the device counts of a group of `groups` problems.
fn check_counts(counts: &DeviceCounts<'_>, groups: usize) -> Result<()> {
    if groups > MAX_DEVICE_GROUPS {
        return Err(Error::InvalidGroup {
            field: "counts",
            reason: format!(
                "device-side counts serve at most {MAX_DEVICE_GROUPS} groups per launch; \
                 the group has {groups}"
            ),
        });
    }
    if groups == 0 {
        return Ok(());
    }
    let span = counts.span();
    if counts.len() < groups {
        return Err(Error::InvalidGroup {
            field: "counts",
            reason: format!(
                "holds {} counts ({} bytes) for {groups} groups",
                counts.len(),
                span.len_bytes
            ),
        });
    }
    if span.addr == 0 {
        return Err(Error::InvalidGroup {
            field: "counts",
            reason: "is a null pointer".into(),
        });
    }
    if !span.addr.is_multiple_of(4) {
        return Err(Error::InvalidGroup {
            field: "counts",
            reason: format!("at {:#x} is not 4-byte aligned", span.addr),
        });
    }
    Ok(())
}

/// The span of the first `groups` counts (what the kernel reads).
fn counts_span(counts: &DeviceCounts<'_>, groups: usize) -> Span {
    Span::new(counts.span().addr, groups * 4)
}

/// Tiles of `rows` tokens spread over `groups` groups of `n` weight rows: every group adds at
/// most one partial token tile.
fn contiguous_tile_bound(kernel: &KernelInfo, rows: u32, n: u32, groups: usize) -> u64 {
    let tiles_n = u64::from(n.div_ceil(kernel.tile_n));
    let tiles_m = u64::from(rows.div_ceil(kernel.tile_m)) + groups as u64;
    tiles_n.saturating_mul(tiles_m)
}

/// The tile bound as the kernel's `u32`, or [`Error::TooManyTiles`].
fn bound_u32(tiles: u64) -> Result<u32> {
    u32::try_from(tiles).map_err(|_| Error::TooManyTiles {
        tiles,
        max: u64::from(u32::MAX),
    })
}

impl GroupedGemm {
    /// Validates a group of per-group problems whose row counts live on the device, and
    /// uploads its table: problem `i` computes `min(counts[i], problems[i].m)` rows, so each
    /// problem's `m` is the capacity its buffers are validated for. Launch it with
    /// [`GroupedGemm::launch`] (capturable in a CUDA graph: every replay reads the counts
    /// anew).
    ///
    /// # Errors
    /// As [`GroupedGemm::plan`]; [`Error::InvalidGroup`] (field `counts`) if there are more
    /// than [`MAX_DEVICE_GROUPS`] problems, or `counts` holds fewer words than problems, is
    /// null or not 4-byte aligned, overlaps an output or belongs to another context.
    pub fn plan_device_counts<'a>(
        &self,
        stream: &Arc<CudaStream>,
        problems: &'a [Problem<'a>],
        counts: &'a DeviceCounts<'a>,
    ) -> Result<GroupPlan<'a>> {
        self.plan_device_counts_typed(stream, problems, counts, GemmTypes::default())
    }

    /// [`plan_device_counts`](Self::plan_device_counts) for the activation and output types
    /// of `types` (see [`GemmTypes`] and [`GroupedGemm::plan_typed`]).
    ///
    /// # Errors
    /// As [`plan_device_counts`](Self::plan_device_counts), with the rules of
    /// [`GroupedGemm::plan_typed`] for `a` and the output.
    pub fn plan_device_counts_typed<'a>(
        &self,
        stream: &Arc<CudaStream>,
        problems: &'a [Problem<'a>],
        counts: &'a DeviceCounts<'a>,
        types: GemmTypes,
    ) -> Result<GroupPlan<'a>> {
        let flags = check_types(types)?;
        let specs: Vec<ProblemSpec> = problems.iter().map(Problem::spec).collect();
        let checked = check_device_counts_specs(&specs, counts, types)?;
        // Validation bounded the tiles of every problem at its capacity by u32::MAX.
        let packed = table::pack_checked(&specs, &checked, self.path().kernel()).with_flags(flags);
        let bound = packed.total_tiles;
        self.make_plan(
            stream,
            problems,
            packed,
            Some((&counts.input, SizeMode::DevicePerGroup)),
            bound,
            types.activation,
        )
    }

    /// Validates a [`ContiguousGroup`] and uploads its table; launch it with
    /// [`GroupedGemm::launch`]. With [`GroupSizes::Device`] the counts are read at every
    /// launch (and every CUDA-graph replay).
    ///
    /// # Errors
    /// As [`GroupedGemm::plan`] for the token side (problem 0) and each expert's weights
    /// (problem `g`); [`Error::InvalidGroup`] for the counts (see [`ContiguousGroup`]);
    /// [`Error::TooManyTiles`] if the capacity's tiles do not fit a launch.
    pub fn plan_contiguous<'a>(
        &self,
        stream: &Arc<CudaStream>,
        group: &'a ContiguousGroup<'a>,
    ) -> Result<GroupPlan<'a>> {
        self.plan_contiguous_typed(stream, group, GemmTypes::default())
    }

    /// [`plan_contiguous`](Self::plan_contiguous) for the activation and output types of
    /// `types` (see [`GemmTypes`]): with fp16 or bf16 activations `a` holds 16-bit rows and
    /// `sfa` is not read (see the [module docs](self)).
    ///
    /// # Errors
    /// As [`plan_contiguous`](Self::plan_contiguous), with the rules of
    /// [`GroupedGemm::plan_typed`] for `a` (problem 0) and the output.
    pub fn plan_contiguous_typed<'a>(
        &self,
        stream: &Arc<CudaStream>,
        group: &'a ContiguousGroup<'a>,
        types: GemmTypes,
    ) -> Result<GroupPlan<'a>> {
        let flags = check_types(types)?;
        let experts = group.experts.len();
        let checked = group.check_inner(types)?;
        let kernel = self.path().kernel();
        let mut inputs = Vec::with_capacity(2 * experts + 3);
        for (g, e) in group.experts.iter().enumerate() {
            for (field, input) in [("b", &e.b), ("sfb", &e.sfb)] {
                self.check_context(g, field, input.context())?;
                inputs.push(input);
            }
        }
        for (field, input) in [("a", &group.a), ("sfa", &group.sfa)] {
            self.check_context(0, field, input.context())?;
            inputs.push(input);
        }
        self.check_context(0, "c", group.c.context())?;
        if experts == 0 {
            let packed = table::pack_checked(&[], &[], kernel);
            return self.upload_plan(
                stream,
                inputs,
                vec![&group.c],
                packed,
                SizeMode::Host,
                0,
                0,
                types.activation,
            );
        }
        // The token side's numbers, resolved by validation (problem 0 carries them).
        let token = &checked[0];
        let base = ProblemDesc {
            a: group.a.addr(),
            sfa: group.sfa.addr(),
            c: group.c.addr(),
            lda: token.lda,
            ldc: token.ldc,
            n: token.n,
            k: token.k,
            sfa_layout: group.sfa_layout as u32,
            flags,
            ..ProblemDesc::default()
        };
        let expert_desc = |g: usize, m: u32, m_offset: u32| ProblemDesc {
            b: group.experts[g].b.addr(),
            sfb: group.experts[g].sfb.addr(),
            ldb: checked[g].ldb,
            sfb_layout: group.experts[g].sfb_layout as u32,
            alpha: group.experts[g].alpha,
            m,
            m_offset,
            ..base
        };
        match &group.sizes {
            GroupSizes::Host(sizes) => {
                let mut descs = Vec::with_capacity(experts);
                let mut first_row = 0u32;
                let mut tile_start = 0u64;
                for (g, &m) in sizes.iter().enumerate() {
                    // check_host_sizes: the sizes sum to at most rows, which fits u32.
                    let m = m as u32;
                    let mut d = expert_desc(g, m, first_row);
                    d.tile_start = tile_start as u32;
                    d.tiles_m = m.div_ceil(kernel.tile_m);
                    descs.push(d);
                    tile_start += if m == 0 || token.n == 0 {
                        0
                    } else {
                        kernel.tiles_for(m, token.n)
                    };
                    first_row += m;
                }
                // At most the tiles of `rows` rows plus one partial tile per expert.
                let total = bound_u32(tile_start)?;
                let packed = PackedTable {
                    descs,
                    total_tiles: total,
                    tile_n: kernel.tile_n,
                    tile_m: kernel.tile_m,
                };
                self.upload_plan(
                    stream,
                    inputs,
                    vec![&group.c],
                    packed,
                    SizeMode::Host,
                    0,
                    total,
                    types.activation,
                )
            }
            GroupSizes::Device(counts) => {
                let descs = (0..experts).map(|g| expert_desc(g, token.m, 0)).collect();
                let bound = if token.m == 0 || token.n == 0 {
                    0
                } else {
                    bound_u32(contiguous_tile_bound(kernel, token.m, token.n, experts))?
                };
                let packed = PackedTable {
                    descs,
                    total_tiles: bound,
                    tile_n: kernel.tile_n,
                    tile_m: kernel.tile_m,
                };
                self.check_counts_context(&counts.input)?;
                inputs.push(&counts.input);
                self.upload_plan(
                    stream,
                    inputs,
                    vec![&group.c],
                    packed,
                    SizeMode::DeviceContiguous,
                    counts.input.addr(),
                    bound,
                    types.activation,
                )
            }
        }
    }

    /// [`plan_contiguous`](Self::plan_contiguous) + [`launch`](Self::launch). Not inside CUDA
    /// graph capture (the table upload allocates): capture the launch of a plan instead.
    ///
    /// # Errors
    /// As [`plan_contiguous`](Self::plan_contiguous) and [`launch`](Self::launch).
    pub fn run_contiguous(
        &self,
        stream: &Arc<CudaStream>,
        group: &ContiguousGroup<'_>,
    ) -> Result<()> {
        let plan = self.plan_contiguous(stream, group)?;
        self.launch(stream, &plan)
    }

    /// [`plan_contiguous_typed`](Self::plan_contiguous_typed) + [`launch`](Self::launch).
    /// Not inside CUDA graph capture, as [`run_contiguous`](Self::run_contiguous).
    ///
    /// # Errors
    /// As [`plan_contiguous_typed`](Self::plan_contiguous_typed) and
    /// [`launch`](Self::launch).
    pub fn run_contiguous_typed(
        &self,
        stream: &Arc<CudaStream>,
        group: &ContiguousGroup<'_>,
        types: GemmTypes,
    ) -> Result<()> {
        let plan = self.plan_contiguous_typed(stream, group, types)?;
        self.launch(stream, &plan)
    }
}

/// Host sizes: one per expert, summing to at most `rows`.
fn check_host_sizes(sizes: &[usize], experts: usize, rows: usize) -> Result<()> {
    if sizes.len() != experts {
        return Err(Error::InvalidGroup {
            field: "sizes",
            reason: format!("has {} entries for {experts} experts", sizes.len()),
        });
    }
    let total = sizes.iter().try_fold(0usize, |acc, &m| acc.checked_add(m));
    match total {
        Some(total) if total <= rows => Ok(()),
        _ => Err(Error::InvalidGroup {
            field: "sizes",
            reason: format!(
                "sum to {} rows, more than the capacity `rows` = {rows}",
                total.map_or_else(|| "more than usize::MAX".to_string(), |t| t.to_string())
            ),
        }),
    }
}
