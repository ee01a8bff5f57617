//! GPU-side pieces of the commands: a group's operands on the device, event timing with an L2
//! flush, and the cuBLAS fp16 baseline.

use super::util::Stats;
use half::bf16;
use nvfp4::cudarc::cublas::sys::cublasOperation_t;
use nvfp4::cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use nvfp4::cudarc::driver::sys::CUevent_flags;
use nvfp4::cudarc::driver::{CudaSlice, CudaStream, DriverError};
use nvfp4::r#gen::Rng;
use nvfp4::{DeviceInput, DeviceOutput, HostProblem, Problem, f16, reference};
use std::error::Error as StdError;
use std::sync::Arc;

pub type AnyResult<T> = Result<T, Box<dyn StdError>>;

/// The bit pattern written into every output before a kernel runs: an fp16 NaN (sign set,
/// all exponent and mantissa bits set) that no correct kernel produces for these inputs (a
/// NaN result would be the canonical 0x7E00 / 0xFE00). An element still holding it afterwards
/// was never written.
pub const POISON: u16 = 0xFFFF;

/// Bytes written before each timed iteration to evict the 50 MB L2 (H100 / H200) with room to
/// spare.
pub const FLUSH_BYTES: usize = 256 << 20;

/// `bytes` on the device, `None` for an empty operand (cuMemAlloc rejects zero bytes, and
/// validation accepts any address for an operand that needs none).
fn upload<T: nvfp4::cudarc::driver::DeviceRepr>(
    stream: &Arc<CudaStream>,
    host: &[T],
) -> Result<Option<CudaSlice<T>>, DriverError> {
    if host.is_empty() {
        Ok(None)
    } else {
        stream.clone_htod(host).map(Some)
    }
}

/// One group's operands on the device, ready to be described as [`Problem`]s.
pub struct DeviceGroup {
    host: Vec<HostShape>,
    /// A dequantized to fp16 and to bf16 (exact in both), for the W4A16 kernels; empty until
    /// [`DeviceGroup::upload_a16`].
    a_f16: Vec<Option<CudaSlice<f16>>>,
    a_bf16: Vec<Option<CudaSlice<bf16>>>,
    a: Vec<Option<CudaSlice<u8>>>,
    sfa: Vec<Option<CudaSlice<u8>>>,
    b: Vec<Option<CudaSlice<u8>>>,
    sfb: Vec<Option<CudaSlice<u8>>>,
    c: Vec<Option<CudaSlice<f16>>>,
}

/// The problems of a group from its shapes and (borrowed) operands, packed rows, no strides.
fn assemble<'a>(
    host: &[HostShape],
    a: Vec<DeviceInput<'a>>,
    sfa: Vec<DeviceInput<'a>>,
    b: &'a [Option<CudaSlice<u8>>],
    sfb: &'a [Option<CudaSlice<u8>>],
    c: &'a mut [Option<CudaSlice<f16>>],
) -> Vec<Problem<'a>> {
    host.iter()
        .zip(a.into_iter().zip(sfa))
        .zip(b.iter().zip(sfb))
        .zip(c.iter_mut())
        .map(|(((p, (a, sfa)), (b, sfb)), c)| Problem {
            m: p.m,
            n: p.n,
            k: p.k,
            a,
            lda: None,
            sfa,
            sfa_layout: p.sfa_layout,
            b: input(b),
            ldb: None,
            sfb: input(sfb),
            sfb_layout: p.sfb_layout,
            c: c.as_mut()
                .map_or_else(DeviceOutput::empty, DeviceOutput::from),
            ldc: None,
            alpha: p.alpha,
        })
        .collect()
}

/// An input operand, or an empty one for a problem that reads none.
fn input(s: &Option<CudaSlice<u8>>) -> DeviceInput<'_> {
    s.as_ref()
        .map_or_else(DeviceInput::empty, DeviceInput::from)
}

