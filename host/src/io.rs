//! Reading grouped NVFP4 problems from a [safetensors] file and writing the fp16 results
//! back, for `nvfp4 run` and for services that keep experts' weights and activations in
//! safetensors files.
//!
//! # Input format
//! One group of `G` problems (experts), numbered `0 .. G` without gaps. Problem `i` is the
//! tensors
//!
//! | name | dtype | shape | contents |
//! |---|---|---|---|
//! | `g{i}.a` | `U8` | `[M, K/2]` | A (tokens): FP4 E2M1 codes, two per byte, element `2j` in the low nibble of byte `j` |
//! | `g{i}.b` | `U8` | `[N, K/2]` | B (weights), same encoding |
//! | `g{i}.sfa` | `F8_E4M3` (or `U8`) | `[M, K/16]` | A's E4M3 scales, plain row-major layout |
//! | `g{i}.sfb` | `F8_E4M3` (or `U8`) | `[N, K/16]` | B's E4M3 scales, plain row-major layout |
//! | `g{i}.alpha` (optional) | `F32` | `[]` or `[1]` | output factor, finite; 1.0 when absent |
//!
//! `K` comes from `g{i}.a`'s second dimension and must be a positive multiple of 16; `M`
//! (tokens) may be 0 (shape `[0, K/2]`), `N` too. Every tensor's dtype and shape is checked,
//! and a tensor whose name is not one of the above (a typo such as `g0.sfA`) is an error, not
//! silently ignored. Only the plain scale layout is read; the blocked ("128x4") layout is
//! a possible later extension. In PyTorch: `a.view(torch.uint8)` for
//! `float4_e2m1fn_x2` data, and `torch.float8_e4m3fn` scales are stored as `F8_E4M3` by
//! `safetensors.torch.save_file`.
//!
//! # Output format
//! [`write_outputs`] writes `g{i}.c`, `F16`, shape `[M, N]`, row-major, for every problem
//! and nothing else, atomically: to a temporary file in the output's directory, renamed over
//! the output at the end, so a failed write leaves neither a partial output nor the
//! temporary file behind.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let problems = nvfp4::io::read_groups("experts.safetensors")?;
//! let outputs: Vec<Vec<nvfp4::f16>> = problems
//!     .iter()
//!     .map(|p| nvfp4::reference::round_f16(&nvfp4::reference::gemm(p)))
//!     .collect();
//! let shapes: Vec<(usize, usize)> = problems.iter().map(|p| (p.m, p.n)).collect();
//! nvfp4::io::write_outputs("out.safetensors", &outputs, &shapes)?;
//! # Ok(()) }
//! ```
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

/// The `safetensors` crate this module reads and writes with, for writing inputs or reading
/// outputs with the same version.
pub use safetensors;

use crate::{HostProblem, ScaleLayout, f16};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a safetensors file could not be read as a group of problems, or the outputs could not
/// be written. Every message names the file and, where one is at fault, the tensor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// The input file could not be read (missing, unreadable, a directory, ...).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The input file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file (empty, truncated, corrupt header, offsets
    /// that do not cover the data, ...); `source` is the parser's message.
    #[error("{} is not a valid safetensors file: {source}", path.display())]
    Parse {
        /// The input file.
        path: PathBuf,
        /// The safetensors parser's error.
        source: SafeTensorError,
    },
    /// The file holds no tensor named like a group (`g0.a`, ...).
    #[error(
        "{}: no groups found (expected tensors named g0.a, g0.b, ...)",
        path.display()
    )]
    NoGroups {
        /// The input file.
        path: PathBuf,
    },
    /// Tensors whose names are not `g{i}.a`, `.b`, `.sfa`, `.sfb` or `.alpha`.
    #[error(
        "{}: unknown tensor(s) {}: only g<i>.a, g<i>.b, g<i>.sfa, g<i>.sfb and g<i>.alpha \
         (i = 0, 1, ... without leading zeros) are read",
        path.display(),
        names.join(", ")
    )]
    UnknownTensors {
        /// The input file.
        path: PathBuf,
        /// The unexpected names, sorted.
        names: Vec<String>,
    },
    /// A required tensor is absent (groups must be numbered 0.. without gaps).
    #[error(
        "{}: {tensor} missing (the file names groups up to g{last_group}, so g0 .. g{last_group} \
         each need .a, .b, .sfa and .sfb)",
        path.display()
    )]
    Missing {
        /// The input file.
        path: PathBuf,
        /// The missing tensor's name.
        tensor: String,
        /// The highest group index of any tensor in the file.
        last_group: usize,
    },
    /// A tensor has the wrong dtype.
    #[error("{}: {tensor}: expected dtype {expected}, found {found}", path.display())]
    Dtype {
        /// The input file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The accepted dtype(s).
        expected: &'static str,
        /// The file's dtype.
        found: String,
    },
    /// A tensor's shape or value is inconsistent (wrong rank, K not a multiple of 16, K of
    /// B differing from K of A, scale shapes, a non-finite alpha); `message` says how.
    #[error("{}: {tensor}: {message}", path.display())]
    Invalid {
        /// The input file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong, with the shapes involved.
        message: String,
    },
    /// The outputs handed to [`write_outputs`] do not match the shapes.
    #[error("cannot write {}: {message}", path.display())]
    OutputMismatch {
        /// The output file.
        path: PathBuf,
        /// Which output does not match which shape.
        message: String,
    },
    /// Writing or renaming the output failed (the output and the temporary file are gone).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// What the OS (or the serializer) said.
        source: std::io::Error,
    },
}

