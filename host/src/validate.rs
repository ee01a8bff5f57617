//! Validation of a group at the edge: after [`check_specs`] accepts a group, nothing the
//! kernel reads or writes lies outside the buffers the caller handed over.
//!
//! Pure host code: it looks only at numbers (shapes, strides, addresses, lengths) and never
//! dereferences an address, so it runs and is tested without a GPU. [`ProblemSpec`] is the
//! plain-data description it checks; [`crate::Problem::spec`] produces one from device
//! buffers, and [`check_host`] checks [`HostProblem`]s (the convenience path) the same way.
//!
//! # Rules, for each problem `i` (errors name `i` and the field)
//! - `alpha` finite ([`Error::InvalidAlpha`]).
//! - `m`, `n`, `k` fit in `u32`; `k` is a positive multiple of 16, one E4M3 scale block
//!   ([`Error::InvalidDimension`]). `m == 0` and `n == 0` are valid: the problem is empty,
//!   has no tiles and nothing of it is read or written (an MoE expert that got no tokens).
//!   `k == 0` is an error: the kernels need at least one scale block.
//! - `lda` / `ldb` (bytes, `None` = `k / 2`) are at least `k / 2` and multiples of 8, so
//!   every row of A and B starts 8-byte aligned (`k / 2` itself always is a multiple of 8
//!   when `k % 16 == 0`); `ldc` (fp16 elements, `None` = `n`) is at least `n`
//!   ([`Error::InvalidStride`]). Strides are checked even when `m` or `n` is 0.
//! - Each buffer the kernel touches (needed length > 0) is non-null ([`Error::NullPointer`]),
//!   aligned ([`Error::Misaligned`]: 8 bytes for `a` / `b`, 4 for `sfa` / `sfb`, 2 for `c`),
//!   long enough ([`Error::BufferTooSmall`]) and does not wrap the address space
//!   ([`Error::Overflow`]). Needed bytes: `a`: `(m - 1) * lda + k / 2` (0 if `m == 0`); `b`:
//!   `(n - 1) * ldb + k / 2`; `c`: `((m - 1) * ldc + n) * 2` (0 if `m` or `n` is 0); `sfa` /
//!   `sfb`: `kernels_gpu::layout::scale_len(layout, rows, k)` — so a plain-sized scale buffer
//!   passed as blocked is caught whenever the two sizes differ. Buffers that need 0 bytes may
//!   have any address (an empty `CudaSlice`'s may be null).
//!
//! # Rules for the group
//! - At most `kernels_gpu::problem::MAX_PROBLEMS` problems ([`Error::TooManyProblems`]);
//!   an empty group is valid (nothing to do).
//! - The tiles of all problems (`kernels_gpu::tiling::tiles_for`) sum to at most `u32::MAX`
//!   ([`Error::TooManyTiles`]).
//! - No output shares a byte with any input or any other output, of any problem
//!   ([`Error::Overlap`]). Inputs may share bytes (one weight matrix used by many problems).
//!   The bytes compared are those the kernel touches: the rows of a strided operand, not the
//!   gaps between them, so two outputs interleaved in one buffer (problem 0 writing columns
//!   0..n of rows of `ldc = 2n`, problem 1 columns n..2n) are accepted. Scale buffers count
//!   with their whole [`scale_len`].

use crate::problem::HostProblem;
use crate::{Error, Result, ScaleLayout};
use kernels_gpu::layout::scale_len;
use kernels_gpu::problem::Activation;
use kernels_gpu::problem::MAX_PROBLEMS;
use kernels_gpu::tiling::tiles_for;

/// Alignment in bytes the kernels need for A and B (and for each of their rows).
pub const AB_ALIGN: u64 = 8;
/// Alignment in bytes the kernels need for 16-bit activations (and each of their rows).
pub const A16_ALIGN: u64 = 16;
/// Alignment in bytes the kernels need for the scale buffers.
pub const SCALE_ALIGN: u64 = 4;
/// Alignment in bytes the kernels need for C (fp16).
pub const C_ALIGN: u64 = 2;
/// `lda` and `ldb` must be multiples of this many bytes.
pub const LD_AB_MULTIPLE: usize = 8;

