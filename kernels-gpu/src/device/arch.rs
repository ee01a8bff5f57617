//! Thin wrappers over PTX instructions, grouped by what they touch.
//!
//! Each is `#[inline(always)]` and compiles to the one instruction it names. Shared-memory
//! addresses are 32-bit `.shared` window addresses; global addresses are generic 64-bit
//! pointers converted with `cvta.to.global` where the instruction needs a `.global` operand.
//!
//! # Safety
//! Every function here is `unsafe`: the caller guarantees the addresses are valid for the
//! access, aligned as the instruction requires, and that all threads named by a collective
//! (`bar.sync`, `mma.sync`) reach it together.

use core::arch::asm;

/// Thread, block and grid indices (x only: every kernel here is one-dimensional).
pub mod thread {
    /// `%tid.x`.
    #[inline(always)]
    pub fn tid() -> u32 {
        unsafe { core::arch::nvptx::_thread_idx_x() as u32 }
    }
    /// `%tid.x`, read again at each call (a volatile asm, never merged with another read):
    /// cheaper than keeping a value derived from it live across a hot loop when registers
    /// are the limit.
    #[inline(always)]
    pub fn tid_fresh() -> u32 {
        let r: u32;
        unsafe {
            core::arch::asm!("mov.u32 {r}, %tid.x;", r = out(reg32) r,
                             options(nostack, nomem, preserves_flags));
        }
        r
    }
    /// `%ctaid.x`.
    #[inline(always)]
    pub fn ctaid() -> u32 {
        unsafe { core::arch::nvptx::_block_idx_x() as u32 }
    }
    /// `%nctaid.x`.
    #[inline(always)]
    pub fn nctaid() -> u32 {
        unsafe { core::arch::nvptx::_grid_dim_x() as u32 }
    }
    /// `bar.sync 0`: every thread of the CTA must call it.
    ///
    /// # Safety
    /// Must be reached by all threads of the CTA (no divergent call sites).
    #[inline(always)]
    pub unsafe fn sync_cta() {
        unsafe { core::arch::nvptx::_syncthreads() }
    }
}

/// Warp-collective data movement.
/// Programmatic dependent launch (`griddepcontrol`, sm_90): lets a kernel launched with the
/// programmatic-stream-serialization attribute start while the kernel before it in the stream
/// is still running. Both are no-ops in the sm_80 build and in a launch without the attribute.
pub mod grid {
    /// `griddepcontrol.wait`: blocks until every grid this one depends on has completed and
    /// its memory operations are visible. Call before reading anything those grids write.
    #[inline(always)]
    pub unsafe fn dependency_wait() {
        #[cfg(nvfp4_sm90a)]
        unsafe {
            core::arch::asm!("griddepcontrol.wait;", options(nostack, preserves_flags));
        }
    }

    /// `griddepcontrol.launch_dependents`: the dependent grid may be scheduled once every CTA
    /// of this grid has called this (or exited). It still waits (`dependency_wait`) for this
    /// grid to complete before reading its results.
    #[inline(always)]
    pub unsafe fn launch_dependents() {
        #[cfg(nvfp4_sm90a)]
        unsafe {
            core::arch::asm!(
                "griddepcontrol.launch_dependents;",
                options(nostack, preserves_flags)
            );
        }
    }
}

pub mod warp {
    /// `shfl.sync.up.b32` over the full warp: lane `i` gets `v` of lane `i - delta`, lanes
    /// below `delta` their own `v`.
    ///
    /// # Safety
    /// All 32 lanes of the warp must call it together.
    #[inline(always)]
    pub unsafe fn shfl_up(v: u32, delta: u32) -> u32 {
        let r: u32;
        unsafe {
            core::arch::asm!("shfl.sync.up.b32 {r}, {v}, {d}, 0, -1;", r = out(reg32) r,
                             v = in(reg32) v, d = in(reg32) delta,
                             options(nostack, nomem, preserves_flags));
        }
        r
    }

    /// `shfl.sync.bfly.b32` inside the thread's quad (lanes `4q .. 4q + 3`): `v` of lane
    /// `lane ^ m`, for `m` < 4.
    ///
    /// # Safety
    /// The four lanes of the quad must call it together (other lanes need not).
    #[inline(always)]
    pub unsafe fn shfl_xor_quad(v: u32, m: u32) -> u32 {
        let r: u32;
        unsafe {
            core::arch::asm!("{{ .reg .u32 l, q; mov.u32 l, %laneid; and.b32 l, l, 28; shl.b32 q, 15, l; \
                              shfl.sync.bfly.b32 {r}, {v}, {m}, 31, q; }}",
                             r = out(reg32) r, v = in(reg32) v, m = in(reg32) m,
                             options(nostack, nomem, preserves_flags));
        }
        r
    }

    /// This thread's warp index, broadcast from lane 0 (`shfl.sync.idx`), so that ptxas
    /// knows it is the same in every lane (a branch on it does not diverge).
    ///
    /// # Safety
    /// All 32 lanes of the warp must call it together.
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    pub unsafe fn uniform_warp_index() -> u32 {
        let r: u32;
        unsafe {
            core::arch::asm!("{{ .reg .u32 w; mov.u32 w, %tid.x; shr.u32 w, w, 5; shfl.sync.idx.b32 {r}, w, 0, 31, -1; }}",
                             r = out(reg32) r, options(nostack, nomem, preserves_flags));
        }
        r
    }
}

/// Shared memory: loads and stores through 32-bit `.shared` addresses.
pub mod shared {
    use super::asm;

