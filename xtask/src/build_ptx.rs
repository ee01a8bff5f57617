//! `cargo xtask build-ptx [--check]`: compile `kernels-gpu` to PTX for each target, insert the
//! launch facts of `KERNELS`, gate the result on ptxas and write (or check) the PTX the host
//! crate embeds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kernels_gpu::kernels::{KERNELS, KernelInfo};

use crate::{ptx, ptxas};

/// One PTX the host embeds.
struct PtxTarget {
    /// `-Ctarget-cpu` and `ptxas -arch`.
    sm: &'static str,
    /// Whether `--cfg nvfp4_sm90a` is on (the wgmma kernels are built).
    sm90a: bool,
    /// Path of the committed PTX, relative to the workspace root.
    output: &'static str,
}

const TARGETS: &[PtxTarget] = &[
    PtxTarget {
        sm: "sm_90a",
        sm90a: true,
        output: "host/ptx/nvfp4_sm90a.ptx",
    },
    PtxTarget {
        sm: "sm_80",
        sm90a: false,
        output: "host/ptx/nvfp4_sm80.ptx",
    },
];

const NVPTX_TRIPLE: &str = "nvptx64-nvidia-cuda";

pub struct Options {
    /// Compare with the committed PTX instead of writing it.
    pub check: bool,
    /// Skip the ptxas gate.
    pub no_ptxas: bool,
    /// Toolchain for the NVPTX build; the channel of rust-toolchain.toml if `None`.
    pub toolchain: Option<String>,
}

