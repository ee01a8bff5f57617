//! The ptxas gate: assemble each PTX with `ptxas -v`, print what it reports per function and
//! fail on anything that would cost performance or break loading (TOOLCHAIN.md: "Gate every
//! kernel on `ptxas -v` reporting 0 bytes stack frame and 0 spills").

use std::path::{Path, PathBuf};
use std::process::Command;

/// How to get ptxas on a machine without a CUDA toolkit.
pub const INSTALL_HINT: &str = "install it with `python3 -m pip install nvidia-cuda-nvcc==13.0.88` \
     (CUDA 13.0's ptxas, as on the GPU machines), or point the PTXAS environment variable at a \
     ptxas binary; `--no-ptxas` skips this gate";

/// What ptxas reported for one function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionReport {
    pub name: String,
    pub arch: String,
    /// Whether it is a kernel (`.entry`) rather than a device function.
    pub entry: bool,
    pub registers: Option<u32>,
    pub smem_bytes: u32,
    pub stack_frame_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
}

/// The parsed output of one `ptxas -v` run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The `-arch` ptxas ran for.
    pub arch: String,
    pub functions: Vec<FunctionReport>,
    /// Lines reporting an error, a fatal error or an unresolved / undefined symbol.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// `info` lines announcing a "Potential Performance Loss" (C7512: wgmma instructions
    /// serialized for want of registers, which cost a kernel 20% once, H100 run 104).
    pub performance_losses: Vec<String>,
}

/// Finds ptxas: `$PTXAS`, then `PATH`, then the `nvidia-cuda-nvcc` wheel in python3's
/// packages.
pub fn locate() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PTXAS") {
        return Some(PathBuf::from(path));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("ptxas");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    // `nvidia` is a namespace package: list each of its folders.
    let script = "import nvidia\nfor p in nvidia.__path__: print(p)";
    let output = Command::new("python3").args(["-c", script]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .flat_map(|dir| {
            // cu13 wheels (CUDA 13) first, then the CUDA 12 layout.
            ["cu13/bin/ptxas", "cuda_nvcc/bin/ptxas"].map(|rel| Path::new(dir.trim()).join(rel))
        })
        .find(|candidate| candidate.is_file())
}

/// The `release` line of `ptxas --version`, for the log.
pub fn version(ptxas: &Path) -> Result<String, String> {
    let output = Command::new(ptxas)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}; {INSTALL_HINT}", ptxas.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout
        .lines()
        .find(|line| line.contains("release"))
        .unwrap_or("unknown version")
        .trim()
        .to_string())
}