/// A device byte range: start address and length in bytes. Only compared, never dereferenced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// Device address of the first byte.
    pub addr: u64,
    /// Length in bytes.
    pub len_bytes: usize,
}

impl Span {
    /// The span of `len_bytes` bytes at `addr`.
    pub const fn new(addr: u64, len_bytes: usize) -> Self {
        Self { addr, len_bytes }
    }
}

/// Everything validation looks at for one problem (see [`crate::Problem`] for the meaning of
/// each field): shapes, strides, scale layouts, alpha and where each operand lives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProblemSpec {
    /// Rows of A and C.
    pub m: usize,
    /// Rows of B, columns of C.
    pub n: usize,
    /// Reduction length (FP4 elements).
    pub k: usize,
    /// A: FP4, `m` rows of `k / 2` bytes.
    pub a: Span,
    /// Bytes between rows of A; `None` = `k / 2`.
    pub lda: Option<usize>,
    /// A's E4M3 scales.
    pub sfa: Span,
    /// Layout of `sfa`.
    pub sfa_layout: ScaleLayout,
    /// B: FP4, `n` rows of `k / 2` bytes.
    pub b: Span,
    /// Bytes between rows of B; `None` = `k / 2`.
    pub ldb: Option<usize>,
    /// B's E4M3 scales.
    pub sfb: Span,
    /// Layout of `sfb`.
    pub sfb_layout: ScaleLayout,
    /// C: fp16, `m` rows of `n` elements.
    pub c: Span,
    /// fp16 elements between rows of C; `None` = `n`.
    pub ldc: Option<usize>,
    /// Output factor.
    pub alpha: f32,
}

/// The numbers of one problem that passed [`check_specs`], resolved for packing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Checked {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// Bytes.
    pub lda: u64,
    /// Bytes.
    pub ldb: u64,
    /// fp16 elements.
    pub ldc: u64,
    pub tiles: u64,
    /// Bytes of `sfa` / `sfb` the kernel may read.
    pub sfa_len: u64,
    pub sfb_len: u64,
}

/// Checks a group (see the module docs for every rule). `Ok(())` for an empty group.
///
/// # Errors
/// The first violation found, problems in order and per problem in the order of the module
/// docs; overlaps are checked last, after every problem passed on its own.
pub fn check_specs(specs: &[ProblemSpec]) -> Result<()> {
    check_group(specs).map(|_| ())
}

/// [`check_specs`] for a group whose activations are `activation` (what
/// [`crate::GroupedGemm::plan_typed`] checks). With 16-bit activations (`F16`, `Bf16`) the
/// rules for `a` change: its rows hold `k` 16-bit values, so `lda` (bytes, `None` = `2 k`) is
/// at least `2 k` and a multiple of 16, `a` is 16-byte aligned and needs `(m - 1) * lda +
/// 2 k` bytes; `sfa` is not read and not checked (pass [`Span::default`]).
///
/// # Errors
/// As [`check_specs`].
pub fn check_specs_typed(specs: &[ProblemSpec], activation: Activation) -> Result<()> {
    check_group_typed(specs, None, activation).map(|_| ())
}

