//! Packing a validated group into the device problem table the kernels read.
//!
//! One [`ProblemDesc`] per problem, in the caller's order (empty problems included, with no
//! tiles), `tile_start` the exclusive prefix sum of `kernels_gpu::tiling::tiles_for(m, n)`.
//! The kernels walk linear tile indices `0..total_tiles` and find a tile's problem as the
//! largest `p` with `tile_start[p] <= tile` ([`PackedTable::tile_owner`] is the same mapping
//! on the host, for tests); within a problem, tile `t` covers weight rows (N) from
//! `(t / tiles_m) * TILE_N` and tokens (M) from `(t % tiles_m) * TILE_M`.

use crate::Result;
use crate::validate::{self, ProblemSpec};
use kernels_gpu::kernels::{GROUPED_GEMM_MMA, KernelInfo};
use kernels_gpu::problem::ProblemDesc;

/// A validated group as the kernels read it.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedTable {
    /// One descriptor per problem, in order.
    pub descs: Vec<ProblemDesc>,
    /// Tiles of the whole group (0: nothing to launch).
    pub total_tiles: u32,
    /// Weight rows (N) per tile of the kernel the table was packed for.
    pub tile_n: u32,
    /// Tokens (M) per tile of the kernel the table was packed for.
    pub tile_m: u32,
}

impl PackedTable {
    /// The table with every descriptor's `flags` set to `flags` (how the kernels write `c`).
    pub(crate) fn with_flags(mut self, flags: u32) -> Self {
        for d in &mut self.descs {
            d.flags = flags;
        }
        self
    }
}

/// Where one linear tile index of a launch lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileCoord {
    /// Index of the problem.
    pub problem: usize,
    /// First weight row (row of B, column of C) of the tile.
    pub n0: u32,
    /// First token (row of A and C) of the tile.
    pub m0: u32,
}

/// Validates `specs` ([`validate::check_specs`]) and packs them for the portable kernel.
///
/// # Errors
/// Any validation error of [`validate::check_specs`].
pub fn pack(specs: &[ProblemSpec]) -> Result<PackedTable> {
    pack_for(specs, &GROUPED_GEMM_MMA)
}

/// Validates `specs` and packs them for `kernel`'s tile shape (`tiles_m`, `tile_start`).
///
/// # Errors
/// Any validation error of [`validate::check_specs`]. (Validation bounds the tile count with
/// the portable kernel's tiles, the smallest of all kernels, so every kernel's count fits.)
pub fn pack_for(specs: &[ProblemSpec], kernel: &KernelInfo) -> Result<PackedTable> {
    let checked = validate::check_group(specs)?;
    Ok(pack_checked(specs, &checked, kernel))
}

/// Packs problems that passed validation (`checked` from `validate::check_group*`).
pub(crate) fn pack_checked(
    specs: &[ProblemSpec],
    checked: &[validate::Checked],
    kernel: &KernelInfo,
) -> PackedTable {
    let mut descs = Vec::with_capacity(specs.len());
    let mut tile_start: u64 = 0;
    for (s, c) in specs.iter().zip(checked) {
        descs.push(ProblemDesc {
            a: s.a.addr,
            b: s.b.addr,
            sfa: s.sfa.addr,
            sfb: s.sfb.addr,
            c: s.c.addr,
            lda: c.lda,
            ldb: c.ldb,
            ldc: c.ldc,
            m: c.m,
            n: c.n,
            k: c.k,
            sfa_layout: s.sfa_layout as u32,
            sfb_layout: s.sfb_layout as u32,
            alpha: s.alpha,
            // Validation bounded the sum of tiles by u32::MAX.
            tile_start: tile_start as u32,
            tiles_m: c.m.div_ceil(kernel.tile_m),
            m_offset: 0,
            flags: 0,
        });
        tile_start += if c.m == 0 || c.n == 0 {
            0
        } else {
            kernel.tiles_for(c.m, c.n)
        };
    }
    debug_assert!(tile_start <= u64::from(u32::MAX));
    PackedTable {
        descs,
        total_tiles: tile_start as u32,
        tile_n: kernel.tile_n,
        tile_m: kernel.tile_m,
    }
}

impl PackedTable {
    /// The problem and tile origin of linear tile `tile`, as the kernels compute them;
    /// `None` if `tile >= total_tiles`.
    pub fn tile_owner(&self, tile: u32) -> Option<TileCoord> {
        if tile >= self.total_tiles {
            return None;
        }
        // Largest p with tile_start <= tile: empty problems share their successor's start.
        let problem = self
            .descs
            .partition_point(|d| d.tile_start <= tile)
            .checked_sub(1)?;
        let d = &self.descs[problem];
        let local = tile - d.tile_start;
        Some(TileCoord {
            problem,
            n0: (local / d.tiles_m) * self.tile_n,
            m0: (local % d.tiles_m) * self.tile_m,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScaleLayout;
    use crate::validate::Span;

    fn spec(base: u64, m: usize, n: usize, k: usize) -> ProblemSpec {
        let big = 1 << 30;
        ProblemSpec {
            m,
            n,
            k,
            a: Span::new(base, big),
            lda: None,
            sfa: Span::new(base + (1 << 31), big),
            sfa_layout: ScaleLayout::Plain,
            b: Span::new(base + (2 << 31), big),
            ldb: None,
            sfb: Span::new(base + (3 << 31), big),
            sfb_layout: ScaleLayout::Blocked,
            c: Span::new(base + (4 << 31), big),
            ldc: None,
            alpha: 1.0,
        }
    }

    #[test]
    fn every_tile_of_every_problem_once() {
        let shapes = [
            (0, 200, 64),
            (1, 130, 128),
            (65, 256, 512),
            (0, 0, 16),
            (200, 1, 16),
            (0, 5, 32),
        ];
        let specs: Vec<_> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(m, n, k))| spec((i as u64 + 1) << 40, m, n, k))
            .collect();
        let t = pack(&specs).unwrap();
        let mut seen = std::collections::HashSet::new();
        for tile in 0..t.total_tiles {
            let c = t.tile_owner(tile).unwrap();
            let (m, n, _) = shapes[c.problem];
            assert!((c.m0 as usize) < m && (c.n0 as usize) < n, "{c:?}");
            assert!(seen.insert(c));
        }
        let want: u64 = shapes
            .iter()
            .map(|&(m, n, _)| kernels_gpu::tiling::tiles_for(m as u32, n as u32))
            .sum();
        assert_eq!(u64::from(t.total_tiles), want);
        assert_eq!(t.tile_owner(t.total_tiles), None);
        assert_eq!(t.descs[0].tile_start, 0);
        assert_eq!(t.descs[3].sfb_layout, ScaleLayout::Blocked as u32);
    }

    #[test]
    fn empty_group_has_no_tiles() {
        let t = pack(&[]).unwrap();
        assert_eq!(t.total_tiles, 0);
        assert!(t.descs.is_empty());
        let t = pack(&[spec(1 << 40, 0, 128, 64)]).unwrap();
        assert_eq!(t.total_tiles, 0);
        assert_eq!(t.tile_owner(0), None);
    }
}