/// Runs `ptxas -arch=ARCH -v PTX -o CUBIN` and parses what it prints. A failing exit status is
/// recorded as an error of the report.
pub fn run(ptxas: &Path, arch: &str, ptx: &Path, cubin: &Path) -> Result<Report, String> {
    let output = Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .arg("-v")
        .arg(ptx)
        .arg("-o")
        .arg(cubin)
        .output()
        .map_err(|e| format!("cannot run {}: {e}; {INSTALL_HINT}", ptxas.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut report = parse(&text, arch);
    if !output.status.success() {
        report.errors.push(format!(
            "ptxas -arch={arch} {} exited with {}",
            ptx.display(),
            output.status
        ));
    }
    Ok(report)
}

/// Parses `ptxas -v` output. Lines look like
/// ```text
/// ptxas info    : Compiling entry function 'k' for 'sm_90a'
/// ptxas info    : Function properties for k
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 40 registers, used 1 barriers, 4096 bytes smem, 360 bytes cmem[0]
/// ```
pub fn parse(text: &str, arch: &str) -> Report {
    let mut report = Report {
        arch: arch.to_string(),
        ..Report::default()
    };
    let mut current: Option<usize> = None;
    for line in text.lines() {
        // The severity is in the head of the line (`ptxas fatal   :`, `ptxas k.ptx, line 12;
        // error   :`), so function names in `info` lines cannot trip it.
        let head = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let lower = line.to_ascii_lowercase();
        let unresolved = lower.contains("unresolved") || lower.contains("undefined");
        if head.contains("error") || head.contains("fatal") {
            report.errors.push(line.trim().to_string());
        } else if head.contains("warning") {
            report.warnings.push(line.trim().to_string());
        } else if unresolved && !head.contains("info") {
            report.errors.push(line.trim().to_string());
        } else if line.contains("Potential Performance Loss") {
            report.performance_losses.push(line.trim().to_string());
        }
        if let Some(rest) = after(line, "Compiling entry function '") {
            let name = rest.split('\'').next().unwrap_or_default();
            let arch_seen = after(rest, "for '").and_then(|r| r.split('\'').next());
            let index = function(&mut report, name, arch_seen.unwrap_or(arch));
            report.functions[index].entry = true;
            current = Some(index);
        } else if let Some(rest) = after(line, "Function properties for ") {
            current = Some(function(&mut report, rest.trim(), arch));
        } else if line.contains("bytes stack frame")
            && let Some(index) = current
        {
            let f = &mut report.functions[index];
            f.stack_frame_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            f.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
            f.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
        } else if line.contains("Used ")
            && line.contains(" registers")
            && let Some(index) = current
        {
            let f = &mut report.functions[index];
            f.registers = after(line, "Used ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok());
            f.smem_bytes = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    report
}

/// Why `report` fails the gate, one line per problem; empty if it passes.
pub fn gate_failures(report: &Report, expected_entries: &[String]) -> Vec<String> {
    let mut failures: Vec<String> = Vec::new();
    let arch = &report.arch;
    failures.extend(
        report
            .errors
            .iter()
            .map(|e| format!("ptxas error ({arch}): {e}")),
    );
    failures.extend(
        report
            .warnings
            .iter()
            .map(|w| format!("ptxas warning ({arch}): {w}")),
    );
    failures.extend(
        report
            .performance_losses
            .iter()
            .map(|w| format!("ptxas ({arch}): {w}")),
    );
    for f in &report.functions {
        if f.stack_frame_bytes > 0 {
            failures.push(format!(
                "{} ({}): {} bytes stack frame (arrays indexed at run time, or too many live \
                 values, went to local memory)",
                f.name, f.arch, f.stack_frame_bytes
            ));
        }
        if f.spill_store_bytes > 0 || f.spill_load_bytes > 0 {
            failures.push(format!(
                "{} ({}): register spills ({} bytes stored, {} bytes loaded)",
                f.name, f.arch, f.spill_store_bytes, f.spill_load_bytes
            ));
        }
        if f.entry && f.registers.is_none() {
            failures.push(format!(
                "{} ({}): ptxas printed no register count",
                f.name, f.arch
            ));
        }
    }
    for name in expected_entries {
        if !report.functions.iter().any(|f| f.entry && &f.name == name) {
            failures.push(format!("ptxas ({arch}) did not report kernel {name}"));
        }
    }
    failures
}

/// A fixed-width table of the functions of several reports. `dynamic_smem` gives a kernel's
/// dynamic shared memory (ptxas sees only the static part).
pub fn table(reports: &[&Report], dynamic_smem: &dyn Fn(&str) -> Option<u32>) -> String {
    let rows: Vec<[String; 8]> = reports
        .iter()
        .flat_map(|r| &r.functions)
        .map(|f| {
            let name = if f.entry {
                f.name.clone()
            } else {
                format!("{} (func)", f.name)
            };
            [
                name,
                f.arch.clone(),
                f.registers.map_or("?".into(), |r| r.to_string()),
                f.smem_bytes.to_string(),
                dynamic_smem(&f.name).map_or("-".into(), |b| b.to_string()),
                f.stack_frame_bytes.to_string(),
                f.spill_store_bytes.to_string(),
                f.spill_load_bytes.to_string(),
            ]
        })
        .collect();
    let header = [
        "kernel",
        "arch",
        "registers",
        "smem B",
        "dyn smem B",
        "stack B",
        "spill st B",
        "spill ld B",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                if i < 2 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn function(report: &mut Report, name: &str, arch: &str) -> usize {
    if let Some(index) = report.functions.iter().position(|f| f.name == name) {
        return index;
    }
    report.functions.push(FunctionReport {
        name: name.to_string(),
        arch: arch.to_string(),
        ..FunctionReport::default()
    });
    report.functions.len() - 1
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// The number just before `unit` in `line` (`"4096 bytes smem"` -> 4096).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let head = &line[..line.find(unit)?];
    head.split([' ', ','])
        .rev()
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN_SM90A: &str = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'nvfp4_grouped_gemm_mma' for 'sm_90a'
ptxas info    : Function properties for nvfp4_grouped_gemm_mma
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 16384 bytes smem
ptxas info    : Compile time = 5.222 ms
";

    const SPILLING_SM80: &str = "ptxas info    : Overriding maximum register limit 256 for 'k3' with  32 of maxrregcount option
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k3' for 'sm_80'
ptxas info    : Function properties for k3
    776 bytes stack frame, 772 bytes spill stores, 772 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 776 bytes cumulative stack size, 360 bytes cmem[0]
ptxas info    : Compiling entry function 'k4' for 'sm_80'
ptxas info    : Function properties for helper
    64 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Function properties for k4
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 360 bytes cmem[0]
";

    #[test]
    fn parses_a_clean_kernel() {
        let report = parse(CLEAN_SM90A, "sm_90a");
        assert_eq!(
            report.functions,
            [FunctionReport {
                name: "nvfp4_grouped_gemm_mma".into(),
                arch: "sm_90a".into(),
                entry: true,
                registers: Some(40),
                smem_bytes: 16384,
                ..FunctionReport::default()
            }]
        );
        assert!(report.errors.is_empty() && report.warnings.is_empty());
        let expected = ["nvfp4_grouped_gemm_mma".to_string()];
        assert!(gate_failures(&report, &expected).is_empty());
        assert_eq!(gate_failures(&report, &["other".into()]).len(), 1);
    }

    #[test]
    fn fails_on_stack_and_spills() {
        let report = parse(SPILLING_SM80, "sm_80");
        let names: Vec<_> = report
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.entry))
            .collect();
        assert_eq!(names, [("k3", true), ("k4", true), ("helper", false)]);
        assert_eq!(report.functions[0].registers, Some(32));
        assert_eq!(report.functions[0].spill_load_bytes, 772);
        assert_eq!(report.functions[1].registers, Some(12));
        assert_eq!(report.functions[2].stack_frame_bytes, 64);
        let failures = gate_failures(&report, &[]);
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].contains("776 bytes stack frame"));
        assert!(failures[1].contains("spills"));
        assert!(failures[2].contains("helper"));
    }

    #[test]
    fn collects_errors_and_warnings() {
        let text = "ptxas fatal   : Unresolved extern function 'vprintf'\n\
                    ptxas k.ptx, line 12; error   : Illegal operand\n\
                    ptxas warning : (C7508) Potential Performance Loss: setmaxnreg ignored\n";
        let report = parse(text, "sm_90a");
        assert_eq!(report.errors.len(), 2);
        assert_eq!(report.warnings.len(), 1);
        assert_eq!(gate_failures(&report, &[]).len(), 3);
        // Kernel names are not severities.
        let text = "ptxas info    : Compiling entry function 'error_undefined' for 'sm_80'\n";
        assert!(parse(text, "sm_80").errors.is_empty());
    }

    #[test]
    fn fails_on_serialized_wgmma() {
        let text = "ptxas info    : (C7512) Potential Performance Loss: wgmma.mma_async \
                    instructions are serialized due to insufficient register resources for the \
                    function 'k'\n\
                    ptxas info    : (C7519) warpgroup.arrive is injected in around line 6 by \
                    compiler to allow use of registers in GMMA in function 'k'\n";
        let report = parse(text, "sm_90a");
        assert!(report.errors.is_empty() && report.warnings.is_empty());
        let failures = gate_failures(&report, &[]);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("C7512"));
    }

    #[test]
    fn prints_an_aligned_table() {
        let a = parse(CLEAN_SM90A, "sm_90a");
        let b = parse(SPILLING_SM80, "sm_80");
        let table = table(&[&a, &b], &|name| (name == "k3").then_some(1024));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("kernel "));
        assert!(lines[1].starts_with("nvfp4_grouped_gemm_mma  sm_90a"));
        assert!(lines[4].starts_with("helper (func)"));
        assert!(lines[1].ends_with(" 0"));
        assert!(lines[1].contains(" 16384           - "), "{table}");
        assert!(lines[2].contains(" 1024 "), "{table}");
    }
}
