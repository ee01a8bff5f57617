//! Validation of the MoE forms ([`nvfp4::moe`]) without a GPU: every group-level error
//! (`InvalidGroup` for the counts and sizes) and the per-buffer errors of the contiguous
//! layout, each naming the right problem (expert) and field. Addresses are made up with
//! `from_raw`: validation never dereferences them.

use kernels_gpu::layout::scale_len;
use nvfp4::moe::{
    ContiguousGroup, DeviceCounts, ExpertWeights, GroupSizes, MAX_DEVICE_GROUPS,
    check_device_counts, check_device_counts_typed,
};
use nvfp4::{
    Activation, DeviceInput, DeviceOutput, Error, GemmTypes, OutputType, Problem, ScaleLayout,
};
use nvfp4_tests::assert_err;

const ROWS: usize = 300;
const N: usize = 256;
const K: usize = 512;

/// 1 TiB apart: operands never overlap unless a test makes them.
fn at(slot: u64) -> u64 {
    (slot + 1) << 40
}

fn input(slot: u64, len: usize) -> DeviceInput<'static> {
    // SAFETY: validation only looks at the numbers.
    unsafe { DeviceInput::from_raw(at(slot), len) }
}

fn output(slot: u64, len: usize) -> DeviceOutput<'static> {
    // SAFETY: as above.
    unsafe { DeviceOutput::from_raw(at(slot), len) }
}

fn counts(slot: u64, groups: usize) -> DeviceCounts<'static> {
    // SAFETY: as above.
    unsafe { DeviceCounts::from_raw(at(slot), groups) }
}

fn expert(g: usize, layout: ScaleLayout) -> ExpertWeights<'static> {
    let slot = 100 + 2 * g as u64;
    ExpertWeights {
        b: input(slot, N * K / 2),
        ldb: None,
        sfb: input(slot + 1, scale_len(layout, N as u64, K as u32) as usize),
        sfb_layout: layout,
        alpha: 1.0,
    }
}

/// A valid group of `experts` experts, blocked token scales, with `sizes`.
fn group(experts: usize, sizes: GroupSizes<'static>) -> ContiguousGroup<'static> {
    let layout = ScaleLayout::Blocked;
    ContiguousGroup {
        rows: ROWS,
        n: N,
        k: K,
        a: input(1, ROWS * K / 2),
        lda: None,
        sfa: input(2, scale_len(layout, ROWS as u64, K as u32) as usize),
        sfa_layout: layout,
        c: output(3, ROWS * N * 2),
        ldc: None,
        experts: (0..experts)
            .map(|g| expert(g, ScaleLayout::Plain))
            .collect(),
        sizes,
    }
}

fn host(sizes: &[usize]) -> GroupSizes<'static> {
    GroupSizes::Host(sizes.to_vec())
}

fn assert_group_err(err: Error, field: &str, text: &str) {
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::InvalidGroup { field: f, .. } if *f == field),
        "want InvalidGroup on `{field}`, got {err:?}"
    );
    assert!(
        msg.contains(&format!("`{field}`")) && msg.contains(text),
        "{msg}"
    );
}

#[test]
fn valid_groups_pass() {
    group(4, host(&[100, 0, 7, 193])).check().unwrap();
    group(4, host(&[1, 2, 3, 4])).check().unwrap(); // rows past the sum: not written
    group(4, GroupSizes::Device(counts(9, 4))).check().unwrap();
    group(0, host(&[])).check().unwrap();
    group(
        MAX_DEVICE_GROUPS,
        GroupSizes::Device(counts(9, MAX_DEVICE_GROUPS)),
    )
    .check()
    .unwrap();
}

#[test]
fn host_sizes_of_wrong_length() {
    let err = group(4, host(&[1, 2, 3])).check().unwrap_err();
    assert_group_err(err, "sizes", "3 entries for 4 experts");
}

#[test]
fn host_sizes_past_capacity() {
    let err = group(3, host(&[100, 100, 101])).check().unwrap_err();
    assert_group_err(err, "sizes", "301");
    let err = group(2, host(&[usize::MAX, 2])).check().unwrap_err();
    assert_group_err(err, "sizes", "capacity");
}

#[test]
fn device_counts_too_short() {
    let err = group(4, GroupSizes::Device(counts(9, 3)))
        .check()
        .unwrap_err();
    assert_group_err(err, "counts", "3 counts");
}

#[test]
fn too_many_device_groups() {
    let g = MAX_DEVICE_GROUPS + 1;
    let err = group(g, GroupSizes::Device(counts(9, g)))
        .check()
        .unwrap_err();
    assert_group_err(err, "counts", &MAX_DEVICE_GROUPS.to_string());
    // Host sizes have no such limit.
    let mut sizes = vec![0; g];
    sizes[0] = 5;
    group(g, host(&sizes)).check().unwrap();
}

