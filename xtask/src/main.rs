//! Project automation, run as `cargo xtask <command>` (the alias is in `.cargo/config.toml`).
//!
//! Needs only cargo and rustup; no dependencies besides `kernels-gpu`, whose `KERNELS` table
//! says which kernels the PTX must contain and how to launch them.

mod build_ptx;
mod ptx;
mod ptxas;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  build-ptx [--check] [--no-ptxas] [--toolchain NAME]
      Compile kernels-gpu to PTX for sm_90a (with --cfg nvfp4_sm90a) and sm_80 with the
      pinned nightly, insert each kernel's launch bounds from KERNELS, gate both on
      `ptxas -v` (no stack frame, no spills, no errors or warnings, no `Potential
      Performance Loss` such as serialized wgmma) and write
      host/ptx/nvfp4_sm90a.ptx and host/ptx/nvfp4_sm80.ptx.
      --check       build, gate and compare with the committed PTX instead of writing it
      --no-ptxas    skip the ptxas gate (ptxas: pip install nvidia-cuda-nvcc==13.0.88, or
                    set PTXAS=/path/to/ptxas)
      --toolchain   build with this rustup toolchain instead of rust-toolchain.toml's channel
  help
      Print this message.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return Err("no command given".into());
    };
    match command.as_str() {
        "build-ptx" => build_ptx::run(&parse_build_ptx(rest)?),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            Err(format!("unknown command `{other}`"))
        }
    }
}

fn parse_build_ptx(args: &[String]) -> Result<build_ptx::Options, String> {
    let mut options = build_ptx::Options {
        check: false,
        no_ptxas: false,
        toolchain: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => options.check = true,
            "--no-ptxas" => options.no_ptxas = true,
            "--toolchain" => {
                let name = args
                    .next()
                    .ok_or("--toolchain needs a value, e.g. --toolchain nightly")?;
                options.toolchain = Some(name.clone());
            }
            other => match other.strip_prefix("--toolchain=") {
                Some(name) => options.toolchain = Some(name.to_string()),
                None => return Err(format!("build-ptx: unknown argument `{other}`\n{USAGE}")),
            },
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_build_ptx_flags() {
        let options = parse_build_ptx(&strings(&["--check", "--toolchain", "nightly"])).unwrap();
        assert!(options.check && !options.no_ptxas);
        assert_eq!(options.toolchain.as_deref(), Some("nightly"));
        let options = parse_build_ptx(&strings(&["--no-ptxas", "--toolchain=x"])).unwrap();
        assert!(!options.check && options.no_ptxas);
        assert_eq!(options.toolchain.as_deref(), Some("x"));
        assert!(parse_build_ptx(&strings(&["--chek"])).is_err());
        assert!(parse_build_ptx(&strings(&["--toolchain"])).is_err());
    }
}
