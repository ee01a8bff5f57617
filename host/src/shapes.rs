//! The problem shapes the project is judged on: GPU MODE `nvfp4_group_gemm`'s test and
//! benchmark shapes (its `task.yml`, L = 1) and the ragged shapes of our own standard.

/// One group of problems: per-problem `(m, n, k)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupShape {
    /// Short name for tables and logs.
    pub name: String,
    /// `(m, n, k)` of each problem.
    pub problems: Vec<(usize, usize, usize)>,
}

impl GroupShape {
    /// Builds a group from parallel lists of M, N and K.
    pub fn new(name: impl Into<String>, m: &[usize], n: &[usize], k: &[usize]) -> Self {
        assert!(m.len() == n.len() && n.len() == k.len());
        let problems = m
            .iter()
            .zip(n)
            .zip(k)
            .map(|((&m, &n), &k)| (m, n, k))
            .collect();
        Self {
            name: name.into(),
            problems,
        }
    }

    /// Multiply-adds times two over all problems: `2 * sum(m * n * k)`.
    pub fn flops(&self) -> f64 {
        self.problems
            .iter()
            .map(|&(m, n, k)| 2.0 * m as f64 * n as f64 * k as f64)
            .sum()
    }
}

/// The ten GPU MODE test shapes (`tests:` in its task.yml).
pub fn gpu_mode_tests() -> Vec<GroupShape> {
    let t: [(&[usize], &[usize], &[usize]); 10] = [
        (&[96, 128], &[128, 256], &[128, 512]),
        (&[256, 72], &[512, 384], &[256, 256]),
        (&[128, 128], &[128, 256], &[128, 512]),
        (&[80, 128, 256], &[384, 256, 128], &[256, 512, 128]),
        (&[64, 72, 96], &[128, 384, 512], &[384, 512, 128]),
        (&[64, 256, 128], &[768, 128, 256], &[512, 512, 128]),
        (&[128, 128, 64], &[256, 512, 512], &[768, 128, 768]),
        (
            &[128, 128, 128, 128],
            &[128, 128, 128, 128],
            &[128, 128, 128, 128],
        ),
        (
            &[40, 56, 384, 512],
            &[512, 384, 256, 128],
            &[256, 256, 256, 256],
        ),
        (
            &[512, 384, 256, 128],
            &[256, 256, 256, 256],
            &[512, 128, 512, 128],
        ),
    ];
    t.iter()
        .enumerate()
        .map(|(i, (m, n, k))| GroupShape::new(format!("test{i}"), m, n, k))
        .collect()
}

/// The four GPU MODE benchmark shapes (`benchmarks:` in its task.yml).
pub fn gpu_mode_benchmarks() -> Vec<GroupShape> {
    vec![
        GroupShape::new(
            "G8_N4096_K7168",
            &[80, 176, 128, 72, 64, 248, 96, 160],
            &[4096; 8],
            &[7168; 8],
        ),
        GroupShape::new(
            "G8_N7168_K2048",
            &[40, 76, 168, 72, 164, 148, 196, 160],
            &[7168; 8],
            &[2048; 8],
        ),
        GroupShape::new("G2_N3072_K4096", &[192, 320], &[3072; 2], &[4096; 2]),
        GroupShape::new("G2_N4096_K1536", &[128, 384], &[4096; 2], &[1536; 2]),
    ]
}

/// Ragged shapes: M in {0, 1, 7, 40, 76}, N not a multiple of the 128-row tile, K not a
/// multiple of the 64-element pipeline chunk.
pub fn ragged() -> Vec<GroupShape> {
    vec![
        GroupShape::new(
            "ragged_m",
            &[0, 1, 7, 40, 76],
            &[200, 130, 96, 328, 72],
            &[256, 128, 512, 320, 64],
        ),
        GroupShape::new("ragged_k16", &[33, 5, 70], &[17, 129, 255], &[16, 48, 400]),
        GroupShape::new("ragged_all_empty", &[0, 0], &[128, 64], &[64, 128]),
    ]
}
