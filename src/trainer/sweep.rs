//! `grpo sweep`: several configs × several seeds, one comparison report.
//!
//! Each run trains in `OUT/runs/<config>-seed<S>/` with the normal trainer (so every run has its
//! metrics, checkpoints and summary), then the report reads them back: validation accuracy
//! curves (step 0 = before training), their peak, the first step reaching 95% of the peak, the
//! final value, wall and step times, and the share of step time spent on process sets (the
//! whole cost λ-GRPO adds). A finished run (its `summary.json` exists) is not trained again, so
//! an interrupted sweep continues where it stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::{Config, LossType, ProcessWeighting};
use crate::record::{read_metrics, read_summary, StepMetrics};
use crate::trainer::run::{train, Resume};
use crate::trainer::state::latest_checkpoint;

mod jobs;
pub mod stats;

/// One run's numbers, as `report.json` lists them.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub config: String,
    pub grid: Vec<String>,
    pub run_dir: PathBuf,
    pub loss_type: LossType,
    pub process_weighting: ProcessWeighting,
    pub seed: u64,
    pub steps: usize,
    pub initial_val_accuracy: Option<f64>,
    pub peak_val_accuracy: Option<f64>,
    pub final_val_accuracy: Option<f64>,
    /// First step whose validation accuracy reaches 95% of the run's peak (0 = before training).
    pub steps_to_95pct_peak: Option<usize>,
    /// Mean training accuracy (reward-function accuracy of the sampled completions) over the
    /// last `min(50, steps)` steps.
    pub last50_train_accuracy: f64,
    /// Mean training accuracy over all steps: on the toy task, how often the target was sampled.
    pub train_accuracy_all_steps: f64,
    /// Mean per-token entropy (nats) over the last `min(50, steps)` steps.
    pub last50_entropy: f64,
    pub mean_step_time_s: f64,
    /// Mean share of step time spent building process sets and their statistics.
    pub process_set_time_fraction: f64,
    pub wall_time_s: f64,
    /// (step, validation accuracy), step 0 being the accuracy before training.
    pub val_curve: Vec<(usize, f64)>,
}

/// Mean, sample standard deviation and the 95% confidence interval of the mean over seeds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
    /// Half-width of the 95% CI of the mean (Student t; None with one value).
    pub ci95: Option<f64>,
}

impl MeanStd {
    pub fn of(values: &[f64]) -> Option<MeanStd> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(MeanStd {
            mean,
            std,
            n,
            ci95: stats::ci95_half_width(std, n),
        })
    }
}

/// Per-config aggregate over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigSummary {
    pub config: String,
    /// The grid point's overrides (empty without `--grid`).
    pub grid: Vec<String>,
    pub loss_type: Option<LossType>,
    pub process_weighting: Option<ProcessWeighting>,
    pub seeds: Vec<u64>,
    pub initial_val_accuracy: Option<MeanStd>,
    pub peak_val_accuracy: Option<MeanStd>,
    pub final_val_accuracy: Option<MeanStd>,
    pub steps_to_95pct_peak: Option<MeanStd>,
    pub last50_train_accuracy: Option<MeanStd>,
    pub train_accuracy_all_steps: Option<MeanStd>,
    pub last50_entropy: Option<MeanStd>,
    pub mean_step_time_s: Option<MeanStd>,
    pub process_set_time_fraction: Option<MeanStd>,
    pub wall_time_s: Option<MeanStd>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub command: String,
    pub runs: Vec<RunResult>,
    pub configs: Vec<ConfigSummary>,
    /// Mean step time of each λ-weighted config relative to the first unweighted one, in %.
    pub lambda_step_time_overhead_pct: Option<f64>,
    /// The same per seed: each λ-weighted run against the unweighted run with the same seed and
    /// grid point, mean ± std over those pairs, in %.
    pub lambda_step_time_overhead_pct_by_seed: Option<MeanStd>,
    /// Each λ-weighted config against each unweighted one at the same grid point, seed by seed.
    pub paired: Vec<stats::Paired>,
}

