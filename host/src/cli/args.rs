//! Command-line parsing (hand-rolled: no dependency) and the usage text.

use super::spec;
use nvfp4::ScaleLayout;
use nvfp4::shapes::GroupShape;
use std::path::PathBuf;

/// Default generator seed of both commands.
pub const DEFAULT_SEED: u64 = 0x5eed;
/// Default and minimum timed iterations of `bench` (fewer only with `--quick`).
pub const DEFAULT_ITERS: usize = 20;
/// Timed iterations of `bench --quick` when `--iters` is not given.
pub const QUICK_ITERS: usize = 5;

pub const USAGE: &str = "\
nvfp4: benchmark, check and run the NVFP4 grouped GEMM

USAGE:
    nvfp4 bench [OPTIONS]
    nvfp4 check [OPTIONS]
    nvfp4 run --input FILE.safetensors --output OUT.safetensors [OPTIONS]
    nvfp4 help | --help | -h

COMMANDS:
    bench   For each shape: generate full-range inputs (seeded), run the grouped GEMM once
            and check it against the f64 CPU reference, then time it (CUDA events, L2
            flushed by a 256 MiB memset before every iteration, median/min/max). Also times
            cuBLAS fp16 (cublasGemmEx, f16 in/out, fp32 compute) on the same problems
            dequantized to fp16 (results checked too), and measures the fp16 tensor-core
            rate (8192^3 hgemm) to give each shape its fp16 floor. Exit status 1 if a check
            fails (the table is still printed).
    check   Correctness: the ten GPU MODE test shapes (GPU MODE inputs and tolerance) and
            the ragged shapes (full-range inputs and the derived fp32 bound), each with
            scale layouts plain/plain, blocked/blocked and plain/blocked; the output is
            poisoned with 0xFFFF first and any element left unwritten fails. Prints
            \"N passed, M failed\"; exit status 1 if any failed.

    run     Real data: read a group of NVFP4 problems from a safetensors file, compute
            them on the GPU in one launch (or with the CPU reference, see below) and write
            the fp16 results to another safetensors file. Prints the groups' shapes, the
            time and which path computed them.

    Without a CUDA GPU (no libcuda, no device, or the context fails), or with --cpu, bench
    and check run the CPU reference instead, on reduced shapes, and say so; run computes the
    same results with the f64 CPU reference (rounded to fp16), saying so on stderr.

RUN OPTIONS:
    --input FILE    safetensors file holding, for each problem i = 0, 1, ... (no gaps):
                        g<i>.a      U8               [M, K/2]  FP4 E2M1 pairs, element 2j in
                                                               the low nibble of byte j
                        g<i>.b      U8               [N, K/2]  same encoding (C = A * B^T)
                        g<i>.sfa    F8_E4M3 (or U8)  [M, K/16] E4M3 scales, plain row-major
                        g<i>.sfb    F8_E4M3 (or U8)  [N, K/16]
                        g<i>.alpha  F32, optional    [] or [1] output factor (default 1.0)
                    K: a positive multiple of 16; M (and N) may be 0. Only the plain scale
                    layout is read. Any other tensor name, dtype or shape is an error naming
                    the tensor.
    --output FILE   Written with g<i>.c, F16 [M, N], for every problem and nothing else;
                    written to a temporary file next to it and renamed at the end, so on any
                    error neither FILE nor the temporary file is left behind.
    (--portable, --cpu and the plan options --token-pass ... --pair-tiles as below;
    --seed does not apply.)

BENCH OPTIONS:
    --shapes SPEC   Shapes to run (repeatable; default: the four GPU MODE benchmarks).
                    SPEC is a name, case-insensitive (G8_N4096_K7168, G8_N7168_K2048,
                    G2_N3072_K4096, G2_N4096_K1536, test0..test9, ragged_m, ragged_k16,
                    ragged_all_empty), a set (benchmarks, tests, ragged), several of those
                    joined by commas, or a literal group
                        'm=80,176;n=4096;k=7168'
                    with keys m, n, k (and optional name=...), parts separated by ';', '/'
                    or spaces, values comma-separated. The group has as many problems as the
                    longest list; a single value is used for every problem. k must be a
                    positive multiple of 16; m and n may be 0. Quote it for the shell.
    --iters N       Timed iterations per shape (default 20; at least 20 unless --quick).
    --quick         Fewer iterations (default 5) for a smoke run.
    --scales L      Scale layout of both operands: plain (default) or blocked.
    --scales-a L, --scales-b L
                    The same for the tokens' (A) or the weights' (B) scales alone.
    --json FILE     Also write every number (device, kernel, fp16 rate, per-shape timings
                    and errors, geomeans) to FILE as JSON.

