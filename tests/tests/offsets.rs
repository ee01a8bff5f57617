//! 64-bit offsets: the index arithmetic past 2^31 and 2^32 bytes.
//!
//! On the CPU: `kernels_gpu::layout::{scale_offset, scale_len}` for up to 2^21 rows and K up
//! to 2^16 against an independent `u128` computation from DESIGN.md's formulas; validation
//! of problems whose operands span more than 4 GiB (exact needed lengths, strided buffers);
//! extents that overflow `u64` giving the typed `Error::Overflow`, not a panic; the tile
//! count at exactly `u32::MAX`.
//!
//! On the GPU (ignored without one): one problem whose B operand is larger than 2^31 bytes,
//! so that row offsets `row * ldb` pass 2^31, checked on sampled columns; and one whose A, B
//! and C rows lie so far apart that every row offset passes 2^32 bytes while the kernels do
//! little work (cheap enough for racecheck).

use kernels_gpu::kernels::{GROUPED_GEMM_MMA, GROUPED_GEMM_WGMMA};
use kernels_gpu::layout::{ScaleLayout, scale_len, scale_offset};
use nvfp4::r#gen::{Distribution, Rng, pack_scales, problem};
use nvfp4::reference::Tolerance;
use nvfp4::table::{pack, pack_for};
use nvfp4::validate::{ProblemSpec, Span, check_specs};
use nvfp4::{DeviceInput, DeviceOutput, Error, HostProblem, Problem, f16};
use nvfp4_tests::{Gpu, POISON, assert_err, check};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use ScaleLayout::{Blocked, Plain};

// ----- scale layout arithmetic -----

/// DESIGN.md's byte offset of the scale of (`row`, scale column `col`), in `u128`.
fn offset_u128(layout: ScaleLayout, row: u128, col: u128, k: u128) -> u128 {
    let cols = k / 16;
    match layout {
        Plain => row * cols + col,
        Blocked => {
            ((row / 128) * cols.div_ceil(4) + col / 4) * 512
                + (row % 32) * 16
                + ((row % 128) / 32) * 4
                + col % 4
        }
    }
}

/// Scale bytes of `rows` x `k`, in `u128`: rows padded to 128 and columns to 4 when blocked.
fn len_u128(layout: ScaleLayout, rows: u128, k: u128) -> u128 {
    let cols = k / 16;
    match layout {
        Plain => rows * cols,
        Blocked => rows.div_ceil(128) * 128 * cols.div_ceil(4) * 4,
    }
}

#[track_caller]
fn check_offsets(layout: ScaleLayout, rows: u64, k: u32, row: u64, col: u64) {
    let want = offset_u128(layout, row.into(), col.into(), k.into());
    let got = scale_offset(layout, row, col, k);
    assert_eq!(
        u128::from(got),
        want,
        "{layout:?} rows={rows} k={k}: offset of ({row}, {col})"
    );
    let len = scale_len(layout, rows, k);
    assert_eq!(
        u128::from(len),
        len_u128(layout, rows.into(), k.into()),
        "{layout:?}: len of {rows} x {k}"
    );
    assert!(
        got < len,
        "{layout:?} rows={rows} k={k}: ({row}, {col}) at {got} >= {len}"
    );
}

#[test]
fn scale_offsets_past_2_pow_32_match_u128() {
    const MAX_ROWS: u64 = 1 << 21;
    let mut past_2_32 = 0;
    for layout in [Plain, Blocked] {
        for rows in [
            1,
            127,
            128,
            129,
            1 << 20,
            (1 << 20) + 77,
            MAX_ROWS - 1,
            MAX_ROWS,
        ] {
            for k in [16u32, 48, 64, 4096, 7168, 8192, 65_520, 65_536] {
                let cols = u64::from(k / 16);
                for row in [0, 1, 31, 32, 127, 128, rows / 2, rows - 1] {
                    for col in [0, 1, 3, 4, cols / 2, cols - 1] {
                        if row < rows && col < cols {
                            check_offsets(layout, rows, k, row, col);
                            past_2_32 += usize::from(scale_offset(layout, row, col, k) >= 1 << 32);
                        }
                    }
                }
                // The last byte: for full 128-row and 4-column blocks (and always for plain)
                // the last scale sits at the last byte of the buffer.
                if layout == Plain || (rows % 128 == 0 && cols % 4 == 0) {
                    assert_eq!(
                        scale_offset(layout, rows - 1, cols - 1, k) + 1,
                        scale_len(layout, rows, k),
                        "{layout:?} rows={rows} k={k}"
                    );
                }
            }
        }
    }
    // 2^21 rows x 4096 scale columns is 2^33 bytes.
    assert_eq!(scale_len(Plain, MAX_ROWS, 65_536), 1 << 33);
    assert_eq!(scale_len(Blocked, MAX_ROWS, 65_536), 1 << 33);
    assert_eq!(
        scale_offset(Blocked, MAX_ROWS - 1, 4095, 65_536),
        (1 << 33) - 1
    );
    assert!(past_2_32 > 50, "only {past_2_32} offsets past 2^32 checked");
}

