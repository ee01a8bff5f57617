//! The persistent group tile scheduler: which problem and tile a linear tile index names.

use crate::problem::ProblemDesc;

/// Index of the problem that owns linear tile `tile`: the largest `p` with
/// `table[p].tile_start <= tile` (problems with no tiles share their successor's start and are
/// skipped by taking the largest). Binary search: `num_problems` <= `MAX_PROBLEMS` = 2^16.
///
/// # Safety
/// `table` points to `num_problems` >= 1 descriptors whose `tile_start` is non-decreasing,
/// `table[0].tile_start == 0` and `tile` < the total tile count.
#[inline(always)]
pub unsafe fn problem_of_tile(table: *const ProblemDesc, num_problems: u32, tile: u32) -> u32 {
    let (mut lo, mut hi) = (0u32, num_problems); // answer in [lo, hi)
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let start = unsafe { (*table.add(mid as usize)).tile_start };
        if start <= tile {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The persistent loop of a kernel: this CTA takes linear tiles `blockIdx.x`,
/// `blockIdx.x + gridDim.x`, ... below `total_tiles` and calls `tile(desc, n0, m0)` with the
/// owning problem's descriptor and the tile's first weight row and first token (tile `t` of a
/// problem covers weight rows from `(t / tiles_m) * tile_n`, tokens from
/// `(t % tiles_m) * tile_m`).
///
/// # Safety
/// As [`problem_of_tile`]; every CTA thread calls it with the same arguments.
#[inline(always)]
pub unsafe fn for_each_tile(
    table: *const ProblemDesc,
    num_problems: u32,
    total_tiles: u32,
    tile_n: u32,
    tile_m: u32,
    mut tile_fn: impl FnMut(*const ProblemDesc, u32, u32),
) {
    let mut tile = super::arch::thread::ctaid();
    while tile < total_tiles {
        let p = unsafe { problem_of_tile(table, num_problems, tile) };
        let desc = unsafe { table.add(p as usize) };
        let (tile_start, tiles_m) = unsafe { ((*desc).tile_start, (*desc).tiles_m) };
        let local = tile - tile_start;
        tile_fn(desc, (local / tiles_m) * tile_n, (local % tiles_m) * tile_m);
        tile += super::arch::thread::nctaid();
    }
}
