//! `grpo sweep`: compare configs (e.g. λ-GRPO vs GRPO) over several seeds in one report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::analysis::plot::{plot_runs, PlotOptions, Run};
use crate::trainer::sweep::{markdown, sweep, SweepSpec};

/// The long `--help` text. main.rs attaches it to the subcommand: the variant's doc comment
/// there would otherwise replace it.
pub const LONG_ABOUT: &str = "Train several configs over several seeds and write one comparison report.

Each (config, grid point, seed) run trains in OUT/runs/<name>-seed<S>/ with the normal trainer. Then
OUT/report.md and OUT/report.json hold, per config, mean ± std over seeds of: validation
accuracy before training, its peak, the first step reaching 95% of the peak, the final value,
training accuracy over the last 50 steps and over all steps, entropy over the last 50 steps,
step time, the share of step time spent on process sets (λ-GRPO's direct extra cost), and wall
time; the step-time overhead of the λ-weighted config, overall and per seed; plus every run's
numbers; OUT/curves.png and OUT/curves.svg overlay the runs' training curves (seeds of one
config as mean ± std). Finished runs (summary.json and metrics.jsonl present) are skipped, so an
interrupted sweep continues where it stopped and re-running a finished sweep only rewrites the
report; a run whose metrics.jsonl is missing is trained again (runs are deterministic).
--jobs N trains N runs at once, each a `grpo train` process with 1/N of the threads (use it
with --threads = cores: tiny models train faster as N one-thread runs than one N-thread run).
report.md also gives 95% confidence intervals over seeds (Student t) of peak and final
validation accuracy and steps to 95% of peak, and, for each λ-weighted config, a paired per-seed
comparison with every unweighted config at the same grid point (mean difference, its 95% CI,
and wins / ties / losses over seeds).

Examples:
  grpo sweep --config configs/lambda.toml --config configs/grpo.toml --seeds 1,2,3 --out results/default
  grpo sweep -c configs/tree/lambda.toml -c configs/tree/grpo.toml --seeds 1,2,3,4,5 \\
      --grid rewards.tree_n=1,2 --grid rewards.tree_r_neg=-0.5,-1,-1.5 --out results/tree
  grpo sweep -c configs/lambda.toml -c configs/grpo.toml --seeds 1,2 --set train.max_steps=20 --out runs/quick";

/// Train several configs over several seeds and write one comparison report.
#[derive(Debug, Args)]
#[command(long_about = LONG_ABOUT)]
pub struct SweepArgs {
    /// A TOML config (repeatable); runs are named after the file stem.
    #[arg(long = "config", short = 'c', required = true)]
    pub configs: Vec<PathBuf>,
    /// Comma-separated seeds (`train.seed` of each run).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    /// A grid axis `section.key=v1,v2,...` (repeatable): every config runs at every point of
    /// the axes' product, e.g. `--grid rewards.tree_n=1,2 --grid rewards.tree_r_neg=-0.5,-1`.
    #[arg(long = "grid", value_name = "KEY=V1,V2,...")]
    pub grid: Vec<String>,
    /// Override a key in every config: `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Output folder for the runs and the report.
    #[arg(long)]
    pub out: PathBuf,
    /// Runs trained at once, each a `grpo train` process with `--threads` / N threads and its
    /// output in OUT/logs/<run>.log (1: one after another, in this process).
    #[arg(long, short = 'j', default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: u64,
}

pub fn run(args: &SweepArgs) -> Result<()> {
    let mut command = String::from("grpo sweep");
    for c in &args.configs {
        command.push_str(&format!(" --config {}", c.display()));
    }
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    command.push_str(&format!(" --seeds {}", seeds.join(",")));
    for g in &args.grid {
        command.push_str(&format!(" --grid {g}"));
    }
    for o in &args.overrides {
        command.push_str(&format!(" --set {o}"));
    }
    command.push_str(&format!(" --out {}", args.out.display()));
    if args.jobs > 1 {
        command.push_str(&format!(" --jobs {}", args.jobs));
    }
    let spec = SweepSpec {
        configs: args.configs.clone(),
        grid: args.grid.clone(),
        seeds: args.seeds.clone(),
        overrides: args.overrides.clone(),
        out: args.out.clone(),
        jobs: args.jobs as usize,
        command,
    };
    let interrupted = super::interrupt_flag("saving the current run's checkpoint");
    let report = sweep(&spec, interrupted).context("sweep")?;
    // Overlaid curves of every run (seeds of one config drawn as mean ± std).
    let runs = report
        .runs
        .iter()
        .map(|r| Run::load(&r.run_dir))
        .collect::<Result<Vec<_>>>()?;
    let smooth = if runs.iter().any(|r| r.metrics.len() >= 100) {
        10
    } else {
        1
    };
    let opts = PlotOptions {
        smooth,
        ..PlotOptions::default()
    };
    for ext in ["png", "svg"] {
        let path = args.out.join(format!("curves.{ext}"));
        plot_runs(&runs, &opts, &path).with_context(|| format!("plotting {}", path.display()))?;
    }
    print!("{}", markdown(&report));
    eprintln!("report: {}", args.out.join("report.md").display());
    Ok(())
}
