//! Portable NVFP4 grouped GEMM: cp.async ring + in-register FP4 dequantization + mma.sync.
//!
//! # Tiling and thread mapping (constants in [`crate::tiling`])
//! Swap AB: the weights `B` (n rows) are the MMA's row side (m16 tiles) and the tokens `A`
//! (m rows) its column side (n8 tiles), so ragged token counts cost whole n8 blocks only.
//! A CTA computes `TILE_N` = 128 weight rows x `TILE_M` = 64 tokens; warp `w` (of 4) owns
//! weight rows `32w .. 32w+31` (two m16 tiles) against all 64 tokens (eight n8 tiles).
//!
//! # K order
//! A 64-element K chunk is 32 bytes per row. Thread `t = lane % 4` of an MMA quad takes the
//! 16 elements of scale block `t` (bytes `8t .. 8t+7`); [`crate::fp4::e2m1x8_to_f16x2_scaled`]
//! turns each 4 bytes into four fp16x2 words pairing code `i` with code `i + 4`, and those words
//! are used as the `(k, k+1)` pairs of two consecutive MMA k-steps. The MMA sums over all 64
//! k, and both operands are shuffled the same way, so the order does not matter; every
//! 16-element run a thread handles has one scale per row.
//!
//! # Exactness
//! FP4 codes become `value * 2^-14` in fp16 and are multiplied by the E4M3 scale as an fp16
//! (exact: at most 5 significant bits, smallest `2^-24`). Products are exact in the fp32
//! accumulators; the epilogue multiplies by `alpha * 2^28` and rounds once to fp16.
//!
//! # Pipeline
//! `STAGES` shared-memory stages of raw FP4 and scale bytes, filled with `cp.async`
//! (zero-filled past M, N and K). Per chunk: wait for the oldest stage, barrier, issue the
//! chunk `STAGES - 1` ahead, dequantize the 64 tokens of this chunk into an fp16 tile
//! (once per CTA, shared by the 4 warps), barrier, then each warp dequantizes its own weight
//! rows in registers and runs 64 MMAs.
//!
//! The fp16 / bf16 activation entries load each chunk's tokens into registers one chunk
//! ahead and store them into the token tile in that K order. The entry for the token pass's
//! rows (`_f16p`), which the pass wrote in that order already, copies them with the weights
//! into three stages (`P_STAGES`) and the MMAs read them where they land.

use super::arch::{copy, half, shared, thread};
use super::dequant::{
    Act, Bf16Act, F16Act, F16PairedAct, Fp4Act, a_fragments_for, fp4x8_scaled, pair_i_i4,
};
use super::load::{Fp4Rows, Operand, ROW_BYTES, ROW_SCALES, ScaleRow, Tok16};
use super::sched::{Tile, TileFn, for_each_tile};
use super::split::combine;
use crate::problem::{Activation, FLAG_OUT_BF16, ProblemDesc, Split};
use crate::tiling::{CHUNK_K, SCHED_SMEM_BYTES, STAGES, THREADS, TILE_M, TILE_N};
use core::marker::PhantomData;

/// Offsets inside one stage: weights' FP4, tokens' FP4, weights' scales, tokens' scales.
const W_RAW: u32 = 0;
const T_RAW: u32 = W_RAW + TILE_N * ROW_BYTES;
const W_SF: u32 = T_RAW + TILE_M * ROW_BYTES;
const T_SF: u32 = W_SF + TILE_N * ROW_SCALES;
const STAGE_BYTES: u32 = T_SF + TILE_M * ROW_SCALES;
/// The dequantized fp16 token tile: `TILE_M` rows of 64 fp16 (128 bytes), 16-byte slots
/// swizzled by `row & 1` so a quarter-warp's 16-byte loads hit distinct banks.
const TOK_F16: u32 = STAGES * STAGE_BYTES;
const TOK_ROW_BYTES: u32 = CHUNK_K * 2;
/// Two token buffers: chunk c's MMAs read one while chunk c + 1 is dequantized into the other.
const TOK_BUF_BYTES: u32 = TILE_M * TOK_ROW_BYTES;
/// The scheduler's shared memory (device-side sizes), after the token buffers.
const SCHED: u32 = TOK_F16 + 2 * TOK_BUF_BYTES;
const SMEM_BYTES: u32 = SCHED + SCHED_SMEM_BYTES;