/// The fields of one group, by name.
const FIELDS: [&str; 5] = ["a", "b", "sfa", "sfb", "alpha"];

/// `g{i}.{field}` split into `(i, field)`, or `None` if `name` is not of that form (a
/// leading zero, `+`, an empty index or an unknown field all make it unknown).
fn parse_name(name: &str) -> Option<(usize, &'static str)> {
    let rest = name.strip_prefix('g')?;
    let (index, field) = rest.split_once('.')?;
    if index.is_empty()
        || !index.bytes().all(|b| b.is_ascii_digit())
        || (index.len() > 1 && index.starts_with('0'))
    {
        return None;
    }
    let index: usize = index.parse().ok()?;
    let field = FIELDS.into_iter().find(|f| *f == field)?;
    Some((index, field))
}

fn shape_str(shape: &[usize]) -> String {
    let mut s = String::from("[");
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{d}");
    }
    s.push(']');
    s
}

/// Reads a group of problems from the safetensors file at `path` (format in the
/// [module docs](self)). Problems come back in index order with plain scale layouts, ready
/// for [`GroupedGemm::run_host`](crate::GroupedGemm::run_host) or the CPU reference; they
/// pass [`validate::check_host`](crate::validate::check_host).
///
/// # Errors
/// [`IoError::Read`] if the file cannot be read; [`IoError::Parse`] if it is not a valid
/// safetensors file (including empty and truncated files); [`IoError::UnknownTensors`],
/// [`IoError::NoGroups`], [`IoError::Missing`], [`IoError::Dtype`] and [`IoError::Invalid`]
/// for names, dtypes and shapes outside the format, each naming the tensor.
pub fn read_groups(path: impl AsRef<Path>) -> Result<Vec<HostProblem>, IoError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| IoError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_groups(path, &bytes)
}