pub fn run(options: &Options) -> Result<(), String> {
    let started = Instant::now();
    let root = workspace_root();
    let toolchain = match &options.toolchain {
        Some(toolchain) => toolchain.clone(),
        None => pinned_toolchain(&root)?,
    };
    // Find ptxas before spending a minute on the builds.
    let ptxas = if options.no_ptxas {
        eprintln!("build-ptx: --no-ptxas: skipping the ptxas gate");
        None
    } else {
        let path =
            ptxas::locate().ok_or_else(|| format!("ptxas not found; {}", ptxas::INSTALL_HINT))?;
        eprintln!(
            "build-ptx: ptxas {} ({})",
            path.display(),
            ptxas::version(&path)?
        );
        Some(path)
    };
    let target_dir = target_dir(&root)?;
    let out_dir = target_dir.join("ptx-out");
    fs::create_dir_all(&out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;

    let mut built: Vec<(&PtxTarget, PathBuf, String)> = Vec::new();
    for target in TARGETS {
        let raw = compile(&root, &target_dir, &toolchain, target)?;
        let processed = ptx::postprocess(&raw, KERNELS, target.sm90a)
            .map_err(|e| format!("{}: {e}", target.sm))?;
        ptx::check_self_contained(&processed).map_err(|e| format!("{}: {e}", target.sm))?;
        for name in ptx::entry_names(&processed) {
            if !KERNELS.iter().any(|k| k.name == name) {
                eprintln!(
                    "build-ptx: warning: {}: .entry {name} is not in kernels-gpu's KERNELS \
                     (no launch bounds inserted; the host cannot know how to launch it)",
                    target.sm
                );
            }
        }
        let file_name = Path::new(target.output)
            .file_name()
            .expect("output paths name a file");
        let staged = out_dir.join(file_name);
        write_if_changed(&staged, &processed)?;
        built.push((target, staged, processed));
    }

    let mut failures: Vec<String> = Vec::new();
    if let Some(ptxas) = &ptxas {
        let mut reports = Vec::new();
        for (target, staged, text) in &built {
            let started = Instant::now();
            let cubin = staged.with_extension("cubin");
            let report = ptxas::run(ptxas, target.sm, staged, &cubin)?;
            eprintln!(
                "build-ptx: ptxas -arch={} {} in {:.1}s",
                target.sm,
                staged.display(),
                started.elapsed().as_secs_f64()
            );
            let expected = ptx::entry_names(text);
            failures.extend(ptxas::gate_failures(&report, &expected));
            reports.push(report);
        }
        for report in &reports {
            failures.extend(smem_failures(report, KERNELS));
        }
        let refs: Vec<&ptxas::Report> = reports.iter().collect();
        let dynamic_smem = |name: &str| {
            KERNELS
                .iter()
                .find(|k| k.name == name)
                .map(|k| k.dynamic_smem_bytes)
        };
        eprint!("{}", ptxas::table(&refs, &dynamic_smem));
    }

    if options.check {
        for (target, staged, text) in &built {
            let committed_path = root.join(target.output);
            let committed = fs::read_to_string(&committed_path).unwrap_or_default();
            if committed != *text {
                failures.push(format!(
                    "{} is stale: it differs from a fresh build ({}){}; run `cargo xtask \
                     build-ptx` and commit the result",
                    target.output,
                    staged.display(),
                    first_difference(&committed, text)
                ));
            } else {
                eprintln!("build-ptx: {} is up to date", target.output);
            }
        }
    }

    if !failures.is_empty() {
        let mut message = String::from("build-ptx failed:");
        for failure in &failures {
            message.push_str("\n  - ");
            message.push_str(failure);
        }
        if !options.check {
            message.push_str("\n(the committed PTX was left as it was; the rejected PTX is in ");
            message.push_str(&out_dir.display().to_string());
            message.push(')');
        }
        return Err(message);
    }

    if !options.check {
        for (target, _, text) in &built {
            let path = root.join(target.output);
            let changed = write_if_changed(&path, text)?;
            let state = if changed { "wrote" } else { "unchanged" };
            eprintln!(
                "build-ptx: {state} {} ({} bytes)",
                target.output,
                text.len()
            );
        }
    }
    eprintln!("build-ptx: done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Shared memory per SM and the most one CTA may use (with the opt-in attribute), in bytes,
/// and what the system reserves per resident CTA (CUDA C Programming Guide, "Technical
/// Specifications per Compute Capability"): 228 / 227 KB on 9.0, 164 / 163 KB on 8.0.
fn smem_limits(arch: &str) -> Option<(u32, u32, u32)> {
    match arch {
        "sm_90" | "sm_90a" => Some((228 * 1024, 227 * 1024, 1024)),
        "sm_80" => Some((164 * 1024, 163 * 1024, 1024)),
        _ => None,
    }
}

/// Whether each kernel's static (ptxas) plus dynamic (KERNELS) shared memory fits one CTA,
/// and `min_ctas_per_sm` CTAs one SM: ptxas cannot see the dynamic part, so nothing else
/// checks that the launch bounds promised in the PTX can hold.
fn smem_failures(report: &ptxas::Report, kernels: &[KernelInfo]) -> Vec<String> {
    let Some((per_sm, per_cta, reserved)) = smem_limits(&report.arch) else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    for f in report.functions.iter().filter(|f| f.entry) {
        let Some(kernel) = kernels.iter().find(|k| k.name == f.name) else {
            continue;
        };
        let total = u64::from(f.smem_bytes) + u64::from(kernel.dynamic_smem_bytes);
        if total > u64::from(per_cta) {
            failures.push(format!(
                "{} ({}): {} bytes static + {} bytes dynamic shared memory exceed the {} bytes                  one CTA may use",
                f.name, report.arch, f.smem_bytes, kernel.dynamic_smem_bytes, per_cta
            ));
        } else if u64::from(kernel.min_ctas_per_sm) * (total + u64::from(reserved))
            > u64::from(per_sm)
        {
            failures.push(format!(
                "{} ({}): min_ctas_per_sm = {} CTAs of {} bytes shared memory (+{} reserved                  each) do not fit the SM's {} bytes",
                f.name, report.arch, kernel.min_ctas_per_sm, total, reserved, per_sm
            ));
        }
    }
    failures
}

/// Builds `kernels-gpu` for `nvptx64-nvidia-cuda` with the target's flags and returns the PTX
/// rustc emitted. Each target gets its own target dir so the two builds stay cached side by
/// side.
fn compile(
    root: &Path,
    target_dir: &Path,
    toolchain: &str,
    target: &PtxTarget,
) -> Result<String, String> {
    let build_dir = target_dir.join(format!("ptx-{}", target.sm));
    // rustc writes the PTX here itself (`--emit=asm=PATH`, one codegen unit), so there is no
    // hashed `deps/kernels_gpu-*.s` to pick among stale ones.
    let asm = build_dir.join("kernels_gpu.s");
    let mut rustflags = vec![
        "-Zunstable-options".to_string(),
        "-Cpanic=immediate-abort".to_string(),
        format!("-Ctarget-cpu={}", target.sm),
    ];
    if target.sm90a {
        rustflags.extend(["--cfg".to_string(), "nvfp4_sm90a".to_string()]);
    }
    let started = Instant::now();
    eprintln!(
        "build-ptx: {}: cargo +{toolchain} rustc --release -p kernels-gpu --target \
         {NVPTX_TRIPLE} -Zbuild-std=core (RUSTFLAGS=\"{}\", target dir {})",
        target.sm,
        rustflags.join(" "),
        build_dir.display()
    );
    cargo_rustc(root, &build_dir, toolchain, &rustflags, &asm)?;
    if !asm.is_file() {
        // Cargo found the crate fresh but the PTX it produced last time is gone: rebuild it.
        eprintln!(
            "build-ptx: {}: {} is missing; rebuilding kernels-gpu",
            target.sm,
            asm.display()
        );
        let status = Command::new("cargo")
            .arg(format!("+{toolchain}"))
            .args([
                "clean",
                "--quiet",
                "--release",
                "-p",
                "kernels-gpu",
                "--target",
            ])
            .arg(NVPTX_TRIPLE)
            .arg("--target-dir")
            .arg(&build_dir)
            .current_dir(root)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("cargo clean -p kernels-gpu failed ({status})"));
        }
        cargo_rustc(root, &build_dir, toolchain, &rustflags, &asm)?;
    }
    let text = fs::read_to_string(&asm).map_err(|e| {
        format!(
            "{}: the build succeeded but {} is unreadable: {e}",
            target.sm,
            asm.display()
        )
    })?;
    eprintln!(
        "build-ptx: {}: built in {:.1}s ({} bytes of PTX)",
        target.sm,
        started.elapsed().as_secs_f64(),
        text.len()
    );
    Ok(text)
}

fn cargo_rustc(
    root: &Path,
    build_dir: &Path,
    toolchain: &str,
    rustflags: &[String],
    asm: &Path,
) -> Result<(), String> {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{toolchain}"))
        .args([
            "rustc",
            "--release",
            "-p",
            "kernels-gpu",
            "--target",
            NVPTX_TRIPLE,
        ])
        .arg("-Zbuild-std=core")
        .arg("--target-dir")
        .arg(build_dir);
    // One codegen unit gives one PTX file; the rest pins what the environment could change.
    for setting in [
        "codegen-units=1",
        "opt-level=3",
        "debug=false",
        "debug-assertions=false",
        "overflow-checks=false",
        "incremental=false",
    ] {
        cmd.arg("--config")
            .arg(format!("profile.release.{setting}"));
    }
    cmd.arg("--")
        .arg(format!("--emit=asm={}", asm.display()))
        .current_dir(root)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"))
        .env("CARGO_INCREMENTAL", "0");
    // A RUSTC chosen for the host build must not compile the NVPTX one, and other flag
    // variables would be ignored anyway (CARGO_ENCODED_RUSTFLAGS wins): drop them for clarity.
    for var in [
        "RUSTC",
        "CARGO_BUILD_RUSTC",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo: {e}; is rustup's cargo on PATH?"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building kernels-gpu for {NVPTX_TRIPLE} failed ({status}). If the toolchain is \
             missing: `rustup toolchain install {toolchain} --profile minimal -c rust-src` \
             (or scripts/setup.sh)"
        ))
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// The `channel` of rust-toolchain.toml: the nightly the PTX is pinned to.
fn pinned_toolchain(root: &Path) -> Result<String, String> {
    let path = root.join("rust-toolchain.toml");
    let text = fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_string())
        .next()
        .ok_or_else(|| format!("{} has no `channel = \"...\"` line", path.display()))
}

