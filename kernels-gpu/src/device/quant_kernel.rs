//! NVFP4 quantization kernel: an fp16 / bf16 / fp32 `[rows, k]` tensor to FP4 E2M1 codes
//! (`[rows, k / 2]` bytes) and E4M3 block scales (plain or blocked layout).
//!
//! The arithmetic is [`crate::quant::quantize_block`], shared with the CPU; this file only
//! moves bytes.
//!
//! # Work distribution
//! One thread per (row, scale column) item of the scale grid ([`crate::quant::scale_grid`]:
//! `rows x k/16`, or padded to `128 x 4` multiples for the blocked layout). Items are numbered
//! row-major and walked with a grid-stride loop, so consecutive threads take consecutive
//! 16-element blocks of a row: their input loads (32 or 64 bytes each, 16-byte vectors), FP4
//! stores (8 bytes each) and, in the plain layout, scale stores (1 byte each) are contiguous.
//! Items in the blocked layout's padding only store a 0 scale byte. No shared memory, no
//! barriers.

use super::arch::{global, thread};
use crate::layout::{SCALE_BLOCK, ScaleLayout, scale_offset};
use crate::quant::{BLOCK, InputDtype, THREADS, quantize_block, scale_grid};
use core::arch::asm;

/// `cvt.f32.f16`: exact (every fp16 value, subnormals included, is an f32 normal; NaN stays
/// NaN, which is all the quantizer looks at).
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let f: f32;
    unsafe {
        asm!("cvt.f32.f16 {f}, {h};", f = out(reg32) f, h = in(reg16) h,
             options(pure, nomem, nostack, preserves_flags));
    }
    f
}

/// How one input element type is loaded: 16 elements (one block) from a 16-byte aligned
/// address, converted exactly to f32.
trait Element {
    /// Bytes per element.
    const BYTES: u64;
    /// The 16 elements at `src`.
    unsafe fn load_block(src: u64) -> [f32; BLOCK];
}

struct F16;
struct Bf16;
struct F32;

/// Eight 16-bit elements packed in four words (element `2i` in the low half of word `i`), as
/// f32 through `convert`.
#[inline(always)]
fn halves(w: [u32; 4], convert: impl Fn(u16) -> f32) -> [f32; 8] {
    [
        convert(w[0] as u16),
        convert((w[0] >> 16) as u16),
        convert(w[1] as u16),
        convert((w[1] >> 16) as u16),
        convert(w[2] as u16),
        convert((w[2] >> 16) as u16),
        convert(w[3] as u16),
        convert((w[3] >> 16) as u16),
    ]
}

/// Two halves of a block, concatenated.
#[inline(always)]
fn join(lo: [f32; 8], hi: [f32; 8]) -> [f32; BLOCK] {
    [
        lo[0], lo[1], lo[2], lo[3], lo[4], lo[5], lo[6], lo[7], hi[0], hi[1], hi[2], hi[3], hi[4],
        hi[5], hi[6], hi[7],
    ]
}

impl Element for F16 {
    const BYTES: u64 = 2;
    #[inline(always)]
    unsafe fn load_block(src: u64) -> [f32; BLOCK] {
        let (lo, hi) = unsafe { (global::ld_nc_v4(src), global::ld_nc_v4(src + 16)) };
        join(halves(lo, f16_to_f32), halves(hi, f16_to_f32))
    }
}

impl Element for Bf16 {
    const BYTES: u64 = 2;
    #[inline(always)]
    unsafe fn load_block(src: u64) -> [f32; BLOCK] {
        // bf16 is the top half of an f32: exact by construction.
        let bf16 = |h: u16| f32::from_bits((h as u32) << 16);
        let (lo, hi) = unsafe { (global::ld_nc_v4(src), global::ld_nc_v4(src + 16)) };
        join(halves(lo, bf16), halves(hi, bf16))
    }
}

impl Element for F32 {
    const BYTES: u64 = 4;
    #[inline(always)]
    unsafe fn load_block(src: u64) -> [f32; BLOCK] {
        let w = unsafe {
            [
                global::ld_nc_v4(src),
                global::ld_nc_v4(src + 16),
                global::ld_nc_v4(src + 32),
                global::ld_nc_v4(src + 48),
            ]
        };
        let f = f32::from_bits;
        [
            f(w[0][0]),
            f(w[0][1]),
            f(w[0][2]),
            f(w[0][3]),
            f(w[1][0]),
            f(w[1][1]),
            f(w[1][2]),
            f(w[1][3]),
            f(w[2][0]),
            f(w[2][1]),
            f(w[2][2]),
            f(w[2][3]),
            f(w[3][0]),
            f(w[3][1]),
            f(w[3][2]),
            f(w[3][3]),
        ]
    }
}