COMMON OPTIONS:
    --seed S        Generator seed, decimal or 0x-hex (default 0x5eed); shape i of a run
                    uses seed S + i.
    --portable      Run the portable mma.sync kernel (KernelPath::Portable) even on sm_90,
                    where the Hopper wgmma kernel is the default.
    --token-pass W  auto (default), always or never: whether NVFP4 groups run as a token
                    dequantization pass plus the fp16-activation kernel (TokenDequant).
    --split-k S     auto (default), off, or a number N: whether tiles are cut along K to
                    fill the last wave of CTAs (SplitK; N cuts every tile into N ranges).
    --weights-tma W on (default) or off: whether the Hopper path's 16-bit launches read
                    16-byte-aligned weights by TMA (GroupedGemm::set_weights_by_tma).
    --blocked-k W   on (default) or off: whether the Hopper path's token pass writes the
                    blocked K order for its _f16b_wt kernel (GroupedGemm::set_blocked_k).
    --one-per-sm-deep W
                    on (default) or off: whether launches of that kernel with at most one
                    tile an SM run its 8-stage form, _f16b_wt8, one CTA an SM
                    (GroupedGemm::set_one_per_sm_deep).
    --scale-groups W
                    on (default) or off: whether that kernel copies each weight row's
                    scales 16 bytes (four chunks) at a time (_f16b_wtsg, _f16b_wt8sg) when
                    every problem's weight scales are plain, 16-byte aligned and k a
                    multiple of 256 (GroupedGemm::set_scale_groups; see --scales).
    --dynamic-units W
                    on (default) or off: whether Hopper _wt launches of more work units
                    (tiles, parts of tiles cut along K) than CTA slots hand out the units
                    past the first wave from a counter, cut tiles' parts largest first
                    (GroupedGemm::set_dynamic_units).
    --pair-tiles W  auto (default), always or never: whether Hopper launches that would run
                    the blocked-order 4-stage kernel run the pair kernel (_f16b_wt2,
                    _f16b_wtsg2: clusters of two CTAs sharing each token tile), auto from
                    two waves of 256-row tiles per pair cluster the device holds at once
                    (PairTiles; GroupedGemm::set_pair_tiles, GroupedGemm::pair_clusters).
    --cpu           Run the CPU reference path even when a GPU is present.
    -h, --help      This text.

EXAMPLES:
    cargo run --release -p host --bin nvfp4 -- bench
    cargo run --release -p host --bin nvfp4 -- bench --shapes G8_N4096_K7168 --iters 50 --json out.json
    cargo run --release -p host --bin nvfp4 -- bench --quick --shapes 'm=40,76;n=7168;k=2048'
    cargo run --release -p host --bin nvfp4 -- check --seed 7
    cargo run --release -p host --bin nvfp4 -- run --input experts.safetensors --output c.safetensors
";

/// A parsed command line.
#[derive(Debug)]
pub enum Command {
    Help,
    Bench(BenchOpts),
    Check(CheckOpts),
    Run(RunOpts),
}

/// Options of `run`.
#[derive(Debug, PartialEq, Eq)]
pub struct RunOpts {
    pub input: PathBuf,
    pub output: PathBuf,
    pub portable: bool,
    pub cpu: bool,
    /// The plan settings (`--token-pass`, `--split-k`, ...), as `bench` and `check` take them.
    pub tuning: Tuning,
}

/// Options of `bench`.
#[derive(Debug)]
pub struct BenchOpts {
    pub shapes: Vec<GroupShape>,
    pub iters: usize,
    pub quick: bool,
    /// Scale layouts of the tokens (`sfa`) and the weights (`sfb`).
    pub scales: [ScaleLayout; 2],
    pub json: Option<PathBuf>,
    pub common: CommonOpts,
}

/// Options of `check`.
#[derive(Debug)]
pub struct CheckOpts {
    pub common: CommonOpts,
}