/// Stages of the kernel for paired 16-bit tokens (`Act::PAIRED`): weights' FP4 and scales,
/// then the chunk's 64 x 64 fp16 token tile, which the MMAs read where the copies put it
/// (no token buffers, no registers in between). Three such stages fit where the other
/// kernels keep four stages and two token buffers.
const P_STAGES: u32 = 3;
const P_W_SF: u32 = TILE_N * ROW_BYTES;
const P_T16: u32 = P_W_SF + TILE_N * ROW_SCALES;
const P_STAGE_BYTES: u32 = P_T16 + TOK_BUF_BYTES;
const _: () = assert!(
    P_STAGES * P_STAGE_BYTES <= SCHED
        && P_T16 % 128 == 0
        && P_STAGE_BYTES % 128 == 0
        && P_STAGES >= 2
);

const _: () = assert!(STAGE_BYTES % 16 == 0 && T_SF % 4 == 0 && W_SF % 16 == 0);
const _: () = assert!(
    SMEM_BYTES <= 48 * 1024,
    "static shared memory is capped at 48 KiB"
);
const _: () = assert!(THREADS == 128 && TILE_N == 128 && TILE_M == 64 && CHUNK_K == 64);

/// Base address of this kernel's static shared memory.
#[inline(always)]
unsafe fn smem_base() -> u32 {
    let r: u32;
    unsafe {
        core::arch::asm!(
            "{{ .shared .align 128 .b8 nvfp4_mma_smem[{bytes}]; mov.u32 {r}, nvfp4_mma_smem; }}",
            r = out(reg32) r, bytes = const SMEM_BYTES, options(nostack, nomem, preserves_flags));
    }
    r
}

gemm_entry! {
    /// Portable NVFP4 grouped GEMM (sm_80+): one persistent launch for every problem of a group.
    ///
    /// Parameters: `table`, the device problem table ([`ProblemDesc`], `num_problems` entries);
    /// `mode`, a [`crate::problem::SizeMode`] code. With host sizes (`mode` 0) `tile_start` is the
    /// exclusive prefix sum of [`crate::tiling::tiles_for`], `total_tiles` the sum of all
    /// problems' tiles and `counts` unused; with device sizes `counts` points to `num_problems`
    /// (at most `MAX_DEVICE_GROUPS`) `u32` row counts and the kernel computes the tiles itself.
    /// `dp_tiles`, `parts` and `ws` say which tiles are cut along K, and where their parts meet
    /// ([`Split`]; `parts` 0 or 1: none). Launch with `THREADS` = 128 threads per CTA and any
    /// grid size; CTA `b` takes work units `b, b + gridDim.x, ...` (one per whole tile, `parts`
    /// per cut tile).
    ///
    /// # Safety
    /// The host (the `host` crate's validation) guarantees every descriptor is consistent: buffers
    /// long enough for m, n, k, lda, ldb, ldc and the scale layouts, k a multiple of 16, pointers
    /// aligned (a/b 8 bytes, scales 4, c 2), `tiles_m = ceil(m / TILE_M)` and `tile_start` as above;
    /// with cut tiles, `ws` as [`Split`] says for `total_tiles` tiles of 128 threads.
    nvfp4_grouped_gemm_mma => run::<Fp4Act>
}