/// NVFP4 quantization of a `[rows, k]` tensor (see [`crate::quant`] for the arithmetic).
///
/// Parameters:
/// - `input`: device address of element (0, 0); element `(r, j)` at element offset
///   `r * row_stride + j`; `dtype` an [`InputDtype`] code.
/// - `rows`, `k`: the shape; `k` a positive multiple of 16.
/// - `layout`: [`ScaleLayout`] code of `out_scales`.
/// - `global_scale`: `g` (1.0 for none).
/// - `out_fp4`: `rows * k / 2` bytes, row `r` at byte `r * k / 2` (packed), element `2j` in
///   the low nibble of byte `j`.
/// - `out_scales`: `scale_len(layout, rows, k)` bytes; every byte is written (padding with 0).
///
/// Launch with [`THREADS`] threads per CTA and any grid with `gridDim.x * THREADS < 2^32`.
///
/// # Safety
/// The host (`nvfp4::quant::Quantizer`) guarantees: `input` 16-byte aligned, `row_stride *
/// element bytes` a multiple of 16, `row_stride >= k`, the input readable for the shape and
/// not written during the launch; `out_fp4` 8-byte aligned; both outputs long enough and
/// disjoint from each other and from the input; `global_scale` finite and at least
/// `MIN_GLOBAL_SCALE`; `dtype` and `layout` valid codes.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn nvfp4_quantize(
    input: u64,
    row_stride: u64,
    rows: u32,
    k: u32,
    dtype: u32,
    layout: u32,
    global_scale: f32,
    out_fp4: u64,
    out_scales: u64,
) {
    let layout = match ScaleLayout::from_code(layout) {
        Some(ScaleLayout::Blocked) => ScaleLayout::Blocked,
        _ => ScaleLayout::Plain,
    };
    let args = Args {
        input,
        row_stride,
        rows,
        k,
        layout,
        global_scale,
        out_fp4,
        out_scales,
    };
    unsafe {
        match InputDtype::from_code(dtype) {
            Some(InputDtype::F16) => quantize::<F16>(&args),
            Some(InputDtype::Bf16) => quantize::<Bf16>(&args),
            _ => quantize::<F32>(&args),
        }
    }
}

/// The kernel's parameters (see [`nvfp4_quantize`]), with the layout decoded.
struct Args {
    input: u64,
    row_stride: u64,
    rows: u32,
    k: u32,
    layout: ScaleLayout,
    global_scale: f32,
    out_fp4: u64,
    out_scales: u64,
}

/// The grid-stride loop over the scale grid for element type `E`.
#[inline(always)]
unsafe fn quantize<E: Element>(a: &Args) {
    let (grid_rows, grid_cols) = scale_grid(a.layout, a.rows as u64, a.k);
    if grid_cols == 0 {
        return;
    }
    let cols = a.k / SCALE_BLOCK;
    let rows = a.rows as u64;
    let fp4_row_bytes = (a.k / 2) as u64;
    let in_row_bytes = a.row_stride * E::BYTES;
    let block_bytes = BLOCK as u64 * E::BYTES;
    // Item index -> (row, column) once, then stepped by the grid stride without dividing.
    let first = thread::ctaid() * THREADS + thread::tid();
    let stride = thread::nctaid() * THREADS;
    let (mut r, mut c) = ((first / grid_cols) as u64, first % grid_cols);
    let (dr, dc) = ((stride / grid_cols) as u64, stride % grid_cols);
    while r < grid_rows {
        let sf = a.out_scales + scale_offset(a.layout, r, c as u64, a.k);
        if r < rows && c < cols {
            let x = unsafe { E::load_block(a.input + r * in_row_bytes + c as u64 * block_bytes) };
            let q = quantize_block(&x, a.global_scale);
            let dst = a.out_fp4 + r * fp4_row_bytes + 8 * c as u64;
            unsafe {
                global::st_v2(dst, [q.fp4 as u32, (q.fp4 >> 32) as u32]);
                global::st_u8(sf, q.scale as u32);
            }
        } else {
            // Padding of the blocked layout.
            unsafe { global::st_u8(sf, 0) };
        }
        r += dr;
        c += dc;
        if c >= grid_cols {
            c -= grid_cols;
            r += 1;
        }
    }
}
