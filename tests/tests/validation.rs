//! Validation (`nvfp4::validate`) without a GPU: one test per error, each asserting the
//! variant and that the message names the problem index and the field. Problems are built
//! from made-up device addresses with `from_raw`: validation never dereferences them.

use kernels_gpu::layout::scale_len;
use kernels_gpu::problem::MAX_PROBLEMS;
use nvfp4::table::pack;
use nvfp4::validate::{self, ProblemSpec, Span};
use nvfp4::{DeviceInput, DeviceOutput, Error, HostProblem, Problem, ScaleLayout};

/// One problem as plain numbers, operands at disjoint addresses with exactly the bytes the
/// shape needs; tests change a field and turn it into `Problem`s.
#[derive(Clone, Copy, Debug)]
struct Raw {
    m: usize,
    n: usize,
    k: usize,
    a: (u64, usize),
    lda: Option<usize>,
    sfa: (u64, usize),
    sfa_layout: ScaleLayout,
    b: (u64, usize),
    ldb: Option<usize>,
    sfb: (u64, usize),
    sfb_layout: ScaleLayout,
    c: (u64, usize),
    ldc: Option<usize>,
    alpha: f32,
}

/// Each problem slot gets a 2^44-byte window, each operand a 2^40-byte part of it.
fn addr(slot: u64, operand: u64) -> u64 {
    (slot + 1) << 44 | operand << 40
}

impl Raw {
    fn new(slot: u64, m: usize, n: usize, k: usize) -> Self {
        Self::with_layouts(slot, m, n, k, ScaleLayout::Plain, ScaleLayout::Plain)
    }

    fn with_layouts(
        slot: u64,
        m: usize,
        n: usize,
        k: usize,
        sfa_layout: ScaleLayout,
        sfb_layout: ScaleLayout,
    ) -> Self {
        let scales = |layout, rows: usize| scale_len(layout, rows as u64, k as u32) as usize;
        Self {
            m,
            n,
            k,
            a: (addr(slot, 0), m * k / 2),
            lda: None,
            sfa: (addr(slot, 1), scales(sfa_layout, m)),
            sfa_layout,
            b: (addr(slot, 2), n * k / 2),
            ldb: None,
            sfb: (addr(slot, 3), scales(sfb_layout, n)),
            sfb_layout,
            c: (addr(slot, 4), m * n * 2),
            ldc: None,
            alpha: 1.0,
        }
    }

    fn problem(&self) -> Problem<'static> {
        // SAFETY: never launched; validation only compares the numbers.
        unsafe {
            Problem {
                m: self.m,
                n: self.n,
                k: self.k,
                a: DeviceInput::from_raw(self.a.0, self.a.1),
                lda: self.lda,
                sfa: DeviceInput::from_raw(self.sfa.0, self.sfa.1),
                sfa_layout: self.sfa_layout,
                b: DeviceInput::from_raw(self.b.0, self.b.1),
                ldb: self.ldb,
                sfb: DeviceInput::from_raw(self.sfb.0, self.sfb.1),
                sfb_layout: self.sfb_layout,
                c: DeviceOutput::from_raw(self.c.0, self.c.1),
                ldc: self.ldc,
                alpha: self.alpha,
            }
        }
    }
}

fn check(raws: &[Raw]) -> nvfp4::Result<()> {
    let problems: Vec<Problem<'static>> = raws.iter().map(Raw::problem).collect();
    validate::check(&problems)
}

/// Two valid problems and `bad` as problem 2, checked; returns the error.
fn error_for(bad: Raw) -> Error {
    let group = [Raw::new(0, 64, 128, 256), Raw::new(1, 40, 256, 128), bad];
    check(&group).expect_err("problem 2 is invalid")
}

#[track_caller]
fn assert_names(err: &Error, problem: usize, field: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("problem {problem}")),
        "message {msg:?} lacks `problem {problem}`"
    );
    assert!(
        msg.contains(&format!("`{field}`")),
        "message {msg:?} lacks the field `{field}`"
    );
}