/// What a [`DeviceGroup`] remembers of each host problem.
#[derive(Clone, Copy)]
struct HostShape {
    m: usize,
    n: usize,
    k: usize,
    sfa_layout: nvfp4::ScaleLayout,
    sfb_layout: nvfp4::ScaleLayout,
    alpha: f32,
}

impl DeviceGroup {
    /// Uploads every operand of `host` and allocates each C (`m * n` fp16, uninitialised
    /// until [`Self::poison`]).
    pub fn upload(stream: &Arc<CudaStream>, host: &[HostProblem]) -> Result<Self, DriverError> {
        let mut g = Self {
            host: Vec::new(),
            a_f16: Vec::new(),
            a_bf16: Vec::new(),
            a: Vec::new(),
            sfa: Vec::new(),
            b: Vec::new(),
            sfb: Vec::new(),
            c: Vec::new(),
        };
        for p in host {
            g.host.push(HostShape {
                m: p.m,
                n: p.n,
                k: p.k,
                sfa_layout: p.sfa_layout,
                sfb_layout: p.sfb_layout,
                alpha: p.alpha,
            });
            g.a.push(upload(stream, &p.a)?);
            g.sfa.push(upload(stream, &p.sfa)?);
            g.b.push(upload(stream, &p.b)?);
            g.sfb.push(upload(stream, &p.sfb)?);
            g.c.push(match p.m * p.n {
                0 => None,
                // SAFETY: plain fp16 storage; every element is written by `poison` before
                // anything reads it.
                len => Some(unsafe { stream.alloc::<f16>(len) }?),
            });
        }
        Ok(g)
    }

    /// Fills every C with [`POISON`].
    pub fn poison(&mut self, stream: &Arc<CudaStream>) -> Result<(), DriverError> {
        for c in self.c.iter_mut().flatten() {
            let fill = vec![f16::from_bits(POISON); c.len()];
            stream.memcpy_htod(&fill, c)?;
        }
        Ok(())
    }

    /// Uploads each A dequantized to fp16 and to bf16 (the same values: FP4 times E4M3 is
    /// exact in both), for [`DeviceGroup::problems_a16`].
    pub fn upload_a16(&mut self, stream: &Arc<CudaStream>, host: &[HostProblem]) -> AnyResult<()> {
        self.a_f16.clear();
        self.a_bf16.clear();
        for p in host {
            let a = dequantize_f16(p.m, p.k, &p.a, &p.sfa, p.sfa_layout)?;
            let a_bf16: Vec<bf16> = a.iter().map(|h| bf16::from_f32(h.to_f32())).collect();
            if a.iter()
                .zip(&a_bf16)
                .any(|(h, b)| h.to_f32() != b.to_f32() && !h.is_nan())
            {
                return Err("a dequantized value is not exact in bf16".into());
            }
            self.a_f16.push(upload(stream, &a)?);
            self.a_bf16.push(upload(stream, &a_bf16)?);
        }
        Ok(())
    }

    /// [`DeviceGroup::problems`] with the 16-bit A of `activation` (after
    /// [`DeviceGroup::upload_a16`]) and no `sfa`.
    pub fn problems_a16(&mut self, activation: nvfp4::Activation) -> Vec<Problem<'_>> {
        let a: Vec<DeviceInput<'_>> = match activation {
            nvfp4::Activation::Bf16 => self
                .a_bf16
                .iter()
                .map(|a| {
                    a.as_ref()
                        .map_or_else(DeviceInput::empty, DeviceInput::from_bf16)
                })
                .collect(),
            _ => self
                .a_f16
                .iter()
                .map(|a| {
                    a.as_ref()
                        .map_or_else(DeviceInput::empty, DeviceInput::from_f16)
                })
                .collect(),
        };
        let sfa = self.host.iter().map(|_| DeviceInput::empty()).collect();
        assemble(&self.host, a, sfa, &self.b, &self.sfb, &mut self.c)
    }

    /// The group as library problems (packed rows, no strides), borrowing the buffers.
    pub fn problems(&mut self) -> Vec<Problem<'_>> {
        let a = self.a.iter().map(input).collect();
        let sfa = self.sfa.iter().map(input).collect();
        assemble(&self.host, a, sfa, &self.b, &self.sfb, &mut self.c)
    }

    /// Every C, `m * n` values each (empty for an empty problem). Synchronises `stream`.
    pub fn download(&self, stream: &Arc<CudaStream>) -> Result<Vec<Vec<f16>>, DriverError> {
        download_all(&self.c, stream)
    }
}

