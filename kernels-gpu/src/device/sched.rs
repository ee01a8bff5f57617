//! The persistent group tile scheduler: which problem and tile a linear tile index names.
//!
//! With host-side sizes ([`SizeMode::Host`]) the table carries every problem's tile prefix
//! sum and the scheduler binary-searches it in global memory. With device-side sizes the row
//! counts are only known on the GPU: every CTA first reads them and computes the rows, row
//! offsets and tile prefix sums of all groups into its own shared memory (a block-wide scan,
//! at most [`MAX_DEVICE_GROUPS`] groups), then walks tiles the same way. A group with no rows
//! has no tiles, so it costs one read of its count.

use super::arch::{shared, thread, warp};
use super::split::{Span, Unit, dynamic_flip, dynamic_init, dynamic_next, record_place};
use crate::problem::{
    MAX_DEVICE_GROUPS, MODE_DYNAMIC, ProblemDesc, SizeMode, Split, split_ws_bytes,
};
use crate::tiling::CHUNK_K;

/// Shared memory the scheduler needs (per CTA): tile starts and rows (or row offsets) of
/// `MAX_DEVICE_GROUPS + 1` groups, and one word per warp for the scan.
pub const SCHED_SMEM_BYTES: u32 = crate::tiling::SCHED_SMEM_BYTES;
const TILE_START: u32 = 0;
const ROWS: u32 = TILE_START + 4 * (MAX_DEVICE_GROUPS as u32 + 1);
const SCRATCH: u32 = ROWS + 4 * (MAX_DEVICE_GROUPS as u32 + 1);
const _: () = assert!(SCRATCH + 4 * 32 <= SCHED_SMEM_BYTES);
const _: () = assert!(SCRATCH % 8 == 0 && super::split::RECORD_BYTES <= 4 * 32);

/// The cluster's index and the grid's clusters (the pair kernels' units; see
/// [`TileFn::PAIR`]).
#[inline(always)]
fn pair_index() -> (u32, u32) {
    #[cfg(nvfp4_sm90a)]
    {
        (super::arch::cluster::id(), super::arch::cluster::count())
    }
    #[cfg(not(nvfp4_sm90a))]
    {
        (thread::ctaid(), thread::nctaid())
    }
}