#[test]
fn device_counts_null_or_misaligned() {
    // SAFETY: numbers only.
    let null = unsafe { DeviceCounts::from_raw(0, 4) };
    let err = group(4, GroupSizes::Device(null)).check().unwrap_err();
    assert_group_err(err, "counts", "null");
    // SAFETY: numbers only.
    let odd = unsafe { DeviceCounts::from_raw(at(9) + 2, 4) };
    let err = group(4, GroupSizes::Device(odd)).check().unwrap_err();
    assert_group_err(err, "counts", "4-byte aligned");
}

#[test]
fn device_counts_overlapping_the_output() {
    // SAFETY: numbers only: the counts sit inside C.
    let inside = unsafe { DeviceCounts::from_raw(at(3) + 1024, 4) };
    let err = group(4, GroupSizes::Device(inside)).check().unwrap_err();
    assert_group_err(err, "counts", "overlaps output `c` of problem 0");
}

#[test]
fn token_buffers_sized_for_the_capacity() {
    let mut g = group(4, host(&[1, 1, 1, 1]));
    g.a = input(1, (ROWS - 1) * K / 2);
    let err = g.check().unwrap_err();
    assert_err!(
        err,
        Error::BufferTooSmall {
            problem: 0,
            field: "a",
            ..
        }
    );
    // Blocked scales for fewer rows than the capacity.
    let mut g = group(4, host(&[1, 1, 1, 1]));
    g.sfa = input(2, scale_len(ScaleLayout::Blocked, 128, K as u32) as usize);
    let err = g.check().unwrap_err();
    assert_err!(
        err,
        Error::BufferTooSmall {
            problem: 0,
            field: "sfa",
            ..
        }
    );
    let mut g = group(4, GroupSizes::Device(counts(9, 4)));
    g.c = output(3, ROWS * N * 2 - 2);
    let err = g.check().unwrap_err();
    assert_err!(
        err,
        Error::BufferTooSmall {
            problem: 0,
            field: "c",
            ..
        }
    );
}

#[test]
fn expert_errors_name_the_expert() {
    let mut g = group(5, host(&[1, 1, 1, 1, 1]));
    g.experts[3].b = input(106, N * K / 2 - 1);
    let err = g.check().unwrap_err();
    assert_err!(
        err,
        Error::BufferTooSmall {
            problem: 3,
            field: "b",
            ..
        }
    );
    let mut g = group(5, host(&[1, 1, 1, 1, 1]));
    g.experts[4].alpha = f32::NAN;
    let err = g.check().unwrap_err();
    assert_err!(err, Error::InvalidAlpha { problem: 4, .. });
    let mut g = group(5, host(&[1, 1, 1, 1, 1]));
    g.experts[2].ldb = Some(K / 2 + 4);
    let err = g.check().unwrap_err();
    assert_err!(
        err,
        Error::InvalidStride {
            problem: 2,
            field: "ldb",
            ..
        }
    );
}

#[test]
fn output_overlapping_an_expert() {
    let mut g = group(3, host(&[1, 1, 1]));
    g.experts[2].sfb = input(3, N * K / 16); // inside C
    let err = g.check().unwrap_err();
    assert_err!(
        err,
        Error::Overlap {
            problem: 0,
            field: "c",
            other_problem: 2,
            other_field: "sfb"
        }
    );
}

#[test]
fn bad_k_and_strides_of_the_token_side() {
    let mut g = group(2, host(&[1, 1]));
    g.k = 40;
    let err = g.check().unwrap_err();
    assert_err!(
        err,
        Error::InvalidDimension {
            problem: 0,
            field: "k",
            ..
        }
    );
    let mut g = group(2, host(&[1, 1]));
    g.ldc = Some(N - 1);
    let err = g.check().unwrap_err();
    assert_err!(
        err,
        Error::InvalidStride {
            problem: 0,
            field: "ldc",
            ..
        }
    );
}

/// Per-group problems with device counts: `m` is the capacity.
fn per_group(slot: u64, m: usize) -> Problem<'static> {
    let s = 1000 + 8 * slot;
    Problem {
        m,
        n: N,
        k: K,
        a: input(s, m * K / 2),
        lda: None,
        sfa: input(s + 1, m * K / 16),
        sfa_layout: ScaleLayout::Plain,
        b: input(s + 2, N * K / 2),
        ldb: None,
        sfb: input(s + 3, N * K / 16),
        sfb_layout: ScaleLayout::Plain,
        c: output(s + 4, m * N * 2),
        ldc: None,
        alpha: 1.0,
    }
}

#[test]
fn per_group_device_counts() {
    let ps: Vec<_> = (0..3).map(|i| per_group(i, 64)).collect();
    check_device_counts(&ps, &counts(9, 3)).unwrap();
    let err = check_device_counts(&ps, &counts(9, 2)).unwrap_err();
    assert_group_err(err, "counts", "2 counts");
    // SAFETY: numbers only: the counts sit inside problem 1's C.
    let inside = unsafe { DeviceCounts::from_raw(at(1000 + 8 + 4) + 64, 3) };
    let err = check_device_counts(&ps, &inside).unwrap_err();
    assert_group_err(err, "counts", "problem 1");
    let many: Vec<_> = (0..MAX_DEVICE_GROUPS as u64 + 1)
        .map(|i| per_group(i, 1))
        .collect();
    let err = check_device_counts(&many, &counts(9, many.len())).unwrap_err();
    assert_group_err(err, "counts", "at most");
    // The usual per-problem errors still apply, at the capacity.
    let mut ps: Vec<_> = (0..3).map(|i| per_group(i, 64)).collect();
    ps[1].a = input(1008, 63 * K / 2);
    let err = check_device_counts(&ps, &counts(9, 3)).unwrap_err();
    assert_err!(
        err,
        Error::BufferTooSmall {
            problem: 1,
            field: "a",
            ..
        }
    );
}