    /// `ld.shared.u8`.
    #[inline(always)]
    pub unsafe fn ld_u8(addr: u32) -> u32 {
        let v: u32;
        unsafe {
            asm!("ld.shared.u8 {v}, [{a}];", v = out(reg32) v, a = in(reg32) addr,
                 options(nostack, readonly, preserves_flags));
        }
        v
    }
    /// `ld.shared.v2.u32` (8-byte aligned).
    #[inline(always)]
    pub unsafe fn ld_v2(addr: u32) -> [u32; 2] {
        let (x, y): (u32, u32);
        unsafe {
            asm!("ld.shared.v2.u32 {{{x}, {y}}}, [{a}];", x = out(reg32) x, y = out(reg32) y,
                 a = in(reg32) addr, options(nostack, readonly, preserves_flags));
        }
        [x, y]
    }
    /// `ld.shared.v4.u32` (16-byte aligned).
    #[inline(always)]
    pub unsafe fn ld_v4(addr: u32) -> [u32; 4] {
        let (x, y, z, w): (u32, u32, u32, u32);
        unsafe {
            asm!("ld.shared.v4.u32 {{{x}, {y}, {z}, {w}}}, [{a}];", x = out(reg32) x,
                 y = out(reg32) y, z = out(reg32) z, w = out(reg32) w, a = in(reg32) addr,
                 options(nostack, readonly, preserves_flags));
        }
        [x, y, z, w]
    }
    /// `ld.shared.u16` (2-byte aligned), zero-extended.
    #[cfg_attr(not(nvfp4_sm90a), allow(dead_code))] // used by the sm_90a kernel only
    #[inline(always)]
    pub unsafe fn ld_u16(addr: u32) -> u32 {
        let v: u32;
        unsafe {
            asm!("ld.shared.u16 {v}, [{a}];", v = out(reg32) v, a = in(reg32) addr,
                 options(nostack, readonly, preserves_flags));
        }
        v
    }
    /// `st.shared.v2.u32` (8-byte aligned).
    #[cfg_attr(not(nvfp4_sm90a), allow(dead_code))] // used by the sm_90a kernel only
    #[inline(always)]
    pub unsafe fn st_v2(addr: u32, v: [u32; 2]) {
        unsafe {
            asm!("st.shared.v2.u32 [{a}], {{{x}, {y}}};", a = in(reg32) addr,
                 x = in(reg32) v[0], y = in(reg32) v[1], options(nostack, preserves_flags));
        }
    }
    /// `ld.shared.u32` (4-byte aligned).
    #[inline(always)]
    pub unsafe fn ld_u32(addr: u32) -> u32 {
        let v: u32;
        unsafe {
            asm!("ld.shared.u32 {v}, [{a}];", v = out(reg32) v, a = in(reg32) addr,
                 options(nostack, readonly, preserves_flags));
        }
        v
    }
    /// `st.shared.u32` (4-byte aligned).
    #[inline(always)]
    pub unsafe fn st_u32(addr: u32, v: u32) {
        unsafe {
            asm!("st.shared.u32 [{a}], {v};", a = in(reg32) addr, v = in(reg32) v,
                 options(nostack, preserves_flags));
        }
    }
    /// `stmatrix.sync.aligned.m8n8.x4.trans.shared.b16` (sm_90): four 8 x 8 matrices of
    /// 16-bit values, transposed. Register `q` of lane `l` holds row `l / 4`, columns
    /// `2 (l % 4)` and `+ 1` (low half first) of matrix `q`; lane `8 q + r` gives the
    /// 16-byte-aligned address of stored row `r` of matrix `q`, which receives the matrix's
    /// column `r` (rows 0 .. 7 in order).
    ///
    /// # Safety
    /// All 32 lanes of the warp call it together, with addresses inside shared memory.
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    pub unsafe fn stmatrix_x4_trans(addr: u32, r: [u32; 4]) {
        unsafe {
            asm!("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [{a}], {{{x}, {y}, {z}, {w}}};",
                 a = in(reg32) addr, x = in(reg32) r[0], y = in(reg32) r[1], z = in(reg32) r[2],
                 w = in(reg32) r[3], options(nostack, preserves_flags));
        }
    }
    /// `st.shared.v4.u32` (16-byte aligned).
    #[inline(always)]
    pub unsafe fn st_v4(addr: u32, v: [u32; 4]) {
        unsafe {
            asm!("st.shared.v4.u32 [{a}], {{{x}, {y}, {z}, {w}}};", a = in(reg32) addr,
                 x = in(reg32) v[0], y = in(reg32) v[1], z = in(reg32) v[2], w = in(reg32) v[3],
                 options(nostack, preserves_flags));
        }
    }
}

/// Asynchronous global -> shared copies (`cp.async`, sm_80+).
pub mod copy {
    use super::asm;