/// [`read_groups`] on the bytes of a safetensors file already in memory; `path` only names
/// the source in errors.
///
/// # Errors
/// As [`read_groups`], except [`IoError::Read`].
pub fn parse_groups(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Vec<HostProblem>, IoError> {
    let path = path.as_ref();
    let st = SafeTensors::deserialize(bytes).map_err(|source| IoError::Parse {
        path: path.to_path_buf(),
        source,
    })?;

    let mut tensors: BTreeMap<(usize, &'static str), TensorView<'_>> = BTreeMap::new();
    let mut unknown = BTreeSet::new();
    for (name, view) in st.iter() {
        match parse_name(name) {
            Some(key) => {
                tensors.insert(key, view);
            }
            None => {
                unknown.insert(name.to_string());
            }
        }
    }
    if !unknown.is_empty() {
        return Err(IoError::UnknownTensors {
            path: path.to_path_buf(),
            names: unknown.into_iter().collect(),
        });
    }
    let Some(&(last_group, _)) = tensors.keys().next_back() else {
        return Err(IoError::NoGroups {
            path: path.to_path_buf(),
        });
    };

    let tensor_err = |tensor: String, message: String| IoError::Invalid {
        path: path.to_path_buf(),
        tensor,
        message,
    };
    let get = |i: usize, field: &'static str| -> Result<&TensorView<'_>, IoError> {
        tensors.get(&(i, field)).ok_or_else(|| IoError::Missing {
            path: path.to_path_buf(),
            tensor: format!("g{i}.{field}"),
            last_group,
        })
    };
    let dtype = |name: &str, view: &TensorView<'_>, scales: bool| -> Result<(), IoError> {
        let ok = view.dtype() == Dtype::U8 || (scales && view.dtype() == Dtype::F8_E4M3);
        if ok {
            Ok(())
        } else {
            Err(IoError::Dtype {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                expected: if scales { "F8_E4M3 (or U8)" } else { "U8" },
                found: view.dtype().to_string(),
            })
        }
    };

    let mut problems = Vec::with_capacity(last_group + 1);
    for i in 0..=last_group {
        let (a, b) = (get(i, "a")?, get(i, "b")?);
        let (sfa, sfb) = (get(i, "sfa")?, get(i, "sfb")?);
        let (na, nb, nsfa, nsfb) = (
            format!("g{i}.a"),
            format!("g{i}.b"),
            format!("g{i}.sfa"),
            format!("g{i}.sfb"),
        );
        dtype(&na, a, false)?;
        dtype(&nb, b, false)?;
        dtype(&nsfa, sfa, true)?;
        dtype(&nsfb, sfb, true)?;

        // A fixes M and K.
        let &[m, half_k] = a.shape() else {
            return Err(tensor_err(
                na,
                format!(
                    "shape {} is not 2-dimensional [M, K/2]",
                    shape_str(a.shape())
                ),
            ));
        };
        let k = half_k.saturating_mul(2); // M = 0 leaves half_k unbounded by the data
        if k == 0 {
            return Err(tensor_err(
                na,
                format!(
                    "K/2 = 0 (shape {}): K must be positive",
                    shape_str(a.shape())
                ),
            ));
        }
        if !k.is_multiple_of(16) {
            return Err(tensor_err(
                na,
                format!("K/2 = {half_k} gives K = {k}, not a multiple of 16 (one scale block)"),
            ));
        }
        let a_shape = shape_str(a.shape());
        // B fixes N and must agree on K.
        let n = match *b.shape() {
            [n, bk] if bk == half_k => n,
            _ => {
                return Err(tensor_err(
                    nb,
                    format!(
                        "shape {} does not match K = {k} from {na} ({a_shape}): expected [N, {half_k}]",
                        shape_str(b.shape())
                    ),
                ));
            }
        };
        let b_shape = shape_str(b.shape());
        for (name, view, rows, rows_name, from, from_shape) in [
            (&nsfa, sfa, m, "M", &na, &a_shape),
            (&nsfb, sfb, n, "N", &nb, &b_shape),
        ] {
            if view.shape() != [rows, k / 16] {
                return Err(tensor_err(
                    name.clone(),
                    format!(
                        "shape {} does not match {from} ({from_shape}, {rows_name} = {rows}, K = {k}): \
                         expected plain scales [{rows}, {}] ([{rows_name}, K/16])",
                        shape_str(view.shape()),
                        k / 16
                    ),
                ));
            }
        }

        let alpha = match tensors.get(&(i, "alpha")) {
            None => 1.0,
            Some(view) => {
                let name = format!("g{i}.alpha");
                if view.dtype() != Dtype::F32 {
                    return Err(IoError::Dtype {
                        path: path.to_path_buf(),
                        tensor: name,
                        expected: "F32",
                        found: view.dtype().to_string(),
                    });
                }
                if !matches!(view.shape(), [] | [1]) {
                    return Err(tensor_err(
                        name,
                        format!(
                            "shape {} is not a scalar: expected [] or [1]",
                            shape_str(view.shape())
                        ),
                    ));
                }
                // One F32 element: the parser checked the byte count against the shape.
                let data: [u8; 4] = view
                    .data()
                    .try_into()
                    .map_err(|_| tensor_err(name.clone(), "does not hold 4 bytes".to_string()))?;
                let alpha = f32::from_le_bytes(data);
                if !alpha.is_finite() {
                    return Err(tensor_err(name, format!("{alpha} is not finite")));
                }
                alpha
            }
        };

        problems.push(HostProblem {
            m,
            n,
            k,
            a: a.data().to_vec(),
            sfa: sfa.data().to_vec(),
            sfa_layout: ScaleLayout::Plain,
            b: b.data().to_vec(),
            sfb: sfb.data().to_vec(),
            sfb_layout: ScaleLayout::Plain,
            alpha,
        });
    }
    Ok(problems)
}

/// `path` with an explicit directory (`./out` for a bare `out`), and that directory.
fn with_dir(path: &Path) -> (PathBuf, PathBuf) {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => (path.to_path_buf(), dir.to_path_buf()),
        _ => (Path::new(".").join(path), PathBuf::from(".")),
    }
}