pub struct SweepSpec {
    pub configs: Vec<PathBuf>,
    /// `section.key=v1,v2,...` axes; every config runs at every point of their product.
    pub grid: Vec<String>,
    pub seeds: Vec<u64>,
    pub overrides: Vec<String>,
    pub out: PathBuf,
    /// Runs trained at once, each in its own `grpo train` process; 1 = one after another in
    /// this process.
    pub jobs: usize,
    /// The command line, recorded in the report so it can be regenerated.
    pub command: String,
}

pub fn config_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into())
}

/// Trains every (config, seed) run that has no `summary.json` yet, then writes the report.
/// One (config, grid point) combination; its runs differ only in the seed.
#[derive(Debug, Clone)]
pub struct Variant {
    pub config: PathBuf,
    /// `section.key=value` overrides of this grid point.
    pub grid: Vec<String>,
    /// Folder-safe name: the config stem, then the grid values.
    pub name: String,
}

/// The cartesian product of configs and `--grid` axes.
pub fn variants(spec: &SweepSpec) -> Result<Vec<Variant>> {
    let mut points: Vec<Vec<String>> = vec![Vec::new()];
    for axis in &spec.grid {
        let (key, values) = axis
            .split_once('=')
            .with_context(|| format!("--grid {axis}: expected section.key=v1,v2,..."))?;
        let values: Vec<&str> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            bail!("--grid {axis}: expected at least one value");
        }
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(format!("{}={v}", key.trim()));
                    q
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    for config in &spec.configs {
        for point in &points {
            let mut name = config_name(config);
            for kv in point {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let short = k.rsplit('.').next().unwrap_or(k);
                name.push_str(&format!("_{short}{v}"));
            }
            let name: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            out.push(Variant {
                config: config.clone(),
                grid: point.clone(),
                name,
            });
        }
    }
    for (i, v) in out.iter().enumerate() {
        if out[..i].iter().any(|w| w.name == v.name) {
            bail!(
                "sweep: two runs would be named `{}`; rename a config",
                v.name
            );
        }
    }
    Ok(out)
}

/// Trains every (variant, seed) run that has no `summary.json` and `metrics.jsonl` yet, then
/// writes the report. A run with a summary but no metrics (a clone of a results folder whose
/// large metrics files are not committed) is trained again from scratch; runs are deterministic,
/// so the report comes out the same up to timings.
pub fn sweep(spec: &SweepSpec, interrupted: Arc<AtomicBool>) -> Result<SweepReport> {
    if spec.configs.is_empty() || spec.seeds.is_empty() {
        bail!("sweep: expected at least one --config and one seed");
    }
    let variants = variants(spec)?;
    // One sweep per folder (each run's folder is locked again by `train`).
    let _lock =
        crate::trainer::lock::RunLock::acquire(&spec.out, "grpo sweep").context("sweep --out")?;
    let total = variants.len() * spec.seeds.len();
    let mut pending = Vec::new();
    let mut k = 0;
    for v in &variants {
        for &seed in &spec.seeds {
            k += 1;
            let run_dir = spec.out.join("runs").join(format!("{}-seed{seed}", v.name));
            let summary = run_dir.join("summary.json").exists();
            if summary && run_dir.join("metrics.jsonl").exists() {
                tracing::info!("[{k}/{total}] {} already finished", run_dir.display());
                continue;
            }
            if summary {
                tracing::info!(
                    "[{k}/{total}] {} has no metrics.jsonl: training it again",
                    run_dir.display()
                );
                std::fs::remove_dir_all(&run_dir)
                    .with_context(|| format!("removing {}", run_dir.display()))?;
            }
            let mut overrides = spec.overrides.clone();
            overrides.extend(v.grid.iter().cloned());
            overrides.push(format!("train.seed={seed}"));
            overrides.push(format!("output.dir={}", run_dir.display()));
            // Every run's config is checked before the first one starts.
            let cfg = Config::load(&v.config, &overrides)?;
            let resume = latest_checkpoint(&run_dir)?.is_some();
            if !resume {
                let _ = std::fs::remove_dir_all(&run_dir);
            }
            pending.push(PendingRun {
                label: format!("[{k}/{total}] {} seed {seed}", v.name),
                config: v.config.clone(),
                cfg,
                overrides,
                resume,
                log: spec
                    .out
                    .join("logs")
                    .join(format!("{}-seed{seed}.log", v.name)),
            });
        }
    }
    if spec.jobs > 1 {
        jobs::run_processes(&pending, spec.jobs, &interrupted)?;
    } else {
        for p in &pending {
            tracing::info!("{} training", p.label);
            let resume = if p.resume { Resume::Latest } else { Resume::No };
            let s = train(&p.cfg, resume, interrupted.clone())
                .with_context(|| format!("sweep run {}", p.cfg.output.dir.display()))?;
            eprintln!(
                "{}: val {} -> {} in {:.0}s",
                p.label,
                fmt_opt(s.initial_val_accuracy),
                fmt_opt(s.final_val_accuracy),
                s.wall_time_s
            );
        }
    }
    let report = collect(spec, &variants)?;
    write_report(&spec.out, &report)?;
    Ok(report)
}

