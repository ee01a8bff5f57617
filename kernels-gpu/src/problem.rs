//! The device-side problem table: one [`ProblemDesc`] per GEMM of the group.

/// One problem of a grouped GEMM as the kernels read it (`#[repr(C)]`, 96 bytes, 8-aligned).
///
/// Computes `C = alpha * (A * SFA) (B * SFB)^T` rounded to fp16, where
/// - `a`: `m` rows of `k` FP4 E2M1 values, two per byte (element 2j in the low nibble of byte
///   j), row `r` starting at byte `a + r * lda`;
/// - `b`: `n` rows of `k` FP4 values, same encoding, row `r` at `b + r * ldb`;
/// - `sfa` / `sfb`: E4M3 scales, one per 16 K-elements, in the layout given by
///   `sfa_layout` / `sfb_layout` (a [`crate::layout::ScaleLayout`] code);
/// - `c`: `m` rows of `n` fp16 values, row `r` at element `r * ldc`.
///
/// Token rows are counted from `m_offset`: row `r` of the problem is row `m_offset + r` of
/// `a`, of `c` and of the scale tensor `sfa` (which matters for the blocked layout, whose
/// 128-row blocks are counted from the start of `sfa`). Per-problem buffers have
/// `m_offset == 0`; the contiguous MoE layout (one `[total_M, K/2]` A for all groups) points
/// every problem at the same buffers and gives each its first row.
///
/// Where the row counts live on the device ([`SizeMode`]), `m` is the capacity (the most
/// rows the buffers hold) and the kernel reads the actual counts at launch; `tile_start`
/// and `tiles_m` are then unused.
///
/// All pointers are device addresses. The host checks every field before a table reaches
/// the GPU (the `host` crate's validation); the kernels trust them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProblemDesc {
    /// Device address of A (FP4, M x K).
    pub a: u64,
    /// Device address of B (FP4, N x K).
    pub b: u64,
    /// Device address of A's scales.
    pub sfa: u64,
    /// Device address of B's scales.
    pub sfb: u64,
    /// Device address of C (fp16, M x N).
    pub c: u64,
    /// Bytes between consecutive rows of A (at least `k / 2`).
    pub lda: u64,
    /// Bytes between consecutive rows of B (at least `k / 2`).
    pub ldb: u64,
    /// fp16 elements between consecutive rows of C (at least `n`).
    pub ldc: u64,
    /// Rows of A and C (tokens); may be 0.
    pub m: u32,
    /// Rows of B, columns of C.
    pub n: u32,
    /// Reduction length, a multiple of 16.
    pub k: u32,
    /// [`crate::layout::ScaleLayout`] code of `sfa`.
    pub sfa_layout: u32,
    /// [`crate::layout::ScaleLayout`] code of `sfb`.
    pub sfb_layout: u32,
    /// Per-problem output factor (the checkpoint's global scale; 1.0 by default).
    pub alpha: f32,
    /// Index of this problem's first tile in the launch: the exclusive prefix sum of the
    /// tile counts of the problems before it.
    pub tile_start: u32,
    /// Tiles of this problem along M (`ceil(m / TILE_M)` for the kernel it was packed for).
    pub tiles_m: u32,
    /// First token row of this problem in `a`, `sfa` and `c` (see above).
    pub m_offset: u32,
    /// Bit set of `FLAG_*`: how the kernels write `c` (0: fp16).
    pub flags: u32,
}

/// [`ProblemDesc::flags`]: `c` holds bf16 instead of fp16 (kernels with 16-bit activations).
pub const FLAG_OUT_BF16: u32 = 1;

/// What the activations (`a`, the tokens) of a launch hold; one kernel per kind.
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    /// NVFP4: FP4 E2M1 pairs with E4M3 block scales in `sfa` (the contract of DESIGN.md).
    #[default]
    Nvfp4 = 0,
    /// IEEE fp16, `k` values per row (`lda` in bytes); `sfa` is not read.
    F16 = 1,
    /// bf16, `k` values per row (`lda` in bytes); `sfa` is not read.
    Bf16 = 2,
}

/// Size of [`ProblemDesc`] in bytes, fixed so the PTX and the host agree.
pub const PROBLEM_DESC_BYTES: usize = 104;

const _: () = assert!(core::mem::size_of::<ProblemDesc>() == PROBLEM_DESC_BYTES);
const _: () = assert!(core::mem::align_of::<ProblemDesc>() == 8);

/// Bytes of one TMA tensor map (`CUtensorMap`) in the token-map array of the kernels that
/// read their tokens by TMA (`KernelInfo::token_maps`); each is 64-byte aligned.
pub const TOKEN_MAP_BYTES: u64 = 128;

/// One job of the NVFP4 token pass (`nvfp4_dequant_tokens`, both paths): the token rows
/// `m_offset .. m_offset + m` of problem `problem` of the table, written as fp16 rows of `k`
/// values at `out + row * 2k` (the same row numbers as in `a`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenJob {
    /// Device address of the fp16 rows (row 0; the job writes its own rows only).
    pub out: u64,
    /// Index of the problem in the table.
    pub problem: u32,
    /// Unused (keeps the struct 16 bytes).
    pub pad: u32,
}

const _: () = assert!(core::mem::size_of::<TokenJob>() == 16);