/// Checks, before any work is done, that [`write_outputs`] can plausibly create `path`: its
/// directory exists and `path` is not a directory. (The write itself can still fail, e.g. on
/// a full disk; it then leaves nothing behind.)
///
/// # Errors
/// [`IoError::Write`] saying what is wrong.
pub fn check_output_path(path: impl AsRef<Path>) -> Result<(), IoError> {
    let path = path.as_ref();
    let write_err = |msg: String| IoError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(msg),
    };
    if path.as_os_str().is_empty() {
        return Err(write_err("the output path is empty".into()));
    }
    let (_, dir) = with_dir(path);
    if !dir.is_dir() {
        return Err(write_err(format!(
            "the directory {} does not exist",
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(write_err("it is a directory".into()));
    }
    Ok(())
}

/// Writes `outputs[i]` (`shapes[i] = (m, n)`, row-major fp16) as tensor `g{i}.c`, `F16`,
/// shape `[m, n]`, to the safetensors file `path`, and nothing else.
///
/// Atomic: the file is written to a temporary file in `path`'s directory, flushed to disk
/// and renamed over `path` at the end. On any error the temporary file is removed and
/// `path` is untouched (a previous file there stays as it was).
///
/// # Errors
/// [`IoError::OutputMismatch`] if `outputs` and `shapes` differ in length or an output does
/// not hold `m * n` values; [`IoError::Write`] if creating, writing or renaming fails.
pub fn write_outputs(
    path: impl AsRef<Path>,
    outputs: &[Vec<f16>],
    shapes: &[(usize, usize)],
) -> Result<(), IoError> {
    let path = path.as_ref();
    let mismatch = |message: String| IoError::OutputMismatch {
        path: path.to_path_buf(),
        message,
    };
    if outputs.len() != shapes.len() {
        return Err(mismatch(format!(
            "{} outputs for {} shapes",
            outputs.len(),
            shapes.len()
        )));
    }
    let mut data = Vec::with_capacity(outputs.len());
    for (i, (c, &(m, n))) in outputs.iter().zip(shapes).enumerate() {
        if m.checked_mul(n) != Some(c.len()) {
            return Err(mismatch(format!(
                "g{i}.c holds {} values but its shape is [{m}, {n}]",
                c.len()
            )));
        }
        let bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
        data.push((format!("g{i}.c"), vec![m, n], bytes));
    }
    let write_err = |source: std::io::Error| IoError::Write {
        path: path.to_path_buf(),
        source,
    };
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F16, shape.clone(), bytes).map(|v| (name.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| write_err(std::io::Error::other(e)))?;
    let serialized = safetensors::serialize(views, None).map_err(|e| match e {
        SafeTensorError::IoError(e) => write_err(e),
        e => write_err(std::io::Error::other(e)),
    })?;
    drop(data);

    let (target, dir) = with_dir(path);
    let file_name = path
        .file_name()
        .ok_or_else(|| write_err(std::io::Error::other("the output path has no file name")))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    // Unique per process and call, so concurrent writers never share a temporary file.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    temp_name.push(format!(
        ".nvfp4-tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(&serialized)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, &target)
    };
    write().map_err(|source| {
        // `create_new` failing on an existing file (left by a crashed run that had the same
        // process id): that file is not ours to remove.
        if source.kind() != std::io::ErrorKind::AlreadyExists {
            let _ = std::fs::remove_file(&temp);
        }
        write_err(source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("g0.a"), Some((0, "a")));
        assert_eq!(parse_name("g12.alpha"), Some((12, "alpha")));
        assert_eq!(parse_name("g3.sfb"), Some((3, "sfb")));
        for bad in [
            "g0.sfA", "g01.a", "g.a", "ga", "g0", "g0.c", "g+1.a", "G0.a", "g0.a.b", "x0.a", "g0.",
            "",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn shapes() {
        assert_eq!(shape_str(&[]), "[]");
        assert_eq!(shape_str(&[40, 128]), "[40, 128]");
    }

    #[test]
    fn bare_file_names_get_a_directory() {
        assert_eq!(
            with_dir(Path::new("out.safetensors")),
            (PathBuf::from("./out.safetensors"), PathBuf::from("."))
        );
        assert_eq!(
            with_dir(Path::new("/tmp/x/out")),
            (PathBuf::from("/tmp/x/out"), PathBuf::from("/tmp/x"))
        );
    }
}
