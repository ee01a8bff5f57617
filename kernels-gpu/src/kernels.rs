//! The kernels this crate exports, with the launch facts the host and the PTX build share.
//!
//! `cargo xtask build-ptx` reads [`KERNELS`] to insert `.maxntid` / `.minnctapersm` into each
//! kernel's PTX entry (Rust has no launch-bounds attribute), and the host reads it to launch.

/// Launch facts of one exported kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// PTX entry name (the `#[no_mangle]` function name).
    pub name: &'static str,
    /// Threads per CTA, written to the PTX as `.maxntid N, 1, 1`.
    pub threads: u32,
    /// Minimum resident CTAs per SM, written as `.minnctapersm N` (caps registers).
    pub min_ctas_per_sm: u32,
    /// Dynamic shared memory in bytes the host must request at launch (0: static only).
    pub dynamic_smem_bytes: u32,
    /// Lowest compute capability (major * 10 + minor) the kernel runs on.
    pub min_cc: u32,
    /// Whether the kernel is only in the sm_90a PTX.
    pub sm90a_only: bool,
    /// Weight rows (N) per tile.
    pub tile_n: u32,
    /// Tokens (M) per tile.
    pub tile_m: u32,
    /// Whether the kernel reads its tokens through TMA tensor maps: it then takes a last
    /// parameter (the ninth of a GEMM kernel), the address of one 128-byte `CUtensorMap` per
    /// problem (64-byte aligned, in the table's order), which the host encodes for the
    /// problem's `a`.
    pub token_maps: bool,
    /// Whether the kernel also reads its weights through TMA tensor maps: its `maps`
    /// parameter then holds two maps per problem, the tokens' and then one over `b` (`k / 2`
    /// bytes a row, `n` rows `ldb` bytes apart), which the host encodes only for weights whose
    /// rows are 16-byte aligned.
    pub weight_maps: bool,
}

impl KernelInfo {
    /// Tiles of one `m` x `n` problem for this kernel: `ceil(n / tile_n) * ceil(m / tile_m)`
    /// (0 when `m` or `n` is 0). The problem table's `tiles_m` is `ceil(m / tile_m)`.
    pub const fn tiles_for(&self, m: u32, n: u32) -> u64 {
        (n.div_ceil(self.tile_n) as u64) * (m.div_ceil(self.tile_m) as u64)
    }
}

/// Portable grouped GEMM: cp.async pipeline + mma.sync m16n8k16 (sm_80 and newer).
pub const GROUPED_GEMM_MMA: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_mma",
    threads: crate::tiling::THREADS,
    // Two CTAs per SM: three (ptxas capped at 168 registers, no spills) ran 16% slower on an
    // H200 (PERF.md), the SM's shared-memory pipe being the shared limit.
    min_ctas_per_sm: 2,
    dynamic_smem_bytes: 0,
    min_cc: 80,
    sm90a_only: false,
    tile_n: crate::tiling::TILE_N,
    tile_m: crate::tiling::TILE_M,
    token_maps: false,
    weight_maps: false,
};

/// Hopper grouped GEMM: in-register FP4 dequantization into wgmma A fragments (sm_90a only).
pub const GROUPED_GEMM_WGMMA: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma",
    threads: crate::tiling::wgmma::THREADS,
    // Two CTAs per SM: ptxas then caps registers at 128, which the kernel fits without
    // spilling, and one CTA's dequantization overlaps the other's wgmmas.
    min_ctas_per_sm: 2,
    dynamic_smem_bytes: crate::tiling::wgmma::SMEM_BYTES,
    min_cc: 90,
    sm90a_only: true,
    tile_n: crate::tiling::wgmma::TILE_N,
    tile_m: crate::tiling::wgmma::TILE_M,
    token_maps: false,
    weight_maps: false,
};

