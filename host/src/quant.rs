//! NVFP4 quantization of fp16 / bf16 / fp32 tensors, on the GPU ([`Quantizer`]) and on the
//! CPU ([`quantize_cpu`]), bit for bit the same.
//!
//! # What is computed
//! The input is a `[rows, k]` tensor, row-major with a row stride in elements (`k` a positive
//! multiple of 16). Each run of 16 consecutive elements of a row (a *block*) gets one E4M3
//! (`e4m3fn`) scale, optionally under a per-tensor fp32 global scale `g` (the two-level
//! scheme of NVFP4 checkpoints; `g = 1` without one):
//! - scale = E4M3 of `(amax / 6) / g`, `amax` the block's largest magnitude, rounded to
//!   nearest even and saturated at 448;
//! - each value = E2M1 of `|x| / (scale * g)`, rounded to nearest even over
//!   {0, 0.5, 1, 1.5, 2, 3, 4, 6}, saturated at 6, with the sign of `x` (-0 included);
//! - a block containing a NaN gets the NaN scale `0x7F` and 16 zero codes; a block whose
//!   scale rounds to 0 (`amax == 0`, or `amax / 6 / g <= 2^-10`) gets scale 0 and only signed
//!   zeros.
//!
//! `kernels_gpu::quant` (shared by the kernel and [`quantize_cpu`]) documents the exact f32
//! operation order, why it is reproducible on both sides, and the error bound of the
//! dequantized values: `|x - e2m1 * scale * g| <= 0.177 * amax` per element while the block's
//! scale is an unsaturated E4M3 normal.
//!
//! # Outputs
//! - FP4: `[rows, k / 2]` bytes, packed (row `r` at byte `r * k / 2`), element `2j` of a row in
//!   the low nibble of byte `j`: the layout [`crate::Problem`]'s `a` / `b` take (`lda = k / 2`).
//! - Scales: [`ScaleLayout::Plain`] `[rows, k / 16]`, or [`ScaleLayout::Blocked`] (the cuBLAS
//!   "128x4" layout) whose padding bytes are written with 0; `scale_len(layout, rows, k)`
//!   bytes in all ([`scale_bytes`]). Both take a GEMM's `sfa` / `sfb` directly.
//!
//! With a global scale, a GEMM of two quantized operands needs `alpha = g_a * g_b`.
//!
//! ```
//! use nvfp4::quant::quantize_cpu;
//! use nvfp4::ScaleLayout;
//!
//! // One row of 16 values: amax = 3, scale = E4M3(0.5) = 0x30, values x / 0.5.
//! let x: Vec<f32> = (0..16).map(|i| i as f32 * 0.2).collect();
//! let q = quantize_cpu(&x, 1, 16, None, None, ScaleLayout::Plain)?;
//! assert_eq!(q.scales, [0x30]);
//! // 0.0 -> 0, 0.2 / 0.5 = 0.4 -> 0.5 (code 1): byte 0 = 0x10.
//! assert_eq!(q.fp4[0], 0x10);
//! # Ok::<(), nvfp4::Error>(())
//! ```

use crate::gemm::GroupedGemm;
use crate::ptx_module::{self, LoadedKernel};
use crate::validate::Span;
use crate::{Error, Result, ScaleLayout};
use cudarc::driver::sys::CUstreamCaptureStatus as CaptureStatus;
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr,
    DeviceSlice, LaunchConfig, PushKernelArg, SyncOnDrop,
};
pub use half::bf16;
use half::f16;
use kernels_gpu::kernels::QUANTIZE;
use kernels_gpu::layout::{scale_len, scale_offset};
pub use kernels_gpu::quant::InputDtype;
use kernels_gpu::quant::{BLOCK, MIN_GLOBAL_SCALE, THREADS, quantize_block, scale_grid};
use rayon::prelude::*;
use std::sync::Arc;

/// Alignment in bytes the kernel needs for the input (it loads 16-byte vectors).
pub const INPUT_ALIGN: u64 = 16;
/// The input's row stride, in bytes, must be a multiple of this (so every block is aligned).
pub const ROW_STRIDE_MULTIPLE_BYTES: u64 = 16;
/// Alignment in bytes the kernel needs for the FP4 output (it stores 8 bytes per block).
pub const FP4_ALIGN: u64 = 8;

