//! `grpo config`: inspect a run's configuration.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::config::Config;

/// Inspect configuration files.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the fully resolved config (defaults and --set overrides included) as TOML.
    #[command(
        long_about = "Print the fully resolved config (defaults and --set overrides \
included) as TOML, after validation.\n\nExamples:\n  grpo config show --config configs/lambda.toml\n  \
grpo config show --config configs/lambda.toml --set train.max_steps=4"
    )]
    Show {
        /// The TOML config file.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Override a key: `section.key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

pub fn run(args: &ConfigArgs) -> Result<()> {
    match &args.command {
        ConfigCommand::Show { config, overrides } => {
            let cfg = match config {
                Some(path) => Config::load(path, overrides)?,
                None => Config::from_overrides(overrides)?,
            };
            // What `grpo train` checks before loading anything: the resolved specs (device,
            // loss, reward functions) and the memory of one step.
            let res = cfg.resolve()?;
            crate::rewards::build_rewards(&res.rewards, &res.reward_config)?;
            check_memory(&cfg)?;
            print!("{}", cfg.to_toml()?);
            Ok(())
        }
    }
}

/// When the model's config.json is at hand, the memory check `grpo train` makes at startup,
/// with prompts as long as `data.max_prompt_length` allows (unknown without the data: 0).
fn check_memory(cfg: &Config) -> Result<()> {
    use crate::trainer::memory;
    // Never a download here: only a local folder or a model already in the cache.
    let Some(dir) = crate::model::cached_model_dir(&cfg.model.path, cfg.model.revision.as_deref())
    else {
        return Ok(());
    };
    let Ok(model) = crate::model::checkpoint::load_config(&dir) else {
        return Ok(());
    };
    if cfg.model.device != crate::config::Device::Cpu {
        return Ok(());
    }
    let prompt = cfg.data.max_prompt_length;
    if let Some(free) = memory::available_cpu_bytes() {
        // `auto` as `grpo train` would resolve it now (before the weights are loaded, so with
        // their size taken off what is free).
        let weights = memory::estimate(cfg, &model, prompt, prompt).weights;
        let free_after = free.saturating_sub(weights);
        let k = memory::micro_batches(cfg, &model, prompt, prompt, Some(free_after));
        if cfg.train.gradient_accumulation_steps.fixed().is_none() {
            eprintln!(
                "note: train.gradient_accumulation_steps = \"auto\" resolves to {k} on this \
                 machine now ({:.2} GB available; prompts of up to {prompt} tokens)",
                free as f64 / 1e9
            );
        }
        memory::check(
            cfg,
            &memory::estimate_with(cfg, &model, prompt, prompt, k),
            free,
        )?;
    }
    Ok(())
}