/// Options `bench` and `check` take (`run`: all but `--seed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonOpts {
    pub seed: u64,
    pub portable: bool,
    pub cpu: bool,
    pub tuning: Tuning,
}

impl Default for CommonOpts {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SEED,
            portable: false,
            cpu: false,
            tuning: Tuning::default(),
        }
    }
}

/// The plan settings of a [`nvfp4::GroupedGemm`] the options choose (the library's defaults
/// unless given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    pub token_pass: nvfp4::TokenDequant,
    pub split_k: nvfp4::SplitK,
    pub weights_tma: bool,
    pub blocked_k: bool,
    pub one_per_sm_deep: bool,
    /// `--scale-groups` ([`nvfp4::GroupedGemm::set_scale_groups`]).
    pub scale_groups: bool,
    pub dynamic_units: bool,
    pub pair_tiles: nvfp4::PairTiles,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            token_pass: nvfp4::TokenDequant::Auto,
            split_k: nvfp4::SplitK::Auto,
            weights_tma: true,
            blocked_k: true,
            one_per_sm_deep: true,
            scale_groups: true,
            dynamic_units: true,
            pair_tiles: nvfp4::PairTiles::Auto,
        }
    }
}

/// `on` or `off` for option `name`.
fn on_off(name: &str, v: &str) -> Result<bool, UsageError> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        v => err(format!("`{name}`: `{v}` is not on or off")),
    }
}

/// `v`, the value of option `name`, as one of `[auto, always, never]`.
fn auto_always_never<T>(name: &str, v: &str, choices: [T; 3]) -> Result<T, UsageError> {
    let [auto, always, never] = choices;
    match v {
        "auto" => Ok(auto),
        "always" => Ok(always),
        "never" => Ok(never),
        v => err(format!("`{name}`: `{v}` is not auto, always or never")),
    }
}

/// A bad command line; the message says what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// Walks the arguments, splitting `--opt=value` and handing out option values.
struct Cursor<'a> {
    args: &'a [String],
    pos: usize,
    /// The value of the last `--opt=value`, returned by the next `value()`.
    pending: Option<&'a str>,
}

impl<'a> Cursor<'a> {
    fn new(args: &'a [String]) -> Self {
        Self {
            args,
            pos: 0,
            pending: None,
        }
    }

    /// The next option name (`--iters`), or a positional argument.
    fn next(&mut self) -> Result<Option<&'a str>, UsageError> {
        if let Some(v) = self.pending.take() {
            return err(format!("unexpected value `{v}`"));
        }
        let Some(arg) = self.args.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        if arg.starts_with("--")
            && let Some((name, value)) = arg.split_once('=')
        {
            self.pending = Some(value);
            return Ok(Some(name));
        }
        Ok(Some(arg))
    }

    /// The value of option `name`.
    fn value(&mut self, name: &str) -> Result<&'a str, UsageError> {
        if let Some(v) = self.pending.take() {
            return Ok(v);
        }
        match self.args.get(self.pos) {
            Some(v) => {
                self.pos += 1;
                Ok(v)
            }
            None => err(format!("`{name}` needs a value")),
        }
    }

    /// Rejects `--flag=value` for a flag that takes none.
    fn flag(&mut self, name: &str) -> Result<(), UsageError> {
        match self.pending.take() {
            Some(v) => err(format!("`{name}` takes no value (got `{v}`)")),
            None => Ok(()),
        }
    }
}

fn parse_u64(name: &str, v: &str) -> Result<u64, UsageError> {
    let v = v.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse::<u64>(),
    };
    parsed.or_else(|_| err(format!("`{name}`: `{v}` is not a non-negative integer")))
}

