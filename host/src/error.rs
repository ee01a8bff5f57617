//! The crate's one error type.

use cudarc::driver::DriverError;

/// Everything that can go wrong in this crate.
///
/// Validation errors (all but [`Error::UnsupportedGpu`], [`Error::PtxLoad`],
/// [`Error::Driver`] and [`Error::NoDevice`]) are found on the host before anything is launched; their messages name
/// the problem index (`problem 3`) and the offending field in backticks (`` `lda` ``), e.g.
/// ``problem 3: `k` = 40 is not a multiple of 16 (one E4M3 scale block)``.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The group has more problems than one launch takes
    /// (`kernels_gpu::problem::MAX_PROBLEMS`).
    #[error("{count} problems in one group; the limit is {max}")]
    TooManyProblems {
        /// Problems passed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The group's tiles, summed over its problems, do not fit the kernel's `u32` tile index.
    #[error("the group has {tiles} tiles in total; at most {max} (u32) fit one launch")]
    TooManyTiles {
        /// Tiles of the whole group.
        tiles: u64,
        /// The limit, `u32::MAX`.
        max: u64,
    },
    /// A dimension (`m`, `n` or `k`) is out of range.
    #[error("problem {problem}: `{field}` = {value} {reason}")]
    InvalidDimension {
        /// Index of the problem in the group.
        problem: usize,
        /// `"m"`, `"n"` or `"k"`.
        field: &'static str,
        /// The value passed.
        value: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A row stride (`lda`, `ldb` in bytes, `ldc` in fp16 elements) is out of range.
    #[error("problem {problem}: `{field}` = {value} {reason}")]
    InvalidStride {
        /// Index of the problem in the group.
        problem: usize,
        /// `"lda"`, `"ldb"` or `"ldc"`.
        field: &'static str,
        /// The value passed (bytes for `lda` / `ldb`, elements for `ldc`).
        value: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// `alpha` is NaN or infinite.
    #[error("problem {problem}: `alpha` = {value} is not finite")]
    InvalidAlpha {
        /// Index of the problem in the group.
        problem: usize,
        /// The value passed.
        value: f32,
    },
    /// A buffer is shorter than its problem's shape, strides and layout need.
    #[error(
        "problem {problem}: buffer `{field}` holds {given} bytes but the shape needs {needed} bytes"
    )]
    BufferTooSmall {
        /// Index of the problem in the group.
        problem: usize,
        /// `"a"`, `"sfa"`, `"b"`, `"sfb"` or `"c"`.
        field: &'static str,
        /// Bytes the shape needs.
        needed: u64,
        /// Bytes the buffer holds.
        given: u64,
    },
    /// A buffer that the kernel reads or writes has device address 0.
    #[error("problem {problem}: buffer `{field}` is a null pointer")]
    NullPointer {
        /// Index of the problem in the group.
        problem: usize,
        /// `"a"`, `"sfa"`, `"b"`, `"sfb"` or `"c"`.
        field: &'static str,
    },
    /// A buffer's device address is not aligned as the kernel needs.
    #[error("problem {problem}: buffer `{field}` at {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// Index of the problem in the group.
        problem: usize,
        /// `"a"`, `"sfa"`, `"b"`, `"sfb"` or `"c"`.
        field: &'static str,
        /// The address passed.
        addr: u64,
        /// The alignment needed, in bytes.
        align: u64,
    },
    /// A buffer's extent does not fit in 64-bit addresses (or its size overflows `u64`).
    #[error("problem {problem}: buffer `{field}` extends past the 64-bit address space")]
    Overflow {
        /// Index of the problem in the group.
        problem: usize,
        /// `"a"`, `"sfa"`, `"b"`, `"sfb"` or `"c"`.
        field: &'static str,
    },
    /// An output shares bytes with an input or with another output (of any problem).
    #[error(
        "problem {problem}: output `{field}` overlaps `{other_field}` of problem {other_problem}"
    )]
    Overlap {
        /// Index of the problem whose output overlaps.
        problem: usize,
        /// Always `"c"`.
        field: &'static str,
        /// Index of the problem owning the other buffer (may equal `problem`).
        other_problem: usize,
        /// `"a"`, `"sfa"`, `"b"`, `"sfb"` or `"c"`.
        other_field: &'static str,
    },
    /// A buffer was allocated in another CUDA context than the [`crate::GroupedGemm`]'s.
    #[error("problem {problem}: buffer `{field}` belongs to another CUDA context")]
    WrongContext {
        /// Index of the problem in the group.
        problem: usize,
        /// `"a"`, `"sfa"`, `"b"`, `"sfb"` or `"c"`.
        field: &'static str,
    },
    /// A stream or plan belongs to another CUDA context than the [`crate::GroupedGemm`]'s.
    #[error("the {what} belongs to another CUDA context than the GroupedGemm")]
    ContextMismatch {
        /// `"stream"` or `"plan"`.
        what: &'static str,
    },
    /// The GPU is older than the kernels support (compute capability 8.0).
    #[error("compute capability {major}.{minor} is not supported: the kernels need 8.0 or newer")]
    UnsupportedGpu {
        /// Compute capability major version.
        major: i32,
        /// Compute capability minor version.
        minor: i32,
    },
    /// The embedded PTX could not be loaded, or lacks the kernel.
    #[error("loading the kernels failed: {0}")]
    PtxLoad(String),
    /// A group-level input of the MoE forms ([`crate::moe`]) is wrong: the row counts
    /// (`counts`, `sizes`) or the capacity (`rows`).
    #[error("group: `{field}` {reason}")]
    InvalidGroup {
        /// `"counts"`, `"sizes"`, `"rows"` or `"output"` (an output type the inputs do not
        /// support).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error: {0}")]
    Driver(#[from] DriverError),
    /// No usable CUDA device: the driver library cannot be loaded, or it reports no device
    /// with that ordinal ([`crate::open_device`]).
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// An argument of a quantization ([`crate::quant`]) is out of range: a shape, the row
    /// stride, the global scale, a buffer's length, alignment or context, or two buffers
    /// overlap. Found on the host before anything is launched.
    #[error("quantize: `{field}` {reason}")]
    InvalidQuantize {
        /// `"rows"`, `"k"`, `"row_stride"`, `"global_scale"`, `"input"`, `"out_fp4"`,
        /// `"out_scales"` or `"stream"`.
        field: &'static str,
        /// What is wrong with it (the value is in the message).
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