#[test]
fn scale_offsets_random_match_u128() {
    let env = Config::default();
    let config = Config {
        cases: 20_000,
        rng_seed: match env.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x0ff5e7),
            fixed => fixed,
        },
        failure_persistence: None,
        ..env
    };
    let strategy = (
        any::<bool>(),
        1u64..=(1 << 21),
        1u32..=4096,
        any::<u64>(),
        any::<u64>(),
    );
    TestRunner::new(config)
        .run(&strategy, |(blocked, rows, k16, r, c)| {
            let layout = if blocked { Blocked } else { Plain };
            let k = 16 * k16;
            check_offsets(layout, rows, k, r % rows, c % u64::from(k16));
            Ok(())
        })
        .unwrap();
}

// ----- validation of extents past 4 GiB -----

/// A problem with every operand in its own 2^44-byte window, `len` bytes each (0: exactly
/// what the model below says it needs).
#[derive(Clone, Copy, Debug)]
struct Big {
    m: usize,
    n: usize,
    k: usize,
    lda: Option<usize>,
    ldb: Option<usize>,
    ldc: Option<usize>,
    sfa_layout: ScaleLayout,
    sfb_layout: ScaleLayout,
}

impl Big {
    /// Bytes each operand needs (a, sfa, b, sfb, c), in `u128`, from the documented rules.
    fn needed(&self) -> [u128; 5] {
        let (m, n, k) = (self.m as u128, self.n as u128, self.k as u128);
        let row = k / 2;
        let lda = self.lda.map_or(row, |x| x as u128);
        let ldb = self.ldb.map_or(row, |x| x as u128);
        let ldc = self.ldc.map_or(n, |x| x as u128);
        let strided = |rows: u128, stride: u128, row: u128| {
            if rows == 0 || row == 0 {
                0
            } else {
                (rows - 1) * stride + row
            }
        };
        [
            strided(m, lda, row),
            len_u128(self.sfa_layout, m, k),
            strided(n, ldb, row),
            len_u128(self.sfb_layout, n, k),
            2 * strided(m, ldc, n),
        ]
    }

    fn spec(&self, lens: [usize; 5]) -> ProblemSpec {
        let at = |i: u64| (i + 1) << 44;
        ProblemSpec {
            m: self.m,
            n: self.n,
            k: self.k,
            a: Span::new(at(0), lens[0]),
            lda: self.lda,
            sfa: Span::new(at(1), lens[1]),
            sfa_layout: self.sfa_layout,
            b: Span::new(at(2), lens[2]),
            ldb: self.ldb,
            sfb: Span::new(at(3), lens[3]),
            sfb_layout: self.sfb_layout,
            c: Span::new(at(4), lens[4]),
            ldc: self.ldc,
            alpha: 1.0,
        }
    }

    fn exact(&self) -> ProblemSpec {
        self.spec(self.needed().map(|x| usize::try_from(x).unwrap()))
    }
}

const FIELDS: [&str; 5] = ["a", "sfa", "b", "sfb", "c"];