/// CTAs per SM assumed when the occupancy query fails.
const FALLBACK_CTAS_PER_SM: u32 = 4;

mod private {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
    impl Sealed for f32 {}
}

/// An element type the quantizer reads: [`struct@f16`], [`struct@bf16`] or `f32`.
pub trait QuantElement: DeviceRepr + Copy + Send + Sync + 'static + private::Sealed {
    /// The kernel's code for this type.
    const DTYPE: InputDtype;
    /// The value as f32 (exact for all three types).
    fn to_f32(self) -> f32;
}

impl QuantElement for f16 {
    const DTYPE: InputDtype = InputDtype::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl QuantElement for bf16 {
    const DTYPE: InputDtype = InputDtype::Bf16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl QuantElement for f32 {
    const DTYPE: InputDtype = InputDtype::F32;
    fn to_f32(self) -> f32 {
        self
    }
}

/// FP4 bytes of a quantized `[rows, k]` tensor: `rows * k / 2`.
pub fn fp4_bytes(rows: usize, k: usize) -> usize {
    rows * (k / 2)
}

/// Scale bytes of a quantized `[rows, k]` tensor in `layout`
/// (`kernels_gpu::layout::scale_len`).
pub fn scale_bytes(layout: ScaleLayout, rows: usize, k: usize) -> usize {
    scale_len(layout, rows as u64, k as u32) as usize
}

/// Everything validation looks at for one quantization: the shape, the global scale and
/// where each buffer lives (see [`Quantizer::quantize`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantSpec {
    /// Element type of the input.
    pub dtype: InputDtype,
    /// Rows of the input; 0 quantizes nothing.
    pub rows: usize,
    /// Elements per row: a positive multiple of 16.
    pub k: usize,
    /// Elements between rows of the input; `None` = `k`.
    pub row_stride: Option<usize>,
    /// The input's bytes.
    pub input: Span,
    /// The global scale `g`; `None` = 1.
    pub global_scale: Option<f32>,
    /// Layout of the scales written.
    pub scale_layout: ScaleLayout,
    /// The FP4 output's bytes.
    pub out_fp4: Span,
    /// The scale output's bytes.
    pub out_scales: Span,
}

/// Bytes each buffer must hold, from a valid shape.
#[derive(Clone, Copy, Debug)]
struct Needs {
    input: u64,
    fp4: u64,
    scales: u64,
    row_stride_bytes: u64,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidQuantize {
        field,
        reason: reason.into(),
    }
}

fn too_small(field: &'static str, given: u64, needed: u64) -> Error {
    invalid(
        field,
        format!("holds {given} bytes but the shape needs {needed} bytes"),
    )
}

/// The checks [`quantize_cpu`] and [`Quantizer::quantize`] share: shape, stride, global scale
/// and buffer lengths.
fn check_shape(
    dtype: InputDtype,
    rows: usize,
    k: usize,
    row_stride: Option<usize>,
    input_len_bytes: usize,
    global_scale: Option<f32>,
    scale_layout: ScaleLayout,
) -> Result<Needs> {
    if k == 0 {
        return Err(invalid(
            "k",
            "= 0 must be positive (at least one 16-element scale block)",
        ));
    }
    if !k.is_multiple_of(BLOCK) {
        return Err(invalid(
            "k",
            format!("= {k} is not a multiple of 16 (one E4M3 scale block)"),
        ));
    }
    if u32::try_from(k).is_err() {
        return Err(invalid("k", format!("= {k} does not fit in 32 bits")));
    }
    if u32::try_from(rows).is_err() {
        return Err(invalid("rows", format!("= {rows} does not fit in 32 bits")));
    }
    let stride = row_stride.unwrap_or(k);
    if stride < k {
        return Err(invalid(
            "row_stride",
            format!("= {stride} elements is less than a row, k = {k}"),
        ));
    }
    if let Some(g) = global_scale
        && !(g.is_finite() && g >= MIN_GLOBAL_SCALE)
    {
        return Err(invalid(
            "global_scale",
            format!("= {g} must be finite and at least 2^-126 (the smallest normal f32)"),
        ));
    }
    let esize = u64::from(dtype.bytes());
    let overflow = || invalid("input", "extent (rows x row_stride) overflows 64 bits");
    let row_stride_bytes = (stride as u64).checked_mul(esize).ok_or_else(overflow)?;
    let input = if rows == 0 {
        0
    } else {
        ((rows - 1) as u64)
            .checked_mul(stride as u64)
            .and_then(|e| e.checked_add(k as u64))
            .and_then(|e| e.checked_mul(esize))
            .ok_or_else(overflow)?
    };
    if (input_len_bytes as u64) < input {
        return Err(too_small("input", input_len_bytes as u64, input));
    }
    Ok(Needs {
        input,
        fp4: fp4_bytes(rows, k) as u64,
        scales: scale_len(scale_layout, rows as u64, k as u32),
        row_stride_bytes,
    })
}

/// Validates a quantization for the GPU kernel, in this order (the first violation is
/// returned, as [`Error::InvalidQuantize`] naming the field):
/// 1. `k` positive, a multiple of 16 and below 2^32; `rows` below 2^32;
/// 2. `row_stride` (if given) at least `k`;
/// 3. `global_scale` (if given) finite and at least 2^-126;
/// 4. `input` long enough: `((rows - 1) * row_stride + k) * element bytes` (0 for no rows);
/// 5. `out_fp4` at least `rows * k / 2` bytes, `out_scales` at least
///    `scale_len(scale_layout, rows, k)` bytes;
/// 6. the row stride in bytes a multiple of 16;
/// 7. every buffer that must hold bytes not null, `input` 16-byte and `out_fp4` 8-byte
///    aligned, and no extent past 2^64;
/// 8. the bytes written (`out_fp4`, `out_scales`) disjoint from each other and from the
///    input's extent.
///
/// [`quantize_cpu`] applies 1 to 4 (the CPU needs no alignment).
///
/// # Errors
/// [`Error::InvalidQuantize`] as above.
pub fn check(spec: &QuantSpec) -> Result<()> {
    let needs = check_shape(
        spec.dtype,
        spec.rows,
        spec.k,
        spec.row_stride,
        spec.input.len_bytes,
        spec.global_scale,
        spec.scale_layout,
    )?;
    if (spec.out_fp4.len_bytes as u64) < needs.fp4 {
        return Err(too_small(
            "out_fp4",
            spec.out_fp4.len_bytes as u64,
            needs.fp4,
        ));
    }
    if (spec.out_scales.len_bytes as u64) < needs.scales {
        return Err(too_small(
            "out_scales",
            spec.out_scales.len_bytes as u64,
            needs.scales,
        ));
    }
    if !needs
        .row_stride_bytes
        .is_multiple_of(ROW_STRIDE_MULTIPLE_BYTES)
    {
        let stride = spec.row_stride.unwrap_or(spec.k);
        return Err(invalid(
            "row_stride",
            format!(
                "= {stride} elements ({} bytes) is not a multiple of 16 bytes",
                needs.row_stride_bytes
            ),
        ));
    }
    let extents = [
        ("input", spec.input.addr, needs.input, INPUT_ALIGN),
        ("out_fp4", spec.out_fp4.addr, needs.fp4, FP4_ALIGN),
        ("out_scales", spec.out_scales.addr, needs.scales, 1),
    ];
    for (field, addr, len, align) in extents {
        if len == 0 {
            continue;
        }
        if addr == 0 {
            return Err(invalid(field, "is a null pointer"));
        }
        if !addr.is_multiple_of(align) {
            return Err(invalid(
                field,
                format!("at {addr:#x} is not {align}-byte aligned"),
            ));
        }
        if addr.checked_add(len).is_none() {
            return Err(invalid(field, "extends past the 64-bit address space"));
        }
    }
    let overlaps = |(_, a, la, _): (&str, u64, u64, u64), (_, b, lb, _): (&str, u64, u64, u64)| {
        la > 0 && lb > 0 && a < b + lb && b < a + la
    };
    for (out, other) in [(1, 0), (2, 0), (2, 1)] {
        if overlaps(extents[out], extents[other]) {
            return Err(invalid(
                extents[out].0,
                format!("overlaps `{}`", extents[other].0),
            ));
        }
    }
    Ok(())
}

/// Where an input's cudarc buffer is, for the stream bookkeeping of a launch.
trait ReadBuffer: Send + Sync {
    fn context(&self) -> &Arc<CudaContext>;
    /// `stream` waits for the buffer's last write; the guard records the read when dropped.
    fn read_access<'s>(&'s self, stream: &'s CudaStream) -> SyncOnDrop<'s>;
}

impl<T: QuantElement> ReadBuffer for &CudaSlice<T> {
    fn context(&self) -> &Arc<CudaContext> {
        CudaSlice::context(self)
    }
    fn read_access<'s>(&'s self, stream: &'s CudaStream) -> SyncOnDrop<'s> {
        (**self).device_ptr(stream).1
    }
}

impl<T: QuantElement> ReadBuffer for CudaView<'_, T> {
    fn context(&self) -> &Arc<CudaContext> {
        DeviceSlice::stream(self).context()
    }
    fn read_access<'s>(&'s self, stream: &'s CudaStream) -> SyncOnDrop<'s> {
        self.device_ptr(stream).1
    }
}