gemm_entry! {
    /// The portable kernel with fp16 activations (W4A16): as [`nvfp4_grouped_gemm_mma`], but each
    /// problem's `a` holds `m` rows of `k` fp16 values (`lda` bytes apart, 16-byte aligned) and
    /// `sfa` is not read; `c` is fp16 or, with [`FLAG_OUT_BF16`], bf16.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_mma`], with the host validating `a` for 16-bit rows.
    nvfp4_grouped_gemm_mma_f16a => run::<F16Act>
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_mma_f16a`] for tokens the token pass wrote for it
    /// (`nvfp4_dequant_tokens` with `paired` set): each 16-byte unit of a row holds 8 fp16
    /// values in the kernels' K order (word `i` = values `i`, `i + 4`), so the copies bring
    /// them into shared memory as they are (`cp.async`, 16 bytes; 3 stages of weights and
    /// tokens) and the MMAs read them there. `a` rows must be 16-byte aligned (the pass's
    /// workspace is); output fp16.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_mma_f16a`], with every `a` the pass's paired fp16 copy.
    nvfp4_grouped_gemm_mma_f16p => run::<F16PairedAct>
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_mma_f16a`] with bf16 activations (bf16 weights and MMAs).
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_mma_f16a`].
    nvfp4_grouped_gemm_mma_bf16a => run::<Bf16Act>
}

/// The persistent loop of every entry, for activations `A`.
#[inline(always)]
unsafe fn run<A: Act>(
    table: *const ProblemDesc,
    num_problems: u32,
    total_tiles: u32,
    counts: *const u32,
    mode: u32,
    split: Split,
) {
    let smem = unsafe { smem_base() };
    unsafe {
        for_each_tile(
            table,
            num_problems,
            total_tiles,
            counts,
            mode,
            smem + SCHED,
            THREADS,
            TILE_N,
            TILE_M,
            split,
            &mut Tiles::<A>(smem, PhantomData),
        );
    }
}

/// The kernel's tile work for the scheduler, for activations `A`.
struct Tiles<A>(u32, PhantomData<A>);

impl<A: Act> TileFn for Tiles<A> {
    #[inline(always)]
    unsafe fn tile(&mut self, tile: Tile) {
        unsafe { gemm_tile::<A>(self.0, tile) }
    }
}

/// Computes and stores one `TILE_N x TILE_M` tile of `C^T` (weights x tokens), with 8, 4 or
/// 1 n8 blocks of tokens (tiles of more than 32, 9 to 32, and at most 8 tokens) compiled
/// separately, none of them predicated: tokens past the tile's count are zero (zero-filled
/// copies), their MMAs harmless and their outputs not stored. A run-time predicate per n8
/// block made ptxas serialise the blocks' MMAs (25% slower on an H200, PERF.md runs 21, 28).
#[inline(always)]
unsafe fn gemm_tile<A: Act>(smem: u32, tile: Tile) {
    let m_rem = tile.m_end - tile.m0;
    if m_rem > 32 {
        unsafe { gemm_tile_impl::<8, A>(smem, tile) }
    } else if m_rem > 8 {
        unsafe { gemm_tile_impl::<4, A>(smem, tile) }
    } else {
        unsafe { gemm_tile_impl::<1, A>(smem, tile) }
    }
}