/// Checks [`crate::Problem`]s as [`crate::GroupedGemm::plan`] does (without the CUDA-context
/// check, which needs the device): [`check_specs`] on their [`crate::Problem::spec`]s.
///
/// # Errors
/// As [`check_specs`].
pub fn check(problems: &[crate::Problem<'_>]) -> Result<()> {
    let specs: Vec<ProblemSpec> = problems.iter().map(crate::Problem::spec).collect();
    check_specs(&specs)
}

/// Checks host problems as [`crate::GroupedGemm::run_host`] does before uploading: the same
/// rules and errors as [`check_specs`], with each operand's length taken from its `Vec`, rows
/// packed (`lda = ldb = k / 2`, `ldc = n`) and C sized `m * n`.
///
/// # Errors
/// As [`check_specs`] (in practice [`Error::InvalidDimension`], [`Error::InvalidAlpha`],
/// [`Error::BufferTooSmall`], [`Error::TooManyProblems`] or [`Error::TooManyTiles`]).
pub fn check_host(problems: &[HostProblem]) -> Result<()> {
    check_specs(&host_specs(problems))
}

/// Specs for host problems at made-up, disjoint, 256-aligned addresses (validation never
/// dereferences them), so alignment and overlap always pass and the length checks decide.
pub(crate) fn host_specs(problems: &[HostProblem]) -> Vec<ProblemSpec> {
    let mut next: u64 = 1 << 16;
    let mut span = |len: usize| {
        let s = Span::new(next, len);
        let rounded = (len as u64).div_ceil(256).saturating_mul(256).max(256);
        next = next.saturating_add(rounded);
        s
    };
    problems
        .iter()
        .map(|p| ProblemSpec {
            m: p.m,
            n: p.n,
            k: p.k,
            a: span(p.a.len()),
            lda: None,
            sfa: span(p.sfa.len()),
            sfa_layout: p.sfa_layout,
            b: span(p.b.len()),
            ldb: None,
            sfb: span(p.sfb.len()),
            sfb_layout: p.sfb_layout,
            c: span(p.m.saturating_mul(p.n).saturating_mul(2)),
            ldc: None,
            alpha: p.alpha,
        })
        .collect()
}

/// [`check_specs`], returning each problem's resolved numbers.
pub(crate) fn check_group(specs: &[ProblemSpec]) -> Result<Vec<Checked>> {
    check_group_with(specs, None)
}

/// [`check_group`], plus a group-level input the kernel reads (the device row counts:
/// [`Error::InvalidGroup`] if an output overlaps it).
pub(crate) fn check_group_with(
    specs: &[ProblemSpec],
    counts: Option<Span>,
) -> Result<Vec<Checked>> {
    check_group_typed(specs, counts, Activation::Nvfp4)
}

/// Checks a group for the kernels of `activation` (see [`check_specs_typed`]).
pub(crate) fn check_group_typed(
    specs: &[ProblemSpec],
    counts: Option<Span>,
    activation: Activation,
) -> Result<Vec<Checked>> {
    if specs.len() > MAX_PROBLEMS {
        return Err(Error::TooManyProblems {
            count: specs.len(),
            max: MAX_PROBLEMS,
        });
    }
    let mut checked = Vec::with_capacity(specs.len());
    let mut tiles: u64 = 0;
    for (i, spec) in specs.iter().enumerate() {
        let c = check_problem(i, spec, activation)?;
        tiles = tiles.saturating_add(c.tiles);
        checked.push(c);
    }
    if tiles > u64::from(u32::MAX) {
        return Err(Error::TooManyTiles {
            tiles,
            max: u64::from(u32::MAX),
        });
    }
    check_overlaps(specs, &checked, counts, activation)?;
    Ok(checked)
}

fn dim_u32(problem: usize, field: &'static str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::InvalidDimension {
        problem,
        field,
        value,
        reason: "does not fit in 32 bits",
    })
}

/// `usize` to `u64`: lossless on every target Rust supports (pointers are at most 64 bits).
const fn wide(x: usize) -> u64 {
    x as u64
}

/// Bytes spanned by `rows` rows of `row_bytes` bytes, `stride` bytes apart; `None` on overflow.
fn strided_len(rows: u64, stride: u64, row_bytes: u64) -> Option<u64> {
    if rows == 0 || row_bytes == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(stride)?.checked_add(row_bytes)
}

fn check_buffer(
    problem: usize,
    field: &'static str,
    span: Span,
    needed: Option<u64>,
    align: u64,
) -> Result<()> {
    let Some(needed) = needed else {
        return Err(Error::Overflow { problem, field });
    };
    if needed == 0 {
        return Ok(());
    }
    if span.addr == 0 {
        return Err(Error::NullPointer { problem, field });
    }
    if !span.addr.is_multiple_of(align) {
        return Err(Error::Misaligned {
            problem,
            field,
            addr: span.addr,
            align,
        });
    }
    let given = wide(span.len_bytes);
    if given < needed {
        return Err(Error::BufferTooSmall {
            problem,
            field,
            needed,
            given,
        });
    }
    if span.addr.checked_add(given).is_none() {
        return Err(Error::Overflow { problem, field });
    }
    Ok(())
}

