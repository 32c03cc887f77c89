//! Confidence intervals over seeds and paired per-seed comparisons for the sweep report.
//!
//! Seeds are few (3–10), so intervals use Student's t, not the normal 1.96. A paired comparison
//! takes the difference of two configs' numbers seed by seed (same seed = same prompts and the
//! same initial rollouts), which cancels the seed-to-seed spread both share.

use serde::Serialize;

use super::RunResult;
use crate::config::ProcessWeighting;

/// The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95%).
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        31..=60 => 2.042 - (df - 30) as f64 * (2.042 - 2.000) / 30.0,
        _ => 1.96,
    }
}

/// Half-width of the 95% confidence interval of a mean of `n` values with sample standard
/// deviation `std`; `None` below two values.
pub fn ci95_half_width(std: f64, n: usize) -> Option<f64> {
    (n >= 2).then(|| t975(n - 1) * std / (n as f64).sqrt())
}

/// A per-seed comparison of config `a` (λ-weighted) with config `b` on one metric.
#[derive(Debug, Clone, Serialize)]
pub struct Paired {
    pub a: String,
    pub b: String,
    pub grid: Vec<String>,
    /// `peak_val_accuracy`, `final_val_accuracy` or `steps_to_95pct_peak`.
    pub metric: &'static str,
    pub seeds: Vec<u64>,
    /// `a − b` per seed, in `seeds` order.
    pub diffs: Vec<f64>,
    pub mean_diff: f64,
    /// Half-width of the 95% CI of `mean_diff` (None with one seed).
    pub ci95: Option<f64>,
    /// Seeds where `a` did better (higher accuracy, fewer steps), equal, worse.
    pub a_better: usize,
    pub ties: usize,
    pub b_better: usize,
}

/// The metrics a paired comparison covers, and whether higher is better.
const METRICS: [(&str, bool); 3] = [
    ("peak_val_accuracy", true),
    ("final_val_accuracy", true),
    ("steps_to_95pct_peak", false),
];

fn metric(r: &RunResult, name: &str) -> Option<f64> {
    match name {
        "peak_val_accuracy" => r.peak_val_accuracy,
        "final_val_accuracy" => r.final_val_accuracy,
        "steps_to_95pct_peak" => r.steps_to_95pct_peak.map(|s| s as f64),
        _ => None,
    }
}

