//! Property tests (proptest) of validation and packing, and a GPU property test.
//!
//! - [`validation_agrees_with_model`]: random groups of 1..=12 problems, described as
//!   [`ProblemSpec`]s at made-up device addresses (validation never dereferences them): shapes
//!   with `m`, `n` in 0..300 and `k` any multiple of 16 up to 1024, sometimes 0, not a
//!   multiple of 16 or past `u32`; default, padded, too small, misaligned or huge strides;
//!   plain and blocked scales; buffers exact, longer, short by 1..N, halved or empty;
//!   misaligned, null or near-2^64 addresses; finite and non-finite `alpha`; inputs shared
//!   between problems and buffers placed inside other buffers (overlaps, sometimes only of
//!   the gaps between strided rows). An independent model in this file, written from the
//!   rules in the module docs of `nvfp4::validate` (not from its code), decides for each
//!   group whether it is valid, and if not which error comes first; `check_specs`, `pack` and
//!   `pack_for` (both kernels) must agree with it exactly, never panic, and every error must
//!   name its problem and field. Valid groups are packed for both kernels and the table is
//!   checked: descriptors, `tiles_m`, `tile_start` prefix sums of the kernel's tile counts,
//!   and every tile of every problem owned by exactly one linear tile index.
//! - [`tile_counts_agree_with_model`]: groups of large problems (up to 2^22 x 2^22) around
//!   the `u32` tile limit.
//! - [`gpu_random_groups_match_reference`] (needs a GPU, ignored without one): random small
//!   valid groups with random layouts, row padding and alpha, on the device, against the f64
//!   CPU reference.
//!
//! Runs are deterministic (a fixed seed), so CI is repeatable. Explore other inputs with
//! `PROPTEST_RNG_SEED=<u64>`, more of them with `PROPTEST_CASES=<n>`; a failure prints the
//! shrunk group.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use kernels_gpu::kernels::{GROUPED_GEMM_MMA, GROUPED_GEMM_WGMMA, KernelInfo};
use nvfp4::r#gen::{Distribution, Rng, problem};
use nvfp4::reference::Tolerance;
use nvfp4::table::{PackedTable, pack, pack_for};
use nvfp4::validate::{ProblemSpec, Span, check_specs, check_specs_typed};
use nvfp4::{Activation, Error, HostProblem, ScaleLayout, f16};
use nvfp4_tests::{Gpu, Layout, POISON, check_group, upload_on};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// Seed of every property in this file unless `PROPTEST_RNG_SEED` says otherwise.
const SEED: u64 = 0x6e76_6670_345f_7072;

/// A proptest configuration: `cases` cases (unless `PROPTEST_CASES` is set), a fixed seed
/// (unless `PROPTEST_RNG_SEED` is set), no regression files, bounded shrinking.
fn config(cases: u32) -> Config {
    let env = Config::default(); // reads the PROPTEST_* variables
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            env.cases
        } else {
            cases
        },
        rng_seed: match env.rng_seed {
            RngSeed::Random => RngSeed::Fixed(SEED),
            fixed => fixed,
        },
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..env
    }
}