    /// Copies `src_bytes` (0..=8) bytes from global `src` to shared `dst` and zero-fills the
    /// rest of the 8 bytes. `src` and `dst` 8-byte aligned; `src` must be a valid address even
    /// when `src_bytes` is 0 (it is not read then).
    #[inline(always)]
    pub unsafe fn async_8(dst: u32, src: u64, src_bytes: u32) {
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {s}; cp.async.ca.shared.global [{d}], [g], 8, {n}; }}",
                 d = in(reg32) dst, s = in(reg64) src, n = in(reg32) src_bytes,
                 options(nostack, preserves_flags));
        }
    }
    /// As [`async_8`], for 16 bytes (16-byte aligned), zero-filling past `src_bytes`
    /// (0..=16); through L2 only (`.cg`).
    #[inline(always)]
    pub unsafe fn async_16(dst: u32, src: u64, src_bytes: u32) {
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {s}; cp.async.cg.shared.global [{d}], [g], 16, {n}; }}",
                 d = in(reg32) dst, s = in(reg64) src, n = in(reg32) src_bytes,
                 options(nostack, preserves_flags));
        }
    }
    /// As [`async_8`], for 4 bytes (4-byte aligned), zero-filling past `src_bytes` (0..=4).
    #[inline(always)]
    pub unsafe fn async_4(dst: u32, src: u64, src_bytes: u32) {
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {s}; cp.async.ca.shared.global [{d}], [g], 4, {n}; }}",
                 d = in(reg32) dst, s = in(reg64) src, n = in(reg32) src_bytes,
                 options(nostack, preserves_flags));
        }
    }
    /// `cp.async.commit_group`: closes the group of copies this thread issued since the last.
    #[inline(always)]
    pub unsafe fn commit() {
        unsafe { asm!("cp.async.commit_group;", options(nostack, preserves_flags)) }
    }
    /// `cp.async.wait_group N`: waits until at most `N` of this thread's groups are pending.
    #[inline(always)]
    pub unsafe fn wait<const N: u32>() {
        unsafe { asm!("cp.async.wait_group {n};", n = const N, options(nostack, preserves_flags)) }
    }
    /// `ld.global.nc.u8` (read-only path), zero-extended.
    #[inline(always)]
    pub unsafe fn ld_global_u8(src: u64) -> u32 {
        let v: u32;
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {s}; ld.global.nc.u8 {v}, [g]; }}",
                 v = out(reg32) v, s = in(reg64) src, options(nostack, readonly, preserves_flags));
        }
        v
    }
}

/// Half-precision arithmetic on packed `f16x2` words and conversions.
pub mod half {
    use super::asm;

