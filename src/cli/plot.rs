//! `grpo plot`: training curves of one or more runs as a PNG or SVG grid of panels.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::analysis::{plot_runs, PlotOptions, Run};

/// The `-h` long text for `grpo plot` (also used by `main.rs` on the subcommand).
pub const LONG_ABOUT: &str = "\
Plot the training curves of one or more runs (their metrics.jsonl) against step.

One panel per metric: by default reward, accuracy, eval/accuracy (validation, with the
accuracy before and after training from summary.json), completions/mean_length, kl, entropy,
clip_fraction and the process-set statistics (process/non_trivial_fraction,
process/mean_num_process_sets, process/mean_path_depth, process/mean_intermediate_proportion);
defaults without data are left out. Runs are overlaid with a legend labelled by run directory.
Runs whose summary.json configs are equal except for train.seed and output.dir are drawn as
one curve, their mean, with a ±1 std band (label: loss type and seeds); --separate turns
that off. The format follows the extension of --out (.png or .svg).

Examples:
  grpo plot runs/grpo runs/lambda --out curves.png
  grpo plot runs/lambda-s1 runs/lambda-s2 runs/lambda-s3 runs/grpo-s1 runs/grpo-s2 --out seeds.svg
  grpo plot runs/lambda --metrics reward,kl,non_trivial_fraction --smooth 10 --out r.png";

/// Plot training curves of runs (metrics.jsonl) to a PNG or SVG grid of panels.
#[derive(Debug, Clone, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct PlotArgs {
    /// Run directories written by `grpo train` (metrics.jsonl, summary.json).
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Output picture: FILE.png or FILE.svg.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
    /// Comma-separated metric keys, one panel each (`process/` may be left off).
    #[arg(long, value_delimiter = ',', value_name = "A,B,..")]
    pub metrics: Vec<String>,
    /// Moving average over the last N logged points (1: none).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub smooth: usize,
    /// Draw every run on its own, even runs that differ only in seed.
    #[arg(long)]
    pub separate: bool,
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let runs: Vec<Run> = args
        .runs
        .iter()
        .map(|d| Run::load(d))
        .collect::<Result<_>>()?;
    let opts = PlotOptions {
        metrics: args.metrics.clone(),
        smooth: args.smooth,
        aggregate_seeds: !args.separate,
    };
    let s = plot_runs(&runs, &opts, &args.out)
        .with_context(|| format!("plotting to {}", args.out.display()))?;
    println!(
        "wrote {} ({}x{}): {} panels ({}); series: {}",
        args.out.display(),
        s.width,
        s.height,
        s.panels.len(),
        s.panels.join(", "),
        s.labels.join("; ")
    );
    Ok(())
}