/// NVFP4 quantization of an fp16 / bf16 / fp32 tensor ([`crate::quant`]): one thread per
/// 16-element block, grid-stride loop, any GPU from sm_80 up. Not a GEMM: `tile_n` and
/// `tile_m` are 1 and mean nothing.
pub const QUANTIZE: KernelInfo = KernelInfo {
    name: "nvfp4_quantize",
    threads: crate::quant::THREADS,
    // Four CTAs of 256 threads (1024 threads, half an H100 SM's) cap registers at 64: enough
    // loads in flight for a memory-bound kernel, and ptxas fits it (64 on sm_90a, 62 on sm_80,
    // no spills; the table of `cargo xtask build-ptx`).
    min_ctas_per_sm: 4,
    dynamic_smem_bytes: 0,
    min_cc: 80,
    sm90a_only: false,
    tile_n: 1,
    tile_m: 1,
    token_maps: false,
    weight_maps: false,
};

/// The NVFP4 token dequantization pass (`nvfp4_dequant_tokens`, both paths): runs before the
/// fp16-activation kernel when a group with NVFP4 activations takes the pass
/// ([`crate::problem::TokenJob`]). Memory-bound, no shared memory: the launch facts of
/// [`QUANTIZE`] (four CTAs of 256 threads per SM, any GPU from sm_80 up, no tiles).
pub const DEQUANT_TOKENS: KernelInfo = KernelInfo {
    name: "nvfp4_dequant_tokens",
    threads: crate::tiling::DEQUANT_THREADS,
    ..QUANTIZE
};

/// Every kernel of the crate.
pub const KERNELS: &[KernelInfo] = &[
    GROUPED_GEMM_MMA,
    GROUPED_GEMM_MMA_F16A,
    GROUPED_GEMM_MMA_BF16A,
    GROUPED_GEMM_MMA_F16P,
    GROUPED_GEMM_WGMMA,
    GROUPED_GEMM_WGMMA_F16A,
    GROUPED_GEMM_WGMMA_BF16A,
    GROUPED_GEMM_WGMMA_F16A_WT,
    GROUPED_GEMM_WGMMA_BF16A_WT,
    GROUPED_GEMM_WGMMA_F16B_WT,
    GROUPED_GEMM_WGMMA_F16B_WT8,
    GROUPED_GEMM_WGMMA_F16B_WTSG,
    GROUPED_GEMM_WGMMA_F16B_WT8SG,
    GROUPED_GEMM_WGMMA_F16B_WT2,
    GROUPED_GEMM_WGMMA_F16B_WTSG2,
    DEQUANT_TOKENS,
    QUANTIZE,
];

/// [`GROUPED_GEMM_MMA`] with fp16 activations (W4A16): same tiles and launch.
pub const GROUPED_GEMM_MMA_F16A: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_mma_f16a",
    ..GROUPED_GEMM_MMA
};

/// [`GROUPED_GEMM_MMA`] with fp16 activations in the kernels' K order, as the token pass
/// writes them for this path (`paired` = 1): what NVFP4 groups that take the pass run on the
/// portable path. Same tiles and launch.
pub const GROUPED_GEMM_MMA_F16P: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_mma_f16p",
    ..GROUPED_GEMM_MMA
};

/// [`GROUPED_GEMM_MMA`] with bf16 activations (bf16 weights and MMAs).
pub const GROUPED_GEMM_MMA_BF16A: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_mma_bf16a",
    ..GROUPED_GEMM_MMA
};

/// [`GROUPED_GEMM_WGMMA`] with fp16 activations (W4A16): same tiles and launch.
pub const GROUPED_GEMM_WGMMA_F16A: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma_f16a",
    dynamic_smem_bytes: crate::tiling::wgmma::SMEM_BYTES_A16,
    token_maps: true,
    ..GROUPED_GEMM_WGMMA
};

/// [`GROUPED_GEMM_WGMMA`] with bf16 activations (bf16 weights and MMAs).
pub const GROUPED_GEMM_WGMMA_BF16A: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma_bf16a",
    ..GROUPED_GEMM_WGMMA_F16A
};

