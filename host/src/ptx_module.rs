//! Loading the embedded PTX (the files `cargo xtask build-ptx` commits) into a context, and
//! its kernels: the GEMM's (`gemm.rs`) and the quantizer's.

use crate::{Error, Result};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use kernels_gpu::kernels::KernelInfo;
use std::sync::Arc;

/// PTX for compute capability 9.0 (H100 / H200), built by `cargo xtask build-ptx`.
const PTX_SM90A: &str = include_str!("../ptx/nvfp4_sm90a.ptx");
/// PTX for every other compute capability from 8.0 up (JIT-compiled by the driver).
const PTX_SM80: &str = include_str!("../ptx/nvfp4_sm80.ptx");

/// A kernel loaded from the embedded PTX, with the device facts a launch needs.
#[derive(Debug)]
pub(crate) struct LoadedKernel {
    pub func: CudaFunction,
    pub compute_capability: (i32, i32),
    /// `"sm_90a"` or `"sm_80"`.
    pub ptx_arch: &'static str,
    pub sm_count: u32,
    /// Resident CTAs per SM from the occupancy query (`fallback_ctas_per_sm` if it failed).
    pub ctas_per_sm: u32,
}

/// Loads the embedded PTX for `ctx`'s device: the sm_90a PTX on compute capability 9.0, the
/// sm_80 PTX on every other capability from 8.0 up. Returns the module, the compute
/// capability and which PTX (`"sm_90a"` or `"sm_80"`).
///
/// # Errors
/// [`Error::UnsupportedGpu`] below `kernel`'s `min_cc` (or off 9.0 for an sm_90a-only
/// kernel); [`Error::PtxLoad`] if the driver rejects the PTX; [`Error::Driver`] if a device
/// query fails.
pub(crate) fn load_module(
    ctx: &Arc<CudaContext>,
    kernel: &KernelInfo,
) -> Result<(Arc<CudaModule>, (i32, i32), &'static str)> {
    let (major, minor) = ctx.compute_capability()?;
    let cc = major.saturating_mul(10).saturating_add(minor);
    if major < 8 || cc < kernel.min_cc as i32 || (kernel.sm90a_only && (major, minor) != (9, 0)) {
        return Err(Error::UnsupportedGpu { major, minor });
    }
    let (ptx, ptx_arch) = if (major, minor) == (9, 0) {
        (PTX_SM90A, "sm_90a")
    } else {
        (PTX_SM80, "sm_80")
    };
    let module = ctx
        .load_module(Ptx::from_src(ptx))
        .map_err(|e| Error::PtxLoad(format!("the driver rejected the {ptx_arch} PTX: {e}")))?;
    Ok((module, (major, minor), ptx_arch))
}

/// `kernel`'s function in `module` (loaded from the `ptx_arch` PTX).
///
/// # Errors
/// [`Error::PtxLoad`] if the PTX lacks the kernel.
pub(crate) fn load_function(
    module: &Arc<CudaModule>,
    kernel: &KernelInfo,
    ptx_arch: &str,
) -> Result<CudaFunction> {
    module.load_function(kernel.name).map_err(|e| {
        Error::PtxLoad(format!(
            "kernel `{}` is not in the {ptx_arch} PTX ({e}); is host/ptx a placeholder or \
             stale? run `cargo xtask build-ptx`",
            kernel.name
        ))
    })
}

/// Streaming multiprocessors of `ctx`'s device (at least 1).
///
/// # Errors
/// [`Error::Driver`] if the query fails.
pub(crate) fn sm_count(ctx: &Arc<CudaContext>) -> Result<u32> {
    let n = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    Ok(u32::try_from(n).unwrap_or(1).max(1))
}

/// Resident CTAs per SM of `func` launched as `kernel` says (`fallback` if the query fails).
pub(crate) fn ctas_per_sm(func: &CudaFunction, kernel: &KernelInfo, fallback: u32) -> u32 {
    func.occupancy_max_active_blocks_per_multiprocessor(
        kernel.threads,
        kernel.dynamic_smem_bytes as usize,
        None,
    )
    .ok()
    .filter(|&n| n > 0)
    .unwrap_or(fallback)
}

