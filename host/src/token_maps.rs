//! TMA tensor maps over the 16-bit token operands: the Hopper W4A16 kernels
//! (`KernelInfo::token_maps`) copy each chunk's tokens with `cp.async.bulk.tensor`, which
//! reads its shape, strides and address from one such map per problem.

use crate::{Error, Result};
use cudarc::driver::DeviceRepr;
use cudarc::driver::sys::{
    self, CUtensorMap, CUtensorMapDataType, CUtensorMapFloatOOBfill, CUtensorMapInterleave,
    CUtensorMapL2promotion, CUtensorMapSwizzle,
};
use kernels_gpu::problem::{ProblemDesc, TOKEN_MAP_BYTES};
use kernels_gpu::tiling::CHUNK_K;
use kernels_gpu::tiling::wgmma::{TILE_M, TILE_N};

/// One problem's tensor map as an element of the kernel's map array (128 bytes, 128-byte
/// aligned; the kernels need 64).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenMap(CUtensorMap);

// SAFETY: `CUtensorMap` is `#[repr(C)]`, sixteen `u64` the driver filled in (or zeros), the
// layout `cp.async.bulk.tensor` reads.
unsafe impl DeviceRepr for TokenMap {}

const _: () = assert!(size_of::<TokenMap>() as u64 == TOKEN_MAP_BYTES);
const _: () = assert!(align_of::<TokenMap>() >= 64);

/// TMA coordinates are signed 32-bit: rows past this cannot be addressed.
const MAX_ROWS: u64 = i32::MAX as u64;
/// The driver takes row strides below 2^40 bytes.
const MAX_STRIDE: u64 = 1 << 40;

/// The maps of a packed table, in its order: for problem `i`, rows `0 .. m_offset + m` of
/// its `a` (`m` is the capacity where the row counts live on the device), `k` 16-bit values
/// a row, `lda` bytes apart, read in boxes of `TILE_M` rows x `CHUNK_K` values into the
/// 128-byte swizzle layout; rows and values outside arrive as zeros. A problem without rows,
/// columns or K gets a zeroed map, which the kernel never reads (it has no tiles, or no
/// chunks).
///
/// The table was validated for 16-bit activations: `a` is 16-byte aligned, `lda` a multiple
/// of 16 holding `2 k` bytes, and the rows are inside the buffer.
///
/// # Errors
/// [`Error::InvalidDimension`] (field `m`) if `m_offset + m` is more than 2^31 - 1 rows, and
/// [`Error::InvalidStride`] (field `lda`) if `lda` reaches 2^40 bytes: the TMA cannot
/// address them. [`Error::Driver`] if the driver rejects a map anyway.
pub(crate) fn encode(descs: &[ProblemDesc]) -> Result<Vec<TokenMap>> {
    encode_rows(descs, TILE_M)
}

/// [`encode`] with token boxes of `box_rows` rows (the pair kernel's 64).
///
/// # Errors
/// As [`encode`].
pub(crate) fn encode_rows(descs: &[ProblemDesc], box_rows: u32) -> Result<Vec<TokenMap>> {
    descs
        .iter()
        .enumerate()
        .map(|(problem, d)| {
            check_rows(problem, d)?;
            let rows = u64::from(d.m_offset) + u64::from(d.m);
            if d.lda >= MAX_STRIDE {
                return Err(Error::InvalidStride {
                    problem,
                    field: "lda",
                    value: usize::try_from(d.lda).unwrap_or(usize::MAX),
                    reason: "is 2^40 bytes or more: the Hopper kernels read 16-bit activations \
                             by TMA, which takes smaller strides"
                        .into(),
                });
            }
            if !has_tiles(d) {
                return Ok(NO_MAP);
            }
            encode_one(d.a, u64::from(d.k), rows, d.lda, box_rows)
        })
        .collect()
}

/// [`Error::InvalidDimension`] (field `m`) if problem `problem`'s rows `m_offset + m` pass
/// 2^31 - 1, which a tensor map cannot address: checked by [`encode`], and before the token
/// pass allocates its fp16 copies (whose maps it encodes after).
pub(crate) fn check_rows(problem: usize, d: &ProblemDesc) -> Result<()> {
    if u64::from(d.m_offset) + u64::from(d.m) > MAX_ROWS {
        return Err(Error::InvalidDimension {
            problem,
            field: "m",
            value: d.m as usize,
            reason: "makes more than 2^31 - 1 rows with the first row `m_offset`: \
                     the Hopper kernels read activations by TMA (16-bit ones, or NVFP4 \
                     ones dequantized to fp16), whose row coordinates are signed 32-bit",
        });
    }
    Ok(())
}

/// Whether problem `d` has tiles (the kernels read its maps, and the token pass its rows,
/// only then).
pub(crate) fn has_tiles(d: &ProblemDesc) -> bool {
    d.m != 0 && d.n != 0 && d.k != 0
}

