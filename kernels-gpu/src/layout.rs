//! Scale-factor layouts: where the E4M3 scale of (row, scale column) lives in a scale buffer.
//!
//! One scale covers 16 consecutive K elements of a row, so a row has `K / 16` scale columns.
//! All offsets are `u64`: a [2^20, 4096] operand has 2^28 scales, and products of row and
//! stride must not wrap on the device either.

/// Elements of K covered by one E4M3 scale.
pub const SCALE_BLOCK: u32 = 16;

/// How an operand's scales are laid out in memory.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScaleLayout {
    /// Row-major `[rows, K/16]`, one byte per scale, no padding.
    Plain = 0,
    /// cuBLAS / tcgen05 "128x4" blocked layout (the reference's `sfasfb_reordered`), logical
    /// shape `[32, 4, ceil(rows/128), 4, ceil(K/64)]`: rows padded to 128 and scale columns to
    /// 4. The byte for (r, c) is at
    /// `((r/128) * ceil(K/64) + c/4) * 512 + (r%32) * 16 + ((r%128)/32) * 4 + c%4`.
    Blocked = 1,
}

impl ScaleLayout {
    /// The layout with this `u32` code, as stored in the problem table.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Plain),
            1 => Some(Self::Blocked),
            _ => None,
        }
    }
}

/// Scale columns of a row: `K / 16` (K must be a multiple of 16; callers validate).
#[inline(always)]
pub const fn scale_cols(k: u32) -> u32 {
    k / SCALE_BLOCK
}

/// Byte offset of the scale for (`row`, scale column `col`) of an operand with `k` columns.
#[inline(always)]
pub const fn scale_offset(layout: ScaleLayout, row: u64, col: u64, k: u32) -> u64 {
    let cols = scale_cols(k) as u64;
    match layout {
        ScaleLayout::Plain => row * cols + col,
        ScaleLayout::Blocked => {
            let col_groups = cols.div_ceil(4);
            ((row / 128) * col_groups + col / 4) * 512
                + (row % 32) * 16
                + ((row % 128) / 32) * 4
                + col % 4
        }
    }
}

/// Exact number of scale bytes an operand of `rows` x `k` needs in `layout`.
#[inline(always)]
pub const fn scale_len(layout: ScaleLayout, rows: u64, k: u32) -> u64 {
    let cols = scale_cols(k) as u64;
    match layout {
        ScaleLayout::Plain => rows * cols,
        ScaleLayout::Blocked => rows.div_ceil(128) * 128 * cols.div_ceil(4) * 4,
    }
}