/// Every λ-weighted config against every unweighted config at the same grid point, on each
/// metric, over the seeds both ran.
pub fn paired_comparisons(runs: &[RunResult]) -> Vec<Paired> {
    let mut configs: Vec<(&str, &[String], ProcessWeighting)> = Vec::new();
    for r in runs {
        if !configs.iter().any(|(c, _, _)| *c == r.config) {
            configs.push((&r.config, &r.grid, r.process_weighting));
        }
    }
    let mut out = Vec::new();
    for &(a, grid, wa) in &configs {
        if wa != ProcessWeighting::Lambda {
            continue;
        }
        for &(b, grid_b, wb) in &configs {
            if wb == ProcessWeighting::Lambda || grid_b != grid {
                continue;
            }
            for (name, higher_better) in METRICS {
                let mut seeds = Vec::new();
                let mut diffs = Vec::new();
                for ra in runs.iter().filter(|r| r.config == a) {
                    let Some(rb) = runs.iter().find(|r| r.config == b && r.seed == ra.seed) else {
                        continue;
                    };
                    if let (Some(x), Some(y)) = (metric(ra, name), metric(rb, name)) {
                        seeds.push(ra.seed);
                        diffs.push(x - y);
                    }
                }
                let Some(stat) = super::MeanStd::of(&diffs) else {
                    continue;
                };
                let better = |d: f64| if higher_better { d > 1e-12 } else { d < -1e-12 };
                let worse = |d: f64| if higher_better { d < -1e-12 } else { d > 1e-12 };
                out.push(Paired {
                    a: a.to_string(),
                    b: b.to_string(),
                    grid: grid.to_vec(),
                    metric: name,
                    a_better: diffs.iter().filter(|d| better(**d)).count(),
                    b_better: diffs.iter().filter(|d| worse(**d)).count(),
                    ties: diffs.iter().filter(|d| !better(**d) && !worse(**d)).count(),
                    seeds,
                    mean_diff: stat.mean,
                    ci95: stat.ci95,
                    diffs,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn run(config: &str, w: ProcessWeighting, seed: u64, peak: f64, steps: usize) -> RunResult {
        RunResult {
            config: config.into(),
            grid: vec!["optim.learning_rate=1e-4".into()],
            run_dir: PathBuf::new(),
            loss_type: crate::config::LossType::Dapo,
            process_weighting: w,
            seed,
            steps: 300,
            initial_val_accuracy: Some(0.1),
            peak_val_accuracy: Some(peak),
            final_val_accuracy: Some(peak - 0.01),
            steps_to_95pct_peak: Some(steps),
            last50_train_accuracy: 0.0,
            train_accuracy_all_steps: 0.0,
            last50_entropy: 0.0,
            mean_step_time_s: 1.0,
            process_set_time_fraction: 0.0,
            wall_time_s: 1.0,
            val_curve: Vec::new(),
        }
    }

    #[test]
    fn t_quantiles_match_the_table() {
        assert_eq!(t975(4), 2.776);
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(1000), 1.96);
        // 5 seeds, std 0.02: 2.776 · 0.02 / √5.
        let h = ci95_half_width(0.02, 5).unwrap();
        assert!((h - 0.024829).abs() < 1e-5, "{h}");
        assert!(ci95_half_width(0.02, 1).is_none());
    }

    #[test]
    fn pairs_by_seed_and_counts_wins_in_the_right_direction() {
        use ProcessWeighting::{Lambda, None as Plain};
        let runs = vec![
            run("lambda", Lambda, 1, 0.30, 100),
            run("lambda", Lambda, 2, 0.20, 50),
            run("lambda", Lambda, 3, 0.25, 200),
            run("grpo", Plain, 2, 0.22, 100),
            run("grpo", Plain, 1, 0.26, 100),
            run("grpo", Plain, 3, 0.25, 150),
        ];
        let p = paired_comparisons(&runs);
        assert_eq!(p.len(), 3, "one pair of configs × three metrics");
        let peak = p.iter().find(|x| x.metric == "peak_val_accuracy").unwrap();
        assert_eq!((peak.a.as_str(), peak.b.as_str()), ("lambda", "grpo"));
        assert_eq!(peak.seeds, vec![1, 2, 3]);
        let want = [0.04, -0.02, 0.0];
        for (d, w) in peak.diffs.iter().zip(want) {
            assert!((d - w).abs() < 1e-12, "{:?}", peak.diffs);
        }
        assert!((peak.mean_diff - 0.02 / 3.0).abs() < 1e-12);
        assert_eq!((peak.a_better, peak.ties, peak.b_better), (1, 1, 1));
        // Differences 0.04, −0.02, 0: std 0.030551, half-width 4.303 · std / √3.
        assert!((peak.ci95.unwrap() - 4.303 * 0.030_550_5 / 3f64.sqrt()).abs() < 1e-5);
        // Fewer steps is better: seed 2 took 50 fewer (a win), seed 3 took 50 more.
        let steps = p
            .iter()
            .find(|x| x.metric == "steps_to_95pct_peak")
            .unwrap();
        assert_eq!(steps.diffs, vec![0.0, -50.0, 50.0]);
        assert_eq!((steps.a_better, steps.ties, steps.b_better), (1, 1, 1));
    }

    #[test]
    fn no_pairs_across_grid_points_or_between_unweighted_configs() {
        use ProcessWeighting::{Lambda, None as Plain};
        let mut other = run("grpo", Plain, 1, 0.2, 10);
        other.grid = vec!["optim.learning_rate=3e-5".into()];
        let runs = vec![
            run("lambda", Lambda, 1, 0.3, 10),
            other,
            run("grpo-seq", Plain, 2, 0.2, 10), // another seed only: no pair
        ];
        assert!(paired_comparisons(&runs).is_empty());
    }
}
