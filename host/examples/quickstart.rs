//! The README's example: one expert-sized NVFP4 GEMM through the device-buffer API.
//! `cargo run --release -p host --example quickstart` (needs a CUDA GPU; exits with an error
//! message otherwise).

use nvfp4::{DeviceInput, DeviceOutput, GroupedGemm, Problem, ScaleLayout, f16};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = nvfp4::open_device(0)?; // an error, not a panic, without a GPU
    let stream = ctx.default_stream();
    let gemm = GroupedGemm::new(ctx.clone())?; // loads the kernels once per context
    let (m, n, k) = (40, 4096, 7168);
    let a = stream.clone_htod(&vec![0x22u8; m * k / 2])?; // FP4 tokens: every value 1.0
    let sfa = stream.clone_htod(&vec![0x38u8; m * k / 16])?; // E4M3 scales 1.0, plain [m, k/16]
    let b = stream.clone_htod(&vec![0x22u8; n * k / 2])?; // FP4 weights
    let sfb = stream.clone_htod(&vec![0x38u8; n * k / 16])?;
    let mut c = stream.alloc_zeros::<f16>(m * n)?;
    let problems = [Problem {
        m,
        n,
        k,
        a: DeviceInput::from(&a),
        lda: None,
        sfa: DeviceInput::from(&sfa),
        sfa_layout: ScaleLayout::Plain,
        b: DeviceInput::from(&b),
        ldb: None,
        sfb: DeviceInput::from(&sfb),
        sfb_layout: ScaleLayout::Plain,
        c: DeviceOutput::from(&mut c),
        ldc: None,
        alpha: 1.0 / 1024.0,
    }];
    gemm.run(&stream, &problems)?; // validate, upload the table, one launch, no host sync
    drop(problems);
    let out: Vec<f16> = stream.clone_dtoh(&c)?; // synchronises
    // Every output is sum over 7168 products of 1.0 * 1.0, times 1/1024: exactly 7.
    assert!(out.iter().all(|&x| x == f16::from_f32(7.0)));
    println!(
        "{} outputs, all {} ({})",
        out.len(),
        out[0],
        gemm.kernel_name()
    );
    Ok(())
}