/// Downloads every C (`None`: an empty problem, an empty vector) and synchronises `stream`.
fn download_all(
    c: &[Option<CudaSlice<f16>>],
    stream: &Arc<CudaStream>,
) -> Result<Vec<Vec<f16>>, DriverError> {
    let out = c
        .iter()
        .map(|c| c.as_ref().map_or(Ok(Vec::new()), |c| stream.clone_dtoh(c)))
        .collect::<Result<Vec<_>, _>>()?;
    stream.synchronize()?;
    Ok(out)
}

/// Elements of `c` still holding the poison pattern.
pub fn unwritten(c: &[f16]) -> usize {
    c.iter().filter(|x| x.to_bits() == POISON).count()
}

/// Times `iters` runs of `enqueue` on `stream` with CUDA events, in microseconds. Before each
/// run `flush` is zeroed (a device-wide write that evicts L2); the events bracket only the
/// work `enqueue` adds. Everything is enqueued first and read back after one synchronisation,
/// so the GPU never waits for the host between iterations (the memset also gives the host
/// a head start on each enqueue).
pub fn time_events(
    stream: &Arc<CudaStream>,
    flush: &mut CudaSlice<u8>,
    iters: usize,
    mut enqueue: impl FnMut() -> AnyResult<()>,
) -> AnyResult<Stats> {
    let ctx = stream.context();
    let mut events = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        stream.memset_zeros(flush)?;
        start.record(stream)?;
        enqueue()?;
        end.record(stream)?;
        events.push((start, end));
    }
    stream.synchronize()?;
    let mut us = Vec::with_capacity(iters);
    for (start, end) in &events {
        us.push(f64::from(start.elapsed_ms(end)?) * 1e3);
    }
    Stats::of(&us).ok_or_else(|| "no iterations timed".into())
}

/// An operand dequantized on the CPU (`reference::dequantize`) and converted to fp16, which
/// is exact: every value `e2m1 * e4m3` has at most 5 significant bits and magnitude at most
/// 2688, and its smallest nonzero magnitude 2^-10 is an fp16 subnormal (checked anyway).
fn dequantize_f16(
    rows: usize,
    k: usize,
    data: &[u8],
    scales: &[u8],
    layout: nvfp4::ScaleLayout,
) -> AnyResult<Vec<f16>> {
    let values = reference::dequantize(rows, k, data, scales, layout);
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let h = f16::from_f32(v);
        if h.to_f32() != v && !v.is_nan() {
            return Err(format!("dequantized value {v} is not exact in fp16").into());
        }
        out.push(h);
    }
    Ok(out)
}

/// The group dequantized to fp16 on the device, for cuBLAS.
pub struct CublasGroup {
    dims: Vec<(usize, usize, usize)>,
    a: Vec<Option<CudaSlice<f16>>>,
    b: Vec<Option<CudaSlice<f16>>>,
    c: Vec<Option<CudaSlice<f16>>>,
}