// ----- valid groups -----

#[test]
fn valid_group_passes_and_packs() {
    let group = [
        Raw::new(0, 64, 128, 256),
        Raw::new(1, 40, 256, 128),
        Raw::new(2, 7, 130, 16),
    ];
    check(&group).unwrap();
    let specs: Vec<ProblemSpec> = group.iter().map(|r| r.problem().spec()).collect();
    let table = pack(&specs).unwrap();
    let tiles: Vec<u32> = table.descs.iter().map(|d| d.tile_start).collect();
    // tiles_for: (128/128)*(64/64) = 1, (256/128)*ceil(40/64) = 2, ceil(130/128)*1 = 2.
    assert_eq!(tiles, [0, 1, 3]);
    assert_eq!(table.total_tiles, 5);
    assert_eq!(table.descs[2].lda, 8);
    assert_eq!(table.descs[2].ldc, 130);
}

#[test]
fn empty_group_is_valid() {
    check(&[]).unwrap();
    assert_eq!(pack(&[]).unwrap().total_tiles, 0);
}

#[test]
fn m_zero_is_valid_and_empty() {
    let mut r = Raw::new(2, 0, 128, 256);
    // An expert with no tokens: its A, scales and C may be empty, even null.
    r.a = (0, 0);
    r.sfa = (0, 0);
    r.c = (0, 0);
    let group = [Raw::new(0, 64, 128, 256), r];
    check(&group).unwrap();
    let p = [r.problem()];
    assert_eq!(pack(&[p[0].spec()]).unwrap().total_tiles, 0);
    // Empty operands through the safe constructors too.
    let empty = Problem {
        a: DeviceInput::empty(),
        sfa: DeviceInput::empty(),
        c: DeviceOutput::empty(),
        ..r.problem()
    };
    validate::check(&[empty]).unwrap();
}

#[test]
fn n_zero_is_valid_and_empty() {
    let mut r = Raw::new(2, 64, 0, 256);
    r.b = (0, 0);
    r.sfb = (0, 0);
    r.c = (0, 0);
    check(&[Raw::new(0, 64, 128, 256), r]).unwrap();
}

#[test]
fn blocked_scales_need_padded_length() {
    // 40 rows pad to 128, 256/16 = 16 scale columns: 128 * 16 bytes.
    let r = Raw::with_layouts(0, 40, 200, 256, ScaleLayout::Blocked, ScaleLayout::Blocked);
    assert_eq!(r.sfa.1, 128 * 16);
    assert_eq!(r.sfb.1, 256 * 16);
    check(&[r]).unwrap();
}

#[test]
fn strided_operands_need_exactly_the_strided_length() {
    let mut r = Raw::new(0, 5, 3, 64);
    r.lda = Some(48);
    r.a.1 = 4 * 48 + 32;
    r.ldb = Some(40);
    r.b.1 = 2 * 40 + 32;
    r.ldc = Some(11);
    r.c.1 = (4 * 11 + 3) * 2;
    check(&[r]).unwrap();
    for field in ["a", "b", "c"] {
        let mut short = r;
        match field {
            "a" => short.a.1 -= 1,
            "b" => short.b.1 -= 1,
            _ => short.c.1 -= 2,
        }
        let err = check(&[short]).unwrap_err();
        assert!(
            matches!(err, Error::BufferTooSmall { problem: 0, .. }),
            "{err}"
        );
        assert_names(&err, 0, field);
    }
}

#[test]
fn shared_inputs_are_valid() {
    // L > 1: many problems reading the same weights and scales.
    let mut group: Vec<Raw> = (0..8).map(|slot| Raw::new(slot, 40, 256, 128)).collect();
    let (b, sfb) = (group[0].b, group[0].sfb);
    for r in &mut group {
        r.b = b;
        r.sfb = sfb;
    }
    check(&group).unwrap();
}

