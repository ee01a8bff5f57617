//! Device-only code: the kernels and the thin `asm!` wrappers they are written with.
//!
//! Only compiled for `nvptx64-nvidia-cuda` (see `cargo xtask build-ptx`); the Hopper kernel
//! only into the sm_90a PTX (`--cfg nvfp4_sm90a`).

mod arch;
mod dequant;
mod load;
mod mma_kernel;
mod quant_kernel;
mod sched;
mod split;
mod tokens_kernel;
#[cfg(nvfp4_sm90a)]
mod wgmma_kernel;
