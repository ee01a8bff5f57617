//! The `--shapes` argument: named shapes from `nvfp4::shapes` or a literal group.
//!
//! Syntax (also in `--help`):
//! - a name, case-insensitive: a benchmark shape (`G8_N4096_K7168`, ...), a test shape
//!   (`test0` .. `test9`), a ragged shape (`ragged_m`, ...), or a set: `benchmarks`, `tests`,
//!   `ragged`; several names may be joined with commas (`test0,test3`);
//! - a literal group `m=80,176;n=4096;k=7168`: keys `m`, `n`, `k` (and an optional `name`),
//!   parts separated by `;`, `/` or spaces, values comma-separated. The group has as many
//!   problems as the longest list; a single value is broadcast to every problem. `k` must be
//!   a positive multiple of 16; `m` and `n` may be 0.

use nvfp4::shapes::{self, GroupShape};

/// At most this many problems per literal group (the library's table limit is 2^16).
const MAX_GROUP: usize = 1 << 16;

/// Parses one `--shapes` value into its groups.
pub fn parse(spec: &str) -> Result<Vec<GroupShape>, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty shape spec".into());
    }
    if spec.contains('=') {
        return literal(spec).map(|g| vec![g]);
    }
    let mut out = Vec::new();
    for name in spec.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(format!("empty name in shape list `{spec}`"));
        }
        out.extend(named(name)?);
    }
    Ok(out)
}

/// A named shape or set of shapes.
fn named(name: &str) -> Result<Vec<GroupShape>, String> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "benchmarks" | "bench" => return Ok(shapes::gpu_mode_benchmarks()),
        "tests" => return Ok(shapes::gpu_mode_tests()),
        "ragged" => return Ok(shapes::ragged()),
        _ => {}
    }
    let all = shapes::gpu_mode_benchmarks()
        .into_iter()
        .chain(shapes::gpu_mode_tests())
        .chain(shapes::ragged());
    let mut known = Vec::new();
    for shape in all {
        if shape.name.eq_ignore_ascii_case(name) {
            return Ok(vec![shape]);
        }
        known.push(shape.name);
    }
    Err(format!(
        "unknown shape `{name}` (known: benchmarks, tests, ragged, {}; or a literal like \
         `m=80,176;n=4096;k=7168`)",
        known.join(", ")
    ))
}

/// A comma-separated list of non-negative integers.
fn list(key: &str, value: &str) -> Result<Vec<usize>, String> {
    value
        .split(',')
        .map(|v| {
            let v = v.trim();
            v.parse::<usize>()
                .map_err(|_| format!("`{key}`: `{v}` is not a non-negative integer"))
        })
        .collect()
}

/// A literal group `m=..;n=..;k=..[;name=..]`.
fn literal(spec: &str) -> Result<GroupShape, String> {
    let (mut m, mut n, mut k, mut name) = (None, None, None, None);
    let parts = spec
        .split([';', '/', ' ', '\t'])
        .map(str::trim)
        .filter(|p| !p.is_empty());
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!("`{part}` in `{spec}` is not key=value"));
        };
        let key = key.trim().to_ascii_lowercase();
        let slot = match key.as_str() {
            "m" => &mut m,
            "n" => &mut n,
            "k" => &mut k,
            "name" => {
                if name.replace(value.trim().to_string()).is_some() {
                    return Err(format!("`name` given twice in `{spec}`"));
                }
                continue;
            }
            _ => {
                return Err(format!(
                    "unknown key `{key}` in `{spec}` (keys: m, n, k, name)"
                ));
            }
        };
        if slot.replace(list(&key, value)?).is_some() {
            return Err(format!("`{key}` given twice in `{spec}`"));
        }
    }
    let (Some(m), Some(n), Some(k)) = (m, n, k) else {
        return Err(format!("`{spec}` needs all of m=, n= and k="));
    };
    let g = m.len().max(n.len()).max(k.len());
    if g > MAX_GROUP {
        return Err(format!("{g} problems in `{spec}`; at most {MAX_GROUP}"));
    }
    let broadcast = |key: &str, v: Vec<usize>| -> Result<Vec<usize>, String> {
        match v.len() {
            1 => Ok(vec![v[0]; g]),
            len if len == g => Ok(v),
            len => Err(format!(
                "`{key}` has {len} values but the group has {g} problems (give 1 or {g})"
            )),
        }
    };
    let (m, n, k) = (broadcast("m", m)?, broadcast("n", n)?, broadcast("k", k)?);
    if let Some(bad) = k.iter().find(|&&k| k == 0 || k % 16 != 0) {
        return Err(format!(
            "k = {bad} is not a positive multiple of 16 (one scale block)"
        ));
    }
    let name = name.filter(|s| !s.is_empty()).unwrap_or_else(|| {
        let uniform = |v: &[usize]| v.iter().all(|&x| x == v[0]).then_some(v[0]);
        match (uniform(&n), uniform(&k)) {
            (Some(n), Some(k)) => format!("G{g}_N{n}_K{k}"),
            _ => format!("G{g}_custom"),
        }
    });
    Ok(GroupShape::new(name, &m, &n, &k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sets() {
        let g = parse("G8_N4096_K7168").unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0], shapes::gpu_mode_benchmarks()[0]);
        assert_eq!(parse("g2_n3072_k4096").unwrap()[0].problems.len(), 2);
        assert_eq!(parse("benchmarks").unwrap().len(), 4);
        assert_eq!(parse("tests").unwrap().len(), 10);
        let two = parse("test0, ragged_m").unwrap();
        assert_eq!(
            (two[0].name.as_str(), two[1].name.as_str()),
            ("test0", "ragged_m")
        );
        assert!(parse("nope").unwrap_err().contains("unknown shape"));
        assert!(parse("test0,").is_err());
        assert!(parse("  ").is_err());
    }

    #[test]
    fn literal_broadcast() {
        let g = parse("m=80,176;n=4096;k=7168").unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].name, "G2_N4096_K7168");
        assert_eq!(g[0].problems, vec![(80, 4096, 7168), (176, 4096, 7168)]);
        let g = parse("m=0 / n=128,64 / k=32 / name=mine").unwrap();
        assert_eq!(g[0].name, "mine");
        assert_eq!(g[0].problems, vec![(0, 128, 32), (0, 64, 32)]);
        let g = parse("M=1;N=2,3;K=16,32").unwrap();
        assert_eq!(g[0].name, "G2_custom");
        assert_eq!(g[0].problems, vec![(1, 2, 16), (1, 3, 32)]);
        let g = parse("m=5;n=6;k=16").unwrap();
        assert_eq!(g[0].problems, vec![(5, 6, 16)]);
    }

    #[test]
    fn literal_errors() {
        for (spec, needle) in [
            ("m=1,2,3;n=1,2;k=16", "has 2 values"),
            ("m=1;n=1;k=40", "multiple of 16"),
            ("m=1;n=1;k=0", "multiple of 16"),
            ("m=1;n=1", "needs all"),
            ("m=1;n=1;k=16;x=3", "unknown key"),
            ("m=1;m=2;n=1;k=16", "given twice"),
            ("m=-1;n=1;k=16", "non-negative integer"),
            ("m=1,,2;n=1;k=16", "non-negative integer"),
            ("m=1;n=1;k=16;oops", "not key=value"),
            ("m=;n=1;k=16", "non-negative integer"),
        ] {
            let err = parse(spec).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }
}