#[test]
fn interleaved_outputs_are_valid() {
    // Two problems writing the left and right halves of one C with ldc = 2n.
    let (m, n) = (8, 64);
    let mut left = Raw::new(0, m, n, 128);
    let mut right = Raw::new(1, m, n, 128);
    let base = addr(7, 0);
    left.c = (base, ((m - 1) * 2 * n + n) * 2);
    left.ldc = Some(2 * n);
    right.c = (base + 2 * n as u64, ((m - 1) * 2 * n + n) * 2);
    right.ldc = Some(2 * n);
    check(&[left, right]).unwrap();
    // Shifted by one element they collide.
    right.c.0 -= 2;
    let err = check(&[left, right]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Overlap {
                problem: 1,
                other_problem: 0,
                ..
            }
        ),
        "{err}"
    );
}

// ----- dimensions -----

#[test]
fn k_not_multiple_of_16() {
    let err = error_for(Raw::new(2, 64, 128, 40));
    assert!(
        matches!(
            err,
            Error::InvalidDimension {
                problem: 2,
                field: "k",
                value: 40,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "k");
}

#[test]
fn k_zero() {
    let mut r = Raw::new(2, 64, 128, 16);
    r.k = 0;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::InvalidDimension {
                problem: 2,
                field: "k",
                value: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "k");
}

#[test]
fn m_does_not_fit_u32() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.m = u32::MAX as usize + 1;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::InvalidDimension {
                problem: 2,
                field: "m",
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "m");
}

#[test]
fn n_does_not_fit_u32() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.n = 1 << 40;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::InvalidDimension {
                problem: 2,
                field: "n",
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "n");
}

// ----- strides -----

#[test]
fn lda_shorter_than_a_row() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.lda = Some(120);
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::InvalidStride {
                problem: 2,
                field: "lda",
                value: 120,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "lda");
}

#[test]
fn lda_not_multiple_of_8() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.lda = Some(132);
    r.a.1 = 64 * 132;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::InvalidStride {
                problem: 2,
                field: "lda",
                value: 132,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "lda");
}

#[test]
fn ldb_shorter_than_a_row() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.ldb = Some(64);
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::InvalidStride {
                problem: 2,
                field: "ldb",
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "ldb");
}

#[test]
fn ldb_not_multiple_of_8() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.ldb = Some(129);
    r.b.1 = 128 * 129;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::InvalidStride {
                problem: 2,
                field: "ldb",
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "ldb");
}

#[test]
fn ldc_shorter_than_a_row() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.ldc = Some(127);
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::InvalidStride {
                problem: 2,
                field: "ldc",
                value: 127,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "ldc");
}

// ----- alpha -----

#[test]
fn alpha_nan() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.alpha = f32::NAN;
    let err = error_for(r);
    assert!(
        matches!(err, Error::InvalidAlpha { problem: 2, .. }),
        "{err}"
    );
    assert_names(&err, 2, "alpha");
}

#[test]
fn alpha_infinite() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.alpha = f32::NEG_INFINITY;
    let err = error_for(r);
    assert!(
        matches!(err, Error::InvalidAlpha { problem: 2, .. }),
        "{err}"
    );
    assert_names(&err, 2, "alpha");
}

// ----- buffer lengths -----

#[track_caller]
fn assert_too_small(err: Error, field: &str, needed: u64, given: u64) {
    assert_names(&err, 2, field);
    let msg = err.to_string();
    assert!(
        msg.contains(&needed.to_string()) && msg.contains(&given.to_string()),
        "{msg}"
    );
    match err {
        Error::BufferTooSmall {
            problem: 2,
            field: f,
            needed: n,
            given: g,
        } => {
            assert_eq!((f, n, g), (field, needed, given));
        }
        other => panic!("expected BufferTooSmall, got {other}"),
    }
}

#[test]
fn a_too_short() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.a.1 -= 1;
    assert_too_small(error_for(r), "a", 64 * 128, 64 * 128 - 1);
}

#[test]
fn sfa_too_short() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.sfa.1 = 10;
    assert_too_small(error_for(r), "sfa", 64 * 16, 10);
}

