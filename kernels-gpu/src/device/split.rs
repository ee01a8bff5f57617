//! Split tiles: the K range of one tile shared by several CTAs, so that a launch whose tiles
//! do not fill the last wave (or the first: fewer tiles than CTA slots) keeps every CTA busy.
//!
//! The host chooses ([`crate::problem::Split`]): the first `dp_tiles` tiles of the launch are
//! whole; each later tile is cut into `parts` K ranges (units `dp_tiles + parts * (t -
//! dp_tiles) + q`, consecutive, so the parts of a tile run at the same time on different
//! CTAs). Part `q` of a tile with `chunks` K chunks takes chunks `chunks * q / parts ..
//! chunks * (q + 1) / parts` (empty when `chunks < parts`: that part adds zeros). Dynamic
//! launches ([`crate::problem::MODE_DYNAMIC`]) order and size the parts the guided way
//! instead ([`crate::problem::guided_part_start`]): every cut tile's (largest) part 0, then
//! every part 1, and so on.
//!
//! Every part stores its fp32 accumulators to its own slot of the workspace, then counts
//! itself in the tile's counter; the CTA that counts last adds the slots in part order
//! (its own from registers) and runs the normal epilogue, then resets the counter to 0 for
//! the next launch. The sum's order does not depend on which part finishes last, so results
//! are bitwise repeatable. Nothing waits on another CTA, so co-residency is never needed.
//!
//! Workspace (`ws`, 256-byte aligned): one `u32` counter per split tile (zero before the
//! launch), padded to 256 bytes, then `parts` slots per split tile of
//! [`crate::problem::split_partial_bytes`]`(threads)` bytes each: 16 fp32x4 per thread, `(i * threads + tid) * 16`
//! bytes into the slot for accumulator quad `i` (coalesced).

use super::arch::{global, shared, thread};

/// `$body` for `$i` = 0 .. 15 (16) or 0 .. 3 (4) as constants, so register arrays are
/// never indexed at run time (which would put them in local memory).
macro_rules! unroll16 {
    ($i:ident in $body:block) => {
        unroll_list!($i in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] $body)
    };
}
macro_rules! unroll4 {
    ($i:ident in $body:block) => { unroll_list!($i in [0, 1, 2, 3] $body) };
}
macro_rules! unroll_list {
    ($i:ident in [$($v:literal),*] $body:block) => { $( { let $i: usize = $v; $body } )* };
}
use crate::problem::{
    Split, guided_part_start, split_counter_bytes as counter_bytes,
    split_partial_bytes as partial_bytes,
};

/// One part of a cut tile, as [`combine`] needs it. The scheduler's thread 0 writes it to
/// a shared-memory record ([`Part::store`]) before the tile call and [`combine`] reads it
/// back after the K loop, so none of it occupies registers during the loop. The record
/// ([`RECORD_BYTES`], 8-byte aligned) holds in its first 32 bytes the last-count flag,
/// `parts` (0: a whole tile), `index`, a pad word, `slot0` and `counter`; then the dynamic
/// units' words, the tile's place ([`record_place`]) and, for pairs, the second value word
/// and [`REC_WORD`].
#[derive(Clone, Copy)]
struct Part {
    /// This part's index (0 .. parts).
    index: u32,
    /// Parts of the tile (0: the tile is whole).
    parts: u32,
    /// Device address of part 0's slot (part `q`'s is `q * partial_bytes` further).
    slot0: u64,
    /// Device address of the tile's counter.
    counter: u64,
}