/// [`group`] with 16-bit tokens: `rows` rows of `k` 16-bit values, no token scales.
fn group16(experts: usize, sizes: GroupSizes<'static>) -> ContiguousGroup<'static> {
    ContiguousGroup {
        a: input(1, ROWS * K * 2),
        sfa: DeviceInput::empty(),
        ..group(experts, sizes)
    }
}

fn types(activation: Activation, output: OutputType) -> GemmTypes {
    GemmTypes { activation, output }
}

/// The typed forms (16-bit activations, bf16 outputs) validate `a` with the 16-bit rules,
/// ignore `sfa`, and refuse bf16 outputs with NVFP4 activations.
#[test]
fn sixteen_bit_contiguous_validation() {
    for act in [Activation::F16, Activation::Bf16] {
        for out in [OutputType::F16, OutputType::Bf16] {
            group16(3, host(&[10, 0, 290]))
                .check_typed(types(act, out))
                .unwrap();
            group16(3, GroupSizes::Device(counts(9, 3)))
                .check_typed(types(act, out))
                .unwrap();
        }
        // An FP4-sized token buffer is too short for 16-bit rows (problem 0 carries them).
        let g = ContiguousGroup {
            sfa: DeviceInput::empty(),
            ..group(3, host(&[1, 2, 3]))
        };
        let err = g.check_typed(types(act, OutputType::F16)).unwrap_err();
        assert_err!(
            err,
            Error::BufferTooSmall { problem: 0, field: "a", needed, .. }
                if needed == (ROWS * K * 2) as u64
        );
        // lda in bytes: at least 2k.
        let g = ContiguousGroup {
            lda: Some(K),
            ..group16(3, host(&[1, 2, 3]))
        };
        let err = g.check_typed(types(act, OutputType::F16)).unwrap_err();
        assert_err!(
            err,
            Error::InvalidStride {
                problem: 0,
                field: "lda",
                ..
            }
        );
        // 16-byte alignment of the tokens.
        let g = ContiguousGroup {
            // SAFETY: numbers only.
            a: unsafe { DeviceInput::from_raw(at(1) + 8, ROWS * K * 2) },
            ..group16(3, host(&[1, 2, 3]))
        };
        let err = g.check_typed(types(act, OutputType::F16)).unwrap_err();
        assert_err!(
            err,
            Error::Misaligned {
                problem: 0,
                field: "a",
                align: 16,
                ..
            }
        );
        // The counts' rules are the same.
        let err = group16(3, host(&[200, 200, 0]))
            .check_typed(types(act, OutputType::F16))
            .unwrap_err();
        assert_group_err(err, "sizes", "capacity");
    }
    // The NVFP4 rules for the untyped check: a 16-bit group's empty sfa is an error there.
    assert!(group16(3, host(&[1, 2, 3])).check().is_err());
    // bf16 outputs need 16-bit activations, in both forms.
    let err = group(3, host(&[1, 2, 3]))
        .check_typed(types(Activation::Nvfp4, OutputType::Bf16))
        .unwrap_err();
    assert_group_err(err, "output", "16-bit activations");
    let ps: Vec<_> = (0..3).map(|i| per_group(i, 64)).collect();
    let err = check_device_counts_typed(
        &ps,
        &counts(9, 3),
        types(Activation::Nvfp4, OutputType::Bf16),
    )
    .unwrap_err();
    assert_group_err(err, "output", "16-bit activations");
}

/// Per-group problems with device counts and 16-bit tokens: the 16-bit rules per problem.
#[test]
fn sixteen_bit_per_group_device_counts() {
    let ps16 = |lda: Option<usize>| -> Vec<Problem<'static>> {
        (0..3)
            .map(|i| Problem {
                a: input(1000 + 8 * i, 64 * K * 2),
                lda,
                sfa: DeviceInput::empty(),
                ..per_group(i, 64)
            })
            .collect()
    };
    for act in [Activation::F16, Activation::Bf16] {
        check_device_counts_typed(&ps16(None), &counts(9, 3), types(act, OutputType::Bf16))
            .unwrap();
        let err = check_device_counts_typed(
            &ps16(Some(K / 2)),
            &counts(9, 3),
            types(act, OutputType::F16),
        )
        .unwrap_err();
        assert_err!(
            err,
            Error::InvalidStride {
                problem: 0,
                field: "lda",
                ..
            }
        );
        let err =
            check_device_counts_typed(&ps16(None), &counts(9, 2), types(act, OutputType::F16))
                .unwrap_err();
        assert_group_err(err, "counts", "2 counts");
    }
}
