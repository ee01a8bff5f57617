//! `nvfp4 run`: a group of NVFP4 problems from a safetensors file, computed on the GPU (one
//! launch) or with the CPU reference, fp16 results written to another safetensors file
//! (format: `nvfp4::io`).

use super::args::RunOpts;
use super::device;
use super::gpu::AnyResult;
use super::util::{Progress, describe};
use nvfp4::reference::{gemm, round_f16};
use nvfp4::{HostProblem, f16};
use rayon::prelude::*;
use std::time::Instant;

/// Problems listed one per line up to this many; more are summarized.
const LIST_MAX: usize = 16;

/// Runs the command; `Ok` once the output is written.
pub fn run(opts: &RunOpts, progress: &Progress) -> AnyResult<()> {
    // Everything that can be checked before computing is checked first: the input's names,
    // dtypes and shapes, and that the output's directory exists.
    progress.step(format!("reading {}...", opts.input.display()));
    let problems = nvfp4::io::read_groups(&opts.input)?;
    nvfp4::io::check_output_path(&opts.output)?;
    let shapes: Vec<(usize, usize, usize)> = problems.iter().map(|p| (p.m, p.n, p.k)).collect();
    println!("input: {}: {}", opts.input.display(), describe(&shapes));
    for (i, p) in problems.iter().enumerate() {
        if i == LIST_MAX && problems.len() > LIST_MAX + 1 {
            println!("  ... {} more", problems.len() - LIST_MAX);
            break;
        }
        println!(
            "  g{i}: M = {}, N = {}, K = {}, alpha = {}",
            p.m, p.n, p.k, p.alpha
        );
    }

    let ctx = if opts.cpu {
        eprintln!("--cpu: computing with the CPU reference");
        None
    } else {
        progress.step("looking for a CUDA GPU...");
        match device::open_gpu() {
            Ok(ctx) => Some(ctx),
            Err(reason) => {
                eprintln!("no GPU: computing with the CPU reference ({reason})");
                None
            }
        }
    };
    let on_gpu = ctx.is_some();
    let (outputs, path, seconds) = match ctx {
        Some(ctx) => {
            progress.step("loading the kernels...");
            let gemm = device::load_gemm(ctx.clone(), opts.portable, &opts.tuning)?;
            let stream = ctx.default_stream();
            progress.step("computing on the GPU...");
            let start = Instant::now();
            let outputs = gemm.run_host(&stream, &problems)?;
            let seconds = start.elapsed().as_secs_f64();
            let path = format!(
                "GPU, one launch ({:?} path, {})",
                gemm.path(),
                gemm.kernel_name()
            );
            (outputs, path, seconds)
        }
        None => {
            progress.step("computing with the CPU reference...");
            let start = Instant::now();
            let outputs = cpu_reference(&problems);
            let seconds = start.elapsed().as_secs_f64();
            (
                outputs,
                "CPU reference (f64, rounded to fp16)".to_string(),
                seconds,
            )
        }
    };
    let flops: f64 = shapes
        .iter()
        .map(|&(m, n, k)| 2.0 * m as f64 * n as f64 * k as f64)
        .sum();
    println!(
        "computed: {} problems with the {path} in {:.3} ms ({:.1} GFLOP/s{})",
        problems.len(),
        seconds * 1e3,
        flops / seconds.max(1e-9) / 1e9,
        if on_gpu {
            "; host to host: uploads, the launch and downloads; `nvfp4 bench` times the \
             kernel alone"
        } else {
            ""
        }
    );

    let out_shapes: Vec<(usize, usize)> = problems.iter().map(|p| (p.m, p.n)).collect();
    progress.step(format!("writing {}...", opts.output.display()));
    nvfp4::io::write_outputs(&opts.output, &outputs, &out_shapes)?;
    println!(
        "output: {}: {} F16 tensors g0.c .. g{}.c",
        opts.output.display(),
        outputs.len(),
        outputs.len() - 1
    );
    Ok(())
}

/// The reference result of every problem, rounded to fp16 (problems in parallel; the
/// reference parallelizes rows too).
fn cpu_reference(problems: &[HostProblem]) -> Vec<Vec<f16>> {
    problems.par_iter().map(|p| round_f16(&gemm(p))).collect()
}