/// Runs `test` on `cases` values of `strategy`; panics with the shrunk failing input.
fn run_property<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let start = Instant::now();
    let mut runner = TestRunner::new(config(cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    println!(
        "{name}: {} cases passed in {:.2?}",
        runner.config().cases,
        start.elapsed()
    );
}

fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

// ----------------------------------------------------------------------------------------
// The independent model of the validation rules (module docs of `nvfp4::validate`).
// ----------------------------------------------------------------------------------------

/// Operand fields in the order a problem's buffers are checked (the order of
/// `ProblemSpec`'s fields), with the alignment each needs.
const FIELDS: [&str; 5] = ["a", "sfa", "b", "sfb", "c"];
const ALIGN: [u64; 5] = [8, 4, 8, 4, 2];
/// Index of `c` in [`FIELDS`].
const C: usize = 4;

/// What is wrong with a problem, as the model sees it.
#[derive(Clone, Debug, PartialEq)]
enum Fault {
    Alpha,
    Dimension(&'static str),
    Stride(&'static str, usize),
    Null(&'static str),
    Misaligned(&'static str, u64),
    TooSmall(&'static str, u64, u64),
    Overflow(&'static str),
}

/// The model's verdict on a group.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Valid,
    /// The first problem that breaks a rule, and its first broken rule.
    Problem(usize, Fault),
    /// The group's tiles (of the portable kernel, the finest) exceed `u32::MAX`.
    TooManyTiles(u64),
    /// Every (output problem, other problem, other field) whose bytes meet: the library must
    /// report one of them.
    Overlap(Vec<(usize, usize, &'static str)>),
}

/// Scale bytes of `rows` x `k` in `layout` (DESIGN.md): plain `rows * k/16`; blocked pads rows
/// to 128 and scale columns to 4.
fn model_scale_len(layout: ScaleLayout, rows: u128, k: u128) -> u128 {
    let cols = k / 16;
    match layout {
        ScaleLayout::Plain => rows * cols,
        ScaleLayout::Blocked => rows.div_ceil(128) * 128 * cols.div_ceil(4) * 4,
    }
}

/// One operand as the kernel touches it: `rows` runs of `row` bytes, `stride` bytes apart.
#[derive(Clone, Copy, Debug)]
struct Touched {
    problem: usize,
    field: usize,
    start: u128,
    rows: u128,
    row: u128,
    stride: u128,
}

impl Touched {
    fn end(&self) -> u128 {
        self.start + (self.rows - 1) * self.stride + self.row
    }

    fn run(&self, r: u128) -> (u128, u128) {
        let s = self.start + r * self.stride;
        (s, s + self.row)
    }
}

/// Whether two touched regions share a byte: a merge of their (sorted, disjoint) runs.
fn touched_meet(x: &Touched, y: &Touched) -> bool {
    if x.end() <= y.start || y.end() <= x.start {
        return false;
    }
    let (mut i, mut j) = (0u128, 0u128);
    while i < x.rows && j < y.rows {
        let (xs, xe) = x.run(i);
        let (ys, ye) = y.run(j);
        if xs < ye && ys < xe {
            return true;
        }
        if xe <= ye {
            i += 1;
        } else {
            j += 1;
        }
    }
    false
}

/// What the model resolved for a problem that passed every per-problem rule.
struct ModelOk {
    tiles: u128,
    touched: Vec<Touched>,
}

/// The per-problem rules, in the documented order: alpha; m, n, k fit u32; k positive and a
/// multiple of 16; lda, ldb (>= k/2, multiple of 8), ldc (>= n); then each buffer (a, sfa, b,
/// sfb, c): its size fits 64 bits, and if it needs any bytes: non-null, aligned, long
/// enough, and its one-past-the-end address fits 64 bits.
fn model_problem(i: usize, s: &ProblemSpec, a16: bool) -> Result<ModelOk, Fault> {
    if !s.alpha.is_finite() {
        return Err(Fault::Alpha);
    }
    for (field, v) in [("m", s.m), ("n", s.n), ("k", s.k)] {
        if v as u128 > u32::MAX as u128 {
            return Err(Fault::Dimension(field));
        }
    }
    if s.k == 0 || !s.k.is_multiple_of(16) {
        return Err(Fault::Dimension("k"));
    }
    let (m, n, k) = (s.m as u128, s.n as u128, s.k as u128);
    let row = k / 2;
    // 16-bit activations: rows of k values (2k bytes), lda a multiple of 16, `a` 16-byte
    // aligned, `sfa` not read.
    let (a_row, a_multiple) = if a16 { (2 * k, 16) } else { (row, 8) };
    let mut ld = [0u128; 2];
    for (slot, (field, given)) in [("lda", s.lda), ("ldb", s.ldb)].into_iter().enumerate() {
        let (min, multiple) = if slot == 0 {
            (a_row, a_multiple)
        } else {
            (row, 8)
        };
        let v = given.unwrap_or(min as usize);
        if (v as u128) < min || v % multiple != 0 {
            return Err(Fault::Stride(field, v));
        }
        ld[slot] = v as u128;
    }
    let ldc = s.ldc.unwrap_or(s.n);
    if ldc < s.n {
        return Err(Fault::Stride("ldc", ldc));
    }
    let ldc = ldc as u128;
    let strided = |rows: u128, stride: u128, row: u128| {
        if rows == 0 || row == 0 {
            0
        } else {
            (rows - 1) * stride + row
        }
    };
    // (rows, row bytes, stride) of each operand; scale buffers are one contiguous run.
    let sfa = model_scale_len(s.sfa_layout, m, k);
    let sfb = model_scale_len(s.sfb_layout, n, k);
    let shape: [(u128, u128, u128); 5] = [
        (m, a_row, ld[0]),
        (1, sfa, sfa),
        (n, row, ld[1]),
        (1, sfb, sfb),
        (if n == 0 { 0 } else { m }, 2 * n, 2 * ldc),
    ];
    let spans = [s.a, s.sfa, s.b, s.sfb, s.c];
    let mut touched = Vec::new();
    for f in 0..5 {
        if a16 && f == 1 {
            continue; // sfa is not read
        }
        let align = if a16 && f == 0 { 16 } else { ALIGN[f] };
        let (rows, row_bytes, stride) = shape[f];
        let needed = strided(rows, stride, row_bytes);
        let field = FIELDS[f];
        if needed > u64::MAX as u128 {
            return Err(Fault::Overflow(field));
        }
        if needed == 0 {
            continue;
        }
        let span = spans[f];
        if span.addr == 0 {
            return Err(Fault::Null(field));
        }
        if !span.addr.is_multiple_of(align) {
            return Err(Fault::Misaligned(field, align));
        }
        if (span.len_bytes as u128) < needed {
            return Err(Fault::TooSmall(field, needed as u64, span.len_bytes as u64));
        }
        if span.addr as u128 + span.len_bytes as u128 > u64::MAX as u128 {
            return Err(Fault::Overflow(field));
        }
        touched.push(Touched {
            problem: i,
            field: f,
            start: span.addr as u128,
            rows,
            row: row_bytes,
            stride,
        });
    }
    let tiles = m.div_ceil(64) * n.div_ceil(128);
    Ok(ModelOk { tiles, touched })
}

/// The group rules: each problem on its own, in order; then the tile total; then overlaps
/// (an output sharing a byte with any input or another output).
fn model(specs: &[ProblemSpec]) -> Verdict {
    model_with_gaps(specs, false).0
}

/// [`model`], and whether some output's extent meets another buffer's extent although no
/// byte is shared (rows interleaved with the gaps of a strided operand).
fn model_with_gaps(specs: &[ProblemSpec], a16: bool) -> (Verdict, bool) {
    let mut tiles = 0u128;
    let mut touched = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        match model_problem(i, s, a16) {
            Ok(ok) => {
                tiles += ok.tiles;
                touched.extend(ok.touched);
            }
            Err(fault) => return (Verdict::Problem(i, fault), false),
        }
    }
    if tiles > u32::MAX as u128 {
        return (Verdict::TooManyTiles(tiles as u64), false);
    }
    let mut pairs = Vec::new();
    let mut gaps = false;
    for (x_idx, x) in touched.iter().enumerate() {
        if x.field != C {
            continue;
        }
        for (y_idx, y) in touched.iter().enumerate() {
            if x_idx == y_idx {
                continue;
            }
            if touched_meet(x, y) {
                pairs.push((x.problem, y.problem, FIELDS[y.field]));
            } else if x.start < y.end() && y.start < x.end() {
                gaps = true;
            }
        }
    }
    if pairs.is_empty() {
        (Verdict::Valid, gaps)
    } else {
        (Verdict::Overlap(pairs), false)
    }
}

/// Whether the library's error is the one the model expects (variant, problem, field and the
/// numbers the variant carries).
fn error_matches(v: &Verdict, e: &Error, specs: &[ProblemSpec]) -> bool {
    match (v, e) {
        (Verdict::Problem(i, Fault::Alpha), Error::InvalidAlpha { problem, value }) => {
            problem == i && value.to_bits() == specs[*i].alpha.to_bits()
        }
        (
            Verdict::Problem(i, Fault::Dimension(f)),
            Error::InvalidDimension {
                problem,
                field,
                value,
                ..
            },
        ) => {
            let s = &specs[*i];
            let want = match *f {
                "m" => s.m,
                "n" => s.n,
                _ => s.k,
            };
            problem == i && field == f && *value == want
        }
        (
            Verdict::Problem(i, Fault::Stride(f, v)),
            Error::InvalidStride {
                problem,
                field,
                value,
                ..
            },
        ) => problem == i && field == f && value == v,
        (Verdict::Problem(i, Fault::Null(f)), Error::NullPointer { problem, field }) => {
            problem == i && field == f
        }
        (
            Verdict::Problem(i, Fault::Misaligned(f, a)),
            Error::Misaligned {
                problem,
                field,
                addr,
                align,
            },
        ) => {
            let idx = FIELDS.iter().position(|x| x == f).unwrap();
            let spans = {
                let s = &specs[*i];
                [s.a, s.sfa, s.b, s.sfb, s.c]
            };
            problem == i && field == f && align == a && *addr == spans[idx].addr
        }
        (
            Verdict::Problem(i, Fault::TooSmall(f, n, g)),
            Error::BufferTooSmall {
                problem,
                field,
                needed,
                given,
            },
        ) => problem == i && field == f && needed == n && given == g,
        (Verdict::Problem(i, Fault::Overflow(f)), Error::Overflow { problem, field }) => {
            problem == i && field == f
        }
        (Verdict::TooManyTiles(t), Error::TooManyTiles { tiles, max }) => {
            tiles == t && *max == u64::from(u32::MAX)
        }
        (
            Verdict::Overlap(pairs),
            Error::Overlap {
                problem,
                field,
                other_problem,
                other_field,
            },
        ) => *field == "c" && pairs.contains(&(*problem, *other_problem, *other_field)),
        _ => false,
    }
}

/// Every per-problem error's message starts with `problem {i}: ` and names its field in
/// backticks (an overlap also names the other problem and field).
fn check_message(e: &Error) -> Result<(), String> {
    let msg = e.to_string();
    let (problem, field) = match e {
        Error::InvalidAlpha { problem, .. } => (*problem, "alpha"),
        Error::InvalidDimension { problem, field, .. }
        | Error::InvalidStride { problem, field, .. }
        | Error::BufferTooSmall { problem, field, .. }
        | Error::NullPointer { problem, field }
        | Error::Misaligned { problem, field, .. }
        | Error::Overflow { problem, field } => (*problem, *field),
        Error::Overlap {
            problem,
            field,
            other_problem,
            other_field,
        } => {
            if !msg.contains(&format!("of problem {other_problem}"))
                || !msg.contains(&format!("`{other_field}`"))
            {
                return Err(format!("{msg:?} does not name the other buffer"));
            }
            (*problem, *field)
        }
        Error::TooManyTiles { tiles, max } => {
            return if msg.contains(&tiles.to_string()) && msg.contains(&max.to_string()) {
                Ok(())
            } else {
                Err(format!("{msg:?} lacks the counts"))
            };
        }
        other => return Err(format!("not a validation error: {other:?}")),
    };
    if !msg.starts_with(&format!("problem {problem}: ")) {
        return Err(format!("{msg:?} does not start with `problem {problem}: `"));
    }
    if !msg.contains(&format!("`{field}`")) {
        return Err(format!("{msg:?} does not name `{field}`"));
    }
    if let Error::BufferTooSmall { needed, given, .. } = e
        && (!msg.contains(&needed.to_string()) || !msg.contains(&given.to_string()))
    {
        return Err(format!("{msg:?} lacks the lengths"));
    }
    Ok(())
}

/// The table of a valid group packed for `kernel`: descriptors copied and resolved,
/// `tiles_m`, `tile_start` the exclusive prefix sum of the kernel's tiles, and every tile
/// `(problem, n0, m0)` of every problem owned by exactly one linear index.
fn check_table(specs: &[ProblemSpec], kernel: &KernelInfo, t: &PackedTable) -> Result<(), String> {
    let name = kernel.name;
    if t.descs.len() != specs.len() || (t.tile_n, t.tile_m) != (kernel.tile_n, kernel.tile_m) {
        return Err(format!("{name}: table shape {t:?}"));
    }
    let (tn, tm) = (u64::from(kernel.tile_n), u64::from(kernel.tile_m));
    let mut start = 0u64;
    let mut want: HashSet<(usize, u32, u32)> = HashSet::new();
    let mut ranges = Vec::new();
    for (i, (s, d)) in specs.iter().zip(&t.descs).enumerate() {
        let code = |l: ScaleLayout| match l {
            ScaleLayout::Plain => 0,
            ScaleLayout::Blocked => 1,
        };
        let fields_ok = (d.a, d.sfa, d.b, d.sfb, d.c)
            == (s.a.addr, s.sfa.addr, s.b.addr, s.sfb.addr, s.c.addr)
            && d.lda == s.lda.unwrap_or(s.k / 2) as u64
            && d.ldb == s.ldb.unwrap_or(s.k / 2) as u64
            && d.ldc == s.ldc.unwrap_or(s.n) as u64
            && (d.m, d.n, d.k) == (s.m as u32, s.n as u32, s.k as u32)
            && (d.sfa_layout, d.sfb_layout) == (code(s.sfa_layout), code(s.sfb_layout))
            && d.alpha.to_bits() == s.alpha.to_bits();
        if !fields_ok {
            return Err(format!("{name}: problem {i}: descriptor {d:?} for {s:?}"));
        }
        let tiles_m = (s.m as u64).div_ceil(tm);
        let tiles_n = (s.n as u64).div_ceil(tn);
        let tiles = tiles_m * tiles_n;
        if u64::from(d.tiles_m) != tiles_m || u64::from(d.tile_start) != start {
            return Err(format!(
                "{name}: problem {i}: tiles_m {} tile_start {}, want {tiles_m} {start}",
                d.tiles_m, d.tile_start
            ));
        }
        if kernel.tiles_for(s.m as u32, s.n as u32) != tiles {
            return Err(format!("{name}: tiles_for({}, {}) != {tiles}", s.m, s.n));
        }
        for nb in 0..tiles_n {
            for mb in 0..tiles_m {
                want.insert((i, (nb * tn) as u32, (mb * tm) as u32));
            }
        }
        ranges.push((start, start + tiles, tiles_m));
        start += tiles;
    }
    if u64::from(t.total_tiles) != start {
        return Err(format!("{name}: total_tiles {} != {start}", t.total_tiles));
    }
    for tile in 0..t.total_tiles {
        let c = t
            .tile_owner(tile)
            .ok_or_else(|| format!("{name}: tile {tile} has no owner"))?;
        let (lo, hi, tiles_m) = ranges[c.problem];
        let local = u64::from(tile) - lo;
        let coords_ok = (lo..hi).contains(&u64::from(tile))
            && u64::from(c.n0) == (local / tiles_m) * tn
            && u64::from(c.m0) == (local % tiles_m) * tm;
        if !coords_ok || !want.remove(&(c.problem, c.n0, c.m0)) {
            return Err(format!(
                "{name}: tile {tile} -> {c:?} (twice, or not a tile)"
            ));
        }
    }
    if !want.is_empty() {
        return Err(format!("{name}: tiles never owned: {want:?}"));
    }
    if t.tile_owner(t.total_tiles).is_some() || t.tile_owner(u32::MAX).is_some() {
        return Err(format!("{name}: a tile past the end has an owner"));
    }
    Ok(())
}

/// Runs the library on `specs` and compares with the model; returns the verdict's name.
fn judge(specs: &[ProblemSpec]) -> Result<&'static str, TestCaseError> {
    judge_typed(specs, Activation::Nvfp4)
}

/// [`judge`] for the validation of `activation` (`check_specs_typed`); the table packing is
/// only compared for NVFP4 (the 16-bit plans pack the same way after the same checks).
fn judge_typed(
    specs: &[ProblemSpec],
    activation: Activation,
) -> Result<&'static str, TestCaseError> {
    let a16 = activation != Activation::Nvfp4;
    let (verdict, gaps) = model_with_gaps(specs, a16);
    let got = check_specs_typed(specs, activation);
    // The packers take NVFP4 groups only.
    let packed = (!a16).then(|| {
        [
            pack(specs),
            pack_for(specs, &GROUPED_GEMM_MMA),
            pack_for(specs, &GROUPED_GEMM_WGMMA),
        ]
    });
    match (&verdict, &got) {
        (Verdict::Valid, Ok(())) => {
            if let Some([portable, mma, wgmma]) = packed {
                let (portable, mma, wgmma) = (
                    portable.map_err(|e| fail(format!("pack: {e}")))?,
                    mma.map_err(|e| fail(format!("pack_for(mma): {e}")))?,
                    wgmma.map_err(|e| fail(format!("pack_for(wgmma): {e}")))?,
                );
                if portable != mma {
                    return Err(fail("pack differs from pack_for(GROUPED_GEMM_MMA)"));
                }
                check_table(specs, &GROUPED_GEMM_MMA, &mma).map_err(fail)?;
                check_table(specs, &GROUPED_GEMM_WGMMA, &wgmma).map_err(fail)?;
            }
            Ok(if gaps { "valid, interleaved" } else { "valid" })
        }
        (v, Ok(())) => Err(fail(format!(
            "model: {v:?}; the library accepted the group"
        ))),
        (Verdict::Valid, Err(e)) => Err(fail(format!("model: valid; library: {e:?} ({e})"))),
        (v, Err(e)) => {
            if !error_matches(v, e, specs) {
                return Err(fail(format!("model: {v:?}; library: {e:?} ({e})")));
            }
            check_message(e).map_err(fail)?;
            for p in packed.iter().flatten() {
                match p {
                    Err(pe) if pe.to_string() == e.to_string() => {}
                    other => {
                        return Err(fail(format!(
                            "pack disagrees with check_specs ({e}): {other:?}"
                        )));
                    }
                }
            }
            Ok(outcome_name(e))
        }
    }
}

/// The tally name of an error.
fn outcome_name(e: &Error) -> &'static str {
    match e {
        Error::InvalidAlpha { .. } => "InvalidAlpha",
        Error::InvalidDimension { .. } => "InvalidDimension",
        Error::InvalidStride { .. } => "InvalidStride",
        Error::NullPointer { .. } => "NullPointer",
        Error::Misaligned { .. } => "Misaligned",
        Error::BufferTooSmall { .. } => "BufferTooSmall",
        Error::Overflow { .. } => "Overflow",
        Error::TooManyTiles { .. } => "TooManyTiles",
        Error::Overlap { .. } => "Overlap",
        _ => "other",
    }
}

// ----------------------------------------------------------------------------------------
// Random groups.
// ----------------------------------------------------------------------------------------

/// Row stride of A or B: the default (`None`) or `k / 2 + 8 * pad` bytes.
#[derive(Clone, Copy, Debug)]
enum Stride {
    Default,
    Padded(usize),
}

/// A deliberate deviation from a valid problem.
#[derive(Clone, Copy, Debug)]
enum Mutation {
    /// `k` replaced (0, or not a multiple of 16).
    K(usize),
    /// `m` (or `n`) replaced by a value that may not fit `u32`.
    HugeDim { n: bool, value: usize },
    /// Stride `which` (0 lda, 1 ldb, 2 ldc) made `by` smaller than valid.
    StrideShort { which: usize, by: usize },
    /// lda / ldb `by` bytes past a multiple of 8.
    StrideUnaligned { which: usize, by: usize },
    /// Stride `which` set to `2^shift`.
    StrideHuge { which: usize, shift: u32 },
    /// Buffer `field` `by` bytes shorter than needed.
    Short { field: usize, by: u64 },
    /// Buffer `field` half as long as needed.
    Halved { field: usize },
    /// Buffer `field` of length 0.
    Empty { field: usize },
    /// Buffer `field` moved `by` bytes off its alignment.
    Misalign { field: usize, by: u64 },
    /// Buffer `field` at address 0.
    Null { field: usize },
    /// Buffer `field` near the top of the address space (ending exactly at 2^64 or past it).
    NearTop { field: usize, exact_end: bool },
    /// alpha NaN, +inf or -inf.
    Alpha(u8),
    /// Buffer `field` placed inside buffer `target_field` of problem `target` (modulo the
    /// group size), `per_mille` of the way in (up to 10% past its end).
    Into {
        field: usize,
        target: usize,
        target_field: usize,
        per_mille: u64,
    },
    /// C placed right after the first row of problem `target`'s C, with the same `ldc`: its
    /// rows interleave with the target's when the target's row padding holds them (valid),
    /// and overlap them otherwise.
    CBeside { target: usize, shift: usize },
}

/// One problem of a random group: a valid problem, then its mutations (usually none).
#[derive(Clone, Debug)]
struct ProblemGen {
    m: usize,
    n: usize,
    /// k / 16.
    k16: usize,
    lda: Stride,
    ldb: Stride,
    /// `None`: default; `Some(pad)`: `n + pad` elements.
    ldc: Option<usize>,
    sfa_blocked: bool,
    sfb_blocked: bool,
    alpha: f32,
    /// Bytes each buffer holds beyond what it needs.
    extra: [usize; 5],
    /// Read the weights (b, sfb) of another problem (valid: inputs may be shared).
    share_weights: Option<usize>,
    mutations: Vec<Mutation>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = 0usize..5;
    let bad_k = prop_oneof![
        Just(0usize),
        (0usize..64, 1usize..16).prop_map(|(q, r)| q * 16 + r)
    ];
    let huge = prop_oneof![
        Just(1usize << 32),
        (1usize << 32)..(1usize << 40),
        Just(usize::MAX),
    ];
    prop_oneof![
        2 => bad_k.prop_map(Mutation::K),
        1 => (any::<bool>(), huge).prop_map(|(n, value)| Mutation::HugeDim { n, value }),
        2 => (0usize..3, 1usize..64).prop_map(|(which, by)| Mutation::StrideShort { which, by }),
        2 => (0usize..2, 1usize..8).prop_map(|(which, by)| Mutation::StrideUnaligned { which, by }),
        1 => (0usize..3, 20u32..=63).prop_map(|(which, shift)| Mutation::StrideHuge { which, shift }),
        3 => (field.clone(), prop_oneof![Just(1u64), 1u64..4096])
            .prop_map(|(field, by)| Mutation::Short { field, by }),
        1 => field.clone().prop_map(|field| Mutation::Halved { field }),
        1 => field.clone().prop_map(|field| Mutation::Empty { field }),
        2 => (field.clone(), 1u64..8).prop_map(|(field, by)| Mutation::Misalign { field, by }),
        1 => field.clone().prop_map(|field| Mutation::Null { field }),
        1 => (field.clone(), any::<bool>())
            .prop_map(|(field, exact_end)| Mutation::NearTop { field, exact_end }),
        1 => (0u8..3).prop_map(Mutation::Alpha),
        3 => (0usize..12, 0usize..4).prop_map(|(target, shift)| Mutation::CBeside { target, shift }),
        10 => (field, 0usize..12, 0usize..5, 0u64..=1100).prop_map(
            |(field, target, target_field, per_mille)| Mutation::Into {
                field,
                target,
                target_field,
                per_mille,
            }
        ),
    ]
}

fn problem_gen() -> impl Strategy<Value = ProblemGen> {
    let dim = || prop_oneof![2 => Just(0usize), 3 => 1usize..=4, 10 => 0usize..300];
    let k16 = prop_oneof![3 => 1usize..=4, 5 => 1usize..=64];
    let stride = || {
        prop_oneof![
            4 => Just(Stride::Default),
            3 => (0usize..=8).prop_map(Stride::Padded),
        ]
    };
    let ldc = prop_oneof![4 => Just(None), 3 => (0usize..=40).prop_map(Some)];
    let alpha = prop_oneof![
        3 => Just(1.0f32),
        3 => -1000f32..1000f32,
        1 => Just(0.0f32),
        1 => Just(f32::MAX),
        1 => Just(-f32::MIN_POSITIVE / 4.0),
    ];
    let extra = prop::array::uniform5(prop_oneof![6 => Just(0usize), 1 => 1usize..4096]);
    let mutations = prop_oneof![
        8 => Just(Vec::new()),
        1 => prop::collection::vec(mutation(), 1..=2),
    ];
    (
        (dim(), dim(), k16, stride(), stride(), ldc),
        (any::<bool>(), any::<bool>(), alpha, extra),
        (prop::option::weighted(0.15, 0usize..12), mutations),
    )
        .prop_map(
            |(
                (m, n, k16, lda, ldb, ldc),
                (sfa_blocked, sfb_blocked, alpha, extra),
                (share_weights, mutations),
            )| ProblemGen {
                m,
                n,
                k16,
                lda,
                ldb,
                ldc,
                sfa_blocked,
                sfb_blocked,
                alpha,
                extra,
                share_weights,
                mutations,
            },
        )
}

fn layout(blocked: bool) -> ScaleLayout {
    if blocked {
        ScaleLayout::Blocked
    } else {
        ScaleLayout::Plain
    }
}

/// Address of buffer `field` of problem `i` before any mutation: a 2^50-byte window each.
fn slot(i: usize, field: usize) -> u64 {
    ((i * 5 + field + 1) as u64) << 50
}

/// Builds the specs of a random group. Lengths are sized from the (possibly mutated) shape
/// with saturating arithmetic; whether the result is valid is for the model to say.
fn realize(gens: &[ProblemGen]) -> Vec<ProblemSpec> {
    realize_typed(gens, false)
}

/// [`realize`] with A sized for 16-bit activations (`a16`: rows of `2 k` bytes, padded
/// strides in steps of 16 bytes) or for FP4.
fn realize_typed(gens: &[ProblemGen], a16: bool) -> Vec<ProblemSpec> {
    let g = gens.len();
    let mut specs = Vec::with_capacity(g);
    let mut own: Vec<([u64; 5], [usize; 5])> = Vec::with_capacity(g);
    for (i, pg) in gens.iter().enumerate() {
        let (mut m, mut n, mut k) = (pg.m, pg.n, pg.k16 * 16);
        let mut alpha = pg.alpha;
        for mu in &pg.mutations {
            match *mu {
                Mutation::K(v) => k = v,
                Mutation::HugeDim { n: true, value } => n = value,
                Mutation::HugeDim { n: false, value } => m = value,
                Mutation::Alpha(which) => {
                    alpha = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][which as usize % 3];
                }
                _ => {}
            }
        }
        let row = k / 2;
        let a_row = if a16 { k.saturating_mul(2) } else { row };
        let ab = |s: Stride, row: usize, step: usize| match s {
            Stride::Default => None,
            Stride::Padded(p) => Some(row + step * p),
        };
        let mut lds = [
            ab(pg.lda, a_row, if a16 { 16 } else { 8 }),
            ab(pg.ldb, row, 8),
            pg.ldc.map(|p| n.saturating_add(p)),
        ];
        let default_ld = [a_row, row, n];
        for mu in &pg.mutations {
            match *mu {
                Mutation::StrideShort { which, by } => {
                    let base = lds[which].unwrap_or(default_ld[which]);
                    lds[which] = Some(base.saturating_sub(by));
                }
                Mutation::StrideUnaligned { which, by } => {
                    lds[which] = Some(lds[which].unwrap_or(default_ld[which]).saturating_add(by));
                }
                Mutation::StrideHuge { which, shift } => lds[which] = Some(1usize << shift),
                _ => {}
            }
        }
        let (sfa_layout, sfb_layout) = (layout(pg.sfa_blocked), layout(pg.sfb_blocked));
        // Needed bytes, saturating (only to size the buffers).
        let (mw, nw, kw) = (m as u128, n as u128, k as u128);
        let strided = |rows: u128, stride: Option<usize>, default: usize, row: u128| {
            let stride = stride.unwrap_or(default) as u128;
            if rows == 0 {
                0
            } else {
                (rows - 1) * stride + row
            }
        };
        let needed: [u128; 5] = [
            strided(mw, lds[0], a_row, a_row as u128),
            model_scale_len(sfa_layout, mw, kw),
            strided(nw, lds[1], row, row as u128),
            model_scale_len(sfb_layout, nw, kw),
            if nw == 0 {
                0
            } else {
                2 * strided(mw, lds[2], n, nw)
            },
        ];
        let sat = |x: u128| usize::try_from(x).unwrap_or(usize::MAX);
        let mut addr = [0u64; 5];
        let mut len = [0usize; 5];
        for f in 0..5 {
            addr[f] = slot(i, f);
            len[f] = sat(needed[f]).saturating_add(pg.extra[f]);
        }
        for mu in &pg.mutations {
            match *mu {
                Mutation::Short { field, by } => {
                    len[field] = sat(needed[field]).saturating_sub(by as usize);
                }
                Mutation::Halved { field } => len[field] = sat(needed[field]) / 2,
                Mutation::Empty { field } => len[field] = 0,
                Mutation::Misalign { field, by } => addr[field] += by,
                Mutation::Null { field } => addr[field] = 0,
                Mutation::NearTop { field, exact_end } => {
                    let l = len[field] as u64;
                    addr[field] = if exact_end {
                        0u64.wrapping_sub(l)
                    } else {
                        (u64::MAX - l / 2) & !7
                    };
                }
                _ => {}
            }
        }
        own.push((addr, len));
        specs.push(ProblemSpec {
            m,
            n,
            k,
            a: Span::new(addr[0], len[0]),
            lda: lds[0],
            sfa: Span::new(addr[1], len[1]),
            sfa_layout,
            b: Span::new(addr[2], len[2]),
            ldb: lds[1],
            sfb: Span::new(addr[3], len[3]),
            sfb_layout,
            c: Span::new(addr[4], len[4]),
            ldc: lds[2],
            alpha,
        });
    }
    // Second pass: buffers placed relative to other problems' (first-pass) buffers.
    let first: Vec<ProblemSpec> = specs.clone();
    for (i, pg) in gens.iter().enumerate() {
        let s = &mut specs[i];
        if let Some(j) = pg.share_weights {
            let j = j % g;
            s.b.addr = own[j].0[2];
            s.sfb.addr = own[j].0[3];
        }
        for mu in &pg.mutations {
            if let Mutation::Into {
                field,
                target,
                target_field,
                per_mille,
            } = *mu
            {
                let (taddr, tlen) = (
                    own[target % g].0[target_field],
                    own[target % g].1[target_field],
                );
                let off = (tlen as u128 * per_mille as u128 / 1000) as u64;
                let at = taddr.wrapping_add(off) & !(ALIGN[field] - 1);
                match field {
                    0 => s.a.addr = at,
                    1 => s.sfa.addr = at,
                    2 => s.b.addr = at,
                    3 => s.sfb.addr = at,
                    _ => s.c.addr = at,
                }
            }
            if let Mutation::CBeside { target, shift } = *mu {
                let t = &first[target % g];
                s.ldc = Some(t.ldc.unwrap_or(t.n));
                let elems = t.n.saturating_add(shift) as u64;
                s.c.addr = t.c.addr.wrapping_add(elems.wrapping_mul(2));
            }
        }
    }
    specs
}

/// Outcomes seen, for the coverage summary.
type Tally = RefCell<BTreeMap<&'static str, usize>>;

/// Prints the outcomes of property `name`; with the default case count (no `PROPTEST_CASES`)
/// asserts that every one of `wanted` came up (guards the generator) and returns true.
fn outcomes_came_up(name: &str, tally: &BTreeMap<&'static str, usize>, wanted: &[&str]) -> bool {
    println!("{name} outcomes: {tally:?}");
    if std::env::var_os("PROPTEST_CASES").is_some() {
        return false;
    }
    for outcome in wanted {
        assert!(
            tally.get(outcome).copied().unwrap_or(0) > 0,
            "no case gave {outcome}: {tally:?}"
        );
    }
    true
}

#[test]
fn validation_agrees_with_model() {
    let tally: Tally = RefCell::default();
    let cases = 20_000;
    run_property(
        "validation_agrees_with_model",
        cases,
        prop::collection::vec(problem_gen(), 1..=12),
        |gens| {
            let specs = realize(&gens);
            let outcome = judge(&specs)?;
            *tally.borrow_mut().entry(outcome).or_default() += 1;
            Ok(())
        },
    );
    let tally = tally.into_inner();
    let default_cases = outcomes_came_up(
        "validation_agrees_with_model",
        &tally,
        &[
            "valid",
            "InvalidAlpha",
            "InvalidDimension",
            "InvalidStride",
            "NullPointer",
            "Misaligned",
            "BufferTooSmall",
            "Overflow",
            "Overlap",
        ],
    );
    if default_cases {
        assert!(
            tally["valid"] * 5 >= cases as usize,
            "too few valid groups: {tally:?}"
        );
        assert!(
            tally.contains_key("valid, interleaved"),
            "no valid group with interleaved extents: {tally:?}"
        );
    }
}

/// [`validation_agrees_with_model`] for 16-bit activations (W4A16): the same random groups,
/// A sized for rows of `2 k` bytes, judged by `check_specs_typed` against the model's 16-bit
/// rules (lda a multiple of 16 and at least `2 k`, `a` 16-byte aligned, `sfa` not read).
#[test]
fn a16_validation_agrees_with_model() {
    let tally: Tally = RefCell::default();
    let cases = 5_000;
    run_property(
        "a16_validation_agrees_with_model",
        cases,
        (prop::collection::vec(problem_gen(), 1..=12), any::<bool>()),
        |(gens, bf16)| {
            let specs = realize_typed(&gens, true);
            let act = if bf16 {
                Activation::Bf16
            } else {
                Activation::F16
            };
            let outcome = judge_typed(&specs, act)?;
            *tally.borrow_mut().entry(outcome).or_default() += 1;
            Ok(())
        },
    );
    outcomes_came_up(
        "a16_validation_agrees_with_model",
        &tally.into_inner(),
        &[
            "valid",
            "InvalidStride",
            "Misaligned",
            "BufferTooSmall",
            "Overlap",
        ],
    );
}

/// Problems with up to 2^22 x 2^22 outputs (2^31 portable tiles each), exact buffers in
/// disjoint windows: valid exactly while the portable tiles sum to at most `u32::MAX`.
#[test]
fn tile_counts_agree_with_model() {
    let dim = || {
        prop_oneof![
            1 => Just(0usize),
            1 => Just(1usize << 22),
            3 => 0usize..=(1 << 22),
            1 => 1usize..300,
        ]
    };
    let tally: Tally = RefCell::default();
    run_property(
        "tile_counts_agree_with_model",
        2000,
        (
            prop::collection::vec((dim(), dim(), 1usize..=2, any::<bool>()), 1..=8),
            prop::collection::vec(any::<u32>(), 8),
        ),
        |(shapes, probes)| {
            let specs: Vec<ProblemSpec> = shapes
                .iter()
                .enumerate()
                .map(|(i, &(m, n, k16, blocked))| {
                    let k = 16 * k16;
                    let l = layout(blocked);
                    let scales = |rows: usize| model_scale_len(l, rows as u128, k as u128) as usize;
                    ProblemSpec {
                        m,
                        n,
                        k,
                        a: Span::new(slot(i, 0), m * k / 2),
                        lda: None,
                        sfa: Span::new(slot(i, 1), scales(m)),
                        sfa_layout: l,
                        b: Span::new(slot(i, 2), n * k / 2),
                        ldb: None,
                        sfb: Span::new(slot(i, 3), scales(n)),
                        sfb_layout: l,
                        c: Span::new(slot(i, 4), m * n * 2),
                        ldc: None,
                        alpha: 1.0,
                    }
                })
                .collect();
            let outcome = judge_large(&specs, &probes)?;
            *tally.borrow_mut().entry(outcome).or_default() += 1;
            Ok(())
        },
    );
    outcomes_came_up(
        "tile_counts_agree_with_model",
        &tally.into_inner(),
        &["valid", "TooManyTiles"],
    );
}

/// [`judge`] for groups too large to walk every tile: the verdict must agree; for valid
/// groups the tile totals and the owners of the first, last and `probes` tiles are checked.
fn judge_large(specs: &[ProblemSpec], probes: &[u32]) -> Result<&'static str, TestCaseError> {
    let verdict = model(specs);
    match (&verdict, check_specs(specs)) {
        (Verdict::Valid, Ok(())) => {}
        (v, Err(e)) if error_matches(v, &e, specs) => {
            check_message(&e).map_err(fail)?;
            return Ok("TooManyTiles");
        }
        (v, other) => return Err(fail(format!("model: {v:?}; library: {other:?}"))),
    }
    for kernel in [&GROUPED_GEMM_MMA, &GROUPED_GEMM_WGMMA] {
        let t = pack_for(specs, kernel).map_err(|e| fail(e.to_string()))?;
        let (tn, tm) = (u64::from(kernel.tile_n), u64::from(kernel.tile_m));
        let mut ranges = Vec::new();
        let mut start = 0u64;
        for (s, d) in specs.iter().zip(&t.descs) {
            let tiles_m = (s.m as u64).div_ceil(tm);
            let tiles = tiles_m * (s.n as u64).div_ceil(tn);
            if u64::from(d.tile_start) != start || u64::from(d.tiles_m) != tiles_m {
                return Err(fail(format!("{}: {d:?} at start {start}", kernel.name)));
            }
            ranges.push((start, start + tiles, tiles_m));
            start += tiles;
        }
        if u64::from(t.total_tiles) != start {
            return Err(fail(format!(
                "{}: total {} != {start}",
                kernel.name, t.total_tiles
            )));
        }
        if start == 0 {
            continue;
        }
        let mut tiles: Vec<u64> = probes.iter().map(|&p| u64::from(p) % start).collect();
        tiles.extend([0, start - 1]);
        for (lo, hi, _) in &ranges {
            if hi > lo {
                tiles.extend([*lo, hi - 1]);
            }
        }
        for tile in tiles {
            let c = t.tile_owner(tile as u32).ok_or_else(|| fail("no owner"))?;
            let (lo, hi, tiles_m) = ranges[c.problem];
            let local = tile - lo;
            let ok = (lo..hi).contains(&tile)
                && u64::from(c.n0) == (local / tiles_m) * tn
                && u64::from(c.m0) == (local % tiles_m) * tm
                && (c.n0 as usize) < specs[c.problem].n
                && (c.m0 as usize) < specs[c.problem].m;
            if !ok {
                return Err(fail(format!("{}: tile {tile} -> {c:?}", kernel.name)));
            }
        }
        if t.tile_owner(t.total_tiles).is_some() {
            return Err(fail("a tile past the end has an owner"));
        }
    }
    Ok("valid")
}

// ----------------------------------------------------------------------------------------
// On the GPU.
// ----------------------------------------------------------------------------------------

/// One problem of a random GPU group.
#[derive(Clone, Debug)]
struct GpuProblemGen {
    m: usize,
    n: usize,
    k: usize,
    sfa_blocked: bool,
    sfb_blocked: bool,
    layout: (usize, usize, usize),
    alpha: f32,
}

fn gpu_problem_gen() -> impl Strategy<Value = GpuProblemGen> {
    (
        0usize..130,
        1usize..200,
        (1usize..=25).prop_map(|q| 16 * q),
        any::<bool>(),
        any::<bool>(),
        (0usize..=4, 0usize..=4, 0usize..9),
        prop_oneof![
            2 => Just(1.0f32),
            1 => Just(-0.5f32),
            1 => Just(1.0f32 / 1024.0),
            2 => -4.0f32..4.0,
        ],
    )
        .prop_map(
            |(m, n, k, sfa_blocked, sfb_blocked, (lda8, ldb8, ldc_pad), alpha)| GpuProblemGen {
                m,
                n,
                k,
                sfa_blocked,
                sfb_blocked,
                layout: (8 * lda8, 8 * ldb8, ldc_pad),
                alpha,
            },
        )
}

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_random_groups_match_reference() {
    let gpu = Gpu::new();
    let worst = std::cell::Cell::new(0.0f64);
    let strategy = (any::<u64>(), prop::collection::vec(gpu_problem_gen(), 1..6));
    run_property(
        "gpu_random_groups_match_reference",
        32,
        strategy,
        |(seed, gens)| {
            let mut rng = Rng::new(seed);
            let ps: Vec<HostProblem> = gens
                .iter()
                .map(|g| {
                    let mut p = problem(
                        &mut rng,
                        g.m,
                        g.n,
                        g.k,
                        Distribution::FullRange,
                        layout(g.sfa_blocked),
                        layout(g.sfb_blocked),
                    );
                    p.alpha = g.alpha;
                    p
                })
                .collect();
            let mut dps: Vec<_> = ps
                .iter()
                .zip(&gens)
                .map(|(p, g)| {
                    let (lda_pad, ldb_pad, ldc_pad) = g.layout;
                    let l = Layout {
                        lda_pad,
                        ldb_pad,
                        ldc_pad,
                        poison: POISON,
                    };
                    upload_on(&gpu.stream, p, l)
                })
                .collect();
            gpu.run(&mut dps).map_err(|e| fail(format!("run: {e}")))?;
            let mut got: Vec<Vec<f16>> = Vec::with_capacity(dps.len());
            for dp in &dps {
                let bits = gpu.download_bits(dp);
                for r in 0..dp.m {
                    if bits[r * dp.ldc + dp.n..(r + 1) * dp.ldc]
                        .iter()
                        .any(|&b| b != POISON)
                    {
                        return Err(fail(format!("row {r}: padding of C written")));
                    }
                }
                got.push(
                    (0..dp.m)
                        .flat_map(|r| bits[r * dp.ldc..r * dp.ldc + dp.n].iter())
                        .map(|&b| f16::from_bits(b))
                        .collect(),
                );
            }
            let s = check_group(&format!("seed {seed:#x}"), &ps, &got, Tolerance::FullRange);
            worst.set(worst.get().max(s.rel_frobenius));
            if s.passed() {
                Ok(())
            } else {
                Err(fail(format!(
                    "{} elements outside the FullRange bound",
                    s.bad
                )))
            }
        },
    );
    println!(
        "gpu_random_groups_match_reference: worst relative Frobenius error {:.3e}",
        worst.get()
    );
}

/// The guided parts of dynamic cut launches (`guided_part_start`): for every part count
/// (2 to `SplitK::MAX_PARTS`) and tile of 0 to 400 chunks, part 0 starts at 0, the last ends
/// at the tile's end, no part has a negative length, and with at least 4 chunks a part the
/// parts never grow from one to the next by more than the rounding's one chunk (the largest
/// first is what the guided order relies on); 3 parts of 112 chunks (G8 N4096 K7168) split
/// 5 : 4 : 3 at floor(112 * 5 / 12) = 46 and 112 * 9 / 12 = 84: 46 / 38 / 28 chunks.
#[test]
fn guided_parts_cover_the_tile_largest_first() {
    use kernels_gpu::problem::guided_part_start as start;
    for parts in 2..=nvfp4::SplitK::MAX_PARTS {
        for chunks in 0..=400u32 {
            assert_eq!(start(chunks, 0, parts), 0, "{parts} parts of {chunks}");
            assert_eq!(
                start(chunks, parts, parts),
                chunks,
                "{parts} parts of {chunks}"
            );
            let len = |q: u32| start(chunks, q + 1, parts) - start(chunks, q, parts);
            for q in 0..parts {
                assert!(
                    start(chunks, q + 1, parts) >= start(chunks, q, parts),
                    "{parts} parts of {chunks}: part {q} runs backwards"
                );
                if chunks >= 4 * parts && q + 1 < parts {
                    assert!(
                        len(q + 1) <= len(q) + 1,
                        "{parts} parts of {chunks}: part {} longer than part {q}",
                        q + 1
                    );
                }
            }
        }
    }
    let three: Vec<u32> = (0..3)
        .map(|q| start(112, q + 1, 3) - start(112, q, 3))
        .collect();
    assert_eq!(three, [46, 38, 28]);
}