#[test]
fn b_too_short() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.b.1 = 0;
    assert_too_small(error_for(r), "b", 128 * 128, 0);
}

#[test]
fn sfb_too_short() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.sfb.1 -= 4;
    assert_too_small(error_for(r), "sfb", 128 * 16, 128 * 16 - 4);
}

#[test]
fn c_too_short() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.c.1 = 64 * 128; // elements instead of bytes
    assert_too_small(error_for(r), "c", 64 * 128 * 2, 64 * 128);
}

#[test]
fn plain_sized_scales_passed_as_blocked() {
    // 72 rows x 12 scale columns: plain 864 bytes, blocked 128 x 12 = 1536.
    let mut r = Raw::new(2, 72, 128, 192);
    r.sfa_layout = ScaleLayout::Blocked;
    assert_eq!(r.sfa.1, 72 * 12);
    assert_too_small(error_for(r), "sfa", 128 * 12, 72 * 12);
}

// ----- pointers -----

#[test]
fn a_misaligned() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.a.0 += 4;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::Misaligned {
                problem: 2,
                field: "a",
                align: 8,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "a");
}

#[test]
fn b_misaligned() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.b.0 += 1;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::Misaligned {
                problem: 2,
                field: "b",
                align: 8,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "b");
}

#[test]
fn sfa_misaligned() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.sfa.0 += 2;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::Misaligned {
                problem: 2,
                field: "sfa",
                align: 4,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "sfa");
}

#[test]
fn sfb_misaligned() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.sfb.0 += 1;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::Misaligned {
                problem: 2,
                field: "sfb",
                align: 4,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "sfb");
}

#[test]
fn c_misaligned() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.c.0 += 1;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::Misaligned {
                problem: 2,
                field: "c",
                align: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "c");
}

#[test]
fn c_at_2_byte_alignment_is_valid() {
    let mut r = Raw::new(0, 64, 128, 256);
    r.c.0 += 2;
    check(&[r]).unwrap();
}

#[test]
fn null_pointer() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.b.0 = 0;
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::NullPointer {
                problem: 2,
                field: "b"
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "b");
}

#[test]
fn buffer_wraps_the_address_space() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.c.0 = u64::MAX - 1023; // 2-aligned, but 16 KiB do not fit below 2^64
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::Overflow {
                problem: 2,
                field: "c"
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "c");
}

#[test]
fn stride_times_rows_overflows() {
    let mut r = Raw::new(2, 1 << 31, 128, 256);
    r.lda = Some(1 << 40); // (2^31 - 1) * 2^40 bytes overflow u64
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::Overflow {
                problem: 2,
                field: "a"
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "a");
}

// ----- overlaps -----

#[test]
fn output_overlaps_input_of_another_problem() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.c.0 = addr(0, 2) + 1024; // inside problem 0's B
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::Overlap {
                problem: 2,
                field: "c",
                other_problem: 0,
                other_field: "b"
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "c");
    assert!(
        err.to_string().contains("problem 0") && err.to_string().contains("`b`"),
        "{err}"
    );
}

#[test]
fn output_overlaps_its_own_scales() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.c.0 = r.sfb.0 + r.sfb.1 as u64 - 2; // last scale byte(s) and C share 2 bytes
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::Overlap {
                problem: 2,
                field: "c",
                other_problem: 2,
                other_field: "sfb"
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "c");
}

#[test]
fn output_overlaps_another_output() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.c.0 = addr(1, 4) + 40 * 256 * 2 - 2; // last element of problem 1's C
    let err = error_for(r);
    assert!(
        matches!(
            err,
            Error::Overlap {
                problem: 2,
                field: "c",
                other_problem: 1,
                other_field: "c"
            }
        ),
        "{err}"
    );
    assert_names(&err, 2, "c");
    assert!(err.to_string().contains("problem 1"), "{err}");
}

#[test]
fn adjacent_buffers_do_not_overlap() {
    let mut r = Raw::new(2, 64, 128, 256);
    r.c.0 = addr(1, 4) + 40 * 256 * 2; // right after problem 1's C
    check(&[Raw::new(0, 64, 128, 256), Raw::new(1, 40, 256, 128), r]).unwrap();
}