/// Index of the problem that owns linear tile `tile`: the largest `p` with
/// `start(p) <= tile` (problems with no tiles share their successor's start and are
/// skipped by taking the largest). Binary search: `num_problems` <= `MAX_PROBLEMS` = 2^16.
#[inline(always)]
fn search(num_problems: u32, tile: u32, start: impl Fn(u32) -> u32) -> u32 {
    let (mut lo, mut hi) = (0u32, num_problems); // answer in [lo, hi)
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if start(mid) <= tile {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Exclusive prefix sum of `x` over the CTA's threads in thread order (saturating at
/// `u32::MAX`), and the CTA's total. `scratch`: one shared word per warp.
///
/// # Safety
/// Every thread of the CTA calls it (two `bar.sync`s); `threads` is the CTA size, a multiple
/// of 32 and at most 1024.
#[inline(always)]
unsafe fn cta_exclusive_scan(x: u32, scratch: u32, threads: u32) -> (u32, u32) {
    let tid = thread::tid();
    let (lane, wid) = (tid % 32, tid / 32);
    let mut incl = x;
    let mut d = 1;
    while d < 32 {
        let y = unsafe { warp::shfl_up(incl, d) };
        if lane >= d {
            incl = incl.saturating_add(y);
        }
        d *= 2;
    }
    if lane == 31 {
        unsafe { shared::st_u32(scratch + 4 * wid, incl) };
    }
    unsafe { thread::sync_cta() };
    let (mut base, mut total) = (0u32, 0u32);
    for w in 0..threads / 32 {
        let t = unsafe { shared::ld_u32(scratch + 4 * w) };
        if w < wid {
            base = base.saturating_add(t);
        }
        total = total.saturating_add(t);
    }
    unsafe { thread::sync_cta() }; // scratch may be reused
    let excl_in_warp = unsafe { warp::shfl_up(incl, 1) };
    let excl = if lane == 0 { 0 } else { excl_in_warp };
    (base.saturating_add(excl), total)
}

/// Groups per thread in the device-side scan (`MAX_DEVICE_GROUPS / threads`, at most 4).
const MAX_PER_THREAD: usize = 4;

/// Computes the rows and tile prefix sums of every group from the device counts into the
/// scheduler's shared memory at `sched`; returns the launch's tile count.
///
/// # Safety
/// Every thread calls it; `num_problems <= MAX_DEVICE_GROUPS`, `counts` holds
/// `num_problems` words, `table` `num_problems` descriptors, and
/// `MAX_DEVICE_GROUPS / threads <= MAX_PER_THREAD`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn device_schedule(
    table: *const ProblemDesc,
    num_problems: u32,
    counts: *const u32,
    contiguous: bool,
    sched: u32,
    threads: u32,
    tile_n: u32,
    tile_m: u32,
) -> u32 {
    let per = MAX_DEVICE_GROUPS as u32 / threads;
    let first = thread::tid() * per;
    let scratch = sched + SCRATCH;
    let mut c = [0u32; MAX_PER_THREAD];
    for j in 0..MAX_PER_THREAD {
        let g = first + j as u32;
        if (j as u32) < per && g < num_problems {
            c[j] = unsafe { counts.add(g as usize).read_volatile() };
        }
    }
    // Rows of each group: min(count, capacity) with its own buffers; with one contiguous
    // buffer, the clamped prefix sums of the counts (the first row of each group).
    let mut rows = [0u32; MAX_PER_THREAD];
    if contiguous {
        let cap = unsafe { (*table).m };
        let mut local = 0u32;
        for cj in c {
            local = local.saturating_add(cj);
        }
        let (mut prefix, _) = unsafe { cta_exclusive_scan(local, scratch, threads) };
        for j in 0..MAX_PER_THREAD {
            let start = prefix.min(cap);
            prefix = prefix.saturating_add(c[j]);
            rows[j] = prefix.min(cap) - start;
            let g = first + j as u32;
            if (j as u32) < per && g < num_problems {
                // Group g's first row; entry num_problems is the end of the last group.
                unsafe { shared::st_u32(sched + ROWS + 4 * g, start) };
                if g + 1 == num_problems {
                    unsafe { shared::st_u32(sched + ROWS + 4 * num_problems, prefix.min(cap)) };
                }
            }
        }
    } else {
        for j in 0..MAX_PER_THREAD {
            let g = first + j as u32;
            if (j as u32) < per && g < num_problems {
                rows[j] = c[j].min(unsafe { (*table.add(g as usize)).m });
                unsafe { shared::st_u32(sched + ROWS + 4 * g, rows[j]) };
            }
        }
    }
    let mut tiles = [0u32; MAX_PER_THREAD];
    let mut local = 0u32;
    for j in 0..MAX_PER_THREAD {
        let g = first + j as u32;
        if (j as u32) < per && g < num_problems {
            let n = unsafe { (*table.add(g as usize)).n };
            tiles[j] = n.div_ceil(tile_n).saturating_mul(rows[j].div_ceil(tile_m));
        }
        local = local.saturating_add(tiles[j]);
    }
    let (mut start, total) = unsafe { cta_exclusive_scan(local, scratch, threads) };
    for j in 0..MAX_PER_THREAD {
        let g = first + j as u32;
        if (j as u32) < per && g < num_problems {
            unsafe { shared::st_u32(sched + TILE_START + 4 * g, start) };
        }
        start = start.saturating_add(tiles[j]);
    }
    unsafe { thread::sync_cta() };
    total
}

/// One tile's work unit as the scheduler hands it to [`TileFn::tile`]: the owning problem's
/// descriptor `desc`, the tile's first weight row `n0` and first token row `m0` (rows counted
/// in the problem's buffers, `m_offset` included), the end `m_end` of the problem's token
/// rows, and the K chunks `span` to compute (the tile's part when it is cut).
#[derive(Clone, Copy)]
pub struct Tile {
    pub desc: *const ProblemDesc,
    pub m_end: u32,
    pub n0: u32,
    pub m0: u32,
    pub span: Span,
}

/// The work of one tile (a trait rather than a closure so that the kernel body is always
/// inlined into the loop: LLVM declined to inline a closure this large, which cost a call
/// with a stack frame).
pub trait TileFn {
    /// Whether the kernel honours [`crate::problem::MODE_DYNAMIC`]: its tile work calls
    /// [`super::split::dynamic_fetch`] on the tile's record exactly once per call, on every
    /// path (no early return before it), after its K loop and before a CTA barrier, and
    /// [`for_each_tile`] takes the CTA's next unit from it. The counter's reset depends on
    /// that count (see `dynamic_fetch`). Only for these kernels does [`for_each_tile`] also
    /// write the tile's place into the record ([`super::split::record_place`]), which the
    /// `_wt` kernels' staged epilogue reads back ([`super::split::tile_place`]): a kernel
    /// that reads it must be `DYNAMIC`.
    const DYNAMIC: bool = false;

    /// Whether the kernel is launched in clusters of two CTAs that compute the two 128-row
    /// halves of each (256-row) tile together: [`for_each_tile`] then hands units out by
    /// cluster (`%clusterid.x`, `%nclusterid.x`) instead of by CTA, so both CTAs of a cluster
    /// take the same units. With [`crate::problem::MODE_DYNAMIC`] the cluster's rank 0
    /// fetches for both (see [`super::split::dynamic_fetch`]), from the counter after its
    /// slots; the tile work then ends with a cluster barrier.
    const PAIR: bool = false;

    /// Computes `tile` (see [`Tile`]). Every thread of the CTA calls it.
    ///
    /// # Safety
    /// As [`for_each_tile`].
    unsafe fn tile(&mut self, tile: Tile);
}

/// The persistent loop of a kernel: this CTA takes work units `blockIdx.x`,
/// `blockIdx.x + gridDim.x`, ... of the launch (one per tile, or with host sizes and
/// `split` several per cut tile, see [`super::split`]; with [`TileFn::PAIR`] the cluster's
/// index and count instead, both CTAs of a cluster taking the same units) and calls
/// `tile_fn.tile` with each unit's [`Tile`]. With [`MODE_DYNAMIC`] in `mode` (host sizes, a
/// `T` with [`TileFn::DYNAMIC`]) the units past the first come from the launch's unit
/// counter in `split.ws` instead (pairs: taken by the cluster's rank 0 for both CTAs). Tile
/// `t` of a problem covers weight rows from `(t / tiles_m) * tile_n` and tokens from
/// `(t % tiles_m) * tile_m` past the problem's first row.
///
/// `mode` is a [`SizeMode`] code; with a device mode the counts are read from `counts`,
/// `total_tiles` and `split` are ignored and `sched` (shared memory, [`SCHED_SMEM_BYTES`])
/// holds the schedule.
///
/// # Safety
/// Every CTA thread calls it with the same arguments; the host validated the table for
/// `mode` (see [`SizeMode`]): in host mode `tile_start` non-decreasing from 0 and `tile` <
/// `total_tiles`, and `split` as [`Split`] says (a workspace sized for `total_tiles` and
/// `threads`, the units fitting `u32`; with [`MODE_DYNAMIC`] the zeroed unit counter after
/// the slots); in device modes `num_problems <= MAX_DEVICE_GROUPS`
/// and `counts` holds `num_problems` words.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn for_each_tile<T: TileFn>(
    table: *const ProblemDesc,
    num_problems: u32,
    total_tiles: u32,
    counts: *const u32,
    mode: u32,
    sched: u32,
    threads: u32,
    tile_n: u32,
    tile_m: u32,
    split: Split,
    tile_fn: &mut T,
) {
    // Only kernels whose tile work fetches read the flag (the others' code is as before).
    // The pair kernels fetch once a cluster (rank 0, see `dynamic_fetch`).
    let dynamic = T::DYNAMIC && mode & MODE_DYNAMIC != 0;
    let mode = if T::DYNAMIC {
        mode & !MODE_DYNAMIC
    } else {
        mode
    };
    let mode = SizeMode::from_code(mode).unwrap_or(SizeMode::Host);
    // Tiles are only cut with host sizes (the device modes' counts are not known up front).
    let split = if mode == SizeMode::Host {
        split
    } else {
        Split::default()
    };
    let contiguous = mode == SizeMode::DeviceContiguous;
    let total = match mode {
        SizeMode::Host => total_tiles,
        _ => unsafe {
            device_schedule(
                table,
                num_problems,
                counts,
                contiguous,
                sched,
                threads,
                tile_n,
                tile_m,
            )
        },
    };
    let units = Unit::count(total, &split);
    // Tiles are only cut, and units only fetched, with host sizes.
    let dynamic = dynamic && mode == SizeMode::Host;
    if dynamic {
        let cut = if split.parts <= 1 {
            0
        } else {
            total - split.dp_tiles.min(total)
        };
        // After the slots (pairs: after rank 0's, whose CTA alone fetches; rank 1's slots
        // follow the counter's 256 bytes, see the pair kernels, so rank 1's record holds an
        // address it never uses).
        let counter = split.ws + split_ws_bytes(cut, split.parts.max(1), threads);
        unsafe { dynamic_init(sched + SCRATCH, counter, units, T::PAIR) };
    } else if T::DYNAMIC {
        unsafe { dynamic_init(sched + SCRATCH, 0, units, T::PAIR) };
    }
    // Pairs: both CTAs of a cluster take the cluster's units.
    let mut index = if T::PAIR {
        pair_index().0
    } else {
        thread::ctaid()
    };
    while index < units {
        let unit = Unit::new(index, &split, total, dynamic);
        let tile = unit.tile;
        let (p, local, first_row, rows) = if mode == SizeMode::Host {
            let p = search(num_problems, tile, |q| unsafe {
                (*table.add(q as usize)).tile_start
            });
            let d = unsafe { &*table.add(p as usize) };
            (p, tile - d.tile_start, 0, d.m)
        } else {
            let p = search(num_problems, tile, |q| unsafe {
                shared::ld_u32(sched + TILE_START + 4 * q)
            });
            let start = unsafe { shared::ld_u32(sched + TILE_START + 4 * p) };
            let row = unsafe { shared::ld_u32(sched + ROWS + 4 * p) };
            if contiguous {
                let end = unsafe { shared::ld_u32(sched + ROWS + 4 * (p + 1)) };
                (p, tile - start, row, end - row)
            } else {
                (p, tile - start, 0, row)
            }
        };
        let desc = unsafe { table.add(p as usize) };
        let first_row = first_row + unsafe { (*desc).m_offset };
        let tiles_m = rows.div_ceil(tile_m);
        // The part record lives in the scan's scratch words: only device modes scan, and
        // they have been scanned before the first unit.
        let chunks = unsafe { (*desc).k }.div_ceil(CHUNK_K);
        let span = unsafe { unit.span(chunks, total, &split, threads, sched + SCRATCH) };
        let (n0, m0, m_end) = (
            (local / tiles_m) * tile_n,
            first_row + (local % tiles_m) * tile_m,
            first_row + rows,
        );
        if T::DYNAMIC {
            // The tile's place for its epilogue ([`super::split::tile_place`]), so that no
            // register holds it through the K loop.
            unsafe { record_place(sched + SCRATCH, n0, m0, m_end) };
        }
        unsafe {
            tile_fn.tile(Tile {
                desc,
                m_end,
                n0,
                m0,
                span,
            })
        };
        if dynamic {
            // The tile work fetched after its K loop; every thread reads the value before
            // the barrier, and thread 0 writes the next one only after it. Pairs: rank 0
            // wrote both CTAs' records before the tile's closing cluster barrier, into the
            // word that thread 0 switches after the barrier (see `dynamic_fetch`).
            // (Pairs: the clusters, half the CTAs, by a shift rather than a branch: a
            // branch here changed the other kernels' block order.)
            index = (thread::nctaid() >> T::PAIR as u32)
                .saturating_add(unsafe { dynamic_next(sched + SCRATCH, T::PAIR) });
            unsafe { thread::sync_cta() };
            if T::PAIR {
                unsafe { dynamic_flip(sched + SCRATCH) };
            }
        } else {
            // (Read afresh: a special register, not kept live across the tile.)
            index += if T::PAIR {
                pair_index().1
            } else {
                thread::nctaid()
            };
        }
    }
}