/// The map of a problem without tiles: zeros, never read.
const NO_MAP: TokenMap = TokenMap(CUtensorMap { opaque: [0; 16] });

/// `cuTensorMapEncodeTiled` for the tokens: `rows` rows of `k` 16-bit values at `a`, `lda`
/// bytes apart, in boxes of `box_rows` rows x `CHUNK_K` values, 128-byte swizzle.
fn encode_one(a: u64, k: u64, rows: u64, lda: u64, box_rows: u32) -> Result<TokenMap> {
    encode_2d(
        a,
        CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT16,
        [k, rows],
        lda,
        [CHUNK_K, box_rows],
        CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
    )
}

/// `cuTensorMapEncodeTiled` of a 2-D map at `addr`: `dims` (elements a row, rows), rows
/// `stride` bytes apart, boxes of `boxes` (elements, rows), L2 promotion of 256 bytes, zeros
/// outside.
fn encode_2d(
    addr: u64,
    dtype: CUtensorMapDataType,
    dims: [u64; 2],
    stride: u64,
    boxes: [u32; 2],
    swizzle: CUtensorMapSwizzle,
) -> Result<TokenMap> {
    let mut map = CUtensorMap { opaque: [0; 16] };
    let strides = [stride];
    let steps = [1u32, 1];
    // SAFETY: every pointer names a live local of the length the rank (2) asks for; the
    // driver only writes `map` and reads the rest. `addr` is not dereferenced here.
    unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            dtype,
            2,
            addr as *mut core::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            steps.as_ptr(),
            CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
        .result()?;
    }
    Ok(TokenMap(map))
}

/// Whether every problem of `descs` with tiles can have its weights read by TMA (the `_wt`
/// Hopper kernels): `b` and `ldb` multiples of 16 bytes, `ldb` below 2^40, at most 2^31 - 1
/// rows. Problems without tiles do not count.
pub(crate) fn weights_by_tma(descs: &[ProblemDesc]) -> bool {
    descs.iter().all(|d| {
        !has_tiles(d)
            || (d.b % 16 == 0
                && d.ldb % 16 == 0
                && d.ldb < MAX_STRIDE
                && u64::from(d.n) <= MAX_ROWS)
    })
}

/// [`encode`]'s maps with a weight map after each token map (the `_wt` kernels' layout): for
/// problem `i`, map `2 i` over its tokens and map `2 i + 1` over its `b`: `k / 2` bytes a row,
/// `n` rows `ldb` bytes apart, read in boxes of 32 bytes x `TILE_N` rows (one chunk's FP4 of
/// a tile) without swizzle; bytes outside arrive as zeros. Call only when
/// [`weights_by_tma`] holds.
///
/// # Errors
/// As [`encode`].
pub(crate) fn encode_with_weights(descs: &[ProblemDesc], box_rows: u32) -> Result<Vec<TokenMap>> {
    let tokens = encode_rows(descs, box_rows)?;
    let mut maps = Vec::with_capacity(2 * descs.len());
    for (d, token) in descs.iter().zip(tokens) {
        maps.push(token);
        maps.push(if has_tiles(d) {
            encode_2d(
                d.b,
                CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT8,
                [u64::from(d.k) / 2, u64::from(d.n)],
                d.ldb,
                [CHUNK_K / 2, TILE_N],
                CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
            )?
        } else {
            NO_MAP
        });
    }
    Ok(maps)
}

/// The maps a plan uploads: [`encode_with_weights`] when `with_weights` (the `_wt` kernels;
/// [`weights_by_tma`] must hold), else [`encode`].
///
/// # Errors
/// As [`encode`].
pub(crate) fn encode_for(descs: &[ProblemDesc], with_weights: bool) -> Result<Vec<TokenMap>> {
    if with_weights {
        encode_with_weights(descs, TILE_M)
    } else {
        encode(descs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(b: u64, ldb: u64, n: u32) -> ProblemDesc {
        ProblemDesc {
            b,
            ldb,
            m: 8,
            n,
            k: 64,
            ..ProblemDesc::default()
        }
    }

    #[test]
    fn weights_by_tma_needs_aligned_rows() {
        assert!(weights_by_tma(&[
            desc(0x1000, 32, 128),
            desc(0x2010, 48, 7)
        ]));
        // An unaligned start, an unaligned stride: the plan keeps the cp.async kernel.
        assert!(!weights_by_tma(&[desc(0x1008, 32, 128)]));
        assert!(!weights_by_tma(&[desc(0x1000, 24, 128)]));
        // Problems without tiles do not count.
        let mut empty = desc(0x1008, 24, 128);
        empty.m = 0;
        assert!(weights_by_tma(&[empty, desc(0x1000, 32, 1)]));
    }
}
