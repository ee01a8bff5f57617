//! Device-only code: the kernels and the thin `asm!` wrappers they are written with.
//!
//! Only compiled for `nvptx64-nvidia-cuda` (see `cargo xtask build-ptx`); the Hopper kernel
//! only into the sm_90a PTX (`--cfg nvfp4_sm90a`).

/// Defines a grouped-GEMM kernel entry with the parameter list the host launches every GEMM
/// kernel with (`GroupedGemm::launch`): `(table, num_problems, total_tiles, counts, mode,
/// dp_tiles, parts, ws)`, plus `maps: u64` for the kernels that read tokens by TMA
/// (`KernelInfo::token_maps`). The body calls `$run::<$act>` with the first five and the
/// [`crate::problem::Split`] of `dp_tiles`, `parts`, `ws` (and `maps`). One definition of the
/// ABI for all six entries. Every entry first waits for the grid it may depend on (see
/// [`arch::grid`]), except those marked `; waits_itself`, whose `$run` calls
/// `dependency_wait` itself before it reads anything that grid writes.
/// `unroll!(i in [0, 1, 2] { ... })`: the body once per listed value, `i` a `usize` constant in
/// each copy, so that arrays indexed by `i` stay in registers (LLVM does not always unroll,
/// and a run-time index sends the array to local memory).
macro_rules! unroll {
    ($i:ident in [$($v:literal),*] $body:block) => { $( { let $i: usize = $v; $body } )* };
}

macro_rules! gemm_entry {
    ($(#[$attr:meta])* $name:ident => $run:ident::<$($gen:tt),+> $(, $maps:ident)? $(; $waits:ident)?) => {
        $(#[$attr])*
        #[unsafe(no_mangle)]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $name(
            table: *const crate::problem::ProblemDesc,
            num_problems: u32,
            total_tiles: u32,
            counts: *const u32,
            mode: u32,
            dp_tiles: u32,
            parts: u32,
            ws: u64,
            $($maps: u64,)?
        ) {
            let split = crate::problem::Split {
                dp_tiles,
                parts,
                ws,
            };
            // After a token pass the host launches the GEMM as the pass's programmatic
            // dependent: nothing may read the tokens before the pass is done.
            let waits_itself = false $(|| { let _ = stringify!($waits); true })?;
            if !waits_itself {
                unsafe { $crate::device::arch::grid::dependency_wait() };
            }
            unsafe { $run::<$($gen),+>(table, num_problems, total_tiles, counts, mode, split $(, $maps)?) }
        }
    };
}

mod arch;
mod dequant;
mod load;
mod mma_kernel;
mod quant_kernel;
mod sched;
mod split;
mod tokens_kernel;
#[cfg(nvfp4_sm90a)]
mod wgmma_kernel;