/// Where an output's cudarc buffer is, for the stream bookkeeping of a launch.
trait WriteBuffer: Send + Sync {
    fn context(&self) -> &Arc<CudaContext>;
    /// `stream` waits for the buffer's last reads and writes; the guard records the write
    /// when dropped.
    fn write_access<'s>(&'s mut self, stream: &'s CudaStream) -> SyncOnDrop<'s>;
}

impl WriteBuffer for &mut CudaSlice<u8> {
    fn context(&self) -> &Arc<CudaContext> {
        CudaSlice::context(self)
    }
    fn write_access<'s>(&'s mut self, stream: &'s CudaStream) -> SyncOnDrop<'s> {
        (**self).device_ptr_mut(stream).1
    }
}

impl WriteBuffer for CudaViewMut<'_, u8> {
    fn context(&self) -> &Arc<CudaContext> {
        DeviceSlice::stream(self).context()
    }
    fn write_access<'s>(&'s mut self, stream: &'s CudaStream) -> SyncOnDrop<'s> {
        self.device_ptr_mut(stream).1
    }
}

/// The tensor to quantize: a device buffer of fp16, bf16 or f32 elements and its shape.
///
/// Element `(r, j)` is element `r * row_stride + j` of the buffer. Build it from a cudarc
/// slice or view of [`struct@f16`], [`struct@bf16`] or `f32` (the borrow keeps the memory alive and
/// unmodified by safe code), or from a raw address with [`QuantInput::from_raw`].
pub struct QuantInput<'a> {
    /// Rows; 0 quantizes nothing.
    pub rows: usize,
    /// Elements per row: a positive multiple of 16.
    pub k: usize,
    /// Elements between the starts of consecutive rows; `None` = `k`. Its size in bytes must be
    /// a multiple of 16 (8 elements of fp16 / bf16, 4 of f32).
    pub row_stride: Option<usize>,
    dtype: InputDtype,
    span: Span,
    source: Option<Box<dyn ReadBuffer + 'a>>,
}

