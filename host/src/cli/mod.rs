//! The `nvfp4` command-line tool's modules (part of the binary only, not of the library).

pub mod args;
pub mod bench;
pub mod check;
pub mod device;
pub mod gpu;
pub mod json;
pub mod run;
pub mod spec;
pub mod util;