// ----- group limits -----

#[test]
fn too_many_problems() {
    let group = vec![Raw::new(0, 0, 0, 16); MAX_PROBLEMS + 1];
    let err = check(&group).unwrap_err();
    assert!(
        matches!(err, Error::TooManyProblems { count, max } if count == MAX_PROBLEMS + 1 && max == MAX_PROBLEMS),
        "{err}"
    );
    assert!(
        err.to_string().contains(&(MAX_PROBLEMS + 1).to_string()),
        "{err}"
    );
}

#[test]
fn max_problems_is_accepted() {
    let group = vec![Raw::new(0, 0, 0, 16); MAX_PROBLEMS];
    check(&group).unwrap();
}

#[test]
fn too_many_tiles() {
    // 2^20 x 2^20 problems (2^27 tiles each with the portable kernel's 128 x 64 tiles):
    // exactly enough of them to make 2^32 tiles, one more than u32::MAX.
    let per_problem = kernels_gpu::tiling::tiles_for(1 << 20, 1 << 20);
    let count = ((1u64 << 32) / per_problem) as usize;
    assert_eq!(count as u64 * per_problem, 1 << 32);
    let group: Vec<Raw> = (0..count as u64)
        .map(|slot| Raw::new(slot, 1 << 20, 1 << 20, 16))
        .collect();
    let err = check(&group).unwrap_err();
    assert!(
        matches!(err, Error::TooManyTiles { tiles, .. } if tiles == 1 << 32),
        "{err}"
    );
    check(&group[..count - 1]).unwrap();
}

// ----- host problems (run_host's pre-check) -----

fn host(m: usize, n: usize, k: usize) -> HostProblem {
    HostProblem {
        m,
        n,
        k,
        a: vec![0; m * k / 2],
        sfa: vec![0; m * k / 16],
        sfa_layout: ScaleLayout::Plain,
        b: vec![0; n * k / 2],
        sfb: vec![0; n * k / 16],
        sfb_layout: ScaleLayout::Plain,
        alpha: 1.0,
    }
}

#[test]
fn host_problems_valid() {
    validate::check_host(&[host(40, 128, 256), host(0, 64, 64), host(7, 0, 16)]).unwrap();
}

#[test]
fn host_problem_buffer_too_short() {
    let mut p = host(40, 128, 256);
    p.sfb.pop();
    let err = validate::check_host(&[host(1, 1, 16), p]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferTooSmall {
                problem: 1,
                field: "sfb",
                needed: 2048,
                given: 2047
            }
        ),
        "{err}"
    );
    assert_names(&err, 1, "sfb");
}

#[test]
fn host_problem_blocked_layout_needs_padding() {
    let mut p = host(40, 128, 256);
    p.sfa_layout = ScaleLayout::Blocked;
    let err = validate::check_host(&[p]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferTooSmall {
                problem: 0,
                field: "sfa",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn host_problem_bad_k() {
    let mut p = host(4, 4, 32);
    p.k = 24;
    let err = validate::check_host(&[p]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidDimension {
                problem: 0,
                field: "k",
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, 0, "k");
}

#[test]
fn spec_round_trips_through_problem() {
    let r = Raw::new(3, 9, 10, 32);
    let spec = r.problem().spec();
    assert_eq!(spec.a, Span::new(r.a.0, r.a.1));
    assert_eq!(spec.c, Span::new(r.c.0, r.c.1));
    validate::check_specs(&[spec]).unwrap();
}

/// `open_device` answers with an error instead of panicking, with or without a GPU: device
/// 1000 does not exist on any machine (no driver here: `libcuda` missing; on a GPU machine:
/// past the device count).
#[test]
fn open_device_reports_missing_device_without_panicking() {
    match nvfp4::open_device(1000) {
        Err(nvfp4::Error::NoDevice(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected Error::NoDevice, got {other:?}"),
    }
}
