//! Global -> shared copies of FP4 rows and their scales, shared by both kernels, and the
//! portable kernels' 16-bit token loads and copies.
//!
//! A K chunk of a row is `CHUNK_K / 2` = 32 bytes of FP4 (four 8-byte units, one per scale
//! block) and `CHUNK_K / 16` = 4 scale bytes. Everything that does not change along K (row
//! pointers, row validity, the scale layout's per-chunk step) is computed once per tile, so a
//! chunk costs one add and one `cp.async` per copy. Copies past the operand's rows or past K
//! are zero-filled, so padding (which may hold NaN scale codes) is never read.

use super::arch::{copy, global, shared};
use crate::layout::{ScaleLayout, scale_offset};
use crate::problem::ProblemDesc;
use crate::tiling::CHUNK_K;

/// FP4 bytes per row per chunk.
pub const ROW_BYTES: u32 = CHUNK_K / 2;
/// Scale bytes per row per chunk.
pub const ROW_SCALES: u32 = CHUNK_K / 16;

/// One operand of a problem as the copies see it.
#[derive(Clone, Copy)]
pub struct Operand {
    /// Device address of row 0.
    pub data: u64,
    /// Bytes between rows.
    pub ld: u64,
    /// Device address of the scales.
    pub scales: u64,
    /// Layout of the scales.
    pub layout: ScaleLayout,
    /// Rows of the operand.
    pub rows: u32,
    /// K of the problem (a multiple of 16).
    pub k: u32,
}

impl Operand {
    /// The weights `B` of problem `d` (`n` rows).
    #[inline(always)]
    pub fn weights(d: &ProblemDesc) -> Self {
        Self {
            data: d.b,
            ld: d.ldb,
            scales: d.sfb,
            layout: ScaleLayout::from_code(d.sfb_layout).unwrap_or(ScaleLayout::Plain),
            rows: d.n,
            k: d.k,
        }
    }

    /// The tokens `A` of problem `d`, rows `0..m_end` of its buffers (the problem's own rows
    /// start at its first row; rows before it are never asked for).
    #[inline(always)]
    pub fn tokens(d: &ProblemDesc, m_end: u32) -> Self {
        Self {
            data: d.a,
            ld: d.lda,
            scales: d.sfa,
            layout: ScaleLayout::from_code(d.sfa_layout).unwrap_or(ScaleLayout::Plain),
            rows: m_end,
            k: d.k,
        }
    }
}

/// Start addresses of rows `first + step * i` (`i < N`) of `op`, and a bit set of the rows
/// that exist (a missing row's address is `op.data`, row 0's start). Every address is the
/// start of a row inside the buffer, so a zero-size copy from it (past K, or of a missing
/// row) names a valid address, whatever K is.
#[inline(always)]
fn row_sources<const N: usize>(op: &Operand, first: u32, step: u32) -> ([u64; N], u32) {
    let mut src = [op.data; N];
    let mut valid = 0;
    for (i, s) in src.iter_mut().enumerate() {
        let row = first + step * i as u32;
        if row < op.rows {
            *s = op.data + row as u64 * op.ld;
            valid |= 1 << i;
        }
    }
    (src, valid)
}

/// This thread's share of the FP4 copies of one operand's tile rows: unit `unit` (8 bytes)
/// of rows `row0 + first + step * i`, `i < N`.
#[derive(Clone, Copy)]
pub struct Fp4Rows<const N: usize> {
    src: [u64; N],
    valid: u32, // bit i: row i exists
    unit: u32,
    k: u32,
}

impl<const N: usize> Fp4Rows<N> {
    /// Prepares the copies of tile rows `first + step * i` (tile origin `row0`), unit `unit`.
    #[inline(always)]
    pub fn new(op: &Operand, row0: u32, first: u32, step: u32, unit: u32) -> Self {
        let (src, valid) = row_sources(op, row0 + first, step);
        Self {
            src,
            valid,
            unit,
            k: op.k,
        }
    }

    /// Issues chunk `chunk`'s copies; row `i` lands at `dst + i * dst_step + unit * 8`.
    #[inline(always)]
    pub unsafe fn issue(&self, chunk: u32, dst: u32, dst_step: u32) {
        // Inside K: every unit of a full chunk; in the last chunk, units below K.
        let in_k = chunk * CHUNK_K + self.unit * 16 < self.k;
        let off = chunk * ROW_BYTES + self.unit * 8;
        for i in 0..N {
            let ok = in_k && self.valid & (1 << i) != 0;
            // A copy that reads nothing reads it from the row's start.
            let src = self.src[i] + if ok { off } else { 0 } as u64;
            let dst = dst + i as u32 * dst_step + self.unit * 8;
            unsafe { copy::async_8(dst, src, if ok { 8 } else { 0 }) };
        }
    }
}

/// This thread's copy of one tile row's 4 scale bytes per chunk.
#[derive(Clone, Copy)]
pub struct ScaleRow {
    /// Address of the row's scales for chunk 0 (0 when the row does not exist).
    src: u64,
    /// Bytes from one chunk's 4 scales to the next: 4 (plain), 512 (blocked).
    step: u64,
    /// Scale columns of a row (K / 16); 0 when the row does not exist.
    cols: u32,
    /// Whether 4-byte copies are aligned (blocked layout, or K / 16 a multiple of 4).
    aligned: bool,
}

impl ScaleRow {
    /// Prepares the copies of global row `row` of `op`.
    #[inline(always)]
    pub fn new(op: &Operand, row: u32) -> Self {
        let cols = op.k / 16;
        let blocked = matches!(op.layout, ScaleLayout::Blocked);
        let exists = row < op.rows;
        Self {
            src: if exists {
                op.scales + scale_offset(op.layout, row as u64, 0, op.k)
            } else {
                op.scales
            },
            step: if blocked { 512 } else { ROW_SCALES as u64 },
            cols: if exists { cols } else { 0 },
            aligned: blocked || cols % 4 == 0,
        }
    }