    /// `mul.rn.f16x2`: lane-wise product, rounded to nearest even (exact for our operands).
    #[inline(always)]
    pub fn mul2(a: u32, b: u32) -> u32 {
        let d: u32;
        unsafe {
            asm!("mul.rn.f16x2 {d}, {a}, {b};", d = out(reg32) d, a = in(reg32) a, b = in(reg32) b,
                 options(pure, nomem, nostack, preserves_flags));
        }
        d
    }
    /// `fma.rn.bf16x2 d, a, b, -0.0`: the lane-wise bf16 product (exact for our operands,
    /// subnormals included; `fma` because `mul.bf16x2` needs sm_90 and this runs from sm_80).
    #[inline(always)]
    pub fn mul2_bf16(a: u32, b: u32) -> u32 {
        let d: u32;
        unsafe {
            asm!("fma.rn.bf16x2 {d}, {a}, {b}, {z};", d = out(reg32) d, a = in(reg32) a,
                 b = in(reg32) b, z = in(reg32) 0x8000_8000u32,
                 options(pure, nomem, nostack, preserves_flags));
        }
        d
    }
    /// `cvt.rn.f16x2.e4m3x2`: the two E4M3 bytes of `x` (low byte first) as an fp16x2 word,
    /// exactly (E4M3 NaN codes give fp16 NaNs). sm_89 and newer, so sm_90a only here.
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    pub fn e4m3x2_to_f16x2(x: u16) -> u32 {
        let d: u32;
        unsafe {
            asm!("cvt.rn.f16x2.e4m3x2 {d}, {x};", d = out(reg32) d, x = in(reg16) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        d
    }
    /// `cvt.f32.f16`: the fp16 bit pattern `h` widened to f32 (exact).
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    pub fn f16_to_f32(h: u16) -> f32 {
        let d: f32;
        unsafe {
            asm!("cvt.f32.f16 {d}, {h};", d = out(reg32) d, h = in(reg16) h,
                 options(pure, nomem, nostack, preserves_flags));
        }
        d
    }
    /// `cvt.rn.bf16x2.f32 d, x, x`: `x` rounded to bf16 in both halves.
    #[inline(always)]
    pub fn f32_to_bf16x2(x: f32) -> u32 {
        let d: u32;
        unsafe {
            asm!("cvt.rn.bf16x2.f32 {d}, {x}, {x};", d = out(reg32) d, x = in(reg32) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        d
    }
    /// `cvt.rn.f16x2.f32`: `lo` and `hi` rounded to fp16 (nearest even), `lo` in the low half.
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    pub fn pack_f16x2(lo: f32, hi: f32) -> u32 {
        let d: u32;
        unsafe {
            asm!("cvt.rn.f16x2.f32 {d}, {h}, {l};", d = out(reg32) d, h = in(reg32) hi,
                 l = in(reg32) lo, options(pure, nomem, nostack, preserves_flags));
        }
        d
    }
    /// `cvt.rn.bf16x2.f32`: `lo` and `hi` rounded to bf16 (nearest even), `lo` in the low half.
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
        let d: u32;
        unsafe {
            asm!("cvt.rn.bf16x2.f32 {d}, {h}, {l};", d = out(reg32) d, h = in(reg32) hi,
                 l = in(reg32) lo, options(pure, nomem, nostack, preserves_flags));
        }
        d
    }
    /// `cvt.rn.bf16.f32`: round to nearest even; overflow gives ±inf, NaN stays NaN.
    #[inline(always)]
    pub fn f32_to_bf16(x: f32) -> u16 {
        let h: u16;
        unsafe {
            asm!("cvt.rn.bf16.f32 {h}, {x};", h = out(reg16) h, x = in(reg32) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        h
    }
    /// `prmt.b32 d, a, b, sel`: byte permute of the eight bytes of `b:a`.
    #[inline(always)]
    pub fn prmt(a: u32, b: u32, sel: u32) -> u32 {
        let d: u32;
        unsafe {
            asm!("prmt.b32 {d}, {a}, {b}, {s};", d = out(reg32) d, a = in(reg32) a,
                 b = in(reg32) b, s = in(reg32) sel, options(pure, nomem, nostack, preserves_flags));
        }
        d
    }
    /// `cvt.rn.f16.f32`: round to nearest even; overflow gives ±inf, NaN stays NaN.
    #[inline(always)]
    pub fn f32_to_f16(x: f32) -> u16 {
        let h: u16;
        unsafe {
            asm!("cvt.rn.f16.f32 {h}, {x};", h = out(reg16) h, x = in(reg32) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        h
    }
}

/// Warp-level tensor-core MMA.
pub mod mma {
    use super::asm;

    /// `mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32`: `d += a * b`.
    /// `a`: the m16 x k16 fp16 fragment (4 regs), `b0`/`b1`: the k16 x n8 fragment,
    /// `d`: the m16 x n8 fp32 fragment (c0..c3), in the standard register layout.
    #[inline(always)]
    pub fn m16n8k16(d: &mut [f32; 4], a: [u32; 4], b0: u32, b1: u32) {
        unsafe {
            asm!("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{d0}, {d1}, {d2}, {d3}}};",
                 d0 = inout(reg32) d[0], d1 = inout(reg32) d[1], d2 = inout(reg32) d[2],
                 d3 = inout(reg32) d[3], a0 = in(reg32) a[0], a1 = in(reg32) a[1],
                 a2 = in(reg32) a[2], a3 = in(reg32) a[3], b0 = in(reg32) b0, b1 = in(reg32) b1,
                 options(pure, nomem, nostack, preserves_flags));
        }
    }

    /// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`: as [`m16n8k16`] on bf16.
    #[inline(always)]
    pub fn m16n8k16_bf16(d: &mut [f32; 4], a: [u32; 4], b0: u32, b1: u32) {
        unsafe {
            asm!("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{d0}, {d1}, {d2}, {d3}}}, {{{a0}, {a1}, {a2}, {a3}}}, {{{b0}, {b1}}}, {{{d0}, {d1}, {d2}, {d3}}};",
                 d0 = inout(reg32) d[0], d1 = inout(reg32) d[1], d2 = inout(reg32) d[2],
                 d3 = inout(reg32) d[3], a0 = in(reg32) a[0], a1 = in(reg32) a[1],
                 a2 = in(reg32) a[2], a3 = in(reg32) a[3], b0 = in(reg32) b0, b1 = in(reg32) b1,
                 options(pure, nomem, nostack, preserves_flags));
        }
    }
}

/// Plain global loads and stores (the 16-bit activations, read straight into registers; the
/// quantizer's inputs and outputs).
pub mod global {
    use super::asm;

    /// `ld.global.nc.v4.u32` (16-byte aligned; the memory is not written during the launch).
    #[inline(always)]
    pub unsafe fn ld_nc_v4(src: u64) -> [u32; 4] {
        let (x, y, z, w): (u32, u32, u32, u32);
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {s}; ld.global.nc.v4.u32 {{{x}, {y}, {z}, {w}}}, [g]; }}",
                 x = out(reg32) x, y = out(reg32) y, z = out(reg32) z, w = out(reg32) w,
                 s = in(reg64) src, options(nostack, readonly, preserves_flags));
        }
        [x, y, z, w]
    }

    /// [`ld_nc_v4`] if `pred`, else zeros: one predicated load, no branch (`src` is not
    /// dereferenced when `pred` is false).
    #[inline(always)]
    pub unsafe fn ld_nc_v4_if(src: u64, pred: bool) -> [u32; 4] {
        let (x, y, z, w): (u32, u32, u32, u32);
        // `out` (not `lateout`) operands never share a register with `src` or `pred`, so
        // zeroing them first is safe.
        unsafe {
            asm!("{{ .reg .u64 g; .reg .pred p; setp.ne.u32 p, {c}, 0; mov.u32 {x}, 0; \
                  mov.u32 {y}, 0; mov.u32 {z}, 0; mov.u32 {w}, 0; cvta.to.global.u64 g, {s}; \
                  @p ld.global.nc.v4.u32 {{{x}, {y}, {z}, {w}}}, [g]; }}",
                 x = out(reg32) x, y = out(reg32) y, z = out(reg32) z, w = out(reg32) w,
                 s = in(reg64) src, c = in(reg32) pred as u32,
                 options(nostack, readonly, preserves_flags));
        }
        [x, y, z, w]
    }

    /// `ld.global.nc.u32` (4-byte aligned, read-only during the launch): through L1, so a line
    /// the kernel read before is usually still there. Not `pure`: it stays where it is
    /// written (after a loop, say) instead of being hoisted.
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    pub unsafe fn ld_nc_u32(src: u64) -> u32 {
        let v: u32;
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {s}; ld.global.nc.u32 {v}, [g]; }}",
                 v = out(reg32) v, s = in(reg64) src, options(nostack, readonly, preserves_flags));
        }
        v
    }

    /// [`ld_nc_u32`] of a `u64` (8-byte aligned).
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    pub unsafe fn ld_nc_u64(src: u64) -> u64 {
        let v: u64;
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {s}; ld.global.nc.u64 {v}, [g]; }}",
                 v = out(reg64) v, s = in(reg64) src, options(nostack, readonly, preserves_flags));
        }
        v
    }

    /// `st.global.v2.u32` (8-byte aligned).
    #[inline(always)]
    pub unsafe fn st_v2(dst: u64, v: [u32; 2]) {
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {d}; st.global.v2.u32 [g], {{{x}, {y}}}; }}",
                 d = in(reg64) dst, x = in(reg32) v[0], y = in(reg32) v[1],
                 options(nostack, preserves_flags));
        }
    }

    /// `ld.global.nc.v2.u32` (8-byte aligned, read-only path).
    #[inline(always)]
    pub unsafe fn ld_nc_v2(src: u64) -> [u32; 2] {
        let (x, y): (u32, u32);
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {s}; ld.global.nc.v2.u32 {{{x}, {y}}}, [g]; }}",
                 x = out(reg32) x, y = out(reg32) y, s = in(reg64) src,
                 options(nostack, readonly, preserves_flags));
        }
        [x, y]
    }

    /// `st.global.v4.u32` (16-byte aligned).
    #[inline(always)]
    pub unsafe fn st_v4(dst: u64, v: [u32; 4]) {
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {d}; st.global.v4.u32 [g], {{{x}, {y}, {z}, {w}}}; }}",
                 d = in(reg64) dst, x = in(reg32) v[0], y = in(reg32) v[1], z = in(reg32) v[2],
                 w = in(reg32) v[3], options(nostack, preserves_flags));
        }
    }

    /// `st.global.cg.v4.f32` (16-byte aligned; cached in L2 only): a split tile's partial
    /// sums, which another SM reads.
    #[inline(always)]
    pub unsafe fn st_cg_v4_f32(dst: u64, v: [f32; 4]) {
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {d}; st.global.cg.v4.f32 [g], {{{x}, {y}, {z}, {w}}}; }}",
                 d = in(reg64) dst, x = in(reg32) v[0], y = in(reg32) v[1], z = in(reg32) v[2],
                 w = in(reg32) v[3], options(nostack, preserves_flags));
        }
    }

    /// `ld.global.cg.v4.f32` (16-byte aligned; from L2, never a stale L1 line): partial sums
    /// another SM wrote.
    #[inline(always)]
    pub unsafe fn ld_cg_v4_f32(src: u64) -> [f32; 4] {
        let (x, y, z, w): (f32, f32, f32, f32);
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {s}; ld.global.cg.v4.f32 {{{x}, {y}, {z}, {w}}}, [g]; }}",
                 x = out(reg32) x, y = out(reg32) y, z = out(reg32) z, w = out(reg32) w,
                 s = in(reg64) src, options(nostack, preserves_flags));
        }
        [x, y, z, w]
    }

    /// `fence.acq_rel.gpu`: orders this thread's memory accesses before and after it for
    /// every thread of the GPU (with a barrier and an atomic, the release / acquire of a
    /// split tile's partial sums).
    #[inline(always)]
    pub unsafe fn fence_gpu() {
        unsafe { asm!("fence.acq_rel.gpu;", options(nostack, preserves_flags)) };
    }

    /// `atom.acq_rel.gpu.global.add.u32`: adds `v` to the word at `addr` (4-byte aligned) and
    /// returns its old value.
    #[inline(always)]
    pub unsafe fn atom_add_u32(addr: u64, v: u32) -> u32 {
        let old: u32;
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {a}; atom.acq_rel.gpu.global.add.u32 {o}, [g], {v}; }}",
                 o = out(reg32) old, a = in(reg64) addr, v = in(reg32) v,
                 options(nostack, preserves_flags));
        }
        old
    }

    /// `st.relaxed.gpu.global.u32` (4-byte aligned).
    #[inline(always)]
    pub unsafe fn st_relaxed_u32(dst: u64, v: u32) {
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {d}; st.relaxed.gpu.global.u32 [g], {v}; }}",
                 d = in(reg64) dst, v = in(reg32) v, options(nostack, preserves_flags));
        }
    }

    /// `st.global.u8` of the low byte of `v`.
    #[inline(always)]
    pub unsafe fn st_u8(dst: u64, v: u32) {
        unsafe {
            asm!("{{ .reg .u64 g; cvta.to.global.u64 g, {d}; st.global.u8 [g], {v}; }}",
                 d = in(reg64) dst, v = in(reg32) v, options(nostack, preserves_flags));
        }
    }
}