impl<'a> QuantInput<'a> {
    /// The `rows x k` tensor at the start of `slice`, rows packed (`row_stride = k`).
    pub fn from_slice<T: QuantElement>(slice: &'a CudaSlice<T>, rows: usize, k: usize) -> Self {
        let (addr, _record) = slice.device_ptr(slice.stream());
        Self {
            rows,
            k,
            row_stride: None,
            dtype: T::DTYPE,
            span: Span::new(addr, slice.num_bytes()),
            source: Some(Box::new(slice)),
        }
    }

    /// The `rows x k` tensor at the start of `view` (e.g. `slice.slice(off..)`).
    pub fn from_view<T: QuantElement>(view: CudaView<'a, T>, rows: usize, k: usize) -> Self {
        let span = {
            let (addr, _record) = view.device_ptr(DeviceSlice::stream(&view));
            Span::new(addr, view.num_bytes())
        };
        Self {
            rows,
            k,
            row_stride: None,
            dtype: T::DTYPE,
            span,
            source: Some(Box::new(view)),
        }
    }

    /// `len_bytes` bytes of device memory at `ptr` holding `dtype` elements, not managed by
    /// cudarc.
    ///
    /// # Safety
    /// Until the quantization using it has finished on the GPU, `ptr .. ptr + len_bytes` must
    /// be device memory readable in the [`Quantizer`]'s context, stay allocated and not be
    /// written by anything else. No stream synchronisation is done for it.
    pub unsafe fn from_raw(
        dtype: InputDtype,
        ptr: u64,
        len_bytes: usize,
        rows: usize,
        k: usize,
    ) -> Self {
        Self {
            rows,
            k,
            row_stride: None,
            dtype,
            span: Span::new(ptr, len_bytes),
            source: None,
        }
    }