/// Handles an option both commands take; `Ok(false)` if `name` is not one.
fn common(name: &str, cur: &mut Cursor<'_>, opts: &mut CommonOpts) -> Result<bool, UsageError> {
    match name {
        "--seed" => opts.seed = parse_u64(name, cur.value(name)?)?,
        "--portable" => {
            cur.flag(name)?;
            opts.portable = true;
        }
        "--cpu" => {
            cur.flag(name)?;
            opts.cpu = true;
        }
        "--token-pass" => {
            use nvfp4::TokenDequant::{Always, Auto, Never};
            opts.tuning.token_pass =
                auto_always_never(name, cur.value(name)?, [Auto, Always, Never])?;
        }
        "--weights-tma" => {
            opts.tuning.weights_tma = on_off(name, cur.value(name)?)?;
        }
        "--blocked-k" => {
            opts.tuning.blocked_k = on_off(name, cur.value(name)?)?;
        }
        "--one-per-sm-deep" => {
            opts.tuning.one_per_sm_deep = on_off(name, cur.value(name)?)?;
        }
        "--scale-groups" => {
            opts.tuning.scale_groups = on_off(name, cur.value(name)?)?;
        }
        "--dynamic-units" => {
            opts.tuning.dynamic_units = on_off(name, cur.value(name)?)?;
        }
        "--pair-tiles" => {
            use nvfp4::PairTiles::{Always, Auto, Never};
            opts.tuning.pair_tiles =
                auto_always_never(name, cur.value(name)?, [Auto, Always, Never])?;
        }
        "--split-k" => {
            opts.tuning.split_k = match cur.value(name)? {
                "auto" => nvfp4::SplitK::Auto,
                "off" => nvfp4::SplitK::Off,
                v => match v.parse::<u32>() {
                    Ok(n) if (1..=nvfp4::SplitK::MAX_PARTS).contains(&n) => nvfp4::SplitK::Parts(n),
                    _ => {
                        return err(format!(
                            "`{name}`: `{v}` is not auto, off or a number of K ranges from 1 to {}",
                            nvfp4::SplitK::MAX_PARTS
                        ));
                    }
                },
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn is_help(arg: &str) -> bool {
    matches!(arg, "-h" | "--help" | "help")
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let Some(cmd) = args.first() else {
        return err("no command given (bench, check, run or help)");
    };
    let rest = &args[1..];
    if is_help(cmd) {
        return Ok(Command::Help);
    }
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    match cmd.as_str() {
        "bench" => parse_bench(rest).map(Command::Bench),
        "check" => parse_check(rest).map(Command::Check),
        "run" => parse_run(rest).map(Command::Run),
        other => err(format!(
            "unknown command `{other}` (bench, check, run or help)"
        )),
    }
}

fn unknown(name: &str, cmd: &str) -> UsageError {
    if name.starts_with('-') {
        UsageError(format!("unknown option `{name}` for `{cmd}`"))
    } else {
        UsageError(format!("unexpected argument `{name}` for `{cmd}`"))
    }
}

fn parse_bench(args: &[String]) -> Result<BenchOpts, UsageError> {
    let mut cur = Cursor::new(args);
    let mut common_opts = CommonOpts::default();
    let (mut shapes, mut iters, mut quick, mut json) = (Vec::new(), None, false, None);
    let mut scales = [ScaleLayout::Plain; 2];
    while let Some(name) = cur.next()? {
        if common(name, &mut cur, &mut common_opts)? {
            continue;
        }
        match name {
            "--shapes" | "--shape" => {
                let v = cur.value(name)?;
                shapes.extend(spec::parse(v).map_err(|e| UsageError(format!("--shapes: {e}")))?);
            }
            "--iters" => {
                let v = parse_u64(name, cur.value(name)?)?;
                iters = Some(usize::try_from(v).unwrap_or(usize::MAX));
            }
            "--quick" => {
                cur.flag(name)?;
                quick = true;
            }
            "--scales" | "--scales-a" | "--scales-b" => {
                let layout = match cur.value(name)?.to_ascii_lowercase().as_str() {
                    "plain" => ScaleLayout::Plain,
                    "blocked" => ScaleLayout::Blocked,
                    v => return err(format!("`{name}`: `{v}` is neither plain nor blocked")),
                };
                match name {
                    "--scales-a" => scales[0] = layout,
                    "--scales-b" => scales[1] = layout,
                    _ => scales = [layout; 2],
                }
            }
            "--json" => {
                let v = cur.value(name)?;
                if v.is_empty() {
                    return err("`--json` needs a file name");
                }
                json = Some(PathBuf::from(v));
            }
            _ => return Err(unknown(name, "bench")),
        }
    }
    let iters = match iters {
        None if quick => QUICK_ITERS,
        None => DEFAULT_ITERS,
        Some(0) => return err("`--iters` must be at least 1"),
        Some(n) if n < DEFAULT_ITERS && !quick => {
            return err(format!(
                "`--iters {n}`: at least {DEFAULT_ITERS} for a measurement (add --quick for fewer)"
            ));
        }
        Some(n) => n,
    };
    if shapes.is_empty() {
        shapes = nvfp4::shapes::gpu_mode_benchmarks();
    }
    Ok(BenchOpts {
        shapes,
        iters,
        quick,
        scales,
        json,
        common: common_opts,
    })
}

fn parse_check(args: &[String]) -> Result<CheckOpts, UsageError> {
    let mut cur = Cursor::new(args);
    let mut common_opts = CommonOpts::default();
    while let Some(name) = cur.next()? {
        if !common(name, &mut cur, &mut common_opts)? {
            return Err(unknown(name, "check"));
        }
    }
    Ok(CheckOpts {
        common: common_opts,
    })
}

fn parse_run(args: &[String]) -> Result<RunOpts, UsageError> {
    let mut cur = Cursor::new(args);
    let (mut input, mut output) = (None, None);
    let mut common_opts = CommonOpts::default();
    while let Some(name) = cur.next()? {
        if name == "--seed" {
            return err("`--seed` does not apply to `run` (its inputs come from the file)");
        }
        if common(name, &mut cur, &mut common_opts)? {
            continue;
        }
        match name {
            "--input" | "--output" => {
                let v = cur.value(name)?;
                if v.is_empty() {
                    return err(format!("`{name}` needs a file name"));
                }
                let slot = if name == "--input" {
                    &mut input
                } else {
                    &mut output
                };
                if slot.is_some() {
                    return err(format!("`{name}` given twice"));
                }
                *slot = Some(PathBuf::from(v));
            }
            _ => return Err(unknown(name, "run")),
        }
    }
    let Some(input) = input else {
        return err("`run` needs `--input FILE.safetensors`");
    };
    let Some(output) = output else {
        return err("`run` needs `--output OUT.safetensors`");
    };
    if input == output {
        return err("`--output` must differ from `--input`");
    }
    Ok(RunOpts {
        input,
        output,
        portable: common_opts.portable,
        cpu: common_opts.cpu,
        tuning: common_opts.tuning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Command, UsageError> {
        let args: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    fn bench(s: &str) -> BenchOpts {
        match parse_str(s) {
            Ok(Command::Bench(b)) => b,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn usage_err(s: &str) -> String {
        match parse_str(s) {
            Err(UsageError(m)) => m,
            other => panic!("{s}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn help_forms() {
        for s in [
            "help",
            "--help",
            "-h",
            "bench --help",
            "check -h",
            "bench --iters 3 -h",
        ] {
            assert!(matches!(parse_str(s), Ok(Command::Help)), "{s}");
        }
    }

    #[test]
    fn bench_defaults() {
        let b = bench("bench");
        assert_eq!(b.shapes, nvfp4::shapes::gpu_mode_benchmarks());
        assert_eq!(b.iters, DEFAULT_ITERS);
        assert!(!b.quick && b.json.is_none());
        assert_eq!(b.scales, [ScaleLayout::Plain; 2]);
        assert_eq!(b.common, CommonOpts::default());
        assert_eq!(bench("bench --quick").iters, QUICK_ITERS);
    }

    #[test]
    fn bench_options() {
        let b = bench(
            "bench --shapes G8_N4096_K7168 --shapes=m=1,2;n=128;k=64 --iters=50 --json out.json \
             --seed 0x10 --portable --cpu --scales BLOCKED --token-pass never --split-k 3 \
             --weights-tma off --blocked-k off --one-per-sm-deep off --scale-groups off \
             --dynamic-units off --pair-tiles always",
        );
        assert_eq!(b.shapes.len(), 2);
        assert_eq!(b.shapes[1].problems, vec![(1, 128, 64), (2, 128, 64)]);
        assert_eq!(b.iters, 50);
        assert_eq!(b.json.as_deref(), Some(std::path::Path::new("out.json")));
        assert_eq!(
            b.common,
            CommonOpts {
                seed: 16,
                portable: true,
                cpu: true,
                tuning: Tuning {
                    token_pass: nvfp4::TokenDequant::Never,
                    split_k: nvfp4::SplitK::Parts(3),
                    weights_tma: false,
                    blocked_k: false,
                    one_per_sm_deep: false,
                    scale_groups: false,
                    dynamic_units: false,
                    pair_tiles: nvfp4::PairTiles::Always,
                },
            }
        );
        assert_eq!(b.scales, [ScaleLayout::Blocked; 2]);
        assert_eq!(
            bench("bench --scales blocked --scales-a plain").scales,
            [ScaleLayout::Plain, ScaleLayout::Blocked]
        );
        assert_eq!(
            bench("bench --scales-b blocked").scales,
            [ScaleLayout::Plain, ScaleLayout::Blocked]
        );
        assert_eq!(bench("bench --quick --iters 3").iters, 3);
        let c = bench("bench --token-pass always --split-k off")
            .common
            .tuning;
        assert_eq!(
            (c.token_pass, c.split_k),
            (nvfp4::TokenDequant::Always, nvfp4::SplitK::Off)
        );
        for bad in [
            "bench --token-pass sometimes",
            "bench --split-k 0",
            "bench --split-k 17",
            "bench --split-k two",
            "bench --weights-tma maybe",
            "bench --blocked-k 1",
            "bench --scale-groups yes",
        ] {
            assert!(parse_str(bad).is_err(), "{bad}");
        }
        assert_eq!(bench("bench --iters 20").iters, 20);
    }

    #[test]
    fn check_options() {
        match parse_str("check --seed=7 --cpu") {
            Ok(Command::Check(c)) => {
                assert_eq!(
                    c.common,
                    CommonOpts {
                        seed: 7,
                        portable: false,
                        cpu: true,
                        ..CommonOpts::default()
                    }
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_options() {
        match parse_str("run --input in.st --output=out.st --portable --cpu") {
            Ok(Command::Run(r)) => assert_eq!(
                r,
                RunOpts {
                    input: "in.st".into(),
                    output: "out.st".into(),
                    portable: true,
                    cpu: true,
                    tuning: Tuning::default(),
                }
            ),
            other => panic!("{other:?}"),
        }
        match parse_str("run --output o --input i") {
            Ok(Command::Run(r)) => assert!(
                !r.portable
                    && !r.cpu
                    && r.input.as_os_str() == "i"
                    && r.tuning == Tuning::default()
            ),
            other => panic!("{other:?}"),
        }
        // The plan options, as bench and check take them.
        match parse_str(
            "run --input i --output o --pair-tiles always --split-k 3 --token-pass=never",
        ) {
            Ok(Command::Run(r)) => assert_eq!(
                r.tuning,
                Tuning {
                    pair_tiles: nvfp4::PairTiles::Always,
                    split_k: nvfp4::SplitK::Parts(3),
                    token_pass: nvfp4::TokenDequant::Never,
                    ..Tuning::default()
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors() {
        for (s, needle) in [
            ("", "no command"),
            ("frobnicate", "unknown command"),
            ("bench --iters", "needs a value"),
            ("bench --iters 5", "at least 20"),
            ("bench --iters 0 --quick", "at least 1"),
            ("bench --iters many", "not a non-negative integer"),
            ("bench --seed -3", "not a non-negative integer"),
            ("bench --seed 0xzz", "not a non-negative integer"),
            ("bench --shapes nope", "--shapes: unknown shape"),
            ("bench --shapes m=1;n=1;k=8", "multiple of 16"),
            ("bench --scales diagonal", "neither plain nor blocked"),
            ("bench --cpu=yes", "takes no value"),
            ("bench --wat", "unknown option `--wat`"),
            ("bench extra", "unexpected argument"),
            ("check --iters 20", "unknown option `--iters` for `check`"),
            ("check --seed", "needs a value"),
            ("run", "needs `--input"),
            ("run --input a", "needs `--output"),
            ("run --output b", "needs `--input"),
            ("run --input a --output a", "must differ"),
            ("run --input a --input b --output c", "given twice"),
            (
                "run --input a --output b --seed 3",
                "`--seed` does not apply to `run`",
            ),
            ("run --input a --output b extra", "unexpected argument"),
            ("run --input=", "needs a file name"),
            ("run --input a --output b --cpu=1", "takes no value"),
            (
                "run --input a --output b --pair-tiles on",
                "not auto, always or never",
            ),
        ] {
            let m = usage_err(s);
            assert!(m.contains(needle), "{s}: {m}");
        }
    }
}
