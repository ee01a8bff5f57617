//! Finding a CUDA GPU without panicking.
//!
//! cudarc with `dynamic-loading` opens `libcuda` on first use and *panics* when it cannot
//! (and panics on a missing symbol, e.g. a driver older than the bindings). So, in order:
//! 1. `cudarc::driver::sys::is_culib_present()`: cudarc's own probe, which tries the same
//!    library names its loader would and only reports whether one opens. No panic, no hook
//!    games, and the common "no driver on this machine" case gets a clear reason.
//! 2. The first driver calls (`cuInit` through `device_count`, then `CudaContext::new`) run
//!    under `catch_unwind` with the panic hook silenced, as a backstop for a library that
//!    opens but lacks a symbol; a driver error (no device, driver too old, ...) is an
//!    ordinary `Err`.
//!
//! cuBLAS gets the same probe (`cudarc::cublas::sys::is_culib_present()`) before
//! `CudaBlas::new`, which also panics when the library is missing.

use nvfp4::cudarc::driver::CudaContext;
use nvfp4::{GroupedGemm, KernelPath};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

/// Runs `f`, turning a panic into `Err(message)` without printing the panic.
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    panic::set_hook(hook);
    out.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into())
    })
}

/// The CUDA context of device 0, or why there is none.
pub fn open_gpu() -> Result<Arc<CudaContext>, String> {
    // The library checks that libcuda loads; `quietly` also turns a panic of cudarc's lazy
    // symbol loading (a driver missing a symbol) into a message.
    quietly(|| nvfp4::open_device(0))
        .map_err(|p| format!("the CUDA driver could not be used: {p}"))?
        .map_err(|e| e.to_string())
}

/// [`load_gemm`] with the path and tuning options of `bench` and `check`.
pub fn load_gemm_for(
    ctx: Arc<CudaContext>,
    opts: &super::args::CommonOpts,
) -> nvfp4::Result<GroupedGemm> {
    load_gemm(ctx, opts.portable, &opts.tuning)
}

/// Loads the kernels (the portable path if `portable`) with the plan settings of `tuning`,
/// and prints which device and kernels run.
pub fn load_gemm(
    ctx: Arc<CudaContext>,
    portable: bool,
    tuning: &super::args::Tuning,
) -> nvfp4::Result<GroupedGemm> {
    let name = ctx.name()?;
    let mut gemm = if portable {
        GroupedGemm::with_path(ctx, KernelPath::Portable)?
    } else {
        GroupedGemm::new(ctx)?
    };
    gemm.set_token_dequant(tuning.token_pass);
    gemm.set_split_k(tuning.split_k);
    gemm.set_weights_by_tma(tuning.weights_tma);
    gemm.set_blocked_k(tuning.blocked_k);
    gemm.set_one_per_sm_deep(tuning.one_per_sm_deep);
    gemm.set_scale_groups(tuning.scale_groups);
    gemm.set_dynamic_units(tuning.dynamic_units);
    gemm.set_pair_tiles(tuning.pair_tiles);
    let (major, minor) = gemm.compute_capability();
    println!(
        "device: {name} (compute capability {major}.{minor}, {} SMs)",
        gemm.sm_count()
    );
    println!(
        "kernel: {} ({:?} path{}, {} PTX, {} CTAs/SM, token pass {:?}, split-K {:?}, weights by TMA {}, blocked K {}, one-per-SM deep {}, dynamic units {}, pair tiles {:?}, {} pair clusters)",
        gemm.kernel_name(),
        gemm.path(),
        if portable {
            ", requested by --portable"
        } else {
            ""
        },
        gemm.ptx_arch(),
        gemm.ctas_per_sm(),
        gemm.token_dequant(),
        gemm.split_k(),
        if gemm.weights_by_tma() { "on" } else { "off" },
        if gemm.blocked_k() { "on" } else { "off" },
        if gemm.one_per_sm_deep() { "on" } else { "off" },
        if gemm.dynamic_units() { "on" } else { "off" },
        gemm.pair_tiles(),
        gemm.pair_clusters()
    );
    Ok(gemm)
}

/// Whether cuBLAS can be loaded (`CudaBlas::new` panics otherwise).
pub fn cublas_present() -> bool {
    // SAFETY: as for libcuda above: a dlopen probe of libcublas' candidate names.
    unsafe { nvfp4::cudarc::cublas::sys::is_culib_present() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quietly_catches_panics() {
        assert_eq!(quietly(|| 3), Ok(3));
        assert_eq!(
            quietly(|| -> u8 { panic!("boom {}", 1) }),
            Err("boom 1".to_string())
        );
        assert_eq!(
            quietly(|| -> u8 { panic!("static") }),
            Err("static".to_string())
        );
    }
}
