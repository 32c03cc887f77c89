//! `grpo export`: write a model or adapter for other tools, without the trainer's state.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::model::{copy_tokenizer_files, resolve_model_dir, Policy};

pub const LONG_ABOUT: &str =
    "Write a checkpoint for other tools, without optimizer or trainer state.

With --merge, a LoRA adapter (given by --adapter, or a LoRA run's checkpoint-N as --model) is
merged into the base weights (W + lora_alpha/r · B·A) and the result written as a plain model in
Hugging Face layout (config.json, model.safetensors, tokenizer files) that transformers and
`grpo eval` load without peft. Without --merge, an adapter is written in PEFT's layout
(adapter_config.json, adapter_model.safetensors) and a full checkpoint as a plain model.

Examples:
  grpo export --model models/tiny-math --adapter runs/lora/checkpoint-200 --merge --out merged/
  grpo export --model runs/lora/checkpoint-200 --merge --out merged/
  grpo export --model runs/lora/checkpoint-200 --out adapter-only/";

/// Write a model or adapter for other tools (`--merge`: LoRA merged into the weights).
#[derive(Debug, Clone, Args)]
#[command(long_about = LONG_ABOUT)]
pub struct ExportArgs {
    /// Base model directory or hub id, or a LoRA checkpoint (its base is read from
    /// adapter_config.json).
    #[arg(long, short = 'm', value_name = "DIR|HUB_ID")]
    pub model: String,
    /// Branch, tag or commit of a hub id --model (default `main`).
    #[arg(long)]
    pub revision: Option<String>,
    /// A LoRA adapter in PEFT layout to apply to --model.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Merge the adapter into the weights and write a plain model.
    #[arg(long)]
    pub merge: bool,
    /// Output directory (must not exist or be empty).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    if args.out.exists()
        && std::fs::read_dir(&args.out)
            .with_context(|| format!("--out {}", args.out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "--out {}: exists and is not empty; choose a new directory",
            args.out.display()
        );
    }
    let dir = resolve_model_dir(&args.model, args.revision.as_deref())?;
    let device = candle_core::Device::Cpu;
    let mut policy = Policy::load(&dir, candle_core::DType::F32, &device)
        .with_context(|| format!("loading {}", dir.display()))?;
    if let Some(a) = &args.adapter {
        policy.load_adapter(a)?;
    }
    let base_name = match &args.adapter {
        Some(_) => args.model.clone(),
        None if policy.lora_config().is_some() => crate::model::lora::base_model_name(&dir)?,
        None => args.model.clone(),
    };
    if args.merge && policy.lora_config().is_none() {
        bail!(
            "--merge: {} carries no LoRA adapter (pass --adapter DIR, or a LoRA checkpoint as --model)",
            args.model
        );
    }
    match policy.lora_config() {
        Some(_) if !args.merge => policy.save_adapter(&args.out, &base_name)?,
        Some(_) => policy.merged()?.save(&args.out)?,
        None => policy.save(&args.out)?,
    }
    copy_tokenizer_files(&dir, &args.out)?;
    eprintln!(
        "wrote {} to {}",
        match (policy.lora_config(), args.merge) {
            (Some(_), true) => "the merged model",
            (Some(_), false) => "the adapter (PEFT layout)",
            (None, _) => "the model",
        },
        args.out.display()
    );
    Ok(())
}