/// [`gemm_tile`] with `NB` n8 blocks of tokens (`8 * NB` at least the tile's tokens), and
/// activations `A`: NVFP4 tokens come through the cp.async stages and are dequantized into
/// the fp16 token tile; 16-bit tokens are loaded from global memory into registers one chunk
/// ahead (during this chunk's MMAs) and stored into the tile in the same K order, except
/// paired ones (`A::PAIRED`), which are copied into the stages with the weights and read
/// there. Computes K chunks `span.c0 .. span.c1` (all of them unless the tile is cut).
#[inline(always)]
unsafe fn gemm_tile_impl<const NB: u32, A: Act>(smem: u32, tile: Tile) {
    let Tile {
        desc,
        m_end,
        n0,
        m0,
        span,
    } = tile;
    // Only the main loop's fields are read here; the epilogue reads its own after the loop
    // (the memory-clobbering asm in between keeps them from being hoisted), which keeps
    // c, ldc and alpha out of registers during the loop.
    let d = unsafe { &*desc };
    let tid = thread::tid();
    let lane = tid % 32;
    let warp = tid / 32;
    let g = lane / 4; // MMA group: row within an 8-row block
    let t = lane % 4; // thread in group: scale block within the chunk
    // Chunks are counted from the span's first; the copies take the absolute chunk.
    let c0 = span.c0;
    let chunks = span.c1 - c0;
    let weights = Operand::weights(d);
    let tokens = Operand::tokens(d, m_end);
    let m_rem = m_end - m0; // tokens of this tile (may exceed TILE_M)

    // Copy roles: 128 weight rows x 4 units = 4 per thread; 64 token rows x 4 units = 2 per
    // thread; one weight scale row per thread; token scale rows for threads 0..63.
    let (unit, row_q) = (tid % 4, tid / 4);
    let w_rows = Fp4Rows::<4>::new(&weights, n0, row_q, 32, unit);
    let t_rows = Fp4Rows::<2>::new(&tokens, m0, row_q, 32, unit);
    let w_scales = ScaleRow::new(&weights, n0 + tid);
    let t_scales = ScaleRow::new(&tokens, m0 + tid);
    let a16 = A::KIND != Activation::Nvfp4;
    // Paired 16-bit tokens come through the stages; other 16-bit tokens through registers.
    let paired = A::PAIRED;
    let (stages, stage_bytes, w_sf) = if paired {
        (P_STAGES, P_STAGE_BYTES, P_W_SF)
    } else {
        (STAGES, STAGE_BYTES, W_SF)
    };
    // 16-bit tokens: rows tid / 8 + 16 i, 16-byte unit tid % 8 (dequant_tokens' jobs).
    let t16 = Tok16::<4>::new(&tokens, m0, tid / 8, 16, tid % 8);
    let issue = |chunk: u32, stage: u32| {
        let base = smem + stage * stage_bytes;
        let tid = thread::tid_fresh();
        let row_q = tid / 4;
        let chunk = c0 + chunk;
        unsafe {
            w_rows.issue(chunk, base + W_RAW + row_q * ROW_BYTES, 32 * ROW_BYTES);
            if paired {
                t16.issue(chunk, base + P_T16, tid / 8, 16);
            } else if !a16 {
                t_rows.issue(chunk, base + T_RAW + row_q * ROW_BYTES, 32 * ROW_BYTES);
            }
            w_scales.issue(chunk, base + w_sf + tid * ROW_SCALES);
            if !a16 && tid < TILE_M {
                t_scales.issue(chunk, base + T_SF + tid * ROW_SCALES);
            }
        }
    };

    let mut acc = [[[0f32; 4]; 8]; 2];
    let (mut p_cur, mut p_ahead) = (0, P_STAGES - 1);
    for s in 0..stages - 1 {
        if s < chunks {
            issue(s, s);
        }
        unsafe { copy::commit() };
    }

    // Prologue: chunk 0's tokens into token buffer 0 (paired tokens: copied into stage 0
    // with its weights, above).
    match (paired, a16) {
        (true, _) => {}
        (false, true) => unsafe { store_tokens16(t16.fetch(c0, true), smem + TOK_F16, tid) },
        (false, false) => unsafe {
            copy::wait::<{ STAGES - 2 }>();
            thread::sync_cta();
            dequant_tokens(smem, smem + TOK_F16, tid);
        },
    }

    // Per chunk c, one barrier: this CTA's warps put chunk c + 1's tokens into the other
    // buffer (not for paired tokens) and run chunk c's MMAs, in whatever order the warps
    // interleave.
    for chunk in 0..chunks {
        unsafe {
            // Chunk c + 1 has landed (a group is committed for every chunk, empty or not);
            // with paired tokens (tokens in the stage, no buffers), chunk c.
            if paired {
                copy::wait::<{ P_STAGES - 2 }>();
            } else {
                copy::wait::<{ STAGES - 3 }>();
            }
            // Token buffer c % 2 is written; buffer (c + 1) % 2 and stage (c - 1) % stages
            // are no longer read.
            thread::sync_cta();
        }
        let ahead = chunk + stages - 1;
        // Stages of chunks c + stages - 1 and c: running counters for the three paired
        // stages (a remainder by 3 costs a multiply-high and more), a mask for four.
        let (ahead_stage, cur_stage) = if paired {
            (p_ahead, p_cur)
        } else {
            (ahead % STAGES, chunk % STAGES)
        };
        if ahead < chunks {
            issue(ahead, ahead_stage);
        }
        unsafe { copy::commit() };
        let stage = smem + cur_stage * stage_bytes;
        let tok = if paired {
            stage + P_T16
        } else {
            smem + TOK_F16 + (chunk % 2) * TOK_BUF_BYTES
        };
        // Chunk c + 1's tokens (none to fetch for paired tokens: they come with the stages).
        let mut ahead16 = [[0u32; 4]; 4];
        match (paired, a16) {
            (true, _) => {}
            // In flight during this chunk's MMAs; stored after them. Predicated on there
            // being a next chunk rather than branched, so ptxas issues the loads first.
            (false, true) => {
                ahead16 = unsafe { t16.fetch(c0 + chunk + 1, chunk + 1 < chunks) };
            }
            (false, false) if chunk + 1 < chunks => {
                let next = smem + ((chunk + 1) % STAGES) * STAGE_BYTES;
                let buf = smem + TOK_F16 + ((chunk + 1) % 2) * TOK_BUF_BYTES;
                unsafe { dequant_tokens(next, buf, thread::tid_fresh()) };
            }
            (false, false) => {}
        }

        // Weights: this thread's 4 rows (2 m16 tiles x rows g, g+8), scale block t.
        let mut raw = [[[0u32; 2]; 2]; 2];
        let mut sf = [[0u32; 2]; 2];
        unroll!(mt in [0, 1] {
            let mut bytes = [0u32; 2];
            unroll!(half_row in [0, 1] {
                let row = warp * 32 + mt as u32 * 16 + half_row as u32 * 8 + g;
                raw[mt][half_row] = unsafe { shared::ld_v2(stage + W_RAW + row * ROW_BYTES + t * 8) };
                bytes[half_row] = unsafe { shared::ld_u8(stage + w_sf + row * ROW_SCALES + t) };
            });
            sf[mt] = A::scale2(bytes[0], bytes[1]);
        });
        unroll!(h in [0, 1] {
            // A fragments of k-steps 2h (words 0, 1) and 2h + 1 (words 2, 3).
            let mut a = [[[0u32; 4]; 2]; 2]; // [mt][step]
            unroll!(mt in [0, 1] {
                a[mt] = a_fragments_for::<A>(raw[mt][0][h], raw[mt][1][h], sf[mt][0], sf[mt][1]);
            });
            // The first NB n8 blocks of tokens, with no run-time predicate, so that ptxas
            // interleaves the blocks' MMAs.
            unroll!(j in [0, 1, 2, 3, 4, 5, 6, 7] {
                if (j as u32) < NB {
                    let row = j as u32 * 8 + g;
                    let slot = (2 * t + h as u32) ^ (row & 1);
                    let b = unsafe { shared::ld_v4(tok + row * TOK_ROW_BYTES + slot * 16) };
                    // k-step outer: consecutive MMAs write different accumulators.
                    unroll!(e in [0, 1] {
                        unroll!(mt in [0, 1] {
                            A::mma(&mut acc[mt][j], a[mt][e], b[2 * e], b[2 * e + 1]);
                        });
                    });
                }
            });
        });
        if a16 && !paired && chunk + 1 < chunks {
            let buf = smem + TOK_F16 + ((chunk + 1) % 2) * TOK_BUF_BYTES;
            unsafe { store_tokens16(ahead16, buf, thread::tid_fresh()) };
        }
        if paired {
            let next = |s: u32| if s + 1 == P_STAGES { 0 } else { s + 1 };
            (p_cur, p_ahead) = (next(p_cur), next(p_ahead));
        }
    }

    // A cut tile's part: only the CTA that completes the tile goes on, with the whole sum.
    // acc[mt][j] is quad 8 mt + j; blocks j >= NB are zero and skipped.
    // SAFETY (transmutes): [[[f32; 4]; 8]; 2] and [[f32; 4]; 16] are the same 64 floats.
    let mut quads: [[f32; 4]; 16] = unsafe { core::mem::transmute(acc) };
    if !unsafe { combine(&mut quads, |i| (i % 8) < NB as usize, &span, THREADS) } {
        // Nothing to store; the barriers in `combine` already ordered the stages' reuse.
        return;
    }
    let acc: [[[f32; 4]; 8]; 2] = unsafe { core::mem::transmute(quads) };

    // Epilogue: C[m][n] = fp16(acc * alpha * SHIFT) (bf16 where asked, 16-bit activations);
    // acc[mt][j] = (rows g, g+8) x (tokens 2t, 2t+1).
    let (alpha, c, ldc) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*desc).alpha),
            core::ptr::read_volatile(&raw const (*desc).c) as *mut u16,
            core::ptr::read_volatile(&raw const (*desc).ldc),
        )
    };
    // NVFP4 activations: fp16 out (the flags are not read).
    let bf16_out =
        a16 && unsafe { core::ptr::read_volatile(&raw const (*desc).flags) } & FLAG_OUT_BF16 != 0;
    let factor = alpha * A::SHIFT;
    unroll!(mt in [0, 1] {
        unroll!(half_row in [0, 1] {
            let n = n0 + warp * 32 + mt as u32 * 16 + half_row as u32 * 8 + g;
            if n < d.n {
                unroll!(j in [0, 1, 2, 3, 4, 5, 6, 7] {
                    unroll!(e in [0, 1] {
                        let m = j as u32 * 8 + 2 * t + e as u32;
                        if (j as u32) < NB && m < m_rem {
                            let v = acc[mt][j][half_row * 2 + e] * factor;
                            let idx = (m0 + m) as u64 * ldc + n as u64;
                            let out = if bf16_out {
                                half::f32_to_bf16(v)
                            } else {
                                half::f32_to_f16(v)
                            };
                            unsafe { c.add(idx as usize).write(out) };
                        }
                    });
                });
            }
        });
    });
    // The next tile's prologue overwrites stages other warps may still read: wait for them.
    unsafe { thread::sync_cta() };
}