impl CublasGroup {
    /// Dequantizes every A and B on the CPU and uploads them as fp16 (row-major, `m x k` and
    /// `n x k`); allocates each C (`m x n`, row-major).
    ///
    /// Only `alpha = 1` is supported (the benchmark's inputs), since the fp16 operands carry
    /// the scales already.
    pub fn upload(stream: &Arc<CudaStream>, host: &[HostProblem]) -> AnyResult<Self> {
        let mut g = Self {
            dims: Vec::new(),
            a: Vec::new(),
            b: Vec::new(),
            c: Vec::new(),
        };
        for p in host {
            if p.alpha != 1.0 {
                return Err("the cuBLAS baseline supports alpha = 1 only".into());
            }
            g.dims.push((p.m, p.n, p.k));
            g.a.push(upload(
                stream,
                &dequantize_f16(p.m, p.k, &p.a, &p.sfa, p.sfa_layout)?,
            )?);
            g.b.push(upload(
                stream,
                &dequantize_f16(p.n, p.k, &p.b, &p.sfb, p.sfb_layout)?,
            )?);
            g.c.push(match p.m * p.n {
                0 => None,
                len => Some(stream.alloc_zeros::<f16>(len)?),
            });
        }
        Ok(g)
    }

    /// Enqueues one cuBLAS GEMM per non-empty problem on the handle's stream.
    pub fn enqueue(&mut self, blas: &CudaBlas) -> AnyResult<()> {
        for (((&(m, n, k), a), b), c) in self
            .dims
            .iter()
            .zip(&self.a)
            .zip(&self.b)
            .zip(self.c.iter_mut())
        {
            let (Some(a), Some(b), Some(c)) = (a, b, c) else {
                continue; // m == 0 or n == 0: nothing to compute
            };
            // SAFETY: `a` holds m x k, `b` n x k and `c` m x n fp16 values (allocated above
            // from the same dims), which is exactly what `row_major_abt` describes.
            unsafe { blas.gemm(row_major_abt(m, n, k)?, b, a, c) }?;
        }
        Ok(())
    }

    /// Every C (see [`DeviceGroup::download`]).
    pub fn download(&self, stream: &Arc<CudaStream>) -> Result<Vec<Vec<f16>>, DriverError> {
        download_all(&self.c, stream)
    }
}

/// The cuBLAS call computing row-major `C[m x n] = A[m x k] * B[n x k]^T`, to be called as
/// `gemm(cfg, B, A, C)` (B first).
///
/// cuBLAS is column-major. A row-major `R x S` matrix with row stride `S` is, read
/// column-major, its transpose `S x R` with leading dimension `S`. So the row-major C we want
/// is the column-major `C^T` (`n x m`, ldc = n), and
/// `C^T = (A B^T)^T = B A^T`:
/// - cuBLAS's first operand must be `B` (`n x k`). Its memory, read column-major, is
///   `B^T` (`k x n`, ld = k), so we ask for its transpose: `transa = T`, `lda = k`;
/// - the second must be `A^T` (`k x m`), which is exactly what A's memory is when read
///   column-major (`k x m`, ld = k): `transb = N`, `ldb = k`;
/// - cuBLAS's (m, n, k) are the rows and columns of its column-major output and the inner
///   dimension: (n, m, k).
///
/// This is the "TN" GEMM; the benchmark verifies its output against the reference.
pub fn row_major_abt(m: usize, n: usize, k: usize) -> AnyResult<GemmConfig<f16>> {
    let int =
        |x: usize| i32::try_from(x).map_err(|_| format!("dimension {x} too large for cuBLAS"));
    Ok(GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: int(n)?,
        n: int(m)?,
        k: int(k)?,
        alpha: f16::ONE,
        lda: int(k)?,
        ldb: int(k)?,
        beta: f16::ZERO,
        ldc: int(n)?,
    })
}

/// The measured fp16 tensor-core rate.
pub struct Fp16Rate {
    pub tflops: f64,
    pub stats_us: Stats,
    pub size: usize,
}

/// How the fp16 rate is measured, for the report.
pub const FP16_METHOD: &str = "cuBLAS cublasGemmEx 8192x8192x8192, fp16 A/B/C, CUBLAS_COMPUTE_32F \
                               (fp32 accumulation), TN, random inputs in [-0.5, 0.5), median of \
                               10 after 3 warm-up runs, no L2 flush (compute-bound)";

