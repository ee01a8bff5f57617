//! NVFP4 grouped GEMM: the GPU kernels, and the pieces of them that the host shares.
//!
//! This crate is compiled twice:
//! - for the host (any stable toolchain): the problem table ([`problem::ProblemDesc`]), the FP4
//!   E2M1 / FP8 E4M3 decoders ([`fp4`]) and the scale-layout index functions ([`layout`]) are
//!   ordinary Rust, unit-tested on the CPU and used by the `host` crate to validate and pack
//!   problems;
//! - for `nvptx64-nvidia-cuda` (nightly, `cargo xtask build-ptx`): the same modules plus the
//!   kernels in `device`, emitted as PTX that the host embeds.
//!
//! What is computed, and the data layouts, are the contract in `DESIGN.md`: for each problem
//! `i`, `C_i = alpha_i * (A_i * SFA_i) (B_i * SFB_i)^T`, rounded to fp16.
#![no_std]
#![cfg_attr(
    target_arch = "nvptx64",
    feature(abi_ptx, stdarch_nvptx, asm_experimental_arch)
)]

pub mod fp4;
pub mod kernels;
pub mod layout;
pub mod problem;
pub mod quant;
pub mod tiling;

#[cfg(target_arch = "nvptx64")]
mod device;
