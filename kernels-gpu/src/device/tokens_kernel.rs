//! NVFP4 tokens to fp16, once per launch (sm_80+): the pass that lets both paths run large
//! NVFP4 x NVFP4 groups on their W4A16 kernels (on Hopper, whose tokens arrive by TMA).
//! Without it every N tile of a problem dequantizes the same tokens again.
//!
//! Exact: an E2M1 value (at most 2 significant bits, magnitude 0.5 .. 6) times an E4M3 scale
//! (at most 4 significant bits, 2^-9 .. 448) has at most 6 significant bits and lies in
//! 2^-10 .. 2688, inside fp16's normal range; NaN scales give NaN.
//!
//! # Work distribution
//! `blockIdx.y` = job (one problem's token rows), `blockIdx.x` strides over the job's 16-value
//! blocks, numbered row-major: consecutive threads read consecutive 8-byte FP4 units and
//! 1-byte scales (plain layout) and write consecutive 32-byte fp16 units. A thread with
//! several blocks (a grid capped below one block a thread) loads `PASS_LOADS_AHEAD` of them
//! before converting them. No shared memory, no barriers.

use super::arch::{copy, global, grid, half, thread, warp};
use super::dequant::{fp4x8_scaled, scale_f16x2};
use crate::layout::{ScaleLayout, scale_offset};
use crate::problem::{ProblemDesc, TokenJob};
use crate::tiling::DEQUANT_THREADS;

/// The blocked-order units of quad lane `t`: lane `t'` holds words `w[u]` (`lo` then `hi`,
/// `u` < 8) of its scale block; lane `t` returns units `2t` and `2t + 1`, unit `u` being
/// `[w_0[u], w_1[u], w_2[u], w_3[u]]` (word `t'` from lane `t'`). A 4 x 4 transpose of word
/// pairs in two butterfly stages (lane bit `b` swapped with pair-index bit `b`), each lane
/// sending and receiving four words a stage.
///
/// # Safety
/// The quad's four lanes call it together, lane `t` = `lane % 4`.
#[inline(always)]
unsafe fn quad_transpose(t: u32, lo: [u32; 4], hi: [u32; 4]) -> [[u32; 4]; 2] {
    // Pair j = words 2j, 2j + 1.
    let mut p = [
        [lo[0], lo[1]],
        [lo[2], lo[3]],
        [hi[0], hi[1]],
        [hi[2], hi[3]],
    ];
    // Stage b: pairs (j0, j1) differing in bit b; a lane with bit b clear sends and replaces
    // its pair j1, a lane with it set its pair j0 (constant indices: the array stays in
    // registers).
    macro_rules! swap {
        ($m:expr, $j0:literal, $j1:literal) => {{
            let set = t & $m != 0;
            unroll!(w in [0, 1] {
                let send = if set { p[$j0][w] } else { p[$j1][w] };
                let got = unsafe { warp::shfl_xor_quad(send, $m) };
                if set {
                    p[$j0][w] = got;
                } else {
                    p[$j1][w] = got;
                }
            });
        }};
    }
    swap!(1, 0, 1);
    swap!(1, 2, 3);
    swap!(2, 0, 2);
    swap!(2, 1, 3);
    [
        [p[0][0], p[1][0], p[2][0], p[3][0]],
        [p[0][1], p[1][1], p[2][1], p[3][1]],
    ]
}

/// fp16x2 2^14: undoes the 2^-14 of `fp4x8_scaled`'s FP4 values (exact).
const F16X2_2_14: u32 = 0x7400_7400;

