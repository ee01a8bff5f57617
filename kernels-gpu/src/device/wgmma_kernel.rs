//! Hopper (sm_90a) NVFP4 grouped GEMM: FP4 weights through a cp.async ring, dequantized in
//! registers straight into wgmma's A fragments; tokens in shared memory in the layout of
//! wgmma's B descriptor (NVFP4 tokens dequantized there once per chunk, 16-bit tokens copied
//! there by the TMA).
//!
//! # Tiling and thread mapping (constants in [`crate::tiling::wgmma`])
//! Swap AB as in the portable kernel: C^T = B * A^T. A CTA has two warpgroups (256 threads);
//! warpgroup `w` owns weight rows `64w .. 64w+63` (one m64 wgmma tile) of the CTA's 128 rows,
//! against up to `TILE_M` = 128 tokens as four n32 subtiles; subtiles past the problem's M are
//! skipped, so 80 tokens cost three n32 MMAs, not four.
//!
//! # NVFP4 tokens ([`gemm_tile`])
//! K order: the same per-thread K shuffle as the portable kernel (see `mma_kernel.rs`):
//! thread `t` of an MMA quad takes scale block `t` of each 64-element chunk, and the token tile
//! is written in the matching order, so every core matrix row holds the K values the A
//! fragments pair with. Shared memory (dynamic): `STAGES` x (raw FP4 of 128 weight rows and
//! 128 tokens, plus their scales), then two fp16 token tiles: 16 groups of 8 tokens x 8 core
//! matrices (8 tokens x 8 k, 128 bytes) along K: core (group, kc) at `group * 1024 + kc * 128`,
//! so LBO = 128 and SBO = 1024.
//!
//! # 16-bit tokens ([`gemm_tile_tma`], the W4A16 entries)
//! The TMA copies each chunk's 128 x 64 token box from the problem's tensor map (encoded by
//! the host) into a `STAGES`-deep ring of 16 KiB tiles in the 128-byte swizzle layout, which
//! wgmma reads directly: no token instructions in the main loop, tokens as far ahead as the
//! weights. K is in natural order (the TMA cannot shuffle it), so the weights are: for k-step
//! `s`, thread `t` takes byte `t` of FP4 words `2s` and `2s + 1` of its rows, under scale
//! block `s` (four scales a row, converted by `cvt.rn.f16x2.e4m3x2`). Shared memory: the token
//! ring from offset 0 (1024-byte aligned), then `STAGES` x (FP4 and scales of 128 weight
//! rows), one transaction barrier per stage, the scheduler's words.
//!
//! # Weights by TMA too ([`gemm_tile_tma_wt`], the `_wt` entries)
//! When every problem's weight rows are 16-byte aligned the host launches the `_wt` entries.
//! The two warpgroups take turns filling the stages (warpgroup `s % 2` fills stage `s`):
//! its first thread has the TMA bring the chunk's token tile and 128 weight rows x 32 FP4
//! bytes, its 128 threads copy the scale rows and arrive on the stage's full barrier when
//! they land, and the stages go back to the fillers through a second ("empty") barrier per
//! stage that every thread arrives on once its wgmmas reading the stage are done: no
//! per-thread weight copies and no CTA barrier per chunk.
//!
//! # Blocked K order ([`nvfp4_grouped_gemm_wgmma_f16b_wt`])
//! After the token pass, when every `k` is a multiple of 64, the pass writes each 64-value
//! chunk of the fp16 tokens permuted ([`crate::fp4::blocked_k`]) so that thread `t` of an MMA
//! quad multiplies exactly the 16 values of scale block `t` in every k-step. The `_f16b_wt`
//! entry then builds a row's A fragments from one 8-byte load and one scale
//! ([`weight_fragments_blocked`]): 81 SASS instructions for a chunk's fragments against 121 in
//! natural order. Everything else is the `_wt` kernel. Its 8-stage form
//! ([`nvfp4_grouped_gemm_wgmma_f16b_wt8`], `run_a16_wt` with `S` = 8: 172 KiB, one CTA an SM)
//! is what the host runs for launches of at most one tile an SM.
//!
//! # Epilogue
//! The `_wt` kernels stage each finished tile in the first 32 KiB of their token ring
//! ([`store_tile_staged`]): `stmatrix .trans` turns each warp's accumulator fragments into
//! token-major rows, and the CTA stores them 16 bytes a thread, whole sectors along each
//! token's row of `c`. The other Hopper kernels store each value from its fragment
//! ([`store_tile`]): the staged form spills at their 128 registers.

use super::arch::{
    cluster, copy, dyn_smem_base, global, grid, half, shared, thread, tma, warp, wgmma,
};
use super::dequant::{Act, Bf16Act, F16Act, F16BlockedAct, Fp4Act, a_fragments_for, fp4x8_scaled};
use super::load::{Fp4Rows, Operand, ROW_BYTES, ROW_SCALES, ScaleRow};
use super::sched::{Tile, TileFn, for_each_tile};
use super::split::{Span, combine, dynamic_fetch, tile_place};
use crate::fp4::{fp4_byte_pair, fp4_byte_pair_selector};
use crate::problem::{
    FLAG_OUT_BF16, PAIR_COUNTER_BYTES, PROBLEM_DESC_BYTES, ProblemDesc, Split, TOKEN_MAP_BYTES,
    split_ws_bytes,
};
use crate::tiling::CHUNK_K;
use crate::tiling::wgmma::{
    SCALE_SLOT_BYTES, SMEM_BYTES_A16, SMEM_BYTES_A16_WT, SMEM_BYTES_A16_WT8, SMEM_BYTES_A16_WT8SG,
    SMEM_BYTES_A16_WTSG, STAGES, STAGES_WT8, THREADS, TILE_M, TILE_N, TOK16_STAGE_BYTES,
    W_STAGE_BYTES,
};
use core::marker::PhantomData;

const W_RAW: u32 = 0;
const T_RAW: u32 = W_RAW + TILE_N * ROW_BYTES;
const W_SF: u32 = T_RAW + TILE_M * ROW_BYTES;
const T_SF: u32 = W_SF + TILE_N * ROW_SCALES;
const STAGE_BYTES: u32 = T_SF + TILE_M * ROW_SCALES;
const TOK_F16: u32 = STAGES * STAGE_BYTES;
/// Bytes of one 8-token group of the fp16 tile (8 core matrices along the 64-k chunk).
const TOK_GROUP_BYTES: u32 = 1024;
/// Bytes of one fp16 token buffer (two, alternating by chunk).
const TOK_BUF_BYTES: u32 = (TILE_M / 8) * TOK_GROUP_BYTES;
const _: () = assert!(
    TOK_F16 + 2 * TOK_BUF_BYTES + crate::tiling::SCHED_SMEM_BYTES
        == crate::tiling::wgmma::SMEM_BYTES
);

const _: () = assert!(STAGE_BYTES % 128 == 0 && TOK_F16 % 1024 == 0);

// The 16-bit-activation kernels: `STAGES` token tiles (from 0, 1024-byte aligned for the
// 128-byte swizzle), then `STAGES` x (FP4 of 128 weight rows, their scales), the stages'
// transaction barriers and the scheduler's words.
const A16_W: u32 = STAGES * TOK16_STAGE_BYTES;
const A16_W_SF: u32 = TILE_N * ROW_BYTES;
const A16_BARS: u32 = A16_W + STAGES * W_STAGE_BYTES;
const _: () = assert!(
    TOK16_STAGE_BYTES % 1024 == 0
        && A16_W_SF + TILE_N * ROW_SCALES == W_STAGE_BYTES
        && A16_BARS % 8 == 0
        && A16_BARS + STAGES * 8 + crate::tiling::SCHED_SMEM_BYTES == SMEM_BYTES_A16
);
const _: () = assert!(THREADS == 256 && TILE_N == 128 && TILE_M == 128 && CHUNK_K == 64);

gemm_entry! {
    /// Hopper NVFP4 grouped GEMM (sm_90a): one persistent launch for every problem of a group.
    ///
    /// Parameters as [`super::mma_kernel::nvfp4_grouped_gemm_mma`], but the table's `tiles_m` is
    /// `ceil(m / 128)` and tiles cover 128 weight rows x 128 tokens. Launch with 256 threads and
    /// `SMEM_BYTES` of dynamic shared memory.
    ///
    /// # Safety
    /// As the portable kernel: every descriptor validated by the host.
    nvfp4_grouped_gemm_wgmma => run::<Fp4Act>
}