const REC_FLAG: u32 = 0;
const REC_PARTS: u32 = 4;
const REC_INDEX: u32 = 8;
const REC_SLOT0: u32 = 16;
const REC_COUNTER: u32 = 24;
/// Dynamic units: the launch's unit counter (`u64`, 0 when the CTA strides over the units).
const REC_DYN: u32 = 32;
/// Dynamic units: the launch's unit count.
const REC_UNITS: u32 = 40;
/// Dynamic units: the counter value the last fetch returned (pairs: one of two words, see
/// [`REC_WORD`]).
const REC_NEXT: u32 = 44;
/// The tile's first weight row, first token row and token rows' end (the `_wt` kernels'
/// epilogue reads them back).
const REC_N0: u32 = 48;
const REC_M0: u32 = 52;
const REC_M_END: u32 = 56;
/// Pairs: the other word for the counter's value. The cluster's rank 0 writes each fetch's
/// value into both CTAs' records, alternating between [`REC_NEXT`] and this word unit by
/// unit, so that a write into a word comes after the cluster barrier that follows the
/// other CTA's read of that word's previous value (see [`dynamic_fetch`]).
const REC_NEXT_ALT: u32 = 60;
/// Pairs: the offset in the record ([`REC_NEXT`] or [`REC_NEXT_ALT`]) of the word the next
/// fetch writes and the next [`dynamic_next`] reads; [`dynamic_flip`] switches it.
const REC_WORD: u32 = 64;
/// Bytes of the shared-memory record.
pub const RECORD_BYTES: u32 = 68;

impl Part {
    /// Writes the record at `rec` (one thread).
    #[inline(always)]
    unsafe fn store(&self, rec: u32) {
        let w = |off: u32, v: u32| unsafe { shared::st_u32(rec + off, v) };
        w(REC_PARTS, self.parts);
        w(REC_INDEX, self.index);
        w(REC_SLOT0, self.slot0 as u32);
        w(REC_SLOT0 + 4, (self.slot0 >> 32) as u32);
        w(REC_COUNTER, self.counter as u32);
        w(REC_COUNTER + 4, (self.counter >> 32) as u32);
    }

    /// Reads the record at `rec`.
    #[inline(always)]
    unsafe fn load(rec: u32) -> Self {
        let r = |off: u32| unsafe { shared::ld_u32(rec + off) };
        let wide = |off: u32| r(off) as u64 | (r(off + 4) as u64) << 32;
        Self {
            parts: r(REC_PARTS),
            index: r(REC_INDEX),
            slot0: wide(REC_SLOT0),
            counter: wide(REC_COUNTER),
        }
    }
}

/// The K chunks a tile call computes, and where its part record is.
#[derive(Clone, Copy)]
pub struct Span {
    /// First K chunk.
    pub c0: u32,
    /// One past the last K chunk.
    pub c1: u32,
    /// Shared-memory address of the part record ([`RECORD_BYTES`]), for [`combine`].
    pub rec: u32,
}

/// A work unit's tile and, for a part of a cut tile, `(cut tile index, part index)`.
#[derive(Clone, Copy)]
pub struct Unit {
    /// The tile (linear index in the launch).
    pub tile: u32,
    /// `Some((s, q))` for part `q` of the launch's cut tile `s` (tile `dp_tiles + s`).
    pub cut: Option<(u32, u32)>,
    /// Whether the parts are in the guided order and sizes
    /// ([`crate::problem::guided_part_start`]: dynamic launches).
    pub guided: bool,
}

impl Unit {
    /// Unit `unit` of a launch of `total` tiles split as `split` (see the module doc); with
    /// `guided` (a dynamic launch) part `q` of cut tile `s` is unit `dp_tiles + q * cut + s`.
    #[inline(always)]
    pub fn new(unit: u32, split: &Split, total: u32, guided: bool) -> Self {
        let dp = split.dp_tiles;
        if split.parts <= 1 || unit < dp {
            return Self {
                tile: unit,
                cut: None,
                guided,
            };
        }
        let v = unit - dp;
        // Guided: unit < units, so total > dp and the cut count is at least 1.
        let x = if guided { total - dp } else { split.parts };
        let (d, r) = (v / x, v % x);
        let (s, q) = if guided { (r, d) } else { (d, r) };
        Self {
            tile: dp + s,
            cut: Some((s, q)),
            guided,
        }
    }

