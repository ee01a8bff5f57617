//! Hopper (sm_90a) NVFP4 grouped GEMM: cp.async ring, FP4 weights dequantized in registers
//! straight into wgmma's A fragments, tokens dequantized once per chunk into shared memory in
//! the layout of wgmma's B descriptor.
//!
//! # Tiling and thread mapping (constants in [`crate::tiling::wgmma`])
//! Swap AB as in the portable kernel: C^T = B * A^T. A CTA has two warpgroups (256 threads);
//! warpgroup `w` owns weight rows `64w .. 64w+63` (one m64 wgmma tile) of the CTA's 128 rows,
//! against up to `TILE_M` = 128 tokens as four n32 subtiles; subtiles past the problem's M are
//! skipped, so 80 tokens cost three n32 MMAs, not four.
//!
//! # K order
//! The same per-thread K shuffle as the portable kernel (see `mma_kernel.rs`): thread `t` of an
//! MMA quad takes scale block `t` of each 64-element chunk, and the token tile is written in
//! the matching order, so every core matrix row holds the K values the A fragments pair with.
//!
//! # Shared memory (dynamic)
//! `STAGES` x (raw FP4 of 128 weight rows and 128 tokens, plus their scales), then the fp16
//! token tile: 16 groups of 8 tokens x 8 core matrices (8 tokens x 8 k, 128 bytes) along K:
//! core (group, kc) at `group * 1024 + kc * 128`, so LBO = 128 and SBO = 1024.

use super::arch::{copy, dyn_smem_base, half, shared, thread, wgmma};
use super::sched::problem_of_tile;
use crate::fp4::{E2M1_F16_SHIFT, e2m1x8_to_f16x2_scaled, e4m3_to_f16_bits_scaled};
use crate::layout::{ScaleLayout, scale_offset};
use crate::problem::ProblemDesc;
use crate::tiling::CHUNK_K;
use crate::tiling::wgmma::{STAGES, THREADS, TILE_M, TILE_N};

macro_rules! unroll {
    ($i:ident in [$($v:literal),*] $body:block) => { $( { let $i: usize = $v; $body } )* };
}

const ROW_BYTES: u32 = CHUNK_K / 2;
const ROW_SCALES: u32 = CHUNK_K / 16;
const W_RAW: u32 = 0;
const T_RAW: u32 = W_RAW + TILE_N * ROW_BYTES;
const W_SF: u32 = T_RAW + TILE_M * ROW_BYTES;
const T_SF: u32 = W_SF + TILE_N * ROW_SCALES;
const STAGE_BYTES: u32 = T_SF + TILE_M * ROW_SCALES;
const TOK_F16: u32 = STAGES * STAGE_BYTES;
/// Bytes of one 8-token group of the fp16 tile (8 core matrices along the 64-k chunk).
const TOK_GROUP_BYTES: u32 = 1024;
const _: () = assert!(TOK_F16 + (TILE_M / 8) * TOK_GROUP_BYTES == crate::tiling::wgmma::SMEM_BYTES);

const _: () = assert!(STAGE_BYTES % 128 == 0 && TOK_F16 % 1024 == 0);
const _: () = assert!(THREADS == 256 && TILE_N == 128 && TILE_M == 128 && CHUNK_K == 64);

const F16X2_256: u32 = 0x5C00_5C00;

#[inline(always)]
fn scale_f16x2(b: u32) -> u32 {
    let h = e4m3_to_f16_bits_scaled(b as u8) as u32;
    half::mul2(h | (h << 16), F16X2_256)
}

#[derive(Clone, Copy)]
struct Operand {
    data: u64,
    ld: u64,
    scales: u64,
    layout: ScaleLayout,
    rows: u32,
}

impl Operand {
    #[inline(always)]
    unsafe fn copy_fp4(&self, dst_row: u32, row0: u32, row: u32, chunk: u32, unit: u32, k: u32) {
        let grow = row0 + row;
        let kk = chunk * CHUNK_K + unit * 16;
        let ok = grow < self.rows && kk < k;
        let src = if ok {
            self.data + grow as u64 * self.ld + (kk / 2) as u64
        } else {
            self.data
        };
        unsafe { copy::async_8(dst_row + unit * 8, src, if ok { 8 } else { 0 }) };
    }

    #[inline(always)]
    unsafe fn copy_scales(&self, dst: u32, row0: u32, row: u32, chunk: u32, k: u32) {
        let grow = row0 + row;
        let col = chunk * ROW_SCALES;
        let cols = k / 16;
        let valid = if grow < self.rows {
            (cols - col).min(ROW_SCALES)
        } else {
            0
        };
        let aligned = matches!(self.layout, ScaleLayout::Blocked) || cols % 4 == 0;
        if aligned {
            let src = if valid > 0 {
                self.scales + scale_offset(self.layout, grow as u64, col as u64, k)
            } else {
                self.scales
            };
            unsafe { copy::async_4(dst, src, valid) };
        } else {
            let src = self.scales + grow as u64 * cols as u64 + col as u64;
            let mut v = 0u32;
            for j in 0..ROW_SCALES {
                if j < valid {
                    v |= unsafe { copy::ld_global_u8(src + j as u64) } << (8 * j);
                }
            }
            unsafe { shared::st_u32(dst, v) };
        }
    }
}