/// How a launch cuts its tiles along K (the GEMM kernels' `dp_tiles`, `parts` and `ws`
/// parameters): tiles `0 .. dp_tiles` are computed whole by one CTA each; every later tile
/// is cut into `parts` K ranges computed by `parts` CTAs, whose fp32 sums meet in the
/// workspace `ws` (the last to finish adds them in part order and stores the tile). `parts`
/// 0 or 1 means no tile is cut (`dp_tiles` is then unused, and `ws` too unless the launch
/// is [`MODE_DYNAMIC`]: its unit counter). Only with host sizes
/// ([`SizeMode::Host`]). Part `q` of a tile of `c` K chunks (of 64) takes chunks `c * q /
/// parts .. c * (q + 1) / parts`, which is empty for some parts when `c < parts` (they add
/// zeros).
///
/// `ws` (256-byte aligned) holds [`split_counter_bytes`]`(tiles - dp_tiles)` bytes of `u32`
/// counters, zero before the launch (and left zero by it), then `parts` slots of
/// [`split_partial_bytes`]`(threads)` bytes per cut tile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Tiles computed whole (the first ones of the launch).
    pub dp_tiles: u32,
    /// K ranges of each later tile (0 or 1: none cut).
    pub parts: u32,
    /// Device address of the workspace.
    pub ws: u64,
}

/// Bytes of one cut tile part's fp32 sums for a CTA of `threads` threads (64 per thread).
pub const fn split_partial_bytes(threads: u32) -> u64 {
    threads as u64 * 64 * 4
}

/// The pair kernels' workspace between rank 0's [`split_ws_bytes`] and rank 1's: the
/// dynamic units' counter (its first word), keeping rank 1's workspace 256-byte aligned.
pub const PAIR_COUNTER_BYTES: u64 = 256;

/// Bytes of the counters at the start of a split workspace for `cut` cut tiles (4 each,
/// rounded up to 256).
pub const fn split_counter_bytes(cut: u32) -> u64 {
    (cut as u64 * 4).next_multiple_of(256)
}

/// Bytes of a split workspace for `cut` tiles cut into `parts` (counters, then the parts'
/// slots) for a CTA of `threads` threads; with [`MODE_DYNAMIC`] the launch's unit counter
/// (4 bytes) follows, at this offset (the pair kernels: after rank 0's slots, in
/// [`PAIR_COUNTER_BYTES`] before rank 1's).
pub const fn split_ws_bytes(cut: u32, parts: u32, threads: u32) -> u64 {
    split_counter_bytes(cut) + cut as u64 * parts as u64 * split_partial_bytes(threads)
}

/// First K chunk of part `q` of a tile of `chunks` chunks cut into `parts` ranges in the
/// guided order of dynamic launches ([`MODE_DYNAMIC`] with `parts > 1`; `q = parts` gives
/// `chunks`): part `q` weighs `parts + 2 - q`, so the parts shrink from the first to the last
/// (3 parts: 5 : 4 : 3 of the K range, 2 parts: 4 : 3), and the dynamic order hands out every
/// cut tile's part 0 first, then every part 1, and so on: the CTAs that finish their whole
/// tiles first take the largest parts, the last ones the smallest. A part may be empty when
/// `chunks` is small (it then adds zeros).
pub const fn guided_part_start(chunks: u32, q: u32, parts: u32) -> u32 {
    (chunks as u64 * guided_weight(q, parts) / guided_weight(parts, parts)) as u32
}

/// The weight of parts `0 .. q` of `parts` in [`guided_part_start`]: `sum (parts + 2 - i)`.
const fn guided_weight(q: u32, parts: u32) -> u64 {
    let (q, p) = (q as u64, parts as u64);
    q * (p + 2) - q * q.saturating_sub(1) / 2
}

/// Flag in the kernels' `mode` argument (host sizes only): the CTAs take their units past
/// the first (`blockIdx.x`) from a counter in the split workspace (at
/// [`split_ws_bytes`]`(total_tiles - dp_tiles, parts, threads)`; `parts` 1 and `dp_tiles` =
/// `total_tiles` when no tile is cut), zero before the launch and left zero by it, instead
/// of striding by `gridDim.x`. With cut tiles (`parts > 1`) the units past the whole tiles
/// come in the guided order of [`guided_part_start`] instead: unit `dp_tiles + q * cut + s`
/// is part `q` of cut tile `s`, `cut = total_tiles - dp_tiles`. Only the kernels that
/// support it (the Hopper `_wt` ones) read it, and the host sets it only for them and only
/// with host sizes: the other kernels do not mask it out, and would take a flagged mode code
/// for host sizes.
pub const MODE_DYNAMIC: u32 = 1 << 8;

/// The most problems one launch takes (the tile search is a binary search over this table).
pub const MAX_PROBLEMS: usize = 1 << 16;

/// The most groups one launch takes when the row counts live on the device: the kernel
/// scans them into shared memory (8 bytes a group) at the start of every CTA.
pub const MAX_DEVICE_GROUPS: usize = 512;

/// Where the token counts of a launch come from (the kernels' `mode` argument).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SizeMode {
    /// From the table: problem `p` has `m` rows from row `m_offset`; `tile_start` and
    /// `tiles_m` were computed on the host.
    Host = 0,
    /// From a device array `counts` of `u32`, one per problem: problem `p` has
    /// `min(counts[p], m)` rows from row `m_offset` (its own buffers, `m` their capacity).
    DevicePerGroup = 1,
    /// From a device array `counts`, the groups' rows laid out one after another
    /// (the contiguous MoE layout): problem `p` starts at row `m_offset + min(P, cap)`, where
    /// `P = counts[0] + .. + counts[p - 1]` and `cap` is problem 0's `m` (every problem
    /// carries the same `m` and `m_offset`), and has `min(P + counts[p], cap) - min(P, cap)`
    /// rows: rows past the capacity are dropped, never read or written.
    DeviceContiguous = 2,
}

impl SizeMode {
    /// The mode with this `u32` code.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Host),
            1 => Some(Self::DevicePerGroup),
            2 => Some(Self::DeviceContiguous),
            _ => None,
        }
    }
}