    /// Units of a launch of `total` tiles split as `split`.
    #[inline(always)]
    pub fn count(total: u32, split: &Split) -> u32 {
        if split.parts <= 1 || split.dp_tiles >= total {
            total
        } else {
            split.dp_tiles + (total - split.dp_tiles) * split.parts
        }
    }

    /// This unit's span of its tile's `chunks` K chunks, in a launch of `total` tiles split
    /// as `split`, for a CTA of `threads` threads; thread 0 writes the part record at `rec`
    /// ([`RECORD_BYTES`] of shared memory, 8-byte aligned), which [`combine`] reads after a
    /// barrier.
    ///
    /// # Safety
    /// Every thread calls it; nobody reads the record of the previous unit any more (the
    /// previous tile call ended with a barrier after [`combine`] read it).
    #[inline(always)]
    pub unsafe fn span(
        &self,
        chunks: u32,
        total: u32,
        split: &Split,
        threads: u32,
        rec: u32,
    ) -> Span {
        let (c0, c1, part) = match self.cut {
            None => (
                0,
                chunks,
                Part {
                    index: 0,
                    parts: 0,
                    slot0: 0,
                    counter: 0,
                },
            ),
            Some((s, q)) => {
                let (n, parts) = (chunks as u64, split.parts as u64);
                let slot0 = split.ws
                    + counter_bytes(total - split.dp_tiles)
                    + (s as u64 * parts) * partial_bytes(threads);
                let (c0, c1) = if self.guided {
                    (
                        guided_part_start(chunks, q, split.parts),
                        guided_part_start(chunks, q + 1, split.parts),
                    )
                } else {
                    (
                        (n * q as u64 / parts) as u32,
                        (n * (q as u64 + 1) / parts) as u32,
                    )
                };
                (
                    c0,
                    c1,
                    Part {
                        index: q,
                        parts: split.parts,
                        slot0,
                        counter: split.ws + 4 * s as u64,
                    },
                )
            }
        };
        if thread::tid() == 0 {
            unsafe { part.store(rec) };
        }
        Span { c0, c1, rec }
    }
}

/// Dynamic units (see [`crate::problem::MODE_DYNAMIC`]): thread 0 records the launch's unit
/// counter (`counter`, 0 for none) and unit count in the record at `rec`, once per CTA (with
/// `pair`, the pair kernels, also [`REC_WORD`], naming [`REC_NEXT`] as the first value
/// word).
///
/// # Safety
/// `rec` is the CTA's part record ([`RECORD_BYTES`] of shared memory, 8-byte aligned).
#[inline(always)]
pub unsafe fn dynamic_init(rec: u32, counter: u64, units: u32, pair: bool) {
    if thread::tid() == 0 {
        unsafe {
            shared::st_u32(rec + REC_DYN, counter as u32);
            shared::st_u32(rec + REC_DYN + 4, (counter >> 32) as u32);
            shared::st_u32(rec + REC_UNITS, units);
            if pair {
                shared::st_u32(rec + REC_WORD, REC_NEXT);
            }
        }
    }
}