gemm_entry! {
    /// The Hopper kernel with fp16 activations (W4A16): as [`nvfp4_grouped_gemm_wgmma`], but each
    /// problem's `a` holds `m` rows of `k` fp16 values (`lda` bytes apart, 16-byte aligned) and
    /// `sfa` is not read; `c` is fp16 or, with `FLAG_OUT_BF16`, bf16. The tokens are read by TMA:
    /// `maps` holds one 128-byte `CUtensorMap` per problem (64-byte aligned, table order) over
    /// that problem's `a` (see [`gemm_tile_tma`]). Launch with `SMEM_BYTES_A16` of dynamic shared
    /// memory.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_wgmma`], with the host validating `a` for 16-bit rows and encoding
    /// each problem's map over rows `0 .. m_offset + m` of its `a` (none for problems without
    /// rows).
    nvfp4_grouped_gemm_wgmma_f16a => run_a16::<F16Act>, maps
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_wgmma_f16a`] with the weights' FP4 bytes by TMA too, and the
    /// stages handed back by mbarriers instead of a CTA barrier per chunk (see
    /// [`gemm_tile_tma_wt`]). `maps` holds two 128-byte `CUtensorMap`s per problem: the
    /// tokens' (as for the `_f16a` entry), then one over the problem's `b`: `k / 2` bytes a
    /// row, `n` rows `ldb` bytes apart, read in boxes of 32 bytes x 128 rows. Launch with
    /// `SMEM_BYTES_A16_WT` of dynamic shared memory.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_wgmma_f16a`], with the host encoding each problem's weight map
    /// over its `b` (16-byte aligned, `ldb` a multiple of 16).
    nvfp4_grouped_gemm_wgmma_f16a_wt => run_a16_wt::<F16Act, STAGES, false, false>, maps
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_wgmma_f16a_wt`] with the fp16 tokens in the blocked K order of
    /// [`crate::fp4::blocked_k`], as the token pass writes them in its `paired` = 2 mode: what
    /// NVFP4 groups whose every `k` is a multiple of 64 run after the pass. Each thread
    /// dequantizes whole scale blocks of its weight rows (one 8-byte load and one scale a row
    /// and chunk; see [`weight_fragments_blocked`]). Its tiles' first weight copies go out
    /// before it waits for the token pass (see [`gemm_tile_tma_wt`]). Same parameters and
    /// launch.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_wgmma_f16a_wt`], with every problem's `k` a multiple of 64.
    nvfp4_grouped_gemm_wgmma_f16b_wt => run_a16_wt::<F16BlockedAct, STAGES, false, false>, maps; waits_itself
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_wgmma_f16b_wt`] with `STAGES_WT8` = 8 stages (172 KiB of shared
    /// memory, one CTA an SM, no 128-register cap): what the host launches after the token
    /// pass when the launch has at most one work unit an SM, so the shared memory and registers a
    /// second CTA would have used keep seven chunks in flight instead of three. Same
    /// parameters; launch with `SMEM_BYTES_A16_WT8` of dynamic shared memory.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_wgmma_f16b_wt`].
    nvfp4_grouped_gemm_wgmma_f16b_wt8 => run_a16_wt::<F16BlockedAct, STAGES_WT8, false, false>, maps; waits_itself
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_wgmma_f16b_wt`] for launches whose every problem with tiles has
    /// its weight scales in the plain layout at a 16-byte aligned address with `k` a multiple
    /// of 256: a row's scales of four chunks are then 16 aligned bytes, which the filling
    /// thread of the row copies once every four chunks (`cp.async` of 16 bytes, into one of
    /// `STAGES / 2` slots of 16 bytes a row after the scheduler's words) instead of 4 bytes
    /// every chunk: a quarter of the scale copies, and of the L2 requests a warp's copy makes
    /// (one per row: the rows are `k / 16` bytes apart). Same parameters; launch with
    /// `SMEM_BYTES_A16_WTSG` of dynamic shared memory.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_wgmma_f16b_wt`], with every problem's `sfb` plain, 16-byte
    /// aligned, and its `k` a multiple of 256.
    nvfp4_grouped_gemm_wgmma_f16b_wtsg => run_a16_wt::<F16BlockedAct, STAGES, true, false>, maps; waits_itself
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_wgmma_f16b_wt8`] with the weight scales as in
    /// [`nvfp4_grouped_gemm_wgmma_f16b_wtsg`]. Same parameters; launch with
    /// `SMEM_BYTES_A16_WT8SG` of dynamic shared memory.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_wgmma_f16b_wtsg`].
    nvfp4_grouped_gemm_wgmma_f16b_wt8sg => run_a16_wt::<F16BlockedAct, STAGES_WT8, true, false>, maps; waits_itself
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_wgmma_f16b_wt`] in clusters of two CTAs (the pair kernel, which
    /// the host chooses per launch, see `PairTiles`): the table's tiles are 256 weight rows
    /// x 128 tokens (`tile_start` counted so), cluster `c` takes unit `c` first, then
    /// `c + clusters, ..` or, with [`crate::problem::MODE_DYNAMIC`], the units its rank 0
    /// takes from the counter for both CTAs; its CTA of rank `r` computes weight rows
    /// `128 r ..` of each. Each CTA has the TMA bring token rows `64 r ..` of each chunk's
    /// token tile into both CTAs' stage (multicast; the token maps' boxes are 64 rows), so
    /// each token tile crosses L2 once per 256 weight rows instead of once per 128. A
    /// stage's empty barrier also counts 64 arrivals of the other CTA (the first warp of
    /// each of its warpgroups, once its wgmmas on the stage are done); the
    /// CTAs meet at a cluster barrier after the barriers' set-up, after each tile's epilogue
    /// (which stages through token stages the other CTA fills) and before exit. Tiles cut
    /// along K use one workspace per rank, and dynamic units (cut or not) a counter: rank
    /// 0's slots at `ws`, then [`crate::problem::PAIR_COUNTER_BYTES`] whose first word is
    /// the counter, then rank 1's slots. Launch with cluster dimension 2 and an even grid.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_wgmma_f16b_wt`], with the tiles, maps, launch and workspace as
    /// above.
    nvfp4_grouped_gemm_wgmma_f16b_wt2 => run_a16_wt::<F16BlockedAct, STAGES, false, true>, maps; waits_itself
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_wgmma_f16b_wt2`] with the weight scales four chunks at a time as
    /// in [`nvfp4_grouped_gemm_wgmma_f16b_wtsg`]. Launch with
    /// `SMEM_BYTES_A16_WTSG` of dynamic shared memory, cluster dimension 2.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_wgmma_f16b_wt2`] and [`nvfp4_grouped_gemm_wgmma_f16b_wtsg`].
    nvfp4_grouped_gemm_wgmma_f16b_wtsg2 => run_a16_wt::<F16BlockedAct, STAGES, true, true>, maps; waits_itself
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_wgmma_f16a_wt`] with bf16 activations.
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_wgmma_f16a_wt`].
    nvfp4_grouped_gemm_wgmma_bf16a_wt => run_a16_wt::<Bf16Act, STAGES, false, false>, maps
}

