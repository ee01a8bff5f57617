//! End to end: `nvfp4 run` on safetensors files, through the built binary. With `--cpu` the
//! output must be the CPU reference bit for bit; without it (GPU if there is one, else the
//! CPU reference, saying so) within GPU MODE's tolerance. Bad inputs must fail with the
//! error naming the tensor or file, exit status 1, and leave no output or temporary file.

use nvfp4::ScaleLayout;
use nvfp4::f16;
use nvfp4::r#gen::{Distribution, group};
use nvfp4::io::safetensors::tensor::{Dtype, SafeTensors, TensorView};
use nvfp4::problem::HostProblem;
use nvfp4::reference::{Tolerance, compare, gemm, round_f16};
use nvfp4::shapes::GroupShape;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nvfp4-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

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

/// Three problems (one with no tokens), GPU MODE-like inputs, alphas 1, 1, 0.25.
fn problems() -> Vec<HostProblem> {
    let shape = GroupShape {
        name: "cli".into(),
        problems: vec![(40, 256, 256), (0, 128, 128), (17, 136, 512)],
    };
    let mut ps = group(
        5,
        &shape,
        Distribution::GpuMode,
        ScaleLayout::Plain,
        ScaleLayout::Plain,
    );
    ps[2].alpha = 0.25;
    ps
}

/// Writes `problems` in the input format with the safetensors crate.
fn write_input(path: &Path, problems: &[HostProblem], extra: Option<&str>) {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, p) in problems.iter().enumerate() {
        tensors.push((
            format!("g{i}.a"),
            Dtype::U8,
            vec![p.m, p.k / 2],
            p.a.clone(),
        ));
        tensors.push((
            format!("g{i}.b"),
            Dtype::U8,
            vec![p.n, p.k / 2],
            p.b.clone(),
        ));
        tensors.push((
            format!("g{i}.sfa"),
            Dtype::F8_E4M3,
            vec![p.m, p.k / 16],
            p.sfa.clone(),
        ));
        tensors.push((
            format!("g{i}.sfb"),
            Dtype::F8_E4M3,
            vec![p.n, p.k / 16],
            p.sfb.clone(),
        ));
        tensors.push((
            format!("g{i}.alpha"),
            Dtype::F32,
            vec![],
            p.alpha.to_le_bytes().to_vec(),
        ));
    }
    if let Some(name) = extra {
        tensors.push((name.to_string(), Dtype::U8, vec![1], vec![0]));
    }
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(
        path,
        nvfp4::io::safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
}

/// The CLI under test: `NVFP4_BIN` if set (a staged binary on a GPU machine, where cargo's
/// path does not exist), else the one cargo built with this test.
fn nvfp4_bin() -> std::path::PathBuf {
    std::env::var_os("NVFP4_BIN").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_BIN_EXE_nvfp4")),
        std::path::PathBuf::from,
    )
}

fn nvfp4_run(args: &[&Path], flags: &[&str]) -> Output {
    let mut cmd = Command::new(nvfp4_bin());
    cmd.arg("run")
        .arg("--input")
        .arg(args[0])
        .arg("--output")
        .arg(args[1])
        .args(flags);
    cmd.output().unwrap()
}

/// The `g{i}.c` tensors of an output file, checking it holds nothing else.
fn read_output(path: &Path, shapes: &[(usize, usize)]) -> Vec<Vec<f16>> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), shapes.len(), "only g<i>.c: {:?}", st.names());
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(m, n))| {
            let t = st.tensor(&format!("g{i}.c")).unwrap();
            assert_eq!((t.dtype(), t.shape()), (Dtype::F16, &[m, n][..]));
            t.data()
                .chunks(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]))
                .collect()
        })
        .collect()
}