/// Dynamic units: thread 0 takes the next value of the launch's unit counter into the
/// record (nothing when the launch has no counter). Every CTA that had a first unit fetches
/// once per unit it computes, until the value names no unit, so a launch of `units` units
/// on `grid` CTAs fetches exactly `units` times (`max(units - grid, 0)` fetches that name a
/// unit, plus one that does not for each of the `min(grid, units)` CTAs that had work): the
/// fetch that returns `units - 1` is the launch's last, and resets the counter to 0 for the
/// next launch.
///
/// With `P` (the pair kernels, clusters of two CTAs taking the same units) only the
/// cluster's CTA of rank 0 fetches, and its thread 0 writes the value into the record of
/// both CTAs (the other's through `mapa`): the cluster is then one fetcher, and the count
/// above holds with clusters for CTAs. The value goes into the word [`REC_WORD`] names,
/// which [`dynamic_flip`] switches after every unit: the fetch during unit `u + 2` writes
/// the word the other CTA read after unit `u`'s closing cluster barrier, and rank 0 only
/// gets there past unit `u + 1`'s, which the other CTA reaches after that read. (With one
/// word, that order rested on the TMA completions of unit `u + 1`'s first stage, which
/// compute-sanitizer's racecheck reports as a WAR hazard: H200 runs 214-215.)
///
/// # Safety
/// After [`dynamic_init`] on the same record; the counter is the launch's, zero at its
/// start. The caller publishes the record word with a CTA barrier (with `P`: a cluster
/// barrier, ending every unit) before [`dynamic_next`] reads it. Without `P` every thread
/// reads it before the next fetch; with `P` before the next unit's closing cluster barrier
/// (rank 0's next fetch may come first: it writes the other word), and [`dynamic_flip`]
/// runs once per unit, after the reads.
#[cfg_attr(not(nvfp4_sm90a), allow(dead_code))]
#[inline(always)]
pub unsafe fn dynamic_fetch<const P: bool>(rec: u32) {
    if thread::tid_fresh() == 0 && (!P || pair_rank() == 0) {
        let r = |off: u32| unsafe { shared::ld_u32(rec + off) };
        let counter = r(REC_DYN) as u64 | (r(REC_DYN + 4) as u64) << 32;
        if counter != 0 {
            let v = unsafe { global::atom_add_u32(counter, 1) };
            if v.wrapping_add(1) == r(REC_UNITS) {
                unsafe { global::st_relaxed_u32(counter, 0) };
            }
            let word = rec + if P { r(REC_WORD) } else { REC_NEXT };
            unsafe { shared::st_u32(word, v) };
            if P {
                unsafe { pair_store_other(word, v) };
            }
        }
    }
}

/// `%cluster_ctarank`: the CTA's rank in its cluster (the pair kernels; 0 off sm_90a,
/// where no kernel runs in clusters).
#[inline(always)]
pub fn pair_rank() -> u32 {
    #[cfg(nvfp4_sm90a)]
    {
        super::arch::cluster::rank()
    }
    #[cfg(not(nvfp4_sm90a))]
    {
        0
    }
}

/// Stores `v` at shared offset `addr` of the cluster's other CTA (rank 1; sm_90a only).
///
/// # Safety
/// As [`super::arch::cluster::st_remote_u32`].
#[inline(always)]
unsafe fn pair_store_other(addr: u32, v: u32) {
    #[cfg(nvfp4_sm90a)]
    unsafe {
        super::arch::cluster::st_remote_u32(addr, 1, v)
    };
    #[cfg(not(nvfp4_sm90a))]
    let _ = (addr, v);
}

/// Thread 0: records the tile's first weight row `n0`, first token row `m0` and token rows'
/// end `m_end` in the record at `rec`, for [`tile_place`] after the K loop.
///
/// # Safety
/// `rec` is the CTA's part record; nobody reads the previous tile's words any more.
#[inline(always)]
pub unsafe fn record_place(rec: u32, n0: u32, m0: u32, m_end: u32) {
    if thread::tid() == 0 {
        unsafe {
            shared::st_u32(rec + REC_N0, n0);
            shared::st_u32(rec + REC_M0, m0);
            shared::st_u32(rec + REC_M_END, m_end);
        }
    }
}

/// `(n0, m0, m_end)` as [`record_place`] left them (every thread, after a CTA barrier that
/// follows the record: [`combine`]'s first).
///
/// # Safety
/// As [`record_place`].
#[cfg_attr(not(nvfp4_sm90a), allow(dead_code))]
#[inline(always)]
pub unsafe fn tile_place(rec: u32) -> (u32, u32, u32) {
    let r = |off: u32| unsafe { shared::ld_u32(rec + off) };
    (r(REC_N0), r(REC_M0), r(REC_M_END))
}