    /// Copies chunk `chunk`'s 4 scale bytes to `dst` (zeros past the row's K / 16 columns).
    #[inline(always)]
    pub unsafe fn issue(&self, chunk: u32, dst: u32) {
        let col = chunk * ROW_SCALES;
        let valid = if col < self.cols {
            (self.cols - col).min(ROW_SCALES)
        } else {
            0
        };
        if self.aligned {
            let src = if valid > 0 {
                self.src + chunk as u64 * self.step
            } else {
                self.src
            };
            unsafe { copy::async_4(dst, src, valid) };
        } else {
            // Plain layout with K / 16 not a multiple of 4: the row's bytes are unaligned.
            let src = self.src + col as u64;
            let mut v = 0u32;
            for j in 0..ROW_SCALES {
                if j < valid {
                    v |= unsafe { copy::ld_global_u8(src + j as u64) } << (8 * j);
                }
            }
            unsafe { shared::st_u32(dst, v) };
        }
    }
}

impl ScaleRow {
    /// Copies the row's 16 scale bytes of the group of four chunks that holds chunk `chunk`
    /// (chunks `4 (chunk / 4) ..`) to `dst` (16-byte aligned); zeros for a row that does not
    /// exist. Only for the plain layout with `K` a multiple of 256 and the scales 16-byte
    /// aligned: the group is then 16 aligned bytes inside the row.
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    pub unsafe fn issue_group(&self, chunk: u32, dst: u32) {
        // A copy that reads nothing reads it from the scales' start.
        let (src, bytes) = if self.cols > 0 {
            (self.src + (chunk / 4) as u64 * 16, 16)
        } else {
            (self.src, 0)
        };
        unsafe { copy::async_16(dst, src, bytes) };
    }
}

impl ScaleRow {
    /// [`ScaleRow::issue`], then one arrival on the mbarrier `bar` once the 4 bytes are in
    /// shared memory: when the copy is asynchronous, after it completes
    /// (`cp.async.mbarrier.arrive.noinc`); otherwise (unaligned rows, copied by plain loads
    /// and a store) a release arrive after the store.
    #[cfg(nvfp4_sm90a)]
    #[inline(always)]
    pub unsafe fn issue_then_arrive(&self, chunk: u32, dst: u32, bar: u32) {
        unsafe {
            self.issue(chunk, dst);
            if self.aligned {
                super::arch::tma::cp_async_mbar_arrive(bar);
            } else {
                super::arch::tma::mbar_arrive(bar);
            }
        }
    }
}

/// This thread's share of the 16-bit activation loads of a tile (the portable W4A16 kernels):
/// 16-byte unit `unit` (8 values of a 64-value chunk) of token rows `row0 + first + step * i`,
/// `i < N`, read from global memory straight into registers ([`Tok16::fetch`]), or copied into
/// shared memory ([`Tok16::issue`], the token pass's paired rows).
#[derive(Clone, Copy)]
pub struct Tok16<const N: usize> {
    src: [u64; N],
    valid: u32, // bit i: row i exists
    unit: u32,
    k: u32,
}

impl<const N: usize> Tok16<N> {
    /// Prepares the loads of rows `first + step * i` past `row0` of `op` (whose `ld` is in
    /// bytes and whose rows hold `k` 16-bit values), unit `unit` of each chunk.
    #[inline(always)]
    pub fn new(op: &Operand, row0: u32, first: u32, step: u32, unit: u32) -> Self {
        let (src, valid) = row_sources(op, row0 + first, step);
        Self {
            src,
            valid,
            unit,
            k: op.k,
        }
    }

    /// Copies chunk `chunk`'s 16-byte unit of each row into shared memory, asynchronously:
    /// row `i` (tile row `first + step * i`) to `buf + row * 128 + ((unit ^ (row & 1)) * 16)`,
    /// the token tile layout of the portable kernel. Zero-filled past the rows and past K.
    /// The rows' addresses must be 16-byte aligned.
    #[inline(always)]
    pub unsafe fn issue(&self, chunk: u32, buf: u32, first: u32, step: u32) {
        let in_k = chunk * CHUNK_K + self.unit * 8 < self.k;
        let off = chunk * CHUNK_K * 2 + self.unit * 16;
        for i in 0..N {
            let ok = in_k && self.valid & (1 << i) != 0;
            // A copy that reads nothing reads it from the row's start.
            let src = self.src[i] + if ok { off } else { 0 } as u64;
            let row = first + step * i as u32;
            let dst = buf + row * CHUNK_K * 2 + ((self.unit ^ (row & 1)) * 16);
            unsafe { copy::async_16(dst, src, if ok { 16 } else { 0 }) };
        }
    }

    /// Chunk `chunk`'s values of each row (zeros past the rows and past K, and everywhere
    /// unless `wanted`).
    #[inline(always)]
    pub unsafe fn fetch(&self, chunk: u32, wanted: bool) -> [[u32; 4]; N] {
        let in_k = wanted && chunk * CHUNK_K + self.unit * 8 < self.k;
        let off = chunk * CHUNK_K * 2 + self.unit * 16;
        let mut out = [[0u32; 4]; N];
        // Predicated loads: a branch per row cost ptxas a dozen instructions a row.
        for (i, o) in out.iter_mut().enumerate() {
            let live = in_k && self.valid & (1 << i) != 0;
            *o = unsafe { global::ld_nc_v4_if(self.src[i] + off as u64, live) };
        }
        out
    }
}
