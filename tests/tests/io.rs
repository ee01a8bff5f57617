//! `nvfp4::io`: reading groups from safetensors files and writing the fp16 outputs, including
//! every malformed input the format rules out (each must give an error naming the tensor or
//! the file). Files are written with the `safetensors` crate directly, not with `nvfp4::io`,
//! so the format is checked independently of the code under test.

use half::f16;
use nvfp4::ScaleLayout;
use nvfp4::r#gen::{Distribution, group};
use nvfp4::io::safetensors::tensor::{Dtype, SafeTensors, TensorView};
use nvfp4::io::{IoError, read_groups, write_outputs};
use nvfp4::problem::HostProblem;
use nvfp4::shapes::GroupShape;
use std::path::{Path, PathBuf};

/// A fresh, empty directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nvfp4-io-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// The names of the files in the directory, sorted.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One tensor to write: name, dtype, shape, bytes.
type Tensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn write_tensors(path: &Path, tensors: &[Tensor]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                name.as_str(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        path,
        nvfp4::io::safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
}

/// The tensors of `problems` in the input format; scales as F8_E4M3 (U8 for odd problems),
/// alpha absent for problem 0, `[]` for odd and `[1]` for other even problems.
fn tensors_of(problems: &[HostProblem]) -> Vec<Tensor> {
    let mut out = Vec::new();
    for (i, p) in problems.iter().enumerate() {
        let scale_dtype = if i % 2 == 1 {
            Dtype::U8
        } else {
            Dtype::F8_E4M3
        };
        out.push((
            format!("g{i}.a"),
            Dtype::U8,
            vec![p.m, p.k / 2],
            p.a.clone(),
        ));
        out.push((
            format!("g{i}.b"),
            Dtype::U8,
            vec![p.n, p.k / 2],
            p.b.clone(),
        ));
        out.push((
            format!("g{i}.sfa"),
            scale_dtype,
            vec![p.m, p.k / 16],
            p.sfa.clone(),
        ));
        out.push((
            format!("g{i}.sfb"),
            scale_dtype,
            vec![p.n, p.k / 16],
            p.sfb.clone(),
        ));
        if i > 0 {
            let shape = if i % 2 == 1 { vec![] } else { vec![1] };
            out.push((
                format!("g{i}.alpha"),
                Dtype::F32,
                shape,
                p.alpha.to_le_bytes().to_vec(),
            ));
        }
    }
    out
}

/// Three problems, one with no tokens, alphas 1, 0.5, -3.
fn problems() -> Vec<HostProblem> {
    let shape = GroupShape {
        name: "io".into(),
        problems: vec![(40, 256, 128), (0, 128, 64), (7, 96, 256)],
    };
    let mut ps = group(
        11,
        &shape,
        Distribution::FullRange,
        ScaleLayout::Plain,
        ScaleLayout::Plain,
    );
    ps[1].alpha = 0.5;
    ps[2].alpha = -3.0;
    ps
}

#[test]
fn round_trip() {
    let dir = TempDir::new("round-trip");
    let want = problems();
    let input = dir.path("in.safetensors");
    write_tensors(&input, &tensors_of(&want));
    let got = read_groups(&input).unwrap();
    assert_eq!(got, want);
    nvfp4::validate::check_host(&got).unwrap();
}

#[test]
fn outputs_are_written_atomically_and_read_back() {
    let dir = TempDir::new("outputs");
    let shapes = [(2, 3), (0, 5), (1, 1)];
    let outputs: Vec<Vec<f16>> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(m, n))| {
            (0..m * n)
                .map(|j| f16::from_f32((i * 10 + j) as f32 - 2.5))
                .collect()
        })
        .collect();
    let out = dir.path("out.safetensors");
    std::fs::write(&out, b"an older file").unwrap();
    write_outputs(&out, &outputs, &shapes).unwrap();
    assert_eq!(dir.files(), ["out.safetensors"], "no temporary file left");
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, ["g0.c", "g1.c", "g2.c"]);
    for (i, (c, &(m, n))) in outputs.iter().zip(&shapes).enumerate() {
        let t = st.tensor(&format!("g{i}.c")).unwrap();
        assert_eq!(t.dtype(), Dtype::F16);
        assert_eq!(t.shape(), [m, n]);
        let got: Vec<f16> = t
            .data()
            .chunks(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(&got, c);
    }
}

