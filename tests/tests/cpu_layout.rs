//! `kernels_gpu::layout` and `nvfp4::gen::pack_scales` against literal transcriptions of the
//! GPU MODE reference (`problems/nvidia/nvfp4_group_gemm/reference.py`), replayed with a
//! small strided-tensor model of PyTorch's `view` / `permute` / `reshape` / `transpose`.

use kernels_gpu::layout::{ScaleLayout, scale_len, scale_offset};
use nvfp4::r#gen::{Rng, pack_scales};

/// A strided view over a flat buffer, as PyTorch keeps one.
#[derive(Clone, Debug)]
struct View {
    shape: Vec<usize>,
    strides: Vec<usize>,
}

impl View {
    /// A contiguous (row-major) tensor of `shape`.
    fn contiguous(shape: &[usize]) -> Self {
        let mut strides = vec![1; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        Self {
            shape: shape.to_vec(),
            strides,
        }
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// `tensor.permute(order)`: dimension d of the result is dimension `order[d]` of self.
    fn permute(&self, order: &[usize]) -> Self {
        assert_eq!(order.len(), self.shape.len());
        Self {
            shape: order.iter().map(|&d| self.shape[d]).collect(),
            strides: order.iter().map(|&d| self.strides[d]).collect(),
        }
    }

    /// `tensor.transpose(a, b)`.
    fn transpose(&self, a: usize, b: usize) -> Self {
        let mut order: Vec<usize> = (0..self.shape.len()).collect();
        order.swap(a, b);
        self.permute(&order)
    }

    /// Flat offset of the element at `index`.
    fn offset(&self, index: &[usize]) -> usize {
        assert_eq!(index.len(), self.shape.len());
        index
            .iter()
            .zip(&self.shape)
            .for_each(|(i, n)| assert!(i < n));
        index.iter().zip(&self.strides).map(|(i, s)| i * s).sum()
    }

    /// The buffer offsets of all elements in logical (row-major) order: what `.contiguous()`
    /// or `.flatten()` copies out, element by element.
    fn logical_order(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.numel());
        let mut index = vec![0usize; self.shape.len()];
        if self.numel() == 0 {
            return out;
        }
        loop {
            out.push(self.offset(&index));
            let mut d = self.shape.len();
            loop {
                if d == 0 {
                    return out;
                }
                d -= 1;
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
    }
}

/// Materializes `view` over `buf` (`.contiguous()`), returning the new flat buffer.
fn materialize(buf: &[u32], view: &View) -> Vec<u32> {
    view.logical_order().into_iter().map(|o| buf[o]).collect()
}

/// `reshape` of a contiguous buffer: the elements keep their order, only the shape changes.
fn reshape(buf: &[u32], shape: &[usize]) -> View {
    let v = View::contiguous(shape);
    assert_eq!(v.numel(), buf.len());
    v
}

/// The reference's `to_blocked(input_matrix)` on an already padded
/// `[rows_padded, cols_padded]` matrix of element ids (`r * cols_padded + c`):
/// ```text
/// blocks = padded.view(n_row_blocks, 128, n_col_blocks, 4).permute(0, 2, 1, 3)
/// rearranged = blocks.reshape(-1, 4, 32, 4).transpose(1, 2).reshape(-1, 32, 16)
/// return rearranged.flatten()
/// ```
/// Returns the flattened ids: `out[offset] = id`.
fn to_blocked_ids(rows_padded: usize, cols_padded: usize) -> Vec<u32> {
    let (rb, cb) = (rows_padded / 128, cols_padded / 4);
    let ids: Vec<u32> = (0..(rows_padded * cols_padded) as u32).collect();
    let blocks = reshape(&ids, &[rb, 128, cb, 4]).permute(&[0, 2, 1, 3]);
    // reshape of a non-contiguous view copies it first.
    let blocks = materialize(&ids, &blocks);
    let t = reshape(&blocks, &[rb * cb, 4, 32, 4]).transpose(1, 2);
    let t = materialize(&blocks, &t);
    let flat = reshape(&t, &[rb * cb, 32, 16]);
    materialize(&t, &flat)
}

/// The reference's `create_reordered_scale_factor_tensor(l = 1, mn, k, ref)`: storage of
/// shape `(l, ceil(mn/128), ceil(sf_k/4), 32, 4, 4)`, viewed through
/// `permute(3, 4, 1, 5, 2, 0)` as `(32, 4, rest_m, 4, rest_k, l)`, then
/// ```text
/// mm = i // 128; mm32 = i % 32; mm4 = (i % 128) // 32; kk = j // 4; kk4 = j % 4
/// reordered[mm32, mm4, mm, kk4, kk, b] = ref[i, j, b]
/// ```
/// Returns the storage offset written for each `(i, j)`, row-major over `[mn, sf_k]`.
fn reordered_offsets(mn: usize, k: usize) -> (Vec<usize>, usize) {
    let sf_k = k.div_ceil(16);
    let storage = View::contiguous(&[1, mn.div_ceil(128), sf_k.div_ceil(4), 32, 4, 4]);
    let view = storage.permute(&[3, 4, 1, 5, 2, 0]);
    let mut out = Vec::with_capacity(mn * sf_k);
    for i in 0..mn {
        for j in 0..sf_k {
            let (mm, mm32, mm4, kk, kk4) = (i / 128, i % 32, (i % 128) / 32, j / 4, j % 4);
            out.push(view.offset(&[mm32, mm4, mm, kk4, kk, 0]));
        }
    }
    (out, storage.numel())
}

/// Rows around every boundary of the 32 / 128 row blocks, and a few large ones.
const ROWS: [usize; 15] = [
    0, 1, 5, 31, 32, 33, 96, 127, 128, 129, 200, 255, 256, 257, 513,
];
/// K with K/16 not a multiple of 4 (16, 48, 80, 400, ...) and the project's K up to 7168.
const KS: [usize; 13] = [16, 32, 48, 64, 80, 128, 144, 208, 256, 400, 512, 1536, 7168];

#[test]
fn blocked_matches_reference_to_blocked() {
    for &rows in &ROWS {
        for &k in &KS {
            let cols = k / 16;
            let (rp, cp) = (rows.div_ceil(128) * 128, cols.div_ceil(4) * 4);
            let flat = to_blocked_ids(rp, cp);
            assert_eq!(
                scale_len(ScaleLayout::Blocked, rows as u64, k as u32),
                flat.len() as u64
            );
            let mut offset_of = vec![usize::MAX; flat.len()];
            for (o, &id) in flat.iter().enumerate() {
                offset_of[id as usize] = o;
            }
            for r in 0..rows {
                for c in 0..cols {
                    let want = offset_of[r * cp + c] as u64;
                    let got = scale_offset(ScaleLayout::Blocked, r as u64, c as u64, k as u32);
                    assert_eq!(got, want, "rows {rows}, k {k}: (r {r}, c {c})");
                }
            }
        }
    }
}

#[test]
fn blocked_matches_reference_reordered_tensor() {
    for &rows in &ROWS {
        for &k in &KS {
            let cols = k / 16;
            let (offsets, storage_len) = reordered_offsets(rows, k);
            assert_eq!(
                scale_len(ScaleLayout::Blocked, rows as u64, k as u32),
                storage_len as u64
            );
            for r in 0..rows {
                for c in 0..cols {
                    let got = scale_offset(ScaleLayout::Blocked, r as u64, c as u64, k as u32);
                    assert_eq!(
                        got,
                        offsets[r * cols + c] as u64,
                        "rows {rows}, k {k}: ({r}, {c})"
                    );
                }
            }
        }
    }
}

/// Over the padded index range, the blocked offsets are a permutation of `0..scale_len`.
#[test]
fn blocked_is_a_bijection_over_the_padded_range() {
    for &rows in &ROWS {
        for &k in &KS {
            let (rp, cp) = (rows.div_ceil(128) * 128, (k / 16).div_ceil(4) * 4);
            let len = scale_len(ScaleLayout::Blocked, rows as u64, k as u32) as usize;
            assert_eq!(len, rp * cp);
            let mut seen = vec![false; len];
            for r in 0..rp {
                for c in 0..cp {
                    let o = scale_offset(ScaleLayout::Blocked, r as u64, c as u64, k as u32);
                    assert!(!std::mem::replace(&mut seen[o as usize], true), "{o} twice");
                }
            }
        }
    }
}

#[test]
fn plain_layout() {
    for &rows in &ROWS {
        for &k in &KS {
            let cols = (k / 16) as u64;
            assert_eq!(
                scale_len(ScaleLayout::Plain, rows as u64, k as u32),
                rows as u64 * cols
            );
            for r in 0..rows as u64 {
                for c in [0, cols / 2, cols - 1] {
                    assert_eq!(
                        scale_offset(ScaleLayout::Plain, r, c, k as u32),
                        r * cols + c
                    );
                }
            }
        }
    }
}

/// Offsets are computed in u64 and do not wrap for operands with more than 2^32 scales.
#[test]
fn offsets_do_not_wrap() {
    let rows = 1u64 << 22;
    let k = 1u32 << 16; // 4096 scale columns: 2^34 scales
    assert_eq!(scale_len(ScaleLayout::Blocked, rows, k), 1u64 << 34);
    assert_eq!(
        scale_offset(ScaleLayout::Blocked, rows - 1, 4095, k),
        (1u64 << 34) - 1
    );
    assert_eq!(
        scale_offset(ScaleLayout::Plain, rows - 1, 4095, k),
        (1u64 << 34) - 1
    );
}

#[test]
fn pack_scales_round_trip() {
    let mut rng = Rng::new(7);
    for &rows in &ROWS {
        for &k in &KS {
            let cols = k / 16;
            let plain: Vec<u8> = (0..rows * cols).map(|_| rng.next_u64() as u8).collect();
            for layout in [ScaleLayout::Plain, ScaleLayout::Blocked] {
                let mut pads = 0usize;
                let packed = pack_scales(layout, rows, k, &plain, || {
                    pads += 1;
                    0x7F
                });
                assert_eq!(
                    packed.len() as u64,
                    scale_len(layout, rows as u64, k as u32)
                );
                assert_eq!(
                    pads,
                    packed.len() - plain.len(),
                    "{layout:?} rows {rows} k {k}"
                );
                let mut is_logical = vec![false; packed.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        let o = scale_offset(layout, r as u64, c as u64, k as u32) as usize;
                        assert_eq!(packed[o], plain[r * cols + c]);
                        is_logical[o] = true;
                    }
                }
                for (o, &b) in packed.iter().enumerate() {
                    if !is_logical[o] {
                        assert_eq!(b, 0x7F, "padding byte {o} not from pad()");
                    }
                }
            }
        }
    }
}