/// Warpgroup MMA (`wgmma`, sm_90a only) with A from registers and B from shared memory.
#[cfg(nvfp4_sm90a)]
pub mod wgmma {
    use super::asm;

    /// Shared-memory matrix descriptor for a K-major operand without swizzling: 8x8 core
    /// matrices of 128 contiguous bytes; `lbo` = bytes between core matrices adjacent in K,
    /// `sbo` = bytes between 8-row groups. Fields are stored `>> 4` (14 bits each).
    #[inline(always)]
    pub fn desc_no_swizzle(smem_addr: u32, lbo: u32, sbo: u32) -> u64 {
        (((smem_addr as u64) >> 4) & 0x3FFF)
            | ((((lbo as u64) >> 4) & 0x3FFF) << 16)
            | ((((sbo as u64) >> 4) & 0x3FFF) << 32)
    }

    /// Shared-memory matrix descriptor for a K-major operand in the 128-byte swizzle layout
    /// (what TMA writes with `CU_TENSOR_MAP_SWIZZLE_128B`): rows of 128 bytes, 8-row groups
    /// of 1024 bytes `sbo` apart, the 16-byte units of row `r` permuted by `r % 8`. `smem_addr`
    /// is the group's start plus the k-step's byte offset inside the row; the group must be
    /// 1024-byte aligned (the base-offset field is 0). The leading offset is unused here
    /// (encoded as 1, as the PTX ISA asks for swizzled K-major layouts).
    #[inline(always)]
    pub fn desc_sw128(smem_addr: u32, sbo: u32) -> u64 {
        (((smem_addr as u64) >> 4) & 0x3FFF)
            | (1 << 16)
            | ((((sbo as u64) >> 4) & 0x3FFF) << 32)
            | (1 << 62)
    }

