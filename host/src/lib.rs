//! NVFP4 grouped GEMM for Rust services (work in progress: see the modules).

pub use half::f16;
pub use kernels_gpu::layout::ScaleLayout;

pub mod problem;
pub mod shapes;