#[test]
fn failed_writes_leave_nothing() {
    let dir = TempDir::new("failed-writes");
    let out = dir.path("out.safetensors");
    let c = vec![vec![f16::ONE; 6]];
    let cases: Vec<(Result<(), IoError>, &str)> = vec![
        (
            write_outputs(&out, &c, &[(2, 4)]),
            "g0.c holds 6 values but its shape is [2, 4]",
        ),
        (write_outputs(&out, &c, &[]), "1 outputs for 0 shapes"),
        (
            write_outputs(dir.path("missing/out.safetensors"), &c, &[(2, 3)]),
            "cannot write",
        ),
    ];
    for (result, needle) in cases {
        let e = result.unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    // Renaming onto a directory fails after the temporary file was written: it must go.
    std::fs::create_dir(&out).unwrap();
    let e = write_outputs(&out, &c, &[(2, 3)]).unwrap_err();
    assert!(matches!(e, IoError::Write { .. }), "{e}");
    assert_eq!(dir.files(), ["out.safetensors"]);
    assert!(out.is_dir());
    let e = nvfp4::io::check_output_path(&out).unwrap_err().to_string();
    assert!(
        e.contains("is a directory") || e.contains("it is a directory"),
        "{e}"
    );
    let e = nvfp4::io::check_output_path(dir.path("nope/out"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    nvfp4::io::check_output_path(dir.path("fine.safetensors")).unwrap();
}

/// A valid file's tensors, edited by `edit`, must be refused with a message containing
/// `needle`.
fn refused(dir: &TempDir, edit: impl FnOnce(&mut Vec<Tensor>), needle: &str) {
    // g0: M 40, N 256, K 128 (a [40, 64]); g1: M 0, N 128, K 64; g2: M 7, N 96, K 256.
    let mut tensors = tensors_of(&problems());
    edit(&mut tensors);
    let input = dir.path("bad.safetensors");
    write_tensors(&input, &tensors);
    let e = read_groups(&input).unwrap_err().to_string();
    assert!(e.contains(needle), "expected `{needle}` in `{e}`");
    assert!(e.contains("bad.safetensors"), "the file is named: {e}");
}

fn find<'a>(tensors: &'a mut [Tensor], name: &str) -> &'a mut Tensor {
    tensors.iter_mut().find(|t| t.0 == name).unwrap()
}

fn remove(tensors: &mut Vec<Tensor>, name: &str) {
    tensors.retain(|t| t.0 != name);
}

#[test]
fn malformed_groups_are_refused_by_name() {
    let dir = TempDir::new("malformed");
    refused(&dir, |t| remove(t, "g2.sfa"), "g2.sfa missing");
    refused(
        &dir,
        |t| t.retain(|t| !t.0.starts_with("g1.")),
        "g1.a missing (the file names groups up to g2",
    );
    refused(
        &dir,
        |t| {
            let sfb = find(t, "g2.sfb");
            sfb.1 = Dtype::F16;
            sfb.2 = vec![96, 8];
        },
        "g2.sfb: expected dtype F8_E4M3 (or U8), found F16",
    );
    refused(
        &dir,
        |t| find(t, "g0.a").1 = Dtype::I8,
        "g0.a: expected dtype U8, found I8",
    );
    refused(
        &dir,
        |t| find(t, "g1.b").1 = Dtype::F8_E4M3,
        "g1.b: expected dtype U8, found F8_E4M3",
    );
    // Inconsistent K between a and b.
    refused(
        &dir,
        |t| {
            let b = find(t, "g2.b");
            b.2 = vec![192, 64];
        },
        "g2.b: shape [192, 64] does not match K = 256 from g2.a ([7, 128]): expected [N, 128]",
    );
    // K not a multiple of 16, and K = 0.
    refused(
        &dir,
        |t| {
            *t = vec![
                ("g0.a".into(), Dtype::U8, vec![2, 7], vec![0; 14]),
                ("g0.b".into(), Dtype::U8, vec![2, 7], vec![0; 14]),
                ("g0.sfa".into(), Dtype::F8_E4M3, vec![2, 1], vec![0x38; 2]),
                ("g0.sfb".into(), Dtype::F8_E4M3, vec![2, 1], vec![0x38; 2]),
            ]
        },
        "g0.a: K/2 = 7 gives K = 14, not a multiple of 16",
    );
    refused(
        &dir,
        |t| find(t, "g1.a").2 = vec![0, 0],
        "g1.a: K/2 = 0 (shape [0, 0]): K must be positive",
    );
    // Wrong ranks and scale shapes.
    refused(
        &dir,
        |t| find(t, "g0.a").2 = vec![40 * 64],
        "g0.a: shape [2560] is not 2-dimensional [M, K/2]",
    );
    refused(
        &dir,
        |t| find(t, "g0.sfa").2 = vec![80, 4],
        "g0.sfa: shape [80, 4] does not match g0.a ([40, 64], M = 40, K = 128): expected plain \
         scales [40, 8]",
    );
    refused(
        &dir,
        |t| find(t, "g2.sfb").2 = vec![16, 96],
        "g2.sfb: shape [16, 96] does not match g2.b ([96, 128], N = 96, K = 256)",
    );
    // Alpha.
    refused(
        &dir,
        |t| find(t, "g1.alpha").1 = Dtype::I32,
        "g1.alpha: expected dtype F32, found I32",
    );
    refused(
        &dir,
        |t| {
            let alpha = find(t, "g2.alpha");
            alpha.2 = vec![2];
            alpha.3 = [1f32.to_le_bytes(), 2f32.to_le_bytes()].concat();
        },
        "g2.alpha: shape [2] is not a scalar: expected [] or [1]",
    );
    refused(
        &dir,
        |t| find(t, "g1.alpha").3 = f32::NAN.to_le_bytes().to_vec(),
        "g1.alpha: NaN is not finite",
    );
    // Names outside the format, including a typo of a required one.
    refused(
        &dir,
        |t| find(t, "g0.sfb").0 = "g0.sfB".into(),
        "unknown tensor(s) g0.sfB",
    );
    refused(
        &dir,
        |t| {
            t.push(("extra".into(), Dtype::U8, vec![1], vec![0]));
            t.push(("g01.a".into(), Dtype::U8, vec![1], vec![0]));
        },
        "unknown tensor(s) extra, g01.a",
    );
    refused(
        &dir,
        |t| t.clear(),
        "no groups found (expected tensors named g0.a, g0.b, ...",
    );
}

#[test]
fn broken_files_are_refused_with_the_parser_message() {
    let dir = TempDir::new("broken");
    let good = dir.path("good.safetensors");
    write_tensors(&good, &tensors_of(&problems()));
    let bytes = std::fs::read(&good).unwrap();

    let half = dir.path("half.safetensors");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let short = dir.path("short.safetensors");
    std::fs::write(&short, &bytes[..bytes.len() - 1]).unwrap();
    let empty = dir.path("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let garbage = dir.path("garbage.safetensors");
    std::fs::write(&garbage, b"\x10\0\0\0\0\0\0\0{not json at all").unwrap();

    for (path, needle) in [
        (&half, "half.safetensors is not a valid safetensors file"),
        (&short, "short.safetensors is not a valid safetensors file"),
        (
            &empty,
            "empty.safetensors is not a valid safetensors file: header too small",
        ),
        (
            &garbage,
            "garbage.safetensors is not a valid safetensors file",
        ),
    ] {
        let e = read_groups(path).unwrap_err();
        assert!(matches!(e, IoError::Parse { .. }), "{e}");
        assert!(
            e.to_string().contains(needle),
            "expected `{needle}` in `{e}`"
        );
    }
    let e = read_groups(dir.path("nope.safetensors")).unwrap_err();
    assert!(matches!(e, IoError::Read { .. }), "{e}");
    assert!(e.to_string().starts_with("cannot read "), "{e}");
    assert!(e.to_string().contains("nope.safetensors"), "{e}");
    let e = read_groups(&dir.0).unwrap_err();
    assert!(matches!(e, IoError::Read { .. }), "a directory: {e}");
}