/// `lda` of 16-bit activations: bytes, `None` = `2 k`; at least `2 k`, a multiple of 16.
fn check_a16_stride(problem: usize, ld: Option<usize>, k: usize) -> Result<u64> {
    let row_bytes = k.saturating_mul(2);
    let value = ld.unwrap_or(row_bytes);
    if value < row_bytes {
        return Err(Error::InvalidStride {
            problem,
            field: "lda",
            value,
            reason: format!("bytes is less than a row of 16-bit values, 2 k = {row_bytes} bytes"),
        });
    }
    if !value.is_multiple_of(A16_ALIGN as usize) {
        return Err(Error::InvalidStride {
            problem,
            field: "lda",
            value,
            reason: format!("bytes is not a multiple of {A16_ALIGN} bytes (16-bit activations)"),
        });
    }
    Ok(wide(value))
}

fn check_ab_stride(
    problem: usize,
    field: &'static str,
    ld: Option<usize>,
    k: usize,
) -> Result<u64> {
    let row_bytes = k / 2;
    let value = ld.unwrap_or(row_bytes);
    if value < row_bytes {
        return Err(Error::InvalidStride {
            problem,
            field,
            value,
            reason: format!("bytes is less than a row, k / 2 = {row_bytes} bytes"),
        });
    }
    if !value.is_multiple_of(LD_AB_MULTIPLE) {
        return Err(Error::InvalidStride {
            problem,
            field,
            value,
            reason: format!("bytes is not a multiple of {LD_AB_MULTIPLE} bytes"),
        });
    }
    Ok(wide(value))
}

fn check_problem(i: usize, s: &ProblemSpec, activation: Activation) -> Result<Checked> {
    let a16 = activation != Activation::Nvfp4;
    if !s.alpha.is_finite() {
        return Err(Error::InvalidAlpha {
            problem: i,
            value: s.alpha,
        });
    }
    let m = dim_u32(i, "m", s.m)?;
    let n = dim_u32(i, "n", s.n)?;
    let k = dim_u32(i, "k", s.k)?;
    if k == 0 {
        return Err(Error::InvalidDimension {
            problem: i,
            field: "k",
            value: s.k,
            reason: "must be positive (at least one 16-element scale block)",
        });
    }
    if !k.is_multiple_of(16) {
        return Err(Error::InvalidDimension {
            problem: i,
            field: "k",
            value: s.k,
            reason: "is not a multiple of 16 (one E4M3 scale block)",
        });
    }
    let lda = if a16 {
        check_a16_stride(i, s.lda, s.k)?
    } else {
        check_ab_stride(i, "lda", s.lda, s.k)?
    };
    let ldb = check_ab_stride(i, "ldb", s.ldb, s.k)?;
    let ldc_elems = s.ldc.unwrap_or(s.n);
    if ldc_elems < s.n {
        return Err(Error::InvalidStride {
            problem: i,
            field: "ldc",
            value: ldc_elems,
            reason: format!("elements is less than a row, n = {}", s.n),
        });
    }
    let ldc = wide(ldc_elems);

    let row_bytes = u64::from(k / 2);
    let (m64, n64) = (u64::from(m), u64::from(n));
    let sfa_len = if a16 {
        check_buffer(i, "a", s.a, strided_len(m64, lda, 4 * row_bytes), A16_ALIGN)?;
        0 // not read
    } else {
        check_buffer(i, "a", s.a, strided_len(m64, lda, row_bytes), AB_ALIGN)?;
        let sfa_len = scale_len(s.sfa_layout, m64, k);
        check_buffer(i, "sfa", s.sfa, Some(sfa_len), SCALE_ALIGN)?;
        sfa_len
    };
    check_buffer(i, "b", s.b, strided_len(n64, ldb, row_bytes), AB_ALIGN)?;
    let sfb_len = scale_len(s.sfb_layout, n64, k);
    check_buffer(i, "sfb", s.sfb, Some(sfb_len), SCALE_ALIGN)?;
    // In elements first, then bytes: a huge `ldc` of a one-row or empty C needs no bytes
    // past its row, so it must not overflow here.
    let c_needed = strided_len(m64, ldc, n64).and_then(|elems| elems.checked_mul(2));
    check_buffer(i, "c", s.c, c_needed, C_ALIGN)?;

    let tiles = if m == 0 || n == 0 { 0 } else { tiles_for(m, n) };
    Ok(Checked {
        m,
        n,
        k,
        lda,
        ldb,
        ldc,
        tiles,
        sfa_len,
        sfb_len,
    })
}