/// Hopper NVFP4 grouped GEMM (sm_90a): one persistent launch for every problem of a group.
///
/// Parameters as [`super::mma_kernel::nvfp4_grouped_gemm_mma`], but the table's `tiles_m` is
/// `ceil(m / 128)` and tiles cover 128 weight rows x 128 tokens. Launch with 256 threads and
/// `SMEM_BYTES` of dynamic shared memory.
///
/// # Safety
/// As the portable kernel: every descriptor validated by the host.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn nvfp4_grouped_gemm_wgmma(
    table: *const ProblemDesc,
    num_problems: u32,
    total_tiles: u32,
) {
    let smem = unsafe { dyn_smem_base() };
    let mut tile = thread::ctaid();
    while tile < total_tiles {
        let p = unsafe { problem_of_tile(table, num_problems, tile) };
        let desc = unsafe { core::ptr::read(table.add(p as usize)) };
        let local = tile - desc.tile_start;
        let n0 = (local / desc.tiles_m) * TILE_N;
        let m0 = (local % desc.tiles_m) * TILE_M;
        unsafe { gemm_tile(smem, &desc, n0, m0) };
        tile += thread::nctaid();
    }
}

#[inline(always)]
unsafe fn gemm_tile(smem: u32, d: &ProblemDesc, n0: u32, m0: u32) {
    let tid = thread::tid();
    let lane = tid % 32;
    let warp = tid / 32; // 0..8; warpgroup = warp / 4
    let g = lane / 4;
    let t = lane % 4;
    let k = d.k;
    let chunks = k.div_ceil(CHUNK_K);
    let weights = Operand {
        data: d.b,
        ld: d.ldb,
        scales: d.sfb,
        layout: ScaleLayout::from_code(d.sfb_layout).unwrap_or(ScaleLayout::Plain),
        rows: d.n,
    };
    let tokens = Operand {
        data: d.a,
        ld: d.lda,
        scales: d.sfa,
        layout: ScaleLayout::from_code(d.sfa_layout).unwrap_or(ScaleLayout::Plain),
        rows: d.m,
    };
    let m_rem = d.m - m0;

    // Copies per stage: 128 weight rows + 128 token rows, 4 units of 8 bytes each: 4 per
    // thread; scales: one row per thread (threads 0..127 weights, 128..255 tokens).
    let unit = tid % 4;
    let row_q = tid / 4; // 0..64
    let issue = |chunk: u32, stage: u32| {
        let base = smem + stage * STAGE_BYTES;
        for i in 0..2 {
            let row = row_q + 64 * i;
            unsafe {
                weights.copy_fp4(base + W_RAW + row * ROW_BYTES, n0, row, chunk, unit, k);
                tokens.copy_fp4(base + T_RAW + row * ROW_BYTES, m0, row, chunk, unit, k);
            }
        }
        if tid < TILE_N {
            unsafe { weights.copy_scales(base + W_SF + tid * ROW_SCALES, n0, tid, chunk, k) };
        } else {
            let row = tid - TILE_N;
            unsafe { tokens.copy_scales(base + T_SF + row * ROW_SCALES, m0, row, chunk, k) };
        }
    };

    let mut acc = [[0f32; 16]; 4];
    for s in 0..STAGES - 1 {
        if s < chunks {
            issue(s, s);
        }
        unsafe { copy::commit() };
    }

    // This thread's weight rows: warpgroup rows 16 * (warp % 4) + g (+ 8).
    let wrow = (warp / 4) * 64 + (warp % 4) * 16 + g;
    let subtiles = m_rem.min(TILE_M).div_ceil(32);

    for chunk in 0..chunks {
        unsafe {
            copy::wait::<{ STAGES - 2 }>();
            thread::sync_cta();
        }
        let ahead = chunk + STAGES - 1;
        if ahead < chunks {
            issue(ahead, ahead % STAGES);
        }
        unsafe { copy::commit() };
        let stage = smem + (chunk % STAGES) * STAGE_BYTES;

        // Tokens: job = (token row, half h of each scale block); 256 jobs, one per thread.
        {
            let row = tid % TILE_M;
            let h = tid / TILE_M;
            let mut w = [[0u32; 4]; 4]; // [scale block][word]
            unroll!(blk in [0, 1, 2, 3] {
                let x = unsafe { shared::ld_u32(stage + T_RAW + row * ROW_BYTES + blk as u32 * 8 + h * 4) };
                let sf = scale_f16x2(unsafe { shared::ld_u8(stage + T_SF + row * ROW_SCALES + blk as u32) });
                let p = e2m1x8_to_f16x2_scaled(x);
                unroll!(i in [0, 1, 2, 3] { w[blk][i] = half::mul2(p[i], sf); });
            });
            // Word i of block blk belongs to k-step 2h + i/2, core matrix 2*step + i%2,
            // byte 4 * blk of the token's 16-byte row in that core matrix.
            let group_base = smem + TOK_F16 + (row / 8) * TOK_GROUP_BYTES + (row % 8) * 16;
            unroll!(i in [0, 1, 2, 3] {
                let kc = 2 * (2 * h + (i as u32) / 2) + (i as u32) % 2;
                unsafe { shared::st_v4(group_base + kc * 128, [w[0][i], w[1][i], w[2][i], w[3][i]]) };
            });
            unsafe { wgmma::fence_proxy_async_shared() };
        }
        unsafe { thread::sync_cta() };

        // Weights: rows wrow and wrow + 8, scale block t, both halves of the block.
        let lo_raw = unsafe { shared::ld_v2(stage + W_RAW + wrow * ROW_BYTES + t * 8) };
        let hi_raw = unsafe { shared::ld_v2(stage + W_RAW + (wrow + 8) * ROW_BYTES + t * 8) };
        let s_lo = scale_f16x2(unsafe { shared::ld_u8(stage + W_SF + wrow * ROW_SCALES + t) });
        let s_hi =
            scale_f16x2(unsafe { shared::ld_u8(stage + W_SF + (wrow + 8) * ROW_SCALES + t) });
        let mut a = [[0u32; 4]; 4]; // [k-step][reg]
        unroll!(h in [0, 1] {
            let lo = e2m1x8_to_f16x2_scaled(lo_raw[h]);
            let hi = e2m1x8_to_f16x2_scaled(hi_raw[h]);
            unroll!(e in [0, 1] {
                a[2 * h + e] = [
                    half::mul2(lo[2 * e], s_lo),
                    half::mul2(hi[2 * e], s_hi),
                    half::mul2(lo[2 * e + 1], s_lo),
                    half::mul2(hi[2 * e + 1], s_hi),
                ];
            });
        });
        // Straight-line wgmma sequences per subtile count: a branch between two wgmmas makes
        // ptxas insert extra warpgroup.arrive fences (C7519) and serialise them.
        let tok = smem + TOK_F16;
        match subtiles {
            1 => unsafe { mma_chunk::<1>(&mut acc, &a, tok) },
            2 => unsafe { mma_chunk::<2>(&mut acc, &a, tok) },
            3 => unsafe { mma_chunk::<3>(&mut acc, &a, tok) },
            _ => unsafe { mma_chunk::<4>(&mut acc, &a, tok) },
        }
    }

    // Epilogue: subtile i, n8 block j: acc[i][4j..4j+4] = (rows g, g+8) x (tokens 2t, 2t+1).
    let factor = d.alpha * (E2M1_F16_SHIFT * E2M1_F16_SHIFT);
    let c = d.c as *mut u16;
    unroll!(half_row in [0, 1] {
        let n = n0 + wrow + half_row as u32 * 8;
        if n < d.n {
            unroll!(i in [0, 1, 2, 3] {
                unroll!(j in [0, 1, 2, 3] {
                    unroll!(e in [0, 1] {
                        let m = (i as u32) * 32 + (j as u32) * 8 + 2 * t + e as u32;
                        if m < m_rem && m < TILE_M {
                            let v = acc[i][4 * j + 2 * half_row + e] * factor;
                            let idx = (m0 + m) as u64 * d.ldc + n as u64;
                            unsafe { c.add(idx as usize).write(half::f32_to_f16(v)) };
                        }
                    });
                });
            });
        }
    });
    unsafe { thread::sync_cta() };
}

/// One chunk's MMAs for `NS` active n32 subtiles: 4 k-steps x `NS` wgmmas, one commit, and
/// the wait (which also pins the A fragments and accumulators until the MMAs are done).
#[inline(always)]
unsafe fn mma_chunk<const NS: usize>(acc: &mut [[f32; 16]; 4], a: &[[u32; 4]; 4], tok: u32) {
    unsafe { wgmma::fence() };
    unroll!(s in [0, 1, 2, 3] {
        unroll!(i in [0, 1, 2, 3] {
            if i < NS {
                let start = tok + (i as u32) * 4 * TOK_GROUP_BYTES + (s as u32) * 256;
                let desc = wgmma::desc_no_swizzle(start, 128, TOK_GROUP_BYTES);
                unsafe { wgmma::m64n32k16(&mut acc[i], &a[s], desc) };
            }
        });
    });
    unsafe {
        wgmma::commit();
        wgmma::wait0(a);
    }
    unroll!(i in [0, 1, 2, 3] {
        if i < NS {
            unsafe { wgmma::wait0_acc(&mut acc[i]) };
        }
    });
}