/// Dequantizes one chunk's 64 tokens from the raw stage at `stage` into the fp16 token buffer
/// at `buf`: 64 rows x 8 groups of 8 codes, 4 groups per thread. Group `grp` = (scale block
/// `grp / 2`, half `grp % 2`) is one 16-byte slot of the row, swizzled by `row & 1`.
#[inline(always)]
unsafe fn dequant_tokens(stage: u32, buf: u32, tid: u32) {
    // Jobs in pairs, so that their two scales are converted together.
    unroll!(pair in [0, 1] {
        let rows_grps = [0u32, 1].map(|i| {
            let job = tid + THREADS * (2 * pair as u32 + i);
            (job / 8, job % 8)
        });
        let bytes = rows_grps.map(|(row, grp)| unsafe {
            shared::ld_u8(stage + T_SF + row * ROW_SCALES + grp / 2)
        });
        let sf = Fp4Act::scale2(bytes[0], bytes[1]);
        unroll!(i in [0, 1] {
            let (row, grp) = rows_grps[i];
            let x = unsafe { shared::ld_u32(stage + T_RAW + row * ROW_BYTES + grp * 4) };
            let v = fp4x8_scaled(x, sf[i]);
            unsafe { shared::st_v4(buf + row * TOK_ROW_BYTES + (grp ^ (row & 1)) * 16, v) };
        });
    });
}

/// Stores one chunk's 16-bit tokens (this thread's four 16-byte units, from
/// [`Tok16::fetch`]) into the token buffer at `buf` in the layout [`dequant_tokens`] writes:
/// row `tid / 8 + 16 i`, slot `(tid % 8) ^ (row & 1)`, values paired `i` with `i + 4`.
#[inline(always)]
unsafe fn store_tokens16(v: [[u32; 4]; 4], buf: u32, tid: u32) {
    // (An index loop: `into_iter` on the array kept it in local memory.)
    unroll!(i in [0, 1, 2, 3] {
        let row = tid / 8 + 16 * i as u32;
        let grp = tid % 8;
        let slot = buf + row * TOK_ROW_BYTES + (grp ^ (row & 1)) * 16;
        unsafe { shared::st_v4(slot, pair_i_i4(v[i])) };
    });
}
