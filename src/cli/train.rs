//! `grpo train`: the RL loop on a TOML config.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::config::Config;
use crate::trainer::run::{train, Resume};

/// The long `--help` text. main.rs attaches it to the subcommand: the variant's doc comment
/// there would otherwise replace it.
pub const LONG_ABOUT: &str = "Train a policy with GRPO or λ-GRPO on a TOML config.

Samples `sampling.num_generations` completions for each of `train.batch_size` prompts per step,
scores them with the reward functions, and updates the policy with the loss chosen by
`loss.type` (grpo, bnpo, dapo, dr_grpo, lambda_grpo) and `loss.process_weighting`. Writes
`output.dir/metrics.jsonl` (one line per step), `checkpoint-N/` folders in Hugging Face layout,
and `summary.json` with validation accuracy before and after. Ctrl-C saves a checkpoint and exits.

Before the first step the memory of one step is estimated against what is available
(MemAvailable, a cgroup limit, GRPO_MAX_MEMORY); `train.gradient_accumulation_steps = \"auto\"`
(the default) picks the fewest micro-batches that fit and logs the number. Weights holding NaN
or infinite values are refused at load (`model.allow_non_finite = true` or --allow-non-finite
loads them).

Examples:
  grpo train --config configs/lambda.toml
  grpo train --config configs/grpo.toml --set train.max_steps=4 --set output.dir=runs/try
  grpo train --config configs/lambda.toml --resume            # newest checkpoint in output.dir
  grpo train --config configs/lambda.toml --resume runs/lambda/checkpoint-20";

/// Train a policy with GRPO or λ-GRPO on a TOML config.
#[derive(Debug, Args)]
#[command(long_about = LONG_ABOUT)]
pub struct TrainArgs {
    /// The TOML config file.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Override a config key: `section.key=value` (repeatable), e.g. `train.max_steps=4`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue from the newest checkpoint in `output.dir`, or from the given checkpoint folder.
    #[arg(long, value_name = "DIR")]
    #[allow(clippy::option_option)]
    pub resume: Option<Option<PathBuf>>,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let cfg = Config::load(&args.config, &args.overrides)?;
    let resume = match &args.resume {
        None => Resume::No,
        Some(None) => Resume::Latest,
        Some(Some(p)) => Resume::Dir(p.clone()),
    };
    let interrupted = super::interrupt_flag("finishing the step, then saving a checkpoint");
    let summary = train(&cfg, resume, interrupted)?;
    let fmt = |v: Option<f64>| v.map(|a| format!("{a:.4}")).unwrap_or_else(|| "n/a".into());
    println!(
        "trained {} steps in {:.1}s ({:.2}s/step); validation accuracy {} -> {}; checkpoint {}",
        summary.steps,
        summary.wall_time_s,
        summary.mean_step_time_s,
        fmt(summary.initial_val_accuracy),
        fmt(summary.final_val_accuracy),
        summary.final_checkpoint.display()
    );
    Ok(())
}
