//! The device-side problem table: one [`ProblemDesc`] per GEMM of the group.

/// One problem of a grouped GEMM as the kernels read it (`#[repr(C)]`, 96 bytes, 8-aligned).
///
/// Computes `C = alpha * (A * SFA) (B * SFB)^T` rounded to fp16, where
/// - `a`: `m` rows of `k` FP4 E2M1 values, two per byte (element 2j in the low nibble of byte
///   j), row `r` starting at byte `a + r * lda`;
/// - `b`: `n` rows of `k` FP4 values, same encoding, row `r` at `b + r * ldb`;
/// - `sfa` / `sfb`: E4M3 scales, one per 16 K-elements, in the layout given by
///   `sfa_layout` / `sfb_layout` (a [`crate::layout::ScaleLayout`] code);
/// - `c`: `m` rows of `n` fp16 values, row `r` at element `r * ldc`.
///
/// All pointers are device addresses. The host checks every field before a table reaches
/// the GPU (the `host` crate's validation); the kernels trust them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProblemDesc {
    /// Device address of A (FP4, M x K).
    pub a: u64,
    /// Device address of B (FP4, N x K).
    pub b: u64,
    /// Device address of A's scales.
    pub sfa: u64,
    /// Device address of B's scales.
    pub sfb: u64,
    /// Device address of C (fp16, M x N).
    pub c: u64,
    /// Bytes between consecutive rows of A (at least `k / 2`).
    pub lda: u64,
    /// Bytes between consecutive rows of B (at least `k / 2`).
    pub ldb: u64,
    /// fp16 elements between consecutive rows of C (at least `n`).
    pub ldc: u64,
    /// Rows of A and C (tokens); may be 0.
    pub m: u32,
    /// Rows of B, columns of C.
    pub n: u32,
    /// Reduction length, a multiple of 16.
    pub k: u32,
    /// [`crate::layout::ScaleLayout`] code of `sfa`.
    pub sfa_layout: u32,
    /// [`crate::layout::ScaleLayout`] code of `sfb`.
    pub sfb_layout: u32,
    /// Per-problem output factor (the checkpoint's global scale; 1.0 by default).
    pub alpha: f32,
    /// Index of this problem's first tile in the launch: the exclusive prefix sum of the
    /// tile counts of the problems before it.
    pub tile_start: u32,
    /// Tiles of this problem along M (`ceil(m / TILE_M)` for the kernel it was packed for).
    pub tiles_m: u32,
}

/// Size of [`ProblemDesc`] in bytes, fixed so the PTX and the host agree.
pub const PROBLEM_DESC_BYTES: usize = 96;

const _: () = assert!(core::mem::size_of::<ProblemDesc>() == PROBLEM_DESC_BYTES);
const _: () = assert!(core::mem::align_of::<ProblemDesc>() == 8);

/// The most problems one launch takes (the tile search is a binary search over this table).
pub const MAX_PROBLEMS: usize = 1 << 16;
