//! Small helpers shared by the commands: progress lines, sample statistics, error summaries
//! and plain-text tables.

use super::json::Json;
use nvfp4::f16;
use nvfp4::reference::Comparison;
use std::time::Instant;

/// Progress lines on stderr, each stamped with the time since the command started.
pub struct Progress {
    start: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub fn step(&self, msg: impl std::fmt::Display) {
        eprintln!("[{:7.2}s] {msg}", self.start.elapsed().as_secs_f64());
    }
}

/// Median, minimum and maximum of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub count: usize,
}

impl Stats {
    /// `None` for no samples. The median of an even count is the mean of the middle two.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        };
        Some(Self {
            median,
            min: s[0],
            max: s[n - 1],
            count: n,
        })
    }

    pub fn json(&self) -> Json {
        Json::obj([
            ("median", Json::Num(self.median)),
            ("min", Json::Num(self.min)),
            ("max", Json::Num(self.max)),
            ("samples", Json::int(self.count as u64)),
        ])
    }
}

/// Geometric mean of positive finite values; `None` if there are none or one is not.
pub fn geomean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|&x| !(x.is_finite() && x > 0.0)) {
        return None;
    }
    Some((xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp())
}

/// The errors of one output (or of a whole group) against the reference.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorSummary {
    pub passed: bool,
    /// Elements that failed the tolerance (or disagreed on NaN / inf, or were missing).
    pub bad: usize,
    /// Elements the kernel never wrote (still the poison pattern).
    pub unwritten: usize,
    pub max_abs: f64,
    pub max_rel: f64,
    pub rel_frobenius: f64,
}

impl ErrorSummary {
    pub fn json(&self) -> Json {
        Json::obj([
            ("passed", Json::Bool(self.passed)),
            ("bad_elements", Json::int(self.bad as u64)),
            ("unwritten_elements", Json::int(self.unwritten as u64)),
            ("max_abs_error", Json::Num(self.max_abs)),
            ("max_rel_error", Json::Num(self.max_rel)),
            ("rel_frobenius", Json::Num(self.rel_frobenius)),
        ])
    }

    pub fn verdict(&self) -> &'static str {
        if self.passed { "pass" } else { "FAIL" }
    }
}

/// Accumulates per-problem comparisons into one summary for the group; the relative
/// Frobenius error is over the whole group (`sqrt(sum diff^2 / sum want^2)` over the
/// positions where both are finite).
#[derive(Default)]
pub struct ErrorAccumulator {
    summary: ErrorSummary,
    diff2: f64,
    want2: f64,
    any: bool,
}

impl ErrorAccumulator {
    pub fn add(&mut self, got: &[f16], want: &[f64], c: &Comparison, unwritten: usize) {
        let s = &mut self.summary;
        if !self.any {
            s.passed = true;
            self.any = true;
        }
        s.passed &= c.passed && unwritten == 0;
        s.bad += c.bad;
        s.unwritten += unwritten;
        s.max_abs = s.max_abs.max(c.max_abs);
        s.max_rel = s.max_rel.max(c.max_rel);
        for (g, &w) in got.iter().zip(want) {
            let g = g.to_f64();
            if g.is_finite() && w.is_finite() {
                self.diff2 += (g - w) * (g - w);
                self.want2 += w * w;
            }
        }
    }

    /// The summary; an empty group passes with zero errors.
    pub fn finish(self) -> ErrorSummary {
        let mut s = self.summary;
        if !self.any {
            s.passed = true;
        }
        s.rel_frobenius = if self.want2 > 0.0 {
            (self.diff2 / self.want2).sqrt()
        } else if self.diff2 > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        s
    }
}

/// A plain-text table: the first `left` columns (labels) left-aligned, the rest (numbers)
/// right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    left: usize,
}

impl Table {
    /// A table whose first column is left-aligned.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            left: 1,
        }
    }

    /// Left-aligns the first `n` columns.
    pub fn left_columns(mut self, n: usize) -> Self {
        self.left = n;
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate().take(cols) {
                if i > 0 {
                    out.push_str("  ");
                }
                let pad = width[i].saturating_sub(c.chars().count());
                if i < self.left {
                    out.push_str(c);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(c);
                }
            }
            out.trim_end().to_string()
        };
        let mut out = line(&self.header);
        out.push('\n');
        let total: usize = width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }
}

/// `x` with `digits` decimals, or `n/a` for `None` / non-finite.
pub fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "n/a".into(),
    }
}

/// An error magnitude in compact scientific notation.
pub fn fmt_err(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.2e}")
    }
}

/// The problems of a group as `[m, n, k]` triples.
pub fn problems_json(problems: &[(usize, usize, usize)]) -> Json {
    Json::Arr(
        problems
            .iter()
            .map(|&(m, n, k)| {
                Json::Arr(vec![
                    Json::int(m as u64),
                    Json::int(n as u64),
                    Json::int(k as u64),
                ])
            })
            .collect(),
    )
}

/// A short description of a group: `G=8 M=80..248 N=4096 K=7168`.
pub fn describe(problems: &[(usize, usize, usize)]) -> String {
    let range = |f: fn(&(usize, usize, usize)) -> usize| -> String {
        let lo = problems.iter().map(f).min().unwrap_or(0);
        let hi = problems.iter().map(f).max().unwrap_or(0);
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}..{hi}")
        }
    };
    format!(
        "G={} M={} N={} K={}",
        problems.len(),
        range(|p| p.0),
        range(|p| p.1),
        range(|p| p.2)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_geomean() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.count), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Stats::of(&[]).is_none());
        assert!((geomean(&[2.0, 8.0]).unwrap() - 4.0).abs() < 1e-12);
        assert_eq!(geomean(&[]), None);
        assert_eq!(geomean(&[1.0, f64::NAN]), None);
        assert_eq!(geomean(&[1.0, 0.0]), None);
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(&["shape", "us"]);
        t.row(vec!["a".into(), "1.0".into()]);
        t.row(vec!["longer".into(), "123.5".into()]);
        assert_eq!(
            t.render(),
            "shape      us\n-------------\na         1.0\nlonger  123.5\n"
        );
        let mut t = Table::new(&["a", "b", "c"]).left_columns(2);
        t.row(vec!["xx".into(), "yy".into(), "1".into()]);
        assert_eq!(t.render(), "a   b   c\n---------\nxx  yy  1\n");
    }

    #[test]
    fn describe_ranges() {
        assert_eq!(
            describe(&[(80, 4096, 7168), (176, 4096, 7168)]),
            "G=2 M=80..176 N=4096 K=7168"
        );
        assert_eq!(describe(&[]), "G=0 M=0 N=0 K=0");
    }
}