/// [`GROUPED_GEMM_WGMMA_F16A`] with the weights by TMA too (`_wt`): chosen by the host when
/// every problem's `b` and `ldb` are multiples of 16 bytes.
pub const GROUPED_GEMM_WGMMA_F16A_WT: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma_f16a_wt",
    dynamic_smem_bytes: crate::tiling::wgmma::SMEM_BYTES_A16_WT,
    weight_maps: true,
    ..GROUPED_GEMM_WGMMA_F16A
};

/// [`GROUPED_GEMM_WGMMA_F16A_WT`] with bf16 activations.
pub const GROUPED_GEMM_WGMMA_BF16A_WT: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma_bf16a_wt",
    ..GROUPED_GEMM_WGMMA_F16A_WT
};

/// [`GROUPED_GEMM_WGMMA_F16A_WT`] with the fp16 tokens in the blocked K order
/// ([`crate::fp4::blocked_k`]) that the token pass writes with `paired` = 2: what NVFP4 groups
/// with every `k` a multiple of 64 run after the pass on the Hopper path.
pub const GROUPED_GEMM_WGMMA_F16B_WT: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma_f16b_wt",
    ..GROUPED_GEMM_WGMMA_F16A_WT
};

/// [`GROUPED_GEMM_WGMMA_F16B_WT`] with 8 stages: 172 KiB of shared memory, so one CTA an SM
/// (`min_ctas_per_sm` 1, which also lifts the 128-register cap). The host runs it instead of
/// the 4-stage form when the launch has at most one CTA an SM.
pub const GROUPED_GEMM_WGMMA_F16B_WT8: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma_f16b_wt8",
    min_ctas_per_sm: 1,
    dynamic_smem_bytes: crate::tiling::wgmma::SMEM_BYTES_A16_WT8,
    ..GROUPED_GEMM_WGMMA_F16B_WT
};

/// [`GROUPED_GEMM_WGMMA_F16B_WT`] for launches whose every problem with tiles has plain
/// weight scales, 16-byte aligned, and `k` a multiple of 256: each weight row's scales are
/// copied 16 bytes (four chunks) at a time into slots after the scheduler's words. Same tiles
/// and threads; 4 KiB more shared memory (two CTAs still fit an SM).
pub const GROUPED_GEMM_WGMMA_F16B_WTSG: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma_f16b_wtsg",
    dynamic_smem_bytes: crate::tiling::wgmma::SMEM_BYTES_A16_WTSG,
    ..GROUPED_GEMM_WGMMA_F16B_WT
};

/// [`GROUPED_GEMM_WGMMA_F16B_WT8`] with the weight scales as in
/// [`GROUPED_GEMM_WGMMA_F16B_WTSG`] (8 KiB more shared memory).
pub const GROUPED_GEMM_WGMMA_F16B_WT8SG: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma_f16b_wt8sg",
    dynamic_smem_bytes: crate::tiling::wgmma::SMEM_BYTES_A16_WT8SG,
    ..GROUPED_GEMM_WGMMA_F16B_WT8
};
/// [`GROUPED_GEMM_WGMMA_F16B_WT`] in clusters of two CTAs sharing each token tile (the pair
/// kernel, chosen per launch by the host): tiles of 256 weight rows (`tile_n`; each CTA of a
/// cluster computes 128 of them), the token maps' boxes of 64 rows, launched with cluster
/// dimension 2.
pub const GROUPED_GEMM_WGMMA_F16B_WT2: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma_f16b_wt2",
    tile_n: 2 * crate::tiling::wgmma::TILE_N,
    ..GROUPED_GEMM_WGMMA_F16B_WT
};

/// [`GROUPED_GEMM_WGMMA_F16B_WT2`] with the weight scales four chunks at a time.
pub const GROUPED_GEMM_WGMMA_F16B_WTSG2: KernelInfo = KernelInfo {
    name: "nvfp4_grouped_gemm_wgmma_f16b_wtsg2",
    dynamic_smem_bytes: crate::tiling::wgmma::SMEM_BYTES_A16_WTSG,
    ..GROUPED_GEMM_WGMMA_F16B_WT2
};
