//! Tile shapes of the kernels, in one place, with the arithmetic that sizes them.
//!
//! Portable kernel (`nvfp4_grouped_gemm_mma`, mma.sync m16n8k16, sm_80+), "swap AB": the
//! weights `B` (N rows, large) are the MMA's M side and the tokens `A` (M rows, small, any
//! count) its N side, so a problem with 40 tokens uses 5 of 8 n8 blocks instead of padding 40
//! to a 64-row MMA tile.
//! - CTA tile: `TILE_N` = 128 weight rows x `TILE_M` = 64 tokens, K walked in chunks of
//!   `CHUNK_K` = 64 (32 bytes of FP4 per row: four scale blocks).
//! - 4 warps; warp w owns weight rows 32w..32w+31 (two m16 MMA tiles) and all 64 tokens
//!   (eight n8 tiles): 64 fp32 accumulators per thread. Each weight element is dequantized
//!   once per CTA, in registers; the tokens are dequantized once per CTA into shared memory.
//! - `STAGES` = 4 cp.async stages of raw FP4 + scales: 4 x 6912 B, plus 8 KiB of fp16 tokens,
//!   36 KiB of static shared memory in all (under the 48 KiB static limit).

/// Weight rows (N) per CTA tile.
pub const TILE_N: u32 = 128;
/// Tokens (M) per CTA tile.
pub const TILE_M: u32 = 64;
/// K elements per pipeline stage.
pub const CHUNK_K: u32 = 64;
/// Pipeline depth (cp.async groups in flight + 1).
pub const STAGES: u32 = 4;
/// Threads per CTA.
pub const THREADS: u32 = 128;

/// Shared memory of the device-side scheduler in every kernel (bytes): tile starts and rows
/// of `MAX_DEVICE_GROUPS + 1` groups and one scan word per warp, rounded up to 16 bytes.
pub const SCHED_SMEM_BYTES: u32 =
    (8 * (crate::problem::MAX_DEVICE_GROUPS as u32 + 1) + 4 * 32).next_multiple_of(16);

/// Tiles of one problem: `ceil(n / TILE_N) * ceil(m / TILE_M)`; 0 when `m` or `n` is 0.
#[inline(always)]
pub const fn tiles_for(m: u32, n: u32) -> u64 {
    (n.div_ceil(TILE_N) as u64) * (m.div_ceil(TILE_M) as u64)
}

/// Threads per CTA of the token dequantization pass (`nvfp4_dequant_tokens`, both paths).
pub const DEQUANT_THREADS: u32 = 256;

/// Tile constants of the Hopper kernel (`nvfp4_grouped_gemm_wgmma`, sm_90a).
///
/// Two consumer warpgroups, each one m64 wgmma tile of weights against up to 128 tokens as
/// four n32 subtiles (64 fp32 accumulators per thread). Shared memory per stage: 128 + 128
/// rows x 32 bytes of FP4 plus 4 + 4 scale bytes a row = 9 KiB; four stages and two 16 KiB
/// fp16 token buffers (chunk c's MMAs read one while chunk c + 1 is dequantized into the
/// other) make 68 KiB of dynamic shared memory. The 16-bit-activation (W4A16) entries get
/// their tokens by TMA instead: four stages of a 16 KiB token tile plus 4.5 KiB of weights
/// and an 8-byte barrier, with the scheduler's words, make 86 KiB (`SMEM_BYTES_A16`; two CTAs
/// still fit an SM).
pub mod wgmma {
    /// Weight rows (N) per CTA tile: two warpgroups x 64.
    pub const TILE_N: u32 = 128;
    /// Tokens (M) per CTA tile: four n32 wgmma subtiles.
    pub const TILE_M: u32 = 128;
    /// Pipeline depth.
    pub const STAGES: u32 = 4;
    /// Threads per CTA: two warpgroups.
    pub const THREADS: u32 = 256;