/// Dynamic units: the counter value of the CTA's last [`dynamic_fetch`] (every thread, after
/// a barrier that follows the fetch; `pair`: the pair kernels, from the word [`REC_WORD`]
/// names).
///
/// # Safety
/// As [`dynamic_fetch`].
#[inline(always)]
pub unsafe fn dynamic_next(rec: u32, pair: bool) -> u32 {
    let word = if pair {
        unsafe { shared::ld_u32(rec + REC_WORD) }
    } else {
        REC_NEXT
    };
    unsafe { shared::ld_u32(rec + word) }
}

/// Pairs, thread 0: switches the value word ([`REC_WORD`]) for the next unit.
///
/// # Safety
/// After a CTA barrier that follows every thread's [`dynamic_next`] of this unit, before the
/// next unit's fetch; `rec` as [`dynamic_init`] left it with `pair`.
#[inline(always)]
pub unsafe fn dynamic_flip(rec: u32) {
    if thread::tid() == 0 {
        unsafe {
            let word = shared::ld_u32(rec + REC_WORD);
            shared::st_u32(rec + REC_WORD, REC_NEXT + REC_NEXT_ALT - word);
        }
    }
}

/// After a tile's K loop, with this thread's accumulators `acc` (quad `i` only where
/// `live(i)`: the others are zero and neither stored nor read): `true` if this CTA stores
/// the tile, `acc` then holding the whole K sum. A whole tile returns `true` at once. A
/// part stores its sums, counts itself, and returns `false` unless it counted last; the last
/// replaces `acc` by the sum of every part's slot in part order.
///
/// # Safety
/// Every thread of the CTA calls it (barriers), after [`Unit::span`] wrote the record; the
/// record's addresses are the launch's workspace as the host sized it, for a CTA of
/// `threads` threads.
#[inline(always)]
pub unsafe fn combine(
    acc: &mut [[f32; 4]; 16],
    live: impl Fn(usize) -> bool,
    span: &Span,
    threads: u32,
) -> bool {
    // The record was written by thread 0 before the K loop, which may have had no barrier
    // (an empty K range of the 16-bit portable kernel): publish it.
    unsafe { thread::sync_cta() };
    let p = unsafe { Part::load(span.rec) };
    if p.parts == 0 {
        return true;
    }
    // Quad i of part q's slot: `slot(q) + i * threads * 16` (an immediate offset).
    let slot =
        |q: u32| p.slot0 + q as u64 * partial_bytes(threads) + thread::tid_fresh() as u64 * 16;
    let own = slot(p.index);
    unroll16!(i in {
        if live(i) {
            unsafe { global::st_cg_v4_f32(own + (i as u32 * threads * 16) as u64, acc[i]) };
        }
    });
    unsafe {
        // Release: every thread's slot stores before thread 0's count.
        global::fence_gpu();
        thread::sync_cta();
        if thread::tid() == 0 {
            let last = global::atom_add_u32(p.counter, 1) + 1 == p.parts;
            if last {
                // Every part has counted: nobody touches the counter again in this launch.
                global::st_relaxed_u32(p.counter, 0);
            }
            shared::st_u32(span.rec + REC_FLAG, last as u32);
        }
        thread::sync_cta();
    }
    if unsafe { shared::ld_u32(span.rec + REC_FLAG) } == 0 {
        return false;
    }
    // Acquire: the other parts' stores are visible after the count that saw them all. The
    // sum reads every slot, this CTA's own too, in part order.
    unsafe { global::fence_gpu() };
    for q in 0..p.parts {
        let at = slot(q);
        unroll16!(i in {
            if live(i) {
                let x = unsafe { global::ld_cg_v4_f32(at + (i as u32 * threads * 16) as u64) };
                unroll4!(e in {
                    acc[i][e] = if q == 0 { x[e] } else { acc[i][e] + x[e] };
                });
            }
        });
    }
    true
}