/// The bytes of one operand the kernel touches: `rows` runs of `row_bytes` bytes starting at
/// `base`, `stride` bytes apart (`stride >= row_bytes > 0`, `rows > 0`).
#[derive(Clone, Copy, Debug)]
struct Region {
    base: u64,
    rows: u64,
    row_bytes: u64,
    stride: u64,
    problem: usize,
    field: &'static str,
}

impl Region {
    /// `None` for an empty region (nothing touched).
    fn new(
        problem: usize,
        field: &'static str,
        base: u64,
        rows: u64,
        row_bytes: u64,
        stride: u64,
    ) -> Option<Self> {
        (rows > 0 && row_bytes > 0).then_some(Self {
            base,
            rows,
            row_bytes,
            stride,
            problem,
            field,
        })
    }

    fn contiguous(problem: usize, field: &'static str, base: u64, len: u64) -> Option<Self> {
        Self::new(problem, field, base, 1, len, len)
    }

    /// One past the last byte (validated not to overflow).
    fn end(&self) -> u64 {
        self.base + (self.rows - 1) * self.stride + self.row_bytes
    }
}

/// Whether a single run `[s, s + w)` meets any row of `r`.
fn run_meets(s: i128, w: i128, r: &Region) -> bool {
    let (b, stride, rw) = (
        i128::from(r.base),
        i128::from(r.stride),
        i128::from(r.row_bytes),
    );
    // First row whose end lies past s: b + j * stride + rw > s.
    let j = ((s - b - rw).div_euclid(stride) + 1).max(0);
    j < i128::from(r.rows) && b + j * stride < s + w
}

/// Whether two regions share a byte (exact).
fn regions_meet(x: &Region, y: &Region) -> bool {
    if x.end() <= y.base || y.end() <= x.base {
        return false;
    }
    if x.rows == 1 {
        return run_meets(i128::from(x.base), i128::from(x.row_bytes), y);
    }
    if y.rows == 1 {
        return run_meets(i128::from(y.base), i128::from(y.row_bytes), x);
    }
    if x.stride == y.stride {
        // Rows i of x and j of y meet iff d + t * stride lies in (-wy, wx), t = j - i.
        let (stride, d) = (
            i128::from(x.stride),
            i128::from(y.base) - i128::from(x.base),
        );
        let (wx, wy) = (i128::from(x.row_bytes), i128::from(y.row_bytes));
        let t_min = -(i128::from(x.rows) - 1);
        let t_max = i128::from(y.rows) - 1;
        let t = ((-wy - d).div_euclid(stride) + 1).max(t_min);
        return t <= t_max && d + t * stride < wx;
    }
    // Different strides: walk the rows of the shorter one (bounded; beyond the bound, the
    // extents meeting counts as meeting).
    const MAX_WALK: u64 = 1 << 20;
    let (short, long) = if x.rows <= y.rows { (x, y) } else { (y, x) };
    if short.rows > MAX_WALK {
        return true;
    }
    (0..short.rows).any(|r| {
        let s = i128::from(short.base) + i128::from(r) * i128::from(short.stride);
        run_meets(s, i128::from(short.row_bytes), long)
    })
}