    /// The same input with `row_stride` elements between rows.
    pub fn with_row_stride(mut self, row_stride: usize) -> Self {
        self.row_stride = Some(row_stride);
        self
    }

    /// Element type.
    pub fn dtype(&self) -> InputDtype {
        self.dtype
    }

    /// Address and length in bytes, as validation sees them.
    pub fn span(&self) -> Span {
        self.span
    }
}

impl std::fmt::Debug for QuantInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantInput")
            .field("dtype", &self.dtype)
            .field("rows", &self.rows)
            .field("k", &self.k)
            .field("row_stride", &self.row_stride)
            .field("addr", &format_args!("{:#x}", self.span.addr))
            .field("len_bytes", &self.span.len_bytes)
            .field("raw", &self.source.is_none())
            .finish()
    }
}

/// An output of a quantization (FP4 codes or scales): a device byte buffer, borrowed
/// exclusively.
pub struct QuantOutput<'a> {
    span: Span,
    source: Option<Box<dyn WriteBuffer + 'a>>,
}

impl<'a> QuantOutput<'a> {
    /// The whole of `slice`.
    pub fn from_slice(slice: &'a mut CudaSlice<u8>) -> Self {
        let span = {
            let (addr, _record) = slice.device_ptr(slice.stream());
            Span::new(addr, slice.len())
        };
        Self {
            span,
            source: Some(Box::new(slice)),
        }
    }

    /// The bytes of `view` (e.g. `slice.slice_mut(off..off + len)`).
    pub fn from_view(view: CudaViewMut<'a, u8>) -> Self {
        let span = {
            let (addr, _record) = view.device_ptr(DeviceSlice::stream(&view));
            Span::new(addr, view.len())
        };
        Self {
            span,
            source: Some(Box::new(view)),
        }
    }

    /// `len_bytes` bytes of device memory at `ptr`, not managed by cudarc.
    ///
    /// # Safety
    /// Until the quantization using it has finished on the GPU, `ptr .. ptr + len_bytes` must
    /// be device memory writable in the [`Quantizer`]'s context, stay allocated and be
    /// neither read nor written by anything else. No stream synchronisation is done for it.
    pub unsafe fn from_raw(ptr: u64, len_bytes: usize) -> Self {
        Self {
            span: Span::new(ptr, len_bytes),
            source: None,
        }
    }

    /// Address and length in bytes, as validation sees them.
    pub fn span(&self) -> Span {
        self.span
    }
}

impl<'a> From<&'a mut CudaSlice<u8>> for QuantOutput<'a> {
    fn from(slice: &'a mut CudaSlice<u8>) -> Self {
        Self::from_slice(slice)
    }
}

impl<'a> From<CudaViewMut<'a, u8>> for QuantOutput<'a> {
    fn from(view: CudaViewMut<'a, u8>) -> Self {
        Self::from_view(view)
    }
}

impl std::fmt::Debug for QuantOutput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantOutput")
            .field("addr", &format_args!("{:#x}", self.span.addr))
            .field("len_bytes", &self.span.len_bytes)
            .field("raw", &self.source.is_none())
            .finish()
    }
}

/// The NVFP4 quantization kernel loaded on one CUDA device.
///
/// Construction JIT-loads the embedded PTX (the same module as [`crate::GroupedGemm`]'s,
/// tens of milliseconds): make one per context and reuse it; it is `Send + Sync`.
///
/// ```no_run
/// use nvfp4::quant::{QuantInput, QuantOutput, Quantizer, bf16, fp4_bytes, scale_bytes};
/// use nvfp4::ScaleLayout;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ctx = nvfp4::open_device(0)?;
/// let stream = ctx.default_stream();
/// let quantizer = Quantizer::new(ctx.clone())?;
/// let (rows, k) = (40, 7168);
/// let x = stream.clone_htod(&vec![bf16::from_f32(0.5); rows * k])?;
/// let mut fp4 = stream.alloc_zeros::<u8>(fp4_bytes(rows, k))?;
/// let mut scales = stream.alloc_zeros::<u8>(scale_bytes(ScaleLayout::Blocked, rows, k))?;
/// quantizer.quantize(
///     &stream,
///     &QuantInput::from_slice(&x, rows, k),
///     None, // no global scale
///     ScaleLayout::Blocked,
///     QuantOutput::from(&mut fp4),
///     QuantOutput::from(&mut scales),
/// )?; // enqueued, no host synchronisation
/// let codes: Vec<u8> = stream.clone_dtoh(&fp4)?;
/// assert!(codes.iter().all(|&b| b == 0x77)); // 0.5 / (E4M3(0.5 / 6) * 1) rounds to 6
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Quantizer {
    ctx: Arc<CudaContext>,
    kernel: LoadedKernel,
}

