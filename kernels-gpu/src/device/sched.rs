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
