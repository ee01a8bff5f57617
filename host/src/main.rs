//! `nvfp4`: benchmark and check the NVFP4 grouped GEMM from the command line.
//!
//! `nvfp4 bench` times the kernel on the GPU MODE benchmark shapes (each run checked against
//! the f64 CPU reference) next to the fp16 tensor-core floor and cuBLAS fp16; `nvfp4 check`
//! runs the correctness suite. Without a GPU both fall back to the CPU reference on reduced
//! shapes. `nvfp4 run` computes a group read from a safetensors file and writes the fp16
//! results to another (on the GPU, or with the CPU reference without one). `nvfp4 --help`
//! lists every option.
//!
//! Exit status: 0 success, 1 a check failed or an error occurred, 2 a bad command line.

mod cli;

use cli::args::{self, Command};
use cli::util::Progress;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `args_os`: `std::env::args` panics on an argument that is not UTF-8.
    let argv: Option<Vec<String>> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string().ok())
        .collect();
    let Some(argv) = argv else {
        eprintln!("error: an argument is not valid UTF-8\n\nRun `nvfp4 --help` for usage.");
        return ExitCode::from(2);
    };
    let command = match args::parse(&argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\nRun `nvfp4 --help` for usage.");
            return ExitCode::from(2);
        }
    };
    let progress = Progress::new();
    let (cpu_forced, gpu) = match &command {
        Command::Help => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Command::Run(o) => {
            // Its own GPU / CPU choice and messages: full shapes either way.
            return match cli::run::run(o, &progress) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Bench(o) => (o.common.cpu, !o.common.cpu),
        Command::Check(o) => (o.common.cpu, !o.common.cpu),
    };
    let (ctx, why_cpu) = if gpu {
        progress.step("looking for a CUDA GPU...");
        match cli::device::open_gpu() {
            Ok(ctx) => (Some(ctx), String::new()),
            Err(reason) => {
                println!(
                    "no CUDA GPU found ({reason}): running the CPU reference path on reduced \
                     shapes"
                );
                (None, format!("no CUDA GPU found ({reason})"))
            }
        }
    } else {
        (None, String::new())
    };
    if cpu_forced {
        println!("--cpu: running the CPU reference path on reduced shapes");
    }
    let why_cpu = if cpu_forced {
        "--cpu".to_string()
    } else {
        why_cpu
    };
    let result = match (&command, ctx) {
        (Command::Bench(o), Some(ctx)) => cli::bench::run_gpu(ctx, o, &progress),
        (Command::Bench(o), None) => cli::bench::run_cpu(o, &why_cpu, &progress),
        (Command::Check(o), Some(ctx)) => cli::check::run_gpu(ctx, o, &progress),
        (Command::Check(o), None) => cli::check::run_cpu(o, &progress),
        (Command::Help | Command::Run(_), _) => unreachable!("handled above"),
    };
    progress.step("done");
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