impl Quantizer {
    /// Loads the quantization kernel into `ctx` (the sm_90a PTX on compute capability 9.0,
    /// the sm_80 PTX elsewhere from 8.0 up).
    ///
    /// # Errors
    /// [`Error::UnsupportedGpu`] below compute capability 8.0; [`Error::PtxLoad`] if the
    /// driver rejects the PTX or the kernel is missing from it; [`Error::Driver`] if a device
    /// query fails.
    pub fn new(ctx: Arc<CudaContext>) -> Result<Self> {
        let kernel = ptx_module::load(&ctx, &QUANTIZE, FALLBACK_CTAS_PER_SM)?;
        Ok(Self { ctx, kernel })
    }

    /// The quantization kernel from the module `gemm` already loaded (same context, same
    /// PTX): no second load (and, off sm_90, no second JIT compilation) of the embedded PTX.
    ///
    /// ```no_run
    /// use nvfp4::GroupedGemm;
    /// use nvfp4::quant::Quantizer;
    /// # fn main() -> Result<(), nvfp4::Error> {
    /// let gemm = GroupedGemm::new(nvfp4::open_device(0)?)?;
    /// let quantizer = Quantizer::from_gemm(&gemm)?;
    /// assert!(std::sync::Arc::ptr_eq(quantizer.context(), gemm.context()));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::PtxLoad`] if the module lacks the kernel; [`Error::Driver`] if a device query
    /// fails.
    pub fn from_gemm(gemm: &GroupedGemm) -> Result<Self> {
        let ctx = gemm.context().clone();
        let (module, cc, ptx_arch) = gemm.module();
        let kernel =
            ptx_module::from_module(&ctx, module, cc, ptx_arch, &QUANTIZE, FALLBACK_CTAS_PER_SM)?;
        Ok(Self { ctx, kernel })
    }