    /// Dynamic shared memory: `STAGES` x (FP4 + scales of `TILE_N` weight and `TILE_M` token
    /// rows for a 64-element chunk) + the fp16 token tile (`TILE_M` x 64 x 2 bytes) + the
    /// scheduler's (`SCHED_SMEM_BYTES`, at the end).
    pub const SMEM_BYTES: u32 =
        STAGES * (TILE_N + TILE_M) * (super::CHUNK_K / 2 + super::CHUNK_K / 16)
            + 2 * TILE_M * super::CHUNK_K * 2
            + super::SCHED_SMEM_BYTES;

    /// Bytes of one chunk's 16-bit token tile (`TILE_M` rows x 64 values, 128-byte swizzle).
    pub const TOK16_STAGE_BYTES: u32 = TILE_M * super::CHUNK_K * 2;
    /// Bytes of one chunk's weights: FP4 and scales of `TILE_N` rows.
    pub const W_STAGE_BYTES: u32 = TILE_N * (super::CHUNK_K / 2 + super::CHUNK_K / 16);

    /// Dynamic shared memory of the 16-bit-activation (W4A16) kernels, whose tokens arrive
    /// by TMA: `STAGES` x (16-bit token tile + weights), one 8-byte barrier per stage, and
    /// the scheduler's (`SCHED_SMEM_BYTES`, at the end).
    pub const SMEM_BYTES_A16: u32 =
        STAGES * (TOK16_STAGE_BYTES + W_STAGE_BYTES) + STAGES * 8 + super::SCHED_SMEM_BYTES;

    /// Dynamic shared memory of the W4A16 kernels that also read their weights by TMA
    /// (`_wt`): [`SMEM_BYTES_A16`] plus one more 8-byte barrier per stage (the stage's
    /// "empty" barrier).
    pub const SMEM_BYTES_A16_WT: u32 = SMEM_BYTES_A16 + STAGES * 8;

    /// Stages of the one-CTA-an-SM form of the blocked-order `_wt` kernel
    /// (`nvfp4_grouped_gemm_wgmma_f16b_wt8`), for launches of at most one CTA an SM: the
    /// shared memory a second CTA would have used holds four more chunks in flight.
    pub const STAGES_WT8: u32 = 8;

    /// Dynamic shared memory of `nvfp4_grouped_gemm_wgmma_f16b_wt8`: as
    /// [`SMEM_BYTES_A16_WT`] with [`STAGES_WT8`] stages (172 KiB: one CTA an SM).
    pub const SMEM_BYTES_A16_WT8: u32 = STAGES_WT8 * (TOK16_STAGE_BYTES + W_STAGE_BYTES)
        + 2 * STAGES_WT8 * 8
        + super::SCHED_SMEM_BYTES;

    /// Bytes of one weight-scale slot of the `_sg` entries: 16 bytes (the scales of four
    /// 64-value chunks) of each of `TILE_N` rows.
    pub const SCALE_SLOT_BYTES: u32 = TILE_N * 16;

    /// Dynamic shared memory of `nvfp4_grouped_gemm_wgmma_f16b_wtsg`: [`SMEM_BYTES_A16_WT`]
    /// plus `STAGES / 2` weight-scale slots (after the scheduler's words).
    pub const SMEM_BYTES_A16_WTSG: u32 = SMEM_BYTES_A16_WT + STAGES / 2 * SCALE_SLOT_BYTES;

    /// Dynamic shared memory of `nvfp4_grouped_gemm_wgmma_f16b_wt8sg`: [`SMEM_BYTES_A16_WT8`]
    /// plus `STAGES_WT8 / 2` weight-scale slots.
    pub const SMEM_BYTES_A16_WT8SG: u32 = SMEM_BYTES_A16_WT8 + STAGES_WT8 / 2 * SCALE_SLOT_BYTES;

    /// Tiles of one problem for this kernel.
    #[inline(always)]
    pub const fn tiles_for(m: u32, n: u32) -> u64 {
        (n.div_ceil(TILE_N) as u64) * (m.div_ceil(TILE_M) as u64)
    }
}