/// A run the sweep still has to train.
pub(crate) struct PendingRun {
    /// `[k/total] name seed S`, for progress lines.
    pub label: String,
    pub config: PathBuf,
    pub cfg: Config,
    /// `--set` overrides that make `config` this run (grid point, seed, output.dir).
    pub overrides: Vec<String>,
    /// Continue from the newest checkpoint in the run's folder.
    pub resume: bool,
    /// Where a child process's output goes (`--jobs` > 1).
    pub log: PathBuf,
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "n/a".into())
}

/// Reads every run's summary and metrics back into a report.
pub fn collect(spec: &SweepSpec, variants: &[Variant]) -> Result<SweepReport> {
    let mut runs = Vec::new();
    for v in variants {
        for &seed in &spec.seeds {
            let dir = spec.out.join("runs").join(format!("{}-seed{seed}", v.name));
            let mut r = read_run(&v.name, seed, &dir)?;
            r.grid = v.grid.clone();
            runs.push(r);
        }
    }
    let configs: Vec<ConfigSummary> = variants
        .iter()
        .map(|v| {
            let name = &v.name;
            let rs: Vec<&RunResult> = runs.iter().filter(|r| &r.config == name).collect();
            let agg = |f: &dyn Fn(&RunResult) -> Option<f64>| {
                MeanStd::of(&rs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
            };
            ConfigSummary {
                config: name.clone(),
                grid: v.grid.clone(),
                loss_type: rs.first().map(|r| r.loss_type),
                process_weighting: rs.first().map(|r| r.process_weighting),
                seeds: rs.iter().map(|r| r.seed).collect(),
                initial_val_accuracy: agg(&|r| r.initial_val_accuracy),
                peak_val_accuracy: agg(&|r| r.peak_val_accuracy),
                final_val_accuracy: agg(&|r| r.final_val_accuracy),
                steps_to_95pct_peak: agg(&|r| r.steps_to_95pct_peak.map(|s| s as f64)),
                last50_train_accuracy: agg(&|r| Some(r.last50_train_accuracy)),
                train_accuracy_all_steps: agg(&|r| Some(r.train_accuracy_all_steps)),
                last50_entropy: agg(&|r| Some(r.last50_entropy)),
                mean_step_time_s: agg(&|r| Some(r.mean_step_time_s)),
                process_set_time_fraction: agg(&|r| Some(r.process_set_time_fraction)),
                wall_time_s: agg(&|r| Some(r.wall_time_s)),
            }
        })
        .collect();
    let base = configs
        .iter()
        .find(|c| c.process_weighting == Some(ProcessWeighting::None));
    let lambda = configs
        .iter()
        .find(|c| c.process_weighting == Some(ProcessWeighting::Lambda));
    let overhead = match (base, lambda) {
        (Some(b), Some(l)) => match (b.mean_step_time_s, l.mean_step_time_s) {
            (Some(tb), Some(tl)) if tb.mean > 0.0 => Some((tl.mean / tb.mean - 1.0) * 100.0),
            _ => None,
        },
        _ => None,
    };
    let by_seed = MeanStd::of(&paired_overheads(&runs));
    let paired = stats::paired_comparisons(&runs);
    Ok(SweepReport {
        paired,
        command: spec.command.clone(),
        runs,
        configs,
        lambda_step_time_overhead_pct: overhead,
        lambda_step_time_overhead_pct_by_seed: by_seed,
    })
}

/// Step-time overhead in % of every λ-weighted run over the unweighted run of the same seed and
/// grid point (the first such run when several configs qualify).
pub fn paired_overheads(runs: &[RunResult]) -> Vec<f64> {
    runs.iter()
        .filter(|l| l.process_weighting == ProcessWeighting::Lambda)
        .filter_map(|l| {
            let b = runs.iter().find(|b| {
                b.process_weighting == ProcessWeighting::None
                    && b.seed == l.seed
                    && b.grid == l.grid
            })?;
            (b.mean_step_time_s > 0.0)
                .then(|| (l.mean_step_time_s / b.mean_step_time_s - 1.0) * 100.0)
        })
        .collect()
}

fn read_run(name: &str, seed: u64, dir: &Path) -> Result<RunResult> {
    let summary = read_summary(dir)?;
    let metrics = read_metrics(dir)?;
    let initial = summary.initial_val_accuracy;
    let mut curve: Vec<(usize, f64)> = initial.map(|a| vec![(0, a)]).unwrap_or_default();
    for m in &metrics {
        if let Some(acc) = m.eval_accuracy {
            curve.push((m.step, acc));
        }
    }
    let peak = curve
        .iter()
        .map(|(_, a)| *a)
        .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
    let steps_to_95 = peak.and_then(|p| {
        curve
            .iter()
            .find(|(_, a)| *a >= 0.95 * p - 1e-12)
            .map(|(s, _)| *s)
    });
    let last: Vec<&StepMetrics> = metrics.iter().rev().take(50).collect();
    let last50 = last.iter().filter_map(|m| m.accuracy).sum::<f64>() / last.len().max(1) as f64;
    let entropies: Vec<f64> = last.iter().filter_map(|m| m.entropy).collect();
    let last50_entropy = entropies.iter().sum::<f64>() / entropies.len().max(1) as f64;
    let all_steps =
        metrics.iter().filter_map(|m| m.accuracy).sum::<f64>() / metrics.len().max(1) as f64;
    let fractions: Vec<f64> = metrics
        .iter()
        .filter_map(|m| Some(m.time_process_sets_s? / m.step_time_s?.max(1e-12)))
        .collect();
    let step_times: Vec<f64> = metrics.iter().filter_map(|m| m.step_time_s).collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    Ok(RunResult {
        config: name.to_string(),
        grid: Vec::new(),
        run_dir: dir.to_path_buf(),
        loss_type: summary.loss_type,
        process_weighting: summary.process_weighting,
        seed,
        steps: metrics.len(),
        initial_val_accuracy: initial,
        peak_val_accuracy: peak,
        final_val_accuracy: summary.final_val_accuracy,
        steps_to_95pct_peak: steps_to_95,
        last50_train_accuracy: last50,
        train_accuracy_all_steps: all_steps,
        last50_entropy,
        mean_step_time_s: mean(&step_times),
        process_set_time_fraction: mean(&fractions),
        wall_time_s: summary.wall_time_s,
        val_curve: curve,
    })
}

/// `mean [lo, hi]` with the 95% CI, or `mean` alone with one seed.
fn ci(v: Option<MeanStd>, digits: usize) -> String {
    match v {
        Some(m) => match m.ci95 {
            Some(h) => format!(
                "{:.*} [{:.*}, {:.*}]",
                digits,
                m.mean,
                digits,
                m.mean - h,
                digits,
                m.mean + h
            ),
            None => format!("{:.*}", digits, m.mean),
        },
        None => "n/a".into(),
    }
}

/// The 95% CI table and the paired per-seed comparisons.
fn ci_and_paired_markdown(report: &SweepReport) -> String {
    let mut s = String::from(
        "\n## 95% confidence intervals over seeds\n\nMean [95% CI] (Student t over seeds).\n\n| config | seeds | peak val acc | final val acc | steps to 95% of peak |\n|---|---|---|---|---|\n",
    );
    for c in &report.configs {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            c.config,
            c.seeds.len(),
            ci(c.peak_val_accuracy, 3),
            ci(c.final_val_accuracy, 3),
            ci(c.steps_to_95pct_peak, 1),
        ));
    }
    if !report.paired.is_empty() {
        s.push_str("\n## Paired per-seed comparison\n\nDifference a − b on the same seed, mean [95% CI]; wins / ties / losses count the seeds where a did better (higher accuracy, fewer steps), the same, or worse.\n\n| a | b | metric | seeds | mean a − b | wins / ties / losses | per seed |\n|---|---|---|---|---|---|---|\n");
        for p in &report.paired {
            let digits = if p.metric == "steps_to_95pct_peak" {
                1
            } else {
                3
            };
            let mean = match p.ci95 {
                Some(h) => format!(
                    "{:+.*} [{:+.*}, {:+.*}]",
                    digits,
                    p.mean_diff,
                    digits,
                    p.mean_diff - h,
                    digits,
                    p.mean_diff + h
                ),
                None => format!("{:+.*}", digits, p.mean_diff),
            };
            let per_seed: Vec<String> = p
                .seeds
                .iter()
                .zip(&p.diffs)
                .map(|(seed, d)| format!("{seed}: {d:+.*}", digits))
                .collect();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} / {} / {} | {} |\n",
                p.a,
                p.b,
                p.metric,
                p.seeds.len(),
                mean,
                p.a_better,
                p.ties,
                p.b_better,
                per_seed.join(", ")
            ));
        }
    }
    s
}