/// How many clusters of `cluster` CTAs of `func`, launched as `kernel` says (threads, dynamic
/// shared memory), the device holds at once (`cuOccupancyMaxActiveClusters`, sm_90 and
/// newer); `None` if the query fails. The pair kernels' persistent grids are sized by it: a
/// grid of more clusters than fit would leave the extra ones waiting for a whole cluster to
/// finish.
pub(crate) fn max_active_clusters(
    ctx: &Arc<CudaContext>,
    func: &CudaFunction,
    kernel: &KernelInfo,
    cluster: u32,
    grid_clusters: u32,
) -> Option<u32> {
    use cudarc::driver::sys;
    ctx.bind_to_thread().ok()?;
    // SAFETY: plain C structs; every field used is set below or valid as zero.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attr.value.clusterDim.x = cluster;
    attr.value.clusterDim.y = 1;
    attr.value.clusterDim.z = 1;
    let config = sys::CUlaunchConfig {
        gridDimX: cluster.checked_mul(grid_clusters.max(1))?,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: kernel.threads,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: kernel.dynamic_smem_bytes,
        hStream: std::ptr::null_mut(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    let mut n: std::ffi::c_int = 0;
    // SAFETY: `config` and `attr` outlive the call, which only writes `n`.
    unsafe { sys::cuOccupancyMaxActiveClusters(&mut n, func.cu_function(), &config) }
        .result()
        .ok()?;
    u32::try_from(n).ok()
}

/// Loads `kernel` into `ctx` ([`load_module`] + [`load_function`]) with the device facts a
/// launch needs.
///
/// # Errors
/// As [`load_module`] and [`load_function`]; [`Error::Driver`] if a device query fails.
pub(crate) fn load(
    ctx: &Arc<CudaContext>,
    kernel: &KernelInfo,
    fallback_ctas_per_sm: u32,
) -> Result<LoadedKernel> {
    let (module, compute_capability, ptx_arch) = load_module(ctx, kernel)?;
    from_module(
        ctx,
        &module,
        compute_capability,
        ptx_arch,
        kernel,
        fallback_ctas_per_sm,
    )
}

/// [`load`] from a module [`load_module`] already returned (for `ctx`), without loading the
/// PTX again.
///
/// # Errors
/// As [`load_function`]; [`Error::Driver`] if a device query fails.
pub(crate) fn from_module(
    ctx: &Arc<CudaContext>,
    module: &Arc<CudaModule>,
    compute_capability: (i32, i32),
    ptx_arch: &'static str,
    kernel: &KernelInfo,
    fallback_ctas_per_sm: u32,
) -> Result<LoadedKernel> {
    let func = load_function(module, kernel, ptx_arch)?;
    Ok(LoadedKernel {
        sm_count: sm_count(ctx)?,
        ctas_per_sm: ctas_per_sm(&func, kernel, fallback_ctas_per_sm),
        func,
        compute_capability,
        ptx_arch,
    })
}

/// Launches `func` on `stream` with `cuLaunchKernelEx`. With `programmatic`, as a
/// programmatic dependent of the kernel before it there (the programmatic-stream-serialization
/// launch attribute, sm_90 and newer): its CTAs may be scheduled once every CTA of that kernel
/// has executed `griddepcontrol.launch_dependents`, instead of after it completes; the kernel
/// must execute `griddepcontrol.wait` before it reads anything the earlier kernel writes (the
/// GEMM kernels do). With `cluster > 1`, in clusters of `cluster` CTAs along x (the grid's x
/// a multiple of it; sm_90 and newer).
///
/// # Safety
/// As a cudarc launch: `params` holds one pointer per kernel parameter, in order, each to a
/// value of that parameter's type, and every address among those values is valid for what the
/// kernel does with it until the launch completes.
pub(crate) unsafe fn launch_ex(
    stream: &cudarc::driver::CudaStream,
    func: &CudaFunction,
    cfg: cudarc::driver::LaunchConfig,
    params: &mut [*mut std::ffi::c_void],
    programmatic: bool,
    cluster: u32,
) -> Result<()> {
    use cudarc::driver::sys;
    stream.context().bind_to_thread()?;
    // SAFETY: plain C structs; every field used is set below or valid as zero.
    let mut attrs: [sys::CUlaunchAttribute; 2] = unsafe { std::mem::zeroed() };
    let mut n = 0;
    if programmatic {
        attrs[n].id =
            sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attrs[n].value.programmaticStreamSerializationAllowed = 1;
        n += 1;
    }
    if cluster > 1 {
        attrs[n].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
        attrs[n].value.clusterDim.x = cluster;
        attrs[n].value.clusterDim.y = 1;
        attrs[n].value.clusterDim.z = 1;
        n += 1;
    }
    let attr = attrs.as_mut_ptr();
    let num_attrs = n as u32;
    let config = sys::CUlaunchConfig {
        gridDimX: cfg.grid_dim.0,
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: stream.cu_stream(),
        attrs: attr,
        numAttrs: num_attrs,
    };
    // SAFETY: `config` and `attr` outlive the call; the caller vouches for `params`.
    unsafe {
        sys::cuLaunchKernelEx(
            &config,
            func.cu_function(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()?;
    Ok(())
}