#[test]
fn run_matches_the_reference() {
    let dir = TempDir::new("ok");
    let ps = problems();
    let input = dir.path("in.safetensors");
    write_input(&input, &ps, None);
    let shapes: Vec<(usize, usize)> = ps.iter().map(|p| (p.m, p.n)).collect();
    let want: Vec<Vec<f64>> = ps.iter().map(gemm).collect();

    let out = dir.path("cpu.safetensors");
    let o = nvfp4_run(&[&input, &out], &["--cpu"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("--cpu: computing with the CPU reference"),
        "{stderr}"
    );
    assert!(
        stdout.contains("G=3 M=0..40 N=128..256 K=128..512"),
        "{stdout}"
    );
    assert!(
        stdout.contains("g2: M = 17, N = 136, K = 512, alpha = 0.25"),
        "{stdout}"
    );
    let got = read_output(&out, &shapes);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, &round_f16(w), "--cpu is the reference, bit for bit");
    }

    // Without --cpu: the GPU where there is one, else the CPU reference, saying so.
    let out = dir.path("auto.safetensors");
    let o = nvfp4_run(&[&input, &out], &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let got = read_output(&out, &shapes);
    if stderr.contains("no GPU: computing with the CPU reference") {
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, &round_f16(w));
        }
    } else {
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let c = compare(g, w, None, Tolerance::GpuMode);
            assert!(c.passed, "g{i}: {c:?}");
        }
    }
    assert_eq!(
        dir.files(),
        ["auto.safetensors", "cpu.safetensors", "in.safetensors"]
    );
}

#[test]
fn bad_inputs_fail_and_leave_no_output() {
    let dir = TempDir::new("bad");
    let ps = problems();
    let out = dir.path("out.safetensors");

    let typo = dir.path("typo.safetensors");
    write_input(&typo, &ps, Some("g0.sfA"));
    let good = dir.path("good.safetensors");
    write_input(&good, &ps, None);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let empty = dir.path("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    // Problem 1 (M 0, N 128, K 128) with b and sfb written for K = 64.
    let inconsistent = dir.path("inconsistent.safetensors");
    let mut p = ps.clone();
    p[1].b = vec![0; 128 * 32];
    p[1].sfb = vec![0x38; 128 * 4];
    write_input_with_k(&inconsistent, &p, 1, 64);
    let missing = dir.path("does-not-exist.safetensors");

    for (input, needle) in [
        (&typo, "unknown tensor(s) g0.sfA"),
        (
            &truncated,
            "truncated.safetensors is not a valid safetensors file",
        ),
        (&empty, "empty.safetensors is not a valid safetensors file"),
        (
            &inconsistent,
            "g1.b: shape [128, 32] does not match K = 128 from g1.a ([0, 64])",
        ),
        (&missing, "cannot read"),
    ] {
        let o = nvfp4_run(&[input, &out], &["--cpu"]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(needle), "expected `{needle}` in {stderr}");
        assert!(!out.exists(), "{}: no output", input.display());
    }
    // An output directory that does not exist: refused before computing.
    let o = nvfp4_run(&[&good, &dir.path("nope/out.safetensors")], &["--cpu"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!stderr.contains("computing"), "{stderr}");
    // A command-line error: status 2.
    let o = Command::new(nvfp4_bin())
        .args(["run", "--input"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        dir.files(),
        [
            "empty.safetensors",
            "good.safetensors",
            "inconsistent.safetensors",
            "truncated.safetensors",
            "typo.safetensors"
        ],
        "no output or temporary file"
    );
}

/// [`write_input`], but problem `i`'s b and sfb written with K = `k_b`.
fn write_input_with_k(path: &Path, problems: &[HostProblem], i: usize, k_b: usize) {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (j, p) in problems.iter().enumerate() {
        let kb = if j == i { k_b } else { p.k };
        tensors.push((
            format!("g{j}.a"),
            Dtype::U8,
            vec![p.m, p.k / 2],
            p.a.clone(),
        ));
        tensors.push((format!("g{j}.b"), Dtype::U8, vec![p.n, kb / 2], p.b.clone()));
        tensors.push((
            format!("g{j}.sfa"),
            Dtype::F8_E4M3,
            vec![p.m, p.k / 16],
            p.sfa.clone(),
        ));
        tensors.push((
            format!("g{j}.sfb"),
            Dtype::F8_E4M3,
            vec![p.n, kb / 16],
            p.sfb.clone(),
        ));
    }
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(
        path,
        nvfp4::io::safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
}