fn check_overlaps(
    specs: &[ProblemSpec],
    checked: &[Checked],
    counts: Option<Span>,
    activation: Activation,
) -> Result<()> {
    let a_row_factor = if activation == Activation::Nvfp4 {
        1
    } else {
        4
    };
    let mut inputs = Vec::with_capacity(specs.len() * 4 + 1);
    if let Some(span) = counts {
        inputs.extend(Region::contiguous(
            0,
            "counts",
            span.addr,
            wide(span.len_bytes),
        ));
    }
    let mut outputs = Vec::with_capacity(specs.len());
    for (i, (s, c)) in specs.iter().zip(checked).enumerate() {
        let row_bytes = u64::from(c.k / 2);
        inputs.extend(Region::new(
            i,
            "a",
            s.a.addr,
            u64::from(c.m),
            row_bytes * a_row_factor,
            c.lda,
        ));
        inputs.extend(Region::contiguous(i, "sfa", s.sfa.addr, c.sfa_len));
        inputs.extend(Region::new(
            i,
            "b",
            s.b.addr,
            u64::from(c.n),
            row_bytes,
            c.ldb,
        ));
        inputs.extend(Region::contiguous(i, "sfb", s.sfb.addr, c.sfb_len));
        let c_row = u64::from(c.n) * 2;
        outputs.extend(Region::new(
            i,
            "c",
            s.c.addr,
            u64::from(c.m),
            c_row,
            // Exact whenever C has two or more rows (its extent was validated); with one
            // row the stride is never used.
            c.ldc.saturating_mul(2),
        ));
    }
    outputs.sort_by_key(|r| (r.base, r.problem));
    let overlap = |out: &Region, other: &Region| {
        if other.field == "counts" {
            return Error::InvalidGroup {
                field: "counts",
                reason: format!("overlaps output `c` of problem {}", out.problem),
            };
        }
        Error::Overlap {
            problem: out.problem,
            field: out.field,
            other_problem: other.problem,
            other_field: other.field,
        }
    };
    // Output against output: only later-starting outputs whose start lies inside the extent.
    for (idx, x) in outputs.iter().enumerate() {
        for y in outputs[idx + 1..].iter().take_while(|y| y.base < x.end()) {
            if regions_meet(x, y) {
                let (hi, lo) = if x.problem >= y.problem {
                    (x, y)
                } else {
                    (y, x)
                };
                return Err(overlap(hi, lo));
            }
        }
    }
    // Input against output: outputs starting before the input's end, walked back while some
    // earlier output still reaches past the input's start.
    let mut reach = Vec::with_capacity(outputs.len());
    let mut max_end = 0u64;
    for r in &outputs {
        max_end = max_end.max(r.end());
        reach.push(max_end);
    }
    for input in &inputs {
        let upto = outputs.partition_point(|o| o.base < input.end());
        for j in (0..upto).rev() {
            if reach[j] <= input.base {
                break;
            }
            if regions_meet(&outputs[j], input) {
                return Err(overlap(&outputs[j], input));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(base: u64, rows: u64, row_bytes: u64, stride: u64) -> Region {
        Region::new(0, "x", base, rows, row_bytes, stride).unwrap()
    }

    /// Brute force over the bytes, for small regions.
    fn bytes(r: &Region) -> std::collections::HashSet<u64> {
        (0..r.rows)
            .flat_map(|i| (0..r.row_bytes).map(move |b| r.base + i * r.stride + b))
            .collect()
    }

    #[test]
    fn regions_meet_matches_brute_force() {
        let mut shapes = Vec::new();
        for base in [0u64, 3, 8, 16, 37, 64] {
            for rows in [1u64, 2, 3, 5] {
                for (row_bytes, stride) in
                    [(4u64, 4u64), (4, 8), (8, 8), (3, 16), (8, 24), (16, 16)]
                {
                    shapes.push(region(base, rows, row_bytes, stride));
                }
            }
        }
        for x in &shapes {
            for y in &shapes {
                let want = !bytes(x).is_disjoint(&bytes(y));
                assert_eq!(regions_meet(x, y), want, "{x:?} {y:?}");
            }
        }
    }
}
