//! Problems held in host memory: what generators produce, the CPU reference consumes and the
//! convenience API uploads.

use crate::ScaleLayout;

/// One NVFP4 GEMM with its operands in host memory (`C = alpha * A * B^T`, see `DESIGN.md`).
///
/// Layouts: `a` is `m` rows of `k/2` bytes (two E2M1 codes per byte, element 2j in the low
/// nibble), `b` is `n` rows of `k/2` bytes; `sfa` / `sfb` hold one E4M3 byte per 16 elements
/// of a row, in `sfa_layout` / `sfb_layout`. Rows are packed (stride `k/2`).
#[derive(Clone, Debug, PartialEq)]
pub struct HostProblem {
    /// Rows of A and C (tokens); may be 0.
    pub m: usize,
    /// Rows of B and columns of C.
    pub n: usize,
    /// Reduction length; a multiple of 16.
    pub k: usize,
    /// A: `m * k / 2` bytes.
    pub a: Vec<u8>,
    /// A's scales: `kernels_gpu::layout::scale_len(sfa_layout, m, k)` bytes.
    pub sfa: Vec<u8>,
    /// Layout of `sfa`.
    pub sfa_layout: ScaleLayout,
    /// B: `n * k / 2` bytes.
    pub b: Vec<u8>,
    /// B's scales: `scale_len(sfb_layout, n, k)` bytes.
    pub sfb: Vec<u8>,
    /// Layout of `sfb`.
    pub sfb_layout: ScaleLayout,
    /// Output factor.
    pub alpha: f32,
}