gemm_entry! {
    /// [`nvfp4_grouped_gemm_wgmma_f16a`] with bf16 activations (bf16 weights and wgmmas).
    ///
    /// # Safety
    /// As [`nvfp4_grouped_gemm_wgmma_f16a`].
    nvfp4_grouped_gemm_wgmma_bf16a => run_a16::<Bf16Act>, maps
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
    let smem = unsafe { dyn_smem_base() };
    unsafe {
        for_each_tile(
            table,
            num_problems,
            total_tiles,
            counts,
            mode,
            smem + TOK_F16 + 2 * TOK_BUF_BYTES,
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

/// The persistent loop of the 16-bit-activation entries: thread 0 initialises one
/// transaction barrier per stage before the first tile.
#[inline(always)]
unsafe fn run_a16<A: Act>(
    table: *const ProblemDesc,
    num_problems: u32,
    total_tiles: u32,
    counts: *const u32,
    mode: u32,
    split: Split,
    maps: u64,
) {
    let smem = unsafe { dyn_smem_base() };
    if thread::tid() == 0 {
        for s in 0..STAGES {
            unsafe { tma::mbar_init(smem + A16_BARS + s * 8, 1) };
        }
        unsafe { tma::fence_mbar_init() };
    }
    unsafe {
        thread::sync_cta();
        for_each_tile(
            table,
            num_problems,
            total_tiles,
            counts,
            mode,
            smem + A16_BARS + STAGES * 8,
            THREADS,
            TILE_N,
            TILE_M,
            split,
            &mut TilesTma::<A> {
                smem,
                table: table as u64,
                maps,
                phases: 0,
                kind: PhantomData,
            },
        );
    }
}

/// The 16-bit-activation kernels' tile work: where the table and the token maps are, and
/// the parity of each stage's barrier (bit `s`: the phase the next wait on stage `s` needs).
struct TilesTma<A> {
    smem: u32,
    table: u64,
    maps: u64,
    phases: u32,
    kind: PhantomData<A>,
}

impl<A: Act> TileFn for TilesTma<A> {
    #[inline(always)]
    unsafe fn tile(&mut self, tile: Tile) {
        let index = (tile.desc as u64 - self.table) / PROBLEM_DESC_BYTES as u64;
        let map = self.maps + index * TOKEN_MAP_BYTES;
        unsafe { gemm_tile_tma::<A>(self.smem, map, &mut self.phases, tile) }
    }
}

// The `_wt` kernels' shared memory with `s` stages: as the 16-bit kernels' (`s` token
// tiles, then `s` x the weights' FP4 and scales, then the "full" barriers), then one "empty"
// barrier per stage, then the scheduler's words.
const fn wt_w(s: u32) -> u32 {
    s * TOK16_STAGE_BYTES
}
const fn wt_full(s: u32) -> u32 {
    wt_w(s) + s * W_STAGE_BYTES
}
const fn wt_empty(s: u32) -> u32 {
    wt_full(s) + s * 8
}
/// The `_sg` entries' weight-scale slots (`s / 2` of `SCALE_SLOT_BYTES`), after the
/// scheduler's words.
const fn wt_slots(s: u32) -> u32 {
    wt_sched(s) + crate::tiling::SCHED_SMEM_BYTES
}
/// Where the `_sg` entries (`S` stages) keep absolute chunk `c`'s group of four scales:
/// slot `(c / 4) % (S / 2)`, 16 bytes a row.
#[inline(always)]
fn sg_slot_of<const S: u32>(smem: u32, c: u32) -> u32 {
    smem + wt_slots(S) + ((c / 4) % (S / 2)) * SCALE_SLOT_BYTES
}
const fn wt_sched(s: u32) -> u32 {
    wt_empty(s) + s * 8
}
const _: () = assert!(
    wt_w(STAGES) == A16_W
        && wt_full(STAGES) == A16_BARS
        && wt_sched(STAGES) + crate::tiling::SCHED_SMEM_BYTES == SMEM_BYTES_A16_WT
        && wt_sched(STAGES_WT8) + crate::tiling::SCHED_SMEM_BYTES == SMEM_BYTES_A16_WT8
        && STAGES.is_power_of_two()
        && STAGES_WT8.is_power_of_two()
        && STAGES_WT8 <= 16
);
// Slot `(c / 4) % (S / 2)` holds the group of four chunks from `c = 4 g`: within a tile it is
// refilled with chunk `c + 2 S`'s group at the earliest, whose fill waits until chunk `c + S`
// is released, after every chunk of the group (`S >= 4`); a tile's first fill (which may
// start a group anywhere) comes after the previous tile's epilogue barrier.
const _: () = assert!(
    wt_slots(STAGES) % 16 == 0
        && wt_slots(STAGES) + STAGES / 2 * SCALE_SLOT_BYTES == SMEM_BYTES_A16_WTSG
        && wt_slots(STAGES_WT8) + STAGES_WT8 / 2 * SCALE_SLOT_BYTES == SMEM_BYTES_A16_WT8SG
        && STAGES >= 4
);
/// Bytes the TMA brings into a stage of the `_wt` kernels: the token tile and the weights' FP4.
const WT_TX_BYTES: u32 = TOK16_STAGE_BYTES + TILE_N * ROW_BYTES;
/// What a `_wt` stage fill issues (see [`gemm_tile_tma_wt`]): the weights' FP4 and scales
/// (after the stage's empty barrier, counting the stage's bytes), the token tile.
const FILL_WEIGHTS: u32 = 1;
const FILL_TOKENS: u32 = 2;

/// The persistent loop of the `_wt` entries. Thread 0 initialises the barriers: stage `s`'s
/// full barrier completes after the `expect_tx` arrival of its filler's first thread (the
/// TMA bytes of the tokens and the weights' FP4) and one arrival per scale row (the filling
/// warpgroup's threads, after their copy lands; with `SG`, in a chunk that copies no scales,
/// its first thread's `TILE_N` arrivals at once); its empty barrier after one arrival per
/// thread (once the thread's wgmmas that read the stage are done), and with `P` (the pair
/// kernels) 64 more from the other CTA of the cluster, whose multicast writes this CTA's
/// token stages too. Every thread arrives once on every empty barrier at the start (with
/// `P` the other CTA's first warp of each warpgroup too), so the first fill of every stage
/// finds it released.
#[inline(always)]
unsafe fn run_a16_wt<A: Act, const S: u32, const SG: bool, const P: bool>(
    table: *const ProblemDesc,
    num_problems: u32,
    total_tiles: u32,
    counts: *const u32,
    mode: u32,
    split: Split,
    maps: u64,
) {
    let smem = unsafe { dyn_smem_base() };
    let tid = thread::tid();
    if tid == 0 {
        for s in 0..S {
            unsafe {
                tma::mbar_init(smem + wt_full(S) + s * 8, 1 + TILE_N);
                tma::mbar_init(
                    smem + wt_empty(S) + s * 8,
                    THREADS + if P { PAIR_REMOTE_ARRIVALS } else { 0 },
                );
            }
        }
        unsafe { tma::fence_mbar_init() };
    }
    // Pairs: the other CTA's barriers are initialised before anything arrives on them.
    if P {
        unsafe { cluster::sync() };
    } else {
        unsafe { thread::sync_cta() };
    }
    for s in 0..S {
        unsafe { tma::mbar_arrive(smem + wt_empty(S) + s * 8) };
        if P && pair_releases_remotely() {
            unsafe { cluster::arrive_remote(smem + wt_empty(S) + s * 8, cluster::rank() ^ 1) };
        }
    }
    // Pairs: each rank's own workspace for cut tiles (the units are the cluster's): rank
    // 0's slots, the dynamic units' counter (which only rank 0 reads, at the end of its
    // slots as for one CTA) in `PAIR_COUNTER_BYTES`, rank 1's slots. (A launch with
    // neither has no workspace, and neither rank reads `ws`.)
    let split = if P {
        let cut = total_tiles - split.dp_tiles.min(total_tiles);
        let slots = split_ws_bytes(cut, split.parts.max(1), THREADS);
        Split {
            ws: split.ws + cluster::rank() as u64 * (slots + PAIR_COUNTER_BYTES),
            ..split
        }
    } else {
        split
    };
    unsafe {
        for_each_tile(
            table,
            num_problems,
            total_tiles,
            counts,
            mode,
            smem + wt_sched(S),
            THREADS,
            // Pairs: the table's tiles are 256 rows (each CTA computes its half).
            if P { 2 * TILE_N } else { TILE_N },
            TILE_M,
            split,
            &mut TilesTmaWt::<A, S, SG, P> {
                smem,
                table: table as u64,
                maps,
                full: 0,
                empty: 0,
                waited: false,
                kind: PhantomData,
            },
        );
    }
    // Pairs: no CTA leaves while the other may still arrive on its barriers.
    if P {
        unsafe { cluster::sync() };
    }
}

/// The pair kernel's arrivals on each stage's empty barrier from the other CTA: the first
/// warp of each warpgroup.
const PAIR_REMOTE_ARRIVALS: u32 = 64;

/// Whether this thread also hands stages back to the other CTA of a pair (the first warp of
/// each warpgroup: the wgmma reads its `wait_group` waited for are the warpgroup's).
#[inline(always)]
fn pair_releases_remotely() -> bool {
    thread::tid_fresh() % 128 < 32
}

/// The `_wt` kernels' tile work: the barriers' parities (bit `s`: the phase the next wait on
/// stage `s` needs), `full` for every thread, `empty` for the stages the thread's warpgroup
/// fills (`s % 2` = warpgroup).
struct TilesTmaWt<A, const S: u32, const SG: bool, const P: bool> {
    smem: u32,
    table: u64,
    maps: u64,
    full: u32,
    empty: u32,
    /// Whether this thread has passed `griddepcontrol.wait` (the blocked-order kernels wait
    /// in their first tile's prologue; the others at their entry).
    waited: bool,
    kind: PhantomData<A>,
}

impl<A: Act, const S: u32, const SG: bool, const P: bool> TileFn for TilesTmaWt<A, S, SG, P> {
    const DYNAMIC: bool = true;
    const PAIR: bool = P;

    #[inline(always)]
    unsafe fn tile(&mut self, tile: Tile) {
        let index = (tile.desc as u64 - self.table) / PROBLEM_DESC_BYTES as u64;
        let map = self.maps + index * 2 * TOKEN_MAP_BYTES;
        unsafe {
            gemm_tile_tma_wt::<A, S, SG, P>(
                self.smem,
                map,
                &mut self.full,
                &mut self.empty,
                &mut self.waited,
                tile,
            )
        }
    }
}

/// One 128 x 128 tile with 16-bit tokens, weights by TMA ([`nvfp4_grouped_gemm_wgmma_f16a_wt`]).
///
/// As [`gemm_tile_tma`], but nothing is copied by every thread and there is no CTA barrier
/// per chunk. Filling stage `s` (warpgroup `s % 2`, so both carry the same share): wait for
/// its empty barrier; the warpgroup's first thread has the TMA bring the chunk's token tile
/// (map `map`) and the 128 weight rows' 32 FP4 bytes (map `map + 128`), counted on the full
/// barrier; its thread r copies weight row r's 4 scale bytes and arrives on the full barrier
/// when they land. Consuming chunk c: every thread waits for the full barrier before reading
/// the stage's weights; after the `wait_group` that retires chunk c's wgmmas, every thread
/// arrives on the empty barrier. Chunk c + S - 1 (`S` stages) goes into chunk c - 1's stage once
/// every thread retired it.
///
/// The blocked-order kernels' entries (`_f16b_wt`, `_f16b_wt8`: what runs after the token
/// pass) do not wait for the pass (`griddepcontrol.wait`) before they start: each tile's
/// prologue fills its first `S - 1` stages with weights (FP4 and scales: the caller's data,
/// not the pass's) first, then, the first time (`waited` false), every thread waits for the
/// pass, then the fillers bring those stages' token tiles. The first weights' DRAM latency
/// then overlaps the pass (H100 run 156: G2 N3072 K4096 about 1 us faster). The other
/// entries wait first thing and fill each stage whole.
#[inline(always)]
unsafe fn gemm_tile_tma_wt<A: Act, const S: u32, const SG: bool, const P: bool>(
    smem: u32,
    map: u64,
    full: &mut u32,
    empty: &mut u32,
    waited: &mut bool,
    tile: Tile,
) {
    let Tile {
        desc,
        m_end,
        n0,
        m0,
        span,
    } = tile;
    let d = unsafe { &*desc };
    // Pairs: this CTA's half of the 256-row tile.
    let n0 = if P { n0 + TILE_N * cluster::rank() } else { n0 };
    let tid = thread::tid();
    let c0 = span.c0;
    let chunks = span.c1 - c0;
    let weights = Operand::weights(d);
    let m_rem = m_end - m0;
    let scales = ScaleRow::new(&weights, n0 + tid % TILE_N);
    let wmap = map + TOKEN_MAP_BYTES;
    // This warp's warpgroup, a warp-uniform value read once a tile (the fills below test it
    // every chunk).
    let wg = unsafe { warp::uniform_warp_index() } / (TILE_N / 32);

    // Fills `stage` with tile chunk `chunk`: warpgroup `stage % 2` does (its thread r copies
    // scale row r, its first thread has the TMA bring the rest), the other nothing, so both
    // warpgroups carry the same share of the copies. (The closures read the shared-memory
    // base afresh: addresses kept live across the loop would not fit in the registers.)
    //
    // `what` says which copies: `FILL_WEIGHTS` (wait for the stage's empty barrier, count
    // the whole stage's TMA bytes, the weights' FP4 and scales), `FILL_TOKENS` (the token
    // tile), or both. The blocked-order kernels' prologues issue the weights of their first
    // stages before the tokens, and the first one waits for the token pass in between, so
    // that the weights' latency overlaps the pass when the launch is its dependent.
    let issue = |chunk: u32, stage: u32, empty: &mut u32, what: u32| {
        let tid = thread::tid_fresh() % TILE_N;
        let smem = unsafe { dyn_smem_base() };
        // Tested on a warp-uniform value so the branch does not diverge for ptxas (a
        // divergent path around the waits serialised the wgmmas).
        if wg == stage % 2 {
            let bar = smem + wt_full(S) + stage * 8;
            let w = smem + wt_w(S) + stage * W_STAGE_BYTES;
            let chunk = c0 + chunk;
            if what & FILL_WEIGHTS != 0 {
                unsafe {
                    tma::mbar_wait(smem + wt_empty(S) + stage * 8, (*empty >> stage) & 1);
                }
                *empty ^= 1 << stage;
            }
            unsafe {
                if tid == 0 {
                    if what & FILL_WEIGHTS != 0 {
                        tma::mbar_arrive_expect_tx(bar, WT_TX_BYTES);
                    }
                    if what & FILL_TOKENS != 0 {
                        if P {
                            // Token rows 64 r .. of the tile into both CTAs' stage.
                            let half = cluster::rank() * (TILE_M / 2);
                            cluster::load_2d_multicast(
                                smem + stage * TOK16_STAGE_BYTES
                                    + half * (TOK16_STAGE_BYTES / TILE_M),
                                map,
                                chunk * CHUNK_K,
                                m0 + half,
                                bar,
                                0b11,
                            );
                        } else {
                            tma::load_2d(
                                smem + stage * TOK16_STAGE_BYTES,
                                map,
                                chunk * CHUNK_K,
                                m0,
                                bar,
                            );
                        }
                    }
                    if what & FILL_WEIGHTS != 0 {
                        tma::load_2d(w, wmap, chunk * ROW_BYTES, n0, bar);
                    }
                }
                if what & FILL_WEIGHTS != 0 {
                    if SG {
                        // The row's 16 bytes of the chunk's group of four at its first chunk
                        // (or the span's first), then an arrival once this thread's copies
                        // have landed. The group's other chunks copy no scales: the first
                        // thread arrives for all `TILE_N` rows at once (the consumers read
                        // the group's slot after the first chunk's full barrier).
                        if chunk % 4 == 0 || chunk == c0 {
                            scales.issue_group(chunk, sg_slot_of::<S>(smem, chunk) + tid * 16);
                            tma::cp_async_mbar_arrive(bar);
                        } else if tid == 0 {
                            tma::mbar_arrive_n(bar, TILE_N);
                        }
                    } else {
                        scales.issue_then_arrive(chunk, w + A16_W_SF + tid * ROW_SCALES, bar);
                    }
                }
            }
        }
    };
    // Waits until chunk `chunk`'s stage is full (every thread).
    let wait_full = |chunk: u32, full: &mut u32| {
        let smem = unsafe { dyn_smem_base() };
        let stage = chunk % S;
        unsafe { tma::mbar_wait(smem + wt_full(S) + stage * 8, (*full >> stage) & 1) };
        *full ^= 1 << stage;
    };
    // Every thread: chunk `chunk`'s stage is no longer read by it (with pairs the first
    // warp of each warpgroup tells the other CTA too).
    let release = |chunk: u32| {
        let smem = unsafe { dyn_smem_base() };
        let bar = smem + wt_empty(S) + (chunk % S) * 8;
        unsafe { tma::mbar_arrive(bar) };
        // Pairs: the other CTA's multicast writes this CTA's stage too.
        if P && pair_releases_remotely() {
            unsafe { cluster::arrive_remote(bar, cluster::rank() ^ 1) };
        }
    };

    let mut acc = [0f32; 64];
    if A::BLOCKED {
        // The blocked-order kernels run after the token pass: every tile's prologue issues
        // its weights first, then (the first time: after waiting for the pass, which their
        // entries leave to this prologue) its token tiles. One prologue for all tiles, which
        // the 4-stage kernel's 128 registers hold.
        for s in 0..S - 1 {
            if s < chunks {
                issue(s, s, empty, FILL_WEIGHTS);
            }
        }
        if !*waited {
            unsafe { grid::dependency_wait() };
            *waited = true;
        }
        for s in 0..S - 1 {
            if s < chunks {
                issue(s, s, empty, FILL_TOKENS);
            }
        }
    } else {
        for s in 0..S - 1 {
            if s < chunks {
                issue(s, s, empty, FILL_WEIGHTS | FILL_TOKENS);
            }
        }
    }
    let subtiles = m_rem.min(TILE_M).div_ceil(32);
    // The blocked order in the one-CTA-an-SM kernels (more stages than `STAGES`, up to 200
    // registers): this thread's FP4 offset in a weight stage (rows `wrow`, `wrow + 8`, block
    // `t`) and its first scale's (in the stage, or with `SG` in its group's slot), kept a
    // tile instead of derived from `%tid` every chunk: SASS instructions a chunk 203 -> 195
    // in `_f16b_wt8sg`, 224 -> 210 in `_f16b_wt8`; the G2 shapes 0.6-1.2% faster (H200 runs
    // 227-228). The 4-stage kernels derive them every chunk (`derived`, their PTX
    // unchanged): one more live register spilled there.
    let keep = A::BLOCKED && S > STAGES;
    let kept = if keep {
        let (wrow, t) = quad_place(thread::tid_fresh());
        (
            wrow * ROW_BYTES + t * 8,
            if SG {
                wrow * 16 + t
            } else {
                A16_W_SF + wrow * ROW_SCALES + t
            },
        )
    } else {
        (0, 0)
    };
    let derived = |chunk: u32| {
        let w = smem + wt_w(S) + (chunk % S) * W_STAGE_BYTES;
        let (wrow, t) = quad_place(thread::tid_fresh());
        if A::BLOCKED {
            // With `SG`: row `wrow`'s scales of the chunk in its group's slot.
            let sg = if SG {
                let c = c0 + chunk;
                sg_slot_of::<S>(smem, c) + wrow * 16 + (c % 4) * ROW_SCALES
            } else {
                0
            };
            unsafe { weight_fragments_blocked::<A, SG>(w, wrow, t, sg) }
        } else {
            unsafe { weight_fragments::<A>(w, wrow, fp4_byte_pair_selector(t)) }
        }
    };
    let weights_of = |chunk: u32| {
        if !keep {
            return derived(chunk);
        }
        let w = smem + wt_w(S) + (chunk % S) * W_STAGE_BYTES;
        let (frag_off, sf_off) = kept;
        let sf = if SG {
            let c = c0 + chunk;
            sg_slot_of::<S>(smem, c) + (c % 4) * ROW_SCALES + sf_off
        } else {
            w + sf_off
        };
        unsafe { weight_fragments_blocked_at::<A, SG>(w + frag_off, sf) }
    };

    // A register sets and the loop unrolled by two as in `gemm_tile_tma`.
    let mut a0 = [[0u32; 4]; 4];
    let mut a1 = [[0u32; 4]; 4];
    macro_rules! step {
        ($chunk:expr, $cur:expr, $retire:expr) => {{
            let chunk: u32 = $chunk;
            let tok = smem + (chunk % S) * TOK16_STAGE_BYTES;
            unsafe {
                mma_chunk::<A>(&mut acc, $cur, subtiles, |s| {
                    wgmma::desc_sw128(tok + s * 32, 1024)
                });
                // Chunk c - 1's wgmmas (registers `$retire`) are done: this warp is through
                // with its stage.
                wgmma::wait1($retire);
            }
            if chunk > 0 {
                release(chunk - 1);
            }
            let ahead = chunk + S - 1;
            if ahead < chunks {
                issue(ahead, ahead % S, empty, FILL_WEIGHTS | FILL_TOKENS);
            }
        }};
    }
    let mut chunk = 0;
    while chunk < chunks {
        if chunk == 0 {
            wait_full(0, full);
            a0 = weights_of(0);
        }
        step!(chunk, &a0, &a1);
        if chunk + 1 == chunks {
            break;
        }
        wait_full(chunk + 1, full);
        a1 = weights_of(chunk + 1);
        step!(chunk + 1, &a1, &a0);
        if chunk + 2 < chunks {
            wait_full(chunk + 2, full);
            a0 = weights_of(chunk + 2);
        }
        chunk += 2;
    }
    unsafe {
        wgmma::wait0(&a0);
        wgmma::wait_all(&a1, &mut acc);
    }
    if chunks > 0 {
        release(chunks - 1);
    }
    // Dynamic units: the CTA's next unit, taken now so that the fetch's latency overlaps
    // the epilogue (whose first barrier, in `combine`, publishes it; pairs: the tile's
    // closing cluster barrier, for the other CTA).
    unsafe { dynamic_fetch::<P>(span.rec) };
    let (wrow, t) = quad_place(thread::tid_fresh());
    // The token ring's first two stages hold the staged tile: every chunk's wgmmas are done
    // (`wait_all`) and no fill of this tile is left in flight.
    unsafe {
        finish_tile::<A>(
            acc,
            desc,
            n0,
            m0,
            m_rem,
            wrow,
            t,
            true,
            &span,
            Some(smem),
            if P { TILE_N * cluster::rank() } else { 0 },
        )
    };
    // Pairs: the other CTA's next fills (multicast into this CTA's token stages, which the
    // staged epilogue used) wait until both are through their epilogues.
    if P {
        unsafe { cluster::sync() };
    }
}

/// One 128 x 128 tile with NVFP4 tokens (`A` = [`Fp4Act`]): tokens and weights come through
/// the cp.async stages; each chunk's tokens (into the fp16 token tile) and weights (into the
/// next A fragments) are dequantized while the previous chunk's wgmmas run.
#[inline(always)]
unsafe fn gemm_tile<A: Act>(smem: u32, tile: Tile) {
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
    let warp = tid / 32; // 0..8; warpgroup = warp / 4
    let g = lane / 4;
    let t = lane % 4;
    // Chunks are counted from the span's first; the copies take the absolute chunk.
    let c0 = span.c0;
    let chunks = span.c1 - c0;
    let weights = Operand::weights(d);
    let tokens = Operand::tokens(d, m_end);
    let m_rem = m_end - m0;

    // Copies per stage: 128 weight rows + 128 token rows, 4 units of 8 bytes each: 4 per
    // thread; scales: one row per thread (threads 0..127 weights, 128..255 tokens).
    let (unit, row_q) = (tid % 4, tid / 4); // row_q < 64
    let w_rows = Fp4Rows::<2>::new(&weights, n0, row_q, 64, unit);
    let t_rows = Fp4Rows::<2>::new(&tokens, m0, row_q, 64, unit);
    let scales = if tid < TILE_N {
        ScaleRow::new(&weights, n0 + tid)
    } else {
        ScaleRow::new(&tokens, m0 + tid - TILE_N)
    };
    let issue = |chunk: u32, stage: u32| {
        let base = smem + stage * STAGE_BYTES;
        let tid = thread::tid_fresh();
        let row_q = tid / 4;
        let chunk = c0 + chunk;
        unsafe {
            w_rows.issue(chunk, base + W_RAW + row_q * ROW_BYTES, 64 * ROW_BYTES);
            t_rows.issue(chunk, base + T_RAW + row_q * ROW_BYTES, 64 * ROW_BYTES);
            // W_SF and T_SF are adjacent: thread tid's scale row is at W_SF + tid * 4.
            scales.issue(chunk, base + W_SF + tid * ROW_SCALES);
        }
    };

    let mut acc = [0f32; 64];
    for s in 0..STAGES - 1 {
        if s < chunks {
            issue(s, s);
        }
        unsafe { copy::commit() };
    }

    // This thread's weight rows: warpgroup rows 16 * (warp % 4) + g (+ 8).
    let wrow = (warp / 4) * 64 + (warp % 4) * 16 + g;
    let subtiles = m_rem.min(TILE_M).div_ceil(32);

    // Weights: rows wrow and wrow + 8, scale block t, both halves of the block.
    let weights_of = |stage: u32| {
        let lo_raw = unsafe { shared::ld_v2(stage + W_RAW + wrow * ROW_BYTES + t * 8) };
        let hi_raw = unsafe { shared::ld_v2(stage + W_RAW + (wrow + 8) * ROW_BYTES + t * 8) };
        let s_lo = A::scales4(unsafe { shared::ld_u8(stage + W_SF + wrow * ROW_SCALES + t) })[0];
        let s_hi =
            A::scales4(unsafe { shared::ld_u8(stage + W_SF + (wrow + 8) * ROW_SCALES + t) })[0];
        let mut a = [[0u32; 4]; 4]; // [k-step][reg]
        unroll!(h in [0, 1] {
            let [s0, s1] = a_fragments_for::<A>(lo_raw[h], hi_raw[h], s_lo, s_hi);
            a[2 * h] = s0;
            a[2 * h + 1] = s1;
        });
        a
    };

    // Prologue: chunk 0's tokens into token buffer 0, its weights into fragments.
    unsafe {
        copy::wait::<{ STAGES - 2 }>();
        thread::sync_cta();
        dequant_tokens(smem, smem + TOK_F16, tid);
    }
    let mut a = weights_of(smem);

    // Per chunk c, one barrier: the MMAs of chunk c run asynchronously while this warpgroup
    // dequantizes chunk c + 1's tokens into the other buffer and its weights, then waits.
    for chunk in 0..chunks {
        unsafe {
            // Chunk c + 1 has landed (groups are committed for every chunk, empty or not).
            copy::wait::<{ STAGES - 3 }>();
            // Token buffer c % 2 is written; buffer (c + 1) % 2 and stage (c - 1) % STAGES
            // are no longer read by anyone.
            thread::sync_cta();
        }
        let ahead = chunk + STAGES - 1;
        if ahead < chunks {
            issue(ahead, ahead % STAGES);
        }
        unsafe { copy::commit() };
        let tok = smem + TOK_F16 + (chunk % 2) * TOK_BUF_BYTES;
        unsafe {
            mma_chunk::<A>(&mut acc, &a, subtiles, |s| {
                wgmma::desc_no_swizzle(tok + s * 256, 128, TOK_GROUP_BYTES)
            })
        };
        // While they run: chunk c + 1's tokens into the other buffer and its weights into
        // the next fragments.
        let next_a = if chunk + 1 < chunks {
            let next = smem + ((chunk + 1) % STAGES) * STAGE_BYTES;
            let buf = smem + TOK_F16 + ((chunk + 1) % 2) * TOK_BUF_BYTES;
            unsafe { dequant_tokens(next, buf, tid) };
            weights_of(next)
        } else {
            [[0u32; 4]; 4]
        };
        unsafe { wgmma::wait_all(&a, &mut acc) };
        a = next_a;
    }
    unsafe { finish_tile::<A>(acc, desc, n0, m0, m_rem, wrow, t, false, &span, None, 0) };
}

/// One 128 x 128 tile with 16-bit tokens (`A` = [`F16Act`] or [`Bf16Act`]).
///
/// Thread 0 has the TMA copy each chunk's 128 token rows x 64 values (16 KiB) from the
/// problem's tensor map `map` straight into the stage's token tile, in the 128-byte swizzle
/// layout wgmma reads, completing on the stage's barrier; rows past the map (past the
/// buffer) and values past K arrive as zeros. Token rows from `m_end` to the end of the map
/// are real rows of `a` (another problem's, in the contiguous MoE layout): each only feeds
/// its own output column, which the epilogue does not store. The weights come through
/// cp.async as in [`gemm_tile`], in the same stages, and are dequantized in natural K order
/// (what the TMA's token tile has): for k-step `s` thread `t` of a quad takes byte `t` of
/// FP4 words `2s` and `2s + 1` of its rows (values `2t, 2t + 1` of the step's two 8-value
/// units) under scale block `s`. Chunk c + 1's weights are dequantized while chunk c's
/// wgmmas run, and chunk c + 1's wgmmas are issued before chunk c's are waited for
/// (`wgmma.wait_group 1`, two sets of A registers), so the tensor cores are not left idle
/// between chunks. `phases` carries each stage barrier's parity from tile to tile.
#[inline(always)]
unsafe fn gemm_tile_tma<A: Act>(smem: u32, map: u64, phases: &mut u32, tile: Tile) {
    let Tile {
        desc,
        m_end,
        n0,
        m0,
        span,
    } = tile;
    let d = unsafe { &*desc };
    let tid = thread::tid();
    // Chunks are counted from the span's first; the copies take the absolute chunk.
    let c0 = span.c0;
    let chunks = span.c1 - c0;
    let weights = Operand::weights(d);
    let m_rem = m_end - m0;

    let (unit, row_q) = (tid % 4, tid / 4);
    let w_rows = Fp4Rows::<2>::new(&weights, n0, row_q, 64, unit);
    let scales = ScaleRow::new(&weights, n0 + tid % TILE_N);
    let issue = |chunk: u32, stage: u32| {
        let base = smem + A16_W + stage * W_STAGE_BYTES;
        let tid = thread::tid_fresh();
        let row_q = tid / 4;
        let chunk = c0 + chunk;
        unsafe {
            w_rows.issue(chunk, base + row_q * ROW_BYTES, 64 * ROW_BYTES);
            if tid < TILE_N {
                scales.issue(chunk, base + A16_W_SF + tid * ROW_SCALES);
            }
            if tid == 0 {
                let bar = smem + A16_BARS + stage * 8;
                tma::mbar_arrive_expect_tx(bar, TOK16_STAGE_BYTES);
                tma::load_2d(
                    smem + stage * TOK16_STAGE_BYTES,
                    map,
                    chunk * CHUNK_K,
                    m0,
                    bar,
                );
            }
        }
    };

    let mut acc = [0f32; 64];
    for s in 0..STAGES - 1 {
        if s < chunks {
            issue(s, s);
        }
        unsafe { copy::commit() };
    }
    let subtiles = m_rem.min(TILE_M).div_ceil(32);
    // The thread's rows and quad position are recomputed at each use (a read of %tid.x and
    // a few integer instructions a chunk): the loop holds two sets of A registers and the
    // kernel has 128 registers.
    let weights_of = |chunk: u32| {
        let w = smem + A16_W + (chunk % STAGES) * W_STAGE_BYTES;
        let (wrow, t) = quad_place(thread::tid_fresh());
        unsafe { weight_fragments::<A>(w, wrow, fp4_byte_pair_selector(t)) }
    };

    // Prologue: chunk 0's weights.
    unsafe {
        copy::wait::<{ STAGES - 2 }>();
        thread::sync_cta();
    }
    // Two sets of A registers, `a0` for even chunks and `a1` for odd ones: chunk c's wgmmas
    // read theirs until the wait after chunk c + 1's issue, so chunk c + 1's fragments must
    // be in the other set. The loop is unrolled by two so that each set keeps its registers
    // (a loop-carried swap would let the compiler reuse the in-flight set's).
    let mut a0 = [[0u32; 4]; 4];
    let mut a1 = [[0u32; 4]; 4];

    // Per chunk c: issue its wgmmas, then wait for chunk c - 1's only, so the tensor cores
    // always have a chunk queued while this warpgroup publishes the next copies and
    // dequantizes chunk c + 1's weights into the other set.
    let mut step =
        |chunk: u32, acc: &mut [f32; 64], cur: &[[u32; 4]; 4], retire: &[[u32; 4]; 4]| {
            let stage = chunk % STAGES;
            unsafe { tma::mbar_wait(smem + A16_BARS + stage * 8, (*phases >> stage) & 1) };
            *phases ^= 1 << stage;
            let tok = smem + stage * TOK16_STAGE_BYTES;
            // k-step s starts 32 s bytes into the swizzled rows.
            unsafe {
                mma_chunk::<A>(acc, cur, subtiles, |s| {
                    wgmma::desc_sw128(tok + s * 32, 1024)
                });
                // Chunk c - 1's wgmmas (registers `retire`) are done, this warpgroup's ...
                wgmma::wait1(retire);
                // ... and this thread's copies of chunk c + 1 have landed; the barrier publishes
                // everyone's, and after it nobody reads stage (c - 1) % STAGES any more.
                copy::wait::<{ STAGES - 3 }>();
                thread::sync_cta();
            }
            let ahead = chunk + STAGES - 1;
            if ahead < chunks {
                issue(ahead, ahead % STAGES);
            }
            unsafe { copy::commit() };
        };
    let mut chunk = 0;
    while chunk < chunks {
        if chunk == 0 {
            // Inside the loop, so that the compiler builds it in the loop's registers.
            a0 = weights_of(0);
        }
        step(chunk, &mut acc, &a0, &a1);
        if chunk + 1 == chunks {
            break;
        }
        a1 = weights_of(chunk + 1);
        step(chunk + 1, &mut acc, &a1, &a0);
        if chunk + 2 < chunks {
            a0 = weights_of(chunk + 2);
        }
        chunk += 2;
    }
    unsafe {
        wgmma::wait0(&a0);
        wgmma::wait_all(&a1, &mut acc);
    }
    let (wrow, t) = quad_place(thread::tid_fresh());
    unsafe { finish_tile::<A>(acc, desc, n0, m0, m_rem, wrow, t, true, &span, None, 0) };
}

/// Thread `tid`'s first weight row in the CTA tile (rows `wrow` and `wrow + 8` of its
/// warp's 16) and its place `t` in its MMA quad: `(16 * warp + lane / 4, lane % 4)`.
#[inline(always)]
fn quad_place(tid: u32) -> (u32, u32) {
    ((tid / 32) * 16 + (tid % 32) / 4, tid % 4)
}

/// This thread's A fragments of one chunk in natural K order, from the weight stage at `w`:
/// rows `wrow` and `wrow + 8`, for k-step `s` values `16 s + 2t, 2t + 1` (byte `t` of FP4
/// word `2s`) and `16 s + 8 + 2t, 2t + 1` (byte `t` of word `2s + 1`) under scale block `s`.
/// `sel` = [`fp4_byte_pair_selector`]`(t)`.
#[inline(always)]
unsafe fn weight_fragments<A: Act>(w: u32, wrow: u32, sel: u32) -> [[u32; 4]; 4] {
    let (lo, hi) = (w + wrow * ROW_BYTES, w + (wrow + 8) * ROW_BYTES);
    let (s_lo, s_hi) = unsafe {
        (
            A::scales4(shared::ld_u32(w + A16_W_SF + wrow * ROW_SCALES)),
            A::scales4(shared::ld_u32(w + A16_W_SF + (wrow + 8) * ROW_SCALES)),
        )
    };
    // Byte t of words 2s and 2s + 1 of a row, times the row's scale: the fragments of
    // values 16 s + 2t, 2t + 1 (registers 0 / 1) and 16 s + 8 + 2t, 2t + 1 (2 / 3).
    let pairs = |w0: u32, w1: u32, s: u32| A::fp4_even(fp4_byte_pair(w0, w1, sel), s);
    let mut a = [[0u32; 4]; 4];
    // Half h: FP4 words 4h .. 4h + 3 of each row, k-steps 2h and 2h + 1.
    unroll!(h in [0, 1] {
        let (l, r) = unsafe { (shared::ld_v4(lo + 16 * h as u32), shared::ld_v4(hi + 16 * h as u32)) };
        unroll!(i in [0, 1] {
            let s = 2 * h + i;
            let [l0, l1] = pairs(l[2 * i], l[2 * i + 1], s_lo[s]);
            let [r0, r1] = pairs(r[2 * i], r[2 * i + 1], s_hi[s]);
            a[s] = [l0, r0, l1, r1];
        });
    });
    a
}

/// This thread's A fragments of one chunk in the blocked K order ([`crate::fp4::blocked_k`]),
/// from the weight stage at `w`: rows `wrow` and `wrow + 8`, scale block `t` (its quad
/// place) of each: one 8-byte load and one scale a row (the rows' 4 scale bytes of the chunk
/// in the stage, or with `SG` at `sg` and `sg + 128` in its group's slot). Word `i` of FP4
/// word `h` of the block (values `8 h + i`, `8 h + i + 4`) is the register pair `i % 2` of
/// k-step `2 h + i / 2`.
#[inline(always)]
unsafe fn weight_fragments_blocked<A: Act, const SG: bool>(
    w: u32,
    wrow: u32,
    t: u32,
    sg: u32,
) -> [[u32; 4]; 4] {
    let (lo, hi) = (
        w + wrow * ROW_BYTES + t * 8,
        w + (wrow + 8) * ROW_BYTES + t * 8,
    );
    let (l, r) = unsafe { (shared::ld_v2(lo), shared::ld_v2(hi)) };
    let s = unsafe {
        if SG {
            A::scale2(shared::ld_u8(sg + t), shared::ld_u8(sg + 8 * 16 + t))
        } else {
            A::scale2(
                shared::ld_u8(w + A16_W_SF + wrow * ROW_SCALES + t),
                shared::ld_u8(w + A16_W_SF + (wrow + 8) * ROW_SCALES + t),
            )
        }
    };
    blocked_fragments::<A>(l, r, s)
}

/// The A fragments of one chunk in the blocked K order from rows `wrow`'s and `wrow + 8`'s
/// 8 FP4 bytes of the thread's scale block (`l`, `r`) and their scales `s` (see
/// [`weight_fragments_blocked`]).
#[inline(always)]
fn blocked_fragments<A: Act>(l: [u32; 2], r: [u32; 2], s: [u32; 2]) -> [[u32; 4]; 4] {
    let mut a = [[0u32; 4]; 4];
    unroll!(h in [0, 1] {
        let lw = A::fp4x8(l[h], s[0]);
        let rw = A::fp4x8(r[h], s[1]);
        a[2 * h] = [lw[0], rw[0], lw[1], rw[1]];
        a[2 * h + 1] = [lw[2], rw[2], lw[3], rw[3]];
    });
    a
}

/// [`weight_fragments_blocked`] from precomputed addresses: `frag` = the stage plus the
/// thread's FP4 offset (rows `wrow`, `wrow + 8` are `frag` and `frag + 8 * ROW_BYTES`), `sf`
/// its row `wrow`'s scale byte (row `wrow + 8`'s at `sf + 128` with `SG`, else `sf + 8 *
/// ROW_SCALES`).
#[inline(always)]
unsafe fn weight_fragments_blocked_at<A: Act, const SG: bool>(frag: u32, sf: u32) -> [[u32; 4]; 4] {
    let (l, r) = unsafe { (shared::ld_v2(frag), shared::ld_v2(frag + 8 * ROW_BYTES)) };
    let s = unsafe {
        A::scale2(
            shared::ld_u8(sf),
            shared::ld_u8(sf + if SG { 8 * 16 } else { 8 * ROW_SCALES }),
        )
    };
    blocked_fragments::<A>(l, r, s)
}

/// The end of a tile call: a cut tile's part hands its sums to [`combine`], and only the
/// CTA that completes the tile stores it ([`store_tile`], with the whole K sum); a whole
/// tile is stored at once. Subtiles past the tile's tokens hold zeros and are skipped.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn finish_tile<A: Act>(
    acc: [f32; 64],
    desc: *const ProblemDesc,
    n0: u32,
    m0: u32,
    m_rem: u32,
    wrow: u32,
    t: u32,
    a16: bool,
    span: &Span,
    staging: Option<u32>,
    n_shift: u32,
) {
    let subtiles = m_rem.min(TILE_M).div_ceil(32) as usize;
    // SAFETY: [f32; 64] and [[f32; 4]; 16] are the same 64 floats; quad i is subtile i / 4.
    let mut quads: [[f32; 4]; 16] = unsafe { core::mem::transmute(acc) };
    if unsafe { combine(&mut quads, |i| i / 4 < subtiles, &span, THREADS) } {
        let acc: [f32; 64] = unsafe { core::mem::transmute(quads) };
        match staging {
            // The `_wt` kernels: the tile's place from the part record (past `combine`'s
            // barrier), not kept in registers through the K loop.
            Some(stage) => unsafe {
                let (n0, m0, m_end) = tile_place(span.rec);
                store_tile_staged::<A>(&acc, desc, n0 + n_shift, m0, m_end - m0, stage)
            },
            None => unsafe { store_tile::<A>(&acc, desc, n0, m0, m_rem, wrow, t, a16) },
        }
    }
}

/// Bytes of one token's row of the staged output tile (128 fp16 or bf16 values).
const STAGED_ROW_BYTES: u32 = 2 * TILE_N;

/// [`store_tile`] through shared memory (the `_wt` kernels, 16-bit activations): each warp
/// writes its accumulators, scaled and rounded, transposed into a token-major tile at `stage`
/// (`stmatrix .trans`, 8 x 8 blocks: one token's 8 weight rows in 16 bytes), then the CTA
/// copies the tile's rows out in 16-byte pieces, 16 threads a token row, so that the
/// stores to `c` are whole 32-byte sectors instead of 2-byte scatters. Row `m` of the staged
/// tile is at `stage + 256 m`; its 16-byte piece `p` (weight rows `8 p ..`) at piece `p ^ (m %
/// 8)`, so neither side conflicts on banks. Pieces that pass `n` or a `c` row that is not
/// 16-byte aligned are stored value by value. Needs 32 KiB at `stage` that no copy is
/// writing and no wgmma reading; the caller's barrier in [`combine`] has passed every
/// warpgroup's last `wait_group`. Ends with the async-proxy fence and a barrier, so the next
/// tile's TMA copies may overwrite the staging memory.
#[inline(always)]
unsafe fn store_tile_staged<A: Act>(
    acc: &[f32; 64],
    desc: *const ProblemDesc,
    n0: u32,
    m0: u32,
    m_rem: u32,
    stage: u32,
) {
    // The descriptor's line is usually still in L1 from the tile's start: read through the
    // non-coherent path (a volatile read would go to L2 and stall the epilogue's start).
    let (alpha, c, ldc, n, flags) = unsafe {
        (
            f32::from_bits(global::ld_nc_u32(&raw const (*desc).alpha as u64)),
            global::ld_nc_u64(&raw const (*desc).c as u64) as *mut u16,
            global::ld_nc_u64(&raw const (*desc).ldc as u64),
            global::ld_nc_u32(&raw const (*desc).n as u64),
            global::ld_nc_u32(&raw const (*desc).flags as u64),
        )
    };
    let bf16_out = flags & FLAG_OUT_BF16 != 0;
    let factor = alpha * A::SHIFT;
    let tid = thread::tid_fresh();
    let (lane, warp) = (tid % 32, tid / 32);
    let rows = m_rem.min(TILE_M);
    let subtiles = rows.div_ceil(32);
    // Lane 8 q + r addresses stored row r (token 8 j + r) of matrix q: q / 2 picks the n8
    // block of the pair, q % 2 the warp's upper 8 weight rows (piece 2 warp + q % 2).
    let (q, r) = (lane / 8, lane % 8);
    let piece = 2 * warp + q % 2;
    let at = stage + (8 * (q / 2) + r) * STAGED_ROW_BYTES + ((piece ^ r) * 16);
    let pack = |lo: f32, hi: f32| {
        if bf16_out {
            half::pack_bf16x2(lo * factor, hi * factor)
        } else {
            half::pack_f16x2(lo * factor, hi * factor)
        }
    };
    unsafe { wgmma::fence_proxy_async_shared() };
    unroll!(i in [0, 1, 2, 3] {
        if (i as u32) < subtiles {
            unroll!(jp in [0, 1] {
                // n8 blocks j = 2 jp and 2 jp + 1 of subtile i: accumulators 16 i + 4 j ..,
                // (row g, tokens 2t, 2t + 1) then (row g + 8, the same tokens).
                let a = 16 * i + 8 * jp;
                let regs = [
                    pack(acc[a], acc[a + 1]),
                    pack(acc[a + 2], acc[a + 3]),
                    pack(acc[a + 4], acc[a + 5]),
                    pack(acc[a + 6], acc[a + 7]),
                ];
                let token0 = 32 * i as u32 + 16 * jp as u32;
                unsafe { shared::stmatrix_x4_trans(at + token0 * STAGED_ROW_BYTES, regs) };
            });
        }
    });
    unsafe { thread::sync_cta() };
    // Thread tid copies piece tid % 16 of tokens tid / 16, + 16, ...
    let p = tid % 16;
    let col = n0 + 8 * p;
    let whole = col + 8 <= n && (c as u64 | ldc * 2) % 16 == 0;
    unroll!(k in [0, 1, 2, 3, 4, 5, 6, 7] {
        let m = tid / 16 + 16 * k as u32;
        if m < rows && col < n {
            let v = unsafe { shared::ld_v4(stage + m * STAGED_ROW_BYTES + ((p ^ (m % 8)) * 16)) };
            let idx = (m0 + m) as u64 * ldc + col as u64;
            if whole {
                unsafe { global::st_v4(c.add(idx as usize) as u64, v) };
            } else {
                unroll!(e in [0, 1, 2, 3, 4, 5, 6, 7] {
                    if col + (e as u32) < n {
                        let x = (v[e / 2] >> (16 * (e % 2))) as u16;
                        unsafe { c.add(idx as usize + e).write(x) };
                    }
                });
            }
        }
    });
    unsafe {
        // These reads of the staging memory come before the next tile's TMA writes to it.
        wgmma::fence_proxy_async_shared();
        thread::sync_cta();
    }
}

/// The epilogue of a tile: `alpha` times the accumulators (times `A::SHIFT`) rounded to the
/// output type, for the tile's weight rows below `n` and tokens below `m_rem`. Subtile `i`,
/// n8 block `j`: `acc[16 i + 4 j ..]` = (rows `wrow`, `wrow + 8`) x (tokens `2t`, `2t + 1`).
/// `a16`: the kernel has 16-bit activations (only those may write bf16). Ends with a
/// barrier, so the next tile's copies cannot overwrite anything this one reads.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn store_tile<A: Act>(
    acc: &[f32; 64],
    desc: *const ProblemDesc,
    n0: u32,
    m0: u32,
    m_rem: u32,
    wrow: u32,
    t: u32,
    a16: bool,
) {
    let (alpha, c, ldc, n) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*desc).alpha),
            core::ptr::read_volatile(&raw const (*desc).c) as *mut u16,
            core::ptr::read_volatile(&raw const (*desc).ldc),
            (*desc).n,
        )
    };
    // NVFP4 activations: fp16 out (the flags are not read).
    let bf16_out =
        a16 && unsafe { core::ptr::read_volatile(&raw const (*desc).flags) } & FLAG_OUT_BF16 != 0;
    let factor = alpha * A::SHIFT;
    unroll!(half_row in [0, 1] {
        let row = n0 + wrow + half_row as u32 * 8;
        if row < n {
            unroll!(i in [0, 1, 2, 3] {
                unroll!(j in [0, 1, 2, 3] {
                    unroll!(e in [0, 1] {
                        let m = (i as u32) * 32 + (j as u32) * 8 + 2 * t + e as u32;
                        if m < m_rem && m < TILE_M {
                            let v = acc[16 * i + 4 * j + 2 * half_row + e] * factor;
                            let idx = (m0 + m) as u64 * ldc + row as u64;
                            let out = if bf16_out {
                                half::f32_to_bf16(v)
                            } else {
                                half::f32_to_f16(v)
                            };
                            unsafe { c.add(idx as usize).write(out) };
                        }
                    });
                });
            });
        }
    });
    unsafe { thread::sync_cta() };
}

