//! NVFP4 grouped GEMM for Rust services on NVIDIA GPUs (compute capability 8.0 and newer;
//! tuned for H100 / H200): many independent FP4 GEMMs of different shapes — the experts of
//! a mixture-of-experts layer — in one kernel launch.
//!
//! # The contract
//! For each problem `i` of a group, with its own `m`, `n`, `k`:
//! `c_i = round_to_fp16(alpha_i * sum_k (a_i * sfa_i) (b_i * sfb_i)^T)`, accumulated in fp32,
//! where
//! - `a_i` (`m x k`) and `b_i` (`n x k`) are FP4 E2M1, two values per byte (element `2j` in
//!   the low nibble of byte `j`, PyTorch's `float4_e2m1fn_x2`), rows along K;
//! - `sfa_i` / `sfb_i` hold one FP8 E4M3 (`e4m3fn`) scale per 16 consecutive K elements, in
//!   the plain row-major layout or the cuBLAS "128x4" blocked layout ([`ScaleLayout`]);
//! - `c_i` is `m x n` fp16, row-major, with an optional row stride;
//! - `k` is a positive multiple of 16; `m` (tokens) and `n` may be 0 (nothing is written).
//!
//! Everything a problem must satisfy is checked on the host before the launch
//! ([`validate`]): shapes, strides, alignment, buffer lengths for the shape and layout,
//! finite `alpha`, and that no output overlaps an input or another output. Errors
//! ([`Error`]) name the problem index and the field. NaN scales give NaN outputs in the rows
//! and columns that read them, like the reference.
//!
//! # Use
//! [`GroupedGemm`] loads the kernels once per CUDA context. A group is a slice of
//! [`Problem`]s whose operands are device buffers ([`DeviceInput`] / [`DeviceOutput`], made
//! from cudarc slices and views, or from raw addresses); [`GroupedGemm::run`] validates it,
//! uploads a small problem table and launches one persistent kernel. For repeated launches
//! or CUDA graphs, [`GroupedGemm::plan`] once and [`GroupedGemm::launch`] many times.
//! [`GroupedGemm::run_host`] takes host slices ([`HostProblem`]) for tests and tools.
//!
//! ```no_run
//! use nvfp4::cudarc::driver::CudaContext;
//! use nvfp4::{GroupedGemm, HostProblem, ScaleLayout};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ctx = CudaContext::new(0)?;
//! let gemm = GroupedGemm::new(ctx.clone())?;
//! // Two experts: 40 and 0 tokens, 256 x 128 weights each.
//! let expert = |m: usize| HostProblem {
//!     m, n: 256, k: 128,
//!     a: vec![0x22; m * 64], sfa: vec![0x38; m * 8], sfa_layout: ScaleLayout::Plain,
//!     b: vec![0x22; 256 * 64], sfb: vec![0x38; 256 * 8], sfb_layout: ScaleLayout::Plain,
//!     alpha: 1.0,
//! };
//! let c = gemm.run_host(&ctx.default_stream(), &[expert(40), expert(0)])?;
//! assert_eq!((c[0].len(), c[1].len()), (40 * 256, 0));
//! # Ok(()) }
//! ```
//!
//! The host side needs no CUDA toolkit to build: cudarc loads `libcuda` at run time, and the
//! kernels' PTX (compiled from Rust by `cargo xtask build-ptx`) is embedded in the crate.

pub use cudarc;

/// Opens CUDA device `ordinal` (a primary-context [`cudarc::driver::CudaContext`]), or says
/// why there is none, without panicking where cudarc would: cudarc loads `libcuda` on first
/// use and panics if it is missing, so this checks that the library loads first.
///
/// # Errors
/// [`Error::NoDevice`] if `libcuda` cannot be loaded or there is no device `ordinal`;
/// [`Error::Driver`] if the driver fails to initialise or create the context.
///
/// ```no_run
/// let ctx = nvfp4::open_device(0)?;
/// let gemm = nvfp4::GroupedGemm::new(ctx)?;
/// # Ok::<(), nvfp4::Error>(())
/// ```
pub fn open_device(ordinal: usize) -> Result<std::sync::Arc<cudarc::driver::CudaContext>> {
    // SAFETY: `is_culib_present` only tries to load the driver library and reports whether
    // it could; it calls nothing in it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::NoDevice(
            "the CUDA driver library (libcuda.so) could not be loaded".into(),
        ));
    }
    let count = cudarc::driver::CudaContext::device_count()?;
    if usize::try_from(count).map_or(true, |count| ordinal >= count) {
        return Err(Error::NoDevice(format!(
            "device {ordinal} requested, the driver reports {count}"
        )));
    }
    Ok(cudarc::driver::CudaContext::new(ordinal)?)
}
pub use half::{bf16, f16};
pub use kernels_gpu::layout::ScaleLayout;

pub use buffer::{DeviceInput, DeviceOutput};
pub use error::{Error, Result};
pub use gemm::{
    Activation, GemmTypes, GroupPlan, GroupedGemm, KernelPath, OutputType, PairTiles, Problem,
    SplitK, TokenDequant,
};
pub use problem::HostProblem;

mod buffer;
mod error;
mod gemm;
pub mod r#gen;
#[cfg(feature = "io")]
pub mod io;
pub mod moe;
pub mod problem;
mod ptx_module;
pub mod quant;
pub mod reference;
pub mod shapes;
pub mod table;
mod token_maps;
pub mod validate;