    /// `wgmma.fence.sync.aligned`: orders register writes (A fragments, accumulators) before
    /// the following `wgmma`s. All threads of the warpgroup.
    #[inline(always)]
    pub unsafe fn fence() {
        unsafe {
            asm!(
                "wgmma.fence.sync.aligned;",
                options(nostack, preserves_flags)
            )
        }
    }

    /// `wgmma.commit_group.sync.aligned`.
    #[inline(always)]
    pub unsafe fn commit() {
        unsafe {
            asm!(
                "wgmma.commit_group.sync.aligned;",
                options(nostack, preserves_flags)
            )
        }
    }

    /// `fence.proxy.async.shared::cta`: makes this thread's ordinary shared-memory stores
    /// visible to the async proxy (wgmma's shared-memory reads). Follow with a barrier.
    #[inline(always)]
    pub unsafe fn fence_proxy_async_shared() {
        unsafe {
            asm!(
                "fence.proxy.async.shared::cta;",
                options(nostack, preserves_flags)
            )
        }
    }

    /// Defines `$name` (`$name_bf16`): `wgmma.mma_async.sync.aligned.m64n$N k16.f32.f16.f16`
    /// (`.bf16.bf16`), `d += a * B`,
    /// on the first N/2 of 64 accumulators (listed as positional operands). A (64 x 16) comes
    /// from registers in the `mma.m16n8k16` A layout per warp (warp w: rows 16w..16w+15), B
    /// (16 x N, K-major) from shared memory through `desc`. Asynchronous: `d` and `a` must
    /// not be touched until [`wait0`] and [`pin_acc`].
    macro_rules! wgmma_a_regs {
        ($name:ident, $name_bf16:ident, $n:literal, [$first:literal $(, $rest:literal)*]) => {
            wgmma_a_regs!(@one $name, "f16", $n, [$first $(, $rest)*]);
            wgmma_a_regs!(@one $name_bf16, "bf16", $n, [$first $(, $rest)*]);
        };
        (@one $name:ident, $ty:literal, $n:literal, [$first:literal $(, $rest:literal)*]) => {
            #[doc = concat!("`wgmma.mma_async.sync.aligned.m64n", $n, "k16.f32.", $ty, ".", $ty, "` (see [`wgmma_a_regs`]).")]
            #[inline(always)]
            pub unsafe fn $name(d: &mut [f32; 64], a: &[u32; 4], desc: u64) {
                unsafe {
                    asm!(
                        concat!(
                            "wgmma.mma_async.sync.aligned.m64n", $n, "k16.f32.", $ty, ".", $ty, " {{{", $first, "}"
                            $(, ", {", $rest, "}")*,
                            "}}, {{{a0}, {a1}, {a2}, {a3}}}, {desc}, 1, 1, 1, 0;"
                        ),
                        inout(reg32) d[$first], $(inout(reg32) d[$rest],)*
                        a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2],
                        a3 = in(reg32) a[3], desc = in(reg64) desc,
                        options(nostack, preserves_flags));
                }
            }
        };
    }
    wgmma_a_regs!(
        m64n32k16,
        m64n32k16_bf16,
        32,
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    );
    wgmma_a_regs!(
        m64n64k16,
        m64n64k16_bf16,
        64,
        [
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
            24, 25, 26, 27, 28, 29, 30, 31
        ]
    );
    wgmma_a_regs!(
        m64n96k16,
        m64n96k16_bf16,
        96,
        [
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
            24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45,
            46, 47
        ]
    );
    wgmma_a_regs!(
        m64n128k16,
        m64n128k16_bf16,
        128,
        [
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
            24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45,
            46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63
        ]
    );

    /// Names all 64 accumulators after [`wait0`] so the compiler keeps them in place (and
    /// reads none) until the asynchronous MMAs writing them are done.
    #[inline(always)]
    pub unsafe fn pin_acc(d: &mut [f32; 64]) {
        macro_rules! pin {
            ($($i:literal),*) => {
                unsafe {
                    asm!(concat!("// wgmma accumulators" $(, " {", $i, "}")*),
                         $(inout(reg32) d[$i],)* options(nostack, preserves_flags));
                }
            };
        }
        pin!(
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
            24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45,
            46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63
        );
    }

    /// [`wait0`] then [`pin_acc`]: every MMA of the warpgroup is done, `a` may be rewritten
    /// and `d` read.
    #[inline(always)]
    pub unsafe fn wait_all(a: &[[u32; 4]; 4], d: &mut [f32; 64]) {
        unsafe {
            wait0(a);
            pin_acc(d);
        }
    }

    /// `wgmma.wait_group.sync.aligned 1`: every committed group but the newest is done. Names
    /// the 16 A-fragment registers of the group before the newest, which this wait retires,
    /// so that nothing may reuse them before it. The newest group's registers must be kept
    /// live by the caller (named by the next wait), and the accumulators must not be touched
    /// until a later [`wait_all`].
    #[inline(always)]
    pub unsafe fn wait1(a: &[[u32; 4]; 4]) {
        unsafe { wait_group::<1>(a) }
    }

    /// `wgmma.wait_group.sync.aligned 0`, naming 16 A-fragment registers that in-flight MMAs
    /// read, so they stay live and unmodified until every MMA of the warpgroup is done.
    #[inline(always)]
    pub unsafe fn wait0(a: &[[u32; 4]; 4]) {
        unsafe { wait_group::<0>(a) }
    }

    /// `wgmma.wait_group.sync.aligned N`, naming the 16 registers of `a` (in a PTX comment:
    /// the compiler keeps them live and unmodified up to here; ptxas does not see the names).
    #[inline(always)]
    unsafe fn wait_group<const N: u32>(a: &[[u32; 4]; 4]) {
        unsafe {
            asm!(
                "wgmma.wait_group.sync.aligned {n}; // reads {a0} {a1} {a2} {a3} {a4} {a5} {a6} {a7} {a8} {a9} {a10} {a11} {a12} {a13} {a14} {a15}",
                n = const N,
                a0 = in(reg32) a[0][0], a1 = in(reg32) a[0][1], a2 = in(reg32) a[0][2],
                a3 = in(reg32) a[0][3], a4 = in(reg32) a[1][0], a5 = in(reg32) a[1][1],
                a6 = in(reg32) a[1][2], a7 = in(reg32) a[1][3], a8 = in(reg32) a[2][0],
                a9 = in(reg32) a[2][1], a10 = in(reg32) a[2][2], a11 = in(reg32) a[2][3],
                a12 = in(reg32) a[3][0], a13 = in(reg32) a[3][1], a14 = in(reg32) a[3][2],
                a15 = in(reg32) a[3][3],
                options(nostack, preserves_flags));
        }
    }
}