/// Dequantizes the NVFP4 tokens of `jobs[blockIdx.y]` (see [`TokenJob`]). With `paired` 0
/// the fp16 rows are in natural order (what the Hopper fp16-activation kernels read); with
/// `paired` 1 each 16-byte unit (8 values) holds its values in the portable kernels' K order,
/// word `i` pairing values `i` and `i + 4` (what `nvfp4_grouped_gemm_mma_f16p` copies into
/// shared memory as it is); with `paired` 2 each 64-value chunk of a row is in the blocked K
/// order of [`crate::fp4::blocked_k`] (what `nvfp4_grouped_gemm_wgmma_f16b_wt` reads): the
/// four threads of a chunk (its scale blocks, consecutive lanes) exchange their fp16 pairs so
/// that each writes 32 contiguous bytes of the chunk's 128 (see
/// [`crate::fp4::blocked_word_offset`] and [`quad_transpose`]).
///
/// # Safety
/// Every descriptor the jobs name was validated by the host for NVFP4 activations (rows
/// `m_offset .. m_offset + m` of `a` and `sfa` inside their buffers), and each job's `out`
/// holds `(m_offset + m) * k` fp16 values that nothing else reads or writes during the launch.
/// With `paired` 2 every such `k` is a multiple of 64.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn nvfp4_dequant_tokens(
    table: *const ProblemDesc,
    jobs: *const TokenJob,
    num_jobs: u32,
    paired: u32,
) {
    // The GEMM that reads this pass's rows may be scheduled now (it waits for this grid to
    // complete before reading anything; see `arch::grid`).
    unsafe { grid::launch_dependents() };
    let job_index = unsafe { core::arch::nvptx::_block_idx_y() } as u32;
    if job_index >= num_jobs {
        return;
    }
    let job = unsafe { *jobs.add(job_index as usize) };
    let d = unsafe { &*table.add(job.problem as usize) };
    let cols = d.k / 16;
    let items = d.m as u64 * cols as u64;
    let layout = ScaleLayout::from_code(d.sfa_layout).unwrap_or(ScaleLayout::Plain);
    let stride = thread::nctaid() as u64 * DEQUANT_THREADS as u64;
    let mut i = thread::ctaid() as u64 * DEQUANT_THREADS as u64 + thread::tid() as u64;
    let place = |i: u64| {
        (
            d.m_offset as u64 + i / cols as u64,
            (i % cols as u64) as u32,
        )
    };
    // The thread's blocks `i`, `i + stride`, ... in groups of `PASS_LOADS_AHEAD`: every load
    // of a group is issued before the first conversion, so a thread with several blocks (a
    // grid capped below one block a thread) waits for memory once a group, not once a block.
    while i < items {
        let mut x = [[0u32; 2]; PASS_LOADS_AHEAD];
        let mut sf = [0u32; PASS_LOADS_AHEAD];
        unroll!(j in [0, 1, 2] {
            let ij = i + j as u64 * stride;
            if ij < items {
                let (row, col) = place(ij);
                x[j] = unsafe { global::ld_nc_v2(d.a + row * d.lda + col as u64 * 8) };
                sf[j] = unsafe {
                    copy::ld_global_u8(d.sfa + scale_offset(layout, row, col as u64, d.k))
                };
            }
        });
        unroll!(j in [0, 1, 2] {
            let ij = i + j as u64 * stride;
            if ij < items {
                let (row, col) = place(ij);
                unsafe { store_block(d, job.out, row, col, x[j], sf[j], paired) };
            }
        });
        i += PASS_LOADS_AHEAD as u64 * stride;
    }
}

/// Blocks a thread of the token pass loads before converting them (see
/// [`nvfp4_dequant_tokens`]). Three keep the pass at 52 registers (four took 60), so one
/// 256-thread pass CTA (14 K registers) fits beside an 8-stage GEMM CTA (200 a thread, 50 K);
/// H100 run 196: G8 N4096 K7168 145.2-146.6 us against 148.4-149.0 with four, the other
/// benchmark shapes unchanged.
const PASS_LOADS_AHEAD: usize = 3;
// The two `unroll!` lists in `nvfp4_dequant_tokens` name 0 .. PASS_LOADS_AHEAD.
const _: () = assert!(PASS_LOADS_AHEAD == 3);

/// Converts block `col` of row `row` (`m_offset` included) of problem `d`'s NVFP4 tokens, its
/// FP4 bytes `x` and scale byte `sf`, into the fp16 rows at `out` as [`nvfp4_dequant_tokens`]
/// writes them with `paired`.
///
/// # Safety
/// `out` holds the problem's fp16 rows and nothing else accesses the block's during the
/// call; with `paired` 2, `k` is a multiple of 64 and the four lanes of the thread's quad
/// convert the four blocks of one chunk of the same row together (block `col % 4` on lane
/// `col % 4` of the quad).
#[inline(always)]
unsafe fn store_block(
    d: &ProblemDesc,
    out: u64,
    row: u64,
    col: u32,
    x: [u32; 2],
    sf: u32,
    paired: u32,
) {
    let s = scale_f16x2(sf);
    // Word i of `half_words` pairs values i and i + 4 (times 2^-14): to true values, then
    // (unless paired) back to consecutive pairs.
    let half_words = |x: u32| {
        let w = fp4x8_scaled(x, s);
        let w = [
            half::mul2(w[0], F16X2_2_14),
            half::mul2(w[1], F16X2_2_14),
            half::mul2(w[2], F16X2_2_14),
            half::mul2(w[3], F16X2_2_14),
        ];
        if paired != 0 {
            w
        } else {
            [
                half::prmt(w[0], w[1], 0x5410),
                half::prmt(w[2], w[3], 0x5410),
                half::prmt(w[0], w[1], 0x7632),
                half::prmt(w[2], w[3], 0x7632),
            ]
        }
    };
    let (lo, hi) = (half_words(x[0]), half_words(x[1]));
    if paired == 2 {
        // Scale block t = col % 4 of chunk col / 4 (the quad's lanes hold the chunk's four
        // blocks). 16-byte unit u = 4h + i of the chunk holds word i of FP4 word h of each
        // block, block t' at word t' (`blocked_word_offset`); the quad transposes its words
        // so that lane t stores units 2t and 2t + 1 whole.
        let chunk = out + (row * d.k as u64 + (col as u64 & !3) * 16) * 2;
        let units = unsafe { quad_transpose(col % 4, lo, hi) };
        unsafe {
            global::st_v4(chunk + 32 * (col % 4) as u64, units[0]);
            global::st_v4(chunk + 32 * (col % 4) as u64 + 16, units[1]);
        }
    } else {
        let dst = out + (row * d.k as u64 + col as u64 * 16) * 2;
        unsafe {
            global::st_v4(dst, lo);
            global::st_v4(dst + 16, hi);
        }
    }
}