fn ms(v: Option<MeanStd>, digits: usize) -> String {
    match v {
        Some(m) => format!("{:.*} ± {:.*}", digits, m.mean, digits, m.std),
        None => "n/a".into(),
    }
}

/// `report.json` and `report.md` in `out`.
pub fn write_report(out: &Path, report: &SweepReport) -> Result<()> {
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )
    .with_context(|| format!("writing {}", out.join("report.json").display()))?;
    std::fs::write(out.join("report.md"), markdown(report))
        .with_context(|| format!("writing {}", out.join("report.md").display()))?;
    Ok(())
}

pub fn markdown(report: &SweepReport) -> String {
    let mut s = String::new();
    s.push_str("# Sweep report\n\n");
    s.push_str(&format!("Command: `{}`\n\n", report.command));
    s.push_str("Mean ± std over seeds. Validation accuracy is measured before training (step 0), every `eval.every` steps and at the end.\n\n");
    s.push_str("| config | loss.type | weighting | seeds | initial val acc | peak val acc | final val acc | steps to 95% of peak | train acc, last 50 steps | train acc, all steps | entropy, last 50 steps | step time (s) | process-set share of step | wall time (s) |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for c in &report.configs {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.config,
            c.loss_type.map_or("n/a", LossType::as_str),
            c.process_weighting.map_or("n/a", ProcessWeighting::as_str),
            c.seeds.len(),
            ms(c.initial_val_accuracy, 3),
            ms(c.peak_val_accuracy, 3),
            ms(c.final_val_accuracy, 3),
            ms(c.steps_to_95pct_peak, 1),
            ms(c.last50_train_accuracy, 3),
            ms(c.train_accuracy_all_steps, 3),
            ms(c.last50_entropy, 3),
            ms(c.mean_step_time_s, 3),
            c.process_set_time_fraction
                .map(|m| format!("{:.3}%", m.mean * 100.0))
                .unwrap_or_else(|| "n/a".into()),
            ms(c.wall_time_s, 0),
        ));
    }
    if let Some(o) = report.lambda_step_time_overhead_pct {
        let by_seed = report
            .lambda_step_time_overhead_pct_by_seed
            .map(|m| {
                format!(
                    "; per seed {:+.2} ± {:.2}% over {} pairs",
                    m.mean, m.std, m.n
                )
            })
            .unwrap_or_default();
        s.push_str(&format!(
            "\nStep time of the λ-weighted config relative to the unweighted one: {o:+.2}%{by_seed} (this includes differences in completion length and machine load between the runs; the process-set column is the direct cost).\n"
        ));
    }
    s.push_str(&ci_and_paired_markdown(report));
    s.push_str("\n![training curves](curves.png)\n");
    s.push_str("\n## Runs\n\n| config | seed | initial | peak | final | steps to 95% peak | train acc last 50 | step time (s) |\n|---|---|---|---|---|---|---|---|\n");
    for r in &report.runs {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.3} | {:.3} |\n",
            r.config,
            r.seed,
            fmt_opt(r.initial_val_accuracy),
            fmt_opt(r.peak_val_accuracy),
            fmt_opt(r.final_val_accuracy),
            r.steps_to_95pct_peak
                .map(|s| s.to_string())
                .unwrap_or_else(|| "n/a".into()),
            r.last50_train_accuracy,
            r.mean_step_time_s
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(weighting: &str, seed: u64, grid: &[&str], step: f64) -> RunResult {
        RunResult {
            config: weighting.into(),
            grid: grid.iter().map(|g| g.to_string()).collect(),
            run_dir: PathBuf::new(),
            loss_type: LossType::Dapo,
            process_weighting: serde_json::from_value(weighting.into()).unwrap(),
            seed,
            steps: 1,
            initial_val_accuracy: None,
            peak_val_accuracy: None,
            final_val_accuracy: None,
            steps_to_95pct_peak: None,
            last50_train_accuracy: 0.0,
            train_accuracy_all_steps: 0.0,
            last50_entropy: 0.0,
            mean_step_time_s: step,
            process_set_time_fraction: 0.0,
            wall_time_s: 0.0,
            val_curve: Vec::new(),
        }
    }

    #[test]
    fn overheads_pair_runs_by_seed_and_grid_point() {
        let runs = [
            run("none", 1, &["a=1"], 2.0),
            run("none", 2, &["a=1"], 4.0),
            run("none", 1, &["a=2"], 1.0),
            run("lambda", 2, &["a=1"], 4.4), // +10% over seed 2, not over seed 1's 2.0
            run("lambda", 1, &["a=1"], 1.9), // −5%
            run("lambda", 1, &["a=2"], 1.5), // +50%: its own grid point
            run("lambda", 3, &["a=1"], 9.0), // no partner: left out
        ];
        let got = paired_overheads(&runs);
        let want = [10.0, -5.0, 50.0];
        assert_eq!(got.len(), 3);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
    }

    #[test]
    fn mean_std_is_sample_std() {
        let m = MeanStd::of(&[1.0, 2.0, 3.0]).unwrap();
        assert!((m.mean - 2.0).abs() < 1e-12);
        assert!((m.std - 1.0).abs() < 1e-12);
        assert!(MeanStd::of(&[]).is_none());
        assert_eq!(MeanStd::of(&[0.5]).unwrap().std, 0.0);
    }

    #[test]
    fn run_numbers_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join("summary.json"),
            r#"{"initial_val_accuracy":0.2,"final_val_accuracy":0.5,"loss_type":"lambda_grpo","process_weighting":"lambda","wall_time_s":10.0}"#,
        )
        .unwrap();
        let lines = [
            r#"{"step":1,"accuracy":0.1,"step_time_s":1.0,"time_process_sets_s":0.01,"entropy":0.5}"#,
            r#"{"step":2,"accuracy":0.3,"step_time_s":1.0,"time_process_sets_s":0.01,"eval/accuracy":0.58}"#,
            r#"{"step":3,"accuracy":0.5,"step_time_s":2.0,"time_process_sets_s":0.02,"eval/accuracy":0.6}"#,
            r#"{"step":4,"accuracy":0.7,"step_time_s":2.0,"time_process_sets_s":0.02,"eval/accuracy":0.5}"#,
        ];
        std::fs::write(run.join("metrics.jsonl"), lines.join("\n")).unwrap();
        let r = read_run("lambda", 3, &run).unwrap();
        assert_eq!(r.val_curve, vec![(0, 0.2), (2, 0.58), (3, 0.6), (4, 0.5)]);
        assert_eq!(r.peak_val_accuracy, Some(0.6));
        assert_eq!(r.steps_to_95pct_peak, Some(2)); // 0.58 >= 0.57
        assert_eq!(r.final_val_accuracy, Some(0.5));
        assert!((r.last50_train_accuracy - 0.4).abs() < 1e-12);
        assert!((r.train_accuracy_all_steps - 0.4).abs() < 1e-12);
        assert!(
            (r.last50_entropy - 0.5).abs() < 1e-12,
            "over the steps that log it"
        );
        assert!((r.mean_step_time_s - 1.5).abs() < 1e-12);
        assert!((r.process_set_time_fraction - 0.01).abs() < 1e-12);
        assert_eq!(r.steps, 4);
    }
}