/// Times an 8192^3 fp16 GEMM with fp32 accumulation (see [`FP16_METHOD`]).
pub fn fp16_rate(stream: &Arc<CudaStream>, blas: &CudaBlas) -> AnyResult<Fp16Rate> {
    const SIZE: usize = 8192;
    // Random values (not zeros: the tensor cores' power, hence clock, depends on the data).
    let mut rng = Rng::new(0xf16);
    let host: Vec<f16> = (0..SIZE * SIZE)
        .map(|_| f16::from_f32((rng.next_u64() >> 53) as f32 / 2048.0 - 0.5))
        .collect();
    let x = stream.clone_htod(&host)?;
    drop(host);
    let mut c = stream.alloc_zeros::<f16>(SIZE * SIZE)?;
    let cfg = row_major_abt(SIZE, SIZE, SIZE)?;
    let ctx = stream.context();
    let mut us = Vec::new();
    for i in 0..13 {
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        start.record(stream)?;
        // SAFETY: `x` and `c` hold SIZE x SIZE fp16 values, as `cfg` describes.
        unsafe { blas.gemm(cfg, &x, &x, &mut c) }?;
        end.record(stream)?;
        let t = f64::from(start.elapsed_ms(&end)?) * 1e3;
        if i >= 3 {
            us.push(t);
        }
    }
    let stats_us = Stats::of(&us).ok_or("no fp16 samples")?;
    let flops = 2.0 * (SIZE as f64).powi(3);
    Ok(Fp16Rate {
        tflops: flops / (stats_us.median * 1e-6) / 1e12,
        stats_us,
        size: SIZE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_for_row_major_abt() {
        let cfg = row_major_abt(40, 4096, 7168).unwrap();
        assert_eq!((cfg.m, cfg.n, cfg.k), (4096, 40, 7168));
        assert_eq!((cfg.lda, cfg.ldb, cfg.ldc), (7168, 7168, 4096));
        assert_eq!(cfg.transa, cublasOperation_t::CUBLAS_OP_T);
        assert_eq!(cfg.transb, cublasOperation_t::CUBLAS_OP_N);
        assert!(row_major_abt(1 << 31, 1, 16).is_err());
    }

    /// The column-major reading of `row_major_abt`, evaluated on the CPU: what cuBLAS would
    /// compute with these arguments equals row-major A * B^T.
    #[test]
    fn column_major_model_matches() {
        let (m, n, k) = (3usize, 5usize, 4usize);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.5 - 2.0).collect();
        let b: Vec<f64> = (0..n * k).map(|i| (i as f64).sin()).collect();
        let cfg = row_major_abt(m, n, k).unwrap();
        let (cm, cn, ck) = (cfg.m as usize, cfg.n as usize, cfg.k as usize);
        let (lda, ldb, ldc) = (cfg.lda as usize, cfg.ldb as usize, cfg.ldc as usize);
        // Column-major: X(i, j) at x[i + j * ld]. op(A1) = A1^T with A1 = b's memory
        // (lda x cm... stored k x n), op(B1) = B1 = a's memory (k x m).
        let mut c = vec![0.0; ldc * cn];
        for i in 0..cm {
            for j in 0..cn {
                let mut s = 0.0;
                for l in 0..ck {
                    let op_a = b[l + i * lda]; // A1^T(i, l) = A1(l, i)
                    let op_b = a[l + j * ldb]; // B1(l, j)
                    s += op_a * op_b;
                }
                c[i + j * ldc] = s;
            }
        }
        for r in 0..m {
            for col in 0..n {
                let want: f64 = (0..k).map(|l| a[r * k + l] * b[col * k + l]).sum();
                assert!((c[r * n + col] - want).abs() < 1e-12, "({r}, {col})");
            }
        }
    }
}