/// Issues one chunk's four k-steps against `subtiles` n32 token subtiles and commits them
/// as one group: one wgmma per k-step, as wide as the tile's tokens (a branch between wgmmas
/// would make ptxas serialise them, C7519). `desc(s)`: the token descriptor of k-step `s`.
#[inline(always)]
unsafe fn mma_chunk<A: Act>(
    acc: &mut [f32; 64],
    a: &[[u32; 4]; 4],
    subtiles: u32,
    desc: impl Fn(u32) -> u64,
) {
    // Each arm names its wgmma, so every call is direct.
    match subtiles {
        1 => unsafe { issue_mma(acc, a, &desc, A::WGMMA[0]) },
        2 => unsafe { issue_mma(acc, a, &desc, A::WGMMA[1]) },
        3 => unsafe { issue_mma(acc, a, &desc, A::WGMMA[2]) },
        _ => unsafe { issue_mma(acc, a, &desc, A::WGMMA[3]) },
    }
}

/// The four k-steps of one wgmma variant (`mma`: m64 x n{32,64,96,128}), committed as one
/// group.
#[inline(always)]
unsafe fn issue_mma(
    acc: &mut [f32; 64],
    a: &[[u32; 4]; 4],
    desc: &impl Fn(u32) -> u64,
    mma: unsafe fn(&mut [f32; 64], &[u32; 4], u64),
) {
    unsafe { wgmma::fence() };
    unroll!(s in [0, 1, 2, 3] {
        unsafe { mma(acc, &a[s], desc(s as u32)) };
    });
    unsafe { wgmma::commit() };
}

