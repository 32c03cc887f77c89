//! `grpo sft`: supervised warm start on worked solutions.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::config::Config;
use crate::trainer::sft::sft;

/// The long `--help` text. main.rs attaches it to the subcommand: the variant's doc comment
/// there would otherwise replace it.
pub const LONG_ABOUT: &str =
    "Supervised fine-tuning on worked solutions (the warm start before RL).

Trains on `data.train` rows that have a `solution` field: the prompt is built exactly as
`grpo train` builds it (`data.system_prompt`, `data.prompt_template`, `data.use_chat_template`),
the target is the solution followed by the EOS token, and only target tokens count in the
cross-entropy. `sft.init = \"random\"` starts from a fresh Qwen2 decoder sized by the `[sft]`
keys, with the tokenizer found in `model.path`; `\"pretrained\"` starts from `model.path`'s
weights. Writes `metrics.jsonl`, the final model (Hugging Face layout, with tokenizer files) and
`summary.json` into `output.dir`, and prints validation accuracy greedy and sampled.
`sft.direct_answer_fraction` trains that share of the rows to answer with `\\boxed{answer}` alone.
Ctrl-C saves the model so far to `output.dir/checkpoint-N` and stops (exit code 2).

Examples:
  grpo sft --config configs/sft.toml
  grpo sft --config configs/sft.toml --set sft.max_steps=20 --set output.dir=runs/sft-try
  grpo sft --config configs/sft.toml --export models/tiny-math   # rebuild the shipped policy";

/// Supervised fine-tuning on worked solutions (the warm start before RL).
#[derive(Debug, Args)]
#[command(long_about = LONG_ABOUT)]
pub struct SftArgs {
    /// The TOML config file (its `[sft]` section and the shared sections).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Override a config key: `section.key=value` (repeatable), e.g. `sft.max_steps=20`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Also write the final config.json + model.safetensors into this folder (other files there,
    /// such as the tokenizer, are left alone).
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
}

pub fn run(args: &SftArgs) -> Result<()> {
    let cfg = Config::load(&args.config, &args.overrides)?;
    let interrupted = super::interrupt_flag("saving the model so far, then stopping");
    let summary = sft(&cfg, interrupted)?;
    let fmt = |v: Option<f64>| v.map(|a| format!("{a:.4}")).unwrap_or_else(|| "n/a".into());
    println!(
        "sft: {} steps in {:.1}s, {} parameters, final loss {:.4}; validation accuracy greedy {}, T={} {}; model in {}",
        summary.steps,
        summary.wall_time_s,
        summary.num_parameters,
        summary.final_loss,
        fmt(summary.val_accuracy_greedy),
        summary.eval_temperature,
        fmt(summary.val_accuracy_sampled),
        summary.output_dir.display()
    );
    if let Some(dir) = &args.export {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for name in ["config.json", "model.safetensors"] {
            let from = summary.output_dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::copy(&from, &tmp)
                .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
            std::fs::rename(&tmp, dir.join(name))
                .with_context(|| format!("replacing {}", dir.join(name).display()))?;
        }
        println!(
            "sft: exported config.json and model.safetensors to {}",
            dir.display()
        );
    }
    Ok(())
}