/// Tensor-memory-accelerator copies (`cp.async.bulk.tensor`, sm_90) and the shared-memory
/// barriers (`mbarrier`) that count their bytes.
#[cfg(nvfp4_sm90a)]
pub mod tma {
    use super::asm;

    /// `mbarrier.init.shared::cta.b64`: a barrier at `bar` (8-byte aligned) whose phase
    /// completes after `count` arrivals and every expected transaction byte.
    #[inline(always)]
    pub unsafe fn mbar_init(bar: u32, count: u32) {
        unsafe {
            asm!("mbarrier.init.shared::cta.b64 [{b}], {c};",
                 b = in(reg32) bar, c = in(reg32) count, options(nostack, preserves_flags));
        }
    }

    /// `fence.mbarrier_init.release.cluster`: makes the initialisations visible to the async
    /// proxy (the TMA unit) before a barrier publishes them to the other threads.
    #[inline(always)]
    pub unsafe fn fence_mbar_init() {
        unsafe {
            asm!(
                "fence.mbarrier_init.release.cluster;",
                options(nostack, preserves_flags)
            )
        }
    }

    /// `mbarrier.arrive.release.cta.shared::cta.b64`: one arrival on `bar`; this thread's earlier
    /// memory operations are visible to threads that then observe the phase complete.
    #[inline(always)]
    pub unsafe fn mbar_arrive(bar: u32) {
        unsafe {
            asm!("mbarrier.arrive.release.cta.shared::cta.b64 _, [{b}];",
                 b = in(reg32) bar, options(nostack, preserves_flags));
        }
    }

    /// `mbarrier.arrive.release.cta.shared::cta.b64` with a count: `count` arrivals on `bar`
    /// at once (one thread standing in for `count` that have nothing of their own to wait
    /// for); this thread's earlier memory operations are visible as for [`mbar_arrive`].
    #[inline(always)]
    pub unsafe fn mbar_arrive_n(bar: u32, count: u32) {
        unsafe {
            asm!("mbarrier.arrive.release.cta.shared::cta.b64 _, [{b}], {c};",
                 b = in(reg32) bar, c = in(reg32) count, options(nostack, preserves_flags));
        }
    }

    /// `cp.async.mbarrier.arrive.noinc.shared::cta.b64`: one arrival on `bar` once every
    /// `cp.async` this thread issued before has completed (counted in `bar`'s expected
    /// arrivals: `.noinc`).
    #[inline(always)]
    pub unsafe fn cp_async_mbar_arrive(bar: u32) {
        unsafe {
            asm!("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [{b}];",
                 b = in(reg32) bar, options(nostack, preserves_flags));
        }
    }

    /// `mbarrier.arrive.expect_tx`: this thread's arrival on `bar`, announcing `bytes` more
    /// transaction bytes for the current phase (a TMA copy's `complete_tx` pays them).
    #[inline(always)]
    pub unsafe fn mbar_arrive_expect_tx(bar: u32, bytes: u32) {
        unsafe {
            asm!("mbarrier.arrive.expect_tx.shared::cta.b64 _, [{b}], {n};",
                 b = in(reg32) bar, n = in(reg32) bytes, options(nostack, preserves_flags));
        }
    }

    /// `mbarrier.try_wait.parity`: whether the phase of `bar` with parity `parity` (0 or 1)
    /// has completed (the instruction may suspend the thread for a while before answering).
    /// Memory the completing transactions wrote is visible to this thread once it answers
    /// true.
    #[inline(always)]
    pub unsafe fn mbar_try_wait(bar: u32, parity: u32) -> bool {
        let done: u32;
        unsafe {
            asm!("{{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [{b}], {q}; selp.u32 {d}, 1, 0, p; }}",
                 d = out(reg32) done, b = in(reg32) bar, q = in(reg32) parity,
                 options(nostack, preserves_flags));
        }
        done != 0
    }

    /// Waits until the phase of `bar` with parity `parity` has completed.
    #[inline(always)]
    pub unsafe fn mbar_wait(bar: u32, parity: u32) {
        while !unsafe { mbar_try_wait(bar, parity) } {}
    }

