//! A fault on the device comes back as an error, never as output.
//!
//! Validation cannot see whether an address is mapped (it never dereferences), so a caller
//! who builds buffers with `unsafe` `from_raw` can make a kernel fault. This test does that on
//! purpose and checks that the fault surfaces as `Err` at the next synchronising call, and that
//! the context then stays failed: later launches and `run_host` return errors instead of
//! results. It runs in a test binary of its own because a faulted CUDA context is lost for
//! the whole process.

use nvfp4::r#gen::{Distribution, Rng, problem};
use nvfp4::{DeviceInput, DeviceOutput, GroupedGemm, KernelPath, Problem, ScaleLayout};

#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn kernel_fault_comes_back_as_an_error_and_stays() {
    let ctx = nvfp4::open_device(0).expect("CUDA device 0");
    let stream = ctx.default_stream();
    let path = match std::env::var("NVFP4_PATH").as_deref() {
        Ok("portable") => KernelPath::Portable,
        _ => {
            let (major, minor) = ctx.compute_capability().expect("compute capability");
            KernelPath::best_for(major, minor)
        }
    };
    let gemm = GroupedGemm::with_path(ctx.clone(), path).expect("loading the kernels");

    // A correct run first, so the fault below is ours and not a broken setup.
    let mut rng = Rng::new(7);
    let good = problem(
        &mut rng,
        16,
        128,
        256,
        Distribution::GpuMode,
        ScaleLayout::Plain,
        ScaleLayout::Plain,
    );
    gemm.run_host(&stream, std::slice::from_ref(&good))
        .expect("a valid group runs before the fault");

    // Aligned, non-null, long enough and disjoint: valid to the host, unmapped on the device.
    let (m, n, k) = (64usize, 128usize, 256usize);
    let at = |mib: u64| 0x10_0000u64 * mib;
    let (a, sfa, b, sfb, c) = unsafe {
        (
            DeviceInput::from_raw(at(1), m * k / 2),
            DeviceInput::from_raw(at(2), m * k / 16),
            DeviceInput::from_raw(at(3), n * k / 2),
            DeviceInput::from_raw(at(4), n * k / 16),
            DeviceOutput::from_raw(at(5), m * n * 2),
        )
    };
    let problems = [Problem {
        m,
        n,
        k,
        a,
        lda: None,
        sfa,
        sfa_layout: ScaleLayout::Plain,
        b,
        ldb: None,
        sfb,
        sfb_layout: ScaleLayout::Plain,
        c,
        ldc: None,
        alpha: 1.0,
    }];
    let launched = gemm.run(&stream, &problems);
    let synced = stream.synchronize();
    println!("fault: run -> {launched:?}, synchronize -> {synced:?}");
    assert!(
        launched.is_err() || synced.is_err(),
        "a kernel reading unmapped memory must report an error"
    );

    // The context is lost: later work returns errors, never results.
    let later = gemm.run_host(&stream, std::slice::from_ref(&good));
    println!(
        "after the fault: run_host -> {:?}",
        later.as_ref().map(|c| c.len())
    );
    assert!(
        later.is_err(),
        "run_host after a device fault must fail, not return output"
    );
}