/// The workspace's target directory as cargo resolves it (`CARGO_TARGET_DIR`,
/// `build.target-dir` or `<root>/target`).
fn target_dir(root: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let json = String::from_utf8_lossy(&output.stdout);
    json_string_field(&json, "target_directory")
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata printed no target_directory".to_string())
}

/// The value of the first `"key":"..."` string field in `json`, unescaped.
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let marker = format!("\"{key}\":\"");
    let start = json.find(&marker)? + marker.len();
    let mut value = String::new();
    let mut chars = json[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                'b' => value.push('\u{8}'),
                'f' => value.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
}

/// Writes `text` unless the file already holds it (keeps mtimes, so the host crate is not
/// rebuilt for nothing). Returns whether it wrote.
fn write_if_changed(path: &Path, text: &str) -> Result<bool, String> {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(true)
}

/// ` (first difference at line N: committed `...`, fresh `...`)`, for the stale message.
fn first_difference(committed: &str, fresh: &str) -> String {
    if committed.is_empty() {
        return " (the committed file is missing or empty)".to_string();
    }
    let mut committed_lines = committed.lines();
    let mut fresh_lines = fresh.lines();
    let mut line = 1;
    loop {
        match (committed_lines.next(), fresh_lines.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            (None, None) => return " (they differ only in line endings)".to_string(),
            (a, b) => {
                let show = |s: Option<&str>| {
                    s.map_or("<end of file>".to_string(), |s| {
                        let s = s.trim();
                        if s.len() > 60 {
                            format!("`{}...`", s.chars().take(60).collect::<String>())
                        } else {
                            format!("`{s}`")
                        }
                    })
                };
                return format!(
                    " (first difference at line {line}: committed {}, fresh {})",
                    show(a),
                    show(b)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_string_fields() {
        let json = r#"{"packages":[],"target_directory":"/w/a \"b\"\\c\u00e9","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some("/w/a \"b\"\\c\u{e9}")
        );
        assert_eq!(json_string_field(json, "missing"), None);
    }

    #[test]
    fn reports_the_first_differing_line() {
        assert_eq!(
            first_difference("a\nb\nc\n", "a\nx\nc\n"),
            " (first difference at line 2: committed `b`, fresh `x`)"
        );
        assert!(first_difference("a\n", "a\nb\n").contains("committed <end of file>"));
        assert!(first_difference("", "a").contains("missing"));
    }

    #[test]
    fn checks_that_shared_memory_fits() {
        let kernel = |name, dynamic_smem_bytes, min_ctas_per_sm| KernelInfo {
            name,
            threads: 256,
            min_ctas_per_sm,
            dynamic_smem_bytes,
            min_cc: 90,
            sm90a_only: true,
            tile_n: 128,
            tile_m: 128,
            token_maps: false,
            weight_maps: false,
        };
        let report = |arch: &str, smem_bytes| ptxas::Report {
            arch: arch.into(),
            functions: vec![ptxas::FunctionReport {
                name: "k".into(),
                arch: arch.into(),
                entry: true,
                registers: Some(100),
                smem_bytes,
                ..ptxas::FunctionReport::default()
            }],
            ..ptxas::Report::default()
        };
        // 200 KiB dynamic + 16 KiB static: one CTA fits on sm_90a, not on sm_80.
        let kernels = [kernel("k", 200 * 1024, 1)];
        assert!(smem_failures(&report("sm_90a", 16384), &kernels).is_empty());
        let failures = smem_failures(&report("sm_80", 16384), &kernels);
        assert!(failures[0].contains("exceed"), "{failures:?}");
        // Two CTAs of 100 KiB + 1 KiB reserved do not fit 164 KiB.
        let kernels = [kernel("k", 100 * 1024, 2)];
        let failures = smem_failures(&report("sm_80", 0), &kernels);
        assert!(failures[0].contains("min_ctas_per_sm = 2"), "{failures:?}");
        assert!(smem_failures(&report("sm_90a", 0), &kernels).is_empty());
        // Kernels not in the table are left alone.
        assert!(smem_failures(&report("sm_80", 0), &[]).is_empty());
    }

    #[test]
    fn targets_write_distinct_files() {
        assert_ne!(TARGETS[0].output, TARGETS[1].output);
        assert!(TARGETS.iter().all(|t| t.output.starts_with("host/ptx/")));
    }
}