    /// The CUDA context the kernel is loaded in.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The device's compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.kernel.compute_capability
    }

    /// Which embedded PTX was loaded: `"sm_90a"` or `"sm_80"`.
    pub fn ptx_arch(&self) -> &'static str {
        self.kernel.ptx_arch
    }

    /// CTAs a launch for a `rows x k` tensor in `layout` uses: one thread per scale of the
    /// (padded) scale grid, [`kernels_gpu::quant::THREADS`] per CTA, at most as many CTAs as
    /// fit the device at once (the kernel loops over the rest).
    pub fn grid_size(&self, layout: ScaleLayout, rows: usize, k: usize) -> u32 {
        let (grid_rows, grid_cols) = scale_grid(layout, rows as u64, k as u32);
        let items = grid_rows.saturating_mul(u64::from(grid_cols));
        let resident = u64::from(self.kernel.sm_count) * u64::from(self.kernel.ctas_per_sm);
        items
            .div_ceil(u64::from(THREADS))
            .min(resident)
            .max(1)
            .try_into()
            .unwrap_or(1)
    }

    /// Enqueues the quantization of `input` on `stream`: FP4 codes to `out_fp4`
    /// (`rows * k / 2` bytes, packed rows), scales to `out_scales` in `scale_layout`
    /// (`scale_len(scale_layout, rows, k)` bytes, padding written with 0); see the module
    /// docs for the arithmetic. `global_scale` is `g` (`None`: 1). Bytes of the outputs past
    /// those lengths are not touched. Nothing is launched for `rows == 0`.
    ///
    /// Does not synchronise the host. cudarc's stream bookkeeping is kept as for
    /// [`crate::GroupedGemm::launch`]: `stream` waits for the input's last write and the
    /// outputs' last reads and writes, and the read / write events are recorded after the
    /// launch (not while `stream` is being captured into a CUDA graph; raw buffers are the
    /// caller's to order).
    ///
    /// The result equals [`quantize_cpu`]'s bit for bit.
    ///
    /// # Errors
    /// Every rule of [`check`], as [`Error::InvalidQuantize`] naming the field; the same
    /// error (field `stream`, `input`, `out_fp4` or `out_scales`) when the stream or a
    /// cudarc buffer belongs to another context than the quantizer; [`Error::Driver`] if the
    /// launch fails.
    pub fn quantize(
        &self,
        stream: &Arc<CudaStream>,
        input: &QuantInput<'_>,
        global_scale: Option<f32>,
        scale_layout: ScaleLayout,
        mut out_fp4: QuantOutput<'_>,
        mut out_scales: QuantOutput<'_>,
    ) -> Result<()> {
        let other_context = || "belongs to another CUDA context than the Quantizer".to_string();
        if **stream.context() != *self.ctx {
            return Err(invalid("stream", other_context()));
        }
        let spec = QuantSpec {
            dtype: input.dtype,
            rows: input.rows,
            k: input.k,
            row_stride: input.row_stride,
            input: input.span,
            global_scale,
            scale_layout,
            out_fp4: out_fp4.span,
            out_scales: out_scales.span,
        };
        check(&spec)?;
        let contexts = [
            ("input", input.source.as_ref().map(|s| s.context())),
            ("out_fp4", out_fp4.source.as_ref().map(|s| s.context())),
            (
                "out_scales",
                out_scales.source.as_ref().map(|s| s.context()),
            ),
        ];
        for (field, ctx) in contexts {
            if ctx.is_some_and(|ctx| **ctx != *self.ctx) {
                return Err(invalid(field, other_context()));
            }
        }
        if input.rows == 0 {
            return Ok(());
        }

        let capturing = stream
            .capture_status()
            .is_ok_and(|status| status != CaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE);
        let track = (!capturing).then_some(&**stream);
        let read = track.and_then(|s| input.source.as_ref().map(|b| b.read_access(s)));
        let write_fp4 = track.and_then(|s| out_fp4.source.as_mut().map(|b| b.write_access(s)));
        let write_scales =
            track.and_then(|s| out_scales.source.as_mut().map(|b| b.write_access(s)));

        // Validated: rows and k fit u32, the layout and dtype are valid codes.
        let (rows, k) = (input.rows as u32, input.k as u32);
        let row_stride = input.row_stride.unwrap_or(input.k) as u64;
        let (dtype, layout) = (input.dtype as u32, scale_layout as u32);
        let g = global_scale.unwrap_or(1.0);
        let (src, fp4, scales) = (input.span.addr, out_fp4.span.addr, out_scales.span.addr);
        let cfg = LaunchConfig {
            grid_dim: (self.grid_size(scale_layout, input.rows, input.k), 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = stream.launch_builder(&self.kernel.func);
        launch
            .arg(&src)
            .arg(&row_stride)
            .arg(&rows)
            .arg(&k)
            .arg(&dtype)
            .arg(&layout)
            .arg(&g)
            .arg(&fp4)
            .arg(&scales);
        // SAFETY: the arguments match the kernel's signature `(input: u64, row_stride: u64,
        // rows: u32, k: u32, dtype: u32, layout: u32, global_scale: f32, out_fp4: u64,
        // out_scales: u64)`. `check` established everything its `# Safety` asks: the
        // input extent lies in the input buffer, 16-byte aligned with 16-byte rows, the
        // outputs hold what the shape needs (the kernel writes exactly that), `out_fp4` is
        // 8-byte aligned, the three extents are disjoint and `g` is finite and >= 2^-126.
        // The borrows in `input`, `out_fp4` and `out_scales` keep cudarc buffers alive and
        // unaliased by safe code until this returns, and cudarc's events order later users
        // after the kernel; raw buffers are covered by their constructors' contracts.
        unsafe { launch.launch(cfg) }?;
        drop((read, write_fp4, write_scales));
        Ok(())
    }
}

/// The result of [`quantize_cpu`].
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized {
    /// Rows of the tensor.
    pub rows: usize,
    /// Elements per row.
    pub k: usize,
    /// FP4 E2M1 codes: `rows * k / 2` bytes, row `r` at byte `r * k / 2`, element `2j` of a
    /// row in the low nibble of byte `j`.
    pub fp4: Vec<u8>,
    /// E4M3 scales, `scale_len(scale_layout, rows, k)` bytes (blocked padding is 0).
    pub scales: Vec<u8>,
    /// Layout of `scales`.
    pub scale_layout: ScaleLayout,
    /// The global scale `g` the values are relative to (1.0 when none was given): element
    /// `(r, j)` stands for `e2m1(code) * e4m3(scale of (r, j / 16)) * g`.
    pub global_scale: f32,
}

/// Quantizes a `[rows, k]` tensor to NVFP4 on the CPU, with exactly the arithmetic of the GPU
/// kernel (the shared `kernels_gpu::quant::quantize_block`): the bytes equal
/// [`Quantizer::quantize`]'s.
///
/// - `input`: element `(r, j)` at `input[r * row_stride + j]`, [`struct@f16`], [`struct@bf16`] or `f32`;
///   `row_stride` in elements, `None` = `k` (no alignment is needed on the CPU);
/// - `k`: a positive multiple of 16; `rows` may be 0 (empty outputs);
/// - `global_scale`: `g`, finite and at least 2^-126; `None` = 1;
/// - `scale_layout`: layout of the returned scales.
///
/// Rows are quantized in parallel (rayon).
///
/// ```
/// use nvfp4::quant::{bf16, quantize_cpu};
/// use nvfp4::ScaleLayout;
///
/// // Two rows of 32 with a row stride of 40 elements; global scale 2^-4.
/// let x: Vec<bf16> = (0..80).map(|i| bf16::from_f32(i as f32 - 40.0)).collect();
/// let q = quantize_cpu(&x, 2, 32, Some(40), Some(0.0625), ScaleLayout::Blocked)?;
/// assert_eq!(q.fp4.len(), 2 * 16);
/// assert_eq!(q.scales.len(), 128 * 4); // one 128 x 4 tile, padding 0
/// // Row 0, block 0 is -40 ..= -25: amax 40, scale E4M3(40 / 6 / 0.0625 = 106.67) = 104.
/// assert_eq!(q.scales[0], 0x6D);
/// # Ok::<(), nvfp4::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidQuantize`] naming `k`, `rows`, `row_stride`, `global_scale` or `input`
/// for rules 1 to 4 of [`check`].
pub fn quantize_cpu<T: QuantElement>(
    input: &[T],
    rows: usize,
    k: usize,
    row_stride: Option<usize>,
    global_scale: Option<f32>,
    scale_layout: ScaleLayout,
) -> Result<Quantized> {
    check_shape(
        T::DTYPE,
        rows,
        k,
        row_stride,
        std::mem::size_of_val(input),
        global_scale,
        scale_layout,
    )?;
    let stride = row_stride.unwrap_or(k);
    let g = global_scale.unwrap_or(1.0);
    let cols = k / BLOCK;
    let mut fp4 = vec![0u8; fp4_bytes(rows, k)];
    let mut plain = vec![0u8; rows * cols];
    fp4.par_chunks_mut(k / 2)
        .zip(plain.par_chunks_mut(cols))
        .enumerate()
        .for_each(|(r, (fp4_row, scale_row))| {
            let row = &input[r * stride..r * stride + k];
            let blocks = row.chunks_exact(BLOCK);
            let outs = fp4_row.chunks_exact_mut(8).zip(scale_row.iter_mut());
            for (block, (fp4_out, scale_out)) in blocks.zip(outs) {
                let x: [f32; BLOCK] = std::array::from_fn(|i| block[i].to_f32());
                let q = quantize_block(&x, g);
                fp4_out.copy_from_slice(&q.fp4.to_le_bytes());
                *scale_out = q.scale;
            }
        });
    let mut scales = vec![0u8; scale_bytes(scale_layout, rows, k)];
    for (r, row) in plain.chunks_exact(cols).enumerate() {
        for (c, &s) in row.iter().enumerate() {
            scales[scale_offset(scale_layout, r as u64, c as u64, k as u32) as usize] = s;
        }
    }
    Ok(Quantized {
        rows,
        k,
        fp4,
        scales,
        scale_layout,
        global_scale: g,
    })
}

/// Services share these across threads: checked at compile time.
#[allow(dead_code)]
fn send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Quantizer>();
    check::<QuantInput<'static>>();
    check::<QuantOutput<'static>>();
}