#[test]
fn extents_past_4_gib_validate_with_exact_lengths() {
    let k = 8192;
    let cases = [
        // Packed rows: A and B are 2^32 + a little bytes.
        Big {
            m: (1 << 20) + 3,
            n: (1 << 20) + 64,
            k,
            lda: None,
            ldb: None,
            ldc: None,
            sfa_layout: Plain,
            sfb_layout: Blocked,
        },
        // Strided rows on every operand.
        Big {
            m: (1 << 20) + 1,
            n: (1 << 20) + 129,
            k,
            lda: Some(4096 + 64),
            ldb: Some(4096 + 8),
            ldc: Some((1 << 20) + 129 + 7),
            sfa_layout: Blocked,
            sfb_layout: Plain,
        },
        // Few tokens, many weight rows: B alone past 2^32.
        Big {
            m: 24,
            n: (1 << 20) + 100,
            k,
            lda: None,
            ldb: Some(4096 + 24),
            ldc: None,
            sfa_layout: Blocked,
            sfb_layout: Blocked,
        },
    ];
    for big in cases {
        let needed = big.needed();
        assert!(needed[2] > 1 << 32, "{big:?}: B is {} bytes", needed[2]);
        let spec = big.exact();
        check_specs(&[spec]).unwrap_or_else(|e| panic!("{big:?}: {e}"));
        for kernel in [&GROUPED_GEMM_MMA, &GROUPED_GEMM_WGMMA] {
            let t = pack_for(&[spec], kernel).unwrap();
            let d = t.descs[0];
            assert_eq!(d.lda, big.lda.unwrap_or(k / 2) as u64);
            assert_eq!(d.ldb, big.ldb.unwrap_or(k / 2) as u64);
            assert_eq!(d.ldc, big.ldc.unwrap_or(big.n) as u64);
            let tiles = (big.m as u64).div_ceil(kernel.tile_m.into())
                * (big.n as u64).div_ceil(kernel.tile_n.into());
            assert_eq!(u64::from(t.total_tiles), tiles);
        }
        // One byte short of any operand: BufferTooSmall with the exact u128 need.
        for (f, field) in FIELDS.iter().enumerate() {
            let mut lens = needed.map(|x| x as usize);
            lens[f] -= 1;
            let err = check_specs(&[big.spec(lens)]).unwrap_err();
            match &err {
                Error::BufferTooSmall {
                    problem: 0,
                    field: got,
                    needed: n,
                    given,
                } => {
                    assert_eq!(got, field);
                    assert_eq!(u128::from(*n), needed[f], "{big:?}: `{field}`");
                    assert_eq!(u128::from(*given), needed[f] - 1);
                }
                other => panic!("{big:?}: `{field}` short: {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(&needed[f].to_string()), "{msg}");
        }
    }
}

#[track_caller]
fn assert_overflow(spec: ProblemSpec, field: &str) {
    let result = std::panic::catch_unwind(|| check_specs(&[spec]));
    let err = match result {
        Ok(Err(e)) => e,
        Ok(Ok(())) => panic!("accepted: {spec:?}"),
        Err(_) => panic!("validation panicked on {spec:?}"),
    };
    assert!(
        matches!(&err, Error::Overflow { problem: 0, field: f } if *f == field),
        "`{field}`: {err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("problem 0: ") && msg.contains(&format!("`{field}`")),
        "{msg}"
    );
    assert_eq!(pack(&[spec]).unwrap_err().to_string(), msg);
}

#[test]
fn extents_overflowing_u64_are_typed_errors() {
    let base = Big {
        m: 5,
        n: 7,
        k: 8192,
        lda: None,
        ldb: None,
        ldc: None,
        sfa_layout: Plain,
        sfb_layout: Plain,
    };
    let max = [1usize << 60; 5]; // ample, and no buffer wraps
    // (m - 1) * lda = 4 * 2^62 = 2^64.
    assert_overflow(
        Big {
            lda: Some(1 << 62),
            ..base
        }
        .spec(max),
        "a",
    );
    // The largest multiple of 8 as ldb, two rows.
    assert_overflow(
        Big {
            ldb: Some(usize::MAX & !7),
            ..base
        }
        .spec(max),
        "b",
    );
    // ((m - 1) * ldc + n) * 2 = (4 * 2^62 + 7) * 2.
    assert_overflow(
        Big {
            ldc: Some(1 << 62),
            ..base
        }
        .spec(max),
        "c",
    );
    // Only the bytes overflow: (m - 1) * ldc + n < 2^64 <= its double.
    assert_overflow(
        Big {
            m: 3,
            ldc: Some(1 << 62),
            ..base
        }
        .spec(max),
        "c",
    );
    // u32::MAX rows 2^40 bytes apart.
    assert_overflow(
        Big {
            m: u32::MAX as usize,
            lda: Some(1 << 40),
            ..base
        }
        .spec(max),
        "a",
    );
    // A buffer whose end wraps the address space.
    let mut wraps = base.exact();
    wraps.b.addr = !7; // 8-aligned, 8 bytes below 2^64
    assert_overflow(wraps, "b");
    let mut wraps = base.exact();
    wraps.sfb.addr = u64::MAX - 19; // 4-aligned, 20 bytes below 2^64; 7 * 512 bytes long
    assert_overflow(wraps, "sfb");
}

#[test]
fn huge_ldc_of_one_row_or_empty_c_is_valid() {
    // C needs ((m - 1) * ldc + n) * 2 bytes: with one row (or none) ldc is never used, so a
    // stride whose double overflows u64 is still valid (it once gave Error::Overflow).
    for (m, n) in [(1, 7), (0, 7), (0, 0), (5, 0)] {
        let big = Big {
            m,
            n,
            k: 64,
            lda: None,
            ldb: None,
            ldc: Some(1 << 63),
            sfa_layout: Plain,
            sfb_layout: Blocked,
        };
        let spec = big.exact();
        check_specs(&[spec]).unwrap_or_else(|e| panic!("m={m} n={n}: {e}"));
        let t = pack(&[spec]).unwrap();
        assert_eq!(t.descs[0].ldc, 1 << 63);
    }
    // Two rows: the stride counts, and overflows.
    let two = Big {
        m: 2,
        n: 7,
        k: 64,
        lda: None,
        ldb: None,
        ldc: Some(1 << 63),
        sfa_layout: Plain,
        sfb_layout: Plain,
    };
    assert_overflow(two.spec([1 << 60; 5]), "c");
}

#[test]
fn tile_count_exactly_u32_max() {
    // ceil(m / 64) = 65537 and ceil(n / 128) = 65535: 65537 * 65535 = 2^32 - 1 tiles.
    let (m, n) = (65_537 * 64, 65_535 * 128);
    let big = Big {
        m,
        n,
        k: 16,
        lda: None,
        ldb: None,
        ldc: None,
        sfa_layout: Plain,
        sfb_layout: Plain,
    };
    let spec = big.exact();
    let t = pack(&[spec]).unwrap();
    assert_eq!(t.total_tiles, u32::MAX);
    let last = t.tile_owner(u32::MAX - 1).unwrap();
    assert_eq!(
        (last.problem, last.n0, last.m0),
        (0, 65_534 * 128, 65_536 * 64)
    );
    assert_eq!(t.tile_owner(u32::MAX), None);
    // The Hopper kernel's 128-token tiles: 32769 * 65535.
    let h = pack_for(&[spec], &GROUPED_GEMM_WGMMA).unwrap();
    assert_eq!(u64::from(h.total_tiles), 32_769 * 65_535);
    // One more tile in a second problem is one too many.
    let mut one = Big { m: 1, n: 1, ..big }.exact();
    for s in [
        &mut one.a,
        &mut one.sfa,
        &mut one.b,
        &mut one.sfb,
        &mut one.c,
    ] {
        s.addr += 1 << 50;
    }
    let err = check_specs(&[spec, one]).unwrap_err();
    assert_err!(
        err,
        Error::TooManyTiles { tiles, max } if tiles == 1 << 32 && max == u64::from(u32::MAX)
    );
}

// ----- on the GPU: B past 2^31 bytes -----

/// Rows of B are drawn from a pool of this many random rows; a prime, so that rows `r` and
/// `r + 2^19` (or `r + 2^20`) differ: a kernel that wrapped `row * ldb` at 2^31 or 2^32 bytes
/// would read a different row.
const POOL_ROWS: usize = 4099;

/// The pool row of B's row `r`.
fn pool_row(r: usize) -> usize {
    (r * 7919) % POOL_ROWS
}

#[test]
#[ignore = "needs a CUDA GPU with 16 GiB free; run with --ignored on a GPU machine"]
fn b_operand_past_2_gib() {
    let gpu = Gpu::new();
    let (free, total) = gpu.ctx.mem_get_info().expect("mem_get_info");
    println!("GPU memory: {} MiB free of {} MiB", free >> 20, total >> 20);
    // Not a silent pass: too little memory fails, saying the test did not run.
    assert!(
        free >= 16 << 30,
        "needs 16 GiB of free GPU memory, {} MiB free: not run",
        free >> 20
    );
    let (m, n, k) = (24usize, (1usize << 19) + 64, 8192usize);
    let row = k / 2;
    let scale_cols = k / 16;
    assert!(n * row > 1 << 31);
    // A (and its scales) and the pool of B rows, FullRange.
    let mut rng = Rng::new(17_000);
    let pool = problem(
        &mut rng,
        m,
        POOL_ROWS,
        k,
        Distribution::FullRange,
        Blocked,
        Plain,
    );
    let mut b = vec![0u8; n * row];
    for (r, dst) in b.chunks_exact_mut(row).enumerate() {
        let p = pool_row(r);
        dst.copy_from_slice(&pool.b[p * row..(p + 1) * row]);
    }
    let mut sfb_plain = vec![0u8; n * scale_cols];
    for (r, dst) in sfb_plain.chunks_exact_mut(scale_cols).enumerate() {
        let p = pool_row(r);
        dst.copy_from_slice(&pool.sfb[p * scale_cols..(p + 1) * scale_cols]);
    }
    // Sampled output columns: spread over N, around 2^18 and 2^19, and the last 64 (the
    // partial last tile).
    let mut cols: Vec<usize> = (0..432).map(|i| i * (n - 64) / 432).collect();
    cols.extend([
        (1 << 18) - 1,
        1 << 18,
        (1 << 19) - 2,
        (1 << 19) - 1,
        1 << 19,
    ]);
    cols.extend([(1 << 19) + 1, (1 << 19) + 2, (1 << 19) + 3]);
    cols.extend((n - 72)..(n - 64));
    cols.extend((n - 64)..n);
    cols.sort_unstable();
    cols.dedup();
    assert!(cols.len() >= 500 && *cols.last().unwrap() == n - 1);

    let stream = &gpu.stream;
    let a_dev = stream.clone_htod(&pool.a).unwrap();
    let sfa_dev = stream.clone_htod(&pool.sfa).unwrap();
    let b_dev = stream.clone_htod(&b).unwrap();
    drop(b);
    for sfb_layout in [Plain, Blocked] {
        let sfb = match sfb_layout {
            Plain => sfb_plain.clone(),
            Blocked => pack_scales(Blocked, n, k, &sfb_plain, || 0x7F),
        };
        let sfb_dev = stream.clone_htod(&sfb).unwrap();
        drop(sfb);
        let mut c_dev = stream
            .clone_htod(&vec![f16::from_bits(POISON); m * n])
            .unwrap();
        let problems = [Problem {
            m,
            n,
            k,
            a: DeviceInput::from(&a_dev),
            lda: None,
            sfa: DeviceInput::from(&sfa_dev),
            sfa_layout: Blocked,
            b: DeviceInput::from(&b_dev),
            ldb: None,
            sfb: DeviceInput::from(&sfb_dev),
            sfb_layout,
            c: DeviceOutput::from(&mut c_dev),
            ldc: None,
            alpha: 1.0,
        }];
        gpu.gemm.run(stream, &problems).expect("run");
        drop(problems);
        let c: Vec<f16> = stream.clone_dtoh(&c_dev).unwrap();
        stream.synchronize().unwrap();
        let unwritten = c.iter().filter(|x| x.to_bits() == POISON).count();
        assert_eq!(
            unwritten, 0,
            "{sfb_layout:?}: {unwritten} outputs never written"
        );
        // The reference on the sampled columns: a sub-problem of those rows of B.
        let sub = HostProblem {
            m,
            n: cols.len(),
            k,
            a: pool.a.clone(),
            sfa: pool.sfa.clone(),
            sfa_layout: Blocked,
            b: cols
                .iter()
                .flat_map(|&j| {
                    pool.b[pool_row(j) * row..(pool_row(j) + 1) * row]
                        .iter()
                        .copied()
                })
                .collect(),
            sfb: cols
                .iter()
                .flat_map(|&j| {
                    let p = pool_row(j);
                    pool.sfb[p * scale_cols..(p + 1) * scale_cols]
                        .iter()
                        .copied()
                })
                .collect(),
            sfb_layout: Plain,
            alpha: 1.0,
        };
        let got: Vec<f16> = (0..m)
            .flat_map(|i| cols.iter().map(move |&j| (i, j)))
            .map(|(i, j)| c[i * n + j])
            .collect();
        let cmp = check(
            &format!(
                "B past 2 GiB, sfb {sfb_layout:?}, {} sampled columns",
                cols.len()
            ),
            &sub,
            &got,
            Tolerance::FullRange,
        );
        assert!(
            cmp.passed,
            "{sfb_layout:?}: {} sampled outputs wrong",
            cmp.bad
        );
    }
}

/// Rows far apart: A, B and C with strides of 128 MiB, 2 MiB and 128 MiB, so that `row * lda`,
/// `row * ldb` and `row * ldc * 2` pass 2^32 bytes while the kernels do little work (this is
/// the 64-bit-offset test the sanitizers can afford; `b_operand_past_2_gib` is the large one).
#[test]
#[ignore = "needs a CUDA GPU with 20 GiB free; run with --ignored on a GPU machine"]
fn strided_rows_past_4_gib() {
    let gpu = Gpu::new();
    let (free, _) = gpu.ctx.mem_get_info().expect("mem_get_info");
    assert!(
        free >= 20 << 30,
        "needs 20 GiB of free GPU memory, {} MiB free: not run",
        free >> 20
    );
    let (m, n, k) = (40usize, 2100usize, 272usize);
    let row = k / 2;
    let lda = (1usize << 27) + 64;
    let ldb = (1usize << 21) + 8;
    let ldc = (1usize << 26) + 3; // fp16 elements: 128 MiB + 6 bytes between rows of C
    assert!((n - 1) * ldb > 1 << 32 && (m - 1) * ldc * 2 > 1 << 32 && (m - 1) * lda > 1 << 32);
    let mut rng = Rng::new(17_100);
    for (sfa_layout, sfb_layout) in [(Plain, Blocked), (Blocked, Plain)] {
        let p = problem(
            &mut rng,
            m,
            n,
            k,
            Distribution::FullRange,
            sfa_layout,
            sfb_layout,
        );
        let stream = &gpu.stream;
        let mut a = stream.alloc_zeros::<u8>((m - 1) * lda + row).unwrap();
        let mut b = stream.alloc_zeros::<u8>((n - 1) * ldb + row).unwrap();
        let mut c = stream.alloc_zeros::<f16>((m - 1) * ldc + n).unwrap();
        for r in 0..m {
            let dst = &mut a.slice_mut(r * lda..r * lda + row);
            stream
                .memcpy_htod(&p.a[r * row..(r + 1) * row], dst)
                .unwrap();
            let poison = vec![f16::from_bits(POISON); n];
            stream
                .memcpy_htod(&poison, &mut c.slice_mut(r * ldc..r * ldc + n))
                .unwrap();
        }
        for r in 0..n {
            let dst = &mut b.slice_mut(r * ldb..r * ldb + row);
            stream
                .memcpy_htod(&p.b[r * row..(r + 1) * row], dst)
                .unwrap();
        }
        let sfa = stream.clone_htod(&p.sfa).unwrap();
        let sfb = stream.clone_htod(&p.sfb).unwrap();
        let problems = [Problem {
            m,
            n,
            k,
            a: DeviceInput::from(&a),
            lda: Some(lda),
            sfa: DeviceInput::from(&sfa),
            sfa_layout,
            b: DeviceInput::from(&b),
            ldb: Some(ldb),
            sfb: DeviceInput::from(&sfb),
            sfb_layout,
            c: DeviceOutput::from(&mut c),
            ldc: Some(ldc),
            alpha: 1.0,
        }];
        gpu.gemm.run(stream, &problems).expect("run");
        drop(problems);
        let mut got = Vec::with_capacity(m * n);
        for r in 0..m {
            got.extend(stream.clone_dtoh(&c.slice(r * ldc..r * ldc + n)).unwrap());
        }
        stream.synchronize().unwrap();
        let cmp = check(
            &format!("strided rows past 4 GiB, {sfa_layout:?}/{sfb_layout:?}"),
            &p,
            &got,
            Tolerance::FullRange,
        );
        assert!(cmp.passed, "{} wrong outputs", cmp.bad);
    }
}