/// Dequantizes one chunk's tokens from the raw stage at `stage` into the fp16 token buffer at
/// `buf`. Thread `tid` takes token row `tid / 2`, scale blocks `2p` and `2p + 1` with
/// `p = tid % 2`: one conflict-free 16-byte load of FP4 (a warp reads 512 contiguous bytes)
/// and one of 2 scale bytes. Word `i` (of 4) of block `blk`, half `h`, belongs to k-step
/// `2h + i/2`, core matrix `2 * step + i%2`, bytes `4 blk ..` of the token's 16-byte row in
/// that core matrix; this thread writes blocks `2p, 2p + 1` there (8 bytes). Ends with the
/// async-proxy fence that wgmma's reads need; the caller's next barrier publishes the buffer.
#[inline(always)]
unsafe fn dequant_tokens(stage: u32, buf: u32, tid: u32) {
    let row = tid / 2;
    let p = tid % 2;
    let raw = unsafe { shared::ld_v4(stage + T_RAW + row * ROW_BYTES + p * 16) };
    let sf2 = unsafe { shared::ld_u16(stage + T_SF + row * ROW_SCALES + p * 2) };
    let sf = Fp4Act::scales4(sf2);
    let sf = [sf[0], sf[1]];
    // raw[2b + h]: block 2p + b, half h.
    let mut w = [[[0u32; 4]; 2]; 2]; // [b][h][word]
    unroll!(b in [0, 1] {
        unroll!(h in [0, 1] {
            w[b][h] = fp4x8_scaled(raw[2 * b + h], sf[b]);
        });
    });
    let base = buf + (row / 8) * TOK_GROUP_BYTES + (row % 8) * 16 + p * 8;
    unroll!(h in [0, 1] {
        unroll!(i in [0, 1, 2, 3] {
            let kc = 2 * (2 * h as u32 + (i as u32) / 2) + (i as u32) % 2;
            unsafe { shared::st_v2(base + kc * 128, [w[0][h][i], w[1][h][i]]) };
        });
    });
    unsafe { wgmma::fence_proxy_async_shared() };
}