    /// `cp.async.bulk.tensor.2d` of the box at coordinates (`c0` along the contiguous
    /// dimension, `c1` along rows) of the tensor map at generic address `map` (64-byte
    /// aligned, in global memory, unchanged while the kernel runs) into shared memory at
    /// `dst` (1024-byte aligned for the 128-byte swizzle), completing the box's bytes on
    /// `bar`. Elements outside the tensor are written as zeros.
    #[inline(always)]
    pub unsafe fn load_2d(dst: u32, map: u64, c0: u32, c1: u32, bar: u32) {
        unsafe {
            asm!("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{d}], [{m}, {{{x}, {y}}}], [{b}];",
                 d = in(reg32) dst, m = in(reg64) map, x = in(reg32) c0, y = in(reg32) c1,
                 b = in(reg32) bar, options(nostack, preserves_flags));
        }
    }
}

/// Thread-block clusters (sm_90): the pair kernel's two CTAs share each token tile (TMA
/// multicast into both CTAs' shared memory) and hand stages back to each other (arrivals on
/// the other CTA's barriers).
#[cfg(nvfp4_sm90a)]
pub mod cluster {
    use super::asm;

    /// `%cluster_ctarank`: this CTA's rank in its cluster.
    #[inline(always)]
    pub fn rank() -> u32 {
        let r: u32;
        unsafe {
            asm!("mov.u32 {r}, %cluster_ctarank;", r = out(reg32) r,
                 options(nostack, nomem, preserves_flags));
        }
        r
    }

    /// `%clusterid.x`: the cluster's index in the grid.
    #[inline(always)]
    pub fn id() -> u32 {
        let r: u32;
        unsafe {
            asm!("mov.u32 {r}, %clusterid.x;", r = out(reg32) r,
                 options(nostack, nomem, preserves_flags));
        }
        r
    }

    /// `%nclusterid.x`: the grid's clusters.
    #[inline(always)]
    pub fn count() -> u32 {
        let r: u32;
        unsafe {
            asm!("mov.u32 {r}, %nclusterid.x;", r = out(reg32) r,
                 options(nostack, nomem, preserves_flags));
        }
        r
    }

    /// `barrier.cluster.arrive.release` then `barrier.cluster.wait.acquire`: every thread
    /// of every CTA of the cluster gets here before any goes on; shared-memory writes
    /// (barrier initialisations included) before it are visible to the cluster after it.
    ///
    /// # Safety
    /// Every thread of every CTA of the cluster calls it the same number of times.
    #[inline(always)]
    pub unsafe fn sync() {
        unsafe {
            asm!(
                "barrier.cluster.arrive.release.aligned;",
                "barrier.cluster.wait.acquire.aligned;",
                options(nostack, preserves_flags)
            );
        }
    }

    /// One arrival (release at CTA scope: the wgmma reads this thread waited for are
    /// complete) on the mbarrier at shared offset `bar` of the cluster's CTA `rank`
    /// (`mapa` to its window, `mbarrier.arrive.shared::cluster`).
    ///
    /// # Safety
    /// `bar` is an initialised mbarrier of that CTA, which is running.
    #[inline(always)]
    pub unsafe fn arrive_remote(bar: u32, rank: u32) {
        unsafe {
            asm!("{{ .reg .b32 r; mapa.shared::cluster.u32 r, {b}, {k}; mbarrier.arrive.release.cta.shared::cluster.b64 _, [r]; }}",
                 b = in(reg32) bar, k = in(reg32) rank, options(nostack, preserves_flags));
        }
    }

    /// `st.shared::cluster.u32` of `v` at shared offset `addr` of the cluster's CTA `rank`
    /// (`mapa` to its window); weak: a cluster barrier publishes it.
    ///
    /// # Safety
    /// `addr` is inside that CTA's shared memory, which is running, and nothing there
    /// reads or writes the word concurrently (the caller orders the store after the other
    /// CTA's last reads of it).
    #[inline(always)]
    pub unsafe fn st_remote_u32(addr: u32, rank: u32, v: u32) {
        unsafe {
            asm!("{{ .reg .b32 r; mapa.shared::cluster.u32 r, {a}, {k}; st.shared::cluster.u32 [r], {v}; }}",
                 a = in(reg32) addr, k = in(reg32) rank, v = in(reg32) v,
                 options(nostack, preserves_flags));
        }
    }

    /// [`super::tma::load_2d`] into shared offset `dst` of every CTA of the cluster in
    /// `mask` (bit = rank), each completing the box's bytes on its own mbarrier at offset
    /// `bar` (`.multicast::cluster`).
    ///
    /// # Safety
    /// As `load_2d`, for every CTA in `mask`, whose stage at `dst` no thread or copy is
    /// reading or writing.
    #[inline(always)]
    pub unsafe fn load_2d_multicast(dst: u32, map: u64, c0: u32, c1: u32, bar: u32, mask: u16) {
        unsafe {
            asm!("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster [{d}], [{m}, {{{x}, {y}}}], [{b}], {k};",
                 d = in(reg32) dst, m = in(reg64) map, x = in(reg32) c0, y = in(reg32) c1,
                 b = in(reg32) bar, k = in(reg16) mask, options(nostack, preserves_flags));
        }
    }
}

/// The dynamic shared-memory window (`.extern .shared nvfp4_dyn_smem[]`, declared by the
/// PTX build step at module scope; the host sets its size at launch).
#[cfg(nvfp4_sm90a)]
#[inline(always)]
pub unsafe fn dyn_smem_base() -> u32 {
    let r: u32;
    unsafe {
        asm!("mov.u32 {r}, nvfp4_dyn_smem;", r = out(reg32) r,
             options(nostack, nomem, preserves_flags));
    }
    r
}
