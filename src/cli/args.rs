//! Arguments shared by the subcommands that load a model and sample from it (`eval`,
//! `generate`): one spelling, one parser and one help text for each.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;

use crate::config::{DType, Device};
use crate::model::{resolve_model, ModelConfig, ModelSource, Need, Policy, Tokenizer};
use crate::sampler::budget::{self, GenShape, Refusal};
use crate::trainer::memory::{available_cpu_bytes_after, num_parameters};

/// How to load a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Branch, tag or commit of a hub id (default `main`); the files are downloaded into the
    /// Hugging Face cache unless it already holds them.
    #[arg(long)]
    pub revision: Option<String>,
    /// Compute dtype: f32, bf16 or f16 (also fp32, bfloat16, fp16, float16). bf16 on the CPU
    /// multiplies bf16-rounded weights and activations with f32 accumulation (as
    /// `model.dtype = "bf16"` trains); f16 needs a GPU build.
    #[arg(long, default_value = "f32")]
    pub dtype: DType,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// A LoRA adapter in PEFT layout (e.g. a LoRA run's `checkpoint-N`) applied to the model.
    /// A LoRA checkpoint given as the model itself is found without it.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
}

impl ModelArgs {
    /// Resolves `model` (a directory or a hub id, fetched into the cache if needed) and loads
    /// its tokenizer and weights; returns the directory too.
    pub fn load(&self, model: &str) -> Result<(PathBuf, Tokenizer, Policy)> {
        let (source, tokenizer, policy) = self.load_source(model)?;
        Ok((source.dir, tokenizer, policy))
    }

    /// [`ModelArgs::load`], with the commit a hub id resolved to.
    pub fn load_source(&self, model: &str) -> Result<(ModelSource, Tokenizer, Policy)> {
        let source = resolve_model(model, self.revision.as_deref(), Need::Model)?;
        let dir = source.dir.clone();
        let device = self.device.open().context("--device")?;
        let tokenizer = Tokenizer::load(&dir)?;
        let mut policy = Policy::load(&dir, self.dtype.to_candle(), &device)
            .with_context(|| format!("loading the model from {}", dir.display()))?;
        if let Some(adapter) = &self.adapter {
            policy.load_adapter(adapter)?;
        }
        // Sampling runs on the adapter merged into the weights: no per-token adapter cost.
        let policy = match policy.for_sampling()? {
            Some(merged) => merged,
            None => policy,
        };
        policy.prepare_sampling_weights()?;
        Ok((source, tokenizer, policy))
    }
}

/// How to sample and how to build prompts. Unset values fall back to the model's
/// `generation_config.json`, then to each command's defaults (see its `--help`).
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Sampling temperature, 0 = greedy [default: eval: 0 for -n 1, else generation_config or
    /// 0.6; generate: generation_config, else 1.0].
    #[arg(long, short = 't')]
    pub temperature: Option<f64>,
    /// Nucleus mass, 1 = off [default: generation_config, else eval 0.95 when sampling,
    /// generate 1.0].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Keep the k most likely tokens, 0 = off [default: generation_config, else 0].
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Most new tokens per completion [default: eval 2048, generate 256]; `grpo eval` caps it,
    /// with a note, at what the model's context (max_position_embeddings) leaves after the
    /// longest prompt.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Base seed of the sampler (same seed, same completions).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// End completions before this string (repeatable; excluded from the text).
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Most rows (prompts × samples) per forward pass, 0 = all at once (bounds memory; results
    /// do not depend on it).
    #[arg(long, default_value_t = 0)]
    pub max_batch_rows: usize,
    /// System message for the chat template.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Tokenize prompts as they are, without the model's chat template.
    #[arg(long)]
    pub no_chat_template: bool,
}

/// `generation_config.json` of a model directory (`Null` when absent or for no model).
pub fn generation_config(dir: Option<&Path>) -> Result<Value> {
    let Some(path) = dir.map(|d| d.join("generation_config.json")) else {
        return Ok(Value::Null);
    };
    if !path.is_file() {
        return Ok(Value::Null);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Rows per forward pass for a request of `shape` on model `m`, from the memory available now
/// (`--max-batch-rows`, 0 = no limit, caps it): all rows when they fit, else row batches. A
/// request whose completions cannot be held, or whose single row cannot, is an error naming
/// `-n` / `--max-new-tokens` (and `extra`, the command's other knob), before anything is
/// allocated. Without a readable memory figure the request runs as asked.
pub fn bounded_rows(
    m: &ModelConfig,
    shape: &GenShape,
    requested: usize,
    extra: &str,
) -> Result<usize> {
    // The weights (f32) are loaded by now.
    let weights = num_parameters(m).saturating_mul(4);
    let Some(available) = available_cpu_bytes_after(weights) else {
        return Ok(requested);
    };
    match budget::plan_rows(m, shape, available, requested) {
        Ok(rows) => {
            if requested == 0 && (rows as u64) < shape.rows() {
                eprintln!(
                    "note: {} completions run in batches of {rows} rows: all at once would need \
                     {} of KV cache and logits, {} is available",
                    shape.rows(),
                    budget::gb(
                        budget::estimate(m, shape)
                            .per_row
                            .saturating_mul(shape.rows())
                            .saturating_add(budget::estimate(m, shape).output)
                    ),
                    budget::gb(available)
                );
            }
            Ok(rows)
        }
        Err(refusal) => Err(refusal_error(shape, refusal, extra)),
    }
}

/// The error for a request that cannot run, naming the flags that size it.
pub fn refusal_error(shape: &GenShape, refusal: Refusal, extra: &str) -> anyhow::Error {
    match refusal {
        Refusal::Output { need, available } => anyhow::anyhow!(
            "not enough memory: -n {} × {} prompt(s) = {} completions of up to --max-new-tokens \
             {} tokens need at least {} to hold (estimated before allocating), {} is available; \
             lower -n or --max-new-tokens{extra}",
            shape.samples,
            shape.prompts,
            shape.rows(),
            shape.max_new_tokens,
            budget::gb(need),
            budget::gb(available)
        ),
        Refusal::Row { need, available } => anyhow::anyhow!(
            "not enough memory: one completion of up to --max-new-tokens {} tokens after a \
             {}-token prompt needs at least {} for its KV cache and logits (estimated before \
             allocating), {} is available; lower --max-new-tokens",
            shape.max_new_tokens,
            shape.longest_prompt,
            budget::gb(need),
            budget::gb(available)
        ),
    }
}
